"""The change timeline's watches at size: 500 Deployments and 1,000 ConfigMaps.

A loopback apiserver, in a child process so that its own CPU is not counted, serves objects
cloned from the bodies recorded from a real kube-apiserver (``deployments_list.json``, and the
ConfigMap of ``configmap_watch.json``, managedFields and all), the other watched kinds empty.
Each tick's watches bring a few changes: three ConfigMaps edited, one Deployment scaled and one
rolled out. The detector's side runs here, as the daemon runs it: ``KubeClient.list_deployments``
then ``drain_deployment_changes`` and ``deployment_change``, and ``ChangeWatcher.refresh``.

Printed: requests per tick per kind (counted by the server), CPU per refresh (this process's
user+system time, worker threads included), the changes found per tick, and the memory the
watches hold (tracemalloc over a fresh client and watcher, after the first list and after the
steady ticks) with this process's resident memory growth.

    python -m bench.changes [DEPLOYMENTS CONFIGMAPS]
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import multiprocessing
import sys
import time
import tracemalloc
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from incident_detector.judge.change_diff import deployment_change
from incident_detector.model import CHANGE_KINDS
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sources.changes_watch import CHANGE_CALLS, ChangeWatcher
from incident_detector.sources.kube import DEPLOYMENTS, KubeClient, api_client_for

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kubernetes"
NAMESPACE = "bench"
STEADY_TICKS = 30
CONFIGMAP_EDITS_PER_TICK = 3
COUNTS_PATH = "/_bench/counts"


def _recorded(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["response"]["json"]


def build_objects(deployments: int, config_maps: int) -> tuple[list[dict], list[dict]]:
    dep_t = _recorded("deployments_list.json")["items"][0]
    cm_t = _recorded("configmap_watch.json")["object"]
    deps, cms = [], []
    for i in range(deployments):
        dep = copy.deepcopy(dep_t)
        dep["metadata"].update(name=f"svc-{i:04d}", namespace=NAMESPACE, uid=f"uid-d-{i}",
                               resourceVersion="1000")
        deps.append(dep)
    for i in range(config_maps):
        cm = copy.deepcopy(cm_t)
        cm.pop("kind", None), cm.pop("apiVersion", None)
        cm["metadata"].update(name=f"config-{i:04d}", namespace=NAMESPACE, uid=f"uid-c-{i}",
                              resourceVersion="1000")
        cm["data"] = {"FEATURE_X": "off", "TIMEOUT_MS": str(50 + i), "REGION": "eu-west-1",
                      "app.yaml": "server:\n  port: 8080\n  threads: 16\n" * 4}
        cms.append(cm)
    return deps, cms


def _stamp(tick: int) -> str:
    return f"2026-11-26T11:{tick // 60 % 60:02d}:{tick % 60:02d}Z"


def tick_events(kind: str, tick: int, deps: list[dict], cms: list[dict]) -> list[dict]:
    """The watch events of tick ``tick`` (1-based): what changed in the cluster since the last."""
    version = 1000 + tick * 10
    events = []
    if kind == "configmaps":
        for n in range(CONFIGMAP_EDITS_PER_TICK):
            cm = copy.deepcopy(cms[(tick * CONFIGMAP_EDITS_PER_TICK + n) % len(cms)])
            cm["data"]["TIMEOUT_MS"] = str(5000 + tick)
            cm["metadata"]["resourceVersion"] = str(version + n)
            cm["metadata"]["managedFields"][1]["time"] = _stamp(tick)
            events.append({"type": "MODIFIED", "object": cm})
    elif kind == "deployments" and deps:
        scaled = copy.deepcopy(deps[(2 * tick) % len(deps)])
        scaled["spec"]["replicas"] = 2 + tick
        scaled["metadata"]["resourceVersion"] = str(version)
        rolled = copy.deepcopy(deps[(2 * tick + 1) % len(deps)])
        rolled["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(2 + tick)
        rolled["metadata"]["generation"] = 2 + tick
        rolled["spec"]["template"]["spec"]["containers"][0]["image"] = f"payments-api:1.{tick}"
        rolled["metadata"]["resourceVersion"] = str(version + 1)
        events += [{"type": "MODIFIED", "object": scaled}, {"type": "MODIFIED", "object": rolled}]
    events.append({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion":
                                                               str(version + 9)}}})
    return events


def serve(deployments: int, config_maps: int, pipe: Any) -> None:
    """The child process: a loopback apiserver until terminated."""
    deps, cms = build_objects(deployments, config_maps)
    by_path: dict[str, tuple[str, list[dict]]] = {
        DEPLOYMENTS.path(NAMESPACE): ("deployments", deps)}
    for call in CHANGE_CALLS.values():
        by_path[call.path(NAMESPACE)] = (call.resource,
                                         cms if call.resource == "configmaps" else [])
    counts: Counter[str] = Counter()
    watches: Counter[str] = Counter()
    pages: dict[tuple[str, int, int], bytes] = {}

    def handle(request: Request) -> Response:
        if request.path == COUNTS_PATH:
            return Response(200, json.dumps(counts))
        if request.path not in by_path:
            return Response(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        resource, items = by_path[request.path]
        if request.param("watch") in ("true", "1"):
            counts[f"watch {resource}"] += 1
            watches[resource] += 1
            events = tick_events(resource, watches[resource], deps, cms)
            return Response(200, b"".join(json.dumps(e).encode() + b"\n" for e in events))
        counts[f"list {resource}"] += 1
        limit = int(request.param("limit") or 0) or max(1, len(items))
        page = int(request.param("continue") or 0)
        key = (resource, limit, page)
        if key not in pages:
            metadata = {"resourceVersion": "1000"}
            if (page + 1) * limit < len(items):
                metadata["continue"] = str(page + 1)
            pages[key] = json.dumps({"metadata": metadata,
                                     "items": items[page * limit:(page + 1) * limit]}).encode()
        return Response(200, pages[key])

    server = LocalServer(handle).start()
    pipe.send(server.url)
    while True:
        time.sleep(3600)


def _rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def one_tick(kube: KubeClient, watcher: ChangeWatcher, now: datetime) -> int:
    await kube.list_deployments(NAMESPACE)
    found = [c for old, new in kube.drain_deployment_changes(NAMESPACE)
             if (c := deployment_change(old, new, replicasets=(), now=now)) is not None]
    found += await watcher.refresh(NAMESPACE, now=now)
    return len(found)


def clients(url: str) -> tuple[KubeClient, ChangeWatcher]:
    api = api_client_for(url)
    return (KubeClient(api=api, timeout=10.0),
            ChangeWatcher(api=api, timeout=10.0, kinds=CHANGE_KINDS))


def measure(url: str) -> dict[str, Any]:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    kube, watcher = clients(url)
    cpu = time.process_time()
    baseline_changes = asyncio.run(one_tick(kube, watcher, now))
    first_cpu = time.process_time() - cpu
    rss_before = _rss_kb()
    found = []
    cpu = time.process_time()
    for _ in range(STEADY_TICKS):
        found.append(asyncio.run(one_tick(kube, watcher, now)))
    steady_cpu = (time.process_time() - cpu) / STEADY_TICKS
    rss_growth = _rss_kb() - rss_before
    return {"first_cpu_ms": first_cpu * 1000, "steady_cpu_ms": steady_cpu * 1000,
            "baseline_changes": baseline_changes, "changes_per_tick": sum(found) / len(found),
            "rss_growth_kb": rss_growth}


def held_memory(url: str) -> dict[str, float]:
    """KB traced as held (what stays allocated, not the peak) by a fresh Deployment watch and,
    apart, a fresh change watcher: after the first list, and after 10 more ticks."""
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    held: dict[str, float] = {}
    kube, watcher = clients(url)
    gc.collect()
    tracemalloc.start()
    for name, step in (("deployments", lambda: kube.list_deployments(NAMESPACE)),
                       ("changes", lambda: watcher.refresh(NAMESPACE, now=now))):
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        asyncio.run(step())
        gc.collect()
        held[f"{name}_list"] = (tracemalloc.get_traced_memory()[0] - start) / 1024
        for _ in range(10):
            asyncio.run(step())
            kube.drain_deployment_changes(NAMESPACE)
        gc.collect()
        held[f"{name}_ticks"] = (tracemalloc.get_traced_memory()[0] - start) / 1024
    tracemalloc.stop()
    return held


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    deployments, config_maps = (int(argv[0]), int(argv[1])) if len(argv) >= 2 else (500, 1000)
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(deployments, config_maps, child), daemon=True)
    server.start()
    try:
        url = parent.recv()
        started = time.monotonic()
        figures = measure(url)
        counts_after_measure = _counts(url)
        held = held_memory(url)
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.join(5)
    print(f"{deployments} Deployments, {config_maps} ConfigMaps, the other watched kinds empty; "
          f"{STEADY_TICKS} ticks of {CONFIGMAP_EDITS_PER_TICK} ConfigMap edits, 1 scale and "
          "1 rollout each")
    print(f"  first tick (lists, the baseline): {figures['first_cpu_ms']:.0f} ms CPU, "
          f"{figures['baseline_changes']} changes")
    print(f"  steady tick: {figures['steady_cpu_ms']:.1f} ms CPU per refresh (Deployments and "
          f"all eight kinds), {figures['changes_per_tick']:.1f} changes found per tick")
    print("  requests per steady tick, per kind:")
    resources = sorted({key.split(" ", 1)[1] for key in counts_after_measure})
    for resource in resources:
        lists = counts_after_measure.get(f"list {resource}", 0)
        watches = counts_after_measure.get(f"watch {resource}", 0)
        print(f"    {resource:<26} {watches / STEADY_TICKS:.1f} watch "
              f"(first tick: {lists} list page{'s' if lists != 1 else ''})")
    print(f"  memory held by the change watches ({config_maps} ConfigMaps, the rest empty): "
          f"{held['changes_list']:.0f} KB after the first list, {held['changes_ticks']:.0f} KB "
          f"after 10 more ticks; by the Deployment watch ({deployments}): "
          f"{held['deployments_list']:.0f} KB, {held['deployments_ticks']:.0f} KB (tracemalloc)")
    print(f"  resident growth over the steady ticks: {figures['rss_growth_kb']} KB")
    print(f"  ({elapsed:.1f} s)")
    return 0


def _counts(url: str) -> dict[str, int]:
    import urllib.request
    with urllib.request.urlopen(url + COUNTS_PATH, timeout=10) as answer:
        return json.loads(answer.read())


if __name__ == "__main__":
    sys.exit(main())
