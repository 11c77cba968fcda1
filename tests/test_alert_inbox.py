"""AlertInbox: Alertmanager's alerts in the store's SQLite file, all or none per notification."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from incident_detector.judge.alert_map import Unmapped
from incident_detector.model import Alert, AlertTarget
from incident_detector.store.alerts import AlertInbox, ReceiveSummary
from incident_detector.store.records import Store
from incident_detector.sources.alerts import AlertNotification, parse_webhook

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
NOW = datetime(2026, 11, 3, 18, 0, tzinfo=timezone.utc)


def fixture(name: str) -> AlertNotification:
    return parse_webhook((FIXTURES / name).read_bytes())


@pytest.fixture
def store(store_target):
    store = Store(store_target)
    yield store
    store.close()


@pytest.fixture
def inbox(store):
    return AlertInbox(store.connection)


def notification(*alerts: Alert) -> AlertNotification:
    firing = any(a.firing for a in alerts)
    return AlertNotification(version="4", status="firing" if firing else "resolved",
                             receiver="incident-detector", group_key="{}:{}", group_labels=(),
                             common_labels=(), common_annotations=(), external_url="",
                             truncated_alerts=0, alerts=alerts)


def make_alert(fingerprint: str = "a1", *, status: str = "firing", minute: int = 0,
               ends_at: datetime | None = None, **labels: str) -> Alert:
    labels = {"alertname": "HighErrorRate", "namespace": "demo-aiops", **labels}
    return Alert(fingerprint=fingerprint, status=status,
                 starts_at=NOW - timedelta(hours=1) + timedelta(minutes=minute), ends_at=ends_at,
                 labels=tuple(sorted(labels.items())),
                 annotations=(("summary", f"{fingerprint} {status}"),))


def resolved(alert: Alert, *, after: timedelta = timedelta(minutes=30)) -> Alert:
    return dataclasses.replace(alert, status="resolved", ends_at=alert.starts_at + after)


def test_receive_records_the_alerts_as_sent(inbox):
    summary = inbox.receive(fixture("firing-pod.json"), now=NOW)
    assert summary == ReceiveSummary(received=1, firing=1, resolved=0, new=1, stale=0)
    (stored,) = inbox.firing()
    assert stored.alert == fixture("firing-pod.json").alerts[0]
    assert stored.received_at == stored.updated_at == NOW
    assert stored.target is None and stored.unmapped_reason is None
    assert stored.incident is None and stored.closed_at is None
    assert inbox.newly_resolved() == []


def test_a_grouped_notification(inbox):
    summary = inbox.receive(fixture("grouped.json"), now=NOW)
    assert summary == ReceiveSummary(received=3, firing=2, resolved=1, new=2, stale=0)
    assert [s.alert.label("service") for s in inbox.firing()] == ["payments-api", "checkout"]
    assert inbox.count() == 3


def test_the_same_notification_twice_changes_nothing_but_updated_at(inbox):
    inbox.receive(fixture("grouped.json"), now=NOW)
    again = inbox.receive(fixture("grouped.json"), now=NOW + timedelta(minutes=5))
    assert again.new == 0 and inbox.count() == 3
    for stored in inbox.firing():
        assert stored.received_at == NOW
        assert stored.updated_at == NOW + timedelta(minutes=5)


def test_resolution_of_the_same_period(inbox):
    inbox.receive(fixture("firing-pod.json"), now=NOW)
    inbox.receive(fixture("resolved-pod.json"), now=NOW + timedelta(minutes=25))
    assert inbox.firing() == []
    (row,) = inbox.recent(limit=10)
    assert row["status"] == "resolved"
    assert row["ends_at"] == "2026-11-03T18:21:04.712000Z"
    assert inbox.count() == 1


def test_a_resolved_alert_stays_resolved_when_a_stale_firing_copy_arrives(inbox):
    alert = make_alert()
    inbox.receive(notification(resolved(alert)), now=NOW)
    # Alertmanager retried an older notification: it arrives after the resolution.
    summary = inbox.receive(notification(alert), now=NOW + timedelta(seconds=5))
    assert summary.stale == 1 and summary.new == 0
    assert inbox.firing() == []
    stored = inbox.get(alert.fingerprint, alert.starts_at)
    assert stored is not None and stored.alert.status == "resolved"
    assert stored.alert.ends_at == alert.starts_at + timedelta(minutes=30)
    assert stored.updated_at == NOW  # the stale copy touched nothing


def test_the_same_alert_firing_again_later_is_a_new_period(inbox):
    first = make_alert()
    inbox.receive(notification(first), now=NOW)
    inbox.receive(notification(resolved(first)), now=NOW + timedelta(minutes=1))
    again = make_alert(minute=45)
    summary = inbox.receive(notification(again), now=NOW + timedelta(minutes=2))
    assert summary.new == 1
    assert [s.alert.starts_at for s in inbox.firing()] == [again.starts_at]
    assert inbox.count() == 2


def test_annotations_follow_the_latest_notification(inbox):
    alert = make_alert()
    inbox.receive(notification(alert), now=NOW)
    changed = dataclasses.replace(alert, annotations=(("summary", "worse now"),))
    inbox.receive(notification(changed), now=NOW + timedelta(minutes=1))
    assert inbox.firing()[0].alert.annotation("summary") == "worse now"


def test_receive_is_all_or_none(tmp_path):
    store = Store(tmp_path / "state.sqlite3")  # a SQLite trigger makes the write fail
    inbox = AlertInbox(store.connection)
    inbox.receive(notification(make_alert("a1")), now=NOW)
    # A trigger that fails on the second row of the next notification.
    store.connection.execute(
        "CREATE TRIGGER refuse_b2 BEFORE INSERT ON alerts WHEN NEW.fingerprint='b2'"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.IntegrityError):
        inbox.receive(notification(make_alert("b1"), make_alert("b2")), now=NOW)
    assert [s.alert.fingerprint for s in inbox.firing()] == ["a1"]
    assert not store.connection.in_transaction


def test_mapping_attaching_and_closing(inbox):
    payments, watchdog = make_alert("p1", service="payments-api"), make_alert("w1")
    inbox.receive(notification(payments, watchdog), now=NOW)

    target = AlertTarget("demo-aiops", "payments-api", "service")
    assert inbox.set_mapping(payments.fingerprint, payments.starts_at, target)
    assert inbox.set_mapping(watchdog.fingerprint, watchdog.starts_at,
                             Unmapped("no namespace label (looked for: namespace)"))
    assert not inbox.set_mapping("nope", NOW, target)
    stored = {s.alert.fingerprint: s for s in inbox.firing()}
    assert stored["p1"].target == target and stored["p1"].unmapped_reason is None
    assert stored["w1"].target is None
    assert stored["w1"].unmapped_reason == "no namespace label (looked for: namespace)"

    assert inbox.attach(payments.fingerprint, payments.starts_at, "alert/demo-aiops/p1")
    assert not inbox.attach("nope", NOW, "x")
    assert inbox.newly_resolved() == []  # still firing

    inbox.receive(notification(resolved(payments), resolved(watchdog)),
                  now=NOW + timedelta(minutes=30))
    (done,) = inbox.newly_resolved()  # the unattached one has nothing to close
    assert done.alert.fingerprint == "p1" and done.incident == "alert/demo-aiops/p1"
    # The mapping survives the update.
    assert done.target == target

    assert inbox.close(payments.fingerprint, payments.starts_at, now=NOW + timedelta(minutes=31))
    assert not inbox.close(payments.fingerprint, payments.starts_at,
                           now=NOW + timedelta(minutes=32))
    assert inbox.newly_resolved() == []
    closed = inbox.get(payments.fingerprint, payments.starts_at)
    assert closed is not None and closed.closed_at == NOW + timedelta(minutes=31)


def test_a_mapping_can_change(inbox):
    alert = make_alert()
    inbox.receive(notification(alert), now=NOW)
    inbox.set_mapping(alert.fingerprint, alert.starts_at,
                      Unmapped("no watched Deployment in demo-aiops matches app='new'",
                               "demo-aiops"))
    inbox.set_mapping(alert.fingerprint, alert.starts_at, AlertTarget("demo-aiops", "new", "app"))
    stored = inbox.get(alert.fingerprint, alert.starts_at)
    assert stored is not None and stored.unmapped_reason is None
    assert stored.target == AlertTarget("demo-aiops", "new", "app")


def test_recent_for_the_api(inbox):
    a, b, c = make_alert("a"), make_alert("b"), make_alert("c", namespace="kube-system")
    inbox.receive(notification(a), now=NOW)
    inbox.receive(notification(b), now=NOW + timedelta(minutes=1))
    inbox.receive(notification(c), now=NOW + timedelta(minutes=2))
    inbox.receive(notification(resolved(a)), now=NOW + timedelta(minutes=3))
    inbox.set_mapping("a", a.starts_at, AlertTarget("demo-aiops", "payments-api", "deployment"))
    inbox.set_mapping("b", b.starts_at, Unmapped("ambiguous: app='x' matches Deployments y, z "
                                                 "in demo-aiops", "demo-aiops"))
    inbox.set_mapping("c", c.starts_at, Unmapped("namespace 'kube-system' (namespace) is not "
                                                 "watched", "kube-system"))

    def names(**filters) -> list[str]:
        return [row["fingerprint"] for row in inbox.recent(limit=10, **filters)]

    assert names() == ["a", "c", "b"]  # most recently updated first
    assert names(status="firing") == ["c", "b"]
    assert names(status="resolved") == ["a"]
    assert names(mapped=True) == ["a"]
    assert names(mapped=False) == ["c", "b"]
    assert names(namespace="demo-aiops") == ["a", "b"]
    assert names(namespace="demo-aiops", mapped=False) == ["b"]
    assert names(namespace="nowhere") == []
    assert [row["fingerprint"] for row in inbox.recent(limit=1)] == ["a"]

    rows = {row["fingerprint"]: row for row in inbox.recent(limit=10)}
    assert rows["b"] == {
        "fingerprint": "b", "name": "HighErrorRate", "status": "firing",
        "starts_at": "2026-11-03T17:00:00.000000Z", "ends_at": None,
        "labels": {"alertname": "HighErrorRate", "namespace": "demo-aiops"},
        "annotations": {"summary": "b firing"}, "generator_url": "", "group_key": "",
        "receiver": "", "received_at": "2026-11-03T18:01:00.000000Z",
        "updated_at": "2026-11-03T18:01:00.000000Z", "mapped": False,
        "namespace": "demo-aiops", "deployment": None, "mapped_by": None,
        "unmapped_reason": "ambiguous: app='x' matches Deployments y, z in demo-aiops",
        "incident": None, "closed_at": None}
    assert rows["a"]["mapped"] is True and rows["a"]["deployment"] == "payments-api"
    assert rows["a"]["ends_at"] == "2026-11-03T17:30:00.000000Z"


def test_prune_by_age_keeps_what_the_loop_still_needs(inbox):
    old = NOW - timedelta(days=8)
    quiet_firing, done, awaiting_close, closed = (make_alert(f) for f in ("f", "d", "w", "c"))
    inbox.receive(notification(quiet_firing, resolved(done), resolved(awaiting_close),
                               resolved(closed)), now=old)
    inbox.attach("w", awaiting_close.starts_at, "alert/w")
    inbox.attach("c", closed.starts_at, "alert/c")
    inbox.close("c", closed.starts_at, now=old)
    fresh = make_alert("n", minute=1)
    inbox.receive(notification(fresh), now=NOW)

    assert inbox.prune(now=NOW) == 3
    assert sorted(row["fingerprint"] for row in inbox.recent(limit=10)) == ["n", "w"]
    assert inbox.prune(now=NOW) == 0


def test_prune_to_max_rows_drops_the_oldest_finished_first(inbox):
    for index in range(6):
        alert = make_alert(f"r{index}", minute=index)
        inbox.receive(notification(resolved(alert)), now=NOW + timedelta(minutes=index))
    firing = make_alert("old-firing", minute=10)
    inbox.receive(notification(firing), now=NOW - timedelta(hours=1))

    assert inbox.prune(now=NOW + timedelta(hours=1), max_rows=3) == 4
    assert sorted(row["fingerprint"] for row in inbox.recent(limit=10)) == \
        ["old-firing", "r4", "r5"]
    assert inbox.prune(now=NOW + timedelta(hours=1), max_rows=0) == 3
    assert inbox.count() == 0


def test_the_inbox_survives_a_restart(store_target):
    path = store_target
    first = Store(path)
    inbox = AlertInbox(first.connection)
    inbox.receive(fixture("grouped.json"), now=NOW)
    (payments, *_rest) = inbox.firing()
    inbox.set_mapping(payments.alert.fingerprint, payments.alert.starts_at,
                      AlertTarget("demo-aiops", "payments-api", "service"))
    first.close()

    second = Store(path)
    try:
        reopened = AlertInbox(second.connection)
        assert [s.alert for s in reopened.firing()] == list(fixture("grouped.json").alerts[:2])
        assert reopened.firing()[0].target == AlertTarget("demo-aiops", "payments-api",
                                                          "service")
    finally:
        second.close()
