//! RFC 8785 (JCS) canonical bytes of audit events.
//!
//! The bytes produced here are what gets hashed into the log, so they must never change for
//! a given event: any difference between two implementations (ours now, a verifier written
//! in another language later) would make a valid log look tampered with.

use portcullis_model::AuditEvent;
use sha2::{Digest as _, Sha256};

/// Canonical bytes of an event: the RFC 8785 JSON canonicalization (JCS) of its serde
/// serialization.
///
/// Object keys are sorted by UTF-16 code units, there is no whitespace, strings use the
/// minimal JSON escaping and numbers use ECMAScript formatting (`1e+21`, `-0` as `0`). The
/// work is done by `serde_json_canonicalizer`, which is maintained and checked against the
/// RFC's test data; we only add the handling of non-finite floats below.
pub fn canonical_bytes(event: &AuditEvent) -> Vec<u8> {
    // JSON has no NaN or Infinity, so JCS refuses them. serde_json would quietly write
    // `null`; we omit the field instead, which deserializes back to the same `None` and
    // keeps this function infallible for the gateway.
    if event.duration_ms.is_some_and(|d| !d.is_finite()) {
        let mut sanitized = event.clone();
        sanitized.duration_ms = None;
        return canonicalize(&sanitized);
    }
    canonicalize(event)
}

/// JCS of any serializable value whose floats are all finite and whose map keys are strings.
pub(crate) fn canonicalize<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The only ways JCS serialization can fail are non-finite floats and non-string map
    // keys; `AuditEvent` has neither once `canonical_bytes` has dropped non-finite floats.
    serde_json_canonicalizer::to_vec(value)
        .expect("audit events contain only finite numbers and string keys")
}

/// The RFC 6962 leaf hash of an entry: `SHA-256(0x00 || bytes)`. The 0x00 prefix keeps
/// leaf hashes apart from interior node hashes (prefix 0x01), which is what stops a
/// second-preimage attack on the Merkle tree.
pub(crate) fn leaf_hash(body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(body);
    hasher.finalize().into()
}
