//! The same situation ends with the same audit outcome whichever protocol the caller speaks.
//!
//! One gateway serves an MCP target (the demo's billing server) and a PostgreSQL target, and
//! holds a refund call and an UPDATE under the same kind of rule. Both are denied by a lead,
//! then both are held again and abandoned by their callers (the MCP caller hangs up, the
//! PostgreSQL client sends a cancel request); a deny rule refuses one of each. The events of
//! each pair must agree: `denied` for the decisions people and policy made, `failed` for the
//! waits nobody decided. Both adapters take the outcome from the guard's refusal kind, so
//! they cannot drift apart again.

mod common;
#[path = "attacks/pg_support.rs"]
#[allow(dead_code)] // the attack suite uses the rest of it
mod pg_support;

use std::time::{Duration, Instant};

use common::*;
use pg_support::{Db, sqlstate, through};
use serde_json::{Value, json};
use tokio_postgres::NoTls;

const CUSTOMERS: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text);
INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');";

struct Setup {
    gw: Gateway,
    _db: Db,
    pg_port: u16,
    admin: String,
    agent: Key,
    lead: Key,
}

fn setup(db: Db) -> Setup {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let lead = api_key("dana", "human", &["leads"]);
    let pg_port = free_port();
    let admin_port = free_port();
    let rules = format!(
        r#"{agent}{lead}
[targets.billing]
kind = "mcp"
{cmd}

[targets.crm]
kind = "postgres"
listen = "127.0.0.1:{pg_port}"
upstream = "postgres://127.0.0.1:5432/{dbname}"
user = "{role}"

[[rules]]
name = "agents work"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]

[[rules]]
name = "agents read and update"
who.groups = ["agents"]
target = "crm"
allow.statements = ["select", "update"]
allow.tables = ["customers"]

[[rules]]
name = "refunds need a lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_payment"]
decision = "hold"
approvers = ["leads"]
timeout = "1m"

[[rules]]
name = "updates need a lead"
who.groups = ["agents"]
target = "crm"
hold.statements = ["update"]
approvers = ["leads"]
timeout = "1m"

[[rules]]
name = "no customer deletes"
who.groups = ["agents"]
target = "billing"
tools = ["delete_customer"]
decision = "deny"
reason = "deleting customers is for people"

[[rules]]
name = "no deletes"
who.groups = ["agents"]
target = "crm"
deny.statements = ["delete"]
"#,
        agent = agent.config,
        lead = lead.config,
        cmd = demo_server_command(),
        dbname = db.name,
        role = db.role,
    );
    let gw = Gateway::start_with(
        &rules,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the PostgreSQL listener did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Setup {
        gw,
        _db: db,
        pg_port,
        admin: format!("http://127.0.0.1:{admin_port}"),
        agent,
        lead,
    }
}

/// The refund call, as a 2026-07-28 request to `url` as `key`; its answer as text. Owned
/// arguments, so a test can spawn it and hang up by aborting the task.
async fn refund(url: String, key: String, id: u64) -> reqwest::Result<String> {
    let mut params = json!({
        "name": "refund_payment",
        "arguments": {"customer": "cus_1001", "amount": 25},
    });
    add_modern_meta(&mut params);
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "refund_payment")
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
        .send()
        .await?
        .text()
        .await
}

/// The one pending approval of `action`, once it appears.
async fn pending(s: &Setup, action: &str) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = client
            .get(format!("{}/api/v1/approvals", s.admin))
            .bearer_auth(&s.lead.key)
            .send()
            .await
            && resp.status().is_success()
        {
            let body: Value = resp.json().await.unwrap();
            if let Some(found) = body["approvals"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["action"] == action && a["status"] == "pending")
            {
                return found.clone();
            }
        }
        assert!(Instant::now() < deadline, "no pending {action} approval");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deny(s: &Setup, approval: &Value) {
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/approvals/{}/deny",
            s.admin,
            approval["id"].as_str().unwrap()
        ))
        .bearer_auth(&s.lead.key)
        .json(&json!({"reason": "not today", "digest": approval["digest"]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

/// The request event of `approval`, once recorded.
async fn request_event_of(s: &Setup, approval: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(ev) =
            s.gw.events()
                .into_iter()
                .find(|e| e["type"] == "request" && e["approval"] == approval["id"])
        {
            return ev;
        }
        assert!(
            Instant::now() < deadline,
            "no request event for {}",
            approval["id"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_adapters_record_the_same_outcome_for_the_same_situation() {
    let s = setup(Db::new(CUSTOMERS).await);

    // 1. Held, then denied by a lead: `denied`, in both.
    let (answer, approval) =
        tokio::join!(refund(s.gw.url("billing"), s.agent.key.clone(), 1), async {
            let approval = pending(&s, "tools/call").await;
            deny(&s, &approval).await;
            approval
        });
    let answer = last_message(&answer.unwrap());
    assert_eq!(answer["error"]["code"], -32011, "{answer}");
    let mcp_denied = request_event_of(&s, &approval).await;

    let c = through(s.pg_port, &s.agent, "billing-agent", "crm").await;
    let (result, approval) = tokio::join!(
        c.simple_query("UPDATE customers SET name = 'Denied' WHERE id = 1"),
        async {
            let approval = pending(&s, "update").await;
            deny(&s, &approval).await;
            approval
        }
    );
    assert_eq!(sqlstate(&result.unwrap_err()), "42501");
    let pg_denied = request_event_of(&s, &approval).await;
    assert_eq!(mcp_denied["outcome"], "denied", "{mcp_denied}");
    assert_eq!(pg_denied["outcome"], mcp_denied["outcome"], "{pg_denied}");
    assert_eq!(pg_denied["decision"], mcp_denied["decision"]);

    // 2. Held, then abandoned by the caller: `failed`, in both (nobody decided).
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 2));
    let approval = pending(&s, "tools/call").await;
    // The caller hangs up while it waits.
    call.abort();
    let mcp_gone = request_event_of(&s, &approval).await;

    let token = c.cancel_token();
    let update = tokio::spawn(async move {
        c.simple_query("UPDATE customers SET name = 'Gone' WHERE id = 2")
            .await
            .map(drop)
    });
    let approval = pending(&s, "update").await;
    token.cancel_query(NoTls).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), update)
        .await
        .expect("the cancel ends the wait")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    let pg_cancelled = request_event_of(&s, &approval).await;
    assert_eq!(mcp_gone["outcome"], "failed", "{mcp_gone}");
    assert_eq!(
        pg_cancelled["outcome"], mcp_gone["outcome"],
        "{pg_cancelled}"
    );

    // 3. Refused by a deny rule: `denied`, in both, naming the rule.
    let client = reqwest::Client::new();
    let (_, answer) = modern_call(
        &client,
        &s.gw.url("billing"),
        &s.agent.key,
        3,
        "tools/call",
        json!({"name": "delete_customer", "arguments": {"customer": "cus_1001", "amount": 1}}),
    )
    .await;
    assert_eq!(answer["error"]["code"], -32010, "{answer}");
    let c = through(s.pg_port, &s.agent, "billing-agent", "crm").await;
    let e = c
        .simple_query("DELETE FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let events = s.gw.events();
    let mcp_rule = events
        .iter()
        .find(|e| e["type"] == "request" && e["rule"] == "no customer deletes")
        .expect("the refused customer delete");
    let pg_rule = events
        .iter()
        .find(|e| e["type"] == "request" && e["rule"] == "no deletes")
        .expect("the refused delete's event");
    assert_eq!(mcp_rule["outcome"], "denied", "{mcp_rule}");
    assert_eq!(pg_rule["outcome"], mcp_rule["outcome"], "{pg_rule}");
    assert_eq!(pg_rule["decision"], "deny");
    assert_eq!(mcp_rule["decision"], "deny");

    // 4. Held while the gateway stops: the approvals are cancelled, nobody decided them:
    // `failed`, in both.
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 4));
    let mcp_held = pending(&s, "tools/call").await;
    let update = tokio::spawn(async move {
        c.simple_query("UPDATE customers SET name = 'Stopped' WHERE id = 2")
            .await
            .map(drop)
    });
    let pg_held = pending(&s, "update").await;
    let mut s = s;
    assert!(s.gw.terminate(), "the gateway stops cleanly");
    let answer = last_message(&call.await.unwrap().unwrap_or_default());
    assert_eq!(answer["error"]["code"], -32011, "{answer}");
    let e = update.await.unwrap().unwrap_err();
    assert!(["57014", "57P01"].contains(&sqlstate(&e).as_str()), "{e:?}");
    let events = s.gw.events();
    let of = |approval: &Value| {
        events
            .iter()
            .find(|e| e["type"] == "request" && e["approval"] == approval["id"])
            .cloned()
            .unwrap_or_else(|| panic!("no request event for {}", approval["id"]))
    };
    let (mcp_stopped, pg_stopped) = (of(&mcp_held), of(&pg_held));
    assert_eq!(mcp_stopped["outcome"], "failed", "{mcp_stopped}");
    assert_eq!(
        pg_stopped["outcome"], mcp_stopped["outcome"],
        "{pg_stopped}"
    );
}
