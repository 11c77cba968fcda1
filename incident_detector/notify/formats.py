"""Pure formatting of numbers, times and text shared by every renderer: durations, UTC times,
JSON numbers, counts, rates, plurals and truncation.

Times are shown in UTC so that the same incident renders the same way on every host.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from enum import Enum
from typing import Any

ELLIPSIS = "…"


def wire_value(item: Any) -> Any:
    """The wire value of an enum member (``str(member)`` would give ``Class.MEMBER``)."""
    return item.value if isinstance(item, Enum) else item


def as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC: reading the host's zone would make rendering impure.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def clock_time(moment: datetime) -> str:
    return as_utc(moment).strftime("%H:%M:%S UTC")


def json_number(value: float) -> int | float | None:
    """An int when the value is integral (counts), else rounded; None for NaN/infinity (JSON)."""
    if not math.isfinite(value):
        return None
    if float(value).is_integer():
        return int(value)
    return round(value, 3)


def count_text(value: float) -> str:
    number = json_number(value)
    return "?" if number is None else str(number)


def rate_text(per_minute: float) -> str:
    if not math.isfinite(per_minute):
        return "?"
    if abs(per_minute) >= 10:
        return f"{per_minute:.0f}"
    return f"{per_minute:.2f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """``90`` -> ``1m30s``, ``120`` -> ``2m``, ``3725`` -> ``1h2m5s``; negatives show as ``0s``."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, the last one an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def one_line(text: str) -> str:
    return " ".join(text.split())
