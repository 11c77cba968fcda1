"""What the dashboard's pages and its JSON API share: plain, JSON-ready views of the detector.

Each function reads what the loop published (the last tick's assessments, the rollouts' error
series, the sources' health, the rules in force) or the store (through ``run.reads``); none calls
a source. The pages render these dicts, the API returns them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..store import reads
from ..run.health import iso

# The overview's queue: the open incidents detected within this long, at most QUEUE_SIZE.
QUEUE_WINDOW = timedelta(hours=24)
QUEUE_SIZE = 50
# Verdicts first by how much they need someone, then by the current error rate.
_VERDICT_ORDER = {"incident": 0, "already_notified": 1, "no_verdict": 2, "healthy": 3}
# A word for every verdict and state, so that no status is shown by colour alone.
VERDICT_WORDS = {"incident": "✖ Failing", "already_notified": "✖ Failing (notified)",
                 "healthy": "✔ Healthy", "no_verdict": "… No verdict yet"}
SOURCE_NAMES = (("kubernetes", "Kubernetes"), ("loki", "Loki"), ("slack", "Slack"),
                ("event", "Kubernetes Events"), ("alertmanager", "Alertmanager"),
                ("store", "Store"))


def _rate(points: Sequence[Any]) -> float:
    """The latest error rate measured (0 when none was)."""
    for point in reversed(points):
        if point.per_minute is not None:
            return float(point.per_minute)
    return 0.0


def series(detector: Any, rollout: dict[str, Any]) -> tuple[Any, ...]:
    """A rollout's error-rate points as the loop keeps them (``run.live.SeriesPoint``)."""
    return detector.series.get((rollout["namespace"], rollout["deployment"],
                                rollout["revision"]))


def rollouts(detector: Any, *, points: bool = True) -> list[dict[str, Any]]:
    """The rollouts of the last tick, each with its error-rate series and the lines of its
    chart: the baseline per minute, the band (0 .. baseline x BASELINE_FACTOR) and the
    threshold per minute (ERROR_THRESHOLD over the error window). Those needing someone
    first.

    ``points=False`` leaves the series out (``series`` gives it raw): the overview draws only
    some of hundreds of rollouts, and writing every point as text cost most of its time.
    """
    tick = detector.last_tick
    if tick is None:
        return []
    rules = detector.rules
    window_minutes = rules.error_window_seconds / 60.0
    threshold = round(rules.threshold / window_minutes, 3) if window_minutes > 0 else None
    db = detector.store.connection
    out = []
    for a in tick.assessments:
        raw = detector.series.get((a.namespace, a.deployment, a.revision))
        verdict = a.verdict.value
        baseline = a.baseline_per_minute
        found = None
        if verdict in ("incident", "already_notified"):
            found = reads.rollout_incident(db, namespace=a.namespace, deployment=a.deployment,
                                           revision=a.revision)
        item = {
            "id": f"{a.namespace}/{a.deployment}/{a.revision}",
            "namespace": a.namespace, "deployment": a.deployment, "revision": a.revision,
            "replicaset": a.replicaset, "rollout_started_at": iso(a.rollout_started_at),
            "age_seconds": round(a.age_seconds, 1), "in_window": a.in_window,
            "verdict": verdict, "verdict_text": VERDICT_WORDS.get(verdict, verdict),
            "signals": [s.value for s in a.signals], "error_count": a.error_count,
            "reasons": list(a.reasons),
            "per_minute": _rate(raw),
            "baseline_per_minute": baseline,
            "band": [0.0, round(baseline * rules.baseline_factor, 3)]
            if baseline is not None else None,
            "threshold_per_minute": threshold,
            "incident": found["id"] if found else None,
            "confidence": found["confidence"] if found else None,
            "priority": found["priority"] if found else None,
        }
        if points:
            item["points"] = [{"at": iso(p.at), "per_minute": p.per_minute} for p in raw]
        out.append(item)
    out.sort(key=lambda r: (_VERDICT_ORDER.get(r["verdict"], 9), -r["per_minute"],
                            r["namespace"], r["deployment"], r["revision"]))
    return out


def sources(detector: Any) -> list[dict[str, Any]]:
    """Each dependency's health with a word for it: ok, failing, off, or not used yet."""
    out = []
    for name, label in SOURCE_NAMES:
        item: dict[str, Any] = {"name": name, "label": label, "last_success_at": None,
                                "last_error_at": None, "last_error": None, "detail": ""}
        if name == "alertmanager":
            if getattr(detector, "alert_desk", None) is None:
                item["state"] = "off"
                item["detail"] = "no ALERTMANAGER_TOKEN"
            else:
                intake = reads.alert_intake(detector.store.connection)
                item["state"] = "ok" if intake["last_received_at"] else "idle"
                item["last_success_at"] = intake["last_received_at"]
                item["detail"] = f"{intake['firing']} firing"
            out.append(item)
            continue
        if (name == "slack" and detector.slack is None) or \
                (name == "event" and detector.events is None):
            item["state"] = "off"
            item["detail"] = "not configured"
            out.append(item)
            continue
        health = detector.sources.health[name]
        item.update(health.as_dict())
        if name == "store":
            item["detail"] = "PostgreSQL" if detector.store.dialect == "postgresql" else "SQLite"
        item["state"] = "failing" if health.failing else \
            "ok" if health.last_success_at is not None else "idle"
        out.append(item)
    return out


def leader(detector: Any) -> dict[str, Any]:
    role = detector.leadership.status() if detector.leadership is not None \
        else {"role": "leader", "election": "off"}
    tick = detector.last_tick
    return {**role, "ticks": detector.ticks, "alive": detector.alive(),
            "ready": detector.ready(),
            "last_tick": tick.as_dict() if tick is not None else None}


def stats(detector: Any, *, now: datetime) -> dict[str, Any]:
    return reads.stats(detector.store.connection, now=now, open_since=QUEUE_WINDOW)


def overview(detector: Any, *, now: datetime) -> dict[str, Any]:
    """Everything the overview shows."""
    return {
        "now": iso(now),
        "sources": sources(detector),
        "leader": leader(detector),
        "rollouts": rollouts(detector, points=False),
        "queue": reads.queue(detector.store.connection, since=now - QUEUE_WINDOW,
                             limit=QUEUE_SIZE),
        "stats": stats(detector, now=now),
        "remediation": {"mode": detector.settings.remediation_mode,
                        "dry_run": detector.settings.dry_run},
    }


def incidents(detector: Any, *, filters: reads.Filters = reads.Filters(),
              before: str | None = None, limit: int = reads.DEFAULT_LIMIT) -> dict[str, Any]:
    """A page of incidents of every kind: ``{"incidents": [...], "next": id | None}``."""
    page = reads.incidents(detector.store.connection, filters=filters, before=before,
                           limit=limit)
    return {"incidents": page.items, "next": page.next}


def incident(detector: Any, incident_id: str) -> dict[str, Any] | None:
    """The whole incident with its timeline and recommended command; None when unknown (or
    when the id cannot be one)."""
    try:
        found = reads.incident(detector.store.connection, incident_id)
    except reads.BadQuery:
        return None
    if found is None:
        return None
    record = found["record"]
    found["command"] = record.get("rollback_command") or record.get("command") or None
    found["recommended_action"] = record.get("recommended_action")
    analyst = getattr(detector, "analyst", None)
    if analyst is not None:
        # The LLM analysis, while this process remembers it (a rollout incident is known by its
        # key's parts, the others by their notice key).
        key = (found["namespace"], found["deployment"], found["revision"],
               found.get("deployment_uid") or "") if found["kind"] == "rollout" \
            else found.get("key")
        found["analysis"] = analyst.analysis_for(key) if key else None
    return found


def errors(detector: Any, *, namespace: str | None = None, deployment: str | None = None,
           priority: str | None = None, new_only: bool = False, limit: int = 100,
           now: datetime) -> list[dict[str, Any]]:
    """The triage's error groups (none when triage is off)."""
    triage = getattr(detector, "triage", None)
    if triage is None:
        return []
    return triage.groups(namespace=namespace, deployment=deployment, priority=priority,
                         new_only=new_only, limit=limit, now=now)


def history(detector: Any, **filters: Any) -> dict[str, Any]:
    """A page of the audit trail: ``{"audit": [...], "next": id | None}``."""
    page = reads.audit(detector.store.connection, **filters)
    return {"audit": page.items, "next": page.next}


def _match(rule: Any) -> dict[str, Any]:
    match = rule.match
    out: dict[str, Any] = {}
    if match.log_pattern is not None:
        out["log_pattern"] = match.log_pattern.pattern
    for name in ("alertname", "pod_reason", "signal"):
        if getattr(match, name):
            out[name] = list(getattr(match, name))
    if match.alert_labels:
        out["alert_labels"] = dict(match.alert_labels)
    return out


def rules(detector: Any) -> dict[str, Any]:
    """The rules in force, in the order they are tried, with where they came from and when
    they were last (re)loaded."""
    rule_set = detector.rule_set
    status = detector.rules_file.status() if detector.rules_file is not None else {
        "source": rule_set.source, "rule_count": len(rule_set.rules),
        "include_defaults": rule_set.include_defaults, "loaded_at": None,
        "last_reload_error": None}
    return {
        **status,
        "rules": [{"name": r.name, "source": r.source, "enabled": r.enabled,
                   "priority": r.priority.value, "match": _match(r),
                   "action": r.remediation.action,
                   "cooldown_seconds": r.remediation.cooldown_seconds,
                   "params": dict(r.remediation.params)}
                  for r in rule_set.effective],
    }


def settings(detector: Any) -> dict[str, Any]:
    """The effective settings; secrets only as "set" or "unset"."""
    return detector.settings.public()
