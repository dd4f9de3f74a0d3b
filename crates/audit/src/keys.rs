//! Key files: an Ed25519 key pair kept as two files in a directory of its own.
//!
//! `<dir>/<stem>.key` holds the private key (PKCS#8 DER, mode 0600) and `<dir>/<stem>.pub` the
//! verifier key line (`<name>+<key id>+<base64 key>`) an auditor or a witness is given. The
//! key name lives in the public file, so loading the pair needs nothing else. The stems in use
//! are [`AUDIT_KEY`] (the gateway's checkpoint key) and [`WITNESS_KEY`] (a witness's key).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Ed25519Signer, Signer as _, Verifier, verifier_key};

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

/// The two paths of a key pair.
pub fn key_paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.pub")),
    )
}

/// Generates a key pair named `name` and writes it into `dir` (created 0700 if missing).
/// Refuses to replace an existing key: a lost signing key would orphan every checkpoint it
/// signed. Returns the verifier key line.
pub fn generate(dir: &Path, stem: &str, name: &str) -> Result<String, KeyError> {
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
    let vkey = verifier_key(&signer);
    write_new(&private, &pkcs8, 0o600).map_err(io(&private))?;
    write_new(&public, format!("{vkey}\n").as_bytes(), 0o644).map_err(io(&public))?;
    Ok(vkey)
}

/// Loads the pair written by [`generate`], checking that the two files belong together.
pub fn load_signer(dir: &Path, stem: &str) -> Result<Ed25519Signer, KeyError> {
    let (private, public) = key_paths(dir, stem);
    let verifier = load_verifier(&public)?;
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
    let signer =
        Ed25519Signer::from_pkcs8(&verifier.name, &pkcs8).map_err(|e| KeyError::Invalid {
            path: private.clone(),
            message: e.to_string(),
        })?;
    if signer.public_key() != verifier.public_key {
        return Err(KeyError::Invalid {
            path: public,
            message: format!("does not match the private key {}", private.display()),
        });
    }
    Ok(signer)
}

/// Reads a verifier key line from a file (a `.pub` file, or any file holding the line).
pub fn load_verifier(path: &Path) -> Result<Verifier, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Verifier::parse(text.trim()).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Creates `path` (never replacing a file) with `mode`, writes and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
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
