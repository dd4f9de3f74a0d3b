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

/// The functions database behind a gateway, and a client of an identity that may only read
/// `customers` (`read_only_rules`); the database and the gateway live as long as the test
/// keeps them.
async fn reader_of_functions_db() -> (Db, Gateway, tokio_postgres::Client) {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (gw, port) = db.gateway("crm", &[&reader], &read_only_rules("crm"));
    let client = through(port, &reader, "reader", "crm").await;
    (db, gw, client)
}

#[tokio::test]
async fn a_user_defined_function_that_deletes_does_not_run_under_a_select_only_rule() {
    let (db, _gw, client) = reader_of_functions_db().await;

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
    let (_db, _gw, client) = reader_of_functions_db().await;
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
    let (_db, _gw, client) = reader_of_functions_db().await;
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

/// Found while closing the cursor leak: the check that stops a write under a masking rule
/// from copying a masked column covered INSERT, UPDATE and MERGE, not DDL. A rule that lets
/// an agent create tables could copy account numbers into a table (or a view) no mask
/// names, and read them back in clear.
#[tokio::test]
async fn a_masked_column_copied_by_create_table_as_or_a_view_is_refused() {
    let db = Db::new(FUNCTIONS_SETUP).await;
    let builder = api_key("builder", "agent", &[]);
    let rules = format!(
        r#"
[[rules]]
name = "agent builds reports, masked"
who.subjects = ["builder"]
target = "crm"
allow.statements = ["select", "ddl"]
allow.tables = ["customers", "report_*"]
mask = "pii"
{PII}"#
    );
    let (_gw, port) = db.gateway("crm", &[&builder], &rules);
    let client = through(port, &builder, "builder", "crm").await;
    for sql in [
        "create table report_copy as select id, account_number from customers",
        "create table report_rev as select reverse(account_number) as a from customers",
        "create view report_view as select id, account_number from customers",
        "create materialized view report_mat as select account_number from customers",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(
            message(&e).contains("account_number") && message(&e).contains("copy"),
            "{sql}: {}",
            message(&e)
        );
    }
    // Nothing was created: the refused statements never reached the server.
    let created: i64 = db
        .as_super()
        .await
        .query_one(
            "select count(*) from pg_class where relname like 'report_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0);
    // A report that copies no masked column is still allowed.
    client
        .simple_query("create table report_names as select id, name from customers")
        .await
        .unwrap();
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

/// Issue 13 items 9 and 13: masked columns read by inference (predicates, ordering,
/// grouping...) and detector-only masks defeated by transformations. Helpers and tests of
/// these items stay in this block.
mod masked_columns {
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tokio_postgres::{Client, SimpleQueryMessage};

    use crate::common::{Gateway, Key, api_key};
    use crate::pg_support::{Db, connect};

    /// A gateway with one postgres target `db` in front of `database`; returns it and the
    /// target's port.
    fn start(database: &Db, keys: &[&Key], rest: &str) -> (Gateway, u16) {
        database.gateway("db", keys, rest)
    }

    async fn through(port: u16, key: &Key, user: &str) -> Client {
        crate::pg_support::through(port, key, user, "db").await
    }

    fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
        msgs.iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// Polls the audit log (10 s at most) for an event matching `pred`.
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

    // ------------------------------------------------------------ item 9

    const ACCOUNT: &str = "ACCT-000123-XYZ";

    const CUSTOMERS: &str = "
        CREATE TABLE customers (id int PRIMARY KEY, name text, email text, account_number text);
        INSERT INTO customers VALUES
            (1, 'Ada Lovelace', 'ada@example.com', 'ACCT-000123-XYZ'),
            (2, 'Alan Turing', 'alan@example.org', 'ACCT-000456-QRS');
    ";

    /// `agent` reads and corrects customers with account numbers masked; `analyst` has the
    /// same rule with `filter_masked = true`.
    fn oracle_rules() -> String {
        r#"
[masks.accounts]
detectors = ["email"]
columns = ["account_number"]

[[rules]]
name = "agents read customers masked"
who.subjects = ["agent"]
target = "db"
allow.statements = ["select", "update", "delete"]
allow.tables = ["customers"]
mask = "accounts"

[[rules]]
name = "analysts filter on masked columns"
who.subjects = ["analyst"]
target = "db"
allow.statements = ["select"]
allow.tables = ["customers"]
mask = "accounts"
filter_masked = true
"#
        .to_string()
    }

    /// The attack of the issue: one question per statement about one character of the
    /// masked value, answered by whether row 1 comes back. Returns what it recovered.
    async fn recover_by_oracle(c: &Client, query: impl Fn(usize, char) -> String) -> String {
        let alphabet: Vec<char> = ('A'..='Z').chain('0'..='9').chain(['-']).collect();
        let mut recovered = String::new();
        for position in 1..=ACCOUNT.len() {
            let mut found = None;
            for &ch in &alphabet {
                match c.simple_query(&query(position, ch)).await {
                    Ok(msgs) if !rows(&msgs).is_empty() => {
                        found = Some(ch);
                        break;
                    }
                    _ => {}
                }
            }
            match found {
                Some(ch) => recovered.push(ch),
                None => break,
            }
        }
        recovered
    }

    #[tokio::test]
    async fn predicate_oracle_on_a_masked_column_is_refused() {
        let db = Db::new(CUSTOMERS).await;
        let agent = api_key("agent", "agent", &[]);
        let analyst = api_key("analyst", "agent", &[]);
        let (gw, port) = start(&db, &[&agent, &analyst], &oracle_rules());
        let c = through(port, &agent, "agent").await;

        // The column itself comes back masked; other columns filter freely.
        let plain = rows(
            &c.simple_query(
                "SELECT id, name, account_number FROM customers WHERE name LIKE 'Ada%' ORDER BY id",
            )
            .await
            .unwrap(),
        );
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0][1].as_deref(), Some("Ada Lovelace"));
        assert!(
            !plain[0][2].as_deref().unwrap().contains("000123"),
            "{plain:?}"
        );

        // The attack as filed: character by character through WHERE.
        let recovered = recover_by_oracle(&c, |n, ch| {
            format!(
                "select id from customers where id = 1 and substr(account_number, {n}, 1) = '{ch}'"
            )
        })
        .await;
        assert_eq!(
            recovered, "",
            "the masked value was read through a predicate"
        );

        // Every spelling and every place a predicate can hide in.
        let attacks = [
            "select id from customers where id = 1 and substr(account_number, 1, 1) = 'A'",
            "select c.id from customers c where c.account_number like 'ACCT-0001%'",
            "select id from customers where \"account_number\" like 'ACCT%'",
            "select id from public.customers where public.customers.account_number like 'A%'",
            "select c.id from customers c join customers d on d.id = c.id and d.account_number like 'A%'",
            "select c.id from customers c join (select 'ACCT-000123-XYZ'::text as account_number) p using (account_number)",
            "select c.id from customers c natural join (select 'ACCT-000123-XYZ'::text as account_number) p",
            "select id from customers order by account_number limit 1",
            "select id, account_number from customers order by 2 limit 1",
            "select count(*) from customers group by account_number",
            "select count(*) from customers group by id having max(account_number) like 'A%'",
            "select id, row_number() over (order by account_number) from customers",
            "select id, rank() over w from customers window w as (order by account_number)",
            "select id from customers limit (select count(*) from customers where account_number like 'A%')",
            "select id from customers c where exists (select 1 from customers d where d.id = c.id and d.account_number like 'A%')",
            "select id from customers where id in (select id from customers where account_number like 'A%')",
            "with x as (select id, account_number as a from customers) select id from x where a like 'A%'",
            "with x(i, a) as (select id, account_number from customers) select i from x where a like 'A%'",
            "select id from (select id, account_number as a from customers) s where a like 'A%'",
            "select id from (select id, upper(account_number) from customers) s where upper like 'A%'",
            "select id from (select id, account_number || '' from customers) s where \"?column?\" like 'A%'",
            "select i from customers as c(i, n, e, a) where a like 'A%'",
            "select id from customers c where c::text like '%000123%'",
            "select id from customers c where (c.*)::text like '%000123%'",
            "select id from customers c where account_number(c) like 'A%'",
            "select id from customers c where (c).account_number like 'A%'",
            "select id, case when account_number like 'A%' then 1 else 0 end from customers",
            "select count(*) filter (where account_number like 'A%') from customers",
            "select string_agg(name, ',' order by account_number) from customers",
            "select distinct on (account_number) id from customers",
            // Row counts: set-returning functions and merged duplicates answer too.
            "select id, generate_series(1, ascii(substr(account_number, 1, 1))) from customers where id = 1",
            "select c.id from customers c, generate_series(1, length(c.account_number)) g",
            "select id, regexp_matches(account_number, '0', 'g') from customers",
            "select substr(account_number, 1, 1) from customers where id = 1 union select 'A'",
            "select account_number from customers intersect select 'ACCT-000123-XYZ'",
            "select distinct substr(account_number, 1, 1) from customers",
            "select count(distinct account_number) from customers",
            "update customers set name = name where account_number like 'ACCT-0001%'",
            "delete from customers where account_number like 'ZZZ%'",
        ];
        for sql in attacks {
            let e = c
                .simple_query(sql)
                .await
                .expect_err(&format!("not refused: {sql}"));
            assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e:?}");
            let message = e.as_db_error().unwrap().message();
            // `account_number(c)` is functional notation for a column, but it is written as a
            // call: the function catalog finds no such function and refuses it first.
            let refused_as_unknown_function = sql.contains("account_number(c)")
                && message.contains("not found in the server's catalog");
            assert!(
                refused_as_unknown_function
                    || (message.contains("agents read customers masked")
                        && message.contains("filter_masked")),
                "{sql}: {message}"
            );
        }
        // The filed spelling names the column.
        let e = c
            .simple_query("select id from customers where substr(account_number, 1, 1) = 'A'")
            .await
            .unwrap_err();
        assert!(
            e.as_db_error()
                .unwrap()
                .message()
                .contains("column \"account_number\"")
        );
        // The extended protocol (a driver's prepared statement) is decided the same way.
        let e = c
            .query(
                "select id from customers where id = $1 and substr(account_number, $2, 1) = $3",
                &[&1i32, &1i32, &"A"],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
        // Nothing was changed or deleted on the way.
        let still = rows(
            &c.simple_query("select count(*) from customers")
                .await
                .unwrap(),
        );
        assert_eq!(still[0][0].as_deref(), Some("2"));

        // The refusal is on the record, without the literal.
        let ev = wait_event(&gw, "refused predicate", |e| {
            e["outcome"] == "denied"
                && e["statement"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("substr(account_number"))
        })
        .await;
        assert_eq!(ev["rule"], "agents read customers masked");

        // A rule that opts out gets the inference risk it asked for.
        let a = through(port, &analyst, "analyst").await;
        let recovered = recover_by_oracle(&a, |n, ch| {
            format!(
                "select id from customers where id = 1 and substr(account_number, {n}, 1) = '{ch}'"
            )
        })
        .await;
        assert_eq!(recovered, ACCOUNT, "filter_masked = true allows filtering");
    }

    // ------------------------------------------------------------ item 13

    const PEOPLE: &str = "
        CREATE TABLE people (id int PRIMARY KEY, name text, contact text, card text);
        INSERT INTO people VALUES
            (1, 'Ada Lovelace', 'ada.lovelace@example.com', '4111 1111 1111 1111'),
            (2, 'Alan Turing', 'alan.turing@example.org', '5500 0000 0000 0004');
    ";

    /// A detector-only profile (no `columns`) that discovers.
    fn discovery_rules() -> String {
        r#"
[masks.found]
detectors = ["email", "credit_card"]
discover = true

[[rules]]
name = "agents read people"
who.subjects = ["agent"]
target = "db"
allow.statements = ["select"]
allow.tables = ["people", "ghost"]
mask = "found"
"#
        .to_string()
    }

    /// Every form of the secret values a transformation can return them in.
    fn leaked_forms() -> Vec<String> {
        use base64::Engine;
        let mut forms = Vec::new();
        for v in ["ada.lovelace@example.com", "4111 1111 1111 1111"] {
            forms.push(v.to_string());
            forms.push(v.chars().rev().collect());
            forms.push(base64::engine::general_purpose::STANDARD.encode(v));
            forms.push(v.bytes().map(|b| format!("{b:02x}")).collect());
            forms.push(v.replace('@', "#"));
        }
        forms.push("ada.lovelace".into());
        forms.push("example.com".into());
        forms.push("4111 1111".into());
        forms
    }

    #[tokio::test]
    async fn detector_only_mask_defeated_by_transformations_is_closed_by_column_discovery() {
        let db = Db::new(PEOPLE).await;
        let agent = api_key("agent", "agent", &[]);
        let (mut gw, port) = start(&db, &[&agent], &discovery_rules());
        let c = through(port, &agent, "agent").await;
        let variants = [
            "select contact from people",
            "select contact::bytea from people",
            "select encode(contact::bytea, 'base64') from people",
            "select encode(contact::bytea, 'hex') from people",
            "select encode(convert_to(contact, 'UTF8'), 'base64') as x from people",
            "select reverse(contact) from people",
            "select translate(contact, '@', '#') from people",
            "select substr(contact, 1, 12) as a, substr(contact, 13) as b from people",
            "select left(contact, 5), right(contact, 12) from people",
            "select split_part(contact, '@', 1), split_part(contact, '@', 2) from people",
            "select replace(contact, '.', ' ') from people",
            "select upper(contact) from people",
            "select md5(contact), contact || '' from people",
            "select string_agg(contact, ',') from people",
            "select array_agg(contact)::text from people",
            "select row_to_json(p)::text from people p",
            "select p::text from people p",
            "select to_jsonb(p.*) from people p",
            "select x from people, lateral (values (reverse(contact))) v(x)",
            "select reverse(card), replace(card, ' ', '') from people",
            "select encode(card::bytea, 'base64') from people",
        ];
        let forms = leaked_forms();
        for sql in variants {
            let msgs = c
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let got = rows(&msgs);
            assert!(!got.is_empty(), "{sql}: no rows");
            let text = format!("{got:?}");
            for form in &forms {
                assert!(
                    !text.contains(form.as_str()),
                    "{sql} leaked {form:?}: {text}"
                );
            }
        }
        // Columns nobody flagged come back as they are.
        let names = rows(
            &c.simple_query("select name from people order by id")
                .await
                .unwrap(),
        );
        assert_eq!(names[0][0].as_deref(), Some("Ada Lovelace"));
        // A tagged column is a masked column: item 9's refusal applies to it.
        let e = c
            .simple_query("select id from people where contact like 'ada%'")
            .await
            .unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
        assert!(e.as_db_error().unwrap().message().contains("\"contact\""));

        // One discovery per table, recorded with names and counts, never values.
        let ev = wait_event(&gw, "columns.discovered", |e| {
            e["type"] == "columns.discovered" && e["resource"] == "people"
        })
        .await;
        let detail = ev["detail"].as_str().unwrap();
        assert!(
            detail.contains("contact") && detail.contains("card"),
            "{ev}"
        );
        assert!(!detail.contains("name,") && !detail.contains(" id"), "{ev}");
        let recorded = ev.to_string();
        assert!(
            !recorded.contains("ada.lovelace") && !recorded.contains("4111"),
            "{ev}"
        );
        let n = gw
            .events()
            .iter()
            .filter(|e| e["type"] == "columns.discovered" && e["resource"] == "people")
            .count();
        assert_eq!(n, 1, "sampled once");

        // Tags are kept in the data directory and survive a restart: no new sample, and the
        // transformations stay masked.
        let kept = std::fs::read_to_string(gw.data_dir().join("discovery/db.json")).unwrap();
        assert!(
            kept.contains("contact") && !kept.contains("ada.lovelace"),
            "{kept}"
        );
        drop(c);
        gw.restart();
        let deadline = Instant::now() + Duration::from_secs(15);
        let c = loop {
            match connect(&format!(
                "host=127.0.0.1 port={port} user=agent password={} dbname=db connect_timeout=10",
                agent.key
            ))
            .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let got = rows(
            &c.simple_query("select reverse(contact), encode(card::bytea, 'hex') from people")
                .await
                .unwrap(),
        );
        let text = format!("{got:?}");
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "after restart leaked {form:?}: {text}"
            );
        }
        let n = gw
            .events()
            .iter()
            .filter(|e| e["type"] == "columns.discovered" && e["resource"] == "people")
            .count();
        assert_eq!(n, 1, "tags survive the restart: no second sample");

        // Fail closed: a table whose sample fails (here: it does not exist) is not queried
        // with a mask that does not know its columns.
        let e = c.simple_query("select * from ghost").await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("58000"), "{e:?}");
    }
}

// ------------------------------------------------------- re-check of issue 13 (P1-P3)

/// Customers with an account number a mask names, read through SQL-level cursors and
/// prepared statements.
const RECHECK_SETUP: &str = "
CREATE TABLE customers (id int PRIMARY KEY, name text, account_number text);
INSERT INTO customers VALUES (1, 'Ada Lovelace', 'DE89370400440532013000');
";

/// `reader` may read customers (account numbers masked) through cursors and SQL-level
/// prepared statements.
const RECHECK_RULES: &str = r#"
[[rules]]
name = "reader uses cursors, masked"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select", "cursor", "transaction", "prepare", "execute"]
allow.tables = ["customers"]
mask = "accounts"

[masks.accounts]
detectors = ["email"]
columns = ["account_number"]
"#;

/// Every value of a simple query's rows, joined: what the caller got to see.
fn everything_returned(msgs: &[tokio_postgres::SimpleQueryMessage]) -> String {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_masked_column_read_through_a_sql_cursor_or_prepare_is_refused() {
    let db = Db::new(RECHECK_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);
    let client = through(port, &reader, "reader", "crm").await;
    let account = "DE89370400440532013000";
    let reversed: String = account.chars().rev().collect();

    // FETCH and EXECUTE return the rows of a query whose text they do not carry: the
    // gateway could not tell that `x` holds the account number.
    for sql in [
        "begin; declare c cursor for select id, reverse(account_number) as x from customers; fetch all from c; commit;",
        "begin; declare c cursor for select id, substr(account_number, 1, 8) as y from customers; fetch all from c; commit;",
        "begin; declare c cursor for select * from customers as t(a, b, c); fetch all from c; commit;",
        "begin; declare c cursor for select row_to_json(t) from customers t; fetch all from c; commit;",
        "begin; declare c cursor for select account_number from customers; fetch all from c; commit;",
        "prepare p as select id, reverse(account_number) as x from customers; execute p;",
    ] {
        match client.simple_query(sql).await {
            Ok(msgs) => {
                let got = everything_returned(&msgs);
                panic!("{sql} was not refused; it returned {got:?}");
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
                let m = message(&e);
                assert!(
                    m.contains("column \"account_number\"")
                        || m.contains("a whole row")
                        || m.contains("columns it renames"),
                    "{sql}: {m}"
                );
                assert!(m.contains("reader uses cursors, masked"), "{sql}: {m}");
                assert!(m.contains("FETCH"), "{sql}: says why: {m}");
            }
        }
        // Nothing of the refused message ran: no transaction is left open.
        client.simple_query("rollback").await.unwrap();
    }
    // The same through the extended protocol (a DECLARE parsed as a prepared statement).
    client.simple_query("begin").await.unwrap();
    let e = client
        .prepare("declare c2 cursor for select reverse(account_number) from customers")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    client.simple_query("rollback").await.unwrap();

    // Under a masking rule every cursor and SQL prepared statement is refused (a FETCH may
    // be allowed by another rule, without the mask), its message saying why.
    for sql in [
        "begin; declare ok cursor for select id, upper(name) as n from customers; fetch all from ok; commit;",
        "prepare fine as select id, name from customers; execute fine;",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
        assert!(
            message(&e).contains("reads rows that rule"),
            "{}",
            message(&e)
        );
        client.simple_query("rollback").await.unwrap();
    }
    // And a plain SELECT of the same expression is masked, as before.
    let msgs = client
        .simple_query("select id, reverse(account_number) as x from customers")
        .await
        .unwrap();
    let got = everything_returned(&msgs);
    assert!(!got.contains(&reversed) && !got.contains(account), "{got}");
}

#[tokio::test]
async fn a_literal_in_an_unparseable_statement_stays_out_of_the_audit_log() {
    let db = Db::new(RECHECK_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);
    let client = through(port, &reader, "reader", "crm").await;

    let secrets = ["ada@example.com", "AKIAIOSFODNN7EXAMPLE"];
    let e = client
        .simple_query("select 1 'ada@example.com'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42601", "{e:?}");
    // The same through the extended protocol, and a literal the lexer cannot end.
    let e2 = client
        .prepare("select 2 'AKIAIOSFODNN7EXAMPLE'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e2), "42601", "{e2:?}");
    let e3 = client
        .simple_query("select 'ada@example.com")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e3), "42601", "{e3:?}");
    for e in [&e, &e2, &e3] {
        let m = message(e);
        assert!(m.contains("does not parse"), "{m}");
        for s in secrets {
            assert!(!m.contains(s), "the refusal echoes {s}: {m}");
        }
    }

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let rejected = loop {
        let rejected: Vec<_> = gw
            .events()
            .into_iter()
            .filter(|e| e["outcome"] == "rejected" && e["rule"] == "unparseable")
            .collect();
        if rejected.len() >= 3 || std::time::Instant::now() > deadline {
            break rejected;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(rejected.len(), 3, "{rejected:#?}");
    for ev in &rejected {
        let text = ev.to_string();
        assert!(text.contains("does not parse"), "{text}");
        for s in secrets {
            assert!(!text.contains(s), "the audit event holds {s}: {text}");
        }
    }
}

#[tokio::test]
async fn an_unauthenticated_client_does_not_learn_the_served_database() {
    let db = Db::new("").await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);

    for password in ["wrong", "pcx_testreaderAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB"] {
        let e = connect(&format!(
            "host=127.0.0.1 port={port} user=reader password={password} dbname=nosuch connect_timeout=10"
        ))
        .await
        .map(|_| ())
        .unwrap_err();
        let m = message(&e);
        assert_eq!(sqlstate(&e), "28P01", "authentication comes first: {m}");
        assert!(!m.contains(&db.name), "names the database: {m}");
        assert!(!m.contains("crm"), "names the target: {m}");
    }
    // psql, as the finding reported it.
    let (ok, _, err) = psql_through(port, "reader", "wrong", "nosuch", "select 1");
    assert!(!ok);
    assert!(
        !err.contains(&db.name) && !err.contains("crm"),
        "psql learns the served names: {err}"
    );
    // Authenticated, the caller is told which database this listener serves.
    let e = connect(&format!(
        "host=127.0.0.1 port={port} user=reader password={} dbname=nosuch connect_timeout=10",
        reader.key
    ))
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(sqlstate(&e), "3D000", "{e:?}");
    assert!(message(&e).contains("crm"), "{}", message(&e));
    through(port, &reader, "reader", "crm").await;
}

#[tokio::test]
async fn a_masked_column_under_another_branchs_name_in_a_union_is_masked() {
    let db = Db::new(RECHECK_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);
    let client = through(port, &reader, "reader", "crm").await;
    // A UNION's columns take the first branch's names: `*` of the second branch puts the
    // account number under the name `y`, which no mask names.
    for sql in [
        "select 0 as i, 'x' as n, 'y' as y union all select * from customers",
        "select 0, 'x', 'y' union all select * from customers",
        "select 0, 'x', 'y' union all select c.* from customers c",
    ] {
        let msgs = client.simple_query(sql).await.unwrap();
        let got = everything_returned(&msgs);
        assert_eq!(got.lines().count(), 2, "{sql}: {got}");
        assert!(!got.contains("DE89370400440532013000"), "{sql}: {got}");
    }
}

#[tokio::test]
async fn a_cursor_declared_under_a_mask_is_not_fetched_under_another_rule() {
    let db = Db::new(&format!(
        "{RECHECK_SETUP} CREATE TABLE products (id int, title text); INSERT INTO products VALUES (1, 'lamp');"
    ))
    .await;
    let reader = api_key("reader", "agent", &[]);
    // A rule for another table comes first: FETCH and SQL EXECUTE name no table, so it is
    // the one that allows them, without a mask.
    let rules = format!(
        r#"
[[rules]]
name = "reader browses products"
who.subjects = ["reader"]
target = "crm"
allow.statements = ["select", "cursor", "transaction", "prepare", "execute"]
allow.tables = ["products"]
{RECHECK_RULES}"#
    );
    let (_gw, port) = db.gateway("crm", &[&reader], &rules);
    let client = through(port, &reader, "reader", "crm").await;
    for sql in [
        "begin; declare c cursor for select * from customers; fetch all from c; commit;",
        "prepare p as select * from customers; execute p;",
    ] {
        match client.simple_query(sql).await {
            Ok(msgs) => {
                let got = everything_returned(&msgs);
                assert!(!got.contains("DE89370400440532013000"), "{sql}: {got}");
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}");
                let m = message(&e);
                assert!(m.contains("reader uses cursors, masked"), "{sql}: {m}");
                client.simple_query("rollback").await.unwrap();
            }
        }
    }
    // Cursors over what the unmasked rule allows still work.
    let msgs = client
        .simple_query(
            "begin; declare p2 cursor for select * from products; fetch all from p2; commit;",
        )
        .await
        .unwrap();
    assert_eq!(everything_returned(&msgs), "1|lamp");
}

#[tokio::test]
async fn a_masked_protocol_portal_is_not_read_by_sql_fetch() {
    let db = Db::new(RECHECK_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);
    let mut client = through(port, &reader, "reader", "crm").await;
    let account = "DE89370400440532013000";
    let reversed: String = account.chars().rev().collect();
    let tx = client.transaction().await.unwrap();
    // A named portal of a masked statement (Parse/Bind), kept open by the transaction; SQL
    // FETCH reads portals by name like cursors, without the statement's text or mask.
    let _portal = tx
        .bind(
            "select id, reverse(account_number) as x from customers",
            &[],
        )
        .await
        .unwrap();
    for n in 0..20 {
        match tx.simple_query(&format!("fetch all from p{n}")).await {
            Ok(msgs) => {
                let got = everything_returned(&msgs);
                assert!(
                    !got.contains(&reversed) && !got.contains(account),
                    "p{n}: {got}"
                );
            }
            Err(e) => {
                // An unknown portal (34000) aborts the transaction; a refusal is fine too.
                assert!(
                    ["34000", "42501", "25P02"].contains(&sqlstate(&e).as_str()),
                    "{e:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_masked_protocol_prepared_statement_is_not_run_by_sql_execute() {
    let db = Db::new(RECHECK_SETUP).await;
    let reader = api_key("reader", "agent", &[]);
    let (_gw, port) = db.gateway("crm", &[&reader], RECHECK_RULES);
    let client = through(port, &reader, "reader", "crm").await;
    let account = "DE89370400440532013000";
    let reversed: String = account.chars().rev().collect();
    // A masked protocol-level prepared statement (Parse); SQL EXECUTE runs it by name.
    let statement = client
        .prepare("select id, reverse(account_number) as x from customers")
        .await
        .unwrap();
    for n in 0..20 {
        match client.simple_query(&format!("execute s{n}")).await {
            Ok(msgs) => {
                let got = everything_returned(&msgs);
                assert!(
                    !got.contains(&reversed) && !got.contains(account),
                    "s{n}: {got}"
                );
            }
            Err(e) => {
                // An unknown statement (26000), or a refusal.
                assert!(["26000", "42501"].contains(&sqlstate(&e).as_str()), "{e:?}");
            }
        }
    }
    // Through the protocol it is still masked.
    let rows = client.query(&statement, &[]).await.unwrap();
    let x: &str = rows[0].get(1);
    assert!(!x.contains(&reversed), "{x}");
}
