"""Who may write through the dashboard, and the checks every write passes.

Reading the dashboard needs no login. A write (approve, reject) needs a user, named by one of:

- ``AUTH_PROXY_HEADER``: an authenticating proxy in front of the detector (oauth2-proxy's
  ``X-Forwarded-User``, say) puts the signed-in user's name in that header. The detector trusts
  the header as it comes, so the proxy must **remove a copy sent by the client** (oauth2-proxy
  sets it itself and overwrites one it is sent) and the detector's port must not be reachable
  around the proxy (a NetworkPolicy, or the Service not exposed otherwise).
- ``DASHBOARD_TOKEN`` (a Secret): ``name:secret``, or a bare secret for the user ``dashboard``.
  A person enters it once in the form of ``/login``; the answer is a session cookie that ends
  in 32 random bytes, HttpOnly, SameSite=Strict, Path=/, Secure when the request came over
  https, expiring after eight hours. The store keeps the session (``store.sessions``: the
  cookie's SHA-256 digest, its user and its end), so every replica on the same store knows it
  and a restart signs nobody out; signing out deletes it there.
  A script may send ``Authorization: Bearer <secret>`` instead (``name:secret`` in full is
  accepted as well as the secret alone, in the form too).

A write from a browser also carries a CSRF value (``csrf_token``): an HMAC of the user, how they
signed in, the session and its expiry, so it is worth nothing to another user, after a sign-out
or after the session's end. A session's is keyed by its cookie, which every replica is sent
with the form; a proxy's user's by a random key kept in the store (``dashboard_keys``), which
the first replica to need it draws and every other one reads. When the request has
an ``Origin`` (or, without one, a ``Referer``), its host must be the request's own ``Host``. A
bearer request needs no CSRF value: a browser never adds that header to a request another site
makes it send.

Without a token and without a proxy header the dashboard is read-only (``enabled`` is False).

While the store does not answer, a request that carries a session cookie (to be looked up) or
signs in raises ``StoreUnavailable``, which the app answers with 503 and ``Retry-After``, as
every page that needs the store.

Nothing secret is logged or kept in a repr: not the token, not the cookie, not a CSRF value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ..credentials import TokenCredential, parse_dashboard_token
from ..store.sessions import DashboardSessions

if TYPE_CHECKING:
    from ..config import Settings

log = structlog.get_logger("incident_detector")

Clock = Callable[[], datetime]
Via = Literal["proxy", "session", "bearer"]

SESSION_COOKIE = "incident_detector_session"
SESSION_LIFETIME = timedelta(hours=8)
# The name of the CSRF key of a proxy's users in the store's ``dashboard_keys``.
CSRF_KEY_NAME = "dashboard-csrf"
# A user named by the proxy: printable ASCII (an e-mail address, "Alice Smith"), nothing that
# could break a log line or a page.
_PROXY_USER = re.compile(r"[\x20-\x7e]{1,256}")
# What a cookie or a CSRF value may look like before the store is asked or a MAC computed.
_COOKIE = re.compile(r"[A-Za-z0-9_-]{1,1024}\.[A-Za-z0-9_-]{43}")
_CSRF = re.compile(r"[0-9]{1,12}\.[A-Za-z0-9_-]{43}")
_SESSION_ID_BYTES = 18
# The cookie's secret part: what the store's digest is of, unguessable.
_SESSION_SECRET_BYTES = 32
# Why a password of this length is worth a warning: the login is rate-limited, but a short
# secret still falls to patience.
MIN_SECRET_CHARS = 16
DEFAULT_PORTS = (":80", ":443")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from, and how that was established."""

    user: str
    via: Via
    # The session's id and expiry (a cookie session); empty and 0 otherwise.
    session: str = ""
    expires: int = 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _host(netloc: str) -> str:
    """A host[:port] compared as browsers mean it: lower case, without a default port."""
    netloc = netloc.strip().lower()
    for port in DEFAULT_PORTS:
        if netloc.endswith(port):
            return netloc[: -len(port)]
    return netloc


def is_https(request: Request) -> bool:
    # X-Forwarded-Proto is not trusted for anything but this: claiming https only makes the
    # cookie stricter (Secure), never looser.
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


class DashboardAuth:
    """The dashboard's sign-in and the checks of its writes; see the module's docstring."""

    def __init__(self, *, token: TokenCredential | None, proxy_header: str | None,
                 clock: Clock, key: bytes | None = None,
                 session_lifetime: timedelta = SESSION_LIFETIME,
                 sessions: DashboardSessions | None = None) -> None:
        if session_lifetime <= timedelta(0):
            raise ValueError("session_lifetime must be positive")
        self._token = token
        self._proxy_header = proxy_header.lower() if proxy_header else None
        self._clock = clock
        # For the CSRF values of a proxy's users and bearer requests (a session's are keyed by
        # its own cookie): None until first needed, then the store's shared key (_shared_key).
        self._key = key
        self._lifetime = session_lifetime
        # The store's table (main passes the detector's); without one, the process's own.
        self._sessions = sessions if sessions is not None else DashboardSessions()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock,
                      sessions: DashboardSessions | None = None) -> DashboardAuth:
        token = None
        if settings.dashboard_token is not None:
            token = parse_dashboard_token(settings.dashboard_token.get_secret_value())
            if len(token.secret) < MIN_SECRET_CHARS:
                log.warning("dashboard_token_short", min_chars=MIN_SECRET_CHARS,
                            hint="openssl rand -hex 32")
        return cls(token=token, proxy_header=settings.auth_proxy_header, clock=clock,
                   sessions=sessions)

    def __repr__(self) -> str:
        return (f"DashboardAuth(token_user={self._token.user if self._token else None!r}, "
                f"proxy_header={self._proxy_header!r})")

    @property
    def enabled(self) -> bool:
        """Whether anyone can write: a token or a proxy header is configured."""
        return self._token is not None or self._proxy_header is not None

    @property
    def token_login(self) -> bool:
        """Whether ``/login`` has anything to check (a DASHBOARD_TOKEN is configured)."""
        return self._token is not None

    # Who is asking ------------------------------------------------------------------------

    def identify(self, request: Request) -> Identity | None:
        """The user of ``request`` and how they signed in; None for an anonymous reader."""
        if self._proxy_header is not None:
            named = request.headers.get(self._proxy_header)
            if named is not None:
                named = named.strip()
                return Identity(named, "proxy") if _PROXY_USER.fullmatch(named) else None
        if self._token is None:
            return None
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        # Another Authorization (an ingress's basic auth, a proxy's ID token) is not ours to
        # judge: the session cookie still counts.
        if scheme.lower() == "bearer" and self._token.matches(credential.strip()):
            return Identity(self._token.user, "bearer")
        cookie = request.cookies.get(SESSION_COOKIE)
        return self._session(cookie) if cookie else None

    def user(self, request: Request) -> str | None:
        identity = self.identify(request)
        return identity.user if identity else None

    def check_token(self, given: str) -> str | None:
        """The user a token entered in the login form names, or None when it is not the token."""
        if self._token is None or not given or len(given) > 4096:
            return None
        return self._token.user if self._token.matches(given) else None

    # Sessions -----------------------------------------------------------------------------

    def start_session(self, request: Request, response: Response, user: str) -> None:
        """Record a session of ``user`` in the store and set its cookie on ``response``."""
        now = self._clock()
        expires = int(now.timestamp() + self._lifetime.total_seconds())
        session = _b64(secrets.token_bytes(_SESSION_ID_BYTES))
        payload = _b64(f"{user}|{session}|{expires}".encode())
        value = f"{payload}.{_b64(secrets.token_bytes(_SESSION_SECRET_BYTES))}"
        self._sessions.start(value, user=user, now=now,
                             expires_at=datetime.fromtimestamp(expires, timezone.utc))
        response.set_cookie(SESSION_COOKIE, value,
                            max_age=int(self._lifetime.total_seconds()), path="/",
                            secure=is_https(request), httponly=True, samesite="strict")

    def end_session(self, request: Request, response: Response) -> None:
        """Forget the request's session (its cookie is refused from now on, on every replica)
        and clear it."""
        identity = self.identify(request)
        if identity is not None and identity.via == "session":
            self._sessions.end(request.cookies[SESSION_COOKIE])
        response.delete_cookie(SESSION_COOKIE, path="/", secure=is_https(request),
                               httponly=True, samesite="strict")

    def _session(self, cookie: str) -> Identity | None:
        if self._token is None or not _COOKIE.fullmatch(cookie):
            return None
        # The store decides: a cookie it does not hold (altered, signed out, made for another
        # store) or whose session ended is nobody's. Its readable part names the session.
        found = self._sessions.find(cookie, now=self._clock())
        if found is None or found.user != self._token.user:
            return None
        return Identity(found.user, "session", session=cookie.rsplit(".", 1)[0],
                        expires=int(found.expires_at.timestamp()))

    # CSRF and origin ----------------------------------------------------------------------

    def csrf_token(self, request: Request) -> str:
        """The value a form of this user, in this session, must send back; empty without a
        user. It lasts as long as the session (eight hours for a proxy's user)."""
        identity = self.identify(request)
        if identity is None:
            return ""
        expires = identity.expires
        if not expires:
            # No session of ours: a window that moves by the hour, so that a page's value stays
            # the same within the hour and is never older than the lifetime plus one hour.
            hour = int(self._clock().timestamp()) // 3600
            expires = (hour + 1) * 3600 + int(self._lifetime.total_seconds())
        return f"{expires}.{self._csrf_mac(request, identity, expires)}"

    def check_csrf(self, request: Request, value: object) -> bool:
        """Whether ``value`` is this user's and this session's CSRF value, still valid, and the
        request's Origin (or Referer) names this host. Constant-time."""
        identity = self.identify(request)
        if identity is None or not isinstance(value, str) or not _CSRF.fullmatch(value):
            return False
        expires_text, mac = value.split(".", 1)
        expires = int(expires_text)
        fresh = expires > self._clock().timestamp() and (
            not identity.expires or expires == identity.expires)
        valid = hmac.compare_digest(mac, self._csrf_mac(request, identity, expires))
        return valid and fresh and self.same_origin(request)

    def same_origin(self, request: Request) -> bool:
        """False when the request's Origin (or, lacking one, its Referer) names another host
        than the request's own Host; True when it names this one or neither is sent."""
        own = _host(request.headers.get("host", ""))
        origin = request.headers.get("origin")
        source = origin if origin is not None else request.headers.get("referer")
        if source is None:
            return True
        try:
            parts = urlsplit(source.strip())
        except ValueError:
            return False
        # "null" (a sandboxed frame, a cross-origin redirect) has no host and never matches.
        return parts.scheme in ("http", "https") and bool(own) and _host(parts.netloc) == own

    def _csrf_mac(self, request: Request, identity: Identity, expires: int) -> str:
        bound = "|".join((identity.user, identity.via, identity.session, str(expires)))
        # A session's own cookie (secret, and sent to whichever replica gets the form) keys
        # its values; the key the store keeps for every replica the others'.
        key = request.cookies[SESSION_COOKIE].encode() if identity.via == "session" \
            else self._shared_key()
        return _b64(hmac.new(key, b"csrf\0" + bound.encode(), hashlib.sha256).digest())

    def _shared_key(self) -> bytes:
        """The key every replica on the store shares for the CSRF values of a proxy's users
        (and of bearer requests), read once; raises ``StoreUnavailable`` while the store does
        not answer."""
        if self._key is None:
            self._key = self._sessions.shared_key(CSRF_KEY_NAME, now=self._clock())
        return self._key
