"""The error lines of each namespace's last minutes, read from Loki by ONE log query per tick.

Every reader of error lines (the error triage, an incident's signatures, the change timeline's
and the alert desk's samples) used to ask Loki on its own. Here one incremental range query per
namespace and tick (``refresh``: ``[end of the previous read, now)``, the newest ``limit`` lines)
feeds a bounded buffer, and the readers are served from it:

- ``sample_errors`` answers as ``LokiClient.sample_errors`` does (the triage, the change
  timeline and the alert desk call it); from the buffer when it holds the whole range asked,
  from Loki otherwise (a range that reaches back before the first read, e.g. after a restart);
- ``signature_lines`` gives an incident the lines of its workload since its rollout began, and
  those before it that the buffer holds, from the buffer alone, with the reason they may not be
  all the lines counted (``model.SIGNATURE_GAPS``).

Which legs of "error line" the read asks for (Loki 3: the lines at an error level, and the lines
without a detected level that match ERROR_PATTERN) is told by the tick's metric query, which
counts the read's range by ``detected_level`` (``read_window``): a leg without lines is not asked,
and a read with none asks nothing.

Bounded: lines older than ``retention`` are dropped, and at most ``max_lines`` per namespace are
kept (the oldest go first). A read that returns ``limit`` lines may have left older ones of its
range out: that span is remembered as a gap while it is retained; signatures whose range reaches
a gap, or lines dropped for ``max_lines``, say so.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..model import LogLine
from ..sources.loki import CountWindow

# A read never reaches further back than this (after a long Loki outage, say).
MAX_READ_SPAN = timedelta(hours=1)
DEFAULT_MAX_LINES = 10_000
READ_WINDOW = "read"
# The finest step of a LogLine's time.
_TICK = timedelta(microseconds=1)

SourceCall = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class LineSource(Protocol):
    async def sample_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                            start: datetime, end: datetime, limit: int = 200,
                            legs: Collection[str] | None = None) -> tuple[LogLine, ...]: ...


@dataclass
class _Namespace:
    # Lines sorted by time, oldest first.
    lines: list[LogLine] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    covered_from: datetime | None = None
    read_until: datetime | None = None
    # Spans a full read may have left lines out of: (from, to).
    gaps: list[tuple[datetime, datetime]] = field(default_factory=list)
    # The instant of the last read that failed (None after one that succeeded).
    failed_at: datetime | None = None
    # The workloads the reads ask for (None: every workload of the namespace).
    workloads: frozenset[str] | None = None
    # Lines up to this instant were dropped to keep within max_lines (not for their age).
    dropped_until: datetime | None = None


class ErrorLines:
    def __init__(self, *, loki: LineSource, limit: int, retention: timedelta,
                 first_window: timedelta, max_lines: int = DEFAULT_MAX_LINES) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._loki = loki
        self._limit = limit
        self._retention = retention
        self._first_window = first_window
        self._max_lines = max_lines
        self._namespaces: dict[str, _Namespace] = {}

    # The read ----------------------------------------------------------------------------

    def read_start(self, namespace: str, now: datetime) -> datetime:
        state = self._namespaces.get(namespace)
        if state is None or state.read_until is None:
            return now - self._first_window
        return max(state.read_until, now - MAX_READ_SPAN)

    def read_window(self, namespace: str, *, workloads: Sequence[str] | None,
                    now: datetime) -> CountWindow | None:
        """The window of the tick's metric query that tells which legs the read needs: the
        read's range (rounded up to whole seconds), counted by detected_level."""
        span = (now - self.read_start(namespace, now)).total_seconds()
        if span <= 0:
            return None
        return CountWindow(READ_WINDOW, None if workloads is None else tuple(workloads),
                           max(1, math.ceil(span)), by="level")

    async def refresh(self, namespace: str, *, workloads: Sequence[str] | None, now: datetime,
                      legs: Collection[str] | None, call: SourceCall) -> bool:
        """Read ``[end of the previous read, now)``: the legs in ``legs`` (None: every leg;
        empty: none has lines, nothing is asked). False when Loki failed: the next read covers
        the missed time as well."""
        state = self._namespaces.setdefault(namespace, _Namespace())
        start = self.read_start(namespace, now)
        if start >= now:
            return True
        if legs is not None and not legs:
            lines: tuple[LogLine, ...] | None = ()
        else:
            lines = await call(lambda: self._loki.sample_errors(
                namespace=namespace, workloads=workloads, start=start, end=now,
                limit=self._limit, legs=legs))
        if lines is None:
            state.failed_at = now
            return False
        state.failed_at = None
        asked = None if workloads is None else frozenset(workloads)
        if asked != state.workloads:
            # Other workloads than before: what is held covers them from this read on only.
            state.workloads, state.covered_from = asked, start
        if len(lines) >= self._limit:
            # Lines of the oldest instant returned may have been left out as well: two lines
            # can share a timestamp.
            oldest = min(line.at for line in lines)
            state.gaps.append((start, oldest + _TICK))
        if state.covered_from is None or (state.read_until is not None
                                          and start > state.read_until):
            state.covered_from = start
        for line in sorted(lines, key=lambda line: line.at):
            index = bisect.bisect_right(state.times, line.at)
            state.times.insert(index, line.at)
            state.lines.insert(index, line)
        state.read_until = now
        self._prune(state, now)
        return True

    def _prune(self, state: _Namespace, now: datetime) -> None:
        horizon = now - self._retention
        old = bisect.bisect_left(state.times, horizon)
        drop = max(old, len(state.lines) - self._max_lines)
        if drop > old:
            state.dropped_until = state.times[drop - 1] + _TICK
        if drop > 0:
            # What is dropped is no longer held: the buffer covers from just after the newest
            # line dropped (a line kept may share its timestamp: that instant is not covered).
            state.covered_from = max(state.covered_from or horizon, state.times[drop - 1] + _TICK)
            del state.lines[:drop]
            del state.times[:drop]
        if state.covered_from is not None and state.covered_from < horizon:
            state.covered_from = horizon
        state.gaps = [(a, b) for a, b in state.gaps if b > horizon]

    # The readers -------------------------------------------------------------------------

    def holds(self, namespace: str, workloads: Collection[str] | None, *,
              until: datetime | None = None) -> bool:
        """Whether the reads ask for every line of ``workloads`` (None: of every workload), and
        have read up to ``until`` (a look between two ticks' reads comes after the last one)."""
        state = self._namespaces.get(namespace)
        if state is None or state.read_until is None:
            return False
        if until is not None and state.read_until < until:
            return False
        if state.workloads is None:
            return True
        return workloads is not None and state.workloads.issuperset(workloads)

    def covers(self, namespace: str, start: datetime, end: datetime,
               workloads: Collection[str] | None = None) -> bool:
        """Whether the buffer holds every error line of ``workloads`` in ``[start, end)``
        (those a read left out apart: see ``signature_lines``)."""
        state = self._namespaces.get(namespace)
        return state is not None and state.covered_from is not None \
            and state.read_until is not None and state.failed_at is None \
            and state.covered_from <= start and end <= state.read_until \
            and self.holds(namespace, workloads)

    def _select(self, state: _Namespace, *, workloads: Collection[str] | None,
                start: datetime, end: datetime) -> list[LogLine]:
        lo = bisect.bisect_left(state.times, start)
        hi = bisect.bisect_left(state.times, end)
        wanted = None if workloads is None else set(workloads)
        return [line for line in state.lines[lo:hi]
                if wanted is None or line.workload in wanted]

    async def sample_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                            start: datetime, end: datetime, limit: int = 200,
                            legs: Collection[str] | None = None) -> tuple[LogLine, ...]:
        """As ``LokiClient.sample_errors``: up to ``limit`` error lines of ``[start, end)``,
        newest first; from the buffer when it holds that whole range, else from Loki."""
        state = self._namespaces.get(namespace)
        if state is None or legs is not None or \
                not self.covers(namespace, start, end, workloads):
            return await self._loki.sample_errors(namespace=namespace, workloads=workloads,
                                                  start=start, end=end, limit=limit, legs=legs)
        found = self._select(state, workloads=workloads, start=start, end=end)
        found.reverse()
        return tuple(found[:limit])

    def signature_lines(self, namespace: str, *, workload: str, since: datetime,
                        until: datetime, limit: int
                        ) -> tuple[list[LogLine], list[LogLine], str | None]:
        """The workload's lines of ``[since, until)`` (newest first, at most ``limit``), those
        the buffer holds from before ``since``, and why the first may not be every line of
        the range (None: they are)."""
        state = self._namespaces.get(namespace)
        if state is None or state.read_until is None:
            return [], [], "loki_failed"
        after = self._select(state, workloads=(workload,), start=since, end=until)
        after.reverse()
        before = self._select(state, workloads=(workload,), start=state.times[0]
                              if state.times else since, end=since)
        gap = None
        if state.failed_at is not None and state.failed_at >= until:
            gap = "loki_failed"
        elif len(after) > limit or any(a < until and b > since for a, b in state.gaps) or \
                (state.dropped_until is not None and state.dropped_until > since):
            gap = "limit_reached"
        return after[:limit], before, gap
