"""Which recent change most likely made a workload's errors rise: candidates, scored and
explained. Pure: ``now`` and everything else come in as arguments.

A workload's errors rise. Its own rollout is the first suspect, but not the only one: a
ConfigMap it reads changed, a workload it calls rolled out a bad revision, a NetworkPolicy
started dropping its traffic. The candidates are the recent changes that can reach it:

- its own rollout (its pods run the change), or its own scale-down;
- a change to a ConfigMap or Secret its pod template references (volume, ``env`` or
  ``envFrom``). An environment variable is read when the container starts: the pods run the new
  value only once restarted. A volume is updated in place within about a minute (not through a
  ``subPath``). The reasons say which, and whether its pods started since the change;
- a rollout, scale-down or deletion of a Deployment it calls (``judge.dependencies``), or of a
  workload its error lines or its environment name by host (a StatefulSet behind ``postgres``);
- a Service, NetworkPolicy, Ingress or HorizontalPodAutoscaler that touches it: selects its
  pods, routes or scales to it, or is the Service through which it calls a dependency;
- a rollout, scale-down or deletion of a workload it reaches on the service map
  (``reach``: the calls ``judge.causality.callees`` follows, in any watched namespace), a few
  hops away: ``checkout -> payments -> ledger`` makes ledger's rollout a candidate for
  checkout's errors.

Anything else (an unrelated ConfigMap, another team's Deployment) is not a candidate.

The score, in [0, 1], is a sum of explained weights, each one reason (``+0.40 rolled out 30s
before the errors began rising``):

- what the change is to the workload (``PRIOR``): its own rollout weighs most, a referenced
  ConfigMap or Secret next, then a dependency's rollout, and a Service or policy least;
- time: full weight for a change made in the two minutes before the rise, halving every ten
  minutes further back; a change made after the rise began (past a short grace for when a
  rise is first seen) takes weight away, as it cannot have started it; older than six hours,
  not a candidate at all;
- whether the failing workload's error lines name it (the dependency's host, a key the
  ConfigMap changed), or, for a workload reached on the map, the first workload of the chain
  of calls to it;
- a workload reached on the map weighs as a dependency when it is called directly, and less
  (``HOP_DECAY``) for each further call on the way; so a change a few calls away, on the path
  the errors point to, outranks a change next door that nothing ties to them;
- whether the dependency's own error rate rose as well (not rising takes a little away);
- the size of the change (``Change.size``): more fields changed, more that can break;
- a ConfigMap or Secret read as environment variables by pods none of which restarted since
  cannot have changed what they do: a large weight taken away.

Ties go to the later change, then to the kind and name, so the order is the same every time.
Only the best change of each object is kept, and the top three are returned.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from ..model import DELETED, Cause, Change, Deployment, Pod, PodTemplate, Service
from .commands import action_command
from .dependencies import (
    Dependencies,
    Dependency,
    WorkloadKey,
    hosts_in_line,
    selects,
    template_mentions,
    templates_get,
)

MAX_CAUSES = 3
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


@dataclass(frozen=True, slots=True)
class Symptom:
    """A workload whose errors rose, and what a ranking of the changes needs to know of it."""

    namespace: str
    deployment: str
    # When its errors began rising: its rollout's start, or the first tick that saw the rise.
    began: datetime
    deployment_uid: str = ""
    # Its pod template's labels: what Services and NetworkPolicies select (when empty, the
    # labels of the Deployment of that name given to ``rank_causes``).
    pod_labels: tuple[tuple[str, str], ...] = ()
    # The current pod template: the ConfigMaps and Secrets it references, its env (None or
    # empty: not known, so no ConfigMap or Secret is a candidate).
    template: PodTemplate | None = None
    # Its pods: when each was created tells whether it restarted since a change. None or
    # empty: not known.
    pods: tuple[Pod, ...] | None = None
    # Its recent error lines (their text only).
    error_lines: tuple[str, ...] = ()
    # Its own rollout, when it had one.
    own_rollout: Change | None = None

    @classmethod
    def of(cls, deployment: Deployment, **fields: Any) -> Symptom:
        """A symptom of ``deployment`` (its namespace, name, uid and labels)."""
        return cls(namespace=deployment.namespace, deployment=deployment.name,
                   deployment_uid=deployment.uid, pod_labels=deployment.pod_labels, **fields)


@dataclass(slots=True)
class _Candidate:
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


def _span(seconds: float) -> str:
    """``40`` -> ``40s``, ``150`` -> ``2m30s``, ``3900`` -> ``1h5m``."""
    total = int(round(abs(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _kubectl(*parts: str) -> str:
    return " ".join(shlex.quote(part) for part in ("kubectl", *parts))


def _by(change: Change) -> str:
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


def _host_names(host: str, *, namespace: str) -> tuple[str, str]:
    """``payments`` seen from ``shop`` -> (``shop``, ``payments``); ``payments.billing`` ->
    (``billing``, ``payments``)."""
    name, _, named_namespace = host.partition(".")
    return named_namespace or namespace, name


def _selector_values(change: Change) -> list[tuple[str, str]]:
    """(label key, value) pairs a selector field of the change held, before or after."""
    pairs = []
    for f in change.fields:
        if "selector" not in f.path.lower() or f.hidden:
            continue
        key = f.path.rsplit(".", 1)[-1]
        pairs.extend((key, value) for value in (f.before, f.after) if value is not None)
    return pairs


def _field_values(change: Change) -> set[str]:
    return {value for f in change.fields if not f.hidden
            for value in (f.before, f.after) if value is not None}


# --- time ----------------------------------------------------------------------------------


def proximity(change_at: datetime, rise_began_at: datetime, *, verb: str) -> tuple[float, str]:
    """The time weight of a change made at ``change_at``, and its reason."""
    lead = (rise_began_at - change_at).total_seconds()
    if lead < -AFTER_RISE_GRACE_SECONDS:
        return AFTER_RISE, (f"{verb} {_span(lead)} after the errors began rising: it did not "
                            "start them")
    if lead < 0:
        return PROXIMITY, (f"{verb} {_span(lead)} after the errors were first seen rising, "
                           "as good as at the same time")
    if lead <= FULL_PROXIMITY_SECONDS:
        return PROXIMITY, f"{verb} {_span(lead)} before the errors began rising"
    weight = PROXIMITY * 0.5 ** ((lead - FULL_PROXIMITY_SECONDS) / PROXIMITY_HALF_LIFE_SECONDS)
    return weight, f"{verb} {_span(lead)} before the errors began rising"


def _size(change: Change) -> tuple[float, str]:
    size = change.size
    weight = SIZE * size / (size + 1)
    if change.action != "updated":
        return weight, f"{change.action} as a whole"
    return weight, f"{_plural(size, 'field')} changed"


# --- the candidates ------------------------------------------------------------------------


class _Ranking:
    def __init__(self, symptom: Symptom, *, dependencies: Dependencies,
                 risen: Mapping[str, bool | None], deployments: Sequence[Deployment],
                 services: Sequence[Service],
                 reach: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.symptom = symptom
        self.reach = reach or {}
        self.rose = risen
        self.deployments = {(d.namespace, d.name): d for d in deployments}
        self.template = symptom.template or PodTemplate()
        self.labels = symptom.pod_labels or self._labels((symptom.namespace, symptom.deployment))
        # When its pods started; None when not known.
        self.pods_created_at: tuple[datetime, ...] | None = None
        if symptom.pods:
            self.pods_created_at = tuple(p.created_at for p in symptom.pods
                                         if p.created_at is not None) or None
        self.dependencies = {d.key: d for d in dependencies.of(symptom.namespace,
                                                               symptom.deployment)}
        self.lines = [line for line in symptom.error_lines[:MAX_LINES_SCANNED]]
        self.line_hosts = [hosts_in_line(line) for line in self.lines]
        self.template_hosts = {host for host, _ in template_mentions(self.template)}
        ns = symptom.namespace
        self.selecting_services = {s.name for s in services if s.namespace == ns
                                   and selects(s.selector, self.labels)}
        self.called_services = {(d.namespace, d.service) for d in self.dependencies.values()
                                if d.service}

    # what a change is to the symptom --------------------------------------------------

    def candidate(self, change: Change) -> _Candidate | None:
        s = self.symptom
        if change.kind in WORKLOAD_KINDS:
            return self._workload(change)
        if change.namespace != s.namespace:
            return None
        if change.kind in CONFIG_KINDS:
            refs = (self.template.config_maps if change.kind == "ConfigMap"
                    else self.template.secrets)
            return self._config(change) if change.name in refs else None
        if change.kind in TOUCHING_KINDS:
            return self._touching(change)
        return None

    def _workload(self, change: Change) -> _Candidate | None:
        s = self.symptom
        own = (change.kind == "Deployment" and change.namespace == s.namespace
               and change.name == s.deployment)
        if own:
            if change.rollout:
                return self._own_rollout(change)
            down = scale_down(change)
            if down is None:
                return None
            candidate = _Candidate(change, Role.OWN_SCALE_DOWN)
            candidate.weights.append((PRIOR[Role.OWN_SCALE_DOWN],
                                      f"it was scaled down from {down[0]} to {down[1]}: fewer "
                                      "pods take the same load"))
            self._time(candidate, change.at, "scaled down")
            self._remedy(candidate, down=down)
            return candidate
        down = scale_down(change)
        if not (change.rollout or down is not None or change.action == DELETED):
            return None
        dependency = (self.dependencies.get((change.namespace, change.name))
                      if change.kind == "Deployment" else None)
        if dependency is not None:
            return self._dependency(change, dependency, down)
        path = self.reach.get(f"{change.namespace}/{change.name}")
        if path is not None and len(path) >= 2:
            return self._downstream(change, path, down)
        named_by = self._named_host(change)
        if named_by is None:
            return None
        candidate = _Candidate(change, Role.NAMED_WORKLOAD)
        candidate.weights.append((PRIOR[Role.NAMED_WORKLOAD],
                                  f"{named_by} {change.kind} {change.name}, which "
                                  f"{_what_happened(change, down)}"))
        self._time(candidate, change.at, _verb(change, down))
        self._named_in_errors(candidate, lambda host: _host_names(
            host, namespace=self.symptom.namespace) == (change.namespace, change.name),
            change.name)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _named_host(self, change: Change) -> str | None:
        def names(host: str) -> bool:
            return _host_names(host, namespace=self.symptom.namespace) == (change.namespace,
                                                                             change.name)
        if any(names(h) for hosts in self.line_hosts for h in hosts):
            return "its error lines name"
        if any(names(h) for h in self.template_hosts):
            return "its pod template names"
        return None

    def _own_rollout(self, change: Change) -> _Candidate:
        candidate = _Candidate(change, Role.OWN_ROLLOUT)
        revision = f" revision {change.revision}" if change.revision is not None else ""
        candidate.weights.append((PRIOR[Role.OWN_ROLLOUT],
                                  f"its own rollout{revision}: every new pod runs the change"))
        self._time(candidate, change.at, "rolled out")
        self._size(candidate)
        self._remedy(candidate)
        return candidate

    def _dependency(self, change: Change, dependency: Dependency,
                    down: tuple[int, int] | None) -> _Candidate:
        candidate = _Candidate(change, Role.DEPENDENCY)
        how = dependency.evidence[0] if dependency.evidence else "learned from its traffic"
        candidate.weights.append((PRIOR[Role.DEPENDENCY],
                                  f"it calls {change.name}, which {_what_happened(change, down)}"
                                  f" ({how})"))
        self._time(candidate, change.at, _verb(change, down))
        self._named_in_errors(candidate, lambda host: dependency.named_by(
            host, namespace=self.symptom.namespace), change.name,
            learned=dependency.error_lines)
        self._dependency_rose(candidate, change)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _downstream(self, change: Change, path: tuple[str, ...],
                    down: tuple[int, int] | None) -> _Candidate:
        """A workload it reaches along the service map's calls (``path``: itself first)."""
        candidate = _Candidate(change, Role.DOWNSTREAM)
        hops = len(path) - 1
        names = [node.partition("/")[2] if node.partition("/")[0] == self.symptom.namespace
                 else node for node in path]
        via = ", which calls ".join(names[1:-1])
        how = (f"it calls {via}, which calls {names[-1]}" if via
               else f"it calls {names[-1]}")
        weight = PRIOR[Role.DOWNSTREAM] * HOP_DECAY ** (hops - 1)
        candidate.weights.append((weight, f"{how} (service map, {_plural(hops, 'hop')}), "
                                          f"which {_what_happened(change, down)}"))
        self._time(candidate, change.at, _verb(change, down))
        first_ns, _, first = path[1].partition("/")

        def names_first(host: str) -> bool:
            return _host_names(host, namespace=self.symptom.namespace) == (first_ns, first)

        count = sum(1 for hosts in self.line_hosts if any(names_first(h) for h in hosts))
        if count and hops > 1:
            candidate.weights.append((PATH_NAMED, self._naming(count, f"{first}, on the way "
                                                                      f"to {change.name}")))
        else:
            self._named_in_errors(candidate, lambda host: _host_names(
                host, namespace=self.symptom.namespace) == (change.namespace, change.name),
                change.name)
        self._dependency_rose(candidate, change)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _config(self, change: Change) -> _Candidate:
        candidate = _Candidate(change, Role.CONFIG)
        prefix = "configmap" if change.kind == "ConfigMap" else "secret"
        env = [var.name for c in self.template.containers for var in c.env
               if var.source is not None and var.source.startswith(f"{prefix}:{change.name}/")]
        env = list(dict.fromkeys(env))
        how = f"env {', '.join(env[:3])}" if env else "a volume or envFrom"
        candidate.weights.append((PRIOR[Role.CONFIG], f"its pods read {change.kind} "
                                                      f"{change.name} ({how})"))
        pods = self.pods_created_at
        started = None if pods is None else sorted(t for t in pods if t > change.at)
        effective_at, verb = change.at, "changed"
        if change.action == DELETED:
            verb = "deleted"
            candidate.notes.append("deleted: a pod that starts now cannot, unless the reference "
                                   "is optional")
        elif env and started is not None and not started:
            candidate.weights.append((NOT_IN_EFFECT, "its pods still run the old value: they read "
                                      "it as environment variables, which only a restart picks "
                                      "up, and none of them started since the change"))
        elif env and started:
            effective_at, verb = started[0], "took effect (a pod started with it)"
            candidate.notes.append(f"{len(started)} of {len(pods or ())} pods started since the "
                                   "change and read the new value")
        elif env:
            candidate.notes.append("whether its pods restarted since is not known; environment "
                                   "variables take the new value only on a restart")
        else:
            candidate.notes.append("a volume updates in place within about a minute, no restart "
                                   "needed (not through subPath); envFrom takes the new value "
                                   "only on a restart")
            if started is not None:
                candidate.notes.append(
                    f"{len(started)} of {len(pods or ())} pods started since the change"
                    if started else "none of its pods started since the change")
        self._time(candidate, effective_at, verb)
        keys = {f.path.rsplit(".", 1)[-1] for f in change.fields}
        words = [w for w in sorted(keys) if len(w) >= 4] + [change.name]
        self._named_in_text(candidate, words)
        self._size(candidate)
        self._remedy(candidate, env=bool(env) and bool(started))
        return candidate

    def _touching(self, change: Change) -> _Candidate | None:
        s = self.symptom
        how: str | None = None
        if change.kind == "Service":
            if change.name in self.selecting_services or change.name == s.deployment:
                how = f"Service {change.name} sends traffic to its pods"
            elif (change.namespace, change.name) in self.called_services:
                how = f"it calls other workloads through Service {change.name}"
        elif change.kind == "NetworkPolicy":
            pairs = _selector_values(change)
            if any(selects((pair,), self.labels) for pair in pairs):
                how = f"NetworkPolicy {change.name} selects its pods"
            else:
                for dep in self.dependencies.values():
                    labels = self._labels(dep.key)
                    if any(selects((pair,), labels) for pair in pairs):
                        how = (f"NetworkPolicy {change.name} selects the pods of "
                               f"{dep.deployment}, which it calls")
                        break
        elif change.kind == "HorizontalPodAutoscaler":
            values = _field_values(change) | {change.name}
            if s.deployment in values:
                how = f"HorizontalPodAutoscaler {change.name} scales it"
            else:
                called = sorted(d.deployment for d in self.dependencies.values()
                                if d.deployment in values and d.namespace == s.namespace)
                if called:
                    how = (f"HorizontalPodAutoscaler {change.name} scales {called[0]}, which "
                           "it calls")
        elif change.kind == "Ingress":
            values = _field_values(change)
            routed = sorted(values & (self.selecting_services | {s.deployment}))
            if routed:
                how = f"Ingress {change.name} routes to Service {routed[0]}, which reaches it"
        if how is None:
            return None
        candidate = _Candidate(change, Role.TOUCHING)
        candidate.weights.append((PRIOR[Role.TOUCHING], how))
        self._time(candidate, change.at, "deleted" if change.action == DELETED else "changed")
        self._size(candidate)
        self._remedy(candidate)
        return candidate

    def _labels(self, key: WorkloadKey) -> tuple[tuple[str, str], ...]:
        dep = self.deployments.get(key)
        return dep.pod_labels if dep else ()

    # the factors ---------------------------------------------------------------------

    def _time(self, candidate: _Candidate, at: datetime, verb: str) -> None:
        candidate.weights.append(proximity(at, self.symptom.began, verb=verb))

    def _size(self, candidate: _Candidate) -> None:
        candidate.weights.append(_size(candidate.change))

    def _named_in_errors(self, candidate: _Candidate, names: Callable[[str], bool], name: str, *,
                         learned: int = 0) -> None:
        count = sum(1 for hosts in self.line_hosts if any(names(h) for h in hosts))
        if count:
            candidate.weights.append((NAMED_IN_ERRORS, self._naming(count, name)))
        elif learned:
            candidate.weights.append((NAMED_IN_ERRORS, f"its recent error lines named {name} "
                                      f"({_plural(learned, 'line')})"))
        elif self.lines:
            candidate.notes.append(f"none of its {_plural(len(self.lines), 'error line')} "
                                   f"name {name}")

    def _named_in_text(self, candidate: _Candidate, words: list[str]) -> None:
        lowered = [line.lower() for line in self.lines]
        for word in words:
            count = sum(1 for line in lowered if word.lower() in line)
            if count:
                what = ("its name" if word == candidate.change.name
                        else f"{word}, a key it changed")
                candidate.weights.append((NAMED_IN_ERRORS, self._naming(count, what)))
                return

    def _naming(self, count: int, what: str) -> str:
        total = len(self.lines)
        if total == 1:
            return f"its one error line names {what}"
        if count == total:
            return f"all {total} of its error lines name {what}"
        return f"{count} of its {total} error lines name {what}"

    def _dependency_rose(self, candidate: _Candidate, change: Change) -> None:
        key = f"{change.namespace}/{change.name}"
        rose = self.rose.get(key)
        if rose is None and change.namespace == self.symptom.namespace:
            rose = self.rose.get(change.name)
        if rose is True:
            candidate.weights.append((DEPENDENCY_ROSE, f"the error rate of {change.name} rose "
                                                       "too"))
        elif rose is False:
            candidate.weights.append((DEPENDENCY_STEADY, f"the error rate of {change.name} did "
                                                         "not rise"))
        else:
            candidate.notes.append(f"whether the error rate of {change.name} rose is not known")

    def _remedy(self, candidate: _Candidate, *, down: tuple[int, int] | None = None,
                env: bool = False) -> None:
        change = candidate.change
        ns, name = change.namespace, change.name
        if change.action == DELETED:
            candidate.notes.append(f"recreate it where it is managed{_by(change)}")
            return
        if change.kind in WORKLOAD_KINDS:
            owner = self.deployments.get((ns, name))
            if change.kind == "Deployment" and change.rollout:
                candidate.action = "rollback"
                candidate.command = action_command("rollback", namespace=ns, deployment=name,
                                                   to_revision=change.previous_revision)
            elif change.kind == "Deployment" and down is not None:
                candidate.action = "scale"
                candidate.command = action_command("scale", namespace=ns, deployment=name,
                                                   params={"replicas": down[0]})
            elif change.rollout:
                candidate.command = _kubectl("rollout", "undo", f"{change.kind.lower()}/{name}",
                                             "-n", ns)
            elif down is not None:
                candidate.command = _kubectl("scale", f"{change.kind.lower()}/{name}", "-n", ns,
                                             f"--replicas={down[0]}")
            gitops = owner.gitops if owner is not None else None
            if gitops is not None and candidate.command:
                candidate.notes.append(
                    f"{name} is managed by {gitops.name} ({gitops.app}): a manual undo would be "
                    f"reverted; roll back there ({gitops.rollback_commands()[0]})")
            return
        if change.kind == "Secret":
            # describe lists the keys and their sizes, never the values.
            candidate.command = _kubectl("describe", "secret", name, "-n", ns)
        else:
            candidate.command = _kubectl("get", change.kind.lower(), name, "-n", ns, "-o", "yaml")
        advice = f"revert it where it was changed{_by(change)}"
        if env:
            restart = action_command("restart", namespace=self.symptom.namespace,
                                     deployment=self.symptom.deployment)
            advice += f", then restart the pods that read the new value: {restart}"
        candidate.notes.append(advice)


def _verb(change: Change, down: tuple[int, int] | None) -> str:
    if change.action == DELETED:
        return "deleted"
    if change.rollout:
        return "rolled out"
    return "scaled down" if down is not None else "changed"


def _what_happened(change: Change, down: tuple[int, int] | None) -> str:
    if change.action == DELETED:
        return "was deleted"
    if change.rollout:
        return ("rolled out" + (f" revision {change.revision}"
                                if change.revision is not None else ""))
    if down is not None:
        return f"was scaled down from {down[0]} to {down[1]}"
    return "changed"


def _sort_key(cause: Cause, rise_began_at: datetime) -> tuple[object, ...]:
    """Best score first; then the later change; then kind and name, so ties always break alike."""
    change = cause.change
    return (-cause.score, (rise_began_at - change.at).total_seconds(), change.namespace,
            change.kind, change.name, change.resource_version, change.id or 0)


def rank_causes(
    symptom: Symptom,
    changes: Iterable[Change],
    *,
    now: datetime,
    dependencies: Dependencies | None = None,
    risen: Mapping[str, bool | None] | None = None,
    deployments: Iterable[Deployment] = (),
    services: Iterable[Service] = (),
    limit: int = MAX_CAUSES,
    reach: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[Cause, ...]:
    """The likeliest causes of ``symptom`` among ``changes`` (and its own rollout), best first.

    ``risen`` says whether a workload's own error rate rose, by name (in the symptom's
    namespace) or ``namespace/name``; a name missing or None is unknown. ``deployments`` and
    ``services`` are the current objects: what Services select, who is managed by GitOps.
    Changes made after ``now`` (a skewed clock) count as made at ``now``. ``reach``: the
    workloads the symptom calls on the service map, directly or through others, by
    ``<ns>/<name>``, each with its chain of calls (the symptom first; see
    ``judge.causality.callees``).
    """
    ranking = _Ranking(symptom, dependencies=dependencies or Dependencies(),
                       risen=risen or {},
                       deployments=tuple(deployments), services=tuple(services), reach=reach)
    pool = list(changes)
    if symptom.own_rollout is not None:
        pool.append(symptom.own_rollout)
    # One cause per object, its best change: the own rollout given twice counts once.
    best: dict[tuple[str, str, str], Cause] = {}
    for change in pool:
        if change.at > now:
            change = replace(change, at=now)
        if (symptom.began - change.at).total_seconds() > MAX_LEAD_SECONDS:
            continue
        candidate = ranking.candidate(change)
        if candidate is None:
            continue
        cause = candidate.cause()
        key = (change.namespace, change.kind, change.name)
        rise = symptom.began
        if key not in best or _sort_key(cause, rise) < _sort_key(best[key], rise):
            best[key] = cause
    ranked = sorted(best.values(), key=lambda cause: _sort_key(cause, symptom.began))
    return tuple(ranked[:max(0, limit)])


# --- who a change may break ------------------------------------------------------------------


def affected_keys(
    change: Change,
    deployments: Iterable[Deployment],
    templates: Mapping[Any, PodTemplate],
    dependencies: Dependencies,
    *,
    services: Iterable[Service] = (),
) -> tuple[WorkloadKey, ...]:
    """The Deployments (``(namespace, name)``, in any namespace, sorted) a change may break:
    the ones that reference a changed ConfigMap or Secret, call a changed workload, are selected
    by a changed Service or NetworkPolicy, or scaled by a changed HorizontalPodAutoscaler. Never
    the changed Deployment itself: its own rollout is judged as such."""
    deployments = tuple(deployments)
    ns, name = change.namespace, change.name
    here = [d for d in deployments if d.namespace == ns]
    found: set[WorkloadKey] = set()
    if change.kind in CONFIG_KINDS:
        for dep in here:
            template = templates_get(templates, dep)
            if template is None:
                continue
            refs = template.config_maps if change.kind == "ConfigMap" else template.secrets
            if name in refs:
                found.add((dep.namespace, dep.name))
    elif change.kind in WORKLOAD_KINDS:
        if change.rollout or scale_down(change) is not None or change.action == DELETED:
            if change.kind == "Deployment":
                found.update(dependencies.on(ns, name))
            for dep in deployments:
                template = templates_get(templates, dep)
                if template is not None and any(
                        _host_names(host, namespace=dep.namespace) == (ns, name)
                        for host, _ in template_mentions(template)):
                    found.add((dep.namespace, dep.name))
    elif change.kind == "Service":
        service = next((s for s in services if s.namespace == ns and s.name == name), None)
        if service is not None:
            found.update((d.namespace, d.name) for d in here
                         if selects(service.selector, d.pod_labels))
        found.update((d.namespace, d.name) for d in here if d.name == name)
        found.update(key for key, deps in dependencies.edges.items()
                     if any(x.namespace == ns and x.service == name for x in deps))
    elif change.kind == "NetworkPolicy":
        pairs = _selector_values(change)
        selected = {(d.namespace, d.name) for d in here
                    if any(selects((pair,), d.pod_labels) for pair in pairs)}
        found.update(selected)
        for key in selected:
            found.update(dependencies.on(*key))
    elif change.kind == "HorizontalPodAutoscaler":
        values = _field_values(change) | {name}
        found.update((d.namespace, d.name) for d in here if d.name in values)
    elif change.kind == "Ingress":
        values = _field_values(change)
        routed = {s.name for s in services if s.namespace == ns and s.name in values}
        for service in services:
            if service.namespace == ns and service.name in routed:
                found.update((d.namespace, d.name) for d in here
                             if selects(service.selector, d.pod_labels))
    if change.kind == "Deployment":
        found.discard((ns, name))
    return tuple(sorted(found))


def affected_workloads(
    change: Change,
    deployments: Iterable[Deployment],
    templates: Mapping[Any, PodTemplate],
    dependencies: Dependencies,
    *,
    services: Iterable[Service] = (),
) -> tuple[str, ...]:
    """The names of the Deployments of the change's namespace it may break (``affected_keys``
    has those of other namespaces too): the ones to watch for a rise after it."""
    return tuple(name for namespace, name in affected_keys(
        change, deployments, templates, dependencies, services=services)
        if namespace == change.namespace)
