"""Reading a rules file: its text in, a ``RuleSet`` out, or a ``RulesError`` naming the file,
the rule and the field (``judge.rules`` lists what is validated). Pure: reading the file from
disk is ``run.rules_file``'s business.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

from ..model import PodProblem, Priority, Signal
from .rules_classify import (
    ACTIONS,
    NO_ACTION,
    Rule,
    RuleMatch,
    RuleRemediation,
    RuleSet,
)

TOP_LEVEL_KEYS = ("rules", "include_defaults")
RULE_KEYS = ("name", "match", "priority", "remediation", "enabled")
MATCH_KEYS = ("log_pattern", "alertname", "alert_labels", "pod_reason", "signal")
REMEDIATION_KEYS = ("action", "cooldown", "params")
# The parameters each action takes; an action not listed takes none.
ACTION_PARAMS: dict[str, tuple[str, ...]] = {"scale": ("replicas",)}
REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {"scale": ("replicas",)}

_POD_REASONS = {problem.value.lower(): problem.value for problem in PodProblem}
_SIGNALS = {signal.value.lower(): signal.value for signal in Signal}
_RULE_INDEX = re.compile(r"#\d+")
_DURATION = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")


class RulesError(ValueError):
    """An invalid rules file, with where: the file, the rule and the field.

    ``rule`` is the rule's name, or ``#N`` for the N-th rule (from 1) when it has no usable name;
    None for what is not inside a rule (the YAML itself, the top level). ``field`` is a dotted
    path inside the rule (``match.pod_reason``) or a top-level key; None when no field is to blame.
    """

    def __init__(self, message: str, *, file: str, rule: str | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.rule = rule
        self.field = field
        self.message = message
        where = [f"invalid rules file {file}"]
        if rule is not None:
            where.append(f"rule {rule}" if _RULE_INDEX.fullmatch(rule) else f"rule {rule!r}")
        if field is not None:
            where.append(f"field {field}")
        super().__init__(f"{', '.join(where)}: {message}")


# --- parsing ---------------------------------------------------------------------------------


@functools.cache
def _strict_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML keeps the last).

    Made when a rules file is read: yaml is imported then, not by every detector."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`, overridable on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the base class reports it with its line
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found the key {key!r} twice", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def parse_rules(text: str, *, source: str) -> RuleSet:
    """The rules of a rules file's text; ``source`` (the path) names the file in errors.

    Raises ``RulesError`` for anything invalid, and nothing else.
    """
    def error(message: str, field: str | None = None) -> RulesError:
        return RulesError(message, file=source, field=field)

    import yaml

    try:
        document = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise error(f"not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise error("not valid YAML: nested too deeply") from None
    if not isinstance(document, dict):
        raise error("the file must be a mapping with a list under rules:, "
                    f"found {_kind(document)}")
    _check_keys(document, TOP_LEVEL_KEYS, lambda message, field: error(message, field), prefix="")
    if "rules" not in document:
        raise error("is required (a list of rules, possibly empty)", "rules")
    raw_rules = document["rules"]
    if not isinstance(raw_rules, list):
        raise error(f"must be a list of rules, found {_kind(raw_rules)}", "rules")
    include_defaults = document.get("include_defaults", True)
    if not isinstance(include_defaults, bool):
        raise error(f"must be true or false, found {_kind(include_defaults)}",
                    "include_defaults")

    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, index=index, source=source)
        if rule.name in names:
            raise RulesError(f"{rule.name!r} is already the name of rule #{names[rule.name]}",
                             file=source, rule=f"#{index}", field="name")
        names[rule.name] = index
        rules.append(rule)
    return RuleSet(rules=tuple(rules), source=source, include_defaults=include_defaults)


class _RuleContext:
    """Builds the errors of one rule: the file and the rule are always named."""

    def __init__(self, source: str, label: str) -> None:
        self.source = source
        self.label = label

    def __call__(self, message: str, field: str | None) -> RulesError:
        return RulesError(message, file=self.source, rule=self.label, field=field)


def _parse_rule(raw: Any, *, index: int, source: str) -> Rule:
    error = _RuleContext(source, f"#{index}")
    if not isinstance(raw, dict):
        raise error(f"a rule must be a mapping, found {_kind(raw)}", None)
    # The name first, so that every later error names the rule as its author knows it.
    name = raw.get("name")
    if "name" not in raw:
        raise error("is required", "name")
    if not isinstance(name, str):
        hint = " (YAML reads yes, no, on, off as booleans: quote it)" if isinstance(
            name, bool) else ""
        raise error(f"must be a string, found {_kind(name)}{hint}", "name")
    if not name.strip():
        raise error("must not be empty", "name")
    error.label = name.strip()
    _check_keys(raw, RULE_KEYS, error, prefix="")

    if "match" not in raw:
        raise error("is required (match: {} matches everything)", "match")
    match = _parse_match(raw["match"], error)

    if "priority" not in raw:
        raise error(f"is required (one of {', '.join(p.value for p in Priority)})", "priority")
    priority = _parse_priority(raw["priority"], error)

    remediation = RuleRemediation()
    if "remediation" in raw:
        remediation = _parse_remediation(raw["remediation"], error)

    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise error(f"must be true or false, found {_kind(enabled)}", "enabled")
    return Rule(name=name.strip(), match=match, priority=priority, remediation=remediation,
                enabled=enabled, source=source)


def _parse_match(raw: Any, error: _RuleContext) -> RuleMatch:
    if not isinstance(raw, dict):
        raise error(f"must be a mapping of {', '.join(MATCH_KEYS)} (or {{}} for everything), "
                    f"found {_kind(raw)}", "match")
    _check_keys(raw, MATCH_KEYS, error, prefix="match.")
    pattern = None
    if "log_pattern" in raw:
        pattern = _parse_pattern(raw["log_pattern"], error)
    alertname = ()
    if "alertname" in raw:
        alertname = _strings(raw["alertname"], error, "match.alertname", "alert name")
    labels: tuple[tuple[str, str], ...] = ()
    if "alert_labels" in raw:
        labels = _parse_labels(raw["alert_labels"], error)
    pod_reason = ()
    if "pod_reason" in raw:
        pod_reason = _known(raw["pod_reason"], error, "match.pod_reason", _POD_REASONS,
                            "pod problem")
    signal = ()
    if "signal" in raw:
        signal = _known(raw["signal"], error, "match.signal", _SIGNALS, "signal")
    return RuleMatch(log_pattern=pattern, alertname=alertname, alert_labels=labels,
                     pod_reason=pod_reason, signal=signal)


def _parse_pattern(raw: Any, error: _RuleContext) -> re.Pattern[str]:
    field = "match.log_pattern"
    if not isinstance(raw, str):
        raise error(f"must be a regular expression (a string), found {_kind(raw)}", field)
    if not raw:
        raise error("must not be empty (it would match every line; leave the key out)", field)
    try:
        return re.compile(raw)
    except re.error as exc:
        raise error(f"not a valid regular expression: {exc}", field) from None
    except (OverflowError, RecursionError) as exc:
        raise error(f"not a usable regular expression: {exc}", field) from None


def _parse_labels(raw: Any, error: _RuleContext) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise error(f"must be a mapping of label to value, found {_kind(raw)}",
                    "match.alert_labels")
    if not raw:
        raise error("must name at least one label (leave the key out to match any alert)",
                    "match.alert_labels")
    labels = []
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            raise error(f"a label name must be a non-empty string, found {_kind(name)}",
                        "match.alert_labels")
        field = f"match.alert_labels.{name}"
        # Label values are strings; a bare number in YAML means its digits.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise error(f"must be a string (quote it), found {_kind(value)}", field)
        labels.append((name, value))
    return tuple(sorted(labels))


def _strings(raw: Any, error: _RuleContext, field: str, what: str) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise error(f"an empty list matches nothing: give at least one {what} or leave the "
                    "key out", field)
    out = []
    for value in values:
        if not isinstance(value, str) or not value:
            raise error(f"must be a {what} or a list of them, found {_kind(value)}", field)
        out.append(value)
    return tuple(dict.fromkeys(out))


def _known(raw: Any, error: _RuleContext, field: str, allowed: Mapping[str, str],
           what: str) -> tuple[str, ...]:
    canonical = []
    for value in _strings(raw, error, field, what):
        if value.lower() not in allowed:
            raise error(f"{value!r} is not a {what}; the {what}s are "
                        f"{', '.join(allowed.values())}", field)
        canonical.append(allowed[value.lower()])
    return tuple(dict.fromkeys(canonical))


def _parse_priority(raw: Any, error: _RuleContext) -> Priority:
    names = ", ".join(p.value for p in Priority)
    if isinstance(raw, str) and raw.strip().upper() in Priority.__members__:
        return Priority[raw.strip().upper()]
    raise error(f"must be one of {names}, found {_kind(raw)}", "priority")


def _parse_remediation(raw: Any, error: _RuleContext) -> RuleRemediation:
    if not isinstance(raw, dict):
        raise error(f"must be a mapping of {', '.join(REMEDIATION_KEYS)}, found {_kind(raw)}",
                    "remediation")
    _check_keys(raw, REMEDIATION_KEYS, error, prefix="remediation.")
    if "action" not in raw:
        raise error(f"is required (one of {', '.join(ACTIONS)})", "remediation.action")
    action = raw["action"]
    # YAML reads a bare `none` as the string "none" but `null` / `~` as None: both mean none.
    if action is None:
        action = NO_ACTION
    if isinstance(action, str):
        action = action.strip().lower()
    if not isinstance(action, str) or action not in ACTIONS:
        raise error(f"must be one of {', '.join(ACTIONS)}, found {_kind(action)}",
                    "remediation.action")
    cooldown = None
    if "cooldown" in raw:
        cooldown = _parse_cooldown(raw["cooldown"], error)
    params = _parse_params(raw.get("params", {}), action, error)
    return RuleRemediation(action=action, cooldown_seconds=cooldown, params=params)


def _parse_cooldown(raw: Any, error: _RuleContext) -> float:
    field = "remediation.cooldown"
    usage = "a number of seconds or a duration such as 90s, 10m, 1h, 1h30m"
    if isinstance(raw, bool):
        raise error(f"must be {usage}, found {_kind(raw)}", field)
    if isinstance(raw, int | float):
        if not math.isfinite(raw) or raw < 0:
            raise error(f"must be {usage}, at least 0, found {_kind(raw)}", field)
        return float(raw)
    if isinstance(raw, str):
        text = raw.strip()
        found = _DURATION.fullmatch(text) if text else None
        if found is not None and any(found.groupdict().values()):
            hours, minutes, seconds = (found.group(unit) for unit in ("h", "m", "s"))
            return (int(hours or 0) * 3600.0 + int(minutes or 0) * 60.0
                    + float(seconds or 0))
    raise error(f"must be {usage}, found {_kind(raw)}", field)


def _parse_params(raw: Any, action: str, error: _RuleContext) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, dict):
        raise error(f"must be a mapping of parameter to value, found {_kind(raw)}",
                    "remediation.params")
    allowed = ACTION_PARAMS.get(action, ())
    for key in raw:
        if key not in allowed:
            takes = (f"takes {', '.join(allowed)}" if allowed else "takes no parameters")
            raise error(f"unknown key {key!r}: the action {action} {takes}",
                        f"remediation.params.{key}" if isinstance(key, str)
                        else "remediation.params")
    for key in REQUIRED_PARAMS.get(action, ()):
        if key not in raw:
            raise error(f"is required for the action {action}", f"remediation.params.{key}")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool) or value is None:
            raise error(f"must be a plain value, found {_kind(value)}",
                        f"remediation.params.{key}")
    if action == "scale":
        replicas = raw["replicas"]
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise error(f"must be a positive integer, found {_kind(replicas)}",
                        "remediation.params.replicas")
    return tuple(sorted(raw.items()))


# --- helpers ---------------------------------------------------------------------------------


def _check_keys(raw: Mapping[Any, Any], allowed: tuple[str, ...], error: Any, *,
                prefix: str) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{prefix}{key}" if isinstance(key, str) else (prefix.rstrip(".") or None)
            raise error(f"unknown key {key!r}; the keys are {', '.join(allowed)}", where)


def _kind(value: Any) -> str:
    """A short description of what was found, for an error message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"{shown!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({str(value)[:40]})"


def _yaml_problem(exc: Exception) -> str:  # a yaml.YAMLError
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return text
