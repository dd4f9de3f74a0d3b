//! The "done when", through the real binary and real receivers: `portcullis serve`
//! streams its signed audit log to a syslog-over-TLS sink (an rsyslogd child requiring
//! client certificates) and to a NATS sink (a private JetStream `nats-server` child), while
//! agents make MCP calls through it (allowed and denied).
//!
//! What it proves: both receivers get every event of the log, leaf 0..N at least once, first
//! seen in leaf order, with the checkpoints, and each receiver's copy passes `portcullis audit
//! verify-export` (rsyslog's raw-message file; the stream's payloads as JSON lines). Both
//! receivers killed between batches: `sinks status --json` shows them retrying with the
//! connection problem named, the gateway keeps answering calls promptly, and once they are
//! back on the same port (and JetStream store) both catch up with no gap. The gateway
//! restarted while NATS is down: the sink's cursor persists, and once NATS is back its copy
//! is complete across both runs. A clean stop delivers the stop event and the final
//! checkpoint to both.
//!
//! The receivers are run by `portcullis_sinks::testing`, the harness the sinks' own tests
//! use.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use common::*;
use futures_util::StreamExt as _;
use portcullis_sinks::testing::{Ca, OwnNats, Rsyslog, TlsFiles};
use serde_json::{Value, json};

const STREAM: &str = "AUDIT";
const SUBJECT: &str = "portcullis.audit";
/// A call through the gateway must answer within this, receivers up or down.
const CALL_BUDGET: Duration = Duration::from_secs(2);
/// Generous: the tests run in parallel on 2 cores.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The CLI

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `portcullis sinks status --json`, by sink name.
fn status(config: &Path, name: &str) -> Value {
    let (code, out) = run(&["sinks", "status", "--json", "--config", path(config)]);
    assert_eq!(code, 0, "{out}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    all.into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {out}"))
}

/// `portcullis audit verify-export FILE --pubkey audit.pub`: exits 0 and says valid.
fn verify_export(file: &Path, pubkey: &Path) -> String {
    let (code, out) = run(&[
        "audit",
        "verify-export",
        path(file),
        "--pubkey",
        path(pubkey),
    ]);
    assert_eq!(code, 0, "{} does not verify: {out}", file.display());
    assert!(out.starts_with("valid: portcullis/"), "{out}");
    out
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Certificates (from crates/sinks/tests/syslog.rs)

/// The native records in rsyslog's file (each after its syslog header).
fn syslog_records(raw: &str) -> Vec<Value> {
    raw.lines()
        .map(|line| {
            let start = line
                .find("{\"record\":\"")
                .unwrap_or_else(|| panic!("no record in {line}"));
            serde_json::from_str(&line[start..]).unwrap()
        })
        .collect()
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    jetstream::new(client)
}

/// A file-backed stream capturing the subject, as the SIEM team would create it.
async fn create_stream(js: &jetstream::Context) {
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// The stream's payloads, in stream order, as a consumer reads them back.
async fn read_back(url: &str) -> Vec<String> {
    let js = jetstream_at(url).await;
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut payloads = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), messages.next())
        .await
        .expect("the consumer delivers what the stream holds")
    {
        payloads.push(String::from_utf8(message.unwrap().payload.to_vec()).unwrap());
    }
    assert_eq!(payloads.len(), count);
    payloads
}

// ---------------------------------------------------------------------------------------
// What arrived

/// Every leaf `0..n` there, first seen in leaf order, nothing missing; the number of
/// repeats (at least once allows some after a receiver's outage).
fn assert_complete_in_order(who: &str, records: &[Value], n: u64) -> usize {
    let leaves: Vec<u64> = records
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for &leaf in &leaves {
        if seen.insert(leaf) {
            first_seen.push(leaf);
        }
    }
    assert_eq!(
        first_seen,
        (0..n).collect::<Vec<_>>(),
        "{who}: every leaf, first seen in leaf order, no gap"
    );
    leaves.len() - first_seen.len()
}

fn has_checkpoint(records: &[Value], size: u64) -> bool {
    records
        .iter()
        .any(|r| r["record"] == "checkpoint" && r["size"].as_u64() == Some(size))
}

// ---------------------------------------------------------------------------------------
// The scenario

struct Peers {
    gw: Gateway,
    config: PathBuf,
    pubkey: PathBuf,
    agent: Key,
    rsyslog: Rsyslog,
    nats: OwnNats,
    /// Where the copies are written for `verify-export`.
    out: PathBuf,
    client: reqwest::Client,
    next_id: u64,
    /// The slowest call while a receiver was up, and while one was down.
    slowest: [Duration; 2],
    _keys: tempfile::TempDir,
}

impl Peers {
    async fn start() -> Peers {
        let keys = tempfile::tempdir().unwrap();
        let audit_key = keys.path().join("audit-key");
        let (code, out) = run(&["keys", "audit-init", "--out", path(&audit_key)]);
        assert_eq!(code, 0, "{out}");
        let tls = TlsFiles::write(keys.path(), &Ca::new("test syslog CA"));
        let rsyslog = Rsyslog::start(keys.path(), Some(&tls));
        let nats = OwnNats::start(&keys.path().join("nats-store"));
        create_stream(&jetstream_at(&nats.url()).await).await;

        let agent = api_key("billing-agent", "agent", &["agents"]);
        let dir = tempfile::tempdir().unwrap();
        // Small batches, so that a run of calls is several deliveries; a short retry_max,
        // so that a receiver back is noticed within a second or so.
        let rest = format!(
            "[audit]\nsigning_key = {key:?}\ncheckpoint_interval = \"100ms\"\n\n{agent}\n\
             [targets.billing]\nkind = \"mcp\"\n{command}\n\n\
             [[rules]]\nname = \"agents look up customers\"\nwho.groups = [\"agents\"]\ntarget = \"billing\"\ntools = [\"lookup_customer\"]\n\n\
             [[sinks]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"{syslog}\"\ntransport = \"tls\"\n\
             ca = {ca:?}\nclient_cert = {cert:?}\nclient_key = {ckey:?}\nserver_name = \"syslog.test\"\n\
             batch_max = 4\nretry_max = \"1s\"\ntimeout = \"5s\"\n\n\
             [[sinks]]\nname = \"bus\"\nkind = \"nats\"\nurl = \"{nats}\"\nsubject = \"{SUBJECT}\"\n\
             batch_max = 4\nretry_max = \"1s\"\ntimeout = \"5s\"\n",
            key = path(&audit_key),
            agent = agent.config,
            command = demo_server_command(),
            syslog = rsyslog.address(),
            ca = path(&tls.ca),
            cert = path(&tls.client_cert),
            ckey = path(&tls.client_key),
            nats = nats.url(),
        );
        let gw = Gateway::start_in(dir, &rest, "", &[]);
        let config = gw.dir.path().join("portcullis.toml");
        let out = gw.dir.path().join("copies");
        std::fs::create_dir_all(&out).unwrap();
        Peers {
            gw,
            config,
            pubkey: audit_key.join("audit.pub"),
            agent,
            rsyslog,
            nats,
            out,
            client: reqwest::Client::new(),
            next_id: 1,
            slowest: [Duration::ZERO; 2],
            _keys: keys,
        }
    }

    /// `allowed` lookups and one refund (denied by policy) through the gateway; each
    /// answers 200 within the budget, whatever state the receivers are in.
    async fn calls(&mut self, allowed: usize, receiver_down: bool) {
        for i in 0..=allowed {
            let (tool, denied) = if i == allowed {
                ("refund_payment", true)
            } else {
                ("lookup_customer", false)
            };
            let id = self.next_id;
            self.next_id += 1;
            let started = Instant::now();
            let (status, answer) = tokio::time::timeout(
                CALL_BUDGET,
                modern_call(
                    &self.client,
                    &self.gw.url("billing"),
                    &self.agent.key,
                    id,
                    "tools/call",
                    json!({"name": tool, "arguments": {"customer": "cus_1001"}}),
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("call {id} ({tool}) took longer than {CALL_BUDGET:?}"));
            let took = started.elapsed();
            let slowest = &mut self.slowest[usize::from(receiver_down)];
            *slowest = (*slowest).max(took);
            assert_eq!(status, 200, "call {id} ({tool}): {answer}");
            if denied {
                assert_eq!(answer["error"]["code"], -32010, "{answer}");
            } else {
                assert!(answer["result"].is_object(), "call {id}: {answer}");
            }
            eprintln!("call {id} ({tool}) answered in {took:?}");
        }
    }

    /// The log's size now (no call is in flight when this is asked).
    fn log_size(&self) -> u64 {
        self.gw.events().len() as u64
    }

    fn syslog_copy(&self) -> Vec<Value> {
        syslog_records(&self.rsyslog.raw())
    }

    async fn nats_copy(&self) -> Vec<Value> {
        read_back(&self.nats.url())
            .await
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect()
    }

    /// Until the syslog receiver holds the checkpoint of `size`.
    async fn syslog_reaches(&self, size: u64) {
        wait_until(&format!("rsyslog to hold the checkpoint of {size}"), || {
            has_checkpoint(&self.syslog_copy(), size)
        })
        .await;
    }

    /// Until the stream holds the checkpoint of `size`.
    async fn nats_reaches(&self, size: u64) {
        let start = Instant::now();
        while !has_checkpoint(&self.nats_copy().await, size) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for the stream to hold the checkpoint of {size}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Both copies complete up to `size` events, and each verifies with the real CLI.
    async fn check_copies(&self, size: u64, label: &str) {
        let _ = self.check_syslog(size, label);
        self.check_nats(size, label).await;
    }

    /// Returns the number of repeated events.
    fn check_syslog(&self, size: u64, label: &str) -> usize {
        let records = self.syslog_copy();
        let repeats = assert_complete_in_order("rsyslog", &records, size);
        let out = verify_export(&self.rsyslog.raw_file(), &self.pubkey);
        eprintln!(
            "{label}: rsyslog holds {} records, {repeats} repeated events: {}",
            records.len(),
            out.trim()
        );
        repeats
    }

    async fn check_nats(&self, size: u64, label: &str) {
        let payloads = read_back(&self.nats.url()).await;
        let records: Vec<Value> = payloads
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let repeats = assert_complete_in_order("nats", &records, size);
        let file = self.out.join(format!("nats-{label}.jsonl"));
        std::fs::write(&file, payloads.join("\n") + "\n").unwrap();
        let out = verify_export(&file, &self.pubkey);
        eprintln!(
            "{label}: the stream holds {} records, {repeats} repeated events: {}",
            records.len(),
            out.trim()
        );
    }

    /// Until `sinks status` shows both sinks caught up, without an error.
    async fn caught_up(&self) {
        wait_until("both sinks caught up", || {
            ["siem", "bus"].iter().all(|sink| {
                let s = status(&self.config, sink);
                s["delivered"] == s["head"] && s["last_error"].is_null()
            })
        })
        .await;
    }

    /// Until `sinks status` shows the sink retrying with a connection error containing
    /// `naming`.
    async fn lagging(&self, sink: &str, naming: &str) -> Value {
        let mut last = Value::Null;
        wait_until(&format!("{sink} to report its outage"), || {
            last = status(&self.config, sink);
            last["state"] == "retrying"
                && last["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(naming) && e.contains("connect"))
        })
        .await;
        assert!(last["lag_events"].as_u64().unwrap() > 0, "{last}");
        assert!(last["delivered"].as_u64() < last["head"].as_u64(), "{last}");
        eprintln!("{sink} while its receiver is down: {last}");
        last
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_syslog_over_tls_and_nats_and_catch_up_after_outages_and_a_restart() {
    let started = Instant::now();
    let mut p = Peers::start().await;

    // 1. Both receivers up: every event arrives at both, with the checkpoints.
    p.calls(4, false).await;
    let size = p.log_size();
    p.syslog_reaches(size).await;
    p.nats_reaches(size).await;
    p.caught_up().await;
    assert_eq!(
        status(&p.config, "siem")["destination"],
        format!("tls://{}", p.rsyslog.address())
    );
    p.check_copies(size, "both-up").await;
    let records = p.syslog_copy();
    let denied = records
        .iter()
        .filter(|r| r["event"]["type"] == "request" && r["event"]["outcome"] == "denied")
        .count();
    let allowed = records
        .iter()
        .filter(|r| {
            r["event"]["resource"] == "lookup_customer" && r["event"]["outcome"] == "success"
        })
        .count();
    assert!(denied >= 1 && allowed >= 4, "{records:?}");

    // 2. Both receivers killed between batches; calls go on, answered as fast as before.
    p.rsyslog.kill();
    p.nats.kill();
    p.calls(5, true).await;
    p.lagging("siem", "cannot connect to the syslog receiver")
        .await;
    p.lagging("bus", &p.nats.url()).await;
    // Still down: more calls, still prompt.
    p.calls(3, true).await;
    let size = p.log_size();

    // 3. Both back on the same port and store: both catch up, no gap.
    p.rsyslog.restart();
    p.nats.restart();
    p.syslog_reaches(size).await;
    p.nats_reaches(size).await;
    p.caught_up().await;
    p.check_copies(size, "after-outage").await;

    // 4. The gateway restarted while NATS is down: the syslog copy gets the stop event, the
    //    stream gets everything once NATS is back (the cursor survived the restart).
    let syslog_repeats = p.check_syslog(size, "before-gateway-restart");
    p.nats.kill();
    p.calls(2, true).await;
    let bus_before = p.lagging("bus", &p.nats.url()).await;
    assert!(p.gw.terminate(), "the gateway stops cleanly");
    let first_run = p.log_size();
    // rsyslog acknowledges nothing: what it took before the stop is written to its file
    // shortly after.
    p.syslog_reaches(first_run).await;
    let stop = p
        .syslog_copy()
        .into_iter()
        .find(|r| r["event"]["type"] == "gateway.stop")
        .expect("the first run's stop event reached rsyslog");
    assert_eq!(stop["leaf_index"].as_u64(), Some(first_run - 1));
    assert!(has_checkpoint(&p.syslog_copy(), first_run));
    let bus = status(&p.config, "bus");
    assert_eq!(bus["delivered"], bus_before["delivered"], "{bus}");
    p.gw.restart();
    p.calls(2, true).await;
    // The new process starts from the persisted cursor: its first failed attempt reports
    // what was delivered before the stop, not 0.
    let mut bus = Value::Null;
    wait_until(
        "the restarted gateway's bus sink to report NATS down",
        || {
            bus = status(&p.config, "bus");
            // A head past the first run's log: the new process's own report.
            bus["state"] == "retrying" && bus["head"].as_u64() > Some(first_run)
        },
    )
    .await;
    assert_eq!(bus["delivered"], bus_before["delivered"], "{bus}");
    p.nats.restart();
    let size = p.log_size();
    p.syslog_reaches(size).await;
    p.nats_reaches(size).await;
    p.caught_up().await;
    p.check_nats(size, "after-gateway-restart").await;
    // The syslog sink was caught up at the stop: the new process resent nothing to it
    // (rsyslog keeps every copy, unlike a JetStream stream with its duplicate window).
    assert_eq!(
        p.check_syslog(size, "after-gateway-restart"),
        syslog_repeats,
        "the restarted gateway resent nothing already delivered to rsyslog"
    );
    let nats = p.nats_copy().await;
    assert_eq!(
        nats.iter()
            .filter(|r| r["event"]["type"] == "gateway.start")
            .count(),
        2,
        "both runs' start events are in the stream"
    );

    // 5. A clean stop: the stop event and the final checkpoint reach both.
    assert!(p.gw.terminate(), "the gateway stops cleanly");
    let size = p.log_size();
    p.syslog_reaches(size).await;
    for (who, records) in [("rsyslog", p.syslog_copy()), ("nats", p.nats_copy().await)] {
        let last_stop = records
            .iter()
            .filter(|r| r["event"]["type"] == "gateway.stop")
            .filter_map(|r| r["leaf_index"].as_u64())
            .max();
        assert_eq!(last_stop, Some(size - 1), "{who}: the final stop event");
        assert!(
            has_checkpoint(&records, size),
            "{who}: the final checkpoint"
        );
    }
    p.check_copies(size, "final").await;
    eprintln!(
        "the whole scenario took {:?} ({size} events); the slowest call {:?} with the receivers up, {:?} with one or both down",
        started.elapsed(),
        p.slowest[0],
        p.slowest[1]
    );
}
