"""Pure rendering of the decision on a fix in Slack: its heading, and the Approve / Reject
buttons when it asks."""

from __future__ import annotations

from typing import Any

from ..model import RemediationView
from .blocks import mrkdwn_escape, section
from .formats import truncate

ACTION_BUTTONS = {
    "restart": "Restart", "pause": "Pause the rollout", "scale": "Scale",
    "delete-pod": "Delete the pod", "delete-stuck-pods": "Delete the stuck pods",
}

ACTION_RUNNING = {
    "rollback": "rolling back now", "restart": "restarting now", "pause": "pausing now",
    "scale": "scaling now", "delete-pod": "deleting the pod now",
    "delete-stuck-pods": "deleting the stuck pods now",
}

REMEDIATION_HEADINGS = {
    "ask": "Remediation: waiting for an approval",
    "notify_only": "Remediation: not proposed",
    "refuse": "Remediation: refused by a guardrail",
}


def remediation_blocks(remediation: RemediationView) -> list[dict[str, Any]]:
    """The decision on the fix, and the Approve / Reject buttons when it asks. A button's
    ``action_id`` starts with ``approve`` or ``reject``; its value is a one-time token."""
    if remediation.outcome == "act":
        heading = f"Remediation: {ACTION_RUNNING.get(remediation.action, 'acting now')}"
    else:
        heading = REMEDIATION_HEADINGS.get(remediation.outcome, "Remediation")
    if remediation.dry_run:
        heading += " (dry run: validated by the API server, nothing persisted)"
    blocks: list[dict[str, Any]] = [section(heading, [f"• {mrkdwn_escape(remediation.reason)}"])]
    if remediation.approve_token and remediation.reject_token:
        if remediation.action == "rollback":
            target = f"revision {remediation.to_revision}" if remediation.to_revision \
                else "before"
            label = f"Approve: Roll back to {target}"
            if remediation.target:
                # Another Deployment than the incident's: the button says which.
                label = (f"Approve: Roll back {remediation.target.rsplit('/', 1)[-1]} to "
                         f"{target}")
        else:
            label = f"Approve: {ACTION_BUTTONS.get(remediation.action, remediation.action)}"
        blocks.append({"type": "actions", "block_id": "remediation", "elements": [
            {"type": "button", "action_id": f"approve_{remediation.action}", "style": "danger",
             "text": {"type": "plain_text", "text": truncate(label, 75)},
             "value": remediation.approve_token},
            {"type": "button", "action_id": "reject",
             "text": {"type": "plain_text", "text": "Reject"},
             "value": remediation.reject_token},
        ]})
    return blocks
