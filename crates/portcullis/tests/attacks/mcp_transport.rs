//! Attacks on the HTTP front door before and around authentication: slow headers, half-open
//! connections, floods of bad credentials.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

/// A second loopback address: on Linux all of 127.0.0.0/8 reaches the gateway on 127.0.0.1,
/// so a client bound here is another source.
const OTHER_SOURCE: &str = "127.0.0.2";

fn billing_config(agent: &Key) -> String {
    format!(
        r#"{agent}
[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]
"#,
        agent = agent.config,
        cmd = demo_server_command()
    )
}

/// A TCP connection to `addr` from `source` (any port).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `GET /healthz` on `stream` and returns what comes back before the connection closes
/// (or 5 s pass).
async fn healthz(mut stream: TcpStream) -> String {
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads until the peer closes the connection; false if it stayed open for `limit`.
async fn closed_within(stream: &mut tokio::net::tcp::OwnedReadHalf, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_close = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_close).await.is_ok()
}

/// Issue 13, item 8: a connection trickling its request headers (a byte of a header line
/// every few hundred milliseconds) stayed open past 90 s; thousands of them held every file
/// descriptor of the gateway. The front door must close it once `header_read_timeout` has
/// passed, and go on serving everyone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_is_cut_off_within_the_header_read_timeout() {
    let agent = api_key("slow-agent", "agent", &["agents"]);
    let gw = Gateway::start_with(
        &billing_config(&agent),
        "[gateway.limits]\nheader_read_timeout = \"2s\"",
        &[],
    );
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let _ = write
            .write_all(b"POST /mcp/billing HTTP/1.1\r\nhost: gateway\r\n")
            .await;
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if write
                .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let cut_off = closed_within(&mut read, Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        cut_off,
        "the trickling connection was still open after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(3500),
        "cut off only after {elapsed:?}, the header read timeout is 2s"
    );
    // An honest client is still served.
    let answer = healthz(TcpStream::connect(gw.addr).await.unwrap()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Issue 13, item 8: nothing bounded the connections one source could hold open before
/// authenticating (19,950 half-open connections were held). With a per-source cap of N, the
/// N+1th connection from one address is answered 503 and closed at once, while another
/// address is still served; freeing a connection frees its place. The refusals are counted
/// in a log line, not recorded one by one.
#[tokio::test(flavor = "multi_thread")]
async fn the_connection_over_the_per_source_cap_is_refused_while_other_sources_are_served() {
    let agent = api_key("flood-agent", "agent", &["agents"]);
    let gw = Gateway::start_with(
        &billing_config(&agent),
        "[gateway.limits]\nmax_connections_per_source = 4\nheader_read_timeout = \"30s\"",
        &[],
    );
    // The start-up probe's connection (made and dropped while the gateway started) must have
    // freed its place before the count starts: one served request after it shows it has.
    let first = healthz(connect_from("127.0.0.1", gw.addr).await).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", gw.addr).await);
    }
    // The gateway takes the places as it accepts the connections.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        !gw.stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("refused over the connection caps")),
        "a connection under the cap was refused"
    );
    let over = healthz(connect_from("127.0.0.1", gw.addr).await).await;
    assert!(
        over.starts_with("HTTP/1.1 503"),
        "the 5th connection from one source was not refused: {over:?}"
    );

    // Another source is served, down to a real tool call.
    let other = healthz(connect_from(OTHER_SOURCE, gw.addr).await).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    let client = reqwest::Client::builder()
        .local_address(OTHER_SOURCE.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let (status, body) = modern_call(
        &client,
        &gw.url("billing"),
        &agent.key,
        1,
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_object(), "{body}");

    // A freed place is taken again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = healthz(connect_from("127.0.0.1", gw.addr).await).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");

    let logged = gw.stderr.lock().unwrap().join("\n");
    assert!(
        logged.contains("refused over the connection caps"),
        "no log line counts the refusals: {logged}"
    );
    // Connections carry no audit event of their own.
    assert!(
        gw.events()
            .iter()
            .all(|e| e["type"] != "auth.failure" && e["outcome"] != "rejected"),
        "refused connections were audited one by one"
    );
}

/// Issue 13, item 8, on a PostgreSQL listener: the startup packet and the credential must
/// arrive within the same timeout; a client trickling its startup packet is cut off.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_client_trickling_its_startup_packet_is_cut_off() {
    let agent = api_key("slow-pg-agent", "agent", &["agents"]);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_with(
        &format!(
            "{}[targets.db]\nkind = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"postgres://127.0.0.1:5432/postgres\"\nuser = \"postgres\"\n",
            agent.config
        ),
        "[gateway.limits]\nheader_read_timeout = \"2s\"",
        &[],
    );
    let _ = &gw;
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match TcpStream::connect(listen).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("nothing listens on {listen}: {e}"),
        }
    };
    // A valid StartupMessage (protocol 3.0, the agent's user, the target's database) sent
    // one byte every 250 ms.
    let mut packet = Vec::new();
    let body = b"\x00\x03\x00\x00user\x00slow-pg-agent\x00database\x00db\x00\x00";
    packet.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    packet.extend_from_slice(body);
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in packet {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Then nothing: a client that never sends its credential.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let cut_off = closed_within(&mut read, Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(
        cut_off,
        "the trickling client was still connected after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(3500),
        "cut off only after {elapsed:?}, the startup timeout is 2s"
    );
}

/// Issue 13, item 14c: every bad credential cost an fsynced audit write, with no limit on
/// how fast one source could send them. After `max_auth_failures` failures in a window the
/// source gets 429 without its credential being checked; those refusals are still audited,
/// as one summary with their count, not an event (and fsync) each; a good key from another
/// source is served meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_bad_keys_from_one_source_is_throttled_and_audited_in_aggregate() {
    let agent = api_key("throttle-agent", "agent", &["agents"]);
    let gw = Gateway::start_with(
        &billing_config(&agent),
        "[gateway.limits]\nmax_auth_failures = 5\nauth_failure_window = \"3s\"",
        &[],
    );
    let attacker = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let call = json!({"name": "lookup_customer", "arguments": {"customer": "cus_1001"}});
    let mut statuses = Vec::new();
    for i in 0..30 {
        let bad = format!("pcx_wrong{i:040}");
        let (status, _) = modern_call(
            &attacker,
            &gw.url("billing"),
            &bad,
            i,
            "tools/call",
            call.clone(),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429; 25], "{statuses:?}");
    // The throttled source is refused even with a good key: its credential is not checked.
    let (status, _) = modern_call(
        &attacker,
        &gw.url("billing"),
        &agent.key,
        99,
        "tools/call",
        call.clone(),
    )
    .await;
    assert_eq!(status, 429);

    // Another source is served.
    let other = reqwest::Client::builder()
        .local_address(OTHER_SOURCE.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let (status, body) = modern_call(
        &other,
        &gw.url("billing"),
        &agent.key,
        100,
        "tools/call",
        call.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_object(), "{body}");

    // Once the window is over, its summary is recorded.
    let from_attacker = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                e["type"] == "auth.failure"
                    && e["source"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("127.0.0.1"))
            })
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let failures = loop {
        let failures = from_attacker(&gw.events());
        if failures.len() >= 6 || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        failures.len(),
        6,
        "31 failed attempts must make six events (the five checked, then a summary): {failures:#?}"
    );
    let summary = failures[5]["detail"].as_str().unwrap();
    assert!(
        summary.contains("26 attempts refused unchecked") && summary.contains("after 5 failed"),
        "{summary}"
    );
    // Throttling ends with the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = modern_call(
        &attacker,
        &gw.url("billing"),
        &agent.key,
        101,
        "tools/call",
        call,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Issue 13, item 14c, on a PostgreSQL listener: past `max_auth_failures` bad credentials a
/// source is refused with SQLSTATE 53300 before its credential is checked, and those
/// refusals are audited as one summary.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_bad_passwords_on_postgres_is_throttled_and_audited_in_aggregate() {
    let agent = api_key("throttle-pg-agent", "agent", &["agents"]);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_with(
        &format!(
            "{}[targets.db]\nkind = \"postgres\"\nlisten = \"{listen}\"\nupstream = \"postgres://127.0.0.1:5432/postgres\"\nuser = \"postgres\"\n",
            agent.config
        ),
        "[gateway.limits]\nmax_auth_failures = 3\nauth_failure_window = \"2s\"",
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {listen}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut codes = Vec::new();
    for i in 0..12 {
        let refused = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(listen.port())
            .user("throttle-pg-agent")
            .dbname("db")
            .password(format!("pcx_wrong{i:040}"))
            .connect(tokio_postgres::NoTls)
            .await
            .err()
            .expect("a bad key logged in");
        let db = refused.as_db_error().expect("a server error");
        codes.push(db.code().code().to_string());
    }
    assert_eq!(&codes[..3], &["28P01"; 3], "{codes:?}");
    assert_eq!(&codes[3..], &["53300"; 9], "{codes:?}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let failures: Vec<Value> = gw
            .events()
            .into_iter()
            .filter(|e| e["type"] == "auth.failure")
            .collect();
        if failures.len() >= 4 {
            assert_eq!(failures.len(), 4, "{failures:#?}");
            let summary = failures[3]["detail"].as_str().unwrap();
            assert!(
                summary.contains("9 attempts refused unchecked"),
                "{summary}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no summary: {failures:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
