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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..model import DELETED, Cause, Change, Deployment, Pod, PodTemplate, Service
# Who a change may break, the scale-down test and the time weight are used beyond the ranking;
# they stay importable from here.
from .affected import affected_keys, affected_workloads  # noqa: F401
from .cause_scoring import (  # noqa: F401
    CONFIG_KINDS,
    DEPENDENCY_ROSE,
    DEPENDENCY_STEADY,
    HOP_DECAY,
    MAX_LEAD_SECONDS,
    MAX_LINES_SCANNED,
    NAMED_IN_ERRORS,
    NOT_IN_EFFECT,
    PATH_NAMED,
    PRIOR,
    TOUCHING_KINDS,
    WORKLOAD_KINDS,
    Candidate,
    Role,
    change_verb,
    field_values,
    host_names,
    plural,
    proximity,
    remedy,
    scale_down,
    selector_values,
    size_weight,
    what_happened,
)
from .dependencies import (
    Dependencies,
    Dependency,
    WorkloadKey,
    hosts_in_line,
    selects,
    template_mentions,
)

MAX_CAUSES = 3


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

    def candidate(self, change: Change) -> Candidate | None:
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

    def _workload(self, change: Change) -> Candidate | None:
        s = self.symptom
        own = (change.kind == "Deployment" and change.namespace == s.namespace
               and change.name == s.deployment)
        if own:
            if change.rollout:
                return self._own_rollout(change)
            down = scale_down(change)
            if down is None:
                return None
            candidate = Candidate(change, Role.OWN_SCALE_DOWN)
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
        candidate = Candidate(change, Role.NAMED_WORKLOAD)
        candidate.weights.append((PRIOR[Role.NAMED_WORKLOAD],
                                  f"{named_by} {change.kind} {change.name}, which "
                                  f"{what_happened(change, down)}"))
        self._time(candidate, change.at, change_verb(change, down))
        self._named_in_errors(candidate, lambda host: host_names(
            host, namespace=self.symptom.namespace) == (change.namespace, change.name),
            change.name)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _named_host(self, change: Change) -> str | None:
        def names(host: str) -> bool:
            return host_names(host, namespace=self.symptom.namespace) == (change.namespace,
                                                                             change.name)
        if any(names(h) for hosts in self.line_hosts for h in hosts):
            return "its error lines name"
        if any(names(h) for h in self.template_hosts):
            return "its pod template names"
        return None

    def _own_rollout(self, change: Change) -> Candidate:
        candidate = Candidate(change, Role.OWN_ROLLOUT)
        revision = f" revision {change.revision}" if change.revision is not None else ""
        candidate.weights.append((PRIOR[Role.OWN_ROLLOUT],
                                  f"its own rollout{revision}: every new pod runs the change"))
        self._time(candidate, change.at, "rolled out")
        self._size(candidate)
        self._remedy(candidate)
        return candidate

    def _dependency(self, change: Change, dependency: Dependency,
                    down: tuple[int, int] | None) -> Candidate:
        candidate = Candidate(change, Role.DEPENDENCY)
        how = dependency.evidence[0] if dependency.evidence else "learned from its traffic"
        candidate.weights.append((PRIOR[Role.DEPENDENCY],
                                  f"it calls {change.name}, which {what_happened(change, down)}"
                                  f" ({how})"))
        self._time(candidate, change.at, change_verb(change, down))
        self._named_in_errors(candidate, lambda host: dependency.named_by(
            host, namespace=self.symptom.namespace), change.name,
            learned=dependency.error_lines)
        self._dependency_rose(candidate, change)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _downstream(self, change: Change, path: tuple[str, ...],
                    down: tuple[int, int] | None) -> Candidate:
        """A workload it reaches along the service map's calls (``path``: itself first)."""
        candidate = Candidate(change, Role.DOWNSTREAM)
        hops = len(path) - 1
        names = [node.partition("/")[2] if node.partition("/")[0] == self.symptom.namespace
                 else node for node in path]
        via = ", which calls ".join(names[1:-1])
        how = (f"it calls {via}, which calls {names[-1]}" if via
               else f"it calls {names[-1]}")
        weight = PRIOR[Role.DOWNSTREAM] * HOP_DECAY ** (hops - 1)
        candidate.weights.append((weight, f"{how} (service map, {plural(hops, 'hop')}), "
                                          f"which {what_happened(change, down)}"))
        self._time(candidate, change.at, change_verb(change, down))
        first_ns, _, first = path[1].partition("/")

        def names_first(host: str) -> bool:
            return host_names(host, namespace=self.symptom.namespace) == (first_ns, first)

        count = sum(1 for hosts in self.line_hosts if any(names_first(h) for h in hosts))
        if count and hops > 1:
            candidate.weights.append((PATH_NAMED, self._naming(count, f"{first}, on the way "
                                                                      f"to {change.name}")))
        else:
            self._named_in_errors(candidate, lambda host: host_names(
                host, namespace=self.symptom.namespace) == (change.namespace, change.name),
                change.name)
        self._dependency_rose(candidate, change)
        self._size(candidate)
        self._remedy(candidate, down=down)
        return candidate

    def _config(self, change: Change) -> Candidate:
        candidate = Candidate(change, Role.CONFIG)
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

    def _touching(self, change: Change) -> Candidate | None:
        s = self.symptom
        how: str | None = None
        if change.kind == "Service":
            if change.name in self.selecting_services or change.name == s.deployment:
                how = f"Service {change.name} sends traffic to its pods"
            elif (change.namespace, change.name) in self.called_services:
                how = f"it calls other workloads through Service {change.name}"
        elif change.kind == "NetworkPolicy":
            pairs = selector_values(change)
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
            values = field_values(change) | {change.name}
            if s.deployment in values:
                how = f"HorizontalPodAutoscaler {change.name} scales it"
            else:
                called = sorted(d.deployment for d in self.dependencies.values()
                                if d.deployment in values and d.namespace == s.namespace)
                if called:
                    how = (f"HorizontalPodAutoscaler {change.name} scales {called[0]}, which "
                           "it calls")
        elif change.kind == "Ingress":
            values = field_values(change)
            routed = sorted(values & (self.selecting_services | {s.deployment}))
            if routed:
                how = f"Ingress {change.name} routes to Service {routed[0]}, which reaches it"
        if how is None:
            return None
        candidate = Candidate(change, Role.TOUCHING)
        candidate.weights.append((PRIOR[Role.TOUCHING], how))
        self._time(candidate, change.at, "deleted" if change.action == DELETED else "changed")
        self._size(candidate)
        self._remedy(candidate)
        return candidate

    def _labels(self, key: WorkloadKey) -> tuple[tuple[str, str], ...]:
        dep = self.deployments.get(key)
        return dep.pod_labels if dep else ()

    # the factors ---------------------------------------------------------------------

    def _time(self, candidate: Candidate, at: datetime, verb: str) -> None:
        candidate.weights.append(proximity(at, self.symptom.began, verb=verb))

    def _size(self, candidate: Candidate) -> None:
        candidate.weights.append(size_weight(candidate.change))

    def _named_in_errors(self, candidate: Candidate, names: Callable[[str], bool], name: str, *,
                         learned: int = 0) -> None:
        count = sum(1 for hosts in self.line_hosts if any(names(h) for h in hosts))
        if count:
            candidate.weights.append((NAMED_IN_ERRORS, self._naming(count, name)))
        elif learned:
            candidate.weights.append((NAMED_IN_ERRORS, f"its recent error lines named {name} "
                                      f"({plural(learned, 'line')})"))
        elif self.lines:
            candidate.notes.append(f"none of its {plural(len(self.lines), 'error line')} "
                                   f"name {name}")

    def _named_in_text(self, candidate: Candidate, words: list[str]) -> None:
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

    def _dependency_rose(self, candidate: Candidate, change: Change) -> None:
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
    def _remedy(self, candidate: Candidate, *, down: tuple[int, int] | None = None,
                env: bool = False) -> None:
        remedy(candidate, symptom_namespace=self.symptom.namespace,
               symptom_deployment=self.symptom.deployment, deployments=self.deployments,
               down=down, env=env)


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
