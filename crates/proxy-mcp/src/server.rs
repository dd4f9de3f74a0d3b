//! The streamable-HTTP front door: `/mcp/<target>` for both eras of MCP, and the OAuth
//! protected-resource metadata (RFC 9728) that tells a client where to get a token.
//!
//! Checks run in the order that leaks least: Origin (DNS rebinding), target, credentials,
//! size, shape. A caller without valid credentials learns only where to authenticate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use portcullis_guard::{Refusal, RefusalKind};
use serde_json::json;
use tokio::sync::mpsc;

use crate::era::{self, RequestFacts};
use crate::gateway::{Caller, Gateway, IncomingRequest, Pump, Rejection, Session, TargetRuntime};
use crate::headers::check_modern_headers;
use crate::jsonrpc::{self, Message, code};
use crate::link::Inbound;
use crate::stream::{StreamBuf, parse_event_id, sse_event};

/// The router of the front door. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/mcp/{target}",
            get(get_stream).post(post_message).delete(delete_session),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp/{target}",
            get(resource_metadata),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(gateway)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refusal(r: Rejection) -> Response {
    json_response(r.status, r.body)
}

fn plain_error(status: StatusCode, code: i64, message: &str) -> Response {
    json_response(status, jsonrpc::error(None, code, message, None))
}

/// Records a request refused at the front door after authentication (oversized, bad params,
/// unsupported version, headers that disagree with the body), so every refusal is audited.
///
/// Boxed: rejections are rare, and their future would otherwise be part of every message's.
fn record_rejection<'a>(
    gateway: &'a Gateway,
    caller: &'a Caller,
    target: &'a str,
    method: Option<&'a str>,
    resource: Option<&'a str>,
    detail: String,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let Some(target) = gateway.targets.get(target) else {
            return;
        };
        let mut exchange = gateway
            .guard
            .exchange(&gateway.origin(caller, target, None));
        let ev = exchange.event();
        ev.action = method.map(str::to_string);
        ev.resource = resource.map(str::to_string);
        let refusal = Refusal::new(RefusalKind::Malformed, detail);
        if let Err(audit) = exchange.refuse(&refusal).record().await {
            tracing::error!("cannot record a rejected request: {audit}");
        }
    })
}

/// The allowed-origin check: absent Origin passes (non-browser callers); a present one must
/// match the configured list, where `*` in a pattern stands for any run of characters.
fn origin_allowed(gateway: &Gateway, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    gateway
        .settings
        .allowed_origins
        .iter()
        .any(|pattern| wildcard_match(pattern, origin))
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len() && text.starts_with(head) && {
                let rest = &text[head.len()..];
                (0..=rest.len())
                    .any(|i| rest.is_char_boundary(i) && wildcard_match(tail, &rest[i..]))
            }
        }
    }
}

fn metadata_url(gateway: &Gateway, target: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/mcp/{target}",
        gateway.settings.public_url
    )
}

async fn resource_metadata(
    State(gateway): State<Arc<Gateway>>,
    Path(target): Path<String>,
) -> Response {
    // Served for any name, like the 401 challenge that points here: a 404 for unknown
    // names would tell an unauthenticated caller which targets exist. The document says
    // only where to authenticate, the same for every target.
    let body = json!({
        "resource": format!("{}/mcp/{target}", gateway.settings.public_url),
        "authorization_servers": gateway.guard.issuers(),
        "bearer_methods_supported": ["header"],
        "resource_name": format!("Portcullis gateway to {target}"),
    });
    json_response(StatusCode::OK, body.to_string())
}

/// Origin, target and credentials: the checks every method shares.
async fn admit(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    addr: SocketAddr,
    target: &str,
) -> Result<(Caller, Arc<TargetRuntime>), Response> {
    if !origin_allowed(gateway, headers) {
        return Err(plain_error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "this Origin is not allowed (gateway.allowed_origins)",
        ));
    }
    let challenge = |error: Option<(&str, &str)>| {
        let mut value = format!(
            "Bearer resource_metadata=\"{}\"",
            metadata_url(gateway, target)
        );
        if let Some((code, description)) = error {
            value.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                description.replace('"', "'")
            ));
        }
        value
    };
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(portcullis_identity::bearer_credential);
    let Some(credential) = credential else {
        let mut response = plain_error(
            StatusCode::UNAUTHORIZED,
            code::INVALID_REQUEST,
            "authentication required: send Authorization: Bearer <token or API key>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge(None)).expect("ascii"),
        );
        return Err(response);
    };
    match gateway.guard.identify(credential, addr, Some(target)).await {
        // Only an authenticated caller learns which targets exist: before, every path
        // answers alike (401), so target names cannot be probed without a credential.
        Ok(identity) => match gateway.targets.get(target).cloned() {
            Some(runtime) => Ok((
                Caller {
                    identity: Arc::new(identity),
                    source: addr.to_string(),
                },
                runtime,
            )),
            None => Err(plain_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                &format!("no MCP target named {target:?}"),
            )),
        },
        Err(refusal) if refusal.kind == RefusalKind::Throttled => Err(throttled(
            refusal
                .retry_after
                .unwrap_or(std::time::Duration::from_secs(1)),
        )),
        Err(refusal) => {
            let message = refusal.message;
            let mut response = plain_error(
                StatusCode::UNAUTHORIZED,
                code::INVALID_REQUEST,
                &format!("invalid credentials: {message}"),
            );
            let value = challenge(Some(("invalid_token", &message)));
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&value)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\"")),
            );
            Err(response)
        }
    }
}

/// 429 for a source over its budget of failed authentications; its credential is not
/// checked (see `portcullis_limits::FailureThrottle`).
fn throttled(retry_after: std::time::Duration) -> Response {
    let seconds = retry_after.as_secs().max(1);
    let mut response = plain_error(
        StatusCode::TOO_MANY_REQUESTS,
        code::INVALID_REQUEST,
        &format!(
            "too many failed authentications from your address; credentials from it are not checked for {seconds}s (gateway.limits.max_auth_failures)"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok())
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream") || v.contains("*/*"))
}

async fn post_message(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, runtime) = match Box::pin(admit(&gateway, &headers, addr, &target)).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let max = gateway.settings.max_bytes;
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            let message =
                format!("message exceeds the limit of {max} bytes (gateway.max_message_bytes)");
            record_rejection(&gateway, &caller, &target, None, None, message.clone()).await;
            return plain_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::INVALID_REQUEST,
                &message,
            );
        }
    };
    let message = match Message::parse(&bytes, max) {
        Ok(m) => m,
        Err(e) => {
            let mut exchange = gateway
                .guard
                .exchange(&gateway.origin(&caller, &runtime, None));
            exchange.event().arguments = Some(gateway.guard.digest(&bytes));
            let refusal = Refusal::new(RefusalKind::Malformed, e.message.clone());
            if let Err(audit) = exchange.refuse(&refusal).record().await {
                tracing::error!("cannot record a malformed message: {audit}");
            }
            return json_response(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(e.id.as_deref(), e.code, &e.message, None),
            );
        }
    };
    let params = match &message {
        Message::Request { params, .. } | Message::Notification { params, .. } => params.as_deref(),
        Message::Response { .. } => None,
    };
    let facts = match RequestFacts::read(message.method(), params) {
        Ok(mut f) => {
            if f.reason.is_none() {
                f.reason = headers
                    .get("portcullis-reason")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            f
        }
        Err(e) => {
            let id = match &message {
                Message::Request { id, .. } => Some(id.get()),
                _ => None,
            };
            record_rejection(
                &gateway,
                &caller,
                &target,
                message.method(),
                e.target.as_deref(),
                e.message.clone(),
            )
            .await;
            return json_response(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(id, code::INVALID_PARAMS, &e.message, None),
            );
        }
    };
    let header_version = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok());
    // Only 2026-07-28 and later carry the protocol version in `_meta`: a request that does
    // is modern whatever version it names, so an unknown one is refused as unsupported
    // (-32022) rather than mistaken for a session-based request without a session.
    let modern = header_version == Some(era::MODERN) || facts.protocol_version.is_some();
    if modern {
        Box::pin(post_modern(
            gateway, caller, runtime, headers, message, facts,
        ))
        .await
    } else {
        Box::pin(post_legacy(
            gateway, caller, runtime, headers, message, facts,
        ))
        .await
    }
}

/// A 2026-07-28 request: no session, headers checked against the body.
async fn post_modern(
    gateway: Arc<Gateway>,
    caller: Caller,
    runtime: Arc<TargetRuntime>,
    headers: HeaderMap,
    message: Message,
    facts: RequestFacts,
) -> Response {
    let id_text = match &message {
        Message::Request { id, .. } => Some(id.get().to_string()),
        _ => None,
    };
    if let Some(version) = facts
        .protocol_version
        .as_deref()
        .filter(|v| *v != era::MODERN)
    {
        let supported: Vec<&str> = std::iter::once(era::MODERN)
            .chain(era::LEGACY.iter().copied())
            .collect();
        let data = json!({ "supported": supported, "requested": version });
        let why = format!("unsupported protocol version {version:?}");
        record_rejection(
            &gateway,
            &caller,
            &runtime.name,
            message.method(),
            facts.name.as_deref(),
            why,
        )
        .await;
        return json_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                id_text.as_deref(),
                code::UNSUPPORTED_PROTOCOL_VERSION,
                &format!("unsupported protocol version {version:?}"),
                Some(data),
            ),
        );
    }
    if let Message::Request { id, method, .. } = &message {
        let missing = facts.missing_request_meta();
        if !missing.is_empty() {
            // The specification's own answer to a request without its required `_meta`
            // (-32602, HTTP 400), given here with the keys named: an upstream would refuse it
            // too, but without saying why.
            let why = format!(
                "a 2026-07-28 request carries {} in params._meta; this {method} lacks {}",
                era::REQUIRED_REQUEST_META.join(" and "),
                missing.join(" and ")
            );
            record_rejection(
                &gateway,
                &caller,
                &runtime.name,
                Some(method),
                facts.name.as_deref(),
                why.clone(),
            )
            .await;
            let data = json!({ "missing": missing });
            return json_response(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(Some(id.get()), code::INVALID_PARAMS, &why, Some(data)),
            );
        }
    }
    if let Some(method) = message.method()
        && let Err(why) = check_modern_headers(
            &headers,
            method,
            facts.name.as_deref(),
            facts.protocol_version.as_deref(),
        )
    {
        record_rejection(
            &gateway,
            &caller,
            &runtime.name,
            message.method(),
            facts.name.as_deref(),
            format!("Header mismatch: {why}"),
        )
        .await;
        return json_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                id_text.as_deref(),
                code::HEADER_MISMATCH,
                &format!("Header mismatch: {why}"),
                None,
            ),
        );
    }
    dispatch(&gateway, &caller, &runtime, None, &headers, message, facts).await
}

/// A session-based (2025-era) message.
async fn post_legacy(
    gateway: Arc<Gateway>,
    caller: Caller,
    runtime: Arc<TargetRuntime>,
    headers: HeaderMap,
    message: Message,
    facts: RequestFacts,
) -> Response {
    // An `initialize` with a session id is a second handshake on that session: it goes to
    // the session, where the pipeline refuses it.
    if let Message::Request { id, method, params } = &message
        && method == "initialize"
        && session_header(&headers).is_none()
    {
        return match gateway
            .initialize(&caller, &runtime, id, params.as_deref())
            .await
        {
            Ok((session, answer)) => {
                let mut response = json_response(StatusCode::OK, answer);
                response.headers_mut().insert(
                    "mcp-session-id",
                    HeaderValue::from_str(&session.id).expect("hex"),
                );
                response
            }
            Err(r) => refusal(r),
        };
    }
    let Some(session_id) = session_header(&headers) else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id: start with initialize, or use protocol version 2026-07-28",
        );
    };
    let Some(session) = gateway.session(session_id, &caller, &runtime.name).await else {
        return unknown_session();
    };
    dispatch(
        &gateway,
        &caller,
        &runtime,
        Some(&session),
        &headers,
        message,
        facts,
    )
    .await
}

/// Hands an admitted message to the pipeline: requests are decided and answered, caller
/// notifications relayed, and a session's answers to server requests passed upstream.
fn dispatch<'a>(
    gateway: &'a Arc<Gateway>,
    caller: &'a Caller,
    runtime: &'a Arc<TargetRuntime>,
    session: Option<&'a Arc<Session>>,
    headers: &'a HeaderMap,
    message: Message,
    facts: RequestFacts,
) -> BoxFuture<'a, Response> {
    // Boxed here, once for both eras' callers: the pipeline's future is kilobytes, and one
    // awaited inline is moved (copied) into each future above it, up to the connection's.
    Box::pin(async move {
        let accepted = |result: Result<(), Rejection>| match result {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(r) => refusal(r),
        };
        match message {
            Message::Request { id, method, params } => {
                let incoming = IncomingRequest {
                    id: &id,
                    method: &method,
                    params: params.as_deref(),
                    facts,
                    streams: accepts_sse(headers),
                };
                // Boxed: the request's future is kilobytes, and a future awaited inline is
                // moved (copied) into each future above it, up to the connection's.
                let (rx, pump) =
                    Box::pin(gateway.request(caller, runtime, session, incoming)).await;
                respond(rx, pump, accepts_sse(headers), session).await
            }
            Message::Notification { method, params } => accepted(
                gateway
                    .notification(caller, runtime, session, &method, params.as_deref())
                    .await,
            ),
            Message::Response { id, body } => match session {
                Some(session) => {
                    accepted(gateway.client_response(caller, session, &id, &body).await)
                }
                None => plain_error(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "2026-07-28 clients do not send responses; answer input requests by retrying the original request",
                ),
            },
        }
    })
}

/// Turns a request's messages into an HTTP answer: plain JSON when the answer is all there
/// is, an SSE stream when the upstream sends anything first. Session streams are resumable.
async fn respond(
    mut rx: mpsc::Receiver<Inbound>,
    mut pump: Pump,
    sse_ok: bool,
    session: Option<&Arc<Session>>,
) -> Response {
    let first = loop {
        let msg = tokio::select! {
            biased;
            msg = rx.recv() => msg,
            () = pump.run() => unreachable!("the pump stays pending once done"),
        };
        match msg {
            Some(Inbound::Interim(_)) if !sse_ok => continue,
            Some(msg) => break msg,
            None => {
                return plain_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code::INTERNAL_ERROR,
                    "the request ended without an answer",
                );
            }
        }
    };
    let first = match first {
        Inbound::Final(text) => return json_response(StatusCode::OK, text),
        Inbound::Interim(text) => text,
    };
    match session {
        Some(session) => {
            // Resumable: the request's messages go into a session stream buffer, which
            // this response and any later GET with Last-Event-ID read from.
            let buf = session.open_stream();
            buf.push(first);
            let sink = buf.clone();
            tokio::spawn(async move {
                loop {
                    let msg = tokio::select! {
                        biased;
                        msg = rx.recv() => msg,
                        () = pump.run() => unreachable!("the pump stays pending once done"),
                    };
                    match msg {
                        Some(Inbound::Interim(text)) => sink.push(text),
                        Some(Inbound::Final(text)) => {
                            sink.push(text);
                            break;
                        }
                        None => break,
                    }
                }
                sink.finish();
            });
            sse_response(stream_body(buf, 0, None))
        }
        None => {
            let first = futures_util::stream::once(async move {
                Ok::<_, std::convert::Infallible>(sse_event(None, &first))
            });
            // The body drives the pump; if the caller hangs up, dropping the body hands the
            // pump to a task (see `Pump`).
            let rest = futures_util::stream::unfold(Some((rx, pump)), |state| async move {
                let (mut rx, mut pump) = state?;
                let msg = tokio::select! {
                    biased;
                    msg = rx.recv() => msg,
                    () = pump.run() => unreachable!("the pump stays pending once done"),
                };
                match msg? {
                    Inbound::Interim(text) => Some((Ok(sse_event(None, &text)), Some((rx, pump)))),
                    Inbound::Final(text) => Some((Ok(sse_event(None, &text)), None)),
                }
            });
            sse_response(Body::from_stream(first.chain(rest)))
        }
    }
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("valid response")
}

/// An SSE body reading a session stream from `cursor`; `delivered` records progress on the
/// standalone stream so the next GET continues where this one stopped.
fn stream_body(buf: Arc<StreamBuf>, cursor: u64, delivered: Option<Arc<Session>>) -> Body {
    let stream = futures_util::stream::unfold(
        (buf, cursor, delivered),
        |(buf, mut cursor, delivered)| async move {
            let (seq, data) = buf.next(&mut cursor).await?;
            if let Some(session) = &delivered {
                session
                    .standalone_cursor
                    .fetch_max(cursor, Ordering::AcqRel);
            }
            let event = sse_event(Some(&format!("{}-{seq}", buf.id)), &data);
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (buf, cursor, delivered),
            ))
        },
    );
    Body::from_stream(stream)
}

/// GET: the standalone stream of a session, or the resumption of a broken one.
async fn get_stream(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(target): Path<String>,
    headers: HeaderMap,
) -> Response {
    let session = match admit_session(&gateway, &headers, addr, &target).await {
        Ok((_, session)) => session,
        Err(response) => return response,
    };
    if !accepts_sse(&headers) {
        return plain_error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "GET needs Accept: text/event-stream",
        );
    }
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        let Some((stream_id, seq)) = parse_event_id(last) else {
            return plain_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "malformed Last-Event-ID",
            );
        };
        let Some(buf) = session.find_stream(stream_id) else {
            return plain_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "that stream can no longer be resumed",
            );
        };
        let delivered = (stream_id == session.standalone.id).then(|| session.clone());
        return sse_response(stream_body(buf, seq + 1, delivered));
    }
    let cursor = session.standalone_cursor.load(Ordering::Acquire);
    sse_response(stream_body(
        session.standalone.clone(),
        cursor,
        Some(session.clone()),
    ))
}

/// DELETE: the client ends its session.
async fn delete_session(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(target): Path<String>,
    headers: HeaderMap,
) -> Response {
    match admit_session(&gateway, &headers, addr, &target).await {
        Ok((caller, session)) => {
            gateway
                .end_session(&session.id, Some(&caller), "closed by the client")
                .await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => response,
    }
}

/// GET and DELETE act on a session: without `Mcp-Session-Id` there is nothing to act on
/// (405: 2026-07-28 has neither), and the session must be the caller's own.
async fn admit_session(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    addr: SocketAddr,
    target: &str,
) -> Result<(Caller, Arc<Session>), Response> {
    let Some(session_id) = session_header(headers).map(str::to_string) else {
        return Err((StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response());
    };
    let (caller, runtime) = admit(gateway, headers, addr, target).await?;
    match gateway.session(&session_id, &caller, &runtime.name).await {
        Some(session) => Ok((caller, session)),
        None => Err(unknown_session()),
    }
}

fn unknown_session() -> Response {
    plain_error(
        StatusCode::NOT_FOUND,
        code::INVALID_REQUEST,
        "unknown or expired session; initialize a new one",
    )
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn origin_patterns() {
        assert!(wildcard_match(
            "http://localhost:*",
            "http://localhost:3000"
        ));
        assert!(!wildcard_match("http://localhost:*", "http://evil.example"));
        assert!(wildcard_match(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!wildcard_match(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
        assert!(wildcard_match("*", "anything"));
    }
}
