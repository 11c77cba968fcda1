"""The worst day: every dependency fails at random (seeded), the detector keeps its promises.

The real detector (production wiring, real clients over loopback HTTP) runs for many ticks on a
simulated clock against a world with two bad revisions, while the kube-apiserver, Loki and Slack
answer with 5xx, 429 (with Retry-After), truncated bodies, bodies of the wrong shape and answers
slower than the client's timeout. It must never stop, notify each bad revision exactly once on
every channel, and not grow in memory.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

from incident_detector.sources import kube
from incident_detector.main import build_detector
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.store.records import Store

SCENARIO = Path(__file__).parent / "scenarios" / "second-bad-revision-after-incident.yaml"
TICKS = 100
# Answers slower than the clients' timeouts below. A read from Kubernetes or Loki that a loaded
# machine makes time out is one more fault of the same kind, which the test is about; a Slack
# message that arrived but timed out would be sent twice, so Slack's timeout is generous.
SLOW = 0.6
FAST_TIMEOUT = 0.4
SLACK_TIMEOUT = 5.0
SLACK_SLOW = SLACK_TIMEOUT + 1.0


class RandomFaults:
    """A seeded ``faults`` hook: with probability ``rate`` a request gets one of ``menu``."""

    def __init__(self, seed: int, rate: float, menu: list[Response], *,
                 first: tuple[Response, ...] = ()) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.menu = menu
        self.first = list(first)  # answered before any chance is drawn
        self.injected = 0
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response | None:
        with self._lock:
            if self.first:
                self.injected += 1
                return self.first.pop(0)
            if self.rng.random() >= self.rate:
                return None
            choice = self.rng.choice(self.menu)
            if request.method != "GET" and 200 <= choice.status < 300 and not choice.delay:
                # A server that answers 2xx to a write has stored it: a garbled 2xx body to a
                # POST is not a fault the fake can stage without lying about its state.
                return None
            self.injected += 1
            return choice


def kube_menu() -> list[Response]:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}
    return [
        Response(500, status),
        Response(503, "service unavailable", "text/plain"),
        Response(429, {**status, "reason": "TooManyRequests", "code": 429},
                 headers={"Retry-After": "1"}),
        Response(200, b'{"kind": "ReplicaSetList", "items": [{"metadata": {"na'),  # truncated
        Response(200, {"kind": "Surprise", "items": "not a list"}),              # wrong shape
        Response(200, b"", delay=SLOW),                                            # too slow
    ]


def loki_menu() -> list[Response]:
    return [
        Response(503, "upstream connect error", "text/plain"),
        Response(502, "bad gateway", "text/plain"),
        Response(429, "Ingestion rate limit exceeded", "text/plain", headers={"Retry-After": "0"}),
        Response(200, b'{"status":"success","data":{"resultType":"vec'),           # truncated
        Response(200, {"status": "success", "data": {"resultType": "matrix", "result": {}}}),
        Response(200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"app": "payments-api"}, "value": [0, "NaN-ish"]}]}}),     # odd value
        Response(200, b"", delay=SLOW),
    ]


def slack_menu() -> list[Response]:
    return [
        Response(503, "service unavailable", "text/plain"),
        Response(500, "internal error", "text/plain"),
        Response(429, "rate limited", "text/plain", headers={"Retry-After": "30"}),
        Response(200, b"", delay=SLACK_SLOW),
    ]


def keys_of(records) -> list[tuple]:
    return [(r["namespace"], r["deployment"], r["revision"]) for r in records]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_faults_everywhere_nothing_lost_nothing_repeated(seed: int):
    scenario = load_scenario(SCENARIO)
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    kube_faults = RandomFaults(seed, 0.2, kube_menu())
    loki_faults = RandomFaults(seed + 100, 0.2, loki_menu())
    menu = slack_menu()
    slack_faults = RandomFaults(seed + 200, 0.35, menu, first=(menu[0], menu[2]))
    kube_fake = KubeApiFake(world, clock, faults=kube_faults)
    sink = SlackSink(faults=slack_faults)
    out = io.StringIO()

    async def run() -> list:
        with LocalServer(kube_fake) as kube_server, \
                LocalServer(LokiFake(world, clock, faults=loki_faults)) as loki_server, \
                LocalServer(sink) as slack_server:
            settings = scenario_settings(
                scenario, loki_url=loki_server.url, slack_url=f"{slack_server.url}/services/T/B/X",
                kube_timeout_seconds=FAST_TIMEOUT, loki_timeout_seconds=FAST_TIMEOUT,
                slack_timeout_seconds=SLACK_TIMEOUT,
                slack_max_attempts=1, kube_events=True, notify_max_age_minutes=600,
                # The change timeline's Deployment changes ride on the Deployment watch here;
                # its own watches' failures are covered by test_changes_watch.py (each kind
                # would add a request per tick, and a faulty one's timeout, to a 100-tick run).
                change_kinds="Deployment")
            store = Store(":memory:")
            reports = []
            async with build_detector(settings=settings, kube_api=kube.api_client_for(kube_server.url),
                                      stdout=out, clock=clock, store=store) as detector:
                for tick in range(TICKS):
                    if tick == 30:
                        tracemalloc.start(1)
                        before = _own_memory()
                    reports.append(await detector.tick())
                    await detector.outbox.deliver_due()
                    clock.now += timedelta(seconds=settings.poll_interval_seconds)
                after = _own_memory()
                tracemalloc.stop()
                status = detector.status()
            store.close()
            return [reports, before, after, status]

    reports, before, after, status = asyncio.run(run())

    # The faults happened, the loop never stopped, and it noticed.
    assert kube_faults.injected > 10 and loki_faults.injected > 0 and slack_faults.injected >= 2
    assert len(reports) == TICKS
    assert any(r.degraded for r in reports)
    # Every bad revision exactly once on stdout, in Slack and as an Event.
    stdout_records = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = [("demo-aiops", "payments-api", 2), ("demo-aiops", "payments-api", 3)]
    assert keys_of(stdout_records) == expected
    assert sorted(m["text"].split(" rev ")[1].split()[0] for m in sink.messages) == ["2", "3"]
    assert len(sink.messages) == 2
    events = [event for by_name in kube_fake.events.values() for event in by_name.values()]
    assert len(events) == 2
    assert status["outbox"]["pending"] == 0 and status["outbox"]["given_up"] == []
    # The detector's own memory (its modules, not the test's fakes) did not grow.
    assert after - before < 256 * 1024, f"grew by {after - before} bytes over {TICKS - 30} ticks"


def _own_memory() -> int:
    """Bytes currently allocated by the detector's own code, fakes and tests excluded."""
    snapshot = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(True, "*/incident_detector/*"),
        tracemalloc.Filter(False, "*/incident_detector/sim/*"),
    ])
    return sum(stat.size for stat in snapshot.statistics("filename"))
