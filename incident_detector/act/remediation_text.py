"""Pure wording of remediation: how an action, its target and its outcome read in the audit, on
stdout, in Slack and in the reply to a click. Functions of a journal entry alone."""

from __future__ import annotations

from datetime import datetime

from ..judge.guardrails import Action, GuardrailDecision, Outcome
from ..model import RemediationView
from ..store.journal import JournalEntry
from .executor import ActionResult

# Who the audit names when the detector decided or acted on its own.
DETECTOR = "detector"


def remediation_view(action: Action, to_revision: int | None, decision: GuardrailDecision, *,
                     entry: JournalEntry | None) -> RemediationView:
    return RemediationView(action=action.value, to_revision=to_revision,
                           outcome=decision.outcome.value, reason=decision.reason,
                           guardrail=decision.guardrail, dry_run=decision.dry_run,
                           journal_id=entry.id if entry else None)


def entry_target(entry: JournalEntry) -> str:
    return f"{entry.key[0]}/{entry.key[1]}"


def entry_to_revision(entry: JournalEntry) -> int | None:
    return entry.params.get("to_revision") if entry.action == Action.ROLLBACK.value else None


def describe_action(entry: JournalEntry) -> str:
    """``rollback of ns/name to revision 1``, ``delete-pod of ns/name (pod x)``, ..."""
    what = f"{entry.action} of {entry_target(entry)}"
    params = entry.params
    if entry.action == Action.ROLLBACK.value:
        return f"{what} to revision {params.get('to_revision')}{argocd_suffix(entry)}"
    if entry.action == Action.SCALE.value:
        return f"{what} to {params.get('replicas')} replicas"
    if entry.action == Action.DELETE_POD.value:
        return f"{what} (pod {params.get('pod')})"
    if entry.action == Action.DELETE_STUCK_PODS.value:
        return f"{what} (pods {params.get('selector')} stuck Terminating)"
    return what


def argocd_suffix(entry: JournalEntry) -> str:
    """`` through Argo CD application NS/APP`` for a rollback through Argo CD, else nothing."""
    record = entry.params.get("argocd")
    if not isinstance(record, dict):
        return ""
    namespace = record.get("app_namespace")
    return f" through Argo CD application {namespace + '/' if namespace else ''}{record.get('app')}"


def audit_decision(outcome: Outcome) -> str:
    return {Outcome.ACT: "approved", Outcome.ASK: "requested", Outcome.REFUSE: "refused",
            Outcome.NOTIFY_ONLY: "notify_only"}[outcome]


def approved_order(entry: JournalEntry) -> str:
    """What was approved, as an order: ``Roll back ns/name to revision 1``, ``Restart ns/name``."""
    target, params = entry_target(entry), entry.params
    return {
        Action.ROLLBACK.value: (f"Roll back {target} to revision {params.get('to_revision')}"
                                f"{argocd_suffix(entry)}"),
        Action.RESTART.value: f"Restart {target}",
        Action.PAUSE.value: f"Pause {target}",
        Action.SCALE.value: f"Scale {target} to {params.get('replicas')} replicas",
        Action.DELETE_POD.value: f"Delete pod {entry.key[0]}/{params.get('pod')} of {target}",
        Action.DELETE_STUCK_PODS.value: (f"Delete the pods of {target} stuck Terminating "
                                         f"({params.get('selector')})"),
    }.get(entry.action, f"{entry.action} of {target}")


def outcome_text(entry: JournalEntry, result: ActionResult | None, *, who: str,
                 when: datetime) -> str:
    what = approved_order(entry)
    stamp = when.strftime("%H:%M:%S UTC")
    if result is None:
        return f"{what}: approved by <@{who}> at {stamp}; the write failed and will be retried."
    return f"{what}: approved by <@{who}> at {stamp}: {result.outcome} ({result.message})"


def unknown_action_reason(action: str, *, rule: str | None) -> str:
    by = f" (rule {rule})" if rule else ""
    return (f"The action {action!r}{by} is not one the detector knows "
            f"({', '.join(a.value for a in Action)}).")
