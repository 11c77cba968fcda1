"""The deployment files: k8s/ manifests, the kustomizations, and the Dockerfile.

Every manifest is loaded into the official Kubernetes client model for its kind, so a misspelled
field or a wrongly typed value fails here instead of at `kubectl apply`. The rest checks what the
detector relies on: least-privilege RBAC, a locked-down pod, probes on the daemon's endpoints,
environment variables that config.Settings actually reads, and secrets only from a Secret.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from incident_detector.config import SECRET_FIELDS, ConfigError, Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
K8S_DIR = REPO_ROOT / "k8s"
NAMESPACED_DIR = K8S_DIR / "namespaced"
CLUSTER_WIDE_DIR = K8S_DIR / "cluster-wide"
REMEDIATION_DIR = K8S_DIR / "remediation"
POSTGRES_DIR = K8S_DIR / "postgres"
POSTGRES_REMEDIATION_DIR = POSTGRES_DIR / "remediation"
SQLITE_PVC_DIR = K8S_DIR / "sqlite-pvc"
DATABASE_URL_COMPONENT = K8S_DIR / "components" / "database-url"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
KUSTOMIZATION_FILE = "kustomization.yaml"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"
DATABASE_SECRET_EXAMPLE = POSTGRES_DIR / "secret.example.yaml"
SECRET_EXAMPLES = frozenset({SECRET_EXAMPLE.resolve(), DATABASE_SECRET_EXAMPLE.resolve()})
DATABASE_SECRET_NAME = "incident-detector-database"

NAMESPACE = "demo-aiops"
APP_NAME = "incident-detector"
LEASE_NAME = "incident-detector"
SECRET_NAME = "incident-detector"
IMAGE = "incident-detector:0.1.0"
NON_ROOT_ID = 10001

# (apiVersion, kind) -> name of the kubernetes client model that deserializes it.
MODEL_BY_KIND: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
}
CLUSTER_SCOPED_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding"})

# The installs: each is a kustomization root that `kubectl apply -k` takes. The remediation one
# is the namespaced install plus a Role for the writes its enabled actions need; the postgres
# ones add DATABASE_URL (the component components/database-url) to the namespaced and the
# remediation install, and sqlite-pvc puts the one replica's SQLite file on a volume claim.
INSTALLS: dict[str, Path] = {
    "namespaced": K8S_DIR, "cluster-wide": CLUSTER_WIDE_DIR, "remediation": REMEDIATION_DIR,
    "postgres": POSTGRES_DIR, "postgres-remediation": POSTGRES_REMEDIATION_DIR,
    "sqlite-pvc": SQLITE_PVC_DIR,
}
# The installs whose memory is the shared PostgreSQL database.
DATABASE_INSTALLS = ("postgres", "postgres-remediation")
# The read-only roles of the installs that only watch (the remediation install reuses the
# namespaced one's and adds REMEDIATION_ROLE_FILE, checked on its own below).
ROLE_FILES: dict[str, tuple[Path, ...]] = {
    "namespaced": (NAMESPACED_DIR / "role.yaml",),
    # Reads and Events in every namespace; the Lease only in the detector's own namespace.
    "cluster-wide": (CLUSTER_WIDE_DIR / "clusterrole.yaml", CLUSTER_WIDE_DIR / "lease-role.yaml"),
}

# What the read-only roles granted before the change timeline, as (api group, resource, verb).
BASE_PERMISSIONS = frozenset(
    {(group, resource, verb)
     for group, resource in (("apps", "deployments"), ("apps", "replicasets"), ("", "pods"))
     for verb in ("get", "list", "watch")}
    | {("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "list")}
    | {("", "events", "list")}
    | {("coordination.k8s.io", "leases", verb) for verb in ("get", "update", "create")}
)
# The change timeline's reads (sources.changes_watch), list and watch only, spelled out here so
# that a change of CHANGE_PERMISSIONS in the code is a change of this test too.
CHANGE_TIMELINE_PERMISSIONS = frozenset(
    (group, resource, verb)
    for group, resource in (("", "configmaps"), ("", "secrets"), ("", "services"),
                            ("apps", "statefulsets"), ("apps", "daemonsets"),
                            ("autoscaling", "horizontalpodautoscalers"),
                            ("networking.k8s.io", "ingresses"),
                            ("networking.k8s.io", "networkpolicies"))
    for verb in ("list", "watch")
)
# Everything the detector may do through the Kubernetes API. A role granting more than this
# fails: widen it here only together with the daemon's needs.
ALLOWED_PERMISSIONS = BASE_PERMISSIONS | CHANGE_TIMELINE_PERMISSIONS
FORBIDDEN_VERBS = frozenset({"delete", "deletecollection", "escalate", "bind", "impersonate"})
# Never granted, not even by the remediation overlay: these would let the account widen its
# own rights or act as someone else.
PRIVILEGE_VERBS = frozenset({"escalate", "bind", "impersonate"})
# Verbs that change a workload: the read-only installs grant none of them.
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
REMEDIATION_ROLE_FILE = REMEDIATION_DIR / "remediation-role.yaml"
REMEDIATION_BINDING_FILE = REMEDIATION_DIR / "remediation-rolebinding.yaml"
REMEDIATION_ROLE = "incident-detector-remediation"
# What the Secret holds for remediation: the secret itself comes from the environment of the
# test only (never from a manifest), as a Secret would provide it.
DUMMY_SECRET_ENV = {
    "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
}

# Environment variables the daemon reads outside config.Settings (yet): POD_NAME is the
# leader-election identity, STATE_PATH the SQLite file, DATABASE_URL the PostgreSQL store. A
# name that becomes a Settings field is accepted as a field; until then it must be listed here.
ENV_OUTSIDE_SETTINGS = frozenset({"POD_NAME", "STATE_PATH", "DATABASE_URL"})
SEED_ENV = {
    "NAMESPACE": "demo-aiops",
    "TARGET_DEPLOYMENT": "payments-api",
    "LOKI_URL": "http://loki.monitoring.svc:3100",
    "ERROR_THRESHOLD": "5",
    "ROLL_OUT_WINDOW_MINUTES": "10",
    "POLL_INTERVAL_SECONDS": "20",
    "LOKI_LABEL_APP": "payments-api",
    "HTTP_PORT": "8080",
}
STATE_PATH = "/var/lib/incident-detector/state.sqlite3"
ENTRYPOINT = ["python", "-m", "incident_detector"]


# --- loading -------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    """Every YAML file under k8s/ that holds Kubernetes objects (not kustomizations)."""
    files = sorted({*K8S_DIR.rglob("*.yaml"), *K8S_DIR.rglob("*.yml")})
    return [path for path in files if path.name != KUSTOMIZATION_FILE]


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def model_name(doc: dict[str, Any]) -> str:
    key = (doc.get("apiVersion"), doc.get("kind"))
    assert key in MODEL_BY_KIND, f"unknown apiVersion/kind {key}"
    return MODEL_BY_KIND[key]  # type: ignore[index]


def deserialize(doc: dict[str, Any]) -> Any:
    """The client's own deserializer, as used on API responses.

    ``ApiClient.deserialize`` changed its signature across client versions (response object,
    then response text); the private ``__deserialize(data, klass)`` behind it did not.
    """
    client = ApiClient()
    return client._ApiClient__deserialize(doc, model_name(doc))  # type: ignore[attr-defined]


def fields_lost(original: Any, round_trip: Any, where: str = "") -> list[str]:
    """Paths present in ``original`` but not in ``round_trip``: fields the model does not know."""
    if isinstance(original, dict):
        if not isinstance(round_trip, dict):
            return [where or "."]
        lost = []
        for key, value in original.items():
            if key not in round_trip:
                lost.append(f"{where}.{key}")
            else:
                lost.extend(fields_lost(value, round_trip[key], f"{where}.{key}"))
        return lost
    if isinstance(original, list):
        if not isinstance(round_trip, list) or len(round_trip) != len(original):
            return [where]
        return [path for index, (a, b) in enumerate(zip(original, round_trip))
                for path in fields_lost(a, b, f"{where}[{index}]")]
    return [] if original == round_trip else [f"{where} (value {original!r})"]


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / KUSTOMIZATION_FILE).read_text())


def install_files(directory: Path) -> list[Path]:
    """Manifest files a kustomization root pulls in, following nested kustomizations and the
    components it uses."""
    config = kustomization(directory)
    files: list[Path] = []
    for entry in [*config.get("resources", []), *config.get("components", [])]:
        target = (directory / entry).resolve()
        files.extend(install_files(target) if target.is_dir() else [target])
    return files


def install_documents(name: str) -> list[dict[str, Any]]:
    return [doc for path in install_files(INSTALLS[name]) for doc in load_documents(path)]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [doc for doc in docs if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, found {len(matching)}"
    return matching[0]


def deployment() -> dict[str, Any]:
    return only(load_documents(K8S_DIR / "base" / "deployment.yaml"), "Deployment")


def container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_port(port: int | str) -> int:
    """Resolve a probe's or Service's port (number or name) against the container's ports."""
    for declared in container().get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return declared["containerPort"]
    raise AssertionError(f"port {port!r} is not a port of the container")


def env_by_name() -> dict[str, dict[str, Any]]:
    env = container()["env"]
    names = [var["name"] for var in env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {var["name"]: var for var in env}


def rule_grants(rule: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def role_rules(install: str) -> list[dict[str, Any]]:
    rules = []
    for path in ROLE_FILES[install]:
        docs = load_documents(path)
        assert len(docs) == 1
        rules.extend(docs[0]["rules"])
    return rules


def merge_by_name(base: Any, patch: Any) -> Any:
    """A strategic merge patch, for the shapes the overlays use: maps merge, and lists of named
    entries (containers, env) merge entry by entry on ``name``; other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:  # a null in a strategic merge patch deletes the field
                merged.pop(key, None)
            else:
                merged[key] = merge_by_name(base[key], value) if key in base else value
        return merged
    named = (isinstance(base, list) and isinstance(patch, list)
             and all(isinstance(item, dict) and "name" in item for item in [*base, *patch]))
    if named:
        patched = {item["name"]: item for item in patch}
        merged_list = [merge_by_name(item, patched.pop(item["name"])) if item["name"] in patched
                       else item for item in base]
        return [*patched.values(), *merged_list]
    return patch


def deployment_patches(install: str) -> list[dict[str, Any]]:
    """The bodies of an install's inline patches on the Deployment (none for the base), in the
    order kustomize applies them: those of the kustomizations it builds on, then those of its
    components, then its own."""
    return kustomization_patches(INSTALLS[install])


def kustomization_patches(directory: Path) -> list[dict[str, Any]]:
    config = kustomization(directory)
    bodies = []
    for entry in [*config.get("resources", []), *config.get("components", [])]:
        if (directory / entry).is_dir():
            bodies.extend(kustomization_patches((directory / entry).resolve()))
    for patch in config.get("patches", []):
        assert patch["target"] == {"kind": "Deployment", "name": deployment()["metadata"]["name"]}
        bodies.append(yaml.safe_load(patch["patch"]))
    return bodies


def patched_deployment(install: str) -> dict[str, Any]:
    """The Deployment as the install renders it: the base with the install's patches applied."""
    result = deployment()
    for body in deployment_patches(install):
        result = merge_by_name(result, body)
    return result


def patched_env(install: str) -> dict[str, dict[str, Any]]:
    [patched] = patched_deployment(install)["spec"]["template"]["spec"]["containers"]
    names = [var["name"] for var in patched["env"]]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {var["name"]: var for var in patched["env"]}


def overlay_env(install: str) -> dict[str, dict[str, Any]]:
    """Only the env entries an install's patches set."""
    env: dict[str, dict[str, Any]] = {}
    for body in deployment_patches(install):
        for patched in body["spec"]["template"]["spec"]["containers"]:
            assert patched["name"] == container()["name"]
            env.update({var["name"]: var for var in patched.get("env", [])})
    return env


def literal_env(env: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: var["value"] for name, var in env.items() if "value" in var}


# --- every manifest parses into its client model ---------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_manifest_deserializes_into_its_client_model_without_losing_fields(path: Path) -> None:
    docs = load_documents(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        model = deserialize(doc)
        assert type(model).__name__ == model_name(doc)
        assert model.metadata is not None and model.metadata.name
        round_trip = ApiClient().sanitize_for_serialization(model)
        assert fields_lost(doc, round_trip) == [], "fields the model does not know (typos?)"


def test_manifests_cover_every_kind_the_install_needs() -> None:
    kinds = {doc["kind"] for path in manifest_files() for doc in load_documents(path)}
    assert kinds == {key[1] for key in MODEL_BY_KIND}


def test_deserializer_rejects_a_missing_required_field() -> None:
    # Guards the check above: the model must refuse a Deployment without a selector.
    broken = json.loads(json.dumps(deployment()))
    del broken["spec"]["selector"]
    with pytest.raises((ValueError, TypeError)):
        deserialize(broken)


def test_round_trip_notices_a_misspelled_field() -> None:
    broken = json.loads(json.dumps(deployment()))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    round_trip = ApiClient().sanitize_for_serialization(deserialize(broken))
    assert fields_lost(broken, round_trip) == [".spec.template.spec.containers[0].readinesProbe"]


# --- kustomizations --------------------------------------------------------------------------


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_kustomization_lists_files_that_exist(install: str) -> None:
    directory = INSTALLS[install]
    config = kustomization(directory)
    assert config["kind"] == "Kustomization"
    assert config.get("namespace") == NAMESPACE
    for entry in [*config.get("resources", []), *config.get("components", [])]:
        target = directory / entry
        assert target.is_file() or (target / KUSTOMIZATION_FILE).is_file(), entry
    for patch in config.get("patches", []):
        if "path" in patch:
            assert (directory / patch["path"]).is_file(), patch["path"]
    for path in install_files(directory):
        assert path.is_file(), path


def test_base_kustomization_lists_files_that_exist() -> None:
    for entry in kustomization(K8S_DIR / "base")["resources"]:
        assert (K8S_DIR / "base" / entry).is_file(), entry


def test_every_manifest_is_installed_except_the_secret_examples() -> None:
    installed = {path for directory in INSTALLS.values() for path in install_files(directory)}
    assert not SECRET_EXAMPLES & installed, "the Secrets must not be shipped"
    assert {path.resolve() for path in manifest_files()} - installed == SECRET_EXAMPLES


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_install_has_one_of_each_and_binds_its_role_to_the_service_account(install: str) -> None:
    docs = install_documents(install)
    # (role kind, binding kind) pairs: cluster-wide adds a namespaced Role for the Lease, the
    # remediation install a second Role for its writes.
    pairs = {
        "namespaced": [("Role", "RoleBinding")],
        "cluster-wide": [("ClusterRole", "ClusterRoleBinding"), ("Role", "RoleBinding")],
        "remediation": [("Role", "RoleBinding"), ("Role", "RoleBinding")],
        "postgres": [("Role", "RoleBinding")],
        "postgres-remediation": [("Role", "RoleBinding"), ("Role", "RoleBinding")],
        "sqlite-pvc": [("Role", "RoleBinding")],
    }[install]
    # What an install adds besides RBAC: the budget of the two remediation replicas, the
    # volume claim of the SQLite file.
    extra = {"postgres-remediation": ["PodDisruptionBudget"],
             "sqlite-pvc": ["PersistentVolumeClaim"]}.get(install, [])
    kinds = sorted(doc["kind"] for doc in docs)
    # Two ConfigMaps: the rules, and the LLM analysis' prompt.
    assert kinds == sorted(["ServiceAccount", "Deployment", "Service", "ConfigMap", "ConfigMap",
                            *extra, *(kind for pair in pairs for kind in pair)])
    account = only(docs, "ServiceAccount")["metadata"]["name"]
    roles = {(doc["kind"], doc["metadata"]["name"]) for doc in docs
             if doc["kind"] in ("Role", "ClusterRole")}
    bindings = [doc for doc in docs if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(roles) == len(bindings) == len(pairs), "one binding per role, names unique"
    bound = set()
    for binding in bindings:
        role_kind = binding["kind"].removesuffix("Binding")
        assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
        assert binding["roleRef"]["kind"] == role_kind
        assert (role_kind, binding["roleRef"]["name"]) in roles, binding["roleRef"]
        bound.add((role_kind, binding["roleRef"]["name"]))
        [subject] = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["name"] == account
        # Left to kustomize, which sets it to the kustomization's namespace.
        assert subject.get("namespace", NAMESPACE) == NAMESPACE
    assert bound == roles
    pod_spec = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == account


def test_cluster_wide_patch_sets_only_known_env_on_the_deployment() -> None:
    patches = kustomization(CLUSTER_WIDE_DIR)["patches"]
    assert patches
    for patch in patches:
        assert patch["target"] == {"kind": "Deployment", "name": deployment()["metadata"]["name"]}
        body = yaml.safe_load(patch["patch"])
        for patched in body["spec"]["template"]["spec"]["containers"]:
            assert patched["name"] == container()["name"]
            for var in patched.get("env", []):
                assert var["name"].lower() in Settings.model_fields, var["name"]
                if "value" in var:
                    # NAMESPACE is a comma-separated list here: it must still validate.
                    load_settings({**SEED_ENV, var["name"]: var["value"]})


def kustomize_command(directory: Path) -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(directory)]
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(directory)]
    return None


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_kustomize_build_renders_every_object_in_the_namespace(install: str) -> None:
    command = kustomize_command(INSTALLS[install])
    if command is None:
        pytest.skip("neither kubectl nor kustomize on PATH")
    rendered = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(docs) == len(install_documents(install))
    for doc in docs:
        deserialize(doc)
        if doc["kind"] in CLUSTER_SCOPED_KINDS:
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == NAMESPACE
    rendered_deployment = only(docs, "Deployment")
    env = rendered_deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [var["name"] for var in env]
    assert len(names) == len(set(names)), names
    # kustomize's own merge agrees with the one these tests apply to the base.
    assert {var["name"]: var for var in env} == patched_env(install)
    expected_spec = patched_deployment(install)["spec"]
    assert rendered_deployment["spec"]["replicas"] == expected_spec["replicas"]
    assert rendered_deployment["spec"].get("strategy") == expected_spec.get("strategy")
    volumes = rendered_deployment["spec"]["template"]["spec"]["volumes"]
    assert {v["name"]: v for v in volumes} == {
        v["name"]: v for v in expected_spec["template"]["spec"]["volumes"]}


# --- the Deployment --------------------------------------------------------------------------


def test_deployment_runs_two_replicas_of_the_image() -> None:
    spec = deployment()["spec"]
    assert spec["replicas"] == 2
    assert container()["image"] == IMAGE
    assert spec["template"]["spec"]["automountServiceAccountToken"] is True


def test_security_context_locks_the_container_down() -> None:
    pod_spec = deployment()["spec"]["template"]["spec"]
    pod_context = pod_spec.get("securityContext", {})
    # A container's own securityContext overrides the pod's for the fields both have.
    effective = {**pod_context, **container().get("securityContext", {})}
    assert effective["runAsNonRoot"] is True
    assert effective["runAsUser"] == NON_ROOT_ID
    assert effective["runAsGroup"] == NON_ROOT_ID
    assert pod_context["fsGroup"] == NON_ROOT_ID
    assert effective["readOnlyRootFilesystem"] is True
    assert effective["allowPrivilegeEscalation"] is False
    assert effective["capabilities"]["drop"] == ["ALL"]
    assert not effective["capabilities"].get("add")
    assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in effective or effective["privileged"] is False


def test_writable_paths_are_emptydir_volumes() -> None:
    volumes = deployment()["spec"]["template"]["spec"]["volumes"]
    empty_dirs = {volume["name"] for volume in volumes if "emptyDir" in volume}
    config_maps = {volume["name"] for volume in volumes if "configMap" in volume}
    assert empty_dirs | config_maps == {volume["name"] for volume in volumes}
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    state_dir = str(Path(env_by_name()["STATE_PATH"]["value"]).parent)
    assert mounts[state_dir] in empty_dirs
    assert mounts["/tmp"] in empty_dirs
    assert set(mounts.values()) == empty_dirs | config_maps
    for mount in container()["volumeMounts"]:
        if mount["name"] in config_maps:
            assert mount.get("readOnly") is True, mount


@pytest.mark.parametrize(("setting", "config_map"), [
    ("RULES_FILE", "incident-detector-rules"),
    ("LLM_PROMPT_FILE", "incident-detector-llm-prompt"),
])
def test_configmaps_are_mounted_as_directories_and_their_file_settings_point_into_them(
        setting: str, config_map: str) -> None:
    # A subPath mount never sees a ConfigMap update: the rules would only reload on restart.
    [volume] = [volume for volume in deployment()["spec"]["template"]["spec"]["volumes"]
                if volume.get("configMap", {}).get("name") == config_map]
    [mount] = [mount for mount in container()["volumeMounts"] if mount["name"] == volume["name"]]
    assert "subPath" not in mount and "subPathExpr" not in mount
    path = Path(env_by_name()[setting]["value"])
    assert path.parent == Path(mount["mountPath"])
    [document] = [doc for doc in install_documents("namespaced")
                  if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == config_map]
    assert path.name in document["data"]
    assert "items" not in volume["configMap"], "every key of the ConfigMap is a file"


def test_the_shipped_llm_prompt_is_a_valid_prompt_file(tmp_path) -> None:
    from incident_detector.judge.analysis import load_prompt

    [document] = [doc for doc in install_documents("namespaced")
                  if doc["metadata"]["name"] == "incident-detector-llm-prompt"]
    path = tmp_path / "prompt.yaml"
    path.write_text(document["data"]["prompt.yaml"])
    assert load_prompt(str(path)) is not None


def test_probes_hit_healthz_and_readyz_on_the_http_port() -> None:
    port = int(env_by_name()["HTTP_PORT"]["value"])
    liveness = container()["livenessProbe"]["httpGet"]
    readiness = container()["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    assert container_port(liveness["port"]) == port
    assert container_port(readiness["port"]) == port


def test_resources_request_little_and_cap_memory() -> None:
    resources = container()["resources"]
    assert resources["requests"] == {"cpu": "20m", "memory": "64Mi"}
    assert resources["limits"] == {"memory": "128Mi"}


def test_service_targets_the_container_port_and_selects_the_pods() -> None:
    service = only(load_documents(K8S_DIR / "base" / "service.yaml"), "Service")
    spec = deployment()["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == 8080
    assert container_port(port["targetPort"]) == int(env_by_name()["HTTP_PORT"]["value"])


def test_every_env_var_is_read_by_the_daemon() -> None:
    for name in env_by_name():
        assert name.lower() in Settings.model_fields or name in ENV_OUTSIDE_SETTINGS, name
        assert name == name.upper()


def test_env_carries_the_seed_settings_and_they_validate() -> None:
    env = env_by_name()
    literal = {name: var["value"] for name, var in env.items() if "value" in var}
    assert {name: literal.get(name) for name in SEED_ENV} == SEED_ENV
    assert literal["STATE_PATH"] == STATE_PATH
    settings = load_settings(literal)
    assert settings.namespace == (NAMESPACE,)
    assert settings.target_deployment == ("payments-api",)
    assert settings.http_port == container_port("http")


def test_pod_name_comes_from_the_downward_api() -> None:
    pod_name = env_by_name()["POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_secrets_come_only_from_an_optional_secret_key_ref() -> None:
    env = env_by_name()
    # DATABASE_URL is not in the base install: the PostgreSQL variants add it, from a Secret of
    # its own and required (checked with them).
    assert "DATABASE_URL" not in env
    for field in SECRET_FIELDS - {"database_url"}:
        var = env[field.upper()]
        assert "value" not in var, f"{var['name']} must not be inline"
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME
        assert ref["optional"] is True
    assert env["SLACK_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]["key"] == "slack-webhook-url"


def test_secret_example_ships_no_value_and_only_keys_the_deployment_reads() -> None:
    secret = only(load_documents(SECRET_EXAMPLE), "Secret")
    assert secret["metadata"]["name"] == SECRET_NAME
    assert "data" not in secret
    values = secret["stringData"]
    assert all(value == "" for value in values.values())
    read_keys = {var["valueFrom"]["secretKeyRef"]["key"]
                 for var in env_by_name().values()
                 if "secretKeyRef" in var.get("valueFrom", {})}
    assert set(values) <= read_keys
    assert "kubectl" in SECRET_EXAMPLE.read_text() and "create secret generic" in \
        SECRET_EXAMPLE.read_text()


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_rbac_has_no_wildcard_and_no_dangerous_verb(install: str) -> None:
    for rule in role_rules(install):
        assert "nonResourceURLs" not in rule
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(key, [])), (key, rule)
        assert not FORBIDDEN_VERBS & set(rule["verbs"]), rule


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_rbac_grants_what_the_code_calls_and_nothing_more(install: str) -> None:
    # Each module that calls the API declares its calls; each module's tests check its
    # declaration against the requests it actually makes.
    from incident_detector.notify.events import EVENT_PERMISSIONS
    from incident_detector.sources.kube import REQUIRED_PERMISSIONS, WARNING_EVENT_PERMISSIONS
    from incident_detector.run.leader import LEASE_PERMISSIONS
    from incident_detector.sources.changes_watch import CHANGE_PERMISSIONS

    required = set(REQUIRED_PERMISSIONS) | set(EVENT_PERMISSIONS) | set(LEASE_PERMISSIONS) \
        | set(WARNING_EVENT_PERMISSIONS) | set(CHANGE_PERMISSIONS)
    granted = set().union(*(rule_grants(rule) for rule in role_rules(install)))
    assert required <= granted, required - granted
    assert granted <= ALLOWED_PERMISSIONS, granted - ALLOWED_PERMISSIONS


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_rbac_grants_exactly_the_documented_permissions(install: str) -> None:
    granted = set().union(*(rule_grants(rule) for rule in role_rules(install)))
    assert granted == ALLOWED_PERMISSIONS


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_rbac_grants_exactly_the_change_permissions_on_top_of_the_rest(install: str) -> None:
    # What the change watches call, declared by the module and checked against its requests
    # in tests/test_changes_watch.py: granted in full, list and watch only, and nothing else
    # is added for it.
    from incident_detector.sources.changes_watch import CHANGE_PERMISSIONS

    granted = set().union(*(rule_grants(rule) for rule in role_rules(install)))
    assert set(CHANGE_PERMISSIONS) == CHANGE_TIMELINE_PERMISSIONS
    assert set(CHANGE_PERMISSIONS) <= granted
    assert granted - set(CHANGE_PERMISSIONS) == BASE_PERMISSIONS
    assert {verb for _, _, verb in CHANGE_PERMISSIONS} == {"list", "watch"}


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_the_secrets_rule_is_its_own_and_says_values_never_leave(install: str) -> None:
    # Secrets get a rule of their own, so that it can be deleted alone, with a comment that
    # says why it is there and how to go without it.
    [rule] = [rule for rule in role_rules(install) if "secrets" in rule["resources"]]
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}
    text = "\n".join(path.read_text() for path in ROLE_FILES[install])
    comment = text[:text.index('resources: ["secrets"]')].rsplit("- apiGroups:", 1)[0]
    comment = comment[comment.rindex("verbs:"):]
    assert "never" in comment and "CHANGE_KINDS" in comment and "values" in comment


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_lease_access_is_limited_to_the_one_lease_except_create(install: str) -> None:
    for rule in role_rules(install):
        if "leases" not in rule["resources"]:
            assert "resourceNames" not in rule
        elif rule["verbs"] == ["create"]:
            # The API server authorizes create before the name is known: resourceNames
            # would make the rule match nothing.
            assert "resourceNames" not in rule
        else:
            assert rule["resourceNames"] == [LEASE_NAME], rule


def test_cluster_role_grants_the_same_rules_as_the_role() -> None:
    assert role_rules("cluster-wide") == role_rules("namespaced")


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_every_rbac_rule_is_explained_by_a_comment(install: str) -> None:
    lines = [line for path in ROLE_FILES[install] for line in path.read_text().splitlines()]
    rule_starts = [index for index, line in enumerate(lines)
                   if line.lstrip().startswith("- apiGroups:")]
    assert len(rule_starts) == len(role_rules(install))
    for index in rule_starts:
        assert index > 0 and lines[index - 1].lstrip().startswith("#"), lines[index]


# --- the remediation overlay -----------------------------------------------------------------


def remediation_role() -> dict[str, Any]:
    [role] = load_documents(REMEDIATION_ROLE_FILE)
    assert role["kind"] == "Role" and role["metadata"]["name"] == REMEDIATION_ROLE
    return role


def enabled_actions() -> tuple[str, ...]:
    """ALLOWED_ACTIONS as the overlay sets it, read the way the daemon reads it."""
    return load_settings(remediation_settings_env()).allowed_actions


def remediation_settings_env() -> dict[str, str]:
    """The overlay's literal env over the base's, plus the Secret's keys approve mode needs."""
    return {**literal_env(patched_env("remediation")), **DUMMY_SECRET_ENV}


def test_remediation_install_is_the_namespaced_install_plus_its_own_rbac() -> None:
    namespaced = set(install_files(K8S_DIR))
    remediation = set(install_files(REMEDIATION_DIR))
    assert namespaced <= remediation
    assert remediation - namespaced == {REMEDIATION_ROLE_FILE.resolve(),
                                        REMEDIATION_BINDING_FILE.resolve()}
    [binding] = load_documents(REMEDIATION_BINDING_FILE)
    assert binding["roleRef"]["name"] == REMEDIATION_ROLE
    [subject] = binding["subjects"]
    assert subject["name"] == only(install_documents("namespaced"), "ServiceAccount")[
        "metadata"]["name"]


def test_remediation_role_grants_exactly_what_the_enabled_actions_call() -> None:
    # The executor declares each action's calls; its tests check the declaration against the
    # requests each action makes. The Role must grant their union for ALLOWED_ACTIONS: less
    # and an approved action fails with 403, more and a disabled action could still write.
    from incident_detector.act.executor import ACTION_PERMISSIONS

    actions = enabled_actions()
    assert actions, "the overlay enables no action"
    required = {permission for action in actions for permission in ACTION_PERMISSIONS[action]}
    granted = set().union(*(rule_grants(rule) for rule in remediation_role()["rules"]))
    assert granted == required, (granted - required, required - granted)


def test_remediation_overlay_enables_rollback_only() -> None:
    assert enabled_actions() == ("rollback",)
    verbs = {verb for _, _, verb in
             set().union(*(rule_grants(rule) for rule in remediation_role()["rules"]))}
    assert "delete" not in verbs, "rollback deletes nothing"


def test_remediation_role_has_no_wildcard_and_no_privilege_verb() -> None:
    for rule in remediation_role()["rules"]:
        assert "nonResourceURLs" not in rule
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(key, [])), (key, rule)
        assert not PRIVILEGE_VERBS & set(rule["verbs"]), rule
        # Pods/exec, secrets and the like are never part of an action.
        assert not {"secrets", "pods/exec", "roles", "rolebindings"} & set(rule["resources"])


def test_every_remediation_rule_is_explained_by_a_comment() -> None:
    lines = REMEDIATION_ROLE_FILE.read_text().splitlines()
    rule_starts = [index for index, line in enumerate(lines)
                   if line.lstrip().startswith("- apiGroups:")]
    assert len(rule_starts) == len(remediation_role()["rules"])
    for index in rule_starts:
        assert lines[index - 1].lstrip().startswith("#"), lines[index]


@pytest.mark.parametrize("install", sorted(ROLE_FILES))
def test_the_watching_installs_stay_read_only(install: str) -> None:
    # The remediation install reuses the namespaced Role unchanged: its writes are in its own
    # Role only, so deleting that Role (or not applying the overlay) leaves a read-only detector.
    for rule in role_rules(install):
        writes = WRITE_VERBS & set(rule["verbs"])
        if writes:
            # The only writes: an Event per incident, and the leader-election Lease.
            assert set(rule["resources"]) <= {"events", "leases"}, rule
            assert not writes & {"patch", "delete", "deletecollection"}, rule


def test_remediation_install_reuses_the_read_only_role_unchanged() -> None:
    docs = install_documents("remediation")
    roles = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Role"}
    assert set(roles) == {APP_NAME, REMEDIATION_ROLE}
    assert roles[APP_NAME]["rules"] == role_rules("namespaced")


def test_remediation_env_names_settings_fields_and_secrets_come_from_the_secret() -> None:
    env = overlay_env("remediation")
    assert env
    for name, var in env.items():
        assert name == name.upper() and name.lower() in Settings.model_fields, name
        if name.lower() in SECRET_FIELDS:
            assert "value" not in var, f"{name} must not be inline"
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET_NAME and ref["optional"] is True
    assert env["SLACK_SIGNING_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == \
        "slack-signing-secret"
    example_keys = set(only(load_documents(SECRET_EXAMPLE), "Secret")["stringData"])
    assert {"slack-signing-secret", "slack-bot-token"} <= example_keys


def test_remediation_env_over_the_base_validates_in_approve_mode() -> None:
    settings = load_settings(remediation_settings_env())
    assert settings.remediation_mode == "approve"
    assert settings.allowed_actions == ("rollback",)
    assert settings.leader_election is False
    assert settings.slack_approvers == ("U00000000",)
    assert settings.dry_run is False
    assert settings.namespace == (NAMESPACE,)


def test_remediation_without_the_signing_secret_does_not_start() -> None:
    # The Secret key is optional for Kubernetes; the daemon refuses approve mode without it.
    env = {key: value for key, value in remediation_settings_env().items()
           if key != "SLACK_SIGNING_SECRET"}
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        load_settings(env)


def test_remediation_runs_one_replica_without_leader_election() -> None:
    # Approval tokens and the journal live in each replica's own process and SQLite file: a
    # click must reach the replica that asked, so there is exactly one, also during a rollout.
    spec = patched_deployment("remediation")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert patched_env("remediation")["LEADER_ELECTION"] == {
        "name": "LEADER_ELECTION", "value": "false"}
    text = (REMEDIATION_DIR / KUSTOMIZATION_FILE).read_text()
    assert "SQLite" in text and "replica that asked" in text, "the comment says why"
    assert "REPLACE" in text, "the SLACK_APPROVERS placeholder says to replace it"


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_patched_deployment_deserializes_without_losing_fields(install: str) -> None:
    patched = patched_deployment(install)
    round_trip = ApiClient().sanitize_for_serialization(deserialize(patched))
    assert fields_lost(patched, round_trip) == []


# --- PostgreSQL, and the SQLite file on a volume ----------------------------------------------


def pod_env(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [main] = dep["spec"]["template"]["spec"]["containers"]
    return {var["name"]: var for var in main["env"]}


def state_volume(dep: dict[str, Any]) -> dict[str, Any]:
    """The volume mounted at the folder of STATE_PATH (where the SQLite file is)."""
    pod = dep["spec"]["template"]["spec"]
    [main] = pod["containers"]
    folder = str(Path(pod_env(dep)["STATE_PATH"]["value"]).parent)
    [mount] = [m for m in main["volumeMounts"] if m["mountPath"] == folder]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return volume


def memory_problems(dep: dict[str, Any]) -> list[str]:
    """Why a Deployment could have two detectors write one SQLite file, or two with memories
    of their own that both act. Without DATABASE_URL each pod's memory is its own SQLite file:
    on an emptyDir two replicas have one each (the leader detects, the standby waits), on a
    volume claim there is one file, so one pod, also during a rollout; and remediation keeps
    approvals and the journal in that memory, so it needs one replica or the database."""
    env = pod_env(dep)
    if "DATABASE_URL" in env:
        return []
    spec = dep["spec"]
    replicas = spec.get("replicas", 1)
    volume = state_volume(dep)
    problems = []
    if "persistentVolumeClaim" in volume:
        if replicas != 1:
            problems.append(f"{replicas} replicas on one SQLite file (a volume claim)")
        if spec.get("strategy", {}).get("type") != "Recreate":
            problems.append("a rolling update runs two pods on one SQLite file")
    elif set(volume) != {"name", "emptyDir"}:
        problems.append(f"the SQLite file is on {volume}, neither a pod's own nor a claim")
    if replicas > 1 and env.get("LEADER_ELECTION", {}).get("value") != "true":
        problems.append(f"{replicas} replicas with a memory each and no leader election")
    if replicas > 1 and env.get("REMEDIATION_MODE", {}).get("value", "off") != "off":
        problems.append(f"remediation on {replicas} replicas without DATABASE_URL: a click "
                        "may reach a replica that never asked")
    return problems


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_no_install_lets_two_replicas_share_a_sqlite_file(install: str) -> None:
    assert memory_problems(patched_deployment(install)) == []


def test_the_memory_check_fails_on_two_replicas_without_the_database() -> None:
    # Guards the check above with the installs it must refuse.
    shared = patched_deployment("sqlite-pvc")
    assert memory_problems(shared) == []
    assert memory_problems(merge_by_name(shared, {"spec": {"replicas": 2}})) == [
        "2 replicas on one SQLite file (a volume claim)",
        "2 replicas with a memory each and no leader election"]
    rolling = merge_by_name(shared, {"spec": {"strategy": {"type": "RollingUpdate"}}})
    assert memory_problems(rolling) == ["a rolling update runs two pods on one SQLite file"]
    highly_available = patched_deployment("postgres-remediation")
    without_database = json.loads(json.dumps(highly_available))
    [main] = without_database["spec"]["template"]["spec"]["containers"]
    main["env"] = [var for var in main["env"] if var["name"] != "DATABASE_URL"]
    assert memory_problems(highly_available) == []
    assert [p.split(":")[0] for p in memory_problems(without_database)] == [
        "remediation on 2 replicas without DATABASE_URL"]


@pytest.mark.parametrize("install", sorted(INSTALLS))
def test_every_install_sets_only_env_the_daemon_reads(install: str) -> None:
    for name, var in patched_env(install).items():
        assert name.lower() in Settings.model_fields or name in ENV_OUTSIDE_SETTINGS, name
        if name.lower() in SECRET_FIELDS or name == "DATABASE_URL":
            assert "value" not in var, f"{name} must come from a Secret"


@pytest.mark.parametrize("install", DATABASE_INSTALLS)
def test_the_database_url_comes_from_its_secret_and_is_required(install: str) -> None:
    var = patched_env(install)["DATABASE_URL"]
    assert "value" not in var, "the URL holds the password: never inline"
    ref = var["valueFrom"]["secretKeyRef"]
    assert ref["name"] == DATABASE_SECRET_NAME and ref["key"] == "database-url"
    # Required: a pod without it would fall back to a SQLite file of its own, and the two
    # replicas would remember different things.
    assert ref.get("optional", False) is False
    assert DATABASE_URL_COMPONENT.resolve() in {
        (INSTALLS[install] / entry).resolve()
        for entry in kustomization(INSTALLS[install]).get("components", [])}


def test_the_database_secret_example_ships_no_value_and_the_key_the_deployment_reads() -> None:
    secret = only(load_documents(DATABASE_SECRET_EXAMPLE), "Secret")
    assert secret["metadata"]["name"] == DATABASE_SECRET_NAME
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["stringData"] == {"database-url": ""} and "data" not in secret
    text = DATABASE_SECRET_EXAMPLE.read_text()
    assert "kubectl" in text and f"create secret generic {DATABASE_SECRET_NAME}" in text


def test_the_postgres_install_keeps_two_replicas_with_leader_election() -> None:
    spec = patched_deployment("postgres")["spec"]
    assert spec["replicas"] == 2 and patched_env("postgres")["LEADER_ELECTION"]["value"] == "true"


def lease_grants(install: str) -> set[tuple[str, str, str]]:
    """What the Roles bound to the detector's account grant on Leases."""
    docs = install_documents(install)
    bound = {doc["roleRef"]["name"] for doc in docs if doc["kind"] == "RoleBinding"}
    return {grant for doc in docs if doc["kind"] == "Role" and doc["metadata"]["name"] in bound
            for rule in doc["rules"] for grant in rule_grants(rule)
            if grant[1] == "leases"}


def test_postgres_remediation_runs_two_replicas_with_leader_election_again() -> None:
    from incident_detector.run.leader import LEASE_PERMISSIONS

    spec = patched_deployment("postgres-remediation")["spec"]
    assert spec["replicas"] == 2
    # A new pod is ready before an old one goes: a replica always answers a click.
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert patched_env("postgres-remediation")["LEADER_ELECTION"] == {
        "name": "LEADER_ELECTION", "value": "true"}
    assert set(LEASE_PERMISSIONS) <= lease_grants("postgres-remediation")
    settings = load_settings({**literal_env(patched_env("postgres-remediation")),
                              **DUMMY_SECRET_ENV})
    assert settings.leader_election is True and settings.remediation_mode == "approve"
    assert settings.allowed_actions == ("rollback",)
    # The same writes as k8s/remediation/: only the replicas and the memory differ.
    roles = {doc["metadata"]["name"]: doc["rules"] for doc in
             install_documents("postgres-remediation") if doc["kind"] == "Role"}
    assert roles == {doc["metadata"]["name"]: doc["rules"] for doc in
                     install_documents("remediation") if doc["kind"] == "Role"}


def test_postgres_remediation_keeps_one_replica_through_a_drain() -> None:
    budget = only(install_documents("postgres-remediation"), "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = patched_deployment("postgres-remediation")["spec"]["template"]["metadata"][
        "labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # Only where there are two: with one replica the budget would block every drain.
    for install in INSTALLS:
        if any(doc["kind"] == "PodDisruptionBudget" for doc in install_documents(install)):
            assert patched_deployment(install)["spec"]["replicas"] >= 2, install


def test_sqlite_pvc_puts_the_file_on_a_claim_for_one_replica() -> None:
    dep = patched_deployment("sqlite-pvc")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert patched_env("sqlite-pvc")["LEADER_ELECTION"]["value"] == "false"
    assert "DATABASE_URL" not in patched_env("sqlite-pvc")
    assert pod_env(dep)["STATE_PATH"]["value"] == STATE_PATH
    claim = only(install_documents("sqlite-pvc"), "PersistentVolumeClaim")
    assert state_volume(dep) == {"name": "state",
                                 "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    # The other writable path stays the pod's own.
    [tmp] = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in tmp


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends in a continuation line"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword != "ENV":
            continue
        tokens = shlex.split(instruction.arguments)
        if "=" not in tokens[0]:  # legacy form: ENV NAME value
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            env[name] = value
    return env


def final_stage() -> list[Instruction]:
    return stages(dockerfile_instructions(DOCKERFILE.read_text()))[-1]


def only_instruction(stage: list[Instruction], keyword: str) -> Instruction:
    matching = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(matching) == 1, f"expected one {keyword}, found {len(matching)}"
    return matching[0]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    all_stages = stages(dockerfile_instructions(DOCKERFILE.read_text()))
    assert len(all_stages) > 1
    for stage in all_stages:
        assert stage[0].arguments.split()[0] == "python:3.11-slim"
    builder_alias = all_stages[0][0].arguments.split()[-1]
    copies = [instruction.arguments for instruction in final_stage()
              if instruction.keyword == "COPY"]
    assert copies and all(f"--from={builder_alias}" in arguments for arguments in copies)


def test_dockerfile_final_stage_runs_as_a_numeric_non_root_user() -> None:
    user = only_instruction(final_stage(), "USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    pod_context = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert int(uid) == pod_context["runAsUser"]


def test_dockerfile_final_stage_environment_and_entrypoint() -> None:
    stage = final_stage()
    env = env_of(stage)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"  # fewer malloc arenas for its dozen threads
    assert json.loads(only_instruction(stage, "ENTRYPOINT").arguments) == ENTRYPOINT
    exposed = only_instruction(stage, "EXPOSE").arguments.split()
    assert [int(port.partition("/")[0]) for port in exposed] == [container_port("http")]


def test_dockerfile_installs_the_postgres_extra_by_default() -> None:
    # One image for both stores: DATABASE_URL works without a rebuild (the driver is imported
    # only when it is set, so the SQLite default pays nothing for it at run time).
    import tomllib

    builder = stages(dockerfile_instructions(DOCKERFILE.read_text()))[0]
    [extras] = [shlex.split(i.arguments)[0] for i in builder if i.keyword == "ARG"
                and i.arguments.startswith("EXTRAS")]
    assert "postgres" in extras.partition("=")[2].split(",")
    [install] = [i.arguments for i in builder if i.keyword == "RUN" and "pip install" in
                 i.arguments]
    assert '".${EXTRAS:+[$EXTRAS]}"' in install and "import psycopg" in install
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # The binary wheel: libpq comes with it, nothing to apt-get on the slim base.
    assert any(req.startswith("psycopg[binary]")
               for req in project["optional-dependencies"]["postgres"])


def test_dockerfile_final_stage_installs_no_build_tools() -> None:
    for instruction in final_stage():
        if instruction.keyword == "RUN":
            words = set(instruction.arguments.split())
            assert not words & {"pip", "apt-get", "apt", "gcc"}, instruction.arguments


def dockerignore_patterns() -> Iterator[str]:
    for line in DOCKERIGNORE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.strip().rstrip("/")


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = set(dockerignore_patterns())
    assert {".git", ".venv", ".pytest_cache", ".hypothesis", "bench", "tests"} <= patterns
    assert not patterns & {"pyproject.toml", "incident_detector", "README.md", "*.md", "*"}


def test_the_cluster_role_grants_no_lease_access():
    """Cluster-wide, the Lease is reachable only in the detector's own namespace."""
    [cluster_role] = load_documents(CLUSTER_WIDE_DIR / "clusterrole.yaml")
    assert cluster_role["kind"] == "ClusterRole"
    assert not any("leases" in rule["resources"] for rule in cluster_role["rules"])
    [lease_role] = load_documents(CLUSTER_WIDE_DIR / "lease-role.yaml")
    assert lease_role["kind"] == "Role"
    assert all(rule["resources"] == ["leases"] for rule in lease_role["rules"])
