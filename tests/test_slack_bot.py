"""The bot-token notifier against a loopback Slack Web API: chat.postMessage, thread replies,
and Slack's errors mapped to what a retry can and cannot fix. No token in any error or log."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from incident_detector.errors import SourceError
from incident_detector.notify.slack import THREAD_KEY, thread_key
from incident_detector.notify.slack_bot import SlackBotNotifier
from incident_detector.sim.server import LocalServer, Request, Response

TOKEN = "xoxb-0000-canary-bot-token"


class SlackApi:
    """chat.postMessage as Slack answers it; ``answers`` queues other answers first."""

    def __init__(self) -> None:
        self.calls: list[tuple[Request, dict]] = []
        self.answers: list[Response] = []
        self.next_ts = 1795456800

    def __call__(self, request: Request) -> Response:
        body = json.loads(request.body or b"{}")
        self.calls.append((request, body))
        if self.answers:
            return self.answers.pop(0)
        self.next_ts += 1
        return Response(200, {"ok": True, "channel": body.get("channel"),
                              "ts": f"{self.next_ts}.000100"})


def notifier(server: LocalServer) -> SlackBotNotifier:
    return SlackBotNotifier(token=SecretStr(TOKEN), channel="C0INCIDENT", timeout=5,
                            base_url=server.url + "/api/")


def test_messages_go_to_the_channel_and_follow_ups_to_the_incident_thread():
    api = SlackApi()
    with LocalServer(api) as server:
        bot = notifier(server)
        key = thread_key(("demo-aiops", "payments-api", 2, "uid-1"))
        asyncio.run(bot.send({"text": "incident", "blocks": [{"type": "divider"}], THREAD_KEY: key}))
        asyncio.run(bot.send({"text": "Verification PASS", THREAD_KEY: key}))
        asyncio.run(bot.send({"text": "another incident", THREAD_KEY: "other"}))
    (first, first_body), (reply, reply_body), (_, other_body) = api.calls
    assert first.path == "/api/chat.postMessage"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first_body["channel"] == "C0INCIDENT" and first_body["blocks"] == [{"type": "divider"}]
    assert "thread_ts" not in first_body and THREAD_KEY not in first_body
    assert reply_body["thread_ts"] == "1795456801.000100"
    assert "thread_ts" not in other_body


@pytest.mark.parametrize(("answer", "reason", "retryable", "retry_after"), [
    (Response(200, {"ok": False, "error": "invalid_auth"}), "slack_invalid_auth", False, None),
    (Response(200, {"ok": False, "error": "channel_not_found"}), "slack_channel_not_found",
     False, None),
    (Response(429, {"ok": False, "error": "ratelimited"}, headers={"Retry-After": "7"}),
     "http_429", True, 7.0),
    (Response(500, {"ok": False, "error": "internal_error"}), "slack_internal_error", True, None),
])
def test_slack_errors_say_whether_a_retry_may_help(answer, reason, retryable, retry_after):
    api = SlackApi()
    api.answers.append(answer)
    with LocalServer(api) as server, capture_logs() as logs:
        with pytest.raises(SourceError) as raised:
            asyncio.run(notifier(server).send({"text": "incident"}))
    error = raised.value
    assert (error.reason, error.retryable, error.retry_after) == (reason, retryable, retry_after)
    assert TOKEN not in str(error) and TOKEN not in repr(error) and TOKEN not in str(logs)


def test_an_unreachable_slack_is_a_retryable_connection_error():
    with LocalServer(SlackApi()) as server:
        url = server.url
    bot = SlackBotNotifier(token=SecretStr(TOKEN), channel="C0INCIDENT", timeout=2,
                           base_url=url + "/api/")
    with pytest.raises(SourceError) as raised:
        asyncio.run(bot.send({"text": "incident"}))
    assert raised.value.retryable and raised.value.reason == "connection"
    assert TOKEN not in repr(bot)
