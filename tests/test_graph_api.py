"""GET /api/graph and the /map page over a real detector: the simulated shop of
tests/scenarios/service-map.yaml (loopback apiserver and Loki, a manual clock), ticked past
payments' bad rollout, so that the map holds links from environments, a ConfigMap, error lines
and an outside host, and the workloads' states."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from incident_detector.sim.scenario import load_scenario
from test_alert_flow import TOKEN, Sim

SCENARIO = Path(__file__).parent / "scenarios" / "service-map.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    sim = Sim(tmp_path_factory.mktemp("graph"), load_scenario(SCENARIO))
    held: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon(alertmanager_token=TOKEN) as (detector, web, _):
            sim.clock.now += timedelta(seconds=20)
            while sim.clock.now <= sim.world.t0 + timedelta(seconds=140):
                await sim.tick(detector, web)
            for path in ("/api/graph", "/api/graph?namespace=shop",
                         "/api/graph?workload=shop/checkout&depth=1",
                         "/api/graph?workload=shop/frontend&depth=0",
                         "/api/graph?workload=external/api.stripe.com",
                         "/api/graph?namespace=billing", "/map",
                         "/map?workload=shop/payments&depth=1", "/map?workload=shop/nothing",
                         "/api/incidents"):
                answer = await web.get(path)
                held[path] = (answer.status_code, answer.text)
            held["bad"] = {}
            for query in ("namespace=", "namespace=Shop!", "workload=checkout",
                          "workload=shop/", "workload=/x", "depth=2",
                          "workload=shop/checkout&depth=x", "workload=shop/checkout&depth=7",
                          "workload=shop/checkout&depth=-1", "workload=shop%2Fa%20b"):
                answer = await web.get(f"/api/graph?{query}")
                held["bad"][query] = (answer.status_code, answer.json())
            answer = await web.get("/api/graph?workload=shop/nothing")
            held["missing"] = (answer.status_code, answer.json())
            answer = await web.get("/map?depth=zz&workload=shop/checkout")
            held["bad page"] = (answer.status_code, answer.text)
            incidents = json.loads(held["/api/incidents"][1])["incidents"]
            held["incident pages"] = [(await web.get(f"/incidents/{i['id']}")).text
                                      for i in incidents]

    asyncio.run(main())
    return held


def body(world: dict[str, Any], path: str) -> dict[str, Any]:
    status, text = world[path]
    assert status == 200, (path, status, text)
    return json.loads(text)


def links(graph: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["source"], e["target"]) for e in graph["edges"]}


def kinds(graph: dict[str, Any], source: str, target: str) -> set[str]:
    [edge] = [e for e in graph["edges"] if (e["source"], e["target"]) == (source, target)]
    return {item["kind"] for item in edge["evidence"]}


def test_the_whole_map_has_the_shops_links_and_their_evidence(world):
    graph = body(world, "/api/graph")
    assert links(graph) == {
        ("shop/frontend", "shop/checkout"), ("shop/frontend", "shop/catalog"),
        ("shop/checkout", "shop/payments"), ("shop/checkout", "shop/inventory"),
        ("shop/catalog", "shop/inventory"), ("shop/payments", "shop/postgres"),
        ("shop/inventory", "shop/postgres"), ("shop/payments", "external/api.stripe.com"),
        ("shop/recommendations", "shop/catalog")}
    assert kinds(graph, "shop/checkout", "shop/payments") == \
        {"env", "service_selector", "error_line"}
    assert kinds(graph, "shop/checkout", "shop/inventory") == {"configmap", "service_selector"}
    assert kinds(graph, "shop/recommendations", "shop/catalog") == \
        {"error_line", "service_selector"}
    assert kinds(graph, "shop/payments", "external/api.stripe.com") == {"env"}
    [edge] = [e for e in graph["edges"] if e["target"] == "external/api.stripe.com"]
    assert edge["evidence"][0]["detail"] == "STRIPE_URL=https://api.stripe.com/v1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", edge["last_seen"])
    details = {item["detail"] for e in graph["edges"] for item in e["evidence"]}
    assert "checkout-config: INVENTORY_HOST=inventory.shop.svc.cluster.local" in details
    assert 'level=error msg="upstream call failed" host=payments status=503 order_id=<n>' \
        in details


def test_nodes_carry_their_state(world):
    nodes = {n["id"]: n for n in body(world, "/api/graph")["nodes"]}
    assert set(nodes) == {"shop/frontend", "shop/checkout", "shop/catalog", "shop/payments",
                          "shop/inventory", "shop/postgres", "shop/recommendations",
                          "external/api.stripe.com"}
    assert nodes["shop/payments"]["state"] == "incident"
    assert nodes["shop/payments"]["incident"]
    assert nodes["shop/checkout"]["state"] == "incident"  # its change incident
    assert nodes["shop/catalog"]["state"] == "rollout"
    assert nodes["shop/frontend"]["state"] == "ok" and nodes["shop/frontend"]["incident"] is None
    assert nodes["external/api.stripe.com"] == {
        "id": "external/api.stripe.com", "namespace": "external", "name": "api.stripe.com",
        "kind": "external", "state": "ok", "incident": None}
    assert nodes["shop/checkout"]["namespace"] == "shop"
    assert nodes["shop/checkout"]["kind"] == "workload"


def test_filters_namespace_workload_and_depth(world):
    assert links(body(world, "/api/graph?namespace=shop")) == links(body(world, "/api/graph"))
    assert body(world, "/api/graph?namespace=billing") == {"nodes": [], "edges": []}
    near = body(world, "/api/graph?workload=shop/checkout&depth=1")
    assert {n["id"] for n in near["nodes"]} == {"shop/checkout", "shop/frontend",
                                                "shop/payments", "shop/inventory"}
    assert links(near) == {("shop/frontend", "shop/checkout"), ("shop/checkout", "shop/payments"),
                           ("shop/checkout", "shop/inventory")}
    alone = body(world, "/api/graph?workload=shop/frontend&depth=0")
    assert [n["id"] for n in alone["nodes"]] == ["shop/frontend"] and alone["edges"] == []
    # depth defaults to 2: from outside, payments then its callers and callees.
    stripe = body(world, "/api/graph?workload=external/api.stripe.com")
    assert {n["id"] for n in stripe["nodes"]} == {"external/api.stripe.com", "shop/payments",
                                                  "shop/checkout", "shop/postgres"}


def test_bad_filters_answer_400_saying_which(world):
    bad = world["bad"]
    for query, (status, answer) in bad.items():
        assert status == 400, query
        name = query.split("=")[0] if "&" not in query else "depth"
        assert name in answer["error"], (query, answer)
    assert bad["depth=2"][1]["error"] == "depth needs a workload to count hops from"
    assert bad["workload=checkout"][1]["error"].startswith("workload is <namespace>/<name>")
    assert world["missing"] == (404, {"error": "no workload shop/nothing on the map"})


def test_the_map_page_embeds_the_graph_and_lists_the_links(world):
    status, html = world["/map"]
    assert status == 200
    assert '<a href="/map" aria-current="page">Map</a>' in html
    data = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', html,
                     re.S)
    assert data is not None
    graph = json.loads(data.group(1))
    assert links(graph) == links(body(world, "/api/graph"))
    assert graph["focus"] is None and graph["near"] == []
    assert "/static/service_map.js" in html
    assert "shop/payments</a></td><td><a href=\"/map?workload=external/api.stripe.com\"" in html
    status, focused = world["/map?workload=shop/payments&depth=1"]
    graph = json.loads(re.search(r'id="graph-data">(.*?)</script>', focused, re.S).group(1))
    assert graph["focus"] == "shop/payments"
    assert graph["near"] == ["external/api.stripe.com", "shop/checkout", "shop/payments",
                             "shop/postgres"]
    assert len(graph["nodes"]) == 8  # the whole map, the neighbourhood emphasised
    status, missing = world["/map?workload=shop/nothing"]
    assert status == 200 and "shop/nothing is not on the map" in missing
    status, bad = world["bad page"]
    assert status == 400 and "depth is an integer from 0 to 6" in bad


def test_an_incident_page_links_to_the_map(world):
    pages = world["incident pages"]
    assert pages
    assert any('href="/map?workload=shop/payments"' in page for page in pages)
    assert any('href="/map?workload=shop/checkout"' in page for page in pages)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["namespace", "workload", "depth"]),
                       st.text(max_size=30), max_size=3))
def test_any_query_is_answered_with_a_graph_or_a_reason(query):
    from starlette.datastructures import QueryParams
    from starlette.requests import Request

    from incident_detector.web.api import BadParameter
    from incident_detector.web.graph import MAX_DEPTH, graph_filter

    request = Request({"type": "http", "query_string": str(QueryParams(query)).encode(),
                       "headers": []})
    try:
        wanted = graph_filter(request)
    except BadParameter as bad:
        assert str(bad)
        return
    assert 0 <= wanted.depth <= MAX_DEPTH
    assert wanted.workload is None or "/" in wanted.workload


def test_rising_and_rollout_states_come_from_the_last_ticks_assessments():
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from incident_detector.judge.correlator import Assessment, Verdict
    from incident_detector.model import Signal
    from incident_detector.store.records import Store
    from incident_detector.web.graph import states

    now = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)

    def assessment(name: str, *, in_window: bool, signals=()) -> Assessment:
        return Assessment("shop", name, 2, f"{name}-2", now, 30.0, in_window,
                          Verdict.NO_VERDICT, tuple(signals), 12.0, None, 1.0)

    store = Store(":memory:")
    try:
        detector = SimpleNamespace(store=store, last_tick=SimpleNamespace(assessments=(
            assessment("cart", in_window=True, signals=(Signal.ERROR_SPIKE,)),
            assessment("search", in_window=True),
            assessment("old", in_window=False))))
        assert states(detector, now=now) == {"shop/cart": ("rising", None),
                                             "shop/search": ("rollout", None)}
    finally:
        store.close()
