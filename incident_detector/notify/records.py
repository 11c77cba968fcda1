"""The JSON shapes shared by every stdout record: the schema version, an error signature, an
alert. Text that came from outside goes through ``redact`` again here."""

from __future__ import annotations

from typing import Any

from ..model import Alert, ErrorSignature
from ..redact import redact
from .formats import iso_utc

SCHEMA_VERSION = 1


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
