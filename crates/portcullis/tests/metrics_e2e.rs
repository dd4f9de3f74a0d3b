//! Health, metrics and shutdown of the real `portcullis serve`, observed from outside like an
//! operator's tools would: `/metrics` scraped and parsed by a strict OpenMetrics parser after
//! real requests through the HTTP and PostgreSQL adapters, `/readyz` with a live and a dead
//! upstream, and a SIGTERM in the middle of a slow request.

mod common;
#[path = "support/http_upstream.rs"]
mod http_upstream;

use std::time::{Duration, Instant};

use common::*;
use http_upstream::Upstream;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use serde_json::Value;

type Scrape = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// The sample of `family` whose labels are exactly `labels`.
fn sample<'a>(
    scrape: &'a Scrape,
    family: &str,
    labels: &[(&str, &str)],
) -> Option<&'a OpenMetricsValue> {
    let family = scrape.families.get(family)?;
    family
        .iter_samples()
        .find(|s| {
            let set = s.get_labelset().unwrap();
            family.get_label_names().len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|s| &s.value)
}

fn counter(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, family, labels) {
        Some(OpenMetricsValue::Counter(c)) => c.value.as_f64(),
        other => panic!("{family}{labels:?} is not a counter: {other:?}"),
    }
}

fn gauge(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, family, labels) {
        Some(OpenMetricsValue::Gauge(g)) => g.as_f64(),
        other => panic!("{family}{labels:?} is not a gauge: {other:?}"),
    }
}

/// A histogram's count and sum, after checking its buckets are cumulative and end in
/// `+Inf` = count.
fn histogram(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> (u64, f64) {
    let Some(OpenMetricsValue::Histogram(h)) = sample(scrape, family, labels) else {
        panic!("{family}{labels:?} is not a histogram");
    };
    let counts: Vec<f64> = h.buckets.iter().map(|b| b.count.as_f64()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "{family}: buckets not cumulative: {counts:?}"
    );
    let last = h.buckets.last().expect("buckets");
    assert!(last.upper_bound.is_infinite());
    let count = h.count.expect("a count");
    assert_eq!(
        last.count.as_f64(),
        count as f64,
        "{family}: +Inf bucket != count"
    );
    (count, h.sum.as_ref().expect("a sum").as_f64())
}

async fn scrape(client: &reqwest::Client, admin: &str) -> (Scrape, String) {
    let answer = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e:?}\n{text}"));
    (parsed, text)
}

/// The rules and targets of the metrics test: `customers` (a live HTTP API), `dead` (an
/// HTTP API on a closed port), `gone` (a PostgreSQL target whose database is a closed port),
/// `tools` (a stdio MCP server, which readiness cannot check).
fn config(agent: &Key, upstream: &str, closed: u16, pg_listen: u16) -> String {
    format!(
        r#"{agent}
[targets.customers]
kind = "http"
upstream = "{upstream}"

[targets.dead]
kind = "http"
upstream = "http://127.0.0.1:{closed}/"

[targets.gone]
kind = "postgres"
listen = "127.0.0.1:{pg_listen}"
upstream = "postgres://127.0.0.1:{closed}/x"
user = "nobody"

[targets.tools]
kind = "mcp"
{demo}

[targets.remote]
kind = "mcp"
url = "http://127.0.0.1:{closed}/mcp"

[[rules]]
name = "remote search"
target = "remote"
tools = ["search"]

[[rules]]
name = "plain reads"
target = "customers"
http.methods = ["GET"]
http.paths = ["/plain"]

[[rules]]
name = "plain reads (dead)"
target = "dead"
http.methods = ["GET"]
http.paths = ["/plain"]

[[rules]]
name = "no deletes"
target = "customers"
http.methods = ["DELETE"]
http.paths = ["/customers/**"]
decision = "deny"

[[rules]]
name = "selects"
target = "gone"
allow.statements = ["select"]
"#,
        agent = agent.config,
        demo = demo_server_command(),
    )
}

#[tokio::test]
async fn metrics_parse_and_count_allowed_denied_and_failed_requests_and_readiness_is_degraded() {
    let upstream = Upstream::start();
    let agent = api_key("metrics-agent", "agent", &["agents"]);
    let admin_port = free_port();
    let (closed, pg_listen) = (free_port(), free_port());
    let gw = Gateway::start_with(
        &config(&agent, &upstream.base(), closed, pg_listen),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let front = format!("http://{}", gw.addr);
    let call = |method: reqwest::Method, url: String| {
        client.request(method, url).bearer_auth(&agent.key).send()
    };

    // Allowed, denied, and an upstream that is not there.
    let ok = call(
        reqwest::Method::GET,
        format!("{front}/http/customers/plain"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = call(
        reqwest::Method::DELETE,
        format!("{front}/http/customers/customers/c-1"),
    )
    .await
    .unwrap();
    assert_eq!(denied.status(), 403);
    let failed = call(reqwest::Method::GET, format!("{front}/http/dead/plain"))
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    // A PostgreSQL login the gateway cannot complete: its database is not there.
    let conn = format!(
        "host=127.0.0.1 port={pg_listen} user=metrics-agent password={} dbname=gone connect_timeout=10",
        agent.key
    );
    let refused = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "no session without a database");
    // An MCP call to a streamable-HTTP server that is not there.
    let (_, answer) = modern_call(
        &client,
        &gw.url("remote"),
        &agent.key,
        1,
        "tools/call",
        serde_json::json!({"name": "search", "arguments": {}}),
    )
    .await;
    assert!(answer["error"].is_object(), "{answer}");

    // Readiness: the gateway's own checks pass, one upstream is down: degraded, still 200
    // (docs/deploy.md says why), each target reported.
    let ready = client.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let upstreams = &body["checks"]["upstreams"];
    assert_eq!(upstreams["customers"]["status"], "ok", "{body}");
    assert_eq!(upstreams["customers"]["kind"], "http", "{body}");
    assert_eq!(upstreams["dead"]["status"], "unreachable", "{body}");
    assert_eq!(upstreams["gone"]["status"], "unreachable", "{body}");
    assert_eq!(upstreams["gone"]["kind"], "postgres", "{body}");
    assert_eq!(upstreams["tools"]["status"], "not_checked", "{body}");
    assert_eq!(upstreams["remote"]["status"], "unreachable", "{body}");
    assert_eq!(upstreams["remote"]["kind"], "mcp", "{body}");
    // Nothing of an upstream's address is revealed to an unauthenticated prober.
    assert!(!body.to_string().contains(&closed.to_string()), "{body}");

    let (m, text) = scrape(&client, &admin).await;
    let http = |target: &'static str, decision: &'static str, outcome: &'static str| {
        [
            ("target", target),
            ("kind", "http"),
            ("decision", decision),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        counter(
            &m,
            "portcullis_requests",
            &http("customers", "allow", "success")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        counter(
            &m,
            "portcullis_requests",
            &http("customers", "deny", "denied")
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        counter(&m, "portcullis_requests", &http("dead", "allow", "failed")),
        1.0,
        "{text}"
    );
    // Latency per target and adapter kind; the two answered requests took real time.
    let (count, sum) = histogram(
        &m,
        "portcullis_request_duration_seconds",
        &[("target", "customers"), ("kind", "http")],
    );
    assert_eq!(count, 2, "{text}");
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    // Upstream errors, by target, adapter kind and what went wrong.
    let upstream_error = |target: &'static str, kind: &'static str| {
        counter(
            &m,
            "portcullis_upstream_errors",
            &[("target", target), ("kind", kind), ("error", "unreachable")],
        )
    };
    assert_eq!(upstream_error("dead", "http"), 1.0, "{text}");
    assert_eq!(upstream_error("gone", "postgres"), 1.0, "{text}");
    assert_eq!(upstream_error("remote", "mcp"), 1.0, "{text}");
    assert!(
        sample(
            &m,
            "portcullis_upstream_errors",
            &[
                ("target", "customers"),
                ("kind", "http"),
                ("error", "unreachable")
            ]
        )
        .is_none(),
        "a live upstream has no errors: {text}"
    );
    // The audit writer: every event committed was observed once, with a wait that is a
    // commit's (well under a second here) and in groups that add up to the events.
    let (commits, wait) = histogram(&m, "portcullis_audit_commit_seconds", &[]);
    let (groups, grouped) = histogram(&m, "portcullis_audit_commit_group_size", &[]);
    assert!(commits >= 5, "start, 4 requests, a session pair: {commits}");
    assert_eq!(grouped, commits as f64, "groups add up to the events");
    assert!(
        groups >= 1 && groups <= commits,
        "{groups} groups of {commits}"
    );
    assert!(
        wait > 0.0 && wait / (commits as f64) < 1.0,
        "mean wait {wait}/{commits}"
    );
    let committed = gauge(&m, "portcullis_events_committed", &[]);
    assert_eq!(committed, commits as f64, "every commit observed: {text}");
    // Strict durability: every request above returned after its event's commit.
    assert_eq!(
        gauge(&m, "portcullis_audit_queue_depth", &[]),
        0.0,
        "{text}"
    );
    // Reachability as the readiness check found it.
    assert_eq!(
        gauge(
            &m,
            "portcullis_upstream_reachable",
            &[("target", "customers")]
        ),
        1.0
    );
    assert_eq!(
        gauge(&m, "portcullis_upstream_reachable", &[("target", "dead")]),
        0.0
    );
    assert!(
        sample(&m, "portcullis_upstream_reachable", &[("target", "tools")]).is_none(),
        "a stdio upstream is not checked: {text}"
    );
    assert_eq!(gauge(&m, "portcullis_audit_available", &[]), 1.0);
}

/// SIGTERM with a request in flight: the listeners close at once (a new connection is
/// refused, on the front door and on an HTTP target's own listener), the request still
/// gets its whole answer, an idle connection does not hold the stop for the whole grace,
/// and the gateway records its stop, signs a last checkpoint that covers it, and exits 0.
/// An MCP upstream that answers with a redirect: the gateway does not follow it (it would
/// send the caller's request, and the upstream's credential, wherever the answer points), and
/// the caller is told what the upstream said.
#[tokio::test]
async fn an_mcp_upstream_redirect_is_not_followed() {
    let upstream = Upstream::start();
    let agent = api_key("redirect-agent", "agent", &["agents"]);
    let gw = Gateway::start(&format!(
        r#"{agent}
[targets.moved]
kind = "mcp"
url = "{base}/moved"

[[rules]]
name = "moved search"
target = "moved"
tools = ["search"]
"#,
        agent = agent.config,
        base = upstream.base().trim_end_matches('/'),
    ));
    let client = reqwest::Client::new();
    let (_, answer) = modern_call(
        &client,
        &gw.url("moved"),
        &agent.key,
        1,
        "tools/call",
        serde_json::json!({"name": "search", "arguments": {}}),
    )
    .await;
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 307"), "{answer}");
    let asked: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert!(asked.iter().any(|t| t == "/moved"), "{asked:?}");
    assert!(!asked.iter().any(|t| t == "/elsewhere"), "{asked:?}");
}

#[tokio::test]
async fn a_stop_finishes_the_request_in_flight_refuses_new_connections_and_signs_the_stop() {
    let upstream = Upstream::start();
    let agent = api_key("stop-agent", "agent", &["agents"]);
    let own = free_port();
    let keys = tempfile::tempdir().unwrap();
    let key_dir = keys.path().join("audit-key");
    let published = keys.path().join("published");
    let made = std::process::Command::new(binary())
        .args(["keys", "audit-init", "--out"])
        .arg(&key_dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let rest = format!(
        r#"{agent}
[audit]
signing_key = {key:?}
checkpoint_dir = {published:?}

[targets.customers]
kind = "http"
upstream = "{base}"
listen = "127.0.0.1:{own}"

[[rules]]
name = "slow reads"
target = "customers"
http.methods = ["GET"]
http.paths = ["/slow"]
"#,
        agent = agent.config,
        key = key_dir.display().to_string(),
        published = published.display().to_string(),
        base = upstream.base(),
        own = own,
    );
    let mut gw = Gateway::start_with(&rest, "shutdown_grace = \"12s\"", &[]);
    let addr = gw.addr;
    let own_addr: std::net::SocketAddr = format!("127.0.0.1:{own}").parse().unwrap();
    // A client's idle keep-alive connection on the target's own listener.
    let idle = std::net::TcpStream::connect(own_addr).unwrap();
    let slow = tokio::spawn({
        let (url, key) = (
            format!("http://{addr}/http/customers/slow"),
            agent.key.clone(),
        );
        async move {
            let answer = reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await?;
            let status = answer.status();
            let body = answer.text().await?;
            Ok::<_, reqwest::Error>((status, body, Instant::now()))
        }
    });
    // In flight: the upstream has it and answers in 3 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    let stopping = std::thread::spawn(move || {
        let clean = gw.terminate();
        (gw, clean, Instant::now())
    });
    // Both listeners stop accepting at once: refused, not left in a backlog.
    for listener in [addr, own_addr] {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match std::net::TcpStream::connect_timeout(&listener, Duration::from_millis(200)) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "{listener}: a new connection is still taken during the drain: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let (status, body, answered) = slow
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"slow\":true"), "{body}");
    let (gw, clean, exited) = stopping.join().unwrap();
    assert!(clean, "the gateway exits 0 after the drain");
    assert!(exited >= answered, "the gateway waited for the answer");
    // The slow answer takes 3 s; the idle connection was closed, not waited for (12 s).
    let took = exited - signalled;
    assert!(took < Duration::from_secs(9), "the stop took {took:?}");
    drop(idle);

    let events = gw.events();
    let slow_event = events
        .iter()
        .find(|e| e["type"] == "request" && e["target"] == "customers")
        .expect("the request's event");
    assert_eq!(slow_event["outcome"], "success", "{slow_event}");
    assert_eq!(events.last().unwrap()["type"], "gateway.stop");
    // The last checkpoint published covers every event, the stop included.
    let mut names: Vec<String> = std::fs::read_dir(&published)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".checkpoint"))
        .collect();
    names.sort();
    assert_eq!(
        names.last().map(String::as_str),
        Some(format!("{:020}.checkpoint", events.len()).as_str()),
        "{names:?}"
    );
}
