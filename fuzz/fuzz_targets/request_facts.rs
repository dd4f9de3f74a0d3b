//! `RequestFacts::read` on any JSON text (as the envelope parser would hand it over), for each
//! method whose params it reads differently, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_mcp::era::RequestFacts;
use serde_json::value::RawValue;

/// The methods whose facts are read from particular fields, and one that reads none.
const METHODS: &[&str] = &[
    "tools/call",
    "resources/read",
    "completion/complete",
    "subscriptions/listen",
    "tools/list",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(raw) = RawValue::from_string(text.trim().to_string()) else {
        return;
    };
    let method = METHODS[usize::from(pick) % METHODS.len()];
    if let Ok(facts) = RequestFacts::read(Some(method), Some(&raw)) {
        let _ = facts.missing_request_meta();
    }
});
