"""The decision: did a rollout break its Deployment? A pure function of plain data and ``now``.

Rules, in the order a person would check them:

1. Only the Deployment's *current* revision is judged: it is what runs from now on and what a
   rollback would undo. Its ReplicaSet is the one owned by the Deployment (controller owner
   reference, same uid) whose revision annotation equals the Deployment's.
2. A rollout begins when a ReplicaSet *becomes* the current revision: at its creation for a new
   one, or, for one made current again (``kubectl rollout undo``, a GitOps revert), when the
   controller rewrote its revision (``managedFields``) or the Progressing condition named it.
   A Deployment's first revision has nothing before it to compare with or roll back to: it is
   not a rollout.
3. Error and pod-health signals count only inside the rollout window; a stuck rollout
   (``ProgressDeadlineExceeded``) counts for as long as it is current.
4. Errors are attributed to the new revision by pod name (a pod's name starts with its
   ReplicaSet's name) when the logs carry a pod label; errors of the old pods while they drain
   are not the new revision's fault. Without pod identity the workload's total is used, and the
   evidence says so.
5. An error spike needs the threshold reached *and* a clear rise over the baseline (the rate of
   the same workload before the rollout): errors that were already there are not a regression.
   The baseline is the last *healthy* state: a revision already judged bad (an incident, or
   rolled back) is not the norm the next one is compared with (``last_healthy_state``). With no
   healthy state in the lookback, the threshold alone decides, and the evidence says why.
6. One incident per (namespace, deployment, revision, deployment uid), ever: ``already_notified``
   is consulted.

Anything unknown (Loki failed, baseline not fetched yet, pods not listed) gives "no verdict" for
the signals that need it, never "no errors".
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from ..model import (
    Alert,
    Attribution,
    Baseline,
    Deployment,
    ErrorSample,
    Evidence,
    Incident,
    Pod,
    ReplicaSet,
    RolloutStartSource,
    Signal,
)
# Where the baseline lies and which rollout a Deployment is in have modules of their own; their
# names stay importable from here.
from .baseline import (  # noqa: F401
    BaselineBatch,
    HealthyState,
    NoHealthyBaseline,
    baseline_batch,
    baseline_coverage,
    baseline_errors,
    baseline_window,
    last_healthy_state,
    revisions_text,
)
from .changes import template_changes
from .rollouts import (  # noqa: F401
    NO_STARTS,
    Rollout,
    RolloutKey,
    current_replicaset,
    find_rollout,
    owned_by,
    owns_pod,
    previous_revision,
    rollout_key,
    rollout_start,
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
    # The earliest start this process has seen per rollout (``rollout_key``; see ``rollout_start``).
    seen_starts: Mapping[RolloutKey, datetime] = field(default_factory=lambda: NO_STARTS)
    # The current rollout when the caller already found it (``rollouts_to_judge``), so that a
    # tick with hundreds of rollouts does not look for each twice; None: ``assess`` finds it.
    rollout: Rollout | None = None
    # Firing Alertmanager alerts mapped to this Deployment (judge.alert_map).
    alerts: tuple[Alert, ...] = ()



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
    rollout_start_source: RolloutStartSource = RolloutStartSource.REPLICASET_CREATED


@dataclass(frozen=True, slots=True)
class Decision:
    assessments: tuple[Assessment, ...] = ()
    incidents: tuple[Incident, ...] = ()


def in_window(started_at: datetime, *, now: datetime, rules: Rules) -> bool:
    return 0 <= (now - started_at).total_seconds() <= rules.rollout_window_seconds


def rollouts_to_judge(
    deployments: Iterable[Deployment],
    replicasets: Iterable[ReplicaSet],
    *,
    now: datetime,
    rules: Rules,
    seen_starts: Mapping[RolloutKey, datetime] = NO_STARTS,
) -> list[Rollout]:
    """Rollouts inside their window: the ones that need error counts and a baseline.

    One pass over the ReplicaSets (grouped by owner), not one per Deployment: with thousands of
    both, a nested scan was the largest cost of a tick.
    """
    by_owner: dict[str, list[ReplicaSet]] = {}
    for rs in replicasets:
        if rs.deployment is not None and rs.revision is not None:
            by_owner.setdefault(rs.deployment, []).append(rs)
    out = []
    for dep in deployments:
        own = by_owner.get(dep.name)
        rs = current_replicaset(dep, own) if own else None
        if rs is None or (not rs.reused and not in_window(rs.created_at, now=now, rules=rules)):
            continue  # the common case, decided without more work
        rollout = find_rollout(dep, own or (), seen_starts=seen_starts)
        if rollout is not None and in_window(rollout.started_at, now=now, rules=rules):
            out.append(rollout)
    return out


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


def rollout_alerts(alerts: Iterable[Alert], started_at: datetime) -> tuple[Alert, ...]:
    """The firing alerts that began at or after a rollout's start, oldest first."""
    return tuple(sorted((a for a in alerts if a.firing and a.starts_at >= started_at),
                        key=lambda a: (a.starts_at, a.fingerprint)))


def is_clear_rise(count: float, baseline: Baseline, rules: Rules) -> bool:
    expected = baseline.per_minute * rules.error_window_seconds / 60.0
    return count >= rules.baseline_factor * expected and count - expected >= rules.threshold


def assess(
    view: WorkloadView,
    *,
    now: datetime,
    rules: Rules,
    already_notified: Container[tuple[str, str, int, str]],
) -> tuple[Assessment | None, Incident | None]:
    """Judge one Deployment: (assessment, or None when there is nothing to judge; incident)."""
    dep = view.deployment
    rollout = view.rollout or find_rollout(dep, view.replicasets, seen_starts=view.seen_starts)
    if rollout is None:
        return None, None
    rs = rollout.replicaset
    revision = rs.revision or 0
    age = (now - rollout.started_at).total_seconds()
    judging = in_window(rollout.started_at, now=now, rules=rules)
    if not judging and not dep.progress_deadline_exceeded:
        return None, None

    signals: list[Signal] = []
    reasons: list[str] = []
    unknown = False
    count: float | None = None
    split: ErrorSplit | None = None

    # Error spike.
    if judging:
        if view.errors is None:
            unknown = True
            reasons.append("error counts unknown (Loki unavailable)")
        else:
            split = split_errors(view.errors, rs)
            count = split.new_revision
            baseline = view.baseline
            if baseline is not None and baseline.absent is not None:
                reasons.append(f"no healthy baseline: {baseline.absent}; judged against the "
                               "threshold alone")
            elif baseline is not None and baseline.excluded_revisions:
                reasons.append(f"baseline: the last healthy state, before "
                               f"{revisions_text(baseline.excluded_revisions)} (judged bad)")
            if count >= rules.threshold:
                if view.baseline is None:
                    unknown = True
                    reasons.append("threshold reached; baseline not known yet")
                elif view.baseline.absent is not None or is_clear_rise(count, view.baseline,
                                                                       rules):
                    signals.append(Signal.ERROR_SPIKE)
                else:
                    reasons.append(
                        f"{count:g} errors but no clear rise over the baseline "
                        f"({view.baseline.per_minute:.1f}/min in the last healthy state)"
                        if view.baseline.excluded_revisions else
                        f"{count:g} errors but no clear rise over the baseline "
                        f"({view.baseline.per_minute:.1f}/min before the rollout)"
                    )

    # Pod health of the new revision.
    problems: list[tuple[str, str]] = []
    new_pods: list[Pod] = []
    if view.pods is None:
        if judging:
            unknown = True
            reasons.append("pods unknown")
    else:
        new_pods = [p for p in view.pods if p.replicaset == rs.name]
        if judging:
            problems = [(p.name, problem.value) for p in new_pods for problem in p.problems]
            if problems:
                signals.append(Signal.POD_HEALTH)

    if dep.progress_deadline_exceeded:
        signals.append(Signal.PROGRESS_DEADLINE)

    # Alerts: one that began firing once the rollout had begun is a signal of it; one firing
    # since before was not caused by it (it stays an alert of its own).
    alerts = rollout_alerts(view.alerts, rollout.started_at) if judging else ()
    if alerts:
        signals.append(Signal.ALERT)
    for alert in view.alerts:
        if judging and alert not in alerts:
            reasons.append(f"alert {alert.name or alert.fingerprint} firing since before the "
                           "rollout: not counted")

    key = (dep.namespace, dep.name, revision, dep.uid)
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
        revision=revision,
        replicaset=rs.name,
        rollout_started_at=rollout.started_at,
        age_seconds=round(age, 3),
        in_window=judging,
        verdict=verdict,
        signals=tuple(signals),
        error_count=count,
        attribution=split.attribution if split else None,
        baseline_per_minute=view.baseline.per_minute
        if view.baseline and view.baseline.absent is None else None,
        reasons=tuple(reasons),
        rollout_start_source=rollout.start_source,
    )
    if verdict is not Verdict.INCIDENT:
        return assessment, None

    previous = rollout.previous
    window_minutes = rules.error_window_seconds / 60.0
    # A baseline that is absent has no rate to show: the evidence says why instead.
    baseline = view.baseline if view.baseline and view.baseline.absent is None else None
    others_in_window = tuple(sorted(
        r.revision for r in view.replicasets
        if r.revision is not None and r.revision != revision and owned_by(r, dep)
        and in_window(rollout_start(dep, r)[0], now=now, rules=rules)
    ))
    evidence = Evidence(
        attribution=split.attribution if split else Attribution.WORKLOAD_TOTAL,
        new_revision_errors=split.new_revision if split else 0.0,
        other_errors=split.others if split else 0.0,
        error_rate_per_minute=round((count or 0.0) / window_minutes, 2),
        baseline_per_minute=round(baseline.per_minute, 2) if baseline else None,
        baseline_window_seconds=baseline.window_seconds if baseline else None,
        baseline_lookback_seconds=rules.baseline_lookback_seconds if view.baseline else None,
        baseline_excluded_revisions=view.baseline.excluded_revisions if view.baseline else (),
        baseline_absent=view.baseline.absent if view.baseline else None,
        rollout_start_source=rollout.start_source,
        affected_pods=tuple(sorted(p.name for p in new_pods)),
        pod_problems=tuple(problems),
        progress_message=dep.progress_message if dep.progress_deadline_exceeded else None,
        other_revisions_in_window=others_in_window,
        changes=template_changes(previous.template, rs.template),
        gitops=dep.gitops,
        alerts=alerts,
    )
    incident = Incident(
        namespace=dep.namespace,
        deployment=dep.name,
        revision=revision,
        replicaset=rs.name,
        rollout_started_at=rollout.started_at,
        error_count=count or 0.0,
        threshold=rules.threshold,
        window_seconds=rules.error_window_seconds,
        detected_at=now,
        previous_revision=previous.revision,
        signals=tuple(signals),
        evidence=evidence,
        deployment_uid=dep.uid,
        replicaset_uid=rs.uid,
    )
    return assessment, incident


def decide(
    views: Iterable[WorkloadView],
    *,
    now: datetime,
    rules: Rules,
    already_notified: Container[tuple[str, str, int, str]],
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
