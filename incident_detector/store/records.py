"""Durable memory: which revisions were already judged bad, and the notices.

A SQLite file by default (the embedded database of the standard library; nothing to install or
run), or a PostgreSQL database shared by every replica (``DATABASE_URL``, see ``store.db``).
An incident is written together with one outbox row per channel *in the same transaction* before
anything is sent, so a crash between "decided" and "sent" loses nothing: the next tick (or the next
process) finds the undelivered rows and sends them (``store.outbox``).

With many replicas on one database, exactly once is the database's doing, not luck: an incident
or a notice is inserted with ``ON CONFLICT DO NOTHING`` on its unique key (the one replica whose
row went in sends it), and an outbox row is claimed by compare and set before it is sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from .db import Database, connect
from .outbox import OutboxQueue
from .rows import KEY_IS, IncidentKey, db_time, transaction
from .schema import SCHEMA_VERSION, StoreVersionError, migrate

__all__ = ["SCHEMA_VERSION", "Store", "StoreVersionError"]


class Store:
    """``Store(target)``: a SQLite path (``":memory:"`` keeps everything in the process: tests,
    the demo) or a PostgreSQL URL. ``owner`` names this process in the rows it claims; the
    rows of the outbox are in ``outbox``."""

    def __init__(self, target: str | Path, *, owner: str = "", db: Database | None = None) -> None:
        self._db = db if db is not None else connect(target)
        self.owner = owner or "incident-detector"
        self.migrated_from = migrate(self._db, by=self.owner)
        self.path = str(target)
        self.outbox = OutboxQueue(self._db, owner=self.owner)
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
                f" WHERE {KEY_IS} AND (replicaset=? OR replicaset='') AND detected_at>=?"
                " AND NOT EXISTS (SELECT 1 FROM incidents AS known WHERE known.namespace=?"
                " AND known.deployment=? AND known.revision=? AND known.deployment_uid=?)"
                " RETURNING id",
                (uid, replicaset_uid, *legacy, replicaset, db_time(replicaset_created_at),
                 *key)).fetchone()
            adopted = row is not None
            if adopted:
                self.outbox.adopt_legacy(legacy, uid)
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
        row = self._db.execute(f"SELECT 1 FROM incidents WHERE {KEY_IS}", key).fetchone()
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
            self.outbox.add(key, now, deliveries)
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
            self.outbox.add_for_notice(namespace, deployment, key, now, deliveries)
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
            self.outbox.add_for_notice(namespace, deployment, f"{key}/closed", now, deliveries)
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
