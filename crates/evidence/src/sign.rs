//! Detached signatures of evidence documents, checked offline.
//!
//! A written document `FILE` gets a `FILE.sig` beside it: a small JSON object naming the
//! signature format, the document as its `evidence.report` event names it (an
//! [`EvidenceRecord`]: what it is, its format, its period, SHA-256, byte length, file name),
//! the signing key (`<name>+<key id>`, as in a verifier key line) and an Ed25519 signature.
//!
//! The signature is over [`signed_message`]: a domain-separation line and every field of the
//! record, one per line, in a fixed order. So it cannot be taken for a checkpoint signature by
//! the same key (a note never starts with that line), and no field can be changed, dropped or
//! moved to another document without breaking it. The key is the audit key by default (its
//! `audit.pub` verifies both), so an auditor needs one public key for the log and its reports.
//!
//! The metadata sits beside the signature in plain JSON so that `evidence sign-off` can read a
//! document's period without parsing the document, and a reviewer can read what was signed.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_audit::checkpoint::{Signer, Verifier, key_id};
use portcullis_model::EvidenceRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use crate::record::record_for;

/// The `format` of a signature file, and the first line of every signed message.
pub const SIGNATURE_FORMAT: &str = "portcullis-evidence-signature/1";

/// A signature file is a few hundred bytes; anything far larger is not one, and is not read
/// into memory whole.
const MAX_SIGNATURE_FILE: u64 = 64 * 1024;

/// The contents of a `.sig` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// The document signed.
    pub evidence: EvidenceRecord,
    /// The signing key: `<name>+<key id, 8 hex digits>`, the first two parts of its verifier
    /// key line.
    pub key: String,
    /// Ed25519 signature of [`signed_message`], base64.
    pub signature: String,
}

/// A document whose signature checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub evidence: EvidenceRecord,
    /// `<name>+<key id>` of the key that signed it.
    pub key: String,
}

/// Why a signature does not check, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The document itself cannot be read: nothing was checked.
    #[error("cannot read {path}: {source}")]
    Document {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no signature: {path} cannot be read ({source})")]
    MissingSignature {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a signature file: {reason}")]
    MalformedSignature { path: PathBuf, reason: String },
    #[error("signed by {found}, not by the key given ({expected})")]
    OtherKey { found: String, expected: String },
    #[error(
        "the signature does not match its metadata: the signature file was edited, or was not \
         made by {key}"
    )]
    BadSignature { key: String },
    #[error("the signature is for a file named {signed:?}, not {found:?}")]
    OtherFile { signed: String, found: String },
    #[error("the document is {found} bytes, {signed} when signed: it was {how}")]
    Length {
        signed: u64,
        found: u64,
        how: &'static str,
    },
    #[error("the document was edited: its SHA-256 is {found}, {signed} when signed")]
    Edited { signed: String, found: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sign: {0}")]
    Signing(String),
}

impl SignatureError {
    /// The check could not be run (as opposed to: it ran and the document is not validly
    /// signed). `evidence verify` exits 2 for these.
    pub fn is_unusable_input(&self) -> bool {
        matches!(self, SignatureError::Document { .. })
    }
}

/// Where the signature of `document` is kept: `<document>.sig`.
pub fn signature_path(document: &Path) -> PathBuf {
    let mut name = document.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The exact bytes signed for a record: [`SIGNATURE_FORMAT`], then each field on its own line
/// in a fixed order (an absent field as an empty line). Fields holding a newline are refused
/// by [`sign`], so no two records give the same message.
pub fn signed_message(record: &EvidenceRecord) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    format!(
        "{SIGNATURE_FORMAT}\ndocument {}\nformat {}\nsince {}\nuntil {}\nsha256 {}\nbytes {}\nfile {}\n",
        record.document,
        record.format,
        opt(&record.since),
        opt(&record.until),
        record.sha256,
        record.bytes,
        opt(&record.file),
    )
}

/// `<name>+<key id>` of a key.
fn key_label(name: &str, public_key: &[u8; 32]) -> String {
    format!("{name}+{}", hex::encode(key_id(name, public_key)))
}

/// Signs a record.
pub fn sign(record: &EvidenceRecord, signer: &dyn Signer) -> Result<SignatureFile, SignatureError> {
    let fields = [
        Some(&record.document),
        Some(&record.format),
        record.since.as_ref(),
        record.until.as_ref(),
        record.file.as_ref(),
    ];
    if fields
        .into_iter()
        .flatten()
        .any(|f| f.contains(['\n', '\r']))
    {
        return Err(SignatureError::Signing(
            "a field of the document's record holds a line break".into(),
        ));
    }
    let signature = signer
        .sign(signed_message(record).as_bytes())
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    Ok(SignatureFile {
        format: SIGNATURE_FORMAT.to_string(),
        evidence: record.clone(),
        key: key_label(signer.name(), &signer.public_key()),
        signature: B64.encode(signature),
    })
}

/// Signs the document written at `file` as `record` describes it, and writes `<file>.sig`
/// (replacing an older one: the document it signed was replaced too). Returns its path.
pub fn write_signature(
    file: &Path,
    record: &EvidenceRecord,
    signer: &dyn Signer,
) -> Result<PathBuf, SignatureError> {
    let signature = sign(record, signer)?;
    let path = signature_path(file);
    let mut text = serde_json::to_vec_pretty(&signature).expect("a signature serializes");
    text.push(b'\n');
    // Written aside and renamed, so a reader never sees half a signature.
    let partial = path.with_extension("sig.partial");
    let write = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SignatureError::Write { path: p, source }
    };
    std::fs::write(&partial, &text).map_err(write(&partial))?;
    std::fs::rename(&partial, &path).map_err(write(&path))?;
    Ok(path)
}

/// Reads and parses a `.sig` file.
pub fn read_signature(path: &Path) -> Result<SignatureFile, SignatureError> {
    use std::io::Read as _;
    let missing = |source| SignatureError::MissingSignature {
        path: path.to_path_buf(),
        source,
    };
    let mut text = Vec::new();
    std::fs::File::open(path)
        .map_err(missing)?
        .take(MAX_SIGNATURE_FILE + 1)
        .read_to_end(&mut text)
        .map_err(missing)?;
    let malformed = |reason: String| SignatureError::MalformedSignature {
        path: path.to_path_buf(),
        reason,
    };
    if text.len() as u64 > MAX_SIGNATURE_FILE {
        return Err(malformed(format!("larger than {MAX_SIGNATURE_FILE} bytes")));
    }
    let file: SignatureFile =
        serde_json::from_slice(&text).map_err(|e| malformed(e.to_string()))?;
    if file.format != SIGNATURE_FORMAT {
        return Err(malformed(format!(
            "format {:?}, expected {SIGNATURE_FORMAT:?}",
            file.format
        )));
    }
    Ok(file)
}

/// Checks `document` against its signature `signature` (default `<document>.sig`) and the
/// key `verifier`: the signature is the key's, over the metadata; the document is the one
/// the metadata names (file name, length, SHA-256).
pub fn verify(
    document: &Path,
    signature: Option<&Path>,
    verifier: &Verifier,
) -> Result<Signed, SignatureError> {
    let bytes = std::fs::read(document).map_err(|source| SignatureError::Document {
        path: document.to_path_buf(),
        source,
    })?;
    let sig_path = signature
        .map(Path::to_path_buf)
        .unwrap_or_else(|| signature_path(document));
    let sig = read_signature(&sig_path)?;

    let expected = key_label(&verifier.name, &verifier.public_key);
    if sig.key != expected {
        return Err(SignatureError::OtherKey {
            found: sig.key,
            expected,
        });
    }
    let raw = B64
        .decode(&sig.signature)
        .map_err(|_| SignatureError::MalformedSignature {
            path: sig_path.clone(),
            reason: "the signature is not base64".into(),
        })?;
    UnparsedPublicKey::new(&ED25519, verifier.public_key)
        .verify(signed_message(&sig.evidence).as_bytes(), &raw)
        .map_err(|_| SignatureError::BadSignature {
            key: expected.clone(),
        })?;

    // The signature is genuine; now the document must be the one it names.
    let record = sig.evidence;
    let found_name = document
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(signed) = &record.file
        && *signed != found_name
    {
        return Err(SignatureError::OtherFile {
            signed: signed.clone(),
            found: found_name,
        });
    }
    let found = bytes.len() as u64;
    if found != record.bytes {
        return Err(SignatureError::Length {
            signed: record.bytes,
            found,
            how: if found < record.bytes {
                "truncated"
            } else {
                "extended"
            },
        });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if sha256 != record.sha256 {
        return Err(SignatureError::Edited {
            signed: record.sha256,
            found: sha256,
        });
    }
    Ok(Signed {
        evidence: record,
        key: expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Period;
    use portcullis_audit::checkpoint::Ed25519Signer;

    fn signer(name: &str) -> Ed25519Signer {
        Ed25519Signer::from_pkcs8(name, &Ed25519Signer::generate_pkcs8().unwrap()).unwrap()
    }

    /// A signed report in a temporary directory: (dir, document path, signer).
    fn signed_report() -> (tempfile::TempDir, PathBuf, Ed25519Signer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report-2026-12-01.json");
        let bytes = br#"{"format":"portcullis-evidence-report/1","controls":[]}"#;
        std::fs::write(&path, bytes).unwrap();
        let period = Period::parse("2026-12-01", "2026-12-02").unwrap();
        let record = record_for("report", "json", Some(&period), bytes, &path);
        let key = signer("gw.example/eu-1");
        let sig = write_signature(&path, &record, &key).unwrap();
        assert_eq!(sig, dir.path().join("report-2026-12-01.json.sig"));
        (dir, path, key)
    }

    #[test]
    fn a_signed_document_verifies_and_names_what_was_signed() {
        let (_dir, path, key) = signed_report();
        let signed = verify(&path, None, &Verifier::for_signer(&key)).unwrap();
        assert_eq!(signed.evidence.document, "report");
        assert_eq!(
            signed.evidence.since.as_deref(),
            Some("2026-12-01T00:00:00.000Z")
        );
        assert_eq!(
            signed.evidence.file.as_deref(),
            Some("report-2026-12-01.json")
        );
        assert_eq!(
            signed.evidence.bytes,
            std::fs::metadata(&path).unwrap().len()
        );
        assert!(signed.key.starts_with("gw.example/eu-1+"), "{}", signed.key);
    }

    #[test]
    fn an_edited_document_is_refused() {
        let (_dir, path, key) = signed_report();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.iter().position(|&b| b == b'[').unwrap();
        bytes[at] = b'{'; // same length, other content
        std::fs::write(&path, &bytes).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(matches!(err, SignatureError::Edited { .. }), "{err}");
        assert!(err.to_string().contains("was edited"), "{err}");
        assert!(!err.is_unusable_input());
    }

    #[test]
    fn a_truncated_or_extended_document_is_refused() {
        let (_dir, path, key) = signed_report();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        let mut longer = bytes.clone();
        longer.push(b'\n');
        std::fs::write(&path, &longer).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(err.to_string().contains("extended"), "{err}");
    }

    #[test]
    fn an_edited_signature_file_is_refused() {
        let (_dir, path, key) = signed_report();
        let sig_path = signature_path(&path);
        let original = std::fs::read_to_string(&sig_path).unwrap();
        // Another period claimed for the same bytes: the metadata no longer matches the
        // signature, although the document itself is untouched.
        let edited = original.replace("2026-12-01T00:00:00.000Z", "2026-11-30T00:00:00.000Z");
        assert_ne!(edited, original);
        std::fs::write(&sig_path, edited).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");

        // A hash edited to match an edited document fails the same way.
        let mut sig: SignatureFile = serde_json::from_str(&original).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        sig.evidence.sha256 = hex::encode(Sha256::digest(b"{}"));
        sig.evidence.bytes = 2;
        std::fs::write(&sig_path, serde_json::to_vec(&sig).unwrap()).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");

        std::fs::write(&sig_path, "not json").unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(
            matches!(err, SignatureError::MalformedSignature { .. }),
            "{err}"
        );
    }

    #[test]
    fn another_key_is_refused_even_under_the_same_name() {
        let (_dir, path, _key) = signed_report();
        let other = signer("gw.example/eu-1");
        let err = verify(&path, None, &Verifier::for_signer(&other)).unwrap_err();
        assert!(matches!(err, SignatureError::OtherKey { .. }), "{err}");
        assert!(err.to_string().contains("not by the key given"), "{err}");
    }

    #[test]
    fn a_signature_moved_to_another_file_name_is_refused() {
        let (dir, path, key) = signed_report();
        let moved = dir.path().join("report-2026-12-02.json");
        std::fs::copy(&path, &moved).unwrap();
        let err = verify(
            &moved,
            Some(&signature_path(&path)),
            &Verifier::for_signer(&key),
        )
        .unwrap_err();
        assert!(matches!(err, SignatureError::OtherFile { .. }), "{err}");
    }

    #[test]
    fn a_missing_signature_or_document_says_which() {
        let (_dir, path, key) = signed_report();
        std::fs::remove_file(signature_path(&path)).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(
            matches!(err, SignatureError::MissingSignature { .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("no signature"), "{err}");
        assert!(
            !err.is_unusable_input(),
            "an unsigned document is not validly signed"
        );

        std::fs::remove_file(&path).unwrap();
        let err = verify(&path, None, &Verifier::for_signer(&key)).unwrap_err();
        assert!(err.is_unusable_input(), "{err}");
    }

    #[test]
    fn the_signed_message_binds_every_field_and_starts_with_its_domain() {
        let record = record_for("report", "html", None, b"x", Path::new("/a/r.html"));
        let message = signed_message(&record);
        assert!(message.starts_with("portcullis-evidence-signature/1\n"));
        assert!(message.contains("\nfile r.html\n"), "{message}");
        let mut other = record.clone();
        other.format = "md".into();
        assert_ne!(signed_message(&other), message);
        other = record.clone();
        other.document = "report\nformat html".into();
        assert!(sign(&other, &signer("k")).is_err());
    }
}
