//! Attacks on MCP masking: values that reach the caller in clear through errors, the GET
//! stream, server-to-client requests, content items other than text, and results of methods
//! that policy does not decide.
//!
//! The caller is an agent whose one rule names a masking profile. The upstreams are the
//! reference server (`@modelcontextprotocol/server-everything`, whose own texts a custom
//! detector of the profile matches) and a scripted Python server that puts an email address,
//! a card number and a cloud key wherever the protocol lets it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Gateway, Key, MODERN, api_key, python};

const EMAIL: &str = "ada.lovelace@example.com";
const CARD: &str = "4111 1111 1111 1111";
const CLOUD_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const LEGACY: &str = "2025-11-25";

/// A session-era stdio MCP server that leaks [`EMAIL`], [`CARD`] and [`CLOUD_KEY`] through
/// every channel: `initialize` instructions, list results, completion, errors, log and
/// resource notifications, a sampling request, content items of every shape; and answers
/// the tool `dupes` with duplicate keys.
const LEAKY_SERVER: &str = r#"
import base64, json, sys
EMAIL = "ada.lovelace@example.com"
CARD = "4111 1111 1111 1111"
CLOUD_KEY = "AKIAIOSFODNN7EXAMPLE"
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
def answer(i, result):
    send({"jsonrpc": "2.0", "id": i, "result": result})
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        answer(i, {"protocolVersion": p.get("protocolVersion", "2025-11-25"),
                   "capabilities": {"tools": {}, "logging": {}, "completions": {}, "resources": {"subscribe": True}},
                   "serverInfo": {"name": "leaky", "version": "1"},
                   "instructions": "Escalations go to " + EMAIL})
    elif m == "tools/list":
        answer(i, {"tools": [{"name": "shapes", "description": "mails " + EMAIL,
                              "inputSchema": {"type": "object", "properties": {"to": {"type": "string", "default": EMAIL}}}}]
                             # The gateway calls only tools the upstream lists (and it pins).
                             + [{"name": n, "inputSchema": {"type": "object"}} for n in ("fail", "chatter", "dupes", "protocol_fields", "stray_request")]})
    elif m == "resources/templates/list":
        answer(i, {"resourceTemplates": [{"name": "by owner", "uriTemplate": "users://" + EMAIL + "/{id}",
                                          "description": "cards like " + CARD}]})
    elif m == "completion/complete":
        answer(i, {"completion": {"values": [EMAIL, CARD], "total": 2, "hasMore": False}})
    elif m == "tools/call":
        name = p.get("name")
        token = (p.get("_meta") or {}).get("progressToken")
        if name == "fail":
            send({"jsonrpc": "2.0", "id": i, "error": {"code": -32000, "message": "no account for " + EMAIL,
                  "data": {"card": CARD, "key": CLOUD_KEY, "hint": ["retry as " + EMAIL]}}})
        elif name == "chatter":
            # Not tied to the request: these travel on the session's standalone (GET) stream.
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "logger": "billing", "data": "charged " + CARD + " for " + EMAIL}})
            send({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                  "params": {"uri": "users://" + EMAIL + "/profile"}})
            send({"jsonrpc": "2.0", "id": "sampling-1", "method": "sampling/createMessage",
                  "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "summarise " + EMAIL}}],
                             "systemPrompt": "the card is " + CARD, "maxTokens": 10}})
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": 1, "total": 2, "message": "working for " + EMAIL}})
            answer(i, {"content": [{"type": "text", "text": "done"}]})
        elif name == "shapes":
            answer(i, {"content": [
                {"type": "resource_link", "uri": "users://" + EMAIL, "name": EMAIL, "title": "owner " + EMAIL,
                 "description": "card " + CARD, "mimeType": "text/plain"},
                {"type": "text", "text": "ok", "annotations": {"audience": [EMAIL]}, "_meta": {"owner": EMAIL},
                 "extra": CLOUD_KEY},
                {"text": "no type: " + EMAIL},
                {"type": "novel", "text": ["as an array: " + EMAIL]},
                {"type": "resource", "resource": {"uri": "users://" + EMAIL + "/card", "mimeType": "text/plain", "text": "on file"}},
                {"type": "image", "data": "iVBORw0KGgoAAAANSUhEUg==", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///owners.csv", "mimeType": "text/csv",
                 "blob": base64.b64encode(("owner," + EMAIL).encode()).decode()}},
                # Text as base64 bytes whose declared type does not say text: none, or an image.
                {"type": "resource", "resource": {"uri": "file:///b",
                 "blob": base64.b64encode(("owner " + EMAIL + " card " + CARD).encode()).decode()}},
                {"type": "image", "mimeType": "image/png",
                 "data": base64.b64encode(("key " + CLOUD_KEY).encode()).decode()}],
                "_meta": {"owner": EMAIL}})
        elif name == "protocol_fields":
            # Secrets in the members the gateway passes unmasked as protocol fields.
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": 1, "requestId": EMAIL, "cursor": EMAIL}})
            answer(i, {"content": [{"type": "text", "text": "ok"}], "nextCursor": EMAIL,
                       "protocolVersion": EMAIL, "resultType": CARD,
                       "_meta": {"progressToken": EMAIL, "io.modelcontextprotocol/protocolVersion": CLOUD_KEY}})
        elif name == "stray_request":
            # On the standalone (GET) stream: a server request whose id is a secret, then a marker.
            send({"jsonrpc": "2.0", "id": EMAIL, "method": "sampling/createMessage",
                  "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "data": "after the stray request"}})
            answer(i, {"content": [{"type": "text", "text": "done"}]})
        elif name == "dupes":
            sys.stdout.write('{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"masked?","text":"%s"}]}}\n' % (json.dumps(i), EMAIL))
            sys.stdout.flush()
        else:
            send({"jsonrpc": "2.0", "id": i, "error": {"code": -32602, "message": "unknown tool"}})
    elif m == "ping":
        answer(i, {})
    else:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

/// A gateway in front of the leaky server where `agent` may use the whole target, masked
/// with the built-in `default` profile.
fn leaky_gateway(agent: &Key) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("leaky.py");
    std::fs::write(&script, LEAKY_SERVER).unwrap();
    let rest = format!(
        r#"{key}
[targets.billing]
kind = "mcp"
command = [{python:?}, {script:?}]

[[rules]]
name = "agents use billing, masked"
who.groups = ["agents"]
target = "billing"
mask = "default"
"#,
        key = agent.config,
        python = python(),
        script = script.display().to_string(),
    );
    Gateway::start_in(dir, &rest, "", &[])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Every JSON-RPC message of a body: the one JSON message, or each `data:` of an SSE stream.
fn messages(text: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return vec![v];
    }
    let mut out = Vec::new();
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            out.push(serde_json::from_str(&data).unwrap_or(Value::Null));
            data.clear();
        }
    }
    out
}

/// POSTs a message of a session (or the `initialize` that opens one); returns the session
/// id the answer names, if any, and every message of the answer.
async fn post(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> (Option<String>, Vec<Value>) {
    let mut req = c
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", LEGACY);
    }
    let resp = req.send().await.unwrap();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (sid, messages(&resp.text().await.unwrap()))
}

/// Opens a session; returns its id and the answer to `initialize`.
async fn open_session(c: &reqwest::Client, url: &str, key: &str) -> (String, Value) {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {"sampling": {}},
        "clientInfo": {"name": "attacker", "version": "1"}}});
    let (sid, answer) = post(c, url, key, None, init).await;
    let sid = sid.unwrap_or_else(|| panic!("no session: {answer:?}"));
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(c, url, key, Some(&sid), initialized).await;
    (sid, answer.last().cloned().unwrap_or(Value::Null))
}

/// A 2026-07-28 request with the envelope the revision requires; every message of the answer.
async fn modern(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> Vec<Value> {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    params["_meta"]["io.modelcontextprotocol/clientInfo"] =
        json!({"name": "attacker", "version": "1"});
    params["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let mut req = c
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("mcp-name", name);
    }
    messages(&req.send().await.unwrap().text().await.unwrap())
}

/// Fails naming the first secret `text` carries in clear.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [EMAIL, CARD, CLOUD_KEY] {
        assert!(
            !text.contains(secret),
            "{what} carries {secret:?} in clear: {text}"
        );
    }
}

/// Item 2: an upstream's JSON-RPC error reached the caller as it came, its `message` and
/// `data` carrying an email address, a card number and a cloud key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_message_and_data_are_masked() {
    let agent = api_key("mask-errors", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let answer = modern(
        &c,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "fail", "arguments": {}}),
    )
    .await;
    let error = &answer.last().unwrap()["error"];
    assert_no_secret("the error", &error.to_string());
    assert_eq!(error["code"], -32000, "{error}");
    assert_eq!(error["message"], "no account for [EMAIL]", "{error}");
    assert_eq!(error["data"]["hint"][0], "retry as [EMAIL]", "{error}");
    let event = gw
        .events()
        .into_iter()
        .find(|e| e["type"] == "request" && e["resource"] == "fail")
        .unwrap();
    assert_no_secret("the event", &event.to_string());
    let paths = event["masked"].to_string();
    assert!(
        paths.contains("$.error.message") && paths.contains("$.error.data.card"),
        "the event says what was masked: {event}"
    );
}

/// Item 3: during a masked call, a log notification, a resource update naming a secret in
/// its URI and a sampling request reached the session's GET stream in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_get_stream_notifications_and_server_requests_are_masked() {
    let agent = api_key("mask-stream", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let url = gw.url("billing");
    let (sid, _) = open_session(&c, &url, &agent.key).await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "chatter", "arguments": {}}});
    let (_, answer) = post(&c, &url, &agent.key, Some(&sid), call).await;
    assert_eq!(
        answer.last().unwrap()["result"]["content"][0]["text"],
        "done"
    );

    let mut stream = c
        .get(&url)
        .bearer_auth(&agent.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Complete events only: the stream stays open.
    let complete = |text: &str| messages(&text[..text.rfind("\n\n").unwrap_or(0)]);
    while complete(&text).len() < 3 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    let got = complete(&text);
    let methods: Vec<&str> = got.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "notifications/message",
            "notifications/resources/updated",
            "sampling/createMessage"
        ],
        "{text}"
    );
    assert_no_secret("the GET stream", &text);
    assert_eq!(
        got[0]["params"]["data"],
        "charged [CREDIT_CARD] for [EMAIL]"
    );
    let uri = got[1]["params"]["uri"].as_str().unwrap();
    assert!(
        uri.contains("[EMAIL]") && uri.ends_with("/profile"),
        "{uri}"
    );
    // The server's request keeps its id, so the caller can still answer it.
    assert_eq!(got[2]["id"], "sampling-1");
}

/// Item 3, the POST-stream path: a progress notification of the masked request itself.
/// Item 14a: its `progressToken` came back as `"[PASSWORD]"`, so the caller could not match
/// the progress to its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_masked_but_its_token_comes_back_as_sent() {
    let agent = api_key("mask-progress", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let token = "req-token-7f3a9c2e41";
    let answer = modern(
        &c,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "chatter", "arguments": {}, "_meta": {"progressToken": token}}),
    )
    .await;
    let progress = answer
        .iter()
        .find(|m| m["method"] == "notifications/progress")
        .unwrap_or_else(|| panic!("no progress: {answer:?}"));
    assert_eq!(progress["params"]["progressToken"], token, "{progress}");
    assert_eq!(progress["params"]["message"], "working for [EMAIL]");
    assert_eq!(answer.last().unwrap()["id"], 1);
}

/// Item 5: only `type: "text"` items and `structuredContent` were masked; a resource link's
/// name, title, description and URI, `_meta`, `annotations`, unknown keys, items of another
/// or no type, `text` given as an array, an embedded resource's URI, and text sent as a
/// base64 blob of a text type came back raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_shape_of_a_tool_result_is_masked() {
    let agent = api_key("mask-shapes", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let answer = modern(
        &c,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "shapes", "arguments": {}}),
    )
    .await;
    let result = &answer.last().unwrap()["result"];
    assert_no_secret("the result", &result.to_string());
    let content = &result["content"];
    assert!(
        content[0]["uri"].as_str().unwrap().contains("[EMAIL]"),
        "{result}"
    );
    assert_eq!(content[0]["name"], "[EMAIL]");
    assert_eq!(content[1]["annotations"]["audience"][0], "[EMAIL]");
    assert_eq!(content[3]["text"][0], "as an array: [EMAIL]");
    assert!(
        content[4]["resource"]["uri"]
            .as_str()
            .unwrap()
            .contains("[EMAIL]"),
        "{result}"
    );
    // Base64 bytes are left alone: masking would corrupt them.
    assert_eq!(content[5]["data"], "iVBORw0KGgoAAAANSUhEUg==");
    // But a blob whose type says it is text is text.
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(content[6]["resource"]["blob"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(blob).unwrap(), "owner,[EMAIL]");
}

/// Issue 13 re-check, M3: only a blob whose `mimeType` said text was decoded and masked, so
/// text sent as base64 with no type (or an image type) reached the caller in clear once
/// decoded. Any blob or image/audio `data` that decodes to UTF-8 text is masked as text,
/// whatever its declared type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_in_a_base64_blob_without_a_text_type_is_masked() {
    use base64::Engine as _;
    let agent = api_key("mask-untyped-blob", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let answer = modern(
        &c,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "shapes", "arguments": {}}),
    )
    .await;
    let content = &answer.last().unwrap()["result"]["content"];
    let decoded = |value: &Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(
                value
                    .as_str()
                    .unwrap_or_else(|| panic!("no base64: {content}")),
            )
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let blob = decoded(&content[7]["resource"]["blob"]);
    assert_no_secret("a blob without mimeType, decoded", &blob);
    assert!(blob.starts_with("owner [EMAIL] card "), "{blob}");
    let image = decoded(&content[8]["data"]);
    assert_no_secret("text declared as an image, decoded", &image);
    // Real bytes are still left alone.
    assert_eq!(content[5]["data"], "iVBORw0KGgoAAAANSUhEUg==");
}

/// Issue 13 re-check, M1: the members kept unmasked as protocol fields passed whatever the
/// upstream put there: `nextCursor`, `protocolVersion`, `resultType` and `_meta`'s
/// `progressToken` and protocol version of a result, a progress notification's `requestId`
/// and `cursor`, in both eras. A protocol field is kept only when its value is legitimate
/// (a known version or result type, a token or cursor no detector flags); the caller's own
/// progress token still comes back as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_protocol_fields_are_masked() {
    let agent = api_key("mask-protocol-fields", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let url = gw.url("billing");
    let token = "req-token-7f3a9c2e41";
    let stateless = modern(
        &c,
        &url,
        &agent.key,
        1,
        "tools/call",
        json!({"name": "protocol_fields", "arguments": {}, "_meta": {"progressToken": token}}),
    )
    .await;
    let (sid, _) = open_session(&c, &url, &agent.key).await;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "protocol_fields", "arguments": {}, "_meta": {"progressToken": token}}});
    let (_, session) = post(&c, &url, &agent.key, Some(&sid), call).await;
    for (era, answer) in [("stateless", stateless), ("session", session)] {
        let text = serde_json::to_string(&answer).unwrap();
        assert_no_secret(era, &text);
        let progress = answer
            .iter()
            .find(|m| m["method"] == "notifications/progress")
            .unwrap_or_else(|| panic!("{era}: no progress: {text}"));
        assert_eq!(progress["params"]["progressToken"], token, "{era}: {text}");
        assert_eq!(progress["params"]["requestId"], "[EMAIL]", "{era}: {text}");
        let result = &answer.last().unwrap()["result"];
        assert_eq!(result["nextCursor"], "[EMAIL]", "{era}: {text}");
        assert_eq!(result["content"][0]["text"], "ok", "{era}: {text}");
    }

    // A server request on the GET stream whose id is a secret: the id cannot be masked (the
    // answer must carry it back), so the request is not relayed.
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "stray_request", "arguments": {}}});
    post(&c, &url, &agent.key, Some(&sid), call).await;
    let mut stream = c
        .get(&url)
        .bearer_auth(&agent.key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("after the stray request") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    assert!(text.contains("after the stray request"), "{text}");
    assert_no_secret("the GET stream", &text);
}

/// Item 6 (masking): results of methods policy does not decide were never masked:
/// `initialize` instructions, `tools/list` descriptions and schema defaults,
/// `resources/templates/list`, `completion/complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_lists_and_completions_are_masked() {
    let agent = api_key("mask-lists", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let url = gw.url("billing");
    let (sid, init) = open_session(&c, &url, &agent.key).await;
    assert_no_secret("the answer to initialize", &init.to_string());
    assert_eq!(
        init["result"]["instructions"], "Escalations go to [EMAIL]",
        "{init}"
    );
    assert_eq!(init["result"]["protocolVersion"], LEGACY);
    let requests = [
        ("tools/list", json!({})),
        ("resources/templates/list", json!({})),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "p"}, "argument": {"name": "a", "value": ""}}),
        ),
    ];
    for (i, (method, params)) in requests.into_iter().enumerate() {
        let body = json!({"jsonrpc": "2.0", "id": i + 1, "method": method, "params": params});
        let (_, answer) = post(&c, &url, &agent.key, Some(&sid), body).await;
        let answer = answer.last().cloned().unwrap_or(Value::Null);
        assert!(answer["result"].is_object(), "{method}: {answer}");
        assert_no_secret(method, &answer.to_string());
    }
    // The same through the stateless era: discovery, which the gateway answers from what
    // the upstream said in its `initialize`, and the tool list (the tool keeps its name).
    let discover = modern(&c, &url, &agent.key, 8, "server/discover", json!({})).await;
    let discover = discover.last().unwrap();
    assert_eq!(
        discover["result"]["instructions"], "Escalations go to [EMAIL]",
        "{discover}"
    );
    let list = modern(&c, &url, &agent.key, 9, "tools/list", json!({})).await;
    let tools = &list.last().unwrap()["result"]["tools"];
    assert_eq!(tools[0]["name"], "shapes", "{tools}");
    assert_eq!(tools[0]["description"], "mails [EMAIL]");
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["to"]["default"],
        "[EMAIL]"
    );
    let events = gw.events();
    assert_no_secret("the audit log", &serde_json::to_string(&events).unwrap());
    let discovered = events
        .iter()
        .find(|e| e["type"] == "request" && e["action"] == "server/discover")
        .unwrap();
    assert!(
        discovered["masked"]
            .to_string()
            .contains("\"$.instructions\""),
        "the event says what was masked: {discovered}"
    );
}

/// Item 14e: an upstream answer with duplicate keys was dropped, and the caller waited the
/// whole request timeout (20 s here) for an answer that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_duplicate_keys_fails_at_once_and_says_why() {
    let agent = api_key("mask-dupes", "agent", &["agents"]);
    let gw = leaky_gateway(&agent);
    let c = client();
    let url = gw.url("billing");
    // The first call starts the upstream: not part of what is timed.
    modern(&c, &url, &agent.key, 1, "ping", json!({})).await;
    let started = Instant::now();
    let answer = modern(
        &c,
        &url,
        &agent.key,
        2,
        "tools/call",
        json!({"name": "dupes", "arguments": {}}),
    )
    .await;
    let elapsed = started.elapsed();
    let answer = answer.last().unwrap();
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}: {answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("duplicate key") && message.contains("text"),
        "the error names the problem: {answer}"
    );
    assert_no_secret("the error", &answer.to_string());
    // Nothing else was broken: the next call works.
    let answer = modern(&c, &url, &agent.key, 3, "ping", json!({})).await;
    assert!(answer.last().unwrap()["result"].is_object(), "{answer:?}");
}

const EVERYTHING: &str = "@modelcontextprotocol/server-everything";

/// Whether `npx` can start the reference server (it fetches it once into its cache).
fn everything_available() -> bool {
    let started = Command::new("npx")
        .args(["-y", EVERYTHING, "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = started else {
        return false;
    };
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}});
    let _ = writeln!(stdin, "{init}");
    let _ = stdin.flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"id\":1") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let ok = rx.recv_timeout(Duration::from_secs(180)).is_ok();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    ok
}

/// Items 5 and 6 against the reference server: its resource links, annotations, server
/// instructions, tool descriptions and resource templates, which the profile's custom
/// detectors match, came back raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_links_annotations_instructions_and_lists_are_masked() {
    if !everything_available() {
        assert!(
            std::env::var("PORTCULLIS_SKIP_NPX").is_ok_and(|v| v == "1"),
            "{EVERYTHING} is not available through npx; set PORTCULLIS_SKIP_NPX=1 to skip"
        );
        return;
    }
    let agent = api_key("mask-everything", "agent", &["agents"]);
    let gw = Gateway::start(&format!(
        r#"{key}
[targets.everything]
kind = "mcp"
command = ["npx", "-y", "{EVERYTHING}", "stdio"]

[masks.demo]
[[masks.demo.custom]]
name = "demo_uri"
pattern = "demo://resource/dynamic/[a-z]+"
[[masks.demo.custom]]
name = "house_words"
pattern = "Everything Server|assistant|input string|plaintext"

[[rules]]
name = "agents use the reference server, masked"
who.groups = ["agents"]
target = "everything"
tools = ["get-resource-links", "get-annotated-message", "echo"]
mask = "demo"
"#,
        key = agent.config
    ));
    let c = client();
    let url = gw.url("everything");
    let (sid, init) = open_session(&c, &url, &agent.key).await;
    let instructions = init["result"]["instructions"].as_str().unwrap_or_default();
    assert!(
        !instructions.is_empty() && !instructions.contains("Everything Server"),
        "{init}"
    );
    let call = |id: u64, name: &str, arguments: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}})
    };
    let (_, links) = post(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        call(1, "get-resource-links", json!({"count": 2})),
    )
    .await;
    let links = links.last().unwrap().to_string();
    assert!(links.contains("resource_link"), "{links}");
    assert!(
        !links.contains("demo://resource/dynamic") && !links.contains("plaintext"),
        "resource links in clear: {links}"
    );
    let (_, annotated) = post(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        call(
            2,
            "get-annotated-message",
            json!({"messageType": "error", "includeImage": false}),
        ),
    )
    .await;
    let annotated = annotated.last().unwrap();
    let audience = &annotated["result"]["content"][0]["annotations"]["audience"];
    assert!(
        audience.is_array() && !audience.to_string().contains("assistant"),
        "{annotated}"
    );
    for (id, method) in [(3, "tools/list"), (4, "resources/templates/list")] {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method});
        let (_, answer) = post(&c, &url, &agent.key, Some(&sid), body).await;
        let text = answer.last().unwrap().to_string();
        assert!(text.contains("\"result\""), "{method}: {text}");
        assert!(
            !text.contains("demo://resource/dynamic")
                && !text.contains("input string")
                && !text.contains("plaintext"),
            "{method} in clear: {text}"
        );
    }
}
