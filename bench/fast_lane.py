"""The fast lane at the default poll (POLL_INTERVAL_SECONDS=20): how soon a bad rollout is
judged after its evidence reaches Loki, and what that costs Loki.

Detection delay: N bad rollouts with random timing (the rollout at a random phase of the poll,
its errors starting 2-15 s later at a random rate, 1-3 replicas, a quiet baseline), each
replayed through the real detector on the simulated cluster (``sim.replay``: the fast looks and
the watch wake-ups scheduled as ``Detector.run`` schedules them). The evidence is in Loki when
the new revision's ERROR_THRESHOLD-th error line is; the delay runs from then to the incident's
``detected_at``. The same rollouts with the fast lane off (FAST_POLL_SECONDS=0) give the poll's
figures. The simulated Loki has no ingestion delay: on a real one, add its own.

Loki queries per namespace per minute (every request the detector sends: counts, baselines,
signatures, triage, change desk), in simulated minutes: idle (no rollout in the window), one
young rollout (its first 5 minutes), and 200 Deployments rolling at once (their first 5 minutes).

    python -m bench.fast_lane [ROLLOUTS]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

from incident_detector.logs import configure_logging
from incident_detector.sim.replay import SCENARIO_EPOCH, replay
from incident_detector.sim.scenario import Scenario
from incident_detector.sim.world import World

ROLLOUTS = 36
SEED = 20261204
THRESHOLD = 5  # ERROR_THRESHOLD's default
NAMESPACE = "demo-aiops"
INFO = 'level=info msg="charged card" order_id={n} latency_ms={n3}'
ERROR = 'level=error msg="charge failed" order_id={n} err="NullPointerException at Pay.java:{n3}"'


def bad_rollout(rng: random.Random, index: int, **settings: Any) -> Scenario:
    at = round(rng.uniform(40.0, 60.0), 3)
    onset = round(at + rng.uniform(2.0, 15.0), 3)
    replicas = rng.choice((1, 2, 3))
    return Scenario.model_validate({
        "name": f"random-bad-rollout-{index}",
        "description": "a bad rollout at a random instant",
        "namespace": NAMESPACE, "deployment": "payments-api", "duration": int(onset) + 90,
        "pod_labels": {"app": "payments-api"}, "settings": settings,
        "revisions": [
            {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": replicas},
            {"revision": 2, "at": at, "image": "payments-api:1.5.0", "replicas": replicas}],
        "logs": [
            {"revision": 1, "from": -2400, "per_minute": 30, "line": INFO},
            {"revision": 2, "from": onset, "per_minute": round(rng.uniform(12.0, 90.0), 1),
             "line": ERROR}],
        "expect": {"incidents": [{"revision": 2, "signals": ["error_spike"]}]},
    })


def evidence_at(scenario: Scenario) -> float:
    """When the new revision's THRESHOLD-th error line is in Loki (scenario seconds)."""
    world = World(scenario, t0=SCENARIO_EPOCH)
    start = world.at(scenario.revisions[-1].at)
    status, body = world.loki_query_range(
        f'{{namespace="{NAMESPACE}", app="payments-api"}} |= "level=error"', start,
        world.at(scenario.duration), limit=THRESHOLD, direction="forward")
    assert status == 200 and isinstance(body, dict), body
    stamps = sorted(int(value[0]) for stream in body["data"]["result"]
                    for value in stream["values"])
    assert len(stamps) >= THRESHOLD, "the scenario never reaches the threshold"
    nanos = stamps[THRESHOLD - 1] - int(SCENARIO_EPOCH.timestamp()) * 1_000_000_000
    return nanos / 1e9


def delays(rollouts: int, **settings: Any) -> tuple[list[float], int]:
    rng = random.Random(SEED)
    out, missed = [], 0
    for index in range(rollouts):
        scenario = bad_rollout(rng, index, **settings)
        result = asyncio.run(replay(scenario))
        if not result.notifications:
            missed += 1
            continue
        out.append(result.notifications[0].at_seconds - evidence_at(scenario))
    return out, missed


def quiet_namespace() -> Scenario:
    return Scenario.model_validate({
        "name": "idle", "description": "nothing rolls out", "namespace": NAMESPACE,
        "deployment": "payments-api", "duration": 600, "pod_labels": {"app": "payments-api"},
        "revisions": [{"revision": 1, "at": -86400, "image": "payments-api:1.4.2"},
                      {"revision": 2, "at": -7200, "image": "payments-api:1.4.3"}],
        "logs": [{"revision": 2, "from": -2400, "per_minute": 30, "line": INFO}],
        "expect": {"incidents": []}})


def mass_rollout(deployments: int) -> Scenario:
    """``deployments`` healthy Deployments rolling at 60 s (a base-image bump)."""
    def revisions(name: str) -> list[dict[str, Any]]:
        return [{"revision": 1, "at": -86400, "image": f"{name}:1"},
                {"revision": 2, "at": 60, "image": f"{name}:2"}]

    def logs() -> list[dict[str, Any]]:
        return [{"revision": 2, "from": 60, "per_minute": 2, "line": INFO}]

    workloads = [{"name": f"svc-{i:03d}", "pod_labels": {"app": f"svc-{i:03d}"},
                  "revisions": revisions(f"svc-{i:03d}"), "logs": logs()}
                 for i in range(1, deployments)]
    return Scenario.model_validate({
        "name": "mass-rollout", "description": "every Deployment rolls at once",
        "namespace": NAMESPACE, "deployment": "svc-000", "duration": 360,
        "pod_labels": {"app": "svc-000"}, "revisions": revisions("svc-000"), "logs": logs(),
        "workloads": workloads, "settings": {"target_deployment": "*"},
        "expect": {"incidents": []}})


def young(scenario: Scenario) -> float:
    """Loki queries per minute over the first five minutes of a rollout at 60 s."""
    result = asyncio.run(replay(scenario))
    return result.loki_queries_per_minute(60.0, 360.0)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (f"median {statistics.median(ordered):.1f} s  p95 {p95:.1f} s  "
            f"max {max(ordered):.1f} s  (n={len(ordered)})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rollouts = int(argv[0]) if argv else ROLLOUTS
    configure_logging(level="error", fmt="json", stream=sys.stderr)
    started = time.perf_counter()
    fast, missed_fast = delays(rollouts)
    slow, missed_slow = delays(rollouts, fast_poll_seconds=0, watch_follow=False)
    print(f"detection delay over {rollouts} bad rollouts with random timing, evidence in Loki "
          f"-> incident, simulated seconds, POLL_INTERVAL_SECONDS=20:")
    print(f"  fast lane on (FAST_POLL_SECONDS=2):   {summary(fast)}  missed {missed_fast}"
          "   goal: median <= 3 s, p95 <= 5 s")
    print(f"  fast lane off (the poll alone):       {summary(slow)}  missed {missed_slow}")
    idle = asyncio.run(replay(quiet_namespace()))
    print("Loki queries per namespace per minute (every request: counts, baselines, samples, "
          "triage, change desk):")
    print(f"  idle:                                {idle.loki_queries_per_minute(0.0, 600.0):.1f}")
    one = bad_rollout(random.Random(SEED), 0, error_threshold=10_000)
    one = one.model_copy(update={"duration": 400})
    print(f"  one young rollout (first 5 min):     {young(one):.1f}")
    many = mass_rollout(200)
    print(f"  200 Deployments rolling at once:     {young(many):.1f}   "
          f"cap LOKI_MAX_QUERIES_PER_MINUTE=60 (the poll's own queries are never skipped)")
    print(f"measured in {time.perf_counter() - started:.0f} s of wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
