"""The confidence score: a pure, explained function of an incident's evidence."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from factories import make_incident
from incident_detector.judge.confidence import confidence, scored
from incident_detector.model import (
    Attribution,
    ErrorSignature,
    Evidence,
    PodProblem,
    Signal,
)

SIGNATURE_NEW = ErrorSignature("npe", 20, "NullPointerException", new=True)
SIGNATURE_OLD = ErrorSignature("timeout", 8, "timeout calling fraud", new=False)


def spike(**evidence) -> object:
    fields = dict(attribution=Attribution.PER_POD, new_revision_errors=26.0, other_errors=2.0,
                  error_rate_per_minute=13.0, baseline_per_minute=1.0,
                  signatures=(SIGNATURE_NEW,))
    fields.update(evidence)
    return make_incident(signals=(Signal.ERROR_SPIKE,), evidence=Evidence(**fields))


def test_a_sharp_spike_of_new_errors_from_the_new_pods_is_confident():
    result = confidence(spike())
    assert result.score == 0.8  # 0.2 + 0.25 per pod + 0.2 for 13x + 0.15 new signature
    assert result.reasons == (
        "+0.20 the detection rules held",
        "+0.25 the errors come from the new revision's pods",
        "+0.20 13x the rate before the rollout",
        "+0.15 1 error signature new since the rollout",
    )


def test_pods_that_cannot_run_weigh_most():
    crash = make_incident(signals=(Signal.POD_HEALTH,), evidence=Evidence(
        pod_problems=(("p-1", PodProblem.CRASH_LOOP), ("p-2", PodProblem.CRASH_LOOP))))
    result = confidence(crash)
    assert result.score == 0.6
    assert "+0.40 pods of the new revision cannot run (CrashLoopBackOff)" in result.reasons
    both = replace(crash, signals=(Signal.POD_HEALTH, Signal.PROGRESS_DEADLINE))
    assert confidence(both).score == 0.9


def test_what_blurs_the_picture_takes_away():
    assert confidence(spike(attribution=Attribution.WORKLOAD_TOTAL, other_errors=0.0)).score == 0.65
    assert confidence(spike(other_errors=40.0)).score == 0.7  # old pods error as much
    assert confidence(spike(other_revisions_in_window=(3,))).score == 0.7
    assert confidence(spike(signatures=(SIGNATURE_OLD,))).score == 0.55
    assert confidence(spike(signatures=())).score == 0.6  # example lines unreadable
    assert confidence(spike(error_rate_per_minute=3.0)).score == 0.65  # 3x only
    assert confidence(spike(error_rate_per_minute=6.0)).score == 0.75  # 6x
    assert confidence(spike(baseline_per_minute=0.0)).score == 0.75  # none before


def test_scored_fills_the_incident():
    incident = scored(spike())
    assert incident.confidence == 0.8 and len(incident.confidence_reasons) == 4


evidence = st.builds(
    Evidence,
    attribution=st.sampled_from(Attribution),
    new_revision_errors=st.floats(0, 1e6, allow_nan=False),
    other_errors=st.floats(0, 1e6, allow_nan=False),
    error_rate_per_minute=st.floats(0, 1e6, allow_nan=False),
    baseline_per_minute=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    pod_problems=st.lists(st.tuples(st.just("p"), st.sampled_from(PodProblem)), max_size=3)
    .map(tuple),
    other_revisions_in_window=st.lists(st.integers(1, 9), max_size=2).map(tuple),
    signatures=st.lists(st.sampled_from([SIGNATURE_NEW, SIGNATURE_OLD]), max_size=3).map(tuple),
)
signals = st.lists(st.sampled_from(Signal), min_size=1, max_size=3, unique=True).map(tuple)


@given(evidence=evidence, signals=signals)
def test_the_score_is_in_range_and_its_reasons_add_up(evidence, signals):
    result = confidence(make_incident(signals=signals, evidence=evidence))
    assert 0.0 <= result.score <= 1.0
    total = sum(float(reason.split(" ", 1)[0]) for reason in result.reasons)
    assert result.score == round(min(1.0, max(0.0, total)), 2)


@given(evidence=evidence, signals=signals)
def test_more_evidence_never_lowers_the_score(evidence, signals):
    incident = make_incident(signals=signals, evidence=evidence)
    for stronger in (Signal.POD_HEALTH, Signal.PROGRESS_DEADLINE):
        if stronger not in signals:
            more = replace(incident, signals=(*signals, stronger))
            assert confidence(more).score >= confidence(incident).score
