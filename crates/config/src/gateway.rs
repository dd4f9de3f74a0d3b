//! `[gateway]`: the front door, its TLS, its limits and the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ConfigError;
use crate::de::de_duration;
use crate::spans::{Locator, key_path};

/// `[gateway]`: the front door and the embedded store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// On SIGTERM or Ctrl-C: how long requests in flight may take to finish after the
    /// listeners stop accepting, before their connections are closed. Default: `20s`.
    #[serde(default = "default_shutdown_grace", deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
            shutdown_grace: default_shutdown_grace(),
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

impl Gateway {
    /// The front door's own settings and `[gateway.limits]`.
    pub(crate) fn validate(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        if self.max_message_bytes < 1024 {
            return Err(at.error(
                key_path!["gateway", "max_message_bytes"],
                "gateway.max_message_bytes: must be at least 1024",
            ));
        }
        if self.tls.is_none() && !self.allow_plain_http && !self.listen.ip().is_loopback() {
            return Err(at.error(
                key_path!["gateway", "listen"],
                format!(
                    "gateway.listen: {} is reachable from the network, so credentials would cross it in clear text; configure [gateway.tls], or set gateway.allow_plain_http = true if a proxy in front terminates TLS",
                    self.listen
                ),
            ));
        }
        self.limits.validate(at)
    }
}

impl Limits {
    fn validate(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let zero = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            (
                "max_connections_per_source",
                self.max_connections_per_source == 0,
            ),
            ("max_connections", self.max_connections == 0),
            ("max_auth_failures", self.max_auth_failures == 0),
            ("auth_failure_window", self.auth_failure_window.is_zero()),
        ];
        for (field, is_zero) in zero {
            if is_zero {
                return Err(at.error(
                    key_path!["gateway", "limits", field],
                    format!("gateway.limits.{field}: must be more than zero"),
                ));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use crate::tests::parse;

    #[test]
    fn unknown_field_names_line_and_field() {
        let err = parse(&format!(
            "{}\n[gateway]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n",
            crate::tests::TARGET
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("portcullis.toml:7:"), "{text}");
        assert!(text.contains("lisen"), "{text}");
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

    /// The line is the gateway's `listen`, not the first `listen` of the file (a postgres
    /// target's, here).
    #[test]
    fn gateway_listen_is_located_by_its_key() {
        let err = parse(&format!(
            "{}[gateway]\nlisten = \"0.0.0.0:8080\"\n",
            crate::tests::PG
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("portcullis.toml:7: gateway.listen:"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_is_explained() {
        let err = parse("[gateway]\nrequest_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }

    #[test]
    fn a_zero_limit_names_its_line() {
        let err = parse("[gateway]\nid = \"x\"\n[gateway.limits]\nmax_auth_failures = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("portcullis.toml:4: gateway.limits.max_auth_failures:"),
            "{err}"
        );
    }
}
