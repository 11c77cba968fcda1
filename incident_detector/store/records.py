"""Durable memory: which revisions were already judged bad, and the notification outbox.

A SQLite file by default (the embedded database of the standard library; nothing to install or
run), or a PostgreSQL database shared by every replica (``DATABASE_URL``, see ``store.db``).
An incident is written together with one outbox row per channel *in the same transaction* before
anything is sent, so a crash between "decided" and "sent" loses nothing: the next tick (or the next
process) finds the undelivered rows and sends them. A row is marked delivered right after its send
succeeds; the window in which a crash can repeat a send is that one statement.

With many replicas on one database, exactly once is the database's doing, not luck: an incident
or a notice is inserted with ``ON CONFLICT DO NOTHING`` on its unique key (the one replica whose
row went in sends it), and an outbox row is claimed by compare and set before it is sent (the one
replica whose claim went in sends it; a claim runs out after ``CLAIM_SECONDS`` so that the rows of
a replica killed mid-send go out from another).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .db import Database, connect
from .schema import SCHEMA_VERSION, StoreVersionError, migrate

__all__ = ["NO_LIMIT", "SCHEMA_VERSION", "Store", "StoreVersionError", "db_time", "from_db_time",
           "transaction"]

# (namespace, deployment, revision, deployment uid). The uid is "" for rows written before
# uids were recorded, until ``adopt_legacy`` gives them one.
IncidentKey = tuple[str, str, int, str]

_KEY = "namespace=? AND deployment=? AND revision=? AND deployment_uid=?"
# How long a sender holds the outbox rows it claimed: longer than any send takes (Slack's and
# the apiserver's timeouts are seconds), short enough that a replica killed mid-send leaves its
# rows to the next leader soon.
CLAIM_SECONDS = 60.0
# "No limit" in a LIMIT ... OFFSET both databases accept (SQLite's -1 and PostgreSQL's ALL are
# each the other's syntax error).
NO_LIMIT = 2**62


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[None]:
    """One write transaction, committed when the block ends, rolled back when it raises (SQLite
    takes its write lock at once, PostgreSQL's rows lock as they are written)."""
    with db.transaction():
        yield


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
    """``Store(target)``: a SQLite path (``":memory:"`` keeps everything in the process: tests,
    the demo) or a PostgreSQL URL. ``owner`` names this process in the rows it claims."""

    def __init__(self, target: str | Path, *, owner: str = "", db: Database | None = None) -> None:
        self._db = db if db is not None else connect(target)
        self.owner = owner or "incident-detector"
        self.migrated_from = migrate(self._db, by=self.owner)
        self.path = str(target)
        # Rows from before uids were recorded: looked for only while some remain.
        self._legacy = self._count_legacy()

    @property
    def dialect(self) -> str:
        return self._db.dialect

    @property
    def target(self) -> str:
        """Where the store is, fit for a log line (a URL's password is not in it)."""
        return self._db.target

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
            # Not when a row with the uid exists already (the unique key would refuse it).
            row = self._db.execute(
                "UPDATE incidents SET deployment_uid=?, replicaset_uid=?"
                f" WHERE {_KEY} AND (replicaset=? OR replicaset='') AND detected_at>=?"
                " AND NOT EXISTS (SELECT 1 FROM incidents AS known WHERE known.namespace=?"
                " AND known.deployment=? AND known.revision=? AND known.deployment_uid=?)"
                " RETURNING id",
                (uid, replicaset_uid, *legacy, replicaset, db_time(replicaset_created_at),
                 *key)).fetchone()
            adopted = row is not None
            if adopted:
                self._db.execute(
                    f"UPDATE outbox SET deployment_uid=? WHERE {_KEY} AND NOT EXISTS (SELECT 1"
                    " FROM outbox AS known WHERE known.namespace=outbox.namespace AND"
                    " known.deployment=outbox.deployment AND known.revision=outbox.revision"
                    " AND known.deployment_uid=? AND known.channel=outbox.channel)",
                    (uid, *legacy, uid))
        if adopted:
            self._legacy = self._count_legacy()
        return adopted

    def close(self) -> None:
        self._db.close()

    def ping(self) -> None:
        """A trivial query: raises StoreUnavailable when the database does not answer."""
        self._db.execute("SELECT 1").fetchone()

    @property
    def connection(self) -> Database:
        """The one connection, for the other tables' owners (``journal``, ``alerts``...)."""
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
            " WHERE namespace=? ORDER BY id", (namespace,))
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
        nothing, which is what makes "one incident per revision" hold across restarts and
        replicas.
        """
        now = db_time(detected_at)
        with transaction(self._db):
            row = self._db.execute(
                "INSERT INTO incidents (namespace, deployment, revision,"
                " deployment_uid, replicaset, replicaset_uid, detected_at, record, priority)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (*key, replicaset, replicaset_uid, now, json.dumps(record),
                 record.get("priority")),
            ).fetchone()
            if row is None:
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
        row = self._db.execute(
            "INSERT INTO incidents (namespace, deployment, revision, deployment_uid,"
            " replicaset, replicaset_uid, detected_at, origin, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}') ON CONFLICT DO NOTHING RETURNING id",
            (*key, replicaset, replicaset_uid, db_time(detected_at), origin),
        ).fetchone()
        if row is not None and not key[3]:
            self._legacy += 1
        return row is not None

    def recent_incidents(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT namespace, deployment, revision, deployment_uid, replicaset, detected_at,"
            " origin, record FROM incidents ORDER BY detected_at DESC, id DESC LIMIT ?",
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
            row = self._db.execute(
                "INSERT INTO notices (key, kind, namespace, deployment, detected_at,"
                " record, priority) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                (key, kind, namespace, deployment, now, json.dumps(record),
                 record.get("priority"))).fetchone()
            if row is None:
                return False
            self._queue(namespace, deployment, key, now, deliveries)
            return True

    def close_notice(self, *, key: str, closed_at: datetime, record: dict[str, Any],
                     deliveries: Iterable[tuple[str, dict[str, Any]]]) -> bool:
        """Close an open notice and queue its follow-up, atomically; False when it is not open
        (unknown, or already closed: the follow-up goes out once, whichever replica closes)."""
        now = db_time(closed_at)
        with transaction(self._db):
            row = self._db.execute(
                "UPDATE notices SET closed_at=? WHERE key=? AND closed_at IS NULL"
                " RETURNING namespace, deployment, record", (now, key)).fetchone()
            if row is None:
                return False
            namespace, deployment, stored = row
            merged = {**json.loads(stored or "{}"), "closed": record}
            self._db.execute("UPDATE notices SET record=? WHERE key=?",
                             (json.dumps(merged), key))
            self._queue(namespace, deployment, f"{key}/closed", now, deliveries)
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
            f" {self._db.json_text('record', 'summary')}, priority"
            " FROM notices ORDER BY detected_at DESC, id DESC LIMIT ?", (limit,))
        return [{"key": key, "kind": kind, "namespace": ns, "deployment": dep,
                 "detected_at": detected_at, "closed_at": closed_at, "summary": summary,
                 "priority": priority}
                for key, kind, ns, dep, detected_at, closed_at, summary, priority in rows]

    def _queue(self, namespace: str, deployment: str, key: str, now: str,
               deliveries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        for channel, payload in deliveries:
            self._db.execute(
                "INSERT INTO outbox (namespace, deployment, revision, deployment_uid,"
                " channel, payload, created_at, next_attempt_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (namespace, deployment, key, channel, json.dumps(payload), now, now))

    # Outbox --------------------------------------------------------------------------------

    def due(self, now: datetime, *, channels: Iterable[str] | None = None) -> list[OutboxItem]:
        """The rows due for a send that no other sender holds (by ``claim``), oldest first."""
        rows = self._db.execute(
            "SELECT id, namespace, deployment, revision, deployment_uid, channel, payload,"
            " created_at, attempts, last_error FROM outbox"
            " WHERE delivered_at IS NULL AND gave_up_at IS NULL"
            " AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?"
            " OR claimed_by = ?) ORDER BY id",
            (db_time(now), db_time(now), self.owner),
        ).fetchall()
        wanted = None if channels is None else set(channels)
        items = []
        for id_, ns, dep, rev, uid, channel, payload, created_at, attempts, last_error in rows:
            if wanted is not None and channel not in wanted:
                continue
            items.append(OutboxItem(id_, (ns, dep, int(rev), uid), channel, json.loads(payload),
                                    from_db_time(created_at) or datetime.min, int(attempts),
                                    last_error))
        return items

    def claim(self, item_id: int, now: datetime, *,
              hold: timedelta = timedelta(seconds=CLAIM_SECONDS)) -> bool:
        """Take a row for this sender until ``now + hold`` (compare and set): True for the one
        sender that took it; a row delivered, given up or held by another is not taken."""
        row = self._db.execute(
            "UPDATE outbox SET claimed_by=?, claimed_until=? WHERE id=? AND delivered_at IS NULL"
            " AND gave_up_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?"
            " OR claimed_by = ?) RETURNING id",
            (self.owner, db_time(now + hold), item_id, db_time(now), self.owner)).fetchone()
        return row is not None

    def mark_delivered(self, item_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET delivered_at=?, attempts=attempts+1, last_error=NULL,"
            " claimed_until=NULL WHERE id=?",
            (db_time(now), item_id),
        )

    def mark_failed(self, item_id: int, *, now: datetime, error: str, retry_at: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=?,"
            " claimed_until=NULL WHERE id=?",
            (error[:500], db_time(retry_at), item_id),
        )

    def mark_given_up(self, item_id: int, *, now: datetime, error: str) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts=attempts+1, last_error=?, gave_up_at=?,"
            " claimed_until=NULL WHERE id=?",
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
                " FROM outbox WHERE gave_up_at IS NOT NULL ORDER BY gave_up_at DESC, id DESC"
                " LIMIT ?",
                (limit,),
            )
        )
        return OutboxSummary(pending=int(pending), delivered=int(delivered), given_up=given_up)
