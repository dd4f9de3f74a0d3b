//! `portcullis-bench verify`: how long `portcullis audit verify` takes on a large log.
//!
//! Builds a log of realistic request events (sessions of 50 events, a signed checkpoint every
//! 10,000 events, the newest one published to a directory) through the real `AuditLog` in
//! batched mode, then times the verifier on it several times. The log can be kept with
//! `--dir`, so later runs measure without building again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use portcullis_audit::checkpoint::Verifier;
use portcullis_audit::{AuditLog, CheckpointSettings, keys, publish, verify};
use portcullis_config::Durability;
use portcullis_model::{AuditEvent, EventType, Identity, IdentityKind, Outcome, PayloadDigest};

#[derive(clap::Args)]
pub struct Args {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Keep the log here (built if `<dir>/data/audit.db` does not exist, reused if it does).
    /// Without it a temporary directory is used and removed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How many times to run the verifier.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Events per session, start and end included.
const SESSION_EVENTS: u64 = 50;
/// Concurrent recorders while building: enough to keep the batched writer busy.
const RECORDERS: u64 = 8;

pub async fn run(args: Args) -> Result<()> {
    let temp;
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir_in(".").context("temp dir on the working disk")?;
            temp.path().to_path_buf()
        }
    };
    let data = root.join("data");
    let key_dir = root.join("keys");
    let published = root.join("published");
    if !data.join("audit.db").exists() {
        let started = Instant::now();
        build(&data, &key_dir, &published, args.events).await?;
        println!(
            "built a log of {} events in {:.1} s",
            args.events,
            started.elapsed().as_secs_f64()
        );
    }
    let key = keys::load_verifier(&key_dir.join(format!("{}.pub", keys::AUDIT_KEY)))?;
    let mut times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let (elapsed, summary) = timed_verify(&data, &key, &published)?;
        println!(
            "verified in {:.2} s ({:.0} events/s): {summary}",
            elapsed.as_secs_f64(),
            summary.events as f64 / elapsed.as_secs_f64()
        );
        times.push(elapsed);
    }
    times.sort();
    println!(
        "audit verify, {} events: best {:.2} s, median {:.2} s",
        args.events,
        times[0].as_secs_f64(),
        times[times.len() / 2].as_secs_f64()
    );
    Ok(())
}

fn timed_verify(
    data: &Path,
    key: &Verifier,
    published: &Path,
) -> Result<(Duration, verify::Summary)> {
    let started = Instant::now();
    let summary = verify::verify(data, key, &[published.to_path_buf()], &[], &mut |_, _| {})
        .map_err(|failure| anyhow::anyhow!("audit log INVALID: {failure}"))?;
    Ok((started.elapsed(), summary))
}

pub async fn build(data: &Path, key_dir: &Path, published: &Path, events: u64) -> Result<()> {
    if events < 2 {
        bail!("--events must be at least 2 (a gateway.start and a gateway.stop)");
    }
    keys::generate(key_dir, keys::AUDIT_KEY, "bench-gw")?;
    let signer = keys::load_signer(key_dir, keys::AUDIT_KEY)?;
    let log = AuditLog::open_signed(
        data,
        "bench-gw",
        Durability::Batched,
        CheckpointSettings {
            origin: "portcullis.example/bench-gw".into(),
            signer: Arc::new(signer),
            interval: Duration::from_secs(3600),
            every: 10_000,
        },
    )?;
    log.record(log.event(EventType::GatewayStart, Outcome::Info))
        .await?;
    // Whole sessions, split over the recorders; what is left over is filled with requests
    // outside sessions so the log has exactly `events` events.
    let body = events - 2;
    let sessions = body / SESSION_EVENTS;
    let mut tasks = Vec::new();
    for recorder in 0..RECORDERS {
        let log = log.clone();
        let mine = sessions / RECORDERS + u64::from(recorder < sessions % RECORDERS);
        tasks.push(tokio::spawn(async move {
            for n in 0..mine {
                let session = format!("{recorder:02x}{n:030x}");
                let mut start = log.event(EventType::SessionStart, Outcome::Info);
                start.session = Some(session.clone());
                log.record(start).await?;
                for _ in 0..SESSION_EVENTS - 2 {
                    log.record(request(&log, Some(&session))).await?;
                }
                let mut end = log.event(EventType::SessionEnd, Outcome::Info);
                end.session = Some(session.clone());
                log.record(end).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    for _ in 0..body - sessions * SESSION_EVENTS {
        log.record(request(&log, None)).await?;
    }
    log.record(log.event(EventType::GatewayStop, Outcome::Info))
        .await?;
    let newest = log.checkpoints().borrow().clone();
    log.close().await?;
    std::fs::create_dir_all(published)?;
    if let Some(checkpoint) = newest {
        publish::publish_to_directory(published, &checkpoint).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// A request event as the gateway writes one for an allowed tool call.
fn request(log: &AuditLog, session: Option<&str>) -> AuditEvent {
    let mut event = log.event(EventType::Request, Outcome::Success);
    event.source = Some("127.0.0.1:50123".into());
    event.identity = Some(Identity {
        issuer: "https://idp.example".into(),
        subject: "agent-7".into(),
        display_name: Some("Agent Seven".into()),
        kind: IdentityKind::Agent,
        groups: vec!["agents".into()],
        auth_method: portcullis_model::AuthMethod::ApiKey,
        credential_id: Some(
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        act: vec![],
    });
    event.target = Some("crm".into());
    event.session = session.map(str::to_string);
    event.action = Some("tools/call".into());
    event.resource = Some("lookup".into());
    event.request_id = Some("42".into());
    event.decision = Some("allow".into());
    event.rule = Some("agents may look up".into());
    event.policy_version = Some("3f2a9c".into());
    event.arguments = Some(PayloadDigest::of(b"{\"customer\":\"cus_1001\"}"));
    event.result = Some(PayloadDigest::of(b"{\"plan\":\"pro\"}"));
    event.duration_ms = Some(3.25);
    event
}
