"""The detector in-process, on a simulated clock, against loopback fakes: several namespaces and
Deployments at a constant cost per tick, and two replicas that never notify twice."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from incident_detector.sources import kube
from incident_detector.main import build_detector
from incident_detector.sim.fakes import KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.replay import SCENARIO_EPOCH, ManualClock, scenario_settings
from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response
from incident_detector.sim.world import World
from incident_detector.store.records import Store

SCENARIOS = Path(__file__).parent / "scenarios"
NAMESPACE_IN_PATH = re.compile(r"/namespaces/([^/]+)/")
NAMESPACE_IN_QUERY = re.compile(r'namespace="([^"]+)"')


class ByNamespace:
    """Routes each request to the fake of the namespace it names (path or LogQL selector)."""

    def __init__(self, fakes: dict[str, object], pattern: re.Pattern, *, in_query: bool) -> None:
        self.fakes, self.pattern, self.in_query = fakes, pattern, in_query
        self.requests: list[tuple[str, str]] = []

    def __call__(self, request: Request) -> Response:
        text = request.param("query", "") if self.in_query else request.path
        match = self.pattern.search(text or "")
        namespace = match.group(1) if match else next(iter(self.fakes))
        suffix = "?watch" if request.param("watch") else "?time" if request.param("time") else ""
        self.requests.append((namespace, request.path + suffix))
        return self.fakes[namespace](request)


def scenario_in(name: str, namespace: str):
    scenario = load_scenario(SCENARIOS / name)
    return scenario.model_copy(update={"namespace": namespace})


def test_every_deployment_of_several_namespaces_at_a_constant_cost_per_tick():
    clock = ManualClock(SCENARIO_EPOCH)
    worlds = {"shop": World(scenario_in("bad-rollout-sharp-spike.yaml", "shop"), t0=SCENARIO_EPOCH),
              "pay": World(scenario_in("crash-loop-without-error-logs.yaml", "pay"), t0=SCENARIO_EPOCH),
              "quiet": World(scenario_in("clean-rollout.yaml", "quiet"), t0=SCENARIO_EPOCH)}
    kube_router = ByNamespace({ns: KubeApiFake(w, clock) for ns, w in worlds.items()},
                              NAMESPACE_IN_PATH, in_query=False)
    loki_router = ByNamespace({ns: LokiFake(w, clock) for ns, w in worlds.items()},
                              NAMESPACE_IN_QUERY, in_query=True)
    sink = SlackSink()
    out = io.StringIO()
    seen_count_queries: set[str] = set()

    async def run() -> None:
        with LocalServer(kube_router) as k, LocalServer(loki_router) as lk, LocalServer(sink) as sl:
            settings = scenario_settings(
                load_scenario(SCENARIOS / "clean-rollout.yaml"), loki_url=lk.url,
                slack_url=sl.url + "/services/T/B/X", namespace="shop,pay,quiet",
                target_deployment="*")
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(":memory:")) as detector:
                for _ in range(30):
                    kube_router.requests.clear()
                    loki_router.requests.clear()
                    await detector.tick()
                    await detector.outbox.deliver_due()
                    per_namespace_kube = {}
                    for ns, path in kube_router.requests:
                        if "/events" in path:
                            continue  # events: read back once, then one create per incident
                        per_namespace_kube.setdefault(ns, []).append(path)
                    for ns, paths in per_namespace_kube.items():
                        # one Deployment request, one ReplicaSet request, at most one pod list
                        assert sum("/deployments" in p for p in paths) == 1, paths
                        assert sum("/replicasets" in p for p in paths) == 1, paths
                        assert sum("/pods" in p for p in paths) <= 1, paths
                    # One metric query per namespace (counts, baselines, the change timeline's,
                    # the read's legs) and one log query (triage, signatures, samples).
                    metric = [ns for ns, path in loki_router.requests
                              if path.startswith("/loki/api/v1/query?")]
                    logs = [ns for ns, path in loki_router.requests
                            if path == "/loki/api/v1/query_range"]
                    assert all(metric.count(ns) == 1 for ns in metric), metric
                    assert all(logs.count(ns) == 1 for ns in logs), logs
                    seen_count_queries.update(metric)
                    clock.now += timedelta(seconds=20)

    asyncio.run(run())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted((r["namespace"], r["revision"], r["signals"][0]) for r in records) == \
        [("pay", 2, "pod_health"), ("shop", 2, "error_spike")]
    assert len(sink.messages) == 2
    assert seen_count_queries == {"shop", "pay", "quiet"}  # each namespace is read every tick


def test_a_custom_label_scheme_maps_deployments_to_log_streams():
    scenario = load_scenario(SCENARIOS / "custom-loki-label-keys.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    out = io.StringIO()
    pod_label = sorted(scenario.pod_labels)[0]

    async def run() -> None:
        with LocalServer(KubeApiFake(world, clock)) as k, LocalServer(LokiFake(world, clock)) as lk:
            settings = scenario_settings(scenario, loki_url=lk.url, slack_url=None,
                                         target_deployment="*", workload_pod_label=pod_label)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(":memory:")) as detector:
                for _ in range(int(scenario.duration // 20) + 1):
                    await detector.tick()
                    clock.now += timedelta(seconds=20)

    asyncio.run(run())
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["revision"] for r in records] == [e.revision for e in scenario.expect.incidents]


def test_two_replicas_one_notifies_and_the_standby_takes_over_without_repeating():
    scenario = load_scenario(SCENARIOS / "second-bad-revision-after-incident.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    kube_fake = KubeApiFake(world, clock)
    sink = SlackSink()
    outs = {"a": io.StringIO(), "b": io.StringIO()}
    roles: list[tuple[float, str, str]] = []
    takeover: dict[str, float] = {}

    async def run() -> None:
        with LocalServer(kube_fake) as k, LocalServer(LokiFake(world, clock)) as lk, \
                LocalServer(sink) as sl:
            def settings_for(name: str):
                return scenario_settings(scenario, loki_url=lk.url, slack_url=sl.url + "/services/x",
                                         leader_election=True, pod_name=f"detector-{name}",
                                         lease_duration_seconds=15)
            async with build_detector(settings=settings_for("a"), kube_api=kube.api_client_for(k.url),
                                      stdout=outs["a"], clock=clock, store=Store(":memory:")) as a, \
                    build_detector(settings=settings_for("b"), kube_api=kube.api_client_for(k.url),
                                   stdout=outs["b"], clock=clock, store=Store(":memory:")) as b:
                alive = {"a": a, "b": b}
                step = timedelta(seconds=5)  # the electors' renew interval
                t = 0.0
                while t <= scenario.duration:
                    for name, detector in alive.items():
                        await detector.leadership.try_acquire_or_renew()
                        roles.append((t, name, "leader" if detector.is_leader() else "standby"))
                    if t % 20 == 0:
                        for detector in alive.values():
                            await detector.tick()
                            await detector.outbox.deliver_due()
                    # The leader dies right after the first incident went out.
                    if "a" in alive and len(sink.messages) == 1 and a.is_leader():
                        del alive["a"]
                        takeover["died"] = t
                    if "died" in takeover and "at" not in takeover and b.is_leader():
                        takeover["at"] = t
                    clock.now += step
                    t += 5

    asyncio.run(run())
    # At every moment at most one leader.
    by_time: dict[float, int] = {}
    for t, _, role in roles:
        by_time[t] = by_time.get(t, 0) + (role == "leader")
    assert max(by_time.values()) == 1
    # The standby took over within the lease duration plus one renew interval.
    assert takeover["at"] - takeover["died"] <= 15 + 5
    # Each bad revision notified exactly once across both replicas.
    revisions = sorted(json.loads(line)["revision"]
                       for out in outs.values() for line in out.getvalue().splitlines())
    assert revisions == [2, 3]
    assert len(sink.messages) == 2


@pytest.mark.parametrize("memory", ["events", "shared_store"])
def test_a_standby_that_took_over_knows_which_revision_was_bad(memory, tmp_path):
    """Revision 2 is bad and notified by replica a, which dies; b takes over. Revision 4 breaks
    after a good fix: b must leave revision 2's errors out of its baseline, knowing from what
    was persisted (the Events it reads back, or the shared store), not from a's memory."""
    scenario = load_scenario(SCENARIOS / "bad-revision-after-a-good-fix.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    sink = SlackSink()
    outs = {"a": io.StringIO(), "b": io.StringIO()}
    died: list[float] = []

    def store_for(name: str) -> Store:
        return Store(tmp_path / "state.db") if memory == "shared_store" else Store(":memory:")

    async def run() -> None:
        with LocalServer(KubeApiFake(world, clock)) as k, LocalServer(LokiFake(world, clock)) as lk, \
                LocalServer(sink) as sl:
            def settings_for(name: str):
                return scenario_settings(scenario, loki_url=lk.url, slack_url=sl.url + "/services/x",
                                         leader_election=True, pod_name=f"detector-{name}",
                                         lease_duration_seconds=15)
            async with build_detector(settings=settings_for("a"), kube_api=kube.api_client_for(k.url),
                                      stdout=outs["a"], clock=clock, store=store_for("a")) as a, \
                    build_detector(settings=settings_for("b"), kube_api=kube.api_client_for(k.url),
                                   stdout=outs["b"], clock=clock, store=store_for("b")) as b:
                alive = {"a": a, "b": b}
                t = 0.0
                while t <= scenario.duration:
                    for detector in alive.values():
                        await detector.leadership.try_acquire_or_renew()
                    if t % 20 == 0:
                        for detector in alive.values():
                            await detector.tick()
                            await detector.outbox.deliver_due()
                    if "a" in alive and len(sink.messages) == 1 and a.is_leader():
                        del alive["a"]  # killed: its process memory is gone with it
                        died.append(t)
                    clock.now += timedelta(seconds=5)
                    t += 5

    asyncio.run(run())
    assert died and died[0] < 300  # a died right after revision 2's incident, before the fix
    by_replica = {name: [json.loads(line)["revision"] for line in out.getvalue().splitlines()]
                  for name, out in outs.items()}
    assert by_replica == {"a": [2], "b": [4]}
    [record] = [json.loads(line) for line in outs["b"].getvalue().splitlines()]
    assert record["evidence"]["baseline_per_minute"] == 0


class FailingEventReads:
    """The apiserver fake, but the first ``failures`` Event lists after ``armed`` answer 503."""

    def __init__(self, fake, failures: int) -> None:
        self.fake, self.failures, self.armed = fake, failures, False

    def __call__(self, request: Request) -> Response:
        if self.armed and self.failures and request.method == "GET" and \
                request.path.endswith("/events"):
            self.failures -= 1
            return Response(503, {"kind": "Status", "code": 503, "message": "unavailable"})
        return self.fake(request)


def test_a_detector_started_during_a_rollout_reads_back_what_was_bad_before_its_baseline():
    """A fresh process (its store empty) starts right as revision 4 rolls out, and its first
    read of the Events fails: it takes revision 4's baseline only once it learnt from them that
    revision 2 was bad."""
    scenario = load_scenario(SCENARIOS / "bad-revision-after-a-good-fix.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    sink = SlackSink()
    outs = {"first": io.StringIO(), "second": io.StringIO()}
    apiserver = FailingEventReads(KubeApiFake(world, clock), failures=1)

    async def run() -> None:
        with LocalServer(apiserver) as k, LocalServer(LokiFake(world, clock)) as lk, \
                LocalServer(sink) as sl:
            settings = scenario_settings(scenario, loki_url=lk.url, slack_url=sl.url + "/services/x")
            for name, until in (("first", 470), ("second", scenario.duration)):
                async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                          stdout=outs[name], clock=clock,
                                          store=Store(":memory:")) as detector:
                    apiserver.armed = name == "second"
                    while (clock.now - SCENARIO_EPOCH).total_seconds() <= until:
                        await detector.tick()
                        await detector.outbox.deliver_due()
                        clock.now += timedelta(seconds=20)

    asyncio.run(run())
    assert [json.loads(line)["revision"] for line in outs["first"].getvalue().splitlines()] == [2]
    assert [json.loads(line)["revision"] for line in outs["second"].getvalue().splitlines()] == [4]


class EventsAnsweredLate:
    """The apiserver fake, but the first Event list is answered only once Loki was asked for
    counts (or, should that never come, after ``patience`` seconds)."""

    def __init__(self, fake, patience: float) -> None:
        self.fake, self.patience = fake, patience
        self.counted = threading.Event()
        self.held = self.answered = False

    def __call__(self, request: Request) -> Response:
        if not self.held and request.method == "GET" and request.path.endswith("/events"):
            self.held = True
            self.counted.wait(self.patience)
            response = self.fake(request)
            self.answered = True
            return response
        return self.fake(request)


def test_the_first_tick_takes_its_baseline_even_when_events_are_read_back_last():
    """The Events are read back at the same time as the first tick reads Kubernetes; the
    baselines need them (what was judged bad elsewhere). However the two interleave, the first
    tick has its baseline and its incident (``--once`` has only that one tick)."""
    scenario = load_scenario(SCENARIOS / "bad-rollout-sharp-spike.yaml")
    clock = ManualClock(SCENARIO_EPOCH + timedelta(seconds=160))
    world = World(scenario, t0=SCENARIO_EPOCH)
    apiserver = EventsAnsweredLate(KubeApiFake(world, clock), patience=1)
    loki = LokiFake(world, clock)
    counts: list[bool] = []  # for each count query: had the Events been answered before it?

    def loki_watching(request: Request) -> Response:
        if "count_over_time" in (request.param("query") or ""):
            counts.append(apiserver.answered)
            apiserver.counted.set()
        return loki(request)

    out = io.StringIO()

    async def run() -> None:
        with LocalServer(apiserver) as k, LocalServer(loki_watching) as lk:
            settings = scenario_settings(scenario, loki_url=lk.url, slack_url=None)
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(":memory:")) as detector:
                await detector.tick()
                await detector.outbox.deliver_due()

    asyncio.run(run())
    assert apiserver.held and counts and all(counts)
    assert [json.loads(line)["revision"] for line in out.getvalue().splitlines()] == [2]


@pytest.mark.parametrize("triage_lines", [500, 0], ids=["lines-read-per-tick", "sampled"])
def test_every_error_spike_carries_the_signatures_of_the_lines_that_made_it(tmp_path,
                                                                           triage_lines):
    """Two Deployments roll out together under TARGET_DEPLOYMENT=*, each new pod writing twelve
    error lines in one push (one timestamp). Loki's own clock runs ahead of the tick's (the tick
    began before the push landed): what is counted at a tick must be what is sampled at it, or
    the incident goes out without signatures and the file rule on its lines never matches."""
    scenario = load_scenario(SCENARIOS / "two-rollouts-errors-in-one-push.yaml")
    clock = ManualClock(SCENARIO_EPOCH)
    world = World(scenario, t0=SCENARIO_EPOCH)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: payment-npe\n"
                     "    match: {log_pattern: 'NullPointerException at PaymentService'}\n"
                     "    priority: P2\n    remediation: {action: none}\n")
    out = io.StringIO()
    sink = SlackSink()

    def loki_now():
        return clock.now + timedelta(seconds=5)

    async def run() -> None:
        with LocalServer(KubeApiFake(world, clock)) as k, \
                LocalServer(LokiFake(world, loki_now)) as lk, LocalServer(sink) as sl:
            settings = scenario_settings(scenario, loki_url=lk.url,
                                         slack_url=sl.url + "/services/T/B/X",
                                         rules_file=str(rules),
                                         triage_sample_lines=triage_lines)
            assert settings.watches_all_deployments
            async with build_detector(settings=settings, kube_api=kube.api_client_for(k.url),
                                      stdout=out, clock=clock, store=Store(":memory:")) as detector:
                # t=80: the push (t=82) is in Loki's "now" (t=85) but after the tick began.
                for _ in range(8):
                    await detector.tick()
                    await detector.outbox.deliver_due()
                    clock.now += timedelta(seconds=20)

    asyncio.run(run())
    records = {r["deployment"]: r for r in map(json.loads, out.getvalue().splitlines())
               if r.get("event") == "incident"}
    assert sorted(records) == ["payments-api", "payments-worker"]
    for name, record in records.items():
        assert "error_spike" in record["signals"], record
        signatures = record["evidence"]["signatures"]
        assert signatures, f"{name}: no signatures"
        assert sum(s["count"] for s in signatures) == 24, signatures
    api = records["payments-api"]
    assert "NullPointerException at PaymentService" in api["evidence"]["signatures"][0]["example"]
    assert (api["priority"], api["rule"]) == ("P2", "payment-npe")
    assert records["payments-worker"]["priority"] == "P1"
    assert "timeout reading from queue" in \
        records["payments-worker"]["evidence"]["signatures"][0]["example"]
