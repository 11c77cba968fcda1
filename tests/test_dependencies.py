"""Dependencies learned from pod templates and error lines: plain asserts, and hypothesis for the
open-ended text."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from incident_detector.judge.dependencies import (
    MAX_DEPENDENCIES,
    Dependencies,
    hosts_in_line,
    hosts_in_template,
    learn_dependencies,
    normalize_host,
    template_mentions,
)
from incident_detector.model import Container, Deployment, EnvVar, LogLine, PodTemplate, Service


def template(*env: EnvVar, args: tuple[str, ...] = (), command: tuple[str, ...] = ()) -> PodTemplate:
    return PodTemplate(containers=(Container("api", "shop/api:1", command=command, args=args,
                                             env=env),))


def deployment(name: str, namespace: str = "shop", app: str | None = None) -> Deployment:
    return Deployment(namespace, name, 1, pod_labels=(("app", app or name), ("tier", "backend")))


def service(name: str, namespace: str = "shop", app: str | None = None) -> Service:
    return Service(namespace, name, (("app", app or name),))


# --- normalize_host ------------------------------------------------------------------------


def test_normalize_host_keeps_in_cluster_names_in_their_short_form():
    assert normalize_host("payments") == "payments"
    assert normalize_host("Payments:8080") == "payments"
    assert normalize_host("payments.billing") == "payments.billing"
    assert normalize_host("payments.billing.svc") == "payments.billing"
    assert normalize_host("payments.billing.svc.cluster.local") == "payments.billing"
    assert normalize_host("payments.billing.svc.cluster.local.") == "payments.billing"
    assert normalize_host("web-0.db.billing.svc.cluster.local") == "db.billing"


def test_normalize_host_drops_what_is_not_an_in_cluster_name():
    assert normalize_host("api.stripe.com") is None
    assert normalize_host("10.0.0.5") is None
    assert normalize_host("10.0.0.5:8080") is None
    assert normalize_host("localhost") is None
    assert normalize_host("localhost:8080") is None
    assert normalize_host("") is None
    assert normalize_host("/var/run") is None
    assert normalize_host("payments:http") is None
    assert normalize_host("9payments") is None  # a Service name begins with a letter
    assert normalize_host("pay_ments") is None
    assert normalize_host("-payments") is None
    assert normalize_host("a" * 64) is None


# --- hosts in a pod template ----------------------------------------------------------------


def test_a_url_in_an_env_value_names_its_host():
    assert hosts_in_template(template(EnvVar("PAYMENTS_URL", "http://payments:8080/x"))) \
        == {"payments"}


def test_a_cluster_name_in_an_env_value_names_service_and_namespace():
    t = template(EnvVar("FRAUD", "fraud.risk.svc.cluster.local"))
    assert hosts_in_template(t) == {"fraud.risk"}


def test_host_and_port_values_name_their_hosts():
    assert hosts_in_template(template(EnvVar("KAFKA", "kafka-0:9092,kafka-1:9092"))) \
        == {"kafka-0", "kafka-1"}


def test_a_bare_value_counts_only_for_a_variable_named_like_an_address():
    for name in ("DB_HOST", "PAYMENTS_SERVICE", "PAYMENTS_ADDR", "UPSTREAM", "cache-endpoint",
                 "ORDERS_URL"):
        assert hosts_in_template(template(EnvVar(name, "payments"))) == {"payments"}, name
    for name in ("LOG_LEVEL", "MODE", "TEAM", "PAYMENTS"):
        assert hosts_in_template(template(EnvVar(name, "payments"))) == frozenset(), name


def test_values_from_configmaps_or_secrets_are_never_read():
    t = template(EnvVar("DB_HOST", source="configmap:db/host"),
                 EnvVar("API_URL", source="secret:api/url"))
    assert hosts_in_template(t) == frozenset()


def test_secret_looking_values_are_never_read():
    t = template(EnvVar("DATABASE_URL", "postgres://app:hunter2@db:5432/shop"),
                 EnvVar("TOKEN_HOST", "c2VjcmV0LXZhbHVlLW9mLWEtdG9rZW4K"))
    assert hosts_in_template(t) == frozenset()


def test_a_secret_named_variable_with_a_plain_address_is_read():
    # "auth" matches the secret-name pattern, but the value is an address, nothing secret.
    assert hosts_in_template(template(EnvVar("AUTH_SERVICE_URL", "http://auth:9000"))) \
        == {"auth"}


def test_arguments_name_hosts():
    t = template(args=("--upstream=http://payments:8080", "--cache-addr", "redis",
                       "--listen=:8080", "--bind", "0.0.0.0:9090", "queue.jobs.svc:5672"))
    assert hosts_in_template(t) == {"payments", "redis", "queue.jobs"}


def test_the_argument_after_a_secret_named_flag_is_never_read():
    t = template(args=("--password", "payments:8080", "--upstream", "orders"))
    assert hosts_in_template(t) == {"orders"}


def test_template_mentions_say_where_each_host_was_named():
    t = template(EnvVar("PAYMENTS_URL", "http://payments:8080"),
                 args=("--upstream", "orders:9000"))
    assert template_mentions(t) == [("payments", "env PAYMENTS_URL"),
                                    ("orders", "argument --upstream of container api")]


def test_an_empty_template_names_nothing():
    assert hosts_in_template(PodTemplate()) == frozenset()


# --- hosts in an error line ------------------------------------------------------------------


def test_hosts_in_line_reads_the_usual_shapes():
    assert hosts_in_line("upstream call failed host=payments") == {"payments"}
    assert hosts_in_line("upstream=payments:8080 status=503") == {"payments"}
    assert hosts_in_line("POST http://payments/charge failed: 502") == {"payments"}
    assert hosts_in_line("dial tcp payments:5432: connect: connection refused") == {"payments"}
    assert hosts_in_line("dial tcp: lookup payments on 10.96.0.10:53: no such host") \
        == {"payments"}
    assert hosts_in_line("timeout talking to payments.shop.svc") == {"payments.shop"}
    assert hosts_in_line('{"level":"error","upstream":"payments.billing:8080"}') \
        == {"payments.billing"}
    assert hosts_in_line("calling fraud-check failed") == {"fraud-check"}


def test_hosts_in_line_ignores_what_is_not_a_host():
    assert hosts_in_line("ERROR 12:30:45 charge failed") == frozenset()
    assert hosts_in_line("status:500 code=E42") == frozenset()
    assert hosts_in_line("dial tcp 10.0.0.5:8080: i/o timeout") == frozenset()
    assert hosts_in_line("GET https://api.stripe.com/v1/charges 500") == frozenset()
    assert hosts_in_line("connect to localhost:6379 refused") == frozenset()
    assert hosts_in_line("") == frozenset()


_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?")


@given(st.text(max_size=300))
def test_hosts_in_line_never_raises_and_gives_only_dns_label_names(line):
    for host in hosts_in_line(line):
        assert _NAME.fullmatch(host), host


@given(st.lists(st.sampled_from(["host=", "upstream=", "http://", "dial tcp ", ".svc", ":",
                                 "payments", "Pay-", "ments", ".", "8080", " ", "/", "@", '"',
                                 "é", "0", "-", "lookup "]), max_size=30))
def test_hosts_in_line_on_host_like_fragments(parts):
    for host in hosts_in_line("".join(parts)):
        assert _NAME.fullmatch(host), host


@given(st.text(max_size=80), st.text(max_size=80))
def test_hosts_in_template_never_raises_on_any_env_or_argument(name, value):
    t = template(EnvVar(name, value), args=(value, f"--{name}={value}", "--x", value))
    for host in hosts_in_template(t):
        assert _NAME.fullmatch(host), host


# --- learning the dependencies --------------------------------------------------------------


CHECKOUT = deployment("checkout")
PAYMENTS = deployment("payments-api", app="payments")
ORDERS = deployment("orders")


def test_an_env_url_maps_through_the_service_selector_to_its_deployment():
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS], services=[service("payments")],
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_URL", "http://payments:80"))})
    (dep,) = deps.of("shop", "checkout")
    assert (dep.namespace, dep.deployment, dep.service) == ("shop", "payments-api", "payments")
    assert dep.evidence == ("env PAYMENTS_URL names Service payments",)
    assert dep.error_lines == 0
    assert deps.on("shop", "payments-api") == (("shop", "checkout"),)
    assert deps.of("shop", "payments-api") == ()


def test_error_lines_name_a_dependency_with_a_count():
    lines = ["upstream call failed host=payments"] * 12 + ["all good", "host=nobody"]
    deps = learn_dependencies([CHECKOUT, PAYMENTS], services=[service("payments")], templates={},
                              error_lines={("shop", "checkout"): lines})
    (dep,) = deps.of("shop", "checkout")
    assert dep.deployment == "payments-api"
    assert dep.error_lines == 12
    assert dep.evidence == ("its error lines name host payments (12 lines)",)


def test_error_lines_may_be_log_lines():
    from datetime import datetime, timezone
    at = datetime(2026, 11, 27, tzinfo=timezone.utc)
    deps = learn_dependencies([CHECKOUT, PAYMENTS], services=[service("payments")], templates={},
                              error_lines={("shop", "checkout"): [LogLine(at, "host=payments")]})
    assert deps.of("shop", "checkout")[0].evidence == (
        "its error lines name host payments (1 line)",)


def test_template_and_lines_together_give_both_sentences():
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS], services=[service("payments")],
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_HOST", "payments"))},
        error_lines={("shop", "checkout"): ["dial tcp payments:443: refused"] * 2})
    (dep,) = deps.of("shop", "checkout")
    assert dep.evidence == ("env PAYMENTS_HOST names Service payments",
                            "its error lines name host payments (2 lines)")


def test_a_host_equal_to_a_deployment_name_counts_without_a_service():
    deps = learn_dependencies(
        [CHECKOUT, ORDERS], services=[],
        templates={("shop", "checkout"): template(EnvVar("ORDERS_HOST", "orders"))})
    (dep,) = deps.of("shop", "checkout")
    assert dep.service is None
    assert dep.evidence == (
        "env ORDERS_HOST names the Deployment orders by its name (no Service selects it)",)


def test_a_service_selecting_nothing_falls_back_to_the_deployment_name():
    deps = learn_dependencies(
        [CHECKOUT, ORDERS], services=[Service("shop", "orders", (("app", "gone"),))],
        templates={("shop", "checkout"): template(EnvVar("ORDERS_HOST", "orders"))})
    assert [d.deployment for d in deps.of("shop", "checkout")] == ["orders"]


def test_a_service_without_a_selector_selects_nothing():
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS], services=[Service("shop", "payments", ())],
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_HOST", "payments"))})
    assert deps.of("shop", "checkout") == ()


def test_a_selector_must_match_every_pair():
    svc = Service("shop", "payments", (("app", "payments"), ("tier", "frontend")))
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS], services=[svc],
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_HOST", "payments"))})
    assert deps.of("shop", "checkout") == ()


def test_a_service_in_front_of_two_deployments_gives_both():
    canary = deployment("payments-canary", app="payments")
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS, canary], services=[service("payments")],
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_HOST", "payments"))})
    assert sorted(d.deployment for d in deps.of("shop", "checkout")) == [
        "payments-api", "payments-canary"]


def test_other_namespaces_only_when_the_host_names_them():
    billing = deployment("payments", namespace="billing")
    services = [service("payments", namespace="billing")]
    plain = learn_dependencies(
        [CHECKOUT, billing], services=services,
        templates={("shop", "checkout"): template(EnvVar("PAYMENTS_HOST", "payments"))})
    assert plain.of("shop", "checkout") == ()
    qualified = learn_dependencies(
        [CHECKOUT, billing], services=services,
        templates={("shop", "checkout"): template(
            EnvVar("PAYMENTS_URL", "http://payments.billing.svc.cluster.local:8080"))})
    (dep,) = qualified.of("shop", "checkout")
    assert (dep.namespace, dep.deployment) == ("billing", "payments")
    assert dep.evidence == ("env PAYMENTS_URL names Service payments in billing",)
    assert qualified.on("billing", "payments") == (("shop", "checkout"),)


def test_a_workload_never_depends_on_itself():
    deps = learn_dependencies(
        [CHECKOUT], services=[service("checkout")],
        templates={("shop", "checkout"): template(EnvVar("SELF_URL", "http://checkout:80"))},
        error_lines={("shop", "checkout"): ['{"service":"checkout","msg":"failed"}']})
    assert deps.of("shop", "checkout") == ()
    assert deps.edges == {}


def test_dependencies_are_ranked_by_error_lines_then_name():
    deps = learn_dependencies(
        [CHECKOUT, PAYMENTS, ORDERS], services=[service("payments")],
        templates={("shop", "checkout"): template(EnvVar("ORDERS_HOST", "orders"),
                                                   EnvVar("PAYMENTS_HOST", "payments"))},
        error_lines={("shop", "checkout"): ["host=payments"]})
    assert [d.deployment for d in deps.of("shop", "checkout")] == ["payments-api", "orders"]


def test_dependencies_are_bounded():
    many = [deployment(f"svc-{i}") for i in range(MAX_DEPENDENCIES + 10)]
    env = tuple(EnvVar(f"S{i}_HOST", f"svc-{i}") for i in range(MAX_DEPENDENCIES + 10))
    deps = learn_dependencies([CHECKOUT, *many], services=[],
                              templates={("shop", "checkout"): template(*env)})
    assert 0 < len(deps.of("shop", "checkout")) <= MAX_DEPENDENCIES


def test_unknown_workloads_have_no_dependencies():
    assert Dependencies().of("shop", "checkout") == ()
    assert Dependencies().on("shop", "checkout") == ()
