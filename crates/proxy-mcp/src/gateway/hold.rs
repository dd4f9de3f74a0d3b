//! The held path: a request waits for approval through the guard, and the caller hears
//! progress notifications meanwhile.
//!
//! The guard owns the wait and its outcomes; this module is MCP's side of it: a
//! [`HoldChannel`] that sends `notifications/progress` on the request's stream (when the
//! caller gave a progress token) and notices that the caller hung up or sent
//! `notifications/cancelled`, then the forward of an approved request.

use std::sync::Arc;
use std::time::Duration;

use portcullis_guard::{Approval, Exchange, Guard, HoldAsk, HoldChannel, Interruption, Refusal};
use portcullis_model::{ApprovalRequirement, Outcome, Verdict};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::era::RequestFacts;
use crate::link::Inbound;
use crate::masking::MaskSet;

use super::*;

/// How often a held caller with a progress token hears that it is still waiting.
pub(super) const HOLD_PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// A held request, owned, so it can wait in a future of its own.
pub(super) struct HeldCall {
    pub(super) id: Box<RawValue>,
    pub(super) method: String,
    pub(super) params: Option<Box<RawValue>>,
    pub(super) facts: RequestFacts,
    pub(super) streams: bool,
}

/// Everything the held path carries from the decision to the forward.
pub(super) struct HeldRequest {
    pub(super) caller: Caller,
    pub(super) target: Arc<TargetRuntime>,
    pub(super) session: Option<Arc<Session>>,
    pub(super) call: HeldCall,
    pub(super) verdict: Verdict,
    pub(super) requirement: Arc<ApprovalRequirement>,
    pub(super) mask: MaskSet,
    pub(super) exchange: Exchange,
    pub(super) tx: mpsc::Sender<Inbound>,
}

/// The progress message of a held request: what it waits for and where people decide.
pub(super) fn awaiting_message(approval: &Approval, decision_url: Option<&str>) -> String {
    let mut text = format!(
        "awaiting approval {} ({} approval(s) from {}, until {}): decide with `portcullis approvals approve {}`",
        approval.id,
        approval.min_approvals,
        approval.approvers.join(", "),
        approval.expires_at,
        approval.id
    );
    if let Some(url) = decision_url {
        text.push_str(&format!(" or at {url}"));
    }
    text
}

/// MCP's side of a hold: progress on the request's stream, and the two ways a caller stops
/// waiting (it hangs up; it sends `notifications/cancelled`).
struct ProgressChannel<'a> {
    tx: &'a mpsc::Sender<Inbound>,
    /// The caller's progress token as it sent it (JSON text); without one, nothing is sent.
    progress_token: Option<Value>,
    cancelled: oneshot::Receiver<()>,
    /// Where people decide (the console's page, or the admin API's address).
    guard: Arc<Guard>,
    /// The progress sent, kept for a recording exchange (which the hold holds meanwhile).
    told: Option<Vec<Map<String, Value>>>,
}

impl HoldChannel for ProgressChannel<'_> {
    async fn tell(&mut self, approval: &Approval, round: u64) -> Result<(), Interruption> {
        let Some(token) = &self.progress_token else {
            return Ok(());
        };
        // The spec wants the progress value to grow with each notification.
        let message = json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": token,
                "progress": round + 1,
                "message": awaiting_message(approval, self.guard.decision_url(&approval.id).as_deref()),
            },
        });
        // A caller that is gone is noticed by `interrupted`.
        let sent = self
            .tx
            .send(Inbound::Interim(message.to_string()))
            .await
            .is_ok();
        if let (true, Some(told), Value::Object(message)) = (sent, &mut self.told, message) {
            told.push(message);
        }
        Ok(())
    }

    fn every(&self) -> Option<Duration> {
        self.progress_token.as_ref().map(|_| HOLD_PROGRESS_EVERY)
    }

    async fn interrupted(&mut self) -> Interruption {
        tokio::select! {
            () = self.tx.closed() => Interruption::CallerGone,
            _ = &mut self.cancelled => Interruption::CallerCancelled,
        }
    }
}

impl Gateway {
    /// The held path: ask people through the guard, keep the caller informed while they
    /// decide, then forward (approved) or refuse, naming the approval, the decision, who
    /// made it and why.
    pub(super) async fn hold_then_forward(self: Arc<Self>, held: HeldRequest) {
        let HeldRequest {
            caller,
            target,
            session,
            call,
            verdict,
            requirement,
            mask,
            mut exchange,
            tx,
        } = held;
        let client_id = call.id.get().to_string();
        let ask = HoldAsk {
            what: format!(
                "{} {:?}",
                call.method,
                call.facts.name.as_deref().unwrap_or("")
            ),
            action: call.method.clone(),
            resource: call.facts.name.clone(),
            // Approvers see the arguments masked with the default profile (by the guard).
            shown: call.facts.arguments.clone(),
            digest: None,
            reason: call.facts.reason.clone(),
        };
        // Registered so that a `notifications/cancelled` for it ends its wait: no upstream
        // has seen it to cancel.
        let owner = match &session {
            Some(s) => s.id.clone(),
            None => caller_key(&caller.identity),
        };
        let key = (owner, client_id.clone());
        let (cancel_tx, cancelled) = oneshot::channel();
        // A second request with the id of one already held (a client reusing ids) does not
        // take over the first one's cancellation, nor end it when it leaves.
        let registered = match self.held.lock().expect("lock").entry(key.clone()) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(cancel_tx);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        };
        let mut channel = ProgressChannel {
            tx: &tx,
            // Progress reaches only a caller that takes a stream.
            progress_token: call
                .facts
                .progress_token
                .as_deref()
                .filter(|_| call.streams)
                .map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::Null)),
            cancelled,
            guard: self.guard.clone(),
            told: exchange.recording().then(Vec::new),
        };
        let released = exchange
            .hold(&verdict, requirement, ask, &mut channel)
            .await;
        // Recorded once the hold gives the exchange back, in the order they were sent.
        for message in channel.told.take().unwrap_or_default() {
            record_interim(&mut exchange, message);
        }
        if registered {
            self.held.lock().expect("lock").remove(&key);
        }
        if let Err(refusal) = released {
            let request = (call.method.as_str(), call.params.as_deref());
            self.refuse_held(exchange, &refusal, request, &client_id, &tx)
                .await;
            return;
        }
        let incoming = IncomingRequest {
            id: &call.id,
            method: &call.method,
            params: call.params.as_deref(),
            facts: call.facts,
            streams: call.streams,
        };
        match self
            .forward(&caller, &target, session.as_ref(), &incoming, &mut exchange)
            .await
        {
            Ok(Forward::Upstream(in_flight)) => {
                let in_flight = InFlight { mask, ..in_flight };
                self.clone()
                    .pump(
                        caller,
                        target,
                        in_flight,
                        tx,
                        exchange,
                        call.method,
                        client_id,
                    )
                    .await;
            }
            Ok(Forward::Local(answer)) => {
                let answer = mask_local(&mask, answer, &client_id, exchange.event());
                record_final(&mut exchange, &answer, None, &tx);
                self.release(exchange.finish(Outcome::Success), answer, &client_id, &tx)
                    .await;
            }
            Err(refusal) => {
                let request = (incoming.method, incoming.params);
                self.refuse(exchange, &refusal, request, &client_id, &tx)
                    .await
            }
        }
    }

    /// A held request that ends refused. One whose caller stopped waiting (it hung up or
    /// cancelled) gets no answer, as a cancelled JSON-RPC request gets none; its event is
    /// recorded all the same.
    async fn refuse_held(
        &self,
        mut exchange: Exchange,
        refusal: &Refusal,
        request: (&str, Option<&RawValue>),
        client_id: &str,
        tx: &mpsc::Sender<Inbound>,
    ) {
        match refusal.interruption {
            Some(interruption @ (Interruption::CallerGone | Interruption::CallerCancelled)) => {
                record_request(&mut exchange, request.0, request.1);
                if interruption == Interruption::CallerGone {
                    exchange.record_caller_left();
                }
                if let Err(e) = exchange.refuse(refusal).record().await {
                    tracing::error!("recording an abandoned held request: {e}");
                }
            }
            _ => self.refuse(exchange, refusal, request, client_id, tx).await,
        }
    }
}
