"""The notification outbox: one row per channel of an incident or a notice, queued in the
transaction that records it (``store.records``), then claimed, sent and marked by the sender
(``run.outbox``).

With many replicas on one database, a row is claimed by compare and set before it is sent (the
one replica whose claim went in sends it; a claim runs out after ``CLAIM_SECONDS`` so that the
rows of a replica killed mid-send go out from another). A row is marked delivered right after
its send succeeds; the window in which a crash can repeat a send is that one statement.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .db import Database
from .rows import KEY_IS, IncidentKey, db_time, from_db_time

# How long a sender holds the outbox rows it claimed: longer than any send takes (Slack's and
# the apiserver's timeouts are seconds), short enough that a replica killed mid-send leaves its
# rows to the next leader soon.
CLAIM_SECONDS = 60.0

Deliveries = Iterable[tuple[str, dict[str, Any]]]


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


class OutboxQueue:
    """The outbox's rows. ``owner`` names this process in the rows it claims."""

    def __init__(self, db: Database, *, owner: str) -> None:
        self._db = db
        self.owner = owner

    # Queued with what they deliver (in the caller's transaction) ---------------------------

    def add(self, key: IncidentKey, created_at: str, deliveries: Deliveries) -> None:
        """Queue the deliveries of the incident just recorded under ``key``."""
        for channel, payload in deliveries:
            self._db.execute(
                "INSERT INTO outbox (namespace, deployment, revision, deployment_uid,"
                " channel, payload, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, channel, json.dumps(payload), created_at, created_at),
            )

    def add_for_notice(self, namespace: str, deployment: str, key: str, created_at: str,
                       deliveries: Deliveries) -> None:
        """Queue a notice's deliveries: revision 0 (no revision is ever 0) and the notice's key
        where a rollout incident has the Deployment's uid; a row queued already stays as it is."""
        for channel, payload in deliveries:
            self._db.execute(
                "INSERT INTO outbox (namespace, deployment, revision, deployment_uid,"
                " channel, payload, created_at, next_attempt_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (namespace, deployment, key, channel, json.dumps(payload), created_at,
                 created_at))

    def adopt_legacy(self, legacy: IncidentKey, uid: str) -> None:
        """Give the rows of ``legacy`` (a key without a uid) the uid its incident was given,
        where no row of the same channel has it already."""
        self._db.execute(
            f"UPDATE outbox SET deployment_uid=? WHERE {KEY_IS} AND NOT EXISTS (SELECT 1"
            " FROM outbox AS known WHERE known.namespace=outbox.namespace AND"
            " known.deployment=outbox.deployment AND known.revision=outbox.revision"
            " AND known.deployment_uid=? AND known.channel=outbox.channel)",
            (uid, *legacy, uid))

    # Sent ----------------------------------------------------------------------------------

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
            f"SELECT channel FROM outbox WHERE {KEY_IS}"
            " AND delivered_at IS NULL AND gave_up_at IS NULL",
            key,
        )
        return {channel for (channel,) in rows}

    def supersede(self, key: IncidentKey, *, now: datetime, note: str) -> int:
        """Close the pending rows of an incident another replica has already notified."""
        cursor = self._db.execute(
            f"UPDATE outbox SET delivered_at=?, last_error=? WHERE {KEY_IS}"
            " AND delivered_at IS NULL AND gave_up_at IS NULL",
            (db_time(now), note, *key),
        )
        return cursor.rowcount

    def summary(self, limit: int = 20) -> OutboxSummary:
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
