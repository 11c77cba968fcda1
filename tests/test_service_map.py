"""The service map: links from environment, arguments, ConfigMaps, error lines, Ingresses and
NetworkPolicies; updates, bounds and subgraphs. Plain asserts, and hypothesis for open-ended
input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge.change_diff import FieldValue, ObjectState
from incident_detector.judge.dependencies import external_host, hosts_in_value
from incident_detector.judge.service_map import (
    Limits,
    Namer,
    ServiceMap,
    Sighting,
    declared_sightings,
    edge_dict,
    line_sightings,
    subgraph,
    update,
)
from incident_detector.model import Container, Deployment, EnvVar, PodTemplate, Service

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


def template(*env: tuple[str, str], args: tuple[str, ...] = (),
             config_maps: tuple[str, ...] = ()) -> PodTemplate:
    return PodTemplate(containers=(Container("app", "img:1", args=args,
                                             env=tuple(EnvVar(k, v) for k, v in env)),),
                       config_maps=frozenset(config_maps))


def deployment(name: str, namespace: str = "shop") -> Deployment:
    return Deployment(namespace, name, 1, pod_labels=(("app", name),))


def service(name: str, namespace: str = "shop", app: str | None = None) -> Service:
    return Service(namespace, name, (("app", app or name),))


def world(*names: str, namespace: str = "shop") -> Namer:
    return Namer([deployment(n, namespace) for n in names],
                 [service(n, namespace) for n in names])


def build(namer: Namer, templates: dict[str, PodTemplate], *, lines=None, now=NOW,
          start: ServiceMap | None = None, **objects) -> ServiceMap:
    declared = declared_sightings(namer, "shop", templates=templates, **objects)
    observed = [s for w, ls in (lines or {}).items() for s in line_sightings(namer, "shop", w, ls)]
    return update(start or ServiceMap(), "shop", now=now,
                  workloads=[d.name for d in namer.deployments if d.namespace == "shop"],
                  declared=declared, observed=observed)


def links(service_map: ServiceMap) -> set[tuple[str, str]]:
    return set(service_map.edges)


def kinds(service_map: ServiceMap, source: str, target: str) -> set[str]:
    return {e.kind for e in service_map.edges[(source, target)].evidence}


# --- hosts -------------------------------------------------------------------------------------


def test_external_host_keeps_outside_names_only():
    assert external_host("API.Stripe.com:443") == "api.stripe.com"
    assert external_host("stripe.com") == "stripe.com"
    assert external_host("payments") is None
    assert external_host("payments.shop.svc.cluster.local") is None
    assert external_host("payments.shop.svc") is None
    assert external_host("db.internal") is None
    assert external_host("10.0.0.5") is None
    assert external_host("10.0.0.5:443") is None
    assert external_host("a.b:http") is None
    assert external_host("") is None


def test_hosts_in_value_splits_inside_and_outside_and_skips_secrets():
    assert hosts_in_value("PAYMENTS_URL", "http://payments:8080") == (("payments",), ())
    assert hosts_in_value("STRIPE_URL", "https://api.stripe.com/v1") == ((), ("api.stripe.com",))
    assert hosts_in_value("DB", "postgres://app:hunter2@db:5432/app") == ((), ())
    assert hosts_in_value("LOG_LEVEL", "info") == ((), ())


# --- topologies --------------------------------------------------------------------------------


def test_three_tier_from_the_environment():
    namer = world("web", "api", "db")
    service_map = build(namer, {
        "web": template(("API_URL", "http://api:8080")),
        "api": template(("DB_HOST", "db.shop.svc.cluster.local"), ("LOG_LEVEL", "info")),
        "db": template(),
    })
    assert links(service_map) == {("shop/web", "shop/api"), ("shop/api", "shop/db")}
    assert set(service_map.nodes) == {"shop/web", "shop/api", "shop/db"}
    edge = service_map.edges[("shop/web", "shop/api")]
    assert [(e.kind, e.detail) for e in edge.evidence] == [
        ("service_selector", "Service api selects app=api"), ("env", "API_URL=http://api:8080")]
    assert edge.last_seen == NOW
    assert edge_dict(edge)["last_seen"] == "2026-11-23T18:00:00Z"
    assert edge_dict(edge)["source"] == "shop/web"


def test_diamond_from_env_error_lines_and_an_ingress():
    namer = world("frontend", "cart", "catalog", "db")
    ingress = ObjectState("Ingress", "shop", "shop-web",
                          backends=(("shop.example.com/", "frontend"),))
    service_map = build(namer, {
        "frontend": template(("CART_URL", "http://cart:80"), args=("--catalog", "catalog:9000")),
        "cart": template(), "catalog": template(), "db": template(),
    }, lines={
        "cart": ['level=error msg="query failed" host=db attempt=3'],
        "catalog": ["dial tcp db:5432: connect: connection refused"],
    }, ingresses=[ingress])
    assert links(service_map) == {
        ("external/shop.example.com", "shop/frontend"),
        ("shop/frontend", "shop/cart"), ("shop/frontend", "shop/catalog"),
        ("shop/cart", "shop/db"), ("shop/catalog", "shop/db")}
    assert kinds(service_map, "shop/frontend", "shop/catalog") == {"args", "service_selector"}
    assert kinds(service_map, "shop/cart", "shop/db") == {"error_line", "service_selector"}
    line = [e for e in service_map.edges[("shop/cart", "shop/db")].evidence
            if e.kind == "error_line"][0]
    assert line.detail == 'level=error msg="query failed" host=db attempt=<n>'
    assert service_map.nodes["external/shop.example.com"].kind == "external"
    ing = service_map.edges[("external/shop.example.com", "shop/frontend")].evidence
    assert ("ingress", "Ingress shop-web: shop.example.com/ -> frontend") in \
        [(e.kind, e.detail) for e in ing]


def test_a_cycle_and_an_external_host():
    namer = world("orders", "inventory")
    service_map = build(namer, {
        "orders": template(("INVENTORY_ADDR", "inventory:7000"),
                           ("STRIPE_URL", "https://api.stripe.com/v1")),
        "inventory": template(("ORDERS_SERVICE", "orders")),
    }, lines={"orders": ["dial tcp hooks.slack.com:443: i/o timeout"]})
    assert links(service_map) == {
        ("shop/orders", "shop/inventory"), ("shop/inventory", "shop/orders"),
        ("shop/orders", "external/api.stripe.com"), ("shop/orders", "external/hooks.slack.com")}
    assert service_map.nodes["external/api.stripe.com"].namespace == "external"
    assert service_map.nodes["external/api.stripe.com"].name == "api.stripe.com"


def test_a_configmap_value_and_a_network_policy():
    namer = world("web", "api", "cache")
    config = ObjectState("ConfigMap", "shop", "web-config", fields={
        "data.UPSTREAM_URL": FieldValue("http://api:8080", b"x"),
        "data.TOKEN": FieldValue(None, b"y", hidden=True),
    })
    policy = ObjectState("NetworkPolicy", "shop", "cache-from-api", selector=(("app", "cache"),),
                         peers=(("ingress", (("app", "api"),)),))
    everyone = ObjectState("NetworkPolicy", "shop", "allow-all", selector=(),
                           peers=(("ingress", ()),))
    service_map = build(namer, {"web": template(config_maps=("web-config",)),
                                "api": template(), "cache": template()},
                        config_maps=[config], network_policies=[policy, everyone])
    assert links(service_map) == {("shop/web", "shop/api"), ("shop/api", "shop/cache")}
    assert ("configmap", "web-config: UPSTREAM_URL=http://api:8080") in \
        [(e.kind, e.detail) for e in service_map.edges[("shop/web", "shop/api")].evidence]
    assert kinds(service_map, "shop/api", "shop/cache") == {"network_policy"}


def test_another_namespace_and_no_self_link():
    namer = Namer([deployment("checkout"), deployment("payments", "billing")],
                  [service("payments", "billing")])
    service_map = build(namer, {
        "checkout": template(("PAY", "http://payments.billing.svc:80"),
                             ("SELF", "http://checkout:80"))})
    assert links(service_map) == {("shop/checkout", "billing/payments")}
    # "payments.billing" is a Service of a watched namespace, never an outside host.
    assert "external/payments.billing" not in service_map.nodes


# --- updates -----------------------------------------------------------------------------------


def test_declared_evidence_is_replaced_and_observed_evidence_ages_out():
    namer = world("web", "api", "db")
    first = build(namer, {"web": template(("API_URL", "http://api")), "api": template()},
                  lines={"api": ["upstream call failed host=db"]})
    assert links(first) == {("shop/web", "shop/api"), ("shop/api", "shop/db")}
    later = NOW + timedelta(hours=1)
    # web no longer names api; api's error line is still remembered.
    second = build(namer, {"web": template(), "api": template()}, start=first, now=later)
    assert links(second) == {("shop/api", "shop/db")}
    assert second.edges[("shop/api", "shop/db")].last_seen == NOW
    assert links(first) == {("shop/web", "shop/api"), ("shop/api", "shop/db")}  # unchanged
    # Seen again: refreshed, not repeated.
    third = update(second, "shop", now=later, observed=line_sightings(
        namer, "shop", "api", ["upstream call failed host=db"]))
    edge = third.edges[("shop/api", "shop/db")]
    assert edge.last_seen == later
    assert [e.kind for e in edge.evidence].count("error_line") == 1
    # A day without it: gone.
    fourth = update(third, "shop", now=later + timedelta(hours=25))
    assert links(fourth) == set()


def test_a_workload_removed_takes_its_links_with_it():
    namer = world("web", "api")
    first = build(namer, {"web": template(("API_URL", "http://api"))})
    second = update(first, "shop", now=NOW, workloads=["web"])
    assert links(second) == set() and set(second.nodes) == {"shop/web"}


def test_limits_drop_the_oldest_first():
    limits = Limits(nodes=6, edges=3, evidence_per_edge=2)
    service_map = ServiceMap()
    for minute in range(5):
        at = NOW + timedelta(minutes=minute)
        service_map = update(service_map, "shop", now=at, workloads=[f"w{i}" for i in range(5)],
                             observed=[Sighting("shop/w0", f"shop/w{minute}", "error_line",
                                                f"line {minute}"),
                                       Sighting("shop/w1", "shop/w2", "error_line",
                                                f"again {minute}")],
                             limits=limits)
    assert len(service_map.edges) <= 3
    assert ("shop/w1", "shop/w2") in service_map.edges
    assert [e.detail for e in service_map.edges[("shop/w1", "shop/w2")].evidence] == \
        ["again 4", "again 3"]
    assert ("shop/w0", "shop/w4") in service_map.edges
    assert ("shop/w0", "shop/w1") not in service_map.edges  # the oldest
    assert len(service_map.nodes) <= 6


# --- subgraphs ---------------------------------------------------------------------------------


def chain() -> ServiceMap:
    names = ["a", "b", "c", "d", "e"]
    namer = world(*names)
    return build(namer, {n: template(("NEXT_URL", f"http://{m}")) for n, m in zip(names, names[1:])})


def test_subgraph_by_workload_and_depth_goes_both_ways():
    service_map = chain()
    near = subgraph(service_map, workload="shop/c", depth=1)
    assert set(near.nodes) == {"shop/b", "shop/c", "shop/d"}
    assert links(near) == {("shop/b", "shop/c"), ("shop/c", "shop/d")}
    assert set(subgraph(service_map, workload="shop/c", depth=0).nodes) == {"shop/c"}
    assert set(subgraph(service_map, workload="shop/a", depth=3).nodes) == \
        {"shop/a", "shop/b", "shop/c", "shop/d"}
    assert subgraph(service_map, workload="shop/zz", depth=2).nodes == {}


def test_subgraph_by_namespace_keeps_the_other_ends():
    namer = Namer([deployment("checkout"), deployment("payments", "billing"),
                   deployment("ledger", "billing")],
                  [service("payments", "billing"), service("ledger", "billing")])
    service_map = build(namer, {"checkout": template(("PAY", "http://payments.billing"))})
    service_map = update(service_map, "billing", now=NOW, workloads=["payments", "ledger"],
                         declared=declared_sightings(namer, "billing", templates={
                             "payments": template(("LEDGER_URL", "http://ledger"))}))
    shop = subgraph(service_map, namespace="shop")
    assert set(shop.nodes) == {"shop/checkout", "billing/payments"}
    assert links(shop) == {("shop/checkout", "billing/payments")}
    billing = subgraph(service_map, namespace="billing")
    assert links(billing) == {("shop/checkout", "billing/payments"),
                              ("billing/payments", "billing/ledger")}


# --- anything at all ---------------------------------------------------------------------------

names = st.text(alphabet="abcdefgh-.:/", min_size=1, max_size=12)
texts = st.text(max_size=120)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(names, texts), max_size=8), st.lists(texts, max_size=8),
       st.lists(st.tuples(names, names, st.sampled_from(["ingress", "egress"])), max_size=4))
def test_no_crash_on_any_text(env, lines, policies):
    namer = world("a", "b", "c")
    objects = {"network_policies": [
        ObjectState("NetworkPolicy", "shop", "p", selector=(("app", x),),
                    peers=((d, (("app", y),)),)) for x, y, d in policies],
        "ingresses": [ObjectState("Ingress", "shop", "i", backends=tuple(
            (f"{k}/", k) for k, _ in env))],
        "config_maps": [ObjectState("ConfigMap", "shop", "cm", fields={
            f"data.{k}": FieldValue(v, b"") for k, v in env})]}
    service_map = build(namer, {"a": template(*env, args=tuple(v for _, v in env),
                                              config_maps=("cm",))},
                        lines={"a": lines, "b": lines}, **objects)
    for (source, target), edge in service_map.edges.items():
        assert source in service_map.nodes and target in service_map.nodes
        assert source != target and edge.evidence
        assert all(len(e.detail) <= 160 for e in edge.evidence)


sightings = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 50),
                               st.integers(0, 100)), max_size=200)


@settings(max_examples=60, deadline=None)
@given(sightings)
def test_size_stays_bounded(items):
    limits = Limits(nodes=20, edges=25, evidence_per_edge=3)
    service_map = ServiceMap()
    for index, (a, b, detail, minutes) in enumerate(items):
        service_map = update(
            service_map, "shop", now=NOW + timedelta(minutes=index),
            workloads=[f"w{i}" for i in range(31)] if index % 7 == 0 else None,
            observed=[Sighting(f"shop/w{a}", f"shop/w{b}" if b % 5 else f"external/h{b}.com",
                               "error_line", f"d{detail}")], limits=limits)
        assert len(service_map.nodes) <= limits.nodes
        assert len(service_map.edges) <= limits.edges
        assert all(len(e.evidence) <= limits.evidence_per_edge
                   for e in service_map.edges.values())
        assert all(k[0] in service_map.nodes and k[1] in service_map.nodes
                   for k in service_map.edges)
