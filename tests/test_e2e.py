"""The daemon end to end: the real process, its real loop and HTTP server, against loopback fakes
of the kube-apiserver, Loki and Slack that serve a bad rollout."""

from __future__ import annotations

import json
import signal

import httpx

from harness import DEADLINE_SECONDS, WEBHOOK_SECRET, free_port, start_daemon, stop
from incident_detector.sim.server import Response


def test_bad_rollout_gives_one_incident_one_slack_post_and_clean_exit(cluster):
    daemon = start_daemon(cluster)
    try:
        daemon.wait_for(lambda: cluster["sink"].messages and daemon.incidents())
        # Several more ticks: the incident must not repeat.
        first_ticks = daemon.ticks()
        daemon.wait_for(lambda: daemon.ticks() >= first_ticks + 4)

        assert httpx.get(f"{daemon.url}/healthz").status_code == 200
        assert httpx.get(f"{daemon.url}/readyz").status_code == 200
        status = httpx.get(f"{daemon.url}/status").json()
        assert status["settings"]["namespace"] == ["demo-aiops"]
        assert status["settings"]["slack_webhook_url"] == "set"
        assert status["last_tick"]["duration_seconds"] is not None
        assert status["sources"]["kubernetes"]["ok"] and status["sources"]["loki"]["ok"]
        assert status["sources"]["slack"]["last_success_at"]
        rollout = status["rollouts"][0]
        assert rollout["revision"] == 2 and rollout["verdict"] == "already_notified"
        assert rollout["error_count"] >= 5
        assert [i["revision"] for i in status["incidents"]] == [2]
        assert status["outbox"]["pending"] == 0
        assert httpx.post(f"{daemon.url}/status").status_code == 405  # read-only
    finally:
        code = stop(daemon)
    assert code == 0

    incidents = daemon.incidents()
    assert len(incidents) == 1
    incident = incidents[0]
    assert incident["namespace"] == "demo-aiops" and incident["deployment"] == "payments-api"
    assert incident["revision"] == 2 and isinstance(incident["revision"], int)
    assert incident["recommended_action"].count("kubectl rollout undo deployment/payments-api "
                                                "-n demo-aiops --to-revision=1") == 1
    for key in ("replicaset", "rollout_started_at", "error_count", "threshold", "window_seconds",
                "detected_at", "summary"):
        assert key in incident
    assert len(cluster["sink"].messages) == 1
    posted = cluster["sink"].messages[0]
    assert posted["text"] and posted["blocks"]
    # No line of the whole run carries the webhook secret.
    assert WEBHOOK_SECRET not in daemon.out_path.read_text()
    assert WEBHOOK_SECRET not in json.dumps(status)
    # One start-up line with the effective settings; every line is JSON (not a terminal).
    lines = daemon.lines()
    assert [line["event"] for line in lines].count("starting") == 1
    assert all(line["event"] != "<not json>" for line in lines), lines
    assert lines[-1]["event"] == "shutdown.complete"


def test_sigint_also_stops_cleanly(cluster):
    daemon = start_daemon(cluster)
    daemon.wait_for(lambda: any(line.get("event") == "http.listening" for line in daemon.lines()))
    assert stop(daemon, signal.SIGINT) == 0


def test_restart_with_the_same_store_does_not_repeat(cluster):
    first = start_daemon(cluster)
    first.wait_for(lambda: cluster["sink"].messages)
    assert stop(first) == 0
    second = start_daemon(cluster)
    second.wait_for(lambda: second.ticks() >= 3)
    assert stop(second) == 0
    assert len(cluster["sink"].messages) == 1
    assert second.incidents() == []


def test_loki_down_is_degraded_not_an_incident_then_recovers(cluster):
    failing = {"on": True}
    loki_fake = cluster["loki"].handler

    def flaky(request):
        if failing["on"] and request.path.startswith("/loki/api/v1/query"):
            return Response(503, "upstream unavailable", "text/plain")
        return loki_fake(request)

    cluster["loki"].handler = flaky
    daemon = start_daemon(cluster)
    try:
        daemon.wait_for(lambda: daemon.ticks() >= 2)
        status = httpx.get(f"{daemon.url}/status").json()
        assert status["last_tick"]["degraded"] and not status["sources"]["loki"]["ok"]
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200  # alive
        assert httpx.get(f"{daemon.url}/readyz").status_code == 503  # but cannot do its job
        assert status["rollouts"][0]["verdict"] == "no_verdict"
        assert daemon.incidents() == [] and cluster["sink"].messages == []
        failing["on"] = False
        daemon.wait_for(lambda: daemon.incidents())
    finally:
        assert stop(daemon) == 0
    events = [line["event"] for line in daemon.lines()]
    # logged when the failure starts and when it ends, not on every tick
    assert events.count("source.failed") == 1 and events.count("source.recovered") == 1


def test_once_runs_one_tick_and_reports_failure(cluster):
    daemon = start_daemon(cluster, args=("--once",))
    assert daemon.proc.wait(timeout=DEADLINE_SECONDS) == 0
    assert len(daemon.incidents()) == 1
    broken = start_daemon(cluster, args=("--once",), extra_env={"LOKI_URL": f"http://127.0.0.1:{free_port()}"})
    assert broken.proc.wait(timeout=DEADLINE_SECONDS) == 1


def test_no_secret_in_any_log_line_or_status_even_when_everything_fails(cluster):
    """Loki and Slack fail at first, with error bodies that echo the credentials back."""
    token, password = "LOKI-TOKEN-sEcReT-77", "B4sic-PassW0rd-sEcReT"
    loki_fake, slack_fake = cluster["loki"].handler, cluster["sink"]
    failures = {"loki": 4, "slack": 3}

    def loki(request):
        if failures["loki"] > 0 and request.path.startswith("/loki/api/v1/query"):
            failures["loki"] -= 1
            return Response(401, f"bad credentials: {request.headers.get('authorization')}",
                            "text/plain")
        return loki_fake(request)

    def slack(request):
        if failures["slack"] > 0:
            failures["slack"] -= 1
            return Response(500, f"internal error while posting to {request.path}", "text/plain")
        return slack_fake(request)

    cluster["loki"].handler = loki
    cluster["slack"].handler = slack
    daemon = start_daemon(cluster, extra_env={"LOKI_BEARER_TOKEN": token})
    try:
        daemon.wait_for(lambda: cluster["sink"].messages)
        status = httpx.get(f"{daemon.url}/status").text
    finally:
        assert stop(daemon) == 0
    output = daemon.out_path.read_text()
    assert "source.failed" in output and "loki" in output  # the failures were logged...
    for secret in (token, WEBHOOK_SECRET):
        assert secret not in output, secret  # ...without any secret
        assert secret not in status, secret
    # and basic auth in the URL is never shown either
    second = start_daemon(cluster, extra_env={
        "LOKI_URL": cluster["loki"].url.replace("http://", f"http://reader:{password}@")},
        args=("--once",))
    second.proc.wait(timeout=DEADLINE_SECONDS)
    assert password not in second.out_path.read_text()
