"""The actions a rule chooses, through the real detector, in-process on a simulated clock.

As in test_remediation: the real daemon tick, the real Remediator built by ``build_detector``
(the constructor ``main`` uses), the real Kubernetes client against the loopback apiserver,
signed Slack clicks through the real Starlette endpoint, the journal and audit in a real store.
Each test writes a rules file (``RULES_FILE``); the daemon classifies the incident with it and
hands the rule's choice to ``Remediator.plan`` itself. What no rules file can say (an action the
detector does not know, a scale without a replica count, a second action for the same incident,
no pod at all) is asked of ``Remediator.plan``/``propose`` directly, with the Deployment and its
ReplicaSets read through the detector's own Kubernetes client and the incident rebuilt from the
JSON line the daemon printed.

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from incident_detector.judge.guardrails import Action
from incident_detector.act.remediation import Fix, PlanRequest, pod_selector, problem_pod
from incident_detector.judge.correlator import Rollout, find_rollout
from incident_detector.main import build_detector, slack_routes
from incident_detector.model import Deployment, Evidence, Incident, Pod, PodProblem, Signal
from incident_detector.store.journal import PROPOSED, REFUSED, UNVERIFIED
from incident_detector.store.records import Store
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
DEPLOYMENT = "payments-api"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"
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

    @property
    def remediator(self):
        return self.detector.remediator

    def pod_uids(self) -> dict[str, str]:
        """Every pod's uid, as the simulated apiserver holds it."""
        return {raw["metadata"]["name"]: raw["metadata"]["uid"]
                for raw in self.api.world.objects("pods", self.namespace, self.clock())}

    async def rollout(self) -> Rollout:
        """The Deployment's current rollout, read through the detector's Kubernetes client."""
        kube_client = self.detector.kube
        deployments = await kube_client.list_deployments(self.namespace)
        replicasets = await kube_client.list_replicasets(self.namespace)
        [deployment] = [d for d in deployments if d.name == DEPLOYMENT]
        rollout = find_rollout(deployment, replicasets)
        assert rollout is not None
        return rollout

    def incident(self, rollout: Rollout) -> Incident:
        """The incident the daemon raised, rebuilt from the JSON line it printed; it must be
        about ``rollout``."""
        [line] = self.lines("incident")
        assert (line["deployment_uid"], line["revision"], line["replicaset_uid"]) == (
            rollout.deployment.uid, rollout.replicaset.revision, rollout.replicaset.uid)
        evidence = line["evidence"]
        return make_incident(
            namespace=line["namespace"], deployment=line["deployment"],
            revision=line["revision"], replicaset=line["replicaset"],
            deployment_uid=line["deployment_uid"], replicaset_uid=line["replicaset_uid"],
            rollout_started_at=datetime.fromisoformat(line["rollout_started_at"]),
            detected_at=datetime.fromisoformat(line["detected_at"]),
            previous_revision=rollout.previous.revision, confidence=line["confidence"],
            signals=tuple(Signal(signal) for signal in line["signals"]),
            evidence=Evidence(
                baseline_per_minute=evidence["baseline_per_minute"],
                pod_problems=tuple((p["pod"], PodProblem(p["problem"]))
                                   for p in evidence["pod_problems"])))

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


def run(tmp_path: Path, script: Callable[[Flow], Awaitable[None]], *, rules: str | None,
        scenario_name: str = SPIKE, mode: str = "approve", **extra: Any) -> None:
    """``rules``: the text of the rules file (RULES_FILE); None: the built-in set."""
    if rules is not None:
        rules_path = tmp_path / "rules.yaml"
        rules_path.write_text(rules)
        extra["rules_file"] = str(rules_path)
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


RESTART_ON_SPIKE = """\
rules:
  - name: restart-on-npe
    match: {signal: error_spike}
    priority: P2
    remediation: {action: restart}
"""


def test_a_rule_choosing_restart_restarts_on_approval_audits_and_verifies(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert (incident["priority"], incident["rule"]) == ("P2", "restart-on-npe")
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

    run(tmp_path, script, rules=RESTART_ON_SPIKE, allowed_actions="rollback,restart")


def test_a_rule_choosing_none_proposes_nothing(tmp_path):
    # Before the built-in rollout-regression, which would choose the rollback.
    rules = """\
rules:
  - name: tell-only
    match: {signal: error_spike}
    priority: P4
    remediation: {action: none}
"""

    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert (incident["priority"], incident["rule"]) == ("P4", "tell-only")
        assert incident["remediation"] is None
        assert button(message, "approve") is None and button(message, "reject") is None
        for _ in range(3):
            await flow.tick()
        assert await flow.audit() == [] and flow.journal() == []
        assert flow.api.writes == [] and flow.lines("action") == []

    run(tmp_path, script, rules=rules, allowed_actions="rollback,restart,delete-pod")


def test_delete_pod_deletes_the_crash_looping_pod_with_its_uid(tmp_path):
    # Tried before the built-in rollout-regression (pod_health), which would roll back.
    rules = """\
rules:
  - name: delete-crash-looping-pod
    match: {pod_reason: CrashLoopBackOff}
    priority: P2
    remediation: {action: delete-pod}
"""

    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert (incident["priority"], incident["rule"]) == ("P2", "delete-crash-looping-pod")
        assert incident["remediation"]["action"] == "delete-pod"
        assert incident["remediation"]["decision"] == "ask", incident["remediation"]
        looping = {problem["pod"] for problem in incident["evidence"]["pod_problems"]
                   if problem["problem"] == "CrashLoopBackOff"}
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
        uids = flow.pod_uids()
        options = write.json()
        assert options["preconditions"] == {"uid": uids[name]} and uids[name]
        assert "gracePeriodSeconds" not in options and "dryRun" not in options
        [entry] = flow.journal()
        assert (entry.params["pod"], entry.params["pod_uid"]) == (name, uids[name])
        assert entry.params["rule"] == "delete-crash-looping-pod"

        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["requested", "approved", "executed",
                                                      "verified"]
        assert audit[2]["result"] == "applied" and name in audit[2]["reason"]
        [verification] = flow.lines("verification")
        assert verification["action"] == "delete-pod" and verification["to_revision"] is None

    run(tmp_path, script, rules=rules, scenario_name=CRASH_LOOP,
        allowed_actions="rollback,delete-pod")


def test_delete_pod_for_an_incident_naming_no_pod_is_refused_with_the_reason(tmp_path):
    # An error spike of pods that are all healthy: no pod has a problem to delete it for.
    rules = """\
rules:
  - name: delete-erroring-pod
    match: {signal: error_spike}
    priority: P2
    remediation: {action: delete-pod}
"""

    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["evidence"]["pod_problems"] == []
        assert incident["remediation"]["action"] == "delete-pod"
        assert incident["remediation"]["decision"] == "refuse"
        assert incident["remediation"]["guardrail"] == "no_pod"
        assert button(message, "approve") is None
        [row] = await flow.audit()
        assert (row["decision"], row["action"]) == ("refused", "delete-pod")
        assert "No pod of demo-aiops/payments-api" in row["reason"]
        [entry] = flow.journal()
        assert (entry.state, entry.params["rule"]) == (REFUSED, "delete-erroring-pod")
        assert flow.api.writes == []

    run(tmp_path, script, rules=rules, allowed_actions="delete-pod")


def test_delete_pod_without_a_pod_to_delete_is_refused_with_the_reason(tmp_path):
    # The daemon proposes nothing here (the rule says none); the request is made below.
    rules = """\
rules:
  - name: tell-only
    match: {pod_reason: CrashLoopBackOff}
    priority: P1
    remediation: {action: none}
"""

    async def script(flow: Flow) -> None:
        await flow.until_message()
        assert flow.journal() == []
        rollout = await flow.rollout()
        incident = flow.incident(rollout)
        # It names crash-looping pods that the pod list does see...
        seen = await flow.detector.kube.list_pods(flow.namespace)
        assert problem_pod(incident, seen) is not None
        # ...but the pods are not known here (the pod list failed, say).
        planned = flow.remediator.plan(incident, rollout,
                                       fix=Fix("delete-pod", rule="crash-loop"), pods=())
        view = planned.remediation
        assert (view.action, view.outcome, view.guardrail) == ("delete-pod", "refuse", "no_pod")
        assert view.approve_token is None and view.reject_token is None
        [row] = await flow.audit()
        assert (row["decision"], row["action"]) == ("refused", "delete-pod")
        assert "No pod of demo-aiops/payments-api" in row["reason"]
        assert [entry.state for entry in flow.journal()] == [REFUSED]
        for _ in range(2):
            await flow.tick()
        assert flow.api.writes == []

    run(tmp_path, script, rules=rules, scenario_name=CRASH_LOOP, allowed_actions="delete-pod")


def test_a_rule_action_not_in_allowed_actions_is_refused_and_audited(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        assert incident["rule"] == "restart-on-npe"
        assert incident["remediation"]["decision"] == "refuse"
        assert incident["remediation"]["guardrail"] == "action_not_allowed"
        assert "ALLOWED_ACTIONS (rollback)" in incident["remediation"]["reason"]
        assert button(message, "approve") is None
        # What no rules file can say (its parser refuses both), asked of plan directly.
        rollout = await flow.rollout()
        planned = flow.incident(rollout)
        # An action the detector does not know at all: refused too, never raised.
        view = flow.remediator.plan(planned, rollout,
                                    fix=Fix("reboot-node", rule="typo")).remediation
        assert (view.outcome, view.guardrail) == ("refuse", "unknown_action")
        # A scale with no replica count cannot be carried out.
        view = flow.remediator.plan(planned, rollout,
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

    run(tmp_path, script, rules=RESTART_ON_SPIKE)  # ALLOWED_ACTIONS: rollback only, the default


def test_a_rule_longer_cooldown_blocks_a_second_action(tmp_path):
    rules = """\
rules:
  - name: restart-on-npe
    match: {signal: error_spike}
    priority: P2
    remediation: {action: restart, cooldown: 1h}
"""

    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        _, token = button(message, "approve")
        [entry] = flow.journal()
        assert (entry.action, entry.params["cooldown_seconds"]) == ("restart", 3600.0)
        # Asked at the same time, approved after the restart ran: the recorded cooldown of
        # its rule (an hour) is checked again at the click.
        rollout = await flow.rollout()
        incident = flow.incident(rollout)
        scale = flow.remediator.plan(incident, rollout, fix=Fix(
            "scale", params=(("replicas", 3),), cooldown_seconds=3600,
            rule="scale-out")).remediation
        assert scale.outcome == "ask"
        await flow.click(token, kind="approve", action="restart")
        assert len(flow.api.writes) == 1
        flow.clock.now += timedelta(minutes=5)  # past REMEDIATION_COOLDOWN_MINUTES (1)
        answer = await flow.click(scale.approve_token, kind="approve", action="scale")
        assert answer.status_code == 200

        # A new proposal now: the rule's hour holds...
        paused = flow.remediator.propose(PlanRequest(
            key=incident.key, deployment=rollout.deployment, action=Action.PAUSE,
            detected_at=incident.detected_at, confidence=incident.confidence,
            cooldown_seconds=3600, rule="hold-it"))
        assert (paused.outcome, paused.guardrail) == ("refuse", "cooldown")
        assert "the rule's cooldown (60 minutes, longer than REMEDIATION_COOLDOWN_MINUTES 1)" \
            in paused.reason
        # ...while the policy's minute alone (or a rule's shorter one) is over.
        rollback = flow.remediator.plan(incident, rollout, fix=Fix(
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

    run(tmp_path, script, rules=rules, allowed_actions="rollback,restart,scale,pause",
        remediation_cooldown_minutes=1, max_actions_per_hour=10)


def test_auto_mode_runs_a_rule_choice_at_once_and_verifies_it_as_fits(tmp_path):
    # Only this rule: the incident's other signals must not reach a built-in one.
    rules = """\
rules:
  - name: stuck
    match: {}
    priority: P2
    remediation: {action: delete-stuck-pods}
include_defaults: false
"""

    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        assert button(message, "approve") is None  # nobody is asked
        [incident] = flow.lines("incident")
        assert (incident["priority"], incident["rule"]) == ("P2", "stuck")
        assert (incident["remediation"]["action"], incident["remediation"]["decision"]) == (
            "delete-stuck-pods", "act")
        for _ in range(3):
            await flow.tick()
        # The Deployment's pods, found by its pod template's labels; none is stuck Terminating,
        # so nothing is deleted, and the rollout (converged) alone decides the verdict.
        assert flow.api.writes == []
        [entry] = flow.journal()
        assert (entry.params["selector"], entry.params["rule"]) == ("app=payments-api", "stuck")
        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["approved", "executed", "verified"]
        assert audit[1]["result"] == "already_done" and audit[2]["result"] == "pass"
        assert "no pod matching 'app=payments-api' in namespace 'demo-aiops' is stuck " \
               "Terminating" in audit[1]["reason"]
        [verification] = flow.lines("verification")
        assert verification["action"] == "delete-stuck-pods" and verification["result"] == "pass"
        assert "errors not judged for this action: judged on the rollout alone" \
            in verification["reasons"]

    run(tmp_path, script, rules=rules, mode="auto", auto_confidence="0.5",
        approval_confidence="0.4", allowed_actions="delete-stuck-pods")


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
