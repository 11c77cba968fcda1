"""Credentials in text we did not write ourselves, replaced before the text leaves the process.

Applications log secrets more often than anyone admits: a ``password=`` in a failed login, an
``Authorization`` header in a request dump, a database URL with its password. A log line sampled
as an error signature would carry them verbatim to stdout, Slack, a Kubernetes Event and
``/status``, i.e. to a far wider audience than the logs had. ``redact`` replaces each credential
with ``[redacted]`` and keeps what names it, so the line still reads:

- ``key=value``, ``key: value``, ``"key": "value"`` (also ``'key': 'value'`` and ``\\"key\\"``
  inside a JSON string) whose key names a credential: ``password``, ``passwd``, ``pwd``,
  ``secret``, ``token``, ``apikey``/``api_key``, ``access_key``, ``private_key``,
  ``authorization``, ``cookie``, ``session``, ``passphrase``, ``credential(s)``. Keys are split
  into words (``db_password``, ``X-Api-Key``, ``clientSecret``, ``dbpassword``); the credential
  word must be the last word or be followed only by words that still name the value (``id``,
  ``key``, ``value``, ``hash``, ``new``, a number, ...). So ``session_id``, ``access_key_id`` and
  ``password2`` are credentials, while ``token_count``, ``token_type``, ``session_timeout``,
  ``secret_name`` and plural counters such as ``max_tokens`` are not.
- Values: a quoted string (to its closing quote, or to the end of a cut line; a single-quoted
  one at most to the end of its line), a flat ``[...]`` list or ``{...}`` object (in a nested
  one, each credential key on its own), or an unquoted run up to white space, a ``"``, or
  ``&name=`` (the next query parameter); closing punctuation at its end stays. An
  ``Authorization`` value keeps its scheme (``Authorization: Bearer [redacted]``).
- Only for ``key: value`` with neither key nor value quoted, which is also how prose reads
  (``invalid token: expired``), is a value that looks like a word (letters only, under 16, not
  a run of hex digits) kept.
- ``Cookie:``/``Set-Cookie:`` headers: the whole value, every cookie.
- ``Bearer``/``Basic`` credentials anywhere (a plain word after them is kept: "Bearer token").
- URLs with a user and password: ``postgres://app:[redacted]@db:5432``.
- Token shapes, whatever their key: JWTs, AWS access key ids (``AKIA``/``ASIA``), Google API
  keys, Slack tokens (``xoxb-``, ``xoxp-``, ... ``xapp-``) and webhook paths
  (``hooks.slack.com/services/[redacted]``), GitHub tokens (``ghp_``, ``gho_``, ``ghs_``,
  ``ghu_``, ``ghr_``, ``github_pat_``).
- PEM private-key blocks: the body between ``BEGIN`` and ``END`` (to the end of the text when
  the END line was cut off).

Known over-redaction, accepted: ``PWD=/srv/app`` (a working directory; ``pwd`` is also a common
password key). Known gaps: a secret with no recognisable key or shape (``login failed for
hunter2``), a bare ``https://token@host`` userinfo without a password, ``password: word`` in
the unquoted colon form.

``redact`` is pure, never raises, and is idempotent: ``redact(redact(t)) == redact(t)``.
"""

from __future__ import annotations

import re
from functools import lru_cache

REDACTED = "[redacted]"

# Single words naming a credential; a key word may end with one (dbpassword, csrftoken).
_CREDENTIAL_WORDS = (
    "password", "passwd", "pwd", "secret", "token", "apikey", "accesskey", "privatekey",
    "authorization", "cookie", "session", "passphrase", "credential", "credentials",
)
# Two words naming a credential together (api_key, X-Api-Key, accessKey).
_CREDENTIAL_PAIRS = (("api", "key"), ("access", "key"), ("private", "key"))
# Words after the credential word that still name its value (session_id, password_hash).
_VALUE_WORDS = frozenset({
    "id", "key", "value", "val", "str", "string", "hash", "b64", "base64", "hex", "data", "raw",
    "header", "text", "plain", "plaintext", "cleartext", "enc", "encrypted", "new", "old",
    "confirm", "confirmation", "current", "prev", "previous",
})
# An authorization value starts with one of these schemes, which stays readable.
_SCHEMES = r"bearer|basic|token|digest|negotiate|ntlm|bot|apikey"

# Every credential key holds one of these (lower-cased); a line without any needs no key scan.
_CREDENTIAL_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "cookie", "session",
                     "credential")
# Every token shape starts with one of these.
_TOKEN_SHAPE_HINTS = ("AKIA", "ASIA", "AIza", "xox", "xapp-", "ghp_", "gho_", "ghs_", "ghu_",
                      "ghr_", "github_pat_", "eyJ")
_KEY_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

_PEM_BLOCK = re.compile(
    r"(?P<begin>-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----)"
    r"[\s\S]*?(?:(?P<end>-----END (?P=label)-----)|\Z)"
)
# The password is everything up to the last "@" before the path, so an "@" inside it is covered.
_URL_USERINFO = re.compile(
    r"(?P<prefix>(?<![A-Za-z])[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:\"]*):(?P<password>[^\s/?#\"]*)@"
)
_SLACK_WEBHOOK = re.compile(
    r"(?P<prefix>hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+"
)
# Lookbehinds name letters, not digits: the fingerprint masks a number glued in front of a
# word ("1234AKIA..." becomes "<n>AKIA..."), and redacting the result must change nothing.
_TOKEN_SHAPE = re.compile(
    r"""
    (?<![A-Za-z])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])       # AWS access key id
  | (?<![A-Za-z])AIza[0-9A-Za-z_-]{35}                          # Google API key
  | (?<![A-Za-z])(?:xox[abcdeprs]|xapp)-[A-Za-z0-9-]{6,}         # Slack tokens
  | (?<![A-Za-z_])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})  # GitHub
  | (?<![A-Za-z_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+)*  # JWT
    """,
    re.VERBOSE,
)
# Only when the value looks like cookies (name=...), so that "cookie: missing" stays.
_COOKIE_HEADER = re.compile(
    r"(?P<prefix>(?<![A-Za-z_.-])(?:set-)?cookie[ \t]*:[ \t]*)(?=[^\s=;\"]+=)[^\r\n\"]+",
    re.IGNORECASE,
)
# A key and its separator; the value is matched only after a credential key, so that the value
# of any other key (msg="login failed password=...") is still searched.
_KEY_AT = r"""
    (?P<kq>\\?["'])?(?P<key>[\w.-]+)(?(kq)(?P=kq))
    (?P<sep>[ \t]*(?:=>|=|:(?!//))[ \t]*)
"""
# An unquoted key starts a word; a quote starts a new token wherever it stands.
_KEY = re.compile(r"(?:(?<![\w.\-\\])|(?=\\?[\"']))" + _KEY_AT, re.VERBOSE)
# Right after a value that was replaced, whatever the value ended with: the next pass sees
# "[redacted]" there, and must find the same keys.
_KEY_AFTER_VALUE = re.compile(_KEY_AT, re.VERBOSE)
# edq: a string inside a JSON string (\"...\"), read in units of the outer escaping, so that an
# escaped quote or backslash inside it (\\\" and \\\\) does not end it early.
_VALUE_TEMPLATE = rf"""
    (?:(?P<scheme>(?i:{_SCHEMES}))(?P<gap>[ \t]+))?
    (?P<value>
        (?P<red>\[redacted\])
      | (?P<edq>\\"(?:[^"\\]|\\[^"\\]|\\\\[^"\\]|\\\\\\\\|\\\\\\")*(?:\\"|\Z)?)
      | (?P<dq>"(?:[^"\\]|\\[\s\S]?)*"?)
      | (?P<sq>'[^'\n]*(?:'|(?=\n)|\Z))
      | (?P<arr>\[[^\[\]{{}}\n]*\]|\{{[^\[\]{{}}\n]*\}})
      | (?P<bare>BARE_START(?:[^\s"&]|&(?![\w.-]+=))*[^\s"&,;)\]}}'.:!?])
    )
"""
_VALUE = re.compile(_VALUE_TEMPLATE.replace("BARE_START", ""), re.VERBOSE)
# After a quoted key (JSON, a Python dict) an object or a nested list is structure, not a value.
_VALUE_AFTER_QUOTED_KEY = re.compile(_VALUE_TEMPLATE.replace("BARE_START", r"(?![{\[])"),
                                     re.VERBOSE)
# The credential in a lookahead: a word kept after "Basic" may itself be "Basic" (or "Bearer").
_BEARER_BASIC = re.compile(
    r"(?<![A-Za-z_-])(?:bearer|basic)[ \t]+"
    r"(?=(?P<credential>[A-Za-z0-9\-._~+/]*[A-Za-z0-9\-_~+/]=*))",
    re.IGNORECASE,
)
# What follows "key=" when the "=" assigns a value instead of padding a base64 credential.
_BEFORE_VALUE = re.compile(r"[^\s\"',;)\]}]")
_QUOTED_SCHEME = re.compile(rf"(?i:{_SCHEMES})[ \t]+(?=\S)")
# An unquoted value that is itself key=value, not a base64 credential ending in "=".
_ASSIGNMENT = re.compile(r"=[^=]")
_WORD = re.compile(r"(?:[A-Z]?[a-z]+|[A-Z]+)\Z")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8,}\Z")


def _is_word(text: str) -> bool:
    """A plain word of prose (kept after ``key:``, ``Bearer``), not something secret-shaped."""
    return len(text) < 16 and bool(_WORD.match(text)) and not _HEX_RUN.match(text)


def key_words(key: str) -> list[str]:
    """``X-Api-Key`` -> ``["x", "api", "key"]``; ``clientSecret2`` -> ``["client", "secret",
    "2"]``."""
    return [word.lower() for word in _KEY_WORD.findall(key)]


def _names_value(words: list[str]) -> bool:
    return all(word in _VALUE_WORDS or word.isdigit() for word in words)


def _credential_word(word: str) -> bool:
    if any(word.endswith(term) for term in _CREDENTIAL_WORDS):
        return True
    # A value word glued on: sessionid, jsessionid, tokenvalue.
    return any(word.endswith(suffix) and word[: -len(suffix)].endswith(_CREDENTIAL_WORDS)
               for suffix in _VALUE_WORDS if len(word) > len(suffix))


@lru_cache(maxsize=4096)
def is_credential_key(key: str) -> bool:
    """Whether a key (``db_password``, ``X-Api-Key``, ``session_id``) names a credential.

    The credential word must be the key's last word, or be followed only by words that still
    name its value (see the module docstring): ``token_count`` is a count, not a token.
    """
    words = key_words(key)
    for index, word in enumerate(words):
        if _credential_word(word) and _names_value(words[index + 1:]):
            return True
        pair = tuple(words[index:index + 2])
        if pair in _CREDENTIAL_PAIRS and _names_value(words[index + 2:]):
            return True
    return False


def _is_authorization_key(key: str) -> bool:
    return any(word.endswith(("authorization", "auth")) for word in key_words(key))


def _keeps_word(key: re.Match[str], value: str) -> bool:
    """Prose, not an assignment: ``invalid token: expired`` (unquoted key, colon, a word)."""
    return key.group("kq") is None and ":" in key.group("sep") and _is_word(value)


def _pem(match: re.Match[str]) -> str:
    return match.group("begin") + REDACTED + (match.group("end") or "")


def _redacted_quoted(name: str, text: str, *, keep_scheme: bool) -> str:
    quote = '\\"' if name == "edq" else text[0]
    inner = text[len(quote):]
    closed = len(inner) >= len(quote) and inner.endswith(quote)
    if closed:
        inner = inner[: -len(quote)]
    kept = ""
    scheme = _QUOTED_SCHEME.match(inner)
    if scheme and keep_scheme:  # "Authorization": "Bearer abc"
        kept = scheme.group(0)
    return f"{quote}{kept}{REDACTED}{quote if closed else ''}"


def _redact_value(key: re.Match[str], value: re.Match[str]) -> tuple[str, int]:
    """The replacement of a credential key's value, and where scanning goes on."""
    name = key.group("key")
    scheme = value.group("scheme")
    if scheme is not None:
        # password=basic ..., authorization=Token user=bob: the scheme word is the value.
        credential = value.group("bare")
        if _is_authorization_key(name) and not (credential and _ASSIGNMENT.search(credential)):
            return f"{scheme}{value.group('gap')}{REDACTED}", value.end()
        # Not a scheme after all ("password: token expired"): the word is the value, and what
        # follows it is ordinary text, searched again.
        word = scheme if _keeps_word(key, scheme) else REDACTED
        return word + value.group("gap"), value.start("value")
    if value.group("red") is not None:
        return value.group(0), value.end()
    bare = value.group("bare")
    if bare is not None:
        return (bare if _keeps_word(key, bare) else REDACTED), value.end()
    for quoted in ("edq", "dq", "sq"):
        text = value.group(quoted)
        if text is not None:
            keep_scheme = _is_authorization_key(name)
            return _redacted_quoted(quoted, text, keep_scheme=keep_scheme), value.end()
    return REDACTED, value.end()  # a flat [...] list or {...} object


def _redact_pairs(text: str) -> str:
    parts: list[str] = []
    done = 0  # text[:done] is in parts
    at = 0  # where the next key is searched
    replaced = False
    while (key := (replaced and _KEY_AFTER_VALUE.match(text, at)) or _KEY.search(text, at)):
        at, replaced = key.end(), False
        if not is_credential_key(key.group("key")):
            continue
        pattern = _VALUE if key.group("kq") is None else _VALUE_AFTER_QUOTED_KEY
        value = pattern.match(text, key.end())
        if value is None:
            continue
        replacement, at = _redact_value(key, value)
        parts.append(text[done:key.end()])
        parts.append(replacement)
        done, replaced = at, True
    parts.append(text[done:])
    return "".join(parts)


def _redact_bearer_basic(text: str) -> str:
    parts: list[str] = []
    done = 0
    for match in _BEARER_BASIC.finditer(text):
        credential = match.group("credential")
        if match.start() < done or _is_word(credential):
            continue  # inside a credential just redacted; "Bearer token", "basic auth"
        if _BEFORE_VALUE.match(text, match.end() + len(credential)) and credential.endswith("="):
            continue  # "authorization=BEARER user=bob": a key=value, left to the pairs' pass
        parts += [text[done:match.end()], REDACTED]
        done = match.end() + len(credential)
    parts.append(text[done:])
    return "".join(parts)


def _holds(text: str, needles: tuple[str, ...]) -> bool:
    return any(needle in text for needle in needles)


def may_hold_credentials(text: str) -> bool:
    """False when ``redact`` would certainly leave ``text`` as it is (a cheap test)."""
    lower = text.lower()
    return (_holds(text, ("PRIVATE KEY", "://", "hooks.slack.com/", *_TOKEN_SHAPE_HINTS))
            or _holds(lower, ("bearer", "basic", *_CREDENTIAL_HINTS)))


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[redacted]`` (see the module
    docstring); pure, never raises, idempotent."""
    if not isinstance(text, str):
        text = str(text)
    # A replacement can make a match for a pass that ran before it: "[redacted]" has no white
    # space and is a word boundary, so "postgres://u:password='token: x'@h" is a URL with a
    # password once the quoted value is gone, and "AKIA...xoxb-abc" an AWS key id once the
    # Slack token is. So the passes run again until they change nothing; a round that changes
    # the text replaces characters that were not "[redacted]" yet, so the rounds end.
    for _ in range(_MAX_ROUNDS):
        redacted = _redact_once(text)
        if redacted == text:
            break
        text = redacted
    return text


# Two rounds in every case seen; the bound only keeps a pathological text from looping long.
_MAX_ROUNDS = 8


def _redact_once(text: str) -> str:
    # Each pass runs only when the text holds what it looks for: plain substring tests are
    # many times cheaper than Python's regex engine, and most log lines hold none of them.
    if "PRIVATE KEY" in text:
        text = _PEM_BLOCK.sub(_pem, text)
    if "://" in text:
        text = _URL_USERINFO.sub(rf"\g<prefix>:{REDACTED}@", text)
    if "hooks.slack.com/" in text:
        text = _SLACK_WEBHOOK.sub(rf"\g<prefix>{REDACTED}", text)
    if _holds(text, _TOKEN_SHAPE_HINTS):
        text = _TOKEN_SHAPE.sub(REDACTED, text)
    lower = text.lower()
    if "cookie" in lower:
        text = _COOKIE_HEADER.sub(rf"\g<prefix>{REDACTED}", text)
    if "bearer" in lower or "basic" in lower:
        text = _redact_bearer_basic(text)
    if _holds(lower, _CREDENTIAL_HINTS):
        text = _redact_pairs(text)
    return text
