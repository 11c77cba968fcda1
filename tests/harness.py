"""Runs the real daemon process (`python -m incident_detector`) against loopback fakes of the
kube-apiserver, Loki and Slack that serve a scenario: used by the end-to-end and restart tests."""

from __future__ import annotations

import itertools
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

from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World

SCENARIO = Path(__file__).parent / "scenarios" / "bad-rollout-sharp-spike.yaml"
WEBHOOK_SECRET = "XOXB-e2e-SECRET-4242"


# How long a test waits for a daemon to do what normally takes a few seconds: only a failing
# test waits it out, so it is generous for CI machines busy with parallel workers.
DEADLINE_SECONDS = 60.0
# How many of the daemon's last lines a failed wait shows.
LOG_TAIL_LINES = 60

# Numbers the output files of the daemons a test starts.
_daemons = itertools.count(1)


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
    def __init__(self, proc: subprocess.Popen, out_path: Path) -> None:
        self.proc, self.out_path = proc, out_path
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the daemon listens on, once it says so (it binds HTTP_PORT=0: a port picked
        here and bound later could be taken by another test running at the same time)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while self._port is None:
            self._port = next((line["port"] for line in self.lines()
                               if line.get("event") == "http.listening"), None)
            if self._port is not None:
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early (code {self.proc.returncode}):\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not listening after {DEADLINE_SECONDS:g} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)
        return self._port

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

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the daemon wrote, to tell why a wait failed."""
        try:
            written = self.out_path.read_text().splitlines()
        except OSError as error:
            return f"<no output: {error}>"
        skipped = len(written) - lines
        head = [f"... ({skipped} earlier lines in {self.out_path})"] if skipped > 0 else []
        return "\n".join(head + written[-lines:])

    def wait_for(self, predicate, timeout: float = DEADLINE_SECONDS, what: str | None = None) -> None:
        """Poll ``predicate`` until it holds. The deadline only bounds a test that is failing:
        a slow machine makes the wait longer, never the test fail."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early (code {self.proc.returncode}) while "
                                     f"waiting for {what or predicate!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise AssertionError(f"waited {timeout:g} s for {what or predicate!r}; the daemon's "
                             f"last lines:\n{self.log_tail()}")


def make_cluster(tmp_path: Path, *, scenario_path: Path = SCENARIO,
                 follow_rollbacks: bool = False):
    """A generator of the fakes for the bad-rollout scenario (used by the ``cluster`` fixture),
    or for ``scenario_path``. With ``follow_rollbacks`` a rollback written to the apiserver
    changes the world Loki serves too, so that its verification can pass."""
    scenario = load_scenario(scenario_path)
    # Anchor the scenario so that, in wall time, the bad rollout happened 100 s ago.
    t0 = datetime.now(timezone.utc) - timedelta(seconds=160)
    world = World(scenario, t0=t0)
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    sink = SlackSink()
    loki_fake = LokiFake(world, clock)
    kube_fake = KubeApiFake(world, clock, on_world_change=(
        (lambda changed: setattr(loki_fake, "world", changed)) if follow_rollbacks else None))
    with LocalServer(kube_fake) as kube, LocalServer(loki_fake) as loki, LocalServer(sink) as slack:
        yield {"scenario": scenario, "kube": kube, "loki": loki, "slack": slack, "sink": sink,
               "tmp": tmp_path}


def start_daemon(cluster, *, extra_env: dict | None = None, args: tuple[str, ...] = ()) -> Daemon:
    tmp: Path = cluster["tmp"]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUBERNETES_", "LOKI_", "SLACK_", "NAMESPACE", "TARGET_"))}
    env.update({
        "KUBECONFIG": str(write_kubeconfig(tmp / "kubeconfig", cluster["kube"].url)),
        "LOKI_URL": cluster["loki"].url,
        "SLACK_WEBHOOK_URL": f"{cluster['slack'].url}/services/{WEBHOOK_SECRET}",
        "POLL_INTERVAL_SECONDS": "0.5",
        "HTTP_PORT": "0",
        "HTTP_HOST": "127.0.0.1",
        "STATE_PATH": str(tmp / "state.sqlite3"),
        "LOG_LEVEL": "debug",
        **(extra_env or {}),
    })
    out_path = tmp / f"out-{next(_daemons)}.log"
    proc = subprocess.Popen([sys.executable, "-m", "incident_detector", *args], env=env,
                            stdout=out_path.open("w"), stderr=subprocess.STDOUT)
    return Daemon(proc, out_path)


def stop(daemon: Daemon, sig=signal.SIGTERM) -> int:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(sig)
    try:
        return daemon.proc.wait(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        raise


class SlackDown:
    """A ``faults`` hook: Slack answers 503 while ``down``, until the test brings it back, and
    counts what it refused. (Not "the first N attempts": the retries would then reach Slack on
    their own schedule.)"""

    def __init__(self) -> None:
        self.down = True
        self.refused = 0

    def __call__(self, request: Request) -> Response | None:
        if not self.down:
            return None
        self.refused += 1
        return Response(503, "service unavailable", "text/plain")
