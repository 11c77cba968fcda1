"""A pod template (``spec.template`` of a Deployment or ReplicaSet) as a ``PodTemplate``: pure.

What a rollout changed is read from here: each container's image, command, arguments,
environment (where a value comes from, never a Secret's value), resources and probes, and the
ConfigMaps and Secrets the pods mount or read. Kept apart from the other objects
(``kube_objects``) because it changes with what a change diff compares, not with the wire
format of Deployments, ReplicaSets and pods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..model import Container, EnvVar, PodTemplate
from .kube_json import _add_name, _dict, _list, _str, _strings

PROBE_FIELDS = (("liveness", "livenessProbe"), ("readiness", "readinessProbe"),
                ("startup", "startupProbe"))
INIT_CONTAINER_PREFIX = "init:"


def parse_pod_template(template: dict) -> PodTemplate:
    spec = _dict(_dict(template).get("spec"))
    config_maps: set[str] = set()
    secrets: set[str] = set()
    containers: list[Container] = []
    for key, prefix in (("initContainers", INIT_CONTAINER_PREFIX), ("containers", "")):
        for raw in map(_dict, _list(spec.get(key))):
            container = _parse_container(raw, prefix=prefix, config_maps=config_maps,
                                         secrets=secrets)
            if container is not None:
                containers.append(container)
    for volume in map(_dict, _list(spec.get("volumes"))):
        _volume_references(volume, config_maps=config_maps, secrets=secrets)
    return PodTemplate(containers=tuple(containers), config_maps=frozenset(config_maps),
                       secrets=frozenset(secrets))


def _parse_container(raw: Mapping[str, Any], *, prefix: str, config_maps: set[str],
                     secrets: set[str]) -> Container | None:
    name = _str(raw.get("name"))
    if not name:
        return None  # a container without a name cannot be compared with its predecessor
    env = tuple(var for var in (_env_var(_dict(e), config_maps=config_maps, secrets=secrets)
                                for e in _list(raw.get("env"))) if var is not None)
    for source in map(_dict, _list(raw.get("envFrom"))):
        _add_name(config_maps, _dict(source.get("configMapRef")).get("name"))
        _add_name(secrets, _dict(source.get("secretRef")).get("name"))
    return Container(
        name=prefix + name,
        image=_str(raw.get("image")) or "",
        command=_strings(raw.get("command")),
        args=_strings(raw.get("args")),
        env=env,
        resources=_flat_resources(_dict(raw.get("resources"))),
        probes=tuple(sorted((kind, probe) for kind, field_name in PROBE_FIELDS
                            if (probe := _canonical_json(raw.get(field_name))) is not None)),
    )


def _env_var(raw: Mapping[str, Any], *, config_maps: set[str], secrets: set[str]) -> EnvVar | None:
    name = _str(raw.get("name"))
    if not name:
        return None
    value_from = raw.get("valueFrom")
    if value_from is None:
        value = raw.get("value")
        return EnvVar(name=name, value=value if isinstance(value, str) else "")
    # The value lives elsewhere: record where, never what (it may be a Secret).
    value_from = _dict(value_from)
    secret_ref = _dict(value_from.get("secretKeyRef"))
    config_map_ref = _dict(value_from.get("configMapKeyRef"))
    field_ref = _dict(value_from.get("fieldRef"))
    resource_ref = _dict(value_from.get("resourceFieldRef"))
    source: str | None = None
    if secret_ref:
        _add_name(secrets, secret_ref.get("name"))
        source = f"secret:{_str(secret_ref.get('name')) or ''}/{_str(secret_ref.get('key')) or ''}"
    elif config_map_ref:
        _add_name(config_maps, config_map_ref.get("name"))
        source = (f"configmap:{_str(config_map_ref.get('name')) or ''}"
                  f"/{_str(config_map_ref.get('key')) or ''}")
    elif field_ref:
        source = f"field:{_str(field_ref.get('fieldPath')) or ''}"
    elif resource_ref:
        source = f"resource:{_str(resource_ref.get('resource')) or ''}"
    return EnvVar(name=name, source=source)


def _volume_references(volume: Mapping[str, Any], *, config_maps: set[str],
                       secrets: set[str]) -> None:
    _add_name(config_maps, _dict(volume.get("configMap")).get("name"))
    _add_name(secrets, _dict(volume.get("secret")).get("secretName"))
    for source in map(_dict, _list(_dict(volume.get("projected")).get("sources"))):
        _add_name(config_maps, _dict(source.get("configMap")).get("name"))
        _add_name(secrets, _dict(source.get("secret")).get("name"))


def _flat_resources(resources: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``{"limits": {"memory": "256Mi"}}`` -> ``(("limits.memory", "256Mi"),)``."""
    flat: list[tuple[str, str]] = []
    for section, quantities in resources.items():
        if not isinstance(section, str) or not isinstance(quantities, dict):
            continue  # e.g. "claims", a list of names, says nothing about sizes
        for resource, quantity in quantities.items():
            if isinstance(resource, str) and isinstance(quantity, (str, int, float)) \
                    and not isinstance(quantity, bool):
                flat.append((f"{section}.{resource}", str(quantity)))
    return tuple(sorted(flat))


def _canonical_json(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
