"""Approve or reject from the dashboard: the same one-time tokens, guardrails and audit as Slack.

Routes (none of them exists while the dashboard is read-only, i.e. without ``DASHBOARD_TOKEN``
and without ``AUTH_PROXY_HEADER``: every one answers 404):

  GET  /login                       the token form (only with DASHBOARD_TOKEN)
  POST /login                       field ``token``; 303 to ``next`` (a local path) with the
                                    session cookie; 401 and the form again when wrong; 429 after
                                    a few attempts a minute from one address
  POST /logout                      field ``csrf``; the session is ended and its cookie cleared
  POST /incidents/{id}/decision     fields ``journal_id``, ``kind`` (approve|reject), ``token``
                                    (a one-time token issued when the page was rendered),
                                    ``csrf``; only when remediation is on

A decision is checked cheapest first:

  no signed-in user                 401
  body too large / not a form       413 / 415
  CSRF value or Origin not valid    403  (a bearer request needs no CSRF value, but its Origin,
                                          when sent, must still be this host)
  fields missing or malformed       400
  token of another question/button  400  (the token is not spent)
  token unknown, expired or used    "already decided" (303 with ?flash=already_decided, or 409
                                    in JSON); nothing happens
  valid token                       the decision (``Remediator.on_decision``), then 303 back to
                                    the incident page with ``?flash=<outcome>``, or JSON when
                                    the client asks for it (Accept: application/json)

The token is spent exactly as a Slack click spends it (``slack_actions.decision_from_token``),
and the decision goes through the very same ``on_decision``: the guardrails are asked again,
the journal moves by compare-and-set, every step is an audit row. The audit's ``who`` is
``dashboard:`` and the user the token or the proxy's header names.

``decision_context`` is what the incident page renders the Approve / Reject forms from
(``_decision.html``). Each time it is called for a signed-in user it issues a fresh pair of
tokens (valid ``PAGE_TOKEN_TTL``); an anonymous reader gets no token, only the way to sign in.

Nothing secret is logged: not the dashboard token, not the cookie, not a CSRF value, not an
approval token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..notify.remediation_render import ACTION_BUTTONS
from ..store.journal import (APPROVED, DONE, EXECUTING, PROPOSED, STATES, UNVERIFIED, VERIFIED,
                             JournalEntry)
from .auth import DashboardAuth
from .bodies import read_capped
from .slack_actions import DecisionKind, TokenBucket, decision_from_token

if TYPE_CHECKING:  # act/ is loaded only when remediation is on
    from starlette.templating import Jinja2Templates

    from ..act.remediation import Remediator
    from .dashboard import Pages

log = structlog.get_logger("incident_detector")

Clock = Callable[[], datetime]
PageContext = Callable[[Request], dict[str, Any]]

TEMPLATES = Path(__file__).parent / "templates"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 8 * 1024
# A page's tokens: long enough for someone to read the incident before deciding, short enough
# that pages shown (and reloaded) all day do not pile up tokens.
PAGE_TOKEN_TTL = timedelta(hours=2)
# Login attempts per address: a person mistyping is served, a guesser is not.
LOGIN_ATTEMPTS_PER_MINUTE = 5
LOGIN_PATH, LOGOUT_PATH = "/login", "/logout"
DECISION_PATH = "/incidents/{id}/decision"
KINDS = ("approve", "reject")

# What the incident page says after a decision, by the outcome code in ``?flash=``. Only these
# texts are ever shown: a crafted link cannot put words of its own on the page.
FLASH_MESSAGES = {
    "approved": "Approved: the action is under way.",
    "done": "Approved: the action was carried out; its verification follows.",
    "dry_run": "Approved: dry run, validated by the API server, nothing was changed.",
    "stale": "Approved, but the Deployment changed since the incident: nothing was written.",
    "failed": "Approved, but the write failed: see the history.",
    "refused": "Not done: a guardrail refused it (see the history for why).",
    "rejected": "Rejected: nothing will be done.",
    "already_decided": "This question was already decided, or the page's buttons expired. "
                       "Nothing more was done.",
    "error": "The decision could not be carried out: see the detector's log.",
}
# The page's word for each state a decision can leave an action in: the state's own name, but
# for an approval still under way (approved) and a write made, verified or not (done).
_OUTCOME_OF_STATE = {state: state for state in STATES if state != PROPOSED} | {
    EXECUTING: APPROVED, VERIFIED: DONE, UNVERIFIED: DONE}


def flash_message(request: Request) -> str | None:
    """The text for the page's ``?flash=`` code; None for no code or an unknown one."""
    return FLASH_MESSAGES.get(request.query_params.get("flash", ""))


def local_path(value: object, default: str = "/") -> str:
    """``value`` when it is a path on this site (``/incidents/x?y``), else ``default``: never
    ``//host``, ``/\\host``, a scheme or a control character (no open redirect)."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return default
    if value.startswith("//") or "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7f
                                                      for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def action_label(action: str, params: Mapping[str, Any]) -> str:
    """What the Approve button says after "Approve: ", as in Slack."""
    if action == "rollback":
        revision = params.get("to_revision")
        return f"Roll back to revision {revision}" if revision else "Roll back"
    return ACTION_BUTTONS.get(action, action)


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _form(raw: bytes) -> dict[str, str] | None:
    """The form's fields, each given at most once; None when it cannot be read."""
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return None
    if any(len(values) != 1 for values in fields.values()):
        return None
    return {name: values[0] for name, values in fields.items()}


def _plain_templates() -> Jinja2Templates:
    from starlette.templating import Jinja2Templates  # jinja2: only when pages are made

    return Jinja2Templates(directory=TEMPLATES)


class DashboardActions:
    """The dashboard's write routes and the incident page's decision context."""

    def __init__(self, *, auth: DashboardAuth, remediator: Remediator | None, clock: Clock,
                 templates: Jinja2Templates | Pages | None = None,
                 page_context: PageContext | None = None,
                 login_attempts_per_minute: int = LOGIN_ATTEMPTS_PER_MINUTE,
                 page_token_ttl: timedelta = PAGE_TOKEN_TTL) -> None:
        self.auth = auth
        self.remediator = remediator
        self.clock = clock
        # Give the pages' own (web/dashboard.py's ``templates()``): base.html, which login.html
        # extends, uses their filters.
        self.templates = templates or _plain_templates()
        # What base.html shows on every page (the leader line), for the login page.
        self.page_context = page_context
        self.page_token_ttl = page_token_ttl
        self._login_limiter = TokenBucket(per_second=login_attempts_per_minute / 60.0,
                                          burst=login_attempts_per_minute, clock=clock)

    def routes(self) -> list[Route]:
        if not self.auth.enabled:
            return []  # read-only: no route, so every write answers 404
        routes = []
        if self.auth.token_login:
            routes += [Route(LOGIN_PATH, self.login_form, methods=["GET"]),
                       Route(LOGIN_PATH, self.login, methods=["POST"]),
                       Route(LOGOUT_PATH, self.logout, methods=["POST"])]
        if self.remediator is not None:
            routes.append(Route(DECISION_PATH, self.decide, methods=["POST"]))
        return routes

    # The incident page ------------------------------------------------------------------

    def decision_context(self, request: Request, incident: Mapping[str, Any]
                         ) -> dict[str, Any] | None:
        """What ``_decision.html`` needs, or None when there is nothing to decide here: a
        read-only dashboard, remediation off, no proposed action, or a question answered."""
        if not self.auth.enabled or self.remediator is None:
            return None
        entry = self._proposed_entry(incident)
        if entry is None:
            return None
        subject = str(entry.id)
        tokens = self.remediator.tokens
        if tokens.is_closed(subject):  # answered, its journal entry not moved yet
            return None
        # Absolute paths, as every link of the pages: the dashboard is served at the root.
        context: dict[str, Any] = {
            "journal_id": entry.id, "action": entry.action,
            "label": action_label(entry.action, entry.params),
            "target": f"{entry.key[0]}/{entry.key[1]}",
            "dry_run": bool(entry.params.get("dry_run")),
            "post_url": DECISION_PATH.format(
                id=quote(_page_id(request, incident, entry.id), safe="")),
            "user": None, "csrf": None, "approve_token": None, "reject_token": None,
            "login_url": None, "logout_url": None,
        }
        identity = self.auth.identify(request)
        if identity is None:
            # No token for a reader who cannot use it.
            if self.auth.token_login:
                context["login_url"] = (LOGIN_PATH + "?"
                                        + urlencode({"next": request.url.path}))
            return context
        context.update(
            user=identity.user, csrf=self.auth.csrf_token(request),
            approve_token=tokens.issue(subject, "approve", ttl=self.page_token_ttl),
            reject_token=tokens.issue(subject, "reject", ttl=self.page_token_ttl),
            logout_url=LOGOUT_PATH if identity.via == "session" else None)
        return context

    def _proposed_entry(self, incident: Mapping[str, Any]) -> JournalEntry | None:
        """The incident's journal entry still waiting for a decision, read from the journal
        itself (the page's copy of its state may be older). Its id is taken from the
        incident's ``remediation`` (at the top, or in its ``record``), else from its
        ``actions``; the entry must be this incident's."""
        assert self.remediator is not None
        for journal_id in _journal_ids(incident):
            entry = self.remediator.journal.get(journal_id)
            if entry is None or entry.state != PROPOSED:
                continue
            names = ("namespace", "deployment", "revision", "deployment_uid")
            if all(incident.get(name) in (None, "", value)
                   for name, value in zip(names, entry.key)):
                return entry
            # Or the Deployment its fix is on, when that is another one (the top cause).
            if f"{entry.key[0]}/{entry.key[1]}" in _remediation_targets(incident):
                return entry
        return None

    # Login and logout -------------------------------------------------------------------

    def _login_page(self, request: Request, *, next_path: str, error: str | None = None,
                    status_code: int = 200, headers: Mapping[str, str] | None = None
                    ) -> Response:
        context: dict[str, Any] = {"nav": LOGIN_PATH, "leader": {}}
        if self.page_context is not None:
            context.update(self.page_context(request))
        context.update(next=next_path, error=error, title="Sign in")
        return self.templates.TemplateResponse(request, "login.html", context,
                                               status_code=status_code,
                                               headers=dict(headers or {}))

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, next_path=local_path(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        peer = _peer(request)
        fields = await self._read_form(request)
        next_path = local_path((fields or {}).get("next"))
        if not self._login_limiter.allow(peer):
            log.warning("dashboard_login_refused", reason="rate_limited", peer=peer)
            return self._login_page(request, next_path=next_path, status_code=429,
                                    error="Too many attempts: wait a minute and try again.",
                                    headers={"Retry-After": "60"})
        if fields is None:
            return PlainTextResponse("expected a form (application/x-www-form-urlencoded)\n",
                                     status_code=415)
        if not self.auth.same_origin(request):
            log.warning("dashboard_login_refused", reason="cross_origin", peer=peer)
            return PlainTextResponse("cross-site request refused\n", status_code=403)
        user = self.auth.check_token(fields.get("token", ""))
        if user is None:
            log.warning("dashboard_login_refused", reason="wrong_token", peer=peer)
            return self._login_page(request, next_path=next_path, status_code=401,
                                    error="That is not the dashboard's token.")
        response = RedirectResponse(next_path, status_code=303)
        self.auth.start_session(request, response, user)
        log.info("dashboard_login", user=user, peer=peer)
        return response

    async def logout(self, request: Request) -> Response:
        fields = await self._read_form(request) or {}
        identity = self.auth.identify(request)
        if identity is not None and not self.auth.check_csrf(request, fields.get("csrf")):
            log.warning("dashboard_logout_refused", reason="csrf", peer=_peer(request))
            return PlainTextResponse("the form is stale or came from another site\n",
                                     status_code=403)
        response = RedirectResponse("/", status_code=303)
        self.auth.end_session(request, response)
        if identity is not None:
            log.info("dashboard_logout", user=identity.user, peer=_peer(request))
        return response

    async def _read_form(self, request: Request) -> dict[str, str] | None:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != FORM_CONTENT_TYPE:
            return None
        raw = await read_capped(request, MAX_FORM_BYTES)
        return _form(raw) if raw is not None else None

    # The decision -----------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        remediator = self.remediator
        assert remediator is not None  # the route exists only with a remediator
        peer = _peer(request)
        as_json = _wants_json(request)

        def refuse(status: int, reason: str, text: str) -> Response:
            log.warning("dashboard_decision_refused", reason=reason, status=status, peer=peer)
            if as_json:
                return JSONResponse({"error": reason, "message": text}, status_code=status)
            return PlainTextResponse(text + "\n", status_code=status)

        identity = self.auth.identify(request)
        if identity is None:
            return refuse(401, "not_signed_in", "Sign in to approve or reject.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            return refuse(413, "body_too_large", "request body too large")
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != FORM_CONTENT_TYPE:
            return refuse(415, "unsupported_media_type", f"expected {FORM_CONTENT_TYPE}")
        raw = await read_capped(request, MAX_FORM_BYTES)
        if raw is None:
            return refuse(413, "body_too_large", "request body too large")
        fields = _form(raw)
        if identity.via == "bearer":
            # A browser never adds Authorization to a request another site makes it send.
            trusted = self.auth.same_origin(request)
        else:
            trusted = fields is not None and self.auth.check_csrf(request, fields.get("csrf"))
        if not trusted:
            return refuse(403, "csrf", "The form is stale or came from another site: reload "
                                       "the incident page and try again.")
        if fields is None:
            return refuse(400, "bad_form", "the form could not be read")
        journal_id, kind, token = (fields.get("journal_id", ""), fields.get("kind", ""),
                                   fields.get("token", ""))
        if not (journal_id.isascii() and journal_id.isdigit() and len(journal_id) <= 18) \
                or kind not in KINDS or not token or len(token) > 256:
            return refuse(400, "bad_fields", "journal_id, kind (approve|reject) and token "
                                             "are required")
        who = f"dashboard:{identity.user}"
        # The token must be this form's: of this question, and of this button. Looked at
        # before it is spent, so a mismatched form spends nothing.
        grant = remediator.tokens.peek(token)
        if grant is not None and (grant.incident_key != journal_id or grant.action != kind):
            return refuse(400, "token_mismatch", "the token is not this decision's")
        decision = decision_from_token(remediator.tokens, token, kind=cast(DecisionKind, kind),
                                       who=who, when=self.clock(), source="dashboard")
        if decision is None:
            log.info("dashboard_decision_already_decided", who=who, attempted=kind,
                     journal_id=journal_id)
            return self._answer(request, "already_decided", journal_id, state=None,
                                status_code=409)
        log.info("dashboard_decision", kind=kind, who=who, journal_id=journal_id)
        # Run as the remediator's own task: shutdown waits for it, and a client that goes away
        # does not cut a write in half.
        task = asyncio.get_running_loop().create_task(remediator.on_decision(decision))
        remediator.running.add(task)
        task.add_done_callback(remediator.running.discard)
        try:
            await asyncio.shield(task)
        except Exception as error:  # noqa: BLE001 - answered and logged, never lost silently
            log.error("dashboard_decision_failed", kind=kind, who=who, journal_id=journal_id,
                      error=type(error).__name__)
            return self._answer(request, "error", journal_id, state=None, status_code=500)
        entry = remediator.journal.get(int(journal_id))
        state = entry.state if entry is not None else None
        outcome = _OUTCOME_OF_STATE.get(state or "", "already_decided")
        if (outcome == "rejected") != (kind == "reject"):
            outcome = "already_decided"  # decided the other way by someone else meanwhile
        return self._answer(request, outcome, journal_id, state=state)

    def _answer(self, request: Request, outcome: str, journal_id: str, *, state: str | None,
                status_code: int = 200) -> Response:
        if _wants_json(request):
            return JSONResponse({"result": outcome, "message": FLASH_MESSAGES[outcome],
                                 "journal_id": int(journal_id), "state": state},
                                status_code=status_code)
        page = "/incidents/" + quote(request.path_params["id"], safe="")
        return RedirectResponse(f"{page}?{urlencode({'flash': outcome})}", status_code=303)


def _remediation_targets(incident: Mapping[str, Any]) -> set[str]:
    record = incident.get("record")
    remediations = [incident.get("remediation"),
                    record.get("remediation") if isinstance(record, Mapping) else None]
    return {r["target"] for r in remediations
            if isinstance(r, Mapping) and isinstance(r.get("target"), str)}


def _journal_ids(incident: Mapping[str, Any]) -> list[int]:
    record = incident.get("record")
    remediations = [incident.get("remediation"),
                    record.get("remediation") if isinstance(record, Mapping) else None]
    candidates = [r.get("journal_id") for r in remediations if isinstance(r, Mapping)]
    actions = incident.get("actions")
    if isinstance(actions, list):
        candidates += [a.get("id") for a in actions if isinstance(a, Mapping)]
    ids: list[int] = []
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value not in ids:
            ids.append(value)
    return ids


def _page_id(request: Request, incident: Mapping[str, Any], journal_id: int) -> str:
    """The incident page's id (where the decision's answer leads back to): the page being
    rendered (``/incidents/{incident_id}``), else the incident's ``id``, else the journal id."""
    for page_id in (request.path_params.get("incident_id"), request.path_params.get("id"),
                    incident.get("id")):
        if isinstance(page_id, (str, int)) and not isinstance(page_id, bool) and str(page_id):
            return str(page_id)
    return str(journal_id)


def action_routes(*, auth: DashboardAuth, remediator: Remediator | None, clock: Clock,
                  templates: Jinja2Templates | Pages | None = None,
                  page_context: PageContext | None = None) -> list[Route]:
    """The dashboard's write routes; none when it is read-only. Prefer building one
    ``DashboardActions`` and using its ``routes()`` and ``decision_context`` together."""
    return DashboardActions(auth=auth, remediator=remediator, clock=clock, templates=templates,
                            page_context=page_context).routes()
