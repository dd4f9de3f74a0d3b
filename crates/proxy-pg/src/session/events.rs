//! Each statement's request in the guard: its exchange opened with the statement's facts,
//! refusals recorded at once, finished runs kept for the end of their batch and recorded
//! together before its ReadyForQuery reaches the client.

use std::sync::Arc;

use portcullis_guard::{Exchange, Refusal, summary};
use portcullis_mask::Report;
use portcullis_model::{Outcome, StatementRecord};
use serde_json::json;

use super::{Admitted, Bound, Frame, Owed, Session, StatementRun, recording};
use crate::classify::{Classified, ClassifyError};
use crate::wire;

impl Session {
    /// Opens the exchange of one request: the session's next request id and, when the text
    /// parsed, the statement's facts (its kind, tables and normalised text).
    pub(super) fn statement_exchange(&mut self, classified: Option<&Classified>) -> Exchange {
        self.seq += 1;
        let record = classified.map(|c| {
            let statement = &c.statement;
            StatementRecord {
                text: self.loggable(&c.normalized),
                fingerprint: c.fingerprint.clone(),
                kinds: statement.kinds.clone(),
                tables: statement.tables.clone(),
                functions: statement.functions.clone(),
                rows: None,
            }
        });
        let mut exchange = self.proxy.guard.exchange(&self.origin);
        let ev = exchange.event();
        ev.request_id = Some(self.seq.to_string());
        if let Some(c) = classified {
            let statement = &c.statement;
            ev.action = Some(statement.kind.clone());
            ev.resource = (!statement.tables.is_empty()).then(|| statement.tables.join(","));
        }
        ev.statement = record;
        exchange
    }

    /// The exchange of one execution of a statement decided earlier (at Parse), of the
    /// portal `portal` bound as `bound`; `None` for the empty statement, which is no request.
    /// The recording keeps the statement's text and the values bound to it.
    pub(super) fn run_exchange(&mut self, bound: &Bound, portal: &str) -> Option<Exchange> {
        let admitted = &bound.admitted;
        if admitted.classified.statement.kind.is_empty() {
            return None;
        }
        let mut exchange = self.statement_exchange(Some(&admitted.classified));
        exchange.note_verdict(&admitted.verdict);
        recording::record_request(&mut exchange, "execute", || {
            let statement: &Classified = &admitted.classified;
            // A statement that can carry a credential keeps no bind values: nothing says
            // which of them is the password.
            let params = if statement.holds_credentials {
                serde_json::Value::String(format!(
                    "withheld: {} value(s) of a statement that can carry a credential",
                    bound
                        .recorded_parameters
                        .as_deref()
                        .map_or(0, |p| p.as_array().map_or(0, Vec::len))
                ))
            } else {
                bound
                    .recorded_parameters
                    .as_deref()
                    .cloned()
                    .unwrap_or_default()
            };
            json!({
                "sql": recording::recorded_text(statement),
                "params": params,
                "portal": portal,
            })
        });
        Some(exchange)
    }

    /// Records a refused request now: nothing of it reaches the server, so nothing waits
    /// for the batch's end. A client gone during a hold ends the session.
    pub(super) async fn record_refusal(&mut self, mut exchange: Exchange, refusal: &Refusal) {
        if refusal.caller_gone() {
            exchange.record_caller_left();
            self.client_went_away();
        }
        if let Err(e) = exchange.refuse(refusal).record().await {
            tracing::error!(session = ?self.origin.session, "cannot record a refusal: {e}");
        }
    }

    /// A refusal before there is a statement to speak of (unparseable text, fast-path call).
    /// `request`: the message's kind and text, for the recording.
    pub(super) async fn record_refusal_now(
        &mut self,
        refusal: &Refusal,
        request: Option<(&str, &str)>,
    ) {
        let mut exchange = self.statement_exchange(None);
        if let Some((kind, sql)) = request {
            recording::record_request(&mut exchange, kind, || json!({ "sql": sql }));
        }
        self.record_refusal(exchange, refusal).await;
    }

    /// The statements of a message that was refused because another one was.
    pub(super) async fn record_not_run(
        &mut self,
        admitted: Vec<(Arc<Admitted>, Exchange)>,
        why: &str,
    ) {
        for (_, mut exchange) in admitted {
            exchange.event().detail = Some(format!(
                "not run: another statement of the same message was refused ({why})"
            ));
            if let Err(e) = exchange.finish(Outcome::Denied).record().await {
                tracing::error!(session = ?self.origin.session, "cannot record a refusal: {e}");
            }
        }
    }

    /// The refusal of a text that does not parse, for the client and the log. The parser's
    /// message quotes the text near the error (`syntax error at or near "'ada@example.com'"`),
    /// which was never normalised: quoted parts are withheld and the `default` profile's
    /// detectors see the rest. The position still tells the client where to look.
    pub(super) fn unparseable(&self, e: &ClassifyError) -> String {
        let message = format!("the statement does not parse, so it is refused: {e}");
        let withheld = super::server::withhold_quoted_values(&message).unwrap_or(message);
        self.proxy
            .guard
            .masks()
            .mask_text_default(&withheld, "$.detail", &mut Report::default())
    }

    /// The normalised text as the log may keep it. Normalising replaces literals but keeps
    /// comments, and a comment can hold anything (a pasted token, an email): texts with
    /// one go through the `default` profile's detectors first.
    pub(super) fn loggable(&self, normalized: &str) -> String {
        if !(normalized.contains("--") || normalized.contains("/*")) {
            return normalized.to_string();
        }
        self.proxy.guard.masks().mask_text_default(
            normalized,
            "$.statement",
            &mut Report::default(),
        )
    }

    /// A statement's run is over: its exchange finishes with what the server answered, and
    /// its event waits for the batch's end.
    pub(super) fn finish_statement(
        &mut self,
        mut run: StatementRun,
        outcome: Outcome,
        detail: &str,
    ) {
        let Some(mut exchange) = run.exchange.take() else {
            return;
        };
        let ev = exchange.event();
        ev.duration_ms = Some(run.started.elapsed().as_secs_f64() * 1000.0);
        if let Some(s) = ev.statement.as_mut() {
            s.rows = (outcome == Outcome::Success || outcome == Outcome::Denied)
                .then_some(run.rows_sent);
        }
        if !detail.is_empty() {
            ev.detail = Some(detail.to_string());
        }
        ev.masked = summary(&run.report);
        self.events.push(exchange.finish(outcome));
    }

    /// ReadyForQuery: the batch is over. Its events are recorded (durably, in strict mode)
    /// before the client may send more.
    pub(super) async fn release(&mut self, frame: Frame) {
        if self.record_pending().await {
            frame.write_to(&mut self.to_client);
        }
    }

    /// Records the events waiting for their batch's end. `false`: the log failed, the
    /// client is told and the session ends.
    pub(super) async fn record_pending(&mut self) -> bool {
        if self.events.is_empty() {
            return true;
        }
        let finished = std::mem::take(&mut self.events);
        if let Err(e) = self.proxy.guard.record_all(finished).await {
            wire::fatal(
                &mut self.to_client,
                wire::IO_ERROR,
                &format!(
                    "portcullis: the audit log cannot be written ({e}); the session is closed"
                ),
                None,
            );
            self.ended = Some(format!("the audit log failed: {e}"));
            return false;
        }
        true
    }

    /// The session ends with answers outstanding: their statements still get events, and
    /// when the client is who left, their recordings say so.
    pub(super) async fn finish_unanswered(&mut self, why: &str) {
        let caller_left = self.client_left;
        let unfinished = |mut run: StatementRun| {
            if caller_left {
                run.record_caller_left();
            }
            run
        };
        let mut runs = Vec::new();
        if let Some((_, run)) = self.deferred.take() {
            runs.push((unfinished(run), "not run"));
        }
        while let Some(owed) = self.owed.pop_front() {
            match owed {
                Owed::Execute(run) => runs.push((unfinished(run), "unfinished")),
                Owed::Query(mut run) => {
                    while let Some(s) = run.statements.pop_front() {
                        runs.push((unfinished(s), "unfinished"));
                    }
                }
                _ => {}
            }
        }
        for (run, what) in runs {
            self.finish_statement(run, Outcome::Failed, &format!("{what}: {why}"));
        }
        let finished = std::mem::take(&mut self.events);
        if let Err(e) = self.proxy.guard.record_all(finished).await {
            tracing::error!(session = ?self.origin.session, "cannot record a refusal: {e}");
        }
    }
}
