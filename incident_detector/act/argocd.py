"""Argo CD's API, for a rollback of a Deployment it manages: read the application, roll it back
to an entry of its history, and read it again to verify.

Two calls of ``argocd-server``'s REST gateway, with ``Authorization: Bearer <token>``:

- ``GET /api/v1/applications/{name}[?appNamespace=NS]``: the Application (``status.sync``,
  ``status.health``, ``status.history[]``, ``status.operationState``, ``spec.syncPolicy``);
- ``POST /api/v1/applications/{name}/rollback`` with an ``ApplicationRollbackRequest``
  (``name``, ``id``: the history entry, ``dryRun``, ``prune``, ``appNamespace``): Argo CD starts a
  sync operation to that entry's revision and answers with the Application.

Errors come back as the gRPC gateway's JSON, ``{"error": ..., "code": <gRPC code>, "message": ...}``
with the HTTP status the gateway maps the code to (PermissionDenied 403, NotFound 404,
FailedPrecondition and InvalidArgument 400, Unauthenticated 401). Argo CD refuses a rollback
while the application's automated sync is on (FailedPrecondition, "rollback cannot be initiated
when auto-sync is enabled"): auto-sync would put Git's revision straight back. It also answers
403, not 404, for an application that does not exist, so as not to tell who may see what.

``choose_target`` (pure) decides which history entry a rollback goes back to, or why none.
The token lives in the client's default headers only: it is never part of a message, a log
line or an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import structlog
from pydantic import SecretStr

from ..errors import SourceError
from ..model import GitOpsOwner, GitOpsTool

log = structlog.get_logger("incident_detector")

SOURCE = "argocd"
# Application health and sync statuses, and operation phases, as Argo CD spells them.
HEALTHY, DEGRADED = "Healthy", "Degraded"
SYNCED, OUT_OF_SYNC = "Synced", "OutOfSync"
RUNNING, SUCCEEDED, FAILED_PHASE, ERROR_PHASE = "Running", "Succeeded", "Failed", "Error"
# gRPC codes in the gateway's error bodies.
_INVALID_ARGUMENT, _NOT_FOUND, _PERMISSION_DENIED, _FAILED_PRECONDITION = 3, 5, 7, 9
_UNAUTHENTICATED = 16
AUTO_SYNC_REFUSAL = "auto-sync"
# A sync ends (deployedAt) after it applied the Deployment, i.e. after the rollout it caused
# began; this much clock difference between Argo CD and the detector is tolerated.
CLOCK_SLACK = timedelta(seconds=30)


class ArgoCdError(SourceError):
    """A call to Argo CD failed. ``reason``: ``forbidden``, ``unauthorized``, ``not_found``,
    ``auto_sync_enabled``, ``failed_precondition``, ``invalid_argument``, ``timeout``,
    ``connection``, ``malformed`` or ``http_<status>``."""

    def __init__(self, reason: str, message: str, *, retryable: bool,
                 status: int | None = None) -> None:
        super().__init__(SOURCE, reason, message, retryable=retryable, status=status)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One deployment of the application (``status.history[]``), oldest first in the list."""

    id: int
    revision: str
    deployed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Application:
    """What the detector needs of an Argo CD Application."""

    name: str
    namespace: str | None
    resource_version: str
    sync_status: str | None
    # The revision the comparison was made against (Git's target, resolved).
    sync_revision: str | None
    health_status: str | None
    auto_sync: bool
    history: tuple[HistoryEntry, ...] = ()
    # The last (or current) operation: its phase, and the revision it syncs to.
    operation_phase: str | None = None
    operation_revision: str | None = None
    # ``operation`` is set on the object while an operation waits to run or runs.
    operation_pending: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def current(self) -> HistoryEntry | None:
        """What is deployed: the newest history entry (after a rollback, its target; Git's
        revision, ``sync_revision``, is then another one)."""
        return self.history[-1] if self.history else None

    @property
    def busy(self) -> bool:
        return self.operation_pending or self.operation_phase in (RUNNING, "Terminating")


@dataclass(frozen=True, slots=True)
class Target:
    """The history entry a rollback goes back to, and the one it leaves."""

    entry: HistoryEntry
    current: HistoryEntry


@dataclass(frozen=True, slots=True)
class NoTarget:
    """Why no rollback is sent. ``outcome``: an ``ActionResult`` outcome (``failed``,
    ``stale``, ``already_done``)."""

    outcome: str
    message: str


# ---------------------------------------------------------------------------------------------
# Pure: parsing, and the choice of the target.


def parse_application(body: Any) -> Application:
    """The Application of a GET or a rollback answer; ``ArgoCdError("malformed")`` when it is
    not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("metadata"), Mapping):
        raise ArgoCdError("malformed", "the answer is not an Argo CD Application",
                          retryable=False)
    metadata, spec, status = body["metadata"], _dict(body.get("spec")), _dict(body.get("status"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ArgoCdError("malformed", "the Application has no metadata.name", retryable=False)
    sync, health = _dict(status.get("sync")), _dict(status.get("health"))
    state = _dict(status.get("operationState"))
    operation_revision = _str(_dict(state.get("syncResult")).get("revision")) \
        or _str(_dict(_dict(state.get("operation")).get("sync")).get("revision"))
    pending = _dict(body.get("operation"))
    if pending:
        operation_revision = _str(_dict(pending.get("sync")).get("revision")) \
            or operation_revision
    history = []
    for item in status.get("history") or ():
        item = _dict(item)
        entry_id = item.get("id")
        revision = _str(item.get("revision"))
        if isinstance(entry_id, bool) or not isinstance(entry_id, (int, str)) or not revision:
            continue  # a multi-source entry (``revisions``) is not one this client rolls to
        try:
            history.append(HistoryEntry(int(entry_id), revision,
                                        _time(item.get("deployedAt"))))
        except ValueError:
            continue
    automated = _dict(spec.get("syncPolicy")).get("automated")
    # Argo CD 3 added ``automated.enabled``: automated sync is on unless it says false.
    auto_sync = isinstance(automated, Mapping) and automated.get("enabled") is not False
    return Application(
        name=name, namespace=_str(metadata.get("namespace")),
        resource_version=_str(metadata.get("resourceVersion")) or "",
        sync_status=_str(sync.get("status")), sync_revision=_str(sync.get("revision")),
        health_status=_str(health.get("status")), auto_sync=auto_sync, history=tuple(history),
        operation_phase=_str(state.get("phase")), operation_revision=operation_revision,
        operation_pending=bool(pending))


def choose_target(app: Application, *, incident_at: datetime | None,
                  rollout_started_at: datetime | None = None,
                  history_id: int | None = None) -> Target | NoTarget:
    """The entry to roll ``app`` back to, or why there is none.

    The history is read as of the bad rollout (``cause_index``): the deployment that caused it,
    and the newest entry before it with another revision (a re-sync of the same revision is no
    earlier state), or ``history_id`` when one was recorded. Later entries (a re-sync, someone
    else's change, this very rollback once it landed) never move the target, so that a retry or
    a restart chooses the same one. No target when:

    - the very rollback is already running or done (``already_done``: a retry after an answer
      that never came, or someone was quicker);
    - auto-sync is on: Argo CD refuses the rollback (``failed``, with what to do);
    - an operation runs, or another revision was deployed since: not the state the decision
      was taken on (``stale``);
    - no deployment of the application ended after the bad rollout began: the rollout did not
      come from Argo CD, and rolling its history back would not undo it (``failed``);
    - the history has no earlier entry (``failed``).
    """
    where = app.qualified_name
    now_current = app.current
    cause = cause_index(app, incident_at=incident_at, rollout_started_at=rollout_started_at)
    if now_current is None:
        return NoTarget("failed", f"Argo CD application {where} has no deployment history to "
                                  f"roll back to.")
    if cause is None:
        if rollout_started_at is not None:
            last = now_current.deployed_at.isoformat() if now_current.deployed_at else "?"
            return NoTarget("failed", f"no deployment of Argo CD application {where} ended after "
                                      f"the bad rollout began "
                                      f"({_utc(rollout_started_at).isoformat()}; the last one, "
                                      f"history id {now_current.id}, at {last}): the rollout "
                                      f"did not come from Argo CD, so rolling back its history "
                                      f"would not undo it")
        return NoTarget("failed", f"Argo CD application {where} has no deployment before the "
                                  f"incident to roll back from.")
    current = app.history[cause]
    wanted = target_entry(app, incident_at=incident_at, rollout_started_at=rollout_started_at,
                          history_id=history_id)
    later = app.history[cause + 1:]
    if wanted is not None:
        if app.busy and app.operation_revision == wanted.revision:
            return NoTarget("already_done",
                            f"Argo CD application {where} is already rolling back to revision "
                            f"{short_revision(wanted.revision)} (history id {wanted.id}), "
                            f"operation {app.operation_phase or 'pending'}")
        if later and now_current.revision == wanted.revision:
            return NoTarget("already_done",
                            f"Argo CD application {where} already deploys revision "
                            f"{short_revision(wanted.revision)} again (history id "
                            f"{now_current.id})")
    if app.auto_sync:
        return NoTarget("failed", auto_sync_message(app))
    if app.busy:
        return NoTarget("stale", f"an operation runs on Argo CD application {where} (phase "
                                 f"{app.operation_phase or 'pending'}, to revision "
                                 f"{short_revision(app.operation_revision)}); refused rather "
                                 f"than sent over it")
    if now_current.revision != current.revision:
        deployed = now_current.deployed_at.isoformat() if now_current.deployed_at else "?"
        return NoTarget("stale", f"Argo CD application {where} deployed revision "
                                 f"{short_revision(now_current.revision)} (history id "
                                 f"{now_current.id}) at {deployed}, since the bad revision "
                                 f"{short_revision(current.revision)}; refused rather than "
                                 f"applied to a newer state")
    if wanted is None:
        missing = f"history id {history_id}" if history_id is not None else \
            f"deployment earlier than revision {short_revision(current.revision)}"
        return NoTarget("failed", f"Argo CD application {where} has no {missing} to roll "
                                  f"back to.")
    return Target(entry=wanted, current=current)


def cause_index(app: Application, *, incident_at: datetime | None,
                rollout_started_at: datetime | None) -> int | None:
    """Where the deployment current at the incident is in ``app.history``. With the bad
    rollout's start: the first entry that ended after it (the sync that applied the Deployment
    ends after its rollout began; ``CLOCK_SLACK`` allows for the two clocks), None when there is
    none. Without it (an alert's incident): the newest entry that ended ``CLOCK_SLACK`` before
    the incident, so that a rollback started right then is not taken for it."""
    history = app.history
    if rollout_started_at is not None:
        cut = _utc(rollout_started_at) - CLOCK_SLACK
        return next((i for i, e in enumerate(history)
                     if e.deployed_at is not None and e.deployed_at >= cut), None)
    if incident_at is None:
        return len(history) - 1 if history else None
    cut = _utc(incident_at) - CLOCK_SLACK
    before = [i for i, e in enumerate(history) if e.deployed_at is None or e.deployed_at < cut]
    return before[-1] if before else None


def target_entry(app: Application, *, incident_at: datetime | None,
                 rollout_started_at: datetime | None = None,
                 history_id: int | None = None) -> HistoryEntry | None:
    """The entry a rollback of that incident goes back to (``choose_target`` without its
    checks): what the verification compares the application with."""
    if history_id is not None:
        return next((e for e in app.history if e.id == history_id), None)
    cause = cause_index(app, incident_at=incident_at, rollout_started_at=rollout_started_at)
    if cause is None:
        return None
    bad = app.history[cause].revision
    return next((e for e in reversed(app.history[:cause]) if e.revision != bad), None)


def cli_rollback(app: Application, entry: HistoryEntry) -> str:
    """The same rollback as the CLI spells it, naming the history entry: what a person would
    have typed, for the audit trail (``NAMESPACE/APP`` outside Argo CD's own namespace)."""
    owner = GitOpsOwner(GitOpsTool.ARGO_CD, app.name, app.namespace)
    return f"{owner.rollback_commands()[0]} {entry.id}"


def auto_sync_message(app: Application) -> str:
    """What to do when auto-sync stands in the way."""
    return (f"Argo CD refuses a rollback while auto-sync is on: disable auto-sync of "
            f"{app.qualified_name} first (argocd app set {app.qualified_name} --sync-policy "
            f"none) or revert the commit in Git")


def rollback_body(name: str, *, history_id: int, app_namespace: str | None, dry_run: bool,
                  prune: bool) -> dict[str, Any]:
    """An ``ApplicationRollbackRequest``."""
    body: dict[str, Any] = {"name": name, "id": history_id, "dryRun": dry_run, "prune": prune}
    if app_namespace:
        body["appNamespace"] = app_namespace
    return body


# ---------------------------------------------------------------------------------------------
# The client.


class ArgoCdClient:
    """One ``httpx.AsyncClient`` against ``argocd-server``; every call bounded by ``timeout``."""

    def __init__(self, *, base_url: str, token: SecretStr, timeout: float,
                 verify_tls: bool = True, http: httpx.AsyncClient | None = None) -> None:
        self.base_url = str(base_url).rstrip("/")
        self._timeout = timeout
        headers = {"Authorization": f"Bearer {token.get_secret_value()}",
                   "Accept": "application/json"}
        if http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                           timeout=timeout, verify=verify_tls)
            self._own = True
        else:
            http.headers.update(headers)
            self._http, self._own = http, False

    async def get_application(self, name: str, app_namespace: str | None = None) -> Application:
        params = {"appNamespace": app_namespace} if app_namespace else None
        what = f"reading Argo CD application {_qualified(name, app_namespace)}"
        try:
            response = await self._http.get(self._path(name), params=params,
                                            timeout=self._timeout)
        except httpx.TimeoutException:
            raise ArgoCdError("timeout", f"{what}: no answer within {self._timeout:g}s",
                              retryable=True) from None
        except httpx.HTTPError as exc:
            raise ArgoCdError("connection", f"{what}: {type(exc).__name__}",
                              retryable=True) from None
        return parse_application(self._body(response, what))

    async def rollback(self, name: str, *, history_id: int, app_namespace: str | None = None,
                       dry_run: bool, prune: bool = False) -> Application:
        """Start a rollback of ``name`` to history entry ``history_id``; the Application as
        Argo CD answers it (its ``operation`` set to the sync it started)."""
        what = (f"rollback of Argo CD application {_qualified(name, app_namespace)} to history "
                f"id {history_id}")
        body = rollback_body(name, history_id=history_id, app_namespace=app_namespace,
                             dry_run=dry_run, prune=prune)
        try:
            response = await self._http.post(f"{self._path(name)}/rollback", json=body,
                                             timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Never sent: the same request may go again.
            raise ArgoCdError("connection" if isinstance(exc, httpx.ConnectError) else "timeout",
                              f"{what}: not sent ({type(exc).__name__})",
                              retryable=True) from None
        except httpx.HTTPError as exc:
            # Sent, and the answer lost: a rollback is not idempotent (a second one while the
            # first runs is refused, after it ends it starts another sync), so it is not resent
            # here. The caller's next attempt reads the application first, and finds the
            # rollback running or done if it landed (``choose_target``: already_done).
            reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
            raise ArgoCdError(reason, f"{what}: sent, but no answer came "
                                      f"({type(exc).__name__}); whether it started is read "
                                      f"from the application before anything is sent again",
                              retryable=True) from None
        return parse_application(self._body(response, what))

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    def _path(self, name: str) -> str:
        """The application's URL (absolute: a given ``http`` client need not have a base)."""
        quoted = httpx.URL(path=name).raw_path.decode("ascii").replace("/", "%2F")
        return f"{self.base_url}/api/v1/applications/{quoted}"

    def _body(self, response: httpx.Response, what: str) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        raise _error(response.status_code, body, what)


def _error(status: int, body: Any, what: str) -> ArgoCdError:
    """The gateway's error body as a typed error (the message is Argo CD's own: it names the
    application, the action and the account, never the token)."""
    body = _dict(body)
    message = _str(body.get("message")) or _str(body.get("error")) or f"HTTP {status}"
    code = body.get("code")
    text = f"{what}: {message}"
    if status == 401 or code == _UNAUTHENTICATED:
        return ArgoCdError("unauthorized", text, retryable=False, status=status)
    if status == 403 or code == _PERMISSION_DENIED:
        return ArgoCdError("forbidden", text, retryable=False, status=status)
    if status == 404 or code == _NOT_FOUND:
        return ArgoCdError("not_found", text, retryable=False, status=status)
    if code == _FAILED_PRECONDITION:
        reason = "auto_sync_enabled" if AUTO_SYNC_REFUSAL in message else "failed_precondition"
        return ArgoCdError(reason, text, retryable=False, status=status)
    if code == _INVALID_ARGUMENT:
        return ArgoCdError("invalid_argument", text, retryable=False, status=status)
    return ArgoCdError(f"http_{status}", text, retryable=status == 429 or status >= 500,
                       status=status)


def _qualified(name: str, app_namespace: str | None) -> str:
    return f"{app_namespace}/{name}" if app_namespace else name


def short_revision(revision: str | None) -> str:
    """A Git SHA as people read it; other revisions (a chart version) as they are."""
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision[:7]
    return revision or "unknown"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None \
        else moment.astimezone(timezone.utc)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


