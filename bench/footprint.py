"""Footprint of a real detector process watching many Deployments.

For each size (1, 100, 500, 2000 Deployments; three ReplicaSets each; two pods per current
revision; one Deployment in fifty with a rollout inside its window) a loopback apiserver serves
objects cloned from the bodies recorded from a real kube-apiserver (managedFields and all), and a
loopback Loki answers the error-count query. ``python -m incident_detector`` runs against them
with ``TARGET_DEPLOYMENT=*`` and the figures are read from outside the process:

- start-up: from the process start to the first completed tick (the daemon's first ``tick``
  log line, so that measuring does not slow the start);
- CPU per tick: the process's user+system time over steady ticks (``/proc/PID/stat``), divided by
  the number of ticks; this includes everything the process does between ticks;
- resident memory: ``VmRSS`` during the steady ticks (max), and ``VmHWM`` (the peak ever);
- HTTP requests per tick: counted by the loopback servers over the steady ticks.

    python -m bench.footprint [SIZES...]
"""

from __future__ import annotations

import copy
import gc
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from threading import Lock

import httpx

from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sources.changes_watch import CHANGE_CALLS
from incident_detector.sources.kube import LIST_PAGE_SIZE

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kubernetes"
NAMESPACE = "bench"
STEADY_TICKS = 20
WARMUP_TICKS = 5
POLL_INTERVAL = 0.25


def _item(name: str, index: int = 0) -> dict:
    return json.loads((FIXTURES / name).read_text())["response"]["json"]["items"][index]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SyntheticCluster:
    deployments: list[dict]
    replicasets: list[dict]
    pods_by_hash: dict[str, list[dict]]
    workloads_in_window: list[tuple[str, str]]  # (workload, a pod of its new revision)

    def list_bytes(self) -> int:
        return len(json.dumps(self.deployments)) + len(json.dumps(self.replicasets))


def build_cluster(size: int, now: datetime) -> SyntheticCluster:
    dep_t, rs_t, pod_t = _item("deployments_list.json"), _item("replicasets_list.json"), \
        _item("pods_list.json", 0)
    deployments, replicasets, pods_by_hash, in_window = [], [], {}, []
    for i in range(size):
        name = f"svc-{i:04d}"
        recent = i % 50 == 0
        dep = copy.deepcopy(dep_t)
        dep["metadata"].update(name=name, namespace=NAMESPACE, uid=f"uid-d-{i}",
                               labels={"app": name},
                               annotations={"deployment.kubernetes.io/revision": "3"})
        dep["spec"]["selector"] = {"matchLabels": {"app": name}}
        dep["spec"]["template"]["metadata"]["labels"] = {"app": name}
        deployments.append(dep)
        for revision in (1, 2, 3):
            pod_hash = f"{i:04d}{revision}abcde"[:10]
            created = now - (timedelta(seconds=60) if recent and revision == 3
                             else timedelta(days=4 - revision))
            replicasets.append(replicaset_item(rs_t, deployment=name, index=i, revision=revision,
                                               pod_hash=pod_hash, created=created))
            if revision == 3:
                pods = running_pods(pod_t, deployment=name, index=i, revision=revision,
                                    pod_hash=pod_hash, started=now)
                pods_by_hash[pod_hash] = pods
                if recent:
                    in_window.append((name, pods[0]["metadata"]["name"]))

    return SyntheticCluster(deployments, replicasets, pods_by_hash, in_window)


def replicaset_item(template: dict, *, deployment: str, index: int, revision: int, pod_hash: str,
                    created: datetime) -> dict:
    """A ReplicaSet cloned from the recorded one: revision ``revision`` of Deployment ``index``."""
    rs = copy.deepcopy(template)
    rs["metadata"].update(
        name=f"{deployment}-{pod_hash}", namespace=NAMESPACE, uid=f"uid-r-{index}-{revision}",
        creationTimestamp=_stamp(created),
        labels={"app": deployment, "pod-template-hash": pod_hash},
        annotations={"deployment.kubernetes.io/revision": str(revision)},
        ownerReferences=[{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                          "uid": f"uid-d-{index}", "controller": True,
                          "blockOwnerDeletion": True}])
    return rs


def running_pods(template: dict, *, deployment: str, index: int, revision: int, pod_hash: str,
                 started: datetime, count: int = 2) -> list[dict]:
    """``count`` running pods of that ReplicaSet, cloned from the recorded pod."""
    pods = []
    for p in range(count):
        pod = copy.deepcopy(template)
        pod["metadata"].update(
            name=f"{deployment}-{pod_hash}-p{p}xyz", namespace=NAMESPACE,
            labels={"app": deployment, "pod-template-hash": pod_hash},
            ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                              "name": f"{deployment}-{pod_hash}",
                              "uid": f"uid-r-{index}-{revision}", "controller": True,
                              "blockOwnerDeletion": True}])
        for status in pod["status"].get("containerStatuses", []):
            status["state"] = {"running": {"startedAt": _stamp(started)}}
            status["restartCount"] = 0
            status.pop("lastState", None)
        pod["status"]["phase"] = "Running"
        pods.append(pod)
    return pods


def list_page(kind: str, items: list[dict], request: Request, cache: dict) -> bytes:
    """One page of a list, with limit/continue as kube-apiserver does them (pages are cached:
    the fake must not be what the benchmark measures)."""
    limit = int(request.param("limit") or 0) or len(items) or 1
    page = int(request.param("continue") or 0)
    key = (kind, limit, page)
    if key not in cache:
        metadata = {"resourceVersion": "1000"}
        if (page + 1) * limit < len(items):
            metadata["continue"] = str(page + 1)
        cache[key] = json.dumps({"kind": kind, "apiVersion": "apps/v1", "metadata": metadata,
                                 "items": items[page * limit:(page + 1) * limit]}).encode()
    return cache[key]


class Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.bytes_out = 0
        self._lock = Lock()

    def add(self, key: str, size: int) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            self.bytes_out += size

    def snapshot(self) -> tuple[dict[str, int], int]:
        with self._lock:
            return dict(self.counts), self.bytes_out


def kube_handler(cluster: SyntheticCluster, counter: Counter, *, page_size: int | None = None):
    pages: dict = {}
    if page_size:
        # Encode every page up front: the fake's own work must not be part of the measurement.
        for kind, items in (("DeploymentList", cluster.deployments),
                            ("ReplicaSetList", cluster.replicasets)):
            for page in range(max(1, -(-len(items) // page_size))):
                query = {"limit": [str(page_size)]} | ({"continue": [str(page)]} if page else {})
                list_page(kind, items, Request("GET", "/", query, {}, b""), pages)

    def handle(request: Request) -> Response:
        path = request.path
        watching = request.param("watch", "false").lower() in ("true", "1")
        for resource, kind, items in (("deployments", "DeploymentList", cluster.deployments),
                                      ("replicasets", "ReplicaSetList", cluster.replicasets)):
            if path == f"/apis/apps/v1/namespaces/{NAMESPACE}/{resource}":
                if watching:
                    kind = "Deployment" if resource == "deployments" else "ReplicaSet"
                    out = json.dumps({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": "apps/v1",
                        "metadata": {"resourceVersion": "1000"}}}).encode() + b"\n"
                    counter.add(f"watch {resource}", len(out))
                    return Response(200, out)
                body = list_page(kind, items, request, pages)
                counter.add(f"list {resource}", len(body))
                return Response(200, body)
        if path == f"/api/v1/namespaces/{NAMESPACE}/pods":
            if watching:
                out = json.dumps({"type": "BOOKMARK", "object": {
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1000"}}}).encode() + b"\n"
                counter.add("watch pods", len(out))
                return Response(200, out)
            selector = request.param("labelSelector", "") or ""
            hashes = selector[selector.find("(") + 1:selector.rfind(")")].split(",") \
                if " in (" in selector else list(cluster.pods_by_hash)
            items = [p for h in hashes for p in cluster.pods_by_hash.get(h.strip(), [])]
            body = list_page("PodList", items, request, {})
            counter.add("list pods", len(body))
            return Response(200, body)
        for kind, call in CHANGE_CALLS.items():
            # The change timeline's other kinds: none in this namespace (what it costs to watch
            # them is bench.changes'), but each is listed once and then watched every tick.
            if path == call.path(NAMESPACE):
                if watching:
                    out = json.dumps({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": call.version if not call.group
                        else f"{call.group}/{call.version}",
                        "metadata": {"resourceVersion": "1000"}}}).encode() + b"\n"
                    counter.add(f"watch {call.resource}", len(out))
                    return Response(200, out)
                body = list_page(call.list_kind, [], request, {})
                counter.add(f"list {call.resource}", len(body))
                return Response(200, body)
        if path.endswith("/events"):
            if request.method == "POST":
                counter.add("create event", 0)
                return Response(201, request.body)
            counter.add("list events", 0)
            return Response(200, {"kind": "EventList", "apiVersion": "events.k8s.io/v1",
                                  "metadata": {"resourceVersion": "1000"}, "items": []})
        counter.add("other", 0)
        return Response(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404, "message": path})
    return handle


def loki_handler(cluster: SyntheticCluster, counter: Counter):
    def handle(request: Request) -> Response:
        now = time.time()
        if request.path == "/loki/api/v1/query_range":
            # The tick's read of error lines: a few error lines of the rolling pods.
            counter.add("loki log", 0)
            result = [{"stream": {"app": workload, "pod": pod},
                       "values": [[str(int(now * 1e9) - k * 1_000_000_000),
                                   f'level=error msg="request failed" id={k}']
                                  for k in range(5)]}
                      for workload, pod in cluster.workloads_in_window]
            return Response(200, {"status": "success",
                                  "data": {"resultType": "streams", "result": result}})
        if request.path != "/loki/api/v1/query":
            counter.add("loki other", 0)
            return Response(404, "not found", "text/plain")
        # One series per window the query names (label_replace(..., "window", NAME, ...)).
        query = request.param("query") or ""
        windows = re.findall(r'"window", "([^"]+)"', query) or [None]
        result = [{"metric": {"app": workload, "pod": pod,
                              **({"window": window} if window else {})}, "value": [now, "1"]}
                  for window in dict.fromkeys(windows)
                  for workload, pod in cluster.workloads_in_window]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        counter.add("loki metric", 0)
        return Response(200, body)
    return handle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_tick_seconds(log_path: Path, started: datetime, proc: subprocess.Popen) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text().splitlines():
            if '"event": "tick"' in line:
                finished = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
                return (finished - started).total_seconds()
        time.sleep(0.05)
    raise RuntimeError(f"no tick within a minute: {log_path.read_text()[-2000:]}")


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def start_daemon(*, kube_url: str, loki_url: str, workdir: Path,
                 poll_interval: float = POLL_INTERVAL,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path, int, datetime]:
    """``python -m incident_detector`` watching every Deployment of NAMESPACE through a
    kubeconfig for ``kube_url``, logging JSON at debug level to ``workdir/daemon.log``:
    (process, log path, HTTP port, start time)."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": kube_url}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUBERNETES_", "LOKI_", "SLACK_", "NAMESPACE", "TARGET_"))}
    env.update(KUBECONFIG=str(kubeconfig), LOKI_URL=loki_url, NAMESPACE=NAMESPACE,
               TARGET_DEPLOYMENT="*", POLL_INTERVAL_SECONDS=str(poll_interval),
               HTTP_HOST="127.0.0.1", HTTP_PORT=str(port),
               STATE_PATH=str(workdir / "state.sqlite3"), LOG_LEVEL="debug", LOG_FORMAT="json")
    env.update(extra_env or {})
    log_path = workdir / "daemon.log"
    started = datetime.now(timezone.utc)
    proc = subprocess.Popen([sys.executable, "-m", "incident_detector"], env=env,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    return proc, log_path, port, started


def measure(size: int) -> dict:
    cluster = build_cluster(size, datetime.now(timezone.utc))
    counter = Counter()
    # The benchmark's own heap (the cloned objects) is large: keep its garbage collector from
    # pausing the loopback servers while the daemon is measured.
    gc.collect()
    gc.freeze()
    with LocalServer(kube_handler(cluster, counter, page_size=LIST_PAGE_SIZE)) as kube, \
            LocalServer(loki_handler(cluster, counter)) as loki, \
            tempfile.TemporaryDirectory() as tmp:
        proc, log_path, port, started = start_daemon(kube_url=kube.url, loki_url=loki.url,
                                                     workdir=Path(tmp))
        status_url = f"http://127.0.0.1:{port}/status"
        try:
            # Start-up is read from the daemon's own log (the timestamp of its first "tick"
            # line), not by polling /status: polling while it starts would slow what it measures.
            startup = _first_tick_seconds(log_path, started, proc)
            marks: dict[int, tuple[float, dict[str, int]]] = {}
            rss_steady = 0
            tick_cpu: list[float] = []
            deadline = time.monotonic() + 120
            with httpx.Client(timeout=5) as client:
                while time.monotonic() < deadline:
                    try:
                        status = client.get(status_url).json()
                    except httpx.TransportError:
                        time.sleep(0.01)
                        continue
                    ticks = status["ticks"]
                    if ticks >= WARMUP_TICKS:
                        rss_steady = max(rss_steady, _proc_kib(proc.pid, "VmRSS"))
                        if status["last_tick"] and status["last_tick"]["cpu_seconds"] is not None:
                            tick_cpu.append(status["last_tick"]["cpu_seconds"])
                    for mark in (WARMUP_TICKS, WARMUP_TICKS + STEADY_TICKS):
                        if ticks >= mark and mark not in marks:
                            marks[mark] = (_proc_cpu_seconds(proc.pid), counter.snapshot()[0])
                    if len(marks) == 2:
                        break
                    time.sleep(0.02)
                degraded = status["last_tick"]["degraded"] if status.get("last_tick") else None
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        (cpu0, req0), (cpu1, req1) = marks[WARMUP_TICKS], marks[WARMUP_TICKS + STEADY_TICKS]
        per_tick = {k: (req1.get(k, 0) - req0.get(k, 0)) / STEADY_TICKS for k in req1}
        return {
            "deployments": size, "replicasets": 3 * size,
            "rollouts_in_window": len(cluster.workloads_in_window),
            "startup_seconds": startup,
            "cpu_ms_per_tick": 1000 * (cpu1 - cpu0) / STEADY_TICKS,
            "tick_cpu_ms_median": 1000 * sorted(tick_cpu)[len(tick_cpu) // 2] if tick_cpu else None,
            "rss_mb_steady": rss_steady / 1024,
            "requests_per_tick": {k: v for k, v in sorted(per_tick.items()) if v},
            "degraded": degraded,
            "list_bytes": cluster.list_bytes(),
        }


def report(rows: list[dict]) -> str:
    lines = [f"{'deployments':>11} {'replicasets':>11} {'startup s':>9} {'cpu ms/tick':>11} "
             f"{'tick cpu ms':>11} {'rss MB':>7}  requests per tick (steady)"]
    for r in rows:
        requests = ", ".join(f"{k}: {v:g}" for k, v in r["requests_per_tick"].items())
        total = sum(r["requests_per_tick"].values())
        lines.append(f"{r['deployments']:>11} {r['replicasets']:>11} {r['startup_seconds']:>9.2f} "
                     f"{r['cpu_ms_per_tick']:>11.1f} {r['tick_cpu_ms_median'] or 0:>11.1f} "
                     f"{r['rss_mb_steady']:>7.1f}  {total:g} ({requests})"
                     + ("  DEGRADED" if r["degraded"] else ""))
    lines.append(f"(poll interval {POLL_INTERVAL} s; {STEADY_TICKS} steady ticks after "
                 f"{WARMUP_TICKS} warm-up ticks; lists of the recorded shapes, managedFields included)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sizes = [int(a) for a in argv] or [1, 100, 500, 2000]
    print(report([measure(size) for size in sizes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
