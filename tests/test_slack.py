from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import respx
from pydantic import SecretStr
from structlog.testing import capture_logs

from incident_detector.notify import render
from factories import make_incident
from incident_detector.errors import SourceError
from incident_detector.model import Evidence, Signal
from incident_detector.retry import Backoff
from incident_detector.notify.slack import SlackNotifier, make_http_client

# A recognisable token: it must never show up anywhere but in the request itself.
TOKEN = "XoXoSeCrEtT0kEn4242"
WEBHOOK = f"https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/{TOKEN}"
NO_JITTER = Backoff(base=1.0, cap=30.0, jitter=False)

INCIDENT = make_incident(
    signals=(Signal.ERROR_SPIKE,),
    evidence=Evidence(error_rate_per_minute=14.0, baseline_per_minute=0.5,
                      baseline_window_seconds=600),
)
PAYLOAD = render.slack_payload(INCIDENT)


class Outcome:
    """What one ``send`` did: the error it raised, the sleeps it asked for, the logs it wrote."""

    def __init__(self) -> None:
        self.error: SourceError | None = None
        self.sleeps: list[float] = []
        self.logs: list[dict] = []


def deliver(route_side_effect, *, max_attempts: int = 5, max_retry_after: float = 60.0):
    """Send PAYLOAD through a real httpx client whose transport is answered by respx."""
    outcome = Outcome()

    async def fake_sleep(seconds: float) -> None:
        outcome.sleeps.append(seconds)

    async def main() -> None:
        async with make_http_client(timeout=2.0) as http:
            notifier = SlackNotifier(
                http=http,
                webhook_url=SecretStr(WEBHOOK),
                max_attempts=max_attempts,
                backoff=NO_JITTER,
                sleep=fake_sleep,
                max_retry_after=max_retry_after,
            )
            try:
                await notifier.send(PAYLOAD)
            except SourceError as exc:
                outcome.error = exc

    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(WEBHOOK).mock(side_effect=route_side_effect)
        with capture_logs() as logs:
            asyncio.run(main())
    outcome.logs = logs
    return route, outcome


def assert_no_secret(outcome: Outcome) -> None:
    assert TOKEN not in repr(outcome.logs)
    if outcome.error is not None:
        assert TOKEN not in str(outcome.error)
        assert TOKEN not in repr(outcome.error)
        assert TOKEN not in outcome.error.message
        # An httpx exception (which carries the request) is not chained to ours.
        assert outcome.error.__cause__ is None
        assert outcome.error.__context__ is None or outcome.error.__suppress_context__


def retries(outcome: Outcome) -> list[dict]:
    return [entry for entry in outcome.logs if entry["event"] == "slack.retry"]


def test_posts_blocks_and_fallback_text_as_json():
    route, outcome = deliver([httpx.Response(200, text="ok")])
    assert outcome.error is None
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("incident-detector")
    body = json.loads(request.content)
    assert body == PAYLOAD
    assert body["blocks"][0]["type"] == "header"
    assert body["text"].startswith(":rotating_light: payments-api rev 2 broke in demo-aiops")
    assert outcome.sleeps == [] and retries(outcome) == []


def test_429_waits_retry_after_then_delivers_once():
    route, outcome = deliver([
        httpx.Response(429, headers={"Retry-After": "3"}, text="rate_limited"),
        httpx.Response(200, text="ok"),
    ])
    assert outcome.error is None
    assert route.call_count == 2
    assert outcome.sleeps == [3.0]
    (entry,) = retries(outcome)
    assert entry["reason"] == "http_429" and entry["attempt"] == 1 and entry["wait"] == 3.0
    assert entry["log_level"] == "warning"
    assert_no_secret(outcome)


def test_429_retry_after_is_capped():
    route, outcome = deliver(
        [httpx.Response(429, headers={"Retry-After": "3600"}), httpx.Response(200, text="ok")],
        max_retry_after=60.0,
    )
    assert outcome.error is None
    assert outcome.sleeps == [60.0]


def test_429_without_retry_after_uses_backoff():
    route, outcome = deliver([httpx.Response(429), httpx.Response(200, text="ok")])
    assert outcome.error is None
    assert outcome.sleeps == [1.0]


def test_5xx_is_retried_with_backoff_then_delivers():
    route, outcome = deliver([
        httpx.Response(503, text="service_unavailable"),
        httpx.Response(500, text="internal_error"),
        httpx.Response(200, text="ok"),
    ])
    assert outcome.error is None
    assert route.call_count == 3
    assert outcome.sleeps == [1.0, 2.0]
    assert [e["reason"] for e in retries(outcome)] == ["http_503", "http_500"]
    assert [e["attempt"] for e in retries(outcome)] == [1, 2]


def test_5xx_until_attempts_run_out_raises_retryable():
    route, outcome = deliver([httpx.Response(503, text="service_unavailable")] * 3,
                             max_attempts=3)
    assert route.call_count == 3
    error = outcome.error
    assert error is not None
    assert error.source == "slack" and error.retryable and error.status == 503
    assert error.reason == "http_503"
    assert "service_unavailable" in error.message
    assert outcome.sleeps == [1.0, 2.0]
    assert len(retries(outcome)) == 2  # one log line per retry, none for the final failure
    assert_no_secret(outcome)


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, "invalid_payload"), (403, "invalid_token"), (404, "no_service"),
     (410, "channel_is_archived")],
)
def test_client_errors_are_not_retried(status, body):
    route, outcome = deliver([httpx.Response(status, text=body, headers={"x-slack-req": "1"})])
    assert route.call_count == 1
    error = outcome.error
    assert error is not None
    assert error.source == "slack" and not error.retryable
    assert error.status == status and error.reason == f"http_{status}"
    assert body in error.message
    assert outcome.sleeps == [] and retries(outcome) == []
    assert_no_secret(outcome)


def test_error_body_is_truncated_and_an_echoed_url_is_redacted():
    echo = f"bad request to {WEBHOOK} and path /services/T0AAAAAAA/B0BBBBBBB/{TOKEN} " + "x" * 500
    route, outcome = deliver([httpx.Response(400, text=echo)])
    assert outcome.error is not None
    assert "[redacted]" in outcome.error.message
    assert len(outcome.error.message) < 260
    assert_no_secret(outcome)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        # Messages that name the URL stand for the worst case of what httpx may put in str().
        (httpx.ReadTimeout(f"timed out reading {WEBHOOK}"), "timeout"),
        (httpx.ConnectTimeout("timed out"), "timeout"),
        (httpx.ConnectError(f"[Errno 111] Connection refused: {WEBHOOK}"), "connection"),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."),
         "connection"),
    ],
)
def test_transport_errors_are_retried(failure, reason):
    route, outcome = deliver([failure, httpx.Response(200, text="ok")])
    assert outcome.error is None
    assert route.call_count == 2
    (entry,) = retries(outcome)
    assert entry["reason"] == reason and entry["wait"] == 1.0
    assert_no_secret(outcome)


def test_transport_errors_until_attempts_run_out_raise_retryable_without_url():
    route, outcome = deliver(
        [httpx.ConnectError(f"cannot connect to {WEBHOOK}")] * 2
        + [httpx.ReadTimeout(f"timed out reading {WEBHOOK}")],
        max_attempts=3,
    )
    assert route.call_count == 3
    error = outcome.error
    assert error is not None and error.retryable and error.reason == "timeout"
    assert "ReadTimeout" in error.message
    assert_no_secret(outcome)


def test_unsupported_protocol_is_not_retried():
    route, outcome = deliver([httpx.UnsupportedProtocol(f"bad scheme in {WEBHOOK}")])
    assert route.call_count == 1
    assert outcome.error is not None and not outcome.error.retryable
    assert_no_secret(outcome)


def test_notifier_repr_hides_the_webhook():
    notifier = SlackNotifier(http=httpx.AsyncClient(), webhook_url=SecretStr(WEBHOOK))
    assert TOKEN not in repr(notifier)
    assert TOKEN not in str(notifier)


def test_httpx_request_log_line_does_not_leak_the_webhook(caplog):
    # httpx would log "HTTP Request: POST <url>" at INFO on the stdlib logger.
    caplog.set_level(logging.DEBUG)
    route, outcome = deliver([httpx.Response(200, text="ok")])
    assert outcome.error is None
    assert TOKEN not in caplog.text


def test_make_http_client_sets_timeout_and_has_no_base_url():
    client = make_http_client(timeout=4.5)
    try:
        assert client.timeout == httpx.Timeout(4.5)
        assert str(client.base_url) == ""
        assert client.headers["user-agent"].startswith("incident-detector")
    finally:
        asyncio.run(client.aclose())
