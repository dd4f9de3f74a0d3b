//! `Message::parse` on arbitrary bytes never panics; a parsed request re-serialised with
//! `jsonrpc::request` parses again to the same id, method and params text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proxy_mcp::jsonrpc::{self, Message};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(Message::Request { id, method, params }) = Message::parse(data, MAX) else {
        return;
    };
    let text = jsonrpc::request(id.get(), &method, params.as_deref());
    match Message::parse(text.as_bytes(), MAX) {
        Ok(Message::Request {
            id: id2,
            method: method2,
            params: params2,
        }) => {
            assert_eq!(id.get(), id2.get());
            assert_eq!(method, method2);
            assert_eq!(
                params.as_ref().map(|p| p.get()),
                params2.as_ref().map(|p| p.get())
            );
        }
        other => panic!("re-serialised request {text:?} parsed as {other:?}"),
    }
});
