"""The outbox against a real PostgreSQL that goes away between a send and its record."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from incident_detector.run.health import Sources
from incident_detector.run.metrics import DetectorMetrics
from incident_detector.run.outbox import CHANNEL_SLACK, CHANNEL_STDOUT, Outbox, StdoutSink
from incident_detector.store.db import StoreUnavailable
from incident_detector.store.records import Store

NOW = datetime(2026, 11, 3, 18, 0, tzinfo=timezone.utc)
KEY = ("shop", "checkout", 2, "0c5f1e52-7d1c-4a8e-9a43-3f0d8f4f6b21")


class StopsTheDatabase:
    """A Slack sender whose message gets through while the database stops under it."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.sent: list[dict[str, Any]] = []

    async def send(self, payload: dict[str, Any]) -> None:
        self.sent.append(payload)
        if len(self.sent) == 1:
            self.server.stop()


def wait_until_it_answers(store: Store, timeout: float = 60.0) -> None:
    """The store reconnects on its own schedule (capped backoff) once the server is back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.ping()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_message_sent_while_the_store_went_away_is_recorded_not_sent_again(
        pg_url, postgres_server):
    store = Store(pg_url, owner="detector-a")
    slack = StopsTheDatabase(postgres_server)
    stdout = io.StringIO()
    metrics = DetectorMetrics()
    outbox = Outbox(store=store, stdout=StdoutSink(stdout), slack=slack, events=None,
                    sources=Sources(("slack", "event", "store"), metrics=metrics),
                    metrics=metrics, clock=lambda: NOW + timedelta(seconds=1),
                    is_leader=lambda: True, max_age=timedelta(hours=1))
    assert store.record_incident(key=KEY, replicaset="checkout-7d9f", detected_at=NOW,
                                 record={"event": "incident"},
                                 deliveries=[(CHANNEL_STDOUT, {"event": "incident"}),
                                             (CHANNEL_SLACK, {"text": "checkout broke"})])
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(outbox.deliver_due())  # sent; its record could not be written
    finally:
        postgres_server.start()

    wait_until_it_answers(store)
    asyncio.run(outbox.deliver_due())
    asyncio.run(outbox.deliver_due())
    assert slack.sent == [{"text": "checkout broke"}]
    assert stdout.getvalue().count('"incident"') == 1
    assert store.outbox.due(NOW + timedelta(days=1)) == []
    store.close()
