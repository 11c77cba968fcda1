"""``make demo``: the real daemon against a simulated cluster, on this machine, in seconds.

A bundled scenario (a bad rollout of payments-api) is served over loopback by fakes that speak
the Kubernetes and Loki wire formats, and a local sink stands in for Slack. The detector is
built and run by the same wiring as in production (``run_daemon``: the HTTP server, the tick
loop and the outbox); only its clock runs faster, so that ten minutes of rollout take a minute.

Act one: the incident is detected, printed and sent to Slack, with Approve/Reject buttons
(``REMEDIATION_MODE=approve``). Act two: an on-call engineer clicks Approve (a request signed
as Slack signs it, sent to the daemon's own endpoint), the rollback runs against the simulated
apiserver (which carries it out as the Deployment controller does), and the verification
follows the Deployment until the errors are gone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import hashlib
import hmac
from urllib.parse import urlencode

import httpx

from .logs import configure_logging
from .main import build_detector, install_signal_handlers, run_daemon
from .notify.render import slack_text
from .sim.replay import SCENARIO_EPOCH, scenario_settings, simulated_cluster
from .sim.scenario import Scenario, load_scenario
from .sources import kube_http

# Start a little before the last rollout so the demo shows the calm before the incident.
LEAD_IN_SECONDS = 30.0
# The demo's own Slack app: a signing secret and an approver that exist only here.
DEMO_SIGNING_SECRET = "demo-signing-secret-not-a-real-one"
DEMO_APPROVER = "U0DEMOONCALL"


class FastClock:
    """Simulated time that runs ``speed`` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._origin = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)


def bundled_scenario() -> Path:
    return Path(str(resources.files("incident_detector") / "examples" / "bad-rollout.yaml"))


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _demo(scenario: Scenario, *, speed: float, hold: float) -> int:
    last_rollout = max((r.at for r in scenario.revisions), default=0.0)
    start_at = SCENARIO_EPOCH + timedelta(seconds=max(0.0, last_rollout - LEAD_IN_SECONDS))
    clock = FastClock(start_at, speed)
    expected = len(scenario.expect.incidents)
    with simulated_cluster(scenario, clock=clock) as cluster:
        # POLL_INTERVAL_SECONDS is wall time: 20 simulated seconds per tick, as in production.
        settings = scenario_settings(scenario, loki_url=cluster.loki.url,
                                     slack_url=cluster.slack_url,
                                     poll_interval_seconds=round(20.0 / speed, 3),
                                     remediation_mode="approve",
                                     slack_signing_secret=DEMO_SIGNING_SECRET,
                                     slack_approvers=DEMO_APPROVER, verify_timeout_seconds=300)
        async with build_detector(settings=settings, kube_api=kube_http.api_client_for(cluster.kube.url),
                                  stdout=sys.stdout, clock=clock) as detector:
            stop = asyncio.Event()
            install_signal_handlers(stop)
            ready: asyncio.Future = asyncio.get_running_loop().create_future()
            daemon = asyncio.create_task(run_daemon(detector, settings, stop=stop, on_ready=ready))
            endpoint = await ready
            _say(f"Scenario : {scenario.description}")
            _say(f"Cluster  : simulated kube-apiserver {cluster.kube.url}, Loki {cluster.loki.url}, "
                 f"Slack sink {cluster.slack.url} (time runs {speed:g}x)")
            _say(f"Status   : {endpoint.url}/status")
            _say(f"Dashboard: {endpoint.url}/  (`.venv/bin/incident-detector demo --hold 600` keeps "
                 "it open after the demo)")
            _say("Incidents are printed below as one JSON line each, as `kubectl logs` shows them.\n")
            deadline = time.monotonic() + scenario.duration / speed + 5
            while len(cluster.slack_sink.messages) < max(expected, 1) and time.monotonic() < deadline \
                    and not stop.is_set():
                await asyncio.sleep(0.1)
            incidents = list(cluster.slack_sink.messages)
            for message in incidents:
                _say("\n--- What Slack would say " + "-" * 50)
                _say(slack_text(message))
            verified = await _act_two(incidents, endpoint.url, cluster, clock=clock, speed=speed,
                                      stop=stop)
            async with httpx.AsyncClient(timeout=5) as client:
                status = (await client.get(f"{endpoint.url}/status")).json()
                audit = (await client.get(f"{endpoint.url}/api/audit")).json()["audit"]
            _say("\n--- GET /api/audit " + "-" * 56)
            for row in reversed(audit):
                _say(f"{row['when']}  {row['who']:<13} {row['decision']:<10} {row['action']} "
                     f"{row['target']}  {row['result'] or ''}  {row['reason']}")
            _say("\n--- GET /status (excerpt) " + "-" * 49)
            _say(json.dumps({k: status[k] for k in ("alive", "ready", "ticks", "rollouts", "incidents",
                                                     "outbox")}, indent=2))
            if hold > 0:
                _say(f"\nServing the dashboard {endpoint.url}/ and /status for {hold:g} more seconds "
                     "(Ctrl+C stops).")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=hold)
                except asyncio.TimeoutError:
                    pass
            stop.set()
            await daemon
            found = len(incidents)
    if found != expected:
        _say(f"\nDemo expected {expected} incident(s) but saw {found}.")
        return 1
    if expected and not verified:
        _say("\nDemo expected the approved rollback to be verified, but it was not.")
        return 1
    _say(f"\nDone: {found} incident(s) detected, printed and sent; the approved rollback ran "
         "once and was verified.")
    return 0


async def _act_two(incidents: list[dict], url: str, cluster, *, clock: FastClock, speed: float,
                   stop: asyncio.Event) -> bool:
    """The approval is clicked, as Slack would send it; then wait for the verification."""
    token = next((element["value"] for message in incidents for block in message.get("blocks", ())
                  if block.get("type") == "actions" for element in block["elements"]
                  if element["action_id"].startswith("approve")), None)
    if token is None:
        return False
    _say("\n--- Act two: the on-call engineer clicks Approve " + "-" * 27)
    body = urlencode({"payload": json.dumps({
        "type": "block_actions", "user": {"id": DEMO_APPROVER},
        "response_url": f"{cluster.slack.url}/response",
        "actions": [{"type": "button", "action_id": "approve_rollback", "value": token}]})})
    timestamp = str(int(clock().timestamp()))
    signature = "v0=" + hmac.new(DEMO_SIGNING_SECRET.encode(), f"v0:{timestamp}:{body}".encode(),
                                 hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(f"{url}/integrations/slack/actions", content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature})
    _say(f"POST /integrations/slack/actions (signed as Slack signs it): {answer.status_code}")
    deadline = time.monotonic() + 300 / speed + 10
    while time.monotonic() < deadline and not stop.is_set():
        texts = [m.get("text") or "" for m in cluster.slack_sink.messages]
        if any(t.startswith("Verification ") for t in texts):
            break
        await asyncio.sleep(0.1)
    for message in cluster.slack_sink.messages[len(incidents):]:
        _say("\n--- What Slack would say " + "-" * 50)
        _say(slack_text(message) if message.get("blocks") else message.get("text", ""))
    return any((m.get("text") or "").startswith("Verification PASS")
               for m in cluster.slack_sink.messages)


def run_demo(*, scenario_path: str | None = None, speed: float = 10.0, hold: float = 0.0) -> int:
    # Logs go to stderr in the demo so that stdout shows the incident JSON as a consumer sees it.
    configure_logging(level="info", fmt="auto", stream=sys.stderr)
    try:
        scenario = load_scenario(Path(scenario_path) if scenario_path else bundled_scenario())
    except (OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_demo(scenario, speed=speed, hold=hold))
