"""Leader election on a ``coordination.k8s.io/v1`` Lease: of several replicas, one notifies.

The protocol is the one client-go's leader election follows. Every ``renew_interval`` each
replica reads the Lease. The holder writes a fresh ``renewTime``; a replica that finds the lease
not renewed for its duration (or released) writes itself in as the holder. Every write carries the
``resourceVersion`` that was read, so the API server lets exactly one of two racing replicas win
(the other gets 409 Conflict and follows).

A leader that cannot reach the API server keeps leading only while the ``renewTime`` it last
wrote is younger than the lease duration: past that point a standby may already have taken over,
so ``is_leader`` turns False on the clock, not at the next step. On shutdown the leader releases
the lease, and the standby takes over at its next step instead of after a full lease duration.

Expiry compares the holder's ``renewTime`` with the reader's clock, so the replicas' clocks must
agree to well within the lease duration (NTP on cluster nodes keeps them within milliseconds).

The official client's ``leaderelection`` module runs in threads with blocking sleeps; this one is
a few coroutines around three calls, run in a worker thread like every other call to the API.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import kubernetes.client
import structlog

from ..errors import SourceError
from ..sources.kube_http import SOURCE, namespaced_path, request
from ..sources.kube_objects import micro_time, parse_timestamp

log = structlog.get_logger(__name__)

LEASE_NAME = "incident-detector"
LEASE_GROUP, LEASE_VERSION, LEASE_RESOURCE = "coordination.k8s.io", "v1", "leases"
LEASE_API_VERSION = f"{LEASE_GROUP}/{LEASE_VERSION}"
LEASE_KIND = "Lease"

# What the elector does through the API, as (api group, resource, verb): GET, POST, PUT.
LEASE_PERMISSIONS: tuple[tuple[str, str, str], ...] = tuple(
    (LEASE_GROUP, LEASE_RESOURCE, verb) for verb in ("get", "create", "update")
)

# How long after a follower's computed expiry it looks again: the expiry test is strict
# (renewTime + duration < now), so waking exactly on it would find the lease still live.
EXPIRY_MARGIN_SECONDS = 0.05

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------------------------
# Wire helpers shared with the Event notifier.


# --------------------------------------------------------------------------------------------
# The pure core: what a Lease says, and what to do about it.


class LeaseAction(str, Enum):
    CREATE = "create"          # no Lease yet
    RENEW = "renew"            # we hold it
    TAKE_OVER = "take_over"    # released, or not renewed within its duration
    FOLLOW = "follow"          # someone else holds a live lease


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str | None
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str | None


def lease_expiry(record: LeaseRecord, *, lease_duration: float) -> datetime | None:
    """When a held lease stops being live; None when nothing says when it was last renewed.

    The wait is the longer of the holder's declared duration and ours: whichever replica is
    configured with the longer lease, two leaders never overlap.
    """
    last_renewed = record.renew_time or record.acquire_time
    if last_renewed is None:
        return None
    seconds = max(float(record.lease_duration_seconds), lease_duration)
    return last_renewed + timedelta(seconds=seconds)


def decide_lease(record: LeaseRecord | None, *, identity: str, now: datetime,
                 lease_duration: float) -> LeaseAction:
    """What ``identity`` should do at ``now`` about the Lease ``record`` (None: there is none)."""
    if record is None:
        return LeaseAction.CREATE
    if record.holder == identity:
        # Even an expired lease of ours is renewed: the resourceVersion check makes the write
        # fail if anyone else took it meanwhile.
        return LeaseAction.RENEW
    if not record.holder:
        return LeaseAction.TAKE_OVER
    expiry = lease_expiry(record, lease_duration=lease_duration)
    # A holder that never wrote when it renewed cannot be shown to be alive.
    if expiry is None or expiry < _as_utc(now):
        return LeaseAction.TAKE_OVER
    return LeaseAction.FOLLOW


def lease_body(*, name: str, namespace: str, holder: str | None, lease_duration_seconds: int,
               acquire_time: datetime | None, renew_time: datetime | None, transitions: int,
               resource_version: str | None = None) -> dict[str, Any]:
    """A Lease as sent to the API server. ``holder=None`` releases it."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": LEASE_KIND,
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": lease_duration_seconds,
            "acquireTime": None if acquire_time is None else micro_time(acquire_time),
            "renewTime": None if renew_time is None else micro_time(renew_time),
            "leaseTransitions": transitions,
        },
    }


def parse_lease(body: bytes) -> LeaseRecord:
    """The parts of a Lease response that election needs; odd field values count as absent."""
    try:
        decoded = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise SourceError(SOURCE, "malformed", f"a Lease response is not JSON ({exc})",
                          retryable=True, status=200) from None
    if not isinstance(decoded, dict) or decoded.get("kind", LEASE_KIND) != LEASE_KIND:
        raise SourceError(SOURCE, "unexpected_shape", "a Lease response is not a Lease object",
                          retryable=True, status=200)
    metadata = decoded.get("metadata") if isinstance(decoded.get("metadata"), dict) else {}
    spec = decoded.get("spec") if isinstance(decoded.get("spec"), dict) else {}
    holder = spec.get("holderIdentity")
    resource_version = metadata.get("resourceVersion")
    return LeaseRecord(
        holder=holder if isinstance(holder, str) and holder else None,
        lease_duration_seconds=_non_negative_int(spec.get("leaseDurationSeconds")),
        acquire_time=parse_timestamp(spec.get("acquireTime")),
        renew_time=parse_timestamp(spec.get("renewTime")),
        transitions=_non_negative_int(spec.get("leaseTransitions")),
        resource_version=resource_version if isinstance(resource_version, str) else None,
    )


def _non_negative_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


# --------------------------------------------------------------------------------------------
# The elector.


class LeaderElector:
    """Competes for one Lease; ``is_leader`` says whether this replica may notify right now."""

    def __init__(self, *, api: kubernetes.client.ApiClient, namespace: str,
                 name: str = LEASE_NAME, identity: str, lease_duration: float = 15.0,
                 renew_interval: float = 5.0, timeout: float = 5.0,
                 clock: Clock = utcnow) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        if not 0 < renew_interval < lease_duration:
            # A leader renewing less often than its lease lapses would lose it between renewals.
            raise ValueError(f"renew_interval ({renew_interval}) must be positive and shorter "
                             f"than lease_duration ({lease_duration})")
        self._api = api
        self._namespace = namespace
        self._name = name
        self._identity = identity
        self._lease_duration = lease_duration
        self._lease_duration_seconds = math.ceil(lease_duration)
        self._renew_interval = renew_interval
        self._timeout = timeout
        self._clock = clock
        # The Lease as last read or written by us.
        self._observed: LeaseRecord | None = None
        # While we lead: the renewTime we last wrote plus the lease duration.
        self._held_until: datetime | None = None
        # The role last logged, and whether the API is failing (logged once per streak).
        self._logged_leader = False
        self._failing = False

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def is_leader(self) -> bool:
        return self._held_until is not None and _as_utc(self._clock()) <= self._held_until

    def status(self) -> dict[str, Any]:
        observed = self._observed
        return {
            "role": "leader" if self.is_leader else "standby",
            "identity": self._identity,
            "lease": self._name,
            "holder": observed.holder if observed is not None else None,
            "last_renew": (micro_time(observed.renew_time)
                           if observed is not None and observed.renew_time is not None
                           else None),
        }

    # -- one step --------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """Read the Lease and act on it once; True when this replica leads afterwards."""
        try:
            follow_reason = await self._step()
        except SourceError as exc:
            follow_reason = "renew_failed"
            if not self._failing:
                self._failing = True
                log.warning("leader.api_error", lease=self._name, reason=exc.reason,
                            message=exc.message, leading=self.is_leader)
        else:
            if self._failing:
                self._failing = False
                log.info("leader.api_recovered", lease=self._name)
        if self._held_until is not None and not self.is_leader:
            self._held_until = None  # the lease we wrote ran out while the API failed us
        self._log_role_change(follow_reason)
        return self.is_leader

    async def _step(self) -> str | None:
        """One read and at most one write; None when we lead, else why we follow."""
        now = _as_utc(self._clock())
        record = await self._read()
        self._observed = record
        action = decide_lease(record, identity=self._identity, now=now,
                              lease_duration=self._lease_duration)
        if action is LeaseAction.FOLLOW:
            self._held_until = None
            return "lease_held_by_other"
        if record is None:  # LeaseAction.CREATE
            body = self._body(holder=self._identity, acquire_time=now, renew_time=now,
                              transitions=0)
            written = await self._write_or_lose(self._create, body)
        else:
            taking_over = record.holder != self._identity
            body = self._body(
                holder=self._identity,
                acquire_time=now if taking_over else (record.acquire_time or now),
                renew_time=now,
                transitions=record.transitions + 1 if taking_over else record.transitions,
                resource_version=record.resource_version,
            )
            written = await self._write_or_lose(self._replace, body)
        if written is None:
            self._held_until = None
            return "lost_race"
        self._observed = written
        # From the renewTime we wrote, not from when the answer came: that is what a standby
        # measures the expiry from.
        self._held_until = now + timedelta(seconds=self._lease_duration)
        return None

    async def _write_or_lose(self, write: Callable[[dict[str, Any]], Awaitable[LeaseRecord]],
                             body: dict[str, Any]) -> LeaseRecord | None:
        """The Lease as written, or None when another replica wrote first (409)."""
        try:
            return await write(body)
        except SourceError as exc:
            # AlreadyExists on create, Conflict on update: either way someone else was faster.
            if exc.status == 409:
                return None
            raise

    def _log_role_change(self, reason: str | None) -> None:
        leading = self.is_leader
        if leading == self._logged_leader:
            return
        self._logged_leader = leading
        observed = self._observed
        if leading:
            log.info("leader.acquired", lease=self._name, identity=self._identity,
                     transitions=observed.transitions if observed is not None else None)
        else:
            # Handing the lease back at shutdown is the normal way to stop leading.
            emit = log.info if reason == "released" else log.warning
            emit("leader.lost", lease=self._name, identity=self._identity, reason=reason,
                 holder=observed.holder if observed is not None else None)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step every ``renew_interval`` until ``stop`` is set, then release a lease we hold."""
        while not stop.is_set():
            await self.try_acquire_or_renew()
            try:
                await asyncio.wait_for(stop.wait(), self._next_step_delay())
            except TimeoutError:
                pass
        await self.release()

    def _next_step_delay(self) -> float:
        """``renew_interval``, or less so that a lease's end is acted on as it happens: a leader
        that could not renew notices its expiry, a standby takes over a dead leader's lease."""
        now = _as_utc(self._clock())
        if self._held_until is not None:
            deadline: datetime | None = self._held_until
        elif self._observed is not None and self._observed.holder not in (None, self._identity):
            deadline = lease_expiry(self._observed, lease_duration=self._lease_duration)
        else:
            deadline = None
        if deadline is None or deadline < now:
            # Nothing to wait for, or an end already past that this step did not act on (a lost
            # race, a failing API): the plain interval, never a busy loop.
            return self._renew_interval
        return min(self._renew_interval,
                   (deadline - now).total_seconds() + EXPIRY_MARGIN_SECONDS)

    async def release(self) -> bool:
        """Hand the lease back (best effort) so that a standby takes over at once.

        Leadership ends before the write is sent: whatever the answer, this replica stops
        notifying. Returns True when the API server accepted the release.
        """
        record = self._observed
        if not self.is_leader or record is None:
            return False
        self._held_until = None
        now = _as_utc(self._clock())
        body = self._body(
            holder=None,
            acquire_time=record.acquire_time,
            # Already expired for a reader that only looks at times.
            renew_time=now - timedelta(seconds=self._lease_duration_seconds),
            transitions=record.transitions,
            resource_version=record.resource_version,
        )
        released = False
        try:
            written = await self._replace(body)
        except SourceError as exc:
            log.warning("leader.release_failed", lease=self._name, reason=exc.reason,
                        message=exc.message)
        else:
            self._observed = written
            released = True
        self._log_role_change("released")
        return released

    # -- calls ---------------------------------------------------------------------------------

    def _body(self, *, holder: str | None, acquire_time: datetime | None,
              renew_time: datetime | None, transitions: int,
              resource_version: str | None = None) -> dict[str, Any]:
        return lease_body(name=self._name, namespace=self._namespace, holder=holder,
                          lease_duration_seconds=self._lease_duration_seconds,
                          acquire_time=acquire_time, renew_time=renew_time,
                          transitions=transitions, resource_version=resource_version)

    async def _read(self) -> LeaseRecord | None:
        try:
            return await asyncio.to_thread(self._call, "reading", "GET", self._name)
        except SourceError as exc:
            if exc.status == 404:
                return None
            raise

    async def _create(self, body: dict[str, Any]) -> LeaseRecord:
        return await asyncio.to_thread(self._call, "creating", "POST", None, body)

    async def _replace(self, body: dict[str, Any]) -> LeaseRecord:
        return await asyncio.to_thread(self._call, "updating", "PUT", self._name, body)

    def _call(self, verb: str, method: str, name: str | None,
              body: dict[str, Any] | None = None) -> LeaseRecord:
        """``name=None``: the collection (where a Lease is created); else the Lease itself."""
        path = namespaced_path(group=LEASE_GROUP, version=LEASE_VERSION, resource=LEASE_RESOURCE,
                               namespace=self._namespace, name=name)
        answer = request(self._api, method, path, body=body, timeout=self._timeout,
                         what=f"{verb} lease {self._name!r} in namespace {self._namespace!r}")
        return parse_lease(answer)
