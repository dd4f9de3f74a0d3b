//! The PostgreSQL proxy's logins, end to end: the gateway's own login to the database with
//! SCRAM-SHA-256 and md5 (against a private PostgreSQL cluster that really asks for
//! passwords), TLS towards the database (`upstream_tls`), TLS towards clients
//! (`[gateway.tls]`, required on listeners that are not on loopback), and the start-up
//! checks of `portcullis serve`.
//!
//! Each test that needs a database starts a cluster of its own ([`Cluster`]: initdb, pg_ctl,
//! about one second) and stops it when dropped, so the tests run the same under `cargo test`
//! (one process) and nextest (one process per test). As root, the cluster runs as the
//! `postgres` user through `runuser`. The PostgreSQL binaries are found in
//! `$PORTCULLIS_PG_BIN`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

// Not ASCII, with a no-break space (SASLprep maps it to a space: both sides must agree) and
// a quote.
const SCRAM_PASSWORD: &str = "scrám\u{a0}Sécret'1";
const MD5_PASSWORD: &str = "md5 Sécret'2";
const TLS_PASSWORD: &str = "tls-Secret-3";

// ---------------------------------------------------------------------------------------
// Certificates

/// A certificate authority made with rcgen, and the PEM of its certificate.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`: (certificate PEM, key
    /// PEM).
    fn server_cert(&self) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

// ---------------------------------------------------------------------------------------
// The private PostgreSQL cluster

/// The directory of `initdb`, `pg_ctl` and `postgres`.
fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PORTCULLIS_PG_BIN") {
        return dir.into();
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries are needed: /usr/lib/postgresql does not exist (set PORTCULLIS_PG_BIN)")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/initdb (set PORTCULLIS_PG_BIN)")
        .1
}

/// Whether `::1` can be listened on here.
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The uid and gid of `user`.
fn ids_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().unwrap();
        assert!(
            out.status.success(),
            "running as root needs a {user} user to run PostgreSQL as"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// An SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PostgreSQL cluster of the test's own, on 127.0.0.1, 127.0.0.2 (and ::1 if there is
/// IPv6) and a free port, that asks for passwords:
///
/// - `scram_user`: SCRAM-SHA-256 (`host`, so with or without TLS);
/// - `md5_user`: md5, its password stored as an md5 hash;
/// - `tls_user`: SCRAM-SHA-256, over TLS only (`hostssl`);
/// - everyone else over TCP is rejected; the superuser `postgres` logs in over the Unix
///   socket with `trust`, for the set-up.
///
/// Its server certificate (for `localhost`, `127.0.0.1` and `::1`, not `127.0.0.2`) is
/// issued by `ca`. Stopped
/// (`pg_ctl stop -m immediate`) and deleted on drop.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    ca: Ca,
    /// As root: the user the server runs as.
    owner: Option<(u32, u32)>,
    bin: PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        let started = Instant::now();
        let bin = pg_bin();
        let owner = is_root().then(|| ids_of("postgres"));
        // As root, in /tmp: the postgres user must reach the directory, and $TMPDIR may be
        // under /root. (A short path also keeps the socket's within its length limit.)
        let dir = match owner {
            Some(_) => tempfile::Builder::new()
                .prefix("pg_auth")
                .tempdir_in("/tmp")
                .unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let ca = Ca::new("portcullis test database CA");
        let mut cluster = Cluster {
            dir,
            port: 0,
            ca,
            owner,
            bin,
        };
        cluster.give(cluster.dir.path());

        let data = cluster.data();
        check(
            cluster
                .as_owner(&cluster.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ])
                .output()
                .unwrap(),
            "initdb",
        );

        let (cert, key) = cluster.ca.server_cert();
        let cert_path = cluster.dir.path().join("server.crt");
        let key_path = cluster.dir.path().join("server.key");
        cluster.write(&cert_path, &cert, 0o644);
        cluster.write(&key_path, &key, 0o600);
        let mut hba = String::from("local all postgres trust\n");
        for net in ["127.0.0.0/8", "::1/128"] {
            hba.push_str(&format!(
                "host all scram_user {net} scram-sha-256\n\
                 host all md5_user {net} md5\n\
                 hostssl all tls_user {net} scram-sha-256\n\
                 host all all {net} reject\n"
            ));
        }
        cluster.write(&data.join("pg_hba.conf"), &hba, 0o600);
        let socket = cluster.socket_dir();
        std::fs::create_dir(&socket).unwrap();
        cluster.give(&socket);

        let addresses = if ipv6_loopback() {
            "127.0.0.1,127.0.0.2,::1"
        } else {
            "127.0.0.1,127.0.0.2"
        };
        // A free port can be taken between the probe and the server's bind: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses={addresses} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c shared_buffers=16MB -c max_connections=30 -c fsync=off -c log_connections=on",
                socket.display(),
                cert_path.display(),
                key_path.display()
            );
            let out = cluster
                .as_owner(&cluster.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .unwrap();
            if out.status.success() {
                cluster.port = port;
                break;
            }
            last = Some(out);
        }
        if cluster.port == 0 {
            let log =
                std::fs::read_to_string(cluster.dir.path().join("server.log")).unwrap_or_default();
            panic!("pg_ctl start failed: {:?}\nserver log:\n{log}", last);
        }

        // The roles, each password stored as its login method needs.
        cluster.psql(&[
            "SET password_encryption = 'scram-sha-256'",
            &format!(
                "CREATE ROLE scram_user LOGIN PASSWORD {}",
                quote(SCRAM_PASSWORD)
            ),
            &format!(
                "CREATE ROLE tls_user LOGIN PASSWORD {}",
                quote(TLS_PASSWORD)
            ),
            "SET password_encryption = 'md5'",
            &format!(
                "CREATE ROLE md5_user LOGIN PASSWORD {}",
                quote(MD5_PASSWORD)
            ),
        ]);
        let stored = cluster.psql(&[
            "SELECT string_agg(rolname || '=' || left(rolpassword, 13), ',' ORDER BY rolname) FROM pg_authid WHERE rolname LIKE '%_user'",
        ]);
        for role in ["scram_user=SCRAM-SHA-256", "tls_user=SCRAM-SHA-256"] {
            assert!(stored.contains(role), "{role}: {stored}");
        }
        assert!(
            stored.contains("md5_user=md5") && !stored.contains("md5_user=SCRAM"),
            "md5_user's password must be stored as an md5 hash: {stored}"
        );
        eprintln!(
            "[cluster] PostgreSQL on 127.0.0.1:{} ready in {:?}",
            cluster.port,
            started.elapsed()
        );
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The server's log so far (`log_connections` is on).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Waits (briefly) for a line of the server's log that contains every one of `parts`.
    fn expect_log(&self, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no line of the server log has all of {parts:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://HOST:PORT/postgres` (an IPv6 address in brackets).
    fn url(&self, host: &str) -> String {
        if host.contains(':') {
            format!("postgres://[{host}]:{}/postgres", self.port)
        } else {
            format!("postgres://{host}:{}/postgres", self.port)
        }
    }

    /// A command run as the cluster's user, in its directory.
    fn as_owner(&self, program: &Path) -> Command {
        let mut cmd = match self.owner {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// Makes `path` the cluster user's.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn write(&self, path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        self.give(path);
    }

    /// Runs statements as the superuser over the Unix socket; returns the output.
    fn psql(&self, statements: &[&str]) -> String {
        let mut cmd = Command::new("psql");
        cmd.arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-X", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1"]);
        for s in statements {
            cmd.args(["-c", s]);
        }
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env("PGCLIENTENCODING", "UTF8");
        let out = check(cmd.output().unwrap(), "psql (set-up)");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let _ = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// The gateway

/// What goes in a `[targets.NAME]` postgres table besides `kind` and `listen`.
struct Target<'a> {
    upstream: String,
    user: &'a str,
    password_env: Option<&'a str>,
    upstream_tls: &'a str,
    upstream_ca: Option<PathBuf>,
}

impl Target<'_> {
    fn toml(&self, name: &str, listen: &str) -> String {
        let mut t = format!(
            "[targets.{name}]\nkind = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"{}\"\nuser = \"{}\"\nupstream_tls = \"{}\"\n",
            self.upstream, self.user, self.upstream_tls
        );
        if let Some(env) = self.password_env {
            t.push_str(&format!("password_env = \"{env}\"\n"));
        }
        if let Some(ca) = &self.upstream_ca {
            t.push_str(&format!("upstream_ca = {:?}\n", ca.display().to_string()));
        }
        t.push('\n');
        t
    }
}

/// Agents may run any SELECT on any target.
const RULES: &str = "[[rules]]\nname = \"agents read\"\nwho.groups = [\"agents\"]\ntarget = \"*\"\nallow.statements = [\"select\"]\n";

/// The API key of the caller every test connects with.
fn agent() -> Key {
    api_key("agent", "agent", &["agents"])
}

/// A gateway with one postgres target `db` on a loopback listener; returns it and the
/// listener's address once it accepts connections.
fn gateway(agent: &Key, target: &Target<'_>, env: &[(&str, &str)]) -> (Gateway, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_with(
        &format!(
            "{}{}{RULES}",
            agent.config,
            target.toml("db", &listen.to_string())
        ),
        "",
        env,
    );
    wait_for(listen);
    (gw, listen)
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects through the gateway as `agent`, in plain text (the listener is on loopback).
async fn connect(
    addr: SocketAddr,
    key: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(addr.ip().to_string())
        .port(addr.port())
        .user("agent")
        .password(key)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(20))
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The first column of the first row of a simple query.
async fn one_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql}"))
}

/// Connecting fails with SQLSTATE 08006 ("unavailable"); returns the message.
async fn expect_unavailable(addr: SocketAddr, key: &str) -> String {
    let err = match connect(addr, key).await {
        Ok(_) => panic!("the connection should have failed"),
        Err(e) => e,
    };
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err:?}"));
    assert_eq!(db.code(), &SqlState::CONNECTION_FAILURE, "{db:?}");
    assert!(db.message().contains("unavailable"), "{}", db.message());
    db.message().to_string()
}

/// The `session.start` events with outcome `failed` of target `db`.
fn failed_starts(gw: &Gateway) -> Vec<Value> {
    gw.events()
        .into_iter()
        .filter(|e| e["type"] == "session.start" && e["outcome"] == "failed")
        .collect()
}

/// Exactly one failed session start, whose detail contains `needle`; returns the detail.
fn one_failed_start(gw: &Gateway, needle: &str) -> String {
    let failed = failed_starts(gw);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let detail = failed[0]["detail"].as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains(needle),
        "the audit detail should mention {needle:?}: {detail}"
    );
    assert_eq!(failed[0]["target"], "db");
    detail
}

/// The database password appears nowhere a caller or the audit log could see it.
fn assert_not_leaked(gw: &Gateway, password: &str) {
    let events = serde_json::to_string(&gw.events()).unwrap();
    assert!(
        !events.contains(password),
        "the audit log holds the password"
    );
    let stderr = gw.stderr.lock().unwrap().join("\n");
    assert!(
        !stderr.contains(password),
        "the gateway log holds the password"
    );
}

fn timed(name: &str, started: Instant) {
    eprintln!("[timing] {name}: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// 1, 2: the gateway's login with a password

/// Logs in as `user` with the right password (works, as that role) and a wrong one
/// (08006 for the client, a failed session.start naming the server's refusal).
async fn password_login(user: &str, password: &str) {
    let cluster = Cluster::start();
    let agent = agent();
    let target = Target {
        upstream: cluster.url("127.0.0.1"),
        user,
        password_env: Some("PG_TEST_DB_PASSWORD"),
        upstream_tls: "disable",
        upstream_ca: None,
    };

    // The right password: the client, with only its API key, runs as the gateway's role.
    let (gw, addr) = gateway(&agent, &target, &[("PG_TEST_DB_PASSWORD", password)]);
    let client = connect(addr, &agent.key).await.unwrap();
    assert_eq!(one_value(&client, "SELECT current_user").await, user);
    // The server really asked for this method (not trust): its own view of the session.
    let method = one_value(
        &client,
        "SELECT CASE WHEN ssl THEN 'ssl' ELSE 'plain' END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(method, "plain");
    let hba_method = if user == "md5_user" {
        "md5"
    } else {
        "scram-sha-256"
    };
    cluster.expect_log(&[
        "connection authenticated",
        &format!("identity=\"{user}\""),
        &format!("method={hba_method}"),
    ]);
    drop(client);
    // psql's default sslmode=prefer: the gateway has no certificate, declines TLS, and the
    // session goes on in plain text on loopback; sslmode=require cannot be met.
    let conninfo = format!(
        "host=127.0.0.1 port={} user=agent dbname=postgres",
        addr.port()
    );
    let out = psql(
        &format!("{conninfo} sslmode=prefer"),
        &agent.key,
        "SELECT current_user",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
    let out = psql(
        &format!("{conninfo} sslmode=require"),
        &agent.key,
        "SELECT 1",
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not support SSL"),
        "{}",
        text(&out)
    );
    assert!(failed_starts(&gw).is_empty());
    assert_not_leaked(&gw, password);
    drop(gw);

    // A wrong password: the client learns only that the database is unavailable.
    let (gw, addr) = gateway(
        &agent,
        &target,
        &[("PG_TEST_DB_PASSWORD", "not-the-password")],
    );
    let message = expect_unavailable(addr, &agent.key).await;
    assert!(!message.contains("password"), "{message}");
    let detail = one_failed_start(&gw, "password authentication failed");
    assert!(detail.contains(user), "{detail}");
    let failed = failed_starts(&gw);
    assert_eq!(failed[0]["identity"]["subject"], "agent", "{failed:#?}");
    drop(gw);

    // No password_env at all, and the server asks for one.
    let no_password = Target {
        password_env: None,
        ..target
    };
    let (gw, addr) = gateway(&agent, &no_password, &[]);
    expect_unavailable(addr, &agent.key).await;
    one_failed_start(&gw, "asks for a password and none is configured");
}

#[tokio::test]
async fn the_gateway_logs_in_with_scram_sha_256() {
    let started = Instant::now();
    password_login("scram_user", SCRAM_PASSWORD).await;
    timed("scram", started);
}

#[tokio::test]
async fn the_gateway_logs_in_with_md5() {
    let started = Instant::now();
    password_login("md5_user", MD5_PASSWORD).await;
    timed("md5", started);
}

// ---------------------------------------------------------------------------------------
// 3: TLS to the database

#[tokio::test]
async fn upstream_tls_verifies_the_database() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let agent = agent();
    let files = tempfile::tempdir().unwrap();
    let right_ca = files.path().join("db-ca.pem");
    std::fs::write(&right_ca, cluster.ca.pem()).unwrap();
    let wrong_ca = files.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, Ca::new("some other CA").pem()).unwrap();
    let env = [("PG_TEST_DB_PASSWORD", TLS_PASSWORD)];
    let (right_ca, wrong_ca) = (right_ca.as_path(), wrong_ca.as_path());
    let tls_target = |host: &str, tls: &'static str, ca: Option<&Path>| Target {
        upstream: cluster.url(host),
        user: "tls_user",
        password_env: Some("PG_TEST_DB_PASSWORD"),
        upstream_tls: tls,
        upstream_ca: ca.map(Path::to_path_buf),
    };

    // verify-full with the CA that issued the server's certificate, by IP and by name.
    let mut hosts = vec!["127.0.0.1", "localhost"];
    if ipv6_loopback() {
        hosts.push("::1");
    } else {
        eprintln!("note: no IPv6 loopback here; verify-full to [::1] is not tested");
    }
    for host in hosts {
        let (gw, addr) = gateway(
            &agent,
            &tls_target(host, "verify-full", Some(right_ca)),
            &env,
        );
        let client = connect(addr, &agent.key)
            .await
            .unwrap_or_else(|e| panic!("verify-full to {host}: {e:?}"));
        assert_eq!(one_value(&client, "SELECT current_user").await, "tls_user");
        let ssl = one_value(
            &client,
            "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await;
        assert_eq!(ssl, "true");
        assert!(failed_starts(&gw).is_empty());
    }
    cluster.expect_log(&["connection authorized: user=tls_user", "SSL enabled"]);

    // verify-full checks the name too: the certificate does not name 127.0.0.2.
    let (gw, addr) = gateway(
        &agent,
        &tls_target("127.0.0.2", "verify-full", Some(right_ca)),
        &env,
    );
    expect_unavailable(addr, &agent.key).await;
    let detail = one_failed_start(&gw, "TLS handshake");
    assert!(detail.contains("not valid for name"), "{detail}");
    drop(gw);

    // verify-full with a CA that did not sign the server's certificate.
    let (gw, addr) = gateway(
        &agent,
        &tls_target("127.0.0.1", "verify-full", Some(wrong_ca)),
        &env,
    );
    expect_unavailable(addr, &agent.key).await;
    let detail = one_failed_start(&gw, "TLS handshake");
    assert!(detail.contains("UnknownIssuer"), "{detail}");
    drop(gw);

    // require: encrypted, no CA needed, and no name checked (127.0.0.2 is not in the
    // certificate).
    let (gw, addr) = gateway(&agent, &tls_target("127.0.0.2", "require", None), &env);
    let client = connect(addr, &agent.key).await.unwrap();
    assert_eq!(one_value(&client, "SELECT current_user").await, "tls_user");
    let ssl = one_value(
        &client,
        "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert_eq!(ssl, "true");
    drop(gw);

    // disable, for a role the server accepts over TLS only: the server refuses.
    let (gw, addr) = gateway(&agent, &tls_target("127.0.0.1", "disable", None), &env);
    expect_unavailable(addr, &agent.key).await;
    let detail = one_failed_start(&gw, "pg_hba.conf");
    assert!(detail.contains("no encryption"), "{detail}");
    timed("upstream tls", started);
}

// ---------------------------------------------------------------------------------------
// 4, 6: start-up checks

/// Runs `portcullis serve` on `config` (plus a `[gateway]` table) expecting it to exit
/// (killed after 20 s if it serves instead); returns its exit status and stderr.
fn serve_expecting_exit(
    gateway_extra: &str,
    rest: &str,
    env_remove: &[&str],
) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\n{gateway_extra}\n\n{rest}",
            free_port()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in env_remove {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "portcullis serve started instead of refusing the configuration: {}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

#[test]
fn a_missing_password_variable_stops_the_start() {
    let started = Instant::now();
    let agent = agent();
    let target = Target {
        // Nothing needs to listen there: the check comes before any connection.
        upstream: format!("postgres://127.0.0.1:{}/postgres", free_port()),
        user: "scram_user",
        password_env: Some("PG_TEST_UNSET_PASSWORD"),
        upstream_tls: "disable",
        upstream_ca: None,
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let (status, stderr) = serve_expecting_exit(
        "",
        &format!("{}{}{RULES}", agent.config, target.toml("db", &listen)),
        &["PG_TEST_UNSET_PASSWORD"],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("targets.db.password_env"), "{stderr}");
    assert!(stderr.contains("PG_TEST_UNSET_PASSWORD"), "{stderr}");
    timed("missing password env", started);
}

#[test]
fn a_network_listener_without_gateway_tls_is_refused() {
    let started = Instant::now();
    let agent = agent();
    let target = Target {
        upstream: format!("postgres://127.0.0.1:{}/postgres", free_port()),
        user: "scram_user",
        password_env: None,
        upstream_tls: "disable",
        upstream_ca: None,
    };
    let listen = format!("0.0.0.0:{}", free_port());
    let (status, stderr) = serve_expecting_exit(
        "",
        &format!("{}{}{RULES}", agent.config, target.toml("db", &listen)),
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("targets.db.listen"), "{stderr}");
    assert!(stderr.contains("[gateway.tls]"), "{stderr}");
    timed("non-loopback without tls", started);
}

// ---------------------------------------------------------------------------------------
// 5: TLS from clients

/// Runs psql with a connection string; the password is the API key.
fn psql(conninfo: &str, key: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", key)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSSLMODE")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn clients_connect_with_tls_and_must_off_loopback() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let agent = agent();
    let files = tempfile::tempdir().unwrap();
    let gateway_ca = Ca::new("portcullis test gateway CA");
    let (cert, key) = gateway_ca.server_cert();
    let ca_path = files.path().join("gateway-ca.pem");
    let cert_path = files.path().join("gateway.pem");
    let key_path = files.path().join("gateway-key.pem");
    std::fs::write(&ca_path, gateway_ca.pem()).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let tls = format!(
        "[gateway.tls]\ncert = {:?}\nkey = {:?}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );

    let target = Target {
        upstream: cluster.url("127.0.0.1"),
        user: "scram_user",
        password_env: Some("PG_TEST_DB_PASSWORD"),
        upstream_tls: "disable",
        upstream_ca: None,
    };
    let local_port = free_port();
    let network_port = free_port();
    let gw = Gateway::start_with(
        &format!(
            "{}{}{}{RULES}",
            agent.config,
            target.toml("db", &format!("127.0.0.1:{local_port}")),
            // Listening on every address makes the listener reachable from the network.
            target.toml("net", &format!("0.0.0.0:{network_port}")),
        ),
        &tls,
        &[("PG_TEST_DB_PASSWORD", SCRAM_PASSWORD)],
    );
    let local: SocketAddr = format!("127.0.0.1:{local_port}").parse().unwrap();
    let network: SocketAddr = format!("127.0.0.1:{network_port}").parse().unwrap();
    wait_for(local);
    wait_for(network);
    let ca = ca_path.display().to_string();
    let sql = "SELECT current_user";

    // Loopback listener: verify-full against the gateway's CA, by name and by address.
    for host in [
        format!("host=localhost hostaddr=127.0.0.1 port={local_port}"),
        format!("host=127.0.0.1 port={local_port}"),
    ] {
        let out = psql(
            &format!("{host} user=agent dbname=postgres sslmode=verify-full sslrootcert={ca}"),
            &agent.key,
            sql,
        );
        assert!(out.status.success(), "{host}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "scram_user");
    }
    // ... and plain text is still accepted on loopback.
    let out = psql(
        &format!("host=127.0.0.1 port={local_port} user=agent dbname=postgres sslmode=disable"),
        &agent.key,
        sql,
    );
    assert!(out.status.success(), "{}", text(&out));
    // A client that trusts another CA does not get in (and sends no key).
    let other_ca = files.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new("unrelated CA").pem()).unwrap();
    let out = psql(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={local_port} user=agent dbname=postgres sslmode=verify-full sslrootcert={}",
            other_ca.display()
        ),
        &agent.key,
        sql,
    );
    assert!(!out.status.success(), "{}", text(&out));

    // The listener on 0.0.0.0: TLS is required.
    let out = psql(
        &format!("host=127.0.0.1 port={network_port} user=agent dbname=postgres sslmode=disable"),
        &agent.key,
        sql,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("requires TLS"), "{}", text(&out));
    // The SQLSTATE (psql does not print it for connection errors).
    let err = match connect(network, &agent.key).await {
        Ok(_) => panic!("a plain connection to a network listener should be refused"),
        Err(e) => e,
    };
    let db = err.as_db_error().expect("a server error");
    assert_eq!(
        db.code(),
        &SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        "{db:?}"
    );
    assert!(db.message().contains("requires TLS"), "{}", db.message());
    // Refused before authentication: nothing about them in the audit log.
    let events = gw.events();
    assert!(events.iter().all(|e| e["target"] != "net"), "{events:#?}");
    for mode in [
        "host=127.0.0.1 sslmode=require".to_string(),
        format!("host=localhost sslmode=verify-full sslrootcert={ca}"),
    ] {
        let out = psql(
            &format!("{mode} hostaddr=127.0.0.1 port={network_port} user=agent dbname=postgres"),
            &agent.key,
            sql,
        );
        assert!(out.status.success(), "{mode}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "scram_user");
    }
    // The two TLS sessions on the network listener, and nothing else there.
    let events = gw.events();
    let net: Vec<&Value> = events.iter().filter(|e| e["target"] == "net").collect();
    assert!(
        net.iter()
            .all(|e| e["outcome"] != "failed" && e["type"] != "auth.failure"),
        "{net:#?}"
    );
    assert_eq!(
        net.iter().filter(|e| e["type"] == "session.start").count(),
        2,
        "{net:#?}"
    );
    timed("client tls", started);
}
