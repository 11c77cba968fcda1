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

``--memory`` measures resident memory as the issue about it asked: the default settings at
``POLL_INTERVAL_SECONDS=2``, with one Deployment idle, 200 idle and 200 rolling at once, the
daemon reaching the API server as in a pod (service-account token, TLS); then what each import
costs. See ``--help``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import socket
import ssl
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
from incident_detector.sources.kube_watch import LIST_PAGE_SIZE

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


def build_cluster(size: int, now: datetime, *, in_window_every: int = 50) -> SyntheticCluster:
    """``size`` Deployments, one in ``in_window_every`` with a rollout in its window (none: 0)."""
    dep_t, rs_t, pod_t = _item("deployments_list.json"), _item("replicasets_list.json"), \
        _item("pods_list.json", 0)
    deployments, replicasets, pods_by_hash, in_window = [], [], {}, []
    for i in range(size):
        name = f"svc-{i:04d}"
        recent = bool(in_window_every) and i % in_window_every == 0
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
                 poll_interval: float = POLL_INTERVAL, python: str = sys.executable,
                 command: list[str] | None = None, extra_env: dict[str, str] | None = None,
                 kubeconfig_file: bool = True) -> tuple[subprocess.Popen, Path, int, datetime]:
    """``python -m incident_detector`` watching every Deployment of NAMESPACE through a
    kubeconfig for ``kube_url``, logging JSON at debug level to ``workdir/daemon.log``:
    (process, log path, HTTP port, start time). ``command`` replaces ``-m incident_detector``
    (arguments of ``python``); ``kubeconfig_file=False`` gives no kubeconfig (``extra_env``
    then says how to reach ``kube_url``)."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": kube_url}}],
        "users": [{"name": "bench", "user": {"token": "bench"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUBERNETES_", "LOKI_", "SLACK_", "NAMESPACE", "TARGET_"))}
    if kubeconfig_file:
        env["KUBECONFIG"] = str(kubeconfig)
    else:
        env.pop("KUBECONFIG", None)
    env.update(LOKI_URL=loki_url, NAMESPACE=NAMESPACE,
               TARGET_DEPLOYMENT="*", POLL_INTERVAL_SECONDS=str(poll_interval),
               HTTP_HOST="127.0.0.1", HTTP_PORT=str(port),
               STATE_PATH=str(workdir / "state.sqlite3"), LOG_LEVEL="debug", LOG_FORMAT="json")
    env.update(extra_env or {})
    log_path = workdir / "daemon.log"
    started = datetime.now(timezone.utc)
    proc = subprocess.Popen([python, *(command or ["-m", "incident_detector"])], env=env,
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


# --------------------------------------------------------------------------------------------
# Resident memory (--memory): the daemon as a pod runs it, and what each import costs.

MEMORY_POLL_INTERVAL = 2.0  # as measured on real servers
MEMORY_WARMUP_TICKS = 3
MEMORY_TICKS = 10
MEMORY_DEPLOYMENTS = 200
MEMORY_GOAL_MB = 64

# Runs the daemon as in a pod: the service account's token and CA file (the loader's paths are
# the kubelet's, pointed at a temporary directory as tests/test_kube.py does), the API server
# over TLS. At exit it writes the modules it imported to BENCH_MODULES_FILE.
IN_CLUSTER_LAUNCHER = """
import atexit, json, os, runpy, sys
import incident_detector  # first, as `python -m incident_detector` imports it
import kubernetes.config.incluster_config as loader
loader.SERVICE_TOKEN_FILENAME = os.environ["BENCH_TOKEN_FILE"]
loader.SERVICE_CERT_FILENAME = os.environ["BENCH_CA_FILE"]

def modules():
    with open(os.environ["BENCH_MODULES_FILE"], "w") as out:
        json.dump(sorted(sys.modules), out)

atexit.register(modules)
sys.argv = ["incident_detector"]
runpy.run_module("incident_detector", run_name="__main__", alter_sys=True)
"""


def _tls_files(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the openssl command line)."""
    cert, key = workdir / "apiserver.crt", workdir / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=bench",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def _package_root() -> Path:
    import incident_detector

    return Path(incident_detector.__file__).resolve().parent.parent


def compile_package(package_root: Path | None = None) -> None:
    """Bytecode for the package, as the image's ``pip install`` writes it: a process that
    compiles its modules at start (PYTHONDONTWRITEBYTECODE, an editable checkout) holds
    megabytes more."""
    import compileall

    compileall.compile_dir(str((package_root or _package_root()) / "incident_detector"), quiet=1)


def runtime_python(venv: Path) -> str:
    """A virtualenv with the runtime dependencies only, as the image has (made once). The
    development one also holds the test extras, and two of them are picked up when present:
    pytest's pygments (httpx imports it for its command line) and playwright's greenlet
    (structlog imports it), about 1.7 MB the image does not have."""
    import tomllib

    python = venv / "bin" / "python"
    if not python.exists():
        dependencies = tomllib.loads((_package_root() / "pyproject.toml").read_text())[
            "project"]["dependencies"]
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *dependencies],
                       check=True)
    return str(python)


@dataclass
class MemoryCase:
    label: str
    cluster: SyntheticCluster
    loki: object  # the Loki handler


def memory_cases(deployments: int, now: datetime) -> list[MemoryCase]:
    from .mass_rollout import build_mass_rollout
    from .mass_rollout import loki_handler as rolling_loki

    quiet = Counter()
    one = build_cluster(1, now, in_window_every=0)
    idle = build_cluster(deployments, now, in_window_every=0)
    rolling, new_pods = build_mass_rollout(deployments, now)
    return [
        MemoryCase("1 Deployment, idle", one, loki_handler(one, quiet)),
        MemoryCase(f"{deployments} Deployments, idle", idle, loki_handler(idle, quiet)),
        MemoryCase(f"{deployments} Deployments, all rolling at once (one bad)", rolling,
                   rolling_loki(new_pods, quiet)),
    ]


def measure_memory(case: MemoryCase, *, python: str, in_cluster: bool = True,
                   package_root: Path | None = None) -> dict:
    """``package_root``: the folder holding the ``incident_detector`` to run (default: this
    one), for a comparison with another version of the package."""
    counter = Counter()
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tls = None
        extra_env: dict[str, str] = {"PYTHONPATH": str(package_root or _package_root())}
        command = None
        if in_cluster:
            cert, key = _tls_files(workdir)
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert, key)
            token = workdir / "token"
            token.write_text("bench-service-account-token")
            extra_env.update(BENCH_TOKEN_FILE=str(token), BENCH_CA_FILE=str(cert),
                             BENCH_MODULES_FILE=str(workdir / "modules.json"))
            command = ["-c", IN_CLUSTER_LAUNCHER]
        with LocalServer(kube_handler(case.cluster, counter, page_size=LIST_PAGE_SIZE),
                         tls=tls) as kube, LocalServer(case.loki) as loki:
            if in_cluster:
                port = kube.url.rsplit(":", 1)[1]
                extra_env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=port)
            proc, log_path, _, started = start_daemon(
                kube_url=kube.url, loki_url=loki.url, workdir=workdir,
                poll_interval=MEMORY_POLL_INTERVAL, python=python, command=command,
                extra_env=extra_env, kubeconfig_file=not in_cluster)
            try:
                _first_tick_seconds(log_path, started, proc)
                # Ticks are read from the daemon's log: polling /status would load what is
                # being measured.
                tick_cpu: list[float] = []
                cpu_marks: list[float] = []
                rss = threads = 0
                seen = 0
                deadline = time.monotonic() + 60 + 3 * MEMORY_TICKS * MEMORY_POLL_INTERVAL
                while time.monotonic() < deadline and proc.poll() is None \
                        and len(tick_cpu) < MEMORY_WARMUP_TICKS + MEMORY_TICKS:
                    lines = log_path.read_text().splitlines()
                    for line in lines[seen:]:
                        if '"event": "tick"' in line:
                            tick_cpu.append(json.loads(line).get("cpu_seconds") or 0.0)
                            if len(tick_cpu) in (MEMORY_WARMUP_TICKS,
                                                 MEMORY_WARMUP_TICKS + MEMORY_TICKS):
                                cpu_marks.append(_proc_cpu_seconds(proc.pid))
                    seen = len(lines)
                    if len(tick_cpu) >= MEMORY_WARMUP_TICKS:
                        rss = max(rss, _proc_kib(proc.pid, "VmRSS"))
                        threads = max(threads, _proc_kib(proc.pid, "Threads"))
                    time.sleep(0.1)
                hwm = _proc_kib(proc.pid, "VmHWM")
                degraded = [json.loads(line).get("problems") for line in
                            log_path.read_text().splitlines()[-200:]
                            if '"event": "tick"' in line and '"degraded": true' in line]
            finally:
                proc.terminate()
                proc.wait(timeout=15)
            if len(cpu_marks) < 2:
                raise RuntimeError(f"too few ticks: {log_path.read_text()[-3000:]}")
            modules_file = workdir / "modules.json"
            modules = json.loads(modules_file.read_text()) if modules_file.exists() else None
    steady = sorted(tick_cpu[MEMORY_WARMUP_TICKS:])
    return {"case": case.label, "rss_mb": rss / 1024, "hwm_mb": hwm / 1024, "threads": threads,
            "cpu_ms_per_tick": 1000 * (cpu_marks[1] - cpu_marks[0]) / MEMORY_TICKS,
            "tick_cpu_ms_median": 1000 * steady[len(steady) // 2],
            "degraded": bool(degraded), "modules": modules}


# What each import costs, in the order the daemon imports them: (label, modules, deferred).
# "deferred": not imported with the default settings, only by the feature that needs it.
IMPORT_STEPS: list[tuple[str, tuple[str, ...], str]] = [
    ("asyncio, ssl (the event loop, TLS)", ("asyncio", "ssl"), ""),
    ("sqlite3 (the state file)", ("sqlite3",), ""),
    ("pydantic", ("pydantic",), ""),
    ("pydantic-settings", ("pydantic_settings",), ""),
    ("structlog", ("structlog",), ""),
    ("urllib3", ("urllib3",), ""),
    ("kubernetes: ApiClient, in-cluster loader", ("incident_detector.kubernetes_parts",
                                                  "kubernetes.client.api_client",
                                                  "kubernetes.config.incluster_config"), ""),
    ("httpx", ("httpx",), ""),
    ("starlette", ("starlette.applications", "starlette.routing", "starlette.responses"), ""),
    ("uvicorn", ("uvicorn",), ""),
    ("prometheus_client", ("prometheus_client",), ""),
    ("incident_detector: model, config", ("incident_detector.model",
                                          "incident_detector.config"), ""),
    ("incident_detector: judge/", ("incident_detector.judge.correlator",
                                   "incident_detector.judge.causes",
                                   "incident_detector.judge.changes"), ""),
    ("incident_detector: sources/", ("incident_detector.sources.kube",
                                     "incident_detector.sources.loki",
                                     "incident_detector.sources.changes_watch"), ""),
    ("incident_detector: run/, notify/", ("incident_detector.run.daemon",
                                          "incident_detector.run.changes",
                                          "incident_detector.run.triage"), ""),
    ("incident_detector: web/, main", ("incident_detector.main", "incident_detector.web.api",
                                       "incident_detector.web.dashboard",
                                       "incident_detector.web.changes"), ""),
    ("kubeconfig loader (requests, oauthlib, yaml)", ("kubernetes.config.kube_config",),
     "only without a service account"),
    ("slack_sdk", ("slack_sdk",), "only with SLACK_BOT_TOKEN or SLACK_SIGNING_SECRET"),
    ("jinja2 (dashboard templates)", ("starlette.templating",), "from the first dashboard page"),
    ("yaml", ("yaml",), "only with RULES_FILE, LLM_PROMPT_FILE or a kubeconfig"),
    ("grpc, protobuf (the grpc extra)", ("grpc", "google.protobuf"),
     "only with CHANGE_GRPC_PORT"),
    ("act/ (remediation, Argo CD)", ("incident_detector.act.remediation",
                                     "incident_detector.act.argocd"),
     "only with REMEDIATION_MODE"),
    ("LLM analysis", ("incident_detector.run.analysis", "incident_detector.sources.llm"),
     "only with LLM_BASE_URL"),
]
# For comparison: the whole package, as `import kubernetes.client` loaded it before.
WHOLE_KUBERNETES = ("kubernetes, the whole package", ("kubernetes",))

_IMPORT_PROBE = """
import gc, importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
steps = json.loads(sys.argv[1])
out = [rss()]
for modules in steps:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    gc.collect()
    out.append(rss())
print(json.dumps(out))
"""


def _import_rss(python: str, steps: list[tuple[str, ...]]) -> list[int]:
    """RSS (KiB) of a fresh ``python`` before and after each step, imported one after another."""
    env = dict(os.environ, PYTHONPATH=str(_package_root()))
    done = subprocess.run([python, "-c", _IMPORT_PROBE, json.dumps(steps)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def import_costs(python: str) -> list[dict]:
    steps = [modules for _, modules, _ in IMPORT_STEPS]
    in_order = _import_rss(python, steps)
    rows = [{"label": "the bare interpreter", "alone": None, "in_order": None,
             "total": in_order[0] / 1024, "when": ""}]
    for i, (label, modules, when) in enumerate(IMPORT_STEPS + [(*WHOLE_KUBERNETES, "before")]):
        bare, after = _import_rss(python, [modules])
        if after == bare and when:
            when = "not installed"
        rows.append({"label": label, "alone": (after - bare) / 1024,
                     "in_order": (in_order[i + 1] - in_order[i]) / 1024
                     if i < len(IMPORT_STEPS) else None,
                     "total": in_order[i + 1] / 1024 if i < len(IMPORT_STEPS) else None,
                     "when": when, "modules": modules})
    return rows


def memory_report(rows: list[dict], imports: list[dict], *, python: str, in_cluster: bool) -> str:
    arenas = os.environ.get("MALLOC_ARENA_MAX", "unset")
    how = ("in a pod's way: the service account's token and CA, the API server over TLS"
           if in_cluster else "through a kubeconfig (its loader imports requests and oauthlib)")
    lines = [f"Resident memory of `python -m incident_detector`, default settings, "
             f"POLL_INTERVAL_SECONDS={MEMORY_POLL_INTERVAL:g}, {how}; {MEMORY_TICKS} ticks after "
             f"{MEMORY_WARMUP_TICKS} (MALLOC_ARENA_MAX={arenas})",
             f"{'case':<50} {'RSS MB':>7} {'peak MB':>8} {'threads':>7} {'cpu ms/tick':>11} "
             f"{'tick cpu ms':>11}"]
    for r in rows:
        over = r["hwm_mb"] > MEMORY_GOAL_MB
        lines.append(f"{r['case']:<50} {r['rss_mb']:>7.1f} {r['hwm_mb']:>8.1f} {r['threads']:>7} "
                     f"{r['cpu_ms_per_tick']:>11.1f} {r['tick_cpu_ms_median']:>11.1f}"
                     + ("  OVER GOAL" if over else "") + ("  DEGRADED" if r["degraded"] else ""))
    lines.append(f"(RSS: the most during the steady ticks; peak: VmHWM, start-up included; "
                 f"goal <= {MEMORY_GOAL_MB} MB)")
    loaded = next((set(r["modules"]) for r in rows if r.get("modules")), None)
    lines += ["", f"What each import costs, resident MB ({python}): alone in a fresh interpreter, "
                  f"and added in the daemon's order",
              f"{'import':<46} {'alone':>6} {'in order':>8} {'total':>6}  imported"]
    for r in imports:
        if r["alone"] is None:
            lines.append(f"{r['label']:<46} {'':>6} {'':>8} {r['total']:>6.1f}")
            continue
        if r["when"] == "before":
            status = "no (only its parts above)"
        elif r["when"]:
            status = r["when"]
        else:
            status = "yes"
        if loaded is not None and r["when"] != "before":
            seen = any(m in loaded for m in r["modules"])
            if seen != (not r["when"]):
                status += f"  (the daemon {'did' if seen else 'did not'} import it)"
        in_order = f"{r['in_order']:>8.1f}" if r["in_order"] is not None else f"{'':>8}"
        total = f"{r['total']:>6.1f}" if r["total"] is not None else f"{'':>6}"
        lines.append(f"{r['label']:<46} {r['alone']:>6.1f} {in_order} {total}  {status}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.footprint",
        description="Footprint of a real detector process: start-up, CPU, memory and requests "
                    "per tick for each size (default), or its resident memory (--memory).")
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 100, 500, 2000],
                        help="numbers of Deployments (default: 1 100 500 2000)")
    parser.add_argument("--memory", action="store_true",
                        help="resident memory with the default settings at "
                             f"POLL_INTERVAL_SECONDS={MEMORY_POLL_INTERVAL:g}: one Deployment "
                             "idle, DEPLOYMENTS idle, DEPLOYMENTS rolling at once; and what each "
                             "import costs")
    parser.add_argument("--deployments", type=int, default=MEMORY_DEPLOYMENTS,
                        help=f"Deployments for --memory (default {MEMORY_DEPLOYMENTS})")
    parser.add_argument("--kubeconfig", action="store_true",
                        help="--memory through a kubeconfig instead of a pod's service account")
    parser.add_argument("--python", help="the interpreter that runs the daemon for --memory "
                                         "(default: this one)")
    parser.add_argument("--runtime-venv", type=Path, metavar="DIR",
                        help="for --memory, run the daemon from a virtualenv in DIR holding the "
                             "runtime dependencies only, as the image does (made if missing)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.memory:
        print(report([measure(size) for size in args.sizes]))
        return 0
    python = args.python or (runtime_python(args.runtime_venv) if args.runtime_venv
                             else sys.executable)
    compile_package()
    cases = memory_cases(args.deployments, datetime.now(timezone.utc))
    rows = [measure_memory(case, python=python, in_cluster=not args.kubeconfig) for case in cases]
    print(memory_report(rows, import_costs(python), python=python,
                        in_cluster=not args.kubeconfig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
