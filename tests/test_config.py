from __future__ import annotations

import os
import subprocess
import sys

import pytest

from incident_detector.config import ConfigError, load_settings

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
