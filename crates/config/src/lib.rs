//! The user-facing configuration, `portcullis.toml`.
//!
//! Two layers: the serde structs here mirror the TOML one to one (strict,
//! `deny_unknown_fields`, a doc comment per field, which is the reference documentation), and
//! [`Config::load`] validates cross-references (a rule naming an unknown target, a duplicate
//! API key hash) so that the runtime never sees an inconsistent file. Every error names the
//! file, the line and the field.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_model::{IdentityKind, TargetKind};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A configuration problem, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: Gateway,
    #[serde(default)]
    pub audit: Audit,
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Backends, by name. The name appears in URLs (`/mcp/<name>`), rules and audit events.
    #[serde(default)]
    pub targets: BTreeMap<String, Target>,
    /// Policy rules. Default deny: a request no rule allows is refused.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Masking profiles, by name; a rule picks one with `mask = "NAME"`. The profile named
    /// `default` exists without being declared (every built-in detector, redacted), and may
    /// be redefined.
    #[serde(default)]
    pub masks: BTreeMap<String, MaskProfile>,
    /// `[approvals]`: break-glass approvers and notifications for held requests and grants.
    #[serde(default)]
    pub approvals: Approvals,
    /// Where the file was read from (not part of the TOML).
    #[serde(skip)]
    pub source: SourceFile,
}

/// The file's path and text, kept to turn byte spans into line numbers in later errors
/// (policy compilation reports `when` syntax errors against the line they are on).
#[derive(Debug, Clone, Default)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The 1-based line that a byte offset falls on.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error located at a span of this file.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: self.line_of(span.start),
            message: message.into(),
        }
    }
}

/// `[gateway]`: the front door and the embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// This gateway instance's name, written into every audit event. Default: `portcullis`.
    #[serde(default = "default_gateway_id")]
    pub id: String,
    /// Address of the MCP and HTTP front door. Default: `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin API (approvals, grants; JSON over HTTP, authenticated like the
    /// front door). Served over `[gateway.tls]` when that is set. Without it, held requests
    /// can still be decided only if another gateway process serves the API for this data
    /// directory, so set it whenever a rule holds. Optional.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Directory of the embedded store (SQLite audit log). Created if missing.
    /// Relative paths are relative to the configuration file. Default: `portcullis-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The URL callers use to reach the gateway, for the OAuth protected-resource metadata
    /// (RFC 9728). Default: `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Browser origins allowed to call the gateway (`Origin` header, exact match or `*` as
    /// a wildcard, e.g. `http://localhost:*`). Requests without an `Origin` header (agents,
    /// CLIs) are allowed; requests with any other origin are refused with 403, which blocks
    /// DNS-rebinding attacks from web pages. Default: none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// The largest JSON-RPC message accepted from a caller or an upstream, in bytes.
    /// Default: 4 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long a request may wait for its upstream's answer. Default: `60s`.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// The most MCP sessions open at once; new sessions beyond it get 503. Default: 1024.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session with no traffic for this long is closed. Default: `30m`.
    #[serde(default = "default_session_idle", deserialize_with = "de_duration")]
    pub session_idle_timeout: Duration,
    /// `[gateway.tls]`: serve the front door over TLS (rustls) with this certificate.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Serve plain HTTP on a non-loopback address. Off by default: bearer tokens and API keys
    /// must not cross a network in clear text. Turn it on only behind a proxy that terminates
    /// TLS for the gateway.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// `[gateway.limits]`: what an unauthenticated caller may cost the gateway.
    #[serde(default)]
    pub limits: Limits,
}

/// `[gateway.limits]`: bounds on connections and failed logins, enforced before the caller
/// is known, on the front door, the admin API and every PostgreSQL listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// How long a client has to send a request's headers (HTTP), or its startup packet and
    /// credential (PostgreSQL). A slower client is disconnected. Default: `10s`.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub header_read_timeout: Duration,
    /// Connections open at once from one source address, over all listeners. Default: 256.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Connections open at once in total, over all listeners. Default: 4096.
    #[serde(default = "default_max_connections_total")]
    pub max_connections: usize,
    /// Failed authentications from one source within `auth_failure_window` before that
    /// source is refused without its credential being checked. Default: 60 (one a second,
    /// so a client retrying through an IdP's key rotation is not locked out).
    #[serde(default = "default_max_auth_failures")]
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`, from the source's first failure. Default: `1m`.
    #[serde(
        default = "default_auth_failure_window",
        deserialize_with = "de_duration"
    )]
    pub auth_failure_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: default_header_read_timeout(),
            max_connections_per_source: default_max_connections_per_source(),
            max_connections: default_max_connections_total(),
            max_auth_failures: default_max_auth_failures(),
            auth_failure_window: default_auth_failure_window(),
        }
    }
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections_per_source() -> usize {
    256
}
fn default_max_connections_total() -> usize {
    4096
}
fn default_max_auth_failures() -> u32 {
    60
}
fn default_auth_failure_window() -> Duration {
    Duration::from_secs(60)
}

/// `[gateway.tls]`: the front door's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the certificate chain, leaf first. Relative to the configuration file.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Relative to the configuration
    /// file. Keep it readable by the gateway only.
    pub key: PathBuf,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            id: default_gateway_id(),
            listen: default_listen(),
            admin_listen: None,
            data_dir: default_data_dir(),
            public_url: None,
            allowed_origins: Vec::new(),
            max_message_bytes: default_max_message_bytes(),
            request_timeout: default_request_timeout(),
            max_sessions: default_max_sessions(),
            session_idle_timeout: default_session_idle(),
            tls: None,
            allow_plain_http: false,
            limits: Limits::default(),
        }
    }
}

impl Gateway {
    /// The public URL without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if self.tls.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        }
    }
}

/// `[audit]`: how events are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `strict` (default): an event is on disk (fsync) before the response it describes is
    /// released to the caller. `batched`: events are committed in the background within a
    /// few milliseconds; a crash can lose the last events, in exchange for lower latency.
    #[serde(default)]
    pub durability: Durability,
    /// The log's name in its checkpoints (the C2SP origin line). Default:
    /// `portcullis/<gateway.id>`. Give each gateway instance its own: a checkpoint of one log
    /// proves nothing about another.
    pub origin: Option<String>,
    /// Directory holding the checkpoint signing key (`audit.key`, `audit.pub`), written by
    /// `portcullis keys audit-init --out DIR`. Keep it outside `data_dir`: whoever can rewrite
    /// the log must not also hold the key. Without it the log is still a Merkle tree, but no
    /// checkpoint is signed and nothing is published.
    pub signing_key: Option<PathBuf>,
    /// Sign a checkpoint at least this often while new events arrive. Default: `1s`.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub checkpoint_interval: Duration,
    /// ... and after at most this many new events. Default: 1000.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Publish each checkpoint as a file in this directory (never overwritten; meant for
    /// write-once storage such as a WORM bucket mount or another machine's share).
    pub checkpoint_dir: Option<PathBuf>,
    /// Witnesses that cosign checkpoints (`portcullis witness`).
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// Free space, in bytes, kept on the file system of `gateway.data_dir`: below it the
    /// gateway forwards nothing (every action is refused with a clear error) while its
    /// events can still be written. Default: 64 MiB, or 5% of the file system if that is
    /// smaller. 0 turns the check off (an action can then reach a target and its event fail).
    pub space_reserve: Option<u64>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            durability: Durability::default(),
            origin: None,
            signing_key: None,
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_dir: None,
            witnesses: Vec::new(),
            space_reserve: None,
        }
    }
}

/// `[[audit.witnesses]]`: a witness the gateway sends its checkpoints to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's base URL; checkpoints go to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's public key file (`witness.pub`), to check its cosignatures.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Strict,
    Batched,
}

/// `[identity]`: who may call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// `[[identity.oidc]]`: trusted OIDC issuers whose bearer JWTs identify callers.
    #[serde(default)]
    pub oidc: Vec<OidcIssuer>,
    /// `[[identity.api_keys]]`: API keys of agents and services, stored as SHA-256 only.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
}

/// One trusted OIDC issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// The issuer URL; must equal the tokens' `iss` claim. Its discovery document is read
    /// from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain one of them.
    #[serde(deserialize_with = "de_one_or_many")]
    pub audience: Vec<String>,
    /// Where the JWKS is, if not the discovery document's `jwks_uri`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The claim holding the caller's groups: a name (`groups`, Entra style) or a dotted
    /// path to a nested claim (`realm_access.roles`, Keycloak style). Default: `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// What kind of identity this issuer's tokens name. Default: `human`.
    #[serde(default = "default_human")]
    pub kind: IdentityKind,
    /// Allowed signature algorithms. Default: RS256, PS256, ES256, EdDSA. Symmetric (HS*)
    /// algorithms and `none` are never accepted.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`. Default: `60s`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The identity's name: the subject in policy and audit events.
    pub name: String,
    /// `agent` (default), `service` or `human`.
    #[serde(default = "default_agent")]
    pub kind: IdentityKind,
    /// Hex SHA-256 of the key (`portcullis keys new` prints it). Never the key itself.
    pub sha256: Spanned<String>,
    /// Groups this identity belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[targets.NAME]`: a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `mcp` (an MCP server) or `postgres` (a PostgreSQL database, reached through a
    /// PostgreSQL listener of the gateway).
    pub kind: TargetKind,
    /// For a stdio MCP server: the program and its arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment variables for the stdio program (added to a minimal environment: the
    /// gateway's own secrets are not inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory for the stdio program.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// For a streamable-HTTP MCP server: its endpoint URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The upstream's own credential, injected by the gateway. The caller's token is never
    /// forwarded.
    #[serde(default)]
    pub upstream_auth: Option<UpstreamAuth>,
    /// The most stdio processes of this target alive at once (one per session-based client
    /// session, plus one shared for stateless callers). Default: 16.
    #[serde(default = "default_max_processes")]
    pub max_processes: usize,
    /// The most sessions one identity may hold open on this target at once (each may be an
    /// upstream process), so one key cannot take every process slot from the others.
    /// Default: 4.
    #[serde(default = "default_max_sessions_per_identity")]
    pub max_sessions_per_identity: usize,
    /// When an identity at `max_sessions_per_identity` opens another session, its least
    /// recently used session idle for at least this long is ended to make room (a client
    /// that never ends its sessions is not locked out until they expire). Only the caller's
    /// own sessions are ended. Default: `60s`.
    #[serde(
        default = "default_session_reclaim_after",
        deserialize_with = "de_duration"
    )]
    pub session_reclaim_after: Duration,
    /// For `postgres` (required): the address of the gateway's PostgreSQL listener for this
    /// target, where agents connect with any PostgreSQL client. Each target has its own
    /// listener. An address other than loopback requires `[gateway.tls]`: clients send their
    /// API key or token as the PostgreSQL password, so they must connect with TLS.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// For `postgres` (required): the database, `postgres://HOST[:PORT]/DATABASE`
    /// (`postgresql://` also works; the port defaults to 5432). No user, password or query
    /// string: the credentials go in `user` and `password_env`, TLS in `upstream_tls`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// For `postgres` (required): the role the gateway logs in as upstream. Every caller's
    /// statements run as this role; give it only the privileges the rules can allow.
    #[serde(default)]
    pub user: Option<String>,
    /// For `postgres`: the environment variable holding `user`'s password, read when the
    /// gateway connects. Absent: no password is sent (trust or certificate authentication).
    /// Callers never see it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// For `postgres`: TLS to the database. `disable` (the default): none. `require`: encrypt,
    /// but check no certificate (as libpq's `sslmode=require`; protects against eavesdropping,
    /// not against an impostor). `verify-full`: encrypt, and check the certificate against
    /// `upstream_ca` and the host name against the certificate.
    #[serde(default)]
    pub upstream_tls: UpstreamTls,
    /// For `postgres` with `upstream_tls = "verify-full"` (required there): PEM file with the
    /// CA certificates the database's certificate must chain to. Relative to the
    /// configuration file.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// For `postgres`: keep the result sets of allowed statements, masked as the rule says,
    /// as content-addressed blobs in the data directory, referenced from their audit events.
    /// Default: false (events record the statement and the row count only).
    #[serde(default)]
    pub record_results: bool,
    /// For `postgres`: the most client connections open at once on `listen`; more are
    /// refused. Each holds one upstream connection. Default: 100.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `upstream_tls`: how a `postgres` target's connection to its database is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// No TLS.
    #[default]
    Disable,
    /// TLS without checking the certificate (libpq's `sslmode=require`).
    Require,
    /// TLS, the certificate checked against `upstream_ca` and the host name.
    VerifyFull,
}

/// A `postgres` target's `upstream`, resolved: what the adapter connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUpstream {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub database: String,
}

impl Target {
    /// The resolved `upstream` of a `postgres` target; `None` for other kinds. Validated at
    /// load, so every postgres target of a loaded configuration has one.
    pub fn pg_upstream(&self) -> Option<PgUpstream> {
        if self.kind != TargetKind::Postgres {
            return None;
        }
        parse_pg_url(self.upstream.as_deref()?).ok()
    }
}

/// Parses `postgres://HOST[:PORT]/DATABASE`; `Err` says what is wrong, for the user.
fn parse_pg_url(url: &str) -> Result<PgUpstream, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("must start with postgres:// or postgresql://")?;
    if rest.contains('?') || rest.contains('#') {
        return Err(
            "must not have a query string or fragment: set TLS with upstream_tls and upstream_ca"
                .into(),
        );
    }
    let (authority, database) = rest
        .split_once('/')
        .ok_or("must name the database: postgres://HOST[:PORT]/DATABASE")?;
    if authority.contains('@') {
        return Err(
            "must not hold a user or password: credentials go in `user` and `password_env`".into(),
        );
    }
    if authority.contains(',') {
        return Err("must name one host".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("has an unclosed '[' in its host")?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("has text after the IPv6 address".into()),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("must name a host: postgres://HOST[:PORT]/DATABASE".into());
    }
    let port = match port {
        None => 5432,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("has an invalid port {port:?}")),
        },
    };
    let database = percent_decode(database).ok_or("has a bad %-escape in the database name")?;
    if database.is_empty() || database.contains('/') {
        return Err("must name one database: postgres://HOST[:PORT]/DATABASE".into());
    }
    Ok(PgUpstream {
        host: host.to_string(),
        port,
        database,
    })
}

/// Decodes `%XX` escapes (a database name may hold any character).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A header carrying the upstream's credential, read from the gateway's environment.
#[derive(Debug, Clone, Deserialize)]
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

/// `[[rules]]`: one policy rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A unique name; refusals and audit events quote it.
    pub name: Spanned<String>,
    /// Free text for reviewers.
    #[serde(default)]
    pub description: Option<String>,
    /// Who the rule applies to. Empty matches every authenticated caller.
    #[serde(default)]
    pub who: Who,
    /// The target name the rule applies to, or `*` for all.
    pub target: Spanned<String>,
    /// Tool-name globs (`refund_*`). Applies to `tools/call` and to `tools/list` filtering.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource-URI globs, for `resources/read`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt-name globs, for `prompts/get`.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// `allow` (default), `deny` or `hold`. A matching deny beats a hold, which beats an allow.
    /// A rule with an SQL sub-table (`allow.*`, `deny.*` or `hold.*`) takes its decision from
    /// the sub-table's name; `decision` may then be left out, or must say the same.
    #[serde(default, rename = "decision")]
    declared_decision: Option<RuleDecision>,
    /// The rule's effective decision: `decision`, or the name of its SQL sub-table. Set at
    /// load (not a TOML key).
    #[serde(skip)]
    pub decision: RuleDecision,
    /// For database targets: `allow.statements = ["select"]`, `allow.tables = ["customers"]`
    /// ... the statements this rule allows. Each list present must cover the whole statement:
    /// every kind it performs, every table it touches. See [`SqlMatch`].
    #[serde(default)]
    pub allow: Option<SqlMatch>,
    /// For database targets: `deny.tables = ["secrets"]` ... the statements this rule denies:
    /// those that match every list present (any kind, any table, any function listed).
    #[serde(default)]
    pub deny: Option<SqlMatch>,
    /// For database targets: `hold.statements = ["update"]` ... the statements this rule holds
    /// for approval, matched as for `deny`.
    #[serde(default)]
    pub hold: Option<SqlMatch>,
    /// An optional CEL condition; the rule matches only when it is true. Variables:
    /// `args` (the call's arguments), `identity` (`subject`, `issuer`, `kind`, `groups`,
    /// `auth_method`), `tool` and `resource` (the name or URI acted on), `target`, `verb`,
    /// `findings` (detectors that found sensitive data in the arguments) and, for database
    /// targets, `sql` (`kind`, `kinds`, `tables`, `functions`, `no_where`; for other actions
    /// `kind` is `""` and the lists are empty).
    /// Example: `args.amount > 500`, `"audit.log" in sql.tables`. A condition that cannot
    /// be evaluated fails closed.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// For `deny`: the message the caller gets.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `hold`, and for `requires_grant`: the groups whose members may approve. The
    /// requester never may approve their own request, whatever their groups.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// For `hold` and `requires_grant`: how many distinct approvers must approve. Default: 1.
    #[serde(default = "default_min_approvals")]
    pub min_approvals: u32,
    /// For `hold` and `requires_grant`: how long a request may wait for a decision.
    /// Default: `15m`.
    #[serde(default = "default_hold_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// For `hold`: the requester must give a reason (MCP: `_meta["dev.portcullis/reason"]`;
    /// HTTP: the `Portcullis-Reason` header). Grant requests always need one.
    #[serde(default)]
    pub require_reason: bool,
    /// For `allow`: the rule allows only callers holding an active just-in-time grant
    /// (`portcullis access request`) that covers the request; `approvers` decide grants.
    #[serde(default)]
    pub requires_grant: bool,
    /// For `requires_grant`: the longest grant that may be asked for. Default: `8h`.
    #[serde(default = "default_max_grant", deserialize_with = "de_duration")]
    pub max_grant: Duration,
    /// For `allow`: the masking profile (`[masks.NAME]`, or `default`) applied to what comes
    /// back: tool results, resource contents, prompt messages.
    #[serde(default)]
    pub mask: Option<String>,
    /// For `allow` with `mask` on a database target: statements may use masked columns
    /// outside the output list (WHERE, JOIN, ORDER BY, GROUP BY ...). Off by default: each
    /// such statement tells the caller something about the hidden values (`WHERE
    /// substr(account_number, 1, 1) = '4'`), and enough of them read the values whole.
    #[serde(default)]
    pub filter_masked: bool,
}

/// An SQL sub-table of a rule (`allow`, `deny` or `hold`): which statements it is about.
///
/// Statements are classified by the database adapter: their kinds (a statement can perform
/// several, e.g. a `WITH ... DELETE ... SELECT` is `select` and `delete`), the tables and
/// views they touch, the functions they call, and whether an UPDATE or DELETE has no WHERE.
///
/// `allow` must cover the whole statement: every kind is in `statements`, every table matches
/// `tables` (an empty list: any), every *privileged* function (one that reads server files,
/// runs SQL from a string, reaches other servers, changes settings ...) matches `functions`,
/// and a statement without WHERE needs `without_where = true`. Ordinary functions need no
/// listing.
///
/// `deny` and `hold` match a statement that meets every list present: some kind in
/// `statements`, some table in `tables`, some function in `functions`, and, with
/// `without_where = true`, only an UPDATE or DELETE without WHERE. They must set at least one.
///
/// Table and function patterns are globs (`*` also crosses `.`), compared lower-case
/// (PostgreSQL folds unquoted names). An unqualified name and the same name in schema
/// `public` are the same table: `customers` matches `public.customers` and the reverse, but
/// not `sales.customers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMatch {
    /// Statement kinds, from [`STATEMENT_KINDS`]: `select`, `insert`, `update`, `delete`,
    /// `merge`, `copy`, `ddl`, `grant`, `truncate`, `do`, `call`, `set`, `show`,
    /// `transaction`, `listen`, `notify`, `explain`, `prepare`, `execute`, `maintenance`,
    /// `lock`, `cursor`, `session`, `other`.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Table and view name globs (`customers`, `public.*`, `sales.order_*`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Function name globs. In `allow`: privileged functions the statements may call besides.
    /// In `deny`/`hold`: functions whose call the rule is about.
    #[serde(default)]
    pub functions: Vec<String>,
    /// In `allow`: an UPDATE or DELETE without WHERE (every row) is also allowed. In
    /// `deny`/`hold`: the rule is about such statements only.
    #[serde(default)]
    pub without_where: bool,
}

impl SqlMatch {
    fn is_empty(&self) -> bool {
        self.statements.is_empty()
            && self.tables.is_empty()
            && self.functions.is_empty()
            && !self.without_where
    }
}

/// The statement kinds the database adapter reports and `statements` may name.
pub const STATEMENT_KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "copy",
    "ddl",
    "grant",
    "truncate",
    "do",
    "call",
    "set",
    "show",
    "transaction",
    "listen",
    "notify",
    "explain",
    "prepare",
    "execute",
    "maintenance",
    "lock",
    "cursor",
    "session",
    "other",
];

impl Rule {
    /// The rule's SQL sub-table, whichever of `allow`, `deny`, `hold` it is (at most one, as
    /// validated at load).
    pub fn sql(&self) -> Option<&SqlMatch> {
        self.allow
            .as_ref()
            .or(self.deny.as_ref())
            .or(self.hold.as_ref())
    }

    /// The decision the rule answers with: the same as `decision` after load.
    pub fn effective_decision(&self) -> RuleDecision {
        match (&self.allow, &self.deny, &self.hold) {
            (Some(_), _, _) => RuleDecision::Allow,
            (None, Some(_), _) => RuleDecision::Deny,
            (None, None, Some(_)) => RuleDecision::Hold,
            (None, None, None) => self.declared_decision.unwrap_or_default(),
        }
    }

    /// Whether the rule names no tools, resources, prompts or SQL sub-table: it covers
    /// everything on its target.
    pub fn whole_target(&self) -> bool {
        self.tools.is_empty()
            && self.resources.is_empty()
            && self.prompts.is_empty()
            && self.sql().is_none()
    }
}

/// `[approvals]`: how people are asked, and who may decide in an emergency.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// Groups whose members may approve any held request or grant, their own included, in an
    /// emergency. Such a decision needs a reason and is flagged `break_glass` in the audit log.
    #[serde(default)]
    pub break_glass_groups: Vec<String>,
    /// The admin API's URL as approvers reach it, for links in notifications. Default:
    /// `http://<gateway.admin_listen>`.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Where approvers are told that something waits for them.
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// `[[approvals.webhooks]]`: one notification endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// An `https://` URL (`http://` only on loopback).
    pub url: String,
    /// `json` (a generic payload, the default) or `slack` (a Slack incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Environment variable holding the HMAC-SHA256 key that signs each delivery
    /// (`Portcullis-Signature: t=<unix time>,v1=<hex HMAC of "<t>.<body>">`). Required.
    pub secret_env: String,
    /// Deliveries tried per notification, with exponential backoff (1 s, 2 s, 4 s ... capped
    /// at 60 s). Default: 5.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

/// `[masks.NAME]`: what a masking profile finds and how it hides it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskProfile {
    /// Built-in detectors or groups (`pii`, `secrets`, `all`). Default: `["all"]`.
    #[serde(default = "default_mask_detectors")]
    pub detectors: Vec<String>,
    /// Field names or paths masked whatever they hold: a key name (`account_number`) or a
    /// glob over the dotted path (`*.ssn`, `customer.card`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Result column names of database targets masked whole whatever they hold: globs,
    /// compared case-insensitively (`account_number`, `*_ssn`). Like `fields`, they also
    /// match keys of the same name in JSON results.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `redact` (a label such as `[EMAIL]`, the default), `partial` (keep the last `keep`
    /// characters), or `hash` (a keyed HMAC token: equal values give equal tokens).
    #[serde(default)]
    pub style: MaskStyle,
    /// For `partial`: how many trailing characters stay. Default: 4.
    #[serde(default = "default_mask_keep")]
    pub keep: usize,
    /// A style per detector, overriding `style`: `{ email = "hash" }`.
    #[serde(default)]
    pub styles: BTreeMap<String, MaskStyle>,
    /// For `hash`: the environment variable holding the HMAC key (at least 32 bytes). Read at
    /// start; the key never appears in the file.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// Exact values always masked (label `[DENY_LIST]`).
    #[serde(default)]
    pub deny_list: Vec<String>,
    /// Detectors of your own.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// For database targets: sample each table the first time an allowed statement under
    /// this profile touches it, and mask the columns whose values the detectors flag as if
    /// `columns` named them (tags kept in the data directory).
    #[serde(default)]
    pub discover: bool,
}

impl Default for MaskProfile {
    fn default() -> Self {
        MaskProfile {
            detectors: default_mask_detectors(),
            fields: Vec::new(),
            columns: Vec::new(),
            style: MaskStyle::default(),
            keep: default_mask_keep(),
            styles: BTreeMap::new(),
            hmac_key_env: None,
            deny_list: Vec::new(),
            custom: Vec::new(),
            discover: false,
        }
    }
}

impl MaskProfile {
    /// The globs masked whole by name: `fields` and `columns` together, without duplicates.
    /// This is what the masking engine's field list should be built from.
    pub fn field_globs(&self) -> Vec<String> {
        let mut globs = self.fields.clone();
        for column in &self.columns {
            if !globs.contains(column) {
                globs.push(column.clone());
            }
        }
        globs
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    #[default]
    Redact,
    Partial,
    Hash,
}

/// `[[masks.NAME.custom]]`: a detector of your own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Its name in labels and audit events.
    pub name: String,
    /// A regular expression (Rust `regex` syntax; linear-time, no look-around).
    pub pattern: String,
    /// A check run on each candidate: `luhn` or `mod97`.
    #[serde(default)]
    pub validator: Option<String>,
    #[serde(default)]
    pub style: Option<MaskStyle>,
}

fn default_mask_detectors() -> Vec<String> {
    vec!["all".into()]
}
fn default_mask_keep() -> usize {
    4
}

/// `who`: the callers a rule applies to. Each list that is present must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Who {
    /// The caller is in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The caller's subject is one of these.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The caller's kind is one of these (`human`, `agent`, `service`).
    #[serde(default)]
    pub kinds: Vec<IdentityKind>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDecision {
    #[default]
    Allow,
    Deny,
    Hold,
}

impl RuleDecision {
    /// `allow`, `deny` or `hold`, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleDecision::Allow => "allow",
            RuleDecision::Deny => "deny",
            RuleDecision::Hold => "hold",
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, text)
    }

    /// Parses and validates configuration text; `path` is used in errors and to resolve
    /// relative paths.
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let source = SourceFile {
            path: path.to_path_buf(),
            text,
        };
        let mut config: Config = toml::from_str(&source.text).map_err(|e| {
            let line = e.span().map(|s| source.line_of(s.start)).unwrap_or(1);
            ConfigError::Invalid {
                path: source.path.clone(),
                line,
                message: e.message().to_string(),
            }
        })?;
        config.source = source;
        if let Some(dir) = path.parent() {
            let resolve = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            };
            resolve(&mut config.gateway.data_dir);
            if let Some(key) = config.audit.signing_key.as_mut() {
                resolve(key);
            }
            if let Some(dir) = config.audit.checkpoint_dir.as_mut() {
                resolve(dir);
            }
            for witness in &mut config.audit.witnesses {
                resolve(&mut witness.key);
            }
            if let Some(tls) = config.gateway.tls.as_mut() {
                resolve(&mut tls.cert);
                resolve(&mut tls.key);
            }
            for target in config.targets.values_mut() {
                if let Some(ca) = target.upstream_ca.as_mut() {
                    resolve(ca);
                }
            }
        }
        for rule in &mut config.rules {
            rule.decision = rule.effective_decision();
        }
        config.validate()?;
        Ok(config)
    }

    /// The checkpoint origin: configured, or derived from the gateway id.
    pub fn audit_origin(&self) -> String {
        self.audit
            .origin
            .clone()
            .unwrap_or_else(|| format!("portcullis/{}", self.gateway.id))
    }

    fn validate_audit(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        let audit = &self.audit;
        let origin = self.audit_origin();
        if origin.is_empty() || origin.contains('\n') || origin.trim() != origin {
            return Err(src.error_at(
                find_text(&src.text, "origin"),
                "audit.origin: must be one non-empty line without leading or trailing spaces",
            ));
        }
        if audit.checkpoint_every == 0 {
            return Err(src.error_at(
                find_text(&src.text, "checkpoint_every"),
                "audit.checkpoint_every: must be at least 1",
            ));
        }
        if audit.checkpoint_interval < Duration::from_millis(10) {
            return Err(src.error_at(
                find_text(&src.text, "checkpoint_interval"),
                "audit.checkpoint_interval: must be at least 10ms",
            ));
        }
        if let Some(key) = &audit.signing_key
            && key.starts_with(&self.gateway.data_dir)
        {
            return Err(src.error_at(
                find_text(&src.text, "signing_key"),
                "audit.signing_key: must not be inside gateway.data_dir; whoever can rewrite the log must not also hold its signing key",
            ));
        }
        if audit.signing_key.is_none()
            && (audit.checkpoint_dir.is_some() || !audit.witnesses.is_empty())
        {
            return Err(src.error_at(
                find_text(&src.text, "[audit]"),
                "audit: checkpoint_dir and witnesses publish signed checkpoints, so audit.signing_key is required",
            ));
        }
        for witness in &audit.witnesses {
            if !(witness.url.starts_with("http://") || witness.url.starts_with("https://")) {
                return Err(src.error_at(
                    find_text(&src.text, &witness.url),
                    format!(
                        "audit.witnesses.url: {:?} is not an http:// or https:// URL",
                        witness.url
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_approvals(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        if let Some(admin) = self.gateway.admin_listen
            && self.gateway.tls.is_none()
            && !self.gateway.allow_plain_http
            && !admin.ip().is_loopback()
        {
            return Err(src.error_at(
                find_text(&src.text, "admin_listen"),
                format!(
                    "gateway.admin_listen: {admin} is reachable from the network, so approvers' credentials would cross it in clear text; configure [gateway.tls], or set gateway.allow_plain_http = true behind a TLS proxy"
                ),
            ));
        }
        for (i, hook) in self.approvals.webhooks.iter().enumerate() {
            let at = |m: String| src.error_at(find_text(&src.text, &hook.url), m);
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| hook.url.starts_with(p));
            if !hook.url.starts_with("https://") && !loopback {
                return Err(at(format!(
                    "approvals.webhooks[{i}].url: {:?} must be an https:// URL (http:// only on loopback): notifications name people and requests",
                    hook.url
                )));
            }
            if hook.secret_env.is_empty() {
                return Err(at(format!(
                    "approvals.webhooks[{i}].secret_env: must name an environment variable"
                )));
            }
            if !(1..=20).contains(&hook.max_attempts) {
                return Err(at(format!(
                    "approvals.webhooks[{i}].max_attempts: must be between 1 and 20"
                )));
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.gateway.limits;
        let zero = [
            ("header_read_timeout", limits.header_read_timeout.is_zero()),
            (
                "max_connections_per_source",
                limits.max_connections_per_source == 0,
            ),
            ("max_connections", limits.max_connections == 0),
            ("max_auth_failures", limits.max_auth_failures == 0),
            ("auth_failure_window", limits.auth_failure_window.is_zero()),
        ];
        for (field, is_zero) in zero {
            if is_zero {
                return Err(self.source.error_at(
                    find_text(&self.source.text, field),
                    format!("gateway.limits.{field}: must be more than zero"),
                ));
            }
        }
        Ok(())
    }

    /// The admin API's URL for approvers: configured, or derived from `admin_listen`.
    pub fn admin_url(&self) -> Option<String> {
        if let Some(url) = &self.approvals.admin_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let addr = self.gateway.admin_listen?;
        let scheme = if self.gateway.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{addr}"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        if self.gateway.max_message_bytes < 1024 {
            return Err(src.error_at(
                find_text(&src.text, "max_message_bytes"),
                "gateway.max_message_bytes: must be at least 1024",
            ));
        }
        if self.gateway.tls.is_none()
            && !self.gateway.allow_plain_http
            && !self.gateway.listen.ip().is_loopback()
        {
            return Err(src.error_at(
                find_text(&src.text, "listen"),
                format!(
                    "gateway.listen: {} is reachable from the network, so credentials would cross it in clear text; configure [gateway.tls], or set gateway.allow_plain_http = true if a proxy in front terminates TLS",
                    self.gateway.listen
                ),
            ));
        }
        self.validate_limits()?;
        self.validate_audit()?;
        self.validate_approvals()?;
        for (name, target) in &self.targets {
            let at = |m: String| src.error_at(find_table(&src.text, name), m);
            if !valid_name(name) {
                return Err(at(format!(
                    "targets.{name}: a target name may hold only letters, digits, '-' and '_'"
                )));
            }
            match target.kind {
                TargetKind::Mcp => match (&target.command, &target.url) {
                    (Some(cmd), None) if !cmd.is_empty() => {}
                    (Some(_), None) => {
                        return Err(at(format!("targets.{name}.command: must name a program")));
                    }
                    (None, Some(url))
                        if url.starts_with("http://") || url.starts_with("https://") => {}
                    (None, Some(url)) => {
                        return Err(at(format!(
                            "targets.{name}.url: {url:?} is not an http:// or https:// URL"
                        )));
                    }
                    _ => {
                        return Err(at(format!(
                            "targets.{name}: an MCP target needs exactly one of `command` (stdio) or `url` (streamable HTTP)"
                        )));
                    }
                },
                TargetKind::Postgres => self.validate_postgres(name, target)?,
                other => {
                    return Err(at(format!(
                        "targets.{name}.kind: {other:?} targets are not supported by this version"
                    )));
                }
            }
            if target.kind != TargetKind::Postgres {
                let only_pg = [
                    ("listen", target.listen.is_some()),
                    ("upstream", target.upstream.is_some()),
                    ("user", target.user.is_some()),
                    ("password_env", target.password_env.is_some()),
                    ("upstream_tls", target.upstream_tls != UpstreamTls::Disable),
                    ("upstream_ca", target.upstream_ca.is_some()),
                    ("record_results", target.record_results),
                ];
                if let Some((field, _)) = only_pg.iter().find(|(_, set)| *set) {
                    return Err(src.error_at(
                        find_field(&src.text, name, field),
                        format!(
                            "targets.{name}.{field}: only a postgres target takes {field} (this one is {:?})",
                            target.kind
                        ),
                    ));
                }
            }
            if target.max_processes == 0 {
                return Err(at(format!(
                    "targets.{name}.max_processes: must be at least 1"
                )));
            }
            if target.max_sessions_per_identity == 0 {
                return Err(at(format!(
                    "targets.{name}.max_sessions_per_identity: must be at least 1"
                )));
            }
            if target.command.is_some() && target.upstream_auth.is_some() {
                return Err(at(format!(
                    "targets.{name}.upstream_auth: only HTTP upstreams take a credential header; give a stdio program its secret with `env`"
                )));
            }
        }
        for (name, profile) in &self.masks {
            for column in &profile.columns {
                if let Err(e) = globset::Glob::new(column) {
                    return Err(src.error_at(
                        find_text(&src.text, &format!("masks.{name}")),
                        format!("masks.{name}.columns: bad glob {column:?}: {e}"),
                    ));
                }
            }
        }
        let mut hashes = HashSet::new();
        let mut key_names = HashSet::new();
        for (i, key) in self.identity.api_keys.iter().enumerate() {
            let hash = key.sha256.get_ref();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(src.error_at(
                    key.sha256.span(),
                    format!("identity.api_keys[{i}].sha256: must be 64 hex digits (the SHA-256 of the key, as `portcullis keys new` prints it)"),
                ));
            }
            if !hashes.insert(hash.to_ascii_lowercase()) {
                return Err(src.error_at(
                    key.sha256.span(),
                    format!("identity.api_keys[{i}].sha256: the same key hash is configured twice"),
                ));
            }
            if !key_names.insert(key.name.as_str()) {
                return Err(src.error_at(
                    key.sha256.span(),
                    format!(
                        "identity.api_keys[{i}].name: {:?} is used by another key",
                        key.name
                    ),
                ));
            }
        }
        for (i, issuer) in self.identity.oidc.iter().enumerate() {
            let at = |m: String| src.error_at(find_text(&src.text, &issuer.issuer), m);
            if !issuer.issuer.starts_with("https://") && !issuer.issuer.starts_with("http://") {
                return Err(at(format!(
                    "identity.oidc[{i}].issuer: must be an http:// or https:// URL (use https outside tests)"
                )));
            }
            if issuer.audience.is_empty() {
                return Err(at(format!(
                    "identity.oidc[{i}].audience: at least one audience is required"
                )));
            }
            for alg in &issuer.algorithms {
                if !matches!(
                    alg.as_str(),
                    "RS256"
                        | "RS384"
                        | "RS512"
                        | "PS256"
                        | "PS384"
                        | "PS512"
                        | "ES256"
                        | "ES384"
                        | "EdDSA"
                ) {
                    return Err(at(format!(
                        "identity.oidc[{i}].algorithms: {alg:?} is not accepted (asymmetric algorithms only: RS256, PS256, ES256, EdDSA, ...)"
                    )));
                }
            }
        }
        let mut rule_names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let name = rule.name.get_ref();
            if name.trim().is_empty() {
                return Err(src.error_at(
                    rule.name.span(),
                    format!("rules[{i}].name: must not be empty"),
                ));
            }
            if !rule_names.insert(name.as_str()) {
                return Err(src.error_at(
                    rule.name.span(),
                    format!("rules[{i}].name: {name:?} is used by another rule"),
                ));
            }
            let target = rule.target.get_ref();
            if target != "*" && !self.targets.contains_key(target) {
                return Err(src.error_at(
                    rule.target.span(),
                    format!(
                        "rules[{i}].target: no target named {target:?} (known: {})",
                        self.target_names()
                    ),
                ));
            }
            for glob in rule
                .tools
                .iter()
                .chain(&rule.resources)
                .chain(&rule.prompts)
            {
                if let Err(e) = globset::Glob::new(glob) {
                    return Err(src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob {glob:?}: {e}"),
                    ));
                }
            }
            let at = |m: String| src.error_at(rule.name.span(), format!("rules[{i}] ({name}).{m}"));
            self.validate_sql_rule(rule, &at)?;
            if rule.min_approvals == 0 {
                return Err(at("min_approvals: must be at least 1".into()));
            }
            if rule.timeout < Duration::from_secs(1) {
                return Err(at("timeout: must be at least 1s".into()));
            }
            if rule.requires_grant {
                if rule.decision != RuleDecision::Allow {
                    return Err(at(
                        "requires_grant: only an allow rule can require a grant".into()
                    ));
                }
                if rule.approvers.is_empty() {
                    return Err(at("approvers: a rule that requires a grant must name the groups that may approve grants".into()));
                }
                if rule.max_grant < Duration::from_secs(60) {
                    return Err(at("max_grant: must be at least 1m".into()));
                }
            }
            match rule.decision {
                RuleDecision::Hold if rule.approvers.is_empty() => {
                    return Err(at(
                        "approvers: a hold rule must name the groups that may approve".into(),
                    ));
                }
                RuleDecision::Deny | RuleDecision::Hold if rule.mask.is_some() => {
                    return Err(src.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}).mask: only an allow rule can mask"),
                    ));
                }
                _ => {}
            }
            if rule.filter_masked && rule.mask.is_none() {
                return Err(src.error_at(
                    rule.name.span(),
                    format!(
                        "rules[{i}] ({name}).filter_masked: only a rule that masks (an allow rule with mask) can allow filtering on masked columns"
                    ),
                ));
            }
            if let Some(mask) = &rule.mask
                && mask != "default"
                && !self.masks.contains_key(mask)
            {
                return Err(src.error_at(
                    rule.name.span(),
                    format!(
                        "rules[{i}] ({name}).mask: no masking profile {mask:?}; declare [masks.{mask}] or use \"default\""
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A rule's SQL sub-table, and which targets its lists fit. `at` prefixes
    /// `rules[i] (name).` and locates the error at the rule.
    fn validate_sql_rule(
        &self,
        rule: &Rule,
        at: &dyn Fn(String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let tables: Vec<(&str, &SqlMatch)> = [
            ("allow", &rule.allow),
            ("deny", &rule.deny),
            ("hold", &rule.hold),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.as_ref().map(|m| (n, m)))
        .collect();
        let target = rule.target.get_ref();
        let kind = self.targets.get(target).map(|t| t.kind);
        let Some(&(table, sql)) = tables.first() else {
            if kind == Some(TargetKind::Postgres)
                && let Some(list) = [
                    ("tools", &rule.tools),
                    ("resources", &rule.resources),
                    ("prompts", &rule.prompts),
                ]
                .into_iter()
                .find(|(_, l)| !l.is_empty())
            {
                return Err(at(format!(
                    "{}: target {target} is a postgres database, which has no {}; say which statements the rule is about with allow.statements, allow.tables ... (or deny.*, hold.*)",
                    list.0, list.0
                )));
            }
            return Ok(());
        };
        if tables.len() > 1 {
            return Err(at(format!(
                "{}: a rule has at most one of the SQL sub-tables allow, deny and hold (its decision); write one rule each",
                tables[1].0
            )));
        }
        if let Some(declared) = rule.declared_decision
            && declared.as_str() != table
        {
            return Err(at(format!(
                "decision: {:?} contradicts the SQL sub-table `{table}`, which makes the rule a {table} rule; leave decision out",
                declared.as_str()
            )));
        }
        if let Some(kind) = kind
            && kind != TargetKind::Postgres
        {
            return Err(at(format!(
                "{table}: target {target} is not a database ({kind:?}); SQL sub-tables are for postgres targets"
            )));
        }
        if let Some(list) = [
            ("tools", &rule.tools),
            ("resources", &rule.resources),
            ("prompts", &rule.prompts),
        ]
        .into_iter()
        .find(|(_, l)| !l.is_empty())
        {
            return Err(at(format!(
                "{}: a rule is about SQL statements (`{table}`) or MCP {}, not both; write two rules",
                list.0, list.0
            )));
        }
        for statement in &sql.statements {
            if !STATEMENT_KINDS.contains(&statement.to_ascii_lowercase().as_str()) {
                return Err(at(format!(
                    "{table}.statements: {statement:?} is not a statement kind (known: {})",
                    STATEMENT_KINDS.join(", ")
                )));
            }
        }
        for (field, list) in [("tables", &sql.tables), ("functions", &sql.functions)] {
            for glob in list {
                if glob.is_empty() {
                    return Err(at(format!(
                        "{table}.{field}: an empty pattern matches nothing"
                    )));
                }
                if let Err(e) = globset::Glob::new(&glob.to_ascii_lowercase()) {
                    return Err(at(format!("{table}.{field}: bad glob {glob:?}: {e}")));
                }
            }
        }
        if table != "allow" && sql.is_empty() {
            return Err(at(format!(
                "{table}: an empty {table} matches no statement; list statements, tables or functions, or set {table}.without_where = true (for every statement on the target, leave the sub-table out and set decision = \"{table}\")"
            )));
        }
        Ok(())
    }

    /// A `postgres` target: its listener, upstream and credentials.
    fn validate_postgres(&self, name: &str, target: &Target) -> Result<(), ConfigError> {
        let src = &self.source;
        let at = |field: &str, m: String| {
            Err(src.error_at(
                find_field(&src.text, name, field),
                format!("targets.{name}.{field}: {m}"),
            ))
        };
        for (field, set) in [
            ("command", target.command.is_some()),
            ("url", target.url.is_some()),
            ("upstream_auth", target.upstream_auth.is_some()),
            ("env", !target.env.is_empty()),
            ("cwd", target.cwd.is_some()),
        ] {
            if set {
                return at(
                    field,
                    "a postgres target does not take it (MCP targets do); give the database in `upstream` and the role in `user` and `password_env`".into(),
                );
            }
        }
        let Some(listen) = target.listen else {
            return Err(src.error_at(
                find_table(&src.text, name),
                format!(
                    "targets.{name}.listen: a postgres target needs the address of its PostgreSQL listener, e.g. listen = \"127.0.0.1:6432\""
                ),
            ));
        };
        if !listen.ip().is_loopback() && self.gateway.tls.is_none() {
            return at(
                "listen",
                format!(
                    "{listen} is reachable from the network, and PostgreSQL clients send their API key or token as the password, so they must connect with TLS: configure [gateway.tls] (its certificate serves this listener too), or listen on a loopback address"
                ),
            );
        }
        let clash = |other: SocketAddr| {
            other.port() == listen.port()
                && (other.ip() == listen.ip()
                    || other.ip().is_unspecified()
                    || listen.ip().is_unspecified())
        };
        if clash(self.gateway.listen) {
            return at(
                "listen",
                format!(
                    "{listen} is also gateway.listen; give the PostgreSQL listener its own address"
                ),
            );
        }
        if self.gateway.admin_listen.is_some_and(clash) {
            return at(
                "listen",
                format!(
                    "{listen} is also gateway.admin_listen; give the PostgreSQL listener its own address"
                ),
            );
        }
        if let Some((other, _)) = self
            .targets
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .find(|(_, t)| t.kind == TargetKind::Postgres && t.listen.is_some_and(clash))
        {
            return at(
                "listen",
                format!(
                    "{listen} is also the listener of target {other}; each target needs its own"
                ),
            );
        }
        let Some(upstream) = &target.upstream else {
            return Err(src.error_at(
                find_table(&src.text, name),
                format!(
                    "targets.{name}.upstream: a postgres target needs its database, e.g. upstream = \"postgres://127.0.0.1:5432/billing\""
                ),
            ));
        };
        if let Err(e) = parse_pg_url(upstream) {
            return at("upstream", format!("{upstream:?} {e}"));
        }
        match &target.user {
            None => {
                return Err(src.error_at(
                    find_table(&src.text, name),
                    format!(
                        "targets.{name}.user: a postgres target needs the role the gateway logs in as, e.g. user = \"billing_ro\""
                    ),
                ));
            }
            Some(user) if user.trim().is_empty() => {
                return at("user", "must name a role".into());
            }
            Some(_) => {}
        }
        if target
            .password_env
            .as_ref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return at(
                "password_env",
                "must name an environment variable (leave it out to send no password)".into(),
            );
        }
        match (target.upstream_tls, &target.upstream_ca) {
            (UpstreamTls::VerifyFull, None) => {
                return at(
                    "upstream_tls",
                    "\"verify-full\" checks the database's certificate, so upstream_ca must name the PEM file of the CA certificates it chains to".into(),
                );
            }
            (UpstreamTls::Disable | UpstreamTls::Require, Some(_)) => {
                return at(
                    "upstream_ca",
                    "is used only with upstream_tls = \"verify-full\"; with another setting no certificate is checked".into(),
                );
            }
            _ => {}
        }
        if target.max_connections == 0 {
            return at("max_connections", "must be at least 1".into());
        }
        Ok(())
    }

    fn target_names(&self) -> String {
        if self.targets.is_empty() {
            return "none".into();
        }
        self.targets
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The span of a `[targets.NAME]` header, for errors about a target as a whole.
fn find_table(text: &str, name: &str) -> std::ops::Range<usize> {
    find_text(text, &format!("targets.{name}"))
}

/// The span of `field` inside `[targets.NAME]` (the header when the field is not found).
fn find_field(text: &str, name: &str, field: &str) -> std::ops::Range<usize> {
    let table = find_table(text, name);
    let start = table.end;
    text[start..]
        .match_indices(field)
        .map(|(i, _)| start + i)
        // The field as a key: at the start of a line, followed by `=` or spaces.
        .find(|&i| {
            text[..i]
                .rsplit('\n')
                .next()
                .is_some_and(|l| l.trim().is_empty())
                && text[i + field.len()..]
                    .trim_start_matches([' ', '\t'])
                    .starts_with('=')
        })
        .map(|i| i..i + field.len())
        .unwrap_or(table)
}

fn find_text(text: &str, needle: &str) -> std::ops::Range<usize> {
    text.find(needle)
        .map(|s| s..s + needle.len())
        .unwrap_or(0..0)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"30s\" or \"15m\": {e}"
        ))
    })
}

fn de_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_gateway_id() -> String {
    "portcullis".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("portcullis-data")
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_sessions() -> usize {
    1024
}
fn default_session_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_human() -> IdentityKind {
    IdentityKind::Human
}
fn default_agent() -> IdentityKind {
    IdentityKind::Agent
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_max_processes() -> usize {
    16
}
fn default_max_sessions_per_identity() -> usize {
    4
}
fn default_session_reclaim_after() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    100
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_auth_prefix() -> String {
    "Bearer ".into()
}
fn default_min_approvals() -> u32 {
    1
}
fn default_max_grant() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_webhook_attempts() -> u32 {
    5
}
fn default_hold_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("portcullis.toml"), text.to_string())
    }

    const TARGET: &str = "[targets.tools]\nkind = \"mcp\"\ncommand = [\"server\"]\n";

    /// The complete example in the reference documentation is a valid file.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/configuration.md");
        let example = doc
            .split("## Complete example")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .expect("docs/configuration.md has a complete example");
        let config = Config::parse(Path::new("/etc/portcullis/portcullis.toml"), example.into())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.audit_origin(), "portcullis/gw-eu-1");
        assert_eq!(config.audit.witnesses.len(), 1);
        assert_eq!(config.audit.checkpoint_every, 1000);
        assert_eq!(config.approvals.webhooks.len(), 1);
        assert!(config.rules.iter().any(|r| r.requires_grant));
        assert_eq!(
            config.admin_url().as_deref(),
            Some("https://portcullis-admin.example.com")
        );
    }

    #[test]
    fn approval_settings_are_checked() {
        let rule = |extra: &str| {
            parse(&format!(
                "{TARGET}[[rules]]\nname = \"r\"\ntarget = \"tools\"\n{extra}\n"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let cases = [
            (
                "decision = \"deny\"\nrequires_grant = true\napprovers = [\"a\"]",
                "rules[0] (r).requires_grant: only an allow rule can require a grant",
            ),
            (
                "requires_grant = true",
                "must name the groups that may approve grants",
            ),
            (
                "decision = \"hold\"\napprovers = [\"a\"]\nmin_approvals = 0",
                "min_approvals: must be at least 1",
            ),
            (
                "requires_grant = true\napprovers = [\"a\"]\nmax_grant = \"10s\"",
                "max_grant: must be at least 1m",
            ),
        ];
        for (extra, expected) in cases {
            let err = rule(extra).unwrap_err();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        assert!(rule("requires_grant = true\napprovers = [\"a\"]\nmax_grant = \"2h\"").is_ok());

        let err = parse(
            "[[approvals.webhooks]]\nurl = \"http://hooks.example.com/x\"\nsecret_env = \"S\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be an https:// URL"), "{err}");
        assert!(
            parse("[[approvals.webhooks]]\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"S\"\n")
                .is_ok()
        );
        let err = parse("[gateway]\nadmin_listen = \"0.0.0.0:8081\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin_listen"), "{err}");
        let config = parse("[gateway]\nadmin_listen = \"127.0.0.1:8081\"\n").unwrap();
        assert_eq!(config.admin_url().as_deref(), Some("http://127.0.0.1:8081"));
    }

    #[test]
    fn audit_settings_are_checked() {
        let err = parse(
            "[gateway]\ndata_dir = \"/var/lib/p\"\n[audit]\nsigning_key = \"/var/lib/p/key\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must not be inside gateway.data_dir"), "{err}");
        let err = parse("[audit]\ncheckpoint_dir = \"/mnt/worm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("signing_key is required"), "{err}");
        let err = parse("[audit]\ncheckpoint_every = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("portcullis.toml:2: audit.checkpoint_every"),
            "{err}"
        );
        let err = parse("[audit]\nsigning_key = \"k\"\n[[audit.witnesses]]\nurl = \"ftp://w\"\nkey = \"w.pub\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an http:// or https:// URL"), "{err}");
        let config = parse("[gateway]\nid = \"eu-1\"\n").unwrap();
        assert_eq!(config.audit_origin(), "portcullis/eu-1");
        assert_eq!(config.audit.checkpoint_interval, Duration::from_secs(1));
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse(TARGET).unwrap();
        assert_eq!(config.gateway.listen.port(), 8080);
        assert_eq!(config.audit.durability, Durability::Strict);
        assert!(config.targets.contains_key("tools"));
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = parse(&format!(
            "{TARGET}\n[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n"
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("portcullis.toml:7:"), "{text}");
        assert!(text.contains("lisen"), "{text}");
    }

    #[test]
    fn rule_with_unknown_target_is_located() {
        let err = parse(&format!(
            "{TARGET}\n[[rules]]\nname = \"r\"\ntarget = \"nope\"\n"
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("portcullis.toml:7:"), "{text}");
        assert!(
            text.contains("rules[0].target") && text.contains("tools"),
            "{text}"
        );
    }

    #[test]
    fn hold_without_approvers_is_refused() {
        let err = parse(&format!(
            "{TARGET}\n[[rules]]\nname = \"h\"\ntarget = \"tools\"\ndecision = \"hold\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("approvers"), "{err}");
    }

    #[test]
    fn bad_api_key_hash_is_refused() {
        let err = parse("[[identity.api_keys]]\nname = \"a\"\nsha256 = \"abc\"\n").unwrap_err();
        assert!(err.to_string().starts_with("portcullis.toml:3:"), "{err}");
    }

    #[test]
    fn upstream_auth_on_stdio_is_refused() {
        let err = parse(&format!("{TARGET}upstream_auth = {{ env = \"X\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("upstream_auth"), "{err}");
    }

    #[test]
    fn plain_http_off_loopback_is_refused_unless_acknowledged() {
        let err = parse("[gateway]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(err.to_string().contains("gateway.tls"), "{err}");
        assert!(parse("[gateway]\nlisten = \"0.0.0.0:8080\"\nallow_plain_http = true\n").is_ok());
        let tls = parse("[gateway]\nlisten = \"0.0.0.0:8443\"\n[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        assert_eq!(tls.gateway.public_url(), "https://0.0.0.0:8443");
        assert!(tls.gateway.tls.unwrap().cert.ends_with("c.pem"));
    }

    #[test]
    fn bad_duration_is_explained() {
        let err = parse("[gateway]\nrequest_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }

    #[test]
    fn audience_accepts_one_or_many() {
        let one = parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = \"a\"\n").unwrap();
        assert_eq!(one.identity.oidc[0].audience, vec!["a"]);
        let many =
            parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = [\"a\", \"b\"]\n")
                .unwrap();
        assert_eq!(many.identity.oidc[0].audience.len(), 2);
    }

    #[test]
    fn symmetric_algorithm_is_refused() {
        let err = parse("[[identity.oidc]]\nissuer = \"https://idp\"\naudience = \"a\"\nalgorithms = [\"HS256\"]\n").unwrap_err();
        assert!(err.to_string().contains("HS256"), "{err}");
    }

    const PG: &str = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://db.internal:6543/billing\"\nuser = \"billing_ro\"\n";

    fn error(text: &str) -> String {
        parse(text).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn a_postgres_target_parses_and_resolves() {
        let config = parse(&format!(
            "{PG}password_env = \"DB_PASSWORD\"\nupstream_tls = \"verify-full\"\nupstream_ca = \"ca.pem\"\nrecord_results = true\nmax_connections = 5\n"
        ))
        .unwrap();
        let db = &config.targets["db"];
        assert_eq!(db.kind, TargetKind::Postgres);
        assert_eq!(db.listen, Some("127.0.0.1:6432".parse().unwrap()));
        assert_eq!(
            db.pg_upstream(),
            Some(PgUpstream {
                host: "db.internal".into(),
                port: 6543,
                database: "billing".into()
            })
        );
        assert_eq!(db.user.as_deref(), Some("billing_ro"));
        assert_eq!(db.password_env.as_deref(), Some("DB_PASSWORD"));
        assert_eq!(db.upstream_tls, UpstreamTls::VerifyFull);
        assert!(db.upstream_ca.as_ref().unwrap().ends_with("ca.pem"));
        assert!(db.record_results);
        assert_eq!(db.max_connections, 5);
        let defaults = parse(PG).unwrap();
        let db = &defaults.targets["db"];
        assert_eq!(db.upstream_tls, UpstreamTls::Disable);
        assert_eq!(db.max_connections, 100);
        assert!(!db.record_results);
        // An MCP target has no upstream database.
        assert_eq!(parse(TARGET).unwrap().targets["tools"].pg_upstream(), None);
    }

    #[test]
    fn pg_upstream_urls() {
        let ok = |url: &str| parse_pg_url(url).unwrap();
        assert_eq!(
            ok("postgresql://10.0.0.5/app"),
            PgUpstream {
                host: "10.0.0.5".into(),
                port: 5432,
                database: "app".into()
            }
        );
        let v6 = ok("postgres://[::1]:5433/my%20db");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5433));
        assert_eq!(v6.database, "my db");
        for (url, expected) in [
            (
                "postgres://me:secret@db/app",
                "credentials go in `user` and `password_env`",
            ),
            ("postgres://me@db/app", "`user`"),
            ("postgres://db/app?sslmode=require", "query string"),
            ("postgres://db", "must name the database"),
            ("postgres://db/", "must name one database"),
            ("postgres://db:0/app", "invalid port"),
            ("postgres://db:x/app", "invalid port"),
            ("postgres:///app", "must name a host"),
            ("postgres://a,b/app", "one host"),
            ("mysql://db/app", "must start with postgres://"),
        ] {
            let err = parse_pg_url(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
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
                err.starts_with(&format!(
                    "portcullis.toml:4: targets.tools.{field}: only a postgres target"
                )),
                "{err}"
            );
        }
        let err = error(&PG.replace("postgres\"", "mysql\""));
        assert!(err.contains("not supported"), "{err}");
    }

    #[test]
    fn sql_rules_are_checked() {
        let rule = |body: &str| {
            parse(&format!("{TARGET}{PG}[[rules]]\nname = \"r\"\n{body}\n"))
                .map_err(|e| e.to_string())
        };
        let config = rule(
            "target = \"db\"\nhold.statements = [\"update\", \"DELETE\"]\napprovers = [\"dba\"]",
        )
        .unwrap();
        let r = &config.rules[0];
        assert_eq!(r.decision, RuleDecision::Hold);
        assert_eq!(r.effective_decision(), RuleDecision::Hold);
        assert_eq!(r.sql().unwrap().statements, ["update", "DELETE"]);
        assert!(!r.whole_target());
        let r = rule("target = \"db\"\ndeny.tables = [\"secrets\"]\ndecision = \"deny\"").unwrap();
        assert_eq!(r.rules[0].decision, RuleDecision::Deny);
        assert!(
            rule("target = \"*\"\nallow.statements = [\"select\"]\nmask = \"default\"").is_ok()
        );
        assert!(rule("target = \"db\"\nallow = {}").is_ok());
        assert!(rule("target = \"db\"").unwrap().rules[0].whole_target());

        let line = TARGET.lines().count() + PG.lines().count() + 2;
        for (body, expected) in [
            (
                "target = \"db\"\nallow.tables = [\"a\"]\ndeny.tables = [\"b\"]",
                "rules[0] (r).deny: a rule has at most one of the SQL sub-tables",
            ),
            (
                "target = \"db\"\ndecision = \"allow\"\ndeny.tables = [\"b\"]",
                "rules[0] (r).decision: \"allow\" contradicts the SQL sub-table `deny`",
            ),
            (
                "target = \"tools\"\nallow.statements = [\"select\"]",
                "rules[0] (r).allow: target tools is not a database",
            ),
            (
                "target = \"db\"\ntools = [\"x\"]",
                "rules[0] (r).tools: target db is a postgres database",
            ),
            (
                "target = \"*\"\ntools = [\"x\"]\nallow.tables = [\"t\"]",
                "rules[0] (r).tools: a rule is about SQL statements (`allow`) or MCP tools",
            ),
            (
                "target = \"db\"\nallow.statements = [\"selekt\"]",
                "rules[0] (r).allow.statements: \"selekt\" is not a statement kind (known: select, insert,",
            ),
            (
                "target = \"db\"\ndeny = {}",
                "rules[0] (r).deny: an empty deny matches no statement",
            ),
            (
                "target = \"db\"\nhold.without_where = false\napprovers = [\"a\"]",
                "rules[0] (r).hold: an empty hold matches no statement",
            ),
            (
                "target = \"db\"\nallow.tables = [\"a[\"]",
                "rules[0] (r).allow.tables: bad glob",
            ),
            (
                "target = \"db\"\ndeny.functions = [\"\"]",
                "rules[0] (r).deny.functions: an empty pattern",
            ),
            (
                "target = \"db\"\ndeny.tables = [\"t\"]\nmask = \"default\"",
                "rules[0] (r).mask: only an allow rule can mask",
            ),
            (
                "target = \"db\"\nhold.tables = [\"t\"]",
                "rules[0] (r).approvers: a hold rule must name",
            ),
            (
                "target = \"db\"\ndeny.tables = [\"t\"]\nrequires_grant = true\napprovers = [\"a\"]",
                "rules[0] (r).requires_grant: only an allow rule can require a grant",
            ),
        ] {
            let err = rule(body).unwrap_err();
            assert!(
                err.starts_with(&format!("portcullis.toml:{line}: {expected}")),
                "{body}: {err}"
            );
        }
        let err = rule("target = \"db\"\nallow.table = [\"t\"]").unwrap_err();
        assert!(err.contains("table"), "{err}");
    }

    #[test]
    fn mask_columns_are_fields_too() {
        let config =
            parse("[masks.pii]\nfields = [\"ssn\"]\ncolumns = [\"account_number\", \"ssn\"]\n")
                .unwrap();
        let pii = &config.masks["pii"];
        assert_eq!(pii.columns, ["account_number", "ssn"]);
        assert_eq!(pii.field_globs(), ["ssn", "account_number"]);
        let err = error("[masks.pii]\ncolumns = [\"a[\"]\n");
        assert!(
            err.starts_with("portcullis.toml:1: masks.pii.columns: bad glob"),
            "{err}"
        );
    }
}
