"""A rollout incident from its decision to its record: its error signatures and score, its
likeliest causes and blast radius (with the change desk), the rules' priority and action, the
fix proposed (its own rollback, or the rollback of a change that is the likelier cause), and
the record with its deliveries, told to the analyst and the live feed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..judge.confidence import scored
from ..judge.correlator import WorkloadView, find_rollout
from ..judge.rules import RuleVerdict, classify
from ..model import Cause, Incident
from ..notify.render import incident_record
from .enrich import rollout_subject, with_causes, with_map, with_signatures
from .health import iso
from .publish import publish_incident

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .daemon import Detector
    from .tick_report import TickReport


async def record_rollout_incidents(det: Detector, now: datetime, report: TickReport,
                                   incidents: Sequence[Incident],
                                   by_key: Mapping[tuple[str, str], WorkloadView],
                                   risen: Mapping[str, Mapping[str, bool | None]]) -> None:
    """Each incident the decision raised, completed, planned and recorded; the keys of those
    recorded (not known before) go to ``report.incidents``."""
    for incident in incidents:
        view = by_key[(incident.namespace, incident.deployment)]
        # Scored once its signatures are known: whether they are new weighs in.
        signed, errors_began = await with_signatures(det, incident,
                                                     det.workload_of(view.deployment), report)
        incident = scored(signed)
        rollout = view.rollout or find_rollout(view.deployment, view.replicasets,
                                               seen_starts=view.seen_starts)
        if det.change_desk is not None:
            incident = with_causes(det, incident, view, rollout, errors_began,
                                   risen.get(incident.namespace, {}))
            incident = await with_map(det, incident, now, report)
        verdict = classify(det.rule_set, rollout_subject(incident))
        incident = replace(incident, priority=verdict.priority, rule=verdict.rule,
                           rule_action=verdict.action)
        foreign = _foreign_cause(incident)
        if foreign is not None:
            # The likeliest cause is not this rollout: rolling this Deployment back would
            # not fix it. The cause's own rollback is proposed instead, when it is one.
            assert det.change_desk is not None
            remediation = det.change_desk.plan_for_cause(
                incident.namespace, foreign, detected_at=incident.detected_at,
                confidence=incident.confidence, remediator=det.remediator)
            if remediation is not None:
                incident = replace(incident, remediation=remediation)
        elif det.remediator is not None and rollout is not None and verdict.action != "none":
            # Decided and written down before the incident's messages are: the Slack
            # message carries the buttons when it asks.
            incident = det.remediator.plan(incident, rollout, fix=_fix(verdict),
                                           pods=view.pods or ())
        if det.outbox.record(incident):
            report.incidents.append(incident.key)
            det.failing[f"{incident.namespace}/{incident.deployment}"] = (
                {"kind": "rollout", "namespace": incident.namespace,
                 "deployment": incident.deployment, "revision": incident.revision,
                 "detected_at": iso(incident.detected_at)}, incident.rollout_started_at)
            if det.analyst is not None:
                det.analyst.analyse_later(incident.key, incident_record(incident))
            publish_incident(det, incident)


def _foreign_cause(incident: Incident) -> Cause | None:
    """The incident's top cause when it is not the incident's own rollout."""
    causes = incident.evidence.causes
    if not causes:
        return None
    change = causes[0].change
    if change.kind == "Deployment" and change.name == incident.deployment and \
            change.revision in (None, incident.revision):
        return None
    return causes[0]


def _fix(verdict: RuleVerdict) -> Any:
    from ..act.remediation import Fix

    return Fix(action=verdict.action, cooldown_seconds=verdict.cooldown_seconds,
               params=verdict.params, rule=verdict.rule)
