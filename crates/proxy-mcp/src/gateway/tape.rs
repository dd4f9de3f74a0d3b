//! What a recorded exchange keeps of an MCP request: the request as it was forwarded (or
//! answered by the gateway itself), every message relayed to the caller while it ran, and
//! the answer as the caller received it, after masking.
//!
//! Nothing here runs unless the exchange records ([`Exchange::recording`]): with recording
//! off no value is built. The guard masks the request with the `[recording]` profile; the
//! answers are recorded as released, so a recording never holds more than the caller saw.

use portcullis_guard::Exchange;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::link::Inbound;

/// Records the request `method` with its `params` as they went upstream (or as the gateway
/// answered them itself).
pub(super) fn record_request(exchange: &mut Exchange, method: &str, params: Option<&RawValue>) {
    if !exchange.recording() {
        return;
    }
    // The params were read as JSON at the front door, so they parse.
    let params = params
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .unwrap_or(Value::Null);
    exchange.record_request("request", json!({"method": method, "params": params}));
}

/// The kind of a message relayed while a request runs: a progress or log notification,
/// another notification, or a request of the server's (sampling, elicitation).
fn interim_kind(message: &Map<String, Value>) -> &'static str {
    match message.get("method").and_then(Value::as_str) {
        Some("notifications/progress") => "progress",
        Some("notifications/message") => "log",
        Some(_) if message.contains_key("id") => "server-request",
        _ => "notification",
    }
}

/// Records a message relayed to the caller while its request runs, whole, as sent.
pub(super) fn record_interim(exchange: &mut Exchange, message: Map<String, Value>) {
    exchange.record_answer(interim_kind(&message), Value::Object(message));
}

/// The part of a released JSON-RPC answer a record keeps: its result or its error.
pub(super) type AnswerBody = (&'static str, Value);

/// The result or error of `answer`, the JSON-RPC text released to the caller.
fn answer_body(answer: &str) -> AnswerBody {
    match serde_json::from_str::<Value>(answer) {
        Ok(Value::Object(mut message)) => {
            if let Some(result) = message.remove("result") {
                ("result", result)
            } else if let Some(error) = message.remove("error") {
                ("error", error)
            } else {
                ("answer", Value::Object(message))
            }
        }
        _ => ("answer", Value::String(answer.to_string())),
    }
}

/// Whether the caller has gone: nothing sent on `tx` reaches it any more. A recording
/// exchange notes that the caller left.
pub(super) fn caller_left(exchange: &mut Exchange, tx: &mpsc::Sender<Inbound>) -> bool {
    let gone = tx.is_closed();
    if gone {
        exchange.record_caller_left();
    }
    gone
}

/// Records the final answer as it is about to be released: `body` when the gateway holds
/// the result or error as a value already (masked or filtered), otherwise read from the
/// text. A caller that has gone receives nothing more, so nothing more is recorded; the
/// record says it left.
pub(super) fn record_final(
    exchange: &mut Exchange,
    answer: &str,
    body: Option<AnswerBody>,
    tx: &mpsc::Sender<Inbound>,
) {
    if !exchange.recording() || caller_left(exchange, tx) {
        return;
    }
    record_released(exchange, answer, body);
}

/// Records `answer` as released (see [`record_final`]), where the answer has no stream to
/// leave by (`initialize` answers on its own HTTP response).
pub(super) fn record_released(exchange: &mut Exchange, answer: &str, body: Option<AnswerBody>) {
    if !exchange.recording() {
        return;
    }
    let (kind, body) = body.unwrap_or_else(|| answer_body(answer));
    exchange.record_answer(kind, body);
}
