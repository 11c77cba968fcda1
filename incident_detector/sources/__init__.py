"""Read the world: the adapters of Kubernetes and Loki (the only code that speaks their HTTP)."""
