"""An incident's identity is the Deployment *object*: one deleted and created again under the same
name (helm uninstall && install, kubectl delete + apply) is judged anew; an incident stored before
uids were recorded is not raised again; `kubectl describe deployment` shows the incident's Event.

The real detector, in-process on a simulated clock, against the loopback apiserver and Loki."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import httpx

from incident_detector.sources import kube
from incident_detector.main import build_detector
from incident_detector.sim.fakes import KubeApiFake, LokiFake
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer
from incident_detector.sim.world import World
from incident_detector.store.records import Store

SCENARIO = load_scenario(Path(__file__).parent / "scenarios" / "bad-rollout-sharp-spike.yaml")
TICK = timedelta(seconds=20)


def describe_events(kube_url: str, deployment: dict) -> list[dict]:
    """The Events `kubectl describe deployment` shows: core/v1 Events selected by the involved
    object's kind, name, namespace and uid."""
    metadata = deployment["metadata"]
    selector = ",".join([
        "involvedObject.kind=Deployment", f"involvedObject.name={metadata['name']}",
        f"involvedObject.namespace={metadata['namespace']}", f"involvedObject.uid={metadata['uid']}",
    ])
    answer = httpx.get(f"{kube_url}/api/v1/namespaces/{metadata['namespace']}/events",
                       params={"fieldSelector": selector})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def current_deployment(world: World, clock: ManualClock) -> dict:
    deployment = world.deployment(SCENARIO.namespace, clock.now)
    assert deployment is not None
    return deployment


def test_a_deployment_created_again_is_judged_again_and_describe_shows_each_incident(tmp_path):
    clock = ManualClock(SCENARIO_EPOCH)
    first = World(SCENARIO, t0=SCENARIO_EPOCH)
    kube_fake, loki_fake = KubeApiFake(first, clock), LokiFake(first, clock)
    out = io.StringIO()
    store_path = tmp_path / "state.sqlite3"
    deployments: list[dict] = []

    async def run() -> None:
        with LocalServer(kube_fake) as k, LocalServer(loki_fake) as lk:
            settings = scenario_settings(SCENARIO, loki_url=lk.url, slack_url=None)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(store_path)) as detector:
                for _ in range(15):
                    await detector.tick()
                    await detector.outbox.deliver_due()
                    clock.now += TICK
                deployments.append(current_deployment(first, clock))
                assert await asyncio.to_thread(describe_events, k.url, deployments[0])
                # Deleted and created again an hour later: same name, same revisions, new uids.
                again = World(SCENARIO, t0=clock.now + timedelta(hours=1), incarnation="again")
                kube_fake.world = loki_fake.world = again
                kube_fake.events.clear()  # the old object's Events went with it
                clock.now = again.t0
                for _ in range(15):
                    await detector.tick()
                    await detector.outbox.deliver_due()
                    clock.now += TICK
                deployments.append(current_deployment(again, clock))
                for deployment in deployments:
                    shown = await asyncio.to_thread(describe_events, k.url, deployment)
                    deployments_shown.append([e["reason"] for e in shown])

    deployments_shown: list[list[str]] = []
    asyncio.run(run())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    uids = [d["metadata"]["uid"] for d in deployments]
    assert uids[0] != uids[1]
    assert [(r["revision"], r["deployment_uid"]) for r in records] == [(2, uids[0]), (2, uids[1])]
    assert all(r["replicaset_uid"] for r in records)
    # `kubectl describe` on the new object shows its own incident, not the old one's.
    assert deployments_shown == [[], ["RolloutRegression"]]
    assert Store(store_path).count_incidents() == 2


def first_schema_store(path: Path, *, replicaset: str, detected_at: str) -> None:
    """A state file as the first schema wrote it: incidents keyed without uids."""
    db = sqlite3.connect(path)
    db.executescript(f"""
        CREATE TABLE incidents (namespace TEXT NOT NULL, deployment TEXT NOT NULL,
            revision INTEGER NOT NULL, replicaset TEXT NOT NULL, detected_at TEXT NOT NULL,
            origin TEXT NOT NULL DEFAULT 'detected', record TEXT NOT NULL,
            PRIMARY KEY (namespace, deployment, revision));
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL,
            deployment TEXT NOT NULL, revision INTEGER NOT NULL, channel TEXT NOT NULL,
            payload TEXT NOT NULL, created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL, last_error TEXT, delivered_at TEXT, gave_up_at TEXT,
            UNIQUE (namespace, deployment, revision, channel));
        INSERT INTO incidents VALUES ('{SCENARIO.namespace}', '{SCENARIO.deployment}', 2,
            '{replicaset}', '{detected_at}', 'detected', '{{"summary": "from before"}}');
    """)
    db.close()


def test_an_incident_stored_by_the_first_schema_is_not_raised_again(tmp_path):
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(SCENARIO, t0=SCENARIO_EPOCH)
    path = tmp_path / "state.sqlite3"
    # Detected by the previous version at t=90, after revision 2's ReplicaSet was created (t=60).
    detected = (SCENARIO_EPOCH + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    first_schema_store(path, replicaset=world.replicaset_name(2), detected_at=detected)
    out = io.StringIO()

    async def run() -> None:
        with LocalServer(KubeApiFake(world, clock)) as k, LocalServer(LokiFake(world, clock)) as lk:
            settings = scenario_settings(SCENARIO, loki_url=lk.url, slack_url=None)
            clock.now = SCENARIO_EPOCH + timedelta(seconds=100)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(path)) as detector:
                for _ in range(10):
                    await detector.tick()
                    clock.now += TICK

    asyncio.run(run())
    assert out.getvalue() == ""
    store = Store(path)
    uid = World(SCENARIO, t0=SCENARIO_EPOCH).deployment(SCENARIO.namespace, clock.now)["metadata"]["uid"]
    assert store.known_keys() == {(SCENARIO.namespace, SCENARIO.deployment, 2, uid)}
    assert not store.has_legacy
