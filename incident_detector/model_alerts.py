"""Alertmanager's alerts, as its webhook sends them (re-exported by ``model``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

# Labels or annotations: (name, value) pairs, sorted by name.
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of an Alertmanager webhook notification (payload version 4).

    ``ends_at`` is None while Alertmanager does not know an end (it sends the zero time
    ``0001-01-01T00:00:00Z``). An alert's firing period is identified by its fingerprint and
    ``starts_at``: the same alert firing again later is a new period.
    """

    fingerprint: str
    status: str  # "firing" or "resolved"
    starts_at: datetime
    ends_at: datetime | None = None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    generator_url: str = ""
    group_key: str = ""
    receiver: str = ""

    @property
    def name(self) -> str:
        return self.label("alertname") or ""

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    def annotation(self, key: str) -> str | None:
        for name, value in self.annotations:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class AlertTarget:
    """The Deployment an alert is about, and which of its labels said so."""

    namespace: str
    deployment: str
    # e.g. "deployment", "pod", "service", "app": the label that named the workload.
    mapped_by: str



def alert_key(alert: Alert) -> str:
    """An alert's firing period, as text: ``alert/<fingerprint>/<startsAt in UTC>``."""
    return f"alert/{alert.fingerprint}/{alert.starts_at.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"



@dataclass(frozen=True, slots=True)
class Unmapped:
    """Why an alert names no watched Deployment; it is recorded and shown, not dropped.

    ``namespace`` is the namespace the alert named, when it named one (shown and filtered on).
    """

    reason: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class AlertNotification:
    """One webhook notification: a group of alerts as Alertmanager routed it."""

    version: str
    status: str
    receiver: str
    group_key: str
    group_labels: Pairs
    common_labels: Pairs
    common_annotations: Pairs
    external_url: str
    # Alerts left out because the receiver sets ``max_alerts`` (they are not in ``alerts``).
    truncated_alerts: int
    alerts: tuple[Alert, ...]

    @property
    def firing(self) -> int:
        return sum(1 for alert in self.alerts if alert.firing)

    @property
    def resolved(self) -> int:
        return len(self.alerts) - self.firing
