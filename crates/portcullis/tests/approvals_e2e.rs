//! Held requests, approvals and just-in-time grants through the real binary: the agent's
//! call waits at the gateway, a human decides with the real CLI or the admin API, and the
//! whole trail is in the audit log. Races and refusals go through the admin API as any
//! client would send them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

struct Setup {
    gw: Gateway,
    admin: String,
    agent: Key,
    dana: Key,
    omar: Key,
    eve: Key,
}

/// The demo's billing server behind a gateway whose refunds need `min` finance leads.
fn setup(min: u32, timeout: &str, extra_rules: &str, env: &[(&str, &str)]) -> Setup {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let dana = api_key("dana", "human", &["finance-leads"]);
    let omar = api_key("omar", "human", &["finance-leads"]);
    let eve = api_key("eve", "human", &["engineering"]);
    let admin_port = free_port();
    let rules = format!(
        r#"{agent}{dana}{omar}{eve}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "refunds need a finance lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_payment"]
decision = "hold"
approvers = ["finance-leads"]
min_approvals = {min}
timeout = "{timeout}"

{extra_rules}
"#,
        agent = agent.config,
        dana = dana.config,
        omar = omar.config,
        eve = eve.config,
        cmd = demo_server_command(),
    );
    let gw = Gateway::start_with(
        &rules,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        env,
    );
    Setup {
        gw,
        admin: format!("http://127.0.0.1:{admin_port}"),
        agent,
        dana,
        omar,
        eve,
    }
}

/// A refund call with a progress token and a reason, read to its end as SSE text.
async fn refund(url: String, key: String, id: u64) -> String {
    let client = reqwest::Client::new();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "refund_payment",
        "arguments": {"customer": "cus_1001", "amount": 25, "card": "4111 1111 1111 1111"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "portcullis-tests", "version": "1"},
            "progressToken": format!("p{id}"),
            "dev.portcullis/reason": "duplicate charge on the March invoice",
        }
    }});
    client
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "refund_payment")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

/// Waits until `key` sees `n` pending approvals, and returns them.
async fn pending(admin: &str, key: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api(
            reqwest::Method::GET,
            format!("{admin}/api/v1/approvals"),
            key,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let list = body["approvals"].as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn decide(
    admin: &str,
    key: &str,
    approval: &Value,
    verb: &str,
    reason: &str,
) -> (u16, Value) {
    api(
        reqwest::Method::POST,
        format!(
            "{admin}/api/v1/approvals/{}/{verb}",
            approval["id"].as_str().unwrap()
        ),
        key,
        Some(json!({"reason": reason, "digest": approval["digest"]})),
    )
    .await
}

/// Polls `GET /approvals/{id}` as `key` until `done(status, body)` (10 s at most); returns
/// the body. The admin API may still be starting, or the approval still changing.
async fn shown_when(admin: &str, key: &str, id: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api(
            reqwest::Method::GET,
            format!("{admin}/api/v1/approvals/{id}"),
            key,
            None,
        )
        .await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{id}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn messages(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// A webhook receiver: keeps each delivery's signature header and body.
async fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/hook/secret-path",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let signature = headers
                        .get("portcullis-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    sink.lock().unwrap().push((signature, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook/secret-path", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn a_held_refund_is_approved_with_the_cli_and_completes_with_its_trail() {
    let (hook, deliveries) = webhook_receiver().await;
    const SECRET: &str = "a-webhook-secret-of-some-length";
    let s = setup(
        1,
        "5m",
        &format!("[[approvals.webhooks]]\nurl = \"{hook}\"\nsecret_env = \"HOOK_SECRET\"\n"),
        &[("HOOK_SECRET", SECRET)],
    );
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 7));

    // The finance lead sees it with the CLI, arguments masked.
    let listed = pending(&s.admin, &s.dana.key, 1).await;
    let approval = &listed[0];
    let id = approval["id"].as_str().unwrap().to_string();
    assert_eq!(approval["requester"]["subject"], "billing-agent");
    assert_eq!(approval["reason"], "duplicate charge on the March invoice");
    assert_eq!(approval["arguments"]["amount"], 25);
    assert!(
        !approval.to_string().contains("4111 1111 1111 1111"),
        "approvers see arguments masked: {approval}"
    );
    let (ok, out, err) = cli(&s.admin, &s.dana.key, &["approvals", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains(&id), "{out}");

    // The agent cannot approve its own request, nor can an engineer outside finance.
    let (ok, _, err) = cli(
        &s.admin,
        &s.agent.key,
        &["approvals", "approve", &id, "--reason", "trust me"],
    );
    assert!(!ok);
    assert!(
        err.contains("not_approver") || err.contains("may not decide"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &s.admin,
        &s.eve.key,
        &["approvals", "approve", &id, "--reason", "looks fine"],
    );
    assert!(!ok);
    assert!(err.contains("may not decide"), "{err}");
    assert!(!call.is_finished(), "the call is still held");

    let (ok, out, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "approvals",
            "approve",
            &id,
            "--reason",
            "customer called, refund agreed",
        ],
    );
    assert!(ok, "{out}{err}");
    let sse = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("released after approval")
        .unwrap();
    let msgs = messages(&sse);
    let progress = &msgs[0];
    assert_eq!(progress["method"], "notifications/progress");
    assert_eq!(progress["params"]["progressToken"], "p7");
    assert!(
        progress["params"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("awaiting approval {id}")),
        "{progress}"
    );
    let answer = msgs.last().unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(
        answer["result"]["content"][0]["text"], "refunded 25.00 USD to cus_1001",
        "{answer}"
    );

    // The trail: requested, approved by dana, released, then the request itself.
    let events = s.gw.events();
    // Deliveries are recorded as they end, in between: they are checked below.
    let about: Vec<&Value> = events
        .iter()
        .filter(|e| e["approval"] == id.as_str() && e["type"] != "approval.notified")
        .collect();
    let kinds: Vec<&str> = about.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "approval.requested",
            "approval.refused",
            "approval.refused",
            "approval.approved",
            "approval.released",
            "request"
        ],
        "{about:#?}"
    );
    assert_eq!(about[0]["reason"], "duplicate charge on the March invoice");
    // The refused attempts (the agent's own, eve's outside finance-leads) are logged with
    // who tried (AC-5 evidence that separation of duties holds).
    let refused: Vec<&str> = about[1..3]
        .iter()
        .map(|e| e["identity"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["billing-agent", "eve"]);
    assert!(
        about[1]["detail"]
            .as_str()
            .unwrap()
            .contains("their own request")
    );
    assert_eq!(about[3]["identity"]["subject"], "dana");
    assert_eq!(about[3]["reason"], "customer called, refund agreed");
    let request = about[5];
    assert_eq!(request["decision"], "hold");
    assert_eq!(request["outcome"], "success");
    assert_eq!(request["identity"]["subject"], "billing-agent");
    // The finance leads were told, with a signature the receiver can check, and the
    // deliveries are in the log without the hook's secret path.
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "webhook deliveries did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let got = deliveries.lock().unwrap().clone();
    let mut types = Vec::new();
    for (signature, body) in &got {
        assert!(
            portcullis_approvals::notify::verify_signature(
                SECRET.as_bytes(),
                signature,
                body,
                now,
                300
            ),
            "{signature}"
        );
        let notice: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(notice["approval"]["id"], id.as_str());
        types.push(notice["type"].as_str().unwrap().to_string());
    }
    assert_eq!(types, ["approval.requested", "approval.resolved"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let notified = loop {
        let events = s.gw.events();
        let notified: Vec<Value> = events
            .into_iter()
            .filter(|e| e["type"] == "approval.notified" && e["approval"] == id.as_str())
            .collect();
        if notified.len() == 2 {
            break notified;
        }
        assert!(Instant::now() < deadline, "{notified:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(notified.iter().all(|e| e["outcome"] == "success"));
    assert!(
        !notified
            .iter()
            .any(|e| e.to_string().contains("secret-path"))
    );
    // The refusals were not recorded as decisions.
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "approval.approved" && e["identity"]["subject"] != "dana")
    );
}

#[tokio::test]
async fn denied_and_expired_holds_tell_the_caller_who_decided_and_why() {
    let s = setup(1, "3s", "", &[]);
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let (status, body) = decide(
        &s.admin,
        &s.dana.key,
        &approval,
        "deny",
        "amount exceeds the invoice",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "denied");
    let answer = messages(&call.await.unwrap()).pop().unwrap();
    let error = &answer["error"];
    assert_eq!(error["code"], -32011);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("denied by dana"), "{message}");
    assert!(message.contains("amount exceeds the invoice"), "{message}");
    assert!(
        message.contains(approval["id"].as_str().unwrap()),
        "{message}"
    );
    assert_eq!(error["data"]["status"], "denied");
    assert_eq!(error["data"]["decided_by"][0]["subject"], "dana");

    // Nobody decides the next one: it expires and says so.
    let started = Instant::now();
    let answer = messages(&refund(s.gw.url("billing"), s.agent.key.clone(), 2).await)
        .pop()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(answer["error"]["data"]["status"], "expired");
    let expired_id = answer["error"]["data"]["approval"].as_str().unwrap();
    // A decision after the expiry is refused.
    let (status, body) = api(
        reqwest::Method::GET,
        format!("{}/api/v1/approvals/{expired_id}", s.admin),
        &s.dana.key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, late) = decide(&s.admin, &s.dana.key, &body, "approve", "sorry, late").await;
    assert_eq!(status, 409, "{late}");
    assert_eq!(late["error"]["code"], "already_decided");
    let events = s.gw.events();
    for ty in ["approval.denied", "approval.expired"] {
        assert_eq!(events.iter().filter(|e| e["type"] == ty).count(), 1, "{ty}");
    }
}

#[tokio::test]
async fn races_replays_and_outsiders_are_refused_through_the_admin_api() {
    let s = setup(1, "5m", "", &[]);
    let first = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let second = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 2));
    let list = pending(&s.admin, &s.dana.key, 2).await;
    let (a, b) = (&list[0], &list[1]);

    // A decision made for one request, replayed against the other.
    let (status, body) = api(
        reqwest::Method::POST,
        format!(
            "{}/api/v1/approvals/{}/approve",
            s.admin,
            b["id"].as_str().unwrap()
        ),
        &s.dana.key,
        Some(json!({"reason": "ok", "digest": a["digest"]})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("digest_mismatch")),
        "{body}"
    );

    // A non-approver, no credential, a bad credential, a malformed body.
    let (status, body) = decide(&s.admin, &s.eve.key, a, "approve", "fine").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_approver")),
        "{body}"
    );
    let (status, body) = api(
        reqwest::Method::GET,
        format!("{}/api/v1/approvals", s.admin),
        "pcx_forged",
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/approvals", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, body) = api(
        reqwest::Method::POST,
        format!(
            "{}/api/v1/approvals/{}/approve",
            s.admin,
            a["id"].as_str().unwrap()
        ),
        &s.dana.key,
        Some(json!({"reason": "ok"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    // The outsider does not even see what waits.
    let (_, seen) = api(
        reqwest::Method::GET,
        format!("{}/api/v1/approvals", s.admin),
        &s.eve.key,
        None,
    )
    .await;
    assert_eq!(seen["approvals"], json!([]));

    // Two approvers at once: exactly one decision counts.
    let (ra, rb) = tokio::join!(
        decide(&s.admin, &s.dana.key, a, "approve", "ok"),
        decide(&s.admin, &s.omar.key, a, "deny", "no"),
    );
    let statuses = [ra.0, rb.0];
    assert!(
        statuses.contains(&200) && statuses.contains(&409),
        "{ra:?} {rb:?}"
    );
    let loser = if ra.0 == 409 { &ra.1 } else { &rb.1 };
    assert_eq!(loser["error"]["code"], "already_decided");
    let (status, _) = decide(&s.admin, &s.omar.key, b, "deny", "not today").await;
    assert_eq!(status, 200);
    for call in [first, second] {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .unwrap()
            .unwrap();
    }
    let decisions =
        s.gw.events()
            .into_iter()
            .filter(|e| e["type"] == "approval.approved" || e["type"] == "approval.denied")
            .count();
    assert_eq!(
        decisions, 2,
        "one per approval, the refused ones not recorded"
    );
}

#[tokio::test]
async fn two_approvals_need_two_people_and_break_glass_is_flagged() {
    let sre = api_key("sam", "human", &["agents", "incident"]);
    let s = setup(
        2,
        "5m",
        &format!(
            "{}[approvals]\nbreak_glass_groups = [\"incident\"]\n",
            sre.config
        ),
        &[],
    );
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let (status, body) = decide(&s.admin, &s.dana.key, &approval, "approve", "ok").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    let (status, body) = decide(&s.admin, &s.dana.key, &approval, "approve", "ok again").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_voted"))
    );
    let (status, body) = decide(&s.admin, &s.omar.key, &approval, "approve", "agreed").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("approved")));
    let answer = messages(&call.await.unwrap()).pop().unwrap();
    assert!(answer["result"].is_object(), "{answer}");

    // Sam is an agent-group member in an incident: held, and may self-approve, flagged.
    let call = tokio::spawn(refund(s.gw.url("billing"), sre.key.clone(), 2));
    let approval = pending(&s.admin, &sre.key, 1).await.remove(0);
    let (status, body) = decide(
        &s.admin,
        &sre.key,
        &approval,
        "approve",
        "incident 4711: refunds stuck",
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let answer = messages(&call.await.unwrap()).pop().unwrap();
    assert!(answer["result"].is_object(), "{answer}");
    let events = s.gw.events();
    let glass: Vec<&Value> = events.iter().filter(|e| e["break_glass"] == true).collect();
    assert_eq!(glass.len(), 1);
    assert_eq!(glass[0]["identity"]["subject"], "sam");
    assert!(
        glass[0]["detail"]
            .as_str()
            .unwrap()
            .contains("BREAK-GLASS self-approval")
    );
}

#[tokio::test]
async fn a_restart_fails_the_held_request_cleanly_and_keeps_its_record() {
    let mut s = setup(1, "5m", "", &[]);
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let id = approval["id"].as_str().unwrap().to_string();
    // A graceful stop tells the waiting caller at once.
    assert!(
        s.gw.terminate(),
        "the gateway stops although a request is held"
    );
    let answer = messages(&call.await.unwrap()).pop().unwrap();
    assert_eq!(answer["error"]["data"]["status"], "cancelled", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopping"),
        "{answer}"
    );
    s.gw.restart();
    let shown = shown_when(&s.admin, &s.dana.key, &id, |status, _| status == 200).await;
    assert_eq!(shown["status"], "cancelled");
    let (status, body) = decide(&s.admin, &s.dana.key, &shown, "approve", "too late").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );

    // Killed outright while holding: the caller's connection breaks, and the restarted
    // gateway closes the record.
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 2));
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    s.gw.kill();
    let _ = call.await;
    s.gw.restart();
    let id = approval["id"].as_str().unwrap();
    let body = shown_when(&s.admin, &s.dana.key, id, |status, _| status == 200).await;
    assert_eq!(body["status"], "cancelled");
    assert!(
        body["closed_because"]
            .as_str()
            .unwrap()
            .contains("restarted")
    );
    assert_eq!(
        s.gw.events()
            .iter()
            .filter(|e| e["type"] == "approval.cancelled")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_grant_is_asked_for_approved_used_revoked_and_expires() {
    let grant_rule = r#"
[[rules]]
name = "lookups need a grant"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
requires_grant = true
approvers = ["finance-leads"]
max_grant = "1h"
"#;
    let s = setup(1, "5m", grant_rule, &[]);
    let client = reqwest::Client::new();
    let url = s.gw.url("billing");
    let lookup = |id: u64| {
        modern_call(
            &client,
            &url,
            &s.agent.key,
            id,
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
        )
    };
    let (_, refused) = lookup(1).await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("portcullis access request --target billing --tools lookup_customer"),
        "{message}"
    );

    // The agent asks with the CLI; the finance lead approves with the CLI.
    let (ok, out, err) = cli(
        &s.admin,
        &s.agent.key,
        &[
            "access",
            "request",
            "--target",
            "billing",
            "--tools",
            "lookup_customer",
            "--for",
            "1m",
            "--reason",
            "reconcile March refunds",
        ],
    );
    assert!(ok, "{out}{err}");
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    assert_eq!(approval["kind"], "grant");
    let id = approval["id"].as_str().unwrap().to_string();
    assert!(out.contains(&id), "{out}");
    let (ok, out, err) = cli(
        &s.admin,
        &s.dana.key,
        &[
            "approvals",
            "approve",
            &id,
            "--reason",
            "for the reconciliation",
        ],
    );
    assert!(ok, "{out}{err}");
    let (_, allowed) = lookup(2).await;
    assert!(allowed["result"].is_object(), "{allowed}");

    // Revoked early: the next call is refused.
    let (ok, out, err) = cli(
        &s.admin,
        &s.dana.key,
        &["access", "revoke", &id, "--reason", "done"],
    );
    assert!(ok, "{out}{err}");
    let (_, after) = lookup(3).await;
    assert_eq!(after["error"]["code"], -32010, "{after}");

    // A second grant runs out on time: used, then refused after its minute.
    let (ok, _, err) = cli(
        &s.admin,
        &s.agent.key,
        &[
            "access", "request", "--target", "billing", "--tools", "lookup_*", "--for", "1m",
            "--reason", "one more",
        ],
    );
    // The rule names lookup_customer only: a pattern reaching past it is not granted.
    assert!(!ok && err.contains("no_grant_rule"), "{err}");
    let (ok, _, err) = cli(
        &s.admin,
        &s.agent.key,
        &[
            "access",
            "request",
            "--target",
            "billing",
            "--tools",
            "lookup_customer",
            "--for",
            "1m",
            "--reason",
            "one more",
        ],
    );
    assert!(ok, "{err}");
    let second = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let (status, _) = decide(&s.admin, &s.dana.key, &second, "approve", "ok").await;
    assert_eq!(status, 200);
    let issued = Instant::now();
    let (_, used) = lookup(4).await;
    assert!(used["result"].is_object(), "{used}");
    tokio::time::sleep(Duration::from_secs(61).saturating_sub(issued.elapsed())).await;
    let (_, expired) = lookup(5).await;
    assert_eq!(expired["error"]["code"], -32010, "{expired}");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let events = s.gw.events();
    let count = |ty: &str| events.iter().filter(|e| e["type"] == ty).count();
    assert_eq!(count("grant.issued"), 2);
    assert_eq!(count("grant.revoked"), 1);
    assert_eq!(count("grant.expired"), 1);
    let uses: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request" && e["grant"].is_string())
        .collect();
    assert_eq!(uses.len(), 2, "each use names its grant");
    assert_eq!(uses[0]["grant"], id.as_str());
}

/// `portcullis demo` as a newcomer runs it: the refund is held, the human approves it with
/// the CLI, the agent gets its result, and the audit log with the whole trail verifies.
#[tokio::test]
async fn the_demo_holds_a_refund_until_the_human_approves_it() {
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
        .stdout(std::process::Stdio::piped());
    let (mut child, _) = start_and_wait(&mut cmd, addr, "demo");
    let keys = std::fs::read_to_string(demo_dir.join("demo-keys.txt")).unwrap();
    let mut keys = keys.lines();
    let (agent, human) = (
        keys.next().unwrap().to_string(),
        keys.next().unwrap().to_string(),
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    let url = format!("http://{addr}/mcp/billing");

    // The rule wants a reason: without one the refund is refused at once, and says how.
    let (_, refused) = modern_call(
        &reqwest::Client::new(),
        &url,
        &agent,
        1,
        "tools/call",
        json!({"name": "refund_payment", "arguments": {"customer": "cus_1001", "amount": 25}}),
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dev.portcullis/reason"),
        "{refused}"
    );

    let call = tokio::spawn(refund(url.clone(), agent.clone(), 2));
    let id = pending(&admin, &human, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The agent cannot approve its own refund; the refusal itself is logged (AC-5).
    let (ok, out, err) = cli(
        &admin,
        &agent,
        &["approvals", "approve", &id, "--reason", "mine"],
    );
    assert!(!ok && err.contains("[self_approval]"), "{out}{err}");
    let (ok, out, err) = cli(
        &admin,
        &human,
        &[
            "approvals",
            "approve",
            &id,
            "--reason",
            "customer called, refund agreed",
        ],
    );
    assert!(ok, "{out}{err}");
    let answer = messages(&call.await.unwrap()).pop().unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], "refunded 25.00 USD to cus_1001",
        "{answer}"
    );

    // The database part (PostgreSQL runs on this machine): the agent's SELECT comes back
    // with account numbers masked, its DELETE is refused, and the customers are still there.
    let psql = |key: &str, user: &str, sql: &str| {
        let out = Command::new("psql")
            .args([
                &format!("host=127.0.0.1 port={pg_port} user={user} dbname=billing-db"),
                "-X",
                "-A",
                "-t",
                "-v",
                "VERBOSITY=verbose",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", key)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, rows, err) = psql(
        &agent,
        "billing-agent",
        "SELECT id, email, account_number FROM customers WHERE id = 1001",
    );
    assert!(ok, "{err}");
    assert_eq!(rows.trim(), "1001|[EMAIL]|******************3000", "{rows}");
    let (ok, _, err) = psql(&agent, "billing-agent", "DELETE FROM customers");
    assert!(
        !ok && err.contains("42501") && err.contains("agents never delete rows"),
        "{err}"
    );
    let (ok, rows, err) = psql(&human, "dana.finance", "SELECT count(*) FROM customers");
    assert!(
        ok && rows.trim().parse::<u32>().unwrap() >= 3,
        "{rows}{err}"
    );

    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(child.wait().unwrap().success());
    let verify = Command::new(binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(demo_dir.join("data"))
        .arg("--pubkey")
        .arg(demo_dir.join("audit-key/audit.pub"))
        .arg("--checkpoints")
        .arg(demo_dir.join("checkpoints"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // The demo's file sink holds the same trail, and its copy verifies on its own against
    // the checkpoints it carries, through the stop event.
    let siem = demo_dir.join("siem/audit.jsonl");
    let export = Command::new(binary())
        .args(["audit", "verify-export"])
        .arg(&siem)
        .arg("--pubkey")
        .arg(demo_dir.join("audit-key/audit.pub"))
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}{}",
        String::from_utf8_lossy(&export.stdout),
        String::from_utf8_lossy(&export.stderr)
    );
    let streamed = std::fs::read_to_string(&siem).unwrap();
    assert!(
        streamed.contains("\"type\":\"gateway.stop\"")
            && streamed.contains(&format!("\"approval\":\"{id}\"")),
        "{streamed}"
    );
    let tail = Command::new(binary())
        .args(["audit", "tail", "-n", "1000", "--data-dir"])
        .arg(demo_dir.join("data"))
        .output()
        .unwrap();
    let trail: Vec<String> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["approval"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        trail,
        [
            "approval.requested",
            "approval.refused",
            "approval.approved",
            "approval.released",
            "request"
        ]
    );

    // The evidence of the demo's calls: the AU-6 report names the agent, the human who
    // approved the refund, the refused self-approval, the denied delete and the log's
    // integrity; the OSCAL documents validate against NIST's schemas.
    let config = demo_dir.join("portcullis.toml");
    let out = dir.path().join("evidence");
    let evidence = |args: &[&str]| {
        let output = Command::new(binary())
            .arg("evidence")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "evidence {args:?}: {text}");
        text
    };
    let json_file = out.join("report.json");
    evidence(&[
        "report",
        "--format",
        "json",
        "--out",
        json_file.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(
        report["integrity"]["verified"], true,
        "{}",
        report["integrity"]
    );
    let names: Vec<&str> = report["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"billing-agent") && names.contains(&"dana.finance"),
        "{names:?}"
    );
    let hold = &report["holds"]["items"][0];
    assert_eq!(hold["approval"], id.as_str());
    assert_eq!(hold["requester"], "billing-agent");
    assert_eq!(hold["status"], "approved");
    assert_eq!(hold["decisions"][0]["who"], "dana.finance");
    assert_eq!(
        report["refused_decisions"]["items"][0]["who"],
        "billing-agent"
    );
    let rules: Vec<&str> = report["refusals_by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"agents never delete rows"), "{rules:?}");
    let status = |control: &str| {
        report["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["control"] == control)
            .unwrap()["status"]
            .clone()
    };
    for control in ["ac-3", "ac-5", "ac-6", "au-3", "au-9", "au-12", "ia-2"] {
        assert_eq!(
            status(control),
            "satisfied",
            "{control}: {}",
            report["controls"]
        );
    }
    assert_eq!(
        status("au-6"),
        "not-satisfied",
        "nobody signed a review off yet"
    );

    let html_file = out.join("report.html");
    evidence(&["report", "--sign", "--out", html_file.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_file).unwrap();
    for fact in [
        "billing-agent",
        "dana.finance",
        "agents never delete rows",
        &id,
    ] {
        assert!(html.contains(fact), "the HTML report names {fact}");
    }
    // Signed under the name it was written as, and its hash is in the log.
    let verified = Command::new(binary())
        .args(["evidence", "verify"])
        .arg(&html_file)
        .arg("--pubkey")
        .arg(demo_dir.join("audit-key/audit.pub"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let tail = Command::new(binary())
        .args(["audit", "tail", "-n", "5", "--data-dir"])
        .arg(demo_dir.join("data"))
        .output()
        .unwrap();
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(html.as_bytes()));
    assert!(
        String::from_utf8_lossy(&tail.stdout)
            .lines()
            .any(|l| l.contains("evidence.report") && l.contains(&sha256)),
        "the report's hash is recorded"
    );

    let results_file = out.join("results.json");
    evidence(&["oscal", "--out", results_file.to_str().unwrap()]);
    let schemas =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../evidence/tests/schemas");
    let validate = |schema: &str, file: &std::path::Path| {
        let schema: Value =
            serde_json::from_slice(&std::fs::read(schemas.join(schema)).unwrap()).unwrap();
        let document: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .take(5)
            .collect();
        assert!(
            errors.is_empty(),
            "{} against {schema:?}: {errors:?}",
            file.display()
        );
        document
    };
    let results = validate(
        "oscal-1.2.1_assessment-results.nist.schema.json",
        &results_file,
    );
    validate("oscal-1.0.6_assessment-results.schema.json", &results_file);
    validate(
        "oscal-1.2.1_assessment-plan.nist.schema.json",
        &out.join("results.assessment-plan.json"),
    );
    assert_eq!(
        results["assessment-results"]["import-ap"]["href"],
        "results.assessment-plan.json"
    );
    let component_file = out.join("component.json");
    evidence(&["component", "--out", component_file.to_str().unwrap()]);
    validate(
        "oscal-1.2.1_component-definition.nist.schema.json",
        &component_file,
    );
}

/// A session client cancels its held call: the wait ends, nothing is forwarded, and a later
/// approval is refused because there is nothing left to approve.
#[tokio::test]
async fn a_cancelled_held_call_is_never_forwarded() {
    let s = setup(1, "5m", "", &[]);
    let client = reqwest::Client::new();
    let url = s.gw.url("billing");
    let post = |body: Value, session: Option<String>| {
        let mut req = client
            .post(&url)
            .bearer_auth(&s.agent.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(session) = session {
            req = req.header("mcp-session-id", session);
        }
        req.send()
    };
    let init = post(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = init.text().await;
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let held = post(
        json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {
            "name": "refund_payment", "arguments": {"customer": "cus_1001", "amount": 5}}}),
        Some(session.clone()),
    );
    let held = tokio::spawn(async move { held.await.map(|_| ()) });
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let resp = post(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": 41, "reason": "user changed their mind"}}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let body = shown_when(
        &s.admin,
        &s.dana.key,
        approval["id"].as_str().unwrap(),
        |_, body| body["status"] == "cancelled",
    )
    .await;
    assert!(
        body["closed_because"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let (status, body) = decide(&s.admin, &s.dana.key, &approval, "approve", "ok").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_decided"))
    );
    held.abort();
    let events = s.gw.events();
    assert!(
        !events.iter().any(|e| e["type"] == "approval.released"
            || e["outcome"] == "success" && e["resource"] == "refund_payment"),
        "nothing was forwarded"
    );
}

/// With recording on, a held call's record shows what the caller heard while it waited
/// (the progress naming the approval), the request as it went upstream once approved (the
/// card masked by the recording profile), and the answer as the caller got it.
#[tokio::test]
async fn a_recorded_held_call_keeps_the_wait_the_forwarded_request_and_the_answer() {
    let s = setup(1, "5m", "[recording]\nmode = \"strict\"\n", &[]);
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 3));
    let approval = pending(&s.admin, &s.dana.key, 1).await.remove(0);
    let (status, body) = decide(&s.admin, &s.dana.key, &approval, "approve", "ok").await;
    assert_eq!(status, 200, "{body}");
    let got = messages(&call.await.unwrap());
    let (result, waiting) = got.split_last().unwrap();
    assert!(result["result"].is_object(), "{result}");
    assert!(!waiting.is_empty(), "the caller heard it was held: {got:?}");

    let event =
        s.gw.events()
            .into_iter()
            .find(|e| e["type"] == "request" && e["request_id"] == "3")
            .expect("the held call's event");
    assert_eq!(event["approval"], approval["id"]);
    let request = s.gw.recorded(&event, "request");
    assert_eq!(request.parts.len(), 1);
    let forwarded = &request.parts[0].body;
    assert_eq!(forwarded["method"], "tools/call");
    assert_eq!(forwarded["params"]["name"], "refund_payment");
    assert_eq!(forwarded["params"]["arguments"]["amount"], 25);
    assert!(
        !forwarded.to_string().contains("4111 1111 1111 1111"),
        "{forwarded}"
    );
    let answer = s.gw.recorded(&event, "answer");
    let (last, heard) = answer.parts.split_last().unwrap();
    assert_eq!(last.kind, "result");
    assert_eq!(last.body, result["result"]);
    let heard: Vec<&Value> = heard.iter().map(|p| &p.body).collect();
    assert_eq!(heard, waiting.iter().collect::<Vec<_>>());
    assert_eq!(answer.parts[0].kind, "progress");
    assert!(
        answer.parts[0].body["params"]["message"]
            .as_str()
            .unwrap()
            .contains(approval["id"].as_str().unwrap()),
        "{:?}",
        answer.parts[0].body
    );
}

/// The admin listener's probes and metrics: liveness, readiness and `/metrics` answer
/// without a credential (a load balancer, a kubelet or a scraper has none) and say nothing
/// but states and counts.
#[tokio::test]
async fn health_readiness_and_metrics_answer_on_the_admin_listener() {
    let s = setup(1, "1m", "", &[]);
    let client = reqwest::Client::new();
    let live = client
        .get(format!("{}/healthz", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let ready = client
        .get(format!("{}/readyz", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["audit_log"], "ok", "{body}");
    // No signing key in this configuration: said, not failed.
    assert_eq!(body["checks"]["checkpoint_signing"], "off", "{body}");
    // The probes are not a way into the API: the rest still wants a credential.
    let api = client
        .get(format!("{}/api/v1/approvals", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);

    // Metrics: a call no rule allows is counted under its target, decision and outcome.
    let (status, _) = modern_call(
        &client,
        &s.gw.url("billing"),
        &s.agent.key,
        1,
        "tools/call",
        json!({"name": "delete_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(status, 200);
    let scraped = client
        .get(format!("{}/metrics", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scraped.text().await.unwrap();
    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        sample(
            r#"portcullis_requests_total{target="billing",kind="mcp",decision="deny",outcome="denied"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample("portcullis_audit_available"), Some(1.0), "{text}");
    assert!(
        sample(r#"portcullis_request_duration_seconds_count{target="billing",kind="mcp"}"#)
            .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(sample("portcullis_holds_waiting"), Some(0.0), "{text}");
    // Unsigned here: no checkpoint, said as -1, and every committed event uncovered.
    assert_eq!(
        sample("portcullis_checkpoint_age_seconds"),
        Some(-1.0),
        "{text}"
    );
    let committed = sample("portcullis_events_committed").unwrap_or(0.0);
    assert!(
        committed >= 2.0,
        "the start and the denied call at least: {text}"
    );
    assert_eq!(
        sample("portcullis_events_uncovered"),
        Some(committed),
        "{text}"
    );
    assert_eq!(sample("portcullis_grants_in_force"), Some(0.0), "{text}");

    // A held refund is counted while it waits.
    let waiting = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 2));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = client
            .get(format!("{}/metrics", s.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == "portcullis_holds_waiting 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held refund was not counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiting.abort();
}
