"""Pure advice on a rollout incident: the rollback command, a rule's own action, a GitOps
owner's way back, and the one sentence a record recommends."""

from __future__ import annotations

from ..judge.commands import action_command
from ..model import Cause, GitOpsOwner, GitOpsTool, Incident
from ..redact import redact
from ..store.changes import change_summary
from .causes_render import cause_advice, percent


def rollback_command(incident: Incident) -> str:
    """The kubectl undo; without a known previous revision kubectl's default (previous) applies."""
    command = action_command("rollback", namespace=incident.namespace,
                             deployment=incident.deployment,
                             to_revision=incident.previous_revision)
    assert command is not None  # a rollback needs nothing more than the Deployment
    return command


def rollback_target(incident: Incident) -> str:
    if incident.previous_revision is None:
        return "the previous revision"
    return f"revision {incident.previous_revision}"


def _gitops_advice(incident: Incident, owner: GitOpsOwner) -> str:
    where = f" in {owner.app_namespace}" if owner.app_namespace else ""
    undo = rollback_command(incident)
    if owner.tool == GitOpsTool.ARGO_CD:
        (rollback,) = owner.rollback_commands()
        return (
            f"{incident.deployment} is managed by the Argo CD application {owner.app}{where}: "
            f"a manual kubectl undo would be reverted at its next sync. "
            f"Roll back through Argo CD: {rollback} (it returns to the previously synced "
            f"version and needs auto-sync off), or revert the commit in Git. "
            f"Last resort, with auto-sync disabled: {undo}"
        )
    suspend = " or ".join(owner.flux_commands("suspend"))
    resume = " or ".join(owner.flux_commands("resume"))
    return (
        f"{incident.deployment} is managed by the {owner.object_name}: "
        f"a manual kubectl undo would be reverted at its next reconciliation. "
        f"Roll back by reverting the commit in Git. "
        f"To undo by hand first suspend it ({suspend}) and resume it once Git is fixed "
        f"({resume}). "
        f"Last resort, after suspending: {undo}"
    )


def rule_command(incident: Incident) -> str | None:
    """The command of the rule's action when it is one other than the rollback."""
    action = incident.rule_action
    if action in (None, "none", "rollback"):
        return None
    pod = next((name for name, problem in incident.evidence.pod_problems), None)
    return action_command(action, namespace=incident.namespace, deployment=incident.deployment,
                          pod=pod)


def foreign_cause(incident: Incident) -> Cause | None:
    """The incident's likeliest cause when it is not the incident's own rollout (a
    dependency's rollout, a ConfigMap): undoing this rollout would not undo it."""
    causes = incident.evidence.causes
    if not causes:
        return None
    change = causes[0].change
    if (change.kind == "Deployment" and change.namespace == incident.namespace
            and change.name == incident.deployment
            and change.revision in (None, incident.revision)):
        return None
    return causes[0]


def recommended_action(incident: Incident) -> str:
    owner = incident.evidence.gitops
    command = rule_command(incident)
    cause = foreign_cause(incident)
    if cause is not None:
        return (f"The likeliest cause is not this rollout but "
                f"{redact(change_summary(cause.change))} ({percent(cause.score)}). "
                f"{redact(cause_advice(cause))}. Rolling back {incident.deployment} would not "
                f"undo it; should it be needed too: {rollback_command(incident)}")
    if command is not None:
        return (f"{ACTION_ADVICE.get(incident.rule_action or '', 'Run')} (rule "
                f"{incident.rule}): {command}; or roll back to {rollback_target(incident)}: "
                f"{rollback_command(incident)}")
    if owner is not None:
        return _gitops_advice(incident, owner)
    return (
        f"Roll back {incident.deployment} in {incident.namespace} to {rollback_target(incident)}: "
        f"{rollback_command(incident)}"
    )


# How each action reads: in advice, on the Approve button, and while it runs.
ACTION_ADVICE = {
    "rollback": "Roll back", "restart": "Restart the rollout", "pause": "Pause the rollout",
    "scale": "Scale", "delete-pod": "Delete the crash-looping pod (its controller recreates it)",
    "delete-stuck-pods": "Delete the pods stuck Terminating",
}
