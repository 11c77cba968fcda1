from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.judge.changes import (
    HIDDEN,
    MORE_KIND,
    SECRET_NAME_PATTERN,
    looks_secret_value,
    template_changes,
)
from incident_detector.model import Container, EnvVar, PodTemplate, TemplateChange

READINESS = '{"httpGet":{"path":"/healthz","port":8080},"periodSeconds":10}'


def _pod(
    *containers: Container, config_maps: Iterable[str] = (), secrets: Iterable[str] = ()
) -> PodTemplate:
    return PodTemplate(
        containers=containers, config_maps=frozenset(config_maps), secrets=frozenset(secrets)
    )


def _api(**fields: object) -> Container:
    fields.setdefault("image", "payments-api:1.4.2")
    return Container(name="payments-api", **fields)  # type: ignore[arg-type]


def _details(previous: PodTemplate, new: PodTemplate, **kwargs: int) -> list[tuple[str, str, str]]:
    return [(c.kind, c.container, c.detail) for c in template_changes(previous, new, **kwargs)]


def _env_details(old_env: tuple[EnvVar, ...], new_env: tuple[EnvVar, ...]) -> list[str]:
    return [detail for _, _, detail in _details(_pod(_api(env=old_env)), _pod(_api(env=new_env)))]


# --- plain cases --------------------------------------------------------------------------------


def test_identical_templates_have_no_changes() -> None:
    template = _pod(_api(env=(EnvVar("A", "1"),), resources=(("limits.memory", "256Mi"),)))
    assert template_changes(template, template) == ()
    assert template_changes(PodTemplate(), PodTemplate()) == ()


def test_image_change() -> None:
    assert template_changes(_pod(_api()), _pod(_api(image="payments-api:1.5.0"))) == (
        TemplateChange("image", "payments-api", "payments-api:1.4.2 -> payments-api:1.5.0"),
    )


def test_added_and_removed_containers() -> None:
    previous = _pod(_api(), Container("legacy-agent", "agent:0.9"))
    new = _pod(_api(), Container("envoy", "envoy:1.29"))
    assert _details(previous, new) == [
        ("container", "envoy", "added (image envoy:1.29)"),
        ("container", "legacy-agent", "removed (image agent:0.9)"),
    ]


def test_command_and_args() -> None:
    previous = _pod(_api(command=("/app/server",), args=("--port=8080", "--mode=fast")))
    new = _pod(
        _api(command=("/app/server", "-v"), args=("--port=8080", "--mode=safe", "two words"))
    )
    assert _details(previous, new) == [
        ("command", "payments-api", "/app/server -> /app/server -v"),
        ("args", "payments-api", "--port=8080 --mode=fast -> --port=8080 --mode=safe 'two words'"),
    ]
    assert _details(_pod(_api()), _pod(_api(args=("--debug",)))) == [
        ("args", "payments-api", "(none) -> --debug")
    ]


def test_secret_arguments_are_hidden() -> None:
    previous = _pod(_api(args=("--db-password", "hunter2", "--api-key=abc123", "--port=1")))
    new = _pod(_api(args=("--db-password", "hunter3", "--api-key=abc124", "--port=2")))
    ((_, _, detail),) = _details(previous, new)
    side = f"--db-password {HIDDEN} --api-key={HIDDEN} --port="
    assert detail == f"{side}1 -> {side}2"
    for value in ("hunter2", "hunter3", "abc123", "abc124"):
        assert value not in detail
    # Only a hidden value changed: say so without showing it.
    previous = _pod(_api(args=("--token", "t0k3n-one")))
    new = _pod(_api(args=("--token", "t0k3n-two")))
    assert _details(previous, new) == [
        ("args", "payments-api", f"--token {HIDDEN} (changed; the difference is not shown)")
    ]
    conn = "--dsn=postgres://app:s3cr3t@db:5432/payments"
    ((_, _, detail),) = _details(_pod(_api()), _pod(_api(args=(conn, "--opts=user=a,password=b"))))
    assert detail == f"(none) -> --dsn={HIDDEN} --opts={HIDDEN}"


def test_env_literal_values_are_shown_when_harmless() -> None:
    assert _env_details((EnvVar("FEATURE_X", "off"),), (EnvVar("FEATURE_X", "on"),)) == [
        "FEATURE_X: off -> on"
    ]
    assert _env_details((), (EnvVar("FEATURE_X", "on"),)) == ["added FEATURE_X=on"]
    assert _env_details((EnvVar("LOG_LEVEL", "info"),), ()) == ["removed LOG_LEVEL"]
    assert _env_details((EnvVar("EMPTY", ""),), (EnvVar("EMPTY", "x"),)) == ['EMPTY: "" -> x']
    assert _env_details((EnvVar("EMPTY"),), (EnvVar("EMPTY", ""),)) == []
    long_value = "word " * 40
    (detail,) = _env_details((), (EnvVar("BANNER", long_value),))
    assert detail.startswith("added BANNER=word word") and detail.endswith("…")
    assert len(detail) < 80


def test_env_secret_names_hide_values() -> None:
    names = ["DB_PASSWORD", "API_TOKEN", "client_secret", "AWS_ACCESS_KEY_ID", "GPG_PASSPHRASE",
             "OAUTH_CLIENT", "PRIVATE_PEM", "TLS_CERT", "SENTRY_DSN", "DB_CONN", "Credentials_File"]
    for name in names:
        assert SECRET_NAME_PATTERN.search(name), name
        assert _env_details((EnvVar(name, "old1"),), (EnvVar(name, "new1"),)) == [
            f"{name} changed (value hidden)"
        ]
        assert _env_details((), (EnvVar(name, "new1"),)) == [f"added {name} (value hidden)"]


def test_env_secret_looking_values_are_hidden_under_any_name() -> None:
    secrets = [
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "dGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ==",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU",
        "postgres://app:s3cr3t@db:5432/payments",
        "https://user:pw@example.com/hook",
        "host=db user=app password=hunter2",
        "-----BEGIN RSA PRIVATE KEY-----",
        "xoxb-1234567890-abcdefghijklmnop",
    ]
    for value in secrets:
        assert looks_secret_value(value), value
        assert _env_details((EnvVar("UPSTREAM", "plain"),), (EnvVar("UPSTREAM", value),)) == [
            "UPSTREAM changed (value hidden)"
        ]
        assert _env_details((), (EnvVar("UPSTREAM", value),)) == ["added UPSTREAM (value hidden)"]
    harmless = ["on", "info", "payments-api-feature-flag", "https://bank.example.com/api/v2",
                "registry.local/payments-api:1.5.0", "PAYMENTS_PRIMARY_REGION", "256Mi",
                "/etc/app/config.yaml"]
    for value in harmless:
        assert not looks_secret_value(value), value


def test_env_source_changes_name_the_source_never_a_value() -> None:
    previous = (EnvVar("DB_URL", source="configmap:payments-config/url"),
                EnvVar("MODE", "literal-mode"),
                EnvVar("DB_PASSWORD", source="secret:db-creds/password"),
                EnvVar("POD", source="field:metadata.name"))
    new = (EnvVar("DB_URL", source="secret:db-creds/url"),
           EnvVar("MODE", source="configmap:payments-config/mode"),
           EnvVar("DB_PASSWORD", source="secret:db-creds/password-v2"),
           EnvVar("POD", "fixed-pod"),
           EnvVar("MEMORY", source="resource:limits.memory"))
    assert _env_details(previous, new) == [
        "DB_URL: configmap payments-config -> secret db-creds",
        "MODE: literal value -> configmap payments-config",
        "DB_PASSWORD: now read from another key of secret db-creds",
        "POD: field metadata.name -> literal value",
        "added MEMORY from resource limits.memory",
    ]
    assert "literal-mode" not in " ".join(_env_details(previous, new))
    same = (EnvVar("DB_URL", source="secret:db-creds/url"),)
    assert _env_details(same, same) == []


def test_resources() -> None:
    previous = _pod(_api(resources=(("limits.memory", "256Mi"), ("requests.cpu", "100m"))))
    new = _pod(_api(resources=(("limits.cpu", "500m"), ("limits.memory", "128Mi"))))
    assert _details(previous, new) == [
        ("resources", "payments-api", "limits.cpu added: 500m"),
        ("resources", "payments-api", "limits.memory 256Mi -> 128Mi"),
        ("resources", "payments-api", "requests.cpu removed (was 100m)"),
    ]


def test_probes() -> None:
    changed = READINESS.replace("/healthz", "/ready").replace("10", "5")
    previous = _pod(_api(probes=(("liveness", "{}"), ("readiness", READINESS))))
    new = _pod(_api(probes=(("readiness", changed), ("startup", "{}"))))
    assert _details(previous, new) == [
        ("probe", "payments-api", "liveness probe removed"),
        ("probe", "payments-api", "readiness probe changed (httpGet, periodSeconds)"),
        ("probe", "payments-api", "startup probe added"),
    ]
    # Not JSON (or not an object): still reported, without the field list.
    previous = _pod(_api(probes=(("readiness", "not json"),)))
    new = _pod(_api(probes=(("readiness", "[1]"),)))
    assert _details(previous, new) == [("probe", "payments-api", "readiness probe changed")]


def test_pod_level_config_maps_and_secrets() -> None:
    previous = _pod(_api(), config_maps={"payments-config-v1", "shared"}, secrets={"db-creds"})
    new = _pod(_api(), config_maps={"payments-config-v2", "shared"}, secrets={"db-creds", "tls"})
    assert _details(previous, new) == [
        ("configmap", "", "added payments-config-v2"),
        ("configmap", "", "removed payments-config-v1"),
        ("secret", "", "added tls"),
    ]


def test_order_is_images_command_env_resources_probes_configmaps_secrets() -> None:
    previous = _pod(
        _api(
            env=(EnvVar("A", "1"),),
            resources=(("limits.memory", "256Mi"),),
            probes=(("readiness", "{}"),),
        ),
        Container("worker", "worker:1", args=("--x",)),
        config_maps={"c1"}, secrets={"s1"},
    )
    new = _pod(
        _api(
            image="payments-api:1.5.0",
            env=(EnvVar("A", "2"),),
            resources=(("limits.memory", "128Mi"),),
        ),
        Container("worker", "worker:2", args=("--y",)),
        config_maps={"c2"}, secrets={"s2"},
    )
    kinds = [kind for kind, _, _ in _details(previous, new)]
    assert kinds == ["image", "image", "args", "env", "resources", "probe",
                     "configmap", "configmap", "secret", "secret"]
    assert [c for k, c, _ in _details(previous, new) if k == "image"] == ["payments-api", "worker"]


def test_limit_summarises_the_rest() -> None:
    previous = _pod(_api(env=tuple(EnvVar(f"V{i}", "a") for i in range(30))))
    new = _pod(_api(env=tuple(EnvVar(f"V{i}", "b") for i in range(30))))
    changes = template_changes(previous, new)
    assert len(changes) == 20
    assert changes[-1] == TemplateChange(MORE_KIND, "", "... and 11 more changes")
    assert changes[0].detail == "V0: a -> b"
    assert template_changes(previous, new, limit=30)[-1].detail == "V29: a -> b"
    assert template_changes(previous, new, limit=1) == (
        TemplateChange(MORE_KIND, "", "... and 30 more changes"),
    )
    assert template_changes(previous, new, limit=0) == ()
    assert len(template_changes(previous, new, limit=31)) == 30


def test_deterministic() -> None:
    previous = _pod(_api(), config_maps={f"cm{i}" for i in range(10)})
    new = _pod(_api(), config_maps={f"cm{i}" for i in range(5, 15)})
    assert template_changes(previous, new) == template_changes(previous, new)
    assert [c.detail for c in template_changes(previous, new)][:2] == ["added cm10", "added cm11"]


# --- properties -------------------------------------------------------------------------------

# Secret values carry a marker that nothing else generated here contains, so finding the
# marker in a detail can only mean a leak.
MARKER = "zq"
SAFE_TEXT = st.text(alphabet="abcdefghijklmnoprstuvwxy0123456789-_./:= ", max_size=20)
SECRET_VALUES = st.builds(lambda tail: MARKER + tail, st.text(max_size=12))
# Secret-looking values under harmless names: tokens, keys, URLs with a password.
SECRET_LOOKING = st.one_of(
    st.from_regex(r"zq[0-9a-f]{30}", fullmatch=True),
    st.from_regex(r"zq[A-Za-z0-9+/]{18,40}={0,2}", fullmatch=True),
    st.builds(
        lambda user, password: f"https://{user}:{MARKER}{password}@db.example/x",
        SAFE_TEXT,
        SAFE_TEXT,
    ),
    st.builds(lambda password: f"user=app password={MARKER}{password}", SAFE_TEXT),
)
NAMES = st.sampled_from(["FEATURE_X", "LOG_LEVEL", "DB_PASSWORD", "API_TOKEN", "MODE", "DB_DSN"])
SOURCES = st.sampled_from(
    [None, "secret:db-creds/password", "configmap:cfg/mode", "field:metadata.name", "weird"]
)
ARGS = (
    SAFE_TEXT
    | st.sampled_from(["--password", "--token", "--api-key"])
    | st.builds(
        lambda flag, value: f"{flag}={MARKER}{value}",
        st.sampled_from(["--password", "--db-token"]),
        SAFE_TEXT,
    )
)


@st.composite
def env_vars(draw: st.DrawFn) -> EnvVar:
    name = draw(NAMES)
    if SECRET_NAME_PATTERN.search(name):
        value = draw(SECRET_VALUES | SECRET_LOOKING | st.none())
    else:
        value = draw(SAFE_TEXT | SECRET_LOOKING | st.none())
    return EnvVar(name, value, draw(SOURCES) if value is None else None)


@st.composite
def containers(draw: st.DrawFn) -> Container:
    pairs = st.tuples(st.sampled_from(["limits.memory", "limits.cpu", "requests.cpu"]), SAFE_TEXT)
    probes = st.tuples(
        st.sampled_from(["readiness", "liveness"]),
        st.sampled_from(["{}", READINESS, "x", '{"a":1}']),
    )
    return Container(
        name=draw(st.sampled_from(["payments-api", "envoy", "worker"])),
        image=draw(SAFE_TEXT),
        command=tuple(draw(st.lists(SAFE_TEXT, max_size=3))),
        args=tuple(draw(st.lists(ARGS, max_size=4))),
        env=tuple(draw(st.lists(env_vars(), max_size=6))),
        resources=tuple(sorted(dict(draw(st.lists(pairs, max_size=3))).items())),
        probes=tuple(sorted(dict(draw(st.lists(probes, max_size=2))).items())),
    )


TEMPLATES = st.builds(
    PodTemplate,
    containers=st.lists(containers(), max_size=3).map(tuple),
    config_maps=st.frozensets(st.sampled_from(["cfg", "cfg-v2", "flags"])),
    secrets=st.frozensets(st.sampled_from(["db-creds", "tls"])),
)


@settings(max_examples=300, deadline=None)
@given(TEMPLATES, TEMPLATES, st.integers(min_value=-1, max_value=25))
def test_never_raises_respects_limit_and_never_leaks(
    previous: PodTemplate, new: PodTemplate, limit: int
) -> None:
    changes = template_changes(previous, new, limit=limit)
    assert len(changes) <= max(limit, 0)
    assert template_changes(previous, new, limit=limit) == changes
    assert all(MARKER not in change.detail for change in changes)
    if previous == new:
        assert changes == ()


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=20),
    st.text(max_size=40) | SECRET_LOOKING,
    st.text(max_size=40) | SECRET_LOOKING,
)
def test_a_changed_secret_reads_value_hidden(name: str, old: str, new: str) -> None:
    details = _env_details((EnvVar(name, old),), (EnvVar(name, new),))
    if old == new:
        assert details == []
    elif SECRET_NAME_PATTERN.search(name) or looks_secret_value(old) or looks_secret_value(new):
        assert details == [f"{name} changed (value hidden)"]
    else:
        assert details[0].startswith(f"{name}: ") and " -> " in details[0]
