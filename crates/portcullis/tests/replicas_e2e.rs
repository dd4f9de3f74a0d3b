//! Several replicas on one PostgreSQL (`[state] backend = "postgres"`): two real
//! `portcullis serve` processes, each with its own data directory, audit log and
//! `gateway.id`, sharing holds, decisions and grants through a database the test creates on
//! the machine's PostgreSQL (and drops at the end).
//!
//! What is checked is what an operator behind a load balancer relies on: a request held on
//! one replica is approved through the other's admin API and completes on the first, within
//! a second; a grant approved on one is honoured by both, and its revocation reaches both; a
//! replica that dies with a request held leaves it marked abandoned (its caller's connection
//! died with it) and the decision cannot be made any more; a second replica under a live
//! replica's name is refused.

mod common;
#[path = "support/http_upstream.rs"]
mod http_upstream;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http_upstream::Upstream;
use serde_json::{Value, json};

const UPSTREAM_TOKEN: &str = "upstream-service-token";

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// A database of this test's own on the machine's PostgreSQL; dropped on drop.
struct Database {
    name: String,
}

impl Database {
    async fn create() -> Database {
        let name = format!(
            "portcullis_replicas_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let admin = admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Database { name }
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=disable",
            self.name
        )
    }

    /// The same database over TLS, the server's certificate verified against `ca` by name
    /// (Debian's PostgreSQL serves its snakeoil certificate, made for `localhost`).
    fn tls_settings(&self) -> Option<String> {
        let ca = std::path::Path::new(SNAKEOIL);
        ca.exists().then(|| {
            format!(
                "url = \"host=localhost port=5432 user=postgres dbname={} sslmode=require\"\nca = \"{SNAKEOIL}\"",
                self.name
            )
        })
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust) is needed");
    tokio::spawn(conn);
    client
}

impl Drop for Database {
    fn drop(&mut self) {
        // Dropped from a plain thread: the test's runtime may be shutting down.
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct People {
    agent: Key,
    dana: Key,
}

/// The file both replicas share but for `[gateway]`: one HTTP target, a held refund, a
/// grant-only export, the shared state with short timings so that the test is quick.
fn config(p: &People, upstream: &str, state_url: &str) -> String {
    format!(
        r#"{agent}{dana}
[state]
backend = "postgres"
{state_url}
heartbeat = "250ms"
replica_timeout = "1500ms"
poll = "1s"

[targets.customers]
kind = "http"
upstream = "{upstream}"
upstream_credential = {{ bearer = {{ env = "CUSTOMERS_TOKEN" }} }}
hold_wait = "60s"

[[rules]]
name = "refunds need finance"
target = "customers"
http.methods = ["POST"]
http.paths = ["/customers/{{id}}/refund"]
decision = "hold"
approvers = ["finance"]
timeout = "5m"

[[rules]]
name = "exports need a grant"
target = "customers"
who.groups = ["agents"]
http.methods = ["GET"]
http.paths = ["/plain"]
requires_grant = true
approvers = ["finance"]
max_grant = "1h"
"#,
        agent = p.agent.config,
        dana = p.dana.config,
    )
}

struct Replica {
    gw: Gateway,
    admin: String,
}

fn replica(config: &str, id: &str) -> Replica {
    let admin_port = free_port();
    let gw = Gateway::start_with(
        config,
        &format!("id = \"{id}\"\nadmin_listen = \"127.0.0.1:{admin_port}\""),
        &[("CUSTOMERS_TOKEN", UPSTREAM_TOKEN)],
    );
    Replica {
        gw,
        admin: format!("http://127.0.0.1:{admin_port}"),
    }
}

impl Replica {
    fn front(&self, path: &str) -> String {
        format!("http://{}/http/customers{path}", self.gw.addr)
    }
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

/// The pending approvals `key` sees through `admin`, once there are `n`.
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
        if status == 200
            && let Some(list) = body["approvals"].as_array()
            && list.len() >= n
        {
            return list.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{n} pending approval(s) did not appear through {admin}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn approve(admin: &str, key: &str, approval: &Value) -> (u16, Value) {
    api(
        reqwest::Method::POST,
        format!(
            "{admin}/api/v1/approvals/{}/approve",
            approval["id"].as_str().unwrap()
        ),
        key,
        Some(json!({"digest": approval["digest"], "reason": "checked the invoice"})),
    )
    .await
}

/// Runs `portcullis serve` as replica `id` on `config` to its end, for a start that must be
/// refused: (whether it exited with a failure, its stderr).
fn start_expecting_refusal(id: &str, config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"{id}\"\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\n\n{config}",
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env("CUSTOMERS_TOKEN", UPSTREAM_TOKEN)
        .output()
        .unwrap();
    (
        !out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends the held refund through `front` on a task: (status, body, when it completed).
fn refund(front: String, key: String) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(front)
            .bearer_auth(key)
            .header("portcullis-reason", "duplicate charge")
            .json(&json!({"amount": 120}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, Instant::now())
    })
}

#[tokio::test]
async fn two_replicas_share_holds_decisions_and_grants_through_postgresql() {
    let db = Database::create().await;
    let upstream = Upstream::start();
    let p = People {
        agent: api_key("crm-agent", "agent", &["agents"]),
        dana: api_key("dana", "human", &["finance"]),
    };
    let config = config(&p, &upstream.base(), &format!("url = \"{}\"", db.url()));
    // A reaches the database over verified TLS where the server offers it, B in clear.
    let config_a = match db.tls_settings() {
        Some(tls) => self::config(&p, &upstream.base(), &tls),
        None => config.clone(),
    };
    let a = replica(&config_a, "replica-a");
    let b = replica(&config, "replica-b");

    // Each replica says it hears the shared state, in /readyz and /metrics.
    for r in [&a, &b] {
        let ready: Value = reqwest::get(format!("{}/readyz", r.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["checks"]["shared_state"], "ok", "{ready}");
        let metrics = reqwest::get(format!("{}/metrics", r.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.lines().any(|l| l == "portcullis_state_listening 1"),
            "{metrics}"
        );
    }

    // 1. Held on A, seen and approved through B, completed on A.
    let before = upstream.count();
    let caller = refund(a.front("/customers/c-7/refund"), p.agent.key.clone());
    let approval = pending(&b.admin, &p.dana.key, 1).await.remove(0);
    assert_eq!(approval["status"], "pending");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!caller.is_finished(), "the held request did not wait");
    assert_eq!(
        upstream.count(),
        before,
        "a held request reached the upstream"
    );
    let (status, decided) = approve(&b.admin, &p.dana.key, &approval).await;
    let approved_at = Instant::now();
    assert_eq!(status, 200, "{decided}");
    let (status, body, completed) = tokio::time::timeout(Duration::from_secs(10), caller)
        .await
        .expect("the request held on A did not complete after B approved it")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refunded"], 120, "{body}");
    let release = completed.saturating_duration_since(approved_at);
    eprintln!("held on A, approved on B: released {release:?} after the approval");
    assert!(
        release < Duration::from_secs(1),
        "the release took {release:?}"
    );
    // Each replica's own log holds its own part: the hold and release on A, the decision on B.
    let types = |r: &Replica| -> Vec<String> {
        r.gw.events()
            .iter()
            .filter(|e| e["approval"] == approval["id"])
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    let on_a = types(&a);
    assert!(
        on_a.contains(&"approval.requested".to_string())
            && on_a.contains(&"approval.released".to_string()),
        "{on_a:?}"
    );
    assert!(types(&b).contains(&"approval.approved".to_string()));
    // The approval was used once: approving again is refused on either replica.
    let (status, again) = approve(&a.admin, &p.dana.key, &approval).await;
    assert_eq!(status, 409, "{again}");

    // 2. A grant asked through B, approved through A, honoured by both; revoked through B,
    //    refused by both.
    let export = |r: &Replica| {
        let (url, key) = (r.front("/plain"), p.agent.key.clone());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(export(&a).await, 403, "no grant yet");
    let (status, asked) = api(
        reqwest::Method::POST,
        format!("{}/api/v1/grants", b.admin),
        &p.agent.key,
        Some(json!({"target": "customers", "duration": "10m", "reason": "month-end export"})),
    )
    .await;
    assert_eq!(status, 201, "{asked}");
    let grant_approval = pending(&a.admin, &p.dana.key, 1)
        .await
        .into_iter()
        .find(|x| x["kind"] == "grant")
        .expect("the grant request is seen through A");
    let (status, decided) = approve(&a.admin, &p.dana.key, &grant_approval).await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(
        export(&a).await,
        200,
        "the grant on the replica that issued it"
    );
    let until = Instant::now() + Duration::from_secs(3);
    while export(&b).await != 200 {
        assert!(Instant::now() < until, "B never honoured A's grant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, revoked) = api(
        reqwest::Method::POST,
        format!(
            "{}/api/v1/grants/{}/revoke",
            b.admin,
            grant_approval["id"].as_str().unwrap()
        ),
        &p.dana.key,
        Some(json!({"reason": "export done"})),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        export(&b).await,
        403,
        "revoked on the replica that revoked it"
    );
    let until = Instant::now() + Duration::from_secs(3);
    while export(&a).await != 403 {
        assert!(Instant::now() < until, "A kept honouring a grant B revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. A second replica under a live replica's name is refused.
    let (refused, stderr) = start_expecting_refusal("replica-a", &config);
    assert!(refused, "a second replica-a started: {stderr}");
    assert!(
        stderr.contains("another replica named \"replica-a\""),
        "{stderr}"
    );

    // 3b. Without sslmode, TLS is required: the machine's server offers a certificate made
    //     for `localhost`, reached here by address, so the start fails and says what to do
    //     (it does not go on in clear text).
    if std::path::Path::new(SNAKEOIL).exists() {
        let plain_url = format!("url = \"{}\"", db.url().replace(" sslmode=disable", ""));
        let (refused, stderr) =
            start_expecting_refusal("replica-c", &self::config(&p, &upstream.base(), &plain_url));
        assert!(refused, "started without verified TLS: {stderr}");
        assert!(stderr.contains("state.ca"), "{stderr}");
    }

    // 4. B dies with a request held: A marks it abandoned, and nobody can approve it.
    let mut b = b;
    let caller = refund(b.front("/customers/c-9/refund"), p.agent.key.clone());
    let held = pending(&a.admin, &p.dana.key, 1)
        .await
        .into_iter()
        .find(|x| x["kind"] == "request" && x["status"] == "pending")
        .expect("B's held request is seen through A");
    b.gw.kill();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("the caller's connection did not end with its replica")
        .unwrap_or((0, Value::Null, Instant::now()));
    assert_ne!(status, 200, "a request held on a dead replica went through");
    let until = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let (_, shown) = api(
            reqwest::Method::GET,
            format!(
                "{}/api/v1/approvals/{}",
                a.admin,
                held["id"].as_str().unwrap()
            ),
            &p.dana.key,
            None,
        )
        .await;
        if shown["status"] == "abandoned" {
            break shown;
        }
        assert!(Instant::now() < until, "never marked abandoned: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        shown["closed_because"]
            .as_str()
            .unwrap()
            .contains("replica-b"),
        "{shown}"
    );
    let (status, refused) = approve(&a.admin, &p.dana.key, &held).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        a.gw.events()
            .iter()
            .any(|e| e["type"] == "approval.cancelled"
                && e["approval"] == held["id"]
                && e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("stopped answering")),
        "A's log records the abandonment"
    );

    // The shared tables say the same: one approval consumed, once, by replica A.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT consumed_by FROM portcullis_approvals WHERE id = $1",
            &[&approval["id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("replica-a")
    );
    let mut a = a;
    assert!(a.gw.terminate(), "A did not stop cleanly");
    let left = client
        .query_one("SELECT count(*) FROM portcullis_replicas", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        left, 0,
        "a clean stop leaves no heartbeat row (B's was forgotten)"
    );
}
