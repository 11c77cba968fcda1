"""The cluster's objects, as adapters read them: Deployments, ReplicaSets, pods, their events,
the error lines and counts of their logs, and Services.

Nothing past an adapter sees a raw dict from Loki or an object of the Kubernetes client: every
source turns its wire format into these frozen dataclasses (re-exported by ``model``).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# Argo CD keeps its Applications here unless "apps in any namespace" is used.
ARGOCD_DEFAULT_NAMESPACE = "argocd"
# Written by the Deployment controller when it makes an existing ReplicaSet current again
# (``kubectl rollout undo``, a GitOps revert): the revisions it had before.
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable of a container, as declared in the pod template.

    ``value`` is the literal value when the template spells one out; ``source`` names where the
    value comes from otherwise (``secret:NAME/KEY``, ``configmap:NAME/KEY``, ``field:PATH``,
    ``resource:NAME``). Values read from Secrets never reach this object.
    """

    name: str
    value: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    # ("limits.memory", "256Mi"), sorted: a flat view that diffs line by line.
    resources: tuple[tuple[str, str], ...] = ()
    # ("readiness", canonical JSON of the probe), sorted.
    probes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """The parts of a pod template that explain a regression when they change."""

    containers: tuple[Container, ...] = ()
    config_maps: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    namespace: str
    name: str
    # Name of the Deployment that controls it (owner reference with controller: true), if any.
    deployment: str | None
    # The deployment.kubernetes.io/revision annotation as an integer; None when it is missing
    # or not a number (``revision_raw`` keeps what was there, for the log line that says so).
    revision: int | None
    created_at: datetime
    replicas: int = 0
    ready_replicas: int = 0
    revision_raw: str | None = None
    template: PodTemplate = field(default_factory=PodTemplate)
    # The pod-template-hash label: its pods carry the same label (used to list only them).
    pod_template_hash: str | None = None
    uid: str = ""
    # metadata.uid of the controlling Deployment (from the owner reference).
    deployment_uid: str = ""
    # True when the controller made this ReplicaSet current again after another one (it carries
    # the revision-history annotation): its creation is then not when its rollout began.
    reused: bool = False
    # When kube-controller-manager last wrote the ReplicaSet's revision annotation, from
    # ``metadata.managedFields`` (None when the server strips them).
    revision_written_at: datetime | None = None


class GitOpsTool(str, Enum):
    ARGO_CD = "argocd"
    FLUX = "flux"


@dataclass(frozen=True, slots=True)
class GitOpsOwner:
    """The GitOps controller that manages a Deployment: a manual undo would be reverted by it."""

    tool: GitOpsTool
    app: str
    # Namespace of the Argo CD Application or Flux Kustomization/HelmRelease, when known.
    app_namespace: str | None = None
    # Flux only: the kind of the object that applies it, "kustomization" or "helmrelease"
    # (None: not known, both are named).
    flux_kind: str | None = None

    @property
    def name(self) -> str:
        return "Argo CD" if self.tool == GitOpsTool.ARGO_CD else "Flux"

    def rollback_commands(self) -> tuple[str, ...]:
        """The commands that roll back through the GitOps tool (first one preferred)."""
        if self.tool == GitOpsTool.ARGO_CD:
            app = self.app
            if self.app_namespace and self.app_namespace != ARGOCD_DEFAULT_NAMESPACE:
                # Applications outside Argo CD's own namespace are addressed as NAMESPACE/NAME.
                app = f"{self.app_namespace}/{self.app}"
            return (f"argocd app rollback {shlex.quote(app)}",)
        namespace = f" -n {shlex.quote(self.app_namespace)}" if self.app_namespace else ""
        app = shlex.quote(self.app)
        kinds = (self.flux_kind,) if self.flux_kind else ("kustomization", "helmrelease")
        return tuple(f"flux suspend {kind} {app}{namespace}" for kind in kinds)

    def flux_commands(self, verb: str) -> tuple[str, ...]:
        """``flux <verb> <kind> <name> -n <namespace>`` for the object (both kinds when the
        kind is not known)."""
        namespace = f" -n {shlex.quote(self.app_namespace)}" if self.app_namespace else ""
        kinds = (self.flux_kind,) if self.flux_kind else ("kustomization", "helmrelease")
        return tuple(f"flux {verb} {kind} {shlex.quote(self.app)}{namespace}" for kind in kinds)

    @property
    def object_name(self) -> str:
        """What a person looks for: "Flux HelmRelease shop/payments", "Argo CD application
        payments"."""
        where = f"{self.app_namespace}/" if self.app_namespace else ""
        if self.tool == GitOpsTool.ARGO_CD:
            return f"Argo CD application {where}{self.app}"
        kind = {"kustomization": "Kustomization", "helmrelease": "HelmRelease"}.get(
            self.flux_kind or "", "Kustomization or HelmRelease")
        return f"Flux {kind} {where}{self.app}"


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """How far the Deployment controller got with the Deployment's current spec."""

    generation: int = 0
    observed_generation: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0

    def converged(self, desired: int) -> bool:
        """The controller saw the current spec and every desired replica runs it, ready."""
        return (self.observed_generation >= self.generation
                and self.updated_replicas == desired
                and self.ready_replicas >= desired and self.available_replicas >= desired)


@dataclass(frozen=True, slots=True)
class Deployment:
    namespace: str
    name: str
    revision: int | None
    replicas: int = 0
    # Labels of the pod template: they are what the log pipeline puts on the streams.
    pod_labels: tuple[tuple[str, str], ...] = ()
    # The Progressing condition is False with reason ProgressDeadlineExceeded.
    progress_deadline_exceeded: bool = False
    progress_message: str | None = None
    gitops: GitOpsOwner | None = None
    uid: str = ""
    created_at: datetime | None = None
    # The Progressing condition names a ReplicaSet ("ReplicaSet \"x\" is progressing.") and
    # says when it was last updated: an upper bound of when that ReplicaSet's rollout began.
    progressing_replicaset: str | None = None
    progressing_updated_at: datetime | None = None
    # What a write to the Deployment is conditioned on, and whether its rollout converged.
    resource_version: str = ""
    paused: bool = False
    rollout: RolloutStatus | None = None
    # Who last wrote the spec, how and when: the newest managedFields entry that owns a spec
    # field and is not a status write (kubectl-set, argocd-controller, helm, kubectl-scale...).
    spec_manager: str | None = None
    spec_operation: str | None = None
    spec_written_at: datetime | None = None

    def pod_label(self, key: str) -> str | None:
        for name, value in self.pod_labels:
            if name == key:
                return value
        return None


class PodProblem(str, Enum):
    """Container states that mean a revision is unhealthy even when it writes no log line."""

    CRASH_LOOP = "CrashLoopBackOff"
    IMAGE_PULL = "ImagePullBackOff"
    ERR_IMAGE_PULL = "ErrImagePull"
    CONFIG_ERROR = "CreateContainerConfigError"
    OOM_KILLED = "OOMKilled"
    RESTARTING = "Restarting"


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    # Name of the controlling ReplicaSet, if any.
    replicaset: str | None
    phase: str = "Unknown"
    ready: bool = False
    restarts: int = 0
    problems: tuple[PodProblem, ...] = ()
    created_at: datetime | None = None
    # The pod-template-hash label: which revision of its Deployment the pod runs.
    pod_template_hash: str | None = None
    # metadata.uid: a deletion is conditioned on it (the pod seen, not a successor of its name).
    uid: str = ""


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """A ``type: Warning`` core/v1 Event of the namespace (BackOff, FailedScheduling, Unhealthy...)."""

    reason: str
    message: str
    # The object it is about: kind and name (a Pod, a ReplicaSet, the Deployment).
    object_kind: str
    object_name: str
    count: int = 1
    last_seen: datetime | None = None


@dataclass(frozen=True, slots=True)
class ErrorSample:
    """Error lines counted by Loki for one stream group over the query window.

    ``workload`` is the value of the workload label (``app`` by default) and ``pod`` the pod
    label, None when the logs carry no pod identity.
    """

    workload: str
    pod: str | None
    count: float


@dataclass(frozen=True, slots=True)
class ErrorCounts:
    """The answer of one metric query: error lines per (workload, pod) over ``window_seconds``."""

    namespace: str
    window_seconds: int
    samples: tuple[ErrorSample, ...] = ()


@dataclass(frozen=True, slots=True)
class LogLine:
    at: datetime
    line: str
    pod: str | None = None
    # The value of the workload label of the line's stream (``app`` by default), when it has one.
    workload: str | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    """Error lines of a workload over a lookback window that ends when a rollout started.

    ``window_seconds`` is the time the window really covers: the lookback, or less for a
    workload that did not exist for all of it (its rate is per minute of existence).
    """

    error_count: float
    window_seconds: int
    # Revisions of the Deployment judged bad (an incident, or rolled back) whose time the window
    # leaves out: the baseline is the last healthy state, not a bad revision's errors.
    excluded_revisions: tuple[int, ...] = ()
    # Why there is no healthy state to compare with (every revision in the lookback was judged
    # bad); None when there is one. Without one, the rollout is judged on the threshold alone.
    absent: str | None = None

    @property
    def per_minute(self) -> float:
        return self.error_count * 60.0 / self.window_seconds if self.window_seconds else 0.0



@dataclass(frozen=True, slots=True)
class Service:
    """A Service's name and pod selector: how a hostname becomes the Deployments behind it."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] = ()
