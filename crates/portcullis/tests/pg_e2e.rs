//! The PostgreSQL proxy end to end: the real binary in front of the real server, driven by
//! psql, pgbench and tokio-postgres. Each test creates its own database and its own upstream
//! role (the gateway's credential, distinct from the client's API key), and drops both at
//! the end.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

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

/// The customers the tests read through the gateway.
const CUSTOMERS: &str = "
CREATE TABLE customers (
    id int PRIMARY KEY,
    name text NOT NULL,
    email text,
    account_number text,
    secret_score bigint
);
INSERT INTO customers VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'DE89370400440532013000', 42),
    (2, 'Alan Turing', 'alan@example.org', 'GB29NWBK60161331926819', 7);
";

/// `DE89370400440532013000` masked whole, partial style: the last four kept.
const ADA_ACCOUNT_MASKED: &str = "******************3000";

/// A database of its own and the role the gateway logs in as (its owner); dropped on drop.
struct Db {
    name: String,
    role: String,
}

impl Db {
    async fn new(setup: &str) -> Db {
        let n = unique();
        let db = Db {
            name: format!("pgt_{n}"),
            role: format!("pgt_app_{n}"),
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
            db.as_app().await.batch_execute(setup).await.unwrap();
        }
        db
    }

    /// Directly to the server, as the gateway's role.
    async fn as_app(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user={} dbname={}",
            self.role, self.name
        ))
        .await
        .unwrap()
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

    /// A `[targets.NAME]` block for this database, listening on `port`.
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
                .args([
                    "-X",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(["-c", &sql])
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

/// The rules most tests share: the agent reads (masked), inserts and uses transactions on
/// customers, updates with a WHERE, and nobody deletes.
fn customer_rules(target: &str) -> String {
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
name = "agents update customers"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["update"]
allow.tables = ["customers"]

[[rules]]
name = "no deletes"
target = "{target}"
deny.statements = ["delete"]
reason = "deleting rows is not allowed through the gateway"
"#
    )
}

/// Waits until the target's listener accepts connections.
fn wait_listen(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the PostgreSQL listener on {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway with one `postgres` target `name` for `db` on its own port, keys and rules.
fn gateway(db: &Db, name: &str, keys: &[&Key], rules: &str) -> (Gateway, u16) {
    let port = free_port();
    let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
    let gw = Gateway::start(&format!(
        "{keys}\n{}\n{rules}\n{MASKS}",
        db.target(name, port)
    ));
    wait_listen(port);
    (gw, port)
}

fn conn_string(port: u16, user: &str, key: &str, dbname: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={user} password={key} dbname={dbname} connect_timeout=10"
    )
}

async fn through(port: u16, key: &Key, user: &str, dbname: &str) -> Client {
    connect(&conn_string(port, user, &key.key, dbname))
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

/// The data rows of a simple query.
fn rows(msgs: &[SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// psql through the gateway (verbose errors: the SQLSTATE is shown); (success, stdout,
/// stderr).
fn psql(
    port: u16,
    user: &str,
    key: &str,
    db: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", user, "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .args(args)
        .env("PGPASSWORD", key)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls the audit log until `pred` holds for some event (10 s at most); the runtime runs
/// meanwhile (a dropped client's connection task still has to say goodbye).
async fn wait_event(gw: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = gw.events().into_iter().find(|e| pred(e)) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} event in {:#?}",
            gw.events()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- 1. psql

#[tokio::test]
async fn psql_sees_masked_rows_and_a_refused_delete_changes_nothing() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));

    let (ok, out, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "crm",
        &[
            "-c",
            "SELECT id, name, email, account_number FROM customers ORDER BY id",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("1|Ada Lovelace|[EMAIL]|{ADA_ACCOUNT_MASKED}"),
        "{out}"
    );
    assert!(lines[1].starts_with("2|Alan Turing|[EMAIL]|"), "{out}");
    assert!(lines[1].ends_with("6819"), "{out}");
    assert!(!out.contains("ada@example.com"), "{out}");
    assert!(!out.contains("DE8937040044"), "{out}");

    let (ok, out, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "crm",
        &["-c", "DELETE FROM customers"],
        &[],
    );
    assert!(!ok, "the delete must fail: {out}");
    assert!(err.contains("ERROR:  42501: "), "{err}");
    assert!(err.contains(r#"refused by rule "no deletes""#), "{err}");
    assert!(err.contains("deleting rows is not allowed"), "{err}");

    assert_eq!(db.count("true").await, 2, "both rows are still there");
}

// ---------------------------------------------------------------- 2. tokio-postgres

#[tokio::test]
async fn both_protocols_mask_refuse_and_keep_the_connection_and_transaction_state() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));
    let c = through(port, &agent, "pg-agent", "crm").await;

    // Simple protocol: text values, every named column masked (the bigint too).
    let msgs = c
        .simple_query("SELECT id, email, account_number, secret_score FROM customers ORDER BY id")
        .await
        .unwrap();
    let r = rows(&msgs);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].get("id"), Some("1"));
    assert_eq!(r[0].get("email"), Some("[EMAIL]"));
    assert_eq!(r[0].get("account_number"), Some(ADA_ACCOUNT_MASKED));
    assert_ne!(r[0].get("secret_score"), Some("42"));

    // Extended protocol, binary results: a prepared statement reused several times.
    let stmt = c
        .prepare("SELECT name, email, account_number FROM customers WHERE id = $1")
        .await
        .unwrap();
    for _ in 0..3 {
        for (id, name) in [(1i32, "Ada Lovelace"), (2, "Alan Turing")] {
            let row = c.query_one(&stmt, &[&id]).await.unwrap();
            assert_eq!(row.get::<_, &str>("name"), name);
            assert_eq!(row.get::<_, &str>("email"), "[EMAIL]");
            let account: &str = row.get("account_number");
            assert!(account.starts_with("****"), "{account}");
            if id == 1 {
                assert_eq!(account, ADA_ACCOUNT_MASKED);
            }
        }
    }
    let found = c
        .query(
            "SELECT id, account_number FROM customers WHERE name = $1",
            &[&"Alan Turing"],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, i32>("id"), 2);
    assert!(found[0].get::<_, &str>("account_number").ends_with("6819"));

    // A bigint the profile names, asked for in binary: refused, never sent unmasked.
    let e = c
        .query("SELECT secret_score FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("binary"), "{}", message(&e));
    assert!(message(&e).contains("secret_score"), "{}", message(&e));
    // Unnamed binary columns pass.
    let n: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // Refusals, in both protocols; the connection carries on.
    let e = c
        .simple_query("DELETE FROM customers WHERE id = 2")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(
        message(&e).contains(r#"refused by rule "no deletes""#),
        "{}",
        message(&e)
    );
    let e = c
        .execute("DELETE FROM customers WHERE id = $1", &[&2i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("no deletes"), "{}", message(&e));
    let row = c.query_one(&stmt, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, &str>("name"), "Alan Turing");
    assert_eq!(rows(&c.simple_query("SELECT 1").await.unwrap()).len(), 1);

    // Pipelined (tokio-postgres sends all three before reading): each answer goes to its own
    // statement, masked with its own plan, the refusal in the middle to the middle one.
    let (a, b, d) = tokio::join!(
        c.query_one(&stmt, &[&1i32]),
        c.execute("DELETE FROM customers WHERE id = $1", &[&1i32]),
        c.query_one(&stmt, &[&2i32]),
    );
    let a = a.unwrap();
    assert_eq!(a.get::<_, &str>("name"), "Ada Lovelace");
    assert_eq!(a.get::<_, &str>("account_number"), ADA_ACCOUNT_MASKED);
    assert_eq!(sqlstate(&b.unwrap_err()), "42501");
    let d = d.unwrap();
    assert_eq!(d.get::<_, &str>("name"), "Alan Turing");
    assert_eq!(d.get::<_, &str>("email"), "[EMAIL]");

    // Inside a transaction: the refusal aborts it, as a server error would.
    c.simple_query("BEGIN").await.unwrap();
    c.simple_query("INSERT INTO customers (id, name) VALUES (10, 'In the transaction')")
        .await
        .unwrap();
    let e = c
        .simple_query("DELETE FROM customers WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    let e = c.query_one(&stmt, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    c.simple_query("ROLLBACK").await.unwrap();
    let row = c.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, &str>("name"), "Ada Lovelace");
    assert_eq!(db.count("id = 10").await, 0, "the insert was rolled back");
    assert_eq!(db.count("true").await, 2);

    // The same in the extended protocol.
    c.simple_query("BEGIN").await.unwrap();
    let e = c
        .execute("DELETE FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let e = c.query_one(&stmt, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "{e:?}");
    c.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(c.query(&stmt, &[&1i32]).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- 3. multi-statement

#[tokio::test]
async fn one_refused_statement_of_a_simple_query_means_none_of_it_runs() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (_gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));
    let c = through(port, &agent, "pg-agent", "crm").await;

    let e = c
        .batch_execute(
            "INSERT INTO customers (id, name) VALUES (20, 'Before the delete'); DELETE FROM customers WHERE id = 1",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("no deletes"), "{}", message(&e));
    // The refused statement second or first: nothing ran either way.
    let e = c
        .batch_execute(
            "DELETE FROM customers WHERE id = 2; INSERT INTO customers (id, name) VALUES (21, 'After the delete')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert_eq!(db.count("id IN (20, 21)").await, 0, "no insert happened");
    assert_eq!(db.count("id IN (1, 2)").await, 2);

    // An allowed multi-statement query runs whole.
    c.batch_execute(
        "INSERT INTO customers (id, name) VALUES (22, 'One'); INSERT INTO customers (id, name) VALUES (23, 'Two')",
    )
    .await
    .unwrap();
    assert_eq!(db.count("id IN (22, 23)").await, 2);
}

// ---------------------------------------------------------------- 4. parse, functions, WHERE

#[tokio::test]
async fn unparseable_sql_privileged_functions_and_updates_without_where() {
    let db = Db::new(CUSTOMERS).await;
    db.as_super()
        .await
        .batch_execute(&format!(
            "GRANT pg_read_server_files TO {0}; GRANT EXECUTE ON FUNCTION pg_read_file(text) TO {0}",
            db.role
        ))
        .await
        .unwrap();
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let bulk = api_key("pg-bulk", "service", &[]);
    let ops = api_key("pg-ops", "human", &[]);
    let rules = format!(
        r#"{}
[[rules]]
name = "bulk updates"
who.subjects = ["pg-bulk"]
target = "crm"
allow.statements = ["update"]
allow.tables = ["customers"]
allow.without_where = true

[[rules]]
name = "ops read files"
who.subjects = ["pg-ops"]
target = "crm"
allow.statements = ["select"]
allow.functions = ["pg_read_file"]
"#,
        customer_rules("crm")
    );
    let (_gw, port) = gateway(&db, "crm", &[&agent, &bulk, &ops], &rules);
    let c = through(port, &agent, "pg-agent", "crm").await;

    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601", "{e:?}");
    assert!(message(&e).contains("does not parse"), "{}", message(&e));
    let e = c.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601", "{e:?}");
    assert!(message(&e).contains("does not parse"), "{}", message(&e));

    let e = c
        .simple_query("SELECT pg_read_file('/etc/hostname')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("pg_read_file"), "{}", message(&e));

    let e = c
        .simple_query("UPDATE customers SET name = 'x'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("WHERE"), "{}", message(&e));
    assert_eq!(db.count("name = 'x'").await, 0);
    // With a WHERE, the agent's update rule allows it.
    let n = c
        .execute(
            "UPDATE customers SET name = $1 WHERE id = $2",
            &[&"Ada King", &1i32],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(db.count("name = 'Ada King'").await, 1);
    assert_eq!(rows(&c.simple_query("SELECT 1").await.unwrap()).len(), 1);

    // A rule with allow.without_where lets its holder touch every row.
    let b = through(port, &bulk, "pg-bulk", "crm").await;
    let n = b
        .execute("UPDATE customers SET name = 'x'", &[])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(db.count("name = 'x'").await, 2);

    // A rule whose allow.functions names the function allows it.
    let o = through(port, &ops, "pg-ops", "crm").await;
    let msgs = o
        .simple_query("SELECT pg_read_file('/etc/hostname')")
        .await
        .unwrap();
    let r = rows(&msgs);
    assert_eq!(r.len(), 1);
    assert!(!r[0].get(0).unwrap_or("").is_empty());
}

// ---------------------------------------------------------------- 5. audit

#[tokio::test]
async fn every_statement_has_one_normalized_event_and_the_log_verifies() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let keys = tempfile::tempdir().unwrap();
    let audit_key = keys.path().join("audit-key");
    let checkpoints = keys.path().join("published");
    let out = Command::new(binary())
        .args(["keys", "audit-init", "--out"])
        .arg(&audit_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let port = free_port();
    let mut gw = Gateway::start(&format!(
        "[audit]\nsigning_key = {:?}\ncheckpoint_interval = \"100ms\"\ncheckpoint_dir = {:?}\n\n{}\n{}\n{}\n{MASKS}",
        audit_key.to_str().unwrap(),
        checkpoints.to_str().unwrap(),
        agent.config,
        db.target("crm", port),
        customer_rules("crm"),
    ));
    wait_listen(port);

    const MARKER: &str = "Zq9-unique-marker";
    {
        let c = through(port, &agent, "pg-agent", "crm").await;
        let msgs = c
            .simple_query(&format!(
                "SELECT id, email, account_number FROM customers WHERE name <> '{MARKER}' ORDER BY id"
            ))
            .await
            .unwrap();
        assert_eq!(rows(&msgs).len(), 2);
        let found = c
            .query("SELECT id FROM customers WHERE id = $1", &[&1i32])
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let e = c
            .simple_query("DELETE FROM customers WHERE id = 1")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
        let e = c.simple_query("SELEC 1").await.unwrap_err();
        assert_eq!(sqlstate(&e), "42601");
    }
    let end = wait_event(&gw, "session.end", |e| e["type"] == "session.end").await;
    assert_eq!(end["identity"]["subject"], "pg-agent", "{end}");
    assert_eq!(end["target"], "crm");
    let events = gw.events();
    let start = events
        .iter()
        .find(|e| e["type"] == "session.start")
        .expect("a session.start event");
    assert_eq!(start["identity"]["subject"], "pg-agent", "{start}");
    assert_eq!(start["session"], end["session"]);
    let requests: Vec<&Value> = events.iter().filter(|e| e["type"] == "request").collect();
    assert_eq!(requests.len(), 4, "one per statement: {requests:#?}");
    assert!(requests.iter().all(|e| e["session"] == start["session"]));
    assert!(
        requests
            .iter()
            .all(|e| e["identity"]["subject"] == "pg-agent")
    );

    // The masked select: literals out of the text, rows counted, masking summarized.
    let select = requests
        .iter()
        .find(|e| {
            e["statement"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("<>"))
        })
        .expect("the select's event");
    let text = select["statement"]["text"].as_str().unwrap();
    assert!(text.contains("$1"), "{text}");
    assert!(!text.contains(MARKER), "{text}");
    assert!(!select.to_string().contains(MARKER), "{select}");
    assert_eq!(select["statement"]["rows"], 2, "{select}");
    assert!(
        select["statement"]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().ends_with("customers")),
        "{select}"
    );
    assert_eq!(select["statement"]["kinds"][0], "select", "{select}");
    assert!(select["statement"]["fingerprint"].is_string(), "{select}");
    assert_eq!(select["rule"], "agents read customers");
    assert_eq!(select["decision"], "allow");
    assert_eq!(select["outcome"], "success");
    let masked = select["masked"].as_array().expect("a masked summary");
    let has = |detector: &str, column: &str| {
        masked
            .iter()
            .any(|m| m["detector"] == detector && m["path"].as_str().unwrap().contains(column))
    };
    assert!(has("field", "account_number"), "{masked:?}");
    assert!(has("email", "email"), "{masked:?}");
    assert!(!select.to_string().contains("ada@example.com"));

    // The extended-protocol select.
    let by_id = requests
        .iter()
        .find(|e| {
            e["statement"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("SELECT id FROM"))
        })
        .expect("the prepared select's event");
    assert_eq!(by_id["statement"]["rows"], 1, "{by_id}");
    assert_eq!(by_id["outcome"], "success");

    let delete = requests
        .iter()
        .find(|e| e["statement"]["kinds"][0] == "delete")
        .expect("the delete's event");
    assert_eq!(delete["outcome"], "denied", "{delete}");
    assert_eq!(delete["decision"], "deny");
    assert_eq!(delete["rule"], "no deletes");
    let unparsed = requests
        .iter()
        .find(|e| e["outcome"] == "rejected")
        .expect("the unparseable statement's event");
    assert_eq!(unparsed["rule"], "unparseable", "{unparsed}");

    assert!(gw.terminate(), "the gateway stops cleanly");
    let out = Command::new(binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(gw.data_dir())
        .arg("--pubkey")
        .arg(audit_key.join("audit.pub"))
        .arg("--checkpoints")
        .arg(&checkpoints)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- 6. cancel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_running_statement() {
    let db = Db::new("").await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let rules = r#"
[[rules]]
name = "agents may sleep"
target = "sleepy"
allow.statements = ["select"]
allow.functions = ["pg_sleep"]
"#;
    let (_gw, port) = gateway(&db, "sleepy", &[&agent], rules);
    let c = through(port, &agent, "pg-agent", "sleepy").await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (r.map(|_| ()), c)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("the sleep ends soon after the cancel")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session goes on.
    assert_eq!(rows(&c.simple_query("SELECT 1").await.unwrap()).len(), 1);
}

// ---------------------------------------------------------------- 7. dead upstream

#[tokio::test]
async fn a_dead_database_is_reported_unavailable_and_other_targets_work() {
    let db = Db::new("").await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let live = free_port();
    let dead = free_port();
    let nothing_there = free_port();
    let gw = Gateway::start(&format!(
        r#"{}
{}
[targets.gone]
kind = "postgres"
listen = "127.0.0.1:{dead}"
upstream = "postgres://127.0.0.1:{nothing_there}/x"
user = "{}"

[[rules]]
name = "agents select anywhere"
target = "*"
allow.statements = ["select"]
"#,
        agent.config,
        db.target("live", live),
        db.role,
    ));
    wait_listen(live);
    wait_listen(dead);

    let e = connect(&conn_string(dead, "pg-agent", &agent.key, "gone"))
        .await
        .map(drop)
        .expect_err("no session without a database");
    assert_eq!(sqlstate(&e), "08006", "{e:?}");
    assert!(message(&e).contains("unavailable"), "{}", message(&e));
    assert!(!message(&e).contains(&nothing_there.to_string()));

    let c = through(live, &agent, "pg-agent", "live").await;
    let msgs = c.simple_query("SELECT 41 + 1 AS answer").await.unwrap();
    assert_eq!(rows(&msgs)[0].get("answer"), Some("42"));
    // The failed login is on record.
    let failed = wait_event(&gw, "failed session.start", |e| {
        e["type"] == "session.start" && e["outcome"] == "failed"
    })
    .await;
    assert_eq!(failed["target"], "gone");
    assert!(std::net::TcpStream::connect(gw.addr).is_ok(), "still up");
}

// ---------------------------------------------------------------- 8. client goes away

/// A raw protocol client: logs in with a cleartext password and returns the socket, ready
/// for queries.
fn raw_login(port: u16, user: &str, key: &str, db: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in [("user", user), ("database", db)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut sent_password = false;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match head[0] {
            b'R' if payload[..4] == 3i32.to_be_bytes() && !sent_password => {
                let mut m = vec![b'p'];
                m.extend_from_slice(&((key.len() + 5) as i32).to_be_bytes());
                m.extend_from_slice(key.as_bytes());
                m.push(0);
                s.write_all(&m).unwrap();
                sent_password = true;
            }
            b'E' => panic!("login failed: {}", String::from_utf8_lossy(&payload)),
            b'Z' => return s,
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_result_leaves_the_gateway_serving() {
    let db = Db::new("").await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let rules = r#"
[[rules]]
name = "agents compute"
target = "big"
allow.statements = ["select"]
"#;
    let (gw, port) = gateway(&db, "big", &[&agent], rules);

    let mut s = raw_login(port, "pg-agent", &agent.key, "big");
    let sql = "SELECT g, md5(g::text) FROM generate_series(1, 2000000) g";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    q.push(0);
    s.write_all(&q).unwrap();
    // Some of the result, far from all of it (about 90 MB), then gone.
    let mut got = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while got < 256 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed the connection");
        got += n;
    }
    drop(s);

    let end = wait_event(&gw, "session.end", |e| e["type"] == "session.end").await;
    assert!(
        end["detail"].as_str().unwrap_or("").contains("went away"),
        "{end}"
    );
    let request = wait_event(&gw, "request", |e| e["type"] == "request").await;
    assert_eq!(request["outcome"], "failed", "{request}");
    assert!(
        request["statement"]["text"]
            .as_str()
            .unwrap()
            .contains("generate_series"),
        "{request}"
    );

    // The gateway still serves.
    let c = through(port, &agent, "pg-agent", "big").await;
    let msgs = c.simple_query("SELECT md5('x') AS h").await.unwrap();
    assert_eq!(rows(&msgs).len(), 1);
}

// ---------------------------------------------------------------- 9. authentication

#[tokio::test]
async fn logins_with_the_wrong_key_user_database_or_options_are_refused() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));
    let stranger = api_key("pg-stranger", "agent", &[]);

    // A key the gateway does not know.
    let e = connect(&conn_string(port, "pg-agent", &stranger.key, "crm"))
        .await
        .map(drop)
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "28P01", "{e:?}");
    let (ok, _, err) = psql(
        port,
        "pg-agent",
        &stranger.key,
        "crm",
        &["-c", "SELECT 1"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("authentication failed"), "{err}");
    let failure = wait_event(&gw, "auth.failure", |e| e["type"] == "auth.failure").await;
    assert_eq!(failure["outcome"], "rejected", "{failure}");
    assert_eq!(failure["target"], "crm");
    assert!(!failure.to_string().contains(&stranger.key));

    // The right key under another name.
    let e = connect(&conn_string(port, "someone-else", &agent.key, "crm"))
        .await
        .map(drop)
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "28000", "{e:?}");
    assert!(message(&e).contains("does not match"), "{}", message(&e));

    // A database this listener does not serve.
    let e = connect(&conn_string(port, "pg-agent", &agent.key, "postgres"))
        .await
        .map(drop)
        .expect_err("refused");
    assert_eq!(sqlstate(&e), "3D000", "{e:?}");
    // Its upstream name is accepted as well as the target's.
    let c = through(port, &agent, "pg-agent", &db.name).await;
    assert_eq!(rows(&c.simple_query("SELECT 1").await.unwrap()).len(), 1);

    // Startup options could change how the server reads what the gateway checked.
    let e = connect(&format!(
        "{} options='-csearch_path=x'",
        conn_string(port, "pg-agent", &agent.key, "crm")
    ))
    .await
    .map(drop)
    .expect_err("refused");
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
    assert!(message(&e).contains("options"), "{}", message(&e));
    let (ok, _, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "crm",
        &["-c", "SELECT 1"],
        &[("PGOPTIONS", "-csearch_path=x")],
    );
    assert!(!ok);
    assert!(err.contains(r#"startup parameter "options""#), "{err}");

    // And the right login still works.
    let (ok, out, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "crm",
        &["-c", "SELECT count(*) FROM customers"],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2");
}

// ---------------------------------------------------------------- 10. LISTEN/NOTIFY

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_a_listener_through_the_gateway() {
    let db = Db::new("").await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let rules = r#"
[[rules]]
name = "agents listen and notify"
target = "events"
allow.statements = ["listen", "notify"]
"#;
    let (_gw, port) = gateway(&db, "events", &[&agent], rules);

    let (listener, mut connection) =
        tokio_postgres::connect(&conn_string(port, "pg-agent", &agent.key, "events"), NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("the listener's connection failed: {e:?}");
                    break;
                }
            }
        }
    });
    listener.batch_execute("LISTEN pgt_channel").await.unwrap();

    // Through the gateway.
    let notifier = through(port, &agent, "pg-agent", "events").await;
    notifier
        .batch_execute("NOTIFY pgt_channel, 'through the gateway'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(
        got,
        ("pgt_channel".to_string(), "through the gateway".to_string())
    );
    // Directly on the server, while the listener is idle.
    db.as_super()
        .await
        .batch_execute("NOTIFY pgt_channel, 'directly'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(got.1, "directly");
    // The listener is still a working session.
    listener
        .batch_execute("UNLISTEN pgt_channel")
        .await
        .unwrap();
}

// ---------------------------------------------------------------- 11. COPY

#[tokio::test]
async fn copy_is_refused_under_a_mask_and_for_server_files_and_works_otherwise() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let exporter = api_key("pg-exporter", "service", &[]);
    let rules = r#"
[[rules]]
name = "agents copy masked"
who.subjects = ["pg-agent"]
target = "crm"
allow.statements = ["select", "copy"]
allow.tables = ["customers"]
mask = "pii"

[[rules]]
name = "exports"
who.subjects = ["pg-exporter"]
target = "crm"
allow.statements = ["select", "copy"]
allow.tables = ["customers"]
"#;
    let (_gw, port) = gateway(&db, "crm", &[&agent, &exporter], rules);

    let c = through(port, &agent, "pg-agent", "crm").await;
    let e = c
        .simple_query("COPY customers TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(
        message(&e).contains("COPY output cannot be masked"),
        "{}",
        message(&e)
    );
    let (ok, out, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "crm",
        &["-c", r"\copy customers to stdout"],
        &[],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("42501"), "{err}");
    assert!(!out.contains("ada@example.com"));

    // Without a mask, COPY works.
    let (ok, out, err) = psql(
        port,
        "pg-exporter",
        &exporter.key,
        "crm",
        &["-c", r"\copy customers to stdout"],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("ada@example.com"), "{out}");
    let (ok, out, err) = psql(
        port,
        "pg-exporter",
        &exporter.key,
        "crm",
        &[
            "-c",
            r"\copy (SELECT id, name FROM customers WHERE id = 2) to stdout with (format csv)",
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2,Alan Turing");

    // The server's own files: never.
    let x = through(port, &exporter, "pg-exporter", "crm").await;
    let e = x
        .simple_query("COPY customers FROM '/etc/passwd'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("file or program"), "{}", message(&e));
    let e = x
        .simple_query("COPY customers TO '/tmp/pgt_out.txt'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert_eq!(db.count("true").await, 2);
    assert_eq!(rows(&x.simple_query("SELECT 1").await.unwrap()).len(), 1);
}

// ---------------------------------------------------------------- 12. pgbench

#[tokio::test]
async fn pgbench_runs_select_only_through_the_gateway() {
    let db = Db::new("").await;
    let init = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", "5432"])
        .args(["-U", &db.role, &db.name])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let agent = api_key("pg-bench", "service", &[]);
    let rules = r#"
[[rules]]
name = "benchmark"
target = "bench"
allow.statements = ["select", "maintenance", "truncate"]
allow.tables = ["pgbench_*", "pg_catalog.*"]
"#;
    let (gw, port) = gateway(&db, "bench", &[&agent], rules);
    let out = Command::new("pgbench")
        .args(["-S", "-T", "3", "-c", "2", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", "pg-bench", "bench"])
        .env("PGPASSWORD", &agent.key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench: {stdout}\n{stderr}");
    assert!(stdout.contains("tps = "), "{stdout}");
    if stdout.contains("number of failed transactions") {
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{stdout}"
        );
    }
    let events = gw.events();
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "request" && e["outcome"] == "success")
            .count()
            > 10,
        "pgbench's statements are on record"
    );
    assert!(!events.iter().any(|e| e["outcome"] == "denied"));
}

// ---------------------------------------------------------------- 13. held statements

async fn pending_approvals(admin: &str, key: &str, except: &[String]) -> Vec<Value> {
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
                .filter(|a| !except.iter().any(|id| a["id"] == id.as_str()))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_update_runs_once_a_lead_approves_and_is_refused_when_denied() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let lead = api_key("pg-lead", "human", &["leads"]);
    let pg_port = free_port();
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
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
"#,
            agent.config,
            lead.config,
            db.target("crm", pg_port),
        ),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    wait_listen(pg_port);

    // Extended protocol: held, approved with the CLI, run.
    let c = through(pg_port, &agent, "pg-agent", "crm").await;
    let update = tokio::spawn(async move {
        let r = c
            .execute(
                "UPDATE customers SET name = $1 WHERE id = $2",
                &[&"Approved Name", &1i32],
            )
            .await;
        (r, c)
    });
    let listed = pending_approvals(&admin, &lead.key, &[]).await;
    let first = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["requester"]["subject"], "pg-agent", "{listed:?}");
    assert!(listed[0].to_string().contains("UPDATE"), "{listed:?}");
    assert!(!update.is_finished(), "the update waits for its approval");
    assert_eq!(db.count("name = 'Approved Name'").await, 0);
    let (ok, out) = approvals_cli(&admin, &lead.key, &["approvals", "list"]);
    assert!(ok && out.contains(&first), "{out}");
    let (ok, out) = approvals_cli(
        &admin,
        &lead.key,
        &["approvals", "approve", &first, "--reason", "ticket 77"],
    );
    assert!(ok, "{out}");
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), update)
        .await
        .expect("released after approval")
        .unwrap();
    assert_eq!(r.unwrap(), 1);
    assert_eq!(db.count("id = 1 AND name = 'Approved Name'").await, 1);

    // Simple protocol: held, denied, refused with the reason.
    let update = tokio::spawn(async move {
        let r = c
            .simple_query("UPDATE customers SET name = 'Denied Name' WHERE id = 2")
            .await;
        (r.map(|_| ()), c)
    });
    let listed = pending_approvals(&admin, &lead.key, std::slice::from_ref(&first)).await;
    let second = listed[0]["id"].as_str().unwrap().to_string();
    let (ok, out) = approvals_cli(
        &admin,
        &lead.key,
        &["approvals", "deny", &second, "--reason", "not on a friday"],
    );
    assert!(ok, "{out}");
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), update)
        .await
        .expect("answered after the denial")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("not on a friday"), "{}", message(&e));
    assert!(message(&e).contains(&second), "{}", message(&e));
    assert_eq!(db.count("name = 'Denied Name'").await, 0);
    // The session is usable after the denial.
    let msgs = c
        .simple_query("SELECT name FROM customers WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(rows(&msgs)[0].get(0), Some("Approved Name"));

    let events = gw.events();
    let approved = events
        .iter()
        .find(|e| {
            e["type"] == "request" && e["approval"] == first.as_str() && e["outcome"] == "success"
        })
        .expect("the approved update's event");
    assert_eq!(approved["statement"]["rows"], 1, "{approved}");
    assert!(events.iter().any(|e| e["type"] == "request"
        && e["approval"] == second.as_str()
        && e["outcome"] == "denied"));
}

// ---------------------------------------------------------------- 14. just-in-time grants

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_grant_lets_the_agent_read_until_it_is_revoked() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let lead = api_key("pg-lead", "human", &["leads"]);
    let pg_port = free_port();
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let _gw = Gateway::start_with(
        &format!(
            r#"{}{}
{}
[[rules]]
name = "agents read customers with a grant"
who.groups = ["agents"]
target = "crm"
allow.statements = ["select"]
allow.tables = ["customers"]
requires_grant = true
approvers = ["leads"]
max_grant = "1h"
mask = "pii"
{MASKS}"#,
            agent.config,
            lead.config,
            db.target("crm", pg_port),
        ),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );
    wait_listen(pg_port);
    let c = through(pg_port, &agent, "pg-agent", "crm").await;

    // Without a grant: refused, and the refusal says how to ask for one.
    let e = c
        .simple_query("SELECT name FROM customers")
        .await
        .map(drop)
        .expect_err("no grant yet");
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(
        message(&e).contains("portcullis access request --target crm --tables customers"),
        "{}",
        message(&e)
    );

    // The agent asks, a lead approves, the same session can now read (masked).
    let (ok, out) = approvals_cli(
        &admin,
        &agent.key,
        &[
            "access",
            "request",
            "--target",
            "crm",
            "--tables",
            "customers",
            "--for",
            "10m",
            "--reason",
            "ticket 12: reconcile accounts",
        ],
    );
    assert!(ok, "{out}");
    let pending = pending_approvals(&admin, &lead.key, &[]).await;
    let id = pending[0]["id"].as_str().unwrap().to_string();
    let (ok, out) = approvals_cli(
        &admin,
        &lead.key,
        &["approvals", "approve", &id, "--reason", "ok for today"],
    );
    assert!(ok, "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        match c
            .query_one(
                "SELECT account_number FROM customers WHERE id = $1",
                &[&1i32],
            )
            .await
        {
            Ok(row) => break row,
            Err(e) => {
                assert!(Instant::now() < deadline, "the grant never applied: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(row.get::<_, String>(0), ADA_ACCOUNT_MASKED);

    // Revoked: refused again.
    let (ok, out) = approvals_cli(
        &admin,
        &lead.key,
        &["access", "revoke", &id, "--reason", "done"],
    );
    assert!(ok, "{out}");
    let e = c
        .simple_query("SELECT name FROM customers")
        .await
        .map(drop)
        .expect_err("revoked");
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
}

// ---------------------------------------------------------------- 15. comments in the log

#[tokio::test]
async fn a_secret_in_a_comment_does_not_reach_the_audit_log() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));
    let c = through(port, &agent, "pg-agent", "crm").await;
    c.simple_query("SELECT name FROM customers WHERE id = 2 -- asked by grace@example.net")
        .await
        .unwrap();
    let ev = wait_event(&gw, "request", |e| {
        e["type"] == "request"
            && e["statement"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("--"))
    })
    .await;
    let text = ev["statement"]["text"].as_str().unwrap();
    assert!(!text.contains("grace@example.net"), "{text}");
    assert!(text.contains("id = $1"), "{text}");
}

// ---------------------------------------------------------------- 16. session recording

/// A secret planted in statements, bind values and rows: the recording must never keep it.
const PLANTED: &str = "AKIAIOSFODNN7EXAMPLE";

/// Customers, ten numbers and a note that holds the planted secret.
fn recorded_setup() -> String {
    format!(
        "{CUSTOMERS}
CREATE TABLE numbers (n int);
INSERT INTO numbers SELECT generate_series(1, 10);
CREATE TABLE notes (id int, note text);
INSERT INTO notes VALUES (1, 'deploy key {PLANTED}');
"
    )
}

/// A gateway that records (strict, three rows per statement) with two targets on `db`:
/// `rec` keeps result rows (`record_results = true`), `plain` only counts them. The agent
/// reads numbers unmasked, customers and notes masked by `rec` (every detector, the account
/// number and score whole) and may run DO blocks; returns the gateway and the two ports.
fn recording_gateway(db: &Db, agent: &Key) -> (Gateway, u16, u16) {
    let (rec, plain) = (free_port(), free_port());
    let rules = |target: &str| {
        format!(
            r#"
[[rules]]
name = "{target}: agents count, unmasked"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["select", "copy"]
allow.tables = ["numbers"]

[[rules]]
name = "{target}: agents read, masked"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["select"]
allow.tables = ["customers", "numbers", "notes"]
mask = "rec"

[[rules]]
name = "{target}: agents run blocks"
who.subjects = ["pg-agent"]
target = "{target}"
allow.statements = ["do"]
"#
        )
    };
    let gw = Gateway::start(&format!(
        "{}\n{}record_results = true\n\n{}\n{}\n{}\n
[recording]
mode = \"strict\"
max_rows_per_statement = 3

[masks.rec]
columns = [\"account_number\", \"secret_score\"]
style = \"partial\"
",
        agent.config,
        db.target("rec", rec),
        db.target("plain", plain),
        rules("rec"),
        rules("plain"),
    ));
    wait_listen(rec);
    wait_listen(plain);
    (gw, rec, plain)
}

/// One side (`request` or `answer`) of an event's recording, read back through the audit
/// crate (checked against its id) and parsed.
fn recorded(gw: &Gateway, event: &Value, side: &str) -> Value {
    let id = event["recorded"][side]
        .as_str()
        .unwrap_or_else(|| panic!("no recorded {side} in {event}"));
    let id = portcullis_recording::ChunkId::parse(id).unwrap();
    let chunk = portcullis_audit::recordings::Recordings::open(&gw.data_dir())
        .unwrap()
        .get(&id)
        .unwrap();
    serde_json::from_slice(&chunk.content(64 << 20).unwrap()).unwrap()
}

/// The request event whose statement text contains `needle`, once recorded.
async fn request_event(gw: &Gateway, needle: &str) -> Value {
    wait_event(gw, "request", |e| {
        e["type"] == "request"
            && e["statement"]["text"]
                .as_str()
                .is_some_and(|t| t.contains(needle))
    })
    .await
}

/// The parts of a record of one kind.
fn parts<'a>(record: &'a Value, kind: &str) -> Vec<&'a Value> {
    record["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .map(|p| &p["body"])
        .collect()
}

/// No file of the data directory holds `secret`, nor does any recorded chunk once
/// decompressed.
fn assert_nowhere_in(gw: &Gateway, secret: &str) {
    let mut stack = vec![gw.data_dir()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            files += 1;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the planted secret",
                path.display()
            );
        }
    }
    assert!(files > 0);
    let db = rusqlite::Connection::open(gw.data_dir().join("audit.db")).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT id FROM chunks")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!ids.is_empty(), "nothing was recorded");
    let recordings = portcullis_audit::recordings::Recordings::open(&gw.data_dir()).unwrap();
    for id in ids {
        let chunk = recordings
            .get(&portcullis_recording::ChunkId::parse(&id).unwrap())
            .unwrap();
        let content = String::from_utf8(chunk.content(64 << 20).unwrap()).unwrap();
        assert!(
            !content.contains(secret),
            "chunk {id} holds the planted secret: {content}"
        );
    }
}

#[tokio::test]
async fn statements_and_their_answers_are_recorded_as_the_client_received_them() {
    let db = Db::new(&recorded_setup()).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port, _) = recording_gateway(&db, &agent);
    let c = through(port, &agent, "pg-agent", "rec").await;

    // Simple protocol: the text (its literal masked), the columns, each row as the client
    // read it, the tag.
    let sql = format!(
        "SELECT id, name, email, account_number FROM customers WHERE name <> '{PLANTED}' ORDER BY id"
    );
    let msgs = c.simple_query(&sql).await.unwrap();
    let got: Vec<Value> = rows(&msgs)
        .iter()
        .map(|r| {
            (0..4)
                .map(|i| r.get(i).map_or(Value::Null, Value::from))
                .collect()
        })
        .collect();
    assert_ne!(got[0][2], "ada@example.com", "{got:?}");
    let ev = request_event(&gw, "WHERE name <> $1 ORDER BY id").await;
    let request = recorded(&gw, &ev, "request");
    assert_eq!(request["parts"][0]["kind"], "query", "{request}");
    let recorded_sql = request["parts"][0]["body"]["sql"].as_str().unwrap();
    assert!(!recorded_sql.contains(PLANTED), "{recorded_sql}");
    assert!(
        recorded_sql
            .starts_with("SELECT id, name, email, account_number FROM customers WHERE name <> '"),
        "{recorded_sql}"
    );
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "columns")[0],
        &serde_json::json!([
            {"name": "id", "type_oid": 23},
            {"name": "name", "type_oid": 25},
            {"name": "email", "type_oid": 25},
            {"name": "account_number", "type_oid": 25},
        ]),
        "{answer}"
    );
    let kept: Vec<Value> = parts(&answer, "row").into_iter().cloned().collect();
    assert_eq!(kept, got, "{answer}");
    assert_eq!(kept[0][3], ADA_ACCOUNT_MASKED);
    assert_eq!(parts(&answer, "complete"), [&Value::from("SELECT 2")]);
    assert!(
        answer.get("caller_left").is_none_or(|v| v == false),
        "{answer}"
    );

    // Extended protocol, binary results and a bind value that carries the secret.
    let found = c
        .query(
            "SELECT id, name, account_number FROM customers WHERE name <> $1 ORDER BY id",
            &[&PLANTED],
        )
        .await
        .unwrap();
    let got: Vec<Value> = found
        .iter()
        .map(|r| {
            serde_json::json!([
                r.get::<_, i32>("id").to_string(),
                r.get::<_, &str>("name"),
                r.get::<_, &str>("account_number"),
            ])
        })
        .collect();
    let ev = request_event(
        &gw,
        "SELECT id, name, account_number FROM customers WHERE name <> $1",
    )
    .await;
    let request = recorded(&gw, &ev, "request");
    let execute = &request["parts"][0];
    assert_eq!(execute["kind"], "execute", "{request}");
    assert_eq!(
        execute["body"]["sql"],
        "SELECT id, name, account_number FROM customers WHERE name <> $1 ORDER BY id"
    );
    let params = execute["body"]["params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{request}");
    let param = params[0].as_str().unwrap();
    assert!(!param.contains(PLANTED) && !param.is_empty(), "{param}");
    assert!(execute["body"]["portal"].is_string(), "{request}");
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "columns")[0],
        &serde_json::json!([
            {"name": "id", "type_oid": 23},
            {"name": "name", "type_oid": 25},
            {"name": "account_number", "type_oid": 25},
        ]),
        "{answer}"
    );
    let kept: Vec<Value> = parts(&answer, "row").into_iter().cloned().collect();
    assert_eq!(kept, got, "{answer}");
    assert_eq!(parts(&answer, "complete"), [&Value::from("SELECT 2")]);

    // A row whose text carries the secret: masked for the client, so in the record.
    let note = c
        .query_one("SELECT note FROM notes WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    let note: &str = note.get(0);
    assert!(!note.contains(PLANTED), "{note}");
    let ev = request_event(&gw, "SELECT note FROM notes").await;
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "row"),
        [&serde_json::json!([note])],
        "{answer}"
    );

    // An unmasked prepared statement: its columns come from the client's own Describe,
    // its binary values are kept as the client decoded them.
    let found = c
        .query(
            "SELECT n, n::text AS t FROM numbers WHERE n < $1 ORDER BY n",
            &[&3i32],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let ev = request_event(&gw, "SELECT n, n::text AS t FROM numbers").await;
    let request = recorded(&gw, &ev, "request");
    assert_eq!(
        request["parts"][0]["body"]["params"],
        serde_json::json!([{"binary": "00000003"}]),
        "{request}"
    );
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "columns"),
        [&serde_json::json!([{"name": "n", "type_oid": 23}, {"name": "t", "type_oid": 25}])],
        "{answer}"
    );
    assert_eq!(
        parts(&answer, "row"),
        [
            &serde_json::json!(["1", "1"]),
            &serde_json::json!(["2", "2"])
        ],
        "{answer}"
    );

    // Ten rows, three kept: the record says what the cap dropped.
    let msgs = c
        .simple_query("SELECT n FROM numbers ORDER BY n")
        .await
        .unwrap();
    assert_eq!(rows(&msgs).len(), 10);
    let ev = request_event(&gw, "SELECT n FROM numbers ORDER BY n").await;
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "row"),
        [
            &serde_json::json!(["1"]),
            &serde_json::json!(["2"]),
            &serde_json::json!(["3"])
        ],
        "{answer}"
    );
    let truncated = answer["truncated"].as_array().unwrap();
    assert_eq!(truncated.len(), 1, "{answer}");
    assert_eq!(truncated[0]["unit"], "rows");
    assert_eq!(truncated[0]["kept"], 3);
    assert_eq!(truncated[0]["dropped"], 7);
    assert_eq!(parts(&answer, "complete"), [&Value::from("SELECT 10")]);

    // COPY TO STDOUT: its data kept like rows, under the same cap.
    let (ok, out, err) = psql(
        port,
        "pg-agent",
        &agent.key,
        "rec",
        &["-c", "COPY (SELECT n FROM numbers ORDER BY n) TO STDOUT"],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 10, "{out}");
    let ev = request_event(&gw, "COPY (SELECT n FROM numbers ORDER BY n) TO STDOUT").await;
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(
        parts(&answer, "row"),
        [
            &Value::from("1\n"),
            &Value::from("2\n"),
            &Value::from("3\n")
        ],
        "{answer}"
    );
    assert_eq!(answer["truncated"][0]["dropped"], 7, "{answer}");
    assert_eq!(parts(&answer, "complete"), [&Value::from("COPY 10")]);

    // A notice, and an error.
    c.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from a block'; END $$")
        .await
        .unwrap();
    let ev = request_event(&gw, "DO $").await;
    let answer = recorded(&gw, &ev, "answer");
    let notice = parts(&answer, "notice");
    assert_eq!(notice.len(), 1, "{answer}");
    assert_eq!(notice[0]["severity"], "NOTICE");
    assert_eq!(notice[0]["code"], "00000");
    assert_eq!(notice[0]["message"], "hello from a block");
    assert_eq!(parts(&answer, "complete"), [&Value::from("DO")]);
    let e = c
        .simple_query("SELECT n / 0 FROM numbers")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    let ev = request_event(&gw, "SELECT n / $1 FROM numbers").await;
    assert_eq!(ev["outcome"], "upstream_error", "{ev}");
    let answer = recorded(&gw, &ev, "answer");
    let error = parts(&answer, "error");
    assert_eq!(error.len(), 1, "{answer}");
    assert_eq!(error[0]["code"], "22012");
    assert_eq!(error[0]["message"], "division by zero");

    // Rows the gateway withholds (a masked bigint asked for in binary): the client's
    // error is the answer.
    let e = c
        .query("SELECT secret_score FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let ev = request_event(&gw, "SELECT secret_score FROM customers").await;
    assert_eq!(ev["outcome"], "denied", "{ev}");
    assert_eq!(recorded(&gw, &ev, "request")["parts"][0]["kind"], "execute");
    let answer = recorded(&gw, &ev, "answer");
    let error = parts(&answer, "error");
    assert_eq!(error.len(), 1, "{answer}");
    assert_eq!(error[0]["code"], "42501");
    assert_eq!(error[0]["message"], message(&e).as_str(), "{answer}");
    assert!(parts(&answer, "row").is_empty(), "{answer}");

    // A refusal is recorded by the guard, the request beside it.
    let e = c.simple_query("DELETE FROM numbers").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let ev = request_event(&gw, "DELETE FROM numbers").await;
    assert_eq!(
        recorded(&gw, &ev, "request")["parts"][0]["body"]["sql"],
        "DELETE FROM numbers"
    );
    assert_eq!(parts(&recorded(&gw, &ev, "answer"), "refusal").len(), 1);

    assert_nowhere_in(&gw, PLANTED);
}

#[tokio::test]
async fn without_record_results_rows_are_counted_not_kept() {
    let db = Db::new(&recorded_setup()).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, _, port) = recording_gateway(&db, &agent);
    let c = through(port, &agent, "pg-agent", "plain").await;
    let msgs = c
        .simple_query("SELECT id, name FROM customers ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows(&msgs).len(), 2);
    let found = c
        .query(
            "SELECT name, note FROM customers, notes WHERE customers.id = $1",
            &[&1i32],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    for needle in [
        "SELECT id, name FROM customers",
        "SELECT name, note FROM customers",
    ] {
        let ev = request_event(&gw, needle).await;
        let answer = recorded(&gw, &ev, "answer");
        assert!(parts(&answer, "row").is_empty(), "{answer}");
        assert!(!answer.to_string().contains("Ada Lovelace"), "{answer}");
        assert_eq!(parts(&answer, "columns").len(), 1, "{answer}");
        let complete = parts(&answer, "complete");
        assert_eq!(complete.len(), 1, "{answer}");
        assert_eq!(complete[0]["rows_kept"], false, "{answer}");
        assert!(complete[0]["tag"].as_str().unwrap().starts_with("SELECT "));
    }
    let ev = request_event(&gw, "SELECT id, name FROM customers").await;
    let complete = &parts(&recorded(&gw, &ev, "answer"), "complete")[0].clone();
    assert_eq!(complete["rows"], 2);
    assert_eq!(complete["tag"], "SELECT 2");
    assert_nowhere_in(&gw, PLANTED);
}

#[tokio::test]
async fn a_client_that_leaves_mid_result_is_recorded_as_gone() {
    let db = Db::new(&recorded_setup()).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port, _) = recording_gateway(&db, &agent);
    let mut s = raw_login(port, "pg-agent", &agent.key, "rec");
    let sql = "SELECT g, md5(g::text) FROM generate_series(1, 2000000) g";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    q.push(0);
    s.write_all(&q).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while got < 256 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed the connection");
        got += n;
    }
    drop(s);

    let ev = request_event(&gw, "generate_series").await;
    assert_eq!(ev["outcome"], "failed", "{ev}");
    let answer = recorded(&gw, &ev, "answer");
    assert_eq!(answer["caller_left"], true, "{answer}");
    assert_eq!(parts(&answer, "columns").len(), 1, "{answer}");
    let kept = parts(&answer, "row");
    assert_eq!(kept.len(), 3, "{answer}");
    // As the client was sent them: masked (the alias `g` renames a source, so under a mask
    // that names columns every column is masked whole).
    assert_eq!(kept[0].as_array().map(Vec::len), Some(2), "{answer}");
    assert!(parts(&answer, "complete").is_empty(), "{answer}");
    let truncated = answer["truncated"].as_array().unwrap();
    assert_eq!(truncated[0]["unit"], "rows", "{answer}");
    assert!(truncated[0]["dropped"].as_u64().unwrap() > 0, "{answer}");
}

// ---------------------------------------------------------------- configuration reload

/// A reload that takes reads away: a statement prepared before it is refused at its next
/// Execute rather than run on its old decision, and prepared again it is decided under the
/// new rules; a statement the new rules still allow goes on once prepared again.
#[tokio::test]
async fn a_statement_prepared_before_a_policy_reload_is_decided_again() {
    let db = Db::new(CUSTOMERS).await;
    let agent = api_key("pg-agent", "agent", &["agents"]);
    let (gw, port) = gateway(&db, "crm", &[&agent], &customer_rules("crm"));
    let c = through(port, &agent, "pg-agent", "crm").await;
    let read = c
        .prepare("SELECT name FROM customers WHERE id = $1")
        .await
        .unwrap();
    let update = c
        .prepare("UPDATE customers SET name = $1 WHERE id = $2")
        .await
        .unwrap();
    let row = c.query_one(&read, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, &str>("name"), "Ada Lovelace");

    let path = gw.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let without_reads = text.replace(
        r#"allow.statements = ["select", "insert", "transaction"]"#,
        r#"allow.statements = ["insert", "transaction"]"#,
    );
    assert_ne!(without_reads, text);
    std::fs::write(&path, without_reads).unwrap();
    gw.signal("HUP");
    let reloaded = wait_event(&gw, "config.reloaded", |e| e["type"] == "config.reloaded").await;
    assert_eq!(reloaded["outcome"], "info", "{reloaded}");

    let e = c.query_one(&read, &[&1i32]).await.unwrap_err();
    assert!(
        message(&e).contains("the policy changed since this statement was prepared"),
        "{e:?}"
    );
    let e = c
        .prepare("SELECT name FROM customers WHERE id = $1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // Updates are still allowed: prepared again, the statement runs.
    assert!(c.execute(&update, &[&"Ada", &1i32]).await.is_err());
    let update = c
        .prepare("UPDATE customers SET name = $1 WHERE id = $2")
        .await
        .unwrap();
    assert_eq!(c.execute(&update, &[&"Ada", &1i32]).await.unwrap(), 1);
    assert_eq!(db.count("name = 'Ada'").await, 1);
}
