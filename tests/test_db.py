"""store/db.py on a real PostgreSQL: which errors mean "the database is not there"."""

from __future__ import annotations

import psycopg
import pytest

from incident_detector.store.records import Store


def test_a_mistake_in_a_query_is_raised_as_it_is_not_taken_for_a_lost_database(pg_url):
    store = Store(pg_url, owner="detector-a")
    try:
        # psycopg finds this one itself, before the server sees it: the error has no SQLSTATE.
        with pytest.raises(psycopg.ProgrammingError, match="placeholders"):
            store.connection.execute("SELECT ?, ?", (1,))
        with pytest.raises(psycopg.errors.UndefinedTable):
            store.connection.execute("SELECT * FROM no_such_table")
        store.ping()  # the connection was kept: no reconnect, no backoff
    finally:
        store.close()
