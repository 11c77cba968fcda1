"""POST /integrations/slack/actions, through Starlette's TestClient, with requests signed as Slack signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
import structlog
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.testclient import TestClient

from incident_detector.act.approvals import ApprovalTokens
from incident_detector.web.slack_actions import PATH, Decision, slack_action_routes

# Slack's documented example ("Verifying requests from Slack"): the placeholder secret, the
# timestamp, a slash command's body and the signature Slack computed for them.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

SECRET = DOC_SECRET
APPROVER = "U0APPROVER"
STRANGER = "U0STRANGER"
INCIDENT = "demo-aiops/payments-api/3f1c9a2e/rev-7"
RESPONSE_URL = "https://hooks.slack.com/actions/T0001/1234567890/ZyXwVuTsRqPoNmLkJiHg"
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """What Slack puts in X-Slack-Signature: v0= and the HMAC-SHA256 of v0:{timestamp}:{body}."""
    basestring = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), basestring, hashlib.sha256).hexdigest()


def click_body(token: str | None, *, user: str = APPROVER, action_id: str = "approve_rollback",
               response_url: str = RESPONSE_URL) -> str:
    """A block_actions payload as Slack posts it: form-encoded, the JSON in the field ``payload``."""
    action = {"type": "button", "action_id": action_id, "block_id": "remediation",
              "text": {"type": "plain_text", "text": "Approve: Roll back"},
              "action_ts": "1795456800.123456"}
    if token is not None:
        action["value"] = token
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "legacyVerificationToken",
        "container": {"type": "message", "message_ts": "1795456700.000100", "channel_id": "C0001",
                      "is_ephemeral": False},
        "trigger_id": "1234.5678.abcdef",
        "team": {"id": "T0001", "domain": "example"},
        "channel": {"id": "C0001", "name": "incidents"},
        "response_url": response_url,
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)})


def signed_headers(body: str, *, at: datetime, secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    return {"Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": slack_signature(secret, timestamp, body)}


class Recorder:
    """on_decision that records what it was given; optionally held until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.decisions: list[Decision] = []
        # The decisions still running (the routes' ``pending``), set by ``endpoint``.
        self.pending: set = set()
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        if not hold:
            self.release.set()

    async def __call__(self, decision: Decision) -> None:
        import asyncio

        self.started.set()
        while not self.release.is_set():  # a slow action (a rollback, a Slack call)
            await asyncio.sleep(0.01)
        self.decisions.append(decision)
        self.finished.set()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Decision]:
        deadline = time.monotonic() + timeout
        while len(self.decisions) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.decisions)

    def settled(self, timeout: float = 30.0) -> list[Decision]:
        """The decisions, once none is running: each click's decision is scheduled before its
        answer is sent, so after the answers nothing more can come."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not self.pending, f"decisions still running after {timeout:g} s"
        return list(self.decisions)


@contextmanager
def endpoint(*, secret: str | None = SECRET, recorder: Recorder | None = None, clock: Clock | None = None,
             tokens: ApprovalTokens | None = None, **kw) -> Iterator[tuple[TestClient, ApprovalTokens, Recorder, Clock]]:
    clock = clock or Clock(NOW)
    tokens = tokens or ApprovalTokens(clock=clock)
    recorder = recorder or Recorder()
    kw.setdefault("rate_burst", 1000)
    recorder.pending = kw.setdefault("pending", set())
    routes = slack_action_routes(signing_secret=secret, approvers=frozenset({APPROVER}), tokens=tokens,
                                 on_decision=recorder, clock=clock, **kw)
    with TestClient(Starlette(routes=routes)) as client:
        yield client, tokens, recorder, clock


def post(client: TestClient, body: str, headers: dict[str, str]):
    return client.post(PATH, content=body.encode(), headers=headers)


# --- the signature ------------------------------------------------------------------------------


def test_slacks_documented_example_verifies_with_the_sdk():
    at_the_time = Clock(datetime.fromtimestamp(int(DOC_TIMESTAMP) + 30, timezone.utc))
    verifier = SignatureVerifier(DOC_SECRET, clock=type("C", (), {"now": lambda self: at_the_time().timestamp()})())
    assert verifier.is_valid(body=DOC_BODY, timestamp=DOC_TIMESTAMP, signature=DOC_SIGNATURE)
    # The tests sign their requests exactly as Slack does: the helper reproduces the vector.
    assert slack_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE
    assert not verifier.is_valid(body=DOC_BODY + "&x=1", timestamp=DOC_TIMESTAMP, signature=DOC_SIGNATURE)


def test_slacks_documented_example_is_stale_six_minutes_later():
    later = datetime.fromtimestamp(int(DOC_TIMESTAMP) + 6 * 60, timezone.utc)
    verifier = SignatureVerifier(DOC_SECRET, clock=type("C", (), {"now": lambda self: later.timestamp()})())
    assert not verifier.is_valid(body=DOC_BODY, timestamp=DOC_TIMESTAMP, signature=DOC_SIGNATURE)


# --- a click ------------------------------------------------------------------------------------


def test_an_approvers_click_is_answered_and_handed_over_with_everything_the_action_needs():
    with endpoint() as (client, tokens, recorder, clock):
        token = tokens.issue(INCIDENT, "rollback")
        body = click_body(token)
        answer = post(client, body, signed_headers(body, at=clock()))
        assert answer.status_code == 200
        assert answer.json()["response_type"] == "ephemeral"
        assert "Approved" in answer.json()["text"]
        [decision] = recorder.wait_for(1)
    assert decision == Decision(kind="approve", incident_key=INCIDENT, action="rollback", who=APPROVER,
                                when=NOW, response_url=RESPONSE_URL)
    assert decision.response_url == RESPONSE_URL  # used as given: the signature covers it


def test_a_replayed_request_is_a_polite_no_op():
    with endpoint() as (client, tokens, recorder, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback"))
        headers = signed_headers(body, at=clock())
        first = post(client, body, headers)
        clock.now += timedelta(seconds=20)  # still inside the five minutes: the signature is valid
        second = post(client, body, headers)
        assert first.status_code == second.status_code == 200
        assert "already been decided" in second.json()["text"]
        assert len(recorder.settled()) == 1  # one decision, not two


def test_a_second_click_with_a_fresh_signature_does_nothing_either():
    with endpoint() as (client, tokens, recorder, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback"))
        post(client, body, signed_headers(body, at=clock()))
        clock.now += timedelta(seconds=2)
        again = post(client, body, signed_headers(body, at=clock()))
        assert again.status_code == 200 and "already been decided" in again.json()["text"]
        assert [d.kind for d in recorder.settled()] == ["approve"]


def test_reject_closes_the_question():
    with endpoint() as (client, tokens, recorder, clock):
        approve = tokens.issue(INCIDENT, "rollback")
        reject = tokens.issue(INCIDENT, "rollback")
        other_incident = tokens.issue("demo-aiops/orders/aa11/rev-2", "rollback")
        body = click_body(reject, action_id="reject")
        answer = post(client, body, signed_headers(body, at=clock()))
        assert answer.status_code == 200 and "Rejected" in answer.json()["text"]
        late = click_body(approve)
        late_answer = post(client, late, signed_headers(late, at=clock()))
        assert late_answer.status_code == 200 and "already been decided" in late_answer.json()["text"]
        [decision] = recorder.settled()
        assert (decision.kind, decision.incident_key, decision.who) == ("reject", INCIDENT, APPROVER)
        # Another incident's question stays open.
        assert tokens.peek(other_incident) is not None


def test_an_unknown_or_missing_token_is_already_decided():
    with endpoint() as (client, tokens, recorder, clock):
        for token in ("not-a-token-we-issued", None):
            body = click_body(token)
            answer = post(client, body, signed_headers(body, at=clock()))
            assert answer.status_code == 200 and "already been decided" in answer.json()["text"]
        assert recorder.settled() == []


def test_a_click_by_someone_not_approved_is_refused_politely_and_recorded():
    with endpoint() as (client, tokens, recorder, clock):
        token = tokens.issue(INCIDENT, "rollback")
        body = click_body(token, user=STRANGER)
        answer = post(client, body, signed_headers(body, at=clock()))
        assert answer.status_code == 200
        assert answer.json()["response_type"] == "ephemeral"
        assert "not among the people who may approve" in answer.json()["text"]
        [refusal] = recorder.wait_for(1)
        assert (refusal.kind, refusal.who, refusal.incident_key, refusal.action) == (
            "refused_user", STRANGER, INCIDENT, "rollback")
        # The question stays open for the people who may answer it.
        body = click_body(token)
        assert "Approved" in post(client, body, signed_headers(body, at=clock())).json()["text"]
        assert [d.kind for d in recorder.wait_for(2)] == ["refused_user", "approve"]


def test_other_interactive_elements_are_acknowledged_and_ignored():
    with endpoint() as (client, tokens, recorder, clock):
        token = tokens.issue(INCIDENT, "rollback")
        body = click_body(token, action_id="open_runbook")
        answer = post(client, body, signed_headers(body, at=clock()))
        assert answer.status_code == 200 and answer.content == b""
        assert recorder.settled() == [] and tokens.peek(token) is not None


# --- what is refused before anything happens --------------------------------------------------


def test_a_stale_timestamp_is_refused_and_the_token_stays_valid():
    with endpoint() as (client, tokens, recorder, clock):
        token = tokens.issue(INCIDENT, "rollback")
        body = click_body(token)
        old = signed_headers(body, at=clock() - timedelta(minutes=5, seconds=1))
        assert post(client, body, old).status_code == 401
        future = signed_headers(body, at=clock() + timedelta(minutes=6))
        assert post(client, body, future).status_code == 401
        assert post(client, body, signed_headers(body, at=clock())).status_code == 200
        assert [d.kind for d in recorder.wait_for(1)] == ["approve"]


def test_a_wrong_or_missing_signature_is_refused():
    with endpoint() as (client, tokens, recorder, clock):
        token = tokens.issue(INCIDENT, "rollback")
        body = click_body(token)
        good = signed_headers(body, at=clock())
        cases = {
            "other secret": signed_headers(body, at=clock(), secret="another-apps-secret"),
            "tampered body": good,  # signed for `body`, sent with another user in it
            "no signature": {k: v for k, v in good.items() if k != "X-Slack-Signature"},
            "no timestamp": {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"},
            "timestamp not a number": {**good, "X-Slack-Request-Timestamp": "soon"},
            "other timestamp": {**good, "X-Slack-Request-Timestamp": str(int(clock().timestamp()) - 1)},
            "v1 scheme": {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},
        }
        for name, headers in cases.items():
            sent = click_body(token, user="U0MALLORY") if name == "tampered body" else body
            answer = post(client, sent, headers)
            assert answer.status_code == 401, name
        assert recorder.settled() == [] and tokens.peek(token) is not None


def test_a_body_over_the_limit_is_refused():
    with endpoint(max_body_bytes=2048) as (client, tokens, recorder, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback")) + "&padding=" + "x" * 4096
        assert post(client, body, signed_headers(body, at=clock())).status_code == 413

        def chunks():  # no Content-Length: the limit holds while reading
            for _ in range(8):
                yield b"x" * 512

        answer = client.post(PATH, content=chunks(), headers=signed_headers("", at=clock()))
        assert answer.status_code == 413
    assert recorder.decisions == []


def test_anything_but_a_form_post_is_refused():
    with endpoint() as (client, tokens, recorder, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback"))
        for content_type in ("application/json", "text/plain", "multipart/form-data; boundary=x", None):
            headers = signed_headers(body, at=clock())
            if content_type is None:
                del headers["Content-Type"]
            else:
                headers["Content-Type"] = content_type
            assert post(client, body, headers).status_code == 415, content_type
        # The media type's parameters do not matter.
        headers = {**signed_headers(body, at=clock()),
                   "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        assert post(client, body, headers).status_code == 200


@pytest.mark.parametrize("body", [
    "payload=not-json",
    "text=hello",
    urlencode({"payload": json.dumps({"type": "view_submission", "user": {"id": APPROVER}})}),
    urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": APPROVER}, "actions": []})}),
    urlencode({"payload": json.dumps({"type": "block_actions", "actions": [{"action_id": "approve"}]})}),
    urlencode({"payload": json.dumps(["block_actions"])}),
    "payload=%7B%7D&payload=%7B%7D",
])
def test_a_verified_body_that_is_not_a_block_actions_payload_is_a_bad_request(body):
    with endpoint() as (client, tokens, recorder, clock):
        assert post(client, body, signed_headers(body, at=clock())).status_code == 400


@pytest.mark.parametrize("secret", [None, "", "   "])
def test_without_a_signing_secret_there_is_no_endpoint(secret):
    with endpoint(secret=secret) as (client, tokens, recorder, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback"))
        assert post(client, body, signed_headers(body, at=clock())).status_code == 404
        assert client.get(PATH).status_code == 404
    assert recorder.decisions == []


def test_requests_from_one_address_are_rate_limited():
    with endpoint(rate_per_second=1.0, rate_burst=2) as (client, tokens, recorder, clock):
        body = "payload=x"
        codes = [post(client, body, {"Content-Type": "application/json"}).status_code for _ in range(3)]
        assert codes == [415, 415, 429]
        limited = post(client, body, {"Content-Type": "application/json"})
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        clock.now += timedelta(seconds=1)  # one token back
        assert post(client, body, {"Content-Type": "application/json"}).status_code == 415
        assert post(client, body, {"Content-Type": "application/json"}).status_code == 429


# --- three seconds ------------------------------------------------------------------------------


def test_the_answer_arrives_before_the_decision_is_carried_out():
    recorder = Recorder(hold=True)
    with endpoint(recorder=recorder) as (client, tokens, _, clock):
        body = click_body(tokens.issue(INCIDENT, "rollback"))
        # The decision is held until the test releases it: an answer now came before it.
        answer = post(client, body, signed_headers(body, at=clock()))
        assert answer.status_code == 200 and "Approved" in answer.json()["text"]
        assert recorder.started.wait(30)  # it is running ...
        assert not recorder.finished.is_set()  # ... and not done when the answer came
        recorder.release.set()
        assert recorder.finished.wait(30)
    assert [d.kind for d in recorder.decisions] == ["approve"]


def test_a_failing_decision_is_logged_without_its_message():
    async def fails(decision: Decision) -> None:
        raise RuntimeError(f"POST {decision.response_url} failed")

    clock = Clock(NOW)
    tokens = ApprovalTokens(clock=clock)
    routes = slack_action_routes(signing_secret=SECRET, approvers=frozenset({APPROVER}), tokens=tokens,
                                 on_decision=fails, clock=clock)
    with structlog.testing.capture_logs() as logs:
        with TestClient(Starlette(routes=routes)) as client:
            body = click_body(tokens.issue(INCIDENT, "rollback"))
            assert post(client, body, signed_headers(body, at=clock())).status_code == 200
            deadline = time.monotonic() + 30
            while not any(e["event"] == "slack_decision_failed" for e in logs) and time.monotonic() < deadline:
                time.sleep(0.005)
    [failure] = [e for e in logs if e["event"] == "slack_decision_failed"]
    assert failure["error"] == "RuntimeError" and failure["incident_key"] == INCIDENT
    assert RESPONSE_URL not in repr(logs)


# --- nothing secret leaves ----------------------------------------------------------------------


def test_no_secret_token_signature_or_response_url_in_any_answer_or_log_line():
    secrets_seen: set[str] = {SECRET, RESPONSE_URL}
    answers: list[str] = []
    with structlog.testing.capture_logs() as logs:
        with endpoint(max_body_bytes=8192) as (client, tokens, recorder, clock):
            def send(body: str, headers: dict[str, str]) -> None:
                secrets_seen.add(headers.get("X-Slack-Signature", SECRET))
                answer = post(client, body, headers)
                answers.append(f"{answer.status_code} {answer.headers} {answer.text}")

            approve, reject = tokens.issue(INCIDENT, "rollback"), tokens.issue(INCIDENT, "rollback")
            secrets_seen |= {approve, reject}
            stranger = click_body(approve, user=STRANGER)
            send(stranger, signed_headers(stranger, at=clock()))  # refused user
            ok = click_body(approve)
            send(ok, signed_headers(ok, at=clock()))  # approved
            send(ok, signed_headers(ok, at=clock()))  # replayed
            late = click_body(reject, action_id="reject")
            send(late, signed_headers(late, at=clock()))  # question closed
            send(ok, signed_headers(ok, at=clock() - timedelta(minutes=10)))  # stale
            send(ok, signed_headers(ok, at=clock(), secret="wrong"))  # forged
            send(ok, {**signed_headers(ok, at=clock()), "Content-Type": "application/json"})
            big = ok + "&pad=" + "x" * 9000
            send(big, signed_headers(big, at=clock()))
            junk = "payload=" + approve
            send(junk, signed_headers(junk, at=clock()))
            recorder.wait_for(2)
    assert len(answers) == 9 and logs
    events = {e["event"] for e in logs}
    assert {"slack_action_decided", "slack_action_refused", "slack_action_already_decided"} <= events
    reasons = {e.get("reason") for e in logs}
    assert {"not_an_approver", "stale_timestamp", "bad_signature", "unsupported_media_type",
            "body_too_large", "not_block_actions"} <= reasons
    said = "\n".join(answers) + "\n" + repr(logs)
    for secret in secrets_seen:
        assert secret not in said
    assert "v0=" not in said
    # A Decision can be logged by whoever receives it without leaking its response_url.
    assert RESPONSE_URL not in repr(Decision(kind="approve", incident_key=INCIDENT, action="rollback",
                                             who=APPROVER, when=NOW, response_url=RESPONSE_URL))
