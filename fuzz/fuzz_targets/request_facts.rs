//! `RequestFacts::read` on any JSON text (as the envelope parser would hand it over) never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_mcp::era::RequestFacts;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(raw) = RawValue::from_string(text.trim().to_string()) else {
        return;
    };
    let _ = RequestFacts::read(Some(&raw));
});
