"""The daemon end to end: the real process, its real loop and HTTP server, against loopback fakes
of the kube-apiserver, Loki and Slack that serve a bad rollout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Response
from incident_detector.sim.world import World

SCENARIO = Path(__file__).parent / "scenarios" / "bad-rollout-sharp-spike.yaml"
WEBHOOK_SECRET = "XOXB-e2e-SECRET-4242"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "e2e-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
    }))
    return path


class Daemon:
    def __init__(self, proc: subprocess.Popen, port: int, out_path: Path) -> None:
        self.proc, self.port, self.out_path = proc, port, out_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[dict]:
        out = []
        for raw in self.out_path.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                out.append({"event": "<not json>", "raw": raw})
        return out

    def incidents(self) -> list[dict]:
        return [line for line in self.lines() if line.get("event") == "incident"]

    def ticks(self) -> int:
        """Ticks done so far; 0 while the HTTP server is not up yet."""
        try:
            return httpx.get(f"{self.url}/status", timeout=2).json()["ticks"]
        except httpx.TransportError:
            return 0

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early: {self.out_path.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out; output:\n{self.out_path.read_text()}")


@pytest.fixture
def cluster(tmp_path):
    scenario = load_scenario(SCENARIO)
    # Anchor the scenario so that, in wall time, the bad rollout happened 100 s ago.
    t0 = datetime.now(timezone.utc) - timedelta(seconds=160)
    world = World(scenario, t0=t0)
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    sink = SlackSink()
    kube_fake = KubeApiFake(world, clock)
    loki_fake = LokiFake(world, clock)
    with LocalServer(kube_fake) as kube, LocalServer(loki_fake) as loki, LocalServer(sink) as slack:
        yield {"scenario": scenario, "kube": kube, "loki": loki, "slack": slack, "sink": sink,
               "tmp": tmp_path}


def start_daemon(cluster, *, extra_env: dict | None = None, args: tuple[str, ...] = ()) -> Daemon:
    tmp: Path = cluster["tmp"]
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUBERNETES_", "LOKI_", "SLACK_", "NAMESPACE", "TARGET_"))}
    env.update({
        "KUBECONFIG": str(write_kubeconfig(tmp / "kubeconfig", cluster["kube"].url)),
        "LOKI_URL": cluster["loki"].url,
        "SLACK_WEBHOOK_URL": f"{cluster['slack'].url}/services/{WEBHOOK_SECRET}",
        "POLL_INTERVAL_SECONDS": "0.5",
        "HTTP_PORT": str(port),
        "HTTP_HOST": "127.0.0.1",
        "STATE_PATH": str(tmp / "state.sqlite3"),
        "LOG_LEVEL": "debug",
        **(extra_env or {}),
    })
    out_path = tmp / f"out-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "incident_detector", *args], env=env,
                            stdout=out_path.open("w"), stderr=subprocess.STDOUT)
    return Daemon(proc, port, out_path)


def stop(daemon: Daemon, sig=signal.SIGTERM) -> int:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(sig)
    try:
        return daemon.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        raise


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
    assert daemon.proc.wait(timeout=30) == 0
    assert len(daemon.incidents()) == 1
    broken = start_daemon(cluster, args=("--once",), extra_env={"LOKI_URL": f"http://127.0.0.1:{free_port()}"})
    assert broken.proc.wait(timeout=30) == 1


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
        daemon.wait_for(lambda: cluster["sink"].messages, timeout=40)
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
    second.proc.wait(timeout=30)
    assert password not in second.out_path.read_text()
