"""The change CloudEvents: the event's shape, and the emitter over a real ChangeLog with the
webhook answered by respx."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

from incident_detector.config import load_settings
from incident_detector.model import Change, FieldChange
from incident_detector.notify.cloudevents import (
    EVENT_TYPE,
    ChangeEmitter,
    change_event,
    make_http_client,
)
from incident_detector.retry import Backoff
from incident_detector.store.changes import ChangeLog, change_dict
from incident_detector.store.records import Store

URL = "https://events.example.com/hooks/changes?key=url-secret-key"
TOKEN = "ce-token-5f1d0c8e2b7a49e1"
T0 = datetime(2026, 11, 23, 18, 0, 4, tzinfo=timezone.utc)
# No jitter: retry times are exact.
BACKOFF = Backoff(base=2.0, cap=300.0, jitter=False)
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _change(n: int = 1, **fields: object) -> Change:
    values: dict[str, object] = dict(
        namespace="shop", kind="ConfigMap", name="orders-config", action="updated", at=T0,
        observed_at=T0 + timedelta(seconds=3),
        fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),), manager="kubectl-patch",
        operation="Update", uid="0b6f7d7e-uid", resource_version=str(48212 + n))
    values.update(fields)
    return Change(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state.sqlite3")
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _log(store: Store) -> ChangeLog:
    return ChangeLog(store.connection, retention=timedelta(days=7), max_rows=10_000, emit=True)


def _emitter(changes: ChangeLog, http: httpx.AsyncClient, clock: Clock, **kwargs: object
             ) -> ChangeEmitter:
    kwargs.setdefault("token", SecretStr(TOKEN))
    return ChangeEmitter(changes=changes, http=http, url=URL, clock=clock, backoff=BACKOFF,
                         **kwargs)  # type: ignore[arg-type]


def _state(store: Store, change_id: int) -> tuple[str, int, str | None, str | None]:
    row = store.connection.execute(
        "SELECT emit_state, emit_attempts, emit_error, emit_next_at FROM changes WHERE id=?",
        (change_id,)).fetchone()
    return row[0], row[1], row[2], row[3]


def _deliver(emitter: ChangeEmitter) -> int:
    return asyncio.run(emitter.deliver_due())


# --- the event ----------------------------------------------------------------------------------


def test_the_event_is_a_structured_cloudevent_with_the_change_as_data(store):
    change = _log(store).record([_change()])[0]
    event = change_event(change)
    assert event == {
        "specversion": "1.0",
        "id": "shop/ConfigMap/orders-config/48213",
        "source": "/incident-detector/shop",
        "type": EVENT_TYPE,
        "subject": "ConfigMap/orders-config",
        "time": "2026-11-23T18:00:04Z",
        "datacontenttype": "application/json",
        "data": change_dict(change),
    }
    assert EVENT_TYPE == "io.incident-detector.change.v1"


def test_the_id_is_the_same_for_the_same_change_whatever_the_row():
    first = change_event(_change(id=3))
    again = change_event(_change(id=90))  # another replica's store, or recorded again
    other = change_event(_change(2, id=4))
    assert first["id"] == again["id"] != other["id"]
    assert change_event(_change(resource_version="", id=7))["id"] == (
        "shop/ConfigMap/orders-config/row-7")


# --- delivery -----------------------------------------------------------------------------------


def _assert_cloudevent(request: httpx.Request, change: Change) -> None:
    """What the CloudEvents 1.0 spec asks of a structured-mode JSON event over HTTP."""
    assert request.method == "POST"
    assert request.headers["content-type"].split(";")[0] == "application/cloudevents+json"
    body = json.loads(request.content)
    for attribute in ("specversion", "id", "source", "type"):  # the required ones
        assert isinstance(body[attribute], str) and body[attribute], attribute
    assert body["specversion"] == "1.0"
    assert RFC3339.fullmatch(body["time"])
    # Attribute names: lower-case letters and digits only.
    assert all(re.fullmatch(r"[a-z0-9]+", name) for name in body)
    assert body["datacontenttype"] == "application/json"
    assert body["data"] == change_dict(change)


@respx.mock
def test_a_change_is_posted_once_with_the_bearer_token(store, clock):
    route = respx.post(URL).mock(return_value=httpx.Response(202))
    changes = _log(store)
    change = changes.record([_change()])[0]

    async def main() -> tuple[int, int]:
        async with make_http_client(timeout=5) as http:
            emitter = _emitter(changes, http, clock)
            return await emitter.deliver_due(), await emitter.deliver_due()

    assert asyncio.run(main()) == (1, 0)
    assert route.call_count == 1
    request = route.calls[0].request
    _assert_cloudevent(request, change)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert _state(store, change.id)[:3] == ("sent", 1, None)
    assert changes.emission_summary() == {"sent": 1}


@respx.mock
def test_without_a_token_no_authorization_is_sent(store, clock):
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    changes = _log(store)
    changes.record([_change()])
    assert _deliver(_emitter(changes, httpx.AsyncClient(), clock, token=None)) == 1
    assert "authorization" not in route.calls[0].request.headers


@respx.mock
def test_a_503_is_retried_after_the_backoff_then_delivered(store, clock):
    route = respx.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(200)])
    changes = _log(store)
    change = changes.record([_change()])[0]
    emitter = _emitter(changes, httpx.AsyncClient(), clock)
    with structlog.testing.capture_logs() as logs:
        assert _deliver(emitter) == 0
        state, attempts, error, _ = _state(store, change.id)
        assert (state, attempts, error) == ("pending", 1, "http_503")
        assert changes.next_emission_at() == clock.now + timedelta(seconds=2)
        # Not due yet: nothing is posted.
        clock.advance(1)
        assert _deliver(emitter) == 0
        assert route.call_count == 1
        clock.advance(1)
        assert _deliver(emitter) == 1
    assert route.call_count == 2
    assert _state(store, change.id)[:3] == ("sent", 2, None)
    events = [(entry["event"], entry["log_level"]) for entry in logs
              if entry["event"].startswith("change_events.")]
    assert events == [("change_events.failing", "warning"), ("change_events.recovered", "info")]


@respx.mock
def test_failures_are_logged_once_not_once_per_attempt(store, clock):
    respx.post(URL).mock(return_value=httpx.Response(502))
    changes = _log(store)
    changes.record([_change(1), _change(2), _change(3)])
    emitter = _emitter(changes, httpx.AsyncClient(), clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(4):
            _deliver(emitter)
            clock.advance(60)
    assert [entry["event"] for entry in logs] == ["change_events.failing"]
    assert changes.emission_summary() == {"pending": 3}


@respx.mock
def test_a_429_waits_for_its_retry_after(store, clock):
    route = respx.post(URL).mock(side_effect=[
        httpx.Response(429, headers={"Retry-After": "120"}), httpx.Response(200)])
    changes = _log(store)
    change = changes.record([_change()])[0]
    emitter = _emitter(changes, httpx.AsyncClient(), clock)
    assert _deliver(emitter) == 0
    assert changes.next_emission_at() == clock.now + timedelta(seconds=120)
    clock.advance(119)
    assert _deliver(emitter) == 0
    clock.advance(1)
    assert _deliver(emitter) == 1
    assert route.call_count == 2
    assert _state(store, change.id)[0] == "sent"


@respx.mock
def test_a_408_is_retried(store, clock):
    respx.post(URL).mock(return_value=httpx.Response(408))
    changes = _log(store)
    change = changes.record([_change()])[0]
    assert _deliver(_emitter(changes, httpx.AsyncClient(), clock)) == 0
    assert _state(store, change.id)[:3] == ("pending", 1, "http_408")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 301])
@respx.mock
def test_an_answer_that_will_not_change_is_given_up_at_once(store, clock, status):
    route = respx.post(URL).mock(return_value=httpx.Response(status))
    changes = _log(store)
    change = changes.record([_change()])[0]
    emitter = _emitter(changes, httpx.AsyncClient(), clock)
    with structlog.testing.capture_logs() as logs:
        assert _deliver(emitter) == 0
        clock.advance(3600)
        assert _deliver(emitter) == 0
    assert route.call_count == 1
    assert _state(store, change.id)[:3] == ("gave_up", 1, f"http_{status}")
    given_up = [entry for entry in logs if entry["event"] == "change_event.given_up"]
    assert len(given_up) == 1
    assert given_up[0]["why"] == "not retryable"
    assert given_up[0]["change_id"] == change.id
    assert changes.emission_summary() == {"gave_up": 1}


@respx.mock
def test_a_timeout_is_retried_until_the_attempts_run_out(store, clock):
    route = respx.post(URL).mock(side_effect=httpx.ReadTimeout("read timed out"))
    changes = _log(store)
    change = changes.record([_change()])[0]
    emitter = _emitter(changes, httpx.AsyncClient(), clock, max_attempts=3)
    with structlog.testing.capture_logs() as logs:
        for expected_wait in (2, 4):
            assert _deliver(emitter) == 0
            state, attempts, error, _ = _state(store, change.id)
            assert state == "pending" and error == "timeout (ReadTimeout)"
            assert changes.next_emission_at() == clock.now + timedelta(seconds=expected_wait)
            clock.advance(expected_wait)
        assert _deliver(emitter) == 0
    assert route.call_count == 3
    assert _state(store, change.id)[:3] == ("gave_up", 3, "timeout (ReadTimeout)")
    assert [e["why"] for e in logs if e["event"] == "change_event.given_up"] == [
        "too many attempts"]


def test_a_real_timeout_from_a_silent_server_is_retried(store, clock):
    """A loopback server that accepts and never answers: httpx's own read timeout."""
    async def main() -> tuple[int, str | None]:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        changes = _log(store)
        change = changes.record([_change()])[0]
        try:
            async with make_http_client(timeout=0.2) as http:
                emitter = ChangeEmitter(changes=changes, http=http,
                                        url=f"http://127.0.0.1:{port}/changes", clock=clock)
                delivered = await emitter.deliver_due()
        finally:
            server.close()
        return delivered, _state(store, change.id)[2]

    delivered, error = asyncio.run(main())
    assert delivered == 0
    assert error == "timeout (ReadTimeout)"


@respx.mock
def test_a_connection_error_is_retried(store, clock):
    respx.post(URL).mock(side_effect=httpx.ConnectError("connection refused"))
    changes = _log(store)
    change = changes.record([_change()])[0]
    assert _deliver(_emitter(changes, httpx.AsyncClient(), clock)) == 0
    assert _state(store, change.id)[:3] == ("pending", 1, "connection (ConnectError)")


@respx.mock
def test_neither_the_token_nor_the_url_key_appears_in_logs_errors_or_repr(store, clock):
    respx.post(URL).mock(side_effect=[
        httpx.Response(500, text=f"upstream said Bearer {TOKEN} at {URL}"),
        httpx.ConnectError(f"could not connect to {URL} with {TOKEN}"),
        httpx.Response(403, text=f"bad token {TOKEN}")])
    changes = _log(store)
    change = changes.record([_change()])[0]
    emitter = _emitter(changes, httpx.AsyncClient(), clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            _deliver(emitter)
            clock.advance(600)
    assert [entry["event"] for entry in logs] == ["change_events.failing",
                                                  "change_event.given_up"]
    stored = store.connection.execute("SELECT emit_error, record FROM changes").fetchall()
    visible = json.dumps([logs, stored, repr(emitter)], default=str)
    assert TOKEN not in visible
    assert "url-secret-key" not in visible and "/hooks/changes" not in visible
    assert "https://events.example.com" in visible  # the host is what a log line names
    assert _state(store, change.id)[0] == "gave_up"


@respx.mock
def test_what_was_pending_goes_out_after_a_restart(tmp_path, clock):
    route = respx.post(URL).mock(side_effect=[httpx.Response(503), httpx.Response(503),
                                              httpx.Response(200), httpx.Response(200)])
    path = tmp_path / "state.sqlite3"
    first = Store(path)
    recorded = _log(first).record([_change(1), _change(2)])
    assert _deliver(_emitter(_log(first), httpx.AsyncClient(), clock)) == 0
    first.close()  # the process stops with both still pending

    again = Store(path)
    try:
        clock.advance(2)
        assert _deliver(_emitter(_log(again), httpx.AsyncClient(), clock)) == 2
        assert _log(again).emission_summary() == {"sent": 2}
    finally:
        again.close()
    ids = [json.loads(call.request.content)["data"]["id"] for call in route.calls]
    assert ids == [recorded[0].id, recorded[1].id] * 2


@respx.mock
def test_a_replica_that_is_not_the_leader_sends_nothing(store, clock):
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    changes = _log(store)
    changes.record([_change()])
    assert _deliver(_emitter(changes, httpx.AsyncClient(), clock, is_leader=lambda: False)) == 0
    assert route.call_count == 0
    assert changes.emission_summary() == {"pending": 1}


@respx.mock
def test_the_worker_sends_what_is_recorded_and_stops_on_stop(store):
    route = respx.post(URL).mock(return_value=httpx.Response(200))
    changes = _log(store)

    async def main() -> int:
        stop = asyncio.Event()
        emitter = _emitter(changes, httpx.AsyncClient(),
                           lambda: datetime.now(timezone.utc))  # type: ignore[arg-type]
        worker = asyncio.create_task(emitter.run(stop))
        await asyncio.sleep(0.05)
        changes.record([_change(1, at=datetime.now(timezone.utc),
                                observed_at=datetime.now(timezone.utc))])
        emitter.wakeup.set()
        deadline = asyncio.get_running_loop().time() + 30
        while not route.call_count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(worker, timeout=30)
        return route.call_count

    assert asyncio.run(main()) == 1
    assert changes.emission_summary() == {"sent": 1}


def test_from_settings_takes_the_url_and_token(store, clock):
    settings = load_settings({"LOKI_URL": "http://loki:3100",
                              "CHANGE_WEBHOOK_URL": "https://events.example.com/in",
                              "CHANGE_WEBHOOK_TOKEN": TOKEN})
    emitter = ChangeEmitter.from_settings(settings, changes=_log(store),
                                          http=httpx.AsyncClient(), clock=clock)
    assert emitter.target == "https://events.example.com"
    assert TOKEN not in repr(emitter)
    with pytest.raises(ValueError, match="CHANGE_WEBHOOK_URL"):
        ChangeEmitter.from_settings(load_settings({"LOKI_URL": "http://loki:3100"}), changes=_log(store), http=httpx.AsyncClient(),
                                    clock=clock)
