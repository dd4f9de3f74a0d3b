//! `[state]`: where the control state lives that replicas must share.
//!
//! Control state is what people and the gateway decide between requests: held requests and
//! their decisions, grants, tool pins. One gateway keeps it in SQLite files in its data
//! directory (the default, nothing to run). Several replicas behind one load balancer keep
//! it in one PostgreSQL database, so that a hold made on one replica can be approved through
//! another, and a grant issued on one is honoured by all. The audit log is not control state:
//! each replica keeps its own (its own `gateway.id`, origin and signing key).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::sinks::Secret;
use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// `sqlite` (the default: files in `gateway.data_dir`) or `postgres` (shared by replicas).
    #[serde(default)]
    pub backend: StateBackend,
    /// With `backend = "postgres"`: the connection string (`postgres://user@host/db?sslmode=require`
    /// or `host=... user=...`), as a literal, `{ env = "VAR" }` or `{ file = "path" }`: it may
    /// carry a password.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Extra CA certificates (PEM) for the state database's TLS certificate, beside the
    /// system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How often each replica says it is alive; a replica silent for
    /// `replica_timeout` is taken for dead and the requests it held are marked abandoned.
    #[serde(
        default = "default_heartbeat",
        deserialize_with = "crate::de::de_duration"
    )]
    pub heartbeat: Duration,
    #[serde(
        default = "default_replica_timeout",
        deserialize_with = "crate::de::de_duration"
    )]
    pub replica_timeout: Duration,
    /// How often each replica re-reads the state it waits on even without a notification
    /// (NOTIFY is not durable: a notification sent while a replica reconnects is lost).
    #[serde(default = "default_poll", deserialize_with = "crate::de::de_duration")]
    pub poll: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Sqlite,
    Postgres,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(2)
}
fn default_replica_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_poll() -> Duration {
    Duration::from_secs(3)
}

impl Default for State {
    fn default() -> Self {
        State {
            backend: StateBackend::default(),
            url: None,
            ca: None,
            heartbeat: default_heartbeat(),
            replica_timeout: default_replica_timeout(),
            poll: default_poll(),
        }
    }
}

impl Default for StateTimings {
    fn default() -> Self {
        StateTimings {
            heartbeat: default_heartbeat(),
            replica_timeout: default_replica_timeout(),
            poll: default_poll(),
        }
    }
}

/// The timings of `[state]`, for the state crate (which reads no other part of the file).
#[derive(Debug, Clone, Copy)]
pub struct StateTimings {
    pub heartbeat: Duration,
    pub replica_timeout: Duration,
    pub poll: Duration,
}

impl State {
    pub fn timings(&self) -> StateTimings {
        StateTimings {
            heartbeat: self.heartbeat,
            replica_timeout: self.replica_timeout,
            poll: self.poll,
        }
    }
}

impl Config {
    pub(crate) fn validate_state(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let state = &self.state;
        match state.backend {
            StateBackend::Sqlite => {
                if state.url.is_some() {
                    return Err(at.error(
                        key_path!["state", "url"],
                        "state.url: only used with backend = \"postgres\"; set the backend, or remove the url",
                    ));
                }
            }
            StateBackend::Postgres => {
                if state.url.is_none() {
                    return Err(at.error(
                        key_path!["state", "backend"],
                        "state.backend = \"postgres\" needs state.url (a connection string, literal or { env = \"VAR\" } or { file = \"path\" })",
                    ));
                }
            }
        }
        if state.heartbeat.is_zero() || state.poll.is_zero() {
            return Err(at.error(
                key_path!["state", "heartbeat"],
                "state.heartbeat and state.poll must be longer than zero",
            ));
        }
        if state.replica_timeout < state.heartbeat * 3 {
            return Err(at.error(
                key_path!["state", "replica_timeout"],
                format!(
                    "state.replica_timeout ({:?}) must be at least three heartbeats ({:?}): a replica that misses one beat is not dead",
                    state.replica_timeout,
                    state.heartbeat * 3
                ),
            ));
        }
        let id = &self.gateway.id;
        if state.backend == StateBackend::Postgres
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err(at.error(
                key_path!["gateway", "id"],
                "gateway.id names this replica in the shared state: 1 to 64 of A-Z a-z 0-9 - _ .",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{error, parse};

    use super::StateBackend;

    #[test]
    fn sqlite_is_the_default() {
        let config = parse("").unwrap();
        assert_eq!(config.state.backend, StateBackend::Sqlite);
        assert!(config.state.url.is_none());
    }

    #[test]
    fn postgres_needs_a_url_and_sane_timings() {
        let config = parse(
            "[state]\nbackend = \"postgres\"\nurl = { env = \"STATE_URL\" }\nheartbeat = \"1s\"\nreplica_timeout = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(config.state.backend, StateBackend::Postgres);
        let err = error("[state]\nbackend = \"postgres\"\n");
        assert!(err.contains("needs state.url"), "{err}");
        assert!(err.contains(":2"), "{err}");
        let err = error(
            "[state]\nbackend = \"postgres\"\nurl = \"postgres://x/y\"\nheartbeat = \"5s\"\nreplica_timeout = \"6s\"\n",
        );
        assert!(err.contains("three heartbeats"), "{err}");
        let err = error("[state]\nurl = \"postgres://x/y\"\n");
        assert!(err.contains("only used with backend"), "{err}");
        let err = error("[state]\nbackend = \"mysql\"\n");
        assert!(err.contains("unknown variant"), "{err}");
    }
}
