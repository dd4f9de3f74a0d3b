//! The demo billing server through the real gateway binary: the three outcomes, the audit
//! trail, and a client of each protocol era.

mod common;

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
