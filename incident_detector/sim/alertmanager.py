"""What Alertmanager posts to a webhook receiver, for the scenarios' ``alerts:``.

The body is the webhook payload of version 4 as Alertmanager's notifier builds it (one group:
``receiver``, ``status``, ``alerts``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL``, ``groupKey``, ``truncatedAlerts``), and each alert's ``fingerprint`` is
Prometheus' label-set fingerprint: FNV-1a 64 over the sorted label names and values, each
followed by the 0xff separator, as 16 hex digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .scenario import AlertSpec

ZERO_TIME = "0001-01-01T00:00:00Z"
RECEIVER = "incident-detector"
EXTERNAL_URL = "http://alertmanager.monitoring.svc:9093"
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


def fingerprint(labels: Mapping[str, str]) -> str:
    value = _FNV_OFFSET
    for name in sorted(labels):
        for byte in name.encode() + bytes([_SEPARATOR]) + labels[name].encode() + bytes([_SEPARATOR]):
            value ^= byte
            value = (value * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def webhook_body(specs: Sequence[AlertSpec], *, t0: datetime, now: datetime) -> dict[str, Any] | None:
    """The notification Alertmanager sends at ``now`` for the alerts begun by then (None: none)."""
    alerts = []
    for spec in specs:
        starts = t0 + timedelta(seconds=spec.at)
        if starts > now:
            continue
        labels = {"alertname": spec.name, **spec.labels}
        resolved = spec.resolved_at is not None and t0 + timedelta(seconds=spec.resolved_at) <= now
        ends = _rfc3339(t0 + timedelta(seconds=spec.resolved_at)) if resolved else ZERO_TIME
        alerts.append({
            "status": "resolved" if resolved else "firing",
            "labels": labels, "annotations": dict(spec.annotations),
            "startsAt": _rfc3339(starts), "endsAt": ends,
            "generatorURL": f"http://prometheus.monitoring.svc:9090/graph?g0.expr={spec.name}",
            "fingerprint": fingerprint(labels),
        })
    if not alerts:
        return None
    common = dict(set.intersection(*(set(a["labels"].items()) for a in alerts)))
    annotations = dict(set.intersection(*(set(a["annotations"].items()) for a in alerts)))
    group = {k: v for k, v in common.items() if k == "namespace"}
    return {
        "version": "4", "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": RECEIVER, "groupLabels": group, "commonLabels": common,
        "commonAnnotations": annotations, "externalURL": EXTERNAL_URL, "alerts": alerts,
    }
