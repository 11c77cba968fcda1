"""How many queries each namespace costs Loki, and the cap the fast lane stays under.

Every HTTP request the Loki client sends on behalf of a namespace (a count, a sample, a retry)
is one query of that namespace. ``MeteredLoki`` wraps the Loki source: each call names its
namespace, which rides along in a context variable to the HTTP client's request hook
(``LokiBudget.on_request``), so the figure is what really went out, whichever part of the
detector asked (the rollouts' counts and baselines, the signatures, triage, the change desk).

``LokiBudget`` keeps the instants of the last minute's queries per namespace (an injected
monotonic clock; never more than the cap plus one tick's queries per namespace). The poll
always runs; a fast look (``Detector``'s fast lane) only when its queries fit under
``LOKI_MAX_QUERIES_PER_MINUTE``. ``/metrics`` shows the rate and the total.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import httpx

WINDOW_SECONDS = 60.0

_NAMESPACE: ContextVar[str | None] = ContextVar("loki_namespace", default=None)


class LokiBudget:
    """Loki queries per namespace over the last minute, against a cap."""

    def __init__(self, *, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self.totals: dict[str, int] = {}

    def record(self, namespace: str, queries: int = 1) -> None:
        now = self._clock()
        recent = self._recent.setdefault(namespace, deque())
        recent.extend([now] * queries)
        self.totals[namespace] = self.totals.get(namespace, 0) + queries
        self._expire(recent, now)

    def used(self, namespace: str) -> int:
        """Queries of ``namespace`` in the last minute."""
        recent = self._recent.get(namespace)
        if not recent:
            return 0
        self._expire(recent, self._clock())
        return len(recent)

    def allows(self, namespace: str, queries: int = 1) -> bool:
        """Whether ``queries`` more stay within the cap for the minute."""
        return self.used(namespace) + queries <= self.per_minute

    def rates(self) -> dict[str, int]:
        """Queries per namespace in the last minute (for ``/metrics`` and ``/status``)."""
        return {namespace: self.used(namespace) for namespace in self._recent}

    async def on_request(self, request: httpx.Request) -> None:
        """The Loki HTTP client's request hook: counts the request for the namespace whose
        call sent it (outside a ``MeteredLoki`` call, a request is nobody's: the version probe)."""
        namespace = _NAMESPACE.get()
        if namespace is not None:
            self.record(namespace)

    @staticmethod
    def _expire(recent: deque[float], now: float) -> None:
        while recent and now - recent[0] >= WINDOW_SECONDS:
            recent.popleft()


class MeteredLoki:
    """The Loki source, each of its calls that names a ``namespace`` tagged with it for
    ``LokiBudget.on_request``; everything else is the source's own."""

    def __init__(self, loki: Any) -> None:
        self.inner = loki

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def tagged(*args: Any, **kwargs: Any) -> Any:
            token = _NAMESPACE.set(kwargs.get("namespace"))
            try:
                return await attr(*args, **kwargs)
            finally:
                _NAMESPACE.reset(token)

        return tagged
