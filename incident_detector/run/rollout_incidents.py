"""A rollout incident from its decision to its record: the correlator's decision (held while
Events are not read back), then each incident's error signatures and score, its likeliest
causes and blast radius (with the change desk), the rules' priority and action, the fix
proposed (its own rollback, or the rollback of a change that is the likelier cause), and the
record with its deliveries, told to the analyst and the live feed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..judge.confidence import scored
from ..judge.correlator import Assessment, Decision, WorkloadView, decide, find_rollout
from ..judge.rules import RuleVerdict, classify
from ..model import Cause, Incident, Signal
from ..notify.render import incident_record
from .enrich import rollout_subject, with_causes, with_map, with_signatures
from .publish import publish_assessments, publish_incident
from .tick_desks import adopt_legacy

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from ..store.records import Store
    from .daemon import Detector
    from .tick_report import TickReport


def decide_rollouts(det: Detector, views: Sequence[WorkloadView], now: datetime,
                    report: TickReport, *, fast: bool) -> Decision | None:
    """The correlator's decision on the rollouts seen (legacy incidents adopted first), its
    assessments published; None while its incidents are held until Events are read back."""
    if det.store.has_legacy:
        adopt_legacy(det, views)
    decision = decide(views, now=now, rules=det.rules,
                      already_notified=_KnownKeys(det.store))
    report.assessments = decision.assessments
    publish_assessments(det, now, decision.assessments, complete=not fast)
    if decision.incidents and not det.readback_done:
        # Without knowing what was already notified, notifying could repeat an incident;
        # the incidents stay in Kubernetes and Loki and are raised at a later tick.
        report.problems.append("event: incidents held until Events are read back")
        return None
    return decision


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


def rates_risen(assessments: Sequence[Assessment]) -> dict[str, dict[str, bool | None]]:
    """Per namespace, whether each judged Deployment's own error rate rose (None: unknown)."""
    out: dict[str, dict[str, bool | None]] = {}
    for a in assessments:
        out.setdefault(a.namespace, {})[a.deployment] = None if a.error_count is None \
            else Signal.ERROR_SPIKE in a.signals
    return out


class _KnownKeys:
    """``key in known`` answered by the store: dedupe survives restarts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.store.is_known(key)  # type: ignore[arg-type]
