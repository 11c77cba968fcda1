"""The tick's steps around the decision: before the reads, what a previous leader began carried
on, the rules reloaded and the alerts loaded; Events read back before anything is notified,
legacy incidents adopted, and after the rollouts the desks' own incidents (alerts, error groups
of the triage, changes that were not a rollout), the delivery to stdout and the follow-up of
actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..judge.correlator import WorkloadView, find_rollout
from ..judge.causality import Symptom
from ..judge.correlator import Verdict, rollout_alerts
from ..model import AlertIncident, Deployment, Signal, alert_key
from ..notify import triage_render
from ..notify.slack import thread_key
from ..store.failing import FailingRollouts, failing_rollouts
from .health import iso
from .change_judging import signature_symptoms
from .observe import triage_workloads

if TYPE_CHECKING:  # the detector imports this module: only the type is needed here
    from .alert_desk import NamespaceAlerts
    from .daemon import Detector
    from .tick_report import TickReport

log = structlog.get_logger("incident_detector")

T = TypeVar("T")


# Attempts at reading Events back before incidents are released without that memory.
READBACK_ATTEMPTS = 3


async def before_reads(det: Detector, *, fast: bool) -> Mapping[str, Sequence[Any]]:
    """The steps before a look's reads; the firing alerts not yet taken, by namespace (none
    on a fast look)."""
    if det.remediator is not None and not det.resumed:
        # What a previous leader (or process) approved or began, carried on once.
        det.resumed = True
        await det.remediator.resume()
    if not fast and det.rules_file is not None and det.rules_file.reload_if_changed() \
            and det.triage is not None:
        det.triage.reprioritize(det.prioritize_line)
    return det.alert_desk.load() if det.alert_desk is not None and not fast else {}


async def alert_incidents(det: Detector, now: datetime, report: TickReport,
                          assessments: Sequence[Any],
                          by_key: dict[tuple[str, str], WorkloadView],
                          observed: Sequence[tuple[list[WorkloadView], NamespaceAlerts | None]]
                          ) -> None:
    """Alerts that are signals of a rollout go with it; the others are alert incidents."""
    assert det.alert_desk is not None
    taken: set[str] = set()
    for assessment in assessments:
        if Signal.ALERT not in assessment.signals or assessment.verdict not in (
                Verdict.INCIDENT, Verdict.ALREADY_NOTIFIED):
            continue
        view = by_key[(assessment.namespace, assessment.deployment)]
        signals = rollout_alerts(view.alerts, assessment.rollout_started_at)
        key = (assessment.namespace, assessment.deployment, assessment.revision,
               view.deployment.uid)
        det.alert_desk.attach(signals, thread_key(key))
        taken.update(alert_key(alert) for alert in signals)

    async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
        return await det.call_source(source, thunk, now, report, what)

    for namespace, (_, found) in zip(det.settings.namespace, observed):
        if found is None:
            continue
        report.alert_incidents.extend(await det.alert_desk.raise_incidents(
            namespace, found, taken=taken, seen_starts=det.seen_starts, now=now,
            call=call, kube=det.kube, loki=det.error_lines or det.loki,
            workload_of=det.workload_of,
            explain=partial(explain_alert, det) if det.change_desk is not None else None))
    det.alert_desk.close_resolved(now)


async def triage_notices(det: Detector, now: datetime, report: TickReport) -> None:
    """Error lines of each namespace grouped by signature; new groups of the priorities in
    NOTIFY_PRIORITIES are notified, once each."""
    assert det.triage is not None

    async def call(thunk: Callable[[], Awaitable[T]]) -> T | None:
        return await det.call_source("loki", thunk, now, report, "triage")

    workloads = triage_workloads(det)
    window = timedelta(seconds=det.rules.rollout_window_seconds)
    # The rollout incidents of the window, from the store (what this process, an earlier one
    # or another replica recorded); read once per tick, and only when a group is due.
    failing = cache(lambda: failing_rollouts(det.store.connection, since=now - window))
    for namespace in det.settings.namespace:
        due = await det.triage.read(namespace, workloads=workloads, now=now, call=call)
        notified = []
        for group in due:
            key = triage_render.group_key(group)
            incident = group_incident(det, group, failing)
            if det.outbox.record_notice(
                    key=key, kind="error_group", namespace=group.namespace,
                    deployment=",".join(group.workloads), detected_at=now,
                    record=triage_render.group_record(group, now=now, incident=incident),
                    slack_payload=triage_render.slack_payload(
                        group, now=now, incident=incident)) or \
                    det.store.notice(key) is not None:
                notified.append((group.namespace, group.fingerprint))
        if notified:
            det.triage.mark_notified(notified, now=now)


def explain_alert(det: Detector, incident: AlertIncident, deployment: Deployment) -> AlertIncident:
    """An alert incident's likeliest causes since before it began firing (a workload it
    calls that just rolled out, found through the service map), and its causality tree."""
    assert det.change_desk is not None
    alert = incident.alert
    namespace = incident.target.namespace
    causes = det.change_desk.causes_for(
        namespace=namespace, deployment=deployment, began=alert.starts_at,
        now=incident.detected_at, error_lines=tuple(s.example for s in incident.signatures),
        own_rollout=None, risen={}, pods=incident.pods)
    name = alert.name or alert.fingerprint
    tree = det.change_desk.causality(namespace, deployment.name, causes, symptoms=[
        Symptom("alert", name, f"alert {name}",
                (f"firing since {iso(alert.starts_at)}",)),
        *signature_symptoms(incident.signatures, since="the alert")])
    return replace(incident, causes=causes, causality=tree)


def group_incident(det: Detector, group: Any,
                   rollouts: Callable[[], FailingRollouts]) -> dict[str, Any] | None:
    """The rollout incident an error group's workloads are part of: their own, or that of
    a workload they call (the service map), whose rollout began before the group was first
    seen; with the chain of calls to it. ``rollouts``: the open rollout incidents."""
    if det.change_desk is None:
        return None
    failing = {node: ref for node, (ref, started) in rollouts().items()
               if group.first_seen >= started}
    if not failing:
        return None
    names = det.change_desk.topology.deployment_names(group.namespace)
    for workload in group.workloads:
        name = names.get(workload)
        if name is None:
            continue
        node = f"{group.namespace}/{name}"
        found = (node, (node,)) if node in failing else \
            det.change_desk.map_keeper.nearest_failing(node, failing)
        if found is not None:
            return {**failing[found[0]], "path": list(found[1])}
    return None


async def change_incidents(det: Detector, now: datetime, report: TickReport,
                           risen: Mapping[str, Mapping[str, bool | None]]) -> None:
    """Workloads whose errors rose after a change that was not their own rollout."""
    assert det.change_desk is not None

    async def call(source: str, what: str, thunk: Callable[[], Awaitable[T]]) -> T | None:
        return await det.call_source(source, thunk, now, report, what)

    if det.triage is not None:
        for namespace in det.settings.namespace:
            det.change_desk.topology.learn_lines(namespace, det.triage.drain_lines(namespace))
    for namespace in det.settings.namespace:
        report.change_incidents.extend(await det.change_desk.judge(
            namespace, busy=det.busy.get(namespace, set()),
            risen=risen.get(namespace, {}), now=now, call=call))
    det.change_desk.prune(now)


async def after_rollouts(det: Detector, now: datetime, report: TickReport,
                         assessments: Sequence[Any],
                         by_key: dict[tuple[str, str], WorkloadView],
                         observed: Sequence[tuple[list[WorkloadView], NamespaceAlerts | None]],
                         risen: Mapping[str, Mapping[str, bool | None]], *, fast: bool) -> None:
    """After the rollouts' incidents: at a tick, the desks' own (alerts, error groups of the
    triage, changes); then stdout at once, the outbox worker woken for the rest, and the
    remediator's follow-up of actions (a fast look only renews what waits for a person)."""
    if fast:
        det.outbox.deliver_stdout()
        if report.incidents:
            det.outbox.wakeup.set()
        if det.remediator is not None:
            det.remediator.renew({key: view.deployment for key, view in by_key.items()})
        return
    if det.alert_desk is not None:
        await alert_incidents(det, now, report, assessments, by_key, observed)
    if det.triage is not None:
        await triage_notices(det, now, report)
    if det.change_desk is not None:
        await change_incidents(det, now, report, risen)
    det.outbox.deliver_stdout()
    if report.incidents:
        det.outbox.wakeup.set()
    if det.remediator is not None:
        window_minutes = det.rules.error_window_seconds / 60.0
        await det.remediator.follow(
            {key: view.deployment for key, view in by_key.items()},
            {(a.namespace, a.deployment): None if a.error_count is None
             else a.error_count / window_minutes for a in assessments})


def adopt_legacy(det: Detector, views: Sequence[WorkloadView]) -> None:
    """Give incidents stored before uids were recorded the uid of the Deployment they were
    about (see Store.adopt_legacy), so that they are not raised again."""
    for view in views:
        rollout = view.rollout or find_rollout(view.deployment, view.replicasets,
                                               seen_starts=view.seen_starts)
        if rollout is None:
            continue
        rs = rollout.replicaset
        det.store.adopt_legacy(key=(rs.namespace, view.deployment.name, rs.revision or 0,
                                     view.deployment.uid),
                                replicaset=rs.name, replicaset_uid=rs.uid,
                                replicaset_created_at=rs.created_at)


async def read_back_events(det: Detector, now: datetime, report: TickReport) -> None:
    """Remember the incidents whose Events exist: notified by an earlier pod or replica."""
    assert det.events is not None
    det.readback_attempts += 1
    found = 0
    for namespace in det.settings.namespace:
        notified = await det.call_source("event",
                                         lambda ns=namespace: det.events.notified_revisions(ns),
                                    now, report, "read back")
        if notified is None:
            if det.readback_attempts >= READBACK_ATTEMPTS:
                log.warning("events.readback_skipped", attempts=det.readback_attempts,
                            consequence="an incident notified by another pod may be repeated")
                det.readback_done = True
            return
        for item in notified:
            key = item.key
            if det.store.remember_foreign(key=key, replicaset=item.replicaset,
                                           replicaset_uid=item.replicaset_uid,
                                           detected_at=item.notified_at, origin="event"):
                found += 1
            det.store.outbox.supersede(key, now=now, note="notified by another replica")
    det.readback_done = True
    log.info("events.read_back", namespaces=len(det.settings.namespace), new=found)

