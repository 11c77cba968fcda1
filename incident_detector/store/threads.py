"""The Slack threads of incidents: the ``ts`` of each incident's first message, so that its
follow-ups (the approval's outcome, the verification) reply in its thread after a restart of the
detector, and whichever replica sends them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from .db import Database
from .rows import db_time


class SlackThreads:
    """``SlackThreads(store.connection, clock=...)``: what ``notify.slack_bot`` remembers."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT ts FROM slack_threads WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def remember(self, key: str, *, channel: str, ts: str) -> None:
        """The first message of a thread; a second one for the same key changes nothing."""
        self._db.execute(
            "INSERT INTO slack_threads (key, channel, ts, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING", (key, channel, ts, db_time(self._clock())))

