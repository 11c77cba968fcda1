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

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType

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
from .changes import template_changes


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


RolloutKey = tuple[str, str, int]
NO_STARTS: Mapping[RolloutKey, datetime] = MappingProxyType({})


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
class Rollout:
    """A ReplicaSet that became its Deployment's current revision, and what it replaced."""

    deployment: Deployment
    replicaset: ReplicaSet
    started_at: datetime
    start_source: RolloutStartSource
    # The newest older revision: what a rollback goes to, and the "before".
    previous: ReplicaSet

    @property
    def key(self) -> RolloutKey:
        return rollout_key(self.replicaset)


def rollout_key(rs: ReplicaSet) -> RolloutKey:
    """A rollout's identity for per-rollout memory: a reused ReplicaSet has several rollouts."""
    return (rs.namespace, rs.uid or rs.name, rs.revision or 0)


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


def owned_by(rs: ReplicaSet, deployment: Deployment) -> bool:
    """``rs`` is controlled by this Deployment object, not by an earlier one of the same name.

    Garbage collection removes a deleted Deployment's ReplicaSets, but not at once: for a while
    the old ones and the new Deployment coexist. An unknown uid on either side (an old recording)
    falls back to the name.
    """
    if rs.deployment != deployment.name:
        return False
    return not (rs.deployment_uid and deployment.uid) or rs.deployment_uid == deployment.uid


def current_replicaset(deployment: Deployment, replicasets: Iterable[ReplicaSet]) -> ReplicaSet | None:
    """The ReplicaSet of the Deployment's current revision, if it is known."""
    if deployment.revision is None:
        return None
    for rs in replicasets:
        if rs.revision == deployment.revision and owned_by(rs, deployment):
            return rs
    return None


def previous_revision(revision: int, replicasets: Iterable[ReplicaSet],
                      deployment: Deployment) -> ReplicaSet | None:
    """The newest ReplicaSet of ``deployment`` below ``revision``: what a rollback goes to."""
    older = [rs for rs in replicasets
             if rs.revision is not None and rs.revision < revision and owned_by(rs, deployment)]
    return max(older, key=lambda rs: rs.revision or 0, default=None)


def rollout_start(deployment: Deployment, rs: ReplicaSet,
                  *, seen: datetime | None = None) -> tuple[datetime, RolloutStartSource]:
    """When ``rs`` became the current revision of ``deployment``, and which data said so.

    A new ReplicaSet became current when it was created. A reused one keeps its old creation
    time; the controller's last write of its revision annotation (``managedFields``) and the
    Progressing condition that names it are the data that survive a restart. Both are upper
    bounds (each later step of the rollout moves them), so the earliest wins, and so does an
    earlier value this process saw itself (``seen``). Nothing is earlier than the creation.
    """
    if not rs.reused:
        return rs.created_at, RolloutStartSource.REPLICASET_CREATED
    bounds: list[tuple[datetime, RolloutStartSource]] = []
    if rs.revision_written_at is not None:
        bounds.append((rs.revision_written_at, RolloutStartSource.REVISION_ANNOTATION))
    if deployment.progressing_replicaset == rs.name and deployment.progressing_updated_at is not None:
        bounds.append((deployment.progressing_updated_at, RolloutStartSource.PROGRESSING_CONDITION))
    if not bounds:
        return rs.created_at, RolloutStartSource.REPLICASET_CREATED
    at, source = min(bounds, key=lambda bound: bound[0])
    if seen is not None and seen < at:
        at = seen  # the source that gave the first sighting is not kept: its figure is
    return max(at, rs.created_at), source


def find_rollout(deployment: Deployment, replicasets: Iterable[ReplicaSet],
                 *, seen_starts: Mapping[RolloutKey, datetime] = NO_STARTS) -> Rollout | None:
    """The Deployment's current rollout; None when there is no current revision or when it is
    the first one (nothing older owned by the Deployment: no "before", no rollback target)."""
    replicasets = tuple(replicasets)
    rs = current_replicaset(deployment, replicasets)
    if rs is None or rs.revision is None:
        return None
    previous = previous_revision(rs.revision, replicasets, deployment)
    if previous is None:
        return None
    seen = seen_starts.get(rollout_key(rs)) if seen_starts else None
    started_at, source = rollout_start(deployment, rs, seen=seen)
    return Rollout(deployment=deployment, replicaset=rs, started_at=started_at,
                   start_source=source, previous=previous)


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
class HealthyState:
    """Where a rollout's baseline may lie: the Deployment's last healthy state before it.

    A revision already judged bad (an incident recorded for it, or rolled back) is not the norm
    a later one is compared with: its errors would make the next bad revision look ordinary.
    ``until`` is the start of the oldest of the judged-bad revisions right before the rollout
    (the rollout's own start when its previous revision was not judged bad); ``since`` is the
    start of the revision after the newest judged-bad revision before ``until`` (None when none
    is: the window reaches back as far as the Deployment existed and the lookback allows).
    ``excluded`` names the judged-bad revisions left out, oldest first; ``healthy`` is False when
    every earlier revision was judged bad. ``bad_replicasets``: the ReplicaSets of every revision
    judged bad, whose pods' errors a baseline leaves out wherever the window lies (the pods of a
    bad revision still write while they drain after the next rollout began).
    """

    until: datetime
    since: datetime | None = None
    excluded: tuple[int, ...] = ()
    healthy: bool = True
    bad_replicasets: tuple[str, ...] = ()


def last_healthy_state(rollout: Rollout, replicasets: Iterable[ReplicaSet], *,
                       bad_revisions: Container[int] = (),
                       bad_replicasets: Iterable[str] = ()) -> HealthyState:
    """The last healthy state of ``rollout``'s Deployment before it began.

    ``bad_revisions``: the Deployment's revisions with an incident recorded (the store's, which
    a new leader or a restarted process reads back). A revision after which a ReplicaSet was made
    current again (``reused``: ``kubectl rollout undo``, a GitOps revert) was rolled back: judged
    bad as well. Each revision's time runs from its rollout's start (``rollout_start``) to the
    next one's. ``bad_replicasets``: further ReplicaSets known bad (those of an earlier
    Deployment object of the same name, whose pods' errors are under the same workload label).
    """
    dep = rollout.deployment
    current = rollout.replicaset.revision or 0
    older = sorted((rs for rs in replicasets if rs.revision is not None
                    and rs.revision < current and owned_by(rs, dep)),
                   key=lambda rs: rs.revision or 0)
    chain = [*older, rollout.replicaset]
    starts = [rollout_start(dep, rs)[0] for rs in older] + [rollout.started_at]

    def bad(index: int) -> bool:
        return chain[index].revision in bad_revisions or chain[index + 1].reused

    own = rollout.replicaset.name
    bad_sets = {*bad_replicasets, *(chain[i].name for i in range(len(older)) if bad(i))} - {own}
    index = len(older) - 1
    until = rollout.started_at
    excluded: list[int] = []
    while index >= 0 and bad(index):
        excluded.append(chain[index].revision or 0)
        until = starts[index]
        index -= 1
    if index < 0:
        return HealthyState(until=until, excluded=tuple(reversed(excluded)), healthy=False,
                            bad_replicasets=tuple(sorted(bad_sets)))
    since = None
    for earlier in range(index - 1, -1, -1):
        if bad(earlier):
            since = starts[earlier + 1]
            break
    return HealthyState(until=until, since=since, excluded=tuple(reversed(excluded)),
                        bad_replicasets=tuple(sorted(bad_sets - {chain[index].name})))


def baseline_errors(samples: Iterable[ErrorSample], workload: str, state: HealthyState) -> float:
    """A workload's error lines in a baseline window, less those of the pods of ReplicaSets
    judged bad (``state.bad_replicasets``; samples without a pod cannot be told apart: counted)."""
    return sum(s.count for s in samples if s.workload == workload and not (
        s.pod and any(owns_pod(rs, s.pod) for rs in state.bad_replicasets)))


@dataclass(frozen=True, slots=True)
class NoHealthyBaseline:
    """No healthy state to compare a rollout with in the lookback: the threshold alone judges."""

    reason: str
    excluded: tuple[int, ...] = ()


def _revisions(numbers: Sequence[int]) -> str:
    return ("revision " if len(numbers) == 1 else "revisions ") + ", ".join(map(str, numbers))


def baseline_window(rollout: Rollout, state: HealthyState, *, lookback_seconds: int,
                    minimum_seconds: int, end: datetime | None = None
                    ) -> tuple[datetime, int] | NoHealthyBaseline:
    """The baseline's window, ``(end, seconds)``, in the last healthy state; or why there is none.

    The window ends at ``end`` (default: when the healthy state ended). There is none when every
    earlier revision was judged bad, when the healthy state ended more than the lookback before
    the rollout, or when it lasted less than ``minimum_seconds`` (a rate over less than the error
    window says little, and a longer window would reach into a bad revision's time).
    """
    end = state.until if end is None else end
    excluded = state.excluded
    if not state.healthy:
        return NoHealthyBaseline(f"every earlier revision was judged bad ({_revisions(excluded)})",
                                 excluded)
    if excluded and (rollout.started_at - state.until).total_seconds() >= lookback_seconds:
        return NoHealthyBaseline(
            f"{_revisions(excluded)} judged bad since more than the "
            f"{lookback_seconds // 60} min lookback before the rollout", excluded)
    if state.since is not None:
        lasted = (state.until - state.since).total_seconds()
        if lasted < minimum_seconds:
            return NoHealthyBaseline(
                f"the last healthy state lasted {lasted:.0f}s, less than the "
                f"{minimum_seconds}s error window", excluded)
        return end, int(min(lookback_seconds, (end - state.since).total_seconds()))
    return end, baseline_coverage(rollout, end=end, lookback_seconds=lookback_seconds,
                                  minimum_seconds=minimum_seconds)


@dataclass(frozen=True, slots=True)
class BaselineBatch:
    """Rollouts whose baselines one query fetches: errors over ``[end - seconds, end]``; and
    the rollouts that have no healthy state to take one from (no query needed)."""

    end: datetime
    seconds: int
    rollouts: tuple[Rollout, ...]
    absent: tuple[tuple[Rollout, NoHealthyBaseline], ...] = ()


def baseline_batch(pending: Sequence[Rollout], *, span_seconds: float, lookback_seconds: int,
                   minimum_seconds: int, healthy: Mapping[RolloutKey, HealthyState] | None = None
                   ) -> BaselineBatch | None:
    """The rollout whose baseline window ends first, and every other that one query can serve.

    Each window lies in its rollout's last healthy state (``healthy``; by default the time right
    before the rollout). The shared window ends at the earliest end, so it lies before each
    rollout whose own window would end within ``span_seconds`` of it. Its length is the time the
    workload existed in the lookback (``baseline_coverage``), or the healthy state's when a
    judged-bad revision came before: errors are counted and divided over the same time. Rollouts
    whose window would differ in length (a Deployment younger than the lookback) wait for a
    later query, as do the later ones: at most one baseline query per namespace and tick.
    """
    healthy = healthy or {}

    def state_of(rollout: Rollout) -> HealthyState:
        return healthy.get(rollout.key) or HealthyState(until=rollout.started_at)

    windows: list[tuple[datetime, int, Rollout]] = []
    absent: list[tuple[Rollout, NoHealthyBaseline]] = []
    for rollout in pending:
        window = baseline_window(rollout, state_of(rollout), lookback_seconds=lookback_seconds,
                                 minimum_seconds=minimum_seconds)
        if isinstance(window, NoHealthyBaseline):
            absent.append((rollout, window))
        else:
            windows.append((window[0], window[1], rollout))
    if not windows and not absent:
        return None
    if not windows:
        return BaselineBatch(end=absent[0][0].started_at, seconds=0, rollouts=(),
                             absent=tuple(absent))
    windows.sort(key=lambda w: (w[0], w[2].started_at))
    end, seconds, _ = windows[0]

    def shares(rollout: Rollout) -> bool:
        state = state_of(rollout)
        if (state.until - end).total_seconds() > span_seconds:
            return False
        window = baseline_window(rollout, state, lookback_seconds=lookback_seconds,
                                 minimum_seconds=minimum_seconds, end=end)
        return window == (end, seconds)

    batch = tuple(r for _, _, r in windows if shares(r))
    return BaselineBatch(end=end, seconds=seconds, rollouts=batch, absent=tuple(absent))


def baseline_coverage(rollout: Rollout, *, end: datetime, lookback_seconds: int,
                      minimum_seconds: int) -> int:
    """Seconds before ``end`` in which the workload could log: the baseline's window.

    A Deployment created ten minutes ago logged for ten minutes, not for the whole lookback:
    dividing its errors by the lookback would make its past look quieter than it was and an
    unchanged rollout look like a spike; counting over the whole lookback would count the pods
    of a deleted Deployment of the same name. No pod of a Deployment is older than the
    Deployment (or, when its creation is unknown, than its previous revision's ReplicaSet). At
    least ``minimum_seconds``: a rate over less than the error window says little.
    """
    existed_since = rollout.deployment.created_at or rollout.previous.created_at
    covered = (end - existed_since).total_seconds()
    return int(min(lookback_seconds, max(minimum_seconds, covered)))


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
                               f"{_revisions(baseline.excluded_revisions)} (judged bad)")
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
