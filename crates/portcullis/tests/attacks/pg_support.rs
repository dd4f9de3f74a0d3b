//! Shared PostgreSQL helpers for the attacks suite: a database of its own per test (with the
//! role the gateway logs in as, its owner), a gateway in front of it, clients through it.
//! Needs PostgreSQL at 127.0.0.1:5432 with trust authentication for `postgres`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::common::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A database of its own and the role the gateway logs in as (its owner); dropped on drop.
pub struct Db {
    pub name: String,
    pub role: String,
}

impl Db {
    /// Creates the database and runs `setup` in it as the gateway's role.
    pub async fn new(setup: &str) -> Db {
        let n = unique();
        let db = Db {
            name: format!("atk_{n}"),
            role: format!("atk_app_{n}"),
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
    pub async fn as_app(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user={} dbname={}",
            self.role, self.name
        ))
        .await
        .unwrap()
    }

    /// Directly to the server, as the superuser.
    pub async fn as_super(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={}",
            self.name
        ))
        .await
        .unwrap()
    }

    /// A gateway with one `postgres` target `name` for this database, `keys`, and `rest`
    /// (rules, masks); returns it and the target's port once it listens.
    pub fn gateway(&self, name: &str, keys: &[&Key], rest: &str) -> (Gateway, u16) {
        let port = free_port();
        let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
        let gw = Gateway::start(&format!(
            "{keys}\n[targets.{name}]\nkind = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"postgres://127.0.0.1:5432/{}\"\nuser = \"{}\"\n\n{rest}\n",
            self.name, self.role
        ));
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the listener on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (gw, port)
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

/// A client through the gateway on `port`, as `key`'s identity `user`, to database `dbname`.
pub async fn through(port: u16, key: &Key, user: &str, dbname: &str) -> Client {
    connect(&format!(
        "host=127.0.0.1 port={port} user={user} password={} dbname={dbname} connect_timeout=10",
        key.key
    ))
    .await
    .unwrap_or_else(|e| panic!("connecting through the gateway: {e:?}"))
}

/// The SQLSTATE of an error, or a description of why there is none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e:?}"))
}

/// The server's (or gateway's) message of an error.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}
