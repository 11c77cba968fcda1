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
change sent twice (``feed.follow``: a reader too slow for its bounded queue is caught up from
the store). An idle stream gets a comment line every ``heartbeat_seconds``, and the
subscription ends when the client goes away.

Authentication: like every ``/api/*`` read (``web.api``, ``web.dashboard``), reading needs no
login; the writes of the dashboard are what ``web.auth`` guards. Where the timeline must not be
readable by everyone who reaches the port, the authenticating proxy in front of the dashboard
covers these paths as it covers ``/api/incidents``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..feed.follow import FEED_KIND, ChangeFilter, change_kind, follow
from ..store.changes import ChangeLog, change_dict
from ..run.live import LiveFeed
from .api import BadParameter, _bad, _limit, _since, _text

CHANGES_PATH = "/api/changes"
STREAM_PATH = "/api/changes/stream"
# A comment line on an idle stream, so that proxies and the client keep it open (as /events).
HEARTBEAT_SECONDS = 15.0
# What a browser's EventSource waits before reconnecting, in milliseconds.
RETRY_MILLISECONDS = 3000
KEEP_ALIVE = b": keep-alive\n\n"


def change_filter(request: Request) -> ChangeFilter:
    """The filters of a list or a stream; ``BadParameter`` naming the one that is wrong."""
    namespace, name = _text(request, "namespace"), _text(request, "name")
    return ChangeFilter(namespace=namespace.strip() if namespace else None, kind=_kind(request),
                        name=name.strip() if name else None, since=_since(request))


def _kind(request: Request) -> str | None:
    value = _text(request, "kind")
    if value is None:
        return None
    try:
        return change_kind(value)
    except ValueError as bad:
        raise BadParameter(str(bad)) from None


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

        async def stream() -> AsyncIterator[bytes]:
            following = follow(changes=changes, live=live, wanted=wanted, after=resume,
                               idle_seconds=heartbeat_seconds)
            async with contextlib.aclosing(following):
                yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
                async for record in following:
                    yield _sse(record) if record is not None else KEEP_ALIVE

        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return [
        Route(CHANGES_PATH, list_changes, methods=["GET"]),
        Route(STREAM_PATH, stream_changes, methods=["GET"]),
    ]

