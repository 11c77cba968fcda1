"""The decision: did a rollout break its Deployment? A pure function of plain data and ``now``.

Rules, in the order a person would check them:

1. Only the Deployment's *current* revision is judged: it is what runs from now on and what a
   rollback would undo. Its ReplicaSet is the one owned by the Deployment (controller owner
   reference) whose revision annotation equals the Deployment's.
2. Error and pod-health signals count only while that ReplicaSet is younger than the rollout
   window; a stuck rollout (``ProgressDeadlineExceeded``) counts for as long as it is current.
3. Errors are attributed to the new revision by pod name (a pod's name starts with its
   ReplicaSet's name) when the logs carry a pod label; errors of the old pods while they drain
   are not the new revision's fault. Without pod identity the workload's total is used, and the
   evidence says so.
4. An error spike needs the threshold reached *and* a clear rise over the baseline (the rate of
   the same workload before the rollout): errors that were already there are not a regression.
5. One incident per (namespace, deployment, revision), ever: ``already_notified`` is consulted.

Anything unknown (Loki failed, baseline not fetched yet, pods not listed) gives "no verdict" for
the signals that need it, never "no errors".
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from .changes import template_changes
from .model import (
    Attribution,
    Baseline,
    Deployment,
    ErrorSample,
    Evidence,
    Incident,
    Pod,
    ReplicaSet,
    Signal,
)


@dataclass(frozen=True, slots=True)
class Rules:
    threshold: int = 5
    error_window_seconds: int = 120
    rollout_window_seconds: float = 600.0
    # A spike must be at least this many times the baseline's rate...
    baseline_factor: float = 2.0
    # ...and exceed what the baseline predicts for the window by at least ``threshold`` lines.
    baseline_lookback_seconds: int = 1800


class Verdict(str, Enum):
    INCIDENT = "incident"
    ALREADY_NOTIFIED = "already_notified"
    HEALTHY = "healthy"
    NO_VERDICT = "no_verdict"


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """Everything known about one Deployment at one tick. ``None`` means *unknown*."""

    deployment: Deployment
    replicasets: tuple[ReplicaSet, ...]
    pods: tuple[Pod, ...] | None
    errors: tuple[ErrorSample, ...] | None
    baseline: Baseline | None = None


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the correlator thinks of one rollout in its window: the row /status shows."""

    namespace: str
    deployment: str
    revision: int
    replicaset: str
    rollout_started_at: datetime
    age_seconds: float
    in_window: bool
    verdict: Verdict
    signals: tuple[Signal, ...]
    error_count: float | None
    attribution: Attribution | None
    baseline_per_minute: float | None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    assessments: tuple[Assessment, ...] = ()
    incidents: tuple[Incident, ...] = ()


def current_replicaset(deployment: Deployment, replicasets: Iterable[ReplicaSet]) -> ReplicaSet | None:
    """The ReplicaSet of the Deployment's current revision, if it is known."""
    if deployment.revision is None:
        return None
    for rs in replicasets:
        if rs.deployment == deployment.name and rs.revision == deployment.revision:
            return rs
    return None


def previous_revision(revision: int, replicasets: Iterable[ReplicaSet], deployment: str) -> ReplicaSet | None:
    """The newest ReplicaSet of ``deployment`` below ``revision``: what a rollback goes to."""
    older = [rs for rs in replicasets
             if rs.deployment == deployment and rs.revision is not None and rs.revision < revision]
    return max(older, key=lambda rs: rs.revision or 0, default=None)


def rollouts_to_judge(
    deployments: Iterable[Deployment], replicasets: Iterable[ReplicaSet], *, now: datetime, rules: Rules
) -> list[tuple[Deployment, ReplicaSet]]:
    """Current revisions inside the rollout window: the ones that need error counts and a baseline.

    One pass over the ReplicaSets (indexed by owner and revision), not one per Deployment: with
    thousands of both, the nested scan was the largest cost of a tick.
    """
    by_revision = {(rs.deployment, rs.revision): rs for rs in replicasets
                   if rs.deployment is not None and rs.revision is not None}
    out = []
    for dep in deployments:
        rs = by_revision.get((dep.name, dep.revision)) if dep.revision is not None else None
        if rs is not None and 0 <= (now - rs.created_at).total_seconds() <= rules.rollout_window_seconds:
            out.append((dep, rs))
    return out


def owns_pod(replicaset: str, pod_name: str) -> bool:
    """A pod's name is its ReplicaSet's name, a dash and a random suffix."""
    return pod_name.startswith(replicaset + "-")


@dataclass(frozen=True, slots=True)
class ErrorSplit:
    attribution: Attribution
    new_revision: float
    others: float


def split_errors(samples: Iterable[ErrorSample], rs: ReplicaSet) -> ErrorSplit:
    """Errors of the new revision's pods vs. everyone else's; workload total without pod labels."""
    samples = tuple(samples)
    with_pod = [s for s in samples if s.pod]
    if not with_pod:
        total = sum(s.count for s in samples)
        return ErrorSplit(Attribution.WORKLOAD_TOTAL, total, 0.0)
    mine = sum(s.count for s in with_pod if owns_pod(rs.name, s.pod or ""))
    # Streams without a pod label next to streams with one: count them as "others", they
    # cannot be tied to the new revision.
    others = sum(s.count for s in samples) - mine
    return ErrorSplit(Attribution.PER_POD, mine, others)


def is_clear_rise(count: float, baseline: Baseline, rules: Rules) -> bool:
    expected = baseline.per_minute * rules.error_window_seconds / 60.0
    return count >= rules.baseline_factor * expected and count - expected >= rules.threshold


def assess(
    view: WorkloadView,
    *,
    now: datetime,
    rules: Rules,
    already_notified: Container[tuple[str, str, int]],
) -> tuple[Assessment | None, Incident | None]:
    """Judge one Deployment: (assessment, or None when there is nothing to judge; incident)."""
    dep = view.deployment
    rs = current_replicaset(dep, view.replicasets)
    if rs is None or rs.revision is None:
        return None, None
    age = (now - rs.created_at).total_seconds()
    in_window = 0 <= age <= rules.rollout_window_seconds
    if not in_window and not dep.progress_deadline_exceeded:
        return None, None

    signals: list[Signal] = []
    reasons: list[str] = []
    unknown = False
    count: float | None = None
    split: ErrorSplit | None = None

    # Error spike.
    if in_window:
        if view.errors is None:
            unknown = True
            reasons.append("error counts unknown (Loki unavailable)")
        else:
            split = split_errors(view.errors, rs)
            count = split.new_revision
            if count >= rules.threshold:
                if view.baseline is None:
                    unknown = True
                    reasons.append("threshold reached; baseline not known yet")
                elif is_clear_rise(count, view.baseline, rules):
                    signals.append(Signal.ERROR_SPIKE)
                else:
                    reasons.append(
                        f"{count:g} errors but no clear rise over the baseline "
                        f"({view.baseline.per_minute:.1f}/min before the rollout)"
                    )

    # Pod health of the new revision.
    problems: list[tuple[str, str]] = []
    new_pods: list[Pod] = []
    if view.pods is None:
        if in_window:
            unknown = True
            reasons.append("pods unknown")
    else:
        new_pods = [p for p in view.pods if p.replicaset == rs.name]
        if in_window:
            problems = [(p.name, problem.value) for p in new_pods for problem in p.problems]
            if problems:
                signals.append(Signal.POD_HEALTH)

    if dep.progress_deadline_exceeded:
        signals.append(Signal.PROGRESS_DEADLINE)

    key = (dep.namespace, dep.name, rs.revision)
    if signals and key in already_notified:
        verdict = Verdict.ALREADY_NOTIFIED
    elif signals:
        verdict = Verdict.INCIDENT
    elif unknown:
        verdict = Verdict.NO_VERDICT
    else:
        verdict = Verdict.HEALTHY

    assessment = Assessment(
        namespace=dep.namespace,
        deployment=dep.name,
        revision=rs.revision,
        replicaset=rs.name,
        rollout_started_at=rs.created_at,
        age_seconds=round(age, 3),
        in_window=in_window,
        verdict=verdict,
        signals=tuple(signals),
        error_count=count,
        attribution=split.attribution if split else None,
        baseline_per_minute=view.baseline.per_minute if view.baseline else None,
        reasons=tuple(reasons),
    )
    if verdict is not Verdict.INCIDENT:
        return assessment, None

    previous = previous_revision(rs.revision, view.replicasets, dep.name)
    window_minutes = rules.error_window_seconds / 60.0
    others_in_window = tuple(sorted(
        r.revision for r in view.replicasets
        if r.deployment == dep.name and r.revision is not None and r.revision != rs.revision
        and 0 <= (now - r.created_at).total_seconds() <= rules.rollout_window_seconds
    ))
    evidence = Evidence(
        attribution=split.attribution if split else Attribution.WORKLOAD_TOTAL,
        new_revision_errors=split.new_revision if split else 0.0,
        other_errors=split.others if split else 0.0,
        error_rate_per_minute=round((count or 0.0) / window_minutes, 2),
        baseline_per_minute=round(view.baseline.per_minute, 2) if view.baseline else None,
        baseline_window_seconds=view.baseline.window_seconds if view.baseline else None,
        affected_pods=tuple(sorted(p.name for p in new_pods)),
        pod_problems=tuple(problems),
        progress_message=dep.progress_message if dep.progress_deadline_exceeded else None,
        other_revisions_in_window=others_in_window,
        changes=template_changes(previous.template, rs.template) if previous else (),
        gitops=dep.gitops,
    )
    incident = Incident(
        namespace=dep.namespace,
        deployment=dep.name,
        revision=rs.revision,
        replicaset=rs.name,
        rollout_started_at=rs.created_at,
        error_count=count or 0.0,
        threshold=rules.threshold,
        window_seconds=rules.error_window_seconds,
        detected_at=now,
        previous_revision=previous.revision if previous else None,
        signals=tuple(signals),
        evidence=evidence,
    )
    return assessment, incident


def decide(
    views: Iterable[WorkloadView],
    *,
    now: datetime,
    rules: Rules,
    already_notified: Container[tuple[str, str, int]],
) -> Decision:
    assessments: list[Assessment] = []
    incidents: list[Incident] = []
    for view in views:
        assessment, incident = assess(view, now=now, rules=rules, already_notified=already_notified)
        if assessment is not None:
            assessments.append(assessment)
        if incident is not None:
            incidents.append(incident)
    return Decision(tuple(assessments), tuple(incidents))
