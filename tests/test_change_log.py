"""The change timeline's table (store.changes.ChangeLog), on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from incident_detector.model import Change, FieldChange
from incident_detector.store.changes import ChangeLog
from incident_detector.store.records import Store

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def change(n: int, *, namespace: str = "shop", name: str = "api", at: datetime | None = None
           ) -> Change:
    moment = at or T0 + timedelta(minutes=n)
    return Change(namespace=namespace, kind="Deployment", name=name, action="updated", at=moment,
                  observed_at=moment, manager="kubectl", operation="Update", uid="u",
                  resource_version=str(1000 + n),
                  fields=(FieldChange("image api", f"api:{n}", f"api:{n + 1}"),))


@pytest.fixture
def store(store_target):
    store = Store(store_target)
    yield store
    store.close()


def test_a_change_is_recorded_once_with_an_id(store):
    log = ChangeLog(store.connection, retention=timedelta(days=1), max_rows=100)
    first = log.record([change(1), change(2)])
    assert [c.id for c in first] == [1, 2]
    (third,) = log.record([change(2), change(3)])  # the known one is skipped
    # Ids only grow (a skipped insert may use up a number on either database).
    assert third.resource_version == "1003" and third.id > 2
    assert log.count() == 3
    assert [c.resource_version for c in log.query(limit=10)] == ["1003", "1002", "1001"]
    assert [c.id for c in log.query(after_id=1)] == [2, third.id]
    assert [c.id for c in log.recent(since=T0 + timedelta(minutes=2), namespaces=["shop"])] \
        == [2, third.id]


def test_prune_by_age_then_by_count(store):
    log = ChangeLog(store.connection, retention=timedelta(minutes=30), max_rows=2)
    log.record([change(n) for n in range(1, 6)] + [change(0, at=T0 - timedelta(hours=2))])
    assert log.prune(T0 + timedelta(minutes=20)) == 4  # one too old, then the oldest past two
    assert [c.resource_version for c in log.query()] == ["1005", "1004"]


def test_emissions_wait_retry_and_give_up(store):
    log = ChangeLog(store.connection, retention=timedelta(days=1), max_rows=100, emit=True)
    a, b = log.record([change(1), change(2)])
    assert [p.change.id for p in log.pending_emission(T0 + timedelta(hours=1))] == [a.id, b.id]
    log.mark_emitted(a.id)
    log.mark_emit_failed(b.id, error="http_503", retry_at=T0 + timedelta(hours=2))
    assert log.pending_emission(T0 + timedelta(hours=1)) == []
    assert log.next_emission_at() == T0 + timedelta(hours=2)
    log.mark_emit_given_up(b.id, error="too old")
    assert log.emission_summary() == {"sent": 1, "gave_up": 1}
