"""How one candidate cause is scored and explained (``judge.causes`` says which changes are
candidates and ranks them): the weights, what a change is to the workload (``Role``), the time
weight, the size of a change, and the action or advice that comes with it. Pure.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from ..model import DELETED, Cause, Change, Deployment
from .commands import action_command

MAX_REASONS = 8
MAX_LINES_SCANNED = 1000

# A change made this long before the rise gets the whole time weight...
FULL_PROXIMITY_SECONDS = 120.0
# ...and half of it for every ten further minutes.
PROXIMITY_HALF_LIFE_SECONDS = 600.0
# A rise is seen at a tick, after it began: a change this shortly after still counts as before.
AFTER_RISE_GRACE_SECONDS = 30.0
# Older than this before the rise: not a candidate.
MAX_LEAD_SECONDS = 6 * 3600.0

PROXIMITY = 0.4
AFTER_RISE = -0.3
NAMED_IN_ERRORS = 0.25
DEPENDENCY_ROSE = 0.1
DEPENDENCY_STEADY = -0.05
SIZE = 0.1
NOT_IN_EFFECT = -0.25
# Each call beyond the first on the way to a workload reached on the service map.
HOP_DECAY = 0.7
# The failing workload's error lines name the first workload on the way to it.
PATH_NAMED = 0.15

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
CONFIG_KINDS = ("ConfigMap", "Secret")
TOUCHING_KINDS = ("Service", "NetworkPolicy", "Ingress", "HorizontalPodAutoscaler")
_REPLICAS = "spec.replicas"


class Role(str, Enum):
    """What a change is to the workload whose errors rose."""

    OWN_ROLLOUT = "own_rollout"
    OWN_SCALE_DOWN = "own_scale_down"
    CONFIG = "config"
    DEPENDENCY = "dependency"
    DOWNSTREAM = "downstream"
    NAMED_WORKLOAD = "named_workload"
    TOUCHING = "touching"


PRIOR = {
    Role.OWN_ROLLOUT: 0.25,
    Role.CONFIG: 0.2,
    Role.DEPENDENCY: 0.15,
    Role.DOWNSTREAM: 0.15,
    Role.OWN_SCALE_DOWN: 0.1,
    Role.NAMED_WORKLOAD: 0.1,
    Role.TOUCHING: 0.05,
}


@dataclass(slots=True)
class Candidate:
    change: Change
    role: Role
    weights: list[tuple[float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action: str | None = None
    command: str | None = None

    @property
    def score(self) -> float:
        return round(min(1.0, max(0.0, sum(w for w, _ in self.weights))), 2)

    def cause(self) -> Cause:
        reasons = [f"{weight:+.2f} {text}" for weight, text in self.weights] + self.notes
        return Cause(change=self.change, score=self.score, reasons=tuple(reasons[:MAX_REASONS]),
                     action=self.action, command=self.command)


# --- small helpers ---------------------------------------------------------------------------


def span(seconds: float) -> str:
    """``40`` -> ``40s``, ``150`` -> ``2m30s``, ``3900`` -> ``1h5m``."""
    total = int(round(abs(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def kubectl(*parts: str) -> str:
    return " ".join(shlex.quote(part) for part in ("kubectl", *parts))


def by_manager(change: Change) -> str:
    return f" (by {change.manager})" if change.manager else ""


def _field(change: Change, path: str) -> tuple[str | None, str | None] | None:
    for f in change.fields:
        if f.path == path and not f.hidden:
            return f.before, f.after
    return None


def _as_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def scale_down(change: Change) -> tuple[int, int] | None:
    """(replicas before, after) when the change lowered a workload's ``spec.replicas``."""
    replicas = _field(change, _REPLICAS)
    if replicas is None:
        return None
    before, after = _as_int(replicas[0]), _as_int(replicas[1])
    if before is None or after is None or after >= before:
        return None
    return before, after


def host_names(host: str, *, namespace: str) -> tuple[str, str]:
    """``payments`` seen from ``shop`` -> (``shop``, ``payments``); ``payments.billing`` ->
    (``billing``, ``payments``)."""
    name, _, named_namespace = host.partition(".")
    return named_namespace or namespace, name


def selector_values(change: Change) -> list[tuple[str, str]]:
    """(label key, value) pairs a selector field of the change held, before or after."""
    pairs = []
    for f in change.fields:
        if "selector" not in f.path.lower() or f.hidden:
            continue
        key = f.path.rsplit(".", 1)[-1]
        pairs.extend((key, value) for value in (f.before, f.after) if value is not None)
    return pairs


def field_values(change: Change) -> set[str]:
    return {value for f in change.fields if not f.hidden
            for value in (f.before, f.after) if value is not None}


# --- time ----------------------------------------------------------------------------------


def proximity(change_at: datetime, rise_began_at: datetime, *, verb: str) -> tuple[float, str]:
    """The time weight of a change made at ``change_at``, and its reason."""
    lead = (rise_began_at - change_at).total_seconds()
    if lead < -AFTER_RISE_GRACE_SECONDS:
        return AFTER_RISE, (f"{verb} {span(lead)} after the errors began rising: it did not "
                            "start them")
    if lead < 0:
        return PROXIMITY, (f"{verb} {span(lead)} after the errors were first seen rising, "
                           "as good as at the same time")
    if lead <= FULL_PROXIMITY_SECONDS:
        return PROXIMITY, f"{verb} {span(lead)} before the errors began rising"
    weight = PROXIMITY * 0.5 ** ((lead - FULL_PROXIMITY_SECONDS) / PROXIMITY_HALF_LIFE_SECONDS)
    return weight, f"{verb} {span(lead)} before the errors began rising"


def size_weight(change: Change) -> tuple[float, str]:
    size = change.size
    weight = SIZE * size / (size + 1)
    if change.action != "updated":
        return weight, f"{change.action} as a whole"
    return weight, f"{plural(size, 'field')} changed"



def remedy(candidate: Candidate, *, symptom_namespace: str, symptom_deployment: str,
           deployments: Mapping[tuple[str, str], Deployment],
           down: tuple[int, int] | None = None, env: bool = False) -> None:
    """What to do about a candidate: an action and its exact command, or a note (revert a
    ConfigMap or Secret where it was changed; restart the pods that read it as env)."""
    change = candidate.change
    ns, name = change.namespace, change.name
    if change.action == DELETED:
        candidate.notes.append(f"recreate it where it is managed{by_manager(change)}")
        return
    if change.kind in WORKLOAD_KINDS:
        owner = deployments.get((ns, name))
        if change.kind == "Deployment" and change.rollout:
            candidate.action = "rollback"
            candidate.command = action_command("rollback", namespace=ns, deployment=name,
                                               to_revision=change.previous_revision)
        elif change.kind == "Deployment" and down is not None:
            candidate.action = "scale"
            candidate.command = action_command("scale", namespace=ns, deployment=name,
                                               params={"replicas": down[0]})
        elif change.rollout:
            candidate.command = kubectl("rollout", "undo", f"{change.kind.lower()}/{name}",
                                         "-n", ns)
        elif down is not None:
            candidate.command = kubectl("scale", f"{change.kind.lower()}/{name}", "-n", ns,
                                         f"--replicas={down[0]}")
        gitops = owner.gitops if owner is not None else None
        if gitops is not None and candidate.command:
            candidate.notes.append(
                f"{name} is managed by {gitops.name} ({gitops.app}): a manual undo would be "
                f"reverted; roll back there ({gitops.rollback_commands()[0]})")
        return
    if change.kind == "Secret":
        # describe lists the keys and their sizes, never the values.
        candidate.command = kubectl("describe", "secret", name, "-n", ns)
    else:
        candidate.command = kubectl("get", change.kind.lower(), name, "-n", ns, "-o", "yaml")
    advice = f"revert it where it was changed{by_manager(change)}"
    if env:
        restart = action_command("restart", namespace=symptom_namespace,
                                 deployment=symptom_deployment)
        advice += f", then restart the pods that read the new value: {restart}"
    candidate.notes.append(advice)


def change_verb(change: Change, down: tuple[int, int] | None) -> str:
    if change.action == DELETED:
        return "deleted"
    if change.rollout:
        return "rolled out"
    return "scaled down" if down is not None else "changed"


def what_happened(change: Change, down: tuple[int, int] | None) -> str:
    if change.action == DELETED:
        return "was deleted"
    if change.rollout:
        return ("rolled out" + (f" revision {change.revision}"
                                if change.revision is not None else ""))
    if down is not None:
        return f"was scaled down from {down[0]} to {down[1]}"
    return "changed"
