"""The bodies the remediation writes send, and the choice of stuck pods: pure, no I/O.

Each body is the one kubectl sends for the same command (see ``executor.py`` for the calls and
the precondition each carries); kept apart from the calls so that a body can be read and tested
without a client, and so that the executor changes only when the way of calling does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..model import REVISION_ANNOTATION
from ..sources.kube_objects import POD_TEMPLATE_HASH_LABEL, parse_timestamp

# Patch media types (kube-apiserver answers 415 to a PATCH sent as plain application/json).
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

DRY_RUN_ALL = "All"
RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"

# Annotations kubectl keeps from the Deployment instead of copying them from the ReplicaSet on
# a rollback (k8s.io/kubectl/pkg/polymorphichelpers/rollback.go, annotationsToSkip).
ROLLBACK_SKIPPED_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})

@dataclass(frozen=True, slots=True)
class StuckPod:
    name: str
    uid: str
    # When the pod should have been gone, with the slack given (see ``stuck_pods``).
    overdue_since: datetime




def rollback_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's ``spec.template`` as kubectl puts it back on the Deployment: a copy with
    the ``pod-template-hash`` label removed (the controller adds it to the ReplicaSet it makes),
    everything else untouched."""
    restored = copy.deepcopy(dict(template))
    metadata = restored.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("labels"), dict):
        metadata["labels"] = {k: v for k, v in metadata["labels"].items()
                              if k != POD_TEMPLATE_HASH_LABEL}
    return restored


def rollback_annotations(deployment_annotations: Mapping[str, str],
                         replicaset_annotations: Mapping[str, str]) -> dict[str, str]:
    """The Deployment's annotations after a rollback, as kubectl computes them: its own values of
    the skipped (controller-owned) annotations, and the target ReplicaSet's values of the rest."""
    kept = {k: v for k, v in deployment_annotations.items() if k in ROLLBACK_SKIPPED_ANNOTATIONS}
    copied = {k: v for k, v in replicaset_annotations.items()
              if k not in ROLLBACK_SKIPPED_ANNOTATIONS}
    return {**kept, **copied}


def rollback_patch(template: Mapping[str, Any], *, resource_version: str,
                   annotations: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The JSON patch of ``kubectl rollout undo``, guarded by a ``test`` op on the version seen.
    With ``annotations`` (``rollback_annotations``), they replace the Deployment's, as kubectl
    does; without, the annotations are left alone."""
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/spec/template", "value": rollback_template(template)},
    ]
    if annotations is not None:
        ops.append({"op": "replace", "path": "/metadata/annotations", "value": dict(annotations)})
    return ops


def restart_patch(*, now: datetime, resource_version: str) -> dict[str, Any]:
    """``kubectl rollout restart``'s patch (RFC 3339 seconds in UTC, as kubectl writes it), plus
    the resourceVersion that makes the API server refuse it if the Deployment moved."""
    return {"metadata": {"resourceVersion": resource_version},
            "spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT_ANNOTATION: rfc3339_seconds(now)}}}}}


def rfc3339_seconds(moment: datetime) -> str:
    """``2026-11-26T10:54:41Z``: Go's ``time.RFC3339`` of a UTC time (a naive one is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pause_patch(*, resource_version: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": resource_version}, "spec": {"paused": True}}


def scale_patch(*, replicas: int, resource_version: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}


def delete_options(*, uid: str, dry_run: bool,
                   grace_period_seconds: int | None = None) -> dict[str, Any]:
    """The DeleteOptions body. ``dryRun`` must be here: when a DELETE has a body, kube-apiserver
    decodes the options from it alone and ignores the query string."""
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1",
                               "preconditions": {"uid": uid}}
    if grace_period_seconds is not None:
        options["gracePeriodSeconds"] = grace_period_seconds
    if dry_run:
        options["dryRun"] = [DRY_RUN_ALL]
    return options


def stuck_pods(pods: Iterable[Any], *, now: datetime) -> tuple[StuckPod, ...]:
    """The pods (raw API objects) stuck ``Terminating``: a ``deletionTimestamp`` that is past by
    more than the pod's ``deletionGracePeriodSeconds``.

    The API server sets ``deletionTimestamp`` to the time of the delete *plus* the grace period,
    so the pod is already late at that moment; one more grace period of slack leaves a kubelet
    that is merely slow to report the time to do so, since a force delete of a pod that is still
    running lets its replacement run beside it. Pods with finalizers are left out: a force delete
    does not remove finalizers, their controller has to. Sorted by name.
    """
    found: list[StuckPod] = []
    for pod in pods:
        metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
        if not isinstance(metadata, Mapping):
            continue
        name, uid = metadata.get("name"), metadata.get("uid")
        deleting_at = parse_timestamp(metadata.get("deletionTimestamp"))
        if not isinstance(name, str) or not name or not isinstance(uid, str) or not uid \
                or deleting_at is None or metadata.get("finalizers"):
            continue
        grace = metadata.get("deletionGracePeriodSeconds")
        if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
            grace = 0
        try:
            overdue_since = deleting_at + timedelta(seconds=grace)
        except OverflowError:
            continue
        if now > overdue_since:
            found.append(StuckPod(name=name, uid=uid, overdue_since=overdue_since))
    return tuple(sorted(found, key=lambda p: p.name))


def is_failed_test(status: int, body: Mapping[str, Any]) -> bool:
    """Whether a 422 is a JSON patch ``test`` op that failed (the view was stale) rather than an
    invalid object: kube-apiserver answers the former with a bare ``Invalid`` Status, no field
    causes and no details, and the latter naming the object and each invalid field."""
    if status != 422:
        return False
    details = body.get("details")
    details = details if isinstance(details, Mapping) else {}
    message = body.get("message")
    if isinstance(message, str) and "test" in message.lower() and "fail" in message.lower():
        return True
    return body.get("reason") == "Invalid" and not details.get("causes") \
        and not details.get("name")
