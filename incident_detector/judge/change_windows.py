"""Did a change that was not a workload's own rollout break it? A pure function of plain data.

A rollout is judged by the correlator. Many incidents start elsewhere: a ConfigMap edited in
place, a Secret rotated, the rollout of a service this one calls. After such a change, the
workloads it may break (``judge.causes.affected_workloads``: those that use the ConfigMap or
Secret, those that depend on the rolled-out workload) are *suspects* for the rollout window,
and each is judged like a rollout: its error count over the error window against its own rate
before the change (the baseline), with the same threshold and the same "clear rise" rule.

Rules, in order:

1. A change is followed for ``window_seconds`` (ROLL_OUT_WINDOW_MINUTES) after it was made.
2. A workload is a suspect of the *earliest* change in that window that may affect it: its
   baseline ends there, before anything changed. A later change never restarts the watch.
3. A workload with a rollout of its own in its window is not a suspect: its rollout incident
   ranks every change as a cause (``evidence.causes``), including this one.
4. One incident per (workload, change), ever (``already_notified``).

Unknown counts or baseline give "no verdict", never "healthy".
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..model import Baseline, Change, Deployment, change_incident_key
from .correlator import Rules, Verdict, is_clear_rise


@dataclass(frozen=True, slots=True)
class Suspect:
    """A workload watched for a rise in its errors after a change that was not its own."""

    namespace: str
    deployment: str
    deployment_uid: str
    change: Change

    @property
    def key(self) -> str:
        return change_incident_key(self.namespace, self.deployment, self.deployment_uid,
                                   self.change)

    @property
    def baseline_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.deployment, self.key)


@dataclass(frozen=True, slots=True)
class Judgement:
    suspect: Suspect
    verdict: Verdict
    error_count: float | None
    baseline: Baseline | None
    reasons: tuple[str, ...] = ()


def in_change_window(change: Change, *, now: datetime, window_seconds: float) -> bool:
    return change.at <= now and (now - change.at).total_seconds() <= window_seconds


def suspects(changes: Iterable[Change], affected: Mapping[tuple[str, str, str, str], Sequence[str]],
             *, deployments: Mapping[str, Deployment], now: datetime, window_seconds: float,
             busy: Container[str] = ()) -> tuple[Suspect, ...]:
    """The workloads to judge at ``now``: for each, the earliest change in its window that may
    affect it (``affected``: change key -> Deployment names), sorted by workload name.

    ``busy``: Deployments with a rollout of their own in its window (left to the correlator).
    A change never makes its own object a suspect.
    """
    earliest: dict[str, Change] = {}
    for change in sorted(changes, key=lambda c: (c.at, c.id or 0, c.key)):
        if not in_change_window(change, now=now, window_seconds=window_seconds):
            continue
        for name in affected.get(change.key, ()):
            if name in busy or name not in deployments:
                continue
            if change.kind == "Deployment" and change.name == name:
                continue
            earliest.setdefault(name, change)
    return tuple(
        Suspect(namespace=change.namespace, deployment=name,
                deployment_uid=deployments[name].uid, change=change)
        for name, change in sorted(earliest.items()))


def baseline_span(suspect: Suspect, deployment: Deployment, *, rules: Rules
                  ) -> tuple[datetime, int]:
    """``(end, seconds)`` of the baseline query: the lookback before the change, shortened to
    the time the Deployment existed (never below the error window), as for a rollout."""
    end = suspect.change.at
    seconds = rules.baseline_lookback_seconds
    if deployment.created_at is not None:
        lived = int((end - deployment.created_at).total_seconds())
        seconds = max(rules.error_window_seconds, min(seconds, lived))
    return end, seconds


def judge(suspect: Suspect, *, count: float | None, baseline: Baseline | None, rules: Rules,
          already_notified: Container[str], now: datetime) -> Judgement:
    """Whether ``suspect``'s errors rose clearly after its change."""
    age = (now - suspect.change.at).total_seconds()
    if count is None:
        return Judgement(suspect, Verdict.NO_VERDICT, None, baseline,
                         ("error counts unknown (Loki unavailable)",))
    if count < rules.threshold:
        return Judgement(suspect, Verdict.HEALTHY, count, baseline,
                         (f"{count:g} errors in the window, under the threshold "
                          f"{rules.threshold}",))
    if baseline is None:
        return Judgement(suspect, Verdict.NO_VERDICT, count, None,
                         ("threshold reached; baseline not known yet",))
    if age < 0:
        return Judgement(suspect, Verdict.NO_VERDICT, count, baseline,
                         ("the change is dated after now",))
    if not is_clear_rise(count, baseline, rules):
        return Judgement(suspect, Verdict.HEALTHY, count, baseline, (
            f"{count:g} errors but no clear rise over the baseline "
            f"({baseline.per_minute:.1f}/min before the change)",))
    if suspect.key in already_notified:
        return Judgement(suspect, Verdict.ALREADY_NOTIFIED, count, baseline)
    return Judgement(suspect, Verdict.INCIDENT, count, baseline, (
        f"{count:g} errors in {rules.error_window_seconds} s after {suspect.change.kind} "
        f"{suspect.change.name} changed, against {baseline.per_minute:.1f}/min before",))

