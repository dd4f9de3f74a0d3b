//! `kind = "otlp"`: OpenTelemetry logs over OTLP/HTTP, binary protobuf
//! (`application/x-protobuf`), POSTed to the configured URL (`http://collector:4318/v1/logs`).
//!
//! One `ExportLogsServiceRequest` per batch, one `ResourceLogs` with `service.name =
//! portcullis`, `service.instance.id` = the gateway and `portcullis.origin`; one
//! `LogRecord` per record, whose body is the native record as a string (what
//! `verify-export` checks), with the event's time, a severity from its outcome, its type as
//! `event_name`, and attributes for what collectors route and filter on.
//!
//! Answers, per the OTLP/HTTP specification: 2xx is success. A `partial_success` with
//! `rejected_log_records > 0` means the collector dropped that many records for good and
//! must not be sent again; it does not say which, so every record of the batch is reported
//! as possibly refused, with the count and the collector's message (the rejection report
//! then names all records that may be missing, for a replay, rather than none or a guess).
//! 429, 502, 503 and 504 are retryable; the specification calls other failures
//! not retryable, but for an audit stream a 400/401/403/404/413 for a whole batch is a
//! misconfiguration to fix, not a reason to drop events: the batch is kept and retried with
//! backoff, and the status shows the collector's message (from its `google.rpc.Status`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use portcullis_config::OtlpSink;
use prost::Message as _;

use crate::http::Poster;
use crate::record::{Batch, Record};
use crate::{Delivered, Rejected, SendError, Transport};

/// The instrumentation scope of the records.
const SCOPE: &str = "portcullis.audit";

pub struct OtlpTransport {
    poster: Poster,
}

impl OtlpTransport {
    pub fn new(settings: &OtlpSink, timeout: Duration) -> Result<OtlpTransport, String> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| format!("url: {} is not a URL: {e}", crate::shown_url(&settings.url)))?;
        let poster = Poster::new(
            url,
            &settings.tls,
            &settings.headers,
            Vec::new(),
            settings.gzip,
            timeout,
        )?;
        Ok(OtlpTransport { poster })
    }
}

impl Transport for OtlpTransport {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>> {
        async move {
            let body = export_request(batch).encode_to_vec();
            let (status, headers, answer) =
                self.poster.post("application/x-protobuf", body).await?;
            if !status.is_success() {
                let message = rpc_status(&answer)
                    .unwrap_or_else(|| self.poster.excerpt(&answer));
                let retry_after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(", Retry-After {v}"))
                    .unwrap_or_default();
                let hint = match status.as_u16() {
                    429 | 502 | 503 | 504 => format!("retryable{retry_after}"),
                    _ => format!(
                        "{}; the batch is kept and sent again",
                        match crate::http::hint(status) {
                            "" => "not retryable per OTLP, so a configuration to fix",
                            hint => hint,
                        }
                    ),
                };
                return Err(self.poster.refused(status, message.as_bytes(), &hint));
            }
            let response = ExportLogsServiceResponse::decode(answer.as_slice()).map_err(|e| {
                SendError::new(format!(
                    "{}: the answer is not an ExportLogsServiceResponse: {e}",
                    self.poster.destination()
                ))
            })?;
            let mut delivered = Delivered::default();
            if let Some(partial) = response.partial_success {
                let message = self.poster.excerpt(partial.error_message.as_bytes());
                if partial.rejected_log_records > 0 {
                    let reason = format!(
                        "the collector refused {} of the {} records of this batch without saying which (this may be one): {message}",
                        partial.rejected_log_records,
                        batch.records.len()
                    );
                    delivered.rejected = (0..batch.records.len())
                        .map(|record| Rejected {
                            record,
                            reason: reason.clone(),
                        })
                        .collect();
                } else if !message.is_empty() {
                    tracing::warn!(destination = %self.poster.destination(), "the OTLP collector accepted the batch with a warning: {message}");
                }
            }
            Ok(delivered)
        }
        .boxed()
    }

    fn destination(&self) -> String {
        self.poster.destination().to_string()
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error (only the fields read here).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn rpc_status(answer: &[u8]) -> Option<String> {
    let status = RpcStatus::decode(answer).ok()?;
    (!status.message.is_empty()).then_some(status.message)
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(time: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// The OTLP request for a batch.
pub fn export_request(batch: &Batch) -> ExportLogsServiceRequest {
    let gateway = batch
        .events()
        .next()
        .map(|e| e.event.gateway.clone())
        .unwrap_or_else(|| {
            batch
                .origin
                .strip_prefix("portcullis/")
                .unwrap_or(&batch.origin)
                .to_string()
        });
    let observed = chrono::Utc::now()
        .timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let mut native = String::new();
    let records = batch
        .records
        .iter()
        .map(|record| {
            native.clear();
            record.write_json(&batch.origin, &mut native);
            log_record(record, native.clone(), observed)
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "portcullis"),
                    string("service.instance.id", gateway),
                    string("portcullis.origin", batch.origin.clone()),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn log_record(record: &Record, native: String, observed: u64) -> LogRecord {
    let mut attributes = vec![string("portcullis.record", record.kind())];
    let (time, severity, event_name) = match record {
        Record::Event(e) => {
            let ev = &e.event;
            attributes.extend([
                string("portcullis.event.id", ev.id.clone()),
                int("portcullis.leaf_index", e.leaf_index as i64),
                string("portcullis.leaf_hash", hex::encode(e.leaf_hash)),
                string("portcullis.event.type", e.event_type.clone()),
                string("portcullis.outcome", e.outcome.clone()),
            ]);
            let mut optional = BTreeMap::new();
            optional.insert("portcullis.target", ev.target.clone());
            optional.insert("portcullis.action", ev.action.clone());
            optional.insert("portcullis.resource", ev.resource.clone());
            optional.insert("portcullis.rule", ev.rule.clone());
            optional.insert("client.address", ev.source.clone());
            if let Some(identity) = &ev.identity {
                optional.insert("user.id", Some(identity.subject.clone()));
                optional.insert("user.name", identity.display_name.clone());
                optional.insert("portcullis.identity.issuer", Some(identity.issuer.clone()));
            }
            attributes.extend(
                optional
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| string(k, v))),
            );
            let severity = match e.outcome.as_str() {
                "success" | "info" => SeverityNumber::Info,
                "failed" => SeverityNumber::Error,
                _ => SeverityNumber::Warn,
            };
            (unix_nanos(&ev.time), severity, e.event_type.clone())
        }
        Record::Checkpoint(c) => {
            attributes.push(int("portcullis.size", c.size as i64));
            (
                unix_nanos(&c.time),
                SeverityNumber::Info,
                "checkpoint".into(),
            )
        }
        Record::Omitted(o) => {
            attributes.extend([
                int("portcullis.leaf_index", o.leaf_index as i64),
                int("portcullis.leaf_count", o.leaf_hashes.len() as i64),
            ]);
            // No time of its own: 0 is "unknown" in OTLP; the observed time says when.
            (0, SeverityNumber::Info, "omitted".into())
        }
    };
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: observed,
        severity_number: severity as i32,
        severity_text: match severity {
            SeverityNumber::Error => "ERROR",
            SeverityNumber::Warn => "WARN",
            _ => "INFO",
        }
        .into(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(native)),
        }),
        attributes,
        event_name: format!("portcullis.{event_name}"),
        ..Default::default()
    }
}
