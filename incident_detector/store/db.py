"""One connection to the store's database, SQLite or PostgreSQL, behind the same small interface.

The queries of ``store/`` are written once, in the SQL both databases speak: ``?`` placeholders,
``INSERT ... ON CONFLICT DO NOTHING``, ``RETURNING id``, row values, ``excluded.``. What differs
is kept here and nowhere else: how to connect, how a transaction starts, the placeholder style of
the driver, reading a field of a JSON text column, and which errors mean "the database is not
there right now" (``StoreUnavailable``) rather than a bug.

Why not SQLAlchemy: the embedded default must not grow (SQLAlchemy Core costs more resident
memory than the whole SQLite store), and the queries need nothing it would write for us. The
PostgreSQL driver (psycopg 3) is imported only when ``DATABASE_URL`` is set.

Both connections are used from the event loop's thread, one statement at a time, never across
an ``await``: a transaction is a ``with db.transaction():`` block of plain calls.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..credentials import safe_url, scrub, secrets_of
from ..errors import SourceError

SOURCE = "store"
SQLITE, POSTGRESQL = "sqlite", "postgresql"
URL_SCHEMES = ("postgresql://", "postgres://")
# How long a connection attempt to PostgreSQL may take, unless the URL sets connect_timeout;
# and how long one statement may run. Both block the event loop while they last, so they are
# short: a store that does not answer in time is "unavailable", and the caller retries later.
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
# After a failed connection, the next attempt waits (doubling, capped): a database that is down
# costs one connect timeout per wait, not one per statement.
RECONNECT_BASE_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 30.0
# SQLSTATE classes worth a later try on the same connection: 40 (deadlock, serialization
# failure), 53 (too many connections, out of memory), 55P03 (lock not available).
TRANSIENT_SQLSTATES = ("40", "53", "55P03")


class StoreUnavailable(SourceError):
    """The database cannot be reached (or dropped the connection); retrying later may work.
    The message never carries the password."""

    def __init__(self, message: str) -> None:
        super().__init__(SOURCE, "unavailable", message, retryable=True)


# What a caller that must answer whatever happens (a webhook, a click) catches around a write:
# the database not there, or SQLite's file refusing it (disk full, locked too long).
STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, sqlite3.Error)


class Rows(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]: ...
    def json_text(self, column: str, field: str) -> str: ...
    def close(self) -> None: ...
    @property
    def in_transaction(self) -> bool: ...
    @property
    def target(self) -> str: ...


def is_url(target: str) -> bool:
    return target.startswith(URL_SCHEMES)


def connect(target: str | Path, **options: Any) -> Database:
    """A SQLite file (a path, or ``:memory:``) or a PostgreSQL database (a URL)."""
    text = str(target)
    if is_url(text):
        return PostgresDatabase(text, **options)
    return SqliteDatabase(text)


@contextlib.contextmanager
def transaction(db: Database) -> Iterator[None]:
    """``with transaction(db):`` the block's statements commit together or not at all."""
    with db.transaction():
        yield


# SQLite -------------------------------------------------------------------------------------

class SqliteDatabase:
    """The embedded default: one file, one connection, WAL; nothing to install or run."""

    dialect = SQLITE

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit off (isolation_level=None: we say BEGIN ourselves); WAL keeps a reader
        # from blocking the writer.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._path = path

    @property
    def target(self) -> str:
        return self._path

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE: the write lock at once, no upgrade from a read lock that could fail
        # half-way. Rolled back when the block raises.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def json_text(self, column: str, field: str) -> str:
        return f"json_extract({column}, '$.{field}')"

    def close(self) -> None:
        self._db.close()


# PostgreSQL ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and a literal ``%`` to ``%%``), outside quotes."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
            out.append("%%" if char == "%" else char)
        elif char in ("'", '"'):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


_SERIAL = re.compile(r"INTEGER PRIMARY KEY AUTOINCREMENT", re.IGNORECASE)


def postgres_ddl(sqlite_ddl: str) -> str:
    """The schema's DDL, written for SQLite, as PostgreSQL says it: the only difference in our
    tables is the auto-numbered id (TEXT, INTEGER and the constraints are the same)."""
    return _SERIAL.sub("BIGSERIAL PRIMARY KEY", sqlite_ddl)


class PostgresDatabase:
    """A shared PostgreSQL database (``DATABASE_URL``): every replica reads and writes the same
    rows, and the database's own locks and unique keys decide who wins a race."""

    dialect = POSTGRESQL

    def __init__(self, url: str, *, application_name: str = "incident-detector",
                 monotonic: Callable[[], float] = time.monotonic, connect_now: bool = True) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "DATABASE_URL is set but the PostgreSQL driver is not installed: "
                "pip install 'incident-detector[postgres]'") from None
        self._psycopg = psycopg
        self._url = url
        self._secrets = secrets_of(url)
        self._application_name = application_name
        self._monotonic = monotonic
        self._conn: Any = None
        self._failures = 0
        self._next_attempt = 0.0
        self._in_tx = False
        self.last_error: str | None = None
        if connect_now:
            self._connection()

    @property
    def target(self) -> str:
        return safe_url(self._url)

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    @property
    def available(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        now = self._monotonic()
        if now < self._next_attempt:
            raise StoreUnavailable(self.last_error or "the database is not reachable")
        options: dict[str, Any] = {"autocommit": True,
                                   "application_name": self._application_name}
        if "connect_timeout" not in self._url:
            options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        # A dead peer is noticed by the kernel within seconds, not the default two hours.
        options.update(keepalives=1, keepalives_idle=10, keepalives_interval=5,
                       keepalives_count=3)
        try:
            conn = self._psycopg.connect(self._url, **options)
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except self._psycopg.Error as exc:
            raise self._unavailable("could not connect", exc) from None
        self._conn = conn
        self._failures = 0
        self.last_error = None
        return conn

    def _unavailable(self, doing: str, exc: BaseException) -> StoreUnavailable:
        self._failures += 1
        delay = min(RECONNECT_CAP_SECONDS, RECONNECT_BASE_SECONDS * 2 ** (self._failures - 1))
        self._next_attempt = self._monotonic() + delay
        detail = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else
                       type(exc).__name__, self._secrets)
        self.last_error = f"{doing} to {self.target}: {detail}"
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        return StoreUnavailable(self.last_error)

    def _lost(self, exc: BaseException) -> bool:
        """The connection is gone (the server stopped, the network broke): reconnect later."""
        conn = self._conn
        # An error without a SQLSTATE did not come from the server: a broken connection is an
        # OperationalError; anything else (a query with the wrong number of parameters, a value
        # that cannot be sent) is a mistake to raise as it is, not an outage to wait out.
        return isinstance(exc, self._psycopg.InterfaceError) or conn is None or conn.closed \
            or bool(getattr(conn, "broken", False)) \
            or (getattr(exc, "sqlstate", None) is None
                and isinstance(exc, self._psycopg.OperationalError)) \
            or str(getattr(exc, "sqlstate", "")).startswith(("08", "57P"))

    def _failed(self, exc: BaseException) -> BaseException:
        if self._lost(exc):
            return self._unavailable("lost the connection", exc)
        if str(getattr(exc, "sqlstate", "")).startswith(TRANSIENT_SQLSTATES):
            # A deadlock or serialization failure, too many connections: the statement (or its
            # transaction) may succeed if tried again; the connection is fine.
            return StoreUnavailable(scrub(f"{type(exc).__name__}: {exc}", self._secrets))
        return exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        conn = self._connection()
        try:
            return conn.execute(to_pyformat(sql), tuple(params) if params else None)
        except self._psycopg.Error as exc:
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if not rows:
            return
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                cursor.executemany(to_pyformat(sql), rows)
        except self._psycopg.Error as exc:
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            raise RuntimeError("transactions do not nest")
        self.execute("BEGIN")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            if self._conn is not None and not self._conn.closed:
                with contextlib.suppress(Exception):
                    self._conn.execute("ROLLBACK")
            raise
        self._in_tx = False
        self.execute("COMMIT")

    def json_text(self, column: str, field: str) -> str:
        return f"(({column})::jsonb ->> '{field}')"

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
