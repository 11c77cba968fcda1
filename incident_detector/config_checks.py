"""What a valid setting is: the constants, the parsing of list values and every validator of
``config.Settings``, which takes them all from ``SettingsChecks`` (those of what acting needs from
its base, ``RemediationChecks``).

``config.Settings`` names the settings (their types, defaults and the comments the configuration
reference is written from); this module says which values each one accepts. The validators are
declared here without their fields (``check_fields=False``); tests/test_config.py checks that
every field a validator names is a field of ``Settings``.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings

from .credentials import parse_dashboard_token
from .model import CHANGE_KINDS

DEFAULT_ERROR_PATTERN = "(?i)(error|exception|fatal|panic)"
# The values Loki 3 gives the detected_level structured metadata (discover_log_levels); "unknown"
# is a line whose level it could not tell.
LOKI_LEVELS = ("trace", "debug", "info", "warn", "error", "critical", "fatal", "unknown")
DEFAULT_ERROR_LEVELS = ("error", "critical", "fatal")
ALL_DEPLOYMENTS = "*"
# Kubernetes names: DNS-1123 labels (namespaces) and subdomains (deployments).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")

SECRET_FIELDS = frozenset({"slack_webhook_url", "loki_bearer_token", "loki_password",
                           "slack_signing_secret", "slack_bot_token", "alertmanager_token",
                           "dashboard_token", "llm_api_key", "argocd_token",
                           "change_webhook_token", "database_url"})
PRIORITIES = ("P1", "P2", "P3", "P4")
# What remediation may do (judge/guardrails.Action has the same values).
REMEDIATION_ACTIONS = ("rollback", "restart", "pause", "scale", "delete-pod", "delete-stuck-pods")
# Slack ids: users start with U or W (Enterprise Grid), conversations with C, G or D.
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}\Z")
_SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}\Z")
# Label names go into LogQL and PromQL unquoted: only Prometheus label-name characters.
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
# What an HTTP header may carry: printable ASCII, no space.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _each_matching(value: tuple[str, ...], pattern: re.Pattern[str], *,
                   what: str) -> tuple[str, ...]:
    """``value`` without repeats, when each of its names matches ``pattern``."""
    for name in value:
        if not pattern.match(name):
            raise ValueError(f"{name!r} is not {what}")
    return tuple(dict.fromkeys(value))


def _each_known(value: tuple[str, ...], known: tuple[str, ...], *, what: str,
                none: str | None = None) -> tuple[str, ...]:
    """``value`` without repeats, when each of it is one of ``known`` (``what`` they are);
    ``none``: the complaint when it names nothing, if that is wrong."""
    chosen = tuple(dict.fromkeys(value))
    if not chosen and none is not None:
        raise ValueError(none)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: {what} are {', '.join(known)}")
    return chosen


def _printable_secret(value: SecretStr | None) -> SecretStr | None:
    """A secret sent in a header: printable ASCII without spaces, refused without showing it."""
    if value is not None and not _HEADER_SAFE.fullmatch(value.get_secret_value()):
        raise ValueError("must be printable ASCII without spaces (value not shown: it is a secret)")
    return value


class RemediationChecks(BaseSettings):
    """The validators of what acting needs: who may approve, where the buttons go, what
    REMEDIATION_MODE asks for, where and how the detector may act.

    A base class's validators of a field run before the subclass's of the same mode; none of
    these fields has another validator after its value is parsed, so the split keeps the order.
    """

    @field_validator("slack_approvers", check_fields=False)
    @classmethod
    def _valid_approvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_matching(value, _SLACK_USER_ID, what="a Slack user id (like U012AB3CD)")

    @field_validator("slack_channel_id", check_fields=False)
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

    @field_validator("approval_confidence", check_fields=False)
    @classmethod
    def _approval_below_auto(cls, value: float, info: ValidationInfo) -> float:
        auto = info.data.get("auto_confidence")
        if auto is not None and value > auto:
            raise ValueError(f"must be at most AUTO_CONFIDENCE ({auto})")
        return value

    @field_validator("remediation_mode", check_fields=False)
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

    @field_validator("excluded_namespaces", check_fields=False)
    @classmethod
    def _valid_excluded(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_matching(value, _DNS_LABEL, what="a valid namespace name")

    @field_validator("allowed_namespaces", check_fields=False)
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

    @field_validator("allowed_actions", check_fields=False)
    @classmethod
    def _valid_actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_known(tuple(action.lower() for action in value), REMEDIATION_ACTIONS,
                           what="the actions",
                           none="must name at least one action (REMEDIATION_MODE=off allows none)")

    @field_validator("scale_max", check_fields=False)
    @classmethod
    def _scale_range(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("scale_min")
        if low is not None and value < low:
            raise ValueError(f"must be at least SCALE_MIN ({low})")
        return value


class SettingsChecks(RemediationChecks):
    """The validators of ``config.Settings`` besides ``RemediationChecks``', in the order they
    run."""

    @field_validator("namespace", "target_deployment", mode="before", check_fields=False)
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("namespace", check_fields=False)
    @classmethod
    def _valid_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one namespace")
        return _each_matching(value, _DNS_LABEL, what="a valid namespace name")

    @field_validator("target_deployment", check_fields=False)
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

    @field_validator("error_pattern", check_fields=False)
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @field_validator("error_levels", mode="before", check_fields=False)
    @classmethod
    def _level_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("error_levels", check_fields=False)
    @classmethod
    def _valid_levels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_known(tuple(level.lower() for level in value), LOKI_LEVELS,
                           what="Loki's levels", none="must name at least one level")

    @field_validator("loki_label_app", "loki_app_label_key", "loki_namespace_label_key",
                     "loki_pod_label_key", check_fields=False)
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("loki_app_label_key", "loki_namespace_label_key", "loki_pod_label_key",
                     check_fields=False)
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not _LABEL_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid Loki label name")
        return value

    @field_validator("loki_org_id", check_fields=False)
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_SAFE.fullmatch(value):
            raise ValueError("must be printable ASCII without spaces (it is sent as a header)")
        return value

    @field_validator("slack_webhook_url", "loki_bearer_token", "loki_password", mode="before",
                     check_fields=False)
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("loki_bearer_token", check_fields=False)
    @classmethod
    def _token_header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        return _printable_secret(value)

    @field_validator("slack_webhook_url", check_fields=False)
    @classmethod
    def _https_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
            # The value is a secret: say what is wrong without repeating it.
            raise ValueError("must be an http(s) URL (value not shown: it is a secret)")
        return value

    @field_validator("slack_approvers", "excluded_namespaces", "allowed_namespaces",
                     "allowed_actions", "alert_namespace_labels", "alert_deployment_labels",
                     "alert_pod_labels", "alert_workload_labels", "notify_priorities",
                     mode="before", check_fields=False)
    @classmethod
    def _remediation_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("slack_signing_secret", "slack_bot_token", "slack_channel_id",
                     "self_namespace", "alertmanager_token", "rules_file", "dashboard_token",
                     "auth_proxy_header", "change_webhook_url", "change_webhook_token",
                     "llm_base_url", "llm_model", "llm_api_key", "llm_api_version",
                     "llm_prompt_file", "argocd_url", "argocd_token", mode="before",
                     check_fields=False)
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("change_kinds", mode="before", check_fields=False)
    @classmethod
    def _kinds_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("change_kinds", check_fields=False)
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
                     "change_webhook_token", check_fields=False)
    @classmethod
    def _secret_header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        return _printable_secret(value)

    @field_validator("alert_namespace_labels", "alert_deployment_labels", "alert_pod_labels",
                     "alert_workload_labels", check_fields=False)
    @classmethod
    def _alert_label_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_matching(value, _LABEL_NAME, what="a valid Prometheus label name")

    @field_validator("notify_priorities", check_fields=False)
    @classmethod
    def _valid_priorities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _each_known(tuple(p.upper() for p in value), PRIORITIES, what="the priorities")

    @field_validator("dashboard_token", check_fields=False)
    @classmethod
    def _dashboard_token_form(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # The one parser of the value (the dashboard's); its errors never quote the secret.
            try:
                parse_dashboard_token(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("DASHBOARD_TOKEN ")) from None
        return value

    @field_validator("auth_proxy_header", check_fields=False)
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9-]+\Z", value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @field_validator("alertmanager_token", "dashboard_token", check_fields=False)
    @classmethod
    def _alertmanager_token(cls, value: SecretStr | None) -> SecretStr | None:
        return _printable_secret(value)

    @field_validator("self_deployment", check_fields=False)
    @classmethod
    def _valid_self_deployment(cls, value: str) -> str:
        if not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a valid Deployment name")
        return value

    @field_validator("self_namespace", check_fields=False)
    @classmethod
    def _valid_self_namespace(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name")
        return value

    @field_validator("database_url", check_fields=False)
    @classmethod
    def _database_url_is_postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        # The message names the scheme only: the value holds a password.
        if value is not None and not value.get_secret_value().startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// or postgres:// URL "
                             "(unset it to keep the SQLite file at STATE_PATH)")
        return value

    @model_validator(mode="after")
    def _llm_and_argocd_complete(self) -> SettingsChecks:
        if self.llm_base_url is not None and not self.llm_model:
            raise ValueError("LLM_BASE_URL needs LLM_MODEL (the model or deployment to ask)")
        if (self.argocd_url is None) != (self.argocd_token is None):
            raise ValueError("ARGOCD_URL and ARGOCD_TOKEN go together")
        return self

    @model_validator(mode="after")
    def _auth_is_one_kind(self) -> SettingsChecks:
        if self.loki_bearer_token and (self.loki_username or self.loki_password):
            raise ValueError("LOKI_BEARER_TOKEN and LOKI_USERNAME/LOKI_PASSWORD exclude each other")
        if bool(self.loki_username) != bool(self.loki_password):
            raise ValueError("LOKI_USERNAME and LOKI_PASSWORD go together")
        return self
