//! `portcullis-bench mcp`: `tools/call` round trips direct to a streamable-HTTP MCP upstream
//! and through the gateway, in the same run, so the figures share one machine's noise.
//!
//! The upstream is a minimal in-process 2026-07-28 MCP server (answers `tools/call` with a
//! small JSON result), so what is measured is the gateway: authentication (API key), policy,
//! the audit write (strict: fsync before release, or batched), and the proxying itself.
//! Latency is measured with one connection, sequentially; throughput with 32 concurrent
//! clients for a fixed time.
#![forbid(unsafe_code)]

mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
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
}

/// One gateway configuration to measure.
struct Variant<'a> {
    label: String,
    binary: PathBuf,
    durability: &'a str,
    /// Signed checkpoints published to a directory (the current build only).
    signed: bool,
    mask: bool,
}

const MODERN: &str = "2026-07-28";

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
            json!({"resultType": "complete", "tools": [{"name": "lookup", "inputSchema": {"type": "object"}}], "ttlMs": 0, "cacheScope": "public"})
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

async fn start_upstream(listen: SocketAddr) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/mcp", post(upstream_handler));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

struct GatewayProcess {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a gateway. `signed`: as deployed, with checkpoints signed at the default cadence
/// and published to a directory.
fn start_gateway(
    binary: &PathBuf,
    upstream: SocketAddr,
    key_hash: &str,
    durability: &str,
    signed: bool,
    mask: bool,
) -> Result<GatewayProcess> {
    let mask = if mask { "mask = \"default\"\n" } else { "" };
    let dir =
        tempfile::tempdir_in(".").context("temp dir on the working disk (audit fsyncs hit it)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
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

[audit]
durability = "{durability}"
{checkpoints}

[[identity.api_keys]]
name = "bench-agent"
kind = "agent"
sha256 = "{key_hash}"
groups = ["agents"]

[targets.bench]
kind = "mcp"
url = "http://{upstream}/mcp"

[[rules]]
name = "agents may look up"
who.groups = ["agents"]
target = "bench"
tools = ["lookup"]
{mask}"#
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the gateway did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(GatewayProcess {
        child,
        _dir: dir,
        url: format!("http://127.0.0.1:{port}/mcp/bench"),
    })
}

/// What each measured request is.
#[derive(Clone, Copy)]
enum Probe {
    /// `tools/call` of `lookup`: the whole path, upstream included.
    ToolCall,
    /// `ping`, which the gateway answers itself for a stateless upstream: its fixed cost
    /// (HTTP, authentication, parsing, audit) without the upstream hop.
    Ping,
}

fn call_body(probe: Probe, id: u64) -> String {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": MODERN});
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

async fn probe_call(
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

struct Latency {
    p50: Duration,
    p99: Duration,
}

async fn measure_latency(url: &str, key: &str, calls: usize, probe: Probe) -> Result<Latency> {
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
    samples.sort();
    Ok(Latency {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    })
}

async fn measure_throughput(url: &str, key: &str, concurrency: usize, seconds: u64) -> Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
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
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = match Cli::parse().bench {
        Bench::Mcp(args) => args,
        Bench::Verify(args) => return verify::run(args).await,
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
    let mut gateways: Vec<Variant> = Vec::new();
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
            });
        }
        gateways.push(Variant {
            label: format!("gateway (audit {durability})"),
            binary: args.gateway.clone(),
            durability,
            signed: true,
            mask: false,
        });
        if args.mask {
            gateways.push(Variant {
                label: format!("gateway ({durability}, masked)"),
                binary: args.gateway.clone(),
                durability,
                signed: true,
                mask: true,
            });
        }
    }
    for variant in gateways {
        let Variant {
            label,
            binary,
            durability,
            signed,
            mask,
        } = variant;
        let gateway = start_gateway(&binary, upstream, &hash, durability, signed, mask)?;
        let local = measure_latency(&gateway.url, &key, args.latency_calls, Probe::Ping).await?;
        let latency =
            measure_latency(&gateway.url, &key, args.latency_calls, Probe::ToolCall).await?;
        let rps = measure_throughput(&gateway.url, &key, args.concurrency, args.seconds).await?;
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
    }
    Ok(())
}
