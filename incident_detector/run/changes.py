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
calls whom) is kept while its inputs do not change: a mass rollout puts hundreds of Deployments
and changes in one tick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from ..judge import causality as chains
from ..judge import causes as ranking
from ..judge import service_map as graph
from ..judge.change_diff import deployment_change, rollout_change
from ..judge.change_windows import Judgement, Suspect, baseline_span, judge, suspects
from ..judge.correlator import (
    Rollout,
    Rules,
    Verdict,
    current_replicaset,
    find_rollout,
    owned_by,
)
from ..judge.dependencies import (
    Dependencies,
    hosts_in_line,
    learn_dependencies,
    template_mentions,
)
from ..judge.rules import RuleSet, Subject, classify
from ..judge.signatures import top_signatures
from ..model import (
    Baseline,
    BlastEntry,
    Causality,
    Cause,
    Change,
    ChangeIncident,
    Deployment,
    ErrorCounts,
    LogLine,
    Pod,
    PodTemplate,
    RemediationView,
    ReplicaSet,
    Service,
)
from ..notify import change_render
from ..sources.loki import CountWindow
from ..store.changes import ChangeLog, change_dict
from ..store.service_map import ObservedLinks
from .live import LiveFeed
# MAP_REFRESH and MapKeeper are named here too: they are the desk's, kept in their own module.
from .map_keeper import LEARNED_LINES_PER_WORKLOAD, MAP_REFRESH, MapKeeper  # noqa: F401

log = structlog.get_logger("incident_detector")

T = TypeVar("T")
# (source, what, thunk) -> the result, or None when the source failed (marked on the tick).
Call = Callable[[str, str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
# How often old changes are pruned from the state file.
PRUNE_EVERY = timedelta(minutes=10)
# Changes looked at when ranking causes: this long before the errors began.
CAUSE_LOOKBACK = timedelta(hours=2)
# Lines read per call of learn_lines at most, and per workload in one call.
LEARN_LINES_PER_CALL = 100
LEARN_LINES_PER_WORKLOAD = 5
# A rollout incident's blast radius asks for the callers of at most this many namespaces.
BLAST_NAMESPACES = 5


class ChangeSource(Protocol):
    async def refresh(self, namespace: str, *, now: datetime) -> tuple[Change, ...]: ...
    def services(self, namespace: str) -> tuple[Service, ...]: ...
    def states(self, kind: str, namespace: str) -> tuple[Any, ...]: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass
class _Seen:
    """What the tick saw of one namespace, and what is worked out from it at most once per
    tick (a mass rollout puts hundreds of Deployments and changes in one tick)."""

    deployments: dict[str, Deployment]
    replicasets: tuple[ReplicaSet, ...]
    selected: frozenset[str]
    # Each Deployment's own ReplicaSets (owner reference and uid), by its name.
    owned: dict[str, list[ReplicaSet]] = field(default_factory=dict)
    templates: dict[str, PodTemplate] | None = None
    deps: Dependencies | None = None
    # What any workload's template references or names, and which Deployments are called:
    # a change touching none of them cannot affect anything (see ChangeDesk._may_affect).
    # (name, uid, revision) of each Deployment's current ReplicaSet: what the templates are.
    revisions: tuple[tuple[str, str, int | None], ...] = ()
    config_refs: frozenset[str] | None = None
    mentioned: frozenset[str] = frozenset()
    called: frozenset[tuple[str, str]] = frozenset()

    # The lists this was made from (the watches hand out the same tuple while nothing changed).
    sources: tuple[Any, Any] = (None, None)

    @classmethod
    def of(cls, deployments: Sequence[Deployment], replicasets: Sequence[ReplicaSet],
           selected: Sequence[str], previous: _Seen | None = None) -> _Seen:
        if previous is not None and previous.sources[0] is deployments \
                and previous.sources[1] is replicasets:
            # Nothing changed since the last tick: what was worked out from it still holds.
            return replace(previous, selected=frozenset(selected), deps=None)
        by_name = {d.name: d for d in deployments}
        owned: dict[str, list[ReplicaSet]] = {}
        for rs in replicasets:
            dep = by_name.get(rs.deployment or "")
            if dep is not None and owned_by(rs, dep):
                owned.setdefault(dep.name, []).append(rs)
        return cls(by_name, tuple(replicasets), frozenset(selected), owned,
                   sources=(deployments, replicasets))


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
        self._baselines: dict[tuple[str, str, str], Baseline] = {}
        self._seen: dict[str, _Seen] = {}
        # Error lines per (namespace, workload) recently seen (triage examples, samples):
        # hosts named in them are dependencies.
        self._lines: dict[tuple[str, str], list[str]] = {}
        self.last_judgements: list[Judgement] = []
        # Per namespace: who calls whom, with the inputs it was learnt from (see dependencies),
        # and a counter of the error lines learnt.
        self._deps_cache: dict[str, tuple[Any, Dependencies]] = {}
        self._lines_version: dict[str, int] = {}
        # Per namespace: whose lines learn_lines reads first next time (workloads in turns).
        self._learn_turn: dict[str, int] = {}
        # Per namespace: what the templates reference and name, with the revisions they are of.
        self._refs_cache: dict[str, tuple[Any, frozenset[str], frozenset[str]]] = {}
        # Per namespace: the error counts of the tick's metric query, (instant, per workload or
        # None when Loki failed, the workloads counted), until judge takes them.
        self._counted: dict[str, tuple[datetime, dict[str, float] | None, frozenset[str]]] = {}
        # Per namespace: its recorded changes still in their window (see _in_window).
        self._window: dict[str, list[Change]] = {}
        # Per namespace: the rollouts the timeline holds a record of, (name, uid, revision).
        self._known_rollouts: dict[str, set[tuple[str, str, int | None]]] = {}
        # Told when new changes were recorded (the CloudEvent emitter's wake-up).
        self.on_recorded: Callable[[], None] | None = None
        # Who calls whom, for /api/graph and /map: kept current from what the tick already read.
        self.map_keeper = MapKeeper(self)

    # 1. What changed -----------------------------------------------------------------------

    async def observe(self, namespace: str, *, deployments: Sequence[Deployment],
                      selected: Sequence[str], replicasets: Sequence[ReplicaSet],
                      now: datetime, call: Call) -> list[Change]:
        """The changes of ``namespace`` since the last tick, recorded and published.

        ``deployments``: all of the namespace's (dependencies may be on any of them);
        ``selected``: the names of those the detector judges (TARGET_DEPLOYMENT)."""
        self._seen[namespace] = _Seen.of(deployments, replicasets, selected,
                                         previous=self._seen.get(namespace))
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

    def _in_window(self, namespace: str, now: datetime) -> list[Change]:
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
        seen = self._seen[namespace]
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

    # What is known about dependencies ----------------------------------------------------

    def learn_lines(self, namespace: str, workload_lines: Mapping[str, Sequence[str]]) -> None:
        """Error lines seen for workloads (triage samples, an incident's sample): the hosts they
        name are dependencies. Only lines that name a host are kept, at most
        LEARNED_LINES_PER_WORKLOAD per workload; at most LEARN_LINES_PER_CALL lines are read
        per call (the newest of each workload, workloads taken in turns across calls), which
        bounds the cost of a tick in which hundreds of workloads log errors."""
        workloads = sorted(w for w, lines in workload_lines.items() if lines)
        if not workloads:
            return
        start = self._learn_turn.get(namespace, 0) % len(workloads)
        self._learn_turn[namespace] = start + 1
        budget, learnt = LEARN_LINES_PER_CALL, False
        for workload in workloads[start:] + workloads[:start]:
            if budget <= 0:
                break
            newest = list(workload_lines[workload])[-min(budget, LEARN_LINES_PER_WORKLOAD):]
            budget -= len(newest)
            naming = [line for line in newest if hosts_in_line(line)]
            if not naming:
                continue
            kept = self._lines.setdefault((namespace, workload), [])
            kept.extend(naming)
            self.map_keeper.heard(namespace, workload, naming)
            del kept[:-LEARNED_LINES_PER_WORKLOAD]
            learnt = True
        if learnt:
            self._lines_version[namespace] = self._lines_version.get(namespace, 0) + 1
            seen = self._seen.get(namespace)
            if seen is not None:
                seen.deps = None  # learnt again with these lines

    def _templates(self, namespace: str) -> dict[str, PodTemplate]:
        """Each Deployment's current pod template (once per tick)."""
        seen = self._seen.get(namespace)
        if seen is None:
            return {}
        if seen.templates is None:
            seen.templates = {}
            revisions = []
            for name, dep in seen.deployments.items():
                current = current_replicaset(dep, seen.owned.get(name, ()))
                if current is not None:
                    seen.templates[name] = current.template
                    revisions.append((name, current.uid, current.revision))
            seen.revisions = tuple(sorted(revisions))
            cached = self._refs_cache.get(namespace)
            if cached is not None and cached[0] == seen.revisions:
                seen.config_refs, seen.mentioned = cached[1], cached[2]
            else:  # a template changed: read them all again (once, not every tick)
                seen.config_refs = frozenset(
                    ref for t in seen.templates.values() for ref in (*t.config_maps, *t.secrets))
                seen.mentioned = frozenset(host.partition(".")[0]
                                           for t in seen.templates.values()
                                           for host, _ in template_mentions(t))
                self._refs_cache[namespace] = (seen.revisions, seen.config_refs, seen.mentioned)
        return seen.templates

    def dependencies(self, namespace: str) -> Dependencies:
        """Who calls whom in ``namespace`` (once per tick, again after new error lines)."""
        seen = self._seen.get(namespace)
        if seen is not None and seen.deps is not None:
            return seen.deps
        deployments = tuple(seen.deployments.values()) if seen else ()
        services = self._services(namespace)
        templates = self._templates(namespace)
        # Learnt again only when a template, a Service or the error lines changed: the same
        # inputs give the same answer, and a mass rollout's namespace is large.
        key = (seen.revisions if seen else (), tuple(sorted(d.pod_labels for d in deployments)),
               tuple(services), self._lines_version.get(namespace, 0))
        cached = self._deps_cache.get(namespace)
        if cached is not None and cached[0] == key:
            deps = cached[1]
        else:
            lines = {workload: tuple(kept) for (ns, workload), kept in self._lines.items()
                     if ns == namespace}
            by_workload = {self.workload_of(d): d.name for d in deployments}
            deps = learn_dependencies(
                deployments, templates=templates, services=services,
                error_lines={by_workload.get(w, w): ls for w, ls in lines.items()})
            self._deps_cache[namespace] = (key, deps)
        if seen is not None:
            seen.deps = deps
            seen.called = frozenset(d.key for found in deps.edges.values() for d in found)
        return deps

    def _may_affect(self, change: Change, seen: _Seen) -> bool:
        """False when nothing in the namespace can be affected by ``change``: a ConfigMap or
        Secret no template references, a workload nobody names or calls. Exactly the cases
        ``judge.causes.affected_workloads`` would answer with none, at a set lookup's cost."""
        if change.kind in ("ConfigMap", "Secret"):
            return change.name in (seen.config_refs or ())
        if change.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            return change.name in seen.mentioned or \
                (change.namespace, change.name) in seen.called
        return True

    def deployment_names(self, namespace: str) -> dict[str, str]:
        """The Deployments of ``namespace`` by the workload label of their log streams."""
        seen = self._seen.get(namespace)
        if seen is None:
            return {}
        return {self.workload_of(d): name for name, d in seen.deployments.items()}

    def _services(self, namespace: str) -> tuple[Service, ...]:
        return self.watcher.services(namespace) if self.watcher is not None else ()

    # 2. Incidents of kind change ----------------------------------------------------------

    def _suspects(self, namespace: str, *, busy: Container[str], now: datetime
                  ) -> tuple[list[Change], tuple[Suspect, ...]]:
        """The changes in their window, and the workloads to judge after them."""
        seen = self._seen.get(namespace)
        recent = self._in_window(namespace, now)
        if seen is None or not recent:
            return recent, ()
        deps = self.dependencies(namespace)
        templates = self._templates(namespace)
        services = self._services(namespace)
        affected = {}
        for c in recent:
            names = set(ranking.affected_workloads(
                c, tuple(seen.deployments.values()), templates, deps, services=services)
                if self._may_affect(c, seen) else ())
            # The workloads calling a rolled-out one through others (the service map): a
            # rise in them is tied to the rollout too.
            names.update(self.map_keeper.callers_of(c))
            if names:
                affected[c.key] = tuple(sorted(names))
        judged = {name: d for name, d in seen.deployments.items() if name in seen.selected}
        return recent, suspects(recent, affected, deployments=judged, now=now,
                                window_seconds=self.window_seconds, busy=busy)

    def count_plan(self, namespace: str, *, deployments: Sequence[Deployment],
                   selected: Sequence[str], replicasets: Sequence[ReplicaSet],
                   busy: Container[str], now: datetime) -> CountPlan:
        """What ``judge`` will need counted at ``now``, for the tick's one metric query: the
        suspects' workloads over the error window, and the baselines not known yet. Planned
        from the changes recorded before this tick; a change recorded by this tick's
        ``observe`` is counted from the next tick on."""
        self._seen[namespace] = _Seen.of(deployments, replicasets, selected,
                                         previous=self._seen.get(namespace))
        seen = self._seen[namespace]
        _, found = self._suspects(namespace, busy=busy, now=now)
        workloads = {s.deployment: self.workload_of(seen.deployments[s.deployment])
                     for s in found}
        baselines: dict[tuple[datetime, int], list[tuple[tuple[str, str, str], str]]] = {}
        for suspect in found:
            if suspect.baseline_key in self._baselines:
                continue
            end, seconds = baseline_span(suspect, seen.deployments[suspect.deployment],
                                         rules=self.rules)
            baselines.setdefault((end, seconds), []).append(
                (suspect.baseline_key, workloads[suspect.deployment]))
        return CountPlan(now=now, workloads=frozenset(workloads.values()), baselines=tuple(
            (end, seconds, tuple(members)) for (end, seconds), members in baselines.items()))

    def counted(self, namespace: str, plan: CountPlan, answer: Any, *, now: datetime) -> None:
        """The answer (``WindowCounts``; None: Loki failed) of the query ``plan`` was part of:
        the baselines are kept, the error counts wait for ``judge`` at the same instant."""
        if answer is None:
            self._counted[namespace] = (now, None, plan.workloads)
            return
        errors = answer.counts.get("errors") if plan.workloads else None
        self._counted[namespace] = (now, _per_workload(errors), plan.workloads)
        for index, (_, seconds, members) in enumerate(plan.baselines):
            per_workload = _per_workload(answer.counts.get(CountPlan.baseline_name(index)))
            for key, workload in members:
                self._baselines[key] = Baseline(per_workload.get(workload, 0.0), seconds)

    async def judge(self, namespace: str, *, busy: set[str], risen: Mapping[str, bool | None],
                    now: datetime, call: Call) -> list[str]:
        """Judge the workloads that recent changes may break; the keys of the incidents
        recorded.

        The counts come from the tick's one metric query (``count_plan``, ``counted``); a
        suspect it did not count (its change recorded this tick) is judged at the next tick.
        Without that query (``counted`` not called at this instant), they are asked here."""
        seen = self._seen.get(namespace)
        if seen is None:
            return []
        self.map_keeper.update(namespace, now=now)
        counted = self._counted.pop(namespace, None)
        recent, found = self._suspects(namespace, busy=busy, now=now)
        if not recent:
            self.last_judgements = [j for j in self.last_judgements
                                    if j.suspect.namespace != namespace]
            return []
        deps = self.dependencies(namespace)
        live_keys = {s.baseline_key for s in found}
        for key in [k for k in self._baselines if k[0] == namespace and k not in live_keys]:
            del self._baselines[key]
        if not found:
            self.last_judgements = [j for j in self.last_judgements
                                    if j.suspect.namespace != namespace]
            return []
        workloads = {s.deployment: self.workload_of(seen.deployments[s.deployment])
                     for s in found}
        if counted is not None and counted[0] == now:
            _, per_workload, covered = counted
        else:
            counts: ErrorCounts | None = await call("loki", "change error counts", lambda: (
                self.loki.count_errors(namespace=namespace,
                                       workloads=sorted(set(workloads.values())),
                                       window_seconds=self.rules.error_window_seconds, at=now)))
            await self._fetch_baselines(namespace, found, seen, workloads, call)
            per_workload = None if counts is None else _per_workload(counts)
            covered = frozenset(workloads.values())
        judgements = []
        recorded = []
        for suspect in found:
            workload = workloads[suspect.deployment]
            count = None if per_workload is None or workload not in covered \
                else per_workload.get(workload, 0.0)
            judgement = judge(suspect, count=count,
                              baseline=self._baselines.get(suspect.baseline_key),
                              rules=self.rules, already_notified=_Notified(self.is_notified),
                              now=now)
            judgements.append(judgement)
            if judgement.verdict is not Verdict.INCIDENT:
                continue
            incident = await self._incident(judgement, seen, workloads[suspect.deployment],
                                             recent_changes=recent, deps=deps, risen=risen,
                                             now=now, call=call)
            if self.record_notice(
                    key=incident.key, kind="change", namespace=namespace,
                    deployment=incident.deployment, detected_at=now,
                    record=change_render.change_incident_record(incident),
                    slack_payload=change_render.change_incident_slack(incident)):
                recorded.append(incident.key)
                log.warning("change_incident.detected", namespace=namespace,
                            deployment=incident.deployment, change_kind=incident.change.kind,
                            change=incident.change.name,
                            top_cause=incident.causes[0].change.name if incident.causes else None)
        self.last_judgements = [j for j in self.last_judgements
                                if j.suspect.namespace != namespace] + judgements
        return recorded

    async def _fetch_baselines(self, namespace: str, found: Sequence[Suspect], seen: _Seen,
                               workloads: Mapping[str, str], call: Call) -> None:
        """One query per change not yet measured: every suspect of that change shares it."""
        by_change: dict[tuple[datetime, int], list[Suspect]] = {}
        for suspect in found:
            if suspect.baseline_key in self._baselines:
                continue
            end, seconds = baseline_span(suspect, seen.deployments[suspect.deployment],
                                         rules=self.rules)
            by_change.setdefault((end, seconds), []).append(suspect)
        for (end, seconds), group in by_change.items():
            names = sorted({workloads[s.deployment] for s in group})
            counts = await call("loki", "change baseline", lambda: self.loki.count_errors(
                namespace=namespace, workloads=names, window_seconds=seconds, at=end))
            if counts is None:
                return
            per_workload = _per_workload(counts)
            for suspect in group:
                self._baselines[suspect.baseline_key] = Baseline(
                    per_workload.get(workloads[suspect.deployment], 0.0), seconds)

    async def _incident(self, judgement: Judgement, seen: _Seen, workload: str, *,
                        recent_changes: Sequence[Change], deps: Dependencies,
                        risen: Mapping[str, bool | None], now: datetime, call: Call
                        ) -> ChangeIncident:
        suspect = judgement.suspect
        dep = seen.deployments[suspect.deployment]
        began = suspect.change.at
        lines: tuple[LogLine, ...] = await call("loki", "sample", lambda: self.loki.sample_errors(
            namespace=suspect.namespace, workloads=[workload],
            start=began - timedelta(seconds=self.rules.error_window_seconds), end=now,
            limit=self.sample_lines)) or ()
        after = [line.line for line in lines if line.at >= began]
        signatures = top_signatures(after, before=[line.line for line in lines
                                                   if line.at < began])
        # When the errors began rising: the first error line after the change, when sampled.
        rise = min((line.at for line in lines if line.at >= began), default=began)
        self.learn_lines(suspect.namespace, {workload: after[-LEARNED_LINES_PER_WORKLOAD:]})
        causes = self.causes_for(
            namespace=suspect.namespace, deployment=dep, began=rise, now=now,
            error_lines=after, own_rollout=None, risen=risen, pods=(),
            changes=recent_changes)
        window_minutes = self.rules.error_window_seconds / 60.0
        count = judgement.error_count or 0.0
        verdict = classify(self.rule_set(), Subject(
            log_lines=tuple(s.example for s in signatures), signals=("change",)))
        top = causes[0] if causes else None
        before = f", {round(judgement.baseline.per_minute, 2):g}/min before the change" \
            if judgement.baseline else ""
        tree = self.causality(suspect.namespace, dep.name, causes, symptoms=[
            chains.Symptom("signal", "error_spike",
                           f"error spike: {round(count / window_minutes, 2):g}/min",
                           (f"{count:g} error lines in the last "
                            f"{self.rules.error_window_seconds}s{before}",)),
            *signature_symptoms(signatures)])
        remediation = self.plan_for_cause(suspect.namespace, top, detected_at=now,
                                          confidence=None, remediator=self.remediator) \
            if top is not None else None
        return ChangeIncident(
            namespace=suspect.namespace, deployment=dep.name, deployment_uid=dep.uid,
            change=suspect.change, detected_at=now, error_count=count,
            window_seconds=self.rules.error_window_seconds,
            error_rate_per_minute=round(count / window_minutes, 2),
            baseline_per_minute=round(judgement.baseline.per_minute, 2)
            if judgement.baseline else None,
            causes=causes, signatures=signatures, priority=verdict.priority,
            rule=verdict.rule, action=(top.action or "none") if top else "none",
            command=top.command if top else None, remediation=remediation, causality=tree)

    # 3. Causes of any incident ------------------------------------------------------------

    def causes_for(self, *, namespace: str, deployment: Deployment, began: datetime,
                   now: datetime, error_lines: Sequence[str], own_rollout: Change | None,
                   risen: Mapping[str, bool | None], pods: Sequence[Pod],
                   changes: Sequence[Change] | None = None) -> tuple[Cause, ...]:
        """The top three causes of ``deployment``'s errors that began at ``began``."""
        if changes is None:
            changes = self.changes.recent(since=began - CAUSE_LOOKBACK, namespaces=[namespace])
        candidates = list(changes)
        if own_rollout is not None:
            # The timeline's record of the same rollout, when it saw it happen (who made it).
            recorded = [c for c in candidates if c.kind == "Deployment"
                        and c.name == own_rollout.name and c.revision == own_rollout.revision]
            if recorded:
                own_rollout = recorded[0]
            candidates = [c for c in candidates if c not in recorded]
        templates = self._templates(namespace)
        seen = self._seen.get(namespace)
        reach = self.map_keeper.reach(namespace, deployment.name)
        elsewhere = sorted({node.partition("/")[0] for node in reach} - {namespace})
        if elsewhere:
            # What changed in the namespaces of the workloads it calls through others.
            candidates += self.changes.recent(since=began - CAUSE_LOOKBACK,
                                              namespaces=elsewhere)
        return ranking.rank_causes(
            ranking.Symptom.of(deployment, began=began, template=templates.get(deployment.name),
                               pods=tuple(pods), error_lines=tuple(error_lines),
                               own_rollout=own_rollout),
            candidates, now=now, dependencies=self.dependencies(namespace), risen=risen,
            deployments=tuple(seen.deployments.values()) if seen else (deployment,),
            services=self._services(namespace), reach=reach)

    # 4. Who else it hurts, and how its causes reach it -------------------------------------

    async def blast_radius(self, namespace: str, deployment: str, *, started_at: datetime,
                           now: datetime, call: Call, loki: Any) -> tuple[BlastEntry, ...]:
        """The callers of ``deployment`` on the map (directly or through others) whose error
        rate rose: for the callers of each namespace, two metric queries, their errors over the
        error window now and over the baseline lookback before the rollout began
        (``started_at``). Asked once per rollout incident, for at most ``BLAST_NAMESPACES``
        namespaces; a namespace whose query failed lists none. ``loki``: what counts (the
        detector's Loki client: the desk's own reader may only read lines)."""
        failing = graph.node_id(namespace, deployment)
        service_map = self.map_keeper.service_map
        found = chains.callers(service_map, failing)
        by_namespace: dict[str, list[str]] = {}
        for node in sorted(found):
            ns, _, name = node.partition("/")
            seen = self._seen.get(ns)
            if seen is not None and name in seen.deployments:
                by_namespace.setdefault(ns, []).append(name)
        window, lookback = self.rules.error_window_seconds, self.rules.baseline_lookback_seconds
        rates: dict[str, tuple[float | None, float | None]] = {}
        for ns, names in sorted(by_namespace.items())[:BLAST_NAMESPACES]:
            deployments = self._seen[ns].deployments
            workloads = {self.workload_of(deployments[name]): name for name in names}
            listed = sorted(workloads)
            now_counts = await call("loki", "blast radius", lambda ns=ns, listed=listed: (
                loki.count_errors(namespace=ns, workloads=listed, window_seconds=window,
                                  at=now)))
            before_counts = await call("loki", "blast radius", lambda ns=ns, listed=listed: (
                loki.count_errors(namespace=ns, workloads=listed, window_seconds=lookback,
                                  at=started_at)))
            if now_counts is None or before_counts is None:
                continue
            after = _per_workload(now_counts)
            before = _per_workload(before_counts)
            for workload, name in workloads.items():
                rates[graph.node_id(ns, name)] = (before.get(workload, 0.0) * 60.0 / lookback,
                                                  after.get(workload, 0.0) * 60.0 / window)
        return chains.blast_radius(service_map, failing, rates)

    def causality(self, namespace: str, deployment: str, causes: Sequence[Cause], *,
                  symptoms: Sequence[chains.Symptom],
                  blast: Sequence[BlastEntry] = ()) -> Causality:
        """The causality tree of an incident of ``deployment`` over the current map."""
        return chains.causality(graph.node_id(namespace, deployment), causes,
                                service_map=self.map_keeper.service_map,
                                symptoms=symptoms, blast=blast)

    # Acting on a cause --------------------------------------------------------------------

    def cause_rollout(self, namespace: str, cause: Cause) -> Rollout | None:
        """The rollout a cause names, as the tick sees it: None unless the cause is a
        Deployment's rollout whose revision is still that Deployment's current one (a
        Deployment that moved on since must not be rolled back on old evidence)."""
        change = cause.change
        seen = self._seen.get(namespace)
        if seen is None or change.kind != "Deployment" or change.revision is None:
            return None
        deployment = seen.deployments.get(change.name)
        if deployment is None or (change.uid and deployment.uid and change.uid != deployment.uid):
            return None
        rollout = find_rollout(deployment, seen.owned.get(deployment.name, ()))
        if rollout is None or rollout.replicaset.revision != change.revision:
            return None
        return rollout

    def plan_for_cause(self, namespace: str, cause: Cause, *, detected_at: datetime,
                       confidence: float | None, remediator: Any) -> RemediationView | None:
        """The rollback of the Deployment whose rollout is the top cause, through the same
        guardrails, journal and approvals as any action (keyed by *that* rollout: one rollback
        per bad revision, whichever incident asked first)."""
        if remediator is None or cause.action != "rollback":
            return None
        rollout = self.cause_rollout(namespace, cause)
        if rollout is None:
            return None
        from ..judge.guardrails import Action
        from ..act.remediation import PlanRequest

        rs = rollout.replicaset
        view = remediator.propose(PlanRequest(
            key=(namespace, rollout.deployment.name, rs.revision or 0, rollout.deployment.uid),
            deployment=rollout.deployment, action=Action.ROLLBACK, detected_at=detected_at,
            confidence=confidence, to_replicaset=rollout.previous, rule="root-cause"))
        return replace(view, target=f"{namespace}/{rollout.deployment.name}")

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


class _Notified:
    def __init__(self, is_notified: Callable[[str], bool]) -> None:
        self.is_notified = is_notified

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_notified(key)


@dataclass(frozen=True)
class CountPlan:
    """What ``ChangeDesk.judge`` needs counted at ``now``: the error window of ``workloads``
    (the suspects'), and per (end, seconds) the baselines still missing, as (baseline key,
    workload) pairs."""

    now: datetime
    workloads: frozenset[str]
    baselines: tuple[tuple[datetime, int, tuple[tuple[tuple[str, str, str], str], ...]], ...]

    @staticmethod
    def baseline_name(index: int) -> str:
        return f"change-baseline-{index}"

    def windows(self, *, at: datetime,
                workload_filter: Callable[[set[str]], Sequence[str] | None]) -> list[CountWindow]:
        """The baseline windows (the error window is the tick's ``errors`` window, which names
        ``workloads`` too)."""
        out = []
        for index, (end, seconds, members) in enumerate(self.baselines):
            names = workload_filter({workload for _, workload in members})
            out.append(CountWindow.ending(
                self.baseline_name(index), workloads=None if names is None else tuple(names),
                seconds=seconds, end=end, at=at, by="workload"))
        return out


def signature_symptoms(signatures: Sequence[Any], *, since: str = "the change",
                       limit: int = 3) -> list[chains.Symptom]:
    """An incident's top error signatures as symptoms of its tree: each an error group, its
    share of the sampled lines as the score."""
    total = sum(s.count for s in signatures) or 1
    return [chains.Symptom("error_group", s.fingerprint, f"error group: {s.fingerprint}",
                           (f"{s.count} of the sampled lines"
                            + (f", new since {since}" if s.new else ""),),
                           round(s.count / total, 2)) for s in signatures[:limit]]


def _per_workload(counts: ErrorCounts | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in counts.samples if counts is not None else ():
        out[sample.workload] = out.get(sample.workload, 0.0) + sample.count
    return out
