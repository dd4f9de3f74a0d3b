//! The two eras of MCP and the translation between them.
//!
//! Session-based revisions (2025-06-18, 2025-11-25) open with `initialize` and keep state per
//! session; the stateless revision (2026-07-28) carries the protocol version and client
//! capabilities in every request's `_meta` and is probed with `server/discover`. The gateway
//! lets a client of either era reach an upstream of either era: it answers the handshake the
//! client expects from what the upstream told it, adds `_meta` where a modern upstream needs
//! it, and adds `resultType` where a modern client expects it.

use portcullis_model::McpKind;
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
    /// Whether `_meta` carries `io.modelcontextprotocol/clientCapabilities` (not null).
    pub has_client_capabilities: bool,
    /// What a `completion/complete` completes for, read from `params.ref`.
    pub completion: Option<CompletionRef>,
    /// The URIs a `subscriptions/listen` subscribes to
    /// (`params.notifications.resourceSubscriptions`).
    pub subscriptions: Vec<String>,
}

/// What a `completion/complete` request completes arguments of, as the decided method it
/// stands for and the name policy matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRef {
    /// A prompt for a `ref/prompt` (decided as `prompts/get`), a resource for a
    /// `ref/resource` (as `resources/read`).
    pub kind: McpKind,
    /// The prompt's name, or the resource template's URI.
    pub name: String,
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
    #[serde(rename = "ref")]
    reference: Option<Value>,
    notifications: Option<Value>,
}

#[derive(Deserialize)]
struct MetaView<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<String>,
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(rename = "dev.portcullis/reason")]
    reason: Option<String>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow)]
    client_capabilities: Option<&'a RawValue>,
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
        let view: ParamsView<'_> =
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
        let (protocol_version, progress_token, reason, has_client_capabilities) = match view.meta {
            Some(raw) if raw.get().starts_with('{') => {
                let m: MetaView<'_> = serde_json::from_str(raw.get())
                    .map_err(|e| format!("invalid params._meta: {e}"))?;
                (
                    m.protocol_version,
                    m.progress_token.map(|t| t.get().to_string()),
                    m.reason,
                    m.client_capabilities.is_some(),
                )
            }
            Some(raw) if raw.get() == "null" => (None, None, None, false),
            Some(_) => return Err(String::from("params._meta must be an object").into()),
            None => (None, None, None, false),
        };
        let completion = match method {
            Some("completion/complete") => view.reference.as_ref().and_then(completion_ref),
            _ => None,
        };
        let subscriptions = match method {
            Some("subscriptions/listen") => view
                .notifications
                .as_ref()
                .map(resource_subscriptions)
                .transpose()?
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(RequestFacts {
            name: target,
            arguments: view.arguments,
            protocol_version,
            progress_token,
            reason,
            has_client_capabilities,
            completion,
            subscriptions,
        })
    }
}

/// Which revision family a caller speaks: it decides which methods exist for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEra {
    /// 2025-06-18 and 2025-11-25 (and 2025-03-26): a session opened with `initialize`.
    Session,
    /// 2026-07-28: every request stands alone and carries its `_meta`.
    Stateless,
}

impl ClientEra {
    pub fn label(self) -> &'static str {
        match self {
            ClientEra::Session => "session-based (2025-06-18/2025-11-25)",
            ClientEra::Stateless => "2026-07-28",
        }
    }
}

/// How the gateway decides a request of a known method. Every method a caller may send has
/// one; a method with none is refused (-32601) before anything reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodDecision {
    /// Opens a session. Answered by opening one; on a session that is open already it is
    /// refused (a second handshake would reset what the upstream knows of the client).
    Handshake,
    /// Acts on what [`target_field`] names: decided by policy as acting on that tool,
    /// resource or prompt (`kind`).
    Named { kind: McpKind },
    /// `completion/complete`: decided by its `ref`, as the method that reference stands for
    /// (a prompt as `prompts/get` of its name, a resource as `resources/read` of its URI
    /// template), so it answers only for what the caller may use.
    Completion,
    /// `subscriptions/listen`: every URI in `notifications.resourceSubscriptions` is decided
    /// as `resources/read` of that URI.
    Listen,
    /// Acts on nothing named (liveness, lists, discovery, tasks of the caller's own
    /// session): open to any caller a rule on the target applies to; lists are filtered by
    /// policy on the way back.
    Protocol,
}

use MethodDecision::{Completion, Handshake, Listen, Named, Protocol};

/// Acting on a named tool, prompt or resource: decided by policy on that name.
const ON_TOOL: MethodDecision = Named {
    kind: McpKind::Tool,
};
const ON_PROMPT: MethodDecision = Named {
    kind: McpKind::Prompt,
};
const ON_RESOURCE: MethodDecision = Named {
    kind: McpKind::Resource,
};

/// The requests a session-based client may send (2025-06-18 and 2025-11-25 schemas,
/// `ClientRequest`). Method names are case-sensitive: `Tools/Call` is not `tools/call`.
const SESSION_REQUESTS: &[(&str, MethodDecision)] = &[
    // The handshake.
    ("initialize", Handshake),
    // Liveness and the session's log level: nothing named.
    ("ping", Protocol),
    ("logging/setLevel", Protocol),
    // Lists: filtered by policy on the way back.
    ("tools/list", Protocol),
    ("resources/list", Protocol),
    ("resources/templates/list", Protocol),
    ("prompts/list", Protocol),
    // Acting on a named thing: decided on the field the upstream reads.
    ("tools/call", ON_TOOL),
    ("prompts/get", ON_PROMPT),
    ("resources/read", ON_RESOURCE),
    // A subscription delivers the resource's updates: decided as reading it. Ending one
    // gives nothing away, so anyone may.
    ("resources/subscribe", ON_RESOURCE),
    ("resources/unsubscribe", Protocol),
    // Argument completion: decided by what it completes for.
    ("completion/complete", Completion),
    // Tasks (2025-11-25): the session's own tasks, each begun by a decided request.
    ("tasks/get", Protocol),
    ("tasks/result", Protocol),
    ("tasks/list", Protocol),
    ("tasks/cancel", Protocol),
];

/// The requests a 2026-07-28 client may send (schema `ClientRequest`). There is no
/// handshake, `ping` or `logging/setLevel` in this revision.
const STATELESS_REQUESTS: &[(&str, MethodDecision)] = &[
    // Discovery: what the server is and offers.
    ("server/discover", Protocol),
    // Liveness. Not a 2026-07-28 method; kept because the gateway answers it itself for a
    // stateless upstream (nothing reaches the upstream), so clients may probe the gateway.
    ("ping", Protocol),
    // Lists: filtered by policy on the way back.
    ("tools/list", Protocol),
    ("resources/list", Protocol),
    ("resources/templates/list", Protocol),
    ("prompts/list", Protocol),
    // Acting on a named thing: decided on the field the upstream reads.
    ("tools/call", ON_TOOL),
    ("prompts/get", ON_PROMPT),
    ("resources/read", ON_RESOURCE),
    // Argument completion: decided by what it completes for.
    ("completion/complete", Completion),
    // The notification stream, with the resources it subscribes to decided as reads.
    ("subscriptions/listen", Listen),
];

/// The notifications a session-based client may send (2025-06-18 and 2025-11-25
/// `ClientNotification`). Anything else under `notifications/` is refused: an upstream may
/// act on notifications, and the gateway relays only what it knows the meaning of.
const SESSION_NOTIFICATIONS: &[&str] = &[
    // Lifecycle and request control.
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    // The client's roots changed (the upstream may ask for them again).
    "notifications/roots/list_changed",
    // A task the client runs for the server changed state (2025-11-25).
    "notifications/tasks/status",
];

/// The notifications a 2026-07-28 client may send: only cancellation.
const STATELESS_NOTIFICATIONS: &[&str] = &["notifications/cancelled"];

/// How a request of `method` from a caller of `era` is decided, or `None` when no revision of
/// that era has such a method (refused, -32601).
pub fn method_decision(era: ClientEra, method: &str) -> Option<MethodDecision> {
    let table = match era {
        ClientEra::Session => SESSION_REQUESTS,
        ClientEra::Stateless => STATELESS_REQUESTS,
    };
    table
        .iter()
        .find(|(known, _)| *known == method)
        .map(|(_, decision)| *decision)
}

/// Whether a caller of `era` may send the notification `method`.
pub fn is_client_notification(era: ClientEra, method: &str) -> bool {
    let table = match era {
        ClientEra::Session => SESSION_NOTIFICATIONS,
        ClientEra::Stateless => STATELESS_NOTIFICATIONS,
    };
    table.contains(&method)
}

/// The `_meta` keys every 2026-07-28 request must carry (basic/index, "Per-request protocol
/// fields": a request without one is malformed and gets -32602). `clientInfo` is only
/// recommended, so its absence is not refused.
pub const REQUIRED_REQUEST_META: &[&str] = &[META_VERSION, META_CAPS];

impl RequestFacts {
    /// The required `_meta` keys ([`REQUIRED_REQUEST_META`]) this 2026-07-28 request lacks.
    pub fn missing_request_meta(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.protocol_version.is_none() {
            missing.push(META_VERSION);
        }
        if !self.has_client_capabilities {
            missing.push(META_CAPS);
        }
        missing
    }
}

/// The decided method and name a completion `ref` stands for; `None` for a reference of
/// another type or without its name (refused by the gateway as invalid params).
fn completion_ref(reference: &Value) -> Option<CompletionRef> {
    let (kind, field) = match reference.get("type")?.as_str()? {
        "ref/prompt" => (McpKind::Prompt, "name"),
        "ref/resource" => (McpKind::Resource, "uri"),
        _ => return None,
    };
    let name = reference.get(field)?.as_str()?.to_string();
    Some(CompletionRef { kind, name })
}

/// The resource URIs a `subscriptions/listen` filter subscribes to. A list that is not all
/// strings is refused: what cannot be read cannot be decided.
fn resource_subscriptions(filter: &Value) -> Result<Vec<String>, FactsError> {
    match filter.get("resourceSubscriptions") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(uris)) => uris
            .iter()
            .map(|u| {
                u.as_str().map(str::to_string).ok_or_else(|| {
                    FactsError::from(String::from(
                        "params.notifications.resourceSubscriptions must be a list of URIs",
                    ))
                })
            })
            .collect(),
        Some(_) => Err(String::from(
            "params.notifications.resourceSubscriptions must be a list of URIs",
        )
        .into()),
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
    fn every_method_has_a_decision_per_era() {
        use ClientEra::{Session, Stateless};
        assert_eq!(method_decision(Session, "initialize"), Some(Handshake));
        assert_eq!(method_decision(Stateless, "initialize"), None);
        assert_eq!(method_decision(Session, "Tools/Call"), None);
        assert_eq!(
            method_decision(Session, "resources/subscribe"),
            Some(Named {
                kind: McpKind::Resource
            })
        );
        assert_eq!(method_decision(Stateless, "resources/subscribe"), None);
        assert_eq!(
            method_decision(Stateless, "subscriptions/listen"),
            Some(Listen)
        );
        assert_eq!(
            method_decision(Stateless, "completion/complete"),
            Some(Completion)
        );
        assert!(is_client_notification(Session, "notifications/initialized"));
        assert!(!is_client_notification(
            Session,
            "notifications/resources/updated"
        ));
        assert!(!is_client_notification(
            Stateless,
            "notifications/initialized"
        ));
        assert!(is_client_notification(Stateless, "notifications/cancelled"));
    }

    #[test]
    fn completion_and_listen_targets_and_required_meta_are_read() {
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        let read = |m: &str, s: &str| RequestFacts::read(Some(m), Some(&raw(s)));
        let f = read(
            "completion/complete",
            r#"{"ref":{"type":"ref/resource","uri":"docs://{x}"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
        )
        .unwrap();
        assert_eq!(
            f.completion,
            Some(CompletionRef {
                kind: McpKind::Resource,
                name: "docs://{x}".into()
            })
        );
        assert_eq!(f.missing_request_meta(), vec![META_CAPS]);
        let f = read(
            "completion/complete",
            r#"{"ref":{"type":"ref/tool","name":"x"}}"#,
        )
        .unwrap();
        assert_eq!(f.completion, None);
        assert_eq!(f.missing_request_meta(), vec![META_VERSION, META_CAPS]);
        let f = read(
            "subscriptions/listen",
            r#"{"notifications":{"resourceSubscriptions":["a://1","a://2"]}}"#,
        )
        .unwrap();
        assert_eq!(f.subscriptions, ["a://1", "a://2"]);
        assert!(
            read(
                "subscriptions/listen",
                r#"{"notifications":{"resourceSubscriptions":[1]}}"#
            )
            .is_err()
        );
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
