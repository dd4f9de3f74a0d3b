//! A whole session over in-memory duplex streams: a client that speaks the frontend
//! protocol, the session under test with the real guard (policy, approvals, audit log in a
//! temporary directory), and a scripted server on the upstream side that records every text
//! it is sent. No network, and the clock can be paused, so a held statement's hour-long
//! timeout passes in milliseconds. The real-server end-to-end tests stay in
//! `crates/portcullis/tests/pg_*.rs`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use portcullis_config::Config;
use portcullis_guard::testing;
use portcullis_limits::{ConnectionLimiter, ConnectionLimits};
use portcullis_model::{AuthMethod, Identity, IdentityKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::Session;
use crate::upstream::UpstreamSettings;
use crate::wire::{self, Frame};
use crate::{CancelHandle, PgProxy, PgSettings};

const TARGET: &str = r#"
[targets.crm]
kind = "postgres"
listen = "127.0.0.1:16999"
upstream = "postgres://127.0.0.1:5432/crm"
user = "app"
"#;

/// A session under test, its client's end and what its server was sent.
struct Harness {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    client: DuplexStream,
    buffered: BytesMut,
    server_saw: Arc<Mutex<Vec<String>>>,
}

fn agent() -> Arc<Identity> {
    Arc::new(Identity {
        issuer: "portcullis:api-key".into(),
        subject: "pg-agent".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    })
}

async fn start(rules: &str) -> Harness {
    start_recording(rules, false).await
}

/// [`start`] with the target's `record_results` (the `[recording]` section is in `rules`).
async fn start_recording(rules: &str, record_results: bool) -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let config = Config::parse(
        std::path::Path::new("/tmp/session.toml"),
        format!("{TARGET}\n{rules}"),
    )
    .unwrap();
    let (guard, _approvals) = testing::guard(&config, &dir).await;
    let proxy = PgProxy::new(
        PgSettings {
            target: "crm".into(),
            upstream: UpstreamSettings {
                host: "127.0.0.1".into(),
                port: 1,
                database: "crm".into(),
                user: "app".into(),
                password: None,
                tls: None,
                connect_timeout: Duration::from_secs(1),
            },
            tls: None,
            require_tls: false,
            max_client_frame: 1 << 20,
            max_connections: 4,
            filter_masked_rules: HashSet::new(),
            discovery: None,
            record_results,
            connection_caps: ConnectionLimiter::new(ConnectionLimits {
                per_source: 4,
                total: 4,
            }),
            startup_timeout: Duration::from_secs(5),
        },
        guard,
    );
    let (client, client_side) = tokio::io::duplex(1 << 16);
    let (server, server_side) = tokio::io::duplex(1 << 16);
    let server_saw = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(scripted_server(server, server_saw.clone()));
    let handle = Arc::new(CancelHandle {
        upstream_addr: "127.0.0.1:1".parse().unwrap(),
        upstream_pid: 1,
        upstream_secret: Bytes::from_static(b"secret"),
        cancels: tokio::sync::watch::channel(0).0,
    });
    let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut session = Session::new(
        proxy,
        agent(),
        source,
        "session-1".into(),
        handle,
        Box::new(client_side),
        BytesMut::new(),
    );
    tokio::spawn(async move { session.run(Box::new(server_side), BytesMut::new()).await });
    Harness {
        _dir: tmp,
        dir,
        client,
        buffered: BytesMut::new(),
        server_saw,
    }
}

/// The upstream side: answers every simple query as PostgreSQL would, in the least it
/// takes (the gateway's stand-in for a refused message fails in the parser, as on a real
/// server), and keeps each text it was sent. `SELECT n FROM numbers` answers three rows of
/// one int column; `SELECT n FROM endless` one row, then nothing (a statement still
/// running).
async fn scripted_server(mut io: DuplexStream, saw: Arc<Mutex<Vec<String>>>) {
    let mut buf = BytesMut::new();
    loop {
        while let Some(frame) = wire::next_frame(&mut buf, 1 << 20).unwrap() {
            if frame.tag != b'Q' {
                continue;
            }
            let text = wire::parse_query(&frame).unwrap();
            let mut out = BytesMut::new();
            if text.contains("PORTCULLIS REFUSED") {
                wire::error(
                    &mut out,
                    "42601",
                    "syntax error at or near \"PORTCULLIS\"",
                    None,
                );
            } else if text.starts_with("SELECT n FROM") {
                row_description(&mut out, "n", 23);
                let rows = if text.contains("endless") { 1 } else { 3 };
                for n in 1..=rows {
                    wire::data_row(&[Some(Bytes::from(n.to_string()))], &mut out);
                }
                if text.contains("endless") {
                    saw.lock().unwrap().push(text);
                    io.write_all(&out).await.unwrap();
                    continue;
                }
                command_complete(&mut out, "SELECT 3");
            } else {
                let tag = text.split_whitespace().next().unwrap_or("").to_uppercase();
                command_complete(&mut out, &format!("{tag} 1"));
            }
            wire::ready(&mut out, b'I');
            saw.lock().unwrap().push(text);
            io.write_all(&out).await.unwrap();
        }
        if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
    }
}

/// A RowDescription of one text-format column.
fn row_description(out: &mut BytesMut, name: &str, type_oid: u32) {
    let mut body = BytesMut::new();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&[0]);
    body.extend_from_slice(&0i32.to_be_bytes()); // table
    body.extend_from_slice(&0i16.to_be_bytes()); // column
    body.extend_from_slice(&type_oid.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes()); // size
    body.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
    body.extend_from_slice(&0i16.to_be_bytes()); // text
    Frame {
        tag: b'T',
        body: body.freeze(),
    }
    .write_to(out);
}

fn command_complete(out: &mut BytesMut, tag: &str) {
    let mut body = BytesMut::from(tag.as_bytes());
    body.extend_from_slice(&[0]);
    Frame {
        tag: b'C',
        body: body.freeze(),
    }
    .write_to(out);
}

impl Harness {
    /// Sends `text` as a simple query and reads the answer up to its ReadyForQuery.
    async fn query(&mut self, text: &str) -> Vec<Frame> {
        let mut out = BytesMut::new();
        wire::query(&mut out, text);
        self.client.write_all(&out).await.unwrap();
        let mut frames = Vec::new();
        loop {
            while let Some(frame) = wire::next_frame(&mut self.buffered, 1 << 20).unwrap() {
                let ready = frame.tag == b'Z';
                frames.push(frame);
                if ready {
                    return frames;
                }
            }
            let n = self.client.read_buf(&mut self.buffered).await.unwrap();
            assert!(n > 0, "the session closed before ReadyForQuery: {frames:?}");
        }
    }

    fn server_saw(&self, needle: &str) -> bool {
        self.server_saw
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.contains(needle))
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        testing::events(&self.dir, "request")
    }
}

fn error_of(frames: &[Frame]) -> wire::Notice {
    let frame = frames
        .iter()
        .find(|f| f.tag == b'E')
        .unwrap_or_else(|| panic!("an ErrorResponse in {frames:?}"));
    wire::parse_notice(frame)
}

#[tokio::test]
async fn an_allowed_statement_runs_and_its_event_is_recorded_before_ready_for_query() {
    let mut h = start(
        r#"
[[rules]]
name = "agents update"
who.groups = ["agents"]
target = "crm"
allow.statements = ["update"]
allow.tables = ["customers"]
"#,
    )
    .await;
    let frames = h
        .query("UPDATE customers SET name = 'x' WHERE id = 1")
        .await;
    assert!(frames.iter().any(|f| f.tag == b'C'), "{frames:?}");
    assert!(h.server_saw("UPDATE customers"));
    // Recorded before the client may go on: the event is there once ReadyForQuery arrived.
    let events = h.requests();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["outcome"], "success");
    assert_eq!(events[0]["rule"], "agents update");
    assert_eq!(events[0]["statement"]["rows"], 1);
}

#[tokio::test]
async fn a_denied_statement_never_reaches_the_server_and_is_recorded_denied() {
    let mut h = start(
        r#"
[[rules]]
name = "agents read"
who.groups = ["agents"]
target = "crm"
allow.statements = ["select"]

[[rules]]
name = "no deletes"
target = "crm"
deny.statements = ["delete"]
"#,
    )
    .await;
    let frames = h.query("DELETE FROM customers WHERE id = 1").await;
    let error = error_of(&frames);
    assert_eq!(error.code, "42501", "{}", error.message);
    assert!(
        error.message.starts_with("portcullis: "),
        "{}",
        error.message
    );
    assert!(error.message.contains("no deletes"), "{}", error.message);
    assert!(
        !h.server_saw("DELETE"),
        "the refused text never reaches the server"
    );
    let events = h.requests();
    assert_eq!(events[0]["outcome"], "denied");
    assert_eq!(events[0]["decision"], "deny");
    assert_eq!(events[0]["rule"], "no deletes");
    // The session goes on.
    let frames = h.query("SELECT 1").await;
    assert!(frames.iter().all(|f| f.tag != b'E'), "{frames:?}");
}

#[tokio::test(start_paused = true)]
async fn a_held_statement_nobody_decides_expires_and_never_runs() {
    let mut h = start(
        r#"
[[rules]]
name = "agents update"
who.groups = ["agents"]
target = "crm"
allow.statements = ["update"]

[[rules]]
name = "updates need a lead"
target = "crm"
hold.statements = ["update"]
approvers = ["leads"]
timeout = "1h"
"#,
    )
    .await;
    // An hour's wait: the paused clock jumps to the expiry as soon as the session idles.
    let frames = h
        .query("UPDATE customers SET name = 'x' WHERE id = 1")
        .await;
    let notice = frames
        .iter()
        .find(|f| f.tag == b'N')
        .map(wire::parse_notice)
        .expect("the client is told at once that it waits");
    assert!(
        notice.message.contains("held for approval"),
        "{}",
        notice.message
    );
    let error = error_of(&frames);
    assert_eq!(error.code, "42501", "{}", error.message);
    assert!(
        error.message.contains("nobody decided"),
        "{}",
        error.message
    );
    assert!(!h.server_saw("UPDATE"), "an expired statement never runs");
    let events = h.requests();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["outcome"], "denied");
    assert!(
        events[0]["approval"]
            .as_str()
            .is_some_and(|a| a.starts_with("apr_")),
        "{}",
        events[0]
    );
}

/// One side of an event's recording, read back and checked against its id.
fn recorded(dir: &std::path::Path, event: &serde_json::Value, side: &str) -> serde_json::Value {
    let id =
        portcullis_recording::ChunkId::parse(event["recorded"][side].as_str().unwrap()).unwrap();
    let chunk = portcullis_audit::recordings::Recordings::open(dir)
        .unwrap()
        .get(&id)
        .unwrap();
    serde_json::from_slice(&chunk.content(1 << 20).unwrap()).unwrap()
}

const RECORDED_READS: &str = r#"
[[rules]]
name = "agents read"
who.groups = ["agents"]
target = "crm"
allow.statements = ["select"]

[recording]
mode = "strict"
max_rows_per_statement = 2
"#;

#[tokio::test]
async fn a_recorded_query_keeps_its_text_columns_rows_up_to_the_cap_and_its_tag() {
    let mut h = start_recording(RECORDED_READS, true).await;
    let frames = h.query("SELECT n FROM numbers").await;
    assert_eq!(frames.iter().filter(|f| f.tag == b'D').count(), 3);
    let events = h.requests();
    assert_eq!(events.len(), 1, "{events:#?}");
    let request = recorded(&h.dir, &events[0], "request");
    assert_eq!(request["parts"][0]["kind"], "query");
    assert_eq!(request["parts"][0]["body"]["sql"], "SELECT n FROM numbers");
    let answer = recorded(&h.dir, &events[0], "answer");
    let kinds: Vec<&str> = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["columns", "row", "row", "complete"], "{answer}");
    assert_eq!(
        answer["parts"][0]["body"],
        serde_json::json!([{"name": "n", "type_oid": 23}])
    );
    assert_eq!(answer["parts"][1]["body"], serde_json::json!(["1"]));
    assert_eq!(answer["parts"][3]["body"], "SELECT 3");
    assert_eq!(answer["truncated"][0]["unit"], "rows");
    assert_eq!(answer["truncated"][0]["kept"], 2);
    assert_eq!(answer["truncated"][0]["dropped"], 1);
}

#[tokio::test]
async fn without_record_results_rows_are_counted_and_not_kept() {
    let mut h = start_recording(RECORDED_READS, false).await;
    h.query("SELECT n FROM numbers").await;
    let events = h.requests();
    let answer = recorded(&h.dir, &events[0], "answer");
    let kinds: Vec<&str> = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["columns", "complete"], "{answer}");
    assert_eq!(
        answer["parts"][1]["body"],
        serde_json::json!({"tag": "SELECT 3", "rows": 3, "rows_kept": false})
    );
    assert!(
        answer["truncated"].as_array().is_none_or(Vec::is_empty),
        "{answer}"
    );
}

#[tokio::test]
async fn a_client_that_terminates_mid_answer_is_recorded_as_gone_with_what_it_was_sent() {
    let mut h = start_recording(RECORDED_READS, true).await;
    let mut out = BytesMut::new();
    wire::query(&mut out, "SELECT n FROM endless");
    h.client.write_all(&out).await.unwrap();
    // The first row arrives; the statement runs on; the client leaves.
    let mut row = false;
    while !row {
        assert!(h.client.read_buf(&mut h.buffered).await.unwrap() > 0);
        while let Some(frame) = wire::next_frame(&mut h.buffered, 1 << 20).unwrap() {
            row |= frame.tag == b'D';
        }
    }
    let mut bye = BytesMut::new();
    wire::terminate(&mut bye);
    h.client.write_all(&bye).await.unwrap();
    let mut rest = Vec::new();
    let _ = h.client.read_to_end(&mut rest).await;
    let events = loop {
        let events = h.requests();
        if !events.is_empty() {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(events[0]["outcome"], "failed", "{events:#?}");
    let answer = recorded(&h.dir, &events[0], "answer");
    assert_eq!(answer["caller_left"], true, "{answer}");
    let kinds: Vec<&str> = answer["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["columns", "row"], "{answer}");
}
