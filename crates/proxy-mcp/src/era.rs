//! The two eras of MCP and the translation between them.
//!
//! Session-based revisions (2025-06-18, 2025-11-25) open with `initialize` and keep state per
//! session; the stateless revision (2026-07-28) carries the protocol version and client
//! capabilities in every request's `_meta` and is probed with `server/discover`. The gateway
//! lets a client of either era reach an upstream of either era: it answers the handshake the
//! client expects from what the upstream told it, adds `_meta` where a modern upstream needs
//! it, and adds `resultType` where a modern client expects it.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

pub const MODERN: &str = "2026-07-28";
/// Session-based versions a legacy client may ask for, newest first.
pub const LEGACY: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER: &str = "io.modelcontextprotocol/serverInfo";

/// The facts about a request that the gateway reads from its `params`, in one parse.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts {
    /// What the method acts on, read from exactly the field the upstream reads
    /// ([`target_field`]): `params.name` for tools and prompts, `params.uri` for resources;
    /// none for methods that act on nothing named.
    pub name: Option<String>,
    pub arguments: Option<Value>,
    pub protocol_version: Option<String>,
    pub progress_token: Option<String>,
    /// Why the caller asks, for a request a rule holds for approval:
    /// `_meta["dev.portcullis/reason"]`, or the `Portcullis-Reason` header.
    pub reason: Option<String>,
}

/// The `_meta` key carrying a requester's reason for a held request.
pub const META_REASON: &str = "dev.portcullis/reason";

#[derive(Deserialize)]
struct ParamsView<'a> {
    name: Option<String>,
    uri: Option<String>,
    arguments: Option<Value>,
    /// Kept raw: serde would read a struct from a JSON array too, and `_meta` must be an
    /// object.
    #[serde(rename = "_meta", borrow)]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetaView<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<String>,
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(rename = "dev.portcullis/reason")]
    reason: Option<String>,
}

/// The `params` field naming what `method` acts on: the one the specification says the
/// server reads, so the decision is made on exactly what the upstream will act on.
pub fn target_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// Why a request's `params` were refused, with what the request really targets (for the
/// audit event) when that could be read.
#[derive(Debug, Clone)]
pub struct FactsError {
    pub message: String,
    pub target: Option<String>,
}

impl From<String> for FactsError {
    fn from(message: String) -> FactsError {
        FactsError {
            message,
            target: None,
        }
    }
}

impl std::fmt::Display for FactsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl RequestFacts {
    /// Reads the facts of a `method` request; `params` that are not an object give none.
    /// A request naming its target twice with different values (`name` and `uri`) is
    /// refused: an upstream reads one of them, and which one is not the gateway's guess.
    pub fn read(
        method: Option<&str>,
        params: Option<&RawValue>,
    ) -> Result<RequestFacts, FactsError> {
        let Some(params) = params else {
            return Ok(RequestFacts::default());
        };
        if !params.get().starts_with('{') {
            return Ok(RequestFacts::default());
        }
        let view: ParamsView =
            serde_json::from_str(params.get()).map_err(|e| format!("invalid params: {e}"))?;
        let field = method.and_then(target_field);
        let (target, other, other_field) = match field {
            Some("uri") => (view.uri, view.name, "name"),
            Some(_) => (view.name, view.uri, "uri"),
            None => (None, None, ""),
        };
        if let (Some(field), Some(other)) = (field, other.as_deref())
            && target.as_deref() != Some(other)
        {
            return Err(FactsError {
                message: format!(
                    "params.{other_field} {other:?} disagrees with params.{field} {:?}: {} acts on params.{field}",
                    target.as_deref().unwrap_or(""),
                    method.unwrap_or("")
                ),
                target,
            });
        }
        let (protocol_version, progress_token, reason) = match view.meta {
            Some(raw) if raw.get().starts_with('{') => {
                let m: MetaView = serde_json::from_str(raw.get())
                    .map_err(|e| format!("invalid params._meta: {e}"))?;
                (
                    m.protocol_version,
                    m.progress_token.map(|t| t.get().to_string()),
                    m.reason,
                )
            }
            Some(raw) if raw.get() == "null" => (None, None, None),
            Some(_) => return Err(String::from("params._meta must be an object").into()),
            None => (None, None, None),
        };
        Ok(RequestFacts {
            name: target,
            arguments: view.arguments,
            protocol_version,
            progress_token,
            reason,
        })
    }
}

/// What the upstream said about itself when the gateway first reached it.
#[derive(Debug, Clone)]
pub enum UpstreamEra {
    /// Session-based: the result of the gateway's own `initialize`.
    Legacy { initialize: Value },
    /// Stateless: the result of `server/discover`.
    Modern { discover: Value },
}

impl UpstreamEra {
    pub fn is_modern(&self) -> bool {
        matches!(self, UpstreamEra::Modern { .. })
    }

    /// The `server/discover` result a modern client gets.
    pub fn discover_result(&self) -> Value {
        match self {
            UpstreamEra::Modern { discover } => discover.clone(),
            UpstreamEra::Legacy { initialize } => {
                let mut result = json!({
                    "resultType": "complete",
                    "supportedVersions": [MODERN],
                    "capabilities": initialize.get("capabilities").cloned().unwrap_or_else(|| json!({})),
                    "_meta": { META_SERVER: initialize.get("serverInfo").cloned().unwrap_or_else(|| json!({"name": "upstream", "version": "unknown"})) },
                    "ttlMs": 0,
                    "cacheScope": "private",
                });
                if let Some(instructions) = initialize.get("instructions") {
                    result["instructions"] = instructions.clone();
                }
                result
            }
        }
    }

    /// The `initialize` result a legacy client gets when the upstream is modern.
    pub fn initialize_result(&self, requested: &str) -> Value {
        let version = if LEGACY.contains(&requested) {
            requested
        } else {
            LEGACY[0]
        };
        let discover = self.discover_result();
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": discover.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "serverInfo": discover.pointer("/_meta/io.modelcontextprotocol~1serverInfo").cloned()
                .unwrap_or_else(|| json!({"name": "upstream", "version": "unknown"})),
        });
        if let Some(instructions) = discover.get("instructions") {
            result["instructions"] = instructions.clone();
        }
        result
    }
}

/// Adds the per-request `_meta` a modern upstream requires to a legacy client's params.
pub fn add_modern_meta(
    params: Option<&RawValue>,
    client_caps: &Value,
    client_info: &Value,
) -> Result<Box<RawValue>, String> {
    let mut object: Map<String, Value> = match params {
        Some(p) => serde_json::from_str(p.get()).map_err(|e| format!("invalid params: {e}"))?,
        None => Map::new(),
    };
    let meta = object
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err("params._meta must be an object".into());
    };
    meta.insert(META_VERSION.into(), Value::String(MODERN.into()));
    meta.insert(META_CAPS.into(), client_caps.clone());
    meta.insert(META_CLIENT.into(), client_info.clone());
    serde_json::value::to_raw_value(&object).map_err(|e| e.to_string())
}

/// Whether a method's result is cacheable in the 2026-07-28 sense (needs `ttlMs`/`cacheScope`).
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/read"
            | "resources/templates/list"
            | "server/discover"
    )
}

/// Makes a result fit a modern client: a `resultType`, and for cacheable results a private
/// cache scope (the gateway filters lists per caller, so no shared cache may keep them).
pub fn modernise_result(result: &mut Map<String, Value>, method: &str) {
    result
        .entry("resultType")
        .or_insert_with(|| Value::String("complete".into()));
    if is_cacheable(method) {
        result.entry("ttlMs").or_insert(json!(0));
        result.insert("cacheScope".into(), Value::String("private".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_in_one_pass() {
        let raw = RawValue::from_string(r#"{"name":"t","arguments":{"a":1},"_meta":{"progressToken":"p1","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#.into()).unwrap();
        let f = RequestFacts::read(Some("tools/call"), Some(&raw)).unwrap();
        assert_eq!(f.name.as_deref(), Some("t"));
        assert_eq!(f.arguments.unwrap()["a"], 1);
        assert_eq!(f.progress_token.as_deref(), Some("\"p1\""));
        assert_eq!(f.protocol_version.as_deref(), Some(MODERN));
    }

    #[test]
    fn meta_must_be_an_object() {
        let raw = RawValue::from_string(r#"{"_meta":["", null]}"#.into()).unwrap();
        assert!(
            RequestFacts::read(Some("tools/call"), Some(&raw))
                .unwrap_err()
                .message
                .contains("_meta")
        );
        let raw = RawValue::from_string(r#"{"_meta":null,"name":"t"}"#.into()).unwrap();
        assert_eq!(
            RequestFacts::read(Some("tools/call"), Some(&raw))
                .unwrap()
                .name
                .as_deref(),
            Some("t")
        );
    }

    #[test]
    fn the_target_is_the_field_the_upstream_reads() {
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        let read = |m: &str, s: &str| RequestFacts::read(Some(m), Some(&raw(s)));
        assert_eq!(
            read("resources/read", r#"{"uri":"file:///a"}"#)
                .unwrap()
                .name
                .as_deref(),
            Some("file:///a")
        );
        // A `name` the upstream ignores is not what is decided.
        let e = read(
            "resources/read",
            r#"{"name":"file:///ok","uri":"file:///secret"}"#,
        )
        .unwrap_err();
        assert_eq!(e.target.as_deref(), Some("file:///secret"));
        assert!(e.message.contains("acts on params.uri"), "{e}");
        let e = read("tools/call", r#"{"name":"ok","uri":"evil"}"#).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("ok"));
        assert!(read("resources/subscribe", r#"{"name":"x"}"#).is_err());
        // The same value twice is not a disagreement.
        assert!(read("resources/read", r#"{"name":"u","uri":"u"}"#).is_ok());
        // Methods that act on nothing named carry no target.
        assert_eq!(read("tools/list", r#"{"name":"x"}"#).unwrap().name, None);
    }

    #[test]
    fn legacy_initialize_becomes_discover_and_back() {
        let era = UpstreamEra::Legacy {
            initialize: json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"},"instructions":"hi"}),
        };
        let d = era.discover_result();
        assert_eq!(d["supportedVersions"][0], MODERN);
        assert_eq!(d["_meta"][META_SERVER]["name"], "s");
        let modern = UpstreamEra::Modern { discover: d };
        let init = modern.initialize_result("2025-06-18");
        assert_eq!(init["protocolVersion"], "2025-06-18");
        assert_eq!(init["serverInfo"]["name"], "s");
        assert_eq!(init["instructions"], "hi");
        assert_eq!(
            modern.initialize_result("1999-01-01")["protocolVersion"],
            LEGACY[0]
        );
    }

    #[test]
    fn meta_is_added() {
        let raw = RawValue::from_string(r#"{"name":"t"}"#.into()).unwrap();
        let out = add_modern_meta(Some(&raw), &json!({}), &json!({"name":"c"})).unwrap();
        let v: Value = serde_json::from_str(out.get()).unwrap();
        assert_eq!(v["_meta"][META_VERSION], MODERN);
        assert_eq!(v["name"], "t");
    }
}
