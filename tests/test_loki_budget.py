"""LokiBudget: the Loki queries of each namespace over the last minute, and the cap; MeteredLoki:
every request the Loki client sends is counted for the namespace whose call sent it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import httpx
import pytest
import respx

from incident_detector.run.loki_budget import LokiBudget, MeteredLoki
from incident_detector.sources.loki import LabelKeys, LokiClient

LOKI = "http://loki.test"
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}
STREAMS = {"status": "success", "data": {"resultType": "streams", "result": []}}


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_queries_count_for_a_minute_then_expire():
    clock = FakeMonotonic()
    budget = LokiBudget(per_minute=3, clock=clock)
    budget.record("shop")
    clock.now += 30
    budget.record("shop", 2)
    assert budget.used("shop") == 3
    assert not budget.allows("shop")
    assert budget.allows("other", 3)
    clock.now += 30  # the first query is 60 s old: out of the minute
    assert budget.used("shop") == 2
    assert budget.allows("shop")
    assert not budget.allows("shop", 2)
    clock.now += 30
    assert budget.used("shop") == 0
    assert budget.totals == {"shop": 3}
    assert budget.rates() == {"shop": 0}


def test_the_cap_must_allow_a_query():
    with pytest.raises(ValueError):
        LokiBudget(per_minute=0)


@respx.mock
def test_every_request_is_counted_for_the_namespace_that_asked():
    """A count is one request; a level-aware sample is two (one per leg); a retried request
    counts each attempt; a call for another namespace counts there."""
    respx.get(f"{LOKI}/loki/api/v1/query").mock(side_effect=[
        httpx.Response(503, text="overloaded"), httpx.Response(200, json=VECTOR),
        httpx.Response(200, json=VECTOR)])
    respx.get(f"{LOKI}/loki/api/v1/query_range").mock(return_value=httpx.Response(200, json=STREAMS))
    clock = FakeMonotonic()
    budget = LokiBudget(per_minute=100, clock=clock)

    async def scenario() -> None:
        async def no_sleep(_: float) -> None:
            return None

        http = httpx.AsyncClient(base_url=LOKI, event_hooks={"request": [budget.on_request]})
        client = LokiClient(http=http, keys=LabelKeys(), pattern="error", match="level",
                            sleep=no_sleep)
        loki = MeteredLoki(client)
        await loki.count_errors(namespace="shop", workloads=["payments"], window_seconds=120)
        at = datetime(2026, 12, 1, tzinfo=timezone.utc)
        await loki.sample_errors(namespace="shop", workloads=["payments"], start=at, end=at)
        await loki.count_errors(namespace="billing", workloads=None, window_seconds=120)
        assert (await loki.error_match()).by_level  # not a namespace's call: passed through
        await http.aclose()

    asyncio.run(scenario())
    assert budget.totals == {"shop": 4, "billing": 1}
    assert budget.used("shop") == 4
