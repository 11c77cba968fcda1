"""``POST /webhooks/alertmanager`` (Alertmanager's webhook receiver) and ``GET /api/alerts``.

The intake trusts nothing it has not checked, cheapest check first:

  no ALERTMANAGER_TOKEN configured     404  (the feature is off)
  credentials missing or wrong         401  (``Authorization: Bearer <token>``, or Basic with
                                              the token as password; constant-time comparison)
  this replica is a standby            503  (only the leader acts; Alertmanager retries 5xx),
                                            unless the store is shared (DATABASE_URL): then
                                            any replica records, and the leader's next tick
                                            takes the alerts from the store
  body over 1 MiB                      413  (by Content-Length, then while reading)
  not JSON, or not a version 4 payload 400  (the reason in ``{"error": ...}``)
  the inbox could not be written       503  (retried by Alertmanager)
  recorded                             200  ``{"received", "firing", "resolved"}``, then the
                                            loop is woken (``on_received``)

Every refusal is one warning (``alertmanager.refused``: reason, status, peer). The token and the
``Authorization`` header never reach a log line or an answer.

``GET /api/alerts`` lists what was recorded, unmapped alerts with the reason: ``namespace``,
``status`` (firing, resolved), ``mapped`` (true, false) and ``limit`` (1 to 1000, default 100).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from datetime import datetime

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..store.alerts import AlertInbox, ReceiveSummary
from ..store.db import STORE_ERRORS
from ..sources.alerts import STATUSES, PayloadError, parse_webhook
from .bodies import read_capped

log = structlog.get_logger("incident_detector")

Clock = Callable[[], datetime]

PATH = "/webhooks/alertmanager"
API_PATH = "/api/alerts"
MAX_BODY_BYTES = 1024 * 1024
# Alertmanager retries a 5xx with backoff; this asks for no sooner than the loop's next turn.
RETRY_AFTER_SECONDS = 10
API_DEFAULT_LIMIT = 100
API_MAX_LIMIT = 1000
CHALLENGE = 'Bearer realm="incident-detector", Basic realm="incident-detector", charset="UTF-8"'
_LENGTH = re.compile(r"[0-9]{1,19}")


def alertmanager_routes(*, token: SecretStr | None, inbox: AlertInbox,
                        is_leader: Callable[[], bool], clock: Clock,
                        shared_store: bool = False,
                        on_received: Callable[[ReceiveSummary], None] | None = None,
                        max_body_bytes: int = MAX_BODY_BYTES) -> list[Route]:
    """The intake and the listing; the intake answers 404 while ``token`` is None."""
    secret = token.get_secret_value().encode("utf-8") if token is not None else None

    def refuse(status: int, reason: str, peer: str, *, error: str | None = None,
               headers: dict[str, str] | None = None) -> Response:
        log.warning("alertmanager.refused", reason=reason, status=status, peer=peer,
                    **({"detail": error} if error and status == 400 else {}))
        if status == 404:
            # The same answer as a route that does not exist: nothing hints that it could be on.
            return Response("Not Found", status_code=404, media_type="text/plain")
        return JSONResponse({"error": error or reason}, status_code=status, headers=headers)

    async def receive(request: Request) -> Response:
        peer = request.client.host if request.client else "unknown"
        if secret is None:
            return refuse(404, "intake_off", peer)
        why = _credentials_problem(request.headers.get("authorization"), secret)
        if why is not None:
            return refuse(401, why, peer, error="unauthorized",
                          headers={"WWW-Authenticate": CHALLENGE})
        if not shared_store and not is_leader():
            return refuse(503, "standby", peer,
                          error="this replica is a standby: only the leader records alerts",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

        declared = request.headers.get("content-length")
        if declared is not None:
            if not _LENGTH.fullmatch(declared):
                return refuse(400, "bad_content_length", peer,
                              error="Content-Length is not a number")
            if int(declared) > max_body_bytes:
                return refuse(413, "body_too_large", peer,
                              error=f"body over {max_body_bytes} bytes")
        body = await read_capped(request, max_body_bytes)
        if body is None:
            return refuse(413, "body_too_large", peer, error=f"body over {max_body_bytes} bytes")

        try:
            notification = parse_webhook(body)
        except PayloadError as exc:
            return refuse(400, "bad_payload", peer, error=exc.reason)
        try:
            summary = inbox.receive(notification, now=clock())
        except STORE_ERRORS as exc:
            log.error("alertmanager.store_failed", error=type(exc).__name__)
            return refuse(503, "store_failed", peer, error="could not record the alerts",
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

        log.info("alertmanager.received", receiver=notification.receiver,
                 received=summary.received, firing=summary.firing, resolved=summary.resolved,
                 new=summary.new, stale=summary.stale,
                 truncated=notification.truncated_alerts)
        if on_received is not None:
            try:
                on_received(summary)
            except Exception as exc:  # noqa: BLE001 - the alerts are recorded: still a 200
                log.error("alertmanager.wake_failed", error=type(exc).__name__)
        return JSONResponse({"received": summary.received, "firing": summary.firing,
                             "resolved": summary.resolved})

    async def list_alerts(request: Request) -> Response:
        params = request.query_params
        limit_text = params.get("limit", str(API_DEFAULT_LIMIT))
        if not limit_text.isascii() or not limit_text.isdigit() or not (
                1 <= int(limit_text) <= API_MAX_LIMIT):
            return _bad_param(f"limit must be an integer from 1 to {API_MAX_LIMIT}")
        status = params.get("status")
        if status is not None and status not in STATUSES:
            return _bad_param("status must be firing or resolved")
        mapped_text = params.get("mapped")
        if mapped_text is not None and mapped_text not in ("true", "false"):
            return _bad_param("mapped must be true or false")
        namespace = params.get("namespace")
        if namespace is not None and not namespace:
            return _bad_param("namespace must not be empty")
        alerts = inbox.recent(limit=int(limit_text), namespace=namespace, status=status,
                              mapped=None if mapped_text is None else mapped_text == "true")
        return JSONResponse({"alerts": alerts})

    return [Route(PATH, receive, methods=["POST"]),
            Route(API_PATH, list_alerts, methods=["GET"])]


def _credentials_problem(header: str | None, secret: bytes) -> str | None:
    """None when the header carries the token, else the refusal's reason (never the value)."""
    if not header:
        return "missing_credentials"
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        offered = credentials.encode("utf-8", errors="replace")
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return "malformed_basic_credentials"
        _user, colon, password = decoded.partition(b":")
        if not colon:
            return "malformed_basic_credentials"
        offered = password
    else:
        return "unsupported_scheme"
    # compare_digest takes as long whatever the first differing byte: no timing oracle.
    return None if hmac.compare_digest(offered, secret) else "wrong_credentials"


def _bad_param(error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=400)
