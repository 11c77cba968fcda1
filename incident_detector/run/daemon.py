"""The loop: every tick, read Kubernetes and Loki, decide, record, notify.

``Detector.tick()`` is one complete pass and the unit of failure: a source that fails marks the
tick degraded (``health``: logged when the failure starts and when it ends, not on every tick)
and the correlator gets "unknown" instead of "nothing", so no incident is raised from a partial
view. Incidents are written to the store with their deliveries before anything is sent; the
outbox worker (``outbox``) sends them, retrying with capped backoff across ticks and restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from ..config import Settings
from ..judge.correlator import (
    Assessment,
    Rollout,
    RolloutKey,
    Rules,
    WorkloadView,
    baseline_batch,
    baseline_errors,
    decide,
    last_healthy_state,
    find_rollout,
    owns_pod,
    rollout_key,
    rollouts_to_judge,
)
from ..judge.causality import Symptom
from ..judge.change_diff import rollout_change
from ..judge.confidence import scored
from ..judge.correlator import Verdict, rollout_alerts
from ..judge.rules import DEFAULT_RULES, RuleSet, RuleVerdict, Subject, classify
from ..judge.signatures import top_signatures
from ..model import (
    AlertIncident,
    Baseline,
    Cause,
    Deployment,
    ErrorCounts,
    ErrorSample,
    Incident,
    LogLine,
    Pod,
    Priority,
    ReplicaSet,
    Signal,
    alert_key,
)
from ..notify import triage_render
from ..notify.render import incident_record
from ..notify.slack import thread_key
from ..retry import Backoff
from ..sources.loki import CountWindow, WindowCounts
from .health import Sources, iso
from ..store.db import StoreUnavailable
from ..store.journal import AuditRow, Journal
from .live import LiveFeed, RolloutSeries
from .loki_budget import LokiBudget, MeteredLoki
from .changes import signature_symptoms
from .metrics import DetectorMetrics
from .outbox import EventSink, Outbox, Sender, StdoutSink
from ..store.records import Store

if TYPE_CHECKING:  # act/ builds on run/: only the type is needed here
    from ..act.remediation import Remediator
    from .alert_desk import AlertDesk, NamespaceAlerts
    from ..store.alerts import StoredAlert
    from .changes import ChangeDesk
    from .error_lines import ErrorLines
    from .rules_file import RulesFile
    from .triage import Triage

log = structlog.get_logger("incident_detector")

T = TypeVar("T")
Clock = Callable[[], datetime]

WORKLOAD_NAME_LABELS = ("app.kubernetes.io/name", "app")
# Above this many workloads in one query, a detector that watches every Deployment asks Loki for
# every workload of the namespace instead of naming each: the answer is the same for the ones
# judged, and a LogQL alternation of hundreds of names costs more to build, send and match.
MAX_NAMED_WORKLOADS = 50
# A tick woken early (alerts arrived) comes at least this long after the previous one began.
MIN_WAKE_SECONDS = 1.0
# Watch events come in bursts (a rollout moves a Deployment, a ReplicaSet and its pods within
# moments): a fast look they wake comes at least this long after the previous look began.
MIN_WATCH_WAKE_SECONDS = 0.5
# Attempts at reading Events back before incidents are released without that memory.
READBACK_ATTEMPTS = 3


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class KubeSource(Protocol):
    async def list_deployments(self, namespace: str) -> tuple[Deployment, ...]: ...
    async def list_replicasets(self, namespace: str) -> tuple[ReplicaSet, ...]: ...
    async def list_pods(self, namespace: str, *,
                        template_hashes: Sequence[str] | None = None) -> tuple[Pod, ...]: ...


class LokiSource(Protocol):
    async def count_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                           window_seconds: int, at: datetime | None = None) -> ErrorCounts: ...
    async def count_windows(self, *, namespace: str, windows: Sequence[CountWindow],
                            at: datetime) -> WindowCounts: ...
    async def sample_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                            start: datetime, end: datetime, limit: int = 200) -> tuple[LogLine, ...]: ...


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


@dataclass
class TickReport:
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    # CPU time of the whole process (all threads) during the tick.
    cpu_seconds: float | None = None
    degraded: bool = False
    problems: list[str] = field(default_factory=list)
    assessments: tuple[Assessment, ...] = ()
    # Keys of the incidents recorded: (namespace, deployment, revision, deployment uid).
    incidents: list[tuple[str, str, int, str]] = field(default_factory=list)
    # Keys of the alert incidents recorded (``alert/<fingerprint>/<start>``).
    alert_incidents: list[str] = field(default_factory=list)
    # Keys of the change incidents recorded (``change/<namespace>/<deployment>/...``).
    change_incidents: list[str] = field(default_factory=list)
    # Changes recorded by the change timeline.
    changes: int = 0
    role: str = "leader"

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at),
                "duration_seconds": self.duration_seconds, "cpu_seconds": self.cpu_seconds,
                "degraded": self.degraded,
                "problems": self.problems,
                "incidents": [{"namespace": k[0], "deployment": k[1], "revision": k[2]}
                              for k in self.incidents],
                "alert_incidents": list(self.alert_incidents),
                "change_incidents": list(self.change_incidents), "changes": self.changes}


def assessment_dict(a: Assessment) -> dict[str, Any]:
    return {"namespace": a.namespace, "deployment": a.deployment, "revision": a.revision,
            "replicaset": a.replicaset, "rollout_started_at": iso(a.rollout_started_at),
            "rollout_start_source": a.rollout_start_source.value,
            "age_seconds": a.age_seconds, "in_window": a.in_window, "verdict": a.verdict.value,
            "signals": [s.value for s in a.signals], "error_count": a.error_count,
            "attribution": a.attribution.value if a.attribution else None,
            "baseline_per_minute": a.baseline_per_minute, "reasons": list(a.reasons)}


class Detector:
    def __init__(
        self,
        *,
        settings: Settings,
        kube: KubeSource,
        loki: LokiSource,
        store: Store,
        stdout: StdoutSink,
        slack: Sender | None = None,
        events: EventSink | None = None,
        leadership: Leadership | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        delivery_backoff: Backoff = Backoff(base=2.0, cap=300.0),
        source_backoff: Backoff = Backoff(base=1.0, cap=60.0),
        metrics: DetectorMetrics | None = None,
        remediator: Remediator | None = None,
        rules: RulesFile | None = None,
        alert_desk: AlertDesk | None = None,
        triage: Triage | None = None,
        live: LiveFeed | None = None,
        change_desk: ChangeDesk | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        # Each call tagged with its namespace, so that LokiBudget can count what it costs.
        self.loki = MeteredLoki(loki)
        self.store = store
        self.stdout = stdout
        self.slack = slack
        self.events = events
        self.leadership = leadership
        self.clock = clock
        self.monotonic = monotonic
        self.remediator = remediator
        # The rules in force (RULES_FILE, reloaded when it changes; the built-in set without).
        self.rules_file = rules
        self.alert_desk = alert_desk
        self.triage = triage
        # The change timeline and the incidents it explains (None: not built, e.g. in tests).
        self.change_desk = change_desk
        # The optional LLM analysis (run.analysis.Analyst; None without LLM_BASE_URL).
        self.analyst: Any = None
        # The namespaces' recent error lines, read once per tick (run.error_lines.ErrorLines;
        # None: each reader asks Loki itself, as without triage).
        self.error_lines: ErrorLines | None = None
        # Per namespace, this tick: the change timeline's refresh (started as soon as the
        # Deployments are read, so that its watches overlap the Loki queries), and the
        # Deployments with a rollout in its window (left to the correlator).
        self._change_reads: dict[str, asyncio.Future[Any]] = {}
        self._busy: dict[str, set[str]] = {}
        # The workloads ("<ns>/<name>") of the rollout incidents of the rollout window: the
        # error groups of their callers point at them (what the incident's records say of
        # it, and when its rollout began). Memory only: after a restart, from the next one.
        self._failing: dict[str, tuple[dict[str, Any], datetime]] = {}
        self._resumed = False
        # What the dashboard reads: the live feed of events, and each rollout's error rate.
        self.live = live if live is not None else LiveFeed()
        self.series = RolloutSeries()
        self._verdicts: dict[tuple[str, str, int], str] = {}
        # The remediation journal and audit trail (empty while REMEDIATION_MODE=off).
        self.journal = Journal(store.connection, on_audit=self._audited)
        # One registry per detector (never prometheus_client's global one); served on /metrics.
        self.metrics = metrics if metrics is not None else DetectorMetrics()
        self.metrics.read_state_from(store=store, is_leader=self.is_leader)
        self.sources = Sources(("kubernetes", "loki", "slack", "event", "store"),
                               metrics=self.metrics,
                               backoff=source_backoff)
        self.outbox = Outbox(store=store, stdout=stdout, slack=slack, events=events,
                             sources=self.sources, metrics=self.metrics, clock=clock,
                             is_leader=self.is_leader, backoff=delivery_backoff,
                             max_age=timedelta(minutes=settings.notify_max_age_minutes),
                             on_notice=self._noticed)
        self.rules = Rules(
            threshold=settings.error_threshold,
            error_window_seconds=settings.error_window_seconds,
            rollout_window_seconds=settings.roll_out_window_seconds,
            baseline_factor=settings.baseline_factor,
            baseline_lookback_seconds=int(settings.baseline_lookback_minutes * 60),
        )
        # Events are read back (what other replicas or earlier pods notified) before this
        # replica notifies anything: at start, and each time it becomes the leader.
        self._readback_attempts = 0
        self._readback_done = events is None
        self._readback: asyncio.Future[None] | None = None
        self.last_tick: TickReport | None = None
        self.ticks = 0
        self.started_at = clock()
        # Liveness (/healthz) is measured on a monotonic clock: the wall clock may jump.
        self._heartbeat = monotonic()
        # Baselines never change once a rollout happened: fetched once per rollout, dropped
        # when the rollout leaves its window (so this stays as small as the set of rollouts).
        self._baselines: dict[RolloutKey, Baseline] = {}
        # The earliest start seen for each rollout of a reused ReplicaSet: the data that give it
        # move later as the rollout proceeds (see correlator.rollout_start).
        self._seen_starts: dict[RolloutKey, datetime] = {}
        self._missing_targets: set[tuple[str, str]] = set()
        self._wakeup = asyncio.Event()
        # The fast lane. Per namespace: whether it has a young rollout (judged at every fast
        # look), and when its last fast look asked Loki (monotonic). Namespaces a watch event
        # woke since the last look; the event that wakes the loop for them.
        self.loki_budget = LokiBudget(per_minute=settings.loki_max_queries_per_minute,
                                      clock=monotonic)
        self._young: dict[str, bool] = {}
        self._fast_loki_at: dict[str, float] = {}
        self._woken: set[str] = set()
        self._watch_wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics.read_loki_queries_from(self.loki_budget, namespaces=settings.namespace)
        self.fast_looks = 0
        self.last_fast_look: TickReport | None = None

    # One tick ------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.leadership is None or self.leadership.is_leader

    async def tick(self) -> TickReport:
        now = self.clock()
        started = time.monotonic()
        cpu_started = time.process_time()
        report = TickReport(started_at=now)
        self._heartbeat = self.monotonic()
        self._woken.clear()
        if not self.is_leader():
            # A standby reads nothing and sends nothing; it only stays alive and ready to lead
            # (and checks that the store it would lead with answers).
            report.role = "standby"
            self._readback_done = self.events is None
            self._readback_attempts = 0
            self._store_answers(now, report)
        elif self._store_answers(now, report):
            await self._with_store(self._leader_tick(now, report), now, report)
        self._finish(report, started=started, cpu_started=cpu_started)
        self.last_tick = report
        self.ticks += 1
        self.metrics.tick_finished(role=report.role, degraded=report.degraded,
                                   duration_seconds=report.duration_seconds)
        self._heartbeat = self.monotonic()
        log.debug("tick", duration_seconds=report.duration_seconds, cpu_seconds=report.cpu_seconds,
                  degraded=report.degraded,
                  rollouts=len(report.assessments), incidents=len(report.incidents))
        return report

    async def fast_look(self) -> TickReport | None:
        """A look at the young rollouts only, between two ticks: the fast lane.

        For each namespace with a rollout younger than YOUNG_ROLLOUT_SECONDS, or whose watches
        saw a change since the last look: the Deployments, ReplicaSets and pods as the watches
        keep them (no request while they are followed), the young rollouts' error counts when
        FAST_POLL_SECONDS have passed since the last fast look asked Loki and the query fits the
        namespace's LOKI_MAX_QUERIES_PER_MINUTE, the same decision as a tick, and the same
        recording and delivery of what it finds. Triage, alerts, the change desk and the
        follow-up of actions stay with the tick. Nothing on a standby; None when no namespace
        needs a look.
        """
        namespaces = [ns for ns in self.settings.namespace
                      if self._young.get(ns) or ns in self._woken]
        self._woken.clear()
        if not namespaces or not self.is_leader():
            return None
        now = self.clock()
        started = time.monotonic()
        cpu_started = time.process_time()
        report = TickReport(started_at=now, role="fast")
        if self.sources["store"].failing:
            return None  # the tick checks the store and says so; a look would only fail
        await self._with_store(self._leader_tick(now, report, namespaces=namespaces), now,
                               report)
        self._finish(report, started=started, cpu_started=cpu_started)
        self.last_fast_look = report
        self.fast_looks += 1
        self.metrics.fast_look_finished(degraded=report.degraded)
        return report

    def _store_answers(self, now: datetime, report: TickReport) -> bool:
        """Whether the store answers a trivial query; when it does not, the tick holds what it
        would record (incidents are decided again at the next tick, from Kubernetes and Loki,
        which keep them) and says why."""
        try:
            self.store.ping()
        except StoreUnavailable as exc:
            self._store_failed(now, report, exc)
            return False
        self.sources["store"].succeeded(now)
        return True

    async def _with_store(self, work: Awaitable[None], now: datetime, report: TickReport) -> None:
        """Run a tick's work; the store going away in the middle of it ends the work there
        (what was written is written, each write whole) instead of crashing the tick."""
        try:
            await work
        except StoreUnavailable as exc:
            self._store_failed(now, report, exc)

    def _store_failed(self, now: datetime, report: TickReport, exc: StoreUnavailable) -> None:
        self.sources["store"].failed(now, exc)
        report.problems.append(f"store: {exc.reason}: {exc.message}")
        # Once it is back, what an action was doing when the store went away is taken up again.
        self._resumed = False

    def _finish(self, report: TickReport, *, started: float, cpu_started: float) -> None:
        report.finished_at = self.clock()
        report.duration_seconds = round(time.monotonic() - started, 4)
        report.cpu_seconds = round(time.process_time() - cpu_started, 4)
        report.degraded = bool(report.problems)

    @property
    def fast_lane_active(self) -> bool:
        """Whether some namespace has a young rollout (the loop then looks every
        FAST_POLL_SECONDS)."""
        return self.settings.fast_poll_seconds > 0 and any(self._young.values())

    async def _leader_tick(self, now: datetime, report: TickReport, *,
                           namespaces: Sequence[str] | None = None) -> None:
        fast = namespaces is not None
        if self.remediator is not None and not self._resumed:
            # What a previous leader (or process) approved or began, carried on once.
            self._resumed = True
            await self.remediator.resume()
        if not fast and self.rules_file is not None and self.rules_file.reload_if_changed() \
                and self.triage is not None:
            self.triage.reprioritize(self.prioritize_line)
        alerts = self.alert_desk.load() if self.alert_desk is not None and not fast else {}
        watched = self.settings.namespace if namespaces is None else namespaces
        if not self._readback_done:
            # At once with the reads of Kubernetes; a baseline waits for it (_count), and so
            # does the decision below.
            self._readback = asyncio.ensure_future(self._read_back_events(now, report))
        try:
            observed = await asyncio.gather(*(self._observe(ns, now, report, alerts.get(ns, ()),
                                                            fast=fast) for ns in watched))
            if self._readback is not None:
                await self._readback
        finally:
            if self._readback is not None:
                self._readback.cancel()
                self._readback = None
        if self._change_reads:
            reads, self._change_reads = self._change_reads, {}
            report.changes = sum(len(found) for found in await asyncio.gather(*reads.values()))
        views = [view for namespace_views, _ in observed for view in namespace_views]
        if self.store.has_legacy:
            self._adopt_legacy(views)
        decision = decide(views, now=now, rules=self.rules, already_notified=_KnownKeys(self.store))
        report.assessments = decision.assessments
        self._publish_assessments(now, decision.assessments, complete=not fast)
        if decision.incidents and not self._readback_done:
            # Without knowing what was already notified, notifying could repeat an incident;
            # the incidents stay in Kubernetes and Loki and are raised at a later tick.
            report.problems.append("event: incidents held until Events are read back")
            return
        by_key = {(v.deployment.namespace, v.deployment.name): v for v in views}
        risen = _risen(decision.assessments)
        for incident in decision.incidents:
            view = by_key[(incident.namespace, incident.deployment)]
            # Scored once its signatures are known: whether they are new weighs in.
            signed, errors_began = await self._with_signatures(
                incident, self.workload_of(view.deployment), report)
            incident = scored(signed)
            rollout = view.rollout or find_rollout(view.deployment, view.replicasets,
                                                   seen_starts=view.seen_starts)
            if self.change_desk is not None:
                incident = self._with_causes(incident, view, rollout, errors_began,
                                             risen.get(incident.namespace, {}))
                incident = await self._with_map(incident, now, report)
            verdict = classify(self.rule_set, rollout_subject(incident))
            incident = replace(incident, priority=verdict.priority, rule=verdict.rule,
                               rule_action=verdict.action)
            foreign = _foreign_cause(incident)
            if foreign is not None:
                # The likeliest cause is not this rollout: rolling this Deployment back would
                # not fix it. The cause's own rollback is proposed instead, when it is one.
                assert self.change_desk is not None
                remediation = self.change_desk.plan_for_cause(
                    incident.namespace, foreign, detected_at=incident.detected_at,
                    confidence=incident.confidence, remediator=self.remediator)
                if remediation is not None:
                    incident = replace(incident, remediation=remediation)
            elif self.remediator is not None and rollout is not None and verdict.action != "none":
                # Decided and written down before the incident's messages are: the Slack
                # message carries the buttons when it asks.
                incident = self.remediator.plan(incident, rollout, fix=_fix(verdict),
                                                pods=view.pods or ())
            if self.outbox.record(incident):
                report.incidents.append(incident.key)
                self._failing[f"{incident.namespace}/{incident.deployment}"] = (
                    {"kind": "rollout", "namespace": incident.namespace,
                     "deployment": incident.deployment, "revision": incident.revision,
                     "detected_at": iso(incident.detected_at)}, incident.rollout_started_at)
                if self.analyst is not None:
                    self.analyst.analyse_later(incident.key, incident_record(incident))
                self.live.publish("incident", {
                    "kind": incident.kind.value, "namespace": incident.namespace,
                    "deployment": incident.deployment, "revision": incident.revision,
                    "priority": incident.priority.value if incident.priority else None,
                    "at": iso(incident.detected_at)})
        if fast:
            self.outbox.deliver_stdout()
            if report.incidents:
                self.outbox.wakeup.set()
            if self.remediator is not None:
                self.remediator.renew({key: view.deployment for key, view in by_key.items()})
            return
        if self.alert_desk is not None:
            await self._alerts(now, report, decision.assessments, by_key, observed)
        if self.triage is not None:
            await self._triage(now, report)
        if self.change_desk is not None:
            await self._change_incidents(now, report, risen)
        self.outbox.deliver_stdout()
        if report.incidents:
            self.outbox.wakeup.set()
        if self.remediator is not None:
            window_minutes = self.rules.error_window_seconds / 60.0
            await self.remediator.follow(
                {key: view.deployment for key, view in by_key.items()},
                {(a.namespace, a.deployment): None if a.error_count is None
                 else a.error_count / window_minutes for a in decision.assessments})

    def _publish_assessments(self, now: datetime, assessments: Sequence[Assessment], *,
                             complete: bool = True) -> None:
        """Each rollout's error rate for the chart, and a verdict that changed, to the feed.
        A tick's assessments are ``complete`` (every rollout in its window): the rollouts it
        does not name are forgotten; a fast look names only the young ones."""
        window_minutes = self.rules.error_window_seconds / 60.0
        keys = []
        for a in assessments:
            key = (a.namespace, a.deployment, a.revision)
            keys.append(key)
            self.series.add(key, now, None if a.error_count is None
                            else round(a.error_count / window_minutes, 3))
            if self._verdicts.get(key) != a.verdict.value:
                self._verdicts[key] = a.verdict.value
                log.debug("rollout.verdict", namespace=a.namespace, deployment=a.deployment,
                          revision=a.revision, verdict=a.verdict.value,
                          signals=[s.value for s in a.signals], errors=a.error_count,
                          baseline_per_minute=a.baseline_per_minute,
                          age_seconds=round(a.age_seconds, 1), reasons=list(a.reasons))
                self.live.publish("verdict", {"namespace": a.namespace,
                                              "deployment": a.deployment,
                                              "revision": a.revision,
                                              "verdict": a.verdict.value, "at": iso(now)})
        if not complete:
            return
        self.series.keep(keys)
        current = set(keys)
        for key in [k for k in self._verdicts if k not in current]:
            del self._verdicts[key]

    def _noticed(self, key: str, record: dict[str, Any]) -> None:
        if self.analyst is not None and record.get("kind") in ("alert", "change"):
            self.analyst.analyse_later(key, record)
        self.live.publish("incident", {"kind": record.get("kind"), "key": key,
                                       "namespace": record.get("namespace"),
                                       "deployment": record.get("deployment"),
                                       "priority": record.get("priority"),
                                       "at": record.get("detected_at")})

    def _audited(self, row: AuditRow) -> None:
        self.live.publish("action", row.as_dict())

    @property
    def rule_set(self) -> RuleSet:
        return self.rules_file.rules if self.rules_file is not None else DEFAULT_RULES

    def prioritize_line(self, example: str) -> tuple[Priority, str | None]:
        """The priority the rules give an error line (triage), and the rule that gave it."""
        verdict = classify(self.rule_set, Subject(log_lines=(example,)))
        return verdict.priority, verdict.rule

    async def _alerts(self, now: datetime, report: TickReport, assessments: Sequence[Any],
                      by_key: dict[tuple[str, str], WorkloadView],
                      observed: Sequence[tuple[list[WorkloadView], NamespaceAlerts | None]]) -> None:
        """Alerts that are signals of a rollout go with it; the others are alert incidents."""
        assert self.alert_desk is not None
        taken: set[str] = set()
        for assessment in assessments:
            if Signal.ALERT not in assessment.signals or assessment.verdict not in (
                    Verdict.INCIDENT, Verdict.ALREADY_NOTIFIED):
                continue
            view = by_key[(assessment.namespace, assessment.deployment)]
            signals = rollout_alerts(view.alerts, assessment.rollout_started_at)
            key = (assessment.namespace, assessment.deployment, assessment.revision,
                   view.deployment.uid)
            self.alert_desk.attach(signals, thread_key(key))
            taken.update(alert_key(alert) for alert in signals)

        async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await self._call(source, thunk, now, report, what)

        for namespace, (_, found) in zip(self.settings.namespace, observed):
            if found is None:
                continue
            report.alert_incidents.extend(await self.alert_desk.raise_incidents(
                namespace, found, taken=taken, seen_starts=self._seen_starts, now=now,
                call=call, kube=self.kube, loki=self.error_lines or self.loki,
                workload_of=self.workload_of,
                explain=self._explain_alert if self.change_desk is not None else None))
        self.alert_desk.close_resolved(now)

    async def _triage(self, now: datetime, report: TickReport) -> None:
        """Error lines of each namespace grouped by signature; new groups of the priorities in
        NOTIFY_PRIORITIES are notified, once each."""
        assert self.triage is not None

        async def call(thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await self._call("loki", thunk, now, report, "triage")

        workloads = self._triage_workloads()
        window = timedelta(seconds=self.rules.rollout_window_seconds)
        self._failing = {k: v for k, v in self._failing.items() if now - v[1] <= window}
        for namespace in self.settings.namespace:
            due = await self.triage.read(namespace, workloads=workloads, now=now, call=call)
            notified = []
            for group in due:
                key = triage_render.group_key(group)
                incident = self._group_incident(group)
                if self.outbox.record_notice(
                        key=key, kind="error_group", namespace=group.namespace,
                        deployment=",".join(group.workloads), detected_at=now,
                        record=triage_render.group_record(group, now=now, incident=incident),
                        slack_payload=triage_render.slack_payload(
                            group, now=now, incident=incident)) or \
                        self.store.notice(key) is not None:
                    notified.append((group.namespace, group.fingerprint))
            if notified:
                self.triage.mark_notified(notified, now=now)

    def _explain_alert(self, incident: AlertIncident, deployment: Deployment) -> AlertIncident:
        """An alert incident's likeliest causes since before it began firing (a workload it
        calls that just rolled out, found through the service map), and its causality tree."""
        assert self.change_desk is not None
        alert = incident.alert
        namespace = incident.target.namespace
        causes = self.change_desk.causes_for(
            namespace=namespace, deployment=deployment, began=alert.starts_at,
            now=incident.detected_at, error_lines=tuple(s.example for s in incident.signatures),
            own_rollout=None, risen={}, pods=incident.pods)
        name = alert.name or alert.fingerprint
        tree = self.change_desk.causality(namespace, deployment.name, causes, symptoms=[
            Symptom("alert", name, f"alert {name}",
                    (f"firing since {iso(alert.starts_at)}",)),
            *signature_symptoms(incident.signatures, since="the alert")])
        return replace(incident, causes=causes, causality=tree)

    def _group_incident(self, group: Any) -> dict[str, Any] | None:
        """The rollout incident an error group's workloads are part of: their own, or that of
        a workload they call (the service map), whose rollout began before the group was first
        seen; with the chain of calls to it."""
        if not self._failing or self.change_desk is None:
            return None
        names = self.change_desk.deployment_names(group.namespace)
        failing = {node: ref for node, (ref, started) in self._failing.items()
                   if group.first_seen >= started}
        for workload in group.workloads:
            name = names.get(workload)
            if name is None:
                continue
            node = f"{group.namespace}/{name}"
            found = (node, (node,)) if node in failing else \
                self.change_desk.map_keeper.nearest_failing(node, failing)
            if found is not None:
                return {**failing[found[0]], "path": list(found[1])}
        return None

    def _with_causes(self, incident: Incident, view: WorkloadView, rollout: Rollout | None,
                     errors_began: datetime, risen: Mapping[str, bool | None]) -> Incident:
        """The incident's likeliest causes among recent changes, its own rollout included;
        their timing is measured against ``errors_began``."""
        assert self.change_desk is not None
        causes = self.change_desk.causes_for(
            namespace=incident.namespace, deployment=view.deployment, began=errors_began,
            now=incident.detected_at,
            error_lines=tuple(s.example for s in incident.evidence.signatures),
            own_rollout=rollout_change(rollout, observed_at=incident.detected_at)
            if rollout is not None else None, risen=risen, pods=view.pods or ())
        return replace(incident, evidence=replace(incident.evidence, causes=causes))

    async def _with_map(self, incident: Incident, now: datetime,
                        report: TickReport) -> Incident:
        """The incident's blast radius (its callers whose errors rose too) and its causality
        tree, from the service map."""
        assert self.change_desk is not None

        async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await self._call(source, thunk, now, report, what)

        blast = await self.change_desk.blast_radius(
            incident.namespace, incident.deployment, started_at=incident.rollout_started_at,
            now=incident.detected_at, call=call, loki=self.loki)
        tree = self.change_desk.causality(incident.namespace, incident.deployment,
                                          incident.evidence.causes,
                                          symptoms=rollout_symptoms(incident), blast=blast)
        return replace(incident, evidence=replace(incident.evidence, blast_radius=blast,
                                                  causality=tree))

    async def _change_incidents(self, now: datetime, report: TickReport,
                                risen: Mapping[str, Mapping[str, bool | None]]) -> None:
        """Workloads whose errors rose after a change that was not their own rollout."""
        assert self.change_desk is not None

        async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
            return await self._call(source, thunk, now, report, what)

        if self.triage is not None:
            for namespace in self.settings.namespace:
                self.change_desk.learn_lines(namespace, self.triage.drain_lines(namespace))
        for namespace in self.settings.namespace:
            report.change_incidents.extend(await self.change_desk.judge(
                namespace, busy=self._busy.get(namespace, set()),
                risen=risen.get(namespace, {}), now=now, call=call))
        self.change_desk.prune(now)

    def _adopt_legacy(self, views: Sequence[WorkloadView]) -> None:
        """Give incidents stored before uids were recorded the uid of the Deployment they were
        about (see Store.adopt_legacy), so that they are not raised again."""
        for view in views:
            rollout = view.rollout or find_rollout(view.deployment, view.replicasets,
                                                   seen_starts=view.seen_starts)
            if rollout is None:
                continue
            rs = rollout.replicaset
            self.store.adopt_legacy(key=(rs.namespace, view.deployment.name, rs.revision or 0,
                                         view.deployment.uid),
                                    replicaset=rs.name, replicaset_uid=rs.uid,
                                    replicaset_created_at=rs.created_at)

    async def _read_back_events(self, now: datetime, report: TickReport) -> None:
        """Remember the incidents whose Events exist: notified by an earlier pod or replica."""
        assert self.events is not None
        self._readback_attempts += 1
        found = 0
        for namespace in self.settings.namespace:
            notified = await self._call("event", lambda ns=namespace: self.events.notified_revisions(ns),
                                        now, report, "read back")
            if notified is None:
                if self._readback_attempts >= READBACK_ATTEMPTS:
                    log.warning("events.readback_skipped", attempts=self._readback_attempts,
                                consequence="an incident notified by another pod may be repeated")
                    self._readback_done = True
                return
            for item in notified:
                key = item.key
                if self.store.remember_foreign(key=key, replicaset=item.replicaset,
                                               replicaset_uid=item.replicaset_uid,
                                               detected_at=item.notified_at, origin="event"):
                    found += 1
                self.store.supersede(key, now=now, note="notified by another replica")
        self._readback_done = True
        log.info("events.read_back", namespaces=len(self.settings.namespace), new=found)

    async def _call(self, source: str, call: Callable[[], Awaitable[T]], now: datetime,
                    report: TickReport, what: str) -> T | None:
        return await self.sources.call(source, call, now=now, problems=report.problems, what=what)

    def workload_of(self, deployment: Deployment) -> str:
        """The value of the workload label on the Deployment's log streams."""
        if not self.settings.watches_all_deployments and len(self.settings.target_deployment) == 1:
            return self.settings.loki_label_app
        keys = (self.settings.workload_pod_label,) if self.settings.workload_pod_label \
            else WORKLOAD_NAME_LABELS
        for key in keys:
            value = deployment.pod_label(key)
            if value:
                return value
        return deployment.name

    def _selected(self, namespace: str, deployments: Sequence[Deployment]) -> list[Deployment]:
        if self.settings.watches_all_deployments:
            return list(deployments)
        wanted = self.settings.target_deployment
        chosen = [d for d in deployments if d.name in wanted]
        found = {d.name for d in chosen}
        for name in wanted:
            key = (namespace, name)
            if name not in found and key not in self._missing_targets:
                self._missing_targets.add(key)
                log.warning("deployment.not_found", namespace=namespace, deployment=name)
            elif name in found and key in self._missing_targets:
                self._missing_targets.discard(key)
                log.info("deployment.found", namespace=namespace, deployment=name)
        return chosen

    async def _observe(self, namespace: str, now: datetime, report: TickReport,
                       alerts: Sequence[StoredAlert] = (), *, fast: bool = False
                       ) -> tuple[list[WorkloadView], NamespaceAlerts | None]:
        deployments, replicasets = await asyncio.gather(
            self._call("kubernetes", lambda: self.kube.list_deployments(namespace), now, report,
                       "deployments"),
            self._call("kubernetes", lambda: self.kube.list_replicasets(namespace), now, report,
                       "replicasets"),
        )
        if deployments is None or replicasets is None:
            # Nothing can be judged without both: "no verdict", not "healthy"; the alerts wait.
            return [], None
        selected = self._selected(namespace, deployments)
        if self.change_desk is not None and not fast:
            desk = self.change_desk

            async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
                return await self._call(source, thunk, now, report, what)

            self._change_reads[namespace] = asyncio.ensure_future(desk.observe(
                namespace, deployments=deployments, selected=[d.name for d in selected],
                replicasets=replicasets, now=now, call=call))
        found = None
        if self.alert_desk is not None and alerts:
            found = self.alert_desk.map_namespace(namespace, alerts, selected, replicasets)
        judged = rollouts_to_judge(selected, replicasets, now=now, rules=self.rules,
                                   seen_starts=self._seen_starts)
        self._remember_starts(namespace, judged, replicasets)
        young = [r for r in judged if self._is_young(r, now)]
        self._young[namespace] = bool(young)
        ask_loki = True
        if fast:
            # Only the young rollouts; Loki only when a fast look is due and within the cap.
            judged = young
            ask_loki = bool(young) and self._fast_loki_due(namespace, judged)
        else:
            self._forget_baselines(namespace, {r.key for r in judged})
        # Only Deployments with something to judge get a view: a rollout in its window, or a
        # stuck rollout. The others cost one dictionary lookup each per tick.
        rollouts = {r.deployment.name: r for r in judged}
        if not fast:
            self._busy[namespace] = set(rollouts)
        # What the change timeline will judge: counted in the tick's one metric query too (a
        # fast look leaves the change timeline to the tick).
        plan = self.change_desk.count_plan(
            namespace, deployments=deployments, selected=[d.name for d in selected],
            replicasets=replicasets, busy=set(rollouts), now=now) \
            if self.change_desk is not None and not fast else None
        workload_of = {dep.name: self.workload_of(dep) for dep in selected
                       if dep.name in rollouts or dep.progress_deadline_exceeded}
        read_workloads = self._read_workloads(selected)
        if not workload_of:
            if not fast and (plan is not None or self.error_lines is not None):
                await self._count(namespace, (), {}, plan, now, report, read_workloads)
            return [], found
        counts: ErrorCounts | None = None
        pods: tuple[Pod, ...] | None = ()
        if judged and not ask_loki:
            pods = await self._call("kubernetes", lambda: self.kube.list_pods(
                namespace, template_hashes=self._template_hashes(judged)), now, report, "pods")
        elif judged:
            if fast:
                self._fast_loki_at[namespace] = self.monotonic()
            # Only the new revisions' pods matter: list just those (by pod-template-hash).
            template_hashes = self._template_hashes(judged)
            counts, pods = await asyncio.gather(
                self._count(namespace, judged, workload_of, plan, now, report,
                            read_workloads, replicasets=replicasets, read_lines=not fast),
                self._call("kubernetes", lambda: self.kube.list_pods(
                    namespace, template_hashes=template_hashes), now, report, "pods"),
            )
        elif not fast and (plan is not None or self.error_lines is not None):
            await self._count(namespace, judged, workload_of, plan, now, report, read_workloads)
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
                baseline=self._baselines.get(rollout.key) if rollout else None,
                seen_starts=self._seen_starts,
                rollout=rollout,
                alerts=tuple(found.alerts_of.get(dep.name, ())) if found is not None else (),
            ))
        return views, found

    @staticmethod
    def _template_hashes(judged: Sequence[Rollout]) -> list[str] | None:
        hashes = [r.replicaset.pod_template_hash for r in judged]
        return None if None in hashes else sorted(set(hashes))  # type: ignore[arg-type]

    def _is_young(self, rollout: Rollout, now: datetime) -> bool:
        return (now - rollout.started_at).total_seconds() <= self.settings.young_rollout_seconds

    def _fast_loki_due(self, namespace: str, young: Sequence[Rollout]) -> bool:
        """Whether a fast look at ``namespace`` asks Loki now: FAST_POLL_SECONDS after the last
        one that did (at once for a rollout whose baseline is not known yet: it was just seen),
        and only if its query (the counts, with the baseline when one is pending: one metric
        query) fits the namespace's LOKI_MAX_QUERIES_PER_MINUTE."""
        pending = any(r.key not in self._baselines for r in young)
        last = self._fast_loki_at.get(namespace)
        due = pending or last is None or \
            self.monotonic() - last >= self.settings.fast_poll_seconds * 0.9
        return due and self.loki_budget.allows(namespace)

    async def _count(self, namespace: str, judged: Sequence[Rollout],
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
        desk = self.change_desk
        named = {workload_of[r.deployment.name] for r in judged}
        if plan is not None:
            named |= plan.workloads
        windows: list[CountWindow] = []
        if named:
            windows.append(CountWindow("errors", _names(self._workload_filter(named)),
                                       self.settings.error_window_seconds))
        if self._readback is not None:
            # What was judged bad elsewhere decides which revisions a baseline may span: the
            # baseline waits for the Events read back, however the two reads interleave.
            await asyncio.shield(self._readback)
        batch, healthy = self._baseline_window(namespace, judged, replicasets)
        baseline_of: dict[RolloutKey, str] = {}
        if batch is not None:
            for rollout, none in batch.absent:
                self._baselines[rollout.key] = Baseline(
                    0.0, 0, excluded_revisions=none.excluded, absent=none.reason)
            baseline_of = {r.key: self.workload_of(r.deployment) for r in batch.rollouts}
        if baseline_of:
            # Per pod when a bad revision's pods may have logged in the window: they are left
            # out (correlator.baseline_errors); per workload otherwise, fewer series.
            by = "pod" if any(healthy[key].bad_replicasets for key in baseline_of) \
                else "workload"
            windows.append(CountWindow.ending(
                "baseline", workloads=_names(self._workload_filter(set(baseline_of.values()))),
                seconds=batch.seconds, end=batch.end, at=now, by=by))
        if plan is not None:
            windows.extend(plan.windows(at=now, workload_filter=self._workload_filter))
        lines = self.error_lines if read_lines else None
        read = lines.read_window(namespace, workloads=read_workloads, now=now) \
            if lines is not None else None
        if read is not None:
            windows.append(read)
        answer = None
        if windows:
            answer = await self._call("loki", lambda: self.loki.count_windows(
                namespace=namespace, windows=windows, at=now), now, report, "error counts")
        if desk is not None and plan is not None:
            desk.counted(namespace, plan, answer, now=now)
        if lines is not None:
            # The tick's one log query: only the legs the metric query saw lines of (every leg
            # when it failed), none when there were none.
            legs = None if answer is None or read is None else \
                answer.legs(read.name, await self.loki.error_match())

            async def call(thunk: Callable[[], Awaitable[T]]) -> T | None:
                return await self._call("loki", thunk, now, report, "error lines")

            await lines.refresh(namespace, workloads=read_workloads, now=now, legs=legs,
                                call=call)
        if answer is None:
            return None
        if batch is not None and baseline_of:
            samples = answer.counts["baseline"].samples
            for rollout in batch.rollouts:
                state = healthy[rollout.key]
                self._baselines[rollout.key] = Baseline(
                    baseline_errors(samples, baseline_of[rollout.key], state), batch.seconds,
                    excluded_revisions=state.excluded)
        return answer.counts["errors"] if judged else None

    def _read_workloads(self, selected: Sequence[Deployment]) -> list[str] | None:
        """The workloads the tick's read of error lines asks for: every one when every
        Deployment is watched; else the selected Deployments' and those the triage names."""
        named = self._triage_workloads()
        if named is None:
            return None
        return sorted(set(named) | {self.workload_of(dep) for dep in selected})

    def _triage_workloads(self) -> list[str] | None:
        """The workloads whose error lines are read each tick (None: every workload)."""
        if self.settings.watches_all_deployments:
            return None
        return sorted({self.settings.loki_label_app} if len(
            self.settings.target_deployment) == 1 else set(self.settings.target_deployment))

    def _baseline_window(self, namespace: str, judged: Sequence[Rollout],
                         replicasets: Sequence[ReplicaSet]) -> tuple[Any, dict[RolloutKey, Any]]:
        """The rollouts whose baselines are missing and that one window can serve, and the last
        healthy state of each (correlator.last_healthy_state).

        A base-image bump rolls hundreds of Deployments within a minute or two: one window per
        rollout would make a query of hundreds of legs. See correlator.baseline_batch for which
        rollouts share the window; the others wait for a later tick. The revisions judged bad
        are the store's, so a baseline waits until Events were read back (what another replica
        notified). One store read and one pass over the ReplicaSets for all of them.
        """
        pending = [r for r in judged if r.key not in self._baselines]
        if not pending or not self._readback_done:
            return None, {}
        bad_of = self.store.judged_bad(namespace)
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
        batch = baseline_batch(pending, span_seconds=self.rules.error_window_seconds,
                               lookback_seconds=self.rules.baseline_lookback_seconds,
                               minimum_seconds=self.rules.error_window_seconds, healthy=healthy)
        return batch, healthy

    def _workload_filter(self, workloads: set[str]) -> list[str] | None:
        """The workloads a query names; None (all of the namespace) past MAX_NAMED_WORKLOADS
        when every Deployment is watched anyway."""
        if self.settings.watches_all_deployments and len(workloads) > MAX_NAMED_WORKLOADS:
            return None
        return sorted(workloads)

    def _remember_starts(self, namespace: str, judged: Sequence[Rollout],
                         replicasets: Sequence[ReplicaSet]) -> None:
        for rollout in judged:
            if rollout.replicaset.reused:
                self._seen_starts.setdefault(rollout.key, rollout.started_at)
        if self._seen_starts:
            # Kept while the ReplicaSet still has that revision: a rollout that leaves its window
            # must not come back when a later scale moves the data its start was read from.
            alive = {rollout_key(rs) for rs in replicasets if rs.reused}
            for key in [k for k in self._seen_starts if k[0] == namespace and k not in alive]:
                del self._seen_starts[key]

    def _forget_baselines(self, namespace: str, keep: set[RolloutKey]) -> None:
        for key in [k for k in self._baselines if k[0] == namespace and k not in keep]:
            del self._baselines[key]

    async def _with_signatures(self, incident: Incident, workload_name: str,
                               report: TickReport) -> tuple[Incident, datetime]:
        """Top error signatures of the new revision, and when its errors began: its first error
        line after the rollout began, else the rollout's start.

        The lines read are those of ``[rollout start, detected_at)``, the range the count that
        made the incident ended with (``count_errors(at=now)``). When they cannot describe every
        line counted (Loki failed, the sample is full, none of the revision's lines was found),
        ``evidence.signature_gap`` says so."""
        began = incident.rollout_started_at
        if incident.error_count <= 0:
            return incident, began
        limit = self.settings.signature_sample_lines
        if self.error_lines is not None and self.error_lines.holds(
                incident.namespace, [workload_name], until=incident.detected_at):
            # The tick's read holds them: no query of its own. A fast look's incident comes
            # after that read, and reads its own range below.
            own_lines, before_lines, gap = self.error_lines.signature_lines(
                incident.namespace, workload=workload_name, since=incident.rollout_started_at,
                until=incident.detected_at, limit=limit)
            own = [line for line in own_lines
                   if line.pod is None or owns_pod(incident.replicaset, line.pod)]
            began = min((line.at for line in own), default=began)
            signatures = top_signatures([line.line for line in own],
                                        before=[line.line for line in before_lines])
            if gap is None and not signatures:
                gap = "lines_not_found"
            return replace(incident, evidence=replace(incident.evidence, signatures=signatures,
                                                      signature_gap=gap)), began
        workload = [workload_name]
        lookback = timedelta(seconds=self.rules.baseline_lookback_seconds)
        after, before = await asyncio.gather(
            self._call("loki", lambda: self.loki.sample_errors(
                namespace=incident.namespace, workloads=workload, start=incident.rollout_started_at,
                end=incident.detected_at, limit=limit), incident.detected_at, report, "sample"),
            self._call("loki", lambda: self.loki.sample_errors(
                namespace=incident.namespace, workloads=workload,
                start=incident.rollout_started_at - lookback, end=incident.rollout_started_at,
                limit=limit), incident.detected_at, report, "sample before rollout"),
        )
        if after is None:
            return replace(incident, evidence=replace(incident.evidence,
                                                      signature_gap="loki_failed")), began
        own = [line for line in after
               if line.pod is None or owns_pod(incident.replicaset, line.pod)]
        began = min((line.at for line in own if line.at >= began), default=began)
        signatures = top_signatures([line.line for line in own],
                                    before=[line.line for line in before or ()])
        gap = "limit_reached" if len(after) >= limit else \
            "lines_not_found" if not signatures else None
        return replace(incident, evidence=replace(incident.evidence, signatures=signatures,
                                                  signature_gap=gap)), began

    # The loop (the outbox worker runs next to it: ``outbox.run``) --------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every POLL_INTERVAL_SECONDS until ``stop`` is set; in between, while a rollout is
        young, a fast look every FAST_POLL_SECONDS, and one as soon as a watch sees a change.
        Every sleep wakes at once on stop."""
        self._loop = asyncio.get_running_loop()
        following = self._start_following()
        try:
            await self._run(stop)
        finally:
            if following:
                await asyncio.to_thread(self.kube.stop_following)  # type: ignore[attr-defined]

    async def _run(self, stop: asyncio.Event) -> None:
        interval = self.settings.poll_interval_seconds
        next_tick = time.monotonic()
        last_look = next_tick
        while not stop.is_set():
            started = time.monotonic()
            if started >= next_tick or self._wakeup.is_set():
                self._wakeup.clear()
                await self._guarded(self.tick())
                next_tick = started + interval
            else:
                await self._guarded(self.fast_look())
            last_look = started
            due = next_tick
            if self.fast_lane_active:
                due = min(due, started + self.settings.fast_poll_seconds)
            woke = await self._sleep_until(due, stop)
            if woke is self._wakeup and not stop.is_set():
                # Woken early (alerts arrived): at most one extra tick per MIN_WAKE_SECONDS.
                await _sleep_or_stop(stop, MIN_WAKE_SECONDS - (time.monotonic() - last_look))
            elif woke is self._watch_wakeup and not stop.is_set():
                await _sleep_or_stop(stop, MIN_WATCH_WAKE_SECONDS - (time.monotonic() - last_look))

    async def _sleep_until(self, due: float, stop: asyncio.Event) -> asyncio.Event | None:
        """Sleep until ``due`` (monotonic), or until stop, alerts or a watch event wake it:
        which event woke it (None: the time came)."""
        self._watch_wakeup.clear()
        if self._woken and self.settings.fast_poll_seconds > 0:
            self._watch_wakeup.set()  # an event came in during the look that just ended
        events = (stop, self._wakeup, self._watch_wakeup)
        waiters = {asyncio.ensure_future(event.wait()): event for event in events}
        try:
            done, _ = await asyncio.wait(waiters, timeout=max(0.0, due - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        for event in events:
            if any(waiters[w] is event for w in done):
                return event
        return None

    async def _guarded(self, look: Awaitable[Any]) -> None:
        try:
            await look
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop detection: log it with its traceback
            log.exception("tick.crashed")

    def _start_following(self) -> bool:
        """Follow each namespace's Deployments, ReplicaSets and pods with long watches
        (WATCH_FOLLOW), their events waking the fast lane; False when the source cannot."""
        follow = getattr(self.kube, "follow", None)
        if not self.settings.watch_follow or follow is None:
            return False
        for namespace in self.settings.namespace:
            follow(namespace, on_event=self.watch_event)
        return True

    def watch_event(self, namespace: str, resource: str) -> None:
        """A followed watch changed something in ``namespace`` (called from its thread): a
        fast look at that namespace now rather than at the next tick."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self.note_watch_event, namespace)
        except RuntimeError:  # the loop closed in between: the process is stopping
            pass

    def note_watch_event(self, namespace: str) -> None:
        """A watch saw a change in ``namespace``: the next fast look includes it, and comes
        at once (in the loop's thread; ``watch_event`` is the threads' way in)."""
        self._woken.add(namespace)
        if self.settings.fast_poll_seconds > 0:
            self._watch_wakeup.set()

    def alerts_received(self, summary: Any) -> None:
        """Alertmanager's webhook recorded alerts: count them, and tick now rather than at the
        end of the interval."""
        self.metrics.alerts_taken_in(firing=summary.firing, resolved=summary.resolved)
        self._wakeup.set()

    # Health and status ---------------------------------------------------------------------

    def alive(self) -> bool:
        return self.monotonic() - self._heartbeat <= self.settings.stall_seconds

    def ready(self) -> bool:
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why /readyz says 503 (None: ready). A standby is ready while it is alive and its
        store answers: its job is to be able to take over."""
        store = self.sources["store"]
        if store.failing:
            return f"the store is unavailable: {store.last_error}"
        if not self.is_leader():
            return None if self.alive() else "stalled: no tick finished recently"
        if self.last_tick is None:
            return "no tick has finished yet"
        if self.last_tick.degraded:
            return "the last tick was degraded: " + "; ".join(self.last_tick.problems[:3])
        return None

    def status(self) -> dict[str, Any]:
        try:
            return self._status()
        except StoreUnavailable as exc:
            # What is known without the store: the role, the sources, the last tick.
            return {"service": "incident-detector", "alive": self.alive(), "ready": False,
                    "store": {"ok": False, "error": exc.message},
                    "started_at": iso(self.started_at), "ticks": self.ticks,
                    "last_tick": self.last_tick.as_dict() if self.last_tick else None,
                    "sources": self.sources.as_dict(self.sources.health)}

    def _status(self) -> dict[str, Any]:
        outbox = self.store.outbox_summary()
        return {
            "service": "incident-detector",
            "role": self.leadership.status() if self.leadership is not None
            else {"role": "leader", "election": "off"},
            "alive": self.alive(),
            "ready": self.ready(),
            "started_at": iso(self.started_at),
            "ticks": self.ticks,
            "settings": self.settings.public(),
            "last_tick": self.last_tick.as_dict() if self.last_tick else None,
            "sources": self.sources.as_dict(
                name for name in self.sources.health
                if (name != "slack" or self.slack is not None)
                and (name != "event" or self.events is not None)),
            "rollouts": [assessment_dict(a) for a in
                         (self.last_tick.assessments if self.last_tick else ())],
            "fast_lane": {
                "fast_poll_seconds": self.settings.fast_poll_seconds,
                "young_rollout_seconds": self.settings.young_rollout_seconds,
                "active": self.fast_lane_active,
                "young": sorted(ns for ns, young in self._young.items() if young),
                "looks": self.fast_looks,
                "last_look": self.last_fast_look.as_dict() if self.last_fast_look else None,
                "loki_queries_last_minute": self.loki_budget.rates(),
                "loki_max_queries_per_minute": self.loki_budget.per_minute,
            },
            "store": {"ok": True, "backend": self.store.dialect, "target": self.store.target,
                      "shared": self.store.dialect != "sqlite"},
            "incidents": self.store.recent_incidents(),
            "notices": self.store.recent_notices(),
            "rules": self.rules_file.status() if self.rules_file is not None
            else {"source": DEFAULT_RULES.source, "rules": len(DEFAULT_RULES.rules)},
            "outbox": {"pending": outbox.pending, "delivered": outbox.delivered,
                       "given_up": list(outbox.given_up)},
            "changes": self.change_desk.status() if self.change_desk is not None else None,
            "llm": self.analyst.status() if self.analyst is not None else {"enabled": False},
            "remediation": {"mode": self.settings.remediation_mode,
                            "dry_run": self.settings.dry_run,
                            "audit": self.journal.audit_summary()},
        }


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


def _names(workloads: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if workloads is None else tuple(workloads)


def _risen(assessments: Sequence[Assessment]) -> dict[str, dict[str, bool | None]]:
    """Per namespace, whether each judged Deployment's own error rate rose (None: unknown)."""
    out: dict[str, dict[str, bool | None]] = {}
    for a in assessments:
        out.setdefault(a.namespace, {})[a.deployment] = None if a.error_count is None \
            else Signal.ERROR_SPIKE in a.signals
    return out


def _foreign_cause(incident: Incident) -> Cause | None:
    """The incident's top cause when it is not the incident's own rollout."""
    causes = incident.evidence.causes
    if not causes:
        return None
    change = causes[0].change
    if change.kind == "Deployment" and change.name == incident.deployment and \
            change.revision in (None, incident.revision):
        return None
    return causes[0]


def rollout_symptoms(incident: Incident) -> list[Symptom]:
    """What a rollout incident's workload shows, for its causality tree: its signals, its
    error signatures (error groups), its alerts."""
    evidence = incident.evidence
    minutes = incident.window_seconds / 60.0
    out = []
    for signal in incident.signals:
        if signal == Signal.ERROR_SPIKE:
            before = "" if evidence.baseline_per_minute is None \
                else f", {evidence.baseline_per_minute:g}/min before the rollout"
            out.append(Symptom("signal", signal.value,
                               f"error spike: {round(incident.error_count / minutes, 2):g}/min",
                               (f"{incident.error_count:g} error lines in the last "
                                f"{incident.window_seconds}s (threshold "
                                f"{incident.threshold}){before}",)))
        elif signal != Signal.ALERT:
            out.append(Symptom("signal", signal.value, signal.value.replace("_", " ")))
    out += signature_symptoms(evidence.signatures, since="the rollout")
    for alert in evidence.alerts:
        out.append(Symptom("alert", alert.name or alert.fingerprint,
                           f"alert {alert.name or alert.fingerprint}",
                           (f"firing since {alert.starts_at.isoformat()}",)))
    return out


def rollout_subject(incident: Incident) -> Subject:
    """What the rules see of a rollout incident."""
    alerts = incident.evidence.alerts
    return Subject(
        log_lines=tuple(s.example for s in incident.evidence.signatures),
        alertname=alerts[0].name if alerts else None,
        alert_labels=alerts[0].labels if alerts else (),
        pod_reasons=tuple(dict.fromkeys(str(getattr(problem, "value", problem))
                                        for _, problem in incident.evidence.pod_problems)),
        signals=tuple(s.value for s in incident.signals))


def _fix(verdict: RuleVerdict) -> Any:
    from ..act.remediation import Fix

    return Fix(action=verdict.action, cooldown_seconds=verdict.cooldown_seconds,
               params=verdict.params, rule=verdict.rule)


class _KnownKeys:
    """``key in known`` answered by the store: dedupe survives restarts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.store.is_known(key)  # type: ignore[arg-type]
