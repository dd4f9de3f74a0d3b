//! The nats sink against real NATS JetStream servers: the machine's (127.0.0.1:4222, each
//! test with a stream and subject of its own, deleted at the end) and, for the outage test,
//! a private `nats-server` this test starts, kills and restarts on the same port and store.
//!
//! What is checked is what the SIEM team would read back with a JetStream consumer: every
//! leaf at least once, in leaf order, with the checkpoints, and the payloads as JSON lines
//! pass `export::verify` with the log's key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use portcullis_audit::AuditLog;
use portcullis_audit::checkpoint::{Ed25519Signer, Verifier};
use portcullis_config::{ClientTls, Durability, NatsSink, Secret, SinkFilter, SinkKind, SinkSpec};
use portcullis_model::{EventType, Outcome};
use portcullis_sinks::engine::{self, Context};
use portcullis_sinks::nats::NatsTransport;
use portcullis_sinks::testing::{Ca, ORIGIN, OwnNats, open_log, signer, wait_until};
use portcullis_sinks::{SinkSet, export};

const SHARED_NATS: &str = "nats://127.0.0.1:4222";

fn nats_sink(url: &str, subject: &str, batch_max: usize, timeout: Duration) -> SinkSpec {
    SinkSpec {
        name: "bus".into(),
        filter: SinkFilter::default(),
        batch_max,
        batch_wait: Duration::ZERO,
        lag_warning: Duration::from_secs(60),
        retry_max: Duration::from_millis(500),
        timeout,
        kind: SinkKind::Nats(NatsSink {
            url: url.into(),
            subject: subject.into(),
            credentials: None,
            token: None,
            tls: ClientTls::default(),
        }),
    }
}

async fn record(log: &AuditLog, n: usize) {
    for _ in 0..n {
        let mut event = log.event(EventType::Request, Outcome::Success);
        event.target = Some("billing".into());
        log.record(event).await.unwrap();
    }
}

/// A unique suffix for stream and subject names on the shared server.
fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    jetstream::new(client)
}

/// A file-backed stream capturing `subject`, as the SIEM team would create it.
async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Deletes the test's stream on the shared server, also when the test fails.
struct StreamGuard {
    name: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: Drop cannot await, and the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(SHARED_NATS).await {
                    let _ = jetstream::new(client).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

/// What a consumer reads back: each message's headers and payload, in stream order.
struct ReadBack {
    payloads: Vec<String>,
    records: Vec<serde_json::Value>,
    headers: Vec<async_nats::HeaderMap>,
}

async fn read_back(js: &jetstream::Context, name: &str) -> ReadBack {
    let mut stream = js.get_stream(name).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut out = ReadBack {
        payloads: Vec::new(),
        records: Vec::new(),
        headers: Vec::new(),
    };
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), messages.next())
        .await
        .expect("the consumer delivers what the stream holds")
    {
        let message = message.unwrap();
        let payload = String::from_utf8(message.payload.to_vec()).unwrap();
        out.records.push(serde_json::from_str(&payload).unwrap());
        out.payloads.push(payload);
        out.headers
            .push(message.headers.clone().unwrap_or_default());
    }
    assert_eq!(out.payloads.len(), count);
    out
}

/// Leaf indexes of the event records, in stream order, and the check that every leaf
/// `0..n` is there, first seen in order, nothing missing.
fn assert_complete_in_order(records: &[serde_json::Value], n: u64) -> usize {
    let leaves: Vec<u64> = records
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    let mut first_seen = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &leaf in &leaves {
        if seen.insert(leaf) {
            first_seen.push(leaf);
        }
    }
    assert_eq!(
        first_seen,
        (0..n).collect::<Vec<_>>(),
        "every leaf, first seen in leaf order, no gap"
    );
    leaves.len() - first_seen.len()
}

fn verify(payloads: &[String], signer: &Ed25519Signer) -> export::ExportSummary {
    let key = Verifier::for_signer(signer);
    export::verify(payloads.join("\n").as_bytes(), std::slice::from_ref(&key)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_the_stream_with_its_headers_and_a_resend_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    let id = unique();
    let (name, subject) = (format!("PCT_{id}"), format!("pctest.{id}.audit"));
    let js = jetstream_at(SHARED_NATS).await;
    create_stream(&js, &name, &subject).await;
    let _guard = StreamGuard { name: name.clone() };

    record(&log, 37).await;
    log.checkpoint_now().await.unwrap();
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(SHARED_NATS, &subject, 8, Duration::from_secs(10));
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until("37 events delivered", Duration::from_secs(30), || {
        let s = &sinks.status()[0];
        s.delivered == 37 && s.state == "caught-up"
    })
    .await;
    let status = sinks.status().remove(0);
    assert_eq!(
        status.destination,
        format!("nats://127.0.0.1:4222 subject {subject}")
    );
    sinks.finish(Duration::from_secs(2)).await;

    let back = read_back(&js, &name).await;
    assert_eq!(
        assert_complete_in_order(&back.records, 37),
        0,
        "stored once"
    );
    let summary = verify(&back.payloads, &signer);
    assert_eq!((summary.logs[0].covered, summary.logs[0].events), (37, 37));
    for (record, headers) in back.records.iter().zip(&back.headers) {
        let header = |n: &str| headers.get(n).map(|v| v.as_str().to_string());
        assert_eq!(
            header("Portcullis-Record").as_deref(),
            record["record"].as_str()
        );
        match record["record"].as_str().unwrap() {
            "event" => {
                assert_eq!(
                    header("Nats-Msg-Id").as_deref(),
                    record["event"]["id"].as_str()
                );
                assert_eq!(
                    header("Portcullis-Leaf-Index"),
                    Some(record["leaf_index"].to_string())
                );
                assert_eq!(
                    header("Portcullis-Leaf-Hash").as_deref(),
                    record["leaf_hash"].as_str()
                );
            }
            "checkpoint" => assert_eq!(
                header("Nats-Msg-Id"),
                Some(format!("checkpoint-{ORIGIN}-{}", record["size"]))
            ),
            other => panic!("{other}"),
        }
    }

    // Sending everything again (a lost acknowledgement): the stream keeps one copy and
    // says the rest were duplicates.
    let mut transport = NatsTransport::new(
        match &spec.kind {
            SinkKind::Nats(n) => n.clone(),
            _ => unreachable!(),
        },
        ORIGIN,
        spec.timeout,
    )
    .unwrap();
    let replayed = engine::replay(&spec, &mut transport, &data, ORIGIN, 0, None, 1)
        .await
        .unwrap();
    assert_eq!(replayed.events, 37);
    assert_eq!(
        transport.duplicates(),
        back.records.len() as u64,
        "every record resent is a duplicate"
    );
    let mut stream = js.get_stream(&name).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        back.records.len() as u64
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_captures_is_named_and_nothing_is_lost_once_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    let id = unique();
    let (name, subject) = (format!("PCT_{id}"), format!("pctest.{id}.nostream"));
    record(&log, 12).await;
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(SHARED_NATS, &subject, 5, Duration::from_secs(10));
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until(
        "the missing stream reported",
        Duration::from_secs(30),
        || sinks.status()[0].last_error.is_some(),
    )
    .await;
    let status = sinks.status().remove(0);
    let error = status.last_error.unwrap();
    assert!(
        error.contains(&format!("no JetStream stream captures subject {subject}"))
            && error.contains("nats stream add"),
        "{error}"
    );
    assert_eq!((status.state.as_str(), status.delivered), ("retrying", 0));
    record(&log, 3).await;

    // The SIEM team creates the stream: everything arrives, from the first event.
    let js = jetstream_at(SHARED_NATS).await;
    create_stream(&js, &name, &subject).await;
    let _guard = StreamGuard { name: name.clone() };
    log.checkpoint_now().await.unwrap();
    wait_until("15 events delivered", Duration::from_secs(30), || {
        let s = &sinks.status()[0];
        s.delivered == 15 && s.state == "caught-up"
    })
    .await;
    assert_eq!(sinks.status()[0].last_error, None);
    sinks.finish(Duration::from_secs(2)).await;
    let back = read_back(&js, &name).await;
    assert_complete_in_order(&back.records, 15);
    assert_eq!(verify(&back.payloads, &signer).logs[0].covered, 15);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_the_stream_takes_is_rejected_and_reported_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 100);
    let id = unique();
    let (name, subject) = (format!("PCT_{id}"), format!("pctest.{id}.small"));
    let js = jetstream_at(SHARED_NATS).await;
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        max_message_size: 4096,
        ..Default::default()
    })
    .await
    .unwrap();
    let _guard = StreamGuard { name: name.clone() };
    record(&log, 3).await;
    let mut big = log.event(EventType::Request, Outcome::Success);
    big.target = Some("x".repeat(8000));
    log.record(big).await.unwrap();
    record(&log, 3).await;
    log.checkpoint_now().await.unwrap();
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(SHARED_NATS, &subject, 100, Duration::from_secs(10));
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until("7 leaves past", Duration::from_secs(30), || {
        let s = &sinks.status()[0];
        s.delivered == 7 && s.state == "caught-up"
    })
    .await;
    assert_eq!(sinks.status()[0].rejected, 1);
    sinks.finish(Duration::from_secs(2)).await;
    let report = std::fs::read_to_string(data.join("sinks/bus.rejected.jsonl")).unwrap();
    assert!(
        report.contains("\"leaf_index\":3") && report.contains("refuses the record"),
        "{report}"
    );
    eprintln!("rejected: {report}");
    let back = read_back(&js, &name).await;
    let leaves: Vec<u64> = back
        .records
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    assert_eq!(leaves, [0, 1, 2, 4, 5, 6]);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_loses_nothing_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    let mut server = OwnNats::start(&dir.path().join("nats-store"));
    let js = jetstream_at(&server.url()).await;
    create_stream(&js, "AUDIT", "audit.gw").await;
    drop(js);

    record(&log, 300).await;
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(&server.url(), "audit.gw", 10, Duration::from_secs(3));
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until("some delivered", Duration::from_secs(30), || {
        sinks.status()[0].delivered >= 20
    })
    .await;
    server.kill();
    let delivered_at_kill = sinks.status()[0].delivered;
    record(&log, 200).await;
    wait_until("the outage reported", Duration::from_secs(30), || {
        let s = &sinks.status()[0];
        s.state == "retrying" && s.last_error.is_some()
    })
    .await;
    let status = sinks.status().remove(0);
    let error = status.last_error.clone().unwrap();
    assert!(
        error.contains(&server.url()) && !error.contains("no JetStream stream"),
        "{status:?}"
    );
    assert!(status.lag_events > 0, "{status:?}");
    assert!(
        status.delivered < 500,
        "killed mid-stream: {delivered_at_kill} delivered at the kill, {status:?}"
    );
    // Still failing a while later, without buffering: the delivered count stays.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sinks.status()[0].delivered, status.delivered);

    server.restart();
    record(&log, 20).await;
    log.checkpoint_now().await.unwrap();
    wait_until(
        "caught up after the restart",
        Duration::from_secs(60),
        || {
            let s = &sinks.status()[0];
            s.delivered == 520 && s.state == "caught-up"
        },
    )
    .await;
    sinks.finish(Duration::from_secs(2)).await;

    let js = jetstream_at(&server.url()).await;
    let back = read_back(&js, "AUDIT").await;
    let duplicates = assert_complete_in_order(&back.records, 520);
    let summary = verify(&back.payloads, &signer);
    assert_eq!(
        (summary.logs[0].covered, summary.logs[0].events),
        (520, 520)
    );
    eprintln!(
        "killed with {delivered_at_kill} of 500 delivered; {} messages read back, {duplicates} event duplicates; last error during the outage: {error}",
        back.records.len()
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_fails_each_attempt_within_the_timeout_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    let server = OwnNats::start(&dir.path().join("nats-store"));
    let js = jetstream_at(&server.url()).await;
    create_stream(&js, "AUDIT", "audit.gw").await;
    record(&log, 50).await;
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(&server.url(), "audit.gw", 20, Duration::from_secs(2));
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until("50 delivered", Duration::from_secs(30), || {
        sinks.status()[0].state == "caught-up"
    })
    .await;

    // Frozen: the connection stays open, no ack comes. Each attempt fails at the timeout.
    server.signal("-STOP");
    let frozen = Instant::now();
    record(&log, 100).await;
    wait_until("the hang reported", Duration::from_secs(30), || {
        sinks.status()[0].last_error.is_some()
    })
    .await;
    let waited = frozen.elapsed();
    let status = sinks.status().remove(0);
    let error = status.last_error.clone().unwrap();
    assert!(
        waited < Duration::from_secs(8),
        "failed after {waited:?}: {error}"
    );
    assert!(
        error.contains("2.0s") || error.contains("timed out"),
        "{error}"
    );
    assert_eq!((status.delivered, status.state.as_str()), (50, "retrying"));
    // Retried a few times meanwhile, each bounded.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sinks.status()[0].delivered, 50);

    server.signal("-CONT");
    log.checkpoint_now().await.unwrap();
    wait_until("caught up after the thaw", Duration::from_secs(60), || {
        let s = &sinks.status()[0];
        s.delivered == 150 && s.state == "caught-up"
    })
    .await;
    sinks.finish(Duration::from_secs(2)).await;
    let back = read_back(&js, "AUDIT").await;
    let duplicates = assert_complete_in_order(&back.records, 150);
    assert_eq!(verify(&back.payloads, &signer).logs[0].covered, 150);
    eprintln!(
        "hung server: reported after {waited:?} ({error}); {} messages read back, {duplicates} event duplicates",
        back.records.len()
    );
    log.close().await.unwrap();
}

/// The sink's state once it has failed, or delivered all `n` events.
async fn outcome(spec: &SinkSpec, context: &Context, n: u64) -> portcullis_sinks::SinkStatus {
    let sinks = SinkSet::start(std::slice::from_ref(spec), context).unwrap();
    wait_until("delivery or an error", Duration::from_secs(30), || {
        let s = &sinks.status()[0];
        s.last_error.is_some() || (s.delivered == n && s.state == "caught-up")
    })
    .await;
    let status = sinks.status().remove(0);
    sinks.finish(Duration::from_millis(200)).await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_a_client_certificate_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 6).await;
    log.checkpoint_now().await.unwrap();
    let ca = Ca::new("test nats ca");
    let ca_pem = ca.write(&dir.path().join("ca.pem"));
    // The server's certificate names nats.internal and localhost, not 127.0.0.1: reached
    // by address, the sink needs server_name.
    let (server_cert, server_key) =
        ca.issue_files(dir.path(), "server", &["nats.internal", "localhost"], false);
    let (client_cert, client_key) = ca.issue_files(dir.path(), "client", &["portcullis"], true);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let server = OwnNats::start_with(
        &dir.path().join("store"),
        &[
            "--tls".into(),
            "--tlscert".into(),
            path(&server_cert),
            "--tlskey".into(),
            path(&server_key),
            "--tlsverify".into(),
            "--tlscacert".into(),
            path(&ca_pem),
        ],
    );
    // The SIEM team's stream, made through localhost.
    let admin = async_nats::ConnectOptions::new()
        .add_root_certificates(ca_pem.clone())
        .add_client_certificate(client_cert.clone(), client_key.clone())
        .require_tls(true)
        .connect(format!("tls://localhost:{}", server.port))
        .await
        .unwrap();
    let js = jetstream::new(admin);
    create_stream(&js, "AUDIT", "audit.gw").await;

    let url = format!("tls://127.0.0.1:{}", server.port);
    let sink = |ca: &Path, client: bool, server_name: Option<&str>| {
        let mut spec = nats_sink(&url, "audit.gw", 100, Duration::from_secs(5));
        if let SinkKind::Nats(n) = &mut spec.kind {
            n.tls = ClientTls {
                ca: Some(ca.to_path_buf()),
                client_cert: client.then(|| (client_cert.clone(), client_key.clone())),
                server_name: server_name.map(str::to_string),
            };
        }
        spec
    };
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };

    // The URL's host is not a name of the certificate: refused, and the status says why.
    let status = outcome(&sink(&ca_pem, true, None), &context, 6).await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("cannot connect to {url}"))
            && error.contains("certificate not valid for name \"127.0.0.1\""),
        "{error}"
    );
    // Another CA: refused.
    let other = Ca::new("other").write(&dir.path().join("other.pem"));
    let status = outcome(&sink(&other, true, Some("nats.internal")), &context, 6).await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    // No client certificate: the server refuses.
    let status = outcome(&sink(&ca_pem, false, Some("nats.internal")), &context, 6).await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("cannot connect to {url}")),
        "{error}"
    );
    assert_eq!(status.delivered, 0);
    eprintln!("without the client certificate: {error}");

    // All three right: delivered, and the copy verifies.
    let status = outcome(&sink(&ca_pem, true, Some("nats.internal")), &context, 6).await;
    assert_eq!((status.delivered, status.last_error), (6, None));
    let back = read_back(&js, "AUDIT").await;
    assert_complete_in_order(&back.records, 6);
    assert_eq!(verify(&back.payloads, &signer).logs[0].covered, 6);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_an_authorization_error_that_does_not_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 4).await;
    log.checkpoint_now().await.unwrap();
    let server = OwnNats::start_with(
        &dir.path().join("store"),
        &["--auth".into(), "right-token-8c1f".into()],
    );
    let admin = async_nats::ConnectOptions::with_token("right-token-8c1f".into())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(admin);
    create_stream(&js, "AUDIT", "audit.gw").await;
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let sink = |token: &str| {
        let mut spec = nats_sink(&server.url(), "audit.gw", 100, Duration::from_secs(5));
        if let SinkKind::Nats(n) = &mut spec.kind {
            n.token = Some(Secret::Literal(token.into()));
        }
        spec
    };
    let status = outcome(&sink("wrong-token-77aa"), &context, 4).await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("authorization violation"), "{error}");
    assert!(!error.contains("wrong-token-77aa"), "{error}");
    let status = outcome(&sink("right-token-8c1f"), &context, 4).await;
    assert_eq!((status.delivered, status.last_error), (4, None));
    log.close().await.unwrap();
}

/// Delivered events per second to the machine's JetStream, from a log recorded
/// beforehand (`cargo test --release -p portcullis-sinks --test nats -- --ignored
/// --nocapture throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on purpose, in release"]
async fn throughput_to_jetstream() {
    let events: usize = std::env::var("NATS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch_max: usize = std::env::var("NATS_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let signer = signer();
    let log = Arc::new(open_log(&data, &signer, Durability::Batched, 5000));
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { record(&log, events / 8).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    log.checkpoint_now().await.unwrap();
    eprintln!("recorded {events} events in {:?}", started.elapsed());

    let id = unique();
    let (name, subject) = (format!("PCT_{id}"), format!("pctest.{id}.bench"));
    let js = jetstream_at(SHARED_NATS).await;
    create_stream(&js, &name, &subject).await;
    let _guard = StreamGuard { name: name.clone() };
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let spec = nats_sink(SHARED_NATS, &subject, batch_max, Duration::from_secs(30));
    let started = Instant::now();
    let sinks = SinkSet::start(std::slice::from_ref(&spec), &context).unwrap();
    wait_until("caught up", Duration::from_secs(600), || {
        let s = &sinks.status()[0];
        s.delivered == events as u64 && s.state == "caught-up"
    })
    .await;
    let elapsed = started.elapsed();
    sinks.finish(Duration::from_secs(2)).await;
    let mut stream = js.get_stream(&name).await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    eprintln!(
        "delivered {events} events ({stored} messages with the checkpoints) in {elapsed:?} with batch_max {batch_max}: {:.0} events/s",
        events as f64 / elapsed.as_secs_f64()
    );
    assert!(stored >= events as u64);
    log.close().await.unwrap();
}
