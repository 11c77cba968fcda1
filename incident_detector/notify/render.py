"""Pure rendering of an ``Incident``: the stdout JSON record, the Slack payload, the Event note.

Every function here is a function of the incident alone: no clock, no I/O, no logging. Times are
shown in UTC so that the same incident renders the same way on every host.

Text that came from outside (sampled log lines, their fingerprints, Kubernetes' progress message)
goes through ``redact.redact`` here too: the signatures are redacted when they are computed, and
this second pass keeps every renderer safe whatever builds the incident.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from ..judge.causality import blast_names, chain, symptom_labels
from ..judge.causes import scale_down
from ..judge.changes import MORE_KIND
from ..judge.commands import action_command
from ..model import (
    Alert,
    Attribution,
    BlastEntry,
    Causality,
    Cause,
    Change,
    ErrorSignature,
    GitOpsOwner,
    GitOpsTool,
    Incident,
    RemediationView,
    SIGNATURE_GAPS,
    Signal,
)
from ..redact import redact
from ..store.changes import change_dict, change_summary

SCHEMA_VERSION = 1

# Block Kit limits: Slack rejects the whole message when one of them is exceeded.
SLACK_HEADER_MAX_CHARS = 150
SLACK_SECTION_MAX_CHARS = 3000
SLACK_MAX_BLOCKS = 50
SLACK_CONTEXT_MAX_ELEMENTS = 10
SLACK_FALLBACK_MAX_CHARS = 3000
# The note of an events.k8s.io/v1 Event is validated by the API server to this many bytes.
EVENT_NOTE_MAX_BYTES = 1024

ELLIPSIS = "…"
# A phone shows a few lines per evidence item; the JSON record keeps everything.
SLACK_TOP_SIGNATURES = 5
SLACK_EXAMPLE_MAX_CHARS = 300
SLACK_LINE_MAX_CHARS = 1000
SLACK_PODS_LISTED = 5
SLACK_CAUSE_REASONS = 6
# Argo CD installs its Applications here unless "apps in any namespace" is used.


# --- small formatting helpers -------------------------------------------------------------


def _value(item: Any) -> Any:
    """The wire value of an enum member (``str(member)`` would give ``Class.MEMBER``)."""
    return item.value if isinstance(item, Enum) else item


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC: reading the host's zone would make rendering impure.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix."""
    return _as_utc(moment).isoformat().replace("+00:00", "Z")


def _clock(moment: datetime) -> str:
    return _as_utc(moment).strftime("%H:%M:%S UTC")


def _number(value: float) -> int | float | None:
    """An int when the value is integral (counts), else rounded; None for NaN/infinity (JSON)."""
    if not math.isfinite(value):
        return None
    if float(value).is_integer():
        return int(value)
    return round(value, 3)


def _count(value: float) -> str:
    number = _number(value)
    return "?" if number is None else str(number)


def _rate(per_minute: float) -> str:
    if not math.isfinite(per_minute):
        return "?"
    if abs(per_minute) >= 10:
        return f"{per_minute:.0f}"
    return f"{per_minute:.2f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """``90`` -> ``1m30s``, ``120`` -> ``2m``, ``3725`` -> ``1h2m5s``; negatives show as ``0s``."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def _since_rollout(incident: Incident) -> float:
    """Seconds from the rollout's start to detection."""
    return (_as_utc(incident.detected_at) - _as_utc(incident.rollout_started_at)).total_seconds()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters, the last one an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS


def _one_line(text: str) -> str:
    return " ".join(text.split())


def mrkdwn_escape(text: str) -> str:
    """Slack's escaping: only ``&``, ``<`` and ``>`` are control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _truncate_escaped(text: str, limit: int) -> str:
    """Truncate already-escaped mrkdwn without leaving half an entity such as ``&am``."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def _code_span(text: str) -> str:
    # A backtick inside would close the span early; the look-alike keeps the text readable.
    return "`" + mrkdwn_escape(text.replace("`", "ˋ")) + "`"


def _code_block(text: str) -> str:
    return "```" + mrkdwn_escape(text.replace("```", "ˋˋˋ")) + "```"


# --- the decision and the rollback ---------------------------------------------------------


def rollback_command(incident: Incident) -> str:
    """The kubectl undo; without a known previous revision kubectl's default (previous) applies."""
    command = action_command("rollback", namespace=incident.namespace,
                             deployment=incident.deployment,
                             to_revision=incident.previous_revision)
    assert command is not None  # a rollback needs nothing more than the Deployment
    return command


def _target(incident: Incident) -> str:
    if incident.previous_revision is None:
        return "the previous revision"
    return f"revision {incident.previous_revision}"


def _gitops_advice(incident: Incident, owner: GitOpsOwner) -> str:
    where = f" in {owner.app_namespace}" if owner.app_namespace else ""
    undo = rollback_command(incident)
    if owner.tool == GitOpsTool.ARGO_CD:
        (rollback,) = owner.rollback_commands()
        return (
            f"{incident.deployment} is managed by the Argo CD application {owner.app}{where}: "
            f"a manual kubectl undo would be reverted at its next sync. "
            f"Roll back through Argo CD: {rollback} (it returns to the previously synced "
            f"version and needs auto-sync off), or revert the commit in Git. "
            f"Last resort, with auto-sync disabled: {undo}"
        )
    suspend = " or ".join(owner.flux_commands("suspend"))
    resume = " or ".join(owner.flux_commands("resume"))
    return (
        f"{incident.deployment} is managed by the {owner.object_name}: "
        f"a manual kubectl undo would be reverted at its next reconciliation. "
        f"Roll back by reverting the commit in Git. "
        f"To undo by hand first suspend it ({suspend}) and resume it once Git is fixed "
        f"({resume}). "
        f"Last resort, after suspending: {undo}"
    )


def rule_command(incident: Incident) -> str | None:
    """The command of the rule's action when it is one other than the rollback."""
    action = incident.rule_action
    if action in (None, "none", "rollback"):
        return None
    pod = next((name for name, problem in incident.evidence.pod_problems), None)
    return action_command(action, namespace=incident.namespace, deployment=incident.deployment,
                          pod=pod)


def foreign_cause(incident: Incident) -> Cause | None:
    """The incident's likeliest cause when it is not the incident's own rollout (a
    dependency's rollout, a ConfigMap): undoing this rollout would not undo it."""
    causes = incident.evidence.causes
    if not causes:
        return None
    change = causes[0].change
    if (change.kind == "Deployment" and change.namespace == incident.namespace
            and change.name == incident.deployment
            and change.revision in (None, incident.revision)):
        return None
    return causes[0]


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


def recommended_action(incident: Incident) -> str:
    owner = incident.evidence.gitops
    command = rule_command(incident)
    cause = foreign_cause(incident)
    if cause is not None:
        return (f"The likeliest cause is not this rollout but "
                f"{redact(change_summary(cause.change))} ({percent(cause.score)}). "
                f"{redact(cause_advice(cause))}. Rolling back {incident.deployment} would not "
                f"undo it; should it be needed too: {rollback_command(incident)}")
    if command is not None:
        return (f"{ACTION_ADVICE.get(incident.rule_action or '', 'Run')} (rule "
                f"{incident.rule}): {command}; or roll back to {_target(incident)}: "
                f"{rollback_command(incident)}")
    if owner is not None:
        return _gitops_advice(incident, owner)
    return (
        f"Roll back {incident.deployment} in {incident.namespace} to {_target(incident)}: "
        f"{rollback_command(incident)}"
    )


# --- plain-English summary -------------------------------------------------------------------


def _pod_problem_counts(incident: Incident) -> list[tuple[str, int]]:
    """(problem, number of distinct pods) in first-seen order."""
    pods_by_problem: dict[str, set[str]] = {}
    for pod, problem in incident.evidence.pod_problems:
        pods_by_problem.setdefault(str(_value(problem)), set()).add(pod)
    return [(problem, len(pods)) for problem, pods in pods_by_problem.items()]


def _error_phrase(incident: Incident) -> str:
    return (
        f"{_count(incident.error_count)} error "
        f"{'line' if incident.error_count == 1 else 'lines'} in the last "
        f"{duration(incident.window_seconds)} (threshold {incident.threshold})"
    )


def _pod_health_phrase(incident: Incident) -> str:
    problems = _pod_problem_counts(incident)
    if not problems:
        return "unhealthy pods"
    return ", ".join(f"{problem} on {_plural(n, 'pod')}" for problem, n in problems)


def _signal_phrases(incident: Incident) -> list[str]:
    phrases = []
    for signal in incident.signals:
        if signal == Signal.ERROR_SPIKE:
            phrases.append(_error_phrase(incident))
        elif signal == Signal.POD_HEALTH:
            phrases.append(_pod_health_phrase(incident))
        elif signal == Signal.PROGRESS_DEADLINE:
            phrases.append("progress deadline exceeded")
        elif signal == Signal.ALERT:
            phrases.append(_alerts_phrase(incident.evidence.alerts))
    return phrases or [_error_phrase(incident)]


def _alerts_phrase(alerts: tuple[Alert, ...]) -> str:
    names = list(dict.fromkeys(alert.name or alert.fingerprint for alert in alerts))
    return f"alert {', '.join(names)} firing" if len(names) == 1 \
        else f"alerts {', '.join(names)} firing"


def signature_dict(signature: ErrorSignature) -> dict[str, Any]:
    """An error signature in a JSON record, redacted again as every outside text is."""
    return {"fingerprint": redact(signature.fingerprint), "count": signature.count,
            "example": redact(signature.example), "new": signature.new}


def alert_dict(alert: Alert) -> dict[str, Any]:
    """An alert in a JSON record; label and annotation values redacted like any outside text."""
    return {"name": alert.name, "fingerprint": alert.fingerprint, "status": alert.status,
            "starts_at": iso_utc(alert.starts_at),
            "ends_at": iso_utc(alert.ends_at) if alert.ends_at else None,
            "labels": {k: redact(v) for k, v in alert.labels},
            "annotations": {k: redact(v) for k, v in alert.annotations},
            "generator_url": redact(alert.generator_url) if alert.generator_url else None}


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
    return [{"change": redacted_change_dict(cause.change), "score": _number(cause.score),
             "reasons": list(cause.reasons), "action": cause.action, "command": cause.command}
            for cause in causes]


def blast_radius_json(blast: tuple[BlastEntry, ...]) -> list[dict[str, Any]]:
    return [{"workload": entry.workload, "path": list(entry.path),
             "before_per_minute": None if entry.before_per_minute is None
             else _number(entry.before_per_minute),
             "after_per_minute": _number(entry.after_per_minute)} for entry in blast]


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
    path = " → ".join(_truncate(_one_line(redact(label)), 120) for label in chain(tree))
    symptoms = [_truncate(_one_line(redact(label)), 120) for label in symptom_labels(tree)]
    also = blast_names(blast, namespace=namespace)
    second = "Symptoms: " + ("; ".join(symptoms[:4]) or "none recorded")
    if also:
        second += f"; also failing: {', '.join(also)}"
    return [mrkdwn_escape(f"Root: {path}{score}"), mrkdwn_escape(second)]


def causality_blocks(tree: Causality | None, blast: tuple[BlastEntry, ...] = (), *,
                     namespace: str) -> list[dict[str, Any]]:
    lines = causality_lines(tree, blast, namespace=namespace)
    return [_section("Causality", lines)] if lines else []


def _headline(incident: Incident) -> str:
    """The first sentence: what is broken, by which signals, when relative to the rollout."""
    return (
        f"Rollout of {incident.deployment} revision {incident.revision} "
        f"({incident.replicaset}) in {incident.namespace} is failing: "
        f"{'; '.join(_signal_phrases(incident))}; "
        f"detected {duration(_since_rollout(incident))} after the rollout "
        f"began at {_clock(incident.rollout_started_at)}."
    )


def _baseline_sentence(incident: Incident) -> str | None:
    evidence = incident.evidence
    if evidence.baseline_absent is not None:
        return (f"No healthy state to compare with: {evidence.baseline_absent}; judged against "
                "the threshold alone.")
    if evidence.baseline_per_minute is None:
        return None
    rate, before = evidence.error_rate_per_minute, evidence.baseline_per_minute
    direction = "up from" if rate > before else "compared with"
    if evidence.baseline_excluded_revisions:
        return (f"That is {_rate(rate)}/min, {direction} {_rate(before)}/min in the last healthy "
                f"state, before revision {_revisions(evidence.baseline_excluded_revisions)} "
                "(judged bad).")
    lookback = (
        f" over the {duration(evidence.baseline_window_seconds)} before"
        if evidence.baseline_window_seconds
        else " before"
    )
    return f"That is {_rate(rate)}/min, {direction} {_rate(before)}/min{lookback} the rollout."


def _attribution_sentence(incident: Incident) -> str:
    evidence = incident.evidence
    if evidence.attribution == Attribution.WORKLOAD_TOTAL:
        return (
            "The logs carry no pod identity, so the workload's total error count was used "
            "rather than the new revision's alone."
        )
    sentence = f"The new revision's pods wrote {_count(evidence.new_revision_errors)} of the errors"
    if evidence.other_errors:
        sentence += f"; pods of other ReplicaSets wrote {_count(evidence.other_errors)}"
    return sentence + "."


def _revisions(revisions: tuple[int, ...]) -> str:
    return ", ".join(str(r) for r in revisions)


def summary(incident: Incident) -> str:
    evidence = incident.evidence
    sentences = [_headline(incident)]
    if Signal.ERROR_SPIKE in incident.signals:
        baseline = _baseline_sentence(incident)
        if baseline:
            sentences.append(baseline)
        sentences.append(_attribution_sentence(incident))
    if Signal.PROGRESS_DEADLINE in incident.signals and evidence.progress_message:
        sentences.append(f"Kubernetes reports: {_one_line(redact(evidence.progress_message))}")
    if evidence.other_revisions_in_window:
        sentences.append(
            f"Other revisions were rolled out in the same window "
            f"({_revisions(evidence.other_revisions_in_window)}), so some errors may be theirs."
        )
    new_signatures = sum(1 for s in evidence.signatures if s.new)
    if new_signatures:
        sentences.append(
            f"{_plural(new_signatures, 'error signature')} did not occur before the rollout."
        )
    if evidence.changes:
        kinds = ", ".join(dict.fromkeys(change.kind for change in evidence.changes
                                        if change.kind != MORE_KIND))
        sentences.append(f"The pod template changed ({kinds}).")
    return " ".join(sentences)


def event_note(incident: Incident) -> str:
    """The headline sentence, at most 1024 bytes of UTF-8, cut on a character boundary."""
    note = _one_line(redact(_headline(incident)))
    encoded = note.encode("utf-8")
    if len(encoded) <= EVENT_NOTE_MAX_BYTES:
        return note
    room = EVENT_NOTE_MAX_BYTES - len(ELLIPSIS.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + ELLIPSIS


# --- the stdout JSON record -----------------------------------------------------------------


def incident_record(incident: Incident) -> dict[str, Any]:
    evidence = incident.evidence
    gitops = evidence.gitops
    return {
        "event": "incident",
        "schema": SCHEMA_VERSION,
        "kind": _value(incident.kind),
        "priority": _value(incident.priority) if incident.priority else None,
        "rule": incident.rule,
        "namespace": incident.namespace,
        "deployment": incident.deployment,
        "revision": int(incident.revision),
        "replicaset": incident.replicaset,
        "deployment_uid": incident.deployment_uid,
        "replicaset_uid": incident.replicaset_uid,
        "rollout_started_at": iso_utc(incident.rollout_started_at),
        "error_count": _number(incident.error_count),
        "threshold": incident.threshold,
        "window_seconds": incident.window_seconds,
        "detected_at": iso_utc(incident.detected_at),
        "previous_revision": incident.previous_revision,
        "signals": [_value(signal) for signal in incident.signals],
        "summary": summary(incident),
        "recommended_action": recommended_action(incident),
        "rollback_command": rollback_command(incident),
        "confidence": incident.confidence,
        "confidence_reasons": list(incident.confidence_reasons),
        # What happens to the fix (REMEDIATION_MODE); the buttons' tokens never appear here.
        "remediation": None if incident.remediation is None else {
            "action": incident.remediation.action,
            "to_revision": incident.remediation.to_revision,
            "decision": incident.remediation.outcome,
            "reason": incident.remediation.reason,
            "guardrail": incident.remediation.guardrail,
            "dry_run": incident.remediation.dry_run,
            "target": incident.remediation.target,
        },
        "evidence": {
            "attribution": _value(evidence.attribution),
            "new_revision_errors": _number(evidence.new_revision_errors),
            "other_errors": _number(evidence.other_errors),
            "error_rate_per_minute": _number(evidence.error_rate_per_minute),
            "baseline_per_minute": (
                None if evidence.baseline_per_minute is None
                else _number(evidence.baseline_per_minute)
            ),
            "baseline_window_seconds": evidence.baseline_window_seconds,
            "baseline_lookback_seconds": evidence.baseline_lookback_seconds,
            "baseline_excluded_revisions": list(evidence.baseline_excluded_revisions),
            "baseline_absent": evidence.baseline_absent,
            "rollout_start_source": _value(evidence.rollout_start_source),
            "affected_pods": list(evidence.affected_pods),
            "pod_problems": [
                {"pod": pod, "problem": _value(problem)} for pod, problem in evidence.pod_problems
            ],
            "progress_message": (
                None if evidence.progress_message is None
                else redact(evidence.progress_message)
            ),
            "other_revisions_in_window": list(evidence.other_revisions_in_window),
            "signatures": [signature_dict(s) for s in evidence.signatures],
            "signature_gap": evidence.signature_gap,
            "changes": [
                {"kind": c.kind, "container": c.container, "detail": c.detail}
                for c in evidence.changes
            ],
            "gitops": (
                None if gitops is None
                else {
                    "tool": _value(gitops.tool),
                    "app": gitops.app,
                    "app_namespace": gitops.app_namespace,
                }
            ),
            "alerts": [alert_dict(alert) for alert in evidence.alerts],
            "causes": causes_json(evidence.causes),
            "blast_radius": blast_radius_json(evidence.blast_radius),
            "causality": causality_json(evidence.causality),
        },
    }


# --- Slack Block Kit --------------------------------------------------------------------------


def _decision(incident: Incident) -> str:
    how = "roll back"
    if incident.evidence.gitops is not None:
        how = f"roll back via {incident.evidence.gitops.name}"
    cause = foreign_cause(incident)
    if cause is not None:
        how = (f"roll back {cause.change.name}" if cause.action == "rollback"
               else f"likely {cause.change.kind} {cause.change.name}")
    priority = f"[{_value(incident.priority)}] " if incident.priority else ""
    return (
        f":rotating_light: {priority}{incident.deployment} rev {incident.revision} broke in "
        f"{incident.namespace}: {how}"
    )


def _section(title: str, lines: list[str]) -> dict[str, Any]:
    """A mrkdwn section with a bold title; whole lines are kept while they fit the limit.

    ``lines`` are already escaped mrkdwn. Packing whole lines (rather than cutting the text)
    keeps code spans and entities intact; what does not fit is counted in a last line.
    """
    text = f"*{title}*"
    for index, line in enumerate(lines):
        line = _truncate_escaped(line, SLACK_LINE_MAX_CHARS)
        remaining = len(lines) - index
        more = f"\n…and {remaining - 1} more" if remaining > 1 else ""
        # Keep room for the "…and N more" line in case a later line does not fit.
        if len(text) + 1 + len(line) + len(more) > SLACK_SECTION_MAX_CHARS:
            text += f"\n…and {remaining} more"
            break
        text += "\n" + line
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _signal_lines(incident: Incident) -> list[str]:
    evidence = incident.evidence
    lines = []
    for signal in incident.signals:
        if signal == Signal.ERROR_SPIKE:
            lines.append(
                f"• Error spike: {_count(incident.error_count)} error lines in "
                f"{duration(incident.window_seconds)} (threshold {incident.threshold}), "
                f"{_rate(evidence.error_rate_per_minute)}/min"
            )
        elif signal == Signal.POD_HEALTH:
            lines.append(f"• Pod health: {mrkdwn_escape(_pod_health_phrase(incident))}")
        elif signal == Signal.ALERT:
            for alert in evidence.alerts:
                line = (f"• Alert {mrkdwn_escape(alert.name or alert.fingerprint)} firing since "
                        f"{_clock(alert.starts_at)}")
                about = alert.annotation("summary") or alert.annotation("description")
                if about:
                    line += ": " + mrkdwn_escape(_truncate(_one_line(redact(about)),
                                                           SLACK_EXAMPLE_MAX_CHARS))
                lines.append(line)
        elif signal == Signal.PROGRESS_DEADLINE:
            line = "• Progress deadline exceeded"
            if evidence.progress_message:
                message = _truncate(_one_line(redact(evidence.progress_message)),
                                    SLACK_EXAMPLE_MAX_CHARS)
                line += f": {mrkdwn_escape(message)}"
            lines.append(line)
    if incident.priority is not None:
        lines.append(f"• Priority {_value(incident.priority)}"
                     + (f" (rule {mrkdwn_escape(incident.rule)})" if incident.rule else ""))
    if incident.confidence is not None:
        lines.append(f"• Confidence {incident.confidence:.2f}: "
                     + mrkdwn_escape("; ".join(incident.confidence_reasons)))
    return lines


def _correlation_lines(incident: Incident) -> list[str]:
    evidence = incident.evidence
    lines = [
        f"• Revision {incident.revision} ({mrkdwn_escape(incident.replicaset)}) rolled out at "
        f"{_clock(incident.rollout_started_at)}; "
        f"detected {duration(_since_rollout(incident))} later"
    ]
    if evidence.baseline_absent is not None:
        lines.append(f"• No healthy baseline ({mrkdwn_escape(evidence.baseline_absent)}): "
                     f"judged against the threshold alone; now "
                     f"{_rate(evidence.error_rate_per_minute)}/min")
    elif evidence.baseline_per_minute is not None:
        lookback = (
            f" (over the {duration(evidence.baseline_window_seconds)} before)"
            if evidence.baseline_window_seconds
            else ""
        )
        if evidence.baseline_excluded_revisions:
            lookback += (f", the last healthy state, before revision "
                         f"{_revisions(evidence.baseline_excluded_revisions)} (judged bad)")
        lines.append(
            f"• Before the rollout: {_rate(evidence.baseline_per_minute)}/min{lookback}; "
            f"now {_rate(evidence.error_rate_per_minute)}/min"
        )
    if evidence.attribution == Attribution.WORKLOAD_TOTAL:
        lines.append("• Logs carry no pod identity: the workload's total was used")
    else:
        line = f"• {_count(evidence.new_revision_errors)} errors from the new revision's pods"
        if evidence.other_errors:
            line += f", {_count(evidence.other_errors)} from other ReplicaSets"
        lines.append(line)
    if evidence.other_revisions_in_window:
        lines.append(
            f"• Other revisions rolled out in this window: "
            f"{_revisions(evidence.other_revisions_in_window)} (errors may be theirs)"
        )
    return lines


def _impact_lines(incident: Incident) -> list[str]:
    evidence = incident.evidence
    lines = []
    if evidence.affected_pods:
        shown = ", ".join(mrkdwn_escape(p) for p in evidence.affected_pods[:SLACK_PODS_LISTED])
        extra = len(evidence.affected_pods) - SLACK_PODS_LISTED
        more = f" and {extra} more" if extra > 0 else ""
        lines.append(
            f"• {_plural(len(evidence.affected_pods), 'pod')} of the new revision: {shown}{more}"
        )
    for problem, pods in _pod_problem_counts(incident):
        lines.append(f"• {mrkdwn_escape(problem)} on {_plural(pods, 'pod')}")
    lines.append(
        f"• {_count(incident.error_count)} error lines in the last "
        f"{duration(incident.window_seconds)} ({_rate(evidence.error_rate_per_minute)}/min) in "
        f"{mrkdwn_escape(incident.namespace)}/{mrkdwn_escape(incident.deployment)}"
    )
    lines.append(f"• The new revision has been live for {duration(_since_rollout(incident))}")
    if evidence.blast_radius:
        names = blast_names(evidence.blast_radius, namespace=incident.namespace)
        lines.append(f"• Also failing: {mrkdwn_escape(', '.join(names))} (calling "
                     f"{mrkdwn_escape(incident.deployment)}, directly or through others)")
    return lines


def _action_lines(incident: Incident) -> list[str]:
    owner = incident.evidence.gitops
    undo = rollback_command(incident)
    command = rule_command(incident)
    cause = foreign_cause(incident)
    if cause is not None:
        return _foreign_action_lines(incident, cause, undo)
    if command is not None:
        return [f"{ACTION_ADVICE.get(incident.rule_action or '', 'Run')} (rule "
                f"{mrkdwn_escape(incident.rule or '')}):", _code_block(command),
                f"Or roll back to {_target(incident)}:", _code_block(undo)]
    if owner is None:
        return [f"Roll back to {_target(incident)}:", _code_block(undo)]
    app = mrkdwn_escape(owner.app)
    if owner.tool == GitOpsTool.ARGO_CD:
        return [
            f"Managed by Argo CD app {app}: a manual undo would be reverted at the next sync.",
            "Roll back through Argo CD (auto-sync must be off), or revert the commit in Git:",
            _code_block(owner.rollback_commands()[0]),
            "Last resort, with auto-sync disabled:",
            _code_block(undo),
        ]
    return [
        f"Managed by the {mrkdwn_escape(owner.object_name)}: a manual undo would be reverted "
        "at the next reconciliation.",
        "Revert the commit in Git. To undo by hand, suspend it first and resume it once Git "
        "is fixed:",
        _code_block("\n".join(owner.flux_commands("suspend") + owner.flux_commands("resume"))),
        "Last resort, after suspending:",
        _code_block(undo),
    ]


def _foreign_action_lines(incident: Incident, cause: Cause, undo: str) -> list[str]:
    change = cause.change
    what = mrkdwn_escape(f"{change.kind} {change.name}")
    lines = [f"The likeliest cause is {what} ({percent(cause.score)}), not this rollout."]
    sentence, command = cause_step(cause)
    lines.append(mrkdwn_escape(sentence) + (":" if command else "."))
    if command:
        lines.append(_code_block(command))
    lines += [f"Rolling back {mrkdwn_escape(incident.deployment)} would not undo it; should it "
              "be needed too:", _code_block(undo)]
    return lines


def cause_lines(causes: tuple[Cause, ...] | list[Cause]) -> list[str]:
    """Each cause: its rank, score and one-line change, its reasons, its command in code."""
    lines = []
    for rank, cause in enumerate(causes, start=1):
        summary_text = _truncate(_one_line(redact(change_summary(cause.change))),
                                 SLACK_EXAMPLE_MAX_CHARS)
        lines.append(f"*{rank}. {percent(cause.score)}* {mrkdwn_escape(summary_text)}")
        for reason in cause.reasons[:SLACK_CAUSE_REASONS]:
            lines.append("      ◦ " + mrkdwn_escape(_truncate(_one_line(reason),
                                                               SLACK_EXAMPLE_MAX_CHARS)))
        if cause.command:
            lines.append("      " + _code_span(cause.command))
    return lines


def causes_blocks(causes: tuple[Cause, ...] | list[Cause]) -> list[dict[str, Any]]:
    """The "Likely causes" section of a Slack message; none when there is no cause."""
    if not causes:
        return []
    return [_section("Likely causes", cause_lines(causes))]


def _signature_lines(incident: Incident) -> list[str]:
    signatures = sorted(incident.evidence.signatures, key=lambda s: (not s.new, -s.count))
    lines = []
    for signature in signatures[:SLACK_TOP_SIGNATURES]:
        marker = " new" if signature.new else ""
        example = _truncate(_one_line(redact(signature.example)), SLACK_EXAMPLE_MAX_CHARS)
        lines.append(f"• {signature.count}×{marker}: {_code_span(example)}")
    hidden = len(signatures) - SLACK_TOP_SIGNATURES
    if hidden > 0:
        lines.append(f"…and {hidden} more signatures")
    gap = incident.evidence.signature_gap
    if gap is not None:
        lines.append(f"_Sampled short: {mrkdwn_escape(SIGNATURE_GAPS.get(gap, gap))}._")
    return lines


def _change_lines(incident: Incident) -> list[str]:
    lines = []
    for change in incident.evidence.changes:
        where = f" ({mrkdwn_escape(change.container)})" if change.container else ""
        detail = mrkdwn_escape(_truncate(_one_line(change.detail), SLACK_EXAMPLE_MAX_CHARS))
        lines.append(f"• {mrkdwn_escape(change.kind)}{where}: {detail}")
    return lines


def _context(texts: list[str]) -> dict[str, Any]:
    elements = [
        {"type": "mrkdwn", "text": _truncate_escaped(text, SLACK_SECTION_MAX_CHARS)}
        for text in texts[:SLACK_CONTEXT_MAX_ELEMENTS]
    ]
    return {"type": "context", "elements": elements}


# How each action reads: in advice, on the Approve button, and while it runs.
ACTION_ADVICE = {
    "rollback": "Roll back", "restart": "Restart the rollout", "pause": "Pause the rollout",
    "scale": "Scale", "delete-pod": "Delete the crash-looping pod (its controller recreates it)",
    "delete-stuck-pods": "Delete the pods stuck Terminating",
}
ACTION_BUTTONS = {
    "restart": "Restart", "pause": "Pause the rollout", "scale": "Scale",
    "delete-pod": "Delete the pod", "delete-stuck-pods": "Delete the stuck pods",
}
ACTION_RUNNING = {
    "rollback": "rolling back now", "restart": "restarting now", "pause": "pausing now",
    "scale": "scaling now", "delete-pod": "deleting the pod now",
    "delete-stuck-pods": "deleting the stuck pods now",
}
REMEDIATION_HEADINGS = {
    "ask": "Remediation: waiting for an approval",
    "notify_only": "Remediation: not proposed",
    "refuse": "Remediation: refused by a guardrail",
}


def remediation_blocks(remediation: RemediationView) -> list[dict[str, Any]]:
    """The decision on the fix, and the Approve / Reject buttons when it asks. A button's
    ``action_id`` starts with ``approve`` or ``reject``; its value is a one-time token."""
    if remediation.outcome == "act":
        heading = f"Remediation: {ACTION_RUNNING.get(remediation.action, 'acting now')}"
    else:
        heading = REMEDIATION_HEADINGS.get(remediation.outcome, "Remediation")
    if remediation.dry_run:
        heading += " (dry run: validated by the API server, nothing persisted)"
    blocks: list[dict[str, Any]] = [_section(heading, [f"• {mrkdwn_escape(remediation.reason)}"])]
    if remediation.approve_token and remediation.reject_token:
        if remediation.action == "rollback":
            target = f"revision {remediation.to_revision}" if remediation.to_revision \
                else "before"
            label = f"Approve: Roll back to {target}"
            if remediation.target:
                # Another Deployment than the incident's: the button says which.
                label = (f"Approve: Roll back {remediation.target.rsplit('/', 1)[-1]} to "
                         f"{target}")
        else:
            label = f"Approve: {ACTION_BUTTONS.get(remediation.action, remediation.action)}"
        blocks.append({"type": "actions", "block_id": "remediation", "elements": [
            {"type": "button", "action_id": f"approve_{remediation.action}", "style": "danger",
             "text": {"type": "plain_text", "text": _truncate(label, 75)},
             "value": remediation.approve_token},
            {"type": "button", "action_id": "reject",
             "text": {"type": "plain_text", "text": "Reject"},
             "value": remediation.reject_token},
        ]})
    return blocks


def slack_payload(incident: Incident) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus a plain ``text`` fallback."""
    decision = _decision(incident)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(decision, SLACK_HEADER_MAX_CHARS),
                "emoji": True,
            },
        },
        _section("Signal", _signal_lines(incident)),
        _section("Correlation to rollout", _correlation_lines(incident)),
        _section("Impact", _impact_lines(incident)),
        _section("Recommended action", _action_lines(incident)),
    ]
    if incident.remediation is not None:
        blocks.extend(remediation_blocks(incident.remediation))
    evidence = incident.evidence
    if evidence.signatures or evidence.signature_gap or evidence.changes or evidence.causes:
        blocks.append({"type": "divider"})
    if evidence.signatures or evidence.signature_gap:
        blocks.append(_section("Top error signatures", _signature_lines(incident)))
    if evidence.changes:
        blocks.append(_section("What changed", _change_lines(incident)))
    blocks.extend(causes_blocks(evidence.causes))
    blocks.extend(causality_blocks(evidence.causality, evidence.blast_radius,
                                   namespace=incident.namespace))
    blocks.append(
        _context([
            f"Detected {mrkdwn_escape(iso_utc(incident.detected_at))}",
            f"rollout began {mrkdwn_escape(iso_utc(incident.rollout_started_at))}",
            f"attribution: {_value(evidence.attribution)}",
        ])
    )
    fallback = mrkdwn_escape(f"{decision}. {summary(incident)}")
    return {
        "text": _truncate_escaped(fallback, SLACK_FALLBACK_MAX_CHARS),
        "blocks": blocks[:SLACK_MAX_BLOCKS],
    }


def _text_lines(mrkdwn: str) -> list[str]:
    lines = []
    for line in mrkdwn.split("\n"):
        line = line.replace("```", "")
        if len(line) > 2 and line.startswith("*") and line.endswith("*") and "*" not in line[1:-1]:
            line = line[1:-1]
        lines.append(_mrkdwn_unescape(line))
    return lines


def slack_text(payload: dict[str, Any]) -> str:
    """The payload as a person reads it: blocks flattened to plain lines, entities unescaped."""
    lines: list[str] = []
    for block in payload.get("blocks", ()):
        kind = block.get("type")
        if kind == "header":
            lines.append(block["text"]["text"])
        elif kind == "section":
            if lines:
                lines.append("")
            lines.extend(_text_lines(block["text"]["text"]))
        elif kind == "actions":  # buttons, as a person sees them
            lines.append("  ".join(f"[ {e.get('text', {}).get('text', '')} ]"
                                   for e in block.get("elements", ())))
        elif kind == "context":
            texts = [_mrkdwn_unescape(e.get("text", "")) for e in block.get("elements", ())]
            lines.append("")
            lines.append(" · ".join(texts))
    if not lines:
        return _mrkdwn_unescape(payload.get("text", ""))
    return "\n".join(lines)
