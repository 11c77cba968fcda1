"""Incidents and the evidence they carry: why one fired, how sure, how urgent, what to do
(re-exported by ``model``). Filled by pure code (judge/), rendered as is (notify/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from .model_alerts import Alert, AlertTarget, alert_key
from .model_changes import Change
from .model_cluster import GitOpsOwner, Pod, WarningEvent


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
