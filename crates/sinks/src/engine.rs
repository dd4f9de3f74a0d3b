//! The delivery loop: one task per sink, reading the committed log from the sink's cursor.
//!
//! Each sink reads on its own read-only connection to the log (WAL mode lets it read beside
//! the writer), wakes when the log commits (or every second, for events another process
//! appended), and sends what it has not sent yet, up to `batch_max` events a batch. A batch
//! that fails is sent again, whole, after a backoff that doubles from 250 ms up to
//! `retry_max`, with jitter so that sinks recovering together do not retry in step. The
//! cursor moves only after the receiver acknowledged, so nothing is skipped; a receiver may
//! see a batch twice, and deduplicates on the event id or leaf index.
//!
//! Requests never wait here: the gateway writes its log whatever the sinks do, and a sink
//! that is down or slow only grows its lag, shown by [`SinkSet::status`], by `portcullis
//! sinks status`, and by a warning in the log while it exceeds `lag_warning`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_audit::{AuditReader, SinkPage};
use portcullis_config::SinkSpec;
use rand::Rng as _;
use serde::Serialize;
use tokio::sync::watch;

use crate::cursor::{self, Cursor};
use crate::filter::Filter;
use crate::record::{Batch, CheckpointRecord, EventRecord, OmittedRecord, Record};
use crate::{Delivered, SinkError, Transport};

/// The first wait after a failure; it doubles up to the sink's `retry_max`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How often an idle sink looks at the log even without a commit announced (events
/// appended by another process, such as `portcullis tools accept`).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long a sink whose log reading failed waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How often the lag warning is repeated while it lasts.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the sinks need from the gateway.
#[derive(Debug, Clone)]
pub struct Context {
    pub data_dir: PathBuf,
    /// The log's origin (see `Config::audit_origin`).
    pub origin: String,
    /// The log's committed size, announced after every commit (`AuditLog::committed`).
    pub committed: Option<watch::Receiver<u64>>,
}

/// A sink's state, for `portcullis sinks status` and the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub kind: String,
    pub destination: String,
    pub state: SinkState,
    /// Leaves `0..delivered` are acknowledged by the receiver.
    pub delivered: u64,
    /// Events in the log.
    pub head: u64,
    pub lag_events: u64,
    /// How old the oldest undelivered event is, in seconds (0 when caught up).
    pub lag_seconds: f64,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Records the receiver refused for good (see the sink's `.rejected.jsonl`).
    pub rejected: u64,
}

/// Where a sink is, as `sinks status` and the admin API show it (`caught-up`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkState {
    /// Everything in the log is acknowledged.
    CaughtUp,
    Delivering,
    /// The last attempt failed (see `last_error`); the batch is sent again after a backoff.
    Retrying,
    /// Read from disk (`sinks status`): events wait, and no error was recorded.
    Behind,
    /// The sink cannot go on (see `last_error`): its cursor needs the operator.
    Stopped,
}

impl SinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::CaughtUp => "caught-up",
            SinkState::Delivering => "delivering",
            SinkState::Retrying => "retrying",
            SinkState::Behind => "behind",
            SinkState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for SinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// So a state reads as it is shown: `status.state == "caught-up"`.
impl PartialEq<&str> for SinkState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The running sinks.
pub struct SinkSet {
    sinks: Vec<Running>,
    /// `None` while running; the drain deadline once stopping.
    stop: watch::Sender<Option<tokio::time::Instant>>,
}

/// Reads the running sinks' states; cheap to clone.
#[derive(Clone, Default)]
pub struct SinkStatuses(Arc<[Arc<Mutex<SinkStatus>>]>);

impl SinkStatuses {
    pub fn get(&self) -> Vec<SinkStatus> {
        self.0
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect()
    }
}

impl std::fmt::Debug for SinkStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkStatuses")
            .field("sinks", &self.0.len())
            .finish()
    }
}

struct Running {
    shared: Arc<Mutex<SinkStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSet")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl SinkSet {
    /// Starts one task per sink on the current runtime. Fails (naming the sink) when a
    /// sink's settings cannot be used; a receiver that is down is not a failure here.
    pub fn start(specs: &[SinkSpec], context: &Context) -> Result<SinkSet, SinkError> {
        let transports = specs
            .iter()
            .map(|spec| crate::transport(spec, &context.origin))
            .collect::<Result<Vec<_>, _>>()?;
        let (stop, stopping) = watch::channel(None);
        let sinks = specs
            .iter()
            .zip(transports)
            .map(|(spec, transport)| {
                let shared = Arc::new(Mutex::new(SinkStatus {
                    name: spec.name.clone(),
                    kind: spec.kind.name().into(),
                    destination: transport.destination(),
                    state: SinkState::Delivering,
                    delivered: 0,
                    head: 0,
                    lag_events: 0,
                    lag_seconds: 0.0,
                    delivered_at: None,
                    last_error: None,
                    last_error_at: None,
                    rejected: 0,
                }));
                let worker = Worker {
                    filter: Filter::new(&spec.filter).map(Arc::new).map_err(|e| {
                        SinkError::Setup {
                            sink: spec.name.clone(),
                            reason: e.to_string(),
                        }
                    })?,
                    spec: spec.clone(),
                    transport,
                    context: context.clone(),
                    shared: shared.clone(),
                    stopping: stopping.clone(),
                    last_warning: None,
                    oldest_undelivered: None,
                };
                let task = tokio::spawn(worker.run());
                Ok(Running { shared, task })
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        Ok(SinkSet { sinks, stop })
    }

    /// Every sink's state now.
    pub fn status(&self) -> Vec<SinkStatus> {
        self.statuses().get()
    }

    /// A handle that reads every sink's state, for the admin API (after the set is
    /// finished it shows the last state).
    pub fn statuses(&self) -> SinkStatuses {
        SinkStatuses(self.sinks.iter().map(|s| s.shared.clone()).collect())
    }

    /// Stops the sinks, first letting each deliver what the log holds (the last checkpoint
    /// among it) for at most `drain`. What is not delivered by then is sent after the next
    /// start: the cursors are on disk.
    pub async fn finish(self, drain: Duration) {
        let behind: Vec<String> = self
            .status()
            .into_iter()
            .filter(|s| s.state != SinkState::CaughtUp)
            .map(|s| s.name)
            .collect();
        if !behind.is_empty() {
            tracing::info!(
                sinks = %behind.join(", "),
                "letting the sinks deliver the last events for up to {}s",
                drain.as_secs()
            );
        }
        let _ = self.stop.send(Some(tokio::time::Instant::now() + drain));
        for sink in self.sinks {
            let mut task = sink.task;
            if tokio::time::timeout(drain + Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

struct Worker {
    spec: SinkSpec,
    filter: Arc<Filter>,
    transport: Box<dyn Transport>,
    context: Context,
    shared: Arc<Mutex<SinkStatus>>,
    stopping: watch::Receiver<Option<tokio::time::Instant>>,
    last_warning: Option<Instant>,
    /// The time of the oldest event not yet acknowledged, while there is one: the lag in
    /// seconds grows from it while deliveries fail.
    oldest_undelivered: Option<String>,
}

/// What one read of the log gave, and the batch made of it (both done off the runtime's
/// threads: reading, parsing and filtering a page is the sink's heaviest work).
struct Read {
    /// `None`: fewer than a full batch wait, and `batch_wait` has not passed yet.
    batch: Option<Batch>,
    /// The log's size at that moment.
    head: u64,
    first_event: Option<String>,
    /// The leaf hash at `next_leaf - 1`, to check the cursor against.
    last_leaf: Option<portcullis_audit::merkle::Hash>,
    /// The time of the first leaf read (the oldest undelivered event).
    oldest_time: Option<String>,
}

/// What one step of a sink reads of the log.
struct ReadRequest {
    next_leaf: u64,
    after_checkpoint: u64,
    limit: usize,
    /// Read no page while fewer than `limit` events wait (they are let gather).
    want_full: bool,
    /// Read the leaf hash the cursor ended on, to check it.
    anchor: bool,
    /// Read the log's first event id.
    first_event: bool,
}

/// One step of a sink, on the blocking pool: the log's size, what the cursor checks need,
/// and the next page made into a batch.
fn read_log(
    reader: &AuditReader,
    request: &ReadRequest,
    filter: &Filter,
    origin: &str,
    sink: &str,
) -> Result<Read, SinkError> {
    let audit_err = |source| SinkError::Audit {
        sink: sink.to_string(),
        source,
    };
    let next_leaf = request.next_leaf;
    let head = reader.count().map_err(audit_err)?;
    let first_event = match request.first_event {
        true => reader.first_event_id().map_err(audit_err)?,
        false => None,
    };
    let last_leaf = match (request.anchor, next_leaf) {
        (true, 1..) => reader.leaf_hash(next_leaf - 1).map_err(audit_err)?,
        _ => None,
    };
    let partial = head > next_leaf && head - next_leaf < request.limit as u64;
    let batch = if request.want_full && partial {
        None
    } else {
        let page = reader
            .sink_page(next_leaf, request.limit, request.after_checkpoint)
            .map_err(audit_err)?;
        let oldest_time = page.leaves.first().and_then(|l| event_time(&l.body));
        Some((build_batch(page, filter, origin, next_leaf)?, oldest_time))
    };
    let (batch, oldest_time) = batch.unzip();
    Ok(Read {
        batch,
        head,
        first_event,
        last_leaf,
        oldest_time: oldest_time.flatten(),
    })
}

impl Worker {
    async fn run(mut self) {
        loop {
            match self.deliver().await {
                Ok(()) => return,
                // A cursor that cannot be trusted needs the operator: going on could skip
                // or repeat the whole log.
                Err(e @ SinkError::Cursor { .. }) => {
                    tracing::error!(sink = %self.spec.name, "the sink stopped: {e}");
                    let mut status = self.status();
                    status.state = SinkState::Stopped;
                    status.last_error = Some(e.to_string());
                    status.last_error_at = Some(now());
                    return;
                }
                // Anything else (the log busy or briefly unreadable) is tried again from
                // the cursor on disk.
                Err(e) => {
                    tracing::warn!(sink = %self.spec.name, "the sink will start again: {e}");
                    {
                        let mut status = self.status();
                        status.state = SinkState::Retrying;
                        status.last_error = Some(e.to_string());
                        status.last_error_at = Some(now());
                    }
                    let pause = tokio::time::sleep(RESTART_AFTER);
                    if until_deadline(self.stopping.clone(), pause).await.is_none()
                        || self.deadline().is_some()
                    {
                        return;
                    }
                }
            }
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, SinkStatus> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The drain deadline, once the gateway is stopping.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        *self.stopping.borrow()
    }

    async fn deliver(&mut self) -> Result<(), SinkError> {
        let data_dir = self.context.data_dir.clone();
        let name = self.spec.name.clone();
        let audit_err = |source| SinkError::Audit {
            sink: name.clone(),
            source,
        };
        let mut reader = Some(AuditReader::open(&data_dir).map_err(audit_err)?);
        let mut cursor = blocking(self.spec.name.clone(), {
            let (data_dir, name) = (data_dir.clone(), name.clone());
            move || Cursor::load(&data_dir, &name)
        })
        .await??;
        let cursor_path = cursor::cursor_path(&data_dir, &self.spec.name);
        {
            let mut status = self.status();
            status.delivered = cursor.next_leaf;
            status.rejected = cursor.rejected;
            status.delivered_at.clone_from(&cursor.delivered_at);
        }
        // The cursor is checked against the log once, before anything is sent from it.
        let mut checked = false;
        // When events were first seen waiting while fewer than a full batch.
        let mut pending_since: Option<Instant> = None;
        loop {
            // Events gather for up to `batch_wait` from when the first was seen, unless a
            // full batch is there or the gateway is stopping.
            let wait_left = match pending_since {
                Some(since) => self.spec.batch_wait.saturating_sub(since.elapsed()),
                None => self.spec.batch_wait,
            };
            let want_full = !wait_left.is_zero() && self.deadline().is_none();
            let request = ReadRequest {
                next_leaf: cursor.next_leaf,
                after_checkpoint: cursor.checkpoint,
                limit: self.spec.batch_max,
                want_full,
                anchor: !checked,
                // The log's first event is only needed until the cursor is checked and bound.
                first_event: !checked || cursor.log.is_none(),
            };
            let taken = reader
                .take()
                .expect("the reader is put back after each read");
            let (filter, origin, sink) = (
                self.filter.clone(),
                self.context.origin.clone(),
                self.spec.name.clone(),
            );
            let (back, read) = blocking(self.spec.name.clone(), move || {
                let read = read_log(&taken, &request, &filter, &origin, &sink);
                (taken, read)
            })
            .await?;
            reader = Some(back);
            let read = read?;
            if !checked {
                cursor::check(
                    &cursor,
                    &cursor_path,
                    read.head,
                    read.first_event.as_deref(),
                    read.last_leaf.as_ref(),
                )?;
                checked = true;
            }
            if cursor.log.is_none() {
                cursor.log.clone_from(&read.first_event);
            }
            let Some(batch) = read.batch else {
                // A partial batch: let more events gather first.
                pending_since.get_or_insert_with(Instant::now);
                {
                    let mut status = self.status();
                    status.head = read.head;
                    status.lag_events = read.head.saturating_sub(cursor.next_leaf);
                }
                let _ = until_deadline(self.stopping.clone(), tokio::time::sleep(wait_left)).await;
                continue;
            };
            pending_since = None;
            if batch.records.is_empty() {
                self.caught_up(read.head);
                if self.deadline().is_some() {
                    return Ok(());
                }
                self.wait_for_commit().await;
                continue;
            }
            self.lagging(cursor.next_leaf, read.head, read.oldest_time.as_deref());
            let Some(delivered) = self.send_until_acknowledged(&batch, &mut cursor).await? else {
                // Stopping, and the drain time is up: the cursor stays where it is.
                return Ok(());
            };
            self.acknowledged(&batch, delivered, &mut cursor).await?;
        }
    }

    /// Sends the batch until the receiver acknowledges it; `None` when the gateway stops
    /// first.
    async fn send_until_acknowledged(
        &mut self,
        batch: &Batch,
        cursor: &mut Cursor,
    ) -> Result<Option<Delivered>, SinkError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::time::timeout(self.spec.timeout, self.transport.send(batch));
            let failure = match until_deadline(self.stopping.clone(), attempt).await {
                None => return Ok(None),
                Some(Ok(Ok(delivered))) => return Ok(Some(delivered)),
                Some(Ok(Err(e))) => e.reason,
                Some(Err(_)) => format!(
                    "no acknowledgement within {} (timeout)",
                    humanize(self.spec.timeout)
                ),
            };
            self.failed(&failure, cursor).await?;
            // Full jitter over the upper half: never faster than half the backoff, never in
            // step with another sink.
            let half = backoff / 2;
            let wait = half + rand::rng().random_range(Duration::ZERO..=half);
            if until_deadline(self.stopping.clone(), tokio::time::sleep(wait))
                .await
                .is_none()
            {
                return Ok(None);
            }
            backoff = (backoff * 2).min(self.spec.retry_max);
        }
    }
}

/// Runs blocking work (the log, the cursor file) on the blocking pool, never on the threads
/// that serve requests.
async fn blocking<T: Send + 'static>(
    sink: String,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SinkError::Setup {
            sink,
            reason: format!("a sink task stopped: {e}"),
        })
}

/// Runs `future` until it ends or the drain deadline passes (`None`).
async fn until_deadline<F: std::future::Future>(
    mut stopping: watch::Receiver<Option<tokio::time::Instant>>,
    future: F,
) -> Option<F::Output> {
    tokio::pin!(future);
    loop {
        let deadline = *stopping.borrow_and_update();
        match deadline {
            Some(deadline) => {
                return tokio::time::timeout_at(deadline, &mut future).await.ok();
            }
            None => {
                tokio::select! {
                    output = &mut future => return Some(output),
                    changed = stopping.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                }
            }
        }
    }
}

impl Worker {
    async fn wait_for_commit(&mut self) {
        let mut stopping = self.stopping.clone();
        let committed = self.context.committed.as_mut();
        let commit = async {
            match committed {
                Some(committed) => {
                    // A closed watch (the log is closing) must not turn this into a busy
                    // loop: then only the poll below wakes the sink.
                    if committed.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = commit => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
            _ = stopping.changed() => {}
        }
    }

    async fn failed(&mut self, reason: &str, cursor: &mut Cursor) -> Result<(), SinkError> {
        let at = now();
        {
            let mut status = self.status();
            if status.last_error.as_deref() != Some(reason) {
                tracing::warn!(sink = %self.spec.name, destination = %status.destination, "delivery failed, will retry: {reason}");
            }
            status.state = SinkState::Retrying;
            status.last_error = Some(reason.to_string());
            status.last_error_at = Some(at.clone());
            // The log keeps growing while the receiver is away.
            if let Some(committed) = &self.context.committed {
                status.head = status.head.max(*committed.borrow());
                status.lag_events = status.head.saturating_sub(status.delivered);
            }
            status.lag_seconds = self.oldest_undelivered.as_deref().map_or(0.0, age_seconds);
        }
        self.warn_if_lagging();
        // Kept on disk when it changes, so `sinks status` can say why while the gateway is
        // down; not on every retry.
        if cursor.last_error.as_deref() != Some(reason) {
            cursor.last_error = Some(reason.to_string());
            cursor.last_error_at = Some(at);
            let (data_dir, name, saved) = (
                self.context.data_dir.clone(),
                self.spec.name.clone(),
                cursor.clone(),
            );
            blocking(self.spec.name.clone(), move || saved.save(&data_dir, &name)).await??;
        }
        Ok(())
    }

    async fn acknowledged(
        &mut self,
        batch: &Batch,
        delivered: Delivered,
        cursor: &mut Cursor,
    ) -> Result<(), SinkError> {
        if !delivered.rejected.is_empty() {
            let lines = rejection_lines(batch, &delivered);
            let (data_dir, name) = (self.context.data_dir.clone(), self.spec.name.clone());
            blocking(self.spec.name.clone(), move || {
                report_rejections(&data_dir, &name, &lines)
            })
            .await??;
            cursor.rejected += delivered.rejected.len() as u64;
        }
        cursor.next_leaf = batch.end_leaf;
        if let Some(hash) = batch.records.iter().rev().find_map(|r| match r {
            Record::Event(e) => Some(e.leaf_hash),
            Record::Omitted(o) => o.leaf_hashes.last().copied(),
            Record::Checkpoint(_) => None,
        }) {
            cursor.last_leaf_hash = Some(hex::encode(hash));
        }
        if let Some(size) = batch
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Checkpoint(c) => Some(c.size),
                _ => None,
            })
            .max()
        {
            cursor.checkpoint = size;
        }
        cursor.delivered_at = Some(now());
        cursor.last_error = None;
        cursor.last_error_at = None;
        let (data_dir, name, saved) = (
            self.context.data_dir.clone(),
            self.spec.name.clone(),
            cursor.clone(),
        );
        blocking(self.spec.name.clone(), move || saved.save(&data_dir, &name)).await??;
        let mut status = self.status();
        status.delivered = cursor.next_leaf;
        status.lag_events = status.head.saturating_sub(cursor.next_leaf);
        status.delivered_at.clone_from(&cursor.delivered_at);
        status.rejected = cursor.rejected;
        status.last_error = None;
        status.last_error_at = None;
        status.state = SinkState::Delivering;
        Ok(())
    }

    fn caught_up(&mut self, head: u64) {
        self.oldest_undelivered = None;
        let was_lagging = self.last_warning.take().is_some();
        let mut status = self.status();
        status.head = head;
        status.lag_events = 0;
        status.lag_seconds = 0.0;
        status.state = SinkState::CaughtUp;
        if was_lagging {
            tracing::info!(sink = %self.spec.name, "the sink caught up");
        }
    }

    fn lagging(&mut self, delivered: u64, head: u64, oldest: Option<&str>) {
        self.oldest_undelivered = oldest.map(str::to_string);
        {
            let mut status = self.status();
            status.head = head;
            status.lag_events = head.saturating_sub(delivered);
            status.lag_seconds = oldest.map_or(0.0, age_seconds);
        }
        self.warn_if_lagging();
    }

    fn warn_if_lagging(&mut self) {
        let status = self.status().clone();
        if status.lag_seconds < self.spec.lag_warning.as_secs_f64() {
            return;
        }
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return;
        }
        self.last_warning = Some(Instant::now());
        tracing::warn!(
            sink = %status.name,
            lag_events = status.lag_events,
            lag_seconds = status.lag_seconds.round(),
            last_error = status.last_error.as_deref().unwrap_or("none"),
            "the sink lags behind the audit log by more than lag_warning"
        );
    }
}

/// The `time` of an event's canonical JSON, without parsing the rest.
fn event_time(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Time {
        time: String,
    }
    serde_json::from_str::<Time>(body).ok().map(|t| t.time)
}

/// Turns a page into the records a sink sends: events the filter accepts, runs of the
/// others as their hashes, and the checkpoints, each after the last leaf it covers.
pub fn build_batch(
    page: SinkPage,
    filter: &Filter,
    origin: &str,
    next_leaf: u64,
) -> Result<Batch, SinkError> {
    let end_leaf = page.leaves.last().map_or(next_leaf, |l| l.index + 1);
    let mut records = Vec::with_capacity(page.leaves.len() + page.checkpoints.len());
    let mut checkpoints = page.checkpoints.into_iter().peekable();
    let mut omitted: Option<OmittedRecord> = None;
    for leaf in page.leaves {
        // Checkpoints of a size up to this leaf come before it.
        while let Some(c) = checkpoints.next_if(|c| c.size <= leaf.index) {
            records.extend(omitted.take().map(Record::Omitted));
            records.push(Record::Checkpoint(CheckpointRecord::from(c)));
        }
        let event = EventRecord::from_leaf(leaf)?;
        if filter.accepts(&event) {
            records.extend(omitted.take().map(Record::Omitted));
            records.push(Record::Event(event));
        } else {
            omitted
                .get_or_insert_with(|| OmittedRecord {
                    leaf_index: event.leaf_index,
                    leaf_hashes: Vec::new(),
                })
                .leaf_hashes
                .push(event.leaf_hash);
        }
    }
    records.extend(omitted.take().map(Record::Omitted));
    records.extend(checkpoints.map(|c| Record::Checkpoint(CheckpointRecord::from(c))));
    Ok(Batch {
        origin: origin.to_string(),
        records,
        first_leaf: next_leaf,
        end_leaf,
    })
}

/// The lines of `<name>.rejected.jsonl` for the records the receiver refused for good,
/// each logged as it is made: counted and reported, never dropped silently.
fn rejection_lines(batch: &Batch, delivered: &Delivered) -> Vec<String> {
    let at = now();
    delivered
        .rejected
        .iter()
        .map(|rejected| {
            let record = batch.records.get(rejected.record);
            let line = serde_json::json!({
                "time": at,
                "record": record.map(Record::kind),
                "leaf_index": record.and_then(|r| match r {
                    Record::Event(e) => Some(e.leaf_index),
                    Record::Omitted(o) => Some(o.leaf_index),
                    Record::Checkpoint(_) => None,
                }),
                "checkpoint_size": record.and_then(|r| match r {
                    Record::Checkpoint(c) => Some(c.size),
                    _ => None,
                }),
                "event_id": record.and_then(|r| match r {
                    Record::Event(e) => Some(e.event.id.clone()),
                    _ => None,
                }),
                "reason": rejected.reason,
            })
            .to_string();
            tracing::error!(record = %line, "the receiver refused a record for good; it is listed in the sink's .rejected.jsonl");
            line
        })
        .collect()
}

/// Appends the lines to `<name>.rejected.jsonl`, synced.
fn report_rejections(data_dir: &Path, sink: &str, lines: &[String]) -> Result<(), SinkError> {
    let path = cursor::rejected_path(data_dir, sink);
    let failed = |e: std::io::Error| SinkError::Cursor {
        path: path.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(cursor::sinks_dir(data_dir)).map_err(failed)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(failed)?;
    for line in lines {
        writeln!(file, "{line}").map_err(failed)?;
    }
    file.sync_data().map_err(failed)
}

/// The status of the configured sinks from what is on disk, for `portcullis sinks status`
/// while no gateway answers: cursors, the log's size and the age of the oldest undelivered
/// event.
pub fn status_from_disk(data_dir: &Path, specs: &[SinkSpec]) -> Result<Vec<SinkStatus>, SinkError> {
    let reader = AuditReader::open(data_dir).map_err(|source| SinkError::Audit {
        sink: "*".into(),
        source,
    })?;
    let audit_err = |sink: &str| {
        let sink = sink.to_string();
        move |source| SinkError::Audit { sink, source }
    };
    specs
        .iter()
        .map(|spec| {
            let head = reader.count().map_err(audit_err(&spec.name))?;
            let (cursor, cursor_error) = match Cursor::load(data_dir, &spec.name) {
                Ok(c) => (c, None),
                Err(e) => (Cursor::default(), Some(e.to_string())),
            };
            // The checks a running sink makes before it resumes: a cursor the gateway would
            // refuse is shown as stopped, with the reason.
            let cursor_error = match cursor_error {
                Some(e) => Some(e),
                None => {
                    let first = reader.first_event_id().map_err(audit_err(&spec.name))?;
                    let last_leaf = match cursor.next_leaf {
                        0 => None,
                        n => reader.leaf_hash(n - 1).map_err(audit_err(&spec.name))?,
                    };
                    cursor::check(
                        &cursor,
                        &cursor::cursor_path(data_dir, &spec.name),
                        head,
                        first.as_deref(),
                        last_leaf.as_ref(),
                    )
                    .err()
                    .map(|e| e.to_string())
                }
            };
            let lag_events = head.saturating_sub(cursor.next_leaf);
            let lag_seconds = if lag_events > 0 {
                reader
                    .time_at(cursor.next_leaf + 1)
                    .map_err(audit_err(&spec.name))?
                    .as_deref()
                    .map_or(0.0, age_seconds)
            } else {
                0.0
            };
            let destination = crate::destination(spec);
            Ok(SinkStatus {
                name: spec.name.clone(),
                kind: spec.kind.name().into(),
                destination,
                state: if cursor_error.is_some() {
                    SinkState::Stopped
                } else if cursor.last_error.is_some() {
                    SinkState::Retrying
                } else if lag_events > 0 {
                    SinkState::Behind
                } else {
                    SinkState::CaughtUp
                },
                delivered: cursor.next_leaf,
                head,
                lag_events,
                lag_seconds,
                delivered_at: cursor.delivered_at,
                last_error: cursor_error.or(cursor.last_error),
                last_error_at: cursor.last_error_at,
                rejected: cursor.rejected,
            })
        })
        .collect()
}

/// What `portcullis sinks replay` sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub batches: u64,
    pub events: u64,
    pub omitted: u64,
    pub checkpoints: u64,
    pub rejected: Vec<String>,
}

/// Sends leaves `from..to` again (to the log's end when `to` is `None`), with the
/// checkpoints in that range, without touching the sink's cursor. A batch is retried like
/// the running sink does; after `attempts` failures in a row the replay stops with the
/// receiver's error and says how far it got.
pub async fn replay(
    spec: &SinkSpec,
    transport: &mut dyn Transport,
    data_dir: &Path,
    origin: &str,
    from: u64,
    to: Option<u64>,
    attempts: u32,
) -> Result<Replayed, String> {
    let reader = AuditReader::open(data_dir).map_err(|e| e.to_string())?;
    let head = reader.count().map_err(|e| e.to_string())?;
    let end = to.unwrap_or(head).min(head);
    if from > end {
        return Err(format!(
            "--from {from} is past the end of the log ({head} events)"
        ));
    }
    let filter = Filter::new(&spec.filter).map_err(|e| e.to_string())?;
    let mut replayed = Replayed::default();
    let (mut next, mut checkpoint) = (from, from);
    while next < end || replayed.batches == 0 {
        let limit = spec.batch_max.min((end - next) as usize);
        let mut page = reader
            .sink_page(next, limit, checkpoint)
            .map_err(|e| e.to_string())?;
        page.checkpoints.retain(|c| c.size <= end);
        if page.leaves.is_empty() && page.checkpoints.is_empty() {
            break;
        }
        let batch = build_batch(page, &filter, origin, next).map_err(|e| e.to_string())?;
        let mut failures = 0;
        let mut backoff = FIRST_BACKOFF;
        let delivered = loop {
            match tokio::time::timeout(spec.timeout, transport.send(&batch)).await {
                Ok(Ok(delivered)) => break delivered,
                Ok(Err(e)) if failures + 1 >= attempts => {
                    return Err(format!(
                        "leaves {next}..{}: {e} (leaves {from}..{next} were sent)",
                        batch.end_leaf
                    ));
                }
                Err(_) if failures + 1 >= attempts => {
                    return Err(format!(
                        "leaves {next}..{}: no acknowledgement within {} (leaves {from}..{next} were sent)",
                        batch.end_leaf,
                        humanize(spec.timeout)
                    ));
                }
                _ => {
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(spec.retry_max);
                }
            }
        };
        for record in &batch.records {
            match record {
                Record::Event(_) => replayed.events += 1,
                Record::Omitted(o) => replayed.omitted += o.leaf_hashes.len() as u64,
                Record::Checkpoint(c) => {
                    replayed.checkpoints += 1;
                    checkpoint = c.size;
                }
            }
        }
        replayed
            .rejected
            .extend(delivered.rejected.iter().map(|r| r.reason.clone()));
        replayed.batches += 1;
        next = batch.end_leaf;
    }
    Ok(replayed)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seconds since an RFC 3339 time (0 if it cannot be read or lies ahead).
fn age_seconds(time: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0
        })
        .unwrap_or(0.0)
        .max(0.0)
}

fn humanize(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
