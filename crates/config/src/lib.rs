//! The user-facing configuration, `portcullis.toml`.
//!
//! Two layers: the serde structs mirror the TOML one to one (strict, `deny_unknown_fields`, a
//! doc comment per field, which is the reference documentation), and [`Config::load`]
//! resolves them into the runtime model the rest of the gateway sees: targets become a
//! [`TargetSpec`] per kind holding only that kind's settings, and cross-references (a rule
//! naming an unknown target, a duplicate API key hash) are checked, so that the runtime never
//! sees an inconsistent file. Every error names the file, the line (from the field's span in
//! the parsed document) and the field.
//!
//! One module per section of the file: [`gateway`], [`audit`], [`identity`], [`targets`],
//! [`rules`], [`masks`], [`approvals`]; each holds its types, its defaults, its checks and
//! their tests.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod approvals;
pub mod audit;
pub mod console;
mod de;
mod error;
pub mod evidence;
pub mod gateway;
mod http_paths;
pub mod identity;
pub mod masks;
mod pg_url;
pub mod recording;
pub mod rules;
pub mod sinks;
mod spans;
pub mod state;
pub mod targets;

#[cfg(test)]
mod example_snapshots;

pub use approvals::{Approvals, Webhook, WebhookFormat};
pub use audit::{Audit, Durability, WitnessConfig};
pub use console::{Console, ConsoleOidc};
pub use error::{ConfigError, SourceFile};
pub use evidence::{Evidence, EvidenceFormat, Schedule, WorkHours};
pub use gateway::{Gateway, Limits, Tls};
pub use http_paths::PathTemplate;
pub use identity::{ApiKey, IdentityConfig, OidcIssuer};
pub use masks::{CustomDetector, MaskProfile, MaskStyle};
pub use pg_url::PgUpstream;
pub use recording::{Recording, RecordingMode};
pub use rules::{HttpMatch, Rule, RuleDecision, STATEMENT_KINDS, SqlMatch, Who};
pub use sinks::{
    ClientTls, FileSink, HttpPreset, HttpSink, NatsSink, OtlpSink, Secret, SinkFilter, SinkKind,
    SinkSpec, SyslogFacility, SyslogSink, SyslogTransport,
};
pub use targets::{
    HttpCredential, HttpTarget, McpTarget, McpUpstream, PostgresTarget, TargetSpec, UpstreamAuth,
    UpstreamTls,
};

use spans::Locator;

/// The whole file, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: Gateway,
    pub audit: Audit,
    pub identity: IdentityConfig,
    /// Backends, by name, each resolved to its kind's settings.
    pub targets: BTreeMap<String, TargetSpec>,
    /// Policy rules, in file order.
    pub rules: Vec<Rule>,
    /// Masking profiles, by name.
    pub masks: BTreeMap<String, MaskProfile>,
    pub approvals: Approvals,
    pub recording: Recording,
    pub evidence: Evidence,
    /// `[[sinks]]`: where the audit log is streamed, in file order.
    pub sinks: Vec<SinkSpec>,
    /// `[console]`: the web console.
    pub console: Console,
    /// `[state]`: where control state shared by replicas lives.
    pub state: state::State,
    /// Where the file was read from, to locate later errors (policy's `when` conditions).
    pub source: SourceFile,
}

/// The environment variable that names this gateway in place of `gateway.id`.
pub const GATEWAY_ID_ENV: &str = "PORTCULLIS_GATEWAY_ID";

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: Gateway,
    #[serde(default)]
    audit: Audit,
    #[serde(default)]
    identity: IdentityConfig,
    /// Backends, by name. The name appears in URLs (`/mcp/<name>`), rules and audit events.
    #[serde(default)]
    targets: BTreeMap<String, targets::RawTarget>,
    /// Policy rules. Default deny: a request no rule allows is refused.
    #[serde(default)]
    rules: Vec<Rule>,
    /// Masking profiles, by name; a rule picks one with `mask = "NAME"`. The profile named
    /// `default` exists without being declared (every built-in detector, redacted), and may
    /// be redefined.
    #[serde(default)]
    masks: BTreeMap<String, MaskProfile>,
    /// `[approvals]`: break-glass approvers and notifications for held requests and grants.
    #[serde(default)]
    approvals: Approvals,
    /// `[recording]`: session recordings bound to the audit log.
    #[serde(default)]
    recording: Recording,
    /// `[evidence]`: scheduled, signed review reports and OSCAL documents.
    #[serde(default)]
    evidence: Evidence,
    /// `[[sinks]]`: SIEM, bus and file destinations the audit log is streamed to.
    #[serde(default)]
    sinks: Vec<sinks::RawSink>,
    /// `[console]`: the web console on the admin listener.
    #[serde(default)]
    console: Console,
    /// `[state]`: SQLite files (one gateway) or PostgreSQL (several replicas).
    #[serde(default)]
    state: state::State,
}

impl Config {
    /// Reads, parses and validates a configuration file. `PORTCULLIS_GATEWAY_ID`, when set,
    /// stands for `gateway.id`: replicas that share one file (a Kubernetes StatefulSet, a
    /// Compose service scaled out) each get their own name from their environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(path, text)?;
        if let Ok(id) = std::env::var(GATEWAY_ID_ENV) {
            config
                .set_gateway_id(id)
                .map_err(|message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: 1,
                    message,
                })?;
        }
        Ok(config)
    }

    /// Names this gateway `id` in place of `gateway.id`, checked as the file's would be.
    pub fn set_gateway_id(&mut self, id: String) -> Result<(), String> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "{GATEWAY_ID_ENV}={id:?}: a gateway id is 1 to 64 of A-Z a-z 0-9 - _ ."
            ));
        }
        self.gateway.id = id;
        Ok(())
    }

    /// Parses and validates configuration text; `path` is used in errors and to resolve
    /// relative paths.
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let source = SourceFile {
            path: path.to_path_buf(),
            text,
        };
        let mut raw: RawConfig = toml::from_str(&source.text).map_err(|e| {
            let line = e.span().map(|s| source.line_of(s.start)).unwrap_or(1);
            ConfigError::Invalid {
                path: source.path.clone(),
                line,
                message: e.message().to_string(),
            }
        })?;
        if let Some(dir) = path.parent() {
            raw.resolve_paths(dir);
        }
        for rule in &mut raw.rules {
            rule.decision = rule.effective_decision();
        }
        let at = Locator::new(&source);
        // The same order of checks as the sections of the file: the first error reported is
        // the first a reader meets.
        let mut config = Config {
            gateway: raw.gateway,
            audit: raw.audit,
            identity: raw.identity,
            targets: BTreeMap::new(),
            rules: raw.rules,
            masks: raw.masks,
            approvals: raw.approvals,
            recording: raw.recording,
            evidence: raw.evidence,
            sinks: Vec::new(),
            console: raw.console,
            state: raw.state,
            source: SourceFile::default(),
        };
        config.gateway.validate(&at)?;
        config.validate_audit(&at)?;
        config.validate_approvals(&at)?;
        config.targets = targets::resolve(&raw.targets, &config.gateway, &at)?;
        config.validate_masks(&at)?;
        config.identity.validate(&at)?;
        config.validate_rules(&at)?;
        config.validate_recording(&at)?;
        config.validate_evidence(&at)?;
        config.sinks = sinks::resolve(&raw.sinks, &at)?;
        config.validate_console(&at)?;
        config.validate_state(&at)?;
        drop(at);
        config.source = source;
        Ok(config)
    }
}

impl RawConfig {
    /// Paths in the file are relative to the file.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        resolve(&mut self.gateway.data_dir);
        if let Some(key) = self.audit.signing_key.as_mut() {
            resolve(key);
        }
        if let Some(dir) = self.audit.checkpoint_dir.as_mut() {
            resolve(dir);
        }
        for witness in &mut self.audit.witnesses {
            resolve(&mut witness.key);
        }
        for path in [&mut self.evidence.out_dir, &mut self.evidence.signing_key]
            .into_iter()
            .flatten()
        {
            resolve(path);
        }
        for sink in &mut self.sinks {
            sink.resolve_paths(&resolve);
        }
        if let Some(sinks::Secret::File { file }) = self
            .console
            .oidc
            .as_mut()
            .and_then(|oidc| oidc.client_secret.as_mut())
        {
            resolve(file);
        }
        if let Some(sinks::Secret::File { file }) = self.state.url.as_mut() {
            resolve(file);
        }
        if let Some(ca) = self.state.ca.as_mut() {
            resolve(ca);
        }
        if let Some(tls) = self.gateway.tls.as_mut() {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        for target in self.targets.values_mut() {
            if let Some(ca) = target.upstream_ca.as_mut() {
                resolve(ca);
            }
        }
    }
}

/// Helpers shared by the tests of every section.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("portcullis.toml"), text.to_string())
    }

    pub(crate) fn error(text: &str) -> String {
        parse(text).map(|_| ()).unwrap_err().to_string()
    }

    /// A minimal MCP target, `tools`.
    pub(crate) const TARGET: &str = "[targets.tools]\nkind = \"mcp\"\ncommand = [\"server\"]\n";

    /// A minimal postgres target, `db`.
    pub(crate) const PG: &str = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://db.internal:6543/billing\"\nuser = \"billing_ro\"\n";

    /// The complete example in the reference documentation is a valid file.
    #[test]
    fn the_documented_example_parses() {
        let config = Config::parse(
            Path::new("/etc/portcullis/portcullis.toml"),
            crate::example_snapshots::documented_example(),
        )
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
    fn minimal_file_gets_defaults() {
        let config = parse(TARGET).unwrap();
        assert_eq!(config.gateway.listen.port(), 8080);
        assert_eq!(config.audit.durability, Durability::Strict);
        assert!(config.targets.contains_key("tools"));
    }
}
