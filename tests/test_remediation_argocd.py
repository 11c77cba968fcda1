"""A rollback of a Deployment that Argo CD manages goes through Argo CD, end to end.

As in test_remediation_actions: the real daemon tick, the real Kubernetes client against the
loopback apiserver (the simulated world of ``argocd-managed.yaml``, whose Deployment carries
Argo CD's tracking-id annotation), signed Slack clicks through the real Starlette endpoint, the
journal and audit in a real store. Argo CD's API is a loopback server (a respx router behind
it) answering with the shapes of ``tests/fixtures/argocd``; when it accepts a rollback, the test does what Argo CD's sync would
do to the cluster (the previous revision's template is applied again, so the world gains a
revision that reuses revision 1's ReplicaSet), and from then on answers with the application
rolled back, Healthy or still Degraded.

The detector is the one ``build_detector`` makes from ARGOCD_URL (the loopback server) and
ARGOCD_TOKEN: the wiring is under test too.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from typing import Any

import httpx
import pytest
import respx

from incident_detector.act.remediation import Remediator
from incident_detector.main import build_detector, slack_routes
from incident_detector.store.journal import DONE, DRY_RUN, FAILED, STALE, UNVERIFIED, VERIFIED
from incident_detector.store.records import Store
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.sources import kube
from incident_detector.web.app import make_app
from test_slack_actions import click_body, signed_headers

SCENARIOS = Path(__file__).parent / "scenarios"
FIXTURES = Path(__file__).parent / "fixtures" / "argocd"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
TICK = timedelta(seconds=20)
ARGOCD = "https://argocd.example.test"
TOKEN = "argocd-token-5f0e4c1b9a"
APP_PATH = "/api/v1/applications/payments"
GOOD = "8f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"
GOOD_IMAGE = "registry.local/payments-api:1.4.2"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())["response"]["json"]


@dataclass
class FakeArgoCd:
    """Argo CD's two endpoints. ``after``: the application once the rollback ran (fixture)."""

    api: KubeApiFake
    clock: ManualClock
    after: str = "application_rolled_back.json"
    before: str = "application_degraded.json"
    # A refusal the POST gets (a fixture), whatever the application looked like.
    refusal: str | None = None
    rollbacks: list[httpx.Request] = field(default_factory=list)
    gets: int = 0
    rolled_back_at: datetime | None = None
    # Seconds the loopback server holds its answer to a rollback (a process that dies waiting
    # for it); the application's reads are answered at once.
    rollback_answer_delay: float = 0.0

    def serve(self, request: Request) -> Response:
        """The same endpoints over loopback HTTP, for the detector as ``main`` builds it."""
        query = urlencode(request.query, doseq=True)
        answer = self.router().handler(httpx.Request(
            request.method, ARGOCD + request.path + (f"?{query}" if query else ""),
            headers=request.headers, content=request.body))
        return Response(answer.status_code, answer.content,
                        answer.headers.get("content-type", "application/json"),
                        delay=self.rollback_answer_delay if request.method == "POST" else 0.0)

    def router(self) -> respx.Router:
        router = respx.Router(base_url=ARGOCD, assert_all_called=False)
        # Looked up at each request, so that a test may replace ``rollback``.
        router.get(APP_PATH).mock(side_effect=lambda request: self.get(request))
        router.post(f"{APP_PATH}/rollback").mock(side_effect=lambda request: self.rollback(request))
        return router

    def get(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        self.gets += 1
        if self.rolled_back_at is None:
            return httpx.Response(200, json=fixture(self.before))
        body = copy.deepcopy(fixture(self.after))
        # The rollback's own history entry, stamped when it ran.
        stamp = self.rolled_back_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        body["status"]["history"][-1]["deployedAt"] = stamp
        body["status"]["operationState"]["finishedAt"] = stamp
        return httpx.Response(200, json=body)

    def rollback(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        self.rollbacks.append(request)
        if self.refusal is not None:
            exchange = json.loads((FIXTURES / self.refusal).read_text())["response"]
            return httpx.Response(exchange["status"], json=exchange["json"])
        if self.rolled_back_at is None \
                and "automated" in fixture(self.before)["spec"].get("syncPolicy", {}):
            return httpx.Response(400, json=fixture("rollback_auto_sync.json"))
        dry_run = json.loads(request.content)["dryRun"]
        if not dry_run:
            self.rolled_back_at = self.clock()
            self.apply_previous_revision()
        return httpx.Response(200, json=fixture("rollback_dry_run.json" if dry_run
                                                else "rollback_ok.json"))

    def apply_previous_revision(self) -> None:
        """What Argo CD's sync to the earlier commit does to the cluster: revision 1's template
        again, which the Deployment controller turns into a new revision reusing its
        ReplicaSet (as ``KubeApiFake`` does for ``kubectl rollout undo``)."""
        world, now = self.api.world, self.clock()
        scenario = world.scenario
        latest = world.current_revision(now)
        [target] = [r for r in scenario.revisions if r.image == GOOD_IMAGE and r.reuses is None]
        undo = target.model_copy(update={
            "revision": max(r.revision for r in scenario.revisions) + 1,
            "at": max(world.seconds(now), latest.at + 0.001), "reuses": target.revision,
            "pod_problems": ()})
        self.api.world = World(scenario.model_copy(update={"revisions": (*scenario.revisions,
                                                                        undo)}),
                               t0=world.t0, incarnation=world.incarnation)
        if self.api.on_world_change is not None:
            self.api.on_world_change(self.api.world)


@dataclass
class Flow:
    detector: Any
    remediator: Remediator
    web: httpx.AsyncClient
    api: KubeApiFake
    argo: FakeArgoCd
    clock: ManualClock
    sink: SlackSink
    out: io.StringIO
    slack_url: str

    async def until_message(self) -> dict | None:
        end = self.clock.now + timedelta(minutes=10)
        while not self.sink.messages and self.clock.now < end:
            await self.tick()
        return self.sink.messages[0] if self.sink.messages else None

    async def tick(self) -> None:
        await self.detector.tick()
        await self.detector.outbox.deliver_due()
        if self.remediator.running:
            await asyncio.wait(set(self.remediator.running))
        self.clock.now += TICK

    async def approve(self, message: dict | None) -> httpx.Response:
        token = button(message, "approve")
        body = click_body(token, user=APPROVER, action_id="approve_rollback",
                          response_url=self.slack_url + "/response")
        answer = await self.web.post("/integrations/slack/actions", content=body,
                                     headers=signed_headers(body, at=self.clock.now,
                                                            secret=SECRET))
        await asyncio.sleep(0.05)
        while self.remediator.running:
            await asyncio.wait(set(self.remediator.running))
        return answer

    async def audit(self) -> list[dict]:
        return list(reversed((await self.web.get("/api/audit")).json()["audit"]))

    def lines(self, event: str) -> list[dict]:
        return [line for line in map(json.loads, self.out.getvalue().splitlines())
                if line.get("event") == event]

    def journal(self):
        return self.detector.journal.recent(since=SCENARIO_EPOCH - timedelta(days=1))


def button(message: dict | None, kind: str) -> str | None:
    for block in (message or {}).get("blocks", ()):
        if block.get("type") == "actions":
            for element in block["elements"]:
                if element["action_id"].startswith(kind):
                    return element["value"]
    return None


def run(tmp_path: Path, script: Callable[[Flow], Awaitable[None]], *, mode: str = "approve",
        after: str = "application_rolled_back.json", before: str = "application_degraded.json",
        refusal: str | None = None, **extra: Any) -> None:
    scenario = load_scenario(SCENARIOS / "argocd-managed.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    loki = LokiFake(world, clock)
    api = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    sink = SlackSink()
    out = io.StringIO()
    argo = FakeArgoCd(api, clock, after=after, before=before, refusal=refusal)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            k = stack.enter_context(LocalServer(api))
            lk = stack.enter_context(LocalServer(loki))
            sl = stack.enter_context(LocalServer(sink))
            # Argo CD's API on loopback: the client is the one main builds from ARGOCD_URL.
            ag = stack.enter_context(LocalServer(argo.serve))
            settings = scenario_settings(
                scenario, loki_url=lk.url, slack_url=sl.url + "/services/T/B/X",
                remediation_mode=mode, slack_signing_secret=SECRET, slack_approvers=APPROVER,
                verify_timeout_seconds=60, argocd_url=ag.url, argocd_token=TOKEN, **extra)
            detector = await stack.enter_async_context(build_detector(
                settings=settings, kube_api=kube.api_client_for(k.url), stdout=out, clock=clock,
                store=Store(tmp_path / "state.sqlite3")))
            remediator = detector.remediator
            assert remediator.argocd is not None and remediator.policy.argocd
            app = make_app(detector, extra_routes=slack_routes(detector, settings))
            web = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://d"))
            await script(Flow(detector=detector, remediator=remediator, web=web, api=api,
                              argo=argo, clock=clock, sink=sink, out=out, slack_url=sl.url))

    asyncio.run(main())


def test_approved_rollback_goes_to_argo_cd_and_is_verified_on_the_app_and_the_deployment(
        tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        [incident] = flow.lines("incident")
        remediation = incident["remediation"]
        assert (remediation["action"], remediation["decision"]) == ("rollback", "ask"), remediation
        assert button(message, "approve") is not None
        [entry] = flow.journal()
        record = entry.params["argocd"]
        assert (record["app"], record["app_namespace"], record["history_id"]) == (
            "payments", None, None)
        for recorded, seen in (("incident_at", "detected_at"),
                               ("rollout_started_at", "rollout_started_at")):
            assert datetime.fromisoformat(record[recorded]) == datetime.fromisoformat(
                incident[seen].replace("Z", "+00:00"))

        assert (await flow.approve(message)).status_code == 200
        for _ in range(6):
            await flow.tick()

        # One rollback, to the entry before the bad deployment, through Argo CD only.
        [rollback] = flow.argo.rollbacks
        assert json.loads(rollback.content) == {"name": "payments", "id": 4, "dryRun": False,
                                                "prune": False}
        assert flow.api.writes == []  # the Deployment was not patched
        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["requested", "approved", "executed",
                                                      "verified"]
        executed = audit[2]
        assert executed["result"] == "applied"
        assert "rollback of Argo CD application argocd/payments to history id 4 (revision " \
               "8f1c2d3), from history id 5 (revision c0ffee4), as `argocd app rollback " \
               "payments 4`" in executed["reason"]
        assert "the Deployment itself is not patched" in executed["reason"]
        assert audit[3]["result"] == "pass"
        [entry] = flow.journal()
        assert entry.state == VERIFIED

        [verification] = flow.lines("verification")
        assert verification["result"] == "pass"
        assert verification["argocd"] == {"application": "argocd/payments", "health": "Healthy",
                                          "sync": "OutOfSync", "revision": GOOD}
        reasons = verification["reasons"]
        assert reasons[0].startswith("Argo CD application argocd/payments: rollback to revision "
                                     "8f1c2d3 (history id 4) succeeded, health Healthy, "
                                     "OutOfSync with Git")
        assert any(r.startswith("rollout converged") for r in reasons)
        assert any("back under the baseline" in r for r in reasons)
        texts = [m.get("text") or "" for m in flow.sink.messages]
        assert any(t.startswith("Verification PASS: rollback of demo-aiops/payments-api to "
                                "revision 1 through Argo CD application payments: ")
                   for t in texts)
        assert any(t.startswith("Roll back demo-aiops/payments-api to revision 1 through Argo "
                                "CD application payments: approved by <@U0APPROVER>")
                   for t in texts)
        # One GET per tick while verifying, none once verified.
        gets = flow.argo.gets
        await flow.tick()
        assert flow.argo.gets == gets

    run(tmp_path, script)


def test_auto_mode_rolls_back_through_argo_cd_at_once(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        assert button(message, "approve") is None
        for _ in range(6):
            await flow.tick()
        assert len(flow.argo.rollbacks) == 1 and flow.api.writes == []
        audit = await flow.audit()
        assert [row["decision"] for row in audit] == ["approved", "executed", "verified"]
        assert audit[0]["who"] == "detector" and audit[2]["result"] == "pass"

    run(tmp_path, script, mode="auto", auto_confidence="0.5", approval_confidence="0.4")


def test_an_application_that_stays_degraded_fails_the_verification_in_time(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        await flow.approve(message)
        for _ in range(6):  # 120 s of ticks, past VERIFY_TIMEOUT_SECONDS (60)
            await flow.tick()
        assert len(flow.argo.rollbacks) == 1
        [verification] = flow.lines("verification")
        assert verification["result"] == "fail"
        assert verification["argocd"]["health"] == "Degraded"
        reasons = verification["reasons"]
        assert "health Degraded" in reasons[0]
        # The Deployment itself did converge, and says so: the application decided.
        assert any(r.startswith("rollout converged") for r in reasons)
        assert "not verified within 60s" in reasons
        [entry] = flow.journal()
        assert entry.state == UNVERIFIED
        assert (await flow.audit())[-1]["result"] == "fail"

    run(tmp_path, script, after="application_rolled_back_degraded.json")


def test_auto_sync_on_is_not_rolled_back_and_says_what_to_do(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        await flow.approve(message)
        for _ in range(3):
            await flow.tick()
        assert flow.argo.rollbacks == [] and flow.api.writes == []
        [entry] = flow.journal()
        assert entry.state == FAILED
        executed = (await flow.audit())[-1]
        assert (executed["decision"], executed["result"]) == ("executed", "failed")
        assert "disable auto-sync of argocd/payments first (argocd app set argocd/payments " \
               "--sync-policy none) or revert the commit in Git" in executed["reason"]
        assert flow.lines("verification") == []

    run(tmp_path, script, before="application_auto_sync.json")


@pytest.mark.parametrize(("refusal", "state", "result", "words"), [
    # Auto-sync turned on between the read and the write: Argo CD's own refusal.
    ("rollback_auto_sync.json", FAILED, "failed", "disable auto-sync of argocd/payments first"),
    ("permission_denied.json", FAILED, "forbidden",
     "permission denied: applications, sync, default/payments"),
    # Someone else's operation started in between: not the state the decision was taken on.
    ("rollback_operation_in_progress.json", STALE, "stale",
     "another operation is already in progress"),
])
def test_argo_cd_refusals_end_the_action_with_their_reason(tmp_path, refusal, state, result,
                                                          words):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        await flow.approve(message)
        for _ in range(3):
            await flow.tick()
        assert len(flow.argo.rollbacks) == 1 and flow.api.writes == []
        [entry] = flow.journal()
        assert entry.state == state
        executed = (await flow.audit())[-1]
        assert (executed["decision"], executed["result"]) == ("executed", result)
        assert words in executed["reason"]
        assert TOKEN not in flow.out.getvalue()

    run(tmp_path, script, refusal=refusal)


def test_dry_run_asks_argo_cd_for_a_dry_run_and_deploys_nothing(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        await flow.approve(message)
        for _ in range(3):
            await flow.tick()
        [rollback] = flow.argo.rollbacks
        assert json.loads(rollback.content)["dryRun"] is True
        assert flow.argo.rolled_back_at is None and flow.api.writes == []
        [entry] = flow.journal()
        assert entry.state == DRY_RUN
        executed = (await flow.audit())[-1]
        assert executed["result"] == "dry_run_ok" and executed["dry_run"] is True
        assert "accepted by Argo CD with dryRun" in executed["reason"]
        assert flow.lines("verification") == []

    run(tmp_path, script, dry_run="true")


def test_a_lost_answer_is_not_sent_again_once_the_rollback_shows_on_the_application(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        # The first rollback lands at Argo CD, and its answer is lost on the way back.
        real = flow.argo.rollback

        def lost(request: httpx.Request) -> httpx.Response:
            real(request)
            raise httpx.ReadTimeout("timed out", request=request)

        flow.argo.rollback = lost  # type: ignore[method-assign]
        await flow.approve(message)
        for _ in range(4):
            await flow.tick()
        assert len(flow.argo.rollbacks) == 1  # sent once, never again
        audit = await flow.audit()
        executed = [row for row in audit if row["decision"] == "executed"]
        assert [row["result"] for row in executed] == ["error", "already_done"]
        assert "already deploys revision 8f1c2d3 again" in executed[1]["reason"]
        [entry] = flow.journal()
        assert entry.state in (DONE, VERIFIED)

    run(tmp_path, script)


def test_a_restart_after_the_rollback_landed_resumes_it_without_sending_it_again(tmp_path):
    async def script(flow: Flow) -> None:
        message = await flow.until_message()
        # Argo CD takes the rollback, and the detector's process dies waiting for the answer
        # (held past ARGOCD_TIMEOUT_SECONDS, 10 s: it never comes before the process dies).
        flow.argo.rollback_answer_delay = 60.0
        body = click_body(button(message, "approve"), user=APPROVER,
                          action_id="approve_rollback", response_url=flow.slack_url + "/response")
        await flow.web.post("/integrations/slack/actions", content=body,
                            headers=signed_headers(body, at=flow.clock.now, secret=SECRET))
        while not flow.argo.rollbacks:
            await asyncio.sleep(0.01)
        for task in list(flow.remediator.running):
            task.cancel()
        await asyncio.gather(*flow.remediator.running, return_exceptions=True)
        flow.argo.rollback_answer_delay = 0.0
        [entry] = flow.journal()
        assert entry.state == "executing" and len(flow.argo.rollbacks) == 1

        # A new process on the same store: what was executing is carried on.
        old = flow.remediator
        restarted = Remediator(
            policy=old.policy, journal=old.journal, executor=old.executor, tokens=old.tokens,
            stdout=old.stdout, slack=old.slack, clock=flow.clock,
            verify_timeout_seconds=old.verify_timeout_seconds, events=old.events,
            argocd=old.argocd)
        flow.detector.remediator = flow.remediator = restarted
        await restarted.resume()
        for _ in range(4):
            await flow.tick()

        assert len(flow.argo.rollbacks) == 1  # never sent again
        executed = [row for row in await flow.audit() if row["decision"] == "executed"]
        assert [row["result"] for row in executed] == ["already_done"]
        assert "already deploys revision 8f1c2d3 again (history id 6)" in executed[0]["reason"]
        [entry] = flow.journal()
        assert entry.state == VERIFIED
        assert flow.api.writes == []
        await restarted.close()

    run(tmp_path, script)
