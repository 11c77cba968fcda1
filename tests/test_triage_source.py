"""Error triage's shell: the real Loki client against a fake Loki at the HTTP boundary.

Two fakes: the simulated cluster's LokiFake on a loopback server (real LogQL over scenario
logs, Loki 3 levels) for the cost per tick and persistence, and respx answering lines chosen
per test (many signatures, failures) for the bounds and notifications.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from incident_detector.config import DEFAULT_ERROR_LEVELS, DEFAULT_ERROR_PATTERN
from incident_detector.errors import SourceError
from incident_detector.judge.signatures import fingerprint
from incident_detector.judge.triage import fold
from incident_detector.model import LogLine, Priority
from incident_detector.store.db import Database
from incident_detector.store.records import Store
from incident_detector.store.rows import db_time
from incident_detector.run.triage import MAX_READ_SPAN, RETENTION, Triage
from incident_detector.sim.fakes import LokiFake
from incident_detector.sim.replay import SCENARIO_EPOCH
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.sources.loki import (
    BUILDINFO_PATH,
    QUERY_RANGE_PATH,
    LabelKeys,
    LokiClient,
    unix_nanos,
)

SCENARIOS = Path(__file__).parent / "scenarios"
NAMESPACE_IN_QUERY = re.compile(r'namespace="([^"]+)"')
UTC = timezone.utc
HOUR = timedelta(hours=1)


def by_words(example: str) -> tuple[Priority, str | None]:
    """A stand-in for the rule engine."""
    if "NullPointerException" in example or "NPE" in example:
        return Priority.P1, "null-pointer"
    return Priority.P3, None


async def call(thunk):
    """What the daemon's wrapper does: the answer, or None when the source failed."""
    try:
        return await thunk()
    except SourceError:
        return None


class CountingSampler:
    """The real client, with its ``sample_errors`` calls counted per namespace."""

    def __init__(self, client: LokiClient) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    async def sample_errors(self, **kwargs):
        self.calls[kwargs["namespace"]] += 1
        return await self.client.sample_errors(**kwargs)


def make_triage(db: Database, loki, **overrides) -> Triage:
    options = dict(connection=db, loki=loki, sample_lines=500, max_groups=100,
                   prioritize=by_words, notify_priorities=("P1",),
                   first_window=timedelta(seconds=120))
    options.update(overrides)
    return Triage(**options)


# --- against the simulated Loki ------------------------------------------------------------------


class ByNamespace:
    """One LokiFake per namespace, chosen by the namespace matcher of the LogQL selector; every
    request is recorded as (namespace, path)."""

    def __init__(self, fakes: dict[str, LokiFake]) -> None:
        self.fakes = fakes
        self.requests: list[tuple[str | None, str]] = []

    def __call__(self, request: Request) -> Response:
        match = NAMESPACE_IN_QUERY.search(request.param("query", "") or "")
        namespace = match.group(1) if match else None
        self.requests.append((namespace, request.path))
        return self.fakes[namespace or next(iter(self.fakes))](request)


def world(name: str, namespace: str) -> World:
    scenario = load_scenario(SCENARIOS / name)
    return World(scenario.model_copy(update={"namespace": namespace}), t0=SCENARIO_EPOCH)


def sim_worlds() -> dict[str, World]:
    return {"shop": world("bad-rollout-sharp-spike.yaml", "shop"),
            "pay": world("busy-service-same-errors.yaml", "pay"),
            "quiet": world("clean-rollout.yaml", "quiet")}


def sim_client(url: str, match: str) -> LokiClient:
    return LokiClient(http=httpx.AsyncClient(base_url=url), keys=LabelKeys(),
                      pattern=DEFAULT_ERROR_PATTERN, levels=DEFAULT_ERROR_LEVELS, match=match,
                      max_attempts=1)


@pytest.mark.parametrize("match, legs", [("auto", 2), ("pattern", 1)])
def test_one_sample_per_namespace_per_tick_and_no_line_counted_twice(match, legs):
    """The cost per tick, counted at the HTTP boundary.

    Counted: the requests the fake Loki receives, per namespace named in their LogQL selector,
    during each tick (a ``read`` of every namespace, run concurrently as the daemon does).
    Per namespace and tick there is exactly one ``sample_errors`` call (the logical query). On
    Loki 3 with ERROR_MATCH=auto the client sends it as two HTTP requests, the two disjoint
    legs of ``error_lines_queries`` (lines at an error level; lines without a detected level
    matching ERROR_PATTERN), because LogQL has no union of log queries; with the pattern alone
    it is one request. The buildinfo request that decides between the two is sent once per
    client, not per tick, and is counted separately. So: 1 logical query, <= 2 HTTP requests,
    per namespace per tick, whatever the number of Deployments.
    """
    worlds = sim_worlds()
    router = ByNamespace({ns: LokiFake(w, lambda: SCENARIO_EPOCH) for ns, w in worlds.items()})
    ticks = 12

    async def run() -> tuple[Triage, list[LogLine]]:
        with LocalServer(router) as server:
            sampler = CountingSampler(sim_client(server.url, match))
            triage = make_triage(Store(":memory:").connection, sampler)
            for tick in range(ticks):
                now = SCENARIO_EPOCH + timedelta(seconds=20 * tick)
                router.requests.clear()
                sampler.calls.clear()
                await asyncio.gather(*(triage.read(ns, workloads=None, now=now, call=call)
                                       for ns in worlds))
                assert sampler.calls == Counter({ns: 1 for ns in worlds}), tick
                per_namespace = Counter(ns for ns, path in router.requests
                                        if path == QUERY_RANGE_PATH)
                assert per_namespace == Counter({ns: legs for ns in worlds}), tick
                assert all(path in (QUERY_RANGE_PATH, BUILDINFO_PATH)
                           for _, path in router.requests)
                assert sum(path == BUILDINFO_PATH for _, path in router.requests) == \
                    (1 if match == "auto" and tick == 0 else 0)
            # The same span in one go, as the reference for "nothing counted twice or missed".
            first = SCENARIO_EPOCH - timedelta(seconds=120)
            last = SCENARIO_EPOCH + timedelta(seconds=20 * (ticks - 1))
            everything = await sampler.client.sample_errors(
                namespace="shop", workloads=None, start=first, end=last, limit=5000)
            return triage, list(everything)

    triage, everything = asyncio.run(run())
    reference = fold({}, everything, namespace="shop", now=SCENARIO_EPOCH + HOUR,
                     sample_full=False, prioritize=by_words)
    shop = {(g["namespace"], g["fingerprint"]): g
            for g in triage.groups(namespace="shop", now=SCENARIO_EPOCH + timedelta(minutes=5))}
    assert {key: g.count for key, g in reference.items()} == \
        {key: g["count"] for key, g in shop.items()}
    assert {key: db_time(g.first_seen) for key, g in reference.items()} == \
        {key: g["first_seen"] for key, g in shop.items()}
    npe = next(g for g in shop.values() if "NullPointerException" in g["example"])
    assert npe["workloads"] == ["payments-api"] and npe["priority"] == "P1"
    assert npe["sampled"] is False
    # clean-rollout writes no error line: no group, and no query was skipped for it either.
    assert triage.groups(namespace="quiet", now=SCENARIO_EPOCH) == []


def test_persisted_groups_survive_a_restart_and_the_next_read_starts_after_them(tmp_path):
    worlds = {"shop": world("bad-rollout-sharp-spike.yaml", "shop")}
    router = ByNamespace({"shop": LokiFake(worlds["shop"], lambda: SCENARIO_EPOCH)})
    path = tmp_path / "state.sqlite3"
    starts: list[str] = []

    async def ticks(triage: Triage, seconds: Iterable[int]) -> None:
        for second in seconds:
            await triage.read("shop", workloads=["payments-api"],
                              now=SCENARIO_EPOCH + timedelta(seconds=second), call=call)

    async def run() -> tuple[list, list, list]:
        with LocalServer(router) as server:
            store = Store(path)
            first = make_triage(store.connection, sim_client(server.url, "pattern"))
            await ticks(first, range(0, 200, 20))
            before = first.groups(now=SCENARIO_EPOCH + timedelta(seconds=200))
            store.close()

            store = Store(path)
            second = make_triage(store.connection, sim_client(server.url, "pattern"))
            after_load = second.groups(now=SCENARIO_EPOCH + timedelta(seconds=200))
            server.requests.clear()
            await ticks(second, range(400, 420, 20))
            starts.extend(r.param("start") for r in server.requests)
            # The reference: one process reading the same times, without a restart.
            reference = make_triage(Store(":memory:").connection,
                                    sim_client(server.url, "pattern"))
            await ticks(reference, [*range(0, 200, 20), 400])
            store.close()
            then = SCENARIO_EPOCH + timedelta(seconds=400)
            return before, after_load, [second.groups(now=then), reference.groups(now=then)]

    before, after_load, (restarted, reference) = asyncio.run(run())
    assert before and after_load == before
    # The first read after the restart starts one microsecond after the newest line counted:
    # the lines written while the detector was down are read, and none a second time, so the
    # counts are those of a process that never stopped.
    newest = max(datetime.fromisoformat(g["last_seen"]) for g in before)
    assert starts == [unix_nanos(newest + timedelta(microseconds=1))]
    assert [(g["fingerprint"], g["count"], g["first_seen"]) for g in restarted] == \
        [(g["fingerprint"], g["count"], g["first_seen"]) for g in reference]


# --- against respx: lines chosen per test ---------------------------------------------------------

LOKI_URL = "http://loki.test:3100"
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class LinesLoki:
    """A respx side effect answering range log queries from a list of (namespace, workload,
    time, line), as Loki does: start inclusive, end exclusive, the newest ``limit`` first."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, datetime, str]] = []
        self.requests: list[dict[str, str]] = []
        self.fail_next = 0

    def add(self, namespace: str, workload: str, at: datetime, line: str) -> None:
        self.entries.append((namespace, workload, at, line))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        self.requests.append(params)
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503, text="too many outstanding requests")
        namespace = NAMESPACE_IN_QUERY.search(params["query"]).group(1)
        start, end, limit = int(params["start"]), int(params["end"]), int(params["limit"])
        chosen = sorted(
            (e for e in self.entries
             if e[0] == namespace and start <= int(unix_nanos(e[2])) < end),
            key=lambda e: e[2], reverse=True)[:limit]
        streams: dict[str, list] = {}
        for _, workload, at, line in chosen:
            streams.setdefault(workload, []).append([unix_nanos(at), line])
        body = {"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"namespace": namespace, "app": workload}, "values": values}
            for workload, values in streams.items()]}}
        return httpx.Response(200, json=body)


def respx_client() -> LokiClient:
    return LokiClient(http=httpx.AsyncClient(base_url=LOKI_URL), keys=LabelKeys(),
                      pattern=DEFAULT_ERROR_PATTERN, match="pattern", max_attempts=1)


@pytest.fixture
def loki():
    fake = LinesLoki()
    with respx.mock(base_url=LOKI_URL, assert_all_called=False) as mock:
        mock.get(QUERY_RANGE_PATH).mock(side_effect=fake)
        yield fake


@pytest.fixture
def store(store_target):
    store = Store(store_target)
    yield store
    store.close()


def read(triage: Triage, now: datetime, namespace: str = "shop", workloads=None):
    return asyncio.run(triage.read(namespace, workloads=workloads, now=now, call=call))


def rows(store: Store) -> list[tuple]:
    return store.connection.execute(
        "SELECT namespace, fingerprint, count, notified_at, sampled FROM error_groups"
        " ORDER BY last_seen").fetchall()


def test_sample_lines_zero_turns_triage_off(loki, store):
    loki.add("shop", "api", T0 - timedelta(seconds=5), "level=error msg=boom")
    triage = make_triage(store.connection, respx_client(), sample_lines=0)
    assert read(triage, T0) == []
    assert loki.requests == [] and len(triage) == 0 and rows(store) == []
    assert not triage.enabled


def test_each_read_covers_the_time_since_the_previous_one(loki, store):
    triage = make_triage(store.connection, respx_client())
    read(triage, T0)
    read(triage, T0 + timedelta(seconds=15))
    assert [(r["start"], r["end"]) for r in loki.requests] == [
        (unix_nanos(T0 - timedelta(seconds=120)), unix_nanos(T0)),
        (unix_nanos(T0), unix_nanos(T0 + timedelta(seconds=15))),
    ]
    assert loki.requests[0]["limit"] == "500" and loki.requests[0]["direction"] == "backward"
    # The same instant again (or a clock gone back): nothing to read, no query.
    read(triage, T0 + timedelta(seconds=15))
    read(triage, T0 + timedelta(seconds=10))
    assert len(loki.requests) == 2
    # No workload to read: no query either.
    read(triage, T0 + timedelta(seconds=30), workloads=[])
    assert len(loki.requests) == 2


def test_a_failed_read_changes_nothing_and_the_next_covers_the_gap(loki, store):
    loki.add("shop", "api", T0 + timedelta(seconds=5), 'level=error msg="db down"')
    triage = make_triage(store.connection, respx_client())
    read(triage, T0)
    loki.fail_next = 1
    assert read(triage, T0 + timedelta(seconds=20)) == []
    assert len(triage) == 0 and rows(store) == []
    read(triage, T0 + timedelta(seconds=40))
    assert loki.requests[-1]["start"] == unix_nanos(T0)  # the failed read's range too
    assert [r[2] for r in rows(store)] == [1]


def test_a_long_gap_is_read_over_at_most_the_maximum_span_and_marked_sampled(loki, store):
    triage = make_triage(store.connection, respx_client())
    read(triage, T0)
    later = T0 + 3 * MAX_READ_SPAN
    loki.add("shop", "api", later - timedelta(seconds=1), 'level=error msg="db down"')
    read(triage, later)
    assert loki.requests[-1]["start"] == unix_nanos(later - MAX_READ_SPAN)
    assert [r[4] for r in rows(store)] == [1]


def test_a_full_sample_marks_the_counts_as_lower_bounds(loki, store):
    for second in range(10):
        loki.add("shop", "api", T0 - timedelta(seconds=second + 1), 'level=error msg="db down"')
    triage = make_triage(store.connection, respx_client(), sample_lines=4)
    read(triage, T0)
    (group,) = triage.groups(now=T0)
    assert (group["count"], group["sampled"]) == (4, True)


def test_groups_stay_within_max_groups_in_memory_and_in_the_store(loki, store):
    triage = make_triage(store.connection, respx_client(), max_groups=3)
    for tick in range(6):
        now = T0 + timedelta(seconds=20 * tick)
        for kind in range(3):
            loki.add("shop", "api", now - timedelta(seconds=kind + 1),
                     f'level=error msg="failure kind {chr(97 + tick)}{chr(97 + kind)}"')
        read(triage, now)
        assert len(triage) <= 3
        assert len(rows(store)) <= 3
    kept = {g["example"] for g in triage.groups(now=T0 + HOUR)}
    # The most recently seen: the last tick's three.
    assert kept == {f'level=error msg="failure kind f{k}"' for k in "abc"}
    assert {r[1] for r in rows(store)} == {fingerprint(e) for e in kept}


def test_groups_not_seen_for_the_retention_leave_memory_and_store(loki, store):
    loki.add("shop", "api", T0 - timedelta(seconds=1), 'level=error msg="old failure"')
    # A row another process left behind, long unseen.
    store.connection.execute(
        "INSERT INTO error_groups (namespace, fingerprint, workloads, example, count, first_seen,"
        " last_seen, priority) VALUES ('pay', 'stale', '[]', 'stale', 1, ?, ?, 'P4')",
        (db_time(T0 - 2 * RETENTION), db_time(T0 - 2 * RETENTION)))
    triage = make_triage(store.connection, respx_client())
    read(triage, T0)
    assert [r[1] for r in rows(store)] == ['level=error msg="old failure"']
    later = T0 + RETENTION + timedelta(minutes=1)
    loki.add("shop", "api", later - timedelta(seconds=1), 'level=error msg="new failure"')
    read(triage, later)
    assert [r[1] for r in rows(store)] == ['level=error msg="new failure"']
    assert [g["example"] for g in triage.groups(now=later)] == ['level=error msg="new failure"']


NPE_LINE = 'level=error msg="charge failed" err="NullPointerException at Pay.java:{}"'


def test_a_new_p1_group_notifies_once_marked_and_never_again(loki, tmp_path):
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    triage = make_triage(store.connection, respx_client())
    # Watching for an hour and a half: the P3 timeout was there from the start.
    for minute in range(0, 91, 5):
        now = T0 + timedelta(minutes=minute)
        loki.add("shop", "api", now - timedelta(seconds=3), 'level=error msg="bank timeout"')
        assert read(triage, now) == []
    now = T0 + timedelta(minutes=95)
    loki.add("shop", "api", now - timedelta(seconds=3), NPE_LINE.format(88))
    loki.add("shop", "api", now - timedelta(seconds=2), 'level=warn msg="an error, P3"')
    due = read(triage, now)
    assert [(g.priority, g.rule, g.count) for g in due] == [(Priority.P1, "null-pointer", 1)]
    (npe,) = due
    # Not marked by read: until the caller says it recorded the notification, it stays due.
    loki.add("shop", "api", now + timedelta(seconds=5), NPE_LINE.format(91))
    assert [g.key for g in read(triage, now + timedelta(seconds=20))] == [npe.key]
    assert triage.mark_notified([npe.key, npe.key, ("shop", "unknown")],
                                now=now + timedelta(seconds=21)) == 1
    assert triage.mark_notified([npe.key], now=now + timedelta(seconds=22)) == 0
    assert read(triage, now + timedelta(seconds=40)) == []
    # The new group shows as new on the API; the old timeout does not.
    listed = {g["example"][:30]: g for g in triage.groups(now=now + timedelta(seconds=40))}
    assert listed[NPE_LINE.format(88)[:30]]["new"] is True
    assert listed['level=error msg="bank timeout"']["new"] is False
    store.close()

    # A restart keeps notified_at, and "watching since" comes from the stored groups.
    store = Store(path)
    again = make_triage(store.connection, respx_client())
    assert read(again, now + timedelta(minutes=1)) == []
    notified = store.connection.execute(
        "SELECT notified_at FROM error_groups WHERE fingerprint=?", (npe.fingerprint,)).fetchone()
    assert notified == (db_time(now + timedelta(seconds=21)),)
    later = now + timedelta(minutes=2)
    loki.add("shop", "api", later - timedelta(seconds=1),
             'level=error msg="NPE in ledger" err="NullPointerException"')
    assert [g.example for g in read(again, later)] == \
        ['level=error msg="NPE in ledger" err="NullPointerException"']
    store.close()


def test_reprioritize_applies_new_rules_and_keeps_notifications(loki, store):
    triage = make_triage(store.connection, respx_client())
    start = T0
    read(triage, start)
    now = T0 + timedelta(minutes=70)
    loki.add("shop", "api", now - timedelta(seconds=2), NPE_LINE.format(1))
    loki.add("shop", "api", now - timedelta(seconds=1), 'level=error msg="disk full"')
    (npe,) = read(triage, now)
    triage.mark_notified([npe.key], now=now)

    def disk_is_urgent(example):
        return (Priority.P1, "disk") if "disk" in example else (Priority.P2, "rest")

    assert triage.reprioritize(disk_is_urgent) == 2
    by_example = {g["example"]: g for g in triage.groups(now=now)}
    assert by_example[NPE_LINE.format(1)]["priority"] == "P2"
    assert by_example['level=error msg="disk full"']["rule"] == "disk"
    stored = dict(store.connection.execute("SELECT example, priority FROM error_groups"))
    assert stored == {NPE_LINE.format(1): "P2", 'level=error msg="disk full"': "P1"}
    # The disk group is P1 now, new and never notified: the next read returns it; the NPE
    # group keeps its notification.
    due = read(triage, now + timedelta(seconds=20))
    assert [g.example for g in due] == ['level=error msg="disk full"']
    assert triage.reprioritize(disk_is_urgent) == 0


def test_groups_filters_and_order(loki, store):
    triage = make_triage(store.connection, respx_client())
    read(triage, T0, namespace="shop")
    read(triage, T0, namespace="pay")
    now = T0 + timedelta(minutes=70)
    loki.add("shop", "payments-api", now - timedelta(seconds=3), NPE_LINE.format(1))
    loki.add("shop", "checkout", now - timedelta(seconds=2), 'level=error msg="cart lost"')
    loki.add("pay", "ledger", now - timedelta(seconds=1), 'level=error msg="ledger locked"')
    read(triage, now, namespace="shop")
    read(triage, now, namespace="pay")
    examples = lambda **kw: [g["example"] for g in triage.groups(now=now, **kw)]  # noqa: E731
    assert examples() == ['level=error msg="ledger locked"', 'level=error msg="cart lost"',
                          NPE_LINE.format(1)]
    assert examples(namespace="shop") == ['level=error msg="cart lost"', NPE_LINE.format(1)]
    assert examples(deployment="payments-api") == [NPE_LINE.format(1)]
    assert examples(priority="P1") == examples(priority=Priority.P1) == [NPE_LINE.format(1)]
    assert examples(limit=1) == ['level=error msg="ledger locked"']
    assert len(examples(new_only=True)) == 3
    (item,) = triage.groups(now=now, namespace="pay")
    assert set(item) == {"namespace", "fingerprint", "example", "workloads", "count",
                         "rate_per_minute", "first_seen", "last_seen", "new", "priority", "rule",
                         "sampled"}
    assert item["rate_per_minute"] == 0.5  # 1 line, over the 2-minute window
    json.dumps(item)
