//! The append-only audit log of Portcullis.
//!
//! Every event is encoded canonically (RFC 8785, see [`canonical_bytes`]) and appended to a
//! SQLite database, `<data_dir>/audit.db`, together with its RFC 6962 leaf hash
//! `SHA-256(0x00 || bytes)`, so that a Merkle tree with signed checkpoints can be built
//! over the log without rewriting it.
//!
//! Writes go through [`AuditLog`]: one dedicated thread owns the only write connection and
//! commits events in groups. In strict durability (the default) [`AuditLog::record`]
//! returns only once the event's transaction is committed and fsynced, so a request's event
//! is on disk before its response leaves the gateway; when the store cannot be written,
//! `record` returns an error so the gateway can fail closed. Reads go through
//! [`AuditReader`], which works alongside a running gateway thanks to WAL mode.
#![forbid(unsafe_code)]

pub mod bundle;
mod canonical;
pub mod checkpoint;
pub mod digest;
pub mod keys;
pub mod merkle;
pub mod proof;
pub mod publish;
mod reader;
pub mod recordings;
pub mod retention;
pub mod sessions;
mod space;
mod store;
pub mod verify;
pub mod witness;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use portcullis_config::Durability;
use portcullis_model::{AuditEvent, EventType, Outcome, PayloadDigest};
use portcullis_recording::Chunk;
use tokio::sync::{mpsc, oneshot};

pub use canonical::canonical_bytes;
pub use reader::{AuditReader, EventQuery, Leaf, SinkPage};
pub use writer::CommitObserver;

use writer::{Msg, Row, Shared, Writer};

/// How many events may wait for the writer. When it is full, `record` waits: back-pressure
/// rather than unbounded memory when the disk is slower than the traffic.
const QUEUE_CAPACITY: usize = 65_536;

/// Why the audit log could not be opened, written or read.
///
/// Messages name the file and the SQLite cause, never the contents of an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create audit data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("no audit log at {path}")]
    NotFound { path: PathBuf },
    #[error("audit log {path} could not be put in WAL mode (journal mode is {mode})")]
    NoWal { path: PathBuf, mode: String },
    #[error(
        "audit log {path} has schema version {found}, newer than version {supported} which this portcullis understands"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("audit log {path} has an unreadable schema version {found:?}")]
    BadSchemaVersion { path: PathBuf, found: String },
    #[error("the audit digest key: {0}")]
    DigestKey(String),
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
    /// The transaction holding this event failed (strict mode).
    #[error("{cause}")]
    Write { cause: String },
    /// An earlier write failed and no retry has succeeded yet.
    #[error("audit store unavailable: {cause}")]
    Unavailable { cause: String },
    /// Batched events acknowledged to callers that could not be written before shutdown.
    #[error("{count} queued audit events were not written: {cause}")]
    Lost { count: usize, cause: String },
    #[error("audit event id {id} is already recorded")]
    DuplicateId { id: String },
    /// The log on disk contradicts what this gateway signed.
    #[error(
        "audit log {path} contradicts its own signed checkpoints: {reason}; refusing to extend it (check it with `portcullis audit verify`)"
    )]
    Inconsistent { path: PathBuf, reason: String },
    #[error("audit log is closed")]
    Closed,
    #[error("audit writer thread stopped unexpectedly")]
    WriterGone,
    #[error("cannot read audit log {path}: {source}")]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("audit log {path}: event {seq} is not valid UTF-8")]
    Corrupt { path: PathBuf, seq: u64 },
}

/// How the log signs checkpoints.
#[derive(Clone)]
pub struct CheckpointSettings {
    /// The origin line: names this gateway instance's log.
    pub origin: String,
    pub signer: Arc<dyn checkpoint::Signer>,
    /// A checkpoint at least this often while events arrive...
    pub interval: Duration,
    /// ... and after at most this many events.
    pub every: u64,
}

impl fmt::Debug for CheckpointSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSettings")
            .field("origin", &self.origin)
            .field("key", &self.signer.name())
            .field("interval", &self.interval)
            .field("every", &self.every)
            .finish()
    }
}

/// A signed checkpoint as stored beside the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: merkle::Hash,
    /// When it was signed (RFC 3339, UTC).
    pub time: String,
    /// The C2SP signed note, exactly as published.
    pub note: String,
}

/// The write side of the audit log. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    gateway_id: String,
    durability: Durability,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    /// Batched mode: the sequence number the next queued event will get. Taken and the
    /// event queued under one lock, so queue order and numbering agree.
    next_queued_seq: Mutex<u64>,
    closed: AtomicBool,
    /// The newest checkpoint, for the sinks; `None` until one exists.
    checkpoints: tokio::sync::watch::Receiver<Option<StoredCheckpoint>>,
    /// How many events are committed (the tree size), updated after each commit.
    committed: tokio::sync::watch::Receiver<u64>,
    /// A signing log: the verifier of its own key, and its origin.
    signing: Option<(checkpoint::Verifier, String)>,
    /// Free space kept so that what is forwarded can be recorded.
    space: space::SpaceReserve,
    /// The key of the payload digests in events.
    digest_key: digest::DigestKey,
}

impl AuditLog {
    /// The data directory the log is in (recordings are kept beside it).
    pub fn data_dir(&self) -> &Path {
        self.inner.path.parent().unwrap_or(Path::new("."))
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("gateway_id", &self.inner.gateway_id)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens or creates `<data_dir>/audit.db` (creating `data_dir`, mode 0700 on unix), runs
    /// migrations and starts the writer thread.
    pub fn open(
        data_dir: &Path,
        gateway_id: &str,
        durability: Durability,
    ) -> Result<AuditLog, AuditError> {
        Self::open_inner(data_dir, gateway_id, durability, None, None)
    }

    /// Like [`open`](Self::open), and signs checkpoints of the tree as it grows: after every
    /// `every` events, and once per `interval` that saw new events.
    pub fn open_signed(
        data_dir: &Path,
        gateway_id: &str,
        durability: Durability,
        checkpoints: CheckpointSettings,
    ) -> Result<AuditLog, AuditError> {
        Self::open_inner(data_dir, gateway_id, durability, Some(checkpoints), None)
    }

    fn open_inner(
        data_dir: &Path,
        gateway_id: &str,
        durability: Durability,
        checkpoints: Option<CheckpointSettings>,
        max_page_count: Option<u64>,
    ) -> Result<AuditLog, AuditError> {
        store::create_data_dir(data_dir)?;
        let digest_key = match &checkpoints {
            Some(settings) => digest::DigestKey::derived_from(settings.signer.as_ref()),
            None => digest::DigestKey::load_or_create(data_dir),
        }
        .map_err(|e| AuditError::DigestKey(e.to_string()))?;
        let path = store::db_path(data_dir);
        // Opened here rather than in the thread so that a bad path or a newer schema is
        // reported by `open`, at startup, instead of by the first request.
        let (conn, next_seq) = store::open_writer(&path, durability, max_page_count)?;
        let open_err = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        let latest = store::latest_checkpoint_with_frontier(&conn).map_err(open_err)?;
        let frontier = match (&checkpoints, &latest) {
            // Signing: extend the tree from what this key last signed, never from a stored
            // state that may have been rewritten, so the gateway cannot be made to sign a
            // fork of its own history.
            (Some(settings), Some((checkpoint, signed))) => {
                check_newest_checkpoint(&path, settings, checkpoint, signed, next_seq - 1)?;
                let tree = store::extend_frontier(&conn, signed, next_seq - 1).map_err(open_err)?;
                if tree.size() != next_seq - 1 {
                    return Err(AuditError::Inconsistent {
                        path: path.clone(),
                        reason: format!("its events after {} have gaps", signed.size()),
                    });
                }
                tree
            }
            _ => store::load_frontier(&conn, next_seq - 1).map_err(open_err)?,
        };
        let latest = latest.map(|(checkpoint, _)| checkpoint);
        let (announce, announced) = tokio::sync::watch::channel(latest.clone());
        let interval = checkpoints.as_ref().map(|c| c.interval);
        let signing = checkpoints.as_ref().map(|c| {
            (
                checkpoint::Verifier::for_signer(c.signer.as_ref()),
                c.origin.clone(),
            )
        });
        let checkpointing = checkpoints.map(|settings| writer::Checkpointing {
            settings,
            last_size: latest.as_ref().map_or(0, |c| c.size),
            last_time: Instant::now(),
            force: false,
            announce,
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared::new());
        let wal_stop = Arc::new(AtomicBool::new(false));
        store::spawn_wal_checkpointer(path.clone(), Arc::clone(&wal_stop))
            .map_err(AuditError::Spawn)?;
        let (committed, committed_rx) = tokio::sync::watch::channel(next_seq - 1);
        let writer = Writer {
            committed,
            path: path.clone(),
            durability,
            conn: Some(conn),
            next_seq,
            frontier,
            max_page_count,
            shared: Arc::clone(&shared),
            pending: Vec::new(),
            checkpoints: checkpointing,
            wal_stop,
        };
        std::thread::Builder::new()
            .name("portcullis-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::Spawn)?;
        if let Some(interval) = interval {
            // A weak sender, so the ticker never keeps the writer alive on its own.
            let weak = tx.downgrade();
            std::thread::Builder::new()
                .name("portcullis-audit-ticker".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(interval);
                        let Some(tx) = weak.upgrade() else { break };
                        // A full queue means traffic, and the commits it causes check the
                        // interval themselves; a closed one means the log is shutting down.
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Msg::Tick) {
                            break;
                        }
                    }
                })
                .map_err(AuditError::Spawn)?;
        }
        tracing::debug!(path = %path.display(), next_seq, ?durability, "audit log open");
        Ok(AuditLog {
            inner: Arc::new(Inner {
                path,
                gateway_id: gateway_id.to_owned(),
                durability,
                tx,
                shared,
                next_queued_seq: Mutex::new(next_seq),
                closed: AtomicBool::new(false),
                checkpoints: announced,
                committed: committed_rx,
                signing,
                space: space::SpaceReserve::new(data_dir.to_path_buf()),
                digest_key,
            }),
        })
    }

    /// A new event with a fresh UUIDv7 id, the current UTC time (RFC 3339, milliseconds,
    /// `Z`), this gateway's id, and the given type and outcome; all other fields `None`.
    pub fn event(&self, event_type: EventType, outcome: Outcome) -> AuditEvent {
        AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            gateway: self.inner.gateway_id.clone(),
            event_type,
            outcome,
            source: None,
            identity: None,
            target: None,
            session: None,
            action: None,
            resource: None,
            request_id: None,
            decision: None,
            rule: None,
            policy_version: None,
            arguments: None,
            result: None,
            duration_ms: None,
            detail: None,
            approval: None,
            grant: None,
            reason: None,
            break_glass: false,
            findings: None,
            masked: None,
            statement: None,
            http: None,
            recorded: None,
            segment: None,
            removed: None,
            evidence: None,
        }
    }

    /// Why the store cannot be written right now, if it is known to be failed or its file
    /// system is below the space reserve. Lets a caller refuse an action *before* it happens
    /// rather than withhold its answer afterwards: the reserve is there so that an action
    /// let through can still be recorded. Cheap enough to call before every forward.
    pub fn unavailable(&self) -> Option<String> {
        self.inner
            .shared
            .failure()
            .or_else(|| self.inner.space.shortfall())
    }

    /// The digest of a payload (arguments, a result) for an event: keyed, so a short secret
    /// in it cannot be found again by hashing candidates (see [`digest`]).
    pub fn digest(&self, payload: &[u8]) -> PayloadDigest {
        self.inner.digest_key.digest(payload)
    }

    /// Sets the space reserve (`audit.space_reserve`): `None` the default (64 MiB, or 5% of
    /// the file system if smaller), `Some(0)` no check.
    pub fn set_space_reserve(&self, bytes: Option<u64>) {
        self.inner.space.set(bytes);
    }

    /// Appends an event and returns its sequence number.
    ///
    /// Strict: returns only after the event's transaction is committed with fsync. Batched:
    /// returns once the event is queued; the number returned is the one it will be stored
    /// under. Errors (disk full, permissions, store failed or closed) are returned so the
    /// caller can fail closed; while the store is failed, calls fail at once.
    pub fn record(
        &self,
        event: AuditEvent,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        self.record_with(event, Vec::new())
    }

    /// Like [`record`](Self::record), and stores `chunks` (the recorded messages the event
    /// names in `recorded`) in the same transaction: the event and its recording are
    /// written together or not at all.
    ///
    /// The event is turned into its row (canonical bytes, leaf hash) before the future is
    /// returned, and the future keeps only the row: an `AuditEvent` is ~1.6 KB, and an
    /// async fn holding it would carry it, copied, through every future that awaits this
    /// one (an MCP request's future was 37 KB, and moving it cost ~7 % of the CPU).
    pub fn record_with(
        &self,
        event: AuditEvent,
        chunks: Vec<Chunk>,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        let admitted = self.inner.shared.admit().map(|()| {
            let mut row = Row::from_event(&event);
            row.chunks = chunks;
            row
        });
        let log = self.clone();
        async move { log.append(admitted?).await }
    }

    async fn append(&self, mut row: Row) -> Result<u64, AuditError> {
        // Counted before the send, taken back if the send fails: the writer may commit the
        // event (and count it down) before `send` returns.
        let queue = &self.inner.shared.queued;
        queue.fetch_add(1, Ordering::Relaxed);
        let unqueue = |e| {
            queue.fetch_sub(1, Ordering::Relaxed);
            e
        };
        match self.inner.durability {
            Durability::Strict => {
                let (reply, answer) = oneshot::channel();
                self.inner
                    .tx
                    .send(Msg::Append {
                        row,
                        reply: Some(reply),
                    })
                    .await
                    .map_err(|_| unqueue(self.send_error()))?;
                answer.await.map_err(|_| AuditError::WriterGone)?
            }
            Durability::Batched => {
                // Reserve the queue slot first (this may wait), then number and queue the
                // event under the lock without waiting, so numbers follow queue order.
                let permit = self
                    .inner
                    .tx
                    .reserve()
                    .await
                    .map_err(|_| unqueue(self.send_error()))?;
                let mut next = self
                    .inner
                    .next_queued_seq
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let seq = *next;
                *next += 1;
                row.promised_seq = Some(seq);
                permit.send(Msg::Append { row, reply: None });
                Ok(seq)
            }
        }
    }

    /// Events handed to the writer and not committed yet: queued, in the transaction being
    /// written, or (batched mode, after a failed write) kept for the next attempt.
    pub fn queue_depth(&self) -> u64 {
        self.inner.shared.queued.load(Ordering::Relaxed)
    }

    /// Tells `observer` of every commit from now on (metrics). Set once; a second observer
    /// is refused (returned) rather than silently replacing the first.
    pub fn observe_commits(
        &self,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<(), Arc<dyn CommitObserver>> {
        self.inner.shared.observer.set(observer)
    }

    /// The newest signed checkpoint, updated as new ones are stored. For the sinks that
    /// publish checkpoints outside the gateway.
    pub fn checkpoints(&self) -> tokio::sync::watch::Receiver<Option<StoredCheckpoint>> {
        self.inner.checkpoints.clone()
    }

    /// How many events this process has committed so far (the tree size), updated after
    /// every commit. Streaming sinks wait on it; events appended by another process (a CLI
    /// command) are not announced here, so readers also look now and then.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Signs a checkpoint of everything recorded so far (if anything is new), now.
    pub async fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::CheckpointNow { reply })
            .await
            .map_err(|_| self.send_error())?;
        answer.await.map_err(|_| AuditError::WriterGone)
    }

    /// For a log that signs checkpoints: the verifier of its key and its origin.
    pub fn signing(&self) -> Option<(&checkpoint::Verifier, &str)> {
        self.inner
            .signing
            .as_ref()
            .map(|(key, origin)| (key, origin.as_str()))
    }

    /// Stores a witness's cosignature line beside the checkpoint of `size`.
    pub async fn store_cosignature(
        &self,
        size: u64,
        witness: &str,
        line: &str,
    ) -> Result<(), AuditError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Cosignature {
                size,
                witness: witness.to_owned(),
                line: line.to_owned(),
                reply,
            })
            .await
            .map_err(|_| self.send_error())?;
        answer.await.map_err(|_| AuditError::WriterGone)?
    }

    /// Writes everything queued and stops the writer. Later `record` calls return
    /// [`AuditError::Closed`]. Calling it again is harmless.
    pub async fn close(&self) -> Result<(), AuditError> {
        let was_closed = self.inner.closed.swap(true, Ordering::AcqRel);
        let (reply, answer) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown { reply }).await.is_err() {
            // The writer has already stopped: by an earlier close, or by dying.
            return if was_closed {
                Ok(())
            } else {
                Err(AuditError::WriterGone)
            };
        }
        answer.await.map_err(|_| AuditError::WriterGone)?
    }

    fn send_error(&self) -> AuditError {
        if self.inner.closed.load(Ordering::Acquire) {
            AuditError::Closed
        } else {
            AuditError::WriterGone
        }
    }

    /// Opens with a size cap, to produce SQLITE_FULL as a full disk would.
    #[cfg(test)]
    fn open_with_max_page_count(
        data_dir: &Path,
        durability: Durability,
        pages: u64,
    ) -> Result<AuditLog, AuditError> {
        Self::open_inner(data_dir, "test-gw", durability, None, Some(pages))
    }

    /// Changes the size cap on the writer's connection ("the disk has space again").
    #[cfg(test)]
    async fn set_max_page_count(&self, pages: u64) {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::SetMaxPageCount { pages, reply })
            .await
            .expect("writer running");
        answer.await.expect("writer answered");
    }
}

/// Before a signing log extends itself: its newest stored checkpoint must be a note signed by
/// this key for this origin, agree with the tree state stored beside it, and be covered by
/// the events; otherwise the log was truncated or edited, and the gateway refuses to start
/// rather than sign over it.
fn check_newest_checkpoint(
    path: &Path,
    settings: &CheckpointSettings,
    stored: &StoredCheckpoint,
    frontier: &merkle::Frontier,
    events: u64,
) -> Result<(), AuditError> {
    let inconsistent = |reason: String| AuditError::Inconsistent {
        path: path.to_path_buf(),
        reason,
    };
    let verifier = checkpoint::Verifier::for_signer(settings.signer.as_ref());
    let body = verifier.open(&stored.note).map_err(|e| {
        inconsistent(format!(
            "the newest stored checkpoint (size {}) does not verify with this gateway's key: {e}",
            stored.size
        ))
    })?;
    let signed = checkpoint::Checkpoint::parse(body).map_err(|e| inconsistent(e.to_string()))?;
    if signed.origin != settings.origin {
        return Err(inconsistent(format!(
            "the newest stored checkpoint names the origin {:?}, not {:?}; give this gateway a data directory of its own",
            signed.origin, settings.origin
        )));
    }
    if signed.size != stored.size || signed.root != frontier.root() {
        return Err(inconsistent(format!(
            "the newest stored checkpoint says size {} but is stored as size {} or with another tree",
            signed.size, stored.size
        )));
    }
    if events < signed.size {
        return Err(inconsistent(format!(
            "it holds {events} events but its newest signed checkpoint covers {}: it was truncated or rolled back",
            signed.size
        )));
    }
    Ok(())
}

impl Row {
    fn from_event(event: &AuditEvent) -> Row {
        let body = canonical_bytes(event);
        let leaf_hash = merkle::leaf_hash(&body);
        Row {
            id: event.id.clone(),
            time: event.time.clone(),
            event_type: serde_name(&event.event_type),
            session: event.session.clone(),
            subject: event.identity.as_ref().map(|i| i.subject.clone()),
            target: event.target.clone(),
            outcome: serde_name(&event.outcome),
            body,
            leaf_hash,
            promised_seq: None,
            chunks: Vec::new(),
            queued: Instant::now(),
        }
    }
}

/// The wire name of a unit enum variant (`session.start`, `upstream_error`), taken from
/// serde so the indexed columns always agree with the canonical body.
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => unreachable!("unit enum serializes as a string, got {other:?}"),
    }
}
