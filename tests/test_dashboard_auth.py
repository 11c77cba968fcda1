"""The dashboard's writes: who may make them (web/auth.py) and the decision route (web/actions.py).

The unit cases build Starlette requests by hand. The decision route runs through the real
detector, as tests/test_remediation.py runs it: real ticks on a simulated clock, the real
kubernetes client against the loopback apiserver of the simulated cluster, REMEDIATION_MODE=approve
and DASHBOARD_TOKEN=alice:<secret>. A tiny incident page in the test renders ``_decision.html``
from ``decision_context``, as the dashboard's incident page does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jinja2
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient

from incident_detector.config import ConfigError, load_settings
from incident_detector.main import build_detector, web_routes
from incident_detector.store.db import PostgresDatabase
from incident_detector.store.journal import PROPOSED, REJECTED
from incident_detector.store.records import Store
from incident_detector.store.sessions import DashboardSessions
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer
from incident_detector.sim.world import World
from incident_detector.sources import kube
from incident_detector.web.dashboard import dashboard_routes
from incident_detector.web.actions import (
    FLASH_MESSAGES,
    TEMPLATES,
    DashboardActions,
    action_label,
    action_routes,
    flash_message,
    local_path,
)
from incident_detector.web.app import make_app
from incident_detector.web.auth import (
    SESSION_COOKIE,
    DashboardAuth,
    parse_dashboard_token,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
SECRET = "s3cr3t-with:colons-0123456789abcdef"
TOKEN = f"alice:{SECRET}"
HOST = "d.example"
SCENARIOS = Path(__file__).parent / "scenarios"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
APPROVER = "U0APPROVER"
TICK = timedelta(seconds=20)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_request(*, headers: dict[str, str] | None = None, cookie: str | None = None,
                 scheme: str = "http", host: str = HOST, method: str = "POST") -> Request:
    """A request as Starlette hands it to a route."""
    pairs = {"host": host, **{k.lower(): v for k, v in (headers or {}).items()}}
    if cookie is not None:
        pairs["cookie"] = f"{SESSION_COOKIE}={cookie}"
    return Request({
        "type": "http", "method": method, "scheme": scheme, "path": "/", "raw_path": b"/",
        "root_path": "", "query_string": b"", "client": ("10.0.0.7", 40000),
        "server": (host, 443 if scheme == "https" else 80),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs.items()],
    })


def token_auth(clock: Clock | None = None, *, token: str = TOKEN, proxy: str | None = None,
               key: bytes | None = None, store: str | None = None) -> DashboardAuth:
    """The dashboard's auth; its sessions in the store at ``store`` (a connection of its own),
    else in the process's own memory."""
    sessions = DashboardSessions(Store(store).connection) if store is not None else None
    return DashboardAuth(token=parse_dashboard_token(token) if token else None,
                         proxy_header=proxy, clock=clock or Clock(), key=key, sessions=sessions)


def session_of(auth: DashboardAuth, *, user: str = "alice", scheme: str = "http"
               ) -> tuple[str, str]:
    """A fresh session's cookie value, and its Set-Cookie header."""
    response = Response()
    auth.start_session(make_request(scheme=scheme), response, user)
    header = response.headers["set-cookie"]
    value = re.match(rf"{SESSION_COOKIE}=([^;]+);", header).group(1)
    return value, header


# --- DASHBOARD_TOKEN --------------------------------------------------------------------------


def test_name_and_secret_are_split_at_the_first_colon():
    credential = parse_dashboard_token(TOKEN)
    assert credential.user == "alice" and credential.secret == SECRET
    assert parse_dashboard_token("bob.smith-2:x:y").secret == "x:y"
    assert parse_dashboard_token("bob_2:x").user == "bob_2"


def test_a_bare_secret_is_the_user_dashboard():
    credential = parse_dashboard_token("0123456789abcdef0123")
    assert (credential.user, credential.secret) == ("dashboard", "0123456789abcdef0123")


@pytest.mark.parametrize("value", ["", "   ", ":Zq9hidden", "alice:", "al/ice:Zq9hidden",
                                   "alice@example.com:Zq9hidden", "-alice:Zq9hidden",
                                   "é:Zq9hidden", "a" * 65 + ":Zq9hidden"])
def test_a_token_that_cannot_be_read_is_refused_without_quoting_it(value):
    with pytest.raises(ValueError) as raised:
        parse_dashboard_token(value)
    assert "Zq9hidden" not in str(raised.value)


def test_the_secret_is_never_in_a_repr():
    credential = parse_dashboard_token(TOKEN)
    assert SECRET not in repr(credential)
    assert SECRET not in repr(token_auth())


def test_from_settings():
    base = {"LOKI_URL": "http://loki:3100"}
    assert not DashboardAuth.from_settings(load_settings(base), clock=Clock()).enabled
    with_token = DashboardAuth.from_settings(load_settings({**base, "DASHBOARD_TOKEN": TOKEN}),
                                             clock=Clock())
    assert with_token.enabled and with_token.token_login
    behind_proxy = DashboardAuth.from_settings(
        load_settings({**base, "AUTH_PROXY_HEADER": "X-Forwarded-User"}), clock=Clock())
    assert behind_proxy.enabled and not behind_proxy.token_login
    # A malformed token is a configuration error, found when the settings are read.
    with pytest.raises(ConfigError, match="DASHBOARD_TOKEN"):
        load_settings({**base, "DASHBOARD_TOKEN": "a/b:c"})


def test_a_short_secret_is_warned_about_without_being_logged():
    with structlog.testing.capture_logs() as logs:
        DashboardAuth.from_settings(
            load_settings({"LOKI_URL": "http://l:3100", "DASHBOARD_TOKEN": "alice:short"}),
            clock=Clock())
    assert [e["event"] for e in logs] == ["dashboard_token_short"]
    assert "short" not in repr({k: v for k, v in logs[0].items() if k != "event"})


# --- who is asking -----------------------------------------------------------------------------


def test_an_anonymous_reader_has_no_user():
    assert token_auth().user(make_request()) is None
    assert DashboardAuth(token=None, proxy_header=None, clock=Clock()).user(make_request()) \
        is None


def test_a_session_cookie_names_its_user_and_is_strict():
    auth = token_auth()
    cookie, header = session_of(auth)
    assert auth.user(make_request(cookie=cookie)) == "alice"
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=strict" in header.lower() and "path=/" in header.lower()
    assert "max-age=28800" in header.lower() and "secure" not in attributes


def test_the_cookie_is_secure_over_https():
    _, header = session_of(token_auth(), scheme="https")
    assert "secure" in header.lower()
    response = Response()
    token_auth().start_session(make_request(headers={"X-Forwarded-Proto": "https"}), response,
                               "alice")
    assert "secure" in response.headers["set-cookie"].lower()


def test_a_tampered_cookie_is_worth_nothing():
    auth = token_auth()
    cookie, _ = session_of(auth)
    payload, mac = cookie.split(".")
    import base64

    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    forged_payload = base64.urlsafe_b64encode(decoded.replace("alice", "mallory").encode()
                                              ).rstrip(b"=").decode()
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (f"{forged_payload}.{mac}", f"{payload}.{flipped}", payload, f"{payload}.",
                   "", "x" * 5000, f"{payload}.{mac}.{mac}", cookie.upper()):
        assert auth.user(make_request(cookie=forged)) is None, forged
    # Unknown to another store (here: another process's own sessions, no store shared).
    assert token_auth(key=b"k" * 32).user(make_request(cookie=cookie)) is None


def test_a_cookie_for_another_user_name_is_refused():
    # A session is the configured user's: a cookie naming someone else (even correctly
    # signed) does not count.
    auth = token_auth()
    cookie, _ = session_of(auth, user="mallory")
    assert auth.user(make_request(cookie=cookie)) is None


def test_a_session_expires_after_eight_hours():
    clock = Clock()
    auth = token_auth(clock)
    cookie, _ = session_of(auth)
    clock.now += timedelta(hours=7, minutes=59)
    assert auth.user(make_request(cookie=cookie)) == "alice"
    clock.now += timedelta(minutes=1)
    assert auth.user(make_request(cookie=cookie)) is None


def test_logging_out_ends_the_session_even_for_a_copy_of_the_cookie():
    auth = token_auth()
    cookie, _ = session_of(auth)
    response = Response()
    auth.end_session(make_request(cookie=cookie), response)
    assert auth.user(make_request(cookie=cookie)) is None
    assert f"{SESSION_COOKIE}=" in response.headers["set-cookie"]
    assert "max-age=0" in response.headers["set-cookie"].lower()
    other, _ = session_of(auth)
    assert auth.user(make_request(cookie=other)) == "alice"


def test_a_bearer_token_is_for_scripts():
    auth = token_auth()
    for credential in (SECRET, TOKEN):
        identity = auth.identify(make_request(headers={"Authorization": f"Bearer {credential}"}))
        assert identity is not None and (identity.user, identity.via) == ("alice", "bearer")
    assert auth.user(make_request(headers={"Authorization": "Bearer wrong"})) is None
    assert auth.user(make_request(headers={"Authorization": f"Basic {SECRET}"})) is None
    # An ingress's own Authorization does not hide the session.
    cookie, _ = session_of(auth)
    assert auth.user(make_request(headers={"Authorization": "Basic YTpi"}, cookie=cookie)) \
        == "alice"


def test_the_login_form_accepts_the_secret_or_the_whole_token():
    auth = token_auth()
    assert auth.check_token(SECRET) == auth.check_token(TOKEN) == "alice"
    for wrong in ("", "alice", SECRET[:-1], SECRET + "x", "alice:" + SECRET[:-1], "x" * 5000):
        assert auth.check_token(wrong) is None
    assert token_auth(token="").check_token(SECRET) is None


def test_the_proxy_header_names_the_user():
    auth = token_auth(token="", proxy="X-Forwarded-User")
    assert auth.enabled
    identity = auth.identify(make_request(headers={"x-forwarded-user": "alice@example.com"}))
    assert identity is not None and (identity.user, identity.via) == ("alice@example.com", "proxy")
    assert auth.user(make_request()) is None
    assert auth.user(make_request(headers={"X-Forwarded-User": ""})) is None
    assert auth.user(make_request(headers={"X-Forwarded-User": "a\tb"})) is None
    assert auth.user(make_request(headers={"X-Forwarded-User": "x" * 300})) is None


def test_the_proxy_header_is_not_read_unless_configured():
    auth = token_auth()
    assert auth.user(make_request(headers={"X-Forwarded-User": "mallory"})) is None


def test_with_a_token_and_a_proxy_both_work():
    auth = token_auth(proxy="X-Forwarded-User")
    cookie, _ = session_of(auth)
    assert auth.user(make_request(cookie=cookie)) == "alice"
    assert auth.user(make_request(headers={"X-Forwarded-User": "bob"}, cookie=cookie)) == "bob"


# --- sessions in the store: every replica, every restart -----------------------------------------


def test_a_session_and_its_csrf_value_are_good_on_another_replica(store_target):
    # Two processes (each its own key) on one store: what one signed in, the other knows, and
    # the form one rendered is accepted when posted to the other.
    clock = Clock()
    one = token_auth(clock, key=b"1" * 32, store=store_target)
    other = token_auth(clock, key=b"2" * 32, store=store_target)
    cookie, _ = session_of(one)
    request = make_request(cookie=cookie)
    assert other.user(request) == "alice"
    csrf = one.csrf_token(request)
    assert other.check_csrf(request, csrf) and other.csrf_token(request) == csrf
    # Signed out on the other: over on the first too, form and all.
    other.end_session(request, Response())
    assert one.user(request) is None and not one.check_csrf(request, csrf)


@contextlib.asynccontextmanager
async def replica(store: Store, clock: Clock, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    """A detector on ``store`` built and served as main.py does (sources unreachable: none is
    called), and a client of its app; ``env``: more settings."""
    settings = load_settings({"LOKI_URL": "http://127.0.0.1:1", "DASHBOARD_TOKEN": TOKEN, **env})
    api = kube.api_client_for("http://127.0.0.1:1")
    async with build_detector(settings=settings, kube_api=api, stdout=io.StringIO(),
                              clock=clock, store=store) as detector:
        app = make_app(detector, extra_routes=web_routes(detector, settings))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=f"http://{HOST}", follow_redirects=False) as web:
            yield web


async def knows(web: httpx.AsyncClient, cookie: str) -> bool:
    """Whether the replica holds the session of ``cookie``: signing out with a stale form is
    refused (403) only for a user it recognises; for nobody, it just clears the cookie."""
    answer = await web.post("/logout", data={"csrf": "1.stale"},
                            headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
    assert answer.status_code in (403, 303), answer.text
    return answer.status_code == 403


def test_a_session_is_known_to_another_replica_and_after_a_restart_until_it_ends(store_target):
    clock = Clock()

    async def flow() -> None:
        async with replica(Store(store_target), clock) as first, \
                replica(Store(store_target), clock) as second:
            answer = await first.post("/login", data={"token": TOKEN},
                                      headers={"Origin": f"http://{HOST}"})
            assert answer.status_code == 303
            cookie = answer.cookies[SESSION_COOKIE]
            assert await knows(second, cookie) and await knows(first, cookie)
            assert not await knows(second, cookie[:-1] + ("A" if cookie[-1] != "A" else "B"))
        # Both stopped; a new process on the same store.
        async with replica(Store(store_target), clock) as restarted:
            clock.now += timedelta(hours=7, minutes=59)
            assert await knows(restarted, cookie)
            clock.now += timedelta(minutes=1)
            assert not await knows(restarted, cookie)
        left = Store(store_target)
        assert left.connection.execute("SELECT COUNT(*) FROM dashboard_sessions").fetchone()[0] \
            == 0  # refused, and pruned

    asyncio.run(flow())


def test_while_the_store_is_away_sessions_get_503_and_come_back_with_it(
        postgres_server, pg_url):
    clock = Clock()
    seconds = [0.0]  # the store's reconnection backoff runs on this clock
    store = Store(pg_url, db=PostgresDatabase(pg_url, monotonic=lambda: seconds[0]))

    async def flow() -> None:
        async with replica(store, clock) as web:
            answer = await web.post("/login", data={"token": TOKEN})
            cookie = answer.cookies[SESSION_COOKIE]
            postgres_server.stop()
            try:
                for path, data in (("/logout", {"csrf": "1.stale"}), ("/login", {"token": TOKEN})):
                    away = await web.post(path, data=data,
                                          headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
                    assert away.status_code == 503, (path, away.text)
                    assert away.headers["retry-after"] == "5"
                    assert "store is unavailable" in away.text and "pw-" not in away.text
            finally:
                postgres_server.start()
            seconds[0] += 60.0
            assert await knows(web, cookie)

    asyncio.run(flow())


def test_while_the_store_is_away_a_proxy_users_form_gets_503_and_is_judged_with_it_back(
        postgres_server, pg_url):
    # The key of a proxy's users' CSRF values is read from the store when first needed.
    clock = Clock()
    seconds = [0.0]
    store = Store(pg_url, db=PostgresDatabase(pg_url, monotonic=lambda: seconds[0]))
    alice = {"X-Forwarded-User": "alice"}
    wrong = {"csrf": f"{10 ** 11}." + "A" * 43}  # well formed, so its MAC is computed

    async def flow() -> None:
        async with replica(store, clock, AUTH_PROXY_HEADER="X-Forwarded-User") as web:
            postgres_server.stop()
            try:
                away = await web.post("/logout", data=wrong, headers=alice)
                assert away.status_code == 503 and away.headers["retry-after"] == "5"
            finally:
                postgres_server.start()
            seconds[0] += 60.0
            back = await web.post("/logout", data=wrong, headers=alice)
            assert back.status_code == 403, back.text

    asyncio.run(flow())


# --- CSRF and origin ----------------------------------------------------------------------------


def test_the_csrf_value_is_the_sessions_own():
    clock = Clock()
    auth = token_auth(clock)
    cookie, _ = session_of(auth)
    request = make_request(cookie=cookie)
    csrf = auth.csrf_token(request)
    assert csrf and csrf == auth.csrf_token(make_request(cookie=cookie))  # stable in a session
    assert auth.check_csrf(request, csrf)
    # Another session of the same user, another value.
    other, _ = session_of(auth)
    assert not auth.check_csrf(make_request(cookie=other), csrf)
    assert not auth.check_csrf(request, auth.csrf_token(make_request(cookie=other)))
    # Nothing for nobody, and nothing from another process.
    assert auth.csrf_token(make_request()) == ""
    assert not auth.check_csrf(make_request(), csrf)
    assert not token_auth(clock, key=b"k" * 32).check_csrf(request, csrf)


@pytest.mark.parametrize("value", [None, "", 12, "garbage", "1.2", "9999999999." + "A" * 43])
def test_a_csrf_value_that_is_not_one_is_refused(value):
    auth = token_auth()
    cookie, _ = session_of(auth)
    assert not auth.check_csrf(make_request(cookie=cookie), value)


def test_a_csrf_value_with_one_character_changed_is_refused():
    auth = token_auth()
    cookie, _ = session_of(auth)
    request = make_request(cookie=cookie)
    csrf = auth.csrf_token(request)
    flipped = csrf[:-1] + ("A" if csrf[-1] != "A" else "B")
    longer_life = str(int(csrf.split(".")[0]) + 3600) + "." + csrf.split(".")[1]
    assert not auth.check_csrf(request, flipped)
    assert not auth.check_csrf(request, longer_life)


def test_the_csrf_value_dies_with_the_session():
    clock = Clock()
    auth = token_auth(clock)
    cookie, _ = session_of(auth)
    csrf = auth.csrf_token(make_request(cookie=cookie))
    auth.end_session(make_request(cookie=cookie), Response())
    assert not auth.check_csrf(make_request(cookie=cookie), csrf)


def test_a_proxy_users_csrf_value_is_good_on_another_replica(store_target, tmp_path):
    # Behind an authenticating proxy there is no session: the value is keyed by the key the
    # store keeps, drawn by the first replica that needs it, so a form shown by one replica
    # posts to the other. A detector on another store has a key of its own.
    clock = Clock()
    one = token_auth(clock, token="", proxy="X-Forwarded-User", store=store_target)
    other = token_auth(clock, token="", proxy="X-Forwarded-User", store=store_target)
    elsewhere = token_auth(clock, token="", proxy="X-Forwarded-User",
                           store=str(tmp_path / "elsewhere.sqlite3"))
    alice = make_request(headers={"X-Forwarded-User": "alice"})
    csrf = one.csrf_token(alice)
    assert other.check_csrf(alice, csrf) and other.csrf_token(alice) == csrf
    assert not elsewhere.check_csrf(alice, csrf)
    # And after a restart on the same store.
    again = token_auth(clock, token="", proxy="X-Forwarded-User", store=store_target)
    assert again.check_csrf(alice, csrf)


def test_a_proxy_users_csrf_value_is_bound_to_the_user_and_expires():
    clock = Clock()
    auth = token_auth(clock, token="", proxy="X-Forwarded-User")
    alice = make_request(headers={"X-Forwarded-User": "alice"})
    bob = make_request(headers={"X-Forwarded-User": "bob"})
    csrf = auth.csrf_token(alice)
    assert auth.check_csrf(alice, csrf) and not auth.check_csrf(bob, csrf)
    clock.now += timedelta(hours=7)
    assert auth.check_csrf(alice, csrf)
    clock.now += timedelta(hours=2, seconds=1)
    assert not auth.check_csrf(alice, csrf)
    assert auth.check_csrf(alice, auth.csrf_token(alice))


@pytest.mark.parametrize("headers, same", [
    ({}, True),
    ({"Origin": f"http://{HOST}"}, True),
    ({"Origin": f"https://{HOST}"}, True),
    ({"Origin": f"https://{HOST}:443"}, True),
    ({"Origin": f"HTTP://{HOST.upper()}"}, True),
    ({"Referer": f"https://{HOST}/incidents/r1"}, True),
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": f"https://{HOST}.evil.example"}, False),
    ({"Origin": f"https://{HOST}:8443"}, False),
    ({"Origin": "null"}, False),
    ({"Origin": ""}, False),
    ({"Referer": "https://evil.example/x"}, False),
    # The Origin decides when both are sent.
    ({"Origin": "https://evil.example", "Referer": f"https://{HOST}/"}, False),
    ({"Origin": f"javascript://{HOST}"}, False),
])
def test_origin_and_referer_must_name_this_host(headers, same):
    auth = token_auth()
    cookie, _ = session_of(auth)
    request = make_request(headers=headers, cookie=cookie)
    assert auth.same_origin(request) is same
    assert auth.check_csrf(request, auth.csrf_token(make_request(cookie=cookie))) is same


# --- small helpers of the routes --------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("/incidents/r1?x=1", "/incidents/r1?x=1"), ("/", "/"), (None, "/"), ("", "/"),
    ("//evil.example/", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"),
    ("incidents", "/"), ("/a\r\nSet-Cookie: x=1", "/"), ("javascript:alert(1)", "/"),
    ("/" + "a" * 3000, "/"),
])
def test_next_is_only_ever_a_local_path(value, expected):
    assert local_path(value) == expected


def test_action_labels_read_as_in_slack():
    assert action_label("rollback", {"to_revision": 1}) == "Roll back to revision 1"
    assert action_label("rollback", {}) == "Roll back"
    assert action_label("delete-pod", {}) == "Delete the pod"


def test_only_known_flash_codes_are_shown():
    def flash(query: str) -> str | None:
        request = Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                           "query_string": query.encode()})
        return flash_message(request)

    assert flash("flash=done") == FLASH_MESSAGES["done"]
    assert flash("flash=Call+555-0100+now") is None and flash("") is None


# --- the login routes ------------------------------------------------------------------------

# base.html belongs to the pages; these tests give login.html a minimal one of their own.
STUB_BASE = ("<!doctype html><html><head><title>{{ title }}</title></head>"
             "<body><main>{% block main %}{% endblock %}</main></body></html>")


def stub_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.ChoiceLoader([
        jinja2.DictLoader({"base.html": STUB_BASE}), jinja2.FileSystemLoader(TEMPLATES)]),
        autoescape=True)
    return Jinja2Templates(env=env)


def login_client(clock: Clock | None = None, **kw: Any) -> TestClient:
    auth = token_auth(clock)
    actions = DashboardActions(auth=auth, remediator=None, clock=clock or Clock(),
                               templates=stub_templates(), **kw)
    return TestClient(Starlette(routes=actions.routes()), base_url=f"http://{HOST}",
                      follow_redirects=False)


def test_the_login_page_is_a_form_with_the_next_page():
    with login_client() as client:
        page = client.get("/login", params={"next": "/incidents/r1"})
        assert page.status_code == 200
        assert 'name="token"' in page.text and 'type="password"' in page.text
        assert 'name="next" value="/incidents/r1"' in page.text
        assert 'name="next" value="/"' in client.get("/login?next=//evil.example").text


def test_logging_in_sets_the_session_and_goes_to_next():
    with login_client() as client:
        answer = client.post("/login", data={"token": TOKEN, "next": "/incidents/r1"},
                             headers={"Origin": f"http://{HOST}"})
        assert answer.status_code == 303 and answer.headers["location"] == "/incidents/r1"
        assert "httponly" in answer.headers["set-cookie"].lower()
        assert client.cookies.get(SESSION_COOKIE)
        answer = client.post("/login", data={"token": SECRET, "next": "https://evil.example"})
        assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_a_wrong_token_gets_the_form_again_and_no_cookie():
    with structlog.testing.capture_logs() as logs, login_client() as client:
        answer = client.post("/login", data={"token": "alice:guess", "next": "/incidents/r1"})
        assert answer.status_code == 401 and "set-cookie" not in answer.headers
        assert "not the dashboard" in answer.text and 'name="token"' in answer.text
        assert "alice:guess" not in answer.text  # not echoed back
        assert 'value="/incidents/r1"' in answer.text
    assert [e["reason"] for e in logs if e["event"] == "dashboard_login_refused"] \
        == ["wrong_token"]
    assert "guess" not in repr(logs)


def test_logins_are_rate_limited_per_address():
    clock = Clock()
    with login_client(clock) as client:
        statuses = [client.post("/login", data={"token": "wrong"}).status_code
                    for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        # Even the right token waits.
        assert client.post("/login", data={"token": TOKEN}).status_code == 429
        clock.now += timedelta(minutes=1)
        assert client.post("/login", data={"token": TOKEN}).status_code == 303


def test_a_login_from_another_site_is_refused():
    with login_client() as client:
        answer = client.post("/login", data={"token": TOKEN},
                             headers={"Origin": "https://evil.example"})
        assert answer.status_code == 403 and not client.cookies.get(SESSION_COOKIE)


def test_logging_out_needs_the_csrf_value():
    clock = Clock()
    auth = token_auth(clock)
    actions = DashboardActions(auth=auth, remediator=None, clock=clock,
                               templates=stub_templates())

    async def csrf(request: Request) -> Response:
        return Response(auth.csrf_token(request))

    app = Starlette(routes=[*actions.routes(), Route("/csrf", csrf)])
    with TestClient(app, base_url=f"http://{HOST}", follow_redirects=False) as client:
        client.post("/login", data={"token": TOKEN})
        cookie = client.cookies.get(SESSION_COOKIE)
        assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
        answer = client.post("/logout", data={"csrf": client.get("/csrf").text})
        assert answer.status_code == 303
        assert auth.user(make_request(cookie=cookie)) is None


def test_the_login_page_renders_with_the_pages_base():
    from incident_detector.web.dashboard import templates
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    actions = DashboardActions(auth=token_auth(), remediator=None, clock=Clock(),
                               templates=templates(),
                               page_context=lambda request: {"leader": {"role": "leader"}})
    static = Mount("/static", app=StaticFiles(directory=TEMPLATES.parent / "static",
                                              check_dir=False), name="static")
    with TestClient(Starlette(routes=[*actions.routes(), static]), base_url=f"http://{HOST}"
                    ) as client:
        page = client.get("/login?next=/incidents/r1")
        assert page.status_code == 200 and 'name="token"' in page.text
        assert "<title>Sign in" in page.text and "leader" in page.text
        wrong = client.post("/login", data={"token": "nope", "next": "/incidents/r1"})
        assert wrong.status_code == 401 and 'role="alert"' in wrong.text


def test_a_read_only_dashboard_has_no_write_route():
    auth = DashboardAuth(token=None, proxy_header=None, clock=Clock())
    assert action_routes(auth=auth, remediator=None, clock=Clock()) == []
    with TestClient(Starlette(routes=action_routes(auth=auth, remediator=None, clock=Clock()))
                    ) as client:
        assert client.get("/login").status_code == 404
        assert client.post("/login", data={"token": TOKEN}).status_code == 404


def test_behind_a_proxy_there_is_no_login_form():
    auth = token_auth(token="", proxy="X-Forwarded-User")
    paths = {route.path for route in DashboardActions(auth=auth, remediator=None,
                                                      clock=Clock()).routes()}
    assert paths == set()  # and no decision route without a remediator


# --- the decision, through the real detector --------------------------------------------------

HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def forms(html: str) -> dict[str, dict[str, str]]:
    """The decision forms of a page, by kind: their hidden fields."""
    found = {}
    for form in re.findall(r"<form [^>]*>.*?</form>", html, flags=re.S):
        fields = dict(HIDDEN.findall(form))
        if "kind" in fields:
            found[fields["kind"]] = fields
    return found


Flow = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


def run_with_dashboard(tmp_path, flow: Flow, *, dashboard_token: str | None = TOKEN,
                       **extra: Any) -> dict[str, Any]:
    """The bad rollout through the real detector until it asks; then ``flow`` with a client
    of the app (the dashboard's pages and its write routes); what happened after."""
    scenario = load_scenario(SCENARIOS / "bad-rollout-sharp-spike.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    loki = LokiFake(world, clock)
    api = KubeApiFake(world, clock, on_world_change=lambda changed: setattr(loki, "world", changed))
    sink = SlackSink()
    seen: dict[str, Any] = {}
    if dashboard_token is not None:
        extra["dashboard_token"] = dashboard_token

    async def run() -> None:
        with LocalServer(api) as k, LocalServer(loki) as lk, LocalServer(sink) as sl:
            settings = scenario_settings(
                scenario, loki_url=lk.url, slack_url=sl.url + "/services/T/B/X",
                remediation_mode="approve", slack_signing_secret=SLACK_SECRET,
                slack_approvers=APPROVER, verify_timeout_seconds=60, **extra)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=io.StringIO(), clock=clock,
                                      store=Store(tmp_path / "state.sqlite3")) as detector:
                remediator = detector.remediator
                auth = DashboardAuth.from_settings(
                    settings, clock=clock,
                    sessions=DashboardSessions(detector.store.connection))
                actions = DashboardActions(auth=auth, remediator=remediator, clock=clock)

                # Wired as main.web_routes wires them: the real incident page, whose
                # decision part comes from these actions.
                app = make_app(detector, extra_routes=[
                    *actions.routes(),
                    *dashboard_routes(detector=detector,
                                      decision_context=actions.decision_context, clock=clock)])
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}",
                                             follow_redirects=False) as web:
                    while not sink.messages and clock.now < world.at(scenario.duration):
                        await detector.tick()
                        await detector.outbox.deliver_due()
                        clock.now += TICK
                    [entry] = detector.journal.recent(since=SCENARIO_EPOCH)
                    assert entry.state == PROPOSED
                    seen.update(entry=entry, detector=detector, actions=actions, auth=auth,
                                web=web, transport=transport)
                    with structlog.testing.capture_logs() as logs:
                        await flow(web, seen)
                    seen["logs"] = logs
                    seen["audit"] = (await web.get("/api/audit")).json()["audit"]
                    seen["journal"] = detector.journal.get(entry.id)
                    seen["open_tokens"] = remediator.tokens.open_count() if remediator else 0

    asyncio.run(run())
    seen["writes"] = api.writes
    return seen


async def log_in(web: httpx.AsyncClient, token: str = TOKEN) -> None:
    answer = await web.post("/login", data={"token": token, "next": "/incidents/r1"},
                            headers={"Origin": f"http://{HOST}"})
    assert answer.status_code == 303 and answer.headers["location"] == "/incidents/r1"


def test_approving_from_the_page_rolls_back_once_and_the_audit_says_who(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        tokens = seen["detector"].remediator.tokens
        # An anonymous reader sees the way to sign in, and no token is issued for them.
        opened = tokens.open_count()
        page = (await web.get("/incidents/r1")).text
        assert forms(page) == {} and "/login?next=%2Fincidents%2Fr1" in page
        assert tokens.open_count() == opened

        await log_in(web)
        page = (await web.get("/incidents/r1")).text
        found = forms(page)
        assert set(found) == {"approve", "reject"}
        assert 'id="decision"' in page and '<button type="submit" id="approve"' in page
        assert "Approve: Roll back to revision 1" in page and "Signed in as" in page
        assert 'action="/incidents/r1/decision"' in page
        approve = found["approve"]
        assert approve["journal_id"] == str(seen["entry"].id)
        assert approve["token"] != found["reject"]["token"] and approve["csrf"]
        seen["csrf"] = approve["csrf"]
        same_site = {"Origin": f"http://{HOST}"}

        answer = await web.post("/incidents/r1/decision", data=approve, headers=same_site)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/incidents/r1?flash=done"
        assert FLASH_MESSAGES["done"] in (await web.get(answer.headers["location"])).text
        # The same form again: already decided, nothing more.
        again = await web.post("/incidents/r1/decision", data=approve, headers=same_site)
        assert again.headers["location"] == "/incidents/r1?flash=already_decided"
        # The other button of the same page, too.
        reject = await web.post("/incidents/r1/decision", data=found["reject"], headers=same_site)
        assert reject.headers["location"] == "/incidents/r1?flash=already_decided"
        as_json = await web.post("/incidents/r1/decision", data=approve,
                                 headers={**same_site, "Accept": "application/json"})
        assert as_json.status_code == 409 and as_json.json()["result"] == "already_decided"
        # The question is answered: the page offers no more buttons, and issues no tokens.
        page = (await web.get("/incidents/r1")).text
        assert forms(page) == {} and 'id="decision"' not in page and 'id="approve"' not in page

    seen = run_with_dashboard(tmp_path, flow)
    [write] = seen["writes"]
    assert write.method == "PATCH" and write.path.endswith("/deployments/payments-api")
    decisions = [(row["decision"], row["who"]) for row in reversed(seen["audit"])]
    assert decisions[:3] == [("requested", "detector"), ("approved", "dashboard:alice"),
                             ("executed", "detector")]
    assert seen["journal"].decided_by == "dashboard:alice"
    assert seen["journal"].state in ("done", "verified")
    assert seen["open_tokens"] == 0
    # Nothing secret in a log line: not the token, not the cookie, not a CSRF value.
    logged = repr(seen["logs"])
    assert SECRET not in logged and seen["csrf"] not in logged
    events = [e["event"] for e in seen["logs"]]
    assert "dashboard_login" in events and "dashboard_decision" in events


def test_forged_posts_are_refused_and_write_nothing(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        await log_in(web)
        found = forms((await web.get("/incidents/r1")).text)
        approve = found["approve"]
        path = "/incidents/r1/decision"
        same_site = {"Origin": f"http://{HOST}"}
        async with httpx.AsyncClient(transport=seen["transport"], base_url=f"http://{HOST}",
                                     follow_redirects=False) as stranger:
            # No session: the form as it was on alice's page, CSRF and all.
            assert (await stranger.post(path, data=approve, headers=same_site)).status_code \
                == 401
            assert (await stranger.post(path, data=approve,
                                        headers={**same_site, "Authorization": "Bearer nope"})
                    ).status_code == 401
        # Alice's browser, made to post by another site: no CSRF value, a wrong one, or the
        # right one (were it leaked) from another Origin.
        no_csrf = {k: v for k, v in approve.items() if k != "csrf"}
        for data, headers in (
                (no_csrf, same_site),
                ({**approve, "csrf": "1.AAAA"}, same_site),
                ({**approve, "csrf": approve["csrf"][:-1] + "x"}, same_site),
                (approve, {"Origin": "https://evil.example"}),
                (approve, {"Referer": "https://evil.example/page"}),
                (approve, {"Origin": "null"})):
            answer = await web.post(path, data=data, headers=headers)
            assert answer.status_code == 403, (data, headers)
        # A right form with the wrong button's token (or another question's) spends nothing.
        mismatched = await web.post(path, data={**approve, "token": found["reject"]["token"]},
                                    headers=same_site)
        assert mismatched.status_code == 400
        other = await web.post(path, data={**approve, "journal_id": "999"}, headers=same_site)
        assert other.status_code == 400
        bad = await web.post(path, data={**approve, "kind": "delete"}, headers=same_site)
        assert bad.status_code == 400
        assert (await web.post(path, content=b'{"kind": "approve"}', headers={
            **same_site, "Content-Type": "application/json"})).status_code == 415
        assert (await web.post(path, data={**approve, "pad": "x" * 9000},
                               headers=same_site)).status_code == 413
        tokens = seen["detector"].remediator.tokens
        assert tokens.peek(approve["token"]) is not None
        assert tokens.peek(found["reject"]["token"]) is not None

    seen = run_with_dashboard(tmp_path, flow)
    assert seen["writes"] == []
    assert seen["journal"].state == PROPOSED
    assert [row["decision"] for row in seen["audit"]] == ["requested"]
    refused = [e for e in seen["logs"] if e["event"] == "dashboard_decision_refused"]
    assert {e["reason"] for e in refused} >= {"not_signed_in", "csrf", "token_mismatch",
                                              "bad_fields", "unsupported_media_type",
                                              "body_too_large"}


def test_a_script_rejects_with_the_bearer_token_and_gets_json(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        bearer = {"Authorization": f"Bearer {SECRET}", "Accept": "application/json"}
        # The script reads the page like anyone (with its bearer token, it gets the forms).
        found = forms((await web.get("/incidents/r1", headers=bearer)).text)
        reject = {k: v for k, v in found["reject"].items() if k != "csrf"}  # no CSRF needed
        answer = await web.post("/incidents/r1/decision", data=reject, headers=bearer)
        assert answer.status_code == 200
        assert answer.json() == {"result": "rejected", "message": FLASH_MESSAGES["rejected"],
                                 "journal_id": seen["entry"].id, "state": REJECTED}
        # A bearer request from a browser page of another site is still refused.
        approve = found["approve"]
        cross = await web.post("/incidents/r1/decision", data=approve,
                               headers={**bearer, "Origin": "https://evil.example"})
        assert cross.status_code == 403

    seen = run_with_dashboard(tmp_path, flow)
    assert seen["writes"] == [] and seen["journal"].state == REJECTED
    assert [(row["decision"], row["who"]) for row in reversed(seen["audit"])] \
        == [("requested", "detector"), ("rejected", "dashboard:alice")]


def test_without_a_dashboard_token_the_dashboard_is_read_only(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        assert seen["actions"].routes() == [] and not seen["auth"].enabled
        page = (await web.get("/incidents/r1")).text
        assert forms(page) == {} and 'id="decision"' not in page and 'id="approve"' not in page
        for path in ("/incidents/r1/decision", "/login", "/logout"):
            answer = await web.post(path, data={"journal_id": str(seen["entry"].id),
                                                "kind": "approve", "token": "x", "csrf": "y"})
            assert answer.status_code == 404, path
        request = Request({"type": "http", "method": "GET", "path": "/incidents/r1",
                           "headers": [], "query_string": b"", "path_params": {"id": "r1"}})
        incident = {"remediation": {"journal_id": seen["entry"].id}}
        assert seen["actions"].decision_context(request, incident) is None

    seen = run_with_dashboard(tmp_path, flow, dashboard_token=None)
    assert seen["writes"] == [] and seen["journal"].state == PROPOSED


def test_decision_context_is_none_without_a_proposed_entry_of_this_incident(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        actions, entry = seen["actions"], seen["entry"]
        request = Request({"type": "http", "method": "GET", "path": "/incidents/r1",
                           "headers": [(b"authorization", f"Bearer {SECRET}".encode())],
                           "query_string": b"", "path_params": {"id": "r1"}, "root_path": ""})
        mine = {"namespace": entry.key[0], "deployment": entry.key[1], "revision": entry.key[2]}
        assert actions.decision_context(request, {**mine, "remediation": None}) is None
        assert actions.decision_context(request, {**mine, "remediation": {"journal_id": 999}}) \
            is None
        assert actions.decision_context(request, {**mine, "revision": 7, "remediation": {
            "journal_id": entry.id}}) is None
        assert actions.decision_context(request, {**mine, "remediation": {
            "journal_id": str(entry.id)}}) is None
        # Found through the incident's record or its actions, as the pages' queries give them.
        by_record = actions.decision_context(request, {**mine, "record": {
            "remediation": {"journal_id": entry.id}}})
        by_actions = actions.decision_context(request, {**mine, "actions": [
            {"id": entry.id, "state": "proposed"}]})
        assert by_record and by_actions and by_record["journal_id"] == entry.id
        context = actions.decision_context(request, {**mine, "remediation": {
            "journal_id": entry.id}})
        assert context is not None
        assert set(context) >= {"user", "csrf", "journal_id", "action", "label",
                                "approve_token", "reject_token", "post_url"}
        assert context["user"] == "alice" and context["action"] == "rollback"
        assert context["post_url"] == "/incidents/r1/decision"

    run_with_dashboard(tmp_path, flow)


def test_with_the_production_policy_a_dashboard_approval_rolls_back(tmp_path):
    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        await log_in(web)
        approve = forms((await web.get("/incidents/r1")).text)["approve"]
        answer = await web.post("/incidents/r1/decision", data=approve,
                                headers={"Origin": f"http://{HOST}"})
        assert answer.headers["location"] == "/incidents/r1?flash=done"

    seen = run_with_dashboard(tmp_path, flow)
    assert len(seen["writes"]) == 1


def test_the_incident_page_says_what_became_of_the_decision(tmp_path):
    from incident_detector.web.actions import FLASH_MESSAGES

    async def flow(web: httpx.AsyncClient, seen: dict[str, Any]) -> None:
        page = await web.get("/incidents/r1?flash=done")
        seen["done"] = page.text
        seen["status"] = page.status_code
        seen["made_up"] = (await web.get("/incidents/r1?flash=%3Cscript%3E")).text

    seen = run_with_dashboard(tmp_path, flow)
    assert FLASH_MESSAGES["done"] in seen["done"] or \
        FLASH_MESSAGES["done"].replace("'", "&#39;") in seen["done"]
    assert seen["status"] == 200 and 'id="flash"' in seen["done"]
    assert "<script>" not in seen["made_up"] and 'id="flash"' not in seen["made_up"]
