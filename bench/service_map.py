"""The service map at size: 500 workloads and 2,000 links.

A namespace of 500 Deployments, each behind its Service, each naming four others: three in its
environment (``SVC_<n>_URL=http://svc-<n>:8080``) and one in a ConfigMap it references; one in
ten also names an outside host. Error lines name a callee too. The detector's side runs as the
daemon runs it: ``ChangeDesk.observe`` with the tick's Deployments and ReplicaSets, then the
map's update (``MapKeeper.update``, what ``ChangeDesk.judge`` calls each tick). The Services and
ConfigMaps come from a static stand-in for the change timeline's watches (their parsing is
bench/changes.py's business).

Printed: the first build (every link read), the update after one workload rolled out (the
namespace's configuration read again), the update after 100 new error lines, a quiet tick (no
input changed), the /api/graph answer (whole map and one workload's neighbourhood), the memory
the map holds (tracemalloc), and, when Debian's chromium is there, the page's layout and drawing
time in Chromium for 200 and 500 workloads. Then what an incident adds (judge.causality, over
the same map, four hops): the blast radius of a workload (its callers walked, every workload's
rates given), its causality tree (three causes, two of them a few calls away, symptoms and the
blast radius), the workloads it reaches for the ranking, and, per tick, the callers through
others of 100 rollouts (the change timeline's suspects of a mass rollout).

    python -m bench.service_map [WORKLOADS]
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from incident_detector.judge import causality as chains
from incident_detector.judge import service_map as graph
from incident_detector.judge.change_diff import FieldValue, ObjectState
from incident_detector.judge.correlator import Rules
from incident_detector.model import (
    Cause,
    Change,
    Container,
    FieldChange,
    Deployment,
    EnvVar,
    PodTemplate,
    ReplicaSet,
    Service,
)
from incident_detector.store.changes import ChangeLog
from incident_detector.run.changes import ChangeDesk
from incident_detector.run.live import LiveFeed
from incident_detector.store.records import Store

NAMESPACE = "bench"
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
REPEAT = 5
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
STATIC = Path(__file__).resolve().parent.parent / "incident_detector" / "web" / "static"


def _callees(i: int, n: int) -> list[int]:
    # Mostly "downstream" (a higher index), as a real call graph mostly is; some calls back.
    return [(i + step) % n for step in (1, 7, 31, 97)]


def build_world(n: int) -> tuple[list[Deployment], list[ReplicaSet], list[Service],
                                 list[ObjectState]]:
    deployments, replicasets, services, config_maps = [], [], [], []
    for i in range(n):
        name = f"svc-{i:04d}"
        calls = _callees(i, n)
        env = [EnvVar(f"SVC_{c}_URL", f"http://svc-{c:04d}:8080") for c in calls[:3]]
        env.append(EnvVar("LOG_LEVEL", "info"))
        if i % 10 == 0:
            env.append(EnvVar("PARTNER_URL", f"https://api.partner-{i % 50}.example.com/v2"))
        template = PodTemplate(containers=(Container("app", f"registry.local/{name}:1",
                                                     env=tuple(env)),),
                               config_maps=frozenset({f"{name}-config"}))
        uid = f"uid-{i}"
        deployments.append(Deployment(NAMESPACE, name, 1, replicas=2, uid=uid,
                                      pod_labels=(("app", name),)))
        replicasets.append(ReplicaSet(NAMESPACE, f"{name}-abc", name, 1, NOW - timedelta(days=1),
                                      replicas=2, ready_replicas=2, template=template,
                                      uid=f"rs-{i}", deployment_uid=uid))
        services.append(Service(NAMESPACE, name, (("app", name),)))
        config_maps.append(ObjectState("ConfigMap", NAMESPACE, f"{name}-config", fields={
            "data.UPSTREAM_HOST": FieldValue(f"svc-{calls[3]:04d}.{NAMESPACE}.svc.cluster.local",
                                             b"d"),
            "data.TIMEOUT_MS": FieldValue("2000", b"t")}))
    return deployments, replicasets, services, config_maps


class StaticWatches:
    """What the change timeline's watches would hold: the Services and ConfigMaps above."""

    def __init__(self, services: list[Service], config_maps: list[ObjectState]) -> None:
        self._services = tuple(services)
        self._config_maps = tuple(config_maps)

    async def refresh(self, namespace: str, *, now: datetime) -> tuple:
        return ()

    def services(self, namespace: str) -> tuple[Service, ...]:
        return self._services

    def states(self, kind: str, namespace: str) -> tuple[ObjectState, ...]:
        return self._config_maps if kind == "ConfigMap" else ()

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def make_desk(watches: StaticWatches) -> ChangeDesk:
    store = Store(":memory:")
    return ChangeDesk(
        changes=ChangeLog(store.connection, retention=timedelta(days=1), max_rows=1000),
        live=LiveFeed(), watcher=watches, kube=None, loki=None, rules=Rules(),
        window_seconds=600, rule_set=lambda: None, sample_lines=10,
        workload_of=lambda d: d.name, record_notice=lambda **_: True,
        is_notified=lambda _: False)


async def _no_call(source: str, what: str, thunk: Any) -> Any:
    return await thunk()


def observe(desk: ChangeDesk, deployments: list[Deployment], replicasets: list[ReplicaSet],
            now: datetime) -> None:
    asyncio.run(desk.observe(NAMESPACE, deployments=deployments, selected=[],
                             replicasets=replicasets, now=now, call=_no_call))


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def chromium_render(service_map: graph.ServiceMap, sizes: tuple[int, ...]) -> dict[int, float]:
    """The page's layout and drawing in Chromium, in ms, for the first ``size`` workloads."""
    if not CHROMIUM.exists():
        return {}
    from playwright.sync_api import sync_playwright

    script = (STATIC / "service_map.js").read_text()
    css = (STATIC / "dashboard.css").read_text()
    out: dict[int, float] = {}
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            for size in sizes:
                keep = set(sorted(service_map.nodes)[:size])
                data = {"nodes": [{"id": i, "namespace": n.namespace, "name": n.name,
                                   "kind": n.kind, "state": "ok", "incident": None}
                                  for i, n in sorted(service_map.nodes.items()) if i in keep],
                        "edges": [graph.edge_dict(e) for k, e in service_map.edges.items()
                                  if k[0] in keep and k[1] in keep], "near": [], "focus": None}
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_content(
                    f"<style>{css}</style><div class='map-layout'><div id='map-canvas' "
                    f"class='map-canvas'><svg></svg></div><aside id='map-details'></aside></div>"
                    f"<script type='application/json' id='graph-data'>"
                    f"{json.dumps(data).replace('</', '<' + chr(92) + '/')}</script>"
                    f"<script>{script}</script>")
                page.locator("#map-canvas[data-rendered=true]").wait_for()
                out[size] = float(page.locator("#map-canvas").get_attribute("data-rendered-ms"))
                page.close()
        finally:
            browser.close()
    return out


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 500
    deployments, replicasets, services, config_maps = build_world(n)
    watches = StaticWatches(services, config_maps)

    builds = []
    for _ in range(REPEAT):
        desk = make_desk(watches)
        observe(desk, deployments, replicasets, NOW)
        builds.append(timed(lambda: desk.map_keeper.update(NAMESPACE, now=NOW)))
    service_map = desk.map_keeper.service_map
    links = len(service_map.edges)
    externals = sum(1 for node in service_map.nodes.values() if node.kind == "external")

    quiet = []
    for tick in range(1, REPEAT + 1):
        now = NOW + timedelta(seconds=20 * tick)
        observe(desk, deployments, replicasets, now)
        quiet.append(timed(lambda: desk.map_keeper.update(NAMESPACE, now=now)))
    assert desk.map_keeper.service_map is service_map, "a quiet tick made a new map"

    rollouts = []
    for tick in range(REPEAT):
        now = NOW + timedelta(minutes=1, seconds=20 * tick)
        # One workload rolls out a template naming one more callee.
        index = tick * 11
        rs = replicasets[index]
        container = rs.template.containers[0]
        extra = EnvVar("NEW_URL", f"http://svc-{(index + 3) % n:04d}:8080")
        changed = replace(rs, name=f"{rs.name}-{tick}", revision=2, uid=f"{rs.uid}-{tick}",
                          template=replace(rs.template, containers=(replace(
                              container, env=container.env + (extra,)),)))
        moved = list(deployments)
        moved[index] = replace(deployments[index], revision=2)
        observe(desk, moved, [*replicasets, changed], now)
        rollouts.append(timed(lambda: desk.map_keeper.update(NAMESPACE, now=now)))
        observe(desk, deployments, replicasets, now)
        desk.map_keeper.update(NAMESPACE, now=now)

    lines = []
    for tick in range(REPEAT):
        now = NOW + timedelta(minutes=3, seconds=20 * tick)
        for k in range(100):
            i = (tick * 100 + k) % n
            desk.map_keeper.heard(NAMESPACE, f"svc-{i:04d}", [
                f'level=error msg="upstream call failed" host=svc-{_callees(i, n)[0]:04d} '
                f'status=503 request_id={k}'])
        observe(desk, deployments, replicasets, now)
        lines.append(timed(lambda: desk.map_keeper.update(NAMESPACE, now=now)))
    service_map = desk.map_keeper.service_map

    def answer(workload: str | None) -> None:
        part = graph.subgraph(service_map, workload=workload, depth=2)
        json.dumps({"nodes": [n.id for n in part.nodes.values()],
                    "edges": [graph.edge_dict(e) for e in part.edges.values()]})

    whole = statistics.median(timed(lambda: answer(None)) for _ in range(REPEAT))
    near = statistics.median(timed(lambda: answer(f"{NAMESPACE}/svc-0100"))
                             for _ in range(REPEAT))

    failing = f"{NAMESPACE}/svc-0200"
    rates = {node: (0.0, 5.0) for node in service_map.nodes}
    blasts = []
    for _ in range(REPEAT):
        blasts.append(timed(lambda: chains.blast_radius(service_map, failing, rates)))
    blast = chains.blast_radius(service_map, failing, rates)
    reached = chains.callers(service_map, failing)

    def rollout(name: str) -> Change:
        return Change(namespace=NAMESPACE, kind="Deployment", name=name, action="updated",
                      at=NOW, observed_at=NOW, fields=(FieldChange("image app", "a", "b"),),
                      revision=2, previous_revision=1)

    causes = [Cause(rollout("svc-0200"), 0.7, ("own",)), Cause(rollout("svc-0231"), 0.5, ()),
              Cause(rollout("svc-0328"), 0.4, ())]
    symptoms = [chains.Symptom("signal", "error_spike", "error spike"),
                chains.Symptom("error_group", "fp", "error group: x")]
    trees = [timed(lambda: chains.causality(failing, causes, service_map=service_map,
                                            symptoms=symptoms, blast=blast))
             for _ in range(REPEAT)]
    tree = chains.causality(failing, causes, service_map=service_map, symptoms=symptoms,
                            blast=blast)
    reaches = [timed(lambda: desk.map_keeper.reach(NAMESPACE, "svc-0200"))
               for _ in range(REPEAT)]
    mass = [rollout(f"svc-{i * 5:04d}") for i in range(100)]
    desk.map_keeper._upstream = None
    first_suspects = timed(lambda: [desk.map_keeper.callers_of(c) for c in mass])
    suspects_again = statistics.median(
        timed(lambda: [desk.map_keeper.callers_of(c) for c in mass]) for _ in range(REPEAT))

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = make_desk(watches)
    observe(held, deployments, replicasets, NOW)
    baseline = tracemalloc.get_traced_memory()[0]
    held.map_keeper.update(NAMESPACE, now=NOW)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del before

    ms = lambda seconds: f"{seconds * 1000:.1f} ms"  # noqa: E731
    print(f"workloads                         {n}")
    print(f"links                             {links} ({externals} outside hosts)")
    print(f"first build (every link read)     {ms(statistics.median(builds))} median of {REPEAT}")
    print(f"update after a rollout            {ms(statistics.median(rollouts))} median of "
          f"{REPEAT} (its template read again, the namespace merged)")
    print(f"update after 100 error lines      {ms(statistics.median(lines))} median of {REPEAT}")
    print(f"quiet tick (nothing changed)      {ms(statistics.median(quiet))} median of {REPEAT}")
    print(f"/api/graph, whole map             {ms(whole)} (subgraph and JSON)")
    print(f"/api/graph, a workload, depth 2   {ms(near)}")
    print(f"memory held by the map            {(after - baseline) / 1e6:.1f} MB (tracemalloc)")
    print(f"blast radius of a workload        {ms(statistics.median(blasts))} median of {REPEAT} "
          f"({len(reached)} callers within {chains.MAX_HOPS} hops, {len(blast)} listed)")
    print(f"its causality tree                {ms(statistics.median(trees))} median of {REPEAT} "
          f"({len(tree.nodes)} nodes, {len(tree.edges)} edges)")
    print(f"what it reaches, for the ranking  {ms(statistics.median(reaches))} median of "
          f"{REPEAT}")
    print(f"callers of 100 rollouts, per tick {ms(suspects_again)} median of {REPEAT} "
          f"(first {ms(first_suspects)}, when the map changed)")
    rendered = chromium_render(service_map, (200, n))
    for size, took in rendered.items():
        print(f"page layout and drawing, {size:>3} workloads in Chromium: {took:.0f} ms")
    if not rendered:
        print(f"page drawing in Chromium          not measured ({CHROMIUM} is missing)")


if __name__ == "__main__":
    main(sys.argv[1:])
