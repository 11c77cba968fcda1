"""/healthz, /readyz and /status of a real Detector, through Starlette's TestClient."""

from __future__ import annotations

import asyncio
import io

from starlette.testclient import TestClient

from incident_detector.sources import kube
from incident_detector.config import load_settings
from incident_detector.main import build_detector
from incident_detector.sim.replay import (
    SCENARIO_EPOCH,
    ManualClock,
    scenario_settings,
    simulated_cluster,
)
from incident_detector.sim.scenario import load_scenario
from incident_detector.store.records import Store
from incident_detector.web.app import make_app

from harness import SCENARIO


def detector_for(settings, **kw):
    return build_detector(settings=settings, kube_api=kube.api_client_for("http://127.0.0.1:1"),
                          stdout=io.StringIO(), store=Store(":memory:"), **kw)


class Monotonic:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_healthz_turns_503_when_no_tick_finished_for_too_long():
    settings = load_settings({"LOKI_URL": "http://127.0.0.1:1", "STALL_AFTER_SECONDS": "30"})
    monotonic = Monotonic()

    async def run():
        async with detector_for(settings, monotonic=monotonic) as detector:
            with TestClient(make_app(detector)) as client:
                fresh = client.get("/healthz").status_code, client.get("/readyz").status_code
                monotonic.seconds += 30  # still within STALL_AFTER_SECONDS
                within = client.get("/healthz").status_code
                monotonic.seconds += 0.5
                stalled = client.get("/healthz")
                return fresh, within, (stalled.status_code, stalled.text), \
                    client.get("/status").json()

    (healthz, readyz), within, (code, text), status = asyncio.run(run())
    assert healthz == 200  # just started: alive
    assert readyz == 503  # no tick yet: it cannot do its job
    assert within == 200
    assert code == 503 and "stalled" in text
    assert status["alive"] is False


def test_status_after_a_tick_shows_settings_sources_rollouts_and_incidents():
    scenario = load_scenario(SCENARIO)
    clock = ManualClock(SCENARIO_EPOCH)

    async def run():
        with simulated_cluster(scenario, clock=clock) as cluster:
            settings = scenario_settings(scenario, loki_url=cluster.loki.url, slack_url=None,
                                         loki_bearer_token="TOP-SECRET-TOKEN")
            async with build_detector(settings=settings,
                                      kube_api=kube.api_client_for(cluster.kube.url),
                                      stdout=io.StringIO(), clock=clock,
                                      store=Store(":memory:")) as detector:
                clock.now = SCENARIO_EPOCH.replace(minute=1, second=50)  # 50 s into the rollout
                await detector.tick()
                with TestClient(make_app(detector)) as client:
                    return (client.get("/status").json(), client.get("/readyz").status_code,
                            client.post("/status").status_code, client.get("/nope").status_code)

    status, ready, post, missing = asyncio.run(run())
    assert ready == 200 and post == 405 and missing == 404
    assert status["settings"]["loki_bearer_token"] == "set"
    assert "TOP-SECRET-TOKEN" not in str(status)
    assert status["last_tick"]["duration_seconds"] >= 0 and not status["last_tick"]["degraded"]
    assert status["sources"]["kubernetes"]["ok"] and status["sources"]["loki"]["last_success_at"]
    [rollout] = status["rollouts"]
    assert rollout["revision"] == 2 and rollout["in_window"] and rollout["error_count"] >= 5
    assert [i["revision"] for i in status["incidents"]] == [2]
    assert status["role"]["role"] == "leader"
