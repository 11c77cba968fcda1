"""Capped, jittered exponential backoff, one retry loop that honours ``Retry-After``, and the
loop of a worker that wakes on an event."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import SourceError

T = TypeVar("T")


async def wait_for_wakeup(wakeup: asyncio.Event, stop: asyncio.Event, *, timeout: float) -> None:
    """A worker's pause between two passes: until ``wakeup`` or ``stop`` is set, or ``timeout``
    seconds have passed, whichever comes first (the worker then looks at what is due)."""
    waiter = asyncio.ensure_future(wakeup.wait())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()


async def run_passes(step: Callable[[], Awaitable[object]], *, wakeup: asyncio.Event,
                     stop: asyncio.Event, idle: Callable[[], float],
                     on_error: Callable[[Exception], None]) -> None:
    """A worker's loop: ``step`` once per pass until ``stop``, pausing ``wait_for_wakeup``
    (at most ``idle()`` seconds) between passes. An error of a pass goes to ``on_error``, called
    inside the ``except`` (``log.exception`` there has the traceback); the next pass tries
    again. Cancellation ends the loop."""
    while not stop.is_set():
        wakeup.clear()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            on_error(exc)
        await wait_for_wakeup(wakeup, stop, timeout=idle())


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt ``n+1`` after ``n`` failures: base * 2**(n-1), capped, with jitter.

    Full jitter would make the first retry sometimes immediate; "equal jitter" keeps at least half
    of the delay so that a struggling server always gets a breather.
    """

    base: float = 0.5
    cap: float = 30.0
    jitter: bool = True

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        if failures <= 0:
            return 0.0
        raw = min(self.cap, self.base * (2 ** (failures - 1)))
        if not self.jitter:
            return raw
        r = (rng or random).random()
        return raw / 2 + r * raw / 2


Sleep = Callable[[float], Awaitable[None]]


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    backoff: Backoff,
    sleep: Sleep = asyncio.sleep,
    max_retry_after: float = 60.0,
    on_retry: Callable[[SourceError, int, float], None] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, raises a non-retryable error, or attempts run out.

    Only ``SourceError`` with ``retryable=True`` is retried. The wait is the server's
    ``Retry-After`` when it gave one (capped by ``max_retry_after``), else the backoff delay.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except SourceError as exc:
            failures += 1
            if not exc.retryable or failures >= max_attempts:
                raise
            wait = backoff.delay(failures)
            if exc.retry_after is not None:
                wait = min(max(exc.retry_after, 0.0), max_retry_after)
            if on_retry is not None:
                on_retry(exc, failures, wait)
            await sleep(wait)
