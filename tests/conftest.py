"""Fixtures shared by the test modules that talk to a fake kube-apiserver."""

from __future__ import annotations

import pytest

from apiserver import StatefulApiServer
from harness import make_cluster


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
