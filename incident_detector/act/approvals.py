"""One-time approval tokens: what a Slack button carries instead of anything that could be forged.

Each button of an incident's question (Approve: Roll back, Reject, ...) carries its own token,
bound to the incident and the action it asks about. A token is worth one click: ``consume`` hands
out its binding exactly once, and closes the whole question at the same time, so that after a
Reject the Approve button of the same incident does nothing (and the other way round). Tokens
also expire, so a forgotten message cannot be approved days later.

A question once answered stays answered: ``issue`` for a closed question hands out a token that
is already spent (a click on it is "already decided"), so a page rendered or a message built
after the decision, or while the decision is still being carried out, cannot reopen it. The
journal's state is the durable record; the closed questions are remembered here for the
tokens' lifetime, which is as long as any token of theirs could have been clicked.

Tokens for a page (the dashboard issues a pair each time an incident page is shown to a signed-in
user) may be given a shorter lifetime than the default, so that page views do not pile up tokens
for a day.

Tokens are kept only as their SHA-256 digest: a dump of this store (or, later, of the database)
does not hold a token that could still be clicked.

This implementation lives in memory: a restart forgets every open question, and the buttons of
messages sent before it answer "already decided". Persistence comes with the audit store (issue 9,
"Audit trail"), behind the same ``issue`` / ``consume`` interface.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

Clock = Callable[[], datetime]

# 32 random bytes: 43 URL-safe characters, well within the 2000 characters of a button's value.
TOKEN_BYTES = 32
DEFAULT_TOKEN_TTL = timedelta(hours=24)


class Grant(NamedTuple):
    """What a consumed token was bound to."""

    incident_key: str
    action: str


class _Entry(NamedTuple):
    grant: Grant
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApprovalTokens:
    """In-memory one-time tokens; safe to use from threads and from the event loop.

    No method awaits while holding the lock, so a plain ``threading.Lock`` serves both: two clicks
    arriving together (two requests, or two threads) cannot both consume the same token.
    """

    def __init__(self, *, clock: Clock, ttl: timedelta = DEFAULT_TOKEN_TTL) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}  # token digest -> binding and expiry
        self._closed: dict[str, datetime] = {}  # incident key -> until when it is remembered

    def issue(self, incident_key: str, action: str, *, ttl: timedelta | None = None) -> str:
        """A fresh, unguessable token bound to (incident_key, action), valid for ``ttl`` (at most
        the store's own). For a question already answered the token is born spent."""
        if ttl is not None and ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        lifetime = self._ttl if ttl is None else min(ttl, self._ttl)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            if incident_key not in self._closed:
                self._entries[_digest(token)] = _Entry(Grant(incident_key, action),
                                                       now + lifetime)
        return token

    def is_closed(self, incident_key: str) -> bool:
        """Whether the question was answered (a token consumed, or closed) and is remembered."""
        now = self._clock()
        with self._lock:
            until = self._closed.get(incident_key)
            return until is not None and until > now

    def consume(self, token: str) -> Grant | None:
        """The token's binding, exactly once; None when unknown, expired or already used.

        Consuming a token closes its incident's question: every other token of the same incident
        is withdrawn too.
        """
        now = self._clock()
        with self._lock:
            entry = self._entries.pop(_digest(token), None)
            if entry is None:
                return None
            if entry.expires_at <= now:
                self._forget_expired(now)
                return None
            self._close(entry.grant.incident_key)
            return entry.grant

    def peek(self, token: str) -> Grant | None:
        """The token's binding without consuming it (to record *what* a refused click was for)."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(_digest(token))
            if entry is None or entry.expires_at <= now:
                return None
            return entry.grant

    def close(self, incident_key: str) -> int:
        """Withdraw every open token of an incident (decided elsewhere); how many were open."""
        with self._lock:
            return self._close(incident_key)

    def open_count(self) -> int:
        with self._lock:
            return len(self._entries)

    def _close(self, incident_key: str) -> int:
        self._closed[incident_key] = self._clock() + self._ttl
        stale = [d for d, e in self._entries.items() if e.grant.incident_key == incident_key]
        for digest in stale:
            del self._entries[digest]
        return len(stale)

    def _forget_expired(self, now: datetime) -> None:
        expired = [d for d, e in self._entries.items() if e.expires_at <= now]
        for digest in expired:
            del self._entries[digest]
        forgotten = [key for key, until in self._closed.items() if until <= now]
        for key in forgotten:
            del self._closed[key]
