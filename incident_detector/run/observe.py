"""Reading one namespace for a tick or a fast look: the Deployments, ReplicaSets and pods, and
every count the tick needs from Loki in one metric query (the rollouts' error windows, their
baselines, the change timeline's suspects); then the ``WorkloadView``s the correlator judges.

Functions of the ``Detector`` whose state they read and keep (baselines, rollout starts, the
fast lane's young namespaces)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..judge.correlator import (
    Rollout,
    RolloutKey,
    WorkloadView,
    baseline_batch,
    baseline_errors,
    last_healthy_state,
    rollout_key,
    rollouts_to_judge,
)
from ..model import Baseline, Deployment, ErrorCounts, ErrorSample, Pod, ReplicaSet
from ..sources.loki import CountWindow
from .tick_report import TickReport

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from ..store.alerts import StoredAlert
    from .alert_desk import NamespaceAlerts
    from .daemon import Detector

log = structlog.get_logger("incident_detector")

T = TypeVar("T")


# Above this many workloads in one query, a detector that watches every Deployment asks Loki for
# every workload of the namespace instead of naming each: the answer is the same for the ones
# judged, and a LogQL alternation of hundreds of names costs more to build, send and match.
MAX_NAMED_WORKLOADS = 50


def _names(workloads: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if workloads is None else tuple(workloads)


def select_deployments(det: Detector, namespace: str,
                       deployments: Sequence[Deployment]) -> list[Deployment]:
    if det.settings.watches_all_deployments:
        return list(deployments)
    wanted = det.settings.target_deployment
    chosen = [d for d in deployments if d.name in wanted]
    found = {d.name for d in chosen}
    for name in wanted:
        key = (namespace, name)
        if name not in found and key not in det.missing_targets:
            det.missing_targets.add(key)
            log.warning("deployment.not_found", namespace=namespace, deployment=name)
        elif name in found and key in det.missing_targets:
            det.missing_targets.discard(key)
            log.info("deployment.found", namespace=namespace, deployment=name)
    return chosen


async def observe_namespace(det: Detector, namespace: str, now: datetime, report: TickReport,
                            alerts: Sequence[StoredAlert] = (), *, fast: bool = False
                            ) -> tuple[list[WorkloadView], NamespaceAlerts | None]:
    deployments, replicasets = await asyncio.gather(
        det.call_source("kubernetes", lambda: det.kube.list_deployments(namespace), now, report,
                   "deployments"),
        det.call_source("kubernetes", lambda: det.kube.list_replicasets(namespace), now, report,
                   "replicasets"),
    )
    if deployments is None or replicasets is None:
        # Nothing can be judged without both: "no verdict", not "healthy"; the alerts wait.
        return [], None
    selected = select_deployments(det, namespace, deployments)
    if det.change_desk is not None and not fast:
        desk = det.change_desk

        async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await det.call_source(source, thunk, now, report, what)

        det.change_reads[namespace] = asyncio.ensure_future(desk.observe(
            namespace, deployments=deployments, selected=[d.name for d in selected],
            replicasets=replicasets, now=now, call=call))
    found = None
    if det.alert_desk is not None and alerts:
        found = det.alert_desk.map_namespace(namespace, alerts, selected, replicasets)
    judged = rollouts_to_judge(selected, replicasets, now=now, rules=det.rules,
                               seen_starts=det.seen_starts)
    remember_starts(det, namespace, judged, replicasets)
    young = [r for r in judged if is_young(det, r, now)]
    det.young[namespace] = bool(young)
    ask_loki = True
    if fast:
        # Only the young rollouts; Loki only when a fast look is due and within the cap.
        judged = young
        ask_loki = bool(young) and fast_loki_due(det, namespace, judged)
    else:
        forget_baselines(det, namespace, {r.key for r in judged})
    # Only Deployments with something to judge get a view: a rollout in its window, or a
    # stuck rollout. The others cost one dictionary lookup each per tick.
    rollouts = {r.deployment.name: r for r in judged}
    if not fast:
        det.busy[namespace] = set(rollouts)
    # What the change timeline will judge: counted in the tick's one metric query too (a
    # fast look leaves the change timeline to the tick).
    plan = det.change_desk.count_plan(
        namespace, deployments=deployments, selected=[d.name for d in selected],
        replicasets=replicasets, busy=set(rollouts), now=now) \
        if det.change_desk is not None and not fast else None
    workload_of = {dep.name: det.workload_of(dep) for dep in selected
                   if dep.name in rollouts or dep.progress_deadline_exceeded}
    read_workloads = workloads_to_read(det, selected)
    if not workload_of:
        if not fast and (plan is not None or det.error_lines is not None):
            await count_namespace(det, namespace, (), {}, plan, now, report, read_workloads)
        return [], found
    counts: ErrorCounts | None = None
    pods: tuple[Pod, ...] | None = ()
    if judged and not ask_loki:
        pods = await det.call_source("kubernetes", lambda: det.kube.list_pods(
            namespace, template_hashes=hashes_of(judged)), now, report, "pods")
    elif judged:
        if fast:
            det.fast_loki_at[namespace] = det.monotonic()
        # Only the new revisions' pods matter: list just those (by pod-template-hash).
        template_hashes = hashes_of(judged)
        counts, pods = await asyncio.gather(
            count_namespace(det, namespace, judged, workload_of, plan, now, report,
                        read_workloads, replicasets=replicasets, read_lines=not fast),
            det.call_source("kubernetes", lambda: det.kube.list_pods(
                namespace, template_hashes=template_hashes), now, report, "pods"),
        )
    elif not fast and (plan is not None or det.error_lines is not None):
        await count_namespace(det, namespace, judged, workload_of, plan, now, report,
                              read_workloads)
    by_name: dict[str, list[ReplicaSet]] = {}
    for rs in replicasets:
        if rs.deployment in workload_of:
            by_name.setdefault(rs.deployment, []).append(rs)
    # Indexed once: with hundreds of rollouts at once, a scan of every pod and every sample
    # per Deployment was the largest cost of a tick.
    pods_of: dict[str | None, list[Pod]] = {}
    for pod in pods or ():
        pods_of.setdefault(pod.replicaset, []).append(pod)
    errors_of: dict[str, list[ErrorSample]] = {}
    for sample in counts.samples if counts is not None else ():
        errors_of.setdefault(sample.workload, []).append(sample)
    views = []
    for dep in selected:
        if dep.name not in workload_of:
            continue
        own = tuple(by_name.get(dep.name, ()))
        rollout = rollouts.get(dep.name)
        views.append(WorkloadView(
            deployment=dep,
            replicasets=own,
            pods=None if pods is None else tuple(
                pod for rs in own for pod in pods_of.get(rs.name, ())),
            errors=None if counts is None else tuple(errors_of.get(workload_of[dep.name], ())),
            baseline=det.baselines.get(rollout.key) if rollout else None,
            seen_starts=det.seen_starts,
            rollout=rollout,
            alerts=tuple(found.alerts_of.get(dep.name, ())) if found is not None else (),
        ))
    return views, found


def hashes_of(judged: Sequence[Rollout]) -> list[str] | None:
    hashes = [r.replicaset.pod_template_hash for r in judged]
    return None if None in hashes else sorted(set(hashes))  # type: ignore[arg-type]


def is_young(det: Detector, rollout: Rollout, now: datetime) -> bool:
    return (now - rollout.started_at).total_seconds() <= det.settings.young_rollout_seconds


def fast_loki_due(det: Detector, namespace: str, young: Sequence[Rollout]) -> bool:
    """Whether a fast look at ``namespace`` asks Loki now: FAST_POLL_SECONDS after the last
    one that did (at once for a rollout whose baseline is not known yet: it was just seen),
    and only if its query (the counts, with the baseline when one is pending: one metric
    query) fits the namespace's LOKI_MAX_QUERIES_PER_MINUTE."""
    pending = any(r.key not in det.baselines for r in young)
    last = det.fast_loki_at.get(namespace)
    due = pending or last is None or \
        det.monotonic() - last >= det.settings.fast_poll_seconds * 0.9
    return due and det.loki_budget.allows(namespace)


async def count_namespace(det: Detector, namespace: str, judged: Sequence[Rollout],
                          workload_of: Mapping[str, str], plan: Any, now: datetime,
                          report: TickReport, read_workloads: Sequence[str] | None = None, *,
                          replicasets: Sequence[ReplicaSet] = (),
                          read_lines: bool = True) -> ErrorCounts | None:
    """Every count the tick needs of a namespace, in ONE Loki metric query (``count_windows``)
    made at the tick's instant: the error window of the rollouts judged and of the change
    timeline's suspects (``errors``), the baselines of the rollouts that have none yet
    (``baseline``, see ``_baseline_window``) and those of the change timeline's
    (``ChangeDesk.count_plan``). The rollouts' counts are returned (None: Loki failed or
    nothing was judged); the change timeline gets its own (``ChangeDesk.counted``).

    At the tick's instant, not Loki's: the lines counted are those an incident's sample
    reads up to the same instant (see _with_signatures).

    Then the tick's read of error lines (``error_lines``), of ``read_workloads``, unless
    ``read_lines`` is False (a fast look: the lines are the tick's to read)."""
    desk = det.change_desk
    named = {workload_of[r.deployment.name] for r in judged}
    if plan is not None:
        named |= plan.workloads
    windows: list[CountWindow] = []
    if named:
        windows.append(CountWindow("errors", _names(workload_filter(det, named)),
                                   det.settings.error_window_seconds))
    if det.readback is not None:
        # What was judged bad elsewhere decides which revisions a baseline may span: the
        # baseline waits for the Events read back, however the two reads interleave.
        await asyncio.shield(det.readback)
    batch, healthy = baseline_window(det, namespace, judged, replicasets)
    baseline_of: dict[RolloutKey, str] = {}
    if batch is not None:
        for rollout, none in batch.absent:
            det.baselines[rollout.key] = Baseline(
                0.0, 0, excluded_revisions=none.excluded, absent=none.reason)
        baseline_of = {r.key: det.workload_of(r.deployment) for r in batch.rollouts}
    if baseline_of:
        # Per pod when a bad revision's pods may have logged in the window: they are left
        # out (correlator.baseline_errors); per workload otherwise, fewer series.
        by = "pod" if any(healthy[key].bad_replicasets for key in baseline_of) \
            else "workload"
        windows.append(CountWindow.ending(
            "baseline", workloads=_names(workload_filter(det, set(baseline_of.values()))),
            seconds=batch.seconds, end=batch.end, at=now, by=by))
    if plan is not None:
        windows.extend(plan.windows(at=now, workload_filter=partial(workload_filter, det)))
    lines = det.error_lines if read_lines else None
    read = lines.read_window(namespace, workloads=read_workloads, now=now) \
        if lines is not None else None
    if read is not None:
        windows.append(read)
    answer = None
    if windows:
        answer = await det.call_source("loki", lambda: det.loki.count_windows(
            namespace=namespace, windows=windows, at=now), now, report, "error counts")
    if desk is not None and plan is not None:
        desk.counted(namespace, plan, answer, now=now)
    if lines is not None:
        # The tick's one log query: only the legs the metric query saw lines of (every leg
        # when it failed), none when there were none.
        legs = None if answer is None or read is None else \
            answer.legs(read.name, await det.loki.error_match())

        async def call(thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await det.call_source("loki", thunk, now, report, "error lines")

        await lines.refresh(namespace, workloads=read_workloads, now=now, legs=legs,
                            call=call)
    if answer is None:
        return None
    if batch is not None and baseline_of:
        samples = answer.counts["baseline"].samples
        for rollout in batch.rollouts:
            state = healthy[rollout.key]
            det.baselines[rollout.key] = Baseline(
                baseline_errors(samples, baseline_of[rollout.key], state), batch.seconds,
                excluded_revisions=state.excluded)
    return answer.counts["errors"] if judged else None


def workloads_to_read(det: Detector, selected: Sequence[Deployment]) -> list[str] | None:
    """The workloads the tick's read of error lines asks for: every one when every
    Deployment is watched; else the selected Deployments' and those the triage names."""
    named = triage_workloads(det)
    if named is None:
        return None
    return sorted(set(named) | {det.workload_of(dep) for dep in selected})


def triage_workloads(det: Detector) -> list[str] | None:
    """The workloads whose error lines are read each tick (None: every workload)."""
    if det.settings.watches_all_deployments:
        return None
    return sorted({det.settings.loki_label_app} if len(
        det.settings.target_deployment) == 1 else set(det.settings.target_deployment))


def baseline_window(det: Detector, namespace: str, judged: Sequence[Rollout],
                    replicasets: Sequence[ReplicaSet]) -> tuple[Any, dict[RolloutKey, Any]]:
    """The rollouts whose baselines are missing and that one window can serve, and the last
    healthy state of each (correlator.last_healthy_state).

    A base-image bump rolls hundreds of Deployments within a minute or two: one window per
    rollout would make a query of hundreds of legs. See correlator.baseline_batch for which
    rollouts share the window; the others wait for a later tick. The revisions judged bad
    are the store's, so a baseline waits until Events were read back (what another replica
    notified). One store read and one pass over the ReplicaSets for all of them.
    """
    pending = [r for r in judged if r.key not in det.baselines]
    if not pending or not det.readback_done:
        return None, {}
    bad_of = det.store.judged_bad(namespace)
    names = {r.deployment.name for r in pending}
    sets_of: dict[str, list[ReplicaSet]] = {}
    for rs in replicasets:
        if rs.deployment in names:
            sets_of.setdefault(rs.deployment, []).append(rs)
    healthy = {}
    for rollout in pending:
        dep = rollout.deployment
        bad = bad_of.get(dep.name, ())
        healthy[rollout.key] = last_healthy_state(
            rollout, sets_of.get(dep.name, ()),
            bad_revisions={revision for revision, uid, _ in bad if uid == dep.uid},
            bad_replicasets=[replicaset for _, _, replicaset in bad])
    batch = baseline_batch(pending, span_seconds=det.rules.error_window_seconds,
                           lookback_seconds=det.rules.baseline_lookback_seconds,
                           minimum_seconds=det.rules.error_window_seconds, healthy=healthy)
    return batch, healthy


def workload_filter(det: Detector, workloads: set[str]) -> list[str] | None:
    """The workloads a query names; None (all of the namespace) past MAX_NAMED_WORKLOADS
    when every Deployment is watched anyway."""
    if det.settings.watches_all_deployments and len(workloads) > MAX_NAMED_WORKLOADS:
        return None
    return sorted(workloads)


def remember_starts(det: Detector, namespace: str, judged: Sequence[Rollout],
                    replicasets: Sequence[ReplicaSet]) -> None:
    for rollout in judged:
        if rollout.replicaset.reused:
            det.seen_starts.setdefault(rollout.key, rollout.started_at)
    if det.seen_starts:
        # Kept while the ReplicaSet still has that revision: a rollout that leaves its window
        # must not come back when a later scale moves the data its start was read from.
        alive = {rollout_key(rs) for rs in replicasets if rs.reused}
        for key in [k for k in det.seen_starts if k[0] == namespace and k not in alive]:
            del det.seen_starts[key]


def forget_baselines(det: Detector, namespace: str, keep: set[RolloutKey]) -> None:
    for key in [k for k in det.baselines if k[0] == namespace and k not in keep]:
        del det.baselines[key]

