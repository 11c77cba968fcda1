"""An approved rollback runs exactly once even when the process dies half-way through it.

The real daemon process is started in ``REMEDIATION_MODE=approve`` against loopback fakes. The
apiserver here enforces a JSON patch's ``test`` op on the Deployment's resourceVersion as
kube-apiserver does: a patch naming the current version is applied (template replaced,
resourceVersion bumped) and later GETs of the Deployment return what it wrote; a patch naming
another version gets the recorded 422. An Approve click (signed as Slack signs it) starts the
rollback, the apiserver holds one request of it, and the process is SIGKILLed while it is held:

- the PATCH itself (the write landed, its answer never came back): after a restart with the
  same STATE_PATH the entry, left ``executing``, is resumed; the same patch is refused as stale,
  the refetched Deployment already has the target template, and the outcome is
  ``already_done``: one write applied in all;
- the GET of the target ReplicaSet (approved and recorded, nothing written yet): after the
  restart the one PATCH is sent and applied.

Only the single-object GET of the Deployment returns the written state; the detector's own
list/watch keep seeing the simulated world, which does not roll back (the verification, if it
gets that far, fails honestly).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World, resource_version_at

from harness import DEADLINE_SECONDS, SCENARIO, Daemon, start_daemon, stop
from test_slack_actions import click_body, signed_headers

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
STALE_PRECONDITION = json.loads(
    (Path(__file__).parent / "fixtures" / "kubernetes"
     / "deployment_patch_stale_precondition.json").read_text())["response"]
REMEDIATION_ENV = {
    "REMEDIATION_MODE": "approve",
    "SLACK_SIGNING_SECRET": SECRET,
    "SLACK_APPROVERS": APPROVER,
    "VERIFY_TIMEOUT_SECONDS": "10",
    # The held request must still be in flight when the process is killed: the daemon's own
    # timeout for it is far longer than any pause between the hold and the kill.
    "KUBE_TIMEOUT_SECONDS": "300",
    "LOG_LEVEL": "info",
}


class EnforcingApiServer:
    """The simulated world for reads; PATCHes of the scenario's Deployment are checked against
    its current resourceVersion and applied, as a real API server would."""

    def __init__(self, world: World, clock, *, namespace: str, deployment: str) -> None:
        self.reads = KubeApiFake(world, clock)
        self.world = world
        self.clock = clock
        self.deployment_path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"
        self.replicasets_path = f"/apis/apps/v1/namespaces/{namespace}/replicasets/"
        self.namespace = namespace
        self._lock = threading.Lock()
        # After a write: the Deployment's resourceVersion and template as written.
        self.written: dict[str, Any] | None = None
        self.patches: list[list[dict[str, Any]]] = []  # every PATCH received
        self.applied: list[list[dict[str, Any]]] = []  # those that were applied
        self.refused: list[list[dict[str, Any]]] = []  # those refused on their precondition
        # "patch" or "replicaset": the next such request is held (once) until released.
        self.hold: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()

    def current(self) -> dict[str, Any]:
        """The Deployment as a GET returns it now: the world's, or the world's with the write."""
        body = self.world.deployment(self.namespace, self.clock())
        assert body is not None
        if self.written is not None:
            body["metadata"]["resourceVersion"] = self.written["resourceVersion"]
            body["spec"]["template"] = json.loads(json.dumps(self.written["template"]))
        return body

    def _hold(self, what: str) -> None:
        with self._lock:
            if self.hold != what:
                return
            self.hold = None
        self.held.set()
        # Answered only once the test releases it (after the kill; enforcing_cluster always
        # does on the way out), never on a timer that a slow kill could lose to.
        self.release.wait()

    def __call__(self, request: Request) -> Response:
        if request.method == "PATCH" and request.path == self.deployment_path:
            return self._patch(request)
        if request.method == "GET" and request.path == self.deployment_path \
                and request.param("watch") in (None, "", "false", "0"):
            with self._lock:
                return Response(200, self.current(), "application/json")
        if request.method == "GET" and request.path.startswith(self.replicasets_path):
            self._hold("replicaset")
        return self.reads(request)

    def _patch(self, request: Request) -> Response:
        assert request.headers["content-type"].startswith("application/json-patch+json")
        ops = json.loads(request.body)
        with self._lock:
            self.patches.append(ops)
            current = self.current()
            version = current["metadata"]["resourceVersion"]
            tests = [op for op in ops if op["op"] == "test"]
            if any(op["path"] != "/metadata/resourceVersion" or op["value"] != version
                   for op in tests):
                self.refused.append(ops)
                return Response(STALE_PRECONDITION["status"], STALE_PRECONDITION["json"],
                                STALE_PRECONDITION["content_type"])
            [template] = [op["value"] for op in ops
                          if op["op"] == "replace" and op["path"] == "/spec/template"]
            now_version = int(resource_version_at(self.clock()))
            self.written = {"resourceVersion": str(max(int(version) + 1, now_version)),
                            "template": template}
            self.applied.append(ops)
            answer = self.current()
        # The write has landed; its answer is what may never come back.
        self._hold("patch")
        return Response(200, answer, "application/json")


@contextmanager
def enforcing_cluster(tmp_path: Path):
    scenario = load_scenario(SCENARIO)
    # As in harness.make_cluster: in wall time, the bad rollout happened 100 s ago.
    t0 = datetime.now(timezone.utc) - timedelta(seconds=160)
    world = World(scenario, t0=t0)
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    api = EnforcingApiServer(world, clock, namespace=scenario.namespace,
                             deployment=scenario.deployment)
    sink = SlackSink()
    with LocalServer(api) as kube, LocalServer(LokiFake(world, clock)) as loki, \
            LocalServer(sink) as slack:
        try:
            yield {"scenario": scenario, "kube": kube, "loki": loki, "slack": slack,
                   "sink": sink, "tmp": tmp_path, "api": api}
        finally:
            api.release.set()  # a held handler thread must not outlive the test


def approve_token(sink: SlackSink) -> str | None:
    for message in list(sink.messages):
        for block in message.get("blocks", ()):
            if block.get("type") == "actions":
                for element in block["elements"]:
                    if element["action_id"].startswith("approve"):
                        return element["value"]
    return None


def click_approve(daemon: Daemon, cluster: dict) -> None:
    token = approve_token(cluster["sink"])
    body = click_body(token, user=APPROVER, action_id="approve_rollback",
                      response_url=cluster["slack"].url + "/response")
    answer = httpx.post(f"{daemon.url}/integrations/slack/actions", content=body,
                        timeout=DEADLINE_SECONDS,
                        headers=signed_headers(body, at=datetime.now(timezone.utc),
                                               secret=SECRET))
    assert answer.status_code == 200, answer.text


def kill(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=DEADLINE_SECONDS)


def journal(state_path: Path) -> list[tuple[str, str | None, str]]:
    with sqlite3.connect(state_path) as db:
        return db.execute("SELECT state, result, action FROM actions ORDER BY id").fetchall()


def _audit_rows(state_path: Path) -> list[dict]:
    with sqlite3.connect(state_path) as db:
        return [{"decision": d, "result": r}
                for d, r in db.execute("SELECT decision, result FROM audit ORDER BY id")]


def audit(daemon: Daemon) -> list[dict]:
    """Oldest first."""
    answer = httpx.get(f"{daemon.url}/api/audit", timeout=DEADLINE_SECONDS)
    return list(reversed(answer.json()["audit"]))


def executed(daemon: Daemon) -> list[dict]:
    try:
        return [row for row in audit(daemon) if row["decision"] == "executed"]
    except httpx.TransportError:
        return []


def kill_mid_action_then_restart(tmp_path: Path, *, hold: str) -> dict:
    """Approve, SIGKILL while ``hold`` is held, start again on the same store: what happened."""
    seen: dict[str, Any] = {}
    with enforcing_cluster(tmp_path) as cluster:
        api: EnforcingApiServer = cluster["api"]
        state_path = tmp_path / "state.sqlite3"
        first = start_daemon(cluster, extra_env=REMEDIATION_ENV)
        try:
            first.wait_for(lambda: approve_token(cluster["sink"]))
            api.hold = hold
            click_approve(first, cluster)
            assert api.held.wait(DEADLINE_SECONDS), \
                f"the {hold} was never requested:\n{first.out_path.read_text()}"
            kill(first)
        finally:
            if first.proc.poll() is None:
                kill(first)
        seen["first_audit"] = [row["decision"] for row in _audit_rows(state_path)]
        seen["journal_after_kill"] = journal(state_path)
        seen["applied_before_restart"] = len(api.applied)
        seen["patches_before_restart"] = len(api.patches)
        api.release.set()  # the held thread answers a dead connection

        second = start_daemon(cluster, extra_env=REMEDIATION_ENV)
        try:
            second.wait_for(lambda: executed(second))
            seen["audit"] = audit(second)
        finally:
            exit_code = stop(second)
        assert exit_code == 0
        seen["journal"] = journal(state_path)
        seen["lines"] = second.lines()
        seen["patches"] = list(api.patches)
        seen["applied"] = list(api.applied)
        seen["refused"] = list(api.refused)
    return seen


def test_killed_while_the_patch_is_in_flight_the_restart_finds_it_done(tmp_path):
    seen = kill_mid_action_then_restart(tmp_path, hold="patch")

    # When it died: approved and begun, the write landed, no outcome recorded.
    assert seen["first_audit"] == ["requested", "approved"]
    assert seen["journal_after_kill"] == [("executing", None, "rollback")]
    assert seen["applied_before_restart"] == 1 and seen["patches_before_restart"] == 1

    # The restart resumed it and sent the same write, with the same precondition: refused.
    assert any(line.get("event") == "remediation.resume" for line in seen["lines"])
    assert len(seen["patches"]) == 2
    first_patch, second_patch = seen["patches"]
    assert second_patch == first_patch
    assert seen["refused"] == [second_patch]
    # Applied exactly once.
    assert seen["applied"] == [first_patch]

    decisions = [row["decision"] for row in seen["audit"]]
    assert decisions.count("approved") == 1
    assert decisions[:3] == ["requested", "approved", "executed"]
    [row] = [row for row in seen["audit"] if row["decision"] == "executed"]
    assert row["result"] == "already_done" and row["who"] == "detector"
    assert "already has what the rollback would set" in row["reason"]
    [(state, result, _)] = seen["journal"]
    assert state in ("done", "verified", "unverified")
    if state == "done":
        assert result == "already_done"


def test_killed_after_the_approval_before_the_patch_the_restart_applies_it_once(tmp_path):
    seen = kill_mid_action_then_restart(tmp_path, hold="replicaset")

    assert seen["first_audit"] == ["requested", "approved"]
    assert seen["journal_after_kill"] == [("executing", None, "rollback")]
    assert seen["patches_before_restart"] == 0

    assert any(line.get("event") == "remediation.resume" for line in seen["lines"])
    assert len(seen["patches"]) == 1 and seen["applied"] == seen["patches"]
    assert seen["refused"] == []

    decisions = [row["decision"] for row in seen["audit"]]
    assert decisions.count("approved") == 1
    assert decisions[:3] == ["requested", "approved", "executed"]
    [row] = [row for row in seen["audit"] if row["decision"] == "executed"]
    assert row["result"] == "applied" and row["who"] == "detector"
    [(state, result, _)] = seen["journal"]
    assert state in ("done", "verified", "unverified")
    if state == "done":
        assert result == "applied"
