//! Session recordings: what a caller sent and what it received, kept as content-addressed
//! chunks that the audit log names.
//!
//! A recorded message (a request as forwarded, an answer as the caller saw it, after
//! masking) becomes one [`Chunk`]: `MAGIC || salt || zstd(content)`, named by the SHA-256 of
//! those bytes. The audit event of the request carries the ids of its chunks, so anyone with
//! the chunks and the log can check them without any key: a chunk altered, swapped for
//! another or deleted no longer matches the id the signed log holds.
//!
//! The salt (16 random bytes) keeps an id from being a hash of the content alone: an id
//! published in an audit event, or streamed to a SIEM, does not let anyone confirm a guess of
//! a short recorded value by compressing and hashing candidates. The price is that equal
//! messages are stored twice; recorded messages are rarely equal, and the log must not leak
//! what they hold.
//!
//! Where chunks live is the audit log's business (beside the events, in the same
//! transaction), or, when recordings are encrypted to auditors, in sealed segments
//! ([`segment`]). [`document`] is what a chunk's content says.
#![forbid(unsafe_code)]

mod chunk;
pub mod document;
pub mod segment;

pub use chunk::{Chunk, ChunkError, ChunkId};
