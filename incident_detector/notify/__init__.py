"""Tell people: rendering an incident (pure) and sending it to Slack and as a Kubernetes Event."""
