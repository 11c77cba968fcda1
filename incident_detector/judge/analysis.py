"""LLM analysis, the pure part: what is sent, how it is asked, what is accepted, and what the
answer may change.

- ``evidence_for_llm(record, max_chars=...)``: the evidence of an incident's JSON record (rollout,
  alert or change incident) as compact JSON, redacted with stable placeholders
  (``placeholders.Redactor``) and at most ``max_chars`` long. Only the evidence: signals, error
  counts and rates against the baseline, pods and their problems, error signatures' examples,
  template changes, ranked causes, alerts' labels and summaries, warning events. Not the
  detector's own conclusions (summary, recommended action, confidence, remediation) that the
  analysis is meant to check, nor uids. When it is too long the least useful parts go first
  (see ``llm_evidence._SHRINK_STEPS``) and the object says ``"truncated": true`` with what was cut.
- ``Prompt``: the system message and the user template (``{evidence}``, ``{allowed_actions}``);
  the built-in one, or ``LLM_PROMPT_FILE``: a YAML mapping with the keys ``system`` and ``user``
  (both text; the user template must hold ``{evidence}``). Any other brace is literal text. An
  invalid file raises ``PromptError`` naming the file, which stops the start like RULES_FILE.
- ``Analysis``: the answer, validated strictly (pydantic, unknown fields refused):
  ``likely_cause`` (1 to 1000 characters), ``confidence`` in [0, 1], ``suggested_action`` one of
  the allowed actions or ``none``. ``response_format(allowed_actions)`` asks for exactly that
  with the endpoint's structured outputs (``json_schema``, strict).
- ``parse_answer(content, allowed_actions)``: the content must be the JSON object and nothing
  else. One tolerance: the whole content wrapped in a single Markdown code fence
  (```json ... ```), which small local models (Ollama, LocalAI) add in JSON mode; no prose around
  it, no second object, no repair of broken JSON.
- ``lower(decision, analysis, action=..., min_confidence=...)``: what the analysis may do to a
  guardrail decision: only lower it, never raise it. ``act`` becomes ``ask`` when the analysis
  suggests another action (or none) or is less confident than ``LLM_MIN_CONFIDENCE``, except
  an ``act`` a person approved (the analysis never overrides a person); ``ask`` stays ``ask``
  (its reason says what the analysis thinks, for the person who decides); ``notify_only`` and
  ``refuse`` never change; no analysis (none asked, failed, timed out) changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .guardrails import GuardrailDecision, Outcome
from ..config import REMEDIATION_ACTIONS
# What the LLM is shown is built in llm_evidence; its names stay importable from here.
from .llm_evidence import TEXT_MAX_CHARS, TRUNCATED, evidence_for_llm  # noqa: F401

NO_ACTION = "none"
LIKELY_CAUSE_MAX_CHARS = 1000
SCHEMA_NAME = "incident_analysis"
GUARDRAIL = "llm_analysis"


class PromptError(ValueError):
    """LLM_PROMPT_FILE cannot be used; the message names the file and what is wrong."""


class AnswerError(ValueError):
    """The content is not an acceptable analysis: ``reason`` is invalid_json or schema."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# --- the prompt ---------------------------------------------------------------------------

DEFAULT_SYSTEM = """\
You are an experienced Kubernetes site reliability engineer helping an on-call engineer.
You read the evidence a deterministic incident detector collected about one incident and say
what most likely caused it. Use only the evidence given; do not invent facts. Values such as
<SECRET_1>, <EMAIL_1>, <IP_1> or <TOKEN_1> are placeholders for redacted data: the same
placeholder is the same value. If the evidence does not point to one cause, say so and give a
low confidence. Answer with one JSON object and nothing else."""

DEFAULT_USER = """\
Evidence (JSON):
{evidence}

Answer with a JSON object with exactly these fields:
- "likely_cause": two to four sentences naming the most likely cause and the evidence for it.
- "confidence": a number from 0 to 1, how sure you are of that cause.
- "suggested_action": one of {allowed_actions}, or "none" when none of them would help or a
  person should look first."""


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str
    # Where it comes from: "built-in", or the file's path.
    source: str = "built-in"

    @property
    def sha256(self) -> str:
        """Which prompt asked: the hash of both templates (audited with every call)."""
        return hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()

    def messages(self, evidence: str, allowed_actions: Sequence[str]) -> list[dict[str, str]]:
        actions = ", ".join(json.dumps(a) for a in allowed_actions) or "(none allowed)"
        # Plain replacement, not str.format: the evidence and the templates hold braces.
        user = self.user.replace("{allowed_actions}", actions).replace("{evidence}", evidence)
        system = self.system.replace("{allowed_actions}", actions)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


DEFAULT_PROMPT = Prompt(DEFAULT_SYSTEM, DEFAULT_USER)


def parse_prompt(text: str, *, source: str) -> Prompt:
    """A prompt file's content: a YAML mapping with ``system`` and ``user``."""
    import yaml  # here: only a detector with a prompt file reads YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(f"{source}: not valid YAML ({_one_line(str(exc))})") from None
    if not isinstance(data, dict):
        raise PromptError(f"{source}: must be a YAML mapping with the keys system and user")
    unknown = sorted(str(k) for k in data if k not in ("system", "user"))
    if unknown:
        raise PromptError(f"{source}: unknown key {', '.join(unknown)} (the keys are system "
                          f"and user)")
    for key in ("system", "user"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise PromptError(f"{source}: {key} must be a non-empty text")
    if "{evidence}" not in data["user"]:
        raise PromptError(f"{source}: user must contain {{evidence}}, where the evidence goes")
    return Prompt(data["system"].strip(), data["user"].strip(), source=source)


def load_prompt(path: str | None) -> Prompt:
    """LLM_PROMPT_FILE's prompt, or the built-in one when None; ``PromptError`` when the file
    cannot be read or is invalid."""
    if path is None:
        return DEFAULT_PROMPT
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot be read ({type(exc).__name__}: "
                          f"{getattr(exc, 'strerror', None) or exc})") from None
    return parse_prompt(text, source=path)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- the answer ---------------------------------------------------------------------------

ActionName = Literal["rollback", "restart", "pause", "scale", "delete-pod", "delete-stuck-pods",
                     "none"]
assert set(ActionName.__args__) == {*REMEDIATION_ACTIONS, NO_ACTION}  # type: ignore[attr-defined]


class Analysis(BaseModel):
    """An LLM's answer about one incident: advice, never a decision."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    likely_cause: str = Field(min_length=1, max_length=LIKELY_CAUSE_MAX_CHARS)
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    suggested_action: ActionName

    @field_validator("likely_cause")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("suggested_action")
    @classmethod
    def _allowed(cls, value: str, info: ValidationInfo) -> str:
        allowed = (info.context or {}).get("allowed_actions")
        if allowed is not None and value != NO_ACTION and value not in allowed:
            raise ValueError(f"{value!r} is not an allowed action ({', '.join(allowed)} or none)")
        return value


def answer_schema(allowed_actions: Sequence[str]) -> dict[str, Any]:
    """The JSON Schema of ``Analysis`` for these actions, in the subset strict structured
    outputs accept (every property required, no additional ones; bounds are checked here)."""
    return {
        "type": "object",
        "properties": {
            "likely_cause": {"type": "string",
                             "description": "The most likely cause and the evidence for it, "
                                            f"at most {LIKELY_CAUSE_MAX_CHARS} characters."},
            "confidence": {"type": "number", "description": "From 0 to 1."},
            "suggested_action": {"type": "string",
                                 "enum": [*dict.fromkeys(allowed_actions), NO_ACTION]},
        },
        "required": ["likely_cause", "confidence", "suggested_action"],
        "additionalProperties": False,
    }


def response_format(allowed_actions: Sequence[str]) -> dict[str, Any]:
    """The ``json_schema`` of ``response_format={"type": "json_schema", "json_schema": ...}``."""
    return {"name": SCHEMA_NAME, "strict": True, "schema": answer_schema(allowed_actions)}


_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\n(?P<body>[\s\S]*?)\n?```\Z")


def parse_answer(content: str, allowed_actions: Sequence[str]) -> Analysis:
    """The analysis in ``content`` (a JSON object, or one wrapped whole in a code fence);
    ``AnswerError`` with reason invalid_json or schema otherwise."""
    text = (content or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AnswerError("invalid_json", f"the answer is not JSON ({type(exc).__name__}: "
                                          f"{_one_line(str(exc))[:120]})") from None
    if not isinstance(data, dict):
        raise AnswerError("invalid_json", f"the answer is JSON {type(data).__name__}, not an "
                                          "object")
    try:
        return Analysis.model_validate(data, strict=True,
                                       context={"allowed_actions": tuple(allowed_actions)})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'answer'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False))
        raise AnswerError("schema", problems[:300]) from None


# --- what the analysis may change ---------------------------------------------------------

# Lowest first: ``lower`` never returns a later one than it was given.
OUTCOME_ORDER = (Outcome.REFUSE, Outcome.NOTIFY_ONLY, Outcome.ASK, Outcome.ACT)


def lower(decision: GuardrailDecision, analysis: Analysis | None, *, action: str,
          min_confidence: float) -> GuardrailDecision:
    """``decision`` as the analysis leaves it: the same, or ``act`` lowered to ``ask``."""
    if analysis is None or decision.outcome in (Outcome.REFUSE, Outcome.NOTIFY_ONLY):
        return decision
    agrees = analysis.suggested_action == action
    confident = analysis.confidence >= min_confidence
    view = (f"The LLM analysis suggests {analysis.suggested_action} with confidence "
            f"{analysis.confidence:.2f}")
    if decision.outcome is Outcome.ASK:
        return replace(decision, reason=f"{decision.reason} {view}.")
    # ACT from here on.
    if agrees and confident:
        return replace(decision, reason=f"{decision.reason} {view}, which agrees.")
    if decision.guardrail == "approved":
        # A person approved it; the analysis is shown, and does not take the decision back.
        return replace(decision, reason=f"{decision.reason} {view}.")
    why = (f"below LLM_MIN_CONFIDENCE {min_confidence:.2f}" if agrees
           else f"not the {action}" + (f", and below LLM_MIN_CONFIDENCE {min_confidence:.2f}"
                                       if not confident else ""))
    return GuardrailDecision(Outcome.ASK,
                             f"{decision.reason} {view}, {why}: the {action} waits for an "
                             f"approval instead.", GUARDRAIL, decision.dry_run)


# --- one analysis, as recorded -------------------------------------------------------------

OK, TIMEOUT, ERROR, INVALID = "ok", "timeout", "error", "invalid"


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """What became of one analysis: the answer (outcome ok) or why there is none."""

    # The incident's key as text (its Slack thread's name).
    key: str
    kind: str | None
    namespace: str
    deployment: str
    revision: int | None
    outcome: str  # ok, timeout, error or invalid
    at: datetime
    model: str
    prompt_sha256: str
    prompt_source: str
    analysis: Analysis | None = None
    # Why there is no analysis: "<reason>: <message>".
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    response_format: str | None = None
    evidence_chars: int = 0
    truncated: bool = False
    # The sha256 of the exact messages sent (prompt_sha256: of the templates).
    request_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key, "kind": self.kind, "namespace": self.namespace,
            "deployment": self.deployment, "revision": self.revision, "outcome": self.outcome,
            "at": self.at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
            if self.at.tzinfo else self.at.isoformat() + "Z",
            "model": self.model, "prompt_sha256": self.prompt_sha256,
            "request_sha256": self.request_sha256,
            "prompt_source": self.prompt_source, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "latency_ms": self.latency_ms,
            "response_format": self.response_format, "evidence_chars": self.evidence_chars,
            "evidence_truncated": self.truncated,
        }
        if self.analysis is not None:
            out.update(likely_cause=self.analysis.likely_cause,
                       confidence=self.analysis.confidence,
                       suggested_action=self.analysis.suggested_action)
        else:
            out["error"] = f"LLM analysis unavailable: {self.error or self.outcome}"
        return out
