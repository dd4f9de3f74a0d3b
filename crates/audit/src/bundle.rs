//! Evidence bundles: one session, self-contained, checkable offline by anyone holding the
//! gateway's public key (`portcullis sessions export` and `sessions verify-bundle`).
//!
//! A bundle holds the session's events exactly as hashed (with those of the approvals its
//! requests went through, and the retention events that removed any of its recordings), the
//! recorded chunks they name exactly as stored, one signed checkpoint (the newest, which
//! covers them all) and an RFC 6962 inclusion proof from each event to that checkpoint's
//! root. Checking it needs no database: the signature binds the root, each proof binds an
//! event's bytes to the root, each event names its chunks by hash, and each chunk's bytes
//! hash to its name. What the bundle cannot show is that it holds every event of the
//! session; it shows that each one it holds is the log's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_model::{AuditEvent, EventType};
use portcullis_recording::{Chunk, ChunkId};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, Verifier};
use crate::merkle::{self, Hash};
use crate::sessions;
use crate::{AuditError, AuditReader};

/// The format tag this build writes and reads.
pub const BUNDLE_FORMAT: &str = "portcullis-session-bundle/1";

/// The content of a bundle file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// The session id (or the event id of a request outside any session).
    pub session: String,
    /// The signed checkpoint note every proof leads to.
    pub checkpoint: String,
    /// In log order.
    pub events: Vec<BundleEvent>,
    pub chunks: Vec<BundleChunk>,
}

/// One event: its canonical bytes exactly as hashed, and its path to the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEvent {
    pub seq: u64,
    /// Kept as a string: re-encoding an object could change a byte.
    pub event: String,
    /// Base64 SHA-256 hashes, leaf to root.
    pub inclusion_proof: Vec<String>,
}

/// One recorded chunk, its stored bytes in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleChunk {
    pub id: String,
    pub bytes: String,
}

impl Bundle {
    /// The bundle as pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a bundle serializes");
        text.push('\n');
        text
    }
}

/// Why a bundle could not be made, or does not check.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("no session {0} in the audit log")]
    NotFound(String),
    #[error(
        "the session's last event (entry {seq}) is not yet covered by a signed checkpoint{newest}; try again after the next one"
    )]
    NotCovered { seq: u64, newest: String },
    #[error("the audit log is inconsistent ({0}); run `portcullis audit verify`")]
    Inconsistent(String),
    #[error("not a session bundle: {0}")]
    Malformed(String),
    #[error("bundle format {0:?} is not supported (this portcullis reads {BUNDLE_FORMAT:?})")]
    Format(String),
    #[error("the checkpoint in the bundle does not verify: {0}")]
    Checkpoint(crate::checkpoint::CheckpointError),
    #[error("event {name} does not match the signed checkpoint: {why}")]
    Event { name: String, why: String },
    #[error("chunk {id} {why}")]
    Chunk { id: String, why: String },
}

/// What the export saw that a reader should know: recorded chunks that are not as the log
/// names them (the bundle carries what is stored; verifying it will name them).
#[derive(Debug, Default)]
pub struct ExportNotes {
    pub damaged: Vec<String>,
}

/// Builds the bundle of session `id` from the log in `data_dir`.
pub fn export(data_dir: &Path, id: &str) -> Result<(Bundle, ExportNotes), BundleError> {
    let reader = AuditReader::open(data_dir)?;
    // One snapshot: a gateway appending meanwhile cannot mix two states of the log.
    reader.begin_snapshot()?;
    let result = export_in(&reader, id);
    reader.end_snapshot()?;
    result
}

fn export_in(reader: &AuditReader, id: &str) -> Result<(Bundle, ExportNotes), BundleError> {
    let own = sessions::own_events(reader, id)?.ok_or_else(|| BundleError::NotFound(id.into()))?;
    let mut seqs: BTreeSet<u64> = own.iter().map(|(seq, _)| *seq).collect();
    let mut named = Vec::new();
    for (seq, event) in &own {
        if let Some(approval) = &event.approval {
            for (approval_seq, _) in
                sessions::approval_events_of(reader, approval, *seq, &event.time)?
            {
                seqs.insert(approval_seq);
            }
        }
        if let Some(refs) = &event.recorded {
            named.extend(
                [&refs.request, &refs.answer]
                    .into_iter()
                    .flatten()
                    .map(|chunk| (*seq, chunk.clone())),
            );
        }
    }
    let removals = sessions::removals(reader, &own)?;
    let mut chunks = Vec::new();
    let mut notes = ExportNotes::default();
    for (seq, chunk) in &named {
        match reader.chunk_bytes(*seq, chunk)? {
            Some(bytes) => {
                let intact = ChunkId::parse(chunk)
                    .ok()
                    .is_some_and(|id| Chunk::stored(&id, bytes.clone()).is_ok());
                if !intact {
                    notes.damaged.push(format!("chunk {chunk} was altered"));
                }
                chunks.push(BundleChunk {
                    id: chunk.clone(),
                    bytes: B64.encode(&bytes),
                });
            }
            None => match removals.get(chunk) {
                Some(removal) => {
                    seqs.insert(*removal);
                }
                None => notes.damaged.push(format!("chunk {chunk} is missing")),
            },
        }
    }
    let last = *seqs.last().expect("a session has events");
    let checkpoints = reader.raw_checkpoints()?;
    let newest = checkpoints.last();
    let Some(stored) = newest.filter(|cp| cp.size >= last as i64) else {
        return Err(BundleError::NotCovered {
            seq: last,
            newest: match newest {
                Some(cp) => format!(" (the newest covers the first {} events)", cp.size),
                None => " (the log has no checkpoint yet)".to_string(),
            },
        });
    };
    let size = stored.size as u64;
    let leaves = reader.leaf_hashes(size)?.map_err(|bad| {
        BundleError::Inconsistent(format!("event {bad} is missing or has no valid leaf hash"))
    })?;
    let checkpoint = crate::checkpoint::split_note(&stored.note)
        .and_then(|(body, _)| Checkpoint::parse(body))
        .map_err(|e| {
            BundleError::Inconsistent(format!("the checkpoint of size {size} is unreadable: {e}"))
        })?;
    if checkpoint.size != size || checkpoint.root != merkle::root(&leaves) {
        return Err(BundleError::Inconsistent(format!(
            "the events do not produce the checkpoint of size {size}"
        )));
    }
    let indices: Vec<usize> = seqs.iter().map(|seq| (*seq - 1) as usize).collect();
    let proofs = merkle::inclusion_proofs(&indices, &leaves);
    let mut events = Vec::with_capacity(seqs.len());
    for (seq, proof) in seqs.iter().zip(proofs) {
        let body = reader
            .body_at(*seq)?
            .ok_or_else(|| BundleError::Inconsistent(format!("event {seq} has no body")))?;
        if merkle::leaf_hash(&body) != leaves[(*seq - 1) as usize] {
            return Err(BundleError::Inconsistent(format!(
                "the body of event {seq} does not match its leaf hash"
            )));
        }
        let event = String::from_utf8(body)
            .map_err(|_| BundleError::Inconsistent(format!("event {seq} is not UTF-8")))?;
        events.push(BundleEvent {
            seq: *seq,
            event,
            inclusion_proof: proof.iter().map(|h| B64.encode(h)).collect(),
        });
    }
    Ok((
        Bundle {
            format: BUNDLE_FORMAT.to_string(),
            session: id.to_string(),
            checkpoint: stored.note.clone(),
            events,
            chunks,
        },
        notes,
    ))
}

/// What a bundle that checks shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReport {
    pub session: String,
    pub origin: String,
    pub checkpoint_size: u64,
    pub signer: String,
    pub events: usize,
    pub chunks: usize,
    /// Chunks the session's events name that retention removed, as a included event says.
    pub removed: usize,
}

impl std::fmt::Display for BundleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "session {}: {} event(s) in the log of {} (checkpoint of size {} signed by {}), {} recorded chunk(s) match their events",
            self.session, self.events, self.origin, self.checkpoint_size, self.signer, self.chunks
        )?;
        if self.removed > 0 {
            write!(f, ", {} removed by retention as logged", self.removed)?;
        }
        Ok(())
    }
}

/// Checks a bundle given as bytes against the gateway's key, offline.
pub fn verify(bytes: &[u8], key: &Verifier) -> Result<BundleReport, BundleError> {
    // The format is looked at first, so a newer one is reported as such.
    #[derive(Deserialize)]
    struct Tag {
        format: String,
    }
    let tag: Tag = serde_json::from_slice(bytes)
        .map_err(|e| BundleError::Malformed(format!("not a bundle file: {e}")))?;
    if tag.format != BUNDLE_FORMAT {
        return Err(BundleError::Format(tag.format));
    }
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let body = key
        .open(&bundle.checkpoint)
        .map_err(BundleError::Checkpoint)?;
    let checkpoint = Checkpoint::parse(body).map_err(BundleError::Checkpoint)?;
    let mut events: Vec<AuditEvent> = Vec::with_capacity(bundle.events.len());
    let mut last_seq = 0;
    for entry in &bundle.events {
        // The id is read for the message only: nothing in an event is believed before its
        // bytes are bound to the root.
        let name = event_name(entry);
        let bad = |why: String| BundleError::Event {
            name: name.clone(),
            why,
        };
        if entry.seq <= last_seq {
            return Err(bad("the bundle's events are not in log order".into()));
        }
        last_seq = entry.seq;
        let path = entry
            .inclusion_proof
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|h| Hash::try_from(h).ok())
                    .ok_or_else(|| bad(format!("{h:?} in its proof is not a base64 SHA-256 hash")))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        let leaf = merkle::leaf_hash(entry.event.as_bytes());
        merkle::verify_inclusion(
            &leaf,
            entry.seq - 1,
            checkpoint.size,
            &path,
            &checkpoint.root,
        )
        .map_err(|e| bad(e.to_string()))?;
        let event: AuditEvent = serde_json::from_str(&entry.event)
            .map_err(|e| bad(format!("it is not an audit event: {e}")))?;
        events.push(event);
    }
    let own = events
        .iter()
        .filter(|e| e.session.as_deref() == Some(&bundle.session) || e.id == bundle.session)
        .count();
    if own == 0 {
        return Err(BundleError::Malformed(format!(
            "no event of session {} in the bundle",
            bundle.session
        )));
    }
    // Every chunk must be the one its id names, and named by an event of the bundle.
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    let mut removed: BTreeSet<&str> = BTreeSet::new();
    for event in &events {
        if let Some(refs) = &event.recorded {
            for chunk in [&refs.request, &refs.answer].into_iter().flatten() {
                named.insert(chunk.clone(), event.id.clone());
            }
        }
        if event.event_type == EventType::RecordingRemoved
            && let Some(record) = &event.removed
        {
            removed.extend(record.chunks.iter().map(String::as_str));
        }
    }
    let mut present = BTreeSet::new();
    for chunk in &bundle.chunks {
        let bad = |why: &str| BundleError::Chunk {
            id: chunk.id.clone(),
            why: why.to_string(),
        };
        let id = ChunkId::parse(&chunk.id)
            .map_err(|_| bad("is not a chunk id (64 lower-case hex digits)"))?;
        let bytes = B64
            .decode(&chunk.bytes)
            .map_err(|_| bad("has bytes that are not base64"))?;
        Chunk::stored(&id, bytes)
            .map_err(|_| bad("was altered: its bytes do not hash to its id"))?;
        if !named.contains_key(&chunk.id) {
            return Err(bad("is named by no event in the bundle"));
        }
        present.insert(chunk.id.as_str());
    }
    let mut gone = 0;
    for (chunk, event) in &named {
        if present.contains(chunk.as_str()) {
            continue;
        }
        if removed.contains(chunk.as_str()) {
            gone += 1;
            continue;
        }
        return Err(BundleError::Chunk {
            id: chunk.clone(),
            why: format!(
                "named by event {event} is missing from the bundle, and no retention event in it removed it"
            ),
        });
    }
    Ok(BundleReport {
        session: bundle.session,
        origin: checkpoint.origin,
        checkpoint_size: checkpoint.size,
        signer: key.name.clone(),
        events: events.len(),
        chunks: present.len(),
        removed: gone,
    })
}

/// An event's name for a message: its id and entry number, or the entry number alone.
fn event_name(entry: &BundleEvent) -> String {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    match serde_json::from_str::<Id>(&entry.event) {
        Ok(Id { id }) => format!("{id} (entry {})", entry.seq),
        Err(_) => format!("entry {}", entry.seq),
    }
}
