"""Pure planning of a remediation: what a rule chose (``Fix``), the request to propose
(``PlanRequest``), whether it can be carried out at all, what the journal keeps for the write
(``journal_params``), and the proposal rebuilt from that record when a person approves it.

No I/O: ``Remediator`` decides with these and the guardrails, and writes the result down.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..judge.guardrails import (CHANGES_DEPLOYMENT, Action, GuardrailDecision, PastAction, Policy,
                                Proposal, through_argocd)
from ..model import Deployment, GitOpsOwner, GitOpsTool, Incident, Pod, PodProblem, ReplicaSet
from ..store.journal import (APPROVED, DONE, DRY_RUN, EXECUTING, FAILED, STALE, UNVERIFIED,
                             VERIFIED, JournalEntry)
from .executor import STALE as WRITE_STALE
from .executor import ActionResult

# What a rule says when it wants nothing done.
NO_ACTION = "none"
# How far back the guardrails look for earlier actions (cooldown and hourly cap).
HISTORY = timedelta(hours=24)

JournalKey = tuple[str, str, int, str]


@dataclass(frozen=True, slots=True)
class Fix:
    """What a rule chose for an incident."""

    # An ``Action`` value, or "none" (nothing is proposed).
    action: str
    # The rule's cooldown: only a longer one than the policy's counts (guardrails).
    cooldown_seconds: float | None = None
    # The action's own parameters, e.g. (("replicas", 4),) for a scale.
    params: tuple[tuple[str, Any], ...] = ()
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything needed to propose one action on one Deployment."""

    # (namespace, deployment, revision, deployment uid): the journal key (one action of each kind
    # per key, ever).
    key: JournalKey
    # As seen when the incident was raised: its resourceVersion is the writes' precondition.
    deployment: Deployment
    action: Action
    detected_at: datetime
    confidence: float | None = None
    baseline_per_minute: float | None = None
    # rollback: the target revision's ReplicaSet.
    to_replicaset: ReplicaSet | None = None
    # delete-pod: the pod (its name and uid).
    pod: Pod | None = None
    # The action's own parameters (``replicas`` for a scale).
    params: tuple[tuple[str, Any], ...] = ()
    cooldown_seconds: float | None = None
    rule: str | None = None
    # When the bad rollout began: an Argo CD rollback checks that it came from the application.
    rollout_started_at: datetime | None = None


def problem_pod(incident: Incident, pods: Sequence[Pod]) -> Pod | None:
    """The pod a delete-pod deletes: one the incident names with a problem and that is still
    seen (with its uid), a crash-looping one first, then in the incident's order."""
    seen = {pod.name: pod for pod in pods
            if pod.namespace == incident.namespace and pod.uid}
    named = [(name, problem) for name, problem in incident.evidence.pod_problems if name in seen]
    named.sort(key=lambda item: item[1] != PodProblem.CRASH_LOOP.value)  # stable
    return seen[named[0][0]] if named else None


def pod_selector(deployment: Deployment) -> str:
    """A label selector of the Deployment's pods: every label of its pod template."""
    return ",".join(f"{name}={value}" for name, value in deployment.pod_labels)


def why_impossible(request: PlanRequest, action: Action) -> tuple[str, str] | None:
    """(guardrail, reason) when ``request`` cannot be carried out as asked."""
    target = f"{request.key[0]}/{request.key[1]}"
    if action in CHANGES_DEPLOYMENT and not request.deployment.resource_version:
        return ("no_precondition",
                f"The resourceVersion of {target} is unknown, so a {action.value} could not be "
                f"guarded against a newer state of it.")
    if action is Action.ROLLBACK and request.to_replicaset is None:
        return ("no_target", f"{target} has no earlier revision to roll back to.")
    if action is Action.DELETE_POD and (request.pod is None or not request.pod.uid):
        return ("no_pod",
                f"No pod of {target} with a problem is known (with its uid) to delete.")
    if action is Action.SCALE and scale_replicas(request.params) is None:
        return ("no_replicas",
                f"A scale of {target} needs a replica count (params.replicas, a whole number "
                f">= 0).")
    if action is Action.DELETE_STUCK_PODS and not request.deployment.pod_labels:
        # An empty selector would match every pod of the namespace.
        return ("no_selector",
                f"{target} has no pod labels to find its pods by, so no pod is deleted.")
    return None


def scale_replicas(params: Sequence[tuple[str, Any]]) -> int | None:
    """The replica count of a scale's params: a whole number >= 0, or None."""
    try:
        value = dict(params).get("replicas")
    except (TypeError, ValueError):  # not (name, value) pairs
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def renewable_at_write(entry: JournalEntry, result: ActionResult) -> str | None:
    """The resourceVersion a write refused as stale may be made again on, or None.

    The status moved after the last look (a pod turning ready between that look and the
    click): the refusal's GET (``result.now``) shows the same spec as the entry was planned on
    (``same_spec``: same object, revision and generation; every write of ours moves the
    generation, so it has not landed either). Then the write is made once more on what the GET
    saw. A spec that changed, an object that is gone or unknown, stays refused."""
    now = result.now
    if result.outcome != WRITE_STALE or now is None or not same_spec(entry, now) or \
            now.resource_version == entry.precondition:
        return None
    return now.resource_version


def same_spec(entry: JournalEntry, deployment: Deployment) -> bool:
    """Whether ``deployment`` is, in its spec, what ``entry`` was planned on: the same object
    (uid), still at the action's revision, at the generation seen then (every spec change, a
    scale or a pause included, moves it). Unknown (an entry without a generation, a
    Deployment without a rollout status) is not the same."""
    generation = entry.params.get("generation")
    return bool(deployment.resource_version) and deployment.uid == entry.key[3] and \
        deployment.revision == entry.key[2] and deployment.rollout is not None and \
        isinstance(generation, int) and deployment.rollout.generation == generation


def journal_params(request: PlanRequest, action: Action, decision: GuardrailDecision, *,
                   argocd: bool = False) -> dict[str, Any]:
    """What the journal keeps: what the guardrails looked at, and what the write needs. A
    rollback through Argo CD (``argocd``: its API is configured) keeps the application, its
    namespace, and the moments its history is read as of (the incident, the bad rollout's
    start): the entry it goes back to is chosen from them at the write, the same on a retry."""
    deployment = request.deployment
    params: dict[str, Any] = {
        "confidence": request.confidence, "paused": deployment.paused,
        "gitops": gitops_record(deployment.gitops),
        "baseline_per_minute": request.baseline_per_minute, "dry_run": decision.dry_run,
        "incident": request.detected_at.isoformat(),
        "rule": None if request.rule is None else str(request.rule),
        # As given when it is a number (a refused request may carry anything else).
        "cooldown_seconds": as_seconds(request.cooldown_seconds),
        # The spec's generation seen with the precondition (see same_spec).
        "generation": deployment.rollout.generation if deployment.rollout is not None else None,
    }
    if action is Action.ROLLBACK and request.to_replicaset is not None:
        params.update(to_revision=request.to_replicaset.revision,
                      to_replicaset=request.to_replicaset.name)
        owner = deployment.gitops
        if owner is not None and through_argocd(action, owner, Policy(argocd=argocd)):
            started = request.rollout_started_at
            params["argocd"] = {
                "app": owner.app, "app_namespace": owner.app_namespace, "history_id": None,
                "incident_at": request.detected_at.isoformat(),
                "rollout_started_at": started.isoformat() if started is not None else None}
    elif action is Action.DELETE_POD and request.pod is not None:
        params.update(pod=request.pod.name, pod_uid=request.pod.uid)
    elif action is Action.SCALE:
        params.update(replicas=scale_replicas(request.params))
    elif action is Action.DELETE_STUCK_PODS:
        params.update(selector=pod_selector(deployment))
    return params


def recorded_moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def as_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def gitops_record(owner: GitOpsOwner | None) -> dict[str, Any] | None:
    if owner is None:
        return None
    return {"tool": owner.tool.value, "app": owner.app, "app_namespace": owner.app_namespace}


def recorded_proposal(entry: JournalEntry, *, approved_by: str,
                      approver_authenticated: bool = False) -> Proposal:
    """The proposal as it was made, rebuilt from the journal, now approved by someone."""
    params = entry.params
    action = Action(entry.action)
    confidence = params.get("confidence")
    gitops = params.get("gitops")
    cooldown = params.get("cooldown_seconds")
    return Proposal(
        action=action, namespace=entry.key[0], deployment=entry.key[1],
        confidence=float(confidence) if confidence is not None else None,
        paused=bool(params.get("paused")),
        gitops=GitOpsOwner(GitOpsTool(gitops["tool"]), gitops["app"], gitops.get("app_namespace"))
        if isinstance(gitops, dict) else None,
        scale_to=params.get("replicas") if action is Action.SCALE else None,
        approved_by=approved_by, approver_authenticated=approver_authenticated,
        cooldown_seconds=float(cooldown) if cooldown is not None else None)


def request_proposal(request: PlanRequest, action: Action) -> Proposal:
    """The proposal the guardrails decide on; ValueError for a rule's cooldown that is not a
    number of seconds."""
    return Proposal(
        action=action, namespace=request.key[0], deployment=request.key[1],
        confidence=request.confidence, paused=request.deployment.paused,
        gitops=request.deployment.gitops,
        scale_to=scale_replicas(request.params) if action is Action.SCALE else None,
        cooldown_seconds=request.cooldown_seconds)


# The states of an action that was approved, whatever became of it since: the guardrails'
# cooldown and hourly cap count them.
ACTED = (APPROVED, EXECUTING, DONE, DRY_RUN, VERIFIED, UNVERIFIED, STALE, FAILED)


def past_actions(entries: Iterable[JournalEntry]) -> list[PastAction]:
    """The journal's recent entries as the guardrails' history."""
    history = []
    for e in entries:
        if e.state not in ACTED:
            continue
        try:
            action = Action(e.action)
        except ValueError:  # not written by this version: still an action on the target
            action = Action.ROLLBACK
        history.append(PastAction(namespace=e.key[0], deployment=e.key[1], action=action,
                                  at=e.updated_at, dry_run=bool(e.params.get("dry_run"))))
    return history
