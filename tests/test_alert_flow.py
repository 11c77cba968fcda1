"""Alerts through the real detector, in-process on a simulated clock: Alertmanager's webhook
(signed with the token, as its ``http_config.authorization`` sends it) records them, the tick
maps them, ties them to a rollout or raises an alert incident with its brief, closes it when the
alert resolves, and keeps unmapped alerts visible. Rules give priorities and actions; an action
goes through the same guardrails and approvals as a rollback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from incident_detector.main import build_detector, web_routes
from incident_detector.store.records import Store
from incident_detector.sim.alertmanager import webhook_body
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import AlertSpec, Scenario, load_scenario
from incident_detector.sim.server import LocalServer
from incident_detector.sim.world import World
from incident_detector.sources import kube
from incident_detector.web.app import make_app

SCENARIOS = Path(__file__).parent / "scenarios"
TOKEN = "am-token-0123456789abcdef"
TICK = timedelta(seconds=20)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Sim:
    """One scenario's simulated cluster (loopback apiserver, Loki, Slack) on a manual clock,
    and the real detector over it, as often as a test starts one (a restart is a second)."""

    def __init__(self, tmp_path: Path, scenario: Scenario, *,
                 apiserver: Callable[[KubeApiFake], Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.scenario = scenario
        self.clock = ManualClock(SCENARIO_EPOCH)
        self.world = World(scenario, t0=SCENARIO_EPOCH)
        self.loki = LokiFake(self.world, self.clock)
        self.api = KubeApiFake(self.world, self.clock)
        self.apiserver = apiserver(self.api) if apiserver is not None else self.api
        self.sink = SlackSink()
        self.out = io.StringIO()
        self.answers: list[int] = []

    @contextlib.asynccontextmanager
    async def daemon(self, **extra: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
        """(detector, a client of its web app, the Slack sink's URL)."""
        with LocalServer(self.apiserver) as k, LocalServer(self.loki) as lk, \
                LocalServer(self.sink) as sl:
            settings = scenario_settings(self.scenario, loki_url=lk.url,
                                         slack_url=sl.url + "/services/T/B/X", **extra)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=self.out, clock=self.clock,
                                      store=Store(self.tmp_path / "state.sqlite3")) as detector:
                app = make_app(detector, extra_routes=web_routes(detector, settings))
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://d") as web:
                    yield detector, web, sl.url

    async def tick(self, detector: Any, web: httpx.AsyncClient,
                   specs: tuple[AlertSpec, ...] = ()) -> None:
        """Alertmanager posts the alerts begun by now, then one tick and its deliveries."""
        body = webhook_body(specs, t0=SCENARIO_EPOCH, now=self.clock.now)
        if body is not None:
            answer = await web.post("/webhooks/alertmanager", json=body, headers=AUTH)
            self.answers.append(answer.status_code)
        await detector.tick()
        await detector.outbox.deliver_due()
        self.clock.now += TICK

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


def run(tmp_path: Path, scenario_name: str, *, alerts: tuple[AlertSpec, ...] | None = None,
        ticks: int = 12, restart_after: int | None = None, **extra: Any) -> dict[str, Any]:
    """Ticks of the scenario; its alerts (or ``alerts``) posted to the webhook before each."""
    sim = Sim(tmp_path, load_scenario(SCENARIOS / scenario_name))
    specs = sim.scenario.alerts if alerts is None else alerts
    seen: dict[str, Any] = {}

    async def one_process(first: int, last: int) -> None:
        async with sim.daemon(alertmanager_token=TOKEN, **extra) as (detector, web, _):
            for _ in range(first, last):
                await sim.tick(detector, web, specs)
            seen["alerts"] = (await web.get("/api/alerts")).json()
            seen["status"] = (await web.get("/status")).json()
            seen["metrics"] = (await web.get("/metrics")).text

    async def main() -> None:
        if restart_after is None:
            await one_process(0, ticks)
        else:  # the same state file, a new process
            await one_process(0, restart_after)
            await one_process(restart_after, ticks)

    asyncio.run(main())
    seen["answers"] = sim.answers
    seen["lines"] = sim.lines()
    seen["incidents"] = [r for r in seen["lines"] if r.get("event") == "incident"]
    seen["resolved"] = [r for r in seen["lines"] if r.get("event") == "resolved"]
    seen["slack"] = sim.sink.messages
    seen["writes"] = sim.api.writes
    return seen


def test_an_alert_with_no_rollout_is_one_alert_incident_with_its_brief(tmp_path):
    seen = run(tmp_path, "alert-without-rollout.yaml")
    assert set(seen["answers"]) == {200}
    (incident,) = seen["incidents"]
    assert (incident["kind"], incident["priority"], incident["rule"]) == ("alert", "P1",
                                                                          "crash-loop")
    assert incident["mapped_by"] == "pod" and incident["deployment"] == "checkout"
    assert incident["command"].startswith("kubectl delete pod checkout-")
    evidence = incident["evidence"]
    assert any("CrashLoopBackOff" in p["problems"] for p in evidence["pods"])
    assert evidence["warning_events"] and evidence["warning_events"][0]["reason"] == "BackOff"
    assert evidence["last_rollout"]["revision"] == 2
    assert evidence["signatures"]
    (message,) = seen["slack"]
    assert message["text"].startswith(":rotating_light: [P1] KubePodCrashLooping")
    # Read-only by default: nothing written to the cluster, the recommendation only.
    assert seen["writes"] == [] and incident["remediation"] is None
    assert any(n["key"] == incident["key"] for n in seen["status"]["notices"])
    metrics = seen["metrics"]
    assert 'incident_detector_notices_total{kind="alert",priority="P1"} 1.0' in metrics
    firing = [line for line in metrics.splitlines()
              if line.startswith('incident_detector_alerts_received_total{status="firing"}')]
    assert firing and float(firing[0].split()[-1]) == len(seen["answers"])


def test_a_restart_does_not_raise_the_same_alert_again(tmp_path):
    seen = run(tmp_path, "alert-without-rollout.yaml", ticks=14, restart_after=10)
    assert len(seen["incidents"]) == 1 and len(seen["slack"]) == 1


def test_a_resolved_alert_closes_its_incident_with_one_follow_up(tmp_path):
    seen = run(tmp_path, "alert-resolved.yaml", ticks=55)
    (incident,) = seen["incidents"]
    (resolved,) = seen["resolved"]
    assert resolved["key"] == incident["key"] and resolved["firing_seconds"] == 840
    assert [m["text"] for m in seen["slack"]][-1] == \
        "Resolved after 14m: CheckoutQueueBacklog on checkout in shop."
    assert len(seen["slack"]) == 2


def test_an_alert_during_a_rollout_is_named_by_the_rollout_incident(tmp_path):
    seen = run(tmp_path, "alert-during-rollout.yaml", ticks=14)
    (incident,) = seen["incidents"]
    assert (incident["kind"], incident["revision"], incident["priority"]) == ("rollout", 2, "P1")
    assert "alert" in incident["signals"]
    assert [a["name"] for a in incident["evidence"]["alerts"]] == ["CheckoutLatencyHigh"]
    assert "CheckoutLatencyHigh" in str(seen["slack"][0])
    (alert,) = seen["alerts"]["alerts"]
    assert alert["incident"] == "shop/checkout/2/" + incident["deployment_uid"]


def test_unmapped_alerts_are_recorded_and_shown_not_dropped(tmp_path):
    specs = (AlertSpec(name="Watchdog", at=0),
             AlertSpec(name="NodeDiskFull", at=0, labels={"namespace": "kube-system"}),
             AlertSpec(name="Typo", at=0, labels={"namespace": "shop", "deployment": "chekout"}))
    seen = run(tmp_path, "alert-resolved.yaml", alerts=specs, ticks=3)
    assert seen["incidents"] == []
    reasons = {a["name"]: a["unmapped_reason"] for a in seen["alerts"]["alerts"]}
    assert set(reasons) == {"Watchdog", "NodeDiskFull", "Typo"}
    assert all(reasons.values())


def test_a_rule_file_sets_the_priority_and_the_action(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: backlog\n"
        "    match: {alertname: CheckoutQueueBacklog}\n"
        "    priority: P2\n"
        "    remediation: {action: restart, cooldown: 1h}\n")
    seen = run(tmp_path, "alert-resolved.yaml", ticks=8, rules_file=str(rules))
    (incident,) = seen["incidents"]
    assert (incident["priority"], incident["rule"], incident["action"]) == ("P2", "backlog",
                                                                            "restart")
    assert incident["command"] == "kubectl rollout restart deployment/checkout -n shop"
    assert seen["status"]["rules"]["source"] == str(rules)


def test_an_invalid_rules_file_stops_the_start_with_exit_code_2(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: x\n    match: {pod_reason: CrashLoop}\n    priority: P1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SLACK_", "RULES_"))}
    env.update({"LOKI_URL": "http://127.0.0.1:1", "NAMESPACE": "shop",
                "TARGET_DEPLOYMENT": "checkout", "RULES_FILE": str(rules), "LOG_LEVEL": "error"})
    # A process of its own: the CLI configures logging for the whole process.
    proc = subprocess.run([sys.executable, "-m", "incident_detector"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "RULES_FILE" in proc.stderr and str(rules) in proc.stderr
    assert "rule 'x'" in proc.stderr and "match.pod_reason" in proc.stderr


CRASH_LOOP_ALERT = """
description: A pod of payments-api crash loops hours after its rollout; the alert names it.
namespace: demo-aiops
deployment: payments-api
duration: 600
pod_labels: {app: payments-api}
revisions:
  - {revision: 1, at: -172800, image: registry.local/payments-api:1.4.1, replicas: 2}
  - revision: 2
    at: -7200
    image: registry.local/payments-api:1.4.2
    replicas: 2
    pod_problems:
      - {from: 60, problem: CrashLoopBackOff, restarts: 5, pods: 1}
alerts:
  - name: KubePodCrashLooping
    at: 100
    labels: {namespace: demo-aiops, deployment: payments-api, severity: warning}
expect:
  incidents: []
  alert_incidents: [{alert: KubePodCrashLooping, priority: P1}]
"""


def test_an_alert_incident_proposes_the_rules_action_through_the_same_approvals(tmp_path):
    from test_remediation_actions import PODS_PATH, WritingApiServer, button
    from test_slack_actions import click_body, signed_headers

    secret, approver = "8f742231b10e8888abcd99yyyzzz85a5", "U0APPROVER"
    path = tmp_path / "crash-loop-alert.yaml"
    path.write_text(CRASH_LOOP_ALERT)
    sim = Sim(tmp_path, load_scenario(path), apiserver=WritingApiServer)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon(alertmanager_token=TOKEN, remediation_mode="approve",
                              slack_signing_secret=secret, slack_approvers=approver,
                              allowed_actions="rollback,delete-pod") as (detector, web, slack):
            for _ in range(10):
                await sim.tick(detector, web, sim.scenario.alerts)
            seen["before_click"] = list(sim.api.writes)
            action_id, token = button(sim.sink.messages[0], "approve")
            seen["action_id"] = action_id
            click = click_body(token, user=approver, action_id=action_id,
                               response_url=slack + "/response")
            answer = await web.post("/integrations/slack/actions", content=click,
                                    headers=signed_headers(click, at=sim.clock.now,
                                                           secret=secret))
            seen["answer"] = answer.status_code
            await asyncio.sleep(0.05)
            while detector.remediator.running:
                await asyncio.wait(set(detector.remediator.running))
            seen["audit"] = (await web.get("/api/audit")).json()["audit"]

    asyncio.run(main())
    api = sim.api
    incident = next(line for line in sim.lines() if line.get("event") == "incident")
    assert (incident["kind"], incident["rule"], incident["action"]) == ("alert", "crash-loop",
                                                                        "delete-pod")
    assert incident["remediation"]["decision"] == "ask"
    assert seen["before_click"] == []  # nothing is done before somebody approves
    assert seen["action_id"] == "approve_delete-pod" and seen["answer"] == 200
    (write,) = api.writes
    crash_looping = [p["name"] for p in incident["evidence"]["pods"]
                     if "CrashLoopBackOff" in p["problems"]]
    assert write.method == "DELETE" and write.path == PODS_PATH + crash_looping[0]
    assert write.json()["preconditions"]["uid"]
    decisions = [row["decision"] for row in reversed(seen["audit"])]
    assert decisions[:3] == ["requested", "approved", "executed"]


NEW_ERROR_AFTER_AN_HOUR = """
description: An hour into watching, checkout starts failing on a dependency it never failed on.
namespace: shop
deployment: checkout
duration: 4200
pod_labels: {app: checkout}
revisions:
  - {revision: 1, at: -172800, image: registry.local/checkout:2.3.8, replicas: 2}
  - {revision: 2, at: -86400, image: registry.local/checkout:2.3.9, replicas: 2}
logs:
  - {revision: 2, from: -600, per_minute: 2, line: 'level=error msg="cache miss storm" key=k{n}'}
  - {revision: 2, from: 3700, per_minute: 6, line: 'level=error msg="payment gateway down" host=pay-gw status=503 order_id={n}'}
expect:
  incidents: []
"""


def test_a_new_error_group_of_a_notified_priority_is_notified_once(tmp_path):
    path = tmp_path / "scenarios" / "new-error.yaml"
    path.parent.mkdir()
    path.write_text(NEW_ERROR_AFTER_AN_HOUR)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n"
                     "  - name: gateway-down\n"
                     "    match: {log_pattern: 'payment gateway down'}\n"
                     "    priority: P1\n")
    sim = Sim(tmp_path, load_scenario(path))
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon(rules_file=str(rules)) as (detector, web, _):
            while sim.clock.now <= SCENARIO_EPOCH + timedelta(seconds=3900):
                await sim.tick(detector, web)
            seen["errors"] = (await web.get("/api/errors?namespace=shop")).json()
            seen["new_p1"] = (await web.get("/api/errors?priority=P1&new=true")).json()

    asyncio.run(main())
    lines = sim.lines()
    (notice,) = [r for r in lines if r.get("kind") == "error_group"]
    assert (notice["priority"], notice["rule"], notice["workloads"]) == ("P1", "gateway-down",
                                                                        ["checkout"])
    assert "payment gateway down" in notice["example"]
    (message,) = sim.sink.messages
    assert message["text"].startswith("New error (P1, rule gateway-down) in checkout in shop")
    # The error seen from the start is grouped too, P3 and not new: nothing was notified for it.
    groups = {g["rule"]: g for g in seen["errors"]["errors"]}
    assert groups["default"]["priority"] == "P3" and groups["default"]["new"] is False
    assert [g["rule"] for g in seen["new_p1"]["errors"]] == ["gateway-down"]
