"""May this action run? One pure function decides, for the loop and for an approval click alike.

``decide(proposal, policy=..., history=..., now=...)`` answers with one of four outcomes, always
with a one-sentence ``reason`` and a short machine name, ``guardrail``, for the rule that decided:

- ``notify_only``: ``REMEDIATION_MODE=off`` (checked first: with remediation off no guardrail is
  even consulted, and nothing can ever be ``act`` or ``ask``), or in ``auto`` mode a confidence
  below ``APPROVAL_CONFIDENCE`` (or no confidence at all);
- ``refuse``: a guardrail said no. A refusal beats everything below it: the confidence, the mode
  and an approval. The guardrails, in the order they are checked (the first that refuses is the
  one reported):

  ========================  ===============================================================
  ``own_deployment``        the detector's own Deployment (``SELF_DEPLOYMENT`` in
                            ``SELF_NAMESPACE``; in every namespace when that is unknown)
  ``excluded_namespace``    a namespace of ``EXCLUDED_NAMESPACES``
  ``namespace_not_allowed`` not in ``ALLOWED_NAMESPACES`` (empty: every watched namespace)
  ``action_not_allowed``    not in ``ALLOWED_ACTIONS``
  ``gitops``                managed by Argo CD or Flux, for an action that changes the
                            Deployment object (their tool would revert it); deleting pods is
                            not reverted by them and stays possible, and so is a rollback of
                            an Argo CD application when the detector may use Argo CD's API
                            (``ARGOCD_URL`` and ``ARGOCD_TOKEN``): it goes through the
                            application's history, not the Deployment
  ``paused``                the Deployment is paused: someone holds it on purpose
  ``scale_range``           a scale outside ``SCALE_MIN..SCALE_MAX``
  ``approver``              a Slack approval by someone not in ``SLACK_APPROVERS`` (a
                            dashboard user is authenticated by the dashboard's own token
                            or proxy header instead)
  ``cooldown``              an action on the same Deployment less than the cooldown ago:
                            ``REMEDIATION_COOLDOWN_MINUTES``, or the rule's
                            ``cooldown_seconds`` when that is longer
  ``hourly_cap``            ``MAX_ACTIONS_PER_HOUR`` actions in the last hour, all Deployments
  ========================  ===============================================================

- ``ask``: ``approve`` mode (whatever the confidence: every incident gets its buttons), or
  ``auto`` mode with ``APPROVAL_CONFIDENCE <= confidence < AUTO_CONFIDENCE``;
- ``act``: ``auto`` mode with ``confidence >= AUTO_CONFIDENCE``, or an ``ask`` that a permitted
  person approved (``approved_by``). An approval turns only an ``ask`` into ``act``: it never
  overrides a refusal, and it does not make an action that nobody was asked about (``notify_only``)
  run.

A rule that chose the action can only make the guardrails stricter, never looser: its action is
checked against ``ALLOWED_ACTIONS`` like any other, and its cooldown (``cooldown_seconds``) only
counts when it is longer than ``REMEDIATION_COOLDOWN_MINUTES`` (the reason says which one
applied); a shorter one changes nothing.

The history is the actions already run (or started), dry-run or not. An entry counts for the
cooldown and the hourly cap unless it was a dry run and the policy is not: a rehearsal with
``DRY_RUN=true`` changed nothing and must not block the first real action, while a dry-run policy
counts everything so the rehearsal shows where production would stop. Entries dated in the future
(clock skew) count, as the safe side. The cooldown ends exactly ``REMEDIATION_COOLDOWN_MINUTES``
after the last action; the hour is ``(now - 1 h, now]``.

Every decision carries ``dry_run`` from the policy, so whoever executes it knows how.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Literal

from ..config import Settings
from ..model import GitOpsOwner, GitOpsTool

HOUR = timedelta(hours=1)


class Action(str, Enum):
    ROLLBACK = "rollback"
    RESTART = "restart"
    PAUSE = "pause"
    SCALE = "scale"
    DELETE_POD = "delete-pod"
    DELETE_STUCK_PODS = "delete-stuck-pods"


# Actions that write the Deployment object, which a GitOps controller would put back.
CHANGES_DEPLOYMENT = frozenset({Action.ROLLBACK, Action.RESTART, Action.PAUSE, Action.SCALE})


class Outcome(str, Enum):
    ACT = "act"
    ASK = "ask"
    NOTIFY_ONLY = "notify_only"
    REFUSE = "refuse"


Mode = Literal["off", "approve", "auto"]


@dataclass(frozen=True, slots=True)
class Proposal:
    """An action proposed for an incident's Deployment, with what the guardrails look at."""

    action: Action
    namespace: str
    deployment: str
    # The incident's confidence in [0, 1]; None when it was not scored.
    confidence: float | None
    paused: bool = False
    gitops: GitOpsOwner | None = None
    # The replica count of a scale, and only of a scale.
    scale_to: int | None = None
    # Who approved it, for a click; None when the loop proposes.
    approved_by: str | None = None
    # The approver was authenticated by the dashboard (DASHBOARD_TOKEN or AUTH_PROXY_HEADER), a
    # write permission of its own: SLACK_APPROVERS lists Slack users, and applies to Slack clicks.
    approver_authenticated: bool = False
    # The cooldown of the rule that chose the action, in seconds (None: the rule set none). It
    # only counts when longer than the policy's: a rule can make the cooldown stricter, not
    # shorter. ``math.inf``: never again on this Deployment within the history looked at.
    cooldown_seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action(self.action))
        if (self.action == Action.SCALE) != (self.scale_to is not None):
            raise ValueError("scale_to is required for a scale and only for a scale")
        cooldown = self.cooldown_seconds
        if cooldown is not None and (isinstance(cooldown, bool)
                                     or not isinstance(cooldown, (int, float))
                                     or math.isnan(cooldown) or cooldown < 0):
            raise ValueError(f"cooldown_seconds must be a number of seconds >= 0, not "
                             f"{cooldown!r}")


@dataclass(frozen=True, slots=True)
class Policy:
    mode: Mode = "off"
    auto_confidence: float = 0.8
    approval_confidence: float = 0.6
    # Where actions may run (already resolved: the watched namespaces when not configured).
    allowed_namespaces: frozenset[str] = frozenset()
    excluded_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public"})
    allowed_actions: frozenset[Action] = frozenset({Action.ROLLBACK})
    cooldown: timedelta = timedelta(minutes=30)
    max_actions_per_hour: int = 3
    scale_min: int = 1
    scale_max: int = 20
    dry_run: bool = False
    approvers: frozenset[str] = frozenset()
    self_deployment: str = "incident-detector"
    # None: unknown, so the self_deployment name is refused in every namespace.
    self_namespace: str | None = None
    # Argo CD's API may be used (ARGOCD_URL and ARGOCD_TOKEN): the rollback of a Deployment an
    # Argo CD application manages goes through the application's history.
    argocd: bool = False


@dataclass(frozen=True, slots=True)
class PastAction:
    """An action already run (or started) on a Deployment."""

    namespace: str
    deployment: str
    action: Action
    at: datetime
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    outcome: Outcome
    # One sentence a person reads in Slack and in the audit trail.
    reason: str
    # Short machine name of the rule that decided (a guardrail's name for a refusal).
    guardrail: str
    dry_run: bool


def policy_from_settings(settings: Settings) -> Policy:
    return Policy(
        mode=settings.remediation_mode,
        auto_confidence=settings.auto_confidence,
        approval_confidence=settings.approval_confidence,
        allowed_namespaces=frozenset(settings.allowed_namespaces or settings.namespace),
        excluded_namespaces=frozenset(settings.excluded_namespaces),
        allowed_actions=frozenset(Action(name) for name in settings.allowed_actions),
        cooldown=timedelta(minutes=settings.remediation_cooldown_minutes),
        max_actions_per_hour=settings.max_actions_per_hour,
        scale_min=settings.scale_min,
        scale_max=settings.scale_max,
        dry_run=settings.dry_run,
        approvers=frozenset(settings.slack_approvers),
        self_deployment=settings.self_deployment,
        self_namespace=settings.self_namespace,
        argocd=settings.argocd_url is not None and settings.argocd_token is not None,
    )


def decide(proposal: Proposal, *, policy: Policy, history: Iterable[PastAction],
           now: datetime) -> GuardrailDecision:
    """Whether ``proposal`` may run now: act, ask, notify only, or refuse, and why."""

    def outcome(kind: Outcome, guardrail: str, reason: str) -> GuardrailDecision:
        return GuardrailDecision(kind, reason, guardrail, policy.dry_run)

    if policy.mode == "off":
        return outcome(Outcome.NOTIFY_ONLY, "mode_off",
                       "Remediation is off (REMEDIATION_MODE=off): the detector only tells.")
    refusal = _refusal(proposal, policy, tuple(history), now)
    if refusal is not None:
        guardrail, reason = refusal
        return outcome(Outcome.REFUSE, guardrail, reason)

    what = f"{proposal.action.value} of {proposal.namespace}/{proposal.deployment}"
    confidence = proposal.confidence
    if policy.mode == "approve":
        if proposal.approved_by is not None:
            return outcome(Outcome.ACT, "approved",
                           f"The {what} was approved by {proposal.approved_by}.")
        return outcome(Outcome.ASK, "approve_mode",
                       f"The {what} waits for an approval (REMEDIATION_MODE=approve).")
    if confidence is None:
        return outcome(Outcome.NOTIFY_ONLY, "no_confidence",
                       "The incident has no confidence score, so the detector neither acts "
                       "nor asks.")
    if confidence >= policy.auto_confidence:
        return outcome(Outcome.ACT, "auto_confidence",
                       f"Confidence {confidence:.2f} is at least AUTO_CONFIDENCE "
                       f"{policy.auto_confidence:.2f} and every guardrail allows the {what}.")
    if confidence >= policy.approval_confidence:
        if proposal.approved_by is not None:
            return outcome(Outcome.ACT, "approved",
                           f"The {what} was approved by {proposal.approved_by}.")
        return outcome(Outcome.ASK, "below_auto_confidence",
                       f"Confidence {confidence:.2f} is below AUTO_CONFIDENCE "
                       f"{policy.auto_confidence:.2f}: the {what} waits for an approval.")
    return outcome(Outcome.NOTIFY_ONLY, "below_approval_confidence",
                   f"Confidence {confidence:.2f} is below APPROVAL_CONFIDENCE "
                   f"{policy.approval_confidence:.2f}: the detector only tells.")


def _refusal(proposal: Proposal, policy: Policy, history: tuple[PastAction, ...],
             now: datetime) -> tuple[str, str] | None:
    namespace, name, action = proposal.namespace, proposal.deployment, proposal.action
    target = f"{namespace}/{name}"
    if name == policy.self_deployment and policy.self_namespace in (None, namespace):
        return ("own_deployment",
                f"{target} is the detector's own Deployment, which it never acts on.")
    if namespace in policy.excluded_namespaces:
        return ("excluded_namespace",
                f"Namespace {namespace} is in EXCLUDED_NAMESPACES, where the detector never acts.")
    if namespace not in policy.allowed_namespaces:
        return ("namespace_not_allowed",
                f"Namespace {namespace} is not in ALLOWED_NAMESPACES "
                f"({', '.join(sorted(policy.allowed_namespaces)) or 'none'}).")
    if action not in policy.allowed_actions:
        allowed = ", ".join(sorted(a.value for a in policy.allowed_actions)) or "none"
        return ("action_not_allowed",
                f"The action {action.value} is not in ALLOWED_ACTIONS ({allowed}).")
    if proposal.gitops is not None and action in CHANGES_DEPLOYMENT \
            and not through_argocd(action, proposal.gitops, policy):
        return ("gitops", _gitops_reason(target, action, proposal.gitops, policy))
    if proposal.paused:
        return ("paused",
                f"{target} is paused: someone holds it on purpose, so the detector leaves it "
                f"alone.")
    if action == Action.SCALE and proposal.scale_to is not None and not (
            policy.scale_min <= proposal.scale_to <= policy.scale_max):
        return ("scale_range",
                f"Scaling {target} to {proposal.scale_to} replicas is outside SCALE_MIN..SCALE_MAX "
                f"({policy.scale_min}..{policy.scale_max}).")
    if proposal.approved_by is not None and not proposal.approver_authenticated \
            and proposal.approved_by not in policy.approvers:
        return ("approver",
                f"{proposal.approved_by} is not in SLACK_APPROVERS, so the approval does not "
                f"count.")

    counted = [past for past in history if policy.dry_run or not past.dry_run]
    on_target = [past.at for past in counted
                 if past.namespace == namespace and past.deployment == name]
    if on_target:
        last = max(on_target)
        cooldown_reason = _cooldown_reason(policy.cooldown, proposal.cooldown_seconds,
                                           elapsed=now - last)
        if cooldown_reason is not None:
            return ("cooldown", f"{target} was acted on at {last.isoformat()}, {cooldown_reason}")
    in_last_hour = sum(1 for past in counted if past.at > now - HOUR)
    if in_last_hour >= policy.max_actions_per_hour:
        return ("hourly_cap",
                f"{in_last_hour} actions ran in the last hour, as many as "
                f"MAX_ACTIONS_PER_HOUR ({policy.max_actions_per_hour}) allows.")
    return None


def _cooldown_reason(policy_cooldown: timedelta, rule_seconds: float | None, *,
                     elapsed: timedelta) -> str | None:
    """Why the cooldown still holds after ``elapsed`` (None: it is over): the longer of the
    policy's and the rule's, named."""
    policy_seconds = policy_cooldown.total_seconds()
    minutes = policy_seconds / 60
    if rule_seconds is not None and rule_seconds > policy_seconds:
        if elapsed.total_seconds() >= rule_seconds:
            return None
        return (f"less than the rule's cooldown ({rule_seconds / 60:g} minutes, longer than "
                f"REMEDIATION_COOLDOWN_MINUTES {minutes:g}) ago.")
    if elapsed >= policy_cooldown:
        return None
    shorter = "" if rule_seconds is None or rule_seconds >= policy_seconds else (
        f" (the rule's shorter cooldown of {rule_seconds / 60:g} minutes does not shorten it)")
    return f"less than REMEDIATION_COOLDOWN_MINUTES ({minutes:g}) ago{shorter}."


def through_argocd(action: Action, owner: GitOpsOwner | None, policy: Policy) -> bool:
    """Whether ``action`` on a Deployment ``owner`` manages goes through Argo CD's API."""
    return action is Action.ROLLBACK and policy.argocd and owner is not None \
        and owner.tool == GitOpsTool.ARGO_CD


def _gitops_reason(target: str, action: Action, owner: GitOpsOwner, policy: Policy) -> str:
    where = f" in {owner.app_namespace}" if owner.app_namespace else ""
    if owner.tool == GitOpsTool.ARGO_CD:
        head = (f"{target} is managed by the Argo CD application {owner.app}{where}, which would "
                f"revert a {action.value} at its next sync")
        if policy.argocd:  # only a rollback goes through its API
            return (f"{head}: only a rollback goes through Argo CD (the application's history); "
                    f"change it in Git instead.")
        return (f"{head}: roll back through Argo CD application {owner.app} "
                f"({owner.rollback_commands()[0]}) or revert the commit in Git (with ARGOCD_URL "
                f"and ARGOCD_TOKEN set, the detector rolls back through Argo CD itself).")
    # Flux: the Deployment's labels name the Kustomization or HelmRelease that applies it.
    suspend = " or ".join(owner.flux_commands("suspend"))
    resume = " or ".join(owner.flux_commands("resume"))
    return (f"{target} is managed by the {owner.object_name}, which would revert a "
            f"{action.value} at its next reconciliation: suspend it ({suspend}), revert the "
            f"commit in Git, then resume it ({resume}).")
