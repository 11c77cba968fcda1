"""The dashboard's sign-in sessions, kept in the store (``dashboard_sessions``).

A session is known by its token, which only the browser holds (in its cookie): the table keeps
the token's SHA-256 digest, the user it signs in and when it ends. So a session made on one
replica is valid on every other one on the same database and across a restart, and a dump of
the database holds nothing a browser could present. Signing out deletes the row; a session past
its end is refused, and its row is deleted when it is presented or when someone signs in.

The same database keeps the keys the replicas share (``dashboard_keys``, ``shared_key``): the
first replica that needs one draws it at random, the others read it.

The times are given by the caller (the dashboard's clock); nothing here reads one.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime
from typing import NamedTuple

from .approvals import token_digest
from .db import Database, SqliteDatabase
from .rows import db_time, from_db_time
from .schema import migrate


class Session(NamedTuple):
    user: str
    expires_at: datetime


class DashboardSessions:
    """``DashboardSessions(store.connection)``; without a database the sessions live in an
    in-process SQLite database of their own (tests, tools), as approval tokens do.

    A lock keeps this process's calls one at a time on the connection (no call awaits)."""

    def __init__(self, db: Database | None = None) -> None:
        if db is None:
            db = SqliteDatabase(":memory:")
            migrate(db)
        self._db = db
        self._lock = threading.Lock()

    def start(self, token: str, *, user: str, now: datetime, expires_at: datetime) -> None:
        """Remember the session of ``token`` until ``expires_at``; the ended ones are pruned."""
        with self._lock, self._db.transaction():
            self._db.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?",
                             (db_time(now),))
            self._db.execute(
                "INSERT INTO dashboard_sessions (digest, user_name, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_digest(token), user, db_time(now), db_time(expires_at)))

    def find(self, token: str, *, now: datetime) -> Session | None:
        """The live session of ``token``; None when unknown, signed out or ended (an ended
        one is forgotten on the way)."""
        key = token_digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT user_name, expires_at FROM dashboard_sessions WHERE digest=?",
                (key,)).fetchone()
            if row is None:
                return None
            expires_at = from_db_time(row[1])
            if expires_at is None or expires_at <= now:
                self._db.execute("DELETE FROM dashboard_sessions WHERE digest=?", (key,))
                return None
            return Session(row[0], expires_at)

    def end(self, token: str) -> bool:
        """Forget the session of ``token`` (signed out); whether it was there."""
        with self._lock:
            return self._db.execute("DELETE FROM dashboard_sessions WHERE digest=?",
                                    (token_digest(token),)).rowcount > 0

    def shared_key(self, name: str, *, now: datetime) -> bytes:
        """The 32 random bytes every replica on this database shares under ``name``: drawn by
        the first that asks (a second one drawing at the same time keeps the first's)."""
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO dashboard_keys (name, key_hex, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_hex(32), db_time(now)))
            row = self._db.execute("SELECT key_hex FROM dashboard_keys WHERE name=?",
                                   (name,)).fetchone()
        return bytes.fromhex(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dashboard_sessions")
                       .fetchone()[0])
