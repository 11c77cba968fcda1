"""The durable inbox of Alertmanager alerts, in the store's ``alerts`` table.

The webhook endpoint writes every notification here, in one transaction, before it answers
200: an alert Alertmanager was told we have is never only in memory. The loop then reads the
firing alerts, maps them to Deployments (``set_mapping``), ties them to incidents (``attach``)
and closes those whose alert resolved (``newly_resolved``, ``close``).

An alert's firing period is keyed by (fingerprint, startsAt): the same alert firing again later
is a new row. Alertmanager may deliver notifications out of order (retries, several replicas in
a cluster), so a resolved row never goes back to firing: a firing copy of the same period that
arrives after its resolution is stale and changes nothing.

    received ──> firing ──(resolved notification)──> resolved
                   │ set_mapping, attach(incident)        │ incident set, closed_at empty
                   │                                      └──> newly_resolved ──close──> closed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..model import Alert, AlertNotification, AlertTarget, Unmapped
from .db import Database
from .rows import NO_LIMIT, db_time, from_db_time, transaction

DEFAULT_KEEP_DAYS = 7
DEFAULT_MAX_ROWS = 10_000

_COLUMNS = ("fingerprint, starts_at, status, ends_at, labels, annotations, generator_url,"
            " group_key, receiver, received_at, updated_at, namespace, deployment, mapped_by,"
            " unmapped_reason, incident, closed_at")
_KEY = "fingerprint=? AND starts_at=?"
# Rows the loop still has work to do on: firing, or resolved with an incident not yet closed.
_OPEN = ("(status='firing' OR (status='resolved' AND incident IS NOT NULL"
         " AND closed_at IS NULL))")


@dataclass(frozen=True, slots=True)
class ReceiveSummary:
    """What one notification did to the inbox."""

    received: int
    firing: int
    resolved: int
    # Firing periods seen for the first time.
    new: int
    # Firing copies that arrived after their period's resolution, and were ignored.
    stale: int


@dataclass(frozen=True, slots=True)
class StoredAlert:
    alert: Alert
    received_at: datetime
    updated_at: datetime
    # Set by ``set_mapping``: the target, or the reason there is none (both None: not mapped
    # yet). ``namespace`` is also the namespace an unmapped alert named, when it named one.
    namespace: str | None = None
    deployment: str | None = None
    mapped_by: str | None = None
    unmapped_reason: str | None = None
    incident: str | None = None
    closed_at: datetime | None = None

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.alert.fingerprint, self.alert.starts_at)

    @property
    def target(self) -> AlertTarget | None:
        if self.namespace and self.deployment and self.mapped_by:
            return AlertTarget(self.namespace, self.deployment, self.mapped_by)
        return None

    def as_dict(self) -> dict[str, Any]:
        """The API's view (``GET /api/alerts``)."""
        alert = self.alert
        return {
            "fingerprint": alert.fingerprint, "name": alert.name, "status": alert.status,
            "starts_at": db_time(alert.starts_at),
            "ends_at": db_time(alert.ends_at) if alert.ends_at else None,
            "labels": dict(alert.labels), "annotations": dict(alert.annotations),
            "generator_url": alert.generator_url, "group_key": alert.group_key,
            "receiver": alert.receiver,
            "received_at": db_time(self.received_at), "updated_at": db_time(self.updated_at),
            "mapped": self.target is not None, "namespace": self.namespace,
            "deployment": self.deployment, "mapped_by": self.mapped_by,
            "unmapped_reason": self.unmapped_reason, "incident": self.incident,
            "closed_at": db_time(self.closed_at) if self.closed_at else None,
        }


class AlertInbox:
    """``AlertInbox(store.connection)``: the ``alerts`` table of schema 4."""

    def __init__(self, connection: Database) -> None:
        self._db = connection

    def receive(self, notification: AlertNotification, *, now: datetime) -> ReceiveSummary:
        """Record every alert of a notification, all or none."""
        stamp = db_time(now)
        new = stale = 0
        with transaction(self._db):
            for alert in notification.alerts:
                key = (alert.fingerprint, db_time(alert.starts_at))
                row = self._db.execute(f"SELECT status FROM alerts WHERE {_KEY}", key).fetchone()
                if row is None:
                    new += alert.firing
                elif row[0] == "resolved" and alert.firing:
                    stale += 1
                    continue
                self._db.execute(
                    "INSERT INTO alerts (fingerprint, starts_at, name, status, ends_at, labels,"
                    " annotations, generator_url, group_key, receiver, received_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (fingerprint, starts_at) DO UPDATE SET"
                    " status=excluded.status, ends_at=excluded.ends_at,"
                    " labels=excluded.labels, annotations=excluded.annotations,"
                    " generator_url=excluded.generator_url, group_key=excluded.group_key,"
                    " receiver=excluded.receiver, updated_at=excluded.updated_at"
                    # Checked again here, so that the rule holds whatever the SELECT saw.
                    " WHERE NOT (alerts.status='resolved' AND excluded.status='firing')",
                    (*key, alert.name, alert.status,
                     db_time(alert.ends_at) if alert.ends_at else None,
                     _pairs_json(alert.labels), _pairs_json(alert.annotations),
                     alert.generator_url, alert.group_key, alert.receiver, stamp, stamp))
        return ReceiveSummary(received=len(notification.alerts), firing=notification.firing,
                              resolved=notification.resolved, new=new, stale=stale)

    def get(self, fingerprint: str, starts_at: datetime) -> StoredAlert | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM alerts WHERE {_KEY}",
                               (fingerprint, db_time(starts_at))).fetchone()
        return _stored(row) if row else None

    def firing(self) -> list[StoredAlert]:
        """Every firing alert, oldest first."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM alerts WHERE status='firing'"
                                " ORDER BY starts_at, fingerprint").fetchall()
        return [_stored(row) for row in rows]

    def newly_resolved(self) -> list[StoredAlert]:
        """Resolved alerts tied to an incident that is not closed yet: what the loop closes."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE status='resolved' AND incident IS NOT NULL"
            " AND closed_at IS NULL ORDER BY updated_at, fingerprint").fetchall()
        return [_stored(row) for row in rows]

    def set_mapping(self, fingerprint: str, starts_at: datetime,
                    target: AlertTarget | Unmapped) -> bool:
        """Record where the alert maps (or why nowhere); False when there is no such alert."""
        if isinstance(target, AlertTarget):
            values = (target.namespace, target.deployment, target.mapped_by, None)
        else:
            values = (target.namespace, None, None, target.reason)
        cursor = self._db.execute(
            "UPDATE alerts SET namespace=?, deployment=?, mapped_by=?, unmapped_reason=?"
            f" WHERE {_KEY}", (*values, fingerprint, db_time(starts_at)))
        return cursor.rowcount == 1

    def attach(self, fingerprint: str, starts_at: datetime, incident: str) -> bool:
        """Tie the alert to the incident it raised or joined; False when there is no such
        alert."""
        cursor = self._db.execute(f"UPDATE alerts SET incident=? WHERE {_KEY}",
                                  (incident, fingerprint, db_time(starts_at)))
        return cursor.rowcount == 1

    def close(self, fingerprint: str, starts_at: datetime, *, now: datetime) -> bool:
        """Mark the alert's incident closed; True for the one call that closed it."""
        cursor = self._db.execute(
            f"UPDATE alerts SET closed_at=? WHERE {_KEY} AND closed_at IS NULL",
            (db_time(now), fingerprint, db_time(starts_at)))
        return cursor.rowcount == 1

    def recent(self, *, limit: int, namespace: str | None = None, status: str | None = None,
               mapped: bool | None = None) -> list[dict[str, Any]]:
        """The most recently updated alerts, for the API, unmapped ones with their reason."""
        where, params = [], []
        if namespace is not None:
            where.append("namespace=?")
            params.append(namespace)
        if status is not None:
            where.append("status=?")
            params.append(status)
        if mapped is not None:
            where.append("deployment IS NOT NULL" if mapped else "deployment IS NULL")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM alerts{clause} ORDER BY updated_at DESC, fingerprint"
            " LIMIT ?", (*params, limit)).fetchall()
        return [_stored(row).as_dict() for row in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def prune(self, *, now: datetime, keep_days: float = DEFAULT_KEEP_DAYS,
              max_rows: int = DEFAULT_MAX_ROWS) -> int:
        """Forget alerts not updated for ``keep_days`` and keep at most ``max_rows``; rows the
        loop still works on (firing, or resolved with an open incident) go last. Returns how
        many rows were deleted.

        A firing alert is re-sent by Alertmanager every ``repeat_interval`` (4 h by default), so
        one not heard of for days was lost upstream (or its resolution was not sent).
        """
        cutoff = db_time(now - timedelta(days=keep_days))
        with transaction(self._db):
            deleted = self._db.execute(
                "DELETE FROM alerts WHERE updated_at < ? AND NOT (status='resolved'"
                " AND incident IS NOT NULL AND closed_at IS NULL)", (cutoff,)).rowcount
            deleted += self._db.execute(
                "DELETE FROM alerts WHERE (fingerprint, starts_at) IN (SELECT fingerprint,"
                f" starts_at FROM alerts ORDER BY CASE WHEN {_OPEN} THEN 0 ELSE 1 END,"
                " updated_at DESC, fingerprint LIMIT ? OFFSET ?)",
                (NO_LIMIT, max(0, max_rows))).rowcount
        return deleted


def _pairs_json(pairs: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(pairs), sort_keys=True, ensure_ascii=False)


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(json.loads(text).items()))


def _stored(row: tuple[Any, ...]) -> StoredAlert:
    (fingerprint, starts_at, status, ends_at, labels, annotations, generator_url, group_key,
     receiver, received_at, updated_at, namespace, deployment, mapped_by, unmapped_reason,
     incident, closed_at) = row
    alert = Alert(fingerprint=fingerprint, status=status,
                  starts_at=from_db_time(starts_at) or datetime.min, ends_at=from_db_time(ends_at),
                  labels=_pairs(labels), annotations=_pairs(annotations),
                  generator_url=generator_url, group_key=group_key, receiver=receiver)
    return StoredAlert(alert=alert, received_at=from_db_time(received_at) or datetime.min,
                       updated_at=from_db_time(updated_at) or datetime.min,
                       namespace=namespace, deployment=deployment, mapped_by=mapped_by,
                       unmapped_reason=unmapped_reason, incident=incident,
                       closed_at=from_db_time(closed_at))
