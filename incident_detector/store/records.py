"""Durable memory: which revisions were already judged bad, and the notification outbox.

One small SQLite file (the embedded database of the standard library; nothing to install or run).
An incident is written together with one outbox row per channel *in the same transaction* before
anything is sent, so a crash between "decided" and "sent" loses nothing: the next tick (or the next
process) finds the undelivered rows and sends them. A row is marked delivered right after its send
succeeds; the window in which a crash can repeat a send is that one statement.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# (namespace, deployment, revision, deployment uid). The uid is "" for rows written before
# uids were recorded, until ``adopt_legacy`` gives them one.
IncidentKey = tuple[str, str, int, str]

# The schema's version, kept in SQLite's user_version. 0: a new file, or one written before
# versions were recorded (identity without uids); each step up is one function of MIGRATIONS.
SCHEMA_VERSION = 6

_TABLES = """
CREATE TABLE IF NOT EXISTS incidents (
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    deployment_uid  TEXT NOT NULL DEFAULT '',
    replicaset      TEXT NOT NULL,
    replicaset_uid  TEXT NOT NULL DEFAULT '',
    detected_at     TEXT NOT NULL,
    origin          TEXT NOT NULL DEFAULT 'detected',
    record          TEXT NOT NULL,
    PRIMARY KEY (namespace, deployment, revision, deployment_uid)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    deployment_uid  TEXT NOT NULL DEFAULT '',
    channel         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    gave_up_at      TEXT,
    UNIQUE (namespace, deployment, revision, deployment_uid, channel)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, gave_up_at, next_attempt_at);
""" + """
CREATE TABLE IF NOT EXISTS actions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    deployment_uid  TEXT NOT NULL DEFAULT '',
    action          TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    precondition    TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    decided_by      TEXT,
    result          TEXT,
    UNIQUE (namespace, deployment, revision, deployment_uid, action)
);
CREATE TABLE IF NOT EXISTS audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT NOT NULL,
    who             TEXT NOT NULL,
    action          TEXT NOT NULL,
    target          TEXT NOT NULL,
    decision        TEXT NOT NULL,
    reason          TEXT NOT NULL,
    dry_run         INTEGER NOT NULL,
    result          TEXT,
    action_id       INTEGER
);
""" + """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint     TEXT NOT NULL,
    starts_at       TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    ends_at         TEXT,
    labels          TEXT NOT NULL,
    annotations     TEXT NOT NULL,
    generator_url   TEXT NOT NULL DEFAULT '',
    group_key       TEXT NOT NULL DEFAULT '',
    receiver        TEXT NOT NULL DEFAULT '',
    received_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    namespace       TEXT,
    deployment      TEXT,
    mapped_by       TEXT,
    unmapped_reason TEXT,
    incident        TEXT,
    closed_at       TEXT,
    PRIMARY KEY (fingerprint, starts_at)
);
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_at);
CREATE TABLE IF NOT EXISTS notices (
    key             TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    detected_at     TEXT NOT NULL,
    closed_at       TEXT,
    record          TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS error_groups (
    namespace       TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    workloads       TEXT NOT NULL,
    example         TEXT NOT NULL,
    count           INTEGER NOT NULL,
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    priority        TEXT NOT NULL,
    rule            TEXT,
    notified_at     TEXT,
    sampled         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, fingerprint)
);
CREATE INDEX IF NOT EXISTS error_groups_last_seen ON error_groups (last_seen);
""" + """
CREATE TABLE IF NOT EXISTS changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL,
    resource_version TEXT NOT NULL,
    at              TEXT NOT NULL,
    observed_at     TEXT NOT NULL,
    record          TEXT NOT NULL,
    emit_state      TEXT,
    emit_attempts   INTEGER NOT NULL DEFAULT 0,
    emit_next_at    TEXT,
    emit_error      TEXT,
    UNIQUE (namespace, kind, name, resource_version)
);
CREATE INDEX IF NOT EXISTS changes_at ON changes (at);
CREATE INDEX IF NOT EXISTS changes_object ON changes (namespace, kind, name);
CREATE INDEX IF NOT EXISTS changes_emit ON changes (emit_state, emit_next_at);
"""

_KEY = "namespace=? AND deployment=? AND revision=? AND deployment_uid=?"


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once (BEGIN IMMEDIATE: no upgrade from a read lock that
    could fail half-way), committed when the block ends, rolled back when it raises. A block
    that returns early without writing commits nothing."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _create_tables(db: sqlite3.Connection) -> None:
    # Statement by statement: executescript would COMMIT the migration's transaction first.
    for statement in _TABLES.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_to_2(db: sqlite3.Connection) -> None:
    """Version 1 (the first schema, no user_version) keyed incidents by (namespace, deployment,
    revision). Its rows are kept with an empty uid: the detector gives each one the uid of the
    Deployment it was about when it sees that revision again (``Store.adopt_legacy``)."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "incidents" not in tables:
        _create_tables(db)  # a new file
        return
    db.execute("ALTER TABLE incidents RENAME TO incidents_v1")
    db.execute("ALTER TABLE outbox RENAME TO outbox_v1")
    db.execute("DROP INDEX IF EXISTS outbox_pending")
    _create_tables(db)
    db.execute(
        "INSERT INTO incidents (namespace, deployment, revision, replicaset, detected_at, origin,"
        " record) SELECT namespace, deployment, revision, replicaset, detected_at, origin, record"
        " FROM incidents_v1")
    db.execute(
        "INSERT INTO outbox (id, namespace, deployment, revision, channel, payload, created_at,"
        " attempts, next_attempt_at, last_error, delivered_at, gave_up_at)"
        " SELECT id, namespace, deployment, revision, channel, payload, created_at, attempts,"
        " next_attempt_at, last_error, delivered_at, gave_up_at FROM outbox_v1")
    db.execute("DROP TABLE incidents_v1")
    db.execute("DROP TABLE outbox_v1")


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """Version 3 adds the remediation journal (``actions``) and the ``audit`` trail."""
    _create_tables(db)  # CREATE ... IF NOT EXISTS: only the new tables are made


def _migrate_to_4(db: sqlite3.Connection) -> None:
    """Version 4 adds the Alertmanager ``alerts``, the ``notices`` (incidents that are not about
    one revision: alert incidents, error groups) and the triage's ``error_groups``."""
    _create_tables(db)


def _migrate_to_5(db: sqlite3.Connection) -> None:
    """Version 5 gives incidents and notices a ``priority`` column (read from their records),
    so that lists and the dashboard's queue sort and filter without opening every record, and
    indexes what the dashboard reads by time."""
    for table in ("incidents", "notices"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "priority" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN priority TEXT")
        db.execute(f"UPDATE {table} SET priority = json_extract(record, '$.priority')"
                   " WHERE json_valid(record)")
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_detected ON {table} (detected_at)")
    db.execute("CREATE INDEX IF NOT EXISTS audit_action ON audit (action_id)")
    db.execute("CREATE INDEX IF NOT EXISTS audit_at ON audit (at)")


def _migrate_to_6(db: sqlite3.Connection) -> None:
    """Version 6 adds the change timeline (``changes``), with the state of each change's
    CloudEvent delivery."""
    _create_tables(db)


# MIGRATIONS[n] takes a file from version n to the next version it names; version 1 never had a
# number of its own (its files say 0), so 0 and 1 share the same step.
MIGRATIONS = {0: (_migrate_to_2, 2), 1: (_migrate_to_2, 2), 2: (_migrate_to_3, 3),
              3: (_migrate_to_4, 4), 4: (_migrate_to_5, 5),
              5: (_migrate_to_6, 6)}


class StoreVersionError(RuntimeError):
    """The file was written by a newer version of the detector."""


def db_time(value: datetime) -> str:
    # Fixed-width ISO 8601 in UTC: SQLite compares these as text (due rows), so every value has
    # microseconds; the Z reads like the incident record.
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_db_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    key: IncidentKey
    channel: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    pending: int
    delivered: int
    given_up: tuple[dict[str, Any], ...]


class Store:
    """``Store(path)``; ``":memory:"`` keeps everything in the process (tests, demo)."""

    def __init__(self, path: str | Path) -> None:
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the event loop thread only; autocommit off, explicit
        # transactions. WAL keeps a reader (none today) from blocking the writer.
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self.migrated_from = self._migrate()
        self.path = target
        # Rows from before uids were recorded: looked for only while some remain.
        self._legacy = self._count_legacy()

    def _migrate(self) -> int | None:
        """Bring the file to SCHEMA_VERSION in one transaction; the version it had, if older."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return None
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self._db_path()} has schema version {version}; this detector knows up to "
                f"{SCHEMA_VERSION}: use a newer detector or another STATE_PATH")
        with transaction(self._db):
            step = version
            while step != SCHEMA_VERSION:
                migrate, step = MIGRATIONS[step]
                migrate(self._db)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return version

    def _db_path(self) -> str:
        row = self._db.execute("PRAGMA database_list").fetchone()
        return (row[2] if row else "") or ":memory:"

    def _count_legacy(self) -> int:
        return int(self._db.execute(
            "SELECT COUNT(*) FROM incidents WHERE deployment_uid=''").fetchone()[0])

    @property
    def has_legacy(self) -> bool:
        return self._legacy > 0

    def adopt_legacy(self, *, key: IncidentKey, replicaset: str, replicaset_uid: str,
                     replicaset_created_at: datetime) -> bool:
        """Give a row without a uid the uid of the Deployment it was about, when it must be.

        A row from before uids were recorded is about the Deployment seen now when it names the
        same revision and ReplicaSet (or none) and was detected after that ReplicaSet existed; a
        Deployment deleted and created again has a younger ReplicaSet and is left alone.
        """
        namespace, deployment, revision, uid = key
        if not self._legacy or not uid:
            return False
        legacy = (namespace, deployment, revision, "")
        with transaction(self._db):
            cursor = self._db.execute(
                "UPDATE OR IGNORE incidents SET deployment_uid=?, replicaset_uid=?"
                f" WHERE {_KEY} AND (replicaset=? OR replicaset='') AND detected_at>=?",
                (uid, replicaset_uid, *legacy, replicaset, db_time(replicaset_created_at)))
            adopted = cursor.rowcount == 1
            if adopted:
                self._db.execute(f"UPDATE OR IGNORE outbox SET deployment_uid=? WHERE {_KEY}",
                                 (uid, *legacy))
        if adopted:
            self._legacy = self._count_legacy()
        return adopted

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection, for the other tables' owners (``journal``) in the same file."""
        return self._db

    # Incidents -----------------------------------------------------------------------------

    def is_known(self, key: IncidentKey) -> bool:
        row = self._db.execute(f"SELECT 1 FROM incidents WHERE {_KEY}", key).fetchone()
        return row is not None

    def known_keys(self) -> set[IncidentKey]:
        rows = self._db.execute(
            "SELECT namespace, deployment, revision, deployment_uid FROM incidents")
        return {(ns, dep, int(rev), uid) for ns, dep, rev, uid in rows}

    def judged_bad(self, namespace: str) -> dict[str, list[tuple[int, str, str]]]:
        """Per Deployment name, (revision, deployment uid, ReplicaSet) of each incident recorded
        in ``namespace`` (detected here, or read back from another replica's Events): the
        revisions judged bad, of each object and of earlier ones of the same name."""
        rows = self._db.execute(
            "SELECT deployment, revision, deployment_uid, replicaset FROM incidents"
            " WHERE namespace=?", (namespace,))
        out: dict[str, list[tuple[int, str, str]]] = {}
        for deployment, revision, uid, replicaset in rows:
            out.setdefault(deployment, []).append((int(revision), uid, replicaset))
        return out

    def count_incidents(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0])

    def record_incident(
        self,
        *,
        key: IncidentKey,
        replicaset: str,
        detected_at: datetime,
        record: dict[str, Any],
        replicaset_uid: str = "",
        deliveries: Iterable[tuple[str, dict[str, Any]]],
    ) -> bool:
        """Remember an incident and queue its deliveries, atomically.

        Returns False (and writes nothing) when the key is already known: the caller then sends
        nothing, which is what makes "one incident per revision" hold across restarts.
        """
        now = db_time(detected_at)
        with transaction(self._db):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO incidents (namespace, deployment, revision,"
                " deployment_uid, replicaset, replicaset_uid, detected_at, record, priority)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, replicaset, replicaset_uid, now, json.dumps(record),
                 record.get("priority")),
            )
            if cursor.rowcount == 0:
                return False
            for channel, payload in deliveries:
                self._db.execute(
                    "INSERT INTO outbox (namespace, deployment, revision, deployment_uid,"
                    " channel, payload, created_at, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, channel, json.dumps(payload), now, now),
                )
            return True

    def remember_foreign(self, *, key: IncidentKey, replicaset: str, detected_at: datetime,
                         origin: str, replicaset_uid: str = "") -> bool:
        """Remember an incident another process already notified (read back from Events)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO incidents (namespace, deployment, revision, deployment_uid,"
            " replicaset, replicaset_uid, detected_at, origin, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}')",
            (*key, replicaset, replicaset_uid, db_time(detected_at), origin),
        )
        if cursor.rowcount == 1 and not key[3]:
            self._legacy += 1
        return cursor.rowcount == 1

    def recent_incidents(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT namespace, deployment, revision, deployment_uid, replicaset, detected_at,"
            " origin, record FROM incidents ORDER BY detected_at DESC LIMIT ?",
            (limit,),
        )
        out = []
        for ns, dep, rev, uid, rs, detected_at, origin, record in rows:
            item = {"namespace": ns, "deployment": dep, "revision": int(rev), "replicaset": rs,
                    "deployment_uid": uid, "detected_at": detected_at, "origin": origin}
            summary = json.loads(record).get("summary")
            if summary:
                item["summary"] = summary
            out.append(item)
        return out

    # Notices: incidents that are not about one revision (alert incidents, error groups) -----

    def record_notice(self, *, key: str, kind: str, namespace: str, deployment: str,
                      detected_at: datetime, record: dict[str, Any],
                      deliveries: Iterable[tuple[str, dict[str, Any]]]) -> bool:
        """Remember a notice and queue its deliveries, atomically; False when already known.

        Its outbox rows carry revision 0 (no revision is ever 0) and the notice's key where a
        rollout incident has the Deployment's uid.
        """
        now = db_time(detected_at)
        with transaction(self._db):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO notices (key, kind, namespace, deployment, detected_at,"
                " record, priority) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, kind, namespace, deployment, now, json.dumps(record),
                 record.get("priority")))
            if cursor.rowcount == 0:
                return False
            self._queue(namespace, deployment, key, now, deliveries)
            return True

    def close_notice(self, *, key: str, closed_at: datetime, record: dict[str, Any],
                     deliveries: Iterable[tuple[str, dict[str, Any]]]) -> bool:
        """Close an open notice and queue its follow-up, atomically; False when it is not open
        (unknown, or already closed: the follow-up goes out once)."""
        now = db_time(closed_at)
        with transaction(self._db):
            row = self._db.execute("SELECT namespace, deployment FROM notices"
                                   " WHERE key=? AND closed_at IS NULL", (key,)).fetchone()
            if row is None:
                return False
            self._db.execute("UPDATE notices SET closed_at=?, record=json_set(record,"
                             " '$.closed', json(?)) WHERE key=?", (now, json.dumps(record), key))
            self._queue(row[0], row[1], f"{key}/closed", now, deliveries)
            return True

    def notice(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT kind, namespace, deployment, detected_at, closed_at, record"
                               " FROM notices WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        kind, ns, dep, detected_at, closed_at, record = row
        return {"key": key, "kind": kind, "namespace": ns, "deployment": dep,
                "detected_at": detected_at, "closed_at": closed_at, "record": json.loads(record)}

    def recent_notices(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT key, kind, namespace, deployment, detected_at, closed_at,"
            " json_extract(record, '$.summary'), json_extract(record, '$.priority')"
            " FROM notices ORDER BY detected_at DESC LIMIT ?", (limit,))
        return [{"key": key, "kind": kind, "namespace": ns, "deployment": dep,
                 "detected_at": detected_at, "closed_at": closed_at, "summary": summary,
                 "priority": priority}
                for key, kind, ns, dep, detected_at, closed_at, summary, priority in rows]

    def _queue(self, namespace: str, deployment: str, key: str, now: str,
               deliveries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for channel, payload in deliveries:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (namespace, deployment, revision, deployment_uid,"
                " channel, payload, created_at, next_attempt_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                (namespace, deployment, key, channel, json.dumps(payload), now, now))

    # Outbox --------------------------------------------------------------------------------

    def due(self, now: datetime, *, channels: Iterable[str] | None = None) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT id, namespace, deployment, revision, deployment_uid, channel, payload,"
            " created_at, attempts, last_error FROM outbox"
            " WHERE delivered_at IS NULL AND gave_up_at IS NULL"
            " AND next_attempt_at <= ? ORDER BY id",
            (db_time(now),),
        ).fetchall()
        wanted = None if channels is None else set(channels)
        items = []
        for id_, ns, dep, rev, uid, channel, payload, created_at, attempts, last_error in rows:
            if wanted is not None and channel not in wanted:
                continue
            items.append(OutboxItem(id_, (ns, dep, int(rev), uid), channel, json.loads(payload),
                                    from_db_time(created_at) or datetime.min, int(attempts), last_error))
        return items

    def mark_delivered(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET delivered_at=?, attempts=attempts+1, last_error=NULL WHERE id=?",
            (db_time(now), item_id),
        )

    def mark_failed(self, item_id: int, *, now: datetime, error: str, retry_at: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
            (error[:500], db_time(retry_at), item_id),
        )

    def mark_given_up(self, item_id: int, *, now: datetime, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, gave_up_at=? WHERE id=?",
            (error[:500], db_time(now), item_id),
        )

    def pending_channels(self, key: IncidentKey) -> set[str]:
        """Channels of an incident still waiting for delivery (neither delivered nor given up)."""
        rows = self._db.execute(
            f"SELECT channel FROM outbox WHERE {_KEY}"
            " AND delivered_at IS NULL AND gave_up_at IS NULL",
            key,
        )
        return {channel for (channel,) in rows}

    def supersede(self, key: IncidentKey, *, now: datetime, note: str) -> int:
        """Close the pending rows of an incident another replica has already notified."""
        cursor = self._db.execute(
            f"UPDATE outbox SET delivered_at=?, last_error=? WHERE {_KEY}"
            " AND delivered_at IS NULL AND gave_up_at IS NULL",
            (db_time(now), note, *key),
        )
        return cursor.rowcount

    def outbox_summary(self, limit: int = 20) -> OutboxSummary:
        pending = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL"
        ).fetchone()[0]
        delivered = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL"
        ).fetchone()[0]
        given_up = tuple(
            {"namespace": ns, "deployment": dep, "revision": int(rev), "channel": channel,
             "attempts": int(attempts), "last_error": last_error, "gave_up_at": gave_up_at}
            for ns, dep, rev, channel, attempts, last_error, gave_up_at in self._db.execute(
                "SELECT namespace, deployment, revision, channel, attempts, last_error, gave_up_at"
                " FROM outbox WHERE gave_up_at IS NOT NULL ORDER BY gave_up_at DESC LIMIT ?",
                (limit,),
            )
        )
        return OutboxSummary(pending=int(pending), delivered=int(delivered), given_up=given_up)
