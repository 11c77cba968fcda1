"""The service map: who calls whom across the watched namespaces, with what said so. Pure.

A node is a workload, ``"<namespace>/<name>"`` (a Deployment, StatefulSet or DaemonSet), or a
host outside the cluster,
``"external/api.stripe.com"`` (an Ingress without a host is ``"external/ingress/<ns>/<name>"``).
An edge goes from the caller to the callee and carries its evidence, short items of one *kind*:

- ``env``, ``args``: the caller's pod template names the callee's Service or host
  (``PAYMENTS_URL=http://payments:8080``, ``--upstream=payments.shop.svc:9000``);
- ``configmap``: a ConfigMap the caller's template references has such a value;
- ``error_line``: the caller's error lines name it (the detail is the line's fingerprint);
- ``ingress``: an Ingress sends a host's traffic to the callee's Service;
- ``service_selector``: the Service named selects the callee's pods (how a name became a
  workload);
- ``network_policy``: a NetworkPolicy allows the caller's pods to reach the callee's.

The reading of names is ``judge.dependencies``' (the same hosts rank an incident's causes);
secrets are never read. What comes from configuration is *declared*: a namespace's declared
evidence is replaced whole each time it is read again, so a variable removed takes its link with
it. What error lines say (and the Service through which they named a workload) is *observed*:
each sighting refreshes its item, and an item not seen for ``Limits.observed_for`` goes.

Everything is bounded (``Limits``): evidence per edge (the oldest item goes first), edges (the
least recently seen go first) and nodes. ``update`` returns a new map and never changes the one
given, so a reader (the web app) holds a consistent map while the loop makes the next one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from ..model import Deployment, PodTemplate, Service
from .dependencies import (
    Resolver,
    argument_values,
    external_hosts_in_line,
    hosts_in_line,
    hosts_in_value,
    selects,
)
from .changes import looks_secret_value
from .signatures import fingerprint

EXTERNAL = "external"
WORKLOAD, EXTERNAL_KIND = "workload", "external"
ENV, ARGS, CONFIGMAP, ERROR_LINE = "env", "args", "configmap", "error_line"
INGRESS, SERVICE_SELECTOR, NETWORK_POLICY = "ingress", "service_selector", "network_policy"
EVIDENCE_KINDS = (ENV, ARGS, CONFIGMAP, ERROR_LINE, INGRESS, SERVICE_SELECTOR, NETWORK_POLICY)
DETAIL_MAX_CHARS = 160
# Peers times members of one NetworkPolicy turned into links, at most.
MAX_POLICY_LINKS = 200

EdgeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Limits:
    nodes: int = 5000
    edges: int = 20000
    evidence_per_edge: int = 8
    # An observed item (an error line) not seen again for this long is dropped.
    observed_for: timedelta = timedelta(hours=24)


LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    namespace: str
    name: str
    kind: str = WORKLOAD


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str
    detail: str
    seen_at: datetime
    # Seen in error lines (ages out), rather than read from configuration (replaced whole).
    observed: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    # Newest first.
    evidence: tuple[Evidence, ...]

    @property
    def last_seen(self) -> datetime:
        return self.evidence[0].seen_at

    @property
    def key(self) -> EdgeKey:
        return (self.source, self.target)


@dataclass(frozen=True, slots=True)
class Sighting:
    """One item of evidence for one edge, before it is placed on the map."""

    source: str
    target: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class ServiceMap:
    nodes: Mapping[str, Node] = field(default_factory=lambda: MappingProxyType({}))
    edges: Mapping[EdgeKey, Edge] = field(default_factory=lambda: MappingProxyType({}))

    def __len__(self) -> int:
        return len(self.edges)


def node_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def external_id(host: str) -> str:
    return f"{EXTERNAL}/{host}"


def node_of(identifier: str) -> Node:
    """The node an id names: ``external/...`` is outside the cluster, the rest a workload."""
    namespace, _, name = identifier.partition("/")
    return Node(identifier, namespace, name, EXTERNAL_KIND if namespace == EXTERNAL else WORKLOAD)


def _clip(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in pairs)


# --------------------------------------------------------------------------------------------
# Sightings: what the cluster's objects and the error lines say.


class Namer:
    """Hosts to nodes: through the Services of the watched namespaces (``dependencies``'
    ``Resolver``), or to an outside host. ``deployments`` and ``services`` are those of every
    watched namespace (a host may name another namespace's Service)."""

    def __init__(self, deployments: Iterable[Deployment], services: Iterable[Service]) -> None:
        self.deployments = tuple(deployments)
        self.services = {(s.namespace, s.name): s for s in services}
        self.namespaces = frozenset(d.namespace for d in self.deployments) | frozenset(
            namespace for namespace, _ in self.services)
        self._resolver = Resolver(self.deployments, self.services.values())

    def inside(self, source: str, host: str, *, namespace: str, kind: str,
               detail: str) -> Iterator[Sighting]:
        """The sightings of ``host`` (``<service>[.<namespace>]``) named by ``source``: one of
        ``kind`` per workload reached, and how its Service selects it."""
        for target_namespace, deployment, service in self._resolver.resolve(
                host, namespace=namespace):
            target = node_id(target_namespace, deployment)
            if target == source:
                continue
            yield Sighting(source, target, kind, detail)
            selector = self.services.get((target_namespace, service)) if service else None
            if selector is not None:
                yield Sighting(source, target, SERVICE_SELECTOR,
                               _clip(f"Service {service} selects {_pairs(selector.selector)}"))

    def outside(self, source: str, host: str, *, kind: str, detail: str,
                inside: Sequence[str]) -> Iterator[Sighting]:
        """An outside host's sighting, unless it may be a Service of a watched namespace
        (``payments.shop``: Service payments of namespace shop, known or not)."""
        labels = host.split(".")
        if host in inside and len(labels) == 2 and labels[1] in self.namespaces:
            return
        yield Sighting(source, external_id(host), kind, detail)


def _value_sightings(namer: Namer, source: str, namespace: str, name: str, value: str, *,
                     kind: str, detail: str) -> Iterator[Sighting]:
    inside, outside = hosts_in_value(name, value)
    for host in inside:
        yield from namer.inside(source, host, namespace=namespace, kind=kind, detail=detail)
    for host in outside:
        yield from namer.outside(source, host, kind=kind, detail=detail, inside=inside)


def template_sightings(namer: Namer, namespace: str, workload: str, template: PodTemplate, *,
                       config_maps: Mapping[str, Any] = MappingProxyType({})
                       ) -> Iterator[Sighting]:
    """What a workload's pod template names: its environment, its arguments, and the values of
    the ConfigMaps it references (``config_maps``: name -> ``ObjectState``, as the change
    timeline's watch keeps them; only values shown there, never a hidden one)."""
    source = node_id(namespace, workload)
    for container in template.containers:
        for var in container.env:
            if var.value is None or looks_secret_value(var.value):
                continue
            yield from _value_sightings(namer, source, namespace, var.name, var.value, kind=ENV,
                                        detail=_clip(f"{var.name}={var.value}"))
        for flag, value, _ in argument_values(container.command + container.args):
            shown = f"{flag}={value}" if flag.startswith("-") else value
            yield from _value_sightings(namer, source, namespace, flag, value, kind=ARGS,
                                        detail=_clip(shown))
    for name in sorted(template.config_maps):
        state = config_maps.get(name)
        for path, value in (getattr(state, "fields", None) or {}).items():
            if not path.startswith("data.") or value.hidden or not value.shown:
                continue
            key = path[len("data."):]
            yield from _value_sightings(namer, source, namespace, key, value.shown,
                                        kind=CONFIGMAP,
                                        detail=_clip(f"{name}: {key}={value.shown}"))


def ingress_sightings(namer: Namer, namespace: str, ingress: Any) -> Iterator[Sighting]:
    """An Ingress's backends: its host (outside) calls the workloads behind each Service."""
    for where, service in getattr(ingress, "backends", ()):
        host = where.partition("/")[0]
        source = external_id(host) if host and host != "*" \
            else external_id(f"ingress/{namespace}/{ingress.name}")
        yield from namer.inside(source, service, namespace=namespace, kind=INGRESS,
                                detail=_clip(f"Ingress {ingress.name}: {where} -> {service}"))


def policy_sightings(namespace: str, policy: Any,
                     deployments: Iterable[Deployment]) -> Iterator[Sighting]:
    """A NetworkPolicy's allowances between the workloads of its namespace. A policy or peer
    that selects every pod says nothing of who calls whom and gives none."""
    selector = tuple(getattr(policy, "selector", ()))
    if not selector:
        return
    local = [d for d in deployments if d.namespace == namespace]
    members = [d for d in local if selects(selector, d.pod_labels)]
    made = 0
    for direction, peer in getattr(policy, "peers", ()):
        if not peer:
            continue
        for other in (d for d in local if selects(peer, d.pod_labels)):
            for member in members:
                caller, callee = (other, member) if direction == "ingress" else (member, other)
                if caller.name == callee.name:
                    continue
                made += 1
                if made > MAX_POLICY_LINKS:
                    return
                side = "from" if direction == "ingress" else "to"
                yield Sighting(node_id(namespace, caller.name), node_id(namespace, callee.name),
                               NETWORK_POLICY, _clip(f"NetworkPolicy {policy.name} allows "
                                                     f"{direction} {side} {_pairs(peer)}"))


def declared_sightings(namer: Namer, namespace: str, *,
                       templates: Mapping[str, PodTemplate],
                       config_maps: Iterable[Any] = (), ingresses: Iterable[Any] = (),
                       network_policies: Iterable[Any] = ()) -> list[Sighting]:
    """Everything a namespace's configuration says of who calls whom. ``templates``: each
    workload's current pod template, by name; the rest are the change timeline's
    ``ObjectState`` snapshots of the namespace."""
    by_name = {state.name: state for state in config_maps}
    out: list[Sighting] = []
    for workload, template in sorted(templates.items()):
        out.extend(template_sightings(namer, namespace, workload, template,
                                      config_maps=by_name))
    for ingress in ingresses:
        out.extend(ingress_sightings(namer, namespace, ingress))
    for policy in network_policies:
        out.extend(policy_sightings(namespace, policy, namer.deployments))
    return out


def line_sightings(namer: Namer, namespace: str, workload: str,
                   lines: Iterable[str]) -> list[Sighting]:
    """The hosts a workload's error lines name, each line by its fingerprint."""
    source = node_id(namespace, workload)
    out: list[Sighting] = []
    for line in lines:
        inside = tuple(sorted(hosts_in_line(line)))
        outside = sorted(external_hosts_in_line(line))
        if not inside and not outside:
            continue
        detail = _clip(fingerprint(line))
        for host in inside:
            out.extend(namer.inside(source, host, namespace=namespace, kind=ERROR_LINE,
                                    detail=detail))
        for host in outside:
            out.extend(namer.outside(source, host, kind=ERROR_LINE, detail=detail,
                                     inside=inside))
    return out


# --------------------------------------------------------------------------------------------
# The map, updated.


def _origin(source: str, target: str) -> str:
    """The namespace whose configuration declares an edge: its caller's, or for a link from
    outside (an Ingress) its callee's."""
    namespace = source.partition("/")[0]
    return target.partition("/")[0] if namespace == EXTERNAL else namespace


def _edge(source: str, target: str, items: Iterable[Evidence], limit: int) -> Edge | None:
    newest: dict[tuple[str, str, bool], Evidence] = {}
    for item in items:
        known = newest.get((item.kind, item.detail, item.observed))
        if known is None or item.seen_at > known.seen_at:
            newest[(item.kind, item.detail, item.observed)] = item
    if not newest:
        return None
    ordered = sorted(newest.values(), key=lambda e: (e.seen_at, e.kind, e.detail), reverse=True)
    return Edge(source, target, tuple(ordered[:limit]))


def update(service_map: ServiceMap, namespace: str, *, now: datetime,
           workloads: Iterable[str] | None = None,
           declared: Iterable[Sighting] | None = None,
           observed: Iterable[Sighting] = (), limits: Limits = LIMITS) -> ServiceMap:
    """A new map: ``namespace``'s workloads (when given: the names of all of them now),
    its declared evidence replaced by ``declared`` (when given), ``observed`` sightings added,
    all seen at ``now``; then stale observed items and whatever is over the limits dropped."""
    nodes = dict(service_map.nodes)
    edges = dict(service_map.edges)
    if workloads is not None:
        now_there = {node_id(namespace, name): Node(node_id(namespace, name), namespace, name)
                     for name in workloads}
        gone = {i for i, n in nodes.items() if n.kind == WORKLOAD and n.namespace == namespace
                and i not in now_there}
        for identifier in gone:
            del nodes[identifier]
        nodes.update(now_there)
        if gone:
            edges = {k: e for k, e in edges.items() if k[0] not in gone and k[1] not in gone}
    fresh: dict[EdgeKey, list[Evidence]] = {}
    if declared is not None:
        for s in declared:
            fresh.setdefault((s.source, s.target), []).append(
                Evidence(s.kind, s.detail, now))
        for key, edge in list(edges.items()):
            if _origin(*key) != namespace or key in fresh:
                continue
            kept = [e for e in edge.evidence if e.observed]
            if len(kept) != len(edge.evidence):
                replaced = _edge(*key, kept, limits.evidence_per_edge)
                if replaced is None:
                    del edges[key]
                else:
                    edges[key] = replaced
        for key, items in fresh.items():
            known = edges.get(key)
            old = [e for e in known.evidence if e.observed] if known else []
            made = _edge(*key, old + items, limits.evidence_per_edge)
            if made is not None:
                edges[key] = made
        fresh = {}
    for s in observed:
        fresh.setdefault((s.source, s.target), []).append(
            Evidence(s.kind, s.detail, now, observed=True))
    _add(edges, fresh, limits)
    stale = now - limits.observed_for
    for key, edge in list(edges.items()):
        if all(e.seen_at >= stale or not e.observed for e in edge.evidence):
            continue
        kept = [e for e in edge.evidence if e.seen_at >= stale or not e.observed]
        replaced = _edge(*key, kept, limits.evidence_per_edge)
        if replaced is None:
            del edges[key]
        else:
            edges[key] = replaced
    return _bounded(nodes, edges, limits)


def restored(service_map: ServiceMap, observed: Iterable[tuple[Sighting, datetime]], *,
             now: datetime, limits: Limits = LIMITS) -> ServiceMap:
    """The map with observed evidence read back from the store, each item at the time it was
    last seen (what is older than ``limits.observed_for`` left out): what error lines taught
    before a restart."""
    edges = dict(service_map.edges)
    stale = now - limits.observed_for
    fresh: dict[EdgeKey, list[Evidence]] = {}
    for s, seen_at in observed:
        if seen_at >= stale:
            fresh.setdefault((s.source, s.target), []).append(
                Evidence(s.kind, s.detail, seen_at, observed=True))
    _add(edges, fresh, limits)
    return _bounded(dict(service_map.nodes), edges, limits)


def _add(edges: dict[EdgeKey, Edge], fresh: Mapping[EdgeKey, list[Evidence]],
         limits: Limits) -> None:
    """Each edge of ``fresh`` with its new evidence beside what it had (in place)."""
    for key, items in fresh.items():
        known = edges.get(key)
        made = _edge(*key, (*(known.evidence if known else ()), *items),
                     limits.evidence_per_edge)
        if made is not None:
            edges[key] = made


def _bounded(nodes: dict[str, Node], edges: dict[EdgeKey, Edge], limits: Limits) -> ServiceMap:
    """The least recently seen edges past the limit dropped; the ends of every edge are nodes
    (an outside host while an edge names it, a workload of a namespace not read yet); nodes
    past their limit dropped (those with no edge first) with their edges."""
    if len(edges) > limits.edges:
        newest = sorted(edges.values(), key=lambda e: (e.last_seen, e.key), reverse=True)
        edges = {e.key: e for e in newest[: limits.edges]}
    linked = {i for key in edges for i in key}
    nodes = {i: n for i, n in nodes.items() if n.kind == WORKLOAD}
    for identifier in sorted(linked - nodes.keys()):
        nodes[identifier] = node_of(identifier)
    if len(nodes) > limits.nodes:
        ranked = sorted(nodes, key=lambda i: (i not in linked, nodes[i].kind != WORKLOAD, i))
        nodes = {i: nodes[i] for i in ranked[: limits.nodes]}
        edges = {k: e for k, e in edges.items() if k[0] in nodes and k[1] in nodes}
    return ServiceMap(MappingProxyType(nodes), MappingProxyType(edges))


# --------------------------------------------------------------------------------------------
# Reading the map.


def subgraph(service_map: ServiceMap, *, namespace: str | None = None,
             workload: str | None = None, depth: int = 1) -> ServiceMap:
    """Part of the map: the nodes of ``namespace`` and their edges (with the nodes at their
    other end); within it, the nodes at most ``depth`` hops from ``workload`` (either
    direction) and the edges between them. ``workload`` not on the map: an empty map."""
    nodes, edges = service_map.nodes, service_map.edges
    if namespace is not None:
        edges = {k: e for k, e in edges.items()
                 if nodes[k[0]].namespace == namespace or nodes[k[1]].namespace == namespace}
        keep = {i for i, n in nodes.items() if n.namespace == namespace} | \
            {i for key in edges for i in key}
        nodes = {i: n for i, n in nodes.items() if i in keep}
    if workload is not None:
        if workload not in nodes:
            return ServiceMap()
        near: dict[str, set[str]] = {}
        for source, target in edges:
            near.setdefault(source, set()).add(target)
            near.setdefault(target, set()).add(source)
        reached = {workload: 0}
        queue = deque([workload])
        while queue:
            current = queue.popleft()
            if reached[current] >= depth:
                continue
            for other in sorted(near.get(current, ())):
                if other not in reached:
                    reached[other] = reached[current] + 1
                    queue.append(other)
        nodes = {i: n for i, n in nodes.items() if i in reached}
        edges = {k: e for k, e in edges.items() if k[0] in reached and k[1] in reached}
    return ServiceMap(MappingProxyType(dict(nodes)), MappingProxyType(dict(edges)))


def evidence_dict(item: Evidence) -> dict[str, Any]:
    return {"kind": item.kind, "detail": item.detail, "seen_at": _iso(item.seen_at)}


def edge_dict(edge: Edge) -> dict[str, Any]:
    # An item both read from configuration and seen in error lines is shown once (the newest).
    shown = {(e.kind, e.detail): e for e in reversed(edge.evidence)}
    return {"source": edge.source, "target": edge.target,
            "evidence": [evidence_dict(e) for e in sorted(
                shown.values(), key=lambda e: (e.seen_at, e.kind, e.detail), reverse=True)],
            "last_seen": _iso(edge.last_seen)}


def _iso(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")
