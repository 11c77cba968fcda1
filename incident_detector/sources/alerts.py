"""Alertmanager's webhook notification (payload version 4) in, ``model.Alert`` values out.

Pure: bytes in, a frozen ``AlertNotification`` or a ``PayloadError`` out. The shape is the one
Alertmanager's webhook notifier sends (``notify/webhook``: ``template.Data`` plus ``version``,
``groupKey`` and ``truncatedAlerts``)::

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing",
     "receiver": "...", "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": "...",
     "alerts": [{"status": "firing", "labels": {...}, "annotations": {...},
                 "startsAt": "<RFC 3339>", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "...", "fingerprint": "<16 hex digits>"}]}

Fields the detector does not use are tolerated (Grafana adds ``orgId``, ``silenceURL``,
``values``...); the ones it needs are checked, and a refusal names exactly what is wrong
(``alerts[2].startsAt is not an RFC 3339 time``) because Alertmanager logs the answer's body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..model import Alert, AlertNotification, Pairs

SUPPORTED_VERSION = "4"
STATUSES = ("firing", "resolved")
# Go's zero time.Time: what Alertmanager sends as endsAt while an alert fires (it does not
# expose an end that has not been reached yet).
ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)
# RFC 3339 date-time (Go's time.RFC3339Nano writes it): the offset is required.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
# Quoted values in a reason are cut here: the reason is logged and sent back.
_QUOTE_MAX = 40


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook notification; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_webhook(body: bytes) -> AlertNotification:
    """The notification in ``body``, or ``PayloadError`` saying what is wrong with it.

    An alert without a ``fingerprint`` (a hand-made payload, or a sender older than
    Alertmanager 0.19) gets the one Alertmanager would have given it: ``label_fingerprint``
    of its labels, so the same label set always yields the same key.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not JSON: {exc.msg} at line {exc.lineno} column "
                           f"{exc.colno}") from None
    except (ValueError, RecursionError):
        # Integers beyond Python's digit limit; arrays nested past the recursion limit.
        raise PayloadError("body is not JSON the detector can read") from None
    if not isinstance(document, dict):
        raise PayloadError(f"body is a JSON {_json_type(document)}, not an object")

    version = document.get("version")
    if version is None:
        raise PayloadError(f'version is missing (Alertmanager sends "{SUPPORTED_VERSION}")')
    if not isinstance(version, str):
        raise PayloadError(f"version is a JSON {_json_type(version)}, not a string")
    if version != SUPPORTED_VERSION:
        raise PayloadError(f"version {_quote(version)} is not supported: only Alertmanager's "
                           f'webhook payload version "{SUPPORTED_VERSION}"')

    receiver = _optional_string(document, "receiver", "receiver")
    group_key = _optional_string(document, "groupKey", "groupKey")
    external_url = _optional_string(document, "externalURL", "externalURL")
    group_labels = _string_map(document.get("groupLabels"), "groupLabels")
    common_labels = _string_map(document.get("commonLabels"), "commonLabels")
    common_annotations = _string_map(document.get("commonAnnotations"), "commonAnnotations")
    truncated = document.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError("truncatedAlerts is not a non-negative integer")

    raw_alerts = document.get("alerts")
    if raw_alerts is None:
        raise PayloadError("alerts is missing")
    if not isinstance(raw_alerts, list):
        raise PayloadError(f"alerts is a JSON {_json_type(raw_alerts)}, not an array")
    alerts = tuple(_alert(item, f"alerts[{index}]", group_key=group_key, receiver=receiver)
                   for index, item in enumerate(raw_alerts))

    status = document.get("status")
    if status is None:
        # The group's status is derived anyway: firing while any of its alerts fires.
        status = "firing" if any(alert.firing for alert in alerts) else "resolved"
    elif status not in STATUSES:
        raise PayloadError(f'status must be "firing" or "resolved", not {_quote(status)}')

    return AlertNotification(
        version=version, status=status, receiver=receiver, group_key=group_key,
        group_labels=group_labels, common_labels=common_labels,
        common_annotations=common_annotations, external_url=external_url,
        truncated_alerts=truncated, alerts=alerts)


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (``model.LabelSet.Fingerprint`` of Prometheus'
    common library): 64-bit FNV-1a over the labels sorted by name, each name and value followed
    by the byte 0xff, written as 16 hexadecimal digits."""
    value = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8") + b"\xff":
                value = ((value ^ byte) * _FNV_PRIME) & 0xFFFF_FFFF_FFFF_FFFF
    return f"{value:016x}"


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211


def _alert(item: Any, where: str, *, group_key: str, receiver: str) -> Alert:
    if not isinstance(item, dict):
        raise PayloadError(f"{where} is a JSON {_json_type(item)}, not an object")
    status = item.get("status")
    if status is None:
        raise PayloadError(f"{where}.status is missing")
    if status not in STATUSES:
        raise PayloadError(f'{where}.status must be "firing" or "resolved", not {_quote(status)}')
    if item.get("labels") is None:
        raise PayloadError(f"{where}.labels is missing")
    labels = _string_map(item["labels"], f"{where}.labels")
    annotations = _string_map(item.get("annotations"), f"{where}.annotations")

    starts_at = _time(item.get("startsAt"), f"{where}.startsAt")
    if starts_at is None:
        raise PayloadError(f"{where}.startsAt is missing or the zero time")
    ends_at = _time(item.get("endsAt"), f"{where}.endsAt")

    fingerprint = _optional_string(item, "fingerprint", f"{where}.fingerprint")
    if not fingerprint:
        fingerprint = label_fingerprint(dict(labels))
    return Alert(
        fingerprint=fingerprint, status=status, starts_at=starts_at, ends_at=ends_at,
        labels=labels, annotations=annotations,
        generator_url=_optional_string(item, "generatorURL", f"{where}.generatorURL"),
        group_key=group_key, receiver=receiver)


def _time(value: Any, where: str) -> datetime | None:
    """An RFC 3339 time in UTC; None for an absent value or Go's zero time."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PayloadError(f"{where} is not an RFC 3339 time")
    text = value.upper().replace(" ", "T")
    try:
        parsed = datetime.fromisoformat(text)
        if parsed == ZERO_TIME:
            return None
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        # 2024-02-30, hour 25, or an offset that moves year 1 or 9999 out of range.
        raise PayloadError(f"{where} is not an RFC 3339 time") from None


def _string_map(value: Any, where: str) -> Pairs:
    """A JSON object of strings as sorted (name, value) pairs; null is an empty map (Go encodes
    a nil map as null)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise PayloadError(f"{where} is a JSON {_json_type(value)}, not an object")
    for name, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{where}.{_name(name)} is a JSON {_json_type(item)}, "
                               f"not a string")
    return tuple(sorted(value.items()))


def _optional_string(document: dict[str, Any], key: str, where: str) -> str:
    value = document.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{where} is a JSON {_json_type(value)}, not a string")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _quote(value: Any) -> str:
    """A string value as JSON, cut to a readable length; other values by their JSON type."""
    if not isinstance(value, str):
        return f"a JSON {_json_type(value)}"
    return json.dumps(value if len(value) <= _QUOTE_MAX else value[:_QUOTE_MAX] + "...")


def _name(name: str) -> str:
    # Label names are usually identifiers; anything else is quoted so the path stays readable.
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and len(name) <= _QUOTE_MAX:
        return name
    return _quote(name)
