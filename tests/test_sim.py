from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import kubernetes.client as k8s
import kubernetes.watch
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.client.rest import ApiException

from incident_detector.config import DEFAULT_ERROR_PATTERN
from incident_detector.sources.loki import (
    LabelKeys,
    error_count_query,
    error_lines_query,
    quote,
    regex_escape,
)
from incident_detector.model import PodProblem, Signal
from incident_detector.sim.fakes import FailFirst, KubeApiFake, LokiFake, SlackSink
from incident_detector.sim.scenario import Scenario, ScenarioError, load_scenario, scenario_paths
from incident_detector.sim.server import LocalServer, Response
from incident_detector.sources.kube import KubeClient, api_client_for
from incident_detector.sim.logql import (
    NO_MATCHER_TEXT,
    LogQLError,
    parse_logql,
    parse_loki_time,
    to_unix_nanos,
)
from incident_detector.sim.world import (
    NAME_ALPHABET,
    World,
    back_off_occurrences,
    kube_time,
    line_times,
    pod_name,
    replicaset_name,
    resource_version_at,
    time_of_resource_version,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SCENARIOS = ROOT / "tests" / "scenarios"
EXAMPLE = ROOT / "incident_detector" / "examples" / "bad-rollout.yaml"
T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
NS, DEP = "demo-aiops", "payments-api"
KEYS = LabelKeys()
ERROR_LINE = 'level=error msg="charge failed" order_id={n} err="NullPointerException"'
INFO_LINE = 'level=info msg="charged card" order_id={n}'


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def scenario(**changes: Any) -> Scenario:
    """A small valid scenario: revision 1 a day old, revision 2 at 60 s, errors from 75 s."""
    raw: dict[str, Any] = {
        "description": "test",
        "namespace": NS,
        "deployment": DEP,
        "duration": 600,
        "pod_labels": {"app": DEP},
        "revisions": [
            {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": 2},
            {"revision": 2, "at": 60, "image": "payments-api:1.5.0", "replicas": 2},
        ],
        "logs": [
            {"revision": 2, "from": 75, "per_minute": 30, "line": ERROR_LINE},
            {"revision": 1, "from": -2400, "per_minute": 30, "line": INFO_LINE},
        ],
        "expect": {"incidents": []},
    }
    raw.update(changes)
    return Scenario.model_validate(raw)


def world(**changes: Any) -> World:
    return World(scenario(**changes), t0=T0)


def metric_query(workloads: list[str] | None = None, window: int = 120,
                 keys: LabelKeys = KEYS) -> str:
    return error_count_query(namespace=NS, workloads=workloads or [DEP],
                             pattern=DEFAULT_ERROR_PATTERN, window_seconds=window, keys=keys)


def vector(answer: tuple[int, Any]) -> dict[tuple[tuple[str, str], ...], float]:
    status, body = answer
    assert status == 200, body
    assert body["data"]["resultType"] == "vector"
    return {tuple(sorted(item["metric"].items())): float(item["value"][1])
            for item in body["data"]["result"]}


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON value; list items merged, label/annotation keys generalised."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if prefix.endswith(("labels", "annotations", "matchLabels", "metric", "stream")):
                key = "*"
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= key_paths(item, prefix + "[]")
    return paths


class SimClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- scenario files ------------------------------------------------------------------------------


def test_every_scenario_file_loads_and_says_what_it_expects() -> None:
    paths = scenario_paths(SCENARIOS)
    assert len(paths) >= 22
    for path in paths:
        loaded = load_scenario(path)
        assert loaded.name == path.stem
        assert loaded.description
        for incident in loaded.expect.incidents:
            assert incident.signals, f"{path.name}: say which signal the incident needs"
            assert incident.evidence_at is not None, path.name


def test_the_demo_scenario_is_the_sharp_spike_scenario() -> None:
    demo = load_scenario(EXAMPLE)
    assert (SCENARIOS / "bad-rollout-sharp-spike.yaml").read_text() == EXAMPLE.read_text()
    assert [i.revision for i in demo.expect.incidents] == [2]
    assert demo.expect.incidents[0].signals == (Signal.ERROR_SPIKE,)
    assert demo.workload == DEP


def test_scenario_paths_lists_yaml_files_sorted(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "dir.yaml").mkdir()
    assert [p.name for p in scenario_paths(tmp_path)] == ["a.yml", "b.yaml"]


def write_scenario(tmp_path: Path, raw: dict[str, Any], name: str = "broken.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def valid_raw() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def problems_of(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert all(line.startswith(f"{path}: ") for line in message.splitlines())
    return message


def test_an_unknown_field_is_named_with_its_place(tmp_path: Path) -> None:
    raw = valid_raw()
    raw["revisions"][1]["imgae"] = raw["revisions"][1].pop("image")
    message = problems_of(write_scenario(tmp_path, raw))
    assert "revisions[1].imgae: unknown field" in message
    assert "revisions[1].image: required field is missing" in message


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["revisions"][1].update(pod_problems=[{"from": 90, "problem": "Restarting"}]),
     "revisions[1].pod_problems[0].problem: Restarting is derived"),
    (lambda r: r["revisions"][1].update(pod_problems=[{"from": 90, "problem": "Sad"}]),
     "revisions[1].pod_problems[0].problem"),
    (lambda r: r["revisions"][1].update(revision=1), "numbers must be strictly increasing"),
    (lambda r: r["revisions"][1].update(at=-90000), "`at` times must be strictly increasing"),
    (lambda r: r["logs"][0].update(revision=7), "logs[0].revision: no revision 7"),
    (lambda r: r["logs"][0].update({"from": 700, "to": 600}), "logs[0]: `to` must be after `from`"),
    (lambda r: r["logs"][0].update(per_minute=[[10, 1], [5, 2]]), "strictly increasing"),
    (lambda r: r["logs"][0].update(per_minute=-1), "logs[0].per_minute"),
    (lambda r: r.update(settings={"error_treshold": 3}), "error_treshold is not a detector"),
    (lambda r: r.update(settings={"slack_webhook_url": "https://x"}), "cannot be set by a"),
    (lambda r: r.update(settings={"error_threshold": 0}), "settings: error_threshold: Input"),
    (lambda r: r["expect"]["incidents"][0].update(revision=9), "expect.incidents[0].revision"),
    (lambda r: r["expect"]["incidents"][0].update(signals=["boom"]), "signals[0]"),
    (lambda r: r.update(namespace="Demo_AIOps"), "namespace: 'Demo_AIOps' is not a valid"),
    (lambda r: r.pop("expect"), "expect: required field is missing"),
])
def test_invalid_scenarios_say_what_is_wrong(tmp_path: Path, change: Any, expected: str) -> None:
    raw = valid_raw()
    change(raw)
    assert expected in problems_of(write_scenario(tmp_path, raw))


def test_unreadable_or_malformed_files_are_scenario_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("revisions: [unclosed\n")
    assert "is not valid YAML" in problems_of(bad_yaml)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert "must be a YAML mapping" in problems_of(listing)
    assert "cannot be read" in problems_of(tmp_path / "missing.yaml")


# --- names and lines ------------------------------------------------------------------------------


def test_generated_names_are_deterministic_and_kubernetes_shaped() -> None:
    rs = replicaset_name(DEP, 2)
    assert rs == replicaset_name(DEP, 2) != replicaset_name(DEP, 3)
    suffix = rs.removeprefix(DEP + "-")
    assert len(suffix) == 10 and set(suffix) <= set(NAME_ALPHABET)
    pods = [pod_name(rs, i) for i in range(3)]
    assert len(set(pods)) == 3
    for pod in pods:
        assert pod.startswith(rs + "-") and len(pod) == len(rs) + 6
        assert set(pod[-5:]) <= set(NAME_ALPHABET)


def test_constant_rate_lines_are_evenly_spaced() -> None:
    times = line_times(((0.0, 30.0),), 0.0, 60.0, 0.5)
    assert len(times) == 30
    assert times[0] == pytest.approx(1.0)
    assert all(b - a == pytest.approx(2.0) for a, b in zip(times, times[1:]))


def test_a_ramp_writes_the_integral_of_its_rate() -> None:
    # 0/min at 0 s to 60/min at 600 s: 300 lines in all, most of them late.
    times = line_times(((0.0, 0.0), (600.0, 60.0)), 0.0, 600.0, 0.5)
    assert len(times) == 300
    assert sum(1 for t in times if t < 300) == 75
    assert times == sorted(times)


def test_line_placeholders_are_filled_and_other_braces_kept() -> None:
    w = world(logs=[{"revision": 2, "from": 70, "to": 80, "per_minute": 60,
                     "line": '{"n":{n},"n3":{n3},"id":"{uuid}","ip":"{ip}","pod":"{pod}","x":{}}'}])
    status, body = w.loki_query_range(f'{{app="{DEP}"}}', w.at(0), w.at(100), limit=100)
    assert status == 200
    stream = body["data"]["result"][0]
    first = json.loads(stream["values"][-1][1].replace('"x":{}', '"x":null'))
    assert first["n"] == 1000 and 1 <= first["n3"] <= 999
    assert first["pod"] == stream["stream"]["pod"]
    assert first["ip"].startswith("10.") and len(first["id"]) == 36


# --- Kubernetes bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("fixture_name, method, at", [
    ("deployments_list.json", "deployments_list", 100),
    ("replicasets_list.json", "replicasets_list", 100),
    ("pods_list.json", "pods_list", 70),
])
def test_kubernetes_lists_have_the_recorded_shape(fixture_name: str, method: str,
                                                  at: float) -> None:
    # At 70 s the old pods still drain and the new ones crash: both kinds of status are there.
    w = world(revisions=[
        {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": 1},
        {"revision": 2, "at": 60, "image": "payments-api:1.5.0", "replicas": 1, "ready": False,
         "pod_problems": [{"from": 65, "problem": "CrashLoopBackOff", "restarts": 4}]},
    ])
    recorded = fixture(f"kubernetes/{fixture_name}")["response"]["json"]
    ours = getattr(w, method)(NS, w.at(at))
    missing = {p for p in key_paths(recorded) - key_paths(ours) if "managedFields" not in p}
    assert not missing
    assert ours["kind"] == recorded["kind"] and ours["apiVersion"] == recorded["apiVersion"]


def test_objects_appear_and_disappear_with_time() -> None:
    w = world()
    before = w.at(-86401)
    assert w.deployments_list(NS, before)["items"] == []
    assert w.replicasets_list(NS, before)["items"] == []
    rs1, rs2 = replicaset_name(DEP, 1), replicaset_name(DEP, 2)

    def pods(at: float) -> list[str]:
        return [p["metadata"]["name"] for p in w.pods_list(NS, w.at(at))["items"]]

    def revision(at: float) -> str:
        return w.deployments_list(NS, w.at(at))["items"][0]["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"]

    assert revision(59) == "1" and revision(60) == "2"
    assert [r["metadata"]["name"] for r in w.replicasets_list(NS, w.at(59))["items"]] == [rs1]
    assert {r["metadata"]["name"] for r in w.replicasets_list(NS, w.at(60))["items"]} == {rs1, rs2}
    assert all(p.startswith(rs1 + "-") for p in pods(62))  # new pods start 5 s after their RS
    assert len(pods(70)) == 4 and len(pods(89)) == 4  # old pods drain for 30 s
    assert all(p.startswith(rs2 + "-") for p in pods(90)) and len(pods(90)) == 2
    old = next(r for r in w.replicasets_list(NS, w.at(100))["items"]
               if r["metadata"]["name"] == rs1)
    assert old["spec"]["replicas"] == 0 and old["status"]["replicas"] == 0
    assert w.deployments_list("other", w.at(100))["items"] == []
    assert w.pods_list("other", w.at(100))["items"] == []


def test_replicasets_and_pods_point_at_their_owners() -> None:
    w = world(revisions=[
        {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": 2},
        {"revision": 2, "at": 60, "image": "payments-api:1.5.0", "replicas": 2,
         "env": {"FEATURE_X": "on"}, "resources": {"limits": {"memory": "64Mi"}}},
    ])
    now = w.at(100)
    deployment = w.deployments_list(NS, now)["items"][0]
    new_rs = next(r for r in w.replicasets_list(NS, now)["items"]
                  if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
    owner = new_rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", DEP, True)
    assert owner["uid"] == deployment["metadata"]["uid"]
    container = new_rs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "payments-api:1.5.0"
    assert container["env"] == [{"name": "FEATURE_X", "value": "on"}]
    assert container["resources"] == {"limits": {"memory": "64Mi"}}
    template_hash = new_rs["metadata"]["labels"]["pod-template-hash"]
    assert new_rs["metadata"]["name"] == f"{DEP}-{template_hash}"
    for pod in w.pods_list(NS, now)["items"]:
        assert pod["metadata"]["ownerReferences"][0]["name"] == new_rs["metadata"]["name"]
        assert pod["metadata"]["ownerReferences"][0]["uid"] == new_rs["metadata"]["uid"]
        assert pod["metadata"]["labels"] == {"app": DEP, "pod-template-hash": template_hash}
    assert new_rs["metadata"]["creationTimestamp"] == "2026-11-23T18:01:00Z"


def test_resource_versions_say_when_each_object_last_changed() -> None:
    w = world()

    def versions(at: float) -> tuple[str, dict[str, str]]:
        listing = w.replicasets_list(NS, w.at(at))
        deployment = w.deployments_list(NS, w.at(at))["items"][0]
        return listing["metadata"]["resourceVersion"], {
            DEP: deployment["metadata"]["resourceVersion"],
            **{rs["metadata"]["name"]: rs["metadata"]["resourceVersion"]
               for rs in listing["items"]}}

    rs1, rs2 = replicaset_name(DEP, 1), replicaset_name(DEP, 2)
    assert resource_version_at(T0) == str(int(T0.timestamp() * 1000))
    assert time_of_resource_version(int(resource_version_at(w.at(12.5)))) == w.at(12.5)
    # The list is at "now"; each object at its last change: the Deployment and the new
    # ReplicaSet when the new pods started (65 s), the old ReplicaSet when it drained (90 s).
    assert versions(100) == (resource_version_at(w.at(100)), {
        DEP: resource_version_at(w.at(90)), rs1: resource_version_at(w.at(90)),
        rs2: resource_version_at(w.at(65))})
    assert versions(62) == (resource_version_at(w.at(62)), {
        DEP: resource_version_at(w.at(60)), rs1: resource_version_at(w.at(-86395)),
        rs2: resource_version_at(w.at(60))})
    pods = w.pods_list(NS, w.at(70))["items"]
    assert {p["metadata"]["resourceVersion"] for p in pods} == {
        resource_version_at(w.at(-86395)), resource_version_at(w.at(65))}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["deployments", "replicasets", "pods"]),
       st.floats(min_value=-100, max_value=700), st.floats(min_value=-100, max_value=700))
def test_a_resource_version_changes_exactly_when_its_object_does(resource: str, first: float,
                                                                second: float) -> None:
    w = WORLD_WITH_PROBLEMS
    early, late = sorted((first, second))
    before = {o["metadata"]["name"]: o for o in w.objects(resource, NS, w.at(early))}
    after = {o["metadata"]["name"]: o for o in w.objects(resource, NS, w.at(late))}
    listed_early, listed_late = (int(resource_version_at(w.at(t))) for t in (early, late))
    for name, obj in after.items():
        version = int(obj["metadata"]["resourceVersion"])
        assert version <= listed_late
        if name in before and before[name]["metadata"]["resourceVersion"] == str(version):
            assert unversioned(before[name]) == unversioned(obj)
        else:  # new, or changed since (perhaps back to what it was: still a change)
            assert version > listed_early


def unversioned(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items()
                                if k != "resourceVersion"}}


WORLD_WITH_PROBLEMS = world(progress_deadline_exceeded_at=400, revisions=[
    {"revision": 1, "at": -86400, "image": "a:1", "replicas": 2},
    {"revision": 2, "at": 60, "image": "a:2", "replicas": 2,
     "pod_problems": [{"from": 90, "problem": "CrashLoopBackOff", "restarts": 3, "pods": 1},
                      {"from": 200, "problem": "OOMKilled"}]},
    {"revision": 3, "at": 500, "image": "a:3", "replicas": 3},
])


def statuses(w: World, at: float, revision: int = 2) -> list[dict[str, Any]]:
    prefix = replicaset_name(DEP, revision) + "-"
    return [p["status"] for p in w.pods_list(NS, w.at(at))["items"]
            if p["metadata"]["name"].startswith(prefix)]


def with_problems(*problems: dict[str, Any], **revision: Any) -> World:
    return world(revisions=[
        {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": 2},
        {"revision": 2, "at": 60, "image": "payments-api:1.5.0", "replicas": 2,
         "pod_problems": list(problems), **revision},
    ])


def test_pod_problems_look_like_the_kubelet_reports_them() -> None:
    crash = with_problems({"from": 90, "problem": "CrashLoopBackOff", "restarts": 4})
    healthy = statuses(crash, 80)[0]["containerStatuses"][0]
    assert "running" in healthy["state"] and healthy["ready"] and healthy["restartCount"] == 0
    looping = statuses(crash, 90)[0]["containerStatuses"][0]
    assert looping["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert looping["lastState"]["terminated"]["reason"] == "Error"
    assert looping["restartCount"] == 4 and not looping["ready"]

    oom = statuses(with_problems({"from": 90, "problem": "OOMKilled", "pods": 1}), 100)
    assert oom[0]["containerStatuses"][0]["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert oom[0]["containerStatuses"][0]["restartCount"] == 1
    assert "running" in oom[0]["containerStatuses"][0]["state"]
    assert oom[1]["containerStatuses"][0]["lastState"] == {}  # only the first pod

    pull = with_problems({"from": 65, "problem": "ErrImagePull"},
                         {"from": 80, "problem": "ImagePullBackOff"})
    early = statuses(pull, 70)[0]["containerStatuses"][0]
    assert early["state"]["waiting"]["reason"] == "ErrImagePull"
    later = statuses(pull, 80)[0]
    assert later["phase"] == "Pending"
    assert later["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"

    config = statuses(with_problems({"from": 65, "problem": PodProblem.CONFIG_ERROR.value}), 70)
    waiting = config[0]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"


def progressing(w: World, at: float) -> dict[str, Any]:
    conditions = w.deployments_list(NS, w.at(at))["items"][0]["status"]["conditions"]
    return next(c for c in conditions if c["type"] == "Progressing")


def test_progress_deadline_belongs_to_the_rollout_that_hit_it() -> None:
    w = world(progress_deadline_exceeded_at=400, revisions=[
        {"revision": 1, "at": -86400, "image": "a:1", "replicas": 2},
        {"revision": 2, "at": 60, "image": "a:2", "replicas": 2, "ready": False},
        {"revision": 3, "at": 500, "image": "a:3", "replicas": 2},
    ])
    assert (progressing(w, 399)["status"], progressing(w, 399)["reason"]) == (
        "True", "ReplicaSetUpdated")
    assert (progressing(w, 400)["status"], progressing(w, 400)["reason"]) == (
        "False", "ProgressDeadlineExceeded")
    assert progressing(w, 600)["reason"] == "NewReplicaSetAvailable"


# --- LogQL ---------------------------------------------------------------------------------------


def test_errors_are_counted_per_pod_within_the_window() -> None:
    w = world()
    new_pods = w.pod_names(2)
    # 30/min per pod, evenly spaced: any 120 s window holds exactly 60 lines of each pod.
    counts = vector(w.loki_query(metric_query(), w.at(300)))
    assert counts == {(("app", DEP), ("pod", pod)): 60.0 for pod in new_pods}
    # Only lines in (at - 120 s, at]: at 75 s nothing yet, and info lines never match.
    assert vector(w.loki_query(metric_query(), w.at(75))) == {}
    assert sum(vector(w.loki_query(metric_query(window=60), w.at(300))).values()) == 60


def test_range_units_and_the_time_parameter() -> None:
    w = world()
    at = w.at(300)
    by_seconds = vector(w.loki_query(metric_query(window=120), at))
    in_minutes = metric_query(window=120).replace("[120s]", "[2m]")
    assert vector(w.loki_query(in_minutes, at)) == by_seconds
    hour = vector(w.loki_query(metric_query(window=120).replace("[120s]", "[1h]"), at))
    assert sum(hour.values()) == pytest.approx(2 * 30 * 225 / 60, abs=2)  # since 75 s
    # Baseline: evaluated at the new ReplicaSet's creation, the new pods had written nothing.
    assert vector(w.loki_query(metric_query(window=1800), w.at(60))) == {}


def test_a_metric_without_pod_labels_groups_by_workload_only() -> None:
    w = world(logs=[{"revision": 2, "from": 75, "per_minute": 30, "line": ERROR_LINE,
                     "pod_label": False}])
    assert vector(w.loki_query(metric_query(), w.at(300))) == {(("app", DEP),): 120.0}


def test_the_pod_as_structured_metadata_is_grouped_by_and_merged_into_streams() -> None:
    """``pod_label: metadata``: the streams carry no pod label, each line the pod as structured
    metadata; Loki answers as in the recordings (loki/query_vector_by_sm_pod,
    loki/query_range_streams_sm): a metric grouped by pod, a log query's streams with it."""
    recorded = fixture("loki/query_vector_by_sm_pod.json")["response"]["json"]["data"]["result"]
    assert set(recorded[0]["metric"]) == {"app", "pod"}
    w = world(logs=[{"revision": 2, "from": 75, "per_minute": 30, "line": ERROR_LINE,
                     "pod_label": "metadata"}])
    # Not a stream label: a stream selector does not match it.
    assert vector(w.loki_query(f'sum(count_over_time({{app="{DEP}", pod=~".+"}} [2m]))',
                               w.at(300))) == {}
    counts = vector(w.loki_query(metric_query(), w.at(300)))
    assert counts == {(("app", DEP), ("pod", pod)): 60.0 for pod in w.pod_names(2)}
    status, body = w.loki_query_range(f'{{app="{DEP}"}}', w.at(0), w.at(100), limit=100)
    assert status == 200
    assert sorted(s["stream"]["pod"] for s in body["data"]["result"]) == sorted(w.pod_names(2))
    assert all(s["stream"]["detected_level"] == "error" for s in body["data"]["result"])


def test_the_pod_as_structured_metadata_needs_loki_3(tmp_path: Path) -> None:
    raw = valid_raw()
    raw["loki"] = {"version": "2.9.8"}
    raw["logs"][0]["pod_label"] = "metadata"
    assert "structured metadata needs Loki 3.0" in problems_of(write_scenario(tmp_path, raw))


def test_sum_grouping_variants() -> None:
    w = world()
    selector = f'{{namespace="{NS}", app="{DEP}"}} |= "level=error"'
    at = w.at(300)
    assert vector(w.loki_query(f"sum(count_over_time({selector} [2m]))", at)) == {(): 120.0}
    assert vector(w.loki_query(f"sum by (app) (count_over_time({selector} [2m]))", at)) == {
        (("app", DEP),): 120.0}
    assert vector(w.loki_query(f"sum(count_over_time({selector} [2m])) by (app)", at)) == {
        (("app", DEP),): 120.0}
    without = vector(w.loki_query(f"sum without (pod) (count_over_time({selector} [2m]))", at))
    assert list(without.values()) == [120.0] and "pod" not in dict(next(iter(without)))
    raw = vector(w.loki_query(f"count_over_time({selector} [2m])", at))
    assert len(raw) == 2 and all(dict(k)["container"] == DEP for k in raw)
    rate = vector(w.loki_query(f"sum(rate({selector} [2m]))", at))
    assert rate == {(): pytest.approx(1.0)}


def test_matchers_and_line_filters() -> None:
    w = world(logs=[{"revision": 2, "from": 75, "per_minute": 30, "line": ERROR_LINE},
                    {"revision": 2, "from": 75, "per_minute": 15, "line": INFO_LINE}])
    at = w.at(300)

    def total(query: str) -> float:
        return sum(vector(w.loki_query(query, at)).values())

    assert total(metric_query(workloads=[DEP, "other.app"])) == 120
    assert total(metric_query(workloads=["other", "payments.api"])) == 0  # the dot is escaped
    assert total('sum(count_over_time({app=~"pay.+", app!~"x.*"} |~ "NullPointer" [2m]))') == 120
    assert total('sum(count_over_time({app!="nope", app=~".+"} != "NullPointer" [2m]))') == 60
    assert total(f'sum(count_over_time({{app="{DEP}"}} |= `msg="charge failed"` [2m]))') == 120
    assert total(f'sum(count_over_time({{app="{DEP}"}} |= "msg=\\"charge failed\\"" [2m]))') == 120
    assert total(f'sum(count_over_time({{app="{DEP}"}} !~ "(?i)error" [2m]))') == 60


@given(st.text(max_size=40))
def test_quoted_label_values_are_read_back_exactly(value: str) -> None:
    query = parse_logql(f'{{namespace="{NS}", app={quote(value)}}}')
    assert query.matchers[1].value == value  # type: ignore[union-attr]


@given(st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=4, unique=True))
def test_escaped_alternations_match_exactly_their_names(names: list[str]) -> None:
    query = parse_logql(f'{{app=~{quote("|".join(regex_escape(n) for n in names))}}}')
    matcher = query.matchers[0]  # type: ignore[union-attr]
    for name in names:
        assert matcher.accepts({"app": name})
    assert not matcher.accepts({"app": names[0] + names[1] + "!"})


@pytest.mark.parametrize("query, expected", [
    ('sum(count_over_time({app=~".*"} [2m]))', NO_MATCHER_TEXT),
    ('sum(count_over_time({app!="x"} [2m]))', NO_MATCHER_TEXT),
    ('sum(count_over_time({app=""} [2m]))', NO_MATCHER_TEXT),
    ('sum(count_over_time({app="x"} |~ "(" [2m]))', "parse error"),
    ('sum(count_over_time({app="x"} |~ "(?=x)" [2m]))', "unsupported Perl syntax"),
    ('sum(count_over_time({app="x"} [0s]))', "parse error"),
    ('sum(count_over_time({app="x"} [2 minutes]))', "not a valid duration"),
    ('sum(count_over_time({app="x"} | json [2m]))', "unsupported pipeline stage"),
    ('avg(count_over_time({app="x"} [2m]))', "unsupported function"),
    ('sum(count_over_time({app="x\\q"} [2m]))', "invalid escape"),
    ('sum(count_over_time({} [2m]))', "parse error"),
    ('sum(count_over_time({app="x"} [2m])) extra', "unexpected text"),
])
def test_queries_loki_refuses_are_400_with_text(query: str, expected: str) -> None:
    status, body = world().loki_query(query, T0)
    assert status == 400
    assert isinstance(body, str) and expected in body


def test_the_refusal_texts_are_loki_s_own() -> None:
    w = world()
    assert w.loki_query('sum(count_over_time({app=~".*"} [2m]))', T0) == (
        400, fixture("loki/query_no_matcher.json")["response"]["text"])
    log_query = error_lines_query(namespace=NS, workloads=[DEP], pattern="x", keys=KEYS)
    assert w.loki_query(log_query, T0) == (
        400, fixture("loki/query_log_on_instant.json")["response"]["text"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_the_logql_parser_never_crashes(text: str) -> None:
    status, body = WORLD_FOR_FUZZING.loki_query(text, T0)
    assert (status, type(body)) in ((200, dict), (400, str))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "sum", "by", "without", "(", ")", "count_over_time", "rate", "{", "}", "app", "pod", "=", "=~",
    "!=", "!~", "|=", "|~", '"x"', '".+"', '"("', "`y`", ",", "[2m]", "[", "]", "120s", " ",
    '"\\"', '"\\u00e9"', '"\\x41"', '"\\101"',
]), max_size=25))
def test_the_logql_parser_never_crashes_on_near_misses(tokens: list[str]) -> None:
    status, body = WORLD_FOR_FUZZING.loki_query("".join(tokens), T0)
    assert (status, type(body)) in ((200, dict), (400, str))


WORLD_FOR_FUZZING = world()


def test_vector_bodies_have_the_recorded_shape() -> None:
    w = world()
    recorded = fixture("loki/query_vector_by_pod.json")["response"]["json"]
    status, ours = w.loki_query(metric_query(), w.at(300))
    ignored = {p for p in key_paths(recorded) if p.startswith("data.stats")}
    assert key_paths(recorded) - ignored == key_paths(ours)
    value = ours["data"]["result"][0]["value"]
    assert isinstance(value[0], int | float) and value[1] == "60"
    assert value[0] == to_unix_nanos(w.at(300)) / 1e9


def test_log_lines_come_back_as_streams_newest_first() -> None:
    w = world()
    recorded = fixture("loki/query_range_streams.json")["response"]["json"]
    query = error_lines_query(namespace=NS, workloads=[DEP], pattern=DEFAULT_ERROR_PATTERN,
                              keys=KEYS)
    status, ours = w.loki_query_range(query, w.at(60), w.at(300), limit=5, direction="backward")
    assert status == 200
    assert {p for p in key_paths(recorded) if not p.startswith("data.stats")} <= key_paths(ours)
    values = [v for stream in ours["data"]["result"] for v in stream["values"]]
    assert len(values) == 5
    assert all(isinstance(t, str) and t.isdigit() for t, _ in values)
    for stream in ours["data"]["result"]:
        times = [int(t) for t, _ in stream["values"]]
        assert times == sorted(times, reverse=True)
    assert min(int(t) for t, _ in values) > to_unix_nanos(w.at(292))
    status, forward = w.loki_query_range(query, w.at(60), w.at(300), limit=3, direction="forward")
    first = sorted(int(t) for s in forward["data"]["result"] for t, _ in s["values"])
    assert len(first) == 3 and first[0] >= to_unix_nanos(w.at(75))
    assert first[-1] < to_unix_nanos(w.at(78))
    status, everything = w.loki_query_range(query, w.at(60), w.at(300), limit=5000)
    assert sum(len(s["values"]) for s in everything["data"]["result"]) == pytest.approx(225, abs=1)
    assert w.loki_query_range(query, w.at(0), w.at(1), limit=5001)[0] == 400


def test_metric_range_queries_return_a_matrix() -> None:
    w = world()
    status, body = w.loki_query_range(metric_query(window=60), w.at(200), w.at(320),
                                      step_ns=60 * 10**9)
    assert status == 200 and body["data"]["resultType"] == "matrix"
    series = body["data"]["result"]
    assert len(series) == 2
    assert [v[1] for v in series[0]["values"]] == ["30", "30", "30"]


@pytest.mark.parametrize("text, seconds", [
    ("1795456800", 1795456800),
    ("1795456800.5", 1795456800.5),
    ("1795456800000000000", 1795456800),
    ("2026-11-23T18:00:00Z", 1795456800),
])
def test_loki_time_parameters(text: str, seconds: float) -> None:
    assert parse_loki_time(text) == int(seconds * 1e9)
    with pytest.raises(LogQLError):
        parse_loki_time("yesterday")


def test_worlds_are_deterministic() -> None:
    first, second = world(), world()
    query = error_lines_query(namespace=NS, workloads=[DEP], pattern="error", keys=KEYS)
    assert first.loki_query_range(query, first.at(0), first.at(600), limit=5000) == \
        second.loki_query_range(query, second.at(0), second.at(600), limit=5000)
    assert first.pods_list(NS, first.at(100)) == second.pods_list(NS, second.at(100))


def test_label_keys_follow_the_scenario_settings() -> None:
    keys = LabelKeys(namespace="k8s_namespace_name", workload="service", pod="k8s_pod_name")
    w = world(settings={"loki_app_label_key": "service", "loki_pod_label_key": "k8s_pod_name",
                        "loki_namespace_label_key": "k8s_namespace_name"})
    counts = vector(w.loki_query(metric_query(keys=keys), w.at(300)))
    assert len(counts) == 2
    assert all(dict(k).keys() == {"service", "k8s_pod_name"} for k in counts)


# --- the fakes over HTTP --------------------------------------------------------------------------


@pytest.fixture
def kube() -> Any:
    clock = SimClock(T0 + timedelta(seconds=100))
    fake = KubeApiFake(world(), clock)
    with LocalServer(fake) as server:
        configuration = k8s.Configuration()
        configuration.host = server.url
        with k8s.ApiClient(configuration) as api:
            yield fake, server, api, clock


def test_the_kubernetes_client_reads_the_lists(kube: Any) -> None:
    fake, server, api, clock = kube
    apps = k8s.AppsV1Api(api)
    deployments = apps.list_namespaced_deployment(NS)
    assert deployments.items[0].metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    replicasets = apps.list_namespaced_replica_set(NS).items
    assert sorted(rs.metadata.annotations["deployment.kubernetes.io/revision"]
                  for rs in replicasets) == ["1", "2"]
    assert all(rs.metadata.owner_references[0].controller for rs in replicasets)
    assert replicasets[0].metadata.creation_timestamp.tzinfo is not None
    pods = k8s.CoreV1Api(api).list_namespaced_pod(NS).items
    assert len(pods) == 2 and pods[0].status.container_statuses[0].ready
    new_hash = replicaset_name(DEP, 2)[-10:]
    selected = apps.list_namespaced_replica_set(
        NS, label_selector=f"app={DEP},pod-template-hash in ({new_hash}, nothing)").items
    assert [rs.metadata.name for rs in selected] == [replicaset_name(DEP, 2)]
    assert apps.read_namespaced_deployment(DEP, NS).metadata.name == DEP
    clock.now = T0 - timedelta(days=2)
    assert apps.list_namespaced_deployment(NS).items == []
    assert fake.requests_by_path[f"/apis/apps/v1/namespaces/{NS}/deployments"] == 2


def test_missing_things_are_404_status_bodies(kube: Any) -> None:
    _, server, api, _ = kube
    with pytest.raises(ApiException) as caught:
        k8s.AppsV1Api(api).read_namespaced_deployment("nope", NS)
    recorded = fixture("kubernetes/deployment_not_found.json")["response"]["json"]
    assert json.loads(caught.value.body) == recorded
    response = httpx.get(f"{server.url}/apis/batch/v1/namespaces/{NS}/jobs")
    assert response.status_code == 404 and response.json()["reason"] == "NotFound"
    response = httpx.get(f"{server.url}/api/v1/namespaces/{NS}/pods",
                         params={"labelSelector": "app in (a"})
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"


# --- watches --------------------------------------------------------------------------------------


def watch(list_function: Any, resource_version: str | None, **params: Any) -> list[dict[str, Any]]:
    """One watch request through the real client, its events as parsed JSON lines."""
    params.setdefault("allow_watch_bookmarks", True)
    if resource_version is not None:
        params["resource_version"] = resource_version
    response = list_function(NS, watch=True, timeout_seconds=1, _preload_content=False, **params)
    try:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        text = response.data.decode()
    finally:
        response.release_conn()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def kinds_and_names(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["object"]["metadata"].get("name")) for e in events]


def test_a_watch_after_a_rollout_tells_what_changed(kube: Any) -> None:
    fake, server, api, clock = kube
    apps = k8s.AppsV1Api(api)
    clock.now = T0 + timedelta(seconds=50)
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    deployment_version = apps.list_namespaced_deployment(NS).metadata.resource_version
    assert listed == deployment_version == str(int((T0.timestamp() + 50) * 1000))
    clock.now = T0 + timedelta(seconds=100)  # revision 2 at 60 s, the old pods gone at 90 s
    current = str(int((T0.timestamp() + 100) * 1000))
    events = watch(apps.list_namespaced_replica_set, listed)
    rs1, rs2 = replicaset_name(DEP, 1), replicaset_name(DEP, 2)
    assert kinds_and_names(events) == [("ADDED", rs2), ("MODIFIED", rs1), ("BOOKMARK", None)]
    added, modified, bookmark = (e["object"] for e in events)
    assert (added["kind"], added["apiVersion"]) == ("ReplicaSet", "apps/v1")
    assert added["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert modified["spec"]["replicas"] == 0
    assert listed < modified["metadata"]["resourceVersion"] <= current
    assert bookmark == {"kind": "ReplicaSet", "apiVersion": "apps/v1",
                        "metadata": {"resourceVersion": current}}
    # An event's object is the object as a list at the same instant has it, kind included.
    relisted = httpx.get(f"{server.url}/apis/apps/v1/namespaces/{NS}/replicasets").json()
    assert added == {"kind": "ReplicaSet", "apiVersion": "apps/v1",
                     **next(i for i in relisted["items"] if i["metadata"]["name"] == rs2)}

    deployments = watch(apps.list_namespaced_deployment, deployment_version)
    assert kinds_and_names(deployments) == [("MODIFIED", DEP), ("BOOKMARK", None)]
    assert deployments[0]["object"]["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "2"
    assert deployments[1]["object"]["kind"] == "Deployment"
    assert fake.lists == {f"/apis/apps/v1/namespaces/{NS}/replicasets": 2,
                          f"/apis/apps/v1/namespaces/{NS}/deployments": 1}
    assert fake.watches == {f"/apis/apps/v1/namespaces/{NS}/replicasets": 1,
                            f"/apis/apps/v1/namespaces/{NS}/deployments": 1}
    sent = [r for r in server.requests if r.param("watch")]
    assert {r.param("allowWatchBookmarks") for r in sent} <= {"True", "true"}


def test_a_watch_with_nothing_new_only_bookmarks(kube: Any) -> None:
    _, _, api, clock = kube
    apps = k8s.AppsV1Api(api)
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    assert kinds_and_names(watch(apps.list_namespaced_replica_set, listed)) == [
        ("BOOKMARK", None)]
    clock.now += timedelta(seconds=120)  # the world holds still after 90 s
    events = watch(apps.list_namespaced_replica_set, listed)
    assert kinds_and_names(events) == [("BOOKMARK", None)]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) == int(listed) + 120_000
    # Without allowWatchBookmarks the apiserver sends no bookmark at all.
    assert watch(apps.list_namespaced_replica_set, listed, allow_watch_bookmarks=False) == []


def test_a_watch_from_a_version_the_cache_forgot_is_a_410_error_event(kube: Any) -> None:
    fake, server, api, clock = kube
    apps = k8s.AppsV1Api(api)
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    clock.now += timedelta(seconds=300)
    assert kinds_and_names(watch(apps.list_namespaced_replica_set, listed)) == [
        ("BOOKMARK", None)]  # exactly the window: still served
    clock.now += timedelta(milliseconds=1)
    oldest = int(listed) + 1
    assert watch(apps.list_namespaced_replica_set, listed) == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {listed} ({oldest})", "reason": "Expired",
        "code": 410}}]
    assert watch(apps.list_namespaced_replica_set, "1")[0]["object"]["code"] == 410
    fake.watch_window = timedelta(hours=1)
    assert watch(apps.list_namespaced_replica_set, listed)[0]["type"] == "BOOKMARK"


def test_a_watch_from_the_future_or_from_nonsense_is_refused(kube: Any) -> None:
    _, server, api, clock = kube
    apps = k8s.AppsV1Api(api)
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    clock.now -= timedelta(seconds=10)
    [error] = watch(apps.list_namespaced_replica_set, listed)
    assert error["type"] == "ERROR"
    assert (error["object"]["code"], error["object"]["reason"]) == (504, "Timeout")
    for nonsense in ("abc", "-5", "1.5"):
        with pytest.raises(ApiException) as caught:
            watch(apps.list_namespaced_replica_set, nonsense)
        assert caught.value.status == 400
        body = json.loads(caught.value.body)
        assert (body["kind"], body["reason"]) == ("Status", "BadRequest")
        assert nonsense in body["message"]
    url = f"{server.url}/apis/apps/v1/namespaces/{NS}/replicasets"
    assert httpx.get(url, params={"watch": "maybe"}).status_code == 400
    assert httpx.get(url, params={"watch": "1", "timeoutSeconds": "soon"}).status_code == 400
    events_url = f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events"
    assert httpx.get(events_url, params={"watch": "true"}).status_code == 400


def test_a_watch_without_a_version_starts_with_everything(kube: Any) -> None:
    _, server, api, _ = kube
    apps = k8s.AppsV1Api(api)
    listed = apps.list_namespaced_replica_set(NS)
    for version in (None, "0"):
        events = watch(apps.list_namespaced_replica_set, version)
        assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
        assert {e["object"]["metadata"]["name"] for e in events[:2]} == {
            rs.metadata.name for rs in listed.items}
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(versions)  # events come in resourceVersion order
    # httpx, and watch=1 as kubectl sends it: the same stream.
    raw = httpx.get(f"{server.url}/apis/apps/v1/namespaces/{NS}/replicasets",
                    params={"watch": "1", "allowWatchBookmarks": "true"})
    assert [json.loads(line) for line in raw.text.splitlines()] == events


def test_pod_watches_see_pods_come_and_go_through_a_selector(kube: Any) -> None:
    _, _, api, clock = kube
    core = k8s.CoreV1Api(api)
    clock.now = T0 + timedelta(seconds=62)
    old_hash, new_hash = replicaset_name(DEP, 1)[-10:], replicaset_name(DEP, 2)[-10:]
    both = f"app={DEP},pod-template-hash in ({old_hash},{new_hash})"
    listed = core.list_namespaced_pod(NS, label_selector=both)
    old_pods = sorted(p.metadata.name for p in listed.items)
    assert len(old_pods) == 2 and all(p.startswith(replicaset_name(DEP, 1)) for p in old_pods)
    clock.now = T0 + timedelta(seconds=100)
    events = watch(core.list_namespaced_pod, listed.metadata.resource_version,
                   label_selector=both)
    assert sorted(kinds_and_names(events)[:2]) == [
        ("ADDED", p) for p in sorted(world().pod_names(2))]
    assert sorted(kinds_and_names(events)[2:4]) == [("DELETED", p) for p in old_pods]
    deleted = events[2]["object"]
    assert deleted["kind"] == "Pod" and deleted["status"]["phase"] == "Running"
    assert deleted["metadata"]["resourceVersion"] == events[4]["object"]["metadata"][
        "resourceVersion"]
    only_new = watch(core.list_namespaced_pod, listed.metadata.resource_version,
                     label_selector=f"pod-template-hash in ({new_hash})")
    assert [e["type"] for e in only_new] == ["ADDED", "ADDED", "BOOKMARK"]
    pending = watch(core.list_namespaced_pod, listed.metadata.resource_version,
                    field_selector="status.phase=Pending")
    assert [e["type"] for e in pending] == ["BOOKMARK"]


def test_the_kubernetes_watch_helper_reads_the_stream(kube: Any) -> None:
    _, _, api, clock = kube
    apps = k8s.AppsV1Api(api)
    clock.now = T0 + timedelta(seconds=50)
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    clock.now = T0 + timedelta(seconds=62)
    watcher = kubernetes.watch.Watch()
    events = list(watcher.stream(apps.list_namespaced_replica_set, NS, resource_version=listed,
                                 allow_watch_bookmarks=True, timeout_seconds=1))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert isinstance(events[0]["object"], k8s.V1ReplicaSet)
    assert events[0]["object"].metadata.name == replicaset_name(DEP, 2)
    assert watcher.resource_version == str(int((T0.timestamp() + 62) * 1000))


def test_applying_a_watch_to_a_list_gives_the_later_list() -> None:
    clock = SimClock(T0)
    fake = KubeApiFake(WORLD_WITH_PROBLEMS, clock, watch_window=timedelta(hours=1))
    times = (-100, 62, 89, 95, 150, 250, 450, 505, 600)
    with LocalServer(fake) as server, httpx.Client(base_url=server.url) as client:
        for prefix, resource in (("apis/apps/v1", "deployments"),
                                 ("apis/apps/v1", "replicasets"), ("api/v1", "pods")):
            path = f"/{prefix}/namespaces/{NS}/{resource}"

            def listed(at: float, path: str = path) -> dict[str, Any]:
                clock.now = T0 + timedelta(seconds=at)
                return client.get(path).json()

            for early in times:
                for late in (t for t in times if t >= early):
                    state = {i["metadata"]["name"]: i for i in listed(early)["items"]}
                    version = listed(early)["metadata"]["resourceVersion"]
                    expected = listed(late)
                    answer = client.get(path, params={
                        "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"})
                    *changes, bookmark = [json.loads(line) for line in answer.text.splitlines()]
                    for change in changes:
                        obj = {k: v for k, v in change["object"].items()
                               if k not in ("kind", "apiVersion")}
                        assert int(obj["metadata"]["resourceVersion"]) > int(version)
                        name = obj["metadata"]["name"]
                        assert (name in state) == (change["type"] != "ADDED")
                        if change["type"] == "DELETED":
                            del state[name]
                        else:
                            state[name] = obj
                    assert state == {i["metadata"]["name"]: i for i in expected["items"]}
                    assert bookmark["type"] == "BOOKMARK"
                    assert bookmark["object"]["metadata"]["resourceVersion"] == \
                        expected["metadata"]["resourceVersion"]
                    if early == late:
                        assert changes == []
        assert fake.watches[path] == len(times) * (len(times) + 1) // 2
        # Revision 2 has 2 ready pods at 70 s, 1 from 90 s (a crash loop), 2 again from 200 s
        # (OOMKilled but restarted): a ReplicaSet that changed back is still reported.
        rs2 = replicaset_name(DEP, 2)
        path = f"/apis/apps/v1/namespaces/{NS}/replicasets"
        clock.now = T0 + timedelta(seconds=70)
        before = client.get(path).json()
        clock.now = T0 + timedelta(seconds=250)
        answer = client.get(path, params={"watch": "1", "resourceVersion": before[
            "metadata"]["resourceVersion"]})
        changes = [json.loads(line) for line in answer.text.splitlines()]
        assert kinds_and_names(changes) == [("MODIFIED", replicaset_name(DEP, 1)),
                                            ("MODIFIED", rs2)]
        change = changes[1]
        then = next(i for i in before["items"] if i["metadata"]["name"] == rs2)
        assert unversioned(change["object"]) == {
            "kind": "ReplicaSet", "apiVersion": "apps/v1", **unversioned(then)}


def test_pods_are_listed_by_set_based_selectors(kube: Any) -> None:
    _, server, api, _ = kube
    core = k8s.CoreV1Api(api)
    new_hash = replicaset_name(DEP, 2)[-10:]

    def names(selector: str) -> set[str]:
        pods = core.list_namespaced_pod(NS, label_selector=selector).items
        return {pod.metadata.name for pod in pods}

    new_pods = set(world().pod_names(2))
    assert names(f"pod-template-hash in ({new_hash}, nope)") == new_pods
    assert names("pod-template-hash in (nope)") == set()
    assert names(f"pod-template-hash notin ({new_hash})") == set()
    assert names(f"app={DEP},pod-template-hash") == new_pods
    assert names("!pod-template-hash") == set()
    response = httpx.get(f"{server.url}/api/v1/namespaces/{NS}/pods",
                         params={"labelSelector": "pod-template-hash in ()"})
    assert response.status_code == 400 and "can't be empty" in response.json()["message"]


def test_faults_answer_watches_too(kube: Any) -> None:
    fake, server, api, _ = kube
    apps = k8s.AppsV1Api(api)
    path = f"/apis/apps/v1/namespaces/{NS}/replicasets"
    listed = apps.list_namespaced_replica_set(NS).metadata.resource_version
    fake.faults = FailFirst(1, Response(503, {"kind": "Status", "code": 503}), path_prefix=path)
    with pytest.raises(ApiException) as caught:
        watch(apps.list_namespaced_replica_set, listed)
    assert caught.value.status == 503
    fake.faults = lambda request: Response(200, b'{"type":"ADDED","object":{"meta')
    response = apps.list_namespaced_replica_set(NS, watch=True, resource_version=listed,
                                                _preload_content=False)
    assert response.data == b'{"type":"ADDED","object":{"meta'
    fake.faults = None
    assert watch(apps.list_namespaced_replica_set, listed)[0]["type"] == "BOOKMARK"
    assert fake.watches[path] == 3 and fake.lists[path] == 1
    assert fake.requests_by_path[path] == 4


def event(name: str = "payments-api.18eabe3e9b19fe26", **changes: Any) -> dict[str, Any]:
    body = dict(fixture("kubernetes/event_create.json")["request"]["body"])
    body["metadata"] = {"name": name, "namespace": NS}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_events_are_created_listed_and_validated(kube: Any) -> None:
    fake, server, api, _ = kube
    events = k8s.EventsV1Api(api)
    created = events.create_namespaced_event(NS, k8s.EventsV1Event(
        metadata=k8s.V1ObjectMeta(name="payments-api.1"), event_time=T0,
        reporting_controller="example.com/incident-detector", reporting_instance="detector-0",
        action="Detect", reason="RolloutRegression", type="Warning", note="revision 2 is bad",
        regarding=k8s.V1ObjectReference(kind="Deployment", name=DEP, namespace=NS)))
    assert created.metadata.uid and created.metadata.resource_version
    recorded = fixture("kubernetes/event_create.json")["response"]["json"]
    response = httpx.post(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                          json=event(reason="Other"))
    assert response.status_code == 201
    assert key_paths(response.json()) == {
        p for p in key_paths(recorded) if "managedFields" not in p}
    listed = events.list_namespaced_event(NS, field_selector="reason=RolloutRegression")
    assert [e.metadata.name for e in listed.items] == ["payments-api.1"]
    assert len(events.list_namespaced_event(NS).items) == 2
    assert events.list_namespaced_event("elsewhere").items == []

    duplicate = httpx.post(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                           json=event(name="payments-api.1"))
    assert duplicate.status_code == 409 and duplicate.json()["reason"] == "AlreadyExists"
    invalid = httpx.post(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                         json=event(reportingController=None))
    expected = fixture("kubernetes/event_create_invalid.json")["response"]
    assert invalid.status_code == expected["status"] == 422
    body = invalid.json()
    assert body.keys() == expected["json"].keys() and body["reason"] == "Invalid"
    assert {c["field"] for c in body["details"]["causes"]} == {"reportingController"}
    for missing in ("action", "reportingInstance", "eventTime"):
        refused = httpx.post(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                             json=event(name=f"e-{missing.lower()}", **{missing: None}))
        assert refused.status_code == 422 and missing in refused.json()["message"]
    wrong_namespace = httpx.post(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                                 json={**event(name="x"),
                                       "metadata": {"name": "x", "namespace": "b"}})
    assert wrong_namespace.status_code == 400
    unsupported = httpx.get(f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
                            params={"fieldSelector": "note=x"})
    assert unsupported.status_code == 400 and "field label not supported" in unsupported.text
    assert len(fake.events[NS]) == 2


def warnings_at(w: World, at: float) -> list[dict[str, Any]]:
    return w.warning_events(NS, w.at(at))


def pods_by_name(w: World, at: float) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in w.pods_list(NS, w.at(at))["items"]}


def test_the_kubelet_back_off_schedule() -> None:
    assert back_off_occurrences(100, 100) == (1, 100)
    assert back_off_occurrences(100, 109.9) == (1, 100)
    # 10 s, then doubling: 110, 130, 170, 250, 410, then every 5 min.
    assert [back_off_occurrences(100, t)[0] for t in (110, 130, 169, 170, 250, 410)] == \
        [2, 3, 3, 4, 5, 6]
    assert back_off_occurrences(100, 709) == (6, 410)
    assert back_off_occurrences(100, 710) == (7, 710)
    assert back_off_occurrences(100, 100 + 86400)[0] == 6 + (86400 - 310) // 300


def test_a_crash_loop_is_a_back_off_warning_about_each_failing_pod() -> None:
    crash = with_problems({"from": 90, "problem": "CrashLoopBackOff", "restarts": 4, "pods": 1})
    assert warnings_at(crash, 89) == []
    [event] = warnings_at(crash, 300)
    pod = pods_by_name(crash, 300)[event["involvedObject"]["name"]]
    metadata = pod["metadata"]
    assert metadata["name"] == crash.pod_names(2)[0]  # only the first pod has the problem
    assert event["type"] == "Warning" and event["reason"] == "BackOff"
    assert event["message"] == (f"Back-off restarting failed container {DEP} in pod "
                                f"{metadata['name']}_{NS}({metadata['uid']})")
    assert event["involvedObject"] == {
        "kind": "Pod", "namespace": NS, "name": metadata["name"], "uid": metadata["uid"],
        "apiVersion": "v1", "resourceVersion": metadata["resourceVersion"],
        "fieldPath": f"spec.containers{{{DEP}}}"}
    node = pod["spec"]["nodeName"]
    assert event["source"] == {"component": "kubelet", "host": node}
    assert (event["reportingComponent"], event["reportingInstance"]) == ("kubelet", node)
    assert event["metadata"]["name"].startswith(metadata["name"] + ".")
    assert event["metadata"]["namespace"] == NS and event["eventTime"] is None
    # First written when the problem began, counted again on the back-off schedule.
    assert event["firstTimestamp"] == event["metadata"]["creationTimestamp"] == \
        kube_time(crash.at(90))
    assert (event["count"], event["lastTimestamp"]) == (5, kube_time(crash.at(240)))
    assert event["metadata"]["resourceVersion"] == resource_version_at(crash.at(240))
    later = warnings_at(crash, 600)[0]
    assert later["metadata"]["name"] == event["metadata"]["name"]
    assert later["count"] == 6 and later["metadata"]["resourceVersion"] > \
        event["metadata"]["resourceVersion"]
    assert warnings_at(crash, 300) == [event]  # a pure function of the time
    assert crash.warning_events("elsewhere", crash.at(300)) == []


@pytest.mark.parametrize("problem, expected", [
    ("OOMKilled", [("BackOff", "Back-off restarting failed container payments-api in pod ")]),
    ("ErrImagePull", [
        ("Failed", 'Failed to pull image "payments-api:1.5.0": rpc error: code = NotFound'),
        ("Failed", "Error: ErrImagePull")]),
    ("ImagePullBackOff", [
        ("Failed", 'Failed to pull image "payments-api:1.5.0": rpc error: code = NotFound'),
        ("Failed", "Error: ErrImagePull"),
        ("BackOff", 'Back-off pulling image "payments-api:1.5.0"'),
        ("Failed", "Error: ImagePullBackOff")]),
    ("CreateContainerConfigError", [
        ("Failed", f'Error: configmap "{DEP}-config" not found')]),
])
def test_each_pod_problem_has_the_kubelet_s_warnings(problem: str,
                                                     expected: list[tuple[str, str]]) -> None:
    w = with_problems({"from": 65, "problem": problem})
    events = warnings_at(w, 120)
    assert {e["involvedObject"]["name"] for e in events} == set(w.pod_names(2))
    for pod in w.pod_names(2):
        mine = [e for e in events if e["involvedObject"]["name"] == pod]
        assert [(e["reason"], e["message"][:len(prefix)]) for e, (_, prefix)
                in zip(mine, expected)] == expected
        assert len(mine) == len(expected)
        assert len({e["metadata"]["name"] for e in mine}) == len(mine)
    if problem == "CreateContainerConfigError":
        # The ConfigMap the Event names is the one the container's waiting state names.
        waiting = statuses(w, 120)[0]["containerStatuses"][0]["state"]["waiting"]["message"]
        assert events[0]["message"] == f"Error: {waiting}"


def test_pods_that_are_gone_or_healthy_have_no_warnings() -> None:
    fixed = world(revisions=[
        {"revision": 1, "at": -86400, "image": "payments-api:1.4.2", "replicas": 2},
        {"revision": 2, "at": 60, "image": "payments-api:1.5.0", "replicas": 2,
         "pod_problems": [{"from": 90, "problem": "CrashLoopBackOff"}]},
        {"revision": 3, "at": 300, "image": "payments-api:1.5.1", "replicas": 2},
    ])
    assert len(warnings_at(fixed, 320)) == 2  # revision 2's pods are still draining
    assert warnings_at(fixed, 300 + 30) == []  # gone with them
    assert warnings_at(world(), 300) == []


@pytest.fixture
def crashing_kube() -> Any:
    clock = SimClock(T0 + timedelta(seconds=300))
    fake = KubeApiFake(with_problems({"from": 90, "problem": "CrashLoopBackOff", "restarts": 4}),
                       clock)
    with LocalServer(fake) as server:
        configuration = k8s.Configuration()
        configuration.host = server.url
        with k8s.ApiClient(configuration) as api:
            yield fake, server, api, clock


def test_core_events_list_the_kubelet_s_warnings_and_the_stored_events(crashing_kube: Any) -> None:
    fake, server, api, clock = crashing_kube
    url = f"{server.url}/apis/events.k8s.io/v1/namespaces/{NS}/events"
    assert httpx.post(url, json=event(name="payments-api.1")).status_code == 201
    assert httpx.post(url, json=event(name="payments-api.2", type="Normal",
                                      reason="Noted")).status_code == 201

    core = k8s.CoreV1Api(api)
    everything = core.list_namespaced_event(NS).items
    assert [e.metadata.name for e in everything] == sorted(e.metadata.name for e in everything)
    assert len(everything) == 4
    warnings = core.list_namespaced_event(NS, field_selector="type=Warning").items
    assert sorted((e.involved_object.kind, e.reason) for e in warnings) == [
        ("Deployment", "RolloutRegression"), ("Pod", "BackOff"), ("Pod", "BackOff")]
    assert all(e.type == "Warning" for e in warnings)
    assert core.list_namespaced_event(NS, field_selector="type=Normal").items[0].reason == "Noted"
    # kubectl describe pod: the pod's Events by its kind, name, namespace and uid.
    pod = core.list_namespaced_pod(NS).items[-1]
    selector = (f"involvedObject.kind=Pod,involvedObject.name={pod.metadata.name},"
                f"involvedObject.namespace={NS},involvedObject.uid={pod.metadata.uid}")
    [described] = core.list_namespaced_event(NS, field_selector=selector).items
    assert described.count == 5 and pod.metadata.uid in described.message
    assert described.last_timestamp == T0 + timedelta(seconds=240)
    assert core.list_namespaced_event("elsewhere").items == []


def test_core_events_are_paged_by_limit_and_continue(crashing_kube: Any) -> None:
    _, server, _, _ = crashing_kube
    url = f"{server.url}/api/v1/namespaces/{NS}/events"
    first = httpx.get(url, params={"fieldSelector": "type=Warning", "limit": "1"}).json()
    assert len(first["items"]) == 1
    assert first["metadata"]["remainingItemCount"] == 1
    second = httpx.get(url, params={"fieldSelector": "type=Warning", "limit": "1",
                                    "continue": first["metadata"]["continue"]}).json()
    assert len(second["items"]) == 1 and "continue" not in second["metadata"]
    assert first["items"][0]["metadata"]["name"] < second["items"][0]["metadata"]["name"]
    for params in ({"limit": "many"}, {"continue": "not-a-token"}):
        refused = httpx.get(url, params=params)
        assert refused.status_code == 400 and refused.json()["reason"] == "BadRequest"


def test_the_kube_source_reads_the_fake_s_warnings(crashing_kube: Any) -> None:
    fake, server, _, clock = crashing_kube
    client = KubeClient(api=api_client_for(server.url), timeout=5.0)
    found = asyncio.run(client.list_warning_events(NS))
    assert [(e.reason, e.object_kind, e.count) for e in found] == [("BackOff", "Pod", 5)] * 2
    assert {e.object_name for e in found} == set(fake.world.pod_names(2))
    assert all(e.last_seen == T0 + timedelta(seconds=240) for e in found)
    assert fake.lists[f"/api/v1/namespaces/{NS}/events"] == 1
    clock.now += timedelta(minutes=10)
    assert {e.count for e in asyncio.run(client.list_warning_events(NS, limit=1))} == {7}


def lease(holder: str) -> k8s.V1Lease:
    return k8s.V1Lease(metadata=k8s.V1ObjectMeta(name="incident-detector"), spec=k8s.V1LeaseSpec(
        holder_identity=holder, lease_duration_seconds=15, acquire_time=T0, renew_time=T0))


def test_leases_support_create_conflict_and_compare_and_swap(kube: Any) -> None:
    _, server, api, _ = kube
    leases = k8s.CoordinationV1Api(api)
    with pytest.raises(ApiException) as absent:
        leases.read_namespaced_lease("incident-detector", NS)
    assert absent.value.status == 404
    assert json.loads(absent.value.body)["details"]["group"] == "coordination.k8s.io"
    created = leases.create_namespaced_lease(NS, lease("detector-0"))
    with pytest.raises(ApiException) as taken:
        leases.create_namespaced_lease(NS, lease("detector-1"))
    recorded = fixture("kubernetes/lease_conflict.json")["response"]["json"]
    assert json.loads(taken.value.body) == recorded
    current = leases.read_namespaced_lease("incident-detector", NS)
    assert current.spec.holder_identity == "detector-0"
    renewed = lease("detector-0")
    renewed.metadata.resource_version = current.metadata.resource_version
    renewed.spec.renew_time = T0 + timedelta(seconds=10)
    updated = leases.replace_namespaced_lease("incident-detector", NS, renewed)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    assert updated.metadata.uid == created.metadata.uid
    stale = lease("detector-1")
    stale.metadata.resource_version = current.metadata.resource_version
    with pytest.raises(ApiException) as conflict:
        leases.replace_namespaced_lease("incident-detector", NS, stale)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"
    holder = leases.read_namespaced_lease("incident-detector", NS).spec.holder_identity
    assert holder == "detector-0"
    unversioned = httpx.put(f"{server.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/"
                            "incident-detector",
                            json={"metadata": {"name": "incident-detector"}, "spec": {}})
    assert unversioned.status_code == 422


@pytest.fixture
def loki() -> Any:
    clock = SimClock(T0 + timedelta(seconds=300))
    fake = LokiFake(world(), clock)
    with LocalServer(fake) as server:
        yield fake, server, clock


def test_the_loki_fake_answers_over_http(loki: Any) -> None:
    fake, server, clock = loki
    url = server.url
    assert httpx.get(f"{url}/ready").text == "ready\n"
    now = httpx.get(f"{url}/loki/api/v1/query", params={"query": metric_query()})
    assert now.headers["content-type"].startswith("application/json")
    assert sum(float(r["value"][1]) for r in now.json()["data"]["result"]) == 120
    earlier = httpx.get(f"{url}/loki/api/v1/query",
                        params={"query": metric_query(), "time": str(to_unix_nanos(T0))})
    assert earlier.json()["data"]["result"] == []
    as_seconds = httpx.get(f"{url}/loki/api/v1/query",
                           params={"query": metric_query(), "time": f"{T0.timestamp() + 300:.3f}"})
    assert as_seconds.json()["data"]["result"] == now.json()["data"]["result"]
    posted = httpx.post(f"{url}/loki/api/v1/query", data={"query": metric_query()})
    assert posted.json() == now.json()
    refused = httpx.get(f"{url}/loki/api/v1/query", params={"query": '{app=~".*"}'})
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("text/plain")
    assert httpx.get(f"{url}/loki/api/v1/query", params={"query": metric_query(),
                                                          "time": "soon"}).status_code == 400
    lines = httpx.get(f"{url}/loki/api/v1/query_range", params={
        "query": error_lines_query(namespace=NS, workloads=[DEP], pattern="error", keys=KEYS),
        "start": str(to_unix_nanos(T0)), "end": str(to_unix_nanos(clock.now)),
        "limit": "7", "direction": "backward"})
    assert sum(len(s["values"]) for s in lines.json()["data"]["result"]) == 7
    assert httpx.get(f"{url}/loki/api/v1/query_range", params={
        "query": '{app="x"}', "direction": "sideways"}).status_code == 400
    assert httpx.get(f"{url}/loki/api/v1/labels").status_code == 404
    assert fake.requests_by_path["/loki/api/v1/query"] == 6


def test_faults_answer_first_and_requests_are_counted(loki: Any) -> None:
    fake, server, _ = loki
    fake.faults = FailFirst(2, Response(429, "Too Many Requests", "text/plain",
                                        headers={"Retry-After": "3"}),
                            path_prefix="/loki/api/v1/query")
    answers = [httpx.get(f"{server.url}/loki/api/v1/query", params={"query": metric_query()})
               for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["retry-after"] == "3"
    assert httpx.get(f"{server.url}/ready").status_code == 200
    fake.faults = lambda request: Response(200, b'{"status":"succ')
    truncated = httpx.get(f"{server.url}/loki/api/v1/query", params={"query": "x"})
    assert truncated.text == '{"status":"succ'
    assert fake.requests_by_path == {"/loki/api/v1/query": 4, "/ready": 1}


def test_the_slack_sink_keeps_every_message() -> None:
    sink = SlackSink()
    with LocalServer(sink) as server:
        hook = f"{server.url}/services/T000/B000/XXXX"
        ok = httpx.post(hook, json={"text": "revision 2 is bad", "blocks": []})
        assert (ok.status_code, ok.text, ok.headers["content-type"]) == (
            200, "ok", "text/plain; charset=utf-8")
        assert httpx.post(hook, content=b"not json").text == "invalid_payload"
        assert httpx.post(hook, json={"blocks": []}).text == "no_text"
        sink.faults = FailFirst(1, Response(503, "service unavailable", "text/plain"))
        assert httpx.post(hook, json={"text": "again"}).status_code == 503
        assert httpx.post(hook, json={"text": "again"}).status_code == 200
    assert sink.messages == [{"text": "revision 2 is bad", "blocks": []}, {"text": "again"}]
    assert sink.requests_by_path["/services/T000/B000/XXXX"] == 5


# --- log levels: Loki 3's detected_level, and a Loki 2 without it ----------------------------------

from incident_detector.config import DEFAULT_ERROR_LEVELS  # noqa: E402
from incident_detector.sources.loki import ErrorMatch, error_lines_queries  # noqa: E402
from incident_detector.sim.levels import detect_level  # noqa: E402
from incident_detector.sim.logql import BinaryOperation  # noqa: E402


@pytest.mark.parametrize(("line", "level"), [
    ('level=info msg="request served" error=<nil>', "info"),
    ('{"level":"info","errors":0}', "info"),
    ("INFO retry succeeded after previous error", "info"),
    ('level=error msg="charge failed" err="NPE"', "error"),
    ('level=ERR msg="x"', "error"),
    ('Level=WARNING msg="x"', "warn"),
    ('lvl=debug severity=critical', "critical"),  # "level"/"severity" come before "lvl"
    ('{"ts":1,"log":{"level":"fatal"}}', "fatal"),  # nested objects, in document order
    ('{"level":30,"msg":"pino"}', "unknown"),  # only string values are levels
    ('msg="x" level=notice', "unknown"),  # not a level: keywords, then unknown
    ("[ERROR] db down", "error"),
    ("ERR: boom", "error"),
    ("panic: runtime error: index out of range", "unknown"),  # a bare "error" is no keyword
    ("java.lang.NullPointerException: card is null", "unknown"),
    ("something warning here", "warn"),
    ("DEBUG: cache miss", "debug"),
    ("", "unknown"),
])
def test_lines_get_the_level_loki_3_detects(line: str, level: str) -> None:
    assert detect_level(line) == level


def test_a_level_label_of_the_stream_wins() -> None:
    assert detect_level("ERR: boom", {"level": "INFO"}) == "info"
    assert detect_level("x", {"severity": "notice"}) == "notice"


MIXED_LOGS = [
    {"revision": 2, "from": 75, "per_minute": 30, "line": ERROR_LINE},
    {"revision": 2, "from": 75, "per_minute": 15,
     "line": 'level=info msg="request served" error=<nil> order_id={n}'},
    {"revision": 2, "from": 75, "per_minute": 6, "line": "panic: runtime error (order {n})"},
    {"revision": 2, "from": 75, "per_minute": 3, "line": "cache warmed in {n3} ms"},
]


def level_query(window: int = 120) -> str:
    return error_count_query(namespace=NS, workloads=[DEP], pattern=DEFAULT_ERROR_PATTERN,
                             levels=DEFAULT_ERROR_LEVELS, window_seconds=window, keys=KEYS)


def test_loki_3_groups_by_detected_level_and_filters_on_it() -> None:
    w = world(logs=MIXED_LOGS)
    selector = f'{{namespace="{NS}", app="{DEP}"}}'
    by_level = vector(w.loki_query(
        f"sum by (detected_level) (count_over_time({selector} [2m]))", w.at(300)))
    # 2 pods: 60 error, 30 info, 12 unknown ("panic: runtime error"), 6 unknown (no level at all)
    assert by_level == {(("detected_level", "error"),): 120.0, (("detected_level", "info"),): 60.0,
                        (("detected_level", "unknown"),): 36.0}
    # The level-aware query: the error lines, and the unknown ones that match the pattern.
    counts = vector(w.loki_query(level_query(), w.at(300)))
    assert {key: value for key, value in counts.items()} == {
        **{(("app", DEP), ("detected_level", "error"), ("pod", pod)): 60.0
           for pod in w.pod_names(2)},
        **{(("app", DEP), ("detected_level", "unknown"), ("pod", pod)): 12.0
           for pod in w.pod_names(2)},
    }
    # A stream selector does not see structured metadata.
    assert vector(w.loki_query('sum(count_over_time({detected_level="error"} [2m]))',
                               w.at(300))) == {}


def test_loki_3_returns_detected_level_with_the_stream_labels() -> None:
    w = world(logs=MIXED_LOGS)
    level_leg, _ = error_lines_queries(namespace=NS, workloads=[DEP],
                                       match=ErrorMatch(DEFAULT_ERROR_PATTERN,
                                                        DEFAULT_ERROR_LEVELS), keys=KEYS)
    status, body = w.loki_query_range(level_leg, w.at(60), w.at(300), limit=5)
    assert status == 200
    streams = body["data"]["result"]
    assert {s["stream"]["detected_level"] for s in streams} == {"error"}
    assert all(line.startswith("level=error") for s in streams for _, line in s["values"])
    shape = fixture("loki/query_range_streams_sm.json")["response"]["json"]["data"]["result"][0]
    assert set(shape["stream"]) - {"service_name"} <= set(streams[0]["stream"])


def test_loki_2_has_no_detected_level_and_the_level_query_becomes_the_pattern() -> None:
    w = world(logs=MIXED_LOGS, loki={"version": "2.9.8"})
    selector = f'{{namespace="{NS}", app="{DEP}"}}'
    grouped = vector(w.loki_query(
        f"sum by (app, detected_level) (count_over_time({selector} [2m]))", w.at(300)))
    assert list(grouped) == [(("app", DEP),)]  # the absent label groups as nothing
    # A label filter sees an absent label as the empty string.
    assert vector(w.loki_query(
        f'sum(count_over_time({selector} | detected_level="" [2m]))', w.at(300))) == {(): 216.0}
    assert vector(w.loki_query(
        f'sum(count_over_time({selector} | detected_level=~"error|fatal" [2m]))',
        w.at(300))) == {}
    by_pattern = vector(w.loki_query(metric_query(), w.at(300)))
    assert vector(w.loki_query(level_query(), w.at(300))) == by_pattern
    # Per pod: 60 level=error lines, 30 info lines with "error=<nil>", 12 panics.
    assert sum(by_pattern.values()) == 2 * (60 + 30 + 12)


def test_or_is_a_union_that_keeps_the_left_on_equal_label_sets() -> None:
    w = world(logs=MIXED_LOGS)
    selector = f'{{namespace="{NS}", app="{DEP}"}}'
    errors = f"sum by (app) (count_over_time({selector} |= \"level=error\" [2m]))"
    infos = f"sum by (app) (count_over_time({selector} |= \"level=info\" [2m]))"
    assert vector(w.loki_query(f"{errors} or {infos}", w.at(300))) == {(("app", DEP),): 120.0}
    by_level = "sum by (detected_level) (count_over_time({selector} [2m]))".replace(
        "{selector}", selector)
    nested = f"sum by (app) ({by_level} or {errors})"
    assert vector(w.loki_query(f"({nested})", w.at(300))) == {(): 216.0, (("app", DEP),): 120.0}
    assert isinstance(parse_logql(f"{errors} or {infos} or {errors}"), BinaryOperation)
    status, text = w.loki_query(f"{errors} and {infos}", w.at(300))
    assert status == 400 and "parse error" in text


def test_label_filters_in_any_order_with_line_filters() -> None:
    w = world(logs=MIXED_LOGS)
    selector = f'{{namespace="{NS}", app="{DEP}"}}'
    one = vector(w.loki_query(
        f'sum(count_over_time({selector} |~ "panic" | detected_level = "unknown" [2m]))',
        w.at(300)))
    other = vector(w.loki_query(
        f'sum(count_over_time({selector} | detected_level!~"error|info" |= "panic" [2m]))',
        w.at(300)))
    assert one == other == {(): 24.0}


def test_scenarios_say_which_loki_they_run_on() -> None:
    assert scenario().loki.detects_levels
    assert not scenario(loki={"version": "2.9.8"}).loki.detects_levels
    assert not scenario(loki={"discover_log_levels": False}).loki.detects_levels
    with pytest.raises(ValueError, match="needs Loki 3.0"):
        scenario(loki={"version": "2.9.8", "discover_log_levels": True})
    with pytest.raises(ValueError, match="not a Loki version"):
        scenario(loki={"version": "latest"})


def test_the_loki_fake_reports_its_version() -> None:
    clock = SimClock(T0)
    for version in ("3.5.7", "2.9.8"):
        with LocalServer(LokiFake(world(loki={"version": version}), clock)) as server:
            answer = httpx.get(f"{server.url}/loki/api/v1/status/buildinfo")
            assert answer.status_code == 200 and answer.json()["version"] == version


def test_the_info_lines_scenario_would_fire_on_the_word_pattern() -> None:
    """The scenario shows something: judged by the pattern alone, its info lines are a spike."""
    import asyncio

    from incident_detector.sim.replay import replay

    path = SCENARIOS / "info-lines-that-mention-errors.yaml"
    by_pattern = load_scenario(path).model_copy(update={"settings": {"error_match": "pattern"}})
    result = asyncio.run(replay(by_pattern))
    assert [n.record["revision"] for n in result.notifications] == [2]
    assert asyncio.run(replay(load_scenario(path))).notifications == []


# --- reused ReplicaSets and a Deployment created again ----------------------------------------

def _objects(world, resource: str, t: float) -> list[dict]:
    return world.objects(resource, world.scenario.namespace, world.at(t))


def test_an_undo_makes_the_old_replicaset_current_again_as_the_controller_does():
    scenario = load_scenario(SCENARIOS / "rollout-undo-to-a-bad-old-template.yaml")
    world = World(scenario, t0=T0)
    replicasets = {rs["metadata"]["name"]: rs for rs in _objects(world, "replicasets", 100)}
    assert len(replicasets) == 2  # no ReplicaSet is created by the undo
    undone = replicasets[world.replicaset_name(1)]
    annotations = undone["metadata"]["annotations"]
    assert annotations["deployment.kubernetes.io/revision"] == "3"
    assert annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert undone["metadata"]["creationTimestamp"] == kube_time(world.at(-259200))
    [written] = undone["metadata"]["managedFields"]
    assert written["manager"] == "kube-controller-manager" and written["time"] == kube_time(world.at(60))
    deployment = world.deployment(scenario.namespace, world.at(100))
    progressing = [c for c in deployment["status"]["conditions"] if c["type"] == "Progressing"][0]
    assert world.replicaset_name(1) in progressing["message"]
    # Its new pods have names of their own, and the old ones are long gone.
    pods = [p["metadata"]["name"] for p in _objects(world, "pods", 100)]
    assert set(world.pod_names(3)) <= set(pods) and not set(world.pod_names(1)) & set(pods)


def test_a_deployment_created_again_has_new_uids_and_counts_revisions_from_one():
    scenario = load_scenario(SCENARIOS / "deployment-created-again.yaml")
    world = World(scenario, t0=T0)
    before = world.deployment(scenario.namespace, world.at(650))
    after = world.deployment(scenario.namespace, world.at(950))
    assert before["metadata"]["uid"] != after["metadata"]["uid"]
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert after["metadata"]["creationTimestamp"] == kube_time(world.at(700))
    # The old object's ReplicaSets and pods went with it; the new ones point at the new uid.
    replicasets = _objects(world, "replicasets", 950)
    assert {rs["metadata"]["name"] for rs in replicasets} == {world.replicaset_name(3),
                                                              world.replicaset_name(4)}
    assert {rs["metadata"]["ownerReferences"][0]["uid"] for rs in replicasets} == \
        {after["metadata"]["uid"]}
    assert not [p for p in _objects(world, "pods", 720)
                if p["metadata"]["name"].startswith(world.replicaset_name(2))]
    assert world.scenario_revision(replicaset=world.replicaset_name(4), revision=2) == 4
    assert world.scenario_revision(replicaset=world.replicaset_name(2), revision=2) == 2


def test_the_simulated_apiserver_carries_out_a_rollback_as_the_controller_does():
    scenario = load_scenario(SCENARIOS / "bad-rollout-sharp-spike.yaml")
    clock_now = {"t": T0 + timedelta(seconds=200)}
    world = World(scenario, t0=T0)
    changed: list[World] = []
    fake = KubeApiFake(world, lambda: clock_now["t"], on_world_change=changed.append)
    with LocalServer(fake) as server:
        path = f"{server.url}/apis/apps/v1/namespaces/{scenario.namespace}/deployments/{scenario.deployment}"
        before = httpx.get(path).json()
        template = httpx.get(f"{server.url}/apis/apps/v1/namespaces/{scenario.namespace}/"
                             f"replicasets/{world.replicaset_name(1)}").json()["spec"]["template"]
        headers = {"Content-Type": "application/json-patch+json"}

        def patch(version: str, *, dry_run: bool = False) -> httpx.Response:
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": version},
                   {"op": "replace", "path": "/spec/template", "value": template}]
            return httpx.patch(path + ("?dryRun=All" if dry_run else ""), json=ops,
                               headers=headers)

        assert patch("1").status_code == 422  # stale precondition, as the API server answers
        assert patch(before["metadata"]["resourceVersion"], dry_run=True).status_code == 200
        assert changed == []  # a dry run changes nothing
        assert httpx.patch(path, json={"spec": {"paused": True}}).status_code == 405
        answer = patch(before["metadata"]["resourceVersion"])
        assert answer.status_code == 200
        after = answer.json()
        # Revision 1's ReplicaSet is current again, as revision 3 (what `rollout undo` does).
        assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert after["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.4.2")
        [world_after] = changed
        replicasets = {rs["metadata"]["name"]: rs for rs in
                       world_after.objects("replicasets", scenario.namespace, clock_now["t"])}
        assert replicasets[world.replicaset_name(1)]["metadata"]["annotations"][
            "deployment.kubernetes.io/revision-history"] == "1"
        # The precondition seen before is stale now.
        assert patch(before["metadata"]["resourceVersion"]).status_code == 422


# --- several Deployments, Services, ConfigMaps and Secrets ---------------------------------------

SHOP = "shop"


def shop_scenario(**changes: Any) -> Scenario:
    """checkout (one old revision, PAYMENTS_URL, orders-config mounted, db Secret) and payments
    (rolling out at 60 s); orders-config patched at 60 s and again at 200 s."""
    raw: dict[str, Any] = {
        "description": "test", "namespace": SHOP, "deployment": "checkout", "duration": 600,
        "pod_labels": {"app": "checkout"},
        "revisions": [{"revision": 1, "at": -86400, "image": "checkout:3.2.1", "replicas": 2,
                       "env": {"PAYMENTS_URL": "http://payments:8080"},
                       "config_maps": ["orders-config"], "env_from_config_maps": ["flags"],
                       "secrets": ["db"]}],
        "logs": [{"revision": 1, "from": 75, "per_minute": 30,
                  "line": 'level=error msg="upstream call failed" host=payments order_id={n}'}],
        "workloads": [{
            "name": "payments", "pod_labels": {"app.kubernetes.io/name": "payments"},
            "revisions": [{"revision": 1, "at": -172800, "image": "payments:2.3.4"},
                          {"revision": 2, "at": 60, "image": "payments:2.4.0"}],
            "logs": [{"revision": 2, "from": 75, "per_minute": 6,
                      "line": 'level=error msg="charge failed" status=503'}]}],
        "services": [{"name": "payments", "selector": {"app.kubernetes.io/name": "payments"},
                      "ports": [8080]},
                     {"name": "checkout", "selector": {"app": "checkout"},
                      "ports": [{"port": 80, "target_port": "http", "name": "http"},
                                {"port": 9090, "name": "metrics"}]}],
        "config_maps": [
            {"name": "orders-config", "created_at": -3600,
             "data": {"TIMEOUT_MS": "5000", "FEATURE_X": "off"},
             "changes": [{"at": 60, "data": {"TIMEOUT_MS": "50"}, "manager": "kubectl-patch"},
                         {"at": 200, "data": {"FEATURE_X": None, "RETRIES": "3"},
                          "manager": "helm"}]},
            {"name": "flags", "data": {"BANNER": "off"}}],
        "secrets": [{"name": "db", "data": {"DB_USER": "shop", "DB_PASSWORD": "hunter2"},
                     "changes": [{"at": 300, "data": {"DB_PASSWORD": "hunter3"}}]}],
        "expect": {"incidents": [], "change_incidents": [
            {"deployment": "checkout", "cause": {"kind": "Deployment", "name": "payments"},
             "action": "rollback", "target": "payments"}]},
    }
    raw.update(changes)
    return Scenario.model_validate(raw)


def config_watch_fixture() -> dict[str, Any]:
    return fixture("kubernetes/configmap_watch.json")["response"]["json"]


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["revisions"][0].update(config_maps=["nope"]),
     "revisions[0].config_maps: no 'nope' in the scenario's config_maps"),
    (lambda r: r["workloads"][0]["revisions"][1].update(secrets=["db", "gone"]),
     "workloads[0].revisions[1].secrets: no 'gone' in the scenario's secrets"),
    (lambda r: r["workloads"][0]["revisions"][1].update(at=-172800),
     "workloads[0].revisions: `at` times must be strictly increasing"),
    (lambda r: r["workloads"][0]["logs"][0].update(revision=5),
     "workloads[0].logs[0].revision: no revision 5"),
    (lambda r: r["workloads"][0].update(name="checkout"), "'checkout' is already defined"),
    (lambda r: r["workloads"][0].update(pod_labels={"app": "checkout"}),
     "would write the same log streams"),
    (lambda r: r["config_maps"][0]["changes"][0].update(data={"TIMEOUT_MS": "5000"}),
     "config_maps[0]: changes[0] changes nothing"),
    (lambda r: r["config_maps"][0]["changes"][1].update(at=30),
     "changes[1].at must be after the creation and the change before it"),
    (lambda r: r["config_maps"][0].update(data={"TIMEOUT_MS": 5000}),
     "config_maps[0].data.TIMEOUT_MS: Input should be a valid string"),
    (lambda r: r["config_maps"][0].update(data={"bad key": "x"}), "'bad key' is not a valid"),
    (lambda r: r["config_maps"].append({"name": "flags"}), "config_maps[2].name: 'flags' is listed"),
    (lambda r: r["services"][1]["ports"][1].pop("name"), "each port needs a name"),
    (lambda r: r["services"][0].update(name="Payments"), "not a valid Service name"),
    (lambda r: r["expect"]["change_incidents"][0].update(deployment="cart"),
     "expect.change_incidents[0].deployment: no Deployment 'cart'"),
    (lambda r: r["expect"]["change_incidents"][0]["cause"].update(kind="Configmap"),
     "'Configmap' is not a watched kind"),
    (lambda r: r["expect"]["change_incidents"][0]["cause"].update(name="billing"),
     "the scenario has no Deployment 'billing'"),
    (lambda r: r["expect"]["change_incidents"][0]["cause"].update(name="checkout"),
     "a Deployment's own rollout is a rollout incident"),
    (lambda r: r["expect"]["change_incidents"][0].update(action="undo"), "'undo' is not an action"),
    (lambda r: r["expect"]["change_incidents"][0].update(target="billing"),
     "expect.change_incidents[0].target: no Deployment 'billing'"),
    (lambda r: r["expect"].update(incidents=[{"deployment": "payments", "revision": 3}]),
     "no revision 3 in revisions of payments"),
    (lambda r: r["expect"].update(incidents=[{"deployment": "billing", "revision": 1}]),
     "expect.incidents[0].deployment: no Deployment 'billing'"),
])
def test_invalid_multi_workload_scenarios_say_what_is_wrong(tmp_path: Path, change: Any,
                                                            expected: str) -> None:
    raw = shop_scenario().model_dump(by_alias=True, exclude={"name"})
    raw = json.loads(json.dumps(raw))  # plain lists and dicts, as YAML gives them
    change(raw)
    assert expected in problems_of(write_scenario(tmp_path, raw))


def test_a_reused_revision_repeats_the_config_of_its_template(tmp_path: Path) -> None:
    raw = valid_raw()
    raw["config_maps"] = [{"name": "cfg", "data": {"A": "1"}}]
    raw["revisions"][1]["config_maps"] = ["cfg"]
    raw["revisions"].append({"revision": 3, "at": 300, "reuses": 1,
                             "image": raw["revisions"][0]["image"],
                             "env": raw["revisions"][0].get("env", {}), "config_maps": ["cfg"]})
    assert "repeats the image, env, resources and config of revision 1" in problems_of(
        write_scenario(tmp_path, raw))


def test_config_writes_merge_replace_and_remove_keys() -> None:
    [orders, _] = shop_scenario().config_maps
    writes = orders.writes()
    assert [(w.at, w.manager, w.changed, w.removed) for w in writes] == [
        (-3600, "kubectl-create", ("TIMEOUT_MS", "FEATURE_X"), ()),
        (60, "kubectl-patch", ("TIMEOUT_MS",), ()),
        (200, "helm", ("RETRIES",), ("FEATURE_X",))]
    assert writes[-1].data == {"TIMEOUT_MS": "50", "RETRIES": "3"}
    replaced = orders.model_copy(update={"changes": (orders.changes[0].model_copy(
        update={"data": {"ONLY": "this"}, "replace": True}),)})
    assert replaced.writes()[-1].data == {"ONLY": "this"}
    assert replaced.writes()[-1].removed == ("TIMEOUT_MS", "FEATURE_X")
    assert [w.at for w in orders.writes_until(100)] == [-3600, 60]
    assert orders.writes_until(-7200) == ()


def test_a_configmap_write_looks_like_the_recorded_watch_event() -> None:
    w = World(shop_scenario(), t0=T0)
    recorded = config_watch_fixture()["object"]
    [ours] = [c for c in w.objects("configmaps", SHOP, w.at(100))
              if c["metadata"]["name"] == "orders-config"]
    assert key_paths(ours) == key_paths(recorded)
    # Keyed by the same managers, in the same order, naming the same fields: the patch owns
    # the key it changed, the creator the map and the keys it still has.
    assert [e["manager"] for e in ours["metadata"]["managedFields"]] == \
        [e["manager"] for e in recorded["metadata"]["managedFields"]]
    assert [e["fieldsV1"] for e in ours["metadata"]["managedFields"]] == \
        [e["fieldsV1"] for e in recorded["metadata"]["managedFields"]]
    assert ours["data"] == recorded["data"] == {"FEATURE_X": "off", "TIMEOUT_MS": "50"}
    assert [e["time"] for e in ours["metadata"]["managedFields"]] == [
        kube_time(w.at(-3600)), kube_time(w.at(60))]
    assert ours["metadata"]["resourceVersion"] == resource_version_at(w.at(60))
    # Before the patch: the creator owns everything; after helm's write it owns its key, the
    # removed key is no one's, and the creator is left with the map itself.
    [before] = [c for c in w.objects("configmaps", SHOP, w.at(59))
                if c["metadata"]["name"] == "orders-config"]
    assert [(e["manager"], e["fieldsV1"]) for e in before["metadata"]["managedFields"]] == [
        ("kubectl-create", {"f:data": {".": {}, "f:FEATURE_X": {}, "f:TIMEOUT_MS": {}}})]
    assert before["data"] == {"FEATURE_X": "off", "TIMEOUT_MS": "5000"}
    [later] = [c for c in w.objects("configmaps", SHOP, w.at(250))
               if c["metadata"]["name"] == "orders-config"]
    assert [(e["manager"], e["time"], e["fieldsV1"]) for e in later["metadata"]["managedFields"]] \
        == [("kubectl-create", kube_time(w.at(-3600)), {"f:data": {".": {}}}),
            ("kubectl-patch", kube_time(w.at(60)), {"f:data": {"f:TIMEOUT_MS": {}}}),
            ("helm", kube_time(w.at(200)), {"f:data": {"f:RETRIES": {}}})]
    assert later["data"] == {"RETRIES": "3", "TIMEOUT_MS": "50"}
    assert w.objects("configmaps", SHOP, w.at(-7200)) == [
        c for c in w.objects("configmaps", SHOP, w.at(-7200)) if c["metadata"]["name"] == "flags"]


def test_secrets_are_base64_and_opaque_and_say_who_rotated_them() -> None:
    w = World(shop_scenario(), t0=T0)
    [secret] = w.objects("secrets", SHOP, w.at(400))
    assert (secret["kind"], secret["apiVersion"], secret["type"]) == ("Secret", "v1", "Opaque")
    assert secret["data"] == {"DB_PASSWORD": "aHVudGVyMw==", "DB_USER": "c2hvcA=="}
    assert [(e["manager"], e["fieldsV1"]) for e in secret["metadata"]["managedFields"]] == [
        ("kubectl-create", {"f:data": {".": {}, "f:DB_USER": {}}, "f:type": {}}),
        ("kubectl-patch", {"f:data": {"f:DB_PASSWORD": {}}})]
    assert secret["metadata"]["resourceVersion"] == resource_version_at(w.at(300))
    assert "hunter" not in json.dumps(secret)


def test_pod_templates_use_the_config_as_the_api_shows_it() -> None:
    w = World(shop_scenario(), t0=T0)
    [checkout] = [d for d in w.objects("deployments", SHOP, w.at(100))
                  if d["metadata"]["name"] == "checkout"]
    spec = checkout["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "orders-config", "configMap": {
        "name": "orders-config", "defaultMode": 420}}]
    [container] = spec["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "flags"}}]
    assert container["env"] == [
        {"name": "PAYMENTS_URL", "value": "http://payments:8080"},
        {"name": "DB_USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "DB_USER"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db",
                                                               "key": "DB_PASSWORD"}}}]
    assert container["volumeMounts"] == [{"name": "orders-config", "readOnly": True,
                                          "mountPath": "/etc/config/orders-config"}]
    # A pod: the template's volume and mount first, then the service account's.
    pod = next(p for p in w.objects("pods", SHOP, w.at(100))
               if p["metadata"]["name"].startswith("checkout-"))
    assert [v["name"] for v in pod["spec"]["volumes"]][0] == "orders-config"
    assert pod["spec"]["volumes"][1]["name"].startswith("kube-api-access-")
    assert [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]] == [
        "/etc/config/orders-config", "/var/run/secrets/kubernetes.io/serviceaccount"]
    # A scenario without config keeps the template it always had.
    plain = world().objects("deployments", NS, T0)[0]["spec"]["template"]["spec"]
    assert "volumes" not in plain and "envFrom" not in plain["containers"][0]


def test_every_workload_has_its_deployment_replicasets_pods_and_log_streams() -> None:
    w = World(shop_scenario(), t0=T0)
    deployments = {d["metadata"]["name"]: d for d in w.objects("deployments", SHOP, w.at(100))}
    assert set(deployments) == {"checkout", "payments"}
    payments = deployments["payments"]
    assert payments["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert payments["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "payments"}}
    assert payments["metadata"]["resourceVersion"] != deployments["checkout"]["metadata"][
        "resourceVersion"]
    # Who changed payments' template and when, as the API server's field manager says it.
    managers = [(e["manager"], e["time"]) for e in payments["metadata"]["managedFields"]]
    assert managers == [("kubectl-create", kube_time(w.at(-172800))),
                        ("kube-controller-manager", kube_time(w.at(60))),
                        ("kubectl-set", kube_time(w.at(60)))]
    assert payments["metadata"]["managedFields"][2]["fieldsV1"] == {"f:spec": {"f:template": {
        "f:spec": {"f:containers": {'k:{"name":"payments"}': {"f:image": {}}}}}}}
    replicasets = w.objects("replicasets", SHOP, w.at(100))
    assert sorted(rs["metadata"]["name"] for rs in replicasets) == sorted(
        [replicaset_name("checkout", 1), replicaset_name("payments", 1),
         replicaset_name("payments", 2)])
    owners = {rs["metadata"]["name"]: rs["metadata"]["ownerReferences"][0] for rs in replicasets}
    assert owners[replicaset_name("payments", 2)]["uid"] == payments["metadata"]["uid"]
    assert w.scenario_revision(replicaset=replicaset_name("payments", 2), revision=2,
                               deployment="payments") == 2
    assert w.scenario_revision(replicaset=replicaset_name("payments", 2), revision=2) is None
    assert w.part("payments").pod_names(2)[0].startswith(replicaset_name("payments", 2))
    # Loki: each workload's streams, under its own workload label and container.
    status, body = w.loki_query_range(
        '{namespace="shop", app="payments"}', w.at(60), w.at(120), limit=1000)
    assert status == 200 and body["data"]["result"]
    assert {s["stream"]["container"] for s in body["data"]["result"]} == {"payments"}
    assert {s["stream"]["pod"] for s in body["data"]["result"]} == set(
        w.part("payments").pod_names(2))
    status, body = w.loki_query_range(
        '{namespace="shop", app="checkout"} |= "host=payments"', w.at(60), w.at(120), limit=1000)
    assert status == 200 and len(body["data"]["result"]) == 2


@pytest.fixture
def shop_kube() -> Any:
    clock = SimClock(T0 + timedelta(seconds=50))
    fake = KubeApiFake(World(shop_scenario(), t0=T0), clock)
    with LocalServer(fake) as server:
        configuration = k8s.Configuration()
        configuration.host = server.url
        with k8s.ApiClient(configuration) as api:
            yield fake, server, api, clock


def shop_watch(list_function: Any, resource_version: str, **params: Any) -> list[dict[str, Any]]:
    response = list_function(SHOP, watch=True, timeout_seconds=1, allow_watch_bookmarks=True,
                             resource_version=resource_version, _preload_content=False, **params)
    try:
        assert response.status == 200
        text = response.data.decode()
    finally:
        response.release_conn()
    return [json.loads(line) for line in text.splitlines()]


def test_the_kubernetes_client_lists_the_new_kinds(shop_kube: Any) -> None:
    fake, server, api, clock = shop_kube
    core = k8s.CoreV1Api(api)
    config_maps = core.list_namespaced_config_map(SHOP)
    assert sorted(c.metadata.name for c in config_maps.items) == ["flags", "orders-config"]
    orders = next(c for c in config_maps.items if c.metadata.name == "orders-config")
    assert orders.data == {"FEATURE_X": "off", "TIMEOUT_MS": "5000"}
    assert orders.metadata.managed_fields[0].manager == "kubectl-create"
    assert orders.metadata.managed_fields[0].time.tzinfo is not None
    [secret] = core.list_namespaced_secret(SHOP, field_selector="type=Opaque").items
    assert secret.type == "Opaque" and secret.data["DB_USER"] == "c2hvcA=="
    assert core.list_namespaced_secret(SHOP, field_selector="type=kubernetes.io/tls").items == []
    services = {s.metadata.name: s for s in core.list_namespaced_service(SHOP).items}
    assert services["payments"].spec.selector == {"app.kubernetes.io/name": "payments"}
    assert services["payments"].spec.ports[0].port == 8080
    assert [(p.name, p.port, p.target_port) for p in services["checkout"].spec.ports] == [
        ("http", 80, "http"), ("metrics", 9090, 9090)]
    assert services["checkout"].spec.type == "ClusterIP"
    apps = k8s.AppsV1Api(api)
    assert sorted(d.metadata.name for d in apps.list_namespaced_deployment(SHOP).items) == [
        "checkout", "payments"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment(
        SHOP, field_selector="metadata.name=payments").items] == ["payments"]
    pods = core.list_namespaced_pod(SHOP, label_selector="app.kubernetes.io/name=payments").items
    assert {p.metadata.name for p in pods} == set(fake.world.part("payments").pod_names(1))
    # The kinds a scenario does not have: empty lists with their kind, never a 404.
    empty = [apps.list_namespaced_stateful_set(SHOP), apps.list_namespaced_daemon_set(SHOP),
             k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(SHOP),
             k8s.NetworkingV1Api(api).list_namespaced_ingress(SHOP),
             k8s.NetworkingV1Api(api).list_namespaced_network_policy(SHOP)]
    assert all(listing.items == [] for listing in empty)
    for path, kind, api_version in (
            ("apis/apps/v1", "StatefulSetList", "apps/v1"),
            ("apis/apps/v1", "DaemonSetList", "apps/v1"),
            ("apis/autoscaling/v2", "HorizontalPodAutoscalerList", "autoscaling/v2"),
            ("apis/networking.k8s.io/v1", "IngressList", "networking.k8s.io/v1"),
            ("apis/networking.k8s.io/v1", "NetworkPolicyList", "networking.k8s.io/v1")):
        resource = {"StatefulSetList": "statefulsets", "DaemonSetList": "daemonsets",
                    "HorizontalPodAutoscalerList": "horizontalpodautoscalers",
                    "IngressList": "ingresses", "NetworkPolicyList": "networkpolicies"}[kind]
        body = httpx.get(f"{server.url}/{path}/namespaces/{SHOP}/{resource}").json()
        assert (body["kind"], body["apiVersion"], body["items"]) == (kind, api_version, [])
        assert body["metadata"]["resourceVersion"] == resource_version_at(clock.now)
    # ... but under the wrong group they are unknown, as on a real apiserver.
    assert httpx.get(f"{server.url}/api/v1/namespaces/{SHOP}/ingresses").status_code == 404
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("nope", SHOP)
    assert caught.value.status == 404
    assert core.read_namespaced_config_map("flags", SHOP).data == {"BANNER": "off"}


def test_watches_of_the_new_kinds_tell_each_write(shop_kube: Any) -> None:
    fake, server, api, clock = shop_kube
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    listed = core.list_namespaced_config_map(SHOP).metadata.resource_version
    deployments_listed = apps.list_namespaced_deployment(SHOP).metadata.resource_version
    clock.now = T0 + timedelta(seconds=100)  # kubectl patch at 60 s; payments rolled out at 60 s
    events = shop_watch(core.list_namespaced_config_map, listed)
    assert kinds_and_names(events) == [("MODIFIED", "orders-config"), ("BOOKMARK", None)]
    changed = events[0]["object"]
    assert (changed["kind"], changed["apiVersion"]) == ("ConfigMap", "v1")
    assert changed["data"]["TIMEOUT_MS"] == "50"
    assert changed["metadata"]["resourceVersion"] == resource_version_at(T0 + timedelta(seconds=60))
    assert key_paths(changed) == key_paths(config_watch_fixture()["object"])
    assert events[1]["object"] == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {
        "resourceVersion": resource_version_at(clock.now)}}
    # The event's object is what a list says at the same instant.
    relisted = httpx.get(f"{server.url}/api/v1/namespaces/{SHOP}/configmaps").json()
    assert changed == {"kind": "ConfigMap", "apiVersion": "v1", **next(
        i for i in relisted["items"] if i["metadata"]["name"] == "orders-config")}
    # payments' rollout is a MODIFIED Deployment; checkout did not change.
    deployments = shop_watch(apps.list_namespaced_deployment, deployments_listed)
    assert kinds_and_names(deployments) == [("MODIFIED", "payments"), ("BOOKMARK", None)]
    # Nothing else happened to the Secrets and Services: only a bookmark.
    secrets_listed = str(int(listed))
    assert kinds_and_names(shop_watch(core.list_namespaced_secret, secrets_listed)) == [
        ("BOOKMARK", None)]
    assert kinds_and_names(shop_watch(core.list_namespaced_service, secrets_listed)) == [
        ("BOOKMARK", None)]
    # The rotation at 300 s, seen from 100 s; the empty kinds only ever bookmark.
    at_100 = resource_version_at(clock.now)
    clock.now = T0 + timedelta(seconds=320)
    rotated = shop_watch(core.list_namespaced_secret, at_100)
    assert kinds_and_names(rotated) == [("MODIFIED", "db"), ("BOOKMARK", None)]
    assert rotated[0]["object"]["metadata"]["managedFields"][-1]["manager"] == "kubectl-patch"
    ingresses = shop_watch(k8s.NetworkingV1Api(api).list_namespaced_ingress, at_100)
    assert ingresses == [{"type": "BOOKMARK", "object": {
        "kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version_at(clock.now)}}}]
    hpas = shop_watch(k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler, at_100)
    assert [e["object"]["kind"] for e in hpas] == ["HorizontalPodAutoscaler"]
    # From a version the watch cache forgot (over 5 minutes old): 410 Expired, as for every
    # other kind.
    clock.now = T0 + timedelta(seconds=400)
    expired = shop_watch(core.list_namespaced_config_map, listed)
    assert expired[0]["type"] == "ERROR" and expired[0]["object"]["code"] == 410
    assert fake.watches[f"/api/v1/namespaces/{SHOP}/configmaps"] == 2


def test_a_watch_of_configmaps_sees_one_created_then_deleted() -> None:
    scenario = shop_scenario()
    flags = scenario.config_maps[1].model_copy(update={"created_at": 30.0, "deleted_at": 90.0})
    clock = SimClock(T0)
    fake = KubeApiFake(World(scenario.model_copy(
        update={"config_maps": (scenario.config_maps[0], flags)}), t0=T0), clock)
    with LocalServer(fake) as server, httpx.Client(base_url=server.url) as client:
        path = f"/api/v1/namespaces/{SHOP}/configmaps"
        listed = client.get(path).json()
        assert [i["metadata"]["name"] for i in listed["items"]] == ["orders-config"]
        clock.now = T0 + timedelta(seconds=40)
        answer = client.get(path, params={"watch": "1", "allowWatchBookmarks": "true",
                                          "resourceVersion": listed["metadata"]["resourceVersion"],
                                          "timeoutSeconds": "1"})
        events = [json.loads(line) for line in answer.text.splitlines()]
        assert kinds_and_names(events) == [("ADDED", "flags"), ("BOOKMARK", None)]
        assert events[0]["object"]["metadata"]["creationTimestamp"] == kube_time(
            T0 + timedelta(seconds=30))
        added = events[0]["object"]
        seen = events[1]["object"]["metadata"]["resourceVersion"]
        clock.now = T0 + timedelta(seconds=120)
        answer = client.get(path, params={"watch": "1", "resourceVersion": seen})
        patched, deleted = [json.loads(line) for line in answer.text.splitlines()]
        assert kinds_and_names([patched, deleted]) == [("MODIFIED", "orders-config"),
                                                       ("DELETED", "flags")]
        # The object as it last was, at the resourceVersion the watch reached.
        assert deleted["object"]["data"] == added["data"]
        assert deleted["object"]["metadata"]["resourceVersion"] == resource_version_at(clock.now)
        assert [i["metadata"]["name"] for i in client.get(path).json()["items"]] == [
            "orders-config"]
        # A watch from the far past is refused as too old.
        old = resource_version_at(T0 - timedelta(hours=1))
        answer = client.get(path, params={"watch": "1", "resourceVersion": old})
        assert json.loads(answer.text.splitlines()[0])["object"]["reason"] == "Expired"


def test_a_workload_is_rolled_back_through_the_simulated_apiserver() -> None:
    clock_now = {"t": T0 + timedelta(seconds=200)}
    world_before = World(shop_scenario(), t0=T0)
    changed: list[World] = []
    fake = KubeApiFake(world_before, lambda: clock_now["t"], on_world_change=changed.append)
    with LocalServer(fake) as server:
        base = f"{server.url}/apis/apps/v1/namespaces/{SHOP}"
        before = httpx.get(f"{base}/deployments/payments").json()
        template = httpx.get(f"{base}/replicasets/{replicaset_name('payments', 1)}").json()[
            "spec"]["template"]
        ops = [{"op": "test", "path": "/metadata/resourceVersion",
                "value": before["metadata"]["resourceVersion"]},
               {"op": "replace", "path": "/spec/template", "value": template}]
        answer = httpx.patch(f"{base}/deployments/payments", json=ops,
                             headers={"Content-Type": "application/json-patch+json"})
        assert answer.status_code == 200, answer.text
        after = answer.json()
        assert after["metadata"]["name"] == "payments"
        assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
        assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "payments:2.3.4"
        assert after["metadata"]["managedFields"][-1]["manager"] == "kubectl-rollout"
        [world_after] = changed
        # checkout is as it was, and the ConfigMaps too.
        for resource in ("configmaps", "secrets", "services"):
            assert world_after.objects(resource, SHOP, clock_now["t"]) == \
                world_before.objects(resource, SHOP, clock_now["t"])
        checkout = [d for d in world_after.objects("deployments", SHOP, clock_now["t"])
                    if d["metadata"]["name"] == "checkout"]
        assert checkout == [d for d in world_before.objects("deployments", SHOP, clock_now["t"])
                            if d["metadata"]["name"] == "checkout"]
        missing = httpx.patch(f"{base}/deployments/billing", json=ops,
                              headers={"Content-Type": "application/json-patch+json"})
        assert missing.status_code == 404


def test_the_new_scenarios_tell_their_stories() -> None:
    """The world side of the change-incident scenarios: what changes, and whose errors rise."""
    dependency = World(load_scenario(SCENARIOS / "dependency-bad-rollout.yaml"), t0=T0)
    assert dependency.scenario.deployments == ("checkout", "payments")
    at = dependency.at(100)
    deployments = {d["metadata"]["name"]: d for d in dependency.objects("deployments", "shop", at)}
    env = deployments["checkout"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PAYMENTS_URL", "value": "http://payments:8080"} in env
    assert deployments["checkout"]["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "1"
    assert deployments["payments"]["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "2"
    assert {s["metadata"]["name"] for s in dependency.objects("services", "shop", at)} == {
        "checkout", "payments"}

    def errors(w: World, app: str, start: float, end: float) -> float:
        query = (f'sum(count_over_time({{namespace="{w.scenario.namespace}", app="{app}"}} '
                 f'|= "level=error" [{int(end - start)}s]))')
        status, body = w.loki_query(query, w.at(end))
        assert status == 200
        return float(body["data"]["result"][0]["value"][1]) if body["data"]["result"] else 0.0

    assert errors(dependency, "checkout", -1800, 60) == 0
    assert errors(dependency, "checkout", 75, 195) >= 60
    assert errors(dependency, "payments", 75, 195) >= 60
    status, body = dependency.loki_query_range(
        '{namespace="shop", app="checkout"} |= "level=error"', dependency.at(60),
        dependency.at(120), limit=1)
    line = body["data"]["result"][0]["values"][0][1]
    assert 'msg="upstream call failed" host=payments status=503' in line

    config = World(load_scenario(SCENARIOS / "configmap-change.yaml"), t0=T0)
    assert [r.at for r in config.scenario.revisions] == [-86400]
    [before] = config.objects("configmaps", "orders", config.at(59))
    [after] = config.objects("configmaps", "orders", config.at(61))
    assert (before["data"]["TIMEOUT_MS"], after["data"]["TIMEOUT_MS"]) == ("5000", "50")
    assert after["metadata"]["managedFields"][-1]["manager"] == "kubectl-patch"
    assert errors(config, "orders", -1800, 60) == 0
    assert errors(config, "orders", 70, 190) >= 100

    harmless = World(load_scenario(SCENARIOS / "configmap-change-harmless.yaml"), t0=T0)
    [cm_before] = harmless.objects("configmaps", "shop", harmless.at(100))
    [cm_after] = harmless.objects("configmaps", "shop", harmless.at(130))
    assert cm_before["data"] != cm_after["data"]
    [secret_before] = harmless.objects("secrets", "shop", harmless.at(230))
    [secret_after] = harmless.objects("secrets", "shop", harmless.at(250))
    assert secret_before["data"]["DB_PASSWORD"] != secret_after["data"]["DB_PASSWORD"]
    # The same trickle of errors before and after the changes: below any threshold.
    assert errors(harmless, "cart", -120, 0) == errors(harmless, "cart", 480, 600) <= 2


def test_change_incidents_are_checked_against_what_the_scenario_expects() -> None:
    from incident_detector.sim.replay import Notification, change_key, check_change_incident

    [expected] = shop_scenario().expect.change_incidents
    command = "kubectl rollout undo deployment/payments -n shop --to-revision=1"
    record = {
        "schema": 1, "event": "incident", "kind": "change", "namespace": SHOP,
        "deployment": "checkout", "detected_at": "2026-11-23T18:01:40Z",
        "change": {"kind": "Deployment", "name": "payments", "namespace": SHOP,
                   "at": "2026-11-23T18:01:00Z", "fields": []},
        "evidence": {"causes": [
            {"change": {"kind": "Deployment", "name": "payments"}, "score": 0.8,
             "reasons": ["rolled out 15 s before the errors began"], "action": "rollback",
             "command": command},
            {"change": {"kind": "ConfigMap", "name": "orders-config"}, "score": 0.3,
             "reasons": [], "action": None, "command": None}]},
        "recommended_action": {"action": "rollback", "command": command},
    }
    good = Notification(100.0, record)
    assert change_key(good) == ("checkout", "Deployment", "payments")
    assert check_change_incident(expected, good) == []
    swapped = json.loads(json.dumps(record))
    swapped["evidence"]["causes"].reverse()
    problems = check_change_incident(expected, Notification(100.0, swapped))
    assert any("the first cause is ConfigMap 'orders-config'" in p for p in problems)
    other_target = json.loads(json.dumps(record).replace("deployment/payments",
                                                         "deployment/checkout"))
    problems = check_change_incident(expected, Notification(100.0, other_target))
    assert len(problems) == 2 and all("does not act on deployment/payments" in p
                                      for p in problems)
    no_action = json.loads(json.dumps(record))
    no_action["recommended_action"] = {"action": "none", "command": None}
    assert any("recommended_action says 'none'" in p
               for p in check_change_incident(expected, Notification(100.0, no_action)))
    assert change_key(Notification(1.0, {"deployment": "checkout", "evidence": {}})) == (
        "checkout", "", "")


_KEYS = st.sampled_from(["A", "B", "C", "D"])
_WRITES = st.lists(st.tuples(
    st.dictionaries(_KEYS, st.one_of(st.none(), st.sampled_from(["1", "2", "3"])),
                    min_size=1, max_size=3),
    st.sampled_from(["kubectl-patch", "helm", "argocd-controller"]),
    st.booleans()), max_size=6)


@given(initial=st.dictionaries(_KEYS, st.sampled_from(["1", "2"]), max_size=4), writes=_WRITES)
@settings(max_examples=100, deadline=None)
def test_managed_fields_always_say_who_last_set_each_key(initial: dict[str, str],
                                                         writes: list[Any]) -> None:
    """Whatever the writes, each key of the data is owned by exactly one manager, the last one
    that changed its value, and no entry names a key the data does not have."""
    changes, at, data, last_writer = [], 0.0, dict(initial), {k: "kubectl-create" for k in initial}
    for patch, manager, replace in writes:
        new = ({k: v for k, v in patch.items() if v is not None} if replace else
               {k: v for k, v in {**data, **patch}.items() if v is not None})
        if new == data:
            continue  # the scenario refuses a write that changes nothing
        at += 10
        changes.append({"at": at, "data": patch, "manager": manager, "replace": replace})
        last_writer = {k: (manager if data.get(k) != v else last_writer[k])
                       for k, v in new.items()}
        data = new
    w = world(logs=[], config_maps=[{"name": "cfg", "created_at": -5, "data": initial,
                                     "changes": changes}])
    [config_map] = w.objects("configmaps", NS, w.at(at))
    assert config_map.get("data", {}) == dict(sorted(data.items()))
    owners: dict[str, str] = {}
    for entry in config_map["metadata"]["managedFields"]:
        assert entry["operation"] == "Update" and entry["fieldsV1"]
        for field_name in entry["fieldsV1"].get("f:data", {}):
            if field_name != ".":
                assert field_name not in owners
                owners[field_name] = entry["manager"]
    assert owners == {f"f:{k}": m for k, m in last_writer.items()}
    times = [(e["time"], e["manager"]) for e in config_map["metadata"]["managedFields"]]
    assert times == sorted(times)


# ---------------------------------------------------------------------------------------------
# HTTPS, as a kube-apiserver speaks it to a pod.


def test_local_server_speaks_https_to_the_in_cluster_client(tmp_path, monkeypatch):
    import shutil
    import ssl
    import subprocess

    import kubernetes.config.incluster_config as loader

    from incident_detector.sources.kube import KubeClient, api_client_from_environment

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate with")
    cert, key = tmp_path / "apiserver.crt", tmp_path / "apiserver.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    token = tmp_path / "token"
    token.write_text("service-account-token")
    seen: list[str | None] = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return Response(200, {"kind": "DeploymentList", "apiVersion": "apps/v1",
                              "metadata": {"resourceVersion": "1"}, "items": []})

    with LocalServer(handler, tls=tls) as server:
        assert server.url.startswith("https://127.0.0.1:")
        monkeypatch.setattr(loader, "SERVICE_TOKEN_FILENAME", str(token))
        monkeypatch.setattr(loader, "SERVICE_CERT_FILENAME", str(cert))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", server.url.rsplit(":", 1)[1])
        api = api_client_from_environment(in_cluster=True)
        deployments = asyncio.run(KubeClient(api=api, timeout=5).list_deployments("ns"))

    assert list(deployments) == []
    [(scheme, credential)] = [header.split(" ", 1) for header in seen if header]
    assert scheme.lower() == "bearer" and credential == "service-account-token"


# --- the batched metric query: label_replace, offset -------------------------------------------

from incident_detector.sources.loki import CountWindow, parse_windows, windows_query  # noqa: E402


def test_label_replace_as_prometheus_defines_it() -> None:
    w = world(logs=MIXED_LOGS)
    by_app = f'sum by (app) (count_over_time({{namespace="{NS}", app="{DEP}"}} [2m]))'
    tagged = vector(w.loki_query(f'label_replace({by_app}, "window", "now", "app", ".*")',
                                 w.at(300)))
    assert tagged == {(("app", DEP), ("window", "now")): 216.0}
    # $1 and ${1} expand; an empty result removes the label; no match leaves the series as is.
    head = DEP.split("-")[0]
    assert vector(w.loki_query(f'label_replace({by_app}, "x", "$1-${{1}}", "app", "([a-z]+)-.*")',
                               w.at(300))) == {(("app", DEP), ("x", f"{head}-{head}")): 216.0}
    assert vector(w.loki_query(f'label_replace({by_app}, "app", "", "app", ".*")',
                               w.at(300))) == {(): 216.0}
    assert vector(w.loki_query(f'label_replace({by_app}, "x", "y", "app", "nothing")',
                               w.at(300))) == {(("app", DEP),): 216.0}
    status, text = w.loki_query(f'label_replace({by_app}, "1x", "y", "app", ".*")', w.at(300))
    assert status == 400 and "destination" in text


def test_offset_moves_the_range_back() -> None:
    w = world(logs=MIXED_LOGS)
    selector = f'{{namespace="{NS}", app="{DEP}"}}'
    then = vector(w.loki_query(f"sum(count_over_time({selector} [2m]))", w.at(200)))
    assert vector(w.loki_query(f"sum(count_over_time({selector} [2m] offset 100s))",
                               w.at(300))) == then
    assert vector(w.loki_query(f"sum(count_over_time({selector} [2m] offset 100000ms))",
                               w.at(300))) == then
    status, text = w.loki_query(f"sum(count_over_time({selector} [2m] offset))", w.at(300))
    assert status == 400


def test_one_batched_query_answers_each_window_as_its_own_query() -> None:
    w = world(logs=MIXED_LOGS)
    match = ErrorMatch(DEFAULT_ERROR_PATTERN, DEFAULT_ERROR_LEVELS)
    at = w.at(300)
    windows = [
        CountWindow("errors", (DEP,), 120),
        CountWindow.ending("baseline", workloads=None, seconds=60, end=w.at(150), at=at,
                           by="workload"),
    ]
    status, body = w.loki_query(windows_query(namespace=NS, windows=windows, match=match,
                                              keys=KEYS), at)
    assert status == 200
    answer = parse_windows(body, namespace=NS, windows=windows, keys=KEYS)
    alone = vector(w.loki_query(level_query(120), at))
    assert {s.pod: s.count for s in answer.counts["errors"].samples} == {
        dict(key)["pod"]: 0.0 for key in alone} | {
        pod: sum(v for key, v in alone.items() if dict(key)["pod"] == pod)
        for pod in w.pod_names(2)}
    before = vector(w.loki_query(level_query(60), w.at(150)))
    assert [(s.workload, s.pod, s.count) for s in answer.counts["baseline"].samples] == \
        [(DEP, None, sum(before.values()))]
    # The level leg and the pattern leg are told apart by the levels each window saw.
    assert answer.levels["errors"] == {"error", "unknown"}
    assert answer.leg_has_lines("errors", match.levels)
    assert answer.leg_has_lines("errors", match.undetected)
