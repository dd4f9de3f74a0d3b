//! Control state shared by Portcullis replicas, in PostgreSQL (`[state] backend = "postgres"`).
//!
//! One gateway keeps its control state (holds and decisions, grants, tool pins) in SQLite
//! files of its own. Several replicas behind a load balancer share one PostgreSQL database
//! instead, and this crate is what they share it through:
//!
//! - [`Shared::exclusive`]: a transaction holding a named advisory lock, so that replicas
//!   change one kind of state one at a time, as one process does behind its own lock. What
//!   a transaction wrote is committed when it ends, whichever way it ends (as SQLite writes
//!   each statement at once), so an early return never leaves a lock or a half-open
//!   transaction behind.
//! - [`Shared::changes`]: every replica `LISTEN`s on one channel; a change announces itself
//!   with `pg_notify` inside its own transaction (delivered only if it commits). NOTIFY is
//!   not durable: a replica that reconnects is sent [`Change::Resync`] and must re-read
//!   what it waits on, and each replica also re-reads on a timer (`state.poll`).
//! - Liveness: each replica (named by `gateway.id`) beats a heartbeat row every
//!   `state.heartbeat`; [`Shared::dead_replicas`] names those silent for
//!   `state.replica_timeout`, whose held requests the others then mark abandoned. Two live
//!   replicas may not share a name: a start with the name of a live one waits for it to go
//!   quiet, then refuses.
//!
//! Heartbeats are stamped by the database's clock (`now()`), never the replicas': replicas
//! whose clocks disagree still agree on who is alive. (Approvals' and grants' expiry times
//! are written by the replica that made them, on its clock: keep replicas' clocks in sync.)
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use portcullis_config::state::{State as StateConfig, StateTimings};
use rand::RngCore as _;
use tokio::sync::{Mutex, OwnedMutexGuard, broadcast, watch};
use tokio_postgres::AsyncMessage;
/// The connection type `client()` lends, so callers can name it in helpers of their own.
pub use tokio_postgres::Client;

/// The one notification channel every replica listens on.
pub const CHANNEL: &str = "portcullis_state";

/// Why the shared state could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state.url: {0}")]
    Config(String),
    #[error("the state database: {0}{hint}", hint = tls_hint(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "another replica named {0:?} (gateway.id) is alive in the shared state: give each replica its own gateway.id"
    )]
    ReplicaAlive(String),
}

/// What to do about a certificate the state database's client does not trust.
fn tls_hint(e: &tokio_postgres::Error) -> &'static str {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if text.to_lowercase().contains("certificate") {
        " (give the CA that signed the server's certificate as state.ca, and connect by a name the certificate carries; sslmode=disable only on a trusted network)"
    } else {
        ""
    }
}

/// A change another replica (or this one) committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One row of `topic` (for example `approval` or `grant`) changed.
    Row { topic: String, id: String },
    /// Notifications may have been missed (the listening connection was re-made): re-read
    /// everything waited on.
    Resync,
}

/// The shared state. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    /// The connection for queries and transactions; `None` until made or after it broke.
    conn: Arc<Mutex<Option<Client>>>,
    replica: String,
    /// Random per process: tells this run's heartbeat row from a previous run's.
    instance: String,
    timings: StateTimings,
    changes: broadcast::Sender<Change>,
    /// Whether the listening connection is up now.
    listening: watch::Sender<bool>,
    /// Set when another process took this replica's name.
    displaced: std::sync::atomic::AtomicBool,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Clone)]
struct Connector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Connector {
    fn new(settings: &StateConfig) -> Result<Connector, StateError> {
        let url = settings
            .url
            .as_ref()
            .ok_or_else(|| StateError::Config("not set".into()))?
            .read()
            .map_err(StateError::Config)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StateError::Config(format!("not a PostgreSQL connection string: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("portcullis");
        }
        // TLS unless turned off outright: `prefer` (tokio-postgres' default) would go on in
        // clear text when anyone on the path answers "no TLS", password included.
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        // A database that hangs (rather than refusing) must not hang the replica: dead peers
        // are noticed in seconds, a lock is not waited on for ever, and a transaction left
        // open by a stuck replica is ended by the server.
        config.connect_timeout(Duration::from_secs(5));
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(10));
        let theirs = config.get_options().unwrap_or_default().to_string();
        config.options(format!(
            "{theirs} -c lock_timeout=10s -c statement_timeout=15s -c idle_in_transaction_session_timeout=30s"
        ).trim_start().to_string());
        let tls = client_tls(settings.ca.as_deref()).map_err(StateError::Config)?;
        Ok(Connector {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        })
    }

    /// A connection whose messages are driven on a task of its own; `notices` gets the
    /// asynchronous messages (notifications) when given.
    async fn connect(
        &self,
        notices: Option<tokio::sync::mpsc::UnboundedSender<AsyncMessage>>,
    ) -> Result<Client, StateError> {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        if let Some(notices) = &notices {
                            let _ = notices.send(message);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("state database connection ended: {e}");
                        break;
                    }
                }
            }
        });
        Ok(client)
    }
}

/// rustls with the system's roots and `ca`, as the rest of the gateway's clients.
fn client_tls(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("state.ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("state.ca {} holds no certificate", ca.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("state.ca {}: {e}", ca.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

const REPLICAS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portcullis_replicas (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
";

impl Shared {
    /// Connects, creates the replicas table if needed, claims `replica` (waiting up to one
    /// `replica_timeout` for a previous holder of the name to go quiet), and starts the
    /// heartbeat and the listener.
    pub async fn connect(settings: &StateConfig, replica: &str) -> Result<Shared, StateError> {
        let connector = Connector::new(settings)?;
        let client = connector.connect(None).await?;
        let mut instance = [0u8; 8];
        rand::rng().fill_bytes(&mut instance);
        let shared = Shared {
            inner: Arc::new(Inner {
                connector,
                conn: Arc::new(Mutex::new(Some(client))),
                replica: replica.to_string(),
                instance: hex::encode(instance),
                timings: settings.timings(),
                changes: broadcast::channel(1024).0,
                listening: watch::Sender::new(false),
                displaced: std::sync::atomic::AtomicBool::new(false),
                tasks: std::sync::Mutex::new(Vec::new()),
            }),
        };
        shared.ensure_schema(REPLICAS_SCHEMA).await?;
        shared.claim().await?;
        let heartbeat = tokio::spawn(shared.clone().beat());
        let listener = tokio::spawn(shared.clone().listen());
        shared
            .inner
            .tasks
            .lock()
            .expect("lock")
            .extend([heartbeat, listener]);
        // The first LISTEN is in place before anything is held, so no change is missed.
        let mut listening = shared.inner.listening.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), listening.wait_for(|up| *up)).await;
        Ok(shared)
    }

    /// This replica's name (`gateway.id`).
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    pub fn timings(&self) -> StateTimings {
        self.inner.timings
    }

    /// Changes as they are announced. A receiver that lags gets `Lagged` from the channel:
    /// treat it as [`Change::Resync`].
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Whether notifications arrive now (the listening connection is up), and this replica
    /// still holds its name.
    pub fn listening(&self) -> bool {
        *self.inner.listening.borrow()
            && !self
                .inner
                .displaced
                .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs `ddl` (idempotent `CREATE ... IF NOT EXISTS` statements) once across replicas
    /// starting together: concurrent `CREATE TABLE IF NOT EXISTS` can collide in the catalog.
    pub async fn ensure_schema(&self, ddl: &str) -> Result<(), StateError> {
        let tx = self.exclusive("portcullis schema").await?;
        tx.client().batch_execute(ddl).await?;
        tx.commit().await
    }

    /// The connection, made again if it broke. Held exclusively until dropped.
    pub async fn session(&self) -> Result<Session, StateError> {
        let mut guard = self.inner.conn.clone().lock_owned().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(self.inner.connector.connect(None).await?);
        }
        Ok(Session { guard })
    }

    /// A transaction holding the advisory lock named `lock` until it ends: replicas change
    /// what `lock` guards one at a time. Ended by [`Tx::commit`]; dropped, it commits in the
    /// background (and the next session waits for that).
    pub async fn exclusive(&self, lock: &str) -> Result<Tx, StateError> {
        let session = self.session().await?;
        // The transaction exists (and ends when dropped) before BEGIN is awaited: a caller
        // that goes away meanwhile leaves no transaction open on the shared connection.
        let tx = Tx {
            guard: Some(session.guard),
        };
        tx.client().batch_execute("BEGIN").await?;
        tx.client()
            .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
            .await?;
        Ok(tx)
    }

    /// Announces a change of row `id` of `topic` to every replica, when `tx` commits.
    pub async fn announce(tx: &Tx, topic: &str, id: &str) -> Result<(), StateError> {
        tx.client()
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &format!("{topic}:{id}")],
            )
            .await?;
        Ok(())
    }

    /// Replicas (other than this one) silent for longer than `replica_timeout`, read in
    /// `tx` (whose lock then covers dealing with them).
    pub async fn dead_replicas(&self, tx: &Tx) -> Result<Vec<String>, StateError> {
        let rows = tx
            .client()
            .query(
                "SELECT id FROM portcullis_replicas
                 WHERE heartbeat_at < now() - make_interval(secs => $1) AND id <> $2",
                &[
                    &self.inner.timings.replica_timeout.as_secs_f64(),
                    &self.inner.replica,
                ],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Forgets replica `id` once what it left has been dealt with, inside `tx`; only if it
    /// is still silent (it may have come back since it was found dead).
    pub async fn forget_replica(&self, tx: &Tx, id: &str) -> Result<bool, StateError> {
        let n = tx
            .client()
            .execute(
                "DELETE FROM portcullis_replicas
                 WHERE id = $1 AND heartbeat_at < now() - make_interval(secs => $2)",
                &[&id, &self.inner.timings.replica_timeout.as_secs_f64()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Stops the heartbeat and the listener without leaving: to the other replicas this
    /// replica then looks hung, and after `replica_timeout` dead. For tests of just that.
    pub fn halt(&self) {
        for task in self.inner.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    /// Stops the heartbeat and the listener and removes this replica's row: a clean stop,
    /// so that a restart under the same name need not wait.
    pub async fn leave(&self) {
        self.halt();
        match self.session().await {
            Ok(session) => {
                if let Err(e) = session
                    .client()
                    .execute(
                        "DELETE FROM portcullis_replicas WHERE id = $1 AND instance = $2",
                        &[&self.inner.replica, &self.inner.instance],
                    )
                    .await
                {
                    tracing::warn!("state: removing this replica's heartbeat: {e}");
                }
            }
            Err(e) => tracing::warn!("state: removing this replica's heartbeat: {e}"),
        }
    }

    /// Takes this replica's name, waiting for a previous holder to go quiet.
    async fn claim(&self) -> Result<(), StateError> {
        let timings = self.inner.timings;
        let give_up = tokio::time::Instant::now() + timings.replica_timeout + timings.heartbeat;
        let mut said = false;
        loop {
            let session = self.session().await?;
            let claimed = session
                .client()
                .query_opt(
                    "INSERT INTO portcullis_replicas (id, instance, started_at, heartbeat_at)
                     VALUES ($1, $2, now(), now())
                     ON CONFLICT (id) DO UPDATE
                       SET instance = excluded.instance, started_at = now(), heartbeat_at = now()
                       WHERE portcullis_replicas.heartbeat_at < now() - make_interval(secs => $3)
                     RETURNING 1",
                    &[
                        &self.inner.replica,
                        &self.inner.instance,
                        &timings.replica_timeout.as_secs_f64(),
                    ],
                )
                .await?;
            drop(session);
            if claimed.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(StateError::ReplicaAlive(self.inner.replica.clone()));
            }
            if !said {
                tracing::warn!(
                    replica = %self.inner.replica,
                    "state: a replica of this name beat its heartbeat recently; waiting up to {:?} for it to go quiet",
                    timings.replica_timeout
                );
                said = true;
            }
            tokio::time::sleep(timings.heartbeat).await;
        }
    }

    /// Beats the heartbeat until aborted. A missed beat is logged and retried next time; if
    /// the row was taken away (others found this replica dead), it is put back.
    async fn beat(self) {
        let mut tick = tokio::time::interval(self.inner.timings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Its own connection: a beat never waits behind a transaction queued on a lock.
        let mut own: Option<Client> = None;
        loop {
            tick.tick().await;
            let result = async {
                if own.as_ref().is_none_or(Client::is_closed) {
                    own = Some(self.inner.connector.connect(None).await?);
                }
                let client = own.as_ref().expect("connected above");
                let beaten = client
                    .execute(
                        "INSERT INTO portcullis_replicas (id, instance, started_at, heartbeat_at)
                         VALUES ($1, $2, now(), now())
                         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
                           WHERE portcullis_replicas.instance = excluded.instance",
                        &[&self.inner.replica, &self.inner.instance],
                    )
                    .await?;
                Ok::<_, StateError>(beaten == 1)
            }
            .await;
            match result {
                Ok(true) => {}
                Ok(false) => {
                    // Another process took this name (this one was silent past the timeout):
                    // two live replicas under one name. Say so, and look unready.
                    if !self
                        .inner
                        .displaced
                        .swap(true, std::sync::atomic::Ordering::SeqCst)
                    {
                        tracing::error!(
                            replica = %self.inner.replica,
                            "state: another process now runs under this replica's name; this one's holds may have been cancelled by it: stop one of them"
                        );
                    }
                }
                Err(e) => {
                    own = None;
                    tracing::warn!("state: heartbeat: {e}");
                }
            }
        }
    }

    /// Listens until aborted, re-connecting with a growing pause, and says
    /// [`Change::Resync`] each time the listening connection is (re)made.
    async fn listen(self) {
        let mut pause = Duration::from_millis(200);
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            match self.inner.connector.connect(Some(tx)).await {
                Ok(client) => match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        pause = Duration::from_millis(200);
                        self.inner.listening.send_replace(true);
                        let _ = self.inner.changes.send(Change::Resync);
                        while let Some(message) = rx.recv().await {
                            if let AsyncMessage::Notification(n) = message
                                && let Some((topic, id)) = n.payload().split_once(':')
                            {
                                let _ = self.inner.changes.send(Change::Row {
                                    topic: topic.to_string(),
                                    id: id.to_string(),
                                });
                            }
                        }
                        // The sender lives in the connection's task: it ended.
                        drop(client);
                        self.inner.listening.send_replace(false);
                        tracing::warn!("state: the listening connection ended; re-connecting");
                    }
                    Err(e) => tracing::warn!("state: LISTEN {CHANNEL}: {e}"),
                },
                Err(e) => tracing::warn!("state: connecting to listen: {e}"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().expect("lock").drain(..) {
            task.abort();
        }
    }
}

/// The state connection, held exclusively.
pub struct Session {
    guard: OwnedMutexGuard<Option<Client>>,
}

impl Session {
    pub fn client(&self) -> &Client {
        self.guard.as_ref().expect("connected in Shared::session")
    }
}

/// A transaction on the state connection, holding an advisory lock. See
/// [`Shared::exclusive`].
pub struct Tx {
    guard: Option<OwnedMutexGuard<Option<Client>>>,
}

impl Tx {
    pub fn client(&self) -> &Client {
        self.guard
            .as_ref()
            .and_then(|g| g.as_ref())
            .expect("a transaction has its connection until it ends")
    }

    /// Commits (releasing the lock); a failed statement inside makes this a rollback,
    /// reported as the error.
    pub async fn commit(mut self) -> Result<(), StateError> {
        let guard = self.guard.take().expect("not yet ended");
        end(guard).await
    }
}

async fn end(mut guard: OwnedMutexGuard<Option<Client>>) -> Result<(), StateError> {
    let Some(client) = guard.as_ref() else {
        return Ok(());
    };
    // After a failed statement PostgreSQL answers COMMIT by rolling back, without an error;
    // that statement's own error already reached whoever ran it.
    match client.batch_execute("COMMIT").await {
        Ok(()) => Ok(()),
        Err(e) => {
            // The connection is in an unknown state: make a new one next time.
            *guard = None;
            Err(e.into())
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The guard moves into the task: the next session waits for this commit, so
            // the order of changes is kept.
            runtime.spawn(async move {
                if let Err(e) = end(guard).await {
                    tracing::error!("state: ending a transaction: {e}");
                }
            });
        }
    }
}
