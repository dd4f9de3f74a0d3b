//! The writer thread: the only owner of the write connection.
//!
//! One thread and one connection make sequence numbers trivially contiguous (no two writers
//! can race for `MAX(seq) + 1`) and make group commit natural: while one transaction is
//! being fsynced, callers queue up, and the next transaction takes all of them at once, so
//! strict mode pays one fsync per batch rather than one per event.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use portcullis_config::Durability;
use portcullis_recording::Chunk;
use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{Checkpoint, sign_note};
use crate::merkle::Frontier;
use crate::store;
use crate::{AuditError, CheckpointSettings, StoredCheckpoint};

/// The most events written in one transaction. Large enough that a burst is absorbed in a
/// few commits, small enough that one transaction never holds the WAL for long.
pub(crate) const MAX_BATCH: usize = 4096;

/// Batched mode: how long the writer lets events gather before a commit. Bounds what a
/// crash can lose in that mode, together with the commit itself. Each commit rewrites the
/// pages it touches whole (every open session's leaf of the session index, the tree state),
/// so longer windows write less per event: at 8 busy PostgreSQL sessions, 5 ms instead of
/// 2 ms wrote 20 % fewer bytes per statement and cost ~6 % less CPU (docs/benchmarks.md).
pub(crate) const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// While the store is failed, at most one `record()` per interval is let through to the
/// writer as a retry; all others are refused at once so callers fail fast.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// An event ready to insert: canonicalized and hashed by the caller, so that this work is
/// spread over the callers' threads instead of serializing on the writer.
pub(crate) struct Row {
    pub id: String,
    pub time: String,
    pub event_type: String,
    pub session: Option<String>,
    pub subject: Option<String>,
    pub target: Option<String>,
    pub outcome: String,
    pub body: Vec<u8>,
    pub leaf_hash: [u8; 32],
    /// Batched mode: the sequence number already returned to the caller.
    pub promised_seq: Option<u64>,
    /// The recorded messages the event names, stored in its transaction.
    pub chunks: Vec<Chunk>,
    /// When the event was handed to the writer: its commit latency is measured from here.
    pub queued: Instant,
}

pub(crate) type Reply = oneshot::Sender<Result<u64, AuditError>>;

// Nearly every message is an `Append`, so boxing the row would add an allocation per event
// to shrink only the rare control messages.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    /// `reply` is `Some` in strict mode: the caller waits for the commit.
    Append { row: Row, reply: Option<Reply> },
    /// Time for a checkpoint if there are new events (sent by the ticker thread).
    Tick,
    /// Sign a checkpoint of everything committed now, whatever the cadence (before a clean
    /// stop, so the sinks get a checkpoint covering the last events while the log can still
    /// store their cosignatures).
    CheckpointNow { reply: oneshot::Sender<()> },
    /// A witness's cosignature of a stored checkpoint, to keep beside it.
    Cosignature {
        size: u64,
        witness: String,
        line: String,
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
    /// Write what is queued, then stop.
    Shutdown {
        reply: oneshot::Sender<Result<(), AuditError>>,
    },
    #[cfg(test)]
    SetMaxPageCount {
        pages: u64,
        reply: oneshot::Sender<()>,
    },
}

/// Told of every commit, for metrics: called on the writer thread after the transaction
/// is durable, so it must be quick and must not block (a counter, a histogram).
pub trait CommitObserver: Send + Sync {
    /// One transaction committed `group` events; `waits` yields, per event, the time from
    /// its hand-over to the writer until this commit.
    fn committed(&self, group: usize, waits: &mut dyn Iterator<Item = Duration>);
}

/// Health shared between the writer and the callers.
pub(crate) struct Shared {
    /// Fast path for `record()`: a relaxed-cost check before taking the lock.
    failed: AtomicBool,
    health: Mutex<Health>,
    /// Events handed to the writer and not yet committed (nor refused): an atomic, so the
    /// callers' path gains no lock for it.
    pub(crate) queued: AtomicU64,
    /// Set once, before traffic, by whoever exports metrics; read without a lock.
    pub(crate) observer: OnceLock<Arc<dyn CommitObserver>>,
}

struct Health {
    /// Why the last write failed; `None` when healthy.
    cause: Option<String>,
    /// When a write was last attempted while failed (by the writer or a retry).
    last_attempt: Instant,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            failed: AtomicBool::new(false),
            health: Mutex::new(Health {
                cause: None,
                last_attempt: Instant::now(),
            }),
            queued: AtomicU64::new(0),
            observer: OnceLock::new(),
        }
    }

    /// Refuses a record while the store is failed, except one caller per
    /// [`RETRY_INTERVAL`], whose event becomes the writer's next attempt. Without that
    /// probe a failed strict log would never see another write and could not recover.
    /// Why the store is failed, if it is; does not use up a retry.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cause
            .clone()
    }

    pub(crate) fn admit(&self) -> Result<(), AuditError> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match &health.cause {
            None => Ok(()),
            Some(cause) if health.last_attempt.elapsed() < RETRY_INTERVAL => {
                Err(AuditError::Unavailable {
                    cause: cause.clone(),
                })
            }
            Some(_) => {
                health.last_attempt = Instant::now();
                Ok(())
            }
        }
    }

    fn set_failed(&self, cause: &str) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.cause = Some(cause.to_owned());
        health.last_attempt = Instant::now();
        self.failed.store(true, Ordering::Release);
    }

    fn set_healthy(&self) {
        if !self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.cause = None;
        self.failed.store(false, Ordering::Release);
        tracing::info!("audit store recovered; recording resumes");
    }
}

pub(crate) struct Writer {
    pub path: PathBuf,
    pub durability: Durability,
    /// `None` after a failure: the next attempt reopens, which also re-reads `next_seq`
    /// from what was actually committed.
    pub conn: Option<Connection>,
    pub next_seq: u64,
    /// The Merkle tree over everything committed, kept in step with `next_seq`.
    pub frontier: Frontier,
    pub max_page_count: Option<u64>,
    pub shared: Arc<Shared>,
    /// Batched mode: events already acknowledged to callers whose transaction failed. They
    /// are kept, in order, and written first on the next attempt, so a transient failure
    /// loses nothing and the promised sequence numbers stay true.
    pub pending: Vec<Row>,
    pub checkpoints: Option<Checkpointing>,
    /// Stops the WAL checkpointer thread when the writer ends.
    pub wal_stop: Arc<AtomicBool>,
    /// How many events are committed, announced after each commit: the streaming sinks
    /// wake on it instead of polling the store.
    pub committed: tokio::sync::watch::Sender<u64>,
}

/// The writer's checkpoint state: what was signed last, and where new ones are announced.
pub(crate) struct Checkpointing {
    pub settings: CheckpointSettings,
    /// The size of the newest stored checkpoint (0: none yet).
    pub last_size: u64,
    pub last_time: Instant,
    /// Checkpoint at the next commit whatever the interval (shutdown).
    pub force: bool,
    pub announce: tokio::sync::watch::Sender<Option<StoredCheckpoint>>,
}

struct Entry {
    row: Row,
    reply: Option<Reply>,
}

impl Writer {
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut shutdown_replies = Vec::new();
        let mut batch: Vec<Entry> = Vec::with_capacity(MAX_BATCH);
        // `blocking_recv` returns `None` once every sender is gone, or after `close()` once
        // the buffer is drained: either way everything queued has been written.
        while let Some(first) = rx.blocking_recv() {
            if self.durability == Durability::Batched {
                // Nobody waits for a batched commit: let a window's worth of events gather
                // so one transaction (one WAL append of the index pages) carries many.
                std::thread::sleep(BATCH_WINDOW);
            }
            let mut next = Some(first);
            loop {
                match next.take() {
                    Some(Msg::Append { row, reply }) => batch.push(Entry { row, reply }),
                    // No events to carry the checkpoint: a transaction of its own.
                    Some(Msg::Tick)
                        if batch.is_empty() && self.pending.is_empty() && self.checkpoint_due() =>
                    {
                        self.commit(&mut batch);
                    }
                    Some(Msg::Tick) => {}
                    Some(Msg::CheckpointNow { reply }) => {
                        // Events gathered so far go first, so the checkpoint covers them.
                        if let Some(c) = self.checkpoints.as_mut() {
                            c.force = true;
                        }
                        if !batch.is_empty() || !self.pending.is_empty() || self.checkpoint_due() {
                            self.commit(&mut batch);
                        }
                        if let Some(c) = self.checkpoints.as_mut() {
                            c.force = false;
                        }
                        let _ = reply.send(());
                    }
                    Some(Msg::Cosignature {
                        size,
                        witness,
                        line,
                        reply,
                    }) => {
                        let _ = reply.send(self.store_cosignature(size, &witness, &line));
                    }
                    Some(Msg::Shutdown { reply }) => {
                        // Refuse new events but keep draining the ones already queued.
                        rx.close();
                        shutdown_replies.push(reply);
                    }
                    #[cfg(test)]
                    Some(Msg::SetMaxPageCount { pages, reply }) => {
                        self.max_page_count = Some(pages);
                        if let Some(conn) = &self.conn {
                            let _ = store::set_max_page_count(conn, pages);
                        }
                        let _ = reply.send(());
                    }
                    None => {}
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(msg) => next = Some(msg),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() || !self.pending.is_empty() {
                self.commit(&mut batch);
            }
        }
        let result = self.finish();
        for reply in shutdown_replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err((count, cause)) => Err(AuditError::Lost {
                    count: *count,
                    cause: cause.clone(),
                }),
            });
        }
    }

    /// Last attempt at batched events still pending after a failure, a last checkpoint so
    /// that the log's final events (the gateway's stop) are covered by a signature, then
    /// close the file.
    fn finish(&mut self) -> Result<(), (usize, String)> {
        let mut result = Ok(());
        if let Some(c) = self.checkpoints.as_mut() {
            c.force = true;
        }
        if !self.pending.is_empty() || self.checkpoint_due() {
            self.commit(&mut Vec::new());
            if !self.pending.is_empty() {
                let cause = self
                    .shared
                    .health
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .cause
                    .clone()
                    .unwrap_or_default();
                tracing::error!(count = self.pending.len(), %cause, "audit events lost at shutdown");
                result = Err((self.pending.len(), cause));
            }
        }
        // Dropping the last connection (this one or the checkpointer's, which stops within
        // its interval) checkpoints the WAL into the database file.
        self.wal_stop.store(true, Ordering::Release);
        self.conn = None;
        result
    }

    /// Writes pending rows and `batch` in one transaction and answers the callers.
    fn commit(&mut self, batch: &mut Vec<Entry>) {
        let mut entries: Vec<Entry> = self
            .pending
            .drain(..)
            .map(|row| Entry { row, reply: None })
            .collect();
        entries.append(batch);
        let handed = entries.len() as u64;
        match self.write(&entries) {
            Ok(outcomes) => {
                self.shared.set_healthy();
                if let Some(observer) = self.shared.observer.get() {
                    let now = Instant::now();
                    let mut waits = entries
                        .iter()
                        .map(|e| now.saturating_duration_since(e.row.queued));
                    observer.committed(entries.len(), &mut waits);
                }
                for (entry, outcome) in entries.into_iter().zip(outcomes) {
                    let result = match outcome {
                        Some(seq) => {
                            if entry.row.promised_seq.is_some_and(|p| p != seq) {
                                tracing::error!(
                                    seq,
                                    promised = entry.row.promised_seq,
                                    "audit event stored under another sequence number than the one returned"
                                );
                            }
                            Ok(seq)
                        }
                        None => {
                            tracing::error!(id = %entry.row.id, "audit event id recorded twice; second copy refused");
                            Err(AuditError::DuplicateId { id: entry.row.id })
                        }
                    };
                    if let Some(reply) = entry.reply {
                        let _ = reply.send(result);
                    }
                }
            }
            Err(cause) => {
                tracing::error!(%cause, events = entries.len(), "audit write failed; refusing new events until a retry succeeds");
                self.shared.set_failed(&cause);
                // Reopen on the next attempt: the connection may be in a bad state after an
                // I/O error, and reopening re-reads the committed high-water mark.
                self.conn = None;
                for entry in entries {
                    match entry.reply {
                        // Strict: the caller fails closed; the event is not kept, since the
                        // request it describes was refused.
                        Some(reply) => {
                            let _ = reply.send(Err(AuditError::Write {
                                cause: cause.clone(),
                            }));
                        }
                        // Batched: already acknowledged, so keep it for the next attempt.
                        None => self.pending.push(entry.row),
                    }
                }
            }
        }
        // What is pending still waits; everything else was committed or refused.
        let left = handed - self.pending.len() as u64;
        self.shared.queued.fetch_sub(left, Ordering::Relaxed);
    }

    /// One transaction. Returns, per entry, its sequence number, or `None` if its id was
    /// already stored. Any other error fails the whole transaction.
    fn write(&mut self, entries: &[Entry]) -> Result<Vec<Option<u64>>, String> {
        self.ensure_open().map_err(|err| err.to_string())?;
        let cause =
            |err: rusqlite::Error| format!("cannot write audit log {}: {err}", self.path.display());
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connection opened above");
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(cause)?;
        // Another process may have appended since our last commit (`portcullis tools accept`
        // records its event while the gateway runs): take the high-water mark under the
        // write lock this IMMEDIATE transaction holds, not the one cached from our last write,
        // or every append would fail the contiguity check until the connection is reopened.
        let committed: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(cause)?;
        let committed = u64::try_from(committed).unwrap_or(0) + 1;
        if committed != self.next_seq {
            tracing::debug!(
                cached = self.next_seq,
                committed,
                "another writer appended to the audit log; continuing after its events"
            );
        }
        // The log only ever grows under this writer: fewer events than it has appended means
        // someone removed some, and the writer stops rather than sign over the gap. More means
        // another writer (the CLI) appended: extend the tree with their leaves, never re-read
        // it from the stored state, which whoever removed events could have rewritten too.
        if committed - 1 < self.frontier.size() {
            return Err(format!(
                "audit log {} now holds {} events but this gateway appended {}: events were removed; refusing to write",
                self.path.display(),
                committed - 1,
                self.frontier.size()
            ));
        }
        let mut tree = if self.frontier.size() + 1 == committed {
            self.frontier.clone()
        } else {
            let tree = store::extend_frontier(&tx, &self.frontier, committed - 1).map_err(cause)?;
            if tree.size() != committed - 1 {
                return Err(format!(
                    "audit log {} has a gap in its events before {committed}",
                    self.path.display()
                ));
            }
            tree
        };
        let mut seq = committed;
        let mut outcomes = Vec::with_capacity(entries.len());
        // Checkpoints written in this transaction; announced only once it commits.
        let mut made_checkpoints = Vec::new();
        let mut last_size = self.checkpoints.as_ref().map_or(0, |c| c.last_size);
        {
            let mut insert = tx.prepare_cached(store::INSERT_EVENT).map_err(cause)?;
            let mut insert_chunk = tx.prepare_cached(store::INSERT_CHUNK).map_err(cause)?;
            for Entry { row, .. } in entries {
                let inserted = insert.execute(params![
                    seq as i64,
                    row.id,
                    row.time,
                    row.event_type,
                    row.session,
                    row.subject,
                    row.target,
                    row.outcome,
                    row.body,
                    row.leaf_hash,
                ]);
                match inserted {
                    Ok(_) => {
                        for chunk in &row.chunks {
                            insert_chunk
                                .execute(params![chunk.id().as_str(), seq as i64, chunk.bytes()])
                                .map_err(cause)?;
                        }
                        tree.append(row.leaf_hash);
                        outcomes.push(Some(seq));
                        seq += 1;
                        if self.checkpoints.as_ref().is_some_and(|c| {
                            tree.size() >= last_size.saturating_add(c.settings.every)
                        }) {
                            // Exactly every N events, even inside a large batch.
                            let made = make_checkpoint(&tx, &tree, self.checkpoints.as_ref())
                                .map_err(cause)?;
                            last_size = tree.size();
                            made_checkpoints.extend(made);
                        }
                    }
                    // A duplicate id is the caller's mistake, not the store's: SQLite
                    // aborts only that statement, so the rest of the batch goes on.
                    Err(rusqlite::Error::SqliteFailure(err, _))
                        if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                    {
                        outcomes.push(None);
                    }
                    Err(err) => return Err(cause(err)),
                }
            }
        }
        if tree.size() > last_size
            && self
                .checkpoints
                .as_ref()
                .is_some_and(|c| c.force || c.last_time.elapsed() >= c.settings.interval)
        {
            made_checkpoints
                .extend(make_checkpoint(&tx, &tree, self.checkpoints.as_ref()).map_err(cause)?);
        }
        tx.prepare_cached(store::SAVE_TREE)
            .and_then(|mut save| {
                save.execute(params![tree.size() as i64, store::frontier_bytes(&tree)])
            })
            .map_err(cause)?;
        // Dropping `tx` on an early return above rolls back.
        tx.commit().map_err(cause)?;
        self.next_seq = seq;
        self.frontier = tree;
        self.committed.send_replace(seq - 1);
        if let (Some(checkpoints), Some(newest)) =
            (self.checkpoints.as_mut(), made_checkpoints.pop())
        {
            checkpoints.last_size = newest.size;
            checkpoints.last_time = Instant::now();
            // Sinks only ever need the newest: any later checkpoint supersedes an earlier one.
            checkpoints.announce.send_replace(Some(newest));
        }
        Ok(outcomes)
    }

    /// Opens the connection if a failure closed it; reopening re-reads the committed
    /// high-water mark.
    fn ensure_open(&mut self) -> Result<(), AuditError> {
        if self.conn.is_none() {
            let (conn, next_seq) =
                store::open_writer(&self.path, self.durability, self.max_page_count)?;
            self.conn = Some(conn);
            self.next_seq = next_seq;
        }
        Ok(())
    }

    /// Whether the ticker should force a checkpoint: events arrived since the last one and
    /// the interval has passed.
    fn checkpoint_due(&self) -> bool {
        self.checkpoints.as_ref().is_some_and(|c| {
            self.frontier.size() > c.last_size
                && (c.force || c.last_time.elapsed() >= c.settings.interval)
        })
    }

    fn store_cosignature(
        &mut self,
        size: u64,
        witness: &str,
        line: &str,
    ) -> Result<(), AuditError> {
        self.ensure_open()?;
        let cause = |err: rusqlite::Error| AuditError::Write {
            cause: format!("cannot write audit log {}: {err}", self.path.display()),
        };
        let Some(conn) = self.conn.as_ref() else {
            unreachable!("connection opened above");
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        conn.prepare_cached(store::INSERT_COSIGNATURE)
            .and_then(|mut stmt| stmt.execute(params![size as i64, witness, now, line]))
            .map_err(cause)?;
        Ok(())
    }
}

/// Signs the tree head and inserts the checkpoint row in the open transaction. Signing
/// failures (a KMS that is down, one day) do not fail the events: the checkpoint is skipped,
/// loudly, and the next one covers these events too.
fn make_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    tree: &Frontier,
    settings: Option<&Checkpointing>,
) -> rusqlite::Result<Option<StoredCheckpoint>> {
    let Some(c) = settings else {
        return Ok(None);
    };
    let checkpoint = Checkpoint {
        origin: c.settings.origin.clone(),
        size: tree.size(),
        root: tree.root(),
    };
    let note = match sign_note(&checkpoint.body(), &[c.settings.signer.as_ref()]) {
        Ok(note) => note,
        Err(err) => {
            tracing::error!(%err, size = tree.size(), "cannot sign an audit checkpoint");
            return Ok(None);
        }
    };
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tx.prepare_cached(store::INSERT_CHECKPOINT)?
        .execute(params![
            tree.size() as i64,
            time,
            note,
            store::frontier_bytes(tree)
        ])?;
    Ok(Some(StoredCheckpoint {
        size: checkpoint.size,
        root: checkpoint.root,
        time,
        note,
    }))
}
