//! The read side, used by `portcullis audit tail/show`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::AuditError;
use crate::store;

/// One event as a sink reads it: its leaf index (from 0), canonical JSON and leaf hash.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub index: u64,
    pub body: String,
    pub leaf_hash: crate::merkle::Hash,
}

/// What [`AuditReader::sink_page`] read.
#[derive(Debug, Clone, Default)]
pub struct SinkPage {
    pub leaves: Vec<Leaf>,
    /// Checkpoints in the range, by size.
    pub checkpoints: Vec<crate::StoredCheckpoint>,
}

/// What [`AuditReader::search`] looks for; every field given must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// The identity's subject or display name.
    pub identity: Option<String>,
    pub target: Option<String>,
    /// The event type as events write it (`request`, `approval.approved`).
    pub event_type: Option<String>,
    /// The outcome as events write it (`denied`, `upstream_error`).
    pub outcome: Option<String>,
    /// The name of the policy rule that decided.
    pub rule: Option<String>,
    /// RFC 3339 times (UTC, as events write them): events at or after `since`, before `until`.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
}

/// A read-only view of `<data_dir>/audit.db`. It opens the file read-only, and WAL mode
/// lets it read consistent snapshots while a gateway keeps writing.
pub struct AuditReader {
    conn: Connection,
    path: PathBuf,
    /// The schema version found on open: a version 2 file has no checkpoint tables yet.
    version: u32,
}

impl fmt::Debug for AuditReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditReader {
    pub fn open(data_dir: &Path) -> Result<AuditReader, AuditError> {
        let path = store::db_path(data_dir);
        // Without this check SQLite would report a bare "unable to open database file".
        if !path.is_file() {
            return Err(AuditError::NotFound { path });
        }
        let open_err = |source| AuditError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // The file is evidence under examination, not code to run: no functions or virtual
        // tables from its schema, and the tables read must be tables (a view named `events`
        // could show a verifier anything).
        conn.pragma_update(None, "trusted_schema", false)
            .map_err(open_err)?;
        let not_tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE name IN \
                 ('events', 'checkpoints', 'cosignatures', 'tree_state', 'meta', 'chunks') AND type <> 'table'",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(open_err)?;
        if let Some(name) = not_tables.first() {
            return Err(AuditError::Open {
                path: path.clone(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "{name} is not a table: the file's schema was altered"
                )),
            });
        }
        let version = store::schema_version(&conn, &path)?;
        if version > store::SCHEMA_VERSION {
            return Err(AuditError::SchemaTooNew {
                path,
                found: version,
                supported: store::SCHEMA_VERSION,
            });
        }
        if version == 0 {
            return Err(AuditError::NotFound { path });
        }
        Ok(AuditReader {
            conn,
            path,
            version,
        })
    }

    /// Events with `seq > after_seq`, ascending, at most `limit`; `(seq, canonical JSON)`.
    pub fn since(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, String)>, AuditError> {
        self.query(
            "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![to_i64(after_seq), to_i64(limit as u64)],
        )
    }

    /// What a streaming sink sends next, read in one snapshot: the events after leaf index
    /// `next_leaf - 1` (at most `limit`), and the stored checkpoints of a size above
    /// `after_checkpoint` and at most the last event read (or `next_leaf`, when no event is
    /// new). One snapshot matters: a checkpoint is stored in the transaction of the events it
    /// covers (or later, covering nothing newer), so every checkpoint at or below an event
    /// read here is read too, and none is ever found later below what was already sent.
    pub fn sink_page(
        &self,
        next_leaf: u64,
        limit: usize,
        after_checkpoint: u64,
    ) -> Result<SinkPage, AuditError> {
        self.begin_snapshot()?;
        let page = self.sink_page_in_snapshot(next_leaf, limit, after_checkpoint);
        let end = self.end_snapshot();
        let page = page?;
        end?;
        Ok(page)
    }

    fn sink_page_in_snapshot(
        &self,
        next_leaf: u64,
        limit: usize,
        after_checkpoint: u64,
    ) -> Result<SinkPage, AuditError> {
        let mut leaves = Vec::with_capacity(limit.min(4096));
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT seq, body, leaf_hash FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(|source| self.read_err(source))?;
            let rows = stmt
                .query_map(params![to_i64(next_leaf), to_i64(limit as u64)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                    ))
                })
                .map_err(|source| self.read_err(source))?;
            for row in rows {
                let (seq, body, hash) = row.map_err(|source| self.read_err(source))?;
                let (seq, body) = self.decode(seq, body)?;
                let leaf_hash: crate::merkle::Hash =
                    hash.try_into().map_err(|_| AuditError::Corrupt {
                        path: self.path.clone(),
                        seq,
                    })?;
                leaves.push(Leaf {
                    index: seq - 1,
                    body,
                    leaf_hash,
                });
            }
        }
        let upto = leaves.last().map_or(next_leaf, |l| l.index + 1);
        let mut checkpoints = Vec::new();
        if self.version >= 3 && upto > after_checkpoint {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT size, time, note, frontier FROM checkpoints \
                     WHERE size > ?1 AND size <= ?2 ORDER BY size",
                )
                .map_err(|source| self.read_err(source))?;
            let rows = stmt
                .query_map(
                    params![to_i64(after_checkpoint), to_i64(upto)],
                    store::checkpoint_row,
                )
                .map_err(|source| self.read_err(source))?;
            for row in rows {
                checkpoints.push(row.map_err(|source| self.read_err(source))?.0);
            }
        }
        Ok(SinkPage {
            leaves,
            checkpoints,
        })
    }

    /// The stored leaf hash of the leaf at `index` (from 0), if the log has it: a sink's
    /// cursor checks that the last leaf it delivered is still the one in the log.
    pub fn leaf_hash(&self, index: u64) -> Result<Option<crate::merkle::Hash>, AuditError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT leaf_hash FROM events WHERE seq = ?1",
                params![to_i64(index + 1)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|source| self.read_err(source))?;
        hash.map(|h| {
            h.try_into().map_err(|_| AuditError::Corrupt {
                path: self.path.clone(),
                seq: index + 1,
            })
        })
        .transpose()
    }

    /// The id of the log's first event: a sink's cursor names it, so a cursor is never
    /// applied to another log (a data directory restored or replaced under it).
    pub fn first_event_id(&self) -> Result<Option<String>, AuditError> {
        self.conn
            .query_row("SELECT id FROM events WHERE seq = 1", [], |r| r.get(0))
            .optional()
            .map_err(|source| self.read_err(source))
    }

    /// The last `n` events, ascending.
    pub fn last(&self, n: usize) -> Result<Vec<(u64, String)>, AuditError> {
        let mut rows = self.query(
            "SELECT seq, body FROM events ORDER BY seq DESC LIMIT ?1",
            params![to_i64(n as u64)],
        )?;
        rows.reverse();
        Ok(rows)
    }

    pub fn by_id(&self, id: &str) -> Result<Option<(u64, String)>, AuditError> {
        let row = self
            .conn
            .query_row(
                "SELECT seq, body FROM events WHERE id = ?1",
                params![id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(|source| self.read_err(source))?;
        row.map(|(seq, body)| self.decode(seq, body)).transpose()
    }

    /// The events of one session, in order.
    pub fn session(&self, session: &str) -> Result<Vec<(u64, String)>, AuditError> {
        if self.version < 4 {
            return self.query(
                "SELECT seq, body FROM events WHERE session = ?1 ORDER BY seq",
                params![session],
            );
        }
        self.query(
            "SELECT seq, body FROM events INDEXED BY events_by_session \
             WHERE session = ?1 ORDER BY seq",
            params![session],
        )
    }

    /// The stored bytes of the recorded chunk `id` of the event `seq`, as they are
    /// (unchecked: see [`Chunk::stored`](portcullis_recording::Chunk::stored)); `None` if
    /// there is no such chunk, or the log predates recordings.
    pub fn chunk_bytes(&self, seq: u64, id: &str) -> Result<Option<Vec<u8>>, AuditError> {
        if self.version < 4 {
            return Ok(None);
        }
        self.conn
            .prepare_cached("SELECT bytes FROM chunks WHERE seq = ?1 AND id = ?2")
            .and_then(|mut stmt| {
                stmt.query_row(params![to_i64(seq), id], |r| r.get(0))
                    .optional()
            })
            .map_err(|source| self.read_err(source))
    }

    /// The sequence number of the event that names chunk `id` as its recorded request or
    /// answer (a scan of the log: ids are not indexed).
    pub fn seq_naming_chunk(&self, id: &str) -> Result<Option<u64>, AuditError> {
        if self.version < 4 {
            return Ok(None);
        }
        // `instr` first: a cheap filter before the JSON is parsed.
        self.conn
            .prepare_cached(
                "SELECT seq FROM events WHERE instr(body, ?1) > 0 \
                 AND (json_extract(CAST(body AS TEXT), '$.recorded.request') = ?1 \
                      OR json_extract(CAST(body AS TEXT), '$.recorded.answer') = ?1) \
                 ORDER BY seq LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![id], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|seq| seq.map(|s| s as u64))
            .map_err(|source| self.read_err(source))
    }

    /// The sessions with events in `seqs` (inclusive), newest activity first, at most
    /// `limit`: a session is its `session` id; a request outside any session (stateless
    /// MCP) is a session of its own, named by the event's id. `subject` and `target` keep
    /// those whose events carry them. The range keeps the scan bounded (the rowid is `seq`).
    pub fn sessions_in(
        &self,
        seqs: (u64, u64),
        subject: Option<&str>,
        target: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(session, id) AS sid, MAX(seq) AS last FROM events \
                 WHERE seq BETWEEN ?1 AND ?2 \
                 AND (session IS NOT NULL OR type = 'request') \
                 AND type NOT LIKE 'approval.%' \
                 AND (?3 IS NULL OR subject = ?3) AND (?4 IS NULL OR target = ?4) \
                 GROUP BY sid ORDER BY last DESC LIMIT ?5",
            )
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map(
                params![
                    to_i64(seqs.0),
                    to_i64(seqs.1),
                    subject,
                    target,
                    to_i64(limit as u64)
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(|source| self.read_err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.read_err(source))
    }

    /// The sequence number of the first event written at or after `time` (RFC 3339, UTC, as
    /// events write it), found by bisection on `seq`: times follow `seq` closely (an event
    /// is stamped when it is made and appended soon after), so this is where a scan of a
    /// time range starts without reading the log from the beginning. `count + 1` if none.
    pub fn first_seq_at(&self, time: &str) -> Result<u64, AuditError> {
        let (mut lo, mut hi) = (1, self.count()? + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at: Option<String> = self
                .conn
                .prepare_cached("SELECT time FROM events WHERE seq = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row(params![to_i64(mid)], |r| r.get(0))
                        .optional()
                })
                .map_err(|source| self.read_err(source))?;
            match at {
                Some(at) if at.as_str() < time => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// The events of type `approval.*` about `approval` among `seqs` (inclusive), in order.
    pub fn approval_events(
        &self,
        approval: &str,
        seqs: (u64, u64),
    ) -> Result<Vec<(u64, String)>, AuditError> {
        self.query(
            "SELECT seq, body FROM events WHERE seq BETWEEN ?1 AND ?2 \
             AND type LIKE 'approval.%' \
             AND json_extract(CAST(body AS TEXT), '$.approval') = ?3 ORDER BY seq",
            params![to_i64(seqs.0), to_i64(seqs.1), approval],
        )
    }

    /// The `evidence.report` event that recorded a document with this SHA-256 (hex), the
    /// first if several did. Scans the events of that type: a sign-off is rare.
    pub fn evidence_document(&self, sha256: &str) -> Result<Option<(u64, String)>, AuditError> {
        let mut rows = self.query(
            "SELECT seq, body FROM events WHERE type = 'evidence.report' \
             AND json_extract(CAST(body AS TEXT), '$.evidence.sha256') = ?1 ORDER BY seq LIMIT 1",
            params![sha256],
        )?;
        Ok(rows.pop())
    }

    /// The sequence number of the newest `type` event, if any: read backwards from the end,
    /// so it costs as much as the events written since.
    pub fn last_of_type(&self, event_type: &str) -> Result<Option<u64>, AuditError> {
        self.conn
            .prepare_cached("SELECT seq FROM events WHERE type = ?1 ORDER BY seq DESC LIMIT 1")
            .and_then(|mut stmt| {
                stmt.query_row(params![event_type], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|seq| seq.map(|s| s as u64))
            .map_err(|source| self.read_err(source))
    }

    /// The segments `recording.sealed` events vouch for, oldest first. An event whose
    /// segment cannot be read is skipped: `audit verify` is where such damage is named.
    pub fn segment_records(&self) -> Result<Vec<portcullis_model::SegmentRecord>, AuditError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "SELECT seq, body FROM events WHERE type = 'recording.sealed' ORDER BY seq",
            [],
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, body)| {
                serde_json::from_str::<portcullis_model::AuditEvent>(&body)
                    .ok()?
                    .segment
            })
            .collect())
    }

    /// The Merkle tree head of the log as committed: its size and RFC 6962 root.
    pub fn tree_head(&self) -> Result<(u64, crate::merkle::Hash), AuditError> {
        let size = self.count()?;
        let frontier = crate::store::load_frontier(&self.conn, size)
            .map_err(|source| self.read_err(source))?;
        Ok((frontier.size(), frontier.root()))
    }

    /// The events of type `event_type` among `seqs` (inclusive), in order, at most `limit`.
    pub fn of_type_in(
        &self,
        event_type: &str,
        seqs: (u64, u64),
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AuditError> {
        self.query(
            "SELECT seq, body FROM events WHERE seq BETWEEN ?1 AND ?2 AND type = ?3 \
             ORDER BY seq LIMIT ?4",
            params![
                to_i64(seqs.0),
                to_i64(seqs.1),
                event_type,
                to_i64(limit as u64)
            ],
        )
    }

    /// The recorded chunks of the events before `seq` (exclusive) whose time is before
    /// `time`, in order of their events: `(chunk id, event seq)`, at most `limit`, starting
    /// after chunk event `after_seq`.
    pub fn chunks_before(
        &self,
        time: &str,
        below_seq: u64,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, AuditError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.seq FROM chunks c JOIN events e ON e.seq = c.seq \
                 WHERE c.seq > ?1 AND c.seq < ?2 AND e.time < ?3 ORDER BY c.seq, c.id LIMIT ?4",
            )
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map(
                params![
                    to_i64(after_seq),
                    to_i64(below_seq),
                    time,
                    to_i64(limit as u64)
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|source| self.read_err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.read_err(source))
    }

    /// The time of the event at `seq`, if there is one.
    pub fn time_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        self.conn
            .prepare_cached("SELECT time FROM events WHERE seq = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![to_i64(seq)], |r| r.get(0))
                    .optional()
            })
            .map_err(|source| self.read_err(source))
    }

    /// Whether a recorded chunk is stored (whatever its bytes).
    pub fn has_chunk(&self, seq: u64, id: &str) -> Result<bool, AuditError> {
        if self.version < 4 {
            return Ok(false);
        }
        self.conn
            .prepare_cached("SELECT 1 FROM chunks WHERE seq = ?1 AND id = ?2")
            .and_then(|mut stmt| stmt.exists(params![to_i64(seq), id]))
            .map_err(|source| self.read_err(source))
    }

    /// The events matching `query`, newest first, at most `query.limit`: `(seq, canonical
    /// JSON)`. The scan is bounded like a session listing: between `since` and `until` when
    /// given, else over the newest [`DEFAULT_SCAN`](crate::sessions::DEFAULT_SCAN) events.
    pub fn search(&self, query: &EventQuery) -> Result<Vec<(u64, String)>, AuditError> {
        let count = self.count()?;
        let first = match &query.since {
            Some(since) => self.first_seq_at(since)?,
            None => count.saturating_sub(crate::sessions::DEFAULT_SCAN) + 1,
        };
        let last = match &query.until {
            Some(until) => self.first_seq_at(until)?.saturating_sub(1),
            None => count,
        };
        if first > last || query.limit == 0 {
            return Ok(Vec::new());
        }
        self.query(
            "SELECT seq, body FROM events WHERE seq BETWEEN ?1 AND ?2 \
             AND (?3 IS NULL OR subject = ?3 \
                  OR json_extract(CAST(body AS TEXT), '$.identity.display_name') = ?3) \
             AND (?4 IS NULL OR target = ?4) AND (?5 IS NULL OR type = ?5) \
             AND (?6 IS NULL OR outcome = ?6) \
             AND (?7 IS NULL OR json_extract(CAST(body AS TEXT), '$.rule') = ?7) \
             ORDER BY seq DESC LIMIT ?8",
            params![
                to_i64(first),
                to_i64(last),
                query.identity,
                query.target,
                query.event_type,
                query.outcome,
                query.rule,
                to_i64(query.limit as u64)
            ],
        )
    }

    /// Each witness's newest stored cosignature: `(witness, checkpoint size, time stored)`,
    /// by witness name. One indexed query: cheap enough for a status page.
    pub fn latest_cosignatures(&self) -> Result<Vec<(String, u64, String)>, AuditError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        // SQLite takes the bare columns of a MAX() aggregate from the row holding the maximum.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT witness, MAX(size), time FROM cosignatures GROUP BY witness ORDER BY witness",
            )
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
            })
            .map_err(|source| self.read_err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.read_err(source))
    }

    /// The origin line of the newest stored checkpoint, as the file states it: not verified
    /// (`verify` checks every checkpoint against the key). What tools that read several logs
    /// tell them apart by before verifying them; `None` before the first checkpoint.
    pub fn stated_origin(&self) -> Result<Option<String>, AuditError> {
        if self.version < 3 {
            return Ok(None);
        }
        let note: Option<String> = self
            .conn
            .query_row(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|source| self.read_err(source))?;
        Ok(note.and_then(|note| note.split('\n').next().map(str::to_string)))
    }

    pub fn count(&self) -> Result<u64, AuditError> {
        // seq is contiguous from 1, so MAX(seq) is the count without scanning the table.
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|source| self.read_err(source))?;
        Ok(max as u64)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the file (a version below 4 has no `chunks` table).
    pub(crate) fn schema_version(&self) -> u32 {
        self.version
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Starts a read transaction: every read until [`end_snapshot`](Self::end_snapshot)
    /// sees the database as of the first one, even while a gateway appends. A verifier needs
    /// that, or the tree state it compares with the events could be from a later commit.
    pub(crate) fn begin_snapshot(&self) -> Result<(), AuditError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(|source| self.read_err(source))
    }

    pub(crate) fn end_snapshot(&self) -> Result<(), AuditError> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|source| self.read_err(source))
    }

    /// Every stored checkpoint row, by size, exactly as stored. Unlike `store::checkpoint_row`
    /// nothing is validated here: the verifier must see what is on disk to say what is wrong.
    pub(crate) fn raw_checkpoints(&self) -> Result<Vec<RawCheckpoint>, AuditError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT size, note, frontier FROM checkpoints ORDER BY size")
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RawCheckpoint {
                    size: r.get(0)?,
                    note: r.get(1)?,
                    frontier: r.get(2)?,
                })
            })
            .map_err(|source| self.read_err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.read_err(source))
    }

    /// Every stored cosignature row, by checkpoint size then witness name.
    pub(crate) fn raw_cosignatures(&self) -> Result<Vec<RawCosignature>, AuditError> {
        if self.version < 3 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare("SELECT size, witness, line FROM cosignatures ORDER BY size, witness")
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RawCosignature {
                    size: r.get(0)?,
                    witness: r.get(1)?,
                    line: r.get(2)?,
                })
            })
            .map_err(|source| self.read_err(source))?;
        rows.collect::<Result<_, _>>()
            .map_err(|source| self.read_err(source))
    }

    /// The stored tree state `(size, nodes)`, if there is one.
    pub(crate) fn raw_tree_state(&self) -> Result<Option<(i64, Vec<u8>)>, AuditError> {
        if self.version < 2 {
            return Ok(None);
        }
        self.conn
            .query_row("SELECT size, nodes FROM tree_state WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|source| self.read_err(source))
    }

    /// The sequence number of an event, by id.
    pub(crate) fn seq_of(&self, id: &str) -> Result<Option<u64>, AuditError> {
        self.conn
            .query_row("SELECT seq FROM events WHERE id = ?1", params![id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|seq| seq.map(|s| s as u64))
            .map_err(|source| self.read_err(source))
    }

    /// The raw body of the event at `seq`, if there is one.
    pub(crate) fn body_at(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
        self.conn
            .query_row(
                "SELECT body FROM events WHERE seq = ?1",
                params![to_i64(seq)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|source| self.read_err(source))
    }

    /// The stored leaf hashes of events `1..=size`, in order. The inner error is the first
    /// sequence number that is missing or whose leaf hash is not 32 bytes: a tree over such
    /// a list would not be the log's tree.
    pub(crate) fn leaf_hashes(
        &self,
        size: u64,
    ) -> Result<Result<Vec<crate::merkle::Hash>, u64>, AuditError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, leaf_hash FROM events WHERE seq <= ?1 ORDER BY seq")
            .map_err(|source| self.read_err(source))?;
        let mut rows = stmt
            .query(params![to_i64(size)])
            .map_err(|source| self.read_err(source))?;
        // `size` comes from a row of the file: reserve for what the log can hold, not for
        // whatever a crafted row claims.
        let reserve = size.min(self.count()?).min(1 << 24);
        let mut out = Vec::with_capacity(reserve as usize);
        while let Some(row) = rows.next().map_err(|source| self.read_err(source))? {
            let expected = out.len() as u64 + 1;
            let seq = row.get::<_, i64>(0).ok();
            let leaf = row
                .get::<_, Vec<u8>>(1)
                .ok()
                .and_then(|leaf| <[u8; 32]>::try_from(leaf.as_slice()).ok());
            match (seq, leaf) {
                (Some(seq), Some(leaf)) if seq as u64 == expected => out.push(leaf),
                _ => return Ok(Err(expected)),
            }
        }
        if out.len() as u64 != size {
            return Ok(Err(out.len() as u64 + 1));
        }
        Ok(Ok(out))
    }

    fn query(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(u64, String)>, AuditError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|source| self.read_err(source))?;
        let rows = stmt
            .query_map(params, |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|source| self.read_err(source))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row.map_err(|source| self.read_err(source))?;
            out.push(self.decode(seq, body)?);
        }
        Ok(out)
    }

    fn decode(&self, seq: i64, body: Vec<u8>) -> Result<(u64, String), AuditError> {
        let seq = seq as u64;
        let text = String::from_utf8(body).map_err(|_| AuditError::Corrupt {
            path: self.path.clone(),
            seq,
        })?;
        Ok((seq, text))
    }

    fn read_err(&self, source: rusqlite::Error) -> AuditError {
        AuditError::Read {
            path: self.path.clone(),
            source,
        }
    }
}

/// A `checkpoints` row as stored.
pub(crate) struct RawCheckpoint {
    pub size: i64,
    pub note: String,
    pub frontier: Vec<u8>,
}

/// A `cosignatures` row as stored.
pub(crate) struct RawCosignature {
    pub size: i64,
    pub witness: String,
    pub line: String,
}

/// SQLite integers are signed; saturate instead of wrapping for absurd inputs.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
