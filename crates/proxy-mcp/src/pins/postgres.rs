//! Tool pins in the PostgreSQL database replicas share (`[state] backend = "postgres"`).
//!
//! The same table as `pins.db`. Every change takes one advisory lock and announces itself
//! (topic `pin`, the row's key as JSON) when it commits, so the other replicas update what
//! they keep in memory at once; a replica that missed a notification re-reads every pin
//! (the table holds one row per tool: small).

use portcullis_state::{Shared, StateError, Tx};

use super::{PendingPin, PinCheck, PinError, Row, acceptable};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portcullis_pins (
    target TEXT NOT NULL,
    tool TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    pending TEXT,
    pinned_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (target, tool)
);
";

/// The advisory lock every change to pins takes.
const LOCK: &str = "portcullis pins";

/// The notification topic of a changed pin.
pub(super) const TOPIC: &str = "pin";

/// The id a change of (target, tool) is announced under: both names, unambiguously.
pub(super) fn id_of(target: &str, tool: &str) -> String {
    serde_json::to_string(&[target, tool]).expect("serialises")
}

/// The (target, tool) of an announced id; `None` for one this version did not write.
pub(super) fn key_of(id: &str) -> Option<(String, String)> {
    serde_json::from_str::<(String, String)>(id).ok()
}

fn err(e: impl Into<StateError>) -> PinError {
    PinError::Shared(e.into())
}

pub(super) struct PgPins {
    shared: Shared,
}

impl PgPins {
    pub(super) async fn open(shared: Shared) -> Result<PgPins, PinError> {
        shared.ensure_schema(SCHEMA).await.map_err(err)?;
        Ok(PgPins { shared })
    }

    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(super) async fn row(&self, target: &str, tool: &str) -> Result<Option<Row>, PinError> {
        let session = self.shared.session().await.map_err(err)?;
        read(session.client(), target, tool).await
    }

    /// Every pin, for a full re-read.
    pub(super) async fn all(&self) -> Result<Vec<((String, String), Row)>, PinError> {
        let session = self.shared.session().await.map_err(err)?;
        let rows = session
            .client()
            .query(
                "SELECT target, tool, fingerprint, pending FROM portcullis_pins",
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    Row {
                        fingerprint: r.get(2),
                        pending: r.get(3),
                    },
                )
            })
            .collect())
    }

    /// As the SQLite store's check, in one transaction under the pins lock. The first
    /// fingerprint of a tool is inserted with `ON CONFLICT DO NOTHING` and the row read back
    /// whichever way that went, so two replicas pinning one tool at once end with one pin
    /// (the first's), and the second sees a change if its fingerprint differs.
    pub(super) async fn check(
        &self,
        target: &str,
        tool: &str,
        seen: &str,
    ) -> Result<(PinCheck, Row), PinError> {
        let tx = self.shared.exclusive(LOCK).await.map_err(err)?;
        let c = tx.client();
        let inserted = c
            .execute(
                "INSERT INTO portcullis_pins (target, tool, fingerprint) VALUES ($1, $2, $3)
                 ON CONFLICT (target, tool) DO NOTHING",
                &[&target, &tool, &seen],
            )
            .await
            .map_err(err)?;
        if inserted == 1 {
            announce(&tx, target, tool).await?;
            tx.commit().await.map_err(err)?;
            return Ok((
                PinCheck::New,
                Row {
                    fingerprint: seen.to_string(),
                    pending: None,
                },
            ));
        }
        let row = c
            .query_one(
                "SELECT fingerprint, pending FROM portcullis_pins WHERE target = $1 AND tool = $2",
                &[&target, &tool],
            )
            .await
            .map_err(err)?;
        let (pinned, pending): (String, Option<String>) = (row.get(0), row.get(1));
        let checked = if pinned == seen {
            if pending.is_some() {
                // The upstream went back to the pinned tool: nothing awaits acceptance.
                c.execute(
                    "UPDATE portcullis_pins SET pending = NULL WHERE target = $1 AND tool = $2",
                    &[&target, &tool],
                )
                .await
                .map_err(err)?;
                announce(&tx, target, tool).await?;
            }
            (
                PinCheck::Unchanged,
                Row {
                    fingerprint: pinned,
                    pending: None,
                },
            )
        } else {
            let first_report = pending.as_deref() != Some(seen);
            if first_report {
                c.execute(
                    "UPDATE portcullis_pins SET pending = $3 WHERE target = $1 AND tool = $2",
                    &[&target, &tool, &seen],
                )
                .await
                .map_err(err)?;
                announce(&tx, target, tool).await?;
            }
            (
                PinCheck::Changed {
                    pinned: pinned.clone(),
                    seen: seen.to_string(),
                    first_report,
                },
                Row {
                    fingerprint: pinned,
                    pending: Some(seen.to_string()),
                },
            )
        };
        tx.commit().await.map_err(err)?;
        Ok(checked)
    }

    pub(super) async fn accept_exact(
        &self,
        target: &str,
        tool: &str,
        expected: &str,
    ) -> Result<(String, String), PinError> {
        let tx = self.shared.exclusive(LOCK).await.map_err(err)?;
        let row = read(tx.client(), target, tool).await?;
        let accepted = acceptable(target, tool, row, expected);
        if accepted.is_ok() {
            tx.client()
                .execute(
                    "UPDATE portcullis_pins SET fingerprint = pending, pending = NULL, pinned_at = now()
                     WHERE target = $1 AND tool = $2 AND pending = $3",
                    &[&target, &tool, &expected],
                )
                .await
                .map_err(err)?;
            announce(&tx, target, tool).await?;
        }
        tx.commit().await.map_err(err)?;
        accepted
    }

    pub(super) async fn pending_changes(&self) -> Result<Vec<PendingPin>, PinError> {
        let session = self.shared.session().await.map_err(err)?;
        let rows = session
            .client()
            .query(
                "SELECT target, tool, fingerprint, pending FROM portcullis_pins
                 WHERE pending IS NOT NULL ORDER BY target, tool",
                &[],
            )
            .await
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| PendingPin {
                target: r.get(0),
                tool: r.get(1),
                pinned: r.get(2),
                pending: r.get(3),
            })
            .collect())
    }
}

/// Tells the other replicas, when `tx` commits, that the pin of `tool` on `target` changed.
async fn announce(tx: &Tx, target: &str, tool: &str) -> Result<(), PinError> {
    Shared::announce(tx, TOPIC, &id_of(target, tool))
        .await
        .map_err(err)
}

/// The pin of `tool` on `target`, if there is one, read on `client` (a session's or a
/// transaction's).
async fn read(
    client: &portcullis_state::Client,
    target: &str,
    tool: &str,
) -> Result<Option<Row>, PinError> {
    let row = client
        .query_opt(
            "SELECT fingerprint, pending FROM portcullis_pins WHERE target = $1 AND tool = $2",
            &[&target, &tool],
        )
        .await
        .map_err(err)?;
    Ok(row.map(|r| Row {
        fingerprint: r.get(0),
        pending: r.get(1),
    }))
}
