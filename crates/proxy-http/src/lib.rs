//! The HTTP API adapter: a reverse proxy in front of REST APIs whose every request goes
//! through the shared guard.
//!
//! A `kind = "http"` target is served at `/http/<target>/...` on the front door and, when it
//! has a `listen` address, at `/...` on a listener of its own (HTTP/1.1 and HTTP/2), for
//! clients that cannot take a path prefix. For each request the adapter
//!
//! 1. identifies the caller from `Authorization: Bearer <OIDC token or API key>` (the
//!    guard's [`Guard::identify`]); the caller's credential never goes upstream;
//! 2. reads the request into what policy decides on ([`request`]): the method, the path
//!    decoded once (ambiguous paths refused), the query, the headers without credentials,
//!    and the body, read whole up to `max_request_body` and parsed when it is JSON (with
//!    duplicate keys refused), classified by the masking detectors for `findings`;
//! 3. asks the guard for the verdict ([`Exchange::decide`]); a hold waits, up to the
//!    target's `hold_wait`, for people to decide (the caller's `Portcullis-Reason` header is
//!    what approvers read);
//! 4. forwards with the upstream's own credential through a pooled client (rustls, HTTP/1.1
//!    or HTTP/2 by ALPN), no redirects followed;
//! 5. masks the answer ([`masking`]): its headers, a JSON body whole, text, NDJSON and
//!    event streams line by line as they arrive; a compressed answer that must be masked is
//!    decompressed first (gzip, deflate) or refused (anything else), never passed unmasked;
//! 6. records one event per request (method, path, route, status, sizes, durations, what was
//!    masked) and, when recording is on, the request and the answer as the caller got it.
//!    The event is written before the answer's last bytes are released: a caller never holds
//!    a complete answer the log does not know of, and if the log cannot be written the answer
//!    is cut off.
//!
//! The crate holds wire code only: it does not use the policy engine, the approvals service
//! or the audit writer, only the guard.
#![forbid(unsafe_code)]

pub mod listener;
pub mod masking;
mod problem;
mod pump;
pub mod request;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode, header};
use portcullis_config::{HttpTarget, TargetSpec};
use portcullis_guard::{
    Exchange, Guard, HoldAsk, HoldChannel, Interruption, Origin, Refusal, RefusalKind, summary,
};
use portcullis_model::{Action, Decision, HttpOperation, HttpRecord, Operation, TargetKind};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::masking::{BodyKind, Maskers};
use crate::problem::{problem, refusal_response};
use crate::request::ReadRequest;
use crate::upstream::Upstream;

/// The header a caller gives its reason for a request that may be held.
pub const REASON_HEADER: &str = "portcullis-reason";

/// How much of a request or answer body the recording keeps.
const RECORDED_BODY: usize = 64 * 1024;

/// Every HTTP target, ready to serve.
pub struct HttpGateway {
    guard: Arc<Guard>,
    targets: HashMap<String, Arc<Upstream>>,
    stopping: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGateway")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpGateway {
    /// Builds the upstream clients of every `http` target: CA files and credentials are read
    /// here, so a missing one fails the start, naming the target.
    pub fn new(
        targets: &BTreeMap<String, TargetSpec>,
        guard: Arc<Guard>,
    ) -> Result<Arc<HttpGateway>, String> {
        let mut built = HashMap::new();
        for (name, spec) in targets {
            if let TargetSpec::Http(http) = spec {
                let upstream =
                    Upstream::build(name, http).map_err(|e| format!("targets.{name}: {e}"))?;
                if http.credential.is_some() && !upstream::is_private_plain_http(&http.upstream) {
                    tracing::warn!(
                        "targets.{name}: the upstream credential is sent over plain http to a host that is not loopback; use https"
                    );
                }
                built.insert(name.clone(), Arc::new(upstream));
            }
        }
        let (stop, stopping) = watch::channel(false);
        Ok(Arc::new(HttpGateway {
            guard,
            targets: built,
            stopping,
            stop,
        }))
    }

    /// Whether any HTTP target is configured.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets with a listener of their own.
    pub fn own_listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = self
            .targets
            .iter()
            .filter_map(|(name, t)| t.spec.listen.map(|l| (name.clone(), l)))
            .collect();
        out.sort();
        out
    }

    /// Held requests stop waiting (they are refused as the gateway stops).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The front door's routes: `/http/<target>` and everything under it.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/http/{target}", axum::routing::any(front_door))
            .route("/http/{target}/", axum::routing::any(front_door))
            .route("/http/{target}/{*rest}", axum::routing::any(front_door))
            .with_state(self.clone())
    }

    /// Serves one request for `target`; `path` is the request's path below the target's
    /// prefix, still percent-encoded.
    pub async fn handle(
        self: &Arc<Self>,
        target: &str,
        path: &str,
        request: Request,
        peer: SocketAddr,
    ) -> Response {
        let (parts, body) = request.into_parts();
        // 1. Who is calling. Nothing about the target is said before this.
        let credential = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(portcullis_identity::bearer_credential);
        let Some(credential) = credential else {
            return problem::unauthenticated(
                "authentication required: send Authorization: Bearer <token or API key>",
            );
        };
        let identity = match self.guard.identify(credential, peer, Some(target)).await {
            Ok(identity) => identity,
            Err(refusal) => return refusal_response(&self.guard, &refusal, None),
        };
        let Some(upstream) = self.targets.get(target).cloned() else {
            return problem(
                StatusCode::NOT_FOUND,
                &format!("no HTTP target named {target:?}"),
                "unknown_target",
            );
        };
        let origin = Origin {
            identity: Arc::new(identity),
            source: peer.to_string(),
            target: Arc::from(target),
            kind: TargetKind::Http,
            session: None,
        };
        let mut exchange = self.guard.exchange(&origin);
        {
            let ev = exchange.event();
            ev.action = Some(parts.method.as_str().to_string());
            ev.http = Some(HttpRecord {
                method: parts.method.as_str().to_string(),
                route: None,
                status: None,
                request_bytes: 0,
                response_bytes: 0,
                upstream_ms: None,
            });
        }
        let Admitted {
            read,
            body,
            json_body,
            mask,
        } = match self
            .admit(&mut exchange, target, &upstream, &parts, path, body)
            .await
        {
            Ok(admitted) => admitted,
            Err(Refused(refusal, status)) => {
                return self.refuse(exchange, &refusal, status).await;
            }
        };
        // 4. Forward, with the masks of the rule and of every allow rule for this caller.
        let maskers = self
            .maskers(mask.as_deref(), &exchange, &origin.target)
            .with_secrets(upstream.secrets.clone());
        if exchange.recording() {
            exchange.record_request(
                "http.request",
                json!({
                    "method": read.method,
                    "path": read.upstream_path_and_query,
                    // The forwarded headers as read (not filtered a second time).
                    "headers": pairs_object(&read.headers),
                    "body": recorded_body(&body, json_body.as_ref()),
                }),
            );
        }
        let started = Instant::now();
        let answer = upstream
            .send(
                &parts.method,
                &read,
                &parts.headers,
                body,
                !maskers.is_empty(),
            )
            .await;
        let (response, permit) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let refusal = match e.fault {
                    Some(fault) => Refusal::upstream(fault, e.message),
                    None => Refusal::new(RefusalKind::UpstreamFailed, e.message),
                };
                return self.refuse(exchange, &refusal, Some(e.status)).await;
            }
        };
        if let Some(http) = &mut exchange.event().http {
            http.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        // 5 and 6: mask, record, release.
        pump::answer(
            exchange,
            response,
            permit,
            maskers,
            &upstream.spec,
            self.guard.clone(),
            parts.method == http::Method::HEAD,
        )
        .await
    }

    /// Steps 2 and 3: reads the request and its body, then decides (and holds) it. What it
    /// returns is allowed (or approved) as read; an `Err` is the refusal to record.
    async fn admit(
        &self,
        exchange: &mut Exchange,
        target: &str,
        upstream: &Upstream,
        parts: &http::request::Parts,
        path: &str,
        body: Body,
    ) -> Result<Admitted, Refused> {
        // 2. What is asked. The event names the path as sent (bounded, masked) until it is
        // read, so a refused request still says what was tried.
        let mut sent: String = path.chars().take(512).collect();
        if let Some(query) = parts.uri.query() {
            sent.push('?');
            sent.extend(query.chars().take(512));
        }
        exchange.event().resource = Some(self.guard.masks().mask_text_default(
            &sent,
            "$.path",
            &mut portcullis_mask::Report::default(),
        ));
        let read = match request::read(
            &parts.method,
            parts.version,
            &parts.uri,
            path,
            &parts.headers,
        ) {
            Ok(read) => read,
            Err(e) => return Err(malformed(e.status, e.message)),
        };
        // The event keeps the path with what the detectors find in it masked (an email or a
        // token in a path); policy decides on the path as sent.
        exchange.event().resource = Some(self.guard.masks().mask_text_default(
            &read.path,
            "$.path",
            &mut portcullis_mask::Report::default(),
        ));
        exchange
            .check_recordable()
            .map_err(|refusal| Refused(refusal, None))?;
        let body = read_body(&parts.headers, body, &upstream.spec)
            .await
            .map_err(|(status, message)| malformed(status, message))?;
        if request::body_overrides_method(&parts.headers, &body) {
            return Err(malformed(
                400,
                "a _method field in the body is refused: the upstream could act on another method than the one decided",
            ));
        }
        let json_body =
            parse_json_body(&parts.headers, &body).map_err(|message| malformed(400, message))?;
        if !body.is_empty() {
            let digest = self.guard.digest(&body);
            let ev = exchange.event();
            ev.arguments = Some(digest);
            if let Some(http) = &mut ev.http {
                http.request_bytes = body.len() as u64;
            }
        }
        let findings = self.classify(&body, json_body.as_ref());
        let detectors = findings.detectors();
        exchange.event().findings = summary(&findings);

        // 3. The decision.
        let op = HttpOperation {
            method: &read.method,
            path: &read.path,
            query: &read.query,
            headers: &read.headers,
            body: json_body.as_ref(),
        };
        let action = Action {
            target,
            target_kind: TargetKind::Http,
            operation: Operation::Http(&op),
            findings: &detectors,
            grants: &[],
        };
        let verdict = exchange.decide(&action);
        if let Some(http) = &mut exchange.event().http {
            http.route = verdict.route.as_deref().map(str::to_string);
        }
        let mask = match &verdict.decision {
            Decision::Deny { reason } => {
                let refusal = Refusal::new(RefusalKind::Denied, reason.to_string()).by(&verdict);
                return Err(Refused(refusal, None));
            }
            Decision::Hold(requirement) => {
                let reason = parts
                    .headers
                    .get(REASON_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                exchange.event().reason.clone_from(&reason);
                let ask = HoldAsk {
                    what: format!("{} {}", read.method, read.path),
                    action: read.method.clone(),
                    resource: Some(read.path.clone()),
                    shown: Some(shown(&read, json_body.as_ref(), &body)),
                    digest: None,
                    reason,
                };
                let mut wait = Wait {
                    until: tokio::time::Instant::now() + upstream.spec.hold_wait,
                    stopping: self.stopping.clone(),
                };
                match exchange
                    .hold(&verdict, requirement.clone(), ask, &mut wait)
                    .await
                {
                    Ok(_released) => None,
                    Err(mut refusal) => {
                        if refusal.kind == RefusalKind::ReasonRequired {
                            refusal
                                .message
                                .push_str(": send it in the Portcullis-Reason header");
                        }
                        return Err(Refused(refusal, None));
                    }
                }
            }
            Decision::Allow { mask } => mask.clone(),
        };
        Ok(Admitted {
            read,
            body,
            json_body,
            mask,
        })
    }

    /// Finishes a refused exchange, records it, and renders the refusal. If the event
    /// cannot be written the caller is told that instead (fail closed either way).
    async fn refuse(&self, exchange: Exchange, refusal: &Refusal, status: Option<u16>) -> Response {
        let finished = exchange.refuse(refusal);
        let mut finished = finished;
        if let Some(http) = &mut finished.event().http {
            http.status = Some(problem::status_of(refusal, status).as_u16());
        }
        if let Err(e) = finished.record().await {
            let refusal = Refusal::audit_unavailable(e);
            return refusal_response(&self.guard, &refusal, None);
        }
        refusal_response(&self.guard, refusal, status)
    }

    /// What the `default` profile's detectors find in the request body.
    fn classify(&self, body: &[u8], json: Option<&Value>) -> portcullis_mask::Report {
        match json {
            Some(json) => self.guard.masks().classify_arguments(json),
            None => {
                let mut report = portcullis_mask::Report::default();
                if let Ok(text) = std::str::from_utf8(body)
                    && !text.is_empty()
                {
                    self.guard
                        .masks()
                        .default_profile()
                        .scan_text(text, "$.body", &mut report);
                }
                report
            }
        }
    }

    /// The masks of the exchange's rules (those it was decided under, whatever a reload put
    /// in force since).
    fn maskers(&self, mask: Option<&str>, exchange: &Exchange, target: &str) -> Maskers {
        let mut names: Vec<Arc<str>> = mask.map(Arc::from).into_iter().collect();
        for name in exchange.masks_for(target) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Maskers::new(
            names
                .iter()
                .filter_map(|n| exchange.masks().profile(n))
                .collect(),
        )
    }
}

/// A request read and let through: what is forwarded, and the masking profile its rule names.
struct Admitted {
    read: ReadRequest,
    body: Bytes,
    json_body: Option<Value>,
    mask: Option<Arc<str>>,
}

/// A refusal, with the HTTP status that overrides its kind's, if any.
struct Refused(Refusal, Option<u16>);

fn malformed(status: u16, message: impl Into<String>) -> Refused {
    Refused(Refusal::new(RefusalKind::Malformed, message), Some(status))
}

async fn front_door(
    State(gateway): State<Arc<HttpGateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let raw = request.uri().path();
    let below = raw.strip_prefix("/http/").unwrap_or("");
    let (target, path) = match below.find('/') {
        Some(i) => (below[..i].to_string(), below[i..].to_string()),
        None => (below.to_string(), "/".to_string()),
    };
    gateway.handle(&target, &path, request, peer).await
}

/// Reads a request body whole, up to the target's cap, giving up when the caller stalls.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    spec: &HttpTarget,
) -> Result<Bytes, (u16, String)> {
    let max = spec.max_request_body;
    let too_large = || {
        (
            413,
            format!(
                "the request body exceeds the target's limit of {max} bytes (max_request_body)"
            ),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > max as u64
    {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(spec.idle_timeout, stream.next()).await {
            Err(_) => {
                return Err((
                    408,
                    format!(
                        "the request body stalled for {:?} (idle_timeout)",
                        spec.idle_timeout
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err((400, format!("the request body broke off: {e}"))),
            Ok(Some(Ok(chunk))) => {
                if out.len() + chunk.len() > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
    Ok(Bytes::from(out))
}

/// The body as JSON when its type says JSON, or when it is a JSON object or array whatever
/// its type says (many servers parse JSON they are sent under another type, so policy reads
/// it as they would). A body typed JSON that does not parse, or any JSON body that repeats a
/// key, is refused: policy would have to guess what the upstream will read.
fn parse_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Option<Value>, String> {
    if body.is_empty() {
        return Ok(None);
    }
    if BodyKind::of(headers) != BodyKind::Json {
        let looks_json = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        if !looks_json {
            return Ok(None);
        }
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Ok(None);
        };
        portcullis_model::json::check_no_duplicate_keys(body)
            .map_err(|e| format!("the JSON body cannot be read one way only: {e}"))?;
        check_case_folded_keys(&value)?;
        return Ok(Some(value));
    }
    portcullis_model::json::check_no_duplicate_keys(body)
        .map_err(|e| format!("the JSON body cannot be read one way only: {e}"))?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body says it is JSON but is not: {e}"))?;
    check_case_folded_keys(&value)?;
    Ok(Some(value))
}

/// Refuses an object whose keys differ only in case (`amount` and `AMOUNT`): Go's
/// encoding/json and .NET's web defaults match field names without case, so policy would read
/// one value and the upstream another. Keys are folded as those libraries fold them
/// (`ſ` is `s`, the Kelvin sign is `k`).
fn check_case_folded_keys(value: &Value) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            let mut folded = std::collections::HashSet::with_capacity(map.len());
            for (key, item) in map {
                let fold: String = key.to_uppercase().to_lowercase();
                if !folded.insert(fold) {
                    return Err(format!(
                        "the JSON body cannot be read one way only: the key {key:?} differs from another only in case"
                    ));
                }
                check_case_folded_keys(item)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_case_folded_keys),
        _ => Ok(()),
    }
}

/// What approvers are shown of a held request (masked by the guard before it is stored).
fn shown(read: &ReadRequest, json: Option<&Value>, body: &[u8]) -> Value {
    let mut shown = json!({ "method": read.method, "path": read.path });
    if !read.query.is_empty() {
        shown["query"] = Value::Array(read.query.iter().map(|(k, v)| json!([k, v])).collect());
    }
    if !read.headers.is_empty() {
        // Headers can change what a request does (a tenant, a content type, a precondition):
        // approvers see them, masked like the rest.
        shown["headers"] = pairs_object(&read.headers);
    }
    let body = recorded_body(body, json);
    if !body.is_null() {
        shown["body"] = body;
    }
    shown
}

/// A body for a recording or an approver: JSON as is, text up to [`RECORDED_BODY`], else
/// its size.
fn recorded_body(body: &[u8], json: Option<&Value>) -> Value {
    if let Some(json) = json {
        return json.clone();
    }
    if body.is_empty() {
        return Value::Null;
    }
    match std::str::from_utf8(body) {
        Ok(text) if text.len() <= RECORDED_BODY => Value::String(text.to_string()),
        Ok(text) => {
            let mut end = RECORDED_BODY;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            json!({ "text": &text[..end], "truncated": true, "bytes": body.len() })
        }
        Err(_) => json!({ "binary": true, "bytes": body.len() }),
    }
}

/// Name and value pairs as a JSON object (the headers of a request as read).
fn pairs_object(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn header_object(headers: &HeaderMap) -> Value {
    let mut object = serde_json::Map::new();
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            object.insert(name.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    Value::Object(object)
}

/// A held HTTP request: nothing can be said to the caller while it waits (HTTP has no
/// progress before the answer), which ends at `hold_wait` or when the gateway stops. A
/// caller that hangs up drops the request, and with it the hold (cancelled).
struct Wait {
    until: tokio::time::Instant,
    stopping: watch::Receiver<bool>,
}

impl HoldChannel for Wait {
    async fn tell(
        &mut self,
        _approval: &portcullis_guard::Approval,
        _round: u64,
    ) -> Result<(), Interruption> {
        Ok(())
    }

    fn every(&self) -> Option<Duration> {
        None
    }

    async fn interrupted(&mut self) -> Interruption {
        tokio::select! {
            () = tokio::time::sleep_until(self.until) => Interruption::WaitOver,
            _ = self.stopping.wait_for(|s| *s) => Interruption::Stopping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn policy_reads_json_bodies_whatever_their_type_says() {
        let json = typed("application/json");
        assert_eq!(
            parse_json_body(&json, br#"{"amount": 900}"#).unwrap(),
            Some(json!({"amount": 900}))
        );
        assert!(
            parse_json_body(&json, b"{nope")
                .unwrap_err()
                .contains("not")
        );
        let dup = br#"{"amount": 1, "amount": 900}"#;
        assert!(
            parse_json_body(&json, dup)
                .unwrap_err()
                .contains("duplicate")
        );
        // Sent as text, read as JSON by many servers: policy reads it too, dups refused.
        let text = typed("text/plain");
        assert_eq!(
            parse_json_body(&text, br#" {"amount": 900}"#).unwrap(),
            Some(json!({"amount": 900}))
        );
        assert!(parse_json_body(&text, dup).is_err());
        assert_eq!(parse_json_body(&text, b"plain words").unwrap(), None);
        assert_eq!(parse_json_body(&HeaderMap::new(), b"").unwrap(), None);
        // Keys that differ only in case, at any depth, as some servers fold them.
        for body in [
            &br#"{"amount": 1, "AMOUNT": 900}"#[..],
            br#"{"a": [{"id": 1, "Id": 2}]}"#,
            "{\"s\": 1, \"\u{17f}\": 2}".as_bytes(),
        ] {
            let err = parse_json_body(&json, body).unwrap_err();
            assert!(err.contains("only in case"), "{err}");
            assert!(parse_json_body(&text, body).is_err());
        }
    }
}
