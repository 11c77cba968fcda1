from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlite3

import pytest

from incident_detector.store import schema as schema_module
from incident_detector.store.records import Store, StoreVersionError
from incident_detector.store.sessions import DashboardSessions

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
from fixtures.store.schema_v6 import TABLES_V6, schema_6_file
KEY = ("demo-aiops", "payments-api", 2, "uid-1")


def record(store: Store, key=KEY, at=T0) -> bool:
    return store.record_incident(key=key, replicaset="payments-api-6874dc9bf7", detected_at=at,
                                 record={"event": "incident", "summary": "bad"},
                                 deliveries=[("stdout", {"a": 1}), ("slack", {"text": "x"})])


def test_an_incident_is_recorded_once(store_target):
    store = Store(store_target)
    assert record(store)
    assert not record(store)  # same key: nothing written, nothing queued again
    assert store.is_known(KEY) and store.known_keys() == {KEY}
    assert len(store.outbox.due(T0)) == 2


def test_memory_survives_a_reopen(store_target):
    path = store_target
    store = Store(path)
    record(store)
    item = store.outbox.due(T0, channels=["stdout"])[0]
    store.outbox.mark_delivered(item.id, T0)
    store.close()
    again = Store(path)
    assert again.is_known(KEY)
    assert [i.channel for i in again.outbox.due(T0)] == ["slack"]  # the undelivered one is still there


def test_failed_delivery_is_retried_later_and_given_up_is_shown(store_target):
    store = Store(store_target)
    record(store)
    slack = store.outbox.due(T0, channels=["slack"])[0]
    store.outbox.mark_failed(slack.id, now=T0, error="http_503: unavailable", retry_at=T0 + timedelta(seconds=30))
    assert store.outbox.due(T0 + timedelta(seconds=29), channels=["slack"]) == []
    again = store.outbox.due(T0 + timedelta(seconds=30), channels=["slack"])[0]
    assert again.attempts == 1 and again.last_error == "http_503: unavailable"
    store.outbox.mark_given_up(again.id, now=T0 + timedelta(hours=2), error="too old")
    summary = store.outbox.summary()
    assert summary.pending == 1  # the stdout row
    assert summary.given_up[0]["channel"] == "slack" and summary.given_up[0]["attempts"] == 2


def test_recent_incidents_newest_first_with_summary(store_target):
    store = Store(store_target)
    record(store, at=T0)
    record(store, key=("demo-aiops", "payments-api", 3, "uid-1"), at=T0 + timedelta(minutes=5))
    store.remember_foreign(key=("demo-aiops", "payments-api", 1, "uid-1"), replicaset="x",
                           detected_at=T0 - timedelta(days=1), origin="event")
    recent = store.recent_incidents()
    assert [r["revision"] for r in recent] == [3, 2, 1]
    assert recent[0]["summary"] == "bad" and recent[2]["origin"] == "event"
    assert store.count_incidents() == 3


def test_a_deployment_created_again_has_incidents_of_its_own(store_target):
    store = Store(store_target)
    record(store)
    again = ("demo-aiops", "payments-api", 2, "uid-2")
    assert not store.is_known(again)
    assert record(store, key=again)
    assert store.known_keys() == {KEY, again}
    assert {item.key for item in store.outbox.due(T0)} == {KEY, again}


def test_the_revisions_judged_bad_per_deployment_of_a_namespace(store_target):
    store = Store(store_target)
    record(store)
    record(store, key=("demo-aiops", "payments-api", 3, "uid-2"))
    record(store, key=("demo-aiops", "fraud-check", 2, "uid-9"))
    record(store, key=("other", "payments-api", 4, "uid-1"))
    assert store.remember_foreign(key=("demo-aiops", "payments-api", 5, "uid-2"),
                                  replicaset="payments-api-5d4c3b2a1", detected_at=T0,
                                  origin="event")
    bad = store.judged_bad("demo-aiops")
    assert sorted(bad["payments-api"]) == [(2, "uid-1", "payments-api-6874dc9bf7"),
                                           (3, "uid-2", "payments-api-6874dc9bf7"),
                                           (5, "uid-2", "payments-api-5d4c3b2a1")]
    assert bad["fraud-check"] == [(2, "uid-9", "payments-api-6874dc9bf7")]
    assert store.judged_bad("nowhere") == {}


# --- the migration from the first schema (no uids, no user_version) -------------------------

FIRST_SCHEMA = """
CREATE TABLE incidents (
    namespace TEXT NOT NULL, deployment TEXT NOT NULL, revision INTEGER NOT NULL,
    replicaset TEXT NOT NULL, detected_at TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT 'detected', record TEXT NOT NULL,
    PRIMARY KEY (namespace, deployment, revision));
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, deployment TEXT NOT NULL,
    revision INTEGER NOT NULL, channel TEXT NOT NULL, payload TEXT NOT NULL,
    created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,
    last_error TEXT, delivered_at TEXT, gave_up_at TEXT,
    UNIQUE (namespace, deployment, revision, channel));
CREATE INDEX outbox_pending ON outbox (delivered_at, gave_up_at, next_attempt_at);
INSERT INTO incidents VALUES ('demo-aiops', 'payments-api', 2, 'payments-api-6874dc9bf7',
    '2026-11-23T18:00:00.000000Z', 'detected', '{"summary": "old"}');
INSERT INTO incidents VALUES ('demo-aiops', 'payments-api', 5, '',
    '2026-11-23T18:00:00.000000Z', 'event', '{}');
INSERT INTO outbox (namespace, deployment, revision, channel, payload, created_at,
    next_attempt_at) VALUES ('demo-aiops', 'payments-api', 2, 'slack', '{"text": "x"}',
    '2026-11-23T18:00:00.000000Z', '2026-11-23T18:00:00.000000Z');
"""


def first_schema_file(tmp_path):
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FIRST_SCHEMA)
    db.close()
    return path


def test_a_file_of_the_first_schema_is_migrated_and_keeps_everything(tmp_path):
    store = Store(first_schema_file(tmp_path))
    assert store.migrated_from == 0
    tables = {name for (name,) in store.connection.execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"incidents", "outbox", "actions", "audit"} <= tables
    assert store.known_keys() == {("demo-aiops", "payments-api", 2, ""),
                                  ("demo-aiops", "payments-api", 5, "")}
    [pending] = store.outbox.due(T0)
    assert pending.key == ("demo-aiops", "payments-api", 2, "") and pending.channel == "slack"
    assert store.has_legacy
    store.close()
    again = Store(tmp_path / "v1.sqlite3")  # opened again: nothing left to migrate
    assert again.migrated_from is None and again.count_incidents() == 2


def test_an_old_incident_is_adopted_by_the_deployment_it_was_about(tmp_path):
    store = Store(first_schema_file(tmp_path))
    key = ("demo-aiops", "payments-api", 2, "uid-1")
    # The same ReplicaSet, created before the incident was detected: the same Deployment.
    assert store.adopt_legacy(key=key, replicaset="payments-api-6874dc9bf7", replicaset_uid="r1",
                              replicaset_created_at=T0 - timedelta(minutes=3))
    assert store.is_known(key)
    [pending] = store.outbox.due(T0)
    assert pending.key == key  # its undelivered notification follows it
    # Done once: nothing more to adopt for that revision.
    assert not store.adopt_legacy(key=key, replicaset="payments-api-6874dc9bf7",
                                  replicaset_uid="r1", replicaset_created_at=T0)


def test_a_deployment_created_again_does_not_adopt_the_old_ones_incident(tmp_path):
    store = Store(first_schema_file(tmp_path))
    key = ("demo-aiops", "payments-api", 2, "uid-new")
    # Its ReplicaSet (same template, same name) was created after the old incident.
    assert not store.adopt_legacy(key=key, replicaset="payments-api-6874dc9bf7",
                                  replicaset_uid="r2", replicaset_created_at=T0 + timedelta(hours=1))
    assert not store.is_known(key)
    # Another ReplicaSet under the same revision number is another rollout.
    assert not store.adopt_legacy(key=key, replicaset="payments-api-zzzz", replicaset_uid="r3",
                                  replicaset_created_at=T0 - timedelta(hours=1))


def test_a_read_back_event_without_uid_is_adopted_by_revision(tmp_path):
    store = Store(first_schema_file(tmp_path))
    key = ("demo-aiops", "payments-api", 5, "uid-1")
    assert store.adopt_legacy(key=key, replicaset="payments-api-x", replicaset_uid="r5",
                              replicaset_created_at=T0 - timedelta(minutes=1))
    assert store.is_known(key)


def test_a_file_from_a_newer_detector_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "future.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreVersionError, match="schema version 99"):
        Store(path)


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    # A step that fails half-way (a full disk, a killed process): the transaction undoes it.
    path = first_schema_file(tmp_path)

    class Boom(Exception):
        pass

    def explode(db):
        db.execute("ALTER TABLE incidents RENAME TO incidents_v1")
        raise Boom()

    monkeypatch.setitem(schema_module.MIGRATIONS, 0, (explode, 2))
    with pytest.raises(Boom):
        Store(path)
    db = sqlite3.connect(path)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "incidents" in tables and "incidents_v1" not in tables
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    monkeypatch.undo()
    assert Store(path).migrated_from == 0  # and the real step runs on the next start


def test_a_file_of_version_2_gains_the_journal_and_the_audit_trail(tmp_path):
    path = tmp_path / "v2.sqlite3"
    store = Store(path)
    record(store)
    store.connection.execute("DROP TABLE actions")
    store.connection.execute("DROP TABLE audit")
    store.connection.execute("PRAGMA user_version=2")
    store.close()
    again = Store(path)
    assert again.migrated_from == 2 and again.is_known(KEY)
    assert again.connection.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0


def test_schema_4_files_gain_a_priority_column_read_from_their_records(tmp_path):

    path = tmp_path / "v4.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(TABLES_V6)  # the tables as schema 4 made them (and the change timeline)
    db.execute("INSERT INTO incidents (namespace, deployment, revision, deployment_uid,"
               " replicaset, detected_at, record) VALUES ('ns', 'api', 2, 'u', 'api-1',"
               " '2026-11-23T18:00:00.000000Z', '{\"kind\": \"rollout\", \"priority\": \"P1\"}')")
    db.execute("INSERT INTO notices (key, kind, namespace, deployment, detected_at, record)"
               " VALUES ('alert/f/t', 'alert', 'ns', 'api', '2026-11-23T18:00:00.000000Z', '{}')")
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    store = Store(path)
    assert store.migrated_from == 4
    rows = store.connection.execute(
        "SELECT priority FROM incidents UNION ALL SELECT priority FROM notices").fetchall()
    assert rows == [("P1",), (None,)]
    # New rows carry theirs.
    assert store.record_notice(key="alert/g/t", kind="alert", namespace="ns", deployment="api",
                               detected_at=T0, record={"priority": "P3"}, deliveries=())
    assert store.connection.execute(
        "SELECT priority FROM notices WHERE key='alert/g/t'").fetchone() == ("P3",)


def test_schema_5_files_gain_the_change_timeline(tmp_path):
    path = tmp_path / "v5.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE changes")  # the file as schema 5 left it
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()
    store = Store(path)
    assert store.migrated_from == 5
    columns = {row[1] for row in store.connection.execute("PRAGMA table_info(changes)")}
    assert {"namespace", "kind", "name", "resource_version", "at", "record",
            "emit_state"} <= columns


# --- schema 7: ids of their own, on both databases --------------------------------------------

def test_schema_6_files_keep_their_rowids_as_ids(tmp_path):
    # /incidents/r12 links made before stay right: the ids are the rowids they were.
    store = Store(schema_6_file(tmp_path / "v6.sqlite3"))
    assert store.migrated_from == 6
    rows = store.connection.execute("SELECT id, revision, priority FROM incidents ORDER BY id")
    assert rows.fetchall() == [(3, 5, "P2"), (7, 2, "P2")]
    assert store.connection.execute("SELECT id FROM notices").fetchall() == [(4,)]
    # New rows number on from there, and the unique key still holds.
    assert record(store, key=("ns", "api", 9, "u"))
    assert not store.record_incident(key=("ns", "api", 2, "u"), replicaset="api-1",
                                     detected_at=T0, record={}, deliveries=())
    assert store.connection.execute("SELECT MAX(id) FROM incidents").fetchone()[0] == 8


def test_a_store_of_a_newer_detector_is_refused_on_postgresql(pg_url):
    store = Store(pg_url)
    store.connection.execute("INSERT INTO schema_migrations VALUES (99, 'then', 'future')")
    with pytest.raises(StoreVersionError) as refused:
        Store(pg_url)
    assert "schema version 99" in str(refused.value) and "DATABASE_URL" in str(refused.value)
    assert "pw-" not in str(refused.value)  # the URL in the message has no password


# --- schema 8: the dashboard's sessions -------------------------------------------------------

def _as_schema(store: Store, version: int) -> None:
    """Take the store back to what schema 7 or 8 left: without the tables of later versions."""
    db = store.connection
    with db.transaction():
        db.execute("DROP TABLE dashboard_keys")
        if version < 8:
            db.execute("DROP TABLE dashboard_sessions")
        if db.dialect == "postgresql":
            # A new database has one row: the version it was created at.
            db.execute("UPDATE schema_migrations SET version=?", (version,))
        else:
            db.execute(f"PRAGMA user_version={version}")
    store.close()



def _sessions_index(store: Store) -> bool:
    if store.dialect == "postgresql":
        sql = "SELECT 1 FROM pg_indexes WHERE indexname='dashboard_sessions_expires'"
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE name='dashboard_sessions_expires'"
    return store.connection.execute(sql).fetchone() is not None


def test_a_schema_7_store_gets_the_sessions_table_and_keeps_its_rows(store_target):
    store = Store(store_target)
    assert record(store)
    _as_schema(store, 7)
    again = Store(store_target, owner="replica-2")
    assert again.migrated_from == 7 and again.is_known(KEY)
    assert again.connection.execute("SELECT COUNT(*) FROM dashboard_sessions").fetchone()[0] == 0
    assert _sessions_index(again)
    if again.dialect == "postgresql":
        applied = again.connection.execute(
            "SELECT version, applied_by FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [(7, "incident-detector"), (8, "replica-2"), (9, "replica-2")]
    assert Store(store_target).migrated_from is None  # nothing left to do


def test_a_schema_6_file_comes_up_to_9_in_one_go(tmp_path):
    store = Store(schema_6_file(tmp_path / "v6.sqlite3"))
    assert store.migrated_from == 6 and schema_module.SCHEMA_VERSION == 9
    assert store.connection.execute("PRAGMA user_version").fetchone()[0] == 9
    assert _sessions_index(store)
    assert DashboardSessions(store.connection).shared_key("k", now=T0)


# --- schema 9: the keys the replicas share ----------------------------------------------------

def test_a_schema_8_store_gets_the_keys_table_and_keeps_its_sessions(store_target):
    store = Store(store_target)
    DashboardSessions(store.connection).start("token-1", user="alice", now=T0,
                                              expires_at=T0 + timedelta(hours=1))
    _as_schema(store, 8)
    again = Store(store_target, owner="replica-2")
    assert again.migrated_from == 8
    sessions = DashboardSessions(again.connection)
    assert sessions.find("token-1", now=T0) is not None
    assert again.connection.execute("SELECT COUNT(*) FROM dashboard_keys").fetchone()[0] == 0
    assert len(sessions.shared_key("dashboard-csrf", now=T0)) == 32
    if again.dialect == "postgresql":
        applied = again.connection.execute(
            "SELECT version, applied_by FROM schema_migrations ORDER BY version").fetchall()
        assert applied == [(8, "incident-detector"), (9, "replica-2")]


def test_a_store_of_schema_10_is_refused_by_this_detector(store_target):
    store = Store(store_target)
    db = store.connection
    if db.dialect == "postgresql":
        db.execute("INSERT INTO schema_migrations VALUES (10, 'then', 'future')")
    else:
        db.execute("PRAGMA user_version=10")
    store.close()
    with pytest.raises(StoreVersionError, match="schema version 10; this detector knows up to 9"):
        Store(store_target)


def test_two_replicas_starting_together_migrate_once(pg_url):
    import threading

    stores, errors = [], []
    barrier = threading.Barrier(4)

    def start(name: str) -> None:
        barrier.wait()
        try:
            stores.append(Store(pg_url, owner=name))
        except Exception as exc:  # pragma: no cover - the assertion below says which
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(f"replica-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(s.migrated_from is None for s in stores) == [False, True, True, True]
    applied = stores[0].connection.execute(
        "SELECT version, applied_by FROM schema_migrations").fetchall()
    assert len(applied) == 1 and applied[0][0] == schema_module.SCHEMA_VERSION


def test_one_incident_per_revision_across_replicas(store_target):
    first, second = Store(store_target, owner="a"), Store(store_target, owner="b")
    assert record(first)
    assert not record(second)  # the other replica's row is there: nothing to send
    assert len(second.outbox.due(T0)) == 2


def test_an_outbox_row_is_sent_by_the_one_replica_that_claimed_it(store_target):
    first, second = Store(store_target, owner="a"), Store(store_target, owner="b")
    record(first)
    row = first.outbox.due(T0, channels=["slack"])[0]
    assert first.outbox.claim(row.id, T0)
    assert not second.outbox.claim(row.id, T0)
    assert second.outbox.due(T0, channels=["slack"]) == []  # held by the other sender
    assert first.outbox.claim(row.id, T0 + timedelta(seconds=1))  # its own claim, renewed
    # A replica killed mid-send: its claim runs out and the row goes out from the other.
    later = T0 + timedelta(seconds=store_module_claim() + 2)
    assert [i.id for i in second.outbox.due(later, channels=["slack"])] == [row.id]
    assert second.outbox.claim(row.id, later)
    second.outbox.mark_delivered(row.id, later)
    assert not first.outbox.claim(row.id, later + timedelta(hours=1))  # delivered: nobody sends again


def store_module_claim() -> float:
    from incident_detector.store.outbox import CLAIM_SECONDS

    return CLAIM_SECONDS


def test_a_notice_closes_once_whichever_replica_closes_it(store_target):
    first, second = Store(store_target, owner="a"), Store(store_target, owner="b")
    assert first.record_notice(key="alert/f/t", kind="alert", namespace="ns", deployment="api",
                               detected_at=T0, record={"summary": "s", "priority": "P2"},
                               deliveries=[("stdout", {"a": 1})])
    assert not second.record_notice(key="alert/f/t", kind="alert", namespace="ns",
                                    deployment="api", detected_at=T0, record={},
                                    deliveries=[("stdout", {"a": 1})])
    closed = [s.close_notice(key="alert/f/t", closed_at=T0 + timedelta(minutes=1),
                             record={"why": "resolved"}, deliveries=[("stdout", {"b": 2})])
              for s in (second, first)]
    assert closed == [True, False]
    notice = first.notice("alert/f/t")
    assert notice["record"] == {"summary": "s", "priority": "P2", "closed": {"why": "resolved"}}
    assert first.recent_notices()[0]["summary"] == "s"
    assert len(first.outbox.due(T0 + timedelta(minutes=2))) == 2  # the notice's line and the follow-up


def test_a_legacy_row_is_adopted_on_both_databases(store_target):
    store = Store(store_target)
    store.remember_foreign(key=("ns", "api", 2, ""), replicaset="api-1", detected_at=T0,
                           origin="event")
    assert store.has_legacy
    assert store.adopt_legacy(key=("ns", "api", 2, "u"), replicaset="api-1", replicaset_uid="r",
                              replicaset_created_at=T0 - timedelta(minutes=1))
    assert store.known_keys() == {("ns", "api", 2, "u")} and not store.has_legacy


def test_the_database_unreachable_is_an_error_without_the_password(postgres_server):
    from incident_detector.store.db import StoreUnavailable

    url = postgres_server.url().replace(str(postgres_server.port), "1")
    with pytest.raises(StoreUnavailable) as down:
        Store(url)
    assert postgres_server.password not in str(down.value)
    assert "***" in str(down.value) and down.value.retryable
    wrong = postgres_server.url(password="not-the-password-42")
    with pytest.raises(StoreUnavailable) as refused:
        Store(wrong)
    assert "not-the-password-42" not in str(refused.value)


# --- at start: a database that is not up yet is waited for --------------------------------------

def test_a_database_not_up_yet_is_waited_for_with_capped_backoff(postgres_server, pg_url):
    import asyncio

    from structlog.testing import capture_logs

    from incident_detector.config import load_settings
    from incident_detector.main import open_store

    settings = load_settings({"LOKI_URL": "http://loki:3100", "NAMESPACE": "shop",
                              "DATABASE_URL": pg_url, "POD_NAME": "detector-0"})
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 7:
            postgres_server.start()

    postgres_server.stop()
    try:
        with capture_logs() as logs:
            store = asyncio.run(open_store(settings, sleep=sleep))
    finally:
        postgres_server.start()  # whatever happened: the session's other tests need it
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    waiting = [line for line in logs if line["event"] == "store.waiting"]
    assert [line["attempt"] for line in waiting] == [1, 2, 3, 4, 5, 6, 7]
    assert "could not connect" in waiting[0]["error"]
    assert postgres_server.password not in repr(logs)
    opened = [line for line in logs if line["event"] == "store.opened"]
    assert opened[0]["backend"] == "postgresql" and "***" in opened[0]["target"]
    assert store.owner == "detector-0" and store.count_incidents() == 0
