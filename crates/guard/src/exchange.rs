//! One request's passage through the guard, from its decision to its one audit event.
//!
//! An [`Exchange`] holds the request's event from the moment the request is read. The
//! adapter adds its protocol's facts ([`Exchange::event`]), asks for the decision, and ends
//! the exchange with [`Exchange::finish`] or [`Exchange::refuse`], which hand back a
//! [`Finished`] event to record before the answer is released. Whatever path a request takes
//! (an early return, a panic, a caller that hangs up and drops the future), dropping an
//! unfinished exchange records it as failed, and dropping an unrecorded `Finished` records
//! it: every request gets exactly one event.

use std::sync::Arc;
use std::time::Instant;

use portcullis_audit::AuditError;
use portcullis_model::{Action, AuditEvent, Identity, Outcome, Verdict};

use crate::{Guard, Refusal};

/// The request in flight: its event, the caller, when it started.
pub struct Exchange {
    pub(crate) guard: Arc<Guard>,
    pub(crate) identity: Arc<Identity>,
    /// `None` once finished.
    pub(crate) event: Option<AuditEvent>,
    started: Instant,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("event", &self.event.as_ref().map(|e| &e.id))
            .finish_non_exhaustive()
    }
}

impl Exchange {
    pub(crate) fn new(guard: Arc<Guard>, identity: Arc<Identity>, event: AuditEvent) -> Exchange {
        Exchange {
            guard,
            identity,
            event: Some(event),
            started: Instant::now(),
        }
    }

    /// The request's event, for the adapter's facts: the action and resource, the request
    /// id, digests, the statement record, what masking found.
    pub fn event(&mut self) -> &mut AuditEvent {
        self.event
            .as_mut()
            .expect("an exchange holds its event until it finishes")
    }

    /// The event's id, known before it is written (approvals and answers refer to it).
    pub fn id(&self) -> &str {
        &self.event.as_ref().expect("unfinished").id
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// Decides `action` for the exchange's caller: the caller's active just-in-time grants
    /// on the target are looked up here (only while someone holds one), then policy decides.
    /// The decision, rule, grant and policy version go into the event.
    pub fn decide(&mut self, action: &Action<'_>) -> Verdict {
        let grants = if self.guard.approvals.any_grants() {
            self.guard
                .approvals
                .active_grants(&self.identity, action.target)
        } else {
            Vec::new()
        };
        let action = Action {
            grants: &grants,
            ..action.clone()
        };
        let verdict = self.guard.policy.decide(&self.identity, &action);
        self.note_verdict(&verdict);
        verdict
    }

    /// Puts a decision made earlier (a prepared statement decided at Parse, run at each
    /// Execute) into this exchange's event.
    pub fn note_verdict(&mut self, verdict: &Verdict) {
        let ev = self.event();
        ev.decision = Some(verdict.decision.label().to_string());
        ev.rule = Some(verdict.rule_label().to_string());
        ev.policy_version = Some(verdict.policy_version.to_string());
        ev.grant = verdict.grant.as_deref().map(str::to_string);
    }

    /// Marks a decision the gateway made without policy (`protocol` for methods open to
    /// any caller some rule applies to).
    pub fn note_decision(&mut self, decision: &str, rule: &str) {
        let ev = self.event();
        ev.decision = Some(decision.to_string());
        ev.rule = Some(rule.to_string());
    }

    /// Refuses the request before it acts, when the audit log could not record it: a
    /// request whose event cannot be written must not reach the upstream.
    pub fn check_recordable(&self) -> Result<(), Refusal> {
        match self.guard.audit.unavailable() {
            Some(cause) => Err(Refusal::audit_unavailable(cause)),
            None => Ok(()),
        }
    }

    /// Keeps the decision and records nothing for this exchange: the request runs later as
    /// exchanges of its own, each with its event (a prepared statement is decided at Parse
    /// and each Execute is a request, [`Exchange::note_verdict`]). A refusal or a hold at
    /// decision time is finished here instead, like any other request.
    pub fn settle_later(mut self) {
        self.event = None;
    }

    /// Ends the exchange with `outcome`. The duration is measured here unless the adapter
    /// set it.
    pub fn finish(mut self, outcome: Outcome) -> Finished {
        let mut ev = self.event.take().expect("finished once");
        ev.outcome = outcome;
        if ev.duration_ms.is_none() {
            ev.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        }
        Finished {
            guard: self.guard.clone(),
            event: Some(ev),
        }
    }

    /// Ends the exchange with a refusal: its kind's outcome, its message as the detail, the
    /// approval it went through.
    pub fn refuse(mut self, refusal: &Refusal) -> Finished {
        {
            let ev = self.event();
            ev.detail = Some(refusal.message.clone());
            if let Some(approval) = &refusal.approval {
                ev.approval = Some(approval.id.clone());
            }
            if ev.rule.is_none() {
                ev.rule.clone_from(&refusal.rule);
            }
            // The gateway did not let the request through: a denial even where no rule
            // decided (no rule applies, its own protections, a request it cannot read). A
            // request that failed after it was allowed keeps its `allow`.
            if ev.decision.is_none()
                && matches!(refusal.outcome(), Outcome::Denied | Outcome::Rejected)
            {
                ev.decision = Some(refusal.decision.unwrap_or("deny").to_string());
            }
        }
        self.finish(refusal.outcome())
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(mut ev) = self.event.take() else {
            return;
        };
        ev.outcome = Outcome::Failed;
        if ev.detail.is_none() {
            ev.detail =
                Some("the request ended without an answer (the exchange was dropped)".into());
        }
        ev.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        record_in_background(&self.guard, ev);
    }
}

/// A finished request's event, to be recorded before the answer is released.
#[must_use = "a finished exchange's event must be recorded before the answer is released"]
pub struct Finished {
    guard: Arc<Guard>,
    event: Option<AuditEvent>,
}

impl Finished {
    pub fn event(&mut self) -> &mut AuditEvent {
        self.event.as_mut().expect("recorded once")
    }

    /// Records the event now (durably, in strict mode). Err: the answer must be withheld.
    pub async fn record(mut self) -> Result<(), AuditError> {
        let ev = self.event.take().expect("recorded once");
        self.guard.audit.record(ev).await.map(|_| ())
    }

    pub(crate) fn into_event(mut self) -> AuditEvent {
        self.event.take().expect("recorded once")
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(ev) = self.event.take() {
            record_in_background(&self.guard, ev);
        }
    }
}

/// The last resort of the exactly-one-event rule: a task records what a dropped exchange
/// left. Outside a runtime (a test tearing down) the loss is logged.
fn record_in_background(guard: &Arc<Guard>, ev: AuditEvent) {
    let guard = guard.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(e) = guard.audit.record(ev).await {
                    tracing::error!("cannot record a request that ended unanswered: {e}");
                }
            });
        }
        Err(_) => {
            tracing::error!(event = %ev.id, "a request's event was dropped outside a runtime")
        }
    }
}
