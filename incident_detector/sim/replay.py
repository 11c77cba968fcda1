"""Replay a scenario through the real detector on a simulated clock.

The scenario's world is served over loopback by fakes that speak the Kubernetes, Loki and Slack
wire formats; the detector is built by the same wiring as in production and ticks every
``poll_interval_seconds`` of *simulated* time, without sleeping. What comes out is exactly what
would have been notified, and when.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import Settings, load_settings
from ..store.records import Store
from .fakes import KubeApiFake, LokiFake, SlackSink
from .scenario import ExpectedChangeIncident, Scenario, load_scenario
from .server import LocalServer
from .world import World

# Scenario t=0 is pinned to a fixed wall time so that replays are byte-for-byte repeatable.
SCENARIO_EPOCH = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
SLACK_PATH = "/services/T000/B000/replay"
# The bearer token the simulated Alertmanager sends, for scenarios with ``alerts:``.
ALERTMANAGER_TOKEN = "replay-alertmanager-token"
# The Deployment a recommended kubectl command acts on ("kubectl rollout undo deployment/x ...").
COMMAND_DEPLOYMENT = re.compile(r"\bdeployments?(?:\.apps)?/([a-z0-9][-a-z0-9.]*)")


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.start = self.now = start

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        """Seconds since the start: the detector's monotonic clock, in simulated time."""
        return (self.now - self.start).total_seconds()


def _next_look(now: datetime, *, next_tick: datetime, detector: Any, settings: Settings,
               watch_events: list[datetime]) -> datetime:
    """When the detector looks next, as its loop would decide: the next tick, a fast look
    FAST_POLL_SECONDS on while a rollout is young, or a watch event (which wakes a fast look
    for its namespace)."""
    due = next_tick
    if detector.fast_lane_active:
        due = min(due, now + timedelta(seconds=settings.fast_poll_seconds))
    while watch_events and watch_events[0] <= now:
        watch_events.pop(0)
    if settings.fast_poll_seconds > 0 and settings.watch_follow and watch_events \
            and watch_events[0] < due:
        due = watch_events.pop(0)
        for namespace in settings.namespace:
            detector.note_watch_event(namespace)
    return due


@dataclass
class Notification:
    at_seconds: float
    record: dict[str, Any]
    slack: dict[str, Any] | None = None
    # The scenario's number of the notified revision (not the Kubernetes one: a Deployment
    # created again counts from 1 again); None when it names no revision of the scenario.
    revision: int | None = None

    @property
    def deployment(self) -> str:
        return str(self.record.get("deployment", ""))

    @property
    def top_cause(self) -> dict[str, Any]:
        """The first of ``evidence.causes`` (empty when there is none)."""
        causes = (self.record.get("evidence") or {}).get("causes") or []
        return causes[0] if causes and isinstance(causes[0], dict) else {}


def incident_key(scenario: Scenario, notification: Notification) -> tuple[str, int | None]:
    """(Deployment, scenario revision) of a rollout incident."""
    return (notification.deployment or scenario.deployment, notification.revision)


def change_key(notification: Notification) -> tuple[str, str, str]:
    """(workload, kind and name of the first cause) of a change incident."""
    change = notification.top_cause.get("change") or {}
    return (notification.deployment, str(change.get("kind", "")), str(change.get("name", "")))


def check_change_incident(expected: ExpectedChangeIncident,
                          notification: Notification) -> list[str]:
    """What a change incident gets wrong against its expectation (nothing: [])."""
    record = notification.record
    problems = []
    if record.get("kind") != "change":
        problems.append(f"kind is {record.get('kind')!r}, not 'change'")
    if notification.deployment != expected.deployment:
        problems.append(f"deployment is {notification.deployment!r}, not {expected.deployment!r}")
    top = notification.top_cause
    change = top.get("change") or {}
    if (change.get("kind"), change.get("name")) != (expected.cause.kind, expected.cause.name):
        problems.append(f"the first cause is {change.get('kind')} {change.get('name')!r}, not "
                        f"{expected.cause.kind} {expected.cause.name!r}")
    recommended = record.get("recommended_action") or {}
    if expected.action is not None:
        for where, action in (("the first cause", top.get("action")),
                              ("recommended_action", recommended.get("action"))):
            if (action or "none") != expected.action:
                problems.append(f"{where} says {action!r}, not {expected.action!r}")
    if expected.target is not None:
        for where, command in (("the first cause", top.get("command")),
                               ("recommended_action", recommended.get("command"))):
            found = COMMAND_DEPLOYMENT.search(command or "")
            if found is None or found.group(1) != expected.target:
                problems.append(f"{where}'s command {command!r} does not act on deployment/"
                                f"{expected.target}")
    return problems


@dataclass
class ReplayResult:
    scenario: Scenario
    # Rollout incidents; alert incidents, change incidents and "resolved" follow-ups apart.
    notifications: list[Notification] = field(default_factory=list)
    alert_notifications: list[Notification] = field(default_factory=list)
    change_notifications: list[Notification] = field(default_factory=list)
    error_groups: list[Notification] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    ticks: int = 0
    fast_looks: int = 0
    degraded_ticks: int = 0
    # (simulated second, Loki requests) of each look that asked Loki anything.
    loki_queries: list[tuple[float, int]] = field(default_factory=list)

    def loki_queries_per_minute(self, start: float, end: float) -> float:
        """Loki requests per minute over the looks in [start, end) (simulated seconds)."""
        asked = sum(n for at, n in self.loki_queries if start <= at < end)
        return asked * 60.0 / (end - start) if end > start else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.scenario.description,
            "ticks": self.ticks,
            "degraded_ticks": self.degraded_ticks,
            "notifications": [
                {"at_seconds": n.at_seconds, "revision": n.record["revision"],
                 "signals": n.record["signals"], "summary": n.record["summary"],
                 "incident": n.record, "slack": n.slack}
                for n in self.notifications
            ],
            "alert_incidents": [{"at_seconds": n.at_seconds, "incident": n.record,
                                 "slack": n.slack} for n in self.alert_notifications],
            "change_incidents": [{"at_seconds": n.at_seconds, "incident": n.record,
                                  "slack": n.slack} for n in self.change_notifications],
            "resolved": self.resolved,
        }


def scenario_settings(scenario: Scenario, *, loki_url: str, slack_url: str | None,
                      **extra: Any) -> Settings:
    environ = {
        "LOKI_URL": loki_url,
        "NAMESPACE": scenario.namespace,
        # Every Deployment of the scenario: a change incident is about one, its cause another.
        "TARGET_DEPLOYMENT": ",".join(scenario.deployments),
        "LOKI_LABEL_APP": scenario.workload,
        "STATE_PATH": ":memory:",
        "HTTP_PORT": "0",
        "HTTP_HOST": "127.0.0.1",
    }
    if slack_url:
        environ["SLACK_WEBHOOK_URL"] = slack_url
    environ.update({k.upper(): str(v) for k, v in scenario.settings.items()})
    environ.update({k.upper(): str(v) for k, v in extra.items()})
    return load_settings(environ)


@dataclass
class SimulatedCluster:
    world: World
    kube: LocalServer
    loki: LocalServer
    slack: LocalServer
    slack_sink: SlackSink

    @property
    def slack_url(self) -> str:
        return self.slack.url + SLACK_PATH


@contextmanager
def simulated_cluster(scenario: Scenario, *, clock: Any, t0: datetime = SCENARIO_EPOCH) -> Iterator[SimulatedCluster]:
    """Loopback kube-apiserver, Loki and Slack serving ``scenario`` as seen at ``clock()``."""
    world = World(scenario, t0=t0)
    sink = SlackSink()
    loki = LokiFake(world, clock)
    # A rollback written to the apiserver adds a revision to the world; Loki serves the same one.
    kube = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    with LocalServer(kube) as kube_server, LocalServer(loki) as loki_server, \
            LocalServer(sink) as slack_server:
        yield SimulatedCluster(world, kube_server, loki_server, slack_server, sink)


async def replay(scenario: Scenario, *, t0: datetime = SCENARIO_EPOCH) -> ReplayResult:
    import httpx

    from ..main import build_detector, web_routes
    from ..sources import kube_http
    from ..web.app import make_app
    from .alertmanager import webhook_body

    clock = ManualClock(t0)
    result = ReplayResult(scenario)
    out = io.StringIO()
    with simulated_cluster(scenario, clock=clock, t0=t0) as cluster:
        extra = {"alertmanager_token": ALERTMANAGER_TOKEN} if scenario.alerts else {}
        settings = scenario_settings(scenario, loki_url=cluster.loki.url,
                                     slack_url=cluster.slack_url, **extra)
        store = Store(":memory:")
        async with build_detector(settings=settings, kube_api=kube_http.api_client_for(cluster.kube.url),
                                  stdout=out, clock=clock, store=store,
                                  monotonic=clock.monotonic) as detector:
            app = make_app(detector, extra_routes=web_routes(detector, settings))
            web = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d")
            step = timedelta(seconds=settings.poll_interval_seconds)
            end = t0 + timedelta(seconds=scenario.duration)
            # The instants a followed watch would see a change (a new ReplicaSet, a pod's
            # status): the fast lane looks then, as it does when a watch event wakes it.
            watch_events = [at for at in cluster.world.change_instants() if at > t0]
            next_tick = t0
            while clock.now <= end:
                asked = len(cluster.loki.requests)
                if clock.now >= next_tick:
                    # Alertmanager re-sends a group's alerts at each group_interval: here every tick.
                    body = webhook_body(scenario.alerts, t0=t0, now=clock.now)
                    if body is not None:
                        answer = await web.post("/webhooks/alertmanager", json=body, headers={
                            "Authorization": f"Bearer {ALERTMANAGER_TOKEN}"})
                        answer.raise_for_status()
                    report = await detector.tick()
                    next_tick += step
                    result.ticks += 1
                else:
                    report = await detector.fast_look()
                    result.fast_looks += report is not None
                await detector.outbox.deliver_due()
                result.degraded_ticks += int(report is not None and report.degraded)
                if len(cluster.loki.requests) > asked:
                    result.loki_queries.append(((clock.now - t0).total_seconds(),
                                                len(cluster.loki.requests) - asked))
                clock.now = _next_look(clock.now, next_tick=next_tick, detector=detector,
                                       settings=settings, watch_events=watch_events)
            await web.aclose()
        store.close()
        slack_messages = list(cluster.slack_sink.messages)
        world = cluster.world
    # Each incident and each follow-up is one stdout line and one Slack message, in the order
    # they were recorded (the outbox sends both channels in that order).
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    notified = [r for r in records if r.get("event") in ("incident", "resolved")]
    for index, record in enumerate(notified):
        slack = slack_messages[index] if index < len(slack_messages) else None
        if record["event"] == "resolved":
            result.resolved.append(record)
            continue
        detected = datetime.fromisoformat(record["detected_at"].replace("Z", "+00:00"))
        at_seconds = (detected - t0).total_seconds()
        if record.get("kind") == "alert":
            result.alert_notifications.append(Notification(at_seconds, record, slack))
            continue
        if record.get("kind") == "error_group":
            result.error_groups.append(Notification(at_seconds, record, slack))
            continue
        if record.get("kind") == "change":
            result.change_notifications.append(Notification(at_seconds, record, slack))
            continue
        result.notifications.append(Notification(
            at_seconds=at_seconds,
            record=record,
            slack=slack,
            revision=world.scenario_revision(replicaset=record["replicaset"],
                                             revision=record["revision"],
                                             deployment=record.get("deployment")),
        ))
    return result


def format_result(result: ReplayResult) -> str:
    from ..notify.render import slack_text

    lines = [f"scenario: {result.scenario.description}",
             f"ticks: {result.ticks} (degraded: {result.degraded_ticks})"]
    if not result.notifications and not result.change_notifications:
        lines.append("no incident: nothing would have been notified")
    for n in result.notifications:
        r = n.record
        lines.append("")
        lines.append(f"t=+{n.at_seconds:.0f}s  INCIDENT {r['namespace']}/{r['deployment']} "
                     f"revision {r['revision']}  signals: {', '.join(r['signals'])}")
        lines.append(f"  {r['summary']}")
        lines.append(f"  action: {r['recommended_action']}")
        if n.slack is not None:
            lines.append("  slack message:")
            lines.extend("    " + line for line in slack_text(n.slack).splitlines())
    for n in result.change_notifications:
        r = n.record
        change = r.get("change") or {}
        lines.append("")
        lines.append(f"t=+{n.at_seconds:.0f}s  CHANGE INCIDENT {r['namespace']}/{r['deployment']} "
                     f"after {change.get('kind')} {change.get('name')}")
        for cause in (r.get("evidence") or {}).get("causes") or []:
            what = cause.get("change") or {}
            lines.append(f"  cause {cause.get('score')}: {what.get('kind')} {what.get('name')}"
                         f"  {'; '.join(cause.get('reasons') or [])}")
        lines.append(f"  action: {r.get('recommended_action')}")
    return "\n".join(lines)


def replay_main(path: str, *, as_json: bool = False) -> int:
    from ..logs import configure_logging

    # Replay prints its own report; the detector's logs would only interleave with it.
    configure_logging(level="error", fmt="json", stream=sys.stderr)
    try:
        scenario = load_scenario(Path(path))
    except (OSError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(replay(scenario))
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_result(result))
    return 0
