"""Followed watches (``WatchedList.follow``, ``KubeClient.follow``): long watches read event by
event, so a change is known within moments and a tick's refresh asks the server nothing.

Against the fake apiserver of the recorded bodies, and the simulated apiserver whose long watches
stream the world's changes as its clock moves. No test waits on a wall-clock margin: each waits
for the event it expects, with a ceiling far above what it takes.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from apiserver import (
    NAMESPACE,
    REPLICASETS_PATH,
    FakeApiServer,
    expired_event,
    is_watch,
    recorded_items,
    status_response,
    watch_event,
)
from incident_detector.errors import SourceError
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, simulated_cluster
from incident_detector.sim.scenario import load_scenario
from incident_detector.sources.kube import KubeClient, api_client_for

CEILING = 30.0  # seconds; what each wait takes is a small fraction of a second
SCENARIOS = Path(__file__).parent / "scenarios"


class Events:
    """What the followers reported, and a way to wait for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def __call__(self, namespace: str, resource: str) -> None:
        with self._changed:
            self.seen.append((namespace, resource))
            self._changed.notify_all()

    def wait_for(self, predicate, what: str) -> None:
        """Until ``predicate()`` holds: looked at on each event, and every 50 ms for what no
        event announces (a request the server saw)."""
        deadline = time.monotonic() + CEILING
        with self._changed:
            while not predicate():
                assert time.monotonic() < deadline, f"no {what}"
                self._changed.wait(0.05)


def new_replicaset(name: str, version: str) -> dict:
    item = copy.deepcopy(recorded_items("replicasets_list.json")[0])
    item["metadata"].update(name=name, resourceVersion=version, uid=f"uid-{name}")
    item["metadata"]["labels"]["pod-template-hash"] = name.rsplit("-", 1)[1]
    return item


@pytest.fixture
def apiserver():
    with FakeApiServer() as server:
        yield server


def test_a_followed_list_takes_the_watch_events_and_refreshes_without_a_request(apiserver):
    apiserver.serve_watch(REPLICASETS_PATH,
                          watch_event("ADDED", new_replicaset("payments-api-5d9c8f7b6a", "240")))
    client = KubeClient(api=api_client_for(apiserver.url), timeout=5.0)
    events = Events()
    client.follow(NAMESPACE, on_event=events)
    try:
        # Both followers have listed (on a busy machine the Deployments' list may come last),
        # and the ReplicaSets' watch brought its event.
        events.wait_for(lambda: events.seen.count((NAMESPACE, "replicasets")) >= 2
                        and (NAMESPACE, "deployments") in events.seen,
                        "event after the lists")
        asked = len(apiserver.requests)
        names = [rs.name for rs in asyncio.run(client.list_replicasets(NAMESPACE))]
        assert "payments-api-5d9c8f7b6a" in names
        # The refresh answered from what the follower keeps: the requests made in the meantime
        # are the followers' own watches, none a list.
        later = apiserver.requests[asked:]
        assert all(is_watch(request) for request in later)
        # Each watch is a long one, read as it streams, with bookmarks.
        watch = next(r for r in apiserver.requests if is_watch(r) and r.path == REPLICASETS_PATH)
        assert watch.param("timeoutSeconds") == "240"
        assert watch.param("allowWatchBookmarks") == "true"
    finally:
        client.stop_following()
    assert client.following == 0


def test_an_expired_watch_is_listed_again(apiserver):
    apiserver.serve_watch(REPLICASETS_PATH, expired_event())
    client = KubeClient(api=api_client_for(apiserver.url), timeout=5.0)
    events = Events()
    client.follow(NAMESPACE, on_event=events)
    try:
        def lists() -> int:
            return sum(1 for r in apiserver.requests
                       if r.path == REPLICASETS_PATH and not is_watch(r))

        events.wait_for(lambda: lists() >= 2, "second list")
        assert lists() >= 2
    finally:
        client.stop_following()


def test_a_failing_follower_leaves_the_refresh_to_ask_the_server(apiserver):
    client = KubeClient(api=api_client_for(apiserver.url), timeout=5.0)
    events = Events()
    # Lists work, watches fail: the follower backs off and the refresh fails as the server does.
    failing = apiserver.serve_watch(REPLICASETS_PATH)
    failing.status = 500
    failing.body = status_response(500, "InternalError", "etcd is unhappy").body
    client.follow(NAMESPACE, on_event=events)
    try:
        events.wait_for(lambda: sum(1 for r in apiserver.requests if is_watch(r)) >= 2,
                        "failed watch")
        watched = client._replicasets[NAMESPACE]
        events.wait_for(lambda: not watched.followed, "follower marked unhealthy")
        with pytest.raises(SourceError) as caught:
            asyncio.run(client.list_replicasets(NAMESPACE))
        assert caught.value.status == 500
    finally:
        client.stop_following()


def test_the_simulated_apiserver_streams_a_rollout_as_the_clock_moves_and_stops_at_once():
    scenario = load_scenario(SCENARIOS / "bad-rollout-sharp-spike.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    with simulated_cluster(scenario, clock=clock) as cluster:
        client = KubeClient(api=api_client_for(cluster.kube.url), timeout=5.0)
        events = Events()
        client.follow(scenario.namespace, on_event=events)
        try:
            events.wait_for(lambda: len(events.seen) >= 2, "first lists")
            before = [rs.revision for rs in asyncio.run(client.list_replicasets(
                scenario.namespace))]
            assert before == [1]
            seen = len(events.seen)
            clock.now += timedelta(seconds=scenario.revisions[-1].at + 1)
            events.wait_for(lambda: (scenario.namespace, "replicasets") in events.seen[seen:],
                            "the new ReplicaSet")
            after = sorted(rs.revision for rs in asyncio.run(client.list_replicasets(
                scenario.namespace)))
            assert after == [1, 2]
            # Each list is followed by one held watch at a time, not one per refresh.
            watches = cluster.kube.handler.watches
            assert all(count <= 2 for count in watches.values()), watches
        finally:
            stopping = threading.Thread(target=client.stop_following)
            stopping.start()
            stopping.join(timeout=CEILING)
            assert not stopping.is_alive()
        assert client.following == 0


def test_only_changes_that_can_change_a_verdict_wake_the_detector():
    from dataclasses import replace

    from incident_detector.model import PodProblem
    from incident_detector.sources.kube import WAKES
    from incident_detector.sources.kube_objects import parse_deployment, parse_pod, parse_replicaset

    deployment = parse_deployment(recorded_items("deployments_list.json")[0])
    replicaset = parse_replicaset(recorded_items("replicasets_list.json")[0])
    pod = replace(parse_pod(recorded_items("pods_list.json")[0]), problems=())
    deployments, replicasets, pods = WAKES["deployments"], WAKES["replicasets"], WAKES["pods"]

    assert deployments(None, deployment) and deployments(deployment, None)
    assert deployments(deployment, replace(deployment, revision=(deployment.revision or 0) + 1))
    assert deployments(deployment, replace(deployment, progress_deadline_exceeded=True))
    assert deployments(deployment, replace(deployment, uid="another-object"))
    assert not deployments(deployment, replace(deployment, replicas=7))

    assert replicasets(None, replicaset)
    assert replicasets(replicaset, replace(replicaset, revision=9))  # made current again
    assert not replicasets(replicaset, replace(replicaset, ready_replicas=3))
    assert not replicasets(replicaset, None)

    crashing = replace(pod, problems=(PodProblem.CRASH_LOOP,))
    assert pods(pod, crashing) and pods(None, crashing)
    assert pods(crashing, replace(pod, problems=(PodProblem.CRASH_LOOP, PodProblem.OOM_KILLED)))
    assert not pods(crashing, crashing) and not pods(None, pod) and not pods(crashing, pod)
    assert not pods(pod, None)
