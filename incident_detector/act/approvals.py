"""One-time approval tokens: what a Slack button carries instead of anything that could be forged.

Each button of an incident's question (Approve: Roll back, Reject, ...) carries its own token,
bound to the incident and the action it asks about. A token is worth one click: ``consume`` hands
out its binding exactly once, and closes the whole question at the same time, so that after a
Reject the Approve button of the same incident does nothing (and the other way round). Tokens
also expire, so a forgotten message cannot be approved days later.

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

    def issue(self, incident_key: str, action: str) -> str:
        """A fresh, unguessable token bound to (incident_key, action)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            self._entries[_digest(token)] = _Entry(Grant(incident_key, action), now + self._ttl)
        return token

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
        stale = [d for d, e in self._entries.items() if e.grant.incident_key == incident_key]
        for digest in stale:
            del self._entries[digest]
        return len(stale)

    def _forget_expired(self, now: datetime) -> None:
        expired = [d for d, e in self._entries.items() if e.expires_at <= now]
        for digest in expired:
            del self._entries[digest]
