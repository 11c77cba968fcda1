"""The change timeline in the loop: what changed in the watched namespaces, recorded and
published, and the incidents it explains.

Each tick, per namespace:

1. ``observe``: the changes since the last tick. The kinds of ``CHANGE_KINDS`` other than
   Deployments come from ``sources.changes_watch`` (one watch request per kind); Deployments ride
   on the detector's own Deployment watch (no request of their own), diffed against the
   ReplicaSets for what their rollout changed; a rollout in its window that no watch saw (it
   came before the detector's start) is read from the ReplicaSets, once. The watches run on
   threads of their own, next to the detection's reads. New changes are written to the state file
   (``ChangeLog``) before they are published on the live feed (dashboard, ``/api/changes/stream``,
   gRPC) or posted as CloudEvents.
2. ``judge``: the workloads a recent change may break (``judge.causes.affected_workloads``) are
   judged against their rate before it (``judge.change_windows``); a clear rise is a ``kind:
   change`` incident, recorded as a notice with its deliveries like an alert incident, its causes
   ranked (``judge.causes``).
3. ``causes_for``: a rollout incident's causes, ranked among the same changes.

Costs are bounded: the suspects' counts and their baselines (one window per change, kept until
its window ends) ride in the tick's one metric query (``count_plan``, ``counted``), and an
incident's sample is read from the tick's error lines (``run.error_lines``). What a tick
works out (the ReplicaSets by Deployment, the current templates and what they reference, who
calls whom: ``run.change_topology``) is kept while its inputs do not change: a mass rollout puts
hundreds of Deployments and changes in one tick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from ..judge import causality as chains
from ..judge.change_diff import deployment_change, rollout_change
from ..judge.change_windows import Judgement
from ..judge.correlator import Rollout, Rules, current_replicaset, find_rollout
from ..judge.rules import RuleSet
from ..model import (
    Baseline,
    BlastEntry,
    Causality,
    Cause,
    Change,
    Deployment,
    Pod,
    RemediationView,
    ReplicaSet,
    Service,
)
from ..store.changes import ChangeLog, change_dict
from ..store.service_map import ObservedLinks
from .live import LiveFeed
from .change_causes import blast_radius, causality, cause_rollout, causes_for, plan_for_cause
from .change_judging import CountPlan, count_plan, judge_namespace, take_counts
from .change_topology import Topology
from .map_keeper import MapKeeper

log = structlog.get_logger("incident_detector")

T = TypeVar("T")
# (source, what, thunk) -> the result, or None when the source failed (marked on the tick).
Call = Callable[[str, str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
# How often old changes are pruned from the state file.
PRUNE_EVERY = timedelta(minutes=10)


class ChangeSource(Protocol):
    async def refresh(self, namespace: str, *, now: datetime) -> tuple[Change, ...]: ...
    def services(self, namespace: str) -> tuple[Service, ...]: ...
    def states(self, kind: str, namespace: str) -> tuple[Any, ...]: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class ChangeDesk:
    def __init__(self, *, changes: ChangeLog, live: LiveFeed, watcher: ChangeSource | None,
                 kube: Any, loki: Any, rules: Rules, window_seconds: float,
                 rule_set: Callable[[], RuleSet], sample_lines: int,
                 workload_of: Callable[[Deployment], str], record_notice: Callable[..., bool],
                 is_notified: Callable[[str], bool], remediator: Any = None,
                 metrics: Any = None, links: ObservedLinks | None = None) -> None:
        self.changes = changes
        # The service map's links learnt from error lines, in the store (see MapKeeper).
        self.links = links
        self.live = live
        self.watcher = watcher
        self.kube = kube
        self.loki = loki
        self.rules = rules
        self.window_seconds = window_seconds
        self.rule_set = rule_set
        self.sample_lines = sample_lines
        self.workload_of = workload_of
        self.record_notice = record_notice
        self.is_notified = is_notified
        # act.remediation.Remediator, when REMEDIATION_MODE is not off.
        self.remediator = remediator
        # run.metrics.DetectorMetrics: incident_detector_changes_total.
        self.metrics = metrics
        self._pruned_at: datetime | None = None
        # Baselines of suspects, fetched once per (namespace, deployment, change) and kept
        # while the change is in its window.
        self.suspect_baselines: dict[tuple[str, str, str], Baseline] = {}
        self.last_judgements: list[Judgement] = []
        # Per namespace: the error counts of the tick's metric query, (instant, per workload or
        # None when Loki failed, the workloads counted), until judge takes them.
        self.counted_errors: dict[
            str, tuple[datetime, dict[str, float] | None, frozenset[str]]] = {}
        # Per namespace: its recorded changes still in their window (see _in_window).
        self._window: dict[str, list[Change]] = {}
        # Per namespace: the rollouts the timeline holds a record of, (name, uid, revision).
        self._known_rollouts: dict[str, set[tuple[str, str, int | None]]] = {}
        # Told when new changes were recorded (the CloudEvent emitter's wake-up).
        self.on_recorded: Callable[[], None] | None = None
        # Who calls whom, for /api/graph and /map: kept current from what the tick already read.
        self.map_keeper = MapKeeper(self)
        # What the tick saw of each namespace, and who calls whom in it (judging, causes).
        self.topology = Topology(watcher=watcher, workload_of=workload_of,
                                 heard=self.map_keeper.heard)

    # 1. What changed -----------------------------------------------------------------------

    async def observe(self, namespace: str, *, deployments: Sequence[Deployment],
                      selected: Sequence[str], replicasets: Sequence[ReplicaSet],
                      now: datetime, call: Call) -> list[Change]:
        """The changes of ``namespace`` since the last tick, recorded and published.

        ``deployments``: all of the namespace's (dependencies may be on any of them);
        ``selected``: the names of those the detector judges (TARGET_DEPLOYMENT)."""
        self.topology.saw(namespace, deployments, replicasets, selected)
        found: list[Change] = list(self._deployment_changes(namespace, replicasets, now))
        found += self._rollouts_not_seen(namespace, deployments, replicasets, now,
                                         taken=[c for c in found if c.rollout])
        if self.watcher is not None:
            watched = await call("kubernetes", "changes",
                                 lambda: self.watcher.refresh(namespace, now=now))
            found.extend(watched or ())
        recorded = self.changes.record(sorted(found, key=lambda c: (c.at, c.kind, c.name)))
        if recorded and self.on_recorded is not None:
            self.on_recorded()
        window = self._window.get(namespace)
        if window is not None:
            window.extend(recorded)
            window.sort(key=lambda c: (c.at, c.id or 0))
        for change in recorded:
            if self.metrics is not None:
                self.metrics.change_recorded(change.kind, change.action)
            self.live.publish("change", change_dict(change))
            log.info("change.recorded", namespace=change.namespace, kind=change.kind,
                     name=change.name, action=change.action, manager=change.manager,
                     fields=len(change.fields))
        return recorded

    def _deployment_changes(self, namespace: str, replicasets: Sequence[ReplicaSet],
                            now: datetime) -> Iterable[Change]:
        drain = getattr(self.kube, "drain_deployment_changes", None)
        if drain is None:
            return ()
        out = []
        for old, new in drain(namespace):
            change = deployment_change(old, new, replicasets=replicasets, now=now)
            if change is not None:
                out.append(change)
        return out

    def in_window(self, namespace: str, now: datetime) -> list[Change]:
        """The namespace's changes made within the window before ``now``, oldest first: kept in
        memory as they are recorded (read from the state file once, after a start)."""
        since = now - timedelta(seconds=self.window_seconds)
        kept = self._window.get(namespace)
        if kept is None:
            kept = self._window[namespace] = self.changes.recent(since=since,
                                                                namespaces=[namespace])
        kept[:] = [c for c in kept if c.at >= since]
        return list(kept)

    def _rollouts_not_seen(self, namespace: str, deployments: Sequence[Deployment],
                           replicasets: Sequence[ReplicaSet], now: datetime,
                           taken: Sequence[Change]) -> list[Change]:
        """The rollouts in their window that the timeline has no record of: they happened
        before the detector started (or while it was down), so no watch saw them. Read from
        the ReplicaSets as the correlator reads them; once per rollout, across restarts."""
        known = self._known_rollouts.get(namespace)
        if known is None:
            since = now - timedelta(seconds=self.window_seconds)
            known = self._known_rollouts[namespace] = {
                (c.name, c.uid, c.revision) for c in self.changes.recent(
                    since=since, namespaces=[namespace]) if c.kind == "Deployment" and c.rollout}
        known.update((c.name, c.uid, c.revision) for c in taken)
        found = []
        current = set()
        seen = self.topology.seen[namespace]
        for dep in deployments:
            key = (dep.name, dep.uid, dep.revision)
            current.add(key)
            if key in known:
                continue  # recorded, or looked at already: its revision did not move since
            owned = seen.owned.get(dep.name, ())
            current_rs = current_replicaset(dep, owned)
            if current_rs is None:
                continue  # its new ReplicaSet not listed yet: looked at again next tick
            rollout = find_rollout(dep, owned)
            if rollout is not None and rollout.started_at > now:
                continue  # a skewed clock: looked at again next tick
            known.add(key)
            if rollout is None or \
                    (now - rollout.started_at).total_seconds() > self.window_seconds:
                continue  # a first revision, or a rollout over before the detector looked
            found.append(rollout_change(rollout, observed_at=now))
        # Bounded by the Deployments there are: a revision that moved on is not looked at again.
        known.intersection_update(current)
        return found

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()

    def prune(self, now: datetime) -> None:
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        dropped = self.changes.prune(now)
        if dropped:
            log.info("change.pruned", dropped=dropped)

    # 2. Incidents of kind change ----------------------------------------------------------

    def count_plan(self, namespace: str, *, deployments: Sequence[Deployment],
                   selected: Sequence[str], replicasets: Sequence[ReplicaSet],
                   busy: Container[str], now: datetime) -> CountPlan:
        return count_plan(self, namespace, deployments=deployments, selected=selected,
                          replicasets=replicasets, busy=busy, now=now)

    def counted(self, namespace: str, plan: CountPlan, answer: Any, *, now: datetime) -> None:
        return take_counts(self, namespace, plan, answer, now=now)

    async def judge(self, namespace: str, *, busy: set[str], risen: Mapping[str, bool | None],
                    now: datetime, call: Call) -> list[str]:
        return await judge_namespace(self, namespace, busy=busy, risen=risen, now=now, call=call)

    # 3. Causes of any incident ------------------------------------------------------------

    def causes_for(self, *, namespace: str, deployment: Deployment, began: datetime,
                   now: datetime, error_lines: Sequence[str], own_rollout: Change | None,
                   risen: Mapping[str, bool | None], pods: Sequence[Pod],
                   changes: Sequence[Change] | None = None) -> tuple[Cause, ...]:
        return causes_for(self, namespace=namespace, deployment=deployment, began=began, now=now,
                          error_lines=error_lines, own_rollout=own_rollout, risen=risen, pods=pods,
                          changes=changes)

    # 4. Who else it hurts, and how its causes reach it -------------------------------------

    async def blast_radius(self, namespace: str, deployment: str, *, started_at: datetime,
                           now: datetime, call: Call, loki: Any) -> tuple[BlastEntry, ...]:
        return await blast_radius(self, namespace, deployment, started_at=started_at, now=now,
                                  call=call, loki=loki)

    def causality(self, namespace: str, deployment: str, causes: Sequence[Cause], *,
                  symptoms: Sequence[chains.Symptom],
                  blast: Sequence[BlastEntry] = ()) -> Causality:
        return causality(self, namespace, deployment, causes, symptoms=symptoms, blast=blast)

    # Acting on a cause --------------------------------------------------------------------

    def cause_rollout(self, namespace: str, cause: Cause) -> Rollout | None:
        return cause_rollout(self, namespace, cause)

    def plan_for_cause(self, namespace: str, cause: Cause, *, detected_at: datetime,
                       confidence: float | None, remediator: Any) -> RemediationView | None:
        return plan_for_cause(self, namespace, cause, detected_at=detected_at,
                              confidence=confidence, remediator=remediator)

    def status(self) -> dict[str, Any]:
        return {
            "recorded": self.changes.count(),
            "cloudevents": self.changes.emission_summary(),
            "watch": self.watcher.status() if self.watcher is not None else {"kinds": []},
            "suspects": [{"namespace": j.suspect.namespace, "deployment": j.suspect.deployment,
                          "change": f"{j.suspect.change.kind}/{j.suspect.change.name}",
                          "verdict": j.verdict.value, "error_count": j.error_count,
                          "reasons": list(j.reasons)} for j in self.last_judgements],
        }
