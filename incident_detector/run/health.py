"""The health of each dependency, and calls to it that turn a failure into "unknown".

A source that fails is marked failing (logged when the failure starts and when it ends, not on
every tick), is not called again before the server's ``Retry-After`` or its backoff, and its
caller gets None: the correlator then knows it does not know, which is not "no errors".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import structlog

from ..errors import SourceError
from ..retry import Backoff
from .metrics import DetectorMetrics

log = structlog.get_logger("incident_detector")

T = TypeVar("T")


def iso(value: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 UTC with a Z, as /status and the logs show times."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


@dataclass
class SourceHealth:
    """Last success and last error of one dependency; logs only when its state changes."""

    name: str
    failing: bool = False
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    # Not called again before this time (the server's Retry-After, or the backoff schedule).
    retry_at: datetime | None = None

    def succeeded(self, now: datetime) -> None:
        if self.failing:
            log.info("source.recovered", source=self.name, failing_since=iso(self.last_error_at))
        self.failing = False
        self.consecutive_failures = 0
        self.retry_at = None
        self.last_success_at = now

    def failed(self, now: datetime, error: SourceError, *, backoff: Backoff | None = None) -> None:
        if not self.failing:
            log.warning("source.failed", source=self.name, reason=error.reason, error=error.message,
                        retryable=error.retryable)
        self.failing = True
        self.consecutive_failures += 1
        self.last_error_at = now
        self.last_error = f"{error.reason}: {error.message}"
        if backoff is not None:
            wait = error.retry_after if error.retry_after is not None \
                else backoff.delay(self.consecutive_failures)
            self.retry_at = now + timedelta(seconds=wait)

    def backing_off(self, now: datetime) -> bool:
        return self.retry_at is not None and now < self.retry_at

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.failing, "last_success_at": iso(self.last_success_at),
                "last_error_at": iso(self.last_error_at), "last_error": self.last_error,
                "consecutive_failures": self.consecutive_failures}


class Sources:
    """One ``SourceHealth`` per dependency, and the one way the loop calls a source."""

    def __init__(self, names: Iterable[str], *, metrics: DetectorMetrics,
                 backoff: Backoff = Backoff(base=1.0, cap=60.0)) -> None:
        self.health = {name: SourceHealth(name) for name in names}
        self.metrics = metrics
        self.backoff = backoff

    def __getitem__(self, name: str) -> SourceHealth:
        return self.health[name]

    async def call(self, source: str, call: Callable[[], Awaitable[T]], *, now: datetime,
                   problems: list[str], what: str) -> T | None:
        """Call a source; on failure mark it failing, back off, note the problem and return
        None ("unknown")."""
        health = self.health[source]
        if health.backing_off(now):
            problems.append(f"{source}: {what}: backing off after: {health.last_error}")
            return None
        self.metrics.source_called(source)
        try:
            value = await call()
        except SourceError as exc:
            self.metrics.source_failed(source, exc.reason)
            health.failed(now, exc, backoff=self.backoff if exc.retryable else None)
            problems.append(f"{source}: {what}: {exc.reason}: {exc.message}")
            return None
        health.succeeded(now)
        return value

    def as_dict(self, names: Iterable[str]) -> dict[str, Any]:
        return {name: self.health[name].as_dict() for name in names}
