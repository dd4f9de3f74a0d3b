//! The web console's security through the real binary, as a browser would meet it: forms
//! without the session's CSRF token or from another origin change nothing; a requester cannot
//! approve their own hold however the request is forged; a signed-out cookie is dead; an OIDC
//! callback whose `state` is not the browser's is refused; an idle session ends without losing
//! the reason being typed; an IdP that is down gets a clear page and breaks nothing else.
//! The real IdP sign-in in a real browser is in console_browser.rs.

mod common;

use std::time::{Duration, Instant};

use common::console::Browser;
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

/// The demo's billing server; refunds by agents and by finance leads alike are held for a
/// finance lead. `console_extra` goes into `[console]`; `rest` after everything.
fn setup(console_extra: &str, rest: &str) -> Setup {
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let dana = api_key("dana", "human", &["finance-leads"]);
    let omar = api_key("omar", "human", &["finance-leads"]);
    let eve = api_key("eve", "human", &["engineering"]);
    let admin_port = free_port();
    let config = format!(
        r#"{agent}{dana}{omar}{eve}
[console]
enabled = true
api_key_sign_in = true
{console_extra}

[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "refunds need a finance lead"
who.groups = ["agents", "finance-leads"]
target = "billing"
tools = ["refund_payment"]
decision = "hold"
approvers = ["finance-leads"]
timeout = "2m"

{rest}
"#,
        agent = agent.config,
        dana = dana.config,
        omar = omar.config,
        eve = eve.config,
        cmd = demo_server_command(),
    );
    let gw = Gateway::start_with(
        &config,
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
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

/// A refund call, read to its end (it waits while held).
async fn refund(url: String, key: String, id: u64) -> String {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "refund_payment",
        "arguments": {"customer": "cus_1001", "amount": 25},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "portcullis-tests", "version": "1"},
            "dev.portcullis/reason": "duplicate charge",
        }
    }});
    reqwest::Client::new()
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

/// The approval `key` sees requested by `requester`, by the admin API.
async fn approval_of(admin: &str, key: &str, requester: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list: Value = reqwest::Client::new()
            .get(format!("{admin}/api/v1/approvals?status=all"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(found) = list["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["requester"]["subject"] == requester)
        {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no approval requested by {requester}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(admin: &str, key: &str, id: &str) -> String {
    let approval: Value = reqwest::Client::new()
        .get(format!("{admin}/api/v1/approvals/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    approval["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_origin_and_nobody_approves_their_own_hold() {
    let s = setup("", "");
    let agent_call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let dana_call = tokio::spawn(refund(s.gw.url("billing"), s.dana.key.clone(), 2));
    let agents = approval_of(&s.admin, &s.omar.key, "billing-agent").await;
    let danas = approval_of(&s.admin, &s.omar.key, "dana").await;
    let agents_id = agents["id"].as_str().unwrap();
    let danas_id = danas["id"].as_str().unwrap();

    let mut dana = Browser::new(&s.admin);
    dana.sign_in(&s.dana.key).await;
    // The inbox offers dana the agent's hold, and shows hers apart, as waiting for others.
    let inbox = dana.get("/console/approvals").await;
    assert!(
        inbox
            .attributes("data-approval")
            .contains(&agents_id.to_string())
    );
    assert!(inbox.body.contains("Your requests, waiting for others"));
    let detail = dana.get(&format!("/console/approvals/{agents_id}")).await;
    let digest = detail.field("digest").unwrap();
    let csrf = detail.field("csrf").unwrap();
    let decide = format!("/console/approvals/{agents_id}/decide");

    // No token; a wrong token; the right token from another origin; and no Origin at all.
    let own_origin = Some(s.admin.as_str());
    for (origin, token, says) in [
        (own_origin, None, "CSRF token"),
        (own_origin, Some("forged-token"), "CSRF token"),
        (
            Some("http://evil.example"),
            Some(csrf.as_str()),
            "did not come from a console page",
        ),
        (None, Some(csrf.as_str()), "missing"),
    ] {
        let mut form = vec![
            ("digest", digest.as_str()),
            ("decision", "approve"),
            ("reason", "ok"),
        ];
        form.extend(token.map(|t| ("csrf", t)));
        let page = dana.post_from(origin, &decide, &form).await;
        assert_eq!(page.status, 403, "{origin:?}: {}", page.body);
        assert!(page.body.contains(says), "{origin:?}: {}", page.body);
        assert_eq!(status_of(&s.admin, &s.omar.key, agents_id).await, "pending");
    }

    // Dana's own hold: the page offers no decision, and a forged one is refused by the
    // approvals service, whatever the page showed.
    let own = dana.get(&format!("/console/approvals/{danas_id}")).await;
    assert!(own.body.contains("You asked for this"), "{}", own.body);
    assert!(!own.body.contains("name=\"decision\""));
    let page = dana
        .post(
            &format!("/console/approvals/{danas_id}/decide"),
            &[
                ("csrf", &csrf),
                ("digest", danas["digest"].as_str().unwrap()),
                ("decision", "approve"),
                ("reason", "my own refund, trust me"),
            ],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Not recorded"), "{}", page.body);
    assert_eq!(status_of(&s.admin, &s.omar.key, danas_id).await, "pending");

    // Now properly: dana approves the agent's refund, omar approves dana's.
    let page = dana
        .post(
            &decide,
            &[
                ("csrf", &csrf),
                ("digest", &digest),
                ("decision", "approve"),
                ("reason", "customer called"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        page.location(),
        format!("/console/approvals/{agents_id}?done=approved")
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), agent_call)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.contains("refund") && !answer.contains("\"error\""),
        "{answer}"
    );

    let mut omar = Browser::new(&s.admin);
    omar.sign_in(&s.omar.key).await;
    let omar_csrf = omar.csrf().await;
    // The agent's hold is already decided: omar is told by whom.
    let late = omar
        .post(
            &decide,
            &[
                ("csrf", &omar_csrf),
                ("digest", &digest),
                ("decision", "deny"),
                ("reason", "no"),
            ],
        )
        .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(
        late.body.contains("already approved") && late.body.contains("dana"),
        "{}",
        late.body
    );
    let page = omar
        .post(
            &format!("/console/approvals/{danas_id}/decide"),
            &[
                ("csrf", &omar_csrf),
                ("digest", danas["digest"].as_str().unwrap()),
                ("decision", "approve"),
                ("reason", "checked the invoice"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let answer = tokio::time::timeout(Duration::from_secs(20), dana_call)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.contains("refund") && !answer.contains("\"error\""),
        "{answer}"
    );

    // The decisions are in the log under the people who made them, signed in via the console.
    let events = s.gw.events();
    let approved: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "approval.approved")
        .collect();
    assert_eq!(approved.len(), 2);
    assert!(approved.iter().any(|e| e["identity"]["subject"] == "dana"));
    assert!(approved.iter().any(|e| e["identity"]["subject"] == "omar"));
    let sign_ins: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "console.sign_in" && e["outcome"] == "success")
        .collect();
    assert_eq!(sign_ins.len(), 2);
}

#[tokio::test]
async fn a_signed_out_session_cookie_is_dead_and_agents_cannot_sign_in() {
    let s = setup("", "");
    let mut eve = Browser::new(&s.admin);
    eve.sign_in(&s.eve.key).await;
    let stolen = eve.cookies.clone();
    let csrf = eve.csrf().await;
    let out = eve.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(
        !eve.cookies.contains_key("__Host-portcullis-console"),
        "the cookie is removed"
    );
    // A copy of the cookie taken before sign-out no longer opens anything.
    let mut thief = Browser::new(&s.admin);
    thief.cookies = stolen;
    let page = thief.get("/console/approvals").await;
    assert_eq!(page.status, 303);
    assert!(
        page.location()
            .starts_with("/console/sign-in?next=/console/approvals"),
        "{}",
        page.location()
    );
    let forged = thief.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(forged.status, 303);
    assert!(forged.location().starts_with("/console/sign-in"));

    // An agent's key is refused (the console is for people), a wrong key is refused, and
    // both are recorded.
    let mut agent = Browser::new(&s.admin);
    let page = agent.sign_in_with(&s.agent.key).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("agent or a service"));
    let page = agent
        .sign_in_with("pcx_not_a_real_key_0000000000000000000000000000")
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(!agent.cookies.contains_key("__Host-portcullis-console"));
    // A sign-in form from another origin is refused before any key is looked at.
    let form = agent.get("/console/sign-in").await;
    let state = form.field("state").unwrap();
    let page = agent
        .post_from(
            Some("http://evil.example"),
            "/console/auth/api-key",
            &[("state", &state), ("api_key", &s.eve.key)],
        )
        .await;
    assert_eq!(page.status, 403);

    let events = s.gw.events();
    let out: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "console.sign_out")
        .collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["identity"]["subject"], "eve");
    let refused = events
        .iter()
        .filter(|e| e["type"] == "console.sign_in" && e["outcome"] == "rejected")
        .count();
    assert_eq!(refused, 2, "{events:#?}");
}

#[tokio::test]
async fn the_sign_in_page_is_guarded_too_and_returns_only_into_the_console() {
    let s = setup("", "");
    let mut dana = Browser::new(&s.admin);
    let sign_in = dana.get("/console/sign-in").await;
    dana.sign_in(&s.dana.key).await;
    let inbox = dana.get("/console/approvals").await;
    for page in [&sign_in, &inbox] {
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(page.headers["x-frame-options"], "DENY");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert_eq!(page.headers["referrer-policy"], "same-origin");
        // Everything the page runs or styles comes from the console's own files.
        assert!(
            !page.body.contains("<script>")
                && !page.body.contains(" style=")
                && !page.body.contains(" onclick=")
        );
        assert!(
            !page.body.contains("http://") && !page.body.contains("https://"),
            "no outside assets"
        );
    }
    // A `next` that leaves the console is not followed after sign-in.
    let mut other = Browser::new(&s.admin);
    let form = other.get("/console/sign-in?next=//evil.example/x").await;
    let state = form.field("state").unwrap();
    let page = other
        .post(
            "/console/auth/api-key",
            &[("state", &state), ("api_key", &s.omar.key)],
        )
        .await;
    assert_eq!(page.location(), "/console/approvals");
}

#[tokio::test]
async fn an_idle_session_ends_and_the_typed_reason_survives_sign_in() {
    let s = setup("idle_timeout = \"2s\"\nabsolute_timeout = \"1h\"", "");
    let call = tokio::spawn(refund(s.gw.url("billing"), s.agent.key.clone(), 1));
    let approval = approval_of(&s.admin, &s.omar.key, "billing-agent").await;
    let id = approval["id"].as_str().unwrap();
    let mut dana = Browser::new(&s.admin);
    dana.sign_in(&s.dana.key).await;
    let detail = dana.get(&format!("/console/approvals/{id}")).await;
    let csrf = detail.field("csrf").unwrap();
    let digest = detail.field("digest").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reason = "customer called twice about the March invoice";
    let page = dana
        .post(
            &format!("/console/approvals/{id}/decide"),
            &[
                ("csrf", &csrf),
                ("digest", &digest),
                ("decision", "approve"),
                ("reason", reason),
            ],
        )
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(
        page.body.contains("nothing was decided") && page.body.contains(reason),
        "{}",
        page.body
    );
    assert_eq!(status_of(&s.admin, &s.omar.key, id).await, "pending");
    // Signing in again from that page leads back to the approval, the reason filled in.
    let state = page.field("state").unwrap();
    let back = dana
        .post(
            "/console/auth/api-key",
            &[("state", &state), ("api_key", &s.dana.key)],
        )
        .await;
    assert_eq!(back.location(), format!("/console/approvals/{id}"));
    let again = dana.get(&format!("/console/approvals/{id}")).await;
    assert!(
        again.body.contains(&format!(">{reason}</textarea>")),
        "{}",
        again.body
    );
    assert!(again.body.contains("was not recorded"));
    let csrf = again.field("csrf").unwrap();
    let done = dana
        .post(
            &format!("/console/approvals/{id}/decide"),
            &[
                ("csrf", &csrf),
                ("digest", &digest),
                ("decision", "approve"),
                ("reason", reason),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap()
        .unwrap();
    let events = s.gw.events();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "console.sign_out"
                && e["detail"].as_str().unwrap().contains("idle"))
    );
}

/// An IdP for the sign-in's first leg only: a discovery document naming an authorization
/// endpoint (never visited: the test stops at the redirect) and a token endpoint.
async fn discovery_only_idp() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
    });
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (issuer, server)
}

#[tokio::test]
async fn oidc_sign_in_uses_pkce_state_and_nonce_and_refuses_a_foreign_state() {
    let (issuer, idp) = discovery_only_idp().await;
    let s = setup(
        "",
        &format!(
            "[[identity.oidc]]\nissuer = \"{issuer}\"\naudience = \"api://portcullis\"\n\n[console.oidc]\nissuer = \"{issuer}\"\nclient_id = \"portcullis-console\"\n"
        ),
    );
    let mut browser = Browser::new(&s.admin);
    let page = browser.get("/console/sign-in").await;
    assert!(page.body.contains("data-testid=\"sign-in-oidc\""));
    let go = browser.get("/console/auth/oidc").await;
    assert_eq!(go.status, 303, "{}", go.body);
    let to = reqwest::Url::parse(go.location()).unwrap();
    assert_eq!(
        to.as_str().split('?').next().unwrap(),
        format!("{issuer}/authorize")
    );
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "portcullis-console");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "a base64url SHA-256");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/console/auth/callback", s.admin)
    );
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43);

    // The IdP's answer comes back with another state: refused, and the flow is spent, so
    // the right state cannot be tried afterwards either.
    let wrong = browser
        .get("/console/auth/callback?state=attacker-state&code=stolen-code")
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("state mismatch"), "{}", wrong.body);
    let late = browser
        .get(&format!(
            "/console/auth/callback?state={}&code=c",
            q["state"]
        ))
        .await;
    assert_eq!(late.status, 400);
    assert!(
        late.body.contains("not started from this browser"),
        "{}",
        late.body
    );
    assert!(!browser.cookies.contains_key("__Host-portcullis-console"));

    // The IdP goes down: a clear page; the admin API and the gateway go on.
    idp.abort();
    let _ = idp.await;
    // The endpoints are read at most once a second: the next read finds the IdP gone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let down = browser.get("/console/auth/oidc").await;
    assert_eq!(down.status, 502, "{}", down.body);
    assert!(
        down.body.contains("Identity provider unavailable")
            && down.body.contains("Nothing else is affected"),
        "{}",
        down.body
    );
    let whoami = reqwest::Client::new()
        .get(format!("{}/api/v1/whoami", s.admin))
        .bearer_auth(&s.dana.key)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    let mut dana = Browser::new(&s.admin);
    dana.sign_in(&s.dana.key).await;

    let refused =
        s.gw.events()
            .into_iter()
            .filter(|e| e["type"] == "console.sign_in" && e["outcome"] == "rejected")
            .count();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn every_page_carries_the_headers_and_every_form_the_checks() {
    let s = setup("admins = [\"finance-leads\"]", "");
    let mut dana = Browser::new(&s.admin);
    dana.sign_in(&s.dana.key).await;
    let csrf = dana.csrf().await;
    for path in [
        "/console/approvals",
        "/console/access",
        "/console/sessions",
        "/console/audit",
        "/console/evidence",
        "/console/admin",
        "/console/approvals/apr_00",
        "/console/no-such-page",
    ] {
        let page = dana.get(path).await;
        assert!(
            page.status == 200 || page.status == 404,
            "{path}: {}",
            page.status
        );
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
        assert_eq!(page.headers["x-frame-options"], "DENY", "{path}");
        assert!(page.body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(
            !page.body.contains("<script>") && !page.body.contains(" style="),
            "{path}: inline code"
        );
    }
    // Every state-changing route: without the token, or from another origin, refused before
    // anything is looked at.
    let forms: [(&str, &[(&str, &str)]); 5] = [
        ("/console/sign-out", &[]),
        (
            "/console/approvals/apr_00/decide",
            &[("digest", "d"), ("decision", "deny"), ("reason", "r")],
        ),
        (
            "/console/access/request",
            &[("target", "billing"), ("duration", "1h"), ("reason", "r")],
        ),
        ("/console/access/grt_00/revoke", &[("reason", "r")]),
        (
            "/console/admin/pins/accept",
            &[("target", "t"), ("tool", "x"), ("fingerprint", "f")],
        ),
    ];
    for (path, fields) in forms {
        let page = dana.post(path, fields).await;
        assert_eq!(page.status, 403, "{path} without a token: {}", page.body);
        let mut with_token = fields.to_vec();
        with_token.push(("csrf", &csrf));
        let page = dana
            .post_from(Some("http://evil.example"), path, &with_token)
            .await;
        assert_eq!(
            page.status, 403,
            "{path} from another origin: {}",
            page.body
        );
    }
    assert!(
        dana.get("/console/approvals").await.status == 200,
        "still signed in"
    );
    // A form the console cannot read, and a GET of a form's address: console pages, not bare text.
    let garbled = dana
        .post("/console/approvals/apr_00/decide", &[("csrf", &csrf)])
        .await;
    assert_eq!(garbled.status, 422);
    assert!(
        garbled.body.contains("Request refused") && garbled.body.contains("Nothing was changed"),
        "{}",
        garbled.body
    );
    let wrong_method = dana.get("/console/sign-out").await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.body.contains("<!DOCTYPE html>"));
    // A read recorded under the reader's name is not made by a link from another site.
    let before = s.gw.events().len();
    let page = dana
        .get_with(
            "/console/audit/01a00000-0000-7000-8000-000000000000/proof",
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Opened from another site"));
    assert!(
        s.gw.events()[before..]
            .iter()
            .all(|e| e["type"] != "console.export")
    );
}

#[tokio::test]
async fn background_refreshes_do_not_keep_a_session_alive_and_one_address_cannot_crowd_out_sign_ins()
 {
    let s = setup("idle_timeout = \"2s\"\nabsolute_timeout = \"1h\"", "");
    let mut dana = Browser::new(&s.admin);
    dana.sign_in(&s.dana.key).await;
    // The inbox's script refreshes the list in the background: that is not the person, so
    // the session still ends two seconds after the last thing they did.
    let signed_in = Instant::now();
    loop {
        let list = dana
            .get_with(
                "/console/approvals/list",
                &[("x-portcullis-background", "1")],
            )
            .await;
        if list.status == 401 {
            assert!(list.body.contains("Your session ended"), "{}", list.body);
            break;
        }
        assert_eq!(list.status, 200);
        assert!(
            signed_in.elapsed() < Duration::from_secs(4),
            "the refreshes kept it alive"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(signed_in.elapsed() >= Duration::from_millis(1900));
    let page = dana.get("/console/approvals").await;
    assert_eq!(page.status, 303, "the idle session ended");
    assert!(page.location().starts_with("/console/sign-in"));

    // One address opening sign-in pages without end replaces its own oldest ones only.
    let mut first = Browser::new(&s.admin);
    let form = first.get("/console/sign-in").await;
    let state = form.field("state").unwrap();
    let mut flood = Browser::new(&s.admin);
    for _ in 0..40 {
        flood.get("/console/sign-in").await;
    }
    let page = first
        .post(
            "/console/auth/api-key",
            &[("state", &state), ("api_key", &s.omar.key)],
        )
        .await;
    assert_eq!(
        page.status, 400,
        "this address's oldest sign-in was replaced: {}",
        page.body
    );
    assert!(
        page.body
            .contains("expired or was not opened in this browser")
    );
}
