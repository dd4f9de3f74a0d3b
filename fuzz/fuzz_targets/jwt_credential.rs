//! `Authenticator::authenticate` on arbitrary strings returns an error without panicking.
//!
//! The one API key is the SHA-256 of a key the fuzzer cannot guess; the OIDC issuer is at
//! 127.0.0.1:9 (discard), so only JWT-shaped input (two dots) whose `iss` names it can make
//! the authenticator reach out, and then only to a refused loopback port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_config::Config;
use portcullis_identity::Authenticator;
use std::path::Path;
use std::sync::LazyLock;

const CONFIG: &str = r#"
[[identity.api_keys]]
name = "fuzz-agent"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[[identity.oidc]]
issuer = "http://127.0.0.1:9"
audience = "api://portcullis"
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::parse(Path::new("fuzz.toml"), CONFIG.to_string()).expect("config");
    // reqwest's client must be built inside the runtime it will be used on.
    let authenticator = {
        let _guard = runtime.enter();
        Authenticator::new(&config.identity).expect("authenticator")
    };
    Harness {
        runtime,
        authenticator,
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(credential) = std::str::from_utf8(data) else {
        return;
    };
    let h = &*HARNESS;
    let result = h
        .runtime
        .block_on(h.authenticator.authenticate(credential));
    assert!(result.is_err(), "{credential:?} was accepted");
});
