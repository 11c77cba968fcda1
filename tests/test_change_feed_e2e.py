"""The change timeline's outputs from the real process: a ConfigMap edited while the daemon runs
is posted as a CloudEvent to CHANGE_WEBHOOK_URL (with its bearer token) and streamed to a gRPC
WatchChanges subscriber, and the process still stops cleanly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness import start_daemon, stop
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World

SCENARIO = Path(__file__).parent / "scenarios" / "configmap-change.yaml"
TOKEN = "change-feed-token-0123456789"


class EventSink:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return Response(202, b"")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_change_while_running_is_a_cloudevent_and_a_grpc_message(tmp_path):
    grpc = pytest.importorskip("grpc")
    from incident_detector.feed import changes_pb2, changes_pb2_grpc

    scenario = load_scenario(SCENARIO)
    change_at = next(c.at for cm in scenario.config_maps for c in cm.changes)
    # The world runs in wall time from 4 s before the ConfigMap's edit, but stops 1 s before it
    # until the daemon has looked once: however slow its start, the edit comes while it runs.
    t0 = datetime.now(timezone.utc) - timedelta(seconds=change_at - 4)
    world = World(scenario, t0=t0)
    held = {"until": t0 + timedelta(seconds=change_at - 1)}

    def clock() -> datetime:
        now = datetime.now(timezone.utc)
        return min(now, held["until"]) if held["until"] is not None else now

    events, grpc_port = EventSink(), free_port()
    with LocalServer(KubeApiFake(world, clock)) as kube, \
            LocalServer(LokiFake(world, clock)) as loki, LocalServer(SlackSink()) as slack, \
            LocalServer(events) as sink:
        cluster = {"kube": kube, "loki": loki, "slack": slack, "tmp": tmp_path}
        daemon = start_daemon(cluster, extra_env={
            "NAMESPACE": scenario.namespace, "TARGET_DEPLOYMENT": scenario.deployment,
            "LOKI_LABEL_APP": scenario.workload,
            "CHANGE_WEBHOOK_URL": sink.url + "/changes", "CHANGE_WEBHOOK_TOKEN": TOKEN,
            "CHANGE_GRPC_PORT": str(grpc_port)})
        try:
            daemon.wait_for(lambda: daemon.ticks() >= 1)
            held["until"] = None  # the edit happens now
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = changes_pb2_grpc.ChangeFeedStub(channel)
                # From the first change the store holds: whether the edit is recorded before
                # or after the subscription begins, it is the first ConfigMap message.
                stream = stub.WatchChanges(
                    changes_pb2.WatchChangesRequest(kind="configmap", after_id=0), timeout=60)
                message = next(iter(stream))
                stream.cancel()
            daemon.wait_for(lambda: events.requests)
        finally:
            code = stop(daemon)
    assert code == 0
    assert (message.kind, message.name, message.manager) == ("ConfigMap", "orders-config",
                                                             "kubectl-patch")
    [request] = [r for r in events.requests if r.json()["subject"] == "ConfigMap/orders-config"]
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    event = request.json()
    assert event["specversion"] == "1.0" and event["data"]["id"] == message.id
    assert {"path": "data.TIMEOUT_MS", "before": "5000", "after": "50", "hidden": False} \
        in event["data"]["fields"]
    assert TOKEN not in daemon.out_path.read_text()
    assert json.dumps(event)  # a JSON document, as posted
