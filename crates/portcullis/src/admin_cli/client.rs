//! An authenticated HTTP connection to the admin API: its timeouts, its refusal to follow
//! redirects, its trust roots, and transport failures worded for the person at the terminal.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::admin_url::{DEFAULT_CONFIG, is_loopback_url, resolve_url};
use super::api_error::parse_error;
use super::args::AdminConn;
use super::records::Grant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An authenticated connection to the admin API.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(crate) fn new(conn: &AdminConn) -> Result<Client> {
        let token = conn
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "no credential: set PORTCULLIS_TOKEN (your API key or OIDC token) or pass --token"
                )
            })?
            .to_string();
        let base = resolve_url(
            conn.url.as_deref(),
            conn.config.as_deref(),
            Path::new(DEFAULT_CONFIG),
        )?;
        if base.starts_with("http://") && !is_loopback_url(&base) {
            eprintln!(
                "warning: {base} is plain http on another host: your credential crosses the network in clear text"
            );
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could carry the credential to a host the user never named.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-cert {}: cannot read it", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert {}: not a PEM certificate", path.display()))?;
            if certs.is_empty() {
                bail!("--ca-cert {}: holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// A failure to talk to the gateway at all, worded for the person at the terminal. The
    /// `reqwest::Error` stays in the chain: `--wait` looks for it to tell an outage from an
    /// answer.
    pub(super) fn transport(&self, e: reqwest::Error) -> anyhow::Error {
        let message = if e.is_connect() {
            format!(
                "cannot connect to the admin API at {}: is the gateway running with gateway.admin_listen set?",
                self.base
            )
        } else if e.is_timeout() {
            format!(
                "the admin API at {} did not answer within {}s",
                self.base,
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            format!("talking to the admin API at {}", self.base)
        };
        anyhow::Error::new(e).context(message)
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}/api/v1/{path}", self.base);
        // `bearer_auth` marks the header sensitive, so it never shows in debug output.
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(parse_error(status.as_u16(), &bytes).into());
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the admin API at {} answered HTTP {} with a body that is not JSON",
                self.base,
                status.as_u16()
            )
        })
    }

    pub(super) async fn get_value(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post_value(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub(super) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        typed(self.get_value(path).await?, path)
    }

    pub(super) async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        typed(self.post_value(path, body).await?, path)
    }

    /// The grant an approved grant request issued, if the caller may see it.
    pub(super) async fn find_grant(&self, id: &str) -> Result<Option<Grant>> {
        let list: Vec<Grant> = typed(
            self.get_value("grants?limit=1000").await?["grants"].take(),
            "grants",
        )?;
        Ok(list.into_iter().find(|g| g.id == id))
    }
}

pub(super) fn typed<T: DeserializeOwned>(value: Value, path: &str) -> Result<T> {
    serde_json::from_value(value).with_context(|| {
        format!("the admin API's answer to /api/v1/{path} has an unexpected shape")
    })
}
