"""The JSON API over what the loop recorded: ``GET /api/errors``, the error triage's groups.

    GET /api/errors?namespace=shop&deployment=payments-api&priority=P1&new=true&limit=50

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

ERRORS_PATH = "/api/errors"
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


def api_routes(
    *, triage: ErrorGroups,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> list[Route]:
    """The API's routes, for ``make_app(extra_routes=...)``."""

    async def errors(request: Request) -> JSONResponse:
        try:
            namespace = _text(request, "namespace")
            deployment = _text(request, "deployment")
            priority = _priority(request)
            new_only = _new_only(request)
            limit = _limit(request)
        except BadParameter as bad:
            return JSONResponse({"error": str(bad)}, status_code=400)
        found = triage.groups(namespace=namespace, deployment=deployment, priority=priority,
                              new_only=new_only, limit=limit, now=clock())
        return JSONResponse({"errors": found, "count": len(found)})

    return [Route(ERRORS_PATH, errors, methods=["GET"])]
