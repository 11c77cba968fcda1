"""Kubernetes source: the Deployments, ReplicaSets and pods of a namespace, as plain dataclasses.

The official client makes the requests (authentication, TLS, kubeconfig, in-cluster service
account), through its low-level ``ApiClient`` only (``kube_http.request``): its typed API classes
are never built, nor its typed models. Building ``CoreV1Api`` and ``AppsV1Api`` alone imports
hundreds of model modules (about 25 MB), and decoding a ReplicaSet or pod list into models costs
tens of megabytes more than the JSON itself. The raw body goes through ``json.loads`` and the
pure parsers of ``kube_objects``. The client blocks, so each call runs in a worker thread; the
parsing runs there too, to keep the event loop free.

One request per resource kind and namespace per tick, no retry here: the daemon's loop retries on
the next tick, and a transport that retried on its own would hold a tick for several timeouts.

Deployments and ReplicaSets are listed once, then kept current by a short watch per tick from the
last ``resourceVersion`` (``kube_watch.WatchedList``): decoding every object every tick would cost
about 40 ms of CPU per 1.7 MB of JSON, while the watch returns only what changed. Pods (those that
carry a ``pod-template-hash`` label: a Deployment's) are kept the same way from the first tick
that has a rollout to judge, and only the pods of the revisions asked for are returned.
With ``KubeClient.follow`` (WATCH_FOLLOW, the daemon's default) a thread per list keeps it
current from long watches read event by event instead (``WatchedList.follow``): a refresh then
asks nothing, and the changes that can change a verdict (``WAKES``) wake the detector.

The Deployment watch also feeds the change timeline: every Deployment whose revision, replicas,
pause or generation changed is kept as an (old, new) pair until ``drain_deployment_changes``
takes it (``judge.change_diff.deployment_change`` makes a ``Change`` of it), at no extra request.

Warning Events (core/v1, ``type=Warning``) are read on demand for the on-call brief: one
request, through the same ``request`` path and error mapping as the lists.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kubernetes.client
import structlog

from ..model import (
    Deployment,
    Pod,
    ReplicaSet,
    WarningEvent,
)

# Re-exported: the tests and benchmarks build the ApiClient of a KubeClient from this module.
from .kube_http import api_client_for, api_client_from_environment  # noqa: F401
from .kube_http import ListCall, parse_list_page, request
from .kube_objects import (
    POD_TEMPLATE_HASH_LABEL,
    newest_first,
    parse_deployment,
    parse_pod,
    parse_replicaset,
    parse_warning_event,
)
from .kube_watch import FOLLOW_SECONDS, WatchedList, _parsed

log = structlog.get_logger(__name__)

# Deployment (old, new) pairs kept per namespace for the change timeline at most: a tick drains
# them, so only a tick that failed for long lets them pile up (the oldest go first).
DEPLOYMENT_CHANGES_MAX = 1000


# --------------------------------------------------------------------------------------------
# Which calls this module makes, and so which permissions it needs.


DEPLOYMENTS = ListCall(group="apps", version="v1", resource="deployments",
                       list_kind="DeploymentList", verbs=("list", "watch"))
REPLICASETS = ListCall(group="apps", version="v1", resource="replicasets",
                       list_kind="ReplicaSetList", verbs=("list", "watch"))
PODS = ListCall(group="", version="v1", resource="pods", list_kind="PodList",
                verbs=("list", "watch"))
LIST_CALLS = (DEPLOYMENTS, REPLICASETS, PODS)

REQUIRED_PERMISSIONS: tuple[tuple[str, str, str], ...] = tuple(
    (call.group, call.resource, verb) for call in LIST_CALLS for verb in call.verbs
)

# core/v1 Events, read for the on-call brief. Kept out of REQUIRED_PERMISSIONS: without this
# permission the brief goes without Events (a 403, not retried), detection is unaffected.
EVENTS = ListCall(group="", version="v1", resource="events", list_kind="EventList")
WARNING_EVENT_PERMISSIONS: tuple[tuple[str, str, str], ...] = tuple(
    (EVENTS.group, EVENTS.resource, verb) for verb in EVENTS.verbs
)
# The server-side filter: kubelets and controllers write far more Normal Events than Warnings.
WARNING_EVENTS_SELECTOR = "type=Warning"


# --------------------------------------------------------------------------------------------
# The client.


class KubeClient:
    """Lists the objects of one namespace; every failure comes out as a ``SourceError``.

    Deployments and ReplicaSets come from one ``WatchedList`` per (resource, namespace), made on
    the first call for that namespace: the daemon only asks for the namespaces it is configured
    with, so their number is bounded by that list.
    """

    def __init__(self, *, api: kubernetes.client.ApiClient, timeout: float,
                 follow_seconds: int = FOLLOW_SECONDS) -> None:
        self._api = api
        self._timeout = timeout
        self._follow_seconds = follow_seconds
        self._deployments: dict[str, WatchedList[Deployment]] = {}
        self._replicasets: dict[str, WatchedList[ReplicaSet]] = {}
        self._pods: dict[str, WatchedList[Pod]] = {}
        self._deployment_changes: dict[str, deque[tuple[Deployment | None,
                                                        Deployment | None]]] = {}
        # Followers (``follow``): one thread per followed list, all stopped by one event.
        self._on_event: Callable[[str, str], None] | None = None
        self._followers: list[tuple[WatchedList[Any], threading.Thread]] = []
        self._stop_following = threading.Event()

    def follow(self, namespace: str, *, on_event: Callable[[str, str], None]) -> None:
        """Follow the namespace's Deployments and ReplicaSets (and its pods, from the first
        call that needs them) with long watches, each in a thread of its own: ``list_*`` then
        answer from memory, and ``on_event(namespace, resource)`` is called from that thread
        whenever a watch changed something (the caller hands it to its event loop)."""
        self._on_event = on_event
        self._follow(self._deployment_list(namespace), namespace)
        self._follow(self._replicaset_list(namespace), namespace)
        if namespace in self._pods:
            self._follow(self._pods[namespace], namespace)

    def stop_following(self, *, wait: float = 5.0) -> None:
        """Stop every follower: their open watches are interrupted and their threads joined."""
        self._stop_following.set()
        for watched, _ in self._followers:
            watched.stop_following()
        for _, thread in self._followers:
            thread.join(timeout=wait)
        self._followers.clear()

    @property
    def following(self) -> int:
        """How many lists are followed by a live thread."""
        return sum(1 for _, thread in self._followers if thread.is_alive())

    def _follow(self, watched: WatchedList[Any], namespace: str) -> None:
        if self._on_event is None or self._stop_following.is_set() or \
                any(w is watched for w, _ in self._followers):
            return
        on_event = self._on_event
        resource = watched.resource

        thread = threading.Thread(
            target=watched.follow, name=f"follow-{resource}-{namespace}", daemon=True,
            kwargs={"stop": self._stop_following, "seconds": self._follow_seconds,
                    "on_change": lambda: on_event(namespace, resource),
                    "wakes": WAKES.get(resource)})
        self._followers.append((watched, thread))
        thread.start()

    def _deployment_list(self, namespace: str) -> WatchedList[Deployment]:
        watched = self._deployments.get(namespace)
        if watched is None:
            pairs = self._deployment_changes[namespace] = deque(maxlen=DEPLOYMENT_CHANGES_MAX)
            watched = self._deployments[namespace] = WatchedList(
                api=self._api, call=DEPLOYMENTS, namespace=namespace, parse=parse_deployment,
                timeout=self._timeout,
                on_change=lambda old, new: _record_deployment_change(pairs, old, new))
        return watched

    def _replicaset_list(self, namespace: str) -> WatchedList[ReplicaSet]:
        watched = self._replicasets.get(namespace)
        if watched is None:
            watched = self._replicasets[namespace] = WatchedList(
                api=self._api, call=REPLICASETS, namespace=namespace, parse=parse_replicaset,
                timeout=self._timeout)
        return watched

    async def list_deployments(self, namespace: str) -> tuple[Deployment, ...]:
        return await asyncio.to_thread(self._deployment_list(namespace).refresh)

    def drain_deployment_changes(
            self, namespace: str) -> list[tuple[Deployment | None, Deployment | None]]:
        """The (old, new) Deployments the watch saw change since the last call, oldest first
        (None: created or deleted); the first list of a namespace is the baseline and gives
        none. Only spec-side changes are kept (revision, replicas, pause, generation, uid): a
        status update alone is not a change."""
        pairs = self._deployment_changes.get(namespace)
        drained: list[tuple[Deployment | None, Deployment | None]] = []
        while pairs:
            drained.append(pairs.popleft())
        return drained

    async def list_replicasets(self, namespace: str) -> tuple[ReplicaSet, ...]:
        return await asyncio.to_thread(self._replicaset_list(namespace).refresh)

    async def list_pods(self, namespace: str, *,
                        template_hashes: Sequence[str] | None = None) -> tuple[Pod, ...]:
        """The pods of Deployments in ``namespace``; with ``template_hashes``, only those of the
        ReplicaSets with these ``pod-template-hash`` labels (none asked for: no request at all).

        Kept by a ``WatchedList`` of the pods that carry the label, made on the first call that
        needs pods: a mass rollout asks for a thousand pods tick after tick, and decoding them
        all each time was most of a tick's CPU and memory, while a watch returns what changed.
        """
        wanted: set[str] | None = None
        if template_hashes is not None:
            wanted = {h for h in template_hashes if h}
            if not wanted:
                return ()
        watched = self._pods.get(namespace)
        if watched is None:
            watched = self._pods[namespace] = WatchedList(
                api=self._api, call=PODS, namespace=namespace, parse=parse_pod,
                timeout=self._timeout, label_selector=POD_TEMPLATE_HASH_LABEL)
        pods = await asyncio.to_thread(watched.refresh)
        # Followed from here on when the namespace is (a listed pod list is followed at once).
        if any(w is self._deployments.get(namespace) for w, _ in self._followers):
            self._follow(watched, namespace)
        if wanted is None:
            return pods
        return tuple(pod for pod in pods if pod.pod_template_hash in wanted)

    async def list_warning_events(self, namespace: str, *,
                                  limit: int = 200) -> tuple[WarningEvent, ...]:
        """The ``type=Warning`` core/v1 Events of ``namespace``, newest ``last_seen`` first
        (those without any time last), at most ``limit`` of them.

        One request (``fieldSelector=type=Warning&limit=...``), not watched and not paged: the
        brief wants a bounded sample, read when it is written. The apiserver pages in key
        order (by name), not by time, so with more than ``limit`` Warnings in the namespace the
        page holds ``limit`` of them, not necessarily the newest. A 403 (no ``list`` on
        ``events``) is a non-retryable ``SourceError`` like every other read.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        return await asyncio.to_thread(self._warning_events, namespace, limit)

    def _warning_events(self, namespace: str, limit: int) -> tuple[WarningEvent, ...]:
        what = f"listing warning events in namespace {namespace!r}"
        body = request(self._api, "GET", EVENTS.path(namespace), what=what, timeout=self._timeout,
                       query=(("fieldSelector", WARNING_EVENTS_SELECTOR), ("limit", limit)))
        items, _, more = parse_list_page(body, kind=EVENTS.list_kind)
        events = _parsed(items, parse_warning_event, resource=EVENTS.resource,
                         namespace=namespace)
        if more:
            log.debug("kube.warning_events_truncated", namespace=namespace, limit=limit)
        # A server that ignored the limit still gives the brief no more than it asked for.
        return newest_first(events)[:limit]


def _deployment_wakes(before: Deployment | None, after: Deployment | None) -> bool:
    """A Deployment change that can start or end a rollout, or make it stuck."""
    if before is None or after is None:
        return True
    return (before.uid, before.revision, before.progress_deadline_exceeded) != \
        (after.uid, after.revision, after.progress_deadline_exceeded)


def _replicaset_wakes(before: ReplicaSet | None, after: ReplicaSet | None) -> bool:
    """A ReplicaSet created, or made current again (its revision rewritten)."""
    return after is not None and (before is None or before.revision != after.revision)


def _pod_wakes(before: Pod | None, after: Pod | None) -> bool:
    """A pod that has a problem it did not have (CrashLoopBackOff, OOMKilled, ...)."""
    return after is not None and bool(after.problems) and \
        (before is None or before.problems != after.problems)


# Which followed changes wake the detector: the ones that can change a verdict. A pod turning
# ready, a replica count moving or a status heartbeat waits for the next look.
WAKES: Mapping[str, Callable[[Any, Any], bool]] = {
    "deployments": _deployment_wakes, "replicasets": _replicaset_wakes, "pods": _pod_wakes}


def _record_deployment_change(pairs: deque[tuple[Deployment | None, Deployment | None]],
                              old: Deployment | None, new: Deployment | None) -> None:
    if old is not None and new is not None and _spec_side(old) == _spec_side(new):
        return
    if len(pairs) == pairs.maxlen:
        log.debug("kube.deployment_changes_dropped", namespace=(new or old).namespace)
    pairs.append((old, new))


def _spec_side(deployment: Deployment) -> tuple[Any, ...]:
    generation = deployment.rollout.generation if deployment.rollout is not None else 0
    return (deployment.uid, deployment.revision, deployment.replicas, deployment.paused,
            generation)


__all__ = [
    "api_client_for", "api_client_from_environment", "DEPLOYMENT_CHANGES_MAX", "DEPLOYMENTS",
    "EVENTS", "KubeClient", "LIST_CALLS", "PODS", "REPLICASETS", "REQUIRED_PERMISSIONS", "WAKES",
    "WARNING_EVENT_PERMISSIONS", "WARNING_EVENTS_SELECTOR",
]
