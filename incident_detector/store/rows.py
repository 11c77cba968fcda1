"""What the queries of every table share: how a time is written, an incident's key, a LIMIT
without a limit, one write transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone

from .db import Database

# (namespace, deployment, revision, deployment uid). The uid is "" for rows written before
# uids were recorded, until ``Store.adopt_legacy`` gives them one.
IncidentKey = tuple[str, str, int, str]
# The rows of one incident, in the tables keyed by it (incidents, outbox): its key's parameters.
KEY_IS = "namespace=? AND deployment=? AND revision=? AND deployment_uid=?"
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
