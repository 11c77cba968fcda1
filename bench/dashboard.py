"""The dashboard's overview, rendered on the server, with 500 Deployments and 1,000 incidents.

A store is seeded with 500 rollout incidents (records shaped as the detector writes them, a few
kilobytes each, with signatures and a template diff) and 500 notices (alert incidents and error
groups), spread over the last 20 hours so that all of them are "today" and open. A real
``Detector`` (never ticking: its sources are never called) is given a last tick with 500
rollouts in their window, each with 30 points of error rate, ten of them failing with their
incident in the store. ``GET /`` is then served through Starlette's TestClient, the whole app
as the daemon serves it, and timed: the median of the requests after a warm-up, against the
goal of the issue that asked for the dashboard (under 100 ms).

    python -m bench.dashboard [REQUESTS]
"""

from __future__ import annotations

import io
import statistics
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone

with warnings.catch_warnings():  # Starlette 1.0 asks for httpx2, which changes nothing here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from incident_detector.config import load_settings
from incident_detector.judge.correlator import Assessment, Verdict
from incident_detector.model import Signal
from incident_detector.run.daemon import Detector, TickReport
from incident_detector.run.outbox import StdoutSink
from incident_detector.store.records import Store
from incident_detector.web.api import api_routes
from incident_detector.web.app import make_app
from incident_detector.web.dashboard import dashboard_routes

DEPLOYMENTS = 500
INCIDENTS = 1000
POINTS = 30
FAILING = 10
WARMUP = 5
GOAL_MS = 100.0
NAMESPACES = ("shop", "payments", "search", "identity", "media")


def _rollout_record(index: int, namespace: str, name: str, at: datetime) -> dict:
    """An incident record as notify.render.incident_record writes it (its size and shape)."""
    rs = f"{name}-7d9f8c6b5{index % 10}"
    command = f"kubectl rollout undo deployment/{name} -n {namespace} --to-revision=1"
    return {
        "event": "incident", "schema": 1, "kind": "rollout", "priority": "P1" if index % 3 else "P2",
        "rule": "rollout-regression", "namespace": namespace, "deployment": name, "revision": 2,
        "replicaset": rs, "deployment_uid": f"uid-{index}", "replicaset_uid": f"rs-uid-{index}",
        "rollout_started_at": (at - timedelta(seconds=40)).isoformat(), "error_count": 16,
        "threshold": 5, "window_seconds": 120, "detected_at": at.isoformat(),
        "previous_revision": 1, "signals": ["error_spike"],
        "summary": (f"Rollout of {name} revision 2 ({rs}) in {namespace} is failing: 16 error "
                    "lines in the last 2m (threshold 5); detected 32s after the rollout began. "
                    "That is 8/min, up from 1/min over the 30m before the rollout. The new "
                    "revision's pods wrote 16 of the errors; pods of other ReplicaSets wrote 2. "
                    "1 error signature did not occur before the rollout. The pod template "
                    "changed (image, env)."),
        "recommended_action": f"Roll back {name} in {namespace} to revision 1: {command}",
        "rollback_command": command, "confidence": 0.75,
        "confidence_reasons": ["+0.20 the detection rules held",
                               "+0.25 the errors come from the new revision's pods",
                               "+0.15 8x the rate before the rollout",
                               "+0.15 1 error signature new since the rollout"],
        "remediation": None,
        "evidence": {
            "attribution": "per_pod", "new_revision_errors": 16, "other_errors": 2,
            "error_rate_per_minute": 8, "baseline_per_minute": 1,
            "baseline_window_seconds": 1800, "baseline_lookback_seconds": 1800,
            "rollout_start_source": "replicaset_created",
            "affected_pods": [f"{rs}-n6cjl", f"{rs}-tqznv"], "pod_problems": [],
            "progress_message": None, "other_revisions_in_window": [],
            "signatures": [{"fingerprint": 'level=error msg="charge failed" order_id=<n> '
                                           f'err="NullPointerException at {name}.java:<n>"',
                            "count": 16 - n, "new": n == 0,
                            "example": f'level=error msg="charge failed" order_id={1000 + n} '
                                       f'err="NullPointerException at {name}.java:{n}"'}
                           for n in range(5)],
            "changes": [{"kind": "image", "container": name,
                         "detail": f"registry.local/{name}:1.4.2 -> registry.local/{name}:1.5.0"},
                        {"kind": "env", "container": name, "detail": "FEATURE_X: off -> on"}],
            "gitops": None, "alerts": []},
    }


def seed(store: Store, now: datetime) -> None:
    spread = timedelta(hours=20) / INCIDENTS
    for index in range(INCIDENTS):
        namespace = NAMESPACES[index % len(NAMESPACES)]
        name = f"svc-{index % DEPLOYMENTS:03d}"
        at = now - spread * (INCIDENTS - index)
        if index % 2 == 0:
            record = _rollout_record(index, namespace, name, at)
            store.record_incident(key=(namespace, name, 2 + index // DEPLOYMENTS, f"uid-{index}"),
                                  replicaset=record["replicaset"], detected_at=at, record=record,
                                  deliveries=[("stdout", {}), ("slack", {})])
        else:
            kind = "alert" if index % 4 == 1 else "error_group"
            key = f"alert/{index:016x}/{at.isoformat()}" if kind == "alert" \
                else f"errors/{namespace}/level=error msg=<n> {index}"
            record = {"event": "incident", "schema": 1, "kind": kind,
                      "priority": ("P1", "P2", "P3", "P4")[index % 4], "rule": "default",
                      "key": key, "namespace": namespace, "deployment": name,
                      "revision": 2, "deployment_uid": f"uid-{index}",
                      "detected_at": at.isoformat(),
                      "summary": f"Alert CheckoutQueueBacklog is firing on {name} in "
                                 f"{namespace} since {at:%H:%M:%S} UTC. " + "x" * 600}
            store.record_notice(key=key, kind=kind, namespace=namespace, deployment=name,
                                detected_at=at, record=record, deliveries=[("stdout", record)])


def detector_with_rollouts(store: Store, now: datetime) -> Detector:
    settings = load_settings({"LOKI_URL": "http://127.0.0.1:1", "NAMESPACE": ",".join(NAMESPACES),
                              "TARGET_DEPLOYMENT": "*", "STATE_PATH": ":memory:"})
    detector = Detector(settings=settings, kube=None, loki=None,  # type: ignore[arg-type]
                        store=store, stdout=StdoutSink(io.StringIO()), clock=lambda: now)
    assessments = []
    for index in range(DEPLOYMENTS):
        namespace = NAMESPACES[(index * 2) % len(NAMESPACES)]
        name = f"svc-{index:03d}"
        started = now - timedelta(minutes=9, seconds=index % 60)
        failing = index < FAILING
        key = (namespace, name, 2)
        for point in range(POINTS):
            detector.series.add(key, started + timedelta(seconds=20 * point),
                                8.0 + point if failing else (point % 3) * 0.5)
        assessments.append(Assessment(
            namespace=namespace, deployment=name, revision=2, replicaset=f"{name}-7d9f8c6b5",
            rollout_started_at=started, age_seconds=(now - started).total_seconds(),
            in_window=True, verdict=Verdict.ALREADY_NOTIFIED if failing else Verdict.HEALTHY,
            signals=(Signal.ERROR_SPIKE,) if failing else (), error_count=16.0 if failing else 1.0,
            attribution=None, baseline_per_minute=1.0))
    detector.last_tick = TickReport(started_at=now, finished_at=now, duration_seconds=0.05,
                                    assessments=tuple(assessments))
    detector.ticks = 1
    return detector


def measure(requests: int = 50) -> dict:
    now = datetime.now(timezone.utc).replace(hour=21, minute=0, second=0, microsecond=0)
    store = Store(":memory:")
    seed(store, now)
    detector = detector_with_rollouts(store, now)
    app = make_app(detector, extra_routes=[*api_routes(detector=detector, clock=lambda: now),
                                           *dashboard_routes(detector=detector)])
    timings, cpu = [], []
    with TestClient(app) as client:
        for attempt in range(WARMUP + requests):
            started, cpu_started = time.perf_counter(), time.process_time()
            answer = client.get("/")
            elapsed = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            assert answer.status_code == 200, answer.status_code
            if attempt >= WARMUP:
                timings.append(elapsed * 1000)
                cpu.append(cpu_seconds * 1000)
        size = len(answer.content)
        charts = answer.text.count("<svg")
    store.close()
    return {"median_ms": statistics.median(timings), "p95_ms": sorted(timings)[
        int(len(timings) * 0.95) - 1], "cpu_ms": statistics.median(cpu), "bytes": size,
        "charts": charts, "requests": requests}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    requests = int(argv[0]) if argv else 50
    figures = measure(requests)
    print(f"overview render: {figures['median_ms']:.1f} ms (goal < {GOAL_MS:.0f} ms) with "
          f"{DEPLOYMENTS} Deployments and {INCIDENTS:,} incidents")
    print(f"  median of {figures['requests']} requests after {WARMUP} to warm up (wall time,"
          f" TestClient included); p95 {figures['p95_ms']:.1f} ms; CPU {figures['cpu_ms']:.1f} ms"
          f" per request; page {figures['bytes'] / 1024:.0f} KiB with {figures['charts']} charts"
          " (the other rollouts as table rows)")
    return 0 if figures["median_ms"] < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
