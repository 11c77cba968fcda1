"""What /status shows of the detector, read from what the loop published and the store holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from ..judge.rules import DEFAULT_RULES
from ..store.db import StoreUnavailable
from .health import iso
from .tick_report import assessment_dict

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector

log = structlog.get_logger("incident_detector")


def detector_status(det: Detector) -> dict[str, Any]:
    """/status: the whole view, or what is known without the store when it does not answer."""
    try:
        return status_view(det)
    except StoreUnavailable as exc:
        # What is known without the store: the role, the sources, the last tick.
        return {"service": "incident-detector", "alive": det.alive(), "ready": False,
                "store": {"ok": False, "error": exc.message},
                "started_at": iso(det.started_at), "ticks": det.ticks,
                "last_tick": det.last_tick.as_dict() if det.last_tick else None,
                "sources": det.sources.as_dict(det.sources.health)}


def status_view(det: Detector) -> dict[str, Any]:
    outbox = det.store.outbox.summary()
    return {
        "service": "incident-detector",
        "role": det.leadership.status() if det.leadership is not None
        else {"role": "leader", "election": "off"},
        "alive": det.alive(),
        "ready": det.ready(),
        "started_at": iso(det.started_at),
        "ticks": det.ticks,
        "settings": det.settings.public(),
        "last_tick": det.last_tick.as_dict() if det.last_tick else None,
        "sources": det.sources.as_dict(
            name for name in det.sources.health
            if (name != "slack" or det.slack is not None)
            and (name != "event" or det.events is not None)),
        "rollouts": [assessment_dict(a) for a in
                     (det.last_tick.assessments if det.last_tick else ())],
        "fast_lane": {
            "fast_poll_seconds": det.settings.fast_poll_seconds,
            "young_rollout_seconds": det.settings.young_rollout_seconds,
            "active": det.fast_lane_active,
            "young": sorted(ns for ns, young in det.young.items() if young),
            "looks": det.fast_looks,
            "last_look": det.last_fast_look.as_dict() if det.last_fast_look else None,
            "loki_queries_last_minute": det.loki_budget.rates(),
            "loki_max_queries_per_minute": det.loki_budget.per_minute,
        },
        "store": {"ok": True, "backend": det.store.dialect, "target": det.store.target,
                  "shared": det.store.dialect != "sqlite"},
        "incidents": det.store.recent_incidents(),
        "notices": det.store.recent_notices(),
        "rules": det.rules_file.status() if det.rules_file is not None
        else {"source": DEFAULT_RULES.source, "rules": len(DEFAULT_RULES.rules)},
        "outbox": {"pending": outbox.pending, "delivered": outbox.delivered,
                   "given_up": list(outbox.given_up)},
        "changes": det.change_desk.status() if det.change_desk is not None else None,
        "llm": det.analyst.status() if det.analyst is not None else {"enabled": False},
        "remediation": {"mode": det.settings.remediation_mode,
                        "dry_run": det.settings.dry_run,
                        "audit": det.journal.audit_summary()},
    }

