"""Pure rendering of an ``AlertIncident`` (an alert with no rollout to blame) and of its close:
the stdout JSON record, the Slack payload, and the "resolved after 14m" follow-up.

Labels, annotations, Event messages and log examples come from outside: they go through
``redact`` like every other outside text the detector repeats.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model import AlertIncident
from ..redact import redact
from .advice import ACTION_ADVICE
from .blocks import (SLACK_EXAMPLE_MAX_CHARS, SLACK_HEADER_MAX_CHARS, SLACK_TOP_SIGNATURES,
                     code_block, code_span, context, message, mrkdwn_escape, section)
from .causes_render import causality_blocks, causality_json, causes_blocks, causes_json
from .formats import clock_time, duration, iso_utc, one_line, plural, truncate
from .records import SCHEMA_VERSION, alert_dict, signature_dict
from .remediation_render import remediation_blocks

SLACK_PODS_SHOWN = 8
SLACK_EVENTS_SHOWN = 5


def _where(incident: AlertIncident) -> str:
    return f"{incident.target.deployment} in {incident.target.namespace}"


def _problem_pods(incident: AlertIncident) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for pod in incident.pods:
        for problem in pod.problems:
            counts[problem.value] = counts.get(problem.value, 0) + 1
    return list(counts.items())


def advice(incident: AlertIncident) -> str:
    """The recommended action in one sentence, with its command when there is one."""
    if incident.command:
        return (f"{ACTION_ADVICE.get(incident.action, incident.action)} (rule {incident.rule}): "
                f"{incident.command}")
    return (f"No action of the rules' for this (rule {incident.rule}): investigate with "
            f"kubectl describe deployment/{incident.target.deployment} -n "
            f"{incident.target.namespace}")


def summary(incident: AlertIncident) -> str:
    alert = incident.alert
    sentences = [f"Alert {alert.name or alert.fingerprint} ({incident.priority.value}) is firing "
                 f"on {_where(incident)} since {clock_time(alert.starts_at)}, with no rollout in "
                 "its window."]
    about = alert.annotation("summary") or alert.annotation("description")
    if about:
        sentences.append(one_line(redact(about)).rstrip(".") + ".")
    problems = _problem_pods(incident)
    if problems:
        sentences.append("Pods: " + ", ".join(f"{problem} on {plural(n, 'pod')}"
                                              for problem, n in problems) + ".")
    last = incident.last_rollout
    if last is not None:
        ago = duration((incident.detected_at - last.started_at).total_seconds())
        changed = ", ".join(dict.fromkeys(c.kind for c in last.changes))
        sentences.append(f"Last rollout: revision {last.revision}, {ago} ago"
                         + (f" (changed: {changed})" if changed else "") + ".")
    sentences.append(f"Recommended: {advice(incident)}")
    return " ".join(sentences)


def alert_record(incident: AlertIncident) -> dict[str, Any]:
    last = incident.last_rollout
    remediation = incident.remediation
    return {
        "event": "incident",
        "schema": SCHEMA_VERSION,
        "kind": "alert",
        "priority": incident.priority.value,
        "rule": incident.rule,
        "key": incident.key,
        "namespace": incident.target.namespace,
        "deployment": incident.target.deployment,
        "deployment_uid": incident.deployment_uid,
        "revision": incident.revision,
        "mapped_by": incident.target.mapped_by,
        "detected_at": iso_utc(incident.detected_at),
        "alert": alert_dict(incident.alert),
        "summary": summary(incident),
        "recommended_action": advice(incident),
        "action": incident.action,
        "command": incident.command,
        "remediation": None if remediation is None else {
            "action": remediation.action, "decision": remediation.outcome,
            "reason": remediation.reason, "guardrail": remediation.guardrail,
            "dry_run": remediation.dry_run,
        },
        "evidence": {
            "pods": [{"name": p.name, "phase": p.phase, "ready": p.ready,
                      "restarts": p.restarts, "problems": [x.value for x in p.problems]}
                     for p in incident.pods],
            "warning_events": [{"reason": e.reason, "message": redact(e.message),
                                "object": f"{e.object_kind}/{e.object_name}", "count": e.count,
                                "last_seen": iso_utc(e.last_seen) if e.last_seen else None}
                               for e in incident.warning_events],
            "last_rollout": None if last is None else {
                "revision": last.revision, "replicaset": last.replicaset,
                "started_at": iso_utc(last.started_at),
                "previous_revision": last.previous_revision,
                "changes": [{"kind": c.kind, "container": c.container, "detail": c.detail}
                            for c in last.changes],
            },
            "signatures": [signature_dict(s) for s in incident.signatures],
            "causes": causes_json(incident.causes),
            "causality": causality_json(incident.causality),
        },
    }


def _header(incident: AlertIncident) -> str:
    alert = incident.alert
    return (f":rotating_light: [{incident.priority.value}] {alert.name or alert.fingerprint} on "
            f"{_where(incident)}")


def slack_payload(incident: AlertIncident) -> dict[str, Any]:
    alert = incident.alert
    about = [f"• Firing since {clock_time(alert.starts_at)}; no rollout in its window"]
    for key in ("summary", "description"):
        value = alert.annotation(key)
        if value:
            about.append(f"• {key.capitalize()}: " + mrkdwn_escape(
                truncate(one_line(redact(value)), SLACK_EXAMPLE_MAX_CHARS)))
    labels = ", ".join(f"{k}={redact(v)}" for k, v in alert.labels if k != "alertname")
    if labels:
        about.append("• Labels: " + mrkdwn_escape(truncate(labels, SLACK_EXAMPLE_MAX_CHARS)))
    about.append(f"• Priority {incident.priority.value} (rule {mrkdwn_escape(incident.rule)})")
    if alert.generator_url.startswith(("http://", "https://")):
        about.append(f"• <{redact(alert.generator_url)}|Source of the alert>")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": truncate(_header(incident), SLACK_HEADER_MAX_CHARS)}},
        section("Alert", about),
    ]
    pods = [f"• {mrkdwn_escape(p.name)}: {p.phase}, {'ready' if p.ready else 'not ready'}, "
            f"{plural(p.restarts, 'restart')}"
            + (f", {', '.join(x.value for x in p.problems)}" if p.problems else "")
            for p in incident.pods[:SLACK_PODS_SHOWN]]
    if pods:
        blocks.append(section("Pods", pods))
    events = [f"• {mrkdwn_escape(e.reason)} ({e.count}×) on {mrkdwn_escape(e.object_name)}: "
              + mrkdwn_escape(truncate(one_line(redact(e.message)), SLACK_EXAMPLE_MAX_CHARS))
              for e in incident.warning_events[:SLACK_EVENTS_SHOWN]]
    if events:
        blocks.append(section("Warning events", events))
    last = incident.last_rollout
    if last is not None:
        lines = [f"• Revision {last.revision} ({mrkdwn_escape(last.replicaset)}) rolled out "
                 f"{duration((incident.detected_at - last.started_at).total_seconds())} ago"]
        lines += [f"• {mrkdwn_escape(c.kind)}"
                  + (f" ({mrkdwn_escape(c.container)})" if c.container else "")
                  + f": {mrkdwn_escape(truncate(one_line(c.detail), SLACK_EXAMPLE_MAX_CHARS))}"
                  for c in last.changes]
        blocks.append(section("Last rollout", lines))
    if incident.signatures:
        blocks.append(section("Top error signatures", [
            f"• {s.count}×: " + code_span(truncate(one_line(redact(s.example)),
                                                   SLACK_EXAMPLE_MAX_CHARS))
            for s in incident.signatures[:SLACK_TOP_SIGNATURES]]))
    blocks.extend(causes_blocks(incident.causes))
    blocks.extend(causality_blocks(incident.causality, namespace=incident.target.namespace))
    action = [mrkdwn_escape(advice(incident).split(": ", 1)[0] + ":")]
    if incident.command:
        action.append(code_block(incident.command))
    else:
        action.append(code_block(f"kubectl describe deployment/{incident.target.deployment} "
                                 f"-n {incident.target.namespace}"))
    blocks.append(section("Recommended action", action))
    if incident.remediation is not None:
        blocks.extend(remediation_blocks(incident.remediation))
    blocks.append(context([f"Detected {mrkdwn_escape(iso_utc(incident.detected_at))}",
                           f"fingerprint {mrkdwn_escape(alert.fingerprint)}",
                           f"mapped by the {mrkdwn_escape(incident.target.mapped_by)} label"]))
    return message(blocks, f"{_header(incident)}. {summary(incident)}")


def resolved_record(record: dict[str, Any], *, resolved_at: datetime) -> dict[str, Any]:
    """The follow-up of an alert incident whose alert resolved (``record``: its incident's)."""
    started = datetime.fromisoformat(record["alert"]["starts_at"].replace("Z", "+00:00"))
    firing = max(0.0, (resolved_at - started).total_seconds())
    return {"event": "resolved", "schema": SCHEMA_VERSION, "kind": "alert", "key": record["key"],
            "namespace": record["namespace"], "deployment": record["deployment"],
            "alert": record["alert"]["name"], "fingerprint": record["alert"]["fingerprint"],
            "priority": record["priority"], "starts_at": record["alert"]["starts_at"],
            "resolved_at": iso_utc(resolved_at), "firing_seconds": round(firing, 3),
            "summary": resolved_text(record, firing_seconds=firing)}


def resolved_text(record: dict[str, Any], *, firing_seconds: float) -> str:
    return (f"Resolved after {duration(firing_seconds)}: {record['alert']['name'] or 'alert'} on "
            f"{record['deployment']} in {record['namespace']}.")
