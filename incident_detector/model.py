"""The project's own plain data: what adapters produce and the correlator consumes.

Nothing past an adapter sees a raw dict from Loki or an object of the Kubernetes client: every
source turns its wire format into these frozen dataclasses. They are small on purpose (a few
hundred bytes each), because a tick may hold thousands of them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


class Signal(str, Enum):
    """Why a revision is judged bad. An incident names every signal that held."""

    ERROR_SPIKE = "error_spike"
    POD_HEALTH = "pod_health"
    PROGRESS_DEADLINE = "progress_deadline"
    # A firing Alertmanager alert mapped to the Deployment.
    ALERT = "alert"


class Priority(str, Enum):
    """How urgent: P1 wakes someone up, P4 can wait for the next working day (judge.rules)."""

    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class IncidentKind(str, Enum):
    """What raised an incident: a bad revision, or an alert with no rollout to blame."""

    ROLLOUT = "rollout"
    ALERT = "alert"
    # A workload's errors rose after a change that was not its own rollout (a ConfigMap it
    # mounts, a dependency's rollout): judge.causes says which change.
    CHANGE = "change"


# Labels or annotations: (name, value) pairs, sorted by name.
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of an Alertmanager webhook notification (payload version 4).

    ``ends_at`` is None while Alertmanager does not know an end (it sends the zero time
    ``0001-01-01T00:00:00Z``). An alert's firing period is identified by its fingerprint and
    ``starts_at``: the same alert firing again later is a new period.
    """

    fingerprint: str
    status: str  # "firing" or "resolved"
    starts_at: datetime
    ends_at: datetime | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    generator_url: str = ""
    group_key: str = ""
    receiver: str = ""

    @property
    def name(self) -> str:
        return self.label("alertname") or ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    def annotation(self, key: str) -> str | None:
        for name, value in self.annotations:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class AlertTarget:
    """The Deployment an alert is about, and which of its labels said so."""

    namespace: str
    deployment: str
    # e.g. "deployment", "pod", "service", "app": the label that named the workload.
    mapped_by: str


class RolloutStartSource(str, Enum):
    """Which data said when a rollout began (the evidence names it)."""

    # A new ReplicaSet: it became current when it was created.
    REPLICASET_CREATED = "replicaset_created"
    # A reused ReplicaSet: when the controller last wrote its revision annotation (managedFields).
    REVISION_ANNOTATION = "revision_annotation"
    # A reused ReplicaSet: the Deployment's Progressing condition naming it.
    PROGRESSING_CONDITION = "progressing_condition"


class Attribution(str, Enum):
    """How errors were tied to the new revision."""

    # Loki streams carry a pod label: errors counted per ReplicaSet (pod name prefix).
    PER_POD = "per_pod"
    # No pod identity in the logs: the workload's total was used.
    WORKLOAD_TOTAL = "workload_total"


@dataclass(frozen=True, slots=True)
class ErrorSignature:
    fingerprint: str
    count: int
    example: str
    # True when the fingerprint did not occur in the sample taken before the rollout.
    new: bool = False


@dataclass(frozen=True, slots=True)
class TemplateChange:
    """One line of "what changed" between the previous and the new pod template."""

    # e.g. "image", "command", "args", "env", "resources", "probe", "configmap", "secret"
    kind: str
    # container name, or "" for pod-level changes
    container: str
    # human text: 'payments-api:1.4.2 -> payments-api:1.5.0', 'added FEATURE_X=on', ...
    detail: str


# --- the change timeline ------------------------------------------------------------------------

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


@dataclass(frozen=True, slots=True)
class Service:
    """A Service's name and pod selector: how a hostname becomes the Deployments behind it."""

    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Cause:
    """A recent change ranked as a likely cause of a workload's errors (judge.causes)."""

    change: Change
    # In [0, 1]; the causes of one incident are sorted by it, best first.
    score: float
    # Why, one short sentence each ("rolled out 40 s before the errors began", ...).
    reasons: tuple[str, ...] = ()
    # What to do about it: an action name ("rollback") with the exact command, or None (a
    # ConfigMap or Secret change is reverted where it was made).
    action: str | None = None
    command: str | None = None


@dataclass(frozen=True, slots=True)
class BlastEntry:
    """A workload whose errors rose after a rollout and that calls the failing workload,
    directly or through others (judge.causality.blast_radius)."""

    # "<namespace>/<workload>"
    workload: str
    # The calls from it to the failing workload: the caller first, the failing one last.
    path: tuple[str, ...]
    # Its error rate before the rollout (None: not known) and now.
    before_per_minute: float | None
    after_per_minute: float


@dataclass(frozen=True, slots=True)
class CausalNode:
    """A node of an incident's causality tree: a change, a workload, or a symptom (a signal,
    an error group, an alert)."""

    id: str
    kind: str
    label: str


@dataclass(frozen=True, slots=True)
class CausalEdge:
    """From a cause to what it caused, with why and how strongly (in [0, 1])."""

    source: str
    target: str
    evidence: tuple[str, ...]
    score: float


@dataclass(frozen=True, slots=True)
class Causality:
    """The root candidates (changes), through the service map, to the symptoms
    (judge.causality.causality)."""

    subject: str
    roots: tuple[str, ...] = ()
    nodes: tuple[CausalNode, ...] = ()
    edges: tuple[CausalEdge, ...] = ()


# Why an incident's signatures were sampled short: Loki did not answer the sample; the sample
# reached its limit (older lines of the rollout were not read); no error line of the revision
# was found where the count saw some.
SIGNATURE_GAPS = {
    "loki_failed": "Loki did not answer the sample of error lines",
    "limit_reached": "the sample reached its line limit; older lines were not read",
    "lines_not_found": "no error line of the new revision was found in the sample",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything that says *why* an incident fired. Filled by pure code, rendered as is."""

    attribution: Attribution = Attribution.WORKLOAD_TOTAL
    # Errors of the new revision's pods in the window (== error_count under PER_POD).
    new_revision_errors: float = 0.0
    # Errors of the other ReplicaSets' pods in the window (PER_POD only).
    other_errors: float = 0.0
    error_rate_per_minute: float = 0.0
    baseline_per_minute: float | None = None
    baseline_window_seconds: int | None = None
    # The configured lookback; more than ``baseline_window_seconds`` for a young workload.
    baseline_lookback_seconds: int | None = None
    # Revisions judged bad that the baseline leaves out, and why there was no baseline at all
    # (no healthy state in the lookback: the threshold alone decided).
    baseline_excluded_revisions: tuple[int, ...] = ()
    baseline_absent: str | None = None
    rollout_start_source: RolloutStartSource = RolloutStartSource.REPLICASET_CREATED
    # Pods of the new ReplicaSet and the problems seen on them.
    affected_pods: tuple[str, ...] = ()
    pod_problems: tuple[tuple[str, str], ...] = ()  # (pod, problem)
    progress_message: str | None = None
    # Other revisions rolled out inside the window (rapid successive rollouts).
    other_revisions_in_window: tuple[int, ...] = ()
    signatures: tuple[ErrorSignature, ...] = ()
    # Why ``signatures`` may not describe every error line counted, when it may not (one of
    # SIGNATURE_GAPS); None: the lines were read in full.
    signature_gap: str | None = None
    changes: tuple[TemplateChange, ...] = ()
    gitops: GitOpsOwner | None = None
    # Firing Alertmanager alerts mapped to the Deployment while its rollout was in its window.
    alerts: tuple[Alert, ...] = ()
    # The likeliest causes among recent changes, best first, at most three (judge.causes).
    causes: tuple[Cause, ...] = ()
    # The callers whose errors rose too (judge.causality.blast_radius), and the tree from the
    # causes through the service map to the symptoms (judge.causality.causality).
    blast_radius: tuple[BlastEntry, ...] = ()
    causality: Causality | None = None


@dataclass(frozen=True, slots=True)
class RemediationView:
    """What happens to an incident's fix: decided by the guardrails, shown with the incident."""

    action: str
    to_revision: int | None
    # act, ask, notify_only or refuse (judge.guardrails.Outcome)
    outcome: str
    reason: str
    guardrail: str
    dry_run: bool
    journal_id: int | None = None
    # The Slack buttons' one-time tokens (ask only). Never in the JSON record or a log line.
    approve_token: str | None = field(default=None, repr=False)
    reject_token: str | None = field(default=None, repr=False)
    # "namespace/deployment" when the action is on another Deployment than the incident's (the
    # top cause is that Deployment's rollout: judge.causes); None: the incident's own.
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """One bad revision of one Deployment. Its key is unique forever."""

    namespace: str
    deployment: str
    revision: int
    replicaset: str
    rollout_started_at: datetime
    error_count: float
    threshold: int
    window_seconds: int
    detected_at: datetime
    # The revision to roll back to: the highest one below ``revision`` still known, if any.
    previous_revision: int | None
    signals: tuple[Signal, ...] = (Signal.ERROR_SPIKE,)
    evidence: Evidence = field(default_factory=Evidence)
    # metadata.uid of the Deployment and the ReplicaSet: a Deployment deleted and created again
    # under the same name is another object, with revisions of its own.
    deployment_uid: str = ""
    replicaset_uid: str = ""
    # How sure the detector is, in [0, 1], and why (judge.confidence); None until scored.
    confidence: float | None = None
    confidence_reasons: tuple[str, ...] = ()
    remediation: RemediationView | None = None
    # How urgent, and the rule of RULES_FILE (or the built-in set) that said so; None until
    # the rules were applied.
    priority: Priority | None = None
    rule: str | None = None
    kind: IncidentKind = IncidentKind.ROLLOUT
    # The rule's action for it ("none": no action of the rule's; the rollback stays the advice).
    rule_action: str | None = None

    @property
    def key(self) -> tuple[str, str, int, str]:
        """(namespace, deployment, revision, deployment uid): unique forever."""
        return (self.namespace, self.deployment, self.revision, self.deployment_uid)


@dataclass(frozen=True, slots=True)
class LastRollout:
    """A Deployment's most recent rollout, for a brief: when, and what it changed."""

    revision: int
    replicaset: str
    started_at: datetime
    previous_revision: int | None
    changes: tuple[TemplateChange, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertIncident:
    """A firing alert on a Deployment with no rollout in its window: the brief an on-call
    engineer needs, a priority and the recommended action (judge.alert_brief).

    One per alert fingerprint and firing period (``key``); the alert resolving closes it.
    """

    alert: Alert
    target: AlertTarget
    detected_at: datetime
    priority: Priority
    rule: str
    # The rule's action ("none": nothing to run, investigate) and the exact command for it.
    action: str
    command: str | None
    deployment_uid: str = ""
    revision: int | None = None
    pods: tuple[Pod, ...] = ()
    warning_events: tuple[WarningEvent, ...] = ()
    last_rollout: LastRollout | None = None
    signatures: tuple[ErrorSignature, ...] = ()
    remediation: RemediationView | None = None
    # The recent changes that may have made it fire (a rollout of a workload it calls, directly
    # or through others), and the tree from them to the alert (judge.causality).
    causes: tuple[Cause, ...] = ()
    causality: Causality | None = None

    @property
    def key(self) -> str:
        return alert_key(self.alert)


def alert_key(alert: Alert) -> str:
    """An alert's firing period, as text: ``alert/<fingerprint>/<startsAt in UTC>``."""
    return f"alert/{alert.fingerprint}/{alert.starts_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


@dataclass(frozen=True, slots=True)
class ChangeIncident:
    """A workload's errors rose after a change that was not its own rollout (``kind: change``):
    a ConfigMap or Secret it uses, or the rollout of a workload it depends on.

    One per (workload, change), ever (``key``). ``causes`` ranks every recent change, best
    first; ``change`` is the one whose window the rise was judged in.
    """

    namespace: str
    deployment: str
    deployment_uid: str
    change: Change
    detected_at: datetime
    error_count: float
    window_seconds: int
    error_rate_per_minute: float
    baseline_per_minute: float | None
    causes: tuple[Cause, ...] = ()
    signatures: tuple[ErrorSignature, ...] = ()
    priority: Priority = Priority.P2
    # From the causes through the service map to its symptoms (judge.causality).
    causality: Causality | None = None
    rule: str = ""
    # The top cause's action and command ("none" and None: revert where it was made).
    action: str = "none"
    command: str | None = None
    remediation: RemediationView | None = None

    @property
    def key(self) -> str:
        return change_incident_key(self.namespace, self.deployment, self.deployment_uid,
                                   self.change)


def change_incident_key(namespace: str, deployment: str, deployment_uid: str,
                        change: Change) -> str:
    """``change/<namespace>/<deployment>/<uid>/<kind>/<name>/<resourceVersion>``."""
    return (f"change/{namespace}/{deployment}/{deployment_uid}/{change.kind}/{change.name}/"
            f"{change.resource_version}")


@dataclass(frozen=True, slots=True)
class Unmapped:
    """Why an alert names no watched Deployment; it is recorded and shown, not dropped.

    ``namespace`` is the namespace the alert named, when it named one (shown and filtered on).
    """

    reason: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class AlertNotification:
    """One webhook notification: a group of alerts as Alertmanager routed it."""

    version: str
    status: str
    receiver: str
    group_key: str
    group_labels: Pairs
    common_labels: Pairs
    common_annotations: Pairs
    external_url: str
    # Alerts left out because the receiver sets ``max_alerts`` (they are not in ``alerts``).
    truncated_alerts: int
    alerts: tuple[Alert, ...]

    @property
    def firing(self) -> int:
        return sum(1 for alert in self.alerts if alert.firing)

    @property
    def resolved(self) -> int:
        return len(self.alerts) - self.firing
