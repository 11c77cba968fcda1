"""Only the parts of the kubernetes package in use are imported; the others still import when
asked for. Each case runs in a fresh interpreter (the test process imported everything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _python(code: str) -> dict:
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True)
    return json.loads(probe.stdout.splitlines()[-1])


def test_the_client_loads_without_the_rest_of_the_package(tmp_path: Path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "u"}}]}))
    result = _python(f"""
import json, sys
from incident_detector.sources import kube
api = kube.api_client_for("http://127.0.0.1:1")
built = sorted(sys.modules)
from_kubeconfig = kube.api_client_from_environment(kubeconfig={str(kubeconfig)!r},
                                                   in_cluster=False)
after_kubeconfig = sorted(sys.modules)
import kubernetes.watch
print(json.dumps({{"built": built, "after_kubeconfig": after_kubeconfig,
                   "host": from_kubeconfig.configuration.host,
                   "watch": kubernetes.watch.Watch.__name__}}))
""")
    assert "kubernetes.client.api_client" in result["built"]
    for unused in ("kubernetes.config.kube_config", "requests", "oauthlib", "yaml", "websocket",
                   "kubernetes.watch", "kubernetes.dynamic", "kubernetes.utils.create_from_yaml"):
        assert unused not in result["built"], unused
    # A kubeconfig brings its loader (and what it imports) when there is one to read.
    assert "kubernetes.config.kube_config" in result["after_kubeconfig"]
    assert result["host"] == "http://127.0.0.1:1"
    # Any other part still imports when asked for.
    assert result["watch"] == "Watch"


def test_nothing_changes_when_the_package_was_imported_in_full_first():
    result = _python("""
import json, sys
import kubernetes
import incident_detector.sources.kube
print(json.dumps({"load_kube_config": hasattr(kubernetes.config, "load_kube_config"),
                  "version": kubernetes.__version__}))
""")
    assert result["load_kube_config"] and result["version"]
