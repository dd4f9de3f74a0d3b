//! Tool pinning against rug pulls.
//!
//! An MCP server can change a tool's description or schema after a user has come to trust
//! it (a "rug pull": the same name now asks the model to exfiltrate data). The gateway
//! fingerprints each tool the first time it sees it; when an upstream later presents a
//! different fingerprint for a pinned tool, the tool is withheld from `tools/list` and its
//! calls are refused until an operator accepts the change (`portcullis tools accept`).
//!
//! Pins live in `<data_dir>/pins.db` (so the CLI can accept a change while the gateway
//! runs), or, with `[state] backend = "postgres"`, in the database replicas share: a tool
//! pinned through one replica is pinned for all, and a change accepted through any replica
//! (or the CLI) is honoured by all. Either way the check before every `tools/call` is made
//! in memory: with SQLite only a tool known to be withheld is looked up again (the CLI
//! writes the file behind the gateway's back); with PostgreSQL every pin is kept in memory
//! and refreshed as other replicas announce changes, on a reconnect, and every `state.poll`.

mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use portcullis_state::{Change, Shared, StateError};
use serde_json::Value;
use sha2::{Digest, Sha256};

use postgres::PgPins;
use sqlite::SqlitePins;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("tool pin store {path}: {source}")]
    Store {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the shared tool pin store: {0}")]
    Shared(#[from] StateError),
    #[error("no changed tool {tool:?} awaits acceptance on target {target:?}")]
    NothingToAccept { target: String, tool: String },
    #[error(
        "the definition of {tool:?} on {target:?} changed again since it was shown (now {now}); nothing was accepted"
    )]
    ChangedAgain {
        target: String,
        tool: String,
        now: String,
    },
}

/// A tool whose definition changed and waits for someone to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPin {
    pub target: String,
    pub tool: String,
    /// The fingerprint pinned (what agents were shown until the change).
    pub pinned: String,
    /// The fingerprint of the changed definition, withheld.
    pub pending: String,
}

/// What the store says about a tool as presented now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// Seen for the first time and pinned now.
    New,
    /// Matches its pin.
    Unchanged,
    /// Differs from its pin. `first_report` is true the first time this new fingerprint is
    /// seen, so the change is reported once, not on every listing.
    Changed {
        pinned: String,
        seen: String,
        first_report: bool,
    },
}

/// One stored pin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    fingerprint: String,
    /// A changed fingerprint awaiting acceptance: the tool is withheld while there is one.
    pending: Option<String>,
}

type Key = (String, String);

/// Whether the stored `row` has exactly `expected` waiting to be accepted: the pinned and the
/// accepted fingerprint if so, and otherwise why not. Both stores decide with this, then
/// write the acceptance in their own way.
fn acceptable(
    target: &str,
    tool: &str,
    row: Option<Row>,
    expected: &str,
) -> Result<(String, String), PinError> {
    match row {
        Some(Row {
            fingerprint: old,
            pending: Some(new),
        }) if new == expected => Ok((old, new)),
        Some(Row {
            pending: Some(now), ..
        }) => Err(PinError::ChangedAgain {
            target: target.into(),
            tool: tool.into(),
            now,
        }),
        _ => Err(PinError::NothingToAccept {
            target: target.into(),
            tool: tool.into(),
        }),
    }
}

fn key(target: &str, tool: &str) -> Key {
    (target.to_string(), tool.to_string())
}

pub struct Pins {
    store: Store,
}

enum Store {
    Sqlite {
        db: Box<SqlitePins>,
        /// Tools this gateway knows to be withheld. Checked on every `tools/call` without
        /// a database query; filled by [`Pins::check`] and at start-up, and re-checked
        /// against the file (where the CLI records acceptances) only for tools in it.
        withheld: Mutex<HashSet<Key>>,
        /// Tools known to have a pin (pins are never removed), so the check before every
        /// `tools/call` costs no query once a tool has been seen.
        pinned: Mutex<HashSet<Key>>,
    },
    Postgres {
        db: Arc<PgPins>,
        /// Every pin as last read or written, kept current by the follower: what the
        /// request path reads.
        known: Arc<Mutex<HashMap<Key, Row>>>,
        follower: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Store::Postgres { follower, .. } = &self.store {
            follower.abort();
        }
    }
}

/// The fingerprint of a tool: SHA-256 over the canonical JSON of what a model reads of it.
pub fn fingerprint(tool: &Value) -> String {
    let mut subset = serde_json::Map::new();
    for key in [
        "name",
        "title",
        "description",
        "inputSchema",
        "outputSchema",
        "annotations",
    ] {
        if let Some(v) = tool.get(key) {
            subset.insert(key.into(), v.clone());
        }
    }
    // serde_json's map keeps keys sorted, so this rendering is canonical for our purpose.
    let text = serde_json::to_string(&Value::Object(subset)).expect("serialises");
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Pins {
    /// The pins of this gateway alone, in `<data_dir>/pins.db`.
    pub fn open(data_dir: &Path) -> Result<Pins, PinError> {
        let db = Box::new(SqlitePins::open(data_dir)?);
        let withheld = db
            .pending_changes()?
            .into_iter()
            .map(|p| (p.target, p.tool))
            .collect();
        Ok(Pins {
            store: Store::Sqlite {
                db,
                withheld: Mutex::new(withheld),
                pinned: Mutex::new(HashSet::new()),
            },
        })
    }

    /// The pins replicas share, in the state database: read whole now, then kept current.
    pub async fn open_shared(shared: Shared) -> Result<Pins, PinError> {
        // Subscribed before the first read: a change committed in between is heard.
        let changes = shared.changes();
        let db = Arc::new(PgPins::open(shared).await?);
        let known = Arc::new(Mutex::new(db.all().await?.into_iter().collect()));
        let follower = tokio::spawn(follow(db.clone(), Arc::downgrade(&known), changes));
        Ok(Pins {
            store: Store::Postgres {
                db,
                known,
                follower,
            },
        })
    }

    /// SQLite in `data_dir`, or the shared state when given.
    pub async fn open_in(data_dir: &Path, shared: Option<Shared>) -> Result<Pins, PinError> {
        match shared {
            Some(shared) => Pins::open_shared(shared).await,
            None => Pins::open(data_dir),
        }
    }

    /// Whether the tool has a pin: the gateway has seen it listed. A tool without one has
    /// never been shown to anyone, so nothing vouches for what it is.
    pub async fn is_pinned(&self, target: &str, tool: &str) -> Result<bool, PinError> {
        let k = key(target, tool);
        match &self.store {
            Store::Sqlite { db, pinned, .. } => {
                if pinned.lock().expect("lock").contains(&k) {
                    return Ok(true);
                }
                let found = db.row(target, tool)?.is_some();
                if found {
                    pinned.lock().expect("lock").insert(k);
                }
                Ok(found)
            }
            Store::Postgres { .. } => Ok(self.shared_row(target, tool).await?.is_some()),
        }
    }

    /// The pin of a tool from memory, else from the shared database (another replica may
    /// have pinned it a moment ago), remembered when found.
    async fn shared_row(&self, target: &str, tool: &str) -> Result<Option<Row>, PinError> {
        let Store::Postgres { db, known, .. } = &self.store else {
            unreachable!("only for the shared store");
        };
        let k = key(target, tool);
        if let Some(row) = known.lock().expect("lock").get(&k) {
            return Ok(Some(row.clone()));
        }
        let row = db.row(target, tool).await?;
        if let Some(row) = &row {
            known.lock().expect("lock").insert(k, row.clone());
        }
        Ok(row)
    }

    /// Checks a tool as the upstream presents it now, pinning it if new.
    pub async fn check(&self, target: &str, tool: &str, seen: &str) -> Result<PinCheck, PinError> {
        let k = key(target, tool);
        match &self.store {
            Store::Sqlite {
                db,
                withheld,
                pinned,
            } => {
                let checked = db.check(target, tool, seen)?;
                match checked {
                    PinCheck::New => {}
                    PinCheck::Unchanged => {
                        withheld.lock().expect("lock").remove(&k);
                    }
                    PinCheck::Changed { .. } => {
                        withheld.lock().expect("lock").insert(k.clone());
                    }
                }
                pinned.lock().expect("lock").insert(k);
                Ok(checked)
            }
            Store::Postgres { db, known, .. } => {
                // A listing of an unchanged tool, the common case, costs no query.
                let unchanged = known.lock().expect("lock").get(&k)
                    == Some(&Row {
                        fingerprint: seen.to_string(),
                        pending: None,
                    });
                if unchanged {
                    return Ok(PinCheck::Unchanged);
                }
                let (checked, row) = db.check(target, tool, seen).await?;
                known.lock().expect("lock").insert(k, row);
                Ok(checked)
            }
        }
    }

    /// Whether a tool is withheld: it changed and the change was not accepted.
    pub async fn is_withheld(&self, target: &str, tool: &str) -> Result<bool, PinError> {
        let k = key(target, tool);
        match &self.store {
            Store::Sqlite { db, withheld, .. } => {
                if !withheld.lock().expect("lock").contains(&k) {
                    return Ok(false);
                }
                let still = db
                    .row(target, tool)?
                    .is_some_and(|row| row.pending.is_some());
                if !still {
                    // Accepted on the command line since: forget it.
                    withheld.lock().expect("lock").remove(&k);
                }
                Ok(still)
            }
            Store::Postgres { .. } => Ok(self
                .shared_row(target, tool)
                .await?
                .is_some_and(|row| row.pending.is_some())),
        }
    }

    /// Accepts the pending change of a tool: its new fingerprint becomes the pin. Returns
    /// (old, new) fingerprints.
    pub async fn accept(&self, target: &str, tool: &str) -> Result<(String, String), PinError> {
        let row = match &self.store {
            Store::Sqlite { db, .. } => db.row(target, tool)?,
            Store::Postgres { db, .. } => db.row(target, tool).await?,
        };
        match row.and_then(|row| row.pending) {
            Some(pending) => self.accept_exact(target, tool, &pending).await,
            None => Err(PinError::NothingToAccept {
                target: target.into(),
                tool: tool.into(),
            }),
        }
    }

    /// Accepts the pending change of a tool only if it is still `expected` (the fingerprint
    /// the person accepting was shown): a definition that changed again meanwhile is not
    /// accepted unseen. Returns (old, new) fingerprints.
    pub async fn accept_exact(
        &self,
        target: &str,
        tool: &str,
        expected: &str,
    ) -> Result<(String, String), PinError> {
        match &self.store {
            Store::Sqlite { db, .. } => db.accept_exact(target, tool, expected),
            Store::Postgres { db, known, .. } => {
                let (old, new) = db.accept_exact(target, tool, expected).await?;
                known.lock().expect("lock").insert(
                    key(target, tool),
                    Row {
                        fingerprint: new.clone(),
                        pending: None,
                    },
                );
                Ok((old, new))
            }
        }
    }

    /// Tools with a change awaiting acceptance, with both fingerprints.
    pub async fn pending_changes(&self) -> Result<Vec<PendingPin>, PinError> {
        match &self.store {
            Store::Sqlite { db, .. } => db.pending_changes(),
            Store::Postgres { db, .. } => db.pending_changes().await,
        }
    }

    /// Tools with a change awaiting acceptance: (target, tool).
    pub async fn pending(&self) -> Result<Vec<(String, String)>, PinError> {
        Ok(self
            .pending_changes()
            .await?
            .into_iter()
            .map(|p| (p.target, p.tool))
            .collect())
    }
}

/// Keeps `known` current with the shared table until the pins are dropped: one row again
/// when a replica announces it, every row on a resync (notifications may have been missed)
/// and every `state.poll`. A failed read empties what is in memory (of that tool, or of all):
/// a tool not in memory is looked up in the database on use, and refused while that fails,
/// so a change another replica withheld is never passed on from a stale copy.
async fn follow(
    db: Arc<PgPins>,
    known: std::sync::Weak<Mutex<HashMap<Key, Row>>>,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
) {
    let mut tick = tokio::time::interval(db.shared().timings().poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::Resync,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => Change::Resync,
        };
        let Some(known) = known.upgrade() else {
            return;
        };
        match change {
            Change::Row { topic, id } if topic == postgres::TOPIC => {
                let Some((target, tool)) = postgres::key_of(&id) else {
                    tracing::warn!("tool pins: a change announced for an unreadable key {id:?}");
                    continue;
                };
                match db.row(&target, &tool).await {
                    Ok(Some(row)) => {
                        known.lock().expect("lock").insert((target, tool), row);
                    }
                    Ok(None) => {
                        known.lock().expect("lock").remove(&(target, tool));
                    }
                    Err(e) => {
                        tracing::warn!("tool pins: re-reading {target}/{tool}: {e}");
                        known.lock().expect("lock").remove(&(target, tool));
                    }
                }
            }
            Change::Row { .. } => {}
            Change::Resync => match db.all().await {
                Ok(all) => *known.lock().expect("lock") = all.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(
                        "tool pins: re-reading the shared pins failed; each tool is looked up on use until it works again: {e}"
                    );
                    known.lock().expect("lock").clear();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
