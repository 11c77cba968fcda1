"""run.reads: incidents of every kind in one list, one incident with its timeline, the stats."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from incident_detector.store.journal import Journal
from incident_detector.store.reads import (
    BadQuery,
    Filters,
    audit,
    incident,
    incidents,
    parse_id,
    queue,
    stats,
)
from incident_detector.store.records import Store

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def rollout(store, n, *, ns="shop", dep="checkout", at=T0, priority="P1", uid="u-1",
            channels=("stdout", "slack")):
    record = {"kind": "rollout", "priority": priority, "rule": "rollout-regression",
              "namespace": ns, "deployment": dep, "revision": n, "replicaset": f"{dep}-rs{n}",
              "deployment_uid": uid, "rollout_started_at": "2026-11-23T17:59:00Z",
              "detected_at": at.isoformat(), "summary": f"{dep} rev {n} is failing",
              "confidence": 0.75, "rollback_command": f"kubectl rollout undo deployment/{dep}",
              "evidence": {"signatures": []}}
    assert store.record_incident(key=(ns, dep, n, uid), replicaset=f"{dep}-rs{n}",
                                 detected_at=at, record=record,
                                 deliveries=[(c, {"text": "x"}) for c in channels])


def notice(store, key, *, kind="alert", ns="shop", dep="checkout", at=T0, priority="P2"):
    record = {"kind": kind, "priority": priority, "rule": "r", "key": key, "namespace": ns,
              "deployment": dep, "revision": 3, "deployment_uid": "u-1",
              "summary": f"{kind} {key}",
              "alert": {"name": "KubePodCrashLooping", "starts_at": "2026-11-23T17:58:00Z"}}
    assert store.record_notice(key=key, kind=kind, namespace=ns, deployment=dep, detected_at=at,
                               record=record, deliveries=[("stdout", record)])


@pytest.fixture
def store(store_target):
    store = Store(store_target)
    yield store
    store.close()


def ids(page):
    return [item["id"] for item in page.items]


def test_one_list_newest_first_with_stable_ids(store):
    rollout(store, 2, at=T0)
    notice(store, "alert/a/1", at=T0 + timedelta(minutes=1))
    notice(store, "errors/shop/x", kind="error_group", at=T0 + timedelta(minutes=2),
           priority="P1")
    rollout(store, 3, at=T0 + timedelta(minutes=1))  # same time as the alert: r before n
    page = incidents(store.connection)
    assert ids(page) == ["n2", "r2", "n1", "r1"] and page.next is None
    first = page.items[0]
    assert first["kind"] == "error_group" and first["status"] == "open"
    assert page.items[-1]["key"] == "shop/checkout/2/u-1"
    assert page.items[-1]["revision"] == 2 and page.items[-1]["confidence"] == 0.75


def test_keyset_pages_cover_everything_once_even_when_new_ones_arrive(store):
    for n in range(1, 8):
        rollout(store, n, at=T0 + timedelta(seconds=n))
    seen, before = [], None
    while True:
        page = incidents(store.connection, limit=3, before=before)
        seen += ids(page)
        if before is None:
            rollout(store, 99, at=T0 + timedelta(hours=1))  # arrives between two pages
        if page.next is None:
            break
        before = page.next
    assert seen == [f"r{n}" for n in range(7, 0, -1)]


@pytest.mark.parametrize("filters, expected", [
    (Filters(namespace="pay"), ["n2"]),
    (Filters(deployment="checkout"), ["n1", "r2", "r1"]),
    (Filters(kind="rollout"), ["r2", "r1"]),
    (Filters(kind="error_group"), ["n2"]),
    (Filters(priority="P2"), ["n1"]),
    (Filters(status="closed"), ["n1", "r1"]),
    (Filters(status="open"), ["n2", "r2"]),
    (Filters(since=T0 + timedelta(minutes=2)), ["n2", "n1"]),
    (Filters(namespace="shop", kind="rollout", status="open"), ["r2"]),
])
def test_filters(store, filters, expected):
    rollout(store, 1, at=T0)
    rollout(store, 2, at=T0 + timedelta(minutes=1))
    notice(store, "alert/a/1", at=T0 + timedelta(minutes=2))
    notice(store, "errors/pay/x", kind="error_group", ns="pay", dep="ledger",
           at=T0 + timedelta(minutes=3), priority="P1")
    store.close_notice(key="alert/a/1", closed_at=T0 + timedelta(minutes=5),
                       record={"summary": "Resolved after 3m"}, deliveries=[])
    journal = Journal(store.connection)
    entry = journal.propose(key=("shop", "checkout", 1, "u-1"), action="rollback", params={},
                            precondition="1", now=T0, state="approved")
    journal.advance(entry.id, expected=["approved"], to="verified", now=T0 + timedelta(minutes=4))
    assert ids(incidents(store.connection, filters=filters)) == expected


@pytest.mark.parametrize("make", [
    lambda: Filters(kind="deploy"), lambda: Filters(priority="P5"),
    lambda: Filters(status="resolved"),
])
def test_bad_filters(make):
    with pytest.raises(BadQuery):
        make()


@pytest.mark.parametrize("cursor", ["x1", "r", "r0", "r-1", "n1.5", "", "r99"])
def test_bad_cursors(store, cursor):
    rollout(store, 1)
    with pytest.raises(BadQuery):
        incidents(store.connection, before=cursor)


def test_limit_bounds(store):
    for limit in (0, 501):
        with pytest.raises(BadQuery):
            incidents(store.connection, limit=limit)
    assert parse_id("n42") == ("n", 42)


def test_one_incident_with_its_timeline(store):
    rollout(store, 2, at=T0)
    db = store.connection
    db.execute("UPDATE outbox SET delivered_at='2026-11-23T18:00:01.000000Z', attempts=1"
               " WHERE channel='stdout'")
    db.execute("UPDATE outbox SET gave_up_at='2026-11-23T18:05:00.000000Z', attempts=4,"
               " last_error='http_503: busy' WHERE channel='slack'")
    journal = Journal(db)
    entry = journal.propose(key=("shop", "checkout", 2, "u-1"), action="rollback",
                            params={"to_revision": 1}, precondition="7", now=T0)
    for at, who, decision in ((T0, "detector", "requested"),
                              (T0 + timedelta(minutes=1), "U1", "approved"),
                              (T0 + timedelta(minutes=2), "detector", "executed"),
                              (T0 + timedelta(minutes=4), "detector", "verified")):
        journal.audit(at=at, who=who, action="rollback", target="shop/checkout",
                      decision=decision, reason=f"{decision} because", dry_run=False,
                      result="pass" if decision == "verified" else None, action_id=entry.id)
    journal.audit(at=T0, who="x", action="rollback", target="other/thing", decision="refused",
                  reason="not ours", dry_run=False)
    journal.advance(entry.id, expected=["proposed"], to="verified", now=T0 + timedelta(minutes=4))
    found = incident(db, "r1")
    assert found["record"]["summary"] == "checkout rev 2 is failing"
    assert found["status"] == "closed"
    kinds = [(e["kind"], e["outcome"]) for e in found["timeline"]]
    assert kinds == [("rollout", None), ("detection", None), ("approval", "requested"),
                     ("notification", "delivered"), ("approval", "approved"),
                     ("action", "executed"), ("verification", "pass"),
                     ("notification", "given_up")]
    assert [a["state"] for a in found["actions"]] == ["verified"]
    assert len(found["actions"][0]["audit"]) == 4
    assert "http_503" in found["timeline"][-1]["detail"]
    assert incident(db, "r2") is None and incident(db, "n7") is None


def test_an_alert_incident_timeline_ends_resolved(store):
    notice(store, "alert/a/1", at=T0)
    store.close_notice(key="alert/a/1", closed_at=T0 + timedelta(minutes=14),
                       record={"summary": "Resolved after 14m"},
                       deliveries=[("stdout", {"text": "resolved"})])
    found = incident(store.connection, "n1")
    assert [e["kind"] for e in found["timeline"] if e["kind"] != "notification"] == \
        ["alert", "detection", "resolved"]
    assert found["timeline"][-1]["detail"] == "Resolved after 14m"
    assert [n["follow_up"] for n in found["notifications"]] == [False, True]


def test_queue_is_most_urgent_first_and_only_open(store):
    rollout(store, 1, at=T0, priority="P2")
    notice(store, "errors/shop/x", kind="error_group", at=T0 + timedelta(minutes=1), priority="P4")
    notice(store, "alert/a/1", at=T0 + timedelta(minutes=2), priority="P1")
    notice(store, "alert/b/1", at=T0 - timedelta(days=2), priority="P1")  # too old
    notice(store, "alert/c/1", at=T0 + timedelta(minutes=3), priority="P1")
    store.close_notice(key="alert/c/1", closed_at=T0 + timedelta(minutes=4), record={},
                       deliveries=[])
    assert [i["id"] for i in queue(store.connection, since=T0 - timedelta(hours=24))] == \
        ["n2", "r1", "n1"]


def test_stats_today(store):
    rollout(store, 1, at=T0)
    rollout(store, 2, at=T0 - timedelta(days=1))  # yesterday
    notice(store, "alert/a/1", at=T0 + timedelta(minutes=1), priority="P2")
    store.connection.execute("UPDATE outbox SET gave_up_at=? WHERE channel='slack'",
                             ("2026-11-23T18:10:00.000000Z",))
    store.connection.execute("UPDATE outbox SET gave_up_at=? WHERE channel='slack'"
                             " AND revision=2", ("2026-11-22T18:10:00.000000Z",))
    journal = Journal(store.connection)
    journal.audit(at=T0, who="d", action="rollback", target="shop/checkout",
                  decision="requested", reason="", dry_run=False)
    journal.audit(at=T0 - timedelta(days=1), who="d", action="rollback", target="shop/checkout",
                  decision="requested", reason="", dry_run=False)
    figures = stats(store.connection, now=T0 + timedelta(hours=1))
    assert figures["incidents_today"] == {
        "total": 2, "by_kind": {"rollout": 1, "alert": 1, "change": 0, "error_group": 0},
        "by_priority": {"P1": 1, "P2": 1, "P3": 0, "P4": 0}}
    assert figures["actions_today"] == {"total": 1, "by_decision": {"requested": 1}}
    assert figures["notifications_given_up"] == {"today": 1, "total": 2}
    assert figures["open_incidents"] == 2


def test_audit_filters_and_pages(store):
    journal = Journal(store.connection)
    for n in range(6):
        journal.audit(at=T0 + timedelta(minutes=n), who="U1" if n % 2 else "detector",
                      action="rollback", target="shop/checkout" if n < 4 else "shop_x/y",
                      decision="approved" if n % 2 else "requested", reason="", dry_run=False)
    db = store.connection
    first = audit(db, limit=4)
    assert [r["id"] for r in first.items] == [6, 5, 4, 3] and first.next == "3"
    assert [r["id"] for r in audit(db, before=3).items] == [2, 1]
    assert [r["id"] for r in audit(db, who="U1").items] == [6, 4, 2]
    assert [r["id"] for r in audit(db, target="shop").items] == [4, 3, 2, 1]
    assert [r["id"] for r in audit(db, target="shop_x").items] == [6, 5]
    assert [r["id"] for r in audit(db, decision="requested",
                                   since=T0 + timedelta(minutes=2)).items] == [5, 3]


def test_reads_stay_cheap_with_a_thousand_incidents(store):
    for n in range(500):
        rollout(store, n + 1, dep=f"d{n % 50}", at=T0 + timedelta(seconds=n))
        notice(store, f"alert/{n}/1", dep=f"d{n % 50}", at=T0 + timedelta(seconds=n),
               priority="P1" if n % 7 == 0 else "P3")
    db = store.connection
    # The CPU time this process spends, not the wall time, which other processes on a busy
    # machine lengthen: SQLite's work is all here (PostgreSQL's is in its server, so there this
    # bounds what the reads cost on the client's side).
    started = time.process_time()
    for _ in range(10):
        incidents(db, limit=50)
        queue(db, since=T0 - timedelta(hours=1), limit=20)
        stats(db, now=T0 + timedelta(hours=1))
    per_overview = (time.process_time() - started) / 10
    assert per_overview < 0.05, per_overview  # a few ms on a laptop
