"""GET /metrics after real ticks of a real Detector against the loopback fakes, parsed back with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import io

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from incident_detector.sources import kube
from incident_detector.main import build_detector
from incident_detector.run.metrics import DetectorMetrics
from incident_detector.sim.replay import (
    SCENARIO_EPOCH,
    ManualClock,
    scenario_settings,
    simulated_cluster,
)
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Response
from incident_detector.store.records import Store
from incident_detector.web.app import make_app

from harness import SCENARIO

INTO_THE_ROLLOUT = SCENARIO_EPOCH.replace(minute=1, second=50)  # 50 s after the bad rollout began


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of every sample in a Prometheus text exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


def scrape(detector) -> tuple[int, str, str]:
    with TestClient(make_app(detector)) as client:
        response = client.get("/metrics")
        return response.status_code, response.headers["content-type"], response.text


def run_scenario(*, slack: str = "sink", loki_down: bool = False, ticks: int = 1,
                 standby: bool = False):
    """Tick the detector against the bad-rollout scenario, deliver, and scrape /metrics."""
    scenario = load_scenario(SCENARIO)
    clock = ManualClock(SCENARIO_EPOCH)

    async def run():
        gone = LocalServer(lambda request: Response(404, "no_service", "text/plain"))
        with simulated_cluster(scenario, clock=clock) as cluster, gone:
            slack_url = {"sink": cluster.slack_url, "gone": gone.url + "/services/T/B/X"}[slack]
            settings = scenario_settings(
                scenario, loki_url="http://127.0.0.1:1" if loki_down else cluster.loki.url,
                slack_url=slack_url)
            async with build_detector(settings=settings,
                                      kube_api=kube.api_client_for(cluster.kube.url),
                                      stdout=io.StringIO(), clock=clock,
                                      store=Store(":memory:")) as detector:
                if standby:
                    detector.leadership = Standby()
                clock.now = INTO_THE_ROLLOUT
                for _ in range(ticks):
                    await detector.tick()
                    await detector.outbox.deliver_due()
                return scrape(detector)

    return asyncio.run(run())


class Standby:
    is_leader = False

    def status(self) -> dict:
        return {"role": "standby"}


def test_metrics_after_a_tick_that_finds_the_bad_rollout():
    code, content_type, text = run_scenario()
    assert code == 200
    assert content_type.startswith("text/plain; version=")
    parsed = samples(text)
    assert value(parsed, "incident_detector_ticks_total", role="leader", outcome="ok") == 1
    assert value(parsed, "incident_detector_ticks_total", role="leader", outcome="degraded") == 0
    assert value(parsed, "incident_detector_tick_duration_seconds_count", role="leader") == 1
    assert value(parsed, "incident_detector_tick_duration_seconds_sum", role="leader") > 0
    # Deployments and ReplicaSets at least; pods because a rollout is being judged.
    assert value(parsed, "incident_detector_source_requests_total", source="kubernetes") >= 3
    assert value(parsed, "incident_detector_source_requests_total", source="loki") >= 1
    assert value(parsed, "incident_detector_source_requests_total", source="slack") == 1
    assert not [k for k in parsed if k[0] == "incident_detector_source_failures_total"]
    assert value(parsed, "incident_detector_incidents_total", signal="error_spike") == 1
    assert value(parsed, "incident_detector_incidents_total", signal="progress_deadline") == 0
    assert value(parsed, "incident_detector_outbox_notifications", state="pending") == 0
    # stdout and Slack at least
    assert value(parsed, "incident_detector_outbox_notifications", state="delivered") >= 2
    assert value(parsed, "incident_detector_outbox_notifications", state="given_up") == 0
    assert value(parsed, "incident_detector_leader") == 1
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("incident_detector_")


def test_source_failures_by_source_and_reason_and_degraded_ticks():
    _, _, text = run_scenario(loki_down=True, ticks=2)
    parsed = samples(text)
    assert value(parsed, "incident_detector_ticks_total", role="leader", outcome="degraded") == 2
    # Every call to Loki was refused; while it backs off, a tick makes no new call to count.
    failures = value(parsed, "incident_detector_source_failures_total", source="loki",
                     reason="connection")
    assert failures >= 1
    assert value(parsed, "incident_detector_source_requests_total", source="loki") == failures
    assert value(parsed, "incident_detector_source_requests_total", source="kubernetes") >= 2
    assert not [k for k in parsed if k[0] == "incident_detector_source_failures_total"
                and dict(k[1])["source"] != "loki"]
    assert value(parsed, "incident_detector_incidents_total", signal="error_spike") == 0


def test_a_notification_given_up_shows_in_the_outbox_gauge():
    _, _, text = run_scenario(slack="gone")  # Slack answers 404 no_service: never retried
    parsed = samples(text)
    [(reason, failures)] = [(dict(k[1])["reason"], v) for k, v in parsed.items()
                            if k[0] == "incident_detector_source_failures_total"
                            and dict(k[1])["source"] == "slack"]
    assert failures == 1 and reason
    assert value(parsed, "incident_detector_outbox_notifications", state="given_up") == 1


def test_a_standby_reports_leader_zero_and_calls_nothing():
    _, _, text = run_scenario(standby=True)
    parsed = samples(text)
    assert value(parsed, "incident_detector_leader") == 0
    assert value(parsed, "incident_detector_ticks_total", role="standby", outcome="ok") == 1
    assert value(parsed, "incident_detector_source_requests_total", source="kubernetes") == 0


def test_each_detector_has_its_own_registry():
    first, second = DetectorMetrics(), DetectorMetrics()  # same names, no collision
    first.source_called("loki")
    assert first.registry.get_sample_value(
        "incident_detector_source_requests_total", {"source": "loki"}) == 1
    assert second.registry.get_sample_value(
        "incident_detector_source_requests_total", {"source": "loki"}) == 0


def test_openmetrics_when_the_scraper_asks_for_it():
    metrics = DetectorMetrics()
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
