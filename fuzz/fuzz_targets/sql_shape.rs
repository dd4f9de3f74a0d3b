//! The shape lexer behind the classification cache: it never panics, and two texts it gives
//! the same shape are classified alike by the real parser (same kinds, tables, functions,
//! missing WHERE), which is what lets one classification stand for both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_pg::classify::classify;
use portcullis_proxy_pg::shape::shape;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two texts, separated by the first NUL (which no SQL text contains).
    let (a, b) = text.split_once('\0').unwrap_or((text, text));
    let (Some(sa), Some(sb)) = (shape(a), shape(b)) else {
        return;
    };
    if sa.key != sb.key {
        return;
    }
    if let (Ok(ca), Ok(cb)) = (classify(a), classify(b)) {
        let facts = |c: &[portcullis_proxy_pg::classify::Classified]| {
            c.iter()
                .map(|s| (s.statement.clone(), s.copy, s.outputs.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(facts(&ca), facts(&cb), "{a:?} and {b:?} share a shape");
    }
});
