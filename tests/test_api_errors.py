"""GET /api/errors: the triage's groups, filtered; a 400 that says why for a bad parameter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from datetime import datetime, timedelta, timezone

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from incident_detector.model import LogLine, Priority
from incident_detector.store.records import Store
from incident_detector.run.triage import Triage
from incident_detector.web.api import ERRORS_PATH, api_routes

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=70)


class Lines:
    """A sampler answering the lines given for a namespace, once."""

    def __init__(self, by_namespace: dict[str, list[LogLine]]) -> None:
        self.by_namespace = by_namespace

    async def sample_errors(self, *, namespace, workloads, start, end, limit):
        lines = self.by_namespace.pop(namespace, [])
        return tuple(line for line in lines if start <= line.at < end)


async def call(thunk):
    return await thunk()


def prioritize(example: str) -> tuple[Priority, str | None]:
    if "NullPointer" in example:
        return Priority.P1, "npe"
    if "timeout" in example:
        return Priority.P2, None
    return Priority.P4, None


@pytest.fixture
def triage():
    store = Store(":memory:")
    old = T0 - timedelta(seconds=30)
    sampler = Lines({
        "shop": [LogLine(old, 'level=error msg="timeout calling bank"', workload="payments-api")],
    })
    triage = Triage(connection=store.connection, loki=sampler, sample_lines=100, max_groups=50,
                    prioritize=prioritize, notify_priorities=("P1",))

    async def fill() -> None:
        await triage.read("shop", workloads=None, now=T0, call=call)
        await triage.read("pay", workloads=None, now=T0, call=call)
        # A tick in between: a read spans at most an hour.
        for namespace in ("shop", "pay"):
            await triage.read(namespace, workloads=None, now=T0 + timedelta(minutes=40), call=call)
        sampler.by_namespace.update({
            "shop": [LogLine(NOW - timedelta(seconds=3),
                             'level=error err="NullPointerException at Pay.java:88"',
                             workload="payments-api"),
                     LogLine(NOW - timedelta(seconds=2), 'level=error msg="cart lost"',
                             workload="checkout")],
            "pay": [LogLine(NOW - timedelta(seconds=1), 'level=error msg="ledger locked"',
                            workload=None)],
        })
        await triage.read("shop", workloads=None, now=NOW, call=call)
        await triage.read("pay", workloads=None, now=NOW, call=call)

    asyncio.run(fill())
    yield triage
    store.close()


@pytest.fixture
def client(triage):
    app = Starlette(routes=api_routes(detector=SimpleNamespace(triage=triage), clock=lambda: NOW))
    with TestClient(app) as client:
        yield client


def examples(client, query: str = "") -> list[str]:
    response = client.get(ERRORS_PATH + query)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["errors"])
    return [item["example"] for item in body["errors"]]


def test_all_groups_most_recently_seen_first(client):
    assert examples(client) == [
        'level=error msg="ledger locked"',
        'level=error msg="cart lost"',
        'level=error err="NullPointerException at Pay.java:88"',
        'level=error msg="timeout calling bank"',
    ]


def test_an_item_as_served(client):
    (item,) = client.get(ERRORS_PATH + "?priority=P1").json()["errors"]
    assert item == {
        "namespace": "shop",
        "fingerprint": 'level=error err="NullPointerException at Pay.java:<n>"',
        "example": 'level=error err="NullPointerException at Pay.java:88"',
        "workloads": ["payments-api"],
        "count": 1,
        "rate_per_minute": 0.5,
        "first_seen": "2026-11-23T13:09:57.000000Z",
        "last_seen": "2026-11-23T13:09:57.000000Z",
        "new": True,
        "priority": "P1",
        "rule": "npe",
        "sampled": False,
    }


@pytest.mark.parametrize("query, expected", [
    ("?namespace=pay", ['level=error msg="ledger locked"']),
    ("?namespace=nowhere", []),
    ("?deployment=checkout", ['level=error msg="cart lost"']),
    ("?namespace=shop&deployment=payments-api",
     ['level=error err="NullPointerException at Pay.java:88"',
      'level=error msg="timeout calling bank"']),
    ("?priority=P2", ['level=error msg="timeout calling bank"']),
    ("?priority=p2", ['level=error msg="timeout calling bank"']),
    ("?priority=P3", []),
    # The timeout was there when watching began: not new.
    ("?new=true", ['level=error msg="ledger locked"', 'level=error msg="cart lost"',
                   'level=error err="NullPointerException at Pay.java:88"']),
    ("?new=false", ['level=error msg="ledger locked"', 'level=error msg="cart lost"',
                    'level=error err="NullPointerException at Pay.java:88"',
                    'level=error msg="timeout calling bank"']),
    ("?new=TRUE&priority=P1", ['level=error err="NullPointerException at Pay.java:88"']),
    ("?limit=2", ['level=error msg="ledger locked"', 'level=error msg="cart lost"']),
    ("?limit=1000&unknown=ignored", ['level=error msg="ledger locked"',
                                     'level=error msg="cart lost"',
                                     'level=error err="NullPointerException at Pay.java:88"',
                                     'level=error msg="timeout calling bank"']),
])
def test_filters(client, query, expected):
    assert examples(client, query) == expected


def test_lines_without_a_workload_are_under_the_empty_workload(client):
    (item,) = client.get(ERRORS_PATH + "?namespace=pay").json()["errors"]
    assert item["workloads"] == [""]


@pytest.mark.parametrize("query, reason", [
    ("?priority=P5", "priority is one of P1, P2, P3, P4"),
    ("?priority=urgent", "priority is one of P1, P2, P3, P4"),
    ("?new=yes", "new is true or false"),
    ("?new=1", "new is true or false"),
    ("?limit=0", "limit is an integer from 1 to 1000"),
    ("?limit=1001", "limit is an integer from 1 to 1000"),
    ("?limit=ten", "limit is an integer from 1 to 1000"),
    ("?limit=-5", "limit is an integer from 1 to 1000"),
    ("?namespace=", "namespace is empty"),
    ("?deployment=%20", "deployment is empty"),
])
def test_bad_parameters_are_a_400_that_says_why(client, query, reason):
    response = client.get(ERRORS_PATH + query)
    assert response.status_code == 400
    assert response.json() == {"error": reason}


def test_only_get():
    app = Starlette(routes=api_routes(detector=SimpleNamespace(triage=None), clock=lambda: NOW))
    with TestClient(app) as client:
        assert client.post(ERRORS_PATH).status_code == 405
