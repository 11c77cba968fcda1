"""A person's decision on a proposed action: a verified Slack click or a dashboard form.

Approve goes through the very same guardrails as the loop, now with the approver's name, on
what was seen when the incident was raised; Reject closes the entry; a click from someone who
is not one of SLACK_APPROVERS is audited and refused. Each outcome replaces the Slack
message's buttons through the click's ``response_url``. A replica that does not lead records
the approval in the shared journal, and the leader's next tick carries it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import structlog

from ..judge.guardrails import GuardrailDecision, Outcome, decide
from ..store.journal import APPROVED, PROPOSED, REFUSED, REJECTED
from .approvals import Decision
from .remediation_plan import recorded_proposal
from .remediation_text import outcome_text

if TYPE_CHECKING:  # the remediator imports this module: only the type is needed here
    from .remediation import Remediator

log = structlog.get_logger("incident_detector")


async def handle_decision(rem: Remediator, decision: Decision) -> None:
    """A verified Slack click: Approve goes through the guardrails again, Reject closes."""
    now = rem.clock()
    entry = rem.journal.get(int(decision.incident_key)) \
        if decision.incident_key and decision.incident_key.isdigit() else None
    if entry is None:
        return
    if decision.kind == "refused_user":
        rem.audit(entry, who=decision.who, decision="refused",
                  reason="not one of SLACK_APPROVERS", dry_run=rem.policy.dry_run)
        return
    if decision.kind == "reject":
        if rem.journal.advance(entry.id, expected=[PROPOSED], to=REJECTED, now=now,
                               who=decision.who):
            rem.audit(entry, who=decision.who, decision="rejected",
                      reason="rejected in Slack" if decision.source == "slack"
                      else "rejected on the dashboard", dry_run=rem.policy.dry_run)
        await answer(rem, decision, f"Rejected by <@{decision.who}>: nothing was changed.")
        return
    # Approve: the same guardrails as the loop, now with the approver's name, on what was
    # seen when the incident was raised (a change since makes the write itself stale).
    try:
        proposal = recorded_proposal(
            entry, approved_by=decision.who,
            approver_authenticated=decision.source == "dashboard")
    except (ValueError, TypeError) as exc:
        verdict = GuardrailDecision(Outcome.REFUSE, f"The recorded action is not valid: {exc}.",
                                    "invalid_request", rem.policy.dry_run)
    else:
        verdict = decide(proposal, policy=rem.policy, history=rem.history(now), now=now)
    if verdict.outcome is not Outcome.ACT:
        if rem.journal.advance(entry.id, expected=[PROPOSED], to=REFUSED, now=now,
                               who=decision.who, result=verdict.guardrail):
            rem.audit(entry, who=decision.who, decision="refused", reason=verdict.reason,
                      dry_run=verdict.dry_run)
        await answer(rem, decision, f"Not done: {verdict.reason}")
        return
    if not rem.journal.advance(entry.id, expected=[PROPOSED], to=APPROVED, now=now,
                               who=decision.who):
        await answer(rem, decision, "Already decided.")
        return
    rem.audit(entry, who=decision.who, decision="approved", reason=verdict.reason,
              dry_run=verdict.dry_run)
    if not rem.is_leader():
        # Recorded in the shared journal: the leader's next tick carries it out, and its
        # outcome goes to the incident's thread like any follow-up.
        await answer(rem, decision, f"Approved by <@{decision.who}>: the leader replica "
                                    "carries it out and reports the outcome here.")
        return
    result = await rem.execute(entry.id)
    await answer(rem, decision, outcome_text(entry, result, who=decision.who, when=now))


async def answer(rem: Remediator, decision: Decision, text: str) -> None:
    """Replace the original message's buttons with who decided, when, and the outcome."""
    if not decision.response_url:
        return
    try:
        await rem.http.post(decision.response_url,
                            json={"replace_original": True, "text": text})
    except httpx.HTTPError as exc:
        log.warning("slack.response_url_failed", error=type(exc).__name__)
