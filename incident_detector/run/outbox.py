"""The outbox: an incident is recorded with one row per channel before anything is sent, and a
worker sends the rows that are due, retrying with capped backoff across ticks and restarts.

stdout is written by the tick itself (it cannot fail in a way a retry would fix); Slack and the
Kubernetes Event by the worker, the Event only once Slack is done with the incident (see
``REMOTE_CHANNELS``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO

import structlog

from ..errors import SourceError
from ..model import Incident
from ..notify import render
from ..notify.slack import THREAD_KEY, thread_key
from ..retry import Backoff, run_passes
from .health import Sources
from .metrics import DetectorMetrics
from ..store.db import StoreUnavailable
from ..store.outbox import OutboxItem
from ..store.records import Store

log = structlog.get_logger("incident_detector")

CHANNEL_STDOUT = "stdout"
CHANNEL_SLACK = "slack"
CHANNEL_EVENT = "event"
# Channels sent by the outbox worker, in this order. The Event is the cross-replica record that
# an incident was notified, so it goes out only once Slack is done with (delivered or given up):
# a replica that dies before Slack succeeds leaves no Event, and its successor notifies instead.
REMOTE_CHANNELS = (CHANNEL_SLACK, CHANNEL_EVENT)
# How long the worker sleeps when nothing wakes it: retry times come due on their own.
IDLE_SECONDS = 1.0

Clock = Callable[[], datetime]


class Sender(Protocol):
    async def send(self, payload: dict[str, Any]) -> None: ...


class EventSink(Sender, Protocol):
    def body_for(self, *, incident_record: dict[str, Any], note: str) -> dict[str, Any]: ...
    async def notified_revisions(self, namespace: str) -> list[Any]: ...


class StdoutSink:
    """Writes each incident as one JSON object on one line: what `kubectl logs` shows."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.stream.flush()


class Outbox:
    def __init__(
        self,
        *,
        store: Store,
        stdout: StdoutSink,
        slack: Sender | None,
        events: EventSink | None,
        sources: Sources,
        metrics: DetectorMetrics,
        clock: Clock,
        is_leader: Callable[[], bool],
        max_age: timedelta,
        backoff: Backoff = Backoff(base=2.0, cap=300.0),
        on_notice: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.stdout = stdout
        self.slack = slack
        self.events = events
        self.sources = sources
        self.metrics = metrics
        self.clock = clock
        self.is_leader = is_leader
        self.max_age = max_age
        self.backoff = backoff
        self.wakeup = asyncio.Event()
        # Told of each notice recorded (the dashboard's live feed).
        self.on_notice = on_notice
        # Rows sent whose delivery the store could not record (it went away between the send
        # and the write): recorded first thing once it answers, and never sent again meanwhile.
        self._sent_unrecorded: dict[int, datetime] = {}

    def record(self, incident: Incident) -> bool:
        """Store the incident with its deliveries, in one transaction; False if already known."""
        record = render.incident_record(incident)
        deliveries: list[tuple[str, dict[str, Any]]] = [(CHANNEL_STDOUT, record)]
        if self.slack is not None:
            # Named by its thread: a bot token's follow-ups reply to it (notify.slack_bot).
            deliveries.append((CHANNEL_SLACK, {**render.slack_payload(incident),
                                               THREAD_KEY: thread_key(incident.key)}))
        if self.events is not None:
            deliveries.append((CHANNEL_EVENT, self.events.body_for(
                incident_record=record, note=render.event_note(incident))))
        stored = self.store.record_incident(key=incident.key, replicaset=incident.replicaset,
                                            replicaset_uid=incident.replicaset_uid,
                                            detected_at=incident.detected_at, record=record,
                                            deliveries=deliveries)
        if stored:
            self.metrics.incident_recorded(s.value for s in incident.signals)
            log.warning("incident.detected", namespace=incident.namespace,
                        deployment=incident.deployment, revision=incident.revision,
                        signals=[s.value for s in incident.signals])
        return stored

    def record_notice(self, *, key: str, kind: str, namespace: str, deployment: str,
                      detected_at: datetime, record: dict[str, Any],
                      slack_payload: dict[str, Any] | None) -> bool:
        """Store a notice (an alert incident, an error group) with its deliveries: stdout and
        Slack, no Event (Events are the record of rollout incidents); False if already known."""
        stored = self.store.record_notice(
            key=key, kind=kind, namespace=namespace, deployment=deployment,
            detected_at=detected_at, record=record,
            deliveries=self._notice_deliveries(key, record, slack_payload))
        if stored:
            self.metrics.notice_recorded(kind, record.get("priority"))
            if self.on_notice is not None:
                self.on_notice(key, record)
            self.wakeup.set()
        return stored

    def close_notice(self, *, key: str, closed_at: datetime, record: dict[str, Any],
                     text: str) -> bool:
        """Close a notice with one follow-up (a reply in its Slack thread); once."""
        closed = self.store.close_notice(
            key=key, closed_at=closed_at, record=record,
            deliveries=self._notice_deliveries(key, record, {"text": text}))
        if closed:
            self.wakeup.set()
        return closed

    def _notice_deliveries(self, key: str, record: dict[str, Any],
                           slack_payload: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
        deliveries: list[tuple[str, dict[str, Any]]] = [(CHANNEL_STDOUT, record)]
        if self.slack is not None and slack_payload is not None:
            deliveries.append((CHANNEL_SLACK, {**slack_payload, THREAD_KEY: key}))
        return deliveries

    def _delivered(self, item_id: int, at: datetime) -> None:
        """Record a delivery. Should the store not answer, the send is remembered and recorded
        by ``_record_sent`` before any row is read again: a row still due in the database but
        already sent is not sent twice by this process."""
        self._sent_unrecorded[item_id] = at
        self.store.outbox.mark_delivered(item_id, at)
        del self._sent_unrecorded[item_id]

    def _record_sent(self) -> None:
        for item_id, at in list(self._sent_unrecorded.items()):
            self.store.outbox.mark_delivered(item_id, at)
            del self._sent_unrecorded[item_id]
            log.info("notify.delivery_recorded", outbox_id=item_id,
                     why="sent while the store was unavailable")

    def deliver_stdout(self) -> None:
        self._record_sent()
        for item in self.store.outbox.due(self.clock(), channels=[CHANNEL_STDOUT]):
            if not self.store.outbox.claim(item.id, self.clock()):
                continue  # another replica on the same database writes it
            self.stdout.write(item.payload)
            self._delivered(item.id, self.clock())

    async def deliver_due(self) -> int:
        """Send every outbox row that is due (leader only). Returns how many were delivered."""
        if not self.is_leader():
            return 0
        self.deliver_stdout()
        delivered = 0
        for channel in REMOTE_CHANNELS:
            for item in self.store.outbox.due(self.clock(), channels=[channel]):
                if channel == CHANNEL_EVENT and CHANNEL_SLACK in self.store.outbox.pending_channels(item.key):
                    continue  # the Event waits for Slack (see REMOTE_CHANNELS)
                if await self._deliver(item):
                    delivered += 1
        return delivered

    async def _deliver(self, item: OutboxItem) -> bool:
        now = self.clock()
        if not self.store.outbox.claim(item.id, now):
            return False  # another replica on the same database sends it
        sender = {CHANNEL_SLACK: self.slack, CHANNEL_EVENT: self.events}.get(item.channel)
        if sender is None:
            self.store.outbox.mark_given_up(item.id, now=now, error=f"{item.channel} is not configured")
            return False
        self.metrics.source_called(item.channel)
        try:
            await sender.send(item.payload)
        except SourceError as exc:
            self.metrics.source_failed(item.channel, exc.reason)
            self.sources[item.channel].failed(now, exc)
            too_old = now - item.created_at >= self.max_age
            if not exc.retryable or too_old:
                self.store.outbox.mark_given_up(item.id, now=now, error=f"{exc.reason}: {exc.message}")
                log.error("notify.given_up", channel=item.channel, namespace=item.key[0],
                          deployment=item.key[1], revision=item.key[2], reason=exc.reason,
                          error=exc.message, attempts=item.attempts + 1,
                          why="not retryable" if not exc.retryable else "too old")
            else:
                wait = exc.retry_after or self.backoff.delay(item.attempts + 1)
                self.store.outbox.mark_failed(item.id, now=now, error=f"{exc.reason}: {exc.message}",
                                       retry_at=now + timedelta(seconds=wait))
            return False
        self._delivered(item.id, self.clock())
        self.sources[item.channel].succeeded(now)
        log.info("notify.delivered", channel=item.channel, namespace=item.key[0],
                 deployment=item.key[1], revision=item.key[2], attempts=item.attempts + 1)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due notifications; wake on new incidents, on retry times and on stop."""
        def failed(exc: Exception) -> None:
            if isinstance(exc, StoreUnavailable):
                # The rows wait in the database; the tick reports the store's state.
                self.sources["store"].failed(self.clock(), exc)
            else:
                log.exception("outbox.crashed")

        await run_passes(self.deliver_due, wakeup=self.wakeup, stop=stop,
                         idle=lambda: IDLE_SECONDS, on_error=failed)
