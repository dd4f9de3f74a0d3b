//! `[targets.NAME]`: the backends, resolved from the file's one flat table per target into a
//! [`TargetSpec`] that holds only the settings of its kind.
//!
//! The file keeps one table shape for every kind (`kind = "..."` and that kind's keys), which
//! is easy to write; the runtime gets an enum, so an adapter never sees another kind's
//! fields, and a field given to the wrong kind is refused here, with its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portcullis_model::TargetKind;
use serde::Deserialize;

use crate::ConfigError;
use crate::de::de_duration;
use crate::gateway::Gateway;
use crate::pg_url::{PgUpstream, parse_pg_url};
use crate::spans::{Locator, key_path};

/// A backend, resolved: one variant per kind, each with only its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    /// An MCP server, reached over stdio or streamable HTTP at `/mcp/<name>`.
    Mcp(McpTarget),
    /// A PostgreSQL database, reached through a PostgreSQL listener of the gateway.
    Postgres(PostgresTarget),
    /// An HTTP API, reached at `/http/<name>/` on the front door (and on `listen`, if set).
    Http(HttpTarget),
}

impl TargetSpec {
    /// The kind, as `kind = "..."` names it in the file.
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSpec::Mcp(_) => TargetKind::Mcp,
            TargetSpec::Postgres(_) => TargetKind::Postgres,
            TargetSpec::Http(_) => TargetKind::Http,
        }
    }

    pub fn as_mcp(&self) -> Option<&McpTarget> {
        match self {
            TargetSpec::Mcp(mcp) => Some(mcp),
            _ => None,
        }
    }

    pub fn as_postgres(&self) -> Option<&PostgresTarget> {
        match self {
            TargetSpec::Postgres(pg) => Some(pg),
            _ => None,
        }
    }

    pub fn as_http(&self) -> Option<&HttpTarget> {
        match self {
            TargetSpec::Http(http) => Some(http),
            _ => None,
        }
    }
}

/// `kind = "http"`: an HTTP API, its credential and the bounds on each request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    /// The base URL (`http://` or `https://`, ending in `/`): a request for `/http/NAME/a/b`
    /// goes to `<upstream>a/b`.
    pub upstream: String,
    /// A listener of the target's own, where the API is served at `/` (for clients that
    /// cannot take a path prefix).
    pub listen: Option<SocketAddr>,
    /// PEM CA certificates the upstream's certificate may chain to, besides the system's.
    pub upstream_ca: Option<PathBuf>,
    /// The upstream's own credential, injected on every forwarded request.
    pub credential: Option<HttpCredential>,
    /// How long the upstream may take to send its response headers.
    pub timeout: Duration,
    /// How long the caller may take to send its request body, and the upstream or the
    /// caller may stall a response body (no byte moved) before the request is ended.
    pub idle_timeout: Duration,
    /// The largest request body read (policy sees the body before anything is forwarded).
    pub max_request_body: usize,
    /// The largest response body that is masked whole (JSON); larger masked answers are
    /// refused, never passed unmasked.
    pub max_response_body: usize,
    /// The most requests in flight to the upstream at once.
    pub max_upstream_connections: usize,
    /// The longest a held request waits for its decision; then the approval is cancelled and
    /// the caller is answered with an error naming it. Keep it at least the rules' `timeout`
    /// for callers that can wait that long.
    pub hold_wait: Duration,
}

/// `upstream_credential`: what the gateway sends the upstream as its own credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpCredential {
    /// `Authorization: Bearer <token>`.
    Bearer(crate::sinks::Secret),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        user: String,
        password: crate::sinks::Secret,
    },
    /// `<header>: <value>`.
    Header {
        name: String,
        value: crate::sinks::Secret,
    },
}

/// `upstream_credential` as written: exactly one of `bearer`, `basic` or `header` + `value`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    #[serde(default)]
    bearer: Option<crate::sinks::Secret>,
    #[serde(default)]
    basic: Option<RawBasic>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    value: Option<crate::sinks::Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    user: String,
    password: crate::sinks::Secret,
}

/// `kind = "mcp"`: an MCP server and the bounds on its sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTarget {
    pub upstream: McpUpstream,
    /// The most stdio processes alive at once.
    pub max_processes: usize,
    /// The most sessions one identity may hold open at once.
    pub max_sessions_per_identity: usize,
    /// How long an identity's session must be idle before its owner's next session may end it.
    pub session_reclaim_after: Duration,
}

/// How an MCP server is reached: exactly one of `command` or `url` in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum McpUpstream {
    /// `command`: a program the gateway starts, spoken to over stdin and stdout.
    Stdio {
        /// The program and its arguments; never empty.
        command: Vec<String>,
        /// Added to a minimal environment.
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    /// `url`: a streamable-HTTP endpoint (`http://` or `https://`).
    Http {
        url: String,
        /// The upstream's own credential header.
        auth: Option<UpstreamAuth>,
    },
}

/// `kind = "postgres"`: the gateway's listener, the database behind it and how to log in.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    /// The gateway's PostgreSQL listener for this target.
    pub listen: SocketAddr,
    /// The database, from `upstream`.
    pub upstream: PgUpstream,
    /// The role the gateway logs in as; not blank.
    pub user: String,
    /// The environment variable holding `user`'s password; not blank when set.
    pub password_env: Option<String>,
    /// TLS to the database.
    pub upstream_tls: UpstreamTls,
    pub record_results: bool,
    /// The most client connections open at once on `listen`; at least 1.
    pub max_connections: usize,
}

/// How a `postgres` target's connection to its database is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTls {
    /// No TLS.
    Disable,
    /// TLS without checking the certificate (libpq's `sslmode=require`).
    Require,
    /// TLS, the certificate checked against the CA certificates in `ca` (`upstream_ca`, a
    /// PEM file) and the host name.
    VerifyFull { ca: PathBuf },
}

/// A header carrying the upstream's credential, read from the gateway's environment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuth {
    /// Header name. Default: `Authorization`.
    #[serde(default = "default_auth_header")]
    pub header: String,
    /// Environment variable holding the secret.
    pub env: String,
    /// Put before the secret, e.g. `Bearer `. Default: `Bearer `.
    #[serde(default = "default_auth_prefix")]
    pub prefix: String,
}

/// `[targets.NAME]` as written: every kind's keys, checked and sorted out by [`resolve`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    /// `mcp` (an MCP server) or `postgres` (a PostgreSQL database, reached through a
    /// PostgreSQL listener of the gateway).
    kind: TargetKind,
    /// For a stdio MCP server: the program and its arguments.
    #[serde(default)]
    command: Option<Vec<String>>,
    /// Environment variables for the stdio program (added to a minimal environment: the
    /// gateway's own secrets are not inherited).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory for the stdio program.
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// For a streamable-HTTP MCP server: its endpoint URL.
    #[serde(default)]
    url: Option<String>,
    /// The upstream's own credential, injected by the gateway. The caller's token is never
    /// forwarded.
    #[serde(default)]
    upstream_auth: Option<UpstreamAuth>,
    /// The most stdio processes of this target alive at once (one per session-based client
    /// session, plus one shared for stateless callers). Default: 16.
    #[serde(default)]
    max_processes: Option<usize>,
    /// The most sessions one identity may hold open on this target at once (each may be an
    /// upstream process), so one key cannot take every process slot from the others.
    /// Default: 4.
    #[serde(default)]
    max_sessions_per_identity: Option<usize>,
    /// When an identity at `max_sessions_per_identity` opens another session, its least
    /// recently used session idle for at least this long is ended to make room (a client
    /// that never ends its sessions is not locked out until they expire). Only the caller's
    /// own sessions are ended. Default: `60s`.
    #[serde(default, deserialize_with = "de_optional_duration")]
    session_reclaim_after: Option<Duration>,
    /// For `postgres` (required): the address of the gateway's PostgreSQL listener for this
    /// target, where agents connect with any PostgreSQL client. Each target has its own
    /// listener. An address other than loopback requires `[gateway.tls]`: clients send their
    /// API key or token as the PostgreSQL password, so they must connect with TLS.
    #[serde(default)]
    listen: Option<SocketAddr>,
    /// For `postgres` (required): the database, `postgres://HOST[:PORT]/DATABASE`
    /// (`postgresql://` also works; the port defaults to 5432). No user, password or query
    /// string: the credentials go in `user` and `password_env`, TLS in `upstream_tls`.
    #[serde(default)]
    upstream: Option<String>,
    /// For `postgres` (required): the role the gateway logs in as upstream. Every caller's
    /// statements run as this role; give it only the privileges the rules can allow.
    #[serde(default)]
    user: Option<String>,
    /// For `postgres`: the environment variable holding `user`'s password, read when the
    /// gateway connects. Absent: no password is sent (trust or certificate authentication).
    /// Callers never see it.
    #[serde(default)]
    password_env: Option<String>,
    /// For `postgres`: TLS to the database. `disable` (the default): none. `require`: encrypt,
    /// but check no certificate (as libpq's `sslmode=require`; protects against eavesdropping,
    /// not against an impostor). `verify-full`: encrypt, and check the certificate against
    /// `upstream_ca` and the host name against the certificate.
    #[serde(default)]
    upstream_tls: UpstreamTlsMode,
    /// For `postgres` with `upstream_tls = "verify-full"` (required there): PEM file with the
    /// CA certificates the database's certificate must chain to. Relative to the
    /// configuration file.
    #[serde(default)]
    pub(crate) upstream_ca: Option<PathBuf>,
    /// For `postgres`: keep the result sets of allowed statements, masked as the rule says,
    /// as content-addressed blobs in the data directory, referenced from their audit events.
    /// Default: false (events record the statement and the row count only).
    #[serde(default)]
    record_results: bool,
    /// For `postgres`: the most client connections open at once on `listen`; more are
    /// refused. Each holds one upstream connection. Default: 100.
    #[serde(default)]
    max_connections: Option<usize>,
    /// For `http`: the upstream's own credential, sent on every forwarded request (the
    /// caller's `Authorization` and `Cookie` never are): `{ bearer = { env = "TOKEN" } }`,
    /// `{ basic = { user = "svc", password = { file = "/run/secrets/pw" } } }` or
    /// `{ header = "X-Api-Key", value = { env = "KEY" } }`.
    #[serde(default)]
    upstream_credential: Option<RawCredential>,
    /// For `http`: how long the upstream may take to send its response headers. Default: `30s`.
    #[serde(default, deserialize_with = "de_optional_duration")]
    timeout: Option<Duration>,
    /// For `http`: how long a request or response body may stall (no byte moved) before the
    /// request is ended, so a slow client cannot hold an upstream connection. Default: `30s`.
    #[serde(default, deserialize_with = "de_optional_duration")]
    idle_timeout: Option<Duration>,
    /// For `http`: the largest request body in bytes (policy sees the body before anything
    /// is forwarded, so it is read whole). Default: 1 MiB.
    #[serde(default)]
    max_request_body: Option<usize>,
    /// For `http`: the largest JSON response in bytes that is masked whole; a larger answer
    /// that must be masked is refused, never passed unmasked. Default: 8 MiB.
    #[serde(default)]
    max_response_body: Option<usize>,
    /// For `http`: the most requests in flight to the upstream at once; more wait.
    /// Default: 256.
    #[serde(default)]
    max_upstream_connections: Option<usize>,
    /// For `http`: the longest a held request waits for its decision before its caller gets
    /// an error naming the approval. Default: `5m`.
    #[serde(default, deserialize_with = "de_optional_duration")]
    hold_wait: Option<Duration>,
}

/// `upstream_tls` as written; `verify-full` takes its CA from `upstream_ca`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum UpstreamTlsMode {
    #[default]
    Disable,
    Require,
    VerifyFull,
}

fn de_optional_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Resolves every target, in name order. `gateway` is needed because a PostgreSQL listener
/// must not take the gateway's own addresses, and its TLS decides whether it may leave
/// loopback.
pub(crate) fn resolve(
    raw: &BTreeMap<String, RawTarget>,
    gateway: &Gateway,
    at: &Locator<'_>,
) -> Result<BTreeMap<String, TargetSpec>, ConfigError> {
    raw.iter()
        .map(|(name, target)| {
            let resolver = Resolver {
                name,
                target,
                others: raw,
                gateway,
                at,
            };
            Ok((name.clone(), resolver.resolve()?))
        })
        .collect()
}

/// One target being resolved, with what its checks need to see.
struct Resolver<'a> {
    name: &'a str,
    target: &'a RawTarget,
    others: &'a BTreeMap<String, RawTarget>,
    gateway: &'a Gateway,
    at: &'a Locator<'a>,
}

impl Resolver<'_> {
    /// An error about `targets.NAME.FIELD`, at that field's line (the target's header when
    /// the field is not written).
    fn error(&self, field: &str, message: String) -> ConfigError {
        self.at
            .error(key_path!["targets", self.name, field], message)
    }

    fn resolve(&self) -> Result<TargetSpec, ConfigError> {
        let name = self.name;
        if !valid_name(name) {
            return Err(self.at.error(
                key_path!["targets", name],
                format!("targets.{name}: a target name may hold only letters, digits, '-' and '_'"),
            ));
        }
        match self.target.kind {
            TargetKind::Mcp => self.mcp().map(TargetSpec::Mcp),
            TargetKind::Postgres => self.postgres().map(TargetSpec::Postgres),
            TargetKind::Http => self.http().map(TargetSpec::Http),
            other => Err(self.error(
                "kind",
                format!("targets.{name}.kind: {other:?} targets are not supported by this version"),
            )),
        }
    }

    fn mcp(&self) -> Result<McpTarget, ConfigError> {
        let (name, t) = (self.name, self.target);
        let others = [
            (
                "listen",
                t.listen.is_some(),
                "postgres and http targets take",
            ),
            (
                "upstream",
                t.upstream.is_some(),
                "postgres and http targets take",
            ),
            ("user", t.user.is_some(), "a postgres target takes"),
            (
                "password_env",
                t.password_env.is_some(),
                "a postgres target takes",
            ),
            (
                "upstream_tls",
                t.upstream_tls != UpstreamTlsMode::Disable,
                "a postgres target takes",
            ),
            (
                "upstream_ca",
                t.upstream_ca.is_some(),
                "postgres and http targets take",
            ),
            (
                "record_results",
                t.record_results,
                "a postgres target takes",
            ),
            (
                "max_connections",
                t.max_connections.is_some(),
                "a postgres target takes",
            ),
        ];
        if let Some((field, _, who)) = others.iter().find(|(_, set, _)| *set) {
            return Err(self.error(
                field,
                format!(
                    "targets.{name}.{field}: only {who} {field} (this one is {:?})",
                    t.kind
                ),
            ));
        }
        self.refuse_http_fields()?;
        let upstream = match (&t.command, &t.url) {
            (Some(command), None) if !command.is_empty() => {
                if t.upstream_auth.is_some() {
                    return Err(self.error(
                        "upstream_auth",
                        format!("targets.{name}.upstream_auth: only HTTP upstreams take a credential header; give a stdio program its secret with `env`"),
                    ));
                }
                McpUpstream::Stdio {
                    command: command.clone(),
                    env: t.env.clone(),
                    cwd: t.cwd.clone(),
                }
            }
            (Some(_), None) => {
                return Err(self.error(
                    "command",
                    format!("targets.{name}.command: must name a program"),
                ));
            }
            (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                for (field, set) in [("env", !t.env.is_empty()), ("cwd", t.cwd.is_some())] {
                    if set {
                        return Err(self.error(
                            field,
                            format!("targets.{name}.{field}: only a stdio MCP server (`command`) takes {field}; this one is reached at `url`"),
                        ));
                    }
                }
                McpUpstream::Http {
                    url: url.clone(),
                    auth: t.upstream_auth.clone(),
                }
            }
            (None, Some(url)) => {
                return Err(self.error(
                    "url",
                    format!("targets.{name}.url: {url:?} is not an http:// or https:// URL"),
                ));
            }
            _ => {
                return Err(self.at.error(
                    key_path!["targets", name],
                    format!("targets.{name}: an MCP target needs exactly one of `command` (stdio) or `url` (streamable HTTP)"),
                ));
            }
        };
        let max_processes = t.max_processes.unwrap_or(16);
        if max_processes == 0 {
            return Err(self.error(
                "max_processes",
                format!("targets.{name}.max_processes: must be at least 1"),
            ));
        }
        let max_sessions_per_identity = t.max_sessions_per_identity.unwrap_or(4);
        if max_sessions_per_identity == 0 {
            return Err(self.error(
                "max_sessions_per_identity",
                format!("targets.{name}.max_sessions_per_identity: must be at least 1"),
            ));
        }
        Ok(McpTarget {
            upstream,
            max_processes,
            max_sessions_per_identity,
            session_reclaim_after: t.session_reclaim_after.unwrap_or(Duration::from_secs(60)),
        })
    }

    /// A `postgres` target: its listener, upstream and credentials.
    fn postgres(&self) -> Result<PostgresTarget, ConfigError> {
        let (name, t) = (self.name, self.target);
        let at =
            |field: &str, m: String| Err(self.error(field, format!("targets.{name}.{field}: {m}")));
        if let Some(field) = self.mcp_field_set() {
            return at(
                field,
                "a postgres target does not take it (MCP targets do); give the database in `upstream` and the role in `user` and `password_env`".into(),
            );
        }
        self.refuse_http_fields()?;
        let Some(listen) = t.listen else {
            return at(
                "listen",
                "a postgres target needs the address of its PostgreSQL listener, e.g. listen = \"127.0.0.1:6432\"".into(),
            );
        };
        self.check_listener(listen)?;
        let Some(upstream_url) = &t.upstream else {
            return at(
                "upstream",
                "a postgres target needs its database, e.g. upstream = \"postgres://127.0.0.1:5432/billing\"".into(),
            );
        };
        let upstream = match parse_pg_url(upstream_url) {
            Ok(upstream) => upstream,
            Err(e) => return at("upstream", format!("{upstream_url:?} {e}")),
        };
        let user = match &t.user {
            None => {
                return at(
                    "user",
                    "a postgres target needs the role the gateway logs in as, e.g. user = \"billing_ro\"".into(),
                );
            }
            Some(user) if user.trim().is_empty() => {
                return at("user", "must name a role".into());
            }
            Some(user) => user.clone(),
        };
        if t.password_env.as_ref().is_some_and(|v| v.trim().is_empty()) {
            return at(
                "password_env",
                "must name an environment variable (leave it out to send no password)".into(),
            );
        }
        let upstream_tls = match (t.upstream_tls, &t.upstream_ca) {
            (UpstreamTlsMode::VerifyFull, None) => {
                return at(
                    "upstream_tls",
                    "\"verify-full\" checks the database's certificate, so upstream_ca must name the PEM file of the CA certificates it chains to".into(),
                );
            }
            (UpstreamTlsMode::Disable | UpstreamTlsMode::Require, Some(_)) => {
                return at(
                    "upstream_ca",
                    "is used only with upstream_tls = \"verify-full\"; with another setting no certificate is checked".into(),
                );
            }
            (UpstreamTlsMode::VerifyFull, Some(ca)) => UpstreamTls::VerifyFull { ca: ca.clone() },
            (UpstreamTlsMode::Require, None) => UpstreamTls::Require,
            (UpstreamTlsMode::Disable, None) => UpstreamTls::Disable,
        };
        let max_connections = t.max_connections.unwrap_or(100);
        if max_connections == 0 {
            return at("max_connections", "must be at least 1".into());
        }
        Ok(PostgresTarget {
            listen,
            upstream,
            user,
            password_env: t.password_env.clone(),
            upstream_tls,
            record_results: t.record_results,
            max_connections,
        })
    }

    /// The first setting only an MCP target takes that this one has, if any.
    fn mcp_field_set(&self) -> Option<&'static str> {
        let t = self.target;
        [
            ("command", t.command.is_some()),
            ("url", t.url.is_some()),
            ("upstream_auth", t.upstream_auth.is_some()),
            ("env", !t.env.is_empty()),
            ("cwd", t.cwd.is_some()),
            ("max_processes", t.max_processes.is_some()),
            (
                "max_sessions_per_identity",
                t.max_sessions_per_identity.is_some(),
            ),
            ("session_reclaim_after", t.session_reclaim_after.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(field, _)| field)
    }

    /// The settings only an `http` target takes, refused on the others at their line.
    fn refuse_http_fields(&self) -> Result<(), ConfigError> {
        let (name, t) = (self.name, self.target);
        for (field, set) in [
            ("upstream_credential", t.upstream_credential.is_some()),
            ("timeout", t.timeout.is_some()),
            ("idle_timeout", t.idle_timeout.is_some()),
            ("max_request_body", t.max_request_body.is_some()),
            ("max_response_body", t.max_response_body.is_some()),
            (
                "max_upstream_connections",
                t.max_upstream_connections.is_some(),
            ),
            ("hold_wait", t.hold_wait.is_some()),
        ] {
            if set {
                return Err(self.error(
                    field,
                    format!(
                        "targets.{name}.{field}: only an http target takes {field} (this one is {:?})",
                        t.kind
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An `http` target: its upstream URL, optional listener, credential and bounds.
    fn http(&self) -> Result<HttpTarget, ConfigError> {
        let (name, t) = (self.name, self.target);
        let at =
            |field: &str, m: String| Err(self.error(field, format!("targets.{name}.{field}: {m}")));
        let postgres_only = [
            ("user", t.user.is_some()),
            ("password_env", t.password_env.is_some()),
            ("upstream_tls", t.upstream_tls != UpstreamTlsMode::Disable),
            ("record_results", t.record_results),
            ("max_connections", t.max_connections.is_some()),
        ];
        let other = self.mcp_field_set().or_else(|| {
            postgres_only
                .iter()
                .find(|(_, set)| *set)
                .map(|(field, _)| *field)
        });
        if let Some(field) = other {
            let hint = match field {
                "upstream_auth" => "; the upstream's credential goes in upstream_credential",
                "url" => "; the API's base URL goes in upstream",
                _ => "",
            };
            return at(field, format!("an http target does not take it{hint}"));
        }
        let Some(upstream) = &t.upstream else {
            return at(
                "upstream",
                "an http target needs the API's base URL, e.g. upstream = \"https://api.internal/\"".into(),
            );
        };
        let upstream = match upstream.split_once("://") {
            Some(("http" | "https", rest))
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !upstream.contains(['?', '#'])
                    && !rest.split('/').next().unwrap_or("").contains('@') =>
            {
                if upstream.ends_with('/') {
                    upstream.clone()
                } else {
                    format!("{upstream}/")
                }
            }
            _ => {
                return at(
                    "upstream",
                    format!(
                        "{upstream:?} is not an http:// or https:// base URL without credentials, query or fragment (the credential goes in upstream_credential)"
                    ),
                );
            }
        };
        if let Some(listen) = t.listen {
            self.check_listener(listen)?;
        }
        if t.upstream_ca.is_some() && !upstream.starts_with("https://") {
            return at(
                "upstream_ca",
                "is for an https:// upstream; this one is plain http".into(),
            );
        }
        let credential = match &t.upstream_credential {
            None => None,
            Some(raw) => Some(match (&raw.bearer, &raw.basic, &raw.header, &raw.value) {
                (Some(token), None, None, None) => HttpCredential::Bearer(token.clone()),
                (None, Some(basic), None, None) => {
                    if basic.user.is_empty() || basic.user.contains(':') {
                        return at(
                            "upstream_credential",
                            "basic.user must be a user name without ':'".into(),
                        );
                    }
                    HttpCredential::Basic {
                        user: basic.user.clone(),
                        password: basic.password.clone(),
                    }
                }
                (None, None, Some(header), Some(value)) => {
                    let lower = header.to_ascii_lowercase();
                    let valid = !header.is_empty()
                        && header
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if !valid || HOP_BY_HOP.contains(&lower.as_str()) || lower == "host" {
                        return at(
                            "upstream_credential",
                            format!(
                                "header {header:?} cannot carry a credential (not a header name, or one the gateway manages)"
                            ),
                        );
                    }
                    HttpCredential::Header {
                        name: header.clone(),
                        value: value.clone(),
                    }
                }
                _ => {
                    return at(
                        "upstream_credential",
                        "takes exactly one of bearer = <secret>, basic = { user, password }, or header = \"Name\" with value = <secret>".into(),
                    );
                }
            }),
        };
        let positive = |field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                Err(self.error(field, format!("targets.{name}.{field}: must be at least 1")))
            }
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let max_request_body = positive("max_request_body", t.max_request_body, 1 << 20)?;
        let max_response_body = positive("max_response_body", t.max_response_body, 8 << 20)?;
        let max_upstream_connections =
            positive("max_upstream_connections", t.max_upstream_connections, 256)?;
        let at_least_ms = |field: &str, value: Option<Duration>, default: Duration| match value {
            Some(d) if d < Duration::from_millis(1) => Err(self.error(
                field,
                format!("targets.{name}.{field}: must be at least 1ms"),
            )),
            Some(d) => Ok(d),
            None => Ok(default),
        };
        Ok(HttpTarget {
            upstream,
            listen: t.listen,
            upstream_ca: t.upstream_ca.clone(),
            credential,
            timeout: at_least_ms("timeout", t.timeout, Duration::from_secs(30))?,
            idle_timeout: at_least_ms("idle_timeout", t.idle_timeout, Duration::from_secs(30))?,
            max_request_body,
            max_response_body,
            max_upstream_connections,
            hold_wait: at_least_ms("hold_wait", t.hold_wait, Duration::from_secs(300))?,
        })
    }

    /// A PostgreSQL listener leaves loopback only with TLS, and takes no address of the
    /// gateway's own or of another target.
    fn check_listener(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        let name = self.name;
        let at = |m: String| Err(self.error("listen", format!("targets.{name}.listen: {m}")));
        if !listen.ip().is_loopback() && self.gateway.tls.is_none() {
            return at(format!(
                "{listen} is reachable from the network, and clients send their API key or token on it (PostgreSQL clients as the password), so they must connect with TLS: configure [gateway.tls] (its certificate serves this listener too), or listen on a loopback address"
            ));
        }
        let clash = |other: SocketAddr| {
            other.port() == listen.port()
                && (other.ip() == listen.ip()
                    || other.ip().is_unspecified()
                    || listen.ip().is_unspecified())
        };
        if clash(self.gateway.listen) {
            return at(format!(
                "{listen} is also gateway.listen; give the target's listener its own address"
            ));
        }
        if self.gateway.admin_listen.is_some_and(clash) {
            return at(format!(
                "{listen} is also gateway.admin_listen; give the target's listener its own address"
            ));
        }
        if let Some((other, _)) = self
            .others
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .find(|(_, t)| t.kind != TargetKind::Mcp && t.listen.is_some_and(clash))
        {
            return at(format!(
                "{listen} is also the listener of target {other}; each target needs its own"
            ));
        }
        Ok(())
    }
}

/// Headers that belong to one connection (RFC 9110 section 7.6.1), never forwarded and never
/// a credential's carrier.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_auth_prefix() -> String {
    "Bearer ".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{PG, TARGET, error, parse};

    #[test]
    fn upstream_auth_on_stdio_is_refused() {
        let err = parse(&format!("{TARGET}upstream_auth = {{ env = \"X\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("upstream_auth"), "{err}");
        assert!(err.to_string().starts_with("portcullis.toml:4:"), "{err}");
    }

    #[test]
    fn an_mcp_target_resolves_to_its_upstream() {
        let config = parse(&format!(
            "{TARGET}env = {{ A = \"1\" }}\n[targets.web]\nkind = \"mcp\"\nurl = \"https://mcp.example.com/mcp\"\nupstream_auth = {{ env = \"TOKEN\" }}\nmax_processes = 2\n"
        ))
        .unwrap();
        let tools = config.targets["tools"].as_mcp().unwrap();
        assert_eq!(tools.max_processes, 16);
        assert_eq!(tools.max_sessions_per_identity, 4);
        assert_eq!(tools.session_reclaim_after, Duration::from_secs(60));
        let McpUpstream::Stdio { command, env, cwd } = &tools.upstream else {
            panic!("{tools:?}")
        };
        assert_eq!(
            (command.as_slice(), env["A"].as_str(), cwd),
            (&["server".to_string()][..], "1", &None)
        );
        let web = config.targets["web"].as_mcp().unwrap();
        assert_eq!(web.max_processes, 2);
        let McpUpstream::Http { url, auth } = &web.upstream else {
            panic!("{web:?}")
        };
        assert_eq!(url, "https://mcp.example.com/mcp");
        let auth = auth.as_ref().unwrap();
        assert_eq!(
            (
                auth.header.as_str(),
                auth.env.as_str(),
                auth.prefix.as_str()
            ),
            ("Authorization", "TOKEN", "Bearer ")
        );
        assert_eq!(config.targets["web"].kind(), TargetKind::Mcp);
        assert!(config.targets["web"].as_postgres().is_none());
    }

    #[test]
    fn a_postgres_target_parses_and_resolves() {
        let config = parse(&format!(
            "{PG}password_env = \"DB_PASSWORD\"\nupstream_tls = \"verify-full\"\nupstream_ca = \"ca.pem\"\nrecord_results = true\nmax_connections = 5\n\n[recording]\nmode = \"strict\"\n"
        ))
        .unwrap();
        assert_eq!(config.targets["db"].kind(), TargetKind::Postgres);
        let db = config.targets["db"].as_postgres().unwrap();
        assert_eq!(db.listen, "127.0.0.1:6432".parse().unwrap());
        assert_eq!(
            db.upstream,
            PgUpstream {
                host: "db.internal".into(),
                port: 6543,
                database: "billing".into()
            }
        );
        assert_eq!(db.user, "billing_ro");
        assert_eq!(db.password_env.as_deref(), Some("DB_PASSWORD"));
        let UpstreamTls::VerifyFull { ca } = &db.upstream_tls else {
            panic!("{db:?}")
        };
        assert!(ca.ends_with("ca.pem"));
        assert!(db.record_results);
        assert_eq!(db.max_connections, 5);
        let defaults = parse(PG).unwrap();
        let db = defaults.targets["db"].as_postgres().unwrap();
        assert_eq!(db.upstream_tls, UpstreamTls::Disable);
        assert_eq!(db.max_connections, 100);
        assert!(!db.record_results);
        // An MCP target has no upstream database.
        assert!(
            parse(TARGET).unwrap().targets["tools"]
                .as_postgres()
                .is_none()
        );
    }

    #[test]
    fn postgres_targets_are_checked() {
        let at = |field: &str, text: &str| -> usize {
            text.lines().position(|l| l.starts_with(field)).unwrap() + 1
        };
        for (extra, field, expected) in [
            ("command = [\"x\"]\n", "command", "does not take it"),
            ("url = \"http://x\"\n", "url", "does not take it"),
            ("cwd = \"/\"\n", "cwd", "does not take it"),
            (
                "upstream_tls = \"verify-full\"\n",
                "upstream_tls",
                "upstream_ca must name",
            ),
            (
                "upstream_ca = \"ca.pem\"\n",
                "upstream_ca",
                "only with upstream_tls = \"verify-full\"",
            ),
            (
                "max_connections = 0\n",
                "max_connections",
                "must be at least 1",
            ),
            (
                "password_env = \"\"\n",
                "password_env",
                "must name an environment variable",
            ),
        ] {
            let text = format!("{PG}{extra}");
            let err = error(&text);
            let line = at(field, &text);
            assert!(
                err.starts_with(&format!("portcullis.toml:{line}: targets.db.{field}:"))
                    && err.contains(expected),
                "{extra}: {err}"
            );
        }
        let text = PG.replace("postgres://db.internal:6543/billing", "postgres://u:p@db/x");
        let err = error(&text);
        assert!(
            err.starts_with("portcullis.toml:4: targets.db.upstream:")
                && err.contains("credentials go in `user` and `password_env`"),
            "{err}"
        );
        for (field, expected) in [
            ("listen", "listen = \"127.0.0.1:6432\""),
            ("upstream", "postgres://"),
            ("user", "the role the gateway logs in as"),
        ] {
            let text: String = PG
                .lines()
                .filter(|l| !l.starts_with(&format!("{field} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let err = error(&text);
            assert!(
                err.starts_with(&format!("portcullis.toml:1: targets.db.{field}:"))
                    && err.contains(expected),
                "{err}"
            );
        }
        // Listeners: one per target, none shared with the gateway's own.
        let err = error(&PG.replace("6432", "8080"));
        assert!(
            err.contains("targets.db.listen") && err.contains("gateway.listen"),
            "{err}"
        );
        let err = error(&format!(
            "[gateway]\nadmin_listen = \"127.0.0.1:6432\"\n{PG}"
        ));
        assert!(err.contains("gateway.admin_listen"), "{err}");
        let err = error(&format!("{PG}{}", PG.replace("targets.db", "targets.db2")));
        assert!(err.contains("is also the listener of target"), "{err}");
        // Off loopback, clients' credentials need TLS.
        let open = PG.replace("127.0.0.1:6432", "0.0.0.0:6432");
        let err = error(&open);
        assert!(
            err.starts_with("portcullis.toml:3: targets.db.listen:")
                && err.contains("[gateway.tls]")
                && err.contains("password"),
            "{err}"
        );
        let err = error(&format!("[gateway]\nallow_plain_http = true\n{open}"));
        assert!(err.contains("[gateway.tls]"), "{err}");
        assert!(
            parse(&format!(
                "[gateway]\n[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{open}"
            ))
            .is_ok()
        );
        // PostgreSQL settings on an MCP target.
        for extra in [
            "listen = \"127.0.0.1:7000\"",
            "upstream = \"postgres://db/x\"",
            "user = \"u\"",
            "password_env = \"P\"",
            "upstream_tls = \"require\"",
            "upstream_ca = \"ca.pem\"",
            "record_results = true",
        ] {
            let err = error(&format!("{TARGET}{extra}\n"));
            let field = extra.split(' ').next().unwrap();
            assert!(
                err.starts_with(&format!("portcullis.toml:4: targets.tools.{field}: only "))
                    && err.contains("postgres"),
                "{err}"
            );
        }
        let err = error(&PG.replace("postgres\"", "mysql\""));
        assert!(err.contains("not supported"), "{err}");
    }

    /// Each error names the line of the target it is about, even when another target's
    /// name starts the same or has the same field earlier in the file.
    #[test]
    fn a_field_error_names_its_own_targets_line() {
        let second = PG
            .replace("targets.db", "targets.db2")
            .replace("127.0.0.1:6432", "0.0.0.0:6433");
        let text = format!("{PG}{second}");
        let err = error(&text);
        assert!(
            err.starts_with("portcullis.toml:8: targets.db2.listen:"),
            "{err}"
        );
        // `db2` first in the file: the error about `db` is still on `db`'s lines.
        let first = PG
            .replace("targets.db", "targets.db2")
            .replace("6432", "6433");
        let text = format!("{first}{}", PG.replace("127.0.0.1:6432", "0.0.0.0:6432"));
        let err = error(&text);
        assert!(
            err.starts_with("portcullis.toml:8: targets.db.listen:"),
            "{err}"
        );
        let text = format!("{first}{}", PG.replace("user = \"billing_ro\"\n", ""));
        let err = error(&text);
        assert!(
            err.starts_with("portcullis.toml:6: targets.db.user:"),
            "{err}"
        );
    }

    /// A setting of the other kind is refused at its line, not ignored.
    #[test]
    fn a_field_of_another_kind_is_refused() {
        for (extra, field) in [
            ("max_processes = 2", "max_processes"),
            ("max_sessions_per_identity = 2", "max_sessions_per_identity"),
            ("session_reclaim_after = \"5s\"", "session_reclaim_after"),
        ] {
            let err = error(&format!("{PG}{extra}\n"));
            assert!(
                err.starts_with(&format!(
                    "portcullis.toml:6: targets.db.{field}: a postgres target does not take it"
                )),
                "{err}"
            );
        }
        let err = error(&format!("{TARGET}max_connections = 3\n"));
        assert!(
            err.starts_with(
                "portcullis.toml:4: targets.tools.max_connections: only a postgres target"
            ),
            "{err}"
        );
        let http = "[targets.web]\nkind = \"mcp\"\nurl = \"https://x\"\n";
        for (extra, field) in [("cwd = \"/\"", "cwd"), ("env = { A = \"1\" }", "env")] {
            let err = error(&format!("{http}{extra}\n"));
            assert!(
                err.starts_with(&format!(
                    "portcullis.toml:4: targets.web.{field}: only a stdio MCP server"
                )),
                "{err}"
            );
        }
        // Defaults written out are not foreign settings.
        assert!(
            parse(&format!(
                "{TARGET}upstream_tls = \"disable\"\nrecord_results = false\n"
            ))
            .is_ok()
        );
    }
}
