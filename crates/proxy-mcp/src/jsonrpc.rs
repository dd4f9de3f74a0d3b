//! JSON-RPC 2.0 envelopes, parsed once and strictly.
//!
//! The gateway authorises exactly the bytes it forwards: a message is checked for duplicate
//! object keys anywhere (two parsers could otherwise disagree on which `name` was meant), its
//! envelope is validated, and `params`/`result` are kept as raw JSON so what reaches the
//! upstream is byte for byte what policy looked at.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// JSON-RPC and MCP error codes used by the gateway.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Gateway-defined (implementation range -32000..-32019): refused by policy.
    pub const POLICY_DENIED: i64 = -32010;
    /// Gateway-defined: the policy holds the request for approval, which is not available.
    pub const POLICY_HOLD: i64 = -32011;
    /// Gateway-defined: the upstream is unreachable, failed or timed out.
    pub const UPSTREAM_UNAVAILABLE: i64 = -32012;
    /// Gateway-defined: the audit log could not record the request, so it was refused.
    pub const AUDIT_UNAVAILABLE: i64 = -32013;
    /// Gateway-defined: the tool changed since it was pinned and is withheld.
    pub const TOOL_PIN_MISMATCH: i64 = -32014;
    /// MCP 2026-07-28: HTTP headers do not match the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// MCP 2026-07-28: unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// A JSON-RPC id: a string or a number, kept as raw JSON text.
pub type Id = Box<RawValue>;

/// One parsed JSON-RPC message.
#[derive(Debug)]
pub enum Message {
    Request {
        id: Id,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    Response {
        id: Id,
        body: ResponseBody,
    },
}

#[derive(Debug)]
pub enum ResponseBody {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

impl ResponseBody {
    pub fn is_error(&self) -> bool {
        matches!(self, ResponseBody::Error(_))
    }
}

/// Why a message was refused, with the JSON-RPC code to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EnvelopeError {
    pub code: i64,
    pub message: String,
    /// The request id, when it could be read, so the error can answer it.
    pub id: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    /// `"id": null` is kept as `Some("null")` (refused below) rather than read as absent,
    /// which would turn a request into a notification.
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

/// A member that is present, even as `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl Message {
    /// Parses one message. `max_bytes` bounds the input; larger input is refused unread.
    pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<Message, EnvelopeError> {
        let fail = |code, message: String| EnvelopeError {
            code,
            message,
            id: None,
        };
        if bytes.len() > max_bytes {
            return Err(fail(
                code::INVALID_REQUEST,
                format!(
                    "message of {} bytes exceeds the limit of {max_bytes} bytes",
                    bytes.len()
                ),
            ));
        }
        portcullis_model::json::check_no_duplicate_keys(bytes)
            .map_err(|e| fail(code::PARSE_ERROR, e))?;
        let trimmed = trim_ascii_start(bytes);
        if trimmed.first() == Some(&b'[') {
            return Err(fail(
                code::INVALID_REQUEST,
                "JSON-RPC batches are not supported by MCP; send one message per request".into(),
            ));
        }
        if trimmed.first() != Some(&b'{') {
            return Err(fail(
                code::INVALID_REQUEST,
                "a JSON-RPC message must be a JSON object".into(),
            ));
        }
        let env: RawEnvelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
            fail(
                code::INVALID_REQUEST,
                format!("not a JSON-RPC message: {e}"),
            )
        })?;
        let id_text = env.id.as_ref().map(|id| id.get().to_string());
        let invalid = |message: &str| EnvelopeError {
            code: code::INVALID_REQUEST,
            message: message.to_string(),
            id: id_text.clone(),
        };
        if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\""));
        }
        if let Some(id) = &env.id {
            let text = id.get();
            let is_string = text.starts_with('"');
            let is_integer = text
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'));
            if !(is_string || (is_integer && !text.is_empty() && text != "-")) {
                return Err(invalid("\"id\" must be a string or an integer"));
            }
        }
        if let Some(params) = &env.params
            && !matches!(params.get().as_bytes().first(), Some(b'{') | Some(b'['))
        {
            return Err(invalid("\"params\" must be an object or an array"));
        }
        match (env.id, env.method, env.result, env.error) {
            (Some(id), Some(method), None, None) => Ok(Message::Request {
                id,
                method,
                params: env.params,
            }),
            (None, Some(method), None, None) => Ok(Message::Notification {
                method,
                params: env.params,
            }),
            (Some(id), None, Some(result), None) if env.params.is_none() => Ok(Message::Response {
                id,
                body: ResponseBody::Result(result),
            }),
            (Some(id), None, None, Some(error)) if env.params.is_none() => Ok(Message::Response {
                id,
                body: ResponseBody::Error(error),
            }),
            _ => Err(invalid(
                "not a JSON-RPC request, notification or response (check id, method, result and error)",
            )),
        }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }
}

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Serialises a request with the given id and the original `params` bytes.
pub fn request(id: &str, method: &str, params: Option<&RawValue>) -> String {
    let method = serde_json::to_string(method).expect("string serialises");
    match params {
        Some(p) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{method},"params":{}}}"#,
            p.get()
        ),
        None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{method}}}"#),
    }
}

pub fn notification(method: &str, params: Option<&RawValue>) -> String {
    let method = serde_json::to_string(method).expect("string serialises");
    match params {
        Some(p) => format!(
            r#"{{"jsonrpc":"2.0","method":{method},"params":{}}}"#,
            p.get()
        ),
        None => format!(r#"{{"jsonrpc":"2.0","method":{method}}}"#),
    }
}

pub fn response(id: &str, body: &ResponseBody) -> String {
    match body {
        ResponseBody::Result(r) => result(id, r.get()),
        ResponseBody::Error(e) => format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{}}}"#, e.get()),
    }
}

pub fn result(id: &str, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// An error response. `id` is raw JSON text; `None` answers with `"id": null` as JSON-RPC
/// requires when the id could not be read.
pub fn error(
    id: Option<&str>,
    code: i64,
    message: &str,
    data: Option<serde_json::Value>,
) -> String {
    #[derive(Serialize)]
    struct ErrorObject<'a> {
        code: i64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    }
    let body = serde_json::to_string(&ErrorObject {
        code,
        message,
        data,
    })
    .expect("error serialises");
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{body}}}"#,
        id.unwrap_or("null")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, EnvelopeError> {
        Message::parse(text.as_bytes(), 1 << 20)
    }

    #[test]
    fn request_keeps_params_bytes() {
        let m = parse(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x", "arguments":{}}}"#).unwrap();
        match m {
            Message::Request { id, method, params } => {
                assert_eq!(id.get(), "7");
                assert_eq!(method, "tools/call");
                assert_eq!(params.unwrap().get(), r#"{"name":"x", "arguments":{}}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_rejected_at_any_depth() {
        let e = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, code::PARSE_ERROR);
        assert!(
            e.message.contains("duplicate key \"name\""),
            "{}",
            e.message
        );
        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[{"k":1,"k":2}]}}"#)
            .unwrap_err();
        assert!(e.message.contains("duplicate"));
        // escaped spelling of the same key is still the same key
        let e = parse(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":1,"n\u0061me":2}}"#)
            .unwrap_err();
        assert!(e.message.contains("duplicate"));
    }

    #[test]
    fn malformed_inputs_get_proper_codes() {
        assert_eq!(parse("{not json").unwrap_err().code, code::PARSE_ERROR);
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"m"} trailing"#)
                .unwrap_err()
                .code,
            code::PARSE_ERROR
        );
        assert_eq!(parse("[]").unwrap_err().code, code::INVALID_REQUEST);
        assert_eq!(parse("42").unwrap_err().code, code::INVALID_REQUEST);
        assert_eq!(
            parse(r#"{"id":1,"method":"m"}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":3}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#)
                .unwrap_err()
                .code,
            code::INVALID_REQUEST
        );
        let e = parse(r#"{"jsonrpc":"2.0","id":"abc","method":5}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        let e = parse(r#"{"jsonrpc":"1","id":"abc","method":"m"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("\"abc\""));
        // A null id is not an absent one: this is not a notification.
        let e = parse(r#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_REQUEST);
        assert_eq!(e.id.as_deref(), Some("null"));
    }

    #[test]
    fn oversized_refused_unread() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"x":"{}"}}}}"#,
            "a".repeat(2000)
        );
        let e = Message::parse(big.as_bytes(), 1024).unwrap_err();
        assert!(e.message.contains("exceeds"));
    }

    #[test]
    fn notifications_and_responses() {
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification { .. }
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap(),
            Message::Response {
                body: ResponseBody::Result(_),
                ..
            }
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#).unwrap(),
            Message::Response {
                body: ResponseBody::Error(_),
                ..
            }
        ));
    }

    #[test]
    fn builders_produce_valid_messages() {
        let params = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let text = request("5", "tools/call", Some(&params));
        assert!(matches!(parse(&text).unwrap(), Message::Request { .. }));
        let text = error(None, code::PARSE_ERROR, "bad \"x\"", None);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["code"], -32700);
    }
}
