"""Following up on remediation, each look: the preconditions of the actions that wait for a
person follow their Deployments while the spec is unchanged (``renew``), and every executed
action gets its verdict (``verify``: ``verify.verify_action``, or for a rollback through Argo CD
the application and the Deployment both) until ``VERIFY_TIMEOUT_SECONDS``.

A verdict is written down before it is told: the journal moves done -> verified or unverified by
compare and set (one verdict per action, whichever replica reaches it first), then one JSON line
on stdout, one audit row, a Kubernetes Event and a reply in the incident's Slack thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import SourceError
from ..judge.guardrails import Action
from ..model import Deployment
from ..notify.events import EventRecorder
from ..notify.slack import THREAD_KEY, thread_key
from ..store.journal import DONE, PROPOSED, UNVERIFIED, VERIFIED, Journal, JournalEntry
from .argocd import ArgoCdClient, ArgoCdError, target_entry
from .remediation_plan import HISTORY, recorded_moment, same_spec
from .remediation_text import DETECTOR, describe_action, entry_target, entry_to_revision
from .verify import Verification, VerificationResult, verify_action, verify_argocd_rollback

if TYPE_CHECKING:
    from .remediation import Sender, Writer

log = structlog.get_logger("incident_detector")

Clock = Callable[[], datetime]


class FollowUp:
    def __init__(self, *, journal: Journal, stdout: Writer, slack: Sender | None,
                 events: EventRecorder | None, argocd: ArgoCdClient | None, clock: Clock,
                 verify_timeout_seconds: float) -> None:
        self.journal = journal
        self.stdout = stdout
        self.slack = slack
        self.events = events
        self.argocd = argocd
        self.clock = clock
        self.verify_timeout_seconds = verify_timeout_seconds

    # Waiting for a person ------------------------------------------------------------------

    def renew(self, deployments: Mapping[tuple[str, str], Deployment]) -> None:
        """Each look (a tick or a fast look): the proposed actions' preconditions follow their
        Deployments while the spec is unchanged (``_renew``)."""
        for entry in self.journal.recent(since=self.clock() - HISTORY):
            if entry.state == PROPOSED:
                self._renew(entry, deployments.get((entry.key[0], entry.key[1])))

    def _renew(self, entry: JournalEntry, deployment: Deployment | None) -> None:
        """A proposed action waits for a person while its Deployment's status moves (pods
        turning ready, a condition's heartbeat): each moves the resourceVersion its write is
        conditioned on, and an approval would then be refused as stale although nothing it
        acts on changed. When the Deployment is seen with the same spec (same object, same
        current revision, same generation), the precondition follows it; any change to the
        spec leaves it as it was, and the write is refused."""
        if deployment is None or not same_spec(entry, deployment) or \
                deployment.resource_version == entry.precondition:
            return
        if self.journal.renew_precondition(entry.id, seen=entry.precondition,
                                           now_seen=deployment.resource_version):
            log.debug("remediation.precondition_renewed", action_id=entry.id,
                      seen=entry.precondition, now_seen=deployment.resource_version)

    # Verifying -----------------------------------------------------------------------------

    async def verify(self, deployments: Mapping[tuple[str, str], Deployment],
                     error_rates: Mapping[tuple[str, str], float | None], *,
                     now: datetime) -> None:
        """The verdict on every executed action still being verified, written down and told."""
        for entry in self.journal.recent(since=now - HISTORY):
            if entry.state != DONE:
                continue
            deployment = deployments.get((entry.key[0], entry.key[1]))
            if deployment is None:
                continue
            error_rate = error_rates.get((entry.key[0], entry.key[1]))
            if entry.action == Action.ROLLBACK.value \
                    and isinstance(entry.params.get("argocd"), dict):
                verdict = await self._verify_argocd(entry, deployment, error_rate, now)
            else:
                verdict = verify_action(
                    entry.action, deployment=deployment, error_rate_per_minute=error_rate,
                    baseline_per_minute=entry.params.get("baseline_per_minute"),
                    acted_at=entry.updated_at, now=now,
                    timeout_seconds=self.verify_timeout_seconds)
            if verdict.result is VerificationResult.PENDING:
                continue
            state = VERIFIED if verdict.result is VerificationResult.PASS else UNVERIFIED
            if not self.journal.advance(entry.id, expected=[DONE], to=state, now=now,
                                        result=verdict.result.value):
                continue
            self.stdout.write(verification_record(entry, verdict))
            self.journal.audit(at=now, who=DETECTOR, action=entry.action,
                               target=entry_target(entry), decision="verified",
                               reason="; ".join(verdict.reasons), dry_run=False,
                               result=verdict.result.value, action_id=entry.id)
            await self._tell(entry, verdict, now)

    async def _tell(self, entry: JournalEntry, verdict: Verification, now: datetime) -> None:
        """The verdict as a Kubernetes Event and in the incident's Slack thread."""
        text = (f"Verification {verdict.result.value.upper()}: {describe_action(entry)}: "
                + "; ".join(verdict.reasons))
        if self.events is not None:
            body = self.events.verification_body(
                namespace=entry.key[0], deployment=entry.key[1], deployment_uid=entry.key[3],
                action_id=entry.id, passed=verdict.result is VerificationResult.PASS,
                note=text, at=now)
            try:
                await self.events.send(body)
            except SourceError as exc:  # the audit row and the JSON line are the record
                log.warning("verification.event_failed", reason=exc.reason)
        if self.slack is not None:
            try:
                await self.slack.send({"text": text, THREAD_KEY: thread_key(entry.key)})
            except SourceError as exc:
                log.warning("verification.slack_failed", reason=exc.reason)

    async def _verify_argocd(self, entry: JournalEntry, deployment: Deployment,
                             error_rate: float | None, now: datetime) -> Verification:
        """The verdict on a rollback through Argo CD: one GET of the application per tick."""
        record = entry.params["argocd"]
        app_name, app_namespace = str(record.get("app")), record.get("app_namespace")
        app, unread = None, None
        if self.argocd is None:
            unread = "ARGOCD_URL and ARGOCD_TOKEN are not set"
        else:
            try:
                app = await self.argocd.get_application(app_name, app_namespace)
            except ArgoCdError as exc:
                unread = exc.message
        wanted = target_entry(app, incident_at=recorded_moment(record.get("incident_at")),
                              rollout_started_at=recorded_moment(record.get("rollout_started_at")),
                              history_id=record.get("history_id")) if app is not None else None
        return verify_argocd_rollback(
            application=app, app_name=app_name if not app_namespace
            else f"{app_namespace}/{app_name}", target=wanted, unread=unread,
            deployment=deployment, error_rate_per_minute=error_rate,
            baseline_per_minute=entry.params.get("baseline_per_minute"),
            acted_at=entry.updated_at, now=now, timeout_seconds=self.verify_timeout_seconds)


def verification_record(entry: JournalEntry, verdict: Verification) -> dict[str, Any]:
    """The ``{"event": "verification", ...}`` line on stdout."""
    record: dict[str, Any] = {
        "event": "verification", "result": verdict.result.value,
        "action": entry.action, "namespace": entry.key[0],
        "deployment": entry.key[1], "revision": entry.key[2],
        "to_revision": entry_to_revision(entry),
        "replicas": verdict.desired_replicas, "ready": verdict.ready_replicas,
        "error_rate_before": verdict.error_rate_before,
        "error_rate_after": verdict.error_rate_after,
        "seconds": verdict.seconds_since_action, "reasons": list(verdict.reasons)}
    if verdict.application is not None:
        record["argocd"] = {"application": verdict.application,
                            "health": verdict.app_health, "sync": verdict.app_sync,
                            "revision": verdict.app_revision}
    return record
