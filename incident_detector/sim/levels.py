"""The level Loki 3 gives a log line at ingestion (``discover_log_levels``, on by default), kept as
the structured metadata ``detected_level``.

As Loki's distributor does it (``pkg/distributor/field_detection.go``):

1. a level label of the stream (``level``, ``severity``, ``lvl``, ... ), normalized;
2. else, for a JSON object line, the first string field with one of those names (nested objects
   included, in document order); for a line with an ``=`` (logfmt), the field whose name matches
   one of them case-insensitively, the earlier name in the list winning;
3. a value that is not a known level (or no such field, or a line of neither kind) falls back to
   keywords in the text, *info first*: ``INFO retry succeeded after previous error`` is ``info``.
   Only bracketed or colon-suffixed error words count (``[error]``, ``ERR:``), not a bare ``error``;
4. nothing found: ``unknown``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DETECTED_LEVEL = "detected_level"
UNKNOWN = "unknown"
LEVEL_FIELDS = (
    "level", "LEVEL", "Level", "log.level", "severity", "SEVERITY", "Severity", "SeverityText",
    "lvl", "LVL", "Lvl", "severity_text", "Severity_Text", "SEVERITY_TEXT",
)
_LEVEL_FIELD_SET = frozenset(LEVEL_FIELDS)
_LOWER_FIELDS = tuple(field.lower() for field in LEVEL_FIELDS)
_NORMALIZED = {
    "trace": "trace", "trc": "trace",
    "debug": "debug", "dbg": "debug",
    "info": "info", "inf": "info", "information": "info",
    "warn": "warn", "wrn": "warn", "warning": "warn",
    "error": "error", "err": "error",
    "critical": "critical",
    "fatal": "fatal",
}
# (level, substrings) in the order Loki tries them.
_KEYWORDS = (
    ("info", ("info:", "INFO:", "[info]", "[INFO]", "info", "INFO")),
    ("error", ("err:", "ERR:", "[err]", "[ERR]", "[error]", "[ERROR]")),
    ("warn", ("warn:", "WARN:", "[warn]", "[WARN]", "[warning]", "[WARNING]", "warning",
              "WARNING")),
    ("critical", ("critical:", "CRITICAL:", "[critical]", "[CRITICAL]")),
    ("debug", ("debug:", "DEBUG:", "[debug]", "[DEBUG]", "debug", "DEBUG")),
)
_SPACE = " \t\n\r\v\f"


def detect_level(line: str, stream_labels: Mapping[str, str] | None = None) -> str:
    """``detected_level`` of ``line`` written to a stream with ``stream_labels``."""
    for field in LEVEL_FIELDS:
        if stream_labels and field in stream_labels:
            value = stream_labels[field]
            return _NORMALIZED.get(value.lower(), value)
    stripped = line.strip(_SPACE)
    if stripped.startswith("{") and stripped.endswith("}"):
        value = _json_level(stripped)
    elif "=" in line:
        value = _logfmt_level(line)
    else:
        return keyword_level(line)
    return _NORMALIZED.get((value or "").lower()) or keyword_level(line)


def keyword_level(line: str) -> str:
    for level, words in _KEYWORDS:
        if any(word in line for word in words):
            return level
    return UNKNOWN


def _json_level(text: str) -> str | None:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return _first_level_field(document) if isinstance(document, dict) else None


def _first_level_field(document: dict[str, Any]) -> str | None:
    for key, value in document.items():
        if isinstance(value, str) and key in _LEVEL_FIELD_SET:
            return value
        if isinstance(value, dict):
            found = _first_level_field(value)
            if found is not None:
                return found
    return None


def _logfmt_level(line: str) -> str | None:
    best, rank = None, len(_LOWER_FIELDS)
    for key, value in logfmt_pairs(line):
        lowered = key.lower()
        for index, field in enumerate(_LOWER_FIELDS[:rank]):
            if lowered == field:
                best, rank = value, index
                if index == 0:
                    return best
                break
    return best


def logfmt_pairs(line: str) -> list[tuple[str, str]]:
    """The key/value pairs of a logfmt line, up to the first syntax error (as go-logfmt reads)."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] <= " ":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and line[i] > " " and line[i] not in '="':
            i += 1
        key = line[start:i]
        if i < n and line[i] == '"' or not key:
            break  # a quote in a key, or a pair without a key: a syntax error ends the scan
        if i >= n or line[i] != "=":
            pairs.append((key, ""))
            continue
        i += 1
        if i < n and line[i] == '"':
            i += 1
            chars = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(line[i])
                i += 1
            if i >= n:
                break  # unterminated quoted value
            i += 1
            pairs.append((key, "".join(chars)))
        else:
            start = i
            while i < n and line[i] > " ":
                if line[i] in '="':
                    return pairs  # go-logfmt: unexpected '=' or '"' in a value
                i += 1
            pairs.append((key, line[start:i]))
    return pairs
