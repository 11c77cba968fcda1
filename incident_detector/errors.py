"""The one error type that crosses the adapter boundary."""

from __future__ import annotations


class SourceError(Exception):
    """A call to Kubernetes, Loki or Slack failed.

    ``source`` names the dependency (``kubernetes``, ``loki``, ``slack``); ``reason`` is a short
    machine-friendly cause (``timeout``, ``connection``, ``http_429``, ``http_503``,
    ``Forbidden``, ``malformed``, ...); ``retryable`` says whether the same call may succeed
    later without anyone changing anything; ``retry_after`` is the server's own hint in seconds.
    The message never contains a secret (no URL with a token, no webhook).
    """

    def __init__(
        self,
        source: str,
        reason: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{source}: {reason}: {message}")
        self.source = source
        self.reason = reason
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


def retryable_status(status: int) -> bool:
    """429 and 5xx may succeed later; any other 4xx will not fix itself."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, *, cap: float = 300.0) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), capped; None if absent/bad."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, cap)
