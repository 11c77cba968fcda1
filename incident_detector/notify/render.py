"""Pure rendering of an ``Incident``: the stdout JSON record, the Slack payload, the Event note.

Every function here is a function of the incident alone: no clock, no I/O, no logging. Times are
shown in UTC so that the same incident renders the same way on every host.

Text that came from outside (sampled log lines, their fingerprints, Kubernetes' progress message)
goes through ``redact.redact`` here too: the signatures are redacted when they are computed, and
this second pass keeps every renderer safe whatever builds the incident.

The pieces every renderer shares live beside it: ``formats`` (durations, UTC times, numbers),
``blocks`` (Block Kit's limits, escaping and blocks), ``records`` (the JSON of a signature or an
alert), ``causes_render`` (ranked causes and causality), ``advice`` (the rollback and what to do)
and ``remediation_render`` (the decision on the fix and its buttons).
"""

from __future__ import annotations

from typing import Any

from ..judge.causality import blast_names
from ..judge.changes import MORE_KIND
from ..model import Alert, Attribution, Cause, GitOpsTool, Incident, SIGNATURE_GAPS, Signal
from ..redact import redact

from .advice import (ACTION_ADVICE, foreign_cause, recommended_action, rollback_command,
                     rollback_target, rule_command)
from .blocks import (SLACK_EXAMPLE_MAX_CHARS, SLACK_HEADER_MAX_CHARS, SLACK_PODS_LISTED,
                     SLACK_TOP_SIGNATURES, code_block, code_span, context, message, mrkdwn_escape,
                     section)
from .causes_render import (blast_radius_json, causality_blocks, causality_json, cause_step,
                            causes_blocks, causes_json, percent)
from .formats import (ELLIPSIS, as_utc, clock_time, count_text, duration, iso_utc, json_number,
                      one_line, plural, rate_text, truncate, wire_value)
from .records import SCHEMA_VERSION, alert_dict, signature_dict
from .remediation_render import remediation_blocks

# Callers and tests find these here, where the rollout incident's rendering once defined them.
from .blocks import (SLACK_FALLBACK_MAX_CHARS, SLACK_MAX_BLOCKS,  # noqa: F401  (re-exported)
                     SLACK_SECTION_MAX_CHARS, slack_text)
from .remediation_render import ACTION_BUTTONS  # noqa: F401  (re-exported)

# The note of an events.k8s.io/v1 Event is validated by the API server to this many bytes.
EVENT_NOTE_MAX_BYTES = 1024


# --- plain-English summary -------------------------------------------------------------------


def _since_rollout(incident: Incident) -> float:
    """Seconds from the rollout's start to detection."""
    return (as_utc(incident.detected_at) - as_utc(incident.rollout_started_at)).total_seconds()


def _pod_problem_counts(incident: Incident) -> list[tuple[str, int]]:
    """(problem, number of distinct pods) in first-seen order."""
    pods_by_problem: dict[str, set[str]] = {}
    for pod, problem in incident.evidence.pod_problems:
        pods_by_problem.setdefault(str(wire_value(problem)), set()).add(pod)
    return [(problem, len(pods)) for problem, pods in pods_by_problem.items()]


def _error_phrase(incident: Incident) -> str:
    return (
        f"{count_text(incident.error_count)} error "
        f"{'line' if incident.error_count == 1 else 'lines'} in the last "
        f"{duration(incident.window_seconds)} (threshold {incident.threshold})"
    )


def _pod_health_phrase(incident: Incident) -> str:
    problems = _pod_problem_counts(incident)
    if not problems:
        return "unhealthy pods"
    return ", ".join(f"{problem} on {plural(n, 'pod')}" for problem, n in problems)


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


def _headline(incident: Incident) -> str:
    """The first sentence: what is broken, by which signals, when relative to the rollout."""
    return (
        f"Rollout of {incident.deployment} revision {incident.revision} "
        f"({incident.replicaset}) in {incident.namespace} is failing: "
        f"{'; '.join(_signal_phrases(incident))}; "
        f"detected {duration(_since_rollout(incident))} after the rollout "
        f"began at {clock_time(incident.rollout_started_at)}."
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
        return (f"That is {rate_text(rate)}/min, {direction} {rate_text(before)}/min in the last "
                f"healthy state, before revision "
                f"{_revisions(evidence.baseline_excluded_revisions)} "
                "(judged bad).")
    lookback = (
        f" over the {duration(evidence.baseline_window_seconds)} before"
        if evidence.baseline_window_seconds
        else " before"
    )
    return (f"That is {rate_text(rate)}/min, {direction} {rate_text(before)}/min{lookback} "
            "the rollout.")


def _attribution_sentence(incident: Incident) -> str:
    evidence = incident.evidence
    if evidence.attribution == Attribution.WORKLOAD_TOTAL:
        return (
            "The logs carry no pod identity, so the workload's total error count was used "
            "rather than the new revision's alone."
        )
    sentence = (f"The new revision's pods wrote {count_text(evidence.new_revision_errors)} of "
                "the errors")
    if evidence.other_errors:
        sentence += f"; pods of other ReplicaSets wrote {count_text(evidence.other_errors)}"
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
        sentences.append(f"Kubernetes reports: {one_line(redact(evidence.progress_message))}")
    if evidence.other_revisions_in_window:
        sentences.append(
            f"Other revisions were rolled out in the same window "
            f"({_revisions(evidence.other_revisions_in_window)}), so some errors may be theirs."
        )
    new_signatures = sum(1 for s in evidence.signatures if s.new)
    if new_signatures:
        sentences.append(
            f"{plural(new_signatures, 'error signature')} did not occur before the rollout."
        )
    if evidence.changes:
        kinds = ", ".join(dict.fromkeys(change.kind for change in evidence.changes
                                        if change.kind != MORE_KIND))
        sentences.append(f"The pod template changed ({kinds}).")
    return " ".join(sentences)


def event_note(incident: Incident) -> str:
    """The headline sentence, at most 1024 bytes of UTF-8, cut on a character boundary."""
    note = one_line(redact(_headline(incident)))
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
        "kind": wire_value(incident.kind),
        "priority": wire_value(incident.priority) if incident.priority else None,
        "rule": incident.rule,
        "namespace": incident.namespace,
        "deployment": incident.deployment,
        "revision": int(incident.revision),
        "replicaset": incident.replicaset,
        "deployment_uid": incident.deployment_uid,
        "replicaset_uid": incident.replicaset_uid,
        "rollout_started_at": iso_utc(incident.rollout_started_at),
        "error_count": json_number(incident.error_count),
        "threshold": incident.threshold,
        "window_seconds": incident.window_seconds,
        "detected_at": iso_utc(incident.detected_at),
        "previous_revision": incident.previous_revision,
        "signals": [wire_value(signal) for signal in incident.signals],
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
            "attribution": wire_value(evidence.attribution),
            "new_revision_errors": json_number(evidence.new_revision_errors),
            "other_errors": json_number(evidence.other_errors),
            "error_rate_per_minute": json_number(evidence.error_rate_per_minute),
            "baseline_per_minute": (
                None if evidence.baseline_per_minute is None
                else json_number(evidence.baseline_per_minute)
            ),
            "baseline_window_seconds": evidence.baseline_window_seconds,
            "baseline_lookback_seconds": evidence.baseline_lookback_seconds,
            "baseline_excluded_revisions": list(evidence.baseline_excluded_revisions),
            "baseline_absent": evidence.baseline_absent,
            "rollout_start_source": wire_value(evidence.rollout_start_source),
            "affected_pods": list(evidence.affected_pods),
            "pod_problems": [
                {"pod": pod, "problem": wire_value(problem)}
                for pod, problem in evidence.pod_problems
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
                    "tool": wire_value(gitops.tool),
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
    priority = f"[{wire_value(incident.priority)}] " if incident.priority else ""
    return (
        f":rotating_light: {priority}{incident.deployment} rev {incident.revision} broke in "
        f"{incident.namespace}: {how}"
    )


def _signal_lines(incident: Incident) -> list[str]:
    evidence = incident.evidence
    lines = []
    for signal in incident.signals:
        if signal == Signal.ERROR_SPIKE:
            lines.append(
                f"• Error spike: {count_text(incident.error_count)} error lines in "
                f"{duration(incident.window_seconds)} (threshold {incident.threshold}), "
                f"{rate_text(evidence.error_rate_per_minute)}/min"
            )
        elif signal == Signal.POD_HEALTH:
            lines.append(f"• Pod health: {mrkdwn_escape(_pod_health_phrase(incident))}")
        elif signal == Signal.ALERT:
            for alert in evidence.alerts:
                line = (f"• Alert {mrkdwn_escape(alert.name or alert.fingerprint)} firing since "
                        f"{clock_time(alert.starts_at)}")
                about = alert.annotation("summary") or alert.annotation("description")
                if about:
                    line += ": " + mrkdwn_escape(truncate(one_line(redact(about)),
                                                          SLACK_EXAMPLE_MAX_CHARS))
                lines.append(line)
        elif signal == Signal.PROGRESS_DEADLINE:
            line = "• Progress deadline exceeded"
            if evidence.progress_message:
                message = truncate(one_line(redact(evidence.progress_message)),
                                   SLACK_EXAMPLE_MAX_CHARS)
                line += f": {mrkdwn_escape(message)}"
            lines.append(line)
    if incident.priority is not None:
        lines.append(f"• Priority {wire_value(incident.priority)}"
                     + (f" (rule {mrkdwn_escape(incident.rule)})" if incident.rule else ""))
    if incident.confidence is not None:
        lines.append(f"• Confidence {incident.confidence:.2f}: "
                     + mrkdwn_escape("; ".join(incident.confidence_reasons)))
    return lines


def _correlation_lines(incident: Incident) -> list[str]:
    evidence = incident.evidence
    lines = [
        f"• Revision {incident.revision} ({mrkdwn_escape(incident.replicaset)}) rolled out at "
        f"{clock_time(incident.rollout_started_at)}; "
        f"detected {duration(_since_rollout(incident))} later"
    ]
    if evidence.baseline_absent is not None:
        lines.append(f"• No healthy baseline ({mrkdwn_escape(evidence.baseline_absent)}): "
                     f"judged against the threshold alone; now "
                     f"{rate_text(evidence.error_rate_per_minute)}/min")
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
            f"• Before the rollout: {rate_text(evidence.baseline_per_minute)}/min{lookback}; "
            f"now {rate_text(evidence.error_rate_per_minute)}/min"
        )
    if evidence.attribution == Attribution.WORKLOAD_TOTAL:
        lines.append("• Logs carry no pod identity: the workload's total was used")
    else:
        line = f"• {count_text(evidence.new_revision_errors)} errors from the new revision's pods"
        if evidence.other_errors:
            line += f", {count_text(evidence.other_errors)} from other ReplicaSets"
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
            f"• {plural(len(evidence.affected_pods), 'pod')} of the new revision: {shown}{more}"
        )
    for problem, pods in _pod_problem_counts(incident):
        lines.append(f"• {mrkdwn_escape(problem)} on {plural(pods, 'pod')}")
    lines.append(
        f"• {count_text(incident.error_count)} error lines in the last "
        f"{duration(incident.window_seconds)} "
        f"({rate_text(evidence.error_rate_per_minute)}/min) in "
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
                f"{mrkdwn_escape(incident.rule or '')}):", code_block(command),
                f"Or roll back to {rollback_target(incident)}:", code_block(undo)]
    if owner is None:
        return [f"Roll back to {rollback_target(incident)}:", code_block(undo)]
    app = mrkdwn_escape(owner.app)
    if owner.tool == GitOpsTool.ARGO_CD:
        return [
            f"Managed by Argo CD app {app}: a manual undo would be reverted at the next sync.",
            "Roll back through Argo CD (auto-sync must be off), or revert the commit in Git:",
            code_block(owner.rollback_commands()[0]),
            "Last resort, with auto-sync disabled:",
            code_block(undo),
        ]
    return [
        f"Managed by the {mrkdwn_escape(owner.object_name)}: a manual undo would be reverted "
        "at the next reconciliation.",
        "Revert the commit in Git. To undo by hand, suspend it first and resume it once Git "
        "is fixed:",
        code_block("\n".join(owner.flux_commands("suspend") + owner.flux_commands("resume"))),
        "Last resort, after suspending:",
        code_block(undo),
    ]


def _foreign_action_lines(incident: Incident, cause: Cause, undo: str) -> list[str]:
    change = cause.change
    what = mrkdwn_escape(f"{change.kind} {change.name}")
    lines = [f"The likeliest cause is {what} ({percent(cause.score)}), not this rollout."]
    sentence, command = cause_step(cause)
    lines.append(mrkdwn_escape(sentence) + (":" if command else "."))
    if command:
        lines.append(code_block(command))
    lines += [f"Rolling back {mrkdwn_escape(incident.deployment)} would not undo it; should it "
              "be needed too:", code_block(undo)]
    return lines


def _signature_lines(incident: Incident) -> list[str]:
    signatures = sorted(incident.evidence.signatures, key=lambda s: (not s.new, -s.count))
    lines = []
    for signature in signatures[:SLACK_TOP_SIGNATURES]:
        marker = " new" if signature.new else ""
        example = truncate(one_line(redact(signature.example)), SLACK_EXAMPLE_MAX_CHARS)
        lines.append(f"• {signature.count}×{marker}: {code_span(example)}")
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
        detail = mrkdwn_escape(truncate(one_line(change.detail), SLACK_EXAMPLE_MAX_CHARS))
        lines.append(f"• {mrkdwn_escape(change.kind)}{where}: {detail}")
    return lines


def slack_payload(incident: Incident) -> dict[str, Any]:
    """An incoming-webhook body: Block Kit blocks plus a plain ``text`` fallback."""
    decision = _decision(incident)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(decision, SLACK_HEADER_MAX_CHARS),
                "emoji": True,
            },
        },
        section("Signal", _signal_lines(incident)),
        section("Correlation to rollout", _correlation_lines(incident)),
        section("Impact", _impact_lines(incident)),
        section("Recommended action", _action_lines(incident)),
    ]
    if incident.remediation is not None:
        blocks.extend(remediation_blocks(incident.remediation))
    evidence = incident.evidence
    if evidence.signatures or evidence.signature_gap or evidence.changes or evidence.causes:
        blocks.append({"type": "divider"})
    if evidence.signatures or evidence.signature_gap:
        blocks.append(section("Top error signatures", _signature_lines(incident)))
    if evidence.changes:
        blocks.append(section("What changed", _change_lines(incident)))
    blocks.extend(causes_blocks(evidence.causes))
    blocks.extend(causality_blocks(evidence.causality, evidence.blast_radius,
                                   namespace=incident.namespace))
    blocks.append(
        context([
            f"Detected {mrkdwn_escape(iso_utc(incident.detected_at))}",
            f"rollout began {mrkdwn_escape(iso_utc(incident.rollout_started_at))}",
            f"attribution: {wire_value(evidence.attribution)}",
        ])
    )
    return message(blocks, f"{decision}. {summary(incident)}")


