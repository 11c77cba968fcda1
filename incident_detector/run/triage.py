"""Error triage's shell: one sampled read per namespace and tick, groups kept in the store.

``judge.triage`` decides; this module reads, remembers and answers. Each ``read`` of a namespace
calls ``sample_errors`` once (the newest ``sample_lines`` error lines; the detector hands it
``run.error_lines.ErrorLines``, which serves it from the tick's one log query) for the
time since the previous read of that namespace, so no line is counted twice, folds the answer
into the groups, keeps at most ``max_groups`` of them (in memory and in the ``error_groups``
table alike, and none last seen more than ``RETENTION`` ago), and writes what changed in one
transaction.

Where the first read of a namespace starts: the last ``first_window`` (the error window); after
a restart, just after the newest line of the namespace already counted (at most ``MAX_READ_SPAN``
back), so that nothing is counted twice and the lines written while the detector was down are
read as well.

When the detector began watching a namespace (for ``judge.triage.is_new``): its first read in
this process, or the first sighting of the namespace's oldest stored group when that is earlier,
so that a restart does not make the detector blind to new signatures for another hour.

``read`` returns the groups to notify; it does not mark them. The caller records the
notification durably, then calls ``mark_notified``: a crash in between returns them again
rather than losing them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from ..judge.triage import (
    DEFAULT_NEW_FOR,
    ErrorGroup,
    GroupKey,
    Prioritize,
    bounded,
    fold,
    is_new,
    rate_per_minute,
    to_notify,
)
from ..model import LogLine, Priority
from ..store.db import Database
from ..store.rows import db_time, from_db_time, transaction

log = structlog.get_logger(__name__)

# Groups not seen for this long leave the memory and the store.
RETENTION = timedelta(days=7)
# A read never reaches further back than this (after a long Loki outage, say): the newest lines
# are what a sample holds anyway, and a longer range only costs Loki more.
MAX_READ_SPAN = timedelta(hours=1)
DEFAULT_FIRST_WINDOW = timedelta(seconds=120)

# The daemon's wrapper around a source call: the call's result, or None when it failed (the
# failure is then accounted as Loki's, like the tick's other queries).
SourceCall = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

# Lines per workload kept between two drains (see drain_lines).
FRESH_LINES_PER_WORKLOAD = 50

_COLUMNS = ("namespace, fingerprint, workloads, example, count, first_seen, last_seen, priority,"
            " rule, notified_at, sampled")


class ErrorSampler(Protocol):
    async def sample_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                            start: datetime, end: datetime, limit: int) -> Sequence[LogLine]: ...


class Triage:
    def __init__(
        self,
        *,
        connection: Database,
        loki: ErrorSampler,
        sample_lines: int,
        max_groups: int,
        prioritize: Prioritize,
        notify_priorities: Collection[Priority | str],
        new_for: timedelta = DEFAULT_NEW_FOR,
        first_window: timedelta = DEFAULT_FIRST_WINDOW,
    ) -> None:
        if sample_lines < 0:
            raise ValueError("sample_lines must be 0 (off) or more")
        if max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        self._db = connection
        self._loki = loki
        self._sample_lines = sample_lines
        self._max_groups = max_groups
        self._prioritize = prioritize
        self._notify_priorities = tuple(notify_priorities)
        self._new_for = new_for
        self._first_window = first_window
        # namespace -> the end of its previous successful read.
        self._read_until: dict[str, datetime] = {}
        # namespace -> when this process first read it.
        self._first_read: dict[str, datetime] = {}
        self._reading: set[str] = set()
        # namespace -> workload -> error lines of the last reads not yet taken by
        # ``drain_lines`` (the change timeline learns dependencies from the hosts they name).
        self._fresh: dict[str, dict[str, list[str]]] = {}
        self._groups = self._load()
        # From the store, for the first read after a restart and for "watching since".
        self._stored_newest: dict[str, datetime] = {}
        self._stored_oldest: dict[str, datetime] = {}
        for group in self._groups.values():
            ns = group.namespace
            if ns not in self._stored_newest or group.last_seen > self._stored_newest[ns]:
                self._stored_newest[ns] = group.last_seen
            if ns not in self._stored_oldest or group.first_seen < self._stored_oldest[ns]:
                self._stored_oldest[ns] = group.first_seen

    @property
    def enabled(self) -> bool:
        return self._sample_lines > 0

    # Reading -------------------------------------------------------------------------------

    async def read(
        self, namespace: str, *, workloads: Sequence[str] | None, now: datetime,
        call: SourceCall,
    ) -> list[ErrorGroup]:
        """Sample the namespace's error lines since its previous read (one ``sample_errors`` call
        at most), fold and store them; the namespace's groups to notify now.

        When ``call`` answers None (Loki failed) nothing changes, and the next read covers the
        missed time as well. ``workloads`` empty: nothing to read.
        """
        if not self.enabled or namespace in self._reading:
            return []
        if workloads is not None and not list(workloads):
            return []
        self._first_read.setdefault(namespace, now)
        start, truncated = self._start_of(namespace, now)
        if start >= now:
            return []  # the clock went back, or a second read at the same instant
        self._reading.add(namespace)
        try:
            lines = await call(lambda: self._loki.sample_errors(
                namespace=namespace, workloads=workloads, start=start, end=now,
                limit=self._sample_lines))
        finally:
            self._reading.discard(namespace)
        if lines is None:
            return []
        fresh = self._fresh.setdefault(namespace, {})
        for line in lines:
            if line.workload:
                kept = fresh.setdefault(line.workload, [])
                if len(kept) < FRESH_LINES_PER_WORKLOAD:
                    kept.append(line.line)
        # No await from here on: the fold, the bound and the write see one state of the groups.
        before = self._groups
        folded = fold(before, lines, namespace=namespace, now=now,
                      sample_full=truncated or len(lines) >= self._sample_lines,
                      prioritize=self._prioritize)
        after = bounded(folded, max_groups=self._max_groups, seen_since=now - RETENTION)
        changed = [group for key, group in after.items() if before.get(key) != group]
        evicted = [key for key in before if key not in after]
        self._write(changed, evicted, now=now)
        self._groups = after
        self._read_until[namespace] = now
        if truncated or len(lines) >= self._sample_lines:
            log.debug("triage.sample_full", namespace=namespace, lines=len(lines),
                      truncated_span=truncated)
        return to_notify((g for g in after.values() if g.namespace == namespace),
                         priorities=self._notify_priorities, now=now,
                         watching_since=self.watching_since(namespace, now=now),
                         new_for=self._new_for)

    def drain_lines(self, namespace: str) -> dict[str, list[str]]:
        """The error lines read since the last drain, by workload (at most
        FRESH_LINES_PER_WORKLOAD each), and forget them."""
        return self._fresh.pop(namespace, {})

    def _start_of(self, namespace: str, now: datetime) -> tuple[datetime, bool]:
        """Where the read starts, and whether MAX_READ_SPAN cut it short."""
        previous = self._read_until.get(namespace)
        if previous is None:
            newest = self._stored_newest.get(namespace)
            if newest is None:
                return now - self._first_window, False
            # After a restart: on from the newest line counted (Loki's start is inclusive: one
            # microsecond on, that line is out), so the lines written while the detector was
            # down are read too, as far back as a read ever goes.
            return max(newest + timedelta(microseconds=1), now - MAX_READ_SPAN), False
        earliest = now - MAX_READ_SPAN
        return (earliest, True) if previous < earliest else (previous, False)

    def watching_since(self, namespace: str, *, now: datetime) -> datetime:
        """When the detector began watching the namespace (see the module docstring)."""
        known = [t for t in (self._first_read.get(namespace),
                             self._stored_oldest.get(namespace)) if t is not None]
        return min(known) if known else now

    # Notifications and rules ----------------------------------------------------------------

    def mark_notified(self, keys: Iterable[GroupKey], *, now: datetime) -> int:
        """Record that these groups were notified (the first time only); how many were marked."""
        marked = [replace(group, notified_at=now) for key in dict.fromkeys(keys)
                  if (group := self._groups.get(key)) is not None and group.notified_at is None]
        if marked:
            self._write(marked, (), now=None)
            for group in marked:
                self._groups[group.key] = group
        return len(marked)

    def reprioritize(self, prioritize: Prioritize) -> int:
        """Apply new rules to every group (notified_at is kept); how many groups changed."""
        self._prioritize = prioritize
        changed = []
        for group in self._groups.values():
            priority, rule = prioritize(group.example)
            if (Priority(priority), rule) != (group.priority, group.rule):
                changed.append(replace(group, priority=Priority(priority), rule=rule))
        if changed:
            self._write(changed, (), now=None)
            for group in changed:
                self._groups[group.key] = group
        return len(changed)

    # The API's view ---------------------------------------------------------------------------

    def groups(
        self, *, namespace: str | None = None, deployment: str | None = None,
        priority: Priority | str | None = None, new_only: bool = False, limit: int = 100,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Groups as JSON-ready dicts, most recently seen first.

        ``deployment`` matches a group one of whose lines came from a stream with that workload
        label value (the Deployment's name, or its ``app`` label).
        """
        wanted = Priority(str(getattr(priority, "value", priority)).upper()) \
            if priority is not None else None
        out: list[dict[str, Any]] = []
        for group in sorted(self._groups.values(),
                            key=lambda g: (g.last_seen, g.namespace, g.fingerprint),
                            reverse=True):
            if len(out) >= limit:
                break
            if namespace is not None and group.namespace != namespace:
                continue
            if deployment is not None and deployment not in group.workloads:
                continue
            if wanted is not None and group.priority != wanted:
                continue
            new = is_new(group, now=now, new_for=self._new_for,
                         watching_since=self.watching_since(group.namespace, now=now))
            if new_only and not new:
                continue
            out.append({
                "namespace": group.namespace,
                "fingerprint": group.fingerprint,
                "example": group.example,
                "workloads": list(group.workloads),
                "count": group.count,
                "rate_per_minute": round(
                    rate_per_minute(group, now=now, window=self._first_window), 3),
                "first_seen": db_time(group.first_seen),
                "last_seen": db_time(group.last_seen),
                "new": new,
                "priority": group.priority.value,
                "rule": group.rule,
                "sampled": group.sampled,
            })
        return out

    def __len__(self) -> int:
        return len(self._groups)

    # The store ------------------------------------------------------------------------------

    def _load(self) -> dict[GroupKey, ErrorGroup]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM error_groups"
            " ORDER BY last_seen DESC, namespace DESC, fingerprint DESC LIMIT ?",
            (self._max_groups,)).fetchall()
        groups: dict[GroupKey, ErrorGroup] = {}
        for (namespace, fp, workloads, example, count, first_seen, last_seen, priority, rule,
             notified_at, sampled) in rows:
            try:
                level = Priority(priority)
            except ValueError:  # written by other rules, or by hand: ask the rules again
                level, rule = self._prioritize(example)
            groups[(namespace, fp)] = ErrorGroup(
                namespace=namespace, fingerprint=fp, example=example,
                workloads=tuple(sorted(json.loads(workloads))), count=int(count),
                first_seen=from_db_time(first_seen), last_seen=from_db_time(last_seen),
                priority=Priority(level), rule=rule, notified_at=from_db_time(notified_at),
                sampled=bool(sampled))
        if groups:
            log.info("triage.loaded", groups=len(groups))
        return groups  # type: ignore[return-value]

    def _write(self, changed: Sequence[ErrorGroup], evicted: Iterable[GroupKey], *,
               now: datetime | None) -> None:
        """Upsert ``changed``, delete ``evicted``, and keep the table within its bounds: one
        transaction."""
        evicted = list(evicted)
        if not changed and not evicted:
            return
        with transaction(self._db):
            self._db.executemany(
                f"INSERT INTO error_groups ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (namespace, fingerprint) DO UPDATE SET workloads=excluded.workloads,"
                " example=excluded.example, count=excluded.count,"
                " first_seen=excluded.first_seen, last_seen=excluded.last_seen,"
                " priority=excluded.priority, rule=excluded.rule,"
                " notified_at=excluded.notified_at, sampled=excluded.sampled",
                [(g.namespace, g.fingerprint, json.dumps(list(g.workloads)), g.example, g.count,
                  db_time(g.first_seen), db_time(g.last_seen), g.priority.value, g.rule,
                  db_time(g.notified_at) if g.notified_at else None, int(g.sampled))
                 for g in changed])
            self._db.executemany(
                "DELETE FROM error_groups WHERE namespace=? AND fingerprint=?", evicted)
            if now is not None:
                # Also rows this process never loaded (another process's, a smaller
                # max_groups than before): the table holds what memory may hold, no more.
                self._db.execute("DELETE FROM error_groups WHERE last_seen < ?",
                                 (db_time(now - RETENTION),))
                self._db.execute(
                    "DELETE FROM error_groups WHERE (namespace, fingerprint) NOT IN (SELECT"
                    " namespace, fingerprint FROM error_groups"
                    " ORDER BY last_seen DESC, namespace DESC, fingerprint DESC LIMIT ?)",
                    (self._max_groups,))
