"""Whether the detector can do its work: the store answers (checked at every tick, leader or
standby), the store going away in the middle of a tick ends the tick's work rather than the
tick, and why /readyz says 503."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING

from ..store.db import StoreUnavailable

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector
    from .tick_report import TickReport


def store_answers(det: Detector, now: datetime, report: TickReport) -> bool:
    """Whether the store answers a trivial query; when it does not, the tick holds what it
    would record (incidents are decided again at the next tick, from Kubernetes and Loki,
    which keep them) and says why."""
    try:
        det.store.ping()
    except StoreUnavailable as exc:
        store_failed(det, now, report, exc)
        return False
    det.sources["store"].succeeded(now)
    return True


async def with_store(det: Detector, work: Awaitable[None], now: datetime,
                     report: TickReport) -> None:
    """Run a tick's work; the store going away in the middle of it ends the work there
    (what was written is written, each write whole) instead of crashing the tick."""
    try:
        await work
    except StoreUnavailable as exc:
        store_failed(det, now, report, exc)


def store_failed(det: Detector, now: datetime, report: TickReport,
                 exc: StoreUnavailable) -> None:
    det.sources["store"].failed(now, exc)
    report.problems.append(f"store: {exc.reason}: {exc.message}")
    # Once it is back, what an action was doing when the store went away is taken up again.
    det.resumed = False


def unready_reason(det: Detector) -> str | None:
    """Why /readyz says 503 (None: ready). A standby is ready while it is alive and its
    store answers: its job is to be able to take over."""
    store = det.sources["store"]
    if store.failing:
        return f"the store is unavailable: {store.last_error}"
    if not det.is_leader():
        return None if det.alive() else "stalled: no tick finished recently"
    if det.last_tick is None:
        return "no tick has finished yet"
    if det.last_tick.degraded:
        return "the last tick was degraded: " + "; ".join(det.last_tick.problems[:3])
    return None
