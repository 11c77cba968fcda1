"""The dashboard's sessions in the store (store/sessions.py), on SQLite and PostgreSQL: only a
digest of the token is kept, a session ends at its time or when signed out, and every
connection to the same store (another replica, a restarted process) knows it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from incident_detector.store.records import Store
from incident_detector.store.approvals import token_digest as digest
from incident_detector.store.sessions import DashboardSessions, Session

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
TOKEN = "cookie-value-of-a-session"
END = T0 + timedelta(hours=8)


def test_only_the_digest_of_the_token_is_kept(store_target):
    store = Store(store_target)
    DashboardSessions(store.connection).start(TOKEN, user="alice", now=T0, expires_at=END)
    rows = store.connection.execute("SELECT * FROM dashboard_sessions").fetchall()
    assert len(rows) == 1 and digest(TOKEN) in rows[0]
    assert len(digest(TOKEN)) == 64 and not any(TOKEN in str(value) for value in rows[0])


def test_a_session_is_known_to_another_connection_and_after_a_restart(store_target):
    first = Store(store_target, owner="replica-1")
    second = Store(store_target, owner="replica-2")
    DashboardSessions(first.connection).start(TOKEN, user="alice", now=T0, expires_at=END)
    assert DashboardSessions(second.connection).find(TOKEN, now=T0) == Session("alice", END)
    first.close()
    second.close()
    restarted = Store(store_target)
    assert DashboardSessions(restarted.connection).find(TOKEN, now=T0 + timedelta(hours=1)) \
        == Session("alice", END)
    assert DashboardSessions(restarted.connection).find("another-token", now=T0) is None


def test_an_ended_session_is_refused_and_forgotten(store_target):
    sessions = DashboardSessions(Store(store_target).connection)
    sessions.start(TOKEN, user="alice", now=T0, expires_at=END)
    assert sessions.find(TOKEN, now=END - timedelta(microseconds=1)) is not None
    assert sessions.find(TOKEN, now=END) is None
    assert sessions.count() == 0


def test_signing_in_prunes_the_sessions_that_ended(store_target):
    sessions = DashboardSessions(Store(store_target).connection)
    sessions.start("old", user="alice", now=T0, expires_at=T0 + timedelta(hours=1))
    sessions.start("live", user="alice", now=T0, expires_at=END)
    sessions.start("new", user="alice", now=T0 + timedelta(hours=1), expires_at=END)
    assert sessions.count() == 2
    assert sessions.find("old", now=T0) is None  # already gone, not merely refused
    assert sessions.find("live", now=T0 + timedelta(hours=1)) is not None


def test_signing_out_deletes_the_session_for_every_connection(store_target):
    one = DashboardSessions(Store(store_target).connection)
    other = DashboardSessions(Store(store_target).connection)
    one.start(TOKEN, user="alice", now=T0, expires_at=END)
    assert other.end(TOKEN) and not other.end(TOKEN)
    assert one.find(TOKEN, now=T0) is None and one.count() == 0


def test_without_a_store_the_sessions_are_the_process_own():
    sessions = DashboardSessions()
    sessions.start(TOKEN, user="alice", now=T0, expires_at=END)
    assert sessions.find(TOKEN, now=T0) == Session("alice", END)
    assert DashboardSessions().find(TOKEN, now=T0) is None
