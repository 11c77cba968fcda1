"""Root-cause ranking: small stories of a workload whose errors rose, told as plain asserts, and
hypothesis for arbitrary changes."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge.causes import (
    MAX_CAUSES,
    Symptom,
    affected_keys,
    affected_workloads,
    proximity,
    rank_causes,
)
from incident_detector.judge.dependencies import Dependencies, learn_dependencies
from incident_detector.model import (
    CHANGE_KINDS,
    Change,
    Container,
    Deployment,
    EnvVar,
    FieldChange,
    GitOpsOwner,
    GitOpsTool,
    Pod,
    PodTemplate,
    Service,
)

RISE = datetime(2026, 11, 27, 9, 0, 0, tzinfo=timezone.utc)
NOW = RISE + timedelta(seconds=90)

CHECKOUT = Deployment("shop", "checkout", 5, pod_labels=(("app", "checkout"),), uid="uid-c")
PAYMENTS = Deployment("shop", "payments", 7, pod_labels=(("app", "payments"),), uid="uid-p")
ORDERS = Deployment("shop", "orders", 3, pod_labels=(("app", "orders"),), uid="uid-o")
DEPLOYMENTS = (CHECKOUT, PAYMENTS, ORDERS)
SERVICES = (Service("shop", "payments", (("app", "payments"),)),
            Service("shop", "checkout", (("app", "checkout"),)),
            Service("shop", "orders", (("app", "orders"),)))

CHECKOUT_TEMPLATE = PodTemplate(
    containers=(Container("api", "shop/checkout:2", env=(
        EnvVar("PAYMENTS_URL", "http://payments:8080"),
        EnvVar("DB_PASSWORD", source="secret:db-creds/password"),
        EnvVar("FLAGS_MODE", source="configmap:flags/mode"),
    )),),
    config_maps=frozenset({"checkout-config", "flags"}),
    secrets=frozenset({"db-creds", "tls"}),
)
TEMPLATES = {("shop", "checkout"): CHECKOUT_TEMPLATE}
DEPS = learn_dependencies(DEPLOYMENTS, templates=TEMPLATES, services=SERVICES)


def pods(*started: datetime) -> tuple[Pod, ...]:
    return tuple(Pod("shop", f"checkout-7f9c-{i}", "checkout-7f9c", created_at=at)
                 for i, at in enumerate(started))


# Pods started two hours ago and not since.
OLD_PODS = pods(RISE - timedelta(hours=2), RISE - timedelta(hours=2))


def change(kind: str, name: str, *, ago: float, action: str = "updated",
           fields: tuple[FieldChange, ...] = (FieldChange("data.X", "1", "2"),),
           namespace: str = "shop", revision: int | None = None,
           previous_revision: int | None = None, manager: str | None = "kubectl-patch",
           rv: str | None = None) -> Change:
    at = RISE - timedelta(seconds=ago)
    return Change(namespace=namespace, kind=kind, name=name, action=action, at=at,
                  observed_at=at + timedelta(seconds=2), fields=fields, manager=manager,
                  revision=revision, previous_revision=previous_revision,
                  resource_version=rv or f"{kind}-{name}-{ago}")


def rollout(name: str, *, ago: float, revision: int = 7, namespace: str = "shop",
            fields: tuple[FieldChange, ...] = (FieldChange("image api", "a:1", "a:2"),)) -> Change:
    return change("Deployment", name, ago=ago, revision=revision,
                  previous_revision=revision - 1, fields=fields, namespace=namespace,
                  manager="argocd-controller")


def symptom(**fields) -> Symptom:
    values = dict(began=RISE, template=CHECKOUT_TEMPLATE, pods=OLD_PODS)
    values.update(fields)
    return Symptom.of(CHECKOUT, **values)


def rank(changes, *, sym: Symptom | None = None, rose=None, deps: Dependencies = DEPS, **kw):
    return rank_causes(sym or symptom(), changes, now=NOW, dependencies=deps,
                       risen=rose, deployments=DEPLOYMENTS, services=SERVICES, **kw)


def names(causes) -> list[tuple[str, str]]:
    return [(c.change.kind, c.change.name) for c in causes]


# --- the stories of the issue ------------------------------------------------------------------


def test_a_dependency_s_bad_rollout_ranks_before_an_old_own_rollout():
    own = rollout("checkout", ago=3600, revision=5)
    bad = rollout("payments", ago=40, revision=7)
    sym = symptom(own_rollout=own,
                  error_lines=("upstream call failed host=payments",) * 12 + ("timeout",))
    causes = rank([bad], sym=sym, rose={"payments": True})
    assert names(causes) == [("Deployment", "payments"), ("Deployment", "checkout")]
    top = causes[0]
    assert top.action == "rollback"
    assert top.command == "kubectl rollout undo deployment/payments -n shop --to-revision=6"
    assert top.score == 0.95
    assert top.reasons[:5] == (
        "+0.15 it calls payments, which rolled out revision 7 "
        "(env PAYMENTS_URL names Service payments)",
        "+0.40 rolled out 40s before the errors began rising",
        "+0.25 12 of its 13 error lines name payments",
        "+0.10 the error rate of payments rose too",
        "+0.05 1 field changed",
    )
    assert causes[1].command == "kubectl rollout undo deployment/checkout -n shop --to-revision=4"
    assert causes[1].score < 0.5


def test_a_configmap_it_mounts_changed_30s_before_with_no_rollout_ranks_first():
    cm = change("ConfigMap", "checkout-config", ago=30,
                fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),))
    causes = rank([cm, rollout("checkout", ago=7200, revision=5)])
    assert names(causes)[0] == ("ConfigMap", "checkout-config")
    top = causes[0]
    assert top.action is None
    assert top.command == "kubectl get configmap checkout-config -n shop -o yaml"
    assert "+0.40 changed 30s before the errors began rising" in top.reasons
    assert any("a volume updates in place" in r for r in top.reasons)
    assert "none of its pods started since the change" in top.reasons
    assert "revert it where it was changed (by kubectl-patch)" in top.reasons


def test_its_own_rollout_just_before_and_nothing_else_ranks_first():
    own = rollout("checkout", ago=20, revision=5)
    causes = rank([], sym=symptom(own_rollout=own))
    assert names(causes) == [("Deployment", "checkout")]
    assert causes[0].action == "rollback"
    assert causes[0].command == "kubectl rollout undo deployment/checkout -n shop --to-revision=4"
    assert causes[0].reasons[:2] == ("+0.25 its own rollout revision 5: every new pod runs the "
                                     "change", "+0.40 rolled out 20s before the errors began rising")


def test_its_own_rollout_in_the_changes_counts_once():
    own = rollout("checkout", ago=20, revision=5)
    assert len(rank([own, own], sym=symptom(own_rollout=own))) == 1


def test_an_unrelated_configmap_is_not_a_candidate():
    assert rank([change("ConfigMap", "orders-config", ago=10)]) == ()
    assert rank([change("Secret", "orders-creds", ago=10)]) == ()
    # Same name, another namespace: another object.
    assert rank([change("ConfigMap", "checkout-config", ago=10, namespace="other")]) == ()


def test_a_dependency_rolled_out_after_the_rise_began_scores_low():
    late = rollout("payments", ago=-60)
    (cause,) = rank([late], sym=symptom(error_lines=("host=payments",)))
    assert cause.score <= 0.2
    assert "-0.30 rolled out 1m after the errors began rising: it did not start them" \
        in cause.reasons
    early = rank([rollout("payments", ago=60)], sym=symptom(error_lines=("host=payments",)))
    assert early[0].score > cause.score + 0.5


def test_a_secret_read_as_env_by_pods_not_restarted_still_runs_the_old_value():
    secret = change("Secret", "db-creds", ago=30,
                    fields=(FieldChange("data.password", hidden=True),))
    (cause,) = rank([secret])
    assert ("-0.25 its pods still run the old value: they read it as environment variables, "
            "which only a restart picks up, and none of them started since the change"
            ) in cause.reasons
    assert cause.reasons[0] == "+0.20 its pods read Secret db-creds (env DB_PASSWORD)"
    # describe shows keys and sizes, never the values.
    assert cause.command == "kubectl describe secret db-creds -n shop"
    assert cause.action is None
    # The same change, once a pod restarted: it runs the new value and scores more.
    restarted = symptom(pods=pods(RISE - timedelta(hours=2), RISE - timedelta(seconds=10)))
    (after,) = rank([secret], sym=restarted)
    assert after.score > cause.score
    assert "1 of 2 pods started since the change and read the new value" in after.reasons
    assert "+0.40 took effect (a pod started with it) 10s before the errors began rising" \
        in after.reasons
    assert any("kubectl rollout restart deployment/checkout -n shop" in r for r in after.reasons)


def test_an_env_reference_with_pods_unknown_says_so():
    secret = change("Secret", "db-creds", ago=30)
    (cause,) = rank([secret], sym=symptom(pods=None))
    assert rank([secret], sym=symptom(pods=())) == (cause,)
    assert any("whether its pods restarted since is not known" in r for r in cause.reasons)
    assert not any(r.startswith("-0.25") for r in cause.reasons)


def test_a_configmap_key_named_by_the_errors_weighs_more():
    cm = change("ConfigMap", "checkout-config", ago=30,
                fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),))
    quiet = rank([cm])[0]
    loud = rank([cm], sym=symptom(error_lines=("invalid TIMEOUT_MS=50: too low", "other")))[0]
    assert loud.score == round(quiet.score + 0.25, 2)
    assert "+0.25 1 of its 2 error lines name TIMEOUT_MS, a key it changed" in loud.reasons


def test_a_deleted_configmap_it_references():
    gone = change("ConfigMap", "checkout-config", ago=45, action="deleted", fields=())
    (cause,) = rank([gone])
    assert cause.command is None
    assert "+0.40 deleted 45s before the errors began rising" in cause.reasons
    assert "recreate it where it is managed (by kubectl-patch)" in cause.reasons


# --- time -------------------------------------------------------------------------------------


def test_time_weight_is_full_shortly_before_and_halves_every_ten_minutes():
    assert proximity(RISE - timedelta(seconds=90), RISE, verb="changed") == (
        0.4, "changed 1m30s before the errors began rising")
    weight, _ = proximity(RISE - timedelta(seconds=720), RISE, verb="changed")
    assert round(weight, 3) == 0.2
    weight, text = proximity(RISE - timedelta(hours=2), RISE, verb="changed")
    assert weight < 0.01 and text == "changed 2h before the errors began rising"
    # Shortly after the first tick that saw the rise: as good as the same time.
    assert proximity(RISE + timedelta(seconds=10), RISE, verb="changed")[0] == 0.4
    assert proximity(RISE + timedelta(minutes=5), RISE, verb="changed")[0] == -0.3


def test_changes_older_than_six_hours_are_not_candidates():
    assert rank([change("ConfigMap", "checkout-config", ago=7 * 3600)]) == ()


def test_a_change_from_a_clock_ahead_of_now_counts_as_made_now():
    ahead = change("ConfigMap", "checkout-config", ago=-3600)  # an hour after the rise
    (cause,) = rank([ahead])
    assert cause.change.at == NOW


def test_the_more_recent_of_two_equal_changes_ranks_first():
    a = change("ConfigMap", "checkout-config", ago=20)
    b = change("ConfigMap", "flags", ago=10, fields=(FieldChange("data.mode", "a", "b"),))
    # flags is read as env by pods not restarted: give it restarted pods so both are equal.
    sym = symptom(pods=None, template=PodTemplate(
        config_maps=frozenset({"checkout-config", "flags"})))
    causes = rank([a, b], sym=sym)
    assert causes[0].score == causes[1].score
    assert names(causes) == [("ConfigMap", "flags"), ("ConfigMap", "checkout-config")]
    assert rank([b, a], sym=sym) == causes


# --- dependencies ---------------------------------------------------------------------------


def test_a_dependency_whose_error_rate_did_not_rise_loses_a_little():
    bad = rollout("payments", ago=40)
    rose = rank([bad], rose={"payments": True})[0]
    steady = rank([bad], rose={"payments": False})[0]
    unknown = rank([bad])[0]
    assert rose.score > unknown.score > steady.score
    assert "whether the error rate of payments rose is not known" in unknown.reasons
    assert "-0.05 the error rate of payments did not rise" in steady.reasons
    assert rank([bad], rose={"shop/payments": True})[0] == rose


def test_both_rolled_out_together_the_named_and_failing_dependency_wins():
    own = rollout("checkout", ago=30, revision=5)
    bad = rollout("payments", ago=20)
    sym = symptom(own_rollout=own, error_lines=("dial tcp payments:8080: connection refused",))
    assert names(rank([bad], sym=sym, rose={"payments": True}))[0] == ("Deployment", "payments")
    # Without the errors naming it and its own rate steady, its own rollout comes first.
    assert names(rank([bad], sym=symptom(own_rollout=own), rose={"payments": False}))[0] == (
        "Deployment", "checkout")


def test_errors_learned_earlier_count_when_the_symptom_has_no_lines():
    deps = learn_dependencies(DEPLOYMENTS, templates={}, services=SERVICES,
                              error_lines={("shop", "checkout"): ["host=payments"] * 4})
    (cause,) = rank([rollout("payments", ago=40)], deps=deps)
    assert "+0.25 its recent error lines named payments (4 lines)" in cause.reasons


def test_a_rollout_of_a_workload_it_does_not_call_is_not_a_candidate():
    assert rank([rollout("orders", ago=30)]) == ()


def test_a_non_rollout_change_of_a_dependency_is_not_a_candidate():
    label = change("Deployment", "payments", ago=30,
                   fields=(FieldChange("metadata.labels.team", "a", "b"),))
    scale_up = change("Deployment", "payments", ago=30,
                      fields=(FieldChange("spec.replicas", "2", "4"),))
    assert rank([label, scale_up]) == ()


def test_a_dependency_scaled_down_is_a_candidate_with_a_scale_back_command():
    down = change("Deployment", "payments", ago=30,
                  fields=(FieldChange("spec.replicas", "3", "0"),))
    (cause,) = rank([down])
    assert cause.action == "scale"
    assert cause.command == "kubectl scale deployment/payments -n shop --replicas=3"
    assert cause.reasons[0].startswith("+0.15 it calls payments, which was scaled down from 3 "
                                       "to 0")


def test_its_own_scale_down_is_a_candidate():
    down = change("Deployment", "checkout", ago=30,
                  fields=(FieldChange("spec.replicas", "6", "2"),))
    (cause,) = rank([down])
    assert cause.reasons[0] == ("+0.10 it was scaled down from 6 to 2: fewer pods take the "
                                "same load")
    assert cause.command == "kubectl scale deployment/checkout -n shop --replicas=6"


def test_a_statefulset_its_errors_name_is_a_candidate():
    db = change("StatefulSet", "postgres", ago=60, revision=4, previous_revision=3,
                fields=(FieldChange("image postgres", "pg:15", "pg:16"),))
    sym = symptom(error_lines=("dial tcp postgres:5432: connection refused",) * 3)
    (cause,) = rank([db], sym=sym)
    assert cause.reasons[0] == ("+0.10 its error lines name StatefulSet postgres, which "
                                "rolled out revision 4")
    assert cause.action is None
    assert cause.command == "kubectl rollout undo statefulset/postgres -n shop"
    assert "+0.25 all 3 of its error lines name postgres" in cause.reasons
    assert rank([db]) == ()  # nothing names it
    named_in_template = symptom(template=PodTemplate(containers=(Container("api", "i", env=(
        EnvVar("DB_HOST", "postgres"),)),)))
    (cause,) = rank([db], sym=named_in_template)
    assert cause.reasons[0].startswith("+0.10 its pod template names StatefulSet postgres")


def test_a_dependency_in_another_namespace():
    billing = Deployment("billing", "ledger", 2, pod_labels=(("app", "ledger"),))
    deps = learn_dependencies(
        (*DEPLOYMENTS, billing), services=(*SERVICES, Service("billing", "ledger",
                                                              (("app", "ledger"),))),
        templates={("shop", "checkout"): PodTemplate(containers=(Container("api", "i", env=(
            EnvVar("LEDGER_URL", "http://ledger.billing.svc:80"),)),))})
    bad = rollout("ledger", ago=30, namespace="billing", revision=2)
    sym = symptom(error_lines=("upstream=ledger.billing.svc.cluster.local:80 503",))
    (cause,) = rank([bad], sym=sym, deps=deps, rose={"billing/ledger": True})
    assert cause.command == "kubectl rollout undo deployment/ledger -n billing --to-revision=1"
    assert "+0.25 its one error line names ledger" in cause.reasons
    assert "+0.10 the error rate of ledger rose too" in cause.reasons
    assert rank([rollout("ledger", ago=30, namespace="billing")]) == ()  # not a dependency


def test_a_dependency_managed_by_gitops_says_where_to_roll_back():
    managed = Deployment("shop", "payments", 7, pod_labels=(("app", "payments"),),
                         gitops=GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "argocd"))
    causes = rank_causes(symptom(), [rollout("payments", ago=30)], now=NOW, dependencies=DEPS,
                         deployments=(CHECKOUT, managed), services=SERVICES)
    assert any("managed by Argo CD (payments)" in r and "argocd app rollback payments" in r
               for r in causes[0].reasons)
    assert causes[0].action == "rollback"


# --- what else touches it -----------------------------------------------------------------------


def test_a_service_selecting_its_pods_is_a_low_weight_candidate():
    svc = change("Service", "checkout", ago=30,
                 fields=(FieldChange("spec.ports.0.targetPort", "8080", "8081"),))
    cm = change("ConfigMap", "checkout-config", ago=30)
    causes = rank([svc, cm])
    assert names(causes) == [("ConfigMap", "checkout-config"), ("Service", "checkout")]
    assert causes[1].reasons[0] == "+0.05 Service checkout sends traffic to its pods"
    assert causes[1].command == "kubectl get service checkout -n shop -o yaml"


def test_the_service_it_calls_through_is_a_candidate():
    (cause,) = rank([change("Service", "payments", ago=30)])
    assert cause.reasons[0] == "+0.05 it calls other workloads through Service payments"


def test_an_unrelated_service_is_not_a_candidate():
    assert rank([change("Service", "orders", ago=30)]) == ()


def test_network_policies_selecting_it_or_its_dependency():
    mine = change("NetworkPolicy", "deny-all", ago=30,
                  fields=(FieldChange("spec.podSelector.matchLabels.app", None, "checkout"),))
    theirs = change("NetworkPolicy", "lock-payments", ago=30,
                    fields=(FieldChange("spec.podSelector.matchLabels.app", None, "payments"),))
    other = change("NetworkPolicy", "orders-only", ago=30,
                   fields=(FieldChange("spec.podSelector.matchLabels.app", None, "orders"),))
    causes = rank([mine, theirs, other])
    assert {c.change.name for c in causes} == {"deny-all", "lock-payments"}
    reasons = {c.change.name: c.reasons[0] for c in causes}
    assert reasons["deny-all"] == "+0.05 NetworkPolicy deny-all selects its pods"
    assert reasons["lock-payments"] == ("+0.05 NetworkPolicy lock-payments selects the pods of "
                                        "payments, which it calls")


def test_an_hpa_scaling_it_and_an_ingress_routing_to_it():
    hpa = change("HorizontalPodAutoscaler", "checkout", ago=30,
                 fields=(FieldChange("spec.maxReplicas", "10", "2"),))
    ingress = change("Ingress", "public", ago=30,
                     fields=(FieldChange("spec.rules.0.http.paths.0.backend.service.name",
                                         "checkout-v1", "checkout"),))
    other = change("HorizontalPodAutoscaler", "orders", ago=30)
    causes = rank([hpa, ingress, other])
    assert {c.change.name for c in causes} == {"checkout", "public"}


# --- the bounds and properties ------------------------------------------------------------


def test_at_most_three_sorted_and_one_per_object():
    cm_twice = [change("ConfigMap", "checkout-config", ago=600, rv="1"),
                change("ConfigMap", "checkout-config", ago=30, rv="2")]
    more = [change("ConfigMap", "flags", ago=50), change("Secret", "tls", ago=40),
            rollout("payments", ago=20), change("Service", "checkout", ago=10)]
    causes = rank(cm_twice + more)
    assert len(causes) == MAX_CAUSES
    assert [c.score for c in causes] == sorted((c.score for c in causes), reverse=True)
    assert len({(c.change.kind, c.change.name) for c in causes}) == len(causes)
    kept = [c for c in rank(cm_twice, limit=10) if c.change.name == "checkout-config"]
    assert [c.change.resource_version for c in kept] == ["2"]
    assert len(rank(cm_twice + more, limit=10)) == 5


def test_commands_are_quoted_for_the_shell():
    odd = change("ConfigMap", "a b;rm", ago=30)
    sym = symptom(template=PodTemplate(config_maps=frozenset({"a b;rm"})))
    (cause,) = rank([odd], sym=sym)
    assert shlex.split(cause.command) == ["kubectl", "get", "configmap", "a b;rm", "-n", "shop",
                                          "-o", "yaml"]


_names = st.sampled_from(["checkout", "payments", "orders", "checkout-config", "flags",
                          "db-creds", "tls", "postgres", "x"])
_fields = st.lists(st.builds(FieldChange, path=st.sampled_from(
    ["spec.replicas", "data.TIMEOUT_MS", "image api", "spec.podSelector.matchLabels.app",
     "spec.selector.app", "data.x"]), before=st.one_of(st.none(), st.text(max_size=8)),
    after=st.one_of(st.none(), st.text(max_size=8)), hidden=st.booleans()), max_size=4)
_changes = st.builds(
    Change, namespace=st.sampled_from(["shop", "billing"]), kind=st.sampled_from(CHANGE_KINDS),
    name=_names, action=st.sampled_from(["created", "updated", "deleted"]),
    at=st.integers(-8 * 3600, 8 * 3600).map(lambda s: RISE - timedelta(seconds=s)),
    observed_at=st.just(RISE), fields=st.tuples() | _fields.map(tuple),
    manager=st.one_of(st.none(), st.text(max_size=10)),
    resource_version=st.text(max_size=4),
    revision=st.one_of(st.none(), st.integers(1, 9)),
    previous_revision=st.one_of(st.none(), st.integers(0, 9)))


@settings(max_examples=200, deadline=None)
@given(st.lists(_changes, max_size=12, unique_by=lambda c: c.key), st.lists(st.text(max_size=60), max_size=5),
       st.one_of(st.none(), st.lists(st.integers(-3600, 36000), max_size=3)),
       st.dictionaries(_names, st.one_of(st.none(), st.booleans()), max_size=3))
def test_ranking_never_raises_and_gives_at_most_three_sorted_scores(changes, lines, started,
                                                                    rose):
    running = None if started is None else pods(*(RISE - timedelta(seconds=s) for s in started))
    sym = symptom(error_lines=tuple(lines), pods=running,
                  own_rollout=changes[0] if changes and changes[0].kind == "Deployment" else None)
    causes = rank(changes, sym=sym, rose=rose)
    assert len(causes) <= MAX_CAUSES
    scores = [c.score for c in causes]
    assert scores == sorted(scores, reverse=True)
    for cause in causes:
        assert 0.0 <= cause.score <= 1.0
        assert cause.score == round(cause.score, 2)
        assert cause.reasons
        assert cause.action in (None, "rollback", "scale")
    assert rank(list(reversed(changes)), sym=sym, rose=rose) == causes


# --- who a change may break ---------------------------------------------------------------------


def test_affected_by_a_configmap_are_the_workloads_referencing_it():
    templates = {**TEMPLATES, ("shop", "orders"): PodTemplate(config_maps=frozenset({"flags"}))}
    assert affected_workloads(change("ConfigMap", "flags", ago=0), DEPLOYMENTS, templates,
                              DEPS) == ("checkout", "orders")
    assert affected_workloads(change("Secret", "db-creds", ago=0), DEPLOYMENTS, templates,
                              DEPS) == ("checkout",)
    assert affected_workloads(change("ConfigMap", "nobody", ago=0), DEPLOYMENTS, templates,
                              DEPS) == ()
    assert affected_workloads(change("ConfigMap", "flags", ago=0, namespace="other"),
                              DEPLOYMENTS, templates, DEPS) == ()


def test_affected_by_a_rollout_are_its_callers_not_itself():
    assert affected_workloads(rollout("payments", ago=0), DEPLOYMENTS, TEMPLATES, DEPS) \
        == ("checkout",)
    assert affected_workloads(rollout("checkout", ago=0), DEPLOYMENTS, TEMPLATES, DEPS) == ()
    label_only = change("Deployment", "payments", ago=0,
                        fields=(FieldChange("metadata.labels.x", "a", "b"),))
    assert affected_workloads(label_only, DEPLOYMENTS, TEMPLATES, DEPS) == ()


def test_affected_by_a_statefulset_named_in_a_template():
    templates = {("shop", "orders"): PodTemplate(containers=(Container("api", "i", env=(
        EnvVar("DB_HOST", "postgres"),)),))}
    db = change("StatefulSet", "postgres", ago=0, revision=3, previous_revision=2)
    assert affected_workloads(db, DEPLOYMENTS, templates, Dependencies()) == ("orders",)


def test_affected_across_namespaces_only_in_affected_keys():
    billing = Deployment("billing", "ledger", 2, pod_labels=(("app", "ledger"),))
    templates = {("shop", "checkout"): PodTemplate(containers=(Container("api", "i", env=(
        EnvVar("LEDGER_URL", "http://ledger.billing:80"),)),))}
    deps = learn_dependencies((*DEPLOYMENTS, billing), templates=templates,
                              services=[Service("billing", "ledger", (("app", "ledger"),))])
    bad = rollout("ledger", ago=0, namespace="billing")
    assert affected_keys(bad, (*DEPLOYMENTS, billing), templates, deps) == (("shop", "checkout"),)
    assert affected_workloads(bad, (*DEPLOYMENTS, billing), templates, deps) == ()


def test_affected_by_services_policies_and_autoscalers():
    svc = change("Service", "payments", ago=0)
    assert affected_workloads(svc, DEPLOYMENTS, TEMPLATES, DEPS, services=SERVICES) \
        == ("checkout", "payments")
    policy = change("NetworkPolicy", "lock", ago=0,
                    fields=(FieldChange("spec.podSelector.matchLabels.app", None, "payments"),))
    assert affected_workloads(policy, DEPLOYMENTS, TEMPLATES, DEPS) == ("checkout", "payments")
    hpa = change("HorizontalPodAutoscaler", "orders-hpa", ago=0,
                 fields=(FieldChange("spec.scaleTargetRef.name", None, "orders"),))
    assert affected_workloads(hpa, DEPLOYMENTS, TEMPLATES, DEPS) == ("orders",)
    ingress = change("Ingress", "public", ago=0,
                     fields=(FieldChange("spec.rules.0.backend.service.name", None, "orders"),))
    assert affected_workloads(ingress, DEPLOYMENTS, TEMPLATES, DEPS, services=SERVICES) \
        == ("orders",)


def test_the_loop_s_shape_of_a_symptom_names_and_templates_by_name():
    # No labels on the symptom: the Deployment's own, from the deployments given.
    sym = Symptom(namespace="shop", deployment="checkout", deployment_uid="uid-c", began=RISE,
                  template=None, pods=(), error_lines=(), own_rollout=None)
    svc = change("Service", "checkout", ago=30)
    assert names(rank([svc], sym=sym)) == [("Service", "checkout")]
    # No template known: no ConfigMap is a candidate.
    assert rank([change("ConfigMap", "checkout-config", ago=30)], sym=sym) == ()
    by_name = {"checkout": CHECKOUT_TEMPLATE}
    assert affected_workloads(change("ConfigMap", "flags", ago=0), DEPLOYMENTS, by_name,
                              DEPS) == ("checkout",)
    deps = learn_dependencies(DEPLOYMENTS, templates=by_name, services=SERVICES,
                              error_lines={"checkout": ["host=payments"]})
    assert deps.of("shop", "checkout")[0].error_lines == 1


# --- the service map: a change a few calls away ----------------------------------------------

# checkout -> payments -> ledger (billing) -> vault (billing), and checkout's neighbour orders,
# which nothing on the map ties to checkout.
from incident_detector.judge import causality, service_map as graph  # noqa: E402

_LINKS = (("shop/checkout", "shop/payments", "env", "PAYMENTS_URL=http://payments:8080"),
          ("shop/payments", "billing/ledger", "env", "LEDGER_URL=http://ledger.billing:80"),
          ("billing/ledger", "billing/vault", "error_line", "dial tcp vault:8200 <_>"),
          ("shop/orders", "shop/checkout", "env", "CHECKOUT_URL=http://checkout:8080"))
MAP = graph.update(graph.ServiceMap(), "shop", now=RISE, workloads=[], observed=[
    graph.Sighting(a, b, kind, detail) for a, b, kind, detail in _LINKS])
REACH = causality.callees(MAP, "shop/checkout")


def test_the_map_reaches_callees_through_others_with_their_path():
    assert REACH == {"shop/payments": ("shop/checkout", "shop/payments"),
                     "billing/ledger": ("shop/checkout", "shop/payments", "billing/ledger"),
                     "billing/vault": ("shop/checkout", "shop/payments", "billing/ledger",
                                       "billing/vault")}
    assert causality.callees(MAP, "shop/checkout", max_hops=1) == {
        "shop/payments": ("shop/checkout", "shop/payments")}


def test_a_rollout_two_calls_away_is_a_candidate_only_with_the_map():
    ledger = rollout("ledger", ago=240, namespace="billing")
    assert rank([ledger]) == ()
    (cause,) = rank([ledger], reach=REACH)
    assert cause.reasons[0] == ("+0.10 it calls payments, which calls billing/ledger "
                                "(service map, 2 hops), which rolled out revision 7")
    assert cause.action == "rollback"
    assert cause.command == ("kubectl rollout undo deployment/ledger -n billing "
                             "--to-revision=6")


def test_a_callee_a_few_hops_away_outranks_an_unrelated_change_next_door():
    # ledger rolled out four minutes before the rise, its own errors rising, and checkout's
    # errors name payments, on the way to it. Twenty seconds before the rise a NetworkPolicy
    # that selects checkout's pods changed a label nobody uses.
    ledger = rollout("ledger", ago=240, namespace="billing")
    policy = change("NetworkPolicy", "metrics-scrape", ago=20,
                    fields=(FieldChange("spec.podSelector.matchLabels.app", None, "checkout"),))
    sym = symptom(error_lines=("upstream call failed host=payments status=502",) * 6)
    rose = {"billing/ledger": True}
    # Without the map, only the policy is a candidate.
    assert names(rank([ledger, policy], sym=sym, rose=rose)) == [("NetworkPolicy",
                                                                  "metrics-scrape")]
    causes = rank([ledger, policy], sym=sym, rose=rose, reach=REACH)
    assert names(causes) == [("Deployment", "ledger"), ("NetworkPolicy", "metrics-scrape")]
    assert causes[0].score > causes[1].score
    assert "+0.15 all 6 of its error lines name payments, on the way to ledger" in \
        causes[0].reasons
    assert "+0.10 the error rate of ledger rose too" in causes[0].reasons


def test_each_further_hop_weighs_less():
    vault = rollout("vault", ago=60, namespace="billing")
    ledger = rollout("ledger", ago=60, namespace="billing")
    causes = rank([vault, ledger], reach=REACH)
    assert names(causes) == [("Deployment", "ledger"), ("Deployment", "vault")]
    assert causes[1].reasons[0].startswith("+0.07 it calls payments, which calls "
                                           "billing/ledger, which calls billing/vault "
                                           "(service map, 3 hops)")


def test_a_direct_dependency_stays_a_dependency_with_the_map():
    bad = rollout("payments", ago=40)
    with_map = rank([bad], reach=REACH, rose={"payments": True})
    assert with_map == rank([bad], rose={"payments": True})


def test_a_caller_s_rollout_is_not_a_candidate_through_the_map():
    # orders calls checkout: upstream of it, not on the way of its calls.
    assert rank([rollout("orders", ago=30)], reach=REACH) == ()


@settings(max_examples=100, deadline=None)
@given(st.lists(_changes, max_size=12, unique_by=lambda c: c.key),
       st.lists(st.sampled_from(["upstream call failed host=payments", "dial tcp ledger:5432",
                                 "timeout"]), max_size=5))
def test_ranking_with_the_map_never_raises_and_stays_sorted(changes, lines):
    sym = symptom(error_lines=tuple(lines))
    causes = rank(changes, sym=sym, reach=REACH)
    assert len(causes) <= MAX_CAUSES
    assert [c.score for c in causes] == sorted((c.score for c in causes), reverse=True)
    assert all(0.0 <= c.score <= 1.0 and c.reasons for c in causes)
    assert rank(list(reversed(changes)), sym=sym, reach=REACH) == causes
