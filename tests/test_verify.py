"""The verdict after an action: converged and errors back under the baseline, or not in time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incident_detector.act.argocd import Application, HistoryEntry
from incident_detector.judge.guardrails import Action
from incident_detector.act.verify import (
    VerificationResult,
    verify,
    verify_action,
    verify_argocd_rollback,
    verify_paused,
)
from incident_detector.model import Deployment, RolloutStatus

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
DONE = RolloutStatus(generation=4, observed_generation=4, updated_replicas=3, ready_replicas=3,
                     available_replicas=3)
HALFWAY = RolloutStatus(generation=4, observed_generation=4, updated_replicas=2,
                        ready_replicas=2, available_replicas=2)
UNSEEN = RolloutStatus(generation=5, observed_generation=4, updated_replicas=3,
                       ready_replicas=3, available_replicas=3)


def deployment(rollout: RolloutStatus | None, *, paused: bool = False) -> Deployment:
    return Deployment(namespace="demo-aiops", name="payments-api", revision=3, replicas=3,
                      rollout=rollout, paused=paused)


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


# A pause is verified by the Deployment being paused: its rollout and errors do not matter.
@pytest.mark.parametrize(("paused", "rollout", "after", "expected"), [
    (True, DONE, 0, VerificationResult.PASS),
    (True, HALFWAY, 30, VerificationResult.PASS),   # a paused rollout need not converge
    (True, None, 30, VerificationResult.PASS),
    (True, HALFWAY, 400, VerificationResult.PASS),
    (False, DONE, 30, VerificationResult.PENDING),  # the watch has not seen it yet
    (False, DONE, 299.9, VerificationResult.PENDING),
    (False, DONE, 300, VerificationResult.FAIL),
    (False, None, 301, VerificationResult.FAIL),
])
def test_pause_verdicts(paused, rollout, after, expected):
    result = verify_paused(deployment=deployment(rollout, paused=paused), acted_at=T0,
                           now=T0 + timedelta(seconds=after), timeout_seconds=300)
    assert result.result is expected, result.reasons
    assert (result.error_rate_before, result.error_rate_after) == (None, None)
    if expected is VerificationResult.FAIL:
        assert result.reasons == ("deployment not paused", "not verified within 300s")


# Each action gets the check that fits what it changed.
@pytest.mark.parametrize(("action", "rollout", "paused", "rate", "expected"), [
    # Converged, errors still above the baseline: the actions that change what runs fail...
    (Action.ROLLBACK, DONE, False, 5.0, VerificationResult.FAIL),
    (Action.RESTART, DONE, False, 5.0, VerificationResult.FAIL),
    (Action.SCALE, DONE, False, 5.0, VerificationResult.FAIL),
    (Action.DELETE_POD, DONE, False, 5.0, VerificationResult.FAIL),
    # ...removing stuck pods is judged on convergence alone...
    (Action.DELETE_STUCK_PODS, DONE, False, 5.0, VerificationResult.PASS),
    (Action.DELETE_STUCK_PODS, HALFWAY, False, 0.0, VerificationResult.FAIL),
    # ...and a pause on the Deployment being paused.
    (Action.PAUSE, HALFWAY, True, 5.0, VerificationResult.PASS),
    (Action.PAUSE, DONE, False, 0.0, VerificationResult.FAIL),
    # Errors back under the baseline and converged: pass.
    (Action.RESTART, DONE, False, 0.5, VerificationResult.PASS),
    (Action.DELETE_POD, DONE, False, 0.5, VerificationResult.PASS),
])
def test_verify_action_chooses_the_check(action, rollout, paused, rate, expected):
    result = verify_action(action.value, deployment=deployment(rollout, paused=paused),
                           error_rate_per_minute=rate, baseline_per_minute=1.0, acted_at=T0,
                           now=T0 + timedelta(seconds=300), timeout_seconds=300)
    assert result.result is expected, result.reasons


def test_stuck_pods_say_the_errors_were_not_judged():
    result = verify_action(Action.DELETE_STUCK_PODS.value, deployment=deployment(DONE),
                           error_rate_per_minute=9.0, baseline_per_minute=1.0, acted_at=T0,
                           now=T0 + timedelta(seconds=30), timeout_seconds=300)
    assert result.result is VerificationResult.PASS
    assert result.reasons == ("rollout converged: 3/3 replicas updated and ready",
                              "errors not judged for this action: judged on the rollout alone")



# A rollback through Argo CD: the application and the Deployment, both.
GOOD, BAD = "8f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d", "c0ffee4a2b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"
TARGET = HistoryEntry(4, GOOD)


def application(*, phase: str | None = "Succeeded", revision: str | None = GOOD,
                health: str | None = "Healthy", sync: str = "OutOfSync",
                pending: bool = False) -> Application:
    return Application(name="payments", namespace="argocd", resource_version="1",
                       sync_status=sync, sync_revision=BAD, health_status=health,
                       auto_sync=False, history=(HistoryEntry(4, GOOD), HistoryEntry(5, BAD)),
                       operation_phase=phase, operation_revision=revision,
                       operation_pending=pending)


@pytest.mark.parametrize(("app", "rollout", "rate", "after", "expected"), [
    (application(), DONE, 0.5, 30, VerificationResult.PASS),
    (application(sync="Synced"), DONE, 0.5, 30, VerificationResult.PASS),  # Git reverted too
    # The application alone is not enough: the Deployment must converge, errors come down.
    (application(), HALFWAY, 0.5, 30, VerificationResult.PENDING),
    (application(), DONE, 5.0, 30, VerificationResult.PENDING),
    (application(), DONE, 5.0, 300, VerificationResult.FAIL),
    # Nor is the Deployment alone: the application must say the rollback synced and is Healthy.
    (application(health="Degraded"), DONE, 0.5, 30, VerificationResult.PENDING),
    (application(health="Degraded"), DONE, 0.5, 300, VerificationResult.FAIL),
    (application(health="Progressing"), DONE, 0.5, 30, VerificationResult.PENDING),
    (application(phase="Running"), DONE, 0.5, 30, VerificationResult.PENDING),
    (application(phase="Running", pending=True), DONE, 0.5, 30, VerificationResult.PENDING),
    # Synced at another revision than the target: not this rollback.
    (application(revision=BAD), DONE, 0.5, 30, VerificationResult.PENDING),
    (application(revision=BAD), DONE, 0.5, 300, VerificationResult.FAIL),
    # Argo CD's sync to the target failed: no need to wait for the deadline.
    (application(phase="Failed"), DONE, 0.5, 30, VerificationResult.FAIL),
    (application(phase="Error"), DONE, 0.5, 30, VerificationResult.FAIL),
    # Not read (Argo CD did not answer): pending, then failed at the deadline.
    (None, DONE, 0.5, 30, VerificationResult.PENDING),
    (None, DONE, 0.5, 300, VerificationResult.FAIL),
])
def test_argocd_rollback_verdicts(app, rollout, rate, after, expected):
    result = verify_argocd_rollback(
        application=app, app_name="payments", target=TARGET, unread="timeout",
        deployment=deployment(rollout), error_rate_per_minute=rate, baseline_per_minute=1.0,
        acted_at=T0, now=T0 + timedelta(seconds=after), timeout_seconds=300)
    assert result.result is expected, result.reasons


def test_argocd_verdict_names_the_application_and_the_deployment():
    result = verify_argocd_rollback(
        application=application(), app_name="payments", target=TARGET,
        deployment=deployment(DONE), error_rate_per_minute=0.5, baseline_per_minute=1.0,
        acted_at=T0, now=T0 + timedelta(seconds=30), timeout_seconds=300)
    assert result.reasons == (
        "Argo CD application argocd/payments: rollback to revision 8f1c2d3 (history id 4) "
        "succeeded, health Healthy, OutOfSync with Git (Git still has the newer commit: "
        "revert it there)",
        "rollout converged: 3/3 replicas updated and ready",
        "error rate 0.5/min back under the baseline 1/min")
    assert (result.application, result.app_health, result.app_sync, result.app_revision) == (
        "argocd/payments", "Healthy", "OutOfSync", GOOD)
    unread = verify_argocd_rollback(
        application=None, app_name="team-a/payments", target=None, unread="argocd: timeout",
        deployment=deployment(DONE), error_rate_per_minute=0.5, baseline_per_minute=1.0,
        acted_at=T0, now=T0 + timedelta(seconds=300), timeout_seconds=300)
    assert unread.reasons[0] == "Argo CD application team-a/payments not read: argocd: timeout"
    assert unread.reasons[-1] == "not verified within 300s"
    assert unread.application == "team-a/payments" and unread.app_health is None
    failed = verify_argocd_rollback(
        application=application(phase="Failed", health="Degraded"), app_name="payments",
        target=TARGET, deployment=deployment(DONE), error_rate_per_minute=0.5,
        baseline_per_minute=1.0, acted_at=T0, now=T0 + timedelta(seconds=30),
        timeout_seconds=300)
    assert "(history id 4) failed, health Degraded" in failed.reasons[0]
    assert "not verified within" not in " ".join(failed.reasons)
