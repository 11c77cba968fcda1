"""The configuration reference, docs/configuration.md, written from ``config.Settings``.

Names, environment variables, defaults and the values each setting accepts are read from the fields
of ``Settings``, so they cannot drift from the code. ``Settings`` carries no descriptions, so those
are kept here, in ``SECTIONS``, keyed by field name and in the order the page lists them.
tests/test_docs.py fails when a field of ``Settings`` has no description here, when a description
names a field ``Settings`` does not have, and when docs/configuration.md differs from what this
module writes (``make docs`` writes it again).

    python -m incident_detector.config_reference                # writes docs/configuration.md
    python -m incident_detector.config_reference --output -     # the page, on stdout

Run from the repository's root (``make docs`` does).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AnyHttpUrl, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import SECRET_FIELDS, Settings

REGENERATE_COMMAND = "make docs"
DEFAULT_OUTPUT = Path("docs/configuration.md")


@dataclass(frozen=True)
class Section:
    title: str
    # Where the settings of this section are explained at length (a page of docs/), or "".
    see: str
    # Field name -> what it means, in Markdown (one table cell: no line breaks).
    settings: Mapping[str, str]


SECTIONS: tuple[Section, ...] = (
    Section("What to watch",
            "[Watching many Deployments](operations.md#watching-many-deployments)", {
        "namespace": "namespace to watch; a comma-separated list for several",
        "target_deployment": "Deployment to watch; a comma-separated list, or `*` for every "
                             "Deployment of the namespace(s)",
    }),
    Section("Loki", "[The LogQL it sends](detection.md#the-logql-it-sends)", {
        "loki_url": "base URL of Loki, e.g. `http://loki.monitoring:3100`; credentials in the URL "
                    "work too and are never logged",
        "loki_label_app": "value of the workload label on the log streams (single-Deployment case)",
        "loki_app_label_key": "name of the workload label on the log streams",
        "loki_namespace_label_key": "name of the namespace label on the log streams",
        "loki_pod_label_key": "name of the pod label (or structured metadata) on the log streams",
        "workload_pod_label": "pod template label whose value is the workload label on the log "
                              "streams, for custom label schemes; unset: `app.kubernetes.io/name`, "
                              "then `app`, then the Deployment's name",
        "loki_org_id": "`X-Scope-OrgID` for multi-tenant Loki",
        "loki_bearer_token": "bearer token for Loki; not together with `LOKI_USERNAME`/"
                             "`LOKI_PASSWORD`",
        "loki_username": "basic auth user for Loki; goes with `LOKI_PASSWORD`",
        "loki_password": "basic auth password for Loki; goes with `LOKI_USERNAME`",
        "loki_timeout_seconds": "timeout of one Loki request",
        "error_pattern": "RE2 line filter (`|~`) that makes a line an error when Loki did not "
                         "detect its level (or always, with `ERROR_MATCH=pattern`)",
        "error_levels": "`detected_level` values that make a line an error; Loki's levels are "
                        "`trace`, `debug`, `info`, `warn`, `error`, `critical`, `fatal`, `unknown`",
        "error_match": "`level`: `ERROR_LEVELS`, with `ERROR_PATTERN` for lines without a detected "
                       "level; `pattern`: `ERROR_PATTERN` alone (Loki 2, or Loki 3 with "
                       "`discover_log_levels: false`); `auto`: asks Loki's version once at start "
                       "(`/loki/api/v1/status/buildinfo`) and uses `pattern` before 3.0, `level` "
                       "otherwise",
        "error_window_seconds": "window of the error count",
    }),
    Section("Detection", "[How detection judges](detection.md)", {
        "error_threshold": "error lines in the window that make a spike",
        "roll_out_window_minutes": "how long after a ReplicaSet became the Deployment's current "
                                   "revision it counts as a rollout, and is judged",
        "poll_interval_seconds": "time between ticks",
        "baseline_lookback_minutes": "length of the baseline window before a rollout",
        "baseline_factor": "how many times the baseline rate a spike must be",
        "signature_sample_lines": "error lines sampled for the signatures of an incident",
        "fast_poll_seconds": "while a rollout is young, how often it is looked at between ticks "
                             "(`0`: no fast lane)",
        "young_rollout_seconds": "how long after it began a rollout stays on the fast lane",
        "loki_max_queries_per_minute": "Loki queries per namespace per minute above which a fast "
                                       "look does not ask Loki (the poll always does)",
        "watch_follow": "follow Deployments, ReplicaSets and pods with long watches (events as "
                        "they happen); `false`: one short watch per tick",
        "stall_after_seconds": "`/healthz` turns 503 when no tick finished for this long; unset: "
                               "3 × `POLL_INTERVAL_SECONDS` + 60",
    }),
    Section("Kubernetes, memory and replicas", "[Operations](operations.md)", {
        "state_path": "SQLite file of the durable memory (`:memory:` for none); not used with "
                      "`DATABASE_URL`",
        "database_url": "a PostgreSQL database shared by every replica instead of the SQLite "
                        "file (`postgresql://user:password@host:5432/db`, libpq options such as "
                        "`sslmode`; needs the `postgres` extra); unset: the file at `STATE_PATH`",
        "notify_max_age_minutes": "a notification still failing after this long is given up "
                                  "(logged, shown on `/status`)",
        "pod_name": "this replica's identity in Events and the Lease (set from the downward API "
                    "by `k8s/`)",
        "kube_events": "write an Event on the Deployment per incident, and read them back at "
                       "start",
        "leader_election": "only the holder of the Lease detects and notifies (`true` in `k8s/`)",
        "lease_namespace": "namespace of the Lease (the pod's own namespace in `k8s/`); unset: "
                           "the first of `NAMESPACE`",
        "lease_duration_seconds": "how long a leader's lease lasts without renewal",
        "kube_timeout_seconds": "timeout of one Kubernetes request",
    }),
    Section("Slack", "", {
        "slack_webhook_url": "Slack incoming webhook; unset: Slack off",
        "slack_timeout_seconds": "timeout of one Slack request",
        "slack_max_attempts": "attempts within one delivery round (429 and 5xx only)",
        "slack_signing_secret": "the Slack app's signing secret, verifying approval clicks; "
                                "unset: no interactive endpoint (404)",
        "slack_approvers": "Slack user ids (`U…`) who may approve or reject",
        "slack_bot_token": "a Slack app's bot token: messages through `chat.postMessage`, "
                           "follow-ups as thread replies; used instead of the webhook when set; "
                           "goes with `SLACK_CHANNEL_ID`",
        "slack_channel_id": "the channel (`C…`) the bot token posts to; goes with "
                            "`SLACK_BOT_TOKEN`",
    }),
    Section("Remediation", "[Remediation](remediation.md)", {
        "remediation_mode": "`off` (read-only: nothing can change the cluster), `approve` (every "
                            "incident's action waits for an approval, in Slack or on the "
                            "dashboard), `auto` (acts alone at `AUTO_CONFIDENCE`, asks from "
                            "`APPROVAL_CONFIDENCE`, otherwise only tells). Asking needs Slack "
                            "approvals (`SLACK_SIGNING_SECRET`, `SLACK_APPROVERS`, and "
                            "`SLACK_WEBHOOK_URL` or `SLACK_BOT_TOKEN` with `SLACK_CHANNEL_ID`) or "
                            "approvals on the dashboard (`DASHBOARD_TOKEN` or "
                            "`AUTH_PROXY_HEADER`); "
                            "`auto` with the two confidences equal never asks",
        "auto_confidence": "`auto` mode: the confidence from which an action runs at once",
        "approval_confidence": "`auto` mode: the confidence from which an action is proposed for "
                               "an approval; at most `AUTO_CONFIDENCE` (equal: never asks)",
        "allowed_actions": "actions that may run: `rollback`, `restart`, `pause`, `scale`, "
                           "`delete-pod`, `delete-stuck-pods`",
        "allowed_namespaces": "where actions may run (each one watched, none excluded); empty: "
                              "every watched namespace",
        "excluded_namespaces": "where actions never run",
        "remediation_cooldown_minutes": "no second action on the same Deployment within this time",
        "max_actions_per_hour": "at most this many actions in any hour, all Deployments together",
        "scale_min": "the lowest replica count a scale may set",
        "scale_max": "the highest replica count a scale may set (at least `SCALE_MIN`)",
        "dry_run": "every write is sent with `dryRun=All`: validated by the API server, nothing "
                   "persisted",
        "verify_timeout_seconds": "how long an action has to converge and bring the errors back "
                                  "under the baseline",
        "self_deployment": "the detector's own Deployment, never acted on",
        "self_namespace": "the detector's own namespace (the pod's namespace in `k8s/`); unset: "
                          "`SELF_DEPLOYMENT` is never acted on in any namespace",
    }),
    Section("Dashboard",
            "[Approving from the dashboard](dashboard.md#approving-from-the-dashboard)", {
        "dashboard_token": "`name:secret` (or a bare secret, user `dashboard`): signs in to "
                           "approve or reject on the dashboard; the name is the audit's user; "
                           "unset: the dashboard is read-only",
        "auth_proxy_header": "header in which an authenticating proxy (oauth2-proxy: "
                             "`X-Forwarded-User`) names the signed-in user; writes are then "
                             "allowed to every user it lets through",
    }),
    Section("Rules", "[Rules](alerts-and-rules.md#rules-how-urgent-and-what-to-do-rules_file)", {
        "rules_file": "YAML file of rules: priority and action per kind of problem; reloaded when "
                      "it changes; unset: the built-in rules",
    }),
    Section("Alertmanager",
            "[Alertmanager alerts]"
            "(alerts-and-rules.md#alertmanager-alerts-off-until-a-token-is-set)", {
        "alertmanager_token": "the token Alertmanager sends to `POST /webhooks/alertmanager` "
                              "(bearer, or basic auth password); unset: no intake (404)",
        "alert_namespace_labels": "alert labels naming the namespace, tried in order",
        "alert_deployment_labels": "alert labels naming the Deployment",
        "alert_pod_labels": "alert labels naming a pod (mapped through its ReplicaSet's owner)",
        "alert_workload_labels": "alert labels compared with the Deployments' "
                                 "`app.kubernetes.io/name`/`app` pod labels and names",
    }),
    Section("Error triage",
            "[Error triage]"
            "(alerts-and-rules.md#error-triage-every-error-of-the-watched-namespaces-grouped)", {
        "triage_sample_lines": "error lines sampled per namespace per tick for error triage; `0` "
                               "turns triage off (no query at all)",
        "triage_max_groups": "error groups kept, in memory and in the store",
        "notify_priorities": "priorities whose new error groups are notified, once per group",
    }),
    Section("The change timeline", "[What changed, and why it broke](changes.md)", {
        "change_kinds": "kinds whose changes are recorded, in any case",
        "change_retention_days": "how long recorded changes are kept (and can be replayed)",
        "change_retention_max": "how many recorded changes are kept at most",
        "change_webhook_url": "where each new change is POSTed as a CloudEvent; unset: off",
        "change_webhook_token": "optional bearer token of those POSTs "
                                "(`Authorization: Bearer <token>`)",
        "change_webhook_timeout_seconds": "timeout of one POST",
        "change_grpc_port": "port of the gRPC `ChangeFeed.WatchChanges` feed, on `HTTP_HOST` "
                            "(`0`: off; needs the `grpc` extra)",
    }),
    Section("LLM analysis", "[LLM analysis](changes.md#llm-analysis-optional-off-by-default)", {
        "llm_base_url": "an OpenAI-compatible endpoint; unset: off. OpenAI "
                        "`https://api.openai.com/v1`, vLLM `http://vllm:8000/v1`, Ollama "
                        "`http://ollama:11434/v1`, LocalAI `http://localai:8080/v1`, Azure OpenAI "
                        "`https://<resource>.openai.azure.com`",
        "llm_model": "the model; for Azure, the deployment's name (required with `LLM_BASE_URL`)",
        "llm_api_key": "sent as `Authorization: Bearer …`, or in Azure's `api-key` header; leave "
                       "it empty for a local server",
        "llm_api_version": "Azure OpenAI only (e.g. `2024-10-21`); setting it selects the Azure "
                           "URL form `…/openai/deployments/<LLM_MODEL>/chat/completions"
                           "?api-version=…`",
        "llm_timeout_seconds": "deadline for the answer",
        "llm_prompt_file": "YAML file with `system` and `user`; unset: the built-in prompt; see "
                           "`k8s/base/llm-prompt-configmap.yaml`",
        "llm_max_evidence_chars": "most characters of evidence sent per call",
        "llm_min_confidence": "below this, an automatic action waits for an approval",
    }),
    Section("Argo CD",
            "[Rolling back through Argo CD](remediation.md#rolling-back-through-argo-cd)", {
        "argocd_url": "address of `argocd-server` (e.g. `https://argocd-server.argocd.svc`); "
                      "with `ARGOCD_TOKEN`, turns the Argo CD rollback on",
        "argocd_token": "token of the Argo CD account the detector uses (in `k8s/`, the Secret's "
                        "`argocd-token` key); one of `ARGOCD_URL` and `ARGOCD_TOKEN` without the "
                        "other is a start-up error",
        "argocd_timeout_seconds": "bound of every call to Argo CD",
        "argocd_insecure": "do not verify `argocd-server`'s TLS certificate (a self-signed "
                           "install)",
    }),
    Section("HTTP server and logs", "[The dashboard and the HTTP API](dashboard.md)", {
        "http_host": "address to bind",
        "http_port": "port of `/healthz`, `/readyz`, `/status`, `/metrics`, the API and the "
                     "dashboard (`0`: any free port)",
        "log_format": "`auto`: console on a terminal, JSON otherwise",
        "log_level": "the lowest level logged",
    }),
)

DESCRIPTIONS: dict[str, str] = {
    name: text for section in SECTIONS for name, text in section.settings.items()
}


def drift(fields: Mapping[str, FieldInfo] | None = None) -> list[str]:
    """What keeps the descriptions from matching ``Settings``, one line each; empty when none."""
    fields = Settings.model_fields if fields is None else fields
    problems = []
    counts = Counter(name for section in SECTIONS for name in section.settings)
    for name, count in counts.items():
        if count > 1:
            problems.append(f"{name} is described in {count} sections")
    for name in fields:
        if name not in DESCRIPTIONS:
            problems.append(f"Settings.{name} ({env_name(name, fields[name])}) has no "
                            f"description in SECTIONS")
    for name in DESCRIPTIONS:
        if name not in fields:
            problems.append(f"SECTIONS describes {name}, which Settings does not have")
    return problems


def env_name(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return (alias or name).upper()


def _cell(text: str) -> str:
    # A pipe ends a table cell, in code spans too, unless escaped.
    return text.replace("|", "\\|")


def _number(value: float) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def render_default(field: FieldInfo) -> str:
    value = field.default
    if value is PydanticUndefined:
        return "*(required)*"
    if value is None:
        return "*(unset)*"
    if isinstance(value, tuple):
        return f"`{','.join(map(str, value))}`" if value else "*(empty)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _base_type(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(field: FieldInfo) -> str:
    # Field(ge=..., le=...) leaves annotated_types' Ge, Gt, Le, Lt in the metadata.
    low = high = ""
    for item in field.metadata:
        if getattr(item, "ge", None) is not None:
            low = f"≥ {_number(item.ge)}"
        elif getattr(item, "gt", None) is not None:
            low = f"> {_number(item.gt)}"
        if getattr(item, "le", None) is not None:
            high = f"≤ {_number(item.le)}"
        elif getattr(item, "lt", None) is not None:
            high = f"< {_number(item.lt)}"
    if low.startswith("≥") and high.startswith("≤"):
        return f"{low[2:]} to {high[2:]}"
    return ", ".join(part for part in (low, high) if part)


def render_accepts(name: str, field: FieldInfo) -> str:
    kind = _base_type(field.annotation)
    if typing.get_origin(kind) is Literal:
        choices = [f"`{choice}`" for choice in typing.get_args(kind)]
        text = ", ".join(choices[:-1]) + f" or {choices[-1]}"
    elif kind is bool:
        text = "`true` or `false`"
    elif kind in (int, float):
        bounds = _bounds(field)
        text = ("an integer" if kind is int else "a number") + (f", {bounds}" if bounds else "")
    elif typing.get_origin(kind) is tuple:
        text = "a comma-separated list"
    elif kind is AnyHttpUrl:
        text = "an http(s) URL"
    elif kind is SecretStr and name.endswith("_url"):
        text = "a URL"
    else:
        text = "text"
    if name in SECRET_FIELDS:
        text += "; **a secret**"
    return text


HEADER = f"""\
<!-- Generated from Settings (incident_detector/config.py) by incident_detector/config_reference.py.
     Do not edit: change the descriptions there and run `{REGENERATE_COMMAND}`. -->

# Configuration reference

All configuration is by environment variables (a local `.env` is not read; export them, see
[`.env.example`](../.env.example)). An invalid value stops the process at start with exit code 2 and
one line per bad variable, e.g. `invalid configuration: ERROR_THRESHOLD: Input should be greater
than or equal to 1`. Secrets are never echoed: logs, `/status` and `/api/settings` show them as
`set` or `unset`.

This page is generated from the settings themselves (`{REGENERATE_COMMAND}`): every variable the
detector reads is here, with its default and the values it accepts. The
[README](../README.md#the-settings-most-people-set) names the five most people set.
"""


def _section(section: Section, fields: Mapping[str, FieldInfo]) -> Iterator[str]:
    yield f"## {section.title}"
    yield ""
    if section.see:
        yield f"See {section.see}."
        yield ""
    yield "| variable | default | accepts | meaning |"
    yield "|---|---|---|---|"
    for name, text in section.settings.items():
        field = fields[name]
        cells = (f"`{env_name(name, field)}`", render_default(field),
                 render_accepts(name, field), text)
        yield "| " + " | ".join(_cell(cell) for cell in cells) + " |"
    yield ""


def render(fields: Mapping[str, FieldInfo] | None = None) -> str:
    """docs/configuration.md, whole."""
    fields = Settings.model_fields if fields is None else fields
    problems = drift(fields)
    if problems:
        raise ValueError("the descriptions do not match Settings:\n" + "\n".join(problems))
    lines = [HEADER]
    for section in SECTIONS:
        lines.extend(_section(section, fields))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m incident_detector.config_reference",
        description="Write the configuration reference (docs/configuration.md) from Settings.")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help=f"the file to write (default: {DEFAULT_OUTPUT}, from the "
                             f"repository's root); - prints the page instead")
    args = parser.parse_args(argv)
    try:
        page = render()
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    if args.output == "-":
        print(page, end="")
        return 0
    output = Path(args.output)
    if not output.parent.is_dir():
        parser.error(f"{output.parent}/ does not exist: run it from the repository's root, "
                     f"or give --output")
    output.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
