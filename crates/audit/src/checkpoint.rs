//! Checkpoints: the signed statement "this log had this many entries with this root".
//!
//! The text is a C2SP `tlog-checkpoint` (origin line, decimal tree size, base64 root hash,
//! each ending in a newline) and is signed as a C2SP `signed-note` with Ed25519: after a blank
//! line, one line per signature, `— <key name> <base64(key id || signature)>`, where the key
//! id is the first four bytes of SHA-256(key name || "\n" || 0x01 || public key). Signing goes
//! through the [`Signer`] trait so a KMS or HSM can replace the key file later; verification
//! needs only the verifier key string an auditor holds
//! (`<name>+<hex key id>+<base64(0x01 || public key)>`).

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest as _, Sha256};

use crate::merkle::Hash;

/// The signature algorithm byte of Ed25519 keys in C2SP notes.
const ED25519_ALG: u8 = 0x01;
/// "— " (em dash, space) opens every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("malformed note: {0}")]
    MalformedNote(String),
    #[error("malformed verifier key: {0}")]
    BadVerifierKey(String),
    #[error("the note carries no signature by {0}")]
    NotSigned(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A log's state as a checkpoint states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (the gateway instance): a checkpoint of one log proves nothing about
    /// another.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint text that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint text; extension lines after the root are allowed and ignored.
    pub fn parse(body: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: &str| CheckpointError::Malformed(m.to_string());
        if !body.ends_with('\n') {
            return Err(bad("the text must end with a newline"));
        }
        let mut lines = body[..body.len() - 1].split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad(
                "the size is not a decimal number without leading zeros",
            ));
        }
        let size = size
            .parse()
            .map_err(|_| bad("the size does not fit 64 bits"))?;
        let root = lines.next().ok_or_else(|| bad("no root line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the root is not a base64 SHA-256 hash"))?;
        if lines.any(str::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Signs note texts. A file key today; a KMS or HSM later.
pub trait Signer: Send + Sync {
    /// The key name written in signature lines.
    fn name(&self) -> &str;
    /// The raw public key.
    fn public_key(&self) -> [u8; 32];
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CheckpointError>;
}

/// The four-byte key id of an Ed25519 note key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_ALG]);
    h.update(public_key);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The verifier key string an auditor holds for a signer.
pub fn verifier_key(signer: &dyn Signer) -> String {
    let public = signer.public_key();
    let mut encoded = vec![ED25519_ALG];
    encoded.extend_from_slice(&public);
    format!(
        "{}+{}+{}",
        signer.name(),
        hex::encode(key_id(signer.name(), &public)),
        B64.encode(encoded)
    )
}

/// An Ed25519 key held in memory (loaded from a PKCS#8 file).
pub struct Ed25519Signer {
    name: String,
    key: Ed25519KeyPair,
}

impl Ed25519Signer {
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Ed25519Signer, CheckpointError> {
        if name.is_empty() || name.contains(['+', ' ', '\n']) {
            return Err(CheckpointError::Signing(format!(
                "{name:?} is not a valid key name"
            )));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| CheckpointError::Signing(e.to_string()))?;
        Ok(Ed25519Signer {
            name: name.to_string(),
            key,
        })
    }

    /// A new key as PKCS#8 bytes, to be written to a file.
    pub fn generate_pkcs8() -> Result<Vec<u8>, CheckpointError> {
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|e| CheckpointError::Signing(e.to_string()))
    }
}

impl Signer for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes")
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        Ok(self.key.sign(message).as_ref().to_vec())
    }
}

/// Signs a note text with each signer.
pub fn sign_note(body: &str, signers: &[&dyn Signer]) -> Result<String, CheckpointError> {
    if !body.ends_with('\n') {
        return Err(CheckpointError::MalformedNote(
            "the text must end with a newline".into(),
        ));
    }
    let mut note = format!("{body}\n");
    for signer in signers {
        let mut blob = key_id(signer.name(), &signer.public_key()).to_vec();
        blob.extend(signer.sign(body.as_bytes())?);
        note.push_str(&format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            signer.name(),
            B64.encode(blob)
        ));
    }
    Ok(note)
}

/// The type byte of Ed25519 `cosignature/v1` witness keys (C2SP tlog-cosignature). It differs
/// from a note key's 0x01 so that a cosignature can never be mistaken for a log's own signature.
pub(crate) const COSIGNATURE_ALG: u8 = 0x04;

/// Parses a verifier key string `<name>+<hex key id>+<base64(type || public key)>` of one key
/// type: checks the type byte, the length, and that the key id is the one `key_id` derives
/// from the name and key (so a name cannot be attached to someone else's key). `wrong_type`
/// may explain a type byte that belongs to the other kind of key.
pub(crate) fn parse_key_string(
    text: &str,
    alg: u8,
    key_id: fn(&str, &[u8; 32]) -> [u8; 4],
    wrong_type: impl Fn(u8) -> Option<&'static str>,
) -> Result<(String, [u8; 4], [u8; 32]), CheckpointError> {
    let bad = |m: &str| CheckpointError::BadVerifierKey(m.to_string());
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected <name>+<key id>+<key>"));
    };
    if name.is_empty() || name.contains([' ', '\n']) {
        return Err(bad("the key name is empty or has spaces"));
    }
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
    let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
    let public_key: [u8; 32] = match key.split_first() {
        Some((&found, rest)) if found == alg => rest
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?,
        Some((&found, _)) if wrong_type(found).is_some() => {
            return Err(bad(wrong_type(found).unwrap_or_default()));
        }
        _ => return Err(bad(&format!("not an Ed25519 key of type {alg:#04x}"))),
    };
    if key_id(name, &public_key) != id {
        return Err(bad("the key id does not match the name and key"));
    }
    Ok((name.to_string(), id, public_key))
}

/// Splits a signed note into its text (ending in a newline) and its signature lines, at the
/// last blank line. Checks nothing else: the signatures are [`Verifier::open`]'s business.
pub fn split_note(note: &str) -> Result<(&str, &str), CheckpointError> {
    let split = note.rfind("\n\n").ok_or_else(|| {
        CheckpointError::MalformedNote("no blank line before the signatures".into())
    })?;
    Ok((&note[..split + 1], &note[split + 2..]))
}

/// A verifier key, parsed from its string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub key_id: [u8; 4],
    pub public_key: [u8; 32],
}

impl Verifier {
    /// The verifier of a signer's own notes.
    pub fn for_signer(signer: &dyn Signer) -> Verifier {
        let public_key = signer.public_key();
        Verifier {
            name: signer.name().to_string(),
            key_id: key_id(signer.name(), &public_key),
            public_key,
        }
    }

    pub fn parse(text: &str) -> Result<Verifier, CheckpointError> {
        let (name, key_id, public_key) = parse_key_string(text, ED25519_ALG, key_id, |alg| {
            (alg == COSIGNATURE_ALG).then_some(
                "this is a witness's cosignature key (type 0x04), not a note signing key (type 0x01)",
            )
        })?;
        Ok(Verifier {
            name,
            key_id,
            public_key,
        })
    }

    /// Checks that `note` carries a valid signature by this key; returns the signed text.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, CheckpointError> {
        let (body, signatures) = split_note(note)?;
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err(CheckpointError::MalformedNote("no signature lines".into()));
        }
        let mut signed = false;
        for line in signatures[..signatures.len() - 1].split('\n') {
            let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
                CheckpointError::MalformedNote(format!("not a signature line: {line:?}"))
            })?;
            let (name, blob) = rest.rsplit_once(' ').ok_or_else(|| {
                CheckpointError::MalformedNote(format!("not a signature line: {line:?}"))
            })?;
            let blob = B64
                .decode(blob)
                .map_err(|_| CheckpointError::MalformedNote("a signature is not base64".into()))?;
            if name != self.name || blob.len() < 4 || blob[..4] != self.key_id {
                continue; // someone else's signature (a witness's cosignature, say)
            }
            UnparsedPublicKey::new(&ED25519, self.public_key)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            signed = true;
        }
        if signed {
            Ok(body)
        } else {
            Err(CheckpointError::NotSigned(self.name.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str) -> Ed25519Signer {
        Ed25519Signer::from_pkcs8(name, &Ed25519Signer::generate_pkcs8().unwrap()).unwrap()
    }

    #[test]
    fn checkpoint_text_round_trips() {
        let cp = Checkpoint {
            origin: "portcullis.example/gw-eu-1".into(),
            size: 1234,
            root: crate::merkle::leaf_hash(b"x"),
        };
        let body = cp.body();
        assert_eq!(body.lines().count(), 3);
        assert_eq!(Checkpoint::parse(&body).unwrap(), cp);
        assert_eq!(Checkpoint::parse(&format!("{body}ext line\n")).unwrap(), cp);
        for bad in [
            "",
            "o\n1\n",
            "o\n01\nAAAA\n",
            "o\n-1\nAAAA\n",
            "o\n1\nnot base64!\n",
            "o\n1\nAAAA\n",
            "\n1\nAAAA\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            Checkpoint::parse(body.trim_end()).is_err(),
            "no final newline"
        );
    }

    #[test]
    fn signed_notes_verify_and_tampering_is_caught() {
        let gateway = signer("gw-eu-1");
        let witness = signer("witness-1");
        let body = Checkpoint {
            origin: "gw-eu-1".into(),
            size: 7,
            root: [3; 32],
        }
        .body();
        let note = sign_note(&body, &[&gateway, &witness]).unwrap();
        let gateway_key = Verifier::parse(&verifier_key(&gateway)).unwrap();
        let witness_key = Verifier::parse(&verifier_key(&witness)).unwrap();
        assert_eq!(gateway_key.open(&note).unwrap(), body);
        assert_eq!(witness_key.open(&note).unwrap(), body);

        // One changed byte of the text, or a note signed by another key under the same name.
        let edited = note.replacen("\n7\n", "\n8\n", 1);
        assert_eq!(
            gateway_key.open(&edited),
            Err(CheckpointError::BadSignature("gw-eu-1".into()))
        );
        let impostor = signer("gw-eu-1");
        let forged = sign_note(&body, &[&impostor]).unwrap();
        assert_eq!(
            gateway_key.open(&forged),
            Err(CheckpointError::NotSigned("gw-eu-1".into()))
        );
        let only_witness = sign_note(&body, &[&witness]).unwrap();
        assert!(gateway_key.open(&only_witness).is_err());
        assert!(gateway_key.open(&body).is_err(), "unsigned text");
    }

    #[test]
    fn verifier_keys_are_checked() {
        let s = signer("gw");
        let text = verifier_key(&s);
        assert!(text.starts_with("gw+"));
        assert!(Verifier::parse(&text).is_ok());
        assert!(Verifier::parse("gw+00000000+AQ==").is_err());
        assert!(
            Verifier::parse(&text.replacen("gw+", "other+", 1)).is_err(),
            "key id binds the name"
        );
        assert!(Verifier::parse("nonsense").is_err());
        assert!(
            Ed25519Signer::from_pkcs8("bad name", &Ed25519Signer::generate_pkcs8().unwrap())
                .is_err()
        );
    }
}
