"""What a rollout incident carries besides its decision: its error signatures and when its
errors began, its likeliest causes among recent changes, its blast radius and causality tree;
and what the rules and the causality tree see of it (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import structlog

from ..judge.correlator import Rollout, WorkloadView, owns_pod
from ..judge.causality import Symptom
from ..judge.change_diff import rollout_change
from ..judge.rules import Subject
from ..judge.signatures import top_signatures
from ..model import Incident, Signal
from .change_judging import signature_symptoms

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector
    from .tick_report import TickReport

log = structlog.get_logger("incident_detector")

T = TypeVar("T")


def rollout_symptoms(incident: Incident) -> list[Symptom]:
    """What a rollout incident's workload shows, for its causality tree: its signals, its
    error signatures (error groups), its alerts."""
    evidence = incident.evidence
    minutes = incident.window_seconds / 60.0
    out = []
    for signal in incident.signals:
        if signal == Signal.ERROR_SPIKE:
            before = "" if evidence.baseline_per_minute is None \
                else f", {evidence.baseline_per_minute:g}/min before the rollout"
            out.append(Symptom("signal", signal.value,
                               f"error spike: {round(incident.error_count / minutes, 2):g}/min",
                               (f"{incident.error_count:g} error lines in the last "
                                f"{incident.window_seconds}s (threshold "
                                f"{incident.threshold}){before}",)))
        elif signal != Signal.ALERT:
            out.append(Symptom("signal", signal.value, signal.value.replace("_", " ")))
    out += signature_symptoms(evidence.signatures, since="the rollout")
    for alert in evidence.alerts:
        out.append(Symptom("alert", alert.name or alert.fingerprint,
                           f"alert {alert.name or alert.fingerprint}",
                           (f"firing since {alert.starts_at.isoformat()}",)))
    return out


def rollout_subject(incident: Incident) -> Subject:
    """What the rules see of a rollout incident."""
    alerts = incident.evidence.alerts
    return Subject(
        log_lines=tuple(s.example for s in incident.evidence.signatures),
        alertname=alerts[0].name if alerts else None,
        alert_labels=alerts[0].labels if alerts else (),
        pod_reasons=tuple(dict.fromkeys(str(getattr(problem, "value", problem))
                                        for _, problem in incident.evidence.pod_problems)),
        signals=tuple(s.value for s in incident.signals))


def with_causes(det: Detector, incident: Incident, view: WorkloadView, rollout: Rollout | None,
                errors_began: datetime, risen: Mapping[str, bool | None]) -> Incident:
    """The incident's likeliest causes among recent changes, its own rollout included;
    their timing is measured against ``errors_began``."""
    assert det.change_desk is not None
    causes = det.change_desk.causes_for(
        namespace=incident.namespace, deployment=view.deployment, began=errors_began,
        now=incident.detected_at,
        error_lines=tuple(s.example for s in incident.evidence.signatures),
        own_rollout=rollout_change(rollout, observed_at=incident.detected_at)
        if rollout is not None else None, risen=risen, pods=view.pods or ())
    return replace(incident, evidence=replace(incident.evidence, causes=causes))


async def with_map(det: Detector, incident: Incident, now: datetime,
                   report: TickReport) -> Incident:
    """The incident's blast radius (its callers whose errors rose too) and its causality
    tree, from the service map."""
    assert det.change_desk is not None

    async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
        return await det.call_source(source, thunk, now, report, what)

    blast = await det.change_desk.blast_radius(
        incident.namespace, incident.deployment, started_at=incident.rollout_started_at,
        now=incident.detected_at, call=call, loki=det.loki)
    tree = det.change_desk.causality(incident.namespace, incident.deployment,
                                      incident.evidence.causes,
                                      symptoms=rollout_symptoms(incident), blast=blast)
    return replace(incident, evidence=replace(incident.evidence, blast_radius=blast,
                                              causality=tree))


async def with_signatures(det: Detector, incident: Incident, workload_name: str,
                          report: TickReport) -> tuple[Incident, datetime]:
    """Top error signatures of the new revision, and when its errors began: its first error
    line after the rollout began, else the rollout's start.

    The lines read are those of ``[rollout start, detected_at)``, the range the count that
    made the incident ended with (``count_errors(at=now)``). When they cannot describe every
    line counted (Loki failed, the sample is full, none of the revision's lines was found),
    ``evidence.signature_gap`` says so."""
    began = incident.rollout_started_at
    if incident.error_count <= 0:
        return incident, began
    limit = det.settings.signature_sample_lines
    if det.error_lines is not None and det.error_lines.holds(
            incident.namespace, [workload_name], until=incident.detected_at):
        # The tick's read holds them: no query of its own. A fast look's incident comes
        # after that read, and reads its own range below.
        own_lines, before_lines, gap = det.error_lines.signature_lines(
            incident.namespace, workload=workload_name, since=incident.rollout_started_at,
            until=incident.detected_at, limit=limit)
        own = [line for line in own_lines
               if line.pod is None or owns_pod(incident.replicaset, line.pod)]
        began = min((line.at for line in own), default=began)
        signatures = top_signatures([line.line for line in own],
                                    before=[line.line for line in before_lines])
        if gap is None and not signatures:
            gap = "lines_not_found"
        return replace(incident, evidence=replace(incident.evidence, signatures=signatures,
                                                  signature_gap=gap)), began
    workload = [workload_name]
    lookback = timedelta(seconds=det.rules.baseline_lookback_seconds)
    after, before = await asyncio.gather(
        det.call_source("loki", lambda: det.loki.sample_errors(
            namespace=incident.namespace, workloads=workload, start=incident.rollout_started_at,
            end=incident.detected_at, limit=limit), incident.detected_at, report, "sample"),
        det.call_source("loki", lambda: det.loki.sample_errors(
            namespace=incident.namespace, workloads=workload,
            start=incident.rollout_started_at - lookback, end=incident.rollout_started_at,
            limit=limit), incident.detected_at, report, "sample before rollout"),
    )
    if after is None:
        return replace(incident, evidence=replace(incident.evidence,
                                                  signature_gap="loki_failed")), began
    own = [line for line in after
           if line.pod is None or owns_pod(incident.replicaset, line.pod)]
    began = min((line.at for line in own if line.at >= began), default=began)
    signatures = top_signatures([line.line for line in own],
                                before=[line.line for line in before or ()])
    gap = "limit_reached" if len(after) >= limit else \
        "lines_not_found" if not signatures else None
    return replace(incident, evidence=replace(incident.evidence, signatures=signatures,
                                              signature_gap=gap)), began

