"""Approvals: the one-time tokens a button carries (kept in the store, ``store.approvals``),
and the ``Decision`` a verified click becomes, which web/ hands to act/ (``Remediator``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ..store.approvals import DEFAULT_TOKEN_TTL, TOKEN_BYTES, ApprovalTokens, Grant

__all__ = ["DEFAULT_TOKEN_TTL", "TOKEN_BYTES", "ApprovalTokens", "Decision", "DecisionKind",
           "DecisionSource", "Grant"]

DecisionKind = Literal["approve", "reject", "refused_user"]


DecisionSource = Literal["slack", "dashboard"]


@dataclass(frozen=True)
class Decision:
    """A verified click (in Slack, or on the dashboard), as the rest of the detector sees it."""

    kind: DecisionKind
    incident_key: str | None  # None for a refused click whose token was unknown
    action: str | None
    # A Slack user ID; for the dashboard, "dashboard:" and the user its token or proxy names.
    who: str
    when: datetime
    # As given in the verified payload (the signature covers it). Kept out of repr so that
    # logging a Decision cannot leak it.
    response_url: str | None = field(default=None, repr=False)
    # Where the decision was made: a Slack click is checked against SLACK_APPROVERS; a dashboard
    # user was already authenticated by DASHBOARD_TOKEN or the authenticating proxy.
    source: DecisionSource = "slack"
