"""Logs stay JSON: Python warnings and standard-library log records come out as structured events,
a warning once per kind, and nothing raw lands between the JSON lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import warnings

import pytest
import structlog
from structlog.testing import capture_logs
from urllib3.exceptions import InsecureRequestWarning

from incident_detector.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging is process-wide: put structlog and the root logger back afterwards."""
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    structlog.configure(**saved_config)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def insecure_request(host: str) -> None:
    # urllib3's own text (connectionpool.py), raised on every request to a server whose
    # certificate is not verified.
    warnings.warn(f"Unverified HTTPS request is being made to host '{host}'. Adding certificate "
                  "verification is strongly advised. See: https://urllib3.readthedocs.io/en/latest/"
                  "advanced-usage.html#tls-warnings", InsecureRequestWarning)


def test_a_warning_repeated_on_every_request_is_logged_once_as_a_structured_event():
    with warnings.catch_warnings():
        configure_logging(fmt="json", stream=io.StringIO())
        warnings.simplefilter("always")  # what urllib3 sets for its security warnings
        with capture_logs() as events:
            for host in ("10.0.0.1", "10.0.0.1", "kube.example", "10.0.0.1"):
                insecure_request(host)
            warnings.warn("the old way is deprecated", DeprecationWarning)
            warnings.warn("the old way is deprecated", DeprecationWarning)
            warnings.warn("another thing changed", FutureWarning)
    assert [(e["event"], e["log_level"], e["category"]) for e in events] == [
        ("python.warning", "warning", "urllib3.exceptions.InsecureRequestWarning"),
        ("python.warning", "warning", "builtins.DeprecationWarning"),
        ("python.warning", "warning", "builtins.FutureWarning"),
    ]
    assert "10.0.0.1" in events[0]["message"]
    assert events[0]["origin"].startswith(__file__)


def test_each_configuration_starts_counting_kinds_afresh():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for _ in range(2):
            configure_logging(fmt="json", stream=io.StringIO())
            with capture_logs() as events:
                insecure_request("10.0.0.1")
                insecure_request("10.0.0.1")
            assert len(events) == 1


def test_standard_library_records_are_rendered_as_json_on_the_same_stream():
    stream = io.StringIO()
    with warnings.catch_warnings():
        configure_logging(fmt="json", stream=stream)
        logging.getLogger("urllib3.connectionpool").warning("Retrying (%s) after %s", 2, "reset")
        logging.getLogger("urllib3.connectionpool").info("not shown: below warning")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("request failed")
        structlog.get_logger("incident_detector").info("ours")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["event"], r["level"]) for r in records] == [
        ("Retrying (2) after reset", "warning"), ("request failed", "error"), ("ours", "info")]
    assert records[0]["logger"] == "urllib3.connectionpool" and "timestamp" in records[0]
    assert "ValueError: boom" in records[1]["exception"]


def test_nothing_raw_reaches_stdout_or_stderr_in_a_real_process():
    # A fresh interpreter: Python's default filters and urllib3's "always" filter, no pytest.
    program = textwrap.dedent("""
        import logging, warnings
        import urllib3
        from urllib3.exceptions import InsecureRequestWarning
        from incident_detector.logs import configure_logging
        configure_logging(fmt="auto")
        for _ in range(5):
            warnings.warn("Unverified HTTPS request is being made to host '10.0.0.1'.",
                          InsecureRequestWarning)
        warnings.warn("something in a library", UserWarning)
        logging.getLogger("kubernetes.client.rest").warning("a library speaks")
        print('{"schema":1,"incident":"stand-in"}')
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=30, check=True)
    assert done.stderr == ""
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # every line is JSON
    said = [line.get("category") or line.get("logger") or line.get("incident") for line in lines]
    assert said == [
        "urllib3.exceptions.InsecureRequestWarning", "builtins.UserWarning",
        "kubernetes.client.rest", "stand-in"]
