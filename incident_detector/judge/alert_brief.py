"""The brief of an alert incident: what an on-call engineer needs on one screen. Pure.

An alert mapped to a Deployment with no rollout in its window is not blamed on a rollout, but
the engineer still wants the context: the workload's pods and their problems, its recent
warning Events, its last rollout and what it changed, its top error signatures, a priority and
the recommended action (both from the rules). Everything here is a function of data read by
the tick; ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ..model import (
    Alert,
    AlertIncident,
    AlertTarget,
    Deployment,
    ErrorSignature,
    LastRollout,
    Pod,
    PodProblem,
    Priority,
    ReplicaSet,
    WarningEvent,
)
from .commands import action_command
from .changes import template_changes
from .correlator import NO_STARTS, RolloutKey, current_replicaset, find_rollout, owned_by, owns_pod

# Events and pods shown in a brief: enough to see the pattern, short enough to read.
MAX_EVENTS = 10
MAX_PODS = 20
# The pod a delete-pod recommendation names: the first with one of these, in this order.
DELETE_POD_PROBLEMS = (PodProblem.CRASH_LOOP, PodProblem.RESTARTING, PodProblem.OOM_KILLED)


def deployment_pods(deployment: Deployment, replicasets: Iterable[ReplicaSet],
                    pods: Iterable[Pod]) -> tuple[Pod, ...]:
    """The pods of ``deployment``'s ReplicaSets, those with problems first, then by name."""
    names = [rs.name for rs in replicasets if owned_by(rs, deployment)]
    mine = [p for p in pods if p.replicaset in names
            or (p.replicaset is None and any(owns_pod(rs, p.name) for rs in names))]
    mine.sort(key=lambda p: (not p.problems, p.ready, p.name))
    return tuple(mine[:MAX_PODS])


def related_events(deployment: Deployment, replicasets: Iterable[ReplicaSet],
                   events: Iterable[WarningEvent]) -> tuple[WarningEvent, ...]:
    """Warning Events about the Deployment, its ReplicaSets or their pods, newest first."""
    names = {rs.name for rs in replicasets if owned_by(rs, deployment)}

    def about(event: WarningEvent) -> bool:
        if event.object_kind == "Deployment":
            return event.object_name == deployment.name
        if event.object_kind == "ReplicaSet":
            return event.object_name in names
        if event.object_kind == "Pod":
            return any(owns_pod(rs, event.object_name) for rs in names)
        return False

    chosen = [e for e in events if about(e)]
    chosen.sort(key=lambda e: (e.last_seen is None, -(e.last_seen.timestamp()
                                                      if e.last_seen else 0.0)))
    return tuple(chosen[:MAX_EVENTS])


def last_rollout(deployment: Deployment, replicasets: Sequence[ReplicaSet], *,
                 seen_starts: Mapping[RolloutKey, datetime] = NO_STARTS) -> LastRollout | None:
    """The Deployment's current revision, when it replaced an earlier one, and what changed."""
    rollout = find_rollout(deployment, replicasets, seen_starts=seen_starts)
    if rollout is None:
        current = current_replicaset(deployment, replicasets)
        if current is None or current.revision is None:
            return None
        return LastRollout(revision=current.revision, replicaset=current.name,
                           started_at=current.created_at, previous_revision=None)
    return LastRollout(revision=rollout.replicaset.revision or 0,
                       replicaset=rollout.replicaset.name, started_at=rollout.started_at,
                       previous_revision=rollout.previous.revision,
                       changes=template_changes(rollout.previous.template,
                                                rollout.replicaset.template))


def pod_to_delete(pods: Iterable[Pod]) -> Pod | None:
    """The pod a ``delete-pod`` would delete: the first one crash looping (or restarting)."""
    pods = list(pods)
    for problem in DELETE_POD_PROBLEMS:
        for pod in pods:
            if problem in pod.problems:
                return pod
    return None


def brief(alert: Alert, target: AlertTarget, *, deployment: Deployment,
          replicasets: Sequence[ReplicaSet], pods: Iterable[Pod], events: Iterable[WarningEvent],
          signatures: Sequence[ErrorSignature], priority: Priority, rule: str, action: str,
          params: Mapping[str, object] | None = None, now: datetime,
          seen_starts: Mapping[RolloutKey, datetime] = NO_STARTS) -> AlertIncident:
    own_pods = deployment_pods(deployment, replicasets, pods)
    last = last_rollout(deployment, replicasets, seen_starts=seen_starts)
    pod = pod_to_delete(own_pods)
    command = action_command(
        action, namespace=deployment.namespace, deployment=deployment.name,
        to_revision=last.previous_revision if last else None,
        pod=pod.name if pod else None, params=params)
    return AlertIncident(
        alert=alert, target=target, detected_at=now, priority=priority, rule=rule,
        action=action, command=command, deployment_uid=deployment.uid,
        revision=deployment.revision, pods=own_pods,
        warning_events=related_events(deployment, replicasets, events),
        last_rollout=last, signatures=tuple(signatures))


def pod_reasons(pods: Iterable[Pod]) -> tuple[str, ...]:
    """The distinct pod problems, as the rules name them (``CrashLoopBackOff``...)."""
    seen: dict[str, None] = {}
    for pod in pods:
        for problem in pod.problems:
            seen.setdefault(problem.value, None)
    return tuple(seen)
