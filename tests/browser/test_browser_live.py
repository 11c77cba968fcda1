"""An open overview learns of a new incident without a reload (Server-Sent Events, GET /events)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest


@pytest.fixture
def paused(start_daemon):
    """The demo's cluster with time standing still 20 s before the bad rollout goes out."""
    with start_daemon(with_token=False, start_at=40.0, speed=0.0) as daemon:
        yield daemon


def test_a_new_incident_appears_on_an_open_overview_without_a_reload(paused, page):
    with page.expect_request(lambda request: urlsplit(request.url).path == "/events"):
        page.goto(f"{paused.url}/")
    assert page.locator("#queue [data-incident]").count() == 0
    assert paused.status()["incidents"] == []
    page.evaluate("window.__loaded_once = true")
    # Time runs again, ten times faster than the wall clock: the rollout at t=60 s, its errors
    # from t=75 s, the incident a tick or two later.
    paused.clock.run(10.0, from_seconds=50.0)
    page.locator("#queue [data-incident]").first.wait_for(timeout=30_000)
    assert page.evaluate("window.__loaded_once === true"), "the page was reloaded"
    assert "payments-api" in page.inner_text("#queue")
