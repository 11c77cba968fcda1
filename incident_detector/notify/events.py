"""Kubernetes Events for incidents: visible in ``kubectl describe deployment``, and read back.

An ``events.k8s.io/v1`` Event is written on the Deployment for every incident. Besides telling
whoever looks at the Deployment, the Events are the detector's memory across nodes: a fresh pod
with an empty local store lists them and does not notify the same revision again.

The Event's name is a function of the incident, so sending it twice (a retry after a timeout whose
request did land) hits 409 AlreadyExists instead of writing a duplicate; that 409 counts as
delivered. The API server removes Events after its ``--event-ttl`` (one hour by default), which
bounds how far back the read-back reaches.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

import kubernetes.client
import structlog

from ..errors import SourceError
from ..sources.kube_http import (
    SOURCE,
    namespaced_path,
    parse_list,
    request,
)
from ..sources.kube_objects import micro_time, parse_timestamp
from .render import EVENT_NOTE_MAX_BYTES

log = structlog.get_logger(__name__)

REASON = "RolloutRegression"
ACTION = "Detect"
EVENT_TYPE = "Warning"
# A qualified name, validated by the API server: DNS-subdomain prefix, "/", then a name part.
REPORTING_CONTROLLER = "incident-detector.dev/detector"
REVISION_ANNOTATION = "incident-detector.dev/revision"
REPLICASET_ANNOTATION = "incident-detector.dev/replicaset"
DEPLOYMENT_UID_ANNOTATION = "incident-detector.dev/deployment-uid"
REPLICASET_UID_ANNOTATION = "incident-detector.dev/replicaset-uid"

EVENT_GROUP, EVENT_VERSION, EVENT_RESOURCE = "events.k8s.io", "v1", "events"
EVENT_API_VERSION = f"{EVENT_GROUP}/{EVENT_VERSION}"
EVENT_LIST_KIND = "EventList"
# Limits the API server validates.
NAME_MAX_CHARS = 253
REPORTING_INSTANCE_MAX_CHARS = 128
# How many hex digits of the incident's hash end the Event name.
NAME_HASH_CHARS = 12
ELLIPSIS = "…"

# What the recorder does through the API, as (api group, resource, verb): POST and list.
EVENT_PERMISSIONS: tuple[tuple[str, str, str], ...] = tuple(
    (EVENT_GROUP, EVENT_RESOURCE, verb) for verb in ("create", "list")
)

_DIGITS = re.compile(r"[0-9]{1,19}")
# The note's headline: "Rollout of payments-api revision 2 (payments-api-6874dc9bf7) in ...".
_NOTE_REVISION = re.compile(r"\brevision ([0-9]{1,19})\b(?: \(([a-z0-9][-a-z0-9.]*)\))?")
_LABEL_INVALID = re.compile(r"[^a-z0-9-]+")


class NotifiedRevision(NamedTuple):
    """A revision some replica already notified, as read back from its Event."""

    namespace: str
    deployment: str
    revision: int
    replicaset: str  # "" when neither the annotations nor the note name it
    notified_at: datetime
    # "" for an Event written before the detector recorded uids.
    deployment_uid: str = ""
    replicaset_uid: str = ""

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.namespace, self.deployment, self.revision, self.deployment_uid)


# --------------------------------------------------------------------------------------------
# The Event body (pure).


VERIFIED_REASON, UNVERIFIED_REASON = "RemediationVerified", "RemediationNotVerified"
VERIFY_ACTION = "Verify"


def verification_event_body(*, namespace: str, deployment: str, deployment_uid: str,
                            action_id: int, passed: bool, note: str, at: datetime,
                            reporting_instance: str) -> dict[str, Any]:
    """The Event on the Deployment that says whether a remediation worked (``kubectl describe``
    shows it next to the incident's). Its name is the action's, so a retry is a 409."""
    key = f"{namespace}/{deployment}/{deployment_uid}/verify/{action_id}"
    return _deployment_event(
        name=_named(deployment, "verify", key), namespace=namespace, deployment=deployment,
        deployment_uid=deployment_uid, at=at, reporting_instance=reporting_instance,
        action=VERIFY_ACTION, reason=VERIFIED_REASON if passed else UNVERIFIED_REASON,
        event_type="Normal" if passed else EVENT_TYPE, note=note)


def event_body(*, incident_record: Mapping[str, Any], note: str,
               reporting_instance: str) -> dict[str, Any]:
    """The ``events.k8s.io/v1`` Event for an incident record (``render.incident_record``).

    Raises ValueError when the record lacks what an Event needs: that is a bug of the caller,
    not something a retry would fix.
    """
    namespace = _required_str(incident_record, "namespace")
    deployment = _required_str(incident_record, "deployment")
    replicaset = _required_str(incident_record, "replicaset")
    revision = incident_record.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool):
        raise ValueError(f"an incident record needs an integer revision, got {revision!r}")
    detected_at = incident_record.get("detected_at")
    event_time = (detected_at if isinstance(detected_at, datetime)
                  else parse_timestamp(detected_at))
    if event_time is None:
        raise ValueError(f"an incident record needs a detected_at time, got {detected_at!r}")
    if not reporting_instance:
        raise ValueError("an Event needs a reporting instance (the pod name)")
    deployment_uid = _text(incident_record.get("deployment_uid")) or ""
    replicaset_uid = _text(incident_record.get("replicaset_uid")) or ""
    return _deployment_event(
        name=event_name(namespace=namespace, deployment=deployment, revision=revision,
                        replicaset=replicaset, deployment_uid=deployment_uid),
        namespace=namespace, deployment=deployment, deployment_uid=deployment_uid,
        at=event_time, reporting_instance=reporting_instance, action=ACTION, reason=REASON,
        event_type=EVENT_TYPE, note=note,
        annotations={
            REVISION_ANNOTATION: str(revision),
            REPLICASET_ANNOTATION: replicaset,
            **({DEPLOYMENT_UID_ANNOTATION: deployment_uid} if deployment_uid else {}),
            **({REPLICASET_UID_ANNOTATION: replicaset_uid} if replicaset_uid else {}),
        })


def _deployment_event(*, name: str, namespace: str, deployment: str, deployment_uid: str,
                      at: datetime, reporting_instance: str, action: str, reason: str,
                      event_type: str, note: str,
                      annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An ``events.k8s.io/v1`` Event regarding a Deployment, with what the API server requires."""
    regarding = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                 "namespace": namespace}
    if deployment_uid:
        # `kubectl describe deployment` selects Events by the involved object's uid: without
        # it the Event exists but is not shown there.
        regarding["uid"] = deployment_uid
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": EVENT_API_VERSION,
        "kind": "Event",
        "metadata": metadata,
        "eventTime": micro_time(at),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": reporting_instance[:REPORTING_INSTANCE_MAX_CHARS],
        "action": action,
        "reason": reason,
        "type": event_type,
        "note": clip_utf8(note, EVENT_NOTE_MAX_BYTES),
        "regarding": regarding,
    }


def event_name(*, namespace: str, deployment: str, revision: int, replicaset: str,
               deployment_uid: str = "") -> str:
    """``payments-api.rev2.3f0c9d1e2a4b``: the same for the same incident, a valid DNS subdomain.

    The hash covers the whole incident, the Deployment's uid included: a Deployment created
    again under the same name gets Events of its own instead of a 409 on the old one's. It also
    keeps names distinct when a long Deployment name is cut to fit 253 characters.
    """
    key = f"{namespace}/{deployment}/{revision}/{replicaset}"
    if deployment_uid:
        key += f"/{deployment_uid}"
    return _named(deployment, f"rev{revision}", key)


def _named(deployment: str, kind: str, key: str) -> str:
    """``DEPLOYMENT.KIND.HASH``: a valid DNS subdomain, the same for the same ``key``."""
    digest = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:NAME_HASH_CHARS]
    suffix = f".{kind}.{digest}"
    stem = _dns_subdomain(deployment)[: NAME_MAX_CHARS - len(suffix)].rstrip("-.")
    return (stem or "deployment") + suffix


def _dns_subdomain(text: str) -> str:
    """Lower-case labels of ``[a-z0-9-]`` that start and end alphanumeric, joined by dots.

    Deployment names already are DNS subdomains and come out unchanged.
    """
    labels = (_LABEL_INVALID.sub("-", label.lower()).strip("-") for label in text.split("."))
    return ".".join(label for label in labels if label)


def clip_utf8(text: str, max_bytes: int) -> str:
    """At most ``max_bytes`` of UTF-8, cut on a character boundary, ending in an ellipsis when
    something was cut. Characters that cannot be encoded (lone surrogates) become ``?``."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= max_bytes:
        return encoded.decode("utf-8")
    room = max_bytes - len(ELLIPSIS.encode("utf-8"))
    return encoded[:room].decode("utf-8", errors="ignore") + ELLIPSIS


def _required_str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"an incident record needs a non-empty {key!r}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# Reading Events back (pure).


def parse_notified_revision(item: Any) -> NotifiedRevision | None:
    """The incident an Event of ours stands for; None for anything else or anything odd."""
    if not isinstance(item, dict):
        return None
    if item.get("reportingController") != REPORTING_CONTROLLER or item.get("reason") != REASON:
        return None
    metadata = _mapping(item.get("metadata"))
    regarding = _mapping(item.get("regarding"))
    if regarding.get("kind") != "Deployment":
        return None
    deployment = _text(regarding.get("name"))
    namespace = _text(metadata.get("namespace")) or _text(regarding.get("namespace"))
    if not deployment or not namespace:
        return None
    annotations = _mapping(metadata.get("annotations"))
    note_match = _NOTE_REVISION.search(_text(item.get("note")) or "")
    revision_text = _text(annotations.get(REVISION_ANNOTATION))
    if revision_text is None or not _DIGITS.fullmatch(revision_text):
        revision_text = note_match.group(1) if note_match else None
    if revision_text is None:
        return None
    replicaset = (_text(annotations.get(REPLICASET_ANNOTATION))
                  or (note_match.group(2) if note_match else None) or "")
    # The server fills creationTimestamp on every object; eventTime is ours.
    notified_at = (parse_timestamp(item.get("eventTime"))
                   or parse_timestamp(metadata.get("creationTimestamp")))
    if notified_at is None:
        return None
    return NotifiedRevision(namespace=namespace, deployment=deployment,
                            revision=int(revision_text), replicaset=replicaset,
                            notified_at=notified_at,
                            deployment_uid=(_text(annotations.get(DEPLOYMENT_UID_ANNOTATION))
                                            or _text(regarding.get("uid")) or ""),
                            replicaset_uid=_text(annotations.get(REPLICASET_UID_ANNOTATION)) or "")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------------------------
# The recorder.


class EventRecorder:
    """Writes incident Events and lists the ones already written; failures are ``SourceError``."""

    def __init__(self, *, api: kubernetes.client.ApiClient, timeout: float,
                 reporting_instance: str) -> None:
        self._api = api
        self._timeout = timeout
        self._reporting_instance = reporting_instance

    def body_for(self, *, incident_record: Mapping[str, Any], note: str) -> dict[str, Any]:
        """``event_body`` with this replica as the reporting instance."""
        return event_body(incident_record=incident_record, note=note,
                          reporting_instance=self._reporting_instance)

    def verification_body(self, **fields: Any) -> dict[str, Any]:
        """``verification_event_body`` with this replica as the reporting instance."""
        return verification_event_body(**fields, reporting_instance=self._reporting_instance)

    async def send(self, payload: Mapping[str, Any]) -> None:
        """Create the Event ``payload`` (an ``event_body``); an existing one counts as sent.

        429, 5xx and transport failures raise a retryable ``SourceError``, other 4xx (a 422
        from validation, a 403) a non-retryable one.
        """
        metadata = _mapping(payload.get("metadata"))
        namespace, name = _text(metadata.get("namespace")), _text(metadata.get("name"))
        if namespace is None or name is None:
            raise SourceError(SOURCE, "invalid_payload",
                              "an Event payload without metadata.namespace and metadata.name",
                              retryable=False)
        try:
            await asyncio.to_thread(
                request, self._api, "POST", _events_path(namespace), body=dict(payload),
                timeout=self._timeout, what=f"creating event {name!r} in namespace {namespace!r}")
        except SourceError as exc:
            # The name is the incident's: a 409 means this very Event was written before.
            if exc.status == 409:
                log.debug("event.already_exists", namespace=namespace, name=name)
                return
            raise
        log.debug("event.created", namespace=namespace, name=name)

    async def notified_revisions(self, namespace: str) -> list[NotifiedRevision]:
        """The revisions our Events in ``namespace`` say were notified, oldest Event first per
        revision; Events of other controllers and malformed items are skipped."""
        return await asyncio.to_thread(self._notified_revisions, namespace)

    def _notified_revisions(self, namespace: str) -> list[NotifiedRevision]:
        body = request(self._api, "GET", _events_path(namespace),
                       query=(("fieldSelector", f"reason={REASON}"),), timeout=self._timeout,
                       what=f"listing events in namespace {namespace!r}")
        items = parse_list(body, kind=EVENT_LIST_KIND)
        earliest: dict[tuple[str, str, int, str], NotifiedRevision] = {}
        for item in items:
            notified = parse_notified_revision(item)
            if notified is None:
                continue
            key = notified.key
            if key not in earliest or notified.notified_at < earliest[key].notified_at:
                earliest[key] = notified
        # Other controllers' Events, malformed ones, and later Events of a revision already seen.
        ignored = len(items) - len(earliest)
        if ignored:
            log.debug("event.items_ignored", namespace=namespace, ignored=ignored)
        return list(earliest.values())


def _events_path(namespace: str) -> str:
    return namespaced_path(group=EVENT_GROUP, version=EVENT_VERSION, resource=EVENT_RESOURCE,
                           namespace=namespace)
