"""judge.rules: parsing a rules file and classifying a problem with it."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from incident_detector.config import REMEDIATION_ACTIONS
from incident_detector.judge.rules import (
    DEFAULT_RULES,
    Rule,
    RuleMatch,
    RuleRemediation,
    RuleSet,
    RulesError,
    RuleVerdict,
    Subject,
    classify,
    parse_rules,
)
from incident_detector.model import PodProblem, Priority, Signal

FILE = "/etc/incident-detector/rules/rules.yaml"


def rules(text: str) -> RuleSet:
    return parse_rules(textwrap.dedent(text), source=FILE)


def one_rule(match: str = "{}", *, priority: str = "P2", remediation: str | None = None,
             extra: str = "") -> str:
    lines = ["rules:", "  - name: r", f"    match: {match}", f"    priority: {priority}"]
    if remediation is not None:
        lines.append(f"    remediation: {remediation}")
    if extra:
        lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


def verdict_of(text: str, subject: Subject) -> RuleVerdict:
    return classify(rules(text), subject)


def rule_of(text: str, subject: Subject) -> str:
    return verdict_of(text, subject).rule


ISSUE_EXAMPLE = """
rules:
  - name: payment-npe
    match: {log_pattern: "NullPointerException at PaymentService"}   # or alertname, ...
    priority: P2
    remediation: {action: none}                                       # or rollback/restart/...
    enabled: true
"""

NPE = "java.lang.NullPointerException at PaymentService.charge(PaymentService.java:42)"


# --- the built-in set ------------------------------------------------------------------------


def test_built_in_set_order_and_verdicts() -> None:
    table = [(rule.name, rule.priority, rule.remediation.action) for rule in DEFAULT_RULES.rules]
    assert table == [
        ("rollout-regression", Priority.P1, "rollback"),
        ("crash-loop", Priority.P1, "delete-pod"),
        ("oom-killed", Priority.P1, "none"),
        ("image-pull", Priority.P2, "none"),
        ("default", Priority.P3, "none"),
    ]
    assert all(rule.source == "built-in" and rule.enabled for rule in DEFAULT_RULES.rules)
    assert DEFAULT_RULES.source == "built-in"
    assert DEFAULT_RULES.rules[-1].match.catch_all
    assert DEFAULT_RULES.effective == DEFAULT_RULES.rules


@pytest.mark.parametrize(("subject", "rule", "priority", "action"), [
    (Subject(signals=("error_spike",)), "rollout-regression", Priority.P1, "rollback"),
    (Subject(signals=("pod_health",)), "rollout-regression", Priority.P1, "rollback"),
    (Subject(signals=("progress_deadline",)), "rollout-regression", Priority.P1, "rollback"),
    (Subject(signals=(Signal.ERROR_SPIKE,)), "rollout-regression", Priority.P1, "rollback"),
    # A crash-looping new revision is rolled back, not restarted.
    (Subject(signals=("pod_health",), pod_reasons=("CrashLoopBackOff",)),
     "rollout-regression", Priority.P1, "rollback"),
    # An alert during a rollout is a signal of it: a rollout regression too. (Alert incidents,
    # with no rollout to blame, carry no signal: their pods' problems decide.)
    (Subject(signals=("alert",), pod_reasons=("CrashLoopBackOff",)),
     "rollout-regression", Priority.P1, "rollback"),
    (Subject(pod_reasons=("CrashLoopBackOff",)), "crash-loop", Priority.P1, "delete-pod"),
    (Subject(pod_reasons=(PodProblem.CRASH_LOOP,)), "crash-loop", Priority.P1, "delete-pod"),
    (Subject(pod_reasons=("OOMKilled",)), "oom-killed", Priority.P1, "none"),
    (Subject(pod_reasons=("OOMKilled", "CrashLoopBackOff")), "crash-loop", Priority.P1,
     "delete-pod"),
    (Subject(pod_reasons=("ImagePullBackOff",)), "image-pull", Priority.P2, "none"),
    (Subject(pod_reasons=("ErrImagePull",)), "image-pull", Priority.P2, "none"),
    (Subject(pod_reasons=("ImagePullBackOff", "OOMKilled")), "oom-killed", Priority.P1, "none"),
    (Subject(pod_reasons=("CreateContainerConfigError",)), "default", Priority.P3, "none"),
    (Subject(pod_reasons=("Restarting",)), "default", Priority.P3, "none"),
    (Subject(signals=("alert",)), "rollout-regression", Priority.P1, "rollback"),
    (Subject(alertname="KubePodCrashLooping", pod_reasons=("CrashLoopBackOff",)),
     "crash-loop", Priority.P1, "delete-pod"),
    (Subject(alertname="HighErrorRate"), "default", Priority.P3, "none"),
    (Subject(log_lines=(NPE,)), "default", Priority.P3, "none"),
    (Subject(), "default", Priority.P3, "none"),
])
def test_built_in_set_classifies(subject: Subject, rule: str, priority: Priority,
                                 action: str) -> None:
    verdict = classify(DEFAULT_RULES, subject)
    assert (verdict.rule, verdict.priority, verdict.action) == (rule, priority, action)
    assert verdict.source == "built-in"
    assert verdict.cooldown_seconds is None and verdict.params == ()


# --- the issue's example and the file before the built-in set ---------------------------------


def test_issue_example_parses_and_classifies() -> None:
    parsed = rules(ISSUE_EXAMPLE)
    assert parsed.source == FILE and parsed.include_defaults is True
    [rule] = parsed.rules
    assert rule == Rule(name="payment-npe",
                        match=RuleMatch(log_pattern=re.compile(
                            "NullPointerException at PaymentService")),
                        priority=Priority.P2, remediation=RuleRemediation(action="none"),
                        enabled=True, source=FILE)
    assert classify(parsed, Subject(log_lines=("ok", NPE))) == RuleVerdict(
        rule="payment-npe", priority=Priority.P2, action="none", cooldown_seconds=None,
        params=(), source=FILE)
    # The file's rule wins over the built-in rollout rule; others still get the built-in set.
    assert classify(parsed, Subject(log_lines=(NPE,), signals=("error_spike",))).rule == \
        "payment-npe"
    assert classify(parsed, Subject(pod_reasons=("CrashLoopBackOff",))).rule == "crash-loop"
    assert classify(parsed, Subject(signals=("error_spike",))).source == "built-in"


def test_effective_rules_are_the_files_then_the_built_in_set() -> None:
    parsed = rules(ISSUE_EXAMPLE)
    assert parsed.effective == parsed.rules + DEFAULT_RULES.rules
    without = rules(ISSUE_EXAMPLE + "include_defaults: false\n")
    assert without.include_defaults is False
    assert without.effective == without.rules


def test_without_defaults_the_fallback_is_p3_and_no_action() -> None:
    text = ISSUE_EXAMPLE + "include_defaults: false\n"
    for subject in (Subject(pod_reasons=("CrashLoopBackOff",)), Subject(signals=("pod_health",)),
                    Subject()):
        assert verdict_of(text, subject) == RuleVerdict(
            rule="default", priority=Priority.P3, action="none", cooldown_seconds=None,
            params=(), source="built-in")


def test_empty_rule_list_is_the_built_in_set() -> None:
    parsed = rules("rules: []\n")
    assert parsed.rules == ()
    assert classify(parsed, Subject(pod_reasons=("OOMKilled",))).rule == "oom-killed"


def test_first_match_wins_in_file_order() -> None:
    text = """
    rules:
      - name: first
        match: {signal: error_spike}
        priority: P4
      - name: second
        match: {signal: error_spike}
        priority: P1
    """
    assert rule_of(text, Subject(signals=("error_spike",))) == "first"


def test_disabled_rule_is_skipped() -> None:
    text = """
    rules:
      - name: disabled
        match: {}
        priority: P4
        enabled: false
      - name: active
        match: {}
        priority: P2
    """
    assert rule_of(text, Subject()) == "active"
    assert not rules(text).rules[0].enabled


def test_catch_all_in_the_file_shadows_the_built_in_set() -> None:
    text = one_rule("{}", priority="P4")
    for subject in (Subject(signals=("error_spike",)), Subject(pod_reasons=("OOMKilled",))):
        verdict = verdict_of(text, subject)
        assert (verdict.rule, verdict.priority, verdict.action) == ("r", Priority.P4, "none")


# --- matching --------------------------------------------------------------------------------

# (match, subject, matches?)
MATCH_TABLE = [
    # log_pattern: re.search in each line, any line is enough
    ('{log_pattern: "NullPointerException"}', Subject(log_lines=(NPE,)), True),
    ('{log_pattern: "NullPointerException"}', Subject(log_lines=("a", "b", NPE)), True),
    ('{log_pattern: "NullPointerException"}', Subject(log_lines=("a", "b")), False),
    ('{log_pattern: "NullPointerException"}', Subject(), False),
    ('{log_pattern: "^java"}', Subject(log_lines=(NPE,)), True),
    ('{log_pattern: "^Null"}', Subject(log_lines=(NPE,)), False),
    ('{log_pattern: "nullpointer"}', Subject(log_lines=(NPE,)), False),
    ('{log_pattern: "(?i)nullpointer"}', Subject(log_lines=(NPE,)), True),
    ('{log_pattern: "java:\\\\d+\\\\)$"}', Subject(log_lines=(NPE,)), True),
    ("{log_pattern: 'timeout after \\d+ ?ms'}", Subject(log_lines=("timeout after 30ms",)), True),
    ("{log_pattern: 'a.c'}", Subject(log_lines=("a\nc",)), False),
    # alertname: exact, string or any-of list
    ("{alertname: HighErrorRate}", Subject(alertname="HighErrorRate"), True),
    ("{alertname: HighErrorRate}", Subject(alertname="higherrorrate"), False),
    ("{alertname: HighErrorRate}", Subject(alertname="HighErrorRateCritical"), False),
    ("{alertname: HighErrorRate}", Subject(), False),
    ("{alertname: [A, B]}", Subject(alertname="B"), True),
    ("{alertname: [A, B]}", Subject(alertname="C"), False),
    # alert_labels: every label present with exactly that value
    ("{alert_labels: {severity: critical}}",
     Subject(alert_labels=(("severity", "critical"), ("team", "pay"))), True),
    ("{alert_labels: {severity: critical}}", Subject(alert_labels=(("severity", "warning"),)),
     False),
    ("{alert_labels: {severity: critical}}", Subject(alert_labels=(("team", "pay"),)), False),
    ("{alert_labels: {severity: critical}}", Subject(), False),
    ("{alert_labels: {severity: critical, team: pay}}",
     Subject(alert_labels=(("severity", "critical"),)), False),
    ("{alert_labels: {severity: critical, team: pay}}",
     Subject(alert_labels=(("team", "pay"), ("severity", "critical"))), True),
    ("{alert_labels: {code: 500}}", Subject(alert_labels=(("code", "500"),)), True),
    ("{alert_labels: {alertname: X}}", Subject(alertname="X"), True),
    ("{alert_labels: {alertname: X}}", Subject(alertname="Y"), False),
    # pod_reason: any of the subject's problems among the rule's
    ("{pod_reason: OOMKilled}", Subject(pod_reasons=("OOMKilled",)), True),
    ("{pod_reason: oomkilled}", Subject(pod_reasons=("OOMKilled",)), True),
    ("{pod_reason: OOMKilled}", Subject(pod_reasons=("CrashLoopBackOff", "OOMKilled")), True),
    ("{pod_reason: OOMKilled}", Subject(pod_reasons=("CrashLoopBackOff",)), False),
    ("{pod_reason: OOMKilled}", Subject(), False),
    ("{pod_reason: [ImagePullBackOff, ErrImagePull]}", Subject(pod_reasons=("ErrImagePull",)),
     True),
    # signal: any of the subject's signals among the rule's
    ("{signal: alert}", Subject(signals=("alert",)), True),
    ("{signal: alert}", Subject(signals=(Signal.ALERT,)), True),
    ("{signal: alert}", Subject(signals=("error_spike",)), False),
    ("{signal: [pod_health, progress_deadline]}",
     Subject(signals=("error_spike", "progress_deadline")), True),
    ("{signal: ERROR_SPIKE}", Subject(signals=("error_spike",)), True),
    # AND across keys
    ('{alertname: A, log_pattern: "boom"}', Subject(alertname="A", log_lines=("boom",)), True),
    ('{alertname: A, log_pattern: "boom"}', Subject(alertname="A", log_lines=("ok",)), False),
    ('{alertname: A, log_pattern: "boom"}', Subject(alertname="B", log_lines=("boom",)), False),
    ("{signal: alert, pod_reason: OOMKilled}",
     Subject(signals=("alert",), pod_reasons=("OOMKilled",)), True),
    ("{signal: alert, pod_reason: OOMKilled}", Subject(signals=("alert",)), False),
    ("{alertname: A, alert_labels: {severity: page}, signal: alert}",
     Subject(alertname="A", alert_labels=(("severity", "page"),), signals=("alert",)), True),
    # catch-all
    ("{}", Subject(), True),
    ("{}", Subject(alertname="A", log_lines=("x",), pod_reasons=("OOMKilled",)), True),
]


@pytest.mark.parametrize(("match", "subject", "expected"), MATCH_TABLE)
def test_match_semantics(match: str, subject: Subject, expected: bool) -> None:
    text = one_rule(match, priority="P4") + "include_defaults: false\n"
    assert (rule_of(text, subject) == "r") is expected


def test_alert_labels_do_not_replace_an_explicit_alertname_label() -> None:
    text = one_rule("{alert_labels: {alertname: X}}") + "include_defaults: false\n"
    assert rule_of(text, Subject(alertname="Y", alert_labels=(("alertname", "X"),))) == "r"


# --- remediation, priority, enabled ----------------------------------------------------------


@pytest.mark.parametrize(("priority", "expected"), [
    ("P1", Priority.P1), ("P2", Priority.P2), ("P3", Priority.P3), ("P4", Priority.P4),
    ("p1", Priority.P1), ("p4", Priority.P4), ('" P2 "', Priority.P2),
])
def test_priorities(priority: str, expected: Priority) -> None:
    assert rules(one_rule(priority=priority)).rules[0].priority == expected


@pytest.mark.parametrize("action", REMEDIATION_ACTIONS)
def test_every_remediation_action_is_accepted(action: str) -> None:
    params = ", params: {replicas: 3}" if action == "scale" else ""
    parsed = rules(one_rule(remediation=f"{{action: {action}{params}}}"))
    assert parsed.rules[0].remediation.action == action


@pytest.mark.parametrize(("remediation", "action"), [
    ("{action: none}", "none"),
    ("{action: null}", "none"),
    ("{action: ~}", "none"),
    ("{action: Rollback}", "rollback"),
    ("{action: DELETE-POD}", "delete-pod"),
])
def test_action_spellings(remediation: str, action: str) -> None:
    assert rules(one_rule(remediation=remediation)).rules[0].remediation.action == action


def test_missing_remediation_means_no_action() -> None:
    remediation = rules(one_rule()).rules[0].remediation
    assert remediation == RuleRemediation(action="none", cooldown_seconds=None, params=())


@pytest.mark.parametrize(("cooldown", "seconds"), [
    ("0", 0.0), ("90", 90.0), ("2.5", 2.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
    ("1h30m", 5400.0), ("1h30m15s", 5415.0), ("2m30s", 150.0), ("0s", 0.0), ("1.5s", 1.5),
    ('"45m"', 2700.0), ('" 10m "', 600.0), ("36h", 129600.0),
])
def test_cooldowns(cooldown: str, seconds: float) -> None:
    parsed = rules(one_rule(remediation=f"{{action: rollback, cooldown: {cooldown}}}"))
    assert parsed.rules[0].remediation.cooldown_seconds == seconds
    verdict = classify(parsed, Subject())
    assert verdict.cooldown_seconds == seconds and verdict.action == "rollback"


def test_scale_carries_its_replicas() -> None:
    parsed = rules(one_rule(remediation="{action: scale, cooldown: 10m, params: {replicas: 3}}"))
    verdict = classify(parsed, Subject())
    assert verdict == RuleVerdict(rule="r", priority=Priority.P2, action="scale",
                                  cooldown_seconds=600.0, params=(("replicas", 3),), source=FILE)


def test_names_are_stripped_and_kept_as_written() -> None:
    text = """
    rules:
      - {name: "  Payment NPE (checkout) ", match: {}, priority: P2}
    """
    assert rules(text).rules[0].name == "Payment NPE (checkout)"


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = """
    rules:
      - &base
        name: one
        match: {signal: alert}
        priority: P2
      - <<: *base
        name: two
        priority: P3
    """
    parsed = rules(text)
    assert [(rule.name, rule.priority) for rule in parsed.rules] == [
        ("one", Priority.P2), ("two", Priority.P3)]
    assert parsed.rules[1].match.signal == ("alert",)


def test_list_values_are_deduplicated_and_pod_reasons_canonical() -> None:
    [rule] = rules(one_rule("{pod_reason: [oomkilled, OOMKilled, crashloopbackoff]}")).rules
    assert rule.match.pod_reason == ("OOMKilled", "CrashLoopBackOff")


# --- invalid files: each error names the file, the rule and the field ------------------------

# (text, rule, field, words in the message)
BAD_FILES = [
    # the top level
    ("", None, None, "mapping"),
    ("# only a comment\n", None, None, "mapping"),
    ("- name: a\n", None, None, "found a list"),
    ("just text\n", None, None, "mapping"),
    ("include_defaults: true\n", None, "rules", "is required"),
    ("rules: {name: a}\n", None, "rules", "must be a list"),
    ("rules: a\n", None, "rules", "must be a list"),
    ("rules:\n", None, "rules", "must be a list"),
    ("rules: []\ninclude_defaults: no-thanks\n", None, "include_defaults", "true or false"),
    ("rules: []\ninclude_defaults: 0\n", None, "include_defaults", "true or false"),
    ("rules: []\nrule: []\n", None, "rule", "unknown key 'rule'; the keys are rules, "
     "include_defaults"),
    # YAML syntax, with the line
    ("rules: [\n", None, None, "line 2"),
    ("rules:\n  - name: a\n   match: {}\n", None, None, "line 3"),
    ("rules:\n  - name: a\n    match: {log_pattern: \"x}\n", None, None, "not valid YAML"),
    ("rules: []\nrules: []\n", None, None, "found the key 'rules' twice"),
    ("rules:\n  - name: a\n    match: {}\n    priority: P1\n    priority: P2\n", None, None,
     "line 5"),
    ("rules: !!python/object:os.system {}\n", None, None, "not valid YAML"),
    ("rules:\n\t- name: a\n", None, None, "not valid YAML"),
    # a rule's shape
    ("rules: [a]\n", "#1", None, "a rule must be a mapping"),
    ("rules: [[]]\n", "#1", None, "a rule must be a mapping"),
    ("rules: [null]\n", "#1", None, "a rule must be a mapping"),
    ("rules:\n  - {name: a, match: {}, priority: P1}\n  - 3\n", "#2", None, "mapping"),
    # names
    ("rules: [{match: {}, priority: P1}]\n", "#1", "name", "is required"),
    ("rules: [{name: '', match: {}, priority: P1}]\n", "#1", "name", "must not be empty"),
    ("rules: [{name: '   ', match: {}, priority: P1}]\n", "#1", "name", "must not be empty"),
    ("rules: [{name: null, match: {}, priority: P1}]\n", "#1", "name", "must be a string"),
    ("rules: [{name: 12, match: {}, priority: P1}]\n", "#1", "name", "must be a string"),
    ("rules: [{name: [a], match: {}, priority: P1}]\n", "#1", "name", "must be a string"),
    ("rules: [{name: off, match: {}, priority: P1}]\n", "#1", "name", "quote it"),
    ("rules:\n  - {name: a, match: {}, priority: P1}\n  - {name: b, match: {}, priority: P1}\n"
     "  - {name: a, match: {}, priority: P2}\n", "#3", "name", "'a' is already the name of rule #1"),
    ("rules:\n  - {name: a, match: {}, priority: P1}\n  - {name: ' a ', match: {}, priority: P1}\n",
     "#2", "name", "already the name"),
    # unknown keys, with the allowed ones listed
    ("rules: [{name: a, match: {}, priority: P1, severity: P1}]\n", "a", "severity",
     "the keys are name, match, priority, remediation, enabled"),
    ("rules: [{name: a, match: {}, priority: P1, 3: x}]\n", "a", None, "unknown key 3"),
    ("rules: [{name: a, match: {pod_reasons: OOMKilled}, priority: P1}]\n", "a",
     "match.pod_reasons", "the keys are log_pattern, alertname, alert_labels, pod_reason, signal"),
    ("rules: [{name: a, match: {labels: {a: b}}, priority: P1}]\n", "a", "match.labels",
     "unknown key"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: none, wait: 3}}]\n", "a",
     "remediation.wait", "the keys are action, cooldown, params"),
    # match
    ("rules: [{name: a, priority: P1}]\n", "a", "match", "is required"),
    ("rules: [{name: a, match: null, priority: P1}]\n", "a", "match", "must be a mapping"),
    ("rules: [{name: a, match: OOMKilled, priority: P1}]\n", "a", "match", "must be a mapping"),
    ("rules: [{name: a, match: [], priority: P1}]\n", "a", "match", "must be a mapping"),
    ("rules: [{name: a, match: {log_pattern: '(unclosed'}, priority: P1}]\n", "a",
     "match.log_pattern", "not a valid regular expression"),
    ("rules: [{name: a, match: {log_pattern: '*oops'}, priority: P1}]\n", "a",
     "match.log_pattern", "not a valid regular expression"),
    ("rules: [{name: a, match: {log_pattern: 'a{99999999999}'}, priority: P1}]\n", "a",
     "match.log_pattern", "regular expression"),
    ("rules: [{name: a, match: {log_pattern: ''}, priority: P1}]\n", "a", "match.log_pattern",
     "must not be empty"),
    ("rules: [{name: a, match: {log_pattern: [x, y]}, priority: P1}]\n", "a",
     "match.log_pattern", "must be a regular expression"),
    ("rules: [{name: a, match: {log_pattern: 42}, priority: P1}]\n", "a", "match.log_pattern",
     "the number 42"),
    ("rules: [{name: a, match: {alertname: []}, priority: P1}]\n", "a", "match.alertname",
     "an empty list matches nothing"),
    ("rules: [{name: a, match: {alertname: 3}, priority: P1}]\n", "a", "match.alertname",
     "must be a alert name or a list"),
    ("rules: [{name: a, match: {alertname: [A, null]}, priority: P1}]\n", "a", "match.alertname",
     "nothing (null)"),
    ("rules: [{name: a, match: {alertname: ''}, priority: P1}]\n", "a", "match.alertname",
     "must be"),
    ("rules: [{name: a, match: {alert_labels: severity}, priority: P1}]\n", "a",
     "match.alert_labels", "must be a mapping"),
    ("rules: [{name: a, match: {alert_labels: {}}, priority: P1}]\n", "a", "match.alert_labels",
     "at least one label"),
    ("rules: [{name: a, match: {alert_labels: {severity: [a, b]}}, priority: P1}]\n", "a",
     "match.alert_labels.severity", "must be a string"),
    ("rules: [{name: a, match: {alert_labels: {page: true}}, priority: P1}]\n", "a",
     "match.alert_labels.page", "quote it"),
    ("rules: [{name: a, match: {alert_labels: {ratio: 0.5}}, priority: P1}]\n", "a",
     "match.alert_labels.ratio", "quote it"),
    ("rules: [{name: a, match: {alert_labels: {1: a}}, priority: P1}]\n", "a",
     "match.alert_labels", "label name"),
    ("rules: [{name: a, match: {pod_reason: CrashLoop}, priority: P1}]\n", "a",
     "match.pod_reason", "'CrashLoop' is not a pod problem; the pod problems are "
     "CrashLoopBackOff, ImagePullBackOff"),
    ("rules: [{name: a, match: {pod_reason: [OOMKilled, Sleepy]}, priority: P1}]\n", "a",
     "match.pod_reason", "'Sleepy' is not a pod problem"),
    ("rules: [{name: a, match: {pod_reason: []}, priority: P1}]\n", "a", "match.pod_reason",
     "empty list"),
    ("rules: [{name: a, match: {signal: errors}, priority: P1}]\n", "a", "match.signal",
     "'errors' is not a signal; the signals are error_spike, pod_health, progress_deadline, alert"),
    ("rules: [{name: a, match: {signal: {a: b}}, priority: P1}]\n", "a", "match.signal",
     "a mapping"),
    # priority
    ("rules: [{name: a, match: {}}]\n", "a", "priority", "is required (one of P1, P2, P3, P4)"),
    ("rules: [{name: a, match: {}, priority: P0}]\n", "a", "priority", "one of P1, P2, P3, P4"),
    ("rules: [{name: a, match: {}, priority: P5}]\n", "a", "priority", "'P5'"),
    ("rules: [{name: a, match: {}, priority: 1}]\n", "a", "priority", "the number 1"),
    ("rules: [{name: a, match: {}, priority: critical}]\n", "a", "priority", "'critical'"),
    ("rules: [{name: a, match: {}, priority: null}]\n", "a", "priority", "null"),
    # remediation
    ("rules: [{name: a, match: {}, priority: P1, remediation: rollback}]\n", "a", "remediation",
     "must be a mapping of action, cooldown, params"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {}}]\n", "a",
     "remediation.action", "is required (one of none, rollback, restart"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: reboot}}]\n", "a",
     "remediation.action", "must be one of none, rollback, restart, pause, scale, delete-pod, "
     "delete-stuck-pods, found 'reboot'"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: false}}]\n", "a",
     "remediation.action", "the boolean false"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: [rollback]}}]\n", "a",
     "remediation.action", "a list"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, cooldown: -1}}]\n",
     "a", "remediation.cooldown", "at least 0"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: .inf}}]\n", "a", "remediation.cooldown", "at least 0"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: .nan}}]\n", "a", "remediation.cooldown", "a number of seconds"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: 10 minutes}}]\n", "a", "remediation.cooldown", "90s, 10m, 1h, 1h30m"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: 30m1h}}]\n", "a", "remediation.cooldown", "duration"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: 1d}}]\n", "a", "remediation.cooldown", "duration"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: ''}}]\n", "a", "remediation.cooldown", "duration"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: true}}]\n", "a", "remediation.cooldown", "the boolean true"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "cooldown: null}}]\n", "a", "remediation.cooldown", "null"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale}}]\n", "a",
     "remediation.params.replicas", "is required for the action scale"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: 0}}}]\n", "a", "remediation.params.replicas", "positive integer"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: -2}}}]\n", "a", "remediation.params.replicas", "positive integer"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: 2.5}}}]\n", "a", "remediation.params.replicas", "positive integer"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: '3'}}}]\n", "a", "remediation.params.replicas", "positive integer"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: true}}}]\n", "a", "remediation.params.replicas", "positive integer"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: [3]}}}]\n", "a", "remediation.params.replicas", "plain value"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: {replicas: 3, max: 5}}}]\n", "a", "remediation.params.max",
     "the action scale takes replicas"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: rollback, "
     "params: {to_revision: 3}}}]\n", "a", "remediation.params.to_revision",
     "the action rollback takes no parameters"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: none, "
     "params: {replicas: 3}}}]\n", "a", "remediation.params.replicas", "takes no parameters"),
    ("rules: [{name: a, match: {}, priority: P1, remediation: {action: scale, "
     "params: [replicas, 3]}}]\n", "a", "remediation.params", "must be a mapping"),
    # enabled
    ("rules: [{name: a, match: {}, priority: P1, enabled: yes-please}]\n", "a", "enabled",
     "true or false"),
    ("rules: [{name: a, match: {}, priority: P1, enabled: 1}]\n", "a", "enabled",
     "true or false, found the number 1"),
    ("rules: [{name: a, match: {}, priority: P1, enabled: 'true'}]\n", "a", "enabled",
     "true or false"),
    ("rules: [{name: a, match: {}, priority: P1, enabled: null}]\n", "a", "enabled",
     "true or false"),
]


@pytest.mark.parametrize(("text", "rule", "field", "words"), BAD_FILES)
def test_invalid_files_name_the_file_rule_and_field(text: str, rule: str | None,
                                                     field: str | None, words: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source=FILE)
    error = caught.value
    assert (error.file, error.rule, error.field) == (FILE, rule, field)
    assert words in error.message
    line = str(error)
    assert "\n" not in line
    assert line.startswith(f"invalid rules file {FILE}")
    assert line.endswith(error.message)
    if rule is not None:
        assert (f"rule {rule}" if rule.startswith("#") else f"rule {rule!r}") in line
    if field is not None:
        assert f"field {field}:" in line


def test_an_error_is_a_value_error_with_one_readable_line() -> None:
    with pytest.raises(ValueError, match=r"^invalid rules file f\.yaml, rule 'payment-npe', "
                                         r"field match\.pod_reason: 'OOM' is not a pod problem"):
        parse_rules("rules: [{name: payment-npe, match: {pod_reason: OOM}, priority: P1}]",
                    source="f.yaml")


def test_yaml_syntax_errors_say_the_line_and_column() -> None:
    text = "rules:\n  - name: a\n    match: {}\n    priority: [P1\n"
    with pytest.raises(RulesError, match=r"not valid YAML: line \d+, column \d+"):
        parse_rules(text, source=FILE)


def test_errors_name_the_rule_by_index_until_it_has_a_name() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules("rules: [{name: ok, match: {}, priority: P1}, {priority: P9}]", source="f")
    assert caught.value.rule == "#2" and caught.value.field == "name"


# --- open inputs -----------------------------------------------------------------------------

PATTERNS = ("NullPointerException", "(?i)timeout", r"^\s*at ", r"\d{3}", "é+", r"\bOOM\b", "$")
PATTERN_RULES = RuleSet(
    rules=tuple(Rule(name=f"p{index}", match=RuleMatch(log_pattern=re.compile(pattern)),
                     priority=Priority.P2, source=FILE)
                for index, pattern in enumerate(PATTERNS)),
    source=FILE)


@given(st.lists(st.text(max_size=300), max_size=8),
       st.one_of(st.none(), st.text(max_size=40)),
       st.lists(st.tuples(st.text(max_size=20), st.text(max_size=20)), max_size=4),
       st.lists(st.sampled_from([*(p.value for p in PodProblem), "Evicted", ""]), max_size=3),
       st.lists(st.sampled_from([*(s.value for s in Signal), "other"]), max_size=3))
def test_classify_never_crashes_on_arbitrary_subjects(lines, alertname, labels, reasons,
                                                      signals) -> None:
    subject = Subject(log_lines=tuple(lines), alertname=alertname, alert_labels=tuple(labels),
                      pod_reasons=tuple(reasons), signals=tuple(signals))
    for rule_set in (PATTERN_RULES, DEFAULT_RULES, rules(ISSUE_EXAMPLE)):
        verdict = classify(rule_set, subject)
        assert isinstance(verdict.priority, Priority)
        assert verdict.action == "none" or verdict.action in REMEDIATION_ACTIONS


@given(st.text(max_size=300))
def test_a_pattern_found_in_any_line_matches(line: str) -> None:
    subject = Subject(log_lines=("unrelated", line))
    expected = next((f"p{index}" for index, pattern in enumerate(PATTERNS)
                     if re.search(pattern, line) or re.search(pattern, "unrelated")), "default")
    assert classify(PATTERN_RULES, subject).rule == expected


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["P1", "p3", "P9", "rollback", "scale", "none", "10m", "1h30m", "-5s",
                     "CrashLoopBackOff", "oomkilled", "error_spike", "alert", "(", ".*", "",
                     "yes", "no", "~", "2024-01-01", "0x1f", "1e3", "1_000"]),
)

VALID_RULE = {
    "name": "r",
    "match": {"log_pattern": "boom", "alertname": "A", "alert_labels": {"severity": "page"},
              "pod_reason": "OOMKilled", "signal": "alert"},
    "priority": "P1",
    "remediation": {"action": "scale", "cooldown": "10m", "params": {"replicas": 2}},
    "enabled": True,
}
FIELD_PATHS = [("name",), ("match",), ("priority",), ("remediation",), ("enabled",),
               ("match", "log_pattern"), ("match", "alertname"), ("match", "alert_labels"),
               ("match", "pod_reason"), ("match", "signal"), ("match", "alert_labels", "severity"),
               ("remediation", "action"), ("remediation", "cooldown"), ("remediation", "params"),
               ("remediation", "params", "replicas"), ("include_defaults",), ("rules",)]


def replaced(path: tuple[str, ...], value: object) -> dict:
    import copy

    document = {"rules": [copy.deepcopy(VALID_RULE)], "include_defaults": True}
    target = document if path[0] in ("include_defaults", "rules") else document["rules"][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@given(st.sampled_from(FIELD_PATHS), SCALARS)
def test_any_scalar_in_any_field_parses_or_is_a_rules_error(path, value) -> None:
    text = yaml.safe_dump(replaced(path, value), allow_unicode=True)
    try:
        parsed = parse_rules(text, source=FILE)
    except RulesError as error:
        assert error.file == FILE
        if path[0] not in ("include_defaults", "rules"):
            assert error.rule in ("r", "#1", (value.strip() if isinstance(value, str) else None))
            assert error.field is None or error.field.split(".")[0] == path[0]
        return
    classify(parsed, Subject(log_lines=("boom",), alertname="A"))


@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_is_a_rules_error(text: str) -> None:
    try:
        parse_rules(text, source=FILE)
    except RulesError as error:
        assert error.file == FILE


def test_the_valid_rule_used_above_parses() -> None:
    parsed = parse_rules(yaml.safe_dump(replaced(("enabled",), True)), source=FILE)
    [rule] = parsed.rules
    assert rule.remediation.params == (("replicas", 2),)
    assert classify(parsed, Subject(log_lines=("boom",), alertname="A",
                                    alert_labels=(("severity", "page"),),
                                    pod_reasons=("OOMKilled",), signals=("alert",))).rule == "r"
