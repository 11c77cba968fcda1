"""When the loop looks: a tick every POLL_INTERVAL_SECONDS, a fast look every
FAST_POLL_SECONDS while a rollout is young, and one as soon as a watch sees a change or alerts
arrive. Every sleep wakes at once on stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector

log = structlog.get_logger("incident_detector")


# A tick woken early (alerts arrived) comes at least this long after the previous one began.
MIN_WAKE_SECONDS = 1.0


# Watch events come in bursts (a rollout moves a Deployment, a ReplicaSet and its pods within
# moments): a fast look they wake comes at least this long after the previous look began.
MIN_WATCH_WAKE_SECONDS = 0.5


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        try:
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


async def run_loop(det: Detector, stop: asyncio.Event) -> None:
    interval = det.settings.poll_interval_seconds
    next_tick = time.monotonic()
    last_look = next_tick
    while not stop.is_set():
        started = time.monotonic()
        if started >= next_tick or det.wakeup.is_set():
            det.wakeup.clear()
            await guarded(det, det.tick())
            next_tick = started + interval
        else:
            await guarded(det, det.fast_look())
        last_look = started
        due = next_tick
        if det.fast_lane_active:
            due = min(due, started + det.settings.fast_poll_seconds)
        woke = await sleep_until(det, due, stop)
        if woke is det.wakeup and not stop.is_set():
            # Woken early (alerts arrived): at most one extra tick per MIN_WAKE_SECONDS.
            await _sleep_or_stop(stop, MIN_WAKE_SECONDS - (time.monotonic() - last_look))
        elif woke is det.watch_wakeup and not stop.is_set():
            await _sleep_or_stop(stop, MIN_WATCH_WAKE_SECONDS - (time.monotonic() - last_look))


async def sleep_until(det: Detector, due: float, stop: asyncio.Event) -> asyncio.Event | None:
    """Sleep until ``due`` (monotonic), or until stop, alerts or a watch event wake it:
    which event woke it (None: the time came)."""
    det.watch_wakeup.clear()
    if det.woken and det.settings.fast_poll_seconds > 0:
        det.watch_wakeup.set()  # an event came in during the look that just ended
    events = (stop, det.wakeup, det.watch_wakeup)
    waiters = {asyncio.ensure_future(event.wait()): event for event in events}
    try:
        done, _ = await asyncio.wait(waiters, timeout=max(0.0, due - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    for event in events:
        if any(waiters[w] is event for w in done):
            return event
    return None


async def guarded(det: Detector, look: Awaitable[Any]) -> None:
    try:
        await look
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug must not stop detection: log it with its traceback
        log.exception("tick.crashed")


def start_following(det: Detector) -> bool:
    """Follow each namespace's Deployments, ReplicaSets and pods with long watches
    (WATCH_FOLLOW), their events waking the fast lane; False when the source cannot."""
    follow = getattr(det.kube, "follow", None)
    if not det.settings.watch_follow or follow is None:
        return False
    for namespace in det.settings.namespace:
        follow(namespace, on_event=det.watch_event)
    return True

