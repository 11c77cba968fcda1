"""Read models for the dashboard and its JSON API: SQL reads over the store's tables, nothing else.

Incidents of every kind in one list. A row of ``incidents`` (a bad rollout) is ``r<id>``, a
row of ``notices`` (an alert incident or a notified error group) is ``n<id>``: the id a page
links to and a cursor pages from. Neither table ever deletes its rows, so an id stays its row's
(on SQLite the ids are the rowids of earlier versions: links made before stay right).

The list is newest first by ``detected_at`` (then ``r`` before ``n``, then id, so that the
order is total) and pages by keyset: ``before=<id>`` continues after that incident, which stays
right however many incidents arrive meanwhile.

Open or closed: an alert incident closes when its alert resolves (``notices.closed_at``); a
rollout incident closes when an action taken on it was verified (the fix held); an error group
never closes (it leaves the store when it is no longer seen, see ``run.triage``).

Every function takes the store's one connection (``store.connection``) and only reads; they are
called from the event loop, like every other user of that connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .db import Database
from .rows import db_time

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
KINDS = ("rollout", "alert", "change", "error_group")
PRIORITIES = ("P1", "P2", "P3", "P4")
STATUSES = ("open", "closed")
_NEWEST_FIRST = "detected_at DESC, src DESC, rid DESC"
_ID = re.compile(r"^([rn])([1-9][0-9]{0,17})$")

# When the rollout incident ``i`` closed: its verified action's time (a lookup in the actions'
# unique key); NULL while it is open.
ROLLOUT_CLOSED_AT = """(SELECT MAX(a.updated_at) FROM actions a WHERE a.namespace = i.namespace
          AND a.deployment = i.deployment AND a.revision = i.revision
          AND a.deployment_uid = i.deployment_uid AND a.state = 'verified')"""
# Every incident's sort and filter columns, cheap to read: no record's JSON is opened (the
# priority has a column of its own, schema 5).
_KEYS = f"""
SELECT 'r' AS src, i.id AS rid, 'rollout' AS kind, i.namespace AS namespace,
       i.deployment AS deployment, i.detected_at AS detected_at,
       {ROLLOUT_CLOSED_AT} AS closed_at,
       i.priority AS priority
  FROM incidents i
UNION ALL
SELECT 'n', n.id, n.kind, n.namespace, n.deployment, n.detected_at, n.closed_at, n.priority
  FROM notices n
"""
# The chosen rows in full, from their own table.
# ``{json}(field)`` reads a field of the record (each database says it its own way).
_DETAILS = {
    "r": "SELECT 'r', id, 'rollout', namespace, deployment, revision, deployment_uid,"
         " namespace || '/' || deployment || '/' || CAST(revision AS TEXT) || '/' ||"
         " deployment_uid, detected_at, priority, {rule}, {summary}, {confidence}, origin"
         " FROM incidents WHERE id IN ({marks})",
    "n": "SELECT 'n', id, kind, namespace, deployment, {revision}, {deployment_uid}, key,"
         " detected_at, priority, {rule}, {summary}, NULL, 'detected'"
         " FROM notices WHERE id IN ({marks})",
}
_COLUMNS = ("src", "rid", "kind", "namespace", "deployment", "revision", "deployment_uid", "key",
            "detected_at", "priority", "rule", "summary", "confidence", "origin", "closed_at")
_PRIORITY_ORDER = ("CASE priority WHEN 'P1' THEN 1 WHEN 'P2' THEN 2 WHEN 'P3' THEN 3"
                   " WHEN 'P4' THEN 4 ELSE 5 END")


def _select(db: Database, *, where: list[str], args: Sequence[Any], order: str,
            limit: int) -> list[tuple[Any, ...]]:
    """Filter and order the cheap keys, then read the chosen rows in full (in that order)."""
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    chosen = db.execute(f"SELECT src, rid, closed_at FROM ({_KEYS}) AS k{clause}"
                        f" ORDER BY {order} LIMIT ?", (*args, limit)).fetchall()
    closed = {(src, rid): closed_at for src, rid, closed_at in chosen}
    rows: dict[tuple[str, int], tuple[Any, ...]] = {}
    for src in ("r", "n"):
        ids = [rid for s, rid, _ in chosen if s == src]
        if ids:
            sql = _DETAILS[src].format(marks=", ".join("?" for _ in ids), **{
                field: db.json_text("record", field)
                for field in ("rule", "summary", "confidence", "revision", "deployment_uid")})
            for row in db.execute(sql, ids):
                rows[(src, row[1])] = (*row, closed[(src, row[1])])
    return [rows[(src, rid)] for src, rid, _ in chosen if (src, rid) in rows]


class BadQuery(ValueError):
    """A filter or cursor that cannot be read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Filters:
    namespace: str | None = None
    deployment: str | None = None
    kind: str | None = None
    priority: str | None = None
    status: str | None = None  # "open" or "closed"
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise BadQuery(f"kind is one of {', '.join(KINDS)}")
        if self.priority is not None and self.priority not in PRIORITIES:
            raise BadQuery(f"priority is one of {', '.join(PRIORITIES)}")
        if self.status is not None and self.status not in STATUSES:
            raise BadQuery("status is open or closed")


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    # The id to pass as ``before`` for the next page; None on the last page.
    next: str | None


def parse_id(incident_id: str) -> tuple[str, int]:
    """``r12`` -> ("r", 12); BadQuery for anything else."""
    match = _ID.match(incident_id or "")
    if match is None:
        raise BadQuery("an incident id is r<number> (a rollout) or n<number> (an alert or error "
                       "group)")
    return match.group(1), int(match.group(2))


def _where(filters: Filters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column in ("namespace", "deployment", "kind", "priority"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if filters.status == "open":
        clauses.append("closed_at IS NULL")
    elif filters.status == "closed":
        clauses.append("closed_at IS NOT NULL")
    if filters.since is not None:
        clauses.append("detected_at >= ?")
        args.append(db_time(filters.since))
    return clauses, args


def _item(row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(_COLUMNS, row))
    src, rid = values.pop("src"), values.pop("rid")
    values = {"id": f"{src}{rid}", **values,
              "status": "closed" if values["closed_at"] else "open"}
    if values["revision"] is not None:
        values["revision"] = int(values["revision"])
    values["confidence"] = _number(values["confidence"])
    return values


def _number(value: Any) -> float | int | None:
    """A number read from a record's JSON (PostgreSQL hands it over as text)."""
    if value is None or isinstance(value, (int, float)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and "." not in str(value) else number


def incidents(db: Database, *, filters: Filters = Filters(), before: str | None = None,
              limit: int = DEFAULT_LIMIT) -> Page:
    """Incidents of every kind, newest first, ``limit`` (1..MAX_LIMIT) at a time."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit is an integer from 1 to {MAX_LIMIT}")
    clauses, args = _where(filters)
    if before is not None:
        src, rid = parse_id(before)
        table = "incidents" if src == "r" else "notices"
        row = db.execute(f"SELECT detected_at FROM {table} WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise BadQuery(f"before names no incident: {before}")
        clauses.append("(detected_at, src, rid) < (?, ?, ?)")
        args += [row[0], src, rid]
    rows = _select(db, where=clauses, args=args, order=_NEWEST_FIRST, limit=limit + 1)
    items = [_item(row) for row in rows[:limit]]
    return Page(items, items[-1]["id"] if len(rows) > limit else None)


def queue(db: Database, *, since: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """The open incidents detected since ``since``, most urgent first (P1 before P2, newest
    first within a priority): the overview's priority queue."""
    rows = _select(db, where=["closed_at IS NULL", "detected_at >= ?"], args=[db_time(since)],
                   order=f"{_PRIORITY_ORDER}, {_NEWEST_FIRST}", limit=limit)
    return [_item(row) for row in rows]


def incident(db: Database, incident_id: str) -> dict[str, Any] | None:
    """One incident by id with its whole record (``record``) and its ``timeline``; None when
    there is no such incident (BadQuery when the id cannot be one)."""
    src, rid = parse_id(incident_id)
    rows = _select(db, where=["src = ?", "rid = ?"], args=[src, rid], order=_NEWEST_FIRST,
                   limit=1)
    if src == "r":
        record_row = db.execute("SELECT record, replicaset FROM incidents WHERE id = ?",
                                (rid,)).fetchone()
    else:
        record_row = db.execute("SELECT record, '' FROM notices WHERE id = ?",
                                (rid,)).fetchone()
    if not rows or record_row is None:
        return None
    item = _item(rows[0])
    item["record"] = json.loads(record_row[0] or "{}")
    if src == "r":
        item["replicaset"] = record_row[1]
    item["actions"] = actions_of(db, item)
    item["notifications"] = notifications_of(db, item)
    item["timeline"] = timeline(item)
    return item


def journal_key(item: dict[str, Any]) -> tuple[str, str, int, str] | None:
    """The remediation journal's key of an incident: rollout and alert incidents have one (an
    alert incident's is its Deployment's current revision); error groups none."""
    if item["kind"] == "error_group" or item.get("revision") is None:
        return None
    return (item["namespace"], item["deployment"], int(item["revision"]),
            item.get("deployment_uid") or "")


def actions_of(db: Database, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The journal's actions for the incident, each with its audit rows (oldest first)."""
    key = journal_key(item)
    columns = "id, action, params, state, created_at, updated_at, decided_by, result"
    if key is not None:
        rows = db.execute(f"SELECT {columns} FROM actions WHERE namespace=? AND deployment=?"
                          " AND revision=? AND deployment_uid=? ORDER BY id", key)
    else:
        # A change incident's fix is another Deployment's rollback (its top cause): the
        # journal entry its record names.
        journal_id = ((item.get("record") or {}).get("remediation") or {}).get("journal_id")
        if not isinstance(journal_id, int) or isinstance(journal_id, bool):
            return []
        rows = db.execute(f"SELECT {columns} FROM actions WHERE id=?", (journal_id,))
    actions = [{"id": id_, "action": action, "params": json.loads(params or "{}"),
                "state": state, "created_at": created_at, "updated_at": updated_at,
                "decided_by": decided_by, "result": result, "audit": []}
               for id_, action, params, state, created_at, updated_at, decided_by, result
               in rows]
    if not actions:
        return actions
    by_id = {action["id"]: action for action in actions}
    marks = ", ".join("?" for _ in by_id)
    for row in db.execute(
            "SELECT id, at, who, action, target, decision, reason, dry_run, result, action_id"
            f" FROM audit WHERE action_id IN ({marks}) ORDER BY id", tuple(by_id)):
        by_id[row[9]]["audit"].append(_audit(row))
    return actions


def notifications_of(db: Database, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The outbox rows of the incident: one per channel (and, for a closed alert incident, its
    follow-up's too)."""
    if item["id"].startswith("r"):
        rows = db.execute(
            "SELECT channel, attempts, created_at, delivered_at, gave_up_at, last_error,"
            " deployment_uid FROM outbox WHERE namespace=? AND deployment=? AND revision=?"
            " AND deployment_uid=? ORDER BY id",
            (item["namespace"], item["deployment"], item["revision"], item["deployment_uid"]))
    else:
        rows = db.execute(
            "SELECT channel, attempts, created_at, delivered_at, gave_up_at, last_error,"
            " deployment_uid FROM outbox WHERE namespace=? AND deployment=? AND revision=0"
            " AND deployment_uid IN (?, ?) ORDER BY id",
            (item["namespace"], item["deployment"], item["key"], item["key"] + "/closed"))
    return [{"channel": channel, "attempts": int(attempts), "created_at": created_at,
             "delivered_at": delivered_at, "gave_up_at": gave_up_at, "last_error": last_error,
             "follow_up": uid.endswith("/closed"),
             "state": "delivered" if delivered_at else "given_up" if gave_up_at else "pending"}
            for channel, attempts, created_at, delivered_at, gave_up_at, last_error, uid in rows]


def _event(at: str | None, kind: str, title: str, detail: str = "",
           outcome: str | None = None) -> dict[str, Any]:
    return {"at": at, "kind": kind, "title": title, "detail": detail, "outcome": outcome}


def timeline(item: dict[str, Any]) -> list[dict[str, Any]]:
    """What happened to the incident, in order: rollout, detection, notifications, approvals,
    actions, verification, resolution. Entries whose time is unknown come last."""
    record = item.get("record") or {}
    events: list[dict[str, Any]] = []
    if item["kind"] == "rollout":
        if record.get("rollout_started_at"):
            events.append(_event(record["rollout_started_at"], "rollout",
                                 f"Revision {item['revision']} began rolling out",
                                 record.get("replicaset") or item.get("replicaset") or ""))
    elif item["kind"] == "alert":
        last = (record.get("evidence") or {}).get("last_rollout")
        if last and last.get("started_at"):
            events.append(_event(last["started_at"], "rollout",
                                 f"Revision {last.get('revision')} rolled out",
                                 last.get("replicaset") or ""))
        alert = record.get("alert") or {}
        if alert.get("starts_at"):
            events.append(_event(alert["starts_at"], "alert",
                                 f"Alert {alert.get('name', '')} began firing"))
    elif item["kind"] == "change":
        change = record.get("change") or {}
        if change.get("at"):
            events.append(_event(change["at"], "change", change.get("summary") or
                                 f"{change.get('kind', '')} {change.get('name', '')} changed"))
    elif record.get("first_seen"):
        events.append(_event(record["first_seen"], "first_seen", "Error first seen",
                             record.get("example") or ""))
    detail = item.get("summary") or ""
    if item.get("origin") not in (None, "detected"):
        detail = f"Notified by another replica (read back from its {item['origin']})."
    events.append(_event(item["detected_at"], "detection",
                         f"Detected ({item.get('priority') or 'no priority'})", detail))
    for note in item.get("notifications", ()):
        what = "Follow-up" if note["follow_up"] else "Notification"
        tries = f"{note['attempts']} attempt{'s' if note['attempts'] != 1 else ''}"
        if note["state"] == "delivered":
            events.append(_event(note["delivered_at"], "notification",
                                 f"{what} delivered: {note['channel']}", tries, "delivered"))
        elif note["state"] == "given_up":
            events.append(_event(note["gave_up_at"], "notification",
                                 f"{what} given up: {note['channel']}",
                                 f"{tries}; {note['last_error'] or ''}".rstrip("; "), "given_up"))
        else:
            events.append(_event(note["created_at"], "notification",
                                 f"{what} pending: {note['channel']}",
                                 f"{tries}; {note['last_error'] or 'not sent yet'}", "pending"))
    for action in item.get("actions", ()):
        for row in action["audit"]:
            kind = {"approved": "approval", "rejected": "approval", "requested": "approval",
                    "verified": "verification"}.get(row["decision"], "action")
            title = f"{row['decision'].replace('_', ' ').capitalize()}: {row['action']}" \
                    f" {row['target']}"
            if row["dry_run"]:
                title += " (dry run)"
            events.append(_event(row["when"], kind, title, row["reason"] or "",
                                 row["result"] or row["decision"]))
        if not action["audit"]:
            events.append(_event(action["updated_at"], "action",
                                 f"{action['action']}: {action['state']}", "", action["state"]))
    closed = record.get("closed") if isinstance(record.get("closed"), dict) else None
    if item.get("closed_at") and item["kind"] != "rollout":
        events.append(_event(item["closed_at"], "resolved", "Resolved",
                             (closed or {}).get("summary") or ""))
    known = sorted((e for e in events if e["at"]), key=lambda e: _sortable(e["at"]))
    return known + [e for e in events if not e["at"]]


def _sortable(at: str) -> str:
    """ISO texts of both shapes (``...:00Z`` and ``...:00.000000Z``) in one order."""
    try:
        return db_time(datetime.fromisoformat(at.replace("Z", "+00:00")))
    except ValueError:
        return at


def _audit(row: Sequence[Any]) -> dict[str, Any]:
    id_, at, who, action, target, decision, reason, dry_run, result, action_id = row
    return {"id": id_, "when": at, "who": who, "action": action, "target": target,
            "decision": decision, "reason": reason, "dry_run": bool(dry_run), "result": result,
            "action_id": action_id}


def audit(db: Database, *, who: str | None = None, decision: str | None = None,
          action: str | None = None, target: str | None = None, since: datetime | None = None,
          before: int | None = None, limit: int = DEFAULT_LIMIT) -> Page:
    """The audit trail, newest first, filtered; ``before`` is an audit row id."""
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit is an integer from 1 to {MAX_LIMIT}")
    clauses, args = [], []
    for column, value in (("who", who), ("decision", decision), ("action", action)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if target is not None:  # a namespace, or namespace/deployment
        clauses.append("(target = ? OR target LIKE ? ESCAPE '\\')")
        args += [target, target.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                 + "/%"]
    if since is not None:
        clauses.append("at >= ?")
        args.append(db_time(since))
    if before is not None:
        clauses.append("id < ?")
        args.append(before)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = db.execute("SELECT id, at, who, action, target, decision, reason, dry_run, result,"
                      f" action_id FROM audit{where} ORDER BY id DESC LIMIT ?",
                      (*args, limit + 1)).fetchall()
    items = [_audit(row) for row in rows[:limit]]
    return Page(items, str(items[-1]["id"]) if len(rows) > limit else None)


def start_of_day(now: datetime) -> datetime:
    now = now.astimezone(timezone.utc) if now.tzinfo else now.replace(tzinfo=timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def stats(db: Database, *, now: datetime, open_since: timedelta = timedelta(hours=24)
          ) -> dict[str, Any]:
    """Today's figures (since 00:00 UTC): incidents by kind and by priority, actions by
    decision; the notifications given up (today, and ever); the incidents open that were
    detected within ``open_since``."""
    today = db_time(start_of_day(now))
    by_kind = {kind: 0 for kind in KINDS}
    by_priority = {priority: 0 for priority in PRIORITIES}
    total = 0
    for kind, priority, count in db.execute(
            f"SELECT kind, priority, COUNT(*) FROM ({_KEYS}) AS k WHERE detected_at >= ?"
            " GROUP BY kind, priority", (today,)):
        total += count
        by_kind[kind] = by_kind.get(kind, 0) + count
        if priority:
            by_priority[priority] = by_priority.get(priority, 0) + count
    actions = {decision: int(count) for decision, count in db.execute(
        "SELECT decision, COUNT(*) FROM audit WHERE at >= ? GROUP BY decision ORDER BY decision",
        (today,))}
    given_up_today, given_up = db.execute(
        "SELECT COUNT(CASE WHEN gave_up_at >= ? THEN 1 END), COUNT(gave_up_at) FROM outbox",
        (today,)).fetchone()
    (open_count,) = db.execute(
        f"SELECT COUNT(*) FROM ({_KEYS}) AS k"
        " WHERE closed_at IS NULL AND detected_at >= ?",
        (db_time(now - open_since),)).fetchone()
    return {"day_started_at": today,
            "incidents_today": {"total": total, "by_kind": by_kind, "by_priority": by_priority},
            "actions_today": {"total": sum(actions.values()), "by_decision": actions},
            "notifications_given_up": {"today": int(given_up_today), "total": int(given_up)},
            "open_incidents": int(open_count),
            "open_since": db_time(now - open_since)}


def alert_intake(db: Database) -> dict[str, Any]:
    """What Alertmanager's webhook brought: when an alert last arrived or changed, and how many
    are firing (the alerts table exists from schema 4 on, empty when the intake is off)."""
    last, firing = db.execute(
        "SELECT MAX(updated_at), COUNT(CASE WHEN status = 'firing' THEN 1 END) FROM alerts"
    ).fetchone()
    return {"last_received_at": last, "firing": int(firing or 0)}


def rollout_incident(db: Database, *, namespace: str, deployment: str,
                     revision: int) -> dict[str, Any] | None:
    """The newest incident of a rollout (its id, confidence and priority), by the incidents'
    primary key."""
    row = db.execute(
        f"SELECT id, {db.json_text('record', 'confidence')}, priority"
        " FROM incidents WHERE namespace=? AND deployment=? AND revision=?"
        " ORDER BY detected_at DESC, id DESC LIMIT 1",
        (namespace, deployment, revision)).fetchone()
    if row is None:
        return None
    return {"id": f"r{row[0]}", "confidence": _number(row[1]), "priority": row[2]}
