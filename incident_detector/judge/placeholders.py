"""Stable placeholders for what must not leave the cluster: the redaction of the evidence an LLM
reads.

``redact.redact`` replaces a credential by ``[redacted]``: right for a Slack message, but an
analysis loses the thread when two lines name the same database password, client address or
user. A ``Redactor`` replaces each distinct value by a numbered placeholder instead, the same
placeholder for the same value within one analysis (one ``Redactor``):

- ``<SECRET_n>``: everything ``redact.redact`` recognises (``key=value`` credentials, cookies,
  ``Bearer``/``Basic`` credentials, the password of a URL, JWTs and provider token shapes,
  Slack webhook paths, PEM private keys): one definition of a credential for the whole project;
- ``<EMAIL_n>``: e-mail addresses;
- ``<IP_n>``: IPv4 and IPv6 addresses (``::1`` and ``[fe80::1]`` too, not ``12:30:45``);
- ``<TOKEN_n>``: long runs that look random, whatever their key: 32 or more hex digits, or 32
  or more base64/base64url characters mixing letters and digits (not a path: a run with
  slashes counts only when its segments are long). Some are only ids (a trace id,
  an image digest); they are replaced all the same, and stay comparable by their placeholder.

``Redactor.mapping`` (placeholder -> original) stays in the process: it is never logged, sent,
or put in a repr. Placeholders are numbered per kind in order of first appearance.

What gets through: what ``redact.redact`` lets through (a secret with no recognisable key or
shape, see its docstring), e.g. ``login failed for hunter2``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..redact import REDACTED, is_credential_key, redact

SECRET, EMAIL, IP, TOKEN = "SECRET", "EMAIL", "IP", "TOKEN"
# A placeholder, as written and as recognised (never replaced again).
PLACEHOLDER = re.compile(r"<(?:SECRET|EMAIL|IP|TOKEN)_\d+>")
# A code point of Unicode's private use area: ``redact``'s marker, made one character that no
# other text holds, so that the redacted text splits at the values' places.
_MARK = "\uf8ff"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}(?![\w-])"
)
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?:/\d{1,2})?(?![\w]|\.\d)"
)
# IPv6: eight groups, or fewer with one "::" (which may stand at either end). A candidate is
# checked by ``_is_ipv6`` before it is replaced, so that times (12:30:45) and MACs stay.
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"
                             r"(?:%[\w]+)?(?![\w:])")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{32,}(?![0-9A-Za-z])")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")


def _is_ipv6(text: str) -> bool:
    import ipaddress

    address = text.split("%", 1)[0]
    if address.count("::") > 1 or ("::" not in address and address.count(":") != 7):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _looks_random(text: str) -> bool:
    """A base64 run, not a long word or path: letters and digits mixed."""
    body = text.rstrip("=")
    if "/" in body and len(body) / (body.count("/") + 1) < 16:
        return False  # a path (/api/v1/orders/123/items): short segments between slashes
    return (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)
            and not body.replace("-", "").replace("_", "").isalpha())


class Redactor:
    """Replaces what must not leave the process by stable placeholders (one per analysis)."""

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        # The mapping holds the very values that were hidden.
        return f"Redactor({len(self._by_placeholder)} placeholders)"

    @property
    def mapping(self) -> dict[str, str]:
        """Placeholder -> original value: local only, never logged or sent."""
        return dict(self._by_placeholder)

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder of ``value``: the one it already has, or the next of its kind."""
        known = self._by_value.get((kind, value))
        if known is not None:
            return known
        self._counts[kind] = self._counts.get(kind, 0) + 1
        name = f"<{kind}_{self._counts[kind]}>"
        self._by_value[(kind, value)] = name
        self._by_placeholder[name] = value
        return name

    def redact(self, text: str) -> str:
        """``text`` with every secret, e-mail, IP address and random-looking run replaced."""
        if not isinstance(text, str):
            text = str(text)
        text = text.replace(_MARK, "")
        text = self._credentials(text)
        text = self._sub(_EMAIL, EMAIL, text)
        text = self._sub(_IPV4, IP, text)
        text = self._sub(_IPV6_CANDIDATE, IP, text, accept=_is_ipv6)
        text = self._sub(_HEX_RUN, TOKEN, text)
        text = self._sub(_B64_RUN, TOKEN, text, accept=_looks_random)
        return text

    def redact_value(self, value: Any, *, key: str | None = None) -> Any:
        """A JSON value with every string redacted; a value under a credential key (``token``,
        ``db_password``) is replaced whole, whatever it looks like. Keys are kept."""
        if key is not None and is_credential_key(key) and value not in (None, "", [], {}):
            if isinstance(value, (dict, list)):
                return self.placeholder(SECRET, repr(value))
            return self.placeholder(SECRET, str(value))
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v, key=str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(item) for item in value]
        return value

    # Passes -------------------------------------------------------------------------------

    def _credentials(self, text: str) -> str:
        """``redact.redact``'s credentials, each ``[redacted]`` turned into the placeholder of
        the value it stood for.

        ``redact`` keeps everything around a value, so the redacted text is the original with
        values cut out: the text between two markers is found again in the original, left to
        right, and what lies between is the value. Linear in the text's length. A piece of
        text that also occurs inside the value before it (rare: a short piece) can pair a
        value wrongly: its placeholder is then not the same as elsewhere, but the output is
        built from ``redact``'s text, so nothing is ever let through.
        """
        redacted = redact(text)
        if redacted == text:
            return text
        pieces = redacted.replace(REDACTED, _MARK).split(_MARK)
        if REDACTED in text or not text.startswith(pieces[0]) \
                or not text.endswith(pieces[-1]):
            # The original already held the marker's text (or redact rewrote more than the
            # values): every value still gets a placeholder, only not a stable one.
            return _MARK.join(pieces).replace(_MARK, self.placeholder(SECRET, f"{id(text)}"))
        out = [pieces[0]]
        at = len(pieces[0])
        end = len(text) - len(pieces[-1])
        for index, piece in enumerate(pieces[1:], start=1):
            last = index == len(pieces) - 1
            found = end if last else text.find(piece, at, end)
            if found < 0:
                found = at
            value = text[at:found]
            # A placeholder of ours as a credential's value stays as it is.
            out.append(value if PLACEHOLDER.fullmatch(value) else self.placeholder(SECRET, value))
            out.append(piece)
            at = found + len(piece)
        return "".join(out)

    def _sub(self, pattern: re.Pattern[str], kind: str, text: str,
             accept: Callable[[str], bool] | None = None) -> str:
        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            if PLACEHOLDER.fullmatch(value) or (accept is not None and not accept(value)):
                return value
            return self.placeholder(kind, value)

        # Placeholders already written are never searched again.
        pieces = PLACEHOLDER.split(text)
        found = PLACEHOLDER.findall(text)
        out = [pattern.sub(replace, pieces[0])]
        for placeholder, piece in zip(found, pieces[1:]):
            out += [placeholder, pattern.sub(replace, piece)]
        return "".join(out)
