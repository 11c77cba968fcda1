"""Kubernetes Incident Detector: notices when a rollout broke a service, says why, and what to do."""
