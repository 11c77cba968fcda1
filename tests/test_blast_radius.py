"""The blast radius and the causality tree over the real detector: small shops replayed on the
loopback apiserver and Loki of incident_detector.sim (a simulated clock), each a topology of the
service map: three tiers behind an Ingress, a diamond whose links come from environments and
error lines, a cycle with a host outside the cluster. One workload rolls out a bad revision;
its callers' errors rise with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from incident_detector.notify.render import slack_text
from incident_detector.sim.replay import ReplayResult, replay
from incident_detector.sim.scenario import load_scenario

OK = 'level=info msg="served" latency_ms={n3}'


def workload(name: str, *, env: dict[str, str] | None = None, bad_at: float | None = None,
             errors: str | None = None, errors_from: float = 62, errors_per_minute: int = 30,
             before: str | None = None) -> dict[str, Any]:
    revisions = [{"revision": 1, "at": -172800, "image": f"registry.local/{name}:1.0.0",
                  "replicas": 2, "env": env or {}}]
    logs = [{"revision": 1, "from": -2400, "per_minute": 20, "line": OK}]
    if before:
        logs.append({"revision": 1, "from": -2400, "per_minute": 1, "line": before})
    if bad_at is not None:
        revisions.append({"revision": 2, "at": bad_at, "image": f"registry.local/{name}:2.0.0",
                          "replicas": 2, "env": env or {}})
        logs += [{"revision": 2, "from": bad_at + 1, "per_minute": 20, "line": OK},
                 {"revision": 2, "from": bad_at + 1, "per_minute": 60,
                  "line": f'level=error msg="{name} failed" err="pool exhausted" id={{n}}'}]
    elif errors:
        logs.append({"revision": 1, "from": errors_from, "per_minute": errors_per_minute,
                     "line": errors})
    return {"name": name, "pod_labels": {"app": name}, "revisions": revisions, "logs": logs}


def shop(tmp_path: Path, name: str, workloads: list[dict[str, Any]], *,
         failing: str, callers: list[str], **extra: Any) -> ReplayResult:
    """A scenario of ``workloads`` in namespace shop (the first is the scenario's own
    Deployment), replayed; ``failing`` rolls out at t=60, ``callers`` get change incidents."""
    first, *rest = workloads
    body = {
        "description": name, "namespace": "shop", "deployment": first["name"],
        "duration": 240, "pod_labels": first["pod_labels"], "revisions": first["revisions"],
        "logs": first["logs"], "workloads": rest,
        "services": [{"name": w["name"], "selector": {"app": w["name"]}, "ports": [8080]}
                     for w in workloads],
        "expect": {"incidents": [{"deployment": failing, "revision": 2}],
                   "alert_incidents": [{"alert": a["name"]} for a in extra.get("alerts", ())],
                   "change_incidents": [{"deployment": c,
                                         "cause": {"kind": "Deployment", "name": failing}}
                                        for c in callers]},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return asyncio.run(replay(load_scenario(path)))


def calls(host: str) -> str:
    return f'level=error msg="upstream call failed" host={host} status=503 id={{n}}'


def only_rollout(result: ReplayResult) -> dict[str, Any]:
    [notification] = result.notifications
    return notification.record


def change_incidents(result: ReplayResult) -> dict[str, dict[str, Any]]:
    return {n.record["deployment"]: n.record for n in result.change_notifications}


def edges(record: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    tree = record["evidence"]["causality"]
    return {(e["source"], e["target"]): e for e in tree["edges"]}


def test_three_tiers_behind_an_ingress(tmp_path):
    result = shop(tmp_path, "three-tiers", [
        workload("frontend", env={"CHECKOUT_URL": "http://checkout:8080"},
                 errors=calls("checkout")),
        workload("checkout", env={"PAYMENTS_URL": "http://payments.shop.svc.cluster.local"},
                 errors=calls("payments")),
        workload("payments", bad_at=60),
    ], failing="payments", callers=["checkout", "frontend"],
        ingresses=[{"name": "web", "host": "shop.example.com",
                    "paths": [{"path": "/", "service": "frontend", "port": 8080}]}])
    record = only_rollout(result)
    # Only payments rolled out: its callers have no rollout incident of their own.
    assert record["deployment"] == "payments"
    blast = record["evidence"]["blast_radius"]
    assert [(b["workload"], b["path"]) for b in blast] == [
        ("shop/checkout", ["shop/checkout", "shop/payments"]),
        ("shop/frontend", ["shop/frontend", "shop/checkout", "shop/payments"])]
    for entry in blast:
        assert entry["before_per_minute"] == 0 and entry["after_per_minute"] >= 1
    # The Ingress's host calls frontend on the map, but is no workload: never in the radius.
    text = slack_text(result.notifications[0].slack)
    assert "Also failing: checkout, frontend" in text
    assert "also failing: checkout, frontend" in text
    assert "Root: Deployment shop/payments rolled out revision 2 → shop/payments" in text
    tree = edges(record)
    assert tree[("change:Deployment/shop/payments", "workload:shop/payments")]["score"] > 0.5
    assert "env: PAYMENTS_URL=http://payments.shop.svc.cluster.local" in \
        tree[("workload:shop/payments", "workload:shop/checkout")]["evidence"]
    assert ("workload:shop/checkout", "workload:shop/frontend") in tree
    assert ("workload:shop/frontend", "signal:error_spike@shop/frontend") in tree
    # Each caller's rise is tied to payments' rollout: frontend's through checkout (the map).
    changes = change_incidents(result)
    assert set(changes) == {"checkout", "frontend"}
    front = changes["frontend"]
    top = front["evidence"]["causes"][0]
    assert top["change"]["name"] == "payments"
    assert any("it calls checkout, which calls payments (service map, 2 hops)" in r
               for r in top["reasons"])
    chain = [e for e in front["evidence"]["causality"]["edges"]
             if e["target"].startswith("workload:")]
    assert [(e["source"], e["target"]) for e in chain] == [
        ("change:Deployment/shop/payments", "workload:shop/payments"),
        ("workload:shop/payments", "workload:shop/checkout"),
        ("workload:shop/checkout", "workload:shop/frontend")]
    front_slack = slack_text(next(n.slack for n in result.change_notifications
                                  if n.record["deployment"] == "frontend"))
    assert ("Root: Deployment shop/payments rolled out revision 2 → shop/payments → "
            "shop/checkout → shop/frontend") in front_slack


def test_a_diamond_from_environments_and_error_lines(tmp_path):
    # frontend calls checkout and catalog (its environment); checkout calls inventory (its
    # environment); catalog's only word of inventory is an error line it wrote now and then
    # before anything rolled out.
    result = shop(tmp_path, "diamond", [
        workload("frontend", env={"CHECKOUT_URL": "http://checkout:8080",
                                  "CATALOG_URL": "http://catalog:8080"},
                 errors=calls("catalog")),
        workload("checkout", env={"INVENTORY_HOST": "inventory"}, errors=calls("inventory")),
        workload("catalog", errors=calls("inventory"),
                 before='level=error msg="dial tcp inventory:9000: i/o timeout"'),
        workload("inventory", bad_at=60),
    ], failing="inventory", callers=["catalog", "checkout", "frontend"])
    record = only_rollout(result)
    blast = record["evidence"]["blast_radius"]
    assert [(b["workload"], b["path"]) for b in blast] == [
        ("shop/catalog", ["shop/catalog", "shop/inventory"]),
        ("shop/checkout", ["shop/checkout", "shop/inventory"]),
        ("shop/frontend", ["shop/frontend", "shop/catalog", "shop/inventory"])]
    assert blast[0]["before_per_minute"] > 0
    tree = edges(record)
    assert any(item.startswith("error_line: ") for item in
               tree[("workload:shop/inventory", "workload:shop/catalog")]["evidence"])
    assert tree[("workload:shop/inventory", "workload:shop/catalog")]["score"] == 1.0
    assert "also failing: catalog, checkout, frontend" in \
        slack_text(result.notifications[0].slack)


def test_a_cycle_with_a_host_outside_the_cluster(tmp_path):
    # a -> b -> c -> a, and c calls api.stripe.com: c's bad rollout hurts b and, through b, a.
    result = shop(tmp_path, "cycle", [
        workload("a", env={"B_URL": "http://b:8080"}, errors=calls("b")),
        workload("b", env={"C_URL": "http://c:8080"}, errors=calls("c")),
        workload("c", env={"A_URL": "http://a:8080", "STRIPE_URL": "https://api.stripe.com"},
                 bad_at=60),
    ], failing="c", callers=["a", "b"])
    record = only_rollout(result)
    assert [(b["workload"], b["path"]) for b in record["evidence"]["blast_radius"]] == [
        ("shop/b", ["shop/b", "shop/c"]), ("shop/a", ["shop/a", "shop/b", "shop/c"])]
    tree = record["evidence"]["causality"]
    assert not any("stripe" in n["id"] for n in tree["nodes"])
    assert len({(e["source"], e["target"]) for e in tree["edges"]}) == len(tree["edges"])


@pytest.mark.parametrize("quiet", ["frontend"])
def test_callers_that_do_not_rise_are_not_in_the_radius(tmp_path, quiet):
    result = shop(tmp_path, "quiet-caller", [
        workload("frontend", env={"CHECKOUT_URL": "http://checkout:8080"}),
        workload("checkout", env={"PAYMENTS_URL": "http://payments:8080"},
                 errors=calls("payments")),
        workload("payments", bad_at=60),
    ], failing="payments", callers=["checkout"])
    record = only_rollout(result)
    assert [b["workload"] for b in record["evidence"]["blast_radius"]] == ["shop/checkout"]
    assert f"shop/{quiet}" not in str(record["evidence"]["blast_radius"])


def test_the_callers_error_groups_point_at_the_rollout_incident(tmp_path):
    # An hour after the detector began watching (triage calls an error new only then),
    # payments rolls out a bad revision; checkout's new errors are an error group of their
    # own, notified (every priority is), and part of payments' incident.
    later = 3700

    def late(entry: dict[str, Any], bad: bool = False) -> dict[str, Any]:
        for log in entry["logs"]:
            if log["from"] > 0:
                log["from"] += later - 60
        for revision in entry["revisions"][1:]:
            revision["at"] += later - 60
        return entry

    result = shop(tmp_path, "error-groups", [
        late(workload("checkout", env={"PAYMENTS_URL": "http://payments:8080"},
                      errors=calls("payments"))),
        late(workload("payments", bad_at=60)),
    ], failing="payments", callers=["checkout"], duration=later + 200,
        settings={"notify_priorities": "P1,P2,P3,P4"})
    groups = {tuple(n.record["workloads"]): n for n in result.error_groups}
    checkout = groups[("checkout",)]
    assert checkout.record["incident"] == {
        "kind": "rollout", "namespace": "shop", "deployment": "payments", "revision": 2,
        "detected_at": result.notifications[0].record["detected_at"],
        "path": ["shop/checkout", "shop/payments"]}
    assert ("Part of the rollout incident of payments revision 2 in shop (checkout calls "
            "payments)") in slack_text(checkout.slack)
    # payments' own new errors point at its own incident.
    assert groups[("payments",)].record["incident"]["path"] == ["shop/payments"]


def test_an_alert_in_a_caller_is_tied_to_its_callee_s_rollout(tmp_path):
    # frontend -> checkout -> payments. payments rolls out at t=60; at t=90 an alert fires on
    # frontend (no rollout of its own, its error lines say nothing).
    result = shop(tmp_path, "alert-in-a-caller", [
        workload("frontend", env={"CHECKOUT_URL": "http://checkout:8080"}),
        workload("checkout", env={"PAYMENTS_URL": "http://payments:8080"}),
        workload("payments", bad_at=60),
    ], failing="payments", callers=[], alerts=[{
        "name": "HighLatency", "at": 90,
        "labels": {"namespace": "shop", "deployment": "frontend", "severity": "warning"},
        "annotations": {"summary": "p99 latency above 2s"}}])
    [alert] = result.alert_notifications
    evidence = alert.record["evidence"]
    top = evidence["causes"][0]
    assert top["change"]["kind"] == "Deployment" and top["change"]["name"] == "payments"
    assert any("(service map, 2 hops)" in reason for reason in top["reasons"])
    tree = evidence["causality"]
    assert ("workload:shop/frontend", "alert:HighLatency") in {
        (e["source"], e["target"]) for e in tree["edges"]}
    assert ("Root: Deployment shop/payments rolled out revision 2 → shop/payments → "
            "shop/checkout → shop/frontend") in slack_text(alert.slack)
