"""The verdict after an action: converged and errors back under the baseline, or not in time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incident_detector.act.verify import VerificationResult, verify
from incident_detector.model import Deployment, RolloutStatus

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
DONE = RolloutStatus(generation=4, observed_generation=4, updated_replicas=3, ready_replicas=3,
                     available_replicas=3)
HALFWAY = RolloutStatus(generation=4, observed_generation=4, updated_replicas=2,
                        ready_replicas=2, available_replicas=2)
UNSEEN = RolloutStatus(generation=5, observed_generation=4, updated_replicas=3,
                       ready_replicas=3, available_replicas=3)


def deployment(rollout: RolloutStatus | None) -> Deployment:
    return Deployment(namespace="demo-aiops", name="payments-api", revision=3, replicas=3,
                      rollout=rollout)


@pytest.mark.parametrize(("rollout", "rate", "baseline", "after", "expected"), [
    (DONE, 0.5, 1.0, 30, VerificationResult.PASS),
    (DONE, 1.0, 1.0, 30, VerificationResult.PASS),        # exactly at the baseline
    (DONE, 1.5, 1.0, 30, VerificationResult.PENDING),     # errors not down yet
    (DONE, 1.5, 1.0, 300, VerificationResult.FAIL),       # ...and out of time
    (HALFWAY, 0.0, 1.0, 30, VerificationResult.PENDING),  # still rolling
    (HALFWAY, 0.0, 1.0, 299.9, VerificationResult.PENDING),
    (HALFWAY, 0.0, 1.0, 300, VerificationResult.FAIL),
    (UNSEEN, 0.0, 1.0, 30, VerificationResult.PENDING),   # the controller has not seen the spec
    (None, 0.0, 1.0, 30, VerificationResult.PENDING),     # status unknown
    (DONE, None, 1.0, 30, VerificationResult.PENDING),    # Loki did not answer
    (DONE, None, 1.0, 300, VerificationResult.FAIL),
    (DONE, 9.0, None, 30, VerificationResult.PASS),       # no baseline: the rollout decides
    (DONE, 0.0, 0.0, 30, VerificationResult.PASS),
    (DONE, 0.5, 0.0, 30, VerificationResult.PENDING),
])
def test_verdicts(rollout, rate, baseline, after, expected):
    result = verify(deployment=deployment(rollout), error_rate_per_minute=rate,
                    baseline_per_minute=baseline, acted_at=T0,
                    now=T0 + timedelta(seconds=after), timeout_seconds=300)
    assert result.result is expected, result.reasons


def test_the_verdict_carries_its_figures_and_reasons():
    result = verify(deployment=deployment(HALFWAY), error_rate_per_minute=2.0,
                    baseline_per_minute=1.0, acted_at=T0, now=T0 + timedelta(seconds=301),
                    timeout_seconds=300)
    assert (result.desired_replicas, result.ready_replicas, result.updated_replicas) == (3, 2, 2)
    assert (result.error_rate_before, result.error_rate_after) == (1.0, 2.0)
    assert result.seconds_since_action == 301
    assert result.reasons == (
        "rollout not converged: 2/3 updated, 2/3 ready, generation 4/4 observed",
        "error rate 2/min still above the baseline 1/min",
        "not verified within 300s",
    )


@given(rate=st.one_of(st.none(), st.floats(0, 1e6)), baseline=st.one_of(st.none(), st.floats(0, 1e6)),
       after=st.floats(0, 1e5), converged=st.booleans())
def test_pass_needs_convergence_and_fail_needs_the_deadline(rate, baseline, after, converged):
    result = verify(deployment=deployment(DONE if converged else HALFWAY),
                    error_rate_per_minute=rate, baseline_per_minute=baseline, acted_at=T0,
                    now=T0 + timedelta(seconds=after), timeout_seconds=300)
    if result.result is VerificationResult.PASS:
        assert converged
    if result.result is VerificationResult.FAIL:
        assert after >= 300
    if after < 300:
        assert result.result is not VerificationResult.FAIL
