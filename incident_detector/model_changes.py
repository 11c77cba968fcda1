"""The change timeline: one change to one watched object, what, when and who (re-exported by
``model``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The kinds whose changes are watched, as Kubernetes names them (sources.changes_watch).
CHANGE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ConfigMap", "Secret", "Service",
                "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy")
CREATED, UPDATED, DELETED = "created", "updated", "deleted"


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that changed: ``data.TIMEOUT_MS``, ``spec.replicas``, ``image api``...

    ``before``/``after`` are None when the field was absent or when its value is not shown
    (``hidden``): a Secret's data, a value that looks like a credential. A Secret's values are
    never read into a ``FieldChange``, hidden or not.
    """

    path: str
    before: str | None = None
    after: str | None = None
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one object of a watched namespace: what, when and who."""

    namespace: str
    kind: str
    name: str
    # created, updated or deleted
    action: str
    # When it was made: the managedFields time of the write that made it (whole seconds, as
    # the API server keeps it), else when it was seen.
    at: datetime
    observed_at: datetime
    fields: tuple[FieldChange, ...] = ()
    # Who: the managedFields manager (kubectl-patch, argocd-controller, helm...) and operation
    # (Update, Apply) of that write; None when the object carries no managedFields.
    manager: str | None = None
    operation: str | None = None
    uid: str = ""
    resource_version: str = ""
    # A Deployment, StatefulSet or DaemonSet whose pod template changed: its new revision
    # (a Deployment's revision annotation; the generation otherwise), and the one before.
    revision: int | None = None
    previous_revision: int | None = None
    # The store's row id, once recorded.
    id: int | None = None

    @property
    def size(self) -> int:
        """How much changed: the number of fields (a created or deleted object counts 1)."""
        return max(1, len(self.fields))

    @property
    def rollout(self) -> bool:
        """A workload's pod template changed: new pods, a new revision."""
        return self.revision is not None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(namespace, kind, name, resourceVersion): one change, recorded once."""
        return (self.namespace, self.kind, self.name, self.resource_version)
