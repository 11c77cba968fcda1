"""judge.causality: callers and callees on the service map, the blast radius of a failing
workload and the causality tree of an incident. Plain asserts over small topologies (three
tiers, a diamond, a cycle, a host outside the cluster), hypothesis over any map."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge import causality, service_map as graph
from incident_detector.judge.causality import (
    Symptom,
    blast_radius,
    blast_names,
    callees,
    callers,
    chain,
    rose,
    symptom_labels,
)
from incident_detector.model import BlastEntry, Cause, Change, FieldChange

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


def make_map(*links: tuple[str, str] | tuple[str, str, str, str]) -> graph.ServiceMap:
    sightings = []
    for link in links:
        source, target, kind, detail = (*link, "env", f"{link[1]} by env")[:4] \
            if len(link) == 2 else link
        sightings.append(graph.Sighting(source, target, kind, detail))
    return graph.update(graph.ServiceMap(), "shop", now=NOW, workloads=[], observed=sightings)


THREE_TIER = make_map(("shop/frontend", "shop/checkout"), ("shop/checkout", "shop/payments"))
DIAMOND = make_map(("shop/frontend", "shop/checkout"), ("shop/frontend", "shop/catalog"),
                   ("shop/checkout", "shop/inventory"), ("shop/catalog", "shop/inventory"))
CYCLE = make_map(("shop/a", "shop/b"), ("shop/b", "shop/c"), ("shop/c", "shop/a"))
OUTSIDE = make_map(("external/shop.example.com", "shop/frontend", "ingress",
                    "Ingress web: shop.example.com/ -> frontend"),
                   ("shop/frontend", "shop/payments"),
                   ("shop/payments", "external/api.stripe.com", "env",
                    "STRIPE_URL=https://api.stripe.com"))


def test_callers_and_callees_of_three_tiers():
    assert callers(THREE_TIER, "shop/payments") == {
        "shop/checkout": ("shop/checkout", "shop/payments"),
        "shop/frontend": ("shop/frontend", "shop/checkout", "shop/payments")}
    assert callees(THREE_TIER, "shop/frontend") == {
        "shop/checkout": ("shop/frontend", "shop/checkout"),
        "shop/payments": ("shop/frontend", "shop/checkout", "shop/payments")}
    assert callers(THREE_TIER, "shop/payments", max_hops=1) == {
        "shop/checkout": ("shop/checkout", "shop/payments")}
    assert callers(THREE_TIER, "shop/frontend") == {}
    assert callers(THREE_TIER, "shop/nobody") == {}


def test_a_diamond_is_reached_once_by_the_shortest_path_first_by_name():
    assert callers(DIAMOND, "shop/inventory") == {
        "shop/catalog": ("shop/catalog", "shop/inventory"),
        "shop/checkout": ("shop/checkout", "shop/inventory"),
        "shop/frontend": ("shop/frontend", "shop/catalog", "shop/inventory")}


def test_a_cycle_ends():
    assert callers(CYCLE, "shop/a") == {"shop/c": ("shop/c", "shop/a"),
                                        "shop/b": ("shop/b", "shop/c", "shop/a")}
    assert callees(CYCLE, "shop/a") == {"shop/b": ("shop/a", "shop/b"),
                                        "shop/c": ("shop/a", "shop/b", "shop/c")}


def test_hosts_outside_the_cluster_are_never_callers_nor_on_the_way():
    assert callers(OUTSIDE, "shop/payments") == {
        "shop/frontend": ("shop/frontend", "shop/payments")}
    assert callees(OUTSIDE, "shop/frontend") == {
        "shop/payments": ("shop/frontend", "shop/payments")}


def test_rose_is_a_clear_rise_and_unknown_is_no():
    assert rose(0.0, 1.0)
    assert rose(1.0, 2.0)
    assert not rose(0.0, 0.5)
    assert not rose(2.0, 3.5)
    assert not rose(None, 30.0)
    assert not rose(1.0, None)


def test_the_blast_radius_of_three_tiers_nearest_first():
    rates = {"shop/checkout": (0.0, 6.0), "shop/frontend": (0.5, 4.0),
             "shop/payments": (0.0, 15.0)}
    blast = blast_radius(THREE_TIER, "shop/payments", rates)
    assert blast == (
        BlastEntry("shop/checkout", ("shop/checkout", "shop/payments"), 0.0, 6.0),
        BlastEntry("shop/frontend", ("shop/frontend", "shop/checkout", "shop/payments"),
                   0.5, 4.0))
    assert blast_names(blast, namespace="shop") == ["checkout", "frontend"]
    assert blast_names(blast, namespace="web") == ["shop/checkout", "shop/frontend"]


def test_callers_that_did_not_rise_or_are_not_known_are_left_out():
    rates = {"shop/checkout": (2.0, 2.5), "shop/frontend": (None, 9.0)}
    assert blast_radius(THREE_TIER, "shop/payments", rates) == ()
    # frontend rose though checkout, between them, did not: it is listed by its path.
    rates = {"shop/checkout": (2.0, 2.5), "shop/frontend": (0.0, 9.0)}
    (entry,) = blast_radius(THREE_TIER, "shop/payments", rates)
    assert entry.workload == "shop/frontend" and len(entry.path) == 3


def test_the_blast_radius_of_a_diamond_and_its_limit():
    rates = {w: (0.0, 3.0) for w in ("shop/checkout", "shop/catalog", "shop/frontend")}
    blast = blast_radius(DIAMOND, "shop/inventory", rates)
    assert [e.workload for e in blast] == ["shop/catalog", "shop/checkout", "shop/frontend"]
    assert len(blast_radius(DIAMOND, "shop/inventory", rates, limit=2)) == 2


def _rollout(name: str, revision: int = 2, namespace: str = "shop") -> Change:
    return Change(namespace=namespace, kind="Deployment", name=name, action="updated",
                  at=NOW - timedelta(minutes=1), observed_at=NOW - timedelta(minutes=1),
                  fields=(FieldChange("image app", "a:1", "a:2"),), revision=revision,
                  previous_revision=revision - 1)


def _edges(tree) -> dict[tuple[str, str], float]:
    return {(e.source, e.target): e.score for e in tree.edges}


def test_a_rollout_incident_s_tree_reaches_its_symptoms_and_its_callers():
    cause = Cause(_rollout("payments"), 0.7, reasons=("+0.25 its own rollout revision 2",))
    blast = blast_radius(THREE_TIER, "shop/payments",
                         {"shop/checkout": (0.0, 6.0), "shop/frontend": (0.0, 3.0)})
    tree = causality.causality(
        "shop/payments", [cause], service_map=THREE_TIER, blast=blast,
        symptoms=[Symptom("signal", "error_spike", "error spike: 2.5/min",
                          ("5 error lines in 2m",)),
                  Symptom("error_group", "fp1", "error group: charge failed <_>",
                          ("5 lines, new since the rollout",), 1.0)])
    assert tree.roots == ("change:Deployment/shop/payments",)
    edges = _edges(tree)
    assert edges[("change:Deployment/shop/payments", "workload:shop/payments")] == 0.7
    assert edges[("workload:shop/payments", "signal:error_spike")] == 1.0
    assert edges[("workload:shop/payments", "error_group:fp1")] == 1.0
    # The failure travels from the callee to its callers.
    assert edges[("workload:shop/payments", "workload:shop/checkout")] == 0.8
    assert edges[("workload:shop/checkout", "workload:shop/frontend")] == 0.8
    assert ("workload:shop/frontend", "signal:error_spike@shop/frontend") in edges
    hop = next(e for e in tree.edges if e.target == "workload:shop/checkout")
    assert hop.evidence == ("shop/checkout calls shop/payments", "env: shop/payments by env")
    assert chain(tree) == ("Deployment shop/payments rolled out revision 2", "shop/payments")
    assert symptom_labels(tree) == ("error spike: 2.5/min", "error group: charge failed <_>")


def test_a_caller_s_tree_goes_from_the_callee_s_rollout_along_the_calls():
    cause = Cause(_rollout("payments"), 0.8, reasons=("+0.10 it calls checkout, which calls "
                                                      "payments (service map, 2 hops)",))
    tree = causality.causality("shop/frontend", [cause], service_map=THREE_TIER,
                               symptoms=[Symptom("alert", "HighErrorRate",
                                                 "alert HighErrorRate")])
    assert chain(tree) == ("Deployment shop/payments rolled out revision 2", "shop/payments",
                           "shop/checkout", "shop/frontend")
    assert _edges(tree)[("workload:shop/frontend", "alert:HighErrorRate")] == 1.0


def test_without_a_chain_on_the_map_the_cause_links_straight_to_the_subject():
    cause = Cause(_rollout("payments"), 0.9, reasons=("+0.15 it calls payments",))
    config = Change(namespace="shop", kind="ConfigMap", name="flags", action="updated",
                    at=NOW, observed_at=NOW)
    tree = causality.causality("shop/checkout", [cause, Cause(config, 0.3)])
    assert tree.roots == ("change:Deployment/shop/payments", "change:ConfigMap/shop/flags")
    edges = _edges(tree)
    assert edges[("workload:shop/payments", "workload:shop/checkout")] == 0.9
    assert edges[("change:ConfigMap/shop/flags", "workload:shop/checkout")] == 0.3
    assert chain(tree) == ("Deployment shop/payments rolled out revision 2", "shop/payments",
                           "shop/checkout")
    assert chain(causality.causality("shop/checkout", [])) == ()


def test_a_cycle_does_not_loop_the_tree():
    cause = Cause(_rollout("c"), 0.5)
    blast = blast_radius(CYCLE, "shop/c", {"shop/a": (0.0, 5.0), "shop/b": (0.0, 5.0)})
    tree = causality.causality("shop/c", [cause], service_map=CYCLE, blast=blast)
    assert len(tree.edges) == len(set(_edges(tree)))
    assert chain(tree) == ("Deployment shop/c rolled out revision 2", "shop/c")


# --- any map at all ------------------------------------------------------------------------

_node = st.sampled_from([f"shop/w{i}" for i in range(8)] + ["external/x.com", "other/w1"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_node, _node, st.sampled_from(graph.EVIDENCE_KINDS)), max_size=40),
       _node, st.dictionaries(_node, st.tuples(st.one_of(st.none(), st.floats(0, 50)),
                                              st.one_of(st.none(), st.floats(0, 50)))),
       st.integers(0, 6))
def test_any_map_gives_bounded_trees_and_paths_that_are_calls(links, failing, rates, hops):
    service_map = graph.update(graph.ServiceMap(), "shop", now=NOW, workloads=[], observed=[
        graph.Sighting(a, b, kind, "d") for a, b, kind in links if a != b])
    for caller, path in callers(service_map, failing, max_hops=hops).items():
        assert path[0] == caller and path[-1] == failing and len(path) - 1 <= hops
        assert all((a, b) in service_map.edges for a, b in zip(path, path[1:]))
        assert len(set(path)) == len(path)
    blast = blast_radius(service_map, failing, rates, max_hops=hops)
    assert len(blast) <= causality.MAX_BLAST
    assert all(rose(e.before_per_minute, e.after_per_minute) for e in blast)
    causes = [Cause(_rollout(n.partition("/")[2], namespace=n.partition("/")[0]), 0.5)
              for n in sorted({a for a, _, _ in links})[:3] if not n.startswith("external")]
    tree = causality.causality(failing, causes, service_map=service_map, blast=blast,
                               max_hops=hops)
    ids = {n.id for n in tree.nodes}
    assert len(tree.nodes) <= causality.MAX_NODES and len(tree.edges) <= causality.MAX_EDGES
    assert all(e.source in ids and e.target in ids for e in tree.edges)
    assert all(0.0 <= e.score <= 1.0 for e in tree.edges)
    assert set(tree.roots) <= ids
    chain(tree)


def test_the_nearest_failing_callee_and_the_chain_to_it():
    failing = {"shop/payments": "incident 1", "shop/checkout": "incident 2"}
    assert causality.nearest_failing(THREE_TIER, "shop/frontend", failing) == (
        "shop/checkout", ("shop/frontend", "shop/checkout"))
    assert causality.nearest_failing(THREE_TIER, "shop/frontend", {"shop/payments": 1}) == (
        "shop/payments", ("shop/frontend", "shop/checkout", "shop/payments"))
    assert causality.nearest_failing(THREE_TIER, "shop/payments", failing) is None
    assert causality.nearest_failing(THREE_TIER, "shop/frontend", {}) is None
