//! Header values: encoding arbitrary UTF-8 gives a valid header value that decodes back to
//! the input; decoding arbitrary text never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_mcp::headers::{decode_header_value, encode_header_value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_header_value(text);
    let encoded = encode_header_value(text);
    assert!(
        encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "{text:?} encoded as {encoded:?}"
    );
    assert_eq!(decode_header_value(&encoded).as_deref(), Ok(text));
});
