"""The fast lane: a young rollout is judged seconds after its evidence, not at the next poll.

Replays run the real detector over the simulated cluster on a simulated clock (the loop's
schedule is decided as ``Detector.run`` decides it, see ``sim.replay``); the last test runs the
real loop, whose watch followers wake a fast look. No test waits on a wall-clock margin.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from incident_detector.main import build_detector
from incident_detector.store.records import Store
from incident_detector.sim.replay import (
    SCENARIO_EPOCH,
    ManualClock,
    _next_look,
    replay,
    scenario_settings,
    simulated_cluster,
)
from incident_detector.sim.scenario import Scenario, load_scenario
from incident_detector.sources import kube

SCENARIOS = Path(__file__).parent / "scenarios"
CEILING = 30.0


def scenario(name: str, **settings: Any) -> Scenario:
    loaded = load_scenario(SCENARIOS / f"{name}.yaml")
    return loaded.model_copy(update={"settings": {**loaded.settings, **settings}})


def delay(result, expected) -> float:
    [notification] = result.notifications
    return notification.at_seconds - expected.evidence_at


def test_an_error_spike_is_judged_within_a_fast_poll_of_its_evidence():
    spike = scenario("bad-rollout-sharp-spike")
    [expected] = spike.expect.incidents
    fast = asyncio.run(replay(spike))
    assert 0 <= delay(fast, expected) <= 2.0
    assert fast.fast_looks > 0
    # The same rollout with the fast lane off waits for the poll: the fast lane is what made
    # the difference (evidence at 82 s, ticks at 80 and 100 s).
    slow = asyncio.run(replay(scenario("bad-rollout-sharp-spike", fast_poll_seconds=0)))
    assert delay(slow, expected) == 18.0
    assert slow.fast_looks == 0


@pytest.mark.parametrize(("name", "signal"), [
    ("crash-loop-without-error-logs", "pod_health"),  # CrashLoopBackOff at 90 s
    ("oom-killed", "pod_health"),
    ("bad-image-no-logs", "pod_health"),  # ErrImagePull, then ImagePullBackOff
    ("progress-deadline-exceeded", "progress_deadline"),  # no longer young by then
])
def test_a_pod_problem_is_judged_when_the_watch_sees_it(name: str, signal: str):
    """The poll would come up to 20 s later: the watch event wakes a fast look at once."""
    spec = scenario(name)
    [expected] = spec.expect.incidents
    if spec.progress_deadline_exceeded_at is not None:
        # Between two ticks (they come at multiples of 20 s), where only the watch can see it.
        spec = spec.model_copy(update={"progress_deadline_exceeded_at": 683})
        expected = expected.model_copy(update={"evidence_at": 683})
    result = asyncio.run(replay(spec))
    assert delay(result, expected) == 0.0
    assert signal in result.notifications[0].record["signals"]


def test_the_fast_lane_ends_when_the_rollout_is_no_longer_young():
    """Fast looks only while the rollout is young: 300 s after it began, back to the poll."""
    clean = scenario("clean-rollout")  # revision 2 at 60 s, healthy, 600 s replayed
    result = asyncio.run(replay(clean))
    assert result.notifications == []
    young, fast = 300, 2
    # Every FAST_POLL_SECONDS while young, less the instants a tick took instead.
    assert young / fast - young / 20 - 5 <= result.fast_looks <= young / fast + 10
    idle = asyncio.run(replay(scenario("clean-rollout", young_rollout_seconds=0)))
    assert idle.fast_looks <= 10  # the watch events alone


async def _drive(spec: Scenario, *, check) -> dict[str, Any]:
    """The replay's loop, calling ``check(detector, kind)`` after each look."""
    clock = ManualClock(SCENARIO_EPOCH)
    out = io.StringIO()
    with simulated_cluster(spec, clock=clock) as cluster:
        settings = scenario_settings(spec, loki_url=cluster.loki.url, slack_url=None)
        async with build_detector(settings=settings, kube_api=kube.api_client_for(cluster.kube.url),
                                  stdout=out, clock=clock, store=Store(":memory:"),
                                  monotonic=clock.monotonic) as detector:
            events = [at for at in cluster.world.change_instants() if at > clock.now]
            next_tick = clock.now
            end = clock.now + timedelta(seconds=spec.duration)
            while clock.now <= end:
                if clock.now >= next_tick:
                    await detector.tick()
                    next_tick += timedelta(seconds=settings.poll_interval_seconds)
                    check(detector, "tick")
                elif await detector.fast_look() is not None:
                    check(detector, "fast")
                clock.now = _next_look(clock.now, next_tick=next_tick, detector=detector,
                                       settings=settings, watch_events=events)
    return {"stdout": out.getvalue()}


def test_fast_looks_stay_under_the_loki_cap():
    cap = 20
    spike = scenario("bad-rollout-sharp-spike", loki_max_queries_per_minute=cap,
                     error_threshold=10_000)  # never an incident: the lane runs its course
    seen: list[tuple[str, int]] = []

    def check(detector, kind: str) -> None:
        seen.append((kind, detector.loki_budget.used(spike.namespace)))

    asyncio.run(_drive(spike, check=check))
    # A fast look that asked Loki (its namespace's count went up) stayed within the cap; a tick
    # may go past it (the poll is never skipped), and the fast looks then ask nothing.
    asked = [used for (_, before), (kind, used) in zip(seen, seen[1:])
             if kind == "fast" and used > before]
    assert asked and max(asked) <= cap
    skipped = [used for (_, before), (kind, used) in zip(seen, seen[1:])
               if kind == "fast" and used <= before]
    # The cap bit: without it the lane would have asked every 2 s for 5 minutes.
    assert len(skipped) > len(asked)


def test_the_loop_takes_a_rollout_from_the_watch_without_waiting_for_the_poll(tmp_path):
    """The real loop with a poll of an hour: after the first tick, only a watch event can bring
    the rollout in, and a fast look judges it."""
    spike = scenario("bad-rollout-sharp-spike", poll_interval_seconds=3600)
    clock = ManualClock(SCENARIO_EPOCH)
    out = io.StringIO()

    async def main() -> tuple[int, int]:
        with simulated_cluster(spike, clock=clock) as cluster:
            settings = scenario_settings(spike, loki_url=cluster.loki.url, slack_url=None)
            async with build_detector(settings=settings,
                                      kube_api=kube.api_client_for(cluster.kube.url),
                                      stdout=out, clock=clock,
                                      store=Store(str(tmp_path / "state.sqlite3"))) as detector:
                stop = asyncio.Event()
                loop = asyncio.create_task(detector.run(stop))
                await _until(lambda: detector.ticks >= 1 and detector.kube.following >= 2)
                # The rollout and its errors, at once: the ReplicaSet watch sees it.
                clock.now += timedelta(seconds=100)
                await _until(lambda: '"event": "incident"' in out.getvalue()
                             or '"event":"incident"' in out.getvalue())
                stop.set()
                await asyncio.wait_for(loop, CEILING)
                return detector.ticks, detector.fast_looks

    ticks, looks = asyncio.run(main())
    assert ticks == 1 and looks >= 1
    [incident] = [json.loads(line) for line in out.getvalue().splitlines()
                  if '"incident"' in line and line.startswith("{")][:1]
    assert incident["revision"] == 2 and "error_spike" in incident["signals"]


async def _until(predicate) -> None:
    deadline = time.monotonic() + CEILING
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def test_the_loki_rate_and_the_fast_lane_are_on_metrics_and_status():
    spike = scenario("bad-rollout-sharp-spike", error_threshold=10_000)
    scraped: dict[str, Any] = {}

    def check(detector, kind: str) -> None:
        if kind == "fast" and "metrics" not in scraped:
            scraped["metrics"] = detector.metrics.exposition(None)[0].decode()
            scraped["status"] = detector.status()["fast_lane"]
            scraped["used"] = detector.loki_budget.used(spike.namespace)

    asyncio.run(_drive(spike, check=check))
    text = scraped["metrics"]
    line = f'incident_detector_loki_queries_last_minute{{namespace="{spike.namespace}"}} '
    [value] = [float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)]
    assert value == scraped["used"] > 0
    assert f'incident_detector_loki_queries_total{{namespace="{spike.namespace}"}}' in text
    assert "incident_detector_loki_queries_per_minute_cap 60.0" in text
    assert 'incident_detector_fast_looks_total{outcome="ok"} 1.0' in text
    status = scraped["status"]
    assert status["active"] and status["young"] == [spike.namespace]
    assert status["loki_queries_last_minute"] == {spike.namespace: scraped["used"]}


class Standby:
    """Leadership held by another replica (the Leadership protocol the elector implements)."""

    is_leader = False

    def status(self) -> dict[str, Any]:
        return {"role": "standby"}


def test_a_standby_takes_no_fast_look():
    spike = scenario("bad-rollout-sharp-spike")
    looks: list[str] = []

    def check(detector, kind: str) -> None:
        looks.append(kind)
        if kind == "fast":
            # From the first fast look on (the rollout just seen), another replica leads: the
            # young rollout is its to look at, not this one's.
            assert detector.fast_lane_active
            detector.leadership = Standby()

    result = asyncio.run(_drive(spike, check=check))
    assert looks.count("fast") == 1
    assert '"incident"' not in result["stdout"]


def test_an_incident_a_fast_look_raises_carries_its_signatures():
    """A fast look comes between two ticks' reads of error lines: the lines that made its spike
    (pushed at 82 s, after the tick at 80 s) are not in the tick's buffer yet, and must be
    read for it all the same."""
    result = asyncio.run(replay(scenario("two-rollouts-errors-in-one-push")))
    assert sorted(n.deployment for n in result.notifications) == ["payments-api",
                                                                   "payments-worker"]
    for notification in result.notifications:
        assert 82 <= notification.at_seconds < 100  # a fast look, not the tick at 100 s
        evidence = notification.record["evidence"]
        assert evidence["signatures"] and evidence.get("signature_gap") is None
        assert evidence["signatures"][0]["count"] == 24  # two pods, twelve lines each
