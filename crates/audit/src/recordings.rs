//! Reading recorded chunks back: for `portcullis sessions`, the admin API and verification.
//!
//! A chunk is found where the gateway put it: beside the events (the `chunks` table). Every
//! chunk handed out has been checked against its id; one that is not there is reported
//! with why, so a reader can tell damage from a deliberate removal.

use std::path::Path;

use portcullis_recording::{Chunk, ChunkError, ChunkId};

use crate::{AuditError, AuditReader};

/// Why a recorded chunk cannot be handed out.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// The recorded chunks of one data directory.
pub struct Recordings {
    reader: AuditReader,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings").finish_non_exhaustive()
    }
}

impl Recordings {
    pub fn open(data_dir: &Path) -> Result<Recordings, AuditError> {
        Ok(Recordings {
            reader: AuditReader::open(data_dir)?,
        })
    }

    /// The chunk named `id`, checked against it.
    pub fn get(&self, id: &ChunkId) -> Result<Chunk, RecordingError> {
        match self.reader.chunk_bytes(id.as_str())? {
            Some(bytes) => Ok(Chunk::stored(id, bytes)?),
            None => Err(ChunkError::Missing(id.clone()).into()),
        }
    }
}
