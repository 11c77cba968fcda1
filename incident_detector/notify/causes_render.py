"""Pure rendering of the ranked causes and the causality tree any incident carries: their JSON in
a record, their lines in Slack, and what to do about a cause.

Shared by the rollout incident's rendering (``render``) and the change incident's
(``change_render``). A change's values (a ConfigMap's) and an error group's label (a log line's
fingerprint) came from outside: they go through ``redact`` again here.
"""

from __future__ import annotations

import math
from typing import Any

from ..judge.causality import blast_names, chain, symptom_labels
from ..judge.causes import scale_down
from ..model import BlastEntry, Causality, Cause, Change
from ..redact import redact
from ..store.changes import change_dict, change_summary
from .blocks import SLACK_CAUSE_REASONS, SLACK_EXAMPLE_MAX_CHARS, code_span, mrkdwn_escape, section
from .formats import json_number, one_line, truncate


def percent(score: float) -> str:
    """A cause's score as a person reads it: ``0.87`` -> ``87%``."""
    if not math.isfinite(score):
        return "?%"
    return f"{round(score * 100)}%"


def cause_step(cause: Cause) -> tuple[str, str | None]:
    """What to do about a cause: a sentence, and the command that goes with it (or None)."""
    change = cause.change
    what = f"{change.kind} {change.name} in {change.namespace}"
    by = f" (by {change.manager})" if change.manager else ""
    if change.action == "deleted":
        return f"Recreate {what} where it is managed{by}", cause.command
    if cause.command and change.rollout:
        target = (f"revision {change.previous_revision}"
                  if change.previous_revision is not None and change.kind == "Deployment"
                  else "the previous revision")
        return f"Roll back {what} to {target}", cause.command
    if cause.command and scale_down(change) is not None:
        return f"Scale {what} back up", cause.command
    if cause.command:
        return f"Revert {what} where it was changed{by}; to see it", cause.command
    return f"Revert {what} where it was changed{by}", None


def cause_advice(cause: Cause) -> str:
    """What to do about a cause, in one sentence with its command when it has one."""
    sentence, command = cause_step(cause)
    return f"{sentence}: {command}" if command else sentence


def redacted_change_dict(change: Change) -> dict[str, Any]:
    """``change_dict`` of a change, its field values and summary redacted again: a ConfigMap's
    values came from outside."""
    data = change_dict(change)
    data["fields"] = [{**f, "before": None if f["before"] is None else redact(str(f["before"])),
                       "after": None if f["after"] is None else redact(str(f["after"]))}
                      for f in data["fields"]]
    data["summary"] = redact(data["summary"])
    return data


def causes_json(causes: tuple[Cause, ...] | list[Cause]) -> list[dict[str, Any]]:
    """``evidence.causes`` of a record: each change as ``change_dict`` has it, with its score,
    reasons, action and command."""
    return [{"change": redacted_change_dict(cause.change), "score": json_number(cause.score),
             "reasons": list(cause.reasons), "action": cause.action, "command": cause.command}
            for cause in causes]


def blast_radius_json(blast: tuple[BlastEntry, ...]) -> list[dict[str, Any]]:
    return [{"workload": entry.workload, "path": list(entry.path),
             "before_per_minute": None if entry.before_per_minute is None
             else json_number(entry.before_per_minute),
             "after_per_minute": json_number(entry.after_per_minute)} for entry in blast]


def causality_json(tree: Causality | None) -> dict[str, Any] | None:
    """An incident's causality tree: its roots, nodes and edges (labels and evidence redacted
    again: an error group's label is a log line's fingerprint)."""
    if tree is None:
        return None
    return {"subject": tree.subject, "roots": list(tree.roots),
            "nodes": [{"id": n.id, "kind": n.kind, "label": redact(n.label)}
                      for n in tree.nodes],
            "edges": [{"source": e.source, "target": e.target, "score": e.score,
                       "evidence": [redact(item) for item in e.evidence]}
                      for e in tree.edges]}


def causality_lines(tree: Causality | None, blast: tuple[BlastEntry, ...] = (), *,
                    namespace: str) -> list[str]:
    """The causality tree in two Slack lines: the best root and the workloads its failure
    went through; the symptoms and the callers that fail too."""
    if tree is None or not tree.roots:
        return []
    root = next((e for e in tree.edges if e.source == tree.roots[0]), None)
    score = f" ({percent(root.score)})" if root is not None else ""
    path = " → ".join(truncate(one_line(redact(label)), 120) for label in chain(tree))
    symptoms = [truncate(one_line(redact(label)), 120) for label in symptom_labels(tree)]
    also = blast_names(blast, namespace=namespace)
    second = "Symptoms: " + ("; ".join(symptoms[:4]) or "none recorded")
    if also:
        second += f"; also failing: {', '.join(also)}"
    return [mrkdwn_escape(f"Root: {path}{score}"), mrkdwn_escape(second)]


def causality_blocks(tree: Causality | None, blast: tuple[BlastEntry, ...] = (), *,
                     namespace: str) -> list[dict[str, Any]]:
    lines = causality_lines(tree, blast, namespace=namespace)
    return [section("Causality", lines)] if lines else []


def cause_lines(causes: tuple[Cause, ...] | list[Cause]) -> list[str]:
    """Each cause: its rank, score and one-line change, its reasons, its command in code."""
    lines = []
    for rank, cause in enumerate(causes, start=1):
        summary_text = truncate(one_line(redact(change_summary(cause.change))),
                                SLACK_EXAMPLE_MAX_CHARS)
        lines.append(f"*{rank}. {percent(cause.score)}* {mrkdwn_escape(summary_text)}")
        for reason in cause.reasons[:SLACK_CAUSE_REASONS]:
            lines.append("      ◦ " + mrkdwn_escape(truncate(one_line(reason),
                                                             SLACK_EXAMPLE_MAX_CHARS)))
        if cause.command:
            lines.append("      " + code_span(cause.command))
    return lines


def causes_blocks(causes: tuple[Cause, ...] | list[Cause]) -> list[dict[str, Any]]:
    """The "Likely causes" section of a Slack message; none when there is no cause."""
    if not causes:
        return []
    return [section("Likely causes", cause_lines(causes))]
