"""The gRPC WatchChanges feed: a real grpc.aio server on a free loopback port, a real grpc.aio
client, a real ChangeLog (in-memory store) and LiveFeed. Skipped only where the ``grpc`` extra is
not installed (``make test`` installs it)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest

from incident_detector.feed import GRPC_EXTRA_HINT
from incident_detector.model import Change, FieldChange
from incident_detector.store.changes import ChangeLog, change_dict
from incident_detector.run.live import LiveFeed
from incident_detector.store.records import Store

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
READ_TIMEOUT = 10.0


@pytest.fixture
def grpc() -> ModuleType:
    return pytest.importorskip("grpc")


@pytest.fixture
def feed(grpc: ModuleType) -> tuple[ModuleType, ModuleType, ModuleType]:
    from incident_detector.feed import changes_pb2, changes_pb2_grpc, grpc_server

    return changes_pb2, changes_pb2_grpc, grpc_server


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store(":memory:")
    yield store
    store.close()


@pytest.fixture
def log(store: Store) -> ChangeLog:
    return ChangeLog(store.connection, retention=timedelta(days=7), max_rows=10_000)


def _change(n: int, *, namespace: str = "shop", kind: str = "ConfigMap",
            name: str = "orders-config", **fields: Any) -> Change:
    at = T0 + timedelta(minutes=n)
    values: dict[str, Any] = dict(
        namespace=namespace, kind=kind, name=name, action="updated", at=at,
        observed_at=at + timedelta(seconds=2),
        fields=(FieldChange("data.TIMEOUT_MS", str(5000 + n), str(50 + n)),),
        manager="kubectl-patch", operation="Update", uid=f"uid-{name}",
        resource_version=str(1000 + n))
    values.update(fields)
    return Change(**values)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _serve(server_module: ModuleType, log: ChangeLog, live: LiveFeed) -> tuple[Any, int]:
    """The feed's server on a free port. Another test running at the same time may take the
    port between the probe and the bind (serve_changes then refuses it): another port then."""
    attempts = 5
    while True:
        port = _free_port()
        try:
            return await server_module.serve_changes(changes=log, live=live, port=port,
                                                     host="127.0.0.1"), port
        except RuntimeError:
            attempts -= 1
            if attempts == 0:
                raise


def _publish(live: LiveFeed, log: ChangeLog, *changes: Change) -> list[Change]:
    """What the loop does: record, then publish each new change."""
    recorded = log.record(list(changes))
    for change in recorded:
        live.publish("change", change_dict(change))
    return recorded


async def _subscribed(live: LiveFeed, count: int = 1) -> None:
    while live.subscribers < count:
        await asyncio.sleep(0.01)


async def _gone(live: LiveFeed) -> int:
    deadline = asyncio.get_running_loop().time() + 30
    while live.subscribers and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    return live.subscribers


class Feed:
    """A started server and a client channel to it."""

    def __init__(self, feed: tuple[ModuleType, ModuleType, ModuleType], log: ChangeLog,
                 live: LiveFeed) -> None:
        self.pb2, self.pb2_grpc, self.server_module = feed
        self.log, self.live = log, live

    async def __aenter__(self) -> Feed:
        from grpc import aio

        self.server, port = await _serve(self.server_module, self.log, self.live)
        self.channel = aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = self.pb2_grpc.ChangeFeedStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(0)

    def watch(self, **request: Any) -> Any:
        return self.stub.WatchChanges(self.pb2.WatchChangesRequest(**request))


async def _read(call: Any, count: int) -> list[Any]:
    return [await asyncio.wait_for(call.read(), timeout=READ_TIMEOUT) for _ in range(count)]


def test_replay_after_an_id_then_live_changes_filtered(feed, log):
    live = LiveFeed()
    earlier = log.record([_change(1), _change(2), _change(3, namespace="billing"), _change(4)])

    async def main() -> dict[str, Any]:
        async with Feed(feed, log, live) as grpc_feed:
            call = grpc_feed.watch(namespace="shop", after_id=earlier[0].id)
            replayed = [m.id for m in await _read(call, 2)]
            await _subscribed(live)
            live.publish("tick", {"n": 1})
            _publish(live, log, _change(5, namespace="billing"))
            fresh = _publish(live, log, _change(6), _change(7))
            live.publish("change", change_dict(fresh[0]))  # published twice: sent once
            last = _publish(live, log, _change(8))
            live_ids = [m.id for m in await _read(call, 3)]
            call.cancel()
            return {"replayed": replayed, "live": live_ids,
                    "expected_live": [fresh[0].id, fresh[1].id, last[0].id],
                    "left": await _gone(live)}

    out = asyncio.run(main())
    assert out["replayed"] == [earlier[1].id, earlier[3].id]
    assert out["live"] == out["expected_live"]
    assert out["left"] == 0  # the cancelled call unsubscribed


def test_without_after_id_only_new_changes_come_and_kind_is_any_case(feed, log):
    live = LiveFeed()
    log.record([_change(1, kind="Deployment", name="api")])

    async def main() -> tuple[list[int], list[int]]:
        async with Feed(feed, log, live) as grpc_feed:
            call = grpc_feed.watch(kind="deployment")
            await _subscribed(live)
            _publish(live, log, _change(2))
            wanted = _publish(live, log, _change(3, kind="Deployment", name="api"))
            got = [m.id for m in await _read(call, 1)]
            call.cancel()
            return got, [wanted[0].id]

    got, wanted = asyncio.run(main())
    assert got == wanted


def test_after_id_zero_replays_the_whole_store(feed, log):
    recorded = log.record([_change(n) for n in range(1, 4)])

    async def main() -> list[int]:
        async with Feed(feed, log, LiveFeed()) as grpc_feed:
            call = grpc_feed.watch(after_id=0, name="orders-config")
            got = [m.id for m in await _read(call, 3)]
            call.cancel()
            return got

    assert asyncio.run(main()) == [c.id for c in recorded]


def test_the_message_mirrors_change_dict(feed, log):
    change = log.record([_change(
        1, kind="Deployment", name="payments-api", manager=None, operation=None, revision=7,
        previous_revision=6,
        fields=(FieldChange("image payments-api", "api:1.4", "api:1.5"),
                FieldChange("env API_KEY", hidden=True),
                FieldChange("env NEW_FLAG", None, "on")))])[0]
    expected = change_dict(change)

    async def main() -> Any:
        async with Feed(feed, log, LiveFeed()) as grpc_feed:
            call = grpc_feed.watch(after_id=0)
            [message] = await _read(call, 1)
            call.cancel()
            return message

    message = asyncio.run(main())
    for key in ("id", "namespace", "kind", "name", "action", "at", "observed_at", "uid",
                "resource_version", "summary", "revision", "previous_revision"):
        assert getattr(message, key) == expected[key], key
    assert not message.HasField("manager") and not message.HasField("operation")
    fields = [{"path": f.path, "before": f.before if f.HasField("before") else None,
               "after": f.after if f.HasField("after") else None, "hidden": f.hidden}
              for f in message.fields]
    assert fields == expected["fields"]


@pytest.mark.parametrize("request_fields", [{"kind": "Pod"}, {"after_id": -1}])
def test_a_bad_request_is_invalid_argument(feed, grpc, log, request_fields):
    async def main() -> tuple[Any, str]:
        async with Feed(feed, log, LiveFeed()) as grpc_feed:
            call = grpc_feed.watch(**request_fields)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await asyncio.wait_for(call.read(), timeout=READ_TIMEOUT)
            return failed.value.code(), failed.value.details()

    code, details = asyncio.run(main())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.split()[0] in ("kind", "after_id")


def test_a_port_in_use_is_a_clear_error(feed, log):
    _, _, server_module = feed

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            await server_module.serve_changes(changes=log, live=LiveFeed(), port=port,
                                              host="127.0.0.1")

    with pytest.raises(RuntimeError, match="cannot listen on 127.0.0.1:"):
        asyncio.run(main())


HIDE_GRPC = "import sys; sys.modules['grpc'] = None; sys.modules['google.protobuf'] = None; "


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HIDE_GRPC + code], capture_output=True,
                          text=True, timeout=60)


def test_without_the_extra_the_feed_says_what_to_install():
    """As on a base install: grpc cannot be imported (hidden in a fresh interpreter)."""
    done = _python("import incident_detector.feed.grpc_server")
    assert done.returncode == 1
    assert "GrpcExtraMissing" in done.stderr
    assert GRPC_EXTRA_HINT in done.stderr


def test_without_the_extra_the_rest_of_the_timeline_works():
    done = _python("import incident_detector.web.changes, incident_detector.notify.cloudevents,"
                   " incident_detector.feed.follow; print('ok')")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_stopping_the_server_ends_the_streams_and_their_subscriptions(feed, grpc, log):
    from grpc import aio

    pb2, pb2_grpc, server_module = feed
    live = LiveFeed()

    async def main() -> tuple[int, Any]:
        server, port = await _serve(server_module, log, live)
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb2_grpc.ChangeFeedStub(channel).WatchChanges(pb2.WatchChangesRequest())
            await _subscribed(live)
            await asyncio.wait_for(server.stop(server_module.STOP_GRACE_SECONDS), timeout=30)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), timeout=READ_TIMEOUT)
            return await _gone(live), ended.value.code()

    left, code = asyncio.run(main())
    assert left == 0
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
