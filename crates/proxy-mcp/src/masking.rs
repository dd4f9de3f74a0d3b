//! Masking on the MCP path: the profiles of the configuration, compiled once, and where in
//! each MCP message they apply.
//!
//! Outbound, every message that reaches the caller is masked: answers (results and errors)
//! of every method, `initialize` included, the interim messages of a request (progress, log
//! messages, server-to-client requests) and a session's standalone stream, each message on
//! its own, so streaming never buffers more than one. Every string is masked, at any depth
//! and whatever the content type, except the few protocol fields listed in
//! [`PROTOCOL_FIELDS`] and base64 bytes (`blob`, image and audio `data`), which masking
//! would corrupt.
//!
//! Which profiles apply ([`Masks::for_caller`]): the one the deciding rule names, and every
//! profile named by an allow rule that applies to the caller on the target; a caller whose
//! rules name none gets no masking, and then no answer is parsed for it.
//!
//! Inbound, the tool-call arguments are classified (not changed) with the `default` profile,
//! and the detectors that fired become `findings` for policy.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use portcullis_guard::Masks;
use portcullis_mask::{Profile, Report};
use serde_json::{Map, Value};

/// Members of a message that are never masked: they identify or steer the exchange (which
/// request, which page, which protocol) and carry no data, and masking them breaks it (a
/// progress token rewritten to `[PASSWORD]` matches no request). They are kept only where the
/// protocol puts them (at the top of `params` or `result`, and in the `_meta` there) and only
/// with a value the protocol could have put there ([`legitimate_protocol_value`]): anything
/// else under those names is masked like any member. The
/// envelope (`jsonrpc`, `id`, `method`) and an error's `code` are never masked either.
/// Everything else is masked, names and URIs included: a URI that carries a detected value
/// reaches the caller masked, and cannot be used to read it.
const PROTOCOL_FIELDS: &[&str] = &[
    "progressToken",
    "requestId",
    "cursor",
    "nextCursor",
    "protocolVersion",
    "resultType",
    crate::era::META_VERSION,
];

/// The masking profiles one message passes through, applied in turn. Empty: nothing is
/// masked, and nothing is parsed for it.
#[derive(Clone, Default)]
pub struct MaskSet(Vec<Arc<Profile>>);

impl std::fmt::Debug for MaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskSet({})", self.0.len())
    }
}

impl MaskSet {
    /// The profiles for what a caller receives from a target: the deciding rule's
    /// (`rule_profile`, if any), then every profile `named` by the caller's allow rules on
    /// the target ([`portcullis_guard::Guard::masks_for`]), without repeats. Err names a
    /// profile that is not loaded (configuration validation makes that unreachable).
    pub fn for_caller(
        masks: &Masks,
        named: &[Arc<str>],
        rule_profile: Option<&str>,
    ) -> Result<MaskSet, String> {
        let mut profiles = Vec::new();
        // `masks_for` names each profile once; only the rule's own may repeat among them.
        let others = named
            .iter()
            .map(|n| &**n)
            .filter(|n| Some(*n) != rule_profile);
        for name in rule_profile.into_iter().chain(others) {
            let profile = masks.profile(name).ok_or_else(|| {
                format!(
                    "masking profile {name:?} is not loaded; refusing rather than answer unmasked"
                )
            })?;
            profiles.push(profile);
        }
        Ok(MaskSet(profiles))
    }

    pub fn of(profiles: Vec<Arc<Profile>>) -> MaskSet {
        MaskSet(profiles)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Masks a result in place, every member but the protocol fields; paths start at `$`.
    /// `structuredContent` is masked as a root of its own, so `fields` paths such as
    /// `customer.card` name its members as they always did.
    pub fn mask_result(&self, result: &mut Map<String, Value>, report: &mut Report) {
        for profile in &self.0 {
            let structured = result.remove("structuredContent");
            mask_members(profile, result, "$", report);
            if let Some(mut structured) = structured {
                mask_tree(profile, &mut structured, "$.structuredContent", report);
                result.insert("structuredContent".into(), structured);
            }
        }
    }

    /// Masks an error object in place: its `message` and `data` (and whatever else it
    /// carries), not its `code`; paths start at `$.error`.
    pub fn mask_error(&self, error: &mut Map<String, Value>, report: &mut Report) {
        let code = error.remove("code");
        let mut value = Value::Object(std::mem::take(error));
        for profile in &self.0 {
            mask_tree(profile, &mut value, "$.error", report);
        }
        if let Value::Object(masked) = value {
            *error = masked;
        }
        if let Some(code) = code {
            error.insert("code".into(), code);
        }
    }

    /// Masks one whole JSON-RPC message the upstream sent (a notification, a server-to-client
    /// request, or an answer). Returns the text to relay: unchanged when nothing matched (or
    /// the set is empty), masked otherwise, or `None` when it cannot be read, since what
    /// cannot be read cannot be masked and must not leave.
    pub fn mask_message(&self, text: String, report: &mut Report) -> Option<String> {
        self.mask_message_kept(text, report, false)
            .map(|(text, _)| text)
    }

    /// [`MaskSet::mask_message`], also handing back the message as the caller receives it
    /// when `keep` is set (a recorded exchange keeps it): a set that masks has parsed it
    /// already, so it is not read twice. `None` as a message: it is not a JSON object.
    pub fn mask_message_kept(
        &self,
        text: String,
        report: &mut Report,
        keep: bool,
    ) -> Option<(String, Option<Map<String, Value>>)> {
        if self.is_empty() {
            // Read only for the recording: relaying needs no parse.
            let kept = match keep.then(|| serde_json::from_str::<Value>(&text)) {
                Some(Ok(Value::Object(message))) => Some(message),
                _ => None,
            };
            return Some((text, kept));
        }
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(&text) else {
            return None;
        };
        if self.request_id_carries_a_value(&message) {
            return None;
        }
        let before = report.total();
        if let Some(Value::Object(params)) = message.get_mut("params") {
            for profile in &self.0 {
                mask_members(profile, params, "$.params", report);
            }
        } else if let Some(params) = message.get_mut("params") {
            // Positional params (an array): no protocol field to keep.
            for profile in &self.0 {
                mask_tree(profile, params, "$.params", report);
            }
        }
        if let Some(Value::Object(result)) = message.get_mut("result") {
            self.mask_result(result, report);
        }
        if let Some(Value::Object(error)) = message.get_mut("error") {
            self.mask_error(error, report);
        }
        let text = if report.total() == before {
            text
        } else {
            serde_json::to_string(&message).ok()?
        };
        Some((text, keep.then_some(message)))
    }
}

impl MaskSet {
    /// Whether `message` is a server-to-client request whose id a detector of the set flags.
    /// Such an id cannot be masked (the caller's answer must carry it back as sent to reach
    /// the upstream), so the request is not relayed at all: the upstream hears no answer, as
    /// when a client declines. The ids of answers are the caller's own and are left alone.
    fn request_id_carries_a_value(&self, message: &Map<String, Value>) -> bool {
        if !message.contains_key("method") {
            return false;
        }
        let Some(id @ (Value::String(_) | Value::Number(_))) = message.get("id") else {
            return false;
        };
        self.0
            .iter()
            .any(|profile| !legitimate_protocol_value(profile, "id", id))
    }
}

/// Masks every string of `value` with one profile, base64 bytes kept, then the text those
/// bytes carry ([`mask_text_blobs`]).
fn mask_tree(profile: &Profile, value: &mut Value, path: &str, report: &mut Report) {
    profile.mask_json_keeping(value, path, report, &is_binary);
    mask_text_blobs(profile, value, &mut path.to_string(), report);
}

/// Masks the members of `params` or `result` with one profile, setting the protocol fields
/// (there and in its `_meta`) aside and putting them back after.
fn mask_members(
    profile: &Profile,
    object: &mut Map<String, Value>,
    path: &str,
    report: &mut Report,
) {
    let kept = take_protocol_fields(profile, object);
    let kept_meta = match object.get_mut("_meta") {
        Some(Value::Object(meta)) => take_protocol_fields(profile, meta),
        _ => Vec::new(),
    };
    let mut value = Value::Object(std::mem::take(object));
    mask_tree(profile, &mut value, path, report);
    if let Value::Object(masked) = value {
        *object = masked;
    }
    if let Some(Value::Object(meta)) = object.get_mut("_meta") {
        meta.extend(kept_meta);
    }
    object.extend(kept);
}

/// Base64 bytes that decode to UTF-8 text are text, whatever their declared type (none, an
/// image type: a declared type is the upstream's word, not a fact): decoded, masked as text,
/// encoded again. Real bytes (an image, an archive) almost never decode to UTF-8, and are left
/// as they are. A second pass, but one that scans no string: it only decodes the members
/// [`bytes_member`] names, which are rare.
fn mask_text_blobs(profile: &Profile, value: &mut Value, path: &mut String, report: &mut Report) {
    let mark = path.len();
    match value {
        Value::Object(object) => {
            if let Some(key) = bytes_member(object)
                && let Some(Value::String(blob)) = object.get_mut(key)
                && let Ok(bytes) = STANDARD.decode(blob.as_bytes())
                && let Ok(text) = String::from_utf8(bytes)
            {
                path.push('.');
                path.push_str(key);
                if let Some(masked) = profile.mask_text(&text, path, report) {
                    *blob = STANDARD.encode(masked);
                }
                path.truncate(mark);
            }
            for (key, item) in object.iter_mut() {
                if item.is_object() || item.is_array() {
                    path.push('.');
                    path.push_str(key);
                    mask_text_blobs(profile, item, path, report);
                    path.truncate(mark);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                if item.is_object() || item.is_array() {
                    let _ = write!(path, "[{i}]");
                    mask_text_blobs(profile, item, path, report);
                    path.truncate(mark);
                }
            }
        }
        _ => {}
    }
}

/// The member of this object the protocol gives base64 bytes, if it has one: a resource's
/// `blob`, the `data` of image and audio content.
fn bytes_member(object: &Map<String, Value>) -> Option<&'static str> {
    let key = if object.contains_key("uri") {
        "blob"
    } else if matches!(
        object.get("type").and_then(Value::as_str),
        Some("image" | "audio")
    ) {
        "data"
    } else {
        return None;
    };
    object.get(key).is_some_and(Value::is_string).then_some(key)
}

/// Sets aside the protocol fields of `object` whose values are legitimate
/// ([`legitimate_protocol_value`]); the others stay, and are masked like any member.
fn take_protocol_fields(
    profile: &Profile,
    object: &mut Map<String, Value>,
) -> Vec<(String, Value)> {
    let legitimate: Vec<&str> = PROTOCOL_FIELDS
        .iter()
        .copied()
        .filter(|key| {
            object
                .get(*key)
                .is_some_and(|value| legitimate_protocol_value(profile, key, value))
        })
        .collect();
    legitimate
        .into_iter()
        .filter_map(|key| object.remove(key).map(|value| (key.to_string(), value)))
        .collect()
}

/// The result types the specification defines (2026-07-28, `resultType`).
const RESULT_TYPES: &[&str] = &["complete", "input_required"];

/// Whether a protocol field's value is one the protocol could have put there, so it passes
/// unmasked: a known protocol version, a result type of the specification, or a token,
/// request id or cursor (a string or number: opaque to the client) in which no detector of
/// the profile finds a value. The exemption is from the field-name rules (`token` would mask
/// `progressToken` whole and break progress), never from the detectors: an upstream cannot
/// pass a value in clear by putting it under a protocol name.
fn legitimate_protocol_value(profile: &Profile, key: &str, value: &Value) -> bool {
    match key {
        "protocolVersion" | crate::era::META_VERSION => value
            .as_str()
            .is_some_and(|v| v == crate::era::MODERN || crate::era::LEGACY.contains(&v)),
        "resultType" => value.as_str().is_some_and(|v| RESULT_TYPES.contains(&v)),
        _ => {
            let mut found = Report::default();
            match value {
                Value::String(text) => profile.scan_text(text, "", &mut found),
                Value::Number(number) => profile.scan_text(&number.to_string(), "", &mut found),
                _ => return false,
            }
            found.total() == 0
        }
    }
}

/// Base64 bytes, which masking as a string would corrupt: a resource's `blob` and the `data`
/// of image and audio content ([`bytes_member`]), when they hold nothing but the base64
/// alphabet (text put there is masked like any other). Those that decode to UTF-8 text are
/// masked by [`mask_text_blobs`]; other bytes are not scanned (a limit written in
/// docs/security.md).
fn is_binary(object: &Map<String, Value>, key: &str) -> bool {
    bytes_member(object) == Some(key)
        && object.get(key).and_then(Value::as_str).is_some_and(|text| {
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use portcullis_config::Config;
    use serde_json::json;

    use super::*;

    fn masks() -> Masks {
        let config = Config::parse(
            std::path::Path::new("portcullis.toml"),
            "[masks.cards]\ndetectors = [\"credit_card\"]\nstyles = { credit_card = \"partial\" }\n"
                .into(),
        )
        .unwrap();
        Masks::compile(&config.masks).unwrap()
    }

    fn masked(profile: &str, result: Value) -> (Value, Vec<(String, String)>) {
        let masks = masks();
        let Value::Object(mut result) = result else {
            panic!("an object")
        };
        let mut report = Report::default();
        MaskSet::of(vec![masks.profile(profile).unwrap()]).mask_result(&mut result, &mut report);
        let found = report
            .findings()
            .iter()
            .map(|f| (f.detector.clone(), f.path.clone()))
            .collect();
        (Value::Object(result), found)
    }

    #[test]
    fn resource_contents_are_masked_and_so_is_text_in_an_untyped_blob() {
        let (result, found) = masked(
            "default",
            json!({"contents": [
                {"uri": "file:///a.txt", "text": "owner: ada@example.com"},
                {"uri": "file:///a.bin", "blob": "YWRhQGV4YW1wbGUuY29t"}
            ]}),
        );
        assert_eq!(result["contents"][0]["text"], "owner: [EMAIL]");
        assert_eq!(result["contents"][1]["blob"], STANDARD.encode("[EMAIL]"));
        assert_eq!(
            found,
            [
                ("email".into(), "$.contents[0].text".into()),
                ("email".into(), "$.contents[1].blob".into())
            ]
        );
    }

    #[test]
    fn prompt_messages_and_embedded_resources_are_masked() {
        let (result, found) = masked(
            "cards",
            json!({"description": "card 4111 1111 1111 1111", "messages": [
                {"role": "user", "content": {"type": "text", "text": "charge 5500 0055 5555 5559"}},
                {"role": "user", "content": {"type": "resource", "resource": {"uri": "x:/1", "text": "3782 822463 10005"}}},
                {"role": "user", "content": {"type": "image", "data": "NDExMSAxMTExIDExMTEgMTExMQ==", "mimeType": "image/png"}}
            ]}),
        );
        assert_eq!(result["description"], "card **** **** **** 1111");
        assert_eq!(
            result["messages"][0]["content"]["text"],
            "charge **** **** **** 5559"
        );
        let embedded = result["messages"][1]["content"]["resource"]["text"]
            .as_str()
            .unwrap();
        assert!(
            embedded.ends_with("0005") && !embedded.contains("822463"),
            "{embedded}"
        );
        // Text sent as an image is text all the same.
        assert_eq!(
            result["messages"][2]["content"]["data"],
            STANDARD.encode("**** **** **** 1111")
        );
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.contains(&(
            "credit_card".into(),
            "$.messages[1].content.resource.text".into()
        )));
    }

    #[test]
    fn every_string_of_every_result_is_masked_but_legitimate_protocol_fields_and_bytes_are_not() {
        let (result, found) = masked(
            "default",
            json!({
                "content": [
                    {"type": "resource_link", "uri": "mailto:ada@example.com", "name": "ada@example.com",
                     "title": "Ada ada@example.com", "description": "write to ada@example.com"},
                    {"type": "text", "text": "ok", "annotations": {"audience": ["ada@example.com"]},
                     "_meta": {"owner": "ada@example.com"}, "extra": "ada@example.com"},
                    {"text": "no type: ada@example.com"},
                    {"type": "novel", "text": ["an array: ada@example.com"]},
                    {"type": "resource", "resource": {"uri": "users://ada@example.com", "text": "x"}},
                    {"type": "image", "data": "YWRhQGV4YW1wbGUuY29t", "mimeType": "image/png"},
                    {"type": "audio", "data": "not base64: ada@example.com", "mimeType": "audio/wav"}
                ],
                "tools": [{"name": "t", "description": "mail ada@example.com",
                           "inputSchema": {"properties": {"to": {"default": "ada@example.com"}}}}],
                "instructions": "ask ada@example.com",
                "nextCursor": "ada@example.com",
                "resultType": "complete",
                "protocolVersion": "4111 1111 1111 1111",
                "_meta": {"progressToken": "tok_7f3a", "note": "ada@example.com",
                          "io.modelcontextprotocol/protocolVersion": "2026-07-28"}
            }),
        );
        let text = result.to_string();
        assert_eq!(text.matches("ada@example.com").count(), 0, "{text}");
        // Protocol fields pass as they are only with legitimate values.
        assert_eq!(result["nextCursor"], "[EMAIL]");
        assert_eq!(result["protocolVersion"], "[CREDIT_CARD]");
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["_meta"]["progressToken"], "tok_7f3a");
        assert_eq!(
            result["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(result["_meta"]["note"], "[EMAIL]");
        assert_eq!(result["content"][0]["uri"], "mailto:[EMAIL]");
        assert_eq!(result["content"][3]["text"][0], "an array: [EMAIL]");
        // Base64 that decodes to text is masked as text, whatever the declared type.
        assert_eq!(result["content"][5]["data"], STANDARD.encode("[EMAIL]"));
        assert_eq!(result["content"][6]["data"], "not base64: [EMAIL]");
        assert!(
            found.contains(&("email".into(), "$.content[0].name".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&(
                "email".into(),
                "$.tools[0].inputSchema.properties.to.default".into()
            )),
            "{found:?}"
        );
    }

    #[test]
    fn a_kept_message_is_the_one_relayed_masked_or_not() {
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1,"message":"ada@example.com"}}"#;
        let mut report = Report::default();
        for set in [
            MaskSet::of(vec![masks().profile("default").unwrap()]),
            MaskSet::default(),
        ] {
            let (text, kept) = set
                .mask_message_kept(progress.into(), &mut report, true)
                .unwrap();
            let relayed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(Value::Object(kept.unwrap()), relayed);
            // Unasked, nothing is kept (and an empty set reads nothing).
            let (again, kept) = set
                .mask_message_kept(progress.into(), &mut report, false)
                .unwrap();
            assert_eq!(again, text);
            assert!(kept.is_none());
        }
        assert_eq!(
            report.total(),
            2,
            "the default profile masked the email twice"
        );
    }

    #[test]
    fn errors_and_interim_messages_are_masked_whole_but_keep_their_protocol_fields() {
        let set = MaskSet::of(vec![masks().profile("default").unwrap()]);
        let mut report = Report::default();
        let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"no row for ada@example.com","data":{"card":"4111 1111 1111 1111"}}}"#;
        let masked: Value =
            serde_json::from_str(&set.mask_message(error.into(), &mut report).unwrap()).unwrap();
        assert_eq!(masked["id"], 7);
        assert_eq!(masked["error"]["code"], -32000);
        assert_eq!(masked["error"]["message"], "no row for [EMAIL]");
        assert_eq!(masked["error"]["data"]["card"], "[CREDIT_CARD]");
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"my-token","progress":1,"message":"ada@example.com"}}"#;
        let masked: Value =
            serde_json::from_str(&set.mask_message(progress.into(), &mut report).unwrap()).unwrap();
        assert_eq!(masked["params"]["progressToken"], "my-token");
        assert_eq!(masked["params"]["message"], "[EMAIL]");
        let sampling = r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"_meta":{"progressToken":"t"},"messages":[{"role":"user","content":{"type":"text","text":"ada@example.com"}}],"systemPrompt":"ada@example.com"}}"#;
        let masked = set.mask_message(sampling.into(), &mut report).unwrap();
        assert!(!masked.contains("ada@example.com"), "{masked}");
        assert!(masked.contains(r#""progressToken":"t""#), "{masked}");
        // A server request whose id carries a value cannot be masked (the answer must carry
        // the id back): it is not relayed.
        let leaky_id = r#"{"jsonrpc":"2.0","id":"ada@example.com","method":"sampling/createMessage","params":{"messages":[]}}"#;
        assert_eq!(set.mask_message(leaky_id.into(), &mut report), None);
        // Nothing to mask: the text passes as it came; unreadable: it does not pass at all.
        let clean = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"ok"}}"#;
        assert_eq!(
            set.mask_message(clean.into(), &mut report).as_deref(),
            Some(clean)
        );
        assert_eq!(set.mask_message("not json".into(), &mut report), None);
        assert_eq!(
            MaskSet::default()
                .mask_message("not json".into(), &mut report)
                .as_deref(),
            Some("not json")
        );
    }

    #[test]
    fn a_text_blob_is_masked_as_text_and_other_bytes_are_not() {
        let text_blob = STANDARD.encode("owner,ada@example.com\n");
        let png = STANDARD.encode([0x89, b'P', b'N', b'G', 0xff, 0x00]);
        let (result, found) = masked(
            "default",
            json!({"contents": [
                {"uri": "file:///owners.csv", "mimeType": "text/csv; charset=utf-8", "blob": text_blob},
                {"uri": "file:///logo.png", "mimeType": "image/png", "blob": png},
                {"uri": "file:///odd.txt", "mimeType": "text/plain", "blob": png}
            ]}),
        );
        let decoded = STANDARD
            .decode(result["contents"][0]["blob"].as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "owner,[EMAIL]\n");
        assert_eq!(result["contents"][1]["blob"], png.as_str());
        assert_eq!(result["contents"][2]["blob"], png.as_str());
        assert_eq!(found, [("email".into(), "$.contents[0].blob".into())]);
    }
}
