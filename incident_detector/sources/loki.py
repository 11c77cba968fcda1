"""The Loki adapter: LogQL built from configured values, Loki's JSON turned into our own data.

Per namespace and tick, one batched metric query (``windows_query``: every count window the tick
needs, tagged by window) and one log query for the error lines of the tick's range (its legs
with lines only, ``WindowCounts.legs``); ``count_errors`` and ``sample_errors`` ask one thing each.
Every configured value that ends up in LogQL goes through ``quote`` (and ``regex_escape`` inside a
regex matcher), so no namespace, workload name or pattern can change the shape of the query.

What an error line is (``ErrorMatch``): Loki 3 gives every line a ``detected_level`` at ingestion
(structured metadata). A line is an error when that level is one of ERROR_LEVELS; ERROR_PATTERN
judges only the lines whose level Loki did not detect (empty or ``unknown``). Loki 2 has no
``detected_level``, and there the pattern alone decides. The level-aware query stays correct on a
Loki without levels (a label filter on an absent label sees the empty string, so every line goes
to the pattern leg): asking Loki its version once only saves the level leg where it cannot match.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Collection, Sequence
from datetime import datetime
from importlib import metadata
from typing import Any

import httpx
import structlog

from ..config import DEFAULT_ERROR_LEVELS, Settings
from ..errors import SourceError, parse_retry_after, retryable_status
from ..model import ErrorCounts, LogLine
from ..redact import REDACTED, redact
from ..retry import Backoff, Sleep, call_with_retries
from .logql import (EPOCH, ANY_VALUE_REGEX, CountWindow, DETECTED_LEVEL, error_count_query,
    error_lines_queries, error_lines_query, ErrorMatch, FIRST_VERSION_WITH_LEVELS, LabelKeys,
    LEG_LEVEL, LEG_PATTERN, MATCH_AUTO, MATCH_LEVEL, MATCH_PATTERN, MAX_LINE_CHARS, quote,
    regex_escape, selector, UNDETECTED_LEVELS, WINDOW_LABEL, windows_query)
from .loki_answers import (major_version, read_streams, read_vector, read_windows, Skipped,
    parse_streams, parse_vector, parse_windows, SOURCE, WindowCounts)

log = structlog.get_logger(__name__)

QUERY_PATH = "/loki/api/v1/query"
QUERY_RANGE_PATH = "/loki/api/v1/query_range"
BUILDINFO_PATH = "/loki/api/v1/status/buildinfo"
ORG_ID_HEADER = "X-Scope-OrgID"
PACKAGE_NAME = "incident-detector"
# Loki explains a LogQL error in its text/plain body; keep enough of it to be useful.
MAX_ERROR_TEXT_CHARS = 300


# --- HTTP ----------------------------------------------------------------------------------------


def unix_nanos(at: datetime) -> str:
    """An aware datetime as Loki's unix-nanosecond timestamp text (exact, no float rounding)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    delta = at - EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return str(seconds * 1_000_000_000 + delta.microseconds * 1_000)


def _version() -> str:
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        return "dev"


def _header_safe(value: str) -> bool:
    # A CR/LF or non-ASCII character would be refused by the HTTP stack at request time, with an
    # error that quotes the value: refuse it here, without quoting it.
    return all(" " <= char <= "~" for char in value)


def make_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client of the Loki adapter, with tenant, auth and timeout from the settings.

    Credentials written into LOKI_URL (``https://user:pass@loki``) are moved out of the URL into
    basic auth, so that no URL the client holds or reports carries them.
    """
    url = httpx.URL(str(settings.loki_url))
    headers = {"User-Agent": f"{PACKAGE_NAME}/{_version()}"}
    if settings.loki_org_id:
        if not _header_safe(settings.loki_org_id):
            raise ValueError("LOKI_ORG_ID holds characters that cannot go into an HTTP header")
        headers[ORG_ID_HEADER] = settings.loki_org_id
    auth: httpx.Auth | None = None
    if settings.loki_bearer_token is not None:
        token = settings.loki_bearer_token.get_secret_value()
        if not _header_safe(token):
            raise ValueError(
                "LOKI_BEARER_TOKEN holds characters that cannot go into an HTTP header"
            )
        headers["Authorization"] = f"Bearer {token}"
    elif settings.loki_username and settings.loki_password is not None:
        auth = httpx.BasicAuth(settings.loki_username, settings.loki_password.get_secret_value())
    elif url.username or url.password:
        auth = httpx.BasicAuth(url.username, url.password)
    return httpx.AsyncClient(
        base_url=url.copy_with(userinfo=b""),
        timeout=httpx.Timeout(settings.loki_timeout_seconds),
        headers=headers,
        auth=auth,
    )


def _known_secrets(http: httpx.AsyncClient) -> tuple[str, ...]:
    """Every credential the client sends, longest first, to scrub them out of messages."""
    secrets: set[str] = set()
    headers = [http.headers.get("Authorization")]
    if isinstance(http.auth, httpx.BasicAuth):
        # The public way to see what BasicAuth sends: run its flow on a throwaway request.
        probe = next(http.auth.sync_auth_flow(httpx.Request("GET", "http://redaction.invalid/")))
        headers.append(probe.headers.get("Authorization"))
    for header in headers:
        if not header:
            continue
        scheme, _, credential = header.partition(" ")
        secrets.update((header, credential))
        if scheme.lower() == "basic":
            try:
                user_pass = base64.b64decode(credential, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                continue
            secrets.update((user_pass, user_pass.partition(":")[2]))
    if http.base_url.password:
        secrets.add(http.base_url.password)
    return tuple(sorted((s for s in secrets if s), key=len, reverse=True))


class LokiClient:
    """Queries Loki over one ``httpx.AsyncClient``; raises nothing but ``SourceError``."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        keys: LabelKeys,
        pattern: str,
        levels: Sequence[str] = DEFAULT_ERROR_LEVELS,
        match: str = MATCH_PATTERN,
        max_attempts: int = 3,
        backoff: Backoff = Backoff(base=0.25, cap=2.0),
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._keys = keys
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._secrets = _known_secrets(http)
        # Kinds of skipped samples already logged: a broken series would otherwise log every tick.
        self._reported_skips: set[str] = set()
        if match not in (MATCH_AUTO, MATCH_LEVEL, MATCH_PATTERN):
            raise ValueError(f"match must be auto, level or pattern, not {match!r}")
        if isinstance(levels, str):
            raise TypeError("levels must be a sequence of level names, not a single str")
        self._by_level = ErrorMatch(pattern, tuple(levels))
        if not self._by_level.by_level and match != MATCH_PATTERN:
            raise ValueError("matching by level needs at least one level")
        self._by_pattern = ErrorMatch(pattern)
        # auto: decided by Loki's version, asked once (see error_match).
        self._match: ErrorMatch | None = {
            MATCH_LEVEL: self._by_level, MATCH_PATTERN: self._by_pattern
        }.get(match)
        self._deciding = asyncio.Lock()
        self._levels_absent_reported = False

    async def error_match(self) -> ErrorMatch:
        """The rule in force: fixed by ERROR_MATCH, or in auto mode by Loki's version, asked once.

        Loki before 3.0 has no detected_level: the pattern alone. Otherwise, and when the version
        cannot be read (a gateway that does not route the status API), the level-aware rule, which
        is correct on a Loki without levels as well. A transient failure decides nothing: the next
        call asks again.
        """
        if self._match is not None:
            return self._match
        async with self._deciding:
            if self._match is not None:
                return self._match
            try:
                body = await self._get_json_once(BUILDINFO_PATH, {})
            except SourceError as error:
                if error.retryable:
                    log.debug("loki_version_unavailable", reason=error.reason)
                    return self._by_level
                version = None
                reason = f"the version could not be read ({error.reason})"
            else:
                version = body.get("version") if isinstance(body, dict) else None
                version = version[:40] if isinstance(version, str) else None
                reason = "reported by /loki/api/v1/status/buildinfo" if version else \
                    "/loki/api/v1/status/buildinfo named no version"
            major = major_version(version)
            if major is not None and major < FIRST_VERSION_WITH_LEVELS:
                self._match = self._by_pattern
                log.info(
                    "loki_error_match", match=MATCH_PATTERN, loki_version=version,
                    note="Loki before 3.0 has no detected_level: error lines are the lines "
                         "matching ERROR_PATTERN",
                )
            else:
                self._match = self._by_level
                log.info(
                    "loki_error_match", match=MATCH_LEVEL, loki_version=version, why=reason,
                    levels=list(self._by_level.levels),
                    note="error lines are lines at ERROR_LEVELS; ERROR_PATTERN judges only "
                         "lines whose level Loki did not detect",
                )
            return self._match

    async def count_errors(
        self,
        *,
        namespace: str,
        workloads: Sequence[str] | None,
        window_seconds: int,
        at: datetime | None = None,
    ) -> ErrorCounts:
        """Error lines per (workload, pod) over the window ending now, or at ``at``.

        With ``at``, the window is ``[at - window, at)``: Loki counts the lines of
        ``(time - range, time]``, so ``time`` is sent one nanosecond before ``at``. That is the
        range ``sample_errors`` reads up to ``end=at`` (Loki's ``end`` is exclusive), so the lines
        counted at an instant are the lines that can be sampled up to it, whatever Loki's own
        clock says and whenever they were pushed.
        """
        match = await self.error_match()
        params = {
            "query": error_count_query(
                namespace=namespace,
                workloads=workloads,
                pattern=match.pattern,
                levels=match.levels,
                window_seconds=window_seconds,
                keys=self._keys,
            )
        }
        if at is not None:
            params["time"] = str(int(unix_nanos(at)) - 1)
        body = await self._get_json(QUERY_PATH, params)
        counts, skipped, levels_seen = read_vector(
            body, namespace=namespace, window_seconds=window_seconds, keys=self._keys
        )
        self._report_skipped(skipped)
        if match.by_level and counts.samples and not levels_seen:
            self._report_levels_absent()
        return counts

    async def count_windows(
        self, *, namespace: str, windows: Sequence[CountWindow], at: datetime
    ) -> WindowCounts:
        """Every window's error lines in ONE metric query made at ``at`` (``windows_query``);
        a window ending at ``at`` (offset 0) covers ``[at - seconds, at)``, as ``count_errors``
        with ``at`` does."""
        match = await self.error_match()
        params = {
            "query": windows_query(namespace=namespace, windows=windows, match=match,
                                   keys=self._keys),
            "time": str(int(unix_nanos(at)) - 1),
        }
        body = await self._get_json(QUERY_PATH, params)
        counts, levels, skipped = read_windows(body, namespace=namespace, windows=windows,
                                                keys=self._keys)
        self._report_skipped(skipped)
        if match.by_level and any(c.samples for c in counts.values()) and \
                not any(level for found in levels.values() for level in found):
            self._report_levels_absent()
        return WindowCounts(counts, levels)

    async def sample_errors(
        self,
        *,
        namespace: str,
        workloads: Sequence[str] | None,
        start: datetime,
        end: datetime,
        limit: int = 200,
        legs: Collection[str] | None = None,
    ) -> tuple[LogLine, ...]:
        """Up to ``limit`` error lines of ``[start, end)``, newest first. ``legs``: only those
        legs of ``error_lines_queries`` (``WindowCounts.legs`` says which have lines); None:
        every leg."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        match = await self.error_match()
        queries = error_lines_queries(
            namespace=namespace, workloads=workloads, match=match, keys=self._keys
        )
        if legs is not None:
            names = (LEG_LEVEL, LEG_PATTERN) if match.by_level else (LEG_PATTERN,)
            queries = tuple(q for q, name in zip(queries, names) if name in legs)
            if not queries:
                return ()
        window = {"start": unix_nanos(start), "end": unix_nanos(end)}

        async def newest(query: str) -> tuple[LogLine, ...]:
            params = {"query": query, **window, "limit": str(limit), "direction": "backward"}
            body = await self._get_json(QUERY_RANGE_PATH, params)
            lines, skipped = read_streams(body, keys=self._keys)
            self._report_skipped(skipped)
            return lines

        # The legs select disjoint lines (different detected_level): the newest ``limit`` of
        # their union are among the newest ``limit`` of each.
        answers = await asyncio.gather(*(newest(q) for q in queries), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        merged = [line for answer in answers for line in answer]
        merged.sort(key=lambda line: line.at, reverse=True)
        return tuple(merged[:limit])

    async def _get_json(self, path: str, params: dict[str, str]) -> Any:
        async def attempt() -> Any:
            return await self._get_json_once(path, params)

        return await call_with_retries(
            attempt,
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            sleep=self._sleep,
            on_retry=self._log_retry,
        )

    async def _get_json_once(self, path: str, params: dict[str, str]) -> Any:
        # "from None" everywhere: the transport's own exception may quote a URL or a header.
        try:
            response = await self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            message = f"no answer in time ({type(exc).__name__})"
            raise self._error("timeout", message, True) from None
        except httpx.DecodingError as exc:
            raise self._error("malformed", f"undecodable body: {exc}", False) from None
        except httpx.RequestError as exc:
            raise self._error("connection", f"{type(exc).__name__}: {exc}", True) from None
        status = response.status_code
        if not 200 <= status < 300:
            text = response.text.strip()[:MAX_ERROR_TEXT_CHARS] or f"HTTP {status}"
            retryable = retryable_status(status)
            retry_after = None
            if retryable:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self._error(
                f"http_{status}", text, retryable, status=status, retry_after=retry_after
            )
        try:
            return response.json()
        except (ValueError, RecursionError):
            content_type = response.headers.get("Content-Type", "no content type")
            raise self._error(
                "malformed", f"body is not JSON ({content_type})", False, status=status
            ) from None

    def _error(
        self,
        reason: str,
        message: str,
        retryable: bool,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> SourceError:
        return SourceError(
            SOURCE,
            reason,
            self._redact(message),
            retryable=retryable,
            retry_after=retry_after,
            status=status,
        )

    def _redact(self, text: str) -> str:
        # Text we did not write ourselves (an exception from the transport, a proxy's error
        # page): our own secrets wherever they stand, then anything credential-shaped.
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact(text)

    def _log_retry(self, error: SourceError, failures: int, wait: float) -> None:
        log.debug(
            "loki_retry", reason=error.reason, status=error.status, failures=failures,
            wait_seconds=round(wait, 3),
        )

    def _report_levels_absent(self) -> None:
        if self._levels_absent_reported:
            return
        self._levels_absent_reported = True
        log.info(
            "loki_levels_absent",
            note="Loki answered without detected_level (discover_log_levels off, or lines "
                 "ingested before Loki 3): those lines are judged by ERROR_PATTERN",
        )

    def _report_skipped(self, skipped: tuple[Skipped, ...]) -> None:
        for item in skipped:
            if item.kind in self._reported_skips:
                continue
            self._reported_skips.add(item.kind)
            log.warning(
                "loki_sample_skipped",
                kind=item.kind,
                workload=item.workload,
                pod=item.pod,
                value=item.value,
                note="logged once per kind",
            )


# What the adapter offers, LogQL and the reading of answers included: one import for callers.
__all__ = ["ANY_VALUE_REGEX", "BUILDINFO_PATH", "CountWindow", "DETECTED_LEVEL", "error_count_query", "error_lines_queries", "error_lines_query", "ErrorMatch", "FIRST_VERSION_WITH_LEVELS", "LabelKeys", "LEG_LEVEL", "LEG_PATTERN", "LokiClient", "make_http_client", "MATCH_AUTO", "MATCH_LEVEL", "MATCH_PATTERN", "MAX_ERROR_TEXT_CHARS", "MAX_LINE_CHARS", "ORG_ID_HEADER", "PACKAGE_NAME", "parse_streams", "parse_vector", "parse_windows", "QUERY_PATH", "QUERY_RANGE_PATH", "quote", "regex_escape", "selector", "SOURCE", "UNDETECTED_LEVELS", "unix_nanos", "WINDOW_LABEL", "WindowCounts", "windows_query"]
