//! Adversarial end-to-end tests of the PostgreSQL proxy: broken frames, pipelined extended
//! protocol batches, refusals in odd places, masking corners, cancels and held statements.
//! Most tests speak the protocol by hand over a plain socket, so that the exact answer
//! sequence the client sees can be checked.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

// ---------------------------------------------------------------- databases

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Account numbers no detector finds: only the column name can mask them.
const SETUP: &str = "
CREATE TABLE customers (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text,
    account_number text,
    secret_score bigint
);
INSERT INTO customers VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'ACCT-000123-XYZ', 42),
    (2, 'Alan Turing', 'alan@example.org', 'ACCT-000456-QRS', 7);
CREATE TABLE products (id int PRIMARY KEY, name text);
INSERT INTO products VALUES (1, 'Widget');
CREATE TABLE secrets (token text);
INSERT INTO secrets VALUES ('TOPSECRET-7731');
";

/// Parts of the account numbers that must never reach the client.
const ACCOUNTS: [&str; 2] = ["000123", "000456"];

/// A database of its own and the role the gateway logs in as (its owner); dropped on drop.
struct Db {
    name: String,
    role: String,
}

impl Db {
    async fn new(setup: &str) -> Db {
        let n = unique();
        let db = Db {
            name: format!("pge_{n}"),
            role: format!("pge_app_{n}"),
        };
        let admin = connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        admin
            .batch_execute(&format!("CREATE ROLE {} LOGIN", db.role))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {} OWNER {}", db.name, db.role))
            .await
            .unwrap();
        if !setup.is_empty() {
            connect(&format!(
                "host=127.0.0.1 port=5432 user={} dbname={}",
                db.role, db.name
            ))
            .await
            .unwrap()
            .batch_execute(setup)
            .await
            .unwrap();
        }
        db
    }

    /// Directly to the server, as the superuser.
    async fn as_super(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        ))
        .await
        .unwrap()
    }

    fn target(&self, name: &str, port: u16) -> String {
        format!(
            "[targets.{name}]\nkind = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"postgres://127.0.0.1:5432/{}\"\nuser = \"{}\"\n\n",
            self.name, self.role
        )
    }

    async fn count(&self, filter: &str) -> i64 {
        self.as_super()
            .await
            .query_one(
                &format!("SELECT count(*) FROM customers WHERE {filter}"),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ] {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
                .args(["-d", "postgres", "-c", &sql])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------- the gateway

const MASKS: &str = r#"
[masks.pii]
detectors = ["email"]
columns = ["account_number", "secret_score"]
style = "partial"
styles = { email = "redact" }
"#;

/// The agent reads (masked), inserts and uses transactions on customers; reads products
/// unmasked; nobody deletes. `extra` is appended.
fn rules(target: &str, extra: &str) -> String {
    format!(
        r#"
[[rules]]
name = "agents read customers"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["select", "insert", "transaction"]
allow.tables = ["customers"]
mask = "pii"

[[rules]]
name = "agents read products"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["select"]
allow.tables = ["products"]

[[rules]]
name = "no deletes"
target = "{target}"
deny.statements = ["delete"]
reason = "deleting rows is not allowed through the gateway"
{extra}
"#
    )
}

fn wait_listen(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "listener {port} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway with one `postgres` target `name` for `db`; `extra` goes into `[gateway]`.
fn start(db: &Db, name: &str, keys: &[&Key], rules: &str, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
    let gw = Gateway::start_with(
        &format!("{keys}\n{}\n{rules}\n{MASKS}", db.target(name, port)),
        extra,
        &[],
    );
    wait_listen(port);
    (gw, port)
}

async fn through(port: u16, key: &Key, user: &str, dbname: &str) -> Client {
    connect(&format!(
        "host=127.0.0.1 port={port} user={user} password={} dbname={dbname} connect_timeout=10",
        key.key
    ))
    .await
    .unwrap_or_else(|e| panic!("connecting through the gateway: {e:?}"))
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e:?}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Polls the audit log until `n` events satisfy `pred` (10 s at most); returns them.
async fn wait_events(
    gw: &Gateway,
    what: &str,
    n: usize,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = gw.events().into_iter().filter(|e| pred(e)).collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not {n} {what} events in {:#?}",
            gw.events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_event(gw: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_events(gw, what, 1, pred).await.remove(0)
}

fn text_of(e: &Value) -> &str {
    e["statement"]["text"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------- a raw protocol client

type Frames = Vec<(u8, Vec<u8>)>;

struct Raw(TcpStream);

impl Raw {
    /// Logs in with a cleartext password; the socket is then ready for queries.
    fn login(port: u16, user: &str, key: &str, db: &str) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes());
        for (k, v) in [("user", user), ("database", db)] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        s.write_all(&packet).unwrap();
        let mut raw = Raw(s);
        let mut sent_password = false;
        loop {
            let (tag, payload) = raw
                .next()
                .expect("login: the gateway closed the connection");
            match tag {
                b'R' if payload[..4] == 3i32.to_be_bytes() && !sent_password => {
                    let mut b = Vec::new();
                    cstr(&mut b, key);
                    raw.send(&[msg(b'p', &b)]);
                    sent_password = true;
                }
                b'E' => panic!("login failed: {}", String::from_utf8_lossy(&payload)),
                b'Z' => return raw,
                _ => {}
            }
        }
    }

    fn send(&mut self, parts: &[Vec<u8>]) {
        self.0.write_all(&parts.concat()).unwrap();
    }

    /// The next frame; `None` when the connection is closed (or silent for 10 s).
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).ok()?;
        Some((head[0], body))
    }

    /// Frames up to and including the next ReadyForQuery.
    fn until_ready(&mut self) -> Frames {
        let mut frames = Vec::new();
        loop {
            match self.next() {
                Some(f) => {
                    let done = f.0 == b'Z';
                    frames.push(f);
                    if done {
                        return frames;
                    }
                }
                None => panic!(
                    "the connection ended before ReadyForQuery; got {}",
                    describe(&frames)
                ),
            }
        }
    }

    /// Frames until the gateway closes the connection.
    fn until_closed(&mut self) -> Frames {
        let mut frames = Vec::new();
        while let Some(f) = self.next() {
            frames.push(f);
        }
        frames
    }

    /// The next `n` frames that are not asynchronous (notices, parameter status).
    fn take(&mut self, n: usize) -> Frames {
        let mut frames = Vec::new();
        while frames.len() < n {
            match self.next() {
                Some((b'N' | b'S' | b'A', _)) => {}
                Some(f) => frames.push(f),
                None => panic!("only {} of {n} frames: {}", frames.len(), describe(&frames)),
            }
        }
        frames
    }
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    msg(b'Q', &b)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind with text parameters and the given result formats.
fn bind(portal: &str, statement: &str, params: &[&str], results: &[i16]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    b.extend_from_slice(&(results.len() as i16).to_be_bytes());
    for f in results {
        b.extend_from_slice(&f.to_be_bytes());
    }
    msg(b'B', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&max_rows.to_be_bytes());
    msg(b'E', &b)
}

fn describe_msg(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    msg(b'D', &b)
}

fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    msg(b'C', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

fn flush() -> Vec<u8> {
    msg(b'H', b"")
}

/// The frames' types, without asynchronous ones (notices, parameter status).
fn tags(frames: &Frames) -> String {
    frames
        .iter()
        .map(|(t, _)| *t as char)
        .filter(|t| !matches!(t, 'N' | 'S' | 'A'))
        .collect()
}

/// Frame types with error codes and row values, for failure messages.
fn describe(frames: &Frames) -> String {
    frames
        .iter()
        .map(|(t, b)| match t {
            b'E' | b'N' => format!("{}({} {})", *t as char, field(b, b'C'), field(b, b'M')),
            b'D' => format!("D{:?}", row(b)),
            t => (*t as char).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A field of an ErrorResponse or NoticeResponse.
fn field(body: &[u8], which: u8) -> String {
    let mut i = 0;
    while i < body.len() && body[i] != 0 {
        let f = body[i];
        let end = i + 1 + body[i + 1..].iter().position(|&c| c == 0).unwrap();
        if f == which {
            return String::from_utf8_lossy(&body[i + 1..end]).into_owned();
        }
        i = end + 1;
    }
    String::new()
}

fn row(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let len = len as usize;
            values.push(Some(
                String::from_utf8_lossy(&body[at..at + len]).into_owned(),
            ));
            at += len;
        }
    }
    values
}

fn rows(frames: &Frames) -> Vec<Vec<Option<String>>> {
    frames
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| row(b))
        .collect()
}

fn errors(frames: &Frames) -> Vec<String> {
    frames
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| field(b, b'C'))
        .collect()
}

/// Whether any frame carries an account number in clear.
fn leaks(frames: &Frames) -> bool {
    frames.iter().any(|(_, b)| {
        let text = String::from_utf8_lossy(b);
        ACCOUNTS.iter().any(|a| text.contains(a))
    })
}

fn assert_tags(frames: &Frames, expected: &str) {
    assert_eq!(tags(frames), expected, "{}", describe(frames));
}

// ---------------------------------------------------------------- approvals

async fn pending_approvals(admin: &str, key: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = client
            .get(format!("{admin}/api/v1/approvals"))
            .bearer_auth(key)
            .send()
            .await
            && resp.status().is_success()
        {
            let body: Value = resp.json().await.unwrap();
            let list: Vec<Value> = body["approvals"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["status"] == "pending")
                .collect();
            if !list.is_empty() {
                return list;
            }
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn approvals_cli(admin: &str, key: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .args(args)
        .env("PORTCULLIS_TOKEN", key)
        .env("PORTCULLIS_ADMIN_URL", admin)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A gateway whose UPDATEs on customers are held for a lead; (gateway, pg port, admin URL).
fn held_gateway(db: &Db, agent: &Key, lead: &Key) -> (Gateway, u16, String) {
    let pg_port = free_port();
    let admin_port = free_port();
    let gw = Gateway::start_with(
        &format!(
            r#"{}{}
{}
[[rules]]
name = "agents read and update customers"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["select", "update"]
allow.tables = ["customers"]

[[rules]]
name = "updates need a lead"
target = "crm"
hold.statements = ["update"]
approvers = ["leads"]
timeout = "1m"
{MASKS}"#,
            agent.config,
            lead.config,
            db.target("crm", pg_port),
        ),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    wait_listen(pg_port);
    (gw, pg_port, format!("http://127.0.0.1:{admin_port}"))
}

// ================================================================ 1. broken frames

#[tokio::test]
async fn broken_frames_end_the_session_with_a_protocol_violation() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(
        &db,
        "crm",
        &[&agent],
        &rules("crm", ""),
        "max_message_bytes = 65536",
    );
    let mut too_large = vec![b'Q'];
    too_large.extend_from_slice(&1_000_000i32.to_be_bytes());
    too_large.extend_from_slice(b"SELECT 1");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "length 3",
            vec![b'Q', 0, 0, 0, 3],
            "invalid message length 3",
        ),
        ("too large", too_large, "larger than the limit"),
        ("unknown type", msg(b'y', b""), "unexpected message type"),
        (
            "truncated Bind",
            msg(b'B', &[b'p', 0, b's', 0, 0, 1]),
            "malformed Bind",
        ),
        (
            "Execute with trailing bytes",
            msg(b'E', &[0, 0, 0, 0, 0, 9]),
            "malformed Execute",
        ),
    ];
    for (what, bytes, expected) in &cases {
        let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
        raw.send(std::slice::from_ref(bytes));
        let frames = raw.until_closed();
        let (_, fatal) = frames
            .iter()
            .find(|(t, _)| *t == b'E')
            .unwrap_or_else(|| panic!("{what}: no error in {}", describe(&frames)));
        assert_eq!(field(fatal, b'V'), "FATAL", "{what}");
        assert_eq!(field(fatal, b'C'), "08P01", "{what}");
        assert!(
            field(fatal, b'M').contains(expected),
            "{what}: {}",
            field(fatal, b'M')
        );
    }
    let ends = wait_events(&gw, "session.end", cases.len(), |e| {
        e["type"] == "session.end"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("broke the protocol"))
    })
    .await;
    assert_eq!(ends.len(), cases.len());

    // The gateway still serves.
    let c = through(port, &agent, "pg-agent", "crm").await;
    assert_eq!(
        simple_rows(&c.simple_query("SELECT 1").await.unwrap()).len(),
        1
    );
}

// ================================================================ 2. pipelining

#[tokio::test]
async fn a_refused_parse_in_a_pipelined_batch_answers_in_order() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    let select = "SELECT id, account_number, email FROM customers WHERE id = 1";
    raw.send(&[
        parse("", select),
        bind("", "", &[], &[]),
        execute("", 0),
        parse("", "DELETE FROM customers WHERE id = 2"),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_tags(&frames, "12DCEZ");
    assert_eq!(errors(&frames), ["42501"]);
    let r = rows(&frames);
    assert_eq!(r[0][0].as_deref(), Some("1"));
    assert_eq!(r[0][2].as_deref(), Some("[EMAIL]"));
    assert!(!leaks(&frames), "{}", describe(&frames));
    assert_eq!(db.count("id = 2").await, 1, "the delete did not run");

    // The next batch works.
    raw.send(&[
        parse("", select),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_tags(&frames, "12DCZ");
    assert!(!leaks(&frames), "{}", describe(&frames));

    // The events: two selects that ran, one refused delete.
    let requests = wait_events(&gw, "request", 3, |e| e["type"] == "request").await;
    let ran: Vec<&Value> = requests
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(ran.len(), 2, "{requests:#?}");
    assert!(ran.iter().all(|e| e["statement"]["rows"] == 1));
    assert!(
        requests
            .iter()
            .any(|e| e["outcome"] == "denied" && e["rule"] == "no deletes"),
        "{requests:#?}"
    );
}

#[tokio::test]
async fn extended_protocol_corners_keep_the_answer_stream_in_step() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");

    // Two Syncs in a row: two ReadyForQuery.
    raw.send(&[sync(), sync()]);
    assert_tags(&raw.until_ready(), "Z");
    assert_tags(&raw.until_ready(), "Z");

    // Flush without Sync: the answers come, no ReadyForQuery.
    let by_id = "SELECT id, email, account_number FROM customers WHERE id = $1";
    raw.send(&[
        parse("q1", by_id),
        bind("", "q1", &["1"], &[]),
        execute("", 0),
        flush(),
    ]);
    let frames = raw.take(4);
    assert_tags(&frames, "12DC");
    assert_eq!(rows(&frames)[0][1].as_deref(), Some("[EMAIL]"));
    assert!(!leaks(&frames), "{}", describe(&frames));
    raw.send(&[sync()]);
    assert_tags(&raw.until_ready(), "Z");

    // The named statement, reused after the Sync with another parameter.
    raw.send(&[bind("", "q1", &["2"], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "2DCZ");
    assert_eq!(rows(&frames)[0][0].as_deref(), Some("2"));
    assert!(!leaks(&frames), "{}", describe(&frames));

    // Describe of the statement and of a portal.
    raw.send(&[
        describe_msg(b'S', "q1"),
        bind("", "q1", &["1"], &[]),
        describe_msg(b'P', ""),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_tags(&frames, "tT2TDCZ");
    assert!(!leaks(&frames), "{}", describe(&frames));

    // Re-Parse of an existing name: the server's 42P05; the old statement stays.
    raw.send(&[parse("q2", "SELECT 'first' AS v"), sync()]);
    assert_tags(&raw.until_ready(), "1Z");
    raw.send(&[parse("q2", "SELECT 'second' AS v"), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "EZ");
    assert_eq!(errors(&frames), ["42P05"]);
    raw.send(&[bind("", "q2", &[], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "2DCZ");
    assert_eq!(rows(&frames)[0][0].as_deref(), Some("first"));

    // Close of the statement and the portal; Bind to the closed statement is refused.
    raw.send(&[close(b'S', "q1"), close(b'P', ""), sync()]);
    assert_tags(&raw.until_ready(), "33Z");
    raw.send(&[bind("", "q1", &["1"], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "EZ");
    assert_eq!(errors(&frames), ["26000"]);

    // Bind to a statement the gateway refused: it does not exist.
    raw.send(&[parse("bad", "DELETE FROM customers WHERE id = 1"), sync()]);
    let frames = raw.until_ready();
    assert_eq!(errors(&frames), ["42501"], "{}", describe(&frames));
    raw.send(&[bind("p", "bad", &[], &[]), execute("p", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "EZ");
    assert_eq!(errors(&frames), ["26000"]);

    // Execute of a portal that does not exist.
    raw.send(&[execute("nowhere", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "EZ");
    assert_eq!(errors(&frames), ["34000"]);

    // And everything still works.
    raw.send(&[query("SELECT id FROM customers ORDER BY id")]);
    let frames = raw.until_ready();
    assert_tags(&frames, "TDDCZ");
    assert_eq!(db.count("true").await, 2);
}

#[tokio::test]
async fn a_suspended_portal_is_masked_in_every_chunk() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[query("BEGIN")]);
    assert_tags(&raw.until_ready(), "CZ");
    raw.send(&[
        parse("", "SELECT id, account_number FROM customers ORDER BY id"),
        bind("cur", "", &[], &[]),
        execute("cur", 1),
        sync(),
    ]);
    let first = raw.until_ready();
    assert_tags(&first, "12DsZ");
    raw.send(&[execute("cur", 0), sync()]);
    let rest = raw.until_ready();
    assert_tags(&rest, "DCZ");
    for frames in [&first, &rest] {
        assert!(!leaks(frames), "{}", describe(frames));
    }
    assert_eq!(rows(&first)[0][0].as_deref(), Some("1"));
    assert_eq!(rows(&rest)[0][0].as_deref(), Some("2"));
    assert!(rows(&rest)[0][1].as_deref().unwrap().ends_with("-QRS"));
    raw.send(&[query("COMMIT")]);
    assert_tags(&raw.until_ready(), "CZ");

    let chunks = wait_events(&gw, "request", 2, |e| {
        e["type"] == "request" && text_of(e).contains("account_number")
    })
    .await;
    for e in &chunks {
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["statement"]["rows"], 1, "{e}");
        assert!(e["masked"].to_string().contains("account_number"), "{e}");
    }
}

// ================================================================ 3. simple query corners

#[tokio::test]
async fn empty_statements_in_a_simple_query() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    for empty in [";", "   ", "", "-- only a comment", ";;"] {
        raw.send(&[query(empty)]);
        assert_tags(&raw.until_ready(), "IZ");
    }
    raw.send(&[query("SELECT 1 AS one;;SELECT 2 AS two")]);
    let frames = raw.until_ready();
    assert_tags(&frames, "TDCTDCZ");
    let r = rows(&frames);
    assert_eq!(
        (r[0][0].as_deref(), r[1][0].as_deref()),
        (Some("1"), Some("2"))
    );
    // The extended protocol's empty statement.
    raw.send(&[
        parse("", ""),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    assert_tags(&raw.until_ready(), "12IZ");
}

#[tokio::test]
async fn a_server_error_in_the_middle_of_a_simple_query() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[query(
        "SELECT 1 AS first_one; SELECT 1/0 AS second_one; SELECT 2 AS third_one",
    )]);
    let frames = raw.until_ready();
    let t = tags(&frames);
    assert!(
        t.starts_with("TDC") && t.ends_with("EZ"),
        "{}",
        describe(&frames)
    );
    assert_eq!(rows(&frames).len(), 1, "{}", describe(&frames));
    assert_eq!(errors(&frames), ["22012"]);

    let requests = wait_events(&gw, "request", 3, |e| e["type"] == "request").await;
    let of = |name: &str| {
        requests
            .iter()
            .find(|e| text_of(e).contains(name))
            .unwrap_or_else(|| panic!("no event for {name}: {requests:#?}"))
    };
    assert_eq!(of("first_one")["outcome"], "success");
    assert_eq!(of("first_one")["statement"]["rows"], 1);
    assert_eq!(of("second_one")["outcome"], "upstream_error");
    assert!(
        of("second_one")["detail"]
            .as_str()
            .unwrap_or("")
            .contains("22012"),
        "{}",
        of("second_one")
    );
    assert_eq!(of("third_one")["outcome"], "failed");

    // The session goes on.
    raw.send(&[query("SELECT 3")]);
    assert_tags(&raw.until_ready(), "TDCZ");
}

#[tokio::test]
async fn refusals_in_a_failed_transaction_and_around_savepoints() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;

    // A refusal while the transaction has already failed: still the refusal, and the
    // transaction stays failed until ROLLBACK.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("INSERT INTO customers (id, name) VALUES (40, 'doomed')")
        .await
        .unwrap();
    let e = c.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22012", "{e:?}");
    let e = c
        .simple_query("DELETE FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("no deletes"), "{}", message(&e));
    let e = c
        .execute("DELETE FROM customers WHERE id = $1", &[&1i32])
        .await;
    assert_eq!(sqlstate(&e.unwrap_err()), "42501");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(db.count("id = 40").await, 0);

    // A refusal inside a savepoint: ROLLBACK TO brings the transaction back.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("INSERT INTO customers (id, name) VALUES (41, 'kept')")
        .await
        .unwrap();
    c.simple_query("SAVEPOINT sp").await.unwrap();
    let e = c
        .simple_query("DELETE FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    c.simple_query("ROLLBACK TO SAVEPOINT sp").await.unwrap();
    let row = c
        .query_one("SELECT name FROM customers WHERE id = $1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "kept");
    c.simple_query("RELEASE SAVEPOINT sp").await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
    assert_eq!(db.count("id = 41").await, 1);
    assert_eq!(db.count("id IN (1, 2)").await, 2);
}

#[tokio::test]
async fn the_poison_text_sent_by_a_client_is_an_ordinary_syntax_error() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    for e in [
        c.simple_query("PORTCULLIS REFUSED")
            .await
            .map(drop)
            .unwrap_err(),
        c.query("PORTCULLIS REFUSED", &[])
            .await
            .map(drop)
            .unwrap_err(),
    ] {
        assert_eq!(sqlstate(&e), "42601", "{e:?}");
        assert!(message(&e).contains("does not parse"), "{}", message(&e));
        assert!(!message(&e).contains("refused by rule"), "{}", message(&e));
    }
    assert_eq!(
        simple_rows(&c.simple_query("SELECT 1").await.unwrap()).len(),
        1
    );
    let rejected = wait_events(&gw, "rejected request", 2, |e| {
        e["type"] == "request" && e["outcome"] == "rejected"
    })
    .await;
    assert!(rejected.iter().all(|e| e["rule"] == "unparseable"));
}

// ================================================================ 4. masking

#[tokio::test]
async fn named_columns_are_masked_in_star_selects_and_both_protocols() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let msgs = c
        .simple_query("SELECT * FROM customers ORDER BY id")
        .await
        .unwrap();
    let r = simple_rows(&msgs);
    assert_eq!(r.len(), 2);
    for row in &r {
        let account = row.get("account_number").unwrap();
        assert!(!ACCOUNTS.iter().any(|a| account.contains(a)), "{account}");
        assert_eq!(row.get("email"), Some("[EMAIL]"));
    }
    // An upper-case quoted alias is the same name to the profile.
    let msgs = c
        .simple_query("SELECT account_number AS \"ACCOUNT_NUMBER\" FROM customers")
        .await
        .unwrap();
    for row in simple_rows(&msgs) {
        let account = row.get(0).unwrap();
        assert!(!ACCOUNTS.iter().any(|a| account.contains(a)), "{account}");
    }
    let found = c
        .query("SELECT * FROM customers WHERE id = $1", &[&1i32])
        .await;
    // tokio-postgres asks for binary: the bigint secret_score is named, so refused.
    assert_eq!(sqlstate(&found.unwrap_err()), "42501");
}

#[tokio::test]
async fn a_masked_column_under_another_name_is_still_masked() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let mut leaked = Vec::new();
    for sql in [
        "SELECT account_number AS acct FROM customers",
        "SELECT account_number || '' FROM customers",
        "SELECT row_to_json(c) FROM customers c",
        "SELECT upper(account_number) FROM customers",
    ] {
        let msgs = c.simple_query(sql).await.unwrap();
        for row in simple_rows(&msgs) {
            let v = row.get(0).unwrap_or("");
            if ACCOUNTS.iter().any(|a| v.contains(a)) {
                leaked.push(format!("{sql} -> {v}"));
            }
        }
    }
    assert!(leaked.is_empty(), "account numbers in clear: {leaked:#?}");
}

#[tokio::test]
async fn a_ten_megabyte_value_and_a_hundred_thousand_rows_arrive_masked() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;

    let msgs = c
        .simple_query(
            "SELECT repeat('x', 10485760) || ' ada@example.com' AS big FROM customers WHERE id = 1",
        )
        .await
        .unwrap();
    let r = simple_rows(&msgs);
    assert_eq!(r.len(), 1);
    let big = r[0].get("big").unwrap();
    assert!(big.starts_with("xxxx"), "{}", &big[..16]);
    assert!(big.ends_with(" [EMAIL]"), "{}", &big[big.len() - 32..]);
    assert_eq!(big.len(), 10_485_760 + " [EMAIL]".len());

    let msgs = c
        .simple_query(
            "SELECT n, 'user' || n || '@example.com' AS email FROM customers, (SELECT generate_series(1, 50000) AS n) s",
        )
        .await
        .unwrap();
    let r = simple_rows(&msgs);
    assert_eq!(r.len(), 100_000);
    assert!(r.iter().all(|row| row.get("email") == Some("[EMAIL]")));

    // The same through the extended protocol (binary: text values are scanned too).
    let found = c
        .query(
            "SELECT 'user' || n || '@example.com' AS email FROM customers, (SELECT generate_series(1, 50000) AS n) s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 100_000);
    assert!(found.iter().all(|row| row.get::<_, &str>(0) == "[EMAIL]"));

    let many = wait_events(&gw, "request", 2, |e| {
        e["type"] == "request" && text_of(e).contains("generate_series")
    })
    .await;
    for e in &many {
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["statement"]["rows"], 100_000, "{e}");
        let masked = e["masked"].as_array().expect("a masked summary");
        assert!(
            masked
                .iter()
                .any(|m| m["detector"] == "email" && m["count"] == 100_000),
            "{masked:?}"
        );
    }
}

// ================================================================ 5. settings

#[tokio::test]
async fn standard_conforming_strings_cannot_be_changed() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let set_rule = r#"
[[rules]]
name = "agents set"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["set"]
"#;
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", set_rule), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    // Refused before it runs, whatever the value (a change would reach statements already
    // on their way, read the old way): the session goes on.
    for value in ["off", "on", "DEFAULT"] {
        let e = c
            .simple_query(&format!("SET standard_conforming_strings = {value}"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{e:?}");
        assert!(message(&e).contains("standard_conforming_strings"), "{e:?}");
    }
    let e = c
        .query("SET SESSION standard_conforming_strings TO off", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    c.simple_query("SET application_name = 'still here'")
        .await
        .unwrap();
    let denied = gw
        .events()
        .into_iter()
        .filter(|e| e["type"] == "request" && e["outcome"] == "denied")
        .count();
    assert_eq!(denied, 4);
}

#[tokio::test]
async fn statements_pipelined_after_turning_standard_conforming_strings_off_are_not_misread() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let set_rule = r#"
[[rules]]
name = "agents set"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["set"]
"#;
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", set_rule), "");
    // A read of `secrets`, which no rule allows, is refused as such.
    let c = through(port, &agent, "pg-agent", "crm").await;
    let e = c.simple_query("SELECT * FROM secrets").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");

    // With standard strings the gateway reads `SELECT 'a\'` and a comment; with backslash
    // escapes the server reads `SELECT 'a'' /* ', * FROM secrets` and a comment.
    let hidden = r"SELECT 'a\' /* ', * FROM secrets -- */";
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SET standard_conforming_strings = off"),
        bind("", "", &[], &[]),
        execute("", 0),
        parse("", hidden),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_closed();
    let seen = describe(&frames);
    let events = gw.events();
    assert!(
        !seen.contains("TOPSECRET"),
        "the client read a table no rule allows: {seen}\nevents: {events:#?}"
    );
}

// ================================================================ 6. cancel and holds

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_with_a_wrong_key_are_ignored_and_a_right_one_ends_a_hold() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let lead = api_key("pg-lead", "human", &["leads"]);
    let (gw, port, admin) = held_gateway(&db, &agent, &lead);
    let c = through(port, &agent, "pg-agent", "crm").await;
    let token = c.cancel_token();
    let update = tokio::spawn(async move {
        let r = c
            .simple_query("UPDATE customers SET name = 'cancelled' WHERE id = 1")
            .await;
        (r.map(drop), c)
    });
    let held = pending_approvals(&admin, &lead.key).await;
    let id = held[0]["id"].as_str().unwrap().to_string();

    // A cancel request with a key nobody has: the connection closes, nothing else happens.
    let mut bogus = TcpStream::connect(("127.0.0.1", port)).unwrap();
    bogus
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&12345i32.to_be_bytes());
    packet.extend_from_slice(&[1, 2, 3, 4]);
    bogus.write_all(&packet).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(bogus.read(&mut buf).unwrap_or(0), 0, "closed, no answer");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!update.is_finished(), "a wrong key cancels nothing");
    assert!(
        pending_approvals(&admin, &lead.key)
            .await
            .iter()
            .any(|a| a["id"] == id.as_str())
    );

    // The right key ends the wait: 57014, and the approval is cancelled.
    token.cancel_query(NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), update)
        .await
        .expect("the cancel ends the wait")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert!(message(&e).contains(&id), "{}", message(&e));
    assert_eq!(db.count("name = 'cancelled'").await, 0);
    let cancelled = wait_event(&gw, "approval.cancelled", |e| {
        e["type"] == "approval.cancelled" && e["approval"] == id.as_str()
    })
    .await;
    assert_eq!(cancelled["outcome"], "failed", "{cancelled}");
    // Approving it now changes nothing.
    let (ok, _) = approvals_cli(&admin, &lead.key, &["approvals", "approve", &id]);
    assert!(!ok, "a cancelled approval cannot be approved");
    assert_eq!(db.count("name = 'cancelled'").await, 0);
    // The session goes on.
    assert_eq!(
        simple_rows(&c.simple_query("SELECT 1").await.unwrap()).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_while_held_cancels_the_approval() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let lead = api_key("pg-lead", "human", &["leads"]);
    let (gw, port, admin) = held_gateway(&db, &agent, &lead);
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[query("UPDATE customers SET name = 'gone' WHERE id = 2")]);
    let (tag, notice) = raw.next().expect("a notice");
    assert_eq!(tag, b'N', "{}", String::from_utf8_lossy(&notice));
    assert!(field(&notice, b'M').contains("held for approval"));
    let id = pending_approvals(&admin, &lead.key).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(raw);

    let cancelled = wait_event(&gw, "approval.cancelled", |e| {
        e["type"] == "approval.cancelled" && e["approval"] == id.as_str()
    })
    .await;
    assert!(
        cancelled["detail"]
            .as_str()
            .unwrap_or("")
            .contains("went away"),
        "{cancelled}"
    );
    let request = wait_event(&gw, "the held statement's request", |e| {
        e["type"] == "request" && e["approval"] == id.as_str()
    })
    .await;
    assert_eq!(request["outcome"], "failed", "{request}");
    wait_event(&gw, "session.end", |e| e["type"] == "session.end").await;
    let (ok, _) = approvals_cli(&admin, &lead.key, &["approvals", "approve", &id]);
    assert!(!ok, "a cancelled approval cannot be approved");
    assert_eq!(db.count("name = 'gone'").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_does_not_cover_every_later_execution_of_a_prepared_statement() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let lead = api_key("pg-lead", "human", &["leads"]);
    let (_gw, port, admin) = held_gateway(&db, &agent, &lead);
    let c = through(port, &agent, "pg-agent", "crm").await;
    let first = tokio::spawn(async move {
        let stmt = c
            .prepare("UPDATE customers SET name = $1 WHERE id = $2")
            .await
            .unwrap();
        let r = c.execute(&stmt, &[&"Approved once", &1i32]).await;
        (r, stmt, c)
    });
    let held = pending_approvals(&admin, &lead.key).await;
    let id = held[0]["id"].as_str().unwrap().to_string();
    let (ok, out) = approvals_cli(
        &admin,
        &lead.key,
        &["approvals", "approve", &id, "--reason", "rename customer 1"],
    );
    assert!(ok, "{out}");
    let (r, stmt, c) = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("released after approval")
        .unwrap();
    assert_eq!(r.unwrap(), 1);

    // Other values, another row, no approval asked for.
    let again = tokio::time::timeout(
        Duration::from_secs(3),
        c.execute(&stmt, &[&"Never approved", &2i32]),
    )
    .await;
    assert_eq!(
        db.count("name = 'Never approved'").await,
        0,
        "the second execution ran without approval: {again:?}"
    );
}

// ================================================================ 7. the owed queue

#[tokio::test]
async fn a_failed_named_parse_does_not_stand_in_for_a_later_one() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    // An unmasked statement (products) that the server rejects.
    raw.send(&[parse("s1", "SELECT no_such_column FROM products"), sync()]);
    let frames = raw.until_ready();
    assert_eq!(errors(&frames), ["42703"], "{}", describe(&frames));
    // The same name, now a masked read of customers: the server accepts it.
    raw.send(&[
        parse("s1", "SELECT id, account_number FROM customers ORDER BY id"),
        bind("", "s1", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_tags(&frames, "12DDCZ");
    let events = gw.events();
    assert!(
        !leaks(&frames),
        "account numbers in clear: {}\nevents: {events:#?}",
        describe(&frames)
    );
}

#[tokio::test]
async fn a_skipped_unnamed_parse_does_not_stand_in_for_the_old_statement() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SELECT id, account_number FROM customers ORDER BY id"),
        sync(),
    ]);
    assert_tags(&raw.until_ready(), "1Z");
    // An error (Describe of a statement that does not exist), then a Parse of an unmasked
    // statement, which the server skips.
    raw.send(&[
        describe_msg(b'S', "no_such_statement"),
        parse("", "SELECT id, name FROM products"),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_eq!(errors(&frames), ["26000"], "{}", describe(&frames));
    raw.send(&[bind("", "", &[], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert!(
        !leaks(&frames),
        "account numbers in clear: {}",
        describe(&frames)
    );
}

#[tokio::test]
async fn a_simple_query_skipped_after_an_extended_error_does_not_desynchronise_masking() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SELECT 1/0"),
        bind("", "", &[], &[]),
        execute("", 0),
        query("SELECT 1"),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_eq!(errors(&frames), ["22012"], "{}", describe(&frames));
    raw.send(&[query(
        "SELECT id, account_number FROM customers ORDER BY id",
    )]);
    let frames = raw.until_ready();
    assert!(
        !leaks(&frames),
        "account numbers in clear: {}",
        describe(&frames)
    );
}

#[tokio::test]
async fn withheld_rows_do_not_let_the_rest_of_the_batch_run_unseen() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SELECT secret_score FROM customers WHERE id = 1"),
        bind("", "", &[], &[1]),
        execute("", 0),
        parse(
            "",
            "INSERT INTO customers (id, name) VALUES (30, 'ran unseen')",
        ),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.until_ready();
    // What the client is told: the select refused, the rest skipped.
    assert_tags(&frames, "12EZ");
    assert_eq!(errors(&frames), ["42501"]);
    let events = gw.events();
    assert_eq!(
        db.count("id = 30").await,
        0,
        "the INSERT the client was told was skipped ran; events: {events:#?}"
    );
}

#[tokio::test]
async fn a_stale_portal_name_does_not_unmask_an_sql_cursor() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let cursor_rule = r#"
[[rules]]
name = "agents use cursors on customers"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["select", "cursor"]
allow.tables = ["customers"]
mask = "pii"
"#;
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", cursor_rule), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    // A portal "c" of an unmasked statement; the server drops it when the Sync commits.
    raw.send(&[
        parse("", "SELECT id, name FROM products"),
        bind("c", "", &[], &[]),
        sync(),
    ]);
    assert_tags(&raw.until_ready(), "12Z");
    raw.send(&[query("BEGIN")]);
    assert_tags(&raw.until_ready(), "CZ");
    // Under a masking rule an SQL cursor is refused (its FETCH would carry neither the
    // query nor the mask); what follows must not reach anything unmasked either.
    raw.send(&[query(
        "DECLARE c CURSOR FOR SELECT id, account_number FROM customers ORDER BY id",
    )]);
    let frames = raw.until_ready();
    assert_tags(&frames, "EZ");
    assert_eq!(errors(&frames), ["42501"]);
    // FETCH through SQL is masked (or fails: there is no such cursor).
    raw.send(&[query("FETCH 1 FROM c")]);
    let frames = raw.until_ready();
    assert!(!leaks(&frames), "{}", describe(&frames));
    // A protocol Execute of the cursor must be masked too (or refused).
    raw.send(&[execute("c", 0), sync()]);
    let frames = raw.until_ready();
    assert!(
        !leaks(&frames),
        "account numbers in clear: {}",
        describe(&frames)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_gets_through_when_every_connection_is_in_use() {
    let db = Db::new("").await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let port = free_port();
    let gw = Gateway::start(&format!(
        r#"{}
{}max_connections = 1

[[rules]]
name = "agents may sleep"
target = "sleepy"
allow.statements = ["select"]
allow.functions = ["pg_sleep"]
"#,
        agent.config,
        db.target("sleepy", port),
    ));
    wait_listen(port);
    let c = through(port, &agent, "pg-agent", "sleepy").await;
    let token = c.cancel_token();
    let sleeper =
        tokio::spawn(async move { c.simple_query("SELECT pg_sleep(20)").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // tokio-postgres does not read the answer to a cancel request: ask by hand too, to see
    // what the gateway says to it.
    let _ = token.cancel_query(NoTls).await;
    let mut probe = TcpStream::connect(("127.0.0.1", port)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&[0; 8]);
    probe.write_all(&packet).unwrap();
    let mut answer = Vec::new();
    let _ = probe.read_to_end(&mut answer);
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper).await;
    let stderr = format!(
        "a cancel request is answered {:?}\n{}",
        String::from_utf8_lossy(&answer),
        gw.stderr.lock().unwrap().join("\n")
    );
    let r = r.unwrap_or_else(|_| {
        panic!("the cancel did not reach the statement; gateway log:\n{stderr}")
    });
    let e = r.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
}

#[tokio::test]
async fn an_error_message_does_not_quote_a_masked_column() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let e = c
        .simple_query("SELECT account_number::int FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22P02", "{e:?}");
    assert!(
        !ACCOUNTS.iter().any(|a| message(&e).contains(a)),
        "{}",
        message(&e)
    );
}

#[tokio::test]
async fn a_refused_bind_leaves_the_unnamed_statement_alone() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[parse("", "SELECT name FROM products"), sync()]);
    assert_tags(&raw.until_ready(), "1Z");
    raw.send(&[bind("p", "no_such_statement", &[], &[]), sync()]);
    let frames = raw.until_ready();
    assert_eq!(errors(&frames), ["26000"], "{}", describe(&frames));
    raw.send(&[bind("", "", &[], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert_tags(&frames, "2DCZ");
    assert_eq!(rows(&frames)[0][0].as_deref(), Some("Widget"));
}

#[tokio::test]
async fn a_refused_parse_does_not_leave_a_phantom_event_for_the_previous_statement() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SELECT name FROM products"),
        bind("", "", &[], &[]),
        execute("", 0),
        parse("", "DELETE FROM customers WHERE id = 2"),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    assert_tags(&raw.until_ready(), "12DCEZ");
    drop(raw);
    wait_event(&gw, "session.end", |e| e["type"] == "session.end").await;
    let requests: Vec<Value> = gw
        .events()
        .into_iter()
        .filter(|e| e["type"] == "request")
        .collect();
    let selects: Vec<&Value> = requests
        .iter()
        .filter(|e| text_of(e).contains("products"))
        .collect();
    assert_eq!(selects.len(), 1, "one SELECT was executed: {requests:#?}");
}

// ================================================================ after the fixes: a second review

fn copy_rules() -> String {
    rules(
        "crm",
        r#"
[[rules]]
name = "agents copy into products"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["copy", "insert"]
allow.tables = ["products"]
"#,
    )
}

/// COPY FROM STDIN in the extended protocol, libpq style: P/B/E/S, then the data, CopyDone
/// and a second Sync (the server ignores the first Sync while in copy-in mode).
#[tokio::test]
async fn copy_from_stdin_in_the_extended_protocol_does_not_stall_the_next_batch() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &copy_rules(), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(&[
        parse("", "COPY products FROM STDIN"),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.take(3);
    assert_eq!(tags(&frames), "12G", "{}", describe(&frames));
    raw.send(&[msg(b'd', b"7\tGadget\n"), msg(b'c', b""), sync()]);
    let frames = raw.until_ready();
    assert_eq!(tags(&frames), "CZ", "{}", describe(&frames));
    raw.send(&[query("SELECT name FROM products WHERE id = 7")]);
    let frames = raw.until_ready();
    assert_eq!(rows(&frames), [[Some("Gadget".to_string())]]);
}

/// A Flush-only client: Parse, Describe, Flush, waits; Bind, Execute, Flush, waits; Sync.
#[tokio::test]
async fn a_flush_only_client_gets_masked_answers_without_sync() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("s1", "SELECT id, account_number FROM customers ORDER BY id"),
        describe_msg(b'S', "s1"),
        flush(),
    ]);
    let frames = raw.take(3);
    assert_eq!(tags(&frames), "1tT", "{}", describe(&frames));
    raw.send(&[bind("p1", "s1", &[], &[]), execute("p1", 1), flush()]);
    let frames = raw.take(3);
    assert_eq!(tags(&frames), "2Ds", "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
    raw.send(&[execute("p1", 0), flush()]);
    let frames = raw.take(2);
    assert_eq!(tags(&frames), "DC", "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
    raw.send(&[sync()]);
    assert_tags(&raw.until_ready(), "Z");
    // A statement prepared in the earlier batch is still usable.
    raw.send(&[bind("", "s1", &[], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert_eq!(tags(&frames), "2DDCZ", "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
}

/// An error while the client is still in a Flush-only exchange: it sends more messages
/// (skipped), then Sync; the next batch works.
#[tokio::test]
async fn messages_after_an_error_before_sync_are_skipped_and_the_session_recovers() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse("", "SELECT 1/0"),
        bind("", "", &[], &[]),
        execute("", 0),
        flush(),
    ]);
    let frames = raw.take(2);
    assert_eq!(tags(&frames), "1E", "{}", describe(&frames));
    raw.send(&[
        parse("s2", "SELECT id, account_number FROM customers"),
        bind("p2", "s2", &[], &[]),
        execute("p2", 0),
        query("SELECT 1"),
        flush(),
        sync(),
    ]);
    let frames = raw.until_ready();
    assert_eq!(tags(&frames), "Z", "{}", describe(&frames));
    // s2 was skipped by the server: the gateway must not pretend it exists.
    raw.send(&[bind("", "s2", &[], &[]), execute("", 0), sync()]);
    let frames = raw.until_ready();
    assert!(!leaks(&frames), "{}", describe(&frames));
    assert_eq!(errors(&frames).len(), 1, "{}", describe(&frames));
    raw.send(&[query(
        "SELECT id, account_number FROM customers ORDER BY id",
    )]);
    let frames = raw.until_ready();
    assert_eq!(rows(&frames).len(), 2, "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
}

/// Table alias column lists rename a masked column without referencing it by name.
#[tokio::test]
async fn alias_column_lists_do_not_unmask_a_named_column() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let mut leaked = Vec::new();
    for sql in [
        "SELECT * FROM customers AS c(a, b, e, acct, s)",
        "SELECT acct FROM customers AS c(a, b, e, acct, s)",
        "SELECT * FROM (SELECT * FROM customers) AS t(a, b, e, acct, s)",
        "WITH x(a, b, e, acct, s) AS (SELECT * FROM customers) SELECT * FROM x",
        "WITH x AS (SELECT * FROM customers) SELECT * FROM x AS y(a, b, e, acct)",
    ] {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                for row in simple_rows(&msgs) {
                    for i in 0..row.len() {
                        let v = row.get(i).unwrap_or("");
                        if ACCOUNTS.iter().any(|a| v.contains(a)) {
                            leaked.push(format!("{sql} -> {v}"));
                        }
                    }
                }
            }
            Err(e) => leaked.push(format!("{sql} -> error {}", message(&e))),
        }
    }
    assert!(leaked.is_empty(), "account numbers in clear: {leaked:#?}");
}

/// A named column used in FROM (LATERAL VALUES, a function in FROM) comes back under a
/// new name without appearing in any output list.
#[tokio::test]
async fn a_named_column_moved_through_from_is_still_masked() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let mut leaked = Vec::new();
    for sql in [
        "SELECT v.* FROM customers, LATERAL (VALUES (account_number)) v",
        "SELECT x FROM customers, LATERAL (VALUES (account_number)) v(x)",
        "SELECT u FROM customers, unnest(ARRAY[account_number]) u",
        "SELECT u.* FROM customers, LATERAL unnest(ARRAY[account_number]) u",
        "SELECT z FROM customers, LATERAL (SELECT account_number AS z) s",
        "SELECT s.* FROM customers, LATERAL (SELECT account_number || '' AS name) s",
        "SELECT j FROM customers, LATERAL to_jsonb(account_number) j",
        "SELECT id, name FROM customers c, LATERAL (SELECT c.account_number) AS t(name2) WHERE false \
         UNION ALL SELECT 1, account_number FROM customers",
    ] {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                for row in simple_rows(&msgs) {
                    for i in 0..row.len() {
                        let v = row.get(i).unwrap_or("");
                        if ACCOUNTS.iter().any(|a| v.contains(a)) {
                            leaked.push(format!("{sql} -> {v}"));
                        }
                    }
                }
            }
            Err(e) => leaked.push(format!("{sql} -> error {}", message(&e))),
        }
    }
    assert!(leaked.is_empty(), "account numbers in clear: {leaked:#?}");
}

/// Copying a named column into an unnamed one with a write allowed under a masking rule is
/// refused: later reads of the new place would show it in clear.
#[tokio::test]
async fn a_named_column_copied_into_another_column_by_a_write_is_refused() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    for sql in [
        "INSERT INTO customers (id, name) SELECT 100 + id, account_number FROM customers",
        "INSERT INTO customers (id, name) SELECT 100 + id, upper(account_number) FROM customers RETURNING id",
    ] {
        let e = c.simple_query(sql).await.map(drop).expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e:?}");
        assert!(message(&e).contains("account_number"), "{}", message(&e));
    }
    // Nothing was written, and an ordinary insert under the same rule still works.
    let msgs = c
        .simple_query("SELECT count(*) FROM customers WHERE id > 100")
        .await
        .unwrap();
    assert_eq!(simple_rows(&msgs)[0].get(0), Some("0"));
    c.simple_query("INSERT INTO customers (id, name) VALUES (200, 'new')")
        .await
        .unwrap();
}

/// The first Execute of a masked statement is deferred; a whole pipeline behind it, with
/// a simple query, comes back in order and masked.
#[tokio::test]
async fn a_deferred_execute_with_a_pipeline_behind_it() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.send(&[
        parse(
            "",
            "SELECT id, account_number AS a FROM customers ORDER BY id",
        ),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
        query("SELECT account_number FROM customers"),
        parse("s", "SELECT id, account_number FROM customers ORDER BY id"),
        bind("", "s", &[], &[]),
        execute("", 1),
        execute("", 1),
        sync(),
    ]);
    let a = raw.until_ready();
    let b = raw.until_ready();
    let c = raw.until_ready();
    for f in [&a, &b, &c] {
        assert!(!leaks(f), "{}", describe(f));
    }
    assert_eq!(tags(&a), "12DDCZ", "{}", describe(&a));
    assert_eq!(tags(&b), "TDDCZ", "{}", describe(&b));
    assert_eq!(tags(&c), "12DsDsZ", "{}", describe(&c));
}

/// A deferred Execute whose statement then fails mid-rows, in a Flush-only exchange.
#[tokio::test]
async fn a_deferred_execute_that_fails_mid_rows_without_sync() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(&[
        parse("", "SELECT account_number, 10 / (2 - id) FROM customers"),
        bind("", "", &[], &[]),
        execute("", 0),
        flush(),
    ]);
    let frames = raw.take(4);
    assert_eq!(tags(&frames), "12DE", "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
    raw.send(&[bind("", "", &[], &[]), execute("", 0), flush(), sync()]);
    assert_tags(&raw.until_ready(), "Z");
    raw.send(&[query("SELECT account_number FROM customers")]);
    let frames = raw.until_ready();
    assert_eq!(rows(&frames).len(), 2, "{}", describe(&frames));
    assert!(!leaks(&frames), "{}", describe(&frames));
}

/// COPY FROM STDIN in the extended protocol, ended by CopyFail then Sync.
#[tokio::test]
async fn a_failed_copy_in_the_extended_protocol_does_not_stall_the_next_batch() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &copy_rules(), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(&[
        parse("", "COPY products FROM STDIN"),
        bind("", "", &[], &[]),
        execute("", 0),
        sync(),
    ]);
    let frames = raw.take(3);
    assert_eq!(tags(&frames), "12G", "{}", describe(&frames));
    let mut reason = Vec::new();
    cstr(&mut reason, "changed my mind");
    raw.send(&[msg(b'f', &reason), sync()]);
    let frames = raw.until_ready();
    assert_eq!(tags(&frames), "EZ", "{}", describe(&frames));
    raw.send(&[query("SELECT 1")]);
    assert_tags(&raw.until_ready(), "TDCZ");
}

/// The same COPY with Flush instead of the first Sync: one Sync in all.
#[tokio::test]
async fn copy_from_stdin_with_flush_then_one_sync() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &copy_rules(), "");
    let mut raw = Raw::login(port, "pg-agent", &agent.key, "crm");
    raw.0
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw.send(&[
        parse("", "COPY products FROM STDIN"),
        bind("", "", &[], &[]),
        execute("", 0),
        flush(),
    ]);
    let frames = raw.take(3);
    assert_eq!(tags(&frames), "12G", "{}", describe(&frames));
    raw.send(&[msg(b'd', b"8\tGizmo\n"), msg(b'c', b""), sync()]);
    assert_tags(&raw.until_ready(), "CZ");
    raw.send(&[query("SELECT name FROM products WHERE id = 8")]);
    let frames = raw.until_ready();
    assert_eq!(rows(&frames), [[Some("Gizmo".to_string())]]);
}

/// Whole rows written `c.*` or schema-qualified are whole rows too.
#[tokio::test]
async fn whole_rows_written_with_a_star_or_a_schema_are_masked() {
    let db = Db::new(SETUP).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = start(&db, "crm", &[&agent], &rules("crm", ""), "");
    let c = through(port, &agent, "pg-agent", "crm").await;
    let mut leaked = Vec::new();
    for sql in [
        "SELECT json_agg(c.*) FROM customers c",
        "SELECT to_jsonb(c.*) FROM customers c",
        "SELECT (c.*)::text FROM customers c",
        "SELECT ROW(c.*)::text FROM customers c",
        "SELECT row_to_json(customers.*) FROM customers",
    ] {
        match c.simple_query(sql).await {
            Ok(msgs) => {
                for row in simple_rows(&msgs) {
                    for i in 0..row.len() {
                        let v = row.get(i).unwrap_or("");
                        if ACCOUNTS.iter().any(|a| v.contains(a)) {
                            leaked.push(format!("{sql} -> {v}"));
                        }
                    }
                }
            }
            Err(e) => leaked.push(format!("{sql} -> error {}", message(&e))),
        }
    }
    assert!(leaked.is_empty(), "account numbers in clear: {leaked:#?}");
}
