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
last ``resourceVersion`` (``WatchedList``): decoding every object every tick would cost about 40 ms
of CPU per 1.7 MB of JSON, while the watch returns only what changed. Pods (those that carry a
``pod-template-hash`` label: a Deployment's) are kept the same way from the first tick that has a
rollout to judge, and only the pods of the revisions asked for are returned.
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
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import kubernetes.client
import structlog

from ..errors import SourceError, retryable_status
from ..retry import Backoff
from ..model import (
    Deployment,
    Pod,
    ReplicaSet,
    WarningEvent,
)

# Re-exported: the tests build the ApiClient of a KubeClient from this module.
from .kube_http import api_client_for, api_client_from_environment  # noqa: F401
from .kube_http import (
    SOURCE,
    ListCall,
    open_stream,
    parse_list_page,
    redact_credentials,
    release_free_memory,
    request,
    stream_lines,
)
from .kube_json import _count, _dict, _str
from .kube_objects import (
    POD_TEMPLATE_HASH_LABEL,
    newest_first,
    parse_deployment,
    parse_pod,
    parse_replicaset,
    parse_warning_event,
)

log = structlog.get_logger(__name__)

# How long the API server keeps a watch open before closing it (its timeoutSeconds): the events
# that arrived since the last tick come at once, so a longer watch would only hold the tick.
WATCH_SECONDS = 1
# How long the API server holds a followed watch (``WatchedList.follow``) before closing it; the
# follower then opens the next one from the last resourceVersion. Events arrive as they happen.
FOLLOW_SECONDS = 240
# A followed watch that the server ends sooner than this is not opened again before it: a server
# (or proxy) that closes watches at once must not turn the follower into a busy loop.
FOLLOW_MIN_SECONDS = 1.0
# After a failed follow: capped backoff before the next list or watch.
FOLLOW_BACKOFF = Backoff(base=1.0, cap=30.0)
# Objects per page when listing (the first refresh, and after a 410).
LIST_PAGE_SIZE = 50

# Watch event types (k8s.io/apimachinery/pkg/watch).
ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"
# A watch from a resourceVersion the server no longer keeps: HTTP 410 or an ERROR event with it.
GONE_STATUS = 410
GONE_REASONS = frozenset({"Expired", "Gone"})

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


# Anything with a ``name``: the parsed objects of a collection (Deployment, ReplicaSet, Pod,
# judge.change_diff.ObjectState).
T = TypeVar("T")


class WatchedList(Generic[T]):
    """The objects of one collection in one namespace, kept current from one request per refresh.

    The first refresh lists. Every later one watches from the last ``resourceVersion`` for
    ``WATCH_SECONDS`` (the server then closes the stream) and applies the events, so its cost
    follows the number of changes, not the number of objects. A ``resourceVersion`` the server
    no longer keeps (410) makes the same refresh list again.

    ``refresh`` blocks: the async caller runs it in a worker thread. A failed refresh raises a
    ``SourceError`` and leaves ``items`` and ``resource_version`` as they were, so the next one
    carries on from there; only an expired version is dropped (the next refresh lists at once).

    ``on_change(old, new)`` (optional) hears of every object a watch changed (None: created or
    deleted), in the refreshing thread, with the lock held. A list after the first one (after a
    410 or a damaged stream) tells it the net difference between what was kept and what was
    listed, since the events in between are lost; the first list is the baseline and tells it
    nothing.
    """

    def __init__(self, *, api: kubernetes.client.ApiClient, call: ListCall, namespace: str,
                 parse: Callable[[dict], T | None], timeout: float,
                 label_selector: str | None = None,
                 on_change: Callable[[T | None, T | None], None] | None = None) -> None:
        self.resource_version: str | None = None
        self._on_change = on_change
        # True once a list succeeded: later lists are compared with what was kept.
        self._listed = False
        # Sent with the list and every watch: only the objects that match are kept.
        self._selector: tuple[tuple[str, str], ...] = \
            (("labelSelector", label_selector),) if label_selector else ()
        self.items: dict[str, T] = {}
        self._api = api
        self._call = call
        self.resource = call.resource
        self._path = call.path(namespace)
        self._namespace = namespace
        self._parse = parse
        self._timeout = timeout
        # Items sorted by name, rebuilt only after a change: an idle tick sorts nothing.
        self._snapshot: tuple[T, ...] | None = ()
        # Two refreshes of the same collection (a slow tick overlapping the next), or a refresh
        # and the follower, must not interleave their events.
        self._lock = threading.Lock()
        # True while ``follow`` keeps the list current and its last watch was healthy.
        self.followed = False
        # The follower's open stream, so that ``stop_following`` can interrupt its read.
        self._stream: Any = None

    def refresh(self) -> tuple[T, ...]:
        """The current objects, sorted by name.

        While a follower keeps the list current (``follow``), no request is made: the objects
        are as fresh as the last event. A follower that is failing does not hide the failure:
        the refresh then asks the server itself, and fails as the server does.
        """
        with self._lock:
            if self.followed and self.resource_version is not None:
                pass
            elif self.resource_version is None:
                self._relist()
            else:
                self._watch(self.resource_version)
            if self._snapshot is None:
                self._snapshot = tuple(self.items[name] for name in sorted(self.items))
            return self._snapshot

    def _relist(self) -> None:
        # Page by page (limit/continue): decoding a whole list at once leaves its size in
        # resident memory long after the dicts are freed; a page's worth is all it costs this way.
        items: dict[str, T] = {}
        token: str | None = None
        what = f"listing {self._call.resource} in namespace {self._namespace!r}"
        while True:
            query: list[tuple[str, Any]] = [*self._selector, ("limit", LIST_PAGE_SIZE)]
            if token:
                query.append(("continue", token))
            body = request(self._api, "GET", self._path, query=query, what=what,
                           timeout=self._timeout)
            raw_items, version, token = parse_list_page(body, kind=self._call.list_kind)
            del body  # the decoded dicts are all that is needed from here on
            for obj in _parsed(raw_items, self._parse, resource=self._call.resource,
                               namespace=self._namespace):
                items[obj.name] = obj
            del raw_items
            if not token:
                break
        if self._on_change is not None and self._listed:
            for name in [*items, *(n for n in self.items if n not in items)]:
                before, after = self.items.get(name), items.get(name)
                if before != after:
                    self._on_change(before, after)
        self.items = items
        self._listed = True
        self._snapshot = None
        release_free_memory()
        # A list without one (a proxy that strips metadata) cannot be watched from: it is
        # listed again next time.
        self.resource_version = version

    def _watch(self, since: str) -> None:
        what = f"watching {self._call.resource} in namespace {self._namespace!r}"
        try:
            body = request(self._api, "GET", self._path, what=what,
                           query=(*self._selector, ("watch", True), ("resourceVersion", since),
                                  ("allowWatchBookmarks", True),
                                  ("timeoutSeconds", WATCH_SECONDS)),
                           # The server holds the stream for WATCH_SECONDS before closing it.
                           timeout=self._timeout + WATCH_SECONDS)
        except SourceError as exc:
            if exc.status != GONE_STATUS:
                raise
            self._relist_expired(since)
            return
        try:
            changes, version, malformed = read_watch_events(body, parse=self._parse,
                                                            since=since)
        except WatchExpired:
            self._relist_expired(since)
            return
        except SourceError as exc:
            raise SourceError(exc.source, exc.reason, redact_credentials(self._api, f"{what}: {exc.message}"),
                              retryable=exc.retryable, status=exc.status) from None
        self._apply(changes)
        self.resource_version = version
        if malformed:
            # Some change was lost: the items may no longer match what the server holds.
            log.warning("kube.watch_malformed", resource=self._call.resource,
                        namespace=self._namespace, lines=malformed)
            self.resource_version = None

    def _apply(self, changes: Mapping[str, T | None]) -> list[tuple[T | None, T | None]]:
        """Apply watched changes (the lock held): the (before, after) of each object changed."""
        changed: list[tuple[T | None, T | None]] = []
        for name, obj in changes.items():
            before = self.items.get(name)
            if before == obj:
                continue
            changed.append((before, obj))
            if self._on_change is not None:
                self._on_change(before, obj)
            if obj is None:
                self.items.pop(name, None)
            else:
                self.items[name] = obj
        if changed:
            self._snapshot = None
        return changed

    def follow(self, *, stop: threading.Event, on_change: Callable[[], None],
               seconds: int = FOLLOW_SECONDS, backoff: Backoff = FOLLOW_BACKOFF,
               wakes: Callable[[T | None, T | None], bool] | None = None) -> None:
        """Keep the list current from long watches until ``stop`` is set. Blocking: run it in a
        thread of its own.

        Each watch is held by the server for ``seconds`` and read event by event as it streams
        in, so a change reaches ``items`` within moments of the server writing it, and
        ``on_change`` (called without the lock) hears of it when ``wakes(before, after)`` says
        that change matters (every change, without it) and after every list; when the server closes the watch, the next one starts
        from the last resourceVersion (bookmarks keep it fresh), and an expired one (410) lists
        again. A failure clears ``followed`` (``refresh`` then asks the server itself), is
        logged once when it starts and once when it ends, and is retried after a capped
        backoff.
        """
        failures = 0
        while not stop.is_set():
            try:
                with self._lock:
                    if self.resource_version is None:
                        self._relist()
                        relisted = True
                    else:
                        relisted = False
                if relisted:
                    on_change()
                opened = time.monotonic()
                self._follow_once(seconds, stop, on_change, wakes)
                stop.wait(FOLLOW_MIN_SECONDS - (time.monotonic() - opened))
            except SourceError as exc:
                self.followed = False
                if stop.is_set():
                    break  # the stream was interrupted to stop: not a failure
                failures += 1
                if failures == 1:
                    log.warning("kube.follow_failed", resource=self._call.resource,
                                namespace=self._namespace, reason=exc.reason, error=exc.message)
                stop.wait(backoff.delay(failures))
                continue
            if failures:
                log.info("kube.follow_resumed", resource=self._call.resource,
                         namespace=self._namespace, failures=failures)
                failures = 0
        self.followed = False

    def stop_following(self) -> None:
        """Interrupt the follower's read of its open watch (it then sees its stop event)."""
        stream = self._stream
        if stream is not None:
            shutdown = getattr(stream, "shutdown", None) or stream.close
            try:
                shutdown()
            except Exception:  # a stream already closed by its server: nothing to interrupt
                pass

    def _follow_once(self, seconds: int, stop: threading.Event, on_change: Callable[[], None],
                     wakes: Callable[[T | None, T | None], bool] | None) -> None:
        since = self.resource_version
        if since is None:
            return
        what = f"watching {self._call.resource} in namespace {self._namespace!r}"
        stream = open_stream(self._api, self._path, what=what, timeout=self._timeout,
                             seconds=seconds,
                             query=(*self._selector, ("watch", True), ("resourceVersion", since),
                                    ("allowWatchBookmarks", True), ("timeoutSeconds", seconds)))
        self._stream = stream
        self.followed = True
        try:
            for line in stream_lines(stream, what=what, api=self._api, timeout=self._timeout):
                if stop.is_set():
                    return
                try:
                    changes, version, malformed = read_watch_events(
                        line, parse=self._parse, since=self.resource_version or since)
                except WatchExpired:
                    log.debug("kube.watch_expired", resource=self._call.resource,
                              namespace=self._namespace, resource_version=since)
                    with self._lock:
                        self.resource_version = None
                    return
                if malformed:
                    log.warning("kube.watch_malformed", resource=self._call.resource,
                                namespace=self._namespace, lines=malformed)
                    with self._lock:
                        self.resource_version = None  # a change was lost: list again
                    return
                with self._lock:
                    changed = self._apply(changes)
                    self.resource_version = version
                if any(wakes is None or wakes(before, after) for before, after in changed):
                    on_change()
        finally:
            self._stream = None
            stream.release_conn()

    def _relist_expired(self, since: str) -> None:
        log.debug("kube.watch_expired", resource=self._call.resource, namespace=self._namespace,
                  resource_version=since)
        # Known to be useless now: if the list below fails, the next refresh lists straight away
        # rather than asking for the expired version again.
        self.resource_version = None
        self._relist()


def _parsed(items: list[dict], parse: Callable[[dict], Any], *, resource: str,
            namespace: str) -> tuple[Any, ...]:
    parsed = tuple(obj for obj in map(parse, items) if obj is not None)
    if len(parsed) != len(items):
        log.debug("kube.items_skipped", resource=resource, namespace=namespace,
                  skipped=len(items) - len(parsed))
    return parsed


class WatchExpired(Exception):
    """The watch's ``resourceVersion`` is older than what the server keeps: list again."""


def read_watch_events(body: bytes, *, parse: Callable[[dict], T | None], since: str
                      ) -> tuple[dict[str, T | None], str, int]:
    """The changes in a watch response: ``(name -> object, or None when it is gone; the newest
    resourceVersion; the number of lines that could not be used)``.

    Raises ``WatchExpired`` for an ERROR event with a 410 Status and ``SourceError`` for any
    other ERROR event. An object that no longer parses is dropped, as a list would skip it.
    """
    changes: dict[str, T | None] = {}
    version = since
    malformed = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        event = _watch_event(line)
        if event is None:
            malformed += 1
            continue
        event_type, obj = event
        if event_type == ERROR:
            raise _watch_error(obj)
        metadata = _dict(obj.get("metadata"))
        event_version = _str(metadata.get("resourceVersion"))
        name = _str(metadata.get("name"))
        if not event_version or (event_type != BOOKMARK and not name):
            malformed += 1
            continue
        if event_type == DELETED:
            changes[name] = None  # type: ignore[index]
        elif event_type in (ADDED, MODIFIED):
            changes[name] = parse(obj)  # type: ignore[index]
        version = event_version
    return changes, version, malformed


_EVENT_TYPES = frozenset({ADDED, MODIFIED, DELETED, BOOKMARK, ERROR})


def _watch_event(line: bytes) -> tuple[str, Mapping[str, Any]] | None:
    try:
        decoded = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    event_type, obj = decoded.get("type"), decoded.get("object")
    if event_type not in _EVENT_TYPES or not isinstance(obj, dict):
        return None
    return event_type, obj


def _watch_error(status: Mapping[str, Any]) -> Exception:
    code = _count(status.get("code"))
    reason = _str(status.get("reason"))
    if code == GONE_STATUS or reason in GONE_REASONS:
        return WatchExpired()
    message = _str(status.get("message")) or "the watch stream ended with an error"
    return SourceError(SOURCE, reason or (f"http_{code}" if code else "watch_error"), message,
                       retryable=retryable_status(code) if code else True,
                       status=code or None)


__all__ = [
    "ADDED", "api_client_for", "api_client_from_environment", "BOOKMARK", "DELETED",
    "DEPLOYMENT_CHANGES_MAX", "DEPLOYMENTS", "ERROR", "EVENTS", "FOLLOW_BACKOFF",
    "FOLLOW_MIN_SECONDS", "FOLLOW_SECONDS", "GONE_REASONS", "GONE_STATUS", "KubeClient",
    "LIST_CALLS", "LIST_PAGE_SIZE", "MODIFIED", "PODS", "read_watch_events", "REPLICASETS",
    "REQUIRED_PERMISSIONS", "WAKES", "WARNING_EVENT_PERMISSIONS", "WARNING_EVENTS_SELECTOR",
    "WATCH_SECONDS", "WatchedList", "WatchExpired",
]
