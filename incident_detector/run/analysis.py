"""The LLM analysis of an incident, in the background: never on the tick's path.

``Analyst.analyse_later(key, record)`` is called once an incident is recorded (its stdout line
and its Slack row are already written) and returns at once: a background task builds the
redacted evidence (``judge.analysis``), asks the endpoint (``sources.llm``) within
``LLM_TIMEOUT_SECONDS`` and then, in this order:

1. writes one audit row (who ``llm``, action ``analysis``, the Deployment as target, the outcome
   ok/timeout/error/invalid as decision; the reason names the model, the prompt's sha256, the
   tokens and the latency; the result holds the suggested action and confidence, or the error);
2. writes one ``{"event": "analysis", ...}`` line on stdout;
3. keeps the result in memory, for ``/status`` and the incident API (``analysis_for(key)``);
4. for a successful analysis only, sends the follow-up to Slack: a reply in the incident's
   thread with a bot token, a second message with a webhook. It waits for the incident's own
   Slack message to be delivered first (the outbox row), so that the reply has a thread to go
   to; a failed analysis is in the JSON line and on /status, never a Slack message.

A failure is never retried (the next incident is analysed afresh). At most ``max_concurrent``
calls run at once; further incidents wait their turn, and beyond ``max_waiting`` they are
skipped (logged, shown on /status): a burst of incidents must not pile up calls that would all
arrive too late to matter. Results live in this process only: after a restart an incident's
analysis is gone, and an incident is not analysed again.

``advice(key, timeout)`` lets the remediator wait (bounded) for an incident's analysis before an
automatic action, and ``judge.analysis.lower`` then applies it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from ..errors import SourceError
from ..judge.analysis import (
    ERROR,
    INVALID,
    OK,
    TIMEOUT,
    TRUNCATED,
    Analysis,
    AnalysisResult,
    AnswerError,
    Prompt,
    evidence_for_llm,
    parse_answer,
    response_format,
)
from ..judge.placeholders import Redactor
from ..notify import analysis_render
from ..notify.slack import THREAD_KEY, thread_key
from ..sources.llm import LlmAnswer, LlmError
from ..store.journal import Journal

log = structlog.get_logger("incident_detector")

WHO = "llm"
ACTION = "analysis"
CHANNEL_SLACK = "slack"  # the outbox's channel name (run.outbox.CHANNEL_SLACK)
# How long a follow-up waits for the incident's own Slack message, and how often it looks.
SLACK_WAIT_SECONDS = 120.0
SLACK_POLL_SECONDS = 0.5

Clock = Callable[[], datetime]
IncidentKey = tuple[Any, ...] | str


class Client(Protocol):
    model: str

    async def analyse(self, messages: Sequence[dict[str, str]], *,
                      schema: dict[str, Any]) -> LlmAnswer: ...


class Writer(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...


class Sender(Protocol):
    async def send(self, payload: dict[str, Any]) -> None: ...


class PendingChannels(Protocol):
    def pending_channels(self, key: tuple[str, str, int, str]) -> set[str]: ...


def key_text(key: IncidentKey) -> str:
    """An incident's key as text: the name of its Slack thread (a notice's key already is)."""
    return key if isinstance(key, str) else thread_key(key)


class Analyst:
    def __init__(self, *, client: Client, prompt: Prompt, allowed_actions: Sequence[str],
                 timeout: float, max_evidence_chars: int, journal: Journal, stdout: Writer,
                 clock: Clock, slack: Sender | None = None,
                 outbox_store: PendingChannels | None = None, max_concurrent: int = 2,
                 max_waiting: int = 20, keep: int = 100,
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 slack_wait_seconds: float = SLACK_WAIT_SECONDS,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.prompt = prompt
        self.allowed_actions = tuple(allowed_actions)
        self.timeout = timeout
        self.max_evidence_chars = max_evidence_chars
        self.journal = journal
        self.stdout = stdout
        self.clock = clock
        self.slack = slack
        # Where the incident's own Slack row is seen delivered (the store's outbox).
        self.outbox_store = outbox_store
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.keep = keep
        self.on_result = on_result
        self.slack_wait_seconds = slack_wait_seconds
        self.timer = timer
        self._slots = asyncio.Semaphore(max_concurrent)
        self.running: set[asyncio.Task[None]] = set()
        # One future per incident analysed (or awaited by ``advice``), the newest last.
        self._results: OrderedDict[str, asyncio.Future[AnalysisResult]] = OrderedDict()
        # Keys whose analysis was started (a future may exist before: an ``advice`` waiting).
        self._started: set[str] = set()
        self.skipped = 0
        self.slack_failures = 0

    # Starting ----------------------------------------------------------------------------

    def analyse_later(self, incident_key: IncidentKey, record: dict[str, Any]) -> None:
        """Start the analysis of a recorded incident in the background; returns at once.
        Once per incident: a second call for the same key does nothing."""
        key = key_text(incident_key)
        if key in self._started:
            return
        if len(self.running) >= self.max_concurrent + self.max_waiting:
            self.skipped += 1
            log.warning("analysis.skipped", key=key, running=len(self.running),
                        why="too many analyses waiting")
            return
        self._future(key)
        self._started.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, dict(record)),
                                                      name=f"analysis {key}")
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    def _future(self, key: str) -> asyncio.Future[AnalysisResult]:
        future = self._results.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._results[key] = future
            while len(self._results) > self.keep:
                oldest, old = next(iter(self._results.items()))
                if not old.done() and oldest in self._started:
                    break  # still running: kept until it finishes
                self._results.pop(oldest)
                self._started.discard(oldest)
                if not old.done():
                    old.cancel()  # an ``advice`` waiting for it gets None
        return future

    # Reading -----------------------------------------------------------------------------

    def result_for(self, incident_key: IncidentKey) -> AnalysisResult | None:
        future = self._results.get(key_text(incident_key))
        if future is None or not future.done() or future.cancelled():
            return None
        return future.result()

    def analysis_for(self, incident_key: IncidentKey) -> dict[str, Any] | None:
        """The incident's analysis as the API shows it; None when there is none (yet)."""
        result = self.result_for(incident_key)
        return None if result is None else result.as_dict()

    def asked(self, incident_key: IncidentKey) -> bool:
        """Whether an analysis of the incident was started (and is still remembered)."""
        return key_text(incident_key) in self._started

    async def advice(self, incident_key: IncidentKey, timeout: float) -> Analysis | None:
        """The incident's analysis, waiting at most ``timeout`` seconds for it; None when it
        failed, was not asked for within that time, or did not arrive in time."""
        future = self._future(key_text(incident_key))
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout=max(timeout, 0))
        except asyncio.TimeoutError:
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and (task is None or not task.cancelling()):
                return None  # the analysis was dropped (shutdown, or evicted from memory)
            raise
        return result.analysis

    def status(self) -> dict[str, Any]:
        recent = [f.result().as_dict() for f in reversed(self._results.values())
                  if f.done() and not f.cancelled()][:20]
        return {"enabled": True, "model": self.client.model, "prompt": self.prompt.source,
                "prompt_sha256": self.prompt.sha256, "timeout_seconds": self.timeout,
                "running": len(self.running), "skipped": self.skipped,
                "slack_failures": self.slack_failures, "recent": recent}

    async def close(self, timeout: float = 5.0) -> None:
        """Let running analyses finish for a moment, then cancel the rest."""
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # One analysis ------------------------------------------------------------------------

    async def _run(self, key: str, record: dict[str, Any]) -> None:
        future = self._results.get(key)
        try:
            async with self._slots:
                result = await self._analyse(key, record)
        except asyncio.CancelledError:
            if future is not None and not future.done():
                future.cancel()
            raise
        except Exception as exc:  # a bug here must not go unseen, nor take the loop down
            log.exception("analysis.crashed", key=key)
            result = self._result(key, record, outcome=ERROR,
                                  error=f"internal: {type(exc).__name__}")
        self._record(result)
        if future is not None and not future.done():
            future.set_result(result)
        if result.analysis is not None:
            await self._follow_up(key, record, result)

    async def _analyse(self, key: str, record: dict[str, Any]) -> AnalysisResult:
        redactor = Redactor()  # the placeholders' mapping stays here, and dies with the call
        # Redacting a large record is a few milliseconds of regular expressions: off the loop.
        evidence = await asyncio.to_thread(evidence_for_llm, record,
                                           max_chars=self.max_evidence_chars, redactor=redactor)
        messages = self.prompt.messages(evidence, self.allowed_actions)
        details = {"evidence_chars": len(evidence),
                   "truncated": bool(json.loads(evidence).get(TRUNCATED)),
                   "request_sha256": request_sha256(messages)}
        started = self.timer()
        try:
            answer = await asyncio.wait_for(
                self.client.analyse(messages, schema=response_format(self.allowed_actions)),
                timeout=self.timeout)
        except asyncio.TimeoutError:
            return self._result(key, record, outcome=TIMEOUT,
                                error=f"timeout: no answer within LLM_TIMEOUT_SECONDS "
                                      f"({self.timeout:g} s)",
                                latency_ms=_ms(self.timer() - started), **details)
        except LlmError as exc:
            return self._result(key, record, outcome=TIMEOUT if exc.reason == "timeout"
                                else ERROR, error=f"{exc.reason}: {exc.message}",
                                latency_ms=_ms(self.timer() - started), **details)
        usage = {"model": answer.model, "prompt_tokens": answer.prompt_tokens,
                 "completion_tokens": answer.completion_tokens,
                 "latency_ms": _ms(answer.latency_seconds),
                 "response_format": answer.response_format, **details}
        try:
            analysis = parse_answer(answer.content, self.allowed_actions)
        except AnswerError as exc:
            return self._result(key, record, outcome=INVALID, error=str(exc), **usage)
        return self._result(key, record, outcome=OK, analysis=analysis, **usage)

    def _result(self, key: str, record: dict[str, Any], *, outcome: str,
                analysis: Analysis | None = None, error: str | None = None,
                model: str | None = None, **details: Any) -> AnalysisResult:
        revision = record.get("revision")
        return AnalysisResult(
            key=key, kind=record.get("kind"), namespace=str(record.get("namespace") or ""),
            deployment=str(record.get("deployment") or ""),
            revision=revision if isinstance(revision, int) and revision > 0 else None,
            outcome=outcome, at=self.clock(), model=model or self.client.model,
            prompt_sha256=self.prompt.sha256, prompt_source=self.prompt.source,
            analysis=analysis, error=error, **details)

    def _record(self, result: AnalysisResult) -> None:
        """The audit row, the stdout line, the log line, the live feed."""
        tokens = (f"{_or_unknown(result.prompt_tokens)} prompt + "
                  f"{_or_unknown(result.completion_tokens)} completion tokens")
        reason = (f"model {result.model}, prompt sha256 {result.prompt_sha256[:16]}, request "
                  f"sha256 {(result.request_sha256 or '?')[:16]}, {tokens}, "
                  f"latency {_or_unknown(result.latency_ms)} ms, evidence "
                  f"{result.evidence_chars} chars{' (truncated)' if result.truncated else ''}; "
                  f"incident {result.key}")
        if result.analysis is not None:
            outcome = (f"{result.analysis.suggested_action} "
                       f"(confidence {result.analysis.confidence:.2f})")
        else:
            outcome = (result.error or result.outcome)[:300]
        try:
            self.journal.audit(at=result.at, who=WHO, action=ACTION,
                               target=f"{result.namespace}/{result.deployment}",
                               decision=result.outcome, reason=reason, dry_run=False,
                               result=outcome)
        except Exception:  # the store failing must not lose the stdout line
            log.exception("analysis.audit_failed", key=result.key)
        record = analysis_render.analysis_record(result)
        self.stdout.write(record)
        if result.outcome == OK:
            log.info("analysis.done", key=result.key, model=result.model,
                     latency_ms=result.latency_ms)
        else:
            log.warning("analysis.failed", key=result.key, outcome=result.outcome,
                        error=result.error)
        if self.on_result is not None:
            self.on_result(record)

    async def _follow_up(self, key: str, record: dict[str, Any], result: AnalysisResult) -> None:
        if self.slack is None:
            return
        payload = analysis_render.slack_payload(result)
        if payload is None:
            return
        if not await self._incident_message_sent(key, record):
            log.warning("analysis.slack_skipped", key=key,
                        why="the incident's own Slack message was not sent in time")
            return
        try:
            await self.slack.send({**payload, THREAD_KEY: key})
        except SourceError as exc:
            self.slack_failures += 1
            log.warning("analysis.slack_failed", key=key, reason=exc.reason)

    async def _incident_message_sent(self, key: str, record: dict[str, Any]) -> bool:
        """Whether the incident's Slack row is done with (delivered or given up), waiting a
        little for it: the reply must not go out before the message it replies to."""
        if self.outbox_store is None:
            return True
        row_key = _outbox_key(key, record)
        if row_key is None:
            return True
        deadline = self.timer() + self.slack_wait_seconds
        while CHANNEL_SLACK in self.outbox_store.pending_channels(row_key):
            if self.timer() >= deadline:
                return False
            await asyncio.sleep(SLACK_POLL_SECONDS)
        return True


def _outbox_key(key: str, record: dict[str, Any]) -> tuple[str, str, int, str] | None:
    """The incident's outbox key: (namespace, deployment, revision, uid) for a rollout
    incident, (namespace, deployment, 0, key) for a notice (store.record_notice)."""
    namespace, deployment = record.get("namespace"), record.get("deployment")
    if not isinstance(namespace, str) or not isinstance(deployment, str):
        return None
    if record.get("kind") in (None, "rollout"):
        revision = record.get("revision")
        if not isinstance(revision, int):
            return None
        return (namespace, deployment, revision, str(record.get("deployment_uid") or ""))
    return (namespace, deployment, 0, key)


def _ms(seconds: float) -> int:
    return int(round(max(seconds, 0.0) * 1000))


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def request_sha256(messages: Sequence[dict[str, str]]) -> str:
    """The sha256 of the exact messages sent: two calls with the same hash asked the same."""
    return hashlib.sha256(json.dumps(list(messages), sort_keys=True).encode()).hexdigest()
