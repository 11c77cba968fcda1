"""Slack's Block Kit, pure: its limits, mrkdwn escaping, and the blocks every message is made of
(a titled section, a context line, code), and a payload read back as plain text.

Slack rejects the whole message when one limit is exceeded, so every block built here keeps to
them; the renderers only choose what to say.
"""

from __future__ import annotations

from typing import Any

from .formats import ELLIPSIS

# Block Kit limits: Slack rejects the whole message when one of them is exceeded.
SLACK_HEADER_MAX_CHARS = 150

SLACK_SECTION_MAX_CHARS = 3000

SLACK_MAX_BLOCKS = 50

SLACK_CONTEXT_MAX_ELEMENTS = 10

SLACK_FALLBACK_MAX_CHARS = 3000

# A phone shows a few lines per evidence item; the JSON record keeps everything.
SLACK_TOP_SIGNATURES = 5

SLACK_EXAMPLE_MAX_CHARS = 300

SLACK_LINE_MAX_CHARS = 1000

SLACK_PODS_LISTED = 5

SLACK_CAUSE_REASONS = 6


def mrkdwn_escape(text: str) -> str:
    """Slack's escaping: only ``&``, ``<`` and ``>`` are control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn_unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def truncate_escaped(text: str, limit: int) -> str:
    """Truncate already-escaped mrkdwn without leaving half an entity such as ``&am``."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


def code_span(text: str) -> str:
    # A backtick inside would close the span early; the look-alike keeps the text readable.
    return "`" + mrkdwn_escape(text.replace("`", "ˋ")) + "`"


def code_block(text: str) -> str:
    return "```" + mrkdwn_escape(text.replace("```", "ˋˋˋ")) + "```"


def section(title: str, lines: list[str]) -> dict[str, Any]:
    """A mrkdwn section with a bold title; whole lines are kept while they fit the limit.

    ``lines`` are already escaped mrkdwn. Packing whole lines (rather than cutting the text)
    keeps code spans and entities intact; what does not fit is counted in a last line.
    """
    text = f"*{title}*"
    for index, line in enumerate(lines):
        line = truncate_escaped(line, SLACK_LINE_MAX_CHARS)
        remaining = len(lines) - index
        more = f"\n…and {remaining - 1} more" if remaining > 1 else ""
        # Keep room for the "…and N more" line in case a later line does not fit.
        if len(text) + 1 + len(line) + len(more) > SLACK_SECTION_MAX_CHARS:
            text += f"\n…and {remaining} more"
            break
        text += "\n" + line
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(texts: list[str]) -> dict[str, Any]:
    elements = [
        {"type": "mrkdwn", "text": truncate_escaped(text, SLACK_SECTION_MAX_CHARS)}
        for text in texts[:SLACK_CONTEXT_MAX_ELEMENTS]
    ]
    return {"type": "context", "elements": elements}


def _text_lines(mrkdwn: str) -> list[str]:
    lines = []
    for line in mrkdwn.split("\n"):
        line = line.replace("```", "")
        if len(line) > 2 and line.startswith("*") and line.endswith("*") and "*" not in line[1:-1]:
            line = line[1:-1]
        lines.append(mrkdwn_unescape(line))
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
            texts = [mrkdwn_unescape(e.get("text", "")) for e in block.get("elements", ())]
            lines.append("")
            lines.append(" · ".join(texts))
    if not lines:
        return mrkdwn_unescape(payload.get("text", ""))
    return "\n".join(lines)


def message(blocks: list[dict[str, Any]], fallback: str) -> dict[str, Any]:
    """An incoming-webhook body: the blocks that fit Slack's count, and the plain ``fallback``
    (escaped here, cut to its limit) that notifications and old clients show."""
    return {"text": truncate_escaped(mrkdwn_escape(fallback), SLACK_FALLBACK_MAX_CHARS),
            "blocks": blocks[:SLACK_MAX_BLOCKS]}
