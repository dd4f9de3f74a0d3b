//! Holding a request for people to approve: one wait, one set of outcomes, for every adapter.
//!
//! The guard asks the approvals service, tells the caller it is waiting through the
//! adapter's [`HoldChannel`] (at once, then every [`HoldChannel::every`] if the protocol can
//! carry progress), and ends in one of: released (approved, and the release recorded before
//! anything is forwarded), or a [`Refusal`] whose kind says how the wait ended.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use portcullis_approvals::{Approval, ApprovalError, HoldRequest, Status};
use portcullis_mask::Report;
use portcullis_model::{ApprovalRequirement, PayloadDigest, Verdict};
use serde_json::Value;

use crate::{Exchange, Interruption, Refusal, RefusalKind};

/// What the adapter tells the caller, and how it learns that the caller stopped waiting.
pub trait HoldChannel: Send {
    /// Tells the caller that its request waits for `approval`; `round` counts the messages
    /// (0 first). Err: the caller cannot be reached.
    fn tell(
        &mut self,
        approval: &Approval,
        round: u64,
    ) -> impl Future<Output = Result<(), Interruption>> + Send;

    /// How often to tell again while waiting, if the protocol carries progress.
    fn every(&self) -> Option<Duration>;

    /// Resolves when the caller stops waiting (it hung up or cancelled) or the gateway
    /// stops. Must be cancel-safe: it is polled anew on each round of the wait.
    fn interrupted(&mut self) -> impl Future<Output = Interruption> + Send;
}

/// A held request as the approvers see it.
#[derive(Debug, Clone)]
pub struct HoldAsk {
    /// How messages name the request: `tools/call "refund"`, `UPDATE on customers`.
    pub what: String,
    /// The operation (`tools/call`, `update`) and what it acts on.
    pub action: String,
    pub resource: Option<String>,
    /// What the approvers are shown (the tool arguments; the statement and its
    /// parameters), masked here with the `default` profile before it is stored or sent.
    pub shown: Option<Value>,
    /// The digest of what was received, when the event does not carry it already.
    pub digest: Option<PayloadDigest>,
    /// The requester's reason, as the protocol carries it.
    pub reason: Option<String>,
}

/// An approved held request, its release recorded: forward it.
#[derive(Debug, Clone)]
pub struct Released {
    pub approval: String,
}

/// What a hold is still waiting for, round by round.
enum Step {
    Decided(Box<Approval>),
    Interrupted(Interruption),
    Tell,
}

impl Exchange {
    /// Holds the request for approval under `verdict`'s rule: stores it, notifies the
    /// approvers, tells the caller, waits. The approval's id goes into the event.
    pub async fn hold(
        &mut self,
        verdict: &Verdict,
        requirement: Arc<ApprovalRequirement>,
        ask: HoldAsk,
        channel: &mut impl HoldChannel,
    ) -> Result<Released, Refusal> {
        let what = ask.what.clone();
        // A blank reason is no reason (the approvals service would drop it as empty).
        let has_reason = ask.reason.as_deref().is_some_and(|r| !r.trim().is_empty());
        if requirement.require_reason && !has_reason {
            return Err(Refusal::new(
                RefusalKind::ReasonRequired,
                format!(
                    "{what} needs approval under rule \"{}\" and a reason",
                    verdict.rule_label()
                ),
            )
            .by(verdict));
        }
        let shown = ask.shown.map(|mut value| {
            self.rules.masks.default_profile().mask_json(
                &mut value,
                "$.arguments",
                &mut Report::default(),
            );
            value
        });
        let request = HoldRequest {
            requester: (*self.identity).clone(),
            source: self.event().source.clone(),
            target: self.event().target.clone().unwrap_or_default(),
            action: ask.action,
            resource: ask.resource,
            arguments: shown,
            arguments_digest: ask.digest.or_else(|| self.event().arguments.clone()),
            reason: ask.reason,
            rule: verdict.rule_label().to_string(),
            policy_version: verdict.policy_version.to_string(),
            requirement,
            request_event: self.id().to_string(),
        };
        let mut held = match self.guard.approvals.hold(request).await {
            Ok(held) => held,
            Err(e) => {
                let kind = match e {
                    ApprovalError::Invalid(_) => RefusalKind::HoldUnavailable,
                    ApprovalError::Audit(_) => RefusalKind::AuditUnavailable,
                    _ => RefusalKind::Internal,
                };
                return Err(Refusal::new(
                    kind,
                    format!("{what} is held for approval but cannot wait: {e}"),
                )
                .by(verdict));
            }
        };
        let approval = held.approval.clone();
        let id = approval.id.clone();
        self.event().approval = Some(id.clone());
        let refusal = |kind: RefusalKind, message: String, approval: Approval| {
            let mut refusal = Refusal::new(kind, message).by(verdict);
            refusal.approval = Some(Box::new(approval));
            refusal
        };

        let mut round = 0;
        let every = channel.every();
        let mut ticker =
            every.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        let mut told = channel.tell(&approval, round).await;
        let ended = {
            let wait = held.outcome();
            tokio::pin!(wait);
            loop {
                if let Err(interruption) = told {
                    break Err(interruption);
                }
                let step = tokio::select! {
                    decided = &mut wait => Step::Decided(Box::new(decided)),
                    interruption = channel.interrupted() => Step::Interrupted(interruption),
                    _ = tick(&mut ticker) => Step::Tell,
                };
                match step {
                    Step::Decided(decided) => break Ok(*decided),
                    Step::Interrupted(interruption) => break Err(interruption),
                    Step::Tell => {
                        round += 1;
                        told = channel.tell(&approval, round).await;
                    }
                }
            }
        };
        let decided = match ended {
            Ok(decided) => decided,
            Err(interruption) => {
                let why = interruption.why();
                held.cancel(&format!("{why} while the request was held"))
                    .await;
                let mut refusal = refusal(
                    RefusalKind::HeldCancelled,
                    format!("{what} was held for approval {id}; {why}"),
                    approval,
                );
                refusal.interruption = Some(interruption);
                return Err(refusal);
            }
        };
        let kind = match decided.status {
            Status::Approved => None,
            Status::Denied => Some(RefusalKind::HeldDenied),
            Status::Expired => Some(RefusalKind::HeldExpired),
            Status::Cancelled | Status::Abandoned => Some(RefusalKind::HeldCancelled),
            // Still pending: its expiry could not be recorded. Fail closed.
            Status::Pending => Some(RefusalKind::AuditUnavailable),
        };
        if let Some(kind) = kind {
            let message = decided.refusal(&what);
            return Err(refusal(kind, message, decided));
        }
        // Approved: the release is recorded before anything reaches the upstream.
        if let Err(e) = held.released(self.id()).await {
            return Err(refusal(
                RefusalKind::AuditUnavailable,
                format!("{what} was approved ({id}) but {e}"),
                decided,
            ));
        }
        Ok(Released { approval: id })
    }
}

/// The next tick of an optional interval; pending forever without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
