"""Kill the process mid-incident (SIGKILL) and start it again: with the same store, then with an
empty one (a new pod on a new node, Events only). No duplicate, no loss."""

from __future__ import annotations

import signal

from harness import DEADLINE_SECONDS, SlackDown, start_daemon, stop


def test_sigkill_mid_incident_then_restart_with_same_store_then_empty_store(cluster):
    sink = cluster["sink"]
    # Slack is down while the first process runs: the incident is recorded and printed, its
    # Slack post is pending.
    slack = sink.faults = SlackDown()
    kube_fake = cluster["kube"].handler

    first = start_daemon(cluster)
    first.wait_for(lambda: first.incidents())
    first.wait_for(lambda: slack.refused >= 1)  # at least one Slack attempt failed
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=DEADLINE_SECONDS)
    assert sink.messages == []

    # Same store: the pending Slack post goes out once; the incident is not printed again.
    slack.down = False
    second = start_daemon(cluster)
    second.wait_for(lambda: len(sink.messages) == 1)
    second.wait_for(lambda: events_of(kube_fake))
    assert second.incidents() == []
    assert stop(second) == 0

    # Empty store on a "new node": the Event written above is read back; nothing repeats.
    third = start_daemon(cluster, extra_env={"STATE_PATH": str(cluster["tmp"] / "new-node.sqlite3")})
    third.wait_for(lambda: third.ticks() >= 4)
    status_lines = [line for line in third.lines() if line.get("event") == "events.read_back"]
    assert stop(third) == 0
    assert status_lines and status_lines[0]["new"] == 1
    assert third.incidents() == []
    assert len(sink.messages) == 1
    assert len(first.incidents()) == 1
    assert len(events_of(kube_fake)) == 1


def events_of(kube_fake) -> list[dict]:
    return [event for by_name in kube_fake.events.values() for event in by_name.values()]
