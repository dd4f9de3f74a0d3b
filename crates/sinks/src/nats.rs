//! `kind = "nats"`: each record published to a subject that a JetStream stream captures,
//! acknowledged by the stream (a PubAck), deduplicated by the stream on its record id.
//!
//! The payload is the native record JSON, unchanged ([`crate::record`]), so a consumer of
//! the stream can hand the payloads to `portcullis audit verify-export` as JSON lines.
//! Headers carry what a consumer routes on without parsing the payload: `Portcullis-Record`
//! (`event`, `checkpoint`, `omitted`), `Portcullis-Leaf-Index`, `Portcullis-Leaf-Hash`
//! (events), `Portcullis-Checkpoint-Size` (checkpoints), and `Nats-Msg-Id`: the event id,
//! `checkpoint-<origin>-<size>` or `omitted-<origin>-<first leaf>-<count>`. A batch the engine sends
//! again (its acknowledgement was lost) is therefore stored once when the resend falls
//! within the stream's duplicate window; the PubAck says `duplicate`, and those are counted.
//! A resend after the window is stored again: delivery stays at least once, and
//! `verify-export` accepts duplicates.
//!
//! A batch is one round trip, not one per record: every record is published first
//! (pipelined on the one connection, up to [`ACK_WINDOW`] unacknowledged), then the PubAcks
//! are awaited in order. The batch counts as delivered only when every record is acked.
//!
//! The stream itself is the receiving team's: the gateway never creates or changes it. A
//! subject no stream captures answers "no responders", which is reported as such, with the
//! command that creates one; the records wait in the log meanwhile.
//!
//! Connection: made on the first batch and kept. async-nats reconnects by itself after an
//! outage; meanwhile a batch fails at once ("not connected") instead of filling the
//! client's buffer, and a connection lost while acks are awaited fails the batch then, not
//! at the timeout. The client's buffer is bounded ([`CLIENT_CAPACITY`]) and every publish
//! and ack waits at most the sink's `timeout`.
//!
//! TLS (rustls): a `tls://` URL, or any of `ca`, `client_cert`, `server_name`, requires it;
//! the server's certificate must chain to `ca` (the system's roots without it) and carry
//! `server_name` (the URL's host without it). Authentication: `token`, or `credentials`
//! (a `.creds` file), or a `user:password@` in the URL, which status and errors never show.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{
    ContextBuilder, PublishAckFuture, PublishError, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::rustls;
use async_nats::{ConnectOptions, Event, HeaderMap, Subject};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use portcullis_config::{ClientTls, NatsSink};
use tokio::sync::watch;

use crate::record::OmittedRecord;
use crate::{Batch, Delivered, Record, Rejected, SendError, Transport};

/// The most publishes awaiting their PubAck at once. A batch larger than this is
/// pipelined: the oldest acks are awaited while the rest are published.
pub const ACK_WINDOW: usize = 4096;
/// Commands (publishes) the client buffers while writing to the socket; bounded, so an
/// outage cannot queue a whole backlog in memory.
pub const CLIENT_CAPACITY: usize = 8192;
/// Bytes of JSON per leaf hash of an omitted record (`"<64 hex>",`), to split a long run of
/// omitted leaves into messages within the server's `max_payload`.
const OMITTED_HASH_BYTES: usize = 67;

/// A sink publishing to NATS JetStream.
pub struct NatsTransport {
    settings: NatsSink,
    origin: String,
    /// The URL without credentials, and the subject: for status and errors.
    destination: String,
    subject: Subject,
    token: Option<String>,
    /// The `.creds` file's contents (a user JWT and its nkey seed).
    credentials: Option<String>,
    tls: Option<rustls::ClientConfig>,
    timeout: Duration,
    connection: Option<Connection>,
    duplicates: u64,
}

struct Connection {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Counts the client's disconnections (from its event callback).
    disconnects: watch::Receiver<u64>,
    /// The client gave up (closed): the next batch makes a new one.
    closed: Arc<AtomicBool>,
}

impl NatsTransport {
    /// Reads the token, the credentials file and the certificates now, so a missing one
    /// fails the start; the server is contacted on the first batch.
    pub fn new(
        settings: NatsSink,
        origin: &str,
        timeout: Duration,
    ) -> Result<NatsTransport, String> {
        let token = settings
            .token
            .as_ref()
            .map(|t| t.read().map_err(|e| format!("token: {e}")))
            .transpose()?;
        let credentials = match &settings.credentials {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read credentials {}: {e}", path.display()))?;
                // Parsed here only to fail the start on a file that is not a `.creds`.
                ConnectOptions::new().credentials(&text).map_err(|e| {
                    format!(
                        "credentials {} is not a NATS credentials file: {e}",
                        path.display()
                    )
                })?;
                Some(text)
            }
            None => None,
        };
        let tls_url = settings.url.starts_with("tls://");
        let tls = if tls_url || settings.tls != ClientTls::default() {
            Some(client_tls(&settings.tls)?)
        } else {
            None
        };
        let subject = Subject::from(settings.subject.as_str());
        Ok(NatsTransport {
            destination: format!("{} subject {}", crate::shown_url(&settings.url), subject),
            subject,
            origin: origin.to_string(),
            token,
            credentials,
            tls,
            timeout,
            settings,
            connection: None,
            duplicates: 0,
        })
    }

    /// Records the stream reported as duplicates (already stored under their `Nats-Msg-Id`)
    /// since this transport was made.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let (disconnected, disconnects) = watch::channel(0u64);
        let disconnected = Arc::new(disconnected);
        let closed = Arc::new(AtomicBool::new(false));
        let closed_by_client = closed.clone();
        let destination = self.destination.clone();
        let mut options = ConnectOptions::new()
            .name("portcullis")
            .connection_timeout(self.timeout.min(Duration::from_secs(10)))
            .request_timeout(Some(self.timeout))
            .client_capacity(CLIENT_CAPACITY)
            .event_callback(move |event| {
                let disconnected = disconnected.clone();
                let closed = closed_by_client.clone();
                let destination = destination.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            disconnected.send_modify(|n| *n += 1);
                            tracing::warn!(%destination, "the NATS connection was lost; reconnecting");
                        }
                        Event::Connected => {
                            tracing::info!(%destination, "connected to NATS");
                        }
                        Event::Closed => {
                            closed.store(true, Ordering::Relaxed);
                            disconnected.send_modify(|n| *n += 1);
                        }
                        other => tracing::warn!(%destination, "NATS: {other}"),
                    }
                }
            });
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(credentials) = &self.credentials {
            options = options
                .credentials(credentials)
                .map_err(|e| SendError::new(format!("the credentials cannot be used: {e}")))?;
        }
        if let Some(tls) = &self.tls {
            options = options.tls_client_config(tls.clone()).require_tls(true);
        }
        let client = options
            .connect(self.settings.url.as_str())
            .await
            .map_err(|e| SendError::new(format!("cannot connect to {}: {e}", self.destination)))?;
        let jetstream = ContextBuilder::new()
            .timeout(self.timeout)
            .ack_timeout(self.timeout)
            .max_ack_inflight(ACK_WINDOW)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Connection {
            client,
            jetstream,
            disconnects,
            closed,
        })
    }

    async fn send_batch(&mut self, batch: &Batch) -> Result<Delivered, SendError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.closed.load(Ordering::Relaxed))
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let connection = self.connection.as_ref().expect("connected above");
        if connection.client.connection_state() == async_nats::connection::State::Disconnected {
            return Err(SendError::new(format!(
                "not connected to {}: the connection was lost and the client is reconnecting",
                self.destination
            )));
        }
        let max_payload = connection.client.server_info().max_payload;
        let mut disconnects = connection.disconnects.clone();
        disconnects.mark_unchanged();
        let jetstream = connection.jetstream.clone();
        let messages = messages(batch, &self.origin, max_payload);
        let total = messages.len();
        let mut tally = Tally::default();
        let published = publish_all(&jetstream, &self.subject, messages, &mut tally);
        let result = tokio::select! {
            result = published => result,
            _ = disconnects.changed() => Err(Failure::Disconnected),
        };
        self.duplicates += tally.duplicates;
        if tally.duplicates > 0 {
            tracing::info!(
                destination = %self.destination,
                "{} of {total} records were already in the stream (deduplicated on Nats-Msg-Id)",
                tally.duplicates
            );
        }
        match result {
            Ok(()) => Ok(Delivered {
                rejected: tally.rejected,
            }),
            Err(failure) => Err(SendError::new(match failure {
                Failure::Disconnected => format!(
                    "lost the connection to {} with {} of {total} records not acknowledged",
                    self.destination,
                    total - tally.acked
                ),
                Failure::NoStream => no_stream(&self.settings.subject, &self.destination),
                Failure::Publish(e) => {
                    // The client itself failed (not the stream): start afresh next time.
                    self.connection = None;
                    format!("publishing to {}: {e}", self.destination)
                }
                Failure::Ack(_, e) if e.kind() == PublishErrorKind::TimedOut => format!(
                    "{} sent no acknowledgement (PubAck) within {:.1}s: {} of {total} records acknowledged",
                    self.destination,
                    self.timeout.as_secs_f64(),
                    tally.acked
                ),
                Failure::Ack(record, e) => format!(
                    "{} did not acknowledge record {record} of the batch ({} of {total} acknowledged): {e}",
                    self.destination, tally.acked
                ),
            })),
        }
    }
}

impl Transport for NatsTransport {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>> {
        self.send_batch(batch).boxed()
    }

    fn destination(&self) -> String {
        self.destination.clone()
    }
}

/// What the acks said so far.
#[derive(Default)]
struct Tally {
    acked: usize,
    duplicates: u64,
    rejected: Vec<Rejected>,
}

enum Failure {
    Disconnected,
    NoStream,
    Publish(PublishError),
    Ack(usize, PublishError),
}

/// Publishes every message, keeping at most [`ACK_WINDOW`] unacknowledged, then awaits the
/// remaining acks. Records the server refuses for good (too large) are tallied as rejected.
async fn publish_all(
    jetstream: &jetstream::Context,
    subject: &Subject,
    messages: Vec<(usize, Publish)>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let mut pending: VecDeque<(usize, PublishAckFuture)> =
        VecDeque::with_capacity(messages.len().min(ACK_WINDOW));
    for (record, message) in messages {
        if pending.len() >= ACK_WINDOW {
            let (record, ack) = pending.pop_front().expect("the window is full");
            acknowledged(record, ack.await, tally)?;
        }
        match jetstream.send_publish(subject.clone(), message).await {
            Ok(ack) => pending.push_back((record, ack)),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                tally.acked += 1;
                tally.rejected.push(Rejected {
                    record,
                    reason: format!("the server refuses the record: {e}"),
                });
            }
            Err(e) => return Err(Failure::Publish(e)),
        }
    }
    while let Some((record, ack)) = pending.pop_front() {
        acknowledged(record, ack.await, tally)?;
    }
    Ok(())
}

fn acknowledged(
    record: usize,
    ack: Result<jetstream::publish::PublishAck, PublishError>,
    tally: &mut Tally,
) -> Result<(), Failure> {
    match ack {
        Ok(ack) => {
            tally.acked += 1;
            tally.duplicates += u64::from(ack.duplicate);
            Ok(())
        }
        Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Err(Failure::NoStream),
        Err(e) if stream_error(&e) == Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => {
            // The stream's max_msg_size: no retry makes this record fit.
            tally.acked += 1;
            tally.rejected.push(Rejected {
                record,
                reason: format!("the stream refuses the record: {e}"),
            });
            Ok(())
        }
        Err(e) => Err(Failure::Ack(record, e)),
    }
}

/// The JetStream error code behind a publish error, if the stream answered with one.
fn stream_error(e: &PublishError) -> Option<ErrorCode> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code)
}

fn no_stream(subject: &str, destination: &str) -> String {
    format!(
        "no JetStream stream captures subject {subject} at {destination} (no responders): create one with \
         `nats stream add PORTCULLIS_AUDIT --subjects {subject} --storage file --dupe-window 2m` \
         (the gateway does not create it); the records wait in the audit log meanwhile"
    )
}

/// The messages of a batch, each with the index of the record it carries.
fn messages(batch: &Batch, origin: &str, max_payload: usize) -> Vec<(usize, Publish)> {
    let mut out = Vec::with_capacity(batch.records.len());
    for (index, record) in batch.records.iter().enumerate() {
        match record {
            Record::Omitted(omitted) => {
                for part in split_omitted(omitted, max_payload) {
                    out.push((index, message(&Record::Omitted(part), origin)));
                }
            }
            _ => out.push((index, message(record, origin))),
        }
    }
    out
}

/// An omitted run too long for one message, as consecutive runs that each fit: the same
/// leaves, each run verifiable on its own.
fn split_omitted(omitted: &OmittedRecord, max_payload: usize) -> Vec<OmittedRecord> {
    let per_message = (max_payload.saturating_sub(4096) / OMITTED_HASH_BYTES).max(1);
    omitted
        .leaf_hashes
        .chunks(per_message)
        .enumerate()
        .map(|(n, hashes)| OmittedRecord {
            leaf_index: omitted.leaf_index + (n * per_message) as u64,
            leaf_hashes: hashes.to_vec(),
        })
        .collect()
}

fn message(record: &Record, origin: &str) -> Publish {
    Publish::build()
        .payload(record.to_json(origin).into())
        .headers(headers(record, origin))
}

/// The record's headers, `Nats-Msg-Id` (the stream's deduplication key) among them.
fn headers(record: &Record, origin: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Portcullis-Record", record.kind());
    let id = match record {
        Record::Event(e) => {
            headers.insert("Portcullis-Leaf-Index", e.leaf_index.to_string().as_str());
            headers.insert("Portcullis-Leaf-Hash", hex::encode(e.leaf_hash).as_str());
            e.event.id.clone()
        }
        Record::Checkpoint(c) => {
            headers.insert("Portcullis-Checkpoint-Size", c.size.to_string().as_str());
            format!("checkpoint-{origin}-{}", c.size)
        }
        Record::Omitted(o) => {
            headers.insert("Portcullis-Leaf-Index", o.leaf_index.to_string().as_str());
            // The length too: a run sent again after a restart can be longer (the log
            // grew) and must not be dropped as a duplicate of the shorter one.
            format!("omitted-{origin}-{}-{}", o.leaf_index, o.leaf_hashes.len())
        }
    };
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    headers
}

/// The TLS client settings: the `ca` file's certificates (or the system's roots), the
/// client certificate, and `server_name` as the name the server's certificate must carry.
fn client_tls(tls: &ClientTls) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read ca {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("ca {} holds no certificate", ca.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca {}: {e}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &tls.server_name {
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("server_name {name:?}: {e}"))?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedServer { webpki, name }))
        }
        None => builder.with_root_certificates(roots),
    };
    match &tls.client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read client_cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read client_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert and client_key: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The standard WebPKI verification, against `server_name` instead of the URL's host (a
/// server reached by address, or through a name its certificate does not carry). Only the
/// name changes: chain, validity and signatures are checked by rustls' own verifier.
#[derive(Debug)]
struct NamedServer {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _url_host: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use portcullis_config::Secret;

    use super::*;

    fn settings() -> NatsSink {
        NatsSink {
            url: "nats://user:hunter2@127.0.0.1:4222".into(),
            subject: "audit.gw1".into(),
            credentials: None,
            token: None,
            tls: ClientTls::default(),
        }
    }

    #[test]
    fn the_destination_never_shows_credentials() {
        let t = NatsTransport::new(settings(), "o", Duration::from_secs(1)).unwrap();
        assert_eq!(t.destination(), "nats://127.0.0.1:4222 subject audit.gw1");
        assert_eq!(crate::shown_url("tls://h:1/x"), "tls://h:1/x");
    }

    #[tokio::test]
    async fn a_server_down_is_a_send_error_that_shows_no_password() {
        let mut s = settings();
        // Nothing listens on port 1.
        s.url = "nats://user:hunter2@127.0.0.1:1".into();
        let mut t = NatsTransport::new(s, "o", Duration::from_secs(2)).unwrap();
        let batch = Batch {
            origin: "o".into(),
            records: Vec::new(),
            first_leaf: 0,
            end_leaf: 0,
        };
        let e = t.send(&batch).await.unwrap_err().reason;
        assert!(
            e.starts_with("cannot connect to nats://127.0.0.1:1 subject audit.gw1: ")
                && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_secret_or_file_fails_the_start_without_showing_a_value() {
        let mut s = settings();
        s.token = Some(Secret::Env {
            env: "PORTCULLIS_TEST_SURELY_UNSET".into(),
        });
        let e = NatsTransport::new(s, "o", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("PORTCULLIS_TEST_SURELY_UNSET"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let mut s = settings();
        s.credentials = Some(dir.path().join("missing.creds"));
        let e = NatsTransport::new(s, "o", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("missing.creds"), "{e}");

        let creds = dir.path().join("bad.creds");
        std::fs::write(&creds, "SUAsecretseed but no JWT").unwrap();
        let mut s = settings();
        s.credentials = Some(creds);
        let e = NatsTransport::new(s, "o", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(
            e.contains("not a NATS credentials file") && !e.contains("SUAsecret"),
            "{e}"
        );

        let mut s = settings();
        s.url = "tls://127.0.0.1:4222".into();
        s.tls.ca = Some(dir.path().join("ca.pem"));
        let e = NatsTransport::new(s, "o", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("ca.pem"), "{e}");
    }

    #[test]
    fn a_long_omitted_run_is_split_into_consecutive_runs() {
        let omitted = OmittedRecord {
            leaf_index: 10,
            leaf_hashes: (0..250u8).map(|i| [i; 32]).collect(),
        };
        // Room for 100 hashes a message.
        let parts = split_omitted(&omitted, 4096 + 100 * OMITTED_HASH_BYTES);
        let starts: Vec<(u64, usize)> = parts
            .iter()
            .map(|p| (p.leaf_index, p.leaf_hashes.len()))
            .collect();
        assert_eq!(starts, [(10, 100), (110, 100), (210, 50)]);
        assert_eq!(parts[2].leaf_hashes[0], [200; 32]);
        let headers = headers(&Record::Omitted(parts[1].clone()), "portcullis/gw");
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            "omitted-portcullis/gw-110-100"
        );
        assert_eq!(
            headers.get("Portcullis-Record").unwrap().as_str(),
            "omitted"
        );
    }
}
