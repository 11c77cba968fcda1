"""The Loki adapter: LogQL built from configured values, Loki's JSON turned into our own data.

Per namespace and tick, one batched metric query (``windows_query``: every count window the tick
needs, tagged by window) and one log query for the error lines of the tick's range (its legs
with lines only, ``WindowCounts.legs``); ``count_errors`` and ``sample_errors`` ask one thing each.
Every configured value that ends up in LogQL goes through ``quote`` (and ``regex_escape`` inside a
regex matcher), so no namespace, workload name or pattern can change the shape of the query.

What an error line is (``ErrorMatch``): Loki 3 gives every line a ``detected_level`` at ingestion
(structured metadata). A line is an error when that level is one of ERROR_LEVELS; ERROR_PATTERN
judges only the lines whose level Loki did not detect (empty or ``unknown``). Loki 2 has no
``detected_level``, and there the pattern alone decides. The level-aware query stays correct on a
Loki without levels (a label filter on an absent label sees the empty string, so every line goes
to the pattern leg): asking Loki its version once only saves the level leg where it cannot match.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import metadata
from typing import Any

import httpx
import structlog

from ..config import DEFAULT_ERROR_LEVELS, Settings
from ..errors import SourceError, parse_retry_after, retryable_status
from ..model import ErrorCounts, ErrorSample, LogLine
from ..redact import REDACTED, redact
from ..retry import Backoff, Sleep, call_with_retries

log = structlog.get_logger(__name__)

SOURCE = "loki"
QUERY_PATH = "/loki/api/v1/query"
QUERY_RANGE_PATH = "/loki/api/v1/query_range"
BUILDINFO_PATH = "/loki/api/v1/status/buildinfo"
ORG_ID_HEADER = "X-Scope-OrgID"
PACKAGE_NAME = "incident-detector"

# The structured metadata Loki 3 writes at ingestion (discover_log_levels), and its values for a
# line whose level Loki did not detect: absent (Loki 2, discovery off) or "unknown".
DETECTED_LEVEL = "detected_level"
UNDETECTED_LEVELS = ("", "unknown")
# ERROR_MATCH values.
MATCH_AUTO, MATCH_LEVEL, MATCH_PATTERN = "auto", "level", "pattern"
# Loki's first major version with detected_level.
FIRST_VERSION_WITH_LEVELS = 3
_MAJOR_VERSION = re.compile(r"v?([0-9]+)\.")

# Loki refuses a query whose matchers all accept the empty string (app=~".*"), so "every
# workload" is spelled as "has a non-empty workload label".
ANY_VALUE_REGEX = ".+"
# Example lines end up in Slack messages and JSON lines: a multi-megabyte stack trace must not.
MAX_LINE_CHARS = 2000
# Loki explains a LogQL error in its text/plain body; keep enough of it to be useful.
MAX_ERROR_TEXT_CHARS = 300

# Prometheus/Loki label names. Label keys are not quoted in LogQL, so they are validated instead.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The characters Go's regexp.QuoteMeta escapes: exactly RE2's metacharacters.
_RE2_METACHARACTERS = frozenset("\\.+*?()|[]{}^$")
# Go strconv.Quote's short escapes.
_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_NANOS_TEXT = re.compile(r"[0-9]{1,20}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class LabelKeys:
    """Names of the Loki stream labels that carry the namespace, the workload and the pod."""

    namespace: str = "namespace"
    workload: str = "app"
    pod: str = "pod"

    def __post_init__(self) -> None:
        for role in ("namespace", "workload", "pod"):
            name = getattr(self, role)
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"the {role} label key {name!r} is not a valid Loki label name")

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelKeys:
        return cls(
            namespace=settings.loki_namespace_label_key,
            workload=settings.loki_app_label_key,
            pod=settings.loki_pod_label_key,
        )


# --- LogQL -------------------------------------------------------------------------------------


def quote(value: str) -> str:
    """A LogQL double-quoted string literal of ``value``, escaped the way Go's strconv.Quote does.

    LogQL strings are read with Go's strconv.Unquote, so this is its exact inverse. Python strings
    can hold lone surrogates (environment variables with invalid UTF-8 are decoded with
    ``surrogateescape``): those become ``\\xNN`` byte escapes, as Go does for invalid UTF-8, so the
    query stays valid UTF-8 and means the original bytes.
    """
    parts = ['"']
    for char in value:
        short = _GO_ESCAPES.get(char)
        if short is not None:
            parts.append(short)
            continue
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            parts.extend(f"\\x{byte:02x}" for byte in _surrogate_bytes(code))
        elif char.isprintable():
            parts.append(char)
        elif code < 0x20 or code == 0x7F:
            parts.append(f"\\x{code:02x}")
        elif code < 0x10000:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append('"')
    return "".join(parts)


def _surrogate_bytes(code: int) -> bytes:
    if 0xDC80 <= code <= 0xDCFF:
        # surrogateescape: the character stands for one undecodable byte.
        return bytes([code - 0xDC00])
    return chr(code).encode("utf-8", "surrogatepass")


def regex_escape(value: str) -> str:
    """``value`` as an RE2 regex matching only itself (Go's regexp.QuoteMeta)."""
    return "".join("\\" + char if char in _RE2_METACHARACTERS else char for char in value)


def selector(*, namespace: str, workloads: Sequence[str] | None, keys: LabelKeys) -> str:
    """The stream selector of a namespace and some (None: all) of its workloads."""
    matchers = (f"{keys.namespace}={quote(namespace)}", _workload_matcher(workloads, keys))
    return "{" + ", ".join(matchers) + "}"


def _workload_matcher(workloads: Sequence[str] | None, keys: LabelKeys) -> str:
    if workloads is None:
        return f"{keys.workload}=~{quote(ANY_VALUE_REGEX)}"
    if isinstance(workloads, str):
        # A str is a Sequence of characters: "api" would silently become a|p|i.
        raise TypeError("workloads must be a sequence of names, not a single str")
    distinct = tuple(dict.fromkeys(workloads))
    if not distinct:
        raise ValueError("workloads must name at least one workload, or be None for all")
    if len(distinct) == 1:
        return f"{keys.workload}={quote(distinct[0])}"
    alternation = "|".join(regex_escape(name) for name in distinct)
    return f"{keys.workload}=~{quote(alternation)}"


# A level as ERROR_LEVELS holds it (config validates against Loki's names; this guards the LogQL).
_LABEL_VALUE_LEVEL = re.compile(r"[a-z]+")


@dataclass(frozen=True, slots=True)
class ErrorMatch:
    """Which lines are errors: ``levels`` empty, those matching ``pattern`` (a Loki without
    detected_level); else those whose detected_level is in ``levels``, and among the lines whose
    level Loki did not detect, those matching ``pattern``."""

    pattern: str
    levels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.levels, tuple) or not all(
            isinstance(level, str) and _LABEL_VALUE_LEVEL.fullmatch(level) for level in self.levels
        ):
            raise ValueError(f"levels must be a tuple of level names, not {self.levels!r}")

    @property
    def by_level(self) -> bool:
        return bool(self.levels)

    @property
    def undetected(self) -> tuple[str, ...]:
        """The detected_level values the pattern judges ("unknown" may be an error level itself)."""
        return tuple(level for level in UNDETECTED_LEVELS if level not in self.levels)



def _level_filter(values: Sequence[str]) -> str:
    alternation = "|".join(regex_escape(value) for value in values)
    return f"| {DETECTED_LEVEL}=~{quote(alternation)}"


def error_lines_queries(
    *, namespace: str, workloads: Sequence[str] | None, match: ErrorMatch, keys: LabelKeys
) -> tuple[str, ...]:
    """The log queries whose lines, together, are the error lines of some workloads.

    One query for the pattern alone; two disjoint ones (by detected_level) with levels: a line
    filter cannot apply to some levels only, and LogQL has no union of log queries.
    """
    stream = selector(namespace=namespace, workloads=workloads, keys=keys)
    if not match.by_level:
        return (f"{stream} |~ {quote(match.pattern)}",)
    queries = [f"{stream} {_level_filter(match.levels)}"]
    if match.undetected:
        # The line filter first: Loki applies the cheapest stages first when written so.
        queries.append(f"{stream} |~ {quote(match.pattern)} {_level_filter(match.undetected)}")
    return tuple(queries)


def error_lines_query(
    *, namespace: str, workloads: Sequence[str] | None, pattern: str, keys: LabelKeys
) -> str:
    """The log query that selects the lines of some workloads that match ``pattern``."""
    (query,) = error_lines_queries(
        namespace=namespace, workloads=workloads, match=ErrorMatch(pattern), keys=keys
    )
    return query


def error_count_query(
    *,
    namespace: str,
    workloads: Sequence[str] | None,
    pattern: str,
    window_seconds: int,
    keys: LabelKeys,
    levels: Sequence[str] = (),
) -> str:
    """One metric query for a whole namespace: error lines per (workload, pod) over the window.

    With ``levels``, the legs of ``error_lines_queries`` are counted separately, grouped by
    detected_level as well, and joined with ``or``: their label sets differ in detected_level, so
    ``or`` is their union, still one query. The adapter adds the levels up per (workload, pod).
    """
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int):
        raise ValueError(f"window_seconds must be a positive integer, not {window_seconds!r}")
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be a positive integer, not {window_seconds!r}")
    if isinstance(levels, str):
        raise TypeError("levels must be a sequence of level names, not a single str")
    match = ErrorMatch(pattern, tuple(levels))
    legs = error_lines_queries(namespace=namespace, workloads=workloads, match=match, keys=keys)
    grouping = f"{keys.workload}, {keys.pod}"
    if match.by_level:
        grouping += f", {DETECTED_LEVEL}"
    return " or ".join(
        f"sum by ({grouping}) (count_over_time({leg} [{window_seconds}s]))" for leg in legs
    )


# The legs of "error line" (error_lines_queries): lines at an error level, and lines judged by
# the pattern (all of them without levels; those without a detected level with them).
LEG_LEVEL, LEG_PATTERN = "level", "pattern"
# The label that tells the windows of a batched metric query apart (``label_replace``).
WINDOW_LABEL = "window"
_WINDOW_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class CountWindow:
    """One window of a namespace's batched metric query (``windows_query``): the error lines of
    some workloads (None: all of the namespace) over ``[end - seconds, end)``, where ``end`` is
    ``offset_ms`` milliseconds before the query's instant; ``by`` (workload, pod), workload, or
    level alone (``"level"``: one series per detected_level, to tell which legs have lines)."""

    name: str
    workloads: tuple[str, ...] | None
    seconds: int
    offset_ms: int = 0
    by: str = "pod"

    def __post_init__(self) -> None:
        if not _WINDOW_NAME.fullmatch(self.name):
            raise ValueError(f"a window name is 1 to 64 of [A-Za-z0-9_.:-], not {self.name!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int) or self.seconds < 1:
            raise ValueError(f"seconds must be a positive integer, not {self.seconds!r}")
        if isinstance(self.offset_ms, bool) or not isinstance(self.offset_ms, int) \
                or self.offset_ms < 0:
            raise ValueError(f"offset_ms must be an integer >= 0, not {self.offset_ms!r}")
        if isinstance(self.workloads, str):
            raise TypeError("workloads must be a sequence of names, not a single str")
        if self.workloads is not None and not self.workloads:
            raise ValueError("workloads must name at least one workload, or be None for all")
        if self.by not in ("pod", "workload", "level"):
            raise ValueError(f"by must be pod, workload or level, not {self.by!r}")

    @classmethod
    def ending(cls, name: str, *, workloads: Sequence[str] | None, seconds: int,
               end: datetime, at: datetime, by: str = "pod") -> CountWindow:
        """The window of ``seconds`` that ends at ``end``, in a query made at ``at``: the offset
        in whole milliseconds (LogQL's finest unit here), rounded down, so the window ends at
        ``end`` or less than a millisecond after it; never after ``at``."""
        offset_ms = max(0, (at - end) // timedelta(milliseconds=1))
        names = None if workloads is None else tuple(dict.fromkeys(workloads))
        return cls(name, names, seconds, offset_ms, by)


def windows_query(*, namespace: str, windows: Sequence[CountWindow], match: ErrorMatch,
                  keys: LabelKeys) -> str:
    """ONE metric query for every window: each leg of each window counted as
    ``error_count_query`` counts it, over its range and ``offset``, tagged with
    ``label_replace(..., "window", "<name>", "<workload label>", ".*")`` (the regex matches any
    value, an absent label's empty one too: every series gets the label), and all joined with
    ``or``. Legs of different windows differ in ``window``, legs of one window in
    ``detected_level``: ``or``, which keeps a right-hand series only when the left has none with
    the same labels, is their union."""
    if not windows:
        raise ValueError("a batched query needs at least one window")
    names = [window.name for window in windows]
    if len(set(names)) != len(names):
        raise ValueError(f"window names must differ: {names}")
    parts = []
    for window in windows:
        legs = error_lines_queries(namespace=namespace, workloads=window.workloads,
                                   match=match, keys=keys)
        labels = {"pod": [keys.workload, keys.pod], "workload": [keys.workload],
                  "level": []}[window.by]
        if match.by_level:
            labels.append(DETECTED_LEVEL)
        grouping = f"sum by ({', '.join(labels)})" if labels else "sum"
        offset = f" offset {window.offset_ms}ms" if window.offset_ms else ""
        for leg in legs:
            parts.append(
                f"label_replace({grouping} (count_over_time({leg} "
                f"[{window.seconds}s]{offset})), {quote(WINDOW_LABEL)}, {quote(window.name)}, "
                f'{quote(keys.workload)}, ".*")')
    return " or ".join(parts)


# --- Parsing Loki's answers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Skipped:
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
    counts, _, _ = _read_vector(
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
    counts, levels, _ = _read_windows(body, namespace=namespace, windows=windows, keys=keys)
    return WindowCounts(counts, levels)


def _read_windows(body: Any, *, namespace: str, windows: Sequence[CountWindow],
                  keys: LabelKeys) -> tuple[dict[str, ErrorCounts], dict[str, frozenset[str]],
                                            tuple[_Skipped, ...]]:
    seconds = {window.name: window.seconds for window in windows}
    totals: dict[str, dict[tuple[str, str | None], float]] = {name: {} for name in seconds}
    levels: dict[str, set[str]] = {name: set() for name in seconds}
    skipped: list[_Skipped] = []
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


def _vector_samples(body: Any, *, keys: LabelKeys, skipped: list[_Skipped]
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
            skipped.append(_Skipped(problem, workload, pod, _describe(value[1])))
            continue
        yield metric, workload, pod, count


def parse_streams(body: Any, *, keys: LabelKeys) -> tuple[LogLine, ...]:
    """Log lines, newest first, from the JSON body of a range log query (resultType streams)."""
    lines, _ = _read_streams(body, keys=keys)
    return lines


def _read_vector(
    body: Any, *, namespace: str, window_seconds: int, keys: LabelKeys
) -> tuple[ErrorCounts, tuple[_Skipped, ...], bool]:
    """The counts, the samples left out, and whether any sample carried a detected_level."""
    totals: dict[tuple[str, str | None], float] = {}
    skipped: list[_Skipped] = []
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


def _read_streams(
    body: Any, *, keys: LabelKeys
) -> tuple[tuple[LogLine, ...], tuple[_Skipped, ...]]:
    lines: list[LogLine] = []
    skipped: list[_Skipped] = []
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
                skipped.append(_Skipped("bad_timestamp", line_workload, line_pod,
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
    if isinstance(raw, str) and _NANOS_TEXT.fullmatch(raw):
        nanos = int(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        nanos = raw
    else:
        return None
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError:
        return None


def _clean_line(line: str) -> str:
    # JSON can carry lone surrogates ("\ud800"); they cannot be encoded to UTF-8 later on, when
    # the line is written to stdout or sent to Slack.
    return _LONE_SURROGATE.sub("\ufffd", line[:MAX_LINE_CHARS])


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


def _major_version(version: str | None) -> int | None:
    """Loki's major version from its buildinfo (``2.9.7``, ``v3.1.0``); None for a build of a
    branch (``main-1a2b3c4``) or anything else."""
    if version is None:
        return None
    found = _MAJOR_VERSION.match(version.strip())
    return int(found.group(1)) if found else None


# --- HTTP ----------------------------------------------------------------------------------------


def unix_nanos(at: datetime) -> str:
    """An aware datetime as Loki's unix-nanosecond timestamp text (exact, no float rounding)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    delta = at - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return str(seconds * 1_000_000_000 + delta.microseconds * 1_000)


def _version() -> str:
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return "dev"


def _header_safe(value: str) -> bool:
    # A CR/LF or non-ASCII character would be refused by the HTTP stack at request time, with an
    # error that quotes the value: refuse it here, without quoting it.
    return all(" " <= char <= "~" for char in value)


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client of the Loki adapter, with tenant, auth and timeout from the settings.

    Credentials written into LOKI_URL (``https://user:pass@loki``) are moved out of the URL into
    basic auth, so that no URL the client holds or reports carries them.
    """
    url = httpx.URL(str(settings.loki_url))
    headers = {"User-Agent": f"{PACKAGE_NAME}/{_version()}"}
    if settings.loki_org_id:
        if not _header_safe(settings.loki_org_id):
            raise ValueError("LOKI_ORG_ID holds characters that cannot go into an HTTP header")
        headers[ORG_ID_HEADER] = settings.loki_org_id
    auth: httpx.Auth | None = None
    if settings.loki_bearer_token is not None:
        token = settings.loki_bearer_token.get_secret_value()
        if not _header_safe(token):
            raise ValueError(
                "LOKI_BEARER_TOKEN holds characters that cannot go into an HTTP header"
            )
        headers["Authorization"] = f"Bearer {token}"
    elif settings.loki_username and settings.loki_password is not None:
        auth = httpx.BasicAuth(settings.loki_username, settings.loki_password.get_secret_value())
    elif url.username or url.password:
        auth = httpx.BasicAuth(url.username, url.password)
    return httpx.AsyncClient(
        base_url=url.copy_with(userinfo=b""),
        timeout=httpx.Timeout(settings.loki_timeout_seconds),
        headers=headers,
        auth=auth,
    )


def _known_secrets(http: httpx.AsyncClient) -> tuple[str, ...]:
    """Every credential the client sends, longest first, to scrub them out of messages."""
    secrets: set[str] = set()
    headers = [http.headers.get("Authorization")]
    if isinstance(http.auth, httpx.BasicAuth):
        # The public way to see what BasicAuth sends: run its flow on a throwaway request.
        probe = next(http.auth.sync_auth_flow(httpx.Request("GET", "http://redaction.invalid/")))
        headers.append(probe.headers.get("Authorization"))
    for header in headers:
        if not header:
            continue
        scheme, _, credential = header.partition(" ")
        secrets.update((header, credential))
        if scheme.lower() == "basic":
            try:
                user_pass = base64.b64decode(credential, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                continue
            secrets.update((user_pass, user_pass.partition(":")[2]))
    if http.base_url.password:
        secrets.add(http.base_url.password)
    return tuple(sorted((s for s in secrets if s), key=len, reverse=True))


class LokiClient:
    """Queries Loki over one ``httpx.AsyncClient``; raises nothing but ``SourceError``."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        keys: LabelKeys,
        pattern: str,
        levels: Sequence[str] = DEFAULT_ERROR_LEVELS,
        match: str = MATCH_PATTERN,
        max_attempts: int = 3,
        backoff: Backoff = Backoff(base=0.25, cap=2.0),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._keys = keys
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._secrets = _known_secrets(http)
        # Kinds of skipped samples already logged: a broken series would otherwise log every tick.
        self._reported_skips: set[str] = set()
        if match not in (MATCH_AUTO, MATCH_LEVEL, MATCH_PATTERN):
            raise ValueError(f"match must be auto, level or pattern, not {match!r}")
        if isinstance(levels, str):
            raise TypeError("levels must be a sequence of level names, not a single str")
        self._by_level = ErrorMatch(pattern, tuple(levels))
        if not self._by_level.by_level and match != MATCH_PATTERN:
            raise ValueError("matching by level needs at least one level")
        self._by_pattern = ErrorMatch(pattern)
        # auto: decided by Loki's version, asked once (see error_match).
        self._match: ErrorMatch | None = {
            MATCH_LEVEL: self._by_level, MATCH_PATTERN: self._by_pattern
        }.get(match)
        self._deciding = asyncio.Lock()
        self._levels_absent_reported = False

    async def error_match(self) -> ErrorMatch:
        """The rule in force: fixed by ERROR_MATCH, or in auto mode by Loki's version, asked once.

        Loki before 3.0 has no detected_level: the pattern alone. Otherwise, and when the version
        cannot be read (a gateway that does not route the status API), the level-aware rule, which
        is correct on a Loki without levels as well. A transient failure decides nothing: the next
        call asks again.
        """
        if self._match is not None:
            return self._match
        async with self._deciding:
            if self._match is not None:
                return self._match
            try:
                body = await self._get_json_once(BUILDINFO_PATH, {})
            except SourceError as error:
                if error.retryable:
                    log.debug("loki_version_unavailable", reason=error.reason)
                    return self._by_level
                version = None
                reason = f"the version could not be read ({error.reason})"
            else:
                version = body.get("version") if isinstance(body, dict) else None
                version = version[:40] if isinstance(version, str) else None
                reason = "reported by /loki/api/v1/status/buildinfo" if version else \
                    "/loki/api/v1/status/buildinfo named no version"
            major = _major_version(version)
            if major is not None and major < FIRST_VERSION_WITH_LEVELS:
                self._match = self._by_pattern
                log.info(
                    "loki_error_match", match=MATCH_PATTERN, loki_version=version,
                    note="Loki before 3.0 has no detected_level: error lines are the lines "
                         "matching ERROR_PATTERN",
                )
            else:
                self._match = self._by_level
                log.info(
                    "loki_error_match", match=MATCH_LEVEL, loki_version=version, why=reason,
                    levels=list(self._by_level.levels),
                    note="error lines are lines at ERROR_LEVELS; ERROR_PATTERN judges only "
                         "lines whose level Loki did not detect",
                )
            return self._match

    async def count_errors(
        self,
        *,
        namespace: str,
        workloads: Sequence[str] | None,
        window_seconds: int,
        at: datetime | None = None,
    ) -> ErrorCounts:
        """Error lines per (workload, pod) over the window ending now, or at ``at``.

        With ``at``, the window is ``[at - window, at)``: Loki counts the lines of
        ``(time - range, time]``, so ``time`` is sent one nanosecond before ``at``. That is the
        range ``sample_errors`` reads up to ``end=at`` (Loki's ``end`` is exclusive), so the lines
        counted at an instant are the lines that can be sampled up to it, whatever Loki's own
        clock says and whenever they were pushed.
        """
        match = await self.error_match()
        params = {
            "query": error_count_query(
                namespace=namespace,
                workloads=workloads,
                pattern=match.pattern,
                levels=match.levels,
                window_seconds=window_seconds,
                keys=self._keys,
            )
        }
        if at is not None:
            params["time"] = str(int(unix_nanos(at)) - 1)
        body = await self._get_json(QUERY_PATH, params)
        counts, skipped, levels_seen = _read_vector(
            body, namespace=namespace, window_seconds=window_seconds, keys=self._keys
        )
        self._report_skipped(skipped)
        if match.by_level and counts.samples and not levels_seen:
            self._report_levels_absent()
        return counts

    async def count_windows(
        self, *, namespace: str, windows: Sequence[CountWindow], at: datetime
    ) -> WindowCounts:
        """Every window's error lines in ONE metric query made at ``at`` (``windows_query``);
        a window ending at ``at`` (offset 0) covers ``[at - seconds, at)``, as ``count_errors``
        with ``at`` does."""
        match = await self.error_match()
        params = {
            "query": windows_query(namespace=namespace, windows=windows, match=match,
                                   keys=self._keys),
            "time": str(int(unix_nanos(at)) - 1),
        }
        body = await self._get_json(QUERY_PATH, params)
        counts, levels, skipped = _read_windows(body, namespace=namespace, windows=windows,
                                                keys=self._keys)
        self._report_skipped(skipped)
        if match.by_level and any(c.samples for c in counts.values()) and \
                not any(level for found in levels.values() for level in found):
            self._report_levels_absent()
        return WindowCounts(counts, levels)

    async def sample_errors(
        self,
        *,
        namespace: str,
        workloads: Sequence[str] | None,
        start: datetime,
        end: datetime,
        limit: int = 200,
        legs: Collection[str] | None = None,
    ) -> tuple[LogLine, ...]:
        """Up to ``limit`` error lines of ``[start, end)``, newest first. ``legs``: only those
        legs of ``error_lines_queries`` (``WindowCounts.legs`` says which have lines); None:
        every leg."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        match = await self.error_match()
        queries = error_lines_queries(
            namespace=namespace, workloads=workloads, match=match, keys=self._keys
        )
        if legs is not None:
            names = (LEG_LEVEL, LEG_PATTERN) if match.by_level else (LEG_PATTERN,)
            queries = tuple(q for q, name in zip(queries, names) if name in legs)
            if not queries:
                return ()
        window = {"start": unix_nanos(start), "end": unix_nanos(end)}

        async def newest(query: str) -> tuple[LogLine, ...]:
            params = {"query": query, **window, "limit": str(limit), "direction": "backward"}
            body = await self._get_json(QUERY_RANGE_PATH, params)
            lines, skipped = _read_streams(body, keys=self._keys)
            self._report_skipped(skipped)
            return lines

        # The legs select disjoint lines (different detected_level): the newest ``limit`` of
        # their union are among the newest ``limit`` of each.
        answers = await asyncio.gather(*(newest(q) for q in queries), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        merged = [line for answer in answers for line in answer]
        merged.sort(key=lambda line: line.at, reverse=True)
        return tuple(merged[:limit])

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        async def attempt() -> Any:
            return await self._get_json_once(path, params)

        return await call_with_retries(
            attempt,
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            sleep=self._sleep,
            on_retry=self._log_retry,
        )

    async def _get_json_once(self, path: str, params: dict[str, str]) -> Any:
        # "from None" everywhere: the transport's own exception may quote a URL or a header.
        try:
            response = await self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            message = f"no answer in time ({type(exc).__name__})"
            raise self._error("timeout", message, True) from None
        except httpx.DecodingError as exc:
            raise self._error("malformed", f"undecodable body: {exc}", False) from None
        except httpx.RequestError as exc:
            raise self._error("connection", f"{type(exc).__name__}: {exc}", True) from None
        status = response.status_code
        if not 200 <= status < 300:
            text = response.text.strip()[:MAX_ERROR_TEXT_CHARS] or f"HTTP {status}"
            retryable = retryable_status(status)
            retry_after = None
            if retryable:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self._error(
                f"http_{status}", text, retryable, status=status, retry_after=retry_after
            )
        try:
            return response.json()
        except (ValueError, RecursionError):
            content_type = response.headers.get("Content-Type", "no content type")
            raise self._error(
                "malformed", f"body is not JSON ({content_type})", False, status=status
            ) from None

    def _error(
        self,
        reason: str,
        message: str,
        retryable: bool,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> SourceError:
        return SourceError(
            SOURCE,
            reason,
            self._redact(message),
            retryable=retryable,
            retry_after=retry_after,
            status=status,
        )

    def _redact(self, text: str) -> str:
        # Text we did not write ourselves (an exception from the transport, a proxy's error
        # page): our own secrets wherever they stand, then anything credential-shaped.
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact(text)

    def _log_retry(self, error: SourceError, failures: int, wait: float) -> None:
        log.debug(
            "loki_retry", reason=error.reason, status=error.status, failures=failures,
            wait_seconds=round(wait, 3),
        )

    def _report_levels_absent(self) -> None:
        if self._levels_absent_reported:
            return
        self._levels_absent_reported = True
        log.info(
            "loki_levels_absent",
            note="Loki answered without detected_level (discover_log_levels off, or lines "
                 "ingested before Loki 3): those lines are judged by ERROR_PATTERN",
        )

    def _report_skipped(self, skipped: tuple[_Skipped, ...]) -> None:
        for item in skipped:
            if item.kind in self._reported_skips:
                continue
            self._reported_skips.add(item.kind)
            log.warning(
                "loki_sample_skipped",
                kind=item.kind,
                workload=item.workload,
                pod=item.pod,
                value=item.value,
                note="logged once per kind",
            )
