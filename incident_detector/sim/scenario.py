"""Scenario files: a small YAML description of one Deployment's history (and, optionally, of other
Deployments, Services, ConfigMaps and Secrets of its namespace), its logs and the verdict the
detector must reach.

Times are seconds relative to the scenario's t=0 (negative times are the past). A replay starts
the detector at t=0 and runs it for ``duration`` simulated seconds.

```yaml
description: A bad rollout with a sharp spike of NullPointerExceptions right after rollout.
namespace: demo-aiops
deployment: payments-api
duration: 600                 # simulated seconds the replay runs from t=0
settings:                     # optional detector settings for this scenario (Settings field names)
  error_threshold: 5
pod_labels: {app: payments-api}   # pod template labels; Loki streams get the workload label
                                  # (app by default) = app.kubernetes.io/name, else app, else the
                                  # Deployment's name
deployment_labels: {}         # optional, e.g. kustomize.toolkit.fluxcd.io/name
deployment_annotations: {}    # optional, e.g. argocd.argoproj.io/tracking-id
revisions:
  - revision: 1
    at: -86400                # the ReplicaSet's creation time
    image: payments-api:1.4.2
    env: {LOG_LEVEL: info}    # optional literal environment variables
    resources: {limits: {memory: 256Mi}}   # optional container resources
    replicas: 2
  - revision: 2
    at: 60
    image: payments-api:1.5.0
    replicas: 2
    ready: true               # optional; false: pods run but never pass their readiness probe
    pod_problems:             # optional; for each pod the entry with the latest `from` <= now holds
      - {from: 90, problem: CrashLoopBackOff, restarts: 4, pods: 1}
    config_maps: [payments-config]       # optional: mounted read-only at /etc/config/<name>
    env_from_config_maps: [payments-config]  # optional: envFrom configMapRef
    secrets: [payments-db]    # optional: one env var per key (valueFrom secretKeyRef)
  - revision: 3               # optional `reuses: N`: `kubectl rollout undo` to revision N's
    at: 300                   # template; its ReplicaSet becomes current again (same image, env
    reuses: 1                 # and resources as N), keeping its old creationTimestamp
    image: payments-api:1.4.2
progress_deadline_exceeded_at: 400   # optional: Progressing turns False/ProgressDeadlineExceeded
recreated_at: 500             # optional: the Deployment is deleted and created again; revisions
                              # from then on are the new object's (new uid), which Kubernetes
                              # numbers from 1 again; expect.incidents names scenario revisions
drain_seconds: 30             # optional (default 30): old pods live this long after the next `at`
logs:
  - revision: 2               # lines written by each pod of this revision while it lives
    from: 75
    to: 600                   # optional, default: duration
    per_minute: 12            # per pod; or [[t, per_minute], ...] breakpoints, linear in between
    line: 'level=error msg="charge failed" order_id={n} err="NPE at Pay.java:{n3}"'
    pod_label: true           # false: the streams carry no pod label (no pod identity);
                              # metadata: the pod is sent as structured metadata (an
                              # OpenTelemetry pipeline does this; Loki 3.0 or later)
    burst: 0                  # optional: lines each pod writes at once at `from`, in one push
                              # (one timestamp), besides per_minute (default 0 lines per minute)
loki:                         # optional: the simulated Loki
  version: 3.5.7              # what /loki/api/v1/status/buildinfo reports (default 3.5.7)
  discover_log_levels: true   # default: true from 3.0 on, where Loki gives every line a
                              # detected_level at ingestion; always false before 3.0
alerts:                       # optional: what Alertmanager posts to /webhooks/alertmanager
  - name: HighErrorRate       # the alertname label
    at: 120                   # firing from then on (its startsAt), posted at every tick
    resolved_at: 900          # optional: posted as resolved from then on (its endsAt)
    labels: {namespace: demo-aiops, deployment: payments-api, severity: critical}
    annotations: {summary: 5xx above 5%}
workloads:                    # optional: further Deployments of the namespace; each has the
  - name: fraud-check         # shape of the primary one (no progress deadline, no re-creation)
    pod_labels: {app: fraud-check}   # its own workload label: streams must not overlap
    deployment_labels: {}     # optional
    deployment_annotations: {}  # optional
    revisions:
      - {revision: 1, at: -172800, image: fraud-check:2.3.4, env: {POOL: "20"}}
      - {revision: 2, at: 60, image: fraud-check:2.4.0, env: {POOL: "20"}}
    logs:
      - {revision: 2, from: 75, per_minute: 30, line: 'level=error msg="check failed" status=503'}
services:                     # optional: ClusterIP Services (core/v1)
  - name: fraud-check
    selector: {app: fraud-check}
    ports: [8080]             # or [{port: 80, target_port: http, name: http, protocol: TCP}, ...]
    created_at: -86400        # optional (default -30 days)
ingresses:                    # optional: Ingresses (networking.k8s.io/v1) to the Services
  - name: web
    host: shop.example.com    # optional: every host when left out
    paths: [{path: /, service: frontend, port: 8080}]
    created_at: -86400        # optional (default -30 days)
config_maps:                  # optional: ConfigMaps and the writes made to them
  - name: payments-config
    data: {TIMEOUT_MS: "5000", FEATURE_X: "off"}   # values are strings, as in the API
    created_at: -86400        # optional (default -30 days)
    manager: kubectl-create   # optional: the field manager that created it
    changes:
      - at: 60
        data: {TIMEOUT_MS: "50", FEATURE_X: null}  # merged (null removes a key) ...
        manager: kubectl-patch  # optional (default kubectl-patch)
        replace: false        # ... or, with true, the data becomes exactly this
    deleted_at: 500           # optional
secrets:                      # optional: the same shape (served base64, `type: Opaque` unless
  - name: payments-db         # `type` says otherwise)
    data: {DB_USER: payments, DB_PASSWORD: hunter2}
    changes: [{at: 300, data: {DB_PASSWORD: hunter3}}]
expect:
  alert_incidents:            # optional: the alert incidents (no rollout in the window)
    - alert: HighErrorRate
      priority: P1            # optional
      resolved: true          # optional: a "resolved after ..." follow-up went out
  incidents:                  # [] for none
    - revision: 2
      deployment: payments-api  # optional: a Deployment of `workloads` (default: `deployment`)
      signals: [error_spike]  # each of these must be among the incident's signals
      attribution: per_pod    # optional
      evidence_at: 100        # when the evidence is in place (detection-delay benchmark)
  change_incidents:           # optional: `kind: change` incidents (errors rose after a change
    - deployment: payments-api  # that was not the workload's own rollout), one per workload
      cause: {kind: Deployment, name: fraud-check}   # what must rank first in evidence.causes
      action: rollback        # optional: the first cause's and recommended_action's action
      target: fraud-check     # optional: the Deployment their kubectl command acts on
      evidence_at: 82         # optional, as for incidents
```

Each write to a ConfigMap or Secret moves its resourceVersion to the write's instant and is
recorded in its ``managedFields`` as the API server's field manager records an Update: the
writer's entry (``operation: Update``, ``time`` the write's, whole seconds) owns the ``f:data``
keys whose value it changed, taking them from their earlier owner; a removed key belongs to no
one; the map itself (``.``) stays with whoever first gave it keys, a Secret's ``f:type`` with its
creator; a manager left owning nothing has no entry; entries are sorted by time, then manager.
A write that changes nothing is refused (the API server would record none). A Deployment of the
scenario records its creator (``kubectl-create``), the last ``kubectl set image`` (or ``kubectl
rollout undo``, ``kubectl-rollout``) of its template and the controller's revision annotation
the same way.

Problems are the values of ``model.PodProblem`` except ``Restarting`` (which the detector derives
from a restart count of 3 or more): ``CrashLoopBackOff``, ``ImagePullBackOff``, ``ErrImagePull``,
``CreateContainerConfigError``, ``OOMKilled``. ``restarts`` sets the container's restartCount
(at least 1 for ``CrashLoopBackOff`` and ``OOMKilled``, which imply a restart); ``pods`` limits the
problem to the first N pods of the revision (default: all).

Placeholders in ``line``, filled deterministically for every line: ``{n}`` a counter (1000, 1001,
... per pod and log entry), ``{n3}`` a number from 1 to 999, ``{uuid}`` a UUID, ``{ip}`` a
10.x.y.z address, ``{pod}`` the pod's name. Any other brace is kept as written, so JSON lines
need no escaping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import REMEDIATION_ACTIONS, SECRET_FIELDS, Settings
from ..model import CHANGE_KINDS, Attribution, PodProblem, Priority, Signal

SCENARIO_SUFFIXES = (".yaml", ".yml")
DEFAULT_DRAIN_SECONDS = 30.0
# Placeholders a log line template may use (see the module docstring).
LINE_PLACEHOLDERS = ("n", "n3", "uuid", "ip", "pod")
PLACEHOLDER = re.compile(r"\{(" + "|".join(LINE_PLACEHOLDERS) + r")\}")
# Settings a scenario may not override: where things are, who the detector is, and secrets are
# decided by whoever runs the replay, not by a scenario file.
FIXED_SETTINGS = frozenset(SECRET_FIELDS | {"loki_url", "state_path", "http_host", "http_port",
                                            "namespace", "pod_name"})
# A placeholder Loki URL, only to validate the overrides: Settings requires one.
_VALIDATION_LOKI_URL = "http://loki.invalid"
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Deployment names end up in ReplicaSet (+11) and pod (+6) names, which are DNS subdomains.
_DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,44}[a-z0-9])?$")

# ConfigMap and Secret keys: what the API server accepts (IsConfigMapKey).
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A field manager's name, as the API server takes it from the client's User-Agent or ?fieldManager.
_MANAGER = re.compile(r"^[\x21-\x7e]{1,128}$")
# When a ConfigMap, Secret or Service was created if the scenario does not say: a month ago.
DEFAULT_CREATED_AT = -30 * 86_400.0
# The fields of a revision that make its pod template (a reused revision repeats them).
TEMPLATE_FIELDS = ("image", "env", "resources", "config_maps", "env_from_config_maps", "secrets")
# What an expected change incident may recommend (``none``: revert where the change was made).
CHANGE_ACTIONS = (*REMEDIATION_ACTIONS, "none")

Seconds = Annotated[float, Field(allow_inf_nan=False)]


class ScenarioError(ValueError):
    """A scenario file that cannot be read or does not validate; one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        # One line per problem, whatever the YAML parser's message looks like.
        self.problems = [" ".join(problem.split()) for problem in problems]
        problems = self.problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PodProblemSpec(_Strict):
    from_: Seconds = Field(alias="from")
    problem: PodProblem
    restarts: int = Field(default=0, ge=0)
    pods: int | None = Field(default=None, ge=1)

    @field_validator("problem")
    @classmethod
    def _not_derived(cls, value: PodProblem) -> PodProblem:
        if value is PodProblem.RESTARTING:
            raise ValueError("Restarting is derived from restarts >= 3; name the container state "
                             "instead (e.g. CrashLoopBackOff with restarts: 4)")
        return value


class Revision(_Strict):
    revision: int = Field(ge=1)
    at: Seconds
    image: str = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    replicas: int = Field(default=2, ge=0, le=50)
    ready: bool = True
    pod_problems: tuple[PodProblemSpec, ...] = ()
    # ConfigMaps and Secrets of the scenario the pod template uses (names listed in
    # ``config_maps``/``secrets``): mounted as volumes, read whole as environment variables, or
    # (Secrets) one variable per key.
    config_maps: tuple[str, ...] = ()
    env_from_config_maps: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    # An earlier revision whose template this one re-applies (``kubectl rollout undo``, a GitOps
    # revert): the controller makes that revision's ReplicaSet current again instead of creating
    # one. ``image``, ``env`` and ``resources`` must then repeat that revision's.
    reuses: int | None = None

    @field_validator("resources")
    @classmethod
    def _resource_kinds(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        unknown = sorted(set(value) - {"limits", "requests"})
        if unknown:
            raise ValueError(f"only limits and requests are allowed, not {', '.join(unknown)}")
        return value


class LogSpec(_Strict):
    revision: int
    from_: Seconds = Field(alias="from")
    to: Seconds | None = None
    per_minute: float | tuple[tuple[Seconds, float], ...] = 0.0
    # Lines each pod writes at once at `from` (one push, one timestamp), besides per_minute.
    burst: int = Field(default=0, ge=0, le=1000)
    line: str = Field(min_length=1)
    pod_label: bool | Literal["metadata"] = True

    @field_validator("per_minute")
    @classmethod
    def _rates(cls, value: float | tuple[tuple[float, float], ...]) -> Any:
        if isinstance(value, tuple):
            if not value:
                raise ValueError("needs at least one [t, per_minute] breakpoint")
            times = [t for t, _ in value]
            if times != sorted(times) or len(set(times)) != len(times):
                raise ValueError("breakpoint times must be strictly increasing")
            rates = [rate for _, rate in value]
        else:
            rates = [value]
        for rate in rates:
            if not (rate >= 0 and rate < float("inf")):
                raise ValueError("rates are finite numbers >= 0 (lines per minute per pod)")
        return value

    def rate_points(self) -> tuple[tuple[float, float], ...]:
        """The rate as breakpoints (t, lines per minute per pod), constant outside them."""
        if isinstance(self.per_minute, tuple):
            return self.per_minute
        return ((self.from_, float(self.per_minute)),)


def _check_history(revisions: tuple[Revision, ...], logs: tuple[LogSpec, ...], duration: float,
                   where: str = "") -> None:
    """Revisions in order, reused ones repeating their template, logs naming known revisions."""
    numbers = [r.revision for r in revisions]
    times = [r.at for r in revisions]
    if any(b <= a for a, b in zip(numbers, numbers[1:])):
        raise ValueError(f"{where}revisions: revision numbers must be strictly increasing")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError(f"{where}revisions: `at` times must be strictly increasing")
    for index, revision in enumerate(revisions):
        if revision.reuses is None:
            continue
        earlier = [r for r in revisions[:index] if r.revision == revision.reuses]
        if not earlier:
            raise ValueError(f"{where}revisions[{index}].reuses: no earlier revision "
                             f"{revision.reuses}")
        if any(getattr(earlier[0], f) != getattr(revision, f) for f in TEMPLATE_FIELDS):
            raise ValueError(f"{where}revisions[{index}]: a reused revision repeats the image, env, "
                             f"resources and config of revision {revision.reuses}")
    for index, spec in enumerate(logs):
        if spec.revision not in numbers:
            raise ValueError(
                f"{where}logs[{index}].revision: no revision {spec.revision} in revisions")
        end = duration if spec.to is None else spec.to
        if end <= spec.from_:
            raise ValueError(f"{where}logs[{index}]: `to` must be after `from`")


def _object_name(value: str, what: str) -> str:
    if not _DNS_SUBDOMAIN.match(value) or len(value) > 253:
        raise ValueError(f"{value!r} is not a valid {what} name (DNS subdomain)")
    return value


def _manager_name(value: str) -> str:
    if not _MANAGER.match(value):
        raise ValueError(f"{value!r} is not a field manager name (printable, no spaces)")
    return value


def _deployment_name(value: str) -> str:
    if not _DEPLOYMENT_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid Deployment name (DNS label, <= 47 chars)")
    return value


def _label_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a valid label or annotation key")
    return value


class WorkloadSpec(_Strict):
    """A further Deployment of the namespace: the same history as the primary one."""

    name: str
    pod_labels: dict[str, str] = Field(default_factory=dict)
    deployment_labels: dict[str, str] = Field(default_factory=dict)
    deployment_annotations: dict[str, str] = Field(default_factory=dict)
    revisions: tuple[Revision, ...] = Field(min_length=1)
    logs: tuple[LogSpec, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _deployment_name(value)

    @field_validator("pod_labels", "deployment_labels", "deployment_annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_keys(value)


class ServicePortSpec(_Strict):
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = None  # default: the same number as ``port``
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class ServiceSpec(_Strict):
    """A ClusterIP Service: how a hostname in a log line or a URL names the pods behind it."""

    name: str
    selector: dict[str, str] = Field(default_factory=dict)
    ports: tuple[ServicePortSpec, ...] = Field(min_length=1)
    created_at: Seconds = DEFAULT_CREATED_AT

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid Service name (DNS label)")
        return value

    @field_validator("ports", mode="before")
    @classmethod
    def _bare_ports(cls, value: Any) -> Any:
        # ``ports: [8080]`` is short for ``ports: [{port: 8080}]``.
        if isinstance(value, (list, tuple)):
            return [{"port": p} if isinstance(p, int) and not isinstance(p, bool) else p
                    for p in value]
        return value

    @field_validator("selector")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_keys(value)

    @model_validator(mode="after")
    def _ports_distinct(self) -> ServiceSpec:
        # As the API server validates a Service's ports.
        if len(self.ports) > 1 and not all(p.name for p in self.ports):
            raise ValueError("ports: each port needs a name when there are several")
        names = [p.name for p in self.ports if p.name]
        pairs = [(p.port, p.protocol) for p in self.ports]
        if len(set(names)) != len(names) or len(set(pairs)) != len(pairs):
            raise ValueError("ports: names and port/protocol pairs must be distinct")
        return self


class ConfigChangeSpec(_Strict):
    """One write to a ConfigMap's or Secret's data."""

    at: Seconds
    # Merged into the data as ``kubectl patch`` merges it: the keys given are set, a key given as
    # null is removed, the others are kept. With ``replace: true`` the data becomes exactly this
    # (``kubectl replace``, ``kubectl apply`` of a whole object).
    data: dict[str, str | None]
    manager: str = "kubectl-patch"
    replace: bool = False

    @field_validator("manager")
    @classmethod
    def _manager(cls, value: str) -> str:
        return _manager_name(value)

    @field_validator("data")
    @classmethod
    def _keys(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for key in value:
            if not _CONFIG_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid data key ([-._a-zA-Z0-9]+)")
        return value


class ConfigWrite(BaseModel):
    """A ConfigMap's or Secret's data after a write, who wrote it and which keys it changed."""

    model_config = ConfigDict(frozen=True)

    at: float
    manager: str
    data: dict[str, str]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


class IngressPathSpec(_Strict):
    path: str = "/"
    service: str
    port: int = Field(default=80, ge=1, le=65535)


class IngressSpec(_Strict):
    """An Ingress sending a host's traffic to Services (networking.k8s.io/v1): the service
    map's links from outside the cluster."""

    name: str
    host: str | None = None
    paths: tuple[IngressPathSpec, ...] = Field(min_length=1)
    created_at: Seconds = DEFAULT_CREATED_AT

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _object_name(value, "Ingress")


class ConfigMapSpec(_Strict):
    """A ConfigMap and the writes made to its data."""

    name: str
    data: dict[str, str] = Field(default_factory=dict)
    created_at: Seconds = DEFAULT_CREATED_AT
    manager: str = "kubectl-create"  # who created it
    changes: tuple[ConfigChangeSpec, ...] = ()
    deleted_at: Seconds | None = None  # optional: deleted then (after its last change)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _object_name(value, "ConfigMap")

    @field_validator("data")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _CONFIG_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid data key ([-._a-zA-Z0-9]+)")
        return value

    @field_validator("manager")
    @classmethod
    def _manager(cls, value: str) -> str:
        return _manager_name(value)

    @model_validator(mode="after")
    def _writes_in_order(self) -> ConfigMapSpec:
        previous = self.created_at
        for index, change in enumerate(self.changes):
            if change.at <= previous:
                raise ValueError(f"changes[{index}].at must be after the creation and the "
                                 "change before it")
            previous = change.at
        if self.deleted_at is not None and self.deleted_at <= previous:
            raise ValueError("deleted_at must be after the creation and every change")
        for index, write in enumerate(self.writes()[1:]):
            if not write.changed and not write.removed:
                raise ValueError(f"changes[{index}] changes nothing (the data already says that)")
        return self

    def writes(self) -> tuple[ConfigWrite, ...]:
        """The creation, then each change: the data after it and the keys it changed."""
        data = dict(self.data)
        writes = [ConfigWrite(at=self.created_at, manager=self.manager, data=dict(data),
                              changed=tuple(data), removed=())]
        for change in self.changes:
            before = data
            if change.replace:
                data = {k: v for k, v in change.data.items() if v is not None}
            else:
                data = dict(before)
                for key, value in change.data.items():
                    if value is None:
                        data.pop(key, None)
                    else:
                        data[key] = value
            changed = tuple(k for k in data if before.get(k) != data[k])
            removed = tuple(k for k in before if k not in data)
            writes.append(ConfigWrite(at=change.at, manager=change.manager, data=dict(data),
                                      changed=changed, removed=removed))
        return tuple(writes)

    def writes_until(self, t: float) -> tuple[ConfigWrite, ...]:
        """The writes made by scenario time ``t`` (none before the object exists)."""
        return tuple(w for w in self.writes() if w.at <= t)

    def exists_at(self, t: float) -> bool:
        return self.created_at <= t and (self.deleted_at is None or t < self.deleted_at)


class SecretSpec(ConfigMapSpec):
    """A Secret: like a ConfigMap, its values served base64-encoded as the API returns them."""

    type: str = "Opaque"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _object_name(value, "Secret")


DEFAULT_LOKI_VERSION = "3.5.7"
_LOKI_MAJOR = re.compile(r"^v?([0-9]+)\.[0-9]+")


class LokiSpec(_Strict):
    """The simulated Loki: its version, and whether it discovers log levels at ingestion."""

    version: str = DEFAULT_LOKI_VERSION
    discover_log_levels: bool | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _LOKI_MAJOR.match(value):
            raise ValueError(f"{value!r} is not a Loki version such as 3.5.7 or 2.9.8")
        return value

    @model_validator(mode="after")
    def _levels_need_loki_3(self) -> LokiSpec:
        if self.discover_log_levels and self.major < 3:
            raise ValueError("discover_log_levels needs Loki 3.0 or later")
        return self

    @property
    def major(self) -> int:
        found = _LOKI_MAJOR.match(self.version)
        assert found is not None  # validated
        return int(found.group(1))

    @property
    def detects_levels(self) -> bool:
        """Whether lines get a detected_level (Loki 3's default)."""
        if self.discover_log_levels is None:
            return self.major >= 3
        return self.discover_log_levels


class AlertSpec(_Strict):
    name: str = Field(min_length=1)
    at: Seconds
    resolved_at: Seconds | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _order(self) -> AlertSpec:
        if self.resolved_at is not None and self.resolved_at <= self.at:
            raise ValueError("resolved_at must be after at")
        if "alertname" in self.labels:
            raise ValueError("labels: alertname is the alert's name: use `name`")
        return self


class ExpectedAlertIncident(_Strict):
    alert: str
    priority: Priority | None = None
    resolved: bool = False


class ExpectedIncident(_Strict):
    revision: int
    deployment: str | None = None  # default: the primary ``deployment``
    signals: tuple[Signal, ...] = ()
    attribution: Attribution | None = None
    evidence_at: Seconds | None = None


class ExpectedCause(_Strict):
    kind: str
    name: str

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in CHANGE_KINDS:
            raise ValueError(f"{value!r} is not a watched kind; choose from "
                             f"{', '.join(CHANGE_KINDS)}")
        return value


class ExpectedChangeIncident(_Strict):
    """A ``kind: change`` incident: ``deployment``'s errors rose after ``cause`` changed."""

    deployment: str
    cause: ExpectedCause  # what must rank first in evidence.causes
    action: str | None = None  # the top cause's action (rollback, none...)
    target: str | None = None  # the Deployment its command acts on
    evidence_at: Seconds | None = None

    @field_validator("action")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is not None and value not in CHANGE_ACTIONS:
            raise ValueError(f"{value!r} is not an action; choose from {', '.join(CHANGE_ACTIONS)}")
        return value


class Expectations(_Strict):
    incidents: tuple[ExpectedIncident, ...]
    alert_incidents: tuple[ExpectedAlertIncident, ...] = ()
    change_incidents: tuple[ExpectedChangeIncident, ...] = ()


class Scenario(_Strict):
    description: str = Field(min_length=1)
    # Defaults to the file's stem when loaded with ``load_scenario``.
    name: str = ""
    namespace: str
    deployment: str
    duration: Seconds = Field(gt=0, le=7 * 86_400)
    settings: dict[str, Any] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    deployment_labels: dict[str, str] = Field(default_factory=dict)
    deployment_annotations: dict[str, str] = Field(default_factory=dict)
    revisions: tuple[Revision, ...] = Field(min_length=1)
    progress_deadline_exceeded_at: Seconds | None = None
    # The Deployment is deleted at this time and created again at once under the same name
    # (helm uninstall && install, kubectl delete + apply): the revisions from then on belong to a
    # new object with a new uid, which Kubernetes numbers from 1 again (``kube_revision``). The
    # revision numbers of this file stay distinct: they name the scenario's revisions.
    recreated_at: Seconds | None = None
    drain_seconds: Seconds = Field(default=DEFAULT_DRAIN_SECONDS, ge=0)
    logs: tuple[LogSpec, ...] = ()
    loki: LokiSpec = Field(default_factory=LokiSpec)
    alerts: tuple[AlertSpec, ...] = ()
    workloads: tuple[WorkloadSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    ingresses: tuple[IngressSpec, ...] = ()
    config_maps: tuple[ConfigMapSpec, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    expect: Expectations

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, value: str) -> str:
        return _deployment_name(value)

    @field_validator("pod_labels", "deployment_labels", "deployment_annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_keys(value)

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for key in value:
            if key in FIXED_SETTINGS:
                problems.append(f"{key} cannot be set by a scenario")
            elif key not in Settings.model_fields:
                problems.append(f"{key} is not a detector setting")
        if problems:
            raise ValueError("; ".join(problems))
        try:
            Settings.model_validate({"loki_url": _VALIDATION_LOKI_URL, **value})
        except ValidationError as exc:
            details = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                       for e in exc.errors(include_input=False, include_url=False)]
            raise ValueError("; ".join(details)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        _check_history(self.revisions, self.logs, self.duration)
        times = [r.at for r in self.revisions]
        for index, workload in enumerate(self.workloads):
            _check_history(workload.revisions, workload.logs, self.duration,
                           f"workloads[{index}].")
        self._check_names()
        seen: set[tuple[str, int]] = set()
        for index, incident in enumerate(self.expect.incidents):
            deployment = incident.deployment or self.deployment
            if deployment not in self.deployments:
                raise ValueError(f"expect.incidents[{index}].deployment: no Deployment "
                                 f"{deployment!r} (neither `deployment` nor in workloads)")
            known = {r.revision for r in self.workload_scenario(deployment).revisions}
            if incident.revision not in known:
                raise ValueError(
                    f"expect.incidents[{index}].revision: "
                    f"no revision {incident.revision} in revisions of {deployment}")
            if (deployment, incident.revision) in seen:  # scenario revision numbers are distinct
                raise ValueError(f"expect.incidents[{index}]: revision {incident.revision} is "
                                 "listed twice (one incident per revision, ever)")
            seen.add((deployment, incident.revision))
        self._check_change_expectations()
        if self.loki.major < 3:
            specs = (*self.logs, *(spec for workload in self.workloads for spec in workload.logs))
            if any(spec.pod_label == "metadata" for spec in specs):
                raise ValueError("pod_label: metadata: structured metadata needs Loki 3.0 or later")
        if self.recreated_at is not None:
            generations = {self.generation_of(r) for r in self.revisions}
            if generations != {0, 1}:
                raise ValueError("recreated_at: revisions are needed before it and from it on")
            for index, revision in enumerate(self.revisions):
                if revision.reuses is not None and self.generation_of(
                        self.revision(revision.reuses)) != self.generation_of(revision):
                    raise ValueError(f"revisions[{index}].reuses: the re-created Deployment "
                                     "has no ReplicaSet of the deleted one")
        deadline = self.progress_deadline_exceeded_at
        if deadline is not None and deadline < times[0]:
            raise ValueError("progress_deadline_exceeded_at is before the Deployment exists")
        return self

    def _check_names(self) -> None:
        """Distinct names, distinct log streams, and config references that resolve."""
        names = list(self.deployments)
        for index, name in enumerate(names[1:]):
            if name in names[:index + 1]:
                raise ValueError(f"workloads[{index}].name: Deployment {name!r} is already "
                                 "defined")
        streams: dict[str, str] = {}
        for name in names:
            label = self.workload_scenario(name).workload
            if label in streams:
                raise ValueError(f"Deployments {streams[label]!r} and {name!r} would write the "
                                 f"same log streams (workload label {label!r}): give them "
                                 "distinct pod_labels")
            streams[label] = name
        for field_name in ("services", "config_maps", "secrets"):
            seen: set[str] = set()
            for index, item in enumerate(getattr(self, field_name)):
                if item.name in seen:
                    raise ValueError(f"{field_name}[{index}].name: {item.name!r} is listed twice")
                seen.add(item.name)
        config_maps = {c.name for c in self.config_maps}
        secrets = {s.name for s in self.secrets}
        for name in names:
            where = "" if name == self.deployment else \
                f"workloads[{names.index(name) - 1}]."
            for index, revision in enumerate(self.workload_scenario(name).revisions):
                for field_name, declared, what in (
                        ("config_maps", config_maps, "config_maps"),
                        ("env_from_config_maps", config_maps, "config_maps"),
                        ("secrets", secrets, "secrets")):
                    for ref in getattr(revision, field_name):
                        if ref not in declared:
                            raise ValueError(f"{where}revisions[{index}].{field_name}: no "
                                             f"{ref!r} in the scenario's {what}")

    def _check_change_expectations(self) -> None:
        objects = {
            "Deployment": set(self.deployments),
            "ConfigMap": {c.name for c in self.config_maps},
            "Secret": {s.name for s in self.secrets},
            "Service": {s.name for s in self.services},
        }
        for index, expected in enumerate(self.expect.change_incidents):
            where = f"expect.change_incidents[{index}]"
            if expected.deployment not in self.deployments:
                raise ValueError(f"{where}.deployment: no Deployment {expected.deployment!r}")
            cause = expected.cause
            if cause.name not in objects.get(cause.kind, set()):
                raise ValueError(f"{where}.cause: the scenario has no {cause.kind} "
                                 f"{cause.name!r}")
            if cause.kind == "Deployment" and cause.name == expected.deployment:
                raise ValueError(f"{where}.cause: a Deployment's own rollout is a rollout "
                                 "incident (expect.incidents), not a change incident")
            if expected.target is not None and expected.target not in self.deployments:
                raise ValueError(f"{where}.target: no Deployment {expected.target!r}")

    @property
    def deployments(self) -> tuple[str, ...]:
        """The Deployments of the namespace: the primary one first, then the workloads."""
        return (self.deployment, *(w.name for w in self.workloads))

    def workload_scenario(self, name: str) -> Scenario:
        """Deployment ``name`` as a scenario of its own (the primary: this scenario), to lay out
        its objects and logs the same way; it keeps the scenario's config, not its expectations."""
        if name == self.deployment:
            return self
        for workload in self.workloads:
            if workload.name == name:
                return self.model_copy(update={
                    "deployment": workload.name, "pod_labels": workload.pod_labels,
                    "deployment_labels": workload.deployment_labels,
                    "deployment_annotations": workload.deployment_annotations,
                    "revisions": workload.revisions, "logs": workload.logs,
                    "progress_deadline_exceeded_at": None, "recreated_at": None,
                    "workloads": (), "alerts": (),
                    "expect": Expectations(incidents=())})
        raise KeyError(name)

    def with_revisions(self, deployment: str, revisions: tuple[Revision, ...]) -> Scenario:
        """The same scenario with Deployment ``deployment``'s revisions replaced (a rollback
        written to the simulated apiserver adds one)."""
        if deployment == self.deployment:
            return self.model_copy(update={"revisions": revisions})
        workloads = tuple(w.model_copy(update={"revisions": revisions}) if w.name == deployment
                          else w for w in self.workloads)
        return self.model_copy(update={"workloads": workloads})

    def log_end(self, spec: LogSpec) -> float:
        return self.duration if spec.to is None else spec.to

    def revision(self, number: int) -> Revision:
        for revision in self.revisions:
            if revision.revision == number:
                return revision
        raise KeyError(number)

    def generation_of(self, revision: Revision) -> int:
        """0 for the Deployment object that existed first, 1 for the one created again."""
        return int(self.recreated_at is not None and revision.at >= self.recreated_at)

    def object_revisions(self, revision: Revision) -> tuple[Revision, ...]:
        """The revisions of the same Deployment object as ``revision``, in order."""
        generation = self.generation_of(revision)
        return tuple(r for r in self.revisions if self.generation_of(r) == generation)

    def kube_revision(self, number: int) -> int:
        """The deployment.kubernetes.io/revision of scenario revision ``number``: counted again
        from 1 by a Deployment created again."""
        revision = self.revision(number)
        earlier = [r for r in self.revisions if self.generation_of(r) < self.generation_of(revision)]
        return number - (earlier[-1].revision if earlier else 0)

    def template_revision(self, number: int) -> int:
        """The revision whose ReplicaSet runs revision ``number`` (itself unless reused)."""
        revision = self.revision(number)
        return revision.revision if revision.reuses is None else self.template_revision(revision.reuses)

    @property
    def workload(self) -> str:
        """The workload label value of the Deployment's log streams."""
        return (self.pod_labels.get("app.kubernetes.io/name") or self.pod_labels.get("app")
                or self.deployment)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ``ScenarioError`` names the file and every bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, [f"cannot be read: {exc.__class__.__name__}: {exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(path, [f"is not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ScenarioError(path, ["must be a YAML mapping at the top level"])
    raw.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(path, describe_validation_errors(exc)) from None


def describe_validation_errors(exc: ValidationError) -> list[str]:
    """'revisions[1].pod_problems[0].problem: Input should be ...' lines."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ""
        for part in error.get("loc", ()):
            if isinstance(part, int):
                location += f"[{part}]"
            else:
                location += ("." if location else "") + str(part)
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown field (check the spelling; see incident_detector/sim/scenario.py)"
        elif error.get("type") == "missing":
            message = "required field is missing"
        message = message.removeprefix("Value error, ")
        lines.append(f"{location or 'scenario'}: {message}")
    return lines


def scenario_paths(directory: str | Path) -> list[Path]:
    """Every scenario file in ``directory`` (not recursive), sorted by name."""
    directory = Path(directory)
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in SCENARIO_SUFFIXES)
