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

use common::{Gateway, api_key, binary, demo_server_command, free_port, modern_call};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

/// The value of the `name` cookie a response sets.
fn set_cookie(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", resp.headers()))
        .to_string()
}

/// The text between `before` and the next `"` after it.
fn attr_after<'a>(html: &'a str, before: &str) -> Option<&'a str> {
    let start = html.find(before)? + before.len();
    html[start..].split('"').next()
}

/// A value percent-encoded for an `application/x-www-form-urlencoded` body.
fn form_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs in with `key` like a browser: returns the console session cookie (`name=value`).
async fn sign_in(client: &reqwest::Client, admin: &str, key: &str) -> String {
    let page = client
        .get(format!("{admin}/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let flow = set_cookie(&page, "__Host-portcullis-sign-in");
    let html = page.text().await.unwrap();
    let state = attr_after(&html, "name=\"state\" value=\"")
        .expect("the sign-in form has a hidden state")
        .to_string();
    let resp = client
        .post(format!("{admin}/console/auth/api-key"))
        .header(COOKIE, format!("__Host-portcullis-sign-in={flow}"))
        .header(ORIGIN, admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "state={}&api_key={}",
            form_value(&state),
            form_value(key)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        resp.text().await
    );
    format!(
        "__Host-portcullis-console={}",
        set_cookie(&resp, "__Host-portcullis-console")
    )
}

async fn get(client: &reqwest::Client, url: String, cookie: &str) -> (StatusCode, String) {
    let resp = client.get(url).header(COOKIE, cookie).send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
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

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Not signed in: sent to sign in.
    let resp = client
        .get(format!("{admin}/console/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        resp.headers()[LOCATION]
            .to_str()
            .unwrap()
            .contains("/console/sign-in"),
        "{:?}",
        resp.headers()
    );

    // Someone who is not a recording reader: a 403 that says who may.
    let carl = sign_in(&client, &admin, &clerk.key).await;
    for page in ["/console/sessions", "/console/audit"] {
        let (status, html) = get(&client, format!("{admin}{page}"), &carl).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        assert!(html.contains("members of leads"), "{html}");
    }

    let lena = sign_in(&client, &admin, &lead.key).await;

    // The list: both requests, the denied one marked so; the outcome filter keeps it alone.
    let (status, html) = get(&client, format!("{admin}/console/sessions"), &lena).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr data-session=\"").count(), 2, "{html}");
    assert!(html.contains("1 denied"), "{html}");
    let (_, html) = get(
        &client,
        format!("{admin}/console/sessions?outcome=denied&who=billing-agent"),
        &lena,
    )
    .await;
    assert_eq!(html.matches("<tr data-session=\"").count(), 1, "{html}");
    let (_, html) = get(
        &client,
        format!("{admin}/console/sessions?outcome=allowed"),
        &lena,
    )
    .await;
    let session = attr_after(&html, "<tr data-session=\"")
        .expect("the allowed call's session")
        .to_string();
    assert!(html.contains(&format!("href=\"/console/sessions/{session}\"")));
    let (status, html) = get(
        &client,
        format!("{admin}/console/sessions?since=yesterday"),
        &lena,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("since") && html.contains("RFC 3339"),
        "{html}"
    );

    // The session: its timeline with what was sent and what came back, and the replay.
    let (status, html) = get(
        &client,
        format!("{admin}/console/sessions/{session}"),
        &lena,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
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
    let (status, js) = get(&client, format!("{admin}/console/static/replay.js"), &lena).await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("PortcullisPages"));
    let (status, _) = get(&client, format!("{admin}/console/sessions/no-such"), &lena).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The export: the evidence bundle, as a file, that `sessions verify-bundle` accepts.
    assert!(html.contains(&format!(
        "data-testid=\"export\" href=\"/console/sessions/{session}/export\""
    )));
    let bundle_file = keys.path().join("bundle.json");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = client
            .get(format!("{admin}/console/sessions/{session}/export"))
            .header(COOKIE, &lena)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::CONFLICT && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        let disposition = resp.headers()[CONTENT_DISPOSITION].to_str().unwrap();
        assert_eq!(
            disposition,
            format!("attachment; filename=\"session-{session}.json\"")
        );
        std::fs::write(&bundle_file, resp.bytes().await.unwrap()).unwrap();
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
    let (status, html) = get(
        &client,
        format!("{admin}/console/audit?type=request&identity=billing-agent&outcome=denied"),
        &lena,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr data-event=\"").count(), 1, "{html}");
    assert!(html.contains("agents never delete"), "{html}");
    let (_, html) = get(
        &client,
        format!("{admin}/console/audit?type=request&rule=agents+look+up+customers"),
        &lena,
    )
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
        let (status, html) = get(&client, format!("{admin}/console/audit?{query}"), &lena).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            html.contains(field) && html.contains(accepted),
            "{query}: {html}"
        );
    }

    // The event: its fields, leaf index, canonical JSON and the proof link.
    let (status, html) = get(&client, format!("{admin}/console/audit/{event_id}"), &lena).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<dl class=\"facts\""), "{html}");
    assert!(html.contains("data-testid=\"leaf-index\""), "{html}");
    assert!(html.contains(&format!(
        "data-testid=\"proof\" href=\"/console/audit/{event_id}/proof\""
    )));
    let (status, _) = get(
        &client,
        format!("{admin}/console/audit/no-such-event"),
        &lena,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The proof: the file `audit proof` writes, accepted by the real `audit verify-proof`.
    let proof_file = keys.path().join("proof.json");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = client
            .get(format!("{admin}/console/audit/{event_id}/proof"))
            .header(COOKIE, &lena)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::CONFLICT && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[CONTENT_DISPOSITION].to_str().unwrap(),
            format!("attachment; filename=\"proof-{event_id}.json\"")
        );
        std::fs::write(&proof_file, resp.bytes().await.unwrap()).unwrap();
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
