"""Slack through a Slack app's bot token: ``chat.postMessage`` in ``SLACK_CHANNEL_ID``, and the
follow-ups of an incident (the approval's outcome, the verification) as replies in its thread.

Slack's own SDK (``slack_sdk.WebClient``) makes the calls: it knows the Web API's form, its
errors (``SlackApiError`` with Slack's ``error`` code) and its rate limits (429 with
Retry-After). It blocks, so each call runs in a worker thread. The token never leaves the
client: no log line, error or repr carries it.

A payload may name its thread with the key ``THREAD_KEY`` (the incident's key as text): the
first message of a thread is posted to the channel and its ``ts`` remembered, the next ones
reply to it. The memory is the store's (``store.threads``), so a follow-up sent after a restart,
or by another replica on the same database, still replies in the incident's thread.
"""

from __future__ import annotations

import asyncio
import urllib.error
from typing import Any, Protocol

import structlog
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from ..errors import SourceError, parse_retry_after
from .slack import THREAD_KEY, without_private_keys

log = structlog.get_logger(__name__)

SOURCE = "slack"
SLACK_API = "https://slack.com/api/"
# Slack's error codes that a later attempt may get past.
RETRYABLE_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


class Threads(Protocol):
    """Where the ``ts`` of each thread's first message is kept (``store.threads``)."""

    def get(self, key: str) -> str | None: ...
    def remember(self, key: str, *, channel: str, ts: str) -> None: ...


class ThreadsInMemory:
    """This process's memory only: for tools and tests without a store."""

    def __init__(self) -> None:
        self._ts: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self._ts.get(key)

    def remember(self, key: str, *, channel: str, ts: str) -> None:
        self._ts.setdefault(key, ts)


class SlackBotNotifier:
    """Delivers one message per ``send``; raises ``SourceError`` when it cannot."""

    def __init__(self, *, token: SecretStr, channel: str, timeout: float,
                 base_url: str = SLACK_API, threads: Threads | None = None) -> None:
        self._client = WebClient(token=token.get_secret_value(), base_url=base_url,
                                 timeout=max(1, round(timeout)))
        self._channel = channel
        self._threads: Threads = threads if threads is not None else ThreadsInMemory()

    def __repr__(self) -> str:
        return f"SlackBotNotifier(channel={self._channel!r})"

    async def send(self, payload: dict[str, Any]) -> None:
        key = payload.get(THREAD_KEY)
        body = without_private_keys(payload)
        parent = self._threads.get(key) if isinstance(key, str) else None
        try:
            answer = await asyncio.to_thread(
                self._client.chat_postMessage, channel=self._channel,
                text=body.get("text") or "", blocks=body.get("blocks"), thread_ts=parent)
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            raise SourceError(SOURCE, "connection",
                              f"could not reach Slack's Web API ({type(exc).__name__})",
                              retryable=True) from None
        ts = answer.get("ts")
        if isinstance(key, str) and parent is None and isinstance(ts, str):
            self._threads.remember(key, channel=self._channel, ts=ts)


def _api_error(exc: SlackApiError) -> SourceError:
    response = exc.response
    status = getattr(response, "status_code", None)
    code = response.get("error") if hasattr(response, "get") else None
    code = code if isinstance(code, str) else "unknown_error"
    if status == 429 or code == "ratelimited":
        headers = getattr(response, "headers", {}) or {}
        retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        return SourceError(SOURCE, "http_429", "rate limited by Slack", retryable=True,
                           retry_after=retry_after, status=429)
    retryable = (status is not None and status >= 500) or code in RETRYABLE_ERRORS
    # invalid_auth, channel_not_found, not_in_channel, invalid_blocks...: fixed by a person.
    return SourceError(SOURCE, f"slack_{code}", f"Slack refused the message: {code}",
                       retryable=retryable, status=status)
