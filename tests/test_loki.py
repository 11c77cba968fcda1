"""The Loki adapter: LogQL from any value, parsers over any JSON, HTTP with recorded bodies."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
import structlog
from hypothesis import assume, given
from hypothesis import strategies as st

from incident_detector.config import ConfigError, DEFAULT_ERROR_PATTERN, Settings, load_settings
from incident_detector.errors import SourceError
from incident_detector.sources.loki import (
    MAX_LINE_CHARS,
    CountWindow,
    LabelKeys,
    LokiClient,
    error_count_query,
    error_lines_query,
    make_http_client,
    parse_streams,
    parse_vector,
    quote,
    regex_escape,
    selector,
    windows_query,
)
from incident_detector.model import ErrorCounts, ErrorSample, LogLine
from incident_detector.retry import Backoff

FIXTURES = Path(__file__).parent / "fixtures" / "loki"
LOKI_URL = "http://loki.test:3100"
QUERY = "/loki/api/v1/query"
QUERY_RANGE = "/loki/api/v1/query_range"
NAMESPACE = "demo-aiops"
WORKLOAD = "payments-api"
KEYS = LabelKeys()
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- recorded exchanges --------------------------------------------------------------------------


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def recorded_body(name: str) -> Any:
    """The recorded JSON body, a fresh copy that a test may edit."""
    return copy.deepcopy(recorded(name)["response"]["json"])


def recorded_query_params(name: str) -> dict[str, str]:
    url = recorded(name)["request"]["url"]
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def recorded_response(name: str) -> httpx.Response:
    """The recorded response as Loki sent it: status, content type and body."""
    response = recorded(name)["response"]
    if response["json"] is not None:
        content = json.dumps(response["json"]).encode("utf-8")
    else:
        content = response["text"].encode("utf-8")
    return httpx.Response(
        response["status"], headers={"Content-Type": response["content_type"]}, content=content
    )


def json_response(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"Content-Type": "application/json; charset=UTF-8"},
        content=json.dumps(body).encode("utf-8"),
    )


def text_response(status: int, text: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers={"Content-Type": "text/plain; charset=utf-8", **headers}, text=text
    )


def nanos(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


# --- a small Go/LogQL string reader, to check quote() from the outside ---------------------------

_GO_SIMPLE_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34
}


def scan_go_string(text: str, start: int = 0) -> tuple[bytes, int]:
    """Read the Go interpreted string literal at ``text[start]``: its bytes and the index after it.

    Follows strconv.Unquote, which is what the LogQL lexer uses: a raw newline, an unknown escape,
    a surrogate in \\u or a missing closing quote is a syntax error.
    """
    if text[start : start + 1] != '"':
        raise ValueError("not a string literal")
    out = bytearray()
    i = start + 1
    while True:
        if i >= len(text):
            raise ValueError("unterminated string")
        char = text[i]
        if char == '"':
            return bytes(out), i + 1
        if char == "\n":
            raise ValueError("newline in string")
        if char != "\\":
            out += char.encode("utf-8")  # a surrogate here cannot be sent: fails loudly
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        if escape in _GO_SIMPLE_ESCAPES:
            out.append(_GO_SIMPLE_ESCAPES[escape])
            i += 2
        elif escape in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[escape]
            digits = text[i + 2 : i + 2 + width]
            if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                raise ValueError("bad hex escape")
            code = int(digits, 16)
            if escape == "x":
                out.append(code)
            else:
                if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                    raise ValueError("invalid code point")
                out += chr(code).encode("utf-8")
            i += 2 + width
        elif escape and escape in "01234567":
            digits = text[i + 1 : i + 4]
            if not re.fullmatch("[0-7]{3}", digits) or int(digits, 8) > 255:
                raise ValueError("bad octal escape")
            out.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"unknown escape {escape!r}")


def go_unquote(literal: str) -> bytes:
    value, end = scan_go_string(literal)
    if end != len(literal):
        raise ValueError("text after the closing quote")
    return value


_MATCHER_HEAD = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)")


def parse_selector(text: str) -> list[tuple[str, str, bytes]]:
    """The (label, operator, value) matchers of a stream selector, or ValueError."""
    if not text.startswith("{"):
        raise ValueError("no opening brace")
    matchers = []
    i = 1
    while True:
        head = _MATCHER_HEAD.match(text, i)
        if head is None:
            raise ValueError(f"no matcher at {i}")
        value, i = scan_go_string(text, head.end())
        matchers.append((head[1], head[2], value))
        if text.startswith(", ", i):
            i += 2
            continue
        if text[i:] != "}":
            raise ValueError("text after the selector")
        return matchers


def unescaped_quotes(inner: str) -> int:
    """How many ``"`` in the body of a literal are not preceded by an odd run of backslashes."""
    return len(re.findall(r'(?<!\\)(?:\\\\)*"', inner))


# --- LogQL: exact strings ------------------------------------------------------------------------


def test_selector_one_workload():
    assert (
        selector(namespace=NAMESPACE, workloads=[WORKLOAD], keys=KEYS)
        == '{namespace="demo-aiops", app="payments-api"}'
    )


def test_selector_several_workloads_are_one_escaped_alternation():
    assert (
        selector(namespace=NAMESPACE, workloads=["a", "b.c"], keys=KEYS)
        == '{namespace="demo-aiops", app=~"a|b\\\\.c"}'
    )
    assert (
        selector(namespace=NAMESPACE, workloads=("api", "worker", "cron(x)"), keys=KEYS)
        == '{namespace="demo-aiops", app=~"api|worker|cron\\\\(x\\\\)"}'
    )


def test_selector_repeated_workload_is_one_equality():
    assert (
        selector(namespace=NAMESPACE, workloads=["api", "api"], keys=KEYS)
        == '{namespace="demo-aiops", app="api"}'
    )


def test_selector_every_workload_is_non_empty_regex():
    assert selector(namespace=NAMESPACE, workloads=None, keys=KEYS) == (
        '{namespace="demo-aiops", app=~".+"}'
    )


def test_every_workload_selector_is_what_loki_says_it_accepts():
    refusal = recorded("query_no_matcher")["response"]
    assert refusal["status"] == 400
    # Loki's own message names the form it accepts; ours is exactly that form.
    assert 'app=~".+" will' in refusal["text"]
    ours = selector(namespace=NAMESPACE, workloads=None, keys=KEYS)
    assert 'app=~".+"' in ours
    assert ".*" not in ours


def test_selector_rejects_empty_workloads_and_a_bare_string():
    with pytest.raises(ValueError):
        selector(namespace=NAMESPACE, workloads=[], keys=KEYS)
    with pytest.raises(TypeError):
        bare: Any = "payments-api"
        selector(namespace=NAMESPACE, workloads=bare, keys=KEYS)


def test_label_values_that_would_break_out_are_escaped():
    cases = {
        'we"ird': '"we\\"ird"',
        "back\\slash": '"back\\\\slash"',
        "line\nbreak": '"line\\nbreak"',
        "cr\rtab\t": '"cr\\rtab\\t"',
        '"} |= "x': '"\\"} |= \\"x"',
        "zahlungs-dienst-ü": '"zahlungs-dienst-ü"',
        "日本": '"日本"',
        "\u2028": '"\\u2028"',
    }
    for value, literal in cases.items():
        assert selector(namespace=value, workloads=[value], keys=KEYS) == (
            f"{{namespace={literal}, app={literal}}}"
        )


def test_several_workloads_with_quotes_and_metacharacters():
    assert selector(namespace=NAMESPACE, workloads=["a", "b.c", 'd"e', "f\\g"], keys=KEYS) == (
        '{namespace="demo-aiops", app=~"a|b\\\\.c|d\\"e|f\\\\\\\\g"}'
    )


def test_error_count_query_exact():
    assert error_count_query(
        namespace=NAMESPACE,
        workloads=[WORKLOAD],
        pattern=DEFAULT_ERROR_PATTERN,
        window_seconds=120,
        keys=KEYS,
    ) == (
        'sum by (app, pod) (count_over_time({namespace="demo-aiops", app="payments-api"}'
        ' |~ "(?i)(error|exception|fatal|panic)" [120s]))'
    )


def test_error_count_query_every_workload_and_custom_keys():
    keys = LabelKeys(namespace="k8s_namespace_name", workload="service_name", pod="k8s_pod_name")
    assert error_count_query(
        namespace=NAMESPACE, workloads=None, pattern="level=error", window_seconds=300, keys=keys
    ) == (
        "sum by (service_name, k8s_pod_name) (count_over_time("
        '{k8s_namespace_name="demo-aiops", service_name=~".+"} |~ "level=error" [300s]))'
    )


def test_error_count_query_rejects_a_window_that_is_not_positive_seconds():
    for window in (0, -5, 1.5, True):
        with pytest.raises(ValueError):
            error_count_query(
                namespace=NAMESPACE, workloads=None, pattern="x", window_seconds=window, keys=KEYS
            )


def test_error_lines_query_exact():
    assert error_lines_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern=DEFAULT_ERROR_PATTERN, keys=KEYS
    ) == '{namespace="demo-aiops", app="payments-api"} |~ "(?i)(error|exception|fatal|panic)"'


def test_pattern_with_backslashes_and_quotes_is_quoted():
    query = error_lines_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern='status="5\\d\\d"', keys=KEYS
    )
    assert query.endswith(' |~ "status=\\"5\\\\d\\\\d\\""')


def test_count_query_matches_the_recorded_by_pod_query():
    recorded_query = recorded_query_params("query_vector_by_pod")["query"]
    ours = error_count_query(
        namespace=NAMESPACE,
        workloads=[WORKLOAD],
        pattern=DEFAULT_ERROR_PATTERN,
        window_seconds=120,
        keys=KEYS,
    )
    inner = re.compile(r"^sum by \(([^)]*)\) \(count_over_time\((.*) \[(\w+)\]\)\)$")
    theirs_match, ours_match = inner.match(recorded_query), inner.match(ours)
    assert theirs_match and ours_match
    # Same selector and line filter; ours groups by workload too, and spells 2m as 120s.
    assert ours_match[2] == theirs_match[2]
    assert (theirs_match[1], theirs_match[3]) == ("pod", "2m")
    assert (ours_match[1], ours_match[3]) == ("app, pod", "120s")


def test_lines_query_is_the_recorded_range_query():
    assert recorded_query_params("query_range_streams")["query"] == error_lines_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern=DEFAULT_ERROR_PATTERN, keys=KEYS
    )


def test_quote_matches_go_strconv_quote():
    cases = {
        "": '""',
        "plain": '"plain"',
        "\x00": '"\\x00"',
        "\x07\x08\x0c\x0b": '"\\a\\b\\f\\v"',
        "\x1b[31m": '"\\x1b[31m"',
        "\x7f": '"\\x7f"',
        "\u0085": '"\\u0085"',
        "\u00a0": '"\\u00a0"',
        "é": '"é"',
        "\U0001f600": '"\U0001f600"',
        "\U000e0001": '"\\U000e0001"',
        "\ufffd": '"\ufffd"',
    }
    for value, literal in cases.items():
        assert quote(value) == literal, value


def test_quote_turns_undecodable_bytes_into_byte_escapes():
    value = b"ns-\xff\xfe".decode("utf-8", "surrogateescape")
    assert quote(value) == '"ns-\\xff\\xfe"'
    assert quote("\ud800") == '"\\xed\\xa0\\x80"'


def test_regex_escape():
    assert regex_escape("payments-api") == "payments-api"
    assert regex_escape("b.c") == "b\\.c"
    assert regex_escape("\\.+*?()|[]{}^$") == "\\\\\\.\\+\\*\\?\\(\\)\\|\\[\\]\\{\\}\\^\\$"
    assert regex_escape("a/b_c-d #~") == "a/b_c-d #~"


def test_label_keys_must_be_label_names():
    for bad in ("", "1app", "app-name", 'app"} or', "app\n", "a b", "ünï"):
        with pytest.raises(ValueError):
            LabelKeys(workload=bad)
    assert LabelKeys(namespace="_ns", workload="service_name", pod="Pod1").pod == "Pod1"


def test_label_keys_from_settings():
    settings = load_settings(
        {},
        loki_url=LOKI_URL,
        loki_app_label_key="service_name",
        loki_namespace_label_key="k8s_namespace_name",
        loki_pod_label_key="k8s_pod_name",
    )
    assert LabelKeys.from_settings(settings) == LabelKeys(
        namespace="k8s_namespace_name", workload="service_name", pod="k8s_pod_name"
    )


# --- LogQL: properties ---------------------------------------------------------------------------

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
label_keys = st.builds(LabelKeys, namespace=label_names, workload=label_names, pod=label_names)
any_code_points = st.lists(st.integers(0, 0x10FFFF), max_size=30).map(
    lambda codes: "".join(map(chr, codes))
)


@given(st.text())
def test_quote_round_trips_any_text(value):
    literal = quote(value)
    assert go_unquote(literal) == value.encode("utf-8")
    assert unescaped_quotes(literal[1:-1]) == 0
    assert "\n" not in literal and "\r" not in literal


@given(st.binary())
def test_quote_round_trips_any_bytes_read_from_the_environment(raw):
    assert go_unquote(quote(raw.decode("utf-8", "surrogateescape"))) == raw


@given(any_code_points)
def test_quote_of_any_code_points_is_one_sendable_literal(value):
    literal = quote(value)
    literal.encode("utf-8")  # no surrogate left: the query can be sent
    go_unquote(literal)  # one literal, closed where it ends
    assert unescaped_quotes(literal[1:-1]) == 0


@given(
    namespace=st.text(),
    workloads=st.none() | st.lists(st.text(), min_size=1, max_size=5),
    keys=label_keys,
    stranger=st.text(),
)
def test_selector_holds_exactly_the_expected_matchers(namespace, workloads, keys, stranger):
    matchers = parse_selector(selector(namespace=namespace, workloads=workloads, keys=keys))
    assert len(matchers) == 2
    assert matchers[0] == (keys.namespace, "=", namespace.encode("utf-8"))
    label, operator, value = matchers[1]
    assert label == keys.workload
    distinct = list(dict.fromkeys(workloads)) if workloads is not None else None
    if distinct is None:
        assert (operator, value) == ("=~", b".+")
    elif len(distinct) == 1:
        assert (operator, value) == ("=", distinct[0].encode("utf-8"))
    else:
        assert operator == "=~"
        regex = re.compile(value.decode("utf-8"))
        assert all(regex.fullmatch(name) for name in distinct)
        assume(stranger not in distinct)
        assert not regex.fullmatch(stranger)


@given(
    namespace=st.text(),
    workloads=st.lists(st.text(), min_size=1, max_size=3),
    pattern=st.text(),
)
def test_count_query_has_one_selector_one_filter_one_range(namespace, workloads, pattern):
    query = error_count_query(
        namespace=namespace, workloads=workloads, pattern=pattern, window_seconds=60, keys=KEYS
    )
    head = "sum by (app, pod) (count_over_time("
    assert query.startswith(head) and query.endswith(" [60s]))")
    body = query[len(head) : -len(" [60s]))")]
    stream_end = body.index("} |~ ") + 1
    parse_selector(body[:stream_end])
    assert go_unquote(body[stream_end + len(" |~ ") :]) == pattern.encode("utf-8")


# --- parsing: recorded bodies --------------------------------------------------------------------


def test_parse_vector_by_pod():
    counts = parse_vector(
        recorded_body("query_vector_by_pod"), namespace=NAMESPACE, window_seconds=120, keys=KEYS
    )
    assert counts == ErrorCounts(
        namespace=NAMESPACE,
        window_seconds=120,
        samples=(
            ErrorSample(workload="", pod="payments-api-6874dc9bf7-r66bl", count=28.0),
            ErrorSample(workload="", pod="payments-api-77587766bd-bkvvm", count=2.0),
        ),
    )


def test_parse_vector_by_app_has_no_pod():
    counts = parse_vector(
        recorded_body("query_vector_by_app"), namespace=NAMESPACE, window_seconds=120, keys=KEYS
    )
    assert counts.samples == (ErrorSample(workload=WORKLOAD, pod=None, count=30.0),)


def test_parse_vector_by_app_and_pod_with_custom_keys():
    body = recorded_body("query_vector_by_pod")
    for item in body["data"]["result"]:
        item["metric"] = {"service_name": WORKLOAD, "k8s_pod_name": item["metric"]["pod"]}
    keys = LabelKeys(workload="service_name", pod="k8s_pod_name")
    counts = parse_vector(body, namespace=NAMESPACE, window_seconds=120, keys=keys)
    assert [(s.workload, s.pod, s.count) for s in counts.samples] == [
        (WORKLOAD, "payments-api-6874dc9bf7-r66bl", 28.0),
        (WORKLOAD, "payments-api-77587766bd-bkvvm", 2.0),
    ]


def test_parse_vector_empty_result_is_zero_errors():
    counts = parse_vector(
        recorded_body("query_vector_empty"), namespace=NAMESPACE, window_seconds=120, keys=KEYS
    )
    assert counts == ErrorCounts(namespace=NAMESPACE, window_seconds=120, samples=())


def test_parse_vector_skips_values_that_are_not_finite_counts():
    body = recorded_body("query_vector_by_app")
    template = body["data"]["result"][0]
    values = ["NaN", "+Inf", "-Inf", "abc", "", "-3", None, [1], True, "12.5", 7]
    body["data"]["result"] = [
        {"metric": {"app": f"w{i}"}, "value": [template["value"][0], value]}
        for i, value in enumerate(values)
    ]
    counts = parse_vector(body, namespace=NAMESPACE, window_seconds=120, keys=KEYS)
    assert [(s.workload, s.count) for s in counts.samples] == [("w9", 12.5), ("w10", 7.0)]


def vector_body(result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


WRONG_SHAPES = [
    None,
    [],
    "success",
    42,
    {},
    {"status": "error", "data": {"resultType": "vector", "result": []}},
    {"status": "success"},
    {"status": "success", "data": []},
    {"status": "success", "data": {"resultType": "vector"}},
    vector_body({}),
    vector_body(["x"]),
    vector_body([{"value": [1, "2"]}]),
    vector_body([{"metric": {}}]),
    vector_body([{"metric": {}, "value": 2}]),
    vector_body([{"metric": {}, "value": [1]}]),
    vector_body([{"metric": {}, "value": [1, "2", "3"]}]),
    vector_body([{"metric": {"app": 5}, "value": [1, "2"]}]),
    vector_body([{"metric": {"pod": {"x": 1}}, "value": [1, "2"]}]),
]


@pytest.mark.parametrize("body", WRONG_SHAPES)
def test_parse_vector_refuses_bodies_of_the_wrong_shape(body):
    with pytest.raises(SourceError) as raised:
        parse_vector(body, namespace=NAMESPACE, window_seconds=120, keys=KEYS)
    assert (raised.value.source, raised.value.reason) == ("loki", "unexpected_shape")
    assert raised.value.retryable is False


def test_parse_vector_refuses_a_matrix_and_a_stream_body():
    for name in ("query_range_matrix", "query_range_streams"):
        with pytest.raises(SourceError, match="unexpected_shape"):
            parse_vector(recorded_body(name), namespace=NAMESPACE, window_seconds=120, keys=KEYS)


def test_parse_streams_recorded_body():
    lines = parse_streams(recorded_body("query_range_streams"), keys=KEYS)
    assert len(lines) == 5
    pod = "payments-api-6874dc9bf7-r66bl"
    assert lines[0] == LogLine(
        at=EPOCH + timedelta(microseconds=1795456560543759),
        line='level=error msg="charge failed" order_id=7531 '
        'err="NullPointerException at PaymentService.charge(PaymentService.java:88)"',
        pod=pod,
        workload="payments-api",
    )
    assert all(line.pod == pod and line.at.tzinfo is not None for line in lines)
    assert [line.at for line in lines] == sorted((line.at for line in lines), reverse=True)
    assert lines[-1].at == datetime.fromtimestamp(1795456549.543759, tz=UTC)


def test_parse_streams_merges_streams_newest_first():
    body = recorded_body("query_range_streams")
    first = body["data"]["result"][0]
    second = {
        "stream": {"app": WORKLOAD, "namespace": NAMESPACE},  # no pod label
        "values": [
            ["1795456556000000000", "panic: older"],
            ["1795456561000000000", "fatal: newest"],
        ],
    }
    body["data"]["result"] = [first, second]
    lines = parse_streams(body, keys=KEYS)
    assert [(line.line, line.pod) for line in lines[:2]] == [
        ("fatal: newest", None),
        (first["values"][0][1], "payments-api-6874dc9bf7-r66bl"),
    ]
    assert ("panic: older", None) in [(line.line, line.pod) for line in lines]
    assert [line.at for line in lines] == sorted((line.at for line in lines), reverse=True)


def test_parse_streams_keeps_any_line_and_truncates_long_ones():
    body = recorded_body("query_range_streams")
    long_line = "x" * (MAX_LINE_CHARS + 500)
    odd_line = "\x00\x1b[31mERROR\x1b[0m \u2028 \udc80 ü"
    body["data"]["result"][0]["values"] = [
        ["1795456560000000000", long_line],
        ["1795456559000000000", odd_line],
        ["1795456558000000000", "", {"structured": "metadata"}],
    ]
    lines = parse_streams(body, keys=KEYS)
    assert lines[0].line == "x" * MAX_LINE_CHARS
    assert lines[1].line == "\x00\x1b[31mERROR\x1b[0m \u2028 \ufffd ü"
    lines[1].line.encode("utf-8")
    assert lines[2].line == ""


def test_parse_streams_skips_entries_with_unusable_timestamps():
    body = recorded_body("query_range_streams")
    body["data"]["result"][0]["values"] = [
        ["not-a-time", "a"],
        ["-5", "b"],
        ["9" * 21, "c"],  # past datetime.max
        [10**30, "c"],
        [1.5, "d"],
        [True, "e"],
        ["1795456560000000000", "kept"],
    ]
    assert [line.line for line in parse_streams(body, keys=KEYS)] == ["kept"]


@pytest.mark.parametrize(
    "result",
    [
        [{"values": []}],
        [{"stream": {}, "values": {}}],
        [{"stream": {}, "values": [["1", 2]]}],
        [{"stream": {}, "values": [["1"]]}],
        [{"stream": {"pod": ["x"]}, "values": []}],
        ["stream"],
    ],
)
def test_parse_streams_refuses_bodies_of_the_wrong_shape(result):
    body = {"status": "success", "data": {"resultType": "streams", "result": result}}
    with pytest.raises(SourceError, match="unexpected_shape"):
        parse_streams(body, keys=KEYS)
    with pytest.raises(SourceError, match="unexpected_shape"):
        parse_streams(recorded_body("query_vector_by_pod"), keys=KEYS)


# --- parsing: any JSON ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)
label_sets = st.dictionaries(
    st.sampled_from(["app", "pod", "namespace", "x"]), st.text(max_size=8)
)
near_vector_items = st.fixed_dictionaries(
    {"metric": label_sets | json_values, "value": st.lists(json_values, max_size=3) | json_values}
)
near_stream_items = st.fixed_dictionaries(
    {
        "stream": label_sets | json_values,
        "values": st.lists(
            st.lists(st.integers(0, 10**21).map(str) | json_values, min_size=1, max_size=3)
            | json_values,
            max_size=4,
        )
        | json_values,
    }
)


def loki_bodies(items: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Bodies close to Loki's, so that the parsers' inner branches get arbitrary input too."""
    return st.fixed_dictionaries(
        {
            "status": st.sampled_from(["success", "error"]) | json_values,
            "data": st.fixed_dictionaries(
                {
                    "resultType": st.sampled_from(["vector", "streams", "matrix"]),
                    "result": st.lists(items | json_values, max_size=4) | json_values,
                }
            )
            | json_values,
        }
    )


@given(json_values | loki_bodies(near_vector_items))
def test_parse_vector_on_any_json_returns_counts_or_raises_source_error(body):
    try:
        counts = parse_vector(body, namespace=NAMESPACE, window_seconds=60, keys=KEYS)
    except SourceError as error:
        assert (error.reason, error.retryable) == ("unexpected_shape", False)
    else:
        assert isinstance(counts, ErrorCounts)
        for sample in counts.samples:
            assert isinstance(sample.workload, str)
            assert sample.pod is None or isinstance(sample.pod, str)
            assert math.isfinite(sample.count) and sample.count >= 0


@given(json_values | loki_bodies(near_stream_items))
def test_parse_streams_on_any_json_returns_lines_or_raises_source_error(body):
    try:
        lines = parse_streams(body, keys=KEYS)
    except SourceError as error:
        assert (error.reason, error.retryable) == ("unexpected_shape", False)
    else:
        assert all(isinstance(line, LogLine) for line in lines)
        assert all(line.at.tzinfo is not None for line in lines)
        assert all(len(line.line) <= MAX_LINE_CHARS for line in lines)
        assert [line.at for line in lines] == sorted((line.at for line in lines), reverse=True)


# --- the adapter over HTTP -----------------------------------------------------------------------


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_settings(**overrides: Any) -> Settings:
    return load_settings({}, loki_url=LOKI_URL, **overrides)


def count_errors(
    settings: Settings | None = None,
    *,
    sleep: RecordingSleep | None = None,
    max_attempts: int = 3,
    **call: Any,
) -> ErrorCounts:
    async def scenario() -> ErrorCounts:
        async with make_http_client(settings or make_settings()) as http:
            client = LokiClient(
                http=http,
                keys=KEYS,
                pattern=DEFAULT_ERROR_PATTERN,
                max_attempts=max_attempts,
                backoff=Backoff(base=0.25, cap=2.0, jitter=False),
                sleep=sleep or RecordingSleep(),
            )
            arguments = {"namespace": NAMESPACE, "workloads": [WORKLOAD], "window_seconds": 120}
            return await client.count_errors(**(arguments | call))

    return asyncio.run(scenario())


def count_errors_failure(**kwargs: Any) -> SourceError:
    with pytest.raises(SourceError) as raised:
        count_errors(**kwargs)
    return raised.value


def test_count_errors_by_pod():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_by_pod"))
        counts = count_errors()
    assert [(s.pod, s.count) for s in counts.samples] == [
        ("payments-api-6874dc9bf7-r66bl", 28.0),
        ("payments-api-77587766bd-bkvvm", 2.0),
    ]
    params = route.calls.last.request.url.params
    assert params["query"] == error_count_query(
        namespace=NAMESPACE,
        workloads=[WORKLOAD],
        pattern=DEFAULT_ERROR_PATTERN,
        window_seconds=120,
        keys=KEYS,
    )
    assert "time" not in params


def test_count_errors_by_app_without_pod_label():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(return_value=recorded_response("query_vector_by_app"))
        counts = count_errors(workloads=None)
    assert counts.samples == (ErrorSample(workload=WORKLOAD, pod=None, count=30.0),)


def test_count_errors_empty_result():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        counts = count_errors(workloads=["no-such-app"])
    assert counts == ErrorCounts(namespace=NAMESPACE, window_seconds=120)


def test_count_errors_sends_time_when_asked_for_a_past_window():
    at = datetime(2026, 11, 23, 18, 59, 30, 123456, tzinfo=UTC)
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        count_errors(at=at)
        count_errors(at=at.astimezone(timezone(timedelta(hours=-5))))
    first, second = (call.request.url.params["time"] for call in route.calls)
    # One nanosecond before: Loki counts (time - range, time], the window is [at - range, at).
    assert first == second == str(nanos(at) - 1) == "1795460370123455999"


def test_count_errors_refuses_a_naive_time():
    with respx.mock(base_url=LOKI_URL, assert_all_called=False) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        with pytest.raises(ValueError):
            count_errors(at=datetime(2026, 11, 23, 12, 0))
    assert route.call_count == 0


def test_logql_error_is_not_retried_and_carries_lokis_text():
    sleep = RecordingSleep()
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_parse_error"))
        error = count_errors_failure(sleep=sleep)
    assert route.call_count == 1 and sleep.calls == []
    assert (error.source, error.reason, error.status, error.retryable) == (
        "loki", "http_400", 400, False
    )
    assert error.message == recorded("query_parse_error")["response"]["text"]


def test_long_error_text_is_truncated():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(return_value=text_response(400, "parse error: " + "y" * 5000))
        error = count_errors_failure()
    assert len(error.message) == 300 and error.message.startswith("parse error: yyy")


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_other_client_errors_are_not_retried(status):
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=text_response(status, "no"))
        error = count_errors_failure()
    assert route.call_count == 1
    assert (error.reason, error.status, error.retryable) == (f"http_{status}", status, False)


def test_429_waits_for_retry_after_then_succeeds():
    sleep = RecordingSleep()
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(
            side_effect=[
                text_response(429, "too many outstanding requests", **{"Retry-After": "7"}),
                recorded_response("query_vector_by_app"),
            ]
        )
        counts = count_errors(sleep=sleep)
    assert route.call_count == 2
    assert sleep.calls == [7.0]
    assert counts.samples[0].count == 30.0


def test_429_that_persists_reports_retry_after():
    sleep = RecordingSleep()
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(
            side_effect=lambda request: text_response(429, "slow down", **{"Retry-After": "3"})
        )
        error = count_errors_failure(sleep=sleep, max_attempts=2)
    assert (error.reason, error.status, error.retryable, error.retry_after) == (
        "http_429", 429, True, 3.0
    )
    assert sleep.calls == [3.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_then_given_up(status):
    sleep = RecordingSleep()
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(
            side_effect=lambda request: text_response(status, "upstream unavailable")
        )
        error = count_errors_failure(sleep=sleep, max_attempts=3)
    assert route.call_count == 3
    assert sleep.calls == [0.25, 0.5]  # the backoff schedule, jitter off
    assert (error.reason, error.status, error.retryable) == (f"http_{status}", status, True)
    assert error.message == "upstream unavailable"


def test_server_error_then_success():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(
            side_effect=[
                text_response(502, "bad gateway"),
                recorded_response("query_vector_by_pod"),
            ]
        )
        counts = count_errors()
    assert route.call_count == 2 and len(counts.samples) == 2


def test_timeout_is_retryable_and_retried():
    sleep = RecordingSleep()
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(side_effect=httpx.ReadTimeout)
        error = count_errors_failure(sleep=sleep, max_attempts=2)
    assert route.call_count == 2 and len(sleep.calls) == 1
    assert (error.source, error.reason, error.retryable, error.status) == (
        "loki", "timeout", True, None
    )


def test_connection_refused_is_retryable():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(side_effect=httpx.ConnectError)
        error = count_errors_failure(max_attempts=3)
    assert route.call_count == 3
    assert (error.reason, error.retryable) == ("connection", True)


def test_body_that_is_not_json_is_malformed():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(
            return_value=httpx.Response(
                200, headers={"Content-Type": "text/html"}, content=b"<html>login</html>"
            )
        )
        error = count_errors_failure()
    assert route.call_count == 1
    assert (error.reason, error.retryable, error.status) == ("malformed", False, 200)


def test_json_of_the_wrong_shape_is_unexpected_shape():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_range_matrix"))
        error = count_errors_failure()
    assert route.call_count == 1
    assert (error.reason, error.retryable) == ("unexpected_shape", False)


def test_skipped_sample_is_logged_once_per_kind_per_client():
    body = recorded_body("query_vector_by_pod")
    body["data"]["result"][0]["value"][1] = "not-a-number"
    body["data"]["result"].append({"metric": {"pod": "p3"}, "value": [1, "NaN"]})

    async def scenario() -> list[ErrorCounts]:
        results = []
        async with make_http_client(make_settings()) as http:
            for _ in range(2):  # two clients, two ticks each
                client = LokiClient(http=http, keys=KEYS, pattern=DEFAULT_ERROR_PATTERN)
                for _ in range(2):
                    results.append(
                        await client.count_errors(
                            namespace=NAMESPACE, workloads=[WORKLOAD], window_seconds=120
                        )
                    )
        return results

    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(side_effect=lambda request: json_response(body))
        with structlog.testing.capture_logs() as logs:
            results = asyncio.run(scenario())
    assert all(
        r.samples == (ErrorSample(workload="", pod="payments-api-77587766bd-bkvvm", count=2.0),)
        for r in results
    )
    skipped = [entry for entry in logs if entry["event"] == "loki_sample_skipped"]
    assert sorted(entry["kind"] for entry in skipped) == sorted(
        ["not_a_number", "not_finite"] * 2
    )
    assert all(entry["log_level"] == "warning" for entry in skipped)


def test_headers_without_tenant_or_auth():
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        count_errors()
    headers = route.calls.last.request.headers
    assert "X-Scope-OrgID" not in headers and "Authorization" not in headers
    assert re.fullmatch(r"incident-detector/\S+", headers["User-Agent"])


def test_tenant_and_bearer_token_headers():
    settings = make_settings(loki_org_id="team-payments", loki_bearer_token="tok-123")
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        count_errors(settings)
    headers = route.calls.last.request.headers
    assert headers["X-Scope-OrgID"] == "team-payments"
    assert headers["Authorization"] == "Bearer tok-123"


def test_basic_auth_header():
    settings = make_settings(loki_username="reader", loki_password="pa:ss wörd")
    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=recorded_response("query_vector_empty"))
        count_errors(settings)
    expected = base64.b64encode("reader:pa:ss wörd".encode("utf-8")).decode("ascii")
    assert route.calls.last.request.headers["Authorization"] == f"Basic {expected}"


def test_credentials_in_the_url_become_basic_auth_and_leave_the_url():
    settings = load_settings({}, loki_url="http://reader:s3cret@loki.test:3100/tenant-a/")
    with respx.mock(base_url="http://loki.test:3100") as loki:
        route = loki.get("/tenant-a/loki/api/v1/query").mock(
            return_value=recorded_response("query_vector_empty")
        )
        count_errors(settings)
    request = route.calls.last.request
    assert request.url.userinfo == b""
    credential = base64.b64encode(b"reader:s3cret").decode()
    assert request.headers["Authorization"] == f"Basic {credential}"


def test_http_client_timeout_and_base_url():
    client = make_http_client(make_settings(loki_timeout_seconds=4.5))
    try:
        assert client.timeout == httpx.Timeout(4.5)
        assert str(client.base_url) == LOKI_URL + "/"
    finally:
        asyncio.run(client.aclose())


def test_http_client_refuses_header_breaking_values_without_echoing_them():
    # refused at start, by the settings, with the variable named and the value not echoed
    with pytest.raises(ConfigError) as refused:
        make_settings(loki_bearer_token="tok\r\nX-Evil: 1")
    assert "LOKI_BEARER_TOKEN" in str(refused.value) and "Evil" not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        make_settings(loki_org_id="a\nb")
    assert "LOKI_ORG_ID" in str(refused.value) and "a\nb" not in str(refused.value)


SECRET = "tok-SECRET-9f3c1e"


def leak_scenarios() -> list[tuple[Settings, Any]]:
    bearer = make_settings(loki_bearer_token=SECRET)
    basic = make_settings(loki_username="reader", loki_password=SECRET)

    def echo_401(request: httpx.Request) -> httpx.Response:
        return text_response(401, f"invalid credentials: {request.headers['Authorization']}")

    def echo_decoded_basic(request: httpx.Request) -> httpx.Response:
        return text_response(403, f"user reader with password {SECRET} may not read tenant x")

    def refuse_with_url(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            f"cannot reach http://reader:{SECRET}@loki.test:3100 (Bearer {SECRET})",
            request=request,
        )

    def gateway_500(request: httpx.Request) -> httpx.Response:
        return text_response(500, f"upstream rejected Authorization: Bearer {SECRET}")

    return [
        (bearer, echo_401),
        (basic, echo_401),
        (basic, echo_decoded_basic),
        (bearer, refuse_with_url),
        (basic, refuse_with_url),
        (bearer, gateway_500),
    ]


@pytest.mark.parametrize("settings, answer", leak_scenarios())
def test_secret_never_appears_in_errors_or_logs(settings, answer):
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(side_effect=answer)
        with structlog.testing.capture_logs() as logs:
            error = count_errors_failure(settings=settings)
    assert error.source == "loki"
    for text in (str(error), error.message, repr(error.args), repr(logs)):
        assert SECRET not in text
        assert base64.b64encode(f"reader:{SECRET}".encode()).decode() not in text
    assert "[redacted]" in error.message


def test_sample_errors_against_recorded_streams():
    recorded_params = recorded_query_params("query_range_streams")
    start = EPOCH + timedelta(microseconds=int(recorded_params["start"]) // 1000)
    end = EPOCH + timedelta(microseconds=int(recorded_params["end"]) // 1000)

    async def scenario() -> tuple[LogLine, ...]:
        async with make_http_client(make_settings()) as http:
            client = LokiClient(http=http, keys=KEYS, pattern=DEFAULT_ERROR_PATTERN)
            return await client.sample_errors(
                namespace=NAMESPACE, workloads=[WORKLOAD], start=start, end=end, limit=5
            )

    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY_RANGE).mock(return_value=recorded_response("query_range_streams"))
        lines = asyncio.run(scenario())
    params = dict(route.calls.last.request.url.params)
    # Same request as the recorded one, down to the microsecond our datetimes carry.
    assert params["query"] == recorded_params["query"]
    assert (params["limit"], params["direction"]) == ("5", "backward")
    assert params["start"] == recorded_params["start"][:-3] + "000"
    assert params["end"] == recorded_params["end"][:-3] + "000"
    assert len(lines) == 5 and lines[0].line.startswith('level=error msg="charge failed"')
    assert lines == parse_streams(recorded_body("query_range_streams"), keys=KEYS)


def test_sample_errors_maps_failures_like_count_errors():
    async def scenario() -> None:
        async with make_http_client(make_settings()) as http:
            client = LokiClient(
                http=http, keys=KEYS, pattern=DEFAULT_ERROR_PATTERN, sleep=RecordingSleep()
            )
            now = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
            await client.sample_errors(
                namespace=NAMESPACE, workloads=None, start=now - timedelta(minutes=5), end=now
            )

    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY_RANGE).mock(return_value=recorded_response("query_log_on_instant"))
        with pytest.raises(SourceError) as raised:
            asyncio.run(scenario())
    assert route.call_count == 1
    assert route.calls.last.request.url.params["query"].startswith(
        '{namespace="demo-aiops", app=~".+"} |~ '
    )
    assert route.calls.last.request.url.params["limit"] == "200"
    assert (raised.value.reason, raised.value.retryable) == ("http_400", False)


# --- error lines by level (Loki 3's detected_level) ----------------------------------------------

from incident_detector.config import DEFAULT_ERROR_LEVELS  # noqa: E402
from incident_detector.sources.loki import (  # noqa: E402
    BUILDINFO_PATH,
    ErrorMatch,
    error_lines_queries,
)
from incident_detector.sim.logql import LogQLError, parse_logql  # noqa: E402

LEVELS_NAMESPACE, LEVELS_WORKLOAD = "demo-levels", "checkout"


def buildinfo(version: str) -> httpx.Response:
    """Loki's /loki/api/v1/status/buildinfo body (its documented shape)."""
    return httpx.Response(200, json={
        "version": version, "revision": "efc4d2f009", "branch": "HEAD",
        "buildUser": "root@707324a28e25", "buildDate": "2024-04-10T09:07:00Z", "goVersion": "",
    })


def test_count_query_by_level_exact():
    assert error_count_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern=DEFAULT_ERROR_PATTERN,
        levels=DEFAULT_ERROR_LEVELS, window_seconds=120, keys=KEYS,
    ) == (
        'sum by (app, pod, detected_level) (count_over_time({namespace="demo-aiops", '
        'app="payments-api"} | detected_level=~"error|critical|fatal" [120s]))'
        ' or '
        'sum by (app, pod, detected_level) (count_over_time({namespace="demo-aiops", '
        'app="payments-api"} |~ "(?i)(error|exception|fatal|panic)" | detected_level=~"|unknown" '
        "[120s]))"
    )


def test_the_level_legs_reuse_the_recorded_level_filter():
    recorded_query = recorded_query_params("query_vector_error_levels")["query"]
    (level_leg, _) = error_lines_queries(
        namespace=LEVELS_NAMESPACE, workloads=[LEVELS_WORKLOAD],
        match=ErrorMatch(DEFAULT_ERROR_PATTERN, DEFAULT_ERROR_LEVELS), keys=KEYS,
    )
    assert f"(count_over_time({level_leg} [5m]))" in recorded_query


def test_unknown_as_an_error_level_leaves_the_pattern_the_lines_without_a_level():
    legs = error_lines_queries(
        namespace=NAMESPACE, workloads=None, match=ErrorMatch("x", ("error", "unknown")), keys=KEYS
    )
    assert legs == (
        '{namespace="demo-aiops", app=~".+"} | detected_level=~"error|unknown"',
        '{namespace="demo-aiops", app=~".+"} |~ "x" | detected_level=~""',
    )


def test_the_pattern_alone_is_the_old_query():
    assert error_count_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern="x", window_seconds=60, keys=KEYS,
    ) == error_count_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern="x", window_seconds=60, keys=KEYS,
        levels=(),
    ) == 'sum by (app, pod) (count_over_time({namespace="demo-aiops", app="payments-api"} |~ "x" [60s]))'


def test_levels_must_be_names():
    with pytest.raises(TypeError):
        error_count_query(namespace="n", workloads=None, pattern="x", window_seconds=60,
                          keys=KEYS, levels="error")
    with pytest.raises(ValueError):
        ErrorMatch("x", ('error"} or {a="b',))


@given(
    namespace=st.text(),
    workloads=st.lists(st.text(), min_size=1, max_size=3),
    pattern=st.text(),
    levels=st.lists(st.sampled_from(["trace", "debug", "info", "warn", "error", "critical",
                                     "fatal", "unknown"]), min_size=1, max_size=8, unique=True),
)
def test_the_level_query_is_one_union_of_two_well_formed_legs(namespace, workloads, pattern,
                                                                levels):
    query = error_count_query(namespace=namespace, workloads=workloads, pattern=pattern,
                              window_seconds=60, keys=KEYS, levels=levels)
    try:
        parse_logql(query)  # the simulated Loki reads LogQL as Loki's grammar does
    except LogQLError as exc:
        # Only what Loki refuses too: a pattern or name that RE2 cannot compile, or a selector
        # of empty values ("at least one regexp or equality matcher ...").
        assert "regexp" in str(exc), (query, exc)
    # Two legs, always: "" is never an error level, so some lines are left to the pattern.
    head = "sum by (app, pod, detected_level) (count_over_time("
    assert query.startswith(head) and f" or {head}" in query


def test_parse_vector_adds_up_the_levels_of_a_pod():
    body = recorded_body("query_vector_by_detected_level")
    counts = parse_vector(body, namespace=LEVELS_NAMESPACE, window_seconds=300, keys=KEYS)
    assert counts.samples == (
        ErrorSample(workload="checkout", pod="checkout-5d9c7b8f4-abcde", count=34.0),
    )
    only_errors = parse_vector(recorded_body("query_vector_error_levels"),
                               namespace=LEVELS_NAMESPACE, window_seconds=300, keys=KEYS)
    assert [s.count for s in only_errors.samples] == [10.0]


def levels_answer(*series: tuple[str, str | None, str]) -> httpx.Response:
    """The recorded by-level vector with its samples replaced by (pod, detected_level, value)."""
    body = recorded_body("query_vector_by_detected_level")
    template = body["data"]["result"][0]
    result = []
    for pod, level, value in series:
        metric = {"app": WORKLOAD, "pod": pod}
        if level is not None:
            metric["detected_level"] = level
        result.append({"metric": metric, "value": [template["value"][0], value]})
    body["data"]["result"] = result
    return httpx.Response(200, json=body)


def level_client_calls(match: str, *calls: str, levels=DEFAULT_ERROR_LEVELS) -> list[Any]:
    """Run ``calls`` ("count" or "sample") on one client; the answers of each."""

    async def scenario() -> list[Any]:
        async with make_http_client(make_settings()) as http:
            client = LokiClient(http=http, keys=KEYS, pattern=DEFAULT_ERROR_PATTERN,
                                levels=levels, match=match, sleep=RecordingSleep(),
                                backoff=Backoff(base=0.25, cap=2.0, jitter=False))
            answers: list[Any] = []
            for call in calls:
                if call == "count":
                    answers.append(await client.count_errors(
                        namespace=NAMESPACE, workloads=[WORKLOAD], window_seconds=120))
                else:
                    now = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
                    answers.append(await client.sample_errors(
                        namespace=NAMESPACE, workloads=[WORKLOAD],
                        start=now - timedelta(minutes=10), end=now, limit=3))
            return answers

    return asyncio.run(scenario())


def test_auto_on_loki_3_counts_error_levels_and_undetected_pattern_lines_per_pod():
    new, old = "payments-api-77587766bd-bkvvm", "payments-api-6874dc9bf7-r66bl"
    with respx.mock(base_url=LOKI_URL) as loki:
        version = loki.get(BUILDINFO_PATH).mock(return_value=buildinfo("3.5.7"))
        query = loki.get(QUERY).mock(return_value=levels_answer(
            (new, "error", "7"), (old, "fatal", "1"), (new, "unknown", "2")))
        with structlog.testing.capture_logs() as logs:
            first, second = level_client_calls("auto", "count", "count")
    assert version.call_count == 1  # asked once, not per tick
    assert [(s.pod, s.count) for s in first.samples] == [(new, 9.0), (old, 1.0)]
    assert first == second
    sent = query.calls.last.request.url.params["query"]
    assert sent == error_count_query(namespace=NAMESPACE, workloads=[WORKLOAD],
                                     pattern=DEFAULT_ERROR_PATTERN, levels=DEFAULT_ERROR_LEVELS,
                                     window_seconds=120, keys=KEYS)
    decided = [e for e in logs if e["event"] == "loki_error_match"]
    assert len(decided) == 1 and decided[0]["match"] == "level"
    assert decided[0]["loki_version"] == "3.5.7"


def test_auto_on_loki_2_falls_back_to_the_pattern_with_one_log_line():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(BUILDINFO_PATH).mock(return_value=buildinfo("2.9.7"))
        query = loki.get(QUERY).mock(return_value=recorded_response("query_vector_by_pod"))
        with structlog.testing.capture_logs() as logs:
            counts, _ = level_client_calls("auto", "count", "count")
    assert query.calls.last.request.url.params["query"] == error_count_query(
        namespace=NAMESPACE, workloads=[WORKLOAD], pattern=DEFAULT_ERROR_PATTERN,
        window_seconds=120, keys=KEYS)
    assert "detected_level" not in query.calls.last.request.url.params["query"]
    assert sum(s.count for s in counts.samples) == 30.0
    decided = [e for e in logs if e["event"] == "loki_error_match"]
    assert len(decided) == 1
    assert (decided[0]["match"], decided[0]["loki_version"]) == ("pattern", "2.9.7")
    assert "ERROR_PATTERN" in decided[0]["note"]


@pytest.mark.parametrize("answer", [
    httpx.Response(404, text="404 page not found\n"),
    httpx.Response(403, text="forbidden"),
    httpx.Response(200, text="<html>gateway</html>", headers={"Content-Type": "text/html"}),
    buildinfo("main-1a2b3c4"),
    httpx.Response(200, json={"status": "success"}),
])
def test_auto_without_a_readable_version_matches_by_level_and_decides_once(answer):
    with respx.mock(base_url=LOKI_URL) as loki:
        version = loki.get(BUILDINFO_PATH).mock(return_value=answer)
        query = loki.get(QUERY).mock(return_value=levels_answer())
        level_client_calls("auto", "count", "count")
    assert version.call_count == 1
    assert "detected_level" in query.calls.last.request.url.params["query"]


def test_auto_asks_again_after_a_transient_failure():
    with respx.mock(base_url=LOKI_URL) as loki:
        version = loki.get(BUILDINFO_PATH).mock(side_effect=[
            httpx.Response(503, text="unavailable"), httpx.ConnectError("refused"),
            buildinfo("2.9.7")])
        query = loki.get(QUERY).mock(return_value=levels_answer())
        level_client_calls("auto", "count", "count", "count", "count")
    assert version.call_count == 3
    sent = [call.request.url.params["query"] for call in query.calls]
    # Level-aware while undecided (correct on any Loki), then the pattern alone.
    assert ["detected_level" in q for q in sent] == [True, True, False, False]


@pytest.mark.parametrize(("match", "by_level"), [("level", True), ("pattern", False)])
def test_error_match_forces_the_rule_without_asking_the_version(match, by_level):
    with respx.mock(base_url=LOKI_URL, assert_all_called=False) as loki:
        version = loki.get(BUILDINFO_PATH).mock(return_value=buildinfo("2.9.7"))
        query = loki.get(QUERY).mock(return_value=levels_answer())
        level_client_calls(match, "count")
    assert version.call_count == 0
    assert ("detected_level" in query.calls.last.request.url.params["query"]) is by_level


def test_a_loki_3_that_detects_no_levels_is_said_once():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY).mock(return_value=levels_answer(("p-1", None, "4")))
        with structlog.testing.capture_logs() as logs:
            counts, _ = level_client_calls("level", "count", "count")
    assert counts.samples == (ErrorSample(workload=WORKLOAD, pod="p-1", count=4.0),)
    assert [e["event"] for e in logs].count("loki_levels_absent") == 1


def streams_answer(*streams: tuple[str, str, list[tuple[int, str]]]) -> httpx.Response:
    """The recorded structured-metadata streams with (pod, detected_level, [(ns, line)])."""
    body = recorded_body("query_range_streams_sm")
    template = body["data"]["result"][0]["stream"]
    body["data"]["result"] = [
        {"stream": {**template, "app": WORKLOAD, "pod": pod, "detected_level": level},
         "values": [[str(t), line] for t, line in values]}
        for pod, level, values in streams
    ]
    return httpx.Response(200, json=body)


def test_samples_by_level_merge_the_two_legs_newest_first():
    base, us = 1795690466_000_000_000, 1000
    leveled = streams_answer(("p-1", "error", [(base + 5 * us, 'level=error msg="a"'),
                                                (base + 1 * us, 'level=error msg="b"')]))
    undetected = streams_answer(("p-2", "unknown", [(base + 4 * us, "panic: runtime error"),
                                                    (base + 3 * us, "panic: runtime error")]))

    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        return undetected if "|unknown" in query else leveled

    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY_RANGE).mock(side_effect=answer)
        (lines,) = level_client_calls("level", "sample")
    queries = sorted(call.request.url.params["query"] for call in route.calls)
    assert queries == sorted(error_lines_queries(
        namespace=NAMESPACE, workloads=[WORKLOAD],
        match=ErrorMatch(DEFAULT_ERROR_PATTERN, DEFAULT_ERROR_LEVELS), keys=KEYS))
    assert all(call.request.url.params["limit"] == "3" for call in route.calls)
    assert [(line.pod, line.line) for line in lines] == [
        ("p-1", 'level=error msg="a"'), ("p-2", "panic: runtime error"),
        ("p-2", "panic: runtime error")]


def test_samples_on_the_recorded_structured_metadata_streams():
    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY_RANGE).mock(return_value=recorded_response("query_range_streams_sm"))
        (lines,) = level_client_calls("pattern", "sample")
    # The pod comes from structured metadata merged into the stream labels.
    assert [line.pod for line in lines] == [
        "orders-7f6d5c4b3-qwert", "orders-6c5b4a398-zxcvb", "orders-7f6d5c4b3-qwert"]


def test_the_pod_of_a_line_is_read_from_its_structured_metadata_element():
    """Loki 3 with categorized labels keeps structured metadata out of the stream: the recorded
    body with its metadata moved into each value's third element, as Loki then answers."""
    body = recorded_body("query_range_streams_sm")
    for item in body["data"]["result"]:
        stream = item["stream"]
        metadata = {key: stream.pop(key) for key in ("pod", "detected_level")}
        item["values"] = [[t, line, {"structuredMetadata": metadata}]
                          for t, line in item["values"]]
    lines = parse_streams(body, keys=KEYS)
    assert [(line.workload, line.pod) for line in lines] == [
        ("orders", "orders-7f6d5c4b3-qwert"), ("orders", "orders-6c5b4a398-zxcvb"),
        ("orders", "orders-7f6d5c4b3-qwert")]
    # A flat object (no categories) is read the same; anything else carries no labels.
    flat = recorded_body("query_range_streams_sm")
    first = flat["data"]["result"][0]
    pod = first["stream"].pop("pod")
    first["values"] = [[first["values"][0][0], first["values"][0][1], {"pod": pod}],
                       [first["values"][1][0], first["values"][1][1], "not an object"]]
    assert [line.pod for line in parse_streams(flat, keys=KEYS)
            if line.line.startswith("level=error")] == [pod, None]


def test_a_failing_leg_fails_the_sample():
    def answer(request: httpx.Request) -> httpx.Response:
        if "|unknown" in request.url.params["query"]:
            return recorded_response("query_parse_error")
        return streams_answer()

    with respx.mock(base_url=LOKI_URL) as loki:
        loki.get(QUERY_RANGE).mock(side_effect=answer)
        with pytest.raises(SourceError) as raised:
            level_client_calls("level", "sample")
    assert raised.value.reason == "http_400"


def test_the_client_refuses_a_rule_it_cannot_follow():
    http = httpx.AsyncClient(base_url=LOKI_URL)
    with pytest.raises(ValueError):
        LokiClient(http=http, keys=KEYS, pattern="x", match="sometimes")
    with pytest.raises(ValueError):
        LokiClient(http=http, keys=KEYS, pattern="x", levels=(), match="level")
    with pytest.raises(TypeError):
        LokiClient(http=http, keys=KEYS, pattern="x", levels="error")


def test_error_levels_and_error_match_settings():
    settings = make_settings()
    assert (settings.error_levels, settings.error_match) == (("error", "critical", "fatal"), "auto")
    assert load_settings({"ERROR_LEVELS": " Error,FATAL,error ", "ERROR_MATCH": "level"},
                         loki_url=LOKI_URL).error_levels == ("error", "fatal")
    for environ, message in [
        ({"ERROR_LEVELS": "err,warning"}, "ERROR_LEVELS: 'err', 'warning': Loki's levels are"),
        ({"ERROR_LEVELS": " , "}, "ERROR_LEVELS: must name at least one level"),
        ({"ERROR_MATCH": "regex"}, "ERROR_MATCH"),
    ]:
        with pytest.raises(ConfigError) as raised:
            load_settings(environ, loki_url=LOKI_URL)
        assert message in str(raised.value)


# --- one metric query for every window of a tick -------------------------------------------------


def test_windows_query_tags_each_leg_with_its_window_and_offsets_past_ones():
    at = datetime(2026, 11, 23, 19, 0, 0, 500_000, tzinfo=UTC)
    windows = [CountWindow("errors", (WORKLOAD,), 120),
               CountWindow.ending("baseline", workloads=None, seconds=3600,
                                  end=at - timedelta(seconds=65, microseconds=1500), at=at,
                                  by="workload")]
    assert windows[1].offset_ms == 65_001  # rounded down: ends at `end` or < 1 ms after it
    match = ErrorMatch(DEFAULT_ERROR_PATTERN, DEFAULT_ERROR_LEVELS)
    query = windows_query(namespace=NAMESPACE, windows=windows, match=match, keys=KEYS)
    legs = query.split(" or ")
    assert len(legs) == 4  # two windows, two legs each
    level, pattern = error_lines_queries(namespace=NAMESPACE, workloads=[WORKLOAD], match=match,
                                         keys=KEYS)
    assert legs[0] == (f"label_replace(sum by (app, pod, detected_level) (count_over_time("
                       f'{level} [120s])), "window", "errors", "app", ".*")')
    assert legs[1].startswith(f"label_replace(sum by (app, pod, detected_level) "
                              f"(count_over_time({pattern} [120s]))")
    assert legs[2].endswith('[3600s] offset 65001ms)), "window", "baseline", "app", ".*")')
    assert "sum by (app, detected_level)" in legs[2] and 'app=~".+"' in legs[2]
    # Loki 2: one leg per window.
    assert len(windows_query(namespace=NAMESPACE, windows=windows,
                             match=ErrorMatch(DEFAULT_ERROR_PATTERN), keys=KEYS)
               .split(" or ")) == 2
    with pytest.raises(ValueError):
        windows_query(namespace=NAMESPACE, windows=[windows[0], windows[0]], match=match,
                      keys=KEYS)
    with pytest.raises(ValueError):
        CountWindow('bad"name', None, 60)


def test_count_windows_is_one_request_at_the_instant_minus_a_nanosecond():
    at = datetime(2026, 11, 23, 19, 0, 30, 123456, tzinfo=UTC)
    body = recorded_body("query_vector_by_detected_level")
    template = body["data"]["result"][0]
    body["data"]["result"] = [
        {**template, "metric": {"app": WORKLOAD, "pod": "p-1", "detected_level": "error",
                                "window": "errors"}, "value": [1, "7"]},
        {**template, "metric": {"app": WORKLOAD, "pod": "p-1", "window": "errors"},
         "value": [1, "2"]},
        {**template, "metric": {"app": WORKLOAD, "detected_level": "error",
                                "window": "baseline"}, "value": [1, "30"]},
        {**template, "metric": {"app": "other", "window": "unasked"}, "value": [1, "5"]},
    ]
    windows = [CountWindow("errors", (WORKLOAD,), 120),
               CountWindow.ending("baseline", workloads=(WORKLOAD,), seconds=600,
                                  end=at - timedelta(minutes=5), at=at, by="workload"),
               CountWindow("quiet", (WORKLOAD,), 60)]

    async def scenario() -> Any:
        async with make_http_client(make_settings()) as http:
            client = LokiClient(http=http, keys=KEYS, pattern=DEFAULT_ERROR_PATTERN,
                                levels=DEFAULT_ERROR_LEVELS, match="level")
            return await client.count_windows(namespace=NAMESPACE, windows=windows, at=at)

    with respx.mock(base_url=LOKI_URL) as loki:
        route = loki.get(QUERY).mock(return_value=httpx.Response(200, json=body))
        answer = asyncio.run(scenario())
    assert route.call_count == 1
    params = route.calls.last.request.url.params
    assert params["time"] == str(nanos(at) - 1)
    assert params["query"] == windows_query(
        namespace=NAMESPACE, windows=windows,
        match=ErrorMatch(DEFAULT_ERROR_PATTERN, DEFAULT_ERROR_LEVELS), keys=KEYS)
    assert answer.counts["errors"].samples == (ErrorSample(WORKLOAD, "p-1", 9.0),)
    assert answer.counts["baseline"] == ErrorCounts(
        namespace=NAMESPACE, window_seconds=600, samples=(ErrorSample(WORKLOAD, None, 30.0),))
    assert answer.counts["quiet"] == ErrorCounts(namespace=NAMESPACE, window_seconds=60)
    assert answer.levels == {"errors": {"error", ""}, "baseline": {"error"}, "quiet": set()}
    assert answer.leg_has_lines("errors", ("",)) and not answer.leg_has_lines("baseline", ("",))
