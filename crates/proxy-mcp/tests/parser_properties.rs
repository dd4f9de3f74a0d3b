//! Property tests of the MCP adapter's parsers: the JSON-RPC envelope, the metadata header
//! encoding and the request facts. They run on stable in CI; the fuzz targets in `fuzz/`
//! explore the same parsers without bounds on nightly.

use portcullis_proxy_mcp::era::RequestFacts;
use portcullis_proxy_mcp::headers::{decode_header_value, encode_header_value};
use portcullis_proxy_mcp::jsonrpc::{self, Message, code};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

const MAX: usize = 1 << 20;

/// A fixed seed keeps CI deterministic; set PORTCULLIS_PROPTEST_RANDOM=1 to explore new
/// inputs locally (a failure found that way becomes a regression case here).
fn config() -> ProptestConfig {
    let rng_seed = if std::env::var_os("PORTCULLIS_PROPTEST_RANDOM").is_some() {
        proptest::test_runner::RngSeed::Random
    } else {
        proptest::test_runner::RngSeed::Fixed(0x5eed_f904_7c01)
    };
    ProptestConfig {
        cases: 256,
        rng_seed,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators

/// Object keys: mostly short, sometimes ones the parsers look for, sometimes any text.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        1 => prop::sample::select(vec![
            "name", "uri", "arguments", "_meta", "progressToken", "id", "method", "params",
            "io.modelcontextprotocol/protocolVersion",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z/ ._-]{0,12}".prop_map(Value::String),
    ]
}

/// Any JSON value, nested at most a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), json_value(), 0..6).prop_map(|m| m.into_iter().collect())
}

/// Text made of the pieces JSON-RPC messages are made of, in any order.
fn json_ish() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"",
            "\\",
            "\"jsonrpc\"",
            "\"2.0\"",
            "\"id\"",
            "\"method\"",
            "\"params\"",
            "\"result\"",
            "\"error\"",
            "\"name\"",
            "\"_meta\"",
            "\"n\\u0061me\"",
            "\"\\ud800\"",
            "1",
            "-",
            "0",
            "1.5",
            "1e999",
            "null",
            "true",
            "\"tools/call\"",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,4}",
    ];
    (
        prop::sample::select(vec![
            "",
            "{",
            "{\"jsonrpc\":\"2.0\",",
            "{\"jsonrpc\":\"2.0\",\"id\":1,",
        ]),
        prop::collection::vec(fragment, 0..48),
    )
        .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.concat()))
}

/// An id as raw JSON text: an integer or a string.
fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

/// A JSON string literal for `key`, sometimes with every UTF-16 unit written as `\uXXXX`
/// (the same key to any JSON parser).
fn key_literal(key: &str, escaped: bool) -> String {
    if escaped {
        let mut out = String::from("\"");
        for unit in key.encode_utf16() {
            out.push_str(&format!("\\u{unit:04x}"));
        }
        out.push('"');
        out
    } else {
        serde_json::to_string(key).unwrap()
    }
}

/// The members of `object` as JSON text, without the braces.
fn members(object: &Map<String, Value>) -> String {
    let text = serde_json::to_string(object).unwrap();
    text[1..text.len() - 1].to_string()
}

fn as_raw(value: &impl serde::Serialize) -> Box<RawValue> {
    RawValue::from_string(serde_json::to_string(value).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// (a) Message::parse never panics

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::parse(&bytes, MAX);
        let _ = Message::parse(&bytes, 16);
    }

    #[test]
    fn parse_never_panics_on_json_ish_text(text in json_ish()) {
        if let Err(e) = Message::parse(text.as_bytes(), MAX) {
            prop_assert!(
                [code::PARSE_ERROR, code::INVALID_REQUEST].contains(&e.code),
                "unexpected code {} for {text:?}", e.code
            );
        }
    }

    #[test]
    fn parse_never_panics_on_deep_nesting(open in prop::sample::select(vec!["[", "{\"a\":"]), depth in 0usize..2000) {
        let text = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{}}}"#, open.repeat(depth));
        prop_assert!(Message::parse(text.as_bytes(), MAX).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// (b) requests built by jsonrpc::request parse back to the same id, method and params

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_round_trips(
        id in id_text(),
        method in any::<String>(),
        params in prop::option::of(json_object()),
    ) {
        let params = params.map(|p| as_raw(&p));
        let text = jsonrpc::request(&id, &method, params.as_deref());
        match Message::parse(text.as_bytes(), MAX) {
            Ok(Message::Request { id: got_id, method: got_method, params: got_params }) => {
                prop_assert_eq!(got_id.get(), id.as_str());
                prop_assert_eq!(got_method, method);
                prop_assert_eq!(got_params.as_ref().map(|p| p.get()), params.as_ref().map(|p| p.get()));
            }
            other => prop_assert!(false, "{text} parsed as {other:?}"),
        }
    }

    #[test]
    fn notification_round_trips(method in any::<String>(), params in prop::option::of(json_object())) {
        let params = params.map(|p| as_raw(&p));
        let text = jsonrpc::notification(&method, params.as_deref());
        match Message::parse(text.as_bytes(), MAX) {
            Ok(Message::Notification { method: got_method, params: got_params }) => {
                prop_assert_eq!(got_method, method);
                prop_assert_eq!(got_params.as_ref().map(|p| p.get()), params.as_ref().map(|p| p.get()));
            }
            other => prop_assert!(false, "{text} parsed as {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// (c) a duplicate key at any depth is a parse error

proptest! {
    #![proptest_config(config())]

    #[test]
    fn duplicate_keys_rejected_at_any_depth(
        dup in key(),
        escape_first in any::<bool>(),
        escape_second in any::<bool>(),
        first in json_value(),
        second in json_value(),
        mut base in json_object(),
        wraps in prop::collection::vec((any::<bool>(), json_object()), 0..6),
    ) {
        // The object holding the duplicate, with other members between the two.
        base.remove(&dup);
        let rest = members(&base);
        let mut text = format!(
            "{{{}:{}{}{rest},{}:{}}}",
            key_literal(&dup, escape_first),
            serde_json::to_string(&first).unwrap(),
            if rest.is_empty() { "" } else { "," },
            key_literal(&dup, escape_second),
            serde_json::to_string(&second).unwrap(),
        );
        // Nested in arrays and objects down to a random depth.
        for (in_array, mut outer) in wraps {
            text = if in_array {
                format!("[1,{text},null]")
            } else {
                outer.remove("wrap");
                let rest = members(&outer);
                format!("{{{rest}{}\"wrap\":{text}}}", if rest.is_empty() { "" } else { "," })
            };
        }
        let message = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{text}}}"#);
        match Message::parse(message.as_bytes(), MAX) {
            Err(e) => prop_assert_eq!(e.code, code::PARSE_ERROR, "{}: {}", message, e.message),
            Ok(m) => prop_assert!(false, "{message} accepted as {m:?}"),
        }
    }

    #[test]
    fn duplicate_envelope_members_rejected(
        dup in prop::sample::select(vec!["jsonrpc", "id", "method", "params"]),
        escape in any::<bool>(),
        value in json_value(),
    ) {
        let message = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{}},{}:{}}}"#,
            key_literal(dup, escape),
            serde_json::to_string(&value).unwrap(),
        );
        let e = Message::parse(message.as_bytes(), MAX).unwrap_err();
        prop_assert_eq!(e.code, code::PARSE_ERROR, "{}: {}", message, e.message);
    }
}

proptest! {
    #![proptest_config(config())]

    /// `"id": null` is not an absent id: such a message is refused, never read as a
    /// notification (JSON-RPC 2.0: a notification has no `id` member; MCP: ids are never null).
    #[test]
    fn null_id_is_not_a_notification(method in any::<String>(), params in prop::option::of(json_object())) {
        let params = params.map(|p| as_raw(&p));
        let text = jsonrpc::request("null", &method, params.as_deref());
        let e = Message::parse(text.as_bytes(), MAX).unwrap_err();
        prop_assert_eq!(e.code, code::INVALID_REQUEST);
        prop_assert_eq!(e.id.as_deref(), Some("null"));
    }
}

// ---------------------------------------------------------------------------------------
// (d) header values round-trip and are always valid HTTP header values

proptest! {
    #![proptest_config(config())]

    #[test]
    fn header_value_round_trips(value in prop_oneof![
        any::<String>(),
        "[ -~]{0,24}",
        "=\\?base64\\?[A-Za-z0-9+/=?]{0,12}\\?=",
    ]) {
        let encoded = encode_header_value(&value);
        prop_assert!(
            http::HeaderValue::from_str(&encoded).is_ok(),
            "{value:?} encoded as an invalid header value {encoded:?}"
        );
        prop_assert!(!encoded.starts_with(' ') && !encoded.ends_with(' '));
        prop_assert_eq!(decode_header_value(&encoded), Ok(value));
    }

    #[test]
    fn header_decode_never_panics(raw in prop_oneof![
        any::<String>(),
        "=\\?base64\\?.{0,16}\\?=",
    ]) {
        let _ = decode_header_value(&raw);
    }
}

// ---------------------------------------------------------------------------------------
// (e) RequestFacts::read never panics, and reads what is there

fn params_object() -> impl Strategy<Value = Map<String, Value>> {
    let meta = (
        json_object(),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(mut m, version, token)| {
            if let Some(v) = version {
                m.insert("io.modelcontextprotocol/protocolVersion".into(), v);
            }
            if let Some(t) = token {
                m.insert("progressToken".into(), t);
            }
            Value::Object(m)
        });
    (
        json_object(),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![3 => meta, 1 => json_value()]),
    )
        .prop_map(|(mut m, name, uri, arguments, meta)| {
            for (k, v) in [
                ("name", name),
                ("uri", uri),
                ("arguments", arguments),
                ("_meta", meta),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_facts_never_panic(params in params_object()) {
        let raw = as_raw(&params);
        let Ok(facts) = RequestFacts::read(Some("tools/call"), Some(&raw)) else {
            return Ok(());
        };
        let string = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let expected_name = string(params.get("name"));
        prop_assert_eq!(facts.name, expected_name);
        let meta = params.get("_meta").and_then(Value::as_object);
        prop_assert_eq!(
            facts.protocol_version,
            string(meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion")))
        );
        prop_assert_eq!(
            facts.progress_token,
            meta.and_then(|m| m.get("progressToken"))
                .filter(|t| !t.is_null())
                .map(|t| serde_json::to_string(t).unwrap())
        );
    }

    #[test]
    fn request_facts_never_panic_on_any_value(value in json_value()) {
        let raw = as_raw(&value);
        let _ = RequestFacts::read(Some("resources/read"), Some(&raw));
    }
}
