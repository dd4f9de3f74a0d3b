//! `portcullis-bench sinks`: how fast each kind of audit sink delivers, and how far it lags
//! behind a gateway writing 10,000 events a second.
//!
//! Throughput: a signed log of `--events` events is written first (batched durability),
//! then one sink is started on it and timed until its receiver has acknowledged the last
//! leaf. Lag: a sink runs while events are appended at `--rate` per second for
//! `--rate-seconds`; its status is sampled every 20 ms (the age of the oldest event not yet
//! acknowledged).
//!
//! Receivers: the file sink writes to the working disk; NATS is the machine's JetStream
//! (127.0.0.1:4222, a stream made for the run and deleted after); HTTP, HEC, `_bulk` and
//! OTLP post to a receiver in this process that parses what it gets (JSON, the `_bulk` pairs,
//! the OTLP protobuf) and answers as the real one does; syslog goes to a TCP receiver in this
//! process that reads the octet-counted frames. The in-process receivers cost CPU on the
//! same two cores, so the figures are a floor.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::routing::post;
use portcullis_audit::checkpoint::Ed25519Signer;
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::{
    ClientTls, FileSink, HttpPreset, HttpSink, NatsSink, OtlpSink, SinkFilter, SinkKind, SinkSpec,
    SyslogFacility, SyslogSink, SyslogTransport,
};
use portcullis_model::{EventType, Outcome};
use portcullis_sinks::SinkSet;
use portcullis_sinks::engine::Context;
use tokio::io::AsyncReadExt as _;

#[derive(clap::Args)]
pub struct Args {
    /// Events in the log each sink delivers, for the throughput figure.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Sink kinds to measure: file, http, hec, elasticsearch, otlp, syslog, nats.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "file,http,hec,elasticsearch,otlp,syslog,nats"
    )]
    kinds: Vec<String>,
    /// Events per delivery.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Events a second appended during the lag measurement.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of the lag measurement.
    #[arg(long, default_value_t = 10)]
    rate_seconds: u64,
}

const ORIGIN: &str = "portcullis/bench";
const NATS_URL: &str = "nats://127.0.0.1:4222";

pub async fn run(args: Args) -> Result<()> {
    let receiver = Receiver::start().await?;
    println!(
        "sink kind      events   delivered/s   lag at {}/s: p50   p99    max   (events behind at max)",
        args.rate
    );
    for kind in &args.kinds {
        let workdir = tempfile::tempdir_in(".").context("temp dir on the working disk")?;
        let nats_stream = if kind == "nats" {
            Some(NatsStream::create(workdir.path()).await?)
        } else {
            None
        };
        let spec = spec_for(
            kind,
            &receiver,
            workdir.path(),
            args.batch,
            nats_stream.as_ref(),
        )?;
        let throughput = delivered_per_second(&spec, workdir.path(), args.events).await?;
        let lag = lag_at_rate(&spec, workdir.path(), args.rate, args.rate_seconds).await?;
        println!(
            "{kind:<13} {:>7} {:>13.0}   {:>23.3}s {:>5.3}s {:>5.3}s   ({})",
            args.events, throughput, lag.p50, lag.p99, lag.max, lag.events_at_max
        );
        if let Some(stream) = nats_stream {
            stream.delete().await?;
        }
    }
    let received = receiver.records.load(Ordering::Relaxed);
    println!("(the in-process receivers took {received} records)");
    Ok(())
}

fn signer() -> Result<Arc<Ed25519Signer>> {
    let pkcs8 = Ed25519Signer::generate_pkcs8()?;
    Ok(Arc::new(Ed25519Signer::from_pkcs8("bench-key", &pkcs8)?))
}

fn open_log(dir: &Path) -> Result<AuditLog> {
    Ok(AuditLog::open_signed(
        dir,
        "bench",
        portcullis_config::Durability::Batched,
        CheckpointSettings {
            origin: ORIGIN.into(),
            signer: signer()?,
            interval: Duration::from_secs(1),
            every: 10_000,
        },
    )?)
}

async fn append(log: &AuditLog, n: u64) -> Result<()> {
    for i in 0..n {
        let mut event = log.event(EventType::Request, Outcome::Success);
        event.target = Some("bench".into());
        event.action = Some("tools/call".into());
        event.resource = Some("lookup".into());
        event.source = Some(format!("127.0.0.1:{}", 40000 + i % 1000));
        event.duration_ms = Some(0.4);
        log.record(event).await?;
    }
    Ok(())
}

async fn delivered_per_second(spec: &SinkSpec, work: &Path, events: u64) -> Result<f64> {
    let data = work.join("throughput");
    let log = open_log(&data)?;
    append(&log, events).await?;
    log.checkpoint_now().await?;
    let context = Context {
        data_dir: data,
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let start = Instant::now();
    let sinks = SinkSet::start(std::slice::from_ref(spec), &context)?;
    loop {
        let status = sinks.status().remove(0);
        if status.delivered >= events {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{} did not catch up in 300 s: {status:?}", spec.name);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    sinks.finish(Duration::from_secs(2)).await;
    log.close().await?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

struct Lag {
    p50: f64,
    p99: f64,
    max: f64,
    events_at_max: u64,
}

async fn lag_at_rate(spec: &SinkSpec, work: &Path, rate: u64, seconds: u64) -> Result<Lag> {
    let data = work.join("lag");
    let log = open_log(&data)?;
    append(&log, 1).await?;
    let context = Context {
        data_dir: data,
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    };
    let sinks = SinkSet::start(std::slice::from_ref(spec), &context)?;
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            // 100 ticks a second, rate/100 events each.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..seconds * 100 {
                tick.tick().await;
                append(&log, rate / 100).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut samples = Vec::new();
    let mut events_at_max = 0;
    let mut max = 0.0f64;
    while !writer.is_finished() {
        let status = sinks.status().remove(0);
        samples.push(status.lag_seconds);
        if status.lag_seconds >= max {
            max = status.lag_seconds;
            events_at_max = status.lag_events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await??;
    sinks.finish(Duration::from_secs(5)).await;
    log.close().await?;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Ok(Lag {
        p50: at(0.5),
        p99: at(0.99),
        max,
        events_at_max,
    })
}

fn spec_for(
    kind: &str,
    receiver: &Receiver,
    work: &Path,
    batch: usize,
    nats: Option<&NatsStream>,
) -> Result<SinkSpec> {
    let http = |path: &str, preset| {
        SinkKind::Http(HttpSink {
            url: format!("http://{}/{path}", receiver.http),
            preset,
            gzip: false,
            headers: Default::default(),
            token: (preset == HttpPreset::SplunkHec)
                .then(|| portcullis_config::Secret::Literal("bench-token".into())),
            index: (preset == HttpPreset::Elasticsearch).then(|| "portcullis-audit".into()),
            tls: ClientTls::default(),
        })
    };
    let sink_kind = match kind {
        "file" => SinkKind::File(FileSink {
            path: work.join("audit.jsonl"),
            max_bytes: 1 << 30,
            keep: 1,
        }),
        "http" => http("json", HttpPreset::Json),
        "hec" => http("services/collector/event", HttpPreset::SplunkHec),
        "elasticsearch" => http("_bulk", HttpPreset::Elasticsearch),
        "otlp" => SinkKind::Otlp(OtlpSink {
            url: format!("http://{}/v1/logs", receiver.http),
            gzip: false,
            headers: Default::default(),
            tls: ClientTls::default(),
        }),
        "syslog" => SinkKind::Syslog(SyslogSink {
            address: receiver.syslog.to_string(),
            transport: SyslogTransport::Tcp,
            tls: ClientTls::default(),
            facility: SyslogFacility::Authpriv,
            app_name: "portcullis".into(),
        }),
        "nats" => SinkKind::Nats(NatsSink {
            url: NATS_URL.into(),
            subject: nats.context("a NATS stream")?.subject.clone(),
            credentials: None,
            token: None,
            tls: ClientTls::default(),
        }),
        other => bail!("unknown sink kind {other}"),
    };
    Ok(SinkSpec {
        name: format!("bench-{kind}"),
        filter: SinkFilter::default(),
        batch_max: batch,
        batch_wait: Duration::from_millis(100),
        lag_warning: Duration::from_secs(3600),
        retry_max: Duration::from_secs(1),
        timeout: Duration::from_secs(30),
        kind: sink_kind,
    })
}

/// The in-process receivers: HTTP (JSON, HEC, `_bulk`, OTLP) and syslog over TCP.
struct Receiver {
    http: SocketAddr,
    syslog: SocketAddr,
    records: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        let records = Arc::new(AtomicU64::new(0));
        let counted = records.clone();
        let app = Router::new()
            .route(
                "/json",
                post({
                    let counted = counted.clone();
                    move |body: axum::body::Bytes| async move {
                        let value: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let n = value.as_array().map_or_else(
                            || body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
                            Vec::len,
                        );
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        "{}"
                    }
                }),
            )
            .route(
                "/services/collector/event",
                post({
                    let counted = counted.clone();
                    move |body: axum::body::Bytes| async move {
                        let n = serde_json::Deserializer::from_slice(&body)
                            .into_iter::<serde_json::Value>()
                            .filter(Result::is_ok)
                            .count();
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        axum::Json(serde_json::json!({"text": "Success", "code": 0}))
                    }
                }),
            )
            .route(
                "/_bulk",
                post({
                    let counted = counted.clone();
                    move |body: axum::body::Bytes| async move {
                        let lines = body
                            .split(|b| *b == b'\n')
                            .filter(|l| !l.is_empty())
                            .count();
                        let items: Vec<serde_json::Value> = (0..lines / 2)
                            .map(|_| serde_json::json!({"create": {"status": 201, "result": "created"}}))
                            .collect();
                        counted.fetch_add(items.len() as u64, Ordering::Relaxed);
                        axum::Json(serde_json::json!({"took": 1, "errors": false, "items": items}))
                    }
                }),
            )
            .route(
                "/v1/logs",
                post({
                    let counted = counted.clone();
                    move |body: axum::body::Bytes| async move {
                        counted.fetch_add(otlp_records(&body), Ordering::Relaxed);
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        let syslog_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let syslog = syslog_listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = syslog_listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(read_octet_counted(stream, counted));
            }
        });
        Ok(Receiver {
            http,
            syslog,
            records,
        })
    }
}

/// Reads RFC 6587 octet-counted frames (`LEN SP MSG`) and counts them.
async fn read_octet_counted(stream: tokio::net::TcpStream, counted: Arc<AtomicU64>) {
    let mut reader = tokio::io::BufReader::with_capacity(1 << 16, stream);
    let mut message = Vec::new();
    loop {
        let mut len = 0usize;
        loop {
            let Ok(byte) = reader.read_u8().await else {
                return;
            };
            match byte {
                b'0'..=b'9' => len = len * 10 + usize::from(byte - b'0'),
                b' ' => break,
                _ => return,
            }
        }
        message.resize(len, 0);
        if reader.read_exact(&mut message).await.is_err() {
            return;
        }
        counted.fetch_add(1, Ordering::Relaxed);
    }
}

/// The number of log records in an OTLP `ExportLogsServiceRequest`.
fn otlp_records(body: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message as _;
    ExportLogsServiceRequest::decode(body).map_or(0, |request| {
        request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum()
    })
}

/// The sinks of `mcp --sinks`: syslog over TCP to a receiver in this process, the machine's
/// NATS JetStream, a file.
pub(crate) struct McpSinks {
    /// The `[[sinks]]` tables for the gateway's configuration.
    pub(crate) config: String,
    receiver: Receiver,
    stream: Option<NatsStream>,
    _dir: tempfile::TempDir,
}

impl McpSinks {
    pub(crate) async fn start(kinds: &[String]) -> Result<McpSinks> {
        let receiver = Receiver::start().await?;
        let dir = tempfile::tempdir_in(".")?;
        let mut stream = None;
        let mut config = String::new();
        for kind in kinds {
            config += &match kind.as_str() {
                "syslog" => format!(
                    "\n[[sinks]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"{}\"\ntransport = \"tcp\"\n",
                    receiver.syslog
                ),
                "nats" => {
                    let created = NatsStream::create(dir.path()).await?;
                    let section = format!(
                        "\n[[sinks]]\nname = \"bus\"\nkind = \"nats\"\nurl = \"{NATS_URL}\"\nsubject = \"{}\"\n",
                        created.subject
                    );
                    stream = Some(created);
                    section
                }
                "file" => format!(
                    "\n[[sinks]]\nname = \"lake\"\nkind = \"file\"\npath = {:?}\n",
                    dir.path().join("audit.jsonl").display().to_string()
                ),
                other => bail!("--sinks: {other} is not syslog, nats or file"),
            };
        }
        Ok(McpSinks {
            config,
            receiver,
            stream,
            _dir: dir,
        })
    }

    pub(crate) async fn finish(self) -> Result<()> {
        println!(
            "(the syslog receiver took {} records)",
            self.receiver.records.load(Ordering::Relaxed)
        );
        match self.stream {
            Some(stream) => stream.delete().await,
            None => Ok(()),
        }
    }
}

/// A JetStream stream made for the run.
struct NatsStream {
    subject: String,
    name: String,
}

impl NatsStream {
    async fn create(_work: &Path) -> Result<NatsStream> {
        let id = std::process::id();
        let stream = NatsStream {
            subject: format!("bench.audit.{id}"),
            name: format!("BENCH_AUDIT_{id}"),
        };
        let client = async_nats::connect(NATS_URL)
            .await
            .context("NATS on 127.0.0.1:4222")?;
        async_nats::jetstream::new(client)
            .create_stream(async_nats::jetstream::stream::Config {
                name: stream.name.clone(),
                subjects: vec![stream.subject.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating the JetStream stream: {e}"))?;
        Ok(stream)
    }

    async fn delete(self) -> Result<()> {
        let client = async_nats::connect(NATS_URL).await?;
        async_nats::jetstream::new(client)
            .delete_stream(&self.name)
            .await
            .map_err(|e| anyhow::anyhow!("deleting the JetStream stream: {e}"))?;
        Ok(())
    }
}
