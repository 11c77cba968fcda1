"""The dashboard's pages in Chromium, over the real daemon and `make demo`'s bad rollout."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def daemon(start_daemon):
    """A daemon with a dashboard token and its incident already raised."""
    with start_daemon(with_token=True) as daemon:
        daemon.wait_for_incident()
        yield daemon


def test_status_is_served_to_the_browser(daemon, page):
    page.goto(f"{daemon.url}/status")
    status = json.loads(page.inner_text("body"))
    assert status["service"] == "incident-detector"
    assert [i["revision"] for i in status["incidents"]] == [2]
