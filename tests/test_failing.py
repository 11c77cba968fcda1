"""The rollout incidents new error groups point at (store/failing.py), read from the incidents the
store holds, on SQLite and PostgreSQL: the same after a restart and from another replica as in
the process that recorded them."""

from __future__ import annotations

from datetime import timedelta

from factories import STARTED, make_incident
from incident_detector.model import Incident
from incident_detector.notify.render import incident_record
from incident_detector.store.failing import failing_rollouts
from incident_detector.store.journal import APPROVED, DONE, EXECUTING, PROPOSED, VERIFIED, Journal
from incident_detector.store.records import Store

WINDOW = timedelta(minutes=30)
NOW = STARTED + timedelta(minutes=5)


def recorded(store: Store, incident: Incident) -> Incident:
    """The incident recorded as the outbox records it: its key and its record."""
    assert store.record_incident(key=incident.key, replicaset=incident.replicaset,
                                 replicaset_uid=incident.replicaset_uid,
                                 detected_at=incident.detected_at,
                                 record=incident_record(incident), deliveries=())
    return incident


def pointer(incident: Incident) -> tuple[dict, object]:
    """What an error group's record says of ``incident``, and when its rollout began."""
    return ({"kind": "rollout", "namespace": incident.namespace,
             "deployment": incident.deployment, "revision": incident.revision,
             "detected_at": incident_record(incident)["detected_at"]},
            incident.rollout_started_at)


def test_after_a_restart_and_on_another_replica_the_pointer_is_the_same(store_target):
    first = Store(store_target, owner="replica-1")
    other = Store(store_target, owner="replica-2")
    incident = recorded(first, make_incident(deployment_uid="uid-payments"))
    expected = {"demo-aiops/payments-api": pointer(incident)}
    assert expected["demo-aiops/payments-api"][0]["detected_at"] == "2026-11-03T17:55:34Z"
    assert failing_rollouts(first.connection, since=NOW - WINDOW) == expected
    assert failing_rollouts(other.connection, since=NOW - WINDOW) == expected
    first.close()
    other.close()
    restarted = Store(store_target)
    assert failing_rollouts(restarted.connection, since=NOW - WINDOW) == expected


def test_the_latest_open_incident_of_the_window_per_workload(store_target):
    store = Store(store_target)
    # Began before the window: no longer pointed at.
    recorded(store, make_incident(deployment="old", deployment_uid="u-old",
                                  rollout_started_at=NOW - WINDOW - timedelta(seconds=1),
                                  detected_at=NOW - WINDOW + timedelta(minutes=1)))
    # Its fix held (a verified action): closed, not pointed at.
    fixed = recorded(store, make_incident(deployment="fixed", deployment_uid="u-fixed"))
    journal = Journal(store.connection)
    entry = journal.propose(key=fixed.key, action="rollback", params={"to_revision": 1},
                            precondition="8474", now=NOW)
    for before, after in ((PROPOSED, APPROVED), (APPROVED, EXECUTING), (EXECUTING, DONE),
                          (DONE, VERIFIED)):
        journal.advance(entry.id, expected=[before], to=after, now=NOW)
    # Notified by another process, remembered from its Event: no record to point with.
    store.remember_foreign(key=("demo-aiops", "events", 4, "u-events"), replicaset="events-1",
                           detected_at=NOW, origin="event")
    # Two revisions of one workload: the later one.
    recorded(store, make_incident(deployment_uid="u-pay"))
    later = recorded(store, make_incident(
        deployment_uid="u-pay", revision=3, replicaset="payments-api-77",
        rollout_started_at=STARTED + timedelta(minutes=2),
        detected_at=STARTED + timedelta(minutes=3)))
    assert failing_rollouts(store.connection, since=NOW - WINDOW) == {
        "demo-aiops/payments-api": pointer(later)}
    assert failing_rollouts(store.connection, since=NOW) == {}
