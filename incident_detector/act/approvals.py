"""One-time approval tokens: kept in the store (``store.approvals``), named here for act/ and
web/, which issue and consume them."""

from __future__ import annotations

from ..store.approvals import DEFAULT_TOKEN_TTL, TOKEN_BYTES, ApprovalTokens, Grant

__all__ = ["DEFAULT_TOKEN_TTL", "TOKEN_BYTES", "ApprovalTokens", "Grant"]
