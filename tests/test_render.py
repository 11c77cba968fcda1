from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import make_incident
from incident_detector.notify import render
from incident_detector.model import (
    Attribution,
    Cause,
    Change,
    FieldChange,
    RemediationView,
    ErrorSignature,
    Evidence,
    GitOpsOwner,
    GitOpsTool,
    Incident,
    PodProblem,
    Signal,
    TemplateChange,
)

TITLES = ("Signal", "Correlation to rollout", "Impact", "Recommended action")


def with_evidence(incident: Incident, **changes) -> Incident:
    return replace(incident, evidence=replace(incident.evidence, **changes))


# --- rollback command and recommended action ---------------------------------------------


def test_rollback_command_targets_previous_revision():
    assert render.rollback_command(make_incident()) == (
        "kubectl rollout undo deployment/payments-api -n demo-aiops --to-revision=1"
    )


def test_rollback_command_without_previous_revision_uses_kubectl_default():
    command = render.rollback_command(make_incident(previous_revision=None))
    assert command == "kubectl rollout undo deployment/payments-api -n demo-aiops"
    assert "--to-revision" not in command


def test_rollback_command_quotes_for_the_shell():
    incident = make_incident(deployment="a b;rm -rf /", namespace="ns$(x)")
    argv = shlex.split(render.rollback_command(incident))
    assert argv == [
        "kubectl", "rollout", "undo", "deployment/a b;rm -rf /", "-n", "ns$(x)",
        "--to-revision=1",
    ]


def test_recommended_action_without_gitops_is_the_plain_rollback():
    action = render.recommended_action(make_incident())
    assert "revision 1" in action
    assert action.endswith(render.rollback_command(make_incident()))
    assert "Argo" not in action and "Flux" not in action


def test_recommended_action_argocd_names_the_app_and_keeps_kubectl_last():
    incident = with_evidence(
        make_incident(), gitops=GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "argocd")
    )
    action = render.recommended_action(incident)
    assert "argocd app rollback payments" in action
    assert "revert" in action and "Git" in action
    assert "reverted" in action  # says why a manual undo is not enough
    kubectl = render.rollback_command(incident)
    assert kubectl in action
    assert action.index("argocd app rollback") < action.index(kubectl)
    assert "last resort" in action.lower()


def test_recommended_action_argocd_app_outside_its_namespace_is_qualified():
    incident = with_evidence(
        make_incident(), gitops=GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "team-a")
    )
    assert "argocd app rollback team-a/payments" in render.recommended_action(incident)


def test_recommended_action_flux_names_the_app_and_keeps_kubectl_last():
    incident = with_evidence(
        make_incident(), gitops=GitOpsOwner(GitOpsTool.FLUX, "payments", "flux-system")
    )
    action = render.recommended_action(incident)
    assert "revert" in action and "Git" in action
    assert "flux suspend kustomization payments -n flux-system" in action
    assert "flux suspend helmrelease payments -n flux-system" in action
    kubectl = render.rollback_command(incident)
    assert action.index("flux suspend") < action.index(kubectl)
    assert "last resort" in action.lower()


def test_recommended_action_flux_without_namespace_leaves_the_flag_out():
    incident = with_evidence(make_incident(), gitops=GitOpsOwner(GitOpsTool.FLUX, "payments"))
    action = render.recommended_action(incident)
    assert "flux suspend kustomization payments or flux suspend helmrelease payments" in action
    assert "payments -n" not in action


def test_recommended_action_flux_names_exactly_the_object_its_labels_name():
    owner = GitOpsOwner(GitOpsTool.FLUX, "payments", "flux-system", flux_kind="helmrelease")
    action = render.recommended_action(with_evidence(make_incident(), gitops=owner))
    assert "the Flux HelmRelease flux-system/payments" in action
    assert "(flux suspend helmrelease payments -n flux-system)" in action
    assert "(flux resume helmrelease payments -n flux-system)" in action
    assert "kustomization" not in action


# --- summary ---------------------------------------------------------------------------------


def test_summary_states_the_decision_first_with_counts_threshold_and_window():
    text = render.summary(make_incident())
    assert text.startswith(
        "Rollout of payments-api revision 2 (payments-api-6874dc9bf7) in demo-aiops is failing: "
        "28 error lines in the last 2m (threshold 5)"
    )
    assert "1m30s after the rollout began at 17:54:04 UTC" in text
    assert "up from 0.5/min" in text
    assert "14/min" in text
    assert "CrashLoopBackOff on 2 pods" in text
    assert "\n" not in text


def test_summary_says_the_baseline_left_out_revisions_judged_bad():
    text = render.summary(with_evidence(make_incident(), baseline_excluded_revisions=(2,)))
    assert "up from 0.5/min in the last healthy state, before revision 2 (judged bad)" in text
    record = render.incident_record(with_evidence(make_incident(), baseline_excluded_revisions=(2, 3)))
    assert record["evidence"]["baseline_excluded_revisions"] == [2, 3]
    assert record["evidence"]["baseline_absent"] is None


def test_summary_and_record_say_why_there_was_no_baseline():
    reason = "every earlier revision was judged bad (revision 2)"
    incident = with_evidence(make_incident(), baseline_per_minute=None,
                             baseline_window_seconds=None, baseline_excluded_revisions=(2,),
                             baseline_absent=reason)
    text = render.summary(incident)
    assert f"No healthy state to compare with: {reason}; judged against the threshold alone." \
        in text
    assert "up from" not in text
    assert render.incident_record(incident)["evidence"]["baseline_absent"] == reason
    assert reason in str(render.slack_payload(incident))


def test_summary_per_pod_attribution_separates_other_replicasets():
    text = render.summary(make_incident())
    assert "new revision's pods wrote 28" in text
    assert "other ReplicaSets wrote 3" in text
    assert "no pod identity" not in text


def test_summary_workload_total_attribution_says_so():
    incident = with_evidence(make_incident(), attribution=Attribution.WORKLOAD_TOTAL)
    text = render.summary(incident)
    assert "no pod identity" in text
    assert "workload's total" in text


def test_summary_without_baseline_does_not_invent_one():
    incident = with_evidence(make_incident(), baseline_per_minute=None)
    assert "/min" not in render.summary(incident)


def test_summary_mentions_progress_deadline_and_its_message():
    incident = make_incident(
        signals=(Signal.PROGRESS_DEADLINE,),
        evidence=Evidence(progress_message='ReplicaSet "x" has timed out progressing.'),
    )
    text = render.summary(incident)
    assert "is failing: progress deadline exceeded" in text
    assert "timed out progressing" in text


def test_summary_pod_health_only_counts_distinct_pods_per_problem():
    incident = make_incident(
        signals=(Signal.POD_HEALTH,),
        evidence=Evidence(
            pod_problems=(
                ("p1", PodProblem.CRASH_LOOP),
                ("p2", PodProblem.CRASH_LOOP),
                ("p1", PodProblem.OOM_KILLED),
            )
        ),
    )
    text = render.summary(incident)
    assert "CrashLoopBackOff on 2 pods, OOMKilled on 1 pod;" in text
    assert "error lines" not in text


def test_summary_mentions_other_revisions_new_signatures_and_changes():
    incident = with_evidence(make_incident(), other_revisions_in_window=(3, 4))
    text = render.summary(incident)
    assert "(3, 4)" in text
    assert "1 error signature did not occur before the rollout" in text
    assert "pod template changed (image, env)" in text


def test_summary_single_error_line_is_singular():
    assert "1 error line in" in render.summary(make_incident(error_count=1.0))


def test_duration_formatting():
    assert render.duration(0) == "0s"
    assert render.duration(-5) == "0s"
    assert render.duration(45) == "45s"
    assert render.duration(90) == "1m30s"
    assert render.duration(120) == "2m"
    assert render.duration(3725) == "1h2m5s"
    assert render.duration(float("nan")) == "0s"


# --- incident record -------------------------------------------------------------------------

RECORD_KEYS = {
    "event", "schema", "namespace", "deployment", "revision", "replicaset",
    "deployment_uid", "replicaset_uid", "rollout_started_at", "error_count", "threshold",
    "window_seconds", "detected_at",
    "previous_revision", "signals", "summary", "recommended_action", "rollback_command",
    "confidence", "confidence_reasons", "remediation", "evidence", "kind", "priority", "rule",
}
EVIDENCE_KEYS = {
    "attribution", "new_revision_errors", "other_errors", "error_rate_per_minute",
    "baseline_per_minute", "baseline_window_seconds", "baseline_lookback_seconds",
    "baseline_excluded_revisions", "baseline_absent", "rollout_start_source", "affected_pods",
    "pod_problems", "progress_message", "other_revisions_in_window", "signatures",
    "signature_gap", "changes", "gitops",
    "alerts", "causes", "blast_radius", "causality",
}


def test_incident_record_keys_and_types():
    incident = with_evidence(
        make_incident(), gitops=GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "argocd")
    )
    record = render.incident_record(incident)
    assert set(record) == RECORD_KEYS
    assert set(record["evidence"]) == EVIDENCE_KEYS
    assert record["event"] == "incident"
    assert record["schema"] == render.SCHEMA_VERSION == 1
    assert record["kind"] == "rollout" and record["priority"] is None
    assert record["revision"] == 2 and type(record["revision"]) is int
    assert record["error_count"] == 28 and type(record["error_count"]) is int
    assert record["threshold"] == 5 and record["window_seconds"] == 120
    assert record["previous_revision"] == 1
    assert record["deployment_uid"] == "" and record["replicaset_uid"] == ""
    assert record["evidence"]["rollout_start_source"] == "replicaset_created"
    assert render.incident_record(make_incident(deployment_uid="d-1", replicaset_uid="r-1"))[
        "deployment_uid"] == "d-1"
    assert record["rollout_started_at"] == "2026-11-03T17:54:04Z"
    assert record["detected_at"] == "2026-11-03T17:55:34Z"
    assert record["signals"] == ["error_spike", "pod_health"]
    assert record["summary"] == render.summary(incident)
    assert record["recommended_action"] == render.recommended_action(incident)
    assert record["rollback_command"] == render.rollback_command(incident)
    evidence = record["evidence"]
    assert evidence["attribution"] == "per_pod"
    assert evidence["new_revision_errors"] == 28 and evidence["other_errors"] == 3
    assert evidence["baseline_per_minute"] == 0.5
    assert evidence["pod_problems"][0] == {
        "pod": "payments-api-6874dc9bf7-x2k9p", "problem": "CrashLoopBackOff"
    }
    assert evidence["signatures"][0] == {
        "fingerprint": "a1b2", "count": 20, "example": "ERROR charge failed: <nil> & retry",
        "new": True,
    }
    assert evidence["changes"][1] == {
        "kind": "env", "container": "payments-api", "detail": "added FEATURE_X=on"
    }
    assert evidence["gitops"] == {"tool": "argocd", "app": "payments", "app_namespace": "argocd"}
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_incident_record_converts_times_to_utc_with_z():
    east = timezone(timedelta(hours=2))
    incident = make_incident(
        rollout_started_at=datetime(2026, 11, 3, 19, 54, 4, tzinfo=east),
        detected_at=datetime(2026, 11, 3, 17, 55, 34),  # naive: taken as UTC
    )
    record = render.incident_record(incident)
    assert record["rollout_started_at"] == "2026-11-03T17:54:04Z"
    assert record["detected_at"] == "2026-11-03T17:55:34Z"


def test_incident_record_minimal_evidence_and_fractional_counts():
    incident = make_incident(
        error_count=7.5, previous_revision=None, evidence=Evidence(error_rate_per_minute=3.75)
    )
    record = render.incident_record(incident)
    assert record["error_count"] == 7.5
    assert record["previous_revision"] is None
    assert record["evidence"]["gitops"] is None
    assert record["evidence"]["baseline_per_minute"] is None
    assert record["evidence"]["attribution"] == "workload_total"
    json.dumps(record, allow_nan=False)


def test_incident_record_non_finite_numbers_stay_valid_json():
    incident = make_incident(
        error_count=float("nan"),
        evidence=Evidence(error_rate_per_minute=float("inf"), baseline_per_minute=float("nan")),
    )
    record = render.incident_record(incident)
    assert record["error_count"] is None
    json.dumps(record, allow_nan=False)


# --- Slack payload ---------------------------------------------------------------------------

UNESCAPED_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")


def mrkdwn_texts(payload: dict) -> list[str]:
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if block["type"] == "section":
            texts.append(block["text"]["text"])
        elif block["type"] == "context":
            texts.extend(e["text"] for e in block["elements"])
    return texts


def assert_within_slack_limits(payload: dict) -> None:
    json.dumps(payload, allow_nan=False)
    assert 0 < len(payload["text"]) <= 3000
    blocks = payload["blocks"]
    assert 0 < len(blocks) <= 50
    header = blocks[0]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert 0 < len(header["text"]["text"]) <= 150
    for block in blocks:
        assert block["type"] in {"header", "section", "context", "divider"}
        if block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn"
            assert 0 < len(block["text"]["text"]) <= 3000
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            for element in block["elements"]:
                assert 0 < len(element["text"]) <= 3000
    for text in mrkdwn_texts(payload):
        # Every user-controlled <, > and & reaches Slack escaped.
        assert "<" not in text and ">" not in text
        assert not UNESCAPED_AMPERSAND.search(text)


def sections(payload: dict) -> list[str]:
    return [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]


def test_slack_payload_header_then_four_titled_parts_in_order():
    payload = render.slack_payload(make_incident())
    assert_within_slack_limits(payload)
    assert payload["blocks"][0]["text"]["text"] == (
        ":rotating_light: payments-api rev 2 broke in demo-aiops: roll back"
    )
    titles = [text.split("\n", 1)[0] for text in sections(payload)]
    assert titles[:4] == [f"*{title}*" for title in TITLES]
    signal, correlation, impact, action = sections(payload)[:4]
    assert "28 error lines in 2m (threshold 5)" in signal
    assert "CrashLoopBackOff on 2 pods" in signal
    assert "17:54:04 UTC" in correlation and "1m30s later" in correlation
    assert "0.5/min" in correlation
    assert "payments-api-6874dc9bf7-x2k9p" in impact
    assert f"```{render.rollback_command(make_incident())}```" in action


def test_slack_payload_evidence_signatures_changes_and_other_revisions():
    incident = with_evidence(make_incident(), other_revisions_in_window=(3,))
    payload = render.slack_payload(incident)
    texts = sections(payload)
    signatures = next(t for t in texts if t.startswith("*Top error signatures*"))
    # New signatures first, with counts, one escaped example each.
    assert signatures.index("20× new") < signatures.index("8×")
    assert "`ERROR charge failed: &lt;nil&gt; &amp; retry`" in signatures
    changes = next(t for t in texts if t.startswith("*What changed*"))
    assert "image (payments-api): payments-api:1.4.2 -&gt; payments-api:1.5.0" in changes
    assert "Other revisions rolled out in this window: 3" in texts[1]


def test_a_signature_sample_cut_short_is_said_in_the_record_and_in_slack():
    short = with_evidence(make_incident(), signature_gap="limit_reached")
    assert render.incident_record(short)["evidence"]["signature_gap"] == "limit_reached"
    texts = sections(render.slack_payload(short))
    signatures = next(t for t in texts if t.startswith("*Top error signatures*"))
    assert "Sampled short: the sample reached its line limit" in signatures
    # No signatures at all (Loki failed): the section still says why.
    failed = with_evidence(make_incident(), signatures=(), signature_gap="loki_failed")
    texts = sections(render.slack_payload(failed))
    assert any(t.startswith("*Top error signatures*") and "Loki did not answer" in t
               for t in texts)
    assert render.incident_record(make_incident())["evidence"]["signature_gap"] is None


def test_slack_payload_fallback_text_is_decision_then_summary():
    payload = render.slack_payload(make_incident())
    assert payload["text"].startswith(":rotating_light: payments-api rev 2 broke in demo-aiops")
    assert "28 error lines in the last 2m (threshold 5)" in payload["text"]


def test_slack_payload_gitops_header_and_action():
    incident = with_evidence(
        make_incident(), gitops=GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "argocd")
    )
    payload = render.slack_payload(incident)
    assert_within_slack_limits(payload)
    assert payload["blocks"][0]["text"]["text"].endswith("roll back via Argo CD")
    action = sections(payload)[3]
    assert "```argocd app rollback payments```" in action
    assert action.index("argocd app rollback") < action.index("kubectl rollout undo")


def test_slack_payload_escapes_names_with_markup():
    incident = make_incident(
        namespace="<!channel>", replicaset="rs&<b>", evidence=Evidence(
            affected_pods=("<@U123>",), changes=(TemplateChange("<k>", "c&", "a>b"),),
            gitops=GitOpsOwner(GitOpsTool.FLUX, "<app>&"),
        ),
    )
    payload = render.slack_payload(incident)
    assert_within_slack_limits(payload)
    joined = "\n".join(mrkdwn_texts(payload))
    assert "&lt;!channel&gt;" in joined
    assert "rs&amp;&lt;b&gt;" in joined
    assert "&lt;@U123&gt;" in joined


def test_slack_payload_huge_evidence_stays_within_limits():
    incident = with_evidence(
        make_incident(deployment="d" * 253, namespace="n" * 63),
        signatures=tuple(
            ErrorSignature(f"fp{i}", 1000 - i, ("<&>" * 3400)[: 10_000], new=i % 2 == 0)
            for i in range(40)
        ),
        changes=tuple(
            TemplateChange("env", "c" * 60, f"added VAR_{i}=" + "&" * 400) for i in range(100)
        ),
        affected_pods=tuple(f"pod-{i}" for i in range(500)),
        progress_message="x" * 10_000,
        other_revisions_in_window=tuple(range(3, 300)),
    )
    payload = render.slack_payload(replace(incident, signals=tuple(Signal)))
    assert_within_slack_limits(payload)
    changes = next(t for t in sections(payload) if t.startswith("*What changed*"))
    assert re.search(r"…and \d+ more$", changes)
    assert payload["blocks"][0]["text"]["text"].endswith("…")
    assert payload["text"].endswith("…")


odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<!here>", "a&b", "&amp;", "`x`", "```", "*b*", "\n\n", "é€😀", ""]),
    st.text(max_size=30).map(lambda s: (s + "<&>") * 400),  # thousands of characters
)
names = st.one_of(st.text(min_size=1, max_size=300), st.sampled_from(["<b>&x</b>", "a" * 253]))
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7)), None]),
)
counts = st.floats(min_value=0, max_value=1e9, allow_nan=False)

evidences = st.builds(
    Evidence,
    attribution=st.sampled_from(list(Attribution)),
    new_revision_errors=counts,
    other_errors=counts,
    error_rate_per_minute=counts,
    baseline_per_minute=st.none() | counts,
    baseline_window_seconds=st.none() | st.integers(0, 86_400),
    affected_pods=st.lists(odd_text, max_size=20).map(tuple),
    pod_problems=st.lists(
        st.tuples(odd_text, st.sampled_from(list(PodProblem))), max_size=20
    ).map(tuple),
    progress_message=st.none() | odd_text,
    other_revisions_in_window=st.lists(st.integers(0, 10**6), max_size=200).map(tuple),
    signatures=st.lists(
        st.builds(ErrorSignature, fingerprint=odd_text, count=st.integers(0, 10**9),
                  example=odd_text, new=st.booleans()),
        max_size=30,
    ).map(tuple),
    changes=st.lists(
        st.builds(TemplateChange, kind=odd_text, container=odd_text, detail=odd_text),
        max_size=100,
    ).map(tuple),
    gitops=st.none() | st.builds(
        GitOpsOwner, tool=st.sampled_from(list(GitOpsTool)), app=names,
        app_namespace=st.none() | names,
    ),
)


@st.composite
def incidents(draw) -> Incident:
    started = draw(moments)
    return Incident(
        namespace=draw(names),
        deployment=draw(names),
        revision=draw(st.integers(1, 10**9)),
        replicaset=draw(names),
        rollout_started_at=started,
        error_count=draw(counts),
        threshold=draw(st.integers(1, 10**6)),
        window_seconds=draw(st.integers(10, 86_400)),
        detected_at=started + draw(st.timedeltas(timedelta(0), timedelta(days=2))),
        previous_revision=draw(st.none() | st.integers(0, 10**9)),
        signals=tuple(draw(st.sets(st.sampled_from(list(Signal)), min_size=1))),
        evidence=draw(evidences),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(incidents())
def test_slack_payload_within_limits_for_any_incident(incident):
    payload = render.slack_payload(incident)
    assert_within_slack_limits(payload)
    titles = [text.split("\n", 1)[0] for text in sections(payload)]
    assert titles[:4] == [f"*{title}*" for title in TITLES]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(incidents())
def test_incident_record_is_json_for_any_incident(incident):
    record = render.incident_record(incident)
    assert set(record) == RECORD_KEYS
    assert record["rollout_started_at"].endswith("Z") and record["detected_at"].endswith("Z")
    json.dumps(record, allow_nan=False)


# --- slack_text and event_note -------------------------------------------------------------


def test_slack_text_reads_as_plain_lines():
    incident = make_incident()
    text = render.slack_text(render.slack_payload(incident))
    lines = text.split("\n")
    assert lines[0] == ":rotating_light: payments-api rev 2 broke in demo-aiops: roll back"
    for title in TITLES:
        assert title in lines
    assert [lines.index(title) for title in TITLES] == sorted(lines.index(t) for t in TITLES)
    assert render.rollback_command(incident) in lines
    # Entities are decoded for a person to read.
    assert "ERROR charge failed: <nil> & retry" in text
    assert "&lt;" not in text and "&amp;" not in text


def test_event_note_is_the_headline_with_revision_and_counts():
    note = render.event_note(make_incident())
    assert note == render.summary(make_incident()).split(" That is ")[0]
    assert "revision 2" in note and "28 error lines" in note and "threshold 5" in note


def test_event_note_truncates_long_names_on_a_character_boundary():
    note = render.event_note(make_incident(deployment="😀" * 600))
    assert len(note.encode("utf-8")) <= 1024
    assert note.endswith("…")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(incidents())
def test_event_note_fits_1024_bytes_for_any_incident(incident):
    note = render.event_note(incident)
    assert 0 < len(note.encode("utf-8")) <= 1024
    assert note.startswith("Rollout of ")


def test_impact_says_how_many_how_fast_and_for_how_long():
    incident = make_incident()
    text = render.slack_text(render.slack_payload(incident))
    impact = text.split("Impact", 1)[1].split("Recommended action", 1)[0]
    assert "/min" in impact
    assert "has been live for" in impact


def test_the_confidence_and_its_reasons_are_in_the_record_and_in_slack():
    from incident_detector.judge.confidence import scored

    incident = scored(make_incident())
    record = render.incident_record(incident)
    assert record["confidence"] == incident.confidence and 0 < record["confidence"] <= 1
    assert record["confidence_reasons"] == list(incident.confidence_reasons)
    text = render.slack_text(render.slack_payload(incident))
    assert f"Confidence {incident.confidence:.2f}: +0.20 the detection rules held" in text
    unscored = render.incident_record(make_incident())
    assert unscored["confidence"] is None and unscored["confidence_reasons"] == []


# --- ranked causes (judge.causes) --------------------------------------------------------------

CAUSE_AT = datetime(2026, 11, 3, 17, 53, 30, tzinfo=timezone.utc)
OWN_ROLLOUT = Change(
    namespace="demo-aiops", kind="Deployment", name="payments-api", action="updated",
    at=CAUSE_AT, observed_at=CAUSE_AT, fields=(FieldChange("image payments-api", "1.4.2",
                                                           "1.5.0"),),
    revision=2, previous_revision=1, resource_version="r2")
LEDGER_ROLLOUT = Change(
    namespace="demo-aiops", kind="Deployment", name="ledger", action="updated", at=CAUSE_AT,
    observed_at=CAUSE_AT, fields=(FieldChange("image ledger", "ledger:3", "ledger:4"),),
    manager="argocd-controller", revision=9, previous_revision=8, resource_version="r9")
LEDGER_UNDO = "kubectl rollout undo deployment/ledger -n demo-aiops --to-revision=8"
LEDGER_CAUSE = Cause(change=LEDGER_ROLLOUT, score=0.9,
                     reasons=("+0.40 rolled out 34s before the errors began rising",
                              "+0.25 all 12 of its error lines name ledger"),
                     action="rollback", command=LEDGER_UNDO)
OWN_CAUSE = Cause(change=OWN_ROLLOUT, score=0.65,
                  reasons=("+0.25 its own rollout revision 2: every new pod runs the change",),
                  action="rollback",
                  command="kubectl rollout undo deployment/payments-api -n demo-aiops "
                          "--to-revision=1")


def test_causes_are_in_the_record_evidence():
    assert render.incident_record(make_incident())["evidence"]["causes"] == []
    incident = with_evidence(make_incident(), causes=(LEDGER_CAUSE, OWN_CAUSE))
    causes = render.incident_record(incident)["evidence"]["causes"]
    assert [c["change"]["name"] for c in causes] == ["ledger", "payments-api"]
    assert causes[0]["score"] == 0.9 and causes[0]["command"] == LEDGER_UNDO
    assert causes[0]["reasons"] == list(LEDGER_CAUSE.reasons)
    assert causes[0]["change"]["revision"] == 9
    assert causes[0]["change"]["summary"] == (
        "Deployment ledger rolled out revision 9: image ledger ledger:3 → ledger:4 "
        "(by argocd-controller)")


def test_causes_come_after_the_evidence_in_slack_and_only_when_there_are_some():
    plain = render.slack_text(render.slack_payload(make_incident()))
    assert "Likely causes" not in plain
    incident = with_evidence(make_incident(), causes=(OWN_CAUSE,))
    text = render.slack_text(render.slack_payload(incident))
    assert text.index("What changed") < text.index("Likely causes") < text.index("Detected ")
    assert "*1. 65%* Deployment payments-api rolled out revision 2" in text
    # Its own rollout ranked first: the advice stays the plain rollback of this Deployment.
    assert render.recommended_action(incident) == render.recommended_action(make_incident())
    assert "roll back" in text.splitlines()[0]


def test_a_foreign_top_cause_changes_the_advice_to_its_own_undo():
    incident = with_evidence(make_incident(), causes=(LEDGER_CAUSE, OWN_CAUSE))
    advice = render.recommended_action(incident)
    assert advice.startswith("The likeliest cause is not this rollout but Deployment ledger "
                             "rolled out revision 9")
    assert f"Roll back Deployment ledger in demo-aiops to revision 8: {LEDGER_UNDO}" in advice
    assert advice.index(LEDGER_UNDO) < advice.index(render.rollback_command(incident))
    payload = render.slack_payload(incident)
    text = render.slack_text(payload)
    assert text.splitlines()[0].endswith("broke in demo-aiops: roll back ledger")
    action = text.split("Recommended action", 1)[1]
    assert action.index(LEDGER_UNDO) < action.index(render.rollback_command(incident))
    assert "The likeliest cause is Deployment ledger (90%), not this rollout." in action
    # The record keeps this rollout's own undo in rollback_command.
    record = render.incident_record(incident)
    assert record["rollback_command"] == render.rollback_command(incident)
    assert record["recommended_action"] == advice


def test_a_foreign_configmap_cause_says_where_to_revert_it():
    config = Change(namespace="demo-aiops", kind="ConfigMap", name="payments-config",
                    action="updated", at=CAUSE_AT, observed_at=CAUSE_AT,
                    fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),),
                    manager="kubectl-patch", resource_version="c1")
    show = "kubectl get configmap payments-config -n demo-aiops -o yaml"
    incident = with_evidence(make_incident(), causes=(
        Cause(change=config, score=0.7, reasons=("+0.20 its pods read it",), command=show),))
    advice = render.recommended_action(incident)
    assert ("Revert ConfigMap payments-config in demo-aiops where it was changed "
            f"(by kubectl-patch); to see it: {show}") in advice
    text = render.slack_text(render.slack_payload(incident))
    assert text.splitlines()[0].endswith(": likely ConfigMap payments-config")


def test_a_remediation_on_another_deployment_names_it_on_the_button():
    view = RemediationView("rollback", 8, "ask", "approval required", "mode", False,
                           approve_token="a", reject_token="r", target="demo-aiops/ledger")
    (section, actions) = render.remediation_blocks(view)
    assert actions["elements"][0]["text"]["text"] == "Approve: Roll back ledger to revision 8"
    own = replace(view, target=None)
    assert render.remediation_blocks(own)[1]["elements"][0]["text"]["text"] == (
        "Approve: Roll back to revision 8")
    record = render.incident_record(make_incident(remediation=view))
    assert record["remediation"]["target"] == "demo-aiops/ledger"
