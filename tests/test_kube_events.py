"""Warning Events for the on-call brief: ``KubeClient.list_warning_events``, the real ``kubernetes``
client against the fake API server on 127.0.0.1, and the pure parser.

The EventList bodies are shaped like what kube-apiserver returns for
``GET /api/v1/namespaces/NS/events?fieldSelector=type=Warning``: the kubelet writes core/v1
Events through the legacy recorder (``count``, ``firstTimestamp``, ``lastTimestamp``, ``source``,
``reportingComponent``, ``eventTime: null``), about the crash-looping pod of ``pods_list.json``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiserver import NAMESPACE, FakeApiServer, recorded_items, status_response
from incident_detector.errors import SourceError
from incident_detector.model import WarningEvent
from incident_detector.sim.server import Response
from incident_detector.sources.kube import KubeClient, api_client_for
from incident_detector.sources.kube_objects import (
    EVENT_MESSAGE_MAX_CHARS,
    newest_first,
    one_line,
    parse_warning_event,
)

TOKEN = "s3cr3t-bearer-token-0123456789"
EVENTS_PATH = f"/api/v1/namespaces/{NAMESPACE}/events"
[CRASHING_POD] = [pod for pod in recorded_items("pods_list.json")
                  if pod["metadata"]["name"] == "payments-api-6874dc9bf7-r66bl"]
POD_NAME = CRASHING_POD["metadata"]["name"]
POD_UID = CRASHING_POD["metadata"]["uid"]
NODE = "kind-worker"


# How long a "slow" server holds its answer: past any test (its stop ends the wait), so only the
# client's timeout can end the call, however late a busy machine runs the client.
HOLD_SECONDS = 600.0


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def kubelet_event(*, suffix: str, reason: str, message: str, count: int, first: str, last: str,
                  kind: str = "Pod", name: str = POD_NAME, uid: str = POD_UID,
                  resource_version: str = "240") -> dict[str, Any]:
    """One item of a core/v1 EventList, as the kubelet's recorder writes it."""
    return {
        "metadata": {
            "name": f"{name}.{suffix}",
            "namespace": NAMESPACE,
            "uid": f"9c1f6b2e-0d41-4d4c-9a53-{suffix[-12:]:0>12}",
            "resourceVersion": resource_version,
            "creationTimestamp": first,
        },
        "involvedObject": {
            "kind": kind, "namespace": NAMESPACE, "name": name, "uid": uid, "apiVersion": "v1",
            "resourceVersion": "233", "fieldPath": "spec.containers{payments-api}",
        },
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": NODE},
        "firstTimestamp": first,
        "lastTimestamp": last,
        "count": count,
        "type": "Warning",
        "eventTime": None,
        "reportingComponent": "kubelet",
        "reportingInstance": NODE,
    }


BACK_OFF = kubelet_event(
    suffix="187a9c3e5d2b41f0", reason="BackOff",
    message=(f"Back-off restarting failed container payments-api in pod "
             f"{POD_NAME}_{NAMESPACE}({POD_UID})"),
    count=10, first="2026-11-23T17:54:48Z", last="2026-11-23T18:00:17Z")
UNHEALTHY = kubelet_event(
    suffix="187a9c3a11f2e7c4", reason="Unhealthy",
    message="Readiness probe failed: Get \"http://10.244.0.7:8080/healthz\": dial tcp "
            "10.244.0.7:8080: connect: connection refused",
    count=3, first="2026-11-23T17:54:20Z", last="2026-11-23T17:55:02Z")
SCALED = {
    # A controller's Event through events.k8s.io: eventTime and series, no count or timestamps.
    **kubelet_event(suffix="187a9c4000000001", reason="FailedCreate",
                    message='Error creating: pods "payments-api-6874dc9bf7-" is forbidden: '
                            "exceeded quota: compute, requested: cpu=500m",
                    count=0, first="2026-11-23T17:58:30Z", last="", kind="ReplicaSet",
                    name="payments-api-6874dc9bf7"),
    "involvedObject": {"kind": "ReplicaSet", "namespace": NAMESPACE,
                       "name": "payments-api-6874dc9bf7",
                       "uid": "4e5a3c2b-8f61-4d0b-9a7e-2c1d0f6b5a94", "apiVersion": "apps/v1",
                       "resourceVersion": "228"},
    "count": None, "firstTimestamp": None, "lastTimestamp": None,
    "eventTime": "2026-11-23T17:58:30.123456Z",
    "series": {"count": 4, "lastObservedTime": "2026-11-23T18:01:00.000000Z"},
    "source": {}, "reportingComponent": "replicaset-controller",
    "reportingInstance": "replicaset-controller-kube-controller-manager",
}


def event_list(*items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "241"},
            "items": [copy.deepcopy(item) for item in items]}


@pytest.fixture(scope="module")
def running_apiserver():
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def apiserver(running_apiserver):
    running_apiserver.reset()
    running_apiserver.serve(EVENTS_PATH, Response(body=event_list(UNHEALTHY, BACK_OFF, SCALED)))
    return running_apiserver


def client_for(server: FakeApiServer, *, timeout: float = 5.0) -> KubeClient:
    return KubeClient(api=api_client_for(server.url, token=TOKEN), timeout=timeout)


def warnings(server: FakeApiServer, **kwargs: Any) -> tuple[WarningEvent, ...]:
    return asyncio.run(client_for(server).list_warning_events(NAMESPACE, **kwargs))


def failure(server: FakeApiServer, **kwargs: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        warnings(server, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Over HTTP.


def test_one_list_request_asks_the_server_for_warnings_only(apiserver):
    warnings(apiserver)

    [request] = apiserver.requests
    assert (request.method, request.path) == ("GET", EVENTS_PATH)
    assert request.query == {"fieldSelector": ["type=Warning"], "limit": ["200"]}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "application/json"


def test_a_kubelet_back_off_event_of_a_pod(apiserver):
    found = warnings(apiserver)

    back_off = next(event for event in found if event.reason == "BackOff")
    assert back_off == WarningEvent(
        reason="BackOff",
        message=("Back-off restarting failed container payments-api in pod "
                 "payments-api-6874dc9bf7-r66bl_demo-aiops(ee8d9145-b4fd-479d-b83b-84c032b462e0)"),
        object_kind="Pod", object_name=POD_NAME, count=10,
        last_seen=datetime(2026, 11, 23, 18, 0, 17, tzinfo=timezone.utc))


def test_newest_first_whatever_field_dates_them(apiserver):
    found = warnings(apiserver)

    assert [(e.reason, e.object_kind, e.object_name, e.count, e.last_seen) for e in found] == [
        ("BackOff", "Pod", POD_NAME, 10, at("2026-11-23T18:00:17Z")),
        # eventTime comes before series.lastObservedTime in the order of the fields asked.
        ("FailedCreate", "ReplicaSet", "payments-api-6874dc9bf7", 4,
         at("2026-11-23T17:58:30.123456Z")),
        ("Unhealthy", "Pod", POD_NAME, 3, at("2026-11-23T17:55:02Z")),
    ]


def test_the_limit_is_sent_and_the_page_is_all_that_is_read(apiserver):
    found = warnings(apiserver, limit=2)

    [request] = apiserver.requests  # no second page
    assert request.query["limit"] == ["2"]
    assert len(found) == 2


def test_a_server_that_ignores_the_limit_still_gives_no_more(apiserver):
    many = [kubelet_event(suffix=f"187a9c3e5d2b4{i:03d}", reason="BackOff", message=f"m{i}",
                          count=1, first="2026-11-23T17:54:48Z",
                          last=f"2026-11-23T18:00:{i:02d}Z") for i in range(6)]
    apiserver.serve(EVENTS_PATH, Response(body=event_list(*many)))
    original = apiserver._handle

    def ignoring_limit(request):
        request.query.pop("limit", None)
        return original(request)

    apiserver._handle = ignoring_limit
    try:
        found = warnings(apiserver, limit=4)
    finally:
        del apiserver._handle

    assert [e.message for e in found] == ["m5", "m4", "m3", "m2"]


def test_normal_events_are_dropped_when_a_proxy_ignores_the_field_selector(apiserver):
    normal = {**kubelet_event(suffix="187a9c3000000000", reason="Pulled",
                              message='Container image "registry.local/payments-api:1.5.0" '
                                      "already present on machine",
                              count=5, first="2026-11-23T17:54:05Z", last="2026-11-23T17:55:37Z"),
              "type": "Normal"}
    apiserver.serve(EVENTS_PATH, Response(body=event_list(normal, BACK_OFF)))

    assert [e.reason for e in warnings(apiserver)] == ["BackOff"]


def test_an_empty_namespace(apiserver):
    apiserver.serve(EVENTS_PATH, Response(body=event_list()))
    assert warnings(apiserver) == ()


def test_forbidden_is_a_source_error_that_is_not_retried(apiserver):
    apiserver.serve(EVENTS_PATH, status_response(
        403, "Forbidden", 'events is forbidden: User "system:serviceaccount:demo-aiops:'
        'incident-detector" cannot list resource "events" in API group "" in the namespace '
        '"demo-aiops"', kind="events"))

    error = failure(apiserver)

    assert (error.source, error.reason, error.status, error.retryable) == (
        "kubernetes", "Forbidden", 403, False)
    assert 'cannot list resource "events"' in error.message
    assert "listing warning events in namespace 'demo-aiops'" in error.message
    assert TOKEN not in str(error)


@pytest.mark.parametrize("status, reason, retryable", [
    (503, "ServiceUnavailable", True),
    (429, "TooManyRequests", True),
    (401, "Unauthorized", False),
])
def test_http_errors_are_mapped_like_the_other_reads(apiserver, status, reason, retryable):
    apiserver.serve(EVENTS_PATH, status_response(status, reason, "no"))

    error = failure(apiserver)

    assert (error.reason, error.status, error.retryable) == (reason, status, retryable)


def test_a_slow_server_is_a_retryable_timeout(apiserver):
    apiserver.edit(EVENTS_PATH, delay=HOLD_SECONDS)

    with pytest.raises(SourceError) as caught:
        asyncio.run(client_for(apiserver, timeout=0.2).list_warning_events(NAMESPACE))

    assert (caught.value.reason, caught.value.retryable) == ("timeout", True)
    assert len(apiserver.requests) == 1  # the transport does not retry on its own


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "malformed"),
    ({"kind": "PodList", "apiVersion": "v1", "items": []}, "unexpected_shape"),
    ({"kind": "EventList", "apiVersion": "v1", "items": {}}, "unexpected_shape"),
])
def test_a_body_that_is_not_an_event_list(apiserver, body, reason):
    apiserver.serve(EVENTS_PATH, Response(body=body))

    error = failure(apiserver)

    assert (error.reason, error.retryable) == (reason, True)


def test_events_are_parsed_from_json_without_building_typed_models(apiserver):
    api = api_client_for(apiserver.url, token=TOKEN)

    def no_typed_models(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the client's typed models were built")

    api.deserialize = no_typed_models
    found = asyncio.run(KubeClient(api=api, timeout=5.0).list_warning_events(NAMESPACE))

    assert len(found) == 3 and all(type(e) is WarningEvent for e in found)


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "200"])
def test_a_limit_that_is_not_a_positive_integer_is_refused_before_any_request(apiserver, limit):
    with pytest.raises(ValueError):
        warnings(apiserver, limit=limit)
    assert apiserver.requests == []


# ---------------------------------------------------------------------------------------------
# The parser.


def test_count_falls_back_to_the_series_then_to_one():
    assert parse_warning_event({**BACK_OFF, "count": 7}).count == 7
    assert parse_warning_event({**BACK_OFF, "count": None, "series": {"count": 3}}).count == 3
    assert parse_warning_event({**BACK_OFF, "count": 0, "series": {"count": 0}}).count == 1
    assert parse_warning_event({**BACK_OFF, "count": "9"}).count == 1
    without = {k: v for k, v in BACK_OFF.items() if k != "count"}
    assert parse_warning_event(without).count == 1


def test_last_seen_falls_back_through_the_fields_in_order():
    undated = {**BACK_OFF, "lastTimestamp": None, "firstTimestamp": None, "eventTime": None}
    assert parse_warning_event(BACK_OFF).last_seen == at("2026-11-23T18:00:17Z")
    assert parse_warning_event({**undated, "eventTime": "2026-11-23T18:01:02.500000Z",
                                "firstTimestamp": "2026-11-23T17:00:00Z"}).last_seen == \
        at("2026-11-23T18:01:02.500000Z")
    assert parse_warning_event({**undated, "series": {
        "count": 2, "lastObservedTime": "2026-11-23T18:02:00.000000Z"}}).last_seen == \
        at("2026-11-23T18:02:00Z")
    assert parse_warning_event({**undated, "firstTimestamp": "2026-11-23T17:54:48Z"}).last_seen \
        == at("2026-11-23T17:54:48Z")
    assert parse_warning_event(undated).last_seen is None
    # A field that does not parse is skipped, not taken as "no time at all".
    assert parse_warning_event({**undated, "lastTimestamp": "yesterday",
                                "firstTimestamp": "2026-11-23T17:54:48Z"}).last_seen == \
        at("2026-11-23T17:54:48Z")


def test_the_message_is_one_line_and_capped():
    multi_line = {**BACK_OFF, "message": "Error: failed to start container \"payments-api\":\n"
                                         "\tOCI runtime create failed:\r\n  exec: \"/app\"  "}
    assert parse_warning_event(multi_line).message == (
        'Error: failed to start container "payments-api": OCI runtime create failed: '
        'exec: "/app"')
    long = parse_warning_event({**BACK_OFF, "message": "x" * 1000}).message
    assert len(long) == EVENT_MESSAGE_MAX_CHARS and long.endswith("…")
    exact = "y" * EVENT_MESSAGE_MAX_CHARS
    assert parse_warning_event({**BACK_OFF, "message": exact}).message == exact


def test_events_that_are_not_warnings_or_say_nothing_are_skipped():
    assert parse_warning_event({**BACK_OFF, "type": "Normal"}) is None
    assert parse_warning_event({**BACK_OFF, "type": None}) is None
    assert parse_warning_event({**BACK_OFF, "reason": "", "message": " \n "}) is None
    assert parse_warning_event({**BACK_OFF, "reason": None}).message.startswith("Back-off")
    bare = parse_warning_event({"type": "Warning", "reason": "FailedMount"})
    assert bare == WarningEvent(reason="FailedMount", message="", object_kind="",
                                object_name="", count=1, last_seen=None)


def test_newest_first_puts_undated_events_last_and_keeps_ties_in_order():
    def event(name: str, last_seen: str | None) -> WarningEvent:
        return WarningEvent(reason="BackOff", message="", object_kind="Pod", object_name=name,
                            last_seen=at(last_seen) if last_seen else None)

    ordered = newest_first(iter([event("a", None), event("b", "2026-11-23T17:00:00Z"),
                                 event("c", "2026-11-23T18:00:00Z"), event("d", None),
                                 event("e", "2026-11-23T17:00:00Z")]))

    assert [e.object_name for e in ordered] == ["c", "b", "e", "a", "d"]


def test_one_line():
    assert one_line("  a\n\nb\tc  ", limit=10) == "a b c"
    assert one_line("abcdefghijk", limit=5) == "abcd…"
    assert one_line("", limit=5) == ""


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=8), st.sampled_from(
                            ["Warning", "2026-11-23T18:00:17Z", "2026-11-23T18:00:17.000000Z"]))
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(
        st.sampled_from(["count", "lastObservedTime", "kind", "name", "type"]), children,
        max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(BACK_OFF) + ["series"]), value=json_values)
def test_the_parser_never_raises_on_a_damaged_event(field, value):
    result = parse_warning_event({**copy.deepcopy(BACK_OFF), field: value})
    assert result is None or dataclasses.is_dataclass(result)
    if result is not None:
        assert "\n" not in result.message and len(result.message) <= EVENT_MESSAGE_MAX_CHARS
        assert result.count >= 1


@settings(max_examples=200, deadline=None)
@given(item=json_values)
def test_the_parser_never_raises_on_arbitrary_json(item):
    result = parse_warning_event(item)  # type: ignore[arg-type]
    assert result is None or isinstance(result, WarningEvent)
