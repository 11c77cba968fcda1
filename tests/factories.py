"""Incidents for tests: one realistic bad revision, changed field by field with overrides."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from incident_detector.model import (
    Attribution,
    ErrorSignature,
    Evidence,
    Incident,
    PodProblem,
    Signal,
    TemplateChange,
)

STARTED = datetime(2026, 11, 3, 17, 54, 4, tzinfo=timezone.utc)
def make_incident(**overrides) -> Incident:
    evidence = overrides.pop("evidence", None) or Evidence(
        attribution=Attribution.PER_POD,
        new_revision_errors=28.0,
        other_errors=3.0,
        error_rate_per_minute=14.0,
        baseline_per_minute=0.5,
        baseline_window_seconds=600,
        affected_pods=("payments-api-6874dc9bf7-x2k9p", "payments-api-6874dc9bf7-q8w4z"),
        pod_problems=(
            ("payments-api-6874dc9bf7-x2k9p", PodProblem.CRASH_LOOP),
            ("payments-api-6874dc9bf7-q8w4z", PodProblem.CRASH_LOOP),
        ),
        signatures=(
            ErrorSignature("a1b2", 20, "ERROR charge failed: <nil> & retry", new=True),
            ErrorSignature("c3d4", 8, "java.lang.IllegalStateException: pool closed", new=False),
        ),
        changes=(
            TemplateChange("image", "payments-api", "payments-api:1.4.2 -> payments-api:1.5.0"),
            TemplateChange("env", "payments-api", "added FEATURE_X=on"),
        ),
    )
    fields = dict(
        namespace="demo-aiops",
        deployment="payments-api",
        revision=2,
        replicaset="payments-api-6874dc9bf7",
        rollout_started_at=STARTED,
        error_count=28.0,
        threshold=5,
        window_seconds=120,
        detected_at=STARTED + timedelta(seconds=90),
        previous_revision=1,
        signals=(Signal.ERROR_SPIKE, Signal.POD_HEALTH),
        evidence=evidence,
    )
    fields.update(overrides)
    return Incident(**fields)
