//! Append throughput of the audit log, in events per second.
//!
//! strict/1: one caller, so every event pays a full fsync. strict/32: 32 concurrent
//! callers, where group commit shares each fsync among everyone queued. batched/1 and
//! batched/32: callers return once their event is queued. The log signs checkpoints at the
//! default cadence, as a deployed gateway's does.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use portcullis_audit::checkpoint::Ed25519Signer;
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::Durability;
use portcullis_model::{EventType, Outcome, PayloadDigest};

fn sample(log: &AuditLog) -> portcullis_model::AuditEvent {
    let mut event = log.event(EventType::Request, Outcome::Success);
    event.source = Some("127.0.0.1:5000".into());
    event.target = Some("tools".into());
    event.session = Some("0196f1b2-7c1e-7aaa-8bbb-123456789abc".into());
    event.action = Some("tools/call".into());
    event.resource = Some("search".into());
    event.decision = Some("allow".into());
    event.rule = Some("eng-tools".into());
    event.policy_version = Some("3f2a9c".into());
    event.arguments = Some(PayloadDigest::of(b"{\"query\":\"hello\"}"));
    event.duration_ms = Some(3.25);
    event
}

/// Records `iters` events split over `callers` concurrent tasks; returns the wall time.
async fn run(log: &AuditLog, callers: u64, iters: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        // Spread the remainder so exactly `iters` events are recorded.
        let n = iters / callers + u64::from(caller < iters % callers);
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                log.record(sample(&log)).await.expect("record");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Under the target directory, on the real disk: a tmpfs /tmp would make fsync free.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, durability) in [
        ("strict", Durability::Strict),
        ("batched", Durability::Batched),
    ] {
        for callers in [1u64, 32] {
            let dir = tmp.path().join(format!("{name}-{callers}"));
            // As deployed: checkpoints signed every 1,000 events and every second.
            let pkcs8 = Ed25519Signer::generate_pkcs8().expect("key");
            let signer = Ed25519Signer::from_pkcs8("bench-key", &pkcs8).expect("key");
            let settings = CheckpointSettings {
                origin: "portcullis/bench".into(),
                signer: Arc::new(signer),
                interval: Duration::from_secs(1),
                every: 1000,
            };
            let log = AuditLog::open_signed(&dir, "bench", durability, settings).expect("open");
            group.bench_function(format!("{name}/{callers}"), |b| {
                b.iter_custom(|iters| runtime.block_on(run(&log, callers, iters)));
            });
            // Batched: include the final flush outside the timing, but make sure the
            // events did get written.
            runtime.block_on(log.close()).expect("close");
        }
    }
    group.finish();
}

/// The per-event work done on the caller's thread before queueing: building the event and
/// its canonical bytes.
fn canonical(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let log = AuditLog::open(tmp.path(), "bench", Durability::Batched).expect("open");
    let event = sample(&log);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("new", |b| b.iter(|| sample(&log)));
    group.bench_function("canonical_bytes", |b| {
        b.iter(|| portcullis_audit::canonical_bytes(std::hint::black_box(&event)))
    });
    group.finish();
}

criterion_group!(benches, append, canonical);
criterion_main!(benches);
