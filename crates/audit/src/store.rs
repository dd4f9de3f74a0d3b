//! The SQLite file: where it lives, how connections are opened, and its schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_config::Durability;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior};

use crate::AuditError;
use crate::merkle::{Frontier, Hash};

/// The file name inside the data directory.
pub(crate) const DB_FILE: &str = "audit.db";

/// The schema this build writes and understands.
pub(crate) const SCHEMA_VERSION: u32 = 4;

/// How long a connection waits for a lock held by another connection (a reader opening
/// while the writer checkpoints the WAL, or a second process) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: the events table, its indexes, and the triggers that make it append-only.
///
/// `body` holds the canonical bytes that are hashed; the other columns are copies of event
/// fields kept only so that lookups do not have to parse JSON. `leaf_hash` is stored now so
/// the Merkle tree added later needs no backfill over an existing log.
const SCHEMA_V1: &str = "
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    session TEXT,
    subject TEXT,
    target TEXT,
    outcome TEXT NOT NULL,
    body BLOB NOT NULL,
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32)
) STRICT;
CREATE INDEX events_session ON events(session);
CREATE INDEX events_subject_time ON events(subject, time);

-- Defence in depth: anyone who can write the file can still rewrite it, which is what the
-- signed Merkle checkpoints are for, but no code path (ours or a careless operator's SQL)
-- can change or remove an event by accident.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
-- seq is the Merkle leaf index plus one, so it must have no gaps. This also refuses
-- INSERT OR REPLACE over an existing row, whose implicit delete would not fire the
-- delete trigger.
CREATE TRIGGER events_contiguous_seq BEFORE INSERT ON events
WHEN NEW.seq IS NULL OR NEW.seq <> COALESCE((SELECT MAX(seq) FROM events), 0) + 1
BEGIN SELECT RAISE(ABORT, 'audit sequence numbers must be contiguous'); END;
";

/// Version 2: the Merkle tree's right edge (one subtree root per set bit of the size),
/// updated in the transaction that appends, so an append costs O(log n) and the tree head
/// is known without reading the log. A version 1 log gets it rebuilt from `leaf_hash` on
/// first open.
const SCHEMA_V2: &str = "
CREATE TABLE tree_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    nodes BLOB NOT NULL
) STRICT;
";

/// Version 3: signed checkpoints and the witnesses' cosignatures of them.
///
/// A checkpoint row keeps the signed note as published and the tree's right edge at its
/// size, so a consistency proof from it to any later size needs only the leaves appended
/// since (see `merkle::consistency_proof_from`). Both tables are append-only like `events`.
const SCHEMA_V3: &str = "
-- Nothing looks events up by session or subject yet, and every index is written on every
-- append: they come back with the queries that need them.
DROP INDEX IF EXISTS events_session;
DROP INDEX IF EXISTS events_subject_time;
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    note TEXT NOT NULL,
    frontier BLOB NOT NULL
) STRICT;
CREATE TABLE cosignatures (
    size INTEGER NOT NULL REFERENCES checkpoints(size),
    witness TEXT NOT NULL,
    time TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (size, witness)
) STRICT;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER cosignatures_no_update BEFORE UPDATE ON cosignatures
BEGIN SELECT RAISE(ABORT, 'cosignatures are append-only'); END;
CREATE TRIGGER cosignatures_no_delete BEFORE DELETE ON cosignatures
BEGIN SELECT RAISE(ABORT, 'cosignatures are append-only'); END;
";

/// Version 4: session recordings. `chunks` holds the recorded messages the events name
/// (`recorded.request` / `recorded.answer`), written in the transaction of the event that
/// names them, so no event names a chunk that was never stored and no chunk outlives a
/// refused event. `seq` is that event. Chunks are content-addressed: an update could only
/// make one disagree with its id, so none is allowed; retention deletes them, after an
/// event naming them. They are found by their event (`seq`, then `id`): an index on the
/// random ids would make every append touch pages all over a large tree, while `seq` only
/// grows, so appends stay at the right edge. Sessions are looked up by id now (`portcullis
/// sessions`), hence the index, kept to the events that have a session.
const SCHEMA_V4: &str = "
CREATE TABLE chunks (
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    bytes BLOB NOT NULL
) STRICT;
CREATE INDEX chunks_seq ON chunks(seq);
CREATE TRIGGER chunks_no_update BEFORE UPDATE ON chunks
BEGIN SELECT RAISE(ABORT, 'recorded chunks are content-addressed and never change'); END;
CREATE INDEX events_by_session ON events(session, seq) WHERE session IS NOT NULL;
";

pub(crate) const INSERT_CHECKPOINT: &str =
    "INSERT INTO checkpoints (size, time, note, frontier) VALUES (?1, ?2, ?3, ?4)";

/// A witness may cosign the same checkpoint twice (a retry after a lost answer): keep the
/// first.
pub(crate) const INSERT_COSIGNATURE: &str =
    "INSERT OR IGNORE INTO cosignatures (size, witness, time, line) VALUES (?1, ?2, ?3, ?4)";

pub(crate) const SAVE_TREE: &str = "INSERT INTO tree_state (id, size, nodes) VALUES (1, ?1, ?2) \
    ON CONFLICT(id) DO UPDATE SET size = excluded.size, nodes = excluded.nodes";

/// The tree over the first `size` events: from the stored state when it matches, otherwise
/// rebuilt from the events' leaf hashes (a version 1 log, or a state left behind by a
/// failed write, which never happens inside one transaction but costs nothing to handle).
pub(crate) fn load_frontier(conn: &Connection, size: u64) -> rusqlite::Result<Frontier> {
    // A reader may meet a version 1 file no version 2 writer has opened yet: without the
    // table there is no stored state, and the rebuild below is always correct.
    let stored: Option<(i64, Vec<u8>)> =
        match conn.prepare_cached("SELECT size, nodes FROM tree_state WHERE id = 1") {
            Ok(mut stmt) => stmt
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?,
            Err(_) => None,
        };
    if let Some((stored_size, bytes)) = stored
        && stored_size as u64 == size
        && let Some(frontier) = frontier_from_bytes(size, &bytes)
    {
        return Ok(frontier);
    }
    extend_frontier(conn, &Frontier::new(), size)
}

/// The newest stored checkpoint and the tree's right edge stored with it.
pub(crate) fn latest_checkpoint_with_frontier(
    conn: &Connection,
) -> rusqlite::Result<Option<(crate::StoredCheckpoint, Frontier)>> {
    conn.query_row(
        "SELECT size, time, note, frontier FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        checkpoint_row,
    )
    .optional()
}

/// `frontier` extended with the stored leaf hashes of the events after it, up to `size`. The
/// result is shorter than `size` if the events stop early; callers compare.
pub(crate) fn extend_frontier(
    conn: &Connection,
    frontier: &Frontier,
    size: u64,
) -> rusqlite::Result<Frontier> {
    let mut tree = frontier.clone();
    for leaf in leaf_hashes(conn, frontier.size(), size)? {
        tree.append(leaf);
    }
    Ok(tree)
}

/// The stored leaf hashes of the events `after < seq <= upto`, in order (fewer if the events
/// stop early; callers compare).
pub(crate) fn leaf_hashes(conn: &Connection, after: u64, upto: u64) -> rusqlite::Result<Vec<Hash>> {
    let mut stmt = conn
        .prepare_cached("SELECT leaf_hash FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq")?;
    let mut rows = stmt.query([after as i64, upto as i64])?;
    let mut leaves = Vec::new();
    while let Some(row) = rows.next()? {
        let leaf: Vec<u8> = row.get(0)?;
        leaves.push(leaf.try_into().map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "leaf_hash".into(), rusqlite::types::Type::Blob)
        })?);
    }
    Ok(leaves)
}

/// Reads a `checkpoints` row selected as `size, time, note, frontier`.
pub(crate) fn checkpoint_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(crate::StoredCheckpoint, Frontier)> {
    let size = row.get::<_, i64>(0)? as u64;
    let bytes: Vec<u8> = row.get(3)?;
    let frontier = frontier_from_bytes(size, &bytes).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(3, "frontier".into(), rusqlite::types::Type::Blob)
    })?;
    let checkpoint = crate::StoredCheckpoint {
        size,
        root: frontier.root(),
        time: row.get(1)?,
        note: row.get(2)?,
    };
    Ok((checkpoint, frontier))
}

/// A frontier from its stored form; `None` if the bytes cannot be one of that size.
pub(crate) fn frontier_from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    let nodes = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunk"))
        .collect();
    Frontier::from_parts(size, nodes)
}

/// The stored form of a frontier's nodes.
pub(crate) fn frontier_bytes(frontier: &Frontier) -> Vec<u8> {
    frontier.nodes().concat()
}

pub(crate) const INSERT_CHUNK: &str = "INSERT INTO chunks (id, seq, bytes) VALUES (?1, ?2, ?3)";

pub(crate) const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, id, time, type, session, subject, target, outcome, body, leaf_hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// Creates the data directory if needed, owner-only: the log names who did what.
pub(crate) fn create_data_dir(data_dir: &Path) -> Result<(), AuditError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(data_dir)
        .map_err(|source| AuditError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })
}

/// Opens the write connection: WAL (so readers never block the writer), the synchronous
/// level of the durability mode, and the schema brought up to date. Returns the connection
/// and the next sequence number.
pub(crate) fn open_writer(
    path: &Path,
    durability: Durability,
    max_page_count: Option<u64>,
) -> Result<(Connection, u64), AuditError> {
    let open_err = |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    restrict_permissions(path);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::NoWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    // In WAL mode FULL syncs the WAL on every commit, so a committed event survives a power
    // cut; NORMAL syncs only at checkpoints, so the last commits can be lost, which is the
    // trade the batched mode accepts.
    let synchronous = match durability {
        Durability::Strict => "FULL",
        Durability::Batched => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(open_err)?;
    // Copying the WAL back into the database is left to the checkpointer thread
    // (`spawn_wal_checkpointer`), so the writer, which every strict caller waits on, only
    // ever appends to the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(open_err)?;
    if let Some(pages) = max_page_count {
        set_max_page_count(&conn, pages).map_err(open_err)?;
    }
    migrate(&mut conn, path)?;
    let max: i64 = conn
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
        .map_err(open_err)?;
    Ok((conn, max as u64 + 1))
}

/// How often the checkpointer copies the WAL into the database.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Runs SQLite checkpoints (WAL to database) on a thread and connection of their own until
/// `stop` is set. PASSIVE checkpoints never block the writer; they copy what no reader still
/// needs, and the WAL is reused from its start once all of it is copied. If this thread
/// cannot open the file the writer's connection takes over (autocheckpoint back on), so the
/// WAL cannot grow without bound.
pub(crate) fn spawn_wal_checkpointer(
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("portcullis-audit-wal".into())
        .spawn(move || {
            let conn = match Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::error!(path = %path.display(), %err, "cannot open the audit log for WAL checkpoints");
                    return;
                }
            };
            // Short: a RESTART that cannot have the write lock or outlast the readers at
            // once gives up and is tried again next round, rather than stall the writer
            // behind a long reader such as `audit verify`.
            let _ = conn.busy_timeout(WAL_PATIENCE);
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(WAL_CHECKPOINT_EVERY);
                if let Err(err) = checkpoint_wal(&conn) {
                    tracing::warn!(path = %path.display(), %err, "audit WAL checkpoint failed; will retry");
                }
            }
        })
        .map(|_| ())
}

/// Above this many frames in the WAL (about 16 MiB), a checkpoint also restarts it.
const WAL_RESTART_FRAMES: i64 = 4096;

/// One round of the checkpointer. A PASSIVE checkpoint copies what it can without blocking
/// anyone, but under constant appends it never catches up with the end, and SQLite only
/// reuses the WAL from its start after a complete checkpoint: the file would grow forever.
/// So when the WAL gets long, a RESTART checkpoint follows, which briefly holds off the
/// writer; the PASSIVE pass just before has copied nearly everything, so the pause is short.
fn checkpoint_wal(conn: &Connection) -> rusqlite::Result<()> {
    let (log, copied): (i64, i64) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?;
    if log >= WAL_RESTART_FRAMES || (log > 0 && copied == log) {
        // Normally a RESTART that cannot have the lock at once gives up until next round. On
        // a starved machine it could give up round after round while the WAL grows; past
        // twice the usual length it waits for its turn (holding off the writer briefly).
        let urgent = log >= 2 * WAL_RESTART_FRAMES;
        if urgent {
            conn.busy_timeout(WAL_URGENT_WAIT)?;
        }
        let restarted = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        if urgent {
            conn.busy_timeout(WAL_PATIENCE)?;
        }
        restarted?;
    }
    Ok(())
}

/// How long a routine RESTART waits for the lock before trying again next round.
const WAL_PATIENCE: Duration = Duration::from_millis(10);
/// How long a RESTART of a WAL twice its usual length waits for the lock.
const WAL_URGENT_WAIT: Duration = Duration::from_millis(500);

/// Caps the database size, which yields SQLITE_FULL exactly as a full disk would. Used by
/// tests to exercise the failure path.
pub(crate) fn set_max_page_count(conn: &Connection, pages: u64) -> rusqlite::Result<()> {
    let _now: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })?;
    Ok(())
}

/// SQLite creates files with the process umask; the log should be readable by its owner
/// only. The -wal and -shm files copy the database file's mode when SQLite creates them.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), %err, "cannot restrict audit log permissions");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), AuditError> {
    let open_err = |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    };
    // IMMEDIATE takes the write lock up front, so two gateways started on the same data
    // directory cannot both decide to create the schema.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    )
    .map_err(open_err)?;
    let version = schema_version(&tx, path)?;
    if version > SCHEMA_VERSION {
        return Err(AuditError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(open_err)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2).map_err(open_err)?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3).map_err(open_err)?;
    }
    if version < 4 {
        tx.execute_batch(SCHEMA_V4).map_err(open_err)?;
    }
    if version < SCHEMA_VERSION {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
            [SCHEMA_VERSION.to_string()],
        )
        .map_err(open_err)?;
    }
    tx.commit().map_err(open_err)
}

/// The schema version recorded in `meta`, 0 for a new file.
pub(crate) fn schema_version(conn: &Connection, path: &Path) -> Result<u32, AuditError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    match text {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| AuditError::BadSchemaVersion {
            path: path.to_path_buf(),
            found: text,
        }),
    }
}

pub(crate) fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}
