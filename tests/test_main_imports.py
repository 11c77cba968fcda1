"""What a detector with the default settings imports, and what it leaves for the features that
need it (each of those is exercised by the feature's own tests: the dashboard's pages, Slack's
buttons, the rules and prompt files, the kubeconfig loader, the gRPC feed, remediation, the LLM).

Run in a fresh interpreter: the test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Builds the detector and its web app as main.py does, runs one tick (every source fails:
# nothing listens on port 1) and serves /status; then renders the dashboard's overview.
PROBE = """
import asyncio, io, json, sys
from starlette.testclient import TestClient
from incident_detector.config import load_settings
from incident_detector.main import build_detector, web_routes
from incident_detector.sources import kube
from incident_detector.web.app import make_app

async def run():
    settings = load_settings({"LOKI_URL": "http://127.0.0.1:1", "STATE_PATH": ":memory:"})
    api = kube.api_client_for("http://127.0.0.1:1")
    async with build_detector(settings=settings, kube_api=api, stdout=io.StringIO()) as detector:
        await detector.tick()
        with TestClient(make_app(detector, extra_routes=web_routes(detector, settings))) as client:
            status = client.get("/status").status_code
            ran = sorted(sys.modules)
            page = client.get("/")
            return {"status": status, "ticks": detector.ticks, "ran": ran,
                    "page": page.status_code, "page_has": "Overview" in page.text,
                    "after_page": sorted(sys.modules)}

print(json.dumps(asyncio.run(run())))
"""

# Not needed by the default settings: each is imported by the feature that uses it.
DEFERRED = (
    "slack_sdk",                          # Slack's bot client and the buttons' signature check
    "jinja2", "starlette.templating",     # the dashboard, on its first page
    "yaml",                               # RULES_FILE, LLM_PROMPT_FILE, a kubeconfig
    "grpc", "google.protobuf",            # CHANGE_GRPC_PORT
    "requests", "requests_oauthlib", "oauthlib", "kubernetes.config.kube_config",  # kubeconfig
    "websocket", "kubernetes.watch", "kubernetes.dynamic", "kubernetes.stream",
    "kubernetes.informer", "kubernetes.leaderelection",  # parts of the client never used
    "incident_detector.act.remediation", "incident_detector.act.executor",  # REMEDIATION_MODE
    "incident_detector.act.argocd",       # ARGOCD_URL
    "incident_detector.sources.llm", "incident_detector.run.analysis",  # LLM_BASE_URL
    "incident_detector.feed.grpc_server",
    "incident_detector.notify.slack_bot",
    "psycopg", "psycopg_binary",          # DATABASE_URL (the SQLite default pays nothing)
)


def _loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


def test_the_default_configuration_does_not_import_what_it_does_not_use():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=60, check=True)
    result = json.loads(probe.stdout.splitlines()[-1])

    assert result["status"] == 200 and result["ticks"] == 1
    assert [name for name in DEFERRED if _loaded(result["ran"], name)] == []
    # What the default detector does use is there (the probe would not prove much otherwise).
    for used in ("kubernetes.client.api_client", "httpx", "uvicorn", "prometheus_client",
                 "incident_detector.sources.kube", "incident_detector.web.dashboard"):
        assert _loaded(result["ran"], used), used
    # The dashboard's first page loads its templates then.
    assert result["page"] == 200 and result["page_has"]
    assert _loaded(result["after_page"], "jinja2")
