"""The exact kubectl command for each remediation action: what the detector would run, so a
person can run it by hand (or see what was run). Pure."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any


def _join(parts: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in parts)


def action_command(action: str, *, namespace: str, deployment: str,
                   to_revision: int | None = None, pod: str | None = None,
                   params: Mapping[str, Any] | None = None) -> str | None:
    """``kubectl ...`` for ``action`` on ``namespace``/``deployment``; None for ``none`` or an
    action that needs something not known (``delete-pod`` without a pod)."""
    target = f"deployment/{deployment}"
    if action == "rollback":
        parts = ["kubectl", "rollout", "undo", target, "-n", namespace]
        if to_revision is not None:
            parts.append(f"--to-revision={to_revision}")
        return _join(parts)
    if action in ("restart", "pause"):
        return _join(["kubectl", "rollout", action, target, "-n", namespace])
    if action == "scale":
        replicas = (params or {}).get("replicas")
        if replicas is None:
            return None
        return _join(["kubectl", "scale", target, "-n", namespace, f"--replicas={replicas}"])
    if action == "delete-pod":
        if not pod:
            return None
        return _join(["kubectl", "delete", "pod", pod, "-n", namespace])
    if action == "delete-stuck-pods":
        # Pods stuck Terminating past their grace period: only a forced deletion ends them.
        if not pod:
            return None
        return _join(["kubectl", "delete", "pod", pod, "-n", namespace, "--grace-period=0",
                      "--force"])
    return None
