//! Chunks: one recorded message, compressed and salted, named by the SHA-256 of its bytes.

use std::io::Read as _;

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The first bytes of every chunk: the format and its version.
const MAGIC: &[u8; 4] = b"PCR1";
const SALT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN;
/// zstd's default level: most of the ratio for a fraction of the time of higher levels,
/// and this runs on the request path.
const LEVEL: i32 = 3;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(
            zstd::bulk::Compressor::new(LEVEL).expect("a zstd context at the default level"),
        );
}

/// A chunk's id: 64 lower-case hex digits, the SHA-256 of its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(String);

impl ChunkId {
    /// Accepts only the canonical spelling, so an id read from an event or a command line
    /// can be used as a key (or a file name) without further checks.
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

    /// The id of `bytes`, whatever they are.
    pub fn of(bytes: &[u8]) -> ChunkId {
        ChunkId(hex::encode(Sha256::digest(bytes)))
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

/// Why a chunk cannot be trusted or read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("{0:?} is not a chunk id (64 lower-case hex digits)")]
    BadId(String),
    #[error("chunk {0} is missing")]
    Missing(ChunkId),
    #[error("chunk {id} was altered: its bytes hash to {actual}")]
    Altered { id: ChunkId, actual: String },
    #[error("chunk {id} cannot be read back: {why}")]
    Corrupt { id: ChunkId, why: String },
}

/// One recorded message as stored: `MAGIC || salt || zstd(content)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    id: ChunkId,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("id", &self.id.0)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Chunk {
    /// Compresses and salts `content` and names the result.
    pub fn seal(content: &[u8]) -> Chunk {
        let mut bytes = Vec::with_capacity(HEADER_LEN + content.len() / 3 + 16);
        bytes.extend_from_slice(MAGIC);
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        bytes.extend_from_slice(&salt);
        // A compression context costs far more to set up (its tables are hundreds of
        // kilobytes) than compressing one message: each thread keeps one. Compressing into
        // a Vec cannot fail for want of room; zstd fails only on a corrupted context, which
        // would be a bug in the library.
        let compressed = COMPRESSOR.with(|compressor| {
            compressor
                .borrow_mut()
                .compress(content)
                .expect("zstd compresses any byte string")
        });
        bytes.extend_from_slice(&compressed);
        Chunk {
            id: ChunkId::of(&bytes),
            bytes,
        }
    }

    /// A chunk read back from storage under `id`: its bytes must hash to the id.
    pub fn stored(id: &ChunkId, bytes: Vec<u8>) -> Result<Chunk, ChunkError> {
        let actual = ChunkId::of(&bytes);
        if &actual != id {
            return Err(ChunkError::Altered {
                id: id.clone(),
                actual: actual.0,
            });
        }
        Ok(Chunk { id: actual, bytes })
    }

    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The stored bytes (what the id hashes).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The recorded content, inflated to at most `max` bytes: a chunk that would inflate
    /// beyond is reported corrupt, never allocated.
    pub fn content(&self, max: usize) -> Result<Vec<u8>, ChunkError> {
        let corrupt = |why: String| ChunkError::Corrupt {
            id: self.id.clone(),
            why,
        };
        if self.bytes.len() < HEADER_LEN || &self.bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a recording chunk (bad header)".into()));
        }
        let mut content = Vec::new();
        zstd::stream::Decoder::new(&self.bytes[HEADER_LEN..])
            .map_err(|e| corrupt(e.to_string()))?
            .take(max as u64 + 1)
            .read_to_end(&mut content)
            .map_err(|e| corrupt(e.to_string()))?;
        if content.len() > max {
            return Err(corrupt(format!("it inflates beyond {max} bytes")));
        }
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn a_chunk_comes_back_as_it_was_sealed() {
        let content = br#"{"content":[{"type":"text","text":"refunded 25.00 USD"}]}"#;
        let chunk = Chunk::seal(content);
        assert_eq!(chunk.content(MAX).unwrap(), content);
        let again = Chunk::stored(chunk.id(), chunk.bytes().to_vec()).unwrap();
        assert_eq!(again, chunk);
        assert_eq!(ChunkId::parse(chunk.id().as_str()).unwrap(), *chunk.id());
    }

    #[test]
    fn an_altered_byte_or_a_swapped_chunk_does_not_match_its_id() {
        let chunk = Chunk::seal(b"SELECT 1");
        let mut bytes = chunk.bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = Chunk::stored(chunk.id(), bytes).unwrap_err();
        assert!(matches!(err, ChunkError::Altered { .. }), "{err}");
        assert!(err.to_string().contains(chunk.id().as_str()), "{err}");
        let other = Chunk::seal(b"something else entirely");
        assert!(Chunk::stored(chunk.id(), other.into_bytes()).is_err());
    }

    #[test]
    fn an_id_does_not_confirm_a_guess_of_its_content() {
        let first = Chunk::seal(b"4111");
        let second = Chunk::seal(b"4111");
        assert_ne!(first.id(), second.id());
        let compressed = zstd::bulk::compress(b"4111", LEVEL).unwrap();
        for guess in [ChunkId::of(b"4111"), ChunkId::of(&compressed)] {
            assert_ne!(*first.id(), guess);
        }
    }

    #[test]
    fn a_chunk_that_inflates_beyond_the_limit_is_corrupt_not_allocated() {
        let chunk = Chunk::seal(&vec![b'a'; 4 << 20]);
        assert!(chunk.bytes().len() < 4096, "{}", chunk.bytes().len());
        let err = chunk.content(MAX).unwrap_err();
        assert!(matches!(err, ChunkError::Corrupt { .. }), "{err}");
        assert_eq!(chunk.content(4 << 20).unwrap().len(), 4 << 20);
    }

    #[test]
    fn bytes_that_are_not_a_chunk_are_corrupt() {
        let bytes = b"PCR2 not a chunk at all".to_vec();
        let chunk = Chunk::stored(&ChunkId::of(&bytes), bytes).unwrap();
        assert!(matches!(
            chunk.content(MAX),
            Err(ChunkError::Corrupt { .. })
        ));
    }

    #[test]
    fn only_canonical_ids_parse() {
        for bad in [
            "../../etc/passwd",
            "",
            "ABCDEF",
            &"g".repeat(64),
            &"a".repeat(63),
            &"A".repeat(64),
        ] {
            assert!(ChunkId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
