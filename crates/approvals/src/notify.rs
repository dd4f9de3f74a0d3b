//! Webhook notifications: telling approvers that something waits for them, and that it ended.
//!
//! A held request is only useful if someone hears about it before it expires, so every new
//! approval (and every decision) is posted to the `[[approvals.webhooks]]` endpoints, either
//! as a generic JSON document or as a Slack incoming-webhook message.
//!
//! Notifications run beside the request path, never in it:
//!
//! - **Bounded.** [`Notifier::send`] only puts the notice on a queue and returns; it never waits
//!   on the network. Each endpoint has its own bounded queue and its own limit of deliveries in
//!   flight, so a slow or dead endpoint fills only its own queue: its notices are then dropped
//!   (and reported), while the other endpoints carry on. Memory stays bounded whatever an
//!   endpoint does.
//! - **Retried.** A delivery is tried up to `max_attempts` times with exponential backoff
//!   (1 s, 2 s, 4 s ... capped at 60 s, or a short `Retry-After`), because webhooks fail
//!   transiently. Answers that will not change on a retry (4xx other than 408/429, redirects)
//!   end it at once. Every attempt of one delivery carries the same `Portcullis-Delivery` id, so
//!   a receiver that saw an attempt whose answer got lost can drop the duplicate.
//! - **Signed.** Every attempt carries `Portcullis-Signature: t=<unix seconds>,v1=<hex>` where
//!   the hex is HMAC-SHA256 over `"<t>.<body>"` with the endpoint's secret, so a receiver can
//!   tell a notification from the gateway from a forged one, and (with the timestamp) a fresh
//!   one from a replay. [`verify_signature`] checks such a header.
//! - **Discreet.** A webhook URL can be a credential (Slack's carry their secret in the path),
//!   so logs and [`Delivery`] reports name an endpoint only by scheme, host and port. Secrets
//!   are read once at start and never logged. In Slack messages, text that requesters control
//!   is escaped so that it cannot turn into links or `@channel` mentions.
//!
//! The end of each delivery (delivered, failed after the last attempt, or dropped because the
//! queue was full) is reported on a channel, which the approval service records in the audit
//! log. Deliveries still in flight when the gateway stops are lost.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use chrono::{SecondsFormat, Utc};
use portcullis_config::WebhookFormat;
use rand::RngCore as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::types::{Approval, ApprovalKind};

/// The header carrying the signature: `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Portcullis-Signature";
/// The header carrying the delivery id: one per notice and endpoint, the same on every attempt.
pub const DELIVERY_HEADER: &str = "Portcullis-Delivery";

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "approvals.webhooks[{index}].secret_env: the environment variable {var} is not set (or is not valid UTF-8); it must hold the key that signs notifications"
    )]
    MissingSecret { index: usize, var: String },
    #[error(
        "approvals.webhooks[{index}].secret_env: the environment variable {var} is empty; it must hold the key that signs notifications"
    )]
    EmptySecret { index: usize, var: String },
    /// The URL itself is not repeated: it may be a credential.
    #[error("approvals.webhooks[{index}].url: {reason}")]
    InvalidUrl { index: usize, reason: String },
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// What approvers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A new approval waits for a decision.
    Requested,
    /// An approval ended: approved, denied, expired or cancelled.
    Resolved,
}

impl NoticeKind {
    /// The `type` of the JSON payload: `approval.requested` or `approval.resolved`.
    pub fn event_type(self) -> &'static str {
        match self {
            NoticeKind::Requested => "approval.requested",
            NoticeKind::Resolved => "approval.resolved",
        }
    }
}

/// One thing to tell every webhook.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub approval: Approval,
    /// The admin API base URL (e.g. "http://127.0.0.1:8081"), for links and commands; None if
    /// unknown.
    pub admin_url: Option<String>,
}

/// The end of one notification's delivery to one endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The approval id.
    pub approval: String,
    pub kind: NoticeKind,
    /// The endpoint for logs and the audit log: `scheme://host[:port]`, followed by `/…` when
    /// the URL has a path or query. Never the path or query themselves: Slack webhook URLs
    /// carry their secret in the path.
    pub endpoint: String,
    /// Attempts made; 0 when the notice was dropped before any.
    pub attempts: u32,
    /// Ok(HTTP status) on a 2xx; Err(why) after the last attempt failed or the queue was full.
    pub result: Result<u16, String>,
}

/// Limits and delays. Production values come from [`Tuning::default`]; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// The delay after the first failed attempt; doubled after each further one.
    pub(crate) backoff_base: Duration,
    /// The longest delay between attempts, and the longest `Retry-After` honoured.
    pub(crate) max_delay: Duration,
    /// How long one attempt may take, answer body included.
    pub(crate) attempt_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Notices waiting per endpoint before new ones are dropped.
    pub(crate) queue: usize,
    /// Deliveries in flight (sending or waiting to retry) per endpoint.
    pub(crate) in_flight: usize,
    /// Delivery reports waiting for the receiver before new ones are dropped.
    pub(crate) reports: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            backoff_base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            queue: 1024,
            in_flight: 64,
            reports: 1024,
        }
    }
}

/// One configured webhook, ready to use.
struct Endpoint {
    url: Url,
    /// What logs and reports call it (see [`Delivery::endpoint`]).
    shown: String,
    format: WebhookFormat,
    key: hmac::Key,
    max_attempts: u32,
}

/// What the endpoint workers and their deliveries share.
struct Shared {
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    reports: mpsc::Sender<Delivery>,
    tuning: Tuning,
}

impl Shared {
    /// Hands a delivery's end to whoever records it, without ever waiting for them.
    fn report(&self, delivery: Delivery) {
        match self.reports.try_send(delivery) {
            Ok(()) => {}
            Err(TrySendError::Full(d)) => tracing::warn!(
                approval = %d.approval,
                endpoint = %d.endpoint,
                "webhook delivery report dropped: the report queue is full"
            ),
            Err(TrySendError::Closed(d)) => tracing::debug!(
                approval = %d.approval,
                endpoint = %d.endpoint,
                "webhook delivery report dropped: nobody records them"
            ),
        }
    }
}

/// Sends notices to the configured webhooks in the background. Dropping it stops taking
/// notices; deliveries already queued or in flight still finish.
pub struct Notifier {
    /// One queue per endpoint, in configuration order.
    queues: Vec<mpsc::Sender<Arc<Notice>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Endpoints as shown in logs only: the URLs and keys are secrets.
        let endpoints: Vec<&str> = self
            .shared
            .endpoints
            .iter()
            .map(|e| e.shown.as_str())
            .collect();
        f.debug_struct("Notifier")
            .field("endpoints", &endpoints)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Reads every webhook's secret from the environment now (a missing or empty variable is
    /// an error naming the webhook index and the variable, never its value) and starts the
    /// background delivery. Returns None when no webhooks are configured. Deliveries are
    /// reported on the receiver (bounded; if it is full or gone, reports are dropped and
    /// logged).
    ///
    /// Must be called within a tokio runtime.
    pub fn start(
        config: &portcullis_config::Approvals,
    ) -> Result<Option<(Notifier, mpsc::Receiver<Delivery>)>, NotifyError> {
        Self::start_with(config, |var| std::env::var(var).ok(), Tuning::default())
    }

    /// [`Notifier::start`] with the secrets from `lookup` instead of the environment (tests run
    /// in parallel in one process, where setting variables is unsound) and given limits.
    pub(crate) fn start_with(
        config: &portcullis_config::Approvals,
        lookup: impl Fn(&str) -> Option<String>,
        tuning: Tuning,
    ) -> Result<Option<(Notifier, mpsc::Receiver<Delivery>)>, NotifyError> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::with_capacity(config.webhooks.len());
        for (index, hook) in config.webhooks.iter().enumerate() {
            let var = hook.secret_env.clone();
            let secret = match lookup(&var) {
                None => return Err(NotifyError::MissingSecret { index, var }),
                Some(s) if s.is_empty() => return Err(NotifyError::EmptySecret { index, var }),
                Some(s) => s,
            };
            let url = Url::parse(&hook.url).map_err(|e| NotifyError::InvalidUrl {
                index,
                reason: format!("not a valid URL ({e})"),
            })?;
            if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
                return Err(NotifyError::InvalidUrl {
                    index,
                    reason: "must be an https:// URL (http:// only on loopback)".into(),
                });
            }
            endpoints.push(Endpoint {
                shown: shown(&url),
                url,
                format: hook.format,
                key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
                // The configuration is checked to be within 1..=20; stay sane regardless.
                max_attempts: hook.max_attempts.clamp(1, 20),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(tuning.connect_timeout)
            // A redirect could send a signed notification, naming people and requests, to
            // somewhere the operator never configured: it is a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        let (reports, deliveries) = mpsc::channel(tuning.reports.max(1));
        let shared = Arc::new(Shared {
            endpoints,
            http,
            reports,
            tuning,
        });
        let mut queues = Vec::with_capacity(shared.endpoints.len());
        for index in 0..shared.endpoints.len() {
            let (queue, notices) = mpsc::channel(tuning.queue.max(1));
            queues.push(queue);
            tokio::spawn(run_endpoint(shared.clone(), index, notices));
        }
        Ok(Some((Notifier { queues, shared }, deliveries)))
    }

    /// Queues a notice for every webhook; never blocks and never waits on the network. When an
    /// endpoint's queue is full, the notice is dropped for that endpoint and a [`Delivery`]
    /// with `Err("notification queue full ...")` and no attempts is reported.
    pub fn send(&self, notice: Notice) {
        let notice = Arc::new(notice);
        for (index, queue) in self.queues.iter().enumerate() {
            let why = match queue.try_send(notice.clone()) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => format!(
                    "notification queue full ({} notices waiting for this endpoint); notice dropped",
                    self.shared.tuning.queue
                ),
                // Only if the endpoint's worker is gone, i.e. the runtime is shutting down.
                Err(TrySendError::Closed(_)) => "the notifier has stopped; notice dropped".into(),
            };
            let endpoint = &self.shared.endpoints[index];
            tracing::warn!(
                approval = %notice.approval.id,
                endpoint = %endpoint.shown,
                "webhook notification not sent: {why}"
            );
            self.shared.report(Delivery {
                approval: notice.approval.id.clone(),
                kind: notice.kind,
                endpoint: endpoint.shown.clone(),
                attempts: 0,
                result: Err(why),
            });
        }
    }
}

/// Takes one endpoint's notices off its queue and starts a delivery for each, at most
/// `in_flight` at a time. Each endpoint has its own worker so that one which retries for
/// minutes holds up only its own queue.
async fn run_endpoint(shared: Arc<Shared>, index: usize, mut notices: mpsc::Receiver<Arc<Notice>>) {
    let permits = Arc::new(Semaphore::new(shared.tuning.in_flight.max(1)));
    while let Some(notice) = notices.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break; // never closed
        };
        tokio::spawn(deliver(shared.clone(), index, notice, permit));
    }
}

/// Delivers one notice to one endpoint, with retries, and reports how it ended.
async fn deliver(
    shared: Arc<Shared>,
    index: usize,
    notice: Arc<Notice>,
    _permit: OwnedSemaphorePermit,
) {
    let endpoint = &shared.endpoints[index];
    let (attempts, result) = match payload(&notice, endpoint.format) {
        Ok(body) => attempt_all(&shared, endpoint, &body).await,
        Err(e) => (0, Err(format!("cannot build the notification: {e}"))),
    };
    match &result {
        Ok(status) => tracing::debug!(
            approval = %notice.approval.id,
            endpoint = %endpoint.shown,
            attempts,
            status,
            "webhook notification delivered"
        ),
        Err(why) => tracing::warn!(
            approval = %notice.approval.id,
            endpoint = %endpoint.shown,
            attempts,
            "webhook notification failed: {why}"
        ),
    }
    shared.report(Delivery {
        approval: notice.approval.id.clone(),
        kind: notice.kind,
        endpoint: endpoint.shown.clone(),
        attempts,
        result,
    });
}

/// How one attempt ended.
enum Attempt {
    Delivered(u16),
    /// Trying again would get the same answer.
    Final(String),
    /// Worth another try, after the delay the receiver asked for if it did.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// Tries until delivered, a final answer, or `max_attempts`; returns the attempts made.
async fn attempt_all(
    shared: &Shared,
    endpoint: &Endpoint,
    body: &[u8],
) -> (u32, Result<u16, String>) {
    // Stable across retries, so that receivers can drop duplicates.
    let delivery_id = new_delivery_id();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let retry_after = match attempt_once(shared, endpoint, &delivery_id, body).await {
            Attempt::Delivered(status) => return (attempt, Ok(status)),
            Attempt::Final(why) => return (attempt, Err(why)),
            Attempt::Retry { why, retry_after } => {
                if attempt >= endpoint.max_attempts {
                    return (attempt, Err(why));
                }
                tracing::debug!(
                    endpoint = %endpoint.shown,
                    attempt,
                    "webhook notification attempt failed, will retry: {why}"
                );
                retry_after
            }
        };
        tokio::time::sleep(retry_delay(&shared.tuning, attempt, retry_after)).await;
    }
}

async fn attempt_once(
    shared: &Shared,
    endpoint: &Endpoint,
    delivery_id: &str,
    body: &[u8],
) -> Attempt {
    // A fresh timestamp per attempt: receivers reject old ones as replays.
    let signature = sign(&endpoint.key, Utc::now().timestamp(), body);
    let sent = shared
        .http
        .post(endpoint.url.clone())
        .timeout(shared.tuning.attempt_timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(DELIVERY_HEADER, delivery_id)
        .body(body.to_vec())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_builder() => return Attempt::Final(describe(e)),
        // Connection refused, reset, TLS, timeouts: possibly passing, so retried. The
        // delivery id lets the receiver drop a duplicate if only its answer got lost.
        Err(e) => {
            return Attempt::Retry {
                why: describe(e),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered(status.as_u16());
    }
    let retry_after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            retry_after(response.headers())
        }
        _ => None,
    };
    if status.is_redirection() {
        // Not the Location: it could be as secret as the URL.
        return Attempt::Final(format!(
            "HTTP {status}: the webhook redirects, and redirects are not followed"
        ));
    }
    let why = match answer_excerpt(response, &endpoint.url).await {
        Some(text) => format!("HTTP {status}: {text}"),
        None => format!("HTTP {status}"),
    };
    let transient = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if transient {
        Attempt::Retry { why, retry_after }
    } else {
        Attempt::Final(why)
    }
}

/// The delay after failed attempt number `attempt` (from 1): the receiver's `Retry-After` if
/// it gave a short one, else `base * 2^(attempt-1)`, capped.
fn retry_delay(tuning: &Tuning, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(asked) = retry_after.filter(|d| *d <= tuning.max_delay) {
        return asked;
    }
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    tuning
        .backoff_base
        .saturating_mul(factor)
        .min(tuning.max_delay)
}

/// A numeric `Retry-After` (seconds). The HTTP-date form is ignored: rare for webhooks.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// The start of an error answer (Slack says why in it: `invalid_payload`, `no_service`),
/// cleaned of control characters and of the URL's secret parts, for the report.
async fn answer_excerpt(mut response: reqwest::Response, url: &Url) -> Option<String> {
    const SHOWN: usize = 200;
    // More than is shown, so that a secret straddling the cut is still whole when redacted.
    const READ: usize = 4096;
    let mut bytes = Vec::new();
    while bytes.len() < READ {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    // Some servers echo the request path ("Cannot POST /services/T0/B0/XXXX").
    for secret in url_secrets(url) {
        text = text.replace(secret, "…");
    }
    let text: String = text
        .chars()
        .take(SHOWN)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The parts of a webhook URL that may be secret, longest first: the path, the query, and
/// their longer pieces.
fn url_secrets(url: &Url) -> Vec<&str> {
    let path = Some(url.path()).filter(|p| *p != "/");
    let query = url.query();
    let mut secrets: Vec<&str> = path
        .into_iter()
        .chain(query)
        .chain(url.fragment())
        .chain(url.path().split('/').filter(|s| s.len() >= 8))
        .chain(
            query
                .into_iter()
                .flat_map(|q| q.split(['&', '=']))
                .filter(|s| s.len() >= 8),
        )
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// A transport error in words, without the URL reqwest would otherwise include.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `scheme://host[:port]`, plus `/…` if there is more: what may be shown of a webhook URL.
fn shown(url: &Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        out.push_str("/…");
    }
    out
}

fn new_delivery_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("dlv_{}", hex::encode(bytes))
}

/// The `Portcullis-Signature` value for `body` sent at `t`.
fn sign(key: &hmac::Key, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    let mut mac = hmac::Context::with_key(key);
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.sign().as_ref()))
}

/// Checks a `Portcullis-Signature` header, for receivers of Portcullis webhooks (and tests).
///
/// The header is `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<t>.<body>")>`;
/// `body` must be the request body exactly as received (not re-serialized JSON). Returns true
/// if `t` is within `tolerance_secs` of `now_unix` (which rejects replays of old deliveries;
/// 300 is a reasonable tolerance) and one of the `v1` values is a valid signature. Tags are
/// compared in constant time. An empty secret never verifies: anyone can compute that HMAC.
///
/// Several `v1` entries are accepted, so that a sender rotating its key may sign with both.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> bool {
    if secret.is_empty() || tolerance_secs < 0 {
        return false;
    }
    let mut stamps = Vec::new();
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => stamps.push(value),
            Some(("v1", value)) => tags.push(value),
            _ => {}
        }
    }
    // Exactly one timestamp: with two, which one was signed?
    let [t] = stamps[..] else {
        return false;
    };
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(sent) = t.parse::<i64>() else {
        return false;
    };
    if now_unix.abs_diff(sent) > tolerance_secs.unsigned_abs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
    signed.extend_from_slice(t.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    tags.iter()
        .any(|tag| hex::decode(tag).is_ok_and(|tag| hmac::verify(&key, &signed, &tag).is_ok()))
}

/// The request body for an endpoint of `format`.
fn payload(notice: &Notice, format: WebhookFormat) -> Result<Vec<u8>, serde_json::Error> {
    let sent_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let value = match format {
        WebhookFormat::Json => json_payload(notice, &sent_at)?,
        WebhookFormat::Slack => slack_payload(notice),
    };
    serde_json::to_vec(&value)
}

/// The admin API base without a trailing slash, if known.
fn admin_base(notice: &Notice) -> Option<&str> {
    notice
        .admin_url
        .as_deref()
        .map(|u| u.trim_end_matches('/'))
        .filter(|u| !u.is_empty())
}

/// The CLI commands that decide an approval. The id is ours (`apr_` and hex), safe in a shell.
fn commands(approval: &Approval) -> (String, String) {
    (
        format!(
            "portcullis approvals approve {} --reason '...'",
            approval.id
        ),
        format!("portcullis approvals deny {} --reason '...'", approval.id),
    )
}

/// The generic payload: the whole approval (arguments already masked) plus what a receiver
/// needs to act on it without knowing Portcullis' API.
///
/// `links.approve`/`links.deny` and `commands` are given only for `approval.requested`: once
/// resolved there is nothing left to decide.
fn json_payload(notice: &Notice, sent_at: &str) -> Result<Value, serde_json::Error> {
    let approval = &notice.approval;
    let mut payload = json!({
        "type": notice.kind.event_type(),
        "approval": serde_json::to_value(approval)?,
        "summary": approval.summary(),
        "sent_at": sent_at,
    });
    let requested = notice.kind == NoticeKind::Requested;
    if let Some(base) = admin_base(notice) {
        let show = format!("{base}/api/v1/approvals/{}", approval.id);
        payload["links"] = if requested {
            json!({
                "show": show,
                "approve": format!("{show}/approve"),
                "deny": format!("{show}/deny"),
            })
        } else {
            json!({ "show": show })
        };
    }
    if requested {
        let (approve, deny) = commands(approval);
        payload["commands"] = json!({ "approve": approve, "deny": deny });
    }
    Ok(payload)
}

/// Escapes Slack mrkdwn's control characters so that text cannot become a link, a mention
/// (`<!channel>`, `<@U123>`) or a broken entity, and clips it to `max` characters (Slack
/// rejects long blocks) without cutting an escape in half.
fn mrkdwn(text: &str, max: usize) -> String {
    fn escape(c: char) -> Option<&'static str> {
        match c {
            '&' => Some("&amp;"),
            '<' => Some("&lt;"),
            '>' => Some("&gt;"),
            _ => None,
        }
    }
    let mut out = String::new();
    let mut len = 0;
    for c in text.chars() {
        match escape(c) {
            Some(entity) => out.push_str(entity),
            None => out.push(c),
        }
        len += escape(c).map_or(1, str::len);
    }
    if len <= max {
        return out;
    }
    // Too long: start again, stopping where the rest and an ellipsis no longer fit.
    out.clear();
    len = 0;
    for c in text.chars() {
        let width = escape(c).map_or(1, str::len);
        if len + width + 1 > max {
            break;
        }
        match escape(c) {
            Some(entity) => out.push_str(entity),
            None => out.push(c),
        }
        len += width;
    }
    out.push('…');
    out
}

/// A Slack incoming-webhook message: a one-line `text` (for notifications and clients that
/// cannot show blocks) and blocks with what an approver needs to judge the request.
fn slack_payload(notice: &Notice) -> Value {
    let a = &notice.approval;
    let requester = format!(
        "{} (`{}`)",
        mrkdwn(a.requester.name(), 200),
        mrkdwn(&a.requester.subject, 200)
    );
    let summary = mrkdwn(&a.summary(), 500);
    let what = match a.kind {
        ApprovalKind::Request => "a held request",
        ApprovalKind::Grant => "an access grant",
    };
    let (text, heading) = match notice.kind {
        NoticeKind::Requested => (
            format!(
                "Approval needed: {} asks for {summary} ({})",
                mrkdwn(a.requester.name(), 200),
                a.id
            ),
            "Approval needed".to_string(),
        ),
        NoticeKind::Resolved => (
            format!("{} {}: {summary}", a.id, a.status.as_str()),
            format!("Approval {}", a.status.as_str()),
        ),
    };
    let mut fields = vec![
        format!("*Requested by*\n{requester}"),
        format!("*What*\n{what}: {summary}"),
        format!("*Rule*\n{}", mrkdwn(&a.rule, 300)),
        format!(
            "*Approvers*\n{} of {}",
            a.min_approvals,
            mrkdwn(&a.approvers.join(", "), 500)
        ),
        format!("*Expires*\n{}", mrkdwn(&a.expires_at, 100)),
        format!("*ID*\n`{}`", mrkdwn(&a.id, 100)),
    ];
    if notice.kind == NoticeKind::Resolved {
        fields.insert(0, format!("*Status*\n{}", a.status.as_str()));
    }
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": { "type": "plain_text", "text": heading },
        }),
        json!({
            "type": "section",
            "fields": fields
                .into_iter()
                .map(|f| json!({ "type": "mrkdwn", "text": f }))
                .collect::<Vec<_>>(),
        }),
        section(format!(
            "*Reason*\n{}",
            a.reason
                .as_deref()
                .map(|r| mrkdwn(r, 2500))
                .unwrap_or_else(|| "_none given_".into())
        )),
    ];
    if let Some(arguments) = &a.arguments {
        let pretty = serde_json::to_string_pretty(arguments).unwrap_or_default();
        blocks.push(section(format!(
            "*Arguments* (masked)\n```{}```",
            mrkdwn(&pretty, 2500)
        )));
    }
    if notice.kind == NoticeKind::Resolved {
        let mut decided: Vec<String> = a
            .votes
            .iter()
            .map(|v| {
                format!(
                    "• {} {}{}: {}",
                    mrkdwn(v.approver.name(), 200),
                    if v.approve { "approved" } else { "denied" },
                    if v.break_glass { " (break-glass)" } else { "" },
                    mrkdwn(&v.reason, 300)
                )
            })
            .collect();
        if let Some(because) = &a.closed_because {
            decided.push(mrkdwn(because, 500));
        }
        if decided.is_empty() {
            decided.push("_no decisions_".into());
        }
        blocks.push(section(format!(
            "*Decided by*\n{}",
            clip_lines(&decided, 2900)
        )));
    }
    if notice.kind == NoticeKind::Requested {
        let (approve, deny) = commands(a);
        let mut decide = format!("*Decide*\n```{approve}\n{deny}```");
        if let Some(base) = admin_base(notice) {
            decide.push_str(&format!(
                "\nAdmin API: <{}|{}>",
                mrkdwn(&format!("{base}/api/v1/approvals/{}", a.id), 500),
                mrkdwn(&a.id, 100)
            ));
        }
        blocks.push(section(decide));
    }
    json!({
        "text": text,
        "blocks": blocks,
        // A URL in a reason must not unfurl into a preview that looks endorsed.
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// Joins already-escaped lines, dropping whole lines beyond `max` characters.
fn clip_lines(lines: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if out.chars().count() + line.chars().count() + 1 > max {
            out.push_str(&format!("\n… and {} more", lines.len() - i));
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Person, Status, Vote};
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, StatusCode as AxumStatus};
    use axum::response::{IntoResponse, Response};
    use portcullis_config::{Approvals as ApprovalsConfig, Webhook};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const SECRET: &str = "s3cret-key-for-tests";

    /// What the receiver got.
    #[derive(Debug, Clone)]
    struct Received {
        path: String,
        headers: AxumHeaders,
        body: Bytes,
    }

    /// How the receiver answers: scripted answers first, then `default`.
    #[derive(Clone)]
    struct Answer {
        status: u16,
        retry_after: Option<&'static str>,
        delay: Duration,
    }

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        }
    }

    struct Inbox {
        got: Mutex<Vec<Received>>,
        script: Mutex<VecDeque<Answer>>,
        default: Answer,
    }

    async fn receive(
        State(r): State<Arc<Inbox>>,
        uri: axum::http::Uri,
        headers: AxumHeaders,
        body: Bytes,
    ) -> Response {
        r.got.lock().unwrap().push(Received {
            path: uri.path().to_string(),
            headers,
            body,
        });
        let a = r
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| r.default.clone());
        tokio::time::sleep(a.delay).await;
        let mut resp =
            // Like some frameworks' error pages, echo the path (and with it the URL's secret).
            (AxumStatus::from_u16(a.status).unwrap(), format!("receiver says no to POST {uri}")).into_response();
        if a.status == 302 {
            resp.headers_mut()
                .insert("location", "http://elsewhere.invalid/".parse().unwrap());
        }
        if let Some(ra) = a.retry_after {
            resp.headers_mut()
                .insert("retry-after", ra.parse().unwrap());
        }
        resp
    }

    /// A real HTTP receiver on loopback; returns its base URL.
    async fn receiver(script: Vec<Answer>, default: Answer) -> (String, Arc<Inbox>) {
        let state = Arc::new(Inbox {
            got: Mutex::new(Vec::new()),
            script: Mutex::new(script.into()),
            default,
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), state)
    }

    fn fast() -> Tuning {
        Tuning {
            backoff_base: Duration::from_millis(10),
            attempt_timeout: Duration::from_secs(5),
            ..Tuning::default()
        }
    }

    fn hook(url: String, format: WebhookFormat, secret_env: &str, max_attempts: u32) -> Webhook {
        Webhook {
            url,
            format,
            secret_env: secret_env.into(),
            max_attempts,
        }
    }

    fn start(webhooks: Vec<Webhook>, tuning: Tuning) -> (Notifier, mpsc::Receiver<Delivery>) {
        let config = ApprovalsConfig {
            webhooks,
            ..ApprovalsConfig::default()
        };
        Notifier::start_with(
            &config,
            |var| (var == "HOOK_SECRET").then(|| SECRET.to_string()),
            tuning,
        )
        .unwrap()
        .unwrap()
    }

    fn person(subject: &str, display: Option<&str>) -> Person {
        Person {
            issuer: "https://idp.example".into(),
            subject: subject.into(),
            display_name: display.map(Into::into),
            kind: "user".into(),
            groups: vec![],
        }
    }

    fn approval(reason: &str) -> Approval {
        Approval {
            id: "apr_0123456789abcdef0123".into(),
            kind: ApprovalKind::Request,
            status: Status::Pending,
            requester: person("agent-7", Some("Refund <b>Bot</b> & co")),
            source: Some("10.0.0.7".into()),
            target: "billing".into(),
            action: "tools/call".into(),
            resource: Some("refund_payment".into()),
            arguments: Some(json!({"amount": 120, "card": "[CARD]"})),
            arguments_digest: None,
            grant: None,
            reason: Some(reason.into()),
            rule: "refunds-need-approval".into(),
            policy_version: "v1".into(),
            approvers: vec!["finance".into(), "ops".into()],
            min_approvals: 1,
            created_at: "2025-01-01T10:00:00.000Z".into(),
            expires_at: "2025-01-01T10:15:00.000Z".into(),
            request_event: None,
            votes: vec![],
            closed_at: None,
            closed_because: None,
            digest: "d1g3st".into(),
        }
    }

    fn requested(reason: &str) -> Notice {
        Notice {
            kind: NoticeKind::Requested,
            approval: approval(reason),
            admin_url: Some("http://127.0.0.1:8081/".into()),
        }
    }

    async fn next(deliveries: &mut mpsc::Receiver<Delivery>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(20), deliveries.recv())
            .await
            .expect("no delivery report in time")
            .expect("report channel closed")
    }

    fn header<'a>(r: &'a Received, name: &str) -> &'a str {
        r.headers.get(name).unwrap().to_str().unwrap()
    }

    fn assert_signed(r: &Received) {
        let sig = header(r, SIGNATURE_HEADER);
        assert!(
            verify_signature(SECRET.as_bytes(), sig, &r.body, Utc::now().timestamp(), 300),
            "bad signature {sig}"
        );
    }

    #[tokio::test]
    async fn json_delivery_arrives_once_signed() {
        let (base, rx) = receiver(vec![], answer(200)).await;
        let url = format!("{base}/hooks/T000/secret-path?token=abc");
        let (notifier, mut deliveries) = start(
            vec![hook(url, WebhookFormat::Json, "HOOK_SECRET", 5)],
            fast(),
        );
        notifier.send(requested("customer called, refund agreed"));
        let d = next(&mut deliveries).await;
        assert_eq!(d.result, Ok(200));
        assert_eq!(d.attempts, 1);
        assert_eq!(d.kind, NoticeKind::Requested);
        assert_eq!(d.approval, "apr_0123456789abcdef0123");
        let port = base.rsplit(':').next().unwrap();
        assert_eq!(d.endpoint, format!("http://127.0.0.1:{port}/…"));
        assert!(!d.endpoint.contains("secret") && !d.endpoint.contains("token"));

        let got = rx.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "delivered exactly once");
        let r = &got[0];
        assert_eq!(r.path, "/hooks/T000/secret-path");
        assert_signed(r);
        assert_eq!(header(r, "content-type"), "application/json");
        assert!(header(r, "user-agent").starts_with("portcullis/"));
        assert!(header(r, DELIVERY_HEADER).starts_with("dlv_"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "approval.requested");
        assert_eq!(body["approval"]["id"], "apr_0123456789abcdef0123");
        assert_eq!(body["approval"]["digest"], "d1g3st");
        assert_eq!(body["summary"], "tools/call refund_payment on billing");
        assert_eq!(
            body["commands"]["approve"],
            "portcullis approvals approve apr_0123456789abcdef0123 --reason '...'"
        );
        assert_eq!(
            body["commands"]["deny"],
            "portcullis approvals deny apr_0123456789abcdef0123 --reason '...'"
        );
        assert_eq!(
            body["links"]["approve"],
            "http://127.0.0.1:8081/api/v1/approvals/apr_0123456789abcdef0123/approve"
        );
        assert_eq!(
            body["links"]["show"],
            "http://127.0.0.1:8081/api/v1/approvals/apr_0123456789abcdef0123"
        );
        assert!(chrono::DateTime::parse_from_rfc3339(body["sent_at"].as_str().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn json_resolved_without_admin_url_has_no_links_or_commands() {
        let (base, rx) = receiver(vec![], answer(204)).await;
        let (notifier, mut deliveries) = start(
            vec![hook(
                format!("{base}/"),
                WebhookFormat::Json,
                "HOOK_SECRET",
                5,
            )],
            fast(),
        );
        let mut a = approval("because");
        a.status = Status::Approved;
        notifier.send(Notice {
            kind: NoticeKind::Resolved,
            approval: a,
            admin_url: None,
        });
        let d = next(&mut deliveries).await;
        assert_eq!(d.result, Ok(204));
        assert_eq!(d.kind, NoticeKind::Resolved);
        // Nothing but a root path: nothing hidden.
        assert!(!d.endpoint.ends_with('…'));
        let got = rx.got.lock().unwrap().clone();
        let body: Value = serde_json::from_slice(&got[0].body).unwrap();
        assert_eq!(body["type"], "approval.resolved");
        assert_eq!(body["approval"]["status"], "approved");
        assert!(body.get("links").is_none());
        assert!(body.get("commands").is_none());
    }

    #[tokio::test]
    async fn slack_payload_escapes_requester_text() {
        let (base, rx) = receiver(vec![], answer(200)).await;
        let (notifier, mut deliveries) = start(
            vec![hook(
                format!("{base}/services/T0/B0/XXXX"),
                WebhookFormat::Slack,
                "HOOK_SECRET",
                5,
            )],
            fast(),
        );
        notifier.send(requested("urgent <https://evil|click> <!channel> & more"));
        let d = next(&mut deliveries).await;
        assert_eq!(d.result, Ok(200));
        assert!(!d.endpoint.contains("XXXX"));

        let got = rx.got.lock().unwrap().clone();
        assert_signed(&got[0]);
        let body: Value = serde_json::from_slice(&got[0].body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("Approval needed"), "{text}");
        assert!(
            text.contains("Refund &lt;b&gt;Bot&lt;/b&gt; &amp; co"),
            "{text}"
        );
        assert!(body["blocks"].as_array().is_some_and(|b| !b.is_empty()));
        assert_eq!(body["unfurl_links"], false);

        let all = serde_json::to_string(&body["blocks"]).unwrap();
        assert!(all.contains("urgent &lt;https://evil|click&gt; &lt;!channel&gt; &amp; more"));
        assert!(!all.contains("<https://evil") && !all.contains("<!channel>"));
        assert!(!all.contains("<b>"));
        assert!(all.contains("portcullis approvals approve apr_0123456789abcdef0123"));
        assert!(all.contains("refunds-need-approval"));
        assert!(all.contains("1 of finance, ops"));
        assert!(all.contains("2025-01-01T10:15:00.000Z"));
        // The admin link is ours, so it stays a link.
        assert!(all.contains("<http://127.0.0.1:8081/api/v1/approvals/apr_0123456789abcdef0123|"));
    }

    #[test]
    fn slack_resolved_names_deciders() {
        let mut a = approval("r");
        a.status = Status::Denied;
        a.votes = vec![Vote {
            approver: person("alice", Some("Alice <@U999>")),
            approve: false,
            reason: "not <!here> today".into(),
            time: "2025-01-01T10:05:00.000Z".into(),
            break_glass: true,
        }];
        let body = slack_payload(&Notice {
            kind: NoticeKind::Resolved,
            approval: a,
            admin_url: None,
        });
        let all = body.to_string();
        assert!(all.contains("denied"));
        assert!(all.contains("Alice &lt;@U999&gt; denied (break-glass): not &lt;!here&gt; today"));
        assert!(!all.contains("portcullis approvals approve"));
    }

    #[test]
    fn mrkdwn_escapes_and_clips_without_splitting_entities() {
        assert_eq!(mrkdwn("a<b>&c", 100), "a&lt;b&gt;&amp;c");
        assert_eq!(mrkdwn("<<<<", 16), "&lt;&lt;&lt;&lt;");
        assert_eq!(mrkdwn("<<<<", 10), "&lt;&lt;…");
        assert!(mrkdwn(&"x".repeat(5000), 100).chars().count() <= 100);
    }

    #[tokio::test]
    async fn retries_transient_failures_with_a_stable_delivery_id() {
        let (base, rx) = receiver(vec![answer(503), answer(503)], answer(200)).await;
        let (notifier, mut deliveries) = start(
            vec![hook(
                format!("{base}/h"),
                WebhookFormat::Json,
                "HOOK_SECRET",
                5,
            )],
            fast(),
        );
        notifier.send(requested("r"));
        let d = next(&mut deliveries).await;
        assert_eq!(d.result, Ok(200));
        assert_eq!(d.attempts, 3);
        let got = rx.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3);
        let id = header(&got[0], DELIVERY_HEADER);
        for r in &got {
            assert_eq!(header(r, DELIVERY_HEADER), id);
            assert_signed(r);
            assert_eq!(r.body, got[0].body);
        }
        // Nothing else arrives later.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(deliveries.try_recv().is_err());
    }

    #[tokio::test]
    async fn honours_a_short_retry_after() {
        // A base backoff this long would time the test out: only Retry-After: 0 makes it quick.
        let tuning = Tuning {
            backoff_base: Duration::from_secs(30),
            ..fast()
        };
        let limited = Answer {
            retry_after: Some("0"),
            ..answer(429)
        };
        let (base, _rx) = receiver(vec![limited], answer(200)).await;
        let (notifier, mut deliveries) = start(
            vec![hook(
                format!("{base}/h"),
                WebhookFormat::Json,
                "HOOK_SECRET",
                3,
            )],
            tuning,
        );
        notifier.send(requested("r"));
        let d = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
            .await
            .expect("Retry-After not honoured")
            .unwrap();
        assert_eq!(d.result, Ok(200));
        assert_eq!(d.attempts, 2);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t = Tuning::default();
        let secs = |attempt, ra| retry_delay(&t, attempt, ra).as_secs();
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 8, 20].map(|n| secs(n, None)),
            [1, 2, 4, 8, 16, 32, 60, 60, 60]
        );
        assert_eq!(secs(1, Some(Duration::from_secs(30))), 30);
        assert_eq!(
            secs(2, Some(Duration::from_secs(600))),
            2,
            "long Retry-After ignored"
        );
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_does_not_retry_client_errors() {
        let (failing, failing_rx) = receiver(vec![], answer(500)).await;
        let (refusing, refusing_rx) = receiver(vec![], answer(400)).await;
        let (notifier, mut deliveries) = start(
            vec![
                hook(
                    format!("{failing}/a"),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    2,
                ),
                hook(
                    format!("{refusing}/b/T0KEN-1234567?sig=QUERYSECRET99"),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    5,
                ),
            ],
            fast(),
        );
        notifier.send(requested("r"));
        let mut reports = [next(&mut deliveries).await, next(&mut deliveries).await];
        reports.sort_by_key(|d| d.attempts);
        let [refused, failed] = reports;

        assert_eq!(refused.attempts, 1);
        let why = refused.result.unwrap_err();
        assert!(
            why.contains("400") && why.contains("receiver says no to POST …"),
            "{why}"
        );
        // The receiver echoed the URL; the report does not.
        assert!(
            !why.contains("T0KEN") && !why.contains("QUERYSECRET"),
            "{why}"
        );
        assert_eq!(refusing_rx.got.lock().unwrap().len(), 1);

        assert_eq!(failed.attempts, 2);
        let why = failed.result.unwrap_err();
        assert!(why.contains("500") && !why.contains("/a"), "{why}");
        assert_eq!(failing_rx.got.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn redirects_timeouts_and_refused_connections_fail_without_leaking_the_url() {
        let (redirecting, _r1) = receiver(vec![], answer(302)).await;
        let slow = Answer {
            delay: Duration::from_secs(3),
            ..answer(200)
        };
        let (slow_base, _r2) = receiver(vec![], slow).await;
        // A port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let tuning = Tuning {
            attempt_timeout: Duration::from_millis(300),
            ..fast()
        };
        let (notifier, mut deliveries) = start(
            vec![
                hook(
                    format!("{redirecting}/secret-1"),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    5,
                ),
                hook(
                    format!("{slow_base}/secret-2"),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    1,
                ),
                hook(
                    format!("http://{closed}/secret-3"),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    2,
                ),
            ],
            tuning,
        );
        notifier.send(requested("r"));
        let mut whys = Vec::new();
        for _ in 0..3 {
            let d = next(&mut deliveries).await;
            let why = d.result.clone().unwrap_err();
            assert!(
                !why.contains("secret-") && !d.endpoint.contains("secret-"),
                "{d:?}"
            );
            whys.push((d.attempts, why));
        }
        whys.sort();
        assert!(
            whys.iter().any(|(n, w)| *n == 1 && w.contains("redirect")),
            "{whys:?}"
        );
        assert!(
            whys.iter().any(|(n, w)| *n == 1 && w.contains("timed out")),
            "{whys:?}"
        );
        assert!(
            whys.iter()
                .any(|(n, w)| *n == 2 && w.contains("cannot connect")),
            "{whys:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_reports() {
        let tuning = Tuning { queue: 1, ..fast() };
        let (base, rx) = receiver(vec![], answer(200)).await;
        let (notifier, mut deliveries) = start(
            vec![hook(
                format!("{base}/h"),
                WebhookFormat::Json,
                "HOOK_SECRET",
                5,
            )],
            tuning,
        );
        // The single-threaded test runtime runs no other task between these calls: the first
        // fills the queue, the second finds it full. Neither waits.
        notifier.send(requested("first"));
        notifier.send(requested("second"));
        let dropped = next(&mut deliveries).await;
        assert_eq!(dropped.attempts, 0);
        assert!(
            dropped
                .result
                .unwrap_err()
                .contains("notification queue full")
        );
        let delivered = next(&mut deliveries).await;
        assert_eq!(delivered.result, Ok(200));
        assert_eq!(rx.got.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn missing_or_empty_secrets_and_no_webhooks() {
        let config = |var: &str| ApprovalsConfig {
            webhooks: vec![
                hook(
                    "https://a.example/".into(),
                    WebhookFormat::Json,
                    "HOOK_SECRET",
                    5,
                ),
                hook("https://b.example/".into(), WebhookFormat::Slack, var, 5),
            ],
            ..ApprovalsConfig::default()
        };
        let lookup = |var: &str| match var {
            "HOOK_SECRET" => Some(SECRET.to_string()),
            "EMPTY_SECRET" => Some(String::new()),
            _ => None,
        };
        let err = Notifier::start_with(&config("NO_SUCH_SECRET"), lookup, fast()).unwrap_err();
        assert!(
            matches!(&err, NotifyError::MissingSecret { index: 1, var } if var == "NO_SUCH_SECRET")
        );
        let text = err.to_string();
        assert!(
            text.contains("NO_SUCH_SECRET") && text.contains("webhooks[1]"),
            "{text}"
        );

        let err = Notifier::start_with(&config("EMPTY_SECRET"), lookup, fast()).unwrap_err();
        assert!(
            matches!(&err, NotifyError::EmptySecret { index: 1, var } if var == "EMPTY_SECRET")
        );

        // The real environment, with a variable no one sets.
        let unset = ApprovalsConfig {
            webhooks: vec![hook(
                "https://a.example/".into(),
                WebhookFormat::Json,
                "PORTCULLIS_NOTIFY_TEST_UNSET_5b9e1c",
                5,
            )],
            ..ApprovalsConfig::default()
        };
        let err = Notifier::start(&unset).unwrap_err();
        assert!(matches!(&err, NotifyError::MissingSecret { index: 0, .. }));
        assert!(
            err.to_string()
                .contains("PORTCULLIS_NOTIFY_TEST_UNSET_5b9e1c")
        );

        assert!(
            Notifier::start(&ApprovalsConfig::default())
                .unwrap()
                .is_none()
        );

        let bad = ApprovalsConfig {
            webhooks: vec![hook(
                "ftp://x.example/k".into(),
                WebhookFormat::Json,
                "HOOK_SECRET",
                5,
            )],
            ..ApprovalsConfig::default()
        };
        let err = Notifier::start_with(&bad, lookup, fast()).unwrap_err();
        assert!(matches!(err, NotifyError::InvalidUrl { index: 0, .. }));
    }

    #[test]
    fn verify_signature_checks_body_secret_and_time() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let body = br#"{"type":"approval.requested"}"#;
        let now = 1_700_000_000;
        let header = sign(&key, now, body);
        assert!(header.starts_with(&format!("t={now},v1=")));
        assert!(verify_signature(b"k1", &header, body, now, 300));
        assert!(verify_signature(b"k1", &header, body, now + 300, 300));
        assert!(verify_signature(b"k1", &header, body, now - 300, 300));

        assert!(!verify_signature(
            b"k1",
            &header,
            br#"{"type":"approval.resolved"}"#,
            now,
            300
        ));
        assert!(!verify_signature(b"k2", &header, body, now, 300));
        assert!(!verify_signature(b"k1", &header, body, now + 301, 300));
        assert!(!verify_signature(b"k1", &header, body, now - 301, 300));
        assert!(!verify_signature(
            b"",
            &sign(&hmac::Key::new(hmac::HMAC_SHA256, b""), now, body),
            body,
            now,
            300
        ));
        // A timestamp changed after signing.
        let shifted = header.replace(&format!("t={now}"), &format!("t={}", now + 1));
        assert!(!verify_signature(b"k1", &shifted, body, now, 300));
        // Malformed headers.
        assert!(!verify_signature(b"k1", "", body, now, 300));
        assert!(!verify_signature(
            b"k1",
            &format!("t={now}"),
            body,
            now,
            300
        ));
        assert!(!verify_signature(
            b"k1",
            &format!("{header},t={now}"),
            body,
            now,
            300
        ));
        assert!(!verify_signature(
            b"k1",
            &format!("t={now},v1=zz"),
            body,
            now,
            300
        ));
        // A second signature (key rotation) is accepted if one of them verifies.
        let v1 = header.split("v1=").nth(1).unwrap();
        let rotated = format!("t={now},v1={},v1={v1}", "00".repeat(32));
        assert!(verify_signature(b"k1", &rotated, body, now, 300));
    }

    #[test]
    fn shown_endpoints_hide_path_query_and_credentials() {
        let s = |u: &str| shown(&Url::parse(u).unwrap());
        assert_eq!(
            s("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            s("https://user:pw@h.example:8443/?k=v"),
            "https://h.example:8443/…"
        );
        assert_eq!(s("https://h.example/"), "https://h.example");
        assert_eq!(s("http://[::1]:9000/x"), "http://[::1]:9000/…");
    }
}
