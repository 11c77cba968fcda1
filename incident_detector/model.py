"""The project's own plain data: what adapters produce and the correlator consumes.

Nothing past an adapter sees a raw dict from Loki or an object of the Kubernetes client: every
source turns its wire format into these frozen dataclasses. They are small on purpose (a few
hundred bytes each), because a tick may hold thousands of them.

They live in one module per domain (``model_cluster``: the cluster's objects; ``model_alerts``:
Alertmanager's alerts; ``model_changes``: the change timeline; ``model_incidents``: incidents and
their evidence); every name is re-exported here, so ``from .model import X`` is the one way in.
"""

from __future__ import annotations

from .model_cluster import (  # noqa: F401
    REVISION_ANNOTATION, ARGOCD_DEFAULT_NAMESPACE, REVISION_HISTORY_ANNOTATION, EnvVar, Container,
    PodTemplate, ReplicaSet, GitOpsTool, GitOpsOwner, RolloutStatus, Deployment, PodProblem, Pod,
    WarningEvent, ErrorSample, ErrorCounts, LogLine, Baseline, Service,
)
from .model_alerts import (  # noqa: F401
    Pairs, Alert, AlertTarget, alert_key, Unmapped, AlertNotification,
)
from .model_changes import (  # noqa: F401
    CHANGE_KINDS, CREATED, UPDATED, DELETED, FieldChange, Change,
)
from .model_incidents import (  # noqa: F401
    Signal, Priority, IncidentKind, RolloutStartSource, Attribution, ErrorSignature,
    TemplateChange, Cause, BlastEntry, CausalNode, CausalEdge, Causality, SIGNATURE_GAPS, Evidence,
    RemediationView, Incident, LastRollout, AlertIncident, ChangeIncident, change_incident_key,
)

__all__ = [
    "REVISION_ANNOTATION",
    "ARGOCD_DEFAULT_NAMESPACE",
    "REVISION_HISTORY_ANNOTATION",
    "EnvVar",
    "Container",
    "PodTemplate",
    "ReplicaSet",
    "GitOpsTool",
    "GitOpsOwner",
    "RolloutStatus",
    "Deployment",
    "PodProblem",
    "Pod",
    "WarningEvent",
    "ErrorSample",
    "ErrorCounts",
    "LogLine",
    "Baseline",
    "Service",
    "Pairs",
    "Alert",
    "AlertTarget",
    "alert_key",
    "Unmapped",
    "AlertNotification",
    "CHANGE_KINDS",
    "CREATED",
    "UPDATED",
    "DELETED",
    "FieldChange",
    "Change",
    "Signal",
    "Priority",
    "IncidentKind",
    "RolloutStartSource",
    "Attribution",
    "ErrorSignature",
    "TemplateChange",
    "Cause",
    "BlastEntry",
    "CausalNode",
    "CausalEdge",
    "Causality",
    "SIGNATURE_GAPS",
    "Evidence",
    "RemediationView",
    "Incident",
    "LastRollout",
    "AlertIncident",
    "ChangeIncident",
    "change_incident_key",
]
