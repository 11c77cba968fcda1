"""Scenario files: a small YAML description of one Deployment's history, its logs and the verdict
the detector must reach.

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
    pod_label: true           # false: the streams carry no pod label (no pod identity)
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
expect:
  alert_incidents:            # optional: the alert incidents (no rollout in the window)
    - alert: HighErrorRate
      priority: P1            # optional
      resolved: true          # optional: a "resolved after ..." follow-up went out
  incidents:                  # [] for none
    - revision: 2
      signals: [error_spike]  # each of these must be among the incident's signals
      attribution: per_pod    # optional
      evidence_at: 100        # when the evidence is in place (detection-delay benchmark)
```

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
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import SECRET_FIELDS, Settings
from ..model import Attribution, PodProblem, Priority, Signal

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
    per_minute: float | tuple[tuple[Seconds, float], ...]
    line: str = Field(min_length=1)
    pod_label: bool = True

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
    signals: tuple[Signal, ...] = ()
    attribution: Attribution | None = None
    evidence_at: Seconds | None = None


class Expectations(_Strict):
    incidents: tuple[ExpectedIncident, ...]
    alert_incidents: tuple[ExpectedAlertIncident, ...] = ()


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
        if not _DEPLOYMENT_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Deployment name (DNS label, <= 47 chars)")
        return value

    @field_validator("pod_labels", "deployment_labels", "deployment_annotations")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label or annotation key")
        return value

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
        revisions = [r.revision for r in self.revisions]
        times = [r.at for r in self.revisions]
        if any(b <= a for a, b in zip(revisions, revisions[1:])):
            raise ValueError("revisions: revision numbers must be strictly increasing")
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError("revisions: `at` times must be strictly increasing")
        known = set(revisions)
        for index, revision in enumerate(self.revisions):
            if revision.reuses is None:
                continue
            earlier = [r for r in self.revisions[:index] if r.revision == revision.reuses]
            if not earlier:
                raise ValueError(f"revisions[{index}].reuses: no earlier revision "
                                 f"{revision.reuses}")
            template = ("image", "env", "resources")
            if any(getattr(earlier[0], f) != getattr(revision, f) for f in template):
                raise ValueError(f"revisions[{index}]: a reused revision repeats the image, env "
                                 f"and resources of revision {revision.reuses}")
        for index, spec in enumerate(self.logs):
            if spec.revision not in known:
                raise ValueError(
                    f"logs[{index}].revision: no revision {spec.revision} in revisions")
            if self.log_end(spec) <= spec.from_:
                raise ValueError(f"logs[{index}]: `to` must be after `from`")
        seen: set[int] = set()
        for index, incident in enumerate(self.expect.incidents):
            if incident.revision not in known:
                raise ValueError(
                    f"expect.incidents[{index}].revision: "
                    f"no revision {incident.revision} in revisions")
            if incident.revision in seen:  # scenario revision numbers are distinct
                raise ValueError(f"expect.incidents[{index}]: revision {incident.revision} is "
                                 "listed twice (one incident per revision, ever)")
            seen.add(incident.revision)
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
