"""``POST /integrations/slack/actions``: the clicks on an incident's Approve and Reject buttons.

This is the one endpoint through which anything outside the process can ask for a change, so it
trusts nothing it has not checked, cheapest check first:

  no signing secret configured      404  (the feature is off: the route does not exist)
  too many requests from one peer   429  (token bucket per source address)
  body over ``max_body_bytes``      413  (by Content-Length, then while reading)
  not a form post                   415
  signature or timestamp not valid  401  (``slack_sdk``'s SignatureVerifier: v0 HMAC-SHA256 over
                                          ``v0:{timestamp}:{body}``, constant-time comparison,
                                          five minutes of tolerance)
  payload not a block_actions JSON  400
  clicked by someone not approved   200  polite refusal, recorded (``refused_user``)
  token unknown, expired or used    200  "already decided", nothing happens
  valid token                       200  at once; the decision runs in the background

Slack shows the user an error unless it is answered within three seconds, so everything above
is done without I/O and the decision itself (recording it, acting, following up through the
``response_url``) is handed to ``on_decision`` as a background task.

Nothing secret leaves this module: not the signing secret, not the signature, not a button's
token, not the ``response_url`` (it lets anyone post into the channel for half an hour). Answers
and log lines name the user, the incident and the action, never those.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..act.approvals import ApprovalTokens, Decision, DecisionKind, DecisionSource
from .bodies import read_capped

log = structlog.get_logger("incident_detector")

Clock = Callable[[], datetime]

PATH = "/integrations/slack/actions"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Slack refuses timestamps older than five minutes in its own examples; SignatureVerifier
# enforces the same window. Kept here only to tell "stale" from "forged" in the log.
TIMESTAMP_TOLERANCE_SECONDS = 5 * 60
# Clicks are made by people: a few per second from one address is already generous. Slack sends
# from a shared pool of addresses, so the burst leaves room for a busy on-call channel.
DEFAULT_RATE_PER_SECOND = 5.0
DEFAULT_RATE_BURST = 20
# Beyond this many tracked addresses, those whose bucket is full again are forgotten.
MAX_TRACKED_ADDRESSES = 10_000

APPROVE_PREFIX = "approve"
REJECT_PREFIX = "reject"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_LENGTH = re.compile(r"[0-9]{1,19}")

def decision_from_token(tokens: ApprovalTokens, token: object, *, kind: DecisionKind, who: str,
                        when: datetime, response_url: str | None = None,
                        source: DecisionSource = "slack") -> Decision | None:
    """Spend a one-time token and turn what it was bound to into a ``Decision``; None when the
    token is unknown, expired or already used (the question was already decided)."""
    grant = tokens.consume(token) if isinstance(token, str) and token else None
    if grant is None:
        return None
    return Decision(kind=kind, incident_key=grant.incident_key, action=grant.action, who=who,
                    when=when, response_url=response_url, source=source)


OnDecision = Callable[[Decision], Awaitable[None]]


class TokenBucket:
    """At most ``burst`` requests at once per address, refilled at ``per_second``."""

    def __init__(self, *, per_second: float, burst: int, clock: Clock) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be positive and burst at least 1")
        self._rate = per_second
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str) -> bool:
        now = self._clock().timestamp()
        with self._lock:
            tokens, at = self._buckets.get(address, (self._burst, now))
            # max(0, ...): a wall clock stepped back must not drain the bucket.
            tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
            allowed = tokens >= 1.0
            self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > MAX_TRACKED_ADDRESSES:
                self._forget_full(now)
            return allowed

    def _forget_full(self, now: float) -> None:
        full = [a for a, (t, at) in self._buckets.items()
                if t + max(0.0, now - at) * self._rate >= self._burst]
        for address in full:
            del self._buckets[address]


def _signature_verifier(signing_secret: str, clock: Clock) -> Any:
    """slack_sdk's SignatureVerifier on the injected clock. Imported here, when the endpoint is
    on: the package's ``__init__`` loads its whole Web API client, megabytes that a detector
    without Slack's buttons never needs (the dashboard imports this module for its buckets)."""
    from slack_sdk.signature import Clock as SlackClock
    from slack_sdk.signature import SignatureVerifier

    class VerifierClock(SlackClock):
        """The injected clock, in the shape SignatureVerifier asks for (seconds since the epoch)."""

        def now(self) -> float:
            return clock().timestamp()

    return SignatureVerifier(signing_secret, clock=VerifierClock())


def _ephemeral(text: str) -> JSONResponse:
    # The shape of a response_url message: shown only to the person who clicked, the original
    # message left as it is.
    return JSONResponse({"response_type": "ephemeral", "replace_original": False, "text": text})


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


def _parse_payload(body: str) -> dict[str, Any] | None:
    """The block_actions payload of a verified body, or None when it is anything else."""
    fields = parse_qs(body, keep_blank_values=True)
    values = fields.get("payload")
    if not values or len(values) != 1:
        return None
    try:
        payload = json.loads(values[0])
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    user, actions = payload.get("user"), payload.get("actions")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        return None
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    if not isinstance(actions[0].get("action_id"), str):
        return None
    response_url = payload.get("response_url")
    if response_url is not None and not isinstance(response_url, str):
        return None
    return payload


def _kind_of(action_id: str) -> DecisionKind | None:
    if action_id.startswith(APPROVE_PREFIX):
        return "approve"
    if action_id.startswith(REJECT_PREFIX):
        return "reject"
    return None


def slack_action_routes(
    *,
    signing_secret: str | None,
    approvers: frozenset[str],
    tokens: ApprovalTokens,
    on_decision: OnDecision,
    clock: Clock,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_per_second: float = DEFAULT_RATE_PER_SECOND,
    rate_burst: int = DEFAULT_RATE_BURST,
    pending: set[asyncio.Task[None]] | None = None,
) -> list[Route]:
    """The routes of Slack's interactivity endpoint; none at all without a signing secret.

    ``on_decision`` runs as a background task on the serving event loop; the tasks still running
    are kept in ``pending`` (give a set to await them at shutdown).
    """
    if signing_secret is None or not signing_secret.strip():
        # Off: no route, so every method answers 404 and nothing hints that it could be on.
        return []
    verifier = _signature_verifier(signing_secret, clock)
    limiter = TokenBucket(per_second=rate_per_second, burst=rate_burst, clock=clock)
    running: set[asyncio.Task[None]] = pending if pending is not None else set()

    async def decide_in_background(decision: Decision) -> None:
        try:
            await on_decision(decision)
        except Exception as error:  # noqa: BLE001 - a failed decision must not vanish silently
            # The type only: an exception's text may quote a URL or a header.
            log.error("slack_decision_failed", kind=decision.kind, who=decision.who,
                      incident_key=decision.incident_key, action=decision.action,
                      error=type(error).__name__)

    def schedule(decision: Decision) -> None:
        task = asyncio.get_running_loop().create_task(decide_in_background(decision))
        running.add(task)
        task.add_done_callback(running.discard)

    def refuse(status: int, reason: str, text: str, address: str, **headers: str) -> Response:
        log.warning("slack_action_refused", reason=reason, status=status, peer=address)
        return _plain(status, text, headers or None)

    async def slack_actions(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        if not limiter.allow(address):
            return refuse(429, "rate_limited", "too many requests", address, **{"Retry-After": "1"})

        declared = request.headers.get("content-length")
        if declared is not None and (not _LENGTH.fullmatch(declared)
                                     or int(declared) > max_body_bytes):
            return refuse(413, "body_too_large", "request body too large", address)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != FORM_CONTENT_TYPE:
            return refuse(415, "unsupported_media_type", f"expected {FORM_CONTENT_TYPE}", address)
        raw = await read_capped(request, max_body_bytes)
        if raw is None:
            return refuse(413, "body_too_large", "request body too large", address)

        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            body = None
        if body is None or not signature or not _TIMESTAMP.fullmatch(timestamp):
            return refuse(401, "missing_signature", "invalid request signature", address)
        if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            stale = abs(clock().timestamp() - int(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS
            return refuse(401, "stale_timestamp" if stale else "bad_signature",
                          "invalid request signature", address)

        payload = _parse_payload(body)
        if payload is None:
            return refuse(400, "not_block_actions", "expected a block_actions payload", address)
        who: str = payload["user"]["id"]
        action = payload["actions"][0]
        kind = _kind_of(action["action_id"])
        if kind is None:
            # Some other interactive element (a link button, say): acknowledged, nothing to do.
            log.info("slack_action_ignored", who=who)
            return Response(status_code=200)
        token = action.get("value")
        response_url = payload.get("response_url")
        now = clock()

        if who not in approvers:
            # The token stays valid: a permitted person may still decide. Peeked, not consumed,
            # so that the record says what was attempted.
            grant = tokens.peek(token) if isinstance(token, str) else None
            schedule(Decision(kind="refused_user", who=who, when=now,
                              incident_key=grant.incident_key if grant else None,
                              action=grant.action if grant else None, response_url=response_url))
            log.warning("slack_action_refused", reason="not_an_approver", who=who,
                        attempted=kind, incident_key=grant.incident_key if grant else None)
            return _ephemeral("Sorry, you are not among the people who may approve or reject "
                              "remediation for this detector, so nothing was done. Please ask "
                              "one of the approvers.")

        decision = decision_from_token(tokens, token, kind=kind, who=who, when=now,
                                       response_url=response_url)
        if decision is None:
            log.info("slack_action_already_decided", who=who, attempted=kind)
            return _ephemeral("This question has already been decided (or has expired). "
                              "Nothing more was done.")

        schedule(decision)
        log.info("slack_action_decided", kind=kind, who=who, incident_key=decision.incident_key,
                 action=decision.action)
        if kind == "approve":
            text = (f"Approved by <@{who}>: {decision.action} of {decision.incident_key} "
                    f"is starting.")
        else:
            text = f"Rejected by <@{who}>: nothing will be done for {decision.incident_key}."
        return _ephemeral(text)

    return [Route(PATH, slack_actions, methods=["POST"])]
