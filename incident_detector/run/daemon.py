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
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..config import Settings
from ..judge.correlator import RolloutKey, Rules
from ..judge.rules import DEFAULT_RULES, RuleSet, Subject, classify
from ..model import Baseline, Deployment, Priority
from ..retry import Backoff
from .health import Sources
from ..store.journal import Journal
from .live import LiveFeed, RolloutSeries
from .loki_budget import LokiBudget, MeteredLoki
from .metrics import DetectorMetrics
from .outbox import EventSink, Outbox, Sender, StdoutSink
from .observe import observe_namespace
from .publish import audited, noticed
from .readiness import store_answers, unready_reason, with_store
from .rollout_incidents import decide_rollouts, rates_risen, record_rollout_incidents
from .schedule import run_loop, start_following
from .status import detector_status
from .tick_desks import after_rollouts, before_reads, read_back_events
from .tick_report import KubeSource, Leadership, LokiSource, TickReport
from ..store.records import Store

if TYPE_CHECKING:  # act/ builds on run/: only the type is needed here
    from ..act.remediation import Remediator
    from .alert_desk import AlertDesk
    from .changes import ChangeDesk
    from .error_lines import ErrorLines
    from .rules_file import RulesFile
    from .triage import Triage

log = structlog.get_logger("incident_detector")

T = TypeVar("T")
Clock = Callable[[], datetime]

WORKLOAD_NAME_LABELS = ("app.kubernetes.io/name", "app")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
        self.change_reads: dict[str, asyncio.Future[Any]] = {}
        self.busy: dict[str, set[str]] = {}
        # Whether what a previous leader (or process) began was carried on (before_reads);
        # reset when the store goes away (readiness), so that it is again once it is back.
        self.resumed = False
        # What the dashboard reads: the live feed of events, and each rollout's error rate.
        self.live = live if live is not None else LiveFeed()
        self.series = RolloutSeries()
        # The verdict last published for each rollout in its window (publish.py).
        self.verdicts: dict[tuple[str, str, int], str] = {}
        # The remediation journal and audit trail (empty while REMEDIATION_MODE=off).
        self.journal = Journal(store.connection, on_audit=partial(audited, self))
        # One registry per detector (never prometheus_client's global one); served on /metrics.
        self.metrics = metrics if metrics is not None else DetectorMetrics()
        self.metrics.read_state_from(outbox=store.outbox, is_leader=self.is_leader)
        self.sources = Sources(("kubernetes", "loki", "slack", "event", "store"),
                               metrics=self.metrics,
                               backoff=source_backoff)
        self.outbox = Outbox(store=store, stdout=stdout, slack=slack, events=events,
                             sources=self.sources, metrics=self.metrics, clock=clock,
                             is_leader=self.is_leader, backoff=delivery_backoff,
                             max_age=timedelta(minutes=settings.notify_max_age_minutes),
                             on_notice=partial(noticed, self))
        self.rules = Rules(
            threshold=settings.error_threshold,
            error_window_seconds=settings.error_window_seconds,
            rollout_window_seconds=settings.roll_out_window_seconds,
            baseline_factor=settings.baseline_factor,
            baseline_lookback_seconds=int(settings.baseline_lookback_minutes * 60),
        )
        # Events are read back (what other replicas or earlier pods notified) before this
        # replica notifies anything: at start, and each time it becomes the leader.
        self.readback_attempts = 0
        self.readback_done = events is None
        # The Events read back while the first tick reads Kubernetes (observe awaits it).
        self.readback: asyncio.Future[None] | None = None
        self.last_tick: TickReport | None = None
        self.ticks = 0
        self.started_at = clock()
        # Liveness (/healthz) is measured on a monotonic clock: the wall clock may jump.
        self._heartbeat = monotonic()
        # Baselines never change once a rollout happened: fetched once per rollout, dropped
        # when the rollout leaves its window (so this stays as small as the set of rollouts).
        self.baselines: dict[RolloutKey, Baseline] = {}
        # The earliest start seen for each rollout of a reused ReplicaSet: the data that give it
        # move later as the rollout proceeds (see correlator.rollout_start).
        self.seen_starts: dict[RolloutKey, datetime] = {}
        self.missing_targets: set[tuple[str, str]] = set()
        self.wakeup = asyncio.Event()
        # The fast lane. Per namespace: whether it has a young rollout (judged at every fast
        # look), and when its last fast look asked Loki (monotonic). Namespaces a watch event
        # woke since the last look; the event that wakes the loop for them.
        self.loki_budget = LokiBudget(per_minute=settings.loki_max_queries_per_minute,
                                      clock=monotonic)
        self.young: dict[str, bool] = {}
        self.fast_loki_at: dict[str, float] = {}
        self.woken: set[str] = set()
        self.watch_wakeup = asyncio.Event()
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
        self.woken.clear()
        if not self.is_leader():
            # A standby reads nothing and sends nothing; it only stays alive and ready to lead
            # (and checks that the store it would lead with answers).
            report.role = "standby"
            self.readback_done = self.events is None
            self.readback_attempts = 0
            store_answers(self, now, report)
        elif store_answers(self, now, report):
            await with_store(self, self._leader_tick(now, report), now, report)
        report.finish(self.clock(), started=started, cpu_started=cpu_started)
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
                      if self.young.get(ns) or ns in self.woken]
        self.woken.clear()
        if not namespaces or not self.is_leader():
            return None
        now = self.clock()
        started = time.monotonic()
        cpu_started = time.process_time()
        report = TickReport(started_at=now, role="fast")
        if self.sources["store"].failing:
            return None  # the tick checks the store and says so; a look would only fail
        await with_store(self, self._leader_tick(now, report, namespaces=namespaces), now,
                         report)
        report.finish(self.clock(), started=started, cpu_started=cpu_started)
        self.last_fast_look = report
        self.fast_looks += 1
        self.metrics.fast_look_finished(degraded=report.degraded)
        return report

    @property
    def fast_lane_active(self) -> bool:
        """Whether some namespace has a young rollout (the loop then looks every
        FAST_POLL_SECONDS)."""
        return self.settings.fast_poll_seconds > 0 and any(self.young.values())

    async def _leader_tick(self, now: datetime, report: TickReport, *,
                           namespaces: Sequence[str] | None = None) -> None:
        fast = namespaces is not None
        alerts = await before_reads(self, fast=fast)
        watched = self.settings.namespace if namespaces is None else namespaces
        if not self.readback_done:
            # At once with the reads of Kubernetes; a baseline waits for it (observe), and so
            # does the decision below.
            self.readback = asyncio.ensure_future(read_back_events(self, now, report))
        try:
            observed = await asyncio.gather(*(observe_namespace(self, ns, now, report,
                                                                alerts.get(ns, ()), fast=fast)
                                              for ns in watched))
            if self.readback is not None:
                await self.readback
        finally:
            if self.readback is not None:
                self.readback.cancel()
                self.readback = None
        if self.change_reads:
            reads, self.change_reads = self.change_reads, {}
            report.changes = sum(len(found) for found in await asyncio.gather(*reads.values()))
        views = [view for namespace_views, _ in observed for view in namespace_views]
        decision = decide_rollouts(self, views, now, report, fast=fast)
        if decision is None:
            return
        by_key = {(v.deployment.namespace, v.deployment.name): v for v in views}
        risen = rates_risen(decision.assessments)
        await record_rollout_incidents(self, now, report, decision.incidents, by_key, risen)
        await after_rollouts(self, now, report, decision.assessments, by_key, observed, risen,
                             fast=fast)

    @property
    def rule_set(self) -> RuleSet:
        return self.rules_file.rules if self.rules_file is not None else DEFAULT_RULES

    def prioritize_line(self, example: str) -> tuple[Priority, str | None]:
        """The priority the rules give an error line (triage), and the rule that gave it."""
        verdict = classify(self.rule_set, Subject(log_lines=(example,)))
        return verdict.priority, verdict.rule

    async def call_source(self, source: str, call: Callable[[], Awaitable[T]], now: datetime,
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


    # The loop (the outbox worker runs next to it: ``outbox.run``) --------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every POLL_INTERVAL_SECONDS until ``stop`` is set; in between, while a rollout is
        young, a fast look every FAST_POLL_SECONDS, and one as soon as a watch sees a change.
        Every sleep wakes at once on stop."""
        self._loop = asyncio.get_running_loop()
        following = start_following(self)
        try:
            await run_loop(self, stop)
        finally:
            if following:
                await asyncio.to_thread(self.kube.stop_following)  # type: ignore[attr-defined]

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
        self.woken.add(namespace)
        if self.settings.fast_poll_seconds > 0:
            self.watch_wakeup.set()

    def alerts_received(self, summary: Any) -> None:
        """Alertmanager's webhook recorded alerts: count them, and tick now rather than at the
        end of the interval."""
        self.metrics.alerts_taken_in(firing=summary.firing, resolved=summary.resolved)
        self.wakeup.set()

    # Health and status ---------------------------------------------------------------------

    def alive(self) -> bool:
        return self.monotonic() - self._heartbeat <= self.settings.stall_seconds

    def ready(self) -> bool:
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why /readyz says 503 (None: ready)."""
        return unready_reason(self)

    def status(self) -> dict[str, Any]:
        return detector_status(self)
