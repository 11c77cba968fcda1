"""What changed in one object between two snapshots, as one compact ``Change``; pure.

The watches (``sources.changes_watch``) keep a small ``ObjectState`` per object, never the object
itself: each comparable field is a path (``data.TIMEOUT_MS``, ``spec.replicas``,
``spec.rules[shop.example.com/api]``) with a short display value and a digest of the full value.
Two snapshots are compared by digest; the display values are what a person reads.

What does not matter is never compared: status, resourceVersion, managedFields and the
annotations tools write for their own bookkeeping (``NOISE_ANNOTATIONS``). A change of only those
gives no ``Change`` at all.

Who and when come from ``metadata.managedFields``: the newest entry that is not a ``status``
write, preferably one that owns a changed field. Its time is the ``Change``'s ``at`` (the API
server keeps whole seconds); without one, ``now``.

Secrets: a Secret's values are never read into a snapshot. The watch keeps an HMAC of each value,
keyed by a random key that lives only in the process's memory, so that no digest anywhere can be
checked against a guessed value offline; its ``FieldChange`` names the key and says it is hidden,
with no before or after.

Size: at most ``MAX_FIELDS`` fields per change (the last one says how many more), values clipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..model import (
    CREATED,
    DELETED,
    UPDATED,
    Change,
    Deployment,
    FieldChange,
    PodTemplate,
    ReplicaSet,
    TemplateChange,
)
from .changes import MORE_KIND, template_changes

if TYPE_CHECKING:  # the correlator's type only: no import at run time
    from .correlator import Rollout

# At most this many FieldChanges per Change; past it, the last one says how many more there were.
MAX_FIELDS = 20
# Annotations that tools rewrite for their own bookkeeping: never a change on their own.
NOISE_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.daemonset.template.generation",
    # Leader election on ConfigMaps and Endpoints (client-go before Leases): renewed every few
    # seconds.
    "control-plane.alpha.kubernetes.io/leader",
    # HPA autoscaling/v1 keeps v2 fields and its conditions here.
    "autoscaling.alpha.kubernetes.io/conditions",
    "autoscaling.alpha.kubernetes.io/current-metrics",
    "autoscaling.alpha.kubernetes.io/metrics",
    "autoscaling.alpha.kubernetes.io/behavior",
})
# The field that stands for a workload's pod template (its digest covers the whole template).
TEMPLATE_PATH = "spec.template"
STATUS_SUBRESOURCE = "status"
WORKLOAD_KINDS = frozenset({"StatefulSet", "DaemonSet"})


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One comparable field: what a person may read (None when not shown) and a digest of the
    whole value. ``hidden``: the value is a secret or looks like one, it is never shown."""

    shown: str | None
    digest: bytes = field(repr=False)
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Writer:
    """One ``managedFields`` entry: who wrote which fields, how and when."""

    manager: str
    operation: str | None = None
    at: datetime | None = None
    subresource: str | None = None
    # Field paths owned, two levels deep at most: "data.TIMEOUT_MS", "spec.replicas",
    # "metadata.labels".
    fields: frozenset[str] = frozenset()

    def owns(self, path: str) -> bool:
        return any(_covers(owned, path) for owned in self.fields)


@dataclass(frozen=True, slots=True)
class ObjectState:
    """What is kept of one watched object: enough to tell what changed, and who changed it."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    created_at: datetime | None = None
    # path -> value, in the order the fields are best read in.
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    writers: tuple[Writer, ...] = ()
    # StatefulSets and DaemonSets: their pod template, metadata.generation and the labels of
    # their pod template.
    template: PodTemplate | None = None
    generation: int | None = None
    pod_labels: tuple[tuple[str, str], ...] = ()
    # Services: the pod selector; NetworkPolicies: the matchLabels of their podSelector.
    selector: tuple[tuple[str, str], ...] = ()
    # Ingresses: ("<host>/<path>", Service name) of each backend that is a Service (the service
    # map's links from outside).
    backends: tuple[tuple[str, str], ...] = ()
    # NetworkPolicies: ("ingress" | "egress", the matchLabels of a peer's podSelector) of each
    # peer of the policy's own namespace (no namespaceSelector, no ipBlock).
    peers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


def _covers(owned: str, path: str) -> bool:
    """A managedFields path owns a changed path when one contains the other."""
    return (path == owned or path.startswith(owned + ".") or path.startswith(owned + "[")
            or owned.startswith(path + "."))


def writer_of(writers: Iterable[Writer], changed: Sequence[str]) -> Writer | None:
    """The entry that made the change: the newest that is not a status write, preferably one
    that owns a changed path."""
    candidates = [w for w in writers if w.subresource != STATUS_SUBRESOURCE]
    owning = [w for w in candidates if any(w.owns(path) for path in changed)]
    pool = owning or candidates
    if not pool:
        return None
    return _newest(pool)


def _newest(pool: Sequence[Writer]) -> Writer:
    """The newest by time; entries without one count as oldest; among equal times the later
    entry in the list wins (the API server appends)."""
    dated = [(w.at, index, w) for index, w in enumerate(pool) if w.at is not None]
    if dated:
        return max(dated, key=lambda entry: (entry[0], entry[1]))[2]
    return pool[-1]


def diff(old: ObjectState | None, new: ObjectState | None, *, now: datetime) -> Change | None:
    """The change from ``old`` to ``new`` (None: the object did not exist); None when nothing
    that matters changed."""
    if old is None and new is None:
        return None
    if new is None:
        assert old is not None
        return Change(namespace=old.namespace, kind=old.kind, name=old.name, action=DELETED,
                      at=now, observed_at=now, uid=old.uid,
                      resource_version=old.resource_version)
    if old is not None and old.uid and new.uid and old.uid != new.uid:
        old = None  # deleted and created again under the same name within one watch
    action = CREATED if old is None else UPDATED
    before: Mapping[str, FieldValue] = old.fields if old is not None else {}
    changed = [path for path in _paths(before, new.fields)
               if _digest(before.get(path)) != _digest(new.fields.get(path))]
    if action == UPDATED and not changed:
        return None
    fields: list[FieldChange] = []
    revision = previous_revision = None
    for path in changed:
        if path == TEMPLATE_PATH and new.template is not None:
            previous_template = old.template if old is not None and old.template else PodTemplate()
            expanded = template_field_changes(template_changes(previous_template, new.template,
                                                               limit=MAX_FIELDS))
            fields.extend(expanded or (FieldChange(TEMPLATE_PATH),))
            revision = new.generation
            previous_revision = old.generation if old is not None else None
        else:
            fields.append(field_change(path, before.get(path), new.fields.get(path)))
    writer = writer_of(new.writers, changed)
    at = writer.at if writer is not None and writer.at is not None else now
    return Change(namespace=new.namespace, kind=new.kind, name=new.name, action=action, at=at,
                  observed_at=now, fields=bounded(fields),
                  manager=writer.manager if writer else None,
                  operation=writer.operation if writer else None, uid=new.uid,
                  resource_version=new.resource_version, revision=revision,
                  previous_revision=previous_revision)


def _paths(old: Mapping[str, FieldValue], new: Mapping[str, FieldValue]) -> list[str]:
    """Every path, in the new object's order, then the removed ones in the old object's."""
    return [*new, *(path for path in old if path not in new)]


def _digest(value: FieldValue | None) -> bytes | None:
    return value.digest if value is not None else None


def field_change(path: str, before: FieldValue | None, after: FieldValue | None) -> FieldChange:
    if (before is not None and before.hidden) or (after is not None and after.hidden):
        return FieldChange(path, hidden=True)
    shown_before = before.shown if before is not None else None
    shown_after = after.shown if after is not None else None
    if shown_before is not None and shown_before == shown_after:
        # A summary ("2 rules", "<1200 chars>") that reads the same: say that it changed.
        shown_after = f"{shown_after} (changed)"
    return FieldChange(path, before=shown_before, after=shown_after)


def bounded(fields: Sequence[FieldChange], *, limit: int = MAX_FIELDS) -> tuple[FieldChange, ...]:
    if len(fields) <= limit:
        return tuple(fields)
    shown = list(fields[: limit - 1])
    return (*shown, FieldChange(f"({len(fields) - len(shown)} more fields)"))


# --- pod templates ----------------------------------------------------------------------------

_ARROW = " -> "
_ENV_CHANGE = re.compile(r"(?P<name>[^:\s]+): (?P<before>.*) -> (?P<after>.*)")
_RESOURCE_CHANGE = re.compile(r"(?P<key>\S+) (?P<before>.*) -> (?P<after>.*)")
_RESOURCE_ADDED = re.compile(r"(?P<key>\S+) added: (?P<after>.*)")
_RESOURCE_REMOVED = re.compile(r"(?P<key>\S+) removed \(was (?P<before>.*)\)")
_CONTAINER = re.compile(r"(?P<verb>added|removed) \(image (?P<image>.*)\)")


def template_field_changes(changes: Iterable[TemplateChange]) -> tuple[FieldChange, ...]:
    """``judge.changes.template_changes`` lines as FieldChanges: ``image api`` 1.4 -> 1.5,
    ``env api FEATURE_X`` off -> on, ``resources api limits.memory`` ... (values already
    redacted there)."""
    return tuple(_template_field(change) for change in changes)


def _template_field(change: TemplateChange) -> FieldChange:
    base = f"{change.kind} {change.container}".strip()
    detail = change.detail
    if change.kind == MORE_KIND:
        count = detail.removeprefix("... and ").split(" ", 1)[0]
        return FieldChange(f"({count} more template changes)")
    if "hidden" in detail or "not shown" in detail:
        name = ""
        if change.kind == "env":
            name = detail.removeprefix("added ").split(" ", 1)[0].rstrip(":")
        return FieldChange(f"{base} {name}".strip(), hidden=True)
    if change.kind in ("configmap", "secret"):
        verb, _, ref = detail.partition(" ")
        if verb == "added":
            return FieldChange(base, after=ref)
        if verb == "removed":
            return FieldChange(base, before=ref)
    if change.kind == "container" and (match := _CONTAINER.fullmatch(detail)):
        image = f"image {match['image']}"
        if match["verb"] == "added":
            return FieldChange(base, after=image)
        return FieldChange(base, before=image)
    if change.kind == "env":
        if detail.startswith("added "):
            name, _, value = detail[6:].partition("=")
            if not _ or " from " in name:
                name, _, source = detail[6:].partition(" from ")
                return FieldChange(f"{base} {name}", after=f"from {source}" if source else None)
            return FieldChange(f"{base} {name}", after=value)
        if detail.startswith("removed "):
            return FieldChange(f"{base} {detail[8:]}", before="(set)")
        if match := _ENV_CHANGE.fullmatch(detail):
            return FieldChange(f"{base} {match['name']}", before=match["before"],
                               after=match["after"])
    if change.kind == "resources":
        for pattern in (_RESOURCE_ADDED, _RESOURCE_REMOVED, _RESOURCE_CHANGE):
            if match := pattern.fullmatch(detail):
                groups = match.groupdict()
                return FieldChange(f"{base} {groups['key']}", before=groups.get("before"),
                                   after=groups.get("after"))
    if _ARROW in detail and change.kind in ("image", "command", "args"):
        before, _, after = detail.partition(_ARROW)
        return FieldChange(base, before=before, after=after)
    return FieldChange(base, after=detail)


# --- Deployments (from the detector's own Deployment watch) --------------------------------------


def deployment_change(old: Deployment | None, new: Deployment | None, *,
                      replicasets: Sequence[ReplicaSet], now: datetime) -> Change | None:
    """A Deployment's rollout (its revision changed), scale or pause; None when only its status
    moved. ``replicasets``: the namespace's ReplicaSets, for what the rollout changed."""
    if old is None and new is None:
        return None
    if new is None:
        assert old is not None
        return Change(namespace=old.namespace, kind="Deployment", name=old.name, action=DELETED,
                      at=now, observed_at=now, uid=old.uid, resource_version=old.resource_version)
    if old is not None and old.uid and new.uid and old.uid != new.uid:
        old = None
    at = new.spec_written_at or now
    common = dict(namespace=new.namespace, kind="Deployment", name=new.name, at=at,
                  observed_at=now, manager=new.spec_manager, operation=new.spec_operation,
                  uid=new.uid, resource_version=new.resource_version)
    owned = [rs for rs in replicasets if rs.namespace == new.namespace
             and rs.deployment == new.name and (not new.uid or not rs.deployment_uid
                                                or rs.deployment_uid == new.uid)]
    if old is None:
        current = _at_revision(owned, new.revision)
        fields = template_field_changes(template_changes(PodTemplate(), current.template,
                                                         limit=MAX_FIELDS)) if current else ()
        return Change(action=CREATED, fields=bounded(fields), revision=new.revision, **common)
    fields: list[FieldChange] = []
    revision = previous_revision = None
    if new.revision is not None and new.revision != old.revision:
        revision, previous_revision = new.revision, old.revision
        current, previous = _at_revision(owned, new.revision), _at_revision(owned, old.revision)
        expanded: tuple[FieldChange, ...] = ()
        if current is not None and previous is not None:
            expanded = template_field_changes(template_changes(previous.template,
                                                               current.template,
                                                               limit=MAX_FIELDS))
        fields.extend(expanded or (FieldChange(TEMPLATE_PATH),))
    if new.replicas != old.replicas:
        fields.append(FieldChange("spec.replicas", str(old.replicas), str(new.replicas)))
    if new.paused != old.paused:
        fields.append(FieldChange("spec.paused", _bool(old.paused), _bool(new.paused)))
    if not fields and _generation(new) > _generation(old):
        # Another part of the spec (its strategy, or the template of a paused Deployment).
        fields.append(FieldChange("spec"))
    if not fields:
        return None
    return Change(action=UPDATED, fields=bounded(fields), revision=revision,
                  previous_revision=previous_revision, **common)


def _at_revision(replicasets: Sequence[ReplicaSet], revision: int | None) -> ReplicaSet | None:
    if revision is None:
        return None
    for rs in replicasets:
        if rs.revision == revision:
            return rs
    return None


def _generation(deployment: Deployment) -> int:
    return deployment.rollout.generation if deployment.rollout is not None else 0


def _bool(value: bool) -> str:
    return "true" if value else "false"


def rollout_change(rollout: Rollout, *, observed_at: datetime) -> Change:
    """A rollout as the timeline records it when no watch saw it happen (it came before the
    detector's start): read from its ReplicaSets, as the correlator reads it. Its
    resourceVersion is ``revision-<n>``: the record stands for the revision, whichever
    resourceVersion the Deployment has by now."""
    dep, rs, previous = rollout.deployment, rollout.replicaset, rollout.previous
    return Change(
        namespace=dep.namespace, kind="Deployment", name=dep.name, action=UPDATED,
        at=rollout.started_at, observed_at=observed_at,
        fields=bounded(template_field_changes(template_changes(
            previous.template, rs.template, limit=MAX_FIELDS))) or (FieldChange(TEMPLATE_PATH),),
        manager=dep.spec_manager, operation=dep.spec_operation, uid=dep.uid,
        resource_version=f"revision-{rs.revision}", revision=rs.revision,
        previous_revision=previous.revision)
