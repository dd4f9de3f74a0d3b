//! `Config::parse` on arbitrary UTF-8 never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::Config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(Path::new("fuzz.toml"), text.to_string());
    }
});
