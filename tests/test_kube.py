"""The Kubernetes source: the real ``kubernetes`` client against a fake API server on 127.0.0.1,
and the pure parsers over the recorded bodies and small hand-made objects."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import json
import logging
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kubernetes.config.incluster_config
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from apiserver import (
    DEPLOYMENTS_PATH,
    NAMESPACE,
    PODS_PATH,
    REPLICASETS_PATH,
    FakeApiServer,
    bookmark,
    expired_event,
    is_watch,
    recorded_items,

    watch_event,
)
from incident_detector.sources import kube_objects
from incident_detector.errors import SourceError
from incident_detector.sim.server import Response
from incident_detector.sources.kube import (
    REQUIRED_PERMISSIONS,
    WARNING_EVENT_PERMISSIONS,
    KubeClient,
)
from incident_detector.sources.kube_http import (
    api_client_for,
    api_client_from_environment,
    namespaced_path,
    parse_list,
)
from incident_detector.sources.kube_objects import (
    RESTART_THRESHOLD,
    detect_gitops,
    micro_time,
    parse_deployment,
    parse_pod,
    parse_replicaset,
)
from incident_detector.sources.kube_templates import parse_pod_template
from incident_detector.sources.kube_watch import LIST_PAGE_SIZE, WATCH_SECONDS
from incident_detector.model import (
    REVISION_ANNOTATION,
    Container,
    Deployment,
    EnvVar,
    GitOpsOwner,
    GitOpsTool,
    Pod,
    PodProblem,
    ReplicaSet,
    RolloutStatus,
)

TOKEN = "s3cr3t-bearer-token-0123456789"
# How long a slow fake apiserver holds its answer: past any test, so that only the client's
# timeout can end the wait (the server stops holding when it is stopped).
HOLD_SECONDS = 60.0
OLD_RS, NEW_RS = "payments-api-77587766bd", "payments-api-6874dc9bf7"


@pytest.fixture(scope="module")
def running_apiserver():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def apiserver(running_apiserver):
    running_apiserver.reset()
    return running_apiserver


def client_for(server: FakeApiServer, *, timeout: float = 5.0) -> KubeClient:
    return KubeClient(api=api_client_for(server.url, token=TOKEN), timeout=timeout)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def failure(coroutine: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        run(coroutine)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Listing the recorded objects over HTTP.


def test_list_replicasets_gives_both_revisions_of_payments_api(apiserver):
    replicasets = run(client_for(apiserver).list_replicasets(NAMESPACE))

    by_revision = {rs.revision: rs for rs in replicasets}
    assert sorted(by_revision) == [1, 2]
    new, old = by_revision[2], by_revision[1]
    assert (new.name, old.name) == (NEW_RS, OLD_RS)
    assert new.namespace == NAMESPACE and new.deployment == "payments-api" == old.deployment
    assert new.created_at == datetime(2026, 11, 23, 17, 54, 4, tzinfo=timezone.utc)
    assert new.created_at > old.created_at
    assert new.revision_raw == "2"
    assert (new.replicas, new.ready_replicas, old.replicas) == (1, 0, 2)
    assert new.template.containers == (
        Container(name="payments-api", image="registry.local/payments-api:1.5.0"),)
    assert old.template.containers[0].image == "registry.local/payments-api:1.4.2"


def test_list_request_path_and_bearer_token(apiserver):
    run(client_for(apiserver).list_replicasets(NAMESPACE))

    [request] = apiserver.requests
    assert (request.method, request.path) == ("GET", REPLICASETS_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.query == {"limit": [str(LIST_PAGE_SIZE)]}
    assert request.body == b"" and "content-type" not in request.headers


def test_list_deployments(apiserver):
    [deployment] = run(client_for(apiserver).list_deployments(NAMESPACE))

    assert deployment == Deployment(
        namespace=NAMESPACE, name="payments-api", revision=2, replicas=2,
        pod_labels=(("app", "payments-api"),), uid="d55bf5fc-8fbd-4e15-bc0b-fe54391e63c5",
        created_at=datetime(2026, 11, 23, 17, 53, 59, tzinfo=timezone.utc),
        progressing_replicaset="payments-api-6874dc9bf7",
        progressing_updated_at=datetime(2026, 11, 23, 17, 54, 10, tzinfo=timezone.utc),
        resource_version="224", paused=False,
        rollout=RolloutStatus(generation=2, observed_generation=2, updated_replicas=1),
        spec_manager="kubectl-set", spec_operation="Update",
        spec_written_at=datetime(2026, 11, 23, 17, 54, 3, tzinfo=timezone.utc))
    assert not deployment.rollout.converged(deployment.replicas)
    assert apiserver.paths == [("GET", DEPLOYMENTS_PATH)]


def test_crash_looping_pod_belongs_to_the_new_replicaset(apiserver):
    client = client_for(apiserver)
    pods = run(client.list_pods(NAMESPACE))
    revision_of = {rs.name: rs.revision for rs in run(client.list_replicasets(NAMESPACE))}

    crashing = [pod for pod in pods if PodProblem.CRASH_LOOP in pod.problems]
    assert [pod.name for pod in crashing] == ["payments-api-6874dc9bf7-r66bl"]
    [pod] = crashing
    assert revision_of[pod.replicaset] == 2
    assert (pod.phase, pod.ready, pod.restarts) == ("Running", False, 4)
    assert pod.problems == (PodProblem.CRASH_LOOP, PodProblem.RESTARTING)
    assert {p.replicaset for p in pods if p is not pod} == {OLD_RS}
    assert all(p.problems == () and p.phase == "Pending" for p in pods if p is not pod)
    assert ("GET", PODS_PATH) in apiserver.paths


def test_each_pod_carries_its_uid_from_the_recorded_list(apiserver):
    pods = run(client_for(apiserver).list_pods(NAMESPACE))

    assert {pod.name: pod.uid for pod in pods} == {
        "payments-api-6874dc9bf7-r66bl": "ee8d9145-b4fd-479d-b83b-84c032b462e0",
        "payments-api-77587766bd-bkvvm": "22b4bc3b-7115-4ff2-bf93-97c420e60f12",
        "payments-api-77587766bd-xjn7b": "80476d97-28cf-4f5e-a0a8-8c2978b3c23d",
    }


def test_a_pod_without_a_uid_has_an_empty_one():
    [item, *_] = recorded_items("pods_list.json")
    del item["metadata"]["uid"]
    assert parse_pod(item).uid == ""
    item["metadata"]["uid"] = 42
    assert parse_pod(item).uid == ""


def test_lists_are_parsed_from_json_without_building_typed_models(apiserver):
    api = api_client_for(apiserver.url, token=TOKEN)

    def no_typed_models(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the client's typed models were built")

    api.deserialize = no_typed_models  # the client's own decoding step must never run
    client = KubeClient(api=api, timeout=5.0)

    results = [*run(client.list_deployments(NAMESPACE)), *run(client.list_replicasets(NAMESPACE)),
               *run(client.list_pods(NAMESPACE))]
    apiserver.serve_watch(REPLICASETS_PATH, watch_event("MODIFIED", replicaset_item()))
    results += run(client.list_replicasets(NAMESPACE))  # a watch this time

    assert [r.path for r in apiserver.requests if is_watch(r)] == [REPLICASETS_PATH]
    assert len(results) == 8
    assert all(type(obj) in (Deployment, ReplicaSet, Pod) for obj in results)
    assert all(dataclasses.is_dataclass(obj) for obj in results)


def test_edited_body_reaches_the_parser(apiserver):
    [item, _] = apiserver.body(REPLICASETS_PATH)["items"]
    item["metadata"]["annotations"][REVISION_ANNOTATION] = "seven"
    apiserver.body(REPLICASETS_PATH)["items"].append({"metadata": {"name": "no-namespace"}})

    replicasets = run(client_for(apiserver).list_replicasets(NAMESPACE))

    assert [(rs.name, rs.revision, rs.revision_raw) for rs in replicasets] == [
        (NEW_RS, None, "seven"), (OLD_RS, 1, "1")]


def test_empty_namespace_gives_empty_tuple(apiserver):
    apiserver.body(PODS_PATH)["items"].clear()
    assert run(client_for(apiserver).list_pods(NAMESPACE)) == ()


# ---------------------------------------------------------------------------------------------
# Failures: one SourceError each, with what the daemon needs to decide.


def test_forbidden_is_not_retryable(apiserver):
    apiserver.serve_recording("replicasets_forbidden.json")

    error = failure(client_for(apiserver).list_replicasets(NAMESPACE))

    assert (error.source, error.reason, error.status, error.retryable) == (
        "kubernetes", "Forbidden", 403, False)
    assert 'cannot list resource "replicasets"' in error.message
    assert "demo-aiops" in error.message


def test_not_found_status_on_the_list_path(apiserver):
    apiserver.serve_recording("deployment_not_found.json", path=DEPLOYMENTS_PATH)

    error = failure(client_for(apiserver).list_deployments(NAMESPACE))

    assert (error.reason, error.status, error.retryable) == ("NotFound", 404, False)
    assert 'deployments.apps "nope" not found' in error.message


def test_unknown_namespace_path_is_the_servers_own_not_found(apiserver):
    error = failure(client_for(apiserver).list_pods("elsewhere"))
    assert (error.reason, error.status, error.retryable) == ("NotFound", 404, False)
    assert apiserver.paths == [("GET", "/api/v1/namespaces/elsewhere/pods")]


def test_unauthorized_is_not_retryable(apiserver):
    apiserver.serve_recording("unauthorized.json")

    error = failure(client_for(apiserver).list_replicasets(NAMESPACE))

    assert (error.reason, error.status, error.retryable) == ("Unauthorized", 401, False)
    assert TOKEN not in str(error)


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


@pytest.mark.parametrize(
    ("status", "body", "content_type", "reason", "retryable"),
    [
        (500, status_body(500, "InternalError", "etcdserver: request timed out"),
         "application/json", "InternalError", True),
        (500, "Internal Server Error", "text/plain", "http_500", True),
        (503, "<html>upstream unavailable</html>", "text/html", "http_503", True),
        (504, status_body(504, "Timeout", "the server was unable to return a response"),
         "application/json", "Timeout", True),
        (410, status_body(410, "Expired", "too old resource version"), "application/json",
         "Expired", False),
        (422, "unprocessable", "text/plain", "http_422", False),
    ],
)
def test_http_errors(apiserver, status, body, content_type, reason, retryable):
    apiserver.edit(PODS_PATH, status=status, body=body, content_type=content_type)

    error = failure(client_for(apiserver).list_pods(NAMESPACE))

    assert (error.reason, error.status, error.retryable) == (reason, status, retryable)
    assert error.retry_after is None


def test_too_many_requests_honours_retry_after(apiserver):
    apiserver.edit(REPLICASETS_PATH, status=429, headers={"Retry-After": "7"},
                   body=status_body(429, "TooManyRequests", "too many requests, retry later",
                                    retryAfterSeconds=7))

    error = failure(client_for(apiserver).list_replicasets(NAMESPACE))

    assert (error.reason, error.status, error.retryable, error.retry_after) == (
        "TooManyRequests", 429, True, 7.0)


def test_retry_after_from_status_details_when_header_missing(apiserver):
    apiserver.edit(REPLICASETS_PATH, status=429,
                   body=status_body(429, "TooManyRequests", "slow down", retryAfterSeconds=3))

    error = failure(client_for(apiserver).list_replicasets(NAMESPACE))

    assert (error.retryable, error.retry_after) == (True, 3.0)


def test_timeout_is_retryable_and_not_retried_by_the_transport(apiserver):
    # The server answers long after the test is over: the error can only be the client's timeout.
    apiserver.edit(REPLICASETS_PATH, delay=HOLD_SECONDS)

    error = failure(client_for(apiserver, timeout=0.2).list_replicasets(NAMESPACE))

    assert (error.reason, error.retryable, error.status) == ("timeout", True, None)
    assert "0.2 s" in error.message
    assert len(apiserver.requests) == 1  # urllib3 would have tried four times


def test_connection_refused_is_retryable():
    # Bound but not listening: refused, and no other test running at the same time can take it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = KubeClient(api=api_client_for(f"http://127.0.0.1:{port}", token=TOKEN),
                            timeout=2)

        error = failure(client.list_deployments(NAMESPACE))

    assert (error.source, error.reason, error.retryable) == ("kubernetes", "connection", True)
    assert f"127.0.0.1:{port}" in error.message
    assert TOKEN not in str(error)


def test_tls_failure_is_a_connection_error(apiserver):
    # An https URL in front of a plain-HTTP server: the handshake fails.
    https_url = apiserver.url.replace("http://", "https://")
    client = KubeClient(api=api_client_for(https_url, token=TOKEN), timeout=2)

    error = failure(client.list_pods(NAMESPACE))

    assert (error.reason, error.retryable) == ("connection", True)
    assert "TLS" in error.message and TOKEN not in str(error)


@pytest.mark.parametrize("body", ["<html>login</html>", '{"kind": "PodList", "items": [',
                                  b"\xff\xfe\x00"])
def test_malformed_body(apiserver, body):
    apiserver.edit(PODS_PATH, body=body, content_type="text/html")

    error = failure(client_for(apiserver).list_pods(NAMESPACE))

    assert (error.reason, error.retryable) == ("malformed", True)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "items": {"a": 1}},
        {"apiVersion": "v1", "metadata": {}},
        json.dumps("just a string"),
    ],
)
def test_unexpected_shape(apiserver, body):
    apiserver.edit(PODS_PATH, body=body)

    error = failure(client_for(apiserver).list_pods(NAMESPACE))

    assert (error.reason, error.retryable) == ("unexpected_shape", True)


def test_list_of_another_kind_is_unexpected(apiserver):
    apiserver.serve_recording("pods_list.json", path=REPLICASETS_PATH)

    error = failure(client_for(apiserver).list_replicasets(NAMESPACE))

    assert error.reason == "unexpected_shape"
    assert "ReplicaSetList" in error.message and "PodList" in error.message


def test_bearer_token_never_appears_in_errors(apiserver):
    # A proxy in front of the API server that echoes the request headers back.
    apiserver.edit(REPLICASETS_PATH, status=401,
                   body=status_body(401, "Unauthorized", f"bad header: Bearer {TOKEN}"))
    apiserver.edit(PODS_PATH, status=500, body=f"Authorization: Bearer {TOKEN}",
                   content_type="text/plain")
    apiserver.edit(DEPLOYMENTS_PATH, status=403,
                   body=status_body(403, "Forbidden", f"token {TOKEN} rejected"))
    client = client_for(apiserver)

    errors = [failure(client.list_replicasets(NAMESPACE)), failure(client.list_pods(NAMESPACE)),
              failure(client.list_deployments(NAMESPACE))]

    assert [e.status for e in errors] == [401, 500, 403]
    for error in errors:
        assert TOKEN not in str(error) and TOKEN not in error.message
    assert "[redacted]" in errors[0].message


# ---------------------------------------------------------------------------------------------
# Deployments and ReplicaSets: one list, then a short watch per call that returns what changed.

LIST_VERSION = "236"  # metadata.resourceVersion of the recorded lists
WATCH_QUERY_KEYS = {"watch", "resourceVersion", "allowWatchBookmarks", "timeoutSeconds"}


@pytest.fixture
def logs():
    """Captured structlog events, debug included whatever level another test configured."""
    saved = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(wrapper_class=saved)


def rs_object(name: str, resource_version: str, *, replicas: int = 1) -> dict[str, Any]:
    """A ReplicaSet as the API server sends it, named ``<deployment>-<pod-template-hash>``."""
    item = copy.deepcopy(recorded_items("replicasets_list.json")[0])
    item["metadata"].update(name=name, resourceVersion=resource_version)
    item["metadata"]["labels"]["pod-template-hash"] = name.rpartition("-")[2]
    item["status"]["replicas"] = replicas
    return item


def watch_requests(apiserver: FakeApiServer, path: str = REPLICASETS_PATH) -> list[Any]:
    return [r for r in apiserver.requests if r.path == path and is_watch(r)]


def kinds_of_requests(apiserver: FakeApiServer) -> list[str]:
    return ["watch" if is_watch(r) else "list" for r in apiserver.requests]


@pytest.mark.parametrize(("method", "path"), [("list_replicasets", REPLICASETS_PATH),
                                              ("list_deployments", DEPLOYMENTS_PATH)])
def test_first_call_lists_then_the_next_watches_from_the_lists_version(apiserver, method, path):
    client = client_for(apiserver)

    listed = run(getattr(client, method)(NAMESPACE))
    watched = run(getattr(client, method)(NAMESPACE))

    first, second = apiserver.requests
    assert (first.path, first.query) == (path, {"limit": [str(LIST_PAGE_SIZE)]})
    assert second.path == path
    assert second.query == {"watch": ["true"], "resourceVersion": [LIST_VERSION],
                            "allowWatchBookmarks": ["true"],
                            "timeoutSeconds": [str(WATCH_SECONDS)]}
    assert second.headers["authorization"] == f"Bearer {TOKEN}"
    assert watched == listed and len(listed) >= 1


def test_added_modified_and_deleted_events_are_applied(apiserver):
    client = client_for(apiserver)
    run(client.list_replicasets(NAMESPACE))
    modified = copy.deepcopy(recorded_items("replicasets_list.json")[0])
    modified["metadata"]["resourceVersion"] = "241"
    modified["status"]["readyReplicas"] = 1
    deleted = copy.deepcopy(recorded_items("replicasets_list.json")[1])
    deleted["metadata"]["resourceVersion"] = "242"
    apiserver.serve_watch(REPLICASETS_PATH,
                          watch_event("ADDED", rs_object("payments-api-5d9c8f7b6a", "240")),
                          watch_event("MODIFIED", modified),
                          watch_event("DELETED", deleted))

    replicasets = run(client.list_replicasets(NAMESPACE))

    assert [rs.name for rs in replicasets] == ["payments-api-5d9c8f7b6a", NEW_RS]
    assert replicasets[1].ready_replicas == 1
    assert replicasets[0].pod_template_hash == "5d9c8f7b6a"
    # The next watch starts from the newest version seen, and an empty one changes nothing.
    apiserver.serve_watch(REPLICASETS_PATH)
    assert run(client.list_replicasets(NAMESPACE)) == replicasets
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, "242"]


def test_deleted_deployment_disappears(apiserver):
    client = client_for(apiserver)
    [deployment] = run(client.list_deployments(NAMESPACE))
    gone = copy.deepcopy(recorded_items("deployments_list.json")[0])
    gone["metadata"]["resourceVersion"] = "250"
    apiserver.serve_watch(DEPLOYMENTS_PATH, watch_event("DELETED", gone))

    assert run(client.list_deployments(NAMESPACE)) == ()
    assert deployment.name == "payments-api"
    run(client.list_deployments(NAMESPACE))
    assert apiserver.watch_versions(DEPLOYMENTS_PATH) == [LIST_VERSION, "250"]


def test_bookmark_advances_the_version_without_changing_items(apiserver):
    client = client_for(apiserver)
    listed = run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(REPLICASETS_PATH, bookmark("300"))

    assert run(client.list_replicasets(NAMESPACE)) == listed
    apiserver.serve_watch(REPLICASETS_PATH)
    run(client.list_replicasets(NAMESPACE))
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, "300"]


def test_results_are_sorted_by_name(apiserver):
    apiserver.body(REPLICASETS_PATH)["items"].reverse()
    client = client_for(apiserver)
    assert [rs.name for rs in run(client.list_replicasets(NAMESPACE))] == [NEW_RS, OLD_RS]
    apiserver.serve_watch(REPLICASETS_PATH,
                          watch_event("ADDED", rs_object("payments-api-ffffffffff", "240")),
                          watch_event("ADDED", rs_object("payments-api-0000000000", "241")))
    assert [rs.name for rs in run(client.list_replicasets(NAMESPACE))] == [
        "payments-api-0000000000", NEW_RS, OLD_RS, "payments-api-ffffffffff"]


def test_object_that_no_longer_parses_is_dropped_as_a_list_would(apiserver):
    client = client_for(apiserver)
    run(client.list_replicasets(NAMESPACE))
    broken = copy.deepcopy(recorded_items("replicasets_list.json")[1])
    broken["metadata"].update(resourceVersion="240", creationTimestamp="yesterday")
    apiserver.serve_watch(REPLICASETS_PATH, watch_event("MODIFIED", broken))

    assert [rs.name for rs in run(client.list_replicasets(NAMESPACE))] == [NEW_RS]
    apiserver.serve_watch(REPLICASETS_PATH)
    run(client.list_replicasets(NAMESPACE))
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, "240"]


def test_expired_event_relists_within_the_same_call(apiserver, logs):
    client = client_for(apiserver)
    run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(REPLICASETS_PATH,
                          watch_event("ADDED", rs_object("payments-api-5d9c8f7b6a", "240")),
                          expired_event(LIST_VERSION))
    # What the server holds now: the old revision was cleaned up.
    apiserver.body(REPLICASETS_PATH)["items"].pop()
    apiserver.body(REPLICASETS_PATH)["metadata"]["resourceVersion"] = "500"

    replicasets = run(client.list_replicasets(NAMESPACE))

    assert [rs.name for rs in replicasets] == [NEW_RS]  # the list, not the half-read stream
    assert kinds_of_requests(apiserver) == ["list", "watch", "list"]
    apiserver.serve_watch(REPLICASETS_PATH)
    run(client.list_replicasets(NAMESPACE))
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, "500"]
    [expired] = [e for e in logs if e["event"] == "kube.watch_expired"]
    assert (expired["log_level"], expired["resource"], expired["resource_version"]) == (
        "debug", "replicasets", LIST_VERSION)


def test_http_410_relists_within_the_same_call(apiserver):
    client = client_for(apiserver)
    run(client.list_deployments(NAMESPACE))
    watch = apiserver.serve_watch(DEPLOYMENTS_PATH)
    watch.status = 410
    watch.body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": "too old resource version: 236 (900)", "reason": "Gone",
                  "code": 410}
    apiserver.body(DEPLOYMENTS_PATH)["metadata"]["resourceVersion"] = "900"

    [deployment] = run(client.list_deployments(NAMESPACE))

    assert deployment.name == "payments-api"
    assert kinds_of_requests(apiserver) == ["list", "watch", "list"]
    apiserver.serve_watch(DEPLOYMENTS_PATH)
    run(client.list_deployments(NAMESPACE))
    assert apiserver.watch_versions(DEPLOYMENTS_PATH) == [LIST_VERSION, "900"]


def test_failed_relist_after_expiry_lists_again_next_time(apiserver):
    client = client_for(apiserver)
    listed = run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(REPLICASETS_PATH, expired_event(LIST_VERSION))
    apiserver.edit(REPLICASETS_PATH, status=503, body="unavailable", content_type="text/plain")

    error = failure(client.list_replicasets(NAMESPACE))
    assert (error.reason, error.retryable) == ("http_503", True)

    apiserver.reset()
    assert run(client.list_replicasets(NAMESPACE)) == listed
    assert kinds_of_requests(apiserver) == ["list"]  # the expired version is not asked again


@pytest.mark.parametrize(("status", "body", "content_type", "reason"), [
    (500, status_body(500, "InternalError", "etcdserver: leader changed"), "application/json",
     "InternalError"),
    (503, "<html>upstream unavailable</html>", "text/html", "http_503"),
    (429, status_body(429, "TooManyRequests", "slow down"), "application/json",
     "TooManyRequests"),
])
def test_failed_watch_keeps_the_cache_and_retries_from_the_same_version(
        apiserver, status, body, content_type, reason):
    client = client_for(apiserver)
    listed = run(client.list_replicasets(NAMESPACE))
    watch = apiserver.serve_watch(REPLICASETS_PATH)
    watch.status, watch.body, watch.content_type = status, body, content_type

    error = failure(client.list_replicasets(NAMESPACE))

    assert (error.source, error.reason, error.status, error.retryable) == (
        "kubernetes", reason, status, True)
    assert "watching replicasets" in error.message and NAMESPACE in error.message
    apiserver.serve_watch(REPLICASETS_PATH)
    assert run(client.list_replicasets(NAMESPACE)) == listed
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, LIST_VERSION]
    assert kinds_of_requests(apiserver) == ["list", "watch", "watch"]


def test_watch_timeout_keeps_the_cache(apiserver):
    # The default timeout, so that the lists never race it on a loaded machine: the watch
    # below, held for a minute, times out all the same.
    client = client_for(apiserver)
    listed = run(client.list_replicasets(NAMESPACE))
    # The server normally closes the stream after timeoutSeconds; this one hangs.
    apiserver.serve_watch(REPLICASETS_PATH).delay = HOLD_SECONDS

    started = time.monotonic()
    error = failure(client.list_replicasets(NAMESPACE))
    elapsed = time.monotonic() - started

    assert (error.reason, error.retryable, error.status) == ("timeout", True, None)
    # The wait is the adapter's timeout plus the time the server may hold a watch open (not
    # the adapter's timeout alone: that would cut every quiet watch short).
    assert f"{5.0 + WATCH_SECONDS:g} s" in error.message
    assert elapsed >= WATCH_SECONDS
    apiserver.serve_watch(REPLICASETS_PATH)
    assert run(client.list_replicasets(NAMESPACE)) == listed
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, LIST_VERSION]


def test_error_event_raises_and_drops_the_events_before_it(apiserver):
    client = client_for(apiserver)
    listed = run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(
        REPLICASETS_PATH,
        watch_event("ADDED", rs_object("payments-api-5d9c8f7b6a", "240")),
        watch_event("ERROR", status_body(500, "InternalError",
                                         f"watch failed (sent: Bearer {TOKEN})")))

    error = failure(client.list_replicasets(NAMESPACE))

    assert (error.reason, error.status, error.retryable) == ("InternalError", 500, True)
    assert TOKEN not in str(error) and "[redacted]" in error.message
    assert "watching replicasets" in error.message
    apiserver.serve_watch(REPLICASETS_PATH)
    assert run(client.list_replicasets(NAMESPACE)) == listed
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION, LIST_VERSION]


def test_error_event_with_a_client_error_is_not_retryable(apiserver):
    client = client_for(apiserver)
    run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(REPLICASETS_PATH, watch_event("ERROR", status_body(
        403, "Forbidden", 'cannot watch resource "replicasets"')))

    error = failure(client.list_replicasets(NAMESPACE))

    assert (error.reason, error.status, error.retryable) == ("Forbidden", 403, False)


@pytest.mark.parametrize("damaged", [
    "{not json",
    '{"type": "ADDED", "object": {"metadata": {"name": "payments-api-tr',  # cut short
    '["ADDED"]',
    '{"type": "RENAMED", "object": {"metadata": {"name": "x", "resourceVersion": "9"}}}',
    '{"type": "ADDED", "object": "payments-api"}',
    '{"type": "DELETED", "object": {"metadata": {"name": "payments-api-77587766bd"}}}',
    '{"type": "MODIFIED", "object": {"metadata": {"resourceVersion": "245"}}}',
    b"\xff\xfe",
])
def test_malformed_line_is_skipped_and_the_next_call_relists(apiserver, logs, damaged):
    client = client_for(apiserver)
    run(client.list_replicasets(NAMESPACE))
    apiserver.serve_watch(REPLICASETS_PATH,
                          watch_event("ADDED", rs_object("payments-api-5d9c8f7b6a", "240")),
                          damaged,
                          watch_event("ADDED", rs_object("payments-api-5d9c8f7b6b", "241")))

    replicasets = run(client.list_replicasets(NAMESPACE))

    assert [rs.name for rs in replicasets] == [
        "payments-api-5d9c8f7b6a", "payments-api-5d9c8f7b6b", NEW_RS, OLD_RS]
    assert [e["lines"] for e in logs if e["event"] == "kube.watch_malformed"] == [1]
    # Something was lost: the next call starts over from a list.
    assert [rs.name for rs in run(client.list_replicasets(NAMESPACE))] == [NEW_RS, OLD_RS]
    assert kinds_of_requests(apiserver) == ["list", "watch", "list"]


def test_list_without_a_version_is_listed_again(apiserver):
    del apiserver.body(REPLICASETS_PATH)["metadata"]["resourceVersion"]
    client = client_for(apiserver)

    run(client.list_replicasets(NAMESPACE))
    run(client.list_replicasets(NAMESPACE))

    assert kinds_of_requests(apiserver) == ["list", "list"]


def test_each_namespace_has_its_own_cache(apiserver):
    other_path = REPLICASETS_PATH.replace(NAMESPACE, "checkout")
    apiserver.serve_recording("replicasets_list.json", path=other_path)
    apiserver.body(other_path)["items"].pop()
    apiserver.body(other_path)["metadata"]["resourceVersion"] = "700"
    client = client_for(apiserver)

    for _ in range(2):
        assert len(run(client.list_replicasets(NAMESPACE))) == 2
        assert len(run(client.list_replicasets("checkout"))) == 1

    assert kinds_of_requests(apiserver) == ["list", "list", "watch", "watch"]
    assert apiserver.watch_versions(REPLICASETS_PATH) == [LIST_VERSION]
    assert apiserver.watch_versions(other_path) == ["700"]


def test_overlapping_calls_do_not_interleave(apiserver):
    client = client_for(apiserver)

    async def twice() -> list[tuple[ReplicaSet, ...]]:
        return await asyncio.gather(client.list_replicasets(NAMESPACE),
                                    client.list_replicasets(NAMESPACE))

    first, second = run(twice())

    assert first == second and len(first) == 2
    assert kinds_of_requests(apiserver) == ["list", "watch"]


def test_an_idle_watch_costs_bytes_of_changes_not_of_objects(apiserver):
    """300 ReplicaSets listed once; then a watch with nothing new, then one with one change.
    The fake counts what it actually sent: the watches must be tiny and still give all 300."""
    body = apiserver.body(REPLICASETS_PATH)
    body["items"] = [rs_object(f"payments-api-{n:010x}", str(1000 + n)) for n in range(300)]
    body["metadata"]["resourceVersion"] = "1300"
    client = client_for(apiserver)

    listed = run(client.list_replicasets(NAMESPACE))
    idle = run(client.list_replicasets(NAMESPACE))
    changed = rs_object("payments-api-000000002a", "1301", replicas=5)
    apiserver.serve_watch(REPLICASETS_PATH, watch_event("MODIFIED", changed))
    after_change = run(client.list_replicasets(NAMESPACE))

    pages = -(-300 // LIST_PAGE_SIZE)
    sizes = [e.response_bytes for e in apiserver.exchanges]
    list_bytes, (idle_bytes, change_bytes) = sum(sizes[:pages]), sizes[pages:]
    one_object = len(json.dumps(changed))
    assert list_bytes > 300 * one_object * 0.9
    assert idle_bytes < 100
    assert change_bytes < 2 * one_object
    assert len(listed) == len(idle) == len(after_change) == 300
    assert idle == listed
    assert [rs.replicas for rs in after_change if rs.replicas != 1] == [5]
    assert kinds_of_requests(apiserver) == ["list"] * pages + ["watch", "watch"]


# Pods: listed every time, only those of the revisions asked for.


def test_list_pods_of_some_revisions_returns_only_theirs(apiserver):
    pods = run(client_for(apiserver).list_pods(
        NAMESPACE, template_hashes=["77587766bd", "6874dc9bf7", "77587766bd"]))

    [request] = apiserver.requests
    # Every pod of a Deployment is listed (and then watched); the revisions are picked here.
    assert request.param("labelSelector") == "pod-template-hash"
    assert len(pods) == 3
    assert {p.pod_template_hash for p in pods} == {"77587766bd", "6874dc9bf7"}


def test_list_pods_of_the_new_revision_only(apiserver):
    pods = run(client_for(apiserver).list_pods(NAMESPACE, template_hashes=("6874dc9bf7",)))

    assert [(p.name, p.replicaset) for p in pods] == [("payments-api-6874dc9bf7-r66bl", NEW_RS)]


@pytest.mark.parametrize("hashes", [[], (), [""]])
def test_list_pods_of_no_revision_makes_no_request(apiserver, hashes):
    assert run(client_for(apiserver).list_pods(NAMESPACE, template_hashes=hashes)) == ()
    assert apiserver.requests == []


def test_pods_are_listed_once_then_watched_with_the_same_selector(apiserver):
    client = client_for(apiserver)
    first = run(client.list_pods(NAMESPACE))
    crashing = copy.deepcopy(next(p for p in recorded_items("pods_list.json")
                                  if p["metadata"]["name"] == "payments-api-6874dc9bf7-r66bl"))
    crashing["metadata"]["resourceVersion"] = "9001"
    crashing["status"]["containerStatuses"][0]["restartCount"] = 9
    apiserver.serve_watch(PODS_PATH, watch_event("MODIFIED", crashing), bookmark("9002", kind="Pod",
                                                                                 api_version="v1"))
    second = run(client.list_pods(NAMESPACE, template_hashes=["6874dc9bf7"]))

    assert kinds_of_requests(apiserver) == ["list", "watch"]
    assert all(r.param("labelSelector") == "pod-template-hash" for r in apiserver.requests)
    assert apiserver.watch_versions(PODS_PATH) == [apiserver.body(PODS_PATH)["metadata"][
        "resourceVersion"]]
    assert len(first) == 3
    [pod] = second
    assert pod.restarts == 9  # the change the watch brought, without listing again


# ---------------------------------------------------------------------------------------------
# Permissions: what the module calls is what the Role must grant.

_COLLECTION = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/[^/]+)"
                         r"/namespaces/[^/]+/(?P<resource>[^/]+)$")


def permission_of(request: Any) -> tuple[str, str, str]:
    match = _COLLECTION.match(request.path)
    assert match, f"not a namespaced collection path: {request.path}"
    assert request.method == "GET"
    return (match["group"] or "", match["resource"], "watch" if is_watch(request) else "list")


def test_required_permissions_cover_every_call(apiserver):
    client = client_for(apiserver)
    list_methods = [name for name, member in inspect.getmembers(KubeClient)
                    if not name.startswith("_") and inspect.iscoroutinefunction(member)]
    assert set(list_methods) == {"list_deployments", "list_replicasets", "list_pods",
                                 "list_warning_events"}
    apiserver.serve(f"/api/v1/namespaces/{NAMESPACE}/events", Response(body={
        "kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": []}))

    # Twice: the second call of a watched collection is a watch.
    for name in list_methods * 2:
        run(getattr(client, name)(NAMESPACE))
    run(client.list_pods(NAMESPACE, template_hashes=["6874dc9bf7"]))

    seen = {permission_of(request) for request in apiserver.requests}
    assert seen == set(REQUIRED_PERMISSIONS) | set(WARNING_EVENT_PERMISSIONS)
    assert len(REQUIRED_PERMISSIONS) == len(set(REQUIRED_PERMISSIONS))
    assert {("apps", "deployments", "list"), ("apps", "deployments", "watch"),
            ("apps", "replicasets", "list"), ("apps", "replicasets", "watch"),
            ("", "pods", "list"), ("", "pods", "watch")} == set(REQUIRED_PERMISSIONS)
    # Optional: without it the brief goes without Events, detection does not depend on it.
    assert WARNING_EVENT_PERMISSIONS == (("", "events", "list"),)


def test_namespaced_paths():
    assert namespaced_path(group="", version="v1", resource="pods", namespace=NAMESPACE) == \
        PODS_PATH
    assert namespaced_path(group="apps", version="v1", resource="replicasets",
                           namespace=NAMESPACE) == REPLICASETS_PATH
    assert namespaced_path(group="coordination.k8s.io", version="v1", resource="leases",
                           namespace="ns", name="a/b?c") == \
        "/apis/coordination.k8s.io/v1/namespaces/ns/leases/a%2Fb%3Fc"


# ---------------------------------------------------------------------------------------------
# Memory: the client's typed API classes are never built. Building CoreV1Api and AppsV1Api
# imports their modules and every model in their signatures (286 model modules, about 25 MB).

TYPED_API_MODULES = ("kubernetes.client.api.core_v1_api", "kubernetes.client.api.apps_v1_api",
                     "kubernetes.client.api.events_v1_api",
                     "kubernetes.client.api.coordination_v1_api")
# None is loaded today: a few could come with a client upgrade, hundreds mean a typed API class.
MAX_MODEL_MODULES = 50

# Builds every client of the API and makes each of their calls once (each fails: nothing
# listens on port 1), then reports what was imported.
IMPORTS_PROBE = """
import asyncio, json, sys
from datetime import datetime, timezone
from incident_detector.errors import SourceError
from incident_detector.notify.events import EventRecorder, event_body
from incident_detector.sources.kube import KubeClient, api_client_for
from incident_detector.run.leader import LeaderElector

api = api_client_for("http://127.0.0.1:1")
kube = KubeClient(api=api, timeout=1.0)
events = EventRecorder(api=api, timeout=1.0, reporting_instance="pod-0")
elector = LeaderElector(api=api, namespace="ns", identity="pod-0", timeout=1.0)
built = sorted(sys.modules)

async def call_each() -> None:
    payload = events.body_for(note="n", incident_record={
        "namespace": "ns", "deployment": "d", "replicaset": "d-1", "revision": 2,
        "detected_at": datetime.now(timezone.utc)})
    for call in (kube.list_deployments("ns"), kube.list_replicasets("ns"), kube.list_pods("ns"),
                 kube.list_warning_events("ns"), events.send(payload),
                 events.notified_revisions("ns")):
        try:
            await call
        except SourceError:
            pass
    await elector.try_acquire_or_renew()

asyncio.run(call_each())
print(json.dumps({"built": built, "called": sorted(sys.modules)}))
"""


def test_no_typed_api_class_or_model_is_imported():
    probe = subprocess.run([sys.executable, "-c", IMPORTS_PROBE], capture_output=True, text=True,
                           timeout=30, check=True)
    modules = json.loads(probe.stdout.splitlines()[-1])  # after the elector's log line

    for when in ("built", "called"):
        loaded = set(modules[when])
        assert "incident_detector.run.leader" in loaded
        assert sorted(loaded.intersection(TYPED_API_MODULES)) == [], when
        models = [m for m in loaded if m.startswith("kubernetes.client.models.")]
        assert len(models) < MAX_MODEL_MODULES, (when, len(models))


# ---------------------------------------------------------------------------------------------
# Client configuration.


def write_kubeconfig(path: Path, server: str, *, token: str = TOKEN) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server}}],
        "users": [{"name": "detector", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "detector"}}],
        "current-context": "local",
    }))
    return path


def test_kubeconfig_client_reaches_the_server(apiserver, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "config", apiserver.url)

    api = api_client_from_environment(kubeconfig=str(kubeconfig), in_cluster=False)
    deployments = run(KubeClient(api=api, timeout=5).list_deployments(NAMESPACE))

    assert [d.name for d in deployments] == ["payments-api"]
    assert apiserver.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_detection_falls_back_to_kubeconfig_outside_a_cluster(apiserver, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", apiserver.url)

    api = api_client_from_environment(kubeconfig=str(kubeconfig))

    assert api.configuration.host == apiserver.url
    assert len(run(KubeClient(api=api, timeout=5).list_pods(NAMESPACE))) == 3


def test_detection_prefers_the_service_account_in_a_pod(tmp_path, monkeypatch):
    # What the kubelet mounts into a pod, in a temporary directory.
    token_file, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    token_file.write_text("in-cluster-token")
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME",
                        str(token_file))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME",
                        str(ca_file))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    api = api_client_from_environment(kubeconfig=str(tmp_path / "not-read"))

    assert api.configuration.host == "https://10.96.0.1:443"
    assert api.configuration.ssl_ca_cert == str(ca_file)
    header = api.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert header.lower() == "bearer in-cluster-token"


def test_in_cluster_required_but_not_in_a_pod(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    with pytest.raises(SourceError) as caught:
        api_client_from_environment(in_cluster=True)

    error = caught.value
    assert (error.source, error.reason, error.retryable) == ("kubernetes", "config", False)
    assert "service account" in error.message


def test_missing_kubeconfig_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nowhere"

    with pytest.raises(SourceError) as caught:
        api_client_from_environment(kubeconfig=str(missing))

    error = caught.value
    assert (error.reason, error.retryable) == ("config", False)
    assert str(missing) in error.message and "service account" in error.message


@pytest.mark.parametrize("content", [
    "clusters: [unclosed",
    "- just\n- a list\n",
    json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "gone",
                "users": [{"name": "u", "user": {"token": TOKEN}}]}),
])
def test_broken_kubeconfig_is_a_config_error_without_secrets(tmp_path, content):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(content)

    with pytest.raises(SourceError) as caught:
        api_client_from_environment(kubeconfig=str(kubeconfig), in_cluster=False)

    assert (caught.value.reason, caught.value.retryable) == ("config", False)
    assert TOKEN not in str(caught.value)


def test_api_client_for_sends_no_authorization_without_a_token(apiserver):
    run(KubeClient(api=api_client_for(apiserver.url), timeout=5).list_pods(NAMESPACE))
    assert "authorization" not in apiserver.requests[0].headers


# ---------------------------------------------------------------------------------------------
# Pure parsers: ReplicaSets.


def replicaset_item(revision: Any = "2", **metadata: Any) -> dict[str, Any]:
    item = copy.deepcopy(recorded_items("replicasets_list.json")[0])
    annotations = item["metadata"]["annotations"]
    if revision is None:
        del annotations[REVISION_ANNOTATION]
    else:
        annotations[REVISION_ANNOTATION] = revision
    item["metadata"].update(metadata)
    return item


@pytest.mark.parametrize(
    ("raw", "revision"),
    [("2", 2), ("17", 17), ("007", 7), (None, None), ("", None), ("two", None), ("-3", None),
     ("2.0", None), (" 2", None), ("1e3", None), ("٣", None), ("9" * 40, None),
     ("9223372036854775807", 9223372036854775807)],
)
def test_replicaset_revision(raw, revision):
    rs = parse_replicaset(replicaset_item(raw))
    assert rs is not None
    assert rs.revision == revision
    assert rs.revision_raw == raw


def test_replicaset_revision_annotation_that_is_not_a_string():
    rs = parse_replicaset(replicaset_item(2))
    assert rs is not None and rs.revision is None and rs.revision_raw is None


def test_replicaset_without_controller_owner():
    item = replicaset_item()
    item["metadata"]["ownerReferences"][0]["controller"] = False
    assert parse_replicaset(item).deployment is None

    item["metadata"]["ownerReferences"] = [
        {"kind": "Deployment", "name": "not-controller"},
        {"kind": "StatefulSet", "name": "other", "controller": True},
        {"kind": "Deployment", "name": "string-true", "controller": "true"},
    ]
    assert parse_replicaset(item).deployment is None

    item["metadata"]["ownerReferences"].append(
        {"kind": "Deployment", "name": "payments-api", "controller": True})
    assert parse_replicaset(item).deployment == "payments-api"

    del item["metadata"]["ownerReferences"]
    assert parse_replicaset(item).deployment is None


def test_replicaset_needs_name_namespace_and_creation_time():
    assert parse_replicaset(replicaset_item()) is not None
    for broken in ({"name": None}, {"namespace": ""}, {"creationTimestamp": None},
                   {"creationTimestamp": "yesterday"}, {"name": 5}):
        assert parse_replicaset(replicaset_item(**broken)) is None
    assert parse_replicaset({}) is None
    assert parse_replicaset([]) is None  # type: ignore[arg-type]


def test_creation_timestamps_become_aware_utc():
    rs = parse_replicaset(replicaset_item(creationTimestamp="2026-11-23T19:54:04.5+02:00"))
    assert rs.created_at == datetime(2026, 11, 23, 17, 54, 4, 500000, tzinfo=timezone.utc)
    assert rs.created_at.tzinfo is timezone.utc


def test_replicaset_pod_template_hash_comes_from_its_label():
    hashes = {rs.name: rs.pod_template_hash
              for rs in map(parse_replicaset, recorded_items("replicasets_list.json"))}
    assert hashes == {NEW_RS: "6874dc9bf7", OLD_RS: "77587766bd"}
    item = replicaset_item()
    for labels in ({}, {"pod-template-hash": ""}, {"pod-template-hash": 5}, None, "x"):
        item["metadata"]["labels"] = labels
        assert parse_replicaset(item).pod_template_hash is None


def test_replicaset_counts_default_to_zero_when_omitted():
    item = replicaset_item()
    item["status"] = {"replicas": 3, "readyReplicas": 2}
    rs = parse_replicaset(item)
    assert (rs.replicas, rs.ready_replicas) == (3, 2)
    item["status"] = {"replicas": "3", "readyReplicas": -1}
    rs = parse_replicaset(item)
    assert (rs.replicas, rs.ready_replicas) == (0, 0)


# Pod templates.


def test_pod_template_containers_env_and_references():
    template = {
        "metadata": {"labels": {"app": "payments-api"}},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "payments-api:1.5.0",
                                "command": ["/migrate"], "args": ["--up"]}],
            "containers": [{
                "name": "payments-api",
                "image": "payments-api:1.5.0",
                "args": ["--port", "8080"],
                "env": [
                    {"name": "MODE", "value": "fast"},
                    {"name": "EMPTY"},
                    {"name": "DB_PASSWORD", "value": "leaked-if-captured",
                     "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "FEATURES",
                     "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "features"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                        "containerName": "payments-api", "resource": "limits.memory"}}},
                    {"value": "no name"},
                ],
                "envFrom": [{"configMapRef": {"name": "common"}},
                            {"secretRef": {"name": "api-keys"}}],
                "resources": {"limits": {"memory": "256Mi", "cpu": "500m"},
                              "requests": {"cpu": "100m"}, "claims": [{"name": "gpu"}]},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                   "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
            }],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app-config"}},
                {"name": "tls", "secret": {"secretName": "tls-cert"}},
                {"name": "bundle", "projected": {"sources": [
                    {"configMap": {"name": "bundle-cm"}}, {"secret": {"name": "bundle-secret"}},
                    {"downwardAPI": {"items": []}}]}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }

    parsed = parse_pod_template(template)

    init, main = parsed.containers
    assert init == Container(name="init:migrate", image="payments-api:1.5.0",
                             command=("/migrate",), args=("--up",))
    assert main.name == "payments-api" and main.args == ("--port", "8080")
    assert main.env == (
        EnvVar(name="MODE", value="fast"),
        EnvVar(name="EMPTY", value=""),
        EnvVar(name="DB_PASSWORD", source="secret:db/password"),
        EnvVar(name="FEATURES", source="configmap:flags/features"),
        EnvVar(name="POD_IP", source="field:status.podIP"),
        EnvVar(name="MEM", source="resource:limits.memory"),
    )
    assert "leaked-if-captured" not in repr(parsed)
    assert main.resources == (("limits.cpu", "500m"), ("limits.memory", "256Mi"),
                              ("requests.cpu", "100m"))
    assert main.probes == (
        ("liveness", '{"tcpSocket":{"port":8080}}'),
        ("readiness", '{"httpGet":{"path":"/ready","port":8080},"periodSeconds":5}'),
    )
    assert parsed.config_maps == {"flags", "common", "app-config", "bundle-cm"}
    assert parsed.secrets == {"db", "api-keys", "tls-cert", "bundle-secret"}


def test_probe_json_is_canonical():
    a = parse_pod_template({"spec": {"containers": [{"name": "c", "startupProbe": {
        "exec": {"command": ["true"]}, "failureThreshold": 30}}]}})
    b = parse_pod_template({"spec": {"containers": [{"name": "c", "startupProbe": {
        "failureThreshold": 30, "exec": {"command": ["true"]}}}]}})
    assert a == b
    assert a.containers[0].probes == (
        ("startup", '{"exec":{"command":["true"]},"failureThreshold":30}'),)


def test_pod_template_tolerates_odd_shapes():
    assert parse_pod_template({}).containers == ()
    odd = parse_pod_template({"spec": {"containers": [
        {"image": "nameless"}, "not a dict", {"name": "c", "image": 5, "command": "sh -c x",
                                              "env": {"A": "b"}, "resources": [1]}]}})
    assert odd.containers == (Container(name="c", image=""),)


# Pods.


def pod_item(*statuses: dict[str, Any], init: tuple[dict[str, Any], ...] = (),
             **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "payments-api-6874dc9bf7-abcde", "namespace": NAMESPACE,
                     "creationTimestamp": "2026-11-23T17:54:10Z",
                     "ownerReferences": [{"kind": "ReplicaSet", "name": NEW_RS,
                                          "controller": True}]},
        "status": {"phase": "Running", "containerStatuses": list(statuses),
                   "initContainerStatuses": list(init), **status},
    }


def container_status(name: str = "app", restarts: int = 0, *, waiting: str | None = None,
                     terminated: str | None = None, last_terminated: str | None = None
                     ) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": "2026-11-23T17:55:00Z"}}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": "..."}}
    if terminated:
        state = {"terminated": {"reason": terminated, "exitCode": 137}}
    last = {"terminated": {"reason": last_terminated, "exitCode": 137}} if last_terminated else {}
    return {"name": name, "state": state, "lastState": last, "restartCount": restarts}


def test_oom_killed_in_last_state():
    pod = parse_pod(pod_item(container_status(restarts=1, last_terminated="OOMKilled")))
    assert pod.problems == (PodProblem.OOM_KILLED,)


def test_oom_killed_in_current_state():
    pod = parse_pod(pod_item(container_status(terminated="OOMKilled")))
    assert pod.problems == (PodProblem.OOM_KILLED,)


def test_terminated_with_error_is_not_oom():
    pod = parse_pod(pod_item(container_status(last_terminated="Error")))
    assert pod.problems == ()


def test_restart_threshold_is_per_container():
    assert RESTART_THRESHOLD == 3
    below = parse_pod(pod_item(container_status("a", 2), container_status("b", 2)))
    assert below.restarts == 4 and below.problems == ()
    at = parse_pod(pod_item(container_status("a", 3)))
    assert at.problems == (PodProblem.RESTARTING,)


def test_restarts_sum_init_and_app_containers():
    pod = parse_pod(pod_item(container_status("a", 1), container_status("b", 2),
                             init=(container_status("setup", 1),)))
    assert pod.restarts == 4


@pytest.mark.parametrize(("reason", "problem"), [
    ("CrashLoopBackOff", PodProblem.CRASH_LOOP),
    ("ImagePullBackOff", PodProblem.IMAGE_PULL),
    ("ErrImagePull", PodProblem.ERR_IMAGE_PULL),
    ("CreateContainerConfigError", PodProblem.CONFIG_ERROR),
])
def test_waiting_reasons(reason, problem):
    assert parse_pod(pod_item(container_status(waiting=reason))).problems == (problem,)


def test_benign_waiting_reason_is_no_problem():
    assert parse_pod(pod_item(container_status(waiting="ContainerCreating"))).problems == ()


def test_problems_are_deduplicated_and_ordered():
    pod = parse_pod(pod_item(
        container_status("b", 5, waiting="CrashLoopBackOff", last_terminated="OOMKilled"),
        container_status("a", 4, waiting="CrashLoopBackOff"),
        init=(container_status("setup", waiting="ImagePullBackOff"),),
    ))
    assert pod.problems == (PodProblem.CRASH_LOOP, PodProblem.IMAGE_PULL, PodProblem.OOM_KILLED,
                            PodProblem.RESTARTING)


def test_pod_readiness_owner_and_phase():
    pod = parse_pod(pod_item(container_status(), conditions=[
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]))
    assert pod == Pod(namespace=NAMESPACE, name="payments-api-6874dc9bf7-abcde", replicaset=NEW_RS,
                      phase="Running", ready=True, restarts=0,
                      created_at=datetime(2026, 11, 23, 17, 54, 10, tzinfo=timezone.utc))
    not_ready = parse_pod(pod_item(conditions=[{"type": "Ready", "status": "False"}]))
    assert not_ready.ready is False


def test_pod_without_controller_or_phase():
    item = pod_item()
    item["metadata"]["ownerReferences"][0]["controller"] = None
    del item["status"]["phase"]
    pod = parse_pod(item)
    assert (pod.replicaset, pod.phase) == (None, "Unknown")
    del item["metadata"]["namespace"]
    assert parse_pod(item) is None


# Deployments.


def deployment_item(**status: Any) -> dict[str, Any]:
    item = copy.deepcopy(recorded_items("deployments_list.json")[0])
    item["status"].update(status)
    return item


def test_progress_deadline_exceeded():
    message = 'ReplicaSet "payments-api-6874dc9bf7" has timed out progressing.'
    item = deployment_item(conditions=[
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": message},
    ])
    deployment = parse_deployment(item)
    assert deployment.progress_deadline_exceeded is True
    assert deployment.progress_message == message


def test_progressing_deployment_is_not_past_its_deadline():
    deployment = parse_deployment(deployment_item())
    assert (deployment.progress_deadline_exceeded, deployment.progress_message) == (False, None)
    stalled_otherwise = deployment_item(conditions=[
        {"type": "Progressing", "status": "False", "reason": "SomethingElse"}])
    assert parse_deployment(stalled_otherwise).progress_deadline_exceeded is False


def test_deployment_fields():
    item = deployment_item()
    item["spec"]["template"]["metadata"]["labels"] = {"tier": "api", "app": "payments-api",
                                                       "bad": 5}
    item["metadata"]["labels"][kube_objects.ARGOCD_INSTANCE_LABEL] = "payments"
    deployment = parse_deployment(item)
    assert deployment.pod_labels == (("app", "payments-api"), ("tier", "api"))
    assert deployment.pod_label("tier") == "api"
    assert deployment.gitops == GitOpsOwner(tool=GitOpsTool.ARGO_CD, app="payments")
    del item["spec"]["replicas"]
    assert parse_deployment(item).replicas == 1  # the API's default
    item["metadata"]["annotations"][REVISION_ANNOTATION] = "x"
    assert parse_deployment(item).revision is None
    del item["metadata"]["name"]
    assert parse_deployment(item) is None


# GitOps.


@pytest.mark.parametrize(("labels", "annotations", "owner"), [
    ({}, {"argocd.argoproj.io/tracking-id": "payments:apps/Deployment:demo-aiops/payments-api"},
     GitOpsOwner(GitOpsTool.ARGO_CD, "payments")),
    ({}, {"argocd.argoproj.io/tracking-id": "team-a_payments:apps/Deployment:demo/payments-api"},
     GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "team-a")),
    ({}, {"argocd.argoproj.io/tracking-id": "team-a/payments:apps/Deployment:demo/payments-api"},
     GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "team-a")),
    ({"argocd.argoproj.io/instance": "payments"}, {},
     GitOpsOwner(GitOpsTool.ARGO_CD, "payments")),
    ({"argocd.argoproj.io/instance": "team-b_payments"}, {},
     GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "team-b")),
    ({"argocd.argoproj.io/instance": "label-app"},
     {"argocd.argoproj.io/tracking-id": "annotation-app:apps/Deployment:demo/payments-api"},
     GitOpsOwner(GitOpsTool.ARGO_CD, "annotation-app")),
    ({"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace":
      "flux-system"}, {}, GitOpsOwner(GitOpsTool.FLUX, "apps", "flux-system", "kustomization")),
    ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {},
     GitOpsOwner(GitOpsTool.FLUX, "apps", flux_kind="kustomization")),
    ({"helm.toolkit.fluxcd.io/name": "payments", "helm.toolkit.fluxcd.io/namespace": "demo",
      "app.kubernetes.io/instance": "payments", "app.kubernetes.io/managed-by": "Helm"}, {},
     GitOpsOwner(GitOpsTool.FLUX, "payments", "demo", "helmrelease")),
    ({"app": "payments-api"}, {REVISION_ANNOTATION: "2"}, None),
    ({"app.kubernetes.io/instance": "payments", "app.kubernetes.io/managed-by": "Helm"},
     {"meta.helm.sh/release-name": "payments"}, None),
    ({"argocd.argoproj.io/instance": ""}, {"argocd.argoproj.io/tracking-id": ":apps/x:y/z"}, None),
    ({"argocd.argoproj.io/instance": "_payments"}, {}, None),
    ({"kustomize.toolkit.fluxcd.io/name": ""}, {}, None),
])
def test_detect_gitops(labels, annotations, owner):
    assert detect_gitops(labels=labels, annotations=annotations) == owner


# parse_list.


def test_parse_list():
    body = json.dumps({"kind": "PodList", "items": [{"metadata": {}}, 3, None]}).encode()
    assert parse_list(body, kind="PodList") == [{"metadata": {}}]
    assert parse_list(b'{"kind": "PodList", "apiVersion": "v1", "metadata": {}}',
                      kind="PodList") == []
    assert parse_list(b'{"items": []}', kind="PodList") == []
    for bad, reason in [(b"", "malformed"), (b"{", "malformed"), (b"null", "unexpected_shape"),
                        (b'{"kind": "Status", "items": []}', "unexpected_shape"),
                        (b'{"items": null}', "unexpected_shape")]:
        with pytest.raises(SourceError) as caught:
            parse_list(bad, kind="PodList")
        assert caught.value.reason == reason


# ---------------------------------------------------------------------------------------------
# Parsers never raise, whatever JSON comes in.

FIELD_NAMES = [
    "metadata", "name", "namespace", "annotations", "labels", "ownerReferences", "controller",
    "kind", "creationTimestamp", "spec", "template", "containers", "initContainers", "env",
    "envFrom", "valueFrom", "secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef",
    "configMapRef", "secretRef", "key", "value", "fieldPath", "resource", "volumes", "configMap",
    "secret", "secretName", "projected", "sources", "resources", "limits", "requests",
    "livenessProbe", "readinessProbe", "startupProbe", "status", "replicas", "readyReplicas",
    "conditions", "type", "reason", "message", "containerStatuses", "initContainerStatuses",
    "state", "lastState", "waiting", "terminated", "restartCount", "phase", "image", "command",
    "args", REVISION_ANNOTATION, kube_objects.ARGOCD_TRACKING_ID_ANNOTATION,
    kube_objects.ARGOCD_INSTANCE_LABEL, kube_objects.FLUX_KUSTOMIZATION_NAME_LABEL,
    kube_objects.FLUX_HELMRELEASE_NAME_LABEL,
]
MEANINGFUL_VALUES = [
    "True", "False", "Deployment", "ReplicaSet", "Ready", "Progressing",
    "ProgressDeadlineExceeded", "CrashLoopBackOff", "OOMKilled", "2", "-1", "2026-11-23T17:54:04Z",
    "2026-11-23T17:54:04+14:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "app:apps/Deployment:ns/name", "ns_app", "a/b", NAMESPACE,
]

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(), st.text(max_size=12), st.sampled_from(MEANINGFUL_VALUES),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6)), children,
                        max_size=6),
    ),
    max_leaves=40,
)
api_objects = st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), json_values,
                              max_size=4)


def mutated_recordings() -> st.SearchStrategy[dict[str, Any]]:
    """Recorded objects with one subtree replaced by arbitrary JSON."""
    items = [*recorded_items("replicasets_list.json"), *recorded_items("pods_list.json"),
             *recorded_items("deployments_list.json")]

    def replace(item: dict[str, Any], path_choice: int, value: Any) -> dict[str, Any]:
        item = copy.deepcopy(item)
        paths: list[tuple[Any, Any]] = []

        def walk(node: Any) -> None:
            children = (node.items() if isinstance(node, dict) else
                        enumerate(node) if isinstance(node, list) else ())
            for key, child in children:
                paths.append((node, key))
                walk(child)

        walk(item)
        node, key = paths[path_choice % len(paths)]
        node[key] = value
        return item

    return st.builds(replace, st.sampled_from(items), st.integers(min_value=0), json_values)


PARSERS = (parse_replicaset, parse_pod, parse_deployment)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=st.one_of(api_objects, json_values))
def test_parsers_never_raise_on_arbitrary_json(item):
    for parse in PARSERS:
        result = parse(item)
        assert result is None or dataclasses.is_dataclass(result)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=mutated_recordings())
def test_parsers_never_raise_on_damaged_recordings(item):
    for parse in PARSERS:
        result = parse(item)
        assert result is None or dataclasses.is_dataclass(result)
    template = item.get("spec", {}).get("template") if isinstance(item.get("spec"), dict) else None
    parse_pod_template(template if isinstance(template, dict) else {})


@settings(max_examples=100, deadline=None)
@given(labels=st.dictionaries(st.sampled_from(FIELD_NAMES), json_leaves, max_size=4),
       annotations=st.dictionaries(st.sampled_from(FIELD_NAMES), json_leaves, max_size=4))
def test_detect_gitops_never_raises(labels, annotations):
    owner = detect_gitops(labels=labels, annotations=annotations)
    assert owner is None or (owner.app and isinstance(owner.app, str))


def test_a_large_list_is_read_page_by_page_then_watched(apiserver):
    template = recorded_items("replicasets_list.json")[0]
    items = []
    for i in range(2 * LIST_PAGE_SIZE + 17):
        item = copy.deepcopy(template)
        item["metadata"]["name"] = f"payments-api-{i:010d}"
        items.append(item)
    apiserver.edit(REPLICASETS_PATH, body={"kind": "ReplicaSetList", "apiVersion": "apps/v1",
                                           "metadata": {"resourceVersion": LIST_VERSION},
                                           "items": items})
    client = client_for(apiserver)

    listed = run(client.list_replicasets(NAMESPACE))
    run(client.list_replicasets(NAMESPACE))

    assert len(listed) == len(items)
    pages = [r.query for r in apiserver.requests][:3]
    assert [q.get("continue") for q in pages] == [None, ["1"], ["2"]]
    assert all(q["limit"] == [str(LIST_PAGE_SIZE)] for q in pages)
    watch = apiserver.requests[3].query
    assert watch["watch"] == ["true"] and watch["resourceVersion"] == [LIST_VERSION]


# ---------------------------------------------------------------------------------------------
# What a rollout is, from the recorded undo and re-create (kube-apiserver v1.24).


def recorded_body(name: str) -> Any:
    return json.loads((Path(__file__).parent / "fixtures" / "kubernetes" / f"{name}.json")
                      .read_text())["response"]["json"]


def test_a_replicaset_made_current_again_by_an_undo():
    # v1 -> v2 -> `kubectl rollout undo`: v1's ReplicaSet is revision 3, created long before.
    by_name = {rs.name: rs for rs in map(parse_replicaset, recorded_body("replicasets_after_undo")["items"])}
    undone, replaced = by_name["orders-8657856c47"], by_name["orders-568db7cb66"]
    assert (undone.revision, undone.reused) == (3, True)
    assert undone.created_at == datetime(2026, 11, 26, 10, 54, 29, tzinfo=timezone.utc)
    # The controller's write of its revision annotation (managedFields), not its status entry.
    assert undone.revision_written_at == datetime(2026, 11, 26, 10, 54, 37, tzinfo=timezone.utc)
    assert (replaced.revision, replaced.reused) == (2, False)
    assert undone.uid == "5839064e-5fa2-4ca6-a071-4db89fda2f5d"
    assert undone.deployment_uid == replaced.deployment_uid == "d48d015e-dce4-4233-aa57-137560934a06"


def test_the_progressing_condition_names_the_current_replicaset():
    deployment = parse_deployment(recorded_body("deployment_after_undo"))
    assert (deployment.revision, deployment.uid) == (3, "d48d015e-dce4-4233-aa57-137560934a06")
    assert deployment.progressing_replicaset == "orders-8657856c47"
    assert deployment.progressing_updated_at == datetime(2026, 11, 26, 10, 54, 37, tzinfo=timezone.utc)


def test_the_undo_rollout_begins_when_the_revision_was_rewritten():
    from incident_detector.judge.correlator import find_rollout

    deployment = parse_deployment(recorded_body("deployment_after_undo"))
    replicasets = list(map(parse_replicaset, recorded_body("replicasets_after_undo")["items"]))
    rollout = find_rollout(deployment, replicasets)
    assert rollout is not None
    assert rollout.replicaset.name == "orders-8657856c47" and rollout.previous.revision == 2
    assert rollout.started_at == datetime(2026, 11, 26, 10, 54, 37, tzinfo=timezone.utc)


def test_a_deployment_created_again_has_a_new_uid_and_starts_at_revision_one():
    from incident_detector.judge.correlator import find_rollout

    recreated = parse_deployment(recorded_body("deployment_recreated"))
    assert recreated.revision == 1
    assert recreated.uid == "34599deb-88bd-4a55-8142-3b48f132ad74"
    # The old object's ReplicaSets, not yet collected, are not its own: nothing to judge.
    old = list(map(parse_replicaset, recorded_body("replicasets_after_undo")["items"]))
    assert find_rollout(recreated, old) is None


@given(st.lists(st.fixed_dictionaries({}, optional={
    "manager": st.sampled_from(["kube-controller-manager", "kubectl", 5]),
    "subresource": st.sampled_from(["status", ""]),
    "time": st.sampled_from(["2026-11-26T10:54:37Z", "garbage", None]),
    "fieldsV1": st.one_of(st.none(), st.just({"f:metadata": {"f:annotations": {
        "f:deployment.kubernetes.io/revision": {}}}}), st.just({"f:metadata": 7})),
})))
def test_revision_written_at_never_raises(entries):
    written = kube_objects.revision_written_at({"managedFields": entries})
    assert written is None or written.tzinfo is not None


LEASE_T0 = datetime(2026, 11, 23, 17, 56, 7, tzinfo=timezone.utc)


def test_micro_time_always_has_six_fractional_digits():
    assert micro_time(LEASE_T0) == "2026-11-23T17:56:07.000000Z"
    assert micro_time(LEASE_T0.replace(microsecond=120)) == "2026-11-23T17:56:07.000120Z"
    assert micro_time(datetime(2026, 11, 23, 17, 56, 7)) == "2026-11-23T17:56:07.000000Z"
    plus_two = timezone(timedelta(hours=2))
    assert micro_time(datetime(2026, 11, 23, 19, 56, 7, tzinfo=plus_two)) == \
        "2026-11-23T17:56:07.000000Z"


def test_a_deployment_says_what_a_write_is_conditioned_on_and_whether_it_converged():
    undone = parse_deployment(recorded_body("deployment_after_undo"))
    assert undone.resource_version == "8474" and undone.paused is False
    # observedGeneration 3 of 3, but 2 of 3 updated and none available: not converged.
    assert undone.rollout == RolloutStatus(generation=3, observed_generation=3, updated_replicas=2)
    assert not undone.rollout.converged(undone.replicas)
    done = RolloutStatus(generation=4, observed_generation=4, updated_replicas=3,
                         ready_replicas=3, available_replicas=3)
    assert done.converged(3)
    assert not RolloutStatus(generation=5, observed_generation=4, updated_replicas=3,
                             ready_replicas=3, available_replicas=3).converged(3)
    paused = copy.deepcopy(recorded_body("deployment_after_undo"))
    paused["spec"]["paused"] = True
    assert parse_deployment(paused).paused


# ---------------------------------------------------------------------------------------------
# The change timeline rides on the Deployment watch: (old, new) pairs, no extra request.


def deployment_object(resource_version: str, **spec: Any) -> dict[str, Any]:
    item = copy.deepcopy(recorded_items("deployments_list.json")[0])
    item["metadata"]["resourceVersion"] = resource_version
    item["spec"].update(spec)
    return item


def test_the_spec_writer_of_the_recorded_deployment_is_kubectl_set():
    deployment = parse_deployment(recorded_items("deployments_list.json")[0])
    # kube-controller-manager wrote later, but only the revision annotation and the status.
    assert (deployment.spec_manager, deployment.spec_operation) == ("kubectl-set", "Update")
    assert deployment.spec_written_at == datetime(2026, 11, 23, 17, 54, 3, tzinfo=timezone.utc)


def test_the_spec_writer_counts_a_scale_but_not_a_status_write():
    item = copy.deepcopy(recorded_items("deployments_list.json")[0])
    item["metadata"]["managedFields"] += [
        {"manager": "kubectl", "operation": "Update", "apiVersion": "autoscaling/v1",
         "time": "2026-11-23T18:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2026-11-23T18:05:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {
             "f:deployment.kubernetes.io/revision": {}}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2026-11-23T18:06:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:status": {"f:replicas": {}}}, "subresource": "status"}]
    deployment = parse_deployment(item)
    assert deployment.spec_manager == "kubectl"
    assert deployment.spec_written_at == datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
    del item["metadata"]["managedFields"]
    bare = parse_deployment(item)
    assert (bare.spec_manager, bare.spec_operation, bare.spec_written_at) == (None, None, None)


def test_deployment_changes_are_recorded_by_the_watch_without_another_request(apiserver):
    client = client_for(apiserver)
    [listed] = run(client.list_deployments(NAMESPACE))
    assert client.drain_deployment_changes(NAMESPACE) == []  # the first list is the baseline
    scaled = deployment_object("240", replicas=5)
    status_only = deployment_object("241", replicas=5)
    status_only["status"]["readyReplicas"] = 5
    apiserver.serve_watch(DEPLOYMENTS_PATH, watch_event("MODIFIED", scaled))
    run(client.list_deployments(NAMESPACE))
    apiserver.serve_watch(DEPLOYMENTS_PATH, watch_event("MODIFIED", status_only))
    run(client.list_deployments(NAMESPACE))

    [(old, new)] = client.drain_deployment_changes(NAMESPACE)

    assert old == listed and (old.replicas, new.replicas) == (2, 5)
    assert new.resource_version == "240"
    assert client.drain_deployment_changes(NAMESPACE) == []
    assert client.drain_deployment_changes("elsewhere") == []
    assert kinds_of_requests(apiserver) == ["list", "watch", "watch"]
    assert {r.path for r in apiserver.requests} == {DEPLOYMENTS_PATH}
    apiserver.serve_watch(DEPLOYMENTS_PATH, watch_event("DELETED", deployment_object("250")))
    run(client.list_deployments(NAMESPACE))
    [(gone, none)] = client.drain_deployment_changes(NAMESPACE)
    assert gone.replicas == 5 and none is None


def test_a_relist_after_410_records_the_net_difference_of_deployments(apiserver):
    client = client_for(apiserver)
    run(client.list_deployments(NAMESPACE))
    apiserver.serve_watch(DEPLOYMENTS_PATH, expired_event(LIST_VERSION))
    rolled = deployment_object("600")
    rolled["metadata"]["annotations"][REVISION_ANNOTATION] = "3"
    rolled["metadata"]["generation"] = 3
    added = deployment_object("601")
    added["metadata"].update(name="orders-api", uid="uid-orders")
    apiserver.body(DEPLOYMENTS_PATH)["items"] = [rolled, added]
    apiserver.body(DEPLOYMENTS_PATH)["metadata"]["resourceVersion"] = "601"

    run(client.list_deployments(NAMESPACE))

    pairs = client.drain_deployment_changes(NAMESPACE)
    assert [(old and old.revision, new and new.name, new and new.revision)
            for old, new in pairs] == [(2, "payments-api", 3), (None, "orders-api", 2)]
    assert kinds_of_requests(apiserver) == ["list", "watch", "list"]
