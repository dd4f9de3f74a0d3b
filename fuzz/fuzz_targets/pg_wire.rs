//! PostgreSQL wire messages: splitting a byte stream into frames and reading every message
//! body the gateway looks at never panics, whatever the bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis_proxy_pg::wire;

fuzz_target!(|data: &[u8]| {
    let mut startup = BytesMut::from(data);
    let _ = wire::next_startup(&mut startup);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = wire::next_frame(&mut buf, 1 << 20) {
        let _ = wire::parse_query(&frame);
        let _ = wire::parse_parse(&frame);
        let _ = wire::parse_bind(&frame);
        let _ = wire::parse_execute(&frame);
        let _ = wire::parse_target(&frame, "Describe");
        let _ = wire::parse_row_description(&frame);
        let _ = wire::parse_data_row(&frame);
        let _ = wire::command_rows(&frame);
        let _ = wire::parse_notice(&frame);
        let _ = wire::rewrite_notice(&frame, |t| Some(t.to_uppercase()));
    }
});
