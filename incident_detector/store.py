"""Durable memory: which revisions were already judged bad, and the notification outbox.

One small SQLite file (the embedded database of the standard library; nothing to install or run).
An incident is written together with one outbox row per channel *in the same transaction* before
anything is sent, so a crash between "decided" and "sent" loses nothing: the next tick (or the next
process) finds the undelivered rows and sends them. A row is marked delivered right after its send
succeeds; the window in which a crash can repeat a send is that one statement.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

IncidentKey = tuple[str, str, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    namespace   TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    replicaset  TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    origin      TEXT NOT NULL DEFAULT 'detected',
    record      TEXT NOT NULL,
    PRIMARY KEY (namespace, deployment, revision)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace       TEXT NOT NULL,
    deployment      TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    channel         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    gave_up_at      TEXT,
    UNIQUE (namespace, deployment, revision, channel)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (delivered_at, gave_up_at, next_attempt_at);
"""


def _ts(value: datetime) -> str:
    # Fixed-width ISO 8601 in UTC: SQLite compares these as text (due rows), so every value has
    # microseconds; the Z reads like the incident record.
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(value: str | None) -> datetime | None:
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
        self._db.executescript(_SCHEMA)
        self.path = target

    def close(self) -> None:
        self._db.close()

    # Incidents -----------------------------------------------------------------------------

    def is_known(self, key: IncidentKey) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM incidents WHERE namespace=? AND deployment=? AND revision=?", key
        ).fetchone()
        return row is not None

    def known_keys(self) -> set[IncidentKey]:
        rows = self._db.execute("SELECT namespace, deployment, revision FROM incidents")
        return {(ns, dep, int(rev)) for ns, dep, rev in rows}

    def count_incidents(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0])

    def record_incident(
        self,
        *,
        key: IncidentKey,
        replicaset: str,
        detected_at: datetime,
        record: dict[str, Any],
        deliveries: Iterable[tuple[str, dict[str, Any]]],
    ) -> bool:
        """Remember an incident and queue its deliveries, atomically.

        Returns False (and writes nothing) when the key is already known: the caller then sends
        nothing, which is what makes "one incident per revision" hold across restarts.
        """
        now = _ts(detected_at)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO incidents"
                " (namespace, deployment, revision, replicaset, detected_at, record)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (*key, replicaset, now, json.dumps(record)),
            )
            if cursor.rowcount == 0:
                self._db.execute("ROLLBACK")
                return False
            for channel, payload in deliveries:
                self._db.execute(
                    "INSERT INTO outbox (namespace, deployment, revision, channel, payload,"
                    " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, channel, json.dumps(payload), now, now),
                )
            self._db.execute("COMMIT")
            return True
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def remember_foreign(self, *, key: IncidentKey, replicaset: str, detected_at: datetime,
                         origin: str) -> bool:
        """Remember an incident another process already notified (read back from Events)."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO incidents"
            " (namespace, deployment, revision, replicaset, detected_at, origin, record)"
            " VALUES (?, ?, ?, ?, ?, ?, '{}')",
            (*key, replicaset, _ts(detected_at), origin),
        )
        return cursor.rowcount == 1

    def recent_incidents(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT namespace, deployment, revision, replicaset, detected_at, origin, record"
            " FROM incidents ORDER BY detected_at DESC LIMIT ?",
            (limit,),
        )
        out = []
        for ns, dep, rev, rs, detected_at, origin, record in rows:
            item = {"namespace": ns, "deployment": dep, "revision": int(rev), "replicaset": rs,
                    "detected_at": detected_at, "origin": origin}
            summary = json.loads(record).get("summary")
            if summary:
                item["summary"] = summary
            out.append(item)
        return out

    # Outbox --------------------------------------------------------------------------------

    def due(self, now: datetime, *, channels: Iterable[str] | None = None) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT id, namespace, deployment, revision, channel, payload, created_at, attempts,"
            " last_error FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL"
            " AND next_attempt_at <= ? ORDER BY id",
            (_ts(now),),
        ).fetchall()
        wanted = None if channels is None else set(channels)
        items = []
        for id_, ns, dep, rev, channel, payload, created_at, attempts, last_error in rows:
            if wanted is not None and channel not in wanted:
                continue
            items.append(OutboxItem(id_, (ns, dep, int(rev)), channel, json.loads(payload),
                                    _dt(created_at) or datetime.min, int(attempts), last_error))
        return items

    def mark_delivered(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET delivered_at=?, attempts=attempts+1, last_error=NULL WHERE id=?",
            (_ts(now), item_id),
        )

    def mark_failed(self, item_id: int, *, now: datetime, error: str, retry_at: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
            (error[:500], _ts(retry_at), item_id),
        )

    def mark_given_up(self, item_id: int, *, now: datetime, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, gave_up_at=? WHERE id=?",
            (error[:500], _ts(now), item_id),
        )

    def pending_channels(self, key: IncidentKey) -> set[str]:
        """Channels of an incident still waiting for delivery (neither delivered nor given up)."""
        rows = self._db.execute(
            "SELECT channel FROM outbox WHERE namespace=? AND deployment=? AND revision=?"
            " AND delivered_at IS NULL AND gave_up_at IS NULL",
            key,
        )
        return {channel for (channel,) in rows}

    def supersede(self, key: IncidentKey, *, now: datetime, note: str) -> int:
        """Close the pending rows of an incident another replica has already notified."""
        cursor = self._db.execute(
            "UPDATE outbox SET delivered_at=?, last_error=? WHERE namespace=? AND deployment=?"
            " AND revision=? AND delivered_at IS NULL AND gave_up_at IS NULL",
            (_ts(now), note, *key),
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
