"""The live feed and the rollout series the dashboard reads (run/live.py), and what the loop
publishes to them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from incident_detector.run.live import LiveFeed, RolloutSeries
from incident_detector.sim.scenario import load_scenario
from pathlib import Path

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


def test_subscribers_get_what_is_published_after_they_subscribe():
    feed = LiveFeed()
    feed.publish("tick", {"n": 0})
    queue = feed.subscribe()
    first = feed.publish("incident", {"n": 1})
    assert queue.get_nowait() == first and queue.empty()
    feed.unsubscribe(queue)
    feed.publish("incident", {"n": 2})
    assert queue.empty() and feed.subscribers == 0


def test_a_slow_subscriber_loses_its_oldest_events_not_the_publisher_its_time():
    feed = LiveFeed()
    queue = feed.subscribe()
    for n in range(500):
        feed.publish("verdict", {"n": n})
    assert queue.qsize() == 200
    assert queue.get_nowait().data == {"n": 300}


def test_a_page_that_reconnects_gets_what_it_missed():
    feed = LiveFeed()
    events = [feed.publish("action", {"n": n}) for n in range(5)]
    assert [e.data["n"] for e in feed.since(events[2].id)] == [3, 4]
    assert feed.since(events[-1].id) == []


def test_series_keep_one_point_per_tick_and_forget_rollouts_out_of_their_window():
    series = RolloutSeries(points=3)
    key, other = ("ns", "api", 2), ("ns", "web", 5)
    for minute in range(5):
        series.add(key, T0 + timedelta(minutes=minute), float(minute))
    series.add(key, T0 + timedelta(minutes=4), 9.0)  # the same tick again: replaced
    series.add(other, T0, None)
    assert [p.per_minute for p in series.get(key)] == [2.0, 3.0, 9.0]
    series.keep([key])
    assert series.get(other) == () and len(series.get(key)) == 3


def test_the_loop_publishes_verdicts_incidents_and_the_series(tmp_path):
    from test_alert_flow import Sim

    sim = Sim(tmp_path, load_scenario(Path(__file__).parent / "scenarios"
                                      / "bad-rollout-sharp-spike.yaml"))
    seen = {}

    async def main() -> None:
        async with sim.daemon() as (detector, _web, _slack):
            for _ in range(10):
                await sim.tick(detector, _web)
            seen["events"] = detector.live.since(0)
            seen["series"] = detector.series.get(("demo-aiops", "payments-api", 2))

    asyncio.run(main())
    kinds = [(e.kind, e.data.get("verdict") or e.data.get("kind")) for e in seen["events"]]
    assert ("verdict", "incident") in kinds and ("incident", "rollout") in kinds
    assert kinds.index(("verdict", "incident")) < kinds.index(("incident", "rollout"))
    # One verdict event per change, not per tick.
    assert len([k for k in kinds if k[0] == "verdict"]) <= 3
    rates = [p.per_minute for p in seen["series"]]
    assert len(rates) >= 3 and max(r for r in rates if r is not None) > 5
