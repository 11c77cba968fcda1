from __future__ import annotations

import os
import subprocess
import sys

import pytest

from incident_detector.config import ConfigError, Settings, load_settings

BASE = {"LOKI_URL": "http://loki.monitoring:3100"}
SECRET_URL = "https://hooks.slack.com/services/T000/B000/SUPERSECRETTOKEN"


def errors_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    return info.value.lines


def test_seed_defaults():
    s = load_settings(BASE)
    assert s.namespace == ("demo-aiops",)
    assert s.target_deployment == ("payments-api",)
    assert (s.error_threshold, s.roll_out_window_minutes, s.poll_interval_seconds) == (5, 10, 20)
    assert s.loki_label_app == "payments-api"
    assert s.slack_webhook_url is None and not s.slack_enabled
    assert s.http_port == 8080
    assert s.error_window_seconds == 120
    assert s.error_pattern == "(?i)(error|exception|fatal|panic)"


def test_lists_and_star():
    s = load_settings({**BASE, "NAMESPACE": "a, b,a", "TARGET_DEPLOYMENT": "x,y"})
    assert s.namespace == ("a", "b") and s.target_deployment == ("x", "y")
    assert load_settings({**BASE, "TARGET_DEPLOYMENT": "*"}).watches_all_deployments


@pytest.mark.parametrize("env, variable", [
    ({}, "LOKI_URL"),
    ({"LOKI_URL": "not a url"}, "LOKI_URL"),
    ({**BASE, "ERROR_THRESHOLD": "0"}, "ERROR_THRESHOLD"),
    ({**BASE, "ERROR_THRESHOLD": "many"}, "ERROR_THRESHOLD"),
    ({**BASE, "POLL_INTERVAL_SECONDS": "-1"}, "POLL_INTERVAL_SECONDS"),
    ({**BASE, "ROLL_OUT_WINDOW_MINUTES": "0"}, "ROLL_OUT_WINDOW_MINUTES"),
    ({**BASE, "NAMESPACE": "Not_Valid"}, "NAMESPACE"),
    ({**BASE, "NAMESPACE": " , "}, "NAMESPACE"),
    ({**BASE, "TARGET_DEPLOYMENT": "*,x"}, "TARGET_DEPLOYMENT"),
    ({**BASE, "HTTP_PORT": "70000"}, "HTTP_PORT"),
    ({**BASE, "ERROR_PATTERN": "(unclosed"}, "ERROR_PATTERN"),
    ({**BASE, "LOG_FORMAT": "xml"}, "LOG_FORMAT"),
])
def test_each_bad_variable_is_named(env, variable):
    lines = errors_of(env)
    assert any(line.startswith(f"invalid configuration: {variable}:") for line in lines), lines


def test_several_bad_variables_one_line_each():
    lines = errors_of({"LOKI_URL": "x", "ERROR_THRESHOLD": "0", "HTTP_PORT": "-3"})
    assert len(lines) == 3


def test_secret_is_never_echoed():
    lines = errors_of({**BASE, "SLACK_WEBHOOK_URL": "ftp-ish SUPERSECRETTOKEN"})
    assert lines == ["invalid configuration: SLACK_WEBHOOK_URL: "
                     "must be an http(s) URL (value not shown: it is a secret)"]
    s = load_settings({**BASE, "SLACK_WEBHOOK_URL": SECRET_URL, "LOKI_BEARER_TOKEN": "tok3n"})
    public = repr(s.public()) + repr(s)
    assert "SUPERSECRETTOKEN" not in public and "tok3n" not in public
    assert s.public()["slack_webhook_url"] == "set"


def test_loki_credentials_in_url_are_not_shown():
    s = load_settings({"LOKI_URL": "http://user:pa55word@loki:3100"})
    assert "pa55word" not in repr(s.public())


def test_auth_kinds_exclude_each_other():
    assert any("exclude" in line for line in errors_of(
        {**BASE, "LOKI_BEARER_TOKEN": "t", "LOKI_USERNAME": "u", "LOKI_PASSWORD": "p"}))
    assert any("go together" in line for line in errors_of({**BASE, "LOKI_USERNAME": "u"}))


def test_empty_webhook_means_slack_off():
    assert not load_settings({**BASE, "SLACK_WEBHOOK_URL": ""}).slack_enabled


def test_process_exits_2_with_one_line_per_bad_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SLACK_", "ERROR_"))}
    env.update({"LOKI_URL": "nope", "ERROR_THRESHOLD": "0",
                "SLACK_WEBHOOK_URL": "bad SUPERSECRETTOKEN"})
    proc = subprocess.run([sys.executable, "-m", "incident_detector"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == \
        ["LOKI_URL", "ERROR_THRESHOLD", "SLACK_WEBHOOK_URL"]
    assert "SUPERSECRETTOKEN" not in proc.stderr + proc.stdout


# Remediation.
SLACK_APP = {"SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
             "SLACK_APPROVERS": "U012AB3CD", "SLACK_WEBHOOK_URL": SECRET_URL}


def test_remediation_defaults_are_read_only():
    s = load_settings(BASE)
    assert s.remediation_mode == "off" and not s.dry_run
    assert (s.auto_confidence, s.approval_confidence) == (0.8, 0.6)
    assert s.allowed_namespaces == () and s.excluded_namespaces == ("kube-system", "kube-public")
    assert s.allowed_actions == ("rollback",)
    assert (s.remediation_cooldown_minutes, s.max_actions_per_hour) == (30, 3)
    assert (s.scale_min, s.scale_max, s.verify_timeout_seconds) == (1, 20, 300)
    assert s.slack_signing_secret is None and s.slack_bot_token is None
    assert s.slack_approvers == () and s.slack_channel_id is None
    assert (s.self_deployment, s.self_namespace) == ("incident-detector", None)


def test_remediation_lists_and_values():
    s = load_settings({**BASE, **SLACK_APP, "NAMESPACE": "a,b", "REMEDIATION_MODE": "approve",
                       "ALLOWED_NAMESPACES": "b, b", "EXCLUDED_NAMESPACES": "",
                       "ALLOWED_ACTIONS": "Rollback,delete-pod,scale",
                       "SLACK_APPROVERS": "U012AB3CD, W0ABC", "DRY_RUN": "true",
                       "SELF_NAMESPACE": "a", "SCALE_MIN": "3", "SCALE_MAX": "3"})
    assert s.remediation_mode == "approve" and s.dry_run
    assert s.allowed_namespaces == ("b",) and s.excluded_namespaces == ()
    assert s.allowed_actions == ("rollback", "delete-pod", "scale")
    assert s.slack_approvers == ("U012AB3CD", "W0ABC")
    assert s.self_namespace == "a" and (s.scale_min, s.scale_max) == (3, 3)
    assert load_settings({**BASE, "SELF_NAMESPACE": ""}).self_namespace is None


@pytest.mark.parametrize("env, variable, words", [
    ({"REMEDIATION_MODE": "yolo"}, "REMEDIATION_MODE", "off"),
    ({"AUTO_CONFIDENCE": "1.5"}, "AUTO_CONFIDENCE", "1"),
    ({"APPROVAL_CONFIDENCE": "-0.1"}, "APPROVAL_CONFIDENCE", "0"),
    ({"APPROVAL_CONFIDENCE": "0.9"}, "APPROVAL_CONFIDENCE", "at most AUTO_CONFIDENCE (0.8)"),
    ({"AUTO_CONFIDENCE": "0.5"}, "APPROVAL_CONFIDENCE", "at most AUTO_CONFIDENCE (0.5)"),
    ({"ALLOWED_NAMESPACES": "elsewhere"}, "ALLOWED_NAMESPACES", "not watched"),
    ({"ALLOWED_NAMESPACES": "Bad_Name"}, "ALLOWED_NAMESPACES", "not a valid namespace"),
    ({"NAMESPACE": "kube-system", "ALLOWED_NAMESPACES": "kube-system"}, "ALLOWED_NAMESPACES",
     "also in EXCLUDED_NAMESPACES"),
    ({"EXCLUDED_NAMESPACES": "ok,NOT OK"}, "EXCLUDED_NAMESPACES", "not a valid namespace"),
    ({"ALLOWED_ACTIONS": "rollback,nuke"}, "ALLOWED_ACTIONS", "'nuke'"),
    ({"ALLOWED_ACTIONS": " , "}, "ALLOWED_ACTIONS", "at least one action"),
    ({"REMEDIATION_COOLDOWN_MINUTES": "-1"}, "REMEDIATION_COOLDOWN_MINUTES", "0"),
    ({"MAX_ACTIONS_PER_HOUR": "0"}, "MAX_ACTIONS_PER_HOUR", "1"),
    ({"SCALE_MIN": "5", "SCALE_MAX": "4"}, "SCALE_MAX", "at least SCALE_MIN (5)"),
    ({"SCALE_MIN": "30"}, "SCALE_MAX", "at least SCALE_MIN (30)"),
    ({"SCALE_MIN": "-1"}, "SCALE_MIN", "0"),
    ({"DRY_RUN": "perhaps"}, "DRY_RUN", "bool"),
    ({"VERIFY_TIMEOUT_SECONDS": "1"}, "VERIFY_TIMEOUT_SECONDS", "10"),
    ({"SLACK_APPROVERS": "alice"}, "SLACK_APPROVERS", "not a Slack user id"),
    ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_CHANNEL_ID", "required with SLACK_BOT_TOKEN"),
    ({"SLACK_CHANNEL_ID": "C0123"}, "SLACK_CHANNEL_ID", "needs SLACK_BOT_TOKEN"),
    ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_CHANNEL_ID": "#alerts"}, "SLACK_CHANNEL_ID",
     "not a Slack channel id"),
    ({"SELF_DEPLOYMENT": "Not Valid"}, "SELF_DEPLOYMENT", "not a valid Deployment"),
    ({"SELF_NAMESPACE": "Not_Valid"}, "SELF_NAMESPACE", "not a valid namespace"),
])
def test_each_bad_remediation_variable_is_named(env, variable, words):
    lines = errors_of({**BASE, **env})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"invalid configuration: {variable}:") and words in lines[0], lines


@pytest.mark.parametrize("env, missing", [
    ({"REMEDIATION_MODE": "approve"},
     ["SLACK_SIGNING_SECRET", "SLACK_APPROVERS", "SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN"]),
    ({**SLACK_APP, "REMEDIATION_MODE": "approve", "SLACK_SIGNING_SECRET": ""},
     ["SLACK_SIGNING_SECRET"]),
    ({**SLACK_APP, "REMEDIATION_MODE": "approve", "SLACK_APPROVERS": ""}, ["SLACK_APPROVERS"]),
    ({**SLACK_APP, "REMEDIATION_MODE": "approve", "SLACK_WEBHOOK_URL": ""},
     ["SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN with SLACK_CHANNEL_ID"]),
    # auto asks between the two confidences: it needs the same as approve.
    ({"REMEDIATION_MODE": "auto", "SLACK_APPROVERS": "U012AB3CD"}, ["SLACK_SIGNING_SECRET"]),
])
def test_a_mode_that_asks_needs_slack_approvals(env, missing):
    (line,) = errors_of({**BASE, **env})
    assert line.startswith("invalid configuration: REMEDIATION_MODE:"), line
    assert all(name in line for name in missing), line
    assert "8f742231" not in line and "SUPERSECRETTOKEN" not in line


@pytest.mark.parametrize("env", [
    {**SLACK_APP, "REMEDIATION_MODE": "approve"},
    {**SLACK_APP, "REMEDIATION_MODE": "auto"},
    {**SLACK_APP, "SLACK_WEBHOOK_URL": "", "SLACK_BOT_TOKEN": "xoxb-1-2",
     "SLACK_CHANNEL_ID": "C0123ABC", "REMEDIATION_MODE": "approve"},
    # An empty ask band: auto only acts or notifies, and needs no approvals.
    {"REMEDIATION_MODE": "auto", "APPROVAL_CONFIDENCE": "0.8"},
    {"REMEDIATION_MODE": "auto", "AUTO_CONFIDENCE": "0.9", "APPROVAL_CONFIDENCE": "0.9"},
    {"REMEDIATION_MODE": "off", "SLACK_SIGNING_SECRET": ""},
])
def test_modes_with_what_they_need(env):
    assert load_settings({**BASE, **env}).remediation_mode == env["REMEDIATION_MODE"]


def test_remediation_secrets_are_never_echoed():
    secret = "s3cr3t with space"
    lines = errors_of({**BASE, "SLACK_SIGNING_SECRET": secret, "SLACK_BOT_TOKEN": secret,
                       "SLACK_CHANNEL_ID": "C0123"})
    assert "s3cr3t" not in "\n".join(lines)
    assert {line.split(":")[1].strip() for line in lines} >= {"SLACK_SIGNING_SECRET",
                                                              "SLACK_BOT_TOKEN"}
    s = load_settings({**BASE, **SLACK_APP, "SLACK_BOT_TOKEN": "xoxb-TOPSECRET",
                       "SLACK_CHANNEL_ID": "C0123"})
    shown = repr(s.public()) + repr(s)
    assert "TOPSECRET" not in shown and "8f742231" not in shown
    assert s.public()["slack_signing_secret"] == "set" and s.public()["slack_bot_token"] == "set"


def test_approve_mode_may_ask_on_the_dashboard_instead_of_slack():
    with_token = load_settings({**BASE, "REMEDIATION_MODE": "approve",
                                "DASHBOARD_TOKEN": "alice:0123456789abcdef"})
    assert with_token.remediation_mode == "approve"
    behind_proxy = load_settings({**BASE, "REMEDIATION_MODE": "approve",
                                  "AUTH_PROXY_HEADER": "X-Forwarded-User"})
    assert behind_proxy.auth_proxy_header == "X-Forwarded-User"
    (line,) = errors_of({**BASE, "REMEDIATION_MODE": "approve"})
    assert "SLACK_SIGNING_SECRET" in line and "DASHBOARD_TOKEN or AUTH_PROXY_HEADER" in line
    assert any("header name" in e for e in errors_of({**BASE, "AUTH_PROXY_HEADER": "X User"}))


def test_a_malformed_dashboard_token_stops_the_start_without_showing_it():
    errors = errors_of({**BASE, "DASHBOARD_TOKEN": "not a name:SECRETVALUE"})
    assert errors and errors[0].startswith("invalid configuration: DASHBOARD_TOKEN:")
    assert "SECRETVALUE" not in " ".join(errors)


def test_every_field_a_validator_names_is_a_setting():
    # The validators live in config_checks without their fields (check_fields=False): a name
    # misspelt there would validate nothing, silently.
    decorators = Settings.__pydantic_decorators__.field_validators.values()
    named = {field for decorator in decorators for field in decorator.info.fields}
    assert named - set(Settings.model_fields) == set()


@pytest.mark.parametrize("name, value", [
    ("LOKI_POD_LABEL_KEY", "pod\n"),       # a label key goes into LogQL unquoted
    ("LOKI_BEARER_TOKEN", "tok3n\n"),
])
def test_a_value_ending_in_a_newline_is_refused(name: str, value: str):
    # Python's "$" also matches before a final newline; the checks anchor at the very end.
    assert any(name in line for line in errors_of({**BASE, name: value}))
