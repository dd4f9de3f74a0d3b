//! `portcullis-bench replicas`: what shared state in PostgreSQL costs, in one run.
//!
//! 1. **Allowed calls.** `tools/call` direct, through a gateway whose control state is in
//!    SQLite (the default), and through one whose state is in PostgreSQL
//!    (`[state] backend = "postgres"`). Shared state is meant to be off the hot path (grants
//!    are cached in memory and refreshed by notifications), so the two should not differ.
//!    The two gateways alternate over a few rounds, so that drift in the machine's speed
//!    does not favour one.
//! 2. **Hold release across replicas.** Two replicas, A and B, on the same database. A
//!    caller's held call waits on A; an approver polls B's admin API for it and approves it
//!    there; the call completes on A once A hears of the decision (a `pg_notify` in the
//!    deciding transaction, then A re-reads the row). Measured: from the approve POST's
//!    return to the caller's answer, p50 and p99, and the same on one replica for comparison.
//!
//! The audit log is strict, as deployed. The database is the caller's (`--state-url`), and
//! the benchmark's tables are made in it on first use.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use crate::approvals::{Gateway, approve, held_call, pending, percentiles, start_held};
use crate::{
    Latency, Probe, latency_samples, measure_latency, measure_throughput, micros, start_upstream,
    throughput_run,
};

#[derive(clap::Args)]
pub struct Args {
    /// The portcullis binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/portcullis")]
    gateway: PathBuf,
    /// The shared state's database (a connection string), made for this benchmark.
    #[arg(long)]
    state_url: String,
    /// Sequential calls for each gateway's latency.
    #[arg(long, default_value_t = 3000)]
    latency_calls: usize,
    /// Concurrent clients for throughput.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds over which the two gateways alternate.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sequential held calls released across replicas (and as many on one replica).
    #[arg(long, default_value_t = 200)]
    held: usize,
    /// Audit durability.
    #[arg(long, default_value = "strict")]
    durability: String,
}

struct Keys {
    agent: String,
    agent_hash: String,
    lead: String,
    lead_hash: String,
}

/// A gateway named `id` with the hold rule on `refund`; `state` is the `[state]` table (empty:
/// SQLite).
fn start(
    args: &Args,
    upstream: std::net::SocketAddr,
    keys: &Keys,
    id: &str,
    state: &str,
) -> Result<Gateway> {
    start_held(
        &args.gateway,
        &args.durability,
        upstream,
        (&keys.agent_hash, &keys.lead_hash),
        "",
        &format!("id = \"{id}\""),
        state,
    )
}

/// `n` held calls on `holder`, each found and approved through `decider`'s admin API:
/// microseconds from the approve POST's return to the caller's answer.
async fn release_times(
    holder: &Gateway,
    decider: &Gateway,
    keys: &Keys,
    n: usize,
    first_id: u64,
) -> Result<Vec<f64>> {
    let caller = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let approver = reqwest::Client::new();
    let warmup = 5;
    let mut out = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let sent = Instant::now();
        let call = tokio::spawn(held_call(
            caller.clone(),
            holder.process.url.clone(),
            keys.agent.clone(),
            first_id + i as u64,
        ));
        let approval = loop {
            if let Some(first) = pending(&approver, &decider.admin, &keys.lead, 10)
                .await?
                .into_iter()
                .next()
            {
                break first;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                bail!("held call {i}: not pending through the deciding replica within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        approve(&approver, &decider.admin, &keys.lead, &approval).await?;
        let returned = Instant::now();
        let answered = call.await??;
        if i >= warmup {
            out.push(match answered.checked_duration_since(returned) {
                Some(d) => micros(d),
                None => -micros(returned - answered),
            });
        }
    }
    Ok(out)
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.held > 0, "--held must be at least 1");
    let upstream = start_upstream("127.0.0.1:0".parse()?).await?;
    let direct = format!("http://{upstream}/mcp");
    let (agent, agent_hash) = portcullis_identity::generate_api_key();
    let (lead, lead_hash) = portcullis_identity::generate_api_key();
    let keys = Keys {
        agent,
        agent_hash,
        lead,
        lead_hash,
    };
    let state = format!(
        "[state]\nbackend = \"postgres\"\nurl = {}\n",
        toml_string(&args.state_url)
    );
    println!(
        "Shared state benchmark (audit {}, signed checkpoints): {} sequential calls for latency, {} clients x {}s for throughput over {} rounds; {} held calls",
        args.durability,
        args.latency_calls,
        args.concurrency,
        args.seconds,
        args.rounds.max(1),
        args.held
    );

    // 1. Allowed calls: SQLite state vs PostgreSQL state.
    let sqlite = start(&args, upstream, &keys, "bench-sqlite", "")?;
    let postgres = start(&args, upstream, &keys, "bench-pg-a", &state)?;
    let direct_latency =
        measure_latency(&direct, &keys.agent, args.latency_calls, Probe::ToolCall).await?;
    let direct_rps =
        measure_throughput(&direct, &keys.agent, args.concurrency, args.seconds).await?;
    let rounds = args.rounds.max(1);
    let calls = args.latency_calls.div_ceil(rounds);
    let length = Duration::from_secs(args.seconds) / rounds as u32;
    let mut samples = [Vec::new(), Vec::new()];
    let mut load = [(0u64, Duration::ZERO); 2];
    for round in 0..rounds {
        for which in [round % 2, 1 - round % 2] {
            let url = [&sqlite.process.url, &postgres.process.url][which];
            samples[which].extend(latency_samples(url, &keys.agent, calls, Probe::ToolCall).await?);
        }
        for which in [round % 2, 1 - round % 2] {
            let url = [&sqlite.process.url, &postgres.process.url][which];
            let (done, took) = throughput_run(url, &keys.agent, args.concurrency, length).await?;
            load[which].0 += done;
            load[which].1 += took;
        }
    }
    let [sqlite_samples, pg_samples] = samples;
    let (sqlite_latency, pg_latency) = (Latency::of(sqlite_samples), Latency::of(pg_samples));
    let rate = |(done, took): (u64, Duration)| done as f64 / took.as_secs_f64();
    let (sqlite_rps, pg_rps) = (rate(load[0]), rate(load[1]));
    println!("\n1. Allowed tools/call");
    for (label, latency, rps) in [
        ("direct", &direct_latency, direct_rps),
        ("gateway, state in SQLite", &sqlite_latency, sqlite_rps),
        ("gateway, state in PostgreSQL", &pg_latency, pg_rps),
    ] {
        println!(
            "{:<30} p50 {:>8.1} us  p99 {:>8.1} us  throughput {:>9.0} calls/s  ({:.2} of direct)",
            label,
            micros(latency.p50),
            micros(latency.p99),
            rps,
            rps / direct_rps
        );
    }
    println!(
        "{:<30} p50 {:>+8.1} us  p99 {:>+8.1} us  throughput ratio {:.3}",
        "PostgreSQL vs SQLite",
        micros(pg_latency.p50) - micros(sqlite_latency.p50),
        micros(pg_latency.p99) - micros(sqlite_latency.p99),
        pg_rps / sqlite_rps
    );
    drop(sqlite);

    // 2. Hold release: across replicas, and on one replica.
    let b = start(&args, upstream, &keys, "bench-pg-b", &state)?;
    let mut across = release_times(&postgres, &b, &keys, args.held, 1).await?;
    let mut same = release_times(&postgres, &postgres, &keys, args.held, 100_000).await?;
    println!(
        "\n2. Hold release: {} held calls each, approve POST returned -> caller's answer",
        args.held
    );
    for (label, samples) in [
        ("held on A, approved on B", &mut across),
        ("held and approved on A", &mut same),
    ] {
        let (p50, p99) = percentiles(samples);
        let max = samples.last().copied().unwrap_or(0.0);
        println!(
            "{:<30} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
            label,
            p50 / 1000.0,
            p99 / 1000.0,
            max / 1000.0
        );
    }
    let (_, p99) = percentiles(&mut across);
    println!(
        "aim: release across replicas under 1 s at p99: {}",
        if p99 < 1_000_000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
