"""One-time approval tokens, kept in the store: what a Slack button or a dashboard form carries
instead of anything that could be forged.

Each button of an incident's question (Approve: Roll back, Reject, ...) carries its own token,
bound to the incident and the action it asks about. A token is worth one click: ``consume`` hands
out its binding exactly once, and answers the whole question at the same time, so that after a
Reject the Approve button of the same incident does nothing (and the other way round). Tokens
also expire, so a forgotten message cannot be approved days later.

A question once answered stays answered: ``issue`` for an answered question hands out a token
that is already spent (a click on it is "already decided"), so a page rendered or a message built
after the decision, or while it is being carried out, cannot reopen it. The journal's state is the
durable record of the decision; the answered questions are remembered here for the tokens'
lifetime, which is as long as any token of theirs could have been clicked.

Kept in the store's tables (``approval_tokens``, ``answered_questions``), so a button keeps
working across a restart or an upgrade of the detector, and, with PostgreSQL, whichever replica
the click reaches. Only the token's SHA-256 digest is stored: a dump of the database does not
hold a token that could still be clicked. Two clicks racing, in one process or in two replicas,
make one winner: the answer is a row with the question as its primary key, inserted in the same
transaction as the token is spent.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from .db import Database, SqliteDatabase
from .rows import db_time
from .schema import migrate

Clock = Callable[[], datetime]

# 32 random bytes: 43 URL-safe characters, well within the 2000 characters of a button's value.
TOKEN_BYTES = 32
DEFAULT_TOKEN_TTL = timedelta(hours=24)


class Grant(NamedTuple):
    """What a consumed token was bound to."""

    incident_key: str
    action: str


def token_digest(token: str) -> str:
    """What the store keeps of a token (an approval's, a dashboard session's): its SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApprovalTokens:
    """``ApprovalTokens(clock=..., db=store.connection)``; without ``db`` the tokens live in an
    in-process SQLite database of their own (tests, tools).

    Safe to use from threads and from the event loop: a lock keeps this process's calls one at
    a time on the one connection (no call awaits), and the database keeps replicas apart.
    """

    def __init__(self, *, clock: Clock, ttl: timedelta = DEFAULT_TOKEN_TTL,
                 db: Database | None = None) -> None:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        if db is None:
            db = SqliteDatabase(":memory:")
            migrate(db)
        self._db = db
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()

    def issue(self, incident_key: str, action: str, *, ttl: timedelta | None = None) -> str:
        """A fresh, unguessable token bound to (incident_key, action), valid for ``ttl`` (at most
        the store's own). For a question already answered the token is born spent."""
        if ttl is not None and ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        lifetime = self._ttl if ttl is None else min(ttl, self._ttl)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock()
        with self._lock, self._db.transaction():
            self._forget_expired(now)
            if not self._answered(incident_key, now):
                self._db.execute(
                    "INSERT INTO approval_tokens (digest, subject, action, issued_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (token_digest(token), incident_key, action, db_time(now), db_time(now + lifetime)))
        return token

    def is_closed(self, incident_key: str) -> bool:
        """Whether the question was answered (a token consumed, or closed) and is remembered."""
        with self._lock:
            return self._answered(incident_key, self._clock())

    def consume(self, token: str) -> Grant | None:
        """The token's binding, exactly once; None when unknown, expired or already used, or
        when its question was answered meanwhile (by another token, here or on a replica).

        Consuming a token answers its incident's question: every other token of the same
        incident is withdrawn too.
        """
        now = self._clock()
        digest = token_digest(token)
        with self._lock, self._db.transaction():
            row = self._db.execute(
                "SELECT subject, action FROM approval_tokens WHERE digest=? AND used_at IS NULL"
                " AND expires_at > ?", (digest, db_time(now))).fetchone()
            if row is None:
                return None
            subject, action = row
            # The answer first: its primary key is where two clicks racing meet (the second
            # waits for the first to commit, then finds the question answered). Only then the
            # tokens' rows, so that no two transactions hold each other's rows.
            answered = self._answer(subject, now, spent=digest)
            return Grant(subject, action) if answered else None

    def peek(self, token: str) -> Grant | None:
        """The token's binding without consuming it (to record *what* a refused click was for)."""
        now = self._clock()
        with self._lock:
            row = self._db.execute(
                "SELECT subject, action FROM approval_tokens WHERE digest=? AND used_at IS NULL"
                " AND expires_at > ?", (token_digest(token), db_time(now))).fetchone()
        return Grant(row[0], row[1]) if row else None

    def close(self, incident_key: str) -> int:
        """Withdraw every open token of an incident (decided elsewhere); how many were open."""
        now = self._clock()
        with self._lock, self._db.transaction():
            open_tokens = int(self._db.execute(
                "SELECT COUNT(*) FROM approval_tokens WHERE subject=? AND used_at IS NULL"
                " AND expires_at > ?", (incident_key, db_time(now))).fetchone()[0])
            self._answer(incident_key, now)
            return open_tokens

    def open_count(self) -> int:
        now = self._clock()
        with self._lock:
            return int(self._db.execute(
                "SELECT COUNT(*) FROM approval_tokens WHERE used_at IS NULL AND expires_at > ?",
                (db_time(now),)).fetchone()[0])

    # Inside a transaction ------------------------------------------------------------------

    def _answered(self, subject: str, now: datetime) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM answered_questions WHERE subject=? AND remembered_until > ?",
            (subject, db_time(now))).fetchone()
        return row is not None

    def _answer(self, subject: str, now: datetime, *, spent: str | None = None) -> bool:
        """Mark the question answered, spend the token ``spent`` and withdraw the question's
        other open tokens; False when it already was answered (the primary key decides between
        two replicas answering at once)."""
        self._db.execute("DELETE FROM answered_questions WHERE subject=? AND remembered_until <= ?",
                         (subject, db_time(now)))
        row = self._db.execute(
            "INSERT INTO answered_questions (subject, answered_at, remembered_until)"
            " VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING subject",
            (subject, db_time(now), db_time(now + self._ttl))).fetchone()
        if spent is not None:
            self._db.execute("UPDATE approval_tokens SET used_at=? WHERE digest=?",
                             (db_time(now), spent))
        self._db.execute("DELETE FROM approval_tokens WHERE subject=? AND used_at IS NULL",
                         (subject,))
        return row is not None

    def _forget_expired(self, now: datetime) -> None:
        stamp = db_time(now)
        self._db.execute("DELETE FROM approval_tokens WHERE expires_at <= ?", (stamp,))
        self._db.execute("DELETE FROM answered_questions WHERE remembered_until <= ?", (stamp,))
