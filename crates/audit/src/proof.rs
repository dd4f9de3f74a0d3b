//! Proofs that one event is in the log, checkable offline by anyone with the gateway's
//! public key: `portcullis audit proof` and `portcullis audit verify-proof`.
//!
//! A proof file is self-contained JSON: the event's canonical bytes exactly as hashed, its
//! leaf index, a signed checkpoint that covers it (with the witnesses' cosignature lines,
//! if any) and the RFC 6962 inclusion proof from the leaf to that checkpoint's root. Whoever
//! holds it can show a third party that this event, byte for byte, is entry N of the log
//! whose head the gateway signed, without access to the database.
//!
//! The checkpoint chosen is the smallest stored one that covers the event: it exists soonest
//! and never changes, so a proof made today and one made next year agree.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, Verifier};
use crate::merkle::{self, Hash};
use crate::witness::CosignatureVerifier;
use crate::{AuditError, AuditReader};

/// The proof format this build writes and reads.
pub const PROOF_VERSION: u32 = 1;

/// The content of a proof file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventProof {
    pub version: u32,
    /// The event's canonical JSON (RFC 8785), exactly the bytes that were hashed. Kept as a
    /// string, not as an object, because re-encoding an object could change a byte.
    pub event: String,
    /// The event's sequence number in the log; `leaf_index + 1`.
    pub seq: u64,
    /// The leaf index in the Merkle tree (0-based).
    pub leaf_index: u64,
    /// The signed checkpoint note, followed by any cosignature lines of witnesses.
    pub checkpoint: String,
    /// The inclusion proof, leaf to root, as base64 SHA-256 hashes.
    pub inclusion_proof: Vec<String>,
}

impl EventProof {
    /// The proof as pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a proof serializes");
        text.push('\n');
        text
    }
}

/// Why a proof could not be made or does not check.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("no event {0} in the audit log")]
    NotFound(String),
    #[error(
        "event {id} (entry {seq}) is not yet covered by a checkpoint{newest}; try again after the next one"
    )]
    NotCovered {
        id: String,
        seq: u64,
        newest: String,
    },
    #[error("the audit log is inconsistent ({0}); run `portcullis audit verify`")]
    Inconsistent(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid proof: {0}")]
    Malformed(String),
    #[error("proof format version {0} is not supported (this portcullis reads version 1)")]
    Version(u32),
    #[error("the checkpoint in the proof does not verify: {0}")]
    Checkpoint(CheckpointError),
    #[error("the event is not in the signed checkpoint: {0}")]
    Inclusion(merkle::ProofError),
    #[error("the cosignature by {0} in the proof does not verify: {1}")]
    Cosignature(String, CheckpointError),
}

/// Builds the proof for the event with id `event_id` in the log in `data_dir`.
///
/// The proof is checked against the log's own checkpoint before it is returned, so a log
/// that no longer matches its checkpoints yields an error rather than a useless proof.
pub fn build_proof(data_dir: &Path, event_id: &str) -> Result<EventProof, ProofError> {
    let reader = AuditReader::open(data_dir)?;
    // One snapshot, so a gateway appending meanwhile cannot mix two states of the log.
    reader.begin_snapshot()?;
    let seq = reader
        .seq_of(event_id)?
        .ok_or_else(|| ProofError::NotFound(event_id.to_string()))?;
    let checkpoints = reader.raw_checkpoints()?;
    let Some(stored) = checkpoints.iter().find(|cp| cp.size >= seq as i64) else {
        return Err(ProofError::NotCovered {
            id: event_id.to_string(),
            seq,
            newest: match checkpoints.last() {
                Some(cp) => format!(" (the newest covers the first {} events)", cp.size),
                None => " (the log has no checkpoint yet)".to_string(),
            },
        });
    };
    let size = stored.size as u64;
    let body = reader
        .body_at(seq)?
        .ok_or_else(|| ProofError::Inconsistent(format!("event {seq} has no body")))?;
    let event = String::from_utf8(body)
        .map_err(|_| ProofError::Inconsistent(format!("event {seq} is not UTF-8")))?;
    let leaves = reader.leaf_hashes(size)?.map_err(|bad| {
        ProofError::Inconsistent(format!("event {bad} is missing or has no valid leaf hash"))
    })?;
    let index = seq - 1;
    let leaf = merkle::leaf_hash(event.as_bytes());
    if leaves[index as usize] != leaf {
        return Err(ProofError::Inconsistent(format!(
            "the body of event {seq} does not match its leaf hash"
        )));
    }
    let checkpoint = unverified_checkpoint(&stored.note).map_err(|e| {
        ProofError::Inconsistent(format!("the checkpoint of size {size} is unreadable: {e}"))
    })?;
    if checkpoint.size != size || checkpoint.root != merkle::root(&leaves) {
        return Err(ProofError::Inconsistent(format!(
            "the events do not produce the checkpoint of size {size}"
        )));
    }
    let path = merkle::inclusion_proof(index as usize, &leaves);
    merkle::verify_inclusion(&leaf, index, size, &path, &checkpoint.root)
        .map_err(|e| ProofError::Inconsistent(format!("the inclusion proof fails: {e}")))?;
    let mut note = stored.note.clone();
    for row in reader
        .raw_cosignatures()?
        .iter()
        .filter(|c| c.size == stored.size)
    {
        note.push_str(&row.line);
        if !row.line.ends_with('\n') {
            note.push('\n');
        }
    }
    Ok(EventProof {
        version: PROOF_VERSION,
        event,
        seq,
        leaf_index: index,
        checkpoint: note,
        inclusion_proof: path.iter().map(|h| B64.encode(h)).collect(),
    })
}

/// The checkpoint in a note, signature not checked (the log's own stored note, read to make
/// a proof; the proof's reader checks the signature).
fn unverified_checkpoint(note: &str) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::parse(crate::checkpoint::split_note(note)?.0)
}

/// What a valid proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofReport {
    pub event_id: String,
    pub time: String,
    pub event_type: String,
    pub seq: u64,
    pub origin: String,
    pub checkpoint_size: u64,
    /// The key that signed the checkpoint.
    pub signer: String,
    /// The given witnesses whose cosignature of the checkpoint is in the proof and verifies.
    pub cosigned_by: Vec<String>,
}

impl std::fmt::Display for ProofReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {} ({}, {}) is entry {} of {}, included in the checkpoint of size {} signed by {}",
            self.event_id,
            self.event_type,
            self.time,
            self.seq,
            self.origin,
            self.checkpoint_size,
            self.signer
        )?;
        if !self.cosigned_by.is_empty() {
            write!(f, ", cosigned by {}", self.cosigned_by.join(", "))?;
        }
        Ok(())
    }
}

/// Checks a proof file offline against the gateway's key.
pub fn verify_proof(file: &Path, key: &Verifier) -> Result<ProofReport, ProofError> {
    verify_proof_with_witnesses(file, key, &[])
}

/// Like [`verify_proof`], and checks the cosignatures of the given witnesses in it: each one
/// present must verify; one that is absent is simply not listed.
pub fn verify_proof_with_witnesses(
    file: &Path,
    key: &Verifier,
    witnesses: &[CosignatureVerifier],
) -> Result<ProofReport, ProofError> {
    let bytes = std::fs::read(file).map_err(|source| ProofError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    verify_proof_bytes(&bytes, key, witnesses)
}

/// The fields of the event a report shows.
#[derive(Deserialize)]
struct EventFields {
    id: String,
    time: String,
    #[serde(rename = "type")]
    event_type: String,
}

/// Checks a proof given as bytes.
pub fn verify_proof_bytes(
    bytes: &[u8],
    key: &Verifier,
    witnesses: &[CosignatureVerifier],
) -> Result<ProofReport, ProofError> {
    // The version is looked at first, so a newer format is reported as such and not as
    // fields this build does not know.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version = serde_json::from_slice(bytes)
        .map_err(|e| ProofError::Malformed(format!("not a proof file: {e}")))?;
    if version.version != PROOF_VERSION {
        return Err(ProofError::Version(version.version));
    }
    let proof: EventProof =
        serde_json::from_slice(bytes).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if proof.leaf_index.checked_add(1) != Some(proof.seq) {
        return Err(ProofError::Malformed(format!(
            "entry {} cannot have leaf index {}",
            proof.seq, proof.leaf_index
        )));
    }
    let body = key
        .open(&proof.checkpoint)
        .map_err(ProofError::Checkpoint)?;
    let checkpoint = Checkpoint::parse(body).map_err(ProofError::Checkpoint)?;
    let path = proof
        .inclusion_proof
        .iter()
        .map(|h| {
            B64.decode(h)
                .ok()
                .and_then(|h| Hash::try_from(h).ok())
                .ok_or_else(|| ProofError::Malformed(format!("{h:?} is not a base64 SHA-256 hash")))
        })
        .collect::<Result<Vec<Hash>, _>>()?;
    // The leaf hash is computed from the bytes themselves: that is what binds this exact
    // event to the signed root.
    let leaf = merkle::leaf_hash(proof.event.as_bytes());
    merkle::verify_inclusion(
        &leaf,
        proof.leaf_index,
        checkpoint.size,
        &path,
        &checkpoint.root,
    )
    .map_err(ProofError::Inclusion)?;
    let fields: EventFields = serde_json::from_str(&proof.event).map_err(|e| {
        ProofError::Malformed(format!("the included event is not an audit event: {e}"))
    })?;
    let mut cosigned_by = Vec::new();
    for witness in witnesses {
        match witness.verify_note(&proof.checkpoint) {
            Ok(_) => cosigned_by.push(witness.name.clone()),
            Err(CheckpointError::NotSigned(_)) => {}
            Err(e) => return Err(ProofError::Cosignature(witness.name.clone(), e)),
        }
    }
    Ok(ProofReport {
        event_id: fields.id,
        time: fields.time,
        event_type: fields.event_type,
        seq: proof.seq,
        origin: checkpoint.origin,
        checkpoint_size: checkpoint.size,
        signer: key.name.clone(),
        cosigned_by,
    })
}
