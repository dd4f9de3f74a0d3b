//! The web console: approvers decide held requests, reviewers and auditors search the log and
//! replay sessions, admins see the gateway's state, in a browser, signed in with the company's
//! identity provider.
//!
//! Served under `/console/` on the admin listener. Pages are rendered on the server (maud,
//! compiled into the binary) and work without JavaScript; one small script of our own adds
//! live updates. Nothing is loaded from anywhere else: the Content-Security-Policy allows only
//! the console's own origin.
//!
//! The console is a client of the same services as the admin API, with the same rules: the
//! approvals service decides who may decide what (no self-approval, whatever the page shows),
//! recordings are for the readers the policy names, and every read of recorded content or
//! download of audit information is itself an audit event naming the person.
//!
//! Security, in one place:
//! - sign-in is the OIDC authorization code flow with PKCE (S256), `state` and `nonce`
//!   ([`signin`]), the ID token verified by the identity crate like any bearer token;
//! - the session is server-side ([`auth::Sessions`]); the browser holds only a random key in a
//!   `__Host-` cookie (`Secure`, `HttpOnly`, `SameSite=Lax`), with idle and absolute timeouts;
//! - every POST carries the session's CSRF token and an `Origin` equal to the console's own;
//! - responses carry a strict CSP, `frame-ancestors 'none'`, `no-store` and `nosniff`.

mod access_page;
mod admin_page;
mod assets;
mod audit_page;
pub(crate) mod auth;
mod evidence_page;
mod inbox;
pub(crate) mod page;
mod sessions_page;
mod shared_sessions;
mod signin;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::Admin;

/// Tool pins as the console needs them; the gateway's pin store implements it (it lives with
/// the MCP adapter, which the console does not depend on).
pub trait ToolPins: Send + Sync {
    /// Tools whose definition changed and waits for an admin.
    fn pending(&self) -> PinFuture<'_, Vec<PendingPin>>;
    /// Accepts the new definition if it is still `expected` (the fingerprint the admin was
    /// shown); returns the old and new fingerprints.
    fn accept<'a>(
        &'a self,
        target: &'a str,
        tool: &'a str,
        expected: &'a str,
    ) -> PinFuture<'a, (String, String)>;
}

/// What [`ToolPins`] answers: the store may be a database across the network (shared state).
pub type PinFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

/// A changed tool waiting for acceptance.
#[derive(Debug, Clone)]
pub struct PendingPin {
    pub target: String,
    pub tool: String,
    /// The fingerprint agents were shown until the change.
    pub pinned: String,
    /// The changed definition's fingerprint.
    pub pending: String,
}

/// The console as an OIDC client.
#[derive(Clone)]
pub struct OidcClient {
    /// One of the identity crate's configured issuers.
    pub issuer: String,
    pub client_id: String,
    /// Read from the configuration's secret at start.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
}

/// What the console is configured with, beyond what the admin API already has.
#[derive(Clone)]
pub struct ConsoleSettings {
    /// The admin listener's URL as browsers reach it (`https://portcullis-admin.example.com`,
    /// or `http://127.0.0.1:8081` on loopback), without a trailing slash. Its origin is the
    /// only one a form may come from; the OIDC redirect URI is under it.
    pub base_url: String,
    /// Groups whose members administer from the console (`console.admins`).
    pub admins: Vec<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Human identities may sign in with their API key too.
    pub api_key_sign_in: bool,
    pub oidc: Option<OidcClient>,
    pub pins: Arc<dyn ToolPins>,
    /// The state replicas share (`[state] backend = "postgres"`): sign-in sessions live
    /// there, so that a browser signed in through one replica is signed in on all. `None`:
    /// in this process's memory.
    pub shared: Option<portcullis_state::Shared>,
    /// `portcullis check-config`'s explanation of the running configuration (targets, rules,
    /// sinks), shown read-only to admins.
    pub explanation: String,
    /// Where evidence documents are written (`[evidence] out_dir`).
    pub evidence_dir: PathBuf,
    /// The audit log's checkpoint directory, if checkpoints are published to one.
    pub checkpoint_dir: Option<PathBuf>,
    /// `audit.checkpoint_interval`: how often a checkpoint is signed while events come in.
    pub checkpoint_interval: Duration,
    /// How many witnesses are configured (`audit.witnesses`).
    pub witnesses: usize,
}

/// The console's shared state.
pub(crate) struct Web {
    pub(crate) admin: Arc<Admin>,
    pub(crate) settings: ConsoleSettings,
    /// `scheme://host[:port]` of `base_url`: what `Origin` must say on every POST.
    pub(crate) origin: String,
    pub(crate) sessions: auth::Sessions,
    pub(crate) flows: signin::Flows,
    /// For the token endpoint: no redirects followed, bounded time.
    pub(crate) http: reqwest::Client,
}

impl Web {
    /// A console URL for `path` (which starts with `/console`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url)
    }

    /// Whether `viewer` is one of `console.admins`.
    pub(crate) fn is_admin(&self, identity: &portcullis_model::Identity) -> bool {
        self.settings.admins.iter().any(|g| identity.in_group(g))
    }
}

/// The most a console form may send.
const MAX_FORM: usize = 64 * 1024;

/// The console's routes, to be nested at `/console` of the admin listener.
pub fn router(admin: Arc<Admin>, settings: ConsoleSettings) -> Result<Router, String> {
    let origin = origin_of(&settings.base_url)?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("portcullis-console/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the console's HTTP client: {e}"))?;
    let web = Arc::new(Web {
        sessions: auth::Sessions::new(
            settings.idle_timeout,
            settings.absolute_timeout,
            settings.shared.clone(),
        ),
        flows: signin::Flows::default(),
        admin,
        settings,
        origin,
        http,
    });
    Ok(Router::new()
        .route("/", get(to_inbox))
        .route("/static/console.css", get(assets::css))
        .route("/static/console.js", get(assets::js))
        .merge(signin::routes())
        .merge(inbox::routes())
        .merge(sessions_page::routes())
        .merge(audit_page::routes())
        .merge(access_page::routes())
        .merge(evidence_page::routes())
        .merge(admin_page::routes())
        .fallback(page::not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web))
}

/// `/console` and `/console/`: the inbox (which sends a visitor without a session to sign in).
pub(crate) async fn to_inbox() -> Response {
    security_headers(Redirect::to("/console/approvals").into_response()).await
}

/// `https://host:port` of a URL, or why it is not one.
fn origin_of(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("console URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "console URL {url:?}: must be an http(s) URL with a host"
        ));
    }
    Ok(parsed.origin().ascii_serialization())
}

/// A refusal by the framework itself (a form it cannot read: 400, 415, 422 in plain text; a
/// method a route does not answer: 405) as a console page, so a person sees what happened in
/// the console's words rather than a bare line of text.
async fn as_page(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return page::problem(
            status,
            "Not here",
            "This address answers only to the console's own pages and forms. Nothing was changed.",
            None,
        );
    }
    if !(status.is_client_error() && plain) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    page::problem(
        status,
        "Request refused",
        &format!("The console could not read this request ({text}). Nothing was changed."),
        None,
    )
}

/// Headers on every console response: only our own scripts and styles, no framing, nothing
/// cached, no type sniffing, the referrer kept to our own origin (a POST's `Origin` header
/// is what CSRF checks read; `no-referrer` would make browsers send `Origin: null`).
async fn security_headers(response: Response) -> Response {
    let mut response = as_page(response).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}
