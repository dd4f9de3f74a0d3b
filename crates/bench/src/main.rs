//! `portcullis-bench mcp`: `tools/call` round trips direct to a streamable-HTTP MCP upstream
//! and through the gateway, in the same run, so the figures share one machine's noise.
//!
//! The upstream is a minimal in-process 2026-07-28 MCP server (answers `tools/call` with a
//! small JSON result), so what is measured is the gateway: authentication (API key), policy,
//! the audit write (strict: fsync before release, or batched), and the proxying itself.
//! Latency is measured with one connection, sequentially; throughput with 32 concurrent
//! clients for a fixed time.
#![forbid(unsafe_code)]

mod approvals;
mod console;
mod evidence;
mod http;
mod replicas;
mod sinks;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::post;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Whole-system benchmarks: direct vs through the gateway")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// MCP tools/call over streamable HTTP.
    Mcp(Args),
    /// `audit verify` on a large log (1,000,000 events by default).
    Verify(verify::Args),
    /// Time and peak memory of an AU-6 report and its OSCAL documents over a large log.
    Evidence(evidence::Args),
    /// The approval workflow: allow paths with and without a grant, held calls released by
    /// an approver through the admin API, and a backlog of held calls approved at once.
    Approvals(approvals::Args),
    /// Audit sinks: delivered events per second for each kind, and the lag behind a log
    /// written at 10,000 events per second.
    Sinks(sinks::Args),
    /// The web console: the inbox page and its live fragment vs the admin API's JSON, the
    /// audit search over a large log, and a held call decided in the console vs the API.
    Console(console::Args),
    /// The HTTP adapter: a REST call direct, through nginx, and through the gateway (API key,
    /// policy, masking, audit strict and batched), with wrk.
    Http(http::Args),
    /// Shared state in PostgreSQL: allowed calls with state in SQLite vs PostgreSQL, and a
    /// hold released across two replicas.
    Replicas(replicas::Args),
}

#[derive(clap::Args)]
struct Args {
    /// The portcullis binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/portcullis")]
    gateway: PathBuf,
    /// Sequential calls for the latency measurement.
    #[arg(long, default_value_t = 3000)]
    latency_calls: usize,
    /// Concurrent clients for the throughput measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Audit durability modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "strict,batched")]
    durability: Vec<String>,
    /// Where the benchmark's upstream listens (a fixed port lets a reference proxy, such as
    /// nginx, be configured in front of it).
    #[arg(long, default_value = "127.0.0.1:0")]
    upstream_listen: SocketAddr,
    /// Also measure a reference proxy in front of the upstream: NAME=URL.
    #[arg(long)]
    reference: Vec<String>,
    /// Also measure an earlier portcullis build, NAME=PATH, in the same run (configured without
    /// the options it may not know: no signed checkpoints).
    #[arg(long)]
    baseline: Vec<String>,
    /// Also measure the gateway with the allowing rule masking results (`mask = "default"`:
    /// every built-in detector over every answer).
    #[arg(long)]
    mask: bool,
    /// Session recording modes to measure the current build with: `off`, `on` (recorded
    /// beside the events), `encrypted` (sealed to an age recipient made with `age-keygen`).
    #[arg(long, value_delimiter = ',', default_value = "off")]
    recording: Vec<Recording>,
    /// Also measure the gateway streaming its log to sinks: `syslog` over TCP (to a
    /// receiver in this process), `nats` (the machine's JetStream on 127.0.0.1:4222),
    /// `file`. The issue's figure is `--sinks syslog,nats`.
    #[arg(long, value_delimiter = ',')]
    sinks: Vec<String>,
}

/// How a measured gateway records sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Recording {
    Off,
    On,
    Encrypted,
}

impl Recording {
    /// The `[recording]` section for this mode; `encrypted` makes a fresh age key pair
    /// (the identity is thrown away: nobody reads a benchmark's recordings back).
    fn section(self) -> Result<String> {
        Ok(match self {
            Recording::Off => String::new(),
            Recording::On => "[recording]\nmode = \"strict\"\n".into(),
            Recording::Encrypted => {
                let out = Command::new("age-keygen")
                    .output()
                    .context("age-keygen (apt install age) makes the benchmark's recipient")?;
                anyhow::ensure!(out.status.success(), "age-keygen failed");
                let text = String::from_utf8_lossy(&out.stderr).to_string()
                    + &String::from_utf8_lossy(&out.stdout);
                let recipient = text
                    .split_whitespace()
                    .find(|w| w.starts_with("age1"))
                    .context("age-keygen printed no recipient")?;
                format!("[recording]\nmode = \"strict\"\nrecipients = [\"{recipient}\"]\n")
            }
        })
    }
}

/// One gateway configuration to measure.
struct Variant<'a> {
    label: String,
    binary: PathBuf,
    durability: &'a str,
    /// Signed checkpoints published to a directory (the current build only).
    signed: bool,
    mask: bool,
    recording: Recording,
    /// `[[sinks]]` tables added to the configuration.
    sinks: String,
}

pub(crate) const MODERN: &str = "2026-07-28";

async fn upstream_handler(body: axum::body::Bytes) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request["id"].clone();
    let result = match request["method"].as_str() {
        Some("server/discover") => json!({
            "resultType": "complete", "supportedVersions": [MODERN], "capabilities": {"tools": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "bench-upstream", "version": "1"}},
            "ttlMs": 0, "cacheScope": "public"
        }),
        Some("tools/list") => {
            json!({"resultType": "complete", "tools": [
                {"name": "lookup", "inputSchema": {"type": "object"}},
                {"name": "refund", "inputSchema": {"type": "object"}},
            ], "ttlMs": 0, "cacheScope": "public"})
        }
        Some("tools/call") => json!({
            "resultType": "complete",
            "content": [{"type": "text", "text": "{\"id\":\"cus_1001\",\"plan\":\"pro\",\"balance_usd\":42.5,\"status\":\"active\"}"}],
            "isError": false
        }),
        _ => {
            let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}});
            return ([("content-type", "application/json")], body.to_string()).into_response_ext();
        }
    };
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    ([("content-type", "application/json")], body.to_string()).into_response_ext()
}

trait IntoResponseExt {
    fn into_response_ext(self) -> axum::response::Response;
}
impl<T: axum::response::IntoResponse> IntoResponseExt for T {
    fn into_response_ext(self) -> axum::response::Response {
        self.into_response()
    }
}

pub(crate) async fn start_upstream(listen: SocketAddr) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/mcp", post(upstream_handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

pub(crate) struct GatewayProcess {
    child: Child,
    /// Its configuration and data; removed with it.
    dir: tempfile::TempDir,
    pub(crate) url: String,
    /// `http://127.0.0.1:<port>`, the front door.
    pub(crate) base: String,
}

/// Each sink's lag (events, seconds) as `portcullis sinks status` reports it.
fn sinks_status(binary: &Path, gateway: &GatewayProcess) -> Result<String> {
    let out = Command::new(binary)
        .args(["sinks", "status", "--json", "--config"])
        .arg(gateway.dir.path().join("portcullis.toml"))
        .output()
        .context("portcullis sinks status")?;
    anyhow::ensure!(
        out.status.success(),
        "sinks status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<Value> = serde_json::from_slice(&out.stdout)?;
    Ok(statuses
        .iter()
        .map(|s| {
            format!(
                "{}: {} of {} delivered, lag {} events / {:.2}s",
                s["name"].as_str().unwrap_or("?"),
                s["delivered"],
                s["head"],
                s["lag_events"],
                s["lag_seconds"].as_f64().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join("; "))
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration every benchmark gateway shares: the agent's key, the upstream as target
/// `bench`, and the rule allowing `lookup` (with `lookup_extra` lines added to it).
pub(crate) fn bench_config(agent_hash: &str, upstream: SocketAddr, lookup_extra: &str) -> String {
    format!(
        r#"[[identity.api_keys]]
name = "bench-agent"
kind = "agent"
sha256 = "{agent_hash}"
groups = ["agents"]

[targets.bench]
kind = "mcp"
url = "http://{upstream}/mcp"

[[rules]]
name = "agents may look up"
who.groups = ["agents"]
target = "bench"
tools = ["lookup"]
{lookup_extra}"#
    )
}

/// Starts a gateway as the `mcp` benchmark configures it: one agent key, the `bench` target,
/// one rule allowing `lookup`. `signed`: as deployed, with checkpoints signed at the default
/// cadence and published to a directory.
fn start_gateway(
    variant: &Variant<'_>,
    upstream: SocketAddr,
    key_hash: &str,
) -> Result<GatewayProcess> {
    let mask = if variant.mask {
        "mask = \"default\"\n"
    } else {
        ""
    };
    let body = bench_config(key_hash, upstream, mask)
        + "\n"
        + &variant.recording.section()?
        + &variant.sinks;
    launch_gateway(
        &variant.binary,
        variant.durability,
        variant.signed,
        "",
        &body,
    )
}

/// Starts a gateway whose `[gateway]` table also has `gateway_extra` (such as `admin_listen`),
/// followed by `body`: identities, targets and rules. The returned `url` is the target
/// `bench`'s.
pub(crate) fn launch_gateway(
    binary: &Path,
    durability: &str,
    signed: bool,
    gateway_extra: &str,
    body: &str,
) -> Result<GatewayProcess> {
    let dir =
        tempfile::tempdir_in(".").context("temp dir on the working disk (audit fsyncs hit it)")?;
    let port = free_port()?;
    let checkpoints = if signed {
        let status = Command::new(binary)
            .args(["keys", "audit-init", "--out"])
            .arg(dir.path().join("audit-key"))
            .stdout(Stdio::null())
            .status()
            .context("portcullis keys audit-init")?;
        anyhow::ensure!(status.success(), "portcullis keys audit-init failed");
        "signing_key = \"audit-key\"\ncheckpoint_dir = \"checkpoints\"\n"
    } else {
        ""
    };
    let config = format!(
        r#"[gateway]
listen = "127.0.0.1:{port}"
data_dir = "data"
max_sessions = 4096
{gateway_extra}

[audit]
durability = "{durability}"
{checkpoints}

{body}"#
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config)?;
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let gateway = GatewayProcess {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}/mcp/bench"),
        base: format!("http://127.0.0.1:{port}"),
    };
    wait_for_port(port, "the gateway")?;
    Ok(gateway)
}

/// A loopback port free at the time of asking.
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits (up to 10 s) until something accepts connections on the loopback `port`.
pub(crate) fn wait_for_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not start (nothing listens on port {port})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// What each measured request is.
#[derive(Clone, Copy)]
pub(crate) enum Probe {
    /// `tools/call` of `lookup`: the whole path, upstream included.
    ToolCall,
    /// `ping`, which the gateway answers itself for a stateless upstream: its fixed cost
    /// (HTTP, authentication, parsing, audit) without the upstream hop.
    Ping,
}

fn call_body(probe: Probe, id: u64) -> String {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "portcullis-bench", "version": "1"},
    });
    match probe {
        Probe::ToolCall => json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "lookup", "arguments": {"customer": "cus_1001"}, "_meta": meta}
        }),
        Probe::Ping => {
            json!({"jsonrpc": "2.0", "id": id, "method": "ping", "params": {"_meta": meta}})
        }
    }
    .to_string()
}

async fn one_call(client: &reqwest::Client, url: &str, key: &str, id: u64) -> Result<()> {
    probe_call(client, url, key, id, Probe::ToolCall).await
}

pub(crate) async fn probe_call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    id: u64,
    probe: Probe,
) -> Result<()> {
    let mut req = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN);
    req = match probe {
        Probe::ToolCall => req
            .header("mcp-method", "tools/call")
            .header("mcp-name", "lookup"),
        Probe::Ping => req.header("mcp-method", "ping"),
    };
    let resp = req.body(call_body(probe, id)).send().await?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() || !body.windows(8).any(|w| w == b"\"result\"") {
        bail!("call failed: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

pub(crate) struct Latency {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

pub(crate) async fn measure_latency(
    url: &str,
    key: &str,
    calls: usize,
    probe: Probe,
) -> Result<Latency> {
    Ok(Latency::of(latency_samples(url, key, calls, probe).await?))
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        Latency {
            p50: samples[samples.len() / 2],
            p99: samples[samples.len() * 99 / 100],
        }
    }
}

/// Each call's time, for `calls` sequential calls on one connection (after 200 to warm up).
pub(crate) async fn latency_samples(
    url: &str,
    key: &str,
    calls: usize,
    probe: Probe,
) -> Result<Vec<Duration>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    for i in 0..200 {
        probe_call(&client, url, key, i, probe).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls {
        let start = Instant::now();
        probe_call(&client, url, key, i as u64, probe).await?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

pub(crate) async fn measure_throughput(
    url: &str,
    key: &str,
    concurrency: usize,
    seconds: u64,
) -> Result<f64> {
    let (calls, elapsed) =
        throughput_run(url, key, concurrency, Duration::from_secs(seconds)).await?;
    Ok(calls as f64 / elapsed.as_secs_f64())
}

/// Calls completed by `concurrency` clients calling for `length`, and the time it took.
pub(crate) async fn throughput_run(
    url: &str,
    key: &str,
    concurrency: usize,
    length: Duration,
) -> Result<(u64, Duration)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + length;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url, key, done) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = worker as u64 * 1_000_000;
            while Instant::now() < stop {
                one_call(&client, &url, &key, i).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok((done.load(Ordering::Relaxed), started.elapsed()))
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = match Cli::parse().bench {
        Bench::Mcp(args) => args,
        Bench::Verify(args) => return verify::run(args).await,
        Bench::Evidence(args) => return evidence::run(args).await,
        Bench::Approvals(args) => return approvals::run(args).await,
        Bench::Replicas(args) => return replicas::run(args).await,
        Bench::Sinks(args) => return sinks::run(args).await,
        Bench::Console(args) => return console::run(args).await,
        Bench::Http(args) => return http::run(args).await,
    };
    let upstream = start_upstream(args.upstream_listen).await?;
    let direct = format!("http://{upstream}/mcp");
    let (key, hash) = portcullis_identity::generate_api_key();

    println!(
        "MCP tools/call benchmark: {} sequential calls for latency, {} clients x {}s for throughput",
        args.latency_calls, args.concurrency, args.seconds
    );
    let direct_latency =
        measure_latency(&direct, &key, args.latency_calls, Probe::ToolCall).await?;
    let direct_rps = measure_throughput(&direct, &key, args.concurrency, args.seconds).await?;
    println!(
        "{:<26} p50 {:>8.1} us  p99 {:>8.1} us  throughput {:>9.0} calls/s",
        "direct",
        micros(direct_latency.p50),
        micros(direct_latency.p99),
        direct_rps
    );
    for reference in &args.reference {
        let (name, url) = reference
            .split_once('=')
            .context("--reference takes NAME=URL")?;
        let latency = measure_latency(url, &key, args.latency_calls, Probe::ToolCall).await?;
        let rps = measure_throughput(url, &key, args.concurrency, args.seconds).await?;
        println!(
            "{:<26} p50 {:>8.1} us  p99 {:>8.1} us  throughput {:>9.0} calls/s",
            name,
            micros(latency.p50),
            micros(latency.p99),
            rps
        );
        println!(
            "{:<26} p50 overhead {:>+7.1} us  p99 overhead {:>+7.1} us  throughput ratio {:.2}",
            "",
            micros(latency.p50) - micros(direct_latency.p50),
            micros(latency.p99) - micros(direct_latency.p99),
            rps / direct_rps
        );
    }
    let sink_peers = if args.sinks.is_empty() {
        None
    } else {
        Some(sinks::McpSinks::start(&args.sinks).await?)
    };
    let mut gateways: Vec<Variant<'_>> = Vec::new();
    for durability in &args.durability {
        for baseline in &args.baseline {
            let (name, path) = baseline
                .split_once('=')
                .context("--baseline takes NAME=PATH")?;
            gateways.push(Variant {
                label: format!("{name} ({durability})"),
                binary: PathBuf::from(path),
                durability,
                signed: false,
                mask: false,
                recording: Recording::Off,
                sinks: String::new(),
            });
        }
        for &recording in &args.recording {
            let label = match recording {
                Recording::Off => format!("gateway (audit {durability})"),
                Recording::On => format!("gateway ({durability}, recorded)"),
                Recording::Encrypted => format!("gateway ({durability}, rec. encrypted)"),
            };
            gateways.push(Variant {
                label,
                binary: args.gateway.clone(),
                durability,
                signed: true,
                mask: false,
                recording,
                sinks: String::new(),
            });
        }
        if args.mask {
            gateways.push(Variant {
                label: format!("gateway ({durability}, masked)"),
                binary: args.gateway.clone(),
                durability,
                signed: true,
                mask: true,
                recording: Recording::Off,
                sinks: String::new(),
            });
        }
        if let Some(sinks) = &sink_peers {
            gateways.push(Variant {
                label: format!("gateway ({durability}, {})", args.sinks.join("+")),
                binary: args.gateway.clone(),
                durability,
                signed: true,
                mask: false,
                recording: Recording::Off,
                sinks: sinks.config.clone(),
            });
        }
    }
    for variant in gateways {
        let gateway = start_gateway(&variant, upstream, &hash)?;
        let label = &variant.label;
        let local = measure_latency(&gateway.url, &key, args.latency_calls, Probe::Ping).await?;
        let latency =
            measure_latency(&gateway.url, &key, args.latency_calls, Probe::ToolCall).await?;
        let rps = measure_throughput(&gateway.url, &key, args.concurrency, args.seconds).await?;
        // How far the sinks are behind the moment the load stops: their lag under load.
        let sinks_lag = if variant.sinks.is_empty() {
            None
        } else {
            Some(sinks_status(&variant.binary, &gateway)?)
        };
        println!(
            "{:<26} p50 {:>8.1} us  p99 {:>8.1} us  throughput {:>9.0} calls/s",
            label,
            micros(latency.p50),
            micros(latency.p99),
            rps
        );
        println!(
            "{:<26} p50 {:>8.1} us  p99 {:>8.1} us  (answered by the gateway: its fixed cost)",
            "  ping, no upstream hop",
            micros(local.p50),
            micros(local.p99)
        );
        println!(
            "{:<26} p50 overhead {:>+7.1} us  p99 overhead {:>+7.1} us  throughput ratio {:.2}",
            "",
            micros(latency.p50) - micros(direct_latency.p50),
            micros(latency.p99) - micros(direct_latency.p99),
            rps / direct_rps
        );
        if let Some(lag) = sinks_lag {
            println!("{:<26} {lag}", "  sinks when the load ends");
        }
    }
    if let Some(sinks) = sink_peers {
        sinks.finish().await?;
    }
    Ok(())
}
