//! Sealed segments: recorded chunks encrypted to the auditors, so the gateway host cannot
//! read back what it recorded.
//!
//! A segment is one file in the age format (binary, not armored), encrypted to one or more
//! X25519 recipients (`age1...`), so an auditor decrypts it with tools they already have:
//! `age -d -i key.txt 12-40.age`. Its plaintext is the magic line `PCS1\n` followed by
//! entries, each
//!
//! ```text
//! seq (u64, big-endian) || chunk id (32 raw bytes) || len (u32, big-endian) || chunk bytes
//! ```
//!
//! where `seq` is the audit sequence number of the request whose event names the chunk.
//! Reading a segment back checks every chunk against its id, bounds every length by what
//! is left of the file, and tells a wrong key from a truncated or corrupt file.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{Chunk, ChunkError, ChunkId};

/// The first bytes of a segment's plaintext: the format and its version.
pub const MAGIC: &[u8; 5] = b"PCS1\n";

/// The largest chunk a segment entry may hold. Chunks are compressed records of at most
/// `max_request_bytes` of content, far below this; a larger length is corruption.
pub const MAX_CHUNK_BYTES: u32 = 256 << 20;

/// An entry's fixed part: seq, id, length.
const ENTRY_HEADER: usize = 8 + 32 + 4;

/// The largest identity file read: a few keys and comments.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// Why a segment cannot be sealed or opened, or a key not used.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("recipient {index} ({text:?}) is not an age X25519 recipient (age1...): {why}")]
    Recipient {
        index: usize,
        text: String,
        why: String,
    },
    #[error("no recipients: a segment must be encrypted to at least one auditor key")]
    NoRecipients,
    #[error("identity file {path}: {why}")]
    IdentityFile { path: PathBuf, why: String },
    #[error(
        "none of the identities given can decrypt it: it is encrypted to other recipients (wrong key?)"
    )]
    WrongKey,
    #[error("it is not a readable segment (truncated or corrupt): {0}")]
    Corrupt(String),
    #[error("cannot encrypt the segment: {0}")]
    Encrypt(String),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

/// The fingerprint of a recipient as events name it: the first 16 hex digits of the
/// SHA-256 of its text. It tells which auditors can read a segment without naming their key.
pub fn fingerprint(recipient: &str) -> String {
    let mut hex = hex::encode(Sha256::digest(recipient.as_bytes()));
    hex.truncate(16);
    hex
}

/// The auditors' keys segments are encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    fingerprints: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipients")
            .field("fingerprints", &self.fingerprints)
            .finish()
    }
}

impl Recipients {
    /// Parses `age1...` recipients (`[recording] recipients`). At least one is needed.
    pub fn parse(texts: &[String]) -> Result<Recipients, SegmentError> {
        if texts.is_empty() {
            return Err(SegmentError::NoRecipients);
        }
        let mut keys = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let key =
                text.parse::<age::x25519::Recipient>()
                    .map_err(|why| SegmentError::Recipient {
                        index,
                        text: text.chars().take(100).collect(),
                        why: why.to_string(),
                    })?;
            keys.push(key);
        }
        Ok(Recipients {
            keys,
            fingerprints: texts.iter().map(|t| fingerprint(t)).collect(),
        })
    }

    /// The recipients' fingerprints, in the order given.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }
}

/// Keys that decrypt segments (`AGE-SECRET-KEY-1...`): an auditor's, never the gateway's.
#[derive(Clone, Default)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Identities {
    /// Parses an age identity file: one `AGE-SECRET-KEY-1...` per line; blank lines and
    /// `#` comments (what `age-keygen` writes) are allowed.
    pub fn parse(text: &str) -> Result<Identities, String> {
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.parse::<age::x25519::Identity>().map_err(|why| {
                format!("line {} is not an age X25519 identity: {why}", number + 1)
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("it holds no identity (AGE-SECRET-KEY-1...)".into());
        }
        Ok(Identities { keys })
    }

    /// A new random identity and its recipient text (`age1...`), as `age-keygen` makes.
    pub fn generate() -> (Identities, String) {
        let key = age::x25519::Identity::generate();
        let recipient = key.to_public().to_string();
        (Identities { keys: vec![key] }, recipient)
    }

    /// The identity file text of these keys (for a test or a key a command generated).
    pub fn to_file_text(&self) -> String {
        use age::secrecy::ExposeSecret as _;
        self.keys
            .iter()
            .map(|k| format!("{}\n", k.to_string().expose_secret()))
            .collect()
    }
}

/// Reads an age identity file (`--identity FILE`).
pub fn load_identities(path: &Path) -> Result<Identities, SegmentError> {
    let err = |why: String| SegmentError::IdentityFile {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_IDENTITY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_IDENTITY_FILE {
        return Err(err("far too large for an identity file".into()));
    }
    Identities::parse(&text).map_err(err)
}

/// The plaintext of a segment holding `entries` (sequence number and chunk, in order).
pub fn plaintext(entries: &[(u64, Chunk)]) -> Vec<u8> {
    let size = entries
        .iter()
        .map(|(_, c)| ENTRY_HEADER + c.bytes().len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(MAGIC.len() + size);
    out.extend_from_slice(MAGIC);
    for (seq, chunk) in entries {
        out.extend_from_slice(&seq.to_be_bytes());
        let mut id = [0u8; 32];
        hex::decode_to_slice(chunk.id().as_str(), &mut id).expect("a chunk id is 64 hex digits");
        out.extend_from_slice(&id);
        let len = u32::try_from(chunk.bytes().len()).expect("a chunk is far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(chunk.bytes());
    }
    out
}

/// Encrypts `entries` to `recipients`: the bytes of the segment file (age, binary).
pub fn seal(entries: &[(u64, Chunk)], recipients: &Recipients) -> Result<Vec<u8>, SegmentError> {
    let plain = plaintext(entries);
    let encryptor = age::Encryptor::with_recipients(
        recipients.keys.iter().map(|k| -> &dyn age::Recipient { k }),
    )
    .map_err(|e| SegmentError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 256 + plain.len() / 4096);
    let encrypt = |e: std::io::Error| SegmentError::Encrypt(e.to_string());
    let mut writer = encryptor.wrap_output(&mut out).map_err(encrypt)?;
    writer.write_all(&plain).map_err(encrypt)?;
    writer.finish().map_err(encrypt)?;
    Ok(out)
}

/// Decrypts a segment file and reads its entries, every chunk checked against its id.
pub fn open(ciphertext: &[u8], identities: &Identities) -> Result<Vec<(u64, Chunk)>, SegmentError> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(decrypt_error)?;
    let mut reader = decryptor
        .decrypt(identities.keys.iter().map(|k| -> &dyn age::Identity { k }))
        .map_err(decrypt_error)?;
    // The plaintext is never longer than the ciphertext: what is read is bounded by it.
    let mut plain = Vec::with_capacity(ciphertext.len());
    reader
        .by_ref()
        .take(ciphertext.len() as u64)
        .read_to_end(&mut plain)
        .map_err(|e| SegmentError::Corrupt(e.to_string()))?;
    parse(&plain)
}

/// The entries of a segment's plaintext.
pub fn parse(plain: &[u8]) -> Result<Vec<(u64, Chunk)>, SegmentError> {
    let corrupt = |why: String| SegmentError::Corrupt(why);
    let Some(mut rest) = plain.strip_prefix(MAGIC.as_slice()) else {
        return Err(corrupt(
            "its plaintext does not start with PCS1 (not a Portcullis segment)".into(),
        ));
    };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let at = plain.len() - rest.len();
        if rest.len() < ENTRY_HEADER {
            return Err(corrupt(format!(
                "entry {} at byte {at} is cut short",
                entries.len() + 1
            )));
        }
        let seq = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let id = ChunkId::parse(&hex::encode(&rest[8..40])).expect("64 hex digits");
        let len = u32::from_be_bytes(rest[40..44].try_into().expect("4 bytes"));
        rest = &rest[ENTRY_HEADER..];
        if len > MAX_CHUNK_BYTES || len as usize > rest.len() {
            return Err(corrupt(format!(
                "entry {} at byte {at} claims {len} bytes, but {} are left",
                entries.len() + 1,
                rest.len()
            )));
        }
        let (bytes, after) = rest.split_at(len as usize);
        entries.push((seq, Chunk::stored(&id, bytes.to_vec())?));
        rest = after;
    }
    Ok(entries)
}

fn decrypt_error(e: age::DecryptError) -> SegmentError {
    match e {
        age::DecryptError::NoMatchingKeys => SegmentError::WrongKey,
        other => SegmentError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<(u64, Chunk)> {
        vec![
            (3, Chunk::seal(br#"{"q":"SELECT 1"}"#)),
            (3, Chunk::seal(br#"{"rows":[[1]]}"#)),
            (7, Chunk::seal(&vec![b'x'; 100_000])),
        ]
    }

    #[test]
    fn a_sealed_segment_opens_with_the_key_to_the_same_chunks() {
        let (key, recipient) = Identities::generate();
        let (other, other_recipient) = Identities::generate();
        let recipients = Recipients::parse(&[recipient.clone(), other_recipient]).unwrap();
        assert_eq!(recipients.fingerprints()[0], fingerprint(&recipient));
        assert_eq!(recipients.fingerprints()[0].len(), 16);
        let entries = entries();
        let sealed = seal(&entries, &recipients).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n"));
        // The plaintext is not in the file.
        assert!(!sealed.windows(4).any(|w| w == b"PCS1"));
        for identities in [&key, &other] {
            assert_eq!(open(&sealed, identities).unwrap(), entries);
        }
    }

    #[test]
    fn the_wrong_key_is_named_as_such() {
        let (_, recipient) = Identities::generate();
        let (stranger, _) = Identities::generate();
        let sealed = seal(&entries(), &Recipients::parse(&[recipient]).unwrap()).unwrap();
        let err = open(&sealed, &stranger).unwrap_err();
        assert!(matches!(err, SegmentError::WrongKey), "{err}");
        assert!(err.to_string().contains("wrong key"), "{err}");
    }

    #[test]
    fn a_truncated_or_altered_segment_is_corrupt_not_a_panic() {
        let (key, recipient) = Identities::generate();
        let sealed = seal(&entries(), &Recipients::parse(&[recipient]).unwrap()).unwrap();
        for cut in [10, 100, sealed.len() / 2, sealed.len() - 1] {
            let err = open(&sealed[..cut], &key).unwrap_err();
            assert!(
                matches!(err, SegmentError::Corrupt(_)),
                "cut at {cut}: {err}"
            );
        }
        let mut altered = sealed.clone();
        let last = altered.len() - 20;
        altered[last] ^= 1;
        let err = open(&altered, &key).unwrap_err();
        assert!(matches!(err, SegmentError::Corrupt(_)), "{err}");
    }

    #[test]
    fn a_plaintext_that_lies_about_its_entries_is_corrupt() {
        let plain = plaintext(&entries());
        for cut in [3, MAGIC.len() + 10, plain.len() - 1] {
            assert!(parse(&plain[..cut]).is_err(), "cut at {cut}");
        }
        // A length beyond what is left.
        let mut long = plain.clone();
        long[MAGIC.len() + 40..MAGIC.len() + 44].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&long), Err(SegmentError::Corrupt(_))));
        // A chunk that does not match its id.
        let mut altered = plain;
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(
            parse(&altered),
            Err(SegmentError::Chunk(ChunkError::Altered { .. }))
        ));
    }

    #[test]
    fn recipients_and_identities_that_are_not_keys_are_refused() {
        let err = Recipients::parse(&["age1notakey".into()]).unwrap_err();
        assert!(err.to_string().contains("recipient 0"), "{err}");
        assert!(matches!(
            Recipients::parse(&[]),
            Err(SegmentError::NoRecipients)
        ));
        let (key, _) = Identities::generate();
        let file = format!(
            "# created: now\n# public key: age1...\n\n{}",
            key.to_file_text()
        );
        assert_eq!(Identities::parse(&file).unwrap().keys.len(), 1);
        assert!(Identities::parse("# only a comment\n").is_err());
        assert!(
            Identities::parse("AGE-SECRET-KEY-1XYZ\n")
                .unwrap_err()
                .contains("line 1")
        );
    }

    /// An auditor decrypts a segment with Debian's `age`, no Portcullis needed. Fails (does
    /// not skip) where `age` is not installed: CI installs it.
    #[test]
    fn debians_age_command_decrypts_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let keygen = std::process::Command::new("age-keygen")
            .arg("-o")
            .arg(dir.path().join("key.txt"))
            .output()
            .expect("age-keygen (Debian package age) must be installed");
        assert!(keygen.status.success(), "{keygen:?}");
        let key_file = std::fs::read_to_string(dir.path().join("key.txt")).unwrap();
        let recipient = key_file
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("age-keygen writes the public key")
            .to_string();
        let entries = entries();
        let sealed = seal(&entries, &Recipients::parse(&[recipient]).unwrap()).unwrap();
        std::fs::write(dir.path().join("seg.age"), &sealed).unwrap();
        let out = std::process::Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(dir.path().join("key.txt"))
            .arg(dir.path().join("seg.age"))
            .output()
            .expect("age (Debian package age) must be installed");
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.starts_with(b"PCS1\n"));
        assert_eq!(out.stdout, plaintext(&entries));
        // And the crate reads the key file age-keygen wrote.
        let identities = load_identities(&dir.path().join("key.txt")).unwrap();
        assert_eq!(open(&sealed, &identities).unwrap(), entries);
    }
}
