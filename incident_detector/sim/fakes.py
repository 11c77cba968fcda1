"""Request handlers that make a ``LocalServer`` speak like a kube-apiserver, Loki or Slack.

- ``KubeApiFake(world, clock)``: Deployments, ReplicaSets and pods of the simulated world, and
  its ConfigMaps, Secrets and Services (StatefulSets, DaemonSets, HorizontalPodAutoscalers,
  Ingresses and NetworkPolicies: empty), listed (with label and field selectors) or watched, plus a real little store of ``events.k8s.io/v1``
  Events and ``coordination.k8s.io/v1`` Leases with the apiserver's validation, conflicts and
  compare-and-swap on ``resourceVersion``. core/v1 Events list both the stored Events and the
  kubelet's Warning Events about the world's failing pods.
- ``LokiFake(world, clock)``: ``/loki/api/v1/query``, ``/loki/api/v1/query_range`` and ``/ready``.
- ``SlackSink()``: an incoming webhook that keeps every message it accepts.

Each fake is a callable ``handler(Request) -> Response``. It counts requests per path
(``requests_by_path``; the Kubernetes fake also counts ``lists`` and ``watches``) and first asks
its optional ``faults`` hook, which may answer in its place (a 429 with Retry-After, a 503, a
truncated body, a slow answer) to test how the detector copes.
Error bodies have the shapes of the recordings in ``tests/fixtures``: Kubernetes ``Status``
objects, Loki's plain text.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from .logql import LogQLError, from_unix_nanos, parse_loki_time, parse_step_ns, to_unix_nanos
from .server import Request, Response
from .world import (
    Body,
    World,
    generated_suffix,
    kube_time,
    resource_version_at,
    time_of_resource_version,
)

Clock = Callable[[], datetime]
Faults = Callable[[Request], "Response | None"]

KUBE_JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
LOKI_JSON = "application/json; charset=UTF-8"
PLAIN_TEXT = "text/plain; charset=utf-8"
EVENTS_GROUP = "events.k8s.io"
LEASES_GROUP = "coordination.k8s.io"
FIRST_RESOURCE_VERSION = 1000
# How far back the apiserver's watch cache reaches; an older resourceVersion is "too old" (410).
DEFAULT_WATCH_WINDOW = timedelta(minutes=5)
# A watch asked to last longer than this (a follower's, not a tick's one-second watch) is held
# open and streamed; the world is looked at this often (wall-clock seconds) while it is.
HELD_WATCH_MIN_SECONDS = 1
HELD_WATCH_POLL_SECONDS = 0.05

_NAMESPACED_PATH = re.compile(
    r"^/(?P<prefix>api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<namespace>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+))?/?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_SELECTOR_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_REQUIREMENT = re.compile(rf"^\s*({_SELECTOR_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQUALITY_REQUIREMENT = re.compile(rf"^\s*({_SELECTOR_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_REQUIREMENT = re.compile(rf"^\s*(!?)\s*({_SELECTOR_KEY})\s*$")

# Field selectors each kind of list supports (the apiserver refuses any other field).
_OBJECT_FIELDS = ("metadata.name", "metadata.namespace")
_POD_FIELDS = _OBJECT_FIELDS + ("status.phase", "spec.nodeName")
_EVENT_FIELDS = _OBJECT_FIELDS + (
    "reason", "type", "reportingController", "regarding.kind", "regarding.name",
    "regarding.namespace", "regarding.uid", "regarding.apiVersion", "regarding.resourceVersion",
    "regarding.fieldPath",
)
_LEASE_FIELDS = _OBJECT_FIELDS
# The field selectors of core/v1 Events: `kubectl describe` finds an object's Events with
# involvedObject.{kind,name,namespace,uid}.
_CORE_EVENT_FIELDS = _OBJECT_FIELDS + (
    "reason", "type", "involvedObject.kind", "involvedObject.name",
    "involvedObject.namespace", "involvedObject.uid", "involvedObject.apiVersion",
    "involvedObject.resourceVersion", "involvedObject.fieldPath",
)
# Go's strconv.ParseBool, which the apiserver uses for query parameters such as ``watch``.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


@dataclass(frozen=True)
class WorldResource:
    """A resource the simulated world has, as the apiserver serves it."""

    prefix: str  # of the URL path
    group: str
    api_version: str
    kind: str
    fields: tuple[str, ...]  # the field selectors it supports


WORLD_RESOURCES = {
    "deployments": WorldResource("apis/apps/v1", "apps", "apps/v1", "Deployment", _OBJECT_FIELDS),
    "replicasets": WorldResource("apis/apps/v1", "apps", "apps/v1", "ReplicaSet", _OBJECT_FIELDS),
    "pods": WorldResource("api/v1", "", "v1", "Pod", _POD_FIELDS),
    "configmaps": WorldResource("api/v1", "", "v1", "ConfigMap", _OBJECT_FIELDS),
    "secrets": WorldResource("api/v1", "", "v1", "Secret", _OBJECT_FIELDS + ("type",)),
    "services": WorldResource("api/v1", "", "v1", "Service", _OBJECT_FIELDS),
    "statefulsets": WorldResource("apis/apps/v1", "apps", "apps/v1", "StatefulSet",
                                  _OBJECT_FIELDS),
    "daemonsets": WorldResource("apis/apps/v1", "apps", "apps/v1", "DaemonSet", _OBJECT_FIELDS),
    "horizontalpodautoscalers": WorldResource("apis/autoscaling/v2", "autoscaling",
                                              "autoscaling/v2", "HorizontalPodAutoscaler",
                                              _OBJECT_FIELDS),
    "ingresses": WorldResource("apis/networking.k8s.io/v1", "networking.k8s.io",
                               "networking.k8s.io/v1", "Ingress", _OBJECT_FIELDS),
    "networkpolicies": WorldResource("apis/networking.k8s.io/v1", "networking.k8s.io",
                                     "networking.k8s.io/v1", "NetworkPolicy", _OBJECT_FIELDS),
}


class BadRequest(ValueError):
    """A request the fake refuses with a 400 (Kubernetes Status or Loki text)."""


# --- the common part ------------------------------------------------------------------------------


class _Fake:
    def __init__(self, faults: Faults | None) -> None:
        self.faults = faults
        self.requests_by_path: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.count(request)
        if self.faults is not None:
            override = self.faults(request)
            if override is not None:
                return override
        return self.handle(request)

    def count(self, request: Request) -> None:
        """Called with the lock held, before the ``faults`` hook: faulted requests count too."""
        self.requests_by_path[request.path] += 1

    def handle(self, request: Request) -> Response:
        raise NotImplementedError


class FailFirst:
    """A ``faults`` hook: the first ``count`` requests under ``path_prefix`` get ``response``."""

    def __init__(self, count: int, response: Response, *, path_prefix: str = "/") -> None:
        self.remaining = count
        self.response = response
        self.path_prefix = path_prefix
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response | None:
        if not request.path.startswith(self.path_prefix):
            return None
        with self._lock:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return self.response


# --- Kubernetes ----------------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str, details: Body | None = None) -> Body:
    body: Body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _status(code: int, reason: str, message: str, details: Body | None = None) -> Response:
    return Response(code, status_body(code, reason, message, details), KUBE_JSON)


def _not_found(group: str, resource: str, name: str) -> Response:
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, **({"group": group} if group else {}), "kind": resource}
    return _status(404, "NotFound", f'{qualified} "{name}" not found', details)


def _unknown_path() -> Response:
    return _status(404, "NotFound", "the server could not find the requested resource", {})


def _method_not_allowed() -> Response:
    return _status(405, "MethodNotAllowed",
                   "the server does not allow this method on the requested resource", {})


def parse_label_selector(text: str) -> list[Callable[[dict[str, str]], bool]]:
    """Kubernetes label selector syntax: ``a=b``, ``a!=b``, ``a in (x,y)``, ``a``, ``!a``."""
    requirements: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_requirements(text):
        if match := _SET_REQUIREMENT.match(part):
            key, op, raw = match.groups()
            values = {v.strip() for v in raw.split(",") if v.strip()}
            if not values:
                raise BadRequest(f"unable to parse requirement: for 'in', 'notin' operators, "
                                 f"values set can't be empty: {part.strip()[:60]!r}")
            if op == "in":
                requirements.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                requirements.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQUALITY_REQUIREMENT.match(part):
            key, op, value = match.groups()
            if op == "!=":
                requirements.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                requirements.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif match := _EXISTS_REQUIREMENT.match(part):
            negated, key = match.groups()
            requirements.append(lambda labels, k=key, n=bool(negated): (k in labels) != n)
        else:
            raise BadRequest(f"unable to parse requirement: {part.strip()[:60]!r}")
    return requirements


def _split_requirements(text: str) -> list[str]:
    """Requirements are comma-separated, but commas inside ``in (a,b)`` belong to their set."""
    if not text.strip():
        return []
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if any(not part.strip() for part in parts):
        raise BadRequest(f"unable to parse requirement: empty requirement in {text[:60]!r}")
    return parts


def parse_field_selector(text: str, supported: tuple[str, ...]) -> list[Callable[[Body], bool]]:
    """``field=value``, ``field==value``, ``field!=value``, comma-separated."""
    requirements: list[Callable[[Body], bool]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", part)
        if match is None:
            raise BadRequest(f"invalid selector: {part[:60]!r}; can't understand it")
        field_name, op, value = match.groups()
        if field_name not in supported:
            raise BadRequest(f'field label not supported: {field_name}')
        negate = op == "!="
        requirements.append(
            lambda item, f=field_name, v=value, n=negate: (_field_value(item, f) == v) != n)
    return requirements


def _field_value(item: Body, dotted: str) -> str:
    value: Any = item
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _selected(items: list[Body], request: Request, fields: tuple[str, ...]) -> list[Body]:
    labels = parse_label_selector(request.param("labelSelector") or "")
    field_checks = parse_field_selector(request.param("fieldSelector") or "", fields)
    return [item for item in items
            if all(check(item.get("metadata", {}).get("labels") or {}) for check in labels)
            and all(check(item) for check in field_checks)]


class KubeApiFake(_Fake):
    """The parts of the Kubernetes API the detector uses, over the simulated world.

    The world is a pure function of the clock and every resourceVersion is an instant
    (``world.resource_version_at``), so a WATCH from a resourceVersion is answered at once
    by comparing the world then and now: ADDED, MODIFIED and DELETED events in resourceVersion
    order, then a BOOKMARK at the current resourceVersion when the client allows bookmarks. The
    stream ends there for a tick's short watch: nothing changes until the simulated clock moves,
    so waiting for its ``timeoutSeconds`` would only slow the tests down. A longer watch (a
    follower's) is held for its ``timeoutSeconds`` of wall-clock time and streams each change
    as the clock moves, as the apiserver does. A resourceVersion older than
    ``watch_window`` is answered as the apiserver's watch cache answers it: one ERROR event with
    a 410 Expired Status.
    """

    def __init__(self, world: World, clock: Clock, *, faults: Faults | None = None,
                 watch_window: timedelta = DEFAULT_WATCH_WINDOW,
                 on_world_change: Callable[[World], None] | None = None) -> None:
        super().__init__(faults)
        self.world = world
        # Told of the world a write made (a rollback adds a revision): the Loki fake follows.
        self.on_world_change = on_world_change
        # The writes the fake accepted (rollbacks, dry runs included), for whoever watches it.
        self.writes: list[Request] = []
        self.clock = clock
        self.watch_window = watch_window
        # Collection GETs per path: plain lists, and watches.
        self.lists: Counter[str] = Counter()
        self.watches: Counter[str] = Counter()
        self._resource_version = FIRST_RESOURCE_VERSION
        # namespace -> name -> stored object, in creation order.
        self.events: dict[str, dict[str, Body]] = {}
        self.leases: dict[str, dict[str, Body]] = {}

    def count(self, request: Request) -> None:
        super().count(request)
        match = _NAMESPACED_PATH.match(request.path)
        if request.method != "GET" or match is None:
            return
        if request.param("watch") in _TRUE:
            self.watches[request.path] += 1
        elif match.group("name") is None:
            self.lists[request.path] += 1

    def handle(self, request: Request) -> Response:
        match = _NAMESPACED_PATH.match(request.path)
        if match is None:
            return _unknown_path()
        prefix, namespace, resource, name = match.group("prefix", "namespace", "resource", "name")
        try:
            world_resource = WORLD_RESOURCES.get(resource)
            if world_resource is not None and world_resource.prefix == prefix:
                return self._world_objects(request, world_resource, resource, namespace, name)
            if (prefix, resource) == (f"apis/{EVENTS_GROUP}/v1", "events"):
                self._refuse_watch(request, resource)
                return self._events(request, namespace, name)
            if (prefix, resource) == ("api/v1", "events") and name is None \
                    and request.method == "GET":
                self._refuse_watch(request, resource)
                return self._core_events(request, namespace)
            if (prefix, resource) == (f"apis/{LEASES_GROUP}/v1", "leases"):
                self._refuse_watch(request, resource)
                return self._leases(request, namespace, name)
        except BadRequest as exc:
            return _status(400, "BadRequest", str(exc))
        return _unknown_path()

    # Deployments, ReplicaSets, pods --------------------------------------------------------------

    def _world_objects(self, request: Request, world_resource: WorldResource, resource: str,
                       namespace: str, name: str | None) -> Response:
        if request.method == "PATCH" and resource == "deployments" and name is not None:
            return self._rollback(request, namespace, name)
        if request.method != "GET":
            return _method_not_allowed()
        if _parse_bool(request.param("watch"), "watch"):
            return self._watch(request, world_resource, resource, namespace, name)
        now = self.clock()
        if name is not None:
            item = next((obj for obj in self.world.objects_view(resource, namespace, now)
                         if obj["metadata"]["name"] == name), None)
            if item is None:
                return _not_found(world_resource.group, resource, name)
            return Response(200, item, KUBE_JSON)
        listing = self.world.list_body(resource, namespace, now)
        listing["items"] = _selected(listing["items"], request, world_resource.fields)
        return Response(200, listing, KUBE_JSON)

    def _rollback(self, request: Request, namespace: str, name: str) -> Response:
        """``kubectl rollout undo``, carried out as the Deployment controller does: a JSON patch
        that puts an earlier revision's template back makes that revision's ReplicaSet current
        again, as a new revision (the world gains a revision that ``reuses`` it). The patch's
        ``test`` of the resourceVersion is enforced (422 when stale, as the API server answers);
        ``dryRun=All`` validates and changes nothing. Other writes are not simulated (405)."""
        now = self.clock()
        current = self.world.deployment(namespace, now, name)
        part = self.world.part(name)
        if current is None or part is None:
            return _not_found("apps", "deployments", name)
        if (request.headers.get("content-type") or "").split(";")[0].strip() != JSON_PATCH:
            return _method_not_allowed()
        try:
            ops = json.loads(request.body or b"null")
            tests = [op["value"] for op in ops if op.get("op") == "test"
                     and op.get("path") == "/metadata/resourceVersion"]
            [template] = [op["value"] for op in ops if op.get("op") == "replace"
                          and op.get("path") == "/spec/template"]
            image = template["spec"]["containers"][0]["image"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise BadRequest("not a rollback: a JSON patch replacing /spec/template") from None
        if any(value != current["metadata"]["resourceVersion"] for value in tests):
            return _status(422, "Invalid",
                           "the server rejected our request due to an error in our request")
        history = part.scenario
        latest = part.current_revision(now)
        earlier = [r for r in history.revisions if r.image == image and r is not latest
                   and r.reuses is None]
        if not earlier or latest is None:
            return _status(422, "Invalid", f"no earlier revision runs {image}")
        self.writes.append(request)
        if request.param("dryRun") == "All":
            return Response(200, current, KUBE_JSON)
        target = earlier[-1]
        undo = target.model_copy(update={
            "revision": max(r.revision for r in history.revisions) + 1,
            "at": max(self.world.seconds(now), latest.at + 0.001), "reuses": target.revision,
            "pod_problems": ()})
        world = World(self.world.scenario.with_revisions(name, (*history.revisions, undo)),
                      t0=self.world.t0, incarnation=self.world.incarnation)
        self.world = world
        if self.on_world_change is not None:
            self.on_world_change(world)
        return Response(200, world.deployment(namespace, now, name), KUBE_JSON)

    def _watch(self, request: Request, world_resource: WorldResource, resource: str,
               namespace: str, name: str | None) -> Response:
        now = self.clock()
        current = int(resource_version_at(now))
        bookmarks = _parse_bool(request.param("allowWatchBookmarks"), "allowWatchBookmarks")
        _parse_timeout(request.param("timeoutSeconds"))
        requested = request.param("resourceVersion") or ""

        def selected(when: datetime) -> dict[str, Body]:
            objects = [obj for obj in self.world.objects_view(resource, namespace, when)
                       if name is None or obj["metadata"]["name"] == name]
            return {obj["metadata"]["name"]: obj
                    for obj in _selected(objects, request, world_resource.fields)}

        if requested in ("", "0"):
            # No resourceVersion: the current state first, as synthetic ADDED events.
            events = _watch_events({}, selected(now), current)
        else:
            since = _parse_resource_version(requested)
            oldest = current - int(self.watch_window / timedelta(milliseconds=1))
            if since > current:
                return _watch_error(_too_large(since, current))
            if since < oldest:
                return _watch_error(status_body(
                    410, "Expired", f"too old resource version: {since} ({oldest})"))
            events = _watch_events(selected(time_of_resource_version(since)), selected(now),
                                   current)
        def bookmark(version: int) -> Body:
            return {"type": "BOOKMARK", "object": {
                "kind": world_resource.kind, "apiVersion": world_resource.api_version,
                "metadata": {"resourceVersion": str(version)}}}

        if bookmarks:
            events.append(bookmark(current))
        hold = _parse_int(request.param("timeoutSeconds"))
        if hold is None or hold <= HELD_WATCH_MIN_SECONDS:
            return Response(200, _json_lines(events), KUBE_JSON)

        def held() -> Iterator[bytes]:
            # A long watch (a follower's) is held as the apiserver holds it, in wall-clock
            # seconds, and streams each change of the world as the clock moves.
            last = selected(now)
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                time.sleep(HELD_WATCH_POLL_SECONDS)
                when = self.clock()
                version = int(resource_version_at(when))
                seen = selected(when)
                changes = _watch_events(last, seen, version)
                last = seen
                if changes and bookmarks:
                    changes.append(bookmark(version))
                yield _json_lines(changes).encode() if changes else b""

        return Response(200, _json_lines(events), KUBE_JSON, stream=held())

    def _refuse_watch(self, request: Request, resource: str) -> None:
        if _parse_bool(request.param("watch"), "watch"):
            raise BadRequest(f"the simulated apiserver cannot watch {resource}")

    # Shared store helpers ------------------------------------------------------------------------

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _list_stored(self, request: Request, store: dict[str, Body], kind: str,
                     api_version: str, fields: tuple[str, ...]) -> Response:
        """The selected objects of ``store``, a page at a time when the client sends ``limit``
        (the ``continue`` token is the offset of the next page, ``remainingItemCount`` says how
        many follow, as the apiserver does for a list without a label selector)."""
        items = [{k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
                 for obj in store.values()]
        selected = _selected(items, request, fields)
        metadata: Body = {"resourceVersion": str(self._resource_version)}
        limit = _parse_limit(request.param("limit"))
        start = _parse_continue(request.param("continue"))
        if limit or start:
            end = start + limit if limit else len(selected)
            if end < len(selected):
                metadata["continue"] = str(end)
                metadata["remainingItemCount"] = len(selected) - end
            selected = selected[start:end]
        body = {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": selected}
        return Response(200, body, KUBE_JSON)

    def _prepare_create(self, request: Request, namespace: str, group: str,
                        resource: str) -> tuple[Body | None, Response | None]:
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body of the request is not a JSON object")
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            metadata = body["metadata"] = {}
        if metadata.get("namespace") not in (None, "", namespace):
            raise BadRequest("the namespace of the provided object does not match the namespace "
                             "sent on the request")
        metadata["namespace"] = namespace
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = str(metadata["generateName"]) + generated_suffix(
                5, group, namespace, self._resource_version)
        name = metadata.get("name")
        kind = body.get("kind") or {"events": "Event", "leases": "Lease"}[resource]
        if not name:
            return None, _invalid(kind, "", [
                ("FieldValueRequired", "Required value: name or generateName is required",
                 "metadata.name")])
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            return None, _invalid(kind, str(name), [
                ("FieldValueInvalid", "Invalid value: a lowercase RFC 1123 subdomain must consist "
                 "of lower case alphanumeric characters, '-' or '.'", "metadata.name")])
        return body, None

    def _store(self, body: Body, kind: str, api_version: str) -> Body:
        metadata = body["metadata"]
        stored_metadata = {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": _new_uid(metadata["namespace"], metadata["name"], self._resource_version),
            "resourceVersion": self._next_resource_version(),
            "creationTimestamp": kube_time(self.clock()),
        }
        for key in ("labels", "annotations", "ownerReferences"):
            if metadata.get(key):
                stored_metadata[key] = metadata[key]
        rest = {k: v for k, v in body.items() if k not in ("kind", "apiVersion", "metadata")}
        return {"kind": kind, "apiVersion": api_version, "metadata": stored_metadata, **rest}

    # Events --------------------------------------------------------------------------------------

    def _events(self, request: Request, namespace: str, name: str | None) -> Response:
        api_version = f"{EVENTS_GROUP}/v1"
        with self._lock:
            store = self.events.setdefault(namespace, {})
            if name is not None:
                if request.method != "GET":
                    return _method_not_allowed()
                if name not in store:
                    return _not_found(EVENTS_GROUP, "events", name)
                return Response(200, store[name], KUBE_JSON)
            if request.method == "GET":
                return self._list_stored(request, store, "EventList", api_version, _EVENT_FIELDS)
            if request.method != "POST":
                return _method_not_allowed()
            body, refusal = self._prepare_create(request, namespace, EVENTS_GROUP, "events")
            if refusal is not None:
                return refusal
            assert body is not None
            name = body["metadata"]["name"]
            problems = _event_problems(body)
            if problems:
                return _invalid("Event", name, problems)
            if name in store:
                return _status(409, "AlreadyExists",
                               f'events.{EVENTS_GROUP} "{name}" already exists',
                               {"name": name, "group": EVENTS_GROUP, "kind": "events"})
            stored = self._store(body, "Event", api_version)
            # The apiserver fills the deprecated core/v1 fields of a v1 Event with empty values.
            stored.setdefault("deprecatedSource", {})
            stored.setdefault("deprecatedFirstTimestamp", None)
            stored.setdefault("deprecatedLastTimestamp", None)
            if not request.param("dryRun"):
                store[name] = stored
            return Response(201, stored, KUBE_JSON)

    def _core_events(self, request: Request, namespace: str) -> Response:
        """core/v1 Events (what `kubectl describe` and `kubectl get events` read): the stored
        events.k8s.io Events as the apiserver converts them (``regarding`` becomes
        ``involvedObject``, ``note`` ``message``), and the Warning Events the kubelet writes about
        the world's pods that have a problem now (``World.warning_events``). Listed by name, as
        the apiserver lists from etcd, so that ``limit`` pages as it would."""
        kubelet = self.world.warning_events(namespace, self.clock())
        with self._lock:
            store = {name: _core_event(event)
                     for name, event in self.events.get(namespace, {}).items()}
            for event in kubelet:
                store.setdefault(event["metadata"]["name"], event)
            store = dict(sorted(store.items()))
            return self._list_stored(request, store, "EventList", "v1", _CORE_EVENT_FIELDS)

    # Leases --------------------------------------------------------------------------------------

    def _leases(self, request: Request, namespace: str, name: str | None) -> Response:
        api_version = f"{LEASES_GROUP}/v1"
        with self._lock:
            store = self.leases.setdefault(namespace, {})
            if name is None:
                if request.method == "GET":
                    return self._list_stored(request, store, "LeaseList", api_version,
                                             _LEASE_FIELDS)
                if request.method != "POST":
                    return _method_not_allowed()
                body, refusal = self._prepare_create(request, namespace, LEASES_GROUP, "leases")
                if refusal is not None:
                    return refusal
                assert body is not None
                name = body["metadata"]["name"]
                if name in store:
                    return _status(409, "AlreadyExists",
                                   f'leases.{LEASES_GROUP} "{name}" already exists',
                                   {"name": name, "group": LEASES_GROUP, "kind": "leases"})
                stored = self._store(body, "Lease", api_version)
                if not request.param("dryRun"):
                    store[name] = stored
                return Response(201, stored, KUBE_JSON)
            if request.method == "GET":
                if name not in store:
                    return _not_found(LEASES_GROUP, "leases", name)
                return Response(200, store[name], KUBE_JSON)
            if request.method == "PUT":
                return self._replace_lease(request, store, namespace, name)
            if request.method == "DELETE":
                if name not in store:
                    return _not_found(LEASES_GROUP, "leases", name)
                deleted = store.pop(name)
                return Response(200, {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": LEASES_GROUP, "kind": "leases",
                                "uid": deleted["metadata"]["uid"]}}, KUBE_JSON)
            return _method_not_allowed()

    def _replace_lease(self, request: Request, store: dict[str, Body], namespace: str,
                       name: str) -> Response:
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"couldn't get version/kind; json parse error: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise BadRequest("the body of the request is not a Lease object")
        metadata = body["metadata"]
        if metadata.get("name") != name:
            raise BadRequest(f"the name of the object ({metadata.get('name')}) does not match the "
                             f"name on the URL ({name})")
        if metadata.get("namespace") not in (None, "", namespace):
            raise BadRequest("the namespace of the provided object does not match the namespace "
                             "sent on the request")
        current = store.get(name)
        if current is None:
            return _not_found(LEASES_GROUP, "leases", name)
        sent_version = metadata.get("resourceVersion")
        if not sent_version:
            return _invalid("Lease", name, [
                ("FieldValueInvalid", "Invalid value: 0x0: must be specified for an update",
                 "metadata.resourceVersion")])
        if sent_version != current["metadata"]["resourceVersion"]:
            return _status(
                409, "Conflict",
                f'Operation cannot be fulfilled on leases.{LEASES_GROUP} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": LEASES_GROUP, "kind": "leases"})
        kept = {k: current["metadata"][k]
                for k in ("name", "namespace", "uid", "creationTimestamp")}
        new_metadata = {**kept, "resourceVersion": self._next_resource_version()}
        for key in ("labels", "annotations", "ownerReferences"):
            if metadata.get(key):
                new_metadata[key] = metadata[key]
        rest = {k: v for k, v in body.items() if k not in ("kind", "apiVersion", "metadata")}
        updated = {"kind": "Lease", "apiVersion": f"{LEASES_GROUP}/v1", "metadata": new_metadata,
                   **rest}
        if not request.param("dryRun"):
            store[name] = updated
        return Response(200, updated, KUBE_JSON)


def _parse_bool(value: str | None, name: str) -> bool:
    if value is None or value in _FALSE or value == "":
        return False
    if value in _TRUE:
        return True
    raise BadRequest(f'invalid value for query parameter "{name}": {value[:40]!r} is not a boolean')


def _parse_limit(value: str | None) -> int:
    """``limit``: 0 (absent, zero or negative) lists everything, as the apiserver does."""
    if value is None or value == "":
        return 0
    if not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise BadRequest(f'invalid value for query parameter "limit": {value[:40]!r} is not an '
                         "integer")
    return max(int(value), 0)


def _parse_continue(value: str | None) -> int:
    if not value:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise BadRequest("continue key is not valid: the token was not issued by this server")
    return int(value)


def _parse_int(value: str | None) -> int | None:
    return int(value) if value is not None and re.fullmatch(r"-?[0-9]{1,18}", value) else None


def _parse_timeout(value: str | None) -> None:
    if value is not None and not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise BadRequest(f'invalid value for query parameter "timeoutSeconds": {value[:40]!r} is '
                         "not an integer")


def _parse_resource_version(value: str) -> int:
    """As the apiserver's strconv.ParseUint: decimal digits only."""
    if not re.fullmatch(r"[0-9]{1,19}", value):
        shown = value[:60]
        raise BadRequest(f'resourceVersion: Invalid value: "{shown}": strconv.ParseUint: '
                         f'parsing "{shown}": invalid syntax')
    return int(value)


def _too_large(requested: int, current: int) -> Body:
    """The Status the watch cache gives up with when asked for a resourceVersion it never saw
    (here: a client that kept a resourceVersion while the simulated clock went back)."""
    return status_body(504, "Timeout",
                       f"Too large resource version: {requested}, current: {current}",
                       {"causes": [{"reason": "ResourceVersionTooLarge",
                                    "message": "Too large resource version"}],
                        "retryAfterSeconds": 1})


def _watch_events(before: dict[str, Body], after: dict[str, Body], current: int) -> list[Body]:
    """The events that take a watcher from ``before`` to ``after`` (objects by name)."""
    events: list[Body] = []
    for name, obj in after.items():
        old = before.get(name)
        if old is None:
            events.append({"type": "ADDED", "object": obj})
        elif old != obj:
            # Its resourceVersion moved, so it changed, even if it changed back since.
            events.append({"type": "MODIFIED", "object": obj})
    for name, old in before.items():
        if name not in after:
            # The object as it last was, at the resourceVersion of its deletion.
            gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(current)}}
            events.append({"type": "DELETED", "object": gone})
    # The apiserver sends events in the order of their resourceVersions (stable: list order
    # within one resourceVersion).
    events.sort(key=lambda event: int(event["object"]["metadata"]["resourceVersion"]))
    return events


def _watch_error(status: Body) -> Response:
    """A watch the apiserver refuses after accepting it: 200, and one ERROR event."""
    return Response(200, _json_lines([{"type": "ERROR", "object": status}]), KUBE_JSON)


def _json_lines(events: list[Body]) -> str:
    return "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)


def _new_uid(namespace: str, name: str, counter: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sim://{namespace}/{name}/{counter}"))


def _core_event(event: Body) -> Body:
    """An events.k8s.io/v1 Event as core/v1 shows it (the fields `kubectl describe` uses)."""
    regarding = event.get("regarding") or {}
    return {
        "kind": "Event", "apiVersion": "v1", "metadata": event["metadata"],
        "involvedObject": {key: regarding[key] for key in
                           ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                            "fieldPath") if key in regarding},
        "reason": event.get("reason", ""), "message": event.get("note", ""),
        "source": {"component": event.get("reportingController", "")},
        "firstTimestamp": None, "lastTimestamp": None, "count": 0,
        "type": event.get("type", ""), "eventTime": event.get("eventTime"),
        "action": event.get("action", ""), "reportingComponent":
        event.get("reportingController", ""), "reportingInstance":
        event.get("reportingInstance", ""),
    }


def _event_problems(body: Body) -> list[tuple[str, str, str]]:
    """The validation of an events.k8s.io/v1 Event the apiserver does: (reason, message, field)."""
    problems = []
    for field_name in ("eventTime", "reportingController", "reportingInstance", "action"):
        if not body.get(field_name):
            problems.append(("FieldValueRequired", "Required value", field_name))
    controller = body.get("reportingController")
    if controller and (not isinstance(controller, str) or not _QUALIFIED_NAME.match(controller)
                       or len(controller.rpartition("/")[2]) > 63):
        problems.append(("FieldValueInvalid", f"Invalid value: {json.dumps(controller)}: name part "
                         "must consist of alphanumeric characters, '-', '_' or '.', and must "
                         "start and end with an alphanumeric character", "reportingController"))
    if body.get("type") not in ("Normal", "Warning"):
        problems.append(("FieldValueNotSupported", f"Unsupported value: "
                         f"{json.dumps(body.get('type'))}: supported values: \"Normal\", "
                         f"\"Warning\"", "type"))
    for field_name, limit in (("reason", 128), ("action", 128), ("note", 1024)):
        value = body.get(field_name)
        if isinstance(value, str) and len(value) > limit:
            problems.append(("FieldValueTooLong", f"Too long: may not be longer than {limit}",
                             field_name))
    return problems


def _invalid(kind: str, name: str, problems: list[tuple[str, str, str]]) -> Response:
    """422 Invalid, as in event_create_invalid.json."""
    summary = ", ".join(f"{field_name}: {message}" for _, message, field_name in problems)
    return _status(422, "Invalid", f'{kind} "{name}" is invalid: [{summary}]', {
        "name": name, "kind": kind,
        "causes": [{"reason": reason, "message": message, "field": field_name}
                   for reason, message, field_name in problems],
    })


# --- Loki ----------------------------------------------------------------------------------------


def _loki_text(status: int, text: str) -> Response:
    return Response(status, text, PLAIN_TEXT)


class LokiFake(_Fake):
    """Loki's query API over the simulated world's log lines."""

    def __init__(self, world: World, clock: Clock, *, faults: Faults | None = None) -> None:
        super().__init__(faults)
        self.world = world
        self.clock = clock

    def handle(self, request: Request) -> Response:
        if request.path == "/ready":
            return _loki_text(200, "ready\n")
        if request.path == "/loki/api/v1/status/buildinfo":
            # As Loki answers it: the version decides whether lines have a detected_level.
            return Response(200, {"version": self.world.scenario.loki.version, "revision": "sim",
                                  "branch": "HEAD", "buildUser": "sim", "buildDate": "",
                                  "goVersion": ""}, LOKI_JSON)
        if request.path not in ("/loki/api/v1/query", "/loki/api/v1/query_range"):
            return _loki_text(404, "404 page not found\n")
        if request.method not in ("GET", "POST"):
            return _loki_text(405, "method not allowed\n")
        params = _loki_params(request)
        query = params.get("query", "")
        if not query.strip():
            return _loki_text(400, "parse error : syntax error: unexpected $end")
        try:
            if request.path == "/loki/api/v1/query":
                at = self._time(params.get("time"), "time")
                status, body = self.world.loki_query(query, from_unix_nanos(at))
            else:
                end = self._time(params.get("end"), "end")
                start = parse_loki_time(params["start"]) if params.get("start") else \
                    end - 3600 * 1_000_000_000
                limit = _positive_int(params.get("limit", "100"), "limit")
                direction = params.get("direction", "backward").lower()
                step = parse_step_ns(params["step"]) if params.get("step") else None
                status, body = self.world.loki_query_range(
                    query, from_unix_nanos(start), from_unix_nanos(end), limit=limit,
                    direction=direction, step_ns=step)
        except (LogQLError, BadRequest) as exc:
            return _loki_text(400, str(exc))
        if isinstance(body, str):
            return _loki_text(status, body)
        return Response(status, body, LOKI_JSON)

    def _time(self, value: str | None, name: str) -> int:
        if not value:
            return to_unix_nanos(self.clock())
        try:
            return parse_loki_time(value)
        except LogQLError:
            raise BadRequest(f'invalid parameter "{name}": cannot parse "{value[:40]}" to a valid '
                             "timestamp") from None


def _loki_params(request: Request) -> dict[str, str]:
    params = {name: values[0] for name, values in request.query.items() if values}
    if request.method == "POST" and request.body:
        form = parse_qs(request.body.decode("utf-8", "replace"))
        params.update({name: values[0] for name, values in form.items() if values})
    return params


def _positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f'invalid parameter "{name}": {value[:40]!r} is not an integer') from None
    if number < 1:
        raise BadRequest(f'invalid parameter "{name}": must be positive')
    return number


# --- Slack ---------------------------------------------------------------------------------------


class SlackSink(_Fake):
    """A Slack incoming webhook: 200 "ok" for a message, Slack's 400 texts otherwise."""

    def __init__(self, *, faults: Faults | None = None) -> None:
        super().__init__(faults)
        self.messages: list[Any] = []

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, "invalid_method", PLAIN_TEXT)
        try:
            payload = json.loads(request.body or b"null")
        except (ValueError, RecursionError):
            return Response(400, "invalid_payload", PLAIN_TEXT)
        if not isinstance(payload, dict):
            return Response(400, "invalid_payload", PLAIN_TEXT)
        if not payload.get("text") and not payload.get("blocks") and not payload.get("attachments"):
            return Response(400, "no_text", PLAIN_TEXT)
        with self._lock:
            self.messages.append(payload)
        return Response(200, "ok", PLAIN_TEXT)
