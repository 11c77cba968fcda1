"""run.changes.MapKeeper: the service map kept current by the ChangeDesk from what its ticks
read (the Deployments and ReplicaSets of the tick, the watches' Services and ConfigMaps, the
error lines learnt), with a manual clock. The watches are an in-memory ChangeSource serving
snapshots as sources.changes_watch keeps them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from incident_detector.judge.change_diff import FieldValue, ObjectState
from incident_detector.judge.correlator import Rules
from incident_detector.model import Container, Deployment, EnvVar, PodTemplate, ReplicaSet, \
    Service
from incident_detector.store.changes import ChangeLog
from incident_detector.run.changes import ChangeDesk
from incident_detector.run.map_keeper import MAP_REFRESH
from incident_detector.run.live import LiveFeed
from incident_detector.store.records import Store
from incident_detector.store.service_map import ObservedLinks

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)


class Watches:
    def __init__(self) -> None:
        self.services = lambda namespace: tuple(
            Service(namespace, n, (("app", n),)) for n in ("web", "api", "db", "cache"))
        self.objects: dict[str, tuple[ObjectState, ...]] = {}

    async def refresh(self, namespace: str, *, now: datetime) -> tuple:
        return ()

    def states(self, kind: str, namespace: str) -> tuple[ObjectState, ...]:
        return self.objects.get(kind, ())

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def deployment(name: str, revision: int = 1) -> Deployment:
    return Deployment("shop", name, revision, uid=f"uid-{name}", pod_labels=(("app", name),))


def replicaset(name: str, revision: int = 1, *env: tuple[str, str],
               config_maps: tuple[str, ...] = ()) -> ReplicaSet:
    template = PodTemplate(containers=(Container("app", f"{name}:{revision}", env=tuple(
        EnvVar(k, v) for k, v in env)),), config_maps=frozenset(config_maps))
    return ReplicaSet("shop", f"{name}-{revision}", name, revision, NOW - timedelta(days=1),
                      template=template, uid=f"rs-{name}-{revision}",
                      deployment_uid=f"uid-{name}")


def desk_with(watches: Watches, store: Store | None = None) -> ChangeDesk:
    store = store if store is not None else Store(":memory:")
    return ChangeDesk(
        changes=ChangeLog(store.connection, retention=timedelta(days=1), max_rows=100),
        live=LiveFeed(), watcher=watches, kube=None, loki=None, rules=Rules(),
        window_seconds=600, rule_set=lambda: None, sample_lines=10,
        workload_of=lambda d: f"app-{d.name}", record_notice=lambda **_: True,
        is_notified=lambda _: False, links=ObservedLinks(store.connection))


async def _call(source: str, what: str, thunk: Any) -> Any:
    return await thunk()


def tick(desk: ChangeDesk, deployments, replicasets, now: datetime) -> None:
    asyncio.run(desk.observe("shop", deployments=deployments, selected=[],
                             replicasets=replicasets, now=now, call=_call))
    desk.map_keeper.update("shop", now=now)


def links(desk: ChangeDesk) -> dict[tuple[str, str], set[str]]:
    return {key: {e.kind for e in edge.evidence}
            for key, edge in desk.map_keeper.service_map.edges.items()}


def test_the_map_follows_rollouts_configmaps_and_error_lines():
    watches = Watches()
    config = ObjectState("ConfigMap", "shop", "api-config", fields={
        "data.CACHE_HOST": FieldValue("cache", b"1")})
    watches.objects["ConfigMap"] = (config,)
    desk = desk_with(watches)
    deployments = [deployment(n) for n in ("web", "api", "db", "cache")]
    replicasets = [replicaset("web", 1, ("API_URL", "http://api:8080")),
                   replicaset("api", 1, ("DB_HOST", "db"), config_maps=("api-config",)),
                   replicaset("db"), replicaset("cache")]
    tick(desk, deployments, replicasets, NOW)
    assert links(desk) == {("shop/web", "shop/api"): {"env", "service_selector"},
                           ("shop/api", "shop/db"): {"env", "service_selector"},
                           ("shop/api", "shop/cache"): {"configmap", "service_selector"}}
    # A quiet tick: the same map, not a new one.
    held = desk.map_keeper.service_map
    tick(desk, deployments, replicasets, NOW + timedelta(seconds=20))
    assert desk.map_keeper.service_map is held
    # web rolls out a template that names db instead of api.
    later = NOW + timedelta(seconds=40)
    rolled = [replace(deployments[0], revision=2), *deployments[1:]]
    tick(desk, rolled, [*replicasets, replicaset("web", 2, ("DB_URL", "http://db:5432"))], later)
    assert ("shop/web", "shop/api") not in links(desk)
    assert links(desk)[("shop/web", "shop/db")] == {"env", "service_selector"}
    # The ConfigMap's value now names db: the link to cache goes.
    watches.objects["ConfigMap"] = (replace(config, fields={
        "data.CACHE_HOST": FieldValue("db", b"2")}),)
    tick(desk, rolled, [*replicasets, replicaset("web", 2, ("DB_URL", "http://db:5432"))], later)
    assert ("shop/api", "shop/cache") not in links(desk)
    assert links(desk)[("shop/api", "shop/db")] == {"env", "configmap", "service_selector"}
    # cache's error lines (by its workload label) name api.
    desk.topology.learn_lines("shop", {"app-cache": ['level=error msg="call failed" host=api']})
    tick(desk, rolled, [*replicasets, replicaset("web", 2, ("DB_URL", "http://db:5432"))],
         later + timedelta(seconds=20))
    edge = desk.map_keeper.service_map.edges[("shop/cache", "shop/api")]
    assert {e.kind for e in edge.evidence} == {"error_line", "service_selector"}
    assert edge.last_seen == later + timedelta(seconds=20)


def test_configuration_is_read_again_after_the_refresh_interval():
    desk = desk_with(Watches())
    deployments = [deployment("web"), deployment("api")]
    replicasets = [replicaset("web", 1, ("API_URL", "http://api")), replicaset("api")]
    tick(desk, deployments, replicasets, NOW)
    tick(desk, deployments, replicasets, NOW + MAP_REFRESH - timedelta(seconds=1))
    assert desk.map_keeper.service_map.edges[("shop/web", "shop/api")].last_seen == NOW
    tick(desk, deployments, replicasets, NOW + MAP_REFRESH)
    assert desk.map_keeper.service_map.edges[("shop/web", "shop/api")].last_seen == \
        NOW + MAP_REFRESH


def test_a_workload_appearing_in_another_namespace_is_linked_at_the_next_tick():
    """Its Deployment and Service change the hosts' meaning: every namespace is read again."""
    desk = desk_with(Watches())
    shop = [deployment("web")]
    shop_sets = [replicaset("web", 1, ("API_URL", "http://api.billing:8080"))]
    tick(desk, shop, shop_sets, NOW)
    # Namespace billing is not known yet: "api.billing" may be a host under a domain "billing".
    assert links(desk) == {("shop/web", "external/api.billing"): {"env"}}
    later = NOW + timedelta(seconds=20)
    billing = [replace(deployment("api"), namespace="billing")]
    billing_sets = [replace(replicaset("api"), namespace="billing")]
    asyncio.run(desk.observe("billing", deployments=billing, selected=[],
                             replicasets=billing_sets, now=later, call=_call))
    tick(desk, shop, shop_sets, later)
    assert links(desk) == {("shop/web", "billing/api"): {"env", "service_selector"}}
    assert "external/api.billing" not in desk.map_keeper.service_map.nodes


def test_statefulsets_and_daemonsets_are_nodes_of_the_map():
    # api names Service db, which selects the pods of the StatefulSet postgres; the DaemonSet
    # agent's environment names web. Neither is a Deployment.
    watches = Watches()
    watches.objects["StatefulSet"] = (ObjectState(
        "StatefulSet", "shop", "postgres", pod_labels=(("app", "db"),),
        template=PodTemplate(containers=(Container("pg", "postgres:16"),))),)
    watches.objects["DaemonSet"] = (ObjectState(
        "DaemonSet", "shop", "agent", pod_labels=(("app", "agent"),),
        template=PodTemplate(containers=(Container("a", "agent:1", env=(
            EnvVar("COLLECTOR_URL", "http://web:8080"),)),))),)
    desk = desk_with(watches)
    deployments = [deployment(n) for n in ("web", "api")]
    replicasets = [replicaset("web", 1, ("API_URL", "http://api:8080")),
                   replicaset("api", 1, ("DB_HOST", "db"))]
    tick(desk, deployments, replicasets, NOW)
    service_map = desk.map_keeper.service_map
    assert {"shop/postgres", "shop/agent"} <= set(service_map.nodes)
    assert links(desk) == {("shop/web", "shop/api"): {"env", "service_selector"},
                           ("shop/api", "shop/postgres"): {"env", "service_selector"},
                           ("shop/agent", "shop/web"): {"env", "service_selector"}}
    # The StatefulSet goes: its node and its links with it.
    watches.objects["StatefulSet"] = ()
    tick(desk, deployments, replicasets, NOW + timedelta(seconds=20))
    assert "shop/postgres" not in desk.map_keeper.service_map.nodes
    assert ("shop/api", "shop/postgres") not in links(desk)


def test_what_error_lines_taught_survives_a_restart_on_the_same_store(store_target):
    # Configuration is read again from the watches after a restart; error lines are not: the
    # link they taught is read back from the store, with the time it was last seen.
    store = Store(store_target)
    deployments = [deployment("web"), deployment("api")]
    replicasets = [replicaset("web"), replicaset("api")]
    first = desk_with(Watches(), store)
    tick(first, deployments, replicasets, NOW)
    first.topology.learn_lines("shop", {"app-web": ['level=error msg="upstream failed" host=api']})
    tick(first, deployments, replicasets, NOW + timedelta(seconds=20))
    assert "error_line" in links(first)[("shop/web", "shop/api")]

    again = desk_with(Watches(), Store(store_target))
    tick(again, deployments, replicasets, NOW + timedelta(hours=1))
    edge = again.map_keeper.service_map.edges[("shop/web", "shop/api")]
    learnt = [e for e in edge.evidence if e.kind == "error_line"]
    assert learnt and learnt[0].seen_at == NOW + timedelta(seconds=20) and learnt[0].observed
    # A day later what was not heard again is gone, from the map and from the store.
    late = desk_with(Watches(), Store(store_target))
    tick(late, deployments, replicasets, NOW + timedelta(days=1, minutes=1))
    assert "error_line" not in links(late).get(("shop/web", "shop/api"), set())
    assert ObservedLinks(Store(store_target).connection).since(NOW) == []
