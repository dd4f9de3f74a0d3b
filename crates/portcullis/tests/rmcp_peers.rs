//! The gateway between real MCP peers written with the rmcp SDK: an rmcp client (streamable
//! HTTP, session-based) talks through the real `portcullis` binary to rmcp servers over
//! streamable HTTP (in this process) and over stdio (the `rmcp_stdio_server` example), and to
//! the built-in demo server.

mod common;
#[path = "support/rmcp_tools.rs"]
mod rmcp_tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, Implementation, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"))
}

// ---------------------------------------------------------------------------------------
// The client.

/// An rmcp client that records progress notifications and answers elicitations.
#[derive(Clone)]
struct TestClient {
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
    elicited: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("rmcp-peers-test", "1.0.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        match request {
            ElicitRequestParams::FormElicitationParams { message, .. } => {
                self.elicited.lock().unwrap().push(message);
                Ok(ElicitResult::new(ElicitationAction::Accept)
                    .with_content(json!({"name": "Ada"})))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }
}

struct Connected {
    client: RunningService<RoleClient, TestClient>,
    progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
    elicited: Arc<Mutex<Vec<String>>>,
}

/// Connects a session-based rmcp client to `url` with `key` as its bearer token.
async fn connect(url: &str, key: &str) -> Connected {
    let (tx, progress) = mpsc::unbounded_channel();
    let elicited = Arc::new(Mutex::new(Vec::new()));
    let handler = TestClient {
        progress: tx,
        elicited: elicited.clone(),
    };
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string()),
    );
    let client = bounded("initialize", handler.serve(transport))
        .await
        .expect("the rmcp client initializes through the gateway");
    Connected {
        client,
        progress,
        elicited,
    }
}

async fn call(
    client: &RunningService<RoleClient, TestClient>,
    tool: &str,
    args: Value,
) -> Result<Value, ErrorData> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    match bounded(tool, client.call_tool(params)).await {
        Ok(result) => Ok(serde_json::to_value(result).unwrap()),
        Err(ServiceError::McpError(e)) => Err(e),
        Err(other) => panic!("{tool}: transport-level failure instead of an MCP answer: {other}"),
    }
}

/// The text of the first content block of a tool result.
fn text(result: &Value) -> &str {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {result}"))
}

async fn tool_names(client: &RunningService<RoleClient, TestClient>) -> Vec<String> {
    let tools = bounded("tools/list", client.list_all_tools())
        .await
        .expect("tools/list");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names
}

/// Progress notifications until `n` have arrived.
async fn progress(
    rx: &mut mpsc::UnboundedReceiver<ProgressNotificationParam>,
    n: usize,
) -> Vec<ProgressNotificationParam> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(
            bounded("progress notification", rx.recv())
                .await
                .expect("progress channel open"),
        );
    }
    got
}

/// Closes the client (the transport sends DELETE for its session).
async fn close(connected: Connected) {
    bounded("close", connected.client.cancel())
        .await
        .expect("client closes cleanly");
}

// ---------------------------------------------------------------------------------------
// Upstreams.

/// An rmcp server over streamable HTTP, in this process, that records the Authorization
/// header of every request it receives.
struct HttpUpstream {
    url: String,
    authorization: Arc<Mutex<Vec<Option<String>>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn http_upstream(legacy_only: bool) -> HttpUpstream {
    let service = StreamableHttpService::new(
        move || Ok(rmcp_tools::Tools::new(legacy_only)),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let authorization = Arc::new(Mutex::new(Vec::new()));
    let seen = authorization.clone();
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let seen = seen.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or("<not text>").to_string());
                    seen.lock().unwrap().push(auth);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    HttpUpstream {
        url: format!("http://{addr}/mcp"),
        authorization,
        server,
    }
}

/// The `rmcp_stdio_server` example, built on first use (`cargo test --test rmcp_peers` builds
/// only the test target, so the example may be missing or stale).
fn stdio_server() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/<profile>/deps/rmcp_peers-<hash> -> target/<profile>/examples/
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "portcullis",
            "--example",
            "rmcp_stdio_server",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the stdio example");
        assert!(
            status.success(),
            "building the rmcp_stdio_server example failed"
        );
        let path = profile_dir
            .join("examples")
            .join(format!("rmcp_stdio_server{}", std::env::consts::EXE_SUFFIX));
        assert!(path.exists(), "{} was not built", path.display());
        path
    })
}

fn stdio_command(legacy_only: bool) -> String {
    let mut parts = vec![format!("{:?}", stdio_server().display().to_string())];
    if legacy_only {
        parts.push("\"--legacy\"".into());
    }
    format!("command = [{}]", parts.join(", "))
}

// ---------------------------------------------------------------------------------------
// Policy and audit.

/// Agents may use every tool of `target` except the secret ones.
fn tool_rules(target: &str) -> String {
    format!(
        r#"
[[rules]]
name = "agents use the {target} tools"
who.groups = ["agents"]
target = "{target}"
tools = ["*"]

[[rules]]
name = "no secrets for agents on {target}"
who.kinds = ["agent"]
target = "{target}"
tools = ["secret_*"]
decision = "deny"
reason = "secrets stay with humans"
"#
    )
}

const VISIBLE: [&str; 6] = ["add", "ask_name", "count", "echo", "pid", "sleep"];

/// Polls the audit log until `done` holds of it; bounded.
fn wait_for_events(gw: &Gateway, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = gw.events();
        if done(&events) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the audit log within {WAIT:?}; events: {events:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn calls<'a>(events: &'a [Value], session: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "request" && e["action"] == "tools/call" && e["session"] == session
        })
        .collect()
}

/// list, allowed calls, a denied call and progress: what every upstream must get right.
async fn list_call_deny_progress(c: &mut Connected, rule_prefix: &str) {
    assert_eq!(
        tool_names(&c.client).await,
        VISIBLE,
        "the deny rule hides secret_tool"
    );
    let sum = call(&c.client, "add", json!({"a": 2, "b": 40}))
        .await
        .expect("add is allowed");
    assert_eq!(text(&sum), "42");
    assert_ne!(sum["isError"], true);
    let echo = call(&c.client, "echo", json!({"text": "through the portcullis"}))
        .await
        .expect("echo");
    assert_eq!(text(&echo), "through the portcullis");

    let denied = call(&c.client, "secret_tool", json!({}))
        .await
        .expect_err("secret_tool is denied");
    assert_eq!(denied.code.0, -32010, "{denied:?}");
    let rule = rule_prefix;
    assert!(
        denied.message.contains(rule),
        "the refusal names the rule: {denied:?}"
    );
    assert!(
        denied.message.contains("secrets stay with humans"),
        "and its reason: {denied:?}"
    );
    assert_eq!(denied.data.as_ref().unwrap()["rule"], rule);

    let counted = call(&c.client, "count", json!({"steps": 3}))
        .await
        .expect("count");
    assert_eq!(text(&counted), "counted to 3");
    let steps = progress(&mut c.progress, 3).await;
    // rmcp runs each notification handler in a task of its own, so the order in which the
    // handler sees them is not the wire order: compare as a set.
    let mut values: Vec<f64> = steps.iter().map(|p| p.progress).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        [1.0, 2.0, 3.0],
        "every progress notification relayed"
    );
    for p in &steps {
        assert_eq!(p.total, Some(3.0));
        assert_eq!(
            p.message.as_deref(),
            Some(format!("step {}", p.progress).as_str())
        );
    }
}

fn session_id_of(events: &[Value], client_name: &str, target: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "session.start" && e["target"] == target)
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains(client_name))
        })
        .map(|e| e["session"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// 1. rmcp client -> gateway -> rmcp server over streamable HTTP (session-based upstream, so
/// the client's session has its own upstream session): the handshake, a filtered list, real
/// results, a denial naming its rule, progress and an elicitation relayed both ways, and the
/// session's audit trail through to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_to_rmcp_http_server() {
    let upstream = http_upstream(true).await;
    let agent = api_key("tools-agent", "agent", &["agents"]);
    let config = format!(
        "{}[targets.tools]\nkind = \"mcp\"\nurl = {:?}\n{}",
        agent.config,
        upstream.url,
        tool_rules("tools")
    );
    let gw = Gateway::start(&config);
    let mut c = connect(&gw.url("tools"), &agent.key).await;

    let info = c
        .client
        .peer_info()
        .expect("the server's initialize answer");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("rmcp-test-tools"),
        "the upstream's own initialize answer is relayed"
    );

    list_call_deny_progress(&mut c, "no secrets for agents on tools").await;

    // A server-to-client request in the middle of a call: relayed to the client, its answer
    // relayed back, and the call completes with it.
    let greeting = call(&c.client, "ask_name", json!({}))
        .await
        .expect("ask_name");
    assert_eq!(text(&greeting), "hello, Ada");
    assert_eq!(*c.elicited.lock().unwrap(), ["What is your name?"]);

    // The upstream never saw the caller's API key (no upstream_auth is configured here).
    let seen = upstream.authorization.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(Option::is_none),
        "no Authorization reaches this upstream: {seen:?}"
    );

    close(c).await;
    let events = wait_for_events(&gw, "session.end", |ev| {
        ev.iter().any(|e| e["type"] == "session.end")
    });
    let sessions = session_id_of(&events, "rmcp-peers-test", "tools");
    assert_eq!(sessions.len(), 1, "one client session: {events:#?}");
    let session = &sessions[0];
    let start = events
        .iter()
        .find(|e| e["type"] == "session.start" && e["session"] == *session)
        .unwrap();
    assert_eq!(start["identity"]["subject"], "tools-agent");
    assert!(start["detail"].as_str().unwrap().contains("2025-11-25"));
    let end = events.iter().find(|e| e["type"] == "session.end").unwrap();
    assert_eq!(end["session"], *session);
    assert_eq!(end["detail"], "closed by the client");

    let calls = calls(&events, session);
    let tools: Vec<&str> = calls
        .iter()
        .map(|e| e["resource"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["add", "echo", "secret_tool", "count", "ask_name"]);
    for e in &calls {
        let denied = e["resource"] == "secret_tool";
        assert_eq!(e["decision"], if denied { "deny" } else { "allow" }, "{e}");
        assert_eq!(
            e["outcome"],
            if denied { "denied" } else { "success" },
            "{e}"
        );
        let rule = if denied {
            "no secrets for agents on tools"
        } else {
            "agents use the tools tools"
        };
        assert_eq!(e["rule"], rule);
    }
    // The client's answer to the elicitation is recorded too.
    assert!(
        events.iter().any(|e| e["type"] == "notification"
            && e["action"] == "response"
            && e["session"] == *session),
        "the elicitation answer is recorded"
    );
    // Every event of the session comes before its end.
    let end_seq = events
        .iter()
        .position(|e| e["type"] == "session.end")
        .unwrap();
    assert!(
        events
            .iter()
            .skip(end_seq + 1)
            .all(|e| e["session"] != *session)
    );
}

/// 2. rmcp client -> gateway -> rmcp server over stdio, both when the server is
/// session-based (a process per client session, elicitation relayed) and when it speaks the
/// stateless 2026-07-28 revision (the gateway answers `initialize` and translates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_to_rmcp_stdio_server() {
    let agent = api_key("stdio-agent", "agent", &["agents"]);
    let config = format!(
        "{}[targets.legacy]\nkind = \"mcp\"\n{}\n\n[targets.modern]\nkind = \"mcp\"\n{}\n{}{}",
        agent.config,
        stdio_command(true),
        stdio_command(false),
        tool_rules("legacy"),
        tool_rules("modern"),
    );
    let gw = Gateway::start(&config);

    let mut legacy = connect(&gw.url("legacy"), &agent.key).await;
    assert_eq!(
        legacy
            .client
            .peer_info()
            .unwrap()
            .server_info
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("rmcp-test-tools")
    );
    list_call_deny_progress(&mut legacy, "no secrets for agents on legacy").await;
    let greeting = call(&legacy.client, "ask_name", json!({}))
        .await
        .expect("ask_name over stdio");
    assert_eq!(text(&greeting), "hello, Ada");
    assert_eq!(*legacy.elicited.lock().unwrap(), ["What is your name?"]);

    let mut modern = connect(&gw.url("modern"), &agent.key).await;
    let info = modern.client.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("rmcp-test-tools"),
        "the gateway's initialize answer carries the upstream's identity"
    );
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    list_call_deny_progress(&mut modern, "no secrets for agents on modern").await;

    close(legacy).await;
    close(modern).await;
    let events = wait_for_events(&gw, "both session ends", |ev| {
        ev.iter().filter(|e| e["type"] == "session.end").count() == 2
    });
    for target in ["legacy", "modern"] {
        let sessions = session_id_of(&events, "rmcp-peers-test", target);
        assert_eq!(sessions.len(), 1, "{target}");
        let tools: Vec<&str> = calls(&events, &sessions[0])
            .iter()
            .map(|e| e["resource"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if target == "legacy" {
            &["add", "echo", "secret_tool", "count", "ask_name"]
        } else {
            &["add", "echo", "secret_tool", "count"]
        };
        assert_eq!(tools, expected, "{target}");
    }
}

/// 3. rmcp client (session-based) -> gateway -> the built-in demo server, which speaks
/// 2026-07-28: the gateway answers `initialize` itself and translates every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_to_demo_server() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let config = format!(
        r#"{}
[targets.billing]
kind = "mcp"
{}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]

[[rules]]
name = "agents never delete customers"
who.kinds = ["agent"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting customers is a human decision"
"#,
        agent.config,
        demo_server_command()
    );
    let gw = Gateway::start(&config);
    let c = connect(&gw.url("billing"), &agent.key).await;
    assert_eq!(
        c.client.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2025_11_25
    );

    assert_eq!(tool_names(&c.client).await, ["lookup_customer"]);
    let found = call(
        &c.client,
        "lookup_customer",
        json!({"customer": "cus_1002"}),
    )
    .await
    .expect("lookup");
    assert_eq!(found["structuredContent"]["id"], "cus_1002");
    assert_eq!(found["structuredContent"]["name"], "Grace Hopper");
    assert!(found.get("resultType").is_none() || found["resultType"] == "complete");

    let denied = call(
        &c.client,
        "delete_customer",
        json!({"customer": "cus_1002"}),
    )
    .await
    .expect_err("denied");
    assert_eq!(denied.code.0, -32010);
    assert!(
        denied.message.contains("agents never delete customers"),
        "{denied:?}"
    );
    // Default deny for a tool no rule allows.
    let refund = call(
        &c.client,
        "refund_payment",
        json!({"customer": "cus_1002", "amount": 5}),
    )
    .await
    .expect_err("no rule allows refunds");
    assert_eq!(refund.data.as_ref().unwrap()["rule"], "default-deny");

    close(c).await;
    let events = wait_for_events(&gw, "session.end", |ev| {
        ev.iter().any(|e| e["type"] == "session.end")
    });
    let sessions = session_id_of(&events, "rmcp-peers-test", "billing");
    assert_eq!(sessions.len(), 1);
    let outcomes: Vec<(&str, &str)> = calls(&events, &sessions[0])
        .iter()
        .map(|e| {
            (
                e["resource"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("lookup_customer", "success"),
            ("delete_customer", "denied"),
            ("refund_payment", "denied")
        ]
    );
}

/// 4. The gateway injects the upstream's own credential and never forwards the caller's: here
/// in front of an rmcp HTTP server that speaks 2026-07-28 (so requests are translated too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credential_is_injected_and_the_callers_never_forwarded() {
    let upstream = http_upstream(false).await;
    let agent = api_key("creds-agent", "agent", &["agents"]);
    let secret = "upstream-secret-0123456789";
    let config = format!(
        "{}[targets.tools]\nkind = \"mcp\"\nurl = {:?}\nupstream_auth = {{ env = \"UPSTREAM_TOKEN\" }}\n{}",
        agent.config,
        upstream.url,
        tool_rules("tools")
    );
    let gw = Gateway::start_with(&config, "", &[("UPSTREAM_TOKEN", secret)]);
    let mut c = connect(&gw.url("tools"), &agent.key).await;
    list_call_deny_progress(&mut c, "no secrets for agents on tools").await;
    close(c).await;

    let seen = upstream.authorization.lock().unwrap().clone();
    assert!(seen.len() >= 5, "the upstream was reached: {seen:?}");
    let expected = format!("Bearer {secret}");
    for auth in &seen {
        assert_eq!(
            auth.as_deref(),
            Some(expected.as_str()),
            "every upstream request carries the gateway's credential"
        );
    }
    assert!(
        !format!("{seen:?}").contains(&agent.key),
        "the caller's API key never reaches the upstream"
    );
    // Nor does the secret reach the audit log.
    let events = gw.events();
    assert!(!serde_json::to_string(&events).unwrap().contains(secret));
}

/// 5. The stdio upstream dies in the middle of a call: the caller gets a clear error at once,
/// another target keeps working, and the rmcp client's next request lands in a new session
/// with a fresh upstream process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_mid_session() {
    let upstream = http_upstream(true).await;
    let agent = api_key("resilient-agent", "agent", &["agents"]);
    let config = format!(
        "{}[targets.local]\nkind = \"mcp\"\n{}\n\n[targets.remote]\nkind = \"mcp\"\nurl = {:?}\n{}{}",
        agent.config,
        stdio_command(true),
        upstream.url,
        tool_rules("local"),
        tool_rules("remote"),
    );
    let gw = Gateway::start(&config);
    let mut local = connect(&gw.url("local"), &agent.key).await;
    let remote = connect(&gw.url("remote"), &agent.key).await;

    let pid = text(&call(&local.client, "pid", json!({})).await.expect("pid")).to_string();

    // A long call that reports progress once it is running upstream.
    let peer = local.client.peer().clone();
    let in_flight = tokio::spawn(async move {
        let params = CallToolRequestParams::new("sleep")
            .with_arguments(json!({"ms": 60_000}).as_object().unwrap().clone());
        bounded(
            "the call to the dying upstream",
            peer.call_tool_once(params),
        )
        .await
    });
    let started = progress(&mut local.progress, 1).await;
    assert_eq!(started[0].message.as_deref(), Some("sleeping"));

    let killed = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap();
    assert!(killed.success(), "kill the stdio upstream {pid}");

    let failed = in_flight.await.unwrap();
    let Err(ServiceError::McpError(e)) = failed else {
        panic!("the in-flight call fails with an MCP error, got {failed:?}");
    };
    assert_eq!(e.code.0, -32012, "{e:?}");
    assert!(
        e.message.contains("upstream local") && e.message.contains("exited"),
        "a clear error: {e:?}"
    );

    // The other target is unaffected.
    let sum = call(&remote.client, "add", json!({"a": 1, "b": 1}))
        .await
        .expect("the other target still works");
    assert_eq!(text(&sum), "2");

    // The dead session is gone (404); the rmcp client re-initializes by itself and lands on
    // a new upstream process.
    let again = call(&local.client, "pid", json!({}))
        .await
        .expect("a new session after the upstream died");
    assert_ne!(text(&again), pid, "a fresh upstream process");

    close(local).await;
    close(remote).await;
    let events = wait_for_events(&gw, "three session ends", |ev| {
        ev.iter().filter(|e| e["type"] == "session.end").count() == 3
    });
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "session.end" && e["detail"] == "the upstream went away"),
        "the dead session's end is recorded: {events:#?}"
    );
    let sleep = events
        .iter()
        .find(|e| e["type"] == "request" && e["resource"] == "sleep")
        .unwrap();
    assert_eq!(sleep["outcome"], "failed");
    assert!(sleep["detail"].as_str().unwrap().contains("exited"));
}
