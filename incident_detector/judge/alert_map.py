"""Which Deployment an Alertmanager alert is about, from its labels alone. Pure.

The labels are tried from the most to the least precise, and the first kind present decides:

  1. a namespace label (required): the alert must name a watched namespace;
  2. a deployment label (``deployment``, as kube-state-metrics' ``kube_deployment_*`` series
     carry): the Deployment of that name;
  3. a pod label: the Deployment owning the ReplicaSet whose name and a dash begin the pod's
     name (the ReplicaSet must be seen: a pod merely named like a Deployment is not enough);
  4. workload labels (``service``, ``app``, ``app_kubernetes_io_name``), each in turn: the
     Deployment whose pod template's ``app.kubernetes.io/name`` or ``app`` label, or whose
     name, equals the value.

A deployment or pod label that is present but names nothing seen makes the alert unmapped
instead of falling through to the workload labels: alerts computed from kube-state-metrics carry
``service``/``job`` labels that name kube-state-metrics itself, not the workload. Several
Deployments matching one workload label is "ambiguous", never a guess.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..model import Alert, AlertTarget, Deployment, ReplicaSet, Unmapped
from .correlator import owns_pod

# Pod template labels compared with a workload label's value, in order (then the name).
WORKLOAD_POD_LABELS = ("app.kubernetes.io/name", "app")


class _AlertLabelSettings(Protocol):
    alert_namespace_labels: tuple[str, ...]
    alert_deployment_labels: tuple[str, ...]
    alert_pod_labels: tuple[str, ...]
    alert_workload_labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertLabels:
    """The alert label names that say where an alert is, each kind tried in order."""

    namespace: tuple[str, ...] = ("namespace",)
    deployment: tuple[str, ...] = ("deployment",)
    pod: tuple[str, ...] = ("pod",)
    workload: tuple[str, ...] = ("service", "app", "app_kubernetes_io_name")

    @classmethod
    def from_settings(cls, settings: _AlertLabelSettings) -> AlertLabels:
        """From ALERT_NAMESPACE_LABELS, ALERT_DEPLOYMENT_LABELS, ALERT_POD_LABELS and
        ALERT_WORKLOAD_LABELS."""
        return cls(namespace=tuple(settings.alert_namespace_labels),
                   deployment=tuple(settings.alert_deployment_labels),
                   pod=tuple(settings.alert_pod_labels),
                   workload=tuple(settings.alert_workload_labels))


def map_alert(alert: Alert, *, labels: AlertLabels, watched_namespaces: Collection[str],
              deployments: Sequence[Deployment],
              replicasets: Sequence[ReplicaSet]) -> AlertTarget | Unmapped:
    """The Deployment ``alert`` is about, or why there is none (see the module's docstring).

    ``deployments`` and ``replicasets`` are those seen in the watched namespaces; a Deployment
    not among them (not watched, deleted) is never a target.
    """
    found = _first(alert, labels.namespace)
    if found is None:
        return Unmapped(f"no namespace label ({_names(labels.namespace)})")
    namespace_label, namespace = found
    if namespace not in watched_namespaces:
        return Unmapped(f"namespace {namespace!r} ({namespace_label}) is not watched",
                        namespace=namespace)
    here = {d.name: d for d in deployments if d.namespace == namespace}

    def unmapped(reason: str) -> Unmapped:
        return Unmapped(reason, namespace=namespace)

    named = _present(alert, labels.deployment)
    for label, value in named:
        if value in here:
            return AlertTarget(namespace=namespace, deployment=value, mapped_by=label)

    pods = _present(alert, labels.pod)
    why_not: list[str] = []
    for label, pod in pods:
        owner = _pod_owner(pod, namespace, replicasets)
        if owner is None:
            why_not.append(f"pod {pod!r} ({label}) belongs to no ReplicaSet of a Deployment "
                           f"seen in {namespace}")
        elif owner not in here:
            why_not.append(f"pod {pod!r} ({label}) belongs to Deployment {owner!r}, which is "
                           f"not watched")
        else:
            return AlertTarget(namespace=namespace, deployment=owner, mapped_by=label)

    if named or pods:
        reasons = [f"deployment {value!r} ({label}) is not a watched Deployment in {namespace}"
                   for label, value in named] + why_not
        return unmapped("; ".join(reasons))

    workload = _present(alert, labels.workload)
    for label, value in workload:
        matches = sorted(name for name, deployment in here.items()
                         if _is_workload(deployment, value))
        if len(matches) == 1:
            return AlertTarget(namespace=namespace, deployment=matches[0], mapped_by=label)
        if len(matches) > 1:
            return unmapped(f"ambiguous: {label}={value!r} matches Deployments "
                            f"{', '.join(matches)} in {namespace}")
    if workload:
        tried = ", ".join(f"{label}={value!r}" for label, value in workload)
        return unmapped(f"no watched Deployment in {namespace} matches {tried}")
    return unmapped("no deployment, pod or workload label "
                    f"({_names(labels.deployment + labels.pod + labels.workload)})")


def _first(alert: Alert, names: Sequence[str]) -> tuple[str, str] | None:
    present = _present(alert, names)
    return present[0] if present else None


def _present(alert: Alert, names: Sequence[str]) -> list[tuple[str, str]]:
    """(label, value) for each of ``names`` the alert carries; an empty value is no label, as
    in Prometheus."""
    out = []
    for name in names:
        value = alert.label(name)
        if value:
            out.append((name, value))
    return out


def _pod_owner(pod: str, namespace: str, replicasets: Sequence[ReplicaSet]) -> str | None:
    """The Deployment of the ReplicaSet that owns the pod, by name; the longest ReplicaSet name
    wins should two prefix it (``web-5d4f`` and ``web-5d4f-x``)."""
    owners = [rs for rs in replicasets
              if rs.namespace == namespace and rs.deployment and owns_pod(rs.name, pod)]
    if not owners:
        return None
    return max(owners, key=lambda rs: len(rs.name)).deployment


def _is_workload(deployment: Deployment, value: str) -> bool:
    return deployment.name == value or any(
        deployment.pod_label(key) == value for key in WORKLOAD_POD_LABELS)


def _names(names: Sequence[str]) -> str:
    return "looked for: " + (", ".join(names) if names else "none configured")
