//! Key files: an Ed25519 key pair kept as two files in a directory of its own.
//!
//! `<dir>/<stem>.key` holds the private key (PKCS#8 DER, mode 0600) and `<dir>/<stem>.pub` the
//! verifier key line (`<name>+<key id>+<base64 key>`) an auditor or a witness is given. The
//! key name lives in the public file, so loading the pair needs nothing else. The stems in use
//! are [`AUDIT_KEY`] (the gateway's checkpoint key) and [`WITNESS_KEY`] (a witness's key).
//!
//! The two are written in different verifier key formats ([`KeyKind`]): the audit key signs
//! notes (type 0x01), the witness key makes `cosignature/v1` cosignatures (type 0x04), whose
//! key id is computed differently; a verifier key says which it is, so one cannot be used as
//! the other by mistake.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Ed25519Signer, Signer as _, Verifier, verifier_key};
use crate::witness::{CosignatureVerifier, cosigner_key};

/// The file stem of the gateway's checkpoint signing key.
pub const AUDIT_KEY: &str = "audit";
/// The file stem of a witness's cosigning key.
pub const WITNESS_KEY: &str = "witness";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What a key pair signs, which decides the format of its verifier key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Signed notes (checkpoints): the gateway's audit key, verifier key type 0x01.
    Note,
    /// `cosignature/v1` cosignatures: a witness's key, verifier key type 0x04.
    Cosignature,
}

impl KeyKind {
    fn verifier_key(self, signer: &Ed25519Signer) -> String {
        match self {
            KeyKind::Note => verifier_key(signer),
            KeyKind::Cosignature => cosigner_key(signer),
        }
    }

    /// The key name and public key of a verifier key line of this kind.
    fn parse(self, text: &str) -> Result<(String, [u8; 32]), String> {
        match self {
            KeyKind::Note => Verifier::parse(text)
                .map(|v| (v.name, v.public_key))
                .map_err(|e| e.to_string()),
            KeyKind::Cosignature => CosignatureVerifier::parse(text)
                .map(|v| (v.name, v.public_key))
                .map_err(|e| e.to_string()),
        }
    }
}

/// The two paths of a key pair.
pub fn key_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.pub")),
    )
}

/// Generates a note signing key pair named `name` and writes it into `dir` (created 0700 if
/// missing). Refuses to replace an existing key: a lost signing key would orphan every
/// checkpoint it signed. Returns the verifier key line.
pub fn generate(dir: &Path, stem: &str, name: &str) -> Result<String, KeyError> {
    generate_kind(dir, stem, name, KeyKind::Note)
}

/// Like [`generate`], for a key of the given kind; the `.pub` file holds a verifier key line
/// of that kind.
pub fn generate_kind(
    dir: &Path,
    stem: &str,
    name: &str,
    kind: KeyKind,
) -> Result<String, KeyError> {
    let (private, public) = key_paths(dir, stem);
    for path in [&private, &public] {
        if path.exists() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))?;
    let pkcs8 = Ed25519Signer::generate_pkcs8().map_err(|e| KeyError::Invalid {
        path: private.clone(),
        message: e.to_string(),
    })?;
    let signer = Ed25519Signer::from_pkcs8(name, &pkcs8).map_err(|e| KeyError::Invalid {
        path: private.clone(),
        message: e.to_string(),
    })?;
    let vkey = kind.verifier_key(&signer);
    write_new(&private, &pkcs8, 0o600).map_err(io(&private))?;
    write_new(&public, format!("{vkey}\n").as_bytes(), 0o644).map_err(io(&public))?;
    Ok(vkey)
}

/// Loads the pair written by [`generate`], checking that the two files belong together.
pub fn load_signer(dir: &Path, stem: &str) -> Result<Ed25519Signer, KeyError> {
    load_signer_kind(dir, stem, KeyKind::Note)
}

/// Loads the pair written by [`generate_kind`] with the same `kind`.
pub fn load_signer_kind(dir: &Path, stem: &str, kind: KeyKind) -> Result<Ed25519Signer, KeyError> {
    let (private, public) = key_paths(dir, stem);
    let text = read_key_line(&public)?;
    let (name, public_key) = kind.parse(&text).map_err(|message| KeyError::Invalid {
        path: public.clone(),
        message,
    })?;
    let pkcs8 = std::fs::read(&private).map_err(|source| KeyError::Io {
        path: private.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(&private)
            && meta.permissions().mode() & 0o077 != 0
        {
            return Err(KeyError::Invalid {
                path: private,
                message: "the private key is readable by others; chmod 600 it".into(),
            });
        }
    }
    let signer = Ed25519Signer::from_pkcs8(&name, &pkcs8).map_err(|e| KeyError::Invalid {
        path: private.clone(),
        message: e.to_string(),
    })?;
    if signer.public_key() != public_key {
        return Err(KeyError::Invalid {
            path: public,
            message: format!("does not match the private key {}", private.display()),
        });
    }
    Ok(signer)
}

/// Reads a note verifier key line from a file (a `.pub` file, or any file holding the line).
pub fn load_verifier(path: &Path) -> Result<Verifier, KeyError> {
    Verifier::parse(&read_key_line(path)?).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads a cosignature verifier key line (a witness's `.pub` file) from a file.
pub fn load_cosignature_verifier(path: &Path) -> Result<CosignatureVerifier, KeyError> {
    CosignatureVerifier::parse(&read_key_line(path)?).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn read_key_line(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates `path` (never replacing a file) with `mode`, writes and fsyncs it.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_and_witness_keys_round_trip_in_their_own_formats() {
        let dir = tempfile::tempdir().unwrap();
        let audit = generate(dir.path(), AUDIT_KEY, "gw.example/eu-1").unwrap();
        let witness = generate_kind(
            dir.path(),
            WITNESS_KEY,
            "witness.example/w1",
            KeyKind::Cosignature,
        )
        .unwrap();

        let signer = load_signer(dir.path(), AUDIT_KEY).unwrap();
        assert_eq!(verifier_key(&signer), audit);
        let (_, public) = key_paths(dir.path(), AUDIT_KEY);
        assert_eq!(load_verifier(&public).unwrap().name, "gw.example/eu-1");

        let signer = load_signer_kind(dir.path(), WITNESS_KEY, KeyKind::Cosignature).unwrap();
        assert_eq!(signer.name(), "witness.example/w1");
        assert_eq!(cosigner_key(&signer), witness);
        let (_, public) = key_paths(dir.path(), WITNESS_KEY);
        assert_eq!(
            load_cosignature_verifier(&public).unwrap().public_key,
            signer.public_key()
        );

        // Each kind only loads as itself.
        assert!(load_verifier(&public).is_err());
        assert!(load_signer(dir.path(), WITNESS_KEY).is_err());
        assert!(load_signer_kind(dir.path(), AUDIT_KEY, KeyKind::Cosignature).is_err());
        // And an existing key is never replaced.
        assert!(matches!(
            generate_kind(dir.path(), WITNESS_KEY, "w2", KeyKind::Cosignature),
            Err(KeyError::Exists { .. })
        ));
    }
}
