from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge.correlator import (
    Rules,
    Verdict,
    WorkloadView,
    HealthyState,
    NoHealthyBaseline,
    baseline_batch,
    baseline_coverage,
    baseline_errors,
    baseline_window,
    current_replicaset,
    decide,
    find_rollout,
    is_clear_rise,
    last_healthy_state,
    previous_revision,
    rollout_key,
    rollout_start,
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
    RolloutStartSource,
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
    assert [i.key for i in d.incidents] == [(NS, DEP, 2, "")]
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
    d = judge(view(errors=[ErrorSample(DEP, NEW_POD, 30)]), notified={(NS, DEP, 2, "")})
    assert d.incidents == ()
    assert d.assessments[0].verdict is Verdict.ALREADY_NOTIFIED


def test_new_bad_revision_after_an_incident_is_a_new_incident():
    v = view(deployment=dep(3),
             replicasets=[rs(OLD, 1, 86400), rs(NEW, 2, 500), rs("payments-api-5c8d7f9b4", 3, 60)],
             errors=[ErrorSample(DEP, "payments-api-5c8d7f9b4-aaaaa", 12)])
    d = judge(v, notified={(NS, DEP, 2, "")})
    assert [i.key for i in d.incidents] == [(NS, DEP, 3, "")]
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
    assert previous_revision(3, sets, dep()).name == "d"
    assert previous_revision(1, sets, dep()) is None


def test_a_first_revision_is_not_a_rollout():
    # A new Deployment already failing is not a rollout regression: nothing to compare with,
    # nothing to roll back to.
    crashing = [Pod(NS, NEW_POD, NEW, problems=(PodProblem.CRASH_LOOP,))]
    v = view(deployment=dep(1), replicasets=[rs(NEW, 1, 60)], pods=crashing,
             errors=[ErrorSample(DEP, NEW_POD, 50)])
    d = judge(v)
    assert d.incidents == () and d.assessments == ()
    stuck = view(deployment=dep(1, progress_deadline_exceeded=True), replicasets=[rs(NEW, 1, 60)])
    assert judge(stuck).incidents == ()


def test_a_later_revision_with_no_older_replicaset_left_is_not_a_rollout():
    # revisionHistoryLimit: 0 removed the old ReplicaSet: no "before" and no rollback target.
    v = view(deployment=dep(4), replicasets=[rs(NEW, 4, 60)], errors=[ErrorSample(DEP, NEW_POD, 50)])
    assert judge(v).incidents == ()
    assert rollouts_to_judge([dep(4)], [rs(NEW, 4, 60)], now=NOW, rules=RULES) == []


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
    judged = rollouts_to_judge([dep()], sets, now=NOW, rules=RULES)
    assert [(r.deployment.name, r.replicaset.name, r.previous.name) for r in judged] \
        == [(DEP, NEW, OLD)]
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
    d = judge(v, notified={(NS, DEP, 2, "")} if notified else frozenset())
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


# --- when a rollout began: reused ReplicaSets ------------------------------------------------

def reused(name: str, revision: int, *, created_age: float, written_age: float | None,
           uid: str = "rs-uid") -> ReplicaSet:
    """A ReplicaSet made current again (``kubectl rollout undo``): old creation, new revision."""
    return ReplicaSet(namespace=NS, name=name, deployment=DEP, revision=revision, uid=uid,
                      created_at=NOW - timedelta(seconds=created_age), reused=True,
                      revision_written_at=None if written_age is None
                      else NOW - timedelta(seconds=written_age),
                      template=PodTemplate(containers=(Container(name="app", image="old"),)))


def test_a_new_replicaset_began_at_its_creation():
    assert rollout_start(dep(), rs(NEW, 2, 90)) == (NOW - timedelta(seconds=90),
                                                    RolloutStartSource.REPLICASET_CREATED)


def test_a_reused_replicaset_began_when_its_revision_was_written():
    undo = reused(OLD, 3, created_age=3 * 86400, written_age=45)
    assert rollout_start(dep(3), undo) == (NOW - timedelta(seconds=45),
                                           RolloutStartSource.REVISION_ANNOTATION)


def test_the_earliest_bound_wins_and_nothing_is_before_the_creation():
    undo = reused(OLD, 3, created_age=86400, written_age=30)
    progressing = dep(3, progressing_replicaset=OLD,
                      progressing_updated_at=NOW - timedelta(seconds=50))
    assert rollout_start(progressing, undo) == (NOW - timedelta(seconds=50),
                                                RolloutStartSource.PROGRESSING_CONDITION)
    # A condition naming another ReplicaSet says nothing about this one.
    other = dep(3, progressing_replicaset=NEW, progressing_updated_at=NOW - timedelta(seconds=50))
    assert rollout_start(other, undo)[1] is RolloutStartSource.REVISION_ANNOTATION
    # What this process saw earlier beats both: they move later as the rollout proceeds.
    seen = NOW - timedelta(seconds=70)
    assert rollout_start(progressing, undo, seen=seen)[0] == seen
    # Clock skew cannot put the start before the ReplicaSet existed.
    young = reused(OLD, 3, created_age=20, written_age=None)
    skewed = dep(3, progressing_replicaset=OLD, progressing_updated_at=NOW - timedelta(seconds=99))
    assert rollout_start(skewed, young)[0] == NOW - timedelta(seconds=20)


def test_a_reused_replicaset_without_managed_fields_falls_back_to_its_creation():
    undo = reused(OLD, 3, created_age=86400, written_age=None)
    assert rollout_start(dep(3), undo) == (NOW - timedelta(seconds=86400),
                                           RolloutStartSource.REPLICASET_CREATED)


def test_rollout_undo_to_a_bad_old_template_is_judged_and_raised():
    # v1 (3 days old) -> v2 -> undo: revision 3 runs on v1's ReplicaSet again.
    sets = [reused(OLD, 3, created_age=3 * 86400, written_age=60), rs(NEW, 2, 3600)]
    judged = rollouts_to_judge([dep(3)], sets, now=NOW, rules=RULES)
    assert [(r.replicaset.name, r.previous.revision) for r in judged] == [(OLD, 2)]
    v = view(deployment=dep(3), replicasets=sets, errors=[ErrorSample(DEP, OLD + "-abcde", 40)])
    [incident] = judge(v).incidents
    assert incident.revision == 3 and incident.previous_revision == 2
    assert incident.rollout_started_at == NOW - timedelta(seconds=60)
    assert incident.evidence.rollout_start_source is RolloutStartSource.REVISION_ANNOTATION


def test_a_reused_replicaset_outside_the_window_is_not_judged():
    sets = [reused(OLD, 3, created_age=3 * 86400, written_age=3600), rs(NEW, 2, 7200)]
    assert rollouts_to_judge([dep(3)], sets, now=NOW, rules=RULES) == []
    # ...unless this process saw it begin inside the window (the data moved later since).
    moved = [reused(OLD, 3, created_age=3 * 86400, written_age=60), rs(NEW, 2, 7200)]
    seen = {rollout_key(moved[0]): NOW - timedelta(seconds=3600)}
    assert rollouts_to_judge([dep(3)], moved, now=NOW, rules=RULES, seen_starts=seen) == []


# --- identity: a Deployment created again is another Deployment ------------------------------

def test_replicasets_of_a_deleted_deployment_of_the_same_name_are_not_its_own():
    new_dep = dep(2, uid="uid-new")
    stale = ReplicaSet(namespace=NS, name=OLD, deployment=DEP, revision=1, deployment_uid="uid-old",
                       created_at=NOW - timedelta(days=2))
    mine = ReplicaSet(namespace=NS, name=NEW, deployment=DEP, revision=2, deployment_uid="uid-new",
                      created_at=NOW - timedelta(seconds=60))
    # Its revision 2 has no older ReplicaSet of its own (revision 1 of the new object is gone).
    assert find_rollout(new_dep, [stale, mine]) is None
    first = ReplicaSet(namespace=NS, name="payments-api-aaaa", deployment=DEP, revision=1,
                       deployment_uid="uid-new", created_at=NOW - timedelta(seconds=300))
    rollout = find_rollout(new_dep, [stale, first, mine])
    assert rollout is not None and rollout.previous.name == "payments-api-aaaa"


def test_the_incident_key_carries_the_deployment_uid():
    v = view(deployment=dep(uid="uid-new"), errors=[ErrorSample(DEP, NEW_POD, 50)])
    [incident] = judge(v, notified={(NS, DEP, 2, "uid-old")}).incidents
    assert incident.key == (NS, DEP, 2, "uid-new") and incident.deployment_uid == "uid-new"
    assert judge(v, notified={(NS, DEP, 2, "uid-new")}).incidents == ()


# --- baselines: coverage and batches ---------------------------------------------------------

def test_a_young_deployment_baseline_covers_only_its_life():
    young = dep(created_at=NOW - timedelta(seconds=390))
    rollout = find_rollout(young, [rs(OLD, 1, 390), rs(NEW, 2, 90)])
    end = NOW - timedelta(seconds=90)
    assert baseline_coverage(rollout, end=end, lookback_seconds=1800, minimum_seconds=120) == 300
    old = find_rollout(dep(created_at=NOW - timedelta(days=9)), [rs(OLD, 1, 86400), rs(NEW, 2, 90)])
    assert baseline_coverage(old, end=end, lookback_seconds=1800, minimum_seconds=120) == 1800
    # Unknown creation: the previous revision's ReplicaSet bounds it.
    assert baseline_coverage(find_rollout(dep(), [rs(OLD, 1, 600), rs(NEW, 2, 90)]), end=end,
                             lookback_seconds=1800, minimum_seconds=120) == 510
    # Never less than the minimum, never more than the lookback.
    brand_new = dep(created_at=NOW - timedelta(seconds=100))
    assert baseline_coverage(find_rollout(brand_new, [rs(OLD, 1, 100), rs(NEW, 2, 90)]), end=end,
                             lookback_seconds=1800, minimum_seconds=120) == 120
    assert baseline_coverage(old, end=end, lookback_seconds=60, minimum_seconds=120) == 60


def test_a_young_service_with_its_usual_errors_is_not_a_spike():
    # 6 errors in its 5 minutes of life before the rollout = 1.2/min; 3 in the 2-minute window
    # now is the same rate. Divided by the 30-minute lookback it would have looked like 0.2/min.
    young = dep(created_at=NOW - timedelta(seconds=390))
    rules = Rules(threshold=2, error_window_seconds=120, rollout_window_seconds=600)
    v = view(deployment=young, replicasets=[rs(OLD, 1, 390), rs(NEW, 2, 90)],
             errors=[ErrorSample(DEP, NEW_POD, 3)], baseline=Baseline(6, 300))
    assert judge(v, rules=rules).incidents == ()
    assert judge(replace_baseline(v, Baseline(6, 1800)), rules=rules).incidents != ()


def replace_baseline(v: WorkloadView, baseline: Baseline) -> WorkloadView:
    return WorkloadView(deployment=v.deployment, replicasets=v.replicasets, pods=v.pods,
                        errors=v.errors, baseline=baseline)


def test_baseline_batches_take_rollouts_close_to_the_earliest_with_the_same_coverage():
    def rollout_at(name: str, age: float, created_age: float = 86400):
        d = Deployment(namespace=NS, name=name, revision=2,
                       created_at=NOW - timedelta(seconds=created_age))
        sets = [ReplicaSet(namespace=NS, name=f"{name}-a", deployment=name, revision=1,
                           created_at=NOW - timedelta(seconds=created_age)),
                ReplicaSet(namespace=NS, name=f"{name}-b", deployment=name, revision=2,
                           created_at=NOW - timedelta(seconds=age))]
        return find_rollout(d, sets)

    rollouts = [rollout_at("a", 100), rollout_at("b", 300), rollout_at("c", 250),
                rollout_at("d", 150), rollout_at("young", 260, created_age=700)]
    batch = baseline_batch(rollouts, span_seconds=120, lookback_seconds=1800, minimum_seconds=120)
    assert [r.deployment.name for r in batch.rollouts] == ["b", "c"]
    assert batch.end == NOW - timedelta(seconds=300) and batch.seconds == 1800
    # The young one (400 s of life before that end) waits: its window is not the others'.
    later = baseline_batch([rollout_at("young", 260, created_age=700), rollout_at("d", 150)],
                           span_seconds=120, lookback_seconds=1800, minimum_seconds=120)
    assert [r.deployment.name for r in later.rollouts] == ["young"] and later.seconds == 440
    assert baseline_batch([], span_seconds=120, lookback_seconds=1800, minimum_seconds=120) is None


# --- baselines: the last healthy state ------------------------------------------------------

def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def history(*ages: float, created_age: float = 86400, reuse: dict[int, float] | None = None):
    """A Deployment whose revision n+1 began ``ages[n]`` seconds ago (the last is current);
    ``reuse``: revision -> when an undo wrote it (its ReplicaSet created long before)."""
    reuse = reuse or {}
    sets = []
    for revision, age in enumerate(ages, start=1):
        if revision in reuse:
            sets.append(reused(f"{DEP}-r{revision}", revision, created_age=created_age,
                               written_age=reuse[revision]))
        else:
            sets.append(rs(f"{DEP}-r{revision}", revision, age))
    d = dep(revision=len(ages), created_at=ago(created_age))
    return find_rollout(d, sets), sets


def window(rollout, state, **kw):
    return baseline_window(rollout, state, lookback_seconds=1800, minimum_seconds=120, **kw)


def test_without_a_revision_judged_bad_the_baseline_is_the_time_before_the_rollout():
    rollout, sets = history(86400, 600, 90)
    state = last_healthy_state(rollout, sets)
    assert state == HealthyState(until=ago(90))
    assert window(rollout, state) == (ago(90), 1800)


def test_a_revision_judged_bad_is_left_out_of_the_next_ones_baseline():
    rollout, sets = history(86400, 600, 90)
    state = last_healthy_state(rollout, sets, bad_revisions={2})
    assert state.until == ago(600) and state.since is None and state.excluded == (2,)
    assert state.bad_replicasets == (f"{DEP}-r2",)
    assert window(rollout, state) == (ago(600), 1800)
    # Two bad revisions in a row: the healthy state ended when the first of them began.
    rollout, sets = history(86400, 600, 300, 90)
    state = last_healthy_state(rollout, sets, bad_revisions={2, 3})
    assert state.until == ago(600) and state.excluded == (2, 3)


def test_after_a_good_fix_the_baseline_starts_after_the_bad_revision():
    rollout, sets = history(86400, 600, 300, 90)     # 2 bad, 3 the fix, 4 current
    state = last_healthy_state(rollout, sets, bad_revisions={2})
    assert state.until == ago(90) and state.since == ago(300) and state.excluded == ()
    assert state.bad_replicasets == (f"{DEP}-r2",)
    assert window(rollout, state) == (ago(90), 210)
    # A fix that lasted less than the error window: no rate worth the name, and a longer window
    # would reach into the bad revision.
    rollout, sets = history(86400, 600, 150, 90)
    assert window(rollout, last_healthy_state(rollout, sets, bad_revisions={2})) == \
        NoHealthyBaseline("the last healthy state lasted 60s, less than the 120s error window")


def test_a_rolled_back_revision_is_judged_bad():
    # 1, 2, undo (1's ReplicaSet becomes 3, written 300 s ago), 4 now: 2 was rolled back.
    rollout, sets = history(86400, 600, 86400, 90, reuse={3: 300})
    state = last_healthy_state(rollout, sets)
    assert state.since == ago(300) and state.until == ago(90)
    assert state.bad_replicasets == (f"{DEP}-r2",)
    # The undo itself: its previous revision (2) was rolled back, 1 is the last healthy state.
    rollout, sets = history(86400, 600, 86400, reuse={3: 90})
    state = last_healthy_state(rollout, sets)
    assert state.until == ago(600) and state.excluded == (2,) and state.since is None


def test_no_healthy_state_in_the_lookback_is_said_and_why():
    rollout, sets = history(86400, 3600, 90)
    state = last_healthy_state(rollout, sets, bad_revisions={2})
    none = window(rollout, state)
    assert isinstance(none, NoHealthyBaseline) and none.excluded == (2,)
    assert none.reason == "revision 2 judged bad since more than the 30 min lookback before the rollout"
    # Every earlier revision judged bad (the first one rolled back to a bad second one... ).
    rollout, sets = history(600, 300, 86400, reuse={3: 90})
    state = last_healthy_state(rollout, sets, bad_revisions={1})
    assert not state.healthy
    assert window(rollout, state) == NoHealthyBaseline(
        "every earlier revision was judged bad (revisions 1, 2)", (1, 2))


def test_a_young_deployment_after_a_bad_revision_keeps_its_minimum_window():
    # Created 160 s ago: 2 bad 100 s ago, 3 now. The window ends where 2 began and, the
    # Deployment being younger than the minimum there, reaches back to the minimum.
    rollout, sets = history(160, 100, 60, created_age=160)
    state = last_healthy_state(rollout, sets, bad_revisions={2})
    assert window(rollout, state) == (ago(100), 120)


def test_baseline_errors_leave_out_the_pods_of_bad_replicasets():
    state = HealthyState(until=NOW, bad_replicasets=(f"{DEP}-r2", "payments-api-old"))
    samples = [ErrorSample(DEP, f"{DEP}-r2-abcde", 30), ErrorSample(DEP, f"{DEP}-r1-abcde", 2),
               ErrorSample(DEP, "payments-api-old-xyz12", 7), ErrorSample(DEP, None, 1),
               ErrorSample("other", "other-r1-abcde", 9), ErrorSample(DEP, f"{DEP}-r22-abcde", 4)]
    assert baseline_errors(samples, DEP, state) == 2 + 1 + 4
    assert baseline_errors(samples, DEP, HealthyState(until=NOW)) == 44


def test_batches_share_a_window_only_when_it_is_the_same():
    plain, _ = history(86400, 90)
    after_bad, sets = history(86400, 600, 100)
    healthy = {after_bad.key: last_healthy_state(after_bad, sets, bad_revisions={2})}
    batch = baseline_batch([plain, after_bad], span_seconds=120, lookback_seconds=1800,
                           minimum_seconds=120, healthy=healthy)
    # after_bad's window ends 600 s ago, first: plain (its own ends 90 s ago) waits.
    assert batch.end == ago(600) and batch.seconds == 1800 and batch.rollouts == (after_bad,)
    # Without a healthy state: answered at once, without a query.
    gone, sets = history(86400, 3600, 90)
    only = baseline_batch([gone], span_seconds=120, lookback_seconds=1800, minimum_seconds=120,
                          healthy={gone.key: last_healthy_state(gone, sets, bad_revisions={2})})
    assert only.rollouts == () and [r for r, _ in only.absent] == [gone]


def test_with_no_healthy_baseline_the_threshold_alone_decides():
    absent = Baseline(0, 0, excluded_revisions=(1,), absent="every earlier revision was judged bad")
    decision = judge(view(errors=errs(**{NEW_POD: 5}), baseline=absent))
    [incident] = decision.incidents
    assert incident.evidence.baseline_absent == "every earlier revision was judged bad"
    assert incident.evidence.baseline_per_minute is None
    assert incident.evidence.baseline_excluded_revisions == (1,)
    assert decision.assessments[0].baseline_per_minute is None
    assert any("judged against the threshold alone" in r for r in decision.assessments[0].reasons)
    assert judge(view(errors=errs(**{NEW_POD: 4}), baseline=absent)).incidents == ()


def test_the_assessment_says_the_baseline_left_out_a_bad_revision():
    baseline = Baseline(240, 1800, excluded_revisions=(2,))   # 8/min: 16 expected in 2 min
    [assessment] = judge(view(errors=errs(**{NEW_POD: 20}), baseline=baseline)).assessments
    assert assessment.verdict is Verdict.HEALTHY
    assert "baseline: the last healthy state, before revision 2 (judged bad)" in assessment.reasons
    assert any("in the last healthy state" in r for r in assessment.reasons)


# --- alerts as signals of a rollout ----------------------------------------------------------

def _alert(name: str, started_seconds_ago: float, status: str = "firing"):
    from incident_detector.model import Alert

    return Alert(fingerprint=f"fp-{name}", status=status,
                 starts_at=NOW - timedelta(seconds=started_seconds_ago),
                 labels=(("alertname", name), ("namespace", NS), ("deployment", DEP)))


def with_alerts(v: WorkloadView, *alerts) -> WorkloadView:
    from dataclasses import replace

    return replace(v, alerts=tuple(alerts))


def test_an_alert_that_began_after_the_rollout_is_a_signal_of_it():
    decision = judge(with_alerts(view(), _alert("HighLatency", 30)))
    (incident,) = decision.incidents
    assert incident.signals == (Signal.ALERT,)
    assert [a.name for a in incident.evidence.alerts] == ["HighLatency"]


def test_an_alert_firing_since_before_the_rollout_is_not_its_signal():
    decision = judge(with_alerts(view(), _alert("DiskFull", 3600)))
    assert decision.incidents == ()
    (assessment,) = decision.assessments
    assert any("firing since before the rollout" in r for r in assessment.reasons)


def test_a_resolved_alert_is_not_a_signal():
    assert judge(with_alerts(view(), _alert("HighLatency", 30, status="resolved"))).incidents == ()


def test_an_alert_outside_the_rollout_window_is_not_a_signal_of_that_rollout():
    old = view(replicasets=(rs(OLD, 1, 86400, image="payments-api:1.4.2"), rs(NEW, 2, 3600)))
    assert judge(with_alerts(old, _alert("HighLatency", 30))).incidents == ()


def test_an_alert_joins_the_other_signals_and_the_incident_is_raised_once():
    v = with_alerts(view(errors=errs(**{NEW_POD.replace("-", "_"): 9})), _alert("HighLatency", 30),
                    _alert("Errors", 10))
    (incident,) = judge(v).incidents
    assert incident.signals == (Signal.ERROR_SPIKE, Signal.ALERT)
    assert [a.name for a in incident.evidence.alerts] == ["HighLatency", "Errors"]
    key = (NS, DEP, 2, "")
    assert judge(v, notified={key}).incidents == ()
