"""What the service map learnt from error lines, kept in the store.

The links a workload's configuration declares (environment, ConfigMaps, Ingresses, Services,
NetworkPolicies) are read again from the watches after a restart; the links learnt from error
lines are not: they would be relearnt only when the same lines came again. So each observed item
of evidence (a caller, a callee, what named it, when it was last seen) is a row here, written as
it is seen and read back when the map is first built; rows older than the map keeps observed
evidence (a day) are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .db import Database
from .rows import db_time, from_db_time

# (caller, callee, kind of evidence, its detail)
ObservedItem = tuple[str, str, str, str]


class ObservedLinks:
    """``ObservedLinks(store.connection)``: the ``service_links`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, items: Iterable[ObservedItem], *, seen_at: datetime) -> None:
        rows = [(*item, db_time(seen_at)) for item in items]
        if not rows:
            return
        with self._db.transaction():
            self._db.executemany(
                "INSERT INTO service_links (source, target, kind, detail, seen_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, target, kind, detail)"
                " DO UPDATE SET seen_at=excluded.seen_at WHERE service_links.seen_at <"
                " excluded.seen_at", rows)

    def since(self, moment: datetime) -> list[tuple[ObservedItem, datetime]]:
        """Every item seen at or after ``moment``, oldest first."""
        rows = self._db.execute(
            "SELECT source, target, kind, detail, seen_at FROM service_links WHERE seen_at >= ?"
            " ORDER BY seen_at, source, target", (db_time(moment),)).fetchall()
        return [((source, target, kind, detail), from_db_time(seen_at) or moment)
                for source, target, kind, detail, seen_at in rows]

    def forget_before(self, moment: datetime) -> int:
        return self._db.execute("DELETE FROM service_links WHERE seen_at < ?",
                                (db_time(moment),)).rowcount
