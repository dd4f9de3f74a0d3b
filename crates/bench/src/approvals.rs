//! `portcullis-bench approvals`: what the approval workflow costs a caller, measured in one run
//! on one machine against the same in-process upstream as `mcp`.
//!
//! 1. **Allow paths.** `tools/call` direct to the upstream; through the gateway under a plain
//!    allow rule; and through the gateway under a `requires_grant = true` rule, the caller
//!    holding a grant it asked for through the admin API and a second identity approved.
//!    Every allowed call's decision looks the caller's grants up while any grant exists (with
//!    none, the lookup is skipped), so this shows what that lookup costs on the hot path.
//!    Latency: sequential calls on one connection; throughput: concurrent clients for a fixed
//!    time; the two gateways alternate over a few rounds, so that drift in the machine's speed
//!    does not favour one.
//! 2. **Held round trip.** Sequential held calls (`decision = "hold"` on `refund`): a caller
//!    task sends the call, an approver task polls `GET /api/v1/approvals?status=pending`
//!    (about every millisecond) and approves what appears. Measured: the time until the
//!    approval is visible to the approver (the `approval.requested` event's commit and the
//!    `approvals.db` write are on that path, plus up to one polling interval), the approve
//!    POST itself, and the time from sending the approve POST to the caller's answer (the
//!    decision's commits, the `approval.released` event, the upstream hop and the request's
//!    own event).
//! 3. **Many held at once.** K calls held concurrently (on K connections opened beforehand);
//!    once all are pending, several approver tasks approve them all at once. Measured: the
//!    time until all K are listed (holds per second), one list of all K, the time from the
//!    first approve to the last caller's answer (approvals released per second), and that
//!    every caller got a result.
//!
//! The audit log is strict (the default: each event is on disk before the step it records
//! takes effect), with signed checkpoints, as deployed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{
    GatewayProcess, Latency, MODERN, Probe, bench_config, free_port, latency_samples,
    launch_gateway, measure_latency, measure_throughput, micros, probe_call, start_upstream,
    throughput_run, wait_for_port,
};

#[derive(clap::Args)]
pub struct Args {
    /// The portcullis binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/portcullis")]
    gateway: PathBuf,
    /// Sequential calls for each allow path's latency.
    #[arg(long, default_value_t = 3000)]
    latency_calls: usize,
    /// Concurrent clients for each allow path's throughput.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds over which the two gateways' allow-path measurements alternate (the calls and
    /// seconds above are split between them).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sequential held calls, each approved by the polling approver.
    #[arg(long, default_value_t = 200)]
    held: usize,
    /// Calls held at once, then approved together (at most 1000: one admin API list).
    #[arg(long, default_value_t = 500)]
    concurrent_held: usize,
    /// Approver tasks approving the concurrently held calls.
    #[arg(long, default_value_t = 8)]
    approvers: usize,
    /// Audit durability (strict is the default a deployment gets).
    #[arg(long, default_value = "strict")]
    durability: String,
}

/// The tool whose calls are held (approvers: the group `leads`).
pub(crate) const HELD_TOOL: &str = "refund";
/// The most records one admin API list returns.
const MAX_LIST: usize = 1000;

/// The identities every gateway of this benchmark knows.
struct Keys {
    agent: String,
    agent_hash: String,
    lead: String,
    lead_hash: String,
}

/// A gateway with its admin API.
pub(crate) struct Gateway {
    pub(crate) process: GatewayProcess,
    pub(crate) admin: String,
}

/// Starts a gateway whose `lookup` rule is `lookup_rule`, with the hold rule on `refund`.
fn start(
    args: &Args,
    upstream: std::net::SocketAddr,
    keys: &Keys,
    lookup_rule: &str,
) -> Result<Gateway> {
    start_held(
        &args.gateway,
        &args.durability,
        upstream,
        (&keys.agent_hash, &keys.lead_hash),
        lookup_rule,
        "",
        "",
    )
}

/// Starts a gateway with the agent's and the lead's keys (`hashes`), `lookup_rule` on the
/// `lookup` rule, the hold rule on `refund`, `gateway_extra` in `[gateway]` and `tail` (more
/// tables) at the end of the file.
pub(crate) fn start_held(
    binary: &std::path::Path,
    durability: &str,
    upstream: std::net::SocketAddr,
    (agent_hash, lead_hash): (&str, &str),
    lookup_rule: &str,
    gateway_extra: &str,
    tail: &str,
) -> Result<Gateway> {
    let admin_port = free_port()?;
    // The shared configuration, plus the approver's key and the hold rule.
    let body = format!(
        r#"{base}

[[identity.api_keys]]
name = "bench-lead"
kind = "human"
sha256 = "{lead_hash}"
groups = ["leads"]

[[rules]]
name = "refunds wait for a lead"
who.groups = ["agents"]
target = "bench"
tools = ["{HELD_TOOL}"]
decision = "hold"
approvers = ["leads"]
min_approvals = 1
timeout = "10m"
require_reason = true

{tail}
"#,
        base = bench_config(agent_hash, upstream, lookup_rule),
    );
    let process = launch_gateway(
        binary,
        durability,
        true,
        &format!("{gateway_extra}\nadmin_listen = \"127.0.0.1:{admin_port}\""),
        &body,
    )?;
    wait_for_port(admin_port, "the admin API")?;
    Ok(Gateway {
        process,
        admin: format!("http://127.0.0.1:{admin_port}/api/v1"),
    })
}

/// One admin API request; fails unless the status is `expect`.
pub(crate) async fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
    expect: u16,
) -> Result<Value> {
    let mut req = client.request(method, &url).bearer_auth(key);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.with_context(|| url.clone())?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    if status != expect {
        bail!("{url}: HTTP {status} (expected {expect}): {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url}: not JSON: {text}"))
}

/// The approvals `key`'s holder sees pending, newest first.
pub(crate) async fn pending(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    limit: usize,
) -> Result<Vec<Value>> {
    let list = admin(
        client,
        reqwest::Method::GET,
        format!("{api}/approvals?status=pending&limit={limit}"),
        key,
        None,
        200,
    )
    .await?;
    match list["approvals"].as_array() {
        Some(list) => Ok(list.clone()),
        None => bail!("the approvals list has no \"approvals\" array: {list}"),
    }
}

/// Approves `approval` (as listed: its id and digest) as `key`'s holder.
pub(crate) async fn approve(
    client: &reqwest::Client,
    api: &str,
    key: &str,
    approval: &Value,
) -> Result<Value> {
    let id = approval["id"]
        .as_str()
        .context("an approval without an id")?;
    admin(
        client,
        reqwest::Method::POST,
        format!("{api}/approvals/{id}/approve"),
        key,
        Some(json!({"reason": "benchmark", "digest": approval["digest"]})),
        200,
    )
    .await
}

/// The last JSON-RPC message of an answer: the body itself, or an SSE stream's last event.
fn final_message(content_type: &str, text: &str) -> Option<Value> {
    if content_type.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .next_back()
    } else {
        serde_json::from_str(text).ok()
    }
}

/// A `tools/call` of the held tool, with a reason; returns when its answer arrived, and fails
/// unless the answer is a `result`.
pub(crate) async fn held_call(
    client: reqwest::Client,
    url: String,
    key: String,
    id: u64,
) -> Result<Instant> {
    let body = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": HELD_TOOL,
            "arguments": {"customer": "cus_1001", "amount_usd": 25},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "portcullis-bench", "version": "1"},
                "dev.portcullis/reason": "duplicate charge on the March invoice",
            }
        }
    });
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", HELD_TOOL)
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await?;
    let answered = Instant::now();
    let answer = final_message(&content_type, &text);
    if !status.is_success() || answer.as_ref().and_then(|a| a.get("result")).is_none() {
        bail!("held call {id}: HTTP {status}, no result: {text}");
    }
    Ok(answered)
}

/// The kernel's count of connections dropped because a listen queue was full (all sockets of
/// the machine), if it can be read.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// p50 and p99 of samples in microseconds.
pub(crate) fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(
        (1..=MAX_LIST).contains(&args.concurrent_held),
        "--concurrent-held must be 1 to {MAX_LIST} (one admin API list shows at most {MAX_LIST})"
    );
    ensure!(
        args.held > 0 && args.approvers > 0,
        "--held and --approvers must be at least 1"
    );
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
    let client = reqwest::Client::new();

    println!(
        "Approvals benchmark (audit {}, signed checkpoints): {} sequential calls for latency, {} clients x {}s for throughput; the gateways alternate over {} rounds",
        args.durability,
        args.latency_calls,
        args.concurrency,
        args.seconds,
        args.rounds.max(1)
    );

    // 1. Allow paths.
    let plain = start(&args, upstream, &keys, "")?;
    let granted = start(
        &args,
        upstream,
        &keys,
        "requires_grant = true\napprovers = [\"leads\"]\nmax_grant = \"8h\"",
    )?;
    ensure!(
        probe_call(
            &client,
            &granted.process.url,
            &keys.agent,
            1,
            Probe::ToolCall
        )
        .await
        .is_err(),
        "the requires_grant gateway allowed a lookup before any grant"
    );
    let asked = admin(
        &client,
        reqwest::Method::POST,
        format!("{}/grants", granted.admin),
        &keys.agent,
        Some(json!({"target": "bench", "tools": ["lookup"], "duration": "30m", "reason": "benchmark"})),
        201,
    )
    .await?;
    let decided = approve(&client, &granted.admin, &keys.lead, &asked).await?;
    ensure!(
        decided["status"] == "approved",
        "the grant was not approved: {decided}"
    );
    probe_call(
        &client,
        &granted.process.url,
        &keys.agent,
        2,
        Probe::ToolCall,
    )
    .await
    .context("a lookup with the approved grant")?;

    let direct_latency =
        measure_latency(&direct, &keys.agent, args.latency_calls, Probe::ToolCall).await?;
    let direct_rps =
        measure_throughput(&direct, &keys.agent, args.concurrency, args.seconds).await?;
    // The two gateways in alternating rounds, so that a slow patch of the machine does not
    // land on one of them only.
    let rounds = args.rounds.max(1);
    let calls = args.latency_calls.div_ceil(rounds);
    let length = Duration::from_secs(args.seconds) / rounds as u32;
    let mut samples = [Vec::new(), Vec::new()];
    let mut load = [(0u64, Duration::ZERO); 2];
    for round in 0..rounds {
        for which in [round % 2, 1 - round % 2] {
            let url = [&plain.process.url, &granted.process.url][which];
            samples[which].extend(latency_samples(url, &keys.agent, calls, Probe::ToolCall).await?);
        }
        for which in [round % 2, 1 - round % 2] {
            let url = [&plain.process.url, &granted.process.url][which];
            let (done, took) = throughput_run(url, &keys.agent, args.concurrency, length).await?;
            load[which].0 += done;
            load[which].1 += took;
        }
    }
    let [plain_samples, granted_samples] = samples;
    let (plain_latency, granted_latency) =
        (Latency::of(plain_samples), Latency::of(granted_samples));
    let rate = |(done, took): (u64, Duration)| done as f64 / took.as_secs_f64();
    let (plain_rps, granted_rps) = (rate(load[0]), rate(load[1]));
    drop(plain);
    drop(granted);

    println!("\n1. Allow paths, tools/call");
    for (label, latency, rps) in [
        ("direct", &direct_latency, direct_rps),
        ("gateway, allow rule", &plain_latency, plain_rps),
        ("gateway, grant rule+grant", &granted_latency, granted_rps),
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
        "grant rule vs allow rule",
        micros(granted_latency.p50) - micros(plain_latency.p50),
        micros(granted_latency.p99) - micros(plain_latency.p99),
        granted_rps / plain_rps
    );

    // 2. Held round trip, sequential.
    let gw = start(&args, upstream, &keys, "")?;
    let caller_client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let approver = reqwest::Client::new();
    let warmup = 10;
    let mut to_visible = Vec::with_capacity(args.held);
    let mut poll_rtt = Vec::new();
    let mut polls_per_call = Vec::with_capacity(args.held);
    let mut approve_rtt = Vec::with_capacity(args.held);
    let mut approve_to_answer = Vec::with_capacity(args.held);
    let mut returned_to_answer = Vec::with_capacity(args.held);
    let mut whole = Vec::with_capacity(args.held);
    for i in 0..warmup + args.held {
        let sent = Instant::now();
        let call = tokio::spawn(held_call(
            caller_client.clone(),
            gw.process.url.clone(),
            keys.agent.clone(),
            i as u64,
        ));
        // Visible at the latest when the poll showing it returned: this includes up to one
        // polling interval (tokio's timer rounds the 1 ms sleep up to 1-2 ms).
        let mut polls = 0;
        let approval = loop {
            let polled = Instant::now();
            let list = pending(&approver, &gw.admin, &keys.lead, 10).await?;
            if i >= warmup {
                poll_rtt.push(micros(polled.elapsed()));
            }
            polls += 1;
            if let Some(first) = list.into_iter().next() {
                break first;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                bail!("held call {i}: no pending approval appeared within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let visible = Instant::now();
        let approve_sent = Instant::now();
        approve(&approver, &gw.admin, &keys.lead, &approval).await?;
        let approve_returned = Instant::now();
        let answered = call.await??;
        if i < warmup {
            continue;
        }
        let signed = |later: Instant, earlier: Instant| match later.checked_duration_since(earlier)
        {
            Some(d) => micros(d),
            None => -micros(earlier - later),
        };
        to_visible.push(micros(visible - sent));
        polls_per_call.push(polls as f64);
        approve_rtt.push(micros(approve_returned - approve_sent));
        approve_to_answer.push(signed(answered, approve_sent));
        returned_to_answer.push(signed(answered, approve_returned));
        whole.push(signed(answered, sent));
    }
    println!(
        "\n2. Held round trip: {} sequential held calls, one approver polling the pending list every ~1 ms",
        args.held
    );
    for (label, samples) in [
        ("call sent -> visible in list", &mut to_visible),
        ("approve POST round trip", &mut approve_rtt),
        ("approve sent -> answer", &mut approve_to_answer),
        ("approve returned -> answer", &mut returned_to_answer),
        ("whole held call", &mut whole),
        ("one poll (GET pending)", &mut poll_rtt),
    ] {
        let (p50, p99) = percentiles(samples);
        println!(
            "{:<30} p50 {:>8.2} ms  p99 {:>8.2} ms",
            label,
            p50 / 1000.0,
            p99 / 1000.0
        );
    }
    let (polls_p50, polls_p99) = percentiles(&mut polls_per_call);
    println!(
        "{:<30} p50 {:>8.0}     p99 {:>8.0}     (direct tools/call p50: {:.2} ms)",
        "polls per held call",
        polls_p50,
        polls_p99,
        micros(direct_latency.p50) / 1000.0
    );

    // 3. Many held at once.
    let k = args.concurrent_held;
    ensure!(
        pending(&approver, &gw.admin, &keys.lead, MAX_LIST)
            .await?
            .is_empty(),
        "approvals left pending before the concurrent run"
    );
    // K connections opened before, so that what is measured is holding, not connecting: the
    // gateway listens with a backlog of 128 (the standard library's and mio's default), and a
    // burst of new connections beyond it waits a 1 s SYN retransmission.
    let warm: Vec<_> = (0..k)
        .map(|i| {
            let (client, url, key) = (
                caller_client.clone(),
                gw.process.url.clone(),
                keys.agent.clone(),
            );
            tokio::spawn(async move {
                probe_call(&client, &url, &key, 2_000_000 + i as u64, Probe::ToolCall).await
            })
        })
        .collect();
    for w in warm {
        w.await?
            .context("opening connections with allowed lookups")?;
    }
    let overflows_before = listen_overflows();
    let first_sent = Instant::now();
    let callers: Vec<_> = (0..k)
        .map(|i| {
            tokio::spawn(held_call(
                caller_client.clone(),
                gw.process.url.clone(),
                keys.agent.clone(),
                1_000_000 + i as u64,
            ))
        })
        .collect();
    let mut k_polls = 0;
    let listed = loop {
        k_polls += 1;
        let list = pending(&approver, &gw.admin, &keys.lead, k).await?;
        if list.len() >= k {
            break list;
        }
        if first_sent.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {k} calls were pending after 120 s", list.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_held = Instant::now();
    // What one approver's view of the backlog costs: a list of all K pending approvals.
    let list_started = Instant::now();
    let relisted = pending(&approver, &gw.admin, &keys.lead, k).await?.len();
    let list_rtt = list_started.elapsed();
    ensure!(relisted == k, "{relisted} of {k} approvals listed");
    let mut shares: Vec<Vec<Value>> = vec![Vec::new(); args.approvers];
    for (i, approval) in listed.into_iter().enumerate() {
        shares[i % args.approvers].push(approval);
    }
    let first_approve = Instant::now();
    let deciders: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (client, api, key) = (approver.clone(), gw.admin.clone(), keys.lead.clone());
            tokio::spawn(async move {
                for approval in &share {
                    approve(&client, &api, &key, approval).await?;
                }
                anyhow::Ok(Instant::now())
            })
        })
        .collect();
    let mut last_approved = first_approve;
    for decider in deciders {
        last_approved = last_approved.max(decider.await??);
    }
    let mut last_answer = first_approve;
    let mut failures = Vec::new();
    for caller in callers {
        match caller.await? {
            Ok(at) => last_answer = last_answer.max(at),
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "{} of {k} concurrently held callers got no result; the first: {first:#}",
            failures.len()
        );
    }
    let release = last_answer - first_approve;
    println!(
        "\n3. Many held at once: {k} calls held concurrently, approved by {} approver tasks",
        args.approvers
    );
    println!(
        "{:<30} {:>8.1} ms  ({:.0} holds/s)",
        "all held (sent -> listed)",
        micros(all_held - first_sent) / 1000.0,
        k as f64 / (all_held - first_sent).as_secs_f64()
    );
    println!(
        "{:<30} {:>8.1} ms  (one GET of the {k} pending; {k_polls} polls every 20 ms until all were there)",
        "list all pending",
        micros(list_rtt) / 1000.0
    );
    println!(
        "{:<30} {:>8.1} ms",
        "first -> last approve return",
        micros(last_approved - first_approve) / 1000.0
    );
    println!(
        "{:<30} {:>8.1} ms  ({:.0} approvals/s released)",
        "first approve -> last answer",
        micros(release) / 1000.0,
        k as f64 / release.as_secs_f64()
    );
    println!("{:<30} all {k} callers got a result", "");
    if let (Some(before), Some(after)) = (overflows_before, listen_overflows()) {
        println!(
            "{:<30} {} listen-queue overflows on this machine meanwhile (each costs a caller 1 s)",
            "",
            after - before
        );
    }
    drop(gw);
    Ok(())
}
