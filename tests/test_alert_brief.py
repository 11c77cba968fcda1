"""The alert incident's brief (judge.alert_brief), its commands (judge.commands) and how it
renders (notify.alert_render): pure functions, plain asserts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from incident_detector.judge.alert_brief import (
    brief,
    deployment_pods,
    last_rollout,
    pod_reasons,
    pod_to_delete,
    related_events,
)
from incident_detector.judge.commands import action_command
from incident_detector.model import (
    Alert,
    AlertTarget,
    Container,
    Deployment,
    ErrorSignature,
    Pod,
    PodProblem,
    PodTemplate,
    Priority,
    ReplicaSet,
    WarningEvent,
    alert_key,
)
from incident_detector.notify import alert_render
from incident_detector.notify.render import slack_text

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
NS, DEP = "shop", "checkout"
OLD, NEW = "checkout-77587766bd", "checkout-6874dc9bf7"


def rs(name, revision, age, image, replicas=2, deployment=DEP, uid="dep-uid"):
    return ReplicaSet(namespace=NS, name=name, deployment=deployment, revision=revision,
                      created_at=NOW - timedelta(seconds=age), replicas=replicas,
                      template=PodTemplate(containers=(Container("app", image),)),
                      deployment_uid=uid)


DEPLOYMENT = Deployment(namespace=NS, name=DEP, revision=2, replicas=2, uid="dep-uid")
REPLICASETS = (rs(OLD, 1, 86400, "checkout:1.0", replicas=0), rs(NEW, 2, 7200, "checkout:1.1"),
               rs("other-5d8f", 1, 100, "other:1", deployment="other", uid="other-uid"))
PODS = (Pod(NS, NEW + "-aaaaa", NEW, phase="Running", ready=True, uid="u1"),
        Pod(NS, NEW + "-bbbbb", NEW, phase="Running", ready=False, restarts=7,
            problems=(PodProblem.CRASH_LOOP,), uid="u2"),
        Pod(NS, "other-5d8f-ccccc", "other-5d8f", problems=(PodProblem.OOM_KILLED,)))
EVENTS = (WarningEvent("BackOff", "Back-off restarting failed container app", "Pod",
                       NEW + "-bbbbb", 12, NOW - timedelta(seconds=20)),
          WarningEvent("BackOff", "not ours", "Pod", "other-5d8f-ccccc", 3, NOW),
          WarningEvent("FailedCreate", "quota exceeded", "ReplicaSet", NEW, 1,
                       NOW - timedelta(seconds=300)),
          WarningEvent("Unhealthy", "older", "Pod", NEW + "-aaaaa", 1, None))
ALERT = Alert(fingerprint="3f2a9c1d2b4e5f60", status="firing",
              starts_at=NOW - timedelta(minutes=5),
              labels=(("alertname", "KubePodCrashLooping"), ("namespace", NS),
                      ("deployment", DEP), ("severity", "critical")),
              annotations=(("summary", "Pod is crash looping."),
                           ("description", "token=abcdef0123456789abcdef restarts 7")),
              generator_url="http://prometheus:9090/graph?g0.expr=x")
TARGET = AlertTarget(NS, DEP, "deployment")


def make(action="delete-pod", priority=Priority.P1, rule="crash-loop"):
    return brief(ALERT, TARGET, deployment=DEPLOYMENT, replicasets=REPLICASETS, pods=PODS,
                 events=EVENTS, signatures=(ErrorSignature("fp", 4, "ERROR db timeout"),),
                 priority=priority, rule=rule, action=action, now=NOW)


def test_the_brief_keeps_only_the_deployments_pods_problems_first():
    assert [p.name for p in deployment_pods(DEPLOYMENT, REPLICASETS, PODS)] == [
        NEW + "-bbbbb", NEW + "-aaaaa"]


def test_the_brief_keeps_only_events_about_the_deployment_newest_first():
    events = related_events(DEPLOYMENT, REPLICASETS, EVENTS)
    assert [(e.reason, e.object_name) for e in events] == [
        ("BackOff", NEW + "-bbbbb"), ("FailedCreate", NEW), ("Unhealthy", NEW + "-aaaaa")]


def test_the_last_rollout_says_what_it_changed():
    last = last_rollout(DEPLOYMENT, REPLICASETS)
    assert (last.revision, last.replicaset, last.previous_revision) == (2, NEW, 1)
    assert [c.kind for c in last.changes] == ["image"]
    assert last_rollout(Deployment(NS, DEP, revision=None), REPLICASETS) is None
    first = last_rollout(DEPLOYMENT, (rs(NEW, 2, 60, "x"),))
    assert (first.revision, first.previous_revision, first.changes) == (2, None, ())


def test_the_pod_to_delete_is_the_crash_looping_one():
    assert pod_to_delete(PODS).name == NEW + "-bbbbb"
    assert pod_to_delete(PODS[:1]) is None
    assert pod_reasons(PODS) == ("CrashLoopBackOff", "OOMKilled")


def test_commands_are_the_ones_kubectl_takes():
    assert action_command("rollback", namespace=NS, deployment=DEP, to_revision=3) == \
        "kubectl rollout undo deployment/checkout -n shop --to-revision=3"
    assert action_command("restart", namespace=NS, deployment=DEP) == \
        "kubectl rollout restart deployment/checkout -n shop"
    assert action_command("pause", namespace=NS, deployment=DEP) == \
        "kubectl rollout pause deployment/checkout -n shop"
    assert action_command("scale", namespace=NS, deployment=DEP, params={"replicas": 4}) == \
        "kubectl scale deployment/checkout -n shop --replicas=4"
    assert action_command("scale", namespace=NS, deployment=DEP) is None
    assert action_command("delete-pod", namespace=NS, deployment=DEP, pod="p-1") == \
        "kubectl delete pod p-1 -n shop"
    assert action_command("delete-pod", namespace=NS, deployment=DEP) is None
    assert action_command("none", namespace=NS, deployment=DEP) is None
    # Names are quoted for a shell, whatever they hold.
    assert action_command("restart", namespace="a b", deployment=DEP).endswith("-n 'a b'")


def test_an_alert_incident_names_its_action_and_command():
    incident = make()
    assert incident.command == f"kubectl delete pod {NEW}-bbbbb -n shop"
    assert incident.key == alert_key(ALERT) == "alert/3f2a9c1d2b4e5f60/2026-11-23T17:55:00.000000Z"
    assert incident.revision == 2 and incident.deployment_uid == "dep-uid"


def test_the_record_carries_kind_priority_brief_and_no_secret():
    record = alert_render.alert_record(make())
    assert (record["event"], record["schema"], record["kind"], record["priority"]) == (
        "incident", 1, "alert", "P1")
    assert record["alert"]["name"] == "KubePodCrashLooping"
    assert record["alert"]["labels"]["severity"] == "critical"
    assert [p["name"] for p in record["evidence"]["pods"]] == [NEW + "-bbbbb", NEW + "-aaaaa"]
    assert record["evidence"]["pods"][0]["problems"] == ["CrashLoopBackOff"]
    assert record["evidence"]["warning_events"][0]["object"] == f"Pod/{NEW}-bbbbb"
    assert record["evidence"]["last_rollout"]["changes"][0]["kind"] == "image"
    assert record["command"] == f"kubectl delete pod {NEW}-bbbbb -n shop"
    assert "crash looping" in record["summary"] and "revision 2" in record["summary"]
    assert "abcdef0123456789abcdef" not in json.dumps(record)


def test_without_an_action_the_advice_is_to_investigate():
    incident = make(action="none", priority=Priority.P3, rule="default")
    assert incident.command is None
    assert "investigate" in alert_render.advice(incident)
    assert "kubectl describe deployment/checkout -n shop" in slack_text(
        alert_render.slack_payload(incident))


def test_the_slack_message_has_the_brief_in_sections():
    text = slack_text(alert_render.slack_payload(make()))
    assert text.startswith(":rotating_light: [P1] KubePodCrashLooping on checkout in shop")
    for part in ("Alert", "Pods", "Warning events", "Last rollout", "Top error signatures",
                 "Recommended action", f"kubectl delete pod {NEW}-bbbbb -n shop"):
        assert part in text, part
    assert "abcdef0123456789abcdef" not in text


def test_the_resolved_follow_up_says_how_long_it_fired():
    record = alert_render.alert_record(make())
    resolved = alert_render.resolved_record(record, resolved_at=ALERT.starts_at
                                            + timedelta(minutes=14))
    assert resolved["event"] == "resolved" and resolved["firing_seconds"] == 840
    assert resolved["summary"] == "Resolved after 14m: KubePodCrashLooping on checkout in shop."


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=200), max_size=8),
       st.text(max_size=300))
def test_any_labels_and_annotations_render(labels, about):
    alert = Alert(fingerprint="f", status="firing", starts_at=NOW,
                  labels=tuple(labels.items()), annotations=(("summary", about),))
    incident = brief(alert, TARGET, deployment=DEPLOYMENT, replicasets=REPLICASETS, pods=(),
                     events=(), signatures=(), priority=Priority.P3, rule="default",
                     action="none", now=NOW)
    json.dumps(alert_render.alert_record(incident))
    payload = alert_render.slack_payload(incident)
    assert len(payload["blocks"]) <= 50 and len(payload["text"]) <= 3000
