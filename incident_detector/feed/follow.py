"""One reader's view of the change timeline: what the store holds after a resume point, then
what the loop publishes on the ``LiveFeed`` (``live.publish("change", change_dict(change))``),
filtered, oldest first, no change twice. Both the Server-Sent Events stream (``web.changes``)
and the gRPC feed (``feed.grpc_server``) are this generator with a different wire format.

The subscription is made before the replay, so a change recorded meanwhile is queued, not
missed. The feed keeps a bounded queue per reader and drops the oldest events of a slow one; its
event ids are consecutive, so a jump shows the gap, and the store (which has every change) fills
it. Without a resume point the reader starts after the newest stored change: the loop records a
change and publishes it without yielding in between, so none recorded before the subscription
is still on its way to the feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..model import CHANGE_KINDS
from ..store.changes import MAX_QUERY_LIMIT, ChangeLog, change_dict
from ..run.live import LiveFeed

# The LiveFeed's kind of a recorded change.
FEED_KIND = "change"
_KINDS_BY_LOWER = {kind.lower(): kind for kind in CHANGE_KINDS}


def change_kind(value: str) -> str:
    """The kind named in any case (``configmap``: ``ConfigMap``); ValueError if it is not one
    of ``model.CHANGE_KINDS``."""
    kind = _KINDS_BY_LOWER.get(value.strip().lower())
    if kind is None:
        raise ValueError(f"kind is one of {', '.join(CHANGE_KINDS)}")
    return kind


@dataclass(frozen=True, slots=True)
class ChangeFilter:
    """What a reader asked for; None matches anything."""

    namespace: str | None = None
    kind: str | None = None
    name: str | None = None
    since: datetime | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a change as ``change_dict`` wrote it passes the filter (the live events)."""
        if self.namespace is not None and record.get("namespace") != self.namespace:
            return False
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        if self.name is not None and record.get("name") != self.name:
            return False
        if self.since is not None:
            try:
                at = datetime.fromisoformat(str(record.get("at")).replace("Z", "+00:00"))
            except ValueError:
                return False
            return at >= self.since
        return True

    def query_args(self) -> dict[str, Any]:
        """The filter as ``ChangeLog.query``'s keywords."""
        return {"namespace": self.namespace, "kind": self.kind, "name": self.name,
                "since": self.since}


def stored_after(changes: ChangeLog, wanted: ChangeFilter, change_id: int
                 ) -> Iterator[dict[str, Any]]:
    """Every stored change after ``change_id`` that passes the filter, oldest first, read a
    page at a time."""
    while True:
        page = changes.query(**wanted.query_args(), after_id=change_id, limit=MAX_QUERY_LIMIT)
        yield from (change_dict(c) for c in page)
        if len(page) < MAX_QUERY_LIMIT:
            return
        change_id = int(page[-1].id or change_id)


def newest_id(changes: ChangeLog) -> int:
    """The id of the newest stored change; 0 when there is none."""
    newest = changes.query(limit=1)
    return int(newest[0].id or 0) if newest else 0


async def follow(*, changes: ChangeLog, live: LiveFeed, wanted: ChangeFilter,
                 after: int | None, idle_seconds: float | None = None
                 ) -> AsyncIterator[dict[str, Any] | None]:
    """The changes after ``after`` (from the store; None: none of the past), then the live ones.

    With ``idle_seconds``, None is yielded whenever nothing came for that long (a stream's
    keep-alive). Use it in ``contextlib.aclosing`` so that the subscription ends with the reader.
    """
    # Subscribed first; nothing below awaits before the replay's starting point is read.
    queue = live.subscribe()
    try:
        published = live.since(0)
        feed_seen = published[-1].id if published else 0
        # The highest change id sent: nothing at or below it goes out again.
        sent = after if after is not None else newest_id(changes)
        if after is not None:
            for record in stored_after(changes, wanted, after):
                sent = record["id"]
                yield record
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=idle_seconds)
            except asyncio.TimeoutError:
                yield None
                continue
            dropped = event.id > feed_seen + 1
            feed_seen = event.id
            if dropped:
                for record in stored_after(changes, wanted, sent):
                    sent = record["id"]
                    yield record
            if event.kind != FEED_KIND:
                continue
            record = event.data
            change_id = record.get("id")
            if not isinstance(change_id, int) or change_id <= sent or not wanted.matches(record):
                continue
            sent = change_id
            yield record
    finally:
        live.unsubscribe(queue)
