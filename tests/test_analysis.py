"""LLM analysis: the evidence sent (redacted, capped), the prompt file, the strict answer, what
the answer may change (``lower``), and the Analyst in the background: one audit row and one
JSON line per call, a Slack follow-up only for an answer, the tick never waiting for it."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from factories import make_incident
from incident_detector.judge.guardrails import GuardrailDecision, Outcome
from incident_detector.judge.analysis import (
    DEFAULT_PROMPT,
    OUTCOME_ORDER,
    Analysis,
    AnswerError,
    PromptError,
    answer_schema,
    evidence_for_llm,
    load_prompt,
    lower,
    parse_answer,
)
from incident_detector.judge.placeholders import Redactor
from incident_detector.model import ErrorSignature, Evidence, PodProblem, TemplateChange
from incident_detector.notify import render
from incident_detector.notify.slack import THREAD_KEY, SlackNotifier, thread_key
from incident_detector.run.analysis import Analyst
from incident_detector.store.journal import Journal
from incident_detector.run.outbox import StdoutSink
from incident_detector.store.records import Store
from incident_detector.sources.llm import LlmClient

FIXTURES = Path(__file__).parent / "fixtures" / "llm"
BASE = "https://llm.example/v1"
NOW = datetime(2026, 11, 3, 18, 0, tzinfo=timezone.utc)
ALLOWED = ("rollback", "restart")
WEBHOOK = "https://hooks.slack.com/services/T000/B000/canaryhookpath"


# How long a test waits for what normally takes milliseconds; only a failing test waits it out.
CEILING_SECONDS = 60.0


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def completion(content: str, **usage) -> dict:
    body = fixture("openai_chat_completion.json")
    body["choices"][0]["message"]["content"] = content
    body["usage"].update(usage)
    return body


def answer(cause="The new image fails to reach the database.", confidence=0.9,
           action="rollback") -> str:
    return json.dumps({"likely_cause": cause, "confidence": confidence,
                       "suggested_action": action})


def rollout_record(**overrides) -> dict:
    return render.incident_record(make_incident(**overrides))


# --- the evidence -----------------------------------------------------------------------------


def test_rollout_evidence_keeps_the_evidence_and_not_the_conclusions():
    evidence = json.loads(evidence_for_llm(rollout_record(), max_chars=8000))
    assert evidence["kind"] == "rollout" and evidence["revision"] == 2
    assert evidence["signals"] == ["error_spike", "pod_health"]
    assert evidence["errors"]["error_rate_per_minute"] == 14
    assert evidence["errors"]["baseline_per_minute"] == 0.5
    assert evidence["pod_problems"][0] == {"pod": "payments-api-6874dc9bf7-x2k9p",
                                           "problem": "CrashLoopBackOff"}
    # New signatures first.
    assert evidence["signatures"][0] == {"count": 20, "new": True,
                                         "example": "ERROR charge failed: <nil> & retry"}
    assert {"kind": "env", "container": "payments-api",
            "detail": "added FEATURE_X=on"} in evidence["changes"]
    for conclusion in ("summary", "recommended_action", "rollback_command", "confidence",
                       "remediation", "deployment_uid", "replicaset_uid"):
        assert conclusion not in evidence
    assert "truncated" not in evidence


def test_alert_and_change_evidence():
    alert_record = {
        "event": "incident", "kind": "alert", "namespace": "shop", "deployment": "cart",
        "key": "alert/abc/2026", "revision": 4, "summary": "not sent",
        "alert": {"name": "HighLatency", "status": "firing", "starts_at": "2026-11-03T17:00:00Z",
                  "labels": {"alertname": "HighLatency", "instance": "10.2.3.4:8080"},
                  "annotations": {"summary": "p99 above 2s", "runbook_url": "https://x"}},
        "evidence": {"pods": [{"name": "cart-1", "phase": "Running", "ready": False,
                               "restarts": 7, "problems": ["CrashLoopBackOff"]}],
                     "warning_events": [{"reason": "BackOff", "message": "Back-off restarting",
                                         "object": "Pod/cart-1", "count": 9}],
                     "signatures": [{"fingerprint": "f", "count": 3, "new": True,
                                     "example": "timeout calling db"}]}}
    evidence = json.loads(evidence_for_llm(alert_record, max_chars=8000))
    assert evidence["alerts"] == [{"name": "HighLatency", "status": "firing",
                                   "starts_at": "2026-11-03T17:00:00Z",
                                   "labels": {"alertname": "HighLatency",
                                              "instance": "<IP_1>:8080"},
                                   "annotations": {"summary": "p99 above 2s"}}]
    assert evidence["pods"][0]["restarts"] == 7
    assert evidence["warning_events"][0]["reason"] == "BackOff"
    assert "summary" not in evidence

    change_record = {
        "event": "incident", "kind": "change", "namespace": "shop", "deployment": "cart",
        "change": {"kind": "ConfigMap", "name": "cart-config", "action": "updated",
                   "fields": [{"path": "data.TIMEOUT_MS", "before": "2000", "after": "20"}]},
        "evidence": {"causes": [{"change": {"kind": "ConfigMap", "name": "cart-config"},
                                 "score": 0.8, "reasons": ["changed 40 s before the errors"],
                                 "command": "kubectl rollout undo ..."}]}}
    evidence = json.loads(evidence_for_llm(change_record, max_chars=8000))
    assert evidence["change"]["fields"][0]["after"] == "20"
    assert evidence["causes"] == [{"change": {"kind": "ConfigMap", "name": "cart-config"},
                                   "score": 0.8, "reasons": ["changed 40 s before the errors"]}]


def big_record() -> dict:
    signatures = tuple(ErrorSignature(f"f{i}", 100 - i, f"ERROR case {i}: " + "x" * 400,
                                      new=i < 3) for i in range(40))
    pods = tuple(f"payments-api-6874dc9bf7-p{i:03d}" for i in range(60))
    evidence = Evidence(
        error_rate_per_minute=14.0, baseline_per_minute=0.5, affected_pods=pods,
        pod_problems=tuple((p, PodProblem.CRASH_LOOP) for p in pods),
        signatures=signatures,
        changes=tuple(TemplateChange("env", "api", f"added FLAG_{i}=on") for i in range(30)))
    return rollout_record(evidence=evidence)


@pytest.mark.parametrize("limit", [500, 1200, 3000, 8000])
def test_evidence_is_capped_dropping_the_least_useful_first(limit):
    text = evidence_for_llm(big_record(), max_chars=limit)
    assert len(text) <= limit
    evidence = json.loads(text)
    assert evidence["truncated"] is True
    if "signatures" in evidence:
        # What is kept is the most telling: the new signatures come first.
        assert evidence["signatures"][0]["new"] is True
        assert evidence["omitted"]["signatures"] >= 1
        assert evidence["kind"] == "rollout"


def test_tiny_limit_still_gives_json_that_says_truncated():
    record = rollout_record()
    record["evidence"]["alerts"] = [{"name": "A", "labels": {f"l{i}": "v" * 150
                                                             for i in range(200)}}]
    text = evidence_for_llm(record, max_chars=500)
    assert len(text) <= 500 and json.loads(text)["truncated"] is True


def test_evidence_is_redacted_before_it_is_cut():
    secret = "Zq81xP0wLm3sEcReT"
    incident = make_incident(evidence=Evidence(signatures=tuple(
        ErrorSignature(f"f{i}", 5, f"login failed password={secret} " + "y" * 300, new=True)
        for i in range(20))))
    record = render.incident_record(incident)  # already redacted: put the raw lines back
    for raw, signature in zip(incident.evidence.signatures, record["evidence"]["signatures"]):
        signature["example"] = raw.example
    redactor = Redactor()
    text = evidence_for_llm(record, max_chars=900, redactor=redactor)
    assert secret not in text and "<SECRET_1>" in text
    assert redactor.mapping["<SECRET_1>"] == secret


# --- the prompt -------------------------------------------------------------------------------


def test_default_prompt_fills_evidence_and_actions_with_braces_left_alone():
    messages = DEFAULT_PROMPT.messages('{"kind":"rollout"}', ALLOWED)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '{"kind":"rollout"}' in messages[1]["content"]
    assert '"rollback", "restart"' in messages[1]["content"]
    assert "{evidence}" not in messages[1]["content"]


def test_prompt_file_is_loaded_and_invalid_ones_name_the_file(tmp_path):
    good = tmp_path / "prompt.yaml"
    good.write_text("system: |\n  Be brief. JSON only.\nuser: |\n  Evidence {evidence}; pick "
                    "from {allowed_actions}. Literal {braces} stay.\n")
    prompt = load_prompt(str(good))
    assert prompt.source == str(good) and prompt.sha256 != DEFAULT_PROMPT.sha256
    assert "Literal {braces} stay." in prompt.messages("{}", ALLOWED)[1]["content"]
    assert load_prompt(None) is DEFAULT_PROMPT
    cases = {
        "system: x\n": "user must be a non-empty text",
        "system: x\nuser: no evidence here\n": "must contain {evidence}",
        "system: x\nuser: '{evidence}'\nextra: 1\n": "unknown key extra",
        "- a list\n": "must be a YAML mapping",
        "system: [unclosed\n": "not valid YAML",
    }
    for content, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(content)
        with pytest.raises(PromptError) as caught:
            load_prompt(str(bad))
        assert str(bad) in str(caught.value) and message in str(caught.value), content
    with pytest.raises(PromptError, match="missing.yaml: cannot be read"):
        load_prompt(str(tmp_path / "missing.yaml"))


def test_the_shipped_configmap_prompt_is_valid():
    import yaml

    path = Path(__file__).parent.parent / "k8s" / "base" / "llm-prompt-configmap.yaml"
    configmap = yaml.safe_load(path.read_text())
    from incident_detector.judge.analysis import parse_prompt

    prompt = parse_prompt(configmap["data"]["prompt.yaml"], source=str(path))
    assert "{evidence}" in prompt.user and "{allowed_actions}" in prompt.user


# --- the answer -------------------------------------------------------------------------------


def test_a_strict_answer_and_its_one_tolerance():
    assert parse_answer(answer(), ALLOWED) == Analysis(
        likely_cause="The new image fails to reach the database.", confidence=0.9,
        suggested_action="rollback")
    fenced = "```json\n" + answer(action="none") + "\n```"
    assert parse_answer(fenced, ALLOWED).suggested_action == "none"


@pytest.mark.parametrize("content, reason", [
    ("", "invalid_json"),
    ("Sure! Here it is: " + answer(), "invalid_json"),
    (answer() + answer(), "invalid_json"),
    ("```json\n" + answer() + "\n``` and more", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (answer(confidence=1.5), "schema"),
    (answer(confidence=-0.1), "schema"),
    (json.dumps({"likely_cause": "x", "confidence": "0.9", "suggested_action": "rollback"}),
     "schema"),
    (json.dumps({"likely_cause": "x", "confidence": True, "suggested_action": "rollback"}),
     "schema"),
    (answer(action="scale"), "schema"),  # an action, but not an allowed one
    (answer(action="drop-database"), "schema"),
    (answer(cause="   "), "schema"),
    (answer(cause="x" * 1001), "schema"),
    (json.dumps({"likely_cause": "x", "confidence": 0.5}), "schema"),
    (json.dumps({"likely_cause": "x", "confidence": 0.5, "suggested_action": "none",
                 "severity": "high"}), "schema"),
])
def test_answers_that_are_refused(content, reason):
    with pytest.raises(AnswerError) as caught:
        parse_answer(content, ALLOWED)
    assert caught.value.reason == reason


def test_schema_lists_only_the_allowed_actions_and_none():
    schema = answer_schema(ALLOWED)
    assert schema["properties"]["suggested_action"]["enum"] == ["rollback", "restart", "none"]
    assert schema["required"] == ["likely_cause", "confidence", "suggested_action"]


# --- lower: only ever lower -------------------------------------------------------------------


def decision(outcome: Outcome, guardrail: str = "auto_confidence") -> GuardrailDecision:
    return GuardrailDecision(outcome, "Guardrails said so.", guardrail, False)


def analysis(action="rollback", confidence=0.9) -> Analysis:
    return Analysis(likely_cause="cause", confidence=confidence, suggested_action=action)


@pytest.mark.parametrize("given, advice, expected", [
    (Outcome.ACT, analysis(), Outcome.ACT),
    (Outcome.ACT, analysis(confidence=0.69), Outcome.ASK),
    (Outcome.ACT, analysis(action="restart"), Outcome.ASK),
    (Outcome.ACT, analysis(action="none"), Outcome.ASK),
    (Outcome.ACT, None, Outcome.ACT),
    (Outcome.ASK, analysis(), Outcome.ASK),
    (Outcome.ASK, analysis(action="none", confidence=0.1), Outcome.ASK),
    (Outcome.NOTIFY_ONLY, analysis(), Outcome.NOTIFY_ONLY),
    (Outcome.REFUSE, analysis(), Outcome.REFUSE),
    (Outcome.REFUSE, None, Outcome.REFUSE),
])
def test_lower_table(given, advice, expected):
    before = decision(given)
    after = lower(before, advice, action="rollback", min_confidence=0.7)
    assert after.outcome is expected
    if advice is None or given in (Outcome.NOTIFY_ONLY, Outcome.REFUSE):
        assert after == before
    else:
        assert "LLM analysis" in after.reason and after.reason.startswith(before.reason)
    if given is Outcome.ACT and expected is Outcome.ASK:
        assert after.guardrail == "llm_analysis" and "waits for an approval" in after.reason


def test_lower_never_takes_back_a_persons_approval():
    approved = decision(Outcome.ACT, guardrail="approved")
    after = lower(approved, analysis(action="none", confidence=0.1), action="rollback",
                  min_confidence=0.7)
    assert after.outcome is Outcome.ACT and "suggests none" in after.reason


def test_lower_reasons_say_why():
    low = lower(decision(Outcome.ACT), analysis(confidence=0.5), action="rollback",
                min_confidence=0.7)
    assert "below LLM_MIN_CONFIDENCE 0.70" in low.reason
    other = lower(decision(Outcome.ACT), analysis(action="restart"), action="rollback",
                  min_confidence=0.7)
    assert "suggests restart" in other.reason and "not the rollback" in other.reason


@given(outcome=st.sampled_from(list(Outcome)),
       guardrail=st.sampled_from(["auto_confidence", "approved", "approve_mode", "cooldown"]),
       action=st.sampled_from(["rollback", "restart", "none", "scale"]),
       confidence=st.floats(0, 1), min_confidence=st.floats(0, 1), has_analysis=st.booleans(),
       proposed=st.sampled_from(["rollback", "restart", "delete-pod"]))
def test_lower_never_raises_the_outcome(outcome, guardrail, action, confidence, min_confidence,
                                        has_analysis, proposed):
    before = GuardrailDecision(outcome, "r", guardrail, True)
    advice = Analysis(likely_cause="c", confidence=confidence, suggested_action=action) \
        if has_analysis else None
    after = lower(before, advice, action=proposed, min_confidence=min_confidence)
    assert OUTCOME_ORDER.index(after.outcome) <= OUTCOME_ORDER.index(before.outcome)
    assert after.dry_run is before.dry_run


# --- the Analyst ------------------------------------------------------------------------------


class Harness:
    """An Analyst with a real store, journal, stdout sink and LLM client (respx answers)."""

    def __init__(self, tmp_path, *, slack=None, outbox_store=None, timeout=5.0, **options):
        self.store = Store(str(tmp_path / "state.sqlite3"))
        self.journal = Journal(self.store.connection)
        self.out = io.StringIO()
        self.client = LlmClient(base_url=BASE, model="gpt-4o-mini",
                                api_key=SecretStr("sk-canary-llm-key-0123456789"),
                                timeout=timeout)
        self.analyst = Analyst(client=self.client, prompt=DEFAULT_PROMPT,
                               allowed_actions=ALLOWED, timeout=timeout,
                               max_evidence_chars=8000, journal=self.journal,
                               stdout=StdoutSink(self.out), clock=lambda: NOW, slack=slack,
                               outbox_store=outbox_store, **options)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def audit(self) -> list:
        return self.journal.audit_rows()

    async def finish(self):
        await self.analyst.close(timeout=10)
        await self.client.aclose()


def analyse_one(tmp_path, route_response, *, record=None, key=None, **options):
    """Start one analysis, let it finish; the harness and the respx route."""
    record = record or rollout_record()
    key = key or (record["namespace"], record["deployment"], record["revision"],
                  record["deployment_uid"])

    async def go(harness):
        harness.analyst.analyse_later(key, record)
        await harness.finish()

    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(f"{BASE}/chat/completions").mock(side_effect=route_response)
        harness = Harness(tmp_path, **options)
        asyncio.run(go(harness))
    return harness, route, key


def test_a_canary_secret_in_the_incident_never_reaches_the_request_body(tmp_path):
    canaries = {
        "signature": "Zq81xP0wLm3sEcReTsig",
        "change": "Kv72pQ9zNw4TokenChange",
        "pod": "0123456789abcdef0123456789abcdef01234567",
        "email": "oncall.person@corp-mail.example.com",
        "ip": "10.44.3.17",
    }
    pod = f"payments-api-{canaries['pod']}"
    incident = make_incident(evidence=Evidence(
        error_rate_per_minute=14.0, baseline_per_minute=0.5, affected_pods=(pod,),
        pod_problems=((pod, PodProblem.CRASH_LOOP),),
        signatures=(ErrorSignature("f1", 9, f"db login failed password={canaries['signature']}"
                                   f" for {canaries['email']} from {canaries['ip']}", new=True),),
        changes=(TemplateChange("env", "payments-api",
                                f"added API_TOKEN={canaries['change']}"),)))
    record = render.incident_record(incident)
    # The record as the detector writes it already went through redact.redact; put the raw
    # values back, as a record built by another path might carry them.
    record["evidence"]["signatures"][0]["example"] = incident.evidence.signatures[0].example
    record["evidence"]["changes"][0]["detail"] = incident.evidence.changes[0].detail
    harness, route, _ = analyse_one(
        tmp_path, [httpx.Response(200, json=completion(answer()))], record=record)
    body = route.calls.last.request.content.decode()
    for where, canary in canaries.items():
        assert canary not in body, where
    assert "<SECRET_1>" in body and "<EMAIL_1>" in body and "<IP_1>" in body
    assert "<TOKEN_1>" in body
    # Nor in what the detector writes about the call.
    written = harness.out.getvalue() + json.dumps([r.as_dict() for r in harness.audit()])
    for canary in canaries.values():
        assert canary not in written
    assert "sk-canary-llm-key" not in written


def test_a_good_answer_is_audited_written_kept_and_followed_up(tmp_path):
    sent = []
    with respx.mock() as slack_mock:
        slack_mock.post(WEBHOOK).mock(side_effect=lambda request: (
            sent.append(json.loads(request.content)), httpx.Response(200, text="ok"))[1])
        http = httpx.AsyncClient()
        notifier = SlackNotifier(http=http, webhook_url=SecretStr(WEBHOOK), max_attempts=1)
        harness, route, key = analyse_one(
            tmp_path, [httpx.Response(200, json=completion(answer(confidence=0.86),
                                                           prompt_tokens=812,
                                                           completion_tokens=64))],
            slack=notifier)
        asyncio.run(http.aclose())
    (row,) = harness.audit()
    assert (row.who, row.action, row.target, row.decision) == (
        "llm", "analysis", "demo-aiops/payments-api", "ok")
    assert "model gpt-4o-mini-2024-07-18" in row.reason
    assert f"prompt sha256 {DEFAULT_PROMPT.sha256[:16]}" in row.reason
    assert "812 prompt + 64 completion tokens" in row.reason and "latency" in row.reason
    assert row.result == "rollback (confidence 0.86)"
    (line,) = harness.lines()
    assert line["event"] == "analysis" and line["outcome"] == "ok"
    assert line["suggested_action"] == "rollback" and line["confidence"] == 0.86
    assert line["key"] == thread_key(key) and line["prompt_tokens"] == 812
    assert harness.analyst.analysis_for(key)["likely_cause"].startswith("The new image")
    assert harness.analyst.status()["recent"][0]["outcome"] == "ok"
    # A second message with a webhook (a thread reply with a bot token: below); our thread
    # key never reaches Slack.
    (message,) = sent
    assert THREAD_KEY not in message
    assert "LLM analysis" in message["text"] and "confidence 0.86" in message["text"]
    assert "payments-api rev 2 in demo-aiops" in message["blocks"][0]["text"]["text"]


@pytest.mark.parametrize("response, outcome, error", [
    (httpx.Response(500, json=fixture("openai_server_error_500.json")), "error", "http_500"),
    (httpx.Response(200, json=completion("I think it is the database.")), "invalid",
     "invalid_json"),
    (httpx.Response(200, json=completion(answer(action="delete-everything"))), "invalid",
     "schema"),
    (httpx.Response(200, json=fixture("openai_refusal.json")), "error", "refused"),
])
def test_failures_are_audited_and_written_but_not_sent_to_slack(tmp_path, response, outcome,
                                                                  error):
    with respx.mock(assert_all_called=False) as slack_mock:
        slack_route = slack_mock.post(WEBHOOK).respond(200, text="ok")
        http = httpx.AsyncClient()
        notifier = SlackNotifier(http=http, webhook_url=SecretStr(WEBHOOK), max_attempts=1)
        harness, route, key = analyse_one(tmp_path, [response], slack=notifier)
        asyncio.run(http.aclose())
    assert route.call_count == 1  # never retried
    assert not slack_route.called
    (row,) = harness.audit()
    assert row.decision == outcome and error in row.result
    (line,) = harness.lines()
    assert line["outcome"] == outcome
    assert line["error"].startswith(f"LLM analysis unavailable: {error}")
    assert harness.analyst.analysis_for(key)["outcome"] == outcome


def test_a_slow_answer_past_the_timeout_is_a_timeout(tmp_path):
    async def never(request):  # the answer would come after the test: only the timeout ends it
        await asyncio.Event().wait()

    harness, route, key = analyse_one(tmp_path, never, timeout=0.3)
    (row,) = harness.audit()
    assert row.decision == "timeout"
    (line,) = harness.lines()
    assert line["error"] == ("LLM analysis unavailable: timeout: no answer within "
                             "LLM_TIMEOUT_SECONDS (0.3 s)")


def test_the_tick_is_not_delayed_the_incident_line_comes_first(tmp_path):
    """analyse_later returns at once; the incident's own line is written while the LLM has not
    answered yet, and the analysis line only after."""
    release = asyncio.Event()
    asked = asyncio.Event()

    async def held(request):
        asked.set()
        await release.wait()
        return httpx.Response(200, json=completion(answer()))

    async def tick_then_answer(harness):
        incident = make_incident()
        record = render.incident_record(incident)
        harness.analyst.analyse_later(incident.key, record)  # what the tick does...
        StdoutSink(harness.out).write(record)  # ...and the incident's stdout line
        await asyncio.wait_for(asked.wait(), CEILING_SECONDS)
        assert [line["event"] for line in harness.lines()] == ["incident"]
        assert harness.analyst.analysis_for(incident.key) is None
        release.set()
        assert await harness.analyst.advice(incident.key, timeout=CEILING_SECONDS) is not None
        await harness.finish()

    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").mock(side_effect=held)
        harness = Harness(tmp_path)
        asyncio.run(tick_then_answer(harness))
    assert [line["event"] for line in harness.lines()] == ["incident", "analysis"]


def test_advice_waits_bounded_and_gives_none_for_failures(tmp_path):
    async def go(harness):
        key = ("demo-aiops", "payments-api", 2, "")
        # Nothing asked for this one: bounded wait, then None.
        assert await harness.analyst.advice(("ns", "other", 1, ""), timeout=0.05) is None
        # Asked for after the remediator started waiting: the wait sees it.
        waiting = asyncio.create_task(harness.analyst.advice(key, timeout=CEILING_SECONDS))
        await asyncio.sleep(0)
        harness.analyst.analyse_later(key, rollout_record())
        advice = await waiting
        assert advice is not None and advice.suggested_action == "rollback"
        failing = ("demo-aiops", "payments-api", 3, "")
        harness.analyst.analyse_later(failing, rollout_record(revision=3))
        assert await harness.analyst.advice(failing, timeout=5) is None
        await harness.finish()

    with respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").mock(side_effect=[
            httpx.Response(200, json=completion(answer())),
            httpx.Response(500, json=fixture("openai_server_error_500.json"))])
        harness = Harness(tmp_path)
        asyncio.run(go(harness))


def test_once_per_incident_and_bounded_in_number(tmp_path):
    release = asyncio.Event()

    async def held(request):
        await release.wait()
        return httpx.Response(200, json=completion(answer()))

    async def go(harness):
        for revision in (2, 2, 3, 4):
            record = rollout_record(revision=revision)
            harness.analyst.analyse_later(("demo-aiops", "payments-api", revision, ""), record)
        assert len(harness.analyst.running) == 2  # revision 2 once; 4 beyond the bound
        assert harness.analyst.skipped == 1
        await asyncio.sleep(0.05)
        release.set()
        await harness.finish()

    with respx.mock() as mock:
        route = mock.post(f"{BASE}/chat/completions").mock(side_effect=held)
        harness = Harness(tmp_path, max_concurrent=1, max_waiting=1)
        asyncio.run(go(harness))
    assert route.call_count == 2
    assert len(harness.audit()) == 2


def test_with_a_bot_token_the_follow_up_waits_for_and_replies_in_the_incidents_thread(tmp_path):
    from incident_detector.notify.slack_bot import SlackBotNotifier
    from incident_detector.run.health import Sources
    from incident_detector.run.metrics import DetectorMetrics
    from incident_detector.run.outbox import Outbox
    from incident_detector.sim.server import LocalServer, Response

    calls = []

    def slack_api(request):
        body = json.loads(request.body or b"{}")
        calls.append(body)
        return Response(200, {"ok": True, "channel": body.get("channel"),
                              "ts": f"1795456800.{len(calls):06d}"})

    async def go(harness, bot, outbox):
        incident = make_incident()
        assert outbox.record(incident)  # the incident's rows: its Slack message is pending
        harness.analyst.analyse_later(incident.key, render.incident_record(incident))
        # The analysis is in, but the incident's message is not sent: the follow-up waits (the
        # short sleep gives a follow-up that did not wait the time to show itself).
        assert await harness.analyst.advice(incident.key, timeout=30) is not None
        await asyncio.sleep(0.3)
        assert calls == []
        await outbox.deliver_due()  # the incident's message goes out...
        await harness.finish()  # ...and then the follow-up, in its thread

    with LocalServer(slack_api) as server, respx.mock() as mock:
        mock.post(f"{BASE}/chat/completions").respond(200, json=completion(answer()))
        bot = SlackBotNotifier(token=SecretStr("xoxb-0000-canary"), channel="C0INCIDENT",
                               timeout=5, base_url=server.url + "/api/")
        harness = Harness(tmp_path, slack=bot)
        harness.analyst.outbox_store = harness.store.outbox
        metrics = DetectorMetrics()
        outbox = Outbox(store=harness.store, stdout=StdoutSink(io.StringIO()), slack=bot,
                        events=None, sources=Sources(("slack", "event"), metrics=metrics),
                        metrics=metrics, clock=lambda: NOW + timedelta(seconds=1),
                        is_leader=lambda: True, max_age=timedelta(hours=1))
        asyncio.run(go(harness, bot, outbox))
    incident_message, reply = calls
    assert "thread_ts" not in incident_message
    assert reply["thread_ts"] == "1795456800.000001"
    assert "LLM analysis" in reply["text"]


def test_the_follow_up_escapes_what_the_model_wrote(tmp_path):
    from incident_detector.notify.analysis_render import slack_payload

    harness, _, key = analyse_one(tmp_path, [httpx.Response(200, json=completion(answer(
        cause="<!channel> see <https://evil.example|here> from <IP_1>")))])
    payload = slack_payload(harness.analyst.result_for(key))
    text = payload["blocks"][0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    assert "<https://evil" not in payload["text"] and "&lt;IP_1&gt;" in text
