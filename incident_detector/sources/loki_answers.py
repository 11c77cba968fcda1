"""Loki's JSON answers (vectors, matrices of windows, streams) turned into the project's own data;
what cannot be read is skipped with its reason, or is a ``SourceError`` of reason ``malformed``.
Pure: no I/O."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from ..errors import SourceError
from ..model import ErrorCounts, ErrorSample, LogLine
from .logql import (EPOCH, LONE_SURROGATE, NANOS_TEXT, CountWindow, DETECTED_LEVEL, ErrorMatch,
    LabelKeys, LEG_LEVEL, LEG_PATTERN, MAX_LINE_CHARS, WINDOW_LABEL)

log = structlog.get_logger("incident_detector.sources.loki")

SOURCE = "loki"
_MAJOR_VERSION = re.compile(r"v?([0-9]+)\.")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A sample or log entry left out of a parsed answer, and why."""

    kind: str
    workload: str | None
    pod: str | None
    value: str


def parse_vector(
    body: Any, *, namespace: str, window_seconds: int, keys: LabelKeys
) -> ErrorCounts:
    """Error counts from the JSON body of an instant metric query (``resultType: vector``).

    Samples of the same (workload, pod) are added up: the level-aware query answers one per
    detected_level.
    """
    counts, _, _ = read_vector(
        body, namespace=namespace, window_seconds=window_seconds, keys=keys
    )
    return counts


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """The answer of a batched metric query: each window's counts, and the levels seen in each
    (the ``detected_level`` values of its series; ``""`` for lines without one)."""

    counts: dict[str, ErrorCounts]
    levels: dict[str, frozenset[str]]

    def leg_has_lines(self, name: str, levels: Sequence[str]) -> bool:
        """Whether window ``name`` counted any line whose level is among ``levels``."""
        return any(level in levels for level in self.levels.get(name, ()))

    def legs(self, name: str, match: ErrorMatch) -> frozenset[str]:
        """The legs of ``error_lines_queries`` (``"level"``, ``"pattern"``) that have lines in
        window ``name``: what a log query over the same range needs to ask."""
        if not match.by_level:
            return frozenset({LEG_PATTERN}) if self.levels.get(name) else frozenset()
        found = set()
        if self.leg_has_lines(name, match.levels):
            found.add(LEG_LEVEL)
        if match.undetected and self.leg_has_lines(name, match.undetected):
            found.add(LEG_PATTERN)
        return frozenset(found)


def parse_windows(body: Any, *, namespace: str, windows: Sequence[CountWindow],
                  keys: LabelKeys) -> WindowCounts:
    """Each window's counts from the answer of ``windows_query``; a series of no known window
    is left out."""
    counts, levels, _ = read_windows(body, namespace=namespace, windows=windows, keys=keys)
    return WindowCounts(counts, levels)


def read_windows(body: Any, *, namespace: str, windows: Sequence[CountWindow],
                  keys: LabelKeys) -> tuple[dict[str, ErrorCounts], dict[str, frozenset[str]],
                                            tuple[Skipped, ...]]:
    seconds = {window.name: window.seconds for window in windows}
    totals: dict[str, dict[tuple[str, str | None], float]] = {name: {} for name in seconds}
    levels: dict[str, set[str]] = {name: set() for name in seconds}
    skipped: list[Skipped] = []
    for metric, workload, pod, count in _vector_samples(body, keys=keys, skipped=skipped):
        name = metric.get(WINDOW_LABEL)
        if name not in totals:
            continue
        if count > 0:
            levels[name].add(metric.get(DETECTED_LEVEL) or "")
        per_key = totals[name]
        per_key[(workload, pod)] = min(per_key.get((workload, pod), 0.0) + count,
                                       sys.float_info.max)
    counts = {
        name: ErrorCounts(namespace=namespace, window_seconds=seconds[name], samples=tuple(
            ErrorSample(workload=workload, pod=pod, count=count)
            for (workload, pod), count in per_key.items()))
        for name, per_key in totals.items()}
    return counts, {name: frozenset(found) for name, found in levels.items()}, tuple(skipped)


def _vector_samples(body: Any, *, keys: LabelKeys, skipped: list[Skipped]
                    ) -> Iterator[tuple[dict[str, Any], str, str | None, float]]:
    """Each sample of an instant vector as (its labels, workload, pod, count), in Loki's order;
    a sample whose value is no count goes to ``skipped`` instead. Every label read is checked
    to be a string (``_label``)."""
    for index, item in enumerate(_result_of(body, "vector")):
        if not isinstance(item, dict):
            raise _shape(f"data.result[{index}] is {_describe(item)}, expected an object")
        metric = _labels_of(item, "metric", index)
        for label in (WINDOW_LABEL, DETECTED_LEVEL):
            _label(metric, label, index)
        workload = _label(metric, keys.workload, index) or ""
        pod = _label(metric, keys.pod, index)
        value = item.get("value")
        if not isinstance(value, list) or len(value) != 2:
            raise _shape(f"data.result[{index}].value is not a [time, value] pair")
        count, problem = _count_of(value[1])
        if problem is not None:
            skipped.append(Skipped(problem, workload, pod, _describe(value[1])))
            continue
        yield metric, workload, pod, count


def parse_streams(body: Any, *, keys: LabelKeys) -> tuple[LogLine, ...]:
    """Log lines, newest first, from the JSON body of a range log query (resultType streams)."""
    lines, _ = read_streams(body, keys=keys)
    return lines


def read_vector(
    body: Any, *, namespace: str, window_seconds: int, keys: LabelKeys
) -> tuple[ErrorCounts, tuple[Skipped, ...], bool]:
    """The counts, the samples left out, and whether any sample carried a detected_level."""
    totals: dict[tuple[str, str | None], float] = {}
    skipped: list[Skipped] = []
    levels_seen = False
    for metric, workload, pod, count in _vector_samples(body, keys=keys, skipped=skipped):
        levels_seen = levels_seen or bool(metric.get(DETECTED_LEVEL))
        # dicts keep insertion order: samples come out in Loki's order of first appearance.
        total = totals.get((workload, pod), 0.0) + count
        totals[(workload, pod)] = min(total, sys.float_info.max)
    samples = tuple(
        ErrorSample(workload=workload, pod=pod, count=count)
        for (workload, pod), count in totals.items()
    )
    counts = ErrorCounts(namespace=namespace, window_seconds=window_seconds, samples=samples)
    return counts, tuple(skipped), levels_seen


def read_streams(
    body: Any, *, keys: LabelKeys
) -> tuple[tuple[LogLine, ...], tuple[Skipped, ...]]:
    lines: list[LogLine] = []
    skipped: list[Skipped] = []
    for index, item in enumerate(_result_of(body, "streams")):
        if not isinstance(item, dict):
            raise _shape(f"data.result[{index}] is {_describe(item)}, expected an object")
        stream = _labels_of(item, "stream", index)
        workload = _label(stream, keys.workload, index)
        pod = _label(stream, keys.pod, index)
        values = item.get("values")
        if not isinstance(values, list):
            raise _shape(f"data.result[{index}].values is {_describe(values)}, expected a list")
        for entry in values:
            if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], str):
                raise _shape(f"data.result[{index}].values holds something not [time, line]")
            at = _time_of(entry[0])
            line_pod, line_workload = pod, workload
            if len(entry) > 2 and (pod is None or workload is None):
                # Loki 3 answering with categorized labels (or a proxy that asked for them)
                # keeps structured metadata out of the stream, in a third element per line:
                # a pod sent as structured metadata (OpenTelemetry) is found there.
                extra = _entry_metadata(entry[2])
                line_pod = pod or _text_label(extra, keys.pod)
                line_workload = workload or _text_label(extra, keys.workload)
            if at is None:
                skipped.append(Skipped("bad_timestamp", line_workload, line_pod,
                                        _describe(entry[0])))
                continue
            lines.append(LogLine(at=at, line=_clean_line(entry[1]), pod=line_pod,
                                 workload=line_workload))
    # sort is stable: entries of the same instant keep Loki's order.
    lines.sort(key=lambda line: line.at, reverse=True)
    return tuple(lines), tuple(skipped)


def _entry_metadata(extra: Any) -> dict[str, Any]:
    """The labels of a value entry's third element: ``{"structuredMetadata": {...}, "parsed":
    {...}}`` with categorized labels, a flat object otherwise; anything else holds none."""
    if not isinstance(extra, dict):
        return {}
    if "structuredMetadata" in extra or "parsed" in extra:
        merged: dict[str, Any] = {}
        for part in ("parsed", "structuredMetadata"):
            labels = extra.get(part)
            if isinstance(labels, dict):
                merged.update(labels)
        return merged
    return extra


def _text_label(labels: dict[str, Any], key: str) -> str | None:
    value = labels.get(key)
    return value if isinstance(value, str) and value else None


def _result_of(body: Any, result_type: str) -> list[Any]:
    if not isinstance(body, dict):
        raise _shape(f"body is {_describe(body)}, expected an object")
    if body.get("status") != "success":
        raise _shape(f"status is {_describe(body.get('status'))}, expected 'success'")
    data = body.get("data")
    if not isinstance(data, dict):
        raise _shape(f"data is {_describe(data)}, expected an object")
    if data.get("resultType") != result_type:
        found = _describe(data.get("resultType"))
        raise _shape(f"resultType is {found}, expected {result_type!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise _shape(f"data.result is {_describe(result)}, expected a list")
    return result


def _labels_of(item: dict[str, Any], field_name: str, index: int) -> dict[str, Any]:
    labels = item.get(field_name)
    if not isinstance(labels, dict):
        found = _describe(labels)
        raise _shape(f"data.result[{index}].{field_name} is {found}, expected an object")
    return labels


def _label(labels: dict[str, Any], key: str, index: int) -> str | None:
    """A label's value; None when absent or empty (Loki and Prometheus treat both the same)."""
    value = labels.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        found = _describe(value)
        raise _shape(f"label {key!r} of data.result[{index}] is {found}, expected a string")
    return value


def _count_of(raw: Any) -> tuple[float, str | None]:
    """A sample value as a count, or the reason it cannot be one. Loki sends numbers as strings."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return 0.0, "not_a_number"
    try:
        count = float(raw)
    except (ValueError, OverflowError):
        return 0.0, "not_a_number"
    if not math.isfinite(count):
        return 0.0, "not_finite"
    if count < 0:
        return 0.0, "negative"
    return count, None


def _time_of(raw: Any) -> datetime | None:
    """A Loki nanosecond timestamp (decimal text) as an aware UTC datetime; None if unusable."""
    if isinstance(raw, str) and NANOS_TEXT.fullmatch(raw):
        nanos = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        nanos = raw
    else:
        return None
    try:
        return EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError:
        return None


def _clean_line(line: str) -> str:
    # JSON can carry lone surrogates ("\ud800"); they cannot be encoded to UTF-8 later on, when
    # the line is written to stdout or sent to Slack.
    return LONE_SURROGATE.sub("\ufffd", line[:MAX_LINE_CHARS])


def _describe(value: Any) -> str:
    """A short, bounded description of a value from the wire, for error messages."""
    if isinstance(value, str):
        return repr(value[:40] + ("..." if len(value) > 40 else ""))
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    return f"a {type(value).__name__}"


def _shape(message: str) -> SourceError:
    return SourceError(SOURCE, "unexpected_shape", message, retryable=False)


def major_version(version: str | None) -> int | None:
    """Loki's major version from its buildinfo (``2.9.7``, ``v3.1.0``); None for a build of a
    branch (``main-1a2b3c4``) or anything else."""
    if version is None:
        return None
    found = _MAJOR_VERSION.match(version.strip())
    return int(found.group(1)) if found else None

