"""A minimal HTTP server on 127.0.0.1, run in a background thread.

It hands every request to a ``handler(Request) -> Response`` function, so that a fake
kube-apiserver, Loki or Slack is just a function of the request. The real clients (the
``kubernetes`` client over urllib3, httpx) talk to it over a real socket.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes | str | Any = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering: how tests make a client time out.
    delay: float = 0.0
    # A body sent as it is produced (chunked), after ``body``: a watch held open. The server
    # stops reading it when it stops; an empty piece only gives it that chance.
    stream: Iterator[bytes] | None = None

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    # The standard backlog of 5 drops SYNs when a client opens a dozen connections at once (the
    # detector's first tick asks Loki for several baselines concurrently); each dropped SYN costs
    # the client a one-second retransmit. A real server's backlog is in the hundreds.
    request_queue_size = 128


class LocalServer:
    """``with LocalServer(handler) as server: server.url`` -> ``http://127.0.0.1:PORT``.

    With ``tls`` (a server-side context holding a certificate) it speaks HTTPS instead, like a
    real kube-apiserver: ``server.url`` -> ``https://127.0.0.1:PORT``.
    """

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self._scheme = "https" if tls is not None else "http"
        self.requests: list[Request] = []
        self._stopping = threading.Event()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in one segment, with TCP_NODELAY: otherwise Nagle's
            # algorithm and delayed ACKs add ~40 ms to every keep-alive request.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                outer.requests.append(request)
                try:
                    response = outer.handler(request)
                except Exception as exc:  # a bug in a fake must show, not hang the client
                    response = Response(500, f"fake server error: {exc!r}", "text/plain")
                if response.delay:
                    outer._stopping.wait(response.delay)
                payload = response.encoded()
                if response.stream is not None:
                    self._send_stream(response, payload)
                    return
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def _send_stream(self, response: Response, payload: bytes) -> None:
                assert response.stream is not None
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    self.send_header("Transfer-Encoding", "chunked")
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if payload:
                        self._chunk(payload)
                    for piece in response.stream:
                        if outer._stopping.is_set():
                            break
                        if piece:
                            self._chunk(piece)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client went away: the stream ends
                finally:
                    close = getattr(response.stream, "close", None)
                    if close is not None:
                        close()
                    self.close_connection = True

            def _chunk(self, piece: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep test and demo output clean

        self._httpd = _Server((host, port), _Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        # A short poll interval makes stop() quick: tests start many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    def start(self) -> "LocalServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
