"""The service map over HTTP: its JSON and its page.

    GET /api/graph?namespace=shop&workload=shop/payments&depth=2
    GET /map?namespace=shop&workload=shop/payments&depth=2

Both read the map the loop keeps (``run.changes.MapKeeper``, from what the tick already read)
and what it published of the workloads' state; neither calls a source. The answer is
``{"nodes": [...], "edges": [...]}``: each node ``{"id": "<ns>/<workload>", "namespace",
"name", "kind": "workload" | "external", "state": "incident" | "rollout" | "rising" | "ok",
"incident": id | null}``, each edge ``{"source": caller, "target": callee, "evidence": [{"kind",
"detail", "seen_at"}], "last_seen"}``.

``namespace`` keeps that namespace's nodes and the edges touching them; ``workload`` (``<ns>/
<name>``, or ``external/<host>``) the nodes within ``depth`` hops of it, either direction
(``depth`` 0..6, default 2, only with ``workload``). A bad value is a 400 ``{"error": reason}``
as in ``web.api``; a workload that is not on the map a 404.

The page draws the whole map (or the namespace's) with ``workload`` highlighted and its
neighbourhood within ``depth`` emphasised; ``static/service_map.js`` lays it out in the browser
from the same JSON, embedded in the page (nothing is fetched from elsewhere).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..judge import service_map as graph
from ..model import Signal
from ..store import reads
from .api import BadParameter, _bad, _text
from .queries import QUEUE_WINDOW, leader

GRAPH_PATH = "/api/graph"
MAP_PATH = "/map"
DEFAULT_DEPTH, MAX_DEPTH = 2, 6
# Open incidents looked at for the nodes' state.
OPEN_INCIDENTS = 500
STATE_ORDER = ("incident", "rollout", "rising", "ok")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class GraphFilter:
    namespace: str | None = None
    workload: str | None = None
    depth: int = DEFAULT_DEPTH


def graph_filter(request: Request) -> GraphFilter:
    """The filters of ``/api/graph`` and ``/map``; ``BadParameter`` naming the one that is
    wrong."""
    namespace = _text(request, "namespace")
    if namespace is not None:
        namespace = namespace.strip()
        if not _NAMESPACE.fullmatch(namespace) and namespace != graph.EXTERNAL:
            raise BadParameter("namespace is a namespace's name (lower case letters, digits "
                               "and '-')")
    workload = _text(request, "workload")
    if workload is not None:
        workload = workload.strip()
        ns, slash, name = workload.partition("/")
        if not slash or not name or not (_NAMESPACE.fullmatch(ns) or ns == graph.EXTERNAL) \
                or len(workload) > 320 or any(c.isspace() for c in workload):
            raise BadParameter("workload is <namespace>/<name>, e.g. shop/payments "
                               "(or external/<host>)")
    depth_text = _text(request, "depth")
    depth = DEFAULT_DEPTH
    if depth_text is not None:
        if workload is None:
            raise BadParameter("depth needs a workload to count hops from")
        try:
            depth = int(depth_text.strip())
        except ValueError:
            raise BadParameter(f"depth is an integer from 0 to {MAX_DEPTH}") from None
        if not 0 <= depth <= MAX_DEPTH:
            raise BadParameter(f"depth is an integer from 0 to {MAX_DEPTH}")
    return GraphFilter(namespace=namespace, workload=workload, depth=depth)


def service_map_of(detector: Any) -> graph.ServiceMap:
    desk = getattr(detector, "change_desk", None)
    keeper = getattr(desk, "map_keeper", None)
    return keeper.service_map if keeper is not None else graph.ServiceMap()


def states(detector: Any, *, now: datetime) -> dict[str, tuple[str, str | None]]:
    """Node id -> (state, open incident id) of the workloads that are not simply ok: an open
    incident (the newest), a rollout in its window, errors rising (the error-spike signal)."""
    out: dict[str, tuple[str, str | None]] = {}
    tick = getattr(detector, "last_tick", None)
    for a in tick.assessments if tick is not None else ():
        identifier = graph.node_id(a.namespace, a.deployment)
        if Signal.ERROR_SPIKE in a.signals:
            out[identifier] = ("rising", None)
        elif a.in_window and out.get(identifier, ("ok",))[0] == "ok":
            out[identifier] = ("rollout", None)
    for item in reversed(reads.queue(detector.store.connection, since=now - QUEUE_WINDOW,
                                     limit=OPEN_INCIDENTS)):
        if item.get("namespace") and item.get("deployment"):
            out[graph.node_id(item["namespace"], item["deployment"])] = ("incident", item["id"])
    return out


def graph_view(detector: Any, wanted: GraphFilter, *, now: datetime,
               neighbourhood_only: bool = True) -> dict[str, Any] | None:
    """The JSON of the map as filtered; None when ``wanted.workload`` is not on it.
    ``neighbourhood_only=False`` (the page): the whole map (or namespace), with the nodes
    within ``depth`` of the workload named in ``near``."""
    whole = graph.subgraph(service_map_of(detector), namespace=wanted.namespace)
    shown = whole
    near: list[str] = []
    if wanted.workload is not None:
        part = graph.subgraph(whole, workload=wanted.workload, depth=wanted.depth)
        if not part.nodes:
            return None
        near = sorted(part.nodes)
        if neighbourhood_only:
            shown = part
    known = states(detector, now=now)
    nodes = []
    for identifier, node in sorted(shown.nodes.items()):
        state, incident = known.get(identifier, ("ok", None))
        nodes.append({"id": identifier, "namespace": node.namespace, "name": node.name,
                      "kind": node.kind, "state": state if node.kind == graph.WORKLOAD else "ok",
                      "incident": incident})
    edges = [graph.edge_dict(edge) for _, edge in sorted(shown.edges.items())]
    view: dict[str, Any] = {"nodes": nodes, "edges": edges}
    if not neighbourhood_only:
        view["near"] = near
    return view


def graph_routes(*, detector: Any, templates: Any,
                 clock: Callable[[], datetime]) -> list[BaseRoute]:
    """The map's routes, for ``make_app(extra_routes=...)``; ``templates`` the dashboard's."""

    async def api_graph(request: Request) -> Response:
        try:
            wanted = graph_filter(request)
        except BadParameter as bad:
            return _bad(str(bad))
        view = graph_view(detector, wanted, now=clock())
        if view is None:
            return JSONResponse({"error": f"no workload {wanted.workload} on the map"},
                                status_code=404)
        return JSONResponse(view)

    async def map_page(request: Request) -> Response:
        context: dict[str, Any] = {"nav": MAP_PATH, "leader": leader(detector),
                                   "title": "Service map"}
        try:
            wanted = graph_filter(request)
        except BadParameter as bad:
            return templates.TemplateResponse(request, "error.html", {
                **context, "title": "Bad request", "reason": str(bad)}, status_code=400)
        view = graph_view(detector, wanted, now=clock(), neighbourhood_only=False)
        missing = view is None
        if view is None:
            view = graph_view(detector, GraphFilter(namespace=wanted.namespace), now=clock(),
                              neighbourhood_only=False) or {"nodes": [], "edges": [], "near": []}
        namespaces = sorted({n.namespace for n in service_map_of(detector).nodes.values()
                             if n.kind == graph.WORKLOAD})
        data = json.dumps({**view, "focus": None if missing else wanted.workload},
                          separators=(",", ":")).replace("</", "<\\/")
        return templates.TemplateResponse(request, "map.html", {
            **context, "graph": view, "graph_json": Markup(data),  # noqa: S704 - JSON, "</" escaped
            "filters": {"namespace": wanted.namespace or "", "workload": wanted.workload or "",
                        "depth": wanted.depth},
            "missing": wanted.workload if missing else None, "namespaces": namespaces,
            "counts": {s: sum(1 for n in view["nodes"] if n["state"] == s)
                       for s in STATE_ORDER}})

    return [Route(GRAPH_PATH, api_graph, methods=["GET"]),
            Route(MAP_PATH, map_page, methods=["GET"])]
