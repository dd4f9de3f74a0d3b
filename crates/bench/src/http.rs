//! `portcullis-bench http`: one REST call (`GET /customers/1001`, a small JSON record with an
//! e-mail address in it) direct to an upstream, through nginx as a plain reverse proxy, and
//! through the gateway's HTTP adapter, in one run, with `wrk` as the load generator.
//!
//! - **upstream**: an axum server in this process answering a fixed JSON body (hyper
//!   answers a static body in a few microseconds of CPU, far below any proxy's cost, so the
//!   direct figure is the machine's loopback round trip plus wrk, not the upstream);
//! - **nginx**: `proxy_pass` to the upstream with a keep-alive pool (`keepalive 64`,
//!   `proxy_http_version 1.1`, no `Connection: close`), one worker process (as the MCP
//!   benchmark's reference), access log off: what one extra HTTP hop costs on this machine;
//! - **gateway**: the front door `/http/customers/...` with an API key, one allow rule for
//!   `GET /customers/{id}` masking the answer with the `pii` detectors (the answer is parsed,
//!   the e-mail replaced, re-serialised), one audit event per request with signed checkpoints
//!   as deployed; once with `durability = "batched"` and once `"strict"` (the event fsynced
//!   before the answer's last bytes leave).
//!
//! Latency: `wrk -t1 -c1 --latency` (one connection, one request at a time; p50 and p99 of
//! wrk's histogram). Throughput: `wrk -t2 -c64` (64 connections). Every path is measured in
//! every round, the order rotating from round to round, so a slow patch of the machine does
//! not favour one; the figures are the medians over the rounds, the overheads and ratios are
//! taken against direct within each round, then their median.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::routing::get;

use crate::{GatewayProcess, free_port, launch_gateway, wait_for_port};

#[derive(clap::Args)]
pub struct Args {
    /// The portcullis binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/portcullis")]
    gateway: PathBuf,
    /// The load generator.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// nginx, for the reference proxy row (skipped, with a note, when it is not there).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Rounds; every path is measured once per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of the one-connection latency run, per path and round.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Seconds of the throughput run, per path and round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections of the throughput run.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk threads of the throughput run.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Audit durability modes of the gateway rows.
    #[arg(long, value_delimiter = ',', default_value = "batched,strict")]
    durability: Vec<String>,
}

/// The upstream's answer: a small customer record, one field of which (`email`) the `pii`
/// detectors mask.
const RECORD: &str = r#"{"id":"cus_1001","name":"Ada Lovelace","email":"ada.lovelace@example.com","plan":"pro","balance_usd":42.5,"status":"active","created":"2026-01-15T09:30:00Z"}"#;
const EMAIL: &str = "ada.lovelace@example.com";
/// The path every request asks for, below each path's base URL.
const RESOURCE: &str = "customers/1001";

async fn customer() -> impl axum::response::IntoResponse {
    ([("content-type", "application/json")], RECORD)
}

async fn start_upstream() -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/customers/{id}", get(customer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// nginx in the foreground (`daemon off`), with everything it writes in a directory of its
/// own; stopped with SIGTERM to the master, which takes its worker with it (a SIGKILL would
/// leave the worker holding the port).
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(binary: &Path, upstream: std::net::SocketAddr) -> Result<(Nginx, u16)> {
        let dir = tempfile::tempdir().context("a directory for nginx")?;
        let port = free_port()?;
        let d = dir.path().display();
        let config = format!(
            r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream api {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let nginx = Nginx { child, _dir: dir };
        wait_for_port(port, "nginx")?;
        Ok((nginx, port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A measured path: its label and the URL wrk asks.
struct Measured {
    label: String,
    url: String,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Nginx,
    Gateway,
}

/// What one wrk run reported.
#[derive(Clone, Copy, Debug)]
struct Run {
    p50: Duration,
    p99: Duration,
    rps: f64,
}

/// One path's results in one round.
#[derive(Clone, Copy)]
struct Sample {
    latency: Run,
    load: Run,
}

/// The gateway configuration: the agent's key, the upstream as target `customers`, one rule
/// allowing reads of a customer and masking the answer.
fn gateway_config(key_hash: &str, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"[[identity.api_keys]]
name = "bench-agent"
kind = "agent"
sha256 = "{key_hash}"
groups = ["agents"]

[targets.customers]
kind = "http"
upstream = "http://{upstream}/"

[[rules]]
name = "agents read customers"
who.groups = ["agents"]
target = "customers"
http.methods = ["GET"]
http.paths = ["/customers/{{id}}"]
mask = "pii"

[masks.pii]
detectors = ["pii"]
"#
    )
}

/// One request through `url`: checks the answer is the record, masked or not as expected,
/// before anything is measured (a benchmark of refusals would be fast and worthless).
async fn check_path(url: &str, key: &str, masked: bool) -> Result<()> {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status.is_success(), "GET {url}: {status} {body}");
    ensure!(
        body.contains("cus_1001"),
        "GET {url}: not the record: {body}"
    );
    ensure!(
        body.contains(EMAIL) != masked,
        "GET {url}: the e-mail is {} but should {}be masked: {body}",
        if masked { "there" } else { "not there" },
        if masked { "" } else { "not " }
    );
    Ok(())
}

/// Runs wrk and reads its summary; any non-2xx answer or socket error fails the run.
fn wrk(
    args: &Args,
    url: &str,
    key: &str,
    threads: usize,
    connections: usize,
    seconds: u64,
) -> Result<Run> {
    let out = Command::new(&args.wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Authorization: Bearer {key}"))
        .arg(url)
        .output()
        .with_context(|| format!("running {}", args.wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("wrk's output for {url}:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<Run> {
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = Some(parse_duration(value)?),
            ["99%", value] => p99 = Some(parse_duration(value)?),
            ["Requests/sec:", value] => rps = Some(value.parse::<f64>()?),
            ["Non-2xx", ..] => bail!("some answers were not 2xx: {line}"),
            ["Socket", "errors:", ..] => bail!("socket errors: {line}"),
            _ => {}
        }
    }
    Ok(Run {
        p50: p50.context("no 50% line")?,
        p99: p99.context("no 99% line")?,
        rps: rps.context("no Requests/sec line")?,
    })
}

/// wrk's durations: `52.00us`, `1.20ms`, `2.00s`, `1.00m`.
fn parse_duration(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("{text:?}"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("unknown unit in {text:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `median (min–max)` of a row's values, formatted with `f`.
fn spread(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        f(values[0])
    } else {
        format!("{} ({}–{})", f(median(values.to_vec())), f(min), f(max))
    }
}

/// The machine's state as the run starts: load average and the compilers running beside it.
fn machine_state() -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    let busy = Command::new("pgrep")
        .args(["-c", "-x", "rustc|cc1|cc1plus|ld|cargo"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{cores} cores, load average {load}, {busy} compiler processes (rustc/cc/ld/cargo) running"
    )
}

pub async fn run(args: Args) -> Result<()> {
    let upstream = start_upstream().await?;
    let (key, hash) = portcullis_identity::generate_api_key();

    let mut paths = vec![Measured {
        label: "direct".into(),
        url: format!("http://{upstream}/{RESOURCE}"),
        kind: Kind::Direct,
    }];
    let nginx = if args.nginx.exists() {
        let (nginx, port) = Nginx::start(&args.nginx, upstream)?;
        paths.push(Measured {
            label: "nginx (reference proxy)".into(),
            url: format!("http://127.0.0.1:{port}/{RESOURCE}"),
            kind: Kind::Nginx,
        });
        Some(nginx)
    } else {
        println!("({} not found: no nginx row)", args.nginx.display());
        None
    };
    let mut gateways: Vec<GatewayProcess> = Vec::new();
    for durability in &args.durability {
        let gateway = launch_gateway(
            &args.gateway,
            durability,
            true,
            "",
            &gateway_config(&hash, upstream),
        )?;
        paths.push(Measured {
            label: format!("gateway (audit {durability})"),
            url: format!("{}/http/customers/{RESOURCE}", gateway.base),
            kind: Kind::Gateway,
        });
        gateways.push(gateway);
    }
    for path in &paths {
        check_path(&path.url, &key, path.kind == Kind::Gateway).await?;
    }

    println!(
        "HTTP benchmark: GET /{RESOURCE} ({} bytes of JSON, one e-mail the gateway masks); \
         latency: wrk -t1 -c1 {}s; throughput: wrk -t{} -c{} {}s; {} rounds, order rotating",
        RECORD.len(),
        args.latency_seconds,
        args.threads,
        args.connections,
        args.seconds,
        args.rounds.max(1)
    );
    println!("machine at start: {}", machine_state());
    // Warm-up: connections, the gateways' upstream pools, the page cache of their logs.
    for path in &paths {
        wrk(&args, &path.url, &key, args.threads, args.connections, 1)?;
    }
    let rounds = args.rounds.max(1);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            let path = &paths[i];
            let latency = wrk(&args, &path.url, &key, 1, 1, args.latency_seconds)?;
            let load = wrk(
                &args,
                &path.url,
                &key,
                args.threads,
                args.connections,
                args.seconds,
            )?;
            println!(
                "round {} {:<26} 1 conn: p50 {:>7.1} us  p99 {:>7.1} us | {} conns: {:>8.0} req/s  p50 {:>7.1} us  p99 {:>7.1} us",
                round + 1,
                path.label,
                us(latency.p50),
                us(latency.p99),
                args.connections,
                load.rps,
                us(load.p50),
                us(load.p99)
            );
            samples[i].push(Sample { latency, load });
        }
    }
    println!("machine at end: {}", machine_state());

    // Overheads and ratios against direct within each round.
    let direct = &samples[0];
    let overhead = |i: usize| -> Vec<f64> {
        samples[i]
            .iter()
            .zip(direct)
            .map(|(s, d)| us(s.latency.p50) - us(d.latency.p50))
            .collect()
    };
    let ratio = |i: usize| -> Vec<f64> {
        samples[i]
            .iter()
            .zip(direct)
            .map(|(s, d)| s.load.rps / d.load.rps)
            .collect()
    };
    println!();
    println!(
        "| path | p50, 1 conn | p99, 1 conn | throughput, {} conns | p50 overhead vs direct | throughput vs direct |",
        args.connections
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (i, path) in paths.iter().enumerate() {
        let p50: Vec<f64> = samples[i].iter().map(|s| us(s.latency.p50)).collect();
        let p99: Vec<f64> = samples[i].iter().map(|s| us(s.latency.p99)).collect();
        let rps: Vec<f64> = samples[i].iter().map(|s| s.load.rps).collect();
        let (over, vs) = if path.kind == Kind::Direct {
            ("".to_string(), "1".to_string())
        } else {
            (
                spread(&overhead(i), |v| format!("{v:+.0} us")),
                spread(&ratio(i), |v| format!("{v:.2}")),
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            path.label,
            spread(&p50, |v| format!("{v:.0} us")),
            spread(&p99, |v| format!("{v:.0} us")),
            spread(&rps, |v| format!("{v:.0} req/s")),
            over,
            vs
        );
    }
    println!();
    let nginx_overhead = paths
        .iter()
        .position(|p| p.kind == Kind::Nginx)
        .map(|i| median(overhead(i)));
    for (i, path) in paths.iter().enumerate() {
        if path.kind != Kind::Gateway {
            continue;
        }
        let over = median(overhead(i));
        let throughput = median(ratio(i));
        let latency_aim = match nginx_overhead {
            Some(nginx) => format!(
                "p50 overhead {over:+.0} us vs nginx's {nginx:+.0} us + 100 us: {}",
                if over <= nginx + 100.0 {
                    "met"
                } else {
                    "NOT met"
                }
            ),
            None => format!("p50 overhead {over:+.0} us (no nginx to compare with)"),
        };
        println!(
            "{}: {latency_aim}; throughput {throughput:.2} of direct (aim 0.5): {}",
            path.label,
            if throughput >= 0.5 { "met" } else { "NOT met" }
        );
    }
    drop(gateways);
    drop(nginx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_summary() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n  Latency Distribution\n     50%   52.00us\n     75%   56.00us\n     90%   62.00us\n     99%    1.12ms\n  87000 requests in 5.00s, 10.00MB read\nRequests/sec:  17400.50\nTransfer/sec:      2.00MB\n";
        let run = parse_wrk(text).unwrap();
        assert_eq!(run.p50, Duration::from_micros(52));
        assert_eq!(run.p99, Duration::from_micros(1120));
        assert!((run.rps - 17400.5).abs() < 1e-9);
        let refused = format!("{text}  Non-2xx or 3xx responses: 5\n");
        assert!(parse_wrk(&refused).is_err());
    }
}
