//! Session recording through the real gateway and the reference MCP server
//! (`@modelcontextprotocol/server-everything`, run by `npx`), with `[recording] mode =
//! "strict"`: each request's event names a recorded request (as forwarded, its arguments
//! masked with the recording profile) and a recorded answer (exactly what the caller got,
//! after the rule's masking: progress in order, the result, a refusal), in both protocol
//! eras. A planted secret is then looked for in every byte of the data directory and every
//! chunk's content, and found nowhere. A caller that hangs up mid-answer leaves a record
//! that says so.
//!
//! Like `everything_server.rs`, these tests fail when the package cannot be fetched, unless
//! `PORTCULLIS_SKIP_NPX=1` is set.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::recordings::Recordings;
use portcullis_recording::ChunkId;
use portcullis_recording::document::Record;
use serde_json::{Value, json};

/// Planted in arguments: an AWS access key id and a card number, both in AWS's and the
/// card networks' documentation as examples.
const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const CARD: &str = "4111111111111111";

/// The `Accept` of a caller that takes an SSE stream.
const STREAMS: &str = "application/json, text/event-stream";

fn config(agent: &Key) -> String {
    format!(
        r#"{key}
[targets.everything]
kind = "mcp"
command = ["npx", "-y", "{EVERYTHING}", "stdio"]

[[rules]]
name = "agents use the reference server"
who.groups = ["agents"]
target = "everything"
tools = ["*"]
mask = "secrets"

[[rules]]
name = "no environment dumps"
who.groups = ["agents"]
target = "everything"
tools = ["get-env", "printEnv"]
decision = "deny"
reason = "the upstream's environment is not for agents"

[masks.secrets]
detectors = ["pii", "secrets"]

[recording]
mode = "strict"
"#,
        key = agent.config
    )
}

fn client() -> reqwest::Client {
    // The first call starts the upstream through npx: allow a generous start-up.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// A session-based message; returns the session id the gateway named (if any) and every
/// message of the answer.
async fn legacy(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> (Option<String>, Vec<Value>) {
    let mut req = c
        .post(url)
        .bearer_auth(key)
        .header("accept", STREAMS)
        .json(&body);
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", LEGACY);
    }
    let resp = req.send().await.unwrap();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    (session, messages(&resp.text().await.unwrap()))
}

/// A 2026-07-28 request, with the headers and `_meta` the revision requires; `accept`: the
/// answers the caller takes.
fn modern_request(
    (c, accept): (&reqwest::Client, &str),
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> reqwest::RequestBuilder {
    add_modern_meta(&mut params);
    let mut req = c
        .post(url)
        .bearer_auth(key)
        .header("accept", accept)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        req = req.header("mcp-name", name);
    }
    req
}

/// Every message of a 2026-07-28 request's answer.
async fn modern(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    params: Value,
) -> Vec<Value> {
    let resp = modern_request((c, STREAMS), url, key, id, method, params)
        .send()
        .await
        .unwrap();
    messages(&resp.text().await.unwrap())
}

/// The event of the request with JSON-RPC id `id`, once recorded (the answer is released
/// after its event, but a request whose caller left is recorded when its pump ends).
fn event_of(gw: &Gateway, event_type: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(event) = gw
            .events()
            .into_iter()
            .find(|e| e["type"] == event_type && e["request_id"] == id)
        {
            return event;
        }
        assert!(Instant::now() < deadline, "no {event_type} event for {id}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kinds(record: &Record) -> Vec<&str> {
    record.parts.iter().map(|p| p.kind.as_str()).collect()
}

/// The recorded request: one part, the method and the params as forwarded.
fn forwarded(gw: &Gateway, event: &Value) -> Value {
    let request = gw.recorded(event, "request");
    assert_eq!(kinds(&request), ["request"], "{event}");
    request.parts[0].body.clone()
}

/// Checks a recorded echo of the planted secrets: the request names the tool and keeps
/// the argument masked; the answer is the result exactly as the caller got it, masked.
fn assert_echo_recorded(gw: &Gateway, event: &Value, received: &Value) {
    let request = forwarded(gw, event);
    assert_eq!(request["method"], "tools/call");
    assert_eq!(request["params"]["name"], "echo");
    let argument = request["params"]["arguments"]["message"].as_str().unwrap();
    assert!(argument.starts_with("deploy with "), "{argument}");
    assert!(
        !argument.contains(AWS_KEY) && !argument.contains(CARD),
        "the recording profile masks arguments: {argument}"
    );
    let text = received["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("Echo: deploy with "), "{received}");
    assert!(
        !text.contains(AWS_KEY) && !text.contains(CARD),
        "the rule's profile masks the result: {text}"
    );
    let answer = gw.recorded(event, "answer");
    assert_eq!(kinds(&answer), ["result"], "{event}");
    assert_eq!(answer.parts[0].body, received["result"]);
    assert!(!answer.caller_left);
}

/// Checks a recorded long-running call: the progress and any other message the caller
/// received before the result, each a part of its kind, in order, then the result.
fn assert_streamed_recorded(gw: &Gateway, event: &Value, tool: &str, got: &[Value]) {
    let (result, interim) = got.split_last().unwrap();
    assert!(
        interim
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count()
            >= 2,
        "{got:?}"
    );
    assert_eq!(forwarded(gw, event)["params"]["name"], tool);
    let answer = gw.recorded(event, "answer");
    let (last, parts) = answer.parts.split_last().unwrap();
    assert_eq!(last.kind, "result");
    assert_eq!(last.body, result["result"]);
    let relayed: Vec<&Value> = parts.iter().map(|p| &p.body).collect();
    assert_eq!(relayed, interim.iter().collect::<Vec<_>>());
    for part in parts {
        let expected = match part.body["method"].as_str() {
            Some("notifications/progress") => "progress",
            Some("notifications/message") => "log",
            _ => "notification",
        };
        assert_eq!(part.kind, expected, "{:?}", part.body);
    }
    assert!(
        answer.parts.windows(2).all(|w| w[0].ms <= w[1].ms),
        "parts in the order they were sent"
    );
}

/// Every byte under `dir`, and the content of every chunk the audit log holds, is free of
/// `secrets`; `context`, recorded around them, is found in some chunk (so the search reads
/// what the chunks hold).
fn assert_nowhere(dir: &Path, secrets: &[&str], context: &str) {
    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
    let mut files = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for secret in secrets {
            assert!(
                !contains(&bytes, secret),
                "{secret} is in {}",
                path.display()
            );
        }
    }
    assert!(files > 0, "nothing in {}", dir.display());
    let db = rusqlite::Connection::open_with_flags(
        dir.join("audit.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT id FROM chunks")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!ids.is_empty(), "no recorded chunks");
    let recordings = Recordings::open(dir).unwrap();
    let mut context_seen = false;
    for id in ids {
        let content = recordings
            .get(&ChunkId::parse(&id).unwrap())
            .unwrap()
            .content(1 << 24)
            .unwrap();
        for secret in secrets {
            assert!(!contains(&content, secret), "{secret} is in chunk {id}");
        }
        context_seen |= contains(&content, context);
    }
    assert!(context_seen, "no chunk holds {context:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_eras_are_recorded_as_the_caller_saw_them_and_no_planted_secret_is_kept() {
    if !everything_available() {
        return;
    }
    let agent = api_key("recorded-agent", "agent", &["agents"]);
    let gw = Gateway::start(&config(&agent));
    let c = client();
    let url = gw.url("everything");
    let planted = format!("deploy with {AWS_KEY} and card {CARD}");

    // A session-based client: the handshake is recorded on the session's start.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "recorded-client", "version": "1"}}});
    let (session, got) = legacy(&c, &url, &agent.key, None, init).await;
    let sid = session.expect("a session id");
    let start = event_of(&gw, "session.start", "1");
    assert_eq!(start["session"], sid.as_str());
    let request = forwarded(&gw, &start);
    assert_eq!(request["method"], "initialize");
    assert_eq!(request["params"]["clientInfo"]["name"], "recorded-client");
    let answer = gw.recorded(&start, "answer");
    assert_eq!(kinds(&answer), ["result"]);
    assert_eq!(answer.parts[0].body, got[0]["result"]);
    let (_, got) = legacy(
        &c,
        &url,
        &agent.key,
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert!(got.is_empty());

    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": planted}}});
    let (_, got) = legacy(&c, &url, &agent.key, Some(&sid), call).await;
    let event = event_of(&gw, "request", "2");
    assert_eq!(event["session"], sid.as_str());
    assert_echo_recorded(&gw, &event, got.last().unwrap());

    // The same through a 2026-07-28 client.
    let got = modern(
        &c,
        &url,
        &agent.key,
        21,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": planted}}),
    )
    .await;
    let received = got.last().unwrap();
    assert_eq!(received["result"]["resultType"], "complete", "{received}");
    assert_echo_recorded(&gw, &event_of(&gw, "request", "21"), received);

    // A list, filtered: recorded as the caller saw it, the denied tool absent.
    let got = modern(&c, &url, &agent.key, 22, "tools/list", json!({})).await;
    let event = event_of(&gw, "request", "22");
    assert_eq!(forwarded(&gw, &event)["method"], "tools/list");
    let answer = gw.recorded(&event, "answer");
    assert_eq!(kinds(&answer), ["result"]);
    assert_eq!(answer.parts[0].body, got.last().unwrap()["result"]);
    let names: Vec<&str> = answer.parts[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");
    assert!(!names.contains(&"get-env"), "{names:?}");
    let long = ["trigger-long-running-operation", "longRunningOperation"]
        .into_iter()
        .find(|n| names.contains(n))
        .unwrap_or_else(|| panic!("no long-running tool in {names:?}"));

    // Progress, in order, then the result, on an SSE stream of either era.
    let got = modern(&c, &url, &agent.key, 23, "tools/call", json!({"name": long, "arguments": {"duration": 2, "steps": 3}, "_meta": {"progressToken": "tok-23"}})).await;
    assert_streamed_recorded(&gw, &event_of(&gw, "request", "23"), long, &got);
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": long, "arguments": {"duration": 2, "steps": 3}, "_meta": {"progressToken": "tok-3"}}});
    let (_, got) = legacy(&c, &url, &agent.key, Some(&sid), call).await;
    assert_streamed_recorded(&gw, &event_of(&gw, "request", "3"), long, &got);

    // A call refused by policy: what was asked, and the refusal the caller got.
    let got = modern(
        &c,
        &url,
        &agent.key,
        24,
        "tools/call",
        json!({"name": "get-env", "arguments": {"note": planted}}),
    )
    .await;
    assert_eq!(got.last().unwrap()["error"]["code"], -32010);
    let event = event_of(&gw, "request", "24");
    assert_eq!(event["outcome"], "denied");
    let request = forwarded(&gw, &event);
    assert_eq!(request["params"]["name"], "get-env");
    let answer = gw.recorded(&event, "answer");
    assert_eq!(kinds(&answer), ["refusal"]);
    assert!(
        answer.parts[0].body["message"]
            .as_str()
            .unwrap()
            .contains("the upstream's environment is not for agents"),
        "{:?}",
        answer.parts[0].body
    );

    let r = c
        .delete(&url)
        .bearer_auth(&agent.key)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Everything is written: the whole data directory holds no planted secret, in any file
    // or any chunk's content.
    assert_nowhere(&gw.data_dir(), &[AWS_KEY, CARD], "deploy with ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_mid_answer_is_recorded_as_gone_with_what_it_was_sent() {
    if !everything_available() {
        return;
    }
    let agent = api_key("leaving-agent", "agent", &["agents"]);
    let gw = Gateway::start(&config(&agent));
    let c = client();
    let url = gw.url("everything");
    let got = modern(&c, &url, &agent.key, 1, "tools/list", json!({})).await;
    let tools = got.last().unwrap()["result"]["tools"].to_string();
    let long = ["trigger-long-running-operation", "longRunningOperation"]
        .into_iter()
        .find(|n| tools.contains(&format!("\"{n}\"")))
        .unwrap_or_else(|| panic!("no long-running tool in {tools}"));

    // Four seconds in four steps: the caller reads the first progress, then hangs up.
    let mut resp = modern_request((&c, STREAMS), &url, &agent.key, 2, "tools/call", json!({"name": long, "arguments": {"duration": 4, "steps": 4}, "_meta": {"progressToken": "tok-2"}}))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("the first event within 20 s")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let first = messages(&text);
    assert_eq!(first[0]["method"], "notifications/progress", "{text}");
    drop(resp);

    let event = event_of(&gw, "request", "2");
    assert_eq!(forwarded(&gw, &event)["params"]["name"], long);
    let answer = gw.recorded(&event, "answer");
    assert!(answer.caller_left, "{answer:?}");
    assert!(!answer.parts.is_empty(), "what was sent is kept");
    assert_eq!(answer.parts[0].kind, "progress");
    assert_eq!(answer.parts[0].body, first[0]);
    assert!(
        answer.parts.iter().all(|p| p.kind == "progress"),
        "no result reached the caller: {:?}",
        kinds(&answer)
    );

    // A caller that takes only JSON gets no progress, and gives up after a second of the
    // four: nothing reached it, and the record says it left.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let gone = modern_request((&impatient, "application/json"), &url, &agent.key, 3, "tools/call", json!({"name": long, "arguments": {"duration": 4, "steps": 4}, "_meta": {"progressToken": "tok-3"}}))
        .send()
        .await;
    assert!(gone.is_err(), "the caller hung up before the answer");
    let event = event_of(&gw, "request", "3");
    assert_eq!(
        event["outcome"], "success",
        "the call ran to its end: {event}"
    );
    let answer = gw.recorded(&event, "answer");
    assert!(answer.caller_left, "{answer:?}");
    assert!(
        answer.parts.is_empty(),
        "a caller without a stream received nothing: {:?}",
        kinds(&answer)
    );
}

/// `check-config` builds the recorder as `serve` would: an age recipient that is not a key
/// is reported, not called valid.
#[test]
fn check_config_refuses_a_recording_recipient_that_is_not_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        "[recording]\nmode = \"strict\"\nrecipients = [\"age1notakey\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("recording.recipients") && stderr.contains("age1notakey"),
        "{stderr}"
    );
}
