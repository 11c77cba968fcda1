"""The remediation writes: the real ``kubernetes`` client against the loopback apiserver, each
request compared with what kubectl sent to a real kube-apiserver (tests/fixtures/kubernetes), and
the pure parts (bodies, the choice of stuck pods) with plain asserts."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apiserver import FakeApiServer, load_recording, status_response
from incident_detector.act import executor
from incident_detector.act.executor import (
    ACTION_PERMISSIONS,
    ALREADY_DONE,
    APPLIED,
    DRY_RUN_OK,
    FAILED,
    FORBIDDEN,
    OUTCOMES,
    STALE,
    ActionResult,
    KubeExecutor,
    StuckPod,
    rollback_annotations,
    rollback_template,
    stuck_pods,
)
from incident_detector.errors import SourceError
from incident_detector.sim.server import Request, Response
from incident_detector.sources.kube_http import api_client_for

NAMESPACE, DEPLOYMENT = "demo-reuse", "orders"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"
SCALE_PATH = f"{DEPLOYMENT_PATH}/scale"
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
POD = "orders-568db7cb66-zwwsx"
POD_UID = "f336f062-72fe-457a-8cbc-f39b473134ea"
POD_PATH = f"{PODS_PATH}/{POD}"
# The Deployment's resourceVersion before the recorded rollback.
SEEN = "8474"
TOKEN = "s3cret-bearer-token-0123456789"
RESTARTED_AT = datetime(2026, 11, 26, 10, 54, 41, tzinfo=timezone.utc)

# What kube-apiserver accepts as the body of a PATCH (strategic merge for built-in types).
PATCH_MEDIA_TYPES = frozenset({"application/json-patch+json", "application/merge-patch+json",
                               "application/strategic-merge-patch+json",
                               "application/apply-patch+yaml"})


# How long a "slow" server holds its answer: past any test (its stop ends the wait), so only the
# client's timeout can end the call, however late a busy machine runs the client.
HOLD_SECONDS = 600.0


class PatchingApiServer(FakeApiServer):
    """``FakeApiServer`` that takes PATCH bodies in the patch media types, as kube-apiserver
    does, and refuses a PATCH sent as plain JSON with its 415. ``requests`` keeps each request
    as it arrived."""

    def _answer(self, request: Request) -> Response:
        if request.method != "PATCH":
            return super()._answer(request)
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type not in PATCH_MEDIA_TYPES:
            return status_response(415, "UnsupportedMediaType",
                                   f"the body of the request was in an unknown format - accepted "
                                   f"media types include: {', '.join(sorted(PATCH_MEDIA_TYPES))}")
        as_json = dataclasses.replace(request, headers={**request.headers,
                                                        "content-type": "application/json"})
        return super()._answer(as_json)


@pytest.fixture(scope="module")
def running_server():
    with PatchingApiServer() as server:
        yield server


@pytest.fixture
def server(running_server):
    running_server.reset()
    return running_server


@pytest.fixture
def kube(server):
    return KubeExecutor(api=api_client_for(server.url, token=TOKEN), timeout=2.0)


def run(coroutine):
    return asyncio.run(coroutine)


def recorded_body(name: str) -> Any:
    return copy.deepcopy(load_recording(name)["request"]["body"])


def target_replicaset() -> dict[str, Any]:
    """Revision 2 of ``orders`` (image 2.0.0), the target of the recorded rollback."""
    items = load_recording("replicasets_after_undo.json")["response"]["json"]["items"]
    return next(rs for rs in items if rs["metadata"]["name"] == "orders-568db7cb66")


def deployment_now(resource_version: str = "8490", revision: str = "4") -> dict[str, Any]:
    body = load_recording("deployment_after_undo.json")["response"]["json"]
    body["metadata"]["resourceVersion"] = resource_version
    body["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = revision
    return body


def rollback(kube: KubeExecutor, *, dry_run: bool, resource_version: str = SEEN):
    replicaset = target_replicaset()
    deployment = load_recording("deployment_after_undo.json")["response"]["json"]
    return run(kube.rollback(
        NAMESPACE, DEPLOYMENT, to_template=replicaset["spec"]["template"],
        resource_version=resource_version, dry_run=dry_run,
        annotations=rollback_annotations(deployment["metadata"]["annotations"],
                                         replicaset["metadata"]["annotations"])))


def restart(kube: KubeExecutor, *, dry_run: bool = False, resource_version: str = SEEN):
    return run(kube.restart(NAMESPACE, DEPLOYMENT, resource_version=resource_version,
                            now=RESTARTED_AT, dry_run=dry_run))


def pause(kube: KubeExecutor, *, dry_run: bool = True, resource_version: str = SEEN):
    return run(kube.pause(NAMESPACE, DEPLOYMENT, resource_version=resource_version,
                          dry_run=dry_run))


def scale(kube: KubeExecutor, *, dry_run: bool = True, replicas: int = 3,
          resource_version: str = SEEN):
    return run(kube.scale(NAMESPACE, DEPLOYMENT, replicas=replicas,
                          resource_version=resource_version, dry_run=dry_run))


def delete_pod(kube: KubeExecutor, *, dry_run: bool = False, pod: str = POD, uid: str = POD_UID):
    return run(kube.delete_pod(NAMESPACE, pod, uid=uid, dry_run=dry_run))


def the_write(server: FakeApiServer) -> Request:
    writes = [r for r in server.requests if r.method in ("PATCH", "DELETE")]
    assert len(writes) == 1, server.paths
    return writes[0]


def content_type(request: Request) -> str:
    return request.headers["content-type"].split(";")[0]


def guarded(body: dict[str, Any], resource_version: str = SEEN) -> dict[str, Any]:
    """A recorded strategic/merge patch with the resourceVersion precondition added."""
    return {"metadata": {"resourceVersion": resource_version}, **body}


# ---------------------------------------------------------------------------------------------
# Rollback: kubectl rollout undo --to-revision.


def test_rollback_dry_run_sends_kubectls_patch_with_dry_run_all(server, kube):
    server.serve_recording("deployment_rollback_patch_dry_run.json")
    result = rollback(kube, dry_run=True)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("PATCH", DEPLOYMENT_PATH, {"dryRun": ["All"]})
    assert content_type(sent) == "application/json-patch+json"
    # kubectl's dry run carried no precondition; ours does, then exactly kubectl's ops.
    assert sent.json() == [{"op": "test", "path": "/metadata/resourceVersion", "value": SEEN},
                           *recorded_body("deployment_rollback_patch_dry_run.json")]
    assert result == ActionResult("rollback", f"{NAMESPACE}/{DEPLOYMENT}", True, DRY_RUN_OK,
                                  result.message, "8474")
    assert "dryRun=All" in result.message


def test_rollback_sends_exactly_the_recorded_guarded_patch(server, kube):
    server.serve_recording("deployment_rollback_patch.json")
    result = rollback(kube, dry_run=False)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("PATCH", DEPLOYMENT_PATH, {})
    assert content_type(sent) == "application/json-patch+json"
    assert sent.json() == recorded_body("deployment_rollback_patch.json")
    assert (result.outcome, result.dry_run, result.resource_version_after) == (APPLIED, False,
                                                                               "8476")


def test_rollback_without_annotations_leaves_them_alone(server, kube):
    server.serve_recording("deployment_rollback_patch.json")
    run(kube.rollback(NAMESPACE, DEPLOYMENT, to_template=target_replicaset()["spec"]["template"],
                      resource_version=SEEN, dry_run=False))
    assert the_write(server).json() == recorded_body("deployment_rollback_patch.json")[:2]


def test_rollback_on_a_stale_view_is_refused_and_says_what_changed(server, kube):
    server.serve_recording("deployment_patch_stale_precondition.json")
    server.serve(DEPLOYMENT_PATH, Response(200, deployment_now("8490", "4")))
    result = rollback(kube, dry_run=False, resource_version="1")
    assert the_write(server).json() == recorded_body("deployment_patch_stale_precondition.json")
    assert result.outcome == STALE
    assert "resourceVersion 1 then, 8490 now, at revision 4" in result.message
    assert result.resource_version_after == "8490"
    assert server.paths == [("PATCH", DEPLOYMENT_PATH), ("GET", DEPLOYMENT_PATH)]


def test_rollback_that_already_happened_is_already_done(server, kube):
    # Resumed after a crash between "sent" and "recorded": the test op fails, but the
    # Deployment already carries the target template.
    server.serve_recording("deployment_patch_stale_precondition.json")
    rolled_back = load_recording("deployment_rollback_patch.json")["response"]["json"]
    server.serve(DEPLOYMENT_PATH, Response(200, rolled_back))
    result = rollback(kube, dry_run=False)
    assert (result.outcome, result.resource_version_after) == (ALREADY_DONE, "8476")


def test_an_invalid_template_is_a_failure_not_a_stale_view(server, kube):
    server.serve(DEPLOYMENT_PATH, status_response(
        422, "Invalid", 'Deployment.apps "orders" is invalid: spec.template.spec.containers[0]'
        '.image: Required value', name="orders", group="apps", kind="Deployment",
        causes=[{"reason": "FieldValueRequired", "message": "Required value",
                 "field": "spec.template.spec.containers[0].image"}]), method="PATCH")
    result = rollback(kube, dry_run=False)
    assert result.outcome == FAILED
    assert "Required value" in result.message
    assert [m for m, _ in server.paths] == ["PATCH"]  # nothing to refetch


def test_stale_refusal_when_the_deployment_is_gone(server, kube):
    server.serve_recording("deployment_patch_stale_precondition.json")
    result = rollback(kube, dry_run=False)
    assert result.outcome == STALE
    assert "no longer exists" in result.message


def test_stale_refusal_when_the_refetch_fails_is_still_stale(server, kube):
    server.serve_recording("deployment_patch_stale_precondition.json")
    server.serve(DEPLOYMENT_PATH, status_response(503, "ServiceUnavailable", "etcd is down"))
    result = rollback(kube, dry_run=False)
    assert result.outcome == STALE
    assert "unknown" in result.message


# ---------------------------------------------------------------------------------------------
# Restart, pause, scale.


def test_restart_sends_kubectls_annotation_guarded_by_the_resource_version(server, kube):
    server.serve_recording("deployment_restart_patch.json")
    result = restart(kube)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("PATCH", DEPLOYMENT_PATH, {})
    assert content_type(sent) == "application/strategic-merge-patch+json"
    assert sent.json() == guarded(recorded_body("deployment_restart_patch.json"))
    assert (result.outcome, result.resource_version_after) == (APPLIED, "8479")


def test_restart_dry_run(server, kube):
    server.serve_recording("deployment_restart_patch.json")
    result = restart(kube, dry_run=True)
    assert the_write(server).query == {"dryRun": ["All"]}
    assert result.outcome == DRY_RUN_OK


def test_pause_dry_run_sends_kubectls_patch(server, kube):
    server.serve_recording("deployment_pause_patch.json")
    result = pause(kube)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("PATCH", DEPLOYMENT_PATH, {"dryRun": ["All"]})
    assert content_type(sent) == "application/strategic-merge-patch+json"
    assert sent.json() == guarded(recorded_body("deployment_pause_patch.json"))
    assert (result.outcome, result.dry_run, result.resource_version_after) == (DRY_RUN_OK, True,
                                                                               "8482")


def test_scale_dry_run_patches_the_scale_subresource(server, kube):
    server.serve_recording("deployment_scale_patch.json")
    result = scale(kube)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("PATCH", SCALE_PATH, {"dryRun": ["All"]})
    assert content_type(sent) == "application/merge-patch+json"
    assert sent.json() == guarded(recorded_body("deployment_scale_patch.json"))
    assert result.outcome == DRY_RUN_OK


@pytest.mark.parametrize("replicas", [-1, True, 2.5, "3"])
def test_scale_refuses_what_is_not_a_replica_count(server, kube, replicas):
    assert scale(kube, replicas=replicas).outcome == FAILED
    assert server.requests == []


CONFLICT = "deployment_put_conflict.json"


@pytest.mark.parametrize("act, path", [(restart, DEPLOYMENT_PATH), (pause, DEPLOYMENT_PATH),
                                       (scale, SCALE_PATH)])
def test_a_conflict_on_the_resource_version_is_stale_with_the_refetched_state(
        server, kube, act, path):
    server.serve(path, Response(409, load_recording(CONFLICT)["response"]["json"]),
                 method="PATCH")
    server.serve(DEPLOYMENT_PATH, Response(200, deployment_now("8495", "5")))
    result = act(kube)
    assert result.outcome == STALE
    assert "8474 then, 8495 now, at revision 5" in result.message
    assert server.paths == [("PATCH", path), ("GET", DEPLOYMENT_PATH)]


@pytest.mark.parametrize("act, done", [
    (pause, lambda d: d["spec"].__setitem__("paused", True)),
    (scale, lambda d: d["spec"].__setitem__("replicas", 3)),
    (restart, lambda d: d["spec"]["template"]["metadata"].__setitem__(
        "annotations", {"kubectl.kubernetes.io/restartedAt": "2026-11-26T10:54:41Z"})),
])
def test_a_conflict_on_a_change_already_in_place_is_already_done(server, kube, act, done):
    for path in (DEPLOYMENT_PATH, SCALE_PATH):
        server.serve(path, Response(409, load_recording(CONFLICT)["response"]["json"]),
                     method="PATCH")
    current = deployment_now()
    done(current)
    server.serve(DEPLOYMENT_PATH, Response(200, current))
    assert act(kube).outcome == ALREADY_DONE


@pytest.mark.parametrize("act, path", [(rollback, DEPLOYMENT_PATH), (restart, DEPLOYMENT_PATH),
                                       (pause, DEPLOYMENT_PATH), (scale, SCALE_PATH)])
def test_forbidden_without_the_verbs(server, kube, act, path):
    server.serve_recording("deployment_patch_forbidden.json", path=path)
    result = act(kube, dry_run=False)
    assert result.outcome == FORBIDDEN
    assert 'User "detector" cannot patch resource "deployments"' in result.message


def test_no_credential_in_any_message(server, kube):
    server.serve(DEPLOYMENT_PATH, status_response(
        403, "Forbidden", f"token Bearer {TOKEN} is not allowed"), method="PATCH")
    result = restart(kube)
    assert result.outcome == FORBIDDEN
    assert TOKEN not in result.message
    assert server.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


# ---------------------------------------------------------------------------------------------
# Deleting pods.


def test_delete_pod_with_the_uid_precondition(server, kube):
    server.serve_recording("pod_delete.json")
    result = delete_pod(kube)
    sent = the_write(server)
    assert (sent.method, sent.path, sent.query) == ("DELETE", POD_PATH, {})
    assert content_type(sent) == "application/json"
    assert sent.json() == {"kind": "DeleteOptions", "apiVersion": "v1",
                           "preconditions": {"uid": POD_UID}}
    assert (result.outcome, result.target, result.resource_version_after) == (
        APPLIED, f"{NAMESPACE}/{POD}", "8500")


def test_delete_pod_dry_run_is_in_the_body_where_the_server_reads_it(server, kube):
    # With a body, kube-apiserver ignores the query's dryRun: the body must say it.
    server.serve_recording("pod_delete.json")
    result = delete_pod(kube, dry_run=True)
    sent = the_write(server)
    assert sent.query == {"dryRun": ["All"]}
    assert sent.json()["dryRun"] == ["All"]
    assert result.outcome == DRY_RUN_OK


def test_deleting_a_pod_already_gone_is_already_done(server, kube):
    server.serve_recording("pod_delete_not_found.json")
    result = delete_pod(kube, pod="no-such-pod")
    assert result.outcome == ALREADY_DONE
    assert "already gone" in result.message


def test_a_recreated_pod_of_the_same_name_is_left_alone(server, kube):
    server.serve(POD_PATH, status_response(
        409, "Conflict", f'Operation cannot be fulfilled on Pod "{POD}": Precondition failed: '
        f'UID in precondition: {POD_UID}, UID in object meta: 0d6c1d1e', name=POD, kind="pods"),
        method="DELETE")
    result = delete_pod(kube)
    assert result.outcome == STALE
    assert "new pod" in result.message


def test_delete_pod_forbidden(server, kube):
    server.serve(POD_PATH, status_response(
        403, "Forbidden", 'pods "x" is forbidden: User "detector" cannot delete resource "pods"'),
        method="DELETE")
    assert delete_pod(kube).outcome == FORBIDDEN


NOW = datetime(2026, 11, 26, 11, 0, 0, tzinfo=timezone.utc)


def pod(name: str, *, uid: str | None = None, deleting: datetime | None = None,
        grace: Any = 30, finalizers: list[str] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE,
                                "uid": uid if uid is not None else f"uid-{name}",
                                "labels": labels or {"app": "orders"}}
    if deleting is not None:
        metadata["deletionTimestamp"] = deleting.strftime("%Y-%m-%dT%H:%M:%SZ")
        metadata["deletionGracePeriodSeconds"] = grace
    if finalizers:
        metadata["finalizers"] = finalizers
    return {"metadata": metadata, "spec": {}, "status": {"phase": "Running"}}


def serve_pods(server: FakeApiServer, *pods: dict[str, Any]) -> None:
    listed = copy.deepcopy(load_recording("pods_list.json")["response"]["json"])
    listed["items"] = list(pods)
    server.serve(PODS_PATH, Response(200, listed))


def test_delete_stuck_pods_force_deletes_only_the_overdue_ones(server, kube):
    long_ago = NOW - timedelta(minutes=10)
    serve_pods(server, pod("orders-a", deleting=long_ago), pod("orders-b"),
               pod("orders-c", deleting=NOW - timedelta(seconds=5)),
               pod("other-d", deleting=long_ago, labels={"app": "other"}),
               pod("orders-e", deleting=long_ago))
    for name in ("orders-a", "orders-e"):
        server.serve(f"{PODS_PATH}/{name}", Response(200, pod(name, deleting=long_ago)),
                     method="DELETE")
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW,
                                        dry_run=False))
    assert server.requests[0].query == {"labelSelector": ["app=orders"]}
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert [r.path for r in deletes] == [f"{PODS_PATH}/orders-a", f"{PODS_PATH}/orders-e"]
    assert [r.json() for r in deletes] == [
        {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": f"uid-{n}"},
         "gracePeriodSeconds": 0} for n in ("orders-a", "orders-e")]
    assert result.outcome == APPLIED
    assert "orders-a: applied" in result.message and "orders-e: applied" in result.message


def test_delete_stuck_pods_dry_run(server, kube):
    serve_pods(server, pod("orders-a", deleting=NOW - timedelta(minutes=10)))
    server.serve(f"{PODS_PATH}/orders-a", Response(200, pod("orders-a")), method="DELETE")
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW, dry_run=True))
    delete = next(r for r in server.requests if r.method == "DELETE")
    assert delete.json()["dryRun"] == ["All"] and delete.json()["gracePeriodSeconds"] == 0
    assert result.outcome == DRY_RUN_OK


def test_delete_stuck_pods_with_none_stuck_deletes_nothing(server, kube):
    serve_pods(server, pod("orders-a"))
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW,
                                        dry_run=False))
    assert result.outcome == ALREADY_DONE
    assert [m for m, _ in server.paths] == ["GET"]


def test_delete_stuck_pods_already_gone_is_already_done(server, kube):
    serve_pods(server, pod("orders-a", deleting=NOW - timedelta(minutes=10)))
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW,
                                        dry_run=False))  # the DELETE gets the server's 404
    assert result.outcome == ALREADY_DONE


def test_delete_stuck_pods_forbidden(server, kube):
    serve_pods(server, pod("orders-a", deleting=NOW - timedelta(minutes=10)))
    server.serve(f"{PODS_PATH}/orders-a", status_response(
        403, "Forbidden", "cannot delete resource pods"), method="DELETE")
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW,
                                        dry_run=False))
    assert result.outcome == FORBIDDEN


def test_delete_stuck_pods_cannot_list(server, kube):
    server.serve(PODS_PATH, status_response(403, "Forbidden", "cannot list resource pods"))
    result = run(kube.delete_stuck_pods(NAMESPACE, selector="app=orders", now=NOW,
                                        dry_run=False))
    assert result.outcome == FORBIDDEN


T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("pods, now, expected", [
    ([], T0, []),
    # Not being deleted.
    ([pod("a")], T0, []),
    # deletionTimestamp is already the end of the grace period; one more grace period of slack.
    ([pod("a", deleting=T0, grace=30)], T0 + timedelta(seconds=30), []),
    ([pod("a", deleting=T0, grace=30)], T0 + timedelta(seconds=31), ["a"]),
    ([pod("a", deleting=T0, grace=30)], T0 - timedelta(hours=1), []),
    ([pod("a", deleting=T0, grace=0)], T0 + timedelta(seconds=1), ["a"]),
    ([pod("a", deleting=T0, grace=0)], T0, []),
    # A grace period the server would not send counts as none.
    ([pod("a", deleting=T0, grace=None)], T0 + timedelta(seconds=1), ["a"]),
    ([pod("a", deleting=T0, grace=-5)], T0 + timedelta(seconds=1), ["a"]),
    ([pod("a", deleting=T0, grace="30")], T0 + timedelta(seconds=1), ["a"]),
    ([pod("a", deleting=T0, grace=True)], T0 + timedelta(seconds=1), ["a"]),
    # Finalizers: a force delete would not release it.
    ([pod("a", deleting=T0, finalizers=["example.com/cleanup"])], T0 + timedelta(days=1), []),
    # Without a uid there is no safe precondition.
    ([pod("a", deleting=T0, uid="")], T0 + timedelta(days=1), []),
    # Sorted by name, only the overdue.
    ([pod("c", deleting=T0), pod("b"), pod("a", deleting=T0 - timedelta(minutes=5))],
     T0 + timedelta(minutes=1), ["a", "c"]),
    ([pod("a", deleting=T0), pod("b", deleting=T0 + timedelta(minutes=5))],
     T0 + timedelta(minutes=1), ["a"]),
    # Whatever the API sent that is not a pod is skipped.
    ([None, "pod", {"metadata": None}, {"metadata": {"name": "x", "uid": "u",
                                                     "deletionTimestamp": "yesterday"}}],
     T0, []),
])
def test_stuck_pods(pods, now, expected):
    assert [p.name for p in stuck_pods(pods, now=now)] == expected


def test_stuck_pods_tells_when_and_which_uid():
    assert stuck_pods([pod("a", uid="u-1", deleting=T0, grace=30)],
                      now=T0 + timedelta(minutes=1)) == (
        StuckPod(name="a", uid="u-1", overdue_since=T0 + timedelta(seconds=30)),)


# ---------------------------------------------------------------------------------------------
# Failures for the caller to retry.


def all_actions(kube: KubeExecutor):
    return {
        "rollback": lambda: rollback(kube, dry_run=False),
        "restart": lambda: restart(kube),
        "pause": lambda: pause(kube),
        "scale": lambda: scale(kube),
        "delete-pod": lambda: delete_pod(kube),
    }


WRITE_PATHS = {"rollback": ("PATCH", DEPLOYMENT_PATH), "restart": ("PATCH", DEPLOYMENT_PATH),
               "pause": ("PATCH", DEPLOYMENT_PATH), "scale": ("PATCH", SCALE_PATH),
               "delete-pod": ("DELETE", POD_PATH)}


@pytest.mark.parametrize("action", sorted(WRITE_PATHS))
@pytest.mark.parametrize("status", [503, 500, 429])
def test_server_errors_are_raised_retryable(server, kube, action, status):
    method, path = WRITE_PATHS[action]
    server.serve(path, status_response(status, "ServiceUnavailable", "try later"), method=method)
    with pytest.raises(SourceError) as raised:
        all_actions(kube)[action]()
    assert raised.value.retryable and raised.value.status == status


@pytest.mark.parametrize("action", sorted(WRITE_PATHS))
def test_timeouts_are_raised_retryable(server, action):
    method, path = WRITE_PATHS[action]
    server.serve(path, Response(200, {}, delay=HOLD_SECONDS), method=method)
    kube = KubeExecutor(api=api_client_for(server.url, token=TOKEN), timeout=0.2)
    with pytest.raises(SourceError) as raised:
        all_actions(kube)[action]()
    assert (raised.value.reason, raised.value.retryable) == ("timeout", True)
    assert TOKEN not in str(raised.value)


def test_connection_refused_is_raised_retryable():
    kube = KubeExecutor(api=api_client_for("http://127.0.0.1:9", token=TOKEN), timeout=1.0)
    with pytest.raises(SourceError) as raised:
        restart(kube)
    assert (raised.value.reason, raised.value.retryable) == ("connection", True)


def test_other_client_errors_are_failures(server, kube):
    server.serve(DEPLOYMENT_PATH, status_response(400, "BadRequest", "bad patch"), method="PATCH")
    result = restart(kube)
    assert result.outcome == FAILED and "bad patch" in result.message


def test_a_patch_sent_as_plain_json_would_be_refused(server):
    # The fake refuses what kube-apiserver refuses, so the content types above are meaningful.
    from incident_detector.sources.kube_http import request
    with pytest.raises(SourceError) as raised:
        request(api_client_for(server.url), "PATCH", DEPLOYMENT_PATH, body={"spec": {}},
                timeout=2.0, what="patching")
    assert raised.value.status == 415


# ---------------------------------------------------------------------------------------------
# Pure parts.


LABEL_KEYS = st.one_of(
    st.sampled_from(["app", "pod-template-hash", "Pod-Template-Hash", "pod-template-hash ",
                     "example.com/pod-template-hash", "version", ""]),
    st.text(min_size=0, max_size=20))
LABELS = st.dictionaries(LABEL_KEYS, st.text(max_size=20), max_size=8)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


@given(labels=LABELS, hash_value=st.text(max_size=12), extra=JSON_VALUES,
       annotations=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_rollback_template_removes_only_the_hash_label(labels, hash_value, extra, annotations):
    template = {"metadata": {"creationTimestamp": None,
                             "labels": {**labels, "pod-template-hash": hash_value},
                             "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "i"}], "extra": extra}}
    original = copy.deepcopy(template)
    restored = rollback_template(template)
    assert "pod-template-hash" not in restored["metadata"]["labels"]
    assert restored["metadata"]["labels"] == {k: v for k, v in labels.items()
                                              if k != "pod-template-hash"}
    assert {k: v for k, v in restored.items() if k != "metadata"} == \
        {k: v for k, v in original.items() if k != "metadata"}
    assert {k: v for k, v in restored["metadata"].items() if k != "labels"} == \
        {k: v for k, v in original["metadata"].items() if k != "labels"}
    assert template == original  # the caller's template is not touched


@pytest.mark.parametrize("template", [{}, {"metadata": None}, {"metadata": {"labels": None}},
                                      {"metadata": {}}, {"spec": {"x": 1}}])
def test_rollback_template_of_templates_without_labels(template):
    assert rollback_template(template) == template


def test_rollback_annotations_as_kubectl_computes_them():
    assert rollback_annotations(
        {"deployment.kubernetes.io/revision": "3", "team": "payments",
         "kubectl.kubernetes.io/last-applied-configuration": "{}"},
        {"deployment.kubernetes.io/revision": "2", "deployment.kubernetes.io/max-replicas": "3",
         "kubernetes.io/change-cause": "v2"}) == {
        "deployment.kubernetes.io/revision": "3",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "kubernetes.io/change-cause": "v2"}


def test_restart_stamp_is_utc_seconds_as_kubectl_writes_it():
    paris = timezone(timedelta(hours=1))
    body = executor.restart_patch(now=datetime(2026, 11, 26, 11, 54, 41, 999, tzinfo=paris),
                                  resource_version="7")
    assert body["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-11-26T10:54:41Z"}


@pytest.mark.parametrize("status, body, stale", [
    (422, load_recording("deployment_patch_stale_precondition.json")["response"]["json"], True),
    (422, {"reason": "Invalid", "message": "testing value /metadata/resourceVersion failed: "
                                           "test failed", "details": {"name": "orders"}}, True),
    (422, {"reason": "Invalid", "message": "x is invalid",
           "details": {"name": "orders", "causes": [{"field": "spec"}]}}, False),
    (422, {}, False),
    (400, load_recording("deployment_patch_stale_precondition.json")["response"]["json"], False),
])
def test_is_failed_test(status, body, stale):
    assert executor.is_failed_test(status, body) is stale


def test_every_action_declares_its_permissions():
    assert set(ACTION_PERMISSIONS) == {"rollback", "restart", "pause", "scale", "delete-pod",
                                       "delete-stuck-pods"}
    for action in ("rollback", "restart", "pause"):
        assert ("apps", "deployments", "patch") in ACTION_PERMISSIONS[action]
        assert ("apps", "deployments", "get") in ACTION_PERMISSIONS[action]
    assert ("apps", "deployments/scale", "patch") in ACTION_PERMISSIONS["scale"]
    for action in ("delete-pod", "delete-stuck-pods"):
        assert ("", "pods", "delete") in ACTION_PERMISSIONS[action]
    # Never a wildcard, never more than patch/get/list/delete.
    for permissions in ACTION_PERMISSIONS.values():
        for group, resource, verb in permissions:
            assert "*" not in (group, resource, verb)
            assert verb in {"patch", "get", "list", "delete"}


def test_outcomes_are_the_documented_ones():
    assert OUTCOMES == {"applied", "dry_run_ok", "already_done", "stale", "forbidden", "failed"}
