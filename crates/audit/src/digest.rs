//! Keyed digests of payloads (arguments, results) kept in events instead of the payloads.
//!
//! A plain SHA-256 of a small payload gives it back to whoever reads the log: a 4-digit PIN
//! or an SSN in a tool's arguments is found by hashing every candidate. So events record
//! HMAC-SHA256 under a key the log's readers do not hold ([`DigestAlgorithm::HmacSha256`]);
//! the operator, who holds it, can still check a known payload against an event
//! (`portcullis audit digest`). Events written before keep their plain SHA-256 and say so by
//! having no `alg`; nothing in verification depends on which a digest is.
//!
//! The key:
//! - with a checkpoint signing key, it is derived from that key (kept outside the data
//!   directory): HMAC-SHA256 keyed with a fixed label over the key's Ed25519 signature of
//!   that label. Ed25519 signatures are deterministic, so the same signing key always gives
//!   the same digest key, and the signature is never published;
//! - without one, it is a random key in `<data_dir>/audit-digest.key` (mode 0600), created
//!   with the log. That protects a copy of the log, not someone who can read the data
//!   directory: configure `audit.signing_key`.

use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use portcullis_model::{DigestAlgorithm, PayloadDigest};

use crate::checkpoint::Signer;

/// What the signing key signs to derive the digest key; never signed for anything else.
const DERIVATION_LABEL: &[u8] = b"portcullis audit payload digest key v1\n";

/// The file of a data directory's own digest key (logs without a signing key).
pub const DIGEST_KEY_FILE: &str = "audit-digest.key";

/// The key of the keyed digests of a log.
#[derive(Clone)]
pub struct DigestKey(hmac::Key);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestKeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: a digest key is 32 bytes, this file has {len}")]
    BadLength { path: PathBuf, len: usize },
    #[error("deriving the digest key from the signing key: {0}")]
    Derive(String),
}

impl DigestKey {
    /// The key derived from a checkpoint signing key (see the module documentation).
    pub fn derived_from(signer: &dyn Signer) -> Result<DigestKey, DigestKeyError> {
        let signature = signer
            .sign(DERIVATION_LABEL)
            .map_err(|e| DigestKeyError::Derive(e.to_string()))?;
        let extract = hmac::Key::new(hmac::HMAC_SHA256, DERIVATION_LABEL);
        let key = hmac::sign(&extract, &signature);
        Ok(DigestKey(hmac::Key::new(hmac::HMAC_SHA256, key.as_ref())))
    }

    /// The data directory's own key (a log without a signing key).
    pub fn load(data_dir: &Path) -> Result<DigestKey, DigestKeyError> {
        let path = data_dir.join(DIGEST_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                Ok(DigestKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
            }
            Ok(bytes) => Err(DigestKeyError::BadLength {
                path,
                len: bytes.len(),
            }),
            Err(source) => Err(DigestKeyError::Io { path, source }),
        }
    }

    /// The data directory's own key, created (random, mode 0600) if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<DigestKey, DigestKeyError> {
        let path = data_dir.join(DIGEST_KEY_FILE);
        let io = |source| DigestKeyError::Io {
            path: path.clone(),
            source,
        };
        match Self::load(data_dir) {
            Err(DigestKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded,
        }
        let bytes: [u8; 32] = rand_bytes().map_err(DigestKeyError::Derive)?;
        crate::keys::write_new(&path, &bytes, 0o600).map_err(io)?;
        Ok(DigestKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// The keyed digest of `bytes`.
    pub fn digest(&self, bytes: &[u8]) -> PayloadDigest {
        PayloadDigest {
            alg: Some(DigestAlgorithm::HmacSha256),
            sha256: hex::encode(hmac::sign(&self.0, bytes).as_ref()),
            size: bytes.len() as u64,
        }
    }
}

fn rand_bytes() -> Result<[u8; 32], String> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Ed25519Signer;

    #[test]
    fn the_digest_key_is_stable_and_secret_dependent() {
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        let a = DigestKey::derived_from(&Ed25519Signer::from_pkcs8("a", &pkcs8).unwrap()).unwrap();
        let again =
            DigestKey::derived_from(&Ed25519Signer::from_pkcs8("a", &pkcs8).unwrap()).unwrap();
        let other_pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        let b = DigestKey::derived_from(&Ed25519Signer::from_pkcs8("a", &other_pkcs8).unwrap())
            .unwrap();
        assert_eq!(a.digest(b"1234"), again.digest(b"1234"));
        assert_ne!(a.digest(b"1234"), b.digest(b"1234"));
        assert_ne!(a.digest(b"1234"), PayloadDigest::of(b"1234"));

        let dir = tempfile::tempdir().unwrap();
        let created = DigestKey::load_or_create(dir.path()).unwrap();
        let loaded = DigestKey::load_or_create(dir.path()).unwrap();
        assert_eq!(created.digest(b"x"), loaded.digest(b"x"));
    }
}
