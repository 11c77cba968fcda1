"""Where a rollout's baseline lies: the last healthy state before it, the window the baseline's
errors are counted in, and one batched query window for many rollouts (rule 5 of
``judge.correlator``). Pure.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..model import ErrorSample, ReplicaSet
from .rollouts import Rollout, RolloutKey, owned_by, owns_pod, rollout_start


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


def revisions_text(numbers: Sequence[int]) -> str:
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
        return NoHealthyBaseline(f"every earlier revision was judged bad ({revisions_text(excluded)})",
                                 excluded)
    if excluded and (rollout.started_at - state.until).total_seconds() >= lookback_seconds:
        return NoHealthyBaseline(
            f"{revisions_text(excluded)} judged bad since more than the "
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
