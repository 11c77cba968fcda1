"""Rendering of ranked causes and of ``kind: change`` incidents: the JSON record and Slack."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.model import (
    Cause,
    Change,
    ChangeIncident,
    ErrorSignature,
    FieldChange,
    Priority,
    RemediationView,
)
from incident_detector.notify import change_render, render
from incident_detector.store.changes import change_dict

AT = datetime(2026, 11, 27, 8, 59, 20, tzinfo=timezone.utc)
DETECTED = AT + timedelta(seconds=130)

PAYMENTS_ROLLOUT = Change(
    namespace="shop", kind="Deployment", name="payments", action="updated", at=AT,
    observed_at=AT + timedelta(seconds=2),
    fields=(FieldChange("image api", "payments:1.4", "payments:1.5"),),
    manager="argocd-controller", operation="Update", uid="uid-p", resource_version="4711",
    revision=7, previous_revision=6, id=12)
CONFIG = Change(
    namespace="shop", kind="ConfigMap", name="checkout-config", action="updated",
    at=AT - timedelta(minutes=20), observed_at=AT - timedelta(minutes=20),
    fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),), manager="kubectl-patch",
    resource_version="4700", id=11)
ROLLBACK = "kubectl rollout undo deployment/payments -n shop --to-revision=6"
TOP = Cause(change=PAYMENTS_ROLLOUT, score=0.95, reasons=(
    "+0.15 it calls payments, which rolled out revision 7 (env PAYMENTS_URL names Service "
    "payments)",
    "+0.40 rolled out 40s before the errors began rising",
    "+0.25 12 of its 13 error lines name payments",
), action="rollback", command=ROLLBACK)
SECOND = Cause(change=CONFIG, score=0.18, reasons=("+0.20 its pods read ConfigMap "
                                                   "checkout-config (a volume or envFrom)",),
               command="kubectl get configmap checkout-config -n shop -o yaml")


def incident(**overrides) -> ChangeIncident:
    fields = dict(
        namespace="shop", deployment="checkout", deployment_uid="uid-c",
        change=PAYMENTS_ROLLOUT, detected_at=DETECTED, error_count=28.0, window_seconds=120,
        error_rate_per_minute=14.0, baseline_per_minute=0.5, causes=(TOP, SECOND),
        signatures=(ErrorSignature("f1", 12, "upstream call failed host=payments", new=True),),
        priority=Priority.P2, rule="default", action="rollback", command=ROLLBACK)
    fields.update(overrides)
    return ChangeIncident(**fields)


# --- causes_json and causes_blocks ----------------------------------------------------------


def test_causes_json_has_the_change_as_change_dict_and_the_ranking():
    (first, second) = change_render.causes_json((TOP, SECOND))
    assert first == {"change": change_dict(PAYMENTS_ROLLOUT), "score": 0.95,
                     "reasons": list(TOP.reasons), "action": "rollback", "command": ROLLBACK}
    assert second["action"] is None
    assert second["change"]["summary"] == ("ConfigMap checkout-config updated: data.TIMEOUT_MS "
                                           "5000 → 50 (by kubectl-patch)")
    assert change_render.causes_json(()) == []


def test_causes_json_redacts_field_values_that_came_from_outside():
    leaky = replace(CONFIG, fields=(FieldChange("data.DSN", None,
                                                "postgres://app:hunter2@db:5432/shop"),))
    (cause,) = change_render.causes_json((replace(SECOND, change=leaky),))
    assert "hunter2" not in json.dumps(cause)
    assert cause["change"]["fields"][0]["after"].startswith("postgres://app:")


def test_causes_blocks_show_score_summary_reasons_and_command():
    (block,) = change_render.causes_blocks((TOP, SECOND))
    text = block["text"]["text"]
    assert text.startswith("*Likely causes*\n*1. 95%* Deployment payments rolled out revision 7")
    assert "◦ +0.40 rolled out 40s before the errors began rising" in text
    assert f"`{ROLLBACK}`" in text
    assert "*2. 18%* ConfigMap checkout-config updated" in text
    assert text.index("1. 95%") < text.index("2. 18%")
    assert change_render.causes_blocks(()) == []


def test_causes_blocks_escape_markup_in_names():
    odd = replace(TOP, change=replace(PAYMENTS_ROLLOUT, name="<pay&ments>"),
                  command="kubectl rollout undo 'deployment/<pay&ments>' -n shop")
    text = change_render.causes_blocks((odd,))[0]["text"]["text"]
    assert "<pay" not in text and "&lt;pay&amp;ments&gt;" in text


# --- the JSON record -------------------------------------------------------------------------


def test_change_incident_record_common_fields_and_evidence():
    record = change_render.change_incident_record(incident())
    assert record["event"] == "incident" and record["schema"] == render.SCHEMA_VERSION == 1
    assert record["kind"] == "change"
    assert record["key"] == "change/shop/checkout/uid-c/Deployment/payments/4711"
    assert (record["namespace"], record["deployment"], record["deployment_uid"]) == (
        "shop", "checkout", "uid-c")
    assert record["detected_at"] == "2026-11-27T09:01:30Z"
    assert record["priority"] == "P2" and record["rule"] == "default"
    assert record["change"] == change_dict(PAYMENTS_ROLLOUT)
    assert record["error_count"] == 28 and type(record["error_count"]) is int
    assert record["error_rate_per_minute"] == 14 and record["baseline_per_minute"] == 0.5
    assert record["window_seconds"] == 120
    assert record["recommended_action"] == {"action": "rollback", "command": ROLLBACK}
    assert record["remediation"] is None
    assert record["evidence"]["causes"] == change_render.causes_json((TOP, SECOND))
    assert record["evidence"]["signatures"] == [
        {"fingerprint": "f1", "count": 12, "example": "upstream call failed host=payments",
         "new": True}]
    assert record["summary"].startswith(
        "Errors of checkout in shop rose to 14/min, up from 0.5/min before the change, 2m10s "
        "after payments rolled out revision 7 at 08:59:20 UTC.")
    assert "Likeliest cause (95%)" in record["summary"]
    assert record["summary"].endswith(f"Roll back Deployment payments in shop to revision 6: "
                                      f"{ROLLBACK}")
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_change_incident_record_remediation_never_carries_the_tokens():
    view = RemediationView("rollback", 6, "ask", "approval required", "mode", False,
                           journal_id=7, approve_token="secret-a", reject_token="secret-r",
                           target="shop/payments")
    record = change_render.change_incident_record(incident(remediation=view))
    # The journal entry is named (the dashboard finds the decision by it), never its tokens.
    assert record["remediation"] == {"action": "rollback", "to_revision": 6,
                                     "target": "shop/payments", "decision": "ask",
                                     "reason": "approval required", "guardrail": "mode",
                                     "dry_run": False, "journal_id": 7}
    assert "secret-a" not in json.dumps(record)


def test_change_incident_record_for_a_configmap_with_no_command_to_run():
    inc = incident(change=CONFIG, causes=(SECOND,), action="none",
                   command=SECOND.command, baseline_per_minute=None)
    record = change_render.change_incident_record(inc)
    assert record["recommended_action"] == {"action": "none", "command": SECOND.command}
    assert record["baseline_per_minute"] is None
    assert record["summary"].startswith("Errors of checkout in shop rose to 14/min, 22m10s after "
                                        "ConfigMap checkout-config was updated")
    assert record["summary"].endswith(
        "Revert ConfigMap checkout-config in shop where it was changed (by kubectl-patch); to "
        f"see it: {SECOND.command}")


# --- Slack -----------------------------------------------------------------------------------


def test_change_incident_title():
    assert change_render.change_incident_title(incident()) == (
        "Errors rose in shop/checkout after payments rolled out revision 7")
    assert change_render.change_incident_title(incident(change=CONFIG)) == (
        "Errors rose in shop/checkout after ConfigMap checkout-config was updated")
    down = replace(PAYMENTS_ROLLOUT, revision=None, previous_revision=None,
                   fields=(FieldChange("spec.replicas", "3", "0"),))
    assert change_render.change_incident_title(incident(change=down)) == (
        "Errors rose in shop/checkout after payments was scaled down from 3 to 0")


def test_change_incident_slack_reads_in_order():
    payload = change_render.change_incident_slack(incident())
    text = render.slack_text(payload)
    assert text.splitlines()[0] == (":rotating_light: [P2] Errors rose in shop/checkout after "
                                    "payments rolled out revision 7")
    order = ["Impact", "Likely causes", "Recommended action", "Top error signatures"]
    positions = [text.index("\n" + title + "\n") for title in order]
    assert positions == sorted(positions)
    assert ("• 28 error lines in the last 2m in shop/checkout: 14/min, up from 0.5/min before "
            "the change") in text
    assert ("• payments rolled out revision 7 at 08:59:20 UTC (by argocd-controller); the rise "
            "was detected 2m10s later") in text
    assert f"Roll back Deployment payments in shop to revision 6:\n{ROLLBACK}" in text
    assert payload["text"].startswith(":rotating_light: [P2] Errors rose in shop/checkout")


def test_change_incident_slack_has_the_approval_buttons_naming_the_target():
    view = RemediationView("rollback", 6, "ask", "approval required", "mode", False,
                           approve_token="tok-a", reject_token="tok-r", target="shop/payments")
    payload = change_render.change_incident_slack(incident(remediation=view))
    (actions,) = [b for b in payload["blocks"] if b["type"] == "actions"]
    approve, reject = actions["elements"]
    assert approve["text"]["text"] == "Approve: Roll back payments to revision 6"
    assert approve["value"] == "tok-a" and reject["value"] == "tok-r"


def test_change_incident_slack_without_causes_says_to_investigate():
    text = render.slack_text(change_render.change_incident_slack(
        incident(causes=(), action="none", command=None, signatures=())))
    assert "Likely causes" not in text and "Top error signatures" not in text
    assert "Investigate:\nkubectl describe deployment/checkout -n shop" in text


_text = st.text(max_size=200)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.builds(Cause, change=st.builds(
    Change, namespace=_text, kind=st.sampled_from(["Deployment", "ConfigMap", "Secret"]),
    name=_text, action=st.sampled_from(["created", "updated", "deleted"]), at=st.just(AT),
    observed_at=st.just(AT), fields=st.lists(st.builds(FieldChange, path=_text,
                                                       before=st.none() | _text,
                                                       after=st.none() | _text),
                                             max_size=30).map(tuple),
    manager=st.none() | _text, revision=st.none() | st.integers(1, 10 ** 6)),
    score=st.floats(0, 1), reasons=st.lists(_text, max_size=12).map(tuple),
    action=st.none() | st.just("rollback"), command=st.none() | _text), max_size=3))
def test_change_incident_renders_within_slack_limits_for_any_causes(causes):
    inc = incident(causes=tuple(causes))
    payload = change_render.change_incident_slack(inc)
    assert len(payload["blocks"]) <= render.SLACK_MAX_BLOCKS
    for block in payload["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= render.SLACK_SECTION_MAX_CHARS
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= render.SLACK_HEADER_MAX_CHARS
    assert len(payload["text"]) <= render.SLACK_FALLBACK_MAX_CHARS
    record = change_render.change_incident_record(inc)
    assert json.loads(json.dumps(record, allow_nan=False)) == record
