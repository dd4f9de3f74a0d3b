//! Console sessions in the PostgreSQL database replicas share (`[state] backend =
//! "postgres"`): signed in through one replica, the browser is signed in on all of them, and
//! a sign-out through any ends the session everywhere.
//!
//! A row per session, keyed by the SHA-256 of its cookie (never the cookie), with the
//! database's clock for both timeouts. What a request costs: a session read in the last
//! [`CACHE_TTL`] is answered from memory, so a busy console makes one query per session per
//! second per replica (which also moves its idle clock). An ended session is announced
//! (topic `console_session`, its public handle) and dropped from every replica's memory at
//! once; a replica that missed the notification drops it within [`CACHE_TTL`] anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use portcullis_model::Identity;
use portcullis_state::{Change, Shared};

use super::auth::{Ended, KeptDecision, Method};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portcullis_console_sessions (
    key BYTEA PRIMARY KEY,
    handle TEXT NOT NULL,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    identity TEXT NOT NULL,
    csrf TEXT NOT NULL,
    method TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    kept TEXT
);
CREATE INDEX IF NOT EXISTS portcullis_console_sessions_person
    ON portcullis_console_sessions (issuer, subject);
";

/// The advisory lock of sign-ins and sign-outs.
const LOCK: &str = "portcullis console sessions";
/// The notification topic of an ended session.
const TOPIC: &str = "console_session";
/// How long a session read from the database is believed without asking again.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(1);

/// What a request needs of a live session.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) identity: Identity,
    pub(crate) csrf: String,
    pub(crate) handle: String,
}

struct Cached {
    live: Live,
    read_at: Instant,
    /// When one of the timeouts ends it, as the database counted at `read_at`.
    ends_at: Instant,
    /// Whether the read counted as the person's activity (moved the idle clock).
    touched: bool,
}

/// A session to store.
pub(crate) struct NewSession<'a> {
    /// SHA-256 of the cookie.
    pub(crate) key: [u8; 32],
    pub(crate) handle: &'a str,
    pub(crate) identity: &'a Identity,
    pub(crate) csrf: &'a str,
    pub(crate) method: Method,
    pub(crate) kept: Option<&'a KeptDecision>,
}

pub(crate) struct SharedSessions {
    shared: Shared,
    idle: Duration,
    absolute: Duration,
    /// The table is made and the follower started on first use (the console's router is
    /// built outside the runtime's tasks).
    ready: tokio::sync::OnceCell<()>,
    cache: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
}

fn err(e: impl Into<portcullis_state::StateError>) -> String {
    format!("the shared console sessions: {}", e.into())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl SharedSessions {
    pub(crate) fn new(shared: Shared, idle: Duration, absolute: Duration) -> SharedSessions {
        SharedSessions {
            shared,
            idle,
            absolute,
            ready: tokio::sync::OnceCell::new(),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ready(&self) -> Result<(), String> {
        self.ready
            .get_or_try_init(|| async {
                self.shared.ensure_schema(SCHEMA).await.map_err(err)?;
                tokio::spawn(follow(Arc::downgrade(&self.cache), self.shared.changes()));
                Ok::<_, String>(())
            })
            .await
            .map(|_| ())
    }

    /// Stores a new session under `key`, ending past-limit ones as the in-memory table does
    /// (the person's oldest past `per_person`, the oldest of all past `max`).
    pub(crate) async fn create(
        &self,
        new: NewSession<'_>,
        (per_person, max): (usize, usize),
    ) -> Result<(), String> {
        let NewSession {
            key,
            handle,
            identity,
            csrf,
            method,
            kept,
        } = new;
        self.ready().await?;
        let identity_json = serde_json::to_string(identity).map_err(|e| e.to_string())?;
        let kept = kept
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| e.to_string())?;
        let tx = self.shared.exclusive(LOCK).await.map_err(err)?;
        let c = tx.client();
        c.execute(
            "DELETE FROM portcullis_console_sessions
             WHERE created_at <= now() - make_interval(secs => $1)
                OR last_seen <= now() - make_interval(secs => $2)",
            &[&secs(self.absolute), &secs(self.idle)],
        )
        .await
        .map_err(err)?;
        let mut ended = c
            .query(
                "DELETE FROM portcullis_console_sessions WHERE key IN (
                   SELECT key FROM portcullis_console_sessions WHERE issuer = $1 AND subject = $2
                   ORDER BY created_at DESC OFFSET $3)
                 RETURNING handle",
                &[
                    &identity.issuer,
                    &identity.subject,
                    &(per_person.saturating_sub(1) as i64),
                ],
            )
            .await
            .map_err(err)?;
        ended.extend(
            c.query(
                "DELETE FROM portcullis_console_sessions WHERE key IN (
                   SELECT key FROM portcullis_console_sessions ORDER BY created_at DESC OFFSET $1)
                 RETURNING handle",
                &[&(max.saturating_sub(1) as i64)],
            )
            .await
            .map_err(err)?,
        );
        for row in &ended {
            Shared::announce(&tx, TOPIC, row.get::<_, &str>(0))
                .await
                .map_err(err)?;
        }
        c.execute(
            "INSERT INTO portcullis_console_sessions
               (key, handle, issuer, subject, identity, csrf, method, kept)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &&key[..],
                &handle,
                &identity.issuer,
                &identity.subject,
                &identity_json,
                &csrf,
                &method.as_str(),
                &kept,
            ],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }

    /// The live session of `key` (from memory when read in the last [`CACHE_TTL`]). One
    /// found timed out is deleted, and reported as such by the one replica that deleted it.
    /// The database unreachable: no session (fail closed), logged.
    pub(crate) async fn get(&self, key: [u8; 32], touch: bool) -> Result<Live, Ended> {
        let now = Instant::now();
        if let Some(cached) = self.cache().get(&key)
            && now.duration_since(cached.read_at) < CACHE_TTL
            && now < cached.ends_at
            && (cached.touched || !touch)
        {
            return Ok(cached.live.clone());
        }
        match self.read(key, touch).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!("console: cannot read a session: {e}");
                self.cache().remove(&key);
                Err(Ended::Unknown)
            }
        }
    }

    async fn read(&self, key: [u8; 32], touch: bool) -> Result<Result<Live, Ended>, String> {
        self.ready().await?;
        let session = self.shared.session().await.map_err(err)?;
        let read_at = Instant::now();
        let row = session
            .client()
            .query_opt(
                "UPDATE portcullis_console_sessions
                 SET last_seen = CASE WHEN $4 THEN now() ELSE last_seen END
                 WHERE key = $1
                   AND created_at > now() - make_interval(secs => $2)
                   AND last_seen > now() - make_interval(secs => $3)
                 RETURNING identity, csrf, handle,
                   LEAST(EXTRACT(EPOCH FROM created_at + make_interval(secs => $2) - now()),
                         EXTRACT(EPOCH FROM last_seen + make_interval(secs => $3) - now()))::float8",
                &[&&key[..], &secs(self.absolute), &secs(self.idle), &touch],
            )
            .await
            .map_err(err)?;
        if let Some(row) = row {
            let identity: Identity =
                serde_json::from_str(row.get(0)).map_err(|e| format!("a stored session: {e}"))?;
            let live = Live {
                identity,
                csrf: row.get(1),
                handle: row.get(2),
            };
            let left = Duration::try_from_secs_f64(row.get::<_, f64>(3)).unwrap_or_default();
            self.cache().insert(
                key,
                Cached {
                    live: live.clone(),
                    read_at,
                    ends_at: read_at + left,
                    touched: touch,
                },
            );
            return Ok(Ok(live));
        }
        self.cache().remove(&key);
        // Not live: timed out (delete it, and say so once), or never there.
        let gone = session
            .client()
            .query_opt(
                "DELETE FROM portcullis_console_sessions WHERE key = $1
                 RETURNING identity, handle, created_at <= now() - make_interval(secs => $2)",
                &[&&key[..], &secs(self.absolute)],
            )
            .await
            .map_err(err)?;
        drop(session);
        let Some(gone) = gone else {
            return Ok(Err(Ended::Unknown));
        };
        let handle: String = gone.get(1);
        self.announce_ended(&handle).await;
        Ok(Err(Ended::TimedOut {
            identity: serde_json::from_str(gone.get(0))
                .map_err(|e| format!("a stored session: {e}"))?,
            handle,
            why: if gone.get(2) {
                "the session reached its absolute lifetime"
            } else {
                "the session was idle too long"
            },
        }))
    }

    /// Tells the other replicas a session ended (outside a write of its own).
    async fn announce_ended(&self, handle: &str) {
        let result = async {
            let tx = self.shared.exclusive(LOCK).await?;
            Shared::announce(&tx, TOPIC, handle).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("console: announcing the end of session {handle}: {e}");
        }
    }

    /// Whether the session is live, without counting as activity; false when the database
    /// cannot say.
    pub(crate) async fn is_live(&self, key: [u8; 32]) -> bool {
        let now = Instant::now();
        if let Some(cached) = self.cache().get(&key)
            && now.duration_since(cached.read_at) < CACHE_TTL
            && now < cached.ends_at
        {
            return true;
        }
        let result = async {
            self.ready().await?;
            let session = self.shared.session().await.map_err(err)?;
            session
                .client()
                .query_opt(
                    "SELECT 1 FROM portcullis_console_sessions
                     WHERE key = $1
                       AND created_at > now() - make_interval(secs => $2)
                       AND last_seen > now() - make_interval(secs => $3)",
                    &[&&key[..], &secs(self.absolute), &secs(self.idle)],
                )
                .await
                .map_err(err)
        }
        .await;
        match result {
            Ok(found) => found.is_some(),
            Err(e) => {
                tracing::error!("console: cannot read a session: {e}");
                false
            }
        }
    }

    /// Ends the session on every replica; how it had signed in, if it existed.
    pub(crate) async fn end(&self, key: [u8; 32]) -> Result<Option<Method>, String> {
        self.cache().remove(&key);
        self.ready().await?;
        let tx = self.shared.exclusive(LOCK).await.map_err(err)?;
        let row = tx
            .client()
            .query_opt(
                "DELETE FROM portcullis_console_sessions WHERE key = $1 RETURNING handle, method",
                &[&&key[..]],
            )
            .await
            .map_err(err)?;
        let method = match &row {
            Some(row) => {
                Shared::announce(&tx, TOPIC, row.get::<_, &str>(0))
                    .await
                    .map_err(err)?;
                Some(if row.get::<_, &str>(1) == Method::Oidc.as_str() {
                    Method::Oidc
                } else {
                    Method::ApiKey
                })
            }
            None => None,
        };
        tx.commit().await.map_err(err)?;
        self.cache().remove(&key);
        Ok(method)
    }

    /// The decision kept through sign-in, once (whichever replica asks first).
    pub(crate) async fn take_kept(&self, key: [u8; 32]) -> Option<KeptDecision> {
        let result = async {
            self.ready().await?;
            let session = self.shared.session().await.map_err(err)?;
            let row = session
                .client()
                .query_opt(
                    "WITH old AS (
                       SELECT key, kept FROM portcullis_console_sessions
                       WHERE key = $1 AND kept IS NOT NULL FOR UPDATE)
                     UPDATE portcullis_console_sessions s SET kept = NULL FROM old
                     WHERE s.key = old.key RETURNING old.kept",
                    &[&&key[..]],
                )
                .await
                .map_err(err)?;
            match row {
                Some(row) => serde_json::from_str(row.get(0))
                    .map(Some)
                    .map_err(|e| format!("a stored session: {e}")),
                None => Ok(None),
            }
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::error!("console: cannot read what was typed before sign-in: {e}");
            None
        })
    }
}

/// Drops ended sessions from memory as replicas announce them, everything on a resync,
/// until the sessions are dropped.
async fn follow(
    cache: Weak<Mutex<HashMap<[u8; 32], Cached>>>,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Change::Resync,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Row { topic, id } if topic == TOPIC => {
                cache.retain(|_, c| c.live.handle != id);
            }
            Change::Row { .. } => {}
            Change::Resync => cache.clear(),
        }
    }
}

/// Against the real PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust), in a database of
/// the test's own, dropped at the end.
#[cfg(test)]
mod tests {
    use portcullis_config::state::{State as StateConfig, StateBackend};
    use portcullis_model::{AuthMethod, IdentityKind};
    use sha2::{Digest as _, Sha256};

    use super::*;

    const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres sslmode=disable";

    async fn admin() -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&format!("{SERVER} dbname=postgres"), tokio_postgres::NoTls)
                .await
                .expect("the test PostgreSQL at 127.0.0.1:5432 (user postgres) must be running");
        tokio::spawn(conn);
        client
    }

    struct Db {
        name: String,
    }

    impl Db {
        async fn create(what: &str) -> Db {
            let name = format!(
                "portcullis_console_{what}_{}_{}",
                std::process::id(),
                rand::random::<u32>()
            );
            admin()
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            Db { name }
        }

        async fn replica(&self, name: &str) -> Shared {
            let settings = StateConfig {
                backend: StateBackend::Postgres,
                url: Some(portcullis_config::sinks::Secret::Literal(format!(
                    "{SERVER} dbname={}",
                    self.name
                ))),
                ..StateConfig::default()
            };
            Shared::connect(&settings, name).await.unwrap()
        }

        async fn client(&self) -> tokio_postgres::Client {
            let (client, conn) = tokio_postgres::connect(
                &format!("{SERVER} dbname={}", self.name),
                tokio_postgres::NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            client
        }
    }

    /// Dropped however the test ends (on a runtime of its own: the test's may be unwinding).
    impl Drop for Db {
        fn drop(&mut self) {
            let name = self.name.clone();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        admin()
                            .await
                            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                            .await
                    })
            })
            .join()
            .expect("dropping the test database");
        }
    }

    fn person(subject: &str) -> Identity {
        Identity {
            issuer: "https://idp.example.com".into(),
            subject: subject.into(),
            display_name: None,
            kind: IdentityKind::Human,
            groups: vec!["approvers".into()],
            auth_method: AuthMethod::Oidc,
            credential_id: None,
            act: Vec::new(),
        }
    }

    fn key(cookie: &str) -> [u8; 32] {
        Sha256::digest(cookie.as_bytes()).into()
    }

    const LIMITS: (usize, usize) = (16, 10_000);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_signed_in_on_one_replica_works_on_another_until_signed_out() {
        let db = Db::create("share").await;
        let (a, b) = (db.replica("a").await, db.replica("b").await);
        let (idle, absolute) = (Duration::from_secs(60), Duration::from_secs(3600));
        let on_a = SharedSessions::new(a.clone(), idle, absolute);
        let on_b = SharedSessions::new(b.clone(), idle, absolute);
        let cookie = "the-cookie-value-only-the-browser-has";
        on_a.create(
            NewSession {
                key: key(cookie),
                handle: "cs_0123",
                identity: &person("alice"),
                csrf: "csrf-1",
                method: Method::Oidc,
                kept: None,
            },
            LIMITS,
        )
        .await
        .unwrap();

        // Signed in through A: B knows the session, with its CSRF token.
        let Ok(live) = on_b.get(key(cookie), true).await else {
            panic!("B does not know the session signed in on A");
        };
        assert_eq!(live.identity, person("alice"));
        assert_eq!(
            (live.csrf.as_str(), live.handle.as_str()),
            ("csrf-1", "cs_0123")
        );
        assert!(on_b.is_live(key(cookie)).await);
        // The table holds the cookie's hash, never the cookie.
        let rows = db
            .client()
            .await
            .query(
                "SELECT key, t::text FROM portcullis_console_sessions t",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, &[u8]>(0), &key(cookie)[..]);
        assert!(!rows[0].get::<_, &str>(1).contains(cookie));

        // Signed out through A: B refuses the cookie (it was read on B a moment ago, so
        // this is the notification, not the cache running out).
        assert!(on_b.get(key(cookie), true).await.is_ok());
        let start = Instant::now();
        assert!(matches!(
            on_a.end(key(cookie)).await,
            Ok(Some(Method::Oidc))
        ));
        loop {
            match on_b.get(key(cookie), true).await {
                Err(Ended::Unknown) => break,
                Err(Ended::TimedOut { .. }) => panic!("reported as timed out"),
                Ok(_) => {
                    assert!(start.elapsed() < CACHE_TTL * 3, "B still takes the cookie");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        eprintln!("a sign-out on A refused on B after {:?}", start.elapsed());
        assert!(start.elapsed() < CACHE_TTL, "not the notification");
        assert!(!on_b.is_live(key(cookie)).await);
        assert!(matches!(on_b.end(key(cookie)).await, Ok(None)));

        a.leave().await;
        b.leave().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_timed_out_session_is_reported_once_and_kept_text_taken_once() {
        let db = Db::create("timeout").await;
        let (a, b) = (db.replica("a").await, db.replica("b").await);
        let (idle, absolute) = (Duration::from_millis(1500), Duration::from_secs(3600));
        let on_a = SharedSessions::new(a.clone(), idle, absolute);
        let on_b = SharedSessions::new(b.clone(), idle, absolute);
        let kept = KeptDecision {
            approval: "ap_1".into(),
            approve: false,
            reason: "not on a Friday".into(),
        };
        on_a.create(
            NewSession {
                key: key("c"),
                handle: "cs_c",
                identity: &person("bob"),
                csrf: "csrf",
                method: Method::ApiKey,
                kept: Some(&kept),
            },
            LIMITS,
        )
        .await
        .unwrap();
        let taken = on_b.take_kept([0u8; 32]).await;
        assert!(taken.is_none(), "another session's text");
        let taken = on_b
            .take_kept(key("c"))
            .await
            .expect("kept through sign-in");
        assert_eq!(taken.reason, "not on a Friday");
        assert!(on_a.take_kept(key("c")).await.is_none(), "taken once");

        // Idle past the timeout (background reads do not count as activity).
        assert!(on_a.get(key("c"), false).await.is_ok());
        tokio::time::sleep(idle + Duration::from_millis(200)).await;
        assert!(!on_a.is_live(key("c")).await);
        match on_b.get(key("c"), true).await {
            Err(Ended::TimedOut { why, handle, .. }) => {
                assert_eq!(handle, "cs_c");
                assert_eq!(why, "the session was idle too long");
            }
            _ => panic!("not reported as timed out"),
        }
        assert!(matches!(
            on_a.get(key("c"), true).await,
            Err(Ended::Unknown)
        ));

        a.leave().await;
        b.leave().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_person_past_the_limit_loses_their_oldest_session_on_every_replica() {
        let db = Db::create("limit").await;
        let (a, b) = (db.replica("a").await, db.replica("b").await);
        let (idle, absolute) = (Duration::from_secs(60), Duration::from_secs(3600));
        let on_a = SharedSessions::new(a.clone(), idle, absolute);
        let on_b = SharedSessions::new(b.clone(), idle, absolute);
        for i in 0..3 {
            let sessions = if i % 2 == 0 { &on_a } else { &on_b };
            sessions
                .create(
                    NewSession {
                        key: key(&format!("c{i}")),
                        handle: &format!("cs_{i}"),
                        identity: &person("carol"),
                        csrf: "csrf",
                        method: Method::Oidc,
                        kept: None,
                    },
                    (2, 10_000),
                )
                .await
                .unwrap();
        }
        on_b.create(
            NewSession {
                key: key("d"),
                handle: "cs_d",
                identity: &person("dave"),
                csrf: "csrf",
                method: Method::Oidc,
                kept: None,
            },
            (2, 10_000),
        )
        .await
        .unwrap();
        assert!(matches!(
            on_a.get(key("c0"), true).await,
            Err(Ended::Unknown)
        ));
        for cookie in ["c1", "c2", "d"] {
            assert!(on_a.get(key(cookie), true).await.is_ok(), "{cookie}");
        }
        a.leave().await;
        b.leave().await;
    }
}
