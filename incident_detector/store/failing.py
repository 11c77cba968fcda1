"""The rollout incidents that new error groups point at, read from the incidents the store holds.

When a rollout fails, the error groups first seen since in its callers (found on the service
map) name its incident. Which incidents those are is derived from the ``incidents`` table each
time it is asked, not kept in the process: after a restart, and on another replica of the same
database, the pointing goes on as before.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .db import Database
from .reads import ROLLOUT_CLOSED_AT
from .rows import db_time

# A workload ("<namespace>/<deployment>"): what an error group's record says of its rollout
# incident, and when that rollout began.
FailingRollouts = dict[str, tuple[dict[str, Any], datetime]]


def failing_rollouts(db: Database, *, since: datetime) -> FailingRollouts:
    """The open rollout incidents (no action on them verified) whose rollout began at or after
    ``since``, the latest per workload. Incidents remembered from Events another process wrote
    carry no record, and are not among them."""
    # A rollout began before its incident was detected: detected_at narrows the rows (by its
    # index) before their records are read.
    rows = db.execute(
        "SELECT i.namespace, i.deployment, i.revision, i.record FROM incidents i"
        f" WHERE i.detected_at >= ? AND {ROLLOUT_CLOSED_AT} IS NULL"
        " ORDER BY i.detected_at, i.id", (db_time(since),))
    out: FailingRollouts = {}
    for namespace, deployment, revision, text in rows:
        record = json.loads(text)
        began, detected = record.get("rollout_started_at"), record.get("detected_at")
        if not isinstance(began, str) or not isinstance(detected, str):
            continue
        started = datetime.fromisoformat(began)
        if started >= since:
            out[f"{namespace}/{deployment}"] = (
                {"kind": "rollout", "namespace": namespace, "deployment": deployment,
                 "revision": int(revision), "detected_at": detected}, started)
    return out
