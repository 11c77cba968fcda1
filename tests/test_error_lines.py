"""The namespaces' recent error lines: one incremental log query per tick, read by every feature.

A real ``LokiClient`` against the simulated Loki on loopback, serving a scenario's log lines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from incident_detector.errors import SourceError
from incident_detector.run.error_lines import ErrorLines
from incident_detector.sim.fakes import FailFirst, LokiFake
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Response
from incident_detector.sim.world import World
from incident_detector.sources.loki import LEG_LEVEL, LEG_PATTERN, LabelKeys, LokiClient

SCENARIO = Path(__file__).parent / "scenarios" / "bad-rollout-sharp-spike.yaml"
NS, APP = "demo-aiops", "payments-api"
QUERY_RANGE = "/loki/api/v1/query_range"


class Loki:
    def __init__(self, *, faults: Any = None) -> None:
        self.clock = ManualClock(SCENARIO_EPOCH)
        self.world = World(load_scenario(SCENARIO), t0=SCENARIO_EPOCH)
        self.fake = LokiFake(self.world, self.clock, faults=faults)

    def at(self, seconds: float):
        return self.world.at(seconds)

    @property
    def reads(self) -> int:
        return self.fake.requests_by_path[QUERY_RANGE]


@pytest.fixture
def loki() -> Iterator[Loki]:
    yield Loki()


def run(loki: Loki, body) -> Any:
    async def scenario() -> Any:
        with LocalServer(loki.fake) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                client = LokiClient(http=http, keys=LabelKeys(), pattern="(?i)(error|exception)",
                                    levels=("error", "critical", "fatal"), match="level",
                                    max_attempts=1)
                return await body(client)

    return asyncio.run(scenario())


async def call(thunk) -> Any:
    try:
        return await thunk()
    except SourceError:
        return None


def buffer(client: LokiClient, **kwargs: Any) -> ErrorLines:
    return ErrorLines(loki=client, **{"limit": 500, "retention": timedelta(minutes=12),
                                      "first_window": timedelta(seconds=120), **kwargs})


def test_each_read_starts_where_the_last_ended_and_serves_the_readers(loki: Loki) -> None:
    async def body(client: LokiClient) -> Any:
        lines = buffer(client)
        for t in (100, 120, 140):
            assert await lines.refresh(NS, workloads=None, now=loki.at(t), legs=None, call=call)
        reads = loki.reads
        # Every leg was asked at each read (legs=None): two legs on Loki 3.
        assert reads == 6
        # A reader whose range the buffer holds costs no query, and gets what Loki would give.
        held = await lines.sample_errors(namespace=NS, workloads=[APP], start=loki.at(100),
                                         end=loki.at(140), limit=50)
        assert loki.reads == reads
        direct = await client.sample_errors(namespace=NS, workloads=[APP], start=loki.at(100),
                                            end=loki.at(140), limit=50)
        assert held == direct and held
        reads = loki.reads
        # A range before the first read goes to Loki.
        await lines.sample_errors(namespace=NS, workloads=[APP], start=loki.at(-60),
                                  end=loki.at(140), limit=50)
        assert loki.reads == reads + 2

    run(loki, body)


def test_the_read_asks_only_the_legs_with_lines(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client)
        assert await lines.refresh(NS, workloads=[APP], now=loki.at(100), legs=frozenset(),
                                   call=call)
        assert loki.reads == 0  # no line anywhere: nothing asked, the range still covered
        assert lines.covers(NS, loki.at(-20), loki.at(100), [APP])
        assert await lines.refresh(NS, workloads=[APP], now=loki.at(120),
                                   legs=frozenset({LEG_LEVEL}), call=call)
        assert loki.reads == 1
        assert await lines.refresh(NS, workloads=[APP], now=loki.at(140),
                                   legs=frozenset({LEG_LEVEL, LEG_PATTERN}), call=call)
        assert loki.reads == 3

    run(loki, body)


def test_signature_lines_come_from_the_buffer_and_say_what_they_lack(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client)
        await lines.refresh(NS, workloads=None, now=loki.at(100), legs=None, call=call)
        reads = loki.reads
        after, before, gap = lines.signature_lines(NS, workload=APP, since=loki.at(60),
                                                   until=loki.at(100), limit=200)
        assert loki.reads == reads
        assert gap is None and after and all("NullPointerException" in x.line for x in after)
        assert all(x.at >= loki.at(60) for x in after)
        assert [x.at for x in after] == sorted((x.at for x in after), reverse=True)
        assert all(x.at < loki.at(60) for x in before)
        # More lines than the incident's limit: cut, and said.
        cut, _, gap = lines.signature_lines(NS, workload=APP, since=loki.at(60),
                                            until=loki.at(100), limit=3)
        assert len(cut) == 3 and gap == "limit_reached"

    run(loki, body)


def test_a_full_read_leaves_a_gap_that_the_signatures_report(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client, limit=5)
        await lines.refresh(NS, workloads=None, now=loki.at(120), legs=None, call=call)
        after, _, gap = lines.signature_lines(NS, workload=APP, since=loki.at(60),
                                              until=loki.at(120), limit=200)
        assert len(after) <= 5 and gap == "limit_reached"

    run(loki, body)


def test_a_failed_read_is_said_and_covered_by_the_next() -> None:
    failing = Loki(faults=FailFirst(2, Response(503, "unavailable", "text/plain"),
                                    path_prefix=QUERY_RANGE))

    async def body(client: LokiClient) -> None:
        lines = buffer(client)
        assert not await lines.refresh(NS, workloads=None, now=failing.at(100), legs=None,
                                       call=call)
        _, _, gap = lines.signature_lines(NS, workload=APP, since=failing.at(60),
                                          until=failing.at(100), limit=200)
        assert gap == "loki_failed"
        assert await lines.refresh(NS, workloads=None, now=failing.at(120), legs=None,
                                   call=call)
        # The read after the failure started where the last success would have: 120 s back.
        after, _, gap = lines.signature_lines(NS, workload=APP, since=failing.at(60),
                                              until=failing.at(120), limit=200)
        assert gap is None and min(x.at for x in after) < failing.at(100)

    run(failing, body)


def test_old_lines_leave_and_the_buffer_stays_bounded(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client, retention=timedelta(seconds=60), max_lines=40)
        for t in range(100, 400, 20):
            await lines.refresh(NS, workloads=None, now=loki.at(t), legs=None, call=call)
        held = await lines.sample_errors(namespace=NS, workloads=None, start=loki.at(340),
                                         end=loki.at(380), limit=1000)
        assert 0 < len(held) <= 40
        reads = loki.reads
        # What retention dropped is no longer covered: asked of Loki.
        await lines.sample_errors(namespace=NS, workloads=None, start=loki.at(200),
                                  end=loki.at(380), limit=10)
        assert loki.reads == reads + 2

    run(loki, body)


def test_only_the_workloads_read_are_served_from_the_buffer(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client)
        await lines.refresh(NS, workloads=[APP], now=loki.at(100), legs=None, call=call)
        await lines.refresh(NS, workloads=[APP], now=loki.at(120), legs=None, call=call)
        assert lines.holds(NS, [APP]) and not lines.holds(NS, ["other"])
        assert not lines.holds(NS, None)
        reads = loki.reads
        await lines.sample_errors(namespace=NS, workloads=[APP], start=loki.at(100),
                                  end=loki.at(120))
        assert loki.reads == reads
        await lines.sample_errors(namespace=NS, workloads=None, start=loki.at(100),
                                  end=loki.at(120))
        assert loki.reads == reads + 2  # every workload: not what was read
        # A read of other workloads covers them from that read on only.
        await lines.refresh(NS, workloads=[APP, "other"], now=loki.at(140), legs=None,
                            call=call)
        assert not lines.covers(NS, loki.at(100), loki.at(140), [APP])
        assert lines.covers(NS, loki.at(120), loki.at(140), [APP, "other"])

    run(loki, body)


def test_lines_dropped_to_stay_bounded_are_reported_by_the_signatures(loki: Loki) -> None:
    async def body(client: LokiClient) -> None:
        lines = buffer(client, max_lines=10)
        await lines.refresh(NS, workloads=None, now=loki.at(100), legs=None, call=call)
        await lines.refresh(NS, workloads=None, now=loki.at(140), legs=None, call=call)
        _, _, gap = lines.signature_lines(NS, workload=APP, since=loki.at(60),
                                          until=loki.at(140), limit=200)
        assert gap == "limit_reached"
        roomy = buffer(client)
        await roomy.refresh(NS, workloads=None, now=loki.at(100), legs=None, call=call)
        await roomy.refresh(NS, workloads=None, now=loki.at(140), legs=None, call=call)
        assert roomy.signature_lines(NS, workload=APP, since=loki.at(60), until=loki.at(140),
                                     limit=200)[2] is None

    run(loki, body)
