"""ConfigMaps, Secrets and Services of a scenario as the kube-apiserver returns them.

Pure functions of the scenario's spec and an instant: the data after the writes made so far,
and ``managedFields`` as the API server's field manager keeps them for Update operations (the
shape of ``tests/fixtures/kubernetes/configmap_watch.json``). The world (``world.World``) gives
each its uid and its resourceVersion (the instant of its last write).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from .scenario import ConfigMapSpec, ConfigWrite, IngressSpec, SecretSpec, ServiceSpec

Body = dict[str, Any]
# Scenario seconds -> metav1.Time text.
When = Callable[[float], str]
CREATOR = "kubectl-create"


def config_object(spec: ConfigMapSpec, t: float, *, namespace: str, uid: str,
                  when: When) -> Body:
    """A ConfigMap or Secret (``SecretSpec``) at scenario time ``t`` (it exists then), with an
    empty resourceVersion (the world fills it in). A Secret's values are base64, as served."""
    secret = isinstance(spec, SecretSpec)
    writes = spec.writes_until(t)
    metadata: Body = {
        "name": spec.name, "namespace": namespace, "uid": uid, "resourceVersion": "",
        "creationTimestamp": when(spec.created_at),
        "managedFields": data_managed_fields(writes, secret=secret, when=when),
    }
    body: Body = {"kind": "Secret" if secret else "ConfigMap", "apiVersion": "v1",
                  "metadata": metadata}
    # Sorted by key, as the API server encodes a map.
    data = dict(sorted(writes[-1].data.items()))
    if data:
        body["data"] = ({k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
                        if secret else data)
    if isinstance(spec, SecretSpec):
        body["type"] = spec.type
    return body


def data_managed_fields(writes: tuple[ConfigWrite, ...], *, secret: bool,
                        when: When) -> list[Body]:
    """The ``managedFields`` of a ConfigMap or Secret after ``writes`` (creation first), as the
    API server's field manager keeps them for Update operations: a write takes ownership of the
    keys whose value it changed (from whoever had them), a removed key belongs to no one, the
    map itself (``.``) to whoever first gave it keys (a Secret's ``type`` to its creator); each
    manager's entry has the time of its latest write, and entries are sorted by operation, time
    and manager."""
    owners: dict[str, str] = {}
    latest: dict[str, float] = {}
    map_owner: str | None = None
    creator = writes[0].manager
    for write in writes:
        for key in write.changed:
            owners[key] = write.manager
        for key in write.removed:
            owners.pop(key, None)
        if write.changed and map_owner is None:
            map_owner = write.manager
        latest[write.manager] = write.at
    entries = []
    for manager, at in latest.items():
        keys = sorted(k for k, owner in owners.items() if owner == manager)
        fields: Body = {}
        if keys or map_owner == manager:
            fields["f:data"] = {**({".": {}} if map_owner == manager else {}),
                                **{f"f:{key}": {} for key in keys}}
        if secret and manager == creator:
            fields["f:type"] = {}
        if not fields:
            continue  # a manager that owns nothing any more has no entry
        entries.append({"manager": manager, "operation": "Update", "apiVersion": "v1",
                        "time": when(at), "fieldsType": "FieldsV1", "fieldsV1": fields})
    # All Updates; the API server sorts by time (whole seconds), then manager.
    entries.sort(key=lambda entry: (entry["time"], entry["manager"]))
    return entries


def service_object(spec: ServiceSpec, *, namespace: str, uid: str, when: When) -> Body:
    """A ClusterIP Service, as ``kubectl create service clusterip`` (or a manifest) leaves it."""
    digest = hashlib.blake2b(f"service\x00{namespace}\x00{spec.name}".encode(),
                             digest_size=4).digest()
    cluster_ip = f"10.96.{digest[0]}.{1 + digest[1] % 254}"
    ports = []
    for port in spec.ports:
        item: Body = {"name": port.name} if port.name else {}
        item.update({"protocol": port.protocol, "port": port.port,
                     "targetPort": port.port if port.target_port is None else port.target_port})
        ports.append(item)
    port_fields = {
        'k:{"port":%d,"protocol":"%s"}' % (p.port, p.protocol): {
            ".": {}, **({"f:name": {}} if p.name else {}), "f:port": {}, "f:protocol": {},
            "f:targetPort": {}}
        for p in spec.ports}
    spec_fields: Body = {"f:internalTrafficPolicy": {}, "f:ports": {".": {}, **port_fields}}
    if spec.selector:
        spec_fields["f:selector"] = {}
    spec_fields.update({"f:sessionAffinity": {}, "f:type": {}})
    body_spec: Body = {"ports": ports}
    if spec.selector:
        body_spec["selector"] = dict(spec.selector)
    body_spec.update({
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
        "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    })
    created = when(spec.created_at)
    return {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {
            "name": spec.name, "namespace": namespace, "uid": uid, "resourceVersion": "",
            "creationTimestamp": created,
            "managedFields": [{
                "manager": CREATOR, "operation": "Update", "apiVersion": "v1", "time": created,
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": spec_fields}}],
        },
        "spec": body_spec,
        "status": {"loadBalancer": {}},
    }


def ingress_object(spec: IngressSpec, *, namespace: str, uid: str, when: When) -> Body:
    """An Ingress of one rule, as a manifest applied with ``kubectl create`` leaves it."""
    rule: Body = {"http": {"paths": [
        {"path": p.path, "pathType": "Prefix",
         "backend": {"service": {"name": p.service, "port": {"number": p.port}}}}
        for p in spec.paths]}}
    if spec.host:
        rule = {"host": spec.host, **rule}
    created = when(spec.created_at)
    return {
        "kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
        "metadata": {
            "name": spec.name, "namespace": namespace, "uid": uid, "resourceVersion": "",
            "creationTimestamp": created, "generation": 1,
            "managedFields": [{
                "manager": CREATOR, "operation": "Update", "apiVersion": "networking.k8s.io/v1",
                "time": created, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:rules": {}}}}],
        },
        "spec": {"rules": [rule]},
        "status": {"loadBalancer": {}},
    }
