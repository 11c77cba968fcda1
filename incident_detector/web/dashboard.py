"""The dashboard: server-rendered pages (Starlette + Jinja2), inline SVG charts, vendored assets.

    /                  overview: sources and leader, rollouts with their charts, the queue, counters
    /incidents/{id}    one incident: summary, signals, evidence, timeline, the command to run
    /errors            the error groups of triage, filterable
    /history           the audit trail, filterable
    /rules             the rules in force, their source, the last reload
    /settings          the effective settings, secrets as set/unset
    /events            Server-Sent Events: incidents, verdicts and actions as they happen
    /static/...        the one CSS and the one JS file, from the package

Pages read what the loop published and the store (``web.queries``); nothing is fetched from the
internet and nothing here calls a source. The JS only re-fetches the open page when an event
arrives and swaps the sections marked ``data-live``, so every page also works without it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..store import reads
from . import queries
from .actions import flash_message
from .api import BadParameter, _new_only, _priority, _text
from .chart import error_rate_svg

HERE = Path(__file__).parent
# Charts drawn on the overview; the other rollouts (a mass rollout of hundreds) are rows of a
# table, at most TABLE_ROWS of them: a page stays small whatever the cluster's size.
MAX_CHARTS = 48
TABLE_ROWS = 100
CHART_WIDTH, CHART_HEIGHT = 320, 90
# A comment line on an idle stream, so that proxies and the browser keep it open.
HEARTBEAT_SECONDS = 15.0
HISTORY_PAGE = 100

DecisionContext = Callable[[Request, dict[str, Any]], "dict[str, Any] | None"]


def _clock() -> datetime:
    return datetime.now(timezone.utc)


class Pages:
    """The dashboard's templates, made on the first page rendered: jinja2 and the parsed
    templates cost megabytes that a detector whose dashboard nobody opens never needs.
    ``TemplateResponse`` is Starlette's ``Jinja2Templates.TemplateResponse``."""

    def __init__(self) -> None:
        self._templates: Any = None

    @property
    def templates(self) -> Any:
        """The ``Jinja2Templates`` (made now if no page was rendered yet)."""
        if self._templates is None:
            self._templates = _jinja2_templates()
        return self._templates

    def TemplateResponse(self, *args: Any, **kwargs: Any) -> Response:  # noqa: N802
        return self.templates.TemplateResponse(*args, **kwargs)


def templates() -> Pages:
    return Pages()


def _jinja2_templates() -> Any:
    import jinja2
    from starlette.templating import Jinja2Templates

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = _when
    env.filters["rate"] = _rate
    env.filters["percent"] = _percent
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True,
                                                           default=str)
    return Jinja2Templates(env=env)


def _when(value: Any) -> str:
    """An ISO time as people read it on a dashboard: 2026-11-23 18:01:31 UTC."""
    if _missing(value) or not value:
        return "—"
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _missing(value: Any) -> bool:
    from jinja2 import Undefined  # loaded already: this runs while a page renders

    return value is None or isinstance(value, Undefined)


def _rate(value: Any) -> str:
    if _missing(value):
        return "—"
    number = float(value)
    return f"{number:.0f}" if number == int(number) or number >= 100 else f"{number:.1f}"


def _percent(value: Any) -> str:
    return "—" if _missing(value) else f"{float(value) * 100:.0f}%"


# A causality tree drawn on a page: at most this deep (a chain of calls is a few hops).
TREE_MAX_DEPTH = 12


def causality_tree(tree: Any) -> list[dict[str, Any]]:
    """An incident record's ``evidence.causality`` as nested items for the page, from each
    root along its edges: ``{"node", "edge" (the one leading to it; None for a root),
    "children", "seen"}``. A node reached again (two causes through one workload, a cycle) is
    shown once more without its children, marked ``seen``. Anything malformed: no tree."""
    if not isinstance(tree, dict):
        return []
    nodes = {n.get("id"): n for n in tree.get("nodes") or () if isinstance(n, dict)}
    below: dict[Any, list[dict[str, Any]]] = {}
    for edge in tree.get("edges") or ():
        if isinstance(edge, dict) and edge.get("target") in nodes:
            below.setdefault(edge.get("source"), []).append(edge)
    shown: set[Any] = set()

    def item(node_id: Any, edge: dict[str, Any] | None, depth: int) -> dict[str, Any]:
        seen = node_id in shown
        shown.add(node_id)
        children = [] if seen or depth >= TREE_MAX_DEPTH else [
            item(e["target"], e, depth + 1) for e in below.get(node_id, ())]
        return {"node": nodes[node_id], "edge": edge, "children": children, "seen": seen}

    return [item(root, None, 0) for root in tree.get("roots") or () if root in nodes]


def chart_of(rollout: dict[str, Any], points: Any) -> Markup:
    """The rollout's chart; ``points`` are its SeriesPoints (``queries.series``)."""
    band = rollout["band"]
    started = rollout["rollout_started_at"]
    svg = error_rate_svg(
        points, baseline_per_minute=rollout["baseline_per_minute"],
        band_upper=band[1] if band else None,
        threshold_per_minute=rollout["threshold_per_minute"],
        rollout_at=datetime.fromisoformat(started.replace("Z", "+00:00")) if started else None,
        width=CHART_WIDTH, height=CHART_HEIGHT,
        title=f"{rollout['deployment']} revision {rollout['revision']} errors per minute")
    return Markup(svg)  # noqa: S704 - escaped by error_rate_svg


def _sse(event: Any) -> bytes:
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def dashboard_routes(*, detector: Any, decision_context: DecisionContext | None = None,
                     clock: Callable[[], datetime] | None = None,
                     heartbeat_seconds: float = HEARTBEAT_SECONDS) -> list[BaseRoute]:
    """The dashboard's routes, for ``make_app(extra_routes=...)``.

    ``decision_context(request, incident)`` may give the incident page a ``decision`` (the
    approve/reject forms of ``_decision.html``); None shows none. ``clock`` defaults to the
    detector's.
    """
    pages = templates()
    now_of = clock or getattr(detector, "clock", None) or _clock

    def page(request: Request, name: str, context: dict[str, Any],
             status_code: int = 200) -> Response:
        context.setdefault("nav", request.url.path)
        context.setdefault("leader", queries.leader(detector))
        return pages.TemplateResponse(request, name, context, status_code=status_code)

    def bad_request(request: Request, reason: str) -> Response:
        return page(request, "error.html", {"title": "Bad request", "reason": reason},
                    status_code=400)

    async def overview(request: Request) -> Response:
        view = queries.overview(detector, now=now_of())
        rollouts = view["rollouts"]
        charted = [{**r, "svg": chart_of(r, queries.series(detector, r))}
                   for r in rollouts[:MAX_CHARTS]]
        rest = rollouts[MAX_CHARTS:]
        return page(request, "overview.html", {
            **view, "title": "Overview", "charted": charted, "rest": rest[:TABLE_ROWS],
            "rest_hidden": max(0, len(rest) - TABLE_ROWS)})

    async def incident(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        found = queries.incident(detector, incident_id)
        if found is None:
            return page(request, "error.html", {
                "title": "No such incident",
                "reason": f"There is no incident {incident_id}."}, status_code=404)
        decision = decision_context(request, found) if decision_context is not None else None
        evidence = (found["record"] or {}).get("evidence") or {}
        return page(request, "incident.html", {"title": f"Incident {incident_id}",
                                               "incident": found, "record": found["record"],
                                               "causality": causality_tree(
                                                   evidence.get("causality")),
                                               "decision": decision,
                                               # What became of a decision just posted.
                                               "flash": flash_message(request)})

    async def errors(request: Request) -> Response:
        try:
            namespace = _text(request, "namespace")
            deployment = _text(request, "deployment")
            priority = _priority(request)
            # The form's checkbox sends "on"; the API's true/false work too.
            new_only = request.query_params.get("new") == "on" or _new_only(request)
        except BadParameter as bad:
            return bad_request(request, str(bad))
        groups = queries.errors(detector, namespace=namespace, deployment=deployment,
                                priority=priority, new_only=new_only, limit=500, now=now_of())
        return page(request, "errors.html", {
            "title": "Errors", "groups": groups, "triage_on": detector.triage is not None,
            "filters": {"namespace": namespace or "", "deployment": deployment or "",
                        "priority": priority.value if priority else "", "new": new_only}})

    async def history(request: Request) -> Response:
        params = request.query_params
        filters = {name: (params.get(name) or "").strip() or None
                   for name in ("who", "decision", "action", "target")}
        try:
            before = int(params["before"]) if params.get("before") else None
            found = queries.history(detector, **filters, before=before, limit=HISTORY_PAGE)
        except (ValueError, reads.BadQuery):
            return bad_request(request, "before is an audit row id (a number)")
        return page(request, "history.html", {
            "title": "History", "rows": found["audit"], "next": found["next"],
            "filters": {k: v or "" for k, v in filters.items()},
            "summary": detector.journal.audit_summary()})

    async def rules(request: Request) -> Response:
        return page(request, "rules.html", {"title": "Rules", "rules": queries.rules(detector)})

    async def settings(request: Request) -> Response:
        return page(request, "settings.html", {"title": "Settings",
                                               "settings": queries.settings(detector)})

    async def events(request: Request) -> Response:
        live = detector.live
        queue = live.subscribe()
        last_id = _last_event_id(request)

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 3000\n\n"
                sent = last_id or 0
                if last_id is not None:
                    for event in live.since(last_id):
                        sent = event.id
                        yield _sse(event)
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=heartbeat_seconds)
                    except asyncio.TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    if event.id <= sent:
                        continue  # already sent from the recent events
                    sent = event.id
                    yield _sse(event)
            finally:
                live.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return [
        Route("/", overview, methods=["GET"]),
        Route("/incidents/{incident_id}", incident, methods=["GET"]),
        Route("/errors", errors, methods=["GET"]),
        Route("/history", history, methods=["GET"]),
        Route("/rules", rules, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

