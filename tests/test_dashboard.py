"""The dashboard and its JSON API over a real detector: a simulated cluster (loopback apiserver,
Loki, Slack) where an alert raises an alert incident and a bad rollout that follows it raises a
rollout incident. Pages are parsed with the standard library's html.parser."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from incident_detector.run.live import LiveFeed
from incident_detector.sim.scenario import load_scenario
from incident_detector.web.api import api_routes
from incident_detector.web.app import make_app
from incident_detector.web.dashboard import dashboard_routes

from test_alert_flow import TOKEN, Sim

SCENARIO = """
description: An alert on checkout, then a bad rollout of it (the alert began before it).
namespace: shop
deployment: checkout
duration: 900
pod_labels: {app: checkout}
revisions:
  - {revision: 1, at: -86400, image: registry.local/checkout:2.3.8, replicas: 2}
  - {revision: 2, at: 60, image: registry.local/checkout:2.3.9, replicas: 2}
logs:
  - {revision: 1, from: -2400, per_minute: 0.5, line: 'level=error msg="timeout calling bank"'}
  - {revision: 2, from: 75, per_minute: 30, line: 'level=error msg="charge failed" err="NullPointerException at Pay.java:{n3}"'}
alerts:
  - name: CheckoutQueueBacklog
    at: 10
    labels: {namespace: shop, deployment: checkout, severity: warning}
    annotations: {summary: The checkout queue is backing up.}
expect:
  incidents: [{revision: 2, signals: [error_spike]}]
"""
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Page(HTMLParser):
    """Every element with its attributes, its text and its ancestors."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self._stack: list[int] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, "attrs": dict(attrs), "ancestors": list(self._stack),
                              "text": []})
        if tag not in VOID:
            self._stack.append(len(self.elements) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, "attrs": dict(attrs), "ancestors": list(self._stack),
                              "text": []})

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, -1, -1):
            if self.elements[self._stack[depth]]["tag"] == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        for index in self._stack:
            self.elements[index]["text"].append(data)

    def find(self, tag: str | None = None, within: dict[str, Any] | None = None,
             **attrs: str | bool) -> list[dict[str, Any]]:
        inside = None if within is None else self.elements.index(within)
        found = []
        for element in self.elements:
            if tag is not None and element["tag"] != tag:
                continue
            if inside is not None and inside not in element["ancestors"]:
                continue
            if all((name.replace("_", "-") in element["attrs"]) if value is True
                   else element["attrs"].get(name.replace("_", "-")) == value
                   for name, value in attrs.items()):
                found.append(element)
        return found

    def one(self, tag: str | None = None, **attrs: str | bool) -> dict[str, Any]:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    @staticmethod
    def text(element: dict[str, Any]) -> str:
        return " ".join("".join(element["text"]).split())


def dashboard_app(detector: Any, **kw: Any):
    return make_app(detector, extra_routes=[
        *api_routes(detector=detector, clock=detector.clock),
        *dashboard_routes(detector=detector, **kw)])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dashboard")
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO)
    sim = Sim(tmp_path, load_scenario(path))
    held: dict[str, Any] = {}

    async def main() -> None:
        async with sim.daemon(alertmanager_token=TOKEN) as (detector, web, _):
            # From the alert to 3 minutes into the rollout, a tick every 20 s.
            sim.clock.now += timedelta(seconds=20)
            while sim.clock.now <= sim.world.t0 + timedelta(seconds=240):
                await sim.tick(detector, web, sim.scenario.alerts)
            held["detector"] = detector

    asyncio.run(main())
    detector = held["detector"]
    kinds = [json.loads(line)["kind"] for line in sim.out.getvalue().splitlines()
             if '"event":"incident"' in line]
    assert kinds == ["alert", "rollout"], kinds
    return detector


@pytest.fixture
def client(world):
    with TestClient(dashboard_app(world)) as client:
        yield client


def page(client, path: str, status: int = 200) -> Page:
    answer = client.get(path)
    assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("text/html")
    return Page(answer.text)


def ids_of(client, query: str = "") -> list[str]:
    answer = client.get("/api/incidents" + query)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["incidents"]]


def test_the_overview_shows_sources_counters_queue_and_rollouts(client):
    doc = page(client, "/")
    sources = doc.one(id="sources")
    names = {e["attrs"]["data-source"] for e in doc.find(within=sources, data_source=True)}
    assert {"kubernetes", "loki", "slack", "alertmanager", "leader"} <= names
    assert "✔ ok" in Page.text(doc.one(data_source="kubernetes"))
    counters = doc.one(id="counters")
    assert Page.text(doc.find(within=counters, data_counter="incidents")[0]) == "2"
    queue = doc.one(id="queue")
    rows = doc.find("tr", within=queue, data_incident=True)
    assert [r["attrs"]["data-incident"] for r in rows] == ["r1", "n1"]  # P1 first, then P3
    links = [a["attrs"]["href"] for a in doc.find("a", within=rows[0])]
    assert links == ["/incidents/r1"]
    rollouts = doc.one(id="rollouts")
    (card,) = doc.find(within=rollouts, data_rollout="shop/checkout/2")
    (svg,) = doc.find("svg", within=card)
    assert svg["attrs"]["role"] == "img" and "errors per minute" in svg["attrs"]["aria-label"]
    assert doc.find("polyline", within=card)
    text = Page.text(card)
    assert "✖ Failing" in text and "incident r1" in text and "confidence" in text
    # Served from the package, nothing from elsewhere.
    assets = [e["attrs"].get("href") or e["attrs"].get("src") for e in doc.find("link") +
              doc.find("script")]
    assert assets and all(a.startswith(("/static/", "http://testserver/static/")) for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200


def test_the_incident_page_has_evidence_timeline_and_a_command_to_copy(client):
    doc = page(client, "/incidents/r1")
    command = doc.one(id="command")
    (button,) = doc.find("button", within=command)
    assert "copy" in button["attrs"]["class"].split() and button["attrs"]["type"] == "button"
    code = doc.one(id="command-text")
    assert Page.text(code).startswith("kubectl rollout undo deployment/checkout -n shop")
    evidence = doc.one(id="evidence")
    assert "NullPointerException" in Page.text(evidence)
    assert "registry.local/checkout:2.3.8 -> registry.local/checkout:2.3.9" in Page.text(evidence)
    timeline = doc.one(id="timeline")
    kinds = [li["attrs"]["data-kind"] for li in doc.find("li", within=timeline)]
    assert kinds[:2] == ["rollout", "detection"] and "notification" in kinds
    assert "Notification delivered: slack" in Page.text(timeline)
    alert = page(client, "/incidents/n1")
    assert "CheckoutQueueBacklog" in Page.text(alert.one(id="summary"))
    assert [li["attrs"]["data-kind"] for li in alert.find("li", within=alert.one(id="timeline"))
            ][:1] == ["rollout"]


def test_an_unknown_incident_is_a_404_page_and_a_404_json(client):
    page(client, "/incidents/r999", status=404)
    page(client, "/incidents/nonsense", status=404)
    for path in ("/api/incidents/r999", "/api/incidents/x1"):
        answer = client.get(path)
        assert answer.status_code == 404 and "error" in answer.json()


def test_the_decision_partial_is_included_only_when_it_exists(world):
    seen = []

    def decision(request, incident):
        seen.append(incident["id"])
        return {"action": "rollback"}

    with TestClient(dashboard_app(world, decision_context=decision)) as client:
        page(client, "/incidents/r1")  # _decision.html may not exist yet: ignored
    assert seen == ["r1"]


def test_the_other_pages(client):
    errors = page(client, "/errors")
    assert errors.find("form", role="search") and errors.one(id="errors")
    assert "NullPointerException" in Page.text(errors.one(id="errors"))
    filtered = page(client, "/errors?namespace=elsewhere&new=on")
    assert not filtered.find("tr", data_group=True)
    page(client, "/errors?priority=P9", status=400)
    history = page(client, "/history?who=nobody")
    assert history.one(id="audit")
    page(client, "/history?before=x", status=400)
    rules = page(client, "/rules")
    names = [r["attrs"]["data-rule"] for r in rules.find("tr", data_rule=True)]
    assert names == ["rollout-regression", "crash-loop", "oom-killed", "image-pull", "default"]
    settings = page(client, "/settings")
    token = settings.one("tr", data_setting="alertmanager_token")
    assert "set" in Page.text(token) and TOKEN not in str(settings.elements)
    for doc in (errors, history, rules, settings):
        current = [a for a in doc.find("a") if a["attrs"].get("aria-current") == "page"]
        assert len(current) == 1


def test_the_api_shapes(client):
    listing = client.get("/api/incidents").json()
    assert set(listing) == {"incidents", "next"} and listing["next"] is None
    (rollout, alert) = listing["incidents"]
    assert (alert["id"], alert["kind"], alert["status"]) == ("n1", "alert", "open")
    assert (rollout["id"], rollout["kind"], rollout["priority"]) == ("r1", "rollout", "P1")
    one = client.get("/api/incidents/r1").json()
    assert one["record"]["revision"] == 2 and one["command"].startswith("kubectl rollout undo")
    assert [e["kind"] for e in one["timeline"]][:2] == ["rollout", "detection"]
    (ro,) = client.get("/api/rollouts").json()["rollouts"]
    assert ro["id"] == "shop/checkout/2" and ro["incident"] == "r1" and ro["points"]
    assert ro["threshold_per_minute"] == 2.5 and ro["band"][0] == 0.0
    stats = client.get("/api/stats").json()
    assert stats["incidents_today"]["by_kind"] == {"rollout": 1, "alert": 1, "change": 0,
                                                   "error_group": 0}
    rules = client.get("/api/rules").json()
    assert rules["source"] == "built-in" and rules["rules"][0]["name"] == "rollout-regression"
    settings = client.get("/api/settings").json()["settings"]
    assert settings["alertmanager_token"] == "set" and settings["namespace"] == ["shop"]
    assert client.get("/api/errors?namespace=shop").json()["count"] >= 1


@pytest.mark.parametrize("query, expected", [
    ("?kind=rollout", ["r1"]), ("?kind=alert", ["n1"]), ("?priority=p1", ["r1"]),
    ("?status=closed", []), ("?status=open", ["r1", "n1"]), ("?namespace=other", []),
    ("?deployment=checkout&limit=1", ["r1"]), ("?limit=1&before=r1", ["n1"]),
    ("?since=2030-01-01T00:00:00Z", []),
])
def test_api_filters_and_pages(client, query, expected):
    assert ids_of(client, query) == expected


def test_api_pagination_next(client):
    first = client.get("/api/incidents?limit=1").json()
    assert first["next"] == "r1"
    second = client.get(f"/api/incidents?limit=1&before={first['next']}").json()
    assert [i["id"] for i in second["incidents"]] == ["n1"] and second["next"] is None


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?limit=x", "?kind=deploy",
                                   "?status=gone", "?priority=P7", "?before=zz",
                                   "?before=r999", "?since=yesterday", "?namespace="])
def test_api_bad_parameters_are_400_json(client, query):
    answer = client.get("/api/incidents" + query)
    assert answer.status_code == 400 and answer.json()["error"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(
    st.sampled_from(["namespace", "deployment", "kind", "priority", "status", "since", "limit",
                     "before", "other"]),
    st.text(max_size=12), max_size=4))
def test_any_query_is_an_answer_or_a_400_never_a_crash(client, params):
    answer = client.get("/api/incidents", params=params)
    assert answer.status_code in (200, 400), (params, answer.text)
    body = answer.json()
    assert ("incidents" in body) if answer.status_code == 200 else body["error"]


async def _serve(app) -> tuple[uvicorn.Server, asyncio.Task, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


async def _events(response: httpx.Response, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "event" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    return events


def test_server_sent_events_deliver_what_is_published_after_connecting(world):
    live = LiveFeed()
    before = live.publish("tick", {"n": 0})
    world.live, saved = live, world.live

    async def main() -> tuple[list[dict[str, str]], list[dict[str, str]], int]:
        server, task, url = await _serve(dashboard_app(world))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/events") as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    while live.subscribers == 0:
                        await asyncio.sleep(0.01)
                    live.publish("incident", {"namespace": "shop", "deployment": "checkout"})
                    live.publish("verdict", {"verdict": "healthy"})
                    fresh = await asyncio.wait_for(_events(response, 2), timeout=10)
                # Reconnecting with Last-Event-ID: what it missed, from the recent events.
                async with http.stream("GET", url + "/events",
                                       headers={"Last-Event-ID": str(before.id)}) as response:
                    missed = await asyncio.wait_for(_events(response, 2), timeout=10)
                # The server notices the client went away.
                deadline = asyncio.get_running_loop().time() + 30
                while live.subscribers and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.01)
                return fresh, missed, live.subscribers
        finally:
            server.should_exit = True
            await task

    try:
        fresh, missed, left = asyncio.run(main())
    finally:
        world.live = saved
    assert [(e["event"], json.loads(e["data"])) for e in fresh] == [
        ("incident", {"namespace": "shop", "deployment": "checkout"}),
        ("verdict", {"verdict": "healthy"})]
    assert [int(e["id"]) for e in fresh] == [before.id + 1, before.id + 2]
    assert [e["event"] for e in missed] == ["incident", "verdict"]
    assert left == 0


def test_an_idle_stream_gets_a_heartbeat_comment(world):
    async def main() -> str:
        app = make_app(world, extra_routes=dashboard_routes(detector=world,
                                                            heartbeat_seconds=0.05))
        server, task, url = await _serve(app)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/events") as response:
                    async for line in response.aiter_lines():
                        if line.startswith(":"):
                            return line
        finally:
            server.should_exit = True
            await task
        return ""

    assert asyncio.run(main()) == ": heartbeat"


def test_static_assets_are_small_and_local():
    static = Path(__file__).parent.parent / "incident_detector" / "web" / "static"
    files = sorted(p.name for p in static.iterdir())
    assert files == ["dashboard.css", "dashboard.js", "service_map.js"]
    assert sum(p.stat().st_size for p in static.iterdir()) < 32_000
    for p in static.iterdir():
        assert "http://" not in p.read_text() and "https://" not in p.read_text()


# --- the causality tree ------------------------------------------------------------------------

from incident_detector.web.dashboard import causality_tree  # noqa: E402


def test_the_causality_tree_nests_from_each_root_and_shows_a_node_twice_without_children():
    tree = {"roots": ["change:a", "change:b"],
            "nodes": [{"id": i, "kind": i.partition(":")[0], "label": i} for i in (
                "change:a", "change:b", "workload:x", "workload:y", "signal:s")],
            "edges": [{"source": "change:a", "target": "workload:x", "score": 0.7,
                       "evidence": ["why"]},
                      {"source": "workload:x", "target": "workload:y", "score": 0.8,
                       "evidence": []},
                      {"source": "workload:y", "target": "signal:s", "score": 1.0,
                       "evidence": []},
                      {"source": "change:b", "target": "workload:y", "score": 0.2,
                       "evidence": []},
                      {"source": "workload:y", "target": "workload:x", "score": 0.5,
                       "evidence": []}]}
    first, second = causality_tree(tree)
    assert first["node"]["id"] == "change:a" and first["edge"] is None
    [x] = first["children"]
    assert x["edge"]["score"] == 0.7
    [y] = x["children"]
    assert [c["node"]["id"] for c in y["children"]] == ["signal:s", "workload:x"]
    assert y["children"][1]["seen"] and y["children"][1]["children"] == []
    [again] = second["children"]
    assert again["node"]["id"] == "workload:y" and again["seen"] and again["children"] == []


def test_a_missing_or_malformed_tree_is_none():
    assert causality_tree(None) == []
    assert causality_tree("x") == []
    assert causality_tree({"roots": ["gone"], "nodes": [], "edges": [1]}) == []
