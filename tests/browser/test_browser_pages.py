"""The dashboard's pages in Chromium, over the real daemon and `make demo`'s bad rollout: what
the overview and an incident page show, that every page works by keyboard and on a phone, and
the README's screenshots."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

PHONE = {"width": 390, "height": 844}
# The main pages, named as their screenshots are; the incident page is reached by its link.
PAGES = {"overview": "/", "incident": None, "errors": "/errors", "history": "/history",
         "rules": "/rules", "settings": "/settings"}
NAV_PATHS = ["/", "/errors", "/history", "/rules", "/settings"]
# A source's state said in words, not by a colour alone.
STATE_WORDS = re.compile(r"\b(ok|healthy|up|working|answering|reachable|failing|down|degraded|"
                         r"unreachable|error|unknown|off)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def daemon(start_daemon):
    """A daemon with a dashboard token and its incident already raised (nobody approves it)."""
    with start_daemon(with_token=True) as daemon:
        daemon.wait_for_incident()
        yield daemon


@pytest.fixture(scope="module")
def incident_url(daemon, browser, new_page, open_incident):
    with new_page(browser) as page:
        return open_incident(page, daemon.url)


def test_status_is_served_to_the_browser(daemon, page):
    page.goto(f"{daemon.url}/status")
    status = json.loads(page.inner_text("body"))
    assert status["service"] == "incident-detector"
    assert [i["revision"] for i in status["incidents"]] == [2]


def test_the_overview_shows_the_bad_rollout_its_chart_the_queue_and_the_sources(
        daemon, page, bad_rollout):
    answer = page.goto(f"{daemon.url}/")
    assert answer is not None and answer.status == 200
    rollout = page.locator(f'[data-rollout="{bad_rollout}"]')
    rollout.wait_for()
    assert rollout.locator("svg").count() >= 1, "the bad rollout has no chart"
    assert rollout.locator("svg").first.is_visible()
    assert page.locator("#queue [data-incident]").count() == 1
    assert "payments-api" in page.inner_text("#queue")
    sources = page.inner_text("#sources")
    names = list(daemon.status()["sources"])
    for name in names:
        assert name.lower() in sources.lower(), f"#sources does not name {name}: {sources!r}"
    assert len(STATE_WORDS.findall(sources)) >= len(names), \
        f"#sources does not say each source's state in words: {sources!r}"


def test_an_incident_page_shows_its_evidence_timeline_and_command(daemon, page, incident_url):
    answer = page.goto(incident_url)
    assert answer is not None and answer.status == 200
    evidence = page.inner_text("#evidence")
    # The top signature, and the template diff: the image and the flag that changed.
    assert "NullPointerException" in evidence
    assert "payments-api:1.5.0" in evidence and "payments-api:1.4.2" in evidence
    assert "FEATURE_NEW_CHECKOUT" in evidence
    # Its likely causes: its own rollout first, with the command that undoes it.
    assert "Likely causes" in evidence
    top = page.locator("#evidence table.causes tbody tr").first.inner_text()
    assert "payments-api" in top and "kubectl rollout undo deployment/payments-api" in top
    timeline = page.inner_text("#timeline")
    assert re.search(r"detect", timeline, re.IGNORECASE), timeline
    assert re.search(r"notif|slack|sent|deliver", timeline, re.IGNORECASE), timeline
    command = page.locator("#command")
    assert "kubectl" in command.inner_text() and "payments-api" in command.inner_text()
    assert command.locator("button.copy").count() == 1


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_reads_by_keyboard_fits_a_phone_and_is_pictured(
        daemon, page, incident_url, take_screenshot, name):
    url = incident_url if PAGES[name] is None else f"{daemon.url}{PAGES[name]}"
    answer = page.goto(url)
    assert answer is not None and answer.status == 200, f"{url}: {answer and answer.status}"
    if name != "history":  # its picture is taken after an approval (test_browser_decision)
        take_screenshot(page, name)

    # Navigation: real links, all of them reached with Tab.
    nav = page.locator("nav a")
    hrefs = [urlsplit(href).path for href in
             nav.evaluate_all("links => links.map(a => a.getAttribute('href') || '')")]
    assert set(NAV_PATHS) <= set(hrefs), f"the nav links to {hrefs}, not to all of {NAV_PATHS}"
    reached, unmarked = set(), []
    for _ in range(40):
        page.keyboard.press("Tab")
        # Where the focus is, and whether it shows (an outline or a ring, not nothing).
        href, shown = page.evaluate("""() => {
            const e = document.activeElement, style = e && getComputedStyle(e);
            return [e && e.getAttribute('href'),
                    !!style && (style.outlineStyle !== 'none' && style.outlineWidth !== '0px'
                                || style.boxShadow !== 'none')];
        }""")
        if href is not None:
            reached.add(urlsplit(href).path)
            if not shown:
                unmarked.append(href)
        if set(NAV_PATHS) <= reached:
            break
    assert set(NAV_PATHS) <= reached, f"Tab reaches only {sorted(reached)}"
    assert unmarked == [], f"links whose focus does not show: {unmarked}"
    # What acts is a <button> (or a link with an href), never a clickable <div> or <span>.
    fakes = page.evaluate("""() => [...document.querySelectorAll(
        '[role=button]:not(button), [onclick]:not(button):not(a[href]), a:not([href])')]
        .map(e => e.outerHTML.slice(0, 80))""")
    assert fakes == [], f"controls that are not buttons or links: {fakes}"

    # On a phone: no sideways scrolling.
    page.set_viewport_size(PHONE)
    page.goto(url)
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{url} scrolls sideways on a phone: {widths}"
    if name == "overview":
        take_screenshot(page, "overview-phone")
