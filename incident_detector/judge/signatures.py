"""Top error signatures: which errors a bad revision writes, and which of them are new.

An error spike alone says "something broke". The lines behind it say what: grouping them by a
*fingerprint* (the line with its variable parts masked) turns hundreds of lines into two or three
signatures, and comparing them with a sample taken before the rollout says which ones the new
revision brought.

The fingerprint rule, in order:

1. Clean: ANSI colour codes are dropped, other control characters become spaces, lone
   surrogates become U+FFFD, runs of whitespace collapse to one space. Then redact
   (``redact.redact``): a credential becomes ``[redacted]`` *before* anything is masked or
   counted, so a rotating password or token does not split a signature, and no fingerprint or
   example carries one.
2. Mask variable tokens wherever they stand, quoted or not: ISO timestamps, dates and clock
   times -> ``<ts>``, UUIDs -> ``<uuid>``, e-mail addresses -> ``<email>``, IPv4/IPv6 addresses
   with an optional port -> ``<ip>``, ``0x...`` and runs of 8+ hex digits that hold a letter
   -> ``<hex>``, durations (``150ms``, ``1.5s``, ``2m30s``, ``300µs``) -> ``<dur>``, other
   numbers -> ``<n>``.
   A number glued to the end of a letter is part of a name and stays (``log4j``, ``sha256``,
   ``http2``). An HTTP status code after ``status``/``code``/``HTTP`` stays too: a 503 and a
   400 are different failures.
3. Values -- a quoted string that is not a JSON key, or the unquoted value of ``key=value`` --
   stay readable, because the message text (``msg="charge failed"`` versus
   ``msg="timeout calling bank"``) is what tells signatures apart. Only a value that is a single
   token and still holds a digit after step 2 (letters and digits mixed: a pod name, a build
   id, ``user42``) is an identifier rather than text, and becomes ``<v>``.

So ``err="NullPointerException at PaymentService.charge(PaymentService.java:88)"`` and the same
line at ``:91`` share the fingerprint ``...(PaymentService.java:<n>)"``. The result is at most
300 characters, and applying the rule to a fingerprint gives the same fingerprint back (when
something credential-like is left, the rule is applied again until nothing changes, at most three
times).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from incident_detector.model import ErrorSignature
from incident_detector.redact import may_hold_credentials, redact

FINGERPRINT_MAX_CHARS = 300
EXAMPLE_MAX_CHARS = 500
FINGERPRINT_ROUNDS = 3
# A fingerprint is at most 300 characters; masking long tokens shrinks a line, so a few
# thousand characters of input are plenty, and they bound the regex work on a huge line.
INPUT_MAX_CHARS = 4096

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s+")
# In a str, a code point in this range is always a lone surrogate (pairs are already combined).
_SURROGATE = re.compile("[\ud800-\udfff]")

# "Not glued to a letter or digit" (an underscore does not glue: req_6874dc9bf7 is masked).
_START = r"(?<![^\W_])"
_END = r"(?![^\W_])"
_TIME = r"\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
_H4 = r"[0-9a-f]{1,4}"
# Full form, or compressed around "::"; not inside a C++/Ruby name (std::vector, Foo::Bar).
# "<" and ">" count as glue too, so that a masked neighbour does not create a new match.
_H4S = rf"{_H4}(?::{_H4}){{0,6}}"
_IPV6 = (
    rf"\[?(?<![\w:>])(?:{_H4}(?::{_H4}){{7}}|(?:{_H4S})?::{_H4S}|{_H4S}::)"
    rf"(?![\w:<])(?:\]:\d{{1,5}}|\])?"
)
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?!\.?\d)"
_STATUS_KEY = r"(?:status|status_?code|code|http(?:/[\d.]+)?)"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# Alternatives are tried in this order at each position, so the more specific come first.
# Every one begins where a token may begin ({_START}): checked once, before the alternatives,
# so that the many positions inside words are passed over at once (most of a line's cost).
_TOKEN = re.compile(
    rf"""
    {_START}(?:
    (?P<status>{_STATUS_KEY}["']?\s*[=:]?\s*["']?[1-5]\d\d(?!\d))
  | (?P<ts>(?:\d{{4}}[-/]\d{{2}}[-/]\d{{2}}(?:[T ]{_TIME})?|{_TIME}(?![\d:])))
  | (?P<uuid>{_UUID}{_END})
  | (?P<email>[\w.+-]++@[\w-]+(?:\.[\w-]+)+)
  | (?P<ip>(?:{_IPV4}|{_IPV6}))
  | (?P<hex>(?:0x[0-9a-f]+|(?=\d*[a-f])[0-9a-f]{{8,}}){_END})
  | (?P<dur>(?:\d+(?:\.\d+)?(?:ns|us|µs|μs|ms|s|m|h))+{_END})
  | (?P<n>\d+(?:\.\d+)?)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_PLACEHOLDER = {name: f"<{name}>" for name in ("ts", "uuid", "email", "ip", "hex", "dur", "n")}

# A quoted string (a JSON key when a colon follows), or the unquoted value of key=value.
_VALUE = re.compile(
    r"""
    (?P<dq>"(?:[^"\\]|\\.)*")(?P<dq_key>\s*:)?
  | (?P<sq>(?<![^\W_])'[^'\\]*'(?![^\W_]))(?P<sq_key>\s*:)?
  | (?<=[\w.-]=)(?P<bare>[^\s"',;()\[\]{}]+)
    """,
    re.VERBOSE,
)
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")


def _mask_token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "status" or kind is None:
        return match.group(0)
    return _PLACEHOLDER[kind]


def _is_identifier(value: str) -> bool:
    # One token mixing letters and digits after masking: a name, not words of a message.
    # (Digits alone here can only be a kept status code.)
    return bool(value) and " " not in value and bool(_DIGIT.search(value) and _LETTER.search(value))


def _mask_value(match: re.Match[str]) -> str:
    if match.group("dq_key") or match.group("sq_key"):
        return match.group(0)
    if match.group("bare") is not None:
        return "<v>" if _is_identifier(match.group("bare")) else match.group("bare")
    quoted = match.group("dq") or match.group("sq")
    return f"{quoted[0]}<v>{quoted[0]}" if _is_identifier(quoted[1:-1]) else quoted


def _clean(text: str) -> str:
    # Lone surrogates (from a lenient decoder) would break any UTF-8 encoding further on.
    text = _CONTROL.sub(" ", _ANSI_ESCAPE.sub("", _SURROGATE.sub("\ufffd", text)))
    return _WHITESPACE.sub(" ", text).strip()


def _fingerprint_once(text: str) -> str:
    # Redacted as the example is (raw), and again once cleaned: a credential that only shows
    # once colour codes are gone is caught too, and an example fingerprints like its line.
    text = redact(_clean(redact(text)))
    text = _TOKEN.sub(_mask_token, text)
    text = _VALUE.sub(_mask_value, text)
    return text[:FINGERPRINT_MAX_CHARS].rstrip()


def fingerprint(line: str) -> str:
    """The line with its variable parts masked (see the module docstring); never raises."""
    return _fingerprint(str(line)[:INPUT_MAX_CHARS])


# A burst of errors is mostly the same few lines: the triage and the samples fingerprint each
# distinct line once. Bounded: at most FINGERPRINT_CACHE lines of at most INPUT_MAX_CHARS.
FINGERPRINT_CACHE = 1024


@functools.lru_cache(maxsize=FINGERPRINT_CACHE)
def _fingerprint(line: str) -> str:
    text = _fingerprint_once(line)
    if not may_hold_credentials(text):
        return text
    # A mask can change what a credential's neighbour looks like (a glued number, a quote next
    # to a masked e-mail): the rule is applied until nothing changes, so that a fingerprint is
    # its own fingerprint.
    for _ in range(FINGERPRINT_ROUNDS - 1):
        again = _fingerprint_once(text)
        if again == text:
            break
        text = again
    return text


def _example(line: str) -> str:
    # Redacted before it is cut, so that a credential cut in half is still recognised.
    return redact(_SURROGATE.sub("\ufffd", str(line)[:INPUT_MAX_CHARS]))[:EXAMPLE_MAX_CHARS]


def top_signatures(
    lines: Iterable[str], *, before: Iterable[str] = (), limit: int = 3
) -> tuple[ErrorSignature, ...]:
    """The ``limit`` most common fingerprints of ``lines``, most common first.

    Ties go to the fingerprint seen first. ``example`` is the first line seen with that
    fingerprint, redacted; ``new`` says the fingerprint is absent from ``before`` (lines sampled
    before the rollout). Lines that are blank once cleaned are not counted.
    """
    if limit <= 0:
        return ()
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for line in lines:
        key = fingerprint(line)
        if not key:
            continue
        if key not in counts:
            counts[key] = 0
            examples[key] = _example(line)
        counts[key] += 1
    # dicts keep insertion order and sorted() is stable: equal counts stay in first-seen order.
    ranked = sorted(counts, key=lambda key: -counts[key])[:limit]
    seen_before = {fingerprint(line) for line in before}
    return tuple(
        ErrorSignature(
            fingerprint=key, count=counts[key], example=examples[key], new=key not in seen_before
        )
        for key in ranked
    )
