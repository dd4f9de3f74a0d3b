//! `approvals.db` in the data directory (`[state] backend = "sqlite"`, one gateway):
//! approvals and grants survive a restart.
//!
//! Each record is stored whole as JSON beside the few columns queries need. Writes are rare
//! (a person decides), so the store is one connection behind the service's lock, with
//! `synchronous = FULL`: a decision the API acknowledged is on disk.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{StoreError, millis};
use crate::types::{Approval, ApprovalKind, Grant};

pub(crate) struct SqliteStore {
    /// Behind its own lock only so the store is `Sync` (a `&Store` is held across audit
    /// writes); the service's async lock already serialises every use.
    conn: std::sync::Mutex<Connection>,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (status) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    holder_issuer TEXT NOT NULL,
    holder_subject TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    -- 1 once the grant ended (revoked, or its expiry recorded).
    closed INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
";

impl SqliteStore {
    pub(crate) fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = data_dir.join("approvals.db");
        let shown = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Added after the first release: when an approved request was forwarded.
        let has_consumed: bool = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('approvals') WHERE name = 'consumed_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_consumed {
            conn.execute_batch("ALTER TABLE approvals ADD COLUMN consumed_ms INTEGER")
                .map_err(err)?;
        }
        Ok(SqliteStore {
            conn: std::sync::Mutex::new(conn),
            path: shown,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding it cannot leave SQLite inconsistent: keep going.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn put_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let body = serde_json::to_string(a).expect("approval serialises");
        let kind = serde_json::to_value(a.kind).expect("kind serialises");
        self.conn()
            .execute(
                "INSERT INTO approvals (id, status, kind, expires_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, expires_ms = excluded.expires_ms, body = excluded.body",
                params![
                    a.id,
                    a.status.as_str(),
                    kind.as_str().unwrap_or_default(),
                    millis(&a.expires_at),
                    body
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM approvals WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        body.map(|b| serde_json::from_str(&b).map_err(StoreError::Corrupt))
            .transpose()
    }

    /// Approvals, newest first; only pending ones when `pending_only`. At most `limit`.
    pub(crate) fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let sql = if pending_only {
            "SELECT body FROM approvals WHERE status = 'pending' ORDER BY rowid DESC LIMIT ?1"
        } else {
            "SELECT body FROM approvals ORDER BY rowid DESC LIMIT ?1"
        };
        self.bodies(sql, [limit as i64])
    }

    /// Held requests still pending: on one gateway, all of them are its own.
    pub(crate) fn pending_requests(&self) -> Result<Vec<Approval>, StoreError> {
        Ok(self
            .approvals(true, usize::MAX >> 1)?
            .into_iter()
            .filter(|a| a.kind == ApprovalKind::Request)
            .collect())
    }

    /// Marks approved request `id` forwarded; false if it was already (or is not approved).
    pub(crate) fn consume(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE approvals SET consumed_ms = ?2 WHERE id = ?1 AND status = 'approved' AND consumed_ms IS NULL",
                params![id, chrono::Utc::now().timestamp_millis()],
            )
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Pending approvals whose time ran out by `now_ms`: what the sweeper must close, found
    /// by the indexed column rather than by parsing every pending record each second.
    pub(crate) fn due_approvals(&self, now_ms: i64) -> Result<Vec<Approval>, StoreError> {
        self.bodies(
            "SELECT body FROM approvals WHERE status = 'pending' AND expires_ms <= ?1 ORDER BY rowid",
            [now_ms],
        )
    }

    /// Grants not yet closed whose end has come by `now_ms`.
    pub(crate) fn due_grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        self.bodies(
            "SELECT body FROM grants WHERE closed = 0 AND expires_ms <= ?1 ORDER BY rowid",
            [now_ms],
        )
    }

    pub(crate) fn put_grant(&self, g: &Grant, closed: bool) -> Result<(), StoreError> {
        let body = serde_json::to_string(g).expect("grant serialises");
        self.conn()
            .execute(
                "INSERT INTO grants (id, holder_issuer, holder_subject, expires_ms, closed, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET closed = excluded.closed, expires_ms = excluded.expires_ms, body = excluded.body",
                params![
                    g.id,
                    g.holder.issuer,
                    g.holder.subject,
                    millis(&g.expires_at),
                    closed,
                    body
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Grants not yet closed (active, or expired with the expiry not yet recorded).
    pub(crate) fn open_grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.grants_where("WHERE closed = 0", usize::MAX >> 1)
    }

    /// Grants, newest first, at most `limit`.
    pub(crate) fn grants(&self, limit: usize) -> Result<Vec<Grant>, StoreError> {
        self.grants_where("", limit)
    }

    fn grants_where(&self, filter: &str, limit: usize) -> Result<Vec<Grant>, StoreError> {
        self.bodies(
            &format!("SELECT body FROM grants {filter} ORDER BY rowid DESC LIMIT ?1"),
            [limit as i64],
        )
    }

    /// Runs a query selecting `body`, and parses each.
    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.err(e))?;
            out.push(serde_json::from_str(&body).map_err(StoreError::Corrupt)?);
        }
        Ok(out)
    }

    pub(crate) fn grant(&self, id: &str) -> Result<Option<(Grant, bool)>, StoreError> {
        let row: Option<(String, bool)> = self
            .conn()
            .query_row("SELECT body, closed FROM grants WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|(b, closed)| {
            serde_json::from_str(&b)
                .map(|g| (g, closed))
                .map_err(StoreError::Corrupt)
        })
        .transpose()
    }
}
