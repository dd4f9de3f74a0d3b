//! Attacks on the PostgreSQL adapter: functions that write under a read-only rule, functions
//! that expose other sessions, predicate oracles on masked columns, asynchronous messages
//! carrying unmasked values, detector-only masks defeated by transformations.

/// Issue 13 items 9 and 13: masked columns read by inference (predicates, ordering,
/// grouping...) and detector-only masks defeated by transformations. Helpers and tests of
/// these items stay in this block.
mod masked_columns {
    use std::net::TcpStream;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::Value;
    use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

    use crate::common::{Gateway, Key, api_key, free_port};

    static SEQ: AtomicU32 = AtomicU32::new(0);

    async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A database of its own, owned by the role the gateway logs in as; dropped on drop.
    struct Db {
        name: String,
        role: String,
    }

    impl Db {
        async fn new(setup: &str) -> Db {
            let n = format!(
                "{}_{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            );
            let db = Db {
                name: format!("pgmask_{n}"),
                role: format!("pgmask_app_{n}"),
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
            connect(&format!(
                "host=127.0.0.1 port=5432 user={} dbname={}",
                db.role, db.name
            ))
            .await
            .unwrap()
            .batch_execute(setup)
            .await
            .unwrap();
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

    /// Starts a gateway with one postgres target `db` for `database`; returns it and the
    /// target's port.
    fn start(database: &Db, keys: &[&Key], rest: &str) -> (Gateway, u16) {
        let port = free_port();
        let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
        let gw = Gateway::start(&format!("{keys}\n{}\n{rest}", database.target("db", port)));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "listener {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (gw, port)
    }

    async fn through(port: u16, key: &Key, user: &str) -> Client {
        connect(&format!(
            "host=127.0.0.1 port={port} user={user} password={} dbname=db connect_timeout=10",
            key.key
        ))
        .await
        .unwrap_or_else(|e| panic!("connecting through the gateway: {e:?}"))
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
            assert!(
                message.contains("agents read customers masked")
                    && message.contains("filter_masked"),
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
