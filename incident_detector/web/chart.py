"""A rollout's error rate per minute as a small inline SVG, rendered on the server.

Pure: a function of its arguments, no I/O, no clock. The chart is drawn so that colour is never
the only cue: the threshold is a dashed line labelled "threshold", the baseline band is labelled
"baseline", the rollout moment is a vertical line labelled "rollout", and the figures are also
said in words in the ``<title>`` and the ``aria-label`` (what a screen reader reads).

Points are ``(at, per_minute)`` pairs or objects with ``at`` and ``per_minute`` (``run.live``'s
``SeriesPoint``); a value of None (Loki did not answer at that tick) breaks the line. Values that
are not finite numbers are treated as None; negative values as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timezone
from html import escape
from typing import Any

# Margins inside the SVG: room for the labels on the right and the time at the bottom.
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 4.0, 58.0, 6.0, 14.0
# The highest value drawn sits this far up the plot: a little air above the peak.
HEADROOM = 0.9


def _point(item: Any) -> tuple[datetime | None, float | None]:
    if isinstance(item, tuple | list) and len(item) == 2:
        at, value = item
    else:
        at, value = getattr(item, "at", None), getattr(item, "per_minute", None)
    return (at if isinstance(at, datetime) else None), _number(value)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number):
        return None
    return max(0.0, number)


def _seconds(at: datetime) -> float:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()


def _figure(value: float | None) -> str:
    """A rate as people read it: 0, 0.5, 8, 12.3, 1.2e+06."""
    if value is None:
        return "unknown"
    if value >= 1e6:
        return f"{value:.2g}"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _printable(text: str) -> str:
    """No control characters: XML 1.0 does not allow most of them, even escaped."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def _clock(at: datetime | None) -> str:
    if at is None:
        return ""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%H:%M:%S UTC")


def _xy(value: float) -> str:
    return f"{value:.1f}"


def describe(points: Iterable[Any], *, baseline_per_minute: float | None,
             threshold_per_minute: float | None, rollout_at: datetime | None,
             title: str = "Error rate") -> str:
    """The chart in words: what the ``<title>`` and ``aria-label`` say."""
    values = [v for _, v in map(_point, points) if v is not None]
    parts = [f"{_printable(title)}:"]
    if values:
        parts.append(f"now {_figure(values[-1])} errors per minute, peak {_figure(max(values))}"
                     f" over {len(values)} reading{'s' if len(values) != 1 else ''}")
    else:
        parts.append("no error rate measured yet")
    parts.append(f"baseline {_figure(_number(baseline_per_minute))} per minute")
    parts.append(f"threshold {_figure(_number(threshold_per_minute))} per minute")
    if rollout_at is not None:
        parts.append(f"rollout at {_clock(rollout_at)}")
    return parts[0] + " " + "; ".join(parts[1:]) + "."


def error_rate_svg(
    points: Iterable[Any],
    *,
    baseline_per_minute: float | None,
    band_upper: float | None,
    threshold_per_minute: float | None,
    rollout_at: datetime | None,
    width: int = 320,
    height: int = 90,
    title: str = "Error rate",
) -> str:
    """The chart as an ``<svg>`` element (a string of escaped, self-contained markup)."""
    width = max(80, int(width)) if _number(width) is not None else 320
    height = max(40, int(height)) if _number(height) is not None else 90
    pairs = [p for p in map(_point, points) if p[0] is not None]
    baseline = _number(baseline_per_minute)
    upper = _number(band_upper)
    threshold = _number(threshold_per_minute)
    label = describe(pairs, baseline_per_minute=baseline, threshold_per_minute=threshold,
                     rollout_at=rollout_at, title=title)

    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM
    times = [_seconds(at) for at, _ in pairs if at is not None]
    if rollout_at is not None:
        times.append(_seconds(rollout_at))
    t0 = min(times) if times else 0.0
    t1 = max(times) if times else 1.0
    span = t1 - t0 if t1 - t0 > 0 else 1.0
    values = [v for _, v in pairs if v is not None]
    top = max([*values, baseline or 0.0, upper or 0.0, threshold or 0.0, 0.0])
    top = top if top > 0 else 1.0

    def x(at: datetime) -> float:
        return PAD_LEFT + plot_w * min(1.0, max(0.0, (_seconds(at) - t0) / span))

    def y(value: float) -> float:
        # value / top is at most 1: no overflow whatever the values' size.
        return PAD_TOP + plot_h * (1.0 - HEADROOM * min(1.0, value / top))

    right = PAD_LEFT + plot_w
    label_x = _xy(right + 4)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"'
           f' viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
           f' aria-label="{escape(label, quote=True)}">',
           f"<title>{escape(label, quote=False)}</title>",
           f'<rect class="plot" x="{_xy(PAD_LEFT)}" y="{_xy(PAD_TOP)}" width="{_xy(plot_w)}"'
           f' height="{_xy(plot_h)}"/>']
    if upper is not None and upper > 0:
        band_top = y(upper)
        out.append(f'<rect class="band" x="{_xy(PAD_LEFT)}" y="{_xy(band_top)}"'
                   f' width="{_xy(plot_w)}" height="{_xy(y(0.0) - band_top)}"/>')
    if baseline is not None:
        yb = _xy(y(baseline))
        out.append(f'<line class="baseline" x1="{_xy(PAD_LEFT)}" y1="{yb}" x2="{_xy(right)}"'
                   f' y2="{yb}"/>')
        out.append(f'<text class="label" x="{label_x}" y="{_xy(y(baseline) + 3)}">baseline</text>')
    if threshold is not None:
        yt = _xy(y(threshold))
        out.append(f'<line class="threshold" x1="{_xy(PAD_LEFT)}" y1="{yt}" x2="{_xy(right)}"'
                   f' y2="{yt}" stroke-dasharray="4 3"/>')
        # Above the baseline's label when both are close: one of them moves up a line.
        shift = -6 if baseline is not None and abs(y(threshold) - y(baseline)) < 9 else 3
        out.append(f'<text class="label" x="{label_x}" y="{_xy(y(threshold) + shift)}">'
                   f"threshold</text>")
    if rollout_at is not None:
        xr = _xy(x(rollout_at))
        out.append(f'<line class="rollout" x1="{xr}" y1="{_xy(PAD_TOP)}" x2="{xr}"'
                   f' y2="{_xy(PAD_TOP + plot_h)}" stroke-dasharray="1 2"/>')
        out.append(f'<text class="label" x="{xr}" y="{_xy(height - 3)}">'
                   f"rollout {escape(_clock(rollout_at)[:5])}</text>")
    segment: list[str] = []
    segments: list[list[str]] = []
    for at, value in pairs:
        if value is None or at is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{_xy(x(at))},{_xy(y(value))}")
    if segment:
        segments.append(segment)
    for coords in segments:
        if len(coords) == 1:
            cx, cy = coords[0].split(",")
            out.append(f'<circle class="rate" cx="{cx}" cy="{cy}" r="2"/>')
        else:
            out.append(f'<polyline class="rate" points="{" ".join(coords)}"/>')
    if segments:
        cx, cy = segments[-1][-1].split(",")
        out.append(f'<circle class="now" cx="{cx}" cy="{cy}" r="2.5"/>')
    else:
        out.append(f'<text class="label empty" x="{_xy(PAD_LEFT + 6)}"'
                   f' y="{_xy(PAD_TOP + plot_h / 2)}">no data yet</text>')
    out.append("</svg>")
    return "".join(out)
