"""A mass rollout: 200 Deployments of one namespace roll at once (a base-image bump, an umbrella
chart), one of them bad; and the same namespace idle. A real detector process watches them all,
with every feature on: error triage, the change timeline, a rules file.

The loopback apiserver serves objects cloned from the bodies recorded from a real kube-apiserver
(managedFields and all): each Deployment has an old ReplicaSet (revision 1) and a current one
(revision 2: created within the last minute when rolling, two days ago when idle), two running
pods of the current one, and a Progressing condition naming it. The loopback Loki is the
simulated one (``sim.logql``): it evaluates the LogQL the detector sends over log lines written
for the run, a few error lines per pod and a spike of NullPointerExceptions for the bad one.

Printed, idle and rolling, against the goals:

- Loki queries per namespace per tick (every query: counts, baselines, the change timeline's,
  triage, the example lines of an incident), mean and most in any tick, goal <= 2;
- Kubernetes API requests per tick of the detection (Deployments, ReplicaSets, pods; Events
  apart), the most in any tick, goal <= 4; the change timeline's watches of its other kinds
  (one per kind per tick) are counted apart;
- CPU per tick: the process's user+system time per tick over the steady ticks, and the median
  tick's own CPU time, goal <= 50 ms;
- resident memory during the run (VmRSS, max) and at its peak (VmHWM), goal <= 64 MB;
- the incidents printed: the bad Deployment and no other, with the rules file's priority.

    python -m bench.mass_rollout [DEPLOYMENTS]
"""

from __future__ import annotations

import copy
import gc
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from incident_detector.sim.levels import detect_level
from incident_detector.sim.logql import (
    DEFAULT_LOG_LIMIT,
    LogIndex,
    LogQLError,
    LogStream,
    from_unix_nanos,
    parse_loki_time,
    to_unix_nanos,
)
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sources.kube_watch import LIST_PAGE_SIZE

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

TICKS = 12
WARMUP_TICKS = 3
POLL_INTERVAL = 2.0
BAD = 137  # the index of the bad Deployment
GOALS = {"loki": 2, "kube": 4, "cpu_ms": 50, "rss_mb": 64}
# Error lines: every pod of the current revision writes one every LINE_EVERY seconds; the bad
# one's pods a NullPointerException every BAD_LINE_EVERY seconds from its rollout on.
# The same rate before the rollouts (over the baseline's hour) as after: only the bad one spikes.
LINE_EVERY = 20.0
BAD_LINE_EVERY = 1.5
LINES_FROM, LINES_TO = -3900.0, 600.0  # seconds around the bench's start
RULES = """rules:
  - name: payment-npe
    match: {log_pattern: "NullPointerException at PaymentService"}
    priority: P2
    remediation: {action: none}
"""


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


def build_mass_rollout(size: int, now: datetime, *, rolling: bool = True
                       ) -> tuple[SyntheticCluster, dict[str, list[str]]]:
    """Every Deployment at revision 2, its ReplicaSet created within the last minute (or, not
    ``rolling``, two days ago)."""
    dep_t, rs_t, pod_t = _item("deployments_list.json"), _item("replicasets_list.json"), \
        _item("pods_list.json", 0)
    deployments, replicasets, pods_by_hash, new_pods = [], [], {}, {}
    for i in range(size):
        name = f"svc-{i:04d}"
        started = now - timedelta(seconds=60) + timedelta(seconds=50 * i / size) if rolling \
            else now - timedelta(days=2, seconds=i)
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


def log_streams(new_pods: dict[str, list[str]], now: datetime) -> list[LogStream]:
    """The namespace's error lines around ``now``, with Loki 3's detected_level."""
    bad = f"svc-{BAD:04d}"
    base = to_unix_nanos(now)
    streams = []
    for i, (app, pods) in enumerate(new_pods.items()):
        for p, pod in enumerate(pods):
            entries = []
            t = LINES_FROM + (i * 7 + p * 3) % int(LINE_EVERY)
            while t < LINES_TO:
                entries.append((t, f'level=error msg="request failed" id={int(t * 10)}'))
                t += LINE_EVERY
            if app == bad:
                t = 0.0
                while t < LINES_TO:
                    entries.append((t, 'level=error msg="charge failed" err="NullPointerException '
                                       f'at PaymentService.charge(PaymentService.java:{int(t)})"'))
                    t += BAD_LINE_EVERY
            entries.sort()
            lines = [line for _, line in entries]
            labels = {"namespace": NAMESPACE, "app": app, "pod": pod}
            streams.append(LogStream(labels, [base + int(t * 1e9) for t, _ in entries], lines,
                                     [(("detected_level", detect_level(line)),)
                                      for line in lines]))
    return streams


def loki_handler(index: LogIndex, counter: Counter):
    """The simulated Loki over ``index``: every query is counted by path."""

    def handle(request: Request) -> Response:
        if request.path == "/loki/api/v1/status/buildinfo":
            counter.add("loki buildinfo", 0)
            return Response(200, {"version": "3.5.0", "revision": "bench"})
        if request.path not in ("/loki/api/v1/query", "/loki/api/v1/query_range"):
            counter.add("loki other", 0)
            return Response(404, "not found", "text/plain")
        query = request.param("query") or ""
        now = datetime.now(timezone.utc)
        try:
            if request.path == "/loki/api/v1/query":
                counter.add("loki query", 0)
                at = request.param("time")
                status, body = index.query(
                    query, from_unix_nanos(parse_loki_time(at)) if at else now)
            else:
                counter.add("loki query_range", 0)
                end = request.param("end")
                end_at = from_unix_nanos(parse_loki_time(end)) if end else now
                start = request.param("start")
                status, body = index.query_range(
                    query, from_unix_nanos(parse_loki_time(start)) if start
                    else end_at - timedelta(hours=1), end_at,
                    limit=int(request.param("limit") or DEFAULT_LOG_LIMIT),
                    direction=request.param("direction") or "backward")
        except LogQLError as exc:
            return Response(400, str(exc), "text/plain")
        if isinstance(body, str):
            return Response(status, body, "text/plain")
        return Response(status, body)
    return handle


def measure(size: int, *, rolling: bool = True, command: list[str] | None = None,
            extra_env: dict[str, str] | None = None,
            other_cpu: Callable[[], float] | None = None) -> dict:
    """One run. ``command`` and ``extra_env`` change how the daemon is started (bench.store
    starts it on a given store); ``other_cpu`` is the CPU time (seconds) of another process the
    ticks make work, read at the same marks as the daemon's (PostgreSQL's, for bench.store)."""
    now = datetime.now(timezone.utc)
    cluster, new_pods = build_mass_rollout(size, now, rolling=rolling)
    index = LogIndex(log_streams(new_pods, now))
    counter = TimedCounter()
    gc.collect()
    gc.freeze()
    with LocalServer(kube_handler(cluster, counter, page_size=LIST_PAGE_SIZE)) as kube, \
            LocalServer(loki_handler(index, counter)) as loki, \
            tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(RULES)
        proc, log_path, _, started = start_daemon(
            kube_url=kube.url, loki_url=loki.url, workdir=Path(tmp), poll_interval=POLL_INTERVAL,
            command=command,
            extra_env={"RULES_FILE": str(rules), "TRIAGE_SAMPLE_LINES": "500", **(extra_env or {})})
        try:
            startup = _first_tick_seconds(log_path, started, proc)
            # Ticks are read from the daemon's own log ("tick" lines, with the tick's CPU time):
            # polling /status, which lists every rollout, would load what is being measured.
            ticks: list[tuple[float, float]] = []  # (start, end), unix seconds
            tick_cpu: list[float] = []
            tick_wall: list[float] = []
            rss = 0
            seen_lines = 0
            cpu_marks: dict[int, float] = {}
            other_marks: dict[int, float] = {}
            deadline = time.monotonic() + 60 + TICKS * POLL_INTERVAL * 3
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
                    tick_wall.append(tick["duration_seconds"])
                    if len(ticks) in (WARMUP_TICKS, TICKS):
                        cpu_marks[len(ticks)] = _proc_cpu_seconds(proc.pid)
                        if other_cpu is not None:
                            other_marks[len(ticks)] = other_cpu()
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
    tick_wall_sorted = sorted(tick_wall[1:])
    loki = ("loki query", "loki query_range")
    # Every tick: the first is the one that sees the rollouts (baselines, incidents, samples).
    steady = per_tick
    return {
        "deployments": size,
        "rolling": rolling,
        "ticks": len(per_tick),
        "startup_seconds": startup,
        "loki_per_tick_max": most(loki, steady),
        "loki_per_tick_mean": sum(sum(t.get(k, 0) for k in loki) for t in steady)
        / max(1, len(steady)),
        "loki_metric_per_tick_max": most(("loki query",), steady),
        "loki_log_per_tick_max": most(("loki query_range",), steady),
        "kube_first_tick": most(kube_keys, per_tick[:1]),
        "kube_per_tick_max": most(kube_keys, per_tick[1:]),
        "change_watches_per_tick_max": most(change_keys, per_tick[1:]),
        "cpu_ms_per_tick": 1000 * (c1 - c0) / max(1, t1 - t0),
        "tick_cpu_ms_median": 1000 * tick_cpu_sorted[len(tick_cpu_sorted) // 2] if tick_cpu else 0,
        "tick_cpu_ms_max": 1000 * tick_cpu_sorted[-1] if tick_cpu else 0,
        "tick_wall_ms_median": 1000 * tick_wall_sorted[len(tick_wall_sorted) // 2]
        if tick_wall_sorted else 0,
        "tick_wall_ms_max": 1000 * tick_wall_sorted[-1] if tick_wall_sorted else 0,
        "other_cpu_ms_per_tick": 1000 * (other_marks[t1] - other_marks[t0]) / max(1, t1 - t0)
        if len(other_marks) >= 2 else None,
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
        "incidents": sorted(r["deployment"] for r in incidents),
        "priorities": sorted({r.get("priority") for r in incidents} - {None}),
        "signatures": all(r["evidence"]["signatures"] for r in incidents),
        "expected": [f"svc-{BAD:04d}"] if rolling else [],
        "per_tick": per_tick,
    }


def report(r: dict) -> str:
    def mark(ok: bool) -> str:
        return "ok" if ok else "OVER GOAL"

    case = f"{r['deployments']} Deployments rolling at once, one bad" if r["rolling"] else \
        f"{r['deployments']} Deployments, none rolling (idle)"
    lines = [
        f"{case}; {r['ticks']} ticks of {POLL_INTERVAL} s; first tick done "
        f"{r['startup_seconds']:.2f} s after start",
        f"  Loki queries per namespace per tick, every feature on: mean "
        f"{r['loki_per_tick_mean']:.1f}, most {r['loki_per_tick_max']} (metric "
        f"{r['loki_metric_per_tick_max']}, log {r['loki_log_per_tick_max']} at most) "
        f"(goal <= {GOALS['loki']}: {mark(r['loki_per_tick_max'] <= GOALS['loki'])})",
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
        f"({'as expected' if r['incidents'] == r['expected'] else 'WRONG: expected ' + (', '.join(r['expected']) or 'none')})"
        + (f", priority {', '.join(r['priorities'])}, signatures "
           f"{'present' if r['signatures'] else 'MISSING'}" if r["incidents"] else ""),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    size = int(argv[0]) if argv else 200
    print(report(measure(size, rolling=False)))
    print(report(measure(size, rolling=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
