"""Slack incoming-webhook notifier: POST a rendered payload, retry what may succeed later.

The webhook URL *is* the credential (anyone holding it may post to the channel), so it is kept
in a ``SecretStr`` until the moment of the request and never put in a log line, an exception
message or a repr. httpx exceptions carry the request (and some print its URL), so errors are
described from the status code, the exception class and Slack's own short answer instead.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import SecretStr

from ..errors import SourceError, parse_retry_after
from ..retry import Backoff, Sleep, call_with_retries

log = structlog.get_logger(__name__)

SOURCE = "slack"
# Slack answers errors with a short text body ("invalid_payload", "no_service", ...).
BODY_EXCERPT_CHARS = 200
REDACTED = "[redacted]"
# A payload's private key naming its thread (an incident's follow-ups reply in its thread when
# the bot token delivers, see slack_bot); never sent to Slack.
THREAD_KEY = "_thread"


def thread_key(key: tuple[Any, ...]) -> str:
    """The text that names an incident's thread."""
    return "/".join(str(part) for part in key)


def without_private_keys(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as Slack may see it: keys of ours (``_thread``) removed."""
    return {key: value for key, value in payload.items() if not key.startswith("_")}


def _user_agent() -> str:
    try:
        return f"incident-detector/{metadata.version('incident-detector')}"
    except metadata.PackageNotFoundError:
        return "incident-detector"


def make_http_client(*, timeout: float) -> httpx.AsyncClient:
    """The client for Slack. No base_url: the URL is a secret handed over per request."""
    # httpx logs every request line, URL included, at INFO on the stdlib "httpx" logger; for a
    # webhook that line would print the secret wherever stdlib INFO logs end up.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": _user_agent()},
        follow_redirects=False,
    )


class SlackNotifier:
    """Delivers one Block Kit payload per ``send``; raises ``SourceError`` when it cannot."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        webhook_url: SecretStr,
        max_attempts: int = 5,
        backoff: Backoff = Backoff(base=1.0, cap=30.0),
        sleep: Sleep = asyncio.sleep,
        max_retry_after: float = 60.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._webhook_url = webhook_url
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._max_retry_after = max_retry_after

    def __repr__(self) -> str:
        # SecretStr's repr is masked; nothing else here is sensitive.
        return (
            f"SlackNotifier(webhook_url={self._webhook_url!r}, "
            f"max_attempts={self._max_attempts})"
        )

    async def send(self, payload: dict[str, Any]) -> None:
        await call_with_retries(
            lambda: self._post(payload),
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            sleep=self._sleep,
            max_retry_after=self._max_retry_after,
            on_retry=_log_retry,
        )

    async def _post(self, payload: dict[str, Any]) -> None:
        url = self._webhook_url.get_secret_value()
        try:
            response = await self._http.post(url, json=without_private_keys(payload))
        # ``from None``: the httpx exception (and its request URL) must not travel along.
        except httpx.TimeoutException as exc:
            raise SourceError(
                SOURCE, "timeout", f"no answer from the webhook in time ({type(exc).__name__})",
                retryable=True,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            # A malformed URL or request will not get better by itself.
            raise SourceError(
                SOURCE, "invalid_request", f"the request could not be sent ({type(exc).__name__})",
                retryable=False,
            ) from None
        except httpx.TransportError as exc:
            raise SourceError(
                SOURCE, "connection", f"could not reach the webhook ({type(exc).__name__})",
                retryable=True,
            ) from None
        self._check(response)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        body = self._excerpt(response)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise SourceError(
                SOURCE, "http_429", f"rate limited by Slack: {body}",
                retryable=True, retry_after=retry_after, status=status,
            )
        if status >= 500:
            raise SourceError(
                SOURCE, f"http_{status}", f"Slack failed: {body}", retryable=True, status=status
            )
        # 400 invalid_payload, 403 invalid_token, 404 no_service, 410 channel_is_archived...:
        # the same request will be refused again until someone fixes the payload or the webhook.
        raise SourceError(
            SOURCE, f"http_{status}", f"Slack refused the message: {body}",
            retryable=False, status=status,
        )

    def _excerpt(self, response: httpx.Response) -> str:
        try:
            text = response.text
        except (UnicodeDecodeError, LookupError):
            text = ""
        # A proxy or a misbehaving server may echo the request URL (or its path, which holds the
        # token) back in its error page.
        secret = self._webhook_url.get_secret_value()
        for leak in (secret, urlsplit(secret).path):
            if len(leak) > 1:
                text = text.replace(leak, REDACTED)
        text = " ".join(text.split())
        if len(text) > BODY_EXCERPT_CHARS:
            text = text[: BODY_EXCERPT_CHARS - 1] + "…"
        return text or "(empty body)"


def _log_retry(error: SourceError, attempt: int, wait: float) -> None:
    log.warning(
        "slack.retry", reason=error.reason, status=error.status, attempt=attempt, wait=wait
    )
