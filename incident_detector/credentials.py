"""Credentials in the settings: the one parser of DASHBOARD_TOKEN, and a database URL shown
without its password. On the ground floor, beside config.py, which checks the settings with them,
and below web/ and store/, which use them."""

from __future__ import annotations

import hmac
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field

# The user of a bare DASHBOARD_TOKEN (one without "name:").
DEFAULT_USER = "dashboard"
# A user's name in DASHBOARD_TOKEN: a simple word, as it appears in the audit ("dashboard:alice").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class TokenCredential:
    """The parsed DASHBOARD_TOKEN: whom it names, and the secret (never in a repr)."""

    user: str
    secret: str = field(repr=False)
    # The configured value as written ("name:secret"): accepted as the secret too.
    whole: str = field(repr=False)

    def matches(self, given: str) -> bool:
        """Whether ``given`` is the secret (or the whole ``name:secret``), in constant time."""
        offered = given.encode("utf-8", "replace")
        secret_ok = hmac.compare_digest(offered, self.secret.encode("utf-8"))
        whole_ok = hmac.compare_digest(offered, self.whole.encode("utf-8"))
        return secret_ok | whole_ok


def parse_dashboard_token(value: str) -> TokenCredential:
    """``name:secret`` (the secret may hold further colons), or a bare secret for the user
    ``dashboard``. A value with a colon whose name is not a simple word is refused rather than
    guessed at. The error never quotes the value."""
    value = value.strip()
    if not value:
        raise ValueError("DASHBOARD_TOKEN is empty")
    name, colon, secret = value.partition(":")
    if not colon:
        return TokenCredential(user=DEFAULT_USER, secret=value, whole=value)
    if not _NAME.fullmatch(name):
        raise ValueError("DASHBOARD_TOKEN is 'name:secret' with a name of letters, digits, '.', "
                         "'_' or '-' (at most 64), or a bare secret without ':'")
    if not secret:
        raise ValueError("DASHBOARD_TOKEN has a name but no secret after the ':'")
    return TokenCredential(user=name, secret=secret, whole=value)


def safe_url(url: str) -> str:
    """The URL without its password (and without any query value named like one)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = urllib.parse.urlencode(
        [(k, "***" if k.lower() in ("password", "sslpassword") else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(url: str) -> list[str]:
    """Every form of the URL's password that an error message could echo."""
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    values = [parts.password or ""]
    values += [v for k, v in urllib.parse.parse_qsl(parts.query)
               if k.lower() in ("password", "sslpassword")]
    for value in values:
        if value:
            found += [value, urllib.parse.quote(value, safe=""), urllib.parse.unquote(value)]
    return sorted(set(found), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
