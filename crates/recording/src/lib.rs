//! Session recordings: what a caller sent and what it received, kept as content-addressed
//! chunks that the audit log names.
//!
//! This is the storage layer of issue 15. A recorded message (a request as forwarded, an
//! answer as the caller saw it, after masking) becomes one chunk file under
//! `<data_dir>/recording/chunks/`. Its id is the SHA-256 of the file's bytes, so anyone with
//! the file and the event that names it can check it without any key: a chunk altered,
//! swapped for another or deleted no longer matches its id.
//!
//! A chunk file is `MAGIC || salt || zstd(content)`. The salt (16 random bytes) keeps an id
//! from being a hash of the content alone: an id published in an audit event, or streamed to a
//! SIEM, does not let anyone confirm a guess of a short recorded value by compressing and
//! hashing candidates. The price is that equal messages are stored twice; recorded messages
//! are rarely equal, and the log must not leak what they hold.
//!
//! Writes are atomic (a temporary file, fsynced, then renamed) and reads are bounded: a chunk
//! that would inflate beyond the store's limit is reported as corrupt, never allocated.
#![forbid(unsafe_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The first bytes of every chunk file: the format and its version.
const MAGIC: &[u8; 4] = b"PCR1";
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
/// zstd's level 3: fast, and a good ratio on JSON and row text.
const LEVEL: i32 = 3;

/// The id of a chunk: the SHA-256 of its file's bytes, as 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(String);

impl ChunkId {
    /// Parses an id as events carry it; anything but 64 lower-case hex digits is refused
    /// (an id becomes a path, so it must never hold a separator or `..`).
    pub fn parse(text: &str) -> Result<ChunkId, ChunkError> {
        let valid = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(ChunkId(text.to_string()))
        } else {
            Err(ChunkError::BadId(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("{0:?} is not a chunk id (64 lower-case hex digits)")]
    BadId(String),
    #[error("chunk {0} is missing from the recording store")]
    Missing(ChunkId),
    #[error("chunk {id} was altered: its bytes hash to {actual}")]
    Altered { id: ChunkId, actual: String },
    #[error("chunk {id} cannot be read back: {why}")]
    Corrupt { id: ChunkId, why: String },
    #[error("the recording store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The chunk files of one data directory.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    /// The largest content a chunk may inflate to when read back.
    max_content: usize,
}

impl ChunkStore {
    /// Opens (creating) `<data_dir>/recording/chunks`. `max_content` bounds what a read may
    /// inflate to, so a forged chunk cannot exhaust memory.
    pub fn open(data_dir: &Path, max_content: usize) -> Result<ChunkStore, ChunkError> {
        let dir = data_dir.join("recording").join("chunks");
        fs::create_dir_all(&dir).map_err(|source| ChunkError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(ChunkStore { dir, max_content })
    }

    /// Where the chunk `id` lives: a directory per first two hex digits keeps directories
    /// small.
    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(&id.0[..2]).join(&id.0[2..])
    }

    /// Stores `content` as a new chunk and returns its id. The file is durable when this
    /// returns (fsynced, then renamed into place, and the directory fsynced).
    pub fn put(&self, content: &[u8]) -> Result<ChunkId, ChunkError> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + content.len() / 2);
        bytes.extend_from_slice(MAGIC);
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        bytes.extend_from_slice(&salt);
        let compressed = zstd::bulk::compress(content, LEVEL).map_err(|source| ChunkError::Io {
            path: self.dir.clone(),
            source,
        })?;
        bytes.extend_from_slice(&compressed);
        let id = ChunkId(hex::encode(Sha256::digest(&bytes)));
        let path = self.path_of(&id);
        let parent = path.parent().expect("a chunk path has a parent");
        let io = |source| ChunkError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(parent).map_err(io)?;
        let tmp = parent.join(format!(".{}.tmp", &id.0[2..]));
        {
            let mut file = File::create(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(id)
    }

    /// The content of chunk `id`, checked against its id and bounded by the store's limit.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let bytes = self.checked_bytes(id)?;
        let corrupt = |why: String| ChunkError::Corrupt {
            id: id.clone(),
            why,
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a recording chunk (bad header)".into()));
        }
        let mut content = Vec::new();
        zstd::stream::Decoder::new(&bytes[HEADER_LEN..])
            .map_err(|e| corrupt(e.to_string()))?
            .take(self.max_content as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| corrupt(e.to_string()))?;
        if content.len() > self.max_content {
            return Err(corrupt(format!(
                "it inflates beyond {} bytes",
                self.max_content
            )));
        }
        Ok(content)
    }

    /// Checks that chunk `id` is present and unaltered, without inflating it: what `audit
    /// verify` does for every chunk an event names.
    pub fn verify(&self, id: &ChunkId) -> Result<(), ChunkError> {
        self.checked_bytes(id).map(drop)
    }

    /// The file's bytes, once they hash to `id`.
    fn checked_bytes(&self, id: &ChunkId) -> Result<Vec<u8>, ChunkError> {
        let path = self.path_of(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChunkError::Missing(id.clone()));
            }
            Err(source) => return Err(ChunkError::Io { path, source }),
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != id.0 {
            return Err(ChunkError::Altered {
                id: id.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ChunkStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn a_chunk_comes_back_as_it_was_stored() {
        let (_dir, store) = store();
        let content = br#"{"content":[{"type":"text","text":"refunded 25.00 USD"}]}"#;
        let id = store.put(content).unwrap();
        assert_eq!(store.get(&id).unwrap(), content);
        store.verify(&id).unwrap();
        assert_eq!(ChunkId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn an_altered_byte_is_named_and_a_deleted_chunk_is_missing() {
        let (_dir, store) = store();
        let id = store.put(b"SELECT 1").unwrap();
        let path = store.path_of(&id);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(store.verify(&id), Err(ChunkError::Altered { .. })));
        assert!(matches!(store.get(&id), Err(ChunkError::Altered { .. })));
        fs::remove_file(&path).unwrap();
        let err = store.verify(&id).unwrap_err();
        assert!(matches!(err, ChunkError::Missing(_)), "{err}");
        assert!(err.to_string().contains(id.as_str()), "{err}");
    }

    #[test]
    fn a_chunk_swapped_for_another_does_not_match_its_id() {
        let (_dir, store) = store();
        let a = store.put(b"the answer the caller saw").unwrap();
        let b = store.put(b"something else entirely").unwrap();
        fs::copy(store.path_of(&b), store.path_of(&a)).unwrap();
        assert!(matches!(store.verify(&a), Err(ChunkError::Altered { .. })));
    }

    #[test]
    fn an_id_does_not_confirm_a_guess_of_its_content() {
        let (_dir, store) = store();
        // The same short value twice gets two ids, and neither is a hash of the value or of
        // its compressed form: a guess cannot be checked against an id from the log.
        let first = store.put(b"4111").unwrap();
        let second = store.put(b"4111").unwrap();
        assert_ne!(first, second);
        let compressed = zstd::bulk::compress(b"4111", LEVEL).unwrap();
        for guess in [
            hex::encode(Sha256::digest(b"4111")),
            hex::encode(Sha256::digest(&compressed)),
        ] {
            assert_ne!(first.as_str(), guess);
        }
    }

    #[test]
    fn a_chunk_that_inflates_beyond_the_limit_is_corrupt_not_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let big = ChunkStore::open(dir.path(), 1 << 24).unwrap();
        let id = big.put(&vec![b'a'; 4 << 20]).unwrap();
        let small = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let err = small.get(&id).unwrap_err();
        assert!(matches!(err, ChunkError::Corrupt { .. }), "{err}");
        // Its bytes are intact: verification (which does not inflate) passes.
        small.verify(&id).unwrap();
    }

    #[test]
    fn ids_that_could_escape_the_store_are_refused() {
        for bad in [
            "../../etc/passwd",
            "",
            "ABCDEF",
            &"g".repeat(64),
            &"a".repeat(63),
        ] {
            assert!(ChunkId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
