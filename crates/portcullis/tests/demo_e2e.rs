//! The demo billing server through the real gateway binary: the three outcomes, the audit
//! trail, and a client of each protocol era; and `portcullis demo`'s customers HTTP API
//! through the curl lines the demo prints.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn demo_config(agent: &Key, human: &Key) -> String {
    format!(
        r#"{agent}{human}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]

[[rules]]
name = "refunds need a finance lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_*"]
decision = "hold"
approvers = ["finance-leads"]
timeout = "1s"                  # nobody decides in this test: the hold expires

[[rules]]
name = "agents never delete customers"
who.kinds = ["agent"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting customers is a human decision"
"#,
        agent = agent.config,
        human = human.config,
        cmd = demo_server_command()
    )
}

#[tokio::test]
async fn modern_client_gets_allow_deny_hold_and_every_call_is_recorded() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let human = api_key("dana", "human", &["finance-leads"]);
    let gw = Gateway::start(&demo_config(&agent, &human));
    let client = reqwest::Client::new();
    let url = gw.url("billing");

    let (status, list) = modern_call(&client, &url, &agent.key, 1, "tools/list", json!({})).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["lookup_customer", "refund_payment"],
        "denied tool hidden, held tool shown"
    );
    assert_eq!(
        list["result"]["cacheScope"], "private",
        "filtered lists must not be shared-cached"
    );

    let (_, ok) = modern_call(
        &client,
        &url,
        &agent.key,
        2,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(ok["result"]["structuredContent"]["id"], "cus_1001");
    assert_eq!(ok["result"]["resultType"], "complete");

    let (_, held) = modern_call(
        &client,
        &url,
        &agent.key,
        3,
        "tools/call",
        json!({"name": "refund_payment", "arguments": {"customer": "cus_1001", "amount": 10}}),
    )
    .await;
    assert_eq!(held["error"]["code"], -32011);
    assert_eq!(held["error"]["data"]["rule"], "refunds need a finance lead");
    assert_eq!(held["error"]["data"]["status"], "expired");
    assert!(
        held["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody decided"),
        "{held}"
    );

    let (_, denied) = modern_call(
        &client,
        &url,
        &agent.key,
        4,
        "tools/call",
        json!({"name": "delete_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(denied["error"]["code"], -32010);
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agents never delete customers")
    );

    // The human has no allowing rule at all: default deny.
    let (_, default_deny) = modern_call(
        &client,
        &url,
        &human.key,
        5,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(default_deny["error"]["data"]["rule"], "default-deny");

    // The same call sent as a notification (no id) would reach the upstream undecided:
    // it is refused at the door.
    let sneaky = client
        .post(&url)
        .bearer_auth(&agent.key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "delete_customer")
        .json(&json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete_customer", "arguments": {"customer": "cus_1001"}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 400);
    let body: Value = sneaky.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a notification"),
        "{body}"
    );

    let events = gw.events();
    assert!(
        events.iter().any(|e| e["type"] == "notification"
            && e["action"] == "tools/call"
            && e["outcome"] == "rejected"),
        "the refused notification is recorded"
    );
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request" && e["action"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 4);
    let by_tool = |tool: &str, who: &str| {
        calls
            .iter()
            .find(|e| e["resource"] == tool && e["identity"]["subject"] == who)
            .copied()
            .unwrap()
    };
    let allowed = by_tool("lookup_customer", "billing-agent");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["outcome"], "success");
    assert_eq!(allowed["rule"], "agents look up customers");
    assert_eq!(allowed["arguments"]["sha256"].as_str().unwrap().len(), 64);
    assert!(allowed["result"]["size"].as_u64().unwrap() > 0);
    assert!(
        !allowed.to_string().contains("ada@example.com"),
        "results are stored as digests, never raw"
    );
    assert_eq!(
        by_tool("refund_payment", "billing-agent")["decision"],
        "hold"
    );
    assert_eq!(
        by_tool("delete_customer", "billing-agent")["outcome"],
        "denied"
    );
    assert_eq!(by_tool("lookup_customer", "dana")["rule"], "default-deny");
    // the refusal names the event that recorded it
    assert_eq!(
        denied["error"]["data"]["event"],
        by_tool("delete_customer", "billing-agent")["id"]
    );
}

#[tokio::test]
async fn graceful_shutdown_ends_sessions_and_records_the_stop() {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let human = api_key("dana", "human", &["finance-leads"]);
    let mut gw = Gateway::start(&demo_config(&agent, &human));
    let client = reqwest::Client::new();
    let init = client
        .post(gw.url("billing"))
        .bearer_auth(&agent.key)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();

    assert!(gw.terminate(), "SIGTERM ends the gateway cleanly");
    let events = gw.events();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"gateway.start"));
    assert_eq!(types.last(), Some(&"gateway.stop"));
    let end = events
        .iter()
        .find(|e| e["type"] == "session.end" && e["session"] == session.as_str())
        .expect("the open session is ended and recorded");
    assert_eq!(end["detail"], "gateway shutdown");
}

/// The `curl` commands the demo printed for the customers API, each joined across its `\`
/// line continuations, as a shell reads them when pasted.
fn printed_http_calls(printed: &[String]) -> Vec<String> {
    let mut calls = Vec::new();
    let mut lines = printed.iter().map(|l| l.trim());
    while let Some(line) = lines.next() {
        if !line.starts_with("curl ") || !line.contains("/http/customers/") {
            continue;
        }
        let mut call = line.to_string();
        while call.ends_with('\\') {
            call.pop();
            call.push_str(lines.next().unwrap_or(""));
        }
        calls.push(call);
    }
    calls
}

/// Runs a printed line in a shell, as a newcomer pasting it; the answer's body as JSON.
fn paste(call: &str) -> Value {
    let out = Command::new("sh").args(["-c", call]).output().unwrap();
    assert!(out.status.success(), "{call}: {out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{call}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `portcullis demo` as a newcomer runs it, its customers API through the curl lines it
/// prints: the GET comes back masked, the refund waits until the finance lead approves it
/// through the admin API, the DELETE is refused naming the rule; each is one audit event
/// with its `http` record.
#[tokio::test]
async fn the_demo_customers_api_answers_the_printed_curl_lines() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let (port, admin_port, pg_port) = (free_port(), free_port(), free_port());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["demo", "--listen", &addr.to_string()])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--pg-listen", &format!("127.0.0.1:{pg_port}")])
        .arg("--dir")
        .arg(&demo_dir)
        .stdout(Stdio::piped());
    let (mut child, _) = start_and_wait(&mut cmd, addr, "demo");
    let stdout = child.stdout.take().unwrap();
    let printed: Lines = Default::default();
    let sink = printed.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let calls = printed_http_calls(&printed.lock().unwrap());
        if calls.len() == 3 {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not print three curl lines for the customers API: {:?}",
            printed.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let keys = std::fs::read_to_string(demo_dir.join("demo-keys.txt")).unwrap();
    let human = keys.lines().nth(1).unwrap().to_string();
    let (get, refund, delete) = (&calls[0], &calls[1], &calls[2]);
    assert!(
        get.contains("curl -s http://") && !get.contains("-X "),
        "{get}"
    );
    assert!(
        refund.contains("-X POST") && refund.contains("Portcullis-Reason: "),
        "{refund}"
    );
    assert!(delete.contains("-X DELETE"), "{delete}");

    // Allowed and masked: the API answered (so the gateway injected its token; without it
    // the API answers 401), and the email and card number are hidden.
    let customer = paste(get);
    assert_eq!(customer["id"], "cus_1001", "{customer}");
    assert_eq!(customer["name"], "Ada Lovelace", "{customer}");
    assert_eq!(customer["email"], "[EMAIL]", "{customer}");
    let card = customer["card_number"].as_str().unwrap();
    assert!(card.ends_with("1111") && !card.contains("4111"), "{card}");

    // Held: the curl waits until the finance lead approves through the admin API.
    let held = {
        let refund = refund.clone();
        std::thread::spawn(move || paste(&refund))
    };
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let approval = loop {
        let listing = client
            .get(format!("{admin}/api/v1/approvals"))
            .bearer_auth(&human)
            .send()
            .await
            .ok();
        let body: Value = match listing {
            Some(r) if r.status() == 200 => r.json().await.unwrap(),
            _ => Value::Null,
        };
        if let Some(first) = body["approvals"].as_array().and_then(|a| a.first()) {
            break first.clone();
        }
        assert!(
            !held.is_finished(),
            "the refund was answered before anyone decided"
        );
        assert!(
            Instant::now() < deadline,
            "no pending approval appeared: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        approval.to_string().contains("/customers/cus_1001/refund"),
        "{approval}"
    );
    assert!(!held.is_finished(), "the refund waits for its decision");
    let approved = client
        .post(format!(
            "{admin}/api/v1/approvals/{}/approve",
            approval["id"].as_str().unwrap()
        ))
        .bearer_auth(&human)
        .json(&json!({"digest": approval["digest"], "reason": "customer called, refund agreed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200, "{:?}", approved.text().await);
    let refunded = tokio::task::spawn_blocking(move || held.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        refunded,
        json!({"refunded": "cus_1001", "amount_usd": 25.0, "status": "succeeded"})
    );

    // Denied: a problem document naming the rule and its reason.
    let denied = paste(delete);
    assert_eq!(denied["status"], 403, "{denied}");
    assert_eq!(denied["refusal"], "denied", "{denied}");
    assert_eq!(denied["rule"], "agents never delete customers over HTTP");
    assert_eq!(denied["detail"], "deleting customers is a human decision");

    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(child.wait().unwrap().success());
    let tail = Command::new(binary())
        .args(["audit", "tail", "-n", "1000", "--data-dir"])
        .arg(demo_dir.join("data"))
        .output()
        .unwrap();
    let events: Vec<Value> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["type"] == "request" && e["target"] == "customers")
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let (read, refund, delete) = (&events[0], &events[1], &events[2]);
    assert_eq!(read["action"], "GET");
    assert_eq!(read["resource"], "/customers/cus_1001");
    assert_eq!(read["decision"], "allow");
    assert_eq!(read["http"]["route"], "/customers/{id}");
    assert_eq!(read["http"]["status"], 200);
    assert!(read["masked"].to_string().contains("email"), "{read}");
    assert!(!read.to_string().contains("ada@example.com"), "{read}");
    assert_eq!(refund["action"], "POST");
    assert_eq!(refund["decision"], "hold");
    assert_eq!(refund["approval"], approval["id"]);
    assert_eq!(refund["http"]["status"], 200);
    assert_eq!(refund["outcome"], "success");
    assert_eq!(delete["action"], "DELETE");
    assert_eq!(delete["outcome"], "denied");
    assert_eq!(delete["rule"], "agents never delete customers over HTTP");
    assert_eq!(delete["http"]["status"], 403);
}
