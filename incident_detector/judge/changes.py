"""What changed between the previous revision's pod template and the new one.

The first question on a bad rollout is "what did we change?". The answer is usually one of a few
things: the image, a flag, an environment variable, a memory limit, a probe, a ConfigMap or
Secret swapped for another. Listing those next to the error spike saves the on-call engineer a
``kubectl rollout history --revision`` and a diff in their head.

The list goes to Slack and to logs, so it must never carry a secret. Environment values are shown
only when both the old and the new value are literals in the template, the name does not look
like a secret (``SECRET_NAME_PATTERN``) and neither value looks like one (a long base64/hex-ish
run, a URL with a password, ``password=...``); otherwise the line says "changed (value hidden)".
A value taken from a ConfigMap or Secret is named by its source, never read. Command-line
arguments get the same treatment, one argument at a time.

Order: containers and images first, then command/args, env, resources, probes, ConfigMaps,
Secrets. At most ``limit`` lines; past it, the last line says how many more there were.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping

from incident_detector.model import Container, EnvVar, PodTemplate, TemplateChange

SECRET_NAME_PATTERN = re.compile(
    r"token|secret|pass|pwd|key|credential|auth|private|cert|dsn|conn|salt|session|cookie"
    r"|signature",
    re.IGNORECASE,
)
HIDDEN = "***"
VALUE_MAX_CHARS = 60
SIDE_MAX_CHARS = 120
MORE_KIND = "more"

# Any "@" after "://" may end a userinfo; a broken URL (unescaped "/" or space in the
# password) still counts.
_URL_WITH_USERINFO = re.compile(r"://[^@]*@")
_ASSIGNED_SECRET = re.compile(r"(?:pass|pwd|secret|token|api_?key)\w*\s*[=:]", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN")
# Base64, base64url and hex alphabets; a long run of them is a key unless it reads as a name.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
_NAME_LIKE = re.compile(r"[a-z_/-]+|[A-Z_/-]+")

# Rank of each kind in the output; containers appearing or going away count with images.
_RANK = {"container": 0, "image": 0, "command": 1, "args": 1, "env": 2, "resources": 3,
         "probe": 4, "configmap": 5, "secret": 6}


def looks_secret_value(value: str) -> bool:
    """A value that must not be shown whatever its variable is called."""
    if _URL_WITH_USERINFO.search(value) or _ASSIGNED_SECRET.search(value) or _PEM.search(value):
        return True
    return any(not _NAME_LIKE.fullmatch(run) for run in _TOKEN_RUN.findall(value))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(value: str) -> str:
    return _clip(value, VALUE_MAX_CHARS) if value else '""'


def _showable(name: str, *values: str) -> bool:
    return not SECRET_NAME_PATTERN.search(name) and not any(map(looks_secret_value, values))


def _source_text(source: str) -> str:
    """``secret:db-creds/password`` -> ``secret db-creds``: the kind and name, no key, no value."""
    kind, _, rest = source.partition(":")
    name = rest.split("/", 1)[0] if kind in ("secret", "configmap") else rest
    return f"{kind} {name}".strip()


def _env_change(name: str, old: EnvVar | None, new: EnvVar | None) -> str | None:
    if new is None:
        return f"removed {name}"
    new_value = new.value or ""
    if old is None:
        if new.source is not None:
            return f"added {name} from {_source_text(new.source)}"
        if _showable(name, new_value):
            return f"added {name}={_shown(new_value)}"
        return f"added {name} (value hidden)"
    old_value = old.value or ""
    if old.source != new.source:
        before = _source_text(old.source) if old.source is not None else "literal value"
        after = _source_text(new.source) if new.source is not None else "literal value"
        if before == after:
            return f"{name}: now read from another key of {after}"
        return f"{name}: {before} -> {after}"
    if new.source is not None or old_value == new_value:
        return None
    if _showable(name, old_value, new_value):
        return f"{name}: {_shown(old_value)} -> {_shown(new_value)}"
    return f"{name} changed (value hidden)"


def _redacted_args(args: tuple[str, ...]) -> str:
    if not args:
        return "(none)"
    words: list[str] = []
    hide_next = False
    for arg in args:
        flag, equals, value = arg.partition("=")
        if hide_next or looks_secret_value(flag):
            words.append(HIDDEN)
        elif equals and (SECRET_NAME_PATTERN.search(flag) or looks_secret_value(value)):
            words.append(f"{shlex.quote(flag)}={HIDDEN}")
        else:
            words.append(shlex.quote(arg))
        # "--password hunter2": the value of a secret-named flag is the next argument.
        hide_next = arg.startswith("-") and not equals and bool(SECRET_NAME_PATTERN.search(arg))
    return _clip(" ".join(words), SIDE_MAX_CHARS)


def _probe_fields(old_json: str, new_json: str) -> str:
    """`` (httpGet, periodSeconds)``: the top-level probe fields that differ, when readable."""
    try:
        old, new = json.loads(old_json), json.loads(new_json)
    except ValueError:
        return ""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return f" ({', '.join(fields)})" if fields else ""


def _pairs_changes(
    old: Mapping[str, str], new: Mapping[str, str]
) -> Iterator[tuple[str, str | None, str | None]]:
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            yield key, old.get(key), new.get(key)


def _container_changes(old: Container, new: Container) -> Iterator[TemplateChange]:
    name = new.name
    if old.image != new.image:
        detail = f"{_clip(old.image, SIDE_MAX_CHARS)} -> {_clip(new.image, SIDE_MAX_CHARS)}"
        yield TemplateChange("image", name, detail)
    for kind in ("command", "args"):
        before, after = getattr(old, kind), getattr(new, kind)
        if before != after:
            shown_before, shown_after = _redacted_args(before), _redacted_args(after)
            if shown_before == shown_after:
                detail = f"{shown_after} (changed; the difference is not shown)"
            else:
                detail = f"{shown_before} -> {shown_after}"
            yield TemplateChange(kind, name, detail)
    old_env = {var.name: var for var in old.env}
    new_env = {var.name: var for var in new.env}
    for var_name in [*new_env, *(n for n in old_env if n not in new_env)]:
        detail = _env_change(var_name, old_env.get(var_name), new_env.get(var_name))
        if detail is not None:
            yield TemplateChange("env", name, detail)
    for key, before, after in _pairs_changes(dict(old.resources), dict(new.resources)):
        if before is None:
            yield TemplateChange("resources", name, f"{key} added: {after}")
        elif after is None:
            yield TemplateChange("resources", name, f"{key} removed (was {before})")
        else:
            yield TemplateChange("resources", name, f"{key} {before} -> {after}")
    for probe, before, after in _pairs_changes(dict(old.probes), dict(new.probes)):
        if before is None:
            yield TemplateChange("probe", name, f"{probe} probe added")
        elif after is None:
            yield TemplateChange("probe", name, f"{probe} probe removed")
        else:
            fields = _probe_fields(before, after)
            yield TemplateChange("probe", name, f"{probe} probe changed{fields}")


def _by_name(containers: tuple[Container, ...]) -> dict[str, Container]:
    by_name: dict[str, Container] = {}
    for container in containers:
        by_name.setdefault(container.name, container)
    return by_name


def _all_changes(previous: PodTemplate, new: PodTemplate) -> Iterator[TemplateChange]:
    # Names are unique in a valid pod; should one repeat, its first container counts.
    old_by_name = _by_name(previous.containers)
    new_by_name = _by_name(new.containers)
    for container in new_by_name.values():
        old = old_by_name.get(container.name)
        if old is None:
            yield TemplateChange("container", container.name, f"added (image {container.image})")
        else:
            yield from _container_changes(old, container)
    for name, old in old_by_name.items():
        if name not in new_by_name:
            yield TemplateChange("container", name, f"removed (image {old.image})")
    for kind, before, after in (
        ("configmap", previous.config_maps, new.config_maps),
        ("secret", previous.secrets, new.secrets),
    ):
        for ref in sorted(after - before):
            yield TemplateChange(kind, "", f"added {ref}")
        for ref in sorted(before - after):
            yield TemplateChange(kind, "", f"removed {ref}")


def template_changes(
    previous: PodTemplate, new: PodTemplate, *, limit: int = 20
) -> tuple[TemplateChange, ...]:
    """The differences from ``previous`` to ``new``, most telling kinds first; () when none."""
    if limit <= 0:
        return ()
    # sorted() is stable: within a kind, changes keep container order.
    changes = sorted(_all_changes(previous, new), key=lambda change: _RANK[change.kind])
    if len(changes) <= limit:
        return tuple(changes)
    shown = changes[: limit - 1]
    more = TemplateChange(MORE_KIND, "", f"... and {len(changes) - len(shown)} more changes")
    return (*shown, more)
