"""The store's tables, one definition for both databases, and the migrations that bring an older
store up to them.

SQLite keeps its version in ``PRAGMA user_version`` (files of every earlier release migrate step
by step, as they always did); PostgreSQL in a ``schema_migrations`` table, one row per version
applied, written by the migration itself. Either way a migration runs in one transaction, under
a lock, and reads the version again once it holds the lock: two replicas starting together
migrate once, the second finds the work done. A store written by a newer detector is refused
with ``StoreVersionError``: the older code would not know its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from .db import POSTGRESQL, Database, postgres_ddl

# 0: a new SQLite file, or one written before versions were recorded (identity without uids).
# 7: ids for incidents and notices (the same on both databases), outbox claims, the executing
# replica of an action, approval tokens, Slack threads and the service map's learnt links kept
# in the store.
# 8: the dashboard's sign-in sessions (their tokens' digests), so that every replica and a
# restarted process know them.
# 9: the keys the replicas share (``dashboard_keys``): the one of the CSRF values of an
# authenticating proxy's users, so that a form shown by one replica posts to another.
SCHEMA_VERSION = 9
# pg_advisory_xact_lock's key for migrations: any constant no other application of the same
# database would pick ("incident-detector" as the bytes of an int64).
MIGRATION_LOCK = 0x696E63_6964_6574


class StoreVersionError(RuntimeError):
    """The store was written by a newer version of the detector."""


TABLES = """
CREATE TABLE IF NOT EXISTS incidents (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    deployment_uid  TEXT NOT NULL DEFAULT '',
    replicaset      TEXT NOT NULL,
    replicaset_uid  TEXT NOT NULL DEFAULT '',
    detected_at     TEXT NOT NULL,
    origin          TEXT NOT NULL DEFAULT 'detected',
    record          TEXT NOT NULL,
    priority        TEXT,
    UNIQUE (namespace, deployment, revision, deployment_uid)
);
CREATE INDEX IF NOT EXISTS incidents_detected ON incidents (detected_at);
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
    claimed_by      TEXT,
    claimed_until   TEXT,
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
    executor        TEXT,
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
CREATE INDEX IF NOT EXISTS audit_action ON audit (action_id);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
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
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    detected_at     TEXT NOT NULL,
    closed_at       TEXT,
    record          TEXT NOT NULL,
    priority        TEXT
);
CREATE INDEX IF NOT EXISTS notices_detected ON notices (detected_at);
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
""" + """
CREATE TABLE IF NOT EXISTS approval_tokens (
    digest          TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    action          TEXT NOT NULL,
    issued_at       TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT
);
CREATE INDEX IF NOT EXISTS approval_tokens_subject ON approval_tokens (subject);
CREATE INDEX IF NOT EXISTS approval_tokens_expires ON approval_tokens (expires_at);
CREATE TABLE IF NOT EXISTS answered_questions (
    subject         TEXT PRIMARY KEY,
    answered_at     TEXT NOT NULL,
    remembered_until TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slack_threads (
    key             TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    ts              TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_links (
    source          TEXT NOT NULL,
    target          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    seen_at         TEXT NOT NULL,
    PRIMARY KEY (source, target, kind, detail)
);
CREATE INDEX IF NOT EXISTS service_links_seen ON service_links (seen_at);
""" + """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    digest          TEXT PRIMARY KEY,
    user_name       TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dashboard_sessions_expires ON dashboard_sessions (expires_at);
""" + """
CREATE TABLE IF NOT EXISTS dashboard_keys (
    name            TEXT PRIMARY KEY,
    key_hex         TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
"""

# Added to tables of earlier versions by step 7 (an index on a new column cannot be in TABLES:
# the earlier steps create what TABLES says on files whose tables lack that column).
_STEP_7_INDEXES = ("CREATE INDEX IF NOT EXISTS outbox_claims ON outbox (claimed_until)",)


def statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# SQLite ---------------------------------------------------------------------------------------

def _create_tables(db: Database) -> None:
    # Statement by statement: executescript would COMMIT the migration's transaction first.
    # PostgreSQL's steps (its stores begin at version 7) make their new tables with it too.
    ddl = postgres_ddl(TABLES) if db.dialect == POSTGRESQL else TABLES
    for statement in statements(ddl):
        db.execute(statement)


def _tables(db: Database) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(db: Database, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _migrate_to_2(db: Database) -> None:
    """Version 1 (the first schema, no user_version) keyed incidents by (namespace, deployment,
    revision). Its rows are kept with an empty uid: the detector gives each one the uid of the
    Deployment it was about when it sees that revision again (``Store.adopt_legacy``)."""
    if "incidents" not in _tables(db):
        _create_tables(db)  # a new file
        return
    db.execute("ALTER TABLE incidents RENAME TO incidents_v1")
    db.execute("ALTER TABLE outbox RENAME TO outbox_v1")
    db.execute("DROP INDEX IF EXISTS outbox_pending")
    db.execute("DROP INDEX IF EXISTS incidents_detected")
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


def _migrate_to_3(db: Database) -> None:
    """Version 3 adds the remediation journal (``actions``) and the ``audit`` trail."""
    _create_tables(db)  # CREATE ... IF NOT EXISTS: only the new tables are made


def _migrate_to_4(db: Database) -> None:
    """Version 4 adds the Alertmanager ``alerts``, the ``notices`` (incidents that are not about
    one revision: alert incidents, error groups) and the triage's ``error_groups``."""
    _create_tables(db)


def _migrate_to_5(db: Database) -> None:
    """Version 5 gives incidents and notices a ``priority`` column (read from their records),
    so that lists and the dashboard's queue sort and filter without opening every record, and
    indexes what the dashboard reads by time."""
    for table in ("incidents", "notices"):
        if "priority" not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN priority TEXT")
        db.execute(f"UPDATE {table} SET priority = json_extract(record, '$.priority')"
                   " WHERE json_valid(record)")
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_detected ON {table} (detected_at)")
    db.execute("CREATE INDEX IF NOT EXISTS audit_action ON audit (action_id)")
    db.execute("CREATE INDEX IF NOT EXISTS audit_at ON audit (at)")


def _migrate_to_6(db: Database) -> None:
    """Version 6 adds the change timeline (``changes``), with the state of each change's
    CloudEvent delivery."""
    _create_tables(db)


_REBUILT = {
    "incidents": "namespace, deployment, revision, deployment_uid, replicaset, replicaset_uid,"
                 " detected_at, origin, record, priority",
    "notices": "key, kind, namespace, deployment, detected_at, closed_at, record, priority",
}


def _migrate_to_7(db: Database) -> None:
    """Version 7: incidents and notices get an ``id`` column (their SQLite rowid until now, so
    every link to ``/incidents/r12`` stays right), the outbox its claims, the journal the
    replica that executes, and approval tokens and Slack threads their tables."""
    for table, columns in _REBUILT.items():
        if "id" in _columns(db, table):
            continue
        db.execute(f"ALTER TABLE {table} RENAME TO {table}_v6")
        db.execute(f"DROP INDEX IF EXISTS {table}_detected")
        _create_tables(db)
        db.execute(f"INSERT INTO {table} (id, {columns}) SELECT rowid, {columns}"
                   f" FROM {table}_v6 ORDER BY rowid")
        db.execute(f"DROP TABLE {table}_v6")
    for table, column in (("outbox", "claimed_by"), ("outbox", "claimed_until"),
                          ("actions", "executor")):
        if column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
    _create_tables(db)
    for statement in _STEP_7_INDEXES:
        db.execute(statement)


def _migrate_to_8(db: Database) -> None:
    """Version 8 adds the dashboard's sessions (``dashboard_sessions``), on either database."""
    _create_tables(db)  # CREATE ... IF NOT EXISTS: only the new table and its index are made


def _migrate_to_9(db: Database) -> None:
    """Version 9 adds the keys the replicas share (``dashboard_keys``), on either database."""
    _create_tables(db)


# MIGRATIONS[n] takes a file from version n to the next version it names; version 1 never had a
# number of its own (its files say 0), so 0 and 1 share the same step.
MIGRATIONS: dict[int, tuple[Callable[[Database], None], int]] = {
    0: (_migrate_to_2, 2), 1: (_migrate_to_2, 2), 2: (_migrate_to_3, 3), 3: (_migrate_to_4, 4),
    4: (_migrate_to_5, 5), 5: (_migrate_to_6, 6), 6: (_migrate_to_7, 7), 7: (_migrate_to_8, 8),
    8: (_migrate_to_9, 9)}


def _sqlite_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate_sqlite(db: Database) -> int | None:
    """Bring the file to SCHEMA_VERSION in one transaction; the version it had, if older."""
    if _sqlite_version(db) == SCHEMA_VERSION:
        return None
    with db.transaction():  # BEGIN IMMEDIATE: one process migrates, the next one waits
        version = _sqlite_version(db)
        if version == SCHEMA_VERSION:
            return None
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{_sqlite_path(db)} has schema version {version}; this detector knows up to "
                f"{SCHEMA_VERSION}: use a newer detector or another STATE_PATH")
        step = version
        while step != SCHEMA_VERSION:
            migrate, step = MIGRATIONS[step]
            migrate(db)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return version


def _sqlite_path(db: Database) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return (row[2] if row else "") or ":memory:"


# PostgreSQL -----------------------------------------------------------------------------------

# POSTGRES_MIGRATIONS[n] takes a database from version n to n + 1. A database is created at the
# version of the code that first sees it (7), so the list starts there.
POSTGRES_MIGRATIONS: dict[int, Callable[[Database], None]] = {7: _migrate_to_8, 8: _migrate_to_9}

_VERSIONS_TABLE = ("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                   " applied_at TEXT NOT NULL, applied_by TEXT NOT NULL)")


def postgres_version(db: Database) -> int:
    row = db.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return 0
    return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
               .fetchone()[0])


def migrate_postgres(db: Database, *, by: str) -> int | None:
    """Bring the database to SCHEMA_VERSION under an advisory lock held for the transaction;
    the version it had, if older (0: it was empty)."""
    if db.dialect != POSTGRESQL:
        raise ValueError("migrate_postgres needs a PostgreSQL database")
    current = postgres_version(db)
    if current > SCHEMA_VERSION:
        raise StoreVersionError(_too_new(db, current))
    if current == SCHEMA_VERSION:
        return None
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        db.execute(_VERSIONS_TABLE)
        version = postgres_version(db)  # again, now that we hold the lock
        if version == SCHEMA_VERSION:
            return None
        if version > SCHEMA_VERSION:
            raise StoreVersionError(_too_new(db, version))
        if version == 0:
            for statement in statements(postgres_ddl(TABLES) + ";" + ";".join(_STEP_7_INDEXES)):
                db.execute(statement)
            applied = [SCHEMA_VERSION]
        else:
            applied = []
            for step in range(version, SCHEMA_VERSION):
                POSTGRES_MIGRATIONS[step](db)
                applied.append(step + 1)
        for number in applied:
            db.execute("INSERT INTO schema_migrations (version, applied_at, applied_by)"
                       " VALUES (?, ?, ?)", (number, _now(), by))
    return version


def _too_new(db: Database, version: int) -> str:
    return (f"the database at {db.target} has schema version {version}; this detector knows up "
            f"to {SCHEMA_VERSION}: use a newer detector or another DATABASE_URL")


def migrate(db: Database, *, by: str = "") -> int | None:
    """Bring any store to SCHEMA_VERSION; the version it had when older, None when current."""
    if db.dialect == POSTGRESQL:
        return migrate_postgres(db, by=by or "incident-detector")
    return migrate_sqlite(db)


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "StoreVersionError", "TABLES", "migrate",
           "migrate_postgres", "migrate_sqlite", "postgres_version"]
