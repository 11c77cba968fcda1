"""A fake kube-apiserver on 127.0.0.1 that answers with the bodies recorded from a real one.

Each recording in ``tests/fixtures/kubernetes`` is served on the path it was recorded from; a test
edits what it needs (status, body, headers, delay) before calling the real ``kubernetes`` client:

    with FakeApiServer() as apiserver:
        apiserver.serve_recording("replicasets_forbidden.json")       # 403 on the list path
        apiserver.edit(REPLICASETS_PATH, delay=1.0)                   # or make it slow
        apiserver.body(PODS_PATH)["items"].clear()                    # or change the JSON

Paths that were not recorded get the API server's own 404 ``Status``.
"""

from __future__ import annotations

import copy
import json
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


class FakeApiServer:
    """Routes ``(method, path)`` to a ``Response``; records every request it receives."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Response] = {}
        self._server = LocalServer(self._handle)
        self.reset()

    def reset(self) -> None:
        """Back to the recorded lists and no requests seen: one server can serve many tests
        (stopping a server takes half a second, starting one is cheap)."""
        self.routes.clear()
        for name in DEFAULT_RECORDINGS:
            self.serve_recording(name)
        self._server.requests.clear()

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

    # -- what was asked -----------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        return self._server.requests

    @property
    def paths(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self._server.requests]

    # -- running -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def _handle(self, request: Request) -> Response:
        response = self.routes.get((request.method, request.path))
        if response is None:
            return Response(status=404, body=NOT_FOUND_STATUS)
        # A copy, so that a test editing a body while a request is answered sees no tearing.
        return copy.deepcopy(response)

    def __enter__(self) -> "FakeApiServer":
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()
