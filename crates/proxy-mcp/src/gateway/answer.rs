//! An upstream's answer on its way back: interim messages relayed and masked, lists
//! filtered by policy and pins, errors masked, the era translated.

use std::sync::Arc;

use portcullis_guard::{Exchange, UpstreamFault};
use portcullis_mask::Report;
use portcullis_model::{AuditEvent, McpKind, Outcome};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::era;
use crate::jsonrpc::{self, Message, ResponseBody, code};
use crate::link::Inbound;
use crate::masking::MaskSet;

use super::*;

/// An upstream's answer made ready for the caller.
pub(super) struct Shaped {
    /// The JSON-RPC text to release.
    pub(super) text: String,
    pub(super) outcome: Outcome,
    /// The event's detail.
    pub(super) detail: Option<String>,
    /// The result or error as released, for a recording, when the gateway read it as a value
    /// anyway (to filter or mask it): then it is not read again.
    pub(super) body: Option<AnswerBody>,
}

impl Shaped {
    fn new(text: String, outcome: Outcome, detail: Option<String>) -> Shaped {
        Shaped {
            text,
            outcome,
            detail,
            body: None,
        }
    }
}

/// An upstream's error answer, masked (its message and data are text a model reads like any
/// result), with the outcome and detail of its event; the error as a value too if `keep`.
pub(super) fn shape_error(
    target: &str,
    id: &str,
    text: String,
    error: &str,
    (mask, masked): (&MaskSet, &mut Report),
    keep: bool,
) -> Shaped {
    let mut error = serde_json::from_str::<Value>(error).unwrap_or(Value::Null);
    // The link answers for an upstream that died or broke its stream: the gateway could not
    // complete the request, which is not an error of the upstream's.
    let link_failure = error["code"] == code::UPSTREAM_UNAVAILABLE
        && error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("upstream {target}: ")));
    let outcome = if link_failure {
        Outcome::Failed
    } else {
        Outcome::UpstreamError
    };
    let text = match &mut error {
        _ if mask.is_empty() => text,
        Value::Object(object) => {
            mask.mask_error(object, masked);
            jsonrpc::response(id, &ResponseBody::Error(raw(&error)))
        }
        _ => {
            let message = format!(
                "upstream {target} answered with an error that is not a JSON object, which the masking profile cannot check"
            );
            return Shaped::new(
                jsonrpc::error(Some(id), code::INTERNAL_ERROR, &message, None),
                Outcome::UpstreamError,
                Some(message),
            );
        }
    };
    // The event's detail is the message as the caller got it: masked.
    let message = error["message"].as_str().map(str::to_string);
    Shaped {
        text,
        outcome,
        detail: message,
        body: keep.then_some(("error", error)),
    }
}

/// An answer the gateway made itself (from what the upstream told it, such as discovery's
/// instructions) is masked like an upstream's, and the event says what was masked; one that
/// cannot be read is not released.
pub(super) fn mask_local(mask: &MaskSet, answer: String, id: &str, ev: &mut AuditEvent) -> String {
    if mask.is_empty() {
        return answer;
    }
    let mut masked = Report::default();
    let answer = mask.mask_message(answer, &mut masked);
    ev.masked = summary(&masked);
    answer.unwrap_or_else(|| {
        jsonrpc::error(
            Some(id),
            code::INTERNAL_ERROR,
            "the gateway could not read its own answer to mask it",
            None,
        )
    })
}

impl Gateway {
    /// Relays an upstream's interim messages and answer to the caller, post-processes the
    /// answer, records the event, then releases the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pump(
        self: Arc<Self>,
        caller: Caller,
        target: Arc<TargetRuntime>,
        in_flight: InFlight,
        tx: mpsc::Sender<Inbound>,
        mut exchange: Exchange,
        method: String,
        client_id: String,
    ) {
        let InFlight {
            link,
            mut upstream,
            driver,
            owner,
            shape,
            mask,
        } = in_flight;
        let mut masked = Report::default();
        // Interim messages of a masked request are masked one by one as they pass; one that
        // cannot be read cannot be masked, and is not relayed. A caller without a stream
        // gets none of them, so none is sent or recorded.
        let relay = async |text: String, masked: &mut Report, exchange: &mut Exchange| {
            if !shape.streams {
                return;
            }
            let keep = exchange.recording();
            let Some((text, message)) = mask.mask_message_kept(text, masked, keep) else {
                return;
            };
            if tx.send(Inbound::Interim(text)).await.is_err() {
                exchange.record_caller_left();
            } else if let Some(message) = message {
                record_interim(exchange, message);
            }
        };
        let deadline = tokio::time::sleep(self.settings.request_timeout);
        tokio::pin!(deadline);
        // The HTTP exchange runs inside this task; once done it parks forever so the
        // select below keeps reading what it delivered.
        let driver = async move {
            if let Some(driver) = driver {
                driver.await;
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(driver);
        let answer = loop {
            tokio::select! {
                () = &mut driver => unreachable!("the driver never completes"),
                msg = upstream.recv() => match msg {
                    Some(Inbound::Interim(text)) if shape.modern_client => {
                        // A stateless caller cannot answer a server-to-client request: refuse
                        // it for the caller, so the upstream does not wait forever.
                        match Message::parse(text.as_bytes(), usize::MAX) {
                            Ok(Message::Request { id, .. }) => {
                                let reply = jsonrpc::error(Some(id.get()), code::METHOD_NOT_FOUND, "the gateway does not relay server-to-client requests to stateless callers", None);
                                let _ = link.send(reply, "").await;
                            }
                            _ => relay(text, &mut masked, &mut exchange).await,
                        }
                    }
                    Some(Inbound::Interim(text)) => relay(text, &mut masked, &mut exchange).await,
                    Some(Inbound::Final(text)) => break Ok(text),
                    // The caller cancelled it or its session closed: not the upstream's fault
                    // (an upstream that dies answers through the link, `shape_error`).
                    None => break Err((None, "the request was cancelled".to_string())),
                },
                _ = &mut deadline => {
                    link.cancel(&owner, &client_id, "timed out at the gateway").await;
                    break Err((Some(UpstreamFault::Timeout), format!("no answer within {:?}", self.settings.request_timeout)));
                }
            }
        };
        let (answer, outcome, body) = match answer {
            Ok(text) => {
                let keep = exchange.recording();
                let shaped = self
                    .shape_answer(
                        (&caller, &target),
                        text,
                        &method,
                        shape,
                        (&mask, &mut masked),
                        keep,
                    )
                    .await;
                if shaped.outcome == Outcome::Failed {
                    // The link's own answer for an upstream that died with the call in
                    // flight (see `shape_error`).
                    exchange.upstream_failed(UpstreamFault::Closed);
                }
                let ev = exchange.event();
                ev.detail = shaped.detail;
                ev.masked = summary(&masked);
                (shaped.text, shaped.outcome, shaped.body)
            }
            Err((fault, why)) => {
                if let Some(fault) = fault {
                    exchange.upstream_failed(fault);
                }
                let message = format!("upstream {}: {why}", target.name);
                exchange.event().detail = Some(message.clone());
                let answer =
                    jsonrpc::error(Some(&client_id), code::UPSTREAM_UNAVAILABLE, &message, None);
                (answer, Outcome::Failed, None)
            }
        };
        record_final(&mut exchange, &answer, body, &tx);
        self.release(exchange.finish(outcome), answer, &client_id, &tx)
            .await;
    }

    /// Filters and translates an upstream answer: the text to release, the outcome and a
    /// detail for the event, and (if `keep`, for a recording) the result or error as a
    /// value when it was read as one.
    pub(super) async fn shape_answer(
        &self,
        (caller, target): (&Caller, &TargetRuntime),
        text: String,
        method: &str,
        shape: Shape,
        // The profiles masking the answer, and where to count what they mask.
        (mask, masked): (&MaskSet, &mut Report),
        keep: bool,
    ) -> Shaped {
        let Ok(Message::Response { id, body }) =
            Message::parse(text.as_bytes(), self.settings.max_bytes)
        else {
            return Shaped::new(
                text,
                Outcome::UpstreamError,
                Some("malformed answer from upstream".into()),
            );
        };
        let result = match body {
            ResponseBody::Error(e) => {
                let error = e.get();
                return shape_error(&target.name, id.get(), text, error, (mask, masked), keep);
            }
            ResponseBody::Result(r) => r,
        };
        if !(shape.filter.is_some()
            || shape.modernise
            || shape.legacy_client_over_modern
            || !mask.is_empty())
        {
            return Shaped::new(text, Outcome::Success, None);
        }
        let Ok(Value::Object(mut result)) = serde_json::from_str::<Value>(result.get()) else {
            if !mask.is_empty() {
                // What cannot be read cannot be masked: it does not leave.
                let message = format!(
                    "upstream {} answered with a result that is not a JSON object, which the masking profile cannot check",
                    target.name
                );
                return Shaped::new(
                    jsonrpc::error(Some(id.get()), code::INTERNAL_ERROR, &message, None),
                    Outcome::UpstreamError,
                    Some(message),
                );
            }
            return Shaped::new(text, Outcome::Success, None);
        };
        let mut detail = None;
        if shape.legacy_client_over_modern
            && result.get("resultType").and_then(Value::as_str) == Some("input_required")
        {
            let message = format!(
                "upstream {} asked for more input (a 2026-07-28 multi-round-trip request), which the gateway cannot relay to a session-based client",
                target.name
            );
            return Shaped::new(
                jsonrpc::error(Some(id.get()), code::INTERNAL_ERROR, &message, None),
                Outcome::UpstreamError,
                Some(message),
            );
        }
        if let Some(filter) = shape.filter
            && let Some(Value::Array(items)) = result.remove(filter.key)
        {
            let total = items.len();
            let mut visible = Vec::with_capacity(total);
            let mut withheld = Vec::new();
            for item in items {
                let Some(name) = item.get(filter.name).and_then(Value::as_str) else {
                    continue;
                };
                if !self
                    .guard
                    .visible(&caller.identity, &target.name, filter.kind, name)
                {
                    continue;
                }
                let pinned = filter.kind != McpKind::Tool
                    || self.tool_pin_holds(caller, target, &item, name).await;
                if pinned {
                    visible.push(item);
                } else {
                    withheld.push(name.to_string());
                }
            }
            detail = Some(format!(
                "{} of {total} {} shown{}",
                visible.len(),
                filter.key,
                if withheld.is_empty() {
                    String::new()
                } else {
                    format!("; withheld after a change: {}", withheld.join(", "))
                }
            ));
            result.insert(filter.key.into(), Value::Array(visible));
        }
        // After the filter, which matches on names and pins on definitions as the upstream
        // sent them.
        mask.mask_result(&mut result, masked);
        if shape.modernise {
            era::modernise_result(&mut result, method);
        }
        let result = Value::Object(result);
        let text = jsonrpc::result(id.get(), &result.to_string());
        Shaped {
            text,
            outcome: Outcome::Success,
            detail,
            body: keep.then_some(("result", result)),
        }
    }
}
