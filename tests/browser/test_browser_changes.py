"""A change incident in Chromium: checkout's errors rose after payments' bad rollout. Its page
shows what changed and the likely causes, and the engineer's Approve rolls back **payments**
(the cause), not checkout."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from incident_detector.sim.scenario import load_scenario

SCENARIO = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" /
                         "dependency-bad-rollout.yaml")
PAYMENTS = "/apis/apps/v1/namespaces/shop/deployments/payments"


def change_incident(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.get(f"{url}/api/incidents?kind=change", timeout=5).json()["incidents"]
        if found:
            return found[0]["id"]
        time.sleep(0.2)
    raise AssertionError(f"no change incident after {timeout:g} s")


@pytest.fixture(scope="module")
def daemon(start_daemon):
    # From t=95, once payments' Deployment last changed (t=90, its pods ready), four times as
    # fast as the wall clock: the incident carries the resourceVersion that the approval writes
    # against, however late it comes (from t=50, a loaded machine could raise it before t=90
    # and the approval then be refused as stale).
    with start_daemon(with_token=True, start_at=95, speed=4.0, scenario=SCENARIO) as daemon:
        yield daemon


def test_a_change_incident_shows_its_causes_and_approving_rolls_back_the_cause(daemon, page):
    incident_id = change_incident(daemon.url)
    page.goto(f"{daemon.url}/login")
    field = page.locator("form [name=token]")
    field.fill(daemon.token)
    with page.expect_navigation():
        field.press("Enter")
    answer = page.goto(f"{daemon.url}/incidents/{incident_id}")
    assert answer is not None and answer.status == 200
    evidence = page.inner_text("#evidence")
    assert "What changed" in evidence and "Deployment payments rolled out revision 2" in evidence
    causes = page.locator("#evidence table.causes tbody tr")
    assert causes.count() >= 1
    top = causes.first.inner_text()
    assert "payments" in top and "kubectl rollout undo deployment/payments" in top
    approve = page.locator("#decision button#approve")
    assert approve.count() == 1, "no Approve button for the cause's rollback"
    assert "payments" in page.inner_text("#decision")
    approve.click()
    deadline = time.monotonic() + 30
    while not daemon.rollback_writes() and time.monotonic() < deadline:
        time.sleep(0.1)
    writes = daemon.rollback_writes()
    assert len(writes) == 1, (f"rollbacks after 30 s at scenario time {daemon.clock.seconds:.0f} s: "
                              f"{daemon.apiserver.writes}; audit: "
                              f"{httpx.get(daemon.url + '/api/audit', timeout=5).json()}")
    [write] = writes
    assert write.method == "PATCH" and write.path == PAYMENTS
