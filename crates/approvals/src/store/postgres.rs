//! Approvals and grants in the PostgreSQL database replicas share.
//!
//! The same shape as the SQLite store (each record whole as JSON beside the columns queries
//! need), plus who holds a request (`replica`: the waiting caller is connected there) and
//! when an approved request was forwarded (`consumed_at`, set once by a conditional
//! `UPDATE`). Every write announces itself with `pg_notify` in its own transaction, so the
//! other replicas hear of it exactly when it commits.

use portcullis_state::Shared;

use super::{StoreError, millis};
use crate::types::{Approval, Grant};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portcullis_approvals (
    seq BIGSERIAL,
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    replica TEXT NOT NULL,
    consumed_at TIMESTAMPTZ,
    consumed_by TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_approvals_pending
    ON portcullis_approvals (status) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS portcullis_approvals_seq ON portcullis_approvals (seq);
CREATE TABLE IF NOT EXISTS portcullis_grants (
    seq BIGSERIAL,
    id TEXT PRIMARY KEY,
    holder_issuer TEXT NOT NULL,
    holder_subject TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    closed BOOLEAN NOT NULL DEFAULT false,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS portcullis_grants_open ON portcullis_grants (closed) WHERE NOT closed;
";

/// The advisory lock every change to approvals and grants takes.
const LOCK: &str = "portcullis approvals";

pub(crate) struct PgStore {
    shared: Shared,
}

pub(crate) struct PgTx {
    tx: portcullis_state::Tx,
    shared: Shared,
    replica: String,
}

fn parse<T: serde::de::DeserializeOwned>(
    rows: &[tokio_postgres::Row],
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(StoreError::Corrupt))
        .collect()
}

impl PgStore {
    pub(crate) async fn open(shared: Shared) -> Result<PgStore, StoreError> {
        shared.ensure_schema(SCHEMA).await?;
        Ok(PgStore { shared })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) async fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx {
            tx: self.shared.exclusive(LOCK).await?,
            shared: self.shared.clone(),
            replica: self.shared.replica().to_string(),
        })
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let session = self.shared.session().await?;
        Ok(session.client().query(sql, params).await?)
    }

    pub(crate) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let rows = self
            .query(
                "SELECT body FROM portcullis_approvals WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(parse(&rows)?.pop())
    }

    pub(crate) async fn approvals(
        &self,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = if pending_only {
            self.query(
                "SELECT body FROM portcullis_approvals WHERE status = 'pending' ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )
            .await?
        } else {
            self.query(
                "SELECT body FROM portcullis_approvals ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )
            .await?
        };
        parse(&rows)
    }

    pub(crate) async fn grants(&self, limit: usize) -> Result<Vec<Grant>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                "SELECT body FROM portcullis_grants ORDER BY seq DESC LIMIT $1",
                &[&limit],
            )
            .await?;
        parse(&rows)
    }

    pub(crate) async fn open_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let rows = self
            .query(
                "SELECT body FROM portcullis_grants WHERE NOT closed ORDER BY seq DESC",
                &[],
            )
            .await?;
        parse(&rows)
    }
}

impl PgTx {
    fn client(&self) -> &tokio_postgres::Client {
        self.tx.client()
    }

    pub(crate) async fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT body FROM portcullis_approvals WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(parse(&rows)?.pop())
    }

    pub(crate) async fn put_approval(&self, a: &Approval) -> Result<(), StoreError> {
        let body = serde_json::to_string(a).expect("approval serialises");
        let kind = serde_json::to_value(a.kind).expect("kind serialises");
        self.client()
            .execute(
                "INSERT INTO portcullis_approvals (id, status, kind, expires_ms, replica, body)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE
                   SET status = excluded.status, expires_ms = excluded.expires_ms, body = excluded.body",
                &[
                    &a.id,
                    &a.status.as_str(),
                    &kind.as_str().unwrap_or_default(),
                    &millis(&a.expires_at),
                    &self.replica,
                    &body,
                ],
            )
            .await?;
        Shared::announce(&self.tx, "approval", &a.id).await?;
        Ok(())
    }

    /// Pending held requests of `replica` (this one when `None`).
    pub(crate) async fn pending_requests_of(
        &self,
        replica: Option<&str>,
    ) -> Result<Vec<Approval>, StoreError> {
        let replica = replica.unwrap_or(&self.replica);
        let rows = self
            .client()
            .query(
                "SELECT body FROM portcullis_approvals
                 WHERE status = 'pending' AND kind = 'request' AND replica = $1 ORDER BY seq",
                &[&replica],
            )
            .await?;
        parse(&rows)
    }

    pub(crate) async fn due_approvals(&self, now_ms: i64) -> Result<Vec<Approval>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT body FROM portcullis_approvals
                 WHERE status = 'pending' AND expires_ms <= $1 ORDER BY seq",
                &[&now_ms],
            )
            .await?;
        parse(&rows)
    }

    pub(crate) async fn due_grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT body FROM portcullis_grants WHERE NOT closed AND expires_ms <= $1 ORDER BY seq",
                &[&now_ms],
            )
            .await?;
        parse(&rows)
    }

    pub(crate) async fn put_grant(&self, g: &Grant, closed: bool) -> Result<(), StoreError> {
        let body = serde_json::to_string(g).expect("grant serialises");
        self.client()
            .execute(
                "INSERT INTO portcullis_grants (id, holder_issuer, holder_subject, expires_ms, closed, body)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE
                   SET closed = excluded.closed, expires_ms = excluded.expires_ms, body = excluded.body",
                &[
                    &g.id,
                    &g.holder.issuer,
                    &g.holder.subject,
                    &millis(&g.expires_at),
                    &closed,
                    &body,
                ],
            )
            .await?;
        Shared::announce(&self.tx, "grant", &g.id).await?;
        Ok(())
    }

    pub(crate) async fn grant(&self, id: &str) -> Result<Option<(Grant, bool)>, StoreError> {
        let rows = self
            .client()
            .query(
                "SELECT body, closed FROM portcullis_grants WHERE id = $1",
                &[&id],
            )
            .await?;
        rows.first()
            .map(|r| {
                serde_json::from_str(r.get::<_, &str>(0))
                    .map(|g| (g, r.get::<_, bool>(1)))
                    .map_err(StoreError::Corrupt)
            })
            .transpose()
    }

    pub(crate) async fn consume(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .client()
            .execute(
                "UPDATE portcullis_approvals SET consumed_at = now(), consumed_by = $2
                 WHERE id = $1 AND status = 'approved' AND consumed_at IS NULL",
                &[&id, &self.replica],
            )
            .await?;
        Ok(n == 1)
    }

    pub(crate) async fn dead_replicas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.shared.dead_replicas(&self.tx).await?)
    }

    pub(crate) async fn forget_replica(&self, replica: &str) -> Result<(), StoreError> {
        self.shared.forget_replica(&self.tx, replica).await?;
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit().await?)
    }
}
