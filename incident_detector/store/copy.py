"""Copy a whole store into another: an existing SQLite history into a shared PostgreSQL database
(``incident-detector store copy``), or back out.

Both ends are opened with ``Store``, so both are at ``SCHEMA_VERSION`` before a row moves: an
older SQLite file migrates as it would at the detector's start, an empty database gets its
tables. Then every table is read in key order, a batch at a time, and written with
``INSERT ... ON CONFLICT DO NOTHING``:

- ids are copied as they are, so ``/incidents/r12`` and audit id 40 name the same rows on the
  new store; PostgreSQL's sequences are then moved past them (SQLite's AUTOINCREMENT follows an
  explicit id by itself), so the next incident recorded there gets a new number;
- a row whose key is already there is left as the destination has it: a second run copies
  nothing twice, and a run after the detector has written new rows to the source copies only
  those. Rows already copied are not updated (an action's later state, an outbox row delivered
  since): stop the detector before the last run. A row skipped because the destination holds
  *different* content under its key is counted as a conflict, never overwritten.

Each batch is its own transaction: an interrupted copy keeps what it wrote, and running it
again finishes it.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .db import POSTGRESQL, STORE_ERRORS, Database, is_url, safe_url, scrub, secrets_of
from .records import Store
from .schema import TABLES, StoreVersionError

# Every table of the schema and the key that identifies a row of it (its primary key). The
# order is the order of the copy and of the summary; no table refers to another by a foreign key.
KEYS: dict[str, tuple[str, ...]] = {
    "incidents": ("id",),
    "outbox": ("id",),
    "actions": ("id",),
    "audit": ("id",),
    "alerts": ("fingerprint", "starts_at"),
    "notices": ("id",),
    "error_groups": ("namespace", "fingerprint"),
    "changes": ("id",),
    "approval_tokens": ("digest",),
    "answered_questions": ("subject",),
    "slack_threads": ("key",),
    "service_links": ("source", "target", "kind", "detail"),
    # Copied like the approval tokens (only digests, each with its end): whoever signed in on
    # the old store stays signed in on the new one until the session's end; a row already
    # past it is refused and pruned there as it would have been here.
    "dashboard_sessions": ("digest",),
    # The key of a proxy's users' CSRF values: copied, a form shown before the move still posts
    # after it; a destination that already has its own keeps it (a conflict).
    "dashboard_keys": ("name",),
}
# Rows read and written at a time: large enough that a round trip to the database is a small
# part of a batch, small enough that a batch is a short transaction.
BATCH_ROWS = 500
# Placeholders one statement may carry: SQLite's old default limit (999; 32766 since 3.32) and a
# safe part of PostgreSQL's 65535. A batch is split into statements that fit.
MAX_PARAMETERS = {POSTGRESQL: 30_000}
SQLITE_MAX_PARAMETERS = 999


def schema_tables() -> list[str]:
    """The tables the schema creates, in its order (what ``KEYS`` must cover)."""
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", TABLES)


@dataclass(slots=True)
class TableCopy:
    """Where the copy of one table stands: ``read`` of ``total`` source rows so far, ``new`` of
    them written, ``conflicts`` of them left out because the destination's row under the same
    key differs."""

    table: str
    total: int
    read: int = 0
    new: int = 0
    conflicts: int = 0

    @property
    def already_there(self) -> int:
        return self.read - self.new - self.conflicts


Progress = Callable[[TableCopy], None]


def copy_store(source: Database, destination: Database, *, batch_rows: int = BATCH_ROWS,
               progress: Progress | None = None) -> list[TableCopy]:
    """Copy every table of ``source`` into ``destination`` (both at the same schema version,
    as ``Store`` leaves them); the outcome per table. ``progress`` is called after each batch."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    missing = set(schema_tables()) ^ set(KEYS)
    if missing:  # a table added to the schema must be added here too
        raise RuntimeError(f"store copy does not know the tables {sorted(missing)}")
    return [_copy_table(source, destination, table, KEYS[table], batch_rows=batch_rows,
                        progress=progress) for table in KEYS]


def _columns(db: Database, table: str) -> list[str]:
    cursor: Any = db.execute(f"SELECT * FROM {table} WHERE 1=0")
    return [column[0] for column in cursor.description]


def _copy_table(source: Database, destination: Database, table: str, key: tuple[str, ...], *,
                batch_rows: int, progress: Progress | None) -> TableCopy:
    columns = _columns(source, table)
    unknown = set(columns) - set(_columns(destination, table))
    if unknown:  # cannot happen at the same schema version; never drop a column silently
        raise RuntimeError(f"{table}: the destination has no column {sorted(unknown)}")
    outcome = TableCopy(table, int(source.execute(f"SELECT COUNT(*) FROM {table}")
                                   .fetchone()[0]))
    names = ", ".join(columns)
    order = ", ".join(key)
    at_key = [columns.index(column) for column in key]
    after: tuple[Any, ...] | None = None
    while True:
        # Keyset pagination: each batch starts after the last key read, so a batch costs the
        # same at the end of a large table as at its start.
        where = "" if after is None else f" WHERE ({order}) > ({', '.join('?' * len(key))})"
        rows = [tuple(row) for row in source.execute(
            f"SELECT {names} FROM {table}{where} ORDER BY {order} LIMIT ?",
            (*(after or ()), batch_rows))]
        if not rows:
            break
        after = tuple(rows[-1][i] for i in at_key)
        with destination.transaction():
            new = _insert(destination, table, columns, rows)
            conflicts = 0 if new == len(rows) else _conflicts(destination, table, columns,
                                                              key, rows)
        outcome.read += len(rows)
        outcome.new += new
        outcome.conflicts += conflicts
        if progress is not None:
            progress(outcome)
        if len(rows) < batch_rows:
            break
    if outcome.read == 0 and progress is not None:
        progress(outcome)  # an empty table is reported too
    if key == ("id",) and destination.dialect == POSTGRESQL:
        _move_sequence(destination, table)
    return outcome


def _insert(db: Database, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> int:
    """Insert the rows whose key is not there yet; how many went in."""
    limit = MAX_PARAMETERS.get(db.dialect, SQLITE_MAX_PARAMETERS)
    per_statement = max(1, limit // len(columns))
    one_row = f"({', '.join('?' * len(columns))})"
    inserted = 0
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        cursor = db.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
            f" {', '.join([one_row] * len(chunk))} ON CONFLICT DO NOTHING",
            [value for row in chunk for value in row])
        inserted += max(cursor.rowcount, 0)
    return inserted


def _conflicts(db: Database, table: str, columns: Sequence[str], key: tuple[str, ...],
               rows: Sequence[tuple]) -> int:
    """How many of ``rows`` the destination does not hold as they are: another row under the
    same key, or none under it because a row with other key took one of its unique values (an
    incident recorded there under another id). Rows a previous copy wrote are equal."""
    at_key = [columns.index(column) for column in key]
    one_key = f"({', '.join('?' * len(key))})"
    per_statement = max(1, MAX_PARAMETERS.get(db.dialect, SQLITE_MAX_PARAMETERS) // len(key))
    held: dict[tuple, tuple] = {}
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        for row in db.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE ({', '.join(key)}) IN"
                f" ({', '.join([one_key] * len(chunk))})",
                [row[i] for row in chunk for i in at_key]):
            row = tuple(row)
            held[tuple(row[i] for i in at_key)] = row
    return sum(1 for row in rows if held.get(tuple(row[i] for i in at_key)) != row)


def _move_sequence(db: Database, table: str) -> None:
    """Move the table's id sequence past its highest id, never back (an id handed out before,
    to a row since pruned, is not handed out again)."""
    sequence = db.execute("SELECT pg_get_serial_sequence(?, 'id')", (table,)).fetchone()[0]
    if sequence is None:
        return
    highest = db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0] or 0
    last = db.execute("SELECT pg_sequence_last_value(?::regclass)", (sequence,)).fetchone()[0]
    target = max(int(highest), int(last or 0))
    if target > 0:
        db.execute("SELECT setval(?::regclass, ?, true)", (sequence, target))


# The command: ``incident-detector store copy --from SOURCE --to DESTINATION`` ----------------

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE = 0, 1, 2
SQLITE_PREFIX = "sqlite:"


class UsageError(ValueError):
    """A --from or --to the command cannot use; the message names it without its password."""


def source_target(text: str) -> str:
    """``--from``: a PostgreSQL URL, or a SQLite file that exists (``PATH`` or ``sqlite:PATH``):
    a mistyped path must not become a new, empty store copied into the database."""
    if is_url(text):
        return text
    path = text.removeprefix(SQLITE_PREFIX)
    if "://" in path:
        raise UsageError(f"--from {safe_url(text)}: not a postgresql:// URL nor a SQLite file")
    if not Path(path).is_file():
        raise UsageError(f"--from {path}: no such file (the SQLite file STATE_PATH names)")
    return path


def destination_target(text: str) -> str:
    """``--to``: a PostgreSQL URL, or ``sqlite:PATH`` to copy into a SQLite file (said
    explicitly: an empty ``$DATABASE_URL`` or a typo must not write a file somewhere)."""
    if is_url(text):
        return text
    if text.startswith(SQLITE_PREFIX) and text != SQLITE_PREFIX:
        return text.removeprefix(SQLITE_PREFIX)
    shown = (safe_url(text) if "://" in text else text) or "''"
    raise UsageError(f"--to {shown}: expected a postgresql:// or postgres:// URL"
                     " (DATABASE_URL), or sqlite:PATH for a SQLite file")


def _same_store(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def copy_main(source: str, destination: str, *, batch_rows: int = BATCH_ROWS,
              out: TextIO = sys.stdout, err: TextIO = sys.stderr,
              monotonic: Callable[[], float] = time.monotonic) -> int:
    """The command: progress on ``err`` (a line per batch), the summary on ``out``; the exit
    code. No password is ever written: the ends are shown by ``safe_url``, errors scrubbed."""
    secrets = [secret for text in (source, destination) for secret in secrets_of(text)]

    def say(text: str, stream: TextIO) -> None:
        print(scrub(text, secrets), file=stream, flush=True)

    try:
        source_path = source_target(source)
        destination_path = destination_target(destination)
        if _same_store(source_path, destination_path):
            raise UsageError("--from and --to are the same store")
        if batch_rows < 1:
            raise UsageError("--batch must be at least 1")
    except UsageError as exc:
        say(f"store copy: {exc}", err)
        return EXIT_USAGE
    errors = _database_errors(source_path, destination_path)
    started = monotonic()
    opened: list[Store] = []
    try:
        opened.append(Store(source_path, owner="store-copy"))
        opened.append(Store(destination_path, owner="store-copy"))
        source_store, destination_store = opened
        say(f"store copy: {source_store.target} -> {destination_store.target}", err)
        results = copy_store(
            source_store.connection, destination_store.connection, batch_rows=batch_rows,
            progress=lambda t: say(f"store copy: {t.table} {t.read}/{t.total} rows read,"
                                   f" {t.new} new", err))
    except errors as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        say(f"store copy: failed: {detail}", err)
        return EXIT_UNREACHABLE
    finally:
        for store in opened:
            store.close()
    elapsed = monotonic() - started
    say(summary(results, seconds=elapsed), out)
    conflicts = sum(t.conflicts for t in results)
    if conflicts:
        say(f"store copy: {conflicts} rows were not copied: the destination holds other rows"
            " under their keys (see the conflicts column); nothing was overwritten", err)
    return EXIT_OK


def summary(results: Sequence[TableCopy], *, seconds: float) -> str:
    width = max(len(t.table) for t in results)
    lines = [f"{'table':<{width}}  {'rows':>8}  {'new':>8}  {'already there':>13}"
             f"  {'conflicts':>9}"]
    for t in results:
        lines.append(f"{t.table:<{width}}  {t.read:>8}  {t.new:>8}  {t.already_there:>13}"
                     f"  {t.conflicts:>9}")
    read, new = sum(t.read for t in results), sum(t.new for t in results)
    rate = f", {read / seconds:,.0f} rows/s" if seconds > 0 and read else ""
    lines.append(f"{'total':<{width}}  {read:>8}  {new:>8}  "
                 f"{sum(t.already_there for t in results):>13}"
                 f"  {sum(t.conflicts for t in results):>9}")
    lines.append(f"copied in {seconds:.1f} s{rate}")
    return "\n".join(lines)


def _database_errors(*targets: str) -> tuple[type[BaseException], ...]:
    """What a failed copy raises that is not a bug: the database not there or refusing (a
    password, a permission), a newer schema, a SQLite file that is not one. psycopg's errors
    only when a URL is given: the SQLite path never imports the driver."""
    errors: tuple[type[BaseException], ...] = (*STORE_ERRORS, StoreVersionError)
    if any(is_url(target) for target in targets):
        with contextlib.suppress(ImportError):
            import psycopg

            errors += (psycopg.Error,)
    return errors


__all__ = ["BATCH_ROWS", "KEYS", "TableCopy", "copy_main", "copy_store", "schema_tables"]
