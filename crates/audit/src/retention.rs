//! Retention of recordings (`portcullis recordings prune`): what to remove, and removing it.
//!
//! Removal is evidence, not a gap: the caller first appends `recording.removed` events that
//! name every chunk and segment to go ([`plan`] lists them), and only then deletes them
//! ([`delete_chunks`], and the segment files). A verifier that finds a chunk missing can then
//! tell a deliberate removal, signed into the log, from damage.

use std::path::Path;
use std::time::Duration;

use portcullis_model::AuditEvent;
use rusqlite::{Connection, OpenFlags, params};

use crate::{AuditError, AuditReader, store};

/// How many chunk ids one `recording.removed` event names at most: a removal of millions
/// becomes many events of a readable size.
pub const IDS_PER_EVENT: usize = 10_000;

/// What a retention run removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalPlan {
    /// The recorded chunks of requests before the cut-off, in log order.
    pub chunks: Vec<String>,
    /// The event of each chunk in `chunks` (chunks are found by their event).
    pub chunk_seqs: Vec<u64>,
    /// The sealed segment files (names in [`segments_dir`](crate::recordings::segments_dir)) whose last request is before
    /// the cut-off and which are still there.
    pub segments: Vec<String>,
}

impl RemovalPlan {
    fn add_chunks(&mut self, batch: Vec<(String, u64)>) {
        for (id, seq) in batch {
            self.chunks.push(id);
            self.chunk_seqs.push(seq);
        }
    }
}

/// The chunks and segments of requests before `before` (RFC 3339, UTC, milliseconds, as
/// events write times).
pub fn plan(data_dir: &Path, before: &str) -> Result<RemovalPlan, AuditError> {
    let reader = AuditReader::open(data_dir)?;
    reader.begin_snapshot()?;
    let result = plan_in(&reader, data_dir, before);
    reader.end_snapshot()?;
    result
}

fn plan_in(reader: &AuditReader, data_dir: &Path, before: &str) -> Result<RemovalPlan, AuditError> {
    let mut plan = RemovalPlan::default();
    // Chunks are written with their event, so none of a request after the cut-off can be in
    // the log before the first event stamped after it (plus a margin for stragglers).
    let below = reader
        .first_seq_at(before)?
        .saturating_add(IDS_PER_EVENT as u64);
    let mut after = 0;
    loop {
        let mut batch = reader.chunks_before(before, below, after, IDS_PER_EVENT)?;
        let Some(&(_, last)) = batch.last() else {
            break;
        };
        if batch.len() < IDS_PER_EVENT {
            plan.add_chunks(batch);
            break;
        }
        // A full batch may end inside one event's chunks: that event is left to the next,
        // unless it is the whole batch (a table no gateway wrote: an event names two).
        let whole = std::mem::take(&mut batch);
        batch = whole
            .iter()
            .filter(|(_, seq)| *seq < last)
            .cloned()
            .collect();
        if batch.is_empty() {
            batch = whole;
            after = last;
        } else {
            after = last - 1;
        }
        plan.add_chunks(batch);
    }
    let count = reader.count()?;
    let mut from = 1;
    loop {
        let batch = reader.of_type_in("recording.sealed", (from, count), 1000)?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        from = last + 1;
        for (seq, body) in batch {
            let event: AuditEvent =
                serde_json::from_str(&body).map_err(|_| AuditError::Corrupt {
                    path: reader.path().to_path_buf(),
                    seq,
                })?;
            let Some(segment) = event.segment else {
                continue;
            };
            let ends = reader.time_at(segment.last_seq)?;
            // Only a name the gateway could have written: never a path out of the directory.
            let path = crate::recordings::segment_path(data_dir, &segment.file);
            if ends.is_some_and(|t| t.as_str() < before)
                && path.is_ok_and(|p| p.is_file())
                && !plan.segments.contains(&segment.file)
            {
                plan.segments.push(segment.file);
            }
        }
    }
    Ok(plan)
}

/// Deletes the named chunks from the log's `chunks` table; returns how many were there.
/// Call only after the `recording.removed` events naming them are recorded.
pub fn delete_chunks(data_dir: &Path, plan: &RemovalPlan) -> Result<usize, AuditError> {
    let path = store::db_path(data_dir);
    let open_err = |source| AuditError::Open {
        path: path.clone(),
        source,
    };
    let mut conn =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(open_err)?;
    let write_err = |source: rusqlite::Error| AuditError::Write {
        cause: format!("deleting recorded chunks from {}: {source}", path.display()),
    };
    let mut deleted = 0;
    let named: Vec<(&String, &u64)> = plan.chunks.iter().zip(&plan.chunk_seqs).collect();
    for batch in named.chunks(IDS_PER_EVENT) {
        let tx = conn.transaction().map_err(write_err)?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM chunks WHERE seq = ?1 AND id = ?2")
                .map_err(write_err)?;
            for (id, seq) in batch {
                deleted += stmt
                    .execute(params![i64::try_from(**seq).unwrap_or(i64::MAX), id])
                    .map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)?;
    }
    Ok(deleted)
}
