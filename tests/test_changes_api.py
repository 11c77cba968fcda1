"""GET /api/changes and its Server-Sent Events stream, over a real ChangeLog (an in-memory store)
and a real LiveFeed: the list through Starlette's TestClient, the stream through a uvicorn
server on loopback read with httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.testclient import TestClient

from incident_detector.model import Change, FieldChange
from incident_detector.store.changes import ChangeLog, change_dict
from incident_detector.run.live import SUBSCRIBER_QUEUE, LiveFeed
from incident_detector.store.records import Store
from incident_detector.web.changes import change_routes

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


def _change(n: int, *, namespace: str = "shop", kind: str = "ConfigMap",
            name: str = "orders-config", minutes: int | None = None) -> Change:
    at = T0 + timedelta(minutes=n if minutes is None else minutes)
    return Change(namespace=namespace, kind=kind, name=name, action="updated", at=at,
                  observed_at=at + timedelta(seconds=2),
                  fields=(FieldChange("data.TIMEOUT_MS", str(5000 + n), str(50 + n)),),
                  manager="kubectl-patch", operation="Update", uid=f"uid-{name}",
                  resource_version=str(1000 + n))


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store(":memory:")
    yield store
    store.close()


@pytest.fixture
def log(store: Store) -> ChangeLog:
    return ChangeLog(store.connection, retention=timedelta(days=7), max_rows=10_000)


@pytest.fixture
def client(log: ChangeLog) -> Iterator[TestClient]:
    app = Starlette(routes=change_routes(changes=log, live=LiveFeed()))
    with TestClient(app) as client:
        yield client


def _seed(log: ChangeLog) -> list[Change]:
    return log.record([
        _change(1),
        _change(2, kind="Deployment", name="payments-api"),
        _change(3, namespace="billing"),
        _change(4, kind="Secret", name="db-credentials"),
        _change(5),
    ])


# --- the list -----------------------------------------------------------------------------------


def test_the_list_is_newest_first_in_the_shape_of_change_dict(client, log):
    recorded = _seed(log)
    body = client.get("/api/changes").json()
    assert body["count"] == 5
    assert body["next"] is None
    assert body["changes"] == [change_dict(c) for c in reversed(recorded)]
    assert body["changes"][0]["summary"] == (
        "ConfigMap orders-config updated: data.TIMEOUT_MS 5005 → 55 (by kubectl-patch)")


def test_filters_narrow_the_list(client, log):
    recorded = _seed(log)
    ids = {c.resource_version: c.id for c in recorded}

    def found(**params: str) -> list[int]:
        answer = client.get("/api/changes", params=params)
        assert answer.status_code == 200, answer.text
        return [c["id"] for c in answer.json()["changes"]]

    assert found(namespace="billing") == [ids["1003"]]
    assert found(kind="configmap") == [ids["1005"], ids["1003"], ids["1001"]]
    assert found(kind="DEPLOYMENT") == [ids["1002"]]
    assert found(name="db-credentials") == [ids["1004"]]
    assert found(namespace="shop", kind="ConfigMap", name="orders-config") == [
        ids["1005"], ids["1001"]]
    assert found(since="2026-11-23T18:03:00Z") == [ids["1005"], ids["1004"], ids["1003"]]
    # A time without a zone is UTC, as on /api/incidents.
    assert found(since="2026-11-23T18:04:00") == [ids["1005"], ids["1004"]]
    assert found(namespace="nowhere") == []


def test_pages_by_keyset_until_next_is_null(client, log):
    recorded = log.record([_change(n) for n in range(1, 8)])
    seen: list[int] = []
    params: dict[str, str] = {"limit": "3"}
    pages = 0
    while True:
        body = client.get("/api/changes", params=params).json()
        pages += 1
        seen += [c["id"] for c in body["changes"]]
        assert body["count"] == len(body["changes"])
        if body["next"] is None:
            break
        assert body["next"] == body["changes"][-1]["id"]
        params["before"] = str(body["next"])
    assert pages == 3
    assert seen == [c.id for c in reversed(recorded)]


def test_a_full_last_page_says_there_is_no_next(client, log):
    log.record([_change(n) for n in range(1, 5)])
    first = client.get("/api/changes", params={"limit": "2"}).json()
    second = client.get("/api/changes", params={"limit": "2", "before": first["next"]}).json()
    assert first["next"] is not None
    assert second["count"] == 2 and second["next"] is None


@pytest.mark.parametrize(("params", "named"), [
    ({"kind": "Pod"}, "kind"),
    ({"kind": ""}, "kind"),
    ({"namespace": " "}, "namespace"),
    ({"name": ""}, "name"),
    ({"since": "yesterday"}, "since"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"before": "r12"}, "before"),
    ({"before": "-1"}, "before"),
])
def test_a_bad_parameter_is_a_400_naming_it(client, params, named):
    answer = client.get("/api/changes", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(named + " ")


def test_the_stream_refuses_bad_parameters_before_streaming(client):
    for params, named in (({"kind": "Pod"}, "kind"), ({"after": "x"}, "after"),
                          ({"since": "soon"}, "since")):
        answer = client.get("/api/changes/stream", params=params)
        assert answer.status_code == 400
        assert answer.json()["error"].startswith(named + " ")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(
    st.sampled_from(["namespace", "kind", "name", "since", "limit", "before", "other"]),
    st.text(max_size=12), max_size=4))
def test_any_query_is_an_answer_or_a_400_never_a_crash(client, params):
    answer = client.get("/api/changes", params=params)
    assert answer.status_code in (200, 400), (params, answer.text)
    body = answer.json()
    assert ("changes" in body) if answer.status_code == 200 else body["error"]


# --- the stream ---------------------------------------------------------------------------------


async def _serve(app: Starlette) -> tuple[uvicorn.Server, asyncio.Task, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, task, f"http://127.0.0.1:{port}"


class Reader:
    """The events of one open stream, parsed as an EventSource does; comments kept apart."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def events(self, count: int, *, timeout: float = 10) -> list[dict[str, str]]:
        return await asyncio.wait_for(self._read(count), timeout=timeout)

    async def _read(self, count: int) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if "event" in current:
                    events.append(current)
                    if len(events) == count:
                        return events
                current = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                field, _, value = line.partition(": ")
                current[field] = value
        return events


def _ids(events: list[dict[str, str]]) -> list[int]:
    for event in events:
        assert event["event"] == "change"
        assert json.loads(event["data"])["id"] == int(event["id"])
    return [int(event["id"]) for event in events]


async def _subscribed(live: LiveFeed, count: int = 1) -> None:
    while live.subscribers < count:
        await asyncio.sleep(0.01)


async def _gone(live: LiveFeed) -> int:
    deadline = asyncio.get_running_loop().time() + 30  # the server notices the client went away
    while live.subscribers and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return live.subscribers


def _publish(live: LiveFeed, log: ChangeLog, *changes: Change) -> list[Change]:
    """What the loop does: record, then publish each new change."""
    recorded = log.record(list(changes))
    for change in recorded:
        live.publish("change", change_dict(change))
    return recorded


def test_stream_replays_after_an_id_then_follows_the_feed_then_resumes(log):
    live = LiveFeed()
    earlier = log.record([_change(1), _change(2), _change(3, namespace="billing"), _change(4)])

    async def main() -> dict[str, object]:
        server, task, url = await _serve(Starlette(routes=change_routes(changes=log, live=live)))
        out: dict[str, object] = {}
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/api/changes/stream",
                                       params={"namespace": "shop",
                                               "after": str(earlier[0].id)}) as response:
                    out["type"] = response.headers["content-type"]
                    reader = Reader(response)
                    out["replayed"] = _ids(await reader.events(2))
                    await _subscribed(live)
                    # Not a change, another namespace, then one of ours: only the last is sent.
                    live.publish("tick", {"n": 1})
                    _publish(live, log, _change(5, namespace="billing"))
                    fresh = _publish(live, log, _change(6))
                    # Republished (say, by a second loop) or stale: never sent twice.
                    live.publish("change", change_dict(fresh[0]))
                    live.publish("change", change_dict(earlier[1]))
                    last = _publish(live, log, _change(7))
                    live_events = await reader.events(2)
                    out["live"] = _ids(live_events)
                    out["live_data"] = json.loads(live_events[0]["data"])
                    out["expected_live"] = [fresh[0].id, last[0].id]
                    out["fresh"] = change_dict(fresh[0])
                # Reconnecting as an EventSource does: the last id seen in Last-Event-ID.
                missed = _publish(live, log, _change(8), _change(9, namespace="billing"))
                async with http.stream("GET", url + "/api/changes/stream",
                                       params={"namespace": "shop", "after": "0"},
                                       headers={"Last-Event-ID": str(last[0].id)}) as response:
                    reader = Reader(response)
                    out["resumed"] = _ids(await reader.events(1))
                    out["expected_resumed"] = [missed[0].id]
                    await _subscribed(live)
                    newest = _publish(live, log, _change(10))
                    out["after_resume"] = _ids(await reader.events(1))
                    out["expected_after_resume"] = [newest[0].id]
                out["left"] = await _gone(live)
        finally:
            server.should_exit = True
            await task
        return out

    out = asyncio.run(main())
    assert str(out["type"]).startswith("text/event-stream")
    assert out["replayed"] == [earlier[1].id, earlier[3].id]
    assert out["live"] == out["expected_live"]
    assert out["live_data"] == out["fresh"]
    assert out["resumed"] == out["expected_resumed"]
    assert out["after_resume"] == out["expected_after_resume"]
    assert out["left"] == 0


def test_stream_without_a_resume_point_sends_only_what_comes_next(log):
    live = LiveFeed()
    log.record([_change(1), _change(2)])

    async def main() -> tuple[list[int], list[int]]:
        server, task, url = await _serve(Starlette(routes=change_routes(changes=log, live=live)))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/api/changes/stream",
                                       params={"kind": "secret"}) as response:
                    reader = Reader(response)
                    await _subscribed(live)
                    _publish(live, log, _change(3))
                    wanted = _publish(live, log, _change(4, kind="Secret", name="db"))
                    return _ids(await reader.events(1)), [wanted[0].id]
        finally:
            server.should_exit = True
            await task

    got, wanted = asyncio.run(main())
    assert got == wanted


def test_stream_since_filters_live_changes_by_when_they_were_made(log):
    live = LiveFeed()

    async def main() -> tuple[list[int], list[int]]:
        server, task, url = await _serve(Starlette(routes=change_routes(changes=log, live=live)))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/api/changes/stream",
                                       params={"since": "2026-11-23T19:00:00Z"}) as response:
                    reader = Reader(response)
                    await _subscribed(live)
                    _publish(live, log, _change(1, minutes=30))  # made before `since`
                    wanted = _publish(live, log, _change(2, minutes=61))
                    return _ids(await reader.events(1)), [wanted[0].id]
        finally:
            server.should_exit = True
            await task

    got, wanted = asyncio.run(main())
    assert got == wanted


def test_a_reader_whose_queue_overflowed_is_caught_up_from_the_store(log):
    live = LiveFeed()
    count = SUBSCRIBER_QUEUE + 10

    async def main() -> tuple[list[int], list[int]]:
        server, task, url = await _serve(Starlette(routes=change_routes(changes=log, live=live)))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/api/changes/stream") as response:
                    reader = Reader(response)
                    await _subscribed(live)
                    # Published without the server getting a turn: the feed drops the oldest
                    # from the reader's full queue.
                    burst = _publish(live, log, *[_change(n) for n in range(1, count + 1)])
                    return _ids(await reader.events(count)), [c.id for c in burst]
        finally:
            server.should_exit = True
            await task

    got, wanted = asyncio.run(main())
    assert got == wanted


def test_an_idle_stream_gets_keep_alive_comments_and_unsubscribes_on_disconnect(log):
    live = LiveFeed()

    async def main() -> tuple[str, int, int]:
        routes = change_routes(changes=log, live=live, heartbeat_seconds=0.05)
        server, task, url = await _serve(Starlette(routes=routes))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async with http.stream("GET", url + "/api/changes/stream") as response:
                    comment = ""
                    async for line in response.aiter_lines():
                        if line.startswith(":"):
                            comment = line
                            break
                    during = live.subscribers
            return comment, during, await _gone(live)
        finally:
            server.should_exit = True
            await task

    comment, during, after = asyncio.run(main())
    assert comment == ": keep-alive"
    assert during == 1
    assert after == 0
