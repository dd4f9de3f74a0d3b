//! Encrypted recordings: chunks gathered in memory and sealed to the auditors in segments.
//!
//! With `[recording] recipients` set, a request's event is recorded without its chunks, and
//! the chunks join the open segment, which lives in memory only: the host never writes a
//! recording in clear. The segment is sealed (encrypted to the recipients, written as
//! `<data_dir>/recordings/<first_seq>-<last_seq>.age` atomically and durably, then vouched
//! for by a `recording.sealed` event naming its hash, range and recipients) when it grows
//! past `segment_bytes`, every `seal_interval`, and when the gateway stops. A crash loses
//! the open segment at most, and verification names that as the unsealed tail.
//!
//! A seal that fails (a full disk) fails closed in strict mode: requests are refused, as
//! when the audit log cannot write, and the segment is kept for the next attempt (every
//! interval) until one succeeds. In best-effort mode a `recording.failed` event says which
//! recordings were lost, and requests go on.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use portcullis_audit::AuditLog;
use portcullis_audit::recordings::segments_dir;
use portcullis_model::{EventType, Outcome, SegmentRecord};
use portcullis_recording::Chunk;
use portcullis_recording::segment::{self, Recipients};
use sha2::{Digest as _, Sha256};

/// The chunks recorded since the last seal.
#[derive(Default)]
struct OpenSegment {
    entries: Vec<(u64, Chunk)>,
    bytes: u64,
}

pub(crate) struct Sealer {
    audit: AuditLog,
    recipients: Recipients,
    dir: PathBuf,
    segment_bytes: u64,
    best_effort: bool,
    open: Mutex<OpenSegment>,
    /// One seal at a time, so segments are written in order and never overlap.
    sealing: tokio::sync::Mutex<()>,
    /// Why the last seal failed, until one succeeds.
    failed: Mutex<Option<String>>,
    /// The interval task, stopped at close.
    ticker: Mutex<Option<tokio::task::AbortHandle>>,
    /// A seal of a full segment is on its way: under load, one task, not one per request.
    seal_queued: std::sync::atomic::AtomicBool,
}

impl Sealer {
    pub(crate) fn new(
        audit: AuditLog,
        recipients: Recipients,
        segment_bytes: u64,
        best_effort: bool,
    ) -> Sealer {
        let dir = segments_dir(audit.data_dir());
        Sealer {
            audit,
            recipients,
            dir,
            segment_bytes,
            best_effort,
            open: Mutex::new(OpenSegment::default()),
            sealing: tokio::sync::Mutex::new(()),
            failed: Mutex::new(None),
            ticker: Mutex::new(None),
            seal_queued: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Seals every `interval` while the sealer lives (inside a runtime; without one, only
    /// size and close seal).
    pub(crate) fn start(self: &Arc<Self>, interval: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sealer: Weak<Sealer> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let Some(sealer) = sealer.upgrade() else {
                    return;
                };
                // A failure is recorded (and, strict, refuses requests) inside `seal`.
                let _ = sealer.seal().await;
            }
        });
        *lock(&self.ticker) = Some(task.abort_handle());
    }

    /// Adds a request's chunks to the open segment; a segment that is full is sealed in
    /// the background.
    pub(crate) fn add(self: &Arc<Self>, seq: u64, chunks: Vec<Chunk>) {
        let full = {
            let mut open = lock(&self.open);
            for chunk in chunks {
                open.bytes += chunk.bytes().len() as u64;
                open.entries.push((seq, chunk));
            }
            open.bytes >= self.segment_bytes
        };
        use std::sync::atomic::Ordering;
        if full
            && !self.seal_queued.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let sealer = Arc::clone(self);
            runtime.spawn(async move {
                sealer.seal_queued.store(false, Ordering::Release);
                let _ = sealer.seal().await;
            });
        }
    }

    /// Why requests must be refused: strict, and the last seal failed.
    pub(crate) fn unavailable(&self) -> Option<String> {
        if self.best_effort {
            return None;
        }
        lock(&self.failed).clone()
    }

    /// Stops the interval and seals what is open: at a clean stop, before the audit log
    /// closes.
    pub(crate) async fn close(&self) -> Result<(), String> {
        if let Some(ticker) = lock(&self.ticker).take() {
            ticker.abort();
        }
        self.seal().await
    }

    /// Seals the open segment, if it holds anything.
    pub(crate) async fn seal(&self) -> Result<(), String> {
        let _turn = self.sealing.lock().await;
        let mut entries = std::mem::take(&mut *lock(&self.open)).entries;
        if entries.is_empty() {
            return Ok(());
        }
        // Requests finish concurrently, so their chunks may arrive out of order.
        entries.sort_by_key(|(seq, _)| *seq);
        let first_seq = entries[0].0;
        let last_seq = entries[entries.len() - 1].0;
        let file = format!("{first_seq}-{last_seq}.age");
        let chunks = entries.len() as u64;
        let written = {
            let recipients = self.recipients.clone();
            let dir = self.dir.clone();
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                let result = segment::seal(&entries, &recipients)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        write_durably(&dir, &file, &bytes).map_err(|e| e.to_string())
                    });
                (result, entries)
            })
            .await
        };
        let (written, entries) = match written {
            Ok(done) => done,
            Err(e) => (Err(format!("the sealing task failed: {e}")), Vec::new()),
        };
        let recorded = match written {
            Ok((sha256, bytes)) => {
                let mut ev = self.audit.event(EventType::RecordingSealed, Outcome::Info);
                ev.segment = Some(SegmentRecord {
                    file: file.clone(),
                    sha256,
                    bytes,
                    first_seq,
                    last_seq,
                    chunks,
                    recipients: self.recipients.fingerprints().to_vec(),
                });
                self.audit.record(ev).await.map_err(|e| {
                    format!("the segment {file} was written but its seal event was not: {e}")
                })
            }
            Err(e) => Err(format!(
                "cannot write the segment {}: {e}",
                self.dir.join(&file).display()
            )),
        };
        match recorded {
            Ok(_) => {
                *lock(&self.failed) = None;
                Ok(())
            }
            Err(why) => {
                tracing::error!("recordings of events {first_seq}..{last_seq} not sealed: {why}");
                if self.best_effort {
                    let mut ev = self
                        .audit
                        .event(EventType::RecordingFailed, Outcome::Failed);
                    ev.detail = Some(format!(
                        "the recordings of events {first_seq}..{last_seq} ({chunks} chunks) are \
                         lost: {why}"
                    ));
                    if let Err(e) = self.audit.record(ev).await {
                        tracing::error!("cannot record the loss of recordings: {e}");
                    }
                } else {
                    // Kept for the next attempt, ahead of what came since.
                    let mut open = lock(&self.open);
                    let newer = std::mem::take(&mut open.entries);
                    open.entries = entries;
                    open.entries.extend(newer);
                    open.bytes = open
                        .entries
                        .iter()
                        .map(|(_, c)| c.bytes().len() as u64)
                        .sum();
                }
                *lock(&self.failed) = Some(why.clone());
                Err(why)
            }
        }
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        if let Some(ticker) = lock(&self.ticker).take() {
            ticker.abort();
        }
    }
}

/// A mutex's data even if a panic poisoned it: every critical section here leaves it
/// consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `dir/file` so that the file is either absent or complete after a
/// crash: a temporary file, synced, renamed, and the directory synced. Returns the file's
/// SHA-256 (hex) and size.
fn write_durably(dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<(String, u64)> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{file}.tmp"));
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(file))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok((hex::encode(Sha256::digest(bytes)), bytes.len() as u64))
}
