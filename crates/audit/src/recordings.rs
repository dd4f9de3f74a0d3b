//! Reading recorded chunks back: for `portcullis sessions`, the admin API and verification.
//!
//! A chunk is found where the gateway put it: beside the events (the `chunks` table), or,
//! when recordings are encrypted to auditors, in a sealed segment
//! (`<data_dir>/recordings/<first_seq>-<last_seq>.age`) that a `recording.sealed` event
//! vouches for. Segments are read only with an auditor's identity
//! ([`Recordings::with_identities`]); each is decrypted once and kept. Every chunk handed
//! out has been checked against its id; one that is not there is reported with why, so a
//! reader can tell damage from a deliberate removal or a recording it cannot decrypt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use portcullis_model::SegmentRecord;
use portcullis_recording::segment::{self, Identities};
use portcullis_recording::{Chunk, ChunkError, ChunkId};
use sha2::{Digest as _, Sha256};

use crate::{AuditError, AuditReader};

/// The directory of sealed segments in a data directory.
pub fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

/// The largest segment file read into memory. The gateway seals at `segment_bytes`
/// (default 8 MiB) plus one request's recording; anything far beyond is not its segment.
pub const MAX_SEGMENT_FILE: u64 = 1 << 30;

/// Why a recorded chunk cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "recording is encrypted (chunk {0} is in sealed segment {1}); pass --identity with an auditor's age key"
    )]
    Encrypted(ChunkId, String),
    #[error("sealed segment {file}: {why}")]
    Segment { file: String, why: String },
}

/// A sealed segment's chunks, decrypted: by sequence number and id.
type Opened = HashMap<ChunkId, (u64, Chunk)>;

/// The recorded chunks of one data directory.
pub struct Recordings {
    reader: AuditReader,
    data_dir: PathBuf,
    identities: Option<Identities>,
    /// `recording.sealed` events, read on first need.
    seals: Mutex<Option<Vec<SegmentRecord>>>,
    /// Segments decrypted so far, by file name.
    opened: Mutex<HashMap<String, std::sync::Arc<Opened>>>,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Recordings {
    pub fn open(data_dir: &Path) -> Result<Recordings, AuditError> {
        Ok(Recordings {
            reader: AuditReader::open(data_dir)?,
            data_dir: data_dir.to_path_buf(),
            identities: None,
            seals: Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
        })
    }

    /// Reads sealed segments too, decrypted with these auditor identities.
    pub fn with_identities(mut self, identities: Identities) -> Recordings {
        self.identities = Some(identities);
        self
    }

    /// The chunk named `id`, checked against it. Chunks are found by their event, so the
    /// event naming it is looked up first (a scan of the log): a reader that knows the
    /// event's sequence number calls [`get_at`](Self::get_at).
    pub fn get(&self, id: &ChunkId) -> Result<Chunk, RecordingError> {
        match self.reader.seq_naming_chunk(id.as_str())? {
            Some(seq) => self.get_at(seq, id),
            None => Err(ChunkError::Missing(id.clone()).into()),
        }
    }

    /// The chunk named `id` by the event numbered `seq`, checked against it.
    pub fn get_at(&self, seq: u64, id: &ChunkId) -> Result<Chunk, RecordingError> {
        if let Some(bytes) = self.reader.chunk_bytes(seq, id.as_str())? {
            return Ok(Chunk::stored(id, bytes)?);
        }
        let covering = self.seals_covering(seq)?;
        let Some(first) = covering.first() else {
            return Err(ChunkError::Missing(id.clone()).into());
        };
        let Some(identities) = &self.identities else {
            return Err(RecordingError::Encrypted(id.clone(), first.file.clone()));
        };
        // Ranges may overlap: a request whose event was written just before a seal can have
        // its chunks in the next segment, whose range then starts at or before it.
        for seal in &covering {
            let opened = self.opened_segment(seal, identities)?;
            if let Some((at, chunk)) = opened.get(id)
                && *at == seq
            {
                return Ok(chunk.clone());
            }
        }
        Err(RecordingError::Segment {
            file: first.file.clone(),
            why: format!(
                "neither it nor any other segment covering it holds chunk {id} of event {seq}"
            ),
        })
    }

    /// The seals whose ranges hold `seq`, oldest first.
    fn seals_covering(&self, seq: u64) -> Result<Vec<SegmentRecord>, RecordingError> {
        let mut seals = self.seals.lock().unwrap_or_else(|e| e.into_inner());
        if seals.is_none() {
            *seals = Some(self.reader.segment_records()?);
        }
        Ok(seals
            .iter()
            .flatten()
            .filter(|s| s.first_seq <= seq && seq <= s.last_seq)
            .cloned()
            .collect())
    }

    fn opened_segment(
        &self,
        seal: &SegmentRecord,
        identities: &Identities,
    ) -> Result<std::sync::Arc<Opened>, RecordingError> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(segment) = opened.get(&seal.file) {
            return Ok(segment.clone());
        }
        let err = |why: String| RecordingError::Segment {
            file: seal.file.clone(),
            why,
        };
        let bytes = read_segment(&self.data_dir, seal).map_err(err)?;
        let entries = segment::open(&bytes, identities).map_err(|e| err(e.to_string()))?;
        let segment: Opened = entries
            .into_iter()
            .map(|(seq, chunk)| (chunk.id().clone(), (seq, chunk)))
            .collect();
        let segment = std::sync::Arc::new(segment);
        opened.insert(seal.file.clone(), segment.clone());
        Ok(segment)
    }
}

/// Where a seal's file is, refusing a name that would lead out of the recordings
/// directory (the name comes from the log, which an attacker may have written).
pub fn segment_path(data_dir: &Path, file: &str) -> Result<PathBuf, String> {
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\', '\0'])
        && file.ends_with(".age");
    if !plain {
        return Err(format!("{file:?} is not a segment file name"));
    }
    Ok(segments_dir(data_dir).join(file))
}

/// Reads a sealed segment's file and checks it against its seal (size and SHA-256).
pub fn read_segment(data_dir: &Path, seal: &SegmentRecord) -> Result<Vec<u8>, String> {
    let path = segment_path(data_dir, &seal.file)?;
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size != seal.bytes || size > MAX_SEGMENT_FILE {
        return Err(format!(
            "{} holds {size} bytes, but its seal says {}: the file was altered",
            path.display(),
            seal.bytes
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != seal.sha256 {
        return Err(format!(
            "{} hashes to {actual}, but its seal says {}: the file was altered",
            path.display(),
            seal.sha256
        ));
    }
    Ok(bytes)
}
