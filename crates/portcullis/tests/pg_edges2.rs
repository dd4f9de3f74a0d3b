//! Second adversarial review of the PostgreSQL proxy fixes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
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

    fn target(&self, name: &str, port: u16) -> String {
        format!(
            "[targets.{name}]\nkind = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"postgres://127.0.0.1:5432/{}\"\nuser = \"{}\"\n\n",
            self.name, self.role
        )
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

// ================================================================ 1. broken frames
// ================================================================ review 2

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
