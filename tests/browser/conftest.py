"""The browser tests' world: the real daemon over `make demo`'s simulated cluster, and Chromium.

Each daemon runs in a thread of its own with its own event loop (the daemon's wiring,
``build_detector`` and ``run_daemon``, as ``make demo`` uses it), on a free port, with
``REMEDIATION_MODE=approve`` and a clock that the test steers: paused, or running some times
faster than the wall clock. The test thread keeps the simulated cluster's handles, so that it
can check what reached the simulated apiserver.

Chromium is Debian's (``/usr/bin/chromium``, which ``.ci/run`` installs on a fresh machine);
Playwright drives it through ``executable_path`` and downloads nothing. Without it the browser
tests fail in CI (``CI`` set) and are skipped on a developer's machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from incident_detector.demo import DEMO_APPROVER, DEMO_SIGNING_SECRET, bundled_scenario
from incident_detector.main import build_detector, run_daemon
from incident_detector.sim.fakes import KubeApiFake
from incident_detector.sim.replay import SCENARIO_EPOCH, SimulatedCluster, scenario_settings, \
    simulated_cluster
from incident_detector.sim.scenario import load_scenario
from incident_detector.sources import kube

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}

# The demo's scenario: payments-api's revision 2 goes out at t=60 s and throws from t=75 s; the
# Deployment last changes at t=90 s (its pods ready), so an incident raised after that carries
# the resourceVersion an approval much later still writes against.
SCENARIO = load_scenario(bundled_scenario())
BAD_ROLLOUT = f"{SCENARIO.namespace}/{SCENARIO.deployment}/2"
SETTLED_AT = 95.0
# Wall seconds between ticks: the tests wait for ticks, so they are short.
POLL_SECONDS = 0.5


class SteerableClock:
    """Simulated time that the test can pause, start at some speed, or move forward.

    Like demo.FastClock, but steerable: a page can be opened while the world stands still, and
    the incident made to come while it watches. Time never goes backwards.
    """

    def __init__(self, start: datetime, *, speed: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._base = start
        self._origin = time.monotonic()
        self._speed = speed

    def _now(self) -> datetime:
        return self._base + timedelta(seconds=(time.monotonic() - self._origin) * self._speed)

    def __call__(self) -> datetime:
        with self._lock:
            return self._now()

    def run(self, speed: float, *, from_seconds: float | None = None) -> None:
        """Run at ``speed`` from now on, first jumping to scenario time ``from_seconds`` if it is
        later than now."""
        with self._lock:
            now = self._now()
            if from_seconds is not None:
                now = max(now, SCENARIO_EPOCH + timedelta(seconds=from_seconds))
            self._base, self._origin, self._speed = now, time.monotonic(), speed

    @property
    def seconds(self) -> float:
        """Scenario time: seconds since the scenario's t=0."""
        return (self() - SCENARIO_EPOCH).total_seconds()


@dataclass
class Daemon:
    url: str
    cluster: SimulatedCluster
    clock: SteerableClock
    # DASHBOARD_TOKEN ("alice:<random>"), or None for a read-only dashboard.
    token: str | None

    @property
    def apiserver(self) -> KubeApiFake:
        return self.cluster.kube.handler

    def rollback_writes(self) -> list:
        """The rollbacks the simulated apiserver carried out (its dry runs left out)."""
        return [w for w in self.apiserver.writes if w.param("dryRun") != "All"]

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/status", timeout=5).json()

    def wait_for_ticks(self, count: int, timeout: float = 30.0) -> None:
        """Until the daemon has finished ``count`` more ticks (whatever the machine's load)."""
        target = self.status()["ticks"] + count
        deadline = time.monotonic() + timeout
        while self.status()["ticks"] < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} ticks did not come in {timeout:g} s")
            time.sleep(0.1)

    def wait_for_incident(self, timeout: float = 30.0) -> dict[str, Any]:
        """The bad rollout's incident, once the daemon has recorded it (and asked to roll back)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            incidents = [i for i in status["incidents"] if i["revision"] == 2]
            if incidents and status["remediation"]["audit"]:
                return incidents[0]
            time.sleep(0.1)
        raise AssertionError(f"no incident after {timeout:g} s at scenario time "
                             f"{self.clock.seconds:.0f} s: {self.status()['last_tick']}")


@contextlib.contextmanager
def running_daemon(*, with_token: bool, start_at: float = SETTLED_AT,
                   speed: float = 2.0, scenario: Any = SCENARIO) -> Iterator[Daemon]:
    """The real daemon (HTTP server, tick loop, outbox) over the demo's simulated cluster.

    ``with_token``: DASHBOARD_TOKEN is ``alice:<random>``, else unset (a read-only dashboard).
    ``scenario``: the demo's by default.
    By default the clock starts after the rollout settled and runs twice as fast as the wall
    clock: the incident comes at the first ticks and the rollout stays in its window for minutes.
    """
    token = f"alice:{secrets.token_urlsafe(24)}" if with_token else None
    clock = SteerableClock(SCENARIO_EPOCH + timedelta(seconds=start_at), speed=speed)
    with simulated_cluster(scenario, clock=clock) as cluster:
        extra: dict[str, Any] = {}
        if token is not None:
            extra["dashboard_token"] = token
        settings = scenario_settings(
            scenario, loki_url=cluster.loki.url, slack_url=cluster.slack_url,
            poll_interval_seconds=POLL_SECONDS, remediation_mode="approve",
            slack_signing_secret=DEMO_SIGNING_SECRET, slack_approvers=DEMO_APPROVER,
            verify_timeout_seconds=300, **extra)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        box: dict[str, Any] = {}

        async def serve() -> None:
            box["stop"] = stop = asyncio.Event()
            async with build_detector(settings=settings,
                                      kube_api=kube.api_client_for(cluster.kube.url),
                                      stdout=io.StringIO(), clock=clock) as detector:
                started = loop.create_future()
                daemon = asyncio.create_task(run_daemon(detector, settings, stop=stop,
                                                        on_ready=started))
                await asyncio.wait({started, daemon}, return_when=asyncio.FIRST_COMPLETED)
                if started.done():
                    box["url"] = started.result().url
                ready.set()
                await daemon

        def thread_main() -> None:
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # shown by the test thread
                box["error"] = exc
            finally:
                ready.set()
                loop.close()

        thread = threading.Thread(target=thread_main, name="daemon", daemon=True)
        thread.start()
        ready.wait(30)
        if "url" not in box:
            thread.join(5)
            raise RuntimeError(f"the daemon did not start: {box.get('error')!r}")
        try:
            yield Daemon(url=box["url"], cluster=cluster, clock=clock, token=token)
        finally:
            loop.call_soon_threadsafe(box["stop"].set)
            thread.join(20)
        if "error" in box:
            raise box["error"]


# The test modules reach these helpers through fixtures: ``from conftest import`` would find
# whichever conftest module pytest imported first.
@pytest.fixture(scope="session")
def start_daemon():
    return running_daemon


@pytest.fixture(scope="session")
def bad_rollout() -> str:
    return BAD_ROLLOUT


@pytest.fixture(scope="session")
def take_screenshot(tmp_path_factory):
    """``take_screenshot(page, name)``: the README's pictures, ``docs/screenshots/<name>.png``
    with ``make screenshots`` (UPDATE_SCREENSHOTS=1); a temporary folder otherwise, so that
    ``make test`` leaves the checkout as it found it."""
    folder = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") == "1" \
        else tmp_path_factory.mktemp("screenshots")

    def take(page, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 1000, f"{path} is empty"
        return path

    return take


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per module: Playwright's sync API marks the test thread's event
    loop as running while it lives, which the other test files' ``asyncio.run`` would refuse."""
    if not CHROMIUM.exists():
        message = (f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                   "(apt-get install chromium; .ci/run installs it)")
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def fresh_page(browser, *, viewport: dict[str, int] = DESKTOP):
    """A page in a context of its own: no cookies, nobody logged in."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def new_page():
    """``with new_page(browser) as page:``, for module fixtures and second visitors."""
    return fresh_page


@pytest.fixture
def page(browser):
    """A fresh desktop-sized page (its own cookies) per test."""
    with fresh_page(browser) as page:
        yield page


def incident_link(page):
    """The link of the first incident in the overview's queue (``#queue [data-incident]``: the
    link itself, or the element holding it)."""
    entry = page.locator("#queue [data-incident]").first
    entry.wait_for()
    if entry.evaluate("e => e.tagName") == "A":
        return entry
    return entry.locator("a[href]").first


@pytest.fixture(scope="session")
def open_incident():
    """``open_incident(page, url)``: the overview, then the first incident's page by its link;
    returns the incident page's URL."""
    def follow(page, url: str) -> str:
        answer = page.goto(f"{url}/")
        assert answer is not None and answer.status == 200, \
            f"GET / answers {answer and answer.status}: is the dashboard wired in main.py?"
        link = incident_link(page)
        href = link.get_attribute("href")
        assert href, "the queue's incident has no link"
        with page.expect_navigation():
            link.click()
        return page.url.split("#")[0].split("?")[0]

    return follow
