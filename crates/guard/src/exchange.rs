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
use portcullis_model::{Action, AuditEvent, Identity, Outcome, TargetKind, Verdict};
use portcullis_recording::Chunk;
use serde_json::Value;

use crate::recording::Tape;
use crate::{Guard, Masks, Refusal, RefusalKind, Rules, UpstreamFault};

/// The request in flight: its event, the caller, when it started.
pub struct Exchange {
    pub(crate) guard: Arc<Guard>,
    /// The rules in force when the request came: it is decided, masked and recorded under
    /// them to the end, whatever a reload puts in force meanwhile.
    pub(crate) rules: Arc<Rules>,
    pub(crate) identity: Arc<Identity>,
    /// The adapter's protocol, a label of the request metrics.
    kind: TargetKind,
    /// `None` once finished.
    pub(crate) event: Option<AuditEvent>,
    started: Instant,
    /// The request's recording, when the guard records.
    tape: Option<Tape>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("event", &self.event.as_ref().map(|e| &e.id))
            .finish_non_exhaustive()
    }
}

impl Exchange {
    pub(crate) fn new(
        guard: Arc<Guard>,
        rules: Arc<Rules>,
        identity: Arc<Identity>,
        kind: TargetKind,
        event: AuditEvent,
    ) -> Exchange {
        let tape = rules.recorder.as_ref().map(|r| r.tape(&event.time));
        Exchange {
            guard,
            rules,
            identity,
            kind,
            event: Some(event),
            started: Instant::now(),
            tape,
        }
    }

    /// The version of the policy this exchange decides under (the one in force when it
    /// opened).
    pub fn policy_version(&self) -> &str {
        self.rules.policy.version()
    }

    /// The masking profiles of this exchange's rules: the ones its decision names exist
    /// in them.
    pub fn masks(&self) -> &Arc<Masks> {
        &self.rules.masks
    }

    /// The masking profiles named by the allow rules of this exchange's rules that apply
    /// to its caller on `target`.
    pub fn masks_for(&self, target: &str) -> Vec<Arc<str>> {
        self.rules.policy.masks_for(&self.identity, target)
    }

    /// Whether this exchange is recorded: an adapter builds the messages it hands to the
    /// `record_*` methods only then.
    pub fn recording(&self) -> bool {
        self.tape.is_some()
    }

    /// Records a message as forwarded to the target (`kind`: `request`, `query`, `bind`
    /// ...). Its strings are masked with the `[recording]` profile first.
    pub fn record_request(&mut self, kind: &str, body: Value) {
        if let Some(tape) = &mut self.tape {
            tape.request(kind, body);
        }
    }

    /// Records a message as the caller received it (after masking): a result, an error, a
    /// progress or log notification, a row description, a notice, a command tag.
    pub fn record_answer(&mut self, kind: &str, body: Value) {
        if let Some(tape) = &mut self.tape {
            tape.answer(kind, body);
        }
    }

    /// Records one result row as the caller received it; beyond `max_rows_per_statement`
    /// rows are counted, not kept, until the next other message ends the statement.
    pub fn record_row(&mut self, body: Value) {
        self.record_row_with(|| body);
    }

    /// [`Exchange::record_row`] for a row whose body is costly to build: `body` is called
    /// only for a row that is kept, so rows beyond the cap cost a count, not a copy.
    pub fn record_row_with(&mut self, body: impl FnOnce() -> Value) {
        if let Some(tape) = &mut self.tape {
            tape.row(body);
        }
    }

    /// The caller went away before its answer was complete: the record says so.
    pub fn record_caller_left(&mut self) {
        if let Some(tape) = &mut self.tape {
            tape.caller_left();
        }
    }

    /// Takes the event for its final record, with the recording's chunks named in it.
    fn take_event(&mut self) -> Option<(AuditEvent, Vec<Chunk>)> {
        let mut ev = self.event.take()?;
        let chunks = match self.tape.take() {
            Some(tape) => {
                let (recorded, chunks) = tape.seal();
                if recorded.request.is_some() || recorded.answer.is_some() {
                    ev.recorded = Some(recorded);
                }
                chunks
            }
            None => Vec::new(),
        };
        Some((ev, chunks))
    }

    /// The request's event, for the adapter's facts: the action and resource, the request
    /// id, digests, the statement record, what masking found.
    pub fn event(&mut self) -> &mut AuditEvent {
        self.event
            .as_mut()
            .expect("an exchange holds its event until it finishes")
    }

    /// Counts an upstream failure of this request that ends it without a refusal (an MCP
    /// upstream that died with the call in flight, answered by the gateway as an error).
    /// A refusal built with [`Refusal::upstream`] is counted by [`Exchange::refuse`].
    pub fn upstream_failed(&self, fault: UpstreamFault) {
        let target = self.event.as_ref().and_then(|e| e.target.as_deref());
        self.guard
            .metrics
            .upstream_error(target.unwrap_or_default(), self.kind, fault);
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
        let verdict = self.rules.policy.decide(&self.identity, &action);
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

    /// Refuses the request before it acts, when the audit log could not record it or
    /// (strict) its recording could not be sealed: a request whose record cannot be kept
    /// must not reach the upstream.
    pub fn check_recordable(&self) -> Result<(), Refusal> {
        if let Some(cause) = self.guard.audit.unavailable() {
            return Err(Refusal::audit_unavailable(cause));
        }
        match self.guard.recording_unavailable() {
            Some(cause) => Err(Refusal::recording_unavailable(cause)),
            None => Ok(()),
        }
    }

    /// Keeps the decision and records nothing for this exchange: the request runs later as
    /// exchanges of its own, each with its event (a prepared statement is decided at Parse
    /// and each Execute is a request, [`Exchange::note_verdict`]). A refusal or a hold at
    /// decision time is finished here instead, like any other request.
    pub fn settle_later(mut self) {
        self.event = None;
        self.tape = None;
    }

    /// Ends the exchange with `outcome`. The duration is measured here unless the adapter
    /// set it.
    pub fn finish(mut self, outcome: Outcome) -> Finished {
        let (mut ev, chunks) = self.take_event().expect("finished once");
        ev.outcome = outcome;
        if ev.duration_ms.is_none() {
            ev.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        }
        self.guard.metrics.observe(&ev, self.kind);
        Finished {
            guard: self.guard.clone(),
            event: Some((ev, chunks)),
        }
    }

    /// Ends the exchange with a refusal: its kind's outcome, its message as the detail, the
    /// approval it went through.
    pub fn refuse(mut self, refusal: &Refusal) -> Finished {
        if let Some(fault) = refusal.upstream
            && refusal.kind == RefusalKind::UpstreamFailed
        {
            self.upstream_failed(fault);
        }
        if self.recording() {
            let body = serde_json::json!({
                "refused": refusal.kind.label(),
                "message": refusal.message,
            });
            self.record_answer("refusal", body);
        }
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
        let Some((mut ev, chunks)) = self.take_event() else {
            return;
        };
        ev.outcome = Outcome::Failed;
        if ev.detail.is_none() {
            ev.detail =
                Some("the request ended without an answer (the exchange was dropped)".into());
        }
        ev.duration_ms = Some(self.started.elapsed().as_secs_f64() * 1000.0);
        self.guard.metrics.observe(&ev, self.kind);
        record_in_background(&self.guard, ev, chunks);
    }
}

/// A finished request's event, to be recorded before the answer is released.
#[must_use = "a finished exchange's event must be recorded before the answer is released"]
pub struct Finished {
    guard: Arc<Guard>,
    /// The event and the recorded chunks it names.
    event: Option<(AuditEvent, Vec<Chunk>)>,
}

impl Finished {
    pub fn event(&mut self) -> &mut AuditEvent {
        &mut self.event.as_mut().expect("recorded once").0
    }

    /// Records the event and its recording now (durably, in strict mode). Err: the answer
    /// must be withheld.
    ///
    /// The event is turned into its row before the future is returned (see
    /// [`Guard::store`]): the future is small, whatever the event holds.
    pub fn record(mut self) -> impl Future<Output = Result<(), AuditError>> + Send + 'static {
        let (ev, chunks) = self.event.take().expect("recorded once");
        let storing = self.guard.store(ev, chunks);
        async move { storing.await.map(|_| ()) }
    }

    pub(crate) fn into_parts(mut self) -> (AuditEvent, Vec<Chunk>) {
        self.event.take().expect("recorded once")
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some((ev, chunks)) = self.event.take() {
            record_in_background(&self.guard, ev, chunks);
        }
    }
}

/// The last resort of the exactly-one-event rule: a task records what a dropped exchange
/// left. Outside a runtime (a test tearing down) the loss is logged.
fn record_in_background(guard: &Arc<Guard>, ev: AuditEvent, chunks: Vec<Chunk>) {
    let guard = guard.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(e) = guard.store(ev, chunks).await {
                    tracing::error!("cannot record a request that ended unanswered: {e}");
                }
            });
        }
        Err(_) => {
            tracing::error!(event = %ev.id, "a request's event was dropped outside a runtime")
        }
    }
}
