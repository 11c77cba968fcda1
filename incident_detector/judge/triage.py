"""Error triage: the error lines of a namespace grouped by signature, whatever rolled out.

The correlator looks at a Deployment when it rolls out. Triage looks at everything else: each
tick, a sample of the namespace's error lines is folded into *groups*, one per fingerprint
(``judge.signatures``), each with the workloads that wrote it, how many lines were seen, when
it was first and last seen, and a priority given once, when the group is first found, by the
rules (``prioritize``: the caller wires it to the rule engine).

Counts are what the samples held. A sample that hit its limit dropped older lines, so from then
on the counts of that namespace's groups are lower bounds (``sampled``).

"New" (``is_new``) means two things at once:

- first seen within ``new_for`` (one hour by default) of now, and
- first seen at least ``new_for`` after the detector began watching the namespace.

The second half is what keeps everything found at start from being "new": an error that has
been written every few minutes for a month is first seen by the detector on its first read, and
so are the errors that occur once every forty minutes. Only after one ``new_for`` of watching
has the detector seen enough of the namespace to say that a signature was not there before.

Everything here is pure: no I/O, no clock reads, ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from incident_detector.judge.signatures import fingerprint, top_signatures
from incident_detector.model import LogLine, Priority

# (namespace, fingerprint)
GroupKey = tuple[str, str]
# The workload of lines whose stream has no workload label: they are grouped all the same.
NO_WORKLOAD = ""
DEFAULT_NEW_FOR = timedelta(hours=1)

Prioritize = Callable[[str], tuple[Priority, str | None]]


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """The error lines of one namespace that share a fingerprint."""

    namespace: str
    fingerprint: str
    # The first line seen with this fingerprint, redacted as signature examples are.
    example: str
    # Values of the workload label of the lines' streams, sorted; "" for lines without one.
    workloads: tuple[str, ...]
    # Lines seen in the samples (a lower bound once ``sampled``).
    count: int
    first_seen: datetime
    last_seen: datetime
    priority: Priority
    # The rule that gave the priority; None for a default.
    rule: str | None = None
    # When a notification about the group was recorded: at most one per group.
    notified_at: datetime | None = None
    # A sample of the namespace hit its limit: lines were left out, counts are lower bounds.
    sampled: bool = False

    @property
    def key(self) -> GroupKey:
        return (self.namespace, self.fingerprint)


def example_of(line: str) -> str:
    """A line as signature examples show it: redacted, then cut (``judge.signatures``)."""
    signatures = top_signatures((line,), limit=1)
    return signatures[0].example if signatures else ""


def _aware(at: datetime) -> datetime:
    # A naive time is taken as UTC rather than refused: one bad line must not stop a tick.
    return at if at.tzinfo is not None and at.utcoffset() is not None \
        else at.replace(tzinfo=timezone.utc)


@dataclass(slots=True)
class _Batch:
    """What one fold saw of one fingerprint."""

    count: int
    first_seen: datetime
    last_seen: datetime
    first_line: str
    workloads: set[str]


def fold(
    groups: Mapping[GroupKey, ErrorGroup],
    lines: Sequence[LogLine],
    *,
    namespace: str,
    now: datetime,
    sample_full: bool,
    prioritize: Prioritize,
) -> dict[GroupKey, ErrorGroup]:
    """``groups`` with the lines of one sample of ``namespace`` added; ``groups`` is not changed.

    A new fingerprint becomes a group whose example is its earliest line of the sample and whose
    priority is ``prioritize(example)``; an existing group keeps its example, priority, rule and
    ``notified_at``. A line stamped after ``now`` (a skewed clock) counts as seen at ``now``.
    Lines blank once cleaned are not counted. ``sample_full`` (the sample hit its limit) marks
    every group of the namespace ``sampled``: the lines left out may have been any of them.
    """
    now = _aware(now)
    batches: dict[str, _Batch] = {}
    for line in lines:
        key = fingerprint(line.line)
        if not key:
            continue
        at = min(_aware(line.at), now)
        workload = line.workload or NO_WORKLOAD
        batch = batches.get(key)
        if batch is None:
            batches[key] = _Batch(1, at, at, line.line, {workload})
            continue
        batch.count += 1
        batch.workloads.add(workload)
        if at < batch.first_seen:
            batch.first_seen, batch.first_line = at, line.line
        batch.last_seen = max(batch.last_seen, at)

    out = dict(groups)
    for key, batch in batches.items():
        old = out.get((namespace, key))
        if old is None:
            example = example_of(batch.first_line)
            priority, rule = prioritize(example)
            out[(namespace, key)] = ErrorGroup(
                namespace=namespace, fingerprint=key, example=example,
                workloads=tuple(sorted(batch.workloads)), count=batch.count,
                first_seen=batch.first_seen, last_seen=batch.last_seen,
                priority=Priority(priority), rule=rule, sampled=sample_full)
        else:
            out[(namespace, key)] = replace(
                old,
                workloads=tuple(sorted(set(old.workloads) | batch.workloads)),
                count=old.count + batch.count,
                first_seen=min(old.first_seen, batch.first_seen),
                last_seen=max(old.last_seen, batch.last_seen),
                sampled=old.sampled or sample_full)
    if sample_full:
        for key, group in out.items():
            if group.namespace == namespace and not group.sampled:
                out[key] = replace(group, sampled=True)
    return out


def rate_per_minute(group: ErrorGroup, *, now: datetime, window: timedelta) -> float:
    """Lines per minute since the group was first seen, over at least ``window``.

    The floor keeps a group seen a few seconds ago from showing an absurd rate; an old group's
    rate is its average over its whole life, so it falls once its lines stop.
    """
    span = max(_aware(now) - group.first_seen, window, timedelta(seconds=1))
    return group.count * 60.0 / span.total_seconds()


def is_new(
    group: ErrorGroup, *, now: datetime, watching_since: datetime,
    new_for: timedelta = DEFAULT_NEW_FOR,
) -> bool:
    """First seen within ``new_for`` of ``now``, and ``new_for`` or more after the detector
    began watching the namespace (see the module docstring)."""
    return (group.first_seen >= _aware(now) - new_for
            and group.first_seen >= _aware(watching_since) + new_for)


def _recency(group: ErrorGroup) -> tuple[datetime, str, str]:
    return (group.last_seen, group.namespace, group.fingerprint)


def bounded(
    groups: Mapping[GroupKey, ErrorGroup], *, max_groups: int,
    seen_since: datetime | None = None,
) -> dict[GroupKey, ErrorGroup]:
    """At most ``max_groups`` groups, the least recently seen evicted first (ties: by key), and
    with ``seen_since``, none last seen before it."""
    kept: Iterable[ErrorGroup] = groups.values()
    if seen_since is not None:
        oldest = _aware(seen_since)
        kept = [group for group in kept if group.last_seen >= oldest]
    kept = list(kept)
    if len(kept) <= max_groups:
        return {group.key: group for group in kept}  # the common case: no sort
    newest = sorted(kept, key=_recency, reverse=True)[:max(0, max_groups)]
    return {group.key: group for group in newest}


def to_notify(
    groups: Iterable[ErrorGroup], *, priorities: Collection[Priority | str], now: datetime,
    watching_since: datetime, new_for: timedelta = DEFAULT_NEW_FOR,
) -> list[ErrorGroup]:
    """The new groups with a priority in ``priorities`` not notified yet, most urgent first
    (then first seen first). Once ``notified_at`` is set a group is never returned again."""
    wanted = {Priority(str(getattr(p, "value", p)).upper()) for p in priorities}
    due = [group for group in groups
           if group.notified_at is None and group.priority in wanted
           and is_new(group, now=now, watching_since=watching_since, new_for=new_for)]
    return sorted(due, key=lambda g: (g.priority.value, g.first_seen, g.namespace, g.fingerprint))
