"""Leader election: the pure decision over many cases, then real electors (the official client)
competing for a Lease held by a fake API server on 127.0.0.1, with time driven by a test clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from structlog.testing import capture_logs

from apiserver import LEASES_PATH, NAMESPACE, Response, StatefulApiServer, load_recording
from incident_detector.errors import SourceError
from incident_detector.run.leader import (
    LEASE_NAME,
    LEASE_PERMISSIONS,
    LeaderElector,
    LeaseAction,
    LeaseRecord,
    decide_lease,
    lease_body,
    lease_expiry,
    parse_lease,
)
from incident_detector.sources.kube_http import api_client_for
from incident_detector.sources.kube_objects import micro_time

TOKEN = "s3cr3t-lease-token-0123456789"
LEASE_PATH = f"{LEASES_PATH}/{LEASE_NAME}"
# The time of the recorded Lease creation.
T0 = datetime(2026, 11, 23, 17, 56, 7, tzinfo=timezone.utc)
ME, OTHER = "incident-detector-0", "incident-detector-1"
CREATE, RENEW, TAKE_OVER, FOLLOW = (LeaseAction.CREATE, LeaseAction.RENEW, LeaseAction.TAKE_OVER,
                                    LeaseAction.FOLLOW)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def record(holder: str | None = OTHER, *, renew: datetime | None = T0,
           acquire: datetime | None = T0, duration: int = 15, transitions: int = 0,
           version: str | None = "1") -> LeaseRecord:
    return LeaseRecord(holder=holder, lease_duration_seconds=duration, acquire_time=acquire,
                       renew_time=renew, transitions=transitions, resource_version=version)


def decide(rec: LeaseRecord | None, now: datetime, *, identity: str = ME,
           lease_duration: float = 15.0) -> LeaseAction:
    return decide_lease(rec, identity=identity, now=now, lease_duration=lease_duration)


# ---------------------------------------------------------------------------------------------
# The pure decision.


def test_decide_lease():
    # No Lease yet.
    assert decide(None, T0) == CREATE
    assert decide(None, T0 + seconds(3600)) == CREATE
    # Ours: renewed whatever its times say (the resourceVersion guards the write).
    assert decide(record(ME), T0) == RENEW
    assert decide(record(ME), T0 + seconds(3600)) == RENEW
    assert decide(record(ME, renew=None, acquire=None), T0) == RENEW
    # Released.
    assert decide(record(None), T0) == TAKE_OVER
    assert decide(record(""), T0) == TAKE_OVER
    assert decide(record(None, renew=T0 + seconds(60)), T0) == TAKE_OVER
    # Someone else's, live.
    assert decide(record(OTHER), T0) == FOLLOW
    assert decide(record(OTHER), T0 + seconds(1)) == FOLLOW
    assert decide(record(OTHER), T0 + seconds(14.999999)) == FOLLOW
    # Expired only strictly after renewTime + duration.
    assert decide(record(OTHER), T0 + seconds(15)) == FOLLOW
    assert decide(record(OTHER), T0 + seconds(15) + timedelta(microseconds=1)) == TAKE_OVER
    assert decide(record(OTHER), T0 + seconds(16)) == TAKE_OVER
    assert decide(record(OTHER), T0 + seconds(86400 * 365)) == TAKE_OVER
    # A renewTime ahead of our clock (the holder's clock runs fast) is live.
    assert decide(record(OTHER, renew=T0 + seconds(10)), T0) == FOLLOW
    assert decide(record(OTHER, renew=T0 + seconds(10)), T0 + seconds(25)) == FOLLOW
    assert decide(record(OTHER, renew=T0 + seconds(10)), T0 + seconds(26)) == TAKE_OVER
    # The clock went backwards.
    assert decide(record(OTHER), T0 - seconds(3600)) == FOLLOW


def test_decide_lease_without_renew_time():
    # acquireTime stands in for a missing renewTime.
    assert decide(record(OTHER, renew=None), T0 + seconds(10)) == FOLLOW
    assert decide(record(OTHER, renew=None), T0 + seconds(16)) == TAKE_OVER
    # Nothing says the holder is alive.
    assert decide(record(OTHER, renew=None, acquire=None), T0) == TAKE_OVER
    # renewTime wins over an older acquireTime.
    assert decide(record(OTHER, renew=T0, acquire=T0 - seconds(600)), T0 + seconds(10)) == FOLLOW


def test_decide_lease_waits_for_the_longer_of_the_two_durations():
    # The holder promised 60 s: we do not take over after our own 15 s.
    assert decide(record(OTHER, duration=60), T0 + seconds(30)) == FOLLOW
    assert decide(record(OTHER, duration=60), T0 + seconds(61)) == TAKE_OVER
    # The holder declared less (or nothing): our own duration still applies.
    assert decide(record(OTHER, duration=5), T0 + seconds(10)) == FOLLOW
    assert decide(record(OTHER, duration=0), T0 + seconds(10)) == FOLLOW
    assert decide(record(OTHER, duration=0), T0 + seconds(16)) == TAKE_OVER
    assert decide(record(OTHER, duration=5), T0 + seconds(10), lease_duration=8) == TAKE_OVER


def test_decide_lease_time_zones():
    naive_now = datetime(2026, 11, 23, 17, 56, 17)  # taken as UTC
    assert decide(record(OTHER), naive_now) == FOLLOW
    assert decide(record(OTHER), naive_now + seconds(6)) == TAKE_OVER
    plus_two = timezone(timedelta(hours=2))
    assert decide(record(OTHER), datetime(2026, 11, 23, 19, 56, 20, tzinfo=plus_two)) == FOLLOW
    assert decide(record(OTHER), datetime(2026, 11, 23, 19, 56, 23, tzinfo=plus_two)) == TAKE_OVER


def test_lease_expiry():
    assert lease_expiry(record(OTHER), lease_duration=15) == T0 + seconds(15)
    assert lease_expiry(record(OTHER, duration=40), lease_duration=15) == T0 + seconds(40)
    assert lease_expiry(record(OTHER, renew=None), lease_duration=15) == T0 + seconds(15)
    assert lease_expiry(record(OTHER, renew=None, acquire=None), lease_duration=15) is None
    assert lease_expiry(record(OTHER), lease_duration=15.5) == T0 + seconds(15.5)


def test_lease_body_is_the_recorded_wire_format():
    body = lease_body(name=LEASE_NAME, namespace=NAMESPACE, holder=ME, lease_duration_seconds=15,
                      acquire_time=T0, renew_time=T0, transitions=0)
    assert body == load_recording("lease_create.json")["request"]["body"]
    released = lease_body(name=LEASE_NAME, namespace=NAMESPACE, holder=None,
                          lease_duration_seconds=15, acquire_time=None, renew_time=T0,
                          transitions=3, resource_version="42")
    assert released["metadata"]["resourceVersion"] == "42"
    assert released["spec"]["holderIdentity"] is None and released["spec"]["acquireTime"] is None


def test_parse_lease_of_the_recorded_response():
    body = json.dumps(load_recording("lease_create.json")["response"]["json"]).encode()
    assert parse_lease(body) == LeaseRecord(holder=ME, lease_duration_seconds=15, acquire_time=T0,
                                            renew_time=T0, transitions=0, resource_version="237")


@pytest.mark.parametrize("spec, expected", [
    ({}, record(None, renew=None, acquire=None, duration=0, version=None)),
    ({"holderIdentity": "", "leaseDurationSeconds": "15", "leaseTransitions": -2},
     record(None, renew=None, acquire=None, duration=0, version=None)),
    ({"holderIdentity": 7, "renewTime": "yesterday", "acquireTime": 12,
      "leaseDurationSeconds": True, "leaseTransitions": 4.5},
     record(None, renew=None, acquire=None, duration=0, version=None)),
    ({"holderIdentity": OTHER, "renewTime": "2026-11-23T17:56:07.000000Z", "leaseTransitions": 3},
     record(OTHER, renew=T0, acquire=None, duration=0, transitions=3, version=None)),
])
def test_parse_lease_takes_odd_values_as_absent(spec, expected):
    assert parse_lease(json.dumps({"kind": "Lease", "spec": spec}).encode()) == expected


@pytest.mark.parametrize("body", [b"not json", b"[]", b'"Lease"',
                                  json.dumps({"kind": "Status", "code": 200}).encode()])
def test_parse_lease_of_something_else_raises_source_error(body):
    with pytest.raises(SourceError) as caught:
        parse_lease(body)
    assert caught.value.retryable and caught.value.source == "kubernetes"


def test_elector_settings_are_checked():
    api = api_client_for("http://127.0.0.1:9")
    with pytest.raises(ValueError):
        LeaderElector(api=api, namespace=NAMESPACE, identity="")
    with pytest.raises(ValueError):
        LeaderElector(api=api, namespace=NAMESPACE, identity=ME, lease_duration=5,
                      renew_interval=5)
    with pytest.raises(ValueError):
        LeaderElector(api=api, namespace=NAMESPACE, identity=ME, renew_interval=0)


# ---------------------------------------------------------------------------------------------
# Electors against the fake API server.


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: float) -> None:
        self.now += seconds(by)




def elector(server: StatefulApiServer, identity: str, clock: Clock, *,
            url: str | None = None, **options: Any) -> LeaderElector:
    return LeaderElector(api=api_client_for(url or server.url, token=TOKEN), namespace=NAMESPACE,
                         identity=identity, clock=clock, **options)


def step(*electors: LeaderElector) -> list[bool]:
    async def steps() -> list[bool]:
        return [await e.try_acquire_or_renew() for e in electors]
    return asyncio.run(steps())


def test_first_replica_creates_the_lease_and_leads(apiserver):
    clock = Clock()
    first = elector(apiserver, ME, clock)

    with capture_logs() as logs:
        assert step(first) == [True]

    assert first.is_leader
    assert apiserver.paths == [("GET", LEASE_PATH), ("POST", LEASES_PATH)]
    get, post = apiserver.requests
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["content-type"] == "application/json"
    assert get.headers["accept"] == "application/json" and "content-type" not in get.headers
    # Sent exactly as the recorded request that a real API server accepted.
    assert post.json() == load_recording("lease_create.json")["request"]["body"]
    assert [log["event"] for log in logs] == ["leader.acquired"]
    assert first.status() == {"role": "leader", "identity": ME, "lease": LEASE_NAME,
                              "holder": ME, "last_renew": "2026-11-23T17:56:07.000000Z"}


def test_second_replica_follows(apiserver):
    clock = Clock()
    first, second = elector(apiserver, ME, clock), elector(apiserver, OTHER, clock)

    with capture_logs() as logs:
        assert step(first, second) == [True, False]
        clock.advance(5)
        assert step(first, second) == [True, False]

    assert not second.is_leader
    assert [(log["event"], log.get("identity")) for log in logs] == [("leader.acquired", ME)]
    assert second.status() == {"role": "standby", "identity": OTHER, "lease": LEASE_NAME,
                               "holder": ME, "last_renew": "2026-11-23T17:56:12.000000Z"}
    # The follower only reads: first's GET+POST, second's GET, first's GET+PUT, second's GET.
    assert apiserver.paths == [("GET", LEASE_PATH), ("POST", LEASES_PATH), ("GET", LEASE_PATH),
                               ("GET", LEASE_PATH), ("PUT", LEASE_PATH), ("GET", LEASE_PATH)]


def test_leader_renews_with_compare_and_swap(apiserver):
    clock = Clock()
    leader = elector(apiserver, ME, clock)
    step(leader)
    created_version = apiserver.leases[LEASE_NAME]["metadata"]["resourceVersion"]

    clock.advance(5)
    assert step(leader) == [True]

    put = apiserver.requests[-1]
    assert (put.method, put.path) == ("PUT", LEASE_PATH)
    assert put.json()["metadata"]["resourceVersion"] == created_version
    assert apiserver.lease_spec(LEASE_NAME) == {
        "holderIdentity": ME, "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-23T17:56:07.000000Z", "renewTime": "2026-11-23T17:56:12.000000Z",
        "leaseTransitions": 0}
    assert apiserver.leases[LEASE_NAME]["metadata"]["resourceVersion"] != created_version


def test_standby_takes_over_after_the_lease_duration(apiserver):
    leader_clock, standby_clock = Clock(), Clock()
    leader, standby = elector(apiserver, ME, leader_clock), elector(apiserver, OTHER, standby_clock)
    step(leader, standby)

    # The leader stops renewing (it died, or hangs).
    standby_clock.advance(15)
    assert step(standby) == [False]
    standby_clock.advance(0.001)
    with capture_logs() as logs:
        assert step(standby) == [True]

    spec = apiserver.lease_spec(LEASE_NAME)
    assert spec["holderIdentity"] == OTHER and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == spec["renewTime"] == "2026-11-23T17:56:22.001000Z"
    assert [log["event"] for log in logs] == ["leader.acquired"]
    # The old leader's own clock says its lease is over: it no longer claims to lead ...
    leader_clock.advance(15.001)
    assert not leader.is_leader
    # ... and its next step sees the new holder.
    with capture_logs() as logs:
        assert step(leader) == [False]
    assert [(log["event"], log["reason"], log["holder"]) for log in logs] == \
        [("leader.lost", "lease_held_by_other", OTHER)]


def test_a_leader_that_lost_the_lease_steps_down_at_its_next_step(apiserver):
    clock = Clock()
    leader = elector(apiserver, ME, clock)
    step(leader)
    # Another replica took the lease (its view of time differed): the leader must notice.
    apiserver.put_lease(LEASE_NAME, {"holderIdentity": OTHER, "leaseDurationSeconds": 15,
                                     "renewTime": micro_time(T0), "leaseTransitions": 1})
    clock.advance(5)
    with capture_logs() as logs:
        assert step(leader) == [False]
    assert not leader.is_leader
    assert [log["event"] for log in logs] == ["leader.lost"]


@pytest.mark.parametrize("existing", [False, True], ids=["create_race", "takeover_race"])
def test_two_electors_racing_make_exactly_one_leader(apiserver, existing):
    clock = Clock()
    if existing:
        apiserver.put_lease(LEASE_NAME, {"holderIdentity": "gone", "leaseDurationSeconds": 15,
                                         "renewTime": micro_time(T0 - seconds(60)),
                                         "leaseTransitions": 4})
    # Both read the same resourceVersion before either writes.
    apiserver.hold_lease_reads(2)
    first, second = elector(apiserver, ME, clock), elector(apiserver, OTHER, clock)

    async def race() -> list[bool]:
        return list(await asyncio.gather(first.try_acquire_or_renew(),
                                         second.try_acquire_or_renew()))

    with capture_logs() as logs:
        results = asyncio.run(race())

    assert sorted(results) == [False, True]
    # Losing the race (409) is not an API failure.
    assert [log["event"] for log in logs] == ["leader.acquired"]
    writes = [method for method, path in apiserver.paths if method in ("POST", "PUT")]
    assert writes == (["PUT", "PUT"] if existing else ["POST", "POST"])
    winner = ME if results[0] else OTHER
    spec = apiserver.lease_spec(LEASE_NAME)
    assert spec["holderIdentity"] == winner
    assert spec.get("leaseTransitions", 0) == (5 if existing else 0)
    loser = second if results[0] else first
    assert not loser.is_leader and loser.status()["role"] == "standby"


def test_release_on_stop_lets_the_standby_take_over_at_once(apiserver):
    clock = Clock()
    leader, standby = elector(apiserver, ME, clock), elector(apiserver, OTHER, clock)
    step(leader, standby)
    stop = asyncio.Event()

    async def run_then_stop() -> None:
        task = asyncio.create_task(leader.run(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)

    with capture_logs() as logs:
        asyncio.run(run_then_stop())

    assert not leader.is_leader
    spec = apiserver.lease_spec(LEASE_NAME)
    assert "holderIdentity" not in spec  # null on the wire, omitted by the server
    assert spec["renewTime"] == "2026-11-23T17:55:52.000000Z"  # already expired
    assert {"event": "leader.lost", "reason": "released"}.items() <= logs[-1].items()
    # Same instant, no waiting for the lease duration.
    assert step(standby) == [True]
    assert apiserver.lease_spec(LEASE_NAME)["leaseTransitions"] == 1


def test_release_that_lost_the_race_does_not_raise(apiserver):
    clock = Clock()
    leader = elector(apiserver, ME, clock)
    step(leader)
    apiserver.put_lease(LEASE_NAME, {"holderIdentity": OTHER, "leaseDurationSeconds": 15,
                                     "renewTime": micro_time(T0), "leaseTransitions": 1})

    assert asyncio.run(leader.release()) is False  # 409: the lease is someone else's now
    assert not leader.is_leader
    assert apiserver.lease_spec(LEASE_NAME)["holderIdentity"] == OTHER


def test_api_failure_while_leader_steps_down_when_the_lease_expires(apiserver):
    clock, standby_clock = Clock(), Clock()
    leader, standby = elector(apiserver, ME, clock), elector(apiserver, OTHER, standby_clock)
    step(leader)
    apiserver.serve(LEASE_PATH, Response(503, {"kind": "Status", "code": 503,
                                               "reason": "ServiceUnavailable"}))
    with capture_logs() as logs:
        for _ in range(3):
            clock.advance(5)
            assert step(leader) == [True]  # up to T0 + 15: still within the lease we wrote
        assert leader.is_leader
        clock.advance(0.001)
        # Past the lease: no longer leader, even before the next step.
        assert not leader.is_leader
        assert step(leader) == [False]

    assert [(log["event"], log.get("reason")) for log in logs] == \
        [("leader.api_error", "ServiceUnavailable"), ("leader.lost", "renew_failed")]
    # The standby may take over exactly when the old leader stopped: never two leaders.
    apiserver.unserve(LEASE_PATH)
    standby_clock.now = clock.now
    assert step(standby) == [True]
    assert not leader.is_leader


def test_api_recovery_is_logged_once(apiserver):
    clock = Clock()
    leader = elector(apiserver, ME, clock)
    step(leader)
    apiserver.serve(LEASE_PATH, Response(500, "oops", "text/plain"))
    with capture_logs() as logs:
        clock.advance(5)
        step(leader)
        clock.advance(5)
        step(leader)
        apiserver.unserve(LEASE_PATH)
        clock.advance(1)
        assert step(leader) == [True]
    assert [log["event"] for log in logs] == ["leader.api_error", "leader.api_recovered"]
    assert apiserver.lease_spec(LEASE_NAME)["renewTime"] == "2026-11-23T17:56:18.000000Z"


def test_forbidden_follows_and_never_shows_the_token(apiserver):
    clock = Clock()
    follower = elector(apiserver, ME, clock)
    apiserver.serve(LEASE_PATH, Response(403, {
        "kind": "Status", "code": 403, "reason": "Forbidden",
        "message": f'leases.coordination.k8s.io "incident-detector" is forbidden: token {TOKEN}'}))

    with capture_logs() as logs:
        assert step(follower, follower) == [False, False]

    assert [log["event"] for log in logs] == ["leader.api_error"]
    assert TOKEN not in repr(logs) and "[redacted]" in logs[0]["message"]
    assert ("POST", LEASES_PATH) not in apiserver.paths


def test_run_never_raises_on_api_errors():
    clock = Clock()
    with socket_bound_but_closed() as url:
        unreachable = LeaderElector(api=api_client_for(url), namespace=NAMESPACE,
                                    identity=ME, clock=clock, renew_interval=0.01,
                                    lease_duration=1, timeout=0.5)
        stop = asyncio.Event()

        async def run_briefly() -> None:
            task = asyncio.create_task(unreachable.run(stop))
            await until(lambda: logs, what="the first failure's log")
            await asyncio.sleep(0.1)  # more failing steps, which log nothing more
            stop.set()
            await asyncio.wait_for(task, 30)

        with capture_logs() as logs:
            asyncio.run(run_briefly())

    assert not unreachable.is_leader
    assert [log["event"] for log in logs] == ["leader.api_error"]
    assert logs[0]["reason"] == "connection"


# How long a test waits for what normally takes milliseconds; only a failing test waits it out.
CEILING_SECONDS = 30.0


async def until(condition: Callable[[], Any], *, what: str) -> None:
    deadline = time.monotonic() + CEILING_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {CEILING_SECONDS:g} s for {what}")
        await asyncio.sleep(0.005)


def run_until(elector_: LeaderElector, condition: Callable[[], Any], *, what: str) -> float:
    """Run ``elector_`` until ``condition()`` holds, then stop it: how long that took."""
    stop = asyncio.Event()

    async def scenario() -> float:
        started = time.monotonic()
        task = asyncio.create_task(elector_.run(stop))
        await until(condition, what=what)
        took = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, CEILING_SECONDS)
        return took

    return asyncio.run(scenario())


def puts(apiserver: StatefulApiServer) -> int:
    return len([method for method, _ in apiserver.paths if method == "PUT"])


def test_run_logs_changes_only(apiserver):
    leader = elector(apiserver, ME, Clock(), renew_interval=0.01)

    with capture_logs() as logs:
        run_until(leader, lambda: puts(apiserver) >= 3, what="three renewals")

    assert [log["event"] for log in logs] == ["leader.acquired", "leader.lost"]


def test_run_wakes_at_once_on_stop(apiserver):
    # Steps ten minutes apart: the runs below end within the ceiling only if the stop wakes them.
    leader = elector(apiserver, ME, Clock(), renew_interval=600, lease_duration=1200)
    standby = elector(apiserver, OTHER, Clock(), renew_interval=600, lease_duration=1200)
    step(leader)
    gets = len(apiserver.paths)

    run_until(standby, lambda: len(apiserver.paths) > gets, what="the standby's first look")
    assert not standby.is_leader
    run_until(leader, lambda: len(apiserver.paths) > gets + 1, what="the leader's renewal")
    assert not leader.is_leader  # released on stop


def test_no_busy_loop_on_an_expired_lease_the_api_will_not_let_us_take(apiserver):
    # The holder's lease expired long ago, but every write fails: one try per interval.
    apiserver.put_lease(LEASE_NAME, {"holderIdentity": "gone", "leaseDurationSeconds": 15,
                                     "renewTime": micro_time(T0 - seconds(60))})
    apiserver.serve(LEASE_PATH, Response(500, "no", "text/plain"), method="PUT")
    standby = elector(apiserver, OTHER, Clock(), renew_interval=0.1, lease_duration=1)

    took = run_until(standby, lambda: puts(apiserver) >= 3, what="three tries")

    # Two intervals at least between the first try and the third (a busy loop: milliseconds).
    # A loaded machine only makes this longer.
    assert took >= 2 * 0.1 * 0.95


def test_standby_looks_again_as_soon_as_the_lease_expires(apiserver):
    # Real time here. The dead holder's lease ends half a second from now: the standby's next
    # look must come then, not a whole renew interval (a minute) after its first one.
    def wall_clock() -> datetime:
        return datetime.now(timezone.utc)

    lease_duration = 120.0  # the standby's; the longer of the holder's and its own counts
    expires_at = wall_clock() + timedelta(seconds=0.5)
    apiserver.put_lease(LEASE_NAME, {
        "holderIdentity": "dead", "leaseDurationSeconds": 1, "leaseTransitions": 0,
        "renewTime": micro_time(expires_at - timedelta(seconds=lease_duration))})
    standby = LeaderElector(api=api_client_for(apiserver.url), namespace=NAMESPACE,
                            identity=OTHER, clock=wall_clock, lease_duration=lease_duration,
                            renew_interval=60)

    # Within the ceiling (30 s), so not after a whole renew interval.
    run_until(standby, lambda: standby.is_leader, what="the standby to take over")

    spec = apiserver.lease_spec(LEASE_NAME)
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] >= micro_time(expires_at)  # not before the lease ended


def test_the_elector_needs_only_the_lease_permissions(apiserver):
    clock = Clock()
    first, second = elector(apiserver, ME, clock), elector(apiserver, OTHER, clock)
    step(first, second)
    clock.advance(20)
    step(second, first)
    asyncio.run(second.release())

    verbs = {"GET": "get", "POST": "create", "PUT": "update"}
    used = {("coordination.k8s.io", "leases", verbs[method]) for method, _ in apiserver.paths}
    assert used == set(LEASE_PERMISSIONS)
    # get and update only ever touch the one Lease (the Role restricts them by name).
    assert {path for method, path in apiserver.paths if method != "POST"} == {LEASE_PATH}


# ---------------------------------------------------------------------------------------------


class socket_bound_but_closed:
    """A loopback URL on which nothing listens: every connection is refused."""

    def __enter__(self) -> str:
        import socket
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
