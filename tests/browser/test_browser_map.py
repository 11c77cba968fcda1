"""The service map in Chromium, over the real daemon and the shop of
tests/scenarios/service-map.yaml: the drawing's workloads coloured by state, a link's evidence on
hover and on click, an incident's page leading to its workload on the map, a drawing of 200
workloads whose nodes do not overlap, and the README's screenshot."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from incident_detector.sim.scenario import load_scenario

SCENARIO = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" /
                         "service-map.yaml")
PHONE = {"width": 390, "height": 844}


def wait_for_graph(url: str, timeout: float = 30.0) -> dict:
    """The map once both incidents are open, catalog rolled out and the error lines have
    named payments."""
    deadline = time.monotonic() + timeout
    graph: dict = {}
    while time.monotonic() < deadline:
        graph = httpx.get(f"{url}/api/graph", timeout=5).json()
        states = {n["id"]: n["state"] for n in graph["nodes"]}
        kinds = {item["kind"] for e in graph["edges"]
                 if (e["source"], e["target"]) == ("shop/checkout", "shop/payments")
                 for item in e["evidence"]}
        if states.get("shop/payments") == "incident" and \
                states.get("shop/checkout") == "incident" and "error_line" in kinds and \
                states.get("shop/catalog") == "rollout":
            return graph
        time.sleep(0.2)
    raise AssertionError(f"the map is not there after {timeout:g} s: {graph}")


@pytest.fixture(scope="module")
def daemon(start_daemon):
    # From just before payments rolls out (t=60), four times as fast as the wall clock.
    with start_daemon(with_token=False, start_at=50, speed=4.0, scenario=SCENARIO) as daemon:
        wait_for_graph(daemon.url)
        yield daemon


def open_map(page, url: str) -> None:
    answer = page.goto(url)
    assert answer is not None and answer.status == 200
    page.locator("#map-canvas[data-rendered=true]").wait_for()


def test_the_map_draws_workloads_by_state_and_links_with_their_evidence(daemon, page,
                                                                        take_screenshot):
    page.goto(f"{daemon.url}/")
    with page.expect_navigation():
        page.locator("nav a[href='/map']").click()
    page.locator("#map-canvas[data-rendered=true]").wait_for()
    nodes = page.locator("#map-canvas svg g.node")
    assert nodes.count() == 8
    assert page.locator("g.node[data-id='shop/payments']").get_attribute("data-state") == \
        "incident"
    assert "state-incident" in page.locator("g.node[data-id='shop/payments']").get_attribute(
        "class")
    assert page.locator("g.node[data-id='shop/catalog']").get_attribute("data-state") == \
        "rollout"
    assert "kind-external" in page.locator(
        "g.node[data-id='external/api.stripe.com']").get_attribute("class")
    # Callers left of their callees.
    def x(node_id: str) -> float:
        return page.locator(f"g.node[data-id='{node_id}']").bounding_box()["x"]
    assert x("shop/frontend") < x("shop/checkout") < x("shop/payments") < x("shop/postgres")
    link = page.locator("g.link[data-source='shop/checkout'][data-target='shop/payments']")
    assert link.count() == 1
    hover = link.locator("title").text_content()
    assert "env: PAYMENTS_URL=http://payments:8080" in hover
    assert "error_line: level=error msg=\"upstream call failed\" host=payments" in hover
    page.locator("g.node[data-id='shop/payments']").dispatch_event("click")
    details = page.inner_text("#map-details")
    assert "open incident" in details and "called by shop/checkout" in details
    assert page.locator("#map-details a[href^='/incidents/']").count() == 1
    link.locator("path.hit").dispatch_event("click")
    details = page.inner_text("#map-details")
    assert "shop/checkout → shop/payments" in details
    assert "PAYMENTS_URL=http://payments:8080" in details and "error line" in details
    # Every node inside the drawing's frame: nothing cut off on a desktop.
    frame = page.locator("#map-canvas").bounding_box()
    for box in (n.bounding_box() for n in nodes.all()):
        assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"]
    take_screenshot(page, "map")
    # On a phone: the drawing scrolls within its frame, the page does not scroll sideways.
    page.set_viewport_size(PHONE)
    open_map(page, f"{daemon.url}/map")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"/map scrolls sideways on a phone: {widths}"


def test_an_incident_leads_to_its_workload_on_the_map(daemon, page):
    incidents = httpx.get(f"{daemon.url}/api/incidents?kind=rollout", timeout=5).json()
    [incident] = [i for i in incidents["incidents"] if i["deployment"] == "payments"]
    page.goto(f"{daemon.url}/incidents/{incident['id']}")
    with page.expect_navigation():
        page.locator("#map-link").click()
    assert page.url.endswith("/map?workload=shop/payments")
    page.locator("#map-canvas[data-rendered=true]").wait_for()
    focus = page.locator("g.node.focus")
    assert focus.count() == 1 and focus.get_attribute("data-id") == "shop/payments"
    near = {e.get_attribute("data-id") for e in page.locator("g.node.near").all()}
    # depth 2 by default: payments' callers and callees, and theirs.
    assert near == {"shop/checkout", "shop/postgres", "external/api.stripe.com",
                    "shop/frontend", "shop/inventory"}
    dim = {e.get_attribute("data-id") for e in page.locator("g.node.dim").all()}
    assert dim == {"shop/catalog", "shop/recommendations"}
    assert page.locator("g.link.near").count() >= 4


def test_two_hundred_workloads_are_drawn_apart_and_quickly(daemon, page):
    open_map(page, f"{daemon.url}/map")
    drawn = page.evaluate("""() => {
        // 200 workloads in five tiers, each calling three of the next tier, a few cycles back.
        const nodes = [], edges = [];
        for (let i = 0; i < 200; i++) {
            nodes.push({id: "big/w" + i, namespace: "big", name: "workload-" + i,
                        kind: "workload", state: i % 17 ? "ok" : "incident", incident: null});
        }
        for (let i = 0; i < 160; i++) {
            for (let k = 1; k <= 3; k++) {
                const t = 40 * (Math.floor(i / 40) + 1) + (i * 7 + k * 13) % 40;
                edges.push({source: "big/w" + i, target: "big/w" + t, last_seen: "",
                            evidence: [{kind: "env", detail: "X_URL=http://w" + t, seen_at: ""}]});
            }
        }
        edges.push({source: "big/w199", target: "big/w0", last_seen: "", evidence: []});
        const t0 = performance.now();
        window.serviceMap.draw({nodes: nodes, edges: edges, near: [], focus: null});
        const ms = performance.now() - t0;
        const boxes = [...document.querySelectorAll("#map-canvas g.node rect")]
            .map(r => r.getBoundingClientRect());
        let overlaps = 0;
        for (let a = 0; a < boxes.length; a++) {
            for (let b = a + 1; b < boxes.length; b++) {
                const p = boxes[a], q = boxes[b];
                if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom) {
                    overlaps++;
                }
            }
        }
        return {nodes: boxes.length, links: document.querySelectorAll("#map-canvas g.link").length,
                overlaps: overlaps, ms: ms};
    }""")
    assert drawn["nodes"] == 200 and drawn["links"] == 481
    assert drawn["overlaps"] == 0
    # Generous: the layout and the drawing take well under a second on a slow machine.
    assert drawn["ms"] < 5000, drawn
    # A chain of 200 calls is folded into bands that fit the frame's width, not 200 columns.
    folded = page.evaluate("""() => {
        const nodes = [], edges = [];
        for (let i = 0; i < 200; i++) {
            nodes.push({id: "c/w" + i, namespace: "c", name: "w" + i, kind: "workload",
                        state: "ok", incident: null});
            if (i) { edges.push({source: "c/w" + (i - 1), target: "c/w" + i, last_seen: "",
                                 evidence: []}); }
        }
        window.serviceMap.draw({nodes: nodes, edges: edges, near: [], focus: null});
        const frame = document.getElementById("map-canvas");
        const svg = frame.querySelector("svg");
        const xs = new Set([...frame.querySelectorAll("g.node")].map(
            g => g.getBoundingClientRect().left));
        return {width: Number(svg.getAttribute("width")), frame: frame.clientWidth,
                columns: xs.size};
    }""")
    assert folded["width"] <= folded["frame"] and 1 < folded["columns"] <= 8, folded


def test_an_incident_page_draws_its_causality_tree_from_its_own_server(daemon, page,
                                                                       take_screenshot):
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    incidents = httpx.get(f"{daemon.url}/api/incidents", timeout=5).json()["incidents"]
    [change] = [i for i in incidents if i["kind"] == "change"
                and i["deployment"] == "checkout"]
    answer = page.goto(f"{daemon.url}/incidents/{change['id']}")
    assert answer is not None and answer.status == 200
    tree = page.locator("#causality")
    tree.wait_for()
    # The root: payments' rollout; below it payments, then checkout, then what checkout shows.
    root = tree.locator(":scope > li")
    assert root.count() >= 1
    assert root.first.get_attribute("data-id") == "change:Deployment/shop/payments"
    assert "Deployment shop/payments rolled out revision 2" in root.first.locator(
        ":scope > .label").inner_text()
    payments = root.first.locator(":scope > ul > li[data-id='workload:shop/payments']")
    assert payments.count() == 1
    checkout = payments.locator(":scope > ul > li[data-id='workload:shop/checkout']")
    assert checkout.count() == 1
    assert checkout.locator(":scope > .score").inner_text().endswith("%")
    # Why checkout's failure follows payments': the map's evidence, behind "why".
    checkout.locator(":scope > details > summary").click()
    why = checkout.locator(":scope > details").inner_text()
    assert "shop/checkout calls shop/payments" in why
    assert "PAYMENTS_URL=http://payments:8080" in why
    assert checkout.locator(":scope > ul > li.t-signal").count() == 1
    assert checkout.locator(":scope > ul > li.t-error_group").count() >= 1
    # The tree is the page's own: nothing was fetched from elsewhere.
    assert asked and all(url.startswith(daemon.url) for url in asked), asked
    take_screenshot(page, "causality")
    # The rollout incident's page has a tree too, rooted at its own rollout.
    [rollout] = [i for i in incidents if i["kind"] == "rollout"
                 and i["deployment"] == "payments"]
    page.goto(f"{daemon.url}/incidents/{rollout['id']}")
    first = page.locator("#causality > li").first
    assert first.get_attribute("data-id") == "change:Deployment/shop/payments"
    assert first.locator(":scope > ul > li[data-id='workload:shop/payments']").count() == 1
