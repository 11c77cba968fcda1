"""Pure rendering of a ``ChangeIncident`` (a workload's errors rose after a change that was not
its own rollout: ``kind: change``) and of the ranked causes any incident carries.

The stdout JSON record has the common fields of every incident record (schema 1, ``event:
incident``, namespace, deployment, detection time, priority and rule, remediation) and, as its
evidence, the ranked causes (``causes_json``: each change in the one JSON shape of a change,
``run.change_log.change_dict``) and the error signatures. The Slack message says what rose after
what, how much, the likely causes with their reasons and commands, and what to do.

``causes_json`` and ``causes_blocks`` are shared with the rollout incident's rendering
(``notify.render``); they live in ``notify.causes_render``.
"""

from __future__ import annotations

from typing import Any

from ..judge.causes import scale_down
from ..model import Change, ChangeIncident
from ..redact import redact
from ..store.changes import change_summary
from .blocks import (SLACK_EXAMPLE_MAX_CHARS, SLACK_HEADER_MAX_CHARS, SLACK_TOP_SIGNATURES,
                     code_block, code_span, context, message, mrkdwn_escape, section)
from .causes_render import (causality_blocks, causality_json, cause_step, causes_blocks,
                            causes_json, percent, redacted_change_dict)
from .formats import (as_utc, clock_time, count_text, duration, iso_utc, json_number, one_line,
                      rate_text, truncate)
from .records import SCHEMA_VERSION, signature_dict
from .remediation_render import remediation_blocks

__all__ = ["causes_json", "causes_blocks", "change_incident_record", "change_incident_slack",
           "change_incident_title", "summary"]


def _what_happened(change: Change) -> str:
    """``payments rolled out revision 7``, ``ConfigMap checkout-config was updated``."""
    if change.rollout:
        revision = f" revision {change.revision}" if change.revision is not None else ""
        return f"{change.name} rolled out{revision}"
    down = scale_down(change)
    if down is not None:
        return f"{change.name} was scaled down from {down[0]} to {down[1]}"
    return f"{change.kind} {change.name} was {change.action}"


def change_incident_title(incident: ChangeIncident) -> str:
    """``Errors rose in shop/checkout after payments rolled out revision 7``."""
    return (f"Errors rose in {incident.namespace}/{incident.deployment} after "
            f"{_what_happened(incident.change)}")


def _since_change(incident: ChangeIncident) -> float:
    return (as_utc(incident.detected_at) - as_utc(incident.change.at)).total_seconds()


def _rise(incident: ChangeIncident) -> str:
    """``14/min, up from 0.5/min before the change`` (or without the baseline when unknown)."""
    text = f"{rate_text(incident.error_rate_per_minute)}/min"
    if incident.baseline_per_minute is not None:
        text += f", up from {rate_text(incident.baseline_per_minute)}/min before the change"
    return text


def advice(incident: ChangeIncident) -> str:
    """The recommended action in one sentence: the top cause's, with its command."""
    if incident.causes:
        sentence, command = cause_step(incident.causes[0])
        if command == incident.command or incident.command is None:
            return f"{sentence}: {command}" if command else sentence
    if incident.command:
        return f"Run: {incident.command}"
    return (f"Investigate: kubectl describe deployment/{incident.deployment} -n "
            f"{incident.namespace}")


def summary(incident: ChangeIncident) -> str:
    sentences = [
        f"Errors of {incident.deployment} in {incident.namespace} rose to {_rise(incident)}, "
        f"{duration(_since_change(incident))} after {_what_happened(incident.change)} at "
        f"{clock_time(incident.change.at)}."
    ]
    if incident.causes:
        top = incident.causes[0]
        sentences.append(f"Likeliest cause ({percent(top.score)}): "
                         f"{redact(change_summary(top.change))}.")
    sentences.append(f"Recommended: {advice(incident)}")
    return " ".join(sentences)


def change_incident_record(incident: ChangeIncident) -> dict[str, Any]:
    """The stdout JSON line of a ``kind: change`` incident."""
    remediation = incident.remediation
    return {
        "event": "incident",
        "schema": SCHEMA_VERSION,
        "kind": "change",
        "key": incident.key,
        "priority": incident.priority.value,
        "rule": incident.rule,
        "namespace": incident.namespace,
        "deployment": incident.deployment,
        "deployment_uid": incident.deployment_uid,
        "detected_at": iso_utc(incident.detected_at),
        "change": redacted_change_dict(incident.change),
        "error_count": json_number(incident.error_count),
        "error_rate_per_minute": json_number(incident.error_rate_per_minute),
        "baseline_per_minute": (None if incident.baseline_per_minute is None
                                else json_number(incident.baseline_per_minute)),
        "window_seconds": incident.window_seconds,
        "summary": summary(incident),
        "recommended_action": {"action": incident.action, "command": incident.command},
        # What happens to the fix; the buttons' tokens never appear here.
        "remediation": None if remediation is None else {
            "action": remediation.action, "to_revision": remediation.to_revision,
            "target": remediation.target, "decision": remediation.outcome,
            "reason": remediation.reason, "guardrail": remediation.guardrail,
            "dry_run": remediation.dry_run, "journal_id": remediation.journal_id,
        },
        "evidence": {
            "causes": causes_json(incident.causes),
            "signatures": [signature_dict(s) for s in incident.signatures],
            "causality": causality_json(incident.causality),
        },
    }


def _header(incident: ChangeIncident) -> str:
    return f":rotating_light: [{incident.priority.value}] {change_incident_title(incident)}"


def _impact_lines(incident: ChangeIncident) -> list[str]:
    change = incident.change
    where = f"{incident.namespace}/{incident.deployment}"
    by = f" (by {change.manager})" if change.manager else ""
    lines = [
        f"• {count_text(incident.error_count)} error lines in the last "
        f"{duration(incident.window_seconds)} in {mrkdwn_escape(where)}: "
        f"{rate_text(incident.error_rate_per_minute)}/min"
        + (f", up from {rate_text(incident.baseline_per_minute)}/min before the change"
           if incident.baseline_per_minute is not None else ""),
        f"• {mrkdwn_escape(_what_happened(change))} at {clock_time(change.at)}"
        f"{mrkdwn_escape(by)}; "
        f"the rise was detected {duration(_since_change(incident))} later",
        f"• Priority {incident.priority.value}"
        + (f" (rule {mrkdwn_escape(incident.rule)})" if incident.rule else ""),
    ]
    return lines


def _action_lines(incident: ChangeIncident) -> list[str]:
    if incident.causes:
        sentence, command = cause_step(incident.causes[0])
        if command == incident.command or incident.command is None:
            lines = [mrkdwn_escape(sentence) + (":" if command else ".")]
            if command:
                lines.append(code_block(command))
            return lines
    if incident.command:
        return ["Run:", code_block(incident.command)]
    return ["Investigate:", code_block(f"kubectl describe deployment/{incident.deployment} "
                                       f"-n {incident.namespace}")]


def _signature_lines(incident: ChangeIncident) -> list[str]:
    signatures = sorted(incident.signatures, key=lambda s: (not s.new, -s.count))
    lines = []
    for signature in signatures[:SLACK_TOP_SIGNATURES]:
        marker = " new" if signature.new else ""
        example = truncate(one_line(redact(signature.example)), SLACK_EXAMPLE_MAX_CHARS)
        lines.append(f"• {signature.count}×{marker}: {code_span(example)}")
    return lines


def change_incident_slack(incident: ChangeIncident) -> dict[str, Any]:
    """The Slack message of a ``kind: change`` incident: an incoming-webhook body."""
    header = _header(incident)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": truncate(header, SLACK_HEADER_MAX_CHARS)}},
        section("Impact", _impact_lines(incident)),
    ]
    blocks.extend(causes_blocks(incident.causes))
    blocks.extend(causality_blocks(incident.causality, namespace=incident.namespace))
    blocks.append(section("Recommended action", _action_lines(incident)))
    if incident.remediation is not None:
        blocks.extend(remediation_blocks(incident.remediation))
    if incident.signatures:
        blocks.append({"type": "divider"})
        blocks.append(section("Top error signatures", _signature_lines(incident)))
    blocks.append(context([f"Detected {mrkdwn_escape(iso_utc(incident.detected_at))}",
                           f"change made {mrkdwn_escape(iso_utc(incident.change.at))}",
                           "kind: change"]))
    return message(blocks, f"{header}. {summary(incident)}")
