"""Pure rendering of an LLM analysis: the stdout JSON line and the Slack follow-up.

The analysis is text an LLM wrote: in Slack it is escaped like any outside text (a ``<!channel>``
or a link in it stays literal), and passed through ``redact`` once more, although the model only
ever saw redacted evidence. Placeholders such as ``<IP_1>`` are shown as they are: their
mapping never leaves the process.
"""

from __future__ import annotations

from typing import Any

from ..judge.analysis import AnalysisResult
from ..redact import redact
from .blocks import SLACK_FALLBACK_MAX_CHARS, SLACK_SECTION_MAX_CHARS, mrkdwn_escape

SCHEMA_VERSION = 1


def analysis_record(result: AnalysisResult) -> dict[str, Any]:
    """The ``{"event": "analysis", ...}`` line on stdout."""
    return {"event": "analysis", "schema": SCHEMA_VERSION, **result.as_dict()}


def _subject(result: AnalysisResult) -> str:
    revision = f" rev {result.revision}" if result.revision else ""
    return f"{result.deployment}{revision} in {result.namespace}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(result: AnalysisResult) -> dict[str, Any] | None:
    """The follow-up of a successful analysis (a thread reply with a bot token, a second
    message with a webhook); None for a failed one, which is only logged and shown."""
    analysis = result.analysis
    if analysis is None:
        return None
    cause = mrkdwn_escape(redact(" ".join(analysis.likely_cause.split())))
    action = analysis.suggested_action
    heading = (f":mag: *LLM analysis* of {mrkdwn_escape(_subject(result))} "
               f"(model {mrkdwn_escape(result.model)}, confidence {analysis.confidence:.2f})")
    lines = [
        heading,
        f"*Likely cause:* {cause}",
        f"*Suggested action:* {mrkdwn_escape(action)}"
        + (" (none of the allowed actions)" if action == "none" else ""),
    ]
    note = ("Advice only: the detector's own evidence and guardrails decide; this analysis can "
            "only make an automatic action wait for an approval, never allow one.")
    text = _cut("\n".join(lines), SLACK_SECTION_MAX_CHARS)
    fallback = mrkdwn_escape(redact(
        f"LLM analysis of {_subject(result)}: {' '.join(analysis.likely_cause.split())} "
        f"(confidence {analysis.confidence:.2f}, suggested action {action})"))
    return {
        "text": _cut(fallback, SLACK_FALLBACK_MAX_CHARS),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]},
        ],
    }
