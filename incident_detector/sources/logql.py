"""LogQL, built from configured values: every value that ends up in a query goes through
``quote`` (and ``regex_escape`` inside a regex matcher), so no namespace, workload name or pattern
can change the shape of the query. What an error line is (``ErrorMatch``), the count and line
queries, and the batched count windows of one tick (``windows_query``). Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..config import Settings

# The structured metadata Loki 3 writes at ingestion (discover_log_levels), and its values for a
# line whose level Loki did not detect: absent (Loki 2, discovery off) or "unknown".
DETECTED_LEVEL = "detected_level"
UNDETECTED_LEVELS = ("", "unknown")
# ERROR_MATCH values.
MATCH_AUTO, MATCH_LEVEL, MATCH_PATTERN = "auto", "level", "pattern"
# Loki's first major version with detected_level.
FIRST_VERSION_WITH_LEVELS = 3

# Loki refuses a query whose matchers all accept the empty string (app=~".*"), so "every
# workload" is spelled as "has a non-empty workload label".
ANY_VALUE_REGEX = ".+"
# Example lines end up in Slack messages and JSON lines: a multi-megabyte stack trace must not.
MAX_LINE_CHARS = 2000

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
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
NANOS_TEXT = re.compile(r"[0-9]{1,20}")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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

