"""The LLM analysis through the real detector: the incident goes out first and the analysis
follows; the analysis can only lower an automatic action to a request for approval. The
endpoint is a loopback server answering in OpenAI's chat-completions shape."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

from test_alert_flow import Sim

from incident_detector.sim.scenario import load_scenario
from incident_detector.sim.server import LocalServer, Request, Response

SCENARIOS = Path(__file__).parent / "scenarios"
COMPLETION = json.loads((Path(__file__).parent / "fixtures" / "llm" /
                         "openai_chat_completion.json").read_text())
API_KEY = "sk-canary-llm-key-0123456789"


class FakeLlm:
    """An OpenAI-compatible endpoint that answers every chat completion with ``answer``."""

    def __init__(self, answer: dict[str, Any], *, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path != "/v1/chat/completions":
            return Response(404, {"error": {"message": "not found"}})
        body = copy.deepcopy(COMPLETION)
        body["choices"][0]["message"]["content"] = json.dumps(self.answer)
        return Response(200, body, delay=self.delay)


# LLM_TIMEOUT_SECONDS of the runs whose analysis must arrive: the remediator waits that long for
# it, and a loopback answer on a busy machine may take seconds; only a broken run waits it out.
ANSWER_TIMEOUT_SECONDS = 60.0


def run(tmp_path: Path, scenario: str, llm: FakeLlm, *, ticks: int = 10,
        timeout: float = ANSWER_TIMEOUT_SECONDS, **extra: Any) -> dict[str, Any]:
    sim = Sim(tmp_path, load_scenario(SCENARIOS / scenario))
    seen: dict[str, Any] = {}

    async def main() -> None:
        with LocalServer(llm) as endpoint:
            async with sim.daemon(llm_base_url=endpoint.url + "/v1", llm_model="gpt-4o-mini",
                                  llm_api_key=API_KEY, llm_timeout_seconds=timeout,
                                  **extra) as (detector, web, _):
                for _ in range(ticks):
                    await sim.tick(detector, web)
                    await asyncio.sleep(0.05)
                    if detector.remediator is not None:
                        while detector.remediator.running:
                            await asyncio.wait(set(detector.remediator.running))
                if detector.analyst.running:  # each ends within LLM_TIMEOUT_SECONDS
                    await asyncio.wait(set(detector.analyst.running))
                seen["status"] = (await web.get("/status")).json()
                seen["api"] = [(await web.get(f"/api/incidents/{i['id']}")).json()
                               for i in (await web.get("/api/incidents")).json()["incidents"]]
                seen["audit"] = (await web.get("/api/audit")).json()["audit"]

    asyncio.run(main())
    seen["lines"] = sim.lines()
    seen["writes"] = sim.api.writes
    seen["out"] = sim.out.getvalue()
    return seen


def test_the_incident_goes_out_first_and_the_analysis_follows(tmp_path):
    llm = FakeLlm({"likely_cause": "The new image fails on every charge.", "confidence": 0.9,
                   "suggested_action": "rollback"})
    seen = run(tmp_path, "bad-rollout-sharp-spike.yaml", llm)
    events = [line.get("event") for line in seen["lines"]]
    assert "incident" in events and "analysis" in events
    assert events.index("incident") < events.index("analysis")
    [analysis] = [line for line in seen["lines"] if line.get("event") == "analysis"]
    assert analysis["outcome"] == "ok"
    assert analysis["suggested_action"] == "rollback" and analysis["confidence"] == 0.9
    # One call, audited with the model and the prompt's hash; the key never written anywhere.
    assert len(llm.requests) == 1
    assert llm.requests[0].headers.get("authorization") == f"Bearer {API_KEY}"
    rows = [row for row in seen["audit"] if row["who"] == "llm"]
    assert len(rows) == 1 and "gpt-4o-mini" in rows[0]["reason"]
    assert API_KEY not in seen["out"] and API_KEY not in json.dumps(seen["status"])
    assert seen["status"]["llm"]["enabled"] is True
    # The incident's API shows its analysis.
    [incident] = seen["api"]
    assert incident["analysis"]["outcome"] == "ok"
    assert incident["analysis"]["suggested_action"] == "rollback"


def test_an_analysis_that_disagrees_turns_an_automatic_rollback_into_a_request(tmp_path):
    llm = FakeLlm({"likely_cause": "A downstream outage, not this rollout.", "confidence": 0.8,
                   "suggested_action": "none"})
    seen = run(tmp_path, "bad-rollout-sharp-spike.yaml", llm, remediation_mode="auto",
               auto_confidence="0.3", approval_confidence="0.1",
               slack_signing_secret="signing-secret-0123456789", slack_approvers="U0123456")
    assert seen["writes"] == []  # the analysis lowered it: nothing is written
    decisions = [(row["who"], row["decision"]) for row in reversed(seen["audit"])
                 if row["who"] != "llm"]
    assert decisions[:2] == [("detector", "approved"), ("detector", "requested")]
    requested = next(row for row in seen["audit"] if row["decision"] == "requested")
    assert "LLM analysis suggests none" in requested["reason"]


def test_an_analysis_that_agrees_leaves_the_automatic_rollback_alone(tmp_path):
    llm = FakeLlm({"likely_cause": "The new image fails on every charge.", "confidence": 0.95,
                   "suggested_action": "rollback"})
    seen = run(tmp_path, "bad-rollout-sharp-spike.yaml", llm, remediation_mode="auto",
               auto_confidence="0.3", approval_confidence="0.1",
               slack_signing_secret="signing-secret-0123456789", slack_approvers="U0123456")
    assert [w.method for w in seen["writes"]] == ["PATCH"]
    executed = [row for row in seen["audit"] if row["decision"] == "executed"]
    assert executed and executed[0]["result"] == "applied"


def test_a_slow_analysis_never_holds_the_incident(tmp_path):
    # The answer would come long after the run (the server's stop ends the wait): only the
    # timeout can end the analysis.
    llm = FakeLlm({"likely_cause": "x", "confidence": 0.9, "suggested_action": "rollback"},
                  delay=3600.0)
    seen = run(tmp_path, "bad-rollout-sharp-spike.yaml", llm, ticks=8, timeout=1)
    assert any(line.get("event") == "incident" for line in seen["lines"])
    [analysis] = [line for line in seen["lines"] if line.get("event") == "analysis"]
    assert analysis["outcome"] == "timeout"


def test_an_invalid_prompt_file_stops_the_start_with_exit_code_2(tmp_path):
    import os
    import subprocess
    import sys

    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("system: be brief\nuser: no placeholder for the evidence\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOKI_", "SLACK_", "LLM_"))}
    env.update({"LOKI_URL": "http://127.0.0.1:1", "NAMESPACE": "shop",
                "TARGET_DEPLOYMENT": "checkout", "LLM_BASE_URL": "http://127.0.0.1:1/v1",
                "LLM_MODEL": "m", "LLM_PROMPT_FILE": str(prompt), "LOG_LEVEL": "error"})
    # A process of its own: the CLI configures logging for the whole process.
    proc = subprocess.run([sys.executable, "-m", "incident_detector"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "LLM_PROMPT_FILE" in proc.stderr and str(prompt) in proc.stderr
