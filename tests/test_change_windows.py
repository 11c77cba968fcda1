"""Which workloads are judged after a change that is not their own rollout, and the verdict."""

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from incident_detector.judge.change_windows import baseline_span, judge, suspects
from incident_detector.judge.correlator import Rules, Verdict
from incident_detector.model import Baseline, Change, Deployment, FieldChange

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
RULES = Rules(threshold=5, error_window_seconds=120, rollout_window_seconds=600,
              baseline_factor=2.0, baseline_lookback_seconds=1800)


def change(kind="ConfigMap", name="orders-config", at=T0, version="100", **kw) -> Change:
    return Change(namespace="shop", kind=kind, name=name, action="updated", at=at,
                  observed_at=at, fields=(FieldChange("data.TIMEOUT_MS", "5000", "50"),),
                  resource_version=version, **kw)


def deployment(name, created=T0 - timedelta(days=3)) -> Deployment:
    return Deployment(namespace="shop", name=name, revision=1, uid=f"uid-{name}",
                      created_at=created)


DEPLOYMENTS = {name: deployment(name) for name in ("orders", "checkout", "payments")}


def test_a_workload_is_a_suspect_of_the_change_that_may_affect_it():
    c = change()
    found = suspects([c], {c.key: ("orders",)}, deployments=DEPLOYMENTS,
                     now=T0 + timedelta(seconds=30), window_seconds=600)
    assert [(s.deployment, s.deployment_uid, s.change) for s in found] == [
        ("orders", "uid-orders", c)]
    assert found[0].key == "change/shop/orders/uid-orders/ConfigMap/orders-config/100"


def test_the_earliest_change_in_the_window_is_the_one_judged_against():
    first, second = change(version="1"), change(at=T0 + timedelta(seconds=60), version="2")
    affected = {first.key: ("orders",), second.key: ("orders",)}
    found = suspects([second, first], affected, deployments=DEPLOYMENTS,
                     now=T0 + timedelta(seconds=90), window_seconds=600)
    assert [s.change.resource_version for s in found] == ["1"]


def test_changes_outside_their_window_or_in_the_future_are_not_followed():
    old, future = change(at=T0 - timedelta(seconds=601), version="1"), \
        change(at=T0 + timedelta(seconds=5), version="2")
    affected = {old.key: ("orders",), future.key: ("orders",)}
    assert suspects([old, future], affected, deployments=DEPLOYMENTS, now=T0,
                    window_seconds=600) == ()


def test_a_workload_in_its_own_rollout_window_is_left_to_the_correlator():
    c = change(kind="Deployment", name="payments", revision=2, previous_revision=1)
    affected = {c.key: ("checkout", "payments")}
    found = suspects([c], affected, deployments=DEPLOYMENTS, now=T0 + timedelta(seconds=30),
                     window_seconds=600, busy={"checkout"})
    assert found == ()  # checkout is busy, payments is the change's own object


def test_unknown_deployments_are_not_suspects():
    c = change()
    assert suspects([c], {c.key: ("gone",)}, deployments=DEPLOYMENTS, now=T0,
                    window_seconds=600) == ()


def suspect(**kw):
    c = change(**kw)
    return suspects([c], {c.key: ("orders",)}, deployments=DEPLOYMENTS,
                    now=c.at, window_seconds=600)[0]


def test_a_clear_rise_after_the_change_is_an_incident():
    s = suspect()
    verdict = judge(s, count=40, baseline=Baseline(3, 1800), rules=RULES, already_notified=(),
                    now=T0 + timedelta(seconds=90))
    assert verdict.verdict is Verdict.INCIDENT
    assert "after ConfigMap orders-config changed" in verdict.reasons[0]


def test_errors_that_were_already_there_are_not_a_rise():
    s = suspect()
    # 30 errors in 2 minutes against 15/min before: the same rate.
    verdict = judge(s, count=30, baseline=Baseline(450, 1800), rules=RULES,
                    already_notified=(), now=T0 + timedelta(seconds=90))
    assert verdict.verdict is Verdict.HEALTHY and "no clear rise" in verdict.reasons[0]


def test_under_the_threshold_is_healthy_and_unknowns_are_no_verdict():
    s = suspect()
    now = T0 + timedelta(seconds=90)
    assert judge(s, count=2, baseline=None, rules=RULES, already_notified=(),
                 now=now).verdict is Verdict.HEALTHY
    assert judge(s, count=None, baseline=Baseline(0, 1800), rules=RULES, already_notified=(),
                 now=now).verdict is Verdict.NO_VERDICT
    assert judge(s, count=50, baseline=None, rules=RULES, already_notified=(),
                 now=now).verdict is Verdict.NO_VERDICT


def test_one_incident_per_workload_and_change_ever():
    s = suspect()
    verdict = judge(s, count=40, baseline=Baseline(0, 1800), rules=RULES,
                    already_notified={s.key}, now=T0 + timedelta(seconds=90))
    assert verdict.verdict is Verdict.ALREADY_NOTIFIED


def test_the_baseline_ends_at_the_change_and_covers_only_the_deployments_life():
    s = suspect()
    assert baseline_span(s, DEPLOYMENTS["orders"], rules=RULES) == (T0, 1800)
    young = deployment("orders", created=T0 - timedelta(seconds=300))
    assert baseline_span(s, young, rules=RULES) == (T0, 300)
    newborn = deployment("orders", created=T0 - timedelta(seconds=10))
    assert baseline_span(s, newborn, rules=RULES) == (T0, 120)


@given(count=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
       base=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
       seconds=st.integers(min_value=0, max_value=3600))
def test_judge_never_raises_and_an_incident_always_clears_threshold_and_baseline(
        count, base, seconds):
    s = suspect()
    baseline = None if base is None else Baseline(base, 1800)
    verdict = judge(s, count=count, baseline=baseline, rules=RULES, already_notified=(),
                    now=T0 + timedelta(seconds=seconds))
    if verdict.verdict is Verdict.INCIDENT:
        assert count is not None and count >= RULES.threshold and baseline is not None
        assert count >= 2 * baseline.per_minute * 2
