"""Credentials in error lines stay in the logs: the real daemon process over a bad rollout whose
error lines carry canary credentials of every kind
(tests/scenarios/credentials-in-error-lines.yaml), and no canary in anything that leaves the
process: stdout (the incident and every log line), the Slack bodies received, the Events written
to the loopback apiserver, and /status."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from harness import start_daemon, stop
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer
from incident_detector.sim.world import World

SCENARIO = Path(__file__).parent / "scenarios" / "credentials-in-error-lines.yaml"
# Every secret in the scenario's lines holds CANARY, except these encodings of one.
CANARIES = (
    "CANARY",
    "Q0FOQVJZOmJhc2ljLXB3",  # base64 of CANARY:basic-pw (a Basic credential)
    "eyJzdWIiOiJjYW5hcnkifQ",  # the JWT's payload
)


@pytest.fixture
def leaky_cluster(tmp_path):
    """Loopback kube-apiserver, Loki and Slack serving the scenario; the rollout began 100 s ago."""
    scenario = load_scenario(SCENARIO)
    world = World(scenario, t0=datetime.now(timezone.utc) - timedelta(seconds=160))
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    sink = SlackSink()
    kube_fake = KubeApiFake(world, clock)
    with LocalServer(kube_fake) as kube, LocalServer(LokiFake(world, clock)) as loki, \
            LocalServer(sink) as slack:
        yield {"kube": kube, "loki": loki, "slack": slack, "sink": sink, "kube_fake": kube_fake,
               "tmp": tmp_path}


def _events(kube_fake: KubeApiFake) -> list[dict]:
    return [event for by_name in kube_fake.events.values() for event in by_name.values()]


def test_no_canary_credential_leaves_the_process(leaky_cluster):
    cluster = leaky_cluster
    daemon = start_daemon(cluster)
    try:
        daemon.wait_for(lambda: cluster["sink"].messages and daemon.incidents()
                        and _events(cluster["kube_fake"]))
        status = httpx.get(f"{daemon.url}/status").text
    finally:
        assert stop(daemon) == 0

    stdout = daemon.out_path.read_text()
    slack = json.dumps(cluster["sink"].messages, ensure_ascii=False)
    events = json.dumps(_events(cluster["kube_fake"]), ensure_ascii=False)
    outputs = {"stdout": stdout, "slack": slack, "events": events, "/status": status}
    for where, text in outputs.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} in {where}"

    # The lines were there, redacted, and still read.
    (incident,) = daemon.incidents()
    signatures = incident["evidence"]["signatures"]
    assert len(signatures) == 3 and all(s["count"] > 0 for s in signatures)
    examples = "\n".join(s["example"] for s in signatures)
    for shown in ("password=[redacted]", "postgres://payments:[redacted]@db.internal:5432",
                  "Authorization: Bearer [redacted]", "Cookie: [redacted]", "Basic [redacted]",
                  "X-Api-Key=[redacted]", "session_id=[redacted]", '"client_secret":"[redacted]"',
                  "hooks.slack.com/services/[redacted]", '"gh":"[redacted]"', '"aws":"[redacted]"',
                  '"jwt":"[redacted]"', "-----BEGIN RSA PRIVATE KEY-----[redacted]-----END"):
        assert shown in examples, shown
    assert "[redacted]" in slack
    # The database error happened before the rollout too, with another password: the same
    # signature once redacted, so not new.
    (database,) = [s for s in signatures if "db connect failed" in s["fingerprint"]]
    assert database["new"] is False
    assert sum(s["new"] for s in signatures) == 2
