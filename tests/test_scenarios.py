"""Every scenario under tests/scenarios/ replayed through the real detector (adapters over
loopback HTTP, correlator, renderers, store, outbox) on a simulated clock; each file says what
must come out: rollout incidents, alert incidents and change incidents, and nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from incident_detector.sim.replay import change_key, check_change_incident, incident_key, replay
from incident_detector.sim.scenario import load_scenario, scenario_paths

SCENARIOS = scenario_paths(Path(__file__).parent / "scenarios")


def test_the_suite_is_large_enough():
    assert len(SCENARIOS) >= 20


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_file_validates(path: Path):
    """Every file loads, whatever the detector makes of it: a bad field fails here by name."""
    scenario = load_scenario(path)
    assert scenario.name == path.stem


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path):
    scenario = load_scenario(path)
    result = asyncio.run(replay(scenario))
    if not scenario.workloads:
        got = [n.revision for n in result.notifications]
        want = [e.revision for e in scenario.expect.incidents]
        assert got == want, f"{path.name}: notified revisions {got}, expected {want}"
    else:
        # Several Deployments: (Deployment, revision), whatever their order within a tick.
        got = sorted(incident_key(scenario, n) for n in result.notifications)
        want = sorted((e.deployment or scenario.deployment, e.revision)
                      for e in scenario.expect.incidents)
        assert got == want, f"{path.name}: notified revisions {got}, expected {want}"
    assert result.degraded_ticks == 0
    expected_of = {(e.deployment or scenario.deployment, e.revision): e
                   for e in scenario.expect.incidents}
    for notification in result.notifications:
        expected = expected_of[incident_key(scenario, notification)]
        record = notification.record
        missing = {s.value for s in expected.signals} - set(record["signals"])
        assert not missing, f"{path.name}: signals {record['signals']} lack {missing}"
        if expected.attribution is not None:
            assert record["evidence"]["attribution"] == expected.attribution.value
        if expected.evidence_at is not None:
            # detected after the evidence was there, within two poll intervals of it
            delay = notification.at_seconds - expected.evidence_at
            assert 0 <= delay <= 2 * 20 + 1e-6, f"{path.name}: detection delay {delay}s"
        # every notification reached Slack exactly once, with the four parts
        assert notification.slack is not None
        text = str(notification.slack)
        for part in ("Signal", "Correlation to rollout", "Impact", "Recommended action"):
            assert part in text
    # Alert incidents: one per alert firing period, each with its brief; resolved ones closed
    # with one follow-up.
    got_alerts = [n.record["alert"]["name"] for n in result.alert_notifications]
    want_alerts = [e.alert for e in scenario.expect.alert_incidents]
    assert got_alerts == want_alerts, f"{path.name}: alert incidents {got_alerts}, expected {want_alerts}"
    resolved = [r["alert"] for r in result.resolved]
    assert resolved == [e.alert for e in scenario.expect.alert_incidents if e.resolved]
    for notification, expected in zip(result.alert_notifications, scenario.expect.alert_incidents):
        record = notification.record
        assert record["kind"] == "alert" and record["priority"] in ("P1", "P2", "P3", "P4")
        if expected.priority is not None:
            assert record["priority"] == expected.priority.value
        assert notification.slack is not None
        assert "Recommended action" in str(notification.slack)
    # Change incidents: exactly the expected ones, each naming the expected first cause (and its
    # action and target when the scenario says them), each sent to Slack.
    got_changes = sorted(change_key(n) for n in result.change_notifications)
    want_changes = sorted((e.deployment, e.cause.kind, e.cause.name)
                          for e in scenario.expect.change_incidents)
    assert got_changes == want_changes, (
        f"{path.name}: change incidents {got_changes}, expected {want_changes}")
    for expected in scenario.expect.change_incidents:
        [notification] = [n for n in result.change_notifications if change_key(n) == (
            expected.deployment, expected.cause.kind, expected.cause.name)]
        problems = check_change_incident(expected, notification)
        assert not problems, f"{path.name}: " + "; ".join(problems)
        if expected.evidence_at is not None:
            delay = notification.at_seconds - expected.evidence_at
            assert 0 <= delay <= 2 * 20 + 1e-6, f"{path.name}: detection delay {delay}s"
        assert notification.slack is not None
