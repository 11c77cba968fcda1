"""The simulated world of one scenario: Kubernetes objects and Loki answers as functions of time.

``World(scenario, t0=...)`` turns a scenario into

- the Deployments (the primary one and the scenario's ``workloads``), their ReplicaSets and their
  pods at any instant, as the JSON bodies a kube-apiserver returns (same keys and nesting as the
  recordings in ``tests/fixtures``), each with an honest ``metadata.resourceVersion``: the
  instant of its last change, so that a watch can be answered by comparing two instants;
- the scenario's ConfigMaps, Secrets and Services the same way, each write to a ConfigMap or
  Secret visible in its data, its resourceVersion and its ``managedFields`` (the writer as field
  manager, owning the keys it changed, as the API server's field manager records an Update);
  StatefulSets, DaemonSets, HorizontalPodAutoscalers, Ingresses and NetworkPolicies, which a
  scenario does not have: empty lists;
- the core/v1 Warning Events the kubelets write about the pods that have a problem
  (``warning_events``);
- the log lines the pods write, generated once, deterministically, and kept sorted per stream;
- the answers of Loki to the subset of LogQL the detector speaks (see ``logql``).

Every method is a pure function of the world and the instant it is given; the only state is
caches (which lines pass which line filter, the objects at the instants where the world changes),
so that a replay's hundreds of requests stay cheap.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from ..model import REVISION_ANNOTATION, REVISION_HISTORY_ANNOTATION, PodProblem
from .levels import DETECTED_LEVEL, detect_level
from .logql import (
    DEFAULT_LOG_LIMIT,
    NS_PER_SECOND,
    LogIndex,
    LogStream,
    LokiAnswer,
    from_unix_nanos,
    to_unix_nanos,
)
from .config_objects import config_object, ingress_object, service_object
from .scenario import PLACEHOLDER, LogSpec, PodProblemSpec, Revision, Scenario

# Kubernetes' alphabet for generated names (no vowels, no look-alike characters).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
# Seconds between a ReplicaSet's creation and its pods'.
POD_START_DELAY_SECONDS = 5.0
PROGRESS_DEADLINE_SECONDS = 600
# A runaway scenario (a high rate over days) must fail loudly, not eat the memory of a test run.
MAX_LOG_LINES = 1_000_000
# The list kind and apiVersion of each resource the world has.
LIST_KINDS = {
    "deployments": ("DeploymentList", "apps/v1"),
    "replicasets": ("ReplicaSetList", "apps/v1"),
    "pods": ("PodList", "v1"),
    "configmaps": ("ConfigMapList", "v1"),
    "secrets": ("SecretList", "v1"),
    "services": ("ServiceList", "v1"),
    "statefulsets": ("StatefulSetList", "apps/v1"),
    "daemonsets": ("DaemonSetList", "apps/v1"),
    "horizontalpodautoscalers": ("HorizontalPodAutoscalerList", "autoscaling/v2"),
    "ingresses": ("IngressList", "networking.k8s.io/v1"),
    "networkpolicies": ("NetworkPolicyList", "networking.k8s.io/v1"),
}
# The resources a scenario cannot describe (yet): always listed empty, never a 404.
EMPTY_RESOURCES = frozenset({"statefulsets", "daemonsets", "horizontalpodautoscalers",
                             "networkpolicies"})
# Where a revision's ``config_maps`` are mounted: /etc/config/<name>.
CONFIG_MOUNT_ROOT = "/etc/config"
# A Deployment's fields as written by whoever applies it, and by the Deployment controller.
CREATOR = "kubectl-create"
IMAGE_SETTER = "kubectl-set"
UNDOER = "kubectl-rollout"
CONTROLLER_MANAGER = "kube-controller-manager"
_NS_PER_MILLISECOND = 1_000_000
_DIGIT_RUNS = re.compile(r"[0-9]+")
_PROBLEMS_BEFORE_START = {PodProblem.IMAGE_PULL, PodProblem.ERR_IMAGE_PULL, PodProblem.CONFIG_ERROR}
_PROBLEMS_WITH_RESTART = {PodProblem.CRASH_LOOP, PodProblem.OOM_KILLED}
# The kubelet retries a failing container start (and an image pull) after 10 s, doubling the wait
# up to 5 min; each retry that fails again is one more occurrence (count) of its Event.
BACK_OFF_INITIAL_SECONDS = 10.0
BACK_OFF_MAX_SECONDS = 300.0
KUBELET = "kubelet"

Body = dict[str, Any]
# Stream labels (as a key) -> the labels and the (unix ns, line, pod sent as structured
# metadata or None) entries written so far.
_WrittenLines = dict[tuple[tuple[str, str], ...],
                     tuple[dict[str, str], list[tuple[int, str, str | None]]]]


# --- names, hashes and time ----------------------------------------------------------------------


def _copied(value: Any) -> Any:
    """A copy of a JSON-shaped value (dicts, lists, scalars), cheaper than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("\x00".join(str(p) for p in parts).encode(), digest_size=16).digest()


def generated_suffix(length: int, *parts: object) -> str:
    """``length`` characters of Kubernetes' name alphabet, a deterministic function of ``parts``."""
    number = int.from_bytes(_digest(*parts), "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(NAME_ALPHABET))
        chars.append(NAME_ALPHABET[index])
    return "".join(chars)


def pod_template_hash(deployment: str, revision: int) -> str:
    return generated_suffix(10, deployment, revision)


def replicaset_name(deployment: str, revision: int) -> str:
    return f"{deployment}-{pod_template_hash(deployment, revision)}"


def pod_name(replicaset: str, index: int) -> str:
    return f"{replicaset}-{generated_suffix(5, replicaset, index)}"


def _uid(*parts: object) -> str:
    return str(uuid.UUID(bytes=_digest("uid", *parts), version=4))


def resource_version_at(when: datetime) -> str:
    """The resourceVersion of the world at ``when``: unix milliseconds, so it only grows with
    the clock, and a watch can turn it back into the instant it names."""
    return str(to_unix_nanos(when) // _NS_PER_MILLISECOND)


def time_of_resource_version(resource_version: int) -> datetime:
    return from_unix_nanos(resource_version * _NS_PER_MILLISECOND)


def kube_time(when: datetime) -> str:
    """Kubernetes' metav1.Time: RFC 3339, whole seconds, UTC."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def back_off_occurrences(first: float, t: float) -> tuple[int, float]:
    """``(count, time of the latest)`` of an Event first written at ``first`` and written again
    on the kubelet's back-off schedule until ``t`` (``t >= first``)."""
    count, last, wait = 1, first, BACK_OFF_INITIAL_SECONDS
    while wait < BACK_OFF_MAX_SECONDS and last + wait <= t:
        count, last, wait = count + 1, last + wait, min(wait * 2, BACK_OFF_MAX_SECONDS)
    if wait >= BACK_OFF_MAX_SECONDS and last + wait <= t:
        more = int((t - last) // wait)
        count, last = count + more, last + more * wait
    return count, last


# --- log lines ----------------------------------------------------------------------------------


def _rate_per_second(points: tuple[tuple[float, float], ...], t: float) -> float:
    """Lines per second at ``t``: linear between breakpoints, constant outside them."""
    if t <= points[0][0]:
        return points[0][1] / 60.0
    if t >= points[-1][0]:
        return points[-1][1] / 60.0
    index = bisect.bisect_right([p[0] for p in points], t)
    (t1, r1), (t2, r2) = points[index - 1], points[index]
    return (r1 + (r2 - r1) * (t - t1) / (t2 - t1)) / 60.0


def line_times(points: tuple[tuple[float, float], ...], start: float, end: float,
               phase: float) -> list[float]:
    """Times in [start, end) at which the integral of the rate from ``start`` reaches k + phase.

    A constant rate gives evenly spaced lines (so a window of n spacings always holds n lines);
    a ramp gives lines that come closer together as it rises.
    """
    bounds = [start] + [t for t, _ in points if start < t < end] + [end]
    times: list[float] = []
    done = 0.0
    target = phase
    for a, b in zip(bounds, bounds[1:]):
        length = b - a
        if length <= 0:
            continue
        rate_a, rate_b = _rate_per_second(points, a), _rate_per_second(points, b)
        total = (rate_a + rate_b) / 2.0 * length
        half_slope = (rate_b - rate_a) / (2.0 * length)
        while target <= done + total:
            remaining = target - done
            # Solve rate_a*x + half_slope*x^2 = remaining, in the form that is stable for slope 0.
            root = math.sqrt(max(rate_a * rate_a + 4.0 * half_slope * remaining, 0.0))
            x = 2.0 * remaining / (rate_a + root) if rate_a + root > 0 else length
            times.append(a + min(max(x, 0.0), length))
            target += 1.0
            if len(times) > MAX_LOG_LINES:
                raise ValueError(f"the scenario writes more than {MAX_LOG_LINES} log lines")
        done += total
    return [t for t in times if t < end]


def _fill_line(template: str, *, pod: str, seed: str, index: int) -> str:
    if "{" not in template:
        return template
    digest = _digest(seed, index)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "n":
            return str(1000 + index)
        if name == "n3":
            return str(1 + int.from_bytes(digest[:4], "big") % 999)
        if name == "uuid":
            return str(uuid.UUID(bytes=digest, version=4))
        if name == "ip":
            return "10.{}.{}.{}".format(digest[4], digest[5], 1 + digest[6] % 254)
        return pod

    return PLACEHOLDER.sub(value, template)




class World:
    """One scenario laid out on the wall clock: t=0 of the scenario is ``t0``."""

    def __init__(self, scenario: Scenario, *, t0: datetime, incarnation: str = "",
                 _part: bool = False) -> None:
        """``incarnation`` names another life of the same objects: a Deployment deleted and
        created again under the same name has the same names but new uids. ``_part``: one
        further Deployment of a world (its objects and lines only; the world answers)."""
        if t0.tzinfo is None or t0.utcoffset() is None:
            raise ValueError("t0 must be an aware datetime")
        self.scenario = scenario
        self.incarnation = incarnation
        self.t0 = t0.astimezone(timezone.utc)
        self._t0_ns = to_unix_nanos(self.t0)
        self.pod_labels = dict(scenario.pod_labels) or {"app": scenario.deployment}
        settings = scenario.settings
        self.namespace_label = settings.get("loki_namespace_label_key", "namespace")
        self.workload_label = settings.get("loki_app_label_key", "app")
        self.pod_label = settings.get("loki_pod_label_key", "pod")
        self.workload = scenario.workload
        # The primary Deployment is this world; each further one of the scenario is a world of
        # its own (its objects and lines laid out the same way), which this one gathers.
        self.parts: tuple[World, ...] = (self,) + tuple(
            World(scenario.workload_scenario(name), t0=t0, incarnation=incarnation, _part=True)
            for name in scenario.deployments[1:]) if not _part else (self,)
        if _part:
            return
        self._logs = LogIndex(sorted((stream for part in self.parts
                                      for stream in part._write_logs()),
                                     key=lambda s: sorted(s.labels.items())))
        self._change_times = sorted({t for part in self.parts
                                     for t in part._world_change_times()}
                                    | set(self._config_change_times()))
        # (resource, namespace, index in _change_times) -> the objects by name at that time.
        self._snapshots: dict[tuple[str, str, int], dict[str, Body]] = {}
        # (resource, namespace, how many change times have passed) -> ``objects``' answer.
        self._versioned: dict[tuple[str, str, int], list[Body]] = {}

    # Time and names ------------------------------------------------------------------------------

    def at(self, seconds: float) -> datetime:
        """The wall time of scenario time ``seconds``."""
        return self.t0 + timedelta(seconds=seconds)

    def seconds(self, when: datetime) -> float:
        """Scenario time of a wall time."""
        return (when - self.t0).total_seconds()

    def replicaset_name(self, revision: int) -> str:
        """The ReplicaSet of a revision: a reused revision runs on the earlier one's."""
        return replicaset_name(self.scenario.deployment, self.scenario.template_revision(revision))

    def pod_names(self, revision: int) -> list[str]:
        rs = self.replicaset_name(revision)
        spec = self.scenario.revision(revision)
        # A ReplicaSet made current again starts new pods, with new names.
        return [pod_name(rs, i if spec.reuses is None else f"{revision}-{i}")
                for i in range(spec.replicas)]

    def part(self, deployment: str) -> World | None:
        """The world of one Deployment of the scenario (the primary one: this world)."""
        return next((p for p in self.parts if p.scenario.deployment == deployment), None)

    def scenario_revision(self, *, replicaset: str, revision: int,
                          deployment: str | None = None) -> int | None:
        """The scenario's number of the revision an incident names (its ReplicaSet and its
        Kubernetes revision), None if no revision matches. ``deployment``: a Deployment of the
        scenario's ``workloads`` (default: the primary one)."""
        if deployment is not None and deployment != self.scenario.deployment:
            part = self.part(deployment)
            return None if part is None else part.scenario_revision(replicaset=replicaset,
                                                                    revision=revision)
        for candidate in self.scenario.revisions:
            if (self.replicaset_name(candidate.revision) == replicaset
                    and self.scenario.kube_revision(candidate.revision) == revision):
                return candidate.revision
        return None

    def current_revision(self, now: datetime) -> Revision | None:
        """The revision the Deployment's annotation names at ``now`` (None before it exists)."""
        t = self.seconds(now)
        current = None
        for revision in self.scenario.revisions:
            if revision.at <= t:
                current = revision
        return current

    def _pod_lifetime(self, revision: Revision) -> tuple[float, float]:
        revisions = self.scenario.object_revisions(revision)
        index = revisions.index(revision)
        end = math.inf
        if index + 1 < len(revisions):
            end = revisions[index + 1].at + self.scenario.drain_seconds
        recreated = self.scenario.recreated_at
        if recreated is not None and revision.at < recreated:
            end = min(end, recreated)  # deleted with its Deployment
        return revision.at + POD_START_DELAY_SECONDS, end

    def _progress_deadline_exceeded(self, t: float, current: Revision) -> bool:
        deadline = self.scenario.progress_deadline_exceeded_at
        if deadline is None or t < deadline:
            return False
        # The condition belongs to the rollout that was current when it fired; a newer rollout
        # starts a new progress clock.
        at_deadline = max((r for r in self.scenario.revisions if r.at <= deadline),
                          key=lambda r: r.at)
        return at_deadline is current

    # Log lines -----------------------------------------------------------------------------------

    def _stream_labels(self, pod: str | None) -> dict[str, str]:
        labels = {
            self.namespace_label: self.scenario.namespace,
            self.workload_label: self.workload,
            "container": self.scenario.deployment,
            "job": f"{self.scenario.namespace}/{self.workload}",
        }
        # Loki 3 derives service_name from the app label at ingestion.
        labels.setdefault("service_name", self.workload)
        if pod is not None:
            labels[self.pod_label] = pod
        return labels

    def _write_logs(self) -> list[LogStream]:
        written: _WrittenLines = {}
        total = 0
        for spec_index, spec in enumerate(self.scenario.logs):
            revision = self.scenario.revision(spec.revision)
            alive_from, alive_to = self._pod_lifetime(revision)
            start = max(spec.from_, alive_from)
            end = min(self.scenario.log_end(spec), alive_to)
            if end <= start:
                continue
            for pod in self.pod_names(spec.revision):
                total += self._write_pod_lines(written, spec, spec_index, pod, start, end)
                if total > MAX_LOG_LINES:
                    raise ValueError(f"scenario {self.scenario.name!r} writes more than "
                                     f"{MAX_LOG_LINES} log lines")
        streams = []
        for labels, entries in written.values():
            # Stable: lines of one instant keep the order they were written in.
            entries.sort(key=lambda entry: entry[0])
            lines = [line for _, line, _ in entries]
            metadata = self._structured_metadata(labels, lines, [pod for _, _, pod in entries])
            streams.append(LogStream(labels, [t for t, _, _ in entries], lines, metadata))
        return sorted(streams, key=lambda s: sorted(s.labels.items()))

    def _structured_metadata(self, labels: dict[str, str], lines: list[str],
                             pods: list[str | None]) -> list[tuple[tuple[str, str], ...]] | None:
        """What Loki stores with each line at ingestion: Loki 3 its ``detected_level``, and the
        pod when the pipeline sends it as structured metadata (``pod_label: metadata``)."""
        detects = self.scenario.loki.detects_levels
        if not detects and not any(pods):
            return None
        # A scenario repeats a few templates: one shared tuple per level, and one detection per
        # line shape (digits play no part in it: no level name or keyword has one, and a run of
        # digits stays a number in JSON and a value in logfmt).
        shared: dict[tuple[str | None, str | None], tuple[tuple[str, str], ...]] = {}
        levels: dict[str, str] = {}
        out = []
        for line, pod in zip(lines, pods):
            level = None
            if detects:
                shape = _DIGIT_RUNS.sub("0", line)
                level = levels.get(shape)
                if level is None:
                    level = levels[shape] = detect_level(line, labels)
            metadata = shared.get((level, pod))
            if metadata is None:
                pairs = ([(DETECTED_LEVEL, level)] if level is not None else []) + \
                    ([(self.pod_label, pod)] if pod is not None else [])
                metadata = shared[(level, pod)] = tuple(sorted(pairs))
            out.append(metadata)
        return out

    def _write_pod_lines(self, written: _WrittenLines, spec: LogSpec, spec_index: int, pod: str,
                         start: float, end: float) -> int:
        # pod_label: true, a stream label; "metadata", structured metadata; false, neither.
        labels = self._stream_labels(pod if spec.pod_label is True else None)
        as_metadata = pod if spec.pod_label == "metadata" else None
        key = tuple(sorted(labels.items()))
        _, entries = written.setdefault(key, (labels, []))
        seed = f"{pod}/{spec_index}"
        phase = (int.from_bytes(_digest("phase", seed)[:4], "big") % 1_000_000 + 1) / 1_000_000
        times = line_times(spec.rate_points(), start, end, phase)
        if spec.burst and start <= spec.from_ < end:
            # One push of `burst` lines: they share one timestamp, as a logger flushing a batch.
            times = sorted([float(spec.from_)] * spec.burst + times)
        for index, t in enumerate(times):
            line = _fill_line(spec.line, pod=pod, seed=seed, index=index)
            entries.append((self._t0_ns + round(t * NS_PER_SECOND), line, as_metadata))
        return len(times)

    # Loki ----------------------------------------------------------------------------------------

    def loki_query(self, query: str, at: datetime) -> LokiAnswer:
        """``GET /loki/api/v1/query``: an instant metric query evaluated at ``at``."""
        return self._logs.query(query, at)

    def loki_query_range(self, query: str, start: datetime, end: datetime,
                         limit: int = DEFAULT_LOG_LIMIT, direction: str = "backward",
                         step_ns: int | None = None) -> LokiAnswer:
        """``GET /loki/api/v1/query_range``: log lines (streams) or a metric over time (matrix)."""
        return self._logs.query_range(query, start, end, limit=limit, direction=direction,
                                      step_ns=step_ns)

    # Kubernetes ----------------------------------------------------------------------------------

    def deployments_list(self, namespace: str, now: datetime) -> Body:
        return self.list_body("deployments", namespace, now)

    def replicasets_list(self, namespace: str, now: datetime) -> Body:
        return self.list_body("replicasets", namespace, now)

    def pods_list(self, namespace: str, now: datetime) -> Body:
        return self.list_body("pods", namespace, now)

    def list_body(self, resource: str, namespace: str, now: datetime) -> Body:
        """``GET .../namespaces/NS/RESOURCE`` at ``now``: the list and its resourceVersion. Its
        items share their fields with ``objects_view``: read-only."""
        kind, api_version = LIST_KINDS[resource]
        return {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": resource_version_at(now)},
                "items": [_list_item(item)
                          for item in self.objects_view(resource, namespace, now)]}

    def objects(self, resource: str, namespace: str, now: datetime) -> list[Body]:
        """The objects of ``resource`` ("deployments", "replicasets" or "pods") at ``now``, with
        their kind, apiVersion and ``metadata.resourceVersion``: the instant they last changed.
        The caller's own copies."""
        return [_copied(obj) for obj in self.objects_view(resource, namespace, now)]

    def objects_view(self, resource: str, namespace: str, now: datetime) -> list[Body]:
        """``objects``, read-only: the same dicts are handed to every caller between two change
        times, so they must never be edited (the fakes only filter and serialize them)."""
        changes = self._change_times
        latest = bisect.bisect_right(changes, self.seconds(now))
        if not latest:
            return self._versioned_at(resource, namespace,
                                      self._unversioned(resource, namespace, now), now, latest)
        # The world is constant between change times, so the answer is the same at every
        # instant from the latest one on, and is made once: a replay's watches ask for it
        # several times a second of scenario time.
        key = (resource, namespace, latest)
        versioned = self._versioned.get(key)
        if versioned is None:
            # The objects as they were made for the latest change time's snapshot.
            snapshot = self._snapshot(resource, namespace, latest - 1).values()
            versioned = self._versioned[key] = self._versioned_at(
                resource, namespace, [_copied(obj) for obj in snapshot],
                self.at(changes[latest - 1]), latest)
        return versioned

    def _versioned_at(self, resource: str, namespace: str, objects: list[Body], now: datetime,
                      latest: int) -> list[Body]:
        changes = self._change_times
        # An object's last change is the earliest change time since which it has been equal to
        # what it is now.
        for obj in objects:
            name = obj["metadata"]["name"]
            since = now
            for index in range(latest - 1, -1, -1):
                if self._snapshot(resource, namespace, index).get(name) != obj:
                    break
                since = self.at(changes[index])
            obj["metadata"]["resourceVersion"] = resource_version_at(since)
        return objects

    def warning_events(self, namespace: str, now: datetime) -> list[Body]:
        """The core/v1 ``type: Warning`` Events the kubelet has written by ``now`` about the pods
        that have a problem at ``now``, as ``GET /api/v1/namespaces/NS/events`` lists them.

        Each (pod, reason, message) is one Event object, first written when the problem began
        (or the pod started, if later) and counted again on the kubelet's back-off schedule
        (``back_off_occurrences``): ``count``, ``lastTimestamp`` and ``resourceVersion`` follow
        the clock. A crash loop and an OOM kill both show as ``BackOff`` (the kill itself is in
        the container's last state, not in an Event); an image that cannot be pulled as the
        kubelet's ``Failed``/``BackOff`` pair of Events; a missing ConfigMap as ``Failed``.
        Events of pods that are gone are not kept (the real ones live for an hour).
        """
        if namespace != self.scenario.namespace:
            return []
        t = self.seconds(now)
        pods = {pod["metadata"]["name"]: pod for pod in self.objects("pods", namespace, now)}
        events = []
        for part in self.parts:
            for revision in part.scenario.revisions:
                alive_from, alive_to = part._pod_lifetime(revision)
                if not alive_from <= t < alive_to:
                    continue
                for index, name in enumerate(part.pod_names(revision.revision)):
                    problem = _active_problem(revision.pod_problems, index, t)
                    pod = pods.get(name)
                    if problem is None or pod is None:
                        continue
                    first = max(alive_from, problem.from_)
                    for reason, message in _kubelet_warnings(problem.problem, pod):
                        events.append(self._kubelet_event(pod, reason, message, first, t))
        return events

    def _kubelet_event(self, pod: Body, reason: str, message: str, first: float,
                       t: float) -> Body:
        metadata, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]["name"]
        node = spec.get("nodeName", "")
        count, last = back_off_occurrences(first, t)
        name = f"{metadata['name']}.{_digest('event', metadata['uid'], reason, message).hex()[:16]}"
        first_at, last_at = kube_time(self.at(first)), kube_time(self.at(last))
        return {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": metadata["namespace"],
                "uid": self._uid("Event", metadata["namespace"], name),
                "resourceVersion": resource_version_at(self.at(last)),
                "creationTimestamp": first_at,
            },
            "involvedObject": {
                "kind": "Pod", "namespace": metadata["namespace"], "name": metadata["name"],
                "uid": metadata["uid"], "apiVersion": "v1",
                "resourceVersion": metadata["resourceVersion"],
                "fieldPath": f"spec.containers{{{container}}}",
            },
            "reason": reason,
            "message": message,
            "source": {"component": KUBELET, "host": node},
            "firstTimestamp": first_at,
            "lastTimestamp": last_at,
            "count": count,
            "type": "Warning",
            "eventTime": None,
            "reportingComponent": KUBELET,
            "reportingInstance": node,
        }

    def deployment(self, namespace: str, now: datetime, name: str | None = None) -> Body | None:
        """The Deployment as ``GET .../deployments/NAME`` returns it (default: the primary
        one); None before it exists."""
        name = name or self.scenario.deployment
        return next((d for d in self.objects("deployments", namespace, now)
                     if d["metadata"]["name"] == name), None)

    def _unversioned(self, resource: str, namespace: str, now: datetime) -> list[Body]:
        """The objects at ``now`` with an empty resourceVersion: comparable across instants."""
        if resource == "deployments":
            return [d for part in self.parts
                    if (d := part._deployment(namespace, now)) is not None]
        if resource == "replicasets":
            return [rs for part in self.parts for rs in part._replicasets(namespace, now)]
        if resource == "pods":
            return [pod for part in self.parts for pod in part._pods(namespace, now)]
        if resource in ("configmaps", "secrets", "services", "ingresses"):
            if namespace != self.scenario.namespace:
                return []
            t = self.seconds(now)
            namespace = self.scenario.namespace
            if resource == "services":
                return [service_object(spec, namespace=namespace, when=self._when,
                                       uid=self._uid("Service", namespace, spec.name))
                        for spec in self.scenario.services if spec.created_at <= t]
            if resource == "ingresses":
                return [ingress_object(spec, namespace=namespace, when=self._when,
                                       uid=self._uid("Ingress", namespace, spec.name))
                        for spec in self.scenario.ingresses if spec.created_at <= t]
            kind = "ConfigMap" if resource == "configmaps" else "Secret"
            specs = self.scenario.config_maps if resource == "configmaps" else \
                self.scenario.secrets
            return [config_object(spec, t, namespace=namespace, when=self._when,
                                  uid=self._uid(kind, namespace, spec.name))
                    for spec in specs if spec.exists_at(t)]
        if resource in EMPTY_RESOURCES:
            return []
        raise KeyError(resource)

    # ConfigMaps, Secrets, Services ---------------------------------------------------------------

    def _config_change_times(self) -> list[float]:
        configs = (*self.scenario.config_maps, *self.scenario.secrets)
        times = [w.at for spec in configs for w in spec.writes()]
        times += [spec.deleted_at for spec in configs if spec.deleted_at is not None]
        return times + [spec.created_at for spec in (*self.scenario.services,
                                                     *self.scenario.ingresses)]

    def _when(self, seconds: float) -> str:
        return kube_time(self.at(seconds))

    def _snapshot(self, resource: str, namespace: str, index: int) -> dict[str, Body]:
        """The objects by name at the ``index``-th change time (cached: the world is pure)."""
        key = (resource, namespace, index)
        snapshot = self._snapshots.get(key)
        if snapshot is None:
            at = self.at(self._change_times[index])
            snapshot = {obj["metadata"]["name"]: obj
                        for obj in self._unversioned(resource, namespace, at)}
            self._snapshots[key] = snapshot
        return snapshot

    def change_instants(self) -> list[datetime]:
        """The instants at which some Kubernetes object of the world changes, in order: when a
        watch would see an event."""
        return [self.at(t) for t in self._change_times]

    def _world_change_times(self) -> list[float]:
        """Scenario times at which a Kubernetes object may change; nothing changes in between."""
        times: set[float] = set()
        for revision in self.scenario.revisions:
            times.update((revision.at, *self._pod_lifetime(revision)))
            times.update(problem.from_ for problem in revision.pod_problems)
        if self.scenario.progress_deadline_exceeded_at is not None:
            times.add(self.scenario.progress_deadline_exceeded_at)
        if self.scenario.recreated_at is not None:
            times.add(self.scenario.recreated_at)
        return sorted(t for t in times if math.isfinite(t))

    def _metadata(self, kind: str, name: str, created: float, *,
                  labels: dict[str, str], annotations: dict[str, str] | None = None,
                  owner: tuple[str, str, str] | None = None, generation: int | None = None,
                  generate_name: str | None = None, of: Revision) -> Body:
        """Metadata of an object of the Deployment object that ``of`` is a revision of."""
        life = self.scenario.generation_of(of)
        namespace = self.scenario.namespace
        metadata: Body = {"name": name}
        if generate_name:
            metadata["generateName"] = generate_name
        metadata.update({
            "namespace": namespace,
            "uid": self._uid(kind, namespace, name, life),
            # Filled in by objects(), which knows when the object last changed.
            "resourceVersion": "",
        })
        if generation is not None:
            metadata["generation"] = generation
        metadata["creationTimestamp"] = kube_time(self.at(created))
        metadata["labels"] = labels
        if annotations:
            metadata["annotations"] = annotations
        if owner is not None:
            owner_kind, api_version, owner_name = owner
            metadata["ownerReferences"] = [{
                "apiVersion": api_version, "kind": owner_kind, "name": owner_name,
                "uid": self._uid(owner_kind, namespace, owner_name, life),
                "controller": True, "blockOwnerDeletion": True,
            }]
        return metadata

    def _uid(self, kind: str, namespace: str, name: str, life: int = 0) -> str:
        salts = ((self.incarnation,) if self.incarnation else ()) + ((life,) if life else ())
        return _uid(kind, namespace, name, *salts)

    def _container(self, revision: Revision) -> Body:
        container: Body = {"name": self.scenario.deployment, "image": revision.image}
        if revision.env_from_config_maps:
            container["envFrom"] = [{"configMapRef": {"name": name}}
                                    for name in revision.env_from_config_maps]
        env: list[Body] = [{"name": k, "value": v} for k, v in revision.env.items()]
        secrets = {spec.name: spec for spec in self.scenario.secrets}
        for name in revision.secrets:
            env.extend({"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
                       for key in secrets[name].data)
        if env:
            container["env"] = env
        container["resources"] = {kind: dict(values) for kind, values in revision.resources.items()}
        if revision.config_maps:
            container["volumeMounts"] = [
                {"name": name, "readOnly": True, "mountPath": f"{CONFIG_MOUNT_ROOT}/{name}"}
                for name in revision.config_maps]
        container.update({
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        })
        return container

    def _pod_spec(self, revision: Revision) -> Body:
        spec: Body = {}
        if revision.config_maps:
            spec["volumes"] = [{"name": name, "configMap": {"name": name, "defaultMode": 420}}
                               for name in revision.config_maps]
        return spec | {
            "containers": [self._container(revision)],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        }

    def _template(self, revision: Revision, labels: dict[str, str]) -> Body:
        return {"metadata": {"creationTimestamp": None, "labels": labels},
                "spec": self._pod_spec(revision)}

    def _deployment(self, namespace: str, now: datetime) -> Body | None:
        current = self.current_revision(now)
        if namespace != self.scenario.namespace or current is None:
            return None
        t = self.seconds(now)
        revisions = self.scenario.object_revisions(current)
        first = revisions[0]
        rs = self.replicaset_name(current.revision)
        generation = revisions.index(current) + 1
        pods = self._pods(namespace, now)
        ready = sum(1 for pod in pods if _pod_ready(pod))
        updated = sum(1 for pod in pods if pod["metadata"]["name"].startswith(rs + "-"))
        updated_ready = sum(1 for pod in pods
                            if pod["metadata"]["name"].startswith(rs + "-") and _pod_ready(pod))
        exceeded = self._progress_deadline_exceeded(t, current)
        deadline = self.scenario.progress_deadline_exceeded_at
        changed = deadline if exceeded and deadline is not None else current.at
        since = kube_time(self.at(current.at))
        if exceeded:
            deadline_at = kube_time(self.at(changed))
            progressing = {"type": "Progressing", "status": "False",
                           "lastUpdateTime": deadline_at, "lastTransitionTime": deadline_at,
                           "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{rs}" has timed out progressing.'}
        elif updated_ready >= current.replicas and updated == current.replicas:
            progressing = {"type": "Progressing", "status": "True", "lastUpdateTime": since,
                           "lastTransitionTime": kube_time(self.at(first.at)),
                           "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{rs}" has successfully progressed.'}
        else:
            progressing = {"type": "Progressing", "status": "True", "lastUpdateTime": since,
                           "lastTransitionTime": kube_time(self.at(first.at)),
                           "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{rs}" is progressing.'}
        max_unavailable = current.replicas * 25 // 100
        if ready >= current.replicas - max_unavailable:
            available = {"type": "Available", "status": "True", "lastUpdateTime": since,
                         "lastTransitionTime": since, "reason": "MinimumReplicasAvailable",
                         "message": "Deployment has minimum availability."}
        else:
            available = {"type": "Available", "status": "False", "lastUpdateTime": since,
                         "lastTransitionTime": since, "reason": "MinimumReplicasUnavailable",
                         "message": "Deployment does not have minimum availability."}
        status: Body = {"observedGeneration": generation, "replicas": len(pods),
                        "updatedReplicas": updated}
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        if len(pods) - ready > 0:
            status["unavailableReplicas"] = len(pods) - ready
        status["conditions"] = [available, progressing]
        labels = {**self.pod_labels, **self.scenario.deployment_labels}
        annotations = {REVISION_ANNOTATION: str(self.scenario.kube_revision(current.revision)),
                       **self.scenario.deployment_annotations}
        metadata = self._metadata("Deployment", self.scenario.deployment, first.at,
                                  labels=labels, annotations=annotations,
                                  generation=generation, of=current)
        metadata["managedFields"] = self._deployment_managed_fields(revisions, current)
        return {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": metadata,
            "spec": {
                "replicas": current.replicas,
                "selector": {"matchLabels": dict(self.pod_labels)},
                "template": self._template(current, dict(self.pod_labels)),
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            },
            "status": status,
        }

    def _deployment_managed_fields(self, revisions: tuple[Revision, ...],
                                   current: Revision) -> list[Body]:
        """Who wrote the Deployment: its creator, the last ``kubectl set image`` (or ``kubectl
        rollout undo``) that changed its pod template, and the controller's revision annotation,
        as the API server's field manager records them (the template's container fields the
        later writer changed are no longer the creator's)."""
        first = revisions[0]
        container = self.scenario.deployment
        key = f'k:{{"name":"{container}"}}'
        changed: list[str] = []
        writer: Revision | None = None
        if current is not first:
            writer = current
            source = self.scenario.revision(self.scenario.template_revision(current.revision))
            changed = [name for name, differs in (
                ("f:image", source.image != first.image), ("f:env", source.env != first.env),
                ("f:resources", source.resources != first.resources)) if differs]
            changed = changed or ["f:image"]
        own_container = {".": {}, "f:name": {}, "f:imagePullPolicy": {},
                         "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {},
                         **{f: {} for f in ("f:image", "f:env", "f:resources")
                            if f not in changed and (f != "f:env" or first.env)}}
        labels = {".": {}, **{f"f:{k}": {} for k in sorted(
            {**self.pod_labels, **self.scenario.deployment_labels})}}
        template_labels = {".": {}, **{f"f:{k}": {} for k in sorted(self.pod_labels)}}

        def write(manager: str, at: float, fields: Body) -> Body:
            return {"manager": manager, "operation": "Update", "apiVersion": "apps/v1",
                    "time": kube_time(self.at(at)), "fieldsType": "FieldsV1", "fieldsV1": fields}

        entries = [write(CREATOR, first.at, {
            "f:metadata": {"f:labels": labels},
            "f:spec": {"f:progressDeadlineSeconds": {}, "f:replicas": {},
                       "f:revisionHistoryLimit": {}, "f:selector": {},
                       "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {},
                                                          "f:maxUnavailable": {}},
                                      "f:type": {}},
                       "f:template": {"f:metadata": {"f:labels": template_labels},
                                      "f:spec": {"f:containers": {
                                          key: dict(sorted(own_container.items()))},
                                          "f:dnsPolicy": {}, "f:restartPolicy": {},
                                          "f:schedulerName": {}, "f:securityContext": {},
                                          "f:terminationGracePeriodSeconds": {}}}}})]
        if writer is not None:
            entries.append(write(UNDOER if writer.reuses is not None else IMAGE_SETTER, writer.at,
                                 {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                                     key: {f: {} for f in changed}}}}}}))
        entries.append(write(CONTROLLER_MANAGER, current.at, {"f:metadata": {"f:annotations": {
            ".": {}, f"f:{REVISION_ANNOTATION}": {}}}}))
        entries.sort(key=lambda entry: (entry["time"], entry["manager"]))
        return entries

    def _replicasets(self, namespace: str, now: datetime) -> list[Body]:
        if namespace != self.scenario.namespace:
            return []
        t = self.seconds(now)
        # Each ReplicaSet with the revisions it has run so far: several when reused.
        uses: dict[int, list[Revision]] = {}
        current = self.current_revision(now)
        if current is None:
            return []
        # A deleted Deployment's ReplicaSets are gone with it (garbage collection).
        for revision in self.scenario.object_revisions(current):
            if revision.at <= t:
                uses.setdefault(self.scenario.template_revision(revision.revision), []).append(revision)
        out = []
        for template, runs in uses.items():
            first, latest = runs[0], runs[-1]
            name = replicaset_name(self.scenario.deployment, template)
            hash_label = {POD_TEMPLATE_HASH_LABEL: pod_template_hash(self.scenario.deployment,
                                                                     template)}
            labels = {**self.pod_labels, **hash_label}
            _, alive_to = self._pod_lifetime(latest)
            scaled_down = t >= alive_to
            pods = [p for run in runs for p in self._revision_pods(run, t)]
            ready = sum(1 for p in pods if _pod_ready(p))
            status: Body = {"replicas": len(pods)}
            if pods:
                status["fullyLabeledReplicas"] = len(pods)
            if ready:
                status["readyReplicas"] = ready
                status["availableReplicas"] = ready
            generation = 2 * len(runs) - (0 if scaled_down else 1)
            status["observedGeneration"] = generation
            desired = 0 if scaled_down else latest.replicas
            annotations = {DESIRED_REPLICAS_ANNOTATION: str(latest.replicas),
                           MAX_REPLICAS_ANNOTATION: str(latest.replicas + -(-latest.replicas // 4)),
                           REVISION_ANNOTATION: str(self.scenario.kube_revision(latest.revision))}
            if len(runs) > 1:
                annotations[REVISION_HISTORY_ANNOTATION] = ",".join(
                    str(self.scenario.kube_revision(run.revision)) for run in runs[:-1])
            metadata = self._metadata("ReplicaSet", name, first.at, labels=labels,
                                      annotations=annotations,
                                      owner=("Deployment", "apps/v1", self.scenario.deployment),
                                      generation=generation, of=latest)
            # The controller's last write of its annotations and replica count: when it made the
            # ReplicaSet current (again), or scaled it down after the next rollout.
            written = alive_to if scaled_down else latest.at
            metadata["managedFields"] = [{
                "manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "apps/v1", "time": kube_time(self.at(written)),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {
                    ".": {}, **{f"f:{key}": {} for key in annotations}}},
                    "f:spec": {"f:replicas": {}}},
            }]
            out.append({
                "kind": "ReplicaSet",
                "apiVersion": "apps/v1",
                "metadata": metadata,
                "spec": {"replicas": desired,
                         "selector": {"matchLabels": dict(labels)},
                         "template": self._template(self.scenario.revision(template),
                                                    dict(labels))},
                "status": status,
            })
        return out

    def _pods(self, namespace: str, now: datetime) -> list[Body]:
        if namespace != self.scenario.namespace:
            return []
        t = self.seconds(now)
        return [pod for revision in self.scenario.revisions
                for pod in self._revision_pods(revision, t)]

    def _revision_pods(self, revision: Revision, t: float) -> list[Body]:
        alive_from, alive_to = self._pod_lifetime(revision)
        if not alive_from <= t < alive_to:
            return []
        rs = self.replicaset_name(revision.revision)
        labels = {**self.pod_labels,
                  POD_TEMPLATE_HASH_LABEL: pod_template_hash(
                      self.scenario.deployment, self.scenario.template_revision(revision.revision))}
        pods = []
        for index, name in enumerate(self.pod_names(revision.revision)):
            problem = _active_problem(revision.pod_problems, index, t)
            status = self._pod_status(revision, name, problem, alive_from)
            pods.append({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": self._metadata("Pod", name, alive_from, labels=dict(labels),
                                           owner=("ReplicaSet", "apps/v1", rs),
                                           generate_name=rs + "-", of=revision),
                "spec": self._admitted_pod_spec(revision, name, index),
                "status": status,
            })
        return pods

    def _admitted_pod_spec(self, revision: Revision, name: str, index: int) -> Body:
        """The template's pod spec plus what admission and the scheduler add to a real pod."""
        volume = f"kube-api-access-{generated_suffix(5, 'volume', name)}"
        spec = self._pod_spec(revision)
        # Admission adds the service account token's volume after the template's own.
        spec["volumes"] = [*spec.get("volumes", ()), {"name": volume, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ], "defaultMode": 420}}]
        container = spec["containers"][0]
        container["volumeMounts"] = [*container.get("volumeMounts", ()), {
            "name": volume, "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
        spec.update({
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": f"node-{1 + index % 3}",
            "tolerations": [
                {"key": f"node.kubernetes.io/{taint}", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300}
                for taint in ("not-ready", "unreachable")],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        })
        return spec

    def _pod_status(self, revision: Revision, name: str, problem: PodProblemSpec | None,
                    started: float) -> Body:
        container = self.scenario.deployment
        image = revision.image
        start = kube_time(self.at(started))
        image_id = f"{image.rsplit(':', 1)[0]}@sha256:{_digest('image', image).hex() * 2}"
        container_id = f"containerd://{_digest('container', name).hex() * 2}"
        state: Body
        last_state: Body = {}
        restarts = problem.restarts if problem else 0
        kind = problem.problem if problem else None
        if kind in _PROBLEMS_WITH_RESTART:
            restarts = max(restarts, 1)
            since = kube_time(self.at(max(started, problem.from_ if problem else started)))
            terminated = {"exitCode": 137 if kind is PodProblem.OOM_KILLED else 1,
                          "reason": "OOMKilled" if kind is PodProblem.OOM_KILLED else "Error",
                          "startedAt": start, "finishedAt": since,
                          "containerID": container_id}
            last_state = {"terminated": terminated}
        ready = revision.ready and kind in (None, PodProblem.OOM_KILLED)
        if kind is None or kind is PodProblem.OOM_KILLED:
            running_since = start if kind is None else last_state["terminated"]["finishedAt"]
            state = {"running": {"startedAt": running_since}}
        elif kind is PodProblem.CRASH_LOOP:
            state = {"waiting": {"reason": kind.value, "message": (
                f"back-off 1m20s restarting failed container={container} pod={name}")}}
        elif kind is PodProblem.IMAGE_PULL:
            state = {"waiting": {"reason": kind.value,
                                 "message": f'Back-off pulling image "{image}"'}}
        elif kind is PodProblem.ERR_IMAGE_PULL:
            state = {"waiting": {"reason": kind.value, "message": (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f"not found")}}
        else:
            state = {"waiting": {"reason": kind.value,
                                 "message": f'configmap "{container}-config" not found'}}
        not_started = kind in _PROBLEMS_BEFORE_START
        status: Body = {
            "phase": "Pending" if not_started else "Running",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": start},
                {"type": "Ready", "status": "True" if ready else "False", "lastProbeTime": None,
                 "lastTransitionTime": start},
                {"type": "ContainersReady", "status": "True" if ready else "False",
                 "lastProbeTime": None, "lastTransitionTime": start},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                 "lastTransitionTime": start},
            ],
            "hostIP": "172.18.0.2",
            "podIP": "10.244.0.{}".format(2 + _digest("ip", name)[0] % 250),
            "startTime": start,
            "containerStatuses": [{
                "name": container,
                "state": state,
                "lastState": last_state,
                "ready": ready,
                "restartCount": restarts,
                "image": image,
                "imageID": "" if not_started else image_id,
                **({} if not_started else {"containerID": container_id}),
                "started": "running" in state,
            }],
            "qosClass": "BestEffort",
        }
        return status


def _active_problem(problems: tuple[PodProblemSpec, ...], index: int,
                    t: float) -> PodProblemSpec | None:
    """The problem with the latest ``from`` <= t that applies to the pod with this index."""
    active = None
    for problem in problems:
        if problem.from_ <= t and (problem.pods is None or index < problem.pods):
            if active is None or problem.from_ >= active.from_:
                active = problem
    return active


def _kubelet_warnings(problem: PodProblem, pod: Body) -> list[tuple[str, str]]:
    """(reason, message) of the Warning Events the kubelet writes about a pod with ``problem``,
    in the words of the kubelet (pkg/kubelet/events and the image puller)."""
    metadata = pod["metadata"]
    container = pod["spec"]["containers"][0]
    name, image = container["name"], container["image"]
    if problem in _PROBLEMS_WITH_RESTART:
        return [("BackOff", f"Back-off restarting failed container {name} in pod "
                            f"{metadata['name']}_{metadata['namespace']}({metadata['uid']})")]
    if problem in (PodProblem.ERR_IMAGE_PULL, PodProblem.IMAGE_PULL):
        pulls = [("Failed", f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                            f'failed to pull and unpack image "{image}": not found'),
                 ("Failed", "Error: ErrImagePull")]
        if problem is PodProblem.ERR_IMAGE_PULL:
            return pulls
        return [*pulls, ("BackOff", f'Back-off pulling image "{image}"'),
                ("Failed", "Error: ImagePullBackOff")]
    if problem is PodProblem.CONFIG_ERROR:
        # The same ConfigMap the container's waiting message names (_pod_status).
        return [("Failed", f'Error: configmap "{name}-config" not found')]
    return []


def _pod_ready(pod: Body) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])


def _list_item(body: Body) -> Body:
    """A list's items carry no kind/apiVersion of their own (the list says them once)."""
    return {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}

