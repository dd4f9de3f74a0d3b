//! The console's sessions and audit pages, against the real gateway binary: a lead signs in
//! with an API key exactly as a browser does (the sign-in page's cookie and hidden `state`,
//! a POST with the console's `Origin`), reads the session an agent's calls made, replays and
//! exports it, searches the log, opens an event and downloads its inclusion proof, which the
//! real `portcullis audit verify-proof` accepts. Each read is in the log under the lead's
//! name; someone who is not a recording reader is refused with who may.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::console::Browser;
use common::{Gateway, api_key, binary, demo_server_command, free_port, modern_call};
use reqwest::header::CONTENT_DISPOSITION;
use serde_json::{Value, json};

/// The text between `before` and the next `"` after it.
fn attr_after<'a>(html: &'a str, before: &str) -> Option<&'a str> {
    let start = html.find(before)? + before.len();
    html[start..].split('"').next()
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_reads_replays_exports_searches_and_proves_and_each_read_is_logged() {
    let keys = tempfile::tempdir().unwrap();
    let audit_key = keys.path().join("audit-key");
    let (ok, out) = run(&["keys", "audit-init", "--out", path(&audit_key)]);
    assert!(ok, "{out}");
    let pubkey = audit_key.join("audit.pub");

    let agent = api_key("billing-agent", "agent", &["agents"]);
    let lead = api_key("lena.lead", "human", &["leads"]);
    let clerk = api_key("carl.clerk", "human", &["clerks"]);
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let config = format!(
        r#"[audit]
signing_key = {key:?}
checkpoint_interval = "100ms"

[recording]
mode = "strict"

[console]
enabled = true
api_key_sign_in = true

{agent}{lead}{clerk}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
mask = "pii"

[[rules]]
name = "agents never delete"
who.groups = ["agents"]
target = "billing"
tools = ["delete_*"]
decision = "deny"
reason = "deleting is for people"

[[rules]]
name = "refunds need a lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_*"]
decision = "hold"
approvers = ["leads"]

[masks.pii]
detectors = ["pii"]
styles = {{ credit_card = "partial" }}
"#,
        key = path(&audit_key),
        agent = agent.config,
        lead = lead.config,
        clerk = clerk.config,
        cmd = demo_server_command(),
    );
    let gw = Gateway::start_with(
        &config,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );

    // The agent's calls: one allowed, one denied (each a session of its own: stateless MCP).
    let mcp = reqwest::Client::new();
    let (status, answer) = modern_call(
        &mcp,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, _denied) = modern_call(
        &mcp,
        &gw.url("billing"),
        &agent.key,
        2,
        "tools/call",
        json!({"name": "delete_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;

    // Not signed in: sent to sign in.
    let page = Browser::new(&admin).get("/console/sessions").await;
    assert_eq!(page.status, 303);
    assert!(
        page.location().contains("/console/sign-in"),
        "{}",
        page.location()
    );

    // Someone who is not a recording reader: a 403 that says who may.
    let mut carl = Browser::new(&admin);
    carl.sign_in(&clerk.key).await;
    for page in ["/console/sessions", "/console/audit"] {
        let (status, html) = carl.text(page).await;
        assert_eq!(status, 403, "{page}");
        assert!(html.contains("members of leads"), "{html}");
    }

    let mut lena = Browser::new(&admin);
    lena.sign_in(&lead.key).await;

    // The list: both requests, the denied one marked so; the outcome filter keeps it alone.
    let (status, html) = lena.text("/console/sessions").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches("<tr data-session=\"").count(), 2, "{html}");
    assert!(html.contains("1 denied"), "{html}");
    let (_, html) = lena
        .text("/console/sessions?outcome=denied&who=billing-agent")
        .await;
    assert_eq!(html.matches("<tr data-session=\"").count(), 1, "{html}");
    let (_, html) = lena.text("/console/sessions?outcome=allowed").await;
    let session = attr_after(&html, "<tr data-session=\"")
        .expect("the allowed call's session")
        .to_string();
    assert!(html.contains(&format!("href=\"/console/sessions/{session}\"")));
    let (status, html) = lena.text("/console/sessions?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        html.contains("since") && html.contains("RFC 3339"),
        "{html}"
    );

    // The session: its timeline with what was sent and what came back, and the replay.
    let (status, html) = lena.text(&format!("/console/sessions/{session}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("class=\"timeline\""), "{html}");
    assert!(html.contains("data-kind=\"request\""), "{html}");
    assert!(html.contains("data-side=\"request\""), "{html}");
    assert!(html.contains("data-side=\"answer\""), "{html}");
    assert!(html.contains("lookup_customer"), "{html}");
    // What came back is shown as recorded: masked as the agent received it.
    assert!(html.contains("1111"), "{html}");
    assert!(!html.contains("4111 1111 1111 1111"), "{html}");
    assert!(!html.contains("ada@example.com"), "{html}");
    assert!(html.contains("data-testid=\"replay\""), "{html}");
    assert!(html.contains("src=\"/console/static/replay.js\""), "{html}");
    assert!(!html.contains("style="), "no inline styles: {html}");
    let (status, js) = lena.text("/console/static/replay.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("PortcullisPages"));
    let (status, _) = lena.text("/console/sessions/no-such").await;
    assert_eq!(status, 404);

    // The export: the evidence bundle, as a file, that `sessions verify-bundle` accepts.
    assert!(html.contains(&format!(
        "data-testid=\"export\" href=\"/console/sessions/{session}/export\""
    )));
    let bundle_file = keys.path().join("bundle.json");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = lena
            .get(&format!("/console/sessions/{session}/export"))
            .await;
        if resp.status == 409 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(resp.status, 200);
        let disposition = resp.headers[CONTENT_DISPOSITION].to_str().unwrap();
        assert_eq!(
            disposition,
            format!("attachment; filename=\"session-{session}.json\"")
        );
        std::fs::write(&bundle_file, resp.body.as_bytes()).unwrap();
        break;
    }
    let (ok, out) = run(&[
        "sessions",
        "verify-bundle",
        path(&bundle_file),
        "--pubkey",
        path(&pubkey),
    ]);
    assert!(ok, "verify-bundle: {out}");

    // The audit search: newest first, filtered, and bad values named.
    let (status, html) = lena
        .text("/console/audit?type=request&identity=billing-agent&outcome=denied")
        .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(html.matches("<tr data-event=\"").count(), 1, "{html}");
    assert!(html.contains("agents never delete"), "{html}");
    let (_, html) = lena
        .text("/console/audit?type=request&rule=agents+look+up+customers")
        .await;
    let event_id = attr_after(&html, "<tr data-event=\"")
        .expect("the allowed request's event")
        .to_string();
    for (query, field, accepted) in [
        ("type=nonsense", "type", "approval.approved"),
        ("outcome=maybe", "outcome", "upstream_error"),
        ("until=soon", "until", "RFC 3339"),
        ("limit=0", "limit", "1 to 1000"),
    ] {
        let (status, html) = lena.text(&format!("/console/audit?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            html.contains(field) && html.contains(accepted),
            "{query}: {html}"
        );
    }

    // The event: its fields, leaf index, canonical JSON and the proof link.
    let (status, html) = lena.text(&format!("/console/audit/{event_id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<dl class=\"facts\""), "{html}");
    assert!(html.contains("data-testid=\"leaf-index\""), "{html}");
    assert!(html.contains(&format!(
        "data-testid=\"proof\" href=\"/console/audit/{event_id}/proof\""
    )));
    let (status, _) = lena.text("/console/audit/no-such-event").await;
    assert_eq!(status, 404);

    // The proof: the file `audit proof` writes, accepted by the real `audit verify-proof`.
    let proof_file = keys.path().join("proof.json");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = lena.get(&format!("/console/audit/{event_id}/proof")).await;
        if resp.status == 409 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.headers[CONTENT_DISPOSITION].to_str().unwrap(),
            format!("attachment; filename=\"proof-{event_id}.json\"")
        );
        std::fs::write(&proof_file, resp.body.as_bytes()).unwrap();
        break;
    }
    let (ok, out) = run(&[
        "audit",
        "verify-proof",
        path(&proof_file),
        "--pubkey",
        path(&pubkey),
    ]);
    assert!(ok, "verify-proof: {out}");
    let proof: Value =
        serde_json::from_str(&std::fs::read_to_string(&proof_file).unwrap()).unwrap();
    assert!(proof["event"].as_str().unwrap().contains(&event_id));

    // Each read is in the log under the reader's name, the refused clerk's under none.
    let events = gw.events();
    let by_lena = |e: &&Value| e["identity"]["subject"] == "lena.lead";
    let accessed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "recording.accessed")
        .filter(by_lena)
        .collect();
    assert!(
        accessed
            .iter()
            .any(|e| e["resource"] == session.as_str()
                && e["action"] == "GET /console/sessions/{id}"),
        "{accessed:?}"
    );
    assert!(
        accessed.iter().any(|e| e["resource"] == session.as_str()
            && e["action"] == "GET /console/sessions/{id}/export"),
        "{accessed:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "console.export")
            .filter(by_lena)
            .any(|e| e["resource"] == event_id.as_str()
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("inclusion proof"))),
        "no console.export by lena.lead for {event_id}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "recording.accessed" && e["identity"]["subject"] == "carl.clerk"),
        "a refused reader read nothing"
    );
}
