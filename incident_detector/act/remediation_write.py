"""Carrying out a remediation: the one write an approved journal entry stands for, made with
what was recorded when it was proposed (the Deployment's resourceVersion seen, the pod's uid,
the replica count, the selector), through the executor or, for a rollback of an application
that Argo CD manages, through Argo CD.

``Remediator`` moves the entry through the journal around this call (approved -> executing ->
done or failed); this module only writes, and says how it went as an ``ActionResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..judge.guardrails import Action
from ..store.journal import JournalEntry
from .argocd import (ArgoCdClient, ArgoCdError, NoTarget, auto_sync_message, choose_target,
                     cli_rollback, short_revision)
from .executor import APPLIED, DRY_RUN_OK, FORBIDDEN, ActionResult, KubeExecutor
from .executor import FAILED as WRITE_FAILED
from .executor import STALE as WRITE_STALE
from .remediation_plan import recorded_moment
from .remediation_text import entry_target

Clock = Callable[[], datetime]


async def write_action(entry: JournalEntry, *, executor: KubeExecutor,
                       argocd: ArgoCdClient | None, clock: Clock,
                       dry_run: bool) -> ActionResult:
    """The executor's call for ``entry.action``, with what was recorded: the Deployment's
    resourceVersion seen, the pod's uid, the replica count, the selector."""
    namespace, deployment = entry.key[0], entry.key[1]
    params, version = entry.params, entry.precondition
    action = entry.action
    if action == Action.ROLLBACK.value and isinstance(params.get("argocd"), dict):
        return await _argocd_rollback(entry, argocd=argocd, dry_run=dry_run)
    if action == Action.ROLLBACK.value:
        template = await executor.replicaset_template(
            namespace, str(params.get("to_replicaset")))
        return await executor.rollback(namespace, deployment, to_template=template,
                                       resource_version=version, dry_run=dry_run)
    if action == Action.RESTART.value:
        # Stamped with the proposal's time, which the record keeps: a resumed restart sends
        # the very same patch, and the executor recognises it as done.
        return await executor.restart(namespace, deployment, resource_version=version,
                                      now=entry.created_at, dry_run=dry_run)
    if action == Action.PAUSE.value:
        return await executor.pause(namespace, deployment, resource_version=version,
                                    dry_run=dry_run)
    if action == Action.SCALE.value:
        replicas = params.get("replicas")
        return await executor.scale(namespace, deployment, replicas=replicas,
                                    resource_version=version, dry_run=dry_run)
    if action == Action.DELETE_POD.value:
        return await executor.delete_pod(namespace, str(params.get("pod")),
                                         uid=str(params.get("pod_uid")),
                                         dry_run=dry_run)
    if action == Action.DELETE_STUCK_PODS.value:
        return await executor.delete_stuck_pods(namespace,
                                                selector=str(params.get("selector")),
                                                now=clock(), dry_run=dry_run)
    return ActionResult(action, entry_target(entry), dry_run, WRITE_FAILED,
                        f"unknown action {action!r}: nothing was written")


async def _argocd_rollback(entry: JournalEntry, *, argocd: ArgoCdClient | None,
                           dry_run: bool) -> ActionResult:
    """The rollback through Argo CD: read the application, choose the entry, roll back.
    A retryable failure (no answer, 5xx) is raised, and the next attempt reads the
    application again before anything is sent."""
    record, target = entry.params["argocd"], entry_target(entry)
    app_name, app_namespace = str(record.get("app")), record.get("app_namespace")
    if argocd is None:
        return ActionResult(Action.ROLLBACK.value, target, dry_run, WRITE_FAILED,
                            f"the rollback goes through Argo CD application {app_name}, and "
                            f"ARGOCD_URL and ARGOCD_TOKEN are not set: nothing was written")
    try:
        app = await argocd.get_application(app_name, app_namespace)
    except ArgoCdError as exc:
        if exc.retryable:
            raise
        return ActionResult(Action.ROLLBACK.value, target, dry_run, _argocd_outcome(exc),
                            exc.message)
    choice = choose_target(app, incident_at=recorded_moment(record.get("incident_at")),
                           rollout_started_at=recorded_moment(record.get("rollout_started_at")),
                           history_id=record.get("history_id"))
    if isinstance(choice, NoTarget):
        return ActionResult(Action.ROLLBACK.value, target, dry_run, choice.outcome,
                            choice.message, app.resource_version)
    wanted, current = choice.entry, choice.current
    what = (f"rollback of Argo CD application {app.qualified_name} to history id {wanted.id} "
            f"(revision {short_revision(wanted.revision)}), from history id {current.id} "
            f"(revision {short_revision(current.revision)}), as `{cli_rollback(app, wanted)}`")
    try:
        answer = await argocd.rollback(app_name, history_id=wanted.id,
                                       app_namespace=app_namespace, dry_run=dry_run)
    except ArgoCdError as exc:
        if exc.retryable:
            raise
        message = f"{what}: {auto_sync_message(app)}" \
            if exc.reason == "auto_sync_enabled" else exc.message
        return ActionResult(Action.ROLLBACK.value, target, dry_run, _argocd_outcome(exc),
                            message, app.resource_version)
    if dry_run:
        return ActionResult(Action.ROLLBACK.value, target, True, DRY_RUN_OK,
                            f"{what}: accepted by Argo CD with dryRun (nothing deployed)",
                            answer.resource_version)
    return ActionResult(Action.ROLLBACK.value, target, False, APPLIED,
                        f"{what}: started by Argo CD (the Deployment itself is not patched)",
                        answer.resource_version)


def _argocd_outcome(exc: ArgoCdError) -> str:
    """An Argo CD refusal as an action's outcome: another operation running, or a history entry
    gone, mean the application is no longer what the decision was taken on."""
    if exc.reason in ("forbidden", "unauthorized"):
        return FORBIDDEN
    if exc.reason in ("failed_precondition", "invalid_argument"):
        return WRITE_STALE
    return WRITE_FAILED
