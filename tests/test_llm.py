"""The chat-completions client against respx routes answering with the documented wire shapes:
OpenAI, Azure OpenAI (URL, api-version, api-key header) and Ollama's compatible endpoint; the
json_schema -> json_object fallback; every failure typed, none retried, no key anywhere."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr

from incident_detector.judge.analysis import parse_answer, response_format
from incident_detector.sources.llm import JSON_OBJECT, JSON_SCHEMA, LlmClient, LlmError

FIXTURES = Path(__file__).parent / "fixtures" / "llm"
KEY = "sk-proj-canaryKEY0123456789abcdef"
BASE = "https://api.openai.example/v1"
MESSAGES = [{"role": "system", "content": "You answer in JSON."},
            {"role": "user", "content": "Evidence (JSON): {}"}]
SCHEMA = response_format(["rollback"])


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def run(client: LlmClient, messages=MESSAGES):
    async def go():
        try:
            return await client.analyse(messages, schema=SCHEMA)
        finally:
            await client.aclose()
    return asyncio.run(go())


def openai(**overrides) -> LlmClient:
    fields = dict(base_url=BASE + "/", model="gpt-4o-mini", api_key=SecretStr(KEY), timeout=5)
    fields.update(overrides)
    return LlmClient(**fields)


def test_a_good_answer_with_its_usage_block():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/chat/completions").respond(
            200, json=fixture("openai_chat_completion.json"))
        answer = run(openai())
    request = route.calls.last.request
    body = json.loads(request.content)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in request.headers
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert body["messages"] == MESSAGES
    assert body["response_format"] == {"type": "json_schema", "json_schema": SCHEMA}
    assert SCHEMA["strict"] is True and SCHEMA["schema"]["additionalProperties"] is False
    assert answer.model == "gpt-4o-mini-2024-07-18"
    assert (answer.prompt_tokens, answer.completion_tokens) == (812, 64)
    assert answer.response_format == JSON_SCHEMA and answer.latency_seconds >= 0
    analysis = parse_answer(answer.content, ["rollback"])
    assert analysis.suggested_action == "rollback" and analysis.confidence == 0.86


def test_no_key_no_authorization_header_as_for_a_local_ollama():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("http://ollama:11434/v1/chat/completions").respond(
            200, json=fixture("ollama_chat_completion.json"))
        answer = run(openai(base_url="http://ollama:11434/v1", model="llama3.1:8b",
                            api_key=None))
    assert "authorization" not in route.calls.last.request.headers
    # The fenced object small models write is accepted whole.
    assert parse_answer(answer.content, ["rollback"]).suggested_action == "none"


def test_azure_url_api_version_and_api_key_header():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://contoso.openai.azure.com/openai/deployments/incident-gpt4o/"
                          "chat/completions").respond(
            200, json=fixture("azure_chat_completion.json"))
        answer = run(openai(base_url="https://contoso.openai.azure.com/", model="incident-gpt4o",
                            api_version="2024-10-21"))
    request = route.calls.last.request
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    body = json.loads(request.content)
    assert "model" not in body  # the deployment in the URL names it
    assert body["response_format"]["type"] == "json_schema"
    assert answer.model == "gpt-4o-2024-11-20" and answer.prompt_tokens == 835


def test_a_500_is_an_error_with_the_servers_message_and_is_not_retried():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/chat/completions").respond(
            500, json=fixture("openai_server_error_500.json"))
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert route.call_count == 1
    assert caught.value.reason == "http_500" and caught.value.status == 500
    assert "The server had an error" in caught.value.message


def test_a_400_refusing_json_schema_falls_back_once_to_json_object_and_remembers():
    answers = [httpx.Response(400, json=fixture("openai_json_schema_unsupported_400.json")),
               httpx.Response(200, json=fixture("openai_chat_completion.json")),
               httpx.Response(200, json=fixture("openai_chat_completion.json"))]
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/chat/completions").mock(side_effect=answers)
        client = openai()

        async def twice():
            first = await client.analyse(MESSAGES, schema=SCHEMA)
            second = await client.analyse(MESSAGES, schema=SCHEMA)
            await client.aclose()
            return first, second
        first, second = asyncio.run(twice())
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [b["response_format"]["type"] for b in bodies] == ["json_schema", "json_object",
                                                                "json_object"]
    # In JSON mode the schema is spelled out for the model, in the system message.
    system = bodies[1]["messages"][0]["content"]
    assert system.startswith("You answer in JSON.") and '"suggested_action"' in system
    assert first.response_format == second.response_format == JSON_OBJECT
    assert client.json_schema_supported is False


def test_a_400_about_something_else_is_not_a_fallback():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/chat/completions").respond(400, json={"error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}})
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert route.call_count == 1 and caught.value.reason == "http_400"


def test_a_fallback_that_fails_too_is_final():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(f"{BASE}/chat/completions").mock(side_effect=[
            httpx.Response(400, json=fixture("openai_json_schema_unsupported_400.json")),
            httpx.Response(503, text="upstream unavailable")])
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert route.call_count == 2 and caught.value.reason == "http_503"


def test_httpx_timeout_is_a_timeout():
    # The analyst's own deadline (asyncio.wait_for) is tested with a really slow answer in
    # test_analysis; this is httpx's, raised from the transport.
    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(LlmError) as caught:
            run(openai(timeout=0.2))
    assert caught.value.reason == "timeout"


def test_a_refusal_is_typed():
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{BASE}/chat/completions").respond(200, json=fixture("openai_refusal.json"))
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert caught.value.reason == "refused" and "cannot assist" in caught.value.message


def test_content_filter_is_a_refusal():
    body = fixture("azure_chat_completion.json")
    body["choices"][0]["finish_reason"] = "content_filter"
    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(200, json=body)
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert caught.value.reason == "refused"


@pytest.mark.parametrize("response, reason", [
    (httpx.Response(200, text="<html>gateway</html>"), "invalid_json"),
    (httpx.Response(200, json={"object": "list", "data": []}), "invalid_response"),
    (httpx.Response(200, json={"choices": []}), "invalid_response"),
    (httpx.Response(200, json={"choices": [{"message": {"role": "assistant"}}]}),
     "invalid_response"),
])
def test_a_body_that_is_not_a_chat_completion(response, reason):
    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").mock(return_value=response)
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert caught.value.reason == reason


def test_connection_errors_are_typed_and_carry_no_request():
    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(LlmError) as caught:
            run(openai())
    assert caught.value.reason == "connection"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_key_is_in_no_error_and_no_repr_even_when_the_server_echoes_it():
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}.",
                      "type": "invalid_request_error", "code": "invalid_api_key"}}
    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(401, json=echo)
        client = openai()
        with pytest.raises(LlmError) as caught:
            run(client)
    assert caught.value.reason == "http_401"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert "[redacted]" in caught.value.message
    assert KEY not in repr(client) and "api_key=set" in repr(client)
