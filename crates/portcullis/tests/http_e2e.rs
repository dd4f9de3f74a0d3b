//! The HTTP adapter end to end: the real `portcullis serve` in front of real HTTP APIs (an
//! axum server run by the test, over plain HTTP/1.1 or TLS with HTTP/2; nginx serving a
//! file), called by real clients (curl as a subprocess, reqwest, raw TCP for what no client
//! would send). Each test has its own upstream, gateway, ports and data directory.
//!
//! What the upstream received is read from the upstream itself (it keeps every request):
//! a refused request is one it never saw, a forwarded one carries the upstream's own
//! credential and nothing of the caller's.

mod common;
#[path = "support/http_upstream.rs"]
mod http_upstream;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use http_upstream::{CARD, EMAIL, EVENT_GAP, Upstream};
use serde_json::{Value, json};

/// The credential the gateway sends the upstream in the caller's stead.
const UPSTREAM_TOKEN: &str = "upstream-service-token";

/// The caller's cookie, which must never reach the upstream.
const CALLER_COOKIE: &str = "session=caller-session-cookie";

const PROFILE: &str = r#"
[masks.pii]
detectors = ["pii"]
"#;

/// The people and agents of every test: an agent that calls, a finance approver.
struct People {
    agent: Key,
    dana: Key,
}

fn people() -> People {
    People {
        agent: api_key("crm-agent", "agent", &["agents"]),
        dana: api_key("dana", "human", &["finance"]),
    }
}

/// A `kind = "http"` target named `name` in front of `upstream`, with `extra` settings.
fn target(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"
[targets.{name}]
kind = "http"
upstream = "{upstream}"
upstream_credential = {{ bearer = {{ env = "CUSTOMERS_TOKEN" }} }}
{extra}
"#
    )
}

/// The rules of a target: customer reads masked, refunds held for finance, deletes denied,
/// uploads allowed.
fn rules(target: &str) -> String {
    // Rule names are unique across the file: other targets' carry their name.
    let of = if target == "customers" {
        String::new()
    } else {
        format!(" ({target})")
    };
    format!(
        r#"
[[rules]]
name = "read customers{of}"
target = "{target}"
http.methods = ["GET"]
http.paths = ["/customers/{{id}}", "/events", "/gzip", "/brotli", "/plain", "/slow", "/stall", "/big", "/customer.json"]
mask = "pii"

[[rules]]
name = "refunds need finance{of}"
target = "{target}"
http.methods = ["POST"]
http.paths = ["/customers/{{id}}/refund"]
decision = "hold"
approvers = ["finance"]

[[rules]]
name = "customers are never deleted{of}"
target = "{target}"
http.methods = ["DELETE"]
http.paths = ["/customers/**"]
decision = "deny"
reason = "customer records are kept"

[[rules]]
name = "uploads{of}"
target = "{target}"
http.methods = ["POST"]
http.paths = ["/upload"]
"#
    )
}

/// A gateway with `targets` (each already written with [`target`]) and the usual rules for
/// each named target, an admin API, and the upstream credential in its environment.
fn gateway(people: &People, targets: &str, names: &[&str], extra: &str) -> (Gateway, String) {
    gateway_with(people, targets, names, extra, "")
}

/// [`gateway`], with `gateway_tables` (`[gateway.tls]` ...) after the `[gateway]` keys.
fn gateway_with(
    people: &People,
    targets: &str,
    names: &[&str],
    extra: &str,
    gateway_tables: &str,
) -> (Gateway, String) {
    let admin_port = free_port();
    let mut config = format!(
        "{}{}{PROFILE}{targets}",
        people.agent.config, people.dana.config
    );
    for name in names {
        config.push_str(&rules(name));
    }
    config.push_str(extra);
    let gw = Gateway::start_with(
        &config,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\"\n{gateway_tables}"),
        &[("CUSTOMERS_TOKEN", UPSTREAM_TOKEN)],
    );
    (gw, format!("http://127.0.0.1:{admin_port}"))
}

fn front(gw: &Gateway, target: &str, path: &str) -> String {
    format!("http://{}/http/{target}{path}", gw.addr)
}

/// What curl got: status, headers (lower-case names), body, and the HTTP version it spoke.
struct Curled {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    version: String,
}

impl Curled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs curl (a subprocess) with `args` and the URL; headers are written to a file so that
/// the body is exactly what curl received.
fn curl(args: &[&str], url: &str) -> Curled {
    let dir = tempfile::tempdir().unwrap();
    let headers_file = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&headers_file)
        .args(["-w", "\n%{http_version}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is needed for these tests");
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, version) = stdout.rsplit_once('\n').unwrap();
    let raw = std::fs::read_to_string(&headers_file).unwrap();
    let mut lines = raw.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curled {
        status,
        headers,
        body: body.to_string(),
        version: version.to_string(),
    }
}

/// The request events of the log, in order. Read without waiting: an answer is complete
/// for its caller only once its event is recorded.
fn request_events(gw: &Gateway) -> Vec<Value> {
    gw.events()
        .into_iter()
        .filter(|e| e["type"] == "request")
        .collect()
}

fn assert_masked(text: &str) {
    assert!(!text.contains(EMAIL), "the email came through: {text}");
    assert!(!text.contains(CARD), "the card number came through: {text}");
    assert!(
        !text.contains(&CARD.replace(' ', "")),
        "the card number came through: {text}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Callers: curl and reqwest

#[test]
fn curl_reads_a_customer_masked_and_the_upstream_gets_its_own_credential_only() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target("customers", &upstream.base(), ""),
        &["customers"],
        "",
    );
    let bearer = format!("Authorization: Bearer {}", p.agent.key);
    let cookie = format!("Cookie: {CALLER_COOKIE}");
    let got = curl(
        &["-H", &bearer, "-H", &cookie],
        &front(&gw, "customers", "/customers/c-1"),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_masked(&got.body);
    let record = got.json();
    assert_eq!(record["id"], "c-1");
    assert_eq!(record["name"], "Ada Lovelace", "the rest is untouched");
    assert_eq!(record["email"], "[EMAIL]", "{record}");
    assert_ne!(record["card"], CARD);
    // The upstream's echo of what it received comes back with its credential scrubbed (an
    // echoing endpoint must not hand the agent the credential the gateway holds), no cookie.
    assert_eq!(
        record["received_authorization"],
        "Bearer [UPSTREAM_CREDENTIAL]"
    );
    assert!(!got.body.contains(UPSTREAM_TOKEN), "{}", got.body);
    assert_eq!(record["received_cookie"], Value::Null);
    // And what the upstream itself kept.
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/customers/c-1");
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some(&*format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(seen.header("cookie"), None);
    assert!(
        !format!("{:?}", seen.headers).contains(&p.agent.key),
        "the caller's key reached the upstream: {:?}",
        seen.headers
    );
    assert_eq!(
        got.header("content-length"),
        Some(&*got.body.len().to_string()),
        "the length is the masked body's"
    );

    // A DELETE the rules deny: 403, a problem document naming the rule, nothing upstream.
    let before = upstream.count();
    let denied = curl(
        &["-X", "DELETE", "-H", &bearer],
        &front(&gw, "customers", "/customers/c-1"),
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(
        denied.header("content-type"),
        Some("application/problem+json")
    );
    let problem = denied.json();
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["rule"], "customers are never deleted", "{problem}");
    assert_eq!(
        upstream.count(),
        before,
        "a denied request reached the upstream"
    );

    // No credential, and a key the gateway does not know: 401 with a challenge.
    let anonymous = curl(&[], &front(&gw, "customers", "/customers/c-1"));
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        anonymous.headers
    );
    let wrong = curl(
        &[
            "-H",
            "Authorization: Bearer pcx_testnobodyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ],
        &front(&gw, "customers", "/customers/c-1"),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        wrong.headers
    );
    assert_eq!(
        upstream.count(),
        before,
        "an unauthenticated request reached the upstream"
    );
}

#[tokio::test]
async fn reqwest_reads_masked_and_a_held_post_completes_once_another_person_approves() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, admin) = gateway(
        &p,
        &target("customers", &upstream.base(), "hold_wait = \"30s\""),
        &["customers"],
        "",
    );
    let client = reqwest::Client::new();
    let resp = client
        .get(front(&gw, "customers", "/customers/c-4"))
        .bearer_auth(&p.agent.key)
        .header("cookie", CALLER_COOKIE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_masked(&body.to_string());
    assert_eq!(body["email"], "[EMAIL]");
    assert_eq!(
        body["received_authorization"],
        "Bearer [UPSTREAM_CREDENTIAL]"
    );
    assert_eq!(
        upstream.last().header("authorization").as_deref(),
        Some(&*format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(body["received_cookie"], Value::Null);

    // The refund is held: the caller waits, the upstream sees nothing yet.
    let before = upstream.count();
    let url = front(&gw, "customers", "/customers/c-4/refund");
    let key = p.agent.key.clone();
    let caller = tokio::spawn(async move {
        let started = Instant::now();
        let resp = reqwest::Client::new()
            .post(url)
            .bearer_auth(key)
            .header("portcullis-reason", "duplicate charge on the March invoice")
            .json(&json!({"amount": 900, "currency": "EUR"}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    });
    let approval = pending_approval(&admin, &p.dana.key).await;
    assert_eq!(approval["reason"], "duplicate charge on the March invoice");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!caller.is_finished(), "the held request did not wait");
    assert_eq!(
        upstream.count(),
        before,
        "a held request reached the upstream"
    );

    let (status, decided) = api(
        reqwest::Method::POST,
        format!(
            "{admin}/api/v1/approvals/{}/approve",
            approval["id"].as_str().unwrap()
        ),
        &p.dana.key,
        Some(json!({"digest": approval["digest"], "reason": "checked the invoice"})),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    let (status, answer, waited) = tokio::time::timeout(Duration::from_secs(15), caller)
        .await
        .expect("the approved request did not complete")
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"customer": "c-4", "refunded": 900, "status": "done"}),
        "the upstream's own answer"
    );
    eprintln!("the held request completed {waited:?} after it was sent");
    let seen = upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/customers/c-4/refund")
    );
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent, json!({"amount": 900, "currency": "EUR"}));
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some(&*format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(
        seen.header("portcullis-reason"),
        None,
        "the gateway's own header"
    );

    let events = request_events(&gw);
    let refund = events
        .iter()
        .find(|e| e["action"] == "POST")
        .unwrap_or_else(|| panic!("no event for the refund: {events:?}"));
    assert_eq!(refund["approval"], approval["id"], "{refund}");
    assert_eq!(refund["http"]["status"], 200, "{refund}");
    assert_eq!(
        refund["http"]["route"], "/customers/{id}/refund",
        "{refund}"
    );
}

#[tokio::test]
async fn a_held_request_past_hold_wait_ends_504_naming_the_approval_which_is_cancelled() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, admin) = gateway(
        &p,
        &target("customers", &upstream.base(), "hold_wait = \"2s\""),
        &["customers"],
        "",
    );
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(front(&gw, "customers", "/customers/c-5/refund"))
        .bearer_auth(&p.agent.key)
        .header("portcullis-reason", "customer asked")
        .json(&json!({"amount": 40}))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
        "hold_wait is 2 s; waited {waited:?}"
    );
    let id = resp
        .headers()
        .get("portcullis-approval")
        .expect("a 504 after hold_wait names the approval")
        .to_str()
        .unwrap()
        .to_string();
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["approval"]["id"], id.as_str(), "{problem}");
    assert_eq!(problem["refusal"], "held_cancelled", "{problem}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let (status, shown) = api(
            reqwest::Method::GET,
            format!("{admin}/api/v1/approvals/{id}"),
            &p.dana.key,
            None,
        )
        .await;
        if status == 200 && shown["status"] == "cancelled" || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert_eq!(
        upstream.count(),
        0,
        "a request nobody approved reached the upstream"
    );
    drop(gw);
}

async fn api(method: reqwest::Method, url: String, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The one pending approval `key` sees, once it is there.
async fn pending_approval(admin: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api(
            reqwest::Method::GET,
            format!("{admin}/api/v1/approvals"),
            key,
            None,
        )
        .await;
        if status == 200
            && let Some(first) = body["approvals"].as_array().and_then(|a| a.first())
        {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no pending approval appeared: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Server-sent events

#[tokio::test]
async fn server_sent_events_stream_through_masked_as_they_come() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target("customers", &upstream.base(), ""),
        &["customers"],
        "",
    );
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(front(&gw, "customers", "/events"))
        .bearer_auth(&p.agent.key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The upstream sends its first event with its headers, the next ones EVENT_GAP apart.
    let headers_at = started.elapsed();
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut first_event = None;
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        if first_event.is_none() && text.contains("\n\n") {
            first_event = Some(started.elapsed());
        }
    }
    let ended = started.elapsed();
    let first = first_event.expect("no complete event arrived");
    eprintln!(
        "headers after {headers_at:?}, first event after {first:?}, stream ended after {ended:?}"
    );
    assert!(
        first < headers_at + EVENT_GAP * 2 / 3,
        "the first event came {:?} after the headers: it waited for the next one",
        first - headers_at
    );
    assert!(
        ended >= first + Duration::from_millis(200),
        "the first event came {first:?} after the request, the stream ended at {ended:?}: it was not streamed"
    );
    for n in 0..3 {
        assert!(
            !text.contains(&format!("user{n}@example.com")),
            "an email came through: {text}"
        );
    }
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    assert_eq!(data.len(), 3, "{text}");
    for (n, event) in data.iter().enumerate() {
        assert_eq!(event["n"], n);
        assert_eq!(event["email"], "[EMAIL]", "{text}");
    }
    assert!(
        text.contains("event: customer\n"),
        "the event lines are kept: {text}"
    );
    // The stream ended for the caller only once its event was recorded.
    let events = request_events(&gw);
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["http"]["status"], 200, "{event}");
    assert_eq!(event["http"]["response_bytes"], text.len(), "{event}");
    let emails = event["masked"]
        .as_array()
        .unwrap_or_else(|| panic!("{event}"))
        .iter()
        .filter(|m| m["detector"] == "email")
        .map(|m| m["count"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(emails, 3, "{event}");
}

// ---------------------------------------------------------------------------------------
// 3. HTTPS with HTTP/2 to the upstream; the target's own listener over h2c

#[test]
fn an_https_upstream_is_spoken_to_over_http2_and_the_own_listener_answers_h2c() {
    let ca = portcullis_sinks::testing::Ca::new("http-e2e test CA");
    let upstream = Upstream::start_with(Some(
        ca.issue(&["localhost"], rcgen::ExtendedKeyUsagePurpose::ServerAuth),
    ));
    let certs = tempfile::tempdir().unwrap();
    let ca_path = ca.write(&certs.path().join("ca.pem"));
    let listen_port = free_port();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target(
            "secure",
            &upstream.base(),
            &format!(
                "upstream_ca = {:?}\nlisten = \"127.0.0.1:{listen_port}\"",
                ca_path.display().to_string()
            ),
        ),
        &["secure"],
        "",
    );
    let bearer = format!("Authorization: Bearer {}", p.agent.key);
    let got = curl(&["-H", &bearer], &front(&gw, "secure", "/customers/c-2"));
    assert_eq!(got.status, 200, "{}", got.body);
    assert_masked(&got.body);
    assert_eq!(got.json()["email"], "[EMAIL]");
    let seen = upstream.last();
    assert_eq!(
        seen.version,
        axum::http::Version::HTTP_2,
        "the gateway spoke {:?} to an upstream offering h2",
        seen.version
    );
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some(&*format!("Bearer {UPSTREAM_TOKEN}"))
    );

    // The target's own listener (bound once the gateway serves): the API at `/`, over
    // HTTP/2 without TLS when the client knows to.
    let own: SocketAddr = format!("127.0.0.1:{listen_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(own).is_err() {
        assert!(
            Instant::now() < deadline,
            "the target's listener did not open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let h2 = curl(
        &["--http2-prior-knowledge", "-H", &bearer],
        &format!("http://{own}/customers/c-3"),
    );
    assert_eq!(h2.status, 200, "{}", h2.body);
    assert_eq!(h2.version, "2", "curl spoke HTTP/{}", h2.version);
    assert_masked(&h2.body);
    assert_eq!(h2.json()["id"], "c-3");
    assert_eq!(upstream.last().target, "/customers/c-3");
    // HTTP/1.1 on the same listener too.
    let h1 = curl(
        &["--http1.1", "-H", &bearer],
        &format!("http://{own}/customers/c-3"),
    );
    assert_eq!(
        (h1.status, h1.version.as_str()),
        (200, "1.1"),
        "{}",
        h1.body
    );
    assert_masked(&h1.body);
}

#[test]
fn with_the_gateways_tls_the_own_listener_offers_http2_by_alpn() {
    let upstream = Upstream::start();
    let ca = portcullis_sinks::testing::Ca::new("http-e2e gateway CA");
    let certs = tempfile::tempdir().unwrap();
    let ca_path = ca.write(&certs.path().join("ca.pem"));
    let (cert, key) = ca.issue_files(certs.path(), "gateway", &["localhost", "127.0.0.1"], false);
    let listen_port = free_port();
    let p = people();
    let (gw, _) = gateway_with(
        &p,
        &target(
            "customers",
            &upstream.base(),
            &format!("listen = \"127.0.0.1:{listen_port}\""),
        ),
        &["customers"],
        "",
        &format!(
            "[gateway.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let own: SocketAddr = format!("127.0.0.1:{listen_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(own).is_err() {
        assert!(
            Instant::now() < deadline,
            "the target's listener did not open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let bearer = format!("Authorization: Bearer {}", p.agent.key);
    let ca_arg = ca_path.display().to_string();
    let h2 = curl(
        &["--http2", "--cacert", &ca_arg, "-H", &bearer],
        &format!("https://localhost:{listen_port}/customers/c-10"),
    );
    assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{}", h2.body);
    assert_masked(&h2.body);
    assert_eq!(h2.json()["id"], "c-10");
    // The front door stays HTTP/1.1 (its TLS offers nothing else), and serves the target too.
    let front_door = curl(
        &["--http2", "--cacert", &ca_arg, "-H", &bearer],
        &format!(
            "https://localhost:{}/http/customers/customers/c-11",
            gw.addr.port()
        ),
    );
    assert_eq!(
        (front_door.status, front_door.version.as_str()),
        (200, "1.1"),
        "{}",
        front_door.body
    );
    assert_masked(&front_door.body);
    assert_eq!(upstream.count(), 2);
}

// ---------------------------------------------------------------------------------------
// 4. Smuggling, ambiguous paths, and the bounds of a request

/// Sends `request` on a fresh connection and reads until the gateway closes it or 10 s
/// pass; returns the status and everything read.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?} (request {request:?})"));
    (status, text)
}

#[test]
fn smuggling_shapes_and_ambiguous_paths_are_refused_400_before_the_upstream() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target("customers", &upstream.base(), ""),
        &["customers"],
        "",
    );
    let auth = format!("Authorization: Bearer {}", p.agent.key);
    let cases: Vec<(&str, String)> = vec![
        (
            "two different Content-Lengths",
            format!(
                "POST /http/customers/upload HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{{}}  "
            ),
        ),
        (
            "an obs-fold header line",
            format!(
                "GET /http/customers/plain HTTP/1.1\r\nHost: gw\r\n{auth}\r\nX-Folded: first\r\n  second\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an absolute-form request line",
            format!(
                "GET http://evil/http/customers/plain HTTP/1.1\r\nHost: evil\r\n{auth}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "a '..' segment",
            format!(
                "GET /http/customers/customers/../plain HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an encoded '..' segment",
            format!(
                "GET /http/customers/customers/%2e%2e/plain HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an encoded '/' in a segment",
            format!(
                "GET /http/customers/customers/c-1%2F..%2Fadmin HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an empty segment",
            format!(
                "GET /http/customers/customers//c-1 HTTP/1.1\r\nHost: gw\r\n{auth}\r\nConnection: close\r\n\r\n"
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in &cases {
        let (status, text) = raw(gw.addr, request);
        eprintln!("{what}: {status}");
        if status != 400 {
            failures.push(format!("{what}: {status}\n{text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "not refused with 400:\n{}",
        failures.join("\n\n")
    );
    assert_eq!(
        upstream.count(),
        0,
        "refused requests reached the upstream: {:?}",
        upstream
            .seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect::<Vec<_>>()
    );
    // Content-Length beside Transfer-Encoding, carrying a second request after the chunked
    // body (the classic desync). hyper reads the body by Transfer-Encoding (RFC 9112 section
    // 6.3), drops the Content-Length and closes the connection after the answer; the
    // gateway forwards the one body it read, framed by its own length. Refusing with 400
    // would be as safe; what must never happen is the second request being served.
    let smuggled =
        format!("GET /http/customers/plain?smuggled=1 HTTP/1.1\r\nHost: gw\r\n{auth}\r\n\r\n");
    let body = format!("2\r\n{{}}\r\n0\r\n\r\n{smuggled}");
    let (status, text) = raw(
        gw.addr,
        &format!(
            "POST /http/customers/upload HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        ),
    );
    eprintln!("Content-Length and Transfer-Encoding together: {status}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request was answered: {text}"
    );
    assert!(
        upstream
            .seen()
            .iter()
            .all(|s| !s.target.contains("smuggled")),
        "the smuggled request reached the upstream"
    );
    match status {
        400 => assert_eq!(upstream.count(), 0),
        200 => {
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "the connection stays open after an ambiguous request: {text}"
            );
            let seen = upstream.seen();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].body, b"{}", "the body as the chunks say");
            assert_eq!(seen[0].header("content-length").as_deref(), Some("2"));
            assert_eq!(seen[0].header("transfer-encoding"), None);
        }
        other => panic!("Content-Length beside Transfer-Encoding: {other}\n{text}"),
    }
    upstream.seen.lock().unwrap().clear();

    // The same connection-level shape, well formed, does reach it.
    let (status, text) = raw(
        gw.addr,
        &format!(
            "POST /http/customers/upload HTTP/1.1\r\nHost: gw\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().body, b"{}");
}

#[tokio::test]
async fn request_and_answer_bounds_413_502_504_and_a_stalled_stream_cut_off() {
    let upstream = Upstream::start();
    // A port nothing listens on.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let p = people();
    let targets = format!(
        "{}{}",
        target(
            "customers",
            &upstream.base(),
            "max_request_body = 1024\nmax_response_body = 4096\ntimeout = \"1s\"\nidle_timeout = \"1s\""
        ),
        target("gone", &dead, "")
    );
    let (gw, _) = gateway(&p, &targets, &["customers", "gone"], "");
    let client = reqwest::Client::new();

    let resp = client
        .post(front(&gw, "customers", "/upload"))
        .bearer_auth(&p.agent.key)
        .header("content-type", "application/octet-stream")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_request_body")),
        "{problem}"
    );
    // Without a length announced, the cap holds as the body is read.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes_of(vec![b'y'; 512]))),
    );
    let resp = client
        .post(front(&gw, "customers", "/upload"))
        .bearer_auth(&p.agent.key)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        upstream.count(),
        0,
        "an oversized body reached the upstream"
    );

    let resp = client
        .get(front(&gw, "gone", "/customers/c-1"))
        .bearer_auth(&p.agent.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let started = Instant::now();
    let resp = client
        .get(front(&gw, "customers", "/slow"))
        .bearer_auth(&p.agent.key)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        waited < Duration::from_millis(2500),
        "timeout is 1 s; the caller waited {waited:?}"
    );
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("timeout")),
        "{problem}"
    );

    // A JSON answer to mask that is larger than max_response_body is withheld, not passed.
    let resp = client
        .get(front(&gw, "customers", "/big"))
        .bearer_auth(&p.agent.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert_masked(&text);
    assert!(text.contains("max_response_body"), "{text}");

    // A stream whose upstream stalls past idle_timeout: what came goes through masked, then
    // the answer breaks off; the caller cannot take it for a complete one.
    let started = Instant::now();
    let resp = client
        .get(front(&gw, "customers", "/stall"))
        .bearer_auth(&p.agent.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut broke = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    let took = started.elapsed();
    assert!(
        broke.is_some(),
        "the stalled answer ended as if complete after {took:?}: {text:?}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_masked(&text);
    assert!(
        text.contains("\"n\":0") && text.contains("[EMAIL]"),
        "{text:?}"
    );
    assert!(!text.contains("\"n\":1"), "{text:?}");
    let stalled = request_events(&gw)
        .into_iter()
        .find(|e| e["resource"] == "/stall")
        .expect("the stalled answer has its event");
    assert!(
        stalled["detail"]
            .as_str()
            .is_some_and(|d| d.contains("idle_timeout")),
        "{stalled}"
    );
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

// ---------------------------------------------------------------------------------------
// 5. Compressed answers

#[tokio::test]
async fn a_gzip_answer_is_decompressed_and_masked_and_a_brotli_one_refused() {
    let upstream = Upstream::start();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target("customers", &upstream.base(), ""),
        &["customers"],
        "",
    );
    let client = reqwest::Client::new();
    let resp = client
        .get(front(&gw, "customers", "/gzip"))
        .bearer_auth(&p.agent.key)
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-encoding"),
        None,
        "the answer was decompressed to be masked"
    );
    let text = resp.text().await.unwrap();
    assert_masked(&text);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["email"], "[EMAIL]");
    assert_eq!(body["name"], "Ada Lovelace");
    assert_eq!(
        upstream.last().header("accept-encoding").as_deref(),
        Some("identity"),
        "an answer to mask is asked for uncompressed"
    );

    let resp = client
        .get(front(&gw, "customers", "/brotli"))
        .bearer_auth(&p.agent.key)
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers().get("content-encoding"), None);
    let text = resp.text().await.unwrap();
    assert_masked(&text);
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains("br")),
        "{problem}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. The audit trail

#[test]
fn each_request_is_one_event_with_its_http_record_and_the_log_verifies() {
    let upstream = Upstream::start();
    let keys = tempfile::tempdir().unwrap();
    let audit_key = keys.path().join("audit-key");
    let out = Command::new(binary())
        .args(["keys", "audit-init", "--out"])
        .arg(&audit_key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = people();
    let (mut gw, _) = gateway(
        &p,
        &target("customers", &upstream.base(), ""),
        &["customers"],
        &format!(
            "\n[audit]\nsigning_key = {:?}\ncheckpoint_interval = \"100ms\"\n",
            audit_key.display().to_string()
        ),
    );
    let bearer = format!("Authorization: Bearer {}", p.agent.key);
    let read = curl(&["-H", &bearer], &front(&gw, "customers", "/customers/c-6"));
    assert_eq!(read.status, 200);
    let upload = curl(
        &[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "--data",
            "{\"n\": 1}",
        ],
        &front(&gw, "customers", "/upload"),
    );
    assert_eq!(upload.status, 200, "{}", upload.body);
    let denied = curl(
        &["-X", "DELETE", "-H", &bearer],
        &front(&gw, "customers", "/customers/c-6"),
    );
    assert_eq!(denied.status, 403);

    let events = request_events(&gw);
    assert_eq!(
        events.len(),
        3,
        "one request event per request: {}",
        serde_json::to_string_pretty(&events).unwrap()
    );
    let get = &events[0];
    assert_eq!(get["action"], "GET", "{get}");
    assert_eq!(get["resource"], "/customers/c-6");
    assert_eq!(get["target"], "customers", "{get}");
    assert_eq!(get["rule"], "read customers", "{get}");
    let http = &get["http"];
    assert_eq!(http["method"], "GET");
    assert_eq!(http["route"], "/customers/{id}", "{get}");
    assert_eq!(http["status"], 200);
    assert_eq!(http["request_bytes"], 0);
    assert_eq!(http["response_bytes"], read.body.len(), "{get}");
    assert!(http["upstream_ms"].as_f64().is_some(), "{get}");
    let masked = get["masked"].as_array().unwrap_or_else(|| panic!("{get}"));
    let detectors: Vec<&str> = masked
        .iter()
        .filter_map(|m| m["detector"].as_str())
        .collect();
    assert!(
        detectors.contains(&"email") && detectors.contains(&"credit_card"),
        "{masked:?}"
    );
    let recorded = get.to_string();
    assert!(
        !recorded.contains(EMAIL) && !recorded.contains("4111"),
        "{recorded}"
    );

    let post = &events[1];
    assert_eq!(post["http"]["method"], "POST", "{post}");
    assert_eq!(post["http"]["route"], "/upload");
    assert_eq!(post["http"]["status"], 200);
    assert_eq!(post["http"]["request_bytes"], 8);
    assert_eq!(post["http"]["response_bytes"], upload.body.len());

    let delete = &events[2];
    assert_eq!(delete["decision"], "deny", "{delete}");
    assert_eq!(delete["rule"], "customers are never deleted");
    assert_eq!(delete["http"]["status"], 403, "{delete}");
    assert_eq!(delete["http"]["route"], "/customers/**", "{delete}");

    assert!(gw.terminate(), "the gateway did not stop cleanly");
    let out = Command::new(binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(gw.data_dir())
        .arg("--pubkey")
        .arg(audit_key.join("audit.pub"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// 7. nginx as the upstream

/// An nginx serving `www` on a port of its own, in the foreground; killed on drop.
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
    access_log: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NGINX: &str = "/usr/sbin/nginx";

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let port = free_port();
        let d = dir.display();
        for sub in ["www", "tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format seen '$request_method $request_uri auth=[$http_authorization] cookie=[$http_cookie]';
    access_log {d}/logs/access.log seen;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            root {d}/www;
            default_type application/json;
        }}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (child, _) = start_and_wait(&mut cmd, addr, "nginx");
        Nginx {
            child,
            addr,
            access_log: dir.join("logs/access.log"),
        }
    }
}

#[test]
fn nginx_serves_a_static_json_file_through_the_gateway_masked() {
    if !Path::new(NGINX).exists() {
        // CI installs nginx (.ci/run): its absence fails the test, unless the machine says
        // it cannot have it, and then the output says the test did not run.
        if std::env::var("PORTCULLIS_SKIP_NGINX").is_ok_and(|v| v == "1") {
            eprintln!(
                "SKIPPED: {NGINX} is not installed and PORTCULLIS_SKIP_NGINX=1 is set; this test did not run"
            );
            return;
        }
        panic!(
            "{NGINX} is not installed (apt-get install nginx); set PORTCULLIS_SKIP_NGINX=1 to skip this test where it cannot be"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    std::fs::write(
        dir.path().join("www/customer.json"),
        json!({"id": "c-9", "name": "Ada Lovelace", "email": EMAIL, "card": CARD}).to_string(),
    )
    .unwrap();
    let p = people();
    let (gw, _) = gateway(
        &p,
        &target("static", &format!("http://{}/", nginx.addr), ""),
        &["static"],
        "",
    );
    let got = curl(
        &[
            "-H",
            &format!("Authorization: Bearer {}", p.agent.key),
            "-H",
            &format!("Cookie: {CALLER_COOKIE}"),
        ],
        &front(&gw, "static", "/customer.json"),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_masked(&got.body);
    let body = got.json();
    assert_eq!(body["email"], "[EMAIL]");
    assert_eq!(body["id"], "c-9");
    assert_eq!(
        got.header("server").map(|s| s.starts_with("nginx")),
        Some(true)
    );
    let log = std::fs::read_to_string(&nginx.access_log).unwrap();
    assert_eq!(
        log.trim(),
        format!("GET /customer.json auth=[Bearer {UPSTREAM_TOKEN}] cookie=[-]"),
        "what nginx received"
    );
}
