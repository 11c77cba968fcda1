"""The remediation journal and the audit trail: never twice, never lost, never deleted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from incident_detector.store.journal import (
    APPROVED,
    DONE,
    EXECUTING,
    PROPOSED,
    REFUSED,
    REJECTED,
    Journal,
)
from incident_detector.store.records import Store

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
KEY = ("demo-aiops", "payments-api", 2, "uid-1")


@pytest.fixture
def journal(store_target):
    store = Store(store_target)
    yield Journal(store.connection)
    store.close()


def test_an_action_is_written_down_once_per_incident(journal):
    entry = journal.propose(key=KEY, action="rollback", params={"to_revision": 1},
                            precondition="8474", now=T0)
    assert entry is not None and entry.state == PROPOSED and entry.params == {"to_revision": 1}
    assert journal.propose(key=KEY, action="rollback", params={}, precondition="9", now=T0) is None
    # Another kind of action on the same incident is another entry; so is another Deployment.
    assert journal.propose(key=KEY, action="restart", params={}, precondition="8474", now=T0)
    assert journal.propose(key=(*KEY[:3], "uid-2"), action="rollback", params={},
                           precondition="1", now=T0)
    assert journal.find(KEY, "rollback") == entry


def test_states_move_only_from_what_was_expected(journal):
    entry = journal.propose(key=KEY, action="rollback", params={}, precondition="8474", now=T0)
    later = T0 + timedelta(seconds=5)
    assert journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=later, who="U123")
    # A second click, or a racing replica: nothing moves.
    assert not journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=later, who="U999")
    assert not journal.advance(entry.id, expected=[PROPOSED], to=REJECTED, now=later, who="U999")
    assert journal.advance(entry.id, expected=[APPROVED], to=EXECUTING, now=later)
    assert not journal.advance(entry.id, expected=[APPROVED], to=EXECUTING, now=later)
    assert journal.advance(entry.id, expected=[EXECUTING], to=DONE, now=later, result="applied")
    final = journal.get(entry.id)
    assert (final.state, final.decided_by, final.result) == (DONE, "U123", "applied")
    with pytest.raises(ValueError):
        journal.advance(entry.id, expected=[DONE], to="exploded", now=later)


def test_a_restart_finds_what_was_approved_or_under_way(store_target):
    path = store_target
    store = Store(path)
    journal = Journal(store.connection)
    approved = journal.propose(key=KEY, action="rollback", params={}, precondition="1", now=T0,
                               state=APPROVED)
    running = journal.propose(key=KEY, action="restart", params={}, precondition="1", now=T0)
    journal.advance(running.id, expected=[PROPOSED], to=APPROVED, now=T0)
    journal.advance(running.id, expected=[APPROVED], to=EXECUTING, now=T0)
    journal.propose(key=KEY, action="pause", params={}, precondition="1", now=T0, state=REFUSED)
    store.close()
    again = Journal(Store(path).connection)
    assert [(e.id, e.state) for e in again.unfinished()] == [(approved.id, APPROVED),
                                                             (running.id, EXECUTING)]
    with pytest.raises(ValueError):
        again.propose(key=KEY, action="scale", params={}, precondition="1", now=T0, state=DONE)


def test_the_audit_trail_is_kept_newest_first_and_summarised(journal):
    for index, decision in enumerate(["requested", "approved", "executed", "verified"]):
        journal.audit(at=T0 + timedelta(seconds=index), who="U123" if index else "detector",
                      action="rollback", target="demo-aiops/payments-api", decision=decision,
                      reason="why", dry_run=index == 2, result="pass" if index == 3 else None)
    rows = journal.audit_rows(limit=3)
    assert [r.decision for r in rows] == ["verified", "executed", "approved"]
    assert rows[1].dry_run is True and rows[0].as_dict()["result"] == "pass"
    assert [r.decision for r in journal.audit_rows(before_id=rows[-1].id)] == ["requested"]
    assert journal.audit_summary() == {"approved": 1, "executed": 1, "requested": 1,
                                       "verified": 1}
    assert rows[0].as_dict()["when"] == "2026-11-27T10:00:03.000000Z"
