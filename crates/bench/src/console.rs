//! `portcullis-bench console`: what the web console costs, measured in the same run against the
//! admin API serving the same data as JSON (the "direct" reference), so that the figures share
//! one machine's noise.
//!
//! The console is a client of the same services as the admin API: what it adds is the session
//! lookup (a cookie instead of a bearer API key), the page itself (maud, with the layout and
//! navigation) and, on forms, the `Origin` and CSRF checks. These are the figures to know:
//!
//! 1. **Inbox.** With K calls held (`decision = "hold"`, as in `approvals`; the callers keep
//!    waiting), `GET /api/v1/approvals?limit=200` (bearer key, JSON) vs `GET /console/approvals`
//!    (the whole page) vs `GET /console/approvals/list` (the fragment the page's script fetches
//!    on every change). Latency: sequential requests on one connection after a warm-up;
//!    throughput: concurrent clients for a fixed time; the three alternate over a few rounds,
//!    so that a slow patch of the machine does not land on one of them only.
//! 2. **Audit search.** `GET /console/audit?limit=100` (the newest 100 events, rendered) over a
//!    log of M events made beforehand by allowed calls. The admin API has no audit search (the
//!    CLI's `portcullis audit` reads the files), so there is no JSON reference for it.
//! 3. **Held round trip decided in the console.** A caller's held call; the approver, signed in
//!    as the sign-in form does it, finds it in `/console/approvals/list`, opens its page for the
//!    digest and the CSRF token and posts the decision form. Measured: the decision POST (the
//!    time the person waits for the next page's redirect) and the time from sending it to the
//!    caller's answer; the same through the admin API (`POST /api/v1/approvals/{id}/approve`
//!    with the digest, found by polling the pending list), rounds alternating between the two.
//!
//! The audit log is strict (the default) with signed checkpoints, as deployed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::approvals::{HELD_TOOL, approve, held_call, pending, percentiles};
use crate::{
    GatewayProcess, Latency, Probe, bench_config, free_port, launch_gateway, micros, probe_call,
    start_upstream, wait_for_port,
};

#[derive(clap::Args)]
pub struct Args {
    /// The portcullis binary to benchmark (build it with --release).
    #[arg(long, default_value = "target/release/portcullis")]
    gateway: PathBuf,
    /// Calls held (pending) while the inbox is measured (at most 200: the inbox's list).
    #[arg(long, default_value_t = 50)]
    pending: usize,
    /// Sequential requests for each inbox probe's latency (split over the rounds).
    #[arg(long, default_value_t = 1500)]
    latency_calls: usize,
    /// Concurrent clients for each inbox probe's throughput.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load per inbox probe (split over the rounds).
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Rounds over which the inbox probes alternate.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Events in the log the audit search reads (made by allowed calls first).
    #[arg(long, default_value_t = 20000)]
    events: usize,
    /// Sequential audit searches.
    #[arg(long, default_value_t = 300)]
    searches: usize,
    /// Held calls decided in the console, and as many through the admin API.
    #[arg(long, default_value_t = 100)]
    held: usize,
    /// Audit durability (strict is the default a deployment gets).
    #[arg(long, default_value = "strict")]
    durability: String,
}

/// The most pending approvals the inbox lists.
const INBOX_LIST: usize = 200;
/// Warm-up requests before each latency measurement.
const WARMUP: usize = 100;

/// The gateway, its admin listener's origin and the keys it knows.
struct Setup {
    _process: GatewayProcess,
    mcp: String,
    /// `http://127.0.0.1:<admin port>`: the console's origin too.
    origin: String,
    api: String,
    agent: String,
    lead: String,
}

fn start(args: &Args, upstream: SocketAddr) -> Result<Setup> {
    let (agent, agent_hash) = portcullis_identity::generate_api_key();
    let (lead, lead_hash) = portcullis_identity::generate_api_key();
    let mut admin_port = free_port()?;
    let body = format!(
        r#"[console]
enabled = true
api_key_sign_in = true

{base}

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
"#,
        base = bench_config(&agent_hash, upstream, ""),
    );
    // Two ports asked for separately may be the same one (neither is held until the gateway
    // binds): then it fails to start, and another pair is tried.
    let mut attempt = 0;
    let (process, admin_port) = loop {
        let started = launch_gateway(
            &args.gateway,
            &args.durability,
            true,
            &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
            &body,
        );
        match started {
            Ok(process) => break (process, admin_port),
            Err(e) if attempt >= 2 => return Err(e),
            Err(_) => {
                attempt += 1;
                admin_port = free_port()?;
            }
        }
    };
    wait_for_port(admin_port, "the admin listener")?;
    let origin = format!("http://127.0.0.1:{admin_port}");
    Ok(Setup {
        mcp: process.url.clone(),
        _process: process,
        api: format!("{origin}/api/v1"),
        origin,
        agent,
        lead,
    })
}

/// How a request proves who sends it.
#[derive(Clone)]
enum Auth {
    /// `Authorization: Bearer`, as the admin API's clients do.
    Bearer(String),
    /// The console's session cookie (`name=value`), as a signed-in browser does.
    Cookie(String),
}

/// One measured GET: a label, its URL and how it authenticates.
#[derive(Clone)]
struct Get {
    label: &'static str,
    url: String,
    auth: Auth,
}

impl Get {
    /// Sends it; fails unless 200. Returns the body.
    async fn send(&self, client: &reqwest::Client) -> Result<String> {
        let mut req = client.get(&self.url);
        req = match &self.auth {
            Auth::Bearer(key) => req.bearer_auth(key),
            Auth::Cookie(cookie) => req.header("cookie", cookie),
        };
        let resp = req.send().await.with_context(|| self.url.clone())?;
        let status = resp.status();
        let text = resp.text().await?;
        if status != 200 {
            bail!("{}: HTTP {status}: {text}", self.url);
        }
        Ok(text)
    }
}

/// A client that does not follow redirects (the console answers forms with 303).
fn client(idle: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(600))
        .build()?)
}

/// Each request's time, `calls` sequential requests on one connection after a warm-up.
async fn samples(get: &Get, calls: usize) -> Result<Vec<Duration>> {
    let client = client(1)?;
    for _ in 0..WARMUP {
        get.send(&client).await?;
    }
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        get.send(&client).await?;
        out.push(start.elapsed());
    }
    Ok(out)
}

/// Requests completed by `concurrency` clients for `length`, and the time it took.
async fn load(get: &Get, concurrency: usize, length: Duration) -> Result<(u64, Duration)> {
    let client = client(concurrency)?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + length;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, get, done) = (client.clone(), get.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < stop {
                    get.send(&client).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((done.load(Ordering::Relaxed), started.elapsed()))
}

/// The value of the `name` cookie an answer sets.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .map(str::to_string)
}

/// The `value` of the first input named `name` in a page.
fn field(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let rest = &html[html.find(&needle)? + needle.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |value: &str| -> String {
        value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs in with `key` as the sign-in page's form does (its cookie and hidden `state`, a POST
/// with the console's `Origin`); returns the session cookie as `name=value`.
async fn sign_in(client: &reqwest::Client, origin: &str, key: &str) -> Result<String> {
    let page = client
        .get(format!("{origin}/console/sign-in"))
        .send()
        .await?;
    ensure!(page.status() == 200, "sign-in page: HTTP {}", page.status());
    let flow = set_cookie(&page, "__Host-portcullis-sign-in")
        .context("the sign-in page set no flow cookie")?;
    let html = page.text().await?;
    let state = field(&html, "state").context("the sign-in form has no state")?;
    let resp = client
        .post(format!("{origin}/console/auth/api-key"))
        .header("cookie", format!("__Host-portcullis-sign-in={flow}"))
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("state", &state), ("api_key", key)]))
        .send()
        .await?;
    let status = resp.status();
    let session = set_cookie(&resp, "__Host-portcullis-console");
    match session {
        Some(session) if status == 303 => Ok(format!("__Host-portcullis-console={session}")),
        _ => bail!("sign-in: HTTP {status}: {}", resp.text().await?),
    }
}

/// The approvals waiting for the viewer's decision in an inbox list fragment (the section
/// before the history, whose rows carry the same attribute).
fn to_decide(fragment: &str) -> Vec<String> {
    let end = fragment
        .find("aria-labelledby=\"history\"")
        .unwrap_or(fragment.len());
    let needle = "data-approval=\"";
    fragment[..end]
        .match_indices(needle)
        .filter_map(|(at, _)| {
            let rest = &fragment[at + needle.len()..];
            rest.find('"').map(|e| rest[..e].to_string())
        })
        .collect()
}

/// Makes `count` allowed calls (one event each) with 32 concurrent callers.
async fn fill_log(url: &str, key: &str, count: usize) -> Result<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, key, next) = (
                client.clone(),
                url.to_string(),
                key.to_string(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count as u64 {
                        return anyhow::Ok(());
                    }
                    probe_call(&client, &url, &key, 3_000_000 + i, Probe::ToolCall).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(
        (1..=INBOX_LIST).contains(&args.pending),
        "--pending must be 1 to {INBOX_LIST} (the inbox lists at most {INBOX_LIST})"
    );
    ensure!(
        args.held > 0 && args.searches > 0 && args.latency_calls > 0,
        "--held, --searches and --latency-calls must be at least 1"
    );
    let upstream = start_upstream("127.0.0.1:0".parse()?).await?;
    let gw = start(&args, upstream)?;
    let http = client(8)?;
    let cookie = sign_in(&http, &gw.origin, &gw.lead).await?;
    let rounds = args.rounds.max(1);
    println!(
        "Web console benchmark (audit {}, signed checkpoints): the console vs the admin API's JSON, one gateway, one run",
        args.durability
    );

    // 1. The inbox with K held calls.
    let k = args.pending;
    let holders = client(k)?;
    let callers: Vec<_> = (0..k)
        .map(|i| {
            tokio::spawn(held_call(
                holders.clone(),
                gw.mcp.clone(),
                gw.agent.clone(),
                i as u64,
            ))
        })
        .collect();
    let started = Instant::now();
    let listed = loop {
        let list = pending(&http, &gw.api, &gw.lead, INBOX_LIST).await?;
        if list.len() >= k {
            break list;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("only {} of {k} calls were pending after 60 s", list.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let probes = [
        Get {
            label: "API GET /api/v1/approvals",
            url: format!("{}/approvals?limit={INBOX_LIST}", gw.api),
            auth: Auth::Bearer(gw.lead.clone()),
        },
        Get {
            label: "console /approvals (page)",
            url: format!("{}/console/approvals", gw.origin),
            auth: Auth::Cookie(cookie.clone()),
        },
        Get {
            label: "console /approvals/list",
            url: format!("{}/console/approvals/list", gw.origin),
            auth: Auth::Cookie(cookie.clone()),
        },
    ];
    // Each shows the K held calls, once, before anything is timed.
    let mut sizes = Vec::new();
    for probe in &probes {
        let body = probe.send(&http).await?;
        if let Auth::Cookie(_) = probe.auth {
            ensure!(
                to_decide(&body).len() == k,
                "{} shows {} of the {k} pending approvals",
                probe.label,
                to_decide(&body).len()
            );
        } else {
            let json: serde_json::Value = serde_json::from_str(&body)?;
            ensure!(json["approvals"].as_array().map(Vec::len) == Some(k));
        }
        sizes.push(body.len());
    }
    let calls = args.latency_calls.div_ceil(rounds);
    let length = Duration::from_secs(args.seconds) / rounds as u32;
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); probes.len()];
    let mut thr = vec![(0u64, Duration::ZERO); probes.len()];
    for round in 0..rounds {
        let order: Vec<usize> = (0..probes.len())
            .map(|i| (i + round) % probes.len())
            .collect();
        for &i in &order {
            lat[i].extend(samples(&probes[i], calls).await?);
        }
        for &i in &order {
            let (done, took) = load(&probes[i], args.concurrency, length).await?;
            thr[i].0 += done;
            thr[i].1 += took;
        }
    }
    let latencies: Vec<Latency> = lat.into_iter().map(Latency::of).collect();
    let rates: Vec<f64> = thr
        .iter()
        .map(|(done, took)| *done as f64 / took.as_secs_f64())
        .collect();
    println!(
        "\n1. Inbox with {k} held calls: {} sequential requests for latency, {} clients x {}s for throughput, alternating over {rounds} rounds",
        calls * rounds,
        args.concurrency,
        args.seconds
    );
    for (i, probe) in probes.iter().enumerate() {
        println!(
            "{:<30} p50 {:>7.1} us  p99 {:>7.1} us  {:>7.0} req/s  {:>6.1} KB",
            probe.label,
            micros(latencies[i].p50),
            micros(latencies[i].p99),
            rates[i],
            sizes[i] as f64 / 1000.0
        );
    }
    for i in 1..probes.len() {
        println!(
            "{:<30} p50 x{:.2}  p99 x{:.2}  throughput x{:.2}  (console / API)",
            format!("  {}", probes[i].label.trim_start_matches("console ")),
            micros(latencies[i].p50) / micros(latencies[0].p50),
            micros(latencies[i].p99) / micros(latencies[0].p99),
            rates[i] / rates[0]
        );
    }
    // The held callers are released, and each must get its result.
    for approval in &listed {
        approve(&http, &gw.api, &gw.lead, approval).await?;
    }
    for caller in callers {
        caller.await?.context("a held caller of the inbox run")?;
    }

    // 2. Audit search over M events.
    let m = args.events;
    let filled = fill_log(&gw.mcp, &gw.agent, m).await?;
    let search = Get {
        label: "console /audit?limit=100",
        url: format!("{}/console/audit?limit=100", gw.origin),
        auth: Auth::Cookie(cookie.clone()),
    };
    let page = search.send(&http).await?;
    ensure!(
        page.contains("100 events shown"),
        "the audit search did not show 100 events"
    );
    let searched = Latency::of(samples(&search, args.searches).await?);
    println!(
        "\n2. Audit search over a log of {m}+ events ({m} allowed calls made first, {:.0} calls/s): {} sequential searches",
        m as f64 / filled.as_secs_f64(),
        args.searches
    );
    println!(
        "{:<30} p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.1} KB  (the admin API has no audit search)",
        search.label,
        ms(micros(searched.p50)),
        ms(micros(searched.p99)),
        page.len() as f64 / 1000.0
    );

    // 3. Held round trips, decided in the console and through the admin API, alternating.
    let caller = client(1)?;
    let browser = client(1)?;
    let approver = client(1)?;
    let warmup = 5;
    let mut console_post = Vec::new();
    let mut console_answer = Vec::new();
    let mut console_find = Vec::new();
    let mut api_post = Vec::new();
    let mut api_answer = Vec::new();
    let mut api_find = Vec::new();
    for round in 0..2 * (warmup + args.held) {
        let in_console = round % 2 == 0;
        let measured = round >= 2 * warmup;
        let sent = Instant::now();
        let call = tokio::spawn(held_call(
            caller.clone(),
            gw.mcp.clone(),
            gw.agent.clone(),
            5_000_000 + round as u64,
        ));
        let (found, post, answered) = if in_console {
            let list = Get {
                label: "list",
                url: format!("{}/console/approvals/list", gw.origin),
                auth: Auth::Cookie(cookie.clone()),
            };
            let id = loop {
                if let Some(id) = to_decide(&list.send(&browser).await?).into_iter().next() {
                    break id;
                }
                if sent.elapsed() > Duration::from_secs(30) {
                    bail!("round {round}: nothing waited in the console after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let detail = Get {
                label: "detail",
                url: format!("{}/console/approvals/{id}", gw.origin),
                auth: Auth::Cookie(cookie.clone()),
            }
            .send(&browser)
            .await?;
            let digest = field(&detail, "digest").context("the approval page has no digest")?;
            let csrf = field(&detail, "csrf").context("the approval page has no CSRF token")?;
            let found = Instant::now();
            let resp = browser
                .post(format!("{}/console/approvals/{id}/decide", gw.origin))
                .header("cookie", &cookie)
                .header("origin", &gw.origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[
                    ("csrf", &csrf),
                    ("digest", &digest),
                    ("decision", "approve"),
                    ("reason", "benchmark"),
                ]))
                .send()
                .await?;
            let status = resp.status();
            let text = resp.text().await?;
            let posted = Instant::now();
            ensure!(status == 303, "the decision form: HTTP {status}: {text}");
            (found, posted, call.await??)
        } else {
            let approval = loop {
                if let Some(first) = pending(&approver, &gw.api, &gw.lead, 10)
                    .await?
                    .into_iter()
                    .next()
                {
                    break first;
                }
                if sent.elapsed() > Duration::from_secs(30) {
                    bail!("round {round}: nothing pending in the admin API after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            let found = Instant::now();
            approve(&approver, &gw.api, &gw.lead, &approval).await?;
            let posted = Instant::now();
            (found, posted, call.await??)
        };
        if !measured {
            continue;
        }
        let since = |later: Instant, earlier: Instant| match later.checked_duration_since(earlier) {
            Some(d) => micros(d),
            None => -micros(earlier - later),
        };
        let (find, post_rtt, answer) = if in_console {
            (&mut console_find, &mut console_post, &mut console_answer)
        } else {
            (&mut api_find, &mut api_post, &mut api_answer)
        };
        find.push(since(found, sent));
        post_rtt.push(since(post, found));
        answer.push(since(answered, found));
    }
    println!(
        "\n3. Held round trip: {} held calls decided in the console and {} through the admin API, alternating; the approver polls every ~1 ms",
        args.held, args.held
    );
    let rows: [(&str, &mut Vec<f64>); 6] = [
        ("API: sent -> found", &mut api_find),
        ("console: sent -> form ready", &mut console_find),
        ("API: approve POST", &mut api_post),
        ("console: decision POST (303)", &mut console_post),
        ("API: approve sent -> answer", &mut api_answer),
        ("console: decision -> answer", &mut console_answer),
    ];
    let mut p50s = Vec::new();
    for (label, samples) in rows {
        let (p50, p99) = percentiles(samples);
        p50s.push(p50);
        println!(
            "{:<30} p50 {:>7.2} ms  p99 {:>7.2} ms",
            label,
            ms(p50),
            ms(p99)
        );
    }
    println!(
        "{:<30} p50 x{:.2}  (console / API, decision sent -> caller's answer)",
        "",
        p50s[5] / p50s[4]
    );
    // Every decision above is the lead's, in the log under their name; one check that the
    // console's were recorded as the API's are.
    let closed = crate::approvals::admin(
        &http,
        reqwest::Method::GET,
        format!("{}/approvals?status=all&limit=1000", gw.api),
        &gw.lead,
        None,
        200,
    )
    .await?;
    let approved = closed["approvals"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["status"] == "approved").count())
        .unwrap_or(0);
    let expected = k + 2 * (warmup + args.held);
    ensure!(
        approved >= expected.min(1000),
        "{approved} approvals approved, {expected} expected"
    );
    Ok(())
}
