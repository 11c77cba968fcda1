"""The remediation writes, each the API call kubectl makes, each guarded by a precondition.

Every write carries what was seen when the incident was raised, so that a decision taken on an
old view of the cluster cannot land on a newer one:

- ``rollback``: a JSON patch whose first op tests ``/metadata/resourceVersion``, as
  ``kubectl rollout undo --to-revision`` sends it (the target ReplicaSet's template without its
  ``pod-template-hash`` label);
- ``restart`` and ``pause``: kubectl's strategic merge patches, which have no test op, so the
  patch carries ``metadata.resourceVersion`` and the API server refuses it with 409 if it moved;
- ``scale``: a merge patch of the ``scale`` subresource with the same ``resourceVersion``, as
  ``kubectl scale --resource-version`` sends it;
- ``delete_pod`` / ``delete_stuck_pods``: DELETE with ``preconditions.uid``, so that a pod
  recreated under the same name is left alone.

``dry_run=True`` sends ``dryRun=All``: the API server validates and admits the write for real and
persists nothing. Outcomes come back as an ``ActionResult``; transport failures, 429 and 5xx are
raised as a retryable ``SourceError`` (the write is idempotent: retrying it is safe), and nothing
else escapes.

The low-level request is ``kube_http.request``'s, with the content type a patch needs and the
Status of a refusal kept (a 422 of a failed ``test`` op is told apart from an invalid template
by it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from ..errors import SourceError
from ..model import REVISION_ANNOTATION, Deployment
from ..sources.kube_http import (
    AUTH_SETTINGS,
    JSON_MEDIA_TYPE,
    SOURCE,
    namespaced_path,
    redact_credentials,
    request,
    status_body,
    status_error,
    transport_error,
)
from ..sources.kube_objects import parse_deployment

# The bodies are built in patches (pure); imported here for the calls and re-exported so that
# callers and tests import them from this module as before.
from .patches import (  # noqa: F401
    JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, DRY_RUN_ALL, RESTARTED_AT_ANNOTATION,
    ROLLBACK_SKIPPED_ANNOTATIONS, StuckPod, rollback_template, rollback_annotations,
    rollback_patch, restart_patch, rfc3339_seconds, pause_patch, scale_patch, delete_options,
    stuck_pods, is_failed_test,
)

# Action names, as the guardrails, the audit trail and the Slack buttons spell them.
ROLLBACK, RESTART, PAUSE, SCALE = "rollback", "restart", "pause", "scale"
DELETE_POD, DELETE_STUCK_PODS = "delete-pod", "delete-stuck-pods"

# Outcomes of an action.
APPLIED, DRY_RUN_OK, ALREADY_DONE = "applied", "dry_run_ok", "already_done"
STALE, FORBIDDEN, FAILED = "stale", "forbidden", "failed"
OUTCOMES = frozenset({APPLIED, DRY_RUN_OK, ALREADY_DONE, STALE, FORBIDDEN, FAILED})

# What each action asks of RBAC, as (API group, resource, verb): the remediation overlay in
# k8s/ must grant exactly these. "get" on deployments is the one refetch after a stale refusal,
# to say what changed; "list" on pods is how delete-stuck-pods finds them.
_DEPLOYMENT_PATCH = (("apps", "deployments", "patch"), ("apps", "deployments", "get"))
ACTION_PERMISSIONS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # ...and the target ReplicaSet's template, read just before the write.
    ROLLBACK: (*_DEPLOYMENT_PATCH, ("apps", "replicasets", "get")),
    RESTART: _DEPLOYMENT_PATCH,
    PAUSE: _DEPLOYMENT_PATCH,
    SCALE: (("apps", "deployments/scale", "patch"), ("apps", "deployments", "get")),
    DELETE_POD: (("", "pods", "delete"),),
    DELETE_STUCK_PODS: (("", "pods", "list"), ("", "pods", "delete")),
}

_DEPLOYMENT = dict(group="apps", version="v1", resource="deployments")
_PODS = dict(group="", version="v1", resource="pods")


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What one action did. ``target`` is ``namespace/name`` (``namespace/selector`` for
    delete-stuck-pods); ``resource_version_after`` is the object's version in the answer."""

    action: str
    target: str
    dry_run: bool
    outcome: str
    message: str
    resource_version_after: str | None = None
    # A write refused as stale: the Deployment as it is now (the one GET after the refusal),
    # so that the caller can tell a status that moved from a spec that changed.
    now: Deployment | None = None


# ---------------------------------------------------------------------------------------------
# The executor.


# Whether a refetched Deployment already has what an action would set.
Done = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class _Answer:
    """One answer that is not a transport failure nor a 429/5xx."""

    status: int
    body: Mapping[str, Any]


class KubeExecutor:
    """Runs the remediation actions through ``api``; one request per action (plus one GET to say
    what changed when a precondition fails)."""

    def __init__(self, *, api: kubernetes.client.ApiClient, timeout: float) -> None:
        self._api = api
        self._timeout = timeout

    # -- Deployment actions ---------------------------------------------------------------------

    async def rollback(self, namespace: str, deployment: str, *, to_template: Mapping[str, Any],
                       resource_version: str, dry_run: bool,
                       annotations: Mapping[str, str] | None = None) -> ActionResult:
        """Put ``to_template`` (the target ReplicaSet's ``spec.template``) back on the
        Deployment. A rollback already in place (the precondition failed because it ran
        before) comes back ``already_done``."""
        wanted = rollback_template(to_template)
        return await self._patch_deployment(
            ROLLBACK, namespace, deployment,
            body=rollback_patch(to_template, resource_version=resource_version,
                                annotations=annotations),
            content_type=JSON_PATCH, resource_version=resource_version, dry_run=dry_run,
            done=lambda current: _dict(current.get("spec")).get("template") == wanted)

    async def restart(self, namespace: str, deployment: str, *, resource_version: str,
                      now: datetime, dry_run: bool) -> ActionResult:
        """``kubectl rollout restart``, stamped ``now`` (so a resumed restart sends the same
        patch and is recognised as done)."""
        stamp = rfc3339_seconds(now)
        return await self._patch_deployment(
            RESTART, namespace, deployment,
            body=restart_patch(now=now, resource_version=resource_version),
            content_type=STRATEGIC_MERGE_PATCH, resource_version=resource_version,
            dry_run=dry_run,
            done=lambda current: _template_annotations(current).get(RESTARTED_AT_ANNOTATION)
            == stamp)

    async def pause(self, namespace: str, deployment: str, *, resource_version: str,
                    dry_run: bool) -> ActionResult:
        """``kubectl rollout pause``."""
        return await self._patch_deployment(
            PAUSE, namespace, deployment, body=pause_patch(resource_version=resource_version),
            content_type=STRATEGIC_MERGE_PATCH, resource_version=resource_version,
            dry_run=dry_run, done=lambda current: _dict(current.get("spec")).get("paused") is True)

    async def scale(self, namespace: str, deployment: str, *, replicas: int,
                    resource_version: str, dry_run: bool) -> ActionResult:
        """``kubectl scale --resource-version``: a merge patch of the scale subresource (the
        Scale's resourceVersion is the Deployment's)."""
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            return ActionResult(SCALE, f"{namespace}/{deployment}", dry_run, FAILED,
                                f"not a replica count: {replicas!r}")
        return await self._patch_deployment(
            SCALE, namespace, deployment,
            body=scale_patch(replicas=replicas, resource_version=resource_version),
            content_type=MERGE_PATCH, resource_version=resource_version, dry_run=dry_run,
            subresource="scale",
            done=lambda current: _dict(current.get("spec")).get("replicas") == replicas)

    async def _patch_deployment(self, action: str, namespace: str, deployment: str, *,
                                body: Any, content_type: str, resource_version: str,
                                dry_run: bool, done: Done,
                                subresource: str | None = None) -> ActionResult:
        target = f"{namespace}/{deployment}"
        path = namespaced_path(**_DEPLOYMENT, namespace=namespace, name=deployment)
        if subresource:
            path = f"{path}/{subresource}"
        what = f"{action} of deployment {deployment!r} in namespace {namespace!r}"
        answer = await asyncio.to_thread(self._write, "PATCH", path, body=body,
                                         content_type=content_type, dry_run=dry_run, what=what)
        if 200 <= answer.status <= 299:
            return _success(action, target, dry_run, answer, what)
        if answer.status == 409 or is_failed_test(answer.status, answer.body):
            return await self._stale(action, namespace, deployment, dry_run=dry_run,
                                     seen=resource_version, done=done)
        return _refusal(action, target, dry_run, answer, what)

    async def _stale(self, action: str, namespace: str, deployment: str, *, dry_run: bool,
                     seen: str, done: Done) -> ActionResult:
        """The precondition failed: one GET to say what the Deployment is now."""
        target = f"{namespace}/{deployment}"
        path = namespaced_path(**_DEPLOYMENT, namespace=namespace, name=deployment)
        try:
            raw = await asyncio.to_thread(
                request, self._api, "GET", path, timeout=self._timeout,
                what=f"reading deployment {deployment!r} in namespace {namespace!r}")
        except SourceError as exc:
            if exc.status == 404:
                return ActionResult(action, target, dry_run, STALE,
                                    f"deployment {target} no longer exists (it was at "
                                    f"resourceVersion {seen} when the incident was raised)")
            return ActionResult(action, target, dry_run, STALE,
                                f"deployment {target} changed since resourceVersion {seen} "
                                f"(what it is now is unknown: {exc.message})")
        current = _json_object(raw)
        metadata = _dict(current.get("metadata"))
        now_version = metadata.get("resourceVersion")
        revision = _dict(metadata.get("annotations")).get(REVISION_ANNOTATION)
        changed = (f"deployment {target} changed since the incident: resourceVersion {seen} "
                   f"then, {now_version} now, at revision {revision}")
        if done(current):
            return ActionResult(action, target, dry_run, ALREADY_DONE,
                                f"{changed}, and it already has what the {action} would set",
                                _str(now_version))
        return ActionResult(action, target, dry_run, STALE,
                            f"{changed}; refused rather than applied to a newer state",
                            _str(now_version), now=parse_deployment(current))

    async def replicaset_template(self, namespace: str, replicaset: str) -> dict[str, Any]:
        """The ``spec.template`` of a ReplicaSet as the API returns it: what a rollback puts
        back on the Deployment."""
        path = namespaced_path(group="apps", version="v1", resource="replicasets",
                               namespace=namespace, name=replicaset)
        body = await asyncio.to_thread(
            request, self._api, "GET", path, timeout=self._timeout,
            what=f"reading replicaset {replicaset!r} in namespace {namespace!r}")
        template = _dict(_json_object(body).get("spec")).get("template")
        if not isinstance(template, dict):
            raise SourceError(SOURCE, "unexpected_shape",
                              f"replicaset {replicaset!r} has no spec.template", retryable=False)
        return template

    # -- Pod actions ---------------------------------------------------------------------------

    async def delete_pod(self, namespace: str, pod: str, *, uid: str,
                         dry_run: bool) -> ActionResult:
        """Delete one pod (its controller makes a new one), only if it is still the pod ``uid``."""
        return await self._delete_pod(DELETE_POD, namespace, pod, uid=uid, dry_run=dry_run,
                                      grace_period_seconds=None)

    async def delete_stuck_pods(self, namespace: str, *, selector: str, now: datetime,
                                dry_run: bool) -> ActionResult:
        """Force-delete (grace period 0, uid precondition) the pods matching ``selector`` that
        are stuck Terminating (``stuck_pods``)."""
        target = f"{namespace}/{selector}"
        path = namespaced_path(**_PODS, namespace=namespace)
        try:
            raw = await asyncio.to_thread(
                request, self._api, "GET", path, query=[("labelSelector", selector)],
                timeout=self._timeout,
                what=f"listing pods {selector!r} in namespace {namespace!r}")
        except SourceError as exc:
            if exc.retryable:
                raise
            outcome = FORBIDDEN if exc.status == 403 else FAILED
            return ActionResult(DELETE_STUCK_PODS, target, dry_run, outcome, exc.message)
        items = _json_object(raw).get("items")
        chosen = stuck_pods(items if isinstance(items, list) else [], now=now)
        if not chosen:
            return ActionResult(DELETE_STUCK_PODS, target, dry_run, ALREADY_DONE,
                                f"no pod matching {selector!r} in namespace {namespace!r} is "
                                f"stuck Terminating")
        results = [await self._delete_pod(DELETE_STUCK_PODS, namespace, pod.name, uid=pod.uid,
                                          dry_run=dry_run, grace_period_seconds=0)
                   for pod in chosen]
        for worst in (FORBIDDEN, FAILED):
            if any(r.outcome == worst for r in results):
                break
        else:
            worst = DRY_RUN_OK if dry_run else APPLIED
            if all(r.outcome in (ALREADY_DONE, STALE) for r in results):
                worst = ALREADY_DONE
        message = "; ".join(f"{r.target.split('/', 1)[1]}: {r.outcome} ({r.message})"
                            for r in results)
        return ActionResult(DELETE_STUCK_PODS, target, dry_run, worst,
                            f"{len(chosen)} pod(s) stuck Terminating: {message}")

    async def _delete_pod(self, action: str, namespace: str, pod: str, *, uid: str,
                          dry_run: bool, grace_period_seconds: int | None) -> ActionResult:
        target = f"{namespace}/{pod}"
        path = namespaced_path(**_PODS, namespace=namespace, name=pod)
        what = f"{action} of pod {pod!r} in namespace {namespace!r}"
        answer = await asyncio.to_thread(
            self._write, "DELETE", path, content_type=JSON_MEDIA_TYPE, dry_run=dry_run, what=what,
            body=delete_options(uid=uid, dry_run=dry_run,
                                grace_period_seconds=grace_period_seconds))
        if 200 <= answer.status <= 299:
            return _success(action, target, dry_run, answer, what)
        if answer.status == 404:
            return ActionResult(action, target, dry_run, ALREADY_DONE,
                                f"pod {target} is already gone")
        if answer.status == 409:
            # The uid precondition failed: the name now belongs to a new pod.
            return ActionResult(action, target, dry_run, STALE,
                                f"pod {target} was replaced by a new pod of the same name (uid "
                                f"{uid} is gone); the new one is left alone")
        return _refusal(action, target, dry_run, answer, what)

    # -- the request -----------------------------------------------------------------------------

    def _write(self, method: str, path: str, *, body: Any, content_type: str, dry_run: bool,
               what: str) -> _Answer:
        """``kube_http.request`` with ``content_type``, answering any 2xx-4xx but 429 (transport
        failures, 429 and 5xx raise a retryable ``SourceError``). Blocking."""
        headers = {"Accept": JSON_MEDIA_TYPE, "Content-Type": content_type}
        query = [("dryRun", DRY_RUN_ALL)] if dry_run else []
        response = None
        try:
            serialized = self._api.param_serialize(method, path, query_params=query,
                                                   header_params=headers, body=body,
                                                   auth_settings=AUTH_SETTINGS)
            response = self._api.call_api(*serialized, _request_timeout=self._timeout)
            data = response.read()
        except ApiException as exc:
            message = f"{what}: TLS with {self._api.configuration.host} failed ({exc.reason})"
            raise SourceError(SOURCE, "connection", redact_credentials(self._api, message),
                              retryable=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise transport_error(self._api, exc, what, timeout=self._timeout) from None
        finally:
            if response is not None:
                response.response.release_conn()
        if response.status == 429 or response.status >= 500:
            raise status_error(self._api, response.status, headers=response.headers, body=data,
                                what=what)
        if 200 <= response.status <= 299:
            return _Answer(response.status, _json_object(data))
        status = dict(status_body(data))
        if isinstance(status.get("message"), str):
            status["message"] = redact_credentials(self._api, status["message"])
        return _Answer(response.status, status)


def _success(action: str, target: str, dry_run: bool, answer: _Answer, what: str) -> ActionResult:
    version = _str(_dict(answer.body.get("metadata")).get("resourceVersion"))
    if dry_run:
        return ActionResult(action, target, True, DRY_RUN_OK,
                            f"{what}: accepted by the API server with dryRun=All (nothing "
                            f"persisted)", version)
    return ActionResult(action, target, False, APPLIED, f"{what}: applied", version)


def _refusal(action: str, target: str, dry_run: bool, answer: _Answer, what: str
             ) -> ActionResult:
    message = _str(answer.body.get("message")) or f"HTTP {answer.status} from the API server"
    outcome = FORBIDDEN if answer.status == 403 else FAILED
    return ActionResult(action, target, dry_run, outcome, f"{what}: {message}")


def _json_object(data: bytes) -> Mapping[str, Any]:
    try:
        decoded = json.loads(data)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _template_annotations(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    template = _dict(_dict(deployment.get("spec")).get("template"))
    return _dict(_dict(template.get("metadata")).get("annotations"))


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "ACTION_PERMISSIONS", "ActionResult", "ALREADY_DONE", "APPLIED", "delete_options",
    "DELETE_POD", "DELETE_STUCK_PODS", "Done", "DRY_RUN_ALL", "DRY_RUN_OK", "FAILED",
    "FORBIDDEN", "is_failed_test", "JSON_PATCH", "KubeExecutor", "MERGE_PATCH", "OUTCOMES",
    "PAUSE", "pause_patch", "RESTART", "restart_patch", "RESTARTED_AT_ANNOTATION",
    "rfc3339_seconds", "ROLLBACK", "rollback_annotations", "rollback_patch",
    "ROLLBACK_SKIPPED_ANNOTATIONS", "rollback_template", "SCALE", "scale_patch", "STALE",
    "STRATEGIC_MERGE_PATCH", "stuck_pods", "StuckPod",
]
