"""Stable placeholders: what must not reach an LLM never survives, and the same value always
gets the same placeholder within one analysis."""

from __future__ import annotations

import re

from hypothesis import assume, given
from hypothesis import strategies as st

from incident_detector.judge.placeholders import PLACEHOLDER, Redactor

# Secret-shaped canaries: random letters and digits, long enough never to read as a word.
canaries = st.from_regex(r"\A[A-Za-z0-9]{12,30}[0-9][A-Za-z]\Z")
surroundings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
ipv4s = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6s = st.ip_addresses(v=6).map(lambda a: a.compressed)

CONTEXTS = (
    "password={c}", "db_password: {c}", '"api_key": "{c}"', "Authorization: Bearer {c}",
    "token={c}&page=2", "postgres://app:{c}@db:5432/payments", "Cookie: session={c}; theme=dark",
    "clientSecret='{c}'", "X-Api-Key: {c}", "passwd {c}".replace(" ", "="),
)


def redacted(text: str) -> str:
    return Redactor().redact(text)


@given(canary=canaries, context=st.sampled_from(CONTEXTS), before=surroundings,
       after=surroundings)
def test_a_credential_never_survives_wherever_it_is_embedded(canary, context, before, after):
    assume(canary not in before + after)
    text = f"{before} {context.format(c=canary)} {after}"
    assert canary not in redacted(text)


@given(local=st.from_regex(r"\A[a-z][a-z0-9._-]{2,20}\Z"), before=surroundings, after=surroundings)
def test_an_email_never_survives(local, before, after):
    email = f"{local}@corp-mail.example.com"
    assume(email not in before + after)
    assert email not in redacted(f"{before} {email} {after}")


@given(address=ipv4s | ipv6s, before=surroundings, after=surroundings)
def test_an_ip_address_never_survives(address, before, after):
    assume(address not in before + after and len(address) >= 7)
    out = redacted(f"{before} client {address} closed {after}")
    assert f" {address} " not in out


@given(token=st.from_regex(r"\A[0-9a-f]{40}\Z") | st.from_regex(r"\A[A-Za-z0-9_-]{40}\Z"),
       before=surroundings, after=surroundings)
def test_a_long_random_run_never_survives(token, before, after):
    assume(any(c.isdigit() for c in token) and any(c.isalpha() for c in token))
    assume(token not in before + after)
    assert token not in redacted(f"{before} trace={token} {after} {token}")


@given(canary=canaries, context=st.sampled_from(CONTEXTS), filler=surroundings)
def test_the_same_value_gets_the_same_placeholder(canary, context, filler):
    assume(canary not in filler)
    redactor = Redactor()
    first = redactor.redact(f"{context.format(c=canary)}\n{filler}")
    second = redactor.redact(f"retry: {context.format(c=canary)}")
    names = [name for name, value in redactor.mapping.items() if canary in value]
    assert len(names) == 1
    assert names[0] in first and names[0] in second


def test_placeholders_are_numbered_per_kind_in_order_of_appearance():
    redactor = Redactor()
    out = redactor.redact("login for ann@example.com from 10.1.2.3 failed password=Zq81xP0wLm3 "
                          "then bob@example.com from 10.1.2.3 and 2001:db8::7")
    assert out == ("login for <EMAIL_1> from <IP_1> failed password=<SECRET_1> "
                   "then <EMAIL_2> from <IP_1> and <IP_2>")
    assert redactor.mapping == {"<EMAIL_1>": "ann@example.com", "<IP_1>": "10.1.2.3",
                                "<SECRET_1>": "Zq81xP0wLm3", "<EMAIL_2>": "bob@example.com",
                                "<IP_2>": "2001:db8::7"}


def test_each_analysis_numbers_afresh():
    assert Redactor().redact("a@b.example") == Redactor().redact("c@d.example") == "<EMAIL_1>"


def test_token_shapes_and_keys_of_redact_are_reused():
    cases = {
        "key AKIAIOSFODNN7EXAMPLE used": "key <SECRET_1> used",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_4bc": "jwt <SECRET_1>",
        "post to https://hooks.slack.com/services/T0/B0/XXXX":
            "post to https://hooks.slack.com/services/<SECRET_1>",
        "Authorization: Basic dXNlcjpwYXNzd29yZA==": "Authorization: Basic <SECRET_1>",
        "digest sha256:" + "ab" * 32: "digest sha256:<TOKEN_1>",
    }
    for text, expected in cases.items():
        assert redacted(text) == expected, text


def test_ordinary_text_is_left_alone():
    for text in ("GET /api/v1/orders 500 in 12:30:45", "token_count=5 session_timeout=30",
                 "payments-api-6874dc9bf7-x2k9p CrashLoopBackOff", "version 1.5.0 -> 1.5.1",
                 "invalid token: expired", "std::vector<int> overflow",
                 "/var/lib/incident-detector/state",
                 "GET /api/v1/orders/123456/items/7890abc/refunds failed"):
        assert redacted(text) == text, text


def test_placeholders_are_not_replaced_again_and_the_mapping_stays_out_of_the_repr():
    redactor = Redactor()
    once = redactor.redact("password=Zq81xP0wLm3 from 10.0.0.1")
    assert redactor.redact(once) == once
    assert "Zq81xP0wLm3" not in repr(redactor) and "10.0.0.1" not in repr(redactor)
    assert all(PLACEHOLDER.fullmatch(name) for name in redactor.mapping)


def test_json_values_are_redacted_and_credential_keys_hide_their_whole_value():
    redactor = Redactor()
    out = redactor.redact_value({"labels": {"instance": "10.0.0.9:9090", "token": "plainword",
                                            "api_key": 12345},
                                 "examples": ["mail ann@example.com", 3, None]})
    assert out == {"labels": {"instance": "<IP_1>:9090", "token": "<SECRET_1>",
                              "api_key": "<SECRET_2>"},
                   "examples": ["mail <EMAIL_1>", 3, None]}


def test_text_that_already_holds_redacts_marker_still_loses_its_secret():
    out = redacted("[redacted] password=Zq81xP0wLm3")
    assert "Zq81xP0wLm3" not in out and re.search(r"<SECRET_\d+>", out)
