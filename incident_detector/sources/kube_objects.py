"""Kubernetes API objects into the project's dataclasses: pure parsers, no I/O.

Input is whatever JSON the server sent (a Deployment, ReplicaSet, pod or Warning Event as a
dict): every access checks the type, and an object that cannot be read is None, not an error.
Kept apart from the client (``kube.py``) and the watch machinery (``kube_watch.py``) so that a
change to the wire format touches one module, and so that these can be tested with plain
asserts. A pod template is read by ``kube_templates.py``; the type guards every parser uses are
in ``kube_json.py``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..judge.change_diff import Writer
from ..model import (
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    Deployment,
    GitOpsOwner,
    GitOpsTool,
    Pod,
    PodProblem,
    ReplicaSet,
    RolloutStatus,
    WarningEvent,
)
from .kube_json import _count, _dict, _list, _str, _str_map
from .kube_templates import parse_pod_template

# The label the Deployment controller puts on a ReplicaSet and on each of its pods.
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"

# A container restarted this many times is flagged even when it is running right now.
RESTART_THRESHOLD = 3

# Waiting reasons of a container that mean the revision cannot run.
WAITING_PROBLEMS: Mapping[str, PodProblem] = {
    "CrashLoopBackOff": PodProblem.CRASH_LOOP,
    "ImagePullBackOff": PodProblem.IMAGE_PULL,
    "ErrImagePull": PodProblem.ERR_IMAGE_PULL,
    "CreateContainerConfigError": PodProblem.CONFIG_ERROR,
}
OOM_KILLED_REASON = "OOMKilled"

# GitOps ownership marks.
ARGOCD_TRACKING_ID_ANNOTATION = "argocd.argoproj.io/tracking-id"
ARGOCD_INSTANCE_LABEL = "argocd.argoproj.io/instance"
FLUX_KUSTOMIZATION_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
FLUX_KUSTOMIZATION_NAMESPACE_LABEL = "kustomize.toolkit.fluxcd.io/namespace"
FLUX_HELMRELEASE_NAME_LABEL = "helm.toolkit.fluxcd.io/name"
FLUX_HELMRELEASE_NAMESPACE_LABEL = "helm.toolkit.fluxcd.io/namespace"

# The manager name of the Deployment and ReplicaSet controllers in managedFields.
CONTROLLER_MANAGER = "kube-controller-manager"
# The revision annotation as a managedFields (FieldsV1) path.
_REVISION_FIELD = "f:" + REVISION_ANNOTATION
# The ReplicaSet a Progressing condition's message names: 'ReplicaSet "x" is progressing.',
# 'ReplicaSet "x" has successfully progressed.', 'Created new replica set "x"', ...
_CONDITION_REPLICASET = re.compile(r'(?i)replica ?set "([a-z0-9][-a-z0-9.]*)"')

# Revisions are positive int64 values; anything longer is not one (and int() of a string with
# thousands of digits raises).
_REVISION = re.compile(r"[0-9]{1,19}")

WARNING = "Warning"
# A Warning's message in the brief: one line, at most this many characters.
EVENT_MESSAGE_MAX_CHARS = 300


def parse_replicaset(item: dict) -> ReplicaSet | None:
    metadata = _dict(_dict(item).get("metadata"))
    namespace, name = _str(metadata.get("namespace")), _str(metadata.get("name"))
    # created_at orders rollouts: a ReplicaSet without one cannot be placed, so it is skipped.
    created_at = parse_timestamp(metadata.get("creationTimestamp"))
    if not namespace or not name or created_at is None:
        return None
    revision, revision_raw = _revision(metadata)
    status = _dict(item.get("status"))
    pod_template_hash = _str_map(metadata.get("labels")).get(POD_TEMPLATE_HASH_LABEL)
    owner = controller_reference(metadata, kind="Deployment")
    return ReplicaSet(
        namespace=namespace,
        name=name,
        uid=_str(metadata.get("uid")) or "",
        deployment=_str(owner.get("name")) if owner else None,
        deployment_uid=(_str(owner.get("uid")) or "") if owner else "",
        reused=REVISION_HISTORY_ANNOTATION in _str_map(metadata.get("annotations")),
        revision_written_at=revision_written_at(metadata),
        revision=revision,
        revision_raw=revision_raw,
        created_at=created_at,
        # The API omits zero counts from status.
        replicas=_count(status.get("replicas")),
        ready_replicas=_count(status.get("readyReplicas")),
        template=parse_pod_template(_dict(_dict(item.get("spec")).get("template"))),
        pod_template_hash=pod_template_hash or None,
    )


def parse_deployment(item: dict) -> Deployment | None:
    metadata = _dict(_dict(item).get("metadata"))
    namespace, name = _str(metadata.get("namespace")), _str(metadata.get("name"))
    if not namespace or not name:
        return None
    spec = _dict(item.get("spec"))
    template_labels = _str_map(_dict(_dict(spec.get("template")).get("metadata")).get("labels"))
    status = _dict(item.get("status"))
    deadline = _progress_deadline_condition(status)
    progressing = _condition(status, "Progressing")
    named = _CONDITION_REPLICASET.search(_str(progressing.get("message")) or "")
    # The API defaults an omitted spec.replicas to 1.
    replicas = spec.get("replicas")
    return Deployment(
        namespace=namespace,
        name=name,
        uid=_str(metadata.get("uid")) or "",
        created_at=parse_timestamp(metadata.get("creationTimestamp")),
        progressing_replicaset=named.group(1) if named else None,
        progressing_updated_at=parse_timestamp(progressing.get("lastUpdateTime")) if named else None,
        resource_version=_str(metadata.get("resourceVersion")) or "",
        paused=spec.get("paused") is True,
        rollout=RolloutStatus(
            generation=_count(metadata.get("generation")),
            observed_generation=_count(status.get("observedGeneration")),
            updated_replicas=_count(status.get("updatedReplicas")),
            ready_replicas=_count(status.get("readyReplicas")),
            available_replicas=_count(status.get("availableReplicas")),
        ),
        revision=_revision(metadata)[0],
        replicas=_count(replicas) if replicas is not None else 1,
        pod_labels=tuple(sorted(template_labels.items())),
        progress_deadline_exceeded=deadline is not None,
        progress_message=_str(deadline.get("message")) if deadline is not None else None,
        gitops=detect_gitops(labels=_str_map(metadata.get("labels")),
                             annotations=_str_map(metadata.get("annotations"))),
        **_spec_writer(metadata),
    )


def _spec_writer(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``spec_manager``, ``spec_operation`` and ``spec_written_at``: the newest managedFields
    entry that owns a spec field and is not a status write. The controller's entry that owns
    only the revision annotation is left out (it follows every rollout, it makes none); a
    ``scale`` subresource entry counts (``kubectl scale``, an HPA)."""
    writers = [w for w in managed_writers(metadata)
               if w.subresource != "status" and any(f.startswith("spec") for f in w.fields)]
    dated = [(w.at, index, w) for index, w in enumerate(writers) if w.at is not None]
    if not dated:
        return {}
    writer = max(dated, key=lambda entry: (entry[0], entry[1]))[2]
    return {"spec_manager": writer.manager, "spec_operation": writer.operation,
            "spec_written_at": writer.at}


def managed_writers(metadata: Mapping[str, Any]) -> tuple[Writer, ...]:
    """The ``managedFields`` entries of an object, each with the field paths it owns two
    levels deep (``data.TIMEOUT_MS``, ``spec.replicas``, ``metadata.labels``)."""
    writers: list[Writer] = []
    for entry in map(_dict, _list(metadata.get("managedFields"))):
        manager = _str(entry.get("manager"))
        if not manager:
            continue
        owned: set[str] = set()
        for top, below in _dict(entry.get("fieldsV1")).items():
            if not isinstance(top, str) or not top.startswith("f:"):
                continue
            children = [key[2:] for key in _dict(below) if isinstance(key, str)
                        and key.startswith("f:")]
            if children:
                owned.update(sys.intern(f"{top[2:]}.{child}") for child in children)
            else:
                owned.add(sys.intern(top[2:]))
        operation = _str(entry.get("operation"))
        # Thousands of objects name the same few managers and fields: one copy of each.
        writers.append(Writer(manager=sys.intern(manager),
                              operation=sys.intern(operation) if operation else None,
                              at=parse_timestamp(entry.get("time")),
                              subresource=_str(entry.get("subresource")) or None,
                              fields=frozenset(owned)))
    return tuple(writers)


def _progress_deadline_condition(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    condition = _condition(status, "Progressing")
    if condition.get("status") == "False" and condition.get("reason") == "ProgressDeadlineExceeded":
        return condition
    return None


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for condition in map(_dict, _list(status.get("conditions"))):
        if condition.get("type") == kind:
            return condition
    return {}


def revision_written_at(metadata: Mapping[str, Any]) -> datetime | None:
    """When kube-controller-manager last wrote the revision annotation (``managedFields``).

    The entry's time is that of the manager's last write to *any* field it owns in that entry
    (the replica count too), so it is an upper bound of the moment the revision changed; the
    correlator takes the earliest of the bounds it has.
    """
    latest: datetime | None = None
    for entry in map(_dict, _list(metadata.get("managedFields"))):
        if entry.get("manager") != CONTROLLER_MANAGER or entry.get("subresource"):
            continue
        annotations = _dict(_dict(_dict(entry.get("fieldsV1")).get("f:metadata")).get("f:annotations"))
        if _REVISION_FIELD not in annotations:
            continue
        at = parse_timestamp(entry.get("time"))
        if at is not None and (latest is None or at > latest):
            latest = at
    return latest


def parse_pod(item: dict) -> Pod | None:
    metadata = _dict(_dict(item).get("metadata"))
    namespace, name = _str(metadata.get("namespace")), _str(metadata.get("name"))
    if not namespace or not name:
        return None
    status = _dict(item.get("status"))
    statuses = [_dict(s) for key in ("initContainerStatuses", "containerStatuses")
                for s in _list(status.get(key))]
    return Pod(
        namespace=namespace,
        name=name,
        replicaset=controller_name(metadata, kind="ReplicaSet"),
        phase=_str(status.get("phase")) or "Unknown",
        ready=any(c.get("type") == "Ready" and c.get("status") == "True"
                  for c in map(_dict, _list(status.get("conditions")))),
        restarts=sum(_count(s.get("restartCount")) for s in statuses),
        problems=container_problems(statuses),
        created_at=parse_timestamp(metadata.get("creationTimestamp")),
        pod_template_hash=_str_map(metadata.get("labels")).get(POD_TEMPLATE_HASH_LABEL) or None,
        uid=_str(metadata.get("uid")) or "",
    )


def parse_warning_event(item: dict) -> WarningEvent | None:
    """A core/v1 Event of ``type: Warning``; None for any other type (a server or proxy that
    ignored the field selector) or an Event that says nothing (no reason and no message).

    ``count`` and ``last_seen`` come from whichever fields the writer filled: the legacy
    recorder (kubelet, controllers) sets ``count`` and ``lastTimestamp``; an events.k8s.io
    writer sets ``eventTime`` and, once it repeats, ``series``.
    """
    item = _dict(item)
    if item.get("type") != WARNING:
        return None
    reason = (_str(item.get("reason")) or "").strip()
    message = one_line(_str(item.get("message")) or "", limit=EVENT_MESSAGE_MAX_CHARS)
    if not reason and not message:
        return None
    involved = _dict(item.get("involvedObject"))
    series = _dict(item.get("series"))
    count = _count(item.get("count")) or _count(series.get("count")) or 1
    last_seen = None
    for value in (item.get("lastTimestamp"), item.get("eventTime"),
                  series.get("lastObservedTime"), item.get("firstTimestamp")):
        last_seen = parse_timestamp(value)
        if last_seen is not None:
            break
    return WarningEvent(reason=reason, message=message,
                        object_kind=_str(involved.get("kind")) or "",
                        object_name=_str(involved.get("name")) or "",
                        count=count, last_seen=last_seen)


def newest_first(events: Iterable[WarningEvent]) -> tuple[WarningEvent, ...]:
    """Newest ``last_seen`` first, Events without one last; equal times keep their order
    (``sorted`` is stable, ``reverse=True`` included)."""
    undated = datetime.min.replace(tzinfo=timezone.utc)
    return tuple(sorted(events, key=lambda e: e.last_seen or undated, reverse=True))


_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, *, limit: int) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, cut to
    ``limit`` characters with an ellipsis when longer."""
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    return text[:limit - 1].rstrip() + "…"


def container_problems(statuses: Iterable[Mapping[str, Any]]) -> tuple[PodProblem, ...]:
    """Problems seen on any container, each once, in the order of ``PodProblem``."""
    seen: set[PodProblem] = set()
    for container in statuses:
        state = _dict(container.get("state"))
        waiting_reason = _dict(state.get("waiting")).get("reason")
        if isinstance(waiting_reason, str) and waiting_reason in WAITING_PROBLEMS:
            seen.add(WAITING_PROBLEMS[waiting_reason])
        terminated = (_dict(state.get("terminated")),
                      _dict(_dict(container.get("lastState")).get("terminated")))
        if any(t.get("reason") == OOM_KILLED_REASON for t in terminated):
            seen.add(PodProblem.OOM_KILLED)
        if _count(container.get("restartCount")) >= RESTART_THRESHOLD:
            seen.add(PodProblem.RESTARTING)
    return tuple(problem for problem in PodProblem if problem in seen)


def detect_gitops(*, labels: Mapping[str, str],
                  annotations: Mapping[str, str]) -> GitOpsOwner | None:
    """Which GitOps controller manages an object, from the marks each one leaves on it.

    ``app.kubernetes.io/instance`` is not one of them: Helm sets it on everything it installs.
    """
    tracking_id = annotations.get(ARGOCD_TRACKING_ID_ANNOTATION)
    if isinstance(tracking_id, str):
        # "APP:GROUP/KIND:NAMESPACE/NAME"
        owner = _argocd_owner(tracking_id.partition(":")[0])
        if owner is not None:
            return owner
    instance = labels.get(ARGOCD_INSTANCE_LABEL)
    if isinstance(instance, str):
        owner = _argocd_owner(instance)
        if owner is not None:
            return owner
    # A HelmRelease is usually applied by a Kustomization: the Deployment's own labels name the
    # HelmRelease, whose helm-controller is what would revert a manual change.
    for kind, name_label, namespace_label in (
        ("helmrelease", FLUX_HELMRELEASE_NAME_LABEL, FLUX_HELMRELEASE_NAMESPACE_LABEL),
        ("kustomization", FLUX_KUSTOMIZATION_NAME_LABEL, FLUX_KUSTOMIZATION_NAMESPACE_LABEL),
    ):
        app = labels.get(name_label)
        if isinstance(app, str) and app:
            app_namespace = labels.get(namespace_label)
            return GitOpsOwner(tool=GitOpsTool.FLUX, app=app,
                               app_namespace=app_namespace if isinstance(app_namespace, str)
                               and app_namespace else None, flux_kind=kind)
    return None


def _argocd_owner(app: str) -> GitOpsOwner | None:
    """``APP``, or ``NAMESPACE_APP`` / ``NAMESPACE/APP`` for Applications outside argocd's own
    namespace. Kubernetes names contain neither ``_`` nor ``/``, so the split is unambiguous."""
    for separator in ("_", "/"):
        namespace, found, name = app.partition(separator)
        if found:
            if namespace and name:
                return GitOpsOwner(tool=GitOpsTool.ARGO_CD, app=name, app_namespace=namespace)
            return None
    return GitOpsOwner(tool=GitOpsTool.ARGO_CD, app=app) if app else None


def controller_reference(metadata: Mapping[str, Any], *, kind: str) -> Mapping[str, Any] | None:
    """The owner reference with ``controller: true``, the given kind and a name."""
    for owner in map(_dict, _list(metadata.get("ownerReferences"))):
        if owner.get("controller") is True and owner.get("kind") == kind and _str(owner.get("name")):
            return owner
    return None


def controller_name(metadata: Mapping[str, Any], *, kind: str) -> str | None:
    """Name of the owner reference with ``controller: true`` and the given kind."""
    owner = controller_reference(metadata, kind=kind)
    return _str(owner.get("name")) if owner else None


def micro_time(moment: datetime) -> str:
    """A ``metav1.MicroTime``: RFC 3339 in UTC with exactly six fractional digits.

    The API server parses these fields with the layout ``2006-01-02T15:04:05.000000Z07:00``, which
    rejects ``datetime.isoformat()`` output whenever the microseconds are zero (no fraction).
    A naive datetime is taken as UTC.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API (``2026-11-23T17:54:04Z``) as an aware UTC datetime."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # an offset that pushes year 1 or 9999 out of range
        return None


def _revision(metadata: Mapping[str, Any]) -> tuple[int | None, str | None]:
    raw = _str_map(metadata.get("annotations")).get(REVISION_ANNOTATION)
    if raw is None:
        return None, None
    return (int(raw) if _REVISION.fullmatch(raw) else None), raw
