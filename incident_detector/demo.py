"""``make demo``: the real daemon against a simulated cluster, on this machine, in seconds.

A bundled scenario (a bad rollout of payments-api) is served over loopback by fakes that speak
the Kubernetes and Loki wire formats, and a local sink stands in for Slack. The detector is
built and run by the same wiring as in production (``run_daemon``: the HTTP server, the tick
loop and the outbox); only its clock runs faster, so that ten minutes of rollout take a minute.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import httpx

from .logs import configure_logging
from .main import build_detector, install_signal_handlers, run_daemon
from .notify.render import slack_text
from .sim.replay import SCENARIO_EPOCH, scenario_settings, simulated_cluster
from .sim.scenario import Scenario, load_scenario
from .sources import kube

# Start a little before the last rollout so the demo shows the calm before the incident.
LEAD_IN_SECONDS = 30.0


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
                                     poll_interval_seconds=round(20.0 / speed, 3))
        async with build_detector(settings=settings, kube_api=kube.api_client_for(cluster.kube.url),
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
            _say("Incidents are printed below as one JSON line each, as `kubectl logs` shows them.\n")
            deadline = time.monotonic() + scenario.duration / speed + 5
            while len(cluster.slack_sink.messages) < max(expected, 1) and time.monotonic() < deadline \
                    and not stop.is_set():
                await asyncio.sleep(0.1)
            for message in cluster.slack_sink.messages:
                _say("\n--- What Slack would say " + "-" * 50)
                _say(slack_text(message))
            async with httpx.AsyncClient(timeout=5) as client:
                status = (await client.get(f"{endpoint.url}/status")).json()
            _say("\n--- GET /status (excerpt) " + "-" * 49)
            _say(json.dumps({k: status[k] for k in ("alive", "ready", "ticks", "rollouts", "incidents",
                                                     "outbox")}, indent=2))
            if hold > 0:
                _say(f"\nServing {endpoint.url}/status for {hold:g} more seconds (Ctrl+C stops).")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=hold)
                except asyncio.TimeoutError:
                    pass
            stop.set()
            await daemon
            found = len(cluster.slack_sink.messages)
    if found != expected:
        _say(f"\nDemo expected {expected} incident(s) but saw {found}.")
        return 1
    _say(f"\nDone: {found} incident(s) detected, printed and sent; nothing left in the outbox.")
    return 0


def run_demo(*, scenario_path: str | None = None, speed: float = 10.0, hold: float = 0.0) -> int:
    # Logs go to stderr in the demo so that stdout shows the incident JSON as a consumer sees it.
    configure_logging(level="info", fmt="auto", stream=sys.stderr)
    try:
        scenario = load_scenario(Path(scenario_path) if scenario_path else bundled_scenario())
    except (OSError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_demo(scenario, speed=speed, hold=hold))
