//! A real HTTP API for the HTTP adapter's end-to-end tests: an axum server on a thread and
//! runtime of its own (so that tests may block on curl or raw sockets meanwhile), plain or
//! TLS with HTTP/2 offered by ALPN, that keeps every request it received (method, path,
//! protocol version, headers, body) for the test to inspect: what reached it is what the
//! gateway forwarded, and a request refused at the gateway is one it never saw.
//!
//! Its API, below the base URL:
//! - `GET /customers/{id}`: a customer record with an email and a card number, and the
//!   `Authorization` and `Cookie` it received (echoed, so a caller sees them too); the
//!   email in an `X-Account-Email` header too, and a `Set-Cookie` of its own;
//! - `POST /customers/{id}/refund`: the refund done, echoing the JSON body's `amount`;
//! - `DELETE /customers/{id}`: 204;
//! - `POST /upload`: `{"ok": true}`;
//! - `GET /plain`: `{"ok": true}`, nothing sensitive;
//! - `GET /events`: three `text/event-stream` events, 300 ms apart, each with an email;
//! - `GET /gzip`: a customer record gzip-compressed whatever `Accept-Encoding` said;
//! - `GET /brotli`: an answer claiming `Content-Encoding: br`;
//! - `GET /slow`: answers after 3 s;
//! - `GET /stall`: one event with an email, then nothing for 5 s, then another;
//! - `GET /big`: a JSON record with an email and 8 KiB of filler.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

/// The customer every record is about.
pub const EMAIL: &str = "ada@example.com";
pub const CARD: &str = "4111 1111 1111 1111";

/// The gap between two events of `/events`.
pub const EVENT_GAP: Duration = Duration::from_millis(300);

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as on the wire.
    pub target: String,
    pub version: axum::http::Version,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    gzipped: Arc<[u8]>,
}

/// A running upstream; it stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Upstream {
    /// A plain HTTP/1.1 upstream on 127.0.0.1.
    pub fn start() -> Upstream {
        Self::start_with(None)
    }

    /// With `tls` = (certificate PEM, key PEM): HTTPS, offering `h2` and `http/1.1` by ALPN.
    pub fn start_with(tls: Option<(String, String)>) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            seen: seen.clone(),
            gzipped: Arc::from(gzip(&customer("c-7", None, None).to_string())),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let is_tls = tls.is_some();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(handle).with_state(shared);
                match tls {
                    None => {
                        let server = axum_server::from_tcp(listener)
                            .unwrap()
                            .serve(app.into_make_service());
                        tokio::select! {
                            _ = server => {}
                            _ = stopped => {}
                        }
                    }
                    Some((cert, key)) => {
                        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                            cert.into_bytes(),
                            key.into_bytes(),
                        )
                        .await
                        .unwrap();
                        let server = axum_server::from_tcp_rustls(listener, config)
                            .unwrap()
                            .serve(app.into_make_service());
                        tokio::select! {
                            _ = server => {}
                            _ = stopped => {}
                        }
                    }
                }
            });
        });
        Upstream {
            addr,
            seen,
            tls: is_tls,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL a target's `upstream` names.
    pub fn base(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/", self.addr.port())
        } else {
            format!("http://127.0.0.1:{}/", self.addr.port())
        }
    }

    /// How many requests reached it.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Every request it received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request it received.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }
}

/// A customer record with PII, and what the upstream received as credentials.
fn customer(id: &str, authorization: Option<String>, cookie: Option<String>) -> Value {
    json!({
        "id": id,
        "name": "Ada Lovelace",
        "email": EMAIL,
        "card": CARD,
        "received_authorization": authorization,
        "received_cookie": cookie,
    })
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("gzip")
        .args(["-c", "-n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip(1) compresses the upstream's gzip answer");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.as_str().to_string(),
        target: target.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.to_vec(),
    };
    shared.seen.lock().unwrap().push(seen.clone());
    let path = parts.uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (parts.method.as_str(), segments.as_slice()) {
        ("GET", ["customers", id]) => {
            let mut response = json_response(
                StatusCode::OK,
                &customer(id, seen.header("authorization"), seen.header("cookie")),
            );
            // A header with PII, and a cookie of the upstream's own.
            let headers = response.headers_mut();
            headers.insert("x-account-email", HeaderValue::from_static(EMAIL));
            headers.insert(
                header::SET_COOKIE,
                HeaderValue::from_static("upstream-session=abc; HttpOnly"),
            );
            response
        }
        ("POST", ["customers", id, "refund"]) => {
            let amount = serde_json::from_slice::<Value>(&body)
                .map(|b| b["amount"].clone())
                .unwrap_or(Value::Null);
            json_response(
                StatusCode::OK,
                &json!({"customer": id, "refunded": amount, "status": "done"}),
            )
        }
        ("DELETE", ["customers", _]) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        ("POST", ["upload"]) | ("GET", ["plain"]) => {
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        ("GET", ["events"]) => events(),
        ("GET", ["stall"]) => stall(),
        ("GET", ["big"]) => json_response(
            StatusCode::OK,
            &json!({"email": EMAIL, "filler": "x".repeat(8192)}),
        ),
        ("GET", ["gzip"]) => {
            let mut response = Response::new(Body::from(shared.gzipped.to_vec()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            response
        }
        ("GET", ["brotli"]) => {
            // Not decodable by the gateway whatever the bytes: it must refuse, not pass.
            let mut response = Response::new(Body::from(
                customer("c-8", None, None).to_string().into_bytes(),
            ));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            response
        }
        // A redirect elsewhere, which a gateway must pass on, not follow.
        ("POST", ["moved"]) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/elsewhere"));
            response
        }
        ("GET", ["slow"]) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json_response(StatusCode::OK, &json!({"slow": true}))
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such route"})),
    }
}

/// Three events, [`EVENT_GAP`] apart, each a JSON `data:` line with an email.
fn events() -> Response {
    let stream = futures_util::stream::unfold(0u32, |n| async move {
        if n == 3 {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(EVENT_GAP).await;
        }
        let data = json!({"n": n, "email": format!("user{n}@example.com")});
        let event = format!("id: {n}\nevent: customer\ndata: {data}\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(event)), n + 1))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// An event, then a stall longer than the tests' `idle_timeout`, then another event.
fn stall() -> Response {
    let stream = futures_util::stream::unfold(0u32, |n| async move {
        match n {
            0 => {}
            1 => tokio::time::sleep(Duration::from_secs(5)).await,
            _ => return None,
        }
        let event = format!("data: {}\n\n", json!({"n": n, "email": EMAIL}));
        Some((Ok::<_, Infallible>(Bytes::from(event)), n + 1))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}
