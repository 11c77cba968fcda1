"""What a tick or a fast look reports (``TickReport``, read by /status), and the sources a
``Detector`` reads, as the loop sees them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ..judge.correlator import Assessment
from ..model import Deployment, ErrorCounts, LogLine, Pod, ReplicaSet
from ..sources.loki import CountWindow, WindowCounts
from .health import iso


class KubeSource(Protocol):
    async def list_deployments(self, namespace: str) -> tuple[Deployment, ...]: ...
    async def list_replicasets(self, namespace: str) -> tuple[ReplicaSet, ...]: ...
    async def list_pods(self, namespace: str, *,
                        template_hashes: Sequence[str] | None = None) -> tuple[Pod, ...]: ...


class LokiSource(Protocol):
    async def count_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                           window_seconds: int, at: datetime | None = None) -> ErrorCounts: ...
    async def count_windows(self, *, namespace: str, windows: Sequence[CountWindow],
                            at: datetime) -> WindowCounts: ...
    async def sample_errors(self, *, namespace: str, workloads: Sequence[str] | None,
                            start: datetime, end: datetime, limit: int = 200) -> tuple[LogLine, ...]: ...


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...
    def status(self) -> dict[str, Any]: ...


@dataclass
class TickReport:
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    # CPU time of the whole process (all threads) during the tick.
    cpu_seconds: float | None = None
    degraded: bool = False
    problems: list[str] = field(default_factory=list)
    assessments: tuple[Assessment, ...] = ()
    # Keys of the incidents recorded: (namespace, deployment, revision, deployment uid).
    incidents: list[tuple[str, str, int, str]] = field(default_factory=list)
    # Keys of the alert incidents recorded (``alert/<fingerprint>/<start>``).
    alert_incidents: list[str] = field(default_factory=list)
    # Keys of the change incidents recorded (``change/<namespace>/<deployment>/...``).
    change_incidents: list[str] = field(default_factory=list)
    # Changes recorded by the change timeline.
    changes: int = 0
    role: str = "leader"

    def finish(self, finished_at: datetime, *, started: float, cpu_started: float) -> None:
        """The report closed: when, how long (``started``: ``time.monotonic()``), the CPU
        time (``cpu_started``: ``time.process_time()``), and degraded when a problem came."""
        self.finished_at = finished_at
        self.duration_seconds = round(time.monotonic() - started, 4)
        self.cpu_seconds = round(time.process_time() - cpu_started, 4)
        self.degraded = bool(self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at),
                "duration_seconds": self.duration_seconds, "cpu_seconds": self.cpu_seconds,
                "degraded": self.degraded,
                "problems": self.problems,
                "incidents": [{"namespace": k[0], "deployment": k[1], "revision": k[2]}
                              for k in self.incidents],
                "alert_incidents": list(self.alert_incidents),
                "change_incidents": list(self.change_incidents), "changes": self.changes}


def assessment_dict(a: Assessment) -> dict[str, Any]:
    return {"namespace": a.namespace, "deployment": a.deployment, "revision": a.revision,
            "replicaset": a.replicaset, "rollout_started_at": iso(a.rollout_started_at),
            "rollout_start_source": a.rollout_start_source.value,
            "age_seconds": a.age_seconds, "in_window": a.in_window, "verdict": a.verdict.value,
            "signals": [s.value for s in a.signals], "error_count": a.error_count,
            "attribution": a.attribution.value if a.attribution else None,
            "baseline_per_minute": a.baseline_per_minute, "reasons": list(a.reasons)}


