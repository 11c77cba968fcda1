"""Alerts in the tick: map the firing alerts to Deployments, hand the ones that fall in a
rollout's window to the correlator as signals, raise an alert incident with its brief for the
others, and close the alert incidents whose alerts resolved.

The webhook (web.alertmanager) only records what Alertmanager sent, durably, in the inbox; this
is where the leader's tick reads it. Each alert's firing period is raised at most once: the
notice's key is its fingerprint and start, and the inbox remembers which incident took it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import SourceError
from ..judge.alert_brief import brief, pod_reasons, pod_to_delete
from ..judge.alert_map import AlertLabels, Unmapped, map_alert
from ..judge.correlator import RolloutKey, current_replicaset, owned_by
from ..judge.rules import RuleVerdict, Subject, classify
from ..judge.signatures import top_signatures
from ..model import (
    Alert,
    AlertIncident,
    AlertTarget,
    Deployment,
    LogLine,
    Pod,
    ReplicaSet,
    WarningEvent,
    alert_key,
)
from ..notify import alert_render
from ..store.alerts import AlertInbox, StoredAlert
from .outbox import Outbox

if TYPE_CHECKING:
    from ..act.remediation import Remediator
    from ..judge.rules import RuleSet

log = structlog.get_logger("incident_detector")

# How often the inbox drops what it no longer needs (see AlertInbox.prune).
PRUNE_EVERY = timedelta(hours=1)
# call(source, what, thunk) -> the answer, or None when the source failed (accounted by the tick).
Call = Callable[[str, str, Callable[[], Awaitable[Any]]], Awaitable[Any]]


@dataclass
class NamespaceAlerts:
    """The firing alerts of one namespace, mapped with that tick's lists."""

    targets: dict[str, AlertTarget] = field(default_factory=dict)  # alert key -> target
    alerts_of: dict[str, list[Alert]] = field(default_factory=dict)  # deployment -> alerts
    deployments: dict[str, Deployment] = field(default_factory=dict)
    replicasets: tuple[ReplicaSet, ...] = ()


class AlertDesk:
    def __init__(self, *, inbox: AlertInbox, labels: AlertLabels, outbox: Outbox,
                 rules: Callable[[], RuleSet], watched_namespaces: Sequence[str],
                 error_window_seconds: int, sample_lines: int,
                 remediator: Remediator | None = None) -> None:
        self.inbox = inbox
        self.labels = labels
        self.outbox = outbox
        self.rules = rules
        self.watched = tuple(watched_namespaces)
        self.error_window = timedelta(seconds=error_window_seconds)
        self.sample_lines = sample_lines
        self.remediator = remediator
        self._firing: list[StoredAlert] = []
        self._events_allowed = True
        self._pruned_at: datetime | None = None

    # Before observing --------------------------------------------------------------------

    def load(self) -> dict[str, list[StoredAlert]]:
        """The firing alerts not yet taken by an incident, by the namespace their labels name
        (None: no namespace label; they are recorded as unmapped here and now)."""
        self._firing = [a for a in self.inbox.firing() if a.incident is None]
        by_namespace: dict[str, list[StoredAlert]] = {}
        for stored in self._firing:
            namespace = self._namespace_of(stored.alert)
            if namespace is None or namespace not in self.watched:
                self._record_mapping(stored, map_alert(
                    stored.alert, labels=self.labels, watched_namespaces=self.watched,
                    deployments=(), replicasets=()))
                continue
            by_namespace.setdefault(namespace, []).append(stored)
        return by_namespace

    def _namespace_of(self, alert: Alert) -> str | None:
        for name in self.labels.namespace:
            value = alert.label(name)
            if value:
                return value
        return None

    def map_namespace(self, namespace: str, alerts: Sequence[StoredAlert],
                      deployments: Sequence[Deployment],
                      replicasets: Sequence[ReplicaSet]) -> NamespaceAlerts:
        found = NamespaceAlerts(replicasets=tuple(replicasets))
        for stored in alerts:
            target = map_alert(stored.alert, labels=self.labels, watched_namespaces=self.watched,
                               deployments=deployments, replicasets=replicasets)
            self._record_mapping(stored, target)
            if isinstance(target, Unmapped):
                continue
            found.targets[alert_key(stored.alert)] = target
            found.alerts_of.setdefault(target.deployment, []).append(stored.alert)
        names = set(found.alerts_of)
        found.deployments = {d.name: d for d in deployments if d.name in names}
        return found

    def _record_mapping(self, stored: StoredAlert, target: AlertTarget | Unmapped) -> None:
        if isinstance(target, Unmapped):
            if stored.unmapped_reason != target.reason or stored.deployment is not None:
                self.inbox.set_mapping(stored.alert.fingerprint, stored.alert.starts_at, target)
                log.info("alert.unmapped", alert=stored.alert.name,
                         fingerprint=stored.alert.fingerprint, reason=target.reason)
        elif (stored.namespace, stored.deployment) != (target.namespace, target.deployment):
            self.inbox.set_mapping(stored.alert.fingerprint, stored.alert.starts_at, target)

    # After deciding ----------------------------------------------------------------------

    def attach(self, alerts: Sequence[Alert], incident_key: str) -> None:
        """Alerts counted as signals of a rollout incident: taken by it, never raised alone."""
        for alert in alerts:
            self.inbox.attach(alert.fingerprint, alert.starts_at, incident_key)

    async def raise_incidents(self, namespace: str, found: NamespaceAlerts, *,
                              taken: set[str], seen_starts: Mapping[RolloutKey, datetime],
                              now: datetime, call: Call, kube: Any, loki: Any,
                              workload_of: Callable[[Deployment], str],
                              explain: Callable[[AlertIncident, Deployment], AlertIncident]
                              | None = None) -> list[str]:
        """An alert incident for each mapped alert not taken by a rollout; the keys recorded.
        ``explain``: the incident with its causes and causality tree (the change timeline's
        ranking over the service map), when there is a change timeline."""
        pending = [(key, target) for key, target in found.targets.items() if key not in taken]
        if not pending:
            return []
        stored_by_key = {alert_key(a.alert): a for a in self._firing}
        # Read once per namespace for all of its alert incidents of this tick.
        events = await self._warning_events(kube, namespace)
        recorded = []
        for key, target in pending:
            stored = stored_by_key.get(key)
            deployment = found.deployments.get(target.deployment)
            if stored is None or deployment is None:
                continue
            own = tuple(rs for rs in found.replicasets if owned_by(rs, deployment))
            current = current_replicaset(deployment, own)
            hashes = sorted({rs.pod_template_hash for rs in own
                             if rs.pod_template_hash and (rs.replicas or rs is current)})
            pods: tuple[Pod, ...] = await call(
                "kubernetes", "pods", lambda: kube.list_pods(namespace, template_hashes=hashes)) or ()
            lines: tuple[LogLine, ...] = await call(
                "loki", "sample", lambda: loki.sample_errors(
                    namespace=namespace, workloads=[workload_of(deployment)],
                    start=min(stored.alert.starts_at, now - self.error_window), end=now,
                    limit=self.sample_lines)) or ()
            # "New" signatures: absent from the lines of the error window before the alert.
            began = stored.alert.starts_at
            signatures = top_signatures([line.line for line in lines if line.at >= began],
                                        before=[line.line for line in lines if line.at < began])
            verdict = classify(self.rules(), Subject(
                log_lines=tuple(s.example for s in signatures), alertname=stored.alert.name,
                alert_labels=stored.alert.labels,
                pod_reasons=pod_reasons(p for p in pods if p.replicaset in
                                        {rs.name for rs in own})))
            incident = brief(stored.alert, target, deployment=deployment, replicasets=own,
                             pods=pods, events=events, signatures=signatures,
                             priority=verdict.priority, rule=verdict.rule, action=verdict.action,
                             params=dict(verdict.params), now=now, seen_starts=seen_starts)
            incident = self._plan(incident, deployment, verdict)
            if explain is not None:
                incident = explain(incident, deployment)
            if self.outbox.record_notice(
                    key=key, kind="alert", namespace=namespace, deployment=deployment.name,
                    detected_at=now, record=alert_render.alert_record(incident),
                    slack_payload=alert_render.slack_payload(incident)):
                recorded.append(key)
                log.warning("alert_incident.detected", namespace=namespace,
                            deployment=deployment.name, alert=stored.alert.name,
                            priority=verdict.priority.value, rule=verdict.rule)
            self.inbox.attach(stored.alert.fingerprint, stored.alert.starts_at, key)
        return recorded

    async def _warning_events(self, kube: Any, namespace: str) -> tuple[WarningEvent, ...]:
        """The namespace's Warning Events for a brief: an enrichment, so a failure leaves the
        brief without them rather than holding the incident or degrading the tick; a missing
        permission turns them off with one log line."""
        if not self._events_allowed:
            return ()
        try:
            return await kube.list_warning_events(namespace)
        except SourceError as exc:
            if exc.status in (401, 403):
                self._events_allowed = False
                log.warning("alert_brief.events_off", reason=exc.reason,
                            why="listing core/v1 events is not permitted; briefs go out "
                                "without warning Events (see k8s/ for the rule)")
            else:
                log.info("alert_brief.events_failed", reason=exc.reason)
            return ()

    def _plan(self, incident: AlertIncident, deployment: Deployment,
              verdict: RuleVerdict) -> AlertIncident:
        """The rule's action through the very same guardrails and approvals as a rollback."""
        if self.remediator is None or verdict.action == "none":
            return incident
        from ..judge.guardrails import Action
        from ..act.remediation import PlanRequest

        try:
            action = Action(verdict.action)
        except ValueError:
            return incident
        if action is Action.ROLLBACK:
            return incident  # no rollout to roll back from: the rules' rollback is for those
        view = self.remediator.propose(PlanRequest(
            key=(incident.target.namespace, deployment.name, deployment.revision or 0,
                 deployment.uid),
            deployment=deployment, action=action, detected_at=incident.detected_at,
            pod=pod_to_delete(incident.pods),
            params=verdict.params, cooldown_seconds=verdict.cooldown_seconds,
            rule=verdict.rule))
        return replace(incident, remediation=view)

    def close_resolved(self, now: datetime) -> int:
        """One follow-up for each alert incident whose alert resolved; the inbox closes it.
        Also keeps the inbox bounded (hourly)."""
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.inbox.prune(now=now)
        closed = 0
        for stored in self.inbox.newly_resolved():
            key = stored.incident or ""
            notice = self.outbox.store.notice(key) if key.startswith("alert/") else None
            resolved_at = stored.alert.ends_at or now
            if notice is not None and notice["closed_at"] is None:
                record = alert_render.resolved_record(notice["record"], resolved_at=resolved_at)
                if self.outbox.close_notice(key=key, closed_at=resolved_at, record=record,
                                            text=record["summary"]):
                    closed += 1
                    log.info("alert_incident.resolved", key=key,
                             firing_seconds=record["firing_seconds"])
            self.inbox.close(stored.alert.fingerprint, stored.alert.starts_at, now=now)
        return closed
