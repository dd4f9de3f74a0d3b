//! The answer's way back: headers cleaned and masked, the body masked as its kind needs,
//! counted and recorded, the request's event written before the last bytes are released.
//!
//! The body is moved by a task of its own through a bounded channel. When the caller does
//! not take bytes for `idle_timeout` (a slow or stuck client), or the upstream sends none
//! for as long, the task gives up and the upstream connection is released: a slow client
//! cannot hold one forever. The answer's end reaches the caller only once the event is
//! recorded; if it cannot be, the answer ends with an error instead of completing. Without
//! a `Content-Length` the end is the body's end (the last chunk, HTTP/2's end of stream),
//! sent when the task finishes, so every piece goes as soon as it is masked (an event of a
//! stream is not kept waiting for the next one). With a `Content-Length` the last byte
//! completes the answer, so the last piece is kept back until the event is recorded.

use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use portcullis_config::HttpTarget;
use portcullis_guard::{Exchange, Guard, Refusal, RefusalKind, UpstreamFault, summary};
use portcullis_mask::Report;
use portcullis_model::Outcome;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::RECORDED_BODY;
use crate::masking::{BodyKind, Maskers, StreamMasker};
use crate::problem::refusal_response;
use crate::request::connection_listed;

/// Response headers never passed back: hop-by-hop ones, cookies (the caller's `Cookie` is
/// never forwarded, so the upstream's are not the caller's to keep), and `Alt-Svc` (which
/// would point the caller around the gateway).
const NOT_RETURNED: &[&str] = &["set-cookie", "set-cookie2", "alt-svc"];

/// Digests of the unmasked body, dropped from a masked answer: they would let the caller
/// test guesses of a masked value offline.
const BODY_DIGESTS: &[&str] = &[
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "x-goog-hash",
];

/// How the body is transformed on its way.
enum Plan {
    /// As it is (nothing to mask, or a binary body).
    Pass,
    /// Masked as it streams.
    Stream(Box<StreamMasker>),
}

/// A decompressor for an answer that must be masked but came compressed.
enum Inflate {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl Inflate {
    fn of(encoding: &str) -> Option<Inflate> {
        match encoding {
            "gzip" | "x-gzip" => Some(Inflate::Gzip(
                flate2::write::MultiGzDecoder::new(Vec::new()),
            )),
            "deflate" => Some(Inflate::Deflate(
                flate2::write::ZlibDecoder::new(Vec::new()),
            )),
            _ => None,
        }
    }

    /// Decompresses `chunk`, a little at a time, giving up once the output passes `limit`
    /// (a small compressed chunk can expand a thousandfold).
    fn push(&mut self, chunk: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in chunk.chunks(512) {
            let written = match self {
                Inflate::Gzip(d) => d.write_all(piece).map(|()| std::mem::take(d.get_mut())),
                Inflate::Deflate(d) => d.write_all(piece).map(|()| std::mem::take(d.get_mut())),
            };
            let written =
                written.map_err(|e| format!("the compressed answer does not decompress: {e}"))?;
            out.extend_from_slice(&written);
            if out.len() > limit {
                return Err(format!(
                    "the compressed answer expands past {limit} bytes in one piece; it is withheld"
                ));
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<Vec<u8>, String> {
        let out = match self {
            Inflate::Gzip(d) => d.finish(),
            Inflate::Deflate(d) => d.finish(),
        };
        out.map_err(|e| format!("the compressed answer ends early: {e}"))
    }
}

/// Builds the caller's response from the upstream's and starts moving its body.
pub(crate) async fn answer(
    mut exchange: Exchange,
    upstream: reqwest::Response,
    permit: OwnedSemaphorePermit,
    maskers: Maskers,
    spec: &HttpTarget,
    guard: Arc<Guard>,
    head: bool,
) -> Response {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    clean_response_headers(&mut headers);
    let kind = BodyKind::of(&headers);
    // The answer's coding, read once: it decides whether a binary body is sniffed and how a
    // body to mask is decompressed.
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "identity");
    let encoded = encoding.is_some();
    // A body typed as binary is sniffed (masked if it turns out to be text) unless it is
    // compressed, which text never is here: an answer to mask is asked for uncompressed.
    let must_mask = !(maskers.is_empty() || (kind == BodyKind::Binary && encoded));
    let mut report = Report::default();
    let mut inflate = None;
    if !maskers.is_empty() || maskers.has_secrets() {
        maskers.headers(&mut headers, &mut report);
    }
    if must_mask && status == http::StatusCode::PARTIAL_CONTENT {
        let refusal = Refusal::new(
            RefusalKind::UpstreamFailed,
            "the upstream answered with a part of the document (206), which cannot be masked whole; it is withheld",
        );
        return refuse(exchange, &refusal, &guard).await;
    }
    if must_mask {
        match encoding.as_deref() {
            None => {}
            Some(encoding) => match Inflate::of(encoding) {
                Some(decoder) => inflate = Some(decoder),
                None => {
                    let refusal = Refusal::new(
                        RefusalKind::UpstreamFailed,
                        format!(
                            "the answer is compressed with {encoding:?}, which the gateway cannot decompress to mask it; it is withheld"
                        ),
                    );
                    return refuse(exchange, &refusal, &guard).await;
                }
            },
        }
        headers.remove(header::CONTENT_ENCODING);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ETAG);
        for name in BODY_DIGESTS {
            headers.remove(*name);
        }
        let amz: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-checksum-"))
            .cloned()
            .collect();
        for name in amz {
            headers.remove(name);
        }
    }
    let outcome = if status.is_client_error() || status.is_server_error() {
        Outcome::UpstreamError
    } else {
        Outcome::Success
    };
    if let Some(http) = &mut exchange.event().http {
        http.status = Some(status.as_u16());
    }
    let recording = exchange.recording();
    let recorded_headers = recording.then(|| crate::header_object(&headers));

    // An answer without a body is complete once its head is out: its event is recorded
    // first, as for every answer.
    let empty = head
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
        || upstream.content_length() == Some(0) && !must_mask;
    if empty {
        drop(upstream);
        drop(permit);
        if recording {
            exchange.record_answer(
                "http.response",
                json!({ "status": status.as_u16(), "headers": recorded_headers }),
            );
        }
        exchange.event().masked = summary(&report);
        if let Err(e) = exchange.finish(outcome).record().await {
            return refusal_response(&guard, &Refusal::audit_unavailable(e), None);
        }
        let mut response = Response::new(Body::empty());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }

    // A JSON answer to mask is read whole first: a problem is still answerable as a status.
    if must_mask && kind == BodyKind::Json {
        let body = match read_whole(upstream, inflate, spec).await {
            Ok(body) => body,
            Err(refusal) => return refuse(exchange, &refusal, &guard).await,
        };
        drop(permit);
        let masked = match maskers.json_body(&body, &mut report) {
            Ok(masked) => masked,
            Err(message) => {
                let refusal = Refusal::new(RefusalKind::UpstreamFailed, message);
                return refuse(exchange, &refusal, &guard).await;
            }
        };
        {
            let ev = exchange.event();
            ev.masked = summary(&report);
            if let Some(http) = &mut ev.http {
                http.response_bytes = masked.len() as u64;
            }
        }
        if recording {
            let body = serde_json::from_slice::<Value>(&masked).unwrap_or(Value::Null);
            exchange.record_answer(
                "http.response",
                json!({ "status": status.as_u16(), "headers": recorded_headers, "body": body }),
            );
        }
        if let Err(e) = exchange.finish(outcome).record().await {
            return refusal_response(&guard, &Refusal::audit_unavailable(e), None);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(masked.len()));
        let mut response = Response::new(Body::from(masked));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }

    let plan = if must_mask {
        Plan::Stream(Box::new(StreamMasker::new(
            maskers,
            kind,
            spec.max_response_body,
        )))
    } else {
        Plan::Pass
    };
    let hold_last = headers.contains_key(header::CONTENT_LENGTH);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let idle = spec.idle_timeout;
    let limit = spec.max_response_body;
    tokio::spawn(async move {
        let moved = Moved {
            exchange,
            upstream,
            plan,
            inflate,
            report,
            tx,
            idle,
            hold_last,
            outcome,
            status: status.as_u16(),
            recorded_headers,
            limit,
            permit: Some(permit),
        };
        moved.run().await;
    });
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The state of a body being moved.
struct Moved {
    exchange: Exchange,
    upstream: reqwest::Response,
    plan: Plan,
    inflate: Option<Inflate>,
    report: Report,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    idle: std::time::Duration,
    /// The answer has a `Content-Length`: its last piece would complete it, so it waits for
    /// the event to be recorded (see the module documentation).
    hold_last: bool,
    outcome: Outcome,
    status: u16,
    recorded_headers: Option<Value>,
    /// The most a compressed piece may expand to.
    limit: usize,
    /// The upstream slot, given back as soon as the upstream's body is read (before any
    /// wait on the caller).
    permit: Option<OwnedSemaphorePermit>,
}

impl Moved {
    async fn run(mut self) {
        let mut held: Option<Bytes> = None;
        let mut sent: u64 = 0;
        let mut recorded = Vec::new();
        let failure = loop {
            let chunk = match tokio::time::timeout(self.idle, self.upstream.chunk()).await {
                Err(_) => {
                    self.exchange.upstream_failed(UpstreamFault::Timeout);
                    break Some(format!(
                        "the upstream sent nothing for {:?} (idle_timeout)",
                        self.idle
                    ));
                }
                Ok(Err(e)) => {
                    self.exchange.upstream_failed(UpstreamFault::Closed);
                    break Some(format!(
                        "the upstream broke off the answer: {}",
                        e.without_url()
                    ));
                }
                Ok(Ok(None)) => break None,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let out = match self.transform(&chunk) {
                Ok(out) => out,
                Err(message) => break Some(message),
            };
            if out.is_empty() {
                continue;
            }
            if self.exchange.recording() && recorded.len() < RECORDED_BODY {
                let room = RECORDED_BODY - recorded.len();
                recorded.extend_from_slice(&out[..out.len().min(room)]);
            }
            sent += out.len() as u64;
            let ready = if self.hold_last {
                held.replace(out)
            } else {
                Some(out)
            };
            if let Some(ready) = ready
                && !self.send(ready).await
            {
                self.exchange.record_caller_left();
                break Some("the caller stopped reading the answer".to_string());
            }
        };
        // The upstream's part is over: its slot is free before any last wait on the caller.
        drop(self.permit.take());
        let tail = match failure {
            Some(_) => Ok(Bytes::new()),
            None => self.finish_transform(),
        };
        let failure = match tail {
            Ok(tail) if !tail.is_empty() => {
                sent += tail.len() as u64;
                if self.exchange.recording() && recorded.len() < RECORDED_BODY {
                    let room = RECORDED_BODY - recorded.len();
                    recorded.extend_from_slice(&tail[..tail.len().min(room)]);
                }
                held = Some(match held.take() {
                    Some(h) => Bytes::from([&h[..], &tail[..]].concat()),
                    None => tail,
                });
                failure
            }
            Ok(_) => failure,
            Err(message) => Some(message),
        };
        {
            let ev = self.exchange.event();
            ev.masked = summary(&self.report);
            if let Some(http) = &mut ev.http {
                http.response_bytes = sent;
            }
            if let Some(why) = &failure {
                ev.detail = Some(why.clone());
            }
        }
        if self.exchange.recording() {
            let body = match std::str::from_utf8(&recorded) {
                Ok(text) => Value::String(text.to_string()),
                Err(_) => json!({ "binary": true, "bytes": sent }),
            };
            let answer = json!({
                "status": self.status,
                "headers": self.recorded_headers.take(),
                "body": body,
                "truncated": sent > recorded.len() as u64,
            });
            self.exchange.record_answer("http.response", answer);
        }
        let outcome = if failure.is_some() {
            Outcome::Failed
        } else {
            self.outcome
        };
        let finished = self.exchange.finish(outcome);
        if let Err(e) = finished.record().await {
            tracing::error!("an HTTP answer is cut off: its event cannot be recorded: {e}");
            let _ = self
                .tx
                .send(Err(std::io::Error::other(
                    "the audit log cannot record this answer",
                )))
                .await;
            return;
        }
        match failure {
            Some(why) => {
                // Whatever was complete goes; the answer then ends in an error, so the caller
                // cannot take a cut answer for a whole one.
                if let Some(held) = held {
                    let _ = send(&self.tx, self.idle, held).await;
                }
                let _ = send_error(&self.tx, self.idle, why).await;
            }
            None => {
                if let Some(held) = held {
                    let _ = send(&self.tx, self.idle, held).await;
                }
            }
        }
    }

    async fn send(&self, bytes: Bytes) -> bool {
        send(&self.tx, self.idle, bytes).await
    }

    fn transform(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        let plain;
        let chunk = match &mut self.inflate {
            Some(inflate) => {
                plain = inflate.push(chunk, self.limit)?;
                &plain[..]
            }
            None => chunk,
        };
        match &mut self.plan {
            Plan::Pass => Ok(Bytes::copy_from_slice(chunk)),
            Plan::Stream(masker) => masker.push(chunk),
        }
    }

    fn finish_transform(&mut self) -> Result<Bytes, String> {
        let rest = match self.inflate.take() {
            Some(inflate) => inflate.finish()?,
            None => Vec::new(),
        };
        match &mut self.plan {
            Plan::Pass => Ok(Bytes::from(rest)),
            Plan::Stream(masker) => {
                let mut out = masker.push(&rest)?.to_vec();
                out.extend_from_slice(&masker.finish()?);
                self.report.merge(std::mem::take(&mut masker.report));
                Ok(Bytes::from(out))
            }
        }
    }
}

/// Ends the caller's answer with an error, unless the caller takes nothing for `idle`.
async fn send_error(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    idle: std::time::Duration,
    why: String,
) -> bool {
    matches!(
        tokio::time::timeout(idle, tx.send(Err(std::io::Error::other(why)))).await,
        Ok(Ok(()))
    )
}

/// Sends a piece to the caller; false when it is gone or took nothing for `idle`.
async fn send(
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    idle: std::time::Duration,
    bytes: Bytes,
) -> bool {
    matches!(
        tokio::time::timeout(idle, tx.send(Ok(bytes))).await,
        Ok(Ok(()))
    )
}

/// Reads a whole answer (decompressing it when needed), up to `max_response_body`.
async fn read_whole(
    mut upstream: reqwest::Response,
    mut inflate: Option<Inflate>,
    spec: &HttpTarget,
) -> Result<Vec<u8>, Refusal> {
    let max = spec.max_response_body;
    // A limit of the gateway's, or an answer it cannot decompress: refused, not counted as
    // the upstream's failure.
    let refused = |message: String| Refusal::new(RefusalKind::UpstreamFailed, message);
    let too_large = || {
        refused(format!(
            "the answer must be masked and is larger than the target's max_response_body ({max} bytes); it is withheld"
        ))
    };
    if upstream.content_length().is_some_and(|l| l > max as u64) && inflate.is_none() {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(spec.idle_timeout, upstream.chunk()).await {
            Err(_) => {
                return Err(Refusal::upstream(
                    UpstreamFault::Timeout,
                    format!(
                        "the upstream sent nothing for {:?} (idle_timeout)",
                        spec.idle_timeout
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(Refusal::upstream(
                    UpstreamFault::Closed,
                    format!("the upstream broke off the answer: {}", e.without_url()),
                ));
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        match &mut inflate {
            Some(d) => out.extend_from_slice(&d.push(&chunk, max).map_err(refused)?),
            None => out.extend_from_slice(&chunk),
        }
        if out.len() > max {
            return Err(too_large());
        }
    }
    if let Some(d) = inflate {
        out.extend_from_slice(&d.finish().map_err(refused)?);
        if out.len() > max {
            return Err(too_large());
        }
    }
    Ok(out)
}

async fn refuse(exchange: Exchange, refusal: &Refusal, guard: &Arc<Guard>) -> Response {
    let mut finished = exchange.refuse(refusal);
    if let Some(http) = &mut finished.event().http {
        http.status = Some(502);
    }
    if let Err(e) = finished.record().await {
        return refusal_response(guard, &Refusal::audit_unavailable(e), None);
    }
    refusal_response(guard, refusal, None)
}

/// Drops hop-by-hop headers, the names `Connection` lists, and [`NOT_RETURNED`].
fn clean_response_headers(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in portcullis_config::targets::HOP_BY_HOP
        .iter()
        .chain(NOT_RETURNED)
    {
        headers.remove(*name);
    }
}
