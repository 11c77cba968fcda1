"""Configuration: environment variables in, one validated ``Settings`` object out.

This is the only module that reads the environment. A bad value stops the process at start with
exit code 2 and one readable line per bad variable; secrets are never echoed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError
from pydantic_settings import NoDecode, SettingsConfigDict

# The constants and the validators live in config_checks; the constants stay importable from here.
from .config_checks import (  # noqa: F401
    ALL_DEPLOYMENTS,
    DEFAULT_ERROR_LEVELS,
    DEFAULT_ERROR_PATTERN,
    LOKI_LEVELS,
    PRIORITIES,
    REMEDIATION_ACTIONS,
    SECRET_FIELDS,
    SettingsChecks,
)
from .credentials import safe_url
from .model import CHANGE_KINDS


class Settings(SettingsChecks):
    """Every knob of the detector; the field name in upper case is the environment variable."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # What to watch.
    namespace: Annotated[tuple[str, ...], NoDecode] = ("demo-aiops",)
    target_deployment: Annotated[tuple[str, ...], NoDecode] = ("payments-api",)

    # Loki.
    loki_url: AnyHttpUrl
    loki_label_app: str = "payments-api"
    loki_app_label_key: str = "app"
    loki_namespace_label_key: str = "namespace"
    loki_pod_label_key: str = "pod"
    # Pod template label whose value is the workload label's value on the log streams, for
    # custom label schemes (default: app.kubernetes.io/name, then app, then the Deployment name).
    workload_pod_label: str | None = None
    loki_org_id: str | None = None
    loki_bearer_token: SecretStr | None = None
    loki_username: str | None = None
    loki_password: SecretStr | None = None
    loki_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    error_pattern: str = DEFAULT_ERROR_PATTERN
    # A line is an error when Loki's detected_level is one of these; ERROR_PATTERN judges only the
    # lines whose level Loki did not detect. ERROR_MATCH: auto (by Loki's version), level, pattern.
    error_levels: Annotated[tuple[str, ...], NoDecode] = DEFAULT_ERROR_LEVELS
    error_match: Literal["auto", "level", "pattern"] = "auto"
    error_window_seconds: int = Field(default=120, ge=10, le=86_400)

    # Detection.
    error_threshold: int = Field(default=5, ge=1)
    roll_out_window_minutes: float = Field(default=10, gt=0, le=24 * 60)
    poll_interval_seconds: float = Field(default=20, gt=0, le=3600)
    baseline_lookback_minutes: float = Field(default=30, ge=1, le=24 * 60)
    baseline_factor: float = Field(default=2.0, ge=1.0, le=100)
    signature_sample_lines: int = Field(default=200, ge=10, le=5000)
    # The fast lane: a rollout younger than YOUNG_ROLLOUT_SECONDS is looked at every
    # FAST_POLL_SECONDS (0 turns the fast lane off), and as soon as a watch sees its ReplicaSet or
    # one of its pods change, so that it is judged seconds after its evidence reaches Loki rather
    # than at the next poll. LOKI_MAX_QUERIES_PER_MINUTE caps the Loki queries per namespace per
    # minute: a fast look that would go past it is skipped (the poll never is).
    fast_poll_seconds: float = Field(default=2.0, ge=0, le=60)
    young_rollout_seconds: float = Field(default=300, ge=0, le=3600)
    loki_max_queries_per_minute: int = Field(default=60, ge=1, le=10_000)
    # Deployments, ReplicaSets and pods are followed by long-lived watches (events arrive as they
    # happen) instead of one short watch per tick.
    watch_follow: bool = True
    # /healthz turns 503 when no tick has finished for this long (default: 3 intervals + 60 s).
    stall_after_seconds: float | None = Field(default=None, gt=0)

    # Durable memory and delivery: a SQLite file, or a PostgreSQL database shared by every
    # replica (postgresql://user:password@host:5432/db, libpq options such as sslmode).
    state_path: str = "incident-detector.sqlite3"
    database_url: SecretStr | None = None
    notify_max_age_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    # Identity in Events and leases; the pod name when run by the manifests in k8s/.
    pod_name: str = "incident-detector"
    # Write an events.k8s.io Event on the Deployment for each incident, and read them back.
    kube_events: bool = True
    # With several replicas: only the holder of the Lease detects and notifies.
    leader_election: bool = False
    # Namespace of the Lease (default: the first of NAMESPACE).
    lease_namespace: str | None = None
    lease_duration_seconds: float = Field(default=15.0, ge=5, le=300)

    # Kubernetes.
    kube_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    # Slack.
    slack_webhook_url: SecretStr | None = None
    slack_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    slack_max_attempts: int = Field(default=5, ge=1, le=20)
    # Verifies the interactive payloads (approval clicks); without it that endpoint answers 404.
    slack_signing_secret: SecretStr | None = None
    # Slack user ids allowed to approve or reject an action.
    slack_approvers: Annotated[tuple[str, ...], NoDecode] = ()
    # A Slack app's bot token and channel: messages go through chat.postMessage, follow-ups
    # are thread replies. Both or neither.
    slack_bot_token: SecretStr | None = None
    slack_channel_id: str | None = Field(default=None, validate_default=True)

    # Remediation (off by default: a read-only detector stays read-only). The fields are
    # validated in this order and the later checks read the earlier values, so REMEDIATION_MODE,
    # whose check reads the Slack settings and both confidences, comes after them.
    auto_confidence: float = Field(default=0.8, ge=0, le=1)
    approval_confidence: float = Field(default=0.6, ge=0, le=1, validate_default=True)
    # The dashboard is read-only until one of these is set: a token (each write names its user:
    # "name:secret", or a bare secret for the user "dashboard"), or the header an authenticating
    # proxy in front of it sets to the user's name (e.g. oauth2-proxy's X-Forwarded-User).
    dashboard_token: SecretStr | None = None
    auth_proxy_header: str | None = None
    remediation_mode: Literal["off", "approve", "auto"] = "off"
    # Where actions may run: ALLOWED_NAMESPACES empty means every watched NAMESPACE; an
    # excluded namespace is never acted on.
    excluded_namespaces: Annotated[tuple[str, ...], NoDecode] = ("kube-system", "kube-public")
    allowed_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(default=(),
                                                                     validate_default=True)
    allowed_actions: Annotated[tuple[str, ...], NoDecode] = ("rollback",)
    # No second action on the same Deployment within this time; at most this many per hour.
    remediation_cooldown_minutes: float = Field(default=30, ge=0, le=7 * 24 * 60)
    max_actions_per_hour: int = Field(default=3, ge=1, le=1000)
    scale_min: int = Field(default=1, ge=0, le=1000)
    scale_max: int = Field(default=20, ge=1, le=1000, validate_default=True)
    # Every write is sent with dryRun=All: validated by the API server, nothing persisted.
    dry_run: bool = False
    verify_timeout_seconds: float = Field(default=300, ge=10, le=6 * 3600)
    # The detector's own Deployment, never acted on. SELF_NAMESPACE empty means unknown: then a
    # Deployment of that name is refused in every namespace.
    self_deployment: str = "incident-detector"
    self_namespace: str | None = None

    # Rules (judge.rules): priorities and the action per kind of problem. Unset: the built-in set.
    rules_file: str | None = None

    # Alertmanager intake: POST /webhooks/alertmanager answers 404 until a token is set.
    alertmanager_token: SecretStr | None = None
    # Alert labels that name the workload, each list tried in order (Prometheus label names:
    # kube-state-metrics' ``label_app_kubernetes_io_name`` style, so no dots or slashes).
    alert_namespace_labels: Annotated[tuple[str, ...], NoDecode] = ("namespace",)
    alert_deployment_labels: Annotated[tuple[str, ...], NoDecode] = ("deployment",)
    alert_pod_labels: Annotated[tuple[str, ...], NoDecode] = ("pod",)
    alert_workload_labels: Annotated[tuple[str, ...], NoDecode] = (
        "service", "app", "app_kubernetes_io_name")

    # Error triage: the watched namespaces' error lines grouped by signature (one sampled Loki
    # query per namespace per tick; 0 lines turns it off), and the priorities that notify.
    triage_sample_lines: int = Field(default=500, ge=0, le=5000)
    triage_max_groups: int = Field(default=1000, ge=10, le=100_000)
    notify_priorities: Annotated[tuple[str, ...], NoDecode] = ("P1",)

    # The change timeline: the kinds watched (every one by default), how long and how many changes
    # are kept, where each is posted as a CloudEvent (optional, with an optional bearer token),
    # and the port of the gRPC WatchChanges feed (0: off; needs the ``grpc`` extra).
    change_kinds: Annotated[tuple[str, ...], NoDecode] = CHANGE_KINDS
    change_retention_days: float = Field(default=7, gt=0, le=365)
    change_retention_max: int = Field(default=10_000, ge=100, le=1_000_000)
    change_webhook_url: AnyHttpUrl | None = None
    change_webhook_token: SecretStr | None = None
    change_webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    change_grpc_port: int = Field(default=0, ge=0, le=65535)

    # Optional LLM analysis (off without LLM_BASE_URL): an OpenAI-compatible chat-completions
    # endpoint reads the redacted evidence and answers as a follow-up; it can only lower what the
    # guardrails allow (below LLM_MIN_CONFIDENCE, or another action: an automatic action waits
    # for an approval instead).
    llm_base_url: AnyHttpUrl | None = None
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    # Azure OpenAI: its api-version (the key then goes in the api-key header).
    llm_api_version: str | None = None
    llm_timeout_seconds: float = Field(default=20.0, gt=0, le=300)
    llm_prompt_file: str | None = None
    llm_max_evidence_chars: int = Field(default=8000, ge=500, le=200_000)
    llm_min_confidence: float = Field(default=0.7, ge=0, le=1)

    # Argo CD: a rollback of a Deployment it manages goes through its API (the application's
    # history) when ARGOCD_URL and ARGOCD_TOKEN are set; otherwise it stays advice.
    argocd_url: AnyHttpUrl | None = None
    argocd_token: SecretStr | None = None
    argocd_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    argocd_insecure: bool = False

    # HTTP server and logs.
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Derived values, in the units the code uses.
    @property
    def roll_out_window_seconds(self) -> float:
        return self.roll_out_window_minutes * 60.0

    @property
    def lease_namespace_effective(self) -> str:
        return self.lease_namespace or self.namespace[0]

    @property
    def stall_seconds(self) -> float:
        if self.stall_after_seconds is not None:
            return self.stall_after_seconds
        return 3 * self.poll_interval_seconds + 60.0

    @property
    def watches_all_deployments(self) -> bool:
        return self.target_deployment == (ALL_DEPLOYMENTS,)

    @property
    def store_target(self) -> str:
        """What the store opens: DATABASE_URL when set, else the SQLite file at STATE_PATH."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return self.state_path

    @property
    def shared_store(self) -> bool:
        """Whether every replica reads and writes the same store (PostgreSQL)."""
        return self.database_url is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_webhook_url is not None

    def public(self) -> dict[str, Any]:
        """Effective settings for logs and /status: secrets replaced by whether they are set."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url" and value is not None:
                out[name] = safe_url(value.get_secret_value())
            elif name in SECRET_FIELDS:
                out[name] = "set" if value is not None else "unset"
            elif isinstance(value, tuple):
                out[name] = list(value)
            elif isinstance(value, AnyHttpUrl):
                out[name] = _url_without_credentials(str(value))
            else:
                out[name] = value
        return out


def _url_without_credentials(url: str) -> str:
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", url)


class ConfigError(Exception):
    """Raised with one readable line per bad variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``environ`` (the process environment when None) and overrides."""
    try:
        if environ is None:
            return Settings(**overrides)
        lowered = {k.lower(): v for k, v in environ.items() if k.lower() in Settings.model_fields}
        lowered.update(overrides)
        # model_validate does not read the process environment: tests stay hermetic.
        return Settings.model_validate(lowered)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        location = [str(part) for part in error.get("loc", ())]
        variable = location[0].upper() if location else "configuration"
        message = error.get("msg", "invalid")
        if error.get("type") == "missing":
            message = "is required"
        message = message.removeprefix("Value error, ")
        lines.append(f"invalid configuration: {variable}: {message}")
    return lines
