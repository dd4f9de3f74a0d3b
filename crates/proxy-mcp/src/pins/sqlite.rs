//! Tool pins in `<data_dir>/pins.db`: one gateway's own, which the CLI opens beside it to
//! accept a change while the gateway runs.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{PendingPin, PinCheck, PinError, Row, acceptable};

pub(super) struct SqlitePins {
    conn: Mutex<Connection>,
    path: String,
}

impl SqlitePins {
    pub(super) fn open(data_dir: &Path) -> Result<SqlitePins, PinError> {
        let path = data_dir.join("pins.db");
        let err = |source| PinError::Store {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS pins (
                target TEXT NOT NULL,
                tool TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                pending TEXT,
                pinned_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
                PRIMARY KEY (target, tool)
             );",
        )
        .map_err(err)?;
        Ok(SqlitePins {
            conn: Mutex::new(conn),
            path: path.display().to_string(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> PinError {
        PinError::Store {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn row(&self, target: &str, tool: &str) -> Result<Option<Row>, PinError> {
        let conn = self.conn.lock().expect("lock");
        read(&conn, target, tool).map_err(|e| self.err(e))
    }

    pub(super) fn check(&self, target: &str, tool: &str, seen: &str) -> Result<PinCheck, PinError> {
        let conn = self.conn.lock().expect("lock");
        let row = read(&conn, target, tool).map_err(|e| self.err(e))?;
        match row {
            None => {
                conn.execute(
                    "INSERT INTO pins (target, tool, fingerprint) VALUES (?1, ?2, ?3)",
                    params![target, tool, seen],
                )
                .map_err(|e| self.err(e))?;
                Ok(PinCheck::New)
            }
            Some(Row {
                fingerprint: pinned,
                pending,
            }) if pinned == seen => {
                if pending.is_some() {
                    // The upstream went back to the pinned tool: nothing awaits acceptance.
                    conn.execute(
                        "UPDATE pins SET pending = NULL WHERE target = ?1 AND tool = ?2",
                        params![target, tool],
                    )
                    .map_err(|e| self.err(e))?;
                }
                Ok(PinCheck::Unchanged)
            }
            Some(Row {
                fingerprint: pinned,
                pending,
            }) => {
                let first_report = pending.as_deref() != Some(seen);
                if first_report {
                    conn.execute(
                        "UPDATE pins SET pending = ?3 WHERE target = ?1 AND tool = ?2",
                        params![target, tool, seen],
                    )
                    .map_err(|e| self.err(e))?;
                }
                Ok(PinCheck::Changed {
                    pinned,
                    seen: seen.to_string(),
                    first_report,
                })
            }
        }
    }

    pub(super) fn accept_exact(
        &self,
        target: &str,
        tool: &str,
        expected: &str,
    ) -> Result<(String, String), PinError> {
        let conn = self.conn.lock().expect("lock");
        let row = read(&conn, target, tool).map_err(|e| self.err(e))?;
        let accepted = acceptable(target, tool, row, expected)?;
        conn.execute(
            "UPDATE pins SET fingerprint = pending, pending = NULL, pinned_at = strftime('%Y-%m-%dT%H:%M:%fZ','now') WHERE target = ?1 AND tool = ?2 AND pending = ?3",
            params![target, tool, expected],
        )
        .map_err(|e| self.err(e))?;
        Ok(accepted)
    }

    pub(super) fn pending_changes(&self) -> Result<Vec<PendingPin>, PinError> {
        let conn = self.conn.lock().expect("lock");
        let mut stmt = conn
            .prepare(
                "SELECT target, tool, fingerprint, pending FROM pins WHERE pending IS NOT NULL ORDER BY target, tool",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingPin {
                    target: r.get(0)?,
                    tool: r.get(1)?,
                    pinned: r.get(2)?,
                    pending: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// The pin of `tool` on `target`, if there is one.
fn read(conn: &Connection, target: &str, tool: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        "SELECT fingerprint, pending FROM pins WHERE target = ?1 AND tool = ?2",
        params![target, tool],
        |r| {
            Ok(Row {
                fingerprint: r.get(0)?,
                pending: r.get(1)?,
            })
        },
    )
    .optional()
}
