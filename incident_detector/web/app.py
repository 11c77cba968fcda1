"""/healthz, /readyz, /status and /metrics: read-only views of the detector's last tick.

The app never calls a source itself; it reads what the loop recorded, so a slow Loki cannot make
a probe slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..store.db import StoreUnavailable
from ..store.journal import Journal
from ..run.metrics import DetectorMetrics

AUDIT_PAGE_MAX = 500
STORE_RETRY_AFTER_SECONDS = 5


class StatusSource(Protocol):
    def alive(self) -> bool: ...
    def ready(self) -> bool: ...
    def unready_reason(self) -> str | None: ...
    def status(self) -> dict: ...
    metrics: DetectorMetrics
    journal: Journal


def make_app(detector: StatusSource, *, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The app; ``extra_routes`` are the Slack interactivity endpoint when it is on."""
    async def healthz(request: Request) -> PlainTextResponse:
        # Liveness: the loop is ticking. A failing dependency does not make the process dead.
        if detector.alive():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("stalled: no tick finished recently\n", status_code=503)

    async def readyz(request: Request) -> PlainTextResponse:
        # Readiness: the last tick could do its whole job (every source answered).
        reason = detector.unready_reason()
        if reason is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {reason}\n(see /status)\n", status_code=503)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(detector.status())

    async def metrics(request: Request) -> Response:
        # Prometheus text format (OpenMetrics if the scraper asks for it in Accept).
        body, content_type = detector.metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def audit(request: Request) -> JSONResponse:
        # The audit trail, newest first; ?limit=N (at most 500) and ?before=ID page back.
        try:
            limit = min(AUDIT_PAGE_MAX, max(1, int(request.query_params.get("limit", "100"))))
            before = request.query_params.get("before")
            before_id = int(before) if before is not None else None
        except ValueError:
            return JSONResponse({"error": "limit and before are integers"}, status_code=400)
        rows = detector.journal.audit_rows(limit=limit, before_id=before_id)
        return JSONResponse({"audit": [row.as_dict() for row in rows]})

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        # Any page or API call that needed the store while it is away: 503, with the reason
        # (never the password: StoreUnavailable's message is scrubbed) and when to try again.
        message = getattr(exc, "message", "the store is unavailable")
        headers = {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)}
        if request.url.path.startswith("/api/") or "json" in request.headers.get("accept", ""):
            return JSONResponse({"error": "store_unavailable", "detail": message},
                                status_code=503, headers=headers)
        return PlainTextResponse(f"The store is unavailable: {message}\n", status_code=503,
                                 headers=headers)

    return Starlette(exception_handlers={StoreUnavailable: store_unavailable}, routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/audit", audit, methods=["GET"]),
        *extra_routes,
    ])
