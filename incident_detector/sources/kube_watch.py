"""Kubernetes watches: a namespaced collection kept current from its watch events (``WatchedList``).

A collection is listed once, page by page, then kept current by a short watch per refresh from
the last ``resourceVersion``: decoding every object every tick would cost about 40 ms of CPU per
1.7 MB of JSON, while the watch returns only what changed. A ``resourceVersion`` the server no
longer keeps (410) makes the same refresh list again. ``WatchedList.follow`` keeps it current
from long watches read event by event instead, in a thread of its own.

Generic over what a collection's objects parse to: ``kube.KubeClient`` keeps Deployments,
ReplicaSets and pods this way, ``changes_watch`` the objects of the change timeline. The
requests go through ``kube_http``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import kubernetes.client
import structlog

from ..errors import SourceError, retryable_status
from ..retry import Backoff
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
    "ADDED", "BOOKMARK", "DELETED", "ERROR", "FOLLOW_BACKOFF", "FOLLOW_MIN_SECONDS",
    "FOLLOW_SECONDS", "GONE_REASONS", "GONE_STATUS", "LIST_PAGE_SIZE", "MODIFIED",
    "read_watch_events", "WATCH_SECONDS", "WatchedList", "WatchExpired",
]
