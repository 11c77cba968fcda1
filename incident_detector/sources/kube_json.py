"""Type guards for the Kubernetes API's JSON: it is trusted for nothing.

Each returns the value when it has the expected type and an empty (or zero) one otherwise, so
that every module reading the API's answers (the parsers of ``kube_objects`` and
``kube_templates``, the client, ``changes_watch``) reads any field of any body without a check
of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    """A non-negative integer field; anything else counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str))


def _str_map(value: Any) -> dict[str, str]:
    return {k: v for k, v in _dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def _add_name(names: set[str], value: Any) -> None:
    if isinstance(value, str) and value:
        names.add(value)
