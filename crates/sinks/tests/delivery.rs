//! The delivery engine against a real audit log, with the file sink as the receiver:
//! everything arrives in leaf order with the checkpoints, a restart resumes from the
//! cursor, a receiver that fails only grows the lag, and the copy verifies.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_audit::checkpoint::{Ed25519Signer, Verifier};
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::{FileSink, SinkFilter, SinkKind, SinkSpec};
use portcullis_model::{EventType, Outcome};
use portcullis_sinks::engine::Context;
use portcullis_sinks::{SinkSet, export};

const ORIGIN: &str = "portcullis/test-gw";

fn signer() -> Arc<Ed25519Signer> {
    let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
    Arc::new(Ed25519Signer::from_pkcs8("test-log-key", &pkcs8).unwrap())
}

fn open_log(dir: &Path, signer: &Arc<Ed25519Signer>) -> AuditLog {
    AuditLog::open_signed(
        dir,
        "test-gw",
        portcullis_config::Durability::Strict,
        CheckpointSettings {
            origin: ORIGIN.into(),
            signer: signer.clone(),
            interval: Duration::from_millis(50),
            every: 10,
        },
    )
    .unwrap()
}

fn file_sink(path: &Path, filter: SinkFilter) -> SinkSpec {
    SinkSpec {
        name: "lake".into(),
        filter,
        batch_max: 7,
        batch_wait: Duration::ZERO,
        lag_warning: Duration::from_secs(60),
        retry_max: Duration::from_millis(500),
        timeout: Duration::from_secs(5),
        kind: SinkKind::File(FileSink {
            path: path.to_path_buf(),
            max_bytes: 100 << 20,
            keep: 2,
        }),
    }
}

async fn record(log: &AuditLog, n: usize, target: &str) {
    for _ in 0..n {
        let mut event = log.event(EventType::Request, Outcome::Success);
        event.target = Some(target.into());
        log.record(event).await.unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_once_in_order_and_a_restart_resumes_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/audit.jsonl");
    let signer = signer();
    let log = open_log(&dir.path().join("data"), &signer);
    let context = Context {
        data_dir: dir.path().join("data"),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    record(&log, 25, "billing").await;
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    record(&log, 5, "billing").await;
    log.checkpoint_now().await.unwrap();
    wait_until("30 events and the last checkpoint", || {
        lines(&out)
            .iter()
            .any(|r| r["record"] == "checkpoint" && r["size"] == 30)
    })
    .await;
    // The file holds a batch before its cursor moves: wait for the acknowledgement.
    wait_until("the cursor at 30", || sinks.status()[0].delivered == 30).await;
    sinks.finish(Duration::from_secs(2)).await;

    // While the sink is stopped, the log grows; after a restart it resumes where it was.
    record(&log, 12, "billing").await;
    log.checkpoint_now().await.unwrap();
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    wait_until("42 events", || {
        lines(&out)
            .iter()
            .any(|r| r["record"] == "checkpoint" && r["size"] == 42)
    })
    .await;
    sinks.finish(Duration::from_secs(2)).await;

    let records = lines(&out);
    let leaves: Vec<u64> = records
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        leaves,
        (0..42).collect::<Vec<_>>(),
        "each leaf once, in order"
    );
    // A checkpoint always follows the last leaf it covers.
    let mut last_leaf = None;
    for r in &records {
        match r["record"].as_str().unwrap() {
            "event" => last_leaf = r["leaf_index"].as_u64(),
            "checkpoint" => assert_eq!(Some(r["size"].as_u64().unwrap() - 1), last_leaf),
            other => panic!("{other}"),
        }
    }
    let key = Verifier::for_signer(signer.as_ref());
    let text = std::fs::read_to_string(&out).unwrap();
    let summary = export::verify(text.as_bytes(), std::slice::from_ref(&key)).unwrap();
    assert_eq!(summary.logs[0].covered, 42, "{summary:?}");
    assert_eq!(summary.logs[0].events, 42);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_stream_still_verifies_and_an_edit_or_gap_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let signer = signer();
    let log = open_log(&dir.path().join("data"), &signer);
    for i in 0..20 {
        record(&log, 1, if i % 3 == 0 { "billing" } else { "hr" }).await;
    }
    log.checkpoint_now().await.unwrap();
    let context = Context {
        data_dir: dir.path().join("data"),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let filter = SinkFilter {
        targets: vec!["billing".into()],
        ..SinkFilter::default()
    };
    let sinks = SinkSet::start(&[file_sink(&out, filter)], &context).unwrap();
    wait_until("the checkpoint of 20", || {
        lines(&out)
            .iter()
            .any(|r| r["record"] == "checkpoint" && r["size"] == 20)
    })
    .await;
    sinks.finish(Duration::from_secs(2)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let records = lines(&out);
    assert_eq!(records.iter().filter(|r| r["record"] == "event").count(), 7);
    assert!(
        records
            .iter()
            .all(|r| r["record"] != "event" || r["event"]["target"] == "billing")
    );
    let keys = [Verifier::for_signer(signer.as_ref())];
    let summary = export::verify(text.as_bytes(), &keys).unwrap();
    assert_eq!((summary.logs[0].events, summary.logs[0].omitted), (7, 13));

    // Duplicates (a batch sent twice) and any line order are fine.
    let mut shuffled: Vec<&str> = text.lines().collect();
    shuffled.reverse();
    shuffled.push(shuffled[3]);
    export::verify(shuffled.join("\n").as_bytes(), &keys).unwrap();

    // An edited event, a missing leaf and a foreign key are each found.
    let edited = text.replacen("\"target\":\"billing\"", "\"target\":\"billinG\"", 1);
    let e = export::verify(edited.as_bytes(), &keys).unwrap_err();
    assert!(matches!(e, export::ExportError::Edited { .. }), "{e}");
    let first_event = text
        .lines()
        .position(|l| l.contains("\"record\":\"event\""))
        .unwrap();
    let gapped: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != first_event)
        .map(|(_, l)| l)
        .collect();
    let e = export::verify(gapped.join("\n").as_bytes(), &keys).unwrap_err();
    assert!(matches!(e, export::ExportError::Gap { from: 0, .. }), "{e}");
    let other = [Verifier::for_signer(self::signer().as_ref())];
    let e = export::verify(text.as_bytes(), &other).unwrap_err();
    assert!(
        e.to_string().contains("no signature by the given key"),
        "{e}"
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_grows_the_lag_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The sink writes into a directory that is a file: every delivery fails.
    let blocker = dir.path().join("blocked");
    std::fs::write(&blocker, b"").unwrap();
    let out = blocker.join("audit.jsonl");
    let signer = signer();
    let log = open_log(&dir.path().join("data"), &signer);
    let context = Context {
        data_dir: dir.path().join("data"),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    record(&log, 9, "billing").await;
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    wait_until("a failure reported", || {
        sinks.status()[0].last_error.is_some()
    })
    .await;
    let status = sinks.status().remove(0);
    assert_eq!(status.state, "retrying");
    assert_eq!((status.delivered, status.lag_events), (0, 9));
    assert!(
        status.last_error.as_deref().unwrap().contains("blocked"),
        "{status:?}"
    );
    // The reason is on disk for `sinks status` while the gateway is down.
    sinks.finish(Duration::from_millis(100)).await;
    let on_disk = portcullis_sinks::engine::status_from_disk(
        &dir.path().join("data"),
        &[file_sink(&out, SinkFilter::default())],
    )
    .unwrap();
    assert_eq!(on_disk[0].lag_events, 9);
    assert!(on_disk[0].last_error.is_some());

    // The receiver comes back: everything arrives, nothing was skipped.
    std::fs::remove_file(&blocker).unwrap();
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    wait_until("9 events", || {
        lines(&out)
            .iter()
            .filter(|r| r["record"] == "event")
            .count()
            == 9
    })
    .await;
    wait_until("caught up", || sinks.status()[0].state == "caught-up").await;
    assert_eq!(sinks.status()[0].last_error, None);
    sinks.finish(Duration::from_secs(1)).await;
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_its_tail_and_grew_again_stops_the_sink_instead_of_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("audit.jsonl");
    let signer = signer();
    let log = open_log(&data, &signer);
    record(&log, 5, "billing").await;
    log.close().await.unwrap();
    drop(log);
    // A backup of the log at 5 events (WAL checkpointed on close).
    let backup = dir.path().join("backup.db");
    std::fs::copy(data.join("audit.db"), &backup).unwrap();

    let log = open_log(&data, &signer);
    record(&log, 5, "billing").await;
    let context = Context {
        data_dir: data.clone(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    wait_until("10 delivered", || sinks.status()[0].delivered >= 10).await;
    sinks.finish(Duration::from_secs(1)).await;
    log.close().await.unwrap();
    drop(log);

    // The log goes back to the backup (as after losing its tail), then grows past where the
    // sink was: leaves 5..10 are other events now.
    for name in ["audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
    std::fs::copy(&backup, data.join("audit.db")).unwrap();
    let log = open_log(&data, &signer);
    record(&log, 8, "billing").await;
    let context = Context {
        committed: Some(log.committed()),
        ..context
    };
    let before = lines(&out).len();
    let sinks = SinkSet::start(&[file_sink(&out, SinkFilter::default())], &context).unwrap();
    wait_until("the sink to stop", || sinks.status()[0].state == "stopped").await;
    let status = sinks.status().remove(0);
    assert!(
        status.last_error.as_deref().unwrap().contains("at leaf 9"),
        "{status:?}"
    );
    assert_eq!(lines(&out).len(), before, "nothing more was sent");
    // `sinks status` from disk says the same.
    let on_disk = portcullis_sinks::engine::status_from_disk(
        &data,
        &[file_sink(&out, SinkFilter::default())],
    )
    .unwrap();
    assert_eq!(on_disk[0].state, "stopped", "{on_disk:?}");
    sinks.finish(Duration::from_secs(1)).await;
    log.close().await.unwrap();
}
