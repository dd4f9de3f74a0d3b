//! `[[sinks]]`: where the audit log is streamed to (a SIEM, a data lake, a bus, a file for a
//! log shipper).
//!
//! The file says each sink flat (`kind` and the fields of that kind, in one table); loading
//! resolves it into a [`SinkSpec`] whose [`SinkKind`] holds only what that kind uses, and a
//! field given to a kind that does not use it is an error naming the field, not something
//! silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::de::de_duration;
use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// One sink, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    /// Names the sink in `portcullis sinks status`, in its cursor file and in the log.
    name: String,
    kind: RawSinkKind,
    /// Only events of these types (globs: `approval.*`). Default: every type.
    #[serde(default)]
    event_types: Vec<String>,
    /// Only events with these outcomes (`success`, `upstream_error`, `denied`, `rejected`,
    /// `failed`, `info`).
    /// Default: every outcome.
    #[serde(default)]
    outcomes: Vec<String>,
    /// Only events about these targets (globs). Events without a target (gateway starts,
    /// approvals) pass this filter only when it is absent. Default: every target.
    #[serde(default)]
    targets: Vec<String>,
    /// The most events in one delivery. Default: 1000.
    #[serde(default = "default_batch_max")]
    batch_max: usize,
    /// How long a sink lets events gather while fewer than `batch_max` wait, before it sends
    /// them: fewer, larger deliveries under load (a round trip and a synced cursor each) for
    /// at most this much more lag. `"0s"` sends each commit as it comes. Default: 100ms.
    #[serde(default = "default_batch_wait", deserialize_with = "de_duration")]
    batch_wait: Duration,
    /// A warning is logged while the oldest undelivered event is older than this. Default:
    /// 60s.
    #[serde(default = "default_lag_warning", deserialize_with = "de_duration")]
    lag_warning: Duration,
    /// The longest wait between two attempts after failures (backoff doubles from 250ms up
    /// to this, with jitter). Default: 60s.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    retry_max: Duration,
    /// How long one delivery may take before it counts as failed. Default: 30s.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    timeout: Duration,

    // syslog, http, otlp, nats
    /// syslog: `host:port`. http, otlp: the URL posted to. nats: `nats://host:port`.
    address: Option<String>,
    url: Option<String>,
    // syslog, http, otlp: TLS
    /// syslog: `tcp` (RFC 6587 octet counting) or `tls` (RFC 5425). Default: `tls`.
    transport: Option<SyslogTransport>,
    /// A PEM file of the CA certificates the receiver's certificate must chain to (instead
    /// of the system's roots).
    ca: Option<PathBuf>,
    /// A PEM certificate chain and its key, for receivers that require client certificates.
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    /// The name the receiver's certificate must carry. Default: the host of `address`/`url`.
    server_name: Option<String>,
    // syslog
    /// syslog: the facility. Default: `authpriv`.
    facility: Option<SyslogFacility>,
    /// syslog: APP-NAME. Default: `portcullis`.
    app_name: Option<String>,
    // http, otlp
    /// http: `json` (an array of records), `splunk-hec` or `elasticsearch` (`_bulk`, ECS).
    /// Default: `json`.
    preset: Option<HttpPreset>,
    /// http, otlp: gzip request bodies. Default: true.
    gzip: Option<bool>,
    /// http, otlp: extra request headers, each a literal or read from the environment or a
    /// file: `headers.X-Team = "sec"`, `headers.Authorization = { env = "SIEM_AUTH" }`.
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    /// http `splunk-hec`: the HEC token (sent as `Authorization: Splunk <token>`).
    token: Option<Secret>,
    /// http `elasticsearch`: the index (or data stream) written to. `splunk-hec`: the index
    /// named in each event (default: the token's). Default for elasticsearch:
    /// `portcullis-audit`.
    index: Option<String>,
    // nats
    /// nats: the subject published to; the stream that captures it acknowledges.
    subject: Option<String>,
    /// nats: a credentials file (`.creds`) for NATS accounts.
    credentials: Option<PathBuf>,
    // file
    /// file: the JSON lines file written.
    path: Option<PathBuf>,
    /// file: rotate when the file would grow past this many bytes. Default: 100 MiB.
    max_bytes: Option<u64>,
    /// file: how many rotated files (`PATH.1` newest ... `PATH.N`) are kept. Default: 10.
    keep: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawSinkKind {
    Syslog,
    Http,
    Otlp,
    Nats,
    File,
}

/// A sink, resolved: what it receives, and how it is reached.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    pub name: String,
    pub filter: SinkFilter,
    pub batch_max: usize,
    /// How long events may gather before a partial batch is sent.
    pub batch_wait: Duration,
    pub lag_warning: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
    pub kind: SinkKind,
}

/// Which events a sink receives. Empty lists accept everything. Signed checkpoints are
/// always sent, and the events a filter leaves out are sent as their leaf hashes only, so the
/// receiver can still check its copy against the checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkFilter {
    pub event_types: Vec<String>,
    pub outcomes: Vec<String>,
    pub targets: Vec<String>,
}

impl SinkFilter {
    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.outcomes.is_empty() && self.targets.is_empty()
    }
}

/// How a sink is reached, per kind.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    Syslog(SyslogSink),
    Http(HttpSink),
    Otlp(OtlpSink),
    Nats(NatsSink),
    File(FileSink),
}

impl SinkKind {
    /// The kind's name as the file writes it.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Syslog(_) => "syslog",
            SinkKind::Http(_) => "http",
            SinkKind::Otlp(_) => "otlp",
            SinkKind::Nats(_) => "nats",
            SinkKind::File(_) => "file",
        }
    }
}

/// TLS settings towards a receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate chain and key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name to check the receiver's certificate against, if not the host.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyslogSink {
    /// `host:port`.
    pub address: String,
    pub transport: SyslogTransport,
    pub tls: ClientTls,
    pub facility: SyslogFacility,
    pub app_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyslogTransport {
    /// RFC 6587 octet counting over plain TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

/// The syslog facilities an audit stream is sent under (RFC 5424 section 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyslogFacility {
    Auth,
    Authpriv,
    Daemon,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl SyslogFacility {
    /// The facility's number.
    pub fn code(self) -> u8 {
        match self {
            SyslogFacility::Auth => 4,
            SyslogFacility::Daemon => 3,
            SyslogFacility::Authpriv => 10,
            SyslogFacility::Local0 => 16,
            SyslogFacility::Local1 => 17,
            SyslogFacility::Local2 => 18,
            SyslogFacility::Local3 => 19,
            SyslogFacility::Local4 => 20,
            SyslogFacility::Local5 => 21,
            SyslogFacility::Local6 => 22,
            SyslogFacility::Local7 => 23,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSink {
    pub url: String,
    pub preset: HttpPreset,
    pub gzip: bool,
    pub headers: BTreeMap<String, Secret>,
    /// `splunk-hec` only.
    pub token: Option<Secret>,
    /// `elasticsearch`: the index written to; `splunk-hec`: the index named per event.
    pub index: Option<String>,
    pub tls: ClientTls,
}

/// What an HTTP sink posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpPreset {
    /// A JSON array of records, as `portcullis audit verify-export` reads them.
    Json,
    /// Splunk's HTTP Event Collector (`/services/collector/event`), events concatenated.
    SplunkHec,
    /// Elasticsearch or OpenSearch `_bulk`, `create` actions with ECS field names.
    Elasticsearch,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSink {
    /// The OTLP/HTTP logs endpoint, e.g. `http://collector:4318/v1/logs`.
    pub url: String,
    pub gzip: bool,
    pub headers: BTreeMap<String, Secret>,
    pub tls: ClientTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSink {
    /// `nats://host:port` (or `tls://`).
    pub url: String,
    pub subject: String,
    pub credentials: Option<PathBuf>,
    pub token: Option<Secret>,
    pub tls: ClientTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: u32,
}

/// A value kept out of the configuration file: written literally, or read from an
/// environment variable or a file when the sink starts.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    Literal(String),
    Env { env: String },
    File { file: PathBuf },
}

/// Never the literal value: configurations are printed (`check-config`, logs, snapshots).
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Literal(_) => f.write_str("Literal(<redacted>)"),
            Secret::Env { env } => f.debug_struct("Env").field("env", env).finish(),
            Secret::File { file } => f.debug_struct("File").field("file", file).finish(),
        }
    }
}

impl Secret {
    /// The value: the literal, the variable's value, or the file's contents without the
    /// trailing newline. Errors name where it was looked for, never the value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Literal(value) => Ok(value.clone()),
            Secret::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set (or not UTF-8)")),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
        }
    }
}

fn default_batch_max() -> usize {
    1000
}

fn default_batch_wait() -> Duration {
    Duration::from_millis(100)
}

fn default_lag_warning() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The largest `batch_max`: a batch is held in memory whole, twice (records and encoding).
const MAX_BATCH: usize = 100_000;

/// The outcomes an event can have, as the log writes them.
const OUTCOMES: &[&str] = &[
    "success",
    "upstream_error",
    "denied",
    "rejected",
    "failed",
    "info",
];

impl RawSink {
    /// Paths in the file are relative to the file.
    pub(crate) fn resolve_paths(&mut self, resolve: &dyn Fn(&mut PathBuf)) {
        for path in [
            &mut self.ca,
            &mut self.client_cert,
            &mut self.client_key,
            &mut self.credentials,
            &mut self.path,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        for secret in self.headers.values_mut().chain(self.token.as_mut()) {
            if let Secret::File { file } = secret {
                resolve(file);
            }
        }
    }
}

/// Resolves the sinks of the file, checking each field against its kind.
pub(crate) fn resolve(raw: &[RawSink], at: &Locator<'_>) -> Result<Vec<SinkSpec>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, sink)| {
            let err = |field: &str, message: String| {
                at.error(key_path!["sinks", i, field], format!("sinks[{i}].{field}: {message}"))
            };
            if sink.name.is_empty()
                || sink.name.len() > 64
                || !sink
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    "name",
                    format!(
                        "{:?} is not a sink name: use 1 to 64 letters, digits, '-' and '_' (it names the sink's cursor file)",
                        sink.name
                    ),
                ));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(err("name", format!("another sink is already named {:?}", sink.name)));
            }
            if sink.batch_max == 0 || sink.batch_max > MAX_BATCH {
                return Err(err(
                    "batch_max",
                    format!("{} is out of range: give 1 to {MAX_BATCH}", sink.batch_max),
                ));
            }
            for (field, list) in [("event_types", &sink.event_types), ("targets", &sink.targets)] {
                for pattern in list {
                    globset::Glob::new(pattern)
                        .map_err(|e| err(field, format!("{pattern:?} is not a glob: {e}")))?;
                }
            }
            for outcome in &sink.outcomes {
                if !OUTCOMES.contains(&outcome.as_str()) {
                    return Err(err(
                        "outcomes",
                        format!("{outcome:?} is not an outcome: use {}", OUTCOMES.join(", ")),
                    ));
                }
            }
            if sink.batch_wait > Duration::from_secs(10) {
                return Err(err("batch_wait", "must be at most 10s".into()));
            }
            if sink.retry_max < Duration::from_millis(250) {
                return Err(err("retry_max", "must be at least 250ms".into()));
            }
            if sink.timeout.is_zero() {
                return Err(err("timeout", "must be more than 0s".into()));
            }
            let kind = resolve_kind(sink, &err)?;
            Ok(SinkSpec {
                name: sink.name.clone(),
                filter: SinkFilter {
                    event_types: sink.event_types.clone(),
                    outcomes: sink.outcomes.clone(),
                    targets: sink.targets.clone(),
                },
                batch_max: sink.batch_max,
                batch_wait: sink.batch_wait,
                lag_warning: sink.lag_warning,
                retry_max: sink.retry_max,
                timeout: sink.timeout,
                kind,
            })
        })
        .collect()
}

/// The fields each kind takes, besides the common ones.
fn fields_of(kind: RawSinkKind) -> &'static [&'static str] {
    match kind {
        RawSinkKind::Syslog => &[
            "address",
            "transport",
            "ca",
            "client_cert",
            "client_key",
            "server_name",
            "facility",
            "app_name",
        ],
        RawSinkKind::Http => &[
            "url",
            "preset",
            "gzip",
            "headers",
            "token",
            "index",
            "ca",
            "client_cert",
            "client_key",
            "server_name",
        ],
        RawSinkKind::Otlp => &[
            "url",
            "gzip",
            "headers",
            "ca",
            "client_cert",
            "client_key",
            "server_name",
        ],
        RawSinkKind::Nats => &[
            "url",
            "subject",
            "credentials",
            "token",
            "ca",
            "client_cert",
            "client_key",
            "server_name",
        ],
        RawSinkKind::File => &["path", "max_bytes", "keep"],
    }
}

fn resolve_kind(
    sink: &RawSink,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<SinkKind, ConfigError> {
    let given: [(&str, bool); 18] = [
        ("address", sink.address.is_some()),
        ("url", sink.url.is_some()),
        ("transport", sink.transport.is_some()),
        ("ca", sink.ca.is_some()),
        ("client_cert", sink.client_cert.is_some()),
        ("client_key", sink.client_key.is_some()),
        ("server_name", sink.server_name.is_some()),
        ("facility", sink.facility.is_some()),
        ("app_name", sink.app_name.is_some()),
        ("preset", sink.preset.is_some()),
        ("gzip", sink.gzip.is_some()),
        ("headers", !sink.headers.is_empty()),
        ("token", sink.token.is_some()),
        ("index", sink.index.is_some()),
        ("subject", sink.subject.is_some()),
        ("credentials", sink.credentials.is_some()),
        ("path", sink.path.is_some()),
        ("max_bytes", sink.max_bytes.is_some() || sink.keep.is_some()),
    ];
    let kind_name = format!("{:?}", sink.kind).to_lowercase();
    let allowed = fields_of(sink.kind);
    for (field, present) in given {
        if present && !allowed.contains(&field) {
            // The mix-up a reader is most likely to make: where one kind says address and
            // the others url.
            let instead = match (field, sink.kind) {
                ("url", RawSinkKind::Syslog) => " (it takes address = \"host:port\")",
                ("address", RawSinkKind::Http | RawSinkKind::Otlp | RawSinkKind::Nats) => {
                    " (it takes url)"
                }
                _ => "",
            };
            return Err(err(
                field,
                format!("a {kind_name} sink does not take {field}{instead}"),
            ));
        }
    }
    if sink.keep.is_some() && sink.kind != RawSinkKind::File {
        return Err(err(
            "keep",
            format!("a {kind_name} sink does not take keep"),
        ));
    }
    let required = |field: &str, value: &Option<String>| -> Result<String, ConfigError> {
        match value {
            Some(v) if !v.trim().is_empty() => Ok(v.clone()),
            _ => Err(err(field, format!("a {kind_name} sink needs {field}"))),
        }
    };
    let tls = || -> Result<ClientTls, ConfigError> {
        let client_cert = match (&sink.client_cert, &sink.client_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err("client_key", "client_cert needs client_key".into()));
            }
            (None, Some(_)) => {
                return Err(err("client_cert", "client_key needs client_cert".into()));
            }
        };
        Ok(ClientTls {
            ca: sink.ca.clone(),
            client_cert,
            server_name: sink.server_name.clone(),
        })
    };
    let url = |field: &str, value: &str, schemes: &[&str]| -> Result<(), ConfigError> {
        let scheme = value.split_once("://").map(|(s, _)| s);
        match scheme {
            Some(s) if schemes.contains(&s) && value.len() > s.len() + 3 => Ok(()),
            // The value is not echoed: a URL may carry a password.
            _ => Err(err(
                field,
                format!("not a URL starting with {}", schemes.join("://, ") + "://"),
            )),
        }
    };
    Ok(match sink.kind {
        RawSinkKind::Syslog => {
            let address = required("address", &sink.address)?;
            if address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(err("address", format!("{address:?} is not host:port")));
            }
            if address.contains("://") {
                return Err(err(
                    "address",
                    format!(
                        "{address:?}: give host:port, without a scheme (transport says tcp or tls)"
                    ),
                ));
            }
            let transport = sink.transport.unwrap_or(SyslogTransport::Tls);
            let tls = tls()?;
            if transport == SyslogTransport::Tcp && tls != ClientTls::default() {
                return Err(err(
                    "transport",
                    "ca, client_cert and server_name need transport = \"tls\"".into(),
                ));
            }
            let app_name = sink.app_name.clone().unwrap_or_else(|| "portcullis".into());
            // RFC 5424: APP-NAME is 1*48PRINTUSASCII.
            if app_name.is_empty()
                || app_name.len() > 48
                || !app_name.bytes().all(|b| (33..=126).contains(&b))
            {
                return Err(err(
                    "app_name",
                    format!(
                        "{app_name:?} is not a syslog APP-NAME: 1 to 48 printable ASCII characters, no spaces"
                    ),
                ));
            }
            SinkKind::Syslog(SyslogSink {
                address,
                transport,
                tls,
                facility: sink.facility.unwrap_or(SyslogFacility::Authpriv),
                app_name,
            })
        }
        RawSinkKind::Http => {
            let target = required("url", &sink.url)?;
            url("url", &target, &["http", "https"])?;
            let preset = sink.preset.unwrap_or(HttpPreset::Json);
            if sink.token.is_some() && preset != HttpPreset::SplunkHec {
                return Err(err(
                    "token",
                    "token is the Splunk HEC token: it needs preset = \"splunk-hec\" (use headers for other schemes)".into(),
                ));
            }
            if preset == HttpPreset::SplunkHec && sink.token.is_none() {
                return Err(err(
                    "token",
                    "preset = \"splunk-hec\" needs the HEC token".into(),
                ));
            }
            if sink.index.is_some() && preset == HttpPreset::Json {
                return Err(err(
                    "index",
                    "index is for preset = \"elasticsearch\" or \"splunk-hec\"".into(),
                ));
            }
            SinkKind::Http(HttpSink {
                url: target,
                preset,
                gzip: sink.gzip.unwrap_or(true),
                headers: sink.headers.clone(),
                token: sink.token.clone(),
                index: match preset {
                    HttpPreset::Elasticsearch => Some(
                        sink.index
                            .clone()
                            .unwrap_or_else(|| "portcullis-audit".into()),
                    ),
                    _ => sink.index.clone(),
                },
                tls: tls()?,
            })
        }
        RawSinkKind::Otlp => {
            let target = required("url", &sink.url)?;
            url("url", &target, &["http", "https"])?;
            SinkKind::Otlp(OtlpSink {
                url: target,
                gzip: sink.gzip.unwrap_or(true),
                headers: sink.headers.clone(),
                tls: tls()?,
            })
        }
        RawSinkKind::Nats => {
            let target = required("url", &sink.url)?;
            url("url", &target, &["nats", "tls"])?;
            let subject = required("subject", &sink.subject)?;
            if subject.contains(['*', '>', ' '])
                || subject.starts_with('.')
                || subject.ends_with('.')
            {
                return Err(err(
                    "subject",
                    format!(
                        "{subject:?} is not a subject to publish to (no wildcards, spaces or empty tokens)"
                    ),
                ));
            }
            SinkKind::Nats(NatsSink {
                url: target,
                subject,
                credentials: sink.credentials.clone(),
                token: sink.token.clone(),
                tls: tls()?,
            })
        }
        RawSinkKind::File => {
            let Some(path) = sink.path.clone() else {
                return Err(err("path", "a file sink needs path".into()));
            };
            let max_bytes = sink.max_bytes.unwrap_or(100 << 20);
            if max_bytes < 4096 {
                return Err(err("max_bytes", "must be at least 4096".into()));
            }
            SinkKind::File(FileSink {
                path,
                max_bytes,
                keep: sink.keep.unwrap_or(10),
            })
        }
    })
}

impl Config {
    /// The sink named `name`.
    pub fn sink(&self, name: &str) -> Option<&SinkSpec> {
        self.sinks.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{TARGET, error, parse};

    use super::*;

    #[test]
    fn each_kind_resolves_with_its_defaults() {
        let config = parse(&format!(
            "{TARGET}
[[sinks]]
name = \"siem\"
kind = \"syslog\"
address = \"siem.internal:6514\"

[[sinks]]
name = \"bus\"
kind = \"nats\"
url = \"nats://127.0.0.1:4222\"
subject = \"audit.gw1\"
event_types = [\"approval.*\"]

[[sinks]]
name = \"hec\"
kind = \"http\"
url = \"https://splunk:8088/services/collector/event\"
preset = \"splunk-hec\"
token = {{ env = \"HEC_TOKEN\" }}

[[sinks]]
name = \"lake\"
kind = \"file\"
path = \"audit.jsonl\"
"
        ))
        .unwrap();
        assert_eq!(config.sinks.len(), 4);
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("{:?}", config.sinks[0]);
        };
        assert_eq!(syslog.transport, SyslogTransport::Tls);
        assert_eq!(syslog.facility, SyslogFacility::Authpriv);
        assert_eq!(config.sinks[1].filter.event_types, ["approval.*"]);
        let SinkKind::Http(hec) = &config.sinks[2].kind else {
            panic!()
        };
        assert_eq!(
            hec.token,
            Some(Secret::Env {
                env: "HEC_TOKEN".into()
            })
        );
        assert!(hec.gzip);
        let SinkKind::File(file) = &config.sinks[3].kind else {
            panic!()
        };
        assert_eq!(file.path, std::path::Path::new("audit.jsonl"));
        assert_eq!((file.max_bytes, file.keep), (100 << 20, 10));
        assert_eq!(config.sinks[3].batch_max, 1000);
        assert_eq!(config.sinks[3].batch_wait, Duration::from_millis(100));
    }

    #[test]
    fn a_field_of_another_kind_is_named() {
        let e = error(&format!(
            "{TARGET}\n[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"x\"\nsubject = \"y\"\n"
        ));
        assert!(
            e.contains("portcullis.toml:9:")
                && e.contains("sinks[0].subject: a file sink does not take subject"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (sink, expected) in [
            (
                "name = \"a b\"\nkind = \"file\"\npath = \"x\"",
                "sinks[0].name",
            ),
            (
                "name = \"a\"\nkind = \"syslog\"",
                "sinks[0].address: a syslog sink needs address",
            ),
            (
                "name = \"a\"\nkind = \"syslog\"\naddress = \"host\"",
                "is not host:port",
            ),
            (
                "name = \"a\"\nkind = \"syslog\"\naddress = \"tcp://siem:514\"",
                "without a scheme",
            ),
            (
                "name = \"a\"\nkind = \"syslog\"\nurl = \"tcp://siem:514\"",
                "does not take url (it takes address = \"host:port\")",
            ),
            (
                "name = \"a\"\nkind = \"syslog\"\naddress = \"h:1\"\ntransport = \"tcp\"\nca = \"ca.pem\"",
                "need transport = \"tls\"",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"ftp://x\"",
                "sinks[0].url",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"http://x\"\npreset = \"splunk-hec\"",
                "needs the HEC token",
            ),
            (
                "name = \"a\"\nkind = \"nats\"\nurl = \"nats://x\"\nsubject = \"audit.>\"",
                "sinks[0].subject",
            ),
            (
                "name = \"a\"\nkind = \"file\"\npath = \"x\"\noutcomes = [\"fine\"]",
                "sinks[0].outcomes",
            ),
            (
                "name = \"a\"\nkind = \"file\"\npath = \"x\"\nbatch_max = 0",
                "sinks[0].batch_max",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"http://x\"\nclient_cert = \"c.pem\"",
                "client_cert needs client_key",
            ),
            ("name = \"a\"\nkind = \"kafka\"", "kafka"),
        ] {
            let e = error(&format!("{TARGET}\n[[sinks]]\n{sink}\n"));
            assert!(e.contains(expected), "{sink}: {e}");
        }
        let e = error(&format!(
            "{TARGET}\n[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"a\"\nkind = \"file\"\npath = \"y\"\n"
        ));
        assert!(
            e.contains("sinks[1].name: another sink is already named"),
            "{e}"
        );
    }
}
