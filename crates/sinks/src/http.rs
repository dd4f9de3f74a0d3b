//! `kind = "http"`: records POSTed to a collector, in one of three framings (`preset`).
//!
//! - `json`: the body is a JSON array of native records (`application/json`), the form
//!   `portcullis audit verify-export` understands once split into lines. Any 2xx
//!   acknowledges the batch.
//! - `splunk-hec`: Splunk's HTTP Event Collector, events concatenated in one body, each
//!   carrying the native record as `event` and a few indexed `fields`. The URL is the event
//!   endpoint; a URL ending in `/services/collector` gets `/event` appended and a URL with no
//!   path gets `/services/collector/event` (the raw endpoint is refused: it has no framing
//!   that keeps records whole). HEC stops at the first event it cannot parse and says which
//!   (`invalid-event-number`): that record is refused for good, and the records after it,
//!   which HEC never looked at, are sent again in a second request of the same delivery
//!   (the ones before it were indexed). If that request fails, the whole batch is retried
//!   later, so those before it may arrive twice: at least once, never lost.
//!   HEC tokens with indexer acknowledgement are not supported (the sink sends no channel).
//!   Only HEC's verdicts on the event itself (codes 6, 12, 13, 15 with `invalid-event-number`)
//!   refuse one event for good; the others (code 7, an index the token may not write) are
//!   retried.
//! - `elasticsearch`: Elasticsearch or OpenSearch `_bulk` (`/_bulk` is appended to the URL
//!   unless it ends with it), one `create` action per record with a deterministic `_id`
//!   (the event id; `checkpoint-<origin hash>-<size>`; `omitted-<origin hash>-<leaf>-<count>`), so a batch
//!   sent again after a crash or a failure is deduplicated by the receiver: an item
//!   answering 409 (the document exists) counts as delivered. An item refused with 429 or
//!   5xx (a busy or failing shard) fails the delivery: the whole batch goes again after the
//!   engine's backoff, which the 409s make cheap and duplicate-free, rather than at once
//!   from here. Only an item refused for what the document holds (400 with
//!   `mapper_parsing_exception`, `document_parsing_exception`,
//!   `strict_dynamic_mapping_exception`, `illegal_argument_exception`) is a rejection for good,
//!   with its error type and reason; any other refusal (403 no right to write the index, 404
//!   no such index, a closed index, a cluster block) is about the cluster or the
//!   configuration and is retried, as is a batch whose every document was refused. The
//!   documents are ECS
//!   ([`crate::ecs`]) with the native record under `portcullis`.
//!
//! Status codes. Any non-2xx answer to the whole request fails the delivery and the batch is
//! sent again after the engine's backoff: 5xx, 429 and connection errors because they pass,
//! and also 4xx, because a 400/401/403/404/413 for a whole batch says the sink is
//! misconfigured (wrong URL, token, index permissions, batch too large): dropping the batch
//! would lose audit events for a fixable mistake, while retrying keeps them and shows the
//! cause in `portcullis sinks status` until someone fixes it. Only a receiver's verdict on
//! one record (a HEC invalid event, a `_bulk` item mapping error) is a rejection for good.
//!
//! Errors carry the status and a short excerpt of the receiver's answer, with the values of
//! the configured secret headers and token blanked out in case a receiver echoes them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use portcullis_config::{ClientTls, HttpPreset, HttpSink, Secret};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::record::{Batch, Record};
use crate::{Delivered, Rejected, SendError, Transport};

/// At most this many characters of a receiver's answer go into an error message.
const EXCERPT: usize = 300;

/// How long establishing a connection (TCP and TLS) may take; the sink's `timeout` bounds
/// the whole delivery.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client set up for one sink: its TLS settings, its headers, and the secret values
/// to keep out of messages.
pub(crate) struct Poster {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    gzip: bool,
    secrets: Vec<String>,
    destination: String,
}

impl Poster {
    /// Reads the CA, the client certificate and the header secrets now, so a missing one
    /// fails the start. `extra` are headers the preset adds (the HEC token).
    pub(crate) fn new(
        url: reqwest::Url,
        tls: &ClientTls,
        headers: &std::collections::BTreeMap<String, Secret>,
        extra: Vec<(HeaderName, String)>,
        gzip: bool,
        timeout: Duration,
    ) -> Result<Poster, String> {
        let mut secrets = Vec::new();
        let mut map = HeaderMap::new();
        for (name, secret) in headers {
            let value = secret.read().map_err(|e| format!("headers.{name}: {e}"))?;
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: not a valid header name"))?;
            if RESERVED.contains(&header)
                || extra
                    .iter()
                    .any(|(preset_header, _)| *preset_header == header)
            {
                return Err(format!(
                    "headers.{name}: the sink sets this header itself{}",
                    if header == reqwest::header::AUTHORIZATION {
                        " (from token)"
                    } else {
                        ""
                    }
                ));
            }
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| format!("headers.{name}: the value is not a valid header value"))?;
            if !matches!(secret, Secret::Literal(_)) {
                value.set_sensitive(true);
            }
            if let Ok(text) = value.to_str() {
                push_secret(&mut secrets, text);
            }
            map.insert(header, value);
        }
        for (header, value) in extra {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| format!("{header}: the value is not a valid header value"))?;
            v.set_sensitive(true);
            push_secret(&mut secrets, &value);
            map.insert(header, v);
        }
        // Blank out only values long enough not to mangle ordinary words.
        secrets.retain(|s| s.len() >= 6);
        // What status and logs show: the URL without credentials, query or fragment.
        let destination = crate::shown_url(url.as_str());
        let (client, url) = client(url, tls, timeout)?;
        Ok(Poster {
            client,
            url,
            headers: map,
            gzip,
            secrets,
            destination,
        })
    }

    pub(crate) fn destination(&self) -> &str {
        &self.destination
    }

    /// POSTs `body`; returns the status and the answer's bytes. Connection failures and
    /// unreadable answers are [`SendError`]s.
    pub(crate) async fn post(
        &self,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Vec<u8>), SendError> {
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type);
        let body = if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        };
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::new(format!("{}: {}", self.destination, describe(e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let answer = response.bytes().await.map_err(|e| {
            SendError::new(format!(
                "{}: HTTP {status}, the answer could not be read: {}",
                self.destination,
                describe(e)
            ))
        })?;
        Ok((status, headers, answer.to_vec()))
    }

    /// A short, printable excerpt of a receiver's answer, without our secrets.
    pub(crate) fn excerpt(&self, answer: &[u8]) -> String {
        let mut text: String = String::from_utf8_lossy(answer)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "[redacted]");
        }
        let text = text.trim();
        if text.chars().count() > EXCERPT {
            let cut: String = text.chars().take(EXCERPT).collect();
            format!("{cut}...")
        } else {
            text.to_string()
        }
    }

    /// The error for a non-2xx answer to a whole request.
    pub(crate) fn refused(
        &self,
        status: reqwest::StatusCode,
        answer: &[u8],
        hint: &str,
    ) -> SendError {
        let excerpt = self.excerpt(answer);
        let mut reason = format!("{}: HTTP {status}", self.destination);
        if !excerpt.is_empty() {
            let _ = write!(reason, ": {excerpt}");
        }
        if !hint.is_empty() {
            let _ = write!(reason, " ({hint})");
        }
        SendError::new(reason)
    }
}

/// Headers the sink sets itself: a configured one would be sent twice or contradict the
/// body.
const RESERVED: &[HeaderName] = &[
    CONTENT_TYPE,
    CONTENT_ENCODING,
    reqwest::header::CONTENT_LENGTH,
    reqwest::header::HOST,
    reqwest::header::TRANSFER_ENCODING,
];

/// Remembers a header value to blank out of receivers' answers: the whole value and, for
/// `Scheme credentials` values, the credentials alone.
fn push_secret(secrets: &mut Vec<String>, value: &str) {
    secrets.push(value.to_string());
    if let Some((_, credentials)) = value.split_once(' ') {
        secrets.push(credentials.trim().to_string());
    }
}

/// What a non-2xx status most likely means, for the status line.
pub(crate) fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "the receiver refused the credentials: check the token or headers",
        404 => "no such endpoint: check the URL",
        413 => "the batch is too large for the receiver: lower batch_max",
        429 => "the receiver asks to slow down",
        400..=499 => "the receiver refused the whole batch: check the sink's settings",
        _ => "",
    }
}

/// A reqwest error with its causes (refused connection, TLS alert), without the URL (it
/// may carry credentials; the destination is named by the caller).
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
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        // Audit JSON compresses well at the fastest level; higher levels cost CPU the
        // gateway would rather spend on requests.
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// The client for a sink's TLS settings. With a `ca`, only that CA is trusted. A
/// `server_name` is the name the certificate must carry when the URL names the receiver
/// otherwise (an IP address, an internal alias): the request goes to that name (SNI,
/// certificate check and `Host`), and the name is resolved to the URL's host.
fn client(
    mut url: reqwest::Url,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<(reqwest::Client, reqwest::Url), String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &tls.ca {
        let pem =
            std::fs::read(ca).map_err(|e| format!("ca: cannot read {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca: {} holds no PEM certificate: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("ca: {} holds no PEM certificate", ca.display()));
        }
        builder = builder.tls_certs_only(certs);
    }
    if let Some((cert, key)) = &tls.client_cert {
        let mut pem = std::fs::read(cert)
            .map_err(|e| format!("client_cert: cannot read {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key)
                .map_err(|e| format!("client_key: cannot read {}: {e}", key.display()))?,
        );
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            format!(
                "client_cert, client_key: {} and {} are not a PEM certificate chain and key: {e}",
                cert.display(),
                key.display()
            )
        })?;
        builder = builder.identity(identity);
    }
    if let Some(name) = &tls.server_name {
        if url.scheme() != "https" {
            return Err("server_name needs an https:// URL".into());
        }
        let host = url
            .host_str()
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        url.set_host(Some(name))
            .map_err(|e| format!("server_name: {name:?} is not a host name: {e}"))?;
        builder = builder.dns_resolver(Arc::new(ResolveTo {
            name: name.to_ascii_lowercase(),
            host,
        }));
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", describe(e)))?;
    Ok((client, url))
}

/// Resolves `server_name` to the addresses of the URL's real host (looked up at each
/// connection, so a changed address is followed), and other names as usual.
struct ResolveTo {
    name: String,
    host: String,
}

impl reqwest::dns::Resolve for ResolveTo {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let wanted = if name.as_str().eq_ignore_ascii_case(&self.name) {
            self.host.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((wanted.as_str(), 0))
                .await?
                .collect();
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The `kind = "http"` transport.
pub struct HttpTransport {
    poster: Poster,
    preset: HttpPreset,
    index: Option<String>,
}

impl HttpTransport {
    pub fn new(settings: &HttpSink, timeout: Duration) -> Result<HttpTransport, String> {
        let mut url = reqwest::Url::parse(&settings.url)
            .map_err(|e| format!("url: {} is not a URL: {e}", crate::shown_url(&settings.url)))?;
        let mut extra = Vec::new();
        match settings.preset {
            HttpPreset::Json => {}
            HttpPreset::SplunkHec => {
                url = hec_url(url)?;
                let token = settings
                    .token
                    .as_ref()
                    .ok_or("preset = \"splunk-hec\" needs the HEC token")?
                    .read()
                    .map_err(|e| format!("token: {e}"))?;
                extra.push((
                    reqwest::header::AUTHORIZATION,
                    format!("Splunk {}", token.trim()),
                ));
            }
            HttpPreset::Elasticsearch => {
                if !url.path().ends_with("/_bulk") {
                    let path = format!("{}/_bulk", url.path().trim_end_matches('/'));
                    url.set_path(&path);
                }
            }
        }
        let poster = Poster::new(
            url,
            &settings.tls,
            &settings.headers,
            extra,
            settings.gzip,
            timeout,
        )?;
        Ok(HttpTransport {
            poster,
            preset: settings.preset,
            index: settings.index.clone(),
        })
    }
}

/// The HEC event endpoint for what the user gave.
fn hec_url(mut url: reqwest::Url) -> Result<reqwest::Url, String> {
    let path = url.path().trim_end_matches('/').to_string();
    if path.ends_with("/services/collector/raw") || path.contains("/services/collector/raw/") {
        return Err(
            "url: the HEC raw endpoint cannot keep records whole: use /services/collector/event"
                .into(),
        );
    }
    if path.is_empty() {
        url.set_path("/services/collector/event");
    } else if path.ends_with("/services/collector") {
        url.set_path(&format!("{path}/event"));
    }
    Ok(url)
}

impl Transport for HttpTransport {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>> {
        async move {
            match self.preset {
                HttpPreset::Json => self.send_json(batch).await,
                HttpPreset::SplunkHec => self.send_hec(batch).await,
                HttpPreset::Elasticsearch => self.send_bulk(batch).await,
            }
        }
        .boxed()
    }

    fn destination(&self) -> String {
        self.poster.destination().to_string()
    }
}

impl HttpTransport {
    async fn send_json(&self, batch: &Batch) -> Result<Delivered, SendError> {
        let mut body = String::with_capacity(batch.records.len() * 700 + 2);
        body.push('[');
        for (i, record) in batch.records.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            record.write_json(&batch.origin, &mut body);
        }
        body.push(']');
        let (status, _, answer) = self
            .poster
            .post("application/json", body.into_bytes())
            .await?;
        if status.is_success() {
            Ok(Delivered::default())
        } else {
            Err(self.poster.refused(status, &answer, hint(status)))
        }
    }

    async fn send_hec(&self, batch: &Batch) -> Result<Delivered, SendError> {
        let mut delivered = Delivered::default();
        let mut from = 0;
        while from < batch.records.len() {
            let mut body = String::with_capacity((batch.records.len() - from) * 900);
            for record in &batch.records[from..] {
                hec_event(record, &batch.origin, self.index.as_deref(), &mut body);
            }
            let (status, _, answer) = self
                .poster
                .post("application/json", body.into_bytes())
                .await?;
            if status.is_success() {
                return Ok(delivered);
            }
            let parsed: Option<HecAnswer> = serde_json::from_slice(&answer).ok();
            match parsed {
                // Only a verdict on the event itself (its format, a missing or blank event
                // field, its indexed fields) refuses that one event for good. HEC also
                // names an event with errors that are about the token or the index (code 7,
                // "Incorrect index"): those would refuse every event the same way, so they
                // fail the delivery and are retried until someone fixes them.
                Some(HecAnswer {
                    text,
                    code: code @ Some(6 | 12 | 13 | 15),
                    invalid_event_number: Some(n),
                }) if status.is_client_error() && n < batch.records.len() - from => {
                    // HEC indexed the events before `n`, refused `n`, and did not look at
                    // the rest: those go again, now.
                    delivered.rejected.push(Rejected {
                        record: from + n,
                        reason: format!(
                            "Splunk HEC refused the event (code {}: {})",
                            code.map_or("?".into(), |c| c.to_string()),
                            self.poster.excerpt(text.unwrap_or_default().as_bytes())
                        ),
                    });
                    from += n + 1;
                }
                _ => {
                    let hint = match parsed.and_then(|a| a.code) {
                        Some(1..=4) => "check the HEC token",
                        Some(7) => "the index is not allowed for this token",
                        Some(9) => "HEC is busy",
                        Some(10 | 11) => {
                            "the token has indexer acknowledgement on, which this sink does not use: turn it off for this token"
                        }
                        _ => hint(status),
                    };
                    return Err(self.poster.refused(status, &answer, hint));
                }
            }
        }
        Ok(delivered)
    }

    async fn send_bulk(&self, batch: &Batch) -> Result<Delivered, SendError> {
        let index = self.index.as_deref().unwrap_or("portcullis-audit");
        let mut body = Vec::with_capacity(batch.records.len() * 1500);
        let fallback = fallback_time(batch);
        let index_json = serde_json::Value::String(index.into()).to_string();
        for (i, record) in batch.records.iter().enumerate() {
            let id = serde_json::Value::String(document_id(record, &batch.origin)).to_string();
            body.extend_from_slice(b"{\"create\":{\"_index\":");
            body.extend_from_slice(index_json.as_bytes());
            body.extend_from_slice(b",\"_id\":");
            body.extend_from_slice(id.as_bytes());
            body.extend_from_slice(b"}}\n");
            crate::ecs::write_document(record, &batch.origin, &fallback[i], &mut body);
            body.push(b'\n');
        }
        let (status, _, answer) = self.poster.post("application/x-ndjson", body).await?;
        if !status.is_success() {
            return Err(self.poster.refused(status, &answer, hint(status)));
        }
        let parsed: BulkAnswer<'_> = serde_json::from_slice(&answer).map_err(|e| {
            SendError::new(format!(
                "{}: the _bulk answer is not understood ({e}): {}",
                self.poster.destination(),
                self.poster.excerpt(&answer)
            ))
        })?;
        let mut delivered = Delivered::default();
        if !parsed.errors {
            return Ok(delivered);
        }
        let items: Vec<std::collections::BTreeMap<String, BulkItem>> = parsed
            .items
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|e| {
                SendError::new(format!(
                    "{}: the _bulk items are not understood: {e}",
                    self.poster.destination()
                ))
            })?
            .unwrap_or_default();
        if items.len() != batch.records.len() {
            return Err(SendError::new(format!(
                "{}: the _bulk answer has {} items for {} documents",
                self.poster.destination(),
                items.len(),
                batch.records.len()
            )));
        }
        let mut again = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(item) = item.values().next() else {
                continue;
            };
            let describe = || {
                item.error.as_ref().map_or_else(String::new, |e| {
                    self.poster.excerpt(
                        format!(
                            "{}: {}",
                            e.kind.as_deref().unwrap_or("error"),
                            e.reason.as_deref().unwrap_or("")
                        )
                        .as_bytes(),
                    )
                })
            };
            let kind = item.error.as_ref().and_then(|e| e.kind.as_deref());
            match item.status {
                200..=299 | 409 => {}
                // Only the document's own fault refuses it for good. Anything else (no
                // right to write the index, an index missing or closed, a read-only cluster
                // past its disk watermark, an unknown answer) is about the cluster or the
                // configuration, would refuse every document alike, and is retried.
                400 if kind.is_some_and(is_document_error) => delivered.rejected.push(Rejected {
                    record: i,
                    reason: format!("{index} refused the document: HTTP 400 {}", describe()),
                }),
                _ => again.push(format!("{} {}", item.status, describe())),
            }
        }
        if !batch.records.is_empty() && delivered.rejected.len() == batch.records.len() {
            // Every document refused as malformed: more likely a mapping or pipeline that
            // refuses everything than a batch of bad documents. Keep them, and say so.
            return Err(SendError::new(format!(
                "{}: {index} refused every document of the batch (first: {}); the batch is sent again, check the index's mapping",
                self.poster.destination(),
                delivered.rejected[0].reason
            )));
        }
        if let Some(first) = again.first() {
            // Sending the whole batch again is safe: the documents stored now answer 409
            // next time and count as delivered, and the refused ones are refused again
            // and reported then. The engine's backoff gives a busy cluster room.
            return Err(SendError::new(format!(
                "{}: {} of {} documents were not stored (first: {first}); the batch is sent again",
                self.poster.destination(),
                again.len(),
                batch.records.len()
            )));
        }
        Ok(delivered)
    }
}

#[derive(Deserialize)]
struct HecAnswer {
    text: Option<String>,
    code: Option<i64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
}

#[derive(Deserialize)]
struct BulkAnswer<'a> {
    #[serde(default)]
    errors: bool,
    #[serde(borrow)]
    items: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    error: Option<BulkError>,
}

#[derive(Deserialize)]
struct BulkError {
    #[serde(rename = "type")]
    kind: Option<String>,
    reason: Option<String>,
}

/// One HEC event object, appended to `out`.
fn hec_event(record: &Record, origin: &str, index: Option<&str>, out: &mut String) {
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        fields.insert(k.into(), serde_json::Value::String(v));
    };
    put("record", record.kind().into());
    put("origin", origin.into());
    let (time, host) = match record {
        Record::Event(e) => {
            put("event_id", e.event.id.clone());
            put("leaf_index", e.leaf_index.to_string());
            put("event_type", e.event_type.clone());
            put("outcome", e.outcome.clone());
            if let Some(target) = &e.event.target {
                put("target", target.clone());
            }
            (epoch_seconds(&e.event.time), e.event.gateway.as_str())
        }
        Record::Checkpoint(c) => {
            put("size", c.size.to_string());
            (epoch_seconds(&c.time), origin)
        }
        Record::Omitted(o) => {
            put("leaf_index", o.leaf_index.to_string());
            (None, origin)
        }
    };
    out.push('{');
    if let Some(time) = time {
        let _ = write!(out, "\"time\":{time},");
    }
    out.push_str("\"host\":");
    out.push_str(&serde_json::Value::String(host.into()).to_string());
    out.push_str(",\"source\":\"portcullis\",\"sourcetype\":\"portcullis:audit\",");
    if let Some(index) = index {
        out.push_str("\"index\":");
        out.push_str(&serde_json::Value::String(index.into()).to_string());
        out.push(',');
    }
    out.push_str("\"fields\":");
    out.push_str(&serde_json::Value::Object(fields).to_string());
    out.push_str(",\"event\":");
    record.write_json(origin, out);
    out.push('}');
}

/// RFC 3339 as HEC's `time`: epoch seconds with milliseconds.
fn epoch_seconds(time: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    let ms = t.timestamp_millis();
    Some(format!(
        "{}.{:03}",
        ms.div_euclid(1000),
        ms.rem_euclid(1000)
    ))
}

/// The error types with which Elasticsearch and OpenSearch refuse a document for what it
/// holds: sending it again cannot help.
fn is_document_error(kind: &str) -> bool {
    matches!(
        kind,
        "mapper_parsing_exception"
            | "document_parsing_exception"
            | "strict_dynamic_mapping_exception"
            | "illegal_argument_exception"
            | "document_source_missing_exception"
    )
}

/// The `_id` of a record's document: stable, so a resend is recognised. An omitted run's id
/// names its length too: a run sent again after a restart can be longer (the log grew), and
/// must not be taken for the shorter one already stored. The origin is hashed, so two
/// origins never share ids and an id stays under the 512-byte limit.
pub fn document_id(record: &Record, origin: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match record {
        Record::Event(e) => clean(&e.event.id),
        Record::Checkpoint(c) => format!("checkpoint-{}-{}", origin_tag(origin), c.size),
        Record::Omitted(o) => format!(
            "omitted-{}-{}-{}",
            origin_tag(origin),
            o.leaf_index,
            o.leaf_hashes.len()
        ),
    }
}

/// The first 16 hex digits of the origin's SHA-256: the same for one log, different for two.
fn origin_tag(origin: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(origin.as_bytes())[..8])
}

/// For each record, a time to index it under when it has none of its own (an omitted run):
/// the nearest earlier record's time in the batch, else the nearest later one, else now.
fn fallback_time(batch: &Batch) -> Vec<String> {
    let own = |r: &Record| match r {
        Record::Event(e) => Some(e.event.time.clone()),
        Record::Checkpoint(c) => Some(c.time.clone()),
        Record::Omitted(_) => None,
    };
    let times: Vec<Option<String>> = batch.records.iter().map(own).collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..times.len())
        .map(|i| {
            times[..=i]
                .iter()
                .rev()
                .flatten()
                .next()
                .or_else(|| times[i..].iter().flatten().next())
                .cloned()
                .unwrap_or_else(|| now.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hec_urls_end_at_the_event_endpoint() {
        let url = |s: &str| hec_url(reqwest::Url::parse(s).unwrap()).map(|u| u.to_string());
        assert_eq!(
            url("https://splunk:8088").unwrap(),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            url("https://splunk:8088/services/collector/").unwrap(),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            url("https://splunk:8088/services/collector/event").unwrap(),
            "https://splunk:8088/services/collector/event"
        );
        assert!(url("https://splunk:8088/services/collector/raw").is_err());
    }

    #[test]
    fn hec_time_is_epoch_seconds_with_milliseconds() {
        assert_eq!(
            epoch_seconds("2026-12-06T10:00:00.042Z").as_deref(),
            Some("1796551200.042")
        );
    }

    #[test]
    fn excerpts_are_short_and_without_secrets() {
        let poster = Poster::new(
            reqwest::Url::parse("http://user:pw@siem:9/x?token=abc").unwrap(),
            &ClientTls::default(),
            &[("X-Key".to_string(), Secret::Literal("s3cret-value".into()))].into(),
            vec![],
            false,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(poster.destination(), "http://siem:9/x");
        let text = poster.excerpt(format!("bad key s3cret-value\n{}", "x".repeat(1000)).as_bytes());
        assert!(text.starts_with("bad key [redacted] x"), "{text}");
        let poster = Poster::new(
            reqwest::Url::parse("http://siem:9/").unwrap(),
            &ClientTls::default(),
            &Default::default(),
            vec![(
                reqwest::header::AUTHORIZATION,
                "Splunk 1234-abcd-5678".into(),
            )],
            false,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            poster.excerpt(b"token 1234-abcd-5678 is disabled"),
            "token [redacted] is disabled"
        );
        let e = Poster::new(
            reqwest::Url::parse("http://siem:9/").unwrap(),
            &ClientTls::default(),
            &[(
                "Content-Type".to_string(),
                Secret::Literal("text/plain".into()),
            )]
            .into(),
            vec![],
            false,
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("headers.Content-Type: the sink sets this header itself"),
            "{e}"
        );
        assert!(text.len() < EXCERPT + 10);
    }
}
