"""The memory of the detector: one store (incidents, outbox, journal, audit, alerts, changes,
approvals) that act/, run/ and web/ all read and write through, and none of their internals."""
