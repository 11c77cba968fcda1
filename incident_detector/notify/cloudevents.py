"""Each recorded change posted to ``CHANGE_WEBHOOK_URL`` as a CloudEvent 1.0, structured mode.

One HTTP POST per change, ``Content-Type: application/cloudevents+json``, the event as the body::

    {"specversion": "1.0",
     "id": "shop/ConfigMap/orders-config/48213",
     "source": "/incident-detector/shop",
     "type": "io.incident-detector.change.v1",
     "subject": "ConfigMap/orders-config",
     "time": "2026-11-23T18:00:04Z",
     "datacontenttype": "application/json",
     "data": {...change_dict...}}

``id`` is the object's namespace, kind, name and resourceVersion: the same change seen by
another replica, or sent again after a crash between the POST and its record, has the same id,
so a receiver can drop the duplicate (source + id is unique, as the spec asks). ``time`` is when
the change was made. ``type`` names this shape of ``data``; a change of shape would be ``.v2``.

``ChangeEmitter`` sends what the ``changes`` table says is pending (``ChangeLog.emit``), oldest
first. A 2xx is sent; 408, 429 (after its ``Retry-After``), a 5xx, a timeout or a connection
error is tried again after a capped exponential backoff (``retry.Backoff``); any other answer
(400, 401, 403, 404, 3xx...) will be the same next time, so the change is given up, as it is
after ``max_attempts``. The state is in the table: nothing is lost across a restart, a change
pending then goes out after it.

Logged once per state change: the endpoint starting to fail and recovering, a change given up.
The optional ``CHANGE_WEBHOOK_TOKEN`` is sent as ``Authorization: Bearer`` and appears in no log
line, no stored error and no repr; neither does the URL's path or query (it may hold a key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import SecretStr

from ..errors import parse_retry_after
from ..model import Change
from ..retry import Backoff, run_passes
from ..store.changes import ChangeLog, PendingEmission, change_dict

if TYPE_CHECKING:
    from ..config import Settings

log = structlog.get_logger("incident_detector")

SPEC_VERSION = "1.0"
EVENT_TYPE = "io.incident-detector.change.v1"
SOURCE_PREFIX = "/incident-detector"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
DATA_CONTENT_TYPE = "application/json"
# Answers that may be different next time; any other 4xx (and a 3xx: redirects are not
# followed) will not fix itself.
RETRYABLE_CLIENT_STATUSES = (408, 429)
# Attempts of one change before it is given up (about an hour and a half with the backoff below).
MAX_ATTEMPTS = 24
# How long the worker sleeps when nothing wakes it: retry times come due on their own.
IDLE_SECONDS = 1.0
# ... and at least this long, so that a retry due at once cannot make it spin.
MIN_IDLE_SECONDS = 0.05
# Changes sent per pass; the next pass takes the rest at once.
BATCH = 50

Clock = Callable[[], datetime]


def change_event(change: Change) -> dict[str, Any]:
    """The CloudEvent (structured mode, JSON format) of a recorded change."""
    version = change.resource_version or f"row-{change.id}"
    return {
        "specversion": SPEC_VERSION,
        "id": f"{change.namespace}/{change.kind}/{change.name}/{version}",
        "source": f"{SOURCE_PREFIX}/{change.namespace}",
        "type": EVENT_TYPE,
        "subject": f"{change.kind}/{change.name}",
        "time": change.at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": change_dict(change),
    }


def make_http_client(*, timeout: float) -> httpx.AsyncClient:
    """The client of the change webhook. No base_url, no redirects followed."""
    # httpx logs every request line, URL included, at INFO on the stdlib "httpx" logger.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)


class _Failure(Exception):
    """Why one POST did not deliver; its text never holds the URL or the token."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class ChangeEmitter:
    """Posts the pending CloudEvents of the ``changes`` table; see the module's docstring."""

    def __init__(self, *, changes: ChangeLog, http: httpx.AsyncClient, url: str,
                 token: SecretStr | None = None, clock: Clock,
                 is_leader: Callable[[], bool] = lambda: True,
                 backoff: Backoff = Backoff(base=2.0, cap=300.0),
                 max_attempts: int = MAX_ATTEMPTS, batch: int = BATCH) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.changes = changes
        self._http = http
        self._url = url
        self._token = token
        self.clock = clock
        self.is_leader = is_leader
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.batch = batch
        # Set by whoever records changes, so that they go out without waiting for the idle time.
        self.wakeup = asyncio.Event()
        # The endpoint's state, logged when it changes: None (nothing tried yet), True, False.
        self._healthy: bool | None = None
        parts = urlsplit(url)
        # What a log line may say of the endpoint: scheme and host, never a path or a query.
        self.target = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    @classmethod
    def from_settings(cls, settings: Settings, *, changes: ChangeLog, http: httpx.AsyncClient,
                      clock: Clock, is_leader: Callable[[], bool] = lambda: True
                      ) -> ChangeEmitter:
        if settings.change_webhook_url is None:
            raise ValueError("CHANGE_WEBHOOK_URL is not set")
        return cls(changes=changes, http=http, url=str(settings.change_webhook_url),
                   token=settings.change_webhook_token, clock=clock, is_leader=is_leader)

    def __repr__(self) -> str:
        return f"ChangeEmitter(target={self.target!r}, token={'set' if self._token else 'unset'})"

    async def deliver_due(self) -> int:
        """Post every pending change that is due (leader only); how many were delivered."""
        if not self.is_leader():
            return 0
        delivered = 0
        tried: set[int] = set()  # once per pass, whatever time a failure set to retry at
        while True:
            due = [p for p in self.changes.pending_emission(self.clock(), limit=self.batch)
                   if p.change.id not in tried]
            if not due:
                return delivered
            for pending in due:
                tried.add(int(pending.change.id or 0))
                if await self._deliver(pending):
                    delivered += 1

    async def _deliver(self, pending: PendingEmission) -> bool:
        change, attempt = pending.change, pending.attempts + 1
        assert change.id is not None  # a pending change is a recorded one
        try:
            await self._post(change_event(change))
        except _Failure as failure:
            now = self.clock()
            self._set_health(False, failure.reason)
            if not failure.retryable or attempt >= self.max_attempts:
                self.changes.mark_emit_given_up(change.id, error=failure.reason)
                log.error("change_event.given_up", change_id=change.id,
                          namespace=change.namespace, kind=change.kind, name=change.name,
                          reason=failure.reason, attempts=attempt, target=self.target,
                          why="not retryable" if not failure.retryable else "too many attempts")
                return False
            wait = self.backoff.delay(attempt)
            if failure.retry_after is not None:
                wait = max(wait, failure.retry_after)
            self.changes.mark_emit_failed(change.id, error=failure.reason,
                                          retry_at=now + timedelta(seconds=wait))
            return False
        self.changes.mark_emitted(change.id)
        self._set_health(True, None)
        log.debug("change_event.delivered", change_id=change.id, attempts=attempt)
        return True

    async def _post(self, event: dict[str, Any]) -> None:
        headers = {"Content-Type": CONTENT_TYPE}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            response = await self._http.post(self._url, json=event, headers=headers)
        # Described by the exception's class only: httpx's messages may carry the URL.
        except httpx.TimeoutException as exc:
            raise _Failure(f"timeout ({type(exc).__name__})", retryable=True) from None
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise _Failure(f"invalid request ({type(exc).__name__})", retryable=False) from None
        except httpx.TransportError as exc:
            raise _Failure(f"connection ({type(exc).__name__})", retryable=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in RETRYABLE_CLIENT_STATUSES
        raise _Failure(f"http_{status}", retryable=retryable, status=status,
                       retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                     cap=self.backoff.cap))

    def _set_health(self, healthy: bool, reason: str | None) -> None:
        if healthy == self._healthy:
            return
        was = self._healthy
        self._healthy = healthy
        if not healthy:
            log.warning("change_events.failing", target=self.target, reason=reason)
        elif was is False:
            log.info("change_events.recovered", target=self.target)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due changes; wake on ``wakeup``, on retry times and on ``stop``."""
        def crashed(_: Exception) -> None:  # the store or a bug: the next pass tries again
            log.exception("change_events.crashed")

        await run_passes(self.deliver_due, wakeup=self.wakeup, stop=stop,
                         idle=self._idle_seconds, on_error=crashed)

    def _idle_seconds(self) -> float:
        """Until the next retry time, within [MIN_IDLE_SECONDS, IDLE_SECONDS]; a replica that is
        not the leader just waits."""
        due = self.changes.next_emission_at() if self.is_leader() else None
        if due is None:
            return IDLE_SECONDS
        wait = (due - self.clock()).total_seconds()
        return min(IDLE_SECONDS, max(MIN_IDLE_SECONDS, wait))
