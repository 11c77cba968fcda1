"""An OpenAI-compatible chat-completions endpoint: the one HTTP call of the LLM analysis.

One wire format serves OpenAI, vLLM, Ollama and LocalAI (``POST {LLM_BASE_URL}/chat/completions``,
``Authorization: Bearer <key>`` when a key is set; their base URLs end in ``/v1``) and Azure
OpenAI (``LLM_API_VERSION`` set: ``POST {LLM_BASE_URL}/openai/deployments/{LLM_MODEL}/chat/
completions?api-version=...`` with the key in the ``api-key`` header; the deployment is named by
the URL, so the body carries no ``model``).

The answer is asked for as structured output: ``response_format`` of type ``json_schema``
(strict), at temperature 0. A server that does not know ``json_schema`` (an older model, some
OpenAI-compatible servers) answers 400 naming it; the client then asks once more, at once, with
``{"type": "json_object"}`` and the schema spelled out in the system message, and remembers
that for its later calls. That second request is a different question, not a retry: a failure
of either is final. Nothing here retries: an analysis that fails is reported as failed.

Errors are ``LlmError`` with a short ``reason``: ``timeout``, ``connection``, ``http_<status>``,
``refused`` (the model declined, or a content filter stopped it), ``invalid_json`` (a body that
is not JSON), ``invalid_response`` (JSON that is not a chat completion). The API key never
appears in a log line, an error or a repr; httpx's exceptions (which carry the request) are
not chained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

ERROR_EXCERPT_CHARS = 200
REDACTED = "[redacted]"
JSON_SCHEMA, JSON_OBJECT = "json_schema", "json_object"


class LlmError(Exception):
    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class LlmAnswer:
    content: str
    # The model that answered, as the server names it (may differ from LLM_MODEL: a dated
    # snapshot, an Azure deployment's model).
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_seconds: float
    # How the answer was asked for: json_schema, or json_object after the fallback.
    response_format: str = JSON_SCHEMA


class LlmClient:
    def __init__(self, *, base_url: str, model: str, api_key: SecretStr | None = None,
                 api_version: str | None = None, timeout: float = 20.0,
                 http: httpx.AsyncClient | None = None,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self._base_url = str(base_url).rstrip("/")
        self._api_key = api_key
        self._api_version = api_version
        self._timeout = httpx.Timeout(timeout)
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(
            timeout=self._timeout, follow_redirects=False)
        self._timer = timer
        # Set once the server refused json_schema: later calls ask for json_object at once.
        self.json_schema_supported = True

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "unset"
        return (f"LlmClient(base_url={self._base_url!r}, model={self.model!r}, "
                f"azure={self._api_version is not None}, api_key={key})")

    @property
    def azure(self) -> bool:
        return self._api_version is not None

    @property
    def url(self) -> str:
        if self.azure:
            return f"{self._base_url}/openai/deployments/{self.model}/chat/completions"
        return f"{self._base_url}/chat/completions"

    def _headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        secret = self._api_key.get_secret_value()
        return {"api-key": secret} if self.azure else {"Authorization": f"Bearer {secret}"}

    def _body(self, messages: Sequence[dict[str, str]], response_format: dict[str, Any]
              ) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": list(messages), "temperature": 0,
                                "response_format": response_format}
        if not self.azure:
            body = {"model": self.model, **body}
        return body

    async def analyse(self, messages: Sequence[dict[str, str]], *,
                      schema: dict[str, Any]) -> LlmAnswer:
        """Ask once (twice when the server refuses json_schema, see the module docstring)."""
        started = self._timer()
        if self.json_schema_supported:
            try:
                response = await self._post(self._body(
                    messages, {"type": JSON_SCHEMA, "json_schema": schema}))
                return self._answer(response, started, JSON_SCHEMA)
            except LlmError as exc:
                if not _refuses_json_schema(exc):
                    raise
                self.json_schema_supported = False
        response = await self._post(self._body(_with_schema(messages, schema),
                                               {"type": JSON_OBJECT}))
        return self._answer(response, started, JSON_OBJECT)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        params = {"api-version": self._api_version} if self.azure else None
        try:
            response = await self._http.post(self.url, json=body, headers=self._headers(),
                                             params=params, timeout=self._timeout)
        # ``from None``: httpx's exception carries the request, headers included.
        except httpx.TimeoutException as exc:
            raise LlmError("timeout", f"no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise LlmError("connection",
                           f"could not reach the endpoint ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise LlmError(f"http_{response.status_code}", self._excerpt(response),
                           status=response.status_code)
        return response

    def _answer(self, response: httpx.Response, started: float, how: str) -> LlmAnswer:
        latency = max(self._timer() - started, 0.0)
        try:
            body = response.json()
        except ValueError:
            raise LlmError("invalid_json", "the body is not JSON") from None
        try:
            choice = body["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise LlmError("invalid_response", "the body is not a chat completion "
                                               "(no choices[0].message)") from None
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if refusal:
            raise LlmError("refused", f"the model declined: {_short(str(refusal))}")
        if choice.get("finish_reason") == "content_filter":
            raise LlmError("refused", "stopped by the endpoint's content filter")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LlmError("invalid_response", "the answer has no text content")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return LlmAnswer(content=content, model=str(body.get("model") or self.model),
                         prompt_tokens=_count(usage.get("prompt_tokens")),
                         completion_tokens=_count(usage.get("completion_tokens")),
                         latency_seconds=latency, response_format=how)

    def _excerpt(self, response: httpx.Response) -> str:
        """The server's own error message, short, without the key (a proxy may echo it)."""
        try:
            data = response.json()
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                text = str(error.get("message") or error)
            elif error:
                text = str(error)
            else:
                text = json.dumps(data)
        except ValueError:
            text = response.text
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            if secret:
                text = text.replace(secret, REDACTED)
        return _short(text) or "(empty body)"

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()


def _refuses_json_schema(error: LlmError) -> bool:
    """A 400 (or 422: some compatible servers validate the body that way) that names the
    structured-output option: the server does not support it."""
    text = error.message.lower()
    return error.status in (400, 422) and ("json_schema" in text or "response_format" in text)


def _with_schema(messages: Sequence[dict[str, str]], schema: dict[str, Any]
                 ) -> list[dict[str, str]]:
    """In JSON mode the model does not see the schema: it goes in the system message."""
    spelled = ("Answer with one JSON object that matches this JSON Schema: "
               + json.dumps(schema.get("schema", schema), separators=(",", ":")))
    out = [dict(m) for m in messages]
    for message in out:
        if message.get("role") == "system":
            message["content"] = f"{message['content']}\n\n{spelled}"
            return out
    return [{"role": "system", "content": spelled}, *out]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _short(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ERROR_EXCERPT_CHARS:
        text = text[: ERROR_EXCERPT_CHARS - 1] + "…"
    return text
