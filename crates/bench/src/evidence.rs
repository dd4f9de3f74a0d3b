//! `portcullis-bench evidence`: how long an AU-6 report and its OSCAL documents take over a
//! large log, and how much memory they need.
//!
//! Uses the log `portcullis-bench verify` builds (1,000,000 events by default, kept with
//! `--dir`), reports on its whole span, and writes every document the scheduler writes:
//! the JSON, HTML and Markdown reports and the OSCAL assessment results and plan. Peak
//! memory is the process's high-water mark of resident memory, reset after the log is
//! built (Linux `clear_refs`), so building does not count.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use portcullis_audit::{AuditReader, keys};
use portcullis_evidence::collect::Options;
use portcullis_evidence::documents::{self, Format, render_all};
use portcullis_evidence::integrity::VerifyInputs;
use portcullis_evidence::{Period, build_report};

#[derive(clap::Args)]
pub struct Args {
    /// The directory `portcullis-bench verify --dir` built its log in (built here first if
    /// it has none).
    #[arg(long)]
    dir: PathBuf,
    /// Events in the log, when it is built here.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

pub async fn run(args: Args) -> Result<()> {
    let data = args.dir.join("data");
    let key_dir = args.dir.join("keys");
    let published = args.dir.join("published");
    if !data.join("audit.db").exists() {
        crate::verify::build(&data, &key_dir, &published, args.events).await?;
    }
    let reader = AuditReader::open(&data)?;
    let count = reader.count()?;
    let first = reader.time_at(1)?.context("the log is empty")?;
    let last = reader.time_at(count)?.context("the log is empty")?;
    drop(reader);
    let since = portcullis_evidence::period::parse_time(&first)?;
    let until = portcullis_evidence::period::parse_time(&last)? + chrono::Duration::seconds(1);
    let period = Period::new(since, until)?;
    let key = keys::load_verifier(&key_dir.join(format!("{}.pub", keys::AUDIT_KEY)))?;
    let inputs = VerifyInputs {
        key,
        published: vec![published],
        witnesses: vec![],
    };
    let out = tempfile::tempdir_in(&args.dir)?;
    let mut times = Vec::new();
    for run in 0..args.runs.max(1) {
        reset_peak_memory();
        let started = Instant::now();
        let report = build_report(&data, period.clone(), &inputs, &Options::default())?;
        let built = started.elapsed();
        let documents = render_all(
            &report,
            &[Format::Html, Format::Markdown, Format::Json, Format::Oscal],
            &documents::stem(&report),
            "bench",
        );
        for document in &documents {
            documents::write_atomically(&out.path().join(&document.file), &document.bytes)?;
        }
        let elapsed = started.elapsed();
        println!(
            "run {}: {} events in the period, report built in {:.2} s, all documents written in \
             {:.2} s; peak resident memory {} MB; log verified: {}",
            run + 1,
            report.totals.events,
            built.as_secs_f64(),
            elapsed.as_secs_f64(),
            peak_memory_mb().map_or("?".into(), |mb| mb.to_string()),
            report.integrity.verified,
        );
        times.push(elapsed);
    }
    times.sort();
    println!(
        "evidence report, {count} events: best {:.2} s, median {:.2} s",
        times[0].as_secs_f64(),
        times[times.len() / 2].as_secs_f64()
    );
    Ok(())
}

/// Resets the high-water mark of resident memory (Linux; ignored elsewhere).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` in MB (Linux).
fn peak_memory_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
