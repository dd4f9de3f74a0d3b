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
    /// `mcp` (more kinds come with their adapters).
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
    #[serde(default)]
    pub decision: RuleDecision,
    /// An optional CEL condition; the rule matches only when it is true. Variables:
    /// `args` (the call's arguments), `identity` (`subject`, `issuer`, `kind`, `groups`,
    /// `auth_method`), `tool` and `resource` (the name or URI acted on), `target`, `verb`.
    /// Example: `args.amount > 500`. A condition that cannot be evaluated fails closed.
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
    #[serde(default, alias = "columns")]
    pub fields: Vec<String>,
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
}

impl Default for MaskProfile {
    fn default() -> Self {
        MaskProfile {
            detectors: default_mask_detectors(),
            fields: Vec::new(),
            style: MaskStyle::default(),
            keep: default_mask_keep(),
            styles: BTreeMap::new(),
            hmac_key_env: None,
            deny_list: Vec::new(),
            custom: Vec::new(),
        }
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
                other => {
                    return Err(at(format!(
                        "targets.{name}.kind: {other:?} targets are not supported by this version"
                    )));
                }
            }
            if target.max_processes == 0 {
                return Err(at(format!(
                    "targets.{name}.max_processes: must be at least 1"
                )));
            }
            if target.command.is_some() && target.upstream_auth.is_some() {
                return Err(at(format!(
                    "targets.{name}.upstream_auth: only HTTP upstreams take a credential header; give a stdio program its secret with `env`"
                )));
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
                "only an allow rule can require a grant",
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
}
