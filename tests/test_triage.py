"""Error triage's pure part: folding samples into groups, rates, "new", bounds, what notifies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge.signatures import fingerprint
from incident_detector.judge.triage import (
    DEFAULT_NEW_FOR,
    NO_WORKLOAD,
    ErrorGroup,
    bounded,
    example_of,
    fold,
    is_new,
    rate_per_minute,
    to_notify,
)
from incident_detector.model import LogLine, Priority

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NS = "shop"
NPE = 'level=error msg="charge failed" err="NPE at Pay.java:{}"'
TIMEOUT = 'level=error msg="timeout calling bank" after={}ms'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def line(text: str, seconds: float, workload: str | None = "payments-api",
         pod: str | None = None) -> LogLine:
    return LogLine(at=at(seconds), line=text, pod=pod, workload=workload)


def by_words(example: str) -> tuple[Priority, str | None]:
    """A stand-in for the rule engine: P1 for a NullPointerException, P3 otherwise."""
    return (Priority.P1, "npe") if "NPE" in example else (Priority.P3, None)


def group(fp: str = "fp", *, first: float = 0, last: float | None = None, count: int = 1,
          priority: Priority = Priority.P1, notified_at: datetime | None = None,
          namespace: str = NS) -> ErrorGroup:
    return ErrorGroup(namespace=namespace, fingerprint=fp, example=fp, workloads=("a",),
                      count=count, first_seen=at(first),
                      last_seen=at(first if last is None else last), priority=priority,
                      notified_at=notified_at)


def folded(lines, groups=None, *, now: float = 600, full: bool = False, namespace: str = NS):
    return fold(groups or {}, lines, namespace=namespace, now=at(now), sample_full=full,
                prioritize=by_words)


# --- fold ----------------------------------------------------------------------------------------


def test_lines_of_one_signature_make_one_group_with_its_workloads_count_and_times():
    groups = folded([
        line(NPE.format(91), 30, "payments-api"),
        line(NPE.format(88), 10, "checkout"),
        line(TIMEOUT.format(2000), 20, "payments-api"),
        line(NPE.format(17), 20, "payments-api"),
    ])
    npe = groups[(NS, fingerprint(NPE.format(1)))]
    assert npe.count == 3
    assert npe.workloads == ("checkout", "payments-api")
    assert (npe.first_seen, npe.last_seen) == (at(10), at(30))
    assert npe.example == NPE.format(88)  # the earliest line of the sample
    assert (npe.priority, npe.rule) == (Priority.P1, "npe")
    assert npe.notified_at is None and npe.sampled is False
    timeout = groups[(NS, fingerprint(TIMEOUT.format(1)))]
    assert (timeout.count, timeout.priority, timeout.rule) == (1, Priority.P3, None)
    assert len(groups) == 2


def test_lines_without_a_workload_are_grouped_under_the_empty_workload():
    groups = folded([line(NPE.format(1), 1, None), line(NPE.format(2), 2, "")])
    (only,) = groups.values()
    assert only.workloads == (NO_WORKLOAD,) == ("",)
    assert only.count == 2
    mixed = folded([line(NPE.format(3), 3, "api")], groups)
    assert mixed[only.key].workloads == ("", "api")


def test_an_existing_group_keeps_its_example_priority_rule_and_notification():
    first = folded([line(NPE.format(1), 10)])
    key = next(iter(first))
    notified = {key: first[key].__class__(**{**_fields(first[key]), "notified_at": at(20),
                                              "priority": Priority.P2, "rule": "manual"})}
    again = fold(notified, [line(NPE.format(2), 100, "checkout")], namespace=NS, now=at(600),
                 sample_full=False, prioritize=lambda _: (Priority.P4, "never asked"))
    group_ = again[key]
    assert group_.example == NPE.format(1)
    assert (group_.priority, group_.rule, group_.notified_at) == (Priority.P2, "manual", at(20))
    assert (group_.count, group_.first_seen, group_.last_seen) == (2, at(10), at(100))
    assert group_.workloads == ("checkout", "payments-api")


def _fields(group_: ErrorGroup) -> dict:
    return {name: getattr(group_, name) for name in ErrorGroup.__slots__}


def test_fold_does_not_change_its_input_and_keeps_other_namespaces():
    other = group("elsewhere", namespace="pay")
    before = {other.key: other}
    after = folded([line(NPE.format(1), 1)], before)
    assert before == {other.key: other}
    assert after[other.key] is other and len(after) == 2


def test_new_fingerprints_are_asked_to_the_rules_once_with_the_redacted_example():
    asked = []

    def prioritize(example):
        asked.append(example)
        return Priority.P2, "r"

    secret = 'level=error msg="login failed" password=hunter2 user=ann'
    fold({}, [line(secret, 1), line(secret, 2), line(secret, 3)], namespace=NS, now=at(10),
         sample_full=False, prioritize=prioritize)
    assert len(asked) == 1
    assert "hunter2" not in asked[0] and "[redacted]" in asked[0]
    assert asked[0] == example_of(secret)


def test_a_full_sample_marks_every_group_of_the_namespace_and_only_it_as_sampled():
    quiet = folded([line(TIMEOUT.format(1), 1)])
    elsewhere = group("x", namespace="pay")
    groups = {**quiet, elsewhere.key: elsewhere}
    after = folded([line(NPE.format(1), 5)], groups, full=True)
    assert all(g.sampled for g in after.values() if g.namespace == NS)
    assert after[elsewhere.key].sampled is False
    # once sampled, always: the count stays a lower bound
    assert all(g.sampled for g in folded([line(NPE.format(1), 9)], after).values()
               if g.namespace == NS)


def test_blank_lines_and_future_or_naive_timestamps():
    groups = folded([line("   ", 1), line("\x1b[31m\x1b[0m", 2)])
    assert groups == {}
    future = folded([line(NPE.format(1), 900)], now=600)
    (only,) = future.values()
    assert only.first_seen == only.last_seen == at(600)  # counted as seen now
    naive = LogLine(at=datetime(2026, 11, 23, 12, 0, 5), line=NPE.format(1))
    (only,) = folded([naive]).values()
    assert only.first_seen == at(5)


# --- rate, new, bounds, notify -----------------------------------------------------------------


def test_rate_per_minute_is_the_average_since_first_seen_over_at_least_the_window():
    window = timedelta(minutes=2)
    cases = [
        # (count, first seen, now, rate)
        (10, 0, 600, 1.0),            # 10 lines over 10 minutes
        (10, 590, 600, 5.0),          # seen 10 s ago: over the 2-minute window
        (0, 0, 600, 0.0),
        (120, 0, 60, 60.0),           # 120 lines over the 2-minute floor
        (3, 600, 600, 1.5),
        (5, 700, 600, 2.5),           # first seen "after" now (skew): the floor again
    ]
    for count, first, now, expected in cases:
        g = group(first=first, count=count)
        assert rate_per_minute(g, now=at(now), window=window) == expected, (count, first, now)
    assert rate_per_minute(group(count=6), now=at(0), window=timedelta(0)) == 360.0  # 1 s floor


def test_new_means_recent_and_after_one_new_for_of_watching():
    hour = DEFAULT_NEW_FOR
    cases = [
        # (first seen, now, watching since, new)
        (3600 * 2, 3600 * 2 + 60, 0, True),         # watched 2 h, seen a minute ago
        (3600 * 2, 3600 * 3 + 1, 0, False),         # seen more than an hour ago
        (3600 * 2, 3600 * 3, 0, True),              # exactly an hour ago: still new
        (60, 120, 0, False),                        # found in the first hour of watching
        (3599, 3700, 0, False),                     # one second short of an hour of watching
        (3600, 3700, 0, True),                      # an hour of watching exactly
        (-60, 0, 0, False),                         # found by the first read (before start)
        (7200, 7300, 7200, False),                  # watching restarted: nothing new yet
    ]
    for first, now, since, expected in cases:
        got = is_new(group(first=first), now=at(now), watching_since=at(since), new_for=hour)
        assert got is expected, (first, now, since)
    assert is_new(group(first=700), now=at(760), watching_since=at(0),
                  new_for=timedelta(minutes=10))
    assert not is_new(group(first=100), now=at(160), watching_since=at(0),
                      new_for=timedelta(minutes=10))


def test_bounded_evicts_the_least_recently_seen_first():
    groups = {g.key: g for g in (group("a", last=10), group("b", last=30), group("c", last=20),
                                 group("d", last=30, namespace="pay"))}
    assert set(bounded(groups, max_groups=10)) == set(groups)
    assert set(bounded(groups, max_groups=3)) == {(NS, "b"), (NS, "c"), ("pay", "d")}
    # A tie on last_seen goes to the greater key (the store's ORDER BY ... DESC agrees).
    assert set(bounded(groups, max_groups=1)) == {(NS, "b")}
    assert bounded(groups, max_groups=0) == {}
    assert set(bounded(groups, max_groups=10, seen_since=at(20))) == \
        {(NS, "b"), (NS, "c"), ("pay", "d")}
    assert set(bounded(groups, max_groups=1, seen_since=at(31))) == set()


def test_to_notify_new_groups_of_the_priorities_once():
    since, now = at(0), at(7200)
    fresh = dict(first=7100)
    groups = [
        group("p1-new", priority=Priority.P1, **fresh),
        group("p2-new", priority=Priority.P2, **fresh),
        group("p1-old", priority=Priority.P1, first=100),
        group("p1-done", priority=Priority.P1, notified_at=at(7150), **fresh),
        group("p1-newer", priority=Priority.P1, first=7000),
    ]
    names = lambda found: [g.fingerprint for g in found]  # noqa: E731
    assert names(to_notify(groups, priorities=("P1",), now=now, watching_since=since)) == \
        ["p1-newer", "p1-new"]
    assert names(to_notify(groups, priorities=[Priority.P2, "p1"], now=now,
                           watching_since=since)) == ["p1-newer", "p1-new", "p2-new"]
    assert to_notify(groups, priorities=(), now=now, watching_since=since) == []
    # Watching began recently: nothing is new, nothing notifies.
    assert to_notify(groups, priorities=("P1",), now=now, watching_since=at(7000)) == []


# --- properties --------------------------------------------------------------------------------

_TEXTS = st.one_of(
    st.text(max_size=80),
    st.sampled_from([NPE.format(1), NPE.format(2), TIMEOUT.format(5), TIMEOUT.format(50),
                     'level=error msg="x" token=abc123', "", "   "]),
)
_LINES = st.lists(
    st.builds(
        LogLine,
        at=st.datetimes(min_value=datetime(2026, 11, 23), max_value=datetime(2026, 11, 24),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5))])),
        line=_TEXTS,
        pod=st.none() | st.text(max_size=10),
        workload=st.none() | st.sampled_from(["", "api", "worker", "ünïcode"]),
    ),
    max_size=40,
)
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def _summary(groups):
    return {key: (g.count, g.first_seen, g.last_seen, g.workloads) for key, g in groups.items()}


@settings(max_examples=150, deadline=None)
@given(_LINES, st.booleans(), st.text(max_size=10))
def test_arbitrary_lines_never_raise(lines, full, namespace):
    groups = fold({}, lines, namespace=namespace, now=NOW, sample_full=full,
                  prioritize=by_words)
    assert sum(g.count for g in groups.values()) <= len(lines)
    for g in groups.values():
        assert g.first_seen <= g.last_seen <= NOW
        assert g.workloads == tuple(sorted(set(g.workloads)))
        assert rate_per_minute(g, now=NOW, window=timedelta(minutes=2)) >= 0
        is_new(g, now=NOW, watching_since=NOW - timedelta(days=1))


@settings(max_examples=150, deadline=None)
@given(_LINES, st.integers(min_value=0, max_value=40))
def test_folding_in_two_halves_equals_folding_at_once(lines, cut):
    once = fold({}, lines, namespace=NS, now=NOW, sample_full=False, prioritize=by_words)
    half = fold({}, lines[:cut], namespace=NS, now=NOW, sample_full=False, prioritize=by_words)
    twice = fold(half, lines[cut:], namespace=NS, now=NOW, sample_full=False,
                 prioritize=by_words)
    assert _summary(twice) == _summary(once)


@settings(max_examples=150, deadline=None)
@given(st.lists(_LINES, max_size=4), st.integers(min_value=0, max_value=5))
def test_the_bound_always_holds(samples, max_groups):
    groups: dict = {}
    for index, lines in enumerate(samples):
        groups = fold(groups, lines, namespace=f"ns{index % 2}", now=NOW, sample_full=False,
                      prioritize=by_words)
        kept = bounded(groups, max_groups=max_groups)
        assert len(kept) <= max_groups
        # nothing evicted was seen more recently than anything kept
        if kept and len(kept) < len(groups):
            oldest_kept = min(g.last_seen for g in kept.values())
            assert all(g.last_seen <= oldest_kept for k, g in groups.items() if k not in kept)
        groups = kept
