"""POST /webhooks/alertmanager and GET /api/alerts through Starlette, with real payloads."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import structlog
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient

from incident_detector.judge.alert_map import Unmapped
from incident_detector.model import AlertTarget
from incident_detector.store.alerts import AlertInbox
from incident_detector.store.records import Store
from incident_detector.web.alertmanager import (
    API_PATH,
    MAX_BODY_BYTES,
    PATH,
    alertmanager_routes,
)

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
TOKEN = "am-7f3b9c2e5d1a4f60b8c3d2e1f0a9b8c7"
NOW = datetime(2026, 11, 3, 18, 0, tzinfo=timezone.utc)
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "state.sqlite3")
        self.inbox = AlertInbox(self.store.connection)
        self.leader = True
        self.clock = Clock(NOW)
        self.woken = 0
        self.summaries: list = []

    def wake(self, summary) -> None:
        self.woken += 1
        self.summaries.append(summary)

    def app(self, token: str | None = TOKEN) -> Starlette:
        return Starlette(routes=alertmanager_routes(
            token=SecretStr(token) if token is not None else None, inbox=self.inbox,
            is_leader=lambda: self.leader, clock=self.clock, on_received=self.wake))


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.store.close()


@pytest.fixture
def client(world) -> Iterator[TestClient]:
    with TestClient(world.app()) as client:
        yield client


def post(client: TestClient, body: bytes, headers: dict[str, str] | None = None,
         **kwargs) -> httpx.Response:
    return client.post(PATH, content=body, headers={"Content-Type": "application/json",
                                                    **(BEARER if headers is None else headers)},
                       **kwargs)


# Accepted ----------------------------------------------------------------------------------

def test_bearer_token_as_alertmanager_sends_it(client, world):
    response = post(client, raw("firing-pod.json"))
    assert response.status_code == 200
    assert response.json() == {"received": 1, "firing": 1, "resolved": 0}
    (stored,) = world.inbox.firing()
    assert stored.alert.name == "KubePodCrashLooping"
    assert stored.received_at == NOW
    assert world.woken == 1
    (summary,) = world.summaries
    assert (summary.received, summary.firing, summary.resolved) == (1, 1, 0)


def test_basic_auth_with_the_token_as_password_any_user(client, world):
    # RFC 7617: the user-id cannot hold a colon, the password may.
    for user in ("alertmanager", "", "someone else"):
        response = post(client, raw("firing-pod.json"), basic(user, TOKEN))
        assert response.status_code == 200, user
    assert len(world.inbox.firing()) == 1
    assert world.woken == 3


def test_a_grouped_payload_with_firing_and_resolved_alerts(client, world):
    response = post(client, raw("grouped.json"))
    assert response.json() == {"received": 3, "firing": 2, "resolved": 1}
    assert [s.alert.label("service") for s in world.inbox.firing()] == ["payments-api",
                                                                        "checkout"]
    statuses = {row["labels"]["service"]: row["status"]
                for row in world.inbox.recent(limit=10)}
    assert statuses == {"payments-api": "firing", "checkout": "firing", "ledger": "resolved"}


def test_resolved_then_a_stale_firing_copy_out_of_order(client, world):
    assert post(client, raw("resolved-pod.json")).status_code == 200
    world.clock.now = NOW + timedelta(seconds=30)
    # Alertmanager's retry of the earlier firing notification arrives last.
    response = post(client, raw("firing-pod.json"))
    assert response.status_code == 200
    assert response.json() == {"received": 1, "firing": 1, "resolved": 0}
    assert world.inbox.firing() == []
    (row,) = world.inbox.recent(limit=10)
    assert row["status"] == "resolved" and row["updated_at"] == "2026-11-03T18:00:00.000000Z"


def test_firing_then_resolved(client, world):
    post(client, raw("firing-pod.json"))
    world.clock.now = NOW + timedelta(minutes=25)
    assert post(client, raw("resolved-pod.json")).json() == {"received": 1, "firing": 0,
                                                             "resolved": 1}
    assert world.inbox.firing() == []


def test_the_body_may_be_exactly_the_limit(client):
    document = json.loads(raw("watchdog.json"))
    document["padding"] = ""
    size = len(json.dumps(document).encode())
    document["padding"] = "x" * (MAX_BODY_BYTES - size)
    body = json.dumps(document).encode()
    assert len(body) == MAX_BODY_BYTES
    assert post(client, body).status_code == 200


def test_a_failing_wake_up_does_not_fail_the_request(world):
    def broken(summary) -> None:
        raise RuntimeError("loop gone")

    app = Starlette(routes=alertmanager_routes(token=SecretStr(TOKEN), inbox=world.inbox,
                                               is_leader=lambda: True, clock=world.clock,
                                               on_received=broken))
    with TestClient(app) as client, structlog.testing.capture_logs() as logs:
        assert post(client, raw("firing-pod.json")).status_code == 200
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["alertmanager.wake_failed"]
    assert len(world.inbox.firing()) == 1


# Refused -----------------------------------------------------------------------------------

def test_without_a_token_the_endpoint_does_not_exist(world):
    with TestClient(world.app(token=None)) as client, structlog.testing.capture_logs() as logs:
        response = post(client, raw("firing-pod.json"))
        assert response.status_code == 404
        assert response.text == "Not Found"
        # Not even the right credentials for some token.
        assert post(client, raw("firing-pod.json"), {"Authorization": "Bearer "}).status_code \
            == 404
    assert world.inbox.count() == 0 and world.woken == 0
    assert [e["reason"] for e in logs] == ["intake_off", "intake_off"]


@pytest.mark.parametrize("headers, why", [
    ({}, "missing_credentials"),
    ({"Authorization": ""}, "missing_credentials"),
    ({"Authorization": "Bearer wrong"}, "wrong_credentials"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "wrong_credentials"),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong_credentials"),
    ({"Authorization": "Bearer"}, "wrong_credentials"),
    ({"Authorization": f"Token {TOKEN}"}, "unsupported_scheme"),
    ({"Authorization": TOKEN}, "unsupported_scheme"),
    (basic("alertmanager", "wrong"), "wrong_credentials"),
    (basic(TOKEN, ""), "wrong_credentials"),  # the token as the user name is not enough
    ({"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},
     "malformed_basic_credentials"),
    ({"Authorization": "Basic not*base64"}, "malformed_basic_credentials"),
    ({"Authorization": "Bearer é".encode()}, "wrong_credentials"),
])
def test_wrong_or_missing_credentials(client, world, headers, why):
    with structlog.testing.capture_logs() as logs:
        response = post(client, raw("firing-pod.json"), headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="incident-detector"')
    assert "Basic" in response.headers["WWW-Authenticate"]
    assert response.json() == {"error": "unauthorized"}
    assert TOKEN not in response.text
    assert world.inbox.count() == 0 and world.woken == 0
    assert logs == [{"event": "alertmanager.refused", "log_level": "warning", "reason": why,
                     "status": 401, "peer": "testclient"}]


def test_too_large_by_content_length_before_reading(client, world):
    with structlog.testing.capture_logs() as logs:
        response = post(client, b"{}", {**BEARER, "Content-Length": str(MAX_BODY_BYTES + 1)})
    assert response.status_code == 413
    assert response.json() == {"error": f"body over {MAX_BODY_BYTES} bytes"}
    assert [(e["reason"], e["status"]) for e in logs] == [("body_too_large", 413)]
    assert world.inbox.count() == 0


def test_too_large_while_streaming_without_content_length(world):
    async def chunks():
        for _ in range(64):
            yield b" " * (64 * 1024)

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=world.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://detector") as client:
            return await client.post(PATH, content=chunks(), headers=BEARER)

    with structlog.testing.capture_logs() as logs:
        response = asyncio.run(send())
    assert response.status_code == 413
    assert [(e["reason"], e["status"]) for e in logs] == [("body_too_large", 413)]
    assert world.inbox.count() == 0


def test_too_large_streamed_through_the_test_client(client, world):
    def chunks():
        for _ in range(20):
            yield b" " * (64 * 1024)

    with structlog.testing.capture_logs() as logs:
        response = client.post(PATH, content=chunks(), headers=BEARER)
    assert response.status_code == 413
    assert len(logs) == 1


@pytest.mark.parametrize("body, error", [
    (b"alertname=KubePodCrashLooping", "body is not JSON: Expecting value at line 1 column 1"),
    (b"", "body is not JSON: Expecting value at line 1 column 1"),
    (b"[]", "body is a JSON array, not an object"),
])
def test_not_json(client, world, body, error):
    with structlog.testing.capture_logs() as logs:
        response = post(client, body)
    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert logs == [{"event": "alertmanager.refused", "log_level": "warning",
                     "reason": "bad_payload", "status": 400, "peer": "testclient",
                     "detail": error}]
    assert world.woken == 0


def test_not_the_schema_says_why(client, world):
    document = json.loads(raw("grouped.json"))
    document["alerts"][2]["startsAt"] = "yesterday"
    response = post(client, json.dumps(document).encode())
    assert response.status_code == 400
    assert response.json() == {"error": "alerts[2].startsAt is not an RFC 3339 time"}
    # Nothing of the notification was recorded, not even its valid alerts.
    assert world.inbox.count() == 0

    response = post(client, raw("grafana-version-1.json"))
    assert response.status_code == 400
    assert response.json() == {"error": 'version "1" is not supported: only Alertmanager\'s '
                                        'webhook payload version "4"'}


def test_a_malformed_content_length(client):
    # Sent raw through the ASGI scope: an HTTP server would have refused it already.
    response = post(client, b"{}", {**BEARER, "Content-Length": "12abc"})
    assert response.status_code == 400


def test_a_standby_replica_asks_alertmanager_to_retry(client, world):
    world.leader = False
    with structlog.testing.capture_logs() as logs:
        response = post(client, raw("firing-pod.json"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert response.json() == {"error": "this replica is a standby: only the leader records "
                                        "alerts"}
    assert world.inbox.count() == 0 and world.woken == 0
    assert [(e["reason"], e["status"]) for e in logs] == [("standby", 503)]
    # Credentials are checked first: a standby says nothing to a stranger.
    assert post(client, raw("firing-pod.json"), {}).status_code == 401
    world.leader = True
    assert post(client, raw("firing-pod.json")).status_code == 200


def test_a_store_that_cannot_be_written_is_a_retry(client, world):
    world.store.connection.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON alerts BEGIN SELECT RAISE(ABORT, 'full'); END")
    with structlog.testing.capture_logs() as logs:
        response = post(client, raw("firing-pod.json"))
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert [e["event"] for e in logs] == ["alertmanager.store_failed", "alertmanager.refused"]
    assert world.woken == 0


def test_only_post(client):
    assert client.get(PATH, headers=BEARER).status_code == 405


def test_every_refusal_is_logged_once_and_the_token_never(client, world):
    attempts = [
        ({}, raw("firing-pod.json")),
        ({"Authorization": f"Bearer {TOKEN[::-1]}"}, raw("firing-pod.json")),
        (basic("alertmanager", TOKEN + "x"), raw("firing-pod.json")),
        (BEARER, b"not json"),
        (BEARER, raw("grafana-version-1.json")),
        ({**BEARER, "Content-Length": str(MAX_BODY_BYTES * 2)}, b"{}"),
    ]
    with structlog.testing.capture_logs() as logs:
        statuses = [post(client, body, headers).status_code for headers, body in attempts]
        world.leader = False
        statuses.append(post(client, raw("firing-pod.json")).status_code)
        world.leader = True
        statuses.append(post(client, raw("grouped.json")).status_code)
    assert statuses == [401, 401, 401, 400, 400, 413, 503, 200]
    refused = [e for e in logs if e["event"] == "alertmanager.refused"]
    assert [e["status"] for e in refused] == [401, 401, 401, 400, 400, 413, 503]
    assert all(e["log_level"] == "warning" and e["peer"] for e in refused)
    assert [e["event"] for e in logs if e["event"] != "alertmanager.refused"] == \
        ["alertmanager.received"]
    text = json.dumps(logs, default=str)
    assert TOKEN not in text and TOKEN[::-1] not in text
    assert "authorization" not in text.lower() and "Bearer" not in text
    assert base64.b64encode(f"alertmanager:{TOKEN}x".encode()).decode() not in text


# GET /api/alerts ---------------------------------------------------------------------------

def test_listing_recorded_alerts_with_the_unmapped_reason(client, world):
    post(client, raw("grouped.json"))
    world.clock.now = NOW + timedelta(minutes=1)
    post(client, raw("watchdog.json"))
    firing = {s.alert.name: s for s in world.inbox.firing()}
    watchdog = firing["Watchdog"]
    world.inbox.set_mapping(watchdog.alert.fingerprint, watchdog.alert.starts_at,
                            Unmapped("no namespace label (looked for: namespace)"))
    payments = next(s for s in world.inbox.firing() if s.alert.label("service") == "payments-api")
    world.inbox.set_mapping(payments.alert.fingerprint, payments.alert.starts_at,
                            AlertTarget("demo-aiops", "payments-api", "service"))

    everything = client.get(API_PATH).json()["alerts"]
    assert len(everything) == 4 and everything[0]["name"] == "Watchdog"
    assert everything[0]["unmapped_reason"] == "no namespace label (looked for: namespace)"
    assert everything[0]["mapped"] is False

    unmapped = client.get(API_PATH, params={"mapped": "false"}).json()["alerts"]
    assert {a["name"] for a in unmapped} == {"Watchdog", "HighErrorRate"} and len(unmapped) == 3
    mapped = client.get(API_PATH, params={"mapped": "true"}).json()["alerts"]
    assert [(a["deployment"], a["mapped_by"]) for a in mapped] == [("payments-api", "service")]
    resolved = client.get(API_PATH, params={"status": "resolved"}).json()["alerts"]
    assert [a["labels"]["service"] for a in resolved] == ["ledger"]
    in_namespace = client.get(API_PATH, params={"namespace": "demo-aiops"}).json()["alerts"]
    assert [a["deployment"] for a in in_namespace] == ["payments-api"]
    assert len(client.get(API_PATH, params={"limit": "2"}).json()["alerts"]) == 2
    assert len(client.get(API_PATH, params={"limit": "1000"}).json()["alerts"]) == 4


def test_listing_needs_no_token_and_works_on_a_standby(world):
    world.leader = False
    with TestClient(world.app(token=None)) as client:
        assert client.get(API_PATH).json() == {"alerts": []}


@pytest.mark.parametrize("params, error", [
    ({"limit": "0"}, "limit must be an integer from 1 to 1000"),
    ({"limit": "1001"}, "limit must be an integer from 1 to 1000"),
    ({"limit": "-1"}, "limit must be an integer from 1 to 1000"),
    ({"limit": "ten"}, "limit must be an integer from 1 to 1000"),
    ({"limit": "١٠"}, "limit must be an integer from 1 to 1000"),
    ({"status": "pending"}, "status must be firing or resolved"),
    ({"mapped": "yes"}, "mapped must be true or false"),
    ({"namespace": ""}, "namespace must not be empty"),
])
def test_listing_bad_parameters(client, params, error):
    response = client.get(API_PATH, params=params)
    assert response.status_code == 400
    assert response.json() == {"error": error}
