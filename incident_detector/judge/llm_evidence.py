"""What an LLM is shown of an incident: the evidence of its JSON record, redacted, compact and at
most so long, the least useful parts cut first (``judge.analysis`` says what is kept and why).
Pure.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

from .placeholders import Redactor

TRUNCATED = "truncated"
# What an example, a detail or a label value is cut to before anything is dropped.
TEXT_MAX_CHARS = 500


# --- the evidence -------------------------------------------------------------------------


def _text(value: Any, limit: int = TEXT_MAX_CHARS) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _pick(source: Any, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(source, dict):
        return {}
    return {key: source[key] for key in keys if source.get(key) not in (None, [], {}, "")}


def _signatures(items: Any) -> list[dict[str, Any]]:
    signatures = [s for s in items or () if isinstance(s, dict)]
    # New signatures first (they did not occur before), then the most frequent.
    signatures.sort(key=lambda s: (not s.get("new"), -(s.get("count") or 0)))
    return [_pick({**s, "example": _text(s.get("example"))}, ("count", "new", "example"))
            for s in signatures]


def _changes(items: Any) -> list[dict[str, Any]]:
    return [_pick({**c, "detail": _text(c.get("detail"))}, ("kind", "container", "detail"))
            for c in items or () if isinstance(c, dict)]


def _alert(alert: Any) -> dict[str, Any]:
    if not isinstance(alert, dict):
        return {}
    annotations = alert.get("annotations") if isinstance(alert.get("annotations"), dict) else {}
    out = _pick(alert, ("name", "status", "starts_at", "ends_at"))
    if isinstance(alert.get("labels"), dict):
        out["labels"] = {k: _text(v, 200) for k, v in alert["labels"].items()}
    about = {k: _text(annotations[k]) for k in ("summary", "description") if annotations.get(k)}
    if about:
        out["annotations"] = about
    return out


def _cause(cause: Any) -> Any:
    if not isinstance(cause, dict):
        return cause
    # The ranked causes (judge.causes): what changed, when, how likely; no command to run.
    return {k: (_text(v) if isinstance(v, str) else v) for k, v in cause.items()
            if k not in ("command", "id", "uid", "resource_version")}


def _evidence_object(record: dict[str, Any]) -> dict[str, Any]:
    """The evidence of a record, before redaction and size limits."""
    evidence = record.get("evidence") if isinstance(record.get("evidence"), dict) else {}
    out: dict[str, Any] = _pick(record, ("kind", "namespace", "deployment", "revision",
                                         "previous_revision", "replicaset", "signals",
                                         "rollout_started_at", "detected_at", "priority"))
    errors = _pick(record, ("error_count", "threshold", "window_seconds"))
    errors.update(_pick(evidence, ("error_rate_per_minute", "baseline_per_minute",
                                   "baseline_window_seconds", "attribution",
                                   "new_revision_errors", "other_errors")))
    errors.update(_pick(record, ("error_rate_per_minute", "baseline_per_minute")))
    if errors:
        out["errors"] = errors
    if evidence.get("affected_pods"):
        out["affected_pods"] = list(evidence["affected_pods"])
    if evidence.get("pod_problems"):
        out["pod_problems"] = list(evidence["pod_problems"])
    if isinstance(evidence.get("pods"), list):  # an alert incident's pods
        out["pods"] = [_pick(p, ("name", "phase", "ready", "restarts", "problems"))
                       for p in evidence["pods"] if isinstance(p, dict)]
    if evidence.get("progress_message"):
        out["progress_message"] = _text(evidence["progress_message"])
    if evidence.get("other_revisions_in_window"):
        out["other_revisions_in_window"] = list(evidence["other_revisions_in_window"])
    if evidence.get("signatures"):
        out["signatures"] = _signatures(evidence["signatures"])
    if evidence.get("changes"):
        out["changes"] = _changes(evidence["changes"])
    last = evidence.get("last_rollout")
    if isinstance(last, dict):
        out["last_rollout"] = {**_pick(last, ("revision", "started_at", "previous_revision")),
                               "changes": _changes(last.get("changes"))}
    change = record.get("change")
    if isinstance(change, dict):  # a change incident: the change it was judged after
        out["change"] = _cause(change)
    if evidence.get("causes"):
        out["causes"] = [_cause(c) for c in evidence["causes"]]
    alerts = [record["alert"]] if isinstance(record.get("alert"), dict) else []
    alerts += [a for a in evidence.get("alerts") or () if isinstance(a, dict)]
    if alerts:
        out["alerts"] = [_alert(a) for a in alerts]
    if evidence.get("warning_events"):
        out["warning_events"] = [_pick({**e, "message": _text(e.get("message"), 300)},
                                       ("reason", "message", "object", "count"))
                                 for e in evidence["warning_events"] if isinstance(e, dict)]
    return out


def _keep(name: str, count: int) -> Callable[[dict[str, Any]], bool]:
    def step(evidence: dict[str, Any]) -> bool:
        items = evidence.get(name)
        if not isinstance(items, list) or len(items) <= count:
            return False
        evidence[name] = items[:count]
        omitted = evidence.setdefault("omitted", {})
        omitted[name] = omitted.get(name, 0) + len(items) - count
        return True
    return step


def _drop(name: str) -> Callable[[dict[str, Any]], bool]:
    def step(evidence: dict[str, Any]) -> bool:
        if name not in evidence:
            return False
        value = evidence.pop(name)
        omitted = evidence.setdefault("omitted", {})
        omitted[name] = omitted.get(name, 0) + (len(value) if isinstance(value, list) else 1)
        return True
    return step


def _shorten_examples(limit: int) -> Callable[[dict[str, Any]], bool]:
    def step(evidence: dict[str, Any]) -> bool:
        changed = False
        for name, field in (("signatures", "example"), ("changes", "detail"),
                            ("warning_events", "message")):
            for item in evidence.get(name) or ():
                if isinstance(item, dict) and isinstance(item.get(field), str) \
                        and len(item[field]) > limit:
                    item[field] = _text(item[field], limit)
                    changed = True
        return changed
    return step


# Least useful first: a long list of pod names says little more than its first few; the new
# signatures and the changes say the most, and go last.
_SHRINK_STEPS: tuple[Callable[[dict[str, Any]], bool], ...] = (
    _keep("affected_pods", 5),
    _keep("pod_problems", 10),
    _keep("pods", 10),
    _keep("warning_events", 5),
    _keep("signatures", 10),
    _shorten_examples(200),
    _keep("causes", 5),
    _keep("changes", 15),
    _keep("alerts", 3),
    _drop("other_revisions_in_window"),
    _drop("warning_events"),
    _drop("last_rollout"),
    _keep("signatures", 5),
    _shorten_examples(120),
    _keep("causes", 3),
    _keep("changes", 8),
    _drop("pods"),
    _drop("affected_pods"),
    _keep("pod_problems", 3),
    _keep("signatures", 3),
    _keep("changes", 4),
    _keep("alerts", 1),
    _keep("causes", 1),
    _shorten_examples(60),
    _drop("progress_message"),
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def evidence_for_llm(record: dict[str, Any], *, max_chars: int,
                     redactor: Redactor | None = None) -> str:
    """The incident's evidence as compact JSON, redacted, at most ``max_chars`` characters.

    Redacted before it is cut, so that a cut never splits a secret into something that no
    longer looks like one. ``redactor`` keeps the placeholders' mapping (local only); a new one
    by default.
    """
    redactor = redactor if redactor is not None else Redactor()
    evidence = redactor.redact_value(_evidence_object(copy.deepcopy(record)))
    text = _dumps(evidence)
    if len(text) <= max_chars:
        return text
    evidence[TRUNCATED] = True
    for step in _SHRINK_STEPS:
        step(evidence)
        text = _dumps(evidence)
        if len(text) <= max_chars:
            return text
    # Still too long (a huge label set, say): the head of the text, marked, as a JSON string.
    head = {TRUNCATED: True, "evidence_head": ""}
    room = max(max_chars - len(_dumps(head)), 0)
    cut = text[:room]
    while len(_dumps({**head, "evidence_head": cut})) > max_chars and cut:
        cut = cut[: max(len(cut) - max(len(cut) // 10, 1), 0)]
    return _dumps({**head, "evidence_head": cut})
