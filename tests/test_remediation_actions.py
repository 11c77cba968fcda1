"""The actions a rule chooses, through the real detector, in-process on a simulated clock.

As in test_remediation: the real daemon tick, the real Remediator built by ``build_detector``
(the constructor ``main`` uses), the real Kubernetes client against the loopback apiserver,
signed Slack clicks through the real Starlette endpoint, the journal and audit in a real store.
Each test hands the rule's choice to ``Remediator.plan`` where the daemon calls it (``choose``),
so that it does not depend on which rules are loaded, or calls ``plan``/``propose`` directly.

The simulated apiserver only carries out rollbacks; ``WritingApiServer`` in front of it accepts
the other writes as kube-apiserver would (a restart's strategic merge patch against the
Deployment's resourceVersion, a pod DELETE against the pod's uid) and records them in
``api.writes``. It does not simulate what they change, so the verification judges a restarted
Deployment whose new pods would throw the same errors: it fails, honestly.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from incident_detector.act.guardrails import Action
from incident_detector.act.remediation import Fix, PlanRequest, pod_selector, problem_pod
from incident_detector.main import build_detector, slack_routes
from incident_detector.model import Deployment, Evidence, Pod
from incident_detector.run.journal import PROPOSED, REFUSED, UNVERIFIED
from incident_detector.run.store import Store
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.sources import kube
from incident_detector.web.app import make_app
from factories import make_incident
from test_slack_actions import click_body, signed_headers

SCENARIOS = Path(__file__).parent / "scenarios"
SPIKE = "bad-rollout-sharp-spike.yaml"
CRASH_LOOP = "crash-loop-without-error-logs.yaml"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
TICK = timedelta(seconds=20)
NAMESPACE = "demo-aiops"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/payments-api"
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods/"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def _status(code: int, reason: str, message: str) -> Response:
    return Response(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "message": message, "reason": reason,
                           "code": code})


class WritingApiServer:
    """The simulated apiserver, plus the writes it does not simulate, checked against their
    preconditions as kube-apiserver checks them and recorded in ``api.writes``."""

    def __init__(self, api: KubeApiFake) -> None:
        self.api = api

    def __call__(self, request: Request) -> Response:
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip()
        if request.method == "PATCH" and request.path == DEPLOYMENT_PATH \
                and content_type == STRATEGIC_MERGE_PATCH:
            return self._patch(request)
        if request.method == "DELETE" and request.path.startswith(PODS_PATH):
            return self._delete_pod(request, request.path[len(PODS_PATH):])
        return self.api(request)

    def _patch(self, request: Request) -> Response:
        current = self.api.world.deployment(NAMESPACE, self.api.clock())
        assert current is not None
        patch = request.json()
        if patch["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", 'Operation cannot be fulfilled on deployments.apps '
                           '"payments-api": the object has been modified; please apply your '
                           'changes to the latest version and try again')
        self.api.writes.append(request)
        template = patch.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        current["spec"]["template"]["metadata"].setdefault("annotations", {}).update(annotations)
        if "paused" in patch.get("spec", {}):
            current["spec"]["paused"] = patch["spec"]["paused"]
        return Response(200, current)

    def _delete_pod(self, request: Request, name: str) -> Response:
        pods = self.api.world.objects("pods", NAMESPACE, self.api.clock())
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        options = request.json() or {}
        uid = options.get("preconditions", {}).get("uid")
        if uid is not None and uid != pod["metadata"]["uid"]:
            return _status(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                           f"UID in object meta: {pod['metadata']['uid']}")
        self.api.writes.append(request)
        return Response(200, pod)


@dataclass
class Flow:
    """One detector over one scenario, and what the test does with it."""

    detector: Any
    web: httpx.AsyncClient
    api: KubeApiFake
    clock: ManualClock
    sink: SlackSink
    out: io.StringIO
    slack_url: str
    namespace: str
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def remediator(self):
        return self.detector.remediator

    def pods(self) -> tuple[Pod, ...]:
        """The pods as the detector's pod list sees them now, with their uids."""
        pods = []
        for raw in self.api.world.objects("pods", self.namespace, self.clock()):
            pod = kube.parse_pod(raw)
            if pod is not None:
                pods.append(replace(pod, uid=raw["metadata"]["uid"]))
        return tuple(pods)

    def plan(self, incident, rollout, **kwargs):
        """``Remediator.plan`` itself, as the daemon will call it with a rule's choice."""
        return type(self.remediator).plan(self.remediator, incident, rollout, **kwargs)

    def choose(self, fix: Fix) -> None:
        """Hand the rule's choice to ``plan`` where the daemon calls it."""
        plan = self.remediator.plan

        def with_fix(incident, rollout, **kwargs):
            self.seen["incident"], self.seen["rollout"] = incident, rollout
            kwargs.update(fix=fix, pods=self.pods())
            return plan(incident, rollout, **kwargs)

        self.remediator.plan = with_fix

    async def until_message(self, limit: timedelta = timedelta(minutes=10)) -> dict | None:
        end = self.clock.now + limit
        while not self.sink.messages and self.clock.now < end:
            await self.tick()
        return self.sink.messages[0] if self.sink.messages else None

    async def tick(self) -> None:
        await self.detector.tick()
        await self.detector.outbox.deliver_due()
        if self.remediator.running:  # a write started by this tick: let it end
            await asyncio.wait(set(self.remediator.running))
        self.clock.now += TICK

    async def click(self, token: str | None, *, kind: str, action: str,
                    user: str = APPROVER) -> httpx.Response:
        action_id = f"approve_{action}" if kind == "approve" else f"reject_{action}"
        body = click_body(token, user=user, action_id=action_id,
                          response_url=self.slack_url + "/response")
        answer = await self.web.post("/integrations/slack/actions", content=body,
                                     headers=signed_headers(body, at=self.clock.now,
                                                            secret=SECRET))
        await asyncio.sleep(0.05)
        while self.remediator.running:
            await asyncio.wait(set(self.remediator.running))
            await asyncio.sleep(0.05)
        return answer

    async def audit(self) -> list[dict]:
        """Oldest first."""
        return list(reversed((await self.web.get("/api/audit")).json()["audit"]))

    def lines(self, event: str) -> list[dict]:
        return [line for line in map(json.loads, self.out.getvalue().splitlines())
                if line.get("event") == event]

    def journal(self):
        return self.detector.journal.recent(since=SCENARIO_EPOCH - timedelta(days=1))


def run(tmp_path: Path, script: Callable[[Flow], Awaitable[None]], *,
        scenario_name: str = SPIKE, mode: str = "approve", **extra: Any) -> None:
    scenario = load_scenario(SCENARIOS / scenario_name)
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    loki = LokiFake(world, clock)
    api = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    sink = SlackSink()
    out = io.StringIO()

    async def main() -> None:
        async with AsyncExitStack() as stack:
            k = stack.enter_context(LocalServer(WritingApiServer(api)))
            lk = stack.enter_context(LocalServer(loki))
            sl = stack.enter_context(LocalServer(sink))
            settings = scenario_settings(
                scenario, loki_url=lk.url, slack_url=sl.url + "/services/T/B/X",
                remediation_mode=mode, slack_signing_secret=SECRET, slack_approvers=APPROVER,
                verify_timeout_seconds=60, **extra)
            detector = await stack.enter_async_context(build_detector(
                settings=settings, kube_api=kube.api_client_for(k.url), stdout=out, clock=clock,
                store=Store(tmp_path / "state.sqlite3")))
            app = make_app(detector, extra_routes=slack_routes(detector, settings))
            web = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://d"))
            await script(Flow(detector=detector, web=web, api=api, clock=clock, sink=sink,
                              out=out, slack_url=sl.url, namespace=scenario.namespace))

    asyncio.run(main())


def button(message: dict | None, kind: str) -> tuple[str, str] | None:
    """(action_id, token) of the message's Approve or Reject button."""
    for block in (message or {}).get("blocks", ()):
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["action_id"].startswith(kind):
                    return element["action_id"], element["value"]
    return None


def test_a_rule_choosing_restart_restarts_on_approval_audits_and_verifies(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("restart", rule="restart-on-npe"))
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["remediation"]["action"] == "restart"
        assert incident["remediation"]["decision"] == "ask"
        assert incident["remediation"]["to_revision"] is None
        action_id, token = button(message, "approve")
        assert action_id == "approve_restart"
        assert (await flow.click(token, kind="approve", action="restart")).status_code == 200
        for _ in range(6):  # the verification follows, tick after tick
            await flow.tick()

        # One write: kubectl rollout restart's patch, guarded by the resourceVersion seen.
        [write] = flow.api.writes
        assert (write.method, write.path) == ("PATCH", DEPLOYMENT_PATH)
        assert write.headers["content-type"].startswith(STRATEGIC_MERGE_PATCH)
        patch = write.json()
        [entry] = flow.journal()
        assert patch["metadata"]["resourceVersion"] == entry.precondition
        stamp = patch["spec"]["template"]["metadata"]["annotations"][
            "kubectl.kubernetes.io/restartedAt"]
        assert stamp == entry.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (entry.action, entry.params["rule"]) == ("restart", "restart-on-npe")

        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["requested", "approved", "executed",
                                                      "verified"]
        assert {row["action"] for row in audit} == {"restart"}
        assert audit[1]["who"] == APPROVER and audit[2]["result"] == "applied"
        actions = flow.lines("action")
        assert all(line["rule"] == "restart-on-npe" and line["to_revision"] is None
                   for line in actions)
        # Converged, but a restart does not take a bad build's errors away: FAIL, and it says so.
        [verification] = flow.lines("verification")
        assert (verification["action"], verification["result"]) == ("restart", "fail")
        assert verification["to_revision"] is None
        assert any("still above the baseline" in reason for reason in verification["reasons"])
        assert entry.state == UNVERIFIED
        texts = [m.get("text") or "" for m in flow.sink.messages]
        [followup] = [t for t in texts if t.startswith("Verification")]
        assert followup.startswith("Verification FAIL: restart of demo-aiops/payments-api: ")
        assert "to revision" not in followup
        assert any(t.startswith("Restart demo-aiops/payments-api: approved by <@U0APPROVER>")
                   for t in texts)

    run(tmp_path, script, allowed_actions="rollback,restart")


def test_a_rule_choosing_none_proposes_nothing(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("none", rule="oom-killed"))
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["remediation"] is None
        assert button(message, "approve") is None and button(message, "reject") is None
        for _ in range(3):
            await flow.tick()
        assert await flow.audit() == [] and flow.journal() == []
        assert flow.api.writes == [] and flow.lines("action") == []

    run(tmp_path, script, allowed_actions="rollback,restart,delete-pod")


def test_delete_pod_deletes_the_crash_looping_pod_with_its_uid(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("delete-pod", rule="crash-loop"))
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["remediation"]["action"] == "delete-pod"
        assert incident["remediation"]["decision"] == "ask", incident["remediation"]
        looping = {pod for pod, problem in flow.seen["incident"].evidence.pod_problems
                   if problem == "CrashLoopBackOff"}
        assert looping
        action_id, token = button(message, "approve")
        assert action_id == "approve_delete-pod"
        await flow.click(token, kind="approve", action="delete-pod")
        for _ in range(6):
            await flow.tick()

        [write] = flow.api.writes
        assert write.method == "DELETE" and write.path.startswith(PODS_PATH)
        name = write.path[len(PODS_PATH):]
        assert name in looping
        uids = {pod.name: pod.uid for pod in flow.pods()}
        options = write.json()
        assert options["preconditions"] == {"uid": uids[name]} and uids[name]
        assert "gracePeriodSeconds" not in options and "dryRun" not in options
        [entry] = flow.journal()
        assert (entry.params["pod"], entry.params["pod_uid"]) == (name, uids[name])

        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["requested", "approved", "executed",
                                                      "verified"]
        assert audit[2]["result"] == "applied" and name in audit[2]["reason"]
        [verification] = flow.lines("verification")
        assert verification["action"] == "delete-pod" and verification["to_revision"] is None

    run(tmp_path, script, scenario_name=CRASH_LOOP, allowed_actions="rollback,delete-pod")


def test_delete_pod_without_a_pod_to_delete_is_refused_with_the_reason(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("delete-pod", rule="crash-loop"))
        flow.pods = lambda: ()  # the pods are not known (the pod list failed, say)
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["remediation"]["decision"] == "refuse"
        assert incident["remediation"]["guardrail"] == "no_pod"
        assert button(message, "approve") is None
        [row] = await flow.audit()
        assert (row["decision"], row["action"]) == ("refused", "delete-pod")
        assert "No pod of demo-aiops/payments-api" in row["reason"]
        assert [entry.state for entry in flow.journal()] == [REFUSED]
        assert flow.api.writes == []

    run(tmp_path, script, scenario_name=CRASH_LOOP, allowed_actions="delete-pod")


def test_a_rule_action_not_in_allowed_actions_is_refused_and_audited(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("restart", rule="restart-on-npe"))
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["remediation"]["decision"] == "refuse"
        assert incident["remediation"]["guardrail"] == "action_not_allowed"
        assert "ALLOWED_ACTIONS (rollback)" in incident["remediation"]["reason"]
        assert button(message, "approve") is None
        # An action the detector does not know at all: refused too, never raised.
        view = flow.plan(flow.seen["incident"], flow.seen["rollout"],
                                    fix=Fix("reboot-node", rule="typo")).remediation
        assert (view.outcome, view.guardrail) == ("refuse", "unknown_action")
        # A scale with no replica count cannot be carried out.
        view = flow.plan(flow.seen["incident"], flow.seen["rollout"],
                         fix=Fix("scale", rule="scale-out")).remediation
        assert (view.outcome, view.guardrail) == ("refuse", "no_replicas")
        for _ in range(3):
            await flow.tick()
        audit = await flow.audit()
        assert [(row["decision"], row["action"]) for row in audit] == [
            ("refused", "restart"), ("refused", "reboot-node"), ("refused", "scale")]
        assert "'reboot-node' (rule typo) is not one the detector knows" in audit[1]["reason"]
        assert "needs a replica count" in audit[2]["reason"]
        assert [entry.state for entry in flow.journal()] == [REFUSED, REFUSED]
        assert flow.api.writes == []

    run(tmp_path, script)  # ALLOWED_ACTIONS: rollback only, the default


def test_a_rule_longer_cooldown_blocks_a_second_action(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("restart", rule="restart-on-npe", cooldown_seconds=3600))
        message = await flow.until_message()
        _, token = button(message, "approve")
        # Asked at the same time, approved after the restart ran: the recorded cooldown of
        # its rule (an hour) is checked again at the click.
        incident, rollout = flow.seen["incident"], flow.seen["rollout"]
        scale = flow.plan(incident, rollout, fix=Fix(
            "scale", params=(("replicas", 3),), cooldown_seconds=3600, rule="scale-out"),
            pods=flow.pods()).remediation
        assert scale.outcome == "ask"
        await flow.click(token, kind="approve", action="restart")
        assert len(flow.api.writes) == 1
        flow.clock.now += timedelta(minutes=5)  # past REMEDIATION_COOLDOWN_MINUTES (1)
        answer = await flow.click(scale.approve_token, kind="approve", action="scale")
        assert answer.status_code == 200

        # A new proposal now: the rule's hour holds...
        deployment = rollout.deployment
        paused = flow.remediator.propose(PlanRequest(
            key=incident.key, deployment=deployment, action=Action.PAUSE,
            detected_at=incident.detected_at, confidence=incident.confidence,
            cooldown_seconds=3600, rule="hold-it"))
        assert (paused.outcome, paused.guardrail) == ("refuse", "cooldown")
        assert "the rule's cooldown (60 minutes, longer than REMEDIATION_COOLDOWN_MINUTES 1)" \
            in paused.reason
        # ...while the policy's minute alone (or a rule's shorter one) is over.
        rollback = flow.plan(incident, rollout, fix=Fix(
            "rollback", cooldown_seconds=30, rule="short")).remediation
        assert rollback.outcome == "ask", rollback.reason
        assert rollback.to_revision == 1

        assert len(flow.api.writes) == 1  # the restart only
        audit = await flow.audit()
        decisions = [(row["action"], row["decision"]) for row in audit]
        assert decisions == [("restart", "requested"), ("scale", "requested"),
                             ("restart", "approved"), ("restart", "executed"),
                             ("scale", "refused"), ("pause", "refused"),
                             ("rollback", "requested")]
        assert "the rule's cooldown (60 minutes" in audit[4]["reason"]
        assert audit[4]["who"] == APPROVER
        states = {entry.action: entry.state for entry in flow.journal()}
        assert states["scale"] == REFUSED and states["pause"] == REFUSED
        assert states["rollback"] == PROPOSED
        assert any((m.get("text") or "").startswith("Not done: ") for m in flow.sink.messages)

    run(tmp_path, script, allowed_actions="rollback,restart,scale,pause",
        remediation_cooldown_minutes=1, max_actions_per_hour=10)


def test_auto_mode_runs_a_rule_choice_at_once_and_verifies_it_as_fits(tmp_path):
    async def script(flow: Flow) -> None:
        flow.choose(Fix("delete-stuck-pods", rule="stuck"))
        message = await flow.until_message()
        assert button(message, "approve") is None  # nobody is asked
        [incident] = flow.lines("incident")
        assert (incident["remediation"]["action"], incident["remediation"]["decision"]) == (
            "delete-stuck-pods", "act")
        for _ in range(3):
            await flow.tick()
        # The Deployment's pods, found by its pod template's labels; none is stuck Terminating,
        # so nothing is deleted, and the rollout (converged) alone decides the verdict.
        assert flow.api.writes == []
        [entry] = flow.journal()
        assert entry.params["selector"] == "app=payments-api"
        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["approved", "executed", "verified"]
        assert audit[1]["result"] == "already_done" and audit[2]["result"] == "pass"
        assert "no pod matching 'app=payments-api' in namespace 'demo-aiops' is stuck " \
               "Terminating" in audit[1]["reason"]
        [verification] = flow.lines("verification")
        assert verification["action"] == "delete-stuck-pods" and verification["result"] == "pass"
        assert "errors not judged for this action: judged on the rollout alone" \
            in verification["reasons"]

    run(tmp_path, script, mode="auto", auto_confidence="0.5", approval_confidence="0.4",
        allowed_actions="delete-stuck-pods")


# Choosing the pod, and the selector: plain functions.
def _incident(*problems: tuple[str, str]):
    return make_incident(namespace=NAMESPACE, evidence=Evidence(pod_problems=problems))


def _pod(name: str, *, uid: bool = True, namespace: str = NAMESPACE) -> Pod:
    return Pod(namespace=namespace, name=name, replicaset="rs", uid=f"uid-{name}" if uid else "")


def test_problem_pod_prefers_a_crash_loop_and_needs_a_uid():
    pods = (_pod("a"), _pod("b"), _pod("c"), _pod("d", uid=False), _pod("e", namespace="other"))
    assert problem_pod(_incident(("a", "OOMKilled"), ("b", "CrashLoopBackOff")), pods).name == "b"
    assert problem_pod(_incident(("a", "OOMKilled"), ("c", "ImagePullBackOff")), pods).name == "a"
    assert problem_pod(_incident(("d", "CrashLoopBackOff"), ("c", "OOMKilled")), pods).name == "c"
    # Not seen any more, without a uid, or of another namespace: none to delete.
    assert problem_pod(_incident(("gone", "CrashLoopBackOff")), pods) is None
    assert problem_pod(_incident(("d", "CrashLoopBackOff"), ("e", "CrashLoopBackOff")),
                       pods) is None
    assert problem_pod(_incident(), pods) is None
    assert problem_pod(_incident(("a", "CrashLoopBackOff")), ()) is None


def test_pod_selector_is_every_pod_template_label():
    deployment = Deployment(namespace=NAMESPACE, name="payments-api", revision=2,
                            pod_labels=(("app", "payments-api"), ("tier", "backend")))
    assert pod_selector(deployment) == "app=payments-api,tier=backend"
