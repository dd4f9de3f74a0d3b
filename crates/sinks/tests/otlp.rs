//! The `otlp` sink against an OTLP/HTTP logs receiver written here with axum, decoding each
//! request with the official `opentelemetry-proto` types: an outage is waited out and every
//! record arrives, in order, as a log record whose body verifies with the log's key; a
//! partial success is reported as a rejection; an error answer's `google.rpc.Status` message
//! is shown.

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use portcullis_audit::AuditLog;
use portcullis_config::{ClientTls, Durability, OtlpSink, SinkFilter, SinkKind, SinkSpec};
use portcullis_model::{EventType, Outcome};
use portcullis_sinks::testing::{ORIGIN, SignedLog};
use portcullis_sinks::{SinkSet, export};
use prost::Message as _;

async fn record(log: &AuditLog, n: usize, target: &str) {
    for _ in 0..n {
        let outcome = if target == "denied" {
            Outcome::Denied
        } else {
            Outcome::Success
        };
        let mut event = log.event(EventType::Request, outcome);
        event.target = Some(target.into());
        log.record(event).await.unwrap();
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn spec(name: &str, batch_max: usize, url: String, gzip: bool) -> SinkSpec {
    SinkSpec {
        name: name.into(),
        filter: SinkFilter::default(),
        batch_max,
        batch_wait: Duration::ZERO,
        lag_warning: Duration::from_secs(60),
        retry_max: Duration::from_millis(400),
        timeout: Duration::from_secs(20),
        kind: SinkKind::Otlp(OtlpSink {
            url,
            gzip,
            headers: [(
                "Authorization".to_string(),
                portcullis_config::Secret::Literal("Bearer otlp-secret-1".into()),
            )]
            .into(),
            tls: ClientTls::default(),
        }),
    }
}

/// `google.rpc.Status`, as an OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Default)]
struct Peer {
    /// The resource attributes and log records received, in arrival order.
    resources: Mutex<Vec<Vec<KeyValue>>>,
    records: Mutex<Vec<LogRecord>>,
    down: AtomicBool,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        other => panic!("{other:?}"),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

async fn logs(
    State(peer): State<Arc<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    if peer.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
    }
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let bad = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            RpcStatus { code: 3, message }.encode_to_vec(),
        )
    };
    if header("content-type").as_deref() != Some("application/x-protobuf") {
        return bad(format!("content type {:?}", header("content-type")));
    }
    if header("authorization").as_deref() != Some("Bearer otlp-secret-1") {
        return (StatusCode::UNAUTHORIZED, Vec::new());
    }
    let body = match header("content-encoding").as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        None => body.to_vec(),
        Some(other) => return bad(format!("encoding {other}")),
    };
    let request = match ExportLogsServiceRequest::decode(body.as_slice()) {
        Ok(request) => request,
        Err(e) => return bad(e.to_string()),
    };
    let mut rejected = 0;
    for resource_logs in request.resource_logs {
        peer.resources
            .lock()
            .unwrap()
            .push(resource_logs.resource.unwrap_or_default().attributes);
        for scope in resource_logs.scope_logs {
            assert_eq!(scope.scope.unwrap().name, "portcullis.audit");
            for log_record in scope.log_records {
                if text(log_record.body.as_ref()).contains("\"target\":\"poison\"") {
                    rejected += 1;
                    continue;
                }
                peer.records.lock().unwrap().push(log_record);
            }
        }
    }
    let response = ExportLogsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
            rejected_log_records: rejected,
            error_message: "a record was dropped by the poison processor".into(),
        }),
    };
    (StatusCode::OK, response.encode_to_vec())
}

async fn refuse(headers: HeaderMap) -> (StatusCode, Vec<u8>) {
    assert!(headers.get("authorization").is_some());
    let status = RpcStatus {
        code: 3,
        message: "the logs pipeline is not configured on this collector".into(),
    };
    (StatusCode::BAD_REQUEST, status.encode_to_vec())
}

async fn serve(peer: Arc<Peer>) -> String {
    let app = axum::Router::new()
        .route("/v1/logs", post(logs))
        .route("/refuse/v1/logs", post(refuse))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 30))
        .with_state(peer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn native(records: &[LogRecord]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| serde_json::from_str(&text(r.body.as_ref())).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_waited_out_and_every_record_arrives_as_an_otlp_log_record() {
    let s = SignedLog::new(Durability::Strict);
    let peer = Arc::new(Peer::default());
    peer.down.store(true, Ordering::SeqCst);
    let base = serve(peer.clone()).await;
    record(&s.log, 10, "billing").await;
    let sinks = SinkSet::start(
        &[spec("otel", 7, format!("{base}/v1/logs"), true)],
        &s.context,
    )
    .unwrap();
    record(&s.log, 5, "denied").await;
    wait_until("the outage reported", || {
        sinks.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503") && e.contains("retryable"))
    })
    .await;
    assert_eq!(sinks.status()[0].delivered, 0);
    assert_eq!(sinks.status()[0].state, "retrying");
    peer.down.store(false, Ordering::SeqCst);
    s.log.checkpoint_now().await.unwrap();
    wait_until("the checkpoint of 15", || {
        native(&peer.records.lock().unwrap())
            .iter()
            .any(|r| r["record"] == "checkpoint" && r["size"] == 15)
    })
    .await;
    wait_until("caught up", || sinks.status()[0].state == "caught-up").await;
    assert_eq!(sinks.status()[0].rejected, 0);
    sinks.finish(Duration::from_secs(1)).await;

    let records = std::mem::take(&mut *peer.records.lock().unwrap());
    let natives = native(&records);
    let leaves: Vec<u64> = natives
        .iter()
        .filter(|r| r["record"] == "event")
        .map(|r| r["leaf_index"].as_u64().unwrap())
        .collect();
    assert_eq!(leaves, (0..15).collect::<Vec<_>>(), "in order, once");
    let export: String = natives.iter().map(|r| r.to_string() + "\n").collect();
    let summary = export::verify(export.as_bytes(), std::slice::from_ref(&s.key)).unwrap();
    assert_eq!(
        (summary.logs[0].events, summary.logs[0].covered),
        (15, 15),
        "{summary:?}"
    );
    // The bodies as a collector exports them (a JSON string per line) verify as well.
    let as_strings: String = records
        .iter()
        .map(|r| serde_json::to_string(&text(r.body.as_ref())).unwrap() + "\n")
        .collect();
    export::verify(as_strings.as_bytes(), std::slice::from_ref(&s.key)).unwrap();

    let resource = peer.resources.lock().unwrap()[0].clone();
    assert_eq!(
        attribute(&resource, "service.name").as_deref(),
        Some("portcullis")
    );
    assert_eq!(
        attribute(&resource, "service.instance.id").as_deref(),
        Some("test-gw")
    );
    assert_eq!(
        attribute(&resource, "portcullis.origin").as_deref(),
        Some(ORIGIN)
    );
    let first = &records[0];
    let event = &natives[0]["event"];
    assert_eq!(
        attribute(&first.attributes, "portcullis.event.id"),
        event["id"].as_str().map(String::from)
    );
    assert_eq!(
        attribute(&first.attributes, "portcullis.leaf_index").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(&first.attributes, "portcullis.target").as_deref(),
        Some("billing")
    );
    assert_eq!(first.event_name, "portcullis.request");
    assert_eq!(first.severity_text, "INFO");
    let time = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap()).unwrap();
    assert_eq!(
        first.time_unix_nano,
        time.timestamp_nanos_opt().unwrap() as u64
    );
    assert!(first.observed_time_unix_nano >= first.time_unix_nano);
    let denied = records
        .iter()
        .find(|r| attribute(&r.attributes, "portcullis.outcome").as_deref() == Some("denied"))
        .unwrap();
    assert_eq!(
        (denied.severity_number, denied.severity_text.as_str()),
        (13, "WARN")
    );
    s.log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_is_reported_and_an_error_status_is_shown() {
    let s = SignedLog::new(Durability::Strict);
    let peer = Arc::new(Peer::default());
    let base = serve(peer.clone()).await;
    record(&s.log, 3, "billing").await;
    record(&s.log, 1, "poison").await;
    record(&s.log, 1, "billing").await;
    s.log.checkpoint_now().await.unwrap();
    let sinks = SinkSet::start(
        &[
            spec("otel", 100, format!("{base}/v1/logs"), false),
            spec("refused", 100, format!("{base}/refuse/v1/logs"), true),
        ],
        &s.context,
    )
    .unwrap();
    wait_until("caught up", || sinks.status()[0].state == "caught-up").await;
    wait_until("the refusal reported", || {
        sinks.status()[1].last_error.is_some()
    })
    .await;
    let status = sinks.status();
    // One batch of 5 events and the checkpoint: the collector dropped one without saying
    // which, so all six are listed as possibly refused.
    assert_eq!(
        (status[0].delivered, status[0].rejected),
        (5, 6),
        "{status:?}"
    );
    let report =
        std::fs::read_to_string(portcullis_sinks::cursor::rejected_path(&s.data, "otel")).unwrap();
    assert_eq!(report.lines().count(), 6);
    assert!(
        report.contains("refused 1 of the 6 records") && report.contains("poison processor"),
        "{report}"
    );
    let refused = status[1].last_error.as_deref().unwrap();
    assert!(
        refused.contains("400")
            && refused.contains("the logs pipeline is not configured")
            && refused.contains("the batch is kept"),
        "{refused}"
    );
    assert!(!refused.contains("otlp-secret-1"), "{refused}");
    assert_eq!(status[1].delivered, 0);
    sinks.finish(Duration::from_secs(1)).await;
    s.log.close().await.unwrap();
}

/// Delivered events per second to this receiver (`cargo test --release -p
/// portcullis-sinks --test otlp -- --ignored --nocapture throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
async fn throughput() {
    let events: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch_max: usize = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let s = SignedLog::new(Durability::Batched);
    let log = Arc::new(s.log);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            record(&log, events / 64, "billing").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    log.checkpoint_now().await.unwrap();
    let recorded = (events / 64) * 64;
    let peer = Arc::new(Peer::default());
    let base = serve(peer.clone()).await;
    for gzip in [true, false] {
        peer.records.lock().unwrap().clear();
        let name = format!("otel-{gzip}");
        let started = Instant::now();
        let sinks = SinkSet::start(
            &[spec(&name, batch_max, format!("{base}/v1/logs"), gzip)],
            &s.context,
        )
        .unwrap();
        wait_until("caught up", || {
            let st = &sinks.status()[0];
            st.state == "caught-up" && st.delivered == recorded as u64
        })
        .await;
        let took = started.elapsed().as_secs_f64();
        sinks.finish(Duration::from_secs(1)).await;
        println!(
            "otlp gzip={gzip} batch_max={batch_max}: {recorded} events in {took:.2}s = {:.0} events/s",
            recorded as f64 / took
        );
    }
    log.close().await.unwrap();
}
