"""What the change desk knows of each watched namespace: what the tick saw of it (``Seen``),
its Deployments' current templates and what they reference, and who calls whom, learnt from the
templates, the Services the watches hold and the error lines that name a host (``Topology``).

Each is worked out at most once per tick, and again only when one of its inputs changed: a mass
rollout puts hundreds of Deployments and changes in one tick. No request of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..judge.correlator import current_replicaset, owned_by
from ..judge.dependencies import (
    Dependencies,
    hosts_in_line,
    learn_dependencies,
    template_mentions,
)
from ..model import Change, Deployment, PodTemplate, ReplicaSet, Service
from .map_keeper import LEARNED_LINES_PER_WORKLOAD

# Lines read per call of learn_lines at most, and per workload in one call.
LEARN_LINES_PER_CALL = 100
LEARN_LINES_PER_WORKLOAD = 5


class ServiceSource(Protocol):
    def services(self, namespace: str) -> tuple[Service, ...]: ...


@dataclass
class Seen:
    """What the tick saw of one namespace, and what is worked out from it at most once per
    tick (a mass rollout puts hundreds of Deployments and changes in one tick)."""

    deployments: dict[str, Deployment]
    replicasets: tuple[ReplicaSet, ...]
    selected: frozenset[str]
    # Each Deployment's own ReplicaSets (owner reference and uid), by its name.
    owned: dict[str, list[ReplicaSet]] = field(default_factory=dict)
    templates: dict[str, PodTemplate] | None = None
    deps: Dependencies | None = None
    # What any workload's template references or names, and which Deployments are called:
    # a change touching none of them cannot affect anything (see ``may_affect``).
    # (name, uid, revision) of each Deployment's current ReplicaSet: what the templates are.
    revisions: tuple[tuple[str, str, int | None], ...] = ()
    config_refs: frozenset[str] | None = None
    mentioned: frozenset[str] = frozenset()
    called: frozenset[tuple[str, str]] = frozenset()

    # The lists this was made from (the watches hand out the same tuple while nothing changed).
    sources: tuple[Any, Any] = (None, None)

    @classmethod
    def of(cls, deployments: Sequence[Deployment], replicasets: Sequence[ReplicaSet],
           selected: Sequence[str], previous: Seen | None = None) -> Seen:
        if previous is not None and previous.sources[0] is deployments \
                and previous.sources[1] is replicasets:
            # Nothing changed since the last tick: what was worked out from it still holds.
            return replace(previous, selected=frozenset(selected), deps=None)
        by_name = {d.name: d for d in deployments}
        owned: dict[str, list[ReplicaSet]] = {}
        for rs in replicasets:
            dep = by_name.get(rs.deployment or "")
            if dep is not None and owned_by(rs, dep):
                owned.setdefault(dep.name, []).append(rs)
        return cls(by_name, tuple(replicasets), frozenset(selected), owned,
                   sources=(deployments, replicasets))

    def may_affect(self, change: Change) -> bool:
        """False when nothing in the namespace can be affected by ``change``: a ConfigMap or
        Secret no template references, a workload nobody names or calls. Exactly the cases
        ``judge.causes.affected_workloads`` would answer with none, at a set lookup's cost."""
        if change.kind in ("ConfigMap", "Secret"):
            return change.name in (self.config_refs or ())
        if change.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            return change.name in self.mentioned or \
                (change.namespace, change.name) in self.called
        return True


class Topology:
    """``seen``: per namespace, what the last tick saw of it. ``heard`` is told the error lines
    kept (the service map learns from them too)."""

    def __init__(self, *, watcher: ServiceSource | None,
                 workload_of: Callable[[Deployment], str],
                 heard: Callable[[str, str, list[str]], None]) -> None:
        self.watcher = watcher
        self.workload_of = workload_of
        self._heard = heard
        self.seen: dict[str, Seen] = {}
        # Error lines per (namespace, workload) recently seen (triage examples, samples):
        # hosts named in them are dependencies.
        self._lines: dict[tuple[str, str], list[str]] = {}
        # Per namespace: who calls whom, with the inputs it was learnt from (see dependencies),
        # and a counter of the error lines learnt.
        self._deps_cache: dict[str, tuple[Any, Dependencies]] = {}
        self._lines_version: dict[str, int] = {}
        # Per namespace: whose lines learn_lines reads first next time (workloads in turns).
        self._learn_turn: dict[str, int] = {}
        # Per namespace: what the templates reference and name, with the revisions they are of.
        self._refs_cache: dict[str, tuple[Any, frozenset[str], frozenset[str]]] = {}

    def saw(self, namespace: str, deployments: Sequence[Deployment],
            replicasets: Sequence[ReplicaSet], selected: Sequence[str]) -> Seen:
        """What this tick saw of ``namespace``; ``selected``: the names of the Deployments the
        detector judges (TARGET_DEPLOYMENT)."""
        seen = self.seen[namespace] = Seen.of(deployments, replicasets, selected,
                                              previous=self.seen.get(namespace))
        return seen

    def learn_lines(self, namespace: str, workload_lines: Mapping[str, Sequence[str]]) -> None:
        """Error lines seen for workloads (triage samples, an incident's sample): the hosts they
        name are dependencies. Only lines that name a host are kept, at most
        LEARNED_LINES_PER_WORKLOAD per workload; at most LEARN_LINES_PER_CALL lines are read
        per call (the newest of each workload, workloads taken in turns across calls), which
        bounds the cost of a tick in which hundreds of workloads log errors."""
        workloads = sorted(w for w, lines in workload_lines.items() if lines)
        if not workloads:
            return
        start = self._learn_turn.get(namespace, 0) % len(workloads)
        self._learn_turn[namespace] = start + 1
        budget, learnt = LEARN_LINES_PER_CALL, False
        for workload in workloads[start:] + workloads[:start]:
            if budget <= 0:
                break
            newest = list(workload_lines[workload])[-min(budget, LEARN_LINES_PER_WORKLOAD):]
            budget -= len(newest)
            naming = [line for line in newest if hosts_in_line(line)]
            if not naming:
                continue
            kept = self._lines.setdefault((namespace, workload), [])
            kept.extend(naming)
            self._heard(namespace, workload, naming)
            del kept[:-LEARNED_LINES_PER_WORKLOAD]
            learnt = True
        if learnt:
            self._lines_version[namespace] = self._lines_version.get(namespace, 0) + 1
            seen = self.seen.get(namespace)
            if seen is not None:
                seen.deps = None  # learnt again with these lines

    def templates(self, namespace: str) -> dict[str, PodTemplate]:
        """Each Deployment's current pod template (once per tick)."""
        seen = self.seen.get(namespace)
        if seen is None:
            return {}
        if seen.templates is None:
            seen.templates = {}
            revisions = []
            for name, dep in seen.deployments.items():
                current = current_replicaset(dep, seen.owned.get(name, ()))
                if current is not None:
                    seen.templates[name] = current.template
                    revisions.append((name, current.uid, current.revision))
            seen.revisions = tuple(sorted(revisions))
            cached = self._refs_cache.get(namespace)
            if cached is not None and cached[0] == seen.revisions:
                seen.config_refs, seen.mentioned = cached[1], cached[2]
            else:  # a template changed: read them all again (once, not every tick)
                seen.config_refs = frozenset(
                    ref for t in seen.templates.values() for ref in (*t.config_maps, *t.secrets))
                seen.mentioned = frozenset(host.partition(".")[0]
                                           for t in seen.templates.values()
                                           for host, _ in template_mentions(t))
                self._refs_cache[namespace] = (seen.revisions, seen.config_refs, seen.mentioned)
        return seen.templates

    def dependencies(self, namespace: str) -> Dependencies:
        """Who calls whom in ``namespace`` (once per tick, again after new error lines)."""
        seen = self.seen.get(namespace)
        if seen is not None and seen.deps is not None:
            return seen.deps
        deployments = tuple(seen.deployments.values()) if seen else ()
        services = self.services(namespace)
        templates = self.templates(namespace)
        # Learnt again only when a template, a Service or the error lines changed: the same
        # inputs give the same answer, and a mass rollout's namespace is large.
        key = (seen.revisions if seen else (), tuple(sorted(d.pod_labels for d in deployments)),
               tuple(services), self._lines_version.get(namespace, 0))
        cached = self._deps_cache.get(namespace)
        if cached is not None and cached[0] == key:
            deps = cached[1]
        else:
            lines = {workload: tuple(kept) for (ns, workload), kept in self._lines.items()
                     if ns == namespace}
            by_workload = {self.workload_of(d): d.name for d in deployments}
            deps = learn_dependencies(
                deployments, templates=templates, services=services,
                error_lines={by_workload.get(w, w): ls for w, ls in lines.items()})
            self._deps_cache[namespace] = (key, deps)
        if seen is not None:
            seen.deps = deps
            seen.called = frozenset(d.key for found in deps.edges.values() for d in found)
        return deps

    def deployment_names(self, namespace: str) -> dict[str, str]:
        """The Deployments of ``namespace`` by the workload label of their log streams."""
        seen = self.seen.get(namespace)
        if seen is None:
            return {}
        return {self.workload_of(d): name for name, d in seen.deployments.items()}

    def services(self, namespace: str) -> tuple[Service, ...]:
        return self.watcher.services(namespace) if self.watcher is not None else ()
