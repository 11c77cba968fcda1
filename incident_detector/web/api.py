"""The JSON API over what the loop recorded: incidents, rollouts, error groups, figures, rules
and settings. Every handler reads what the loop published or the store; none calls a source.

    GET /api/incidents?namespace=shop&kind=rollout&priority=P1&status=open&limit=50&before=r12
    GET /api/incidents/{id}          (r<n>: a rollout incident, n<n>: an alert or change
                                      incident, or an error group)
    GET /api/rollouts                (the last tick's rollouts with their error-rate series)
    GET /api/stats                   (today's figures)
    GET /api/rules                   (the rules in force, their source, last reload)
    GET /api/settings                (the effective settings, secrets as set/unset)
    GET /api/errors?namespace=shop&deployment=payments-api&priority=P1&new=true&limit=50

``/api/incidents`` pages by keyset: its answer's ``next`` is the ``before`` of the next page
(null on the last one); ``limit`` is 1..500 (default 50), ``since`` an ISO 8601 time, ``kind``
one of rollout, alert, change, error_group, ``status`` open or closed.

Every parameter is optional: ``namespace`` and ``deployment`` (a workload label value) narrow
the groups, ``priority`` is one of P1..P4, ``new`` is ``true`` or ``false`` (``true``: only the
new groups), ``limit`` is 1..1000 (default 100). The answer is ``{"errors": [...], "count": n}``,
most recently seen first, ``count`` being the number of groups in ``errors``; a bad parameter
is a 400 with ``{"error": reason}``. The handler reads the triage's memory, never Loki.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..model import Priority
from ..store import reads
from . import queries

ERRORS_PATH = "/api/errors"
INCIDENTS_PATH = "/api/incidents"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_BOOLEANS = {"true": True, "false": False}


class ErrorGroups(Protocol):
    def groups(self, *, namespace: str | None = None, deployment: str | None = None,
               priority: Priority | str | None = None, new_only: bool = False,
               limit: int = 100, now: datetime) -> list[dict[str, Any]]: ...


class BadParameter(ValueError):
    pass


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.strip():
        raise BadParameter(f"{name} is empty")
    return value


def _priority(request: Request) -> Priority | None:
    value = _text(request, "priority")
    if value is None:
        return None
    try:
        return Priority(value.strip().upper())
    except ValueError:
        raise BadParameter("priority is one of P1, P2, P3, P4") from None


def _new_only(request: Request) -> bool:
    value = _text(request, "new")
    if value is None:
        return False
    if value.strip().lower() not in _BOOLEANS:
        raise BadParameter("new is true or false")
    return _BOOLEANS[value.strip().lower()]


def _limit(request: Request) -> int:
    value = _text(request, "limit")
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value.strip())
    except ValueError:
        raise BadParameter(f"limit is an integer from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter(f"limit is an integer from 1 to {MAX_LIMIT}")
    return limit


def _choice(request: Request, name: str, allowed: tuple[str, ...], *,
            upper: bool = False) -> str | None:
    value = _text(request, name)
    if value is None:
        return None
    value = value.strip().upper() if upper else value.strip().lower()
    if value not in allowed:
        raise BadParameter(f"{name} is one of {', '.join(allowed)}")
    return value


def _since(request: Request) -> datetime | None:
    value = _text(request, "since")
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter("since is an ISO 8601 time, e.g. 2026-11-23T18:00:00Z") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def incident_filters(request: Request) -> tuple[reads.Filters, str | None, int]:
    """The filters, cursor and page size of an incidents list (the API and the pages)."""
    filters = reads.Filters(
        namespace=_text(request, "namespace"), deployment=_text(request, "deployment"),
        kind=_choice(request, "kind", reads.KINDS),
        priority=_choice(request, "priority", reads.PRIORITIES, upper=True),
        status=_choice(request, "status", reads.STATUSES), since=_since(request))
    before = _text(request, "before")
    limit_text = _text(request, "limit")
    limit = reads.DEFAULT_LIMIT
    if limit_text is not None:
        try:
            limit = int(limit_text.strip())
        except ValueError:
            raise BadParameter(f"limit is an integer from 1 to {reads.MAX_LIMIT}") from None
        if not 1 <= limit <= reads.MAX_LIMIT:
            raise BadParameter(f"limit is an integer from 1 to {reads.MAX_LIMIT}")
    return filters, before.strip() if before else None, limit


def _bad(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def api_routes(*, detector: Any,
               clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> list[Route]:
    """The API's routes, for ``make_app(extra_routes=...)``. ``detector`` is the running
    ``Detector`` (its store, triage, last tick, series, rules and settings are read)."""

    async def errors(request: Request) -> JSONResponse:
        try:
            namespace = _text(request, "namespace")
            deployment = _text(request, "deployment")
            priority = _priority(request)
            new_only = _new_only(request)
            limit = _limit(request)
        except BadParameter as bad:
            return _bad(str(bad))
        triage: ErrorGroups | None = getattr(detector, "triage", None)
        found = [] if triage is None else triage.groups(
            namespace=namespace, deployment=deployment, priority=priority, new_only=new_only,
            limit=limit, now=clock())
        return JSONResponse({"errors": found, "count": len(found)})

    async def incidents(request: Request) -> JSONResponse:
        try:
            filters, before, limit = incident_filters(request)
            return JSONResponse(queries.incidents(detector, filters=filters, before=before,
                                                  limit=limit))
        except (BadParameter, reads.BadQuery) as bad:
            return _bad(str(bad))

    async def incident(request: Request) -> JSONResponse:
        incident_id = request.path_params["incident_id"]
        found = queries.incident(detector, incident_id)
        if found is None:
            return JSONResponse({"error": f"no incident {incident_id}"}, status_code=404)
        return JSONResponse(found)

    async def rollouts(request: Request) -> JSONResponse:
        return JSONResponse({"rollouts": queries.rollouts(detector)})

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(queries.stats(detector, now=clock()))

    async def rules(request: Request) -> JSONResponse:
        return JSONResponse(queries.rules(detector))

    async def settings(request: Request) -> JSONResponse:
        return JSONResponse({"settings": queries.settings(detector)})

    return [
        Route(ERRORS_PATH, errors, methods=["GET"]),
        Route(INCIDENTS_PATH, incidents, methods=["GET"]),
        Route(INCIDENTS_PATH + "/{incident_id}", incident, methods=["GET"]),
        Route("/api/rollouts", rollouts, methods=["GET"]),
        Route("/api/stats", stats, methods=["GET"]),
        Route("/api/rules", rules, methods=["GET"]),
        Route("/api/settings", settings, methods=["GET"]),
    ]
