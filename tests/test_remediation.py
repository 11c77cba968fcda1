"""Closing the loop through the real detector, in-process on a simulated clock: an incident's
Slack message carries Approve/Reject buttons, a signed click (as Slack sends it) runs the rollback
once through the real client against the loopback apiserver, everything is audited, and the
result is verified. The simulated apiserver carries a rollback out as the Deployment controller
does (the earlier revision's ReplicaSet becomes current again), so the verification sees the
errors stop."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from incident_detector.act.executor import ActionResult
from incident_detector.act.remediation_plan import renewable_at_write
from incident_detector.model import Deployment, RolloutStatus
from incident_detector.main import build_detector, slack_routes
from incident_detector.store.journal import (DONE, EXECUTING, PROPOSED, REJECTED, VERIFIED,
                                             JournalEntry)
from incident_detector.store.records import Store
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.sources import kube
from incident_detector.web.app import make_app
from test_identity import describe_events
from test_slack_actions import click_body, signed_headers

SCENARIOS = Path(__file__).parent / "scenarios"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
TICK = timedelta(seconds=20)


def run_flow(tmp_path, *, mode: str = "approve", clicks: list[tuple[str, str]] = (),
             failing_writes: int = 0,
             scenario_name: str = "bad-rollout-sharp-spike.yaml", **extra: Any) -> dict:
    scenario = load_scenario(SCENARIOS / scenario_name)
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    loki = LokiFake(world, clock)
    api = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    sink = SlackSink()
    out = io.StringIO()
    seen: dict[str, Any] = {"answers": []}

    async def run() -> None:
        def apiserver(request: Request) -> Response:
            # The first writes meet an apiserver that is down (503): retryable.
            if request.method == "PATCH" and seen.setdefault("failed", 0) < failing_writes:
                seen["failed"] += 1
                return Response(503, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": "ServiceUnavailable", "code": 503,
                                      "message": "etcd is unavailable"})
            return api(request)

        with LocalServer(apiserver) as k, LocalServer(loki) as lk, \
                LocalServer(sink) as sl:
            settings = scenario_settings(
                scenario, loki_url=lk.url, slack_url=sl.url + "/services/T/B/X",
                remediation_mode=mode, slack_signing_secret=SECRET, slack_approvers=APPROVER,
                verify_timeout_seconds=60, **extra)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock,
                                      store=Store(tmp_path / "state.sqlite3")) as detector:
                app = make_app(detector, extra_routes=slack_routes(detector, settings))
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://d") as web:
                    while not sink.messages and clock.now < world.at(scenario.duration):
                        await detector.tick()
                        await detector.outbox.deliver_due()
                        clock.now += TICK
                    seen["message"] = sink.messages[0] if sink.messages else None
                    for kind, user in clicks:
                        token = _button(seen["message"], kind)
                        body = click_body(token, user=user,
                                          action_id="approve_rollback" if kind == "approve"
                                          else "reject", response_url=sl.url + "/response")
                        answer = await web.post("/integrations/slack/actions", content=body,
                                                headers=signed_headers(body, at=clock.now,
                                                                       secret=SECRET))
                        seen["answers"].append((answer.status_code, answer.text))
                        await asyncio.wait(set(detector.remediator.running) or
                                           {asyncio.ensure_future(asyncio.sleep(0))})
                        await asyncio.sleep(0.05)
                    for _ in range(8):  # verification follows, tick after tick
                        await detector.tick()
                        # A write retried by this tick runs as a task of its own: let it end
                        # before the clock moves, as the seconds between real ticks would.
                        running = detector.remediator.running if detector.remediator else ()
                        if running:
                            await asyncio.wait(set(running))
                        clock.now += TICK
                    await asyncio.sleep(0)
                    seen["audit"] = (await web.get("/api/audit")).json()["audit"]
                    seen["status"] = (await web.get("/status")).json()
                    seen["journal"] = detector.journal.recent(since=SCENARIO_EPOCH)
                    seen["described"] = await asyncio.to_thread(describe_events, k.url,
                                                                api.world.deployment(
                                                                    scenario.namespace,
                                                                    clock.now))

    asyncio.run(run())
    seen["lines"] = [json.loads(line) for line in out.getvalue().splitlines()]
    seen["writes"] = api.writes
    seen["sink"] = sink.messages
    return seen


def _button(message: dict | None, kind: str) -> str | None:
    for block in (message or {}).get("blocks", ()):
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["action_id"].startswith(kind):
                    return element["value"]
    return None


def test_approve_runs_the_rollback_once_audits_it_and_verifies_it(tmp_path):
    seen = run_flow(tmp_path, clicks=[("approve", APPROVER), ("approve", APPROVER)])
    message = seen["message"]
    assert _button(message, "approve") and _button(message, "reject")
    incident = next(line for line in seen["lines"] if line["event"] == "incident")
    assert incident["remediation"]["decision"] == "ask"
    assert incident["remediation"]["to_revision"] == 1
    assert _button(message, "approve") not in json.dumps(incident)  # tokens stay in Slack

    # Exactly one write: the JSON patch kubectl sends, guarded by the resourceVersion seen.
    [write] = seen["writes"]
    assert write.headers["content-type"].startswith("application/json-patch+json")
    patch = json.loads(write.body)
    assert patch[0]["op"] == "test" and patch[0]["path"] == "/metadata/resourceVersion"
    assert patch[1]["op"] == "replace" and patch[1]["path"] == "/spec/template"
    assert patch[1]["value"]["spec"]["containers"][0]["image"].endswith(":1.4.2")
    assert "pod-template-hash" not in patch[1]["value"]["metadata"]["labels"]
    # The second click is answered politely and does nothing.
    assert [status for status, _ in seen["answers"]] == [200, 200]
    assert "already" in seen["answers"][1][1].lower()

    decisions = [row["decision"] for row in reversed(seen["audit"])]
    assert decisions == ["requested", "approved", "executed", "verified"]
    assert seen["audit"][-2]["who"] == APPROVER and seen["audit"][-3]["result"] == "applied"
    actions = [line for line in seen["lines"] if line["event"] == "action"]
    assert [a["decision"] for a in actions] == ["requested", "approved", "executed"]
    assert all({"who", "when", "action", "target", "decision", "reason", "dry_run", "result"}
               <= set(a) for a in actions)
    # Revision 1's ReplicaSet is current again (as revision 3), its pods are fine: PASS.
    [verification] = [line for line in seen["lines"] if line["event"] == "verification"]
    assert verification["result"] == "pass" and verification["deployment"] == "payments-api"
    assert verification["error_rate_after"] <= verification["error_rate_before"]
    assert seen["journal"][0].state == VERIFIED
    assert any("Verification PASS" in (m.get("text") or "") for m in seen["sink"])
    # kubectl describe deployment shows the incident and the verification.
    assert [e["reason"] for e in seen["described"]] == ["RolloutRegression",
                                                        "RemediationVerified"]
    # No new incident for the rollback's own revision.
    assert [line["revision"] for line in seen["lines"] if line["event"] == "incident"] == [2]
    # The original message was updated through the response_url: who decided, and the outcome.
    assert any("approved by <@U0APPROVER>" in (m.get("text") or "") for m in seen["sink"])
    assert seen["status"]["remediation"]["audit"]["executed"] == 1


def test_reject_closes_the_question_and_changes_nothing(tmp_path):
    seen = run_flow(tmp_path, clicks=[("reject", APPROVER), ("approve", APPROVER)])
    assert seen["writes"] == []
    assert seen["journal"][0].state == REJECTED
    assert [row["decision"] for row in reversed(seen["audit"])] == ["requested", "rejected"]


def test_a_click_by_someone_else_is_refused_and_recorded(tmp_path):
    seen = run_flow(tmp_path, clicks=[("approve", "U0STRANGER")])
    assert seen["writes"] == []
    assert seen["journal"][0].state == PROPOSED
    assert [row["decision"] for row in reversed(seen["audit"])] == ["requested", "refused"]


def test_dry_run_validates_the_write_and_persists_nothing(tmp_path):
    seen = run_flow(tmp_path, clicks=[("approve", APPROVER)], dry_run="true")
    [write] = seen["writes"]
    assert write.param("dryRun") == "All"
    assert seen["journal"][0].state == "dry_run"
    assert [line["revision"] for line in seen["lines"] if line["event"] == "incident"] == [2]
    assert not [line for line in seen["lines"] if line["event"] == "verification"]


def test_auto_mode_acts_on_its_own_when_confident_enough(tmp_path):
    seen = run_flow(tmp_path, mode="auto", auto_confidence="0.7", approval_confidence="0.6")
    assert len(seen["writes"]) == 1
    assert _button(seen["message"], "approve") is None  # nobody is asked
    decisions = [row["decision"] for row in reversed(seen["audit"])]
    assert decisions[:2] == ["approved", "executed"] and seen["audit"][-1]["who"] == "detector"


def test_a_gitops_managed_deployment_is_refused_and_says_where_to_roll_back(tmp_path):
    seen = run_flow(tmp_path, scenario_name="argocd-managed.yaml")
    incident = next(line for line in seen["lines"] if line["event"] == "incident")
    assert incident["remediation"]["decision"] == "refuse"
    assert incident["remediation"]["guardrail"] == "gitops"
    assert "Argo CD" in incident["remediation"]["reason"]
    assert _button(seen["message"], "approve") is None and seen["writes"] == []


def test_with_remediation_off_nothing_is_proposed(tmp_path):
    seen = run_flow(tmp_path, mode="off")
    incident = next(line for line in seen["lines"] if line["event"] == "incident")
    assert incident["remediation"] is None and _button(seen["message"], "approve") is None
    assert seen["audit"] == [] and seen["writes"] == []
    assert DONE not in {entry.state for entry in seen["journal"]}


def test_a_write_that_fails_on_its_way_is_tried_again_at_a_later_tick(tmp_path):
    seen = run_flow(tmp_path, clicks=[("approve", APPROVER)], failing_writes=1)
    assert seen["failed"] == 1 and len(seen["writes"]) == 1  # then applied, once
    executed = [row for row in reversed(seen["audit"]) if row["decision"] == "executed"]
    assert [row["result"] for row in executed] == ["error", "applied"]
    assert seen["journal"][0].state == VERIFIED


def _click_after_status_moved(tmp_path, *, renew: bool) -> dict:
    """The fast lane raises the incident while the rollout's pods are still becoming ready
    (the Deployment's status, so its resourceVersion, moves at 90 s); the on-call engineer
    clicks Approve later. ``renew``: the detector looks at the Deployment in between."""
    from incident_detector.sim.replay import _next_look

    scenario = load_scenario(SCENARIOS / "bad-rollout-sharp-spike.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    loki = LokiFake(world, clock)
    api = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    sink = SlackSink()
    seen: dict[str, Any] = {}

    async def run() -> None:
        with LocalServer(api) as k, LocalServer(loki) as lk, LocalServer(sink) as sl:
            settings = scenario_settings(
                scenario, loki_url=lk.url, slack_url=sl.url + "/services/T/B/X",
                remediation_mode="approve", slack_signing_secret=SECRET,
                slack_approvers=APPROVER, verify_timeout_seconds=60)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=io.StringIO(), clock=clock, monotonic=clock.monotonic,
                                      store=Store(tmp_path / "state.sqlite3")) as detector:
                app = make_app(detector, extra_routes=slack_routes(detector, settings))
                events = [at for at in world.change_instants() if at > clock.now]
                next_tick = clock.now
                while not sink.messages:
                    if clock.now >= next_tick:
                        await detector.tick()
                        next_tick += TICK
                    else:
                        await detector.fast_look()
                    await detector.outbox.deliver_due()
                    clock.now = _next_look(clock.now, next_tick=next_tick, detector=detector,
                                           settings=settings, watch_events=events)
                seen["raised_at"] = (clock.now - SCENARIO_EPOCH).total_seconds()
                clock.now = world.at(95)  # the pods became ready at 90 s
                if renew:
                    await detector.fast_look()
                token = _button(sink.messages[0], "approve")
                body = click_body(token, user=APPROVER, response_url=sl.url + "/response")
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                             base_url="http://d") as web:
                    await web.post("/integrations/slack/actions", content=body,
                                   headers=signed_headers(body, at=clock.now, secret=SECRET))
                    await asyncio.wait(set(detector.remediator.running) or
                                       {asyncio.ensure_future(asyncio.sleep(0))})
                    seen["audit"] = (await web.get("/api/audit")).json()["audit"]

    asyncio.run(run())
    return seen


def test_a_status_change_after_the_incident_does_not_make_the_approval_stale(tmp_path):
    """Pods turning ready move the Deployment's resourceVersion, not its spec: the proposed
    rollback's precondition follows them, and the approved rollback is applied."""
    seen = _click_after_status_moved(tmp_path, renew=True)
    assert seen["raised_at"] < 90
    executed = [row for row in seen["audit"] if row["decision"] == "executed"]
    assert [row["result"] for row in executed] == ["applied"]
    assert "written again" not in executed[0]["reason"]  # the look renewed it: one write


def test_without_a_look_in_between_the_write_finds_the_same_spec_and_is_applied(tmp_path):
    """No look saw the newer status: the write is refused on its precondition, the one GET
    after the refusal shows the same spec (object, revision, generation), and the write is made
    again, once, on what that GET saw."""
    seen = _click_after_status_moved(tmp_path, renew=False)
    executed = [row for row in seen["audit"] if row["decision"] == "executed"]
    assert [row["result"] for row in executed] == ["applied"]
    assert "written again at resourceVersion" in executed[0]["reason"]


def _approved_rollback(**params) -> JournalEntry:
    at = SCENARIO_EPOCH
    return JournalEntry(id=1, key=("shop", "payments", 2, "uid-p"), action="rollback",
                        params={"generation": 2, **params}, precondition="100",
                        state=EXECUTING, created_at=at, updated_at=at, decided_by="U1",
                        result=None)


def _stale_with(deployment) -> ActionResult:
    return ActionResult("rollback", "shop/payments", False, "stale", "changed", "120",
                        now=deployment)


def test_a_stale_write_is_made_again_only_on_the_same_spec():
    """What a refused write may be made again on: the same object at the same revision and
    generation (its status moved); anything else stays refused."""
    def seen(**changes):
        fields = {"namespace": "shop", "name": "payments", "revision": 2, "replicas": 2,
                  "uid": "uid-p", "resource_version": "120",
                  "rollout": RolloutStatus(generation=2, observed_generation=2, ready_replicas=2)}
        return Deployment(**{**fields, **changes})

    entry = _approved_rollback()
    assert renewable_at_write(entry, _stale_with(seen())) == "120"
    # the spec changed: scaled, paused or edited (generation), rolled (revision), re-created
    assert renewable_at_write(entry, _stale_with(seen(rollout=RolloutStatus(generation=3)))) \
        is None
    assert renewable_at_write(entry, _stale_with(seen(revision=3))) is None
    assert renewable_at_write(entry, _stale_with(seen(uid="uid-other"))) is None
    # nothing known of it now (gone, or the GET failed), or nothing moved at all
    assert renewable_at_write(entry, _stale_with(None)) is None
    assert renewable_at_write(entry, _stale_with(seen(resource_version="100"))) is None
    # an entry planned without a generation (an older record) is never renewed
    old = _approved_rollback(generation=None)
    assert renewable_at_write(old, _stale_with(seen())) is None
    # only a stale refusal is made again
    assert renewable_at_write(entry, dataclasses.replace(_stale_with(seen()), outcome="failed")) is None
