"""The change timeline through the real detector, in-process on a simulated clock: what changed
is recorded and served, a spike after a dependency's rollout or a ConfigMap edit is a ``kind:
change`` incident with its causes ranked, and the fix proposed is the cause's."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from test_alert_flow import Sim

from incident_detector.sim.scenario import load_scenario

SCENARIOS = Path(__file__).parent / "scenarios"


def run(tmp_path: Path, scenario_name: str, *, ticks: int = 12, **extra: Any) -> dict[str, Any]:
    sim = Sim(tmp_path, load_scenario(SCENARIOS / scenario_name))
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon(**extra) as (detector, web, _):
            for _ in range(ticks):
                await sim.tick(detector, web)
            seen["changes"] = (await web.get("/api/changes")).json()
            seen["status"] = (await web.get("/status")).json()
            seen["audit"] = detector.journal.audit_summary()
            seen["metrics"] = (await web.get("/metrics")).text

    asyncio.run(main())
    seen["lines"] = sim.lines()
    seen["incidents"] = [r for r in seen["lines"] if r.get("event") == "incident"]
    seen["slack"] = sim.sink.messages
    seen["writes"] = sim.api.writes
    return seen


def of_kind(seen: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in seen["incidents"] if r["kind"] == kind]


def test_a_spike_after_a_dependencys_bad_rollout_names_the_dependency_and_its_rollback(tmp_path):
    seen = run(tmp_path, "dependency-bad-rollout.yaml", remediation_mode="approve",
               slack_signing_secret="signing-secret-0123456789",
               slack_approvers="U0123456")
    [change] = of_kind(seen, "change")
    assert change["deployment"] == "checkout"
    top = change["evidence"]["causes"][0]
    assert (top["change"]["kind"], top["change"]["name"]) == ("Deployment", "payments")
    assert top["action"] == "rollback" and "deployment/payments" in top["command"]
    assert any("payments" in reason for reason in top["reasons"])
    # The fix proposed on checkout's incident is payments' rollback, waiting for a click.
    assert change["remediation"]["target"] == "shop/payments"
    assert change["remediation"]["decision"] == "ask"
    assert not seen["writes"]  # nothing is written before someone approves
    # payments' own rollout incident ranks its own rollout first.
    [rollout] = [r for r in of_kind(seen, "rollout") if r["deployment"] == "payments"]
    assert rollout["evidence"]["causes"][0]["change"]["name"] == "payments"
    # The timeline recorded payments' rollout, with who made it.
    recorded = [c for c in seen["changes"]["changes"]
                if (c["kind"], c["name"]) == ("Deployment", "payments")]
    assert recorded and recorded[0]["revision"] == 2 and recorded[0]["manager"]
    slack_text = json.dumps(seen["slack"])
    assert "checkout" in slack_text and "payments" in slack_text


def test_a_spike_after_a_configmap_edit_with_no_rollout_is_a_change_incident(tmp_path):
    seen = run(tmp_path, "configmap-change.yaml")
    assert of_kind(seen, "rollout") == []
    [change] = of_kind(seen, "change")
    assert (change["deployment"], change["change"]["kind"], change["change"]["name"]) == (
        "orders", "ConfigMap", "orders-config")
    top = change["evidence"]["causes"][0]
    assert (top["change"]["kind"], top["change"]["name"]) == ("ConfigMap", "orders-config")
    [recorded] = [c for c in seen["changes"]["changes"] if c["kind"] == "ConfigMap"]
    assert recorded["manager"] == "kubectl-patch"
    assert {"path": "data.TIMEOUT_MS", "before": "5000", "after": "50", "hidden": False} \
        in recorded["fields"]
    assert seen["status"]["changes"]["recorded"] >= 1
    assert 'incident_detector_changes_total{action="updated",kind="ConfigMap"} 1.0' \
        in seen["metrics"]
    notices = [line for line in seen["metrics"].splitlines()
               if line.startswith('incident_detector_notices_total{kind="change"')]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in notices) == 1.0


def test_a_harmless_configmap_edit_is_recorded_and_raises_nothing(tmp_path):
    seen = run(tmp_path, "configmap-change-harmless.yaml")
    assert seen["incidents"] == []
    assert any(c["kind"] == "ConfigMap" for c in seen["changes"]["changes"])
    verdicts = [s["verdict"] for s in seen["status"]["changes"]["suspects"]]
    assert "incident" not in verdicts


def test_one_change_incident_per_workload_and_change_across_a_restart(tmp_path):
    sim = Sim(tmp_path, load_scenario(SCENARIOS / "configmap-change.yaml"))

    async def ticks(count: int) -> None:
        async with sim.daemon() as (detector, web, _):
            for _ in range(count):
                await sim.tick(detector, web)

    async def main() -> None:
        await ticks(8)
        await ticks(8)  # the same state file, a new process

    asyncio.run(main())
    changes = [r for r in sim.lines() if r.get("event") == "incident" and r["kind"] == "change"]
    assert len(changes) == 1


def test_a_dependencys_rollout_from_before_the_start_is_still_a_cause(tmp_path):
    """The detector (re)starts after payments rolled out: no watch saw that rollout happen, the
    ReplicaSets tell it, and checkout's rise is still traced to it."""
    from datetime import timedelta

    sim = Sim(tmp_path, load_scenario(SCENARIOS / "dependency-bad-rollout.yaml"))
    sim.clock.now += timedelta(seconds=70)  # payments rolled out at t=60
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon() as (detector, web, _):
            for _ in range(8):
                await sim.tick(detector, web)
            seen["changes"] = (await web.get("/api/changes?kind=Deployment")).json()

    asyncio.run(main())
    [recorded] = [c for c in seen["changes"]["changes"] if c["name"] == "payments"]
    assert recorded["revision"] == 2 and recorded["previous_revision"] == 1
    assert recorded["at"].endswith("Z") and recorded["observed_at"] > recorded["at"]
    changes = [r for r in sim.lines() if r.get("event") == "incident" and r["kind"] == "change"]
    [change] = changes
    assert change["deployment"] == "checkout"
    assert change["evidence"]["causes"][0]["change"]["name"] == "payments"


def test_a_cause_whose_deployment_moved_on_is_never_rolled_back(tmp_path):
    """The rollback proposed for a cause is that rollout's, and only while it is still the
    Deployment's current revision: a Deployment that moved on (fixed, rolled back already)
    gets no proposal, and the one made carries the precondition seen."""
    from datetime import datetime, timedelta, timezone

    from incident_detector.act.approvals import ApprovalTokens
    from incident_detector.act.executor import KubeExecutor
    from incident_detector.judge.guardrails import Policy
    from incident_detector.act.remediation import Remediator
    from incident_detector.judge.correlator import Rules
    from incident_detector.model import (
        Cause, Change, Container, Deployment, PodTemplate, ReplicaSet)
    from incident_detector.store.changes import ChangeLog
    from incident_detector.run.changes import ChangeDesk
    from incident_detector.store.journal import Journal
    from incident_detector.run.live import LiveFeed
    from incident_detector.run.outbox import StdoutSink
    from incident_detector.store.records import Store
    from incident_detector.sources import kube

    now = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)

    def rs(revision: int, image: str) -> ReplicaSet:
        return ReplicaSet(namespace="shop", name=f"payments-{revision}", deployment="payments",
                          revision=revision, created_at=now - timedelta(minutes=10 - revision),
                          uid=f"rs-{revision}", deployment_uid="uid-p",
                          template=PodTemplate(containers=(Container("api", image),)))

    replicasets = (rs(1, "payments:1"), rs(2, "payments:2"), rs(3, "payments:1"))
    store = Store(tmp_path / "state.sqlite3")
    journal = Journal(store.connection)
    remediator = Remediator(
        policy=Policy(mode="approve", allowed_namespaces=frozenset({"shop"})), journal=journal,
        executor=KubeExecutor(api=kube.api_client_for("http://127.0.0.1:9"), timeout=1),
        tokens=ApprovalTokens(clock=lambda: now), stdout=StdoutSink(io.StringIO()), slack=None,
        clock=lambda: now, verify_timeout_seconds=60)
    desk = ChangeDesk(
        changes=ChangeLog(store.connection, retention=timedelta(days=1), max_rows=100),
        live=LiveFeed(), watcher=None, kube=None, loki=None, rules=Rules(),
        window_seconds=600, rule_set=lambda: None, sample_lines=10,
        workload_of=lambda d: d.name, record_notice=lambda **_: True,
        is_notified=lambda _: False, remediator=remediator)
    cause = Cause(change=Change(namespace="shop", kind="Deployment", name="payments",
                                action="updated", at=now - timedelta(minutes=8),
                                observed_at=now, uid="uid-p", revision=2,
                                previous_revision=1), score=0.9, action="rollback")

    async def plan(revision: int) -> Any:
        deployment = Deployment(namespace="shop", name="payments", revision=revision,
                                uid="uid-p", resource_version=f"rv-{revision}")
        await desk.observe("shop", deployments=[deployment], selected=["payments"],
                           replicasets=replicasets[:revision], now=now, call=None)
        view = desk.plan_for_cause("shop", cause, detected_at=now, confidence=0.9,
                                   remediator=remediator)
        await remediator.close()
        return view

    # Still at revision 2: payments' rollback to revision 1 waits for an approval, written
    # down against the resourceVersion seen.
    view = asyncio.run(plan(2))
    assert (view.target, view.outcome, view.to_revision) == ("shop/payments", "ask", 1)
    entry = journal.find(("shop", "payments", 2, "uid-p"), "rollback")
    assert entry is not None and entry.precondition == "rv-2"
    assert entry.params["to_revision"] == 1
    # Moved on to revision 3 (rolled back by someone): nothing more is proposed.
    assert asyncio.run(plan(3)) is None
    assert journal.find(("shop", "payments", 3, "uid-p"), "rollback") is None
    store.close()
