"""map_alert: which watched Deployment an alert's labels name, or why none."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from incident_detector.config import load_settings
from incident_detector.judge.alert_map import AlertLabels, Unmapped, map_alert
from incident_detector.model import Alert, AlertTarget, Deployment, ReplicaSet
from incident_detector.sources.alerts import parse_webhook

NS = "demo-aiops"
T0 = datetime(2026, 11, 3, 17, 54, 4, tzinfo=timezone.utc)
FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"


def deployment(name: str, namespace: str = NS, **pod_labels: str) -> Deployment:
    return Deployment(namespace=namespace, name=name, revision=2,
                      pod_labels=tuple(sorted(pod_labels.items())))


def replicaset(name: str, owner: str | None, namespace: str = NS) -> ReplicaSet:
    return ReplicaSet(namespace=namespace, name=name, deployment=owner, revision=2,
                      created_at=T0)


DEPLOYMENTS = (
    deployment("payments-api", **{"app.kubernetes.io/name": "payments", "app": "payments-api"}),
    deployment("checkout-v2", app="checkout"),
    deployment("ledger"),
    deployment("web", app="frontend"),
    deployment("web-canary", app="frontend"),
    deployment("payments-api", namespace="other"),
    deployment("search", namespace="other", app="search"),
)
REPLICASETS = (
    replicaset("payments-api-6874dc9bf7", "payments-api"),
    replicaset("payments-api-5f9c7d8b4", "payments-api"),
    replicaset("checkout-v2-7b9f5c6d8", "checkout-v2"),
    replicaset("web-5d4f8", "web"),
    replicaset("web-5d4f8-extra-7c9", None),  # no owner: never a target
    replicaset("orphan-6d5f7", None),
    replicaset("cron-runner-5b7", "cron-runner"),  # owned by a Deployment not watched
    replicaset("search-8c7d6", "search", namespace="other"),
)
WATCHED = (NS, "other")
DEFAULT = AlertLabels()


def alert(**labels: str) -> Alert:
    return Alert(fingerprint="f", status="firing", starts_at=T0,
                 labels=tuple(sorted(labels.items())))


def where(labels: AlertLabels = DEFAULT, deployments=DEPLOYMENTS, **alert_labels: str):
    return map_alert(alert(**alert_labels), labels=labels, watched_namespaces=WATCHED,
                     deployments=deployments, replicasets=REPLICASETS)


def target(deployment: str, mapped_by: str, namespace: str = NS) -> AlertTarget:
    return AlertTarget(namespace=namespace, deployment=deployment, mapped_by=mapped_by)


def test_deployment_label():
    assert where(namespace=NS, deployment="payments-api") == target("payments-api", "deployment")
    assert where(namespace=NS, deployment="ledger") == target("ledger", "deployment")
    assert where(namespace="other", deployment="payments-api") == \
        target("payments-api", "deployment", "other")
    # The namespace label decides which namespace's Deployment.
    assert where(namespace="other", deployment="ledger") == Unmapped(
        "deployment 'ledger' (deployment) is not a watched Deployment in other", "other")
    assert where(namespace=NS, deployment="gone") == Unmapped(
        "deployment 'gone' (deployment) is not a watched Deployment in demo-aiops", NS)


def test_pod_label_through_the_replicaset():
    assert where(namespace=NS, pod="payments-api-6874dc9bf7-x2k9p") == \
        target("payments-api", "pod")
    assert where(namespace=NS, pod="payments-api-5f9c7d8b4-q8w4z") == \
        target("payments-api", "pod")
    assert where(namespace=NS, pod="checkout-v2-7b9f5c6d8-abcde") == target("checkout-v2", "pod")
    assert where(namespace=NS, pod="web-5d4f8-zz9kq") == target("web", "pod")
    assert where(namespace="other", pod="search-8c7d6-k2j4h") == \
        target("search", "pod", "other")


def test_pod_label_that_maps_to_nothing():
    # Named like a Deployment, but no ReplicaSet seen owns it: not enough.
    assert where(namespace=NS, pod="ledger-x2k9p") == Unmapped(
        "pod 'ledger-x2k9p' (pod) belongs to no ReplicaSet of a Deployment seen in demo-aiops",
        NS)
    assert where(namespace=NS, pod="payments-api") == Unmapped(
        "pod 'payments-api' (pod) belongs to no ReplicaSet of a Deployment seen in demo-aiops",
        NS)
    # A ReplicaSet without a Deployment (made by hand, or a Job's pods).
    assert where(namespace=NS, pod="orphan-6d5f7-abcde") == Unmapped(
        "pod 'orphan-6d5f7-abcde' (pod) belongs to no ReplicaSet of a Deployment seen in "
        "demo-aiops", NS)
    # The ReplicaSet's Deployment is not among the watched ones.
    assert where(namespace=NS, pod="cron-runner-5b7-kq2mx") == Unmapped(
        "pod 'cron-runner-5b7-kq2mx' (pod) belongs to Deployment 'cron-runner', which is not "
        "watched", NS)
    # A StatefulSet's pod.
    assert where(namespace=NS, pod="postgres-0") == Unmapped(
        "pod 'postgres-0' (pod) belongs to no ReplicaSet of a Deployment seen in demo-aiops", NS)
    # The ReplicaSet of the same name in another namespace does not count.
    assert isinstance(where(namespace="other", pod="payments-api-6874dc9bf7-x2k9p"), Unmapped)


def test_the_longest_replicaset_name_owns_the_pod():
    replicasets = (replicaset("web-5d4f8", "web"), replicaset("web-5d4f8-x", "web-canary"))
    found = map_alert(alert(namespace=NS, pod="web-5d4f8-x-abcde"), labels=DEFAULT,
                      watched_namespaces=WATCHED, deployments=DEPLOYMENTS,
                      replicasets=replicasets)
    assert found == target("web-canary", "pod")


def test_a_deployment_or_pod_label_is_never_overruled_by_workload_labels():
    # kube-state-metrics' alerts carry service="kube-state-metrics": never the workload.
    assert where(namespace=NS, deployment="gone", service="payments-api") == Unmapped(
        "deployment 'gone' (deployment) is not a watched Deployment in demo-aiops", NS)
    assert where(namespace=NS, pod="postgres-0", app="ledger") == Unmapped(
        "pod 'postgres-0' (pod) belongs to no ReplicaSet of a Deployment seen in demo-aiops", NS)
    # ...but a pod label may succeed where the deployment label failed.
    assert where(namespace=NS, deployment="gone", pod="ledger-x", service="ledger") == Unmapped(
        "deployment 'gone' (deployment) is not a watched Deployment in demo-aiops; "
        "pod 'ledger-x' (pod) belongs to no ReplicaSet of a Deployment seen in demo-aiops", NS)
    assert where(namespace=NS, deployment="gone", pod="web-5d4f8-zz9kq") == target("web", "pod")
    # The deployment label comes first.
    assert where(namespace=NS, deployment="ledger", pod="web-5d4f8-zz9kq") == \
        target("ledger", "deployment")


def test_workload_labels():
    # By pod template label app.kubernetes.io/name, by app, by name.
    assert where(namespace=NS, service="payments") == target("payments-api", "service")
    assert where(namespace=NS, app="payments-api") == target("payments-api", "app")
    assert where(namespace=NS, app="checkout") == target("checkout-v2", "app")
    assert where(namespace=NS, app_kubernetes_io_name="ledger") == \
        target("ledger", "app_kubernetes_io_name")
    assert where(namespace=NS, service="checkout-v2") == target("checkout-v2", "service")
    # Each label in order; one that matches nothing lets the next one decide.
    assert where(namespace=NS, service="payments-api-svc", app="ledger") == target("ledger", "app")
    assert where(namespace=NS, service="ledger", app="checkout") == target("ledger", "service")
    assert where(namespace=NS, service="nothing", app="nothing-either") == Unmapped(
        "no watched Deployment in demo-aiops matches service='nothing', app='nothing-either'", NS)


def test_several_deployments_matching_is_ambiguous_not_a_guess():
    assert where(namespace=NS, app="frontend") == Unmapped(
        "ambiguous: app='frontend' matches Deployments web, web-canary in demo-aiops", NS)
    # A Deployment named like another's app label.
    deployments = (deployment("payments"), deployment("payments-api", app="payments"))
    assert where(namespace=NS, deployments=deployments, service="payments") == Unmapped(
        "ambiguous: service='payments' matches Deployments payments, payments-api in demo-aiops",
        NS)
    # Ambiguity stops the search: a later label does not pick one of them.
    assert where(namespace=NS, service="frontend", app="web") == Unmapped(
        "ambiguous: service='frontend' matches Deployments web, web-canary in demo-aiops", NS)


def test_the_namespace_label():
    assert where(deployment="payments-api") == Unmapped("no namespace label (looked for: "
                                                        "namespace)")
    assert where(namespace="", deployment="payments-api") == Unmapped(
        "no namespace label (looked for: namespace)")
    assert where(namespace="kube-system", deployment="coredns") == Unmapped(
        "namespace 'kube-system' (namespace) is not watched", "kube-system")
    assert where(namespace=NS) == Unmapped(
        "no deployment, pod or workload label (looked for: deployment, pod, service, app, "
        "app_kubernetes_io_name)", NS)
    assert where(namespace=NS, alertname="Watchdog", severity="none") == where(namespace=NS)


def test_configured_label_names():
    labels = AlertLabels(namespace=("exported_namespace", "namespace"),
                         deployment=("label_deployment",), pod=("exported_pod",),
                         workload=("job",))
    assert where(labels, exported_namespace=NS, namespace="monitoring",
                 label_deployment="ledger") == target("ledger", "label_deployment")
    assert where(labels, namespace=NS, exported_pod="web-5d4f8-zz9kq") == \
        target("web", "exported_pod")
    assert where(labels, namespace=NS, job="payments") == target("payments-api", "job")
    # The default names are no longer looked at.
    assert where(labels, namespace=NS, deployment="ledger", app="ledger") == Unmapped(
        "no deployment, pod or workload label (looked for: label_deployment, exported_pod, "
        "job)", NS)
    assert where(AlertLabels(namespace=()), namespace=NS) == Unmapped(
        "no namespace label (looked for: none configured)")


def test_alert_labels_from_settings():
    settings = load_settings({"LOKI_URL": "http://loki:3100",
                              "ALERT_NAMESPACE_LABELS": "exported_namespace,namespace",
                              "ALERT_WORKLOAD_LABELS": "app"})
    assert AlertLabels.from_settings(settings) == AlertLabels(
        namespace=("exported_namespace", "namespace"), deployment=("deployment",),
        pod=("pod",), workload=("app",))
    assert AlertLabels.from_settings(load_settings({"LOKI_URL": "http://loki:3100"})) == DEFAULT


def test_the_fixtures():
    def mapped(name: str) -> list[AlertTarget | Unmapped]:
        notification = parse_webhook((FIXTURES / name).read_bytes())
        return [map_alert(a, labels=DEFAULT, watched_namespaces=WATCHED,
                          deployments=DEPLOYMENTS, replicasets=REPLICASETS)
                for a in notification.alerts]

    # KubePodCrashLooping: the pod decides, not service="kube-state-metrics".
    assert mapped("firing-pod.json") == [target("payments-api", "pod")]
    assert mapped("deployment-label.json") == [target("payments-api", "deployment")]
    assert mapped("grouped.json") == [
        target("payments-api", "service"),
        target("checkout-v2", "service"),
        target("ledger", "service")]
    assert mapped("watchdog.json") == [Unmapped("no namespace label (looked for: namespace)")]
    assert mapped("no-fingerprint.json") == [target("payments-api", "app")]


# Arbitrary labels never raise; whatever is mapped is a watched Deployment --------------------

_names = st.sampled_from(["namespace", "deployment", "pod", "service", "app",
                          "app_kubernetes_io_name", "alertname", "job"]) | st.text(max_size=8)
_values = st.sampled_from([NS, "other", "kube-system", "payments-api", "payments", "frontend",
                           "web-5d4f8-zz9kq", "payments-api-6874dc9bf7-x", "ledger", ""]) \
    | st.text(max_size=12)


@given(st.dictionaries(_names, _values, max_size=8),
       st.lists(st.sampled_from(["namespace", "deployment", "pod", "service", "app"]) | st.text(
           max_size=6), max_size=3))
def test_arbitrary_label_sets_never_raise(labels, extra_names):
    label_names = AlertLabels(namespace=("namespace", *extra_names),
                              deployment=("deployment", *extra_names), pod=("pod",),
                              workload=("service", "app", *extra_names))
    found = map_alert(alert(**labels), labels=label_names, watched_namespaces=WATCHED,
                      deployments=DEPLOYMENTS, replicasets=REPLICASETS)
    if isinstance(found, AlertTarget):
        assert found.namespace in WATCHED
        assert any(d.namespace == found.namespace and d.name == found.deployment
                   for d in DEPLOYMENTS)
        assert labels.get(found.mapped_by)
    else:
        assert isinstance(found, Unmapped) and found.reason
