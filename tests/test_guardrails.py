from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incident_detector.judge.guardrails import (
    Action,
    GuardrailDecision,
    Outcome,
    PastAction,
    Policy,
    Proposal,
    decide,
    policy_from_settings,
)
from incident_detector.config import REMEDIATION_ACTIONS, load_settings
from incident_detector.model import GitOpsOwner, GitOpsTool

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NS = "demo-aiops"
APPROVER = "U012AB3CD"
AUTO = Policy(mode="auto", allowed_namespaces=frozenset({NS, "shop"}),
              allowed_actions=frozenset(Action), approvers=frozenset({APPROVER}),
              self_namespace="ops")
APPROVE = replace(AUTO, mode="approve")
OFF = replace(AUTO, mode="off")
ARGO = GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "argocd")
ARGO_ELSEWHERE = GitOpsOwner(GitOpsTool.ARGO_CD, "payments", "team-a")
FLUX = GitOpsOwner(GitOpsTool.FLUX, "payments", "flux-system")


def proposal(action: Action = Action.ROLLBACK, *, confidence: float | None = 0.9,
             namespace: str = NS, deployment: str = "payments-api", **fields) -> Proposal:
    if action == Action.SCALE:
        fields.setdefault("scale_to", 4)
    return Proposal(action, namespace, deployment, confidence, **fields)


def past(minutes_ago: float, *, deployment: str = "payments-api", namespace: str = NS,
         dry_run: bool = False, action: Action = Action.ROLLBACK) -> PastAction:
    return PastAction(namespace, deployment, action, NOW - timedelta(minutes=minutes_ago), dry_run)


def run(prop: Proposal, policy: Policy = AUTO, history=()) -> GuardrailDecision:
    return decide(prop, policy=policy, history=history, now=NOW)


def outcome(prop: Proposal, policy: Policy = AUTO, history=()) -> tuple[str, str]:
    decision = run(prop, policy, history)
    return decision.outcome.value, decision.guardrail


# Modes and confidence boundaries, with every guardrail allowing.
@pytest.mark.parametrize("policy, confidence, approved_by, expected", [
    # off: never act, never ask, whatever the confidence or an approval.
    (OFF, 1.0, None, ("notify_only", "mode_off")),
    (OFF, 0.0, None, ("notify_only", "mode_off")),
    (OFF, None, None, ("notify_only", "mode_off")),
    (OFF, 1.0, APPROVER, ("notify_only", "mode_off")),
    # approve: every incident asks, whatever its confidence; an approval acts.
    (APPROVE, 1.0, None, ("ask", "approve_mode")),
    (APPROVE, 0.0, None, ("ask", "approve_mode")),
    (APPROVE, None, None, ("ask", "approve_mode")),
    (APPROVE, 0.1, APPROVER, ("act", "approved")),
    (APPROVE, None, APPROVER, ("act", "approved")),
    # auto: act at AUTO_CONFIDENCE and above, ask from APPROVAL_CONFIDENCE, else tell.
    (AUTO, 1.0, None, ("act", "auto_confidence")),
    (AUTO, 0.8, None, ("act", "auto_confidence")),
    (AUTO, 0.7999, None, ("ask", "below_auto_confidence")),
    (AUTO, 0.6, None, ("ask", "below_auto_confidence")),
    (AUTO, 0.5999, None, ("notify_only", "below_approval_confidence")),
    (AUTO, 0.0, None, ("notify_only", "below_approval_confidence")),
    (AUTO, None, None, ("notify_only", "no_confidence")),
    (AUTO, 0.7, APPROVER, ("act", "approved")),
    (AUTO, 0.6, APPROVER, ("act", "approved")),
    (AUTO, 0.9, APPROVER, ("act", "auto_confidence")),
    # An approval does not make an action nobody was asked about run.
    (AUTO, 0.5, APPROVER, ("notify_only", "below_approval_confidence")),
    (AUTO, None, APPROVER, ("notify_only", "no_confidence")),
    # An empty ask band: auto only acts or tells.
    (replace(AUTO, approval_confidence=0.8), 0.79, None,
     ("notify_only", "below_approval_confidence")),
    (replace(AUTO, approval_confidence=0.8), 0.8, None, ("act", "auto_confidence")),
    # Thresholds at the ends of [0, 1].
    (replace(AUTO, auto_confidence=0.0, approval_confidence=0.0), 0.0, None,
     ("act", "auto_confidence")),
    (replace(AUTO, auto_confidence=1.0), 0.99, None, ("ask", "below_auto_confidence")),
    (replace(AUTO, auto_confidence=1.0), 1.0, None, ("act", "auto_confidence")),
])
def test_modes_and_confidence(policy, confidence, approved_by, expected):
    assert outcome(proposal(confidence=confidence, approved_by=approved_by), policy) == expected


# One row per guardrail: each refuses alone, in auto mode at full confidence.
@pytest.mark.parametrize("prop, policy, history, guardrail", [
    # The detector's own Deployment, in its namespace, or anywhere when that is unknown.
    (proposal(deployment="incident-detector", namespace="shop"),
     replace(AUTO, self_namespace="shop"), (), "own_deployment"),
    (proposal(deployment="incident-detector"), replace(AUTO, self_namespace=None), (),
     "own_deployment"),
    (proposal(deployment="watcher", namespace="shop"),
     replace(AUTO, self_deployment="watcher", self_namespace=None), (), "own_deployment"),
    # Namespaces.
    (proposal(namespace="kube-system"),
     replace(AUTO, allowed_namespaces=frozenset({"kube-system"})), (), "excluded_namespace"),
    (proposal(namespace="kube-public"),
     replace(AUTO, allowed_namespaces=frozenset({"kube-public"})), (), "excluded_namespace"),
    (proposal(namespace="other"), AUTO, (), "namespace_not_allowed"),
    (proposal(), replace(AUTO, allowed_namespaces=frozenset()), (), "namespace_not_allowed"),
    # Actions.
    (proposal(Action.RESTART), replace(AUTO, allowed_actions=frozenset({Action.ROLLBACK})), (),
     "action_not_allowed"),
    (proposal(), replace(AUTO, allowed_actions=frozenset({Action.RESTART})), (),
     "action_not_allowed"),
    (proposal(Action.DELETE_STUCK_PODS),
     replace(AUTO, allowed_actions=frozenset({Action.DELETE_POD})), (), "action_not_allowed"),
    # GitOps: every action that writes the Deployment.
    (proposal(gitops=ARGO), AUTO, (), "gitops"),
    (proposal(Action.RESTART, gitops=FLUX), AUTO, (), "gitops"),
    (proposal(Action.PAUSE, gitops=ARGO), AUTO, (), "gitops"),
    (proposal(Action.SCALE, gitops=FLUX), AUTO, (), "gitops"),
    # Paused: every action, pod deletions too.
    (proposal(paused=True), AUTO, (), "paused"),
    (proposal(Action.DELETE_POD, paused=True), AUTO, (), "paused"),
    (proposal(Action.PAUSE, paused=True), AUTO, (), "paused"),
    # Scale range, just outside each end.
    (proposal(Action.SCALE, scale_to=0), AUTO, (), "scale_range"),
    (proposal(Action.SCALE, scale_to=21), AUTO, (), "scale_range"),
    (proposal(Action.SCALE, scale_to=3), replace(AUTO, scale_min=4, scale_max=6), (),
     "scale_range"),
    # Approver.
    (proposal(approved_by="U999"), AUTO, (), "approver"),
    (proposal(approved_by=APPROVER), replace(AUTO, approvers=frozenset()), (), "approver"),
    (proposal(approved_by=""), AUTO, (), "approver"),
    # Cooldown: any action on the same Deployment, until exactly the cooldown has passed.
    (proposal(), AUTO, (past(0),), "cooldown"),
    (proposal(), AUTO, (past(29.99),), "cooldown"),
    (proposal(), AUTO, (past(-5),), "cooldown"),  # in the future: clock skew, safe side
    (proposal(Action.RESTART), AUTO, (past(10, action=Action.DELETE_POD),), "cooldown"),
    (proposal(), AUTO, (past(100), past(10)), "cooldown"),
    (proposal(), replace(AUTO, dry_run=True), (past(10, dry_run=True),), "cooldown"),
    (proposal(), replace(AUTO, dry_run=True), (past(10),), "cooldown"),
    # Hourly cap: all Deployments, (now - 1 h, now].
    (proposal(), AUTO, tuple(past(50, deployment=f"d{i}") for i in range(3)), "hourly_cap"),
    (proposal(), AUTO, tuple(past(59.99, deployment=f"d{i}") for i in range(3)), "hourly_cap"),
    (proposal(), replace(AUTO, max_actions_per_hour=1), (past(40, namespace="shop"),),
     "hourly_cap"),
    (proposal(), replace(AUTO, dry_run=True),
     tuple(past(30, deployment=f"d{i}", dry_run=i % 2 == 0) for i in range(3)), "hourly_cap"),
])
def test_each_guardrail_refuses(prop, policy, history, guardrail):
    decision = run(prop, policy, history)
    assert (decision.outcome, decision.guardrail) == (Outcome.REFUSE, guardrail), decision.reason


# The other side of each edge: nothing refuses.
@pytest.mark.parametrize("prop, policy, history", [
    # A Deployment of the detector's name in another namespace than its own.
    (proposal(deployment="incident-detector"), AUTO, ()),
    (proposal(deployment="incident-detector-2"), replace(AUTO, self_namespace=None), ()),
    (proposal(namespace="shop"), AUTO, ()),
    # Deleting pods is not reverted by a GitOps tool.
    (proposal(Action.DELETE_POD, gitops=ARGO), AUTO, ()),
    (proposal(Action.DELETE_STUCK_PODS, gitops=FLUX), AUTO, ()),
    # Scale range, at each end.
    (proposal(Action.SCALE, scale_to=1), AUTO, ()),
    (proposal(Action.SCALE, scale_to=20), AUTO, ()),
    (proposal(Action.SCALE, scale_to=0), replace(AUTO, scale_min=0), ()),
    # Cooldown: exactly over, another Deployment, the same name in another namespace.
    (proposal(), AUTO, (past(30),)),
    (proposal(), AUTO, (past(10, deployment="other"),)),
    (proposal(), AUTO, (past(10, namespace="shop"),)),
    (proposal(), replace(AUTO, cooldown=timedelta(0)), (past(0),)),
    # A rehearsal does not block the first real action.
    (proposal(), AUTO, (past(1, dry_run=True),)),
    (proposal(), AUTO, tuple(past(5 + i, deployment=f"d{i}", dry_run=True) for i in range(10))),
    # Hourly cap: one below it, and an action exactly an hour ago no longer counts.
    (proposal(), AUTO, tuple(past(50, deployment=f"d{i}") for i in range(2))),
    (proposal(), AUTO, tuple(past(60, deployment=f"d{i}") for i in range(3))),
    (proposal(), AUTO, (past(60, deployment="d0"), past(61, deployment="d1"),
                        past(59, deployment="d2"), past(58, deployment="d3"))),
])
def test_edges_that_allow(prop, policy, history):
    assert outcome(prop, policy, history) == ("act", "auto_confidence")


# Precedence: a refusal beats the confidence, the mode and an approval; the first guardrail
# in the documented order is the one reported.
@pytest.mark.parametrize("prop, policy, history, expected", [
    (proposal(paused=True, confidence=1.0), AUTO, (), ("refuse", "paused")),
    (proposal(paused=True, confidence=0.1), AUTO, (), ("refuse", "paused")),
    (proposal(paused=True, confidence=None), AUTO, (), ("refuse", "paused")),
    (proposal(paused=True), APPROVE, (), ("refuse", "paused")),
    (proposal(paused=True, approved_by=APPROVER), APPROVE, (), ("refuse", "paused")),
    (proposal(gitops=ARGO, approved_by=APPROVER, confidence=0.7), AUTO, (), ("refuse", "gitops")),
    (proposal(approved_by=APPROVER), APPROVE, (past(1),), ("refuse", "cooldown")),
    # Mode off comes before every guardrail: it does not even consult them.
    (proposal(paused=True), OFF, (), ("notify_only", "mode_off")),
    (proposal(namespace="kube-system"), OFF, (), ("notify_only", "mode_off")),
    # Order among guardrails.
    (proposal(deployment="incident-detector", namespace="kube-system", paused=True),
     replace(AUTO, self_namespace=None), (), ("refuse", "own_deployment")),
    (proposal(namespace="kube-system"), AUTO, (), ("refuse", "excluded_namespace")),
    (proposal(Action.RESTART, namespace="other"), replace(AUTO, allowed_actions=frozenset()), (),
     ("refuse", "namespace_not_allowed")),
    (proposal(gitops=ARGO), replace(AUTO, allowed_actions=frozenset()), (),
     ("refuse", "action_not_allowed")),
    (proposal(gitops=FLUX, paused=True), AUTO, (), ("refuse", "gitops")),
    (proposal(Action.SCALE, scale_to=99, paused=True), AUTO, (), ("refuse", "paused")),
    (proposal(Action.SCALE, scale_to=99, approved_by="U999"), AUTO, (), ("refuse", "scale_range")),
    (proposal(approved_by="U999"), AUTO, (past(1),), ("refuse", "approver")),
    (proposal(), AUTO, (past(1), past(2, deployment="b"), past(3, deployment="c")),
     ("refuse", "cooldown")),
])
def test_precedence(prop, policy, history, expected):
    assert outcome(prop, policy, history) == expected


def test_gitops_refusal_names_the_tool_and_points_to_it():
    argo = run(proposal(gitops=ARGO)).reason
    assert "Argo CD application payments" in argo
    assert "roll back through Argo CD application payments" in argo
    assert "argocd app rollback payments)" in argo
    elsewhere = run(proposal(gitops=ARGO_ELSEWHERE)).reason
    assert "argocd app rollback team-a/payments" in elsewhere
    flux = run(proposal(Action.RESTART, gitops=FLUX)).reason
    assert "Flux Kustomization or HelmRelease flux-system/payments" in flux
    assert "restart" in flux
    assert "flux suspend kustomization payments -n flux-system" in flux
    assert "flux suspend helmrelease payments -n flux-system" in flux
    assert "revert the commit in Git, then resume it (flux resume kustomization payments " \
           "-n flux-system" in flux
    # Without its namespace, the commands name the object alone.
    bare = run(proposal(gitops=GitOpsOwner(GitOpsTool.FLUX, "shop"))).reason
    assert "flux suspend kustomization shop or" in bare and " -n " not in bare
    # The kind of the object, when its labels say it, names exactly one object.
    release = GitOpsOwner(GitOpsTool.FLUX, "payments", "flux-system", flux_kind="helmrelease")
    exact = run(proposal(gitops=release)).reason
    assert "Flux HelmRelease flux-system/payments" in exact
    assert "(flux suspend helmrelease payments -n flux-system)" in exact
    assert "kustomization" not in exact


ARGOCD_API = replace(AUTO, argocd=True)


@pytest.mark.parametrize(("prop", "policy", "expected"), [
    # With Argo CD's API, the rollback of an Argo CD application's Deployment goes through it...
    (proposal(gitops=ARGO), ARGOCD_API, ("act", "auto_confidence")),
    (proposal(gitops=ARGO_ELSEWHERE), ARGOCD_API, ("act", "auto_confidence")),
    (proposal(gitops=ARGO, confidence=0.7), ARGOCD_API, ("ask", "below_auto_confidence")),
    (proposal(gitops=ARGO), replace(APPROVE, argocd=True), ("ask", "approve_mode")),
    (proposal(gitops=ARGO, approved_by=APPROVER), replace(APPROVE, argocd=True),
     ("act", "approved")),
    # ...still within every other guardrail...
    (proposal(gitops=ARGO, paused=True), ARGOCD_API, ("refuse", "paused")),
    (proposal(gitops=ARGO, namespace="kube-system"), ARGOCD_API,
     ("refuse", "excluded_namespace")),
    (proposal(gitops=ARGO), replace(ARGOCD_API, allowed_actions=frozenset({Action.RESTART})),
     ("refuse", "action_not_allowed")),
    (proposal(gitops=ARGO), replace(ARGOCD_API, mode="off"), ("notify_only", "mode_off")),
    # ...while any other write to that Deployment is still refused,
    (proposal(Action.RESTART, gitops=ARGO), ARGOCD_API, ("refuse", "gitops")),
    (proposal(Action.PAUSE, gitops=ARGO), ARGOCD_API, ("refuse", "gitops")),
    (proposal(Action.SCALE, gitops=ARGO), ARGOCD_API, ("refuse", "gitops")),
    # deleting pods stays possible,
    (proposal(Action.DELETE_POD, gitops=ARGO), ARGOCD_API, ("act", "auto_confidence")),
    # and Flux is not Argo CD: its rollback stays advice.
    (proposal(gitops=FLUX), ARGOCD_API, ("refuse", "gitops")),
    (proposal(Action.RESTART, gitops=FLUX), ARGOCD_API, ("refuse", "gitops")),
    # Without the API, the rollback of an Argo CD application's Deployment is refused.
    (proposal(gitops=ARGO), AUTO, ("refuse", "gitops")),
    # A Deployment no GitOps tool manages is not concerned.
    (proposal(), ARGOCD_API, ("act", "auto_confidence")),
])
def test_argocd_api_lets_only_the_rollback_of_an_argocd_deployment_through(prop, policy,
                                                                           expected):
    decision = run(prop, policy)
    assert (decision.outcome.value, decision.guardrail) == expected, decision.reason


def test_argocd_refusals_say_what_to_do():
    without = run(proposal(gitops=ARGO)).reason
    assert "ARGOCD_URL and ARGOCD_TOKEN" in without and "argocd app rollback payments" in without
    restart = run(proposal(Action.RESTART, gitops=ARGO), ARGOCD_API).reason
    assert "only a rollback goes through Argo CD" in restart
    assert "restart" in restart and "argocd app rollback" not in restart


@pytest.mark.parametrize(("environ", "argocd"), [
    ({}, False),
    ({"ARGOCD_URL": "https://argocd.example", "ARGOCD_TOKEN": "t0k3n"}, True),
    ({"ARGOCD_URL": "", "ARGOCD_TOKEN": ""}, False),
])
def test_policy_from_settings_turns_argocd_on_with_its_url_and_token(environ, argocd):
    settings = load_settings({"LOKI_URL": "http://loki:3100", "NAMESPACE": NS, **environ})
    assert policy_from_settings(settings).argocd is argocd


def test_reasons_say_what_decided():
    assert "kube-system" in run(proposal(namespace="kube-system")).reason
    assert "ALLOWED_ACTIONS (rollback)" in run(
        proposal(Action.PAUSE), replace(AUTO, allowed_actions=frozenset({Action.ROLLBACK}))).reason
    assert "1..20" in run(proposal(Action.SCALE, scale_to=50)).reason
    assert "MAX_ACTIONS_PER_HOUR (3)" in run(
        proposal(), AUTO, tuple(past(5, deployment=f"d{i}") for i in range(3))).reason
    assert "REMEDIATION_COOLDOWN_MINUTES (30)" in run(proposal(), AUTO, (past(5),)).reason
    assert "0.80" in run(proposal(confidence=0.85)).reason
    assert "U012AB3CD" in run(proposal(approved_by=APPROVER), APPROVE).reason


def test_dry_run_is_carried_on_every_outcome():
    dry = replace(AUTO, dry_run=True)
    for prop, policy in [(proposal(), dry), (proposal(confidence=0.7), dry),
                         (proposal(confidence=0.1), dry), (proposal(paused=True), dry),
                         (proposal(), replace(dry, mode="off"))]:
        assert run(prop, policy).dry_run is True
    assert run(proposal()).dry_run is False


def test_proposal_takes_a_scale_target_only_for_a_scale():
    assert proposal(Action.SCALE, scale_to=3).scale_to == 3
    assert Proposal("restart", NS, "x", 0.5).action is Action.RESTART
    with pytest.raises(ValueError):
        Proposal(Action.SCALE, NS, "x", 0.5)
    with pytest.raises(ValueError):
        Proposal(Action.ROLLBACK, NS, "x", 0.5, scale_to=2)
    with pytest.raises(ValueError):
        Proposal("nuke", NS, "x", 0.5)


# A rule chose the action: it can only make the guardrails stricter, never looser.
RULE_HOUR = 3600.0


@pytest.mark.parametrize("prop, policy, history, expected", [
    # Its action is checked against ALLOWED_ACTIONS like any other.
    (proposal(Action.RESTART, cooldown_seconds=RULE_HOUR),
     replace(AUTO, allowed_actions=frozenset({Action.ROLLBACK})), (),
     ("refuse", "action_not_allowed")),
    (proposal(Action.DELETE_POD, cooldown_seconds=0.0),
     replace(AUTO, allowed_actions=frozenset({Action.ROLLBACK, Action.RESTART})), (),
     ("refuse", "action_not_allowed")),
    # A shorter cooldown than the policy's does not shorten it (30 minutes here).
    (proposal(cooldown_seconds=60.0), AUTO, (past(10),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=0.0), AUTO, (past(29.99),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=1799.0), AUTO, (past(29.99),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=60.0), AUTO, (past(30),), ("act", "auto_confidence")),
    # The same as the policy's changes nothing.
    (proposal(cooldown_seconds=1800.0), AUTO, (past(29.99),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=1800.0), AUTO, (past(30),), ("act", "auto_confidence")),
    # A longer one lengthens it, until exactly its end.
    (proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(45),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(59.99),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(60),), ("act", "auto_confidence")),
    (proposal(cooldown_seconds=RULE_HOUR), replace(AUTO, cooldown=timedelta(0)), (past(1),),
     ("refuse", "cooldown")),
    (proposal(Action.RESTART, cooldown_seconds=RULE_HOUR), AUTO,
     (past(50, action=Action.DELETE_POD),), ("refuse", "cooldown")),
    (proposal(cooldown_seconds=float("inf")), AUTO, (past(24 * 60),), ("refuse", "cooldown")),
    # Only on its own Deployment, and a rehearsal still does not count.
    (proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(45, deployment="other"),),
     ("act", "auto_confidence")),
    (proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(45, dry_run=True),),
     ("act", "auto_confidence")),
    # GitOps, paused and excluded namespaces refuse whatever the rule says.
    (proposal(Action.RESTART, gitops=ARGO, cooldown_seconds=0.0), AUTO, (), ("refuse", "gitops")),
    (proposal(Action.SCALE, gitops=FLUX, cooldown_seconds=RULE_HOUR), AUTO, (),
     ("refuse", "gitops")),
    (proposal(Action.DELETE_POD, paused=True, cooldown_seconds=0.0), AUTO, (),
     ("refuse", "paused")),
    (proposal(Action.RESTART, namespace="kube-system", cooldown_seconds=0.0),
     replace(AUTO, allowed_namespaces=frozenset({"kube-system"})), (),
     ("refuse", "excluded_namespace")),
    (proposal(Action.RESTART, namespace="other", cooldown_seconds=0.0), AUTO, (),
     ("refuse", "namespace_not_allowed")),
    (proposal(Action.RESTART, deployment="incident-detector", namespace="ops",
              cooldown_seconds=0.0), AUTO, (), ("refuse", "own_deployment")),
    # ...and the hourly cap, and an approver not allowed.
    (proposal(cooldown_seconds=0.0), AUTO, tuple(past(5, deployment=f"d{i}") for i in range(3)),
     ("refuse", "hourly_cap")),
    (proposal(cooldown_seconds=0.0, approved_by="U999"), APPROVE, (), ("refuse", "approver")),
    # A rule does not make the detector act where it would only ask or tell.
    (proposal(cooldown_seconds=0.0, confidence=0.7), AUTO, (), ("ask", "below_auto_confidence")),
    (proposal(cooldown_seconds=0.0), APPROVE, (), ("ask", "approve_mode")),
    (proposal(cooldown_seconds=0.0), OFF, (), ("notify_only", "mode_off")),
])
def test_a_rule_never_loosens_a_guardrail(prop, policy, history, expected):
    assert outcome(prop, policy, history) == expected


def test_the_cooldown_reason_names_the_one_that_applied():
    longer = run(proposal(cooldown_seconds=RULE_HOUR), AUTO, (past(45),)).reason
    assert "the rule's cooldown (60 minutes, longer than REMEDIATION_COOLDOWN_MINUTES 30)" \
        in longer
    shorter = run(proposal(cooldown_seconds=60.0), AUTO, (past(10),)).reason
    assert "REMEDIATION_COOLDOWN_MINUTES (30) ago" in shorter
    assert "the rule's shorter cooldown of 1 minutes does not shorten it" in shorter
    same = run(proposal(cooldown_seconds=1800.0), AUTO, (past(10),)).reason
    assert same == run(proposal(), AUTO, (past(10),)).reason
    for reason in (longer, shorter, same):
        assert reason.endswith(".")


@pytest.mark.parametrize("cooldown", [-1.0, float("nan"), "600", True])
def test_a_rule_cooldown_must_be_seconds(cooldown):
    with pytest.raises(ValueError):
        proposal(cooldown_seconds=cooldown)


def test_actions_match_the_settings():
    assert tuple(action.value for action in Action) == REMEDIATION_ACTIONS


def test_policy_from_settings():
    base = {"LOKI_URL": "http://loki:3100", "NAMESPACE": "a,b"}
    default = policy_from_settings(load_settings(base))
    assert default.mode == "off"
    assert default.allowed_namespaces == {"a", "b"}  # empty: every watched namespace
    assert default.excluded_namespaces == {"kube-system", "kube-public"}
    assert default.allowed_actions == {Action.ROLLBACK}
    assert (default.cooldown, default.max_actions_per_hour) == (timedelta(minutes=30), 3)
    assert (default.scale_min, default.scale_max, default.dry_run) == (1, 20, False)
    assert (default.self_deployment, default.self_namespace) == ("incident-detector", None)
    assert (default.auto_confidence, default.approval_confidence) == (0.8, 0.6)
    tuned = policy_from_settings(load_settings({
        **base, "REMEDIATION_MODE": "auto", "AUTO_CONFIDENCE": "0.9",
        "APPROVAL_CONFIDENCE": "0.9", "ALLOWED_NAMESPACES": "b", "EXCLUDED_NAMESPACES": "",
        "ALLOWED_ACTIONS": "restart,scale", "REMEDIATION_COOLDOWN_MINUTES": "5",
        "MAX_ACTIONS_PER_HOUR": "10", "SCALE_MIN": "2", "SCALE_MAX": "8", "DRY_RUN": "true",
        "SLACK_APPROVERS": "U1AA,W2BB", "SELF_NAMESPACE": "a", "SELF_DEPLOYMENT": "watcher"}))
    assert tuned.mode == "auto" and tuned.allowed_namespaces == {"b"}
    assert tuned.excluded_namespaces == frozenset()
    assert tuned.allowed_actions == {Action.RESTART, Action.SCALE}
    assert tuned.cooldown == timedelta(minutes=5) and tuned.max_actions_per_hour == 10
    assert (tuned.scale_min, tuned.scale_max, tuned.dry_run) == (2, 8, True)
    assert tuned.approvers == {"U1AA", "W2BB"}
    assert (tuned.self_deployment, tuned.self_namespace) == ("watcher", "a")
    # The default policy refuses kube-system even when it is watched.
    watched = policy_from_settings(load_settings({**base, "NAMESPACE": "kube-system,a"}))
    assert run(proposal(namespace="kube-system"), replace(watched, mode="auto")).guardrail == \
        "excluded_namespace"


# Properties over open-ended inputs.
NAMESPACES = ["demo-aiops", "shop", "kube-system", "ops", "other"]
DEPLOYMENTS = ["payments-api", "incident-detector", "cart"]
USERS = [APPROVER, "U999", "W2BB"]

confidences = st.one_of(st.none(), st.floats(0, 1))


@st.composite
def proposals(draw) -> Proposal:
    action = draw(st.sampled_from(Action))
    return Proposal(
        action=action,
        namespace=draw(st.sampled_from(NAMESPACES)),
        deployment=draw(st.sampled_from(DEPLOYMENTS)),
        confidence=draw(confidences),
        paused=draw(st.booleans()),
        gitops=draw(st.sampled_from([None, None, ARGO, FLUX])),
        scale_to=draw(st.integers(0, 30)) if action == Action.SCALE else None,
        approved_by=draw(st.one_of(st.none(), st.sampled_from(USERS))),
    )


@st.composite
def policies(draw) -> Policy:
    auto = draw(st.floats(0, 1))
    scale_min = draw(st.integers(0, 10))
    return Policy(
        mode=draw(st.sampled_from(["off", "approve", "auto"])),
        auto_confidence=auto,
        approval_confidence=draw(st.floats(0, auto)),
        allowed_namespaces=frozenset(draw(st.sets(st.sampled_from(NAMESPACES)))),
        excluded_namespaces=frozenset(draw(st.sets(st.sampled_from(NAMESPACES), max_size=2))),
        allowed_actions=frozenset(draw(st.sets(st.sampled_from(Action)))),
        cooldown=timedelta(minutes=draw(st.integers(0, 90))),
        max_actions_per_hour=draw(st.integers(1, 5)),
        scale_min=scale_min,
        scale_max=draw(st.integers(max(scale_min, 1), 25)),
        dry_run=draw(st.booleans()),
        approvers=frozenset(draw(st.sets(st.sampled_from(USERS)))),
        self_deployment=draw(st.sampled_from(DEPLOYMENTS)),
        self_namespace=draw(st.one_of(st.none(), st.sampled_from(NAMESPACES))),
    )


histories = st.lists(st.builds(
    PastAction,
    namespace=st.sampled_from(NAMESPACES),
    deployment=st.sampled_from(DEPLOYMENTS),
    action=st.sampled_from(Action),
    at=st.integers(-10, 120).map(lambda minutes: NOW - timedelta(minutes=minutes)),
    dry_run=st.booleans(),
), max_size=6)


@st.composite
def restrictions(draw, policy: Policy) -> Policy:
    """The same policy with one guardrail tightened."""
    kind = draw(st.sampled_from(["namespace", "exclude", "action", "cooldown", "cap", "scale",
                                 "approvers", "self"]))
    if kind == "namespace" and policy.allowed_namespaces:
        drop = draw(st.sampled_from(sorted(policy.allowed_namespaces)))
        return replace(policy, allowed_namespaces=policy.allowed_namespaces - {drop})
    if kind == "exclude":
        return replace(policy, excluded_namespaces=policy.excluded_namespaces
                       | {draw(st.sampled_from(NAMESPACES))})
    if kind == "action" and policy.allowed_actions:
        drop = draw(st.sampled_from(sorted(policy.allowed_actions)))
        return replace(policy, allowed_actions=policy.allowed_actions - {drop})
    if kind == "cooldown":
        return replace(policy, cooldown=policy.cooldown + timedelta(minutes=draw(
            st.integers(1, 60))))
    if kind == "cap" and policy.max_actions_per_hour > 1:
        return replace(policy, max_actions_per_hour=policy.max_actions_per_hour - 1)
    if kind == "scale" and policy.scale_max > policy.scale_min:
        return replace(policy, scale_max=policy.scale_max - 1)
    if kind == "approvers" and policy.approvers:
        drop = draw(st.sampled_from(sorted(policy.approvers)))
        return replace(policy, approvers=policy.approvers - {drop})
    if kind == "self":
        return replace(policy, self_namespace=None)
    return policy


def full(decision: GuardrailDecision) -> None:
    assert isinstance(decision.outcome, Outcome)
    assert decision.reason and decision.reason.endswith(".")
    assert decision.guardrail and decision.guardrail.replace("_", "").isalpha()


@given(proposals(), policies(), histories)
def test_mode_off_never_acts_or_asks(prop, policy, history):
    decision = decide(prop, policy=replace(policy, mode="off"), history=history, now=NOW)
    assert decision.outcome == Outcome.NOTIFY_ONLY
    full(decision)


@given(proposals(), policies(), histories)
def test_every_decision_has_a_reason_and_carries_dry_run(prop, policy, history):
    decision = decide(prop, policy=policy, history=history, now=NOW)
    full(decision)
    assert decision.dry_run == policy.dry_run
    if decision.outcome == Outcome.REFUSE:
        assert decision.guardrail in {
            "own_deployment", "excluded_namespace", "namespace_not_allowed",
            "action_not_allowed", "gitops", "paused", "scale_range", "approver", "cooldown",
            "hourly_cap"}


@given(st.data(), proposals(), policies(), histories)
def test_a_tighter_guardrail_never_allows_more(data, prop, policy, history):
    tighter = data.draw(restrictions(policy))
    before = decide(prop, policy=policy, history=history, now=NOW)
    after = decide(prop, policy=tighter, history=history, now=NOW)
    if before.outcome == Outcome.REFUSE:
        assert after.outcome == Outcome.REFUSE
    if after.outcome == Outcome.ACT:
        assert before.outcome == Outcome.ACT


@given(proposals(), policies(), histories, histories)
def test_more_history_never_allows_more(prop, policy, history, more):
    before = decide(prop, policy=policy, history=history, now=NOW)
    after = decide(prop, policy=policy, history=history + more, now=NOW)
    if before.outcome == Outcome.REFUSE:
        assert after.outcome == Outcome.REFUSE
    if after.outcome == Outcome.ACT:
        assert before.outcome == Outcome.ACT


@given(proposals(), policies(), histories, st.sampled_from(USERS))
def test_an_approval_never_overrides_a_refusal(prop, policy, history, user):
    unapproved = decide(replace(prop, approved_by=None), policy=policy, history=history, now=NOW)
    approved = decide(replace(prop, approved_by=user), policy=policy, history=history, now=NOW)
    if unapproved.outcome == Outcome.REFUSE:
        assert approved.outcome == Outcome.REFUSE
    if approved.outcome == Outcome.ACT:
        assert unapproved.outcome in (Outcome.ACT, Outcome.ASK)
        if unapproved.outcome == Outcome.ASK:
            assert user in policy.approvers
    if unapproved.outcome == Outcome.ASK and user in policy.approvers:
        assert approved.outcome == Outcome.ACT


@given(proposals(), policies(), histories, st.floats(0, 1), st.floats(0, 1))
def test_more_confidence_never_does_less(prop, policy, history, a, b):
    rank = {Outcome.NOTIFY_ONLY: 0, Outcome.ASK: 1, Outcome.ACT: 2}
    low, high = sorted((a, b))
    lower = decide(replace(prop, confidence=low), policy=policy, history=history, now=NOW)
    higher = decide(replace(prop, confidence=high), policy=policy, history=history, now=NOW)
    assert (lower.outcome == Outcome.REFUSE) == (higher.outcome == Outcome.REFUSE)
    if lower.outcome != Outcome.REFUSE:
        assert rank[lower.outcome] <= rank[higher.outcome]


rule_cooldowns = st.one_of(st.none(), st.floats(0, 4 * 3600), st.just(float("inf")))


@given(proposals(), policies(), histories, rule_cooldowns)
def test_a_rule_cooldown_never_allows_more(prop, policy, history, cooldown):
    without = decide(prop, policy=policy, history=history, now=NOW)
    with_rule = decide(replace(prop, cooldown_seconds=cooldown), policy=policy, history=history,
                       now=NOW)
    full(with_rule)
    if without.outcome == Outcome.REFUSE:
        assert with_rule.outcome == Outcome.REFUSE
    if with_rule.outcome != Outcome.REFUSE:
        assert with_rule.outcome == without.outcome


def test_a_dashboard_approval_counts_by_its_own_authentication_not_slack_approvers():
    from incident_detector.judge.guardrails import Outcome, Policy, Proposal, decide
    from datetime import datetime, timezone

    now = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
    policy = Policy(mode="approve", approvers=frozenset({"U0APPROVER"}),
                    allowed_namespaces=frozenset({"ns"}))
    by_slack = Proposal(action="rollback", namespace="ns", deployment="api", confidence=0.9,
                        approved_by="dashboard:alice")
    assert decide(by_slack, policy=policy, history=(), now=now).guardrail == "approver"
    by_dashboard = Proposal(action="rollback", namespace="ns", deployment="api",
                            confidence=0.9, approved_by="dashboard:alice",
                            approver_authenticated=True)
    verdict = decide(by_dashboard, policy=policy, history=(), now=now)
    assert verdict.outcome is Outcome.ACT and "dashboard:alice" in verdict.reason
    # Everything else still refuses it.
    excluded = Proposal(action="rollback", namespace="kube-system", deployment="api",
                        confidence=0.9, approved_by="dashboard:alice",
                        approver_authenticated=True)
    assert decide(excluded, policy=policy, history=(), now=now).outcome is Outcome.REFUSE
