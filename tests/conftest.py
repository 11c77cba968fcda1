"""Fixtures shared by the test modules that talk to a fake kube-apiserver; hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Locally every run explores new examples (and a failure is kept in .hypothesis to replay); in
# CI (CI=true) the examples are the same on every run, so a verdict does not depend on the draw.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

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
