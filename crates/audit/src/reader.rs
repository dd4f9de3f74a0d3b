//! The read side, used by `portcullis audit tail/show`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use crate::AuditError;
use crate::store;

/// A read-only view of `<data_dir>/audit.db`. It opens the file read-only, and WAL mode
/// lets it read consistent snapshots while a gateway keeps writing.
pub struct AuditReader {
    conn: Connection,
    path: PathBuf,
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
        Ok(AuditReader { conn, path })
    }

    /// Events with `seq > after_seq`, ascending, at most `limit`; `(seq, canonical JSON)`.
    pub fn since(&self, after_seq: u64, limit: usize) -> Result<Vec<(u64, String)>, AuditError> {
        self.query(
            "SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![to_i64(after_seq), to_i64(limit as u64)],
        )
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

    /// The Merkle tree head of the log as committed: its size and RFC 6962 root.
    pub fn tree_head(&self) -> Result<(u64, crate::merkle::Hash), AuditError> {
        let size = self.count()?;
        let frontier = crate::store::load_frontier(&self.conn, size)
            .map_err(|source| self.read_err(source))?;
        Ok((frontier.size(), frontier.root()))
    }

    pub fn count(&self) -> Result<u64, AuditError> {
        // seq is contiguous from 1, so MAX(seq) is the count without scanning the table.
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|source| self.read_err(source))?;
        Ok(max as u64)
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

/// SQLite integers are signed; saturate instead of wrapping for absurd inputs.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
