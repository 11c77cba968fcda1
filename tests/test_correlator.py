from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.correlator import (
    Rules,
    Verdict,
    WorkloadView,
    current_replicaset,
    decide,
    is_clear_rise,
    previous_revision,
    rollouts_to_judge,
    split_errors,
)
from incident_detector.model import (
    Attribution,
    Baseline,
    Container,
    Deployment,
    ErrorSample,
    GitOpsOwner,
    GitOpsTool,
    Pod,
    PodProblem,
    PodTemplate,
    ReplicaSet,
    Signal,
)

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
RULES = Rules(threshold=5, error_window_seconds=120, rollout_window_seconds=600)
NS, DEP = "demo-aiops", "payments-api"
OLD, NEW = "payments-api-77587766bd", "payments-api-6874dc9bf7"
NO_BASELINE = Baseline(0, 1800)


def rs(name: str, revision: int | None, age: float, *, deployment: str | None = DEP,
       image: str = "payments-api:1.5.0") -> ReplicaSet:
    return ReplicaSet(namespace=NS, name=name, deployment=deployment, revision=revision,
                      created_at=NOW - timedelta(seconds=age),
                      template=PodTemplate(containers=(Container(name="app", image=image),)))


def dep(revision: int | None = 2, **kw) -> Deployment:
    return Deployment(namespace=NS, name=DEP, revision=revision, **kw)


def view(*, deployment: Deployment | None = None, replicasets=None, pods=(), errors=(),
         baseline: Baseline | None = NO_BASELINE) -> WorkloadView:
    return WorkloadView(
        deployment=deployment or dep(),
        replicasets=tuple(replicasets if replicasets is not None else
                          (rs(OLD, 1, 86400, image="payments-api:1.4.2"), rs(NEW, 2, 90))),
        pods=None if pods is None else tuple(pods),
        errors=None if errors is None else tuple(errors),
        baseline=baseline,
    )


def errs(**by_pod: float) -> list[ErrorSample]:
    return [ErrorSample(DEP, pod.replace("_", "-"), n) for pod, n in by_pod.items()]


def judge(v: WorkloadView, notified=frozenset(), now=NOW, rules=RULES):
    return decide([v], now=now, rules=rules, already_notified=notified)


NEW_POD = NEW + "-r66bl"
OLD_POD = OLD + "-bkvvm"


# --- window and threshold -----------------------------------------------------------------

def test_spike_in_window_at_threshold_is_an_incident():
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 5)]))
    assert [i.key for i in d.incidents] == [(NS, DEP, 2)]
    assert d.incidents[0].signals == (Signal.ERROR_SPIKE,)


def test_above_threshold_is_an_incident():
    assert len(judge(view(errors=[ErrorSample(DEP, NEW_POD, 28)])).incidents) == 1


def test_below_threshold_is_not():
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 4)]))
    assert d.incidents == ()
    assert d.assessments[0].verdict is Verdict.HEALTHY
    assert d.assessments[0].error_count == 4


def test_rollout_older_than_window_is_not_judged():
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 601)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    d = judge(v)
    assert d.incidents == () and d.assessments == ()


def test_window_edge_is_inclusive():
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 600)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    assert len(judge(v).incidents) == 1


def test_replicaset_from_the_future_is_not_judged():
    # Clock skew between the API server and the detector: never blame a rollout "not yet started".
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, -5)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    assert judge(v).incidents == ()


def test_no_rollout_only_an_old_revision():
    v = view(deployment=dep(1), replicasets=[rs(OLD, 1, 86400)], errors=[ErrorSample(DEP, OLD_POD, 90)])
    assert judge(v).incidents == () and judge(v).assessments == ()


# --- dedupe ----------------------------------------------------------------------------------

def test_already_notified_revision_is_not_repeated():
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 30)]), notified={(NS, DEP, 2)})
    assert d.incidents == ()
    assert d.assessments[0].verdict is Verdict.ALREADY_NOTIFIED


def test_new_bad_revision_after_an_incident_is_a_new_incident():
    v = view(deployment=dep(3),
             replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 500), rs("payments-api-5c8d7f9b4", 3, 60)],
             errors=[ErrorSample(DEP, "payments-api-5c8d7f9b4-aaaaa", 12)])
    d = judge(v, notified={(NS, DEP, 2)})
    assert [i.key for i in d.incidents] == [(NS, DEP, 3)]
    assert d.incidents[0].previous_revision == 2
    assert d.incidents[0].evidence.other_revisions_in_window == (2,)


def test_same_revision_in_another_namespace_is_distinct():
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 30)]), notified={("other", DEP, 2)})
    assert len(d.incidents) == 1


# --- several ReplicaSets, attribution ----------------------------------------------------------

def test_errors_only_from_draining_old_pods_do_not_blame_the_new_revision():
    d = judge(view(errors=[ErrorSample(DEP, OLD_POD, 40), ErrorSample(DEP, NEW_POD, 1)]))
    assert d.incidents == ()
    assert d.assessments[0].attribution is Attribution.PER_POD
    assert d.assessments[0].error_count == 1


def test_errors_split_per_pod():
    split = split_errors([ErrorSample(DEP, OLD_POD, 3), ErrorSample(DEP, NEW_POD, 7),
                          ErrorSample(DEP, NEW + "-zzzzz", 2)], rs(NEW, 2, 10))
    assert (split.attribution, split.new_revision, split.others) == (Attribution.PER_POD, 9, 3)


def test_pod_prefix_must_be_followed_by_a_dash():
    # payments-api-6874dc9bf7x-... is not a pod of payments-api-6874dc9bf7
    split = split_errors([ErrorSample(DEP, NEW + "x-abcde", 9)], rs(NEW, 2, 10))
    assert split.new_revision == 0


def test_logs_without_pod_label_fall_back_to_workload_total():
    d = judge(view(errors=[ErrorSample(DEP, None, 9)]))
    assert len(d.incidents) == 1
    assert d.incidents[0].evidence.attribution is Attribution.WORKLOAD_TOTAL
    assert d.incidents[0].error_count == 9


def test_other_deployments_replicasets_are_ignored():
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 90),
                          rs("checkout-abc", 7, 30, deployment="checkout")],
             errors=[ErrorSample(DEP, NEW_POD, 9)])
    d = judge(v)
    assert d.incidents[0].previous_revision == 1


def test_replicaset_without_controller_owner_is_not_the_current_one():
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 90, deployment=None)],
             errors=[ErrorSample(DEP, NEW_POD, 50)])
    assert judge(v).incidents == ()


# --- missing or malformed revision annotations ------------------------------------------------

def test_deployment_without_revision_is_not_judged():
    assert judge(view(deployment=dep(None), errors=[ErrorSample(DEP, NEW_POD, 50)])).incidents == ()


def test_replicaset_with_malformed_revision_is_skipped():
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, None, 90)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    assert judge(v).incidents == ()


def test_previous_revision_skips_unknown_revisions():
    sets = [rs("a", None, 9999), rs("b", 1, 5000), rs("c", 3, 10), rs("d", 2, 100)]
    assert previous_revision(3, sets, DEP).name == "d"
    assert previous_revision(1, sets, DEP) is None


def test_first_revision_has_no_previous():
    v = view(deployment=dep(1), replicasets=[rs(NEW, 1, 60)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    d = judge(v)
    assert d.incidents[0].previous_revision is None
    assert d.incidents[0].evidence.changes == ()


# --- baseline ---------------------------------------------------------------------------------

def test_same_rate_as_before_is_not_a_regression():
    # 10/min before the rollout = 20 per 2-minute window; 22 now is no clear rise.
    d = judge(view(errors=[ErrorSample(DEP, None, 22)], baseline=Baseline(300, 1800)))
    assert d.incidents == ()
    assert "no clear rise" in d.assessments[0].reasons[0]


def test_sharp_rise_over_noisy_baseline_is_a_regression():
    d = judge(view(errors=[ErrorSample(DEP, None, 60)], baseline=Baseline(300, 1800)))
    assert len(d.incidents) == 1
    assert d.incidents[0].evidence.baseline_per_minute == 10.0
    assert d.incidents[0].evidence.error_rate_per_minute == 30.0


def test_clear_rise_needs_factor_and_margin():
    low = Baseline(30, 1800)  # 1/min -> 2 expected per window
    assert is_clear_rise(7, low, RULES)
    assert not is_clear_rise(6, low, RULES)  # 6 - 2 < 5
    high = Baseline(900, 1800)  # 30/min -> 60 expected
    assert not is_clear_rise(100, high, RULES)  # < 2x
    assert is_clear_rise(120, high, RULES)


def test_unknown_baseline_gives_no_verdict_not_an_incident():
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 50)], baseline=None))
    assert d.incidents == ()
    assert d.assessments[0].verdict is Verdict.NO_VERDICT


def test_unknown_errors_give_no_verdict():
    d = judge(view(errors=None))
    assert d.incidents == ()
    assert d.assessments[0].verdict is Verdict.NO_VERDICT
    assert d.assessments[0].error_count is None


# --- pod health and progress ------------------------------------------------------------------

def pod(name: str, rs_name: str, *problems: PodProblem) -> Pod:
    return Pod(namespace=NS, name=name, replicaset=rs_name, problems=problems)


def test_crash_loop_without_logs_is_an_incident():
    d = judge(view(pods=[pod(NEW_POD, NEW, PodProblem.CRASH_LOOP), pod(OLD_POD, OLD)], errors=[]))
    assert d.incidents[0].signals == (Signal.POD_HEALTH,)
    assert d.incidents[0].evidence.pod_problems == ((NEW_POD, "CrashLoopBackOff"),)
    assert d.incidents[0].evidence.affected_pods == (NEW_POD,)


def test_problems_of_old_pods_do_not_count():
    assert judge(view(pods=[pod(OLD_POD, OLD, PodProblem.OOM_KILLED)], errors=[])).incidents == ()


def test_pod_health_counts_even_when_loki_is_down():
    d = judge(view(pods=[pod(NEW_POD, NEW, PodProblem.IMAGE_PULL)], errors=None))
    assert d.incidents[0].signals == (Signal.POD_HEALTH,)


def test_progress_deadline_counts_outside_the_window():
    v = view(deployment=dep(2, progress_deadline_exceeded=True, progress_message="timed out"),
             replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 3600)], errors=None)
    d = judge(v)
    assert d.incidents[0].signals == (Signal.PROGRESS_DEADLINE,)
    assert d.incidents[0].evidence.progress_message == "timed out"


def test_all_signals_one_incident():
    v = view(deployment=dep(2, progress_deadline_exceeded=True),
             pods=[pod(NEW_POD, NEW, PodProblem.CRASH_LOOP, PodProblem.OOM_KILLED)],
             errors=[ErrorSample(DEP, NEW_POD, 30)])
    d = judge(v)
    assert len(d.incidents) == 1
    assert d.incidents[0].signals == (Signal.ERROR_SPIKE, Signal.POD_HEALTH, Signal.PROGRESS_DEADLINE)


# --- evidence ---------------------------------------------------------------------------------

def test_what_changed_and_gitops_travel_in_the_evidence():
    owner = GitOpsOwner(GitOpsTool.ARGO_CD, "payments")
    d = judge(view(deployment=dep(2, gitops=owner), errors=[ErrorSample(DEP, NEW_POD, 30)]))
    ev = d.incidents[0].evidence
    assert ev.gitops == owner
    assert any("payments-api:1.4.2" in c.detail and "payments-api:1.5.0" in c.detail
               for c in ev.changes)


def test_incident_fields():
    i = judge(view(errors=[ErrorSample(DEP, NEW_POD, 28), ErrorSample(DEP, OLD_POD, 2)])).incidents[0]
    assert (i.namespace, i.deployment, i.revision, i.replicaset) == (NS, DEP, 2, NEW)
    assert i.error_count == 28 and i.threshold == 5 and i.window_seconds == 120
    assert i.detected_at == NOW and i.rollout_started_at == NOW - timedelta(seconds=90)
    assert i.evidence.other_errors == 2
    assert i.previous_revision == 1


def test_rollouts_to_judge_lists_current_revisions_in_window():
    sets = [rs(OLD, 1, 86400), rs(NEW, 2, 90)]
    assert [(d.name, r.name) for d, r in rollouts_to_judge([dep()], sets, now=NOW, rules=RULES)] \
        == [(DEP, NEW)]
    assert rollouts_to_judge([dep(1)], sets, now=NOW, rules=RULES) == []
    assert current_replicaset(dep(5), sets) is None


# --- properties -------------------------------------------------------------------------------

samples = st.lists(st.builds(
    ErrorSample,
    workload=st.just(DEP),
    pod=st.one_of(st.none(), st.sampled_from([NEW_POD, OLD_POD, NEW + "-x", "other-pod"])),
    count=st.floats(min_value=0, max_value=1e6, allow_nan=False),
), max_size=8)


@settings(max_examples=300, deadline=None)
@given(errors=samples, age=st.integers(min_value=-100, max_value=2000),
       baseline=st.one_of(st.none(), st.builds(Baseline, st.floats(0, 1e5), st.just(1800))),
       notified=st.booleans())
def test_decide_properties(errors, age, baseline, notified):
    v = view(replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, age)], errors=errors, baseline=baseline)
    d = judge(v, notified={(NS, DEP, 2)} if notified else frozenset())
    # at most one incident per revision, never for a notified one, never outside the window
    assert len(d.incidents) <= 1
    if notified or not (0 <= age <= 600) or baseline is None:
        assert d.incidents == ()
    for incident in d.incidents:
        assert incident.error_count >= RULES.threshold
        assert incident.revision == 2
    # a spike is never attributed to more errors than Loki reported
    for a in d.assessments:
        if a.error_count is not None:
            assert a.error_count <= sum(s.count for s in errors) + 1e-6
