"""Did the fix work? A pure verdict on the Deployment after an action, asked again each tick.

PASS when the rollout has converged (the controller observed the current spec and every desired
replica is updated, ready and available) *and* the now current revision's error rate is back
under the baseline taken before the bad rollout. FAIL when that has not happened by the
deadline. PENDING in between. Every verdict carries its figures, for the Slack follow-up, the
Event and the JSON line.

What "worked" means depends on the action (``verify_action`` chooses):

- rollback, restart, scale, delete-pod: ``verify``, convergence and errors as above;
- pause: ``verify_paused``, the Deployment is paused (a paused rollout does not converge, and
  the errors of the revision it holds are not what a pause changes);
- delete-stuck-pods: ``verify`` on convergence alone (the pods it removed wrote no errors).

A rollback through Argo CD (``verify_argocd_rollback``) is judged on the application as well:
its rollback's sync succeeded at the target entry's revision and it is Healthy, *and* the
Deployment converged with its errors under the baseline. Its sync status is reported, not
required: after a rollback Argo CD reports ``OutOfSync``, since Git still has the newer commit.
A sync that failed at the target revision fails the verification at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

import math

from ..model import Deployment
from .argocd import (
    ERROR_PHASE,
    FAILED_PHASE,
    HEALTHY,
    OUT_OF_SYNC,
    SUCCEEDED,
    Application,
    HistoryEntry,
    short_revision,
)
from ..judge.guardrails import Action


class VerificationResult(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Verification:
    result: VerificationResult
    reasons: tuple[str, ...]
    desired_replicas: int
    ready_replicas: int
    updated_replicas: int
    error_rate_before: float | None
    error_rate_after: float | None
    seconds_since_action: float
    # A rollback through Argo CD: the application (NAMESPACE/NAME) and what it reported.
    application: str | None = None
    app_health: str | None = None
    app_sync: str | None = None
    app_revision: str | None = None


def verify_action(action: str, *, deployment: Deployment, error_rate_per_minute: float | None,
                  baseline_per_minute: float | None, acted_at: datetime, now: datetime,
                  timeout_seconds: float) -> Verification:
    """The verdict for ``action`` (an ``Action`` value): the check that fits what it changed."""
    if action == Action.PAUSE.value:
        return verify_paused(deployment=deployment, acted_at=acted_at, now=now,
                             timeout_seconds=timeout_seconds)
    judge_errors = action != Action.DELETE_STUCK_PODS.value
    return verify(deployment=deployment, error_rate_per_minute=error_rate_per_minute,
                  baseline_per_minute=baseline_per_minute, acted_at=acted_at, now=now,
                  timeout_seconds=timeout_seconds, judge_errors=judge_errors)


def verify_paused(*, deployment: Deployment, acted_at: datetime, now: datetime,
                  timeout_seconds: float) -> Verification:
    """PASS when ``deployment`` is paused, FAIL when it is still not by the deadline."""
    elapsed = (now - acted_at).total_seconds()
    status = deployment.rollout
    if deployment.paused:
        result = VerificationResult.PASS
        reasons = ("deployment paused: the controller rolls out nothing until it is resumed",)
    elif elapsed >= timeout_seconds:
        result = VerificationResult.FAIL
        reasons = ("deployment not paused", f"not verified within {timeout_seconds:g}s")
    else:
        result = VerificationResult.PENDING
        reasons = ("deployment not paused yet",)
    return Verification(
        result=result, reasons=reasons, desired_replicas=deployment.replicas,
        ready_replicas=status.ready_replicas if status else 0,
        updated_replicas=status.updated_replicas if status else 0,
        error_rate_before=None, error_rate_after=None, seconds_since_action=round(elapsed, 3))


def verify(*, deployment: Deployment, error_rate_per_minute: float | None,
           baseline_per_minute: float | None, acted_at: datetime, now: datetime,
           timeout_seconds: float, judge_errors: bool = True) -> Verification:
    """The verdict on ``deployment`` ``now``, after an action taken at ``acted_at``.

    ``error_rate_per_minute`` is the current revision's rate now (None: Loki did not answer);
    ``baseline_per_minute`` the rate before the bad rollout (None: never known, and then the
    errors cannot be judged: convergence alone decides, and the reasons say so).
    ``judge_errors=False``: convergence alone decides, whatever the errors (an action that does
    not change what the pods run).
    """
    elapsed = (now - acted_at).total_seconds()
    status = deployment.rollout
    desired = deployment.replicas
    converged = status is not None and status.converged(desired)
    reasons: list[str] = []
    if converged:
        reasons.append(f"rollout converged: {desired}/{desired} replicas updated and ready")
    elif status is None:
        reasons.append("rollout status unknown")
    else:
        reasons.append(f"rollout not converged: {status.updated_replicas}/{desired} updated, "
                       f"{status.ready_replicas}/{desired} ready, generation "
                       f"{status.observed_generation}/{status.generation} observed")
    if not judge_errors:
        errors_ok: bool | None = True
        reasons.append("errors not judged for this action: judged on the rollout alone")
    elif baseline_per_minute is None:
        errors_ok = True
        reasons.append("no baseline to compare the errors with: judged on the rollout alone")
    elif error_rate_per_minute is None:
        errors_ok = None
        reasons.append("error rate unknown (Loki did not answer)")
    else:
        errors_ok = error_rate_per_minute <= baseline_per_minute
        comparison = "back under" if errors_ok else "still above"
        reasons.append(f"error rate {error_rate_per_minute:g}/min {comparison} the baseline "
                       f"{baseline_per_minute:g}/min")
    if converged and errors_ok:
        result = VerificationResult.PASS
    elif elapsed >= timeout_seconds:
        result = VerificationResult.FAIL
        reasons.append(f"not verified within {timeout_seconds:g}s")
    else:
        result = VerificationResult.PENDING
    return Verification(
        result=result, reasons=tuple(reasons), desired_replicas=desired,
        ready_replicas=status.ready_replicas if status else 0,
        updated_replicas=status.updated_replicas if status else 0,
        error_rate_before=baseline_per_minute, error_rate_after=error_rate_per_minute,
        seconds_since_action=round(elapsed, 3))


def verify_argocd_rollback(*, application: Application | None, app_name: str,
                           target: HistoryEntry | None, deployment: Deployment,
                           error_rate_per_minute: float | None,
                           baseline_per_minute: float | None, acted_at: datetime, now: datetime,
                           timeout_seconds: float, unread: str | None = None) -> Verification:
    """The verdict on a rollback of ``deployment`` through the Argo CD application
    ``application`` (None: not read, ``unread`` says why) to the history entry ``target``."""
    elapsed = (now - acted_at).total_seconds()
    cluster = verify(deployment=deployment, error_rate_per_minute=error_rate_per_minute,
                     baseline_per_minute=baseline_per_minute, acted_at=acted_at, now=now,
                     timeout_seconds=math.inf)
    app_ok, app_failed = False, False
    if application is None:
        app_reason = f"Argo CD application {app_name} not read: {unread or 'no answer'}"
    elif target is None:
        app_reason = (f"Argo CD application {application.qualified_name}: the history entry "
                      f"rolled back to is no longer in its history")
    else:
        phase, revision = application.operation_phase, application.operation_revision
        at_target = revision == target.revision and not application.operation_pending
        app_ok = at_target and phase == SUCCEEDED and application.health_status == HEALTHY
        app_failed = at_target and phase in (FAILED_PHASE, ERROR_PHASE)
        sync = application.sync_status or "unknown"
        git = " (Git still has the newer commit: revert it there)" \
            if sync == OUT_OF_SYNC else ""
        app_reason = (f"Argo CD application {application.qualified_name}: rollback to revision "
                      f"{short_revision(target.revision)} (history id {target.id}) "
                      f"{(phase or 'not started').lower() if at_target else 'not started yet'}, "
                      f"health {application.health_status or 'unknown'}, {sync} with Git{git}")
    reasons = [app_reason, *cluster.reasons]
    if app_ok and cluster.result is VerificationResult.PASS:
        result = VerificationResult.PASS
    elif app_failed or elapsed >= timeout_seconds:
        result = VerificationResult.FAIL
        if not app_failed:
            reasons.append(f"not verified within {timeout_seconds:g}s")
    else:
        result = VerificationResult.PENDING
    return Verification(
        result=result, reasons=tuple(reasons), desired_replicas=cluster.desired_replicas,
        ready_replicas=cluster.ready_replicas, updated_replicas=cluster.updated_replicas,
        error_rate_before=baseline_per_minute, error_rate_after=error_rate_per_minute,
        seconds_since_action=round(elapsed, 3),
        application=application.qualified_name if application is not None else app_name,
        app_health=application.health_status if application is not None else None,
        app_sync=application.sync_status if application is not None else None,
        app_revision=application.operation_revision if application is not None else None)
