"""The change timeline over HTTP: a filtered, paged list and a live Server-Sent Events stream.

    GET /api/changes?namespace=shop&kind=ConfigMap&name=orders-config&since=...&limit=100&before=812
    GET /api/changes/stream?namespace=shop&kind=configmap          (Last-Event-ID or ?after=812)

Both read the ``changes`` table (``run.change_log``) and what the loop publishes on the
``LiveFeed`` (``live.publish("change", change_dict(change))`` once a change is recorded); neither
calls a source. Each change has the one JSON shape of ``change_dict``.

The list is newest first; ``next`` is the ``before`` of the next page (null on the last one).
``kind`` is one of ``model.CHANGE_KINDS``, in any case; ``since`` an ISO 8601 time (changes made
at or after it); ``limit`` 1..1000 (default 100). A bad parameter is a 400 ``{"error": reason}``
naming it, as in ``web.api``.

The stream takes the same filters. Each event is ``id: <change id>``, ``event: change``,
``data: <change_dict>``. With ``Last-Event-ID`` (what a browser's EventSource sends when it
reconnects) or ``?after=<id>`` it first replays from the store what came after that id (oldest
first; ``after=0`` replays what the store still holds), then follows the live feed, with no
change sent twice. The subscription is made before the replay, so nothing recorded in between is
missed; a reader too slow for its bounded queue (the feed drops its oldest events) is caught up
from the store, since the feed's event ids show the gap. An idle stream gets a comment line every
``heartbeat_seconds``, and the subscription ends when the client goes away.

Authentication: like every ``/api/*`` read (``web.api``, ``web.dashboard``), reading needs no
login; the writes of the dashboard are what ``web.auth`` guards. Where the timeline must not be
readable by everyone who reaches the port, the authenticating proxy in front of the dashboard
covers these paths as it covers ``/api/incidents``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..model import CHANGE_KINDS
from ..run.change_log import MAX_QUERY_LIMIT, ChangeLog, change_dict
from ..run.live import FeedEvent, LiveFeed
from .api import BadParameter, _bad, _limit, _since, _text

CHANGES_PATH = "/api/changes"
STREAM_PATH = "/api/changes/stream"
# The LiveFeed's kind of a recorded change.
FEED_KIND = "change"
# A comment line on an idle stream, so that proxies and the client keep it open (as /events).
HEARTBEAT_SECONDS = 15.0
# What a browser's EventSource waits before reconnecting, in milliseconds.
RETRY_MILLISECONDS = 3000
_KINDS_BY_LOWER = {kind.lower(): kind for kind in CHANGE_KINDS}


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
        return {"namespace": self.namespace, "kind": self.kind, "name": self.name,
                "since": self.since}


def change_filter(request: Request) -> ChangeFilter:
    """The filters of a list or a stream; ``BadParameter`` naming the one that is wrong."""
    namespace, name = _text(request, "namespace"), _text(request, "name")
    return ChangeFilter(namespace=namespace.strip() if namespace else None, kind=_kind(request),
                        name=name.strip() if name else None, since=_since(request))


def _kind(request: Request) -> str | None:
    value = _text(request, "kind")
    if value is None:
        return None
    kind = _KINDS_BY_LOWER.get(value.strip().lower())
    if kind is None:
        raise BadParameter(f"kind is one of {', '.join(CHANGE_KINDS)}")
    return kind


def _change_id(request: Request, name: str) -> int | None:
    value = _text(request, name)
    if value is None:
        return None
    try:
        change_id = int(value.strip())
    except ValueError:
        raise BadParameter(f"{name} is a change id (an integer from 0)") from None
    if change_id < 0:
        raise BadParameter(f"{name} is a change id (an integer from 0)")
    return change_id


def _last_event_id(request: Request) -> int | None:
    """A reconnecting EventSource's Last-Event-ID; a value that is not an id is ignored (it
    cannot be one of ours), as on ``/events``."""
    value = request.headers.get("last-event-id")
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None


def _sse(record: dict[str, Any]) -> bytes:
    data = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"id: {record['id']}\nevent: {FEED_KIND}\ndata: {data}\n\n".encode()


def change_routes(*, changes: ChangeLog, live: LiveFeed,
                  heartbeat_seconds: float = HEARTBEAT_SECONDS) -> list[BaseRoute]:
    """The timeline's routes, for ``make_app(extra_routes=...)``."""

    async def list_changes(request: Request) -> Response:
        try:
            wanted = change_filter(request)
            limit = _limit(request)
            before = _change_id(request, "before")
        except BadParameter as bad:
            return _bad(str(bad))
        found = changes.query(**wanted.query_args(), before_id=before, limit=limit)
        following = None
        if len(found) == limit and found:
            # Only a page with something after it names one: the last page says null.
            last = found[-1].id
            if changes.query(**wanted.query_args(), before_id=last, limit=1):
                following = last
        return JSONResponse({"changes": [change_dict(c) for c in found], "count": len(found),
                             "next": following})

    async def stream_changes(request: Request) -> Response:
        try:
            wanted = change_filter(request)
            after = _change_id(request, "after")
        except BadParameter as bad:
            return _bad(str(bad))
        resume = _last_event_id(request)
        if resume is None:
            resume = after

        def stored_after(change_id: int) -> Iterator[dict[str, Any]]:
            """Every stored change after ``change_id`` that passes the filter, oldest first, read
            a page at a time."""
            while True:
                page = changes.query(**wanted.query_args(), after_id=change_id,
                                     limit=MAX_QUERY_LIMIT)
                yield from (change_dict(c) for c in page)
                if len(page) < MAX_QUERY_LIMIT:
                    return
                change_id = int(page[-1].id or change_id)

        async def stream() -> AsyncIterator[bytes]:
            # Subscribed before the replay: what is recorded meanwhile is queued, not missed.
            queue = live.subscribe()
            # The feed's newest event id at that moment: the next one this reader gets follows
            # it, and a jump says the feed dropped some from this reader's full queue.
            published = live.since(0)
            feed_seen = published[-1].id if published else 0
            # The highest change id sent: nothing at or below it goes out again. Read before the
            # first yield, so that no change is recorded between the subscription and this.
            sent = resume if resume is not None else _newest(changes)
            try:
                yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
                if resume is not None:
                    for record in stored_after(resume):
                        sent = record["id"]
                        yield _sse(record)
                while True:
                    try:
                        event: FeedEvent = await asyncio.wait_for(queue.get(),
                                                                  timeout=heartbeat_seconds)
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    dropped = event.id > feed_seen + 1
                    feed_seen = event.id
                    if dropped:
                        # The feed dropped events from this reader's full queue: the store has
                        # every change it missed.
                        for record in stored_after(sent):
                            sent = record["id"]
                            yield _sse(record)
                    if event.kind != FEED_KIND:
                        continue
                    record = event.data
                    change_id = record.get("id")
                    if not isinstance(change_id, int) or change_id <= sent:
                        continue  # already sent from the store
                    if not wanted.matches(record):
                        continue
                    sent = change_id
                    yield _sse(record)
            finally:
                live.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return [
        Route(CHANGES_PATH, list_changes, methods=["GET"]),
        Route(STREAM_PATH, stream_changes, methods=["GET"]),
    ]


def _newest(changes: ChangeLog) -> int:
    """The id of the newest stored change (0 when there is none): where a stream that does not
    resume starts. The loop records a change and publishes it without yielding in between, so
    none recorded before the subscription can still be on its way to the feed."""
    newest = changes.query(limit=1)
    return int(newest[0].id or 0) if newest else 0

