from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.model import ErrorSignature
from incident_detector.judge.signatures import (
    EXAMPLE_MAX_CHARS,
    FINGERPRINT_MAX_CHARS,
    fingerprint,
    top_signatures,
)

FIXTURES = Path(__file__).parent / "fixtures" / "loki"

NPE_88 = (
    'level=error msg="charge failed" order_id=7531 '
    'err="NullPointerException at PaymentService.charge(PaymentService.java:88)"'
)
NPE_91 = (
    'level=error msg="charge failed" order_id=9547 '
    'err="NullPointerException at PaymentService.charge(PaymentService.java:91)"'
)
BANK_TIMEOUT = 'level=error msg="timeout calling bank" order_id=1112 after=1.5s'


def _fixture_lines(name: str) -> list[tuple[str, str]]:
    """(pod, line) for every log line in a recorded Loki body (push request or query answer)."""
    record = json.loads((FIXTURES / name).read_text())
    answer = record["response"]["json"]
    body = answer["data"] if answer else record["request"]["body"]
    streams = body["result"] if "result" in body else body["streams"]
    return [(stream["stream"]["pod"], value[1]) for stream in streams for value in stream["values"]]


# --- fingerprint: real lines -------------------------------------------------------------------


def test_npe_at_different_line_numbers_share_a_fingerprint() -> None:
    assert fingerprint(NPE_88) == fingerprint(NPE_91)
    assert fingerprint(NPE_88) == (
        'level=error msg="charge failed" order_id=<n> '
        'err="NullPointerException at PaymentService.charge(PaymentService.java:<n>)"'
    )


def test_message_text_tells_signatures_apart() -> None:
    assert fingerprint(NPE_88) != fingerprint(BANK_TIMEOUT)
    assert fingerprint('level=error msg="charge failed"') != fingerprint(
        'level=error msg="timeout calling bank"'
    )
    assert fingerprint('err="NullPointerException at A.b(A.java:1)"') != fingerprint(
        'err="IllegalStateException at A.b(A.java:1)"'
    )


def test_recorded_query_answer_has_one_signature() -> None:
    lines = [line for _, line in _fixture_lines("query_range_streams.json")]
    assert len(lines) == 5
    assert len({fingerprint(line) for line in lines}) == 1


def test_recorded_push_splits_into_success_and_failure() -> None:
    fingerprints = {fingerprint(line) for _, line in _fixture_lines("push_ok.json")}
    assert fingerprints == {
        'level=info msg="charged card" order_id=<n> latency_ms=<n>',
        fingerprint(NPE_88),
    }


def test_variable_tokens_are_masked() -> None:
    cases = {
        "request 3fa85f64-5717-4562-b3fc-2c963f66afa6 failed": "request <uuid> failed",
        "request 3FA85F64-5717-4562-B3FC-2C963F66AFA6 failed": "request <uuid> failed",
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 dropped": "trace <hex> dropped",
        "segfault addr=0x0 pc=0x4a3b2c": "segfault addr=<hex> pc=<hex>",
        "dial tcp 10.244.0.5:5432: connection refused": "dial tcp <ip>: connection refused",
        "from 192.168.1.10 denied": "from <ip> denied",
        "dial tcp [2001:db8::1]:5432 failed": "dial tcp <ip> failed",
        "connect to fe80::1ff:fe23:4567:890a refused": "connect to <ip> refused",
        "listen on ::1 failed": "listen on <ip> failed",
        "at 2026-11-05T10:00:00.123Z boom": "at <ts> boom",
        "at 2026-11-05T10:00:00+01:00 boom": "at <ts> boom",
        "2026/11/05 10:00:00 http: panic serving": "<ts> http: panic serving",
        "due 2026-11-05 missed": "due <ts> missed",
        "at 12:30:45.120 boom": "at <ts> boom",
        "slow query took 150ms": "slow query took <dur>",
        "retry in 1.5s": "retry in <dur>",
        "waited 2m30s": "waited <dur>",
        "gc pause 300µs": "gc pause <dur>",
        "deadline 10s exceeded after 3 attempts": "deadline <dur> exceeded after <n> attempts",
        "mail to bob.smith+ops@example.com bounced": "mail to <email> bounced",
        "balance -12.50 below zero": "balance -<n> below zero",
        "goroutine 42 [running]:": "goroutine <n> [running]:",
        'File "/app/charge.py", line 42, in charge': 'File "/app/charge.py", line <n>, in charge',
        "main.(*Server).charge(0xc000123456, 0x1d) /app/main.go:123 +0x1d": (
            "main.(*Server).charge(<hex>, <hex>) /app/main.go:<n> +<hex>"
        ),
        "req_6874dc9bf7 failed": "req_<hex> failed",
    }
    for line, expected in cases.items():
        assert fingerprint(line) == expected, line


def test_names_with_digits_and_words_are_kept() -> None:
    assert fingerprint("log4j appender failed over http2") == "log4j appender failed over http2"
    assert fingerprint("std::vector overflow in Foo::Bar") == "std::vector overflow in Foo::Bar"
    assert fingerprint("accepted decade cafe") == "accepted decade cafe"


def test_http_status_codes_are_kept() -> None:
    assert fingerprint("upstream status=503 after 3 tries") == "upstream status=503 after <n> tries"
    assert fingerprint("HTTP/1.1 500 Internal Server Error") == "HTTP/1.1 500 Internal Server Error"
    assert fingerprint("exit code 137") == "exit code 137"
    assert fingerprint('{"status":503}') != fingerprint('{"status":400}')
    assert fingerprint("status=503 x") != fingerprint("status=400 x")


def test_identifier_values_become_v_but_words_stay() -> None:
    assert fingerprint('user="alice42" msg="login failed"') == 'user="<v>" msg="login failed"'
    assert fingerprint("pod=payments-api-6874dc9bf7-r66bl level=error") == "pod=<v> level=error"
    assert fingerprint("pod=payments-api-6874dc9bf7-xjn7b level=error") == "pod=<v> level=error"
    assert fingerprint("user='bob7' denied") == "user='<v>' denied"
    assert fingerprint('user="alice" denied') == 'user="alice" denied'
    assert fingerprint("level=error err=EOF") == "level=error err=EOF"
    assert fingerprint('order="ord-7531"') == 'order="ord-<n>"'
    assert fingerprint("can't reach 'db-7' now") == "can't reach 'db-<n>' now"


def test_json_lines_keep_keys_and_messages() -> None:
    line = (
        '{"ts":"2026-11-05T10:00:00.123Z","level":"error","msg":"charge failed",'
        '"order_id":7531,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","build":"b42x"}'
    )
    assert fingerprint(line) == (
        '{"ts":"<ts>","level":"error","msg":"charge failed",'
        '"order_id":<n>,"trace_id":"<hex>","build":"<v>"}'
    )
    assert fingerprint('{"shard2": 1}') == '{"shard2": <n>}'


def test_whitespace_control_characters_and_colours_are_cleaned() -> None:
    assert fingerprint("  \x1b[31mERROR\x1b[0m\tboom\r\n  again ") == "ERROR boom again"
    assert fingerprint("a\x00b\x7fc") == "a b c"
    assert fingerprint("bad \ud800 byte") == "bad \ufffd byte"
    assert fingerprint("") == ""
    assert fingerprint(" \t\n") == ""


def test_fingerprint_is_truncated() -> None:
    assert len(fingerprint("word " * 1000)) <= FINGERPRINT_MAX_CHARS
    assert fingerprint("x" * 10_000_000) == "x" * FINGERPRINT_MAX_CHARS


# --- fingerprint: properties -------------------------------------------------------------------

LOGGY = st.text(
    alphabet=st.sampled_from(list("ab0189fxeE:.-_=\"' /@[]{}()<>msuµhTZ+,;\t\x00\x1b\\nvtdipSC")),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400) | LOGGY)
def test_fingerprint_never_raises_is_bounded_and_idempotent(line: str) -> None:
    result = fingerprint(line)
    assert len(result) <= FINGERPRINT_MAX_CHARS
    assert fingerprint(result) == result
    result.encode("utf-8")  # no lone surrogate survives


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**4))
def test_numbers_never_split_a_signature(order: int, line_no: int) -> None:
    line = f'level=error msg="charge failed" order_id={order} err="NPE at A.java:{line_no}"'
    expected = 'level=error msg="charge failed" order_id=<n> err="NPE at A.java:<n>"'
    assert fingerprint(line) == expected


# --- top_signatures ----------------------------------------------------------------------------


def test_counts_and_orders_the_recorded_errors() -> None:
    errors = [line for _, line in _fixture_lines("push_ok.json") if "level=error" in line]
    signatures = top_signatures(errors)
    assert signatures == (
        ErrorSignature(
            fingerprint=fingerprint(NPE_88), count=len(errors), example=errors[0], new=True
        ),
    )


def test_new_is_false_for_errors_seen_before_the_rollout() -> None:
    lines = [NPE_88, BANK_TIMEOUT, NPE_91, BANK_TIMEOUT, NPE_88]
    signatures = top_signatures(lines, before=[NPE_91.replace("9547", "1")])
    assert [(s.count, s.new) for s in signatures] == [(3, False), (2, True)]
    assert signatures[0].example == NPE_88
    assert signatures[1].example == BANK_TIMEOUT


def test_most_common_first_ties_by_first_occurrence_and_limit() -> None:
    lines = ["c 1", "a", "b", "c 2", "a", "b", "d"]
    assert [s.fingerprint for s in top_signatures(lines)] == ["c <n>", "a", "b"]
    assert [s.fingerprint for s in top_signatures(lines, limit=10)] == ["c <n>", "a", "b", "d"]
    assert [s.fingerprint for s in top_signatures(lines, limit=1)] == ["c <n>"]
    assert top_signatures(lines, limit=0) == ()
    assert top_signatures(lines, limit=-1) == ()
    assert top_signatures([]) == ()


def test_blank_lines_are_not_signatures() -> None:
    assert top_signatures(["", "  ", "\n"]) == ()
    assert top_signatures(["", "boom"]) == (ErrorSignature("boom", 1, "boom", True),)


def test_example_is_the_first_line_truncated() -> None:
    long_line = "E" + "x" * 2000
    (signature,) = top_signatures([long_line, long_line + "y"])
    assert signature.example == long_line[:EXAMPLE_MAX_CHARS]
    assert signature.count == 2
    (signature,) = top_signatures(["bad \udc80 byte"])
    assert signature.example == "bad \ufffd byte"


def test_accepts_generators() -> None:
    signatures = top_signatures((line for line in [NPE_88, NPE_91]), before=iter([BANK_TIMEOUT]))
    assert [(s.count, s.new) for s in signatures] == [(2, True)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(max_size=60) | st.sampled_from([NPE_88, NPE_91, BANK_TIMEOUT, "", "c 1"]),
        max_size=40,
    ),
    st.lists(st.sampled_from([NPE_88, BANK_TIMEOUT, "x"]), max_size=5),
    st.integers(min_value=-2, max_value=6),
)
def test_top_signatures_properties(lines: list[str], before: list[str], limit: int) -> None:
    signatures = top_signatures(lines, before=before, limit=limit)
    assert len(signatures) <= max(limit, 0)
    assert sum(s.count for s in signatures) <= len(lines)
    assert all(s.count >= 1 for s in signatures)
    assert [s.count for s in signatures] == sorted((s.count for s in signatures), reverse=True)
    assert len({s.fingerprint for s in signatures}) == len(signatures)
    assert top_signatures(list(lines), before=list(before), limit=limit) == signatures
    before_fingerprints = {fingerprint(line) for line in before}
    for signature in signatures:
        assert signature.new == (signature.fingerprint not in before_fingerprints)
        assert fingerprint(signature.example) == signature.fingerprint
        assert signature.example in lines or "\ufffd" in signature.example


# --- redaction: fingerprints and examples never carry a credential ---------------------------


def test_a_rotating_secret_does_not_split_a_signature() -> None:
    lines = [
        'level=error msg="db login failed" password=wxyz-ABCD user=app',
        'level=error msg="db login failed" password=efgh-QRST user=app',
        "level=error msg=\"db login failed\" dsn=postgres://app:klmn@db/x",
        "level=error msg=\"db login failed\" dsn=postgres://app:opqr@db/x",
    ]
    before = ['level=error msg="db login failed" password=ijkl-MNOP user=app']
    first, second = top_signatures(lines, before=before)
    assert (first.count, second.count) == (2, 2)
    assert first.fingerprint == 'level=error msg="db login failed" password=[redacted] user=app'
    assert first.new is False  # the same error before the rollout, with another password
    assert second.fingerprint == (
        'level=error msg="db login failed" dsn=postgres://app:[redacted]@db/x'
    )


def test_examples_and_fingerprints_are_redacted() -> None:
    secrets = ["hunter2", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "AKIAIOSFODNN7EXAMPLE",
               "xoxb-1234-5678-abcdefgh", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"]
    lines = [
        f'level=error msg="login failed" password={secrets[0]}',
        f"level=error msg=\"upstream 401\" Authorization: Bearer {secrets[1]}",
        f'{{"level":"error","msg":"s3 denied","key":"{secrets[2]}","slack":"{secrets[3]}"}}',
        f"level=error msg=\"clone failed\" token {secrets[4]}",
    ]
    signatures = top_signatures(lines, limit=10)
    assert len(signatures) == 4
    text = json.dumps([[s.fingerprint, s.example] for s in signatures])
    for secret in secrets:
        assert secret not in text
    assert signatures[0].example == 'level=error msg="login failed" password=[redacted]'


def test_a_credential_cut_by_the_example_limit_is_still_redacted() -> None:
    line = "level=error " + "x" * (EXAMPLE_MAX_CHARS - 30) + " password=" + "s" * 100
    (signature,) = top_signatures([line])
    assert "sss" not in signature.example and len(signature.example) <= EXAMPLE_MAX_CHARS
