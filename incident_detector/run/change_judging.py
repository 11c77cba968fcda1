"""The change desk's judging: which workloads a recent change may break (its suspects), their
counts in the tick's one metric query (``CountPlan``), their rate against the one before the
change, and a clear rise recorded as a ``kind: change`` incident. Functions of the
``ChangeDesk`` whose memory they read and keep."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..judge import causality as chains
from ..judge import causes as ranking
from ..judge.change_windows import Judgement, Suspect, baseline_span, judge, suspects
from ..judge.correlator import Verdict
from ..judge.dependencies import Dependencies
from ..judge.rules import Subject, classify
from ..judge.signatures import top_signatures
from ..model import (
    Baseline,
    Change,
    ChangeIncident,
    Deployment,
    ErrorCounts,
    LogLine,
    ReplicaSet,
)
from ..notify import change_render
from ..sources.loki import CountWindow
from .change_topology import Seen
from .map_keeper import LEARNED_LINES_PER_WORKLOAD

if TYPE_CHECKING:  # the desk imports this module: only the types are needed here
    from .changes import Call, ChangeDesk

log = structlog.get_logger("incident_detector")


class _Notified:
    def __init__(self, is_notified: Callable[[str], bool]) -> None:
        self.is_notified = is_notified

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.is_notified(key)


@dataclass(frozen=True)
class CountPlan:
    """What ``ChangeDesk.judge`` needs counted at ``now``: the error window of ``workloads``
    (the suspects'), and per (end, seconds) the baselines still missing, as (baseline key,
    workload) pairs."""

    now: datetime
    workloads: frozenset[str]
    baselines: tuple[tuple[datetime, int, tuple[tuple[tuple[str, str, str], str], ...]], ...]

    @staticmethod
    def baseline_name(index: int) -> str:
        return f"change-baseline-{index}"

    def windows(self, *, at: datetime,
                workload_filter: Callable[[set[str]], Sequence[str] | None]) -> list[CountWindow]:
        """The baseline windows (the error window is the tick's ``errors`` window, which names
        ``workloads`` too)."""
        out = []
        for index, (end, seconds, members) in enumerate(self.baselines):
            names = workload_filter({workload for _, workload in members})
            out.append(CountWindow.ending(
                self.baseline_name(index), workloads=None if names is None else tuple(names),
                seconds=seconds, end=end, at=at, by="workload"))
        return out


def errors_per_workload(counts: ErrorCounts | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in counts.samples if counts is not None else ():
        out[sample.workload] = out.get(sample.workload, 0.0) + sample.count
    return out


def signature_symptoms(signatures: Sequence[Any], *, since: str = "the change",
                       limit: int = 3) -> list[chains.Symptom]:
    """An incident's top error signatures as symptoms of its tree: each an error group, its
    share of the sampled lines as the score."""
    total = sum(s.count for s in signatures) or 1
    return [chains.Symptom("error_group", s.fingerprint, f"error group: {s.fingerprint}",
                           (f"{s.count} of the sampled lines"
                            + (f", new since {since}" if s.new else ""),),
                           round(s.count / total, 2)) for s in signatures[:limit]]


def desk_suspects(desk: ChangeDesk, namespace: str, *, busy: Container[str], now: datetime
                  ) -> tuple[list[Change], tuple[Suspect, ...]]:
    """The changes in their window, and the workloads to judge after them."""
    seen = desk.topology.seen.get(namespace)
    recent = desk.in_window(namespace, now)
    if seen is None or not recent:
        return recent, ()
    deps = desk.topology.dependencies(namespace)
    templates = desk.topology.templates(namespace)
    services = desk.topology.services(namespace)
    affected = {}
    for c in recent:
        names = set(ranking.affected_workloads(
            c, tuple(seen.deployments.values()), templates, deps, services=services)
            if seen.may_affect(c) else ())
        # The workloads calling a rolled-out one through others (the service map): a
        # rise in them is tied to the rollout too.
        names.update(desk.map_keeper.callers_of(c))
        if names:
            affected[c.key] = tuple(sorted(names))
    judged = {name: d for name, d in seen.deployments.items() if name in seen.selected}
    return recent, suspects(recent, affected, deployments=judged, now=now,
                            window_seconds=desk.window_seconds, busy=busy)


def count_plan(desk: ChangeDesk, namespace: str, *, deployments: Sequence[Deployment],
               selected: Sequence[str], replicasets: Sequence[ReplicaSet],
               busy: Container[str], now: datetime) -> CountPlan:
    """What ``judge`` will need counted at ``now``, for the tick's one metric query: the
    suspects' workloads over the error window, and the baselines not known yet. Planned
    from the changes recorded before this tick; a change recorded by this tick's
    ``observe`` is counted from the next tick on."""
    seen = desk.topology.saw(namespace, deployments, replicasets, selected)
    _, found = desk_suspects(desk, namespace, busy=busy, now=now)
    workloads = {s.deployment: desk.workload_of(seen.deployments[s.deployment])
                 for s in found}
    baselines: dict[tuple[datetime, int], list[tuple[tuple[str, str, str], str]]] = {}
    for suspect in found:
        if suspect.baseline_key in desk.suspect_baselines:
            continue
        end, seconds = baseline_span(suspect, seen.deployments[suspect.deployment],
                                     rules=desk.rules)
        baselines.setdefault((end, seconds), []).append(
            (suspect.baseline_key, workloads[suspect.deployment]))
    return CountPlan(now=now, workloads=frozenset(workloads.values()), baselines=tuple(
        (end, seconds, tuple(members)) for (end, seconds), members in baselines.items()))


def take_counts(desk: ChangeDesk, namespace: str, plan: CountPlan, answer: Any, *,
                now: datetime) -> None:
    """The answer (``WindowCounts``; None: Loki failed) of the query ``plan`` was part of:
    the baselines are kept, the error counts wait for ``judge`` at the same instant."""
    if answer is None:
        desk.counted_errors[namespace] = (now, None, plan.workloads)
        return
    errors = answer.counts.get("errors") if plan.workloads else None
    desk.counted_errors[namespace] = (now, errors_per_workload(errors), plan.workloads)
    for index, (_, seconds, members) in enumerate(plan.baselines):
        per_workload = errors_per_workload(answer.counts.get(CountPlan.baseline_name(index)))
        for key, workload in members:
            desk.suspect_baselines[key] = Baseline(per_workload.get(workload, 0.0), seconds)


async def judge_namespace(desk: ChangeDesk, namespace: str, *, busy: set[str],
                          risen: Mapping[str, bool | None],
                          now: datetime, call: Call) -> list[str]:
    """Judge the workloads that recent changes may break; the keys of the incidents
    recorded.

    The counts come from the tick's one metric query (``count_plan``, ``counted``); a
    suspect it did not count (its change recorded this tick) is judged at the next tick.
    Without that query (``counted`` not called at this instant), they are asked here."""
    seen = desk.topology.seen.get(namespace)
    if seen is None:
        return []
    desk.map_keeper.update(namespace, now=now)
    counted = desk.counted_errors.pop(namespace, None)
    recent, found = desk_suspects(desk, namespace, busy=busy, now=now)
    if not recent:
        desk.last_judgements = [j for j in desk.last_judgements
                                if j.suspect.namespace != namespace]
        return []
    deps = desk.topology.dependencies(namespace)
    live_keys = {s.baseline_key for s in found}
    for key in [k for k in desk.suspect_baselines if k[0] == namespace and k not in live_keys]:
        del desk.suspect_baselines[key]
    if not found:
        desk.last_judgements = [j for j in desk.last_judgements
                                if j.suspect.namespace != namespace]
        return []
    workloads = {s.deployment: desk.workload_of(seen.deployments[s.deployment])
                 for s in found}
    if counted is not None and counted[0] == now:
        _, per_workload, covered = counted
    else:
        counts: ErrorCounts | None = await call("loki", "change error counts", lambda: (
            desk.loki.count_errors(namespace=namespace,
                                   workloads=sorted(set(workloads.values())),
                                   window_seconds=desk.rules.error_window_seconds, at=now)))
        await fetch_baselines(desk, namespace, found, seen, workloads, call)
        per_workload = None if counts is None else errors_per_workload(counts)
        covered = frozenset(workloads.values())
    judgements = []
    recorded = []
    for suspect in found:
        workload = workloads[suspect.deployment]
        count = None if per_workload is None or workload not in covered \
            else per_workload.get(workload, 0.0)
        judgement = judge(suspect, count=count,
                          baseline=desk.suspect_baselines.get(suspect.baseline_key),
                          rules=desk.rules, already_notified=_Notified(desk.is_notified),
                          now=now)
        judgements.append(judgement)
        if judgement.verdict is not Verdict.INCIDENT:
            continue
        incident = await change_incident(desk, judgement, seen, workloads[suspect.deployment],
                                         recent_changes=recent, deps=deps, risen=risen,
                                         now=now, call=call)
        if desk.record_notice(
                key=incident.key, kind="change", namespace=namespace,
                deployment=incident.deployment, detected_at=now,
                record=change_render.change_incident_record(incident),
                slack_payload=change_render.change_incident_slack(incident)):
            recorded.append(incident.key)
            log.warning("change_incident.detected", namespace=namespace,
                        deployment=incident.deployment, change_kind=incident.change.kind,
                        change=incident.change.name,
                        top_cause=incident.causes[0].change.name if incident.causes else None)
    desk.last_judgements = [j for j in desk.last_judgements
                            if j.suspect.namespace != namespace] + judgements
    return recorded


async def fetch_baselines(desk: ChangeDesk, namespace: str, found: Sequence[Suspect], seen: Seen,
                          workloads: Mapping[str, str], call: Call) -> None:
    """One query per change not yet measured: every suspect of that change shares it."""
    by_change: dict[tuple[datetime, int], list[Suspect]] = {}
    for suspect in found:
        if suspect.baseline_key in desk.suspect_baselines:
            continue
        end, seconds = baseline_span(suspect, seen.deployments[suspect.deployment],
                                     rules=desk.rules)
        by_change.setdefault((end, seconds), []).append(suspect)
    for (end, seconds), group in by_change.items():
        names = sorted({workloads[s.deployment] for s in group})
        counts = await call("loki", "change baseline", lambda: desk.loki.count_errors(
            namespace=namespace, workloads=names, window_seconds=seconds, at=end))
        if counts is None:
            return
        per_workload = errors_per_workload(counts)
        for suspect in group:
            desk.suspect_baselines[suspect.baseline_key] = Baseline(
                per_workload.get(workloads[suspect.deployment], 0.0), seconds)


async def change_incident(desk: ChangeDesk, judgement: Judgement, seen: Seen, workload: str, *,
                          recent_changes: Sequence[Change], deps: Dependencies,
                          risen: Mapping[str, bool | None], now: datetime, call: Call
                          ) -> ChangeIncident:
    suspect = judgement.suspect
    dep = seen.deployments[suspect.deployment]
    began = suspect.change.at
    lines: tuple[LogLine, ...] = await call("loki", "sample", lambda: desk.loki.sample_errors(
        namespace=suspect.namespace, workloads=[workload],
        start=began - timedelta(seconds=desk.rules.error_window_seconds), end=now,
        limit=desk.sample_lines)) or ()
    after = [line.line for line in lines if line.at >= began]
    signatures = top_signatures(after, before=[line.line for line in lines
                                               if line.at < began])
    # When the errors began rising: the first error line after the change, when sampled.
    rise = min((line.at for line in lines if line.at >= began), default=began)
    desk.topology.learn_lines(suspect.namespace,
                              {workload: after[-LEARNED_LINES_PER_WORKLOAD:]})
    causes = desk.causes_for(
        namespace=suspect.namespace, deployment=dep, began=rise, now=now,
        error_lines=after, own_rollout=None, risen=risen, pods=(),
        changes=recent_changes)
    window_minutes = desk.rules.error_window_seconds / 60.0
    count = judgement.error_count or 0.0
    verdict = classify(desk.rule_set(), Subject(
        log_lines=tuple(s.example for s in signatures), signals=("change",)))
    top = causes[0] if causes else None
    before = f", {round(judgement.baseline.per_minute, 2):g}/min before the change" \
        if judgement.baseline else ""
    tree = desk.causality(suspect.namespace, dep.name, causes, symptoms=[
        chains.Symptom("signal", "error_spike",
                       f"error spike: {round(count / window_minutes, 2):g}/min",
                       (f"{count:g} error lines in the last "
                        f"{desk.rules.error_window_seconds}s{before}",)),
        *signature_symptoms(signatures)])
    remediation = desk.plan_for_cause(suspect.namespace, top, detected_at=now,
                                      confidence=None, remediator=desk.remediator) \
        if top is not None else None
    return ChangeIncident(
        namespace=suspect.namespace, deployment=dep.name, deployment_uid=dep.uid,
        change=suspect.change, detected_at=now, error_count=count,
        window_seconds=desk.rules.error_window_seconds,
        error_rate_per_minute=round(count / window_minutes, 2),
        baseline_per_minute=round(judgement.baseline.per_minute, 2)
        if judgement.baseline else None,
        causes=causes, signatures=signatures, priority=verdict.priority,
        rule=verdict.rule, action=(top.action or "none") if top else "none",
        command=top.command if top else None, remediation=remediation, causality=tree)

