"""The simulated world of one scenario: Kubernetes objects and Loki answers as functions of time.

``World(scenario, t0=...)`` turns a scenario into

- the Deployment, its ReplicaSets and their pods at any instant, as the JSON bodies a
  kube-apiserver returns (same keys and nesting as the recordings in ``tests/fixtures``);
- the log lines the pods write, generated once, deterministically, and kept sorted per stream;
- the answers of Loki to the subset of LogQL the detector speaks: a stream selector with ``=``,
  ``!=``, ``=~``, ``!~`` matchers, line filters (``|=``, ``!=``, ``|~``, ``!~``),
  ``count_over_time`` or ``rate`` over a range, and an optional ``sum [by|without] (...)``.
  Anything else is a 400 with a plain-text body, as Loki answers a query it cannot parse.

Every method is a pure function of the world and the instant it is given; the only state is a
cache of which lines pass which line filter, so that a replay's hundreds of queries stay cheap.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..model import REVISION_ANNOTATION, PodProblem
from .scenario import PLACEHOLDER, LogSpec, PodProblemSpec, Revision, Scenario

# Kubernetes' alphabet for generated names (no vowels, no look-alike characters).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
# Seconds between a ReplicaSet's creation and its pods'.
POD_START_DELAY_SECONDS = 5.0
PROGRESS_DEADLINE_SECONDS = 600
# A runaway scenario (a high rate over days) must fail loudly, not eat the memory of a test run.
MAX_LOG_LINES = 1_000_000
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

_NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PROBLEMS_BEFORE_START = {PodProblem.IMAGE_PULL, PodProblem.ERR_IMAGE_PULL, PodProblem.CONFIG_ERROR}
_PROBLEMS_WITH_RESTART = {PodProblem.CRASH_LOOP, PodProblem.OOM_KILLED}

Body = dict[str, Any]
LokiAnswer = tuple[int, Body | str]


# --- names, hashes and time ----------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("\x00".join(str(p) for p in parts).encode(), digest_size=16).digest()


def generated_suffix(length: int, *parts: object) -> str:
    """``length`` characters of Kubernetes' name alphabet, a deterministic function of ``parts``."""
    number = int.from_bytes(_digest(*parts), "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def pod_template_hash(deployment: str, revision: int) -> str:
    return generated_suffix(10, deployment, revision)


def replicaset_name(deployment: str, revision: int) -> str:
    return f"{deployment}-{pod_template_hash(deployment, revision)}"


def pod_name(replicaset: str, index: int) -> str:
    return f"{replicaset}-{generated_suffix(5, replicaset, index)}"


def _uid(*parts: object) -> str:
    return str(uuid.UUID(bytes=_digest("uid", *parts), version=4))


def to_unix_nanos(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_SECOND + delta.microseconds * 1000


def from_unix_nanos(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def kube_time(when: datetime) -> str:
    """Kubernetes' metav1.Time: RFC 3339, whole seconds, UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- log lines ----------------------------------------------------------------------------------


def _rate_per_second(points: tuple[tuple[float, float], ...], t: float) -> float:
    """Lines per second at ``t``: linear between breakpoints, constant outside them."""
    if t <= points[0][0]:
        return points[0][1] / 60.0
    if t >= points[-1][0]:
        return points[-1][1] / 60.0
    index = bisect.bisect_right([p[0] for p in points], t)
    (t1, r1), (t2, r2) = points[index - 1], points[index]
    return (r1 + (r2 - r1) * (t - t1) / (t2 - t1)) / 60.0


def line_times(points: tuple[tuple[float, float], ...], start: float, end: float,
               phase: float) -> list[float]:
    """Times in [start, end) at which the integral of the rate from ``start`` reaches k + phase.

    A constant rate gives evenly spaced lines (so a window of n spacings always holds n lines);
    a ramp gives lines that come closer together as it rises.
    """
    bounds = [start] + [t for t, _ in points if start < t < end] + [end]
    times: list[float] = []
    done = 0.0
    target = phase
    for a, b in zip(bounds, bounds[1:]):
        length = b - a
        if length <= 0:
            continue
        rate_a, rate_b = _rate_per_second(points, a), _rate_per_second(points, b)
        total = (rate_a + rate_b) / 2.0 * length
        half_slope = (rate_b - rate_a) / (2.0 * length)
        while target <= done + total:
            remaining = target - done
            # Solve rate_a*x + half_slope*x^2 = remaining, in the form that is stable for slope 0.
            root = math.sqrt(max(rate_a * rate_a + 4.0 * half_slope * remaining, 0.0))
            x = 2.0 * remaining / (rate_a + root) if rate_a + root > 0 else length
            times.append(a + min(max(x, 0.0), length))
            target += 1.0
            if len(times) > MAX_LOG_LINES:
                raise ValueError(f"the scenario writes more than {MAX_LOG_LINES} log lines")
        done += total
    return [t for t in times if t < end]


def _fill_line(template: str, *, pod: str, seed: str, index: int) -> str:
    if "{" not in template:
        return template
    digest = _digest(seed, index)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "n":
            return str(1000 + index)
        if name == "n3":
            return str(1 + int.from_bytes(digest[:4], "big") % 999)
        if name == "uuid":
            return str(uuid.UUID(bytes=digest, version=4))
        if name == "ip":
            return "10.{}.{}.{}".format(digest[4], digest[5], 1 + digest[6] % 254)
        return pod

    return PLACEHOLDER.sub(value, template)


@dataclass
class _Stream:
    labels: dict[str, str]
    entries: list[tuple[int, str]] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


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


@dataclass(frozen=True)
class LogSelector:
    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...] = ()


@dataclass(frozen=True)
class RangeAggregation:
    function: str  # count_over_time | rate
    selector: LogSelector
    range_ns: int


@dataclass(frozen=True)
class VectorAggregation:
    operation: str  # sum
    grouping: str | None  # by | without | None
    labels: tuple[str, ...]
    inner: RangeAggregation | VectorAggregation


Query = LogSelector | RangeAggregation | VectorAggregation

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
        return self.metric()

    def metric(self) -> RangeAggregation | VectorAggregation:
        name = self.identifier()
        if name in _VECTOR_AGGREGATIONS:
            grouping, labels = self.grouping()
            self.take("(")
            inner = self.metric()
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
            self.take(")")
            return RangeAggregation(name, selector, range_ns)
        raise self.fail(f"unsupported function or aggregation {name!r} (the simulated Loki "
                        f"knows {', '.join(_VECTOR_AGGREGATIONS + _RANGE_FUNCTIONS)})")

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
        filters = []
        while True:
            op = next((op for op in _FILTER_OPS if self.peek(op)), None)
            if op is None:
                if self.peek("|"):
                    raise self.fail("unsupported pipeline stage (the simulated Loki knows line "
                                    "filters only)")
                break
            self.pos += len(op)
            value = self.string()
            pattern = compile_re2(value) if op in ("|~", "!~") else None
            filters.append(LineFilter(op, value, pattern))
        return LogSelector(tuple(matchers), tuple(filters))

    def matcher(self) -> Matcher:
        label = self.identifier()
        op = next((op for op in _MATCH_OPS if self.peek(op)), None)
        if op is None:
            raise self.fail("expected a label matcher operator (=, !=, =~, !~)")
        self.pos += len(op)
        value = self.string()
        pattern = compile_re2(value) if op in ("=~", "!~") else None
        return Matcher(label, op, value, pattern)


def parse_logql(text: str) -> Query:
    """The query as a small tree; ``LogQLError`` (Loki's 400 text) for anything else."""
    try:
        query = _Parser(text).query()
    except RecursionError:
        raise LogQLError("parse error : query nested too deeply") from None
    for selector in _selectors(query):
        if not any(m.selects_something for m in selector.matchers):
            raise LogQLError(NO_MATCHER_TEXT)
    return query


def _selectors(query: Query) -> Iterable[LogSelector]:
    while isinstance(query, VectorAggregation):
        query = query.inner
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
            return whole * _NS_PER_SECOND + round((seconds - whole) * 1000) * 1_000_000
    if re.fullmatch(r"-?[0-9]{1,19}", text):
        number = int(text)
        return number * _NS_PER_SECOND if len(text.lstrip("-")) <= 10 else number
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
    return max(int(seconds * _NS_PER_SECOND), 1)


def _sample_time(nanos: int) -> int | float:
    """A sample timestamp in seconds the way Loki writes it: an integer when whole, else ms."""
    if nanos % _NS_PER_SECOND == 0:
        return nanos // _NS_PER_SECOND
    return round(nanos / _NS_PER_SECOND, 3)


def _sample_value(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): "28", not "28.0"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- the world -----------------------------------------------------------------------------------


class World:
    """One scenario laid out on the wall clock: t=0 of the scenario is ``t0``."""

    def __init__(self, scenario: Scenario, *, t0: datetime) -> None:
        if t0.tzinfo is None or t0.utcoffset() is None:
            raise ValueError("t0 must be an aware datetime")
        self.scenario = scenario
        self.t0 = t0.astimezone(timezone.utc)
        self._t0_ns = to_unix_nanos(self.t0)
        self.pod_labels = dict(scenario.pod_labels) or {"app": scenario.deployment}
        settings = scenario.settings
        self.namespace_label = settings.get("loki_namespace_label_key", "namespace")
        self.workload_label = settings.get("loki_app_label_key", "app")
        self.pod_label = settings.get("loki_pod_label_key", "pod")
        self.workload = scenario.workload
        self._streams = self._write_logs()
        # (stream index, filters) -> (times, lines) of the lines that pass the filters.
        self._filtered: dict[tuple[int, tuple[LineFilter, ...]], tuple[list[int], list[str]]] = {}

    # Time and names ------------------------------------------------------------------------------

    def at(self, seconds: float) -> datetime:
        """The wall time of scenario time ``seconds``."""
        return self.t0 + timedelta(seconds=seconds)

    def seconds(self, when: datetime) -> float:
        """Scenario time of a wall time."""
        return (when - self.t0).total_seconds()

    def replicaset_name(self, revision: int) -> str:
        return replicaset_name(self.scenario.deployment, revision)

    def pod_names(self, revision: int) -> list[str]:
        rs = self.replicaset_name(revision)
        return [pod_name(rs, i) for i in range(self.scenario.revision(revision).replicas)]

    def current_revision(self, now: datetime) -> Revision | None:
        """The revision the Deployment's annotation names at ``now`` (None before it exists)."""
        t = self.seconds(now)
        current = None
        for revision in self.scenario.revisions:
            if revision.at <= t:
                current = revision
        return current

    def _pod_lifetime(self, revision: Revision) -> tuple[float, float]:
        revisions = self.scenario.revisions
        index = revisions.index(revision)
        end = math.inf
        if index + 1 < len(revisions):
            end = revisions[index + 1].at + self.scenario.drain_seconds
        return revision.at + POD_START_DELAY_SECONDS, end

    def _progress_deadline_exceeded(self, t: float, current: Revision) -> bool:
        deadline = self.scenario.progress_deadline_exceeded_at
        if deadline is None or t < deadline:
            return False
        # The condition belongs to the rollout that was current when it fired; a newer rollout
        # starts a new progress clock.
        at_deadline = max((r for r in self.scenario.revisions if r.at <= deadline),
                          key=lambda r: r.at)
        return at_deadline is current

    # Log lines -----------------------------------------------------------------------------------

    def _stream_labels(self, pod: str | None) -> dict[str, str]:
        labels = {
            self.namespace_label: self.scenario.namespace,
            self.workload_label: self.workload,
            "container": self.scenario.deployment,
            "job": f"{self.scenario.namespace}/{self.workload}",
        }
        # Loki 3 derives service_name from the app label at ingestion.
        labels.setdefault("service_name", self.workload)
        if pod is not None:
            labels[self.pod_label] = pod
        return labels

    def _write_logs(self) -> list[_Stream]:
        streams: dict[tuple[tuple[str, str], ...], _Stream] = {}
        total = 0
        for spec_index, spec in enumerate(self.scenario.logs):
            revision = self.scenario.revision(spec.revision)
            alive_from, alive_to = self._pod_lifetime(revision)
            start = max(spec.from_, alive_from)
            end = min(self.scenario.log_end(spec), alive_to)
            if end <= start:
                continue
            for pod in self.pod_names(spec.revision):
                total += self._write_pod_lines(streams, spec, spec_index, pod, start, end)
                if total > MAX_LOG_LINES:
                    raise ValueError(f"scenario {self.scenario.name!r} writes more than "
                                     f"{MAX_LOG_LINES} log lines")
        for stream in streams.values():
            # Stable: lines of one instant keep the order they were written in.
            stream.entries.sort(key=lambda entry: entry[0])
            stream.times = [t for t, _ in stream.entries]
            stream.lines = [line for _, line in stream.entries]
            stream.entries = []
        return sorted(streams.values(), key=lambda s: sorted(s.labels.items()))

    def _write_pod_lines(self, streams: dict[tuple[tuple[str, str], ...], _Stream], spec: LogSpec,
                         spec_index: int, pod: str, start: float, end: float) -> int:
        labels = self._stream_labels(pod if spec.pod_label else None)
        key = tuple(sorted(labels.items()))
        stream = streams.setdefault(key, _Stream(labels))
        seed = f"{pod}/{spec_index}"
        phase = (int.from_bytes(_digest("phase", seed)[:4], "big") % 1_000_000 + 1) / 1_000_000
        times = line_times(spec.rate_points(), start, end, phase)
        for index, t in enumerate(times):
            line = _fill_line(spec.line, pod=pod, seed=seed, index=index)
            stream.entries.append((self._t0_ns + round(t * _NS_PER_SECOND), line))
        return len(times)

    def _passing(self, index: int, filters: tuple[LineFilter, ...]) -> tuple[list[int], list[str]]:
        key = (index, filters)
        cached = self._filtered.get(key)
        if cached is None:
            stream = self._streams[index]
            if not filters:
                cached = (stream.times, stream.lines)
            else:
                kept = [(t, line) for t, line in zip(stream.times, stream.lines)
                        if all(f.accepts(line) for f in filters)]
                cached = ([t for t, _ in kept], [line for _, line in kept])
            if len(self._filtered) >= MAX_CACHED_FILTERS:
                self._filtered.clear()  # a replay uses a handful; only fuzzing gets here
            self._filtered[key] = cached
        return cached

    def _matching_streams(self, selector: LogSelector) -> list[int]:
        return [i for i, stream in enumerate(self._streams)
                if all(m.accepts(stream.labels) for m in selector.matchers)]

    # Loki ----------------------------------------------------------------------------------------

    def loki_query(self, query: str, at: datetime) -> LokiAnswer:
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

    def loki_query_range(self, query: str, start: datetime, end: datetime,
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

    def _evaluate(self, query: RangeAggregation | VectorAggregation,
                  at_ns: int) -> list[tuple[dict[str, str], float]]:
        if isinstance(query, RangeAggregation):
            series = []
            for index in self._matching_streams(query.selector):
                times, _ = self._passing(index, query.selector.filters)
                count = (bisect.bisect_right(times, at_ns)
                         - bisect.bisect_right(times, at_ns - query.range_ns))
                if count:  # Loki has no sample, not a zero, for a stream without lines
                    value = count if query.function == "count_over_time" else \
                        count / (query.range_ns / _NS_PER_SECOND)
                    series.append((dict(self._streams[index].labels), float(value)))
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
                      direction: str) -> Body:
        if direction not in ("backward", "forward"):
            raise LogQLError(f"invalid direction {direction[:20]!r}: use forward or backward")
        if limit < 1:
            raise LogQLError("limit must be a positive value")
        if limit > MAX_ENTRIES_LIMIT:
            raise LogQLError(f"max entries limit per query exceeded, limit > max_entries_limit "
                             f"({limit} > {MAX_ENTRIES_LIMIT})")
        backward = direction == "backward"
        candidates: list[tuple[int, int, int]] = []  # (time, stream index, position)
        for index in self._matching_streams(selector):
            times, _ = self._passing(index, selector.filters)
            lo, hi = bisect.bisect_left(times, start_ns), bisect.bisect_left(times, end_ns)
            positions = range(hi - 1, max(lo, hi - limit) - 1, -1) if backward else \
                range(lo, min(hi, lo + limit))
            candidates.extend((times[p], index, p) for p in positions)
        chosen = (heapq.nlargest if backward else heapq.nsmallest)(limit, candidates)
        by_stream: dict[int, list[tuple[int, int]]] = {}
        for t, index, position in chosen:
            by_stream.setdefault(index, []).append((t, position))
        result = []
        for index in sorted(by_stream):
            _, lines = self._passing(index, selector.filters)
            entries = sorted(by_stream[index], reverse=backward)
            result.append({"stream": dict(self._streams[index].labels),
                           "values": [[str(t), lines[p]] for t, p in entries]})
        return {"status": "success", "data": {"resultType": "streams", "result": result}}

    def _matrix_body(self, query: RangeAggregation | VectorAggregation, start_ns: int,
                     end_ns: int, step_ns: int | None) -> Body:
        if step_ns is None:
            step_ns = max((end_ns - start_ns) // 250 // _NS_PER_SECOND, 1) * _NS_PER_SECOND
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

    def deployments_list(self, namespace: str, now: datetime) -> Body:
        items = []
        deployment = self.deployment(namespace, now)
        if deployment is not None:
            items.append(_list_item(deployment))
        return self._list("DeploymentList", "apps/v1", items, now)

    def replicasets_list(self, namespace: str, now: datetime) -> Body:
        items = [_list_item(rs) for rs in self._replicasets(namespace, now)]
        return self._list("ReplicaSetList", "apps/v1", items, now)

    def pods_list(self, namespace: str, now: datetime) -> Body:
        items = [_list_item(pod) for pod in self._pods(namespace, now)]
        return self._list("PodList", "v1", items, now)

    def _list(self, kind: str, api_version: str, items: list[Body], now: datetime) -> Body:
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": str(to_unix_nanos(now) // _NS_PER_SECOND)},
                "items": items}

    def _metadata(self, kind: str, name: str, created: float, changed: float, *,
                  labels: dict[str, str], annotations: dict[str, str] | None = None,
                  owner: tuple[str, str, str] | None = None, generation: int | None = None,
                  generate_name: str | None = None) -> Body:
        namespace = self.scenario.namespace
        metadata: Body = {"name": name}
        if generate_name:
            metadata["generateName"] = generate_name
        metadata.update({
            "namespace": namespace,
            "uid": _uid(kind, namespace, name),
            "resourceVersion": str(to_unix_nanos(self.at(changed)) // _NS_PER_SECOND),
        })
        if generation is not None:
            metadata["generation"] = generation
        metadata["creationTimestamp"] = kube_time(self.at(created))
        metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if owner is not None:
            owner_kind, api_version, owner_name = owner
            metadata["ownerReferences"] = [{
                "apiVersion": api_version, "kind": owner_kind, "name": owner_name,
                "uid": _uid(owner_kind, namespace, owner_name),
                "controller": True, "blockOwnerDeletion": True,
            }]
        return metadata

    def _container(self, revision: Revision) -> Body:
        container: Body = {"name": self.scenario.deployment, "image": revision.image}
        if revision.env:
            container["env"] = [{"name": k, "value": v} for k, v in revision.env.items()]
        container.update({
            "resources": {kind: dict(values) for kind, values in revision.resources.items()},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        })
        return container

    def _pod_spec(self, revision: Revision) -> Body:
        return {
            "containers": [self._container(revision)],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        }

    def _template(self, revision: Revision, labels: dict[str, str]) -> Body:
        return {"metadata": {"creationTimestamp": None, "labels": labels},
                "spec": self._pod_spec(revision)}

    def deployment(self, namespace: str, now: datetime) -> Body | None:
        """The Deployment as ``GET .../deployments/NAME`` returns it; None before it exists."""
        current = self.current_revision(now)
        if namespace != self.scenario.namespace or current is None:
            return None
        t = self.seconds(now)
        first = self.scenario.revisions[0]
        rs = self.replicaset_name(current.revision)
        generation = self.scenario.revisions.index(current) + 1
        pods = self._pods(namespace, now)
        ready = sum(1 for pod in pods if _pod_ready(pod))
        updated = sum(1 for pod in pods if pod["metadata"]["name"].startswith(rs + "-"))
        updated_ready = sum(1 for pod in pods
                            if pod["metadata"]["name"].startswith(rs + "-") and _pod_ready(pod))
        exceeded = self._progress_deadline_exceeded(t, current)
        deadline = self.scenario.progress_deadline_exceeded_at
        changed = deadline if exceeded and deadline is not None else current.at
        since = kube_time(self.at(current.at))
        if exceeded:
            deadline_at = kube_time(self.at(changed))
            progressing = {"type": "Progressing", "status": "False",
                           "lastUpdateTime": deadline_at, "lastTransitionTime": deadline_at,
                           "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{rs}" has timed out progressing.'}
        elif updated_ready >= current.replicas and updated == current.replicas:
            progressing = {"type": "Progressing", "status": "True", "lastUpdateTime": since,
                           "lastTransitionTime": kube_time(self.at(first.at)),
                           "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{rs}" has successfully progressed.'}
        else:
            progressing = {"type": "Progressing", "status": "True", "lastUpdateTime": since,
                           "lastTransitionTime": kube_time(self.at(first.at)),
                           "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{rs}" is progressing.'}
        max_unavailable = current.replicas * 25 // 100
        if ready >= current.replicas - max_unavailable:
            available = {"type": "Available", "status": "True", "lastUpdateTime": since,
                         "lastTransitionTime": since, "reason": "MinimumReplicasAvailable",
                         "message": "Deployment has minimum availability."}
        else:
            available = {"type": "Available", "status": "False", "lastUpdateTime": since,
                         "lastTransitionTime": since, "reason": "MinimumReplicasUnavailable",
                         "message": "Deployment does not have minimum availability."}
        status: Body = {"observedGeneration": generation, "replicas": len(pods),
                        "updatedReplicas": updated}
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        if len(pods) - ready > 0:
            status["unavailableReplicas"] = len(pods) - ready
        status["conditions"] = [available, progressing]
        labels = {**self.pod_labels, **self.scenario.deployment_labels}
        annotations = {REVISION_ANNOTATION: str(current.revision),
                       **self.scenario.deployment_annotations}
        return {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": self._metadata("Deployment", self.scenario.deployment, first.at, changed,
                                       labels=labels, annotations=annotations,
                                       generation=generation),
            "spec": {
                "replicas": current.replicas,
                "selector": {"matchLabels": dict(self.pod_labels)},
                "template": self._template(current, dict(self.pod_labels)),
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            },
            "status": status,
        }

    def _replicasets(self, namespace: str, now: datetime) -> list[Body]:
        if namespace != self.scenario.namespace:
            return []
        t = self.seconds(now)
        out = []
        for revision in self.scenario.revisions:
            if revision.at > t:
                continue
            name = self.replicaset_name(revision.revision)
            hash_label = {POD_TEMPLATE_HASH_LABEL: pod_template_hash(self.scenario.deployment,
                                                                     revision.revision)}
            labels = {**self.pod_labels, **hash_label}
            alive_from, alive_to = self._pod_lifetime(revision)
            scaled_down = t >= alive_to
            pods = [p for p in self._revision_pods(revision, t)]
            ready = sum(1 for p in pods if _pod_ready(p))
            status: Body = {"replicas": len(pods)}
            if pods:
                status["fullyLabeledReplicas"] = len(pods)
            if ready:
                status["readyReplicas"] = ready
                status["availableReplicas"] = ready
            status["observedGeneration"] = 2 if scaled_down else 1
            desired = 0 if scaled_down else revision.replicas
            out.append({
                "kind": "ReplicaSet",
                "apiVersion": "apps/v1",
                "metadata": self._metadata(
                    "ReplicaSet", name, revision.at, alive_to if scaled_down else revision.at,
                    labels=labels,
                    annotations={DESIRED_REPLICAS_ANNOTATION: str(revision.replicas),
                                 MAX_REPLICAS_ANNOTATION: str(revision.replicas
                                                              + -(-revision.replicas // 4)),
                                 REVISION_ANNOTATION: str(revision.revision)},
                    owner=("Deployment", "apps/v1", self.scenario.deployment),
                    generation=2 if scaled_down else 1),
                "spec": {"replicas": desired,
                         "selector": {"matchLabels": dict(labels)},
                         "template": self._template(revision, dict(labels))},
                "status": status,
            })
        return out

    def _pods(self, namespace: str, now: datetime) -> list[Body]:
        if namespace != self.scenario.namespace:
            return []
        t = self.seconds(now)
        return [pod for revision in self.scenario.revisions
                for pod in self._revision_pods(revision, t)]

    def _revision_pods(self, revision: Revision, t: float) -> list[Body]:
        alive_from, alive_to = self._pod_lifetime(revision)
        if not alive_from <= t < alive_to:
            return []
        rs = self.replicaset_name(revision.revision)
        labels = {**self.pod_labels,
                  POD_TEMPLATE_HASH_LABEL: pod_template_hash(self.scenario.deployment,
                                                             revision.revision)}
        pods = []
        for index, name in enumerate(self.pod_names(revision.revision)):
            problem = _active_problem(revision.pod_problems, index, t)
            changed = max(alive_from, problem.from_) if problem else alive_from
            status = self._pod_status(revision, name, problem, alive_from)
            pods.append({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": self._metadata("Pod", name, alive_from, changed, labels=dict(labels),
                                           owner=("ReplicaSet", "apps/v1", rs),
                                           generate_name=rs + "-"),
                "spec": self._admitted_pod_spec(revision, name, index),
                "status": status,
            })
        return pods

    def _admitted_pod_spec(self, revision: Revision, name: str, index: int) -> Body:
        """The template's pod spec plus what admission and the scheduler add to a real pod."""
        volume = f"kube-api-access-{generated_suffix(5, 'volume', name)}"
        spec = self._pod_spec(revision)
        spec["volumes"] = [{"name": volume, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ], "defaultMode": 420}}]
        spec["containers"][0]["volumeMounts"] = [{
            "name": volume, "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
        spec.update({
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": f"node-{1 + index % 3}",
            "tolerations": [
                {"key": f"node.kubernetes.io/{taint}", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300}
                for taint in ("not-ready", "unreachable")],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        })
        return spec

    def _pod_status(self, revision: Revision, name: str, problem: PodProblemSpec | None,
                    started: float) -> Body:
        container = self.scenario.deployment
        image = revision.image
        start = kube_time(self.at(started))
        image_id = f"{image.rsplit(':', 1)[0]}@sha256:{_digest('image', image).hex() * 2}"
        container_id = f"containerd://{_digest('container', name).hex() * 2}"
        state: Body
        last_state: Body = {}
        restarts = problem.restarts if problem else 0
        kind = problem.problem if problem else None
        if kind in _PROBLEMS_WITH_RESTART:
            restarts = max(restarts, 1)
            since = kube_time(self.at(max(started, problem.from_ if problem else started)))
            terminated = {"exitCode": 137 if kind is PodProblem.OOM_KILLED else 1,
                          "reason": "OOMKilled" if kind is PodProblem.OOM_KILLED else "Error",
                          "startedAt": start, "finishedAt": since,
                          "containerID": container_id}
            last_state = {"terminated": terminated}
        ready = revision.ready and kind in (None, PodProblem.OOM_KILLED)
        if kind is None or kind is PodProblem.OOM_KILLED:
            running_since = start if kind is None else last_state["terminated"]["finishedAt"]
            state = {"running": {"startedAt": running_since}}
        elif kind is PodProblem.CRASH_LOOP:
            state = {"waiting": {"reason": kind.value, "message": (
                f"back-off 1m20s restarting failed container={container} pod={name}")}}
        elif kind is PodProblem.IMAGE_PULL:
            state = {"waiting": {"reason": kind.value,
                                 "message": f'Back-off pulling image "{image}"'}}
        elif kind is PodProblem.ERR_IMAGE_PULL:
            state = {"waiting": {"reason": kind.value, "message": (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f"not found")}}
        else:
            state = {"waiting": {"reason": kind.value,
                                 "message": f'configmap "{container}-config" not found'}}
        not_started = kind in _PROBLEMS_BEFORE_START
        status: Body = {
            "phase": "Pending" if not_started else "Running",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": start},
                {"type": "Ready", "status": "True" if ready else "False", "lastProbeTime": None,
                 "lastTransitionTime": start},
                {"type": "ContainersReady", "status": "True" if ready else "False",
                 "lastProbeTime": None, "lastTransitionTime": start},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": start},
            ],
            "hostIP": "172.18.0.2",
            "podIP": "10.244.0.{}".format(2 + _digest("ip", name)[0] % 250),
            "startTime": start,
            "containerStatuses": [{
                "name": container,
                "state": state,
                "lastState": last_state,
                "ready": ready,
                "restartCount": restarts,
                "image": image,
                "imageID": "" if not_started else image_id,
                **({} if not_started else {"containerID": container_id}),
                "started": "running" in state,
            }],
            "qosClass": "BestEffort",
        }
        return status


def _active_problem(problems: tuple[PodProblemSpec, ...], index: int,
                    t: float) -> PodProblemSpec | None:
    """The problem with the latest ``from`` <= t that applies to the pod with this index."""
    active = None
    for problem in problems:
        if problem.from_ <= t and (problem.pods is None or index < problem.pods):
            if active is None or problem.from_ >= active.from_:
                active = problem
    return active


def _pod_ready(pod: Body) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def _list_item(body: Body) -> Body:
    """A list's items carry no kind/apiVersion of their own (the list says them once)."""
    return {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}


def find_item(list_body: Body, name: str) -> Body | None:
    for item in list_body.get("items", ()):
        if item["metadata"]["name"] == name:
            return item
    return None

