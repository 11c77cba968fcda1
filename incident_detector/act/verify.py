"""Did the fix work? A pure verdict on the Deployment after an action, asked again each tick.

PASS when the rollout has converged (the controller observed the current spec and every desired
replica is updated, ready and available) *and* the now current revision's error rate is back
under the baseline taken before the bad rollout. FAIL when that has not happened by the
deadline. PENDING in between. Every verdict carries its figures, for the Slack follow-up, the
Event and the JSON line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from ..model import Deployment


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


def verify(*, deployment: Deployment, error_rate_per_minute: float | None,
           baseline_per_minute: float | None, acted_at: datetime, now: datetime,
           timeout_seconds: float) -> Verification:
    """The verdict on ``deployment`` ``now``, after an action taken at ``acted_at``.

    ``error_rate_per_minute`` is the current revision's rate now (None: Loki did not answer);
    ``baseline_per_minute`` the rate before the bad rollout (None: never known, and then the
    errors cannot be judged: convergence alone decides, and the reasons say so).
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
    if baseline_per_minute is None:
        errors_ok: bool | None = True
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
