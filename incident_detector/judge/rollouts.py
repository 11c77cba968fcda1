"""Which rollout a Deployment is in: its current ReplicaSet, the revision before it, and when the
rollout began (rules 1 and 2 of ``judge.correlator``). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from ..model import Deployment, ReplicaSet, RolloutStartSource

RolloutKey = tuple[str, str, int]
NO_STARTS: Mapping[RolloutKey, datetime] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Rollout:
    """A ReplicaSet that became its Deployment's current revision, and what it replaced."""

    deployment: Deployment
    replicaset: ReplicaSet
    started_at: datetime
    start_source: RolloutStartSource
    # The newest older revision: what a rollback goes to, and the "before".
    previous: ReplicaSet

    @property
    def key(self) -> RolloutKey:
        return rollout_key(self.replicaset)


def rollout_key(rs: ReplicaSet) -> RolloutKey:
    """A rollout's identity for per-rollout memory: a reused ReplicaSet has several rollouts."""
    return (rs.namespace, rs.uid or rs.name, rs.revision or 0)



def owned_by(rs: ReplicaSet, deployment: Deployment) -> bool:
    """``rs`` is controlled by this Deployment object, not by an earlier one of the same name.

    Garbage collection removes a deleted Deployment's ReplicaSets, but not at once: for a while
    the old ones and the new Deployment coexist. An unknown uid on either side (an old recording)
    falls back to the name.
    """
    if rs.deployment != deployment.name:
        return False
    return not (rs.deployment_uid and deployment.uid) or rs.deployment_uid == deployment.uid


def current_replicaset(deployment: Deployment, replicasets: Iterable[ReplicaSet]) -> ReplicaSet | None:
    """The ReplicaSet of the Deployment's current revision, if it is known."""
    if deployment.revision is None:
        return None
    for rs in replicasets:
        if rs.revision == deployment.revision and owned_by(rs, deployment):
            return rs
    return None


def previous_revision(revision: int, replicasets: Iterable[ReplicaSet],
                      deployment: Deployment) -> ReplicaSet | None:
    """The newest ReplicaSet of ``deployment`` below ``revision``: what a rollback goes to."""
    older = [rs for rs in replicasets
             if rs.revision is not None and rs.revision < revision and owned_by(rs, deployment)]
    return max(older, key=lambda rs: rs.revision or 0, default=None)


def rollout_start(deployment: Deployment, rs: ReplicaSet,
                  *, seen: datetime | None = None) -> tuple[datetime, RolloutStartSource]:
    """When ``rs`` became the current revision of ``deployment``, and which data said so.

    A new ReplicaSet became current when it was created. A reused one keeps its old creation
    time; the controller's last write of its revision annotation (``managedFields``) and the
    Progressing condition that names it are the data that survive a restart. Both are upper
    bounds (each later step of the rollout moves them), so the earliest wins, and so does an
    earlier value this process saw itself (``seen``). Nothing is earlier than the creation.
    """
    if not rs.reused:
        return rs.created_at, RolloutStartSource.REPLICASET_CREATED
    bounds: list[tuple[datetime, RolloutStartSource]] = []
    if rs.revision_written_at is not None:
        bounds.append((rs.revision_written_at, RolloutStartSource.REVISION_ANNOTATION))
    if deployment.progressing_replicaset == rs.name and deployment.progressing_updated_at is not None:
        bounds.append((deployment.progressing_updated_at, RolloutStartSource.PROGRESSING_CONDITION))
    if not bounds:
        return rs.created_at, RolloutStartSource.REPLICASET_CREATED
    at, source = min(bounds, key=lambda bound: bound[0])
    if seen is not None and seen < at:
        at = seen  # the source that gave the first sighting is not kept: its figure is
    return max(at, rs.created_at), source


def find_rollout(deployment: Deployment, replicasets: Iterable[ReplicaSet],
                 *, seen_starts: Mapping[RolloutKey, datetime] = NO_STARTS) -> Rollout | None:
    """The Deployment's current rollout; None when there is no current revision or when it is
    the first one (nothing older owned by the Deployment: no "before", no rollback target)."""
    replicasets = tuple(replicasets)
    rs = current_replicaset(deployment, replicasets)
    if rs is None or rs.revision is None:
        return None
    previous = previous_revision(rs.revision, replicasets, deployment)
    if previous is None:
        return None
    seen = seen_starts.get(rollout_key(rs)) if seen_starts else None
    started_at, source = rollout_start(deployment, rs, seen=seen)
    return Rollout(deployment=deployment, replicaset=rs, started_at=started_at,
                   start_source=source, previous=previous)



def owns_pod(replicaset: str, pod_name: str) -> bool:
    """A pod's name is its ReplicaSet's name, a dash and a random suffix."""
    return pod_name.startswith(replicaset + "-")
