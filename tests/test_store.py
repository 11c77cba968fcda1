from __future__ import annotations

from datetime import datetime, timedelta, timezone

from incident_detector.store import Store

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
KEY = ("demo-aiops", "payments-api", 2)


def record(store: Store, key=KEY, at=T0) -> bool:
    return store.record_incident(key=key, replicaset="payments-api-6874dc9bf7", detected_at=at,
                                 record={"event": "incident", "summary": "bad"},
                                 deliveries=[("stdout", {"a": 1}), ("slack", {"text": "x"})])


def test_an_incident_is_recorded_once(tmp_path):
    store = Store(tmp_path / "state.sqlite3")
    assert record(store)
    assert not record(store)  # same key: nothing written, nothing queued again
    assert store.is_known(KEY) and store.known_keys() == {KEY}
    assert len(store.due(T0)) == 2


def test_memory_survives_a_reopen(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    record(store)
    item = store.due(T0, channels=["stdout"])[0]
    store.mark_delivered(item.id, T0)
    store.close()
    again = Store(path)
    assert again.is_known(KEY)
    assert [i.channel for i in again.due(T0)] == ["slack"]  # the undelivered one is still there


def test_failed_delivery_is_retried_later_and_given_up_is_shown(tmp_path):
    store = Store(":memory:")
    record(store)
    slack = store.due(T0, channels=["slack"])[0]
    store.mark_failed(slack.id, now=T0, error="http_503: unavailable", retry_at=T0 + timedelta(seconds=30))
    assert store.due(T0 + timedelta(seconds=29), channels=["slack"]) == []
    again = store.due(T0 + timedelta(seconds=30), channels=["slack"])[0]
    assert again.attempts == 1 and again.last_error == "http_503: unavailable"
    store.mark_given_up(again.id, now=T0 + timedelta(hours=2), error="too old")
    summary = store.outbox_summary()
    assert summary.pending == 1  # the stdout row
    assert summary.given_up[0]["channel"] == "slack" and summary.given_up[0]["attempts"] == 2


def test_recent_incidents_newest_first_with_summary():
    store = Store(":memory:")
    record(store, at=T0)
    record(store, key=("demo-aiops", "payments-api", 3), at=T0 + timedelta(minutes=5))
    store.remember_foreign(key=("demo-aiops", "payments-api", 1), replicaset="x",
                           detected_at=T0 - timedelta(days=1), origin="event")
    recent = store.recent_incidents()
    assert [r["revision"] for r in recent] == [3, 2, 1]
    assert recent[0]["summary"] == "bad" and recent[2]["origin"] == "event"
    assert store.count_incidents() == 3
