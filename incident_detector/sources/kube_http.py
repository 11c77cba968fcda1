"""The Kubernetes API over HTTP: building a client, one request, a streamed body, a list page,
and the mapping of every failure to a ``SourceError``; shared by every module calling the API.

The official client makes the requests (authentication, TLS, kubeconfig, in-cluster service
account), through its low-level ``ApiClient`` only (``request`` below): its typed API classes are
never built, nor its typed models. Building ``CoreV1Api`` and ``AppsV1Api`` alone imports hundreds
of model modules (about 25 MB), and decoding a ReplicaSet or pod list into models costs tens of
megabytes more than the JSON itself. The raw body goes through ``json.loads`` (``parse_list_page``
below) and the pure parsers of ``kube_objects``. Everything here blocks: callers run it in a
worker thread.

No retry here: the transport's own is turned off (``_without_transport_retries``), and the
daemon's loop retries on the next tick.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes.client
import kubernetes.config.incluster_config
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from ..errors import SourceError, parse_retry_after, retryable_status
from .kube_json import _count, _dict, _str

SOURCE = "kubernetes"


# --------------------------------------------------------------------------------------------
# Where a namespaced collection lives: its URL path, by the coordinates a Role grants access by.


def namespaced_path(*, group: str, version: str, resource: str, namespace: str,
                    name: str | None = None) -> str:
    """The URL path of a namespaced collection (``group=""`` is the core group), or of the object
    ``name`` in it: the same coordinates that a Role grants access by."""
    root = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = f"{root}/namespaces/{quote(namespace, safe='')}/{resource}"
    return path if name is None else f"{path}/{quote(name, safe='')}"


@dataclass(frozen=True, slots=True)
class ListCall:
    """One namespaced collection: its RBAC coordinates, the ``kind`` of the list it returns and
    the verbs used on it (``watch`` for the collections kept by a ``WatchedList``)."""

    group: str
    version: str
    resource: str
    list_kind: str
    verbs: tuple[str, ...] = ("list",)

    def path(self, namespace: str) -> str:
        return namespaced_path(group=self.group, version=self.version, resource=self.resource,
                               namespace=namespace)


# --------------------------------------------------------------------------------------------
# Building the client.


def _without_transport_retries(configuration: kubernetes.client.Configuration) -> None:
    # urllib3 would otherwise try a timed-out GET up to four times within one tick.
    configuration.retries = False


def api_client_for(host: str, *, token: str | None = None) -> kubernetes.client.ApiClient:
    """A client for a plain ``http(s)://host:port`` (tests and the demo, against loopback)."""
    configuration = kubernetes.client.Configuration(host=host)
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    _without_transport_retries(configuration)
    return kubernetes.client.ApiClient(configuration=configuration)


# What a broken kubeconfig makes the loader raise, besides its own ConfigException (and
# yaml.YAMLError: yaml comes with the kubeconfig loader, imported only when there is no
# service account).
_KUBECONFIG_ERRORS = (ConfigException, OSError, ValueError, TypeError, KeyError, AttributeError)


def api_client_from_environment(
    *, kubeconfig: str | None = None, in_cluster: bool | None = None
) -> kubernetes.client.ApiClient:
    """The pod's service account when in a cluster, else a kubeconfig.

    ``in_cluster=None`` detects: the service account is tried first, the kubeconfig second.
    ``kubeconfig=None`` lets the client find one (``KUBECONFIG``, then ``~/.kube/config``).
    """
    configuration = kubernetes.client.Configuration()
    in_cluster_problem: str | None = None
    if in_cluster is not False:
        try:
            # try_refresh_token re-reads the projected token, which the kubelet rotates.
            kubernetes.config.incluster_config.load_incluster_config(
                client_configuration=configuration, try_refresh_token=True)
        except ConfigException as exc:
            in_cluster_problem = f"no in-cluster service account ({exc})"
            if in_cluster:
                raise SourceError(SOURCE, "config", in_cluster_problem, retryable=False) from None
        else:
            _without_transport_retries(configuration)
            return kubernetes.client.ApiClient(configuration=configuration)
    import yaml
    from kubernetes.config.kube_config import load_kube_config

    try:
        # persist_config=False: never write refreshed credentials back into the user's file.
        load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                         persist_config=False)
    except (*_KUBECONFIG_ERRORS, yaml.YAMLError) as exc:
        where = f"kubeconfig {kubeconfig!r}" if kubeconfig else "the default kubeconfig"
        problems = [p for p in (in_cluster_problem, f"{where} could not be loaded ({exc})") if p]
        raise SourceError(SOURCE, "config", "; ".join(problems), retryable=False) from None
    _without_transport_retries(configuration)
    return kubernetes.client.ApiClient(configuration=configuration)


# --------------------------------------------------------------------------------------------
# One blocking request and the mapping of its failures, shared by every module calling the API.


# Every request asks for JSON and every body sent is JSON: the parsers read nothing else.
JSON_MEDIA_TYPE = "application/json"
# The client's name for the bearer token of its configuration (a kubeconfig or service account
# token, refreshed by the client when it rotates), as its generated API methods name it.
AUTH_SETTINGS = ("BearerToken",)


def request(api: kubernetes.client.ApiClient, method: str, path: str, *,
            query: Sequence[tuple[str, Any]] = (), body: dict[str, Any] | None = None,
            timeout: float, what: str) -> bytes:
    """The raw body of one 2xx answer to ``method`` on ``path`` (``namespaced_path``); every
    failure comes out as a ``SourceError`` with ``api``'s credentials redacted.

    The client's low-level path does the work its typed API methods would (URL, query encoding,
    bearer token, TLS, proxy) without importing their models. ``body`` goes out as built: the
    client serialises a plain dict as it is, explicit nulls and ``micro_time`` strings included.

    Blocking: callers run it in a worker thread. ``what`` says what the call was for, in the
    error messages (``"listing pods in namespace 'demo'"``).
    """
    headers = {"Accept": JSON_MEDIA_TYPE}
    if body is not None:
        headers["Content-Type"] = JSON_MEDIA_TYPE
    response = None
    try:
        with _api_errors(api, what, timeout):
            serialized = api.param_serialize(method, path, query_params=list(query),
                                             header_params=headers, body=body,
                                             auth_settings=AUTH_SETTINGS)
            response = api.call_api(*serialized, _request_timeout=timeout)
            data = response.read()
    finally:
        if response is not None:
            response.response.release_conn()
    if not 200 <= response.status <= 299:
        raise status_error(api, response.status, headers=response.headers, body=data, what=what)
    return data


@contextlib.contextmanager
def _api_errors(api: kubernetes.client.ApiClient, what: str, timeout: float) -> Iterator[None]:
    """A request's failures as ``SourceError``s, with ``api``'s credentials redacted."""
    try:
        yield
    except ApiException as exc:
        # The client turns urllib3's SSLError into an ApiException without a status.
        raise SourceError(SOURCE, "connection",
                          redact_credentials(api, f"{what}: TLS with {api.configuration.host} failed "
                                       f"({exc.reason})"),
                          retryable=True) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise transport_error(api, exc, what, timeout=timeout) from None


def open_stream(api: kubernetes.client.ApiClient, path: str, *,
                query: Sequence[tuple[str, Any]], timeout: float, seconds: float,
                what: str) -> Any:
    """A GET whose 2xx body is read as it streams in (a watch): the urllib3 response, open.

    ``timeout`` bounds the connection and each wait for more of the body beyond the ``seconds``
    the server is asked to hold the stream. Failures come out as ``request``'s do.
    """
    with _api_errors(api, what, timeout):
        serialized = api.param_serialize("GET", path, query_params=list(query),
                                         header_params={"Accept": JSON_MEDIA_TYPE},
                                         auth_settings=AUTH_SETTINGS)
        response = api.call_api(*serialized, _request_timeout=(timeout, seconds + timeout))
    if not 200 <= response.status <= 299:
        try:
            data = response.read()
        except (urllib3.exceptions.HTTPError, OSError):
            data = b""
        finally:
            response.response.release_conn()
        raise status_error(api, response.status, headers=response.headers, body=data, what=what)
    return response.response


def stream_lines(stream: Any, *, what: str, api: kubernetes.client.ApiClient,
                 timeout: float) -> Iterable[bytes]:
    """The lines of a streamed body, each as soon as it is complete (a watch event per line)."""
    pending = b""
    try:
        for chunk in stream.stream(None):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    yield line
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        raise transport_error(api, exc, what, timeout=timeout) from None
    if pending.strip():
        yield pending


def status_error(api: kubernetes.client.ApiClient, status: int, *, headers: Any, body: bytes,
                 what: str) -> SourceError:
    answer = status_body(body)
    reason = _str(answer.get("reason")) or f"http_{status}"
    message = _str(answer.get("message")) or f"HTTP {status} from the API server"
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if retry_after is None:
        # The API server also puts its hint in the Status body (same cap as the header).
        seconds = _count(_dict(answer.get("details")).get("retryAfterSeconds"))
        retry_after = parse_retry_after(str(seconds)) if seconds else None
    return SourceError(SOURCE, reason, redact_credentials(api, f"{what}: {message}"),
                       retryable=retryable_status(status), retry_after=retry_after,
                       status=status)


def transport_error(api: kubernetes.client.ApiClient, exc: BaseException, what: str, *,
                     timeout: float) -> SourceError:
    cause = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        cause = exc.reason
    host = api.configuration.host
    # NewConnectionError is a subclass of ConnectTimeoutError: a refused connection is not a
    # timeout, so it is told apart first.
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        return SourceError(SOURCE, "connection",
                           redact_credentials(api, f"{what}: cannot connect to the API server at {host}"),
                           retryable=True)
    if isinstance(cause, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return SourceError(SOURCE, "timeout",
                           redact_credentials(api, f"{what}: no answer from {host} within {timeout:g} s"),
                           retryable=True)
    return SourceError(SOURCE, "connection",
                       redact_credentials(api, f"{what}: connection to {host} failed "
                                    f"({type(cause).__name__})"),
                       retryable=True)


def redact_credentials(api: kubernetes.client.ApiClient, text: str) -> str:
    """Removes the credentials ``api`` holds from text that came from elsewhere."""
    for secret in _credentials(api.configuration):
        text = text.replace(secret, "[redacted]")
    return text


def _credentials(configuration: kubernetes.client.Configuration) -> list[str]:
    secrets: list[str] = []
    for value in (configuration.api_key or {}).values():
        if isinstance(value, str) and value:
            secrets.append(value)
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                secrets.append(token)
    if configuration.password:
        secrets.append(configuration.password)
    # Longest first, so that "Bearer TOKEN" goes before TOKEN leaves "Bearer " behind.
    return sorted(set(secrets), key=len, reverse=True)


def status_body(body: Any) -> Mapping[str, Any]:
    """The ``Status`` object of an error response, or an empty mapping when there is none."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return {}
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    if isinstance(decoded, dict) and decoded.get("kind") == "Status":
        return decoded
    return {}


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------
# Pure parsers. Input is whatever JSON the server sent: every access checks the type.


def parse_list(body: bytes, *, kind: str) -> list[dict]:
    """The items of a list response of ``kind`` (e.g. ``ReplicaSetList``); non-objects dropped."""
    return parse_list_page(body, kind=kind)[0]


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system after decoding a large list.

    The decoded dicts are freed at once, but glibc keeps the pages between live objects resident;
    without this a list of 1,500 ReplicaSets leaves megabytes of resident memory behind for good.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def parse_list_page(body: bytes, *, kind: str) -> tuple[list[dict], str | None, str | None]:
    """Items, ``metadata.resourceVersion`` and ``metadata.continue`` (the next page's token, None
    on the last page) of one page of a list response."""
    try:
        decoded = json.loads(body)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SourceError(SOURCE, "malformed", f"a {kind} response is not JSON ({exc})",
                          retryable=True, status=200) from None
    if not isinstance(decoded, dict):
        raise SourceError(SOURCE, "unexpected_shape",
                          f"expected a {kind} object, got a JSON {type(decoded).__name__}",
                          retryable=True, status=200)
    got_kind = decoded.get("kind")
    if got_kind is not None and got_kind != kind:
        raise SourceError(SOURCE, "unexpected_shape", f"expected a {kind}, got {got_kind!r}",
                          retryable=True, status=200)
    metadata = _dict(decoded.get("metadata"))
    version = _str(metadata.get("resourceVersion")) or None
    token = _str(metadata.get("continue")) or None
    items = decoded.get("items")
    # The API server serialises an empty list as "items": [] but some proxies drop it.
    if items is None and got_kind == kind:
        return [], version, token
    if not isinstance(items, list):
        raise SourceError(SOURCE, "unexpected_shape", f"a {kind} without an items list",
                          retryable=True, status=200)
    return [item for item in items if isinstance(item, dict)], version, token


__all__ = [
    "api_client_for", "api_client_from_environment", "AUTH_SETTINGS", "JSON_MEDIA_TYPE",
    "ListCall", "namespaced_path", "open_stream", "parse_list", "parse_list_page",
    "redact_credentials", "release_free_memory", "request", "SOURCE", "status_body",
    "status_error", "stream_lines", "transport_error",
]
