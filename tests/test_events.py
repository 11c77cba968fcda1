"""Incident Events: the pure body and read-back parser, then the real ``kubernetes`` client
against a fake API server on 127.0.0.1 that stores and validates Events like kube-apiserver."""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiserver import (
    DNS_SUBDOMAIN,
    EVENTS_PATH,
    NAMESPACE,
    Response,
    StatefulApiServer,
    event_validation_causes,
    load_recording,
)
from factories import make_incident
from incident_detector.notify import render
from incident_detector.errors import SourceError
from incident_detector.notify.events import (
    ACTION,
    EVENT_PERMISSIONS,
    REASON,
    REPLICASET_ANNOTATION,
    REPORTING_CONTROLLER,
    REVISION_ANNOTATION,
    EventRecorder,
    NotifiedRevision,
    clip_utf8,
    event_body,
    event_name,
    parse_notified_revision,
)
from incident_detector.sources.kube_http import api_client_for
from incident_detector.model import Evidence, Incident, Signal

TOKEN = "s3cr3t-event-token-0123456789"
POD = "incident-detector-0"
REPLICASET = "payments-api-6874dc9bf7"
# The time of the recorded Event.
DETECTED_AT = datetime(2026, 11, 23, 17, 56, 17, tzinfo=timezone.utc)


# How long a "slow" server holds its answer: past any test (its stop ends the wait), so only the
# client's timeout can end the call, however late a busy machine runs the client.
HOLD_SECONDS = 600.0


def incident(**changes: Any) -> Incident:
    """The incident of the recorded Event: its times and counts."""
    fields: dict[str, Any] = dict(
        namespace=NAMESPACE, replicaset=REPLICASET, error_count=14.0,
        rollout_started_at=DETECTED_AT - timedelta(seconds=133), detected_at=DETECTED_AT,
        signals=(Signal.ERROR_SPIKE,), evidence=Evidence())
    fields.update(changes)
    return make_incident(**fields)


def body_for(inc: Incident | None = None, *, note: str | None = None,
             instance: str = POD) -> dict[str, Any]:
    inc = inc or incident()
    return event_body(incident_record=render.incident_record(inc),
                      note=render.event_note(inc) if note is None else note,
                      reporting_instance=instance)


# ---------------------------------------------------------------------------------------------
# The body.


def test_event_body_has_what_the_api_server_requires():
    body = body_for()
    recorded = load_recording("event_create.json")["request"]["body"]

    # The recorded request's fields, with ours filled in.
    assert set(body) == set(recorded)
    assert body["apiVersion"] == "events.k8s.io/v1" and body["kind"] == "Event"
    assert body["eventTime"] == recorded["eventTime"] == "2026-11-23T17:56:17.000000Z"
    assert body["regarding"] == recorded["regarding"]
    assert (body["reason"], body["action"], body["type"]) == (REASON, ACTION, "Warning")
    assert body["reportingController"] == REPORTING_CONTROLLER
    assert body["reportingInstance"] == POD
    assert body["note"].startswith("Rollout of payments-api revision 2 (payments-api-6874dc9bf7)")
    assert body["metadata"]["namespace"] == NAMESPACE
    assert body["metadata"]["annotations"] == {REVISION_ANNOTATION: "2",
                                               REPLICASET_ANNOTATION: REPLICASET}
    assert re.fullmatch(r"payments-api\.rev2\.[0-9a-f]{12}", body["metadata"]["name"])
    assert event_validation_causes(body) == []


def test_reporting_controller_passes_the_api_servers_own_pattern():
    message = load_recording("event_create_invalid.json")["response"]["json"]["message"]
    [pattern] = set(re.findall(r"regex used for validation is '([^']+)'", message))
    prefix, _, name = REPORTING_CONTROLLER.partition("/")
    assert re.fullmatch(pattern, name)
    assert DNS_SUBDOMAIN.fullmatch(prefix)


def test_event_name_is_stable_per_incident_and_distinct_across_incidents():
    name = body_for()["metadata"]["name"]
    assert body_for()["metadata"]["name"] == name
    # A retry after hours, with a different note, is still the same Event.
    later = incident(detected_at=DETECTED_AT + timedelta(hours=3))
    assert body_for(later, note="other words")["metadata"]["name"] == name
    others = {body_for(incident(**change))["metadata"]["name"] for change in (
        {"revision": 3}, {"namespace": "other"}, {"deployment": "payments"},
        {"replicaset": "payments-api-5d8f7c6b9"})}
    assert len(others) == 4 and name not in others


def test_event_name_of_a_deployment_name_at_the_length_limit():
    long_name = "a" * 200 + "-" + "b" * 52  # 253 characters, the longest Deployment name
    name = event_name(namespace=NAMESPACE, deployment=long_name, revision=12345678901234,
                      replicaset=long_name[:243] + "-5d8f7c6b9")
    assert len(name) == 253 and DNS_SUBDOMAIN.fullmatch(name)
    cut_at_dash = event_name(namespace=NAMESPACE, deployment="a" * 215 + "-" + "b" * 37,
                             revision=1, replicaset="x")
    assert DNS_SUBDOMAIN.fullmatch(cut_at_dash) and "-." not in cut_at_dash


@settings(max_examples=300, deadline=None)
@given(deployment=st.text(max_size=300), namespace=st.text(max_size=70),
       replicaset=st.text(max_size=300), revision=st.integers(min_value=0, max_value=2**63 - 1))
def test_event_name_is_always_a_valid_name(deployment, namespace, replicaset, revision):
    name = event_name(namespace=namespace, deployment=deployment, revision=revision,
                      replicaset=replicaset)
    assert len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name), name
    assert name == event_name(namespace=namespace, deployment=deployment, revision=revision,
                              replicaset=replicaset)


@settings(max_examples=300, deadline=None)
@given(note=st.text(max_size=2000) | st.text(alphabet="é€😀a", min_size=300, max_size=1100))
def test_note_fits_1024_bytes_for_any_input(note):
    clipped = body_for(note=note)["note"]
    assert len(clipped.encode("utf-8")) <= 1024
    if len(note.encode("utf-8")) <= 1024:
        assert clipped == note
    else:
        assert clipped.endswith("…") and note.startswith(clipped[:-1])


def test_clip_utf8():
    assert clip_utf8("abc", 3) == "abc"
    assert clip_utf8("abcd", 3) == "…"  # the ellipsis takes 3 bytes
    assert clip_utf8("a" * 2000, 1024) == "a" * 1021 + "…"
    # A multi-byte character is never cut in half.
    assert clip_utf8("€" * 400, 1024) == "€" * 340 + "…"
    assert clip_utf8("bad \ud800 surrogate", 1024) == "bad ? surrogate"


def test_reporting_instance_is_cut_to_128_characters():
    body = body_for(instance="p" * 300)
    assert body["reportingInstance"] == "p" * 128
    assert event_validation_causes(body) == []


@pytest.mark.parametrize("broken, message", [
    ({"namespace": ""}, "namespace"),
    ({"deployment": None}, "deployment"),
    ({"replicaset": 5}, "replicaset"),
    ({"revision": "2"}, "revision"),
    ({"revision": True}, "revision"),
    ({"detected_at": "soon"}, "detected_at"),
])
def test_event_body_of_an_incomplete_record_raises(broken, message):
    record = {**render.incident_record(incident()), **broken}
    with pytest.raises(ValueError, match=message):
        event_body(incident_record=record, note="n", reporting_instance=POD)
    with pytest.raises(ValueError, match="reporting instance"):
        event_body(incident_record=render.incident_record(incident()), note="n",
                   reporting_instance="")


def test_event_body_takes_a_datetime_too():
    plus_one = timezone(timedelta(hours=1))
    record = {**render.incident_record(incident()),
              "detected_at": datetime(2026, 11, 23, 18, 56, 17, 5, tzinfo=plus_one)}
    body = event_body(incident_record=record, note="n", reporting_instance=POD)
    assert body["eventTime"] == "2026-11-23T17:56:17.000005Z"


# ---------------------------------------------------------------------------------------------
# Reading back (pure).


def recorded_event() -> dict[str, Any]:
    """The recorded list item, as the foreign controller that wrote it left it."""
    return load_recording("events_list.json")["response"]["json"]["items"][0]


def our_recorded_event() -> dict[str, Any]:
    """The recorded list item as our controller writes it: our controller and annotations."""
    item = recorded_event()
    item["reportingController"] = REPORTING_CONTROLLER
    item["metadata"]["annotations"] = {REVISION_ANNOTATION: "2", REPLICASET_ANNOTATION: REPLICASET}
    return item


EXPECTED = NotifiedRevision(namespace=NAMESPACE, deployment="payments-api", revision=2,
                            replicaset=REPLICASET, notified_at=DETECTED_AT)


def test_parse_our_recorded_event():
    assert parse_notified_revision(our_recorded_event()) == EXPECTED


def test_parse_falls_back_to_the_note_and_the_creation_time():
    item = our_recorded_event()
    item["metadata"]["annotations"] = {REVISION_ANNOTATION: "two"}
    del item["eventTime"]
    item["metadata"]["creationTimestamp"] = "2026-11-23T17:56:18Z"
    # The recorded note: "revision 2 (payments-api-6874dc9bf7): 14 errors in 2m after rollout".
    assert parse_notified_revision(item) == EXPECTED._replace(
        notified_at=DETECTED_AT + timedelta(seconds=1))

    item["note"] = "Rollout of payments-api revision 7 is failing"
    assert parse_notified_revision(item) == EXPECTED._replace(
        revision=7, replicaset="", notified_at=DETECTED_AT + timedelta(seconds=1))


def edited(**changes: Any) -> dict[str, Any]:
    item = our_recorded_event()
    for path, value in changes.items():
        target = item
        *parents, key = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    return item


DELETE = object()


@pytest.mark.parametrize("item", [
    None, [], "event", 7,
    edited(reportingController="example.com/incident-detector"),  # the recorded foreign one
    edited(reportingController=DELETE),
    edited(reason="BackOff"),
    edited(regarding=DELETE),
    edited(regarding="payments-api"),
    edited(regarding__kind="StatefulSet"),
    edited(regarding__name=""),
    edited(regarding__name=["payments-api"]),
    edited(metadata=DELETE, regarding__namespace=DELETE),
    edited(metadata__annotations=DELETE, note="no number here"),
    edited(metadata__annotations={REVISION_ANNOTATION: "-1"}, note=None),
    edited(metadata__annotations={REVISION_ANNOTATION: "9" * 30}, note=12),
    edited(eventTime="yesterday", metadata__creationTimestamp=DELETE),
    edited(eventTime=None, metadata__creationTimestamp=None),
], ids=lambda item: repr(item)[:40])
def test_parse_skips_what_is_not_ours_or_is_malformed(item):
    assert parse_notified_revision(item) is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=20), children, max_size=5),
                    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(item=JSON, replacements=st.dictionaries(
    st.sampled_from(["reportingController", "reason", "regarding", "metadata", "note",
                     "eventTime"]), JSON, max_size=4))
def test_parse_never_raises(item, replacements):
    parse_notified_revision(item)
    parse_notified_revision({**our_recorded_event(), **replacements})


# ---------------------------------------------------------------------------------------------
# Against the fake API server.




def recorder(server: StatefulApiServer, *, timeout: float = 5.0) -> EventRecorder:
    return EventRecorder(api=api_client_for(server.url, token=TOKEN), timeout=timeout,
                         reporting_instance=POD)


def failure(coroutine: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        asyncio.run(coroutine)
    return caught.value


def test_send_creates_the_event_as_built(apiserver):
    payload = body_for()

    asyncio.run(recorder(apiserver).send(payload))

    [request] = apiserver.requests
    assert (request.method, request.path) == ("POST", EVENTS_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == request.headers["accept"] == "application/json"
    # Sent verbatim: the MicroTime keeps its ".000000Z" (re-serialised it would be rejected).
    assert request.json() == payload
    assert list(apiserver.events) == [payload["metadata"]["name"]]


def test_body_for_uses_the_recorders_instance(apiserver):
    inc = incident()
    payload = recorder(apiserver).body_for(incident_record=render.incident_record(inc),
                                           note=render.event_note(inc))
    assert payload == body_for(inc)


def test_sending_twice_is_one_event(apiserver):
    payload = body_for()
    events = recorder(apiserver)

    asyncio.run(events.send(payload))
    asyncio.run(events.send(payload))  # 409 AlreadyExists: delivered before

    assert [r.method for r in apiserver.requests] == ["POST", "POST"]
    assert len(apiserver.events) == 1


def test_invalid_event_is_not_retryable(apiserver):
    apiserver.serve_recording("event_create_invalid.json")

    error = failure(recorder(apiserver).send(body_for()))

    assert (error.reason, error.status, error.retryable) == ("Invalid", 422, False)
    assert "reportingController: Required value" in error.message
    assert f"creating event {body_for()['metadata']['name']!r}" in error.message


def test_the_servers_validation_rejects_a_broken_body(apiserver):
    payload = body_for()
    payload["reportingController"] = "-bad-"
    payload["eventTime"] = None

    error = failure(recorder(apiserver).send(payload))

    assert (error.reason, error.status, error.retryable) == ("Invalid", 422, False)
    assert "reportingController" in error.message and "eventTime" in error.message


@pytest.mark.parametrize("status, retryable", [(503, True), (500, True), (429, True),
                                               (403, False), (400, False)])
def test_errors_are_retryable_only_when_they_may_pass(apiserver, status, retryable):
    apiserver.serve(EVENTS_PATH, Response(status, {"kind": "Status", "code": status,
                                                   "message": f"token {TOKEN} said no"},
                                          headers={"Retry-After": "7"}),
                    method="POST")

    error = failure(recorder(apiserver).send(body_for()))

    assert (error.status, error.retryable) == (status, retryable)
    assert error.retry_after == 7
    assert TOKEN not in str(error)


def test_a_slow_api_server_is_a_retryable_timeout(apiserver):
    apiserver.serve(EVENTS_PATH, Response(201, {}, delay=HOLD_SECONDS), method="POST")

    error = failure(recorder(apiserver, timeout=0.2).send(body_for()))

    assert (error.reason, error.retryable) == ("timeout", True)


@pytest.mark.parametrize("payload", [{}, {"metadata": {"name": "x"}}, {"metadata": "x"}])
def test_a_payload_without_name_or_namespace_is_refused_before_sending(apiserver, payload):
    error = failure(recorder(apiserver).send(payload))
    assert (error.reason, error.retryable) == ("invalid_payload", False)
    assert apiserver.requests == []


def test_read_back_from_the_recorded_list(apiserver):
    apiserver.serve_recording("events_list.json")
    listed = apiserver.body(EVENTS_PATH)["items"]
    listed[0] = our_recorded_event()

    notified = asyncio.run(recorder(apiserver).notified_revisions(NAMESPACE))

    assert notified == [EXPECTED]
    [request] = apiserver.requests
    assert (request.method, request.path) == ("GET", EVENTS_PATH)
    assert request.query == {"fieldSelector": [f"reason={REASON}"]}
    # What the store takes: (namespace, deployment, revision, replicaset, time, uids).
    assert tuple(notified[0])[:5] == (NAMESPACE, "payments-api", 2, REPLICASET, DETECTED_AT)


def test_foreign_events_are_ignored(apiserver):
    apiserver.serve_recording("events_list.json")  # written by example.com/incident-detector

    assert asyncio.run(recorder(apiserver).notified_revisions(NAMESPACE)) == []


def test_malformed_items_are_skipped(apiserver):
    apiserver.serve_recording("events_list.json")
    good = our_recorded_event()
    apiserver.body(EVENTS_PATH)["items"] = [
        "junk", None, 5, {"metadata": 5}, edited(regarding=DELETE),
        edited(metadata__annotations={REVISION_ANNOTATION: "x"}, note=None), good]

    assert asyncio.run(recorder(apiserver).notified_revisions(NAMESPACE)) == [EXPECTED]


def test_the_earliest_event_of_a_revision_is_kept(apiserver):
    apiserver.serve_recording("events_list.json")
    later = our_recorded_event()
    later["eventTime"] = "2026-11-23T18:10:00.000000Z"
    other_revision = copy.deepcopy(later)
    other_revision["metadata"]["annotations"][REVISION_ANNOTATION] = "3"
    apiserver.body(EVENTS_PATH)["items"] = [later, our_recorded_event(), other_revision]

    notified = asyncio.run(recorder(apiserver).notified_revisions(NAMESPACE))

    assert sorted(notified) == [EXPECTED, EXPECTED._replace(
        revision=3, notified_at=datetime(2026, 11, 23, 18, 10, tzinfo=timezone.utc))]


def test_read_back_of_created_events(apiserver):
    events = recorder(apiserver)
    first, second = incident(), incident(deployment="orders", replicaset="orders-5d8f7c6b9",
                                         revision=11, detected_at=DETECTED_AT.replace(second=30))
    for inc in (first, second):
        asyncio.run(events.send(body_for(inc)))

    notified = asyncio.run(events.notified_revisions(NAMESPACE))

    assert sorted(notified) == sorted([
        EXPECTED,
        NotifiedRevision(NAMESPACE, "orders", 11, "orders-5d8f7c6b9",
                         DETECTED_AT.replace(second=30)),
    ])


@pytest.mark.parametrize("response, reason, retryable", [
    (Response(403, {"kind": "Status", "code": 403, "reason": "Forbidden",
                    "message": 'events.events.k8s.io is forbidden'}), "Forbidden", False),
    (Response(503, "unavailable", "text/plain"), "http_503", True),
    (Response(200, "<html>proxy</html>", "text/html"), "malformed", True),
    (Response(200, {"kind": "PodList", "items": []}), "unexpected_shape", True),
])
def test_list_errors_raise_source_error(apiserver, response, reason, retryable):
    apiserver.serve(EVENTS_PATH, response)

    error = failure(recorder(apiserver).notified_revisions(NAMESPACE))

    assert (error.reason, error.retryable) == (reason, retryable)


def test_the_recorder_needs_only_the_event_permissions(apiserver):
    events = recorder(apiserver)
    asyncio.run(events.send(body_for()))
    asyncio.run(events.send(body_for()))
    asyncio.run(events.notified_revisions(NAMESPACE))

    verbs = {"POST": "create", "GET": "list"}
    used = {("events.k8s.io", "events", verbs[r.method]) for r in apiserver.requests}
    assert used == set(EVENT_PERMISSIONS)
    assert {r.path for r in apiserver.requests} == {EVENTS_PATH}


def test_the_verification_event_names_the_deployment_and_the_verdict():
    from incident_detector.notify.events import verification_event_body

    fields = dict(namespace=NAMESPACE, deployment="payments-api", deployment_uid="uid-1",
                  action_id=7, note="Verification PASS: ...", at=DETECTED_AT,
                  reporting_instance="detector-0")
    passed = verification_event_body(passed=True, **fields)
    failed = verification_event_body(passed=False, **fields)
    assert (passed["reason"], passed["type"]) == ("RemediationVerified", "Normal")
    assert (failed["reason"], failed["type"]) == ("RemediationNotVerified", "Warning")
    assert passed["regarding"]["uid"] == "uid-1" and passed["action"] == "Verify"
    # One name per action: a retried create is a 409, not a second Event.
    assert passed["metadata"]["name"] == failed["metadata"]["name"]
    assert passed["metadata"]["name"] != verification_event_body(
        passed=True, **{**fields, "action_id": 8})["metadata"]["name"]
    # Not an incident: the read-back, which selects the incidents' reason, ignores it.
    assert parse_notified_revision(passed) is None
