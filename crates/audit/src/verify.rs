//! `portcullis audit verify`: checks a whole log against the gateway's public key.
//!
//! The database is only the gateway's say-so: anyone who can write the file can change it.
//! What cannot be forged without the signing key are the checkpoints, so verification
//! recomputes the Merkle tree from the event bodies themselves and holds it against every
//! signed checkpoint it can find: those stored beside the events, those published outside
//! the gateway (which is what catches a truncated or rolled-back database, since the
//! database can forget its own checkpoints), and the witnesses' cosignatures of them. Along
//! the way it checks what the tree cannot: that the indexed columns agree with the bodies
//! (searches and `audit show` trust them), that sequence numbers have no gaps, that event
//! ids are unique, and that sessions open and close in a plausible order.
//!
//! Recordings are checked with the events: every chunk an event names must be in the
//! `chunks` table with bytes that hash to its id, unless a later `recording.removed` event
//! names it (retention: evidence, not a gap). The reader thread walks the chunks by
//! sequence number beside the events and hashes them, so chunk bytes never pile up in
//! memory; only the ids of chunks not (yet) found are kept until the log says why.
//! Encrypted recordings are not beside their events but in sealed segments: each
//! `recording.sealed` event's file must hash to what the event signs, and the chunks of the
//! requests in its range are sealed (checked inside the segment when an auditor's identity
//! is given). Requests of an encrypted run whose chunks no seal covers are the unsealed
//! tail a crash loses: reported, not failed.
//!
//! Events are streamed, so memory stays small: one reader thread steps through SQLite and
//! hashes each body while the calling thread parses and checks the previous chunk. All
//! reads happen in one read transaction, so a gateway appending meanwhile cannot make the
//! tree state, the checkpoints and the events disagree.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_model::{EventType, Outcome};
use serde::Deserialize;
use serde::de::IntoDeserializer as _;

use portcullis_model::SegmentRecord;
use portcullis_recording::ChunkId;
use portcullis_recording::segment::{self, Identities};

use crate::AuditReader;
use crate::checkpoint::{Checkpoint, CheckpointError, Verifier};
use crate::merkle::{self, Frontier, Hash};
use crate::reader::{RawCheckpoint, RawCosignature};
use crate::witness::CosignatureVerifier;

/// Events per chunk handed from the reader thread: large enough that the hand-over costs
/// nothing per event, small enough that memory stays at a few megabytes.
const CHUNK_ROWS: usize = 2048;

/// Chunks in flight between the threads.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The most ids the uniqueness set reserves room for up front. The event count comes from
/// the file being checked, so it is not trusted with an allocation of any size.
const MAX_RESERVE: u64 = 1 << 24;

/// How many session ids a warning lists before it says "and N more".
const LIST_LIMIT: usize = 3;

/// The first thing found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Location,
    pub reason: String,
}

/// Where a [`Failure`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The database as a whole: it cannot be opened or read.
    Database,
    /// One event, by sequence number, with its id when it could be read.
    Event { seq: u64, id: Option<String> },
    /// A checkpoint stored in the database, by its size.
    Checkpoint { size: u64 },
    /// A witness's cosignature stored in the database.
    Cosignature { size: u64, witness: String },
    /// The tree state the gateway continues appending from.
    TreeState,
    /// A published checkpoint file (the reason names it).
    Published { file: PathBuf },
}

impl Failure {
    fn new(at: Location, reason: impl Into<String>) -> Failure {
        Failure {
            at,
            reason: reason.into(),
        }
    }

    fn database(reason: impl Into<String>) -> Failure {
        Failure::new(Location::Database, reason)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Location::Database | Location::Published { .. } => write!(f, "{}", self.reason),
            Location::Event { seq, id: Some(id) } => {
                write!(f, "event {seq} (id {id}): {}", self.reason)
            }
            Location::Event { seq, id: None } => write!(f, "event {seq}: {}", self.reason),
            Location::Checkpoint { size } => {
                write!(f, "stored checkpoint at size {size}: {}", self.reason)
            }
            Location::Cosignature { size, witness } => write!(
                f,
                "cosignature by {witness} of the checkpoint at size {size}: {}",
                self.reason
            ),
            Location::TreeState => write!(f, "stored tree state: {}", self.reason),
        }
    }
}

impl std::error::Error for Failure {}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    /// The root of the tree over all events.
    pub root: Hash,
    /// The origin line of the log's checkpoints, if any checkpoint was found.
    pub origin: Option<String>,
    /// The `time` of the first and the last event.
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    /// `session.start` events.
    pub sessions: u64,
    /// Sessions without a `session.end` at the end of the log (the gateway is running, or
    /// stopped without recording its stop).
    pub sessions_open: u64,
    /// Sessions left open by a run that ended without `gateway.stop` (a crash).
    pub sessions_abandoned: u64,
    /// Checkpoints stored in the database (all of them verified).
    pub stored_checkpoints: u64,
    /// Published checkpoint files of this log (all of them verified).
    pub published_checkpoints: u64,
    /// Published files of other logs, skipped.
    pub other_logs_skipped: u64,
    /// Checkpoints (stored or published, counted once per size) with at least one valid
    /// cosignature by a witness key that was given.
    pub cosigned_checkpoints: u64,
    pub cosignatures_verified: u64,
    /// Cosignatures by witnesses whose key was not given: present, but not checked.
    pub cosignatures_unchecked: u64,
    /// The largest checkpoint size that matched the events (0 if none).
    pub signed_size: u64,
    /// Recorded chunks found beside their events with bytes that hash to their ids.
    pub chunks_checked: u64,
    /// Chunks named by events and deliberately deleted: named by a `recording.removed`
    /// event.
    pub chunks_removed: u64,
    /// The sequence numbers of the `recording.removed` events that accounted for them.
    pub removal_events: Vec<u64>,
    /// Sealed segments whose files match their `recording.sealed` events.
    pub segments: u64,
    /// Of those, decrypted with the identity given (their chunks are in `chunks_checked`).
    pub segments_opened: u64,
    /// Chunks named by events and covered by a sealed segment.
    pub chunks_sealed: u64,
    /// Requests of an encrypted run whose recordings no segment holds: the unsealed tail
    /// (lost in a crash, or not sealed yet).
    pub unsealed_requests: u64,
    /// Things worth a look that are not evidence of tampering.
    pub warnings: Vec<String>,
    /// Every checkpoint that matched the events, by size: what evidence reports cite as
    /// the checkpoint a period was verified against.
    pub checkpoints: Vec<VerifiedCheckpoint>,
}

/// A checkpoint that matched the events, stored or published or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// Stored in the gateway's database.
    pub stored: bool,
    /// Found in a published directory.
    pub published: bool,
    /// Valid cosignatures by the witness keys given: `(witness name, Unix time it cosigned)`.
    pub cosignatures: Vec<(String, u64)>,
}

impl Summary {
    /// Events after the newest checkpoint that matched: only the database vouches for them.
    pub fn unsigned_tail(&self) -> u64 {
        self.events - self.signed_size
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events; {} sessions ({} open at the end",
            self.events, self.sessions, self.sessions_open
        )?;
        if self.sessions_abandoned > 0 {
            write!(f, ", {} left open by a crash", self.sessions_abandoned)?;
        }
        write!(
            f,
            "); checkpoints: {} stored, {} published, {} cosigned",
            self.stored_checkpoints, self.published_checkpoints, self.cosigned_checkpoints
        )?;
        if self.unsigned_tail() > 0 {
            write!(
                f,
                " ({} newest events not yet signed)",
                self.unsigned_tail()
            )?;
        }
        let recordings = self.chunks_checked + self.chunks_removed + self.chunks_sealed;
        if recordings > 0 || self.segments > 0 || self.unsealed_requests > 0 {
            write!(f, "; recordings: {} chunks checked", self.chunks_checked)?;
            if self.segments > 0 || self.chunks_sealed > 0 {
                write!(
                    f,
                    ", {} sealed in {} segments ({})",
                    self.chunks_sealed,
                    self.segments,
                    if self.segments_opened == self.segments {
                        "decrypted and checked".to_string()
                    } else if self.segments_opened == 0 {
                        "files checked; their chunks need --identity".to_string()
                    } else {
                        format!("{} decrypted", self.segments_opened)
                    }
                )?;
            }
            if self.unsealed_requests > 0 {
                write!(f, ", {} requests unsealed", self.unsealed_requests)?;
            }
            if self.chunks_removed > 0 {
                write!(
                    f,
                    ", {} removed by retention (event{} {})",
                    self.chunks_removed,
                    if self.removal_events.len() == 1 {
                        ""
                    } else {
                        "s"
                    },
                    list_seqs(&self.removal_events)
                )?;
            }
        }
        match (&self.first_time, &self.last_time) {
            (Some(first), Some(last)) => write!(f, "; from {first} to {last}")?,
            _ => write!(f, "; no events")?,
        }
        write!(f, "; root {}", B64.encode(self.root))
    }
}

/// The origin each log in `data_dirs` states (its newest stored checkpoint's; `None` when it
/// has none yet or cannot be read, which its verification then reports), refusing logs that
/// cannot be told apart: the same directory given twice, or two logs naming the same origin.
/// Replicas of a gateway each keep a log and publish to the same witnesses; two that share a
/// `gateway.id` (or `audit.origin`) sign checkpoints a witness takes for one log's, so its
/// cosignatures vouch for neither and it refuses one replica's as a fork of the other's.
pub fn distinct_origins(data_dirs: &[PathBuf]) -> Result<Vec<Option<String>>, String> {
    let mut seen: Vec<(PathBuf, &Path, Option<String>)> = Vec::new();
    for dir in data_dirs {
        // Unresolvable paths are compared as given: verification reports what is missing.
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if let Some((_, first, _)) = seen.iter().find(|(c, _, _)| *c == canonical) {
            return Err(format!(
                "{} and {} are the same data directory: give each replica's log once",
                first.display(),
                dir.display()
            ));
        }
        let origin = AuditReader::open(dir)
            .ok()
            .and_then(|reader| reader.stated_origin().ok().flatten());
        if let Some(origin) = &origin
            && let Some((_, first, _)) = seen.iter().find(|(_, _, o)| o.as_ref() == Some(origin))
        {
            return Err(format!(
                "the logs in {} and {} both name themselves {origin:?}: two replicas with the \
                 same gateway.id (or audit.origin) write checkpoints that witnesses cannot tell \
                 apart. Give each replica its own gateway.id (and data directory)",
                first.display(),
                dir.display()
            ));
        }
        seen.push((canonical, dir, origin));
    }
    Ok(seen.into_iter().map(|(_, _, origin)| origin).collect())
}

/// Verifies the log in `data_dir` against the gateway's checkpoint key `key`.
///
/// `published` are directories of published checkpoints (every `*.checkpoint` file in them:
/// the gateway's checkpoint directory, a witness's state directory);
/// `witnesses` are the cosigner keys whose cosignatures are checked. `progress` is called
/// now and then with `(events checked, events in the log)`.
///
/// Returns the first problem found, in log order where there is one.
pub fn verify(
    data_dir: &Path,
    key: &Verifier,
    published: &[PathBuf],
    witnesses: &[CosignatureVerifier],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Failure> {
    verify_with_identities(data_dir, key, published, witnesses, None, progress)
}

/// [`verify`], and with an auditor's `identities` (age keys), every sealed segment is
/// decrypted and each chunk the events name is checked inside it.
pub fn verify_with_identities(
    data_dir: &Path,
    key: &Verifier,
    published: &[PathBuf],
    witnesses: &[CosignatureVerifier],
    identities: Option<&Identities>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Failure> {
    let dirs_given = !published.is_empty();
    let published = read_published(published)?;
    let reader = AuditReader::open(data_dir).map_err(|e| Failure::database(e.to_string()))?;
    let (tx, rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("portcullis-verify-reader".into())
        .spawn(move || read_log(&reader, &tx, &recycle_rx))
        .map_err(|e| Failure::database(format!("cannot start the reader thread: {e}")))?;
    let recordings = (data_dir, identities);
    let result = check(
        rx, recycle_tx, key, published, witnesses, recordings, progress,
    );
    // `check` dropped the receiving end, so a reader still sending stops at its next chunk.
    if handle.join().is_err() {
        return Err(Failure::database("the reader thread panicked"));
    }
    let summary = result?;
    // Directories were given to check the log against what was published, and none holds a
    // checkpoint of this log: the check did not happen, which must not read as a pass.
    if dirs_given && summary.events > 0 && summary.published_checkpoints == 0 {
        return Err(Failure::database(
            "no checkpoint of this log was found in the published directories given, so the \
             log could not be checked against them (wrong directory, or nothing published yet)",
        ));
    }
    Ok(summary)
}

/// The largest published checkpoint file read: a note is well under a kilobyte, so anything
/// this large is not one, and is not read into memory.
const MAX_PUBLISHED_FILE: u64 = 64 * 1024;

/// Reads every `*.checkpoint` file of the published directories. Done before the log's
/// snapshot is taken: the gateway commits a checkpoint before it publishes it, so every file
/// read here is covered by the snapshot, and a gateway writing meanwhile cannot make a
/// published checkpoint look larger than the log.
fn read_published(dirs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, Failure> {
    let mut files = Vec::new();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            published_failure(
                dir,
                format!("cannot read the directory {}: {e}", dir.display()),
            )
        })?;
        let mut found = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| {
                    published_failure(
                        dir,
                        format!("cannot read the directory {}: {e}", dir.display()),
                    )
                })?
                .path();
            // The gateway's sink and a witness both keep `*.checkpoint` files; a
            // witness's temporary `*.checkpoint.tmp` is not a finished note and is left
            // alone.
            let wanted = path.extension().is_some_and(|e| e == "checkpoint");
            if wanted && path.is_file() {
                found.push(path);
            }
        }
        // Sorted, so that the first failure reported does not depend on the file system.
        found.sort();
        files.extend(found);
    }
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        let read_err = |e: String| {
            published_failure(
                &file,
                format!(
                    "cannot read the checkpoint published at {}: {e}",
                    file.display()
                ),
            )
        };
        let size = std::fs::metadata(&file)
            .map_err(|e| read_err(e.to_string()))?
            .len();
        if size > MAX_PUBLISHED_FILE {
            return Err(read_err(format!(
                "{size} bytes is far too large for a checkpoint"
            )));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| read_err(e.to_string()))?;
        texts.push((file, text));
    }
    Ok(texts)
}

// ---------------------------------------------------------------------------------------
// The reader thread
// ---------------------------------------------------------------------------------------

/// A column value, located in a chunk's byte buffer.
#[derive(Debug, Clone, Copy)]
enum Col {
    Null,
    Bytes {
        start: usize,
        end: usize,
    },
    /// An integer or a real where text or a blob belongs: the schema was tampered with.
    Number,
}

/// The columns read per event, in `EVENTS_SQL` order after `seq`.
const ID: usize = 0;
const TIME: usize = 1;
const TYPE: usize = 2;
const SESSION: usize = 3;
const SUBJECT: usize = 4;
const TARGET: usize = 5;
const OUTCOME: usize = 6;
const BODY: usize = 7;
const LEAF: usize = 8;
const COLUMNS: usize = 9;
const COLUMN_NAMES: [&str; COLUMNS] = [
    "id",
    "time",
    "type",
    "session",
    "subject",
    "target",
    "outcome",
    "body",
    "leaf_hash",
];

const EVENTS_SQL: &str = "SELECT seq, id, time, type, session, subject, target, outcome, \
    body, leaf_hash FROM events ORDER BY seq";

/// The stored chunks, in the order of the events that stored them (`chunks_seq` index).
const CHUNKS_SQL: &str = "SELECT seq, id, bytes FROM chunks ORDER BY seq";

/// A chunk stored beside an event: its id as stored, and whether its bytes hash to it
/// (hashed on the reader thread; the bytes themselves are not kept).
struct StoredChunk {
    id: Box<str>,
    intact: bool,
}

struct RawRow {
    /// `None` if the stored value is not an integer.
    seq: Option<i64>,
    cols: [Col; COLUMNS],
    /// SHA-256(0x00 || body), computed on the reader thread (the hashing is a large share
    /// of the work, and the other thread has the parsing to do).
    leaf: Hash,
    /// The chunks stored with this event's sequence number.
    chunks: Vec<StoredChunk>,
}

#[derive(Default)]
struct Chunk {
    rows: Vec<RawRow>,
    buf: Vec<u8>,
}

impl Chunk {
    fn bytes(&self, col: Col) -> Option<&[u8]> {
        match col {
            Col::Bytes { start, end } => Some(&self.buf[start..end]),
            Col::Null | Col::Number => None,
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        use rusqlite::types::ValueRef;
        let seq = match row.get_ref(0)? {
            ValueRef::Integer(seq) => Some(seq),
            _ => None,
        };
        let mut cols = [Col::Null; COLUMNS];
        for (i, col) in cols.iter_mut().enumerate() {
            *col = match row.get_ref(i + 1)? {
                ValueRef::Null => Col::Null,
                ValueRef::Integer(_) | ValueRef::Real(_) => Col::Number,
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                    let start = self.buf.len();
                    self.buf.extend_from_slice(bytes);
                    Col::Bytes {
                        start,
                        end: self.buf.len(),
                    }
                }
            };
        }
        let leaf = merkle::leaf_hash(self.bytes(cols[BODY]).unwrap_or_default());
        self.rows.push(RawRow {
            seq,
            cols,
            leaf,
            chunks: Vec::new(),
        });
        Ok(())
    }
}

/// What the reader thread sends.
enum FromReader {
    Header(Box<Header>),
    Rows(Chunk),
    /// Every event was sent; `orphan_chunks` stored chunks carry a sequence number no event
    /// has.
    End {
        orphan_chunks: u64,
    },
    /// Reading failed; nothing more follows.
    Failed(String),
}

/// Everything read before the events, in the same snapshot.
struct Header {
    path: PathBuf,
    /// `MAX(seq)`: the event count if the log is intact (for progress only).
    total: u64,
    checkpoints: Vec<RawCheckpoint>,
    cosignatures: Vec<RawCosignature>,
    tree_state: Option<(i64, Vec<u8>)>,
}

fn read_log(
    reader: &AuditReader,
    tx: &mpsc::SyncSender<FromReader>,
    recycle: &mpsc::Receiver<Chunk>,
) {
    let result = (|| -> Result<u64, String> {
        reader.begin_snapshot().map_err(|e| e.to_string())?;
        let header = Header {
            path: reader.path().to_path_buf(),
            total: reader.count().map_err(|e| e.to_string())?,
            checkpoints: reader.raw_checkpoints().map_err(|e| e.to_string())?,
            cosignatures: reader.raw_cosignatures().map_err(|e| e.to_string())?,
            tree_state: reader.raw_tree_state().map_err(|e| e.to_string())?,
        };
        if tx.send(FromReader::Header(Box::new(header))).is_err() {
            return Ok(0); // the checker stopped early
        }
        let read_err = |e: rusqlite::Error| {
            format!("cannot read the events of {}: {e}", reader.path().display())
        };
        let mut stmt = reader.connection().prepare(EVENTS_SQL).map_err(read_err)?;
        let mut rows = stmt.query([]).map_err(read_err)?;
        // A log from before schema version 4 has no chunks (and no events that name any).
        let mut chunks_stmt = if reader.schema_version() >= 4 {
            Some(reader.connection().prepare(CHUNKS_SQL).map_err(read_err)?)
        } else {
            None
        };
        let mut stored = match &mut chunks_stmt {
            Some(stmt) => Some(StoredChunks::new(stmt).map_err(read_err)?),
            None => None,
        };
        let mut chunk = Chunk::default();
        while let Some(row) = rows.next().map_err(read_err)? {
            chunk.push(row).map_err(read_err)?;
            if let (Some(stored), Some(last)) = (&mut stored, chunk.rows.last_mut())
                && let Some(seq) = last.seq
            {
                last.chunks = stored.take_up_to(seq).map_err(read_err)?;
            }
            if chunk.rows.len() == CHUNK_ROWS {
                let mut next = recycle.try_recv().unwrap_or_default();
                next.rows.clear();
                next.buf.clear();
                if tx
                    .send(FromReader::Rows(std::mem::replace(&mut chunk, next)))
                    .is_err()
                {
                    return Ok(0);
                }
            }
        }
        if !chunk.rows.is_empty() && tx.send(FromReader::Rows(chunk)).is_err() {
            return Ok(0);
        }
        let orphans = match &mut stored {
            Some(stored) => stored.rest().map_err(read_err)?,
            None => 0,
        };
        drop(stored);
        drop(chunks_stmt);
        // Ending the snapshot cannot change what was read; an error here is not a finding.
        let _ = reader.end_snapshot();
        Ok(orphans)
    })();
    let _ = tx.send(match result {
        Ok(orphan_chunks) => FromReader::End { orphan_chunks },
        Err(message) => FromReader::Failed(message),
    });
}

/// The `chunks` table walked in sequence order beside the events: a merge join, so each
/// chunk is read once and hashed as it goes by.
struct StoredChunks<'c> {
    rows: rusqlite::Rows<'c>,
    /// The row read but not yet handed to an event: `(seq, chunk)`, with `None` for a
    /// sequence number that is not an integer.
    next: Option<(Option<i64>, StoredChunk)>,
    /// Chunks passed over: their sequence number is no event's.
    orphans: u64,
}

impl<'c> StoredChunks<'c> {
    fn new(stmt: &'c mut rusqlite::Statement<'_>) -> rusqlite::Result<StoredChunks<'c>> {
        let mut walk = StoredChunks {
            rows: stmt.query([])?,
            next: None,
            orphans: 0,
        };
        walk.advance()?;
        Ok(walk)
    }

    fn advance(&mut self) -> rusqlite::Result<()> {
        use rusqlite::types::ValueRef;
        self.next = match self.rows.next()? {
            None => None,
            Some(row) => {
                let seq = match row.get_ref(0)? {
                    ValueRef::Integer(seq) => Some(seq),
                    _ => None,
                };
                let id: Box<str> = match row.get_ref(1)? {
                    ValueRef::Text(id) => String::from_utf8_lossy(id).into(),
                    _ => "".into(),
                };
                let intact = match row.get_ref(2)? {
                    ValueRef::Blob(bytes) => ChunkId::of(bytes).as_str() == &*id,
                    _ => false,
                };
                Some((seq, StoredChunk { id, intact }))
            }
        };
        Ok(())
    }

    /// The chunks stored with sequence number `seq`; those before it belong to no event.
    fn take_up_to(&mut self, seq: i64) -> rusqlite::Result<Vec<StoredChunk>> {
        let mut found = Vec::new();
        while let Some((at, _)) = &self.next {
            match at {
                Some(at) if *at == seq => {}
                Some(at) if *at > seq => break,
                _ => self.orphans += 1,
            }
            let (at, chunk) = self.next.take().expect("peeked");
            if at == Some(seq) {
                found.push(chunk);
            }
            self.advance()?;
        }
        Ok(found)
    }

    /// Counts what is left: chunks beyond the last event.
    fn rest(&mut self) -> rusqlite::Result<u64> {
        while self.next.is_some() {
            self.orphans += 1;
            self.advance()?;
        }
        Ok(self.orphans)
    }
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// A string field of an event body, borrowed when it has no escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The fields of an event body the checks need; the others are skipped unparsed.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    time: Text<'a>,
    /// Required (an event names its gateway) but not compared with anything.
    #[serde(borrow)]
    #[allow(dead_code)]
    gateway: Text<'a>,
    #[serde(borrow, rename = "type")]
    event_type: Text<'a>,
    #[serde(borrow)]
    outcome: Text<'a>,
    #[serde(borrow, default)]
    session: Option<Text<'a>>,
    #[serde(borrow, default)]
    target: Option<Text<'a>>,
    #[serde(borrow, default)]
    identity: Option<IdentityFields<'a>>,
    /// A request's recorded chunks.
    #[serde(borrow, default)]
    recorded: Option<RecordedFields<'a>>,
    /// `recording.removed`: what retention deleted.
    #[serde(borrow, default)]
    removed: Option<RemovedFields<'a>>,
    /// `recording.sealed`: the segment it vouches for.
    #[serde(default)]
    segment: Option<SegmentRecord>,
}

#[derive(Deserialize)]
struct RecordedFields<'a> {
    #[serde(borrow, default)]
    request: Option<Text<'a>>,
    #[serde(borrow, default)]
    answer: Option<Text<'a>>,
    /// The chunks were meant for an encrypted segment, not the table beside the event.
    #[serde(default)]
    sealed: bool,
}

#[derive(Deserialize)]
struct RemovedFields<'a> {
    #[serde(borrow, default)]
    chunks: Vec<Text<'a>>,
    #[serde(borrow, default)]
    segments: Vec<Text<'a>>,
}

#[derive(Deserialize)]
struct IdentityFields<'a> {
    #[serde(borrow)]
    subject: Text<'a>,
}

/// A stored checkpoint, with what its signature check found.
struct StoredCp {
    row: RawCheckpoint,
    /// The signed text and the checkpoint in it, or why the note does not verify.
    opened: Result<(String, Checkpoint), String>,
    cosignatures: Vec<RawCosignature>,
}

/// A published checkpoint file of this log, signature already verified.
struct PublishedCp {
    file: PathBuf,
    checkpoint: Checkpoint,
    /// The given witness keys' valid cosignatures in the file: `(name, Unix time)`.
    cosigned: Vec<(String, u64)>,
}

/// A size at which the recomputed tree must match a checkpoint.
#[derive(Clone, Copy)]
enum Target {
    Stored(usize),
    Published(usize),
}

/// Where a session stands.
enum SessionState {
    Open {
        start: u64,
    },
    Ended {
        start: u64,
        at: u64,
    },
    /// Open when the gateway started again: the run that opened it ended without
    /// `gateway.stop`.
    Abandoned {
        start: u64,
        restart: u64,
    },
}

impl SessionState {
    fn start(&self) -> u64 {
        match self {
            SessionState::Open { start }
            | SessionState::Ended { start, .. }
            | SessionState::Abandoned { start, .. } => *start,
        }
    }
}

struct Checker<'a> {
    key: &'a Verifier,
    witnesses: &'a [CosignatureVerifier],
    origin: Option<String>,
    frontier: Frontier,
    next_seq: u64,
    /// `(high, low, seq)` of every id in the canonical UUID form (what the gateway writes),
    /// sorted and searched for duplicates only when needed: a hash set of a million ids
    /// cost more than all the JSON parsing, as each insert missed the cache.
    uuids: Vec<[u64; 3]>,
    /// Any other ids, with their sequence numbers; rare, so checked as they come.
    other_ids: HashMap<Box<str>, u64>,
    sessions: HashMap<Box<str>, SessionState>,
    open_sessions: usize,
    first_time: Option<String>,
    last_time: String,
    stored: Vec<StoredCp>,
    published: Vec<PublishedCp>,
    /// Checks by size, ascending; `next_target` is the first not yet done.
    targets: Vec<(u64, Target)>,
    next_target: usize,
    /// The largest size at which a checkpoint matched: a mismatch later lies after it.
    matched: u64,
    /// `matched` before the checks of the current size began.
    matched_before: u64,
    /// Sizes with a valid cosignature by a given witness.
    cosigned: HashSet<u64>,
    /// Witness names with at least one valid cosignature.
    witnesses_seen: HashSet<String>,
    /// The checkpoints that matched, by size.
    verified: std::collections::BTreeMap<u64, VerifiedCheckpoint>,
    /// Witness names of stored cosignatures that could not be checked (no key given).
    unchecked_witnesses: BTreeSet<String>,
    /// Recorded chunks named by events but not beside them, in event order, until the log
    /// says why (a removal).
    absent: Vec<Absent>,
    /// Where each absent chunk is in `absent`.
    absent_at: HashMap<[u8; 32], usize>,
    /// The current gateway run (from its `gateway.start`): where its absent chunks begin in
    /// `absent`.
    run_absent_from: usize,
    /// Where segment files are, and the auditor's identity that opens them.
    data_dir: PathBuf,
    identities: Option<&'a Identities>,
    /// Seals whose file is missing, until a removal names it: `(seq, event id, file)`.
    missing_segments: Vec<(u64, Box<str>, String)>,
    summary: Summary,
}

/// A chunk an event names that is not stored beside it.
struct Absent {
    chunk: [u8; 32],
    seq: u64,
    event: Box<str>,
    side: &'static str,
    state: AbsentState,
    /// Its event says it was meant for a sealed segment.
    sealed: bool,
    /// A decrypted segment whose range covers it but that does not hold it. Not yet a
    /// failure: ranges may overlap (a request whose event was written just before a seal
    /// has its chunks in the next segment), so another segment may hold it.
    not_in: Option<Box<str>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AbsentState {
    /// Nothing in the log accounts for it (yet).
    Unexplained,
    /// A later `recording.removed` event names it.
    Removed,
    /// A sealed segment holds it.
    Sealed,
    /// Its run encrypted recordings and no segment covers it: the unsealed tail.
    Unsealed,
}

fn check(
    rx: mpsc::Receiver<FromReader>,
    recycle: mpsc::Sender<Chunk>,
    key: &Verifier,
    published: Vec<(PathBuf, String)>,
    witnesses: &[CosignatureVerifier],
    (data_dir, identities): (&Path, Option<&Identities>),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, Failure> {
    let header = match rx.recv() {
        Ok(FromReader::Header(header)) => header,
        Ok(FromReader::Failed(message)) => return Err(Failure::database(message)),
        _ => return Err(Failure::database("the reader thread stopped unexpectedly")),
    };
    let Header {
        path,
        total,
        checkpoints,
        cosignatures,
        tree_state,
    } = *header;
    let mut checker = Checker::new(key, witnesses, checkpoints, total);
    checker.data_dir = data_dir.to_path_buf();
    checker.identities = identities;
    checker.load_published(published)?;
    checker.attach_cosignatures(cosignatures)?;
    checker.plan_targets();
    // A checkpoint of the empty tree is checked before any event.
    checker.check_targets()?;
    progress(0, total);
    loop {
        match rx.recv() {
            Ok(FromReader::Rows(chunk)) => {
                for row in &chunk.rows {
                    if let Err(failure) = checker.event(&chunk, row) {
                        // Any duplicate id found so far is at or before this failure, and
                        // may well explain it: it is the first bad entry.
                        return Err(checker.duplicate_id().unwrap_or(failure));
                    }
                }
                progress(checker.frontier.size(), total.max(checker.frontier.size()));
                // The reader may be gone already; then the chunk is simply dropped.
                let _ = recycle.send(chunk);
            }
            Ok(FromReader::End { orphan_chunks }) => {
                if orphan_chunks > 0 {
                    checker.summary.warnings.push(format!(
                        "{orphan_chunks} stored chunk(s) carry a sequence number no event has \
                         (left by a failed write, or moved away from their event)"
                    ));
                }
                break;
            }
            Ok(FromReader::Failed(message)) => {
                return Err(Failure::new(
                    Location::Event {
                        seq: checker.next_seq,
                        id: None,
                    },
                    format!("unreadable: {message}"),
                ));
            }
            Ok(FromReader::Header(_)) | Err(_) => {
                return Err(Failure::database("the reader thread stopped unexpectedly"));
            }
        }
    }
    drop(rx);
    checker.finish(&path, tree_state)
}

impl<'a> Checker<'a> {
    fn new(
        key: &'a Verifier,
        witnesses: &'a [CosignatureVerifier],
        checkpoints: Vec<RawCheckpoint>,
        total: u64,
    ) -> Checker<'a> {
        let stored: Vec<StoredCp> = checkpoints
            .into_iter()
            .map(|row| {
                let opened = open_note(key, &row.note);
                StoredCp {
                    row,
                    opened,
                    cosignatures: Vec::new(),
                }
            })
            .collect();
        // The log's origin is the one its own signed checkpoints state; a checkpoint with
        // another origin is reported when its turn comes.
        let origin = stored
            .iter()
            .find_map(|cp| cp.opened.as_ref().ok().map(|(_, c)| c.origin.clone()));
        Checker {
            key,
            witnesses,
            origin,
            frontier: Frontier::new(),
            next_seq: 1,
            uuids: Vec::with_capacity(total.min(MAX_RESERVE) as usize),
            other_ids: HashMap::new(),
            sessions: HashMap::new(),
            open_sessions: 0,
            first_time: None,
            last_time: String::new(),
            stored,
            published: Vec::new(),
            targets: Vec::new(),
            next_target: 0,
            matched: 0,
            matched_before: 0,
            cosigned: HashSet::new(),
            verified: std::collections::BTreeMap::new(),
            witnesses_seen: HashSet::new(),
            unchecked_witnesses: BTreeSet::new(),
            absent: Vec::new(),
            absent_at: HashMap::new(),
            run_absent_from: 0,
            data_dir: PathBuf::new(),
            identities: None,
            missing_segments: Vec::new(),
            summary: Summary {
                events: 0,
                root: merkle::empty_root(),
                origin: None,
                first_time: None,
                last_time: None,
                sessions: 0,
                sessions_open: 0,
                sessions_abandoned: 0,
                stored_checkpoints: 0,
                published_checkpoints: 0,
                other_logs_skipped: 0,
                cosigned_checkpoints: 0,
                cosignatures_verified: 0,
                cosignatures_unchecked: 0,
                signed_size: 0,
                chunks_checked: 0,
                chunks_removed: 0,
                removal_events: Vec::new(),
                segments: 0,
                segments_opened: 0,
                chunks_sealed: 0,
                unsealed_requests: 0,
                warnings: Vec::new(),
                checkpoints: Vec::new(),
            },
        }
    }

    /// Reads every checkpoint file in the published directories and keeps this log's.
    ///
    /// These are checked before the events: they are the auditor's evidence, not entries of
    /// the log, and an edited one makes every conclusion drawn from it void.
    fn load_published(&mut self, files: Vec<(PathBuf, String)>) -> Result<(), Failure> {
        // Notes that carry no signature by our key are kept for a second pass: whether they
        // belong to this log depends on the origin, which a signed note may be first to tell.
        let mut unsigned = Vec::new();
        for (file, text) in files {
            match self.key.open(&text) {
                Ok(body) => {
                    let checkpoint = Checkpoint::parse(body).map_err(|e| {
                        published_failure(
                            &file,
                            format!(
                                "the checkpoint published at {} is signed by {} but {e}",
                                file.display(),
                                self.key.name
                            ),
                        )
                    })?;
                    let cosigned = self.published_cosignatures(&file, &text)?;
                    if self.origin.is_none() {
                        self.origin = Some(checkpoint.origin.clone());
                    }
                    self.published.push(PublishedCp {
                        file,
                        checkpoint,
                        cosigned,
                    });
                }
                Err(CheckpointError::NotSigned(_)) => unsigned.push((file, text)),
                Err(CheckpointError::BadSignature(_)) => {
                    return Err(published_failure(
                        &file,
                        format!(
                            "the checkpoint published at {} does not verify: the signature by {} \
                             does not match its text, so the file was edited",
                            file.display(),
                            self.key.name
                        ),
                    ));
                }
                Err(e) => {
                    // Not a signed note at all. It is not another log's checkpoint either,
                    // and a checkpoint directory is evidence: refuse rather than guess.
                    return Err(published_failure(
                        &file,
                        format!(
                            "the file published at {} is not a signed checkpoint: {e}",
                            file.display()
                        ),
                    ));
                }
            }
        }
        for (file, text) in unsigned {
            let origin = text.split('\n').next().unwrap_or_default();
            if self.origin.as_deref() == Some(origin) {
                return Err(published_failure(
                    &file,
                    format!(
                        "the checkpoint published at {} names this log ({origin}) but is not \
                         signed by {}: it was forged, or signed with another key",
                        file.display(),
                        self.key.name
                    ),
                ));
            }
            self.summary.other_logs_skipped += 1;
        }
        Ok(())
    }

    /// Checks the given witnesses' cosignatures in a published note (a witness's state
    /// file carries them). Lines by keys not given are ignored: nothing can be said of them.
    fn published_cosignatures(
        &mut self,
        file: &Path,
        note: &str,
    ) -> Result<Vec<(String, u64)>, Failure> {
        let mut cosigned = Vec::new();
        for witness in self.witnesses {
            match witness.verify_note(note) {
                Ok((_, time)) => {
                    cosigned.push((witness.name.clone(), time));
                    self.witnesses_seen.insert(witness.name.clone());
                }
                Err(CheckpointError::NotSigned(_)) => {}
                Err(e) => {
                    return Err(published_failure(
                        file,
                        format!(
                            "the cosignature by {} in the checkpoint published at {} does not \
                             verify ({e}): the file was edited",
                            witness.name,
                            file.display()
                        ),
                    ));
                }
            }
        }
        Ok(cosigned)
    }

    /// The record of the checkpoint of `size`, which matched the events.
    fn verified_at(&mut self, size: u64) -> &mut VerifiedCheckpoint {
        let root = self.frontier.root();
        self.verified
            .entry(size)
            .or_insert_with(|| VerifiedCheckpoint {
                size,
                root,
                stored: false,
                published: false,
                cosignatures: Vec::new(),
            })
    }

    /// Files the stored cosignatures under their checkpoints.
    fn attach_cosignatures(&mut self, rows: Vec<RawCosignature>) -> Result<(), Failure> {
        for row in rows {
            match self.stored.iter_mut().find(|cp| cp.row.size == row.size) {
                Some(cp) => cp.cosignatures.push(row),
                None => {
                    return Err(Failure::new(
                        Location::Cosignature {
                            size: row.size as u64,
                            witness: row.witness.clone(),
                        },
                        "there is no stored checkpoint of that size: the checkpoint it \
                         cosigned was removed",
                    ));
                }
            }
        }
        Ok(())
    }

    fn plan_targets(&mut self) {
        for (i, cp) in self.stored.iter().enumerate() {
            // A negative size cannot be reached; it is reported with the others left at the
            // end, as a size beyond the log.
            self.targets.push((
                u64::try_from(cp.row.size).unwrap_or(u64::MAX),
                Target::Stored(i),
            ));
        }
        for (i, cp) in self.published.iter().enumerate() {
            self.targets
                .push((cp.checkpoint.size, Target::Published(i)));
        }
        // Stable: at equal sizes the stored checkpoint comes first, as the log's own entry.
        self.targets
            .sort_by_key(|(size, target)| (*size, matches!(target, Target::Published(_))));
    }

    /// Runs the checkpoint checks due at the current tree size.
    fn check_targets(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size();
        // Taken before this size's own checks, which may move `matched` to `size`.
        self.matched_before = self.matched;
        while let Some(&(at, target)) = self.targets.get(self.next_target) {
            if at != size {
                break;
            }
            match target {
                Target::Stored(i) => self.check_stored(i)?,
                Target::Published(i) => self.check_published(i)?,
            }
            self.next_target += 1;
        }
        Ok(())
    }

    /// Where a mismatch at `size` must be: after the last smaller size that matched.
    fn suspects(&self, size: u64) -> String {
        format!("{}..{size}", self.matched_before + 1)
    }

    fn check_stored(&mut self, i: usize) -> Result<(), Failure> {
        let size = self.frontier.size();
        let at = || Location::Checkpoint { size };
        let (body, checkpoint) = self.stored[i]
            .opened
            .clone()
            .map_err(|reason| Failure::new(at(), reason))?;
        if checkpoint.size != size {
            return Err(Failure::new(
                at(),
                format!(
                    "the signed note is of size {}, but it is stored as the checkpoint of size \
                     {size}",
                    checkpoint.size
                ),
            ));
        }
        self.check_origin(&checkpoint.origin, at())?;
        let root = self.frontier.root();
        if checkpoint.root != root {
            return Err(Failure::new(
                at(),
                format!(
                    "the events do not produce the root it signs (events 1..{size} give {}, the \
                     checkpoint signs {}): an event in {} was changed, removed, inserted or \
                     reordered after it was signed",
                    B64.encode(root),
                    B64.encode(checkpoint.root),
                    self.suspects(size)
                ),
            ));
        }
        // Each checkpoint equals the tree recomputed from the events, so any two of them are
        // consistent (the older tree is a prefix of the newer) by construction: no
        // consistency proof between them would add anything. What can still be wrong is the
        // tree edge stored with it, from which the gateway computes the consistency proofs
        // it sends to witnesses.
        if self.stored[i].row.frontier != self.frontier.nodes().concat() {
            return Err(Failure::new(
                at(),
                "its stored tree edge does not match the events (consistency proofs made \
                 from it would be wrong): the row was edited",
            ));
        }
        let cosignatures = std::mem::take(&mut self.stored[i].cosignatures);
        for row in &cosignatures {
            self.check_cosignature(size, &body, row)?;
        }
        self.summary.stored_checkpoints += 1;
        self.matched = size;
        self.verified_at(size).stored = true;
        Ok(())
    }

    fn check_cosignature(
        &mut self,
        size: u64,
        body: &str,
        row: &RawCosignature,
    ) -> Result<(), Failure> {
        let Some(witness) = self.witnesses.iter().find(|w| w.name == row.witness) else {
            // Not fatal: an auditor need not hold every witness's key, and an unchecked
            // cosignature adds nothing but cannot hide anything either (the checkpoint it
            // is attached to was checked on its own). Counted and reported.
            self.summary.cosignatures_unchecked += 1;
            self.unchecked_witnesses.insert(row.witness.clone());
            return Ok(());
        };
        let at = || Location::Cosignature {
            size,
            witness: row.witness.clone(),
        };
        let mut line = row.line.clone();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        match witness.verify_lines(body, &line) {
            Ok(time) => {
                self.summary.cosignatures_verified += 1;
                self.cosigned.insert(size);
                self.witnesses_seen.insert(witness.name.clone());
                let name = witness.name.clone();
                self.verified_at(size).cosignatures.push((name, time));
                Ok(())
            }
            Err(CheckpointError::NotSigned(_)) => Err(Failure::new(
                at(),
                format!(
                    "the stored line is not a cosignature by the key given for {}",
                    witness.name
                ),
            )),
            Err(e) => Err(Failure::new(
                at(),
                format!("it does not verify ({e}): the line or the checkpoint was edited"),
            )),
        }
    }

    fn check_published(&mut self, i: usize) -> Result<(), Failure> {
        let size = self.frontier.size();
        let cp = &self.published[i];
        let file = cp.file.clone();
        let origin = cp.checkpoint.origin.clone();
        let claimed = cp.checkpoint.root;
        let cosigned = cp.cosigned.clone();
        self.check_origin(&origin, Location::Published { file: file.clone() })
            .map_err(|f| {
                published_failure(
                    &file,
                    format!(
                        "the checkpoint published at {}: {}",
                        file.display(),
                        f.reason
                    ),
                )
            })?;
        let root = self.frontier.root();
        if claimed != root {
            return Err(published_failure(
                &file,
                format!(
                    "the log does not match the checkpoint published at {} (events 1..{size} \
                     give root {}, it says {}): an event in {} was changed, removed, inserted \
                     or reordered after it was published{}",
                    file.display(),
                    B64.encode(root),
                    B64.encode(claimed),
                    self.suspects(size),
                    if self.matched == size {
                        // Two validly signed checkpoints of one size with different roots.
                        "; the log's own checkpoint of this size matches the rewritten events, \
                         so they were signed again with the log's key: treat the key as \
                         compromised"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if !cosigned.is_empty() {
            self.cosigned.insert(size);
        }
        self.summary.published_checkpoints += 1;
        self.matched = self.matched.max(size);
        let seen = self.verified_at(size);
        seen.published = true;
        for cosignature in cosigned {
            if !seen.cosignatures.contains(&cosignature) {
                seen.cosignatures.push(cosignature);
            }
        }
        Ok(())
    }

    fn check_origin(&mut self, origin: &str, at: Location) -> Result<(), Failure> {
        match &self.origin {
            Some(ours) if ours != origin => Err(Failure::new(
                at,
                format!(
                    "its origin {origin:?} differs from this log's {ours:?}: checkpoints of \
                     another log were mixed in"
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.origin = Some(origin.to_string());
                Ok(())
            }
        }
    }

    /// Checks one event and adds it to the tree.
    fn event(&mut self, chunk: &Chunk, row: &RawRow) -> Result<(), Failure> {
        let seq = self.next_seq;
        let column_id = chunk
            .bytes(row.cols[ID])
            .and_then(|b| std::str::from_utf8(b).ok());
        let fail = |reason: String, id: Option<&str>| {
            Failure::new(
                Location::Event {
                    seq,
                    id: id.map(str::to_string),
                },
                reason,
            )
        };
        match row.seq {
            Some(found) if found as u64 == seq && found > 0 => {}
            Some(found) if found > seq as i64 => {
                return Err(fail(
                    format!(
                        "missing: the log jumps from event {} to event {found}, so {} deleted",
                        seq - 1,
                        if found as u64 == seq + 1 {
                            "this event was".to_string()
                        } else {
                            format!("events {seq}..{} were", found - 1)
                        }
                    ),
                    None,
                ));
            }
            Some(found) => {
                return Err(fail(
                    format!("the row numbered {found} is out of order (expected {seq})"),
                    column_id,
                ));
            }
            None => {
                return Err(fail(
                    "its sequence number is not an integer".into(),
                    column_id,
                ));
            }
        }
        for (i, col) in row.cols.iter().enumerate() {
            if matches!(col, Col::Number) {
                return Err(fail(
                    format!(
                        "the column {} holds a number: the table was altered",
                        COLUMN_NAMES[i]
                    ),
                    column_id,
                ));
            }
        }
        let Some(body) = chunk.bytes(row.cols[BODY]) else {
            return Err(fail("it has no body".into(), column_id));
        };
        let stored_leaf = chunk.bytes(row.cols[LEAF]);
        if stored_leaf != Some(&row.leaf[..]) {
            return Err(fail(
                "its body does not hash to its stored leaf hash: the body (or the hash) was \
                 changed after the event was written"
                    .into(),
                column_id,
            ));
        }
        let fields: Fields<'_> = serde_json::from_slice(body).map_err(|e| {
            fail(
                format!("its body is not a valid audit event: {e}"),
                column_id,
            )
        })?;
        let Fields {
            id,
            time,
            event_type,
            outcome,
            session,
            target,
            identity,
            recorded,
            removed,
            segment,
            ..
        } = fields;
        let id: &str = &id.0;
        let fail = |reason: String| fail(reason, Some(id));
        let event_type = EventType::deserialize(event_type.0.as_ref().into_deserializer())
            .map_err(|_: serde::de::value::Error| {
                fail(format!("unknown event type {:?}", event_type.0))
            })
            .map(|t| (t, event_type.0))?;
        Outcome::deserialize(outcome.0.as_ref().into_deserializer()).map_err(
            |_: serde::de::value::Error| fail(format!("unknown outcome {:?}", outcome.0)),
        )?;
        // The indexed columns are what `audit show` and searches go by; they are not hashed,
        // so only this comparison notices if one was changed.
        let columns: [(usize, Option<&str>); 7] = [
            (ID, Some(id)),
            (TIME, Some(&time.0)),
            (TYPE, Some(&event_type.1)),
            (OUTCOME, Some(&outcome.0)),
            (SESSION, session.as_ref().map(|s| s.0.as_ref())),
            (SUBJECT, identity.as_ref().map(|i| i.subject.0.as_ref())),
            (TARGET, target.as_ref().map(|t| t.0.as_ref())),
        ];
        for (col, in_body) in columns {
            let stored = chunk.bytes(row.cols[col]);
            if stored != in_body.map(str::as_bytes) {
                return Err(fail(format!(
                    "the indexed column {} says {} but the body says {}",
                    COLUMN_NAMES[col],
                    describe(stored.map(String::from_utf8_lossy).as_deref()),
                    describe(in_body),
                )));
            }
        }
        match canonical_uuid(id) {
            Some(uuid) => self.uuids.push([(uuid >> 64) as u64, uuid as u64, seq]),
            None => {
                if let Some(first) = self.other_ids.insert(id.into(), seq) {
                    return Err(fail(duplicate_reason(first)));
                }
            }
        }
        self.session_rules(seq, event_type.0, session.as_ref().map(|s| s.0.as_ref()))
            .map_err(fail)?;
        if let Some(recorded) = &recorded {
            self.recorded_chunks(seq, id, recorded, &row.chunks)
                .map_err(fail)?;
        }
        if event_type.0 == EventType::GatewayStart {
            self.end_run();
        }
        if let Some(segment) = &segment {
            self.sealed(seq, id, segment)
                .map_err(|reason| match reason {
                    Ok(at_request) => at_request,
                    Err(at_seal) => fail(at_seal),
                })?;
        }
        if let Some(removed) = &removed {
            self.removal(seq, removed);
        }
        if self.first_time.is_none() {
            self.first_time = Some(time.0.to_string());
        }
        self.last_time.clear();
        self.last_time.push_str(&time.0);

        self.frontier.append(row.leaf);
        self.next_seq += 1;
        self.check_targets()
    }

    /// Sessions open once, close once, and are all closed when the gateway stops.
    fn session_rules(
        &mut self,
        seq: u64,
        event_type: EventType,
        session: Option<&str>,
    ) -> Result<(), String> {
        match event_type {
            EventType::SessionStart => {
                let session = session.ok_or("a session.start without a session id")?;
                if let Some(state) = self.sessions.get(session) {
                    return Err(format!(
                        "a second session.start for session {session} (the first is event {})",
                        state.start()
                    ));
                }
                self.sessions
                    .insert(session.into(), SessionState::Open { start: seq });
                self.open_sessions += 1;
                self.summary.sessions += 1;
            }
            EventType::SessionEnd => {
                let session = session.ok_or("a session.end without a session id")?;
                match self.sessions.get_mut(session) {
                    Some(state @ SessionState::Open { .. }) => {
                        *state = SessionState::Ended {
                            start: state.start(),
                            at: seq,
                        };
                        self.open_sessions -= 1;
                    }
                    Some(SessionState::Ended { at, .. }) => {
                        return Err(format!(
                            "a second session.end for session {session} (first at event {at})"
                        ));
                    }
                    Some(SessionState::Abandoned { restart, .. }) => {
                        return Err(format!(
                            "a session.end for session {session}, which was left open by a \
                             gateway run that ended without gateway.stop (the gateway started \
                             again at event {restart})"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "a session.end for session {session} without a prior session.start"
                        ));
                    }
                }
            }
            EventType::GatewayStop => {
                if let Some((session, start)) = self.oldest_open() {
                    return Err(format!(
                        "gateway.stop while session {session} (started at event {start}) is \
                         still open: its session.end is missing"
                    ));
                }
            }
            EventType::GatewayStart if self.open_sessions > 0 => {
                let mut open: Vec<(u64, String)> = self
                    .sessions
                    .iter()
                    .filter_map(|(id, state)| match state {
                        SessionState::Open { start } => Some((*start, id.to_string())),
                        _ => None,
                    })
                    .collect();
                open.sort();
                let listed: Vec<String> = open
                    .iter()
                    .take(LIST_LIMIT)
                    .map(|(start, id)| format!("{id} (from event {start})"))
                    .collect();
                let more = open.len().saturating_sub(LIST_LIMIT);
                self.summary.warnings.push(format!(
                    "gateway.start at event {seq}: {} session(s) were still open, so the \
                     previous run ended without gateway.stop (a crash?): {}{}",
                    open.len(),
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ));
                for (start, id) in &open {
                    self.sessions.insert(
                        id.as_str().into(),
                        SessionState::Abandoned {
                            start: *start,
                            restart: seq,
                        },
                    );
                }
                self.summary.sessions_abandoned += open.len() as u64;
                self.open_sessions = 0;
            }
            _ => {}
        }
        Ok(())
    }

    /// The open session that started first, for a deterministic report.
    fn oldest_open(&self) -> Option<(String, u64)> {
        if self.open_sessions == 0 {
            return None;
        }
        self.sessions
            .iter()
            .filter_map(|(id, state)| match state {
                SessionState::Open { start } => Some((*start, id)),
                _ => None,
            })
            .min()
            .map(|(start, id)| (id.to_string(), start))
    }

    /// Checks the chunks an event names against those stored beside it. One that is not
    /// there is kept aside: a later event may account for it.
    fn recorded_chunks(
        &mut self,
        seq: u64,
        event: &str,
        recorded: &RecordedFields<'_>,
        stored: &[StoredChunk],
    ) -> Result<(), String> {
        let sides = [("request", &recorded.request), ("answer", &recorded.answer)];
        for (side, named) in sides {
            let Some(named) = named else { continue };
            let named: &str = &named.0;
            let Some(chunk) = ChunkId::parse(named).ok().and_then(|id| id_bytes(&id)) else {
                return Err(format!(
                    "its recorded {side} names {:?}, which is not a chunk id",
                    named.chars().take(80).collect::<String>()
                ));
            };
            match stored.iter().find(|c| &*c.id == named) {
                Some(c) if c.intact => {
                    self.summary.chunks_checked += 1;
                }
                Some(_) => {
                    return Err(format!(
                        "its recorded {side}, chunk {named}, was altered: the stored bytes no \
                         longer hash to the id the event signs (changed or swapped for another \
                         chunk's)"
                    ));
                }
                None => {
                    self.absent_at.insert(chunk, self.absent.len());
                    self.absent.push(Absent {
                        chunk,
                        seq,
                        event: event.into(),
                        side,
                        state: AbsentState::Unexplained,
                        sealed: recorded.sealed,
                        not_in: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// A `recording.removed` event: the chunks it names are gone by design.
    fn removal(&mut self, seq: u64, removed: &RemovedFields<'_>) {
        let mut any = false;
        for named in &removed.chunks {
            let Some(chunk) = ChunkId::parse(&named.0).ok().and_then(|id| id_bytes(&id)) else {
                continue;
            };
            if let Some(&i) = self.absent_at.get(&chunk)
                && self.absent[i].state != AbsentState::Removed
            {
                if self.absent[i].state == AbsentState::Sealed {
                    self.summary.chunks_sealed -= 1;
                }
                self.absent[i].state = AbsentState::Removed;
                self.summary.chunks_removed += 1;
                any = true;
            }
        }
        for file in &removed.segments {
            let before = self.missing_segments.len();
            self.missing_segments.retain(|(_, _, f)| f != &*file.0);
            any |= self.missing_segments.len() < before;
        }
        if any {
            self.summary.removal_events.push(seq);
        }
    }

    /// A `recording.sealed` event: its file must be what it signs, and the requests in its
    /// range have their chunks in it (checked there when an identity was given).
    ///
    /// Err(Ok(failure)): a request's chunk is not in its segment (the failure is at that
    /// request); Err(Err(reason)): the segment itself is wrong (at the seal).
    fn sealed(
        &mut self,
        seq: u64,
        event: &str,
        seal: &SegmentRecord,
    ) -> Result<(), Result<Failure, String>> {
        let path = crate::recordings::segment_path(&self.data_dir, &seal.file)
            .map_err(|e| Err(format!("its segment: {e}")))?;
        if !path.exists() {
            // Retention may have removed it; a later `recording.removed` says so.
            self.missing_segments
                .push((seq, event.into(), seal.file.clone()));
            self.cover(seal, None);
            return Ok(());
        }
        let opened = match self.identities {
            None => {
                hash_file(&path, seal)
                    .map_err(|why| Err(format!("its segment {}: {why}", seal.file)))?;
                None
            }
            Some(identities) => {
                let bytes = crate::recordings::read_segment(&self.data_dir, seal)
                    .map_err(|why| Err(format!("its segment {}: {why}", seal.file)))?;
                let entries = segment::open(&bytes, identities)
                    .map_err(|e| Err(format!("its segment {} cannot be opened: {e}", seal.file)))?;
                self.summary.segments_opened += 1;
                Some(
                    entries
                        .into_iter()
                        .filter_map(|(seq, chunk)| Some((seq, id_bytes(chunk.id())?)))
                        .collect::<HashSet<(u64, [u8; 32])>>(),
                )
            }
        };
        self.summary.segments += 1;
        match self.cover(seal, opened.as_ref()) {
            Some(missing) => Err(Ok(missing)),
            None => Ok(()),
        }
    }

    /// Marks the absent chunks of the requests in a seal's range as sealed. With the
    /// segment's contents, each must be in it: the first request whose chunk is not fails.
    fn cover(
        &mut self,
        seal: &SegmentRecord,
        contents: Option<&HashSet<(u64, [u8; 32])>>,
    ) -> Option<Failure> {
        let from = self.absent.partition_point(|a| a.seq < seal.first_seq);
        for absent in &mut self.absent[from..] {
            if absent.seq > seal.last_seq {
                break;
            }
            if absent.state != AbsentState::Unexplained {
                continue;
            }
            if !absent.sealed {
                // Meant for the table beside its event: a segment does not explain it.
                continue;
            }
            if let Some(contents) = contents {
                if !contents.contains(&(absent.seq, absent.chunk)) {
                    absent
                        .not_in
                        .get_or_insert_with(|| seal.file.clone().into());
                    continue;
                }
                self.summary.chunks_checked += 1;
            }
            absent.state = AbsentState::Sealed;
            self.summary.chunks_sealed += 1;
        }
        None
    }

    /// The end of a gateway run (a `gateway.start` after it, or the end of the log). Chunks
    /// its events meant for a sealed segment that no seal covered are the unsealed tail a
    /// crash or a failed seal lost; chunks meant for the table stay unexplained.
    fn end_run(&mut self) {
        let mut last = None;
        for absent in &mut self.absent[self.run_absent_from..] {
            // One a decrypted covering segment left out stays unexplained: a failure.
            if absent.state == AbsentState::Unexplained && absent.sealed && absent.not_in.is_none()
            {
                absent.state = AbsentState::Unsealed;
                if last != Some(absent.seq) {
                    self.summary.unsealed_requests += 1;
                    last = Some(absent.seq);
                }
            }
        }
        self.run_absent_from = self.absent.len();
    }

    /// The first chunk nothing in the log accounts for: deleted, or never written.
    fn missing_chunk(&self) -> Option<Failure> {
        let absent = self
            .absent
            .iter()
            .find(|a| a.state == AbsentState::Unexplained)?;
        let reason = match &absent.not_in {
            Some(file) => format!(
                "its recorded {}, chunk {}, is not in the sealed segment {file} that covers it, \
                 nor in any other: it was left out or swapped",
                absent.side,
                hex::encode(absent.chunk)
            ),
            None => format!(
                "its recorded {}, chunk {}, is missing: it is not in the chunks table and no \
                 recording.removed event names it (deleted?)",
                absent.side,
                hex::encode(absent.chunk)
            ),
        };
        Some(Failure::new(
            Location::Event {
                seq: absent.seq,
                id: Some(absent.event.to_string()),
            },
            reason,
        ))
    }

    /// The earliest event whose id an earlier event already has, among those checked.
    fn duplicate_id(&mut self) -> Option<Failure> {
        self.uuids.sort_unstable();
        let mut earliest: Option<(u64, u64, u128)> = None;
        let mut i = 0;
        while i < self.uuids.len() {
            let [high, low, first] = self.uuids[i];
            let mut j = i + 1;
            while j < self.uuids.len() && self.uuids[j][..2] == [high, low] {
                j += 1;
            }
            // Sorted by seq within the group, so the second one is the first duplicate.
            if j > i + 1 {
                let second = self.uuids[i + 1][2];
                if earliest.is_none_or(|(seq, _, _)| second < seq) {
                    earliest = Some((second, first, u128::from(high) << 64 | u128::from(low)));
                }
            }
            i = j;
        }
        let (seq, first, uuid) = earliest?;
        Some(Failure::new(
            Location::Event {
                seq,
                id: Some(uuid::Uuid::from_u128(uuid).hyphenated().to_string()),
            },
            duplicate_reason(first),
        ))
    }

    /// The checks that need the whole log: unique ids, what lies beyond its end, and the
    /// tree state.
    fn finish(
        mut self,
        path: &Path,
        tree_state: Option<(i64, Vec<u8>)>,
    ) -> Result<Summary, Failure> {
        if let Some(duplicate) = self.duplicate_id() {
            return Err(duplicate);
        }
        self.end_run();
        if let Some(missing) = self.missing_chunk() {
            return Err(missing);
        }
        if let Some((seq, id, file)) = self.missing_segments.first() {
            return Err(Failure::new(
                Location::Event {
                    seq: *seq,
                    id: Some(id.to_string()),
                },
                format!(
                    "its segment {file} is missing from {} and no recording.removed event \
                     names it (deleted?)",
                    crate::recordings::segments_dir(&self.data_dir).display()
                ),
            ));
        }
        if self.summary.unsealed_requests > 0 {
            let unsealed: Vec<u64> = self
                .absent
                .iter()
                .filter(|a| a.state == AbsentState::Unsealed)
                .map(|a| a.seq)
                .collect();
            self.summary.warnings.push(format!(
                "unsealed tail: {} requests' recordings are in no sealed segment (lost in a \
                 crash, or not yet sealed): events {}..{}",
                self.summary.unsealed_requests,
                unsealed.first().copied().unwrap_or_default(),
                unsealed.last().copied().unwrap_or_default()
            ));
        }
        let events = self.frontier.size();
        // Checkpoints left over are of sizes the log does not reach.
        let leftover: Vec<(u64, Target)> = self.targets[self.next_target..].to_vec();
        for &(size, target) in &leftover {
            if let Target::Stored(i) = target {
                let at = Location::Checkpoint { size };
                if let Err(reason) = &self.stored[i].opened {
                    return Err(Failure::new(at, reason.clone()));
                }
                return Err(Failure::new(
                    at,
                    format!(
                        "it covers {size} events but the log has {events}: events were removed \
                         from the end of the log"
                    ),
                ));
            }
        }
        // The largest one beyond the log says most about what is missing.
        for &(size, target) in leftover.iter().rev() {
            if let Target::Published(i) = target {
                let file = &self.published[i].file;
                return Err(published_failure(
                    file,
                    format!(
                        "the log has {events} events but a checkpoint published at {} covers \
                         {size}: the log was truncated or rolled back",
                        file.display()
                    ),
                ));
            }
        }
        match tree_state {
            Some((size, nodes))
                if size != events as i64 || nodes != self.frontier.nodes().concat() =>
            {
                let stored_root = crate::store::frontier_from_bytes(size as u64, &nodes)
                    .map(|f| B64.encode(f.root()))
                    .unwrap_or_else(|| "unreadable".into());
                return Err(Failure::new(
                    Location::TreeState,
                    format!(
                        "it says size {size} with root {stored_root}, but the events give \
                         size {events} with root {}: the gateway would continue from a tree \
                         that is not this log's",
                        B64.encode(self.frontier.root())
                    ),
                ));
            }
            Some(_) => {}
            None if events > 0 => self.summary.warnings.push(format!(
                "{} has no stored tree state (a log from before schema version 2?); the \
                 gateway rebuilds it from the events on its next start",
                path.display()
            )),
            None => {}
        }
        if self.summary.cosignatures_unchecked > 0 {
            let names: Vec<&str> = self
                .unchecked_witnesses
                .iter()
                .map(String::as_str)
                .collect();
            self.summary.warnings.push(format!(
                "{} cosignature(s) by witnesses whose keys were not given were not checked \
                 (give --witness-key for: {})",
                self.summary.cosignatures_unchecked,
                names.join(", ")
            ));
        }
        for witness in self.witnesses {
            if !self.witnesses_seen.contains(&witness.name) {
                self.summary.warnings.push(format!(
                    "witness {} cosigned none of the checkpoints found",
                    witness.name
                ));
            }
        }
        // A log nothing signed vouches for proves nothing: whoever wrote the file could have
        // written anything (or deleted the checkpoints along with what they covered).
        if events > 0 && self.matched == 0 {
            return Err(Failure::database(format!(
                "no checkpoint signed by {} covers any of the {events} events: nothing but \
                 the database itself vouches for them (were the checkpoints deleted, or is \
                 this the wrong key?)",
                self.key.name
            )));
        }
        let mut summary = self.summary;
        summary.events = events;
        summary.root = self.frontier.root();
        summary.origin = self.origin;
        summary.first_time = self.first_time;
        summary.last_time = (events > 0).then_some(self.last_time);
        summary.sessions_open = self.open_sessions as u64;
        summary.cosigned_checkpoints = self.cosigned.len() as u64;
        summary.signed_size = self.matched;
        summary.checkpoints = self.verified.into_values().collect();
        Ok(summary)
    }
}

/// Opens a stored note with the log key and parses the checkpoint in it.
fn open_note(key: &Verifier, note: &str) -> Result<(String, Checkpoint), String> {
    let body = key.open(note).map_err(|e| match e {
        CheckpointError::NotSigned(name) => format!(
            "the note carries no signature by {name}: it was signed with another key (forged)"
        ),
        CheckpointError::BadSignature(name) => {
            format!("the signature by {name} does not verify: the note was edited")
        }
        other => format!("{other}"),
    })?;
    let checkpoint =
        Checkpoint::parse(body).map_err(|e| format!("the signed text is not a checkpoint: {e}"))?;
    Ok((body.to_string(), checkpoint))
}

fn published_failure(file: &Path, reason: String) -> Failure {
    Failure::new(
        Location::Published {
            file: file.to_path_buf(),
        },
        reason,
    )
}

/// The id as a number if it is a UUID in the canonical lowercase hyphenated form, which is
/// exactly the string the number formats back to (other spellings of the same UUID are
/// different ids here, as they are in the database).
fn canonical_uuid(id: &str) -> Option<u128> {
    let bytes = id.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u128::from(digit);
    }
    Some(value)
}

fn duplicate_reason(first: u64) -> String {
    format!("its id is already the id of event {first}: an event was duplicated")
}

/// Checks a segment file against its seal without reading it into memory.
fn hash_file(path: &Path, seal: &SegmentRecord) -> Result<(), String> {
    use sha2::Digest as _;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let actual = hex::encode(hasher.finalize());
    if bytes != seal.bytes || actual != seal.sha256 {
        return Err(format!(
            "{} was altered: it holds {bytes} bytes hashing to {actual}, but its seal says {} \
             bytes hashing to {}",
            path.display(),
            seal.bytes,
            seal.sha256
        ));
    }
    Ok(())
}

/// A chunk id as 32 bytes (the key absent chunks are found by).
fn id_bytes(id: &ChunkId) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(id.as_str(), &mut bytes).ok()?;
    Some(bytes)
}

/// Sequence numbers for a message, the first few and how many more.
fn list_seqs(seqs: &[u64]) -> String {
    let mut text: Vec<String> = seqs.iter().take(LIST_LIMIT).map(u64::to_string).collect();
    if seqs.len() > LIST_LIMIT {
        text.push(format!("and {} more", seqs.len() - LIST_LIMIT));
    }
    text.join(", ")
}

/// A column value for a message: quoted, or "nothing" for NULL.
fn describe(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "nothing".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_uuid_spelling_is_a_number() {
        let id = "01a1fe97-c843-7166-9c9c-81e8da30a564";
        let n = canonical_uuid(id).unwrap();
        assert_eq!(uuid::Uuid::from_u128(n).hyphenated().to_string(), id);
        for other in [
            "01A1FE97-C843-7166-9C9C-81E8DA30A564",
            "{01a1fe97-c843-7166-9c9c-81e8da30a564}",
            "01a1fe97c8437166-9c9c-81e8da30a564-",
            "01a1fe97-c843-7166-9c9c-81e8da30a56",
            "urn:uuid:01a1fe97-c843-7166-9c9c-81e8da30a564",
        ] {
            assert_eq!(canonical_uuid(other), None, "{other}");
        }
    }

    #[test]
    fn the_earliest_duplicate_id_is_reported() {
        let key = Verifier {
            name: "k".into(),
            key_id: [0; 4],
            public_key: [0; 32],
        };
        let mut checker = Checker::new(&key, &[], Vec::new(), 0);
        let a = canonical_uuid("00000000-0000-7000-8000-000000000001").unwrap();
        let b = canonical_uuid("00000000-0000-7000-8000-000000000002").unwrap();
        for (uuid, seq) in [(b, 1), (a, 2), (b, 9), (a, 5), (a, 7)] {
            checker.uuids.push([(uuid >> 64) as u64, uuid as u64, seq]);
        }
        let failure = checker.duplicate_id().unwrap();
        assert_eq!(
            failure.at,
            Location::Event {
                seq: 5,
                id: Some("00000000-0000-7000-8000-000000000001".into())
            }
        );
        assert!(
            failure.reason.contains("the id of event 2"),
            "{}",
            failure.reason
        );
        let mut clean = Checker::new(&key, &[], Vec::new(), 0);
        clean.uuids.push([0, 1, 1]);
        clean.uuids.push([0, 2, 2]);
        assert!(clean.duplicate_id().is_none());
    }
}
