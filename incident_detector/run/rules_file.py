"""The rules file on disk: loaded at start, reloaded when its content changes.

``RulesFile(path, clock=...)`` loads ``RULES_FILE`` (None: the built-in set) and raises
``judge.rules.RulesError`` when the file is invalid or unreadable, which the entry point turns
into exit code 2. ``reload_if_changed()`` is called every tick: it stats the file and reads it only
when the stat changed, and swaps the rules only when the content differs from what is loaded.

Kubernetes updates a ConfigMap volume by writing the new files into a fresh timestamped
directory and swapping the ``..data`` symlink to it; ``rules.yaml`` itself is a symlink into
``..data``. So the file is always stat'ed through its symlinks (inode, size, times), and the
content hash decides: an mtime alone would say nothing about the swap, and equal content after
a swap (a ConfigMap touched but not changed) is no reload.

A change that does not parse keeps the previous rules, logs ``rules.reload_failed`` once per
distinct bad content (not once per tick) and shows the error on ``/status`` until the file is
valid again (or back to what is loaded). A file that disappears keeps the previous rules too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog

from ..judge.rules import DEFAULT_RULES, RuleSet, RulesError, parse_rules

log = structlog.get_logger("incident_detector")

# A file changed again within the file system's timestamp granularity keeps its stat (same
# size, same mtime): until its mtime is this far in the past, its content is hashed on every
# call ("racy git"). Two seconds cover the coarsest common granularity (FAT's).
RACY_WINDOW = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class _Stat:
    """What changes when the file (or the file a symlink chain leads to) changes."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str) -> _Stat:
        result = os.stat(path)  # follows symlinks: ..data swaps change the inode
        return cls(result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns,
                   result.st_ctime_ns)

    @property
    def modified_at(self) -> datetime:
        return datetime.fromtimestamp(max(self.mtime_ns, self.ctime_ns) / 1e9, tz=timezone.utc)


class RulesFile:
    """The rules in force, from ``path`` or the built-in set, and their reload state."""

    def __init__(self, path: str | None, *, clock: Callable[[], datetime]) -> None:
        self._path = path
        self._clock = clock
        self._stat: _Stat | None = None
        # The stat must be checked by content again while it may still hide a change.
        self._stat_settled = False
        self._digest: str | None = None
        # The digest of the content (or "missing", "unreadable: ...") a failure was logged for.
        self._failed: str | None = None
        self._last_error: RulesError | None = None
        if path is None:
            self._rules = DEFAULT_RULES
        else:
            stat, content = self._read(path)
            self._rules = parse_rules(content, source=path)
            self._remember(stat, content)
        self._loaded_at = clock()
        log.info("rules.loaded", source=self._rules.source, count=len(self._rules.rules),
                 include_defaults=self._rules.include_defaults)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def reload_if_changed(self) -> bool:
        """Load the file again if its content changed; True when new rules are in force.

        Never raises: a bad change keeps the rules in force and is reported (log and status).
        """
        path = self._path
        if path is None:
            return False
        try:
            stat = _Stat.of(path)
        except OSError as exc:
            self._fail(f"missing:{exc.errno}", RulesError(
                f"cannot be read ({exc.strerror or exc}); the previous rules stay in force",
                file=path))
            self._stat = None
            return False
        if stat == self._stat and self._stat_settled:
            return False
        try:
            stat, content = self._read(path)
        except RulesError as error:
            self._fail(f"unreadable:{error.message}", error)
            self._stat = None
            return False
        digest = _digest(content)
        if digest == self._digest:
            # Same content (a ConfigMap re-synced, a file touched, or a bad change reverted).
            self._remember(stat, content)
            self._last_error = None
            self._failed = None
            return False
        try:
            rules = parse_rules(content, source=path)
        except RulesError as error:
            self._fail(digest, error)
            self._stat, self._stat_settled = stat, self._settled(stat)
            return False
        self._rules = rules
        self._remember(stat, content)
        self._loaded_at = self._clock()
        self._last_error = None
        self._failed = None
        log.info("rules.loaded", source=rules.source, count=len(rules.rules),
                 include_defaults=rules.include_defaults)
        return True

    def status(self) -> dict[str, Any]:
        """For ``/status``: where the rules come from, how many, since when, the last failure."""
        return {
            "source": self._rules.source if self._path is None else self._path,
            "rule_count": len(self._rules.rules),
            "include_defaults": self._rules.include_defaults,
            "loaded_at": _iso(self._loaded_at),
            "last_reload_error": str(self._last_error) if self._last_error else None,
        }

    # --- inside ---------------------------------------------------------------------------

    def _read(self, path: str) -> tuple[_Stat, str]:
        try:
            stat = _Stat.of(path)
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise RulesError(f"cannot be read: {exc.strerror or exc}", file=path) from None
        try:
            return stat, data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RulesError(f"is not UTF-8 text (byte {exc.start})", file=path) from None

    def _remember(self, stat: _Stat, content: str) -> None:
        self._digest = _digest(content)
        self._stat = stat
        self._stat_settled = self._settled(stat)

    def _settled(self, stat: _Stat) -> bool:
        now = self._clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now - stat.modified_at > RACY_WINDOW

    def _fail(self, key: str, error: RulesError) -> None:
        self._last_error = error
        if key == self._failed:
            return
        self._failed = key
        log.warning("rules.reload_failed", file=error.file, rule=error.rule, field=error.field,
                    reason=error.message, kept=self._rules.source, count=len(self._rules.rules))


def _digest(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat()
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

