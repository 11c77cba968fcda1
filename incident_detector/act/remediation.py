"""Closing the loop: propose the fix for an incident, ask or act within the guardrails, carry it
out, verify it, and keep the record.

For a rollout regression the fix is a rollback to the previous revision. ``plan`` decides, with
``guardrails.decide``, what happens to it and writes the decision down (journal and audit) before
anything is sent or done:

- ``ask``: one-time tokens for the Approve and Reject buttons of the incident's Slack message;
  a click comes back through ``on_decision`` and goes through the very same guardrails;
- ``act``: the rollback runs at once, in the background;
- ``refuse`` / ``notify_only``: recorded with the reason, shown in the incident.

An execution moves the journal entry approved -> executing by compare-and-set, so a second
click, a racing replica or a restart cannot run it twice; the write itself carries the
Deployment's resourceVersion seen when the incident was raised, so a Deployment that changed
since (a fix deployed, a rollback already done) refuses it as stale. After a real write,
``follow`` checks every tick whether the rollout converged and the errors came back under the
baseline (``verify``), until ``VERIFY_TIMEOUT_SECONDS``. Every step is one audit row and one
JSON line on stdout (``"event": "action"`` or ``"event": "verification"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog

from ..errors import SourceError
from ..judge.correlator import Rollout
from ..model import Deployment, Incident, RemediationView
from ..notify.events import EventRecorder
from ..notify.slack import THREAD_KEY, thread_key
from ..run.journal import (
    APPROVED,
    DONE,
    DRY_RUN,
    EXECUTING,
    FAILED,
    PROPOSED,
    REFUSED,
    REJECTED,
    STALE,
    UNVERIFIED,
    VERIFIED,
    Journal,
    JournalEntry,
)
from ..web.slack_actions import Decision
from .approvals import ApprovalTokens
from .executor import ALREADY_DONE, APPLIED, DRY_RUN_OK, ActionResult, KubeExecutor
from .guardrails import Action, Outcome, PastAction, Policy, Proposal, decide
from .verify import VerificationResult, verify

log = structlog.get_logger("incident_detector")

DETECTOR = "detector"
# How far back the guardrails look for earlier actions (cooldown and hourly cap).
HISTORY = timedelta(hours=24)
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
                 events: EventRecorder | None = None) -> None:
        self.events = events
        self.policy = policy
        self.journal = journal
        self.executor = executor
        self.tokens = tokens
        self.stdout = stdout
        self.slack = slack
        self.clock = clock
        self.verify_timeout_seconds = verify_timeout_seconds
        self.http = http or httpx.AsyncClient(timeout=RESPONSE_URL_TIMEOUT_SECONDS)
        self.running: set[asyncio.Task[None]] = set()

    # Deciding ----------------------------------------------------------------------------

    def plan(self, incident: Incident, rollout: Rollout) -> Incident:
        """Decide what happens to the rollback of ``incident``, write it down, and return the
        incident carrying that decision (and the buttons' tokens when it asks)."""
        if self.policy.mode == "off":
            return incident
        now = self.clock()
        deployment = rollout.deployment
        previous = rollout.previous
        proposal = self._proposal(incident, deployment)
        decision = decide(proposal, policy=self.policy, history=self._history(now), now=now)
        state = {Outcome.ACT: APPROVED, Outcome.ASK: PROPOSED}.get(decision.outcome, REFUSED)
        params = {"to_revision": previous.revision, "to_replicaset": previous.name,
                  "confidence": incident.confidence, "paused": deployment.paused,
                  "baseline_per_minute": incident.evidence.baseline_per_minute,
                  "dry_run": decision.dry_run, "incident": incident.detected_at.isoformat()}
        entry = self.journal.propose(key=incident.key, action=Action.ROLLBACK.value,
                                     params=params, precondition=deployment.resource_version,
                                     now=now, state=state)
        new = entry is not None
        if entry is None:  # already planned (an earlier tick or process): show what it became
            entry = self.journal.find(incident.key, Action.ROLLBACK.value)
        view = RemediationView(action=Action.ROLLBACK.value, to_revision=previous.revision,
                               outcome=decision.outcome.value, reason=decision.reason,
                               guardrail=decision.guardrail, dry_run=decision.dry_run,
                               journal_id=entry.id if entry else None)
        if new and entry is not None:
            self._audit(entry, who=DETECTOR, decision=_audit_decision(decision.outcome),
                        reason=decision.reason, dry_run=decision.dry_run)
        if entry is not None and entry.state == PROPOSED and decision.outcome is Outcome.ASK:
            subject = str(entry.id)
            view = replace(view, approve_token=self.tokens.issue(subject, "approve"),
                           reject_token=self.tokens.issue(subject, "reject"))
        if entry is not None and entry.state == APPROVED:
            self._start(entry.id)
        return replace(incident, remediation=view)

    def _proposal(self, incident: Incident, deployment: Deployment) -> Proposal:
        return Proposal(action=Action.ROLLBACK, namespace=incident.namespace,
                        deployment=incident.deployment, confidence=incident.confidence,
                        paused=deployment.paused, gitops=deployment.gitops)

    def _history(self, now: datetime) -> list[PastAction]:
        return [PastAction(namespace=e.key[0], deployment=e.key[1], action=Action(e.action),
                           at=e.updated_at, dry_run=bool(e.params.get("dry_run")))
                for e in self.journal.recent(since=now - HISTORY)
                if e.state in (APPROVED, EXECUTING, DONE, DRY_RUN, VERIFIED, UNVERIFIED, STALE,
                               FAILED)]

    async def on_decision(self, decision: Decision) -> None:
        """A verified Slack click: Approve goes through the guardrails again, Reject closes."""
        now = self.clock()
        entry = self.journal.get(int(decision.incident_key)) \
            if decision.incident_key and decision.incident_key.isdigit() else None
        if entry is None:
            return
        if decision.kind == "refused_user":
            self._audit(entry, who=decision.who, decision="refused",
                        reason="not one of SLACK_APPROVERS", dry_run=self.policy.dry_run)
            return
        if decision.kind == "reject":
            if self.journal.advance(entry.id, expected=[PROPOSED], to=REJECTED, now=now,
                                    who=decision.who):
                self._audit(entry, who=decision.who, decision="rejected",
                            reason="rejected in Slack", dry_run=self.policy.dry_run)
            await self._answer(decision, f"Rejected by <@{decision.who}>: nothing was changed.")
            return
        # Approve: the same guardrails as the loop, now with the approver's name, on what was
        # seen when the incident was raised (a change since makes the write itself stale).
        confidence = entry.params.get("confidence")
        proposal = Proposal(action=Action.ROLLBACK, namespace=entry.key[0],
                            deployment=entry.key[1],
                            confidence=float(confidence) if confidence is not None else None,
                            paused=bool(entry.params.get("paused")), approved_by=decision.who)
        verdict = decide(proposal, policy=self.policy, history=self._history(now), now=now)
        if verdict.outcome is not Outcome.ACT:
            if self.journal.advance(entry.id, expected=[PROPOSED], to=REFUSED, now=now,
                                    who=decision.who, result=verdict.guardrail):
                self._audit(entry, who=decision.who, decision="refused", reason=verdict.reason,
                            dry_run=verdict.dry_run)
            await self._answer(decision, f"Not done: {verdict.reason}")
            return
        if not self.journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=now,
                                    who=decision.who):
            await self._answer(decision, "Already decided.")
            return
        self._audit(entry, who=decision.who, decision="approved", reason=verdict.reason,
                    dry_run=verdict.dry_run)
        result = await self.execute(entry.id)
        await self._answer(decision, _outcome_text(entry, result, who=decision.who,
                                                   when=now))

    # Doing -------------------------------------------------------------------------------

    def _start(self, entry_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self.execute(entry_id))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def execute(self, entry_id: int) -> ActionResult | None:
        """Run an approved action once: approved -> executing, the write, the outcome."""
        now = self.clock()
        entry = self.journal.get(entry_id)
        if entry is None:
            return None
        if not self.journal.advance(entry.id, expected=[APPROVED], to=EXECUTING, now=now):
            if entry.state != EXECUTING:  # someone else has it, or it is over
                return None
            # Resumed after a restart: the write may have landed; its precondition tells.
        dry_run = bool(entry.params.get("dry_run"))
        namespace, deployment = entry.key[0], entry.key[1]
        try:
            template = await self.executor.replicaset_template(
                namespace, str(entry.params.get("to_replicaset")))
            result = await self.executor.rollback(namespace, deployment, to_template=template,
                                                  resource_version=entry.precondition,
                                                  dry_run=dry_run)
        except SourceError as exc:
            # Retryable: back to approved, with the error as its result; ``follow`` tries again
            # at a later tick.
            state = APPROVED if exc.retryable else FAILED
            self.journal.advance(entry.id, expected=[EXECUTING], to=state, now=self.clock(),
                                 result=f"{exc.reason}: {exc.message}")
            self._audit(entry, who=DETECTOR, decision="executed", dry_run=dry_run,
                        reason=f"the write failed: {exc.reason}", result="error")
            return None
        final = {APPLIED: DONE, ALREADY_DONE: DONE, DRY_RUN_OK: DRY_RUN}.get(
            result.outcome, STALE if result.outcome == "stale" else FAILED)
        self.journal.advance(entry.id, expected=[EXECUTING], to=final, now=self.clock(),
                             result=result.outcome)
        self._audit(entry, who=DETECTOR, decision="executed", dry_run=dry_run,
                    reason=result.message, result=result.outcome)
        return result

    async def resume(self) -> None:
        """At start: carry on with what a previous process approved or began."""
        for entry in self.journal.unfinished():
            log.info("remediation.resume", action=entry.action, target=_target(entry),
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
            if entry.state == APPROVED and entry.result is not None:  # a failed attempt
                self._start(entry.id)
        for entry in self.journal.recent(since=now - HISTORY):
            if entry.state != DONE:
                continue
            deployment = deployments.get((entry.key[0], entry.key[1]))
            if deployment is None:
                continue
            verdict = verify(deployment=deployment,
                             error_rate_per_minute=error_rates.get((entry.key[0], entry.key[1])),
                             baseline_per_minute=entry.params.get("baseline_per_minute"),
                             acted_at=entry.updated_at, now=now,
                             timeout_seconds=self.verify_timeout_seconds)
            if verdict.result is VerificationResult.PENDING:
                continue
            state = VERIFIED if verdict.result is VerificationResult.PASS else UNVERIFIED
            if not self.journal.advance(entry.id, expected=[DONE], to=state, now=now,
                                        result=verdict.result.value):
                continue
            record = {"event": "verification", "result": verdict.result.value,
                      "action": entry.action, "namespace": entry.key[0],
                      "deployment": entry.key[1], "revision": entry.key[2],
                      "to_revision": entry.params.get("to_revision"),
                      "replicas": verdict.desired_replicas, "ready": verdict.ready_replicas,
                      "error_rate_before": verdict.error_rate_before,
                      "error_rate_after": verdict.error_rate_after,
                      "seconds": verdict.seconds_since_action, "reasons": list(verdict.reasons)}
            self.stdout.write(record)
            self.journal.audit(at=now, who=DETECTOR, action=entry.action, target=_target(entry),
                               decision="verified", reason="; ".join(verdict.reasons),
                               dry_run=False, result=verdict.result.value, action_id=entry.id)
            text = (f"Verification {verdict.result.value.upper()}: {entry.action} of "
                    f"{_target(entry)} to revision {entry.params.get('to_revision')}: "
                    + "; ".join(verdict.reasons))
            if self.events is not None:
                body = self.events.verification_body(
                    namespace=entry.key[0], deployment=entry.key[1], deployment_uid=entry.key[3],
                    action_id=entry.id, passed=verdict.result is VerificationResult.PASS,
                    note=text, at=now)
                try:
                    await self.events.send(body)
                except SourceError as exc:  # the audit row and the JSON line are the record
                    log.warning("verification.event_failed", reason=exc.reason)
            if self.slack is not None:
                try:
                    await self.slack.send({"text": text, THREAD_KEY: thread_key(entry.key)})
                except SourceError as exc:
                    log.warning("verification.slack_failed", reason=exc.reason)

    async def close(self, timeout: float = 5.0) -> None:
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout)
        await self.http.aclose()

    # Telling -----------------------------------------------------------------------------

    def _audit(self, entry: JournalEntry, *, who: str, decision: str, reason: str,
               dry_run: bool, result: str | None = None) -> None:
        now = self.clock()
        row = self.journal.audit(at=now, who=who, action=entry.action, target=_target(entry),
                                 decision=decision, reason=reason, dry_run=dry_run,
                                 result=result, action_id=entry.id)
        self.stdout.write({"event": "action", **row.as_dict(), "revision": entry.key[2],
                           "to_revision": entry.params.get("to_revision")})

    async def _answer(self, decision: Decision, text: str) -> None:
        """Replace the original message's buttons with who decided, when, and the outcome."""
        if not decision.response_url:
            return
        try:
            await self.http.post(decision.response_url,
                                 json={"replace_original": True, "text": text})
        except httpx.HTTPError as exc:
            log.warning("slack.response_url_failed", error=type(exc).__name__)


def _target(entry: JournalEntry) -> str:
    return f"{entry.key[0]}/{entry.key[1]}"


def _audit_decision(outcome: Outcome) -> str:
    return {Outcome.ACT: "approved", Outcome.ASK: "requested", Outcome.REFUSE: "refused",
            Outcome.NOTIFY_ONLY: "notify_only"}[outcome]


def _outcome_text(entry: JournalEntry, result: ActionResult | None, *, who: str,
                  when: datetime) -> str:
    what = f"Roll back {_target(entry)} to revision {entry.params.get('to_revision')}"
    stamp = when.strftime("%H:%M:%S UTC")
    if result is None:
        return f"{what}: approved by <@{who}> at {stamp}; the write failed and will be retried."
    return f"{what}: approved by <@{who}> at {stamp}: {result.outcome} ({result.message})"
