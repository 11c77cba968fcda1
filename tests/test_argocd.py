"""The Argo CD client against respx routes answering with Argo CD's shapes (tests/fixtures/argocd),
and the choice of the history entry a rollback goes back to."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx
import structlog
from pydantic import SecretStr

from incident_detector.act.argocd import (
    Application,
    ArgoCdClient,
    ArgoCdError,
    HistoryEntry,
    NoTarget,
    Target,
    choose_target,
    cli_rollback,
    parse_application,
    target_entry,
)

FIXTURES = Path(__file__).parent / "fixtures" / "argocd"
BASE = "https://argocd.example.test"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.argocd-test-token.c2lnbmF0dXJl"
GOOD = "8f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d"
BAD = "c0ffee4a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
OLD = "5b2f6e0c1a9d4e7f8a3b2c1d0e9f8a7b6c5d4e3f"
ROLLOUT = datetime(2026, 11, 23, 18, 1, tzinfo=timezone.utc)
INCIDENT = ROLLOUT + timedelta(minutes=2)


def fixture(name: str) -> tuple[int, dict]:
    exchange = json.loads((FIXTURES / name).read_text())
    return exchange["response"]["status"], exchange["response"]["json"]


def answer(name: str) -> httpx.Response:
    status, body = fixture(name)
    return httpx.Response(status, json=body)


def client(**extra) -> ArgoCdClient:
    return ArgoCdClient(base_url=BASE, token=SecretStr(TOKEN), timeout=2.0, **extra)


def run(coro):
    return asyncio.run(coro)


# The client -----------------------------------------------------------------------------------


@respx.mock
def test_get_application_parses_what_a_rollback_needs_and_sends_the_bearer_token():
    route = respx.get(f"{BASE}/api/v1/applications/payments").mock(
        return_value=answer("application_degraded.json"))
    app = run(client().get_application("payments"))
    assert route.called
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert "appNamespace" not in request.url.params
    assert (app.name, app.namespace, app.resource_version) == ("payments", "argocd", "918273")
    assert (app.sync_status, app.sync_revision, app.health_status) == ("Synced", BAD, "Degraded")
    assert app.auto_sync is False and app.busy is False
    assert app.operation_phase == "Succeeded" and app.operation_revision == BAD
    assert [(e.id, e.revision) for e in app.history] == [(3, OLD), (4, GOOD), (5, BAD)]
    assert app.history[1].deployed_at == datetime(2026, 11, 22, 18, 0, 31, tzinfo=timezone.utc)
    assert app.current == app.history[-1]


@respx.mock
def test_an_application_in_another_namespace_is_asked_with_app_namespace():
    route = respx.get(f"{BASE}/api/v1/applications/payments",
                      params={"appNamespace": "team-a"}).mock(
        return_value=answer("application_degraded.json"))
    run(client().get_application("payments", "team-a"))
    assert route.calls.last.request.url.params["appNamespace"] == "team-a"


@pytest.mark.parametrize(("name", "auto_sync"), [
    ("application_degraded.json", False),
    ("application_auto_sync.json", True),
    ("application_auto_sync_disabled.json", False),  # Argo CD 3's automated.enabled: false
])
def test_auto_sync_is_read_as_argo_cd_reads_it(name, auto_sync):
    assert parse_application(fixture(name)[1]).auto_sync is auto_sync


@respx.mock
def test_rollback_sends_an_application_rollback_request():
    route = respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(
        return_value=answer("rollback_ok.json"))
    app = run(client().rollback("payments", history_id=4, dry_run=False))
    request = route.calls.last.request
    assert json.loads(request.content) == {"name": "payments", "id": 4, "dryRun": False,
                                           "prune": False}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    # Argo CD answers with the Application, its operation set to the sync it started.
    assert app.operation_pending and app.busy and app.operation_revision == GOOD


@respx.mock
def test_rollback_dry_run_and_app_namespace_go_in_the_body():
    route = respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(
        return_value=answer("rollback_dry_run.json"))
    run(client().rollback("payments", history_id=4, app_namespace="team-a", dry_run=True))
    assert json.loads(route.calls.last.request.content) == {
        "name": "payments", "id": 4, "dryRun": True, "prune": False, "appNamespace": "team-a"}


@pytest.mark.parametrize(("name", "reason", "status"), [
    ("permission_denied.json", "forbidden", 403),
    ("not_found.json", "not_found", 404),
    ("unauthenticated.json", "unauthorized", 401),
    ("rollback_auto_sync.json", "auto_sync_enabled", 400),
    ("rollback_operation_in_progress.json", "failed_precondition", 400),
    ("rollback_no_such_id.json", "invalid_argument", 400),
])
@respx.mock
def test_refusals_come_back_typed_and_not_retryable(name, reason, status):
    respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(return_value=answer(name))
    with pytest.raises(ArgoCdError) as caught:
        run(client().rollback("payments", history_id=4, dry_run=False))
    assert (caught.value.reason, caught.value.status, caught.value.retryable) == (
        reason, status, False)
    assert caught.value.source == "argocd"
    assert fixture(name)[1]["message"] in caught.value.message  # Argo CD's own words


@respx.mock
def test_a_server_error_is_retryable():
    respx.get(f"{BASE}/api/v1/applications/payments").mock(
        return_value=httpx.Response(503, text="upstream connect error"))
    with pytest.raises(ArgoCdError) as caught:
        run(client().get_application("payments"))
    assert (caught.value.reason, caught.value.retryable) == ("http_503", True)


@respx.mock
def test_a_get_that_times_out_is_a_retryable_timeout():
    respx.get(f"{BASE}/api/v1/applications/payments").mock(
        side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ArgoCdError) as caught:
        run(client().get_application("payments"))
    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)
    assert "2s" in caught.value.message


def test_every_call_is_bounded_by_the_timeout():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        status, body = fixture("application_degraded.json")
        return httpx.Response(status, json=body)

    http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handler))
    argo = ArgoCdClient(base_url=BASE, token=SecretStr(TOKEN), timeout=3.5, http=http)
    run(argo.get_application("payments"))
    run(argo.rollback("payments", history_id=4, dry_run=True))
    assert seen == [{"connect": 3.5, "read": 3.5, "write": 3.5, "pool": 3.5}] * 2


@respx.mock
def test_a_rollback_sent_without_an_answer_is_not_sent_again():
    route = respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(
        side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(ArgoCdError) as caught:
        run(client().rollback("payments", history_id=4, dry_run=False))
    assert route.call_count == 1
    assert caught.value.reason == "timeout" and "sent, but no answer came" in caught.value.message


@respx.mock
def test_a_rollback_that_could_not_connect_says_it_was_not_sent():
    route = respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(
        side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(ArgoCdError) as caught:
        run(client().rollback("payments", history_id=4, dry_run=False))
    assert route.call_count == 1
    assert (caught.value.reason, caught.value.retryable) == ("connection", True)
    assert "not sent" in caught.value.message


@respx.mock
def test_an_answer_that_is_not_an_application_is_malformed():
    respx.get(f"{BASE}/api/v1/applications/payments").mock(
        return_value=httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(ArgoCdError) as caught:
        run(client().get_application("payments"))
    assert caught.value.reason == "malformed"


@respx.mock
def test_the_token_is_never_in_an_error_or_a_log_line():
    for name in ("permission_denied.json", "unauthenticated.json", "rollback_auto_sync.json"):
        respx.post(f"{BASE}/api/v1/applications/payments/rollback").mock(
            return_value=answer(name))
        with structlog.testing.capture_logs() as logs, pytest.raises(ArgoCdError) as caught:
            run(client().rollback("payments", history_id=4, dry_run=False))
        assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
        assert TOKEN not in json.dumps(logs, default=str)
    respx.get(f"{BASE}/api/v1/applications/payments").mock(
        side_effect=httpx.ConnectError(f"failed with Authorization: Bearer {TOKEN}"))
    with structlog.testing.capture_logs() as logs, pytest.raises(ArgoCdError) as caught:
        run(client().get_application("payments"))
    assert TOKEN not in str(caught.value) and TOKEN not in json.dumps(logs, default=str)
    assert TOKEN not in repr(client().__dict__.get("base_url"))


# Choosing the target --------------------------------------------------------------------------


def app(**changes) -> Application:
    base = parse_application(fixture("application_degraded.json")[1])
    fields = {f: getattr(base, f) for f in base.__slots__}
    fields.update(changes)
    return Application(**fields)


def entry(id_: int, revision: str, minutes: float) -> HistoryEntry:
    return HistoryEntry(id_, revision, ROLLOUT + timedelta(minutes=minutes))


def test_the_target_is_the_entry_before_the_one_deployed_at_the_incident():
    choice = choose_target(app(), incident_at=INCIDENT, rollout_started_at=ROLLOUT)
    assert isinstance(choice, Target)
    assert (choice.entry.id, choice.entry.revision, choice.current.id) == (4, GOOD, 5)


def test_a_re_sync_of_the_same_revision_is_no_earlier_state():
    history = (entry(1, OLD, -900), entry(2, GOOD, -60), entry(3, BAD, 0), entry(4, BAD, 0.5))
    choice = choose_target(app(history=history), incident_at=INCIDENT)
    assert isinstance(choice, Target) and choice.entry.id == 2


def test_a_recorded_history_id_is_the_target():
    choice = choose_target(app(), incident_at=INCIDENT, history_id=3)
    assert isinstance(choice, Target) and choice.entry.revision == OLD


@pytest.mark.parametrize(("changes", "kwargs", "outcome", "words"), [
    ({"auto_sync": True}, {}, "failed", "disable auto-sync of argocd/payments first"),
    ({"history": (entry(5, BAD, 0),)}, {}, "failed", "no deployment earlier than revision"),
    ({"history": ()}, {}, "failed", "no deployment history"),
    ({}, {"history_id": 42}, "failed", "no history id 42"),
    # Another revision deployed since (someone synced, or reverted in Git).
    ({"history": (entry(4, GOOD, -1440), entry(5, BAD, 0), entry(6, OLD, 5))}, {}, "stale",
     "deployed revision 5b2f6e0 (history id 6)"),
    # An operation runs (another sync).
    ({"operation_pending": True, "operation_revision": BAD}, {}, "stale", "an operation runs"),
    ({"operation_phase": "Running", "operation_revision": BAD}, {}, "stale", "phase Running"),
    # The rollback asked for already runs, or already deployed.
    ({"operation_pending": True, "operation_revision": GOOD}, {}, "already_done",
     "already rolling back to revision 8f1c2d3 (history id 4)"),
    ({"history": (entry(4, GOOD, -1440), entry(5, BAD, 0), entry(6, GOOD, 5))}, {},
     "already_done", "already deploys revision 8f1c2d3 again (history id 6)"),
    # The last deployment ended long before the bad rollout: the rollout was not Argo CD's.
    ({"history": (entry(4, OLD, -2880), entry(5, GOOD, -1440))}, {}, "failed",
     "did not come from Argo CD"),
    ({"history": (entry(4, OLD, -2880), entry(5, GOOD, -0.6))}, {}, "failed",
     "did not come from Argo CD"),
])
def test_no_target_and_why(changes, kwargs, outcome, words):
    choice = choose_target(app(**changes), incident_at=INCIDENT, rollout_started_at=ROLLOUT,
                           **kwargs)
    assert isinstance(choice, NoTarget) and choice.outcome == outcome, choice
    assert words in choice.message


def test_already_done_wins_over_auto_sync_turned_back_on():
    rolled = app(auto_sync=True, history=(entry(4, GOOD, -1440), entry(5, BAD, 0),
                                          entry(6, GOOD, 5)))
    assert choose_target(rolled, incident_at=INCIDENT).outcome == "already_done"


def test_the_target_stays_the_same_after_the_rollback_landed():
    after = parse_application(fixture("application_rolled_back.json")[1])
    assert [e.id for e in after.history] == [3, 4, 5, 6]
    assert target_entry(after, incident_at=INCIDENT, rollout_started_at=ROLLOUT).id == 4
    # An alert's incident has no rollout start: the history as it was a while before it.
    assert target_entry(after, incident_at=INCIDENT, rollout_started_at=None).id == 4
    assert target_entry(after, incident_at=None).id == 5  # without either: no such promise


def test_a_rollback_landing_the_second_of_the_incident_is_not_taken_for_the_bad_deployment():
    # Argo CD's deployedAt has whole seconds; an incident raised at 18:03:00.7 whose rollback
    # ended at 18:03:00 (or on a clock a little behind) must not become "the current one".
    landed = app(history=(entry(4, GOOD, -1440), entry(5, BAD, 0), entry(6, GOOD, 2)))
    for rollout in (ROLLOUT, None):
        choice = choose_target(landed, incident_at=INCIDENT + timedelta(seconds=0.7),
                               rollout_started_at=rollout)
        assert isinstance(choice, NoTarget) and choice.outcome == "already_done", choice


def test_an_alert_incident_without_a_rollout_start_reads_the_history_before_it():
    choice = choose_target(app(), incident_at=INCIDENT, rollout_started_at=None)
    assert isinstance(choice, Target) and (choice.entry.id, choice.current.id) == (4, 5)
    assert choose_target(app(), incident_at=ROLLOUT - timedelta(days=5)).outcome == "failed"


def test_malformed_history_entries_are_skipped():
    body = copy.deepcopy(fixture("application_degraded.json")[1])
    body["status"]["history"] += [{"id": True, "revision": "x"}, {"id": 9}, "junk",
                                  {"id": "10", "revision": GOOD, "deployedAt": "not a time"}]
    parsed = parse_application(body)
    assert [e.id for e in parsed.history] == [3, 4, 5, 10]
    assert parsed.history[-1].deployed_at is None


def test_the_cli_command_names_the_history_entry():
    assert cli_rollback(app(), HistoryEntry(4, GOOD)) == "argocd app rollback payments 4"
    elsewhere = app(namespace="team-a")
    assert cli_rollback(elsewhere, HistoryEntry(4, GOOD)) == \
        "argocd app rollback team-a/payments 4"
