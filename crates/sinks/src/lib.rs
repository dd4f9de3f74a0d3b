//! Streaming the audit log to the security team's own store: syslog (RFC 5424 over TCP or
//! TLS), HTTP (JSON, Splunk HEC, Elasticsearch `_bulk` with ECS names), OTLP logs, NATS
//! JetStream, and JSON lines files.
//!
//! Delivery is from the durable log, at least once. Each sink reads the committed log from
//! its own persisted cursor ([`cursor`]), sends a batch, and advances the cursor only once the
//! receiver acknowledged it; a failure is retried with capped exponential backoff and jitter,
//! so a sink that is down only grows its lag, and after a restart it resumes where it
//! stopped. Requests never wait for a sink: the sinks read the log the gateway already wrote
//! (see [`engine`]).
//!
//! The stream is provably complete ([`record`]): every record carries its leaf index and leaf
//! hash, the log's signed checkpoints travel in the stream, and events a sink's filter leaves
//! out are sent as their leaf hashes, so [`export::verify`] can check a copy taken back out of
//! the SIEM against the checkpoints: no gap, no edit, no reordering.
#![forbid(unsafe_code)]

pub mod cursor;
pub mod ecs;
pub mod engine;
pub mod export;
pub mod file;
pub mod filter;
pub mod http;
pub mod nats;
pub mod otlp;
pub mod record;
pub mod syslog;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;

use futures_util::future::BoxFuture;
use portcullis_config::{SinkKind, SinkSpec};

pub use engine::{SinkSet, SinkState, SinkStatus, SinkStatuses};
pub use record::{Batch, Record};

/// Why a sink could not be set up or its state kept. Delivery failures are not errors of
/// this kind: they are retried ([`SendError`]).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's settings cannot be used (a secret not set, a certificate not readable).
    #[error("sink {sink}: {reason}")]
    Setup { sink: String, reason: String },
    #[error("sink cursor {path}: {reason}")]
    Cursor { path: PathBuf, reason: String },
    #[error("sink {sink}: {source}")]
    Audit {
        sink: String,
        source: portcullis_audit::AuditError,
    },
    #[error(transparent)]
    Unreadable(#[from] record::UnreadableEvent),
}

/// A delivery that was not acknowledged: the whole batch is sent again after a backoff.
/// The reason is shown in `portcullis sinks status`, so it names the cause (refused
/// connection, TLS failure, HTTP status and the receiver's message) and never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    pub reason: String,
}

impl SendError {
    pub fn new(reason: impl Into<String>) -> SendError {
        SendError {
            reason: reason.into(),
        }
    }
}

/// What the receiver acknowledged: the batch, except the records it refused for good (a
/// malformed-document rejection that no retry can fix). Those are counted and written to
/// the sink's rejection report with the receiver's reason, and the cursor moves past them.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub rejected: Vec<Rejected>,
}

/// One record the receiver refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The record's position in [`Batch::records`].
    pub record: usize,
    pub reason: String,
}

/// One kind of receiver. `send` delivers a whole batch and returns once the receiver
/// acknowledged it (a TCP write is not an acknowledgement where the protocol has one: HEC
/// and `_bulk` answer, JetStream acks, a file is synced). Connections are made lazily and
/// kept between batches; after an error the next `send` reconnects.
pub trait Transport: Send {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>>;

    /// Where it sends, for status and logs: a URL or address, never a secret.
    fn destination(&self) -> String;
}

/// Where a configured sink sends, from its settings alone (no secret is read): for
/// `check-config` and `sinks status`.
pub fn destination(spec: &SinkSpec) -> String {
    match &spec.kind {
        SinkKind::Syslog(syslog) => format!(
            "{}://{}",
            match syslog.transport {
                portcullis_config::SyslogTransport::Tcp => "tcp",
                portcullis_config::SyslogTransport::Tls => "tls",
            },
            syslog.address
        ),
        SinkKind::Http(http) => shown_url(&http.url),
        SinkKind::Otlp(otlp) => shown_url(&otlp.url),
        SinkKind::Nats(nats) => format!("{} subject {}", shown_url(&nats.url), nats.subject),
        SinkKind::File(file) => file.path.display().to_string(),
    }
}

/// A URL as status, logs and errors show it: without user, password, query or fragment,
/// where credentials hide (`https://user:pass@host/?token=...`). A comma-separated list (NATS
/// takes several servers) is shown item by item.
pub(crate) fn shown_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let Some((scheme, rest)) = one.split_once("://") else {
                return "(not a URL)".to_string();
            };
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            format!("{scheme}://{host}{path}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The transport of a configured sink. Secrets and certificates are read here, so a
/// missing one fails the start, naming the sink; the receiver is not contacted yet, so one
/// that is down does not.
pub fn transport(spec: &SinkSpec, origin: &str) -> Result<Box<dyn Transport>, SinkError> {
    let setup = |reason: String| SinkError::Setup {
        sink: spec.name.clone(),
        reason,
    };
    match &spec.kind {
        SinkKind::File(file) => Ok(Box::new(file::FileTransport::new(file.clone()))),
        SinkKind::Syslog(syslog) => Ok(Box::new(syslog::SyslogSender::new(syslog).map_err(setup)?)),
        SinkKind::Nats(nats) => Ok(Box::new(
            nats::NatsTransport::new(nats.clone(), origin, spec.timeout).map_err(setup)?,
        )),
        SinkKind::Http(http) => Ok(Box::new(
            http::HttpTransport::new(http, spec.timeout).map_err(setup)?,
        )),
        SinkKind::Otlp(otlp) => Ok(Box::new(
            otlp::OtlpTransport::new(otlp, spec.timeout).map_err(setup)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(
            shown_url("https://elastic:s3cret@es.internal:9200/_bulk?api_key=k#x"),
            "https://es.internal:9200/_bulk"
        );
        assert_eq!(
            shown_url("nats://a:pw1@n1:4222,nats://b:pw2@n2:4222"),
            "nats://n1:4222,nats://n2:4222"
        );
        assert_eq!(shown_url("token@host"), "(not a URL)");
    }
}
