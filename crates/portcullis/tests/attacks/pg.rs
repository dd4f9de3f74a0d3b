//! Attacks on the PostgreSQL adapter: functions that write under a read-only rule, functions
//! that expose other sessions, predicate oracles on masked columns, asynchronous messages
//! carrying unmasked values, detector-only masks defeated by transformations.

// ------------------------------------------------------- functions, notices (items 4, 10)
//
// Engineer C's block (issue 13 items 4, 10, 14b): functions judged by the server's catalog,
// privileged functions that show other sessions or the schema, asynchronous messages masked.

use std::process::{Command, Stdio};

use crate::common::*;
use crate::pg_support::*;

/// Customers, and functions an attacker would call through a read-only rule.
const FUNCTIONS_SETUP: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, account_number text);
INSERT INTO customers VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'DE89370400440532013000'),
    (2, 'Alan Turing', 'alan@example.org', 'GB29NWBK60161331926819');
CREATE FUNCTION bump() RETURNS int LANGUAGE plpgsql AS
    $$ BEGIN DELETE FROM customers WHERE id = 2; RETURN 1; END $$;
CREATE FUNCTION tell(who int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    SELECT email, account_number INTO r FROM customers WHERE id = who;
    RAISE NOTICE 'customer % has account %', r.email, r.account_number;
    RETURN who;
END $$;
CREATE SEQUENCE tickets;
CREATE VIEW mailing AS SELECT name, email FROM customers WHERE email LIKE '%.org';
";

const PII: &str = r#"
[masks.pii]
detectors = ["email"]
columns = ["account_number"]
style = "partial"
styles = { email = "redact" }
"#;

/// One identity that may only read customers (masked), and a rule refusing NOTIFY.
fn read_only_rules(target: &str) -> String {
    format!(
        r#"
[[rules]]
name = "agent reads customers"
who.subjects = ["reader"]
target = "{target}"
allow.statements = ["select"]
allow.tables = ["customers"]
mask = "pii"

[[rules]]
name = "no notifications"
target = "{target}"
deny.statements = ["notify"]
reason = "agents do not signal other sessions"
{PII}"#
    )
}

async fn remaining_customers(db: &Db) -> i64 {
    db.as_super()
        .await
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_user_defined_function_that_deletes_does_not_run_under_a_select_only_rule() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;

    // Twice, and in another shape with inlined values: a cached classification must not
    // skip the catalog check.
    for sql in [
        "select bump() from customers",
        "select bump() from customers",
        "select bump() from customers where id = 1",
        "select bump() from customers where id = 2",
        "select public.bump() from customers",
        "select * from customers where id = bump()",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        let m = message(&e);
        assert!(
            m.contains("bump") && m.contains("user-defined"),
            "{sql}: {m}"
        );
    }
    assert_eq!(remaining_customers(&db).await, 2, "bump() ran");

    // A volatile built-in that writes (a sequence) needs naming too; built-ins that only
    // compute, and harmless volatile ones, still pass.
    let e = client
        .simple_query("select nextval('tickets') from customers")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("volatile"), "{}", message(&e));
    client
        .simple_query("select lower(name), random(), now(), count(*) over () from customers")
        .await
        .unwrap();
    client
        .query("select upper(name) from customers where id = $1", &[&1i32])
        .await
        .unwrap();
    // The extended protocol is checked the same way.
    let e = client.prepare("select bump()").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert_eq!(remaining_customers(&db).await, 2, "bump() ran");
}

#[tokio::test]
async fn a_function_runs_only_when_a_rule_names_it() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let ops = api_key("ops", "agent", &[]);
    let rules = r#"
[[rules]]
name = "ops may bump"
who.subjects = ["ops"]
target = "crm"
allow.statements = ["select"]
allow.tables = ["customers"]
allow.functions = ["bump"]
"#;
    let (_gw, port) = db.gateway("crm", &[&ops], rules);
    let client = through(port, &ops, "ops", "crm").await;
    client
        .simple_query("select bump() from customers where id = 1")
        .await
        .unwrap();
    assert_eq!(remaining_customers(&db).await, 1);
    // A function the catalog does not know (temporary, created in this transaction, or a
    // typo): the gateway cannot tell what it does, so it is refused.
    let e = client
        .simple_query("select public.unknown_fn() from customers")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(message(&e).contains("not found"), "{}", message(&e));
}

#[tokio::test]
async fn pg_notify_is_decided_as_notify() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;
    let e = client.simple_query("NOTIFY jobs, 'x'").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    for sql in [
        "select pg_notify('jobs', 'x')",
        "select pg_catalog.pg_notify('jobs', name) from customers",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(
            message(&e).contains("no notifications"),
            "{sql}: {}",
            message(&e)
        );
    }
    // current_setting reads what SHOW reads, custom secrets included.
    let e = client
        .simple_query("select current_setting('app.jwt_secret', true)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
}

#[tokio::test]
async fn pg_stat_get_activity_does_not_show_other_sessions_statements() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    // A gateway role that monitors the server (pg_monitor, pg_read_all_stats) is common.
    db.as_super()
        .await
        .batch_execute(&format!("GRANT pg_read_all_stats TO {}", db.role))
        .await
        .unwrap();
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;
    // Another session's statement, with a literal in it, is running.
    let other = db.as_super().await;
    let running = tokio::spawn(async move {
        other
            .simple_query("select 'hunter2-secret' as pw, pg_sleep(3)")
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for sql in [
        "select query from pg_stat_get_activity(null)",
        "select pg_stat_get_backend_activity(s) from pg_stat_get_backend_idset() s",
        "select * from pg_catalog.pg_stat_get_activity(null::int)",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(message(&e).contains("privileged"), "{sql}: {}", message(&e));
    }
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreadable_function_catalog_refuses_statements_that_call_functions() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    // The gateway's role loses the right to read pg_proc (in this database only).
    db.as_super()
        .await
        .batch_execute("REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC")
        .await
        .unwrap();
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;
    let e = client
        .simple_query("select lower(name) from customers")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "58000", "{e:?}");
    assert!(
        message(&e).contains("function catalog could not be read"),
        "{}",
        message(&e)
    );
    // Statements without functions need no look-up.
    client
        .simple_query("select id from customers")
        .await
        .unwrap();
}

/// psql through the gateway; (success, stdout, stderr).
fn psql_through(port: u16, user: &str, key: &str, db: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", user, "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", key)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn raise_notice_from_a_function_is_masked_like_rows() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let detectors_only = api_key("scanner", "agent", &[]);
    let rules = r#"
[[rules]]
name = "reader may call tell, masked"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select"]
allow.tables = ["customers"]
allow.functions = ["tell"]
mask = "pii"

[[rules]]
name = "scanner may call tell, detectors only"
who.subjects = ["scanner"]
target = "crm"
allow.statements = ["select"]
allow.functions = ["tell"]
mask = "emails"

[masks.emails]
detectors = ["email"]
"#;
    let (_gw, port) = db.gateway("crm", &[&reader, &detectors_only], &format!("{rules}{PII}"));
    let (ok, out, err) = psql_through(port, "reader", &reader.key, "crm", "select tell(1)");
    assert!(ok, "{err}");
    assert!(
        err.contains("NOTICE"),
        "the notice should still arrive: {err}"
    );
    assert!(!err.contains("ada@example.com"), "{err}");
    assert!(!err.contains("DE8937040044"), "{err}");
    assert_eq!(out.trim(), "1");
    // Under a profile of detectors only, what they find is masked and the rest stays.
    let (ok, _, err) = psql_through(
        port,
        "scanner",
        &detectors_only.key,
        "crm",
        "select tell(2)",
    );
    assert!(ok, "{err}");
    assert!(err.contains("customer [EMAIL] has account"), "{err}");
    assert!(!err.contains("alan@example.org"), "{err}");
}

#[tokio::test]
async fn schema_definitions_are_refused_to_an_identity_that_reads_one_table() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;
    for sql in [
        "select pg_get_functiondef('bump'::regproc)",
        "select pg_get_viewdef('mailing'::regclass)",
        "select pg_catalog.pg_get_viewdef('mailing', true)",
        "select pg_get_function_arguments('tell'::regproc)",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(message(&e).contains("privileged"), "{sql}: {}", message(&e));
    }
}

#[tokio::test]
async fn notification_payloads_are_masked_for_a_masked_listener() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let rules = r#"
[[rules]]
name = "reader listens, masked"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select", "listen"]
allow.tables = ["customers"]
mask = "emails"

[masks.emails]
detectors = ["email"]
"#;
    let (_gw, port) = db.gateway("crm", &[&reader], rules);
    let (listener, mut connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user=reader password={} dbname=crm",
            reader.key
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    // Another session (here the server's superuser) sends what it read.
    db.as_super()
        .await
        .batch_execute("NOTIFY jobs, 'row 1: ada@example.com'")
        .await
        .unwrap();
    let payload = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("no notification arrived")
        .unwrap();
    assert_eq!(payload, "row 1: [EMAIL]");
}

// ------------------------------------------------ masked json and arrays stay valid (14b)

/// A value's bytes as the server sent them, whatever its type (binary format).
struct RawValue(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawValue {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

#[tokio::test]
async fn masked_json_and_array_columns_stay_valid_values_of_their_type() {
    let db = Db::new(
        "CREATE TABLE profiles (id int, prefs jsonb, extra json, tags text[], codes int[]);
         INSERT INTO profiles VALUES (1, '{\"iban\": \"DE89370400440532013000\"}',
             '{\"pin\": 4711}', '{ada@example.com,vip}', '{4711,42}');",
    )
    .await;
    let reader = api_key("reader", "agent", &[]);
    let rules = r#"
[[rules]]
name = "reader reads profiles, masked"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select"]
allow.tables = ["profiles"]
mask = "profile"

[masks.profile]
detectors = ["email"]
columns = ["prefs", "extra", "tags", "codes"]
"#;
    let (_gw, port) = db.gateway("crm", &[&reader], rules);
    let client = through(port, &reader, "reader", "crm").await;

    // Text format (simple protocol): JSON columns hold a JSON value, arrays are NULL.
    let rows = client
        .simple_query("select prefs, extra, tags, codes from profiles")
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    for column in ["prefs", "extra"] {
        let text = row.get(column).expect("masked, not NULL");
        let value: serde_json::Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{column} is not JSON: {text:?}: {e}"));
        assert!(value.is_string(), "{column}: {value}");
        assert!(
            !text.contains("DE8937040044") && !text.contains("4711"),
            "{text}"
        );
    }
    assert_eq!(row.get("tags"), None);
    assert_eq!(row.get("codes"), None);

    // Binary format (tokio-postgres asks for it): the same values, decodable.
    let row = client
        .query_one(
            "select prefs, extra, tags, codes from profiles where id = $1",
            &[&1i32],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let prefs: RawValue = row.get("prefs");
    assert_eq!(prefs.0.first(), Some(&1), "jsonb's version byte");
    let value: serde_json::Value = serde_json::from_slice(&prefs.0[1..]).unwrap();
    assert!(value.is_string(), "{value}");
    let extra: RawValue = row.get("extra");
    let value: serde_json::Value = serde_json::from_slice(&extra.0).unwrap();
    assert!(value.is_string(), "{value}");
    let tags: Option<Vec<String>> = row.get("tags");
    assert_eq!(tags, None);
    let codes: Option<Vec<i32>> = row.get("codes");
    assert_eq!(codes, None);
}

#[tokio::test]
async fn a_function_created_in_an_open_transaction_cannot_shadow_a_built_in() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let dev = api_key("dev", "agent", &[]);
    // May change the schema and read, never delete.
    let rules = r#"
[[rules]]
name = "dev builds and reads"
who.subjects = ["dev"]
target = "crm"
allow.statements = ["select", "ddl", "transaction"]

[[rules]]
name = "no deletes"
target = "crm"
deny.statements = ["delete"]
"#;
    let (_gw, port) = db.gateway("crm", &[&dev], rules);
    let client = through(port, &dev, "dev", "crm").await;
    client
        .simple_query("select lower(name) from customers")
        .await
        .unwrap();
    // An overload of lower() that deletes, uncommitted: the gateway's catalog connection
    // cannot see it, and lower(1) would pick it.
    client
        .batch_execute(
            "BEGIN; CREATE FUNCTION public.lower(int) RETURNS int LANGUAGE sql AS
             'DELETE FROM customers RETURNING 1';",
        )
        .await
        .unwrap();
    let e = client.simple_query("select lower(1)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    assert!(
        message(&e).contains("changed the schema"),
        "{}",
        message(&e)
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    // Qualified with pg_catalog, a built-in is still callable in such a session.
    client
        .simple_query("select pg_catalog.lower(name) from customers")
        .await
        .unwrap();
    assert_eq!(remaining_customers(&db).await, 2);
}

#[tokio::test]
async fn detectors_keep_a_json_column_valid_json() {
    // A card number stored as a JSON number: masked as text it became `[CREDIT_CARD]`
    // unquoted, which no JSON decoder reads.
    let db = Db::new(
        "CREATE TABLE orders (id int, payment jsonb, note json);
         INSERT INTO orders VALUES (1, '{\"card\": 4111111111111111, \"by\": \"ada@example.com\"}',
             '{\"card\": 4111111111111111}');",
    )
    .await;
    let reader = api_key("reader", "agent", &[]);
    let rules = r#"
[[rules]]
name = "reader reads orders, scanned"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select"]
allow.tables = ["orders"]
mask = "cards"

[masks.cards]
detectors = ["email", "credit_card"]
"#;
    let (_gw, port) = db.gateway("crm", &[&reader], rules);
    let client = through(port, &reader, "reader", "crm").await;
    let rows = client
        .simple_query("select payment, note from orders")
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    for column in ["payment", "note"] {
        let text = row.get(column).unwrap();
        let value: serde_json::Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{column} is not JSON: {text:?}: {e}"));
        assert!(!text.contains("4111111111111111"), "{text}");
        assert!(value["card"].is_string(), "{column}: {value}");
    }
    // Binary jsonb (tokio-postgres asks for it): version byte, then JSON.
    let row = client
        .query_one("select payment from orders where id = $1", &[&1i32])
        .await
        .unwrap();
    let payment: RawValue = row.get("payment");
    assert_eq!(payment.0.first(), Some(&1));
    let value: serde_json::Value = serde_json::from_slice(&payment.0[1..]).unwrap();
    assert!(
        value["card"].is_string() && value["by"].is_string(),
        "{value}"
    );
    assert!(!value.to_string().contains("ada@example.com"), "{value}");
}
