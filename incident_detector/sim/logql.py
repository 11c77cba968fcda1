"""The subset of LogQL the detector speaks, evaluated over sorted log streams, as Loki answers it.

- ``parse_logql(text)``: a stream selector with ``=``, ``!=``, ``=~``, ``!~`` matchers, line filters
  (``|=``, ``!=``, ``|~``, ``!~``) and string label filters (``| detected_level=~"error|fatal"``)
  in any order, ``count_over_time`` or ``rate`` over a range, ``sum [by|without] (...)`` (nested
  too), parentheses and ``or`` between metric expressions. Anything else is a ``LogQLError``
  whose message is the plain-text 400 body Loki would answer.
- ``LogIndex(streams)``: the instant (``/query``) and range (``/query_range``) answers over a fixed
  set of ``LogStream``s, with Loki's limits and body shapes. A stream's lines may carry structured
  metadata (Loki 3's ``detected_level``): label filters see it as a label, absent labels as the
  empty string; metric series and returned streams are split by it, as Loki does.
- Loki's time parameters (``parse_loki_time``, ``parse_step_ns``) and unix-nanosecond helpers.

Everything here is pure but for the cache of which lines pass which line filter, which keeps a
replay's hundreds of queries cheap.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

# Loki's own limits, so that the fake refuses what Loki refuses.
MAX_ENTRIES_LIMIT = 5000
MAX_POINTS_PER_SERIES = 11_000
DEFAULT_LOG_LIMIT = 100
MAX_CACHED_FILTERS = 1024

NO_MATCHER_TEXT = (
    "parse error : queries require at least one regexp or equality matcher that does not have an "
    'empty-compatible value. For instance, app=~".*" does not meet this requirement, but '
    'app=~".+" will'
)
LOG_QUERY_ON_INSTANT_TEXT = (
    "log queries are not supported as an instant query type, please change your query to a range "
    "query type"
)

NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

LokiAnswer = tuple[int, dict[str, Any] | str]


# --- time ----------------------------------------------------------------------------------------


def to_unix_nanos(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def from_unix_nanos(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


# --- LogQL ----------------------------------------------------------------------------------------


class LogQLError(ValueError):
    """A query the simulated Loki refuses; the message is Loki's plain-text 400 body."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def accepts(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        matched = self.pattern is not None and self.pattern.fullmatch(actual) is not None
        return matched if self.op == "=~" else not matched

    @property
    def selects_something(self) -> bool:
        """An = or =~ matcher that does not accept the empty value (Loki requires one)."""
        return self.op in ("=", "=~") and not self.accepts({})


@dataclass(frozen=True)
class LineFilter:
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def accepts(self, line: str) -> bool:
        if self.op == "|=":
            return self.value in line
        if self.op == "!=":
            return self.value not in line
        found = self.pattern is not None and self.pattern.search(line) is not None
        return found if self.op == "|~" else not found


# One line's structured metadata, as sorted (name, value) pairs.
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LabelFilter:
    """``| name op "value"``: on the stream's labels and the line's structured metadata."""

    matcher: Matcher

    def accepts(self, labels: dict[str, str], metadata: Metadata) -> bool:
        for name, value in metadata:
            if name == self.matcher.label:
                return self.matcher.accepts({name: value})
        return self.matcher.accepts(labels)


Stage = LineFilter | LabelFilter


@dataclass(frozen=True)
class LogSelector:
    matchers: tuple[Matcher, ...]
    filters: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class RangeAggregation:
    function: str  # count_over_time | rate
    selector: LogSelector
    range_ns: int
    # ``[range] offset d``: the range ends d before the evaluation instant.
    offset_ns: int = 0


@dataclass(frozen=True)
class VectorAggregation:
    operation: str  # sum
    grouping: str | None  # by | without | None
    labels: tuple[str, ...]
    inner: MetricQuery


@dataclass(frozen=True)
class BinaryOperation:
    operation: str  # or
    left: MetricQuery
    right: MetricQuery


@dataclass(frozen=True)
class LabelReplace:
    """``label_replace(v, dst, replacement, src, regex)``, as Prometheus (and Loki) define it:
    where ``regex`` matches the whole value of ``src`` (the empty string when absent), ``dst``
    becomes ``replacement`` with ``$1``, ``${1}``, ``$name`` expanded (an empty result removes
    ``dst``); other series are returned unchanged."""

    inner: MetricQuery
    destination: str
    replacement: str
    source: str
    regex: re.Pattern[str]

    def apply(self, labels: dict[str, str]) -> dict[str, str]:
        found = self.regex.fullmatch(labels.get(self.source, ""))
        if found is None:
            return labels
        value = _expand(self.replacement, found)
        out = dict(labels)
        if value:
            out[self.destination] = value
        else:
            out.pop(self.destination, None)
        return out


_GROUP_REFERENCE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _expand(template: str, found: re.Match[str]) -> str:
    """Go's Regexp.ExpandString: ``$name`` takes the longest run of name characters; a group
    that does not exist (or did not take part) expands to nothing."""
    def group(reference: re.Match[str]) -> str:
        name = reference.group(1) or reference.group(2)
        try:
            value = found.group(int(name) if name.isdigit() else name)
        except (IndexError, re.error):
            return ""
        return value or ""

    return _GROUP_REFERENCE.sub(group, template.replace("$$", "\x00")).replace("\x00", "$")


MetricQuery = RangeAggregation | VectorAggregation | BinaryOperation | LabelReplace
Query = LogSelector | MetricQuery

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_DURATION_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
                "d": 86_400 * 10**9, "w": 7 * 86_400 * 10**9, "y": 365 * 86_400 * 10**9}
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}
_MATCH_OPS = ("=~", "!~", "!=", "=")
_FILTER_OPS = ("|=", "|~", "!=", "!~")
_RANGE_FUNCTIONS = ("count_over_time", "rate")
_VECTOR_AGGREGATIONS = ("sum",)
_LABEL_FUNCTIONS = ("label_replace",)
_BINARY_OPERATIONS = ("or",)


def parse_duration_ns(text: str) -> int:
    """A Prometheus duration (``120s``, ``2m``, ``1h30m``) in nanoseconds."""
    if not text or _DURATION_PART.sub("", text) != "":
        raise LogQLError(f'parse error : not a valid duration string: "{text}"')
    total = sum(int(n) * _DURATION_NS[unit] for n, unit in _DURATION_PART.findall(text))
    if total <= 0:
        raise LogQLError(f'parse error : duration must be greater than 0: "{text}"')
    return total


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Python's ``re`` for an RE2 pattern; (?i) and the usual syntax mean the same in both."""
    unsupported = re2_incompatibility(pattern)
    if unsupported:
        raise LogQLError(f"parse error : error parsing regexp: invalid or unsupported Perl syntax "
                         f"({unsupported}): `{pattern[:40]}`")
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise LogQLError(f"parse error : error parsing regexp: {exc}: `{pattern[:40]}`") from None


_PERL_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?>")


def re2_incompatibility(pattern: str) -> str | None:
    """What Python's ``re`` would accept but RE2 (Loki's engine) refuses, if anything."""
    index, in_class, after_quantifier = 0, False, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if not in_class and pattern[index + 1:index + 2] in tuple("123456789"):
                return "backreference"
            index, after_quantifier = index + 2, False
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A ] right after [ or [^ is a literal member of the class.
            if pattern.startswith("]", index + 1):
                index += 1
            elif pattern.startswith("^]", index + 1):
                index += 2
        elif char == "(" and pattern.startswith(_PERL_GROUPS, index):
            return "lookaround, atomic group or named backreference"
        elif char == "+" and after_quantifier:
            return "possessive quantifier"
        after_quantifier = not in_class and char in "*+?}"
        index += 1
    return None


class _Parser:
    """Recursive descent over the query text; every failure is a ``LogQLError``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> LogQLError:
        near = self.text[self.pos:self.pos + 20]
        return LogQLError(f"parse error at line 1, col {self.pos + 1}: syntax error: {what}"
                          + (f" near {near!r}" if near else " at end of query"))

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def take(self, token: str) -> None:
        if not self.peek(token):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def identifier(self) -> str:
        self.skip_space()
        match = _LABEL_NAME.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a name")
        self.pos = match.end()
        return match.group(0)

    def peek_identifier(self) -> str | None:
        self.skip_space()
        match = _LABEL_NAME.match(self.text, self.pos)
        return match.group(0) if match else None

    def string(self) -> str:
        self.skip_space()
        if self.peek("`"):
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.fail("unterminated raw string")
            value = self.text[self.pos + 1:end]
            self.pos = end + 1
            return value
        if not self.peek('"'):
            raise self.fail("expected a string")
        self.pos += 1
        raw = bytearray()
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated string")
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return raw.decode("utf-8", "surrogateescape")
            if char == "\n":
                raise self.fail("newline in string")
            if char == "\\":
                raw += self._escape()
            else:
                raw += char.encode("utf-8", "surrogatepass")
                self.pos += 1

    def _escape(self) -> bytes:
        """One Go escape sequence (strconv.Unquote), as the bytes it stands for."""
        start = self.pos
        self.pos += 1
        if self.pos >= len(self.text):
            raise self.fail("unterminated string")
        kind = self.text[self.pos]
        if kind in _SIMPLE_ESCAPES:
            self.pos += 1
            return _SIMPLE_ESCAPES[kind].encode()
        digits = {"x": 2, "u": 4, "U": 8}.get(kind)
        if digits is not None:
            text = self.text[self.pos + 1:self.pos + 1 + digits]
            self.pos += 1 + digits
            if len(text) != digits or any(c not in "0123456789abcdefABCDEF" for c in text):
                self.pos = start
                raise self.fail("invalid escape in string")
            number = int(text, 16)
            if kind == "x":
                return bytes([number])
            if number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
                self.pos = start
                raise self.fail("invalid unicode escape in string")
            return chr(number).encode("utf-8")
        text = self.text[self.pos:self.pos + 3]
        if len(text) == 3 and all(c in "01234567" for c in text) and int(text, 8) <= 255:
            self.pos += 3
            return bytes([int(text, 8)])
        self.pos = start
        raise self.fail("invalid escape in string")

    # Grammar ------------------------------------------------------------------------------------

    def query(self) -> Query:
        expression = self.expression()
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail("unexpected text after the query")
        return expression

    def expression(self) -> Query:
        if self.peek("{"):
            return self.log_selector()
        return self.metric_expression()

    def metric_expression(self) -> MetricQuery:
        """Metric expressions joined by ``or`` (left-associative, as in Loki)."""
        expression = self.metric()
        while self.peek_identifier() in _BINARY_OPERATIONS:
            operation = self.identifier()
            expression = BinaryOperation(operation, expression, self.metric())
        return expression

    def metric(self) -> MetricQuery:
        if self.peek("("):
            self.take("(")
            inner = self.metric_expression()
            self.take(")")
            return inner
        name = self.identifier()
        if name in _VECTOR_AGGREGATIONS:
            grouping, labels = self.grouping()
            self.take("(")
            inner = self.metric_expression()
            self.take(")")
            if grouping is None:
                grouping, labels = self.grouping()
            return VectorAggregation(name, grouping, labels, inner)
        if name in _RANGE_FUNCTIONS:
            self.take("(")
            selector = self.log_selector()
            self.take("[")
            end = self.text.find("]", self.pos)
            if end < 0:
                raise self.fail("expected ']'")
            range_ns = parse_duration_ns(self.text[self.pos:end].strip())
            self.pos = end + 1
            offset_ns = 0
            if self.peek_identifier() == "offset":
                self.identifier()
                self.skip_space()
                found = re.compile(r"[0-9a-z]+").match(self.text, self.pos)
                if found is None:
                    raise self.fail("expected a duration after offset")
                offset_ns = parse_duration_ns(found.group(0))
                self.pos = found.end()
            self.take(")")
            return RangeAggregation(name, selector, range_ns, offset_ns)
        if name in _LABEL_FUNCTIONS:
            self.take("(")
            inner = self.metric_expression()
            arguments = []
            for _ in range(4):
                self.take(",")
                arguments.append(self.string())
            self.take(")")
            destination, replacement, source, regex = arguments
            if not _LABEL_NAME.fullmatch(destination):
                raise LogQLError(f'parse error : invalid destination label name in '
                                 f'label_replace: "{destination[:40]}"')
            return LabelReplace(inner, destination, replacement, source,
                                compile_re2(regex))
        raise self.fail(f"unsupported function or aggregation {name!r} (the simulated Loki "
                        f"knows "
                        f"{', '.join(_VECTOR_AGGREGATIONS + _RANGE_FUNCTIONS + _LABEL_FUNCTIONS)})")

    def grouping(self) -> tuple[str | None, tuple[str, ...]]:
        keyword = self.peek_identifier()
        if keyword not in ("by", "without"):
            return None, ()
        self.identifier()
        self.take("(")
        labels: list[str] = []
        if not self.peek(")"):
            labels.append(self.identifier())
            while self.peek(","):
                self.take(",")
                labels.append(self.identifier())
        self.take(")")
        return keyword, tuple(labels)

    def log_selector(self) -> LogSelector:
        self.take("{")
        matchers = [self.matcher()]
        while self.peek(","):
            self.take(",")
            matchers.append(self.matcher())
        self.take("}")
        filters: list[Stage] = []
        while True:
            op = next((op for op in _FILTER_OPS if self.peek(op)), None)
            if op is None:
                if self.peek("|"):
                    self.take("|")
                    filters.append(self.label_filter())
                    continue
                break
            self.pos += len(op)
            value = self.string()
            pattern = compile_re2(value) if op in ("|~", "!~") else None
            filters.append(LineFilter(op, value, pattern))
        return LogSelector(tuple(matchers), tuple(filters))

    def label_filter(self) -> LabelFilter:
        start = self.pos
        name = self.peek_identifier()
        if name is not None:
            self.identifier()
            found = next((op for op in _MATCH_OPS if self.peek(op)), None)
            self.pos = start
            if found is not None:
                return LabelFilter(self.matcher())
        raise self.fail("unsupported pipeline stage (the simulated Loki knows line filters and "
                        "string label filters)")

    def matcher(self) -> Matcher:
        label = self.identifier()
        op = next((op for op in _MATCH_OPS if self.peek(op)), None)
        if op is None:
            raise self.fail("expected a label matcher operator (=, !=, =~, !~)")
        self.pos += len(op)
        value = self.string()
        pattern = compile_re2(value) if op in ("=~", "!~") else None
        return Matcher(label, op, value, pattern)


@lru_cache(maxsize=256)
def parse_logql(text: str) -> Query:
    """The query as a small tree (frozen, so shared: a detector asks the same few queries at
    every look); ``LogQLError`` (Loki's 400 text) for anything else."""
    try:
        query = _Parser(text).query()
    except RecursionError:
        raise LogQLError("parse error : query nested too deeply") from None
    for selector in _selectors(query):
        if not any(m.selects_something for m in selector.matchers):
            raise LogQLError(NO_MATCHER_TEXT)
    return query


def _selectors(query: Query) -> Iterable[LogSelector]:
    while isinstance(query, VectorAggregation | LabelReplace):
        query = query.inner
    if isinstance(query, BinaryOperation):
        yield from _selectors(query.left)
        yield from _selectors(query.right)
    else:
        yield query.selector if isinstance(query, RangeAggregation) else query


def parse_loki_time(value: str) -> int:
    """A Loki time parameter as unix nanoseconds: float seconds, integer seconds or nanoseconds
    (10 digits or fewer are seconds, as Loki reads them), or RFC 3339."""
    text = value.strip()
    if "." in text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            whole = math.floor(seconds)
            return whole * NS_PER_SECOND + round((seconds - whole) * 1000) * 1_000_000
    if re.fullmatch(r"-?[0-9]{1,19}", text):
        number = int(text)
        return number * NS_PER_SECOND if len(text.lstrip("-")) <= 10 else number
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LogQLError(f'invalid time value "{value[:40]}"') from None
    if when.tzinfo is None:
        raise LogQLError(f'invalid time value "{value[:40]}"')
    return to_unix_nanos(when)


def parse_step_ns(value: str) -> int:
    """A query_range step: a duration (``60s``) or a number of seconds (``60``, ``0.5``)."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            return parse_duration_ns(value)
        except LogQLError:
            raise LogQLError(f'invalid step value "{value[:40]}"') from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise LogQLError("zero or negative query resolution step widths are not accepted. "
                         "Try a positive integer")
    return max(int(seconds * NS_PER_SECOND), 1)


def _sample_time(nanos: int) -> int | float:
    """A sample timestamp in seconds the way Loki writes it: an integer when whole, else ms."""
    if nanos % NS_PER_SECOND == 0:
        return nanos // NS_PER_SECOND
    return round(nanos / NS_PER_SECOND, 3)


def _sample_value(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): "28", not "28.0"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- evaluation ----------------------------------------------------------------------------------


@dataclass
class LogStream:
    """One Loki stream: its labels and its lines, sorted by time (unix nanoseconds), with each
    line's structured metadata (None: no line has any, as in Loki 2)."""

    labels: dict[str, str]
    times: list[int]
    lines: list[str]
    metadata: list[Metadata] | None = None


@dataclass(frozen=True)
class _Part:
    """The lines of one stream that pass a pipeline and share one structured metadata: Loki
    answers them as one series (metric queries) or one stream (log queries)."""

    labels: dict[str, str]
    times: list[int]
    lines: list[str]


class LogIndex:
    """Loki's answers over a fixed set of streams."""

    def __init__(self, streams: list[LogStream]) -> None:
        self.streams = streams
        # (stream index, pipeline) -> the parts of the lines that pass the pipeline.
        self._filtered: dict[tuple[int, tuple[Stage, ...]], list[_Part]] = {}

    def _passing(self, index: int, filters: tuple[Stage, ...]) -> list[_Part]:
        key = (index, filters)
        cached = self._filtered.get(key)
        if cached is None:
            cached = self._parts(self.streams[index], filters)
            if len(self._filtered) >= MAX_CACHED_FILTERS:
                self._filtered.clear()  # a replay uses a handful; only fuzzing gets here
            self._filtered[key] = cached
        return cached

    @staticmethod
    def _parts(stream: LogStream, filters: tuple[Stage, ...]) -> list[_Part]:
        if stream.metadata is None and not filters:
            return [_Part(stream.labels, stream.times, stream.lines)]
        metadata = stream.metadata or [()] * len(stream.lines)
        groups: dict[Metadata, tuple[list[int], list[str]]] = {}
        for t, line, meta in zip(stream.times, stream.lines, metadata):
            if all(f.accepts(line) if isinstance(f, LineFilter) else f.accepts(stream.labels, meta)
                   for f in filters):
                times, lines = groups.setdefault(meta, ([], []))
                times.append(t)
                lines.append(line)
        return [_Part({**stream.labels, **dict(meta)}, times, lines)
                for meta, (times, lines) in sorted(groups.items())]

    def _matching_streams(self, selector: LogSelector) -> list[int]:
        return [i for i, stream in enumerate(self.streams)
                if all(m.accepts(stream.labels) for m in selector.matchers)]

    def query(self, query: str, at: datetime) -> LokiAnswer:
        """``GET /loki/api/v1/query``: an instant metric query evaluated at ``at``."""
        try:
            parsed = parse_logql(query)
            if isinstance(parsed, LogSelector):
                raise LogQLError(LOG_QUERY_ON_INSTANT_TEXT)
            at_ns = to_unix_nanos(at)
            samples = self._evaluate(parsed, at_ns)
        except LogQLError as exc:
            return 400, str(exc)
        result = [{"metric": metric, "value": [_sample_time(at_ns), _sample_value(value)]}
                  for metric, value in samples]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def query_range(self, query: str, start: datetime, end: datetime,
                    limit: int = DEFAULT_LOG_LIMIT, direction: str = "backward",
                    step_ns: int | None = None) -> LokiAnswer:
        """``GET /loki/api/v1/query_range``: log lines (streams) or a metric over time (matrix)."""
        try:
            parsed = parse_logql(query)
            start_ns, end_ns = to_unix_nanos(start), to_unix_nanos(end)
            if end_ns < start_ns:
                raise LogQLError("end timestamp must not be before or equal to start time")
            if isinstance(parsed, LogSelector):
                body = self._streams_body(parsed, start_ns, end_ns, limit, direction)
            else:
                body = self._matrix_body(parsed, start_ns, end_ns, step_ns)
        except LogQLError as exc:
            return 400, str(exc)
        return 200, body

    def _evaluate(self, query: MetricQuery, at_ns: int) -> list[tuple[dict[str, str], float]]:
        if isinstance(query, BinaryOperation):
            # or: all of the left, and those of the right whose label set the left lacks.
            left = self._evaluate(query.left, at_ns)
            seen = {tuple(sorted(labels.items())) for labels, _ in left}
            return left + [(labels, value) for labels, value in self._evaluate(query.right, at_ns)
                           if tuple(sorted(labels.items())) not in seen]
        if isinstance(query, LabelReplace):
            return [(query.apply(labels), value)
                    for labels, value in self._evaluate(query.inner, at_ns)]
        if isinstance(query, RangeAggregation):
            series = []
            at_ns -= query.offset_ns
            for index in self._matching_streams(query.selector):
                for part in self._passing(index, query.selector.filters):
                    times = part.times
                    count = (bisect.bisect_right(times, at_ns)
                             - bisect.bisect_right(times, at_ns - query.range_ns))
                    if count:  # Loki has no sample, not a zero, for a stream without lines
                        value = count if query.function == "count_over_time" else \
                            count / (query.range_ns / NS_PER_SECOND)
                        series.append((dict(part.labels), float(value)))
            return series
        groups: dict[tuple[tuple[str, str], ...], float] = {}
        for labels, value in self._evaluate(query.inner, at_ns):
            if query.grouping == "by":
                kept = {k: labels[k] for k in query.labels if labels.get(k)}
            elif query.grouping == "without":
                kept = {k: v for k, v in labels.items() if k not in query.labels}
            else:
                kept = {}
            key = tuple(sorted(kept.items()))
            groups[key] = groups.get(key, 0.0) + value
        return [(dict(key), value) for key, value in sorted(groups.items())]

    def _streams_body(self, selector: LogSelector, start_ns: int, end_ns: int, limit: int,
                      direction: str) -> dict[str, Any]:
        if direction not in ("backward", "forward"):
            raise LogQLError(f"invalid direction {direction[:20]!r}: use forward or backward")
        if limit < 1:
            raise LogQLError("limit must be a positive value")
        if limit > MAX_ENTRIES_LIMIT:
            raise LogQLError(f"max entries limit per query exceeded, limit > max_entries_limit "
                             f"({limit} > {MAX_ENTRIES_LIMIT})")
        backward = direction == "backward"
        # (time, stream index, part index, position)
        candidates: list[tuple[int, int, int, int]] = []
        for index in self._matching_streams(selector):
            for part_index, part in enumerate(self._passing(index, selector.filters)):
                times = part.times
                lo, hi = bisect.bisect_left(times, start_ns), bisect.bisect_left(times, end_ns)
                positions = range(hi - 1, max(lo, hi - limit) - 1, -1) if backward else \
                    range(lo, min(hi, lo + limit))
                candidates.extend((times[p], index, part_index, p) for p in positions)
        chosen = (heapq.nlargest if backward else heapq.nsmallest)(limit, candidates)
        by_part: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for t, index, part_index, position in chosen:
            by_part.setdefault((index, part_index), []).append((t, position))
        result = []
        for index, part_index in sorted(by_part):
            part = self._passing(index, selector.filters)[part_index]
            entries = sorted(by_part[(index, part_index)], reverse=backward)
            # Structured metadata comes back merged into the stream's labels.
            result.append({"stream": dict(part.labels),
                           "values": [[str(t), part.lines[p]] for t, p in entries]})
        return {"status": "success", "data": {"resultType": "streams", "result": result}}

    def _matrix_body(self, query: MetricQuery, start_ns: int,
                     end_ns: int, step_ns: int | None) -> dict[str, Any]:
        if step_ns is None:
            step_ns = max((end_ns - start_ns) // 250 // NS_PER_SECOND, 1) * NS_PER_SECOND
        if (end_ns - start_ns) // step_ns > MAX_POINTS_PER_SERIES:
            raise LogQLError("exceeded maximum resolution of 11,000 points per timeseries. Try "
                             "decreasing the query resolution (?step=XX)")
        series: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        at_ns = start_ns
        while at_ns <= end_ns:
            for labels, value in self._evaluate(query, at_ns):
                key = tuple(sorted(labels.items()))
                series.setdefault(key, []).append([_sample_time(at_ns), _sample_value(value)])
            at_ns += step_ns
        result = [{"metric": dict(key), "values": values} for key, values in sorted(series.items())]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    # Kubernetes ----------------------------------------------------------------------------------
