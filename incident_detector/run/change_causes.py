"""What the change desk tells of any incident: its likeliest causes among recent changes, who
else it hurts (its blast radius, from the service map), how its causes reach it (the causality
tree), and the rollback a cause's own rollout calls for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..judge import causality as chains
from ..judge import causes as ranking
from ..judge import service_map as graph
from ..judge.correlator import Rollout, find_rollout
from ..model import BlastEntry, Causality, Cause, Change, Deployment, Pod, RemediationView
from .change_judging import errors_per_workload

if TYPE_CHECKING:  # the desk imports this module: only the types are needed here
    from .changes import Call, ChangeDesk

log = structlog.get_logger("incident_detector")


# Changes looked at when ranking causes: this long before the errors began.
CAUSE_LOOKBACK = timedelta(hours=2)


# A rollout incident's blast radius asks for the callers of at most this many namespaces.
BLAST_NAMESPACES = 5


def causes_for(desk: ChangeDesk, *, namespace: str, deployment: Deployment, began: datetime,
               now: datetime, error_lines: Sequence[str], own_rollout: Change | None,
               risen: Mapping[str, bool | None], pods: Sequence[Pod],
               changes: Sequence[Change] | None = None) -> tuple[Cause, ...]:
    """The top three causes of ``deployment``'s errors that began at ``began``."""
    if changes is None:
        changes = desk.changes.recent(since=began - CAUSE_LOOKBACK, namespaces=[namespace])
    candidates = list(changes)
    if own_rollout is not None:
        # The timeline's record of the same rollout, when it saw it happen (who made it).
        recorded = [c for c in candidates if c.kind == "Deployment"
                    and c.name == own_rollout.name and c.revision == own_rollout.revision]
        if recorded:
            own_rollout = recorded[0]
        candidates = [c for c in candidates if c not in recorded]
    templates = desk.topology.templates(namespace)
    seen = desk.topology.seen.get(namespace)
    reach = desk.map_keeper.reach(namespace, deployment.name)
    elsewhere = sorted({node.partition("/")[0] for node in reach} - {namespace})
    if elsewhere:
        # What changed in the namespaces of the workloads it calls through others.
        candidates += desk.changes.recent(since=began - CAUSE_LOOKBACK,
                                          namespaces=elsewhere)
    return ranking.rank_causes(
        ranking.Symptom.of(deployment, began=began, template=templates.get(deployment.name),
                           pods=tuple(pods), error_lines=tuple(error_lines),
                           own_rollout=own_rollout),
        candidates, now=now, dependencies=desk.topology.dependencies(namespace),
        risen=risen, deployments=tuple(seen.deployments.values()) if seen else (deployment,),
        services=desk.topology.services(namespace), reach=reach)


async def blast_radius(desk: ChangeDesk, namespace: str, deployment: str, *, started_at: datetime,
                       now: datetime, call: Call, loki: Any) -> tuple[BlastEntry, ...]:
    """The callers of ``deployment`` on the map (directly or through others) whose error
    rate rose: for the callers of each namespace, two metric queries, their errors over the
    error window now and over the baseline lookback before the rollout began
    (``started_at``). Asked once per rollout incident, for at most ``BLAST_NAMESPACES``
    namespaces; a namespace whose query failed lists none. ``loki``: what counts (the
    detector's Loki client: the desk's own reader may only read lines)."""
    failing = graph.node_id(namespace, deployment)
    service_map = desk.map_keeper.service_map
    found = chains.callers(service_map, failing)
    by_namespace: dict[str, list[str]] = {}
    for node in sorted(found):
        ns, _, name = node.partition("/")
        seen = desk.topology.seen.get(ns)
        if seen is not None and name in seen.deployments:
            by_namespace.setdefault(ns, []).append(name)
    window, lookback = desk.rules.error_window_seconds, desk.rules.baseline_lookback_seconds
    rates: dict[str, tuple[float | None, float | None]] = {}
    for ns, names in sorted(by_namespace.items())[:BLAST_NAMESPACES]:
        deployments = desk.topology.seen[ns].deployments
        workloads = {desk.workload_of(deployments[name]): name for name in names}
        listed = sorted(workloads)
        now_counts = await call("loki", "blast radius", lambda ns=ns, listed=listed: (
            loki.count_errors(namespace=ns, workloads=listed, window_seconds=window,
                              at=now)))
        before_counts = await call("loki", "blast radius", lambda ns=ns, listed=listed: (
            loki.count_errors(namespace=ns, workloads=listed, window_seconds=lookback,
                              at=started_at)))
        if now_counts is None or before_counts is None:
            continue
        after = errors_per_workload(now_counts)
        before = errors_per_workload(before_counts)
        for workload, name in workloads.items():
            rates[graph.node_id(ns, name)] = (before.get(workload, 0.0) * 60.0 / lookback,
                                              after.get(workload, 0.0) * 60.0 / window)
    return chains.blast_radius(service_map, failing, rates)


def causality(desk: ChangeDesk, namespace: str, deployment: str, causes: Sequence[Cause], *,
              symptoms: Sequence[chains.Symptom],
              blast: Sequence[BlastEntry] = ()) -> Causality:
    """The causality tree of an incident of ``deployment`` over the current map."""
    return chains.causality(graph.node_id(namespace, deployment), causes,
                            service_map=desk.map_keeper.service_map,
                            symptoms=symptoms, blast=blast)


def cause_rollout(desk: ChangeDesk, namespace: str, cause: Cause) -> Rollout | None:
    """The rollout a cause names, as the tick sees it: None unless the cause is a
    Deployment's rollout whose revision is still that Deployment's current one (a
    Deployment that moved on since must not be rolled back on old evidence)."""
    change = cause.change
    seen = desk.topology.seen.get(namespace)
    if seen is None or change.kind != "Deployment" or change.revision is None:
        return None
    deployment = seen.deployments.get(change.name)
    if deployment is None or (change.uid and deployment.uid and change.uid != deployment.uid):
        return None
    rollout = find_rollout(deployment, seen.owned.get(deployment.name, ()))
    if rollout is None or rollout.replicaset.revision != change.revision:
        return None
    return rollout


def plan_for_cause(desk: ChangeDesk, namespace: str, cause: Cause, *, detected_at: datetime,
                   confidence: float | None, remediator: Any) -> RemediationView | None:
    """The rollback of the Deployment whose rollout is the top cause, through the same
    guardrails, journal and approvals as any action (keyed by *that* rollout: one rollback
    per bad revision, whichever incident asked first)."""
    if remediator is None or cause.action != "rollback":
        return None
    rollout = desk.cause_rollout(namespace, cause)
    if rollout is None:
        return None
    from ..judge.guardrails import Action
    from ..act.remediation import PlanRequest

    rs = rollout.replicaset
    view = remediator.propose(PlanRequest(
        key=(namespace, rollout.deployment.name, rs.revision or 0, rollout.deployment.uid),
        deployment=rollout.deployment, action=Action.ROLLBACK, detected_at=detected_at,
        confidence=confidence, to_replicaset=rollout.previous, rule="root-cause"))
    return replace(view, target=f"{namespace}/{rollout.deployment.name}")

