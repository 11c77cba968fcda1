"""Pure rendering of a new error group worth a notification (error triage, NOTIFY_PRIORITIES):
its stdout JSON record and its Slack message. The example line was redacted when the group was
made; it goes through ``redact`` again here, as every outside text does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..redact import redact
from .blocks import (SLACK_EXAMPLE_MAX_CHARS, SLACK_HEADER_MAX_CHARS, code_span, mrkdwn_escape,
                     section)
from .formats import duration, iso_utc, one_line, truncate
from .records import SCHEMA_VERSION


def group_key(group: Any) -> str:
    return f"errors/{group.namespace}/{group.fingerprint}"


def _where(group: Any) -> str:
    workloads = ", ".join(w for w in group.workloads if w) or "unknown workload"
    return f"{workloads} in {group.namespace}"


def summary(group: Any, *, now: datetime) -> str:
    seen = "at least " if group.sampled else ""
    return (f"New error ({group.priority.value}, rule {group.rule or 'default'}) in "
            f"{_where(group)}: {seen}{group.count} lines since "
            f"{iso_utc(group.first_seen)} ({duration((now - group.first_seen).total_seconds())}"
            f" ago): {one_line(redact(group.example))}")


def incident_sentence(incident: dict[str, Any]) -> str:
    """Where an error group's incident is: ``part of the rollout incident of payments
    revision 2 in shop (checkout calls payments)``."""
    path = [node.partition("/")[2] or node for node in incident.get("path", ())]
    calls = f" ({' calls '.join(path)})" if len(path) > 1 else ""
    return (f"part of the rollout incident of {incident['deployment']} revision "
            f"{incident['revision']} in {incident['namespace']}{calls}")


def group_record(group: Any, *, now: datetime,
                 incident: dict[str, Any] | None = None) -> dict[str, Any]:
    """``incident``: the rollout incident its workloads are part of (their own, or one of a
    workload they call), with the chain of calls to it; None: none known."""
    return {"event": "incident", "schema": SCHEMA_VERSION, "kind": "error_group",
            "priority": group.priority.value, "rule": group.rule, "key": group_key(group),
            "namespace": group.namespace, "workloads": list(group.workloads),
            "fingerprint": redact(group.fingerprint), "example": redact(group.example),
            "count": group.count, "sampled": group.sampled,
            "first_seen": iso_utc(group.first_seen), "last_seen": iso_utc(group.last_seen),
            "detected_at": iso_utc(now), "summary": summary(group, now=now),
            "incident": incident}


def slack_payload(group: Any, *, now: datetime,
                  incident: dict[str, Any] | None = None) -> dict[str, Any]:
    header = f":warning: [{group.priority.value}] New error in {_where(group)}"
    example = truncate(one_line(redact(group.example)), SLACK_EXAMPLE_MAX_CHARS)
    seen = "at least " if group.sampled else ""
    lines = [f"• {code_span(example)}",
             f"• {seen}{group.count} lines since {mrkdwn_escape(iso_utc(group.first_seen))}",
             f"• Priority {group.priority.value} (rule {mrkdwn_escape(group.rule or 'default')})"]
    if incident is not None:
        sentence = incident_sentence(incident)
        lines.append(f"• {mrkdwn_escape(sentence[0].upper() + sentence[1:])}")
    return {"text": mrkdwn_escape(summary(group, now=now))[:3000],
            "blocks": [{"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                   "text": truncate(header,
                                                                    SLACK_HEADER_MAX_CHARS)}},
                       section("Error group", lines)]}
