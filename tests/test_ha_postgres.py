"""Several real daemon processes on one real PostgreSQL (DATABASE_URL), against the loopback
fakes of tests/harness.py: what the shared store promises, end to end.

- the leader asks for a rollback and is SIGKILLed; the click reaches the other replica, which
  takes over and runs the rollback once, and it is verified;
- a pod replaced with an empty disk (another STATE_PATH, the same database) raises nothing again
  and shows the first pod's audit;
- an alert posted to the standby is answered 200 and gives one incident, from the leader;
- the database stopped and started under a running daemon: it stays alive and says why it is
  not ready, then nothing is lost and nothing repeated.

Each test has a schema of its own (``pg_url``) on its xdist worker's own PostgreSQL (the
``postgres_server`` fixture is per session, and each worker is a session): the test that stops
and starts that server shares it only with tests that run before or after it on the same worker,
never at the same time, so the file needs no xdist group.
"""

from __future__ import annotations

import json
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from incident_detector.sim.fakes import SlackSink, status_body
from incident_detector.sim.server import LocalServer, Request, Response

from harness import Daemon, SlackDown, make_cluster, start_daemon, stop
from test_slack_actions import click_body, signed_headers

TESTS = Path(__file__).parent
ALERT_SCENARIO = TESTS / "scenarios" / "alert-without-rollout.yaml"
ALERT_BODY = TESTS / "fixtures" / "alertmanager" / "firing-pod.json"
ALERTMANAGER_TOKEN = "am-token-0123456789abcdef"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
REMEDIATION_ENV = {
    "REMEDIATION_MODE": "approve",
    "SLACK_SIGNING_SECRET": SECRET,
    "SLACK_APPROVERS": APPROVER,
    "VERIFY_TIMEOUT_SECONDS": "60",
    "LOG_LEVEL": "info",
}


@pytest.fixture
def ha_cluster(tmp_path):
    """The bad-rollout fakes, a rollback carried out by the apiserver as the Deployment
    controller does, and a second Slack sink for the answers to a click (``response_url``)."""
    for cluster in make_cluster(tmp_path, follow_rollbacks=True):
        with LocalServer(SlackSink()) as responses:
            cluster["responses"] = responses
            yield cluster


def replica_env(pg_url: str, tmp: Path, pod: str, **extra: str) -> dict[str, str]:
    """One replica of a Deployment with leader election on the shared store."""
    return {"DATABASE_URL": pg_url, "LEADER_ELECTION": "true", "POD_NAME": pod,
            "LEASE_DURATION_SECONDS": "5", "STATE_PATH": str(tmp / f"{pod}.sqlite3"),
            # The store alone remembers: no Event read back could stand in for it.
            "KUBE_EVENTS": "false", **extra}


class LeaseKept:
    """A ``faults`` hook of the apiserver: a write of the Lease that would make one of
    ``refused`` its holder is answered 409 Conflict, as when another replica wrote first.

    The lease lasts LEASE_DURATION_SECONDS of wall time: a leader that a busy machine keeps from
    renewing for that long would lose it to the standby, and the roles a test asserts would
    change under it. With the standby refused, the roles are the test's to change (it lifts the
    refusal once the leader is dead); a leader late to renew only leads again once it does."""

    def __init__(self, *refused: str) -> None:
        self.refused = set(refused)

    def __call__(self, request: Request) -> Response | None:
        if request.method not in ("POST", "PUT") or "/leases" not in request.path:
            return None
        holder = (json.loads(request.body or b"{}").get("spec") or {}).get("holderIdentity")
        if holder not in self.refused:
            return None
        return Response(409, status_body(409, "Conflict", "the lease was written meanwhile"),
                        "application/json")


def status(daemon: Daemon) -> dict[str, Any]:
    try:
        return httpx.get(f"{daemon.url}/status", timeout=5).json()
    except httpx.TransportError:
        return {}


def role(daemon: Daemon) -> str | None:
    return (status(daemon).get("role") or {}).get("role")


def webhook_messages(cluster: dict) -> list[dict]:
    """What reached Slack's incoming webhook (not the answers to clicks)."""
    return [json.loads(request.body) for request in list(cluster["slack"].requests)
            if request.method == "POST" and request.path.startswith("/services/")]


def incident_messages(cluster: dict) -> list[dict]:
    """The incident messages (a header block first), not their follow-ups."""
    return [message for message in webhook_messages(cluster)
            if (message.get("blocks") or [{}])[0].get("type") == "header"]


def approve_token(cluster: dict) -> str | None:
    for message in incident_messages(cluster):
        for block in message.get("blocks", ()):
            if block.get("type") == "actions":
                for element in block["elements"]:
                    if element["action_id"].startswith("approve"):
                        return element["value"]
    return None


def click_approve(daemon: Daemon, cluster: dict) -> httpx.Response:
    """The Approve button clicked, as Slack posts it (signed) to the replica the Service picked."""
    body = click_body(approve_token(cluster), user=APPROVER, action_id="approve_rollback",
                      response_url=cluster["responses"].url + "/response")
    return httpx.post(f"{daemon.url}/integrations/slack/actions", content=body, timeout=10,
                      headers=signed_headers(body, at=datetime.now(timezone.utc), secret=SECRET))


def rollbacks(cluster: dict) -> list:
    """The rollbacks the apiserver applied (a dry run changes nothing and is not one)."""
    return [request for request in list(cluster["kube"].handler.writes)
            if request.param("dryRun") != "All"]


def db_rows(pg_url: str, query: str) -> list[tuple]:
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        return conn.execute(query).fetchall()


def audit(daemon: Daemon) -> list[dict]:
    """Newest first, as /api/audit lists it."""
    return httpx.get(f"{daemon.url}/api/audit", timeout=5).json()["audit"]


def verdicts(daemon: Daemon) -> list[str]:
    return [rollout["verdict"] for rollout in status(daemon).get("rollouts") or ()]


def kill(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)


def test_the_leader_asks_dies_and_the_click_on_the_other_replica_rolls_back_once(
        ha_cluster, pg_url, tmp_path):
    cluster = ha_cluster
    lease = cluster["kube"].handler.faults = LeaseKept("detector-b")
    first = start_daemon(cluster, extra_env={**REMEDIATION_ENV,
                                             **replica_env(pg_url, tmp_path, "detector-a")})
    second = None
    try:
        first.wait_for(lambda: approve_token(cluster))
        second = start_daemon(cluster, extra_env={**REMEDIATION_ENV,
                                                  **replica_env(pg_url, tmp_path, "detector-b")})
        second.wait_for(lambda: role(second) == "standby")
        first.wait_for(lambda: role(first) == "leader")
        kill(first)
        lease.refused.clear()  # the leader is dead: the standby may take the lease now

        answer = click_approve(second, cluster)
        assert answer.status_code == 200, answer.text
        second.wait_for(lambda: db_rows(pg_url, "SELECT state FROM actions") == [("verified",)]
                        and audit(second)[0]["decision"] == "verified")
        assert role(second) == "leader"
        rows = list(reversed(audit(second)))
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.proc.poll() is None:
                stop(daemon)

    # Recorded by the replica the click reached (still a standby, or already leading), carried
    # out by that replica once it leads: one write, verified.
    assert "Approved by <@U0APPROVER>" in json.dumps(answer.json())
    assert len(rollbacks(cluster)) == 1
    assert db_rows(pg_url, "SELECT executor FROM actions") == [("detector-b",)]
    assert [row["decision"] for row in rows] == ["requested", "approved", "executed", "verified"]
    assert rows[1]["who"] == APPROVER
    assert len(first.incidents()) + len(second.incidents()) == 1
    assert len(incident_messages(cluster)) == 1


def test_a_pod_replaced_with_an_empty_disk_raises_nothing_again_and_keeps_the_audit(
        ha_cluster, pg_url, tmp_path):
    cluster = ha_cluster
    first = start_daemon(cluster, extra_env={**REMEDIATION_ENV,
                                             **replica_env(pg_url, tmp_path, "detector-a")})
    try:
        first.wait_for(lambda: approve_token(cluster) and audit(first))
        first_audit = audit(first)
    finally:
        assert stop(first) == 0  # the pod is deleted (a drain, an upgrade)

    # A new pod on another node: its STATE_PATH is a new, empty disk; the database is the same.
    second = start_daemon(cluster, extra_env={**REMEDIATION_ENV,
                                              **replica_env(pg_url, tmp_path, "detector-b")})
    try:
        second.wait_for(lambda: verdicts(second) == ["already_notified"])
        ticks = second.ticks()
        second.wait_for(lambda: second.ticks() >= ticks + 3)
        assert audit(second) == first_audit
        # The button the first pod sent still works on the second.
        answer = click_approve(second, cluster)
        assert answer.status_code == 200, answer.text
        second.wait_for(lambda: any(row["decision"] == "executed" for row in audit(second)))
        second_audit = audit(second)
    finally:
        assert stop(second) == 0

    assert [row["decision"] for row in first_audit] == ["requested"]
    assert second_audit[-1] == first_audit[0]  # newest first: the first pod's row is the oldest
    assert [row["decision"] for row in reversed(second_audit)][:3] == [
        "requested", "approved", "executed"]
    assert len(rollbacks(cluster)) == 1
    assert len(first.incidents()) == 1 and second.incidents() == []
    assert len(incident_messages(cluster)) == 1
    assert db_rows(pg_url, "SELECT count(*) FROM incidents") == [(1,)]
    assert not (tmp_path / "detector-b.sqlite3").exists()  # the empty disk stayed empty


@pytest.fixture
def alert_cluster(tmp_path):
    """A crash-looping pod hours after its last rollout: nothing to blame but the alert."""
    yield from make_cluster(tmp_path, scenario_path=ALERT_SCENARIO)


def alert_body(cluster: dict) -> dict[str, Any]:
    """firing-pod.json, about the scenario's crash-looping pod, begun just now."""
    body = json.loads(ALERT_BODY.read_text())
    scenario = cluster["scenario"]
    pod = next(iter(scenario.alerts)).labels["pod"]
    about = {"namespace": scenario.namespace, "pod": pod, "container": scenario.deployment}
    starts_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    for alert in body["alerts"]:
        alert["labels"].update(about)
        alert["startsAt"] = starts_at
    body["commonLabels"].update(about)
    body["groupLabels"]["namespace"] = scenario.namespace
    return body


def test_an_alert_posted_to_the_standby_is_taken_and_gives_one_incident_from_the_leader(
        alert_cluster, pg_url, tmp_path):
    cluster = alert_cluster
    cluster["kube"].handler.faults = LeaseKept("standby")  # the standby stays one
    scenario = cluster["scenario"]
    env = {"NAMESPACE": scenario.namespace, "TARGET_DEPLOYMENT": scenario.deployment,
           "LOKI_LABEL_APP": scenario.workload, "ALERTMANAGER_TOKEN": ALERTMANAGER_TOKEN}
    leader = start_daemon(cluster, extra_env={**env, **replica_env(pg_url, tmp_path, "leader")})
    standby = None
    try:
        leader.wait_for(lambda: role(leader) == "leader" and leader.ticks() >= 1)
        standby = start_daemon(cluster, extra_env={**env,
                                                   **replica_env(pg_url, tmp_path, "standby")})
        standby.wait_for(lambda: role(standby) == "standby")
        assert leader.incidents() == []  # the alert is the only thing to go on

        answer = httpx.post(f"{standby.url}/webhooks/alertmanager", json=alert_body(cluster),
                            headers={"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"},
                            timeout=10)
        assert answer.status_code == 200, answer.text

        leader.wait_for(lambda: leader.incidents() and webhook_messages(cluster))
        ticks = leader.ticks()
        leader.wait_for(lambda: leader.ticks() >= ticks + 3)
        assert role(standby) == "standby"
        # Either replica lists what was recorded.
        alerts = [httpx.get(f"{d.url}/api/alerts", timeout=5).json() for d in (leader, standby)]
    finally:
        for daemon in (leader, standby):
            if daemon is not None:
                assert stop(daemon) == 0

    [incident] = leader.incidents()
    assert incident["kind"] == "alert" and incident["deployment"] == scenario.deployment
    assert standby.incidents() == []
    [message] = webhook_messages(cluster)
    assert "KubePodCrashLooping" in message["text"]
    assert alerts[0] == alerts[1]
    assert "KubePodCrashLooping" in json.dumps(alerts[0])


def readyz(daemon: Daemon) -> tuple[int, str]:
    answer = httpx.get(f"{daemon.url}/readyz", timeout=5)
    return answer.status_code, answer.text


def test_the_database_stopped_and_started_mid_incident_loses_and_repeats_nothing(
        cluster, pg_url, postgres_server, tmp_path):
    sink = cluster["sink"]
    slack = sink.faults = SlackDown()
    daemon = start_daemon(cluster, extra_env={"DATABASE_URL": pg_url, "KUBE_EVENTS": "false"})
    try:
        # The incident is recorded and printed; its Slack post is pending (Slack refused it).
        daemon.wait_for(lambda: daemon.incidents() and slack.refused >= 1)
        postgres_server.stop()
        try:
            daemon.wait_for(lambda: readyz(daemon)[0] == 503)
            _, readyz_text = readyz(daemon)
            assert "the store is unavailable" in readyz_text
            assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
            down = status(daemon)
            assert down["store"]["ok"] is False
            metrics_text = httpx.get(f"{daemon.url}/metrics", timeout=5).text
            assert "incident_detector_store_up 0.0" in metrics_text
            # Slack is back while the store is not: ticks go on, degraded, and nothing that
            # could not be recorded as sent is sent.
            slack.down = False
            ticks = daemon.ticks()
            daemon.wait_for(lambda: daemon.ticks() >= ticks + 3)
            assert readyz(daemon)[0] == 503
        finally:
            postgres_server.start()

        daemon.wait_for(lambda: sink.messages)
        daemon.wait_for(lambda: readyz(daemon)[0] == 200)
        ticks = daemon.ticks()
        daemon.wait_for(lambda: daemon.ticks() >= ticks + 4)
        back = status(daemon)
    finally:
        assert stop(daemon) == 0

    assert back["store"]["ok"] is True and back["outbox"]["pending"] == 0
    assert len(daemon.incidents()) == 1
    assert len(sink.messages) == 1
    assert db_rows(pg_url, "SELECT count(*) FROM incidents") == [(1,)]
    assert db_rows(pg_url, "SELECT channel, delivered_at IS NOT NULL FROM outbox "
                           "WHERE channel = 'slack'") == [("slack", True)]
    events = [(line.get("event"), line.get("source")) for line in daemon.lines()]
    assert ("source.failed", "store") in events and ("source.recovered", "store") in events
    # The database's password is in DATABASE_URL only: never in a line, an answer or a metric.
    for text in (daemon.out_path.read_text(), readyz_text, json.dumps(down), metrics_text):
        assert postgres_server.password not in text
