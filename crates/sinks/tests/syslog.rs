//! The syslog sink against a real rsyslog (Debian's `rsyslog` and `rsyslog-gnutls`), run in
//! the foreground as a child of each test with its own configuration: octet-counted TCP
//! and TLS (with a client certificate) listeners, the raw messages written to one file and
//! the structured data as rsyslog parsed it (`mmpstrucdata`) to another.
//!
//! What they prove: every event of a signed log arrives in leaf order with its checkpoints,
//! rsyslog reads the header and structured data as sent, and the receiver's file verifies
//! with `export::verify`; a receiver killed and restarted loses nothing (the closed
//! connection is noticed before the next batch is written); a receiver whose certificate
//! the configured CA did not sign gets nothing and the status names the TLS problem.
//! `throughput` (ignored by default) measures events per second.

use std::time::{Duration, Instant};

use portcullis_audit::AuditLog;
use portcullis_audit::checkpoint::{Ed25519Signer, Verifier};
use portcullis_config::{
    ClientTls, Durability, SinkFilter, SinkKind, SinkSpec, SyslogFacility, SyslogSink,
    SyslogTransport,
};
use portcullis_model::{EventType, Outcome};
use portcullis_sinks::testing::{
    Ca, ORIGIN, Rsyslog, TlsFiles, context, open_log, signer, wait_until,
};
use portcullis_sinks::{SinkSet, export};

// ---------------------------------------------------------------------------------------
// The log

/// `n` events, alternating outcomes so that the severities differ.
async fn record(log: &AuditLog, n: usize) {
    for i in 0..n {
        let (event_type, outcome) = if i % 2 == 0 {
            (EventType::Request, Outcome::Success)
        } else {
            (EventType::AuthFailure, Outcome::Rejected)
        };
        let mut event = log.event(event_type, outcome);
        // A target with the characters structured data must escape.
        event.target = Some("billing \"eu\" [prod]\\a".into());
        log.record(event).await.unwrap();
    }
}

fn syslog_sink(
    address: String,
    transport: SyslogTransport,
    tls: ClientTls,
    batch_max: usize,
) -> SinkSpec {
    SinkSpec {
        name: "siem".into(),
        filter: SinkFilter::default(),
        batch_max,
        batch_wait: Duration::ZERO,
        lag_warning: Duration::from_secs(60),
        retry_max: Duration::from_millis(500),
        timeout: Duration::from_secs(10),
        kind: SinkKind::Syslog(SyslogSink {
            address,
            transport,
            tls,
            facility: SyslogFacility::Local4,
            app_name: "portcullis".into(),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// What arrived

fn records(raw: &str) -> Vec<serde_json::Value> {
    raw.lines()
        .map(|line| {
            let start = line
                .find("{\"record\":\"")
                .unwrap_or_else(|| panic!("no record in {line}"));
            serde_json::from_str(&line[start..]).unwrap()
        })
        .collect()
}

/// Whether the checkpoint of `size` arrived (a plain search: the benchmark's files are
/// large).
fn has_checkpoint(raw: &str, size: u64) -> bool {
    raw.contains(&format!(
        "{{\"record\":\"checkpoint\",\"origin\":\"{ORIGIN}\",\"size\":{size},"
    ))
}

/// The leaf indexes of the event records, in the order received.
fn leaves(raw: &str) -> Vec<u64> {
    records(raw)
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect()
}

fn verify(raw: &str, signer: &Ed25519Signer) -> export::ExportSummary {
    let key = Verifier::for_signer(signer);
    export::verify(raw.as_bytes(), std::slice::from_ref(&key))
        .unwrap_or_else(|e| panic!("the receiver's copy does not verify: {e}"))
}

/// Every leaf in order (in full, or as a hash where the filter left it out), each
/// checkpoint right after the last leaf it covers, the structured data as rsyslog parsed
/// it matching the record it came with.
fn check_stream(receiver: &Rsyslog, leaves: u64) {
    let raw = receiver.raw();
    let records = records(&raw);
    let mut next = 0;
    for r in &records {
        match r["record"].as_str().unwrap() {
            "event" => {
                assert_eq!(r["leaf_index"], next, "each leaf once, in order");
                next += 1;
            }
            "omitted" => {
                assert_eq!(r["leaf_index"], next, "each leaf once, in order");
                next += r["leaf_hashes"].as_array().unwrap().len() as u64;
            }
            "checkpoint" => assert_eq!(r["size"], next, "a checkpoint after its last leaf"),
            other => panic!("{other}"),
        }
    }
    assert_eq!(next, leaves);
    let parsed = receiver.parsed();
    let parsed: Vec<&str> = parsed.lines().collect();
    assert_eq!(parsed.len(), records.len(), "{parsed:?}");
    for (line, record) in parsed.iter().zip(&records) {
        let fields: Vec<&str> = line.splitn(7, ' ').collect();
        let sd: serde_json::Value = serde_json::from_str(fields[6])
            .unwrap_or_else(|e| panic!("structured data not parsed by rsyslog ({e}): {line}"));
        assert_eq!(sd["origin"], ORIGIN, "{line}");
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(fields[2], host.trim(), "{line}");
        }
        assert_eq!(fields[3], "portcullis", "{line}");
        assert_eq!(fields[4], std::process::id().to_string(), "{line}");
        match record["record"].as_str().unwrap() {
            "event" => {
                let event = &record["event"];
                // local4 (20) * 8 + warning (4) or informational (6).
                let pri = if event["outcome"] == "rejected" {
                    "164"
                } else {
                    "166"
                };
                assert_eq!(fields[0], pri, "{line}");
                assert_eq!(fields[5], event["type"], "{line}");
                assert_eq!(sd["leaf"], record["leaf_index"].to_string(), "{line}");
                assert_eq!(sd["hash"], record["leaf_hash"], "{line}");
                assert_eq!(sd["id"], event["id"], "{line}");
                assert_eq!(sd["outcome"], event["outcome"], "{line}");
                // rsyslog's own rendering of TIMESTAMP: the same instant as the event's.
                let reported = chrono::DateTime::parse_from_rfc3339(fields[1]).unwrap();
                let time =
                    chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
                assert_eq!(reported.timestamp(), time.timestamp(), "{line}");
            }
            "omitted" => {
                assert_eq!(fields[0], "166", "{line}");
                assert_eq!(fields[5], "omitted", "{line}");
                assert_eq!(sd["leaf"], record["leaf_index"].to_string(), "{line}");
                let count = record["leaf_hashes"].as_array().unwrap().len();
                assert_eq!(sd["count"], count.to_string(), "{line}");
            }
            "checkpoint" => {
                assert_eq!(fields[0], "165", "{line}");
                assert_eq!(fields[5], "checkpoint", "{line}");
                assert_eq!(sd["size"], record["size"].to_string(), "{line}");
                assert_eq!(sd["root"], record["root"], "{line}");
            }
            other => panic!("{other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_rsyslog_over_tcp_in_leaf_order_and_its_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Rsyslog::start(dir.path(), None);
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 25).await;
    let spec = syslog_sink(
        receiver.address(),
        SyslogTransport::Tcp,
        ClientTls::default(),
        7,
    );
    let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
    record(&log, 12).await;
    log.checkpoint_now().await.unwrap();
    wait_until(
        "37 events and the last checkpoint",
        Duration::from_secs(30),
        || has_checkpoint(&receiver.raw(), 37),
    )
    .await;
    wait_until("caught up", Duration::from_secs(10), || {
        sinks.status()[0].state == "caught-up"
    })
    .await;
    let status = sinks.status().remove(0);
    assert_eq!((status.delivered, status.last_error), (37, None));
    assert_eq!(status.destination, format!("tcp://{}", receiver.address()));
    sinks.finish(Duration::from_secs(2)).await;

    check_stream(&receiver, 37);
    let summary = verify(&receiver.raw(), &signer);
    assert_eq!(
        (summary.logs[0].events, summary.logs[0].covered),
        (37, 37),
        "{summary:?}"
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_and_restarted_on_its_port_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Rsyslog::start(dir.path(), None);
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Strict, 10);
    let spec = syslog_sink(
        receiver.address(),
        SyslogTransport::Tcp,
        ClientTls::default(),
        5,
    );
    let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
    record(&log, 20).await;
    log.checkpoint_now().await.unwrap();
    wait_until("the first 20", Duration::from_secs(30), || {
        has_checkpoint(&receiver.raw(), 20)
    })
    .await;
    wait_until("caught up", Duration::from_secs(10), || {
        sinks.status()[0].state == "caught-up"
    })
    .await;

    // The receiver dies with the sink's connection open. The events recorded right after
    // would be written into that dead connection, and lost, if the sink did not notice it
    // was closed.
    receiver.kill();
    record(&log, 3).await;
    wait_until("the failure reported", Duration::from_secs(30), || {
        sinks.status()[0].last_error.is_some()
    })
    .await;
    let status = sinks.status().remove(0);
    assert_eq!(status.state, "retrying", "{status:?}");
    let error = status.last_error.unwrap();
    assert!(
        error.contains("cannot connect to the syslog receiver")
            && error.contains(&receiver.address()),
        "{error}"
    );
    assert_eq!(status.delivered, 20);
    record(&log, 27).await;
    log.checkpoint_now().await.unwrap();

    receiver.restart();
    wait_until("all 50 after the restart", Duration::from_secs(30), || {
        has_checkpoint(&receiver.raw(), 50)
    })
    .await;
    wait_until("caught up", Duration::from_secs(10), || {
        sinks.status()[0].state == "caught-up"
    })
    .await;
    assert_eq!(sinks.status()[0].last_error, None);
    sinks.finish(Duration::from_secs(2)).await;

    let raw = receiver.raw();
    let mut seen = leaves(&raw);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        (0..50).collect::<Vec<_>>(),
        "every leaf at least once"
    );
    let summary = verify(&raw, &signer);
    assert_eq!(summary.logs[0].covered, 50, "{summary:?}");
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_a_filtered_stream_arrives_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::write(dir.path(), &Ca::new("test syslog CA"));
    let receiver = Rsyslog::start(dir.path(), Some(&files));
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 30).await;
    log.checkpoint_now().await.unwrap();
    let mut spec = syslog_sink(
        receiver.address(),
        SyslogTransport::Tls,
        files.client(&files.ca),
        8,
    );
    // Only requests in full: the authentication failures travel as leaf hashes (omitted
    // records), and the copy still verifies.
    spec.filter.event_types = vec!["request".into()];
    let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
    wait_until("30 events over TLS", Duration::from_secs(30), || {
        has_checkpoint(&receiver.raw(), 30)
    })
    .await;
    // Later batches go over the same connection.
    record(&log, 10).await;
    log.checkpoint_now().await.unwrap();
    wait_until("40 events over TLS", Duration::from_secs(30), || {
        has_checkpoint(&receiver.raw(), 40)
    })
    .await;
    let status = sinks.status().remove(0);
    assert_eq!(status.last_error, None, "{}", receiver.stderr());
    assert_eq!(status.destination, format!("tls://{}", receiver.address()));
    sinks.finish(Duration::from_secs(2)).await;

    check_stream(&receiver, 40);
    let summary = verify(&receiver.raw(), &signer);
    let log_summary = &summary.logs[0];
    assert_eq!(
        (log_summary.events, log_summary.omitted, log_summary.covered),
        (20, 20, 40),
        "{summary:?}"
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_certificate_the_ca_did_not_sign_gets_nothing_and_the_status_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::write(dir.path(), &Ca::new("the receiver's CA"));
    let receiver = Rsyslog::start(dir.path(), Some(&files));
    // The sink trusts another CA (and presents a certificate that CA signed).
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = TlsFiles::write(&other_dir, &Ca::new("some other CA"));
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 5).await;
    let spec = syslog_sink(
        receiver.address(),
        SyslogTransport::Tls,
        other.client(&other.ca),
        8,
    );
    let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
    wait_until("the failure reported", Duration::from_secs(30), || {
        sinks.status()[0].last_error.is_some()
    })
    .await;
    let status = sinks.status().remove(0);
    let error = status.last_error.clone().unwrap();
    eprintln!("the sink reports: {error}");
    assert!(error.contains("TLS handshake"), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains(&other.ca.display().to_string()), "{error}");
    assert_eq!(
        (status.state.as_str(), status.delivered, status.lag_events),
        ("retrying", 0, 5)
    );
    sinks.finish(Duration::from_millis(200)).await;
    assert_eq!(receiver.raw(), "", "nothing was delivered");
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_the_client_certificate_gets_nothing_and_the_status_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles::write(dir.path(), &Ca::new("the receiver's CA"));
    let receiver = Rsyslog::start(dir.path(), Some(&files));
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = TlsFiles::write(&other_dir, &Ca::new("some other CA"));
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Strict, 10);
    record(&log, 5).await;
    // The sink trusts the receiver, but the receiver does not trust the sink: its client
    // certificate is from another CA, or it has none. With TLS 1.3 the sink's handshake is
    // over before the receiver says no; the refusal must still come before any batch.
    let mut wrong_client = files.client(&files.ca);
    wrong_client.client_cert = other.client(&other.ca).client_cert;
    let no_client = ClientTls {
        client_cert: None,
        ..files.client(&files.ca)
    };
    for (client, hint) in [
        (
            wrong_client,
            "does it accept this sink's client certificate?",
        ),
        (no_client, "does it require a client certificate?"),
    ] {
        let spec = syslog_sink(receiver.address(), SyslogTransport::Tls, client, 8);
        let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
        wait_until("the failure reported", Duration::from_secs(30), || {
            sinks.status()[0].last_error.is_some()
        })
        .await;
        let status = sinks.status().remove(0);
        let error = status.last_error.clone().unwrap();
        eprintln!("the sink reports: {error}");
        assert!(
            error.contains("ended the TLS handshake") && error.contains(hint),
            "{error}"
        );
        assert_eq!((status.delivered, status.lag_events), (0, 5), "{status:?}");
        sinks.finish(Duration::from_millis(200)).await;
    }
    assert_eq!(receiver.raw(), "", "nothing was delivered");
    log.close().await.unwrap();
}

/// Events per second to a real rsyslog, over TCP and TLS: 200,000 events recorded first
/// (batched durability), then the time from the sink's start until it is caught up.
/// `cargo test -p portcullis-sinks --release --test syslog throughput -- --ignored --nocapture`
///
/// On the project's 2-core machine (December 2026, shared with other builds): TCP 125,000
/// to 134,000 events/s delivered (115,000/s written by rsyslog), TLS 105,000/s (96,000 to
/// 100,000/s written), with `batch_max` 1000 or 5000 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it by name"]
async fn throughput() {
    const EVENTS: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let signer = signer();
    let data = dir.path().join("data");
    let log = open_log(&data, &signer, Durability::Batched, 10_000);
    let started = Instant::now();
    for _ in 0..EVENTS / 1000 {
        let events = (0..1000).map(|_| {
            let mut event = log.event(EventType::Request, Outcome::Success);
            event.target = Some("billing".into());
            log.record(event)
        });
        for result in futures_util::future::join_all(events).await {
            result.unwrap();
        }
    }
    log.checkpoint_now().await.unwrap();
    eprintln!("recorded {EVENTS} events in {:?}", started.elapsed());
    let files = TlsFiles::write(dir.path(), &Ca::new("bench CA"));
    for (transport, batch_max) in [
        (SyslogTransport::Tcp, 1000),
        (SyslogTransport::Tcp, 5000),
        (SyslogTransport::Tls, 1000),
        (SyslogTransport::Tls, 5000),
    ] {
        let run = dir.path().join(format!("{transport:?}-{batch_max}"));
        std::fs::create_dir_all(&run).unwrap();
        let tls = transport == SyslogTransport::Tls;
        let receiver = Rsyslog::start(&run, tls.then_some(&files));
        let client = if tls {
            files.client(&files.ca)
        } else {
            ClientTls::default()
        };
        let mut spec = syslog_sink(receiver.address(), transport, client, batch_max);
        spec.name = format!("bench-{transport:?}-{batch_max}");
        let started = Instant::now();
        let sinks = SinkSet::start(&[spec], &context(&data, &log)).unwrap();
        wait_until("caught up", Duration::from_secs(300), || {
            let s = &sinks.status()[0];
            s.delivered == EVENTS && s.state == "caught-up"
        })
        .await;
        let sent = started.elapsed();
        wait_until("rsyslog wrote them all", Duration::from_secs(300), || {
            has_checkpoint(&receiver.tail(), EVENTS)
        })
        .await;
        let stored = started.elapsed();
        sinks.finish(Duration::from_secs(2)).await;
        eprintln!(
            "{transport:?} batch_max {batch_max}: {:.0} events/s delivered ({sent:?}); {:.0} events/s in rsyslog's file ({stored:?})",
            EVENTS as f64 / sent.as_secs_f64(),
            EVENTS as f64 / stored.as_secs_f64()
        );
        let summary = verify(&receiver.raw(), &signer);
        assert_eq!(summary.logs[0].covered, EVENTS);
    }
    log.close().await.unwrap();
}
