"""Configuration: environment variables in, one validated ``Settings`` object out.

This is the only module that reads the environment. A bad value stops the process at start with
exit code 2 and one readable line per bad variable; secrets are never echoed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .credentials import parse_dashboard_token, safe_url
from .model import CHANGE_KINDS

DEFAULT_ERROR_PATTERN = "(?i)(error|exception|fatal|panic)"
# The values Loki 3 gives the detected_level structured metadata (discover_log_levels); "unknown"
# is a line whose level it could not tell.
LOKI_LEVELS = ("trace", "debug", "info", "warn", "error", "critical", "fatal", "unknown")
DEFAULT_ERROR_LEVELS = ("error", "critical", "fatal")
ALL_DEPLOYMENTS = "*"
# Kubernetes names: DNS-1123 labels (namespaces) and subdomains (deployments).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

SECRET_FIELDS = frozenset({"slack_webhook_url", "loki_bearer_token", "loki_password",
                           "slack_signing_secret", "slack_bot_token", "alertmanager_token",
                           "dashboard_token", "llm_api_key", "argocd_token",
                           "change_webhook_token", "database_url"})
PRIORITIES = ("P1", "P2", "P3", "P4")
# What remediation may do (judge/guardrails.Action has the same values).
REMEDIATION_ACTIONS = ("rollback", "restart", "pause", "scale", "delete-pod", "delete-stuck-pods")
# Slack ids: users start with U or W (Enterprise Grid), conversations with C, G or D.
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
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

    @field_validator("namespace", "target_deployment", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("namespace")
    @classmethod
    def _valid_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one namespace")
        for name in value:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a valid namespace name")
        return tuple(dict.fromkeys(value))

    @field_validator("target_deployment")
    @classmethod
    def _valid_deployments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name a Deployment, a comma-separated list, or *")
        if ALL_DEPLOYMENTS in value and len(value) > 1:
            raise ValueError("* stands alone: it already means every Deployment")
        for name in value:
            if name != ALL_DEPLOYMENTS and not _DNS_SUBDOMAIN.match(name):
                raise ValueError(f"{name!r} is not a valid Deployment name")
        return tuple(dict.fromkeys(value))

    @field_validator("error_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @field_validator("error_levels", mode="before")
    @classmethod
    def _level_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("error_levels")
    @classmethod
    def _valid_levels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        levels = tuple(dict.fromkeys(level.lower() for level in value))
        if not levels:
            raise ValueError("must name at least one level")
        unknown = [level for level in levels if level not in LOKI_LEVELS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))}: Loki's levels are "
                             f"{', '.join(LOKI_LEVELS)}")
        return levels

    @field_validator("loki_label_app", "loki_app_label_key", "loki_namespace_label_key",
                     "loki_pod_label_key")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("loki_app_label_key", "loki_namespace_label_key", "loki_pod_label_key")
    @classmethod
    def _label_name(cls, value: str) -> str:
        # Label names go into LogQL unquoted: only Prometheus label-name characters.
        if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", value):
            raise ValueError(f"{value!r} is not a valid Loki label name")
        return value

    @field_validator("loki_org_id")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[\x21-\x7e]+$", value):
            raise ValueError("must be printable ASCII without spaces (it is sent as a header)")
        return value

    @field_validator("slack_webhook_url", "loki_bearer_token", "loki_password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("loki_bearer_token")
    @classmethod
    def _token_header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^[\x21-\x7e]+$", value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces (value not shown: it is a secret)")
        return value

    @field_validator("slack_webhook_url")
    @classmethod
    def _https_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
            # The value is a secret: say what is wrong without repeating it.
            raise ValueError("must be an http(s) URL (value not shown: it is a secret)")
        return value

    @field_validator("slack_approvers", "excluded_namespaces", "allowed_namespaces",
                     "allowed_actions", "alert_namespace_labels", "alert_deployment_labels",
                     "alert_pod_labels", "alert_workload_labels", "notify_priorities",
                     mode="before")
    @classmethod
    def _remediation_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("slack_signing_secret", "slack_bot_token", "slack_channel_id",
                     "self_namespace", "alertmanager_token", "rules_file", "dashboard_token",
                     "auth_proxy_header", "change_webhook_url", "change_webhook_token",
                     "llm_base_url", "llm_model", "llm_api_key", "llm_api_version",
                     "llm_prompt_file", "argocd_url", "argocd_token", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("change_kinds", mode="before")
    @classmethod
    def _kinds_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("change_kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        by_lower = {kind.lower(): kind for kind in CHANGE_KINDS}
        kinds = []
        for name in value:
            kind = by_lower.get(name.lower())
            if kind is None:
                raise ValueError(f"{name!r} is not a watched kind; choose from "
                                 f"{', '.join(CHANGE_KINDS)}")
            kinds.append(kind)
        return tuple(dict.fromkeys(kinds))

    @field_validator("slack_signing_secret", "slack_bot_token", "llm_api_key", "argocd_token",
                     "change_webhook_token")
    @classmethod
    def _secret_header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^[\x21-\x7e]+$", value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces "
                             "(value not shown: it is a secret)")
        return value

    @field_validator("slack_approvers")
    @classmethod
    def _valid_approvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for user in value:
            if not _SLACK_USER_ID.match(user):
                raise ValueError(f"{user!r} is not a Slack user id (like U012AB3CD)")
        return tuple(dict.fromkeys(value))

    @field_validator("slack_channel_id")
    @classmethod
    def _channel_with_token(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _SLACK_CHANNEL_ID.match(value):
            raise ValueError(f"{value!r} is not a Slack channel id (like C012AB3CD)")
        has_token = info.data.get("slack_bot_token") is not None
        if value is None and has_token:
            raise ValueError("is required with SLACK_BOT_TOKEN (they go together)")
        if value is not None and not has_token and "slack_bot_token" in info.data:
            raise ValueError("needs SLACK_BOT_TOKEN (they go together)")
        return value

    @field_validator("approval_confidence")
    @classmethod
    def _approval_below_auto(cls, value: float, info: ValidationInfo) -> float:
        auto = info.data.get("auto_confidence")
        if auto is not None and value > auto:
            raise ValueError(f"must be at most AUTO_CONFIDENCE ({auto})")
        return value

    @field_validator("remediation_mode")
    @classmethod
    def _mode_has_what_it_needs(cls, value: str, info: ValidationInfo) -> str:
        """``approve`` always asks, so it needs SLACK_SIGNING_SECRET (to verify the clicks),
        SLACK_APPROVERS (someone allowed to click) and a place to post the buttons
        (SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN with SLACK_CHANNEL_ID), unless approvals are made
        on the dashboard (DASHBOARD_TOKEN or AUTH_PROXY_HEADER). ``auto`` asks only for
        confidences in [APPROVAL_CONFIDENCE, AUTO_CONFIDENCE): it needs the same, unless that
        band is empty (APPROVAL_CONFIDENCE equal to AUTO_CONFIDENCE), in which case it only
        ever acts or notifies and runs without Slack approvals.
        """
        if value == "off":
            return value
        if value == "auto":
            auto = info.data.get("auto_confidence")
            approval = info.data.get("approval_confidence")
            if auto is None or approval is None or approval >= auto:
                return value
        if info.data.get("dashboard_token") is not None or info.data.get("auth_proxy_header"):
            return value  # approvals on the dashboard, by its authenticated users
        missing = []
        if info.data.get("slack_signing_secret") is None:
            missing.append("SLACK_SIGNING_SECRET")
        if not info.data.get("slack_approvers"):
            missing.append("SLACK_APPROVERS")
        if info.data.get("slack_webhook_url") is None and info.data.get("slack_channel_id") is None:
            missing.append("SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN with SLACK_CHANNEL_ID")
        if missing:
            why = ("approve asks before every action" if value == "approve" else
                   "auto asks for approval between APPROVAL_CONFIDENCE and AUTO_CONFIDENCE "
                   "(set them equal never to ask)")
            raise ValueError(f"{why}, which needs {'; '.join(missing)} (Slack approvals), or "
                             "DASHBOARD_TOKEN or AUTH_PROXY_HEADER (approvals on the dashboard)")
        return value

    @field_validator("excluded_namespaces")
    @classmethod
    def _valid_excluded(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a valid namespace name")
        return tuple(dict.fromkeys(value))

    @field_validator("allowed_namespaces")
    @classmethod
    def _valid_allowed(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        watched = info.data.get("namespace")
        excluded = info.data.get("excluded_namespaces") or ()
        for name in value:
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a valid namespace name")
            # A typo here would silently allow nothing; a contradiction would hide which wins.
            if watched is not None and name not in watched:
                raise ValueError(f"{name!r} is not watched (NAMESPACE): the detector acts only "
                                 f"where it watches")
            if name in excluded:
                raise ValueError(f"{name!r} is also in EXCLUDED_NAMESPACES: remove it from one "
                                 f"of the two")
        return tuple(dict.fromkeys(value))

    @field_validator("allowed_actions")
    @classmethod
    def _valid_actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        actions = tuple(dict.fromkeys(action.lower() for action in value))
        if not actions:
            raise ValueError("must name at least one action (REMEDIATION_MODE=off allows none)")
        unknown = [action for action in actions if action not in REMEDIATION_ACTIONS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))}: the actions are "
                             f"{', '.join(REMEDIATION_ACTIONS)}")
        return actions

    @field_validator("alert_namespace_labels", "alert_deployment_labels", "alert_pod_labels",
                     "alert_workload_labels")
    @classmethod
    def _alert_label_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", name):
                raise ValueError(f"{name!r} is not a valid Prometheus label name")
        return tuple(dict.fromkeys(value))

    @field_validator("notify_priorities")
    @classmethod
    def _valid_priorities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        priorities = tuple(dict.fromkeys(p.upper() for p in value))
        unknown = [p for p in priorities if p not in PRIORITIES]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))}: the priorities are "
                             f"{', '.join(PRIORITIES)}")
        return priorities

    @field_validator("dashboard_token")
    @classmethod
    def _dashboard_token_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # The one parser of the value (the dashboard's); its errors never quote the secret.
            try:
                parse_dashboard_token(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("DASHBOARD_TOKEN ")) from None
        return value

    @field_validator("auth_proxy_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9-]+$", value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @field_validator("alertmanager_token", "dashboard_token")
    @classmethod
    def _alertmanager_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^[\x21-\x7e]+$", value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces (value not shown: it is a secret)")
        return value

    @field_validator("scale_max")
    @classmethod
    def _scale_range(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("scale_min")
        if low is not None and value < low:
            raise ValueError(f"must be at least SCALE_MIN ({low})")
        return value

    @field_validator("self_deployment")
    @classmethod
    def _valid_self_deployment(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a valid Deployment name")
        return value

    @field_validator("self_namespace")
    @classmethod
    def _valid_self_namespace(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        # The message names the scheme only: the value holds a password.
        if value is not None and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// or postgres:// URL "
                             "(unset it to keep the SQLite file at STATE_PATH)")
        return value

    @model_validator(mode="after")
    def _llm_and_argocd_complete(self) -> "Settings":
        if self.llm_base_url is not None and not self.llm_model:
            raise ValueError("LLM_BASE_URL needs LLM_MODEL (the model or deployment to ask)")
        if (self.argocd_url is None) != (self.argocd_token is None):
            raise ValueError("ARGOCD_URL and ARGOCD_TOKEN go together")
        return self

    @model_validator(mode="after")
    def _auth_is_one_kind(self) -> "Settings":
        if self.loki_bearer_token and (self.loki_username or self.loki_password):
            raise ValueError("LOKI_BEARER_TOKEN and LOKI_USERNAME/LOKI_PASSWORD exclude each other")
        if bool(self.loki_username) != bool(self.loki_password):
            raise ValueError("LOKI_USERNAME and LOKI_PASSWORD go together")
        return self

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
