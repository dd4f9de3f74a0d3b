//! API keys for agents and services that have no IdP identity.
//!
//! A key is `pcx_` followed by 43 characters of URL-safe base64 (32 random bytes). The
//! prefix lets the authenticator (and secret scanners) tell a key from a JWT at a glance.
//! The configuration holds only the key's SHA-256: a plain hash is enough because the key is
//! 256 bits of randomness, so there is nothing to brute-force, and a leaked configuration
//! file does not leak a usable credential.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_config::ApiKey;
use portcullis_model::{AuthMethod, Identity};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::error::{AuthError, IdentityError};

/// What every API key starts with.
pub const API_KEY_PREFIX: &str = "pcx_";

/// The `issuer` of identities that authenticated with an API key.
pub const API_KEY_ISSUER: &str = "portcullis:api-key";

/// Length of the random part: 32 bytes in unpadded base64.
const KEY_BODY_LEN: usize = 43;

/// Makes a new API key. Returns the key (show it once, never store it) and the hex SHA-256
/// to put in `identity.api_keys[].sha256`.
pub fn generate_api_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG (ChaCha12) seeded from and periodically reseeded by the OS.
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_api_key(&key);
    (key, hash)
}

/// The hex SHA-256 of a key, as stored in the configuration.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The configured keys, ready for lookup.
pub(crate) struct ApiKeys {
    entries: Vec<Entry>,
}

struct Entry {
    hash: [u8; 32],
    identity: Identity,
}

impl ApiKeys {
    pub(crate) fn new(keys: &[ApiKey]) -> Result<ApiKeys, IdentityError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let err = |message: &str| IdentityError::ApiKey {
                index,
                name: key.name.clone(),
                message: message.to_string(),
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(key.sha256.get_ref().trim(), &mut hash)
                .map_err(|_| err("sha256 must be 64 hex digits"))?;
            if key.name.is_empty() {
                return Err(err("name must not be empty"));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(err("the same key hash is configured twice"));
            }
            if entries.iter().any(|e| e.identity.subject == key.name) {
                return Err(err("the name is used by another key"));
            }
            entries.push(Entry {
                hash,
                identity: Identity {
                    issuer: API_KEY_ISSUER.to_string(),
                    subject: key.name.clone(),
                    display_name: None,
                    kind: key.kind,
                    groups: key.groups.clone(),
                    auth_method: AuthMethod::ApiKey,
                    credential_id: Some(credential_id(&hash)),
                    act: Vec::new(),
                },
            });
        }
        Ok(ApiKeys { entries })
    }

    /// Finds the identity of a presented key.
    ///
    /// Every configured hash is compared, in constant time, whatever matched earlier: the
    /// time taken depends on how many keys are configured, not on which one (if any) the
    /// caller's key is or how many leading bytes it shares with one.
    pub(crate) fn authenticate(&self, key: &str) -> Result<Identity, AuthError> {
        let body = key
            .strip_prefix(API_KEY_PREFIX)
            .ok_or(AuthError::Malformed)?;
        if body.len() != KEY_BODY_LEN
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AuthError::Malformed);
        }
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let eq = entry.hash.ct_eq(&presented);
            // `i` fits: the configuration cannot hold 2^32 keys.
            index.conditional_assign(&(i as u32), eq);
            found |= eq;
        }
        if bool::from(found) {
            Ok(self.entries[index as usize].identity.clone())
        } else {
            tracing::debug!("API key not recognised");
            Err(AuthError::InvalidToken)
        }
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.identity.subject.as_str())
    }
}

/// The `credential_id` of an API key: SHA-256 over the 32 bytes of the stored hash, in hex.
///
/// Not the stored hash itself, so that audit events never repeat the configuration's values
/// verbatim (an auditor correlating uses of one key still can: the mapping is stable).
fn credential_id(hash: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_model::IdentityKind;
    use toml::Spanned;

    fn config(name: &str, hash: &str) -> ApiKey {
        ApiKey {
            name: name.to_string(),
            kind: IdentityKind::Agent,
            sha256: Spanned::new(0..0, hash.to_string()),
            groups: vec!["agents".to_string()],
        }
    }

    #[test]
    fn generated_key_has_the_documented_shape_and_hash() {
        let (key, hash) = generate_api_key();
        assert!(key.starts_with("pcx_"));
        assert_eq!(key.len(), 4 + 43);
        assert!(URL_SAFE_NO_PAD.decode(&key[4..]).unwrap().len() == 32);
        assert_eq!(hash, hash_api_key(&key));
        assert_eq!(hash.len(), 64);
        let (other, _) = generate_api_key();
        assert_ne!(key, other);
    }

    #[test]
    fn known_key_yields_its_identity() {
        let (key, hash) = generate_api_key();
        let (other_key, other_hash) = generate_api_key();
        let keys = ApiKeys::new(&[
            config("other", &other_hash),
            config("billing-agent", &hash.to_ascii_uppercase()),
        ])
        .unwrap();
        let id = keys.authenticate(&key).unwrap();
        assert_eq!(id.issuer, API_KEY_ISSUER);
        assert_eq!(id.subject, "billing-agent");
        assert_eq!(id.kind, IdentityKind::Agent);
        assert_eq!(id.groups, vec!["agents"]);
        assert_eq!(id.auth_method, AuthMethod::ApiKey);
        let cid = id.credential_id.unwrap();
        assert_eq!(cid.len(), 64);
        assert_ne!(cid, hash, "the stored hash must not be repeated verbatim");
        assert_eq!(keys.authenticate(&other_key).unwrap().subject, "other");
    }

    #[test]
    fn unknown_or_malformed_key_is_refused() {
        let (_, hash) = generate_api_key();
        let keys = ApiKeys::new(&[config("a", &hash)]).unwrap();
        let (stranger, _) = generate_api_key();
        assert_eq!(keys.authenticate(&stranger), Err(AuthError::InvalidToken));
        assert_eq!(keys.authenticate("pcx_short"), Err(AuthError::Malformed));
        let bad_chars = format!("pcx_{}", "+".repeat(43));
        assert_eq!(keys.authenticate(&bad_chars), Err(AuthError::Malformed));
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(ApiKeys::new(&[config("a", "abc")]).is_err());
        let (_, hash) = generate_api_key();
        assert!(ApiKeys::new(&[config("a", &hash), config("b", &hash)]).is_err());
        let (_, hash2) = generate_api_key();
        let err = ApiKeys::new(&[config("a", &hash), config("a", &hash2)])
            .err()
            .unwrap();
        assert!(!err.to_string().contains(&hash2), "{err}");
    }
}
