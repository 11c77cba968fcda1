"""The change timeline's watches: ConfigMaps, Secrets, Services, StatefulSets, DaemonSets,
HorizontalPodAutoscalers, Ingresses and NetworkPolicies of the watched namespaces.

Each (kind, namespace) is a ``sources.kube_watch.WatchedList``: listed once (the baseline, no
changes), then one short watch per refresh from the last ``resourceVersion``, so a refresh costs
one request per kind and namespace and its CPU follows the number of changes, not of objects. A
410 lists again and yields the net difference between what was kept and what was listed. The
kinds are refreshed concurrently, each in a worker thread.

Deployments are not watched here: the detector's own Deployment watch (``KubeClient``) records
their changes (``drain_deployment_changes``), at no extra request.

Only snapshots are kept (``judge.change_diff.ObjectState``): per field a short display value and
a digest, never the object. A Secret's values are never kept nor shown: each is an HMAC keyed by
a random key made when the watcher is, held in memory only, so no digest could be checked
against a guessed value outside this process.

Permissions: a 403 on a kind (its Role rule missing, e.g. secrets left out on purpose) disables
that kind in that namespace; a 404 (the API group is not served, e.g. no autoscaling/v2)
disables it everywhere. Either is logged once (``changes.kind_disabled``), shown on /status, and
lasts until the process restarts; it never fails the tick. Other failures raise ``SourceError``
like every read; the changes of the kinds that did refresh are kept and come with the next
successful refresh, so none is lost to another kind's failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import kubernetes.client
import structlog

from ..errors import SourceError
from ..judge.change_diff import NOISE_ANNOTATIONS, FieldValue, ObjectState, diff
from ..judge.changes import SECRET_NAME_PATTERN, VALUE_MAX_CHARS, looks_secret_value
from ..model import Change, Service
from .kube_http import ListCall
from .kube_json import _count, _dict, _list, _str, _str_map
from .kube_objects import managed_writers, parse_timestamp
from .kube_templates import parse_pod_template
from .kube_watch import WatchedList

log = structlog.get_logger(__name__)

_WATCHED = ("list", "watch")
CONFIGMAPS = ListCall(group="", version="v1", resource="configmaps", list_kind="ConfigMapList",
                      verbs=_WATCHED)
SECRETS = ListCall(group="", version="v1", resource="secrets", list_kind="SecretList",
                   verbs=_WATCHED)
SERVICES = ListCall(group="", version="v1", resource="services", list_kind="ServiceList",
                    verbs=_WATCHED)
STATEFULSETS = ListCall(group="apps", version="v1", resource="statefulsets",
                        list_kind="StatefulSetList", verbs=_WATCHED)
DAEMONSETS = ListCall(group="apps", version="v1", resource="daemonsets",
                      list_kind="DaemonSetList", verbs=_WATCHED)
HORIZONTAL_POD_AUTOSCALERS = ListCall(group="autoscaling", version="v2",
                                      resource="horizontalpodautoscalers",
                                      list_kind="HorizontalPodAutoscalerList", verbs=_WATCHED)
INGRESSES = ListCall(group="networking.k8s.io", version="v1", resource="ingresses",
                     list_kind="IngressList", verbs=_WATCHED)
NETWORK_POLICIES = ListCall(group="networking.k8s.io", version="v1", resource="networkpolicies",
                            list_kind="NetworkPolicyList", verbs=_WATCHED)

# Kind -> its collection. Deployments ride on the kube source's own watch.
CHANGE_CALLS: Mapping[str, ListCall] = {
    "StatefulSet": STATEFULSETS,
    "DaemonSet": DAEMONSETS,
    "ConfigMap": CONFIGMAPS,
    "Secret": SECRETS,
    "Service": SERVICES,
    "HorizontalPodAutoscaler": HORIZONTAL_POD_AUTOSCALERS,
    "Ingress": INGRESSES,
    "NetworkPolicy": NETWORK_POLICIES,
}
CHANGE_PERMISSIONS: tuple[tuple[str, str, str], ...] = tuple(
    (call.group, call.resource, verb) for call in CHANGE_CALLS.values() for verb in call.verbs
)

# What disables a kind instead of failing the tick.
FORBIDDEN, NOT_SERVED = 403, 404
# Any namespace: the key of a kind disabled everywhere (its API group is not served).
EVERY_NAMESPACE = "*"
# Changes kept for a namespace while a refresh keeps failing, at most (the oldest go first).
PENDING_MAX = 5000
# Display values: longer than this, or on several lines, a value is shown by its size.
SUMMARY_MAX_CHARS = 120


# --------------------------------------------------------------------------------------------
# Snapshots: raw objects in, ObjectState out. Pure (the key is passed in).


def digest(key: bytes, value: Any) -> bytes:
    """An HMAC-SHA256 of the canonical JSON of ``value``, keyed by the watcher's in-memory key,
    cut to 16 bytes: enough to tell two values apart, useless without the key."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           separators=(",", ":"), default=str)
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16]


def _clip(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_value(name: str, value: str) -> tuple[str | None, bool]:
    """(display, hidden) of a ConfigMap value or annotation: short and harmless values as they
    are; secret-looking ones (by name or by value) hidden; long or multi-line ones by size."""
    if SECRET_NAME_PATTERN.search(name) or looks_secret_value(value):
        return None, True
    if len(value) > VALUE_MAX_CHARS or "\n" in value:
        return f"<{len(value)} chars>", False
    return (value if value else '""'), False


def _summary(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _clip(value)
    return _clip(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str))


class _Fields:
    """Builds an ObjectState's fields in reading order."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.values: dict[str, FieldValue] = {}

    def add(self, path: str, value: Any, *, shown: str | None = None,
            hidden: bool = False) -> None:
        """``value`` absent (None) adds nothing. ``shown`` defaults to a clipped summary."""
        if value is None:
            return
        display = None if hidden else (shown if shown is not None else _summary(value))
        self.values[sys.intern(path)] = FieldValue(display, digest(self.key, value), hidden)

    def text(self, path: str, name: str, value: str, *, secret: bool = False) -> None:
        # Paths repeat across objects (every ConfigMap of an app has the same keys): one copy.
        path = sys.intern(path)
        if secret:
            self.values[path] = FieldValue(None, digest(self.key, value), True)
            return
        display, hidden = shown_value(name, value)
        self.values[path] = FieldValue(display, digest(self.key, value), hidden)

    def metadata(self, metadata: Mapping[str, Any], *, secret: bool = False) -> None:
        labels = _str_map(metadata.get("labels"))
        if labels:
            self.add("metadata.labels", labels,
                     shown=_clip(",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
        for name, value in sorted(_str_map(metadata.get("annotations")).items()):
            if name not in NOISE_ANNOTATIONS:
                self.text(f"metadata.annotations.{name}", name, value, secret=secret)


def object_state(kind: str, item: Mapping[str, Any], *, key: bytes) -> ObjectState | None:
    """The snapshot of one object of ``kind`` (a key of ``CHANGE_CALLS``); None without a name."""
    item = _dict(item)
    metadata = _dict(item.get("metadata"))
    namespace, name = _str(metadata.get("namespace")), _str(metadata.get("name"))
    if not namespace or not name:
        return None
    fields = _Fields(key)
    spec = _dict(item.get("spec"))
    extra: dict[str, Any] = {}
    if kind == "ConfigMap":
        _config_map(fields, item)
    elif kind == "Secret":
        _secret(fields, item)
    elif kind in ("StatefulSet", "DaemonSet"):
        extra = _workload(fields, kind, spec, metadata)
    elif kind == "Service":
        extra = _service(fields, spec)
    elif kind == "HorizontalPodAutoscaler":
        _autoscaler(fields, spec)
    elif kind == "Ingress":
        extra = _ingress(fields, spec)
    elif kind == "NetworkPolicy":
        extra = _network_policy(fields, spec)
    else:
        raise ValueError(f"{kind!r} is not a kind watched here")
    fields.metadata(metadata, secret=kind == "Secret")
    return ObjectState(
        kind=kind, namespace=namespace, name=name, uid=_str(metadata.get("uid")) or "",
        resource_version=_str(metadata.get("resourceVersion")) or "",
        created_at=parse_timestamp(metadata.get("creationTimestamp")), fields=fields.values,
        writers=managed_writers(metadata), **extra)


def _config_map(fields: _Fields, item: Mapping[str, Any]) -> None:
    for name, value in sorted(_str_map(item.get("data")).items()):
        fields.text(f"data.{name}", name, value)
    for name, value in sorted(_str_map(item.get("binaryData")).items()):
        # Base64: about three bytes per four characters.
        fields.add(f"binaryData.{name}", value, shown=f"<{len(value) * 3 // 4} bytes>")
    if item.get("immutable") is True:
        fields.add("immutable", "true")


def _secret(fields: _Fields, item: Mapping[str, Any]) -> None:
    # Keys only: each value is kept as its keyed digest, never shown, never measured.
    for section in ("data", "stringData"):
        for name, value in sorted(_str_map(item.get(section)).items()):
            fields.text(f"data.{name}", name, value, secret=True)
    secret_type = _str(item.get("type"))
    if secret_type:
        fields.add("type", secret_type)


def _workload(fields: _Fields, kind: str, spec: Mapping[str, Any],
              metadata: Mapping[str, Any]) -> dict[str, Any]:
    template = _dict(spec.get("template"))
    # The whole template's digest: a change parse_pod_template does not see (a node selector,
    # kubectl rollout restart's annotation) still counts as a rollout.
    fields.add("spec.template", template, shown="")
    if kind == "StatefulSet":
        replicas = spec.get("replicas")
        fields.add("spec.replicas", str(_count(replicas) if replicas is not None else 1))
    strategy_field = "updateStrategy"
    fields.add(f"spec.{strategy_field}", spec.get(strategy_field) or None)
    # The pod labels: what a Service selects, so that the service map reaches the workload.
    labels = _str_map(_dict(template.get("metadata")).get("labels"))
    return {"template": parse_pod_template(template),
            "generation": _count(metadata.get("generation")) or None,
            "pod_labels": tuple(sorted(labels.items()))}


def _service(fields: _Fields, spec: Mapping[str, Any]) -> dict[str, Any]:
    fields.add("spec.type", _str(spec.get("type")) or "ClusterIP")
    ports = []
    for port in map(_dict, _list(spec.get("ports"))):
        name = _str(port.get("name"))
        text = f"{port.get('port')}/{_str(port.get('protocol')) or 'TCP'}"
        target = port.get("targetPort")
        if target is not None and target != port.get("port"):
            text += f"->{target}"
        if port.get("nodePort"):
            text += f" node {port.get('nodePort')}"
        ports.append(f"{name} {text}" if name else text)
    if ports:
        fields.add("spec.ports", sorted(ports), shown=_clip(", ".join(sorted(ports))))
    selector = _str_map(spec.get("selector"))
    if selector:
        fields.add("spec.selector", selector,
                   shown=_clip(",".join(f"{k}={v}" for k, v in sorted(selector.items()))))
    for name in ("externalName", "externalTrafficPolicy", "sessionAffinity"):
        fields.add(f"spec.{name}", _str(spec.get(name)))
    return {"selector": tuple(sorted(selector.items()))}


def _autoscaler(fields: _Fields, spec: Mapping[str, Any]) -> None:
    target = _dict(spec.get("scaleTargetRef"))
    if target:
        fields.add("spec.scaleTargetRef", f"{_str(target.get('kind')) or ''}/"
                                          f"{_str(target.get('name')) or ''}")
    min_replicas = spec.get("minReplicas")
    fields.add("spec.minReplicas", str(_count(min_replicas) if min_replicas is not None else 1))
    fields.add("spec.maxReplicas", str(_count(spec.get("maxReplicas"))))
    for metric in map(_dict, _list(spec.get("metrics"))):
        metric_type = _str(metric.get("type")) or "?"
        source = _dict(metric.get(metric_type[:1].lower() + metric_type[1:]))
        name = (_str(source.get("name")) or _str(_dict(source.get("metric")).get("name"))
                or metric_type)
        target_spec = _dict(source.get("target"))
        target_type = _str(target_spec.get("type")) or ""
        value = (target_spec.get("averageUtilization") if target_type == "Utilization"
                 else target_spec.get("averageValue") if target_type == "AverageValue"
                 else target_spec.get("value"))
        fields.add(f"spec.metrics[{metric_type} {name}]", metric,
                   shown=_clip(f"{target_type} {value}".strip()))
    fields.add("spec.behavior", spec.get("behavior") or None)


def _ingress(fields: _Fields, spec: Mapping[str, Any]) -> dict[str, Any]:
    fields.add("spec.ingressClassName", _str(spec.get("ingressClassName")))
    backends: list[tuple[str, str]] = []
    for rule in map(_dict, _list(spec.get("rules"))):
        host = _str(rule.get("host")) or "*"
        for path in map(_dict, _list(_dict(rule.get("http")).get("paths"))):
            where = f"{host}{_str(path.get('path')) or '/'}"
            backend = _dict(path.get("backend"))
            fields.add(f"spec.rules[{where}]", path, shown=_backend(backend))
            service = _str(_dict(backend.get("service")).get("name"))
            if service:
                backends.append((_clip(where), service))
    default = _dict(spec.get("defaultBackend"))
    if default:
        fields.add("spec.defaultBackend", default, shown=_backend(default))
        service = _str(_dict(default.get("service")).get("name"))
        if service:
            backends.append(("*/", service))
    hosts = sorted({h for tls in map(_dict, _list(spec.get("tls")))
                    for h in _list(tls.get("hosts")) if isinstance(h, str)})
    tls = _list(spec.get("tls"))
    if tls:
        fields.add("spec.tls", tls, shown=_clip(",".join(hosts) or "(no hosts)"))
    return {"backends": tuple(dict.fromkeys(backends))}


def _backend(backend: Mapping[str, Any]) -> str:
    service = _dict(backend.get("service"))
    if service:
        port = _dict(service.get("port"))
        number = port.get("number") if port.get("number") is not None else port.get("name")
        return _clip(f"{_str(service.get('name')) or '?'}:{number}")
    resource = _dict(backend.get("resource"))
    return _clip(f"{_str(resource.get('kind')) or 'resource'} {_str(resource.get('name')) or '?'}")


def _network_policy(fields: _Fields, spec: Mapping[str, Any]) -> dict[str, Any]:
    fields.add("spec.podSelector", spec.get("podSelector") or {})
    types = _list(spec.get("policyTypes"))
    if types:
        fields.add("spec.policyTypes", types, shown=_clip(",".join(map(str, types))))
    peers: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for direction, side in (("ingress", "from"), ("egress", "to")):
        rules = _list(spec.get(direction))
        if direction in spec:
            count = len(rules)
            fields.add(f"spec.{direction}", rules,
                       shown=f"{count} rule" + ("" if count == 1 else "s"))
        for rule in map(_dict, rules):
            for peer in map(_dict, _list(rule.get(side))):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    labels = _str_map(_dict(peer.get("podSelector")).get("matchLabels"))
                    peers.append((direction, tuple(sorted(labels.items()))))
    selector = _str_map(_dict(spec.get("podSelector")).get("matchLabels"))
    return {"selector": tuple(sorted(selector.items())), "peers": tuple(dict.fromkeys(peers))}


# --------------------------------------------------------------------------------------------
# The watcher.


class ChangeWatcher:
    """The watched kinds of every namespace asked for; one ``WatchedList`` per (kind, namespace),
    made on the first refresh of that namespace."""

    def __init__(self, *, api: kubernetes.client.ApiClient, timeout: float,
                 kinds: Sequence[str]) -> None:
        self._api = api
        self._timeout = timeout
        self.kinds = tuple(kind for kind in CHANGE_CALLS if kind in set(kinds))
        # Per process, in memory only: what makes the digests of Secret values unguessable.
        self._key = secrets.token_bytes(32)
        self._watched: dict[tuple[str, str], WatchedList[ObjectState]] = {}
        # (old, new) pairs heard from a WatchedList's last refresh, per (kind, namespace).
        self._heard: dict[tuple[str, str], list[tuple[ObjectState | None,
                                                      ObjectState | None]]] = {}
        # Changes made but not handed out yet (another kind of the same refresh failed).
        self._pending: dict[str, list[Change]] = {}
        self._disabled: dict[str, str] = {}
        self._lock = threading.Lock()
        # Threads of their own, one per kind: the watches (each held by the API server for up
        # to a second) never queue behind, or hold up, the detection's own reads, which run on
        # the event loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(self.kinds)),
                                            thread_name_prefix="change-watch")

    def close(self) -> None:
        """Stop the watch threads (a refresh running finishes first)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def disabled(self) -> Mapping[str, str]:
        """``"namespace/Kind"`` (``"*/Kind"``: every namespace) -> why it is not watched."""
        with self._lock:
            return dict(self._disabled)

    def _is_disabled(self, kind: str, namespace: str) -> bool:
        with self._lock:
            return (f"{EVERY_NAMESPACE}/{kind}" in self._disabled
                    or f"{namespace}/{kind}" in self._disabled)

    async def refresh(self, namespace: str, *, now: datetime) -> tuple[Change, ...]:
        """The changes since the last refresh of ``namespace``, oldest first per kind: one
        request per enabled kind, concurrently. The first refresh lists and gives none."""
        kinds = [kind for kind in self.kinds if not self._is_disabled(kind, namespace)]
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.run_in_executor(self._executor, self._refresh_kind, kind, namespace, now)
              for kind in kinds),
            return_exceptions=True)
        pending = self._pending.setdefault(namespace, [])
        failure: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                pending.extend(result)
        if len(pending) > PENDING_MAX:
            log.warning("changes.pending_dropped", namespace=namespace,
                        dropped=len(pending) - PENDING_MAX)
            del pending[: len(pending) - PENDING_MAX]
        if failure is not None:
            raise failure
        self._pending[namespace] = []
        return tuple(pending)

    def _refresh_kind(self, kind: str, namespace: str, now: datetime) -> list[Change]:
        watched = self._watched_list(kind, namespace)
        heard = self._heard[(kind, namespace)]
        try:
            watched.refresh()
        except SourceError as exc:
            heard.clear()  # a failed refresh keeps the items: these will be heard again
            if exc.status in (FORBIDDEN, NOT_SERVED):
                self._disable(kind, namespace, exc)
                return []
            raise
        pairs = list(heard)
        heard.clear()
        changes = [change for old, new in pairs
                   if (change := diff(old, new, now=now)) is not None]
        return changes

    def _watched_list(self, kind: str, namespace: str) -> WatchedList[ObjectState]:
        with self._lock:
            watched = self._watched.get((kind, namespace))
            if watched is None:
                heard = self._heard[(kind, namespace)] = []
                watched = self._watched[(kind, namespace)] = WatchedList(
                    api=self._api, call=CHANGE_CALLS[kind], namespace=namespace,
                    parse=partial(object_state, kind, key=self._key), timeout=self._timeout,
                    on_change=_appender(heard))
            return watched

    def _disable(self, kind: str, namespace: str, exc: SourceError) -> None:
        call = CHANGE_CALLS[kind]
        where = EVERY_NAMESPACE if exc.status == NOT_SERVED else namespace
        if exc.status == NOT_SERVED:
            version = f"{call.group}/{call.version}" if call.group else call.version
            reason = f"{call.resource} ({version}) is not served by this API server"
        else:
            reason = (f"no permission to list and watch {call.resource} in namespace "
                      f"{namespace!r}; grant it (k8s/ Role) or drop {kind} from CHANGE_KINDS")
        with self._lock:
            self._disabled[f"{where}/{kind}"] = reason
            # Drop what was kept: nothing of it will be kept current.
            for key in [k for k in self._watched if k[0] == kind
                        and (where == EVERY_NAMESPACE or k[1] == namespace)]:
                del self._watched[key]
                self._heard.pop(key, None)
        log.warning("changes.kind_disabled", kind=kind, namespace=where, status=exc.status,
                    reason=reason)

    def _items(self, kind: str, namespace: str) -> Mapping[str, ObjectState]:
        with self._lock:
            watched = self._watched.get((kind, namespace))
        return dict(watched.items) if watched is not None else {}

    def states(self, kind: str, namespace: str) -> tuple[ObjectState, ...]:
        """What is kept of the objects of ``kind`` in ``namespace``, as of the last refresh
        (none when the kind is not watched there), by name."""
        return tuple(state for _, state in sorted(self._items(kind, namespace).items()))

    def services(self, namespace: str) -> tuple[Service, ...]:
        """The Services of ``namespace`` and their pod selectors, as of the last refresh."""
        items = self._items("Service", namespace)
        return tuple(Service(namespace=state.namespace, name=state.name, selector=state.selector)
                     for _, state in sorted(items.items()))

    def status(self) -> dict[str, Any]:
        """For /status: the kinds watched, the objects kept per kind and namespace, what is
        disabled and why."""
        with self._lock:
            watched = {f"{namespace}/{kind}": len(items.items)
                       for (kind, namespace), items in sorted(self._watched.items())}
            disabled = dict(self._disabled)
        return {"kinds": list(self.kinds), "objects": watched, "disabled": disabled}


def _appender(heard: list[tuple[ObjectState | None, ObjectState | None]]
              ) -> Callable[[ObjectState | None, ObjectState | None], None]:
    def hear(old: ObjectState | None, new: ObjectState | None) -> None:
        heard.append((old, new))
    return hear
