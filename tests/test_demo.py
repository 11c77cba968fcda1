"""`make demo` as a newcomer runs it: the real daemon, both acts, exit code 0."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_demo_detects_asks_rolls_back_and_verifies():
    done = subprocess.run([sys.executable, "-m", "incident_detector", "demo", "--speed", "20"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{\"")]
    events = [line["event"] for line in lines]
    assert events.count("incident") == 1 and events.count("verification") == 1
    [incident] = [line for line in lines if line["event"] == "incident"]
    assert incident["remediation"]["decision"] == "ask"
    assert [line["decision"] for line in lines if line["event"] == "action"] == \
        ["requested", "approved", "executed"]
    assert "Approve: Roll back to revision 1" in done.stdout
    assert "Verification PASS" in done.stdout
    assert "the approved rollback ran once and was verified" in done.stdout
    assert "demo-signing-secret" not in done.stdout + done.stderr
