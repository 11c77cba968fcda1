"""Who a change may break: the Deployments to watch for a rise after a change that is not
their own rollout (a ConfigMap they read, a workload they call, a Service that selects them).
Pure; ``judge.causes`` ranks the changes once a rise is seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..model import DELETED, Change, Deployment, PodTemplate, Service
from .cause_scoring import (
    CONFIG_KINDS,
    WORKLOAD_KINDS,
    field_values,
    host_names,
    scale_down,
    selector_values,
)
from .dependencies import Dependencies, WorkloadKey, selects, template_mentions, templates_get


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
                        host_names(host, namespace=dep.namespace) == (ns, name)
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
        pairs = selector_values(change)
        selected = {(d.namespace, d.name) for d in here
                    if any(selects((pair,), d.pod_labels) for pair in pairs)}
        found.update(selected)
        for key in selected:
            found.update(dependencies.on(*key))
    elif change.kind == "HorizontalPodAutoscaler":
        values = field_values(change) | {name}
        found.update((d.namespace, d.name) for d in here if d.name in values)
    elif change.kind == "Ingress":
        values = field_values(change)
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
