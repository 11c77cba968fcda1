"""The service map in the loop: kept current by the ``ChangeDesk`` from what its ticks already
read (``MapKeeper``), and asked by the detector for a failing workload's callers and causes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..judge import causality as chains
from ..judge import causes as ranking
from ..judge import service_map as graph
from ..model import DELETED, Change, Deployment, PodTemplate

if TYPE_CHECKING:  # the desk builds its keeper: only the type is needed here
    from .changes import ChangeDesk

# Error lines naming a host kept per workload for learning dependencies.
LEARNED_LINES_PER_WORKLOAD = 50
# Workloads that are nodes of the service map besides Deployments (from the watches).
OTHER_WORKLOAD_KINDS = ("StatefulSet", "DaemonSet")
# The service map reads a namespace's configuration again at least this often.
MAP_REFRESH = timedelta(minutes=5)


class MapKeeper:
    """The service map (``judge.service_map``), kept current from what the desk already holds:
    the tick's Deployments and templates, the watches' StatefulSets and DaemonSets (templates
    and pod labels), Services, ConfigMaps, Ingresses and NetworkPolicies, and the error lines
    ``learn_lines`` keeps. No request of its own. A
    namespace's configuration is read again when its inputs change, and at least every
    MAP_REFRESH (which is when its evidence is last seen); new error lines at the next tick."""

    def __init__(self, desk: ChangeDesk) -> None:
        self.desk = desk
        self.service_map = graph.ServiceMap()
        # Per namespace: the inputs its declared links were read from, and when.
        self._inputs: dict[str, tuple[Any, datetime]] = {}
        # Hosts to workloads (every namespace's Deployments and Services): the tick it was
        # checked at, what it was made of, and itself. Per workload, the links its template
        # and ConfigMaps gave, and what they were read from: a rollout reads one template
        # again, not the namespace's.
        self._namer: tuple[datetime, Any, graph.Namer] | None = None
        self._read: dict[tuple[str, str],
                         tuple[PodTemplate, tuple[Any, ...], list[graph.Sighting]]] = {}
        # Error lines naming a host heard since the last update, per (namespace, workload).
        self._heard: dict[tuple[str, str], list[str]] = {}
        # Who calls whom, against the calls, for the map it was made of (see callers_of).
        self._upstream: tuple[graph.ServiceMap, dict[str, list[str]]] | None = None
        # What error lines taught, kept in the store (None: kept in memory only); read back
        # when the map is first built.
        self.links = desk.links
        self._restored = False

    def nearest_failing(self, node: str, failing: Mapping[str, object]
                        ) -> tuple[str, tuple[str, ...]] | None:
        return chains.nearest_failing(self.service_map, node, failing)

    def reach(self, namespace: str, deployment: str) -> dict[str, tuple[str, ...]]:
        """The workloads ``deployment`` calls on the map, directly or through others."""
        return chains.callees(self.service_map, graph.node_id(namespace, deployment))

    def callers_of(self, change: Change) -> tuple[str, ...]:
        """The Deployments of a rolled-out (scaled-down, deleted) workload's namespace that
        call it through others on the map (its direct callers are ``affected_workloads``'
        already; those of a workload the map does not know: none)."""
        if change.kind not in ranking.WORKLOAD_KINDS or not (
                change.rollout or change.action == DELETED
                or ranking.scale_down(change) is not None):
            return ()
        if self._upstream is None or self._upstream[0] is not self.service_map:
            self._upstream = (self.service_map,
                              chains.neighbours(self.service_map, upstream=True))
        found = chains.callers(self.service_map, graph.node_id(change.namespace, change.name),
                               near=self._upstream[1])
        return tuple(sorted(node.partition("/")[2] for node in found
                            if node.partition("/")[0] == change.namespace))

    def heard(self, namespace: str, workload: str, lines: Sequence[str]) -> None:
        kept = self._heard.setdefault((namespace, workload), [])
        kept.extend(lines)
        del kept[:-LEARNED_LINES_PER_WORKLOAD]

    def _states(self, kind: str, namespace: str) -> tuple[Any, ...]:
        states = getattr(self.desk.watcher, "states", None)
        return tuple(states(kind, namespace)) if states is not None else ()

    def _other_workloads(self, namespace: str) -> dict[str, Any]:
        """The StatefulSets and DaemonSets of ``namespace`` the change timeline's watches keep
        (its ``ObjectState``s, by name), but for one named as a Deployment is: nodes of the map
        too, at no request of their own."""
        seen = self.desk.topology.seen.get(namespace)
        taken = seen.deployments if seen is not None else {}
        return {state.name: state for kind in OTHER_WORKLOAD_KINDS
                for state in self._states(kind, namespace) if state.name not in taken}

    def _namer_at(self, now: datetime) -> graph.Namer:
        """Hosts to workloads as of this tick: made again only when a Deployment, a
        StatefulSet or DaemonSet, their pod labels or a Service changed in some namespace
        (checked once per tick)."""
        if self._namer is not None and self._namer[0] == now:
            return self._namer[2]
        desk = self.desk
        deployments = [d for _, seen in sorted(desk.topology.seen.items())
                       for d in seen.deployments.values()]
        deployments += [Deployment(namespace, state.name, None, pod_labels=state.pod_labels)
                        for namespace in sorted(desk.topology.seen)
                        for state in self._other_workloads(namespace).values()]
        services = tuple(s for namespace in sorted(desk.topology.seen)
                         for s in desk.topology.services(namespace))
        key = (tuple((d.namespace, d.name, d.pod_labels) for d in deployments), services)
        if self._namer is None or self._namer[1] != key:
            namer = graph.Namer(deployments, services)
            self._read.clear()
        else:
            namer = self._namer[2]
        self._namer = (now, key, namer)
        return namer

    def _restore(self, now: datetime) -> None:
        self._restored = True
        if self.links is None:
            return
        stale = now - graph.LIMITS.observed_for
        self.links.forget_before(stale)
        self.service_map = graph.restored(
            self.service_map, ((graph.Sighting(*item), at) for item,
                               at in self.links.since(stale)),
            now=now)

    def update(self, namespace: str, *, now: datetime) -> None:
        desk = self.desk
        seen = desk.topology.seen.get(namespace)
        if seen is None:
            return
        if not self._restored:
            self._restore(now)
        others = self._other_workloads(namespace)
        templates = {**{name: state.template for name, state in others.items()
                        if state.template is not None}, **desk.topology.templates(namespace)}
        objects = {"config_maps": self._states("ConfigMap", namespace),
                   "ingresses": self._states("Ingress", namespace),
                   "network_policies": self._states("NetworkPolicy", namespace)}
        namer = self._namer_at(now)
        # A new Namer (any namespace's Deployments or Services changed) reads every namespace
        # again: a host may now reach another workload.
        key = (seen.revisions, tuple(objects.values()), tuple(others.values()), namer)
        known = self._inputs.get(namespace)
        declare = known is None or known[0] != key or now - known[1] >= MAP_REFRESH
        lines = {w: ls for (ns, w), ls in self._heard.items() if ns == namespace}
        if not declare and not lines:
            return
        by_workload = {desk.workload_of(d): d.name for d in seen.deployments.values()}
        observed = [s for workload, kept in sorted(lines.items())
                    for s in graph.line_sightings(namer, namespace,
                                                  by_workload.get(workload, workload), kept)]
        for workload in lines:
            del self._heard[(namespace, workload)]
        if self.links is not None and observed:
            self.links.record(((s.source, s.target, s.kind, s.detail) for s in observed),
                              seen_at=now)
        declared = self._declared(namer, namespace, templates, objects) if declare else None
        self.service_map = graph.update(
            self.service_map, namespace, now=now, observed=observed, declared=declared,
            workloads=sorted({*seen.deployments, *others}) if declare else None)
        if declare:
            self._inputs[namespace] = (key, now)

    def _declared(self, namer: graph.Namer, namespace: str,
                  templates: Mapping[str, PodTemplate],
                  objects: Mapping[str, tuple[Any, ...]]) -> list[graph.Sighting]:
        config_maps = {state.name: state for state in objects["config_maps"]}
        out: list[graph.Sighting] = []
        for name, template in sorted(templates.items()):
            used = tuple(config_maps.get(ref) for ref in sorted(template.config_maps))
            known = self._read.get((namespace, name))
            if known is None or not (known[0] is template or known[0] == template) or \
                    known[1] != used:
                known = (template, used, list(graph.template_sightings(
                    namer, namespace, name, template, config_maps=config_maps)))
                self._read[(namespace, name)] = known
            out.extend(known[2])
        for gone in [k for k in self._read if k[0] == namespace and k[1] not in templates]:
            del self._read[gone]
        for ingress in objects["ingresses"]:
            out.extend(graph.ingress_sightings(namer, namespace, ingress))
        for policy in objects["network_policies"]:
            out.extend(graph.policy_sightings(namespace, policy, namer.deployments))
        return out

