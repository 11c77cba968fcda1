"""The gRPC ``ChangeFeed.WatchChanges`` server stream (``changes.proto``), on CHANGE_GRPC_PORT.

The same view of the timeline as ``GET /api/changes/stream`` (``feed.follow``): with
``after_id`` set, the stored changes after it, oldest first, then each change as the loop
records it, no change twice, until the client cancels; the request's ``namespace``, ``kind``
(any case) and ``name`` narrow it. An unknown kind or a negative ``after_id`` is
INVALID_ARGUMENT. The server reads the store and the live feed; it never calls a source.

Only this module imports grpc (the ``grpc`` extra): without the extra, importing it raises
``GrpcExtraMissing`` saying what to install, and the rest of the detector works as before.
The port is plaintext, as the HTTP port is: TLS and authentication belong to the mesh or the
proxy in front of it, and the Service should expose it only to those who may read the timeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog

from . import GRPC_EXTRA_HINT, GrpcExtraMissing

try:
    import grpc
    from grpc import aio

    from . import changes_pb2, changes_pb2_grpc
except ImportError as missing:  # the base install: say what to do, not which module is absent
    raise GrpcExtraMissing(GRPC_EXTRA_HINT) from missing

from ..store.changes import ChangeLog
from ..run.live import LiveFeed
from .follow import ChangeFilter, change_kind, follow

log = structlog.get_logger("incident_detector")

# How long calls in flight get when the server stops: none, since a WatchChanges stream never
# ends by itself; its client resumes with after_id from another replica or after the restart.
STOP_GRACE_SECONDS = 0.0


def change_message(record: dict[str, Any]) -> changes_pb2.ChangeEvent:
    """The ``ChangeEvent`` of a change as ``change_dict`` wrote it; absent values stay unset."""
    event = changes_pb2.ChangeEvent(
        id=int(record["id"]), namespace=record["namespace"], kind=record["kind"],
        name=record["name"], action=record["action"], at=record["at"],
        observed_at=record.get("observed_at") or "", uid=record.get("uid") or "",
        resource_version=record.get("resource_version") or "",
        summary=record.get("summary") or "")
    for optional in ("manager", "operation", "revision", "previous_revision"):
        if record.get(optional) is not None:
            setattr(event, optional, record[optional])
    for field in record.get("fields") or ():
        change = event.fields.add(path=field["path"], hidden=bool(field.get("hidden")))
        for side in ("before", "after"):
            if field.get(side) is not None:
                setattr(change, side, str(field[side]))
    return event


class ChangeFeedService(changes_pb2_grpc.ChangeFeedServicer):
    def __init__(self, *, changes: ChangeLog, live: LiveFeed) -> None:
        self.changes = changes
        self.live = live

    async def WatchChanges(self, request: changes_pb2.WatchChangesRequest,  # noqa: N802
                           context: aio.ServicerContext) -> AsyncIterator[changes_pb2.ChangeEvent]:
        try:
            kind = change_kind(request.kind) if request.kind.strip() else None
        except ValueError as bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(bad))
        after = request.after_id if request.HasField("after_id") else None
        if after is not None and after < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "after_id is a change id (an integer from 0)")
        wanted = ChangeFilter(namespace=request.namespace.strip() or None, kind=kind,
                              name=request.name.strip() or None)
        following = follow(changes=self.changes, live=self.live, wanted=wanted, after=after)
        # Closed when the client cancels (the call's task is cancelled): the subscription ends.
        async with contextlib.aclosing(following):
            async for record in following:
                if record is not None:
                    yield change_message(record)


async def serve_changes(*, changes: ChangeLog, live: LiveFeed, port: int,
                        host: str) -> aio.Server:
    """Start the ChangeFeed server on ``host:port`` (started; stop it with ``await
    server.stop(STOP_GRACE_SECONDS)``). A port that cannot be bound raises RuntimeError."""
    # Without SO_REUSEPORT (grpc's default is on): a second process on the same port is an
    # error here, not a silent split of the clients between the two.
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    changes_pb2_grpc.add_ChangeFeedServicer_to_server(
        ChangeFeedService(changes=changes, live=live), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises on a port in use; older ones returned 0
        raise RuntimeError(f"gRPC change feed: cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise RuntimeError(f"gRPC change feed: cannot listen on {address}")
    await server.start()
    log.info("grpc.listening", host=host, port=bound, service="incident_detector.v1.ChangeFeed")
    return server
