"""The change timeline's watches: the real ``kubernetes`` client against the loopback apiserver,
serving the recorded ConfigMap watch and lists in the real v1 shapes."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from datetime import datetime, timezone
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from apiserver import (
    CHANGE_LIST_RECORDINGS,
    NAMESPACE,
    FakeApiServer,
    expired_event,
    is_watch,
    recorded_items,
    recorded_watch_object,
    serve_change_lists,
    status_body,
    watch_event,
)
from incident_detector.errors import SourceError
from incident_detector.model import CHANGE_KINDS, CREATED, DELETED, UPDATED, Change, FieldChange
from incident_detector.store.changes import change_dict
from incident_detector.sim.server import Response
from incident_detector.sources.changes_watch import (
    CHANGE_CALLS,
    CHANGE_PERMISSIONS,
    ChangeWatcher,
)
from incident_detector.sources.kube_http import api_client_for

TOKEN = "s3cr3t-bearer-token-0123456789"
NOW = datetime(2026, 11, 26, 11, 0, 0, tzinfo=timezone.utc)
WATCHED_KINDS = tuple(kind for kind in CHANGE_KINDS if kind != "Deployment")


@pytest.fixture(scope="module")
def running_apiserver():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def apiserver(running_apiserver):
    running_apiserver.reset()
    return running_apiserver


@pytest.fixture
def paths(apiserver) -> dict[str, str]:
    return serve_change_lists(apiserver)


@pytest.fixture
def logs():
    saved = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(wrapper_class=saved)


def watcher_for(server: FakeApiServer, kinds=CHANGE_KINDS) -> ChangeWatcher:
    return ChangeWatcher(api=api_client_for(server.url, token=TOKEN), timeout=5.0, kinds=kinds)


def refresh(watcher: ChangeWatcher, namespace: str = NAMESPACE) -> tuple[Change, ...]:
    return asyncio.run(watcher.refresh(namespace, now=NOW))


def requests_by_path(server: FakeApiServer) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for request in server.requests:
        seen.setdefault(request.path, []).append("watch" if is_watch(request) else "list")
    return seen


def item(kind: str, index: int = 0) -> dict[str, Any]:
    return recorded_items(CHANGE_LIST_RECORDINGS[kind])[index]


def with_version(obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["resourceVersion"] = version
    return obj


# ---------------------------------------------------------------------------------------------
# List, then watch: one request per kind per refresh.


def test_the_first_refresh_lists_every_kind_and_yields_no_change(apiserver, paths):
    watcher = watcher_for(apiserver)

    assert refresh(watcher) == ()

    assert requests_by_path(apiserver) == {path: ["list"] for path in paths.values()}
    assert set(watcher.kinds) == set(WATCHED_KINDS)  # Deployments ride on the kube source


def test_each_refresh_makes_one_request_per_kind(apiserver, paths):
    watcher = watcher_for(apiserver)
    for _ in range(3):
        refresh(watcher)

    seen = requests_by_path(apiserver)
    assert set(seen) == set(paths.values())
    for path, kinds in seen.items():
        assert kinds == ["list", "watch", "watch"], path
    configmaps = paths["ConfigMap"]
    assert apiserver.watch_versions(configmaps) == ["8530", "8530"]


def test_only_the_kinds_asked_for_are_watched(apiserver, paths):
    watcher = watcher_for(apiserver, kinds=("ConfigMap", "Deployment"))
    refresh(watcher)
    refresh(watcher)
    assert watcher.kinds == ("ConfigMap",)
    assert set(requests_by_path(apiserver)) == {paths["ConfigMap"]}


def test_the_recorded_configmap_change_names_its_key_values_and_manager(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    apiserver.serve_watch(paths["ConfigMap"], watch_event("MODIFIED", recorded_watch_object()))

    [change] = refresh(watcher)

    assert (change.kind, change.name, change.action) == ("ConfigMap", "orders-config", UPDATED)
    assert change.fields == (FieldChange("data.TIMEOUT_MS", before="5000", after="50"),)
    assert (change.manager, change.operation) == ("kubectl-patch", "Update")
    assert change.at == datetime(2026, 11, 26, 10, 54, 51, tzinfo=timezone.utc)
    assert change.observed_at == NOW
    assert (change.resource_version, change.uid) == ("8531",
                                                     "085eba75-c5b3-4ad4-97b0-0e2868b5b28a")
    # The next watch starts from the event's version, and an empty one changes nothing.
    apiserver.serve_watch(paths["ConfigMap"])
    assert refresh(watcher) == ()
    assert apiserver.watch_versions(paths["ConfigMap"])[-1] == "8531"


def test_an_added_object_is_created_and_a_deleted_one_deleted(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    added = with_version(item("ConfigMap"), "8700")
    added["metadata"].update(name="orders-flags", uid="uid-flags")
    apiserver.serve_watch(paths["ConfigMap"], watch_event("ADDED", added))
    apiserver.serve_watch(paths["Secret"],
                          watch_event("DELETED", with_version(item("Secret"), "8701")))

    changes = {change.kind: change for change in refresh(watcher)}

    assert changes["ConfigMap"].action == CREATED and changes["ConfigMap"].name == "orders-flags"
    assert FieldChange("data.TIMEOUT_MS", after="5000") in changes["ConfigMap"].fields
    deleted = changes["Secret"]
    assert (deleted.action, deleted.name, deleted.fields) == (DELETED, "payments-db", ())
    assert deleted.manager is None and deleted.at == NOW


def test_a_status_or_bookkeeping_update_is_no_change(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    autoscaler = with_version(item("HorizontalPodAutoscaler"), "8800")
    autoscaler["status"]["currentReplicas"] = 5
    autoscaler["metadata"]["managedFields"][1]["time"] = "2026-11-26T10:59:00Z"
    leader = with_version(item("ConfigMap", 1), "8801")
    leader["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"] = "renewed"
    apiserver.serve_watch(paths["HorizontalPodAutoscaler"], watch_event("MODIFIED", autoscaler))
    apiserver.serve_watch(paths["ConfigMap"], watch_event("MODIFIED", leader))

    assert refresh(watcher) == ()


def test_a_secret_change_names_the_key_and_never_a_value(apiserver, paths, logs):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    secret = with_version(item("Secret"), "8900")
    secret["data"]["DB_PASSWORD"] = "bmV3LWh1bnRlcjItdmFsdWU="
    secret["data"]["API_TOKEN"] = "dG9rZW4tdmFsdWUtMTIzNDU2"
    secret["metadata"]["managedFields"].append({
        "manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1",
        "time": "2026-11-26T10:58:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:API_TOKEN": {}, "f:DB_PASSWORD": {}}}})
    apiserver.serve_watch(paths["Secret"], watch_event("MODIFIED", secret))

    [change] = refresh(watcher)

    assert change.fields == (FieldChange("data.API_TOKEN", hidden=True),
                             FieldChange("data.DB_PASSWORD", hidden=True))
    assert change.manager == "kubectl-edit"
    text = repr(change) + json.dumps(change_dict(change)) + repr(logs) + \
        json.dumps(watcher.status())
    for value in ("bmV3LWh1bnRlcjItdmFsdWU=", "dG9rZW4tdmFsdWUtMTIzNDU2",
                  "aHVudGVyMi1vcmlnaW5hbA==", "new-hunter2-value", "hunter2-original"):
        assert value not in text


def test_a_statefulset_image_change_is_a_rollout_at_the_new_generation(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    sts = with_version(item("StatefulSet"), "9000")
    sts["metadata"]["generation"] = 2
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/ledger:2.1.0"
    sts["spec"]["replicas"] = 3
    sts["metadata"]["managedFields"].append({
        "manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1",
        "time": "2026-11-26T10:59:30Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"ledger\"}": {"f:image": {}}}}}}}})
    apiserver.serve_watch(paths["StatefulSet"], watch_event("MODIFIED", sts))

    [change] = refresh(watcher)

    assert (change.revision, change.previous_revision) == (2, 1) and change.rollout
    assert FieldChange("image ledger", before="registry.local/ledger:2.0.1",
                       after="registry.local/ledger:2.1.0") in change.fields
    assert FieldChange("spec.replicas", before="2", after="3") in change.fields
    assert change.manager == "kubectl-set"


def test_services_and_their_selectors(apiserver, paths):
    watcher = watcher_for(apiserver)
    assert watcher.services(NAMESPACE) == ()
    refresh(watcher)
    [service] = watcher.services(NAMESPACE)
    assert (service.name, service.selector) == ("payments-api", (("app", "payments-api"),))
    changed = with_version(item("Service"), "9100")
    changed["spec"]["selector"] = {"app": "payments-api", "track": "canary"}
    apiserver.serve_watch(paths["Service"], watch_event("MODIFIED", changed))

    [change] = refresh(watcher)

    assert change.fields == (FieldChange("spec.selector", before="app=payments-api",
                                         after="app=payments-api,track=canary"),)
    assert watcher.services(NAMESPACE)[0].selector == (("app", "payments-api"),
                                                       ("track", "canary"))


# ---------------------------------------------------------------------------------------------
# A 410: the watch's version is gone, the list again, and the net difference.


@pytest.mark.parametrize("how", ["error_event", "http_410"])
def test_an_expired_watch_relists_and_yields_the_net_difference(apiserver, paths, how):
    watcher = watcher_for(apiserver, kinds=("ConfigMap",))
    refresh(watcher)
    path = paths["ConfigMap"]
    if how == "error_event":
        apiserver.serve_watch(path, expired_event("8530"))
    else:
        watch = apiserver.serve_watch(path)
        watch.status = 410
        watch.body = status_body(410, "Expired", "too old resource version: 8530 (9999)")
    # What the server holds now: orders-config changed, the leader ConfigMap gone, a new one.
    listed = apiserver.body(path)
    listed["metadata"]["resourceVersion"] = "9999"
    modified = recorded_watch_object()
    modified.pop("kind"), modified.pop("apiVersion")
    added = copy.deepcopy(modified)
    added["metadata"].update(name="orders-flags", uid="uid-flags", resourceVersion="9990")
    listed["items"] = [modified, added]

    changes = {change.name: change for change in refresh(watcher)}

    assert {name: change.action for name, change in changes.items()} == {
        "orders-config": UPDATED, "orders-flags": CREATED, "ingress-controller-leader": DELETED}
    assert changes["orders-config"].fields == (
        FieldChange("data.TIMEOUT_MS", before="5000", after="50"),)
    assert changes["orders-config"].manager == "kubectl-patch"
    apiserver.serve_watch(path)
    assert refresh(watcher) == ()
    assert apiserver.watch_versions(path)[-1] == "9999"


# ---------------------------------------------------------------------------------------------
# Permissions and failures.


def test_a_forbidden_kind_is_disabled_alone_with_one_warning(apiserver, paths, logs):
    apiserver.edit(paths["Secret"], status=403, body=status_body(
        403, "Forbidden", 'secrets is forbidden: User "system:serviceaccount:demo-aiops:'
        'incident-detector" cannot list resource "secrets" in API group "" in the namespace '
        '"demo-aiops"'))
    watcher = watcher_for(apiserver)

    assert refresh(watcher) == ()
    apiserver.serve_watch(paths["ConfigMap"], watch_event("MODIFIED", recorded_watch_object()))
    [change] = refresh(watcher)
    refresh(watcher)

    assert change.kind == "ConfigMap"
    assert requests_by_path(apiserver)[paths["Secret"]] == ["list"]  # never asked again
    for kind, path in paths.items():
        if kind != "Secret":
            assert requests_by_path(apiserver)[path] == ["list", "watch", "watch"], kind
    [warning] = [e for e in logs if e["event"] == "changes.kind_disabled"]
    assert warning["log_level"] == "warning"
    assert (warning["kind"], warning["namespace"], warning["status"]) == (
        "Secret", NAMESPACE, 403)
    assert "CHANGE_KINDS" in warning["reason"]
    assert set(watcher.disabled) == {f"{NAMESPACE}/Secret"}
    assert watcher.status()["disabled"] == dict(watcher.disabled)
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


def test_a_forbidden_kind_in_one_namespace_is_still_watched_in_another(apiserver, paths):
    other = "payments-staging"
    apiserver.edit(paths["Secret"], status=403,
                   body=status_body(403, "Forbidden", "secrets is forbidden"))
    other_path = paths["Secret"].replace(NAMESPACE, other)
    apiserver.serve(other_path, Response(body={"kind": "SecretList", "apiVersion": "v1",
                                               "metadata": {"resourceVersion": "5"},
                                               "items": []}))
    watcher = watcher_for(apiserver, kinds=("Secret",))
    refresh(watcher)
    refresh(watcher, other)
    refresh(watcher, other)
    assert requests_by_path(apiserver)[other_path] == ["list", "watch"]
    assert set(watcher.disabled) == {f"{NAMESPACE}/Secret"}


def test_an_api_group_not_served_disables_the_kind_everywhere(apiserver, paths, logs):
    # No autoscaling/v2 (a server older than 1.23): the path is the server's own 404.
    del apiserver.routes[("GET", paths["HorizontalPodAutoscaler"])]
    apiserver.serve(paths["ConfigMap"].replace(NAMESPACE, "another-namespace"), Response(body={
        "kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"},
        "items": []}))
    watcher = watcher_for(apiserver, kinds=("HorizontalPodAutoscaler", "ConfigMap"))

    refresh(watcher)
    refresh(watcher, "another-namespace")

    assert set(watcher.disabled) == {"*/HorizontalPodAutoscaler"}
    assert "autoscaling/v2" in watcher.disabled["*/HorizontalPodAutoscaler"]
    hpa_requests = [r for r in apiserver.requests if "horizontalpodautoscalers" in r.path]
    assert len(hpa_requests) == 1
    assert len([e for e in logs if e["event"] == "changes.kind_disabled"]) == 1


def test_another_failure_raises_and_the_other_kinds_changes_come_next_time(apiserver, paths):
    watcher = watcher_for(apiserver, kinds=("ConfigMap", "Service"))
    refresh(watcher)
    apiserver.serve_watch(paths["ConfigMap"], watch_event("MODIFIED", recorded_watch_object()))
    failing = apiserver.serve_watch(paths["Service"])
    failing.status = 500
    failing.body = status_body(500, "InternalError", "etcdserver: request timed out")

    with pytest.raises(SourceError) as caught:
        refresh(watcher)

    assert caught.value.status == 500 and caught.value.retryable
    assert watcher.disabled == {}
    apiserver.serve_watch(paths["ConfigMap"])
    apiserver.serve_watch(paths["Service"])
    [change] = refresh(watcher)
    assert change.name == "orders-config"
    assert refresh(watcher) == ()


def test_unauthorized_is_raised_not_disabled(apiserver, paths):
    apiserver.edit(paths["ConfigMap"], status=401, body=status_body(401, "Unauthorized",
                                                                    "Unauthorized"))
    watcher = watcher_for(apiserver, kinds=("ConfigMap",))
    with pytest.raises(SourceError) as caught:
        refresh(watcher)
    assert caught.value.status == 401 and not caught.value.retryable
    assert watcher.disabled == {}


_COLLECTION = re.compile(r"^/apis?/(?:(?P<group>[a-z0-9.-]+)/)?v[0-9a-z]+/namespaces/[^/]+/"
                         r"(?P<resource>[a-z]+)$")


def test_change_permissions_are_exactly_the_requests_made(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    refresh(watcher)
    seen = set()
    for request in apiserver.requests:
        match = _COLLECTION.match(request.path)
        assert match, request.path
        group = "" if request.path.startswith("/api/") else match["group"]
        seen.add((group, match["resource"], "watch" if is_watch(request) else "list"))
    assert seen == set(CHANGE_PERMISSIONS)
    assert len(CHANGE_PERMISSIONS) == len(set(CHANGE_PERMISSIONS)) == 2 * len(CHANGE_CALLS)
    assert set(CHANGE_CALLS) == set(WATCHED_KINDS)


def test_status_counts_the_objects_kept(apiserver, paths):
    watcher = watcher_for(apiserver, kinds=("ConfigMap", "Service"))
    refresh(watcher)
    status = watcher.status()
    assert status["kinds"] == ["ConfigMap", "Service"]
    assert status["objects"] == {f"{NAMESPACE}/ConfigMap": 2, f"{NAMESPACE}/Service": 1}
    assert status["disabled"] == {}


def test_the_kinds_are_refreshed_concurrently(apiserver, paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    # No watch is answered before all of them were sent: one after the other, the first would
    # time out (the watcher's timeout, 5 s) and the refresh fail.
    apiserver.hold_watches(len(paths))
    assert refresh(watcher) == ()
    assert len(requests_by_path(apiserver)) == len(paths)


def test_ingress_backends_and_network_policy_peers_are_kept_for_the_service_map(apiserver,
                                                                                 paths):
    watcher = watcher_for(apiserver)
    assert watcher.states("Ingress", NAMESPACE) == ()
    refresh(watcher)
    [ingress] = watcher.states("Ingress", NAMESPACE)
    assert ingress.backends == (("shop.example.com/api", "payments-api"),)
    [policy] = watcher.states("NetworkPolicy", NAMESPACE)
    assert policy.selector == (("app", "payments-api"),)
    assert policy.peers == (("ingress", (("app", "frontend"),)),)
    assert [s.name for s in watcher.states("ConfigMap", NAMESPACE)] == \
        sorted(s.name for s in watcher.states("ConfigMap", NAMESPACE))



def test_statefulsets_and_daemonsets_keep_their_pod_labels_for_the_service_map(apiserver,
                                                                              paths):
    watcher = watcher_for(apiserver)
    refresh(watcher)
    [ledger] = watcher.states("StatefulSet", NAMESPACE)
    assert ledger.name == "ledger" and ledger.pod_labels == (("app", "ledger"),)
    [agent] = watcher.states("DaemonSet", NAMESPACE)
    assert agent.pod_labels == (("app", "node-agent"),)
