"""What the loop publishes for the dashboard: a live feed of events and each rollout's error
rate, tick after tick.

The web app never calls a source; it reads what the loop recorded. ``LiveFeed`` is an in-process
publish/subscribe of small JSON-able events (``incident``, ``verdict``, ``action``, ``tick``):
each subscriber (an open page's Server-Sent Events stream) has a bounded queue, and one that
falls behind loses its oldest events rather than slowing the loop. ``RolloutSeries`` keeps, per
rollout in its window, the error rate each tick saw, for the chart of the overview.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Events kept for a page that connects (or reconnects with Last-Event-ID) a little late.
RECENT_EVENTS = 100
# Events queued for one subscriber before its oldest are dropped.
SUBSCRIBER_QUEUE = 200
# Points kept per rollout: a rollout window of 10 minutes at a 20 s interval is 30.
SERIES_POINTS = 360


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: int
    kind: str
    data: dict[str, Any]


class LiveFeed:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._recent: deque[FeedEvent] = deque(maxlen=RECENT_EVENTS)
        self._subscribers: set[asyncio.Queue[FeedEvent]] = set()

    def publish(self, kind: str, data: dict[str, Any]) -> FeedEvent:
        event = FeedEvent(next(self._ids), kind, data)
        self._recent.append(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # a slow page loses its oldest event, never the loop's time
            queue.put_nowait(event)
        return event

    def since(self, last_id: int) -> list[FeedEvent]:
        """The recent events after ``last_id`` (a reconnecting page's Last-Event-ID)."""
        return [event for event in self._recent if event.id > last_id]

    def subscribe(self) -> asyncio.Queue[FeedEvent]:
        queue: asyncio.Queue[FeedEvent] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FeedEvent]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    at: datetime
    # Error lines of the new revision per minute over the error window ending at ``at``;
    # None when Loki did not answer at that tick.
    per_minute: float | None


class RolloutSeries:
    """Error rate per tick for each rollout in its window, keyed like the correlator's rollouts:
    (namespace, ReplicaSet uid or name, revision)."""

    def __init__(self, points: int = SERIES_POINTS) -> None:
        self._points = points
        self._series: dict[tuple[str, str, int], deque[SeriesPoint]] = {}

    def add(self, key: tuple[str, str, int], at: datetime, per_minute: float | None) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = deque(maxlen=self._points)
        if series and series[-1].at == at:
            series.pop()
        series.append(SeriesPoint(at, per_minute))

    def keep(self, keys: Iterable[tuple[str, str, int]]) -> None:
        """Forget the rollouts that left their window."""
        wanted = set(keys)
        for key in [k for k in self._series if k not in wanted]:
            del self._series[key]

    def get(self, key: tuple[str, str, int]) -> tuple[SeriesPoint, ...]:
        return tuple(self._series.get(key, ()))
