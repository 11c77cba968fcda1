"""Prometheus metrics of one detector, served on ``GET /metrics``.

Each ``Detector`` owns a ``DetectorMetrics`` with its own ``CollectorRegistry``: nothing is
registered in prometheus_client's global registry, so tests (and a process that builds several
detectors) never collide on metric names. Counters are incremented by the loop as things happen;
the state of the outbox and of leadership is read at scrape time, so a scrape always shows what
the store and the elector say now, including rows carried over from before a restart.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..model import Priority, Signal
from ..store.db import StoreUnavailable

PREFIX = "incident_detector"
SOURCES = ("kubernetes", "loki", "slack", "event")
ROLES = ("leader", "standby")
OUTBOX_STATES = ("pending", "delivered", "given_up")
# A tick is a handful of requests: tens of milliseconds when all is well, up to the sources'
# timeouts (seconds) when one hangs.
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OutboxSummaryLike(Protocol):
    pending: int
    delivered: int
    given_up: tuple


class OutboxReader(Protocol):
    def summary(self, limit: int = ...) -> OutboxSummaryLike: ...


class DetectorMetrics:
    """The counters the loop updates, plus scrape-time gauges once ``read_state_from`` is called."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ticks = Counter(
            f"{PREFIX}_ticks", "Ticks run, by role and by whether every source answered.",
            ["role", "outcome"], registry=self.registry)
        self.tick_duration = Histogram(
            f"{PREFIX}_tick_duration_seconds", "Wall-clock duration of one tick.",
            ["role"], buckets=TICK_BUCKETS, registry=self.registry)
        self.source_requests = Counter(
            f"{PREFIX}_source_requests",
            "Calls made to a dependency (a list, a query, a message), not skips while backing off.",
            ["source"], registry=self.registry)
        self.source_failures = Counter(
            f"{PREFIX}_source_failures",
            "Calls to a dependency that failed, by the error's reason.",
            ["source", "reason"], registry=self.registry)
        self.incidents = Counter(
            f"{PREFIX}_incidents",
            "Incidents recorded, by signal (an incident counts once under each of its signals).",
            ["signal"], registry=self.registry)
        self.notices = Counter(
            f"{PREFIX}_notices",
            "Incidents that are not about one revision (alert incidents, new error groups), "
            "by kind and priority.",
            ["kind", "priority"], registry=self.registry)
        self.changes = Counter(
            f"{PREFIX}_changes",
            "Changes recorded by the change timeline, by kind and action.",
            ["kind", "action"], registry=self.registry)
        self.fast_looks = Counter(
            f"{PREFIX}_fast_looks",
            "Fast looks at young rollouts between ticks, by whether every source answered.",
            ["outcome"], registry=self.registry)
        self.alerts_received = Counter(
            f"{PREFIX}_alerts_received",
            "Alerts taken in from Alertmanager's webhook, by status.",
            ["status"], registry=self.registry)
        # Every series a dashboard or an alert refers to exists from the first scrape, at zero.
        for role in ROLES:
            self.tick_duration.labels(role=role)
            for outcome in ("ok", "degraded"):
                self.ticks.labels(role=role, outcome=outcome)
        for source in SOURCES:
            self.source_requests.labels(source=source)
        for signal in Signal:
            self.incidents.labels(signal=signal.value)
        for kind in ("alert", "change", "error_group"):
            for priority in Priority:
                self.notices.labels(kind=kind, priority=priority.value)
        for status in ("firing", "resolved"):
            self.alerts_received.labels(status=status)
        for outcome in ("ok", "degraded"):
            self.fast_looks.labels(outcome=outcome)

    # Updated by the loop ---------------------------------------------------------------------

    def tick_finished(self, *, role: str, degraded: bool, duration_seconds: float) -> None:
        self.ticks.labels(role=role, outcome="degraded" if degraded else "ok").inc()
        self.tick_duration.labels(role=role).observe(duration_seconds)

    def fast_look_finished(self, *, degraded: bool) -> None:
        self.fast_looks.labels(outcome="degraded" if degraded else "ok").inc()

    def source_called(self, source: str) -> None:
        self.source_requests.labels(source=source).inc()

    def source_failed(self, source: str, reason: str) -> None:
        self.source_failures.labels(source=source, reason=reason).inc()

    def incident_recorded(self, signals: Iterable[str]) -> None:
        for signal in signals:
            self.incidents.labels(signal=signal).inc()

    def notice_recorded(self, kind: str, priority: str | None) -> None:
        self.notices.labels(kind=kind, priority=priority or "none").inc()

    def change_recorded(self, kind: str, action: str) -> None:
        self.changes.labels(kind=kind, action=action).inc()

    def alerts_taken_in(self, *, firing: int, resolved: int) -> None:
        self.alerts_received.labels(status="firing").inc(firing)
        self.alerts_received.labels(status="resolved").inc(resolved)

    # Read at scrape time ---------------------------------------------------------------------

    def read_state_from(self, *, outbox: OutboxReader, is_leader: Callable[[], bool]) -> None:
        self.registry.register(_StateCollector(outbox=outbox, is_leader=is_leader))

    def read_loki_queries_from(self, budget: QueryRates, *, namespaces: Iterable[str]) -> None:
        self.registry.register(_LokiQueriesCollector(budget=budget, namespaces=tuple(namespaces)))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape (OpenMetrics when the scraper asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class QueryRates(Protocol):
    per_minute: int
    totals: dict[str, int]

    def used(self, namespace: str) -> int: ...


class _LokiQueriesCollector(Collector):
    """The Loki queries each watched namespace cost, read from the budget at scrape time."""

    def __init__(self, *, budget: QueryRates, namespaces: tuple[str, ...]) -> None:
        self._budget = budget
        self._namespaces = namespaces

    def collect(self) -> Iterator[Metric]:
        rate = GaugeMetricFamily(
            f"{PREFIX}_loki_queries_last_minute",
            "Loki queries sent for a namespace in the last 60 seconds.", labels=["namespace"])
        total = CounterMetricFamily(
            f"{PREFIX}_loki_queries",
            "Loki queries sent for a namespace (counts, samples, retries).",
            labels=["namespace"])
        for namespace in self._namespaces:
            rate.add_metric([namespace], self._budget.used(namespace))
            total.add_metric([namespace], self._budget.totals.get(namespace, 0))
        yield rate
        yield total
        yield GaugeMetricFamily(
            f"{PREFIX}_loki_queries_per_minute_cap",
            "LOKI_MAX_QUERIES_PER_MINUTE: the fast lane's cap per namespace.",
            value=self._budget.per_minute)


STORE_UP_HELP = "1 while the store (SQLite file or PostgreSQL) answers, 0 while it does not."


class _StateCollector(Collector):
    def __init__(self, *, outbox: OutboxReader, is_leader: Callable[[], bool]) -> None:
        self._outbox = outbox
        self._is_leader = is_leader

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            f"{PREFIX}_leader",
            "1 while this replica is the leader (or election is off), 0 on standby.",
            value=1 if self._is_leader() else 0)
        # Every given-up row, not just the latest few that /status lists: they are rare.
        try:
            summary = self._outbox.summary(limit=sys.maxsize)
        except StoreUnavailable:
            yield GaugeMetricFamily(f"{PREFIX}_store_up", STORE_UP_HELP, value=0)
            return
        yield GaugeMetricFamily(f"{PREFIX}_store_up", STORE_UP_HELP, value=1)
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox_notifications",
            "Notifications in the outbox (persisted across restarts), by state.", labels=["state"])
        outbox.add_metric(["pending"], summary.pending)
        outbox.add_metric(["delivered"], summary.delivered)
        outbox.add_metric(["given_up"], len(summary.given_up))
        yield outbox
