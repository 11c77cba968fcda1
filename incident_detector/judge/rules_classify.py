"""The rules and the classification: what a rule matches, the built-in set, and ``classify``,
which picks the first enabled rule that matches a ``Subject`` (``judge.rules`` describes the
rules file and its matching; ``judge.rules_parse`` reads it). Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import REMEDIATION_ACTIONS
from ..model import PodProblem, Priority, Signal

BUILT_IN = "built-in"
NO_ACTION = "none"
ACTIONS = (NO_ACTION, *REMEDIATION_ACTIONS)
FALLBACK_RULE = "default"


# --- what is classified, and the answer ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """What is being classified: an incident or an alert, seen through what rules can match."""

    # Error lines, or the examples of the error signatures.
    log_lines: tuple[str, ...] = ()
    alertname: str | None = None
    alert_labels: tuple[tuple[str, str], ...] = ()
    # model.PodProblem values, e.g. "CrashLoopBackOff", "OOMKilled".
    pod_reasons: tuple[str, ...] = ()
    # model.Signal values: error_spike, pod_health, progress_deadline, alert.
    signals: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    # The rule's name ("default" for the fallback).
    rule: str
    priority: Priority
    # "none" or one of config.REMEDIATION_ACTIONS.
    action: str
    # None: the rule says nothing, REMEDIATION_COOLDOWN_MINUTES alone applies.
    cooldown_seconds: float | None
    # e.g. (("replicas", 3),) for a scale.
    params: tuple[tuple[str, Any], ...]
    # "built-in" or the path of the rules file.
    source: str


# --- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleMatch:
    """What a rule matches; an empty tuple or None means the key was not given."""

    log_pattern: re.Pattern[str] | None = None
    alertname: tuple[str, ...] = ()
    alert_labels: tuple[tuple[str, str], ...] = ()
    pod_reason: tuple[str, ...] = ()
    signal: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        return (self.log_pattern is None and not self.alertname and not self.alert_labels
                and not self.pod_reason and not self.signal)

    def matches(self, subject: Subject) -> bool:
        """Every key given holds for ``subject`` (see the module's docstring)."""
        if self.log_pattern is not None:
            pattern = self.log_pattern
            if not any(pattern.search(line) for line in subject.log_lines):
                return False
        if self.alertname and subject.alertname not in self.alertname:
            return False
        if self.alert_labels:
            labels = dict(subject.alert_labels)
            if subject.alertname is not None:
                labels.setdefault("alertname", subject.alertname)
            if any(labels.get(name) != value for name, value in self.alert_labels):
                return False
        if self.pod_reason and not any(reason in self.pod_reason
                                       for reason in subject.pod_reasons):
            return False
        if self.signal and not any(signal in self.signal for signal in subject.signals):
            return False
        return True


@dataclass(frozen=True)
class RuleRemediation:
    action: str = NO_ACTION
    cooldown_seconds: float | None = None
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    match: RuleMatch
    priority: Priority
    remediation: RuleRemediation = RuleRemediation()
    enabled: bool = True
    # "built-in" or the path of the file the rule came from.
    source: str = BUILT_IN

    def verdict(self) -> RuleVerdict:
        return RuleVerdict(rule=self.name, priority=self.priority,
                           action=self.remediation.action,
                           cooldown_seconds=self.remediation.cooldown_seconds,
                           params=self.remediation.params, source=self.source)


@dataclass(frozen=True)
class RuleSet:
    """The rules of one source, and whether the built-in set is tried after them."""

    rules: tuple[Rule, ...]
    source: str
    include_defaults: bool = True

    @property
    def effective(self) -> tuple[Rule, ...]:
        """Every rule ``classify`` tries, in order."""
        if self.include_defaults:
            return self.rules + DEFAULT_RULES.rules
        return self.rules


def _built_in(name: str, priority: Priority, action: str, **match: Any) -> Rule:
    return Rule(name=name, match=RuleMatch(**match), priority=priority,
                remediation=RuleRemediation(action=action), source=BUILT_IN)


DEFAULT_RULES = RuleSet(
    rules=(
        _built_in("rollout-regression", Priority.P1, "rollback",
                  signal=(Signal.ERROR_SPIKE.value, Signal.POD_HEALTH.value,
                          Signal.PROGRESS_DEADLINE.value, Signal.ALERT.value)),
        _built_in("crash-loop", Priority.P1, "delete-pod",
                  pod_reason=(PodProblem.CRASH_LOOP.value,)),
        _built_in("oom-killed", Priority.P1, NO_ACTION, pod_reason=(PodProblem.OOM_KILLED.value,)),
        _built_in("image-pull", Priority.P2, NO_ACTION,
                  pod_reason=(PodProblem.IMAGE_PULL.value, PodProblem.ERR_IMAGE_PULL.value)),
        _built_in(FALLBACK_RULE, Priority.P3, NO_ACTION),
    ),
    source=BUILT_IN,
    include_defaults=False,
)

FALLBACK = RuleVerdict(rule=FALLBACK_RULE, priority=Priority.P3, action=NO_ACTION,
                       cooldown_seconds=None, params=(), source=BUILT_IN)


def classify(rules: RuleSet, subject: Subject) -> RuleVerdict:
    """The verdict of the first enabled rule that matches ``subject``; the fallback otherwise."""
    for rule in rules.effective:
        if rule.enabled and rule.match.matches(subject):
            return rule.verdict()
    return FALLBACK
