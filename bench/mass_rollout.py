"""A mass rollout: 500 Deployments of one namespace roll at once (a base-image bump, an umbrella
chart), one of them bad. A real detector process watches them all.

The loopback apiserver serves objects cloned from the bodies recorded from a real kube-apiserver
(managedFields and all): each Deployment has an old ReplicaSet (revision 1) and a new one
(revision 2) created within the last minute, two running pods of the new one, and a Progressing
condition naming it. The loopback Loki answers the error-count query with a few error lines for
every new pod and a spike for the bad one's, the baseline query with a few lines per workload.

Printed, against the goals of the issue that asked for this case:

- Loki queries per namespace per tick (count + baseline; the example lines sampled to describe
  an incident are counted apart): the most in any tick, goal <= 2;
- Kubernetes API requests per tick of the detection (Deployments, ReplicaSets, pods; Events
  apart), the most in any tick, goal <= 4; the change timeline's watches of its other kinds
  (one per kind per tick) are counted apart;
- CPU per tick: the process's user+system time per tick over the steady ticks, and the median
  tick's own CPU time, goal <= 50 ms;
- resident memory during the run (VmRSS, max) and at its peak (VmHWM), goal <= 64 MB;
- the incidents printed: the bad Deployment and no other.

    python -m bench.mass_rollout [DEPLOYMENTS]
"""

from __future__ import annotations

import copy
import gc
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote

from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sources.kube import LIST_PAGE_SIZE

from .footprint import (
    NAMESPACE,
    Counter,
    SyntheticCluster,
    _first_tick_seconds,
    _item,
    _proc_cpu_seconds,
    _proc_kib,
    _stamp,
    kube_handler,
    replicaset_item,
    running_pods,
    start_daemon,
)

TICKS = 30
WARMUP_TICKS = 3
POLL_INTERVAL = 0.25
BAD = 137  # the index of the bad Deployment
GOALS = {"loki": 2, "triage": 2, "kube": 4, "cpu_ms": 50, "rss_mb": 64}


class TimedCounter(Counter):
    """Counts requests as ``Counter`` does, and keeps when each came, to attribute it to a tick."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []

    def add(self, key: str, size: int) -> None:
        super().add(key, size)
        self.times.append((time.time(), key))

    def between(self, start: float, end: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for at, key in list(self.times):
            if start <= at <= end:
                counts[key] = counts.get(key, 0) + 1
        return counts


def build_mass_rollout(size: int, now: datetime) -> tuple[SyntheticCluster, dict[str, list[str]]]:
    """Every Deployment at revision 2, its ReplicaSet created within the last minute."""
    dep_t, rs_t, pod_t = _item("deployments_list.json"), _item("replicasets_list.json"), \
        _item("pods_list.json", 0)
    deployments, replicasets, pods_by_hash, new_pods = [], [], {}, {}
    for i in range(size):
        name = f"svc-{i:04d}"
        started = now - timedelta(seconds=60) + timedelta(seconds=50 * i / size)
        dep = copy.deepcopy(dep_t)
        dep["metadata"].update(name=name, namespace=NAMESPACE, uid=f"uid-d-{i}",
                               creationTimestamp=_stamp(now - timedelta(days=5)),
                               labels={"app": name},
                               annotations={"deployment.kubernetes.io/revision": "2"})
        dep["spec"]["selector"] = {"matchLabels": {"app": name}}
        dep["spec"]["template"]["metadata"]["labels"] = {"app": name}
        for revision in (1, 2):
            pod_hash = f"{i:04d}{revision}abcde"[:10]
            created = started if revision == 2 else now - timedelta(days=4)
            replicasets.append(replicaset_item(rs_t, deployment=name, index=i, revision=revision,
                                               pod_hash=pod_hash, created=created))
            if revision == 2:
                for condition in dep["status"].get("conditions", []):
                    if condition["type"] == "Progressing":
                        condition.update(message=f'ReplicaSet "{name}-{pod_hash}" is progressing.',
                                         lastUpdateTime=_stamp(started))
                pods = running_pods(pod_t, deployment=name, index=i, revision=revision,
                                    pod_hash=pod_hash, started=started)
                pods_by_hash[pod_hash] = pods
                new_pods[name] = [p["metadata"]["name"] for p in pods]
        deployments.append(dep)
    return SyntheticCluster(deployments, replicasets, pods_by_hash, []), new_pods


def loki_handler(new_pods: dict[str, list[str]], counter: Counter):
    """Loki 3: a couple of error lines per new pod, 40 for each of the bad one's pods."""
    bad = f"svc-{BAD:04d}"

    def handle(request: Request) -> Response:
        now = time.time()
        if request.path == "/loki/api/v1/status/buildinfo":
            counter.add("loki buildinfo", 0)
            return Response(200, {"version": "3.5.0", "revision": "bench"})
        if request.path == "/loki/api/v1/query_range":
            # The triage's sample names no workload (every Deployment is watched); an incident's
            # example lines name the bad one.
            query = unquote(request.param("query") or "")
            counter.add("loki sample" if f'"{bad}"' in query else "loki triage", 0)
            values = [[str(int(now * 1e9) - k * 1_000_000_000),
                       'level=error msg="charge failed" err="NullPointerException"']
                      for k in range(20)]
            result = [{"stream": {"app": bad, "pod": pod, "detected_level": "error"},
                       "values": values} for pod in new_pods[bad]]
            return Response(200, {"status": "success",
                                  "data": {"resultType": "streams", "result": result}})
        if request.path != "/loki/api/v1/query":
            counter.add("loki other", 0)
            return Response(404, "not found", "text/plain")
        query = unquote(request.param("query") or "")
        if request.param("time"):  # a baseline: errors per workload before the rollouts
            counter.add("loki baseline", 0)
            result = [{"metric": {"app": app, "detected_level": "error"}, "value": [now, "3"]}
                      for app in new_pods if '=~".+"' in query or f"{app}|" in query
                      or f'{app}"' in query]
        else:
            counter.add("loki count", 0)
            result = [{"metric": {"app": app, "pod": pod, "detected_level": "error"},
                       "value": [now, "40" if app == bad else "1"]}
                      for app, pods in new_pods.items() for pod in pods]
        return Response(200, {"status": "success",
                              "data": {"resultType": "vector", "result": result}})
    return handle


def measure(size: int) -> dict:
    cluster, new_pods = build_mass_rollout(size, datetime.now(timezone.utc))
    counter = TimedCounter()
    gc.collect()
    gc.freeze()
    with LocalServer(kube_handler(cluster, counter, page_size=LIST_PAGE_SIZE)) as kube, \
            LocalServer(loki_handler(new_pods, counter)) as loki, \
            tempfile.TemporaryDirectory() as tmp:
        proc, log_path, _, started = start_daemon(kube_url=kube.url, loki_url=loki.url,
                                                  workdir=Path(tmp), poll_interval=POLL_INTERVAL)
        try:
            startup = _first_tick_seconds(log_path, started, proc)
            # Ticks are read from the daemon's own log ("tick" lines, with the tick's CPU time):
            # polling /status, which lists every rollout, would load what is being measured.
            ticks: list[tuple[float, float]] = []  # (start, end), unix seconds
            tick_cpu: list[float] = []
            rss = 0
            seen_lines = 0
            cpu_marks: dict[int, float] = {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(ticks) < TICKS and proc.poll() is None:
                lines = log_path.read_text().splitlines()
                for line in lines[seen_lines:]:
                    if '"event": "tick"' not in line:
                        continue
                    tick = json.loads(line)
                    end = datetime.fromisoformat(tick["timestamp"].replace("Z", "+00:00"))
                    ticks.append((end.timestamp() - tick["duration_seconds"] - 0.001,
                                  end.timestamp() + 0.001))
                    tick_cpu.append(tick.get("cpu_seconds") or 0.0)
                    if len(ticks) in (WARMUP_TICKS, TICKS):
                        cpu_marks[len(ticks)] = _proc_cpu_seconds(proc.pid)
                seen_lines = len(lines)
                rss = max(rss, _proc_kib(proc.pid, "VmRSS"))
                time.sleep(0.02)
            hwm = _proc_kib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        per_tick = [counter.between(start, end) for start, end in ticks]
        incidents = [json.loads(line) for line in log_path.read_text().splitlines()
                     if line.startswith("{") and '"event":"incident"' in line]

    def most(keys: tuple[str, ...], ticks: list[dict[str, int]] = per_tick) -> int:
        return max((sum(t.get(k, 0) for k in keys) for t in ticks), default=0)

    # The detection's reads (Deployments, ReplicaSets, pods) apart from the change timeline's
    # watches of its other kinds (one per kind, empty here), which the goal did not count.
    detection = ("deployments", "replicasets", "pods")
    kube_keys = tuple({k for t in per_tick for k in t
                       if not k.startswith("loki") and "event" not in k
                       and k.split()[-1] in detection})
    change_keys = tuple({k for t in per_tick for k in t
                         if k.startswith(("list ", "watch ")) and k.split()[-1] not in detection})
    (t0, c0), (t1, c1) = sorted(cpu_marks.items())[:2] if len(cpu_marks) >= 2 else ((0, 0), (1, 0))
    tick_cpu_sorted = sorted(tick_cpu[1:])  # the first tick lists everything: start-up
    return {
        "deployments": size,
        "ticks": len(per_tick),
        "startup_seconds": startup,
        "loki_per_tick_max": most(("loki count", "loki baseline")),
        "loki_baselines_total": sum(t.get("loki baseline", 0) for t in per_tick),
        "loki_samples_total": sum(t.get("loki sample", 0) for t in per_tick),
        "loki_triage_per_tick_max": most(("loki triage",)),
        "kube_first_tick": most(kube_keys, per_tick[:1]),
        "kube_per_tick_max": most(kube_keys, per_tick[1:]),
        "change_watches_per_tick_max": most(change_keys, per_tick[1:]),
        "cpu_ms_per_tick": 1000 * (c1 - c0) / max(1, t1 - t0),
        "tick_cpu_ms_median": 1000 * tick_cpu_sorted[len(tick_cpu_sorted) // 2] if tick_cpu else 0,
        "tick_cpu_ms_max": 1000 * tick_cpu_sorted[-1] if tick_cpu else 0,
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
        "incidents": sorted(r["deployment"] for r in incidents),
        "expected": [f"svc-{BAD:04d}"],
        "per_tick": per_tick,
    }


def report(r: dict) -> str:
    def mark(ok: bool) -> str:
        return "ok" if ok else "OVER GOAL"

    lines = [
        f"{r['deployments']} Deployments rolling at once, one bad; {r['ticks']} ticks of "
        f"{POLL_INTERVAL} s; first tick done {r['startup_seconds']:.2f} s after start",
        f"  Loki queries per namespace per tick (count + baseline), max: "
        f"{r['loki_per_tick_max']} (goal <= {GOALS['loki']}: {mark(r['loki_per_tick_max'] <= GOALS['loki'])}); "
        f"baseline queries in all: {r['loki_baselines_total']}; example-line requests for the "
        f"incident: {r['loki_samples_total']}",
        f"  Error triage requests per namespace per tick, max: {r['loki_triage_per_tick_max']} "
        f"(one sampled query, sent as its two legs on Loki 3; goal <= {GOALS['triage']}: "
        f"{mark(r['loki_triage_per_tick_max'] <= GOALS['triage'])})",
        f"  Kubernetes requests per tick after the first, max: {r['kube_per_tick_max']} "
        f"(goal <= {GOALS['kube']}: {mark(r['kube_per_tick_max'] <= GOALS['kube'])}); the first "
        f"tick lists everything in pages of {LIST_PAGE_SIZE}: {r['kube_first_tick']} requests",
        f"  Change timeline watches per tick (one per kind besides Deployments), max: "
        f"{r['change_watches_per_tick_max']}",
        f"  CPU per tick: {r['cpu_ms_per_tick']:.1f} ms after {WARMUP_TICKS} ticks (the whole "
        f"process), a tick's own median {r['tick_cpu_ms_median']:.1f} ms, max after the first "
        f"{r['tick_cpu_ms_max']:.1f} ms "
        f"(goal <= {GOALS['cpu_ms']}: {mark(r['cpu_ms_per_tick'] <= GOALS['cpu_ms'])})",
        f"  resident memory: {r['rss_mb']:.1f} MB during the run, peak {r['hwm_mb']:.1f} MB "
        f"(goal <= {GOALS['rss_mb']}: {mark(r['hwm_mb'] <= GOALS['rss_mb'])})",
        f"  incidents: {', '.join(r['incidents']) or 'none'} "
        f"({'the bad one and no other' if r['incidents'] == r['expected'] else 'WRONG: expected ' + ', '.join(r['expected'])})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    size = int(argv[0]) if argv else 500
    print(report(measure(size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
