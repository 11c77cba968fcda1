"""Deciding from the dashboard, in Chromium: with DASHBOARD_TOKEN, a logged-in engineer's
Approve rolls back once in the simulated cluster and the history says who; without it, no write
control is shown, and a forged POST changes nothing either way."""

from __future__ import annotations

import time

import pytest

# What a forger can make up: the decision form's fields (web/actions.py), with a one-time token
# and a CSRF value of their own.
FORGED = {"journal_id": "1", "kind": "approve", "token": "made-up-approval-token",
          "csrf": "made-up-csrf-value"}


@pytest.fixture(scope="module")
def daemon(start_daemon):
    with start_daemon(with_token=True) as daemon:
        daemon.wait_for_incident()
        yield daemon


@pytest.fixture(scope="module")
def read_only(start_daemon):
    """The same daemon without DASHBOARD_TOKEN (nor AUTH_PROXY_HEADER): a read-only dashboard."""
    with start_daemon(with_token=False) as daemon:
        daemon.wait_for_incident()
        yield daemon


def log_in(page, daemon) -> None:
    answer = page.goto(f"{daemon.url}/login")
    assert answer is not None and answer.status == 200
    field = page.locator("form [name=token]")
    field.fill(daemon.token)
    with page.expect_navigation():
        field.press("Enter")
    assert page.context.cookies(), "no session cookie after logging in"


def wait_for(condition, *, timeout: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)


def test_without_a_token_no_write_control_is_shown_and_a_forged_post_is_not_found(
        read_only, page, open_incident):
    incident = open_incident(page, read_only.url)
    assert page.locator("#evidence").count() == 1
    assert page.locator("#decision form, form#decision").count() == 0
    assert page.locator("button#approve, button#reject").count() == 0
    assert page.locator("form[method=post i]").count() == 0
    answer = page.request.post(f"{incident}/decision", form=FORGED)
    assert answer.status == 404, answer.text()[:300]
    read_only.wait_for_ticks(2)  # nothing was queued behind the answer either
    assert read_only.apiserver.writes == []


def test_a_forged_post_without_the_session_is_refused(daemon, browser, new_page, open_incident):
    with new_page(browser) as page:  # no cookie: nobody logged in
        incident = open_incident(page, daemon.url)
        before = len(daemon.apiserver.writes)
        answer = page.request.post(f"{incident}/decision", form=FORGED,
                                   headers={"Origin": daemon.url})
        assert answer.status in (401, 403), answer.text()[:300]
        daemon.wait_for_ticks(2)  # nothing was queued behind the answer either
        assert len(daemon.apiserver.writes) == before


def test_approving_from_the_page_rolls_back_once_and_the_history_says_who(
        daemon, page, open_incident, take_screenshot):
    log_in(page, daemon)
    open_incident(page, daemon.url)
    approve = page.locator("#decision button#approve")
    assert approve.count() == 1, "no Approve button for a logged-in engineer"
    approve.click()
    page.wait_for_load_state()
    wait_for(lambda: daemon.rollback_writes(), what="the rollback to reach the apiserver")
    [write] = daemon.rollback_writes()
    assert write.method == "PATCH" and write.path.endswith("/deployments/payments-api")
    assert "payments-api:1.4.2" in write.body.decode()

    def history_says_who() -> bool:
        page.goto(f"{daemon.url}/history")
        rows = [row.inner_text() for row in page.locator("tr, li").all()]
        return any("dashboard:alice" in row and "approved" in row for row in rows) \
            and any("executed" in row for row in rows)

    wait_for(history_says_who, what="/history to show alice's approval and the execution")
    take_screenshot(page, "history")
    daemon.wait_for_ticks(2)  # two ticks later, still one rollback
    assert len(daemon.rollback_writes()) == 1
