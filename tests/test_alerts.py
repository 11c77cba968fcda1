"""parse_webhook: Alertmanager's notifications (fixtures/alertmanager) in, model.Alert out."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incident_detector.sources.alerts import (
    AlertNotification,
    PayloadError,
    label_fingerprint,
    parse_webhook,
)

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
UTC = timezone.utc


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def doc(name: str) -> dict:
    return json.loads(raw(name))


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def reason(document: object) -> str:
    with pytest.raises(PayloadError) as caught:
        parse_webhook(body(document))
    return caught.value.reason


# The notifications as Alertmanager sends them ---------------------------------------------

def test_a_firing_alert_as_alertmanager_sends_it():
    notification = parse_webhook(raw("firing-pod.json"))
    assert isinstance(notification, AlertNotification)
    assert notification.version == "4"
    assert notification.status == "firing"
    assert notification.receiver == "incident-detector"
    assert notification.group_key == ('{}/{namespace=~"demo-.*"}:'
                                      '{alertname="KubePodCrashLooping", namespace="demo-aiops"}')
    assert notification.group_labels == (("alertname", "KubePodCrashLooping"),
                                         ("namespace", "demo-aiops"))
    assert ("pod", "payments-api-6874dc9bf7-x2k9p") in notification.common_labels
    assert ("summary", "Pod is crash looping.") in notification.common_annotations
    assert notification.external_url == "http://alertmanager-main-0:9093"
    assert notification.truncated_alerts == 0
    assert (notification.firing, notification.resolved) == (1, 0)

    (alert,) = notification.alerts
    assert alert.name == "KubePodCrashLooping"
    assert alert.firing
    assert alert.fingerprint == "7e453b64f5954c72"
    assert alert.starts_at == datetime(2026, 11, 3, 17, 56, 34, 712000, tzinfo=UTC)
    # Go's zero time: Alertmanager does not expose an end it has not reached.
    assert alert.ends_at is None
    assert alert.label("namespace") == "demo-aiops"
    assert alert.label("pod") == "payments-api-6874dc9bf7-x2k9p"
    assert alert.annotation("runbook_url") == (
        "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping")
    # \u0026 in the wire form is an ampersand.
    assert alert.generator_url.endswith("+%3E%3D+1&g0.tab=1")
    assert alert.group_key == notification.group_key
    assert alert.receiver == "incident-detector"
    # Sorted pairs: the same label set always has the same representation.
    assert list(alert.labels) == sorted(alert.labels)


def test_the_resolved_notification_of_the_same_period():
    firing = parse_webhook(raw("firing-pod.json")).alerts[0]
    notification = parse_webhook(raw("resolved-pod.json"))
    assert notification.status == "resolved"
    assert (notification.firing, notification.resolved) == (0, 1)
    (alert,) = notification.alerts
    assert not alert.firing and alert.status == "resolved"
    assert (alert.fingerprint, alert.starts_at) == (firing.fingerprint, firing.starts_at)
    assert alert.ends_at == datetime(2026, 11, 3, 18, 21, 4, 712000, tzinfo=UTC)


def test_a_grouped_notification_with_firing_and_resolved_alerts():
    notification = parse_webhook(raw("grouped.json"))
    assert notification.status == "firing"
    assert (notification.firing, notification.resolved) == (2, 1)
    services = [(a.label("service"), a.status) for a in notification.alerts]
    assert services == [("payments-api", "firing"), ("checkout", "firing"),
                        ("ledger", "resolved")]
    assert len({a.fingerprint for a in notification.alerts}) == 3
    assert dict(notification.common_labels) == {"alertname": "HighErrorRate",
                                                "namespace": "demo-aiops",
                                                "prometheus": "monitoring/k8s",
                                                "severity": "critical"}
    assert notification.common_annotations == ()
    ledger = notification.alerts[2]
    assert ledger.ends_at == datetime(2026, 11, 3, 17, 55, 49, 183000, tzinfo=UTC)


def test_truncated_alerts_are_counted():
    notification = parse_webhook(raw("truncated.json"))
    assert len(notification.alerts) == 2
    assert notification.truncated_alerts == 3


def test_an_alert_without_namespace_still_parses():
    (alert,) = parse_webhook(raw("watchdog.json")).alerts
    assert alert.name == "Watchdog"
    assert alert.label("namespace") is None


def test_without_fingerprint_the_one_alertmanager_would_give():
    notification = parse_webhook(raw("no-fingerprint.json"))
    (alert,) = notification.alerts
    assert alert.fingerprint == label_fingerprint(dict(alert.labels))
    assert len(alert.fingerprint) == 16
    # +01:00 with nanoseconds: kept to the microsecond, in UTC.
    assert alert.starts_at == datetime(2026, 11, 3, 17, 57, 49, 183266, tzinfo=UTC)
    assert alert.starts_at.tzinfo == UTC
    assert notification.truncated_alerts == 0


def test_grafana_says_version_1_and_is_refused_with_that_reason():
    with pytest.raises(PayloadError) as caught:
        parse_webhook(raw("grafana-version-1.json"))
    assert caught.value.reason == ('version "1" is not supported: only Alertmanager\'s webhook '
                                   'payload version "4"')


def test_fields_the_detector_does_not_use_are_tolerated():
    document = doc("grafana-version-1.json")
    document["version"] = "4"
    (alert,) = parse_webhook(body(document)).alerts
    assert alert.fingerprint == "bc97ff14869b13e3"
    assert alert.label("app") == "payments-api"


# The fingerprint ---------------------------------------------------------------------------

def test_label_fingerprint_is_alertmanagers():
    # Alertmanager's own test data (notify/exec/testdata/success.json).
    assert label_fingerprint({"Message": "message"}) == "4ea129fd903f0e45"
    # Every fixture's fingerprint was computed that way.
    for name in ("firing-pod.json", "grouped.json", "deployment-label.json", "watchdog.json"):
        for alert in parse_webhook(raw(name)).alerts:
            assert alert.fingerprint == label_fingerprint(dict(alert.labels)), name


def test_label_fingerprint_properties():
    assert label_fingerprint({}) == "cbf29ce484222325"  # FNV-1a's offset: the empty set
    assert label_fingerprint({"a": "1", "b": "2"}) == label_fingerprint({"b": "2", "a": "1"})
    assert label_fingerprint({"a": "1"}) != label_fingerprint({"a": "2"})
    # The separator keeps name and value apart.
    assert label_fingerprint({"ab": "c"}) != label_fingerprint({"a": "bc"})
    assert label_fingerprint({"é": "ü"}) == label_fingerprint({"é": "ü"})


@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_label_fingerprint_is_stable_and_16_hex_digits(labels):
    fingerprint = label_fingerprint(labels)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert label_fingerprint(dict(reversed(list(labels.items())))) == fingerprint


# Times -------------------------------------------------------------------------------------

_DELETE = object()


def with_alert(**changes) -> dict:
    document = copy.deepcopy(doc("firing-pod.json"))
    for key, value in changes.items():
        if value is _DELETE:
            del document["alerts"][0][key]
        else:
            document["alerts"][0][key] = value
    return document


def starts(value: str) -> datetime:
    return parse_webhook(body(with_alert(startsAt=value))).alerts[0].starts_at


def test_rfc3339_times():
    assert starts("2026-11-03T17:56:34Z") == datetime(2026, 11, 3, 17, 56, 34, tzinfo=UTC)
    assert starts("2026-11-03T17:56:34.1Z") == datetime(2026, 11, 3, 17, 56, 34, 100000,
                                                        tzinfo=UTC)
    assert starts("2026-11-03T18:56:34.712+01:00") == datetime(2026, 11, 3, 17, 56, 34, 712000,
                                                               tzinfo=UTC)
    assert starts("2026-11-03t17:56:34z") == datetime(2026, 11, 3, 17, 56, 34, tzinfo=UTC)
    assert starts("2026-11-03T17:56:34.123456789-05:30") == datetime(
        2026, 11, 3, 23, 26, 34, 123456, tzinfo=UTC)


@pytest.mark.parametrize("value", [
    "2026-11-03T17:56:34",          # no offset
    "2026-11-03",                   # a date
    "20261103T175634Z",             # ISO 8601 basic format, not RFC 3339
    "2026-11-03T17:56:34Z\n",
    "2026-02-30T00:00:00Z",         # no such day
    "2026-11-03T25:00:00Z",
    "١٢٣٤-11-03T17:56:34Z",         # digits, but not ASCII ones
    "yesterday",
    "",
    1793814994,
    True,
])
def test_not_rfc3339(value):
    assert reason(with_alert(startsAt=value)) == "alerts[0].startsAt is not an RFC 3339 time"


def test_ends_at():
    assert parse_webhook(body(with_alert(endsAt=None))).alerts[0].ends_at is None
    assert parse_webhook(body(with_alert(endsAt=_DELETE))).alerts[0].ends_at is None
    assert parse_webhook(body(with_alert(endsAt="0001-01-01T00:00:00+00:00"))).alerts[0] \
        .ends_at is None
    assert reason(with_alert(endsAt="soon")) == "alerts[0].endsAt is not an RFC 3339 time"
    # Year 1 moved before year 1 by its offset: not representable, refused rather than crashing.
    assert reason(with_alert(endsAt="0001-01-01T00:00:00+01:00")) == \
        "alerts[0].endsAt is not an RFC 3339 time"


def test_starts_at_is_required():
    assert reason(with_alert(startsAt=_DELETE)) == \
        "alerts[0].startsAt is missing or the zero time"
    assert reason(with_alert(startsAt="0001-01-01T00:00:00Z")) == \
        "alerts[0].startsAt is missing or the zero time"


# What is refused, and the reason given -----------------------------------------------------

def grouped(**changes) -> dict:
    document = doc("grouped.json")
    for key, value in changes.items():
        if value is _DELETE:
            del document[key]
        else:
            document[key] = value
    return document


def third(**changes) -> dict:
    document = doc("grouped.json")
    document["alerts"][2].update(changes)
    return document


@pytest.mark.parametrize("payload, expected", [
    (b"", "body is not JSON: Expecting value at line 1 column 1"),
    (b"alerts=1", "body is not JSON: Expecting value at line 1 column 1"),
    (b'{"version": "4",', "body is not JSON: Expecting property name enclosed in double quotes "
                          "at line 1 column 17"),
    (b"\xff\xfe{}", "body is not UTF-8"),
    (b"[]", "body is a JSON array, not an object"),
    (b'"4"', "body is a JSON string, not an object"),
    (b"null", "body is a JSON null, not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "body is not JSON the detector can read"),
    (b'{"version": "4", "alerts": [], "truncatedAlerts": 1' + b"0" * 5000 + b"}",
     "body is not JSON the detector can read"),
])
def test_not_json(payload, expected):
    with pytest.raises(PayloadError) as caught:
        parse_webhook(payload)
    assert caught.value.reason == expected


@pytest.mark.parametrize("document, expected", [
    (grouped(version=_DELETE), 'version is missing (Alertmanager sends "4")'),
    (grouped(version=4), "version is a JSON number, not a string"),
    (grouped(version="5"), 'version "5" is not supported: only Alertmanager\'s webhook '
                           'payload version "4"'),
    (grouped(version="x" * 100), 'version "' + "x" * 40 + '..." is not supported: only '
                                 'Alertmanager\'s webhook payload version "4"'),
    (grouped(alerts=_DELETE), "alerts is missing"),
    (grouped(alerts=None), "alerts is missing"),
    (grouped(alerts={"0": {}}), "alerts is a JSON object, not an array"),
    (grouped(alerts=[[]]), "alerts[0] is a JSON array, not an object"),
    (grouped(status="pending"), 'status must be "firing" or "resolved", not "pending"'),
    (grouped(status=1), 'status must be "firing" or "resolved", not a JSON number'),
    (grouped(receiver=["a"]), "receiver is a JSON array, not a string"),
    (grouped(groupKey=7), "groupKey is a JSON number, not a string"),
    (grouped(externalURL=False), "externalURL is a JSON boolean, not a string"),
    (grouped(commonLabels=[]), "commonLabels is a JSON array, not an object"),
    (grouped(groupLabels={"alertname": 1}), "groupLabels.alertname is a JSON number, "
                                            "not a string"),
    (grouped(commonAnnotations={"a b": None}), 'commonAnnotations."a b" is a JSON null, '
                                               'not a string'),
    (grouped(truncatedAlerts=-1), "truncatedAlerts is not a non-negative integer"),
    (grouped(truncatedAlerts="3"), "truncatedAlerts is not a non-negative integer"),
    (grouped(truncatedAlerts=True), "truncatedAlerts is not a non-negative integer"),
    (grouped(truncatedAlerts=1.5), "truncatedAlerts is not a non-negative integer"),
    (third(status="pending"), 'alerts[2].status must be "firing" or "resolved", not "pending"'),
    (third(status=None), "alerts[2].status is missing"),
    (third(labels=None), "alerts[2].labels is missing"),
    (third(labels=["namespace"]), "alerts[2].labels is a JSON array, not an object"),
    (third(labels={"severity": 2}), "alerts[2].labels.severity is a JSON number, not a string"),
    (third(labels={"x" * 50: {}}), 'alerts[2].labels."' + "x" * 40 + '..." is a JSON object, '
                                   'not a string'),
    (third(annotations="none"), "alerts[2].annotations is a JSON string, not an object"),
    (third(startsAt="2026-11-03"), "alerts[2].startsAt is not an RFC 3339 time"),
    (third(endsAt=0), "alerts[2].endsAt is not an RFC 3339 time"),
    (third(fingerprint=12), "alerts[2].fingerprint is a JSON number, not a string"),
    (third(generatorURL={}), "alerts[2].generatorURL is a JSON object, not a string"),
])
def test_not_the_schema(document, expected):
    assert reason(document) == expected


def test_what_may_be_left_out_or_null():
    # Go encodes a nil map as null; receivers and URLs may be empty.
    notification = parse_webhook(body(grouped(
        groupLabels=None, commonLabels=None, commonAnnotations=None, receiver=None,
        externalURL=_DELETE, groupKey=_DELETE, truncatedAlerts=_DELETE, status=_DELETE)))
    assert notification.group_labels == notification.common_labels == ()
    assert notification.receiver == notification.external_url == notification.group_key == ""
    assert notification.truncated_alerts == 0
    assert notification.status == "firing"  # derived: an alert fires
    resolved_only = grouped(status=_DELETE)
    resolved_only["alerts"] = resolved_only["alerts"][2:]
    assert parse_webhook(body(resolved_only)).status == "resolved"
    empty = parse_webhook(body(grouped(alerts=[])))
    assert empty.alerts == () and (empty.firing, empty.resolved) == (0, 0)


def test_an_alert_needs_only_status_labels_and_starts_at():
    document = grouped()
    document["alerts"] = [{"status": "firing", "labels": {},
                           "startsAt": "2026-11-03T17:56:34Z"}]
    (alert,) = parse_webhook(body(document)).alerts
    assert alert.name == ""  # alertname is optional
    assert alert.labels == alert.annotations == ()
    assert alert.fingerprint == label_fingerprint({}) and alert.generator_url == ""
    # An empty fingerprint is no fingerprint.
    document["alerts"][0]["fingerprint"] = ""
    assert parse_webhook(body(document)).alerts[0].fingerprint == label_fingerprint({})


# Anything at all: a notification or a PayloadError, never another exception ---------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)

_alertish = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "pending"]) | _json,
     "labels": st.dictionaries(st.text(max_size=12), st.text(max_size=12)) | _json,
     "startsAt": st.sampled_from(["2026-11-03T17:56:34Z", "0001-01-01T00:00:00Z", "x"]) | _json},
    optional={"endsAt": st.sampled_from(["0001-01-01T00:00:00Z", "2026-11-03T18:00:00Z"]) | _json,
              "fingerprint": st.text(max_size=16) | _json,
              "annotations": st.dictionaries(st.text(max_size=8), st.text(max_size=8)) | _json})


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(payload):
    try:
        parse_webhook(payload)
    except PayloadError as exc:
        assert exc.reason


@given(st.fixed_dictionaries({"version": st.just("4") | _json,
                              "alerts": st.lists(_alertish, max_size=3) | _json},
                             optional={"status": _json, "groupLabels": _json,
                                       "truncatedAlerts": _json, "receiver": _json}))
def test_arbitrary_documents_never_raise_anything_else(document):
    try:
        notification = parse_webhook(body(document))
    except PayloadError as exc:
        assert exc.reason
    else:
        assert notification.firing + notification.resolved == len(notification.alerts)
        for alert in notification.alerts:
            assert alert.status in ("firing", "resolved")
            assert alert.starts_at.tzinfo == UTC and alert.fingerprint
