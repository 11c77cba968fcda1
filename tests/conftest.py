"""Fixtures shared by the test modules that talk to a fake kube-apiserver; hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Locally every run explores new examples (and a failure is kept in .hypothesis to replay); in
# CI (CI=true) the examples are the same on every run, so a verdict does not depend on the draw.
# No example has a deadline: hypothesis's default of 200 ms per example is a wall-clock margin,
# and a busy machine misses it while the property holds.
settings.register_profile("local", deadline=None)
settings.register_profile("ci", derandomize=True, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")

from apiserver import StatefulApiServer
from harness import make_cluster

BROWSER = Path(__file__).parent / "browser"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Run in parallel (``make test``: pytest-xdist, ``--dist loadgroup``), each browser module's
    tests stay on one worker: its daemon and Chromium are started once, not once per worker."""
    for item in items:
        if BROWSER in item.path.parents:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def pytest_xdist_node_collection_finished(node, ids):
    """Browser tests that reach the controller without their group: xdist did not honour
    ``--dist loadgroup`` (pytest 9.2 with xdist 3.8), and each would start its own daemon.
    Said at once, rather than found as a slow suite."""
    if node.config.getvalue("dist") != "loadgroup":
        return
    lost = [i for i in ids if i.startswith("tests/browser/") and "@" not in i]
    if lost:
        pytest.exit(f"--dist loadgroup is not honoured (pytest {pytest.__version__}): {lost[0]} "
                    "has no group; install the pytest that pyproject.toml's test extra names",
                    returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="module")
def running_apiserver():
    """One stateful loopback apiserver per module (starting one per test would cost seconds)."""
    with StatefulApiServer() as server:
        yield server


@pytest.fixture
def apiserver(running_apiserver):
    """The module's apiserver, reset to the recorded bodies and no requests seen.

    tests/test_kube.py defines its own ``apiserver`` (a stateless FakeApiServer), which takes
    precedence there.
    """
    running_apiserver.reset()
    return running_apiserver


@pytest.fixture
def cluster(tmp_path):
    """Loopback kube-apiserver, Loki and Slack serving a bad rollout that began 100 s ago."""
    yield from make_cluster(tmp_path)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server per test session (per xdist worker): tests/postgres.py."""
    from postgres import PostgresServer, find_bindir, in_ci

    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir).start()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server):
    """The URL of an empty store on the session's PostgreSQL (a schema of its own)."""
    return postgres_server.new_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path):
    """Where a store lives, once per backend: the suites of store/ run against both."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite3")
    return request.getfixturevalue("pg_url")
