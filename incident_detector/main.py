"""Wiring: the one place where settings, clients, store, notifiers and the web app are built.

Everything is passed explicitly, keyword-only; nothing else reads the environment or holds a
module-level client.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TextIO

import kubernetes.client
import structlog
import uvicorn

from .config import Settings
from .errors import SourceError
from .notify import events, slack
from .run import leader
from .run.daemon import Clock, Detector, utcnow
from .judge.analysis import PromptError
from .judge.rules import RulesError
from .store.changes import ChangeLog
from .run.changes import ChangeDesk
from .run.live import LiveFeed
from .run.outbox import StdoutSink
from .run.rules_file import RulesFile
from .store.db import StoreUnavailable
from .store.records import Store
from .sources import kube, kube_http, loki
from .web.app import make_app

log = structlog.get_logger("incident_detector")

# How long pending deliveries may still run after SIGTERM before the process exits; what is not
# sent by then stays in the outbox and goes out after the restart.
SHUTDOWN_GRACE_SECONDS = 5.0
# A database that is not up yet at start is waited for, not a crash loop: first retry after
# this many seconds, doubling up to the cap.
STORE_WAIT_BASE_SECONDS = 1.0
STORE_WAIT_CAP_SECONDS = 30.0


async def open_store(settings: Settings, *,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Store:
    """The store the settings name: the SQLite file at STATE_PATH, or DATABASE_URL's database,
    waited for with capped backoff and a log line per attempt while it cannot be reached. A
    store of a newer detector (StoreVersionError) is not waited for: that needs a person."""
    attempt = 0
    while True:
        try:
            store = Store(settings.store_target, owner=settings.pod_name)
        except StoreUnavailable as exc:
            attempt += 1
            delay = min(STORE_WAIT_CAP_SECONDS, STORE_WAIT_BASE_SECONDS * 2 ** (attempt - 1))
            log.warning("store.waiting", error=exc.message, attempt=attempt,
                        retry_in_seconds=delay)
            await sleep(delay)
            continue
        log.info("store.opened", backend=store.dialect, target=store.target,
                 migrated_from=store.migrated_from)
        return store


@contextlib.asynccontextmanager
async def build_detector(
    *,
    settings: Settings,
    kube_api: kubernetes.client.ApiClient,
    stdout: TextIO,
    clock: Clock = utcnow,
    store: Store | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Detector]:
    """Build the detector and its clients; close them on exit. ``monotonic`` is what /healthz
    measures a stall on, and what paces the fast lane and the Loki budget."""
    # First: an invalid RULES_FILE stops the start (RulesError) before anything is opened.
    rules = RulesFile(settings.rules_file, clock=clock)
    # And an invalid LLM_PROMPT_FILE (PromptError), when the LLM analysis is on.
    prompt = None
    if settings.llm_base_url is not None:
        from .judge.analysis import load_prompt

        prompt = load_prompt(settings.llm_prompt_file)
    own_store = store is None
    store = store or await open_store(settings)
    loki_http = loki.make_http_client(settings)
    slack_http, slack_notifier = None, None
    if settings.slack_bot_token is not None and settings.slack_channel_id:
        # A Slack app: chat.postMessage, follow-ups in the incident's thread. Imported here:
        # slack_sdk's Web API client costs megabytes that a webhook install never needs.
        from .notify.slack_bot import SlackBotNotifier

        from .store.threads import SlackThreads

        slack_notifier = SlackBotNotifier(token=settings.slack_bot_token,
                                          channel=settings.slack_channel_id,
                                          timeout=settings.slack_timeout_seconds,
                                          threads=SlackThreads(store.connection, clock=clock))
    elif settings.slack_webhook_url is not None:  # without either, Slack is simply off
        slack_http = slack.make_http_client(timeout=settings.slack_timeout_seconds)
        slack_notifier = slack.SlackNotifier(http=slack_http, webhook_url=settings.slack_webhook_url,
                                             max_attempts=settings.slack_max_attempts)
    elector = leader.LeaderElector(
        api=kube_api, namespace=settings.lease_namespace_effective, identity=settings.pod_name,
        lease_duration=settings.lease_duration_seconds,
        renew_interval=settings.lease_duration_seconds / 3, timeout=settings.kube_timeout_seconds,
        clock=clock,
    ) if settings.leader_election else None
    recorder = events.EventRecorder(api=kube_api, timeout=settings.kube_timeout_seconds,
                                    reporting_instance=settings.pod_name) \
        if settings.kube_events else None
    # What the dashboard's pages follow live: incidents, verdicts, and every audit row.
    live = LiveFeed()
    remediator = analyst = llm = change_desk = None
    if settings.remediation_mode != "off":
        # Imported only when remediation is on: a read-only detector does not load act/.
        from .act.approvals import ApprovalTokens
        from .act.argocd import ArgoCdClient
        from .act.executor import KubeExecutor
        from .judge.guardrails import policy_from_settings
        from .act.remediation import Remediator
        from .store.journal import Journal

        remediator = Remediator(
            policy=policy_from_settings(settings),
            journal=Journal(store.connection,
                            on_audit=lambda row: live.publish("action", row.as_dict())),
            executor=KubeExecutor(api=kube_api, timeout=settings.kube_timeout_seconds),
            tokens=ApprovalTokens(clock=clock, db=store.connection), stdout=StdoutSink(stdout),
            slack=slack_notifier, owner=settings.pod_name,
            clock=clock, verify_timeout_seconds=settings.verify_timeout_seconds, events=recorder,
            argocd=ArgoCdClient(base_url=str(settings.argocd_url), token=settings.argocd_token,
                                timeout=settings.argocd_timeout_seconds,
                                verify_tls=not settings.argocd_insecure)
            if settings.argocd_url is not None and settings.argocd_token is not None else None)
    try:
        detector = Detector(
            settings=settings,
            kube=kube.KubeClient(api=kube_api, timeout=settings.kube_timeout_seconds),
            loki=loki.LokiClient(
                http=loki_http,
                keys=loki.LabelKeys.from_settings(settings),
                pattern=settings.error_pattern,
                levels=settings.error_levels,
                match=settings.error_match,
            ),
            store=store,
            stdout=StdoutSink(stdout),
            slack=slack_notifier,
            events=recorder,
            leadership=elector,
            clock=clock,
            monotonic=monotonic,
            remediator=remediator,
            rules=rules,
            live=live,
        )
        if remediator is not None:
            # Only the leader writes to the cluster; a standby records the decisions it takes in.
            remediator.is_leader = detector.is_leader
        # Every Loki request is counted for the namespace that asked (LOKI_MAX_QUERIES_PER_MINUTE).
        loki_http.event_hooks["request"].append(detector.loki_budget.on_request)
        if settings.alertmanager_token is not None:
            # Imported only when the intake is on, like remediation.
            from .judge.alert_map import AlertLabels
            from .run.alert_desk import AlertDesk
            from .store.alerts import AlertInbox

            detector.alert_desk = AlertDesk(
                inbox=AlertInbox(store.connection),
                labels=AlertLabels.from_settings(settings), outbox=detector.outbox,
                rules=lambda: detector.rule_set, watched_namespaces=settings.namespace,
                error_window_seconds=settings.error_window_seconds,
                sample_lines=settings.signature_sample_lines, remediator=remediator)
        if settings.triage_sample_lines > 0:
            # One log query per namespace and tick, read by every feature that needs lines.
            from .run.error_lines import ErrorLines

            detector.error_lines = ErrorLines(
                loki=detector.loki,
                limit=max(settings.triage_sample_lines, settings.signature_sample_lines),
                retention=timedelta(seconds=settings.roll_out_window_seconds
                                    + settings.error_window_seconds),
                first_window=timedelta(seconds=settings.error_window_seconds))
        detector.change_desk = change_desk = build_change_desk(
            settings, detector=detector, kube_api=kube_api, store=store, live=live)
        if prompt is not None:
            # The optional LLM analysis: a follow-up to each incident, never in its way.
            from .run.analysis import Analyst
            from .sources.llm import LlmClient

            llm = LlmClient(base_url=str(settings.llm_base_url), model=settings.llm_model,
                            api_key=settings.llm_api_key, api_version=settings.llm_api_version,
                            timeout=settings.llm_timeout_seconds)
            analyst = Analyst(client=llm, prompt=prompt, allowed_actions=settings.allowed_actions,
                              timeout=settings.llm_timeout_seconds,
                              max_evidence_chars=settings.llm_max_evidence_chars,
                              journal=detector.journal, stdout=StdoutSink(stdout), clock=clock,
                              slack=slack_notifier, outbox_store=store.outbox,
                              on_result=lambda record: live.publish("analysis", record))
            detector.analyst = analyst
            if remediator is not None:
                remediator.analyst = analyst
                remediator.llm_min_confidence = settings.llm_min_confidence
        if settings.triage_sample_lines > 0:
            from .run.triage import Triage

            detector.triage = Triage(
                connection=store.connection, loki=detector.error_lines or detector.loki,
                sample_lines=settings.triage_sample_lines, max_groups=settings.triage_max_groups,
                prioritize=detector.prioritize_line, notify_priorities=settings.notify_priorities,
                first_window=timedelta(seconds=settings.error_window_seconds))
        yield detector
    finally:
        if remediator is not None:
            await remediator.close()
        if change_desk is not None:
            change_desk.close()
        if analyst is not None:
            await analyst.close()
        if llm is not None:
            await llm.aclose()
        await loki_http.aclose()
        if slack_http is not None:
            await slack_http.aclose()
        if own_store:
            store.close()


def build_change_desk(settings: Settings, *, detector: Detector,
                      kube_api: kubernetes.client.ApiClient, store: Store,
                      live: LiveFeed) -> ChangeDesk:
    """The change timeline: the watches of CHANGE_KINDS (Deployments ride on the detector's own
    watch), its memory in the state file, and the incidents of kind change."""
    from .sources.changes_watch import ChangeWatcher
    from .store.service_map import ObservedLinks

    kinds = [kind for kind in settings.change_kinds if kind != "Deployment"]
    watcher = ChangeWatcher(api=kube_api, timeout=settings.kube_timeout_seconds, kinds=kinds) \
        if kinds else None
    return ChangeDesk(
        changes=ChangeLog(store.connection,
                          retention=timedelta(days=settings.change_retention_days),
                          max_rows=settings.change_retention_max,
                          emit=settings.change_webhook_url is not None),
        live=live, watcher=watcher,
        kube=detector.kube if "Deployment" in settings.change_kinds else None,
        loki=detector.error_lines or detector.loki, rules=detector.rules,
        window_seconds=settings.roll_out_window_seconds, rule_set=lambda: detector.rule_set,
        sample_lines=settings.signature_sample_lines, workload_of=detector.workload_of,
        record_notice=detector.outbox.record_notice,
        is_notified=lambda key: store.notice(key) is not None, remediator=detector.remediator,
        metrics=detector.metrics, links=ObservedLinks(store.connection))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class HttpEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def web_routes(detector: Detector, settings: Settings) -> list:
    """Every route beyond the read-only ones: Slack, Alertmanager, the JSON API."""
    routes = slack_routes(detector, settings)
    if detector.alert_desk is not None:
        from .web.alertmanager import alertmanager_routes

        routes += alertmanager_routes(token=settings.alertmanager_token,
                                      inbox=detector.alert_desk.inbox,
                                      is_leader=detector.is_leader, clock=detector.clock,
                                      shared_store=settings.shared_store,
                                      on_received=detector.alerts_received)
    # The dashboard and its JSON API; its writes (approve, reject) only with DASHBOARD_TOKEN or
    # AUTH_PROXY_HEADER, through the same one-time tokens, guardrails and audit as Slack.
    from .web import queries
    from .web.actions import DashboardActions
    from .web.api import api_routes
    from .store.sessions import DashboardSessions
    from .web.auth import DashboardAuth
    from .web.dashboard import dashboard_routes, templates

    # Sessions in the store: every replica on it knows them, and a restart keeps them.
    actions = DashboardActions(
        auth=DashboardAuth.from_settings(
            settings, clock=detector.clock,
            sessions=DashboardSessions(detector.store.connection)),
        remediator=detector.remediator, clock=detector.clock, templates=templates(),
        page_context=lambda request: {"leader": queries.leader(detector)})
    routes += actions.routes()
    routes += api_routes(detector=detector, clock=detector.clock)
    if detector.change_desk is not None:
        from .web.changes import change_routes

        routes += change_routes(changes=detector.change_desk.changes, live=detector.live)
    from .web.graph import graph_routes

    routes += graph_routes(detector=detector, templates=templates(), clock=detector.clock)
    routes += dashboard_routes(detector=detector, decision_context=actions.decision_context,
                               clock=detector.clock)
    return routes


def slack_routes(detector: Detector, settings: Settings) -> list:
    """The Slack interactivity endpoint, when remediation can ask (otherwise: none, 404)."""
    remediator = detector.remediator
    if remediator is None or settings.slack_signing_secret is None:
        return []
    from .web.slack_actions import slack_action_routes

    return slack_action_routes(
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        approvers=frozenset(settings.slack_approvers), tokens=remediator.tokens,
        on_decision=remediator.on_decision, clock=detector.clock, pending=remediator.running)


async def start_http(detector: Detector, settings: Settings) -> tuple[_EmbeddedServer, asyncio.Task, HttpEndpoint]:
    config = uvicorn.Config(make_app(detector, extra_routes=web_routes(detector, settings)),
                            host=settings.http_host, port=settings.http_port,
                            log_config=None, access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name="http")
    while not server.started:
        if task.done():
            task.result()  # re-raise the bind error
            raise RuntimeError("HTTP server stopped before it started")
        await asyncio.sleep(0.01)
    port = settings.http_port
    for srv in server.servers:
        for sock in srv.sockets:
            port = sock.getsockname()[1]
    endpoint = HttpEndpoint(settings.http_host, port)
    log.info("http.listening", host=settings.http_host, port=port)
    return server, task, endpoint


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("shutdown.requested", signal=sig.name)
    stop.set()


async def run_daemon(detector: Detector, settings: Settings, *, stop: asyncio.Event,
                     on_ready: "asyncio.Future[HttpEndpoint] | None" = None) -> int:
    """Serve HTTP, tick and deliver until ``stop``; then stop cleanly within a few seconds."""
    server, http_task, endpoint = await start_http(detector, settings)
    if on_ready is not None and not on_ready.done():
        on_ready.set_result(endpoint)
    change_feed = None
    if settings.change_grpc_port and detector.change_desk is not None:
        # The gRPC WatchChanges feed (the grpc extra; checked in main_async).
        from .feed.grpc_server import STOP_GRACE_SECONDS, serve_changes

        change_feed = await serve_changes(changes=detector.change_desk.changes, live=detector.live,
                                          port=settings.change_grpc_port, host=settings.http_host)
    ticks = asyncio.create_task(detector.run(stop), name="ticks")
    outbox = asyncio.create_task(detector.outbox.run(stop), name="outbox")
    change_http, change_events = None, None
    if settings.change_webhook_url is not None and detector.change_desk is not None:
        # Each recorded change as a CloudEvent, from the changes table (nothing lost on restart).
        from .notify.cloudevents import ChangeEmitter, make_http_client

        change_http = make_http_client(timeout=settings.change_webhook_timeout_seconds)
        emitter = ChangeEmitter.from_settings(
            settings, changes=detector.change_desk.changes, http=change_http,
            clock=detector.clock, is_leader=detector.is_leader)
        detector.change_desk.on_recorded = emitter.wakeup.set
        change_events = asyncio.create_task(emitter.run(stop), name="change_events")
    # The elector stops last: it releases the Lease only once this replica sends nothing more.
    election_stop = asyncio.Event()
    election = asyncio.create_task(detector.leadership.run(election_stop), name="election") \
        if isinstance(detector.leadership, leader.LeaderElector) else None
    try:
        await stop.wait()
    finally:
        stop.set()
        # The current tick finishes or is cancelled; pending sends get a short grace period.
        for task in [t for t in (ticks, outbox, change_events) if t is not None]:
            done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_SECONDS)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                log.error("task.failed", task=task.get_name(), error=repr(task.exception()))
        if election is not None:
            election_stop.set()
            done, _ = await asyncio.wait({election}, timeout=SHUTDOWN_GRACE_SECONDS)
            if not done:
                election.cancel()
        if change_feed is not None:
            await change_feed.stop(STOP_GRACE_SECONDS)
        if change_http is not None:
            await change_http.aclose()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(http_task, timeout=SHUTDOWN_GRACE_SECONDS)
        pending = detector.store.outbox.summary().pending
        log.info("shutdown.complete", ticks=detector.ticks, undelivered=pending)
    return 0


async def run_once(detector: Detector) -> int:
    """One tick and its deliveries; non-zero when a source failed (for scripts and debugging)."""
    report = await detector.tick()
    await asyncio.wait_for(detector.outbox.deliver_due(), timeout=60)
    for problem in report.problems:
        log.error("once.problem", problem=problem)
    return 1 if report.degraded else 0


async def main_async(settings: Settings, *, once: bool, stdout: TextIO = sys.stdout) -> int:
    try:
        api = kube_http.api_client_from_environment()
    except SourceError as exc:
        print(f"invalid configuration: Kubernetes: {exc.message}", file=sys.stderr)
        return 2
    try:
        async with build_detector(settings=settings, kube_api=api, stdout=stdout) as detector:
            if once:
                return await run_once(detector)
            stop = asyncio.Event()
            install_signal_handlers(stop)
            return await run_daemon(detector, settings, stop=stop)
    except RulesError as exc:
        print(f"invalid configuration: RULES_FILE: {exc}", file=sys.stderr)
        return 2
    except PromptError as exc:
        print(f"invalid configuration: LLM_PROMPT_FILE: {exc}", file=sys.stderr)
        return 2
