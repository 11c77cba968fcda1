"""``incident-detector store copy``: a SQLite history, written by the detector's own code, moved
into a real PostgreSQL (tests/postgres.py) with its ids, once, and the password never shown."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx

from incident_detector.config import DEFAULT_ERROR_PATTERN
from incident_detector.model import Change, FieldChange, Priority
from incident_detector.run.triage import Triage
from incident_detector.sources.alerts import parse_webhook
from incident_detector.sources.loki import QUERY_RANGE_PATH, LabelKeys, LokiClient, unix_nanos
from incident_detector.store.alerts import AlertInbox
from incident_detector.store.changes import ChangeLog
from incident_detector.store.copy import KEYS, copy_main, schema_tables
from incident_detector.store.db import connect
from incident_detector.store.journal import APPROVED, DONE, EXECUTING, PROPOSED, Journal
from incident_detector.store.records import Store
from incident_detector.store.rows import db_time
from incident_detector.store.service_map import ObservedLinks
from incident_detector.store.sessions import DashboardSessions
from fixtures.store.schema_v6 import schema_6_file
from postgres import free_port

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
FIXTURES = Path(__file__).parent / "fixtures"
LOKI_URL = "http://loki.test:3100"


# --- a history, written by the detector's own code ---------------------------------------------


def error_groups(store: Store) -> None:
    """Two error groups, folded by the triage from lines a Loki answered."""
    lines = [(T0 - timedelta(seconds=30 - i), f'level=error msg="db down" attempt={i}')
             for i in range(3)]
    lines.append((T0 - timedelta(seconds=5), "level=error NullPointerException at Checkout"))
    body = {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"namespace": "shop", "app": "api"},
         "values": [[unix_nanos(at), line] for at, line in lines]}]}}
    loki = LokiClient(http=httpx.AsyncClient(base_url=LOKI_URL), keys=LabelKeys(),
                      pattern=DEFAULT_ERROR_PATTERN, match="pattern", max_attempts=1)
    triage = Triage(connection=store.connection, loki=loki, sample_lines=500, max_groups=100,
                    prioritize=lambda example: (Priority.P3, None), notify_priorities=("P1",),
                    first_window=timedelta(seconds=120))

    async def call(thunk):
        return await thunk()

    with respx.mock(base_url=LOKI_URL) as mock:
        mock.get(QUERY_RANGE_PATH).respond(200, json=body)
        asyncio.run(triage.read("shop", workloads=None, now=T0, call=call))
    assert len(triage) == 2


def history(path: Path) -> Path:
    """Every table with rows: an old file migrated, then a day of the detector's writes."""
    store = Store(schema_6_file(path))
    for revision in (11, 12, 13):
        assert store.record_incident(
            key=("shop", "api", revision, "uid-api"), replicaset=f"api-{revision}",
            detected_at=T0 + timedelta(minutes=revision), record={"summary": f"r{revision}",
                                                                  "priority": "P1"},
            deliveries=[("stdout", {"n": revision}), ("slack", {"text": f"r{revision}"})])
    first = store.outbox.due(T0 + timedelta(hours=1), channels=["slack"])[0]
    store.outbox.mark_delivered(first.id, T0 + timedelta(hours=1))
    assert store.record_notice(key="errors/shop/abc", kind="errors", namespace="shop",
                               deployment="api", detected_at=T0, record={"summary": "db down"},
                               deliveries=[("slack", {"text": "db down"})])
    journal = Journal(store.connection)
    entry = journal.propose(key=("shop", "api", 12, "uid-api"), action="rollback",
                            params={"to_revision": 11}, precondition="8474", now=T0)
    journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=T0, who="U123")
    journal.advance(entry.id, expected=[APPROVED], to=EXECUTING, now=T0)
    journal.advance(entry.id, expected=[EXECUTING], to=DONE, now=T0, result="applied")
    for index, decision in enumerate(["requested", "approved", "executed", "verified"]):
        journal.audit(at=T0 + timedelta(seconds=index), who="U123", action="rollback",
                      target="shop/api", decision=decision, reason="error spike",
                      dry_run=False, result="pass" if decision == "verified" else None,
                      action_id=entry.id)
    inbox = AlertInbox(store.connection)
    inbox.receive(parse_webhook((FIXTURES / "alertmanager" / "grouped.json").read_bytes()),
                  now=T0)
    ChangeLog(store.connection, retention=timedelta(days=7), max_rows=100).record(
        [Change(namespace="shop", kind="Deployment", name="api", action="updated",
                at=T0 + timedelta(minutes=n), observed_at=T0 + timedelta(minutes=n),
                manager="kubectl", operation="Update", uid="uid-api",
                resource_version=str(500 + n),
                fields=(FieldChange("image api", f"api:{n}", f"api:{n + 1}"),))
         for n in range(3)])
    error_groups(store)
    # Approval tokens, answered questions, Slack threads, the map's learnt links and a
    # dashboard session: rows as the code that writes them (the remediation's, the map's, the
    # dashboard's) writes them.
    db = store.connection
    db.execute("INSERT INTO approval_tokens (digest, subject, action, issued_at, expires_at)"
               " VALUES ('sha256:ab12', 'shop/api/12', 'rollback', ?, ?)",
               (db_time(T0), db_time(T0 + timedelta(hours=1))))
    db.execute("INSERT INTO answered_questions (subject, answered_at, remembered_until)"
               " VALUES ('shop/api/11', ?, ?)", (db_time(T0), db_time(T0 + timedelta(days=1))))
    db.execute("INSERT INTO slack_threads (key, channel, ts, created_at)"
               " VALUES ('incident/shop/api/12', 'C123', '1733043600.000100', ?)", (db_time(T0),))
    ObservedLinks(db).record([("shop/web", "shop/api", "error_line", "host=api")], seen_at=T0)
    sessions = DashboardSessions(db)
    sessions.start("a-session-token", user="alice", now=T0, expires_at=T0 + timedelta(hours=8))
    sessions.shared_key("dashboard-csrf", now=T0)
    store.close()
    return path


def dump(target: str | Path) -> dict[str, list[tuple]]:
    """Every row of every table, columns by name, in key order."""
    db = connect(target)
    try:
        out = {}
        for table, key in KEYS.items():
            cursor = db.execute(f"SELECT * FROM {table} WHERE 1=0")
            columns = sorted(column[0] for column in cursor.description)
            out[table] = [tuple(row) for row in db.execute(
                f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}")]
        return out
    finally:
        db.close()


def run(source: str | Path, destination: str, *, batch_rows: int = 500
        ) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = copy_main(str(source), destination, batch_rows=batch_rows, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point, as the container runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STATE_PATH")}
    return subprocess.run([sys.executable, "-m", "incident_detector", "store", "copy", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def password_of(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).password or "")


# --- the copy -----------------------------------------------------------------------------------


def test_every_table_of_the_schema_is_copied():
    assert set(schema_tables()) == set(KEYS) and len(KEYS) == 14


def test_the_command_copies_every_row_with_its_ids_and_never_shows_the_password(
        tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    expected = dump(source)
    assert all(expected.values()), {t: len(rows) for t, rows in expected.items()}
    # Batches of 2: every table takes several, the keyed on two columns (alerts, error groups)
    # too, so the pagination is exercised.
    done = cli("--from", str(source), "--to", pg_url, "--batch", "2")
    assert done.returncode == 0, done.stderr
    assert dump(pg_url) == expected
    ids = [row[0] for row in connect(pg_url).execute("SELECT id FROM incidents ORDER BY id")]
    assert ids[:2] == [3, 7]  # the rowids of the old file: /incidents/r7 is still r7
    secret = password_of(pg_url)
    assert secret and secret not in done.stdout + done.stderr
    assert "detector:***@" in done.stderr
    # Progress: a line per batch, naming the table, the rows read and the new ones.
    assert "store copy: incidents 2/5 rows read, 2 new" in done.stderr
    assert "store copy: incidents 5/5 rows read, 5 new" in done.stderr
    assert "store copy: approval_tokens 1/1 rows read, 1 new" in done.stderr
    summary = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
               if line.split() and line.split()[0] in {*KEYS, "total"}}
    for table, rows in expected.items():
        assert summary[table] == [str(len(rows)), str(len(rows)), "0", "0"], table
    assert "rows/s" in done.stdout


def test_a_second_run_copies_nothing_twice(tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    assert run(source, pg_url)[0] == 0
    code, out, err = run(source, pg_url)
    assert code == 0
    assert dump(pg_url) == dump(source)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:-1]}
    for table, counts in rows.items():
        assert counts[1] == "0" and counts[0] == counts[2] and counts[3] == "0", (table, counts)
    assert "conflict" not in err and "not copied" not in err


def test_what_the_detector_wrote_since_is_copied_by_the_next_run(tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    run(source, pg_url)
    store = Store(source)
    store.record_incident(key=("shop", "api", 14, "uid-api"), replicaset="api-14",
                          detected_at=T0, record={}, deliveries=[("stdout", {})])
    store.close()
    code, out, _ = run(source, pg_url)
    assert code == 0
    new = {line.split()[0]: int(line.split()[2]) for line in out.splitlines()[1:-1]}
    assert new["incidents"] == 1 and new["outbox"] == 1 and new["total"] == 2
    assert dump(pg_url) == dump(source)


def test_rows_recorded_in_postgresql_afterwards_get_ids_above_the_copied_ones(tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    run(source, pg_url)
    file = connect(source)
    highest = {table: file.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
               for table in KEYS if KEYS[table] == ("id",)}
    file.close()
    store = Store(pg_url)
    assert store.record_incident(key=("shop", "web", 1, "uid-web"), replicaset="web-1",
                                 detected_at=T0, record={}, deliveries=[("slack", {})])
    assert store.record_notice(key="errors/shop/new", kind="errors", namespace="shop",
                               deployment="web", detected_at=T0, record={}, deliveries=())
    journal = Journal(store.connection)
    entry = journal.propose(key=("shop", "web", 1, "uid-web"), action="rollback", params={},
                            precondition="1", now=T0)
    journal.audit(at=T0, who="detector", action="rollback", target="shop/web",
                  decision="requested", reason="x", dry_run=False)
    [change] = ChangeLog(store.connection, retention=timedelta(days=7), max_rows=100).record(
        [Change(namespace="shop", kind="Deployment", name="web", action="updated", at=T0,
                observed_at=T0, manager="kubectl", operation="Update", uid="uid-web",
                resource_version="900", fields=())])
    db = store.connection
    newest = {table: db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
              for table in ("incidents", "outbox", "notices", "audit")}
    store.close()
    assert all(newest[table] > highest[table] for table in newest), (newest, highest)
    assert entry.id > highest["actions"] and change.id > highest["changes"]


def test_an_older_file_is_migrated_before_it_is_copied(tmp_path, pg_url):
    source = schema_6_file(tmp_path / "v6.sqlite3")
    code, _, err = run(source, pg_url)
    assert code == 0, err
    assert Store(source).migrated_from is None  # the copy brought it to the current schema
    incidents = connect(pg_url).execute("SELECT id, revision FROM incidents ORDER BY id")
    assert incidents.fetchall() == [(3, 5), (7, 2)]
    assert connect(pg_url).execute("SELECT id, key FROM notices").fetchall() == [(4, "alert/f/t")]


def test_rows_the_database_holds_differently_are_counted_and_never_overwritten(
        tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    # The detector already ran on the database: its incidents 1, 2 and 3 are not the file's,
    # and the file's incident 3 must not replace the database's.
    store = Store(pg_url)
    for revision in (1, 2, 3):
        store.record_incident(key=("other", "db", revision, "u"), replicaset="db-1",
                              detected_at=T0, record={}, deliveries=())
    store.close()
    code, out, err = run(source, pg_url)
    assert code == 0
    incidents = dict(line.split()[0:1] + [line.split()[1:]] for line in out.splitlines()[1:-1])
    assert incidents["incidents"] == ["5", "4", "0", "1"]
    assert "1 rows were not copied" in err
    kept = connect(pg_url).execute("SELECT namespace FROM incidents WHERE id=3").fetchone()
    assert kept == ("other",)


def test_postgresql_back_to_sqlite(tmp_path, pg_url):
    source = history(tmp_path / "state.sqlite3")
    run(source, pg_url)
    back = tmp_path / "back.sqlite3"
    code, _, err = run(pg_url, f"sqlite:{back}")
    assert code == 0, err
    assert dump(back) == dump(source)
    store = Store(back)
    assert store.record_incident(key=("shop", "web", 1, "u"), replicaset="web-1",
                                 detected_at=T0, record={}, deliveries=())
    # The file's incidents are 3, 7, 8, 9 and 10: the next one is above them.
    assert store.connection.execute("SELECT MAX(id) FROM incidents").fetchone()[0] > 10


# --- arguments and failures ---------------------------------------------------------------------


@pytest.mark.parametrize("destination", [
    "state.sqlite3",  # a path without sqlite: (a typo for the URL, or $DATABASE_URL unset)
    "",
    "mysql://admin:hunter2secret@db:3306/detector",
    "sqlite:",
])
def test_a_destination_that_is_not_a_database_url_is_refused(tmp_path, destination):
    source = history(tmp_path / "state.sqlite3")
    code, out, err = run(source, destination)
    assert code == 2 and out == ""
    assert "postgresql://" in err and "hunter2secret" not in err
    assert not (Path.cwd() / "state.sqlite3").exists()


def test_a_source_file_that_does_not_exist_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "nope.sqlite3"
    done = cli("--from", str(missing), "--to", "postgresql://u:pw-secret@127.0.0.1:1/db")
    assert done.returncode == 2
    assert "no such file" in done.stderr and not missing.exists()
    assert "pw-secret" not in done.stderr


def test_the_same_store_on_both_ends_is_refused(tmp_path):
    source = history(tmp_path / "state.sqlite3")
    assert run(source, f"sqlite:{source}")[0] == 2


def test_missing_arguments_exit_2():
    assert cli("--from", "x").returncode == 2


def test_a_database_that_cannot_be_reached_exits_1_without_the_password(tmp_path):
    source = history(tmp_path / "state.sqlite3")
    url = f"postgresql://detector:s3cret-pw@127.0.0.1:{free_port()}/detector"
    code, out, err = run(source, url)
    assert code == 1 and out == ""
    assert "could not connect" in err and "detector:***@127.0.0.1" in err
    assert "s3cret-pw" not in err


def test_a_wrong_password_exits_1_and_shows_neither(tmp_path, postgres_server):
    source = history(tmp_path / "state.sqlite3")
    url = postgres_server.url(password="not-the-password")
    done = cli("--from", str(source), "--to", url)
    assert done.returncode == 1
    assert "not-the-password" not in done.stderr + done.stdout
    assert postgres_server.password not in done.stderr + done.stdout
