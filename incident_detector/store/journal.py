"""The remediation journal and the audit trail, in the store's SQLite file.

An action is written to the journal *before* it is executed, and it moves through its states by
compare-and-set updates (``advance``): two approvals racing, a retry after a timeout, or a
restart between "approved" and "executed" can never run it twice. At most one action of each
kind per incident, ever (the journal's unique key).

    proposed ──approve──> approved ──begin──> executing ──> done ──verify──> verified | unverified
        └──reject──> rejected                          └──> dry_run | failed | stale
    (a refusal is recorded as refused, never executed)

Every request, approval, rejection, refusal, execution and verification is one audit row; the
detector never deletes one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .db import Database
from .rows import IncidentKey, db_time, from_db_time

PROPOSED, APPROVED, EXECUTING = "proposed", "approved", "executing"
DONE, FAILED, STALE, REJECTED, REFUSED = "done", "failed", "stale", "rejected", "refused"
# After DONE (written for real): the verification's verdict. A dry run ends at DRY_RUN.
VERIFIED, UNVERIFIED, DRY_RUN = "verified", "unverified", "dry_run"
STATES = (PROPOSED, APPROVED, EXECUTING, DONE, FAILED, STALE, REJECTED, REFUSED, VERIFIED,
          UNVERIFIED, DRY_RUN)
FINAL_STATES = frozenset({FAILED, STALE, REJECTED, REFUSED, VERIFIED, UNVERIFIED, DRY_RUN})

_COLUMNS = ("id, namespace, deployment, revision, deployment_uid, action, params, precondition,"
            " state, created_at, updated_at, decided_by, result")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    key: IncidentKey
    action: str
    params: dict[str, Any]
    # The Deployment's resourceVersion seen when the incident was raised: every write carries it.
    precondition: str
    state: str
    created_at: datetime
    updated_at: datetime
    decided_by: str | None
    result: str | None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    who: str
    action: str
    target: str
    decision: str
    reason: str
    dry_run: bool
    result: str | None
    action_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "when": db_time(self.at), "who": self.who, "action": self.action,
                "target": self.target, "decision": self.decision, "reason": self.reason,
                "dry_run": self.dry_run, "result": self.result, "action_id": self.action_id}


class Journal:
    def __init__(self, db: Database, *,
                 on_audit: Callable[[AuditRow], None] | None = None) -> None:
        self._db = db
        # Told of every audit row once it is written (the dashboard's live feed).
        self._on_audit = on_audit

    # The journal -------------------------------------------------------------------------

    def propose(self, *, key: IncidentKey, action: str, params: dict[str, Any],
                precondition: str, now: datetime, state: str = PROPOSED) -> JournalEntry | None:
        """Write an action down before anything happens; None if this incident already has one
        of that kind (whatever became of it)."""
        if state not in (PROPOSED, APPROVED, REFUSED):
            raise ValueError(f"an action starts proposed, approved or refused, not {state!r}")
        row = self._db.execute(
            "INSERT INTO actions (namespace, deployment, revision, deployment_uid,"
            " action, params, precondition, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            (*key, action, json.dumps(params, sort_keys=True), precondition, state, db_time(now),
             db_time(now))).fetchone()
        return self.get(int(row[0])) if row is not None else None

    def advance(self, entry_id: int, *, expected: Iterable[str], to: str, now: datetime,
                who: str | None = None, result: str | None = None,
                executor: str | None = None) -> bool:
        """Move an action to ``to`` only from one of the ``expected`` states (compare and set):
        True for the one caller that moved it, False for everyone else."""
        if to not in STATES:
            raise ValueError(f"unknown state {to!r}")
        expected = tuple(expected)
        placeholders = ", ".join("?" for _ in expected)
        cursor = self._db.execute(
            f"UPDATE actions SET state=?, updated_at=?, decided_by=COALESCE(?, decided_by),"
            f" result=COALESCE(?, result), executor=COALESCE(?, executor)"
            f" WHERE id=? AND state IN ({placeholders})",
            (to, db_time(now), who, result, executor, entry_id, *expected))
        return cursor.rowcount == 1

    def renew_precondition(self, entry_id: int, *, seen: str, now_seen: str,
                           state: str = PROPOSED) -> bool:
        """Move an action's precondition from ``seen`` to ``now_seen`` (compare and set, only
        while it is in ``state``: waiting for a decision, or executing when its write found the
        status moved): the caller saw the same spec at a newer resourceVersion. True for the
        one caller that moved it."""
        cursor = self._db.execute(
            "UPDATE actions SET precondition=? WHERE id=? AND state=? AND precondition=?",
            (now_seen, entry_id, state, seen))
        return cursor.rowcount == 1

    def get(self, entry_id: int | None) -> JournalEntry | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM actions WHERE id=?",
                               (entry_id,)).fetchone()
        return _entry(row) if row else None

    def find(self, key: IncidentKey, action: str) -> JournalEntry | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM actions WHERE namespace=? AND deployment=? AND revision=?"
            " AND deployment_uid=? AND action=?", (*key, action)).fetchone()
        return _entry(row) if row else None

    def unfinished(self) -> list[JournalEntry]:
        """Actions approved or under way: what a restart must carry on with."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM actions WHERE state IN (?, ?) ORDER BY id",
            (APPROVED, EXECUTING)).fetchall()
        return [_entry(row) for row in rows]

    def recent(self, *, since: datetime) -> list[JournalEntry]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM actions WHERE updated_at >= ? ORDER BY id",
            (db_time(since),)).fetchall()
        return [_entry(row) for row in rows]

    # The audit trail ---------------------------------------------------------------------

    def audit(self, *, at: datetime, who: str, action: str, target: str, decision: str,
              reason: str, dry_run: bool, result: str | None = None,
              action_id: int | None = None) -> AuditRow:
        (audit_id,) = self._db.execute(
            "INSERT INTO audit (at, who, action, target, decision, reason, dry_run, result,"
            " action_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (db_time(at), who, action, target, decision, reason, int(dry_run), result,
             action_id)).fetchone()
        row = AuditRow(int(audit_id), at, who, action, target, decision, reason,
                       dry_run, result, action_id)
        if self._on_audit is not None:
            self._on_audit(row)
        return row

    def audit_rows(self, *, limit: int = 100, before_id: int | None = None) -> list[AuditRow]:
        """Newest first; ``before_id`` pages further back."""
        rows = self._db.execute(
            "SELECT id, at, who, action, target, decision, reason, dry_run, result, action_id"
            " FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id if before_id is not None else 2**62, limit)).fetchall()
        return [AuditRow(id_, from_db_time(at) or datetime.min, who, action, target, decision, reason,
                         bool(dry_run), result, action_id)
                for id_, at, who, action, target, decision, reason, dry_run, result, action_id
                in rows]

    def audit_summary(self) -> dict[str, int]:
        """How many audit rows of each decision."""
        return {decision: int(count) for decision, count in self._db.execute(
            "SELECT decision, COUNT(*) FROM audit GROUP BY decision ORDER BY decision")}


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    (id_, ns, dep, rev, uid, action, params, precondition, state, created_at, updated_at,
     decided_by, result) = row
    return JournalEntry(id=id_, key=(ns, dep, int(rev), uid), action=action,
                        params=json.loads(params), precondition=precondition, state=state,
                        created_at=from_db_time(created_at) or datetime.min,
                        updated_at=from_db_time(updated_at) or datetime.min, decided_by=decided_by,
                        result=result)
