"""Kubernetes Incident Detector: notices when a rollout broke a service, says why, and what to do."""

from . import kubernetes_parts

# Before any module of the package imports the Kubernetes client: only its parts in use load.
kubernetes_parts.register()
