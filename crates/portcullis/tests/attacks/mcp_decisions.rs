//! Attacks on what the MCP gateway decides: fields that disagree with what the upstream acts
//! on, methods without a decision, list and completion results that leak what policy denies,
//! upstream processes spawned for callers no rule allows, non-conformant stateless envelopes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Gateway, Key, MODERN, api_key, last_message, modern_call, python};

/// A stdio MCP server in Python (session era: it refuses `server/discover`) that logs every
/// line it receives to `argv[1]` and answers `resources/read` with the URI it actually read
/// (`params.uri`, as the specification says a server does), `resources/subscribe` with
/// an empty result, and `resources/templates/list` with `docs://public/{name}` and
/// `docs://secret/{name}`.
const RESOURCE_SERVER: &str = r#"
import json, sys
log_path = sys.argv[1]
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if not line:
        continue
    with open(log_path, "a") as f:
        f.write(line + "\n")
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": p.get("protocolVersion", "2025-11-25"),
              "capabilities": {"resources": {"subscribe": True}}, "serverInfo": {"name": "resources", "version": "1"}}})
    elif m == "resources/read":
        uri = p["uri"]
        send({"jsonrpc": "2.0", "id": i, "result": {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "CONTENT OF " + uri}]}})
    elif m == "resources/subscribe":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    elif m == "resources/templates/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"resourceTemplates": [
            {"uriTemplate": "docs://public/{name}", "name": "public doc"},
            {"uriTemplate": "docs://secret/{name}", "name": "secret doc"}]}})
    elif m == "ping":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

const ALLOWED: &str = "docs://public/readme";
const FORBIDDEN: &str = "docs://secret/payroll";

/// Writes the resource server to `dir`; returns the `command = [...]` line and its log.
fn resource_server(dir: &Path) -> (String, PathBuf) {
    let script = dir.join("resources.py");
    std::fs::write(&script, RESOURCE_SERVER).unwrap();
    let log = dir.join("resources.log");
    let command = format!(
        "command = [{:?}, {:?}, {:?}]",
        python(),
        script.display().to_string(),
        log.display().to_string()
    );
    (command, log)
}

/// A gateway in front of the resource server where `agent` may read only `docs://public/*`.
fn resources_gateway(agent: &Key) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (command, log) = resource_server(dir.path());
    let rest = format!(
        r#"{key}
[targets.docs]
kind = "mcp"
{command}

[[rules]]
name = "agents read public docs"
who.groups = ["agents"]
target = "docs"
resources = ["docs://public/*"]
"#,
        key = agent.config
    );
    (Gateway::start_in(dir, &rest, "", &[]), log)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs `body` with the caller's key and `headers`; returns the status and the last message.
async fn post(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = client
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, last_message(&resp.text().await.unwrap()), headers)
}

/// Opens a session-era session; returns its id.
async fn open_session(client: &reqwest::Client, url: &str, key: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "1"}}});
    let (status, body, headers) = post(client, url, key, &[], &init).await;
    assert_eq!(status, 200, "initialize: {body}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_string();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    post(client, url, key, &h, &initialized).await;
    session
}

/// The `_meta` a 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "attacker", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn upstream_saw(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(needle))
}

/// Whether the upstream logs `needle` within a few seconds: a notification is answered 202
/// before it is relayed, so what the upstream saw is written a moment after the answer.
async fn upstream_sees(log: &Path, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if upstream_saw(log, needle) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

/// Issue 13, item 1: `resources/read` was decided on `params.name` while the upstream reads
/// `params.uri`; an allowed `name` beside a forbidden `uri` read the forbidden resource in
/// both eras, and the audit event named the allowed one.
#[tokio::test(flavor = "multi_thread")]
async fn resources_read_with_an_allowed_name_and_a_forbidden_uri_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = resources_gateway(&agent);
    let client = client();
    let url = gw.url("docs");

    // The honest read works, so the refusals below are about the disagreement.
    let session = open_session(&client, &url, &agent.key).await;
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let read = |id: u64, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": params});
    let (_, ok, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &read(1, json!({"uri": ALLOWED})),
    )
    .await;
    assert_eq!(
        ok["result"]["contents"][0]["text"],
        format!("CONTENT OF {ALLOWED}"),
        "{ok}"
    );

    // Session era.
    let smuggled = read(2, json!({"name": ALLOWED, "uri": FORBIDDEN}));
    let (status, body, _) = post(&client, &url, &agent.key, &h, &smuggled).await;
    assert_eq!(
        body["error"]["code"], -32602,
        "session era: {status} {body}"
    );
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    // Stateless era, with Mcp-Name naming the allowed URI.
    let mut params = json!({"name": ALLOWED, "uri": FORBIDDEN});
    params["_meta"] = modern_meta();
    let h = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "resources/read"),
        ("mcp-name", ALLOWED),
    ];
    let (status, body, _) = post(&client, &url, &agent.key, &h, &read(3, params)).await;
    assert_eq!(
        body["error"]["code"], -32602,
        "stateless era: {status} {body}"
    );
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    // A forbidden uri with an Mcp-Name header naming an allowed one is a header mismatch.
    let mut params = json!({"uri": FORBIDDEN});
    params["_meta"] = modern_meta();
    let (_, body, _) = post(&client, &url, &agent.key, &h, &read(4, params)).await;
    assert!(body.get("error").is_some(), "{body}");
    assert!(!body.to_string().contains("CONTENT OF"), "{body}");

    assert!(
        !upstream_saw(&log, FORBIDDEN),
        "the forbidden resource reached the upstream"
    );
    // The events name the real target of the refused requests.
    let events = gw.events();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "resources/read" && e["outcome"] != "success")
        .collect();
    assert!(refused.len() >= 3, "{events:#?}");
    for e in &refused {
        assert_eq!(e["resource"], FORBIDDEN, "{e}");
    }
}

/// Issue 13, item 6: `resources/subscribe` was not decided, so a caller could subscribe to
/// (and be told of every change to) a resource it may not read.
#[tokio::test(flavor = "multi_thread")]
async fn resources_subscribe_to_a_forbidden_uri_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = resources_gateway(&agent);
    let client = client();
    let url = gw.url("docs");
    let session = open_session(&client, &url, &agent.key).await;
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let subscribe = |id: u64, uri: &str| json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe", "params": {"uri": uri}});
    let (_, ok, _) = post(&client, &url, &agent.key, &h, &subscribe(1, ALLOWED)).await;
    assert!(ok.get("result").is_some(), "{ok}");
    let (_, body, _) = post(&client, &url, &agent.key, &h, &subscribe(2, FORBIDDEN)).await;
    assert!(body.get("error").is_some(), "{body}");
    assert!(
        !upstream_saw(&log, FORBIDDEN),
        "the subscription reached the upstream"
    );
    let events = gw.events();
    assert!(
        events.iter().any(|e| e["action"] == "resources/subscribe"
            && e["resource"] == FORBIDDEN
            && e["decision"] == "deny"),
        "{events:#?}"
    );
}

/// A stdio MCP server in Python (session era) that logs every line it receives to `argv[1]`
/// and answers whatever reaches it: `tools/call` of any name (listed or not; `ask_roots`
/// first asks the client for its roots with the request id `"srv-1"`), `completion/complete`
/// for any reference, and every other request with an empty result. What reaches it is
/// what the gateway let through.
const PERMISSIVE_SERVER: &str = r#"
import json, sys
log_path = sys.argv[1]
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if not line:
        continue
    with open(log_path, "a") as f:
        f.write(line + "\n")
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "server/discover":
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
    elif m == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": p.get("protocolVersion", "2025-11-25"),
              "capabilities": {"tools": {}, "prompts": {}, "completions": {}}, "serverInfo": {"name": "permissive", "version": "1"}}})
    elif m == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "ask_roots", "inputSchema": {"type": "object"}}]}})
    elif m == "tools/call":
        if p.get("name") == "ask_roots":
            send({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": "RAN " + str(p.get("name"))}]}})
    elif m == "completion/complete":
        ref = p.get("ref") or {}
        what = ref.get("name") or ref.get("uri")
        send({"jsonrpc": "2.0", "id": i, "result": {"completion": {"values": ["COMPLETION FOR " + str(what)]}}})
    else:
        send({"jsonrpc": "2.0", "id": i, "result": {}})
"#;

/// A gateway in front of the permissive server (target `app`): `agent` may call any tool,
/// get the `public_*` prompts and read `docs://public/*`; `extra` is added to the target.
fn permissive_gateway(keys: &[&Key], extra: &str) -> (Gateway, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("permissive.py");
    std::fs::write(&script, PERMISSIVE_SERVER).unwrap();
    let log = dir.path().join("permissive.log");
    let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
    let rest = format!(
        r#"{keys}
[targets.app]
kind = "mcp"
command = [{python:?}, {script:?}, {log:?}]
{extra}

[[rules]]
name = "agents use the app"
who.groups = ["agents"]
target = "app"
tools = ["*"]
prompts = ["public_*"]
resources = ["docs://public/*"]
"#,
        python = python(),
        script = script.display().to_string(),
        log = log.display().to_string(),
    );
    (Gateway::start_in(dir, &rest, "", &[]), log)
}

fn session_headers(session: &str) -> [(&str, &str); 2] {
    [
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
    ]
}

/// Issue 13, item 6: a method the gateway has no decision for (unknown, or a known one
/// spelled with other case, which a lenient upstream may still dispatch) and a second
/// `initialize` on an open session were forwarded to the upstream as "protocol" methods.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_miscased_methods_and_a_second_initialize_are_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let session = open_session(&client, &url, &agent.key).await;
    let h = session_headers(&session);

    for (id, method) in [
        (1, "Tools/Call"),
        (2, "TOOLS/CALL"),
        (3, "admin/exec"),
        (4, "resources/Read"),
    ] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": method,
            "params": {"name": "echo", "uri": "docs://secret/x"}});
        let (status, body, _) = post(&client, &url, &agent.key, &h, &call).await;
        assert_eq!(body["error"]["code"], -32601, "{method}: {status} {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(method),
            "the refusal names the method: {body}"
        );
        assert!(
            !upstream_saw(&log, &format!("\"method\": \"{method}\"")),
            "{method} reached the upstream"
        );
    }

    // A second handshake on the open session.
    let again = json!({"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "second-handshake", "version": "1"}}});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &again).await;
    assert_eq!(body["error"]["code"], -32600, "{status} {body}");
    assert!(!upstream_saw(&log, "second-handshake"));

    // The stateless era has no initialize and no logging/setLevel: neither reaches the
    // target's shared upstream.
    for (id, method, params) in [
        (
            6,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "stateless-handshake", "version": "1"}}),
        ),
        (7, "logging/setLevel", json!({"level": "debug"})),
        (8, "tools/Call", json!({"name": "echo"})),
    ] {
        let (status, body) = modern_call(&client, &url, &agent.key, id, method, params).await;
        assert_eq!(body["error"]["code"], -32601, "{method}: {status} {body}");
    }
    assert!(!upstream_saw(&log, "stateless-handshake"));
    assert!(!upstream_saw(&log, "logging/setLevel"));
    assert!(!upstream_saw(&log, "tools/Call"));

    // Known methods still work.
    let (_, ok, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
    )
    .await;
    assert!(ok.get("result").is_some(), "{ok}");
    let events = gw.events();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "Tools/Call" && e["outcome"] == "rejected"),
        "the refusal is audited: {events:#?}"
    );
}

/// Issue 13, item 6: any `notifications/*` a client made up (or one only servers send, like
/// `notifications/resources/updated`) was relayed to the upstream, undecided.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_the_specification_does_not_give_clients_are_not_relayed() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let session = open_session(&client, &url, &agent.key).await;
    let h = session_headers(&session);
    for method in [
        "notifications/resources/updated",
        "notifications/tools/list_changed",
        "notifications/admin/reload",
        "notifications/Cancelled",
    ] {
        let note = json!({"jsonrpc": "2.0", "method": method,
            "params": {"uri": "docs://secret/forged"}});
        let (status, body, _) = post(&client, &url, &agent.key, &h, &note).await;
        assert_eq!(status, 400, "{method}: {body}");
        assert_eq!(body["error"]["code"], -32601, "{method}: {body}");
        assert!(!upstream_saw(&log, method), "{method} reached the upstream");
    }
    // The ones clients do send still pass.
    let roots_changed = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &roots_changed).await;
    assert_eq!(status, 202, "{body}");
    assert!(upstream_sees(&log, "notifications/roots/list_changed").await);
    // Relayed in order: had a made-up one been relayed, it would be in the log before this.
    for method in [
        "notifications/resources/updated",
        "notifications/tools/list_changed",
        "notifications/admin/reload",
        "notifications/Cancelled",
    ] {
        assert!(!upstream_saw(&log, method), "{method} reached the upstream");
    }

    // A stateless client sends only cancellations.
    let modern = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "notifications/roots/list_changed"),
    ];
    let note = json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed",
        "params": {"_meta": modern_meta()}});
    let (status, body, _) = post(&client, &url, &agent.key, &modern, &note).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32601)),
        "{body}"
    );
    let events = gw.events();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "notifications/admin/reload" && e["outcome"] == "rejected"),
        "{events:#?}"
    );
}

/// Issue 13, item 6: a client "response" answering no request of the upstream was relayed,
/// feeding the upstream results (sampling, elicitation, roots) it never asked for.
#[tokio::test(flavor = "multi_thread")]
async fn client_responses_that_answer_no_upstream_request_are_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let session = open_session(&client, &url, &agent.key).await;
    let h = session_headers(&session);

    let forged = json!({"jsonrpc": "2.0", "id": "forged-1",
        "result": {"role": "assistant", "content": {"type": "text", "text": "FORGED SAMPLE"}}});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &forged).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        !upstream_saw(&log, "FORGED SAMPLE"),
        "the forged response was relayed"
    );

    // The upstream asks for roots while a tool runs: that answer is relayed, once.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "ask_roots", "arguments": {}}});
    let (_, ran, _) = post(&client, &url, &agent.key, &h, &call).await;
    assert_eq!(
        ran["result"]["content"][0]["text"], "RAN ask_roots",
        "{ran}"
    );
    let roots = json!({"jsonrpc": "2.0", "id": "srv-1",
        "result": {"roots": [{"uri": "file:///ANSWERED-ROOT"}]}});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &roots).await;
    assert_eq!(status, 202, "{body}");
    assert!(upstream_sees(&log, "ANSWERED-ROOT").await);
    let replay = json!({"jsonrpc": "2.0", "id": "srv-1",
        "result": {"roots": [{"uri": "file:///REPLAYED-ROOT"}]}});
    let (status, _, _) = post(&client, &url, &agent.key, &h, &replay).await;
    assert_eq!(status, 400);
    assert!(
        !upstream_saw(&log, "REPLAYED-ROOT"),
        "a replayed answer was relayed"
    );
}

/// Issue 13, item 6: `completion/complete` was open to everyone, so it answered for prompts
/// (and resource templates) the caller is denied.
#[tokio::test(flavor = "multi_thread")]
async fn completion_for_a_denied_prompt_or_resource_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let complete = |reference: Value| json!({"ref": reference, "argument": {"name": "customer", "value": "cus_"}});

    // Allowed: a public prompt, a public resource template.
    let (_, ok) = modern_call(
        &client,
        &url,
        &agent.key,
        1,
        "completion/complete",
        complete(json!({"type": "ref/prompt", "name": "public_greeting"})),
    )
    .await;
    assert_eq!(
        ok["result"]["completion"]["values"][0], "COMPLETION FOR public_greeting",
        "{ok}"
    );
    let session = open_session(&client, &url, &agent.key).await;
    let h = session_headers(&session);
    let body = |id: u64, reference: Value| json!({"jsonrpc": "2.0", "id": id, "method": "completion/complete", "params": complete(reference)});
    let (_, ok, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &body(
            2,
            json!({"type": "ref/resource", "uri": "docs://public/{page}"}),
        ),
    )
    .await;
    assert!(ok.get("result").is_some(), "{ok}");

    // Denied: a prompt and a template no rule gives the agent, in both eras.
    let (_, denied) = modern_call(
        &client,
        &url,
        &agent.key,
        3,
        "completion/complete",
        complete(json!({"type": "ref/prompt", "name": "payroll_secrets"})),
    )
    .await;
    assert_eq!(denied["error"]["code"], -32010, "{denied}");
    let (_, denied, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &body(
            4,
            json!({"type": "ref/resource", "uri": "docs://secret/{employee}"}),
        ),
    )
    .await;
    assert_eq!(denied["error"]["code"], -32010, "{denied}");
    // A reference the gateway cannot read is not guessed at.
    let (_, invalid, _) = post(
        &client,
        &url,
        &agent.key,
        &h,
        &body(5, json!({"type": "ref/tool", "name": "payroll_secrets"})),
    )
    .await;
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
    assert!(!upstream_saw(&log, "payroll_secrets"));
    assert!(!upstream_saw(&log, "docs://secret/"));
    let events = gw.events();
    assert!(
        events.iter().any(|e| e["action"] == "completion/complete"
            && e["resource"] == "payroll_secrets"
            && e["decision"] == "deny"),
        "{events:#?}"
    );
}

/// Issue 13, item 6 (2026-07-28 side of `resources/subscribe`): `subscriptions/listen`
/// subscribes to resource URIs too, and each must be one the caller may read.
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_listen_to_a_forbidden_uri_is_refused() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let listen = |uris: &[&str]| json!({"notifications": {"resourceSubscriptions": uris}});
    let (_, denied) = modern_call(
        &client,
        &url,
        &agent.key,
        1,
        "subscriptions/listen",
        listen(&["docs://public/readme", "docs://secret/payroll"]),
    )
    .await;
    assert_eq!(denied["error"]["code"], -32010, "{denied}");
    assert!(!upstream_saw(&log, "docs://secret/payroll"));
    let (_, ok) = modern_call(
        &client,
        &url,
        &agent.key,
        2,
        "subscriptions/listen",
        listen(&["docs://public/readme"]),
    )
    .await;
    assert!(ok.get("result").is_some(), "{ok}");
    assert!(
        gw.events()
            .iter()
            .any(|e| e["action"] == "subscriptions/listen"
                && e["resource"] == "docs://secret/payroll"
                && e["decision"] == "deny")
    );
}

/// Issue 13, item 6: a tool the upstream never listed (so never pinned, never shown to
/// anyone) was callable by name under a broad rule.
#[tokio::test(flavor = "multi_thread")]
async fn a_tool_never_listed_is_not_callable() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");

    // No tools/list first: the gateway lists the tools itself and pins the one called.
    let (_, ok) = modern_call(
        &client,
        &url,
        &agent.key,
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {}}),
    )
    .await;
    assert_eq!(ok["result"]["content"][0]["text"], "RAN echo", "{ok}");
    assert!(upstream_sees(&log, "tools/list").await);

    let (_, refused) = modern_call(
        &client,
        &url,
        &agent.key,
        2,
        "tools/call",
        json!({"name": "hidden_debug_shell", "arguments": {}}),
    )
    .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let session = open_session(&client, &url, &agent.key).await;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "hidden_debug_shell", "arguments": {}}});
    let (_, refused, _) = post(&client, &url, &agent.key, &session_headers(&session), &call).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert!(
        !upstream_saw(&log, "hidden_debug_shell"),
        "the unlisted tool ran"
    );
}

/// Issue 13, item 7: any valid key, even one no rule matches, could open sessions (each a
/// new upstream process) until the target's limit, locking every other caller out.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_without_rules_spawns_nothing_and_one_key_cannot_take_every_process() {
    let agent = api_key("agent", "agent", &["agents"]);
    let other = api_key("other-agent", "agent", &["agents"]);
    let stranger = api_key("stranger", "agent", &["nobody"]);
    let (gw, log) = permissive_gateway(
        &[&agent, &other, &stranger],
        "max_processes = 4\nmax_sessions_per_identity = 2",
    );
    let client = client();
    let url = gw.url("app");
    let init = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": name, "version": "1"}}})
    };

    for _ in 0..6 {
        let (status, body, headers) =
            post(&client, &url, &stranger.key, &[], &init("stranger-client")).await;
        assert_eq!(body["error"]["code"], -32010, "{status} {body}");
        assert!(headers.get("mcp-session-id").is_none());
    }
    let (_, body) = modern_call(&client, &url, &stranger.key, 1, "tools/list", json!({})).await;
    assert_eq!(body["error"]["code"], -32010, "{body}");
    assert!(
        std::fs::read_to_string(&log).unwrap_or_default().is_empty(),
        "an upstream process was started for a key no rule matches"
    );

    // One key gets its share, and no more.
    for _ in 0..2 {
        open_session(&client, &url, &agent.key).await;
    }
    let (status, body, _) = post(&client, &url, &agent.key, &[], &init("greedy")).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions_per_identity"),
        "{body}"
    );
    // Another caller still gets in.
    open_session(&client, &url, &other.key).await;
    let events = gw.events();
    assert!(
        events.iter().any(|e| e["action"] == "initialize"
            && e["identity"]["subject"] == "stranger"
            && e["outcome"] == "denied"),
        "{events:#?}"
    );
}

/// Issue 13, item 15: a 2026-07-28 request without the `_meta` keys the specification
/// requires was forwarded, and a conformant upstream answered an opaque -32602.
#[tokio::test(flavor = "multi_thread")]
async fn stateless_requests_without_the_required_meta_are_refused_naming_the_keys() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, log) = permissive_gateway(&[&agent], "");
    let client = client();
    let url = gw.url("app");
    let h = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ];
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"marker": "NO-CAPABILITIES"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &call).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], -32602, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("io.modelcontextprotocol/clientCapabilities"),
        "{body}"
    );
    assert_eq!(
        body["error"]["data"]["missing"],
        json!(["io.modelcontextprotocol/clientCapabilities"])
    );
    assert!(!upstream_saw(&log, "NO-CAPABILITIES"));
    // No `_meta` at all: both required keys are named.
    let bare = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"marker": "NO-META"}}});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &bare).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32602)),
        "{body}"
    );
    assert_eq!(
        body["error"]["data"]["missing"],
        json!([
            "io.modelcontextprotocol/protocolVersion",
            "io.modelcontextprotocol/clientCapabilities"
        ])
    );
    assert!(!upstream_saw(&log, "NO-META"));

    // With the keys, the same call goes through.
    let (_, ok) = modern_call(
        &client,
        &url,
        &agent.key,
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"marker": "WITH-CAPABILITIES"}}),
    )
    .await;
    assert_eq!(ok["result"]["content"][0]["text"], "RAN echo", "{ok}");
    assert!(gw.events().iter().any(|e| {
        e["outcome"] == "rejected"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("clientCapabilities"))
    }));
}

/// Issue 13, item 15: the stateless requests the demo prints for people to paste lacked the
/// `_meta` keys 2026-07-28 requires. Each printed line must carry them and be answered by the
/// gateway with a decision, not with the envelope refusal.
#[tokio::test(flavor = "multi_thread")]
async fn the_demos_printed_stateless_requests_carry_the_required_meta() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// The demo process, killed however the test ends.
    struct Demo(std::process::Child);
    impl Drop for Demo {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let listen = crate::common::free_port();
    let address = |port: u16| format!("127.0.0.1:{port}");
    let mut demo = Demo(
        Command::new(crate::common::binary())
            .args(["demo", "--listen", &address(listen)])
            .args(["--admin-listen", &address(crate::common::free_port())])
            .args(["--pg-listen", &address(crate::common::free_port())])
            .arg("--dir")
            .arg(dir.path().join("demo"))
            // No PostgreSQL for this test: the MCP half is what prints curl lines.
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut printed = String::new();
    for line in BufReader::new(demo.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("Stop with Ctrl-C");
        printed.push_str(&line);
        printed.push('\n');
        if done {
            break;
        }
    }
    // Each curl line: its headers and its -d body.
    let calls: Vec<(Vec<(String, String)>, Value)> = printed
        .split("curl -sN ")
        .skip(1)
        .map(|call| {
            let call = call.replace("\\\n", " ");
            let headers = call
                .split("-H '")
                .skip(1)
                .map(|h| {
                    let h = &h[..h.find('\'').unwrap()];
                    let (k, v) = h.split_once(": ").unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect();
            let body = call.split("-d '").nth(1).unwrap();
            let body: Value = serde_json::from_str(&body[..body.find('\'').unwrap()]).unwrap();
            (headers, body)
        })
        .collect();
    assert_eq!(calls.len(), 3, "{printed}");
    let client = client();
    let url = format!("http://127.0.0.1:{listen}/mcp/billing");
    for (headers, body) in &calls {
        let meta = &body["params"]["_meta"];
        for key in [
            "io.modelcontextprotocol/protocolVersion",
            "io.modelcontextprotocol/clientCapabilities",
            "io.modelcontextprotocol/clientInfo",
        ] {
            assert!(
                meta.get(key).is_some(),
                "the printed request lacks {key}: {body}"
            );
        }
        if body["params"]["name"] == "refund_payment" {
            continue; // held until a person decides: waiting for it is the demo's own test
        }
        let mut req = client.post(&url).json(body);
        for (k, v) in headers {
            if k != "Content-Type" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let answer = last_message(&req.send().await.unwrap().text().await.unwrap());
        assert_ne!(answer["error"]["code"], -32602, "{answer}");
        assert!(
            answer.get("result").is_some() || answer["error"]["code"] == -32010,
            "{answer}"
        );
    }
}

/// Issue 13 re-check, M5: an unauthenticated caller told targets apart: `POST /mcp/nosuch`
/// answered 404 `no MCP target named "nosuch"` while an existing target answered 401, and
/// the protected-resource metadata was 404 for unknown names. Without valid credentials
/// every `/mcp/*` path answers alike (401), and the metadata alike (200); only an
/// authenticated caller hears that a target does not exist.
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_caller_cannot_tell_which_targets_exist() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, _log) = permissive_gateway(&[&agent], "");
    let client = client();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": modern_meta()}});
    let wrong_key = format!("pcx_{}", "Z".repeat(43));
    let answer = |target: &'static str, key: Option<String>| {
        let mut req = client
            .post(gw.url(target))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/list")
            .json(&list);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text)
        }
    };
    for key in [None, Some(wrong_key)] {
        let (existing_status, _) = answer("app", key.clone()).await;
        let (unknown_status, unknown_body) = answer("nosuch", key.clone()).await;
        assert_eq!(existing_status, 401, "credential {key:?}");
        assert_eq!(
            unknown_status, 401,
            "credential {key:?}: an unknown target answered otherwise: {unknown_body}"
        );
        assert!(!unknown_body.contains("nosuch"), "{unknown_body}");
    }
    let metadata = |target: &str| {
        client
            .get(format!(
                "{}/.well-known/oauth-protected-resource/mcp/{target}",
                gw.url("").trim_end_matches("/mcp/")
            ))
            .send()
    };
    assert_eq!(
        metadata("app").await.unwrap().status(),
        metadata("nosuch").await.unwrap().status(),
        "the metadata tells the names apart"
    );
    // An authenticated caller is told.
    let (status, body) = answer("nosuch", Some(agent.key.clone())).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no MCP target named"), "{body}");
}

/// Issue 13 re-check, M2: `resources/templates/list` was not filtered by policy, so a
/// caller that may read only `docs://public/*` learned of `docs://secret/{name}` (both
/// eras). Templates are filtered like `resources/list`: a template whose text the caller's
/// resource rules do not allow is hidden.
#[tokio::test(flavor = "multi_thread")]
async fn resource_templates_the_caller_may_not_read_are_not_listed() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, _log) = resources_gateway(&agent);
    let client = client();
    let url = gw.url("docs");
    let templates = |body: &Value| -> Vec<String> {
        body["result"]["resourceTemplates"]
            .as_array()
            .unwrap_or_else(|| panic!("no templates: {body}"))
            .iter()
            .map(|t| t["uriTemplate"].as_str().unwrap().to_string())
            .collect()
    };
    let session = open_session(&client, &url, &agent.key).await;
    let h = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/templates/list"});
    let (status, body, _) = post(&client, &url, &agent.key, &h, &list).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(templates(&body), ["docs://public/{name}"], "session era");

    let (status, body) = modern_call(
        &client,
        &url,
        &agent.key,
        2,
        "resources/templates/list",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(templates(&body), ["docs://public/{name}"], "stateless era");
}

/// Issue 13 re-check, M6: a client that never ends its sessions locked itself out: at
/// `max_sessions_per_identity` abandoned sessions, every new `initialize` got 429 until one
/// expired (`session_idle_timeout`, 30 min). At its cap, the identity's least recently used
/// session idle for `session_reclaim_after` is ended (recorded as a session end saying why)
/// and the new one admitted; 429 only while all of them are active.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_abandons_its_sessions_is_not_locked_out() {
    let agent = api_key("agent", "agent", &["agents"]);
    let (gw, _log) = permissive_gateway(
        &[&agent],
        "max_sessions_per_identity = 2\nsession_reclaim_after = \"1s\"",
    );
    let client = client();
    let url = gw.url("app");
    let abandoned = open_session(&client, &url, &agent.key).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = open_session(&client, &url, &agent.key).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Both are idle past the reclaim delay: the older one gives way.
    let third = open_session(&client, &url, &agent.key).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let (status, _, _) = post(
        &client,
        &url,
        &agent.key,
        &session_headers(&abandoned),
        &ping,
    )
    .await;
    assert_eq!(status, 404, "the reclaimed session is over");
    let (status, body, _) = post(&client, &url, &agent.key, &session_headers(&second), &ping).await;
    assert_eq!(status, 200, "the other one lives on: {body}");

    // Both remaining sessions are active now: no room, and the refusal says why.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "one-too-many", "version": "1"}}});
    let (status, body, _) = post(&client, &url, &agent.key, &[], &init).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_sessions_per_identity"),
        "{body}"
    );
    let (status, _, _) = post(&client, &url, &agent.key, &session_headers(&third), &ping).await;
    assert_eq!(status, 200);

    let events = gw.events();
    let end = events
        .iter()
        .find(|e| e["type"] == "session.end" && e["session"] == abandoned.as_str())
        .unwrap_or_else(|| panic!("no end recorded for the reclaimed session: {events:#?}"));
    assert!(
        end["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("session_reclaim_after"),
        "the end says why: {end}"
    );
}
