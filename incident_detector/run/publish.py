"""What a tick tells the dashboard's live feed: each rollout's error rate for the chart, a
verdict that changed, an incident recorded (rollout, alert or change), an audited action."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..judge.correlator import Assessment
from ..model import Incident
from ..store.journal import AuditRow
from .health import iso

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector

log = structlog.get_logger("incident_detector")


def publish_assessments(det: Detector, now: datetime, assessments: Sequence[Assessment], *,
                        complete: bool = True) -> None:
    """Each rollout's error rate for the chart, and a verdict that changed, to the feed.
    A tick's assessments are ``complete`` (every rollout in its window): the rollouts it
    does not name are forgotten; a fast look names only the young ones."""
    window_minutes = det.rules.error_window_seconds / 60.0
    keys = []
    for a in assessments:
        key = (a.namespace, a.deployment, a.revision)
        keys.append(key)
        det.series.add(key, now, None if a.error_count is None
                       else round(a.error_count / window_minutes, 3))
        if det.verdicts.get(key) != a.verdict.value:
            det.verdicts[key] = a.verdict.value
            log.debug("rollout.verdict", namespace=a.namespace, deployment=a.deployment,
                      revision=a.revision, verdict=a.verdict.value,
                      signals=[s.value for s in a.signals], errors=a.error_count,
                      baseline_per_minute=a.baseline_per_minute,
                      age_seconds=round(a.age_seconds, 1), reasons=list(a.reasons))
            det.live.publish("verdict", {"namespace": a.namespace,
                                         "deployment": a.deployment,
                                         "revision": a.revision,
                                         "verdict": a.verdict.value, "at": iso(now)})
    if not complete:
        return
    det.series.keep(keys)
    current = set(keys)
    for key in [k for k in det.verdicts if k not in current]:
        del det.verdicts[key]


def publish_incident(det: Detector, incident: Incident) -> None:
    """A rollout incident recorded at this tick (or fast look)."""
    det.live.publish("incident", {
        "kind": incident.kind.value, "namespace": incident.namespace,
        "deployment": incident.deployment, "revision": incident.revision,
        "priority": incident.priority.value if incident.priority else None,
        "at": iso(incident.detected_at)})


def noticed(det: Detector, key: str, record: dict[str, Any]) -> None:
    """An alert or change incident the outbox recorded: analysed when an analyst is there,
    and published."""
    if det.analyst is not None and record.get("kind") in ("alert", "change"):
        det.analyst.analyse_later(key, record)
    det.live.publish("incident", {"kind": record.get("kind"), "key": key,
                                  "namespace": record.get("namespace"),
                                  "deployment": record.get("deployment"),
                                  "priority": record.get("priority"),
                                  "at": record.get("detected_at")})


def audited(det: Detector, row: AuditRow) -> None:
    det.live.publish("action", row.as_dict())
