"""A fake kube-apiserver on 127.0.0.1 that answers with the bodies recorded from a real one.

Each recording in ``tests/fixtures/kubernetes`` is served on the path it was recorded from; a test
edits what it needs (status, body, headers, delay) before calling the real ``kubernetes`` client:

    with FakeApiServer() as apiserver:
        apiserver.serve_recording("replicasets_forbidden.json")       # 403 on the list path
        apiserver.edit(REPLICASETS_PATH, delay=1.0)                   # or make it slow
        apiserver.body(PODS_PATH)["items"].clear()                    # or change the JSON

Paths that were not recorded get the API server's own 404 ``Status``. Like kube-apiserver, the
fake answers 406 to an ``Accept`` that rules out JSON and 415 to a body of another media type.

A GET with ``watch=true`` on a path is answered from ``serve_watch`` instead: newline-delimited
JSON events, then the stream ends (the real server closes it after ``timeoutSeconds``). With no
events configured, a watch gets an empty stream: nothing changed.

    apiserver.serve_watch(REPLICASETS_PATH, watch_event("DELETED", item), bookmark("240"))
    apiserver.watch_versions(REPLICASETS_PATH)      # the resourceVersion each watch started from
    apiserver.exchanges[-1].response_bytes          # what the server sent for one request
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from incident_detector.sim.server import LocalServer, Request, Response

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
NAMESPACE = "demo-aiops"

DEPLOYMENTS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
REPLICASETS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets"
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"

# What a fresh server answers: the successful list calls of one namespace.
DEFAULT_RECORDINGS = ("deployments_list.json", "replicasets_list.json", "pods_list.json")

# What kube-apiserver answers for a path it does not serve.
NOT_FOUND_STATUS = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}


# Label selector requirements kube-apiserver accepts: "key in (a,b)", "key notin (a)", "key=v",
# "key==v", "key!=v", "key", "!key".
_SELECTOR_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_REQUIREMENT = re.compile(rf"\s*({_SELECTOR_KEY})\s+(in|notin)\s+\(([^()]*)\)\s*")
_EQUALITY_REQUIREMENT = re.compile(rf"\s*({_SELECTOR_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*")
_EXISTS_REQUIREMENT = re.compile(rf"\s*(!?)\s*({_SELECTOR_KEY})\s*")

# The body of a watch during which nothing changed.
EMPTY_WATCH = b""

# Media ranges of an Accept header that JSON satisfies.
_ACCEPTS_JSON = frozenset({"application/json", "application/*", "*/*"})


def load_recording(name: str) -> dict[str, Any]:
    """One recorded exchange: ``{"request": ..., "response": ..., "note": ...}``."""
    return json.loads((FIXTURES / name).read_text())


def recorded_items(name: str) -> list[dict[str, Any]]:
    """The ``items`` of a recorded list response (a fresh copy, free to edit)."""
    return load_recording(name)["response"]["json"]["items"]


def recorded_path(name: str) -> str:
    return urlsplit(load_recording(name)["request"]["url"].replace("{K8S}", "http://k8s")).path


def recorded_response(name: str) -> Response:
    response = load_recording(name)["response"]
    body = response["json"] if response["json"] is not None else (response["text"] or "")
    return Response(status=response["status"], body=body, content_type=response["content_type"])


def is_watch(request: Request) -> bool:
    """A GET with ``watch=true`` (or ``1``, which kube-apiserver also accepts)."""
    return request.method == "GET" and (request.param("watch") or "").lower() in ("true", "1")


def watch_event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """One event of a watch stream, as kube-apiserver writes it."""
    return {"type": event_type, "object": obj}


def bookmark(resource_version: str, *, kind: str = "ReplicaSet",
             api_version: str = "apps/v1") -> dict[str, Any]:
    """A BOOKMARK event: only the object's kind and its resourceVersion, no name."""
    return watch_event("BOOKMARK", {"kind": kind, "apiVersion": api_version,
                                    "metadata": {"resourceVersion": resource_version}})


def expired_event(resource_version: str = "215", current: str = "9999") -> dict[str, Any]:
    """The ERROR event kube-apiserver sends when a watch starts from a compacted version."""
    return watch_event("ERROR", status_body(
        410, "Expired", f"too old resource version: {resource_version} ({current})"))


def watch_body(events: Iterable[dict[str, Any] | str | bytes]) -> bytes:
    """Newline-delimited JSON; a ``str``/``bytes`` event is sent as is (a damaged line)."""
    lines = []
    for event in events:
        if isinstance(event, bytes):
            lines.append(event)
        elif isinstance(event, str):
            lines.append(event.encode())
        else:
            lines.append(json.dumps(event, separators=(",", ":")).encode())
    return b"".join(line + b"\n" for line in lines)


@dataclass(frozen=True)
class Exchange:
    """One request and the size of the body answered to it."""

    request: Request
    response_bytes: int


def _valid_requirement(requirement: str) -> bool:
    return any(pattern.fullmatch(requirement) for pattern in
               (_SET_REQUIREMENT, _EQUALITY_REQUIREMENT, _EXISTS_REQUIREMENT))


def _label_matches(requirement: str, labels: dict[str, str]) -> bool:
    if match := _SET_REQUIREMENT.fullmatch(requirement):
        key, operator, values = match.groups()
        found = labels.get(key) in {v.strip() for v in values.split(",") if v.strip()}
        return found if operator == "in" else not found
    if match := _EQUALITY_REQUIREMENT.fullmatch(requirement):
        key, operator, value = match.groups()
        return (labels.get(key) == value) != (operator == "!=")
    match = _EXISTS_REQUIREMENT.fullmatch(requirement)
    assert match is not None
    negated, key = match.groups()
    return (key in labels) != bool(negated)


def _media_type_problem(request: Request) -> Response | None:
    """kube-apiserver's answer to a request whose media types it cannot serve (only JSON here)."""
    accept = request.headers.get("accept")
    if accept is not None and not {r.split(";")[0].strip().lower()
                                   for r in accept.split(",")} & _ACCEPTS_JSON:
        return status_response(406, "NotAcceptable", "the server was unable to respond with a "
                               "content type that the client supports")
    content_type = request.headers.get("content-type")
    if request.body and content_type is not None \
            and content_type.split(";")[0].strip().lower() != "application/json":
        return status_response(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted "
                               f"media types include: application/json, not {content_type}")
    return None


class FakeApiServer:
    """Routes ``(method, path)`` to a ``Response``; records every request it receives."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Response] = {}
        # path -> the answer to watch requests on it.
        self.watches: dict[str, Response] = {}
        self.exchanges: list[Exchange] = []
        # Set by hold_watches: watch requests wait until this many have arrived.
        self._hold_lock = threading.Lock()
        self._watchers = 0
        self._watchers_in = threading.Event()
        self._server = LocalServer(self._answer)
        self.reset()

    def reset(self) -> None:
        """Back to the recorded lists and no requests seen: one server can serve many tests
        (stopping a server takes half a second, starting one is cheap)."""
        self.routes.clear()
        self.watches.clear()
        for name in DEFAULT_RECORDINGS:
            self.serve_recording(name)
        self._server.requests.clear()
        self.exchanges.clear()
        with self._hold_lock:
            self._watchers = 0
            self._watchers_in.set()

    # -- configuring answers ----------------------------------------------------------------

    def serve_recording(self, name: str, *, path: str | None = None) -> Response:
        """Serve a recording on its own path, or on ``path`` (a 404 body on a list path, say)."""
        recording = load_recording(name)
        response = recorded_response(name)
        self.routes[(recording["request"]["method"], path or recorded_path(name))] = response
        return response

    def serve(self, path: str, response: Response, *, method: str = "GET") -> None:
        self.routes[(method, path)] = response

    def edit(self, path: str, *, method: str = "GET", **changes: Any) -> Response:
        """Change fields of a route's response: ``status``, ``body``, ``headers``, ``delay``..."""
        response = self.routes[(method, path)]
        for name, value in changes.items():
            if not hasattr(response, name):
                raise AttributeError(f"Response has no field {name!r}")
            setattr(response, name, value)
        return response

    def body(self, path: str, *, method: str = "GET") -> Any:
        """The JSON body of a route, to edit in place."""
        return self.routes[(method, path)].body

    def serve_watch(self, path: str, *events: dict[str, Any] | str | bytes) -> Response:
        """Answer every watch request on ``path`` with these events, until changed. The
        ``Response`` is returned to edit (``status``/``body`` for an HTTP error, ``delay``)."""
        response = Response(status=200, body=watch_body(events), content_type="application/json")
        self.watches[path] = response
        return response

    def hold_watches(self, watchers: int) -> None:
        """Answer no watch request until ``watchers`` of them have arrived, then all at once:
        a client that sent them one after the other would wait on the first until it timed
        out, whatever the machine's load."""
        with self._hold_lock:
            self._watchers = watchers
            self._watchers_in = threading.Event()

    def _held_until_all_watchers_arrive(self) -> None:
        with self._hold_lock:
            watchers_in = self._watchers_in
            if not watchers_in.is_set():
                self._watchers -= 1
                if self._watchers <= 0:
                    watchers_in.set()
        # The ceiling only bounds a test whose client never sends the others.
        watchers_in.wait(30)

    # -- what was asked -----------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        return self._server.requests

    @property
    def paths(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self._server.requests]

    def watch_versions(self, path: str) -> list[str | None]:
        """The ``resourceVersion`` each watch request on ``path`` started from, in order."""
        return [r.param("resourceVersion") for r in self._server.requests
                if r.path == path and is_watch(r)]

    # -- running -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def _answer(self, request: Request) -> Response:
        response = _media_type_problem(request) or self._handle(request)
        payload = response.encoded()
        response.body = payload  # encoded once, here, so the size counted is the size sent
        self.exchanges.append(Exchange(request=request, response_bytes=len(payload)))
        return response

    def _handle(self, request: Request) -> Response:
        if is_watch(request):
            self._held_until_all_watchers_arrive()
            watched = self.watches.get(request.path)
            if watched is None:
                return Response(status=200, body=EMPTY_WATCH, content_type="application/json")
            return copy.deepcopy(watched)
        response = self.routes.get((request.method, request.path))
        if response is None:
            return Response(status=404, body=NOT_FOUND_STATUS)
        # A copy, so that a test editing a body while a request is answered sees no tearing.
        response = copy.deepcopy(response)
        _paginate(request, response)
        selector = request.param("labelSelector")
        if selector is not None and response.status == 200 and isinstance(response.body, dict) \
                and isinstance(response.body.get("items"), list):
            requirements = re.split(r",(?![^()]*\))", selector)
            if not all(_valid_requirement(r) for r in requirements):
                return status_response(400, "BadRequest",
                                       f"unable to parse requirement: {selector[:60]!r}")
            response.body["items"] = [
                item for item in response.body["items"]
                if all(_label_matches(r, item.get("metadata", {}).get("labels") or {})
                       for r in requirements)]
        return response

    def __enter__(self) -> "FakeApiServer":
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


# ---------------------------------------------------------------------------------------------
# Leases and events.k8s.io Events, stored and validated the way kube-apiserver does it.

LEASES_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
EVENTS_PATH = f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events"

# metav1.MicroTime is parsed with the Go layout "2006-01-02T15:04:05.000000Z07:00": exactly six
# fractional digits, then Z or an offset.
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
EVENT_NOTE_MAX_BYTES = 1024
EVENT_FIELD_SELECTORS = ("reason", "type", "reportingController", "metadata.name",
                         "metadata.namespace", "regarding.kind", "regarding.name")


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """kube-apiserver's ``Status`` for a failed request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code}


def status_response(code: int, reason: str, message: str, **details: Any) -> Response:
    return Response(status=code, body=status_body(code, reason, message, **details))


class StatefulApiServer(FakeApiServer):
    """``FakeApiServer`` that also keeps Leases (compare-and-swap on ``resourceVersion``) and
    events.k8s.io Events of ``NAMESPACE``, validating them like kube-apiserver.

    A route set with ``serve``/``serve_recording``/``edit`` still wins over the stored objects:
    that is how a test makes one call fail (``serve(LEASES_PATH + "/x", Response(503))``) and
    ``unserve`` puts the stored objects back.
    """

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self._resource_version = 1000
        self._lock = threading.Lock()
        # Set by hold_lease_reads: Lease reads wait until this many have arrived.
        self._lease_readers = 0
        self._lease_readers_in = threading.Event()
        super().__init__()

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.leases.clear()
            self.events.clear()
            self._lease_readers = 0
            self._lease_readers_in.set()

    def hold_lease_reads(self, readers: int) -> None:
        """Answer no Lease read until ``readers`` reads have arrived (then every read at once):
        the readers all see the same resourceVersion before any of them writes (a race, made
        deterministic whatever the machine's load)."""
        with self._lock:
            self._lease_readers = readers
            self._lease_readers_in = threading.Event()

    def unserve(self, path: str, *, method: str = "GET") -> None:
        self.routes.pop((method, path), None)

    def _handle(self, request: Request) -> Response:
        if (request.method, request.path) not in self.routes:
            if request.path == LEASES_PATH or request.path.startswith(LEASES_PATH + "/"):
                with self._lock:
                    response = self._lease(request)
                    readers_in = self._lease_readers_in
                    if request.method == "GET" and not readers_in.is_set():
                        self._lease_readers -= 1
                        if self._lease_readers <= 0:
                            readers_in.set()
                # Outside the lock, so that the other readers come in; the ceiling only bounds
                # a test that never sends them.
                readers_in.wait(30)
                return response
            if request.path == EVENTS_PATH:
                with self._lock:
                    return self._event(request)
        return super()._handle(request)

    def _next_resource_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    # -- Leases ---------------------------------------------------------------------------------

    def _lease(self, request: Request) -> Response:
        name = request.path[len(LEASES_PATH) + 1:] if request.path != LEASES_PATH else None
        details = {"name": name, "group": "coordination.k8s.io", "kind": "leases"}
        if request.method == "GET" and name:
            if name not in self.leases:
                response = status_response(404, "NotFound",
                                           f'leases.coordination.k8s.io "{name}" not found',
                                           **details)
            else:
                response = Response(200, copy.deepcopy(self.leases[name]))
            return response
        if request.method not in ("POST", "PUT") or (request.method == "POST") != (name is None):
            return status_response(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested "
                                   "resource")
        body = request.json()
        problem = self._lease_problem(body)
        if problem is not None:
            return problem
        body_name = body["metadata"].get("name")
        if request.method == "POST":
            if body_name in self.leases:
                return recorded_response("lease_conflict.json")
            return Response(201, self._store_lease(body))
        if body_name != name:
            return status_response(400, "BadRequest",
                                   "the name of the object does not match the name on the URL")
        if name not in self.leases:
            return status_response(404, "NotFound",
                                   f'leases.coordination.k8s.io "{name}" not found', **details)
        sent_version = body["metadata"].get("resourceVersion")
        if not sent_version:
            return status_response(422, "Invalid",
                                   f'Lease.coordination.k8s.io "{name}" is invalid: '
                                   "metadata.resourceVersion: Invalid value: 0x0: must be "
                                   "specified for an update", **details)
        if sent_version != self.leases[name]["metadata"]["resourceVersion"]:
            return status_response(409, "Conflict",
                                   f'Operation cannot be fulfilled on leases.coordination.k8s.io '
                                   f'"{name}": the object has been modified; please apply your '
                                   "changes to the latest version and try again", **details)
        return Response(200, self._store_lease(body, previous=self.leases[name]))

    @staticmethod
    def _lease_problem(body: Any) -> Response | None:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict) \
                or not isinstance(body.get("spec", {}), dict):
            return status_response(400, "BadRequest", "the body is not a Lease")
        spec = body.get("spec", {})
        for field in ("acquireTime", "renewTime"):
            value = spec.get(field)
            if value is not None and not (isinstance(value, str) and MICRO_TIME.fullmatch(value)):
                return status_response(
                    400, "BadRequest",
                    f'Lease in version "v1" cannot be handled as a Lease: parsing time {value!r} '
                    'as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and (not isinstance(duration, int) or duration <= 0):
            return status_response(422, "Invalid", "spec.leaseDurationSeconds: Invalid value: "
                                                   "must be greater than 0")
        return None

    def _store_lease(self, body: dict[str, Any], *,
                     previous: dict[str, Any] | None = None) -> dict[str, Any]:
        stored = recorded_response("lease_create.json").body
        metadata = stored["metadata"]
        metadata["name"] = body["metadata"]["name"]
        metadata["namespace"] = NAMESPACE
        metadata["resourceVersion"] = self._next_resource_version()
        if previous is not None:
            metadata["uid"] = previous["metadata"]["uid"]
            metadata["creationTimestamp"] = previous["metadata"]["creationTimestamp"]
        # Empty fields are omitted from what the server returns, as Go's omitempty does.
        stored["spec"] = {k: v for k, v in body.get("spec", {}).items() if v not in (None, "")}
        self.leases[metadata["name"]] = stored
        return copy.deepcopy(stored)

    def lease_spec(self, name: str) -> dict[str, Any]:
        """The stored spec of a Lease (what another replica would read)."""
        with self._lock:
            return copy.deepcopy(self.leases[name]["spec"])

    def put_lease(self, name: str, spec: dict[str, Any]) -> None:
        """Store a Lease as if another client had written it."""
        with self._lock:
            self._store_lease({"metadata": {"name": name}, "spec": spec},
                              previous=self.leases.get(name))

    # -- Events ---------------------------------------------------------------------------------

    def _event(self, request: Request) -> Response:
        if request.method == "GET":
            return self._list_events(request)
        if request.method != "POST":
            return status_response(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested "
                                   "resource")
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            return status_response(400, "BadRequest", "the body is not an Event")
        event_time = body.get("eventTime")
        if event_time is not None and not (isinstance(event_time, str)
                                           and MICRO_TIME.fullmatch(event_time)):
            return status_response(
                400, "BadRequest",
                f'Event in version "v1" cannot be handled as a Event: parsing time '
                f'{event_time!r} as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
        name = body["metadata"].get("name")
        namespace = body["metadata"].get("namespace", NAMESPACE)
        if namespace != NAMESPACE:
            return status_response(400, "BadRequest", "the namespace of the provided object "
                                   "does not match the namespace sent on the request")
        causes = event_validation_causes(body)
        if causes:
            listed = ", ".join(f"{cause['field']}: {cause['message']}" for cause in causes)
            return status_response(422, "Invalid", f'Event "{name}" is invalid: [{listed}]',
                                   name=name, kind="Event", causes=causes)
        if name in self.events:
            return status_response(409, "AlreadyExists",
                                   f'events.events.k8s.io "{name}" already exists',
                                   name=name, group="events.k8s.io", kind="events")
        stored = recorded_response("event_create.json").body
        for key in ("eventTime", "reportingController", "reportingInstance", "action", "reason",
                    "type", "note", "regarding"):
            if key in body:
                stored[key] = body[key]
            else:
                stored.pop(key, None)
        metadata = stored["metadata"]
        metadata.update({"name": name, "namespace": NAMESPACE,
                         "resourceVersion": self._next_resource_version()})
        if body["metadata"].get("annotations"):
            metadata["annotations"] = body["metadata"]["annotations"]
        self.events[name] = stored
        return Response(201, copy.deepcopy(stored))

    def _list_events(self, request: Request) -> Response:
        wanted: dict[str, str] = {}
        for term in filter(None, (request.param("fieldSelector") or "").split(",")):
            field, _, value = term.partition("=")
            if field not in EVENT_FIELD_SELECTORS:
                return status_response(400, "BadRequest",
                                       f'"{field}" is not a known field selector')
            wanted[field] = value
        listed = recorded_response("events_list.json").body
        listed["metadata"]["resourceVersion"] = str(self._resource_version)
        listed["items"] = [
            {k: v for k, v in copy.deepcopy(event).items() if k not in ("kind", "apiVersion")}
            for event in self.events.values()
            if all(_field(event, field) == value for field, value in wanted.items())
        ]
        return Response(200, listed)


def _field(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def event_validation_causes(event: dict[str, Any]) -> list[dict[str, str]]:
    """What kube-apiserver's validation of a new events.k8s.io/v1 Event finds wrong with it."""
    causes: list[dict[str, str]] = []

    def invalid(field: str, message: str, reason: str = "FieldValueInvalid") -> None:
        causes.append({"reason": reason, "message": message, "field": field})

    name = event["metadata"].get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        invalid("metadata.name", f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain")
    if event.get("eventTime") is None:
        invalid("eventTime", "Required value", "FieldValueRequired")
    controller = event.get("reportingController")
    if not controller:
        invalid("reportingController", "Required value", "FieldValueRequired")
    else:
        prefix, slash, part = str(controller).rpartition("/")
        if (slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))) \
                or len(part) > 63 or not QUALIFIED_NAME_PART.fullmatch(part):
            invalid("reportingController", f"Invalid value: {controller!r}: not a qualified name")
    for field in ("reportingInstance", "action", "reason"):
        value = event.get(field)
        if not value:
            invalid(field, "Required value", "FieldValueRequired")
        elif len(value) > 128:
            invalid(field, "Too long: may not be more than 128 bytes", "FieldValueTooLong")
    if event.get("type") not in ("Normal", "Warning"):
        invalid("type", f"Unsupported value: {event.get('type')!r}", "FieldValueNotSupported")
    note = event.get("note") or ""
    if len(note.encode("utf-8")) > EVENT_NOTE_MAX_BYTES:
        invalid("note", "Too long: may not be more than 1024 bytes", "FieldValueTooLong")
    regarding = event.get("regarding") or {}
    if regarding.get("namespace") not in (None, "", event["metadata"].get("namespace", NAMESPACE)):
        invalid("regarding.namespace", "Invalid value: does not match event.namespace")
    return causes


def _paginate(request: Request, response: Response) -> None:
    """``limit``/``continue`` as kube-apiserver does: a page of items and a token for the next
    (the token here is simply the page number)."""
    limit = request.param("limit")
    if limit is None or response.status != 200 or not isinstance(response.body, dict) \
            or not isinstance(response.body.get("items"), list):
        return
    size, page = int(limit), int(request.param("continue") or 0)
    items = response.body["items"]
    response.body["items"] = items[page * size:(page + 1) * size]
    if (page + 1) * size < len(items):
        response.body.setdefault("metadata", {})["continue"] = str(page + 1)


# ---------------------------------------------------------------------------------------------
# The change timeline's collections (sources.changes_watch). Lists hand-built in the shapes
# kube-apiserver returns (``built_*.json``, managedFields included), next to the recorded
# ConfigMap watch (``configmap_watch.json``).

CHANGE_LIST_RECORDINGS = {
    "ConfigMap": "built_configmaps_list.json",
    "Secret": "built_secrets_list.json",
    "Service": "built_services_list.json",
    "StatefulSet": "built_statefulsets_list.json",
    "DaemonSet": "built_daemonsets_list.json",
    "HorizontalPodAutoscaler": "built_horizontalpodautoscalers_list.json",
    "Ingress": "built_ingresses_list.json",
    "NetworkPolicy": "built_networkpolicies_list.json",
}


def serve_change_lists(server: FakeApiServer) -> dict[str, str]:
    """Serve every change-timeline list on its path; kind -> path."""
    paths = {}
    for kind, name in CHANGE_LIST_RECORDINGS.items():
        server.serve_recording(name)
        paths[kind] = recorded_path(name)
    return paths


def recorded_watch_object(name: str = "configmap_watch.json",
                          namespace: str = NAMESPACE) -> dict[str, Any]:
    """The object of a recorded watch event (a fresh copy), moved to ``namespace``."""
    obj = load_recording(name)["response"]["json"]["object"]
    obj["metadata"]["namespace"] = namespace
    return obj
