"""How sure the detector is that a rollout broke its Deployment: a score in [0, 1], explained.

A pure function of the incident's evidence. Each piece of evidence adds or takes away a fixed
weight, and every weight that applied is one reason, so a person (or a guardrail deciding
between acting, asking and only telling) can read why the score is what it is:

- what Kubernetes itself says weighs most: pods of the new revision that cannot run
  (CrashLoopBackOff, image pull errors, OOMKilled, restarts), a rollout past its progress
  deadline;
- errors weigh by how well they are tied to the rollout: written by the new revision's pods (per
  pod) or only by the workload as a whole; how far they rose over the baseline; whether their
  signatures are new since the rollout;
- what blurs the picture takes away: another revision rolled out in the same window, pods of
  other revisions erroring as much, error signatures that were there before, example lines
  that could not be read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..model import Attribution, Incident, Signal

# A signal held: the rules decided this is an incident at all.
BASE = 0.2
POD_HEALTH = 0.4
PROGRESS_DEADLINE = 0.3
ERRORS_PER_POD = 0.25
ERRORS_WORKLOAD_TOTAL = 0.1
RISE_TENFOLD = 0.2
RISE_FIVEFOLD = 0.15
RISE_SMALL = 0.05
RISE_FROM_NONE = 0.15
NEW_SIGNATURES = 0.15
OLD_SIGNATURES_ONLY = -0.1
NO_SIGNATURES = -0.05
OTHER_REVISIONS = -0.1
OTHERS_ERR_TOO = -0.1


@dataclass(frozen=True, slots=True)
class Confidence:
    score: float
    reasons: tuple[str, ...]


def confidence(incident: Incident) -> Confidence:
    evidence = incident.evidence
    weights: list[tuple[float, str]] = [(BASE, "the detection rules held")]
    signals = set(incident.signals)
    if Signal.POD_HEALTH in signals:
        problems = sorted({problem for _, problem in evidence.pod_problems})
        weights.append((POD_HEALTH, "pods of the new revision cannot run"
                        + (f" ({', '.join(problems)})" if problems else "")))
    if Signal.PROGRESS_DEADLINE in signals:
        weights.append((PROGRESS_DEADLINE, "Kubernetes gave up on the rollout (progress deadline)"))
    if Signal.ERROR_SPIKE in signals:
        weights.extend(_error_weights(incident))
    if evidence.other_revisions_in_window:
        weights.append((OTHER_REVISIONS, "another revision rolled out in the same window"))
    score = min(1.0, max(0.0, sum(weight for weight, _ in weights)))
    return Confidence(score=round(score, 2),
                      reasons=tuple(f"{weight:+.2f} {why}" for weight, why in weights))


def scored(incident: Incident) -> Incident:
    """The incident with its confidence and the reasons for it."""
    result = confidence(incident)
    return replace(incident, confidence=result.score, confidence_reasons=result.reasons)


def _error_weights(incident: Incident) -> list[tuple[float, str]]:
    evidence = incident.evidence
    weights: list[tuple[float, str]] = []
    if evidence.attribution is Attribution.PER_POD:
        weights.append((ERRORS_PER_POD, "the errors come from the new revision's pods"))
        if evidence.other_errors >= max(evidence.new_revision_errors, 1.0):
            weights.append((OTHERS_ERR_TOO, "pods of other revisions write as many errors"))
    else:
        weights.append((ERRORS_WORKLOAD_TOTAL,
                        "the errors are the workload's (the logs carry no pod identity)"))
    baseline = evidence.baseline_per_minute
    rate = evidence.error_rate_per_minute
    if baseline is not None:
        if baseline <= 0:
            weights.append((RISE_FROM_NONE, "no errors at all before the rollout"))
        elif rate >= 10 * baseline:
            weights.append((RISE_TENFOLD, f"{rate / baseline:.0f}x the rate before the rollout"))
        elif rate >= 5 * baseline:
            weights.append((RISE_FIVEFOLD, f"{rate / baseline:.0f}x the rate before the rollout"))
        else:
            weights.append((RISE_SMALL, f"{rate / baseline:.1f}x the rate before the rollout"))
    if not evidence.signatures:
        weights.append((NO_SIGNATURES, "no example lines could be read"))
    elif any(signature.new for signature in evidence.signatures):
        new = sum(1 for signature in evidence.signatures if signature.new)
        weights.append((NEW_SIGNATURES,
                        f"{new} error signature{'s' if new > 1 else ''} new since the rollout"))
    else:
        weights.append((OLD_SIGNATURES_ONLY, "every error signature was there before the rollout"))
    return weights
