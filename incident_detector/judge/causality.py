"""The service map put to work: who a failing workload hurts, and how an incident's causes reach
its symptoms. Pure: the map, the rates and the causes come in as arguments.

- ``callers`` and ``callees``: the workloads that call one, directly or through others, and
  those it calls, each with the shortest chain of calls (ties broken by name), at most
  ``MAX_HOPS`` calls long. Only workloads: a host outside the cluster ends a chain, it never
  carries one on (nothing is known of whom it calls).
- ``blast_radius``: of a failing workload's callers, those whose error rate rose (``rose``: at
  least ``RISE_FACTOR`` times the rate before, and ``MIN_RISE_PER_MINUTE`` more), nearest
  first. A caller whose rate before is not known is not listed: nothing says it rose.
- ``causality``: the tree of an incident, from its root candidates (the ranked changes of
  ``judge.causes``) through the calls of the map to its symptoms (signals, error groups,
  alerts) and to the callers of its blast radius. Each edge carries its evidence and a score in
  [0, 1]: a change's edge the cause's score; a call's the strength of what says it exists
  (``LINK_SCORE``: a caller's error lines naming its callee weigh most); a symptom's how much of
  it the edge explains.

Everything is bounded: hops, callers listed, nodes and edges of a tree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..model import BlastEntry, Causality, CausalEdge, CausalNode, Cause, Change, DELETED
from . import service_map as graph

MAX_HOPS = 4
MAX_BLAST = 20
MAX_NODES = 60
MAX_EDGES = 100
EVIDENCE_PER_EDGE = 4
RISE_FACTOR = 2.0
MIN_RISE_PER_MINUTE = 1.0
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# How strongly an item of the map's evidence says that a call exists.
LINK_SCORE = {
    graph.ERROR_LINE: 1.0,
    graph.ENV: 0.8,
    graph.ARGS: 0.8,
    graph.CONFIGMAP: 0.8,
    graph.INGRESS: 0.8,
    graph.NETWORK_POLICY: 0.5,
    graph.SERVICE_SELECTOR: 0.5,
}

# A chain of calls: node ids, the caller of each next one first.
Path = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Symptom:
    """What the incident's workload shows: ``kind`` is ``signal``, ``error_group`` or
    ``alert``; ``key`` tells two of one kind apart (a signal's name, a fingerprint, an alert's
    name); ``score`` is how much of it its workload explains (1 for its own signals)."""

    kind: str
    key: str
    label: str
    evidence: tuple[str, ...] = ()
    score: float = 1.0


# --- walking the map ------------------------------------------------------------------------


def neighbours(service_map: graph.ServiceMap, *, upstream: bool) -> dict[str, list[str]]:
    """Per node, the workloads it calls (``upstream``: that call it), sorted: made once for
    many walks over the same map."""
    nodes = service_map.nodes
    near: dict[str, list[str]] = {}
    for source, target in service_map.edges:
        a, b = (target, source) if upstream else (source, target)
        if nodes.get(b) is None or nodes[b].kind != graph.WORKLOAD:
            continue
        near.setdefault(a, []).append(b)
    for found in near.values():
        found.sort()
    return near


def _walk(service_map: graph.ServiceMap, start: str, *, upstream: bool,
          max_hops: int, near: Mapping[str, Sequence[str]] | None = None) -> dict[str, Path]:
    """Breadth first from ``start`` along the calls (``upstream``: against them, to the
    callers), over workloads only; each reached node's path from ``start``."""
    if start not in service_map.nodes:
        return {}
    if near is None:
        near = neighbours(service_map, upstream=upstream)
    paths: dict[str, Path] = {start: (start,)}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if len(paths[current]) > max_hops:
            continue
        for other in near.get(current, ()):
            if other not in paths:
                paths[other] = (*paths[current], other)
                queue.append(other)
    del paths[start]
    return paths


def callers(service_map: graph.ServiceMap, workload: str, *, max_hops: int = MAX_HOPS,
            near: Mapping[str, Sequence[str]] | None = None) -> dict[str, Path]:
    """The workloads that call ``workload`` (``<ns>/<name>``) directly or through others, each
    with its chain of calls: the caller first, ``workload`` last. ``near``: the map's
    ``neighbours(upstream=True)``, when already made."""
    return {caller: tuple(reversed(path)) for caller, path in
            _walk(service_map, workload, upstream=True, max_hops=max_hops,
                  near=near).items()}


def callees(service_map: graph.ServiceMap, workload: str, *,
            max_hops: int = MAX_HOPS) -> dict[str, Path]:
    """The workloads ``workload`` calls directly or through others, each with its chain of
    calls: ``workload`` first, the callee last."""
    return _walk(service_map, workload, upstream=False, max_hops=max_hops)


def link_evidence(service_map: graph.ServiceMap, caller: str, callee: str) -> tuple[str, ...]:
    """What says ``caller`` calls ``callee``, as short sentences, strongest first."""
    edge = service_map.edges.get((caller, callee))
    if edge is None:
        return ()
    items = sorted({(e.kind, e.detail) for e in edge.evidence},
                   key=lambda item: (-LINK_SCORE.get(item[0], 0.0), item))
    return tuple(f"{kind}: {detail}" for kind, detail in items[:EVIDENCE_PER_EDGE])


def link_score(service_map: graph.ServiceMap, caller: str, callee: str) -> float:
    edge = service_map.edges.get((caller, callee))
    if edge is None:
        return 0.0
    return max((LINK_SCORE.get(e.kind, 0.0) for e in edge.evidence), default=0.0)


# --- blast radius ---------------------------------------------------------------------------


def rose(before: float | None, after: float | None) -> bool:
    """An error rate that rose clearly: ``RISE_FACTOR`` times its rate before, and at least
    ``MIN_RISE_PER_MINUTE`` more. Unknown either side: no."""
    if before is None or after is None:
        return False
    return after >= RISE_FACTOR * before and after - before >= MIN_RISE_PER_MINUTE


def blast_radius(service_map: graph.ServiceMap, failing: str,
                 rates: Mapping[str, tuple[float | None, float | None]], *,
                 max_hops: int = MAX_HOPS, limit: int = MAX_BLAST) -> tuple[BlastEntry, ...]:
    """The callers of ``failing`` (directly or through others) whose error rate rose, nearest
    first, then by name. ``rates``: per workload id, (per minute before, per minute now)."""
    out = []
    for caller, path in callers(service_map, failing, max_hops=max_hops).items():
        before, after = rates.get(caller, (None, None))
        if after is not None and rose(before, after):
            out.append(BlastEntry(workload=caller, path=path,
                                  before_per_minute=round(before, 2)
                                  if before is not None else None,
                                  after_per_minute=round(after, 2)))
    out.sort(key=lambda e: (len(e.path), e.workload))
    return tuple(out[:max(0, limit)])


def blast_names(blast: Iterable[BlastEntry], *, namespace: str) -> list[str]:
    """The workloads of a blast radius as people say them: ``checkout`` in the incident's own
    namespace, ``billing/ledger`` elsewhere."""
    out = []
    for entry in blast:
        ns, _, name = entry.workload.partition("/")
        out.append(name if ns == namespace else entry.workload)
    return out


# --- the causality tree ---------------------------------------------------------------------


def change_node_id(change: Change) -> str:
    return f"change:{change.kind}/{change.namespace}/{change.name}"


def change_label(change: Change) -> str:
    if change.action == DELETED:
        what = "deleted"
    elif change.rollout:
        what = "rolled out" + (f" revision {change.revision}"
                               if change.revision is not None else "")
    else:
        what = change.action
    return f"{change.kind} {change.namespace}/{change.name} {what}"


def workload_node_id(workload: str) -> str:
    return f"workload:{workload}"


class _Tree:
    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.nodes: dict[str, CausalNode] = {}
        self.edges: dict[tuple[str, str], CausalEdge] = {}

    def node(self, identifier: str, kind: str, label: str) -> bool:
        if identifier not in self.nodes:
            if len(self.nodes) >= MAX_NODES:
                return False
            self.nodes[identifier] = CausalNode(identifier, kind, label)
        return True

    def workload(self, workload: str) -> str | None:
        identifier = workload_node_id(workload)
        return identifier if self.node(identifier, "workload", workload) else None

    def edge(self, source: str | None, target: str | None, evidence: Iterable[str],
             score: float) -> None:
        if source is None or target is None or source == target:
            return
        key = (source, target)
        if key in self.edges or len(self.edges) >= MAX_EDGES:
            return
        self.edges[key] = CausalEdge(source, target, tuple(evidence)[:EVIDENCE_PER_EDGE],
                                     round(min(1.0, max(0.0, score)), 2))

    def calls(self, service_map: graph.ServiceMap, path: Path) -> None:
        """A chain of calls (caller first), as edges from each callee to its caller: a
        callee's failure reaches its caller."""
        for caller, callee in reversed(list(zip(path, path[1:]))):
            self.edge(self.workload(callee), self.workload(caller),
                      (f"{caller} calls {callee}",
                       *link_evidence(service_map, caller, callee)),
                      link_score(service_map, caller, callee))


def causality(subject: str, causes: Sequence[Cause], *,
              service_map: graph.ServiceMap = graph.ServiceMap(),
              symptoms: Sequence[Symptom] = (), blast: Sequence[BlastEntry] = (),
              max_hops: int = MAX_HOPS) -> Causality:
    """The causality tree of an incident of ``subject`` (``<ns>/<name>``): each cause (best
    first) a root, linked to the workload it changed; a workload ``subject`` calls reached
    along the map's calls (directly to ``subject`` when the map has no such chain); the
    symptoms and the blast radius below ``subject``."""
    tree = _Tree(subject)
    me = tree.workload(subject)
    downstream = callees(service_map, subject, max_hops=max_hops)
    roots: list[str] = []
    for cause in causes:
        change = cause.change
        root = change_node_id(change)
        if not tree.node(root, "change", change_label(change)):
            break
        roots.append(root)
        changed = f"{change.namespace}/{change.name}"
        if change.kind in WORKLOAD_KINDS and changed != subject:
            tree.edge(root, tree.workload(changed), cause.reasons, cause.score)
            path = downstream.get(changed)
            if path is not None:
                tree.calls(service_map, path)
            else:
                tree.edge(workload_node_id(changed), me, cause.reasons, cause.score)
        else:
            tree.edge(root, me, cause.reasons, cause.score)
    for symptom in symptoms:
        identifier = f"{symptom.kind}:{symptom.key}"
        if tree.node(identifier, symptom.kind, symptom.label):
            tree.edge(me, identifier, symptom.evidence, symptom.score)
    for entry in blast:
        tree.calls(service_map, entry.path)
        before = "unknown" if entry.before_per_minute is None \
            else f"{entry.before_per_minute:g}/min"
        identifier = f"signal:error_spike@{entry.workload}"
        if tree.node(identifier, "signal",
                     f"errors of {entry.workload} rose: {before} → "
                     f"{entry.after_per_minute:g}/min"):
            tree.edge(tree.workload(entry.workload), identifier,
                      (f"its error rate was {before} before, {entry.after_per_minute:g}/min "
                       "now",), 1.0)
    return Causality(subject=subject, roots=tuple(roots), nodes=tuple(tree.nodes.values()),
                     edges=tuple(tree.edges.values()))


def chain(tree: Causality) -> tuple[str, ...]:
    """The labels from the first root down to the subject (its best explanation in a line):
    the root, then the workloads the failure travelled through."""
    if not tree.roots:
        return ()
    labels = {n.id: n.label for n in tree.nodes}
    out_edges: dict[str, list[str]] = {}
    for edge in tree.edges:
        out_edges.setdefault(edge.source, []).append(edge.target)
    goal = workload_node_id(tree.subject)
    # Breadth first from the root to the subject, over workloads.
    paths = {tree.roots[0]: (tree.roots[0],)}
    queue = deque([tree.roots[0]])
    while queue:
        current = queue.popleft()
        if current == goal:
            return tuple(labels.get(i, i) for i in paths[current])
        for other in out_edges.get(current, ()):
            if other not in paths and other.startswith("workload:"):
                paths[other] = (*paths[current], other)
                queue.append(other)
    return (labels.get(tree.roots[0], tree.roots[0]), tree.subject)


def symptom_labels(tree: Causality) -> tuple[str, ...]:
    """The labels of the subject's own symptoms, in order."""
    me = workload_node_id(tree.subject)
    kinds = {n.id: n for n in tree.nodes}
    return tuple(kinds[e.target].label for e in tree.edges
                 if e.source == me and not e.target.startswith("workload:")
                 and e.target in kinds)


def nearest_failing(service_map: graph.ServiceMap, workload: str,
                    failing: Mapping[str, object], *,
                    max_hops: int = MAX_HOPS) -> tuple[str, Path] | None:
    """Of the workloads in ``failing`` (by id), the nearest one ``workload`` calls, directly
    or through others, and the chain of calls to it; None when it calls none of them."""
    if not failing:
        return None
    reached = callees(service_map, workload, max_hops=max_hops)
    found = sorted((len(path), callee) for callee, path in reached.items() if callee in failing)
    if not found:
        return None
    callee = found[0][1]
    return callee, reached[callee]
