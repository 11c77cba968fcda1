"""bench.store's smallest run works: its table has every operation for both backends, and a
detector built on a SQLite store leaves the PostgreSQL driver out. No figure is asserted: the
machine's speed is not the code's.

Run as ``python -m bench.store`` from the project's root, as ``make bench`` runs it (``bench``
is not on the tests' path).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from postgres import find_bindir, in_ci

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ("record_incident (3 deliveries)", "outbox: claim + mark_delivered",
              "journal: propose + advance + audit", "alert receive (1 alert)",
              "change record (1 change)", "error groups: upsert 10 in a tick",
              "read: incidents page (newest 50)", "read: stats (today's figures)")


def _bench(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(180)
def test_the_smallest_writes_table_names_every_operation_on_both_backends():
    if find_bindir() is None:
        if in_ci():
            pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    out = _bench("-m", "bench.store", "--only", "writes", "--deployments", "2", "--ops", "2")
    lines = out.splitlines()
    assert "SQLite ops/s" in lines[1] and "PostgreSQL ops/s" in lines[1]
    for operation in OPERATIONS:
        row = next(line for line in lines if line.startswith(operation))
        sqlite, postgresql = row[len(operation):].split()
        assert int(sqlite) > 0 and int(postgresql) > 0, row
    assert any("fsync and synchronous_commit on" in line for line in lines)


def test_a_detector_on_a_sqlite_store_does_not_import_the_postgresql_driver():
    out = _bench("-c", "import json; from bench.store import psycopg_imported_with_sqlite;"
                       " print(json.dumps(psycopg_imported_with_sqlite()))")
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_the_tick_launcher_compiles():
    # Compiled only: running it is a daemon's run (bench.store --only ticks), minutes long.
    _bench("-c", "from bench.store import BENCH_STORE_LAUNCHER;"
                 " compile(BENCH_STORE_LAUNCHER, '<launcher>', 'exec')")
