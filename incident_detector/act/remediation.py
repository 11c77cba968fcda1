"""Closing the loop: propose the fix for an incident, ask or act within the guardrails, carry it
out, verify it, and keep the record.

The fix is an ``Action`` on the incident's Deployment: for a rollout regression a rollback to the
previous revision, unless a rule chose another (``Fix``: restart, pause, scale, delete-pod,
delete-stuck-pods, or none at all). ``plan`` turns the incident and the rule's choice into a
``PlanRequest``; ``propose`` (which an alert incident calls directly) decides with
``guardrails.decide`` what happens to it and writes the decision down (journal and audit) before
anything is sent or done:

- ``ask``: one-time tokens for the Approve and Reject buttons of the incident's Slack message;
  a click comes back through ``on_decision`` and goes through the very same guardrails;
- ``act``: the action runs at once, in the background;
- ``refuse`` / ``notify_only``: recorded with the reason, shown in the incident. A request that
  cannot be carried out (no pod to delete, no replica count to scale to, an action the detector
  does not know) is refused the same way, never raised.

A rule only chooses: its action must be in ``ALLOWED_ACTIONS`` like any other, and its
cooldown only counts when it is longer than ``REMEDIATION_COOLDOWN_MINUTES``.

The journal entry keeps what the execution needs (the target ReplicaSet, the pod and its uid,
the replica count, the pod selector) and what the guardrails looked at, so that an approval,
a retry or a restart rebuilds the same action from the record. An execution moves the entry
approved -> executing by compare-and-set, so a second click, a racing replica or a restart cannot
run it twice; the write itself carries what was seen when the incident was raised (the
Deployment's resourceVersion, the pod's uid), so a Deployment that changed since (a fix deployed,
a rollback already done) refuses it as stale. After a real write, ``follow`` checks every tick
whether it worked (``verify.verify_action``: converged and errors under the baseline; paused for
a pause), until ``VERIFY_TIMEOUT_SECONDS``.

A rollback of a Deployment that an Argo CD application manages, with Argo CD's API configured
(``argocd``), goes through the application's history instead of the Deployment, which Argo CD
would put back: the journal records the application and its namespace, the write reads the
application and rolls it back to the entry before the one deployed when the incident was raised
(``argocd.choose_target``: the same entry on a retry or after a restart, and ``already_done``
when the rollback landed), and the verification wants both the application (the rollback's sync
succeeded at that revision, Healthy) and the Deployment (converged, errors under the baseline).

Every step is one audit row and one JSON line on stdout (``"event": "action"`` or
``"event": "verification"``).

``Remediator`` keeps the decisions and the journal's moves; the pure planning is in
``remediation_plan``, the wording in ``remediation_text``, the write itself in
``remediation_write``, a person's Approve or Reject in ``remediation_decision``, and the
renewal and verification in ``follow_up``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

import httpx
import structlog

from ..errors import SourceError
from ..judge.correlator import Rollout
from ..judge.guardrails import Action, GuardrailDecision, Outcome, PastAction, Policy, decide
from ..model import Deployment, Incident, Pod, RemediationView
from ..notify.events import EventRecorder
from ..notify.remediation_render import remediation_blocks
from ..notify.slack import THREAD_KEY, thread_key
from ..store.journal import (APPROVED, DONE, DRY_RUN, EXECUTING, FAILED, PROPOSED, REFUSED,
                             STALE, Journal, JournalEntry)
from .approvals import ApprovalTokens, Decision
from .argocd import ArgoCdClient
from .executor import ALREADY_DONE, APPLIED, DRY_RUN_OK, ActionResult, KubeExecutor
from .executor import STALE as WRITE_STALE
from .follow_up import FollowUp
from .remediation_decision import handle_decision
from .remediation_plan import (HISTORY, NO_ACTION, Fix, JournalKey, PlanRequest, journal_params,
                               past_actions, problem_pod, renewable_at_write, request_proposal,
                               why_impossible)
from .remediation_text import (DETECTOR, audit_decision, entry_target, entry_to_revision,
                               remediation_view, unknown_action_reason)
from .remediation_write import write_action

# Callers and tests find the planning's names here, where they were first defined.
from .remediation_plan import pod_selector, same_spec  # noqa: F401  (re-exported)

log = structlog.get_logger("incident_detector")

RESPONSE_URL_TIMEOUT_SECONDS = 5.0

Clock = Callable[[], datetime]


class Writer(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...


class Sender(Protocol):
    async def send(self, payload: dict[str, Any]) -> None: ...


class Remediator:
    def __init__(self, *, policy: Policy, journal: Journal, executor: KubeExecutor,
                 tokens: ApprovalTokens, stdout: Writer, slack: Sender | None, clock: Clock,
                 verify_timeout_seconds: float, http: httpx.AsyncClient | None = None,
                 events: EventRecorder | None = None, argocd: ArgoCdClient | None = None,
                 is_leader: Callable[[], bool] = lambda: True, owner: str = "") -> None:
        self.events = events
        # Only the leader writes to the cluster. Any replica records a decision (a click that
        # reached it) in the journal; the leader's next tick carries it out (``follow``).
        self.is_leader = is_leader
        self.owner = owner
        # The journal entries this process is executing now (never started twice here; the
        # journal's compare and set keeps other replicas out).
        self._executing: set[int] = set()
        # Without a client, Argo CD's API is not there to use, whatever the settings said.
        self.policy = policy if argocd is not None or not policy.argocd \
            else replace(policy, argocd=False)
        self.argocd = argocd
        self.journal = journal
        self.executor = executor
        self.tokens = tokens
        self.stdout = stdout
        self.slack = slack
        self.clock = clock
        self.verify_timeout_seconds = verify_timeout_seconds
        self.http = http or httpx.AsyncClient(timeout=RESPONSE_URL_TIMEOUT_SECONDS)
        self.running: set[asyncio.Task[None]] = set()
        # The optional LLM analysis (run.analysis.Analyst): its answer can only lower an
        # automatic action to one that waits for an approval (judge.analysis.lower).
        self.analyst: Any = None
        self.llm_min_confidence = 1.0
        # Renewing the preconditions of what waits for a person, and the verdicts on what ran.
        self.follow_up = FollowUp(journal=journal, stdout=stdout, slack=slack, events=events,
                                  argocd=self.argocd, clock=clock,
                                  verify_timeout_seconds=verify_timeout_seconds)

    # Deciding ----------------------------------------------------------------------------

    def plan(self, incident: Incident, rollout: Rollout, *, fix: Fix | None = None,
             pods: Sequence[Pod] = ()) -> Incident:
        """Decide what happens to the fix of ``incident`` (``fix``: a rule's choice; None: the
        rollback to the previous revision), write it down, and return the incident carrying
        that decision (and the buttons' tokens when it asks). ``pods``: the Deployment's pods as
        seen at this tick, where a delete-pod finds the uid of the pod it deletes."""
        if self.policy.mode == "off":
            return incident
        fix = fix if fix is not None else Fix(Action.ROLLBACK.value)
        if fix.action == NO_ACTION:
            return incident
        try:
            action = Action(fix.action)
        except ValueError:
            return replace(incident, remediation=self._unknown_action(incident.key, fix.action,
                                                                      rule=fix.rule))
        request = PlanRequest(
            key=incident.key, deployment=rollout.deployment, action=action,
            detected_at=incident.detected_at, confidence=incident.confidence,
            baseline_per_minute=incident.evidence.baseline_per_minute,
            to_replicaset=rollout.previous if action is Action.ROLLBACK else None,
            pod=problem_pod(incident, pods) if action is Action.DELETE_POD else None,
            params=fix.params, cooldown_seconds=fix.cooldown_seconds, rule=fix.rule,
            rollout_started_at=incident.rollout_started_at)
        return replace(incident, remediation=self.propose(request))

    def propose(self, request: PlanRequest) -> RemediationView:
        """Decide ``request`` with the guardrails, write it down (journal and audit) before
        anything else, issue the buttons' tokens when it asks, start it when it acts."""
        now = self.clock()
        try:
            action = Action(request.action)
        except ValueError:
            return self._unknown_action(request.key, str(request.action), rule=request.rule)
        to_revision = request.to_replicaset.revision \
            if action is Action.ROLLBACK and request.to_replicaset is not None else None
        if self.policy.mode == "off":  # only reads and tells: nothing is written down
            decision = GuardrailDecision(
                Outcome.NOTIFY_ONLY,
                "Remediation is off (REMEDIATION_MODE=off): the detector only tells.",
                "mode_off", self.policy.dry_run)
            return remediation_view(action, to_revision, decision, entry=None)
        decision = self._decide(request, action, now)
        state = {Outcome.ACT: APPROVED, Outcome.ASK: PROPOSED}.get(decision.outcome, REFUSED)
        entry = self.journal.propose(key=request.key, action=action.value,
                                     params=journal_params(request, action, decision,
                                                           argocd=self.policy.argocd),
                                     precondition=request.deployment.resource_version, now=now,
                                     state=state)
        new = entry is not None
        if entry is None:  # already planned (an earlier tick or process): show what it became
            entry = self.journal.find(request.key, action.value)
        view = remediation_view(action, to_revision, decision, entry=entry)
        if new and entry is not None:
            self.audit(entry, who=DETECTOR, decision=audit_decision(decision.outcome),
                       reason=decision.reason, dry_run=decision.dry_run)
        if entry is not None and entry.state == PROPOSED and decision.outcome is Outcome.ASK:
            view = self._with_buttons(view, entry.id)
        if entry is not None and entry.state == APPROVED:
            self._start(entry.id)
        return view

    def _with_buttons(self, view: RemediationView, entry_id: int) -> RemediationView:
        """``view`` with the one-time tokens of its Approve and Reject buttons."""
        subject = str(entry_id)
        return replace(view, approve_token=self.tokens.issue(subject, "approve"),
                       reject_token=self.tokens.issue(subject, "reject"))

    def _decide(self, request: PlanRequest, action: Action, now: datetime) -> GuardrailDecision:
        """The guardrails' decision, or a refusal of a request that cannot be carried out."""
        impossible = why_impossible(request, action)
        if impossible is not None:
            guardrail, reason = impossible
            return GuardrailDecision(Outcome.REFUSE, reason, guardrail, self.policy.dry_run)
        try:
            proposal = request_proposal(request, action)
        except ValueError as exc:  # a rule's cooldown that is not a number of seconds
            return GuardrailDecision(Outcome.REFUSE, f"The request is not valid: {exc}.",
                                     "invalid_request", self.policy.dry_run)
        return decide(proposal, policy=self.policy, history=self.history(now), now=now)

    def _unknown_action(self, key: JournalKey, action: str, *, rule: str | None
                        ) -> RemediationView:
        """An action the detector does not know: refused and audited, not journaled (nothing
        could ever run it)."""
        reason = unknown_action_reason(action, rule=rule)
        row = self.journal.audit(at=self.clock(), who=DETECTOR, action=action,
                                 target=f"{key[0]}/{key[1]}", decision="refused", reason=reason,
                                 dry_run=self.policy.dry_run)
        self.stdout.write({"event": "action", **row.as_dict(), "revision": key[2],
                           "to_revision": None, "rule": rule})
        return RemediationView(action=action, to_revision=None, outcome=Outcome.REFUSE.value,
                               reason=reason, guardrail="unknown_action",
                               dry_run=self.policy.dry_run)

    def history(self, now: datetime) -> list[PastAction]:
        return past_actions(self.journal.recent(since=now - HISTORY))

    async def on_decision(self, decision: Decision) -> None:
        """A verified Slack click or dashboard decision (``remediation_decision``)."""
        await handle_decision(self, decision)

    # Doing -------------------------------------------------------------------------------

    def _start(self, entry_id: int) -> None:
        if entry_id in self._executing:
            return
        self._executing.add(entry_id)
        task = asyncio.get_running_loop().create_task(self.execute(entry_id))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def execute(self, entry_id: int) -> ActionResult | None:
        """Run an approved action once: approved -> executing, the write, the outcome."""
        self._executing.add(entry_id)
        try:
            return await self._execute(entry_id)
        finally:
            self._executing.discard(entry_id)

    async def _execute(self, entry_id: int) -> ActionResult | None:
        now = self.clock()
        entry = self.journal.get(entry_id)
        if entry is None:
            return None
        if entry.state == APPROVED and entry.decided_by is None \
                and await self._lowered_by_analysis(entry):
            return None
        if not self.journal.advance(entry.id, expected=[APPROVED], to=EXECUTING, now=now,
                                    executor=self.owner or None):
            if entry.state != EXECUTING:  # someone else has it, or it is over
                return None
            # Resumed after a restart: the write may have landed; its precondition tells.
        dry_run = bool(entry.params.get("dry_run"))
        try:
            result = await self._write(entry, dry_run=dry_run)
            renewed = self._renewed_at_write(entry, result)
            if renewed is not None:
                seen, entry = entry.precondition, renewed
                result = await self._write(entry, dry_run=dry_run)
                # The audit says that the write it records is the second, and why.
                result = replace(result, message=(
                    f"{result.message} (written again at resourceVersion {entry.precondition}: "
                    f"only the status had moved since {seen}, the spec is the one approved)"))
        except SourceError as exc:
            # Retryable: back to approved, with the error as its result; ``follow`` tries again
            # at a later tick.
            state = APPROVED if exc.retryable else FAILED
            self.journal.advance(entry.id, expected=[EXECUTING], to=state, now=self.clock(),
                                 result=f"{exc.reason}: {exc.message}")
            self.audit(entry, who=DETECTOR, decision="executed", dry_run=dry_run,
                       reason=f"the write failed: {exc.reason}", result="error")
            return None
        final = {APPLIED: DONE, ALREADY_DONE: DONE, DRY_RUN_OK: DRY_RUN}.get(
            result.outcome, STALE if result.outcome == WRITE_STALE else FAILED)
        self.journal.advance(entry.id, expected=[EXECUTING], to=final, now=self.clock(),
                             result=result.outcome)
        self.audit(entry, who=DETECTOR, decision="executed", dry_run=dry_run,
                   reason=result.message, result=result.outcome)
        return result

    async def _write(self, entry: JournalEntry, *, dry_run: bool) -> ActionResult:
        return await write_action(entry, executor=self.executor, argocd=self.argocd,
                                  clock=self.clock, dry_run=dry_run)

    def _renewed_at_write(self, entry: JournalEntry, result: ActionResult) -> JournalEntry | None:
        """The entry with its precondition moved to what the stale refusal's GET saw, when that
        is allowed (``renewable_at_write``), once (compare and set); None otherwise."""
        version = renewable_at_write(entry, result)
        if version is None or not self.journal.renew_precondition(
                entry.id, seen=entry.precondition, now_seen=version, state=EXECUTING):
            return None
        log.info("remediation.precondition_renewed", action_id=entry.id,
                 seen=entry.precondition, now_seen=version,
                 why="the status moved since the last look; the spec is the one approved")
        return self.journal.get(entry.id)

    async def _lowered_by_analysis(self, entry: JournalEntry) -> bool:
        """An action the loop approved on its own (no person did) waits for the incident's LLM
        analysis, at most LLM_TIMEOUT_SECONDS, when one was asked for; an answer that suggests
        another action or is not confident enough turns it into a request for approval.
        No answer (none asked, a failure, too late) changes nothing."""
        analyst = self.analyst
        if analyst is None or not analyst.asked(entry.key):
            return False
        from ..judge.analysis import lower

        analysis = await analyst.advice(entry.key, timeout=analyst.timeout)
        decision = GuardrailDecision(Outcome.ACT, "Every guardrail allows it.", "auto_confidence",
                                     bool(entry.params.get("dry_run")))
        verdict = lower(decision, analysis, action=entry.action,
                        min_confidence=self.llm_min_confidence)
        if verdict.outcome is Outcome.ACT:
            return False
        if not self.journal.advance(entry.id, expected=[APPROVED], to=PROPOSED,
                                    now=self.clock()):
            return False  # someone else moved it meanwhile: theirs to carry on
        self.audit(entry, who=DETECTOR, decision=audit_decision(verdict.outcome),
                   reason=verdict.reason, dry_run=verdict.dry_run)
        if self.slack is not None:
            view = self._with_buttons(remediation_view(Action(entry.action),
                                                       entry_to_revision(entry), verdict,
                                                       entry=entry), entry.id)
            try:
                await self.slack.send({"text": verdict.reason,
                                       "blocks": remediation_blocks(view),
                                       THREAD_KEY: thread_key(entry.key)})
            except SourceError as exc:
                log.warning("analysis.ask_slack_failed", reason=exc.reason)
        return True

    def renew(self, deployments: Mapping[tuple[str, str], Deployment]) -> None:
        """Each look (a tick or a fast look): the proposed actions' preconditions follow their
        Deployments while the spec is unchanged (``FollowUp.renew``)."""
        self.follow_up.renew(deployments)

    async def resume(self) -> None:
        """At start: carry on with what a previous process approved or began."""
        for entry in self.journal.unfinished():
            if entry.id in self._executing:
                continue  # under way in this process (resumed after the store came back)
            log.info("remediation.resume", action=entry.action, target=entry_target(entry),
                     state=entry.state)
            if entry.state == EXECUTING:
                # Back to approved first, so that execute() takes it through the same path.
                self.journal.advance(entry.id, expected=[EXECUTING], to=APPROVED,
                                     now=self.clock())
            await self.execute(entry.id)

    # Checking ----------------------------------------------------------------------------

    async def follow(self, deployments: Mapping[tuple[str, str], Deployment],
                     error_rates: Mapping[tuple[str, str], float | None]) -> None:
        """Each tick: retry the writes that failed on their way (Kubernetes unreachable), and
        the verdict on every executed action still being verified."""
        now = self.clock()
        for entry in self.journal.unfinished():
            # A failed attempt, or a decision another replica recorded: carried out here.
            if entry.state == APPROVED and entry.id not in self._executing:
                self._start(entry.id)
        self.follow_up.renew(deployments)
        await self.follow_up.verify(deployments, error_rates, now=now)

    async def close(self, timeout: float = 5.0) -> None:
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout)
        await self.http.aclose()
        if self.argocd is not None:
            await self.argocd.aclose()

    # Telling -----------------------------------------------------------------------------

    def audit(self, entry: JournalEntry, *, who: str, decision: str, reason: str,
              dry_run: bool, result: str | None = None) -> None:
        now = self.clock()
        row = self.journal.audit(at=now, who=who, action=entry.action, target=entry_target(entry),
                                 decision=decision, reason=reason, dry_run=dry_run,
                                 result=result, action_id=entry.id)
        self.stdout.write({"event": "action", **row.as_dict(), "revision": entry.key[2],
                           "to_revision": entry_to_revision(entry),
                           "rule": entry.params.get("rule")})
