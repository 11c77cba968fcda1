"""What changed in one object: plain asserts over small objects in the API's shapes, and
properties over arbitrary ones (a Secret's values never come out, whatever they are)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apiserver import CHANGE_LIST_RECORDINGS, recorded_items
from incident_detector.judge.change_diff import (
    MAX_FIELDS,
    ObjectState,
    Writer,
    deployment_change,
    diff,
    template_field_changes,
    writer_of,
)
from incident_detector.model import (
    CREATED,
    DELETED,
    UPDATED,
    Container,
    Deployment,
    EnvVar,
    FieldChange,
    PodTemplate,
    ReplicaSet,
    RolloutStatus,
    TemplateChange,
)
from incident_detector.store.changes import change_dict, change_summary
from incident_detector.sources.changes_watch import CHANGE_CALLS, digest, object_state

KEY = b"k" * 32
NOW = datetime(2026, 11, 26, 11, 0, 0, tzinfo=timezone.utc)
T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry(manager: str, at: datetime, fields: dict[str, Any], *, operation: str = "Update",
          subresource: str | None = None) -> dict[str, Any]:
    out = {"manager": manager, "operation": operation, "apiVersion": "v1", "time": stamp(at),
           "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        out["subresource"] = subresource
    return out


def config_map(data: dict[str, str] | None = None, *, version: str = "1",
               managed: list[dict[str, Any]] | None = None, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "orders-config", "namespace": "demo", "uid": "u1",
                         "resourceVersion": version, "creationTimestamp": stamp(T0),
                         "managedFields": managed or [], **metadata},
            "data": dict(data or {})}


def state(kind: str, item: dict[str, Any]) -> ObjectState:
    parsed = object_state(kind, item, key=KEY)
    assert parsed is not None
    return parsed


def change_of(kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None):
    return diff(state(kind, before) if before else None, state(kind, after) if after else None,
                now=NOW)


def built(kind: str) -> dict[str, Any]:
    return recorded_items(CHANGE_LIST_RECORDINGS[kind])[0]


# ---------------------------------------------------------------------------------------------
# ConfigMaps.


def test_configmap_value_change_shows_both_values():
    change = change_of("ConfigMap", config_map({"TIMEOUT_MS": "5000"}),
                       config_map({"TIMEOUT_MS": "50"}, version="2"))
    assert change.action == UPDATED
    assert change.fields == (FieldChange("data.TIMEOUT_MS", "5000", "50"),)
    assert change.resource_version == "2" and change.uid == "u1"


def test_configmap_keys_added_and_removed():
    change = change_of("ConfigMap", config_map({"A": "1", "B": "2"}),
                       config_map({"B": "2", "C": "3"}))
    assert change.fields == (FieldChange("data.C", None, "3"), FieldChange("data.A", "1", None))


def test_configmap_empty_value_is_shown_as_empty_quotes():
    change = change_of("ConfigMap", config_map({"A": "1"}), config_map({"A": ""}))
    assert change.fields == (FieldChange("data.A", "1", '""'),)


def test_configmap_secret_looking_values_and_names_are_hidden():
    change = change_of("ConfigMap",
                       config_map({"DB_PASSWORD": "x", "URL": "postgres://u:p@db/x",
                                   "BLOB": "QUJDREVGR0hJSktMTU5PUFFSU1RVVg=="}),
                       config_map({"DB_PASSWORD": "y", "URL": "postgres://u:q@db/x",
                                   "BLOB": "WllYV1ZVVFNSUVBPTk1MS0pJSEdGRURD"}))
    assert change.fields == (FieldChange("data.BLOB", hidden=True),
                             FieldChange("data.DB_PASSWORD", hidden=True),
                             FieldChange("data.URL", hidden=True))
    text = json.dumps(change_dict(change))
    assert "postgres" not in text and "WllY" not in text


def test_configmap_long_or_multiline_value_is_shown_by_its_size():
    before, after = "a: 1\nb: 2\n", "a: 1\nb: 3\n"
    change = change_of("ConfigMap", config_map({"app.yaml": before}),
                       config_map({"app.yaml": after}))
    assert change.fields == (FieldChange("data.app.yaml", "<10 chars>", "<10 chars> (changed)"),)
    long = change_of("ConfigMap", config_map({"X": "v" * 61}), config_map({"X": "v" * 70}))
    assert long.fields == (FieldChange("data.X", "<61 chars>", "<70 chars>"),)


def test_configmap_binary_data_is_shown_by_size():
    before, after = config_map(), config_map()
    before["binaryData"], after["binaryData"] = {"logo.png": "AAAA"}, {"logo.png": "AAAABBBB"}
    change = change_of("ConfigMap", before, after)
    assert change.fields == (FieldChange("binaryData.logo.png", "<3 bytes>", "<6 bytes>"),)


def test_nothing_that_matters_changed_gives_none():
    before = config_map({"A": "1"}, annotations={
        "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"A":"1"}}',
        "control-plane.alpha.kubernetes.io/leader": '{"holderIdentity":"a"}'})
    after = config_map({"A": "1"}, version="99", annotations={
        "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"A":"2"}}',
        "control-plane.alpha.kubernetes.io/leader": '{"holderIdentity":"b"}'},
        managed=[entry("kubectl", NOW, {"f:data": {"f:A": {}}})])
    after["status"] = {"anything": True}
    assert change_of("ConfigMap", before, after) is None
    assert diff(None, None, now=NOW) is None


def test_labels_and_other_annotations_are_changes():
    change = change_of("ConfigMap", config_map(labels={"team": "a"}),
                       config_map(labels={"team": "b"}, annotations={"owner": "payments"}))
    assert change.fields == (FieldChange("metadata.labels", "team=a", "team=b"),
                             FieldChange("metadata.annotations.owner", None, "payments"))


def test_created_lists_the_fields_and_deleted_none():
    created = change_of("ConfigMap", None, config_map({"A": "1"}))
    assert (created.action, created.fields) == (CREATED, (FieldChange("data.A", None, "1"),))
    assert created.size == 1
    deleted = change_of("ConfigMap", config_map({"A": "1"}), None)
    assert (deleted.action, deleted.fields, deleted.at, deleted.manager) == (DELETED, (), NOW,
                                                                             None)


def test_an_object_created_again_under_the_same_name_is_created():
    again = config_map({"A": "1"})
    again["metadata"]["uid"] = "u2"
    change = change_of("ConfigMap", config_map({"A": "1"}), again)
    assert change.action == CREATED and change.uid == "u2"


def test_fields_are_bounded_with_a_last_line_saying_how_many_more():
    keys = {f"K{i:02d}": str(i) for i in range(30)}
    change = change_of("ConfigMap", config_map(), config_map(keys))
    assert len(change.fields) == MAX_FIELDS
    assert change.fields[-1] == FieldChange("(11 more fields)")
    assert change.fields[0] == FieldChange("data.K00", None, "0")


# ---------------------------------------------------------------------------------------------
# Who and when.


def test_the_writer_is_the_newest_entry_owning_a_changed_field():
    managed = [entry("kubectl-create", T0, {"f:data": {"f:A": {}, "f:B": {}}}),
               entry("kubectl-patch", T0 + timedelta(minutes=5), {"f:data": {"f:A": {}}}),
               entry("helm", T0 + timedelta(minutes=9), {"f:metadata": {"f:labels": {}}},
                     operation="Apply"),
               entry("kube-controller-manager", T0 + timedelta(minutes=10),
                     {"f:status": {}}, subresource="status")]
    change = change_of("ConfigMap", config_map({"A": "1"}),
                       config_map({"A": "2"}, managed=managed))
    assert (change.manager, change.operation) == ("kubectl-patch", "Update")
    assert change.at == T0 + timedelta(minutes=5) and change.observed_at == NOW


def test_without_an_owning_entry_the_newest_non_status_one_wrote_it():
    managed = [entry("kubectl-create", T0, {"f:data": {"f:A": {}}}),
               entry("argocd-controller", T0 + timedelta(minutes=3), {"f:data": {"f:A": {}}},
                     operation="Apply"),
               entry("x", T0 + timedelta(minutes=9), {"f:status": {}}, subresource="status")]
    # B was removed: nobody owns it any more.
    change = change_of("ConfigMap", config_map({"A": "1", "B": "2"}),
                       config_map({"A": "1"}, managed=managed))
    assert (change.manager, change.operation) == ("argocd-controller", "Apply")


def test_without_managed_fields_the_change_is_dated_when_seen():
    change = change_of("ConfigMap", config_map({"A": "1"}), config_map({"A": "2"}))
    assert (change.manager, change.operation, change.at) == (None, None, NOW)


def test_writer_of_prefers_dated_entries_and_the_later_of_equal_times():
    a = Writer("a", at=T0, fields=frozenset({"data.A"}))
    b = Writer("b", at=T0, fields=frozenset({"data.A"}))
    undated = Writer("c", fields=frozenset({"data.A"}))
    assert writer_of([a, b, undated], ["data.A"]) is b
    assert writer_of([undated], ["data.A"]) is undated
    assert writer_of([Writer("s", at=T0, subresource="status")], ["data.A"]) is None
    assert writer_of([], ["data.A"]) is None
    # "spec.template" owns the container fields below it, "spec" owns everything in it.
    assert Writer("w", fields=frozenset({"spec.template"})).owns("spec.template")
    assert Writer("w", fields=frozenset({"spec.rules"})).owns("spec.rules[a.example/]")
    assert Writer("w", fields=frozenset({"spec"})).owns("spec.replicas")
    assert not Writer("w", fields=frozenset({"spec.replicas"})).owns("spec.replicasX")


# ---------------------------------------------------------------------------------------------
# Secrets: keys only.


def secret(data: dict[str, str], **extra: Any) -> dict[str, Any]:
    item = copy.deepcopy(built("Secret"))
    item["data"] = data
    item.update(extra)
    return item


def test_secret_changes_name_the_keys_and_hide_everything_else():
    change = change_of("Secret", secret({"A": "b2xk", "B": "c2FtZQ==", "GONE": "eA=="}),
                       secret({"A": "bmV3", "B": "c2FtZQ==", "NEW": "eQ=="}))
    assert change.fields == (FieldChange("data.A", hidden=True),
                             FieldChange("data.NEW", hidden=True),
                             FieldChange("data.GONE", hidden=True))
    assert all(f.before is None and f.after is None for f in change.fields)


def test_secret_annotations_are_hidden_too():
    before, after = secret({}), secret({})
    after["metadata"]["annotations"] = {"note": "rotated"}
    change = change_of("Secret", before, after)
    assert change.fields == (FieldChange("metadata.annotations.note", hidden=True),)


def test_secret_digests_are_keyed():
    # The same value under two keys gives two digests, and neither is its plain hash.
    import hashlib
    assert digest(b"1" * 32, "hunter2") != digest(b"2" * 32, "hunter2")
    assert digest(KEY, "hunter2") == digest(KEY, "hunter2")
    assert digest(KEY, "hunter2") not in hashlib.sha256(b"hunter2").digest()
    parsed = state("Secret", secret({"P": "aHVudGVyMg=="}))
    assert "aHVudGVyMg" not in repr(parsed)


SECRET_VALUES = st.text(min_size=6, max_size=40).filter(lambda v: v.strip() == v and v)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.dictionaries(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True), SECRET_VALUES,
                              max_size=5),
       after=st.dictionaries(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True), SECRET_VALUES,
                             max_size=5))
def test_no_secret_value_ever_appears_in_a_change(before, after):
    values = set(before.values()) | set(after.values())
    change = change_of("Secret", secret(before), secret(after))
    # The same change with every value replaced: what the output holds whatever the values.
    shape = change_of("Secret", secret({k: "p" for k in before}),
                      secret({k: "q" if after[k] != before.get(k) else "p" for k in after}))
    text = repr(change) + (json.dumps(change_dict(change)) + change_summary(change)
                           if change else "")
    shape_text = repr(shape) + (json.dumps(change_dict(shape)) + change_summary(shape)
                                if shape else "")
    for value in values:
        assume(value not in shape_text)
        assert value not in text
    if change is not None:
        assert all(f.hidden and f.before is None and f.after is None for f in change.fields)
        assert {f.path for f in change.fields} == {
            f"data.{k}" for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


# ---------------------------------------------------------------------------------------------
# Workloads.


def statefulset(**changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(built("StatefulSet"))
    for path, value in changes.items():
        target = item
        *parents, last = path.split("__")
        for parent in parents:
            target = target[int(parent)] if parent.isdigit() else target[parent]
        target[last] = value
    return item


def test_statefulset_image_change_is_a_rollout_with_generations():
    after = statefulset(spec__template__spec__containers__0__image="registry.local/ledger:2.1")
    after["metadata"]["generation"] = 2
    change = change_of("StatefulSet", statefulset(), after)
    assert change.fields == (FieldChange("image ledger", "registry.local/ledger:2.0.1",
                                         "registry.local/ledger:2.1"),)
    assert (change.revision, change.previous_revision) == (2, 1)


def test_statefulset_scale_and_strategy_are_not_rollouts():
    after = statefulset(spec__replicas=4,
                        spec__updateStrategy={"type": "OnDelete"})
    change = change_of("StatefulSet", statefulset(), after)
    assert change.fields[0] == FieldChange("spec.replicas", "2", "4")
    assert change.fields[1].path == "spec.updateStrategy"
    assert '"OnDelete"' in change.fields[1].after
    assert change.revision is None and not change.rollout


def test_a_template_change_the_summary_does_not_see_is_still_a_rollout():
    after = statefulset()
    after["spec"]["template"]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/restartedAt": "2026-11-26T10:59:00Z"}
    after["metadata"]["generation"] = 2
    change = change_of("StatefulSet", statefulset(), after)
    assert change.fields == (FieldChange("spec.template"),)
    assert change.revision == 2


def test_daemonset_env_and_resources():
    before = copy.deepcopy(built("DaemonSet"))
    after = copy.deepcopy(before)
    container = after["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "LOG_LEVEL", "value": "debug"},
                        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
                            "name": "agent", "key": "token"}}}]
    container["resources"]["limits"]["memory"] = "512Mi"
    after["metadata"]["generation"] = 2
    change = change_of("DaemonSet", before, after)
    assert change.fields == (
        FieldChange("env agent LOG_LEVEL", "info", "debug"),
        FieldChange("env agent API_TOKEN", None, "from secret agent"),
        FieldChange("resources agent limits.memory", "256Mi", "512Mi"),
        FieldChange("secret", None, "agent"),
    )
    assert change.rollout


def test_template_change_lines_become_fields():
    lines = [TemplateChange("container", "side", "added (image envoy:1.30)"),
             TemplateChange("container", "old", "removed (image busybox)"),
             TemplateChange("args", "api", "--port=8080 -> --port=9090"),
             TemplateChange("args", "api", "--token=*** (changed; the difference is not shown)"),
             TemplateChange("env", "api", "added FEATURE_X=on"),
             TemplateChange("env", "api", "added PASSWORD (value hidden)"),
             TemplateChange("env", "api", "removed OLD"),
             TemplateChange("env", "api", "SECRET_KEY changed (value hidden)"),
             TemplateChange("resources", "api", "limits.cpu added: 500m"),
             TemplateChange("resources", "api", "requests.cpu removed (was 100m)"),
             TemplateChange("probe", "api", "readiness probe changed (periodSeconds)"),
             TemplateChange("configmap", "", "removed orders-config"),
             TemplateChange("more", "", "... and 4 more changes")]
    assert template_field_changes(lines) == (
        FieldChange("container side", None, "image envoy:1.30"),
        FieldChange("container old", "image busybox", None),
        FieldChange("args api", "--port=8080", "--port=9090"),
        FieldChange("args api", hidden=True),
        FieldChange("env api FEATURE_X", None, "on"),
        FieldChange("env api PASSWORD", hidden=True),
        FieldChange("env api OLD", "(set)", None),
        FieldChange("env api SECRET_KEY", hidden=True),
        FieldChange("resources api limits.cpu", None, "500m"),
        FieldChange("resources api requests.cpu", "100m", None),
        FieldChange("probe api", None, "readiness probe changed (periodSeconds)"),
        FieldChange("configmap", "orders-config", None),
        FieldChange("(4 more template changes)"),
    )


# ---------------------------------------------------------------------------------------------
# Services, autoscalers, Ingresses, NetworkPolicies.


def test_service_type_ports_and_selector():
    before = built("Service")
    after = copy.deepcopy(before)
    after["spec"]["type"] = "NodePort"
    after["spec"]["ports"][0].update(targetPort=9090, nodePort=30080)
    after["spec"]["selector"] = {"app": "payments-api-v2"}
    change = change_of("Service", before, after)
    assert change.fields == (
        FieldChange("spec.type", "ClusterIP", "NodePort"),
        FieldChange("spec.ports", "http 80/TCP->8080", "http 80/TCP->9090 node 30080"),
        FieldChange("spec.selector", "app=payments-api", "app=payments-api-v2"),
    )
    assert state("Service", after).selector == (("app", "payments-api-v2"),)
    # The cluster IP the API server fills in, and the status, are not the Service's changes.
    assigned = copy.deepcopy(before)
    assigned["spec"]["clusterIP"] = "10.96.0.99"
    assigned["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    assert change_of("Service", before, assigned) is None


def test_autoscaler_bounds_and_metric_targets():
    before = built("HorizontalPodAutoscaler")
    after = copy.deepcopy(before)
    after["spec"].update(minReplicas=1, maxReplicas=20)
    after["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = 90
    after["spec"]["metrics"].append({"type": "Pods", "pods": {
        "metric": {"name": "requests_per_second"},
        "target": {"type": "AverageValue", "averageValue": "100"}}})
    change = change_of("HorizontalPodAutoscaler", before, after)
    assert change.fields == (
        FieldChange("spec.minReplicas", "2", "1"),
        FieldChange("spec.maxReplicas", "10", "20"),
        FieldChange("spec.metrics[Resource cpu]", "Utilization 70", "Utilization 90"),
        FieldChange("spec.metrics[Pods requests_per_second]", None, "AverageValue 100"),
    )


def test_ingress_rules_tls_and_class():
    before = built("Ingress")
    after = copy.deepcopy(before)
    after["spec"]["ingressClassName"] = "traefik"
    after["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "payments-v2"
    after["spec"]["rules"].append({"host": "admin.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "admin", "port": {"name": "http"}}}}]}})
    after["spec"]["tls"][0]["hosts"].append("admin.example.com")
    change = change_of("Ingress", before, after)
    assert change.fields == (
        FieldChange("spec.ingressClassName", "nginx", "traefik"),
        FieldChange("spec.rules[shop.example.com/api]", "payments-api:80", "payments-v2:80"),
        FieldChange("spec.rules[admin.example.com/]", None, "admin:http"),
        FieldChange("spec.tls", "shop.example.com", "admin.example.com,shop.example.com"),
    )


def test_network_policy_rule_counts_and_rules_changed():
    before = built("NetworkPolicy")
    same_count = copy.deepcopy(before)
    same_count["spec"]["ingress"][0]["ports"][0]["port"] = 9090
    assert change_of("NetworkPolicy", before, same_count).fields == (
        FieldChange("spec.ingress", "1 rule", "1 rule (changed)"),)
    wider = copy.deepcopy(before)
    wider["spec"]["ingress"].append({})
    wider["spec"]["policyTypes"] = ["Ingress", "Egress"]
    wider["spec"]["egress"] = []
    wider["spec"]["podSelector"] = {}
    change = change_of("NetworkPolicy", before, wider)
    assert change.fields == (
        FieldChange("spec.podSelector", '{"matchLabels":{"app":"payments-api"}}', "{}"),
        FieldChange("spec.policyTypes", "Ingress", "Ingress,Egress"),
        FieldChange("spec.ingress", "1 rule", "2 rules"),
        FieldChange("spec.egress", None, "0 rules"),
    )


# ---------------------------------------------------------------------------------------------
# Deployments, from the kube source's own objects.

WRITTEN = T0 + timedelta(minutes=30)


def deployment(**changes: Any) -> Deployment:
    fields = dict(namespace="demo", name="payments-api", revision=2, replicas=2, uid="d1",
                  resource_version="10", rollout=RolloutStatus(generation=2),
                  spec_manager="kubectl-set", spec_operation="Update",
                  spec_written_at=WRITTEN)
    fields.update(changes)
    return Deployment(**fields)


def replicaset(revision: int, image: str, *, deployment_uid: str = "d1") -> ReplicaSet:
    return ReplicaSet(namespace="demo", name=f"payments-api-{revision}", deployment="payments-api",
                      deployment_uid=deployment_uid, revision=revision, created_at=T0,
                      template=PodTemplate(containers=(Container("api", image, env=(
                          EnvVar("MODE", "a" if revision == 1 else "b"),)),)))


REPLICASETS = [replicaset(1, "api:1.4"), replicaset(2, "api:1.5")]


def test_a_deployment_rollout_says_what_its_template_changed():
    change = deployment_change(deployment(revision=1, rollout=RolloutStatus(generation=1)),
                               deployment(resource_version="11"), replicasets=REPLICASETS,
                               now=NOW)
    assert (change.kind, change.action, change.revision, change.previous_revision) == (
        "Deployment", UPDATED, 2, 1)
    assert change.fields == (FieldChange("image api", "api:1.4", "api:1.5"),
                             FieldChange("env api MODE", "a", "b"))
    assert (change.manager, change.operation, change.at) == ("kubectl-set", "Update", WRITTEN)
    assert change.resource_version == "11" and change.rollout


def test_a_rollout_whose_replicasets_are_unknown_says_the_template_changed():
    change = deployment_change(deployment(revision=1), deployment(revision=2),
                               replicasets=[replicaset(2, "x", deployment_uid="other")],
                               now=NOW)
    assert change.fields == (FieldChange("spec.template"),)
    assert change.revision == 2


def test_a_deployment_scale_pause_and_other_spec_change():
    scaled = deployment_change(deployment(), deployment(replicas=5, spec_manager="kubectl",
                                                        spec_written_at=None),
                               replicasets=REPLICASETS, now=NOW)
    assert scaled.fields == (FieldChange("spec.replicas", "2", "5"),)
    assert (scaled.revision, scaled.manager, scaled.at) == (None, "kubectl", NOW)
    paused = deployment_change(deployment(), deployment(paused=True), replicasets=(), now=NOW)
    assert paused.fields == (FieldChange("spec.paused", "false", "true"),)
    strategy = deployment_change(deployment(), deployment(rollout=RolloutStatus(generation=3)),
                                 replicasets=(), now=NOW)
    assert strategy.fields == (FieldChange("spec"),)


def test_a_deployment_status_update_is_no_change():
    moved = deployment(rollout=RolloutStatus(generation=2, observed_generation=2,
                                             ready_replicas=2), resource_version="12")
    assert deployment_change(deployment(), moved, replicasets=REPLICASETS, now=NOW) is None
    assert deployment_change(None, None, replicasets=(), now=NOW) is None


def test_a_deployment_created_and_deleted():
    created = deployment_change(None, deployment(), replicasets=REPLICASETS, now=NOW)
    assert created.action == CREATED and created.revision == 2
    assert FieldChange("container api", None, "image api:1.5") in created.fields
    deleted = deployment_change(deployment(), None, replicasets=REPLICASETS, now=NOW)
    assert (deleted.action, deleted.at, deleted.fields) == (DELETED, NOW, ())
    again = deployment_change(deployment(), deployment(uid="d2", revision=1),
                              replicasets=(), now=NOW)
    assert again.action == CREATED and again.uid == "d2"


# ---------------------------------------------------------------------------------------------
# Whatever the API sends.

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(CHANGE_CALLS)), spec=JSON, data=JSON, extra=JSON)
def test_snapshots_and_diffs_never_raise_on_arbitrary_json(kind, spec, data, extra):
    item = {"metadata": {"name": "x", "namespace": "demo", "managedFields": extra,
                         "labels": extra, "annotations": data, "generation": extra},
            "spec": spec, "data": data, "binaryData": extra}
    snapshot = object_state(kind, item, key=KEY)
    assert snapshot is not None
    baseline = object_state(kind, {"metadata": {"name": "x", "namespace": "demo"}}, key=KEY)
    for old, new in ((baseline, snapshot), (snapshot, baseline), (None, snapshot),
                     (snapshot, None)):
        change = diff(old, new, now=NOW)
        if change is not None:
            assert len(change.fields) <= MAX_FIELDS
            json.dumps(change_dict(change))
    assert object_state(kind, {"metadata": {"name": "x"}}, key=KEY) is None
