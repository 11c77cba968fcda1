"""The change timeline's memory: every change seen in the watched namespaces, bounded by age and
count, with the delivery state of its CloudEvent.

A change is recorded once (its key is namespace, kind, name and resourceVersion), in one
transaction per tick, before it is published or posted anywhere: a crash after the write loses
nothing (the CloudEvent is still pending and goes out after the restart), a crash before it
loses only what the watch will not replay, which a relist turns into one change of the net
difference.

``change_dict`` is the one JSON shape of a change: in ``GET /api/changes``, the live stream, the
CloudEvent's ``data``, the gRPC feed and an incident's ``evidence.causes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ..model import Change, FieldChange
from .db import Database
from .rows import NO_LIMIT, db_time, from_db_time, transaction

# The CloudEvent of a change: waiting to be sent, sent, or given up after too many attempts.
PENDING, SENT, GAVE_UP = "pending", "sent", "gave_up"
# Changes returned by one query at most.
MAX_QUERY_LIMIT = 1000


def change_dict(change: Change) -> dict[str, Any]:
    """The JSON form of a change (never a Secret's value: ``FieldChange`` holds none)."""
    out: dict[str, Any] = {
        "id": change.id,
        "namespace": change.namespace,
        "kind": change.kind,
        "name": change.name,
        "action": change.action,
        "at": _iso(change.at),
        "observed_at": _iso(change.observed_at),
        "manager": change.manager,
        "operation": change.operation,
        "uid": change.uid,
        "resource_version": change.resource_version,
        "fields": [_field_dict(f) for f in change.fields],
        "summary": change_summary(change),
    }
    if change.revision is not None:
        out["revision"] = change.revision
        out["previous_revision"] = change.previous_revision
    return out


def change_from_dict(data: Mapping[str, Any]) -> Change:
    """The change ``change_dict`` wrote (``ValueError``/``KeyError``/``TypeError`` if it is not one)."""
    return Change(
        namespace=str(data["namespace"]), kind=str(data["kind"]), name=str(data["name"]),
        action=str(data["action"]), at=_time(data["at"]),
        observed_at=_time(data.get("observed_at") or data["at"]),
        fields=tuple(FieldChange(path=str(f["path"]), before=f.get("before"),
                                 after=f.get("after"), hidden=bool(f.get("hidden", False)))
                     for f in data.get("fields") or ()),
        manager=data.get("manager"), operation=data.get("operation"),
        uid=str(data.get("uid") or ""), resource_version=str(data.get("resource_version") or ""),
        revision=data.get("revision"), previous_revision=data.get("previous_revision"),
        id=data.get("id"))


def change_summary(change: Change, *, limit: int = 3) -> str:
    """One line a person reads: ``ConfigMap orders-config updated: data.TIMEOUT_MS 5000 → 50
    (kubectl-patch)``."""
    what = f"{change.kind} {change.name}"
    if change.revision is not None:
        head = f"{what} rolled out revision {change.revision}"
    else:
        head = f"{what} {change.action}"
    parts = [_field_text(f) for f in change.fields[:limit]]
    if len(change.fields) > limit:
        parts.append(f"{len(change.fields) - limit} more")
    text = head + (": " + ", ".join(parts) if parts else "")
    if change.manager:
        text += f" (by {change.manager})"
    return text


def _field_text(f: FieldChange) -> str:
    if f.hidden:
        return f"{f.path} changed (value hidden)"
    if f.before is None and f.after is not None:
        return f"{f.path} added: {f.after}"
    if f.after is None and f.before is not None:
        return f"{f.path} removed"
    if f.before is None and f.after is None:
        return f"{f.path} changed"
    return f"{f.path} {f.before} → {f.after}"


def _field_dict(f: FieldChange) -> dict[str, Any]:
    return {"path": f.path, "before": f.before, "after": f.after, "hidden": f.hidden}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class PendingEmission:
    change: Change
    attempts: int


class ChangeLog:
    """The ``changes`` table of the state file (run.store, schema 6)."""

    def __init__(self, db: Database, *, retention: timedelta, max_rows: int,
                 emit: bool = False) -> None:
        self._db = db
        self.retention = retention
        self.max_rows = max_rows
        # With CHANGE_WEBHOOK_URL set, each new change waits for its CloudEvent to be sent.
        self.emit = emit

    def record(self, changes: Sequence[Change]) -> list[Change]:
        """Write the changes not recorded yet, in one transaction; the new ones, with their ids,
        in the order given."""
        if not changes:
            return []
        recorded: list[Change] = []
        with transaction(self._db):
            for change in changes:
                row = self._db.execute(
                    "INSERT INTO changes (namespace, kind, name, resource_version, at,"
                    " observed_at, record, emit_state, emit_next_at) VALUES (?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (change.namespace, change.kind, change.name, change.resource_version,
                     db_time(change.at), db_time(change.observed_at), "{}",
                     PENDING if self.emit else None,
                     db_time(change.observed_at) if self.emit else None)).fetchone()
                if row is None:
                    continue
                stored = _with_id(change, int(row[0]))
                self._db.execute("UPDATE changes SET record=? WHERE id=?",
                                 (json.dumps(change_dict(stored), sort_keys=True), stored.id))
                recorded.append(stored)
        return recorded

    def query(self, *, namespace: str | None = None, kind: str | None = None,
              name: str | None = None, since: datetime | None = None,
              before_id: int | None = None, after_id: int | None = None,
              limit: int = 100) -> list[Change]:
        """Changes matching every filter given, newest first (by id; ``after_id`` for what came
        after a change already seen, oldest first)."""
        where, args = [], []
        for column, value in (("namespace", namespace), ("kind", kind), ("name", name)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if since is not None:
            where.append("at>=?")
            args.append(db_time(since))
        if before_id is not None:
            where.append("id<?")
            args.append(before_id)
        if after_id is not None:
            where.append("id>?")
            args.append(after_id)
        order = "ASC" if after_id is not None else "DESC"
        sql = "SELECT record FROM changes" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY id {order} LIMIT ?"
        args.append(max(1, min(int(limit), MAX_QUERY_LIMIT)))
        return [change_from_dict(json.loads(row[0])) for row in self._db.execute(sql, args)]

    def recent(self, *, since: datetime, namespaces: Iterable[str] | None = None) -> list[Change]:
        """Every change made at or after ``since`` (in the namespaces given), oldest first: the
        candidates a root-cause ranking looks at."""
        args: list[Any] = [db_time(since)]
        sql = "SELECT record FROM changes WHERE at>=?"
        if namespaces is not None:
            names = sorted(set(namespaces))
            sql += f" AND namespace IN ({','.join('?' * len(names))})"
            args.extend(names)
        sql += " ORDER BY at, id"
        return [change_from_dict(json.loads(row[0])) for row in self._db.execute(sql, args)]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM changes").fetchone()[0])

    def prune(self, now: datetime) -> int:
        """Drop what is older than the retention, then the oldest past ``max_rows``; how many."""
        with transaction(self._db):
            old = self._db.execute("DELETE FROM changes WHERE at<?",
                                   (db_time(now - self.retention),)).rowcount
            extra = self._db.execute(
                "DELETE FROM changes WHERE id IN (SELECT id FROM changes ORDER BY id DESC "
                "LIMIT ? OFFSET ?)", (NO_LIMIT, self.max_rows)).rowcount
        return old + extra

    # CloudEvent delivery ------------------------------------------------------------------

    def pending_emission(self, now: datetime, *, limit: int = 50) -> list[PendingEmission]:
        rows = self._db.execute(
            "SELECT record, emit_attempts FROM changes WHERE emit_state=? AND emit_next_at<=? "
            "ORDER BY id LIMIT ?", (PENDING, db_time(now), limit)).fetchall()
        return [PendingEmission(change_from_dict(json.loads(r[0])), int(r[1])) for r in rows]

    def next_emission_at(self) -> datetime | None:
        row = self._db.execute("SELECT MIN(emit_next_at) FROM changes WHERE emit_state=?",
                               (PENDING,)).fetchone()
        return from_db_time(row[0]) if row else None

    def mark_emitted(self, change_id: int) -> None:
        with transaction(self._db):
            self._db.execute("UPDATE changes SET emit_state=?, emit_attempts=emit_attempts+1, "
                             "emit_error=NULL WHERE id=?", (SENT, change_id))

    def mark_emit_failed(self, change_id: int, *, error: str, retry_at: datetime) -> None:
        with transaction(self._db):
            self._db.execute("UPDATE changes SET emit_attempts=emit_attempts+1, emit_error=?, "
                             "emit_next_at=? WHERE id=?", (error, db_time(retry_at), change_id))

    def mark_emit_given_up(self, change_id: int, *, error: str) -> None:
        with transaction(self._db):
            self._db.execute("UPDATE changes SET emit_state=?, emit_attempts=emit_attempts+1, "
                             "emit_error=? WHERE id=?", (GAVE_UP, error, change_id))

    def emission_summary(self) -> dict[str, int]:
        rows = self._db.execute("SELECT emit_state, COUNT(*) FROM changes "
                                "WHERE emit_state IS NOT NULL GROUP BY emit_state").fetchall()
        return {str(state): int(count) for state, count in rows}


def _with_id(change: Change, change_id: int) -> Change:
    return replace(change, id=change_id)
