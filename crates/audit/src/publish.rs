//! Publishing checkpoints outside the gateway.
//!
//! A checkpoint kept only beside the log proves little: whoever rewrites the log rewrites its
//! checkpoints too. So every new checkpoint is also handed to sinks the gateway cannot take
//! back: a directory meant for write-once storage (one file per checkpoint, never
//! overwritten), and witnesses, which cosign a checkpoint only if it is consistent with the
//! last one they cosigned (see [`crate::witness`]), so a rollback or a fork is refused by a
//! machine the attacker does not control.
//!
//! Publication runs beside the gateway, not in front of it: requests never wait for a sink.
//! Sinks always get the newest checkpoint; if several are signed while a publication is in
//! flight, the intermediate ones are skipped, which loses nothing since each checkpoint
//! commits to everything before it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::OptionalExtension as _;

use crate::checkpoint::split_note;
use crate::merkle::{self, Hash};
use crate::{AuditLog, StoredCheckpoint, witness};
use crate::{AuditReader, store};

/// Where checkpoints are published.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// `<dir>/<size, 20 digits>.checkpoint` per checkpoint.
    pub directory: Option<PathBuf>,
    pub witnesses: Vec<WitnessSink>,
}

/// A witness to send checkpoints to.
#[derive(Debug, Clone)]
pub struct WitnessSink {
    /// Base URL; checkpoints are posted to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's public key, to check its cosignatures before storing them.
    pub key: crate::witness::CosignatureVerifier,
}

/// The file a checkpoint of `size` is published under. Zero-padded so that a directory
/// listing sorts by size.
pub fn checkpoint_file_name(size: u64) -> String {
    format!("{size:020}.checkpoint")
}

/// Writes the checkpoint into the directory sink: written whole and fsynced under a temporary
/// name first, then given its own name with a hard link (which, unlike a rename, never
/// replaces an existing file), and the directory fsynced so the name survives a crash too. A
/// reader of the directory (a verifier, the evidence task) so never sees a half-written note
/// under a `*.checkpoint` name. An existing file is never replaced: the same checkpoint again
/// is fine (a restart re-publishes the last one), a different one at the same size is a fork
/// of the log and an error.
pub fn publish_to_directory(dir: &Path, checkpoint: &StoredCheckpoint) -> Result<(), String> {
    let name = checkpoint_file_name(checkpoint.size);
    let path = dir.join(&name);
    if path.exists() {
        return same_as_published(&path, checkpoint);
    }
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o444);
    }
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(checkpoint.note.as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", temporary.display()));
    let linked = written.and_then(|()| match std::fs::hard_link(&temporary, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    });
    let _ = std::fs::remove_file(&temporary);
    if !linked? {
        // Published meanwhile by another writer (a restart racing a stop): the same note?
        return same_as_published(&path, checkpoint);
    }
    sync_dir(dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// An already published file at this size is fine if it holds this very checkpoint.
fn same_as_published(path: &Path, checkpoint: &StoredCheckpoint) -> Result<(), String> {
    let existing = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if existing == checkpoint.note {
        Ok(())
    } else {
        Err(format!(
            "{} already holds a different checkpoint of size {}: the log was forked or rewritten",
            path.display(),
            checkpoint.size
        ))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Runs the sinks until [`Publisher::finish`]. Spawned on the current tokio runtime.
pub struct Publisher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// How long to wait before retrying a sink that failed.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a witness may take to answer.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);

impl Publisher {
    pub fn spawn(log: AuditLog, data_dir: PathBuf, sinks: Sinks) -> Result<Publisher, String> {
        // Only a note that verifies with the log's own key, and states the stored size and
        // root, is published: a row edited on disk is not passed on.
        let Some((own_key, origin)) = log.signing().map(|(k, o)| (k.clone(), o.to_string())) else {
            return Err(
                "publishing checkpoints needs a log that signs them (audit.signing_key)".into(),
            );
        };
        if let Some(dir) = &sinks.directory {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!("cannot create checkpoint directory {}: {e}", dir.display())
            })?;
        }
        let http = reqwest::Client::builder()
            .timeout(WITNESS_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the witness HTTP client: {e}"))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker {
            log,
            data_dir,
            witness_sizes: vec![None; sinks.witnesses.len()],
            sinks,
            own_key,
            origin,
            http,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(Publisher { stop, task })
    }

    /// Publishes the newest checkpoint once more (the one signed at close) and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(WITNESS_TIMEOUT * 2, self.task).await;
    }
}

struct Worker {
    log: AuditLog,
    data_dir: PathBuf,
    sinks: Sinks,
    own_key: crate::checkpoint::Verifier,
    origin: String,
    http: reqwest::Client,
    /// Per witness: the size it last cosigned for this log, once known.
    witness_sizes: Vec<Option<u64>>,
}

impl Worker {
    async fn run(mut self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut checkpoints = self.log.checkpoints();
        // The newest stored checkpoint is published at start: the previous run may have
        // stopped before its sinks saw it.
        checkpoints.mark_changed();
        let mut failed = false;
        loop {
            tokio::select! {
                changed = checkpoints.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = stopped.changed() => {
                    // Last round: whatever the log signed while closing.
                    let newest = checkpoints.borrow_and_update().clone();
                    if let Some(checkpoint) = newest {
                        self.publish(&checkpoint).await;
                    }
                    break;
                }
                _ = tokio::time::sleep(RETRY_AFTER), if failed => {}
            }
            let newest = checkpoints.borrow_and_update().clone();
            if let Some(checkpoint) = newest {
                failed = !self.publish(&checkpoint).await;
            }
        }
    }

    /// Publishes to every sink; true if all succeeded.
    async fn publish(&mut self, checkpoint: &StoredCheckpoint) -> bool {
        if let Err(err) = self.check_own(checkpoint) {
            tracing::error!(size = checkpoint.size, %err, "refusing to publish an audit checkpoint");
            return false;
        }
        let mut ok = true;
        if let Some(dir) = self.sinks.directory.clone() {
            let checkpoint = checkpoint.clone();
            let result =
                tokio::task::spawn_blocking(move || publish_to_directory(&dir, &checkpoint))
                    .await
                    .unwrap_or_else(|e| Err(format!("checkpoint directory writer panicked: {e}")));
            if let Err(err) = result {
                tracing::error!(%err, "cannot publish an audit checkpoint to the directory");
                ok = false;
            }
        }
        for index in 0..self.sinks.witnesses.len() {
            if let Err(err) = self.publish_to_witness(index, checkpoint).await {
                tracing::error!(witness = %self.sinks.witnesses[index].url, %err, "audit checkpoint not cosigned");
                ok = false;
            }
        }
        ok
    }

    /// The note verifies with the log's own key and says what the row says.
    fn check_own(&self, checkpoint: &StoredCheckpoint) -> Result<(), String> {
        let body = self
            .own_key
            .open(&checkpoint.note)
            .map_err(|e| format!("the stored note does not verify with the log's key: {e}"))?;
        let signed = crate::checkpoint::Checkpoint::parse(body).map_err(|e| e.to_string())?;
        if signed.origin != self.origin
            || signed.size != checkpoint.size
            || signed.root != checkpoint.root
        {
            return Err(format!(
                "the stored note (origin {:?}, size {}) does not match its row (origin {:?}, size {}) and tree",
                signed.origin, signed.size, self.origin, checkpoint.size
            ));
        }
        Ok(())
    }

    async fn publish_to_witness(
        &mut self,
        index: usize,
        checkpoint: &StoredCheckpoint,
    ) -> Result<(), String> {
        let sink = self.sinks.witnesses[index].clone();
        let mut old = match self.witness_sizes[index] {
            Some(size) => size,
            None => {
                let data_dir = self.data_dir.clone();
                let name = sink.key.name.clone();
                let guess = blocking(move || last_cosigned(&data_dir, &name)).await?;
                // Only a guess, read from a file an attacker may have edited: beyond the
                // checkpoint it proves nothing, so ask the witness (a 409 tells its size).
                if guess > checkpoint.size { 0 } else { guess }
            }
        };
        if old == checkpoint.size && self.witness_sizes[index] == Some(old) {
            return Ok(()); // already cosigned (the re-publication at start or at close)
        }
        // At most one retry: after a 409 the witness has told us its size.
        for _ in 0..2 {
            if old > checkpoint.size {
                return Err(format!(
                    "witness {} has cosigned a log of {old} events under this origin, but this log's newest checkpoint covers only {}: the log was rolled back or replaced",
                    sink.key.name, checkpoint.size
                ));
            }
            let data_dir = self.data_dir.clone();
            let new = checkpoint.size;
            let proof = blocking(move || consistency_proof(&data_dir, old, new)).await?;
            let body = witness::request_body(old, &proof, &checkpoint.note);
            let url = format!("{}/add-checkpoint", sink.url.trim_end_matches('/'));
            let response = self
                .http
                .post(&url)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("cannot reach witness {url}: {e}"))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| format!("cannot read the answer of witness {url}: {e}"))?;
            match witness::parse_answer(status, &text) {
                Ok(witness::Answer::Cosigned(lines)) => {
                    let (body, _) = split_note(&checkpoint.note).map_err(|e| e.to_string())?;
                    sink.key.verify_lines(body, &lines).map_err(|e| {
                        format!(
                            "witness {url} answered with a cosignature that does not verify: {e}"
                        )
                    })?;
                    self.log
                        .store_cosignature(checkpoint.size, &sink.key.name, &lines)
                        .await
                        .map_err(|e| format!("cannot store the cosignature of {url}: {e}"))?;
                    self.witness_sizes[index] = Some(checkpoint.size);
                    tracing::debug!(witness = %url, size = checkpoint.size, "audit checkpoint cosigned");
                    return Ok(());
                }
                Ok(witness::Answer::Conflict { latest }) => {
                    tracing::info!(witness = %url, latest, "witness knows another size for this log; proving from it");
                    self.witness_sizes[index] = Some(latest);
                    old = latest;
                }
                Err(err) => {
                    // A 422 means the witness holds a checkpoint this log is not an extension
                    // of: a rewritten or forked log. Nothing to retry; say it plainly.
                    return Err(format!("witness {url}: {err}"));
                }
            }
        }
        Err(format!(
            "witness {} keeps answering with another size",
            sink.key.name
        ))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("audit publisher task failed: {e}")))
}

/// The largest checkpoint size this log has a cosignature of by `witness` (0: none).
fn last_cosigned(data_dir: &Path, witness: &str) -> Result<u64, String> {
    let reader = AuditReader::open(data_dir).map_err(|e| e.to_string())?;
    reader
        .connection()
        .query_row(
            "SELECT COALESCE(MAX(size), 0) FROM cosignatures WHERE witness = ?1",
            [witness],
            |r| r.get::<_, i64>(0),
        )
        .map(|size| size as u64)
        .map_err(|e| format!("cannot read {}: {e}", reader.path().display()))
}

/// The consistency proof from the tree of `old` events to the tree of `new`, from the
/// frontier stored with the checkpoint at `old` (or rebuilt, if there is none) and the leaves
/// appended since: the cost grows with what is new, not with the log.
pub(crate) fn consistency_proof(data_dir: &Path, old: u64, new: u64) -> Result<Vec<Hash>, String> {
    let reader = AuditReader::open(data_dir).map_err(|e| e.to_string())?;
    let conn = reader.connection();
    let err = |e: rusqlite::Error| format!("cannot read {}: {e}", reader.path().display());
    let stored: Option<Vec<u8>> = conn
        .query_row(
            "SELECT frontier FROM checkpoints WHERE size = ?1",
            [old as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)?;
    let frontier = match stored.and_then(|bytes| store::frontier_from_bytes(old, &bytes)) {
        Some(frontier) => frontier,
        None => store::load_frontier(conn, old).map_err(err)?,
    };
    if frontier.size() != old {
        return Err(format!(
            "the log has fewer than {old} events: it was truncated"
        ));
    }
    let leaves = store::leaf_hashes(conn, old, new).map_err(err)?;
    if leaves.len() as u64 != new - old {
        return Err(format!(
            "the log has fewer than {new} events: it was truncated"
        ));
    }
    Ok(merkle::consistency_proof_from(&frontier, &leaves))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(size: u64, note: &str) -> StoredCheckpoint {
        StoredCheckpoint {
            size,
            root: [0u8; 32],
            time: "2026-12-06T00:00:00.000Z".into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_published_checkpoint_appears_whole_once_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = checkpoint(7, "portcullis/test\n7\nroot\n\n— key sig\n");
        publish_to_directory(dir.path(), &first).unwrap();
        let path = dir.path().join(checkpoint_file_name(7));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.note);
        // Nothing but the finished file is left in the directory.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [checkpoint_file_name(7)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444);
        }
        // The same checkpoint again is fine; another one at the same size is a fork.
        publish_to_directory(dir.path(), &first).unwrap();
        let fork = checkpoint(7, "portcullis/test\n7\nother root\n\n— key sig\n");
        let e = publish_to_directory(dir.path(), &fork).unwrap_err();
        assert!(e.contains("forked or rewritten"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first.note);
    }
}
