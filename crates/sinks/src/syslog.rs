//! `kind = "syslog"`: RFC 5424 messages over TCP with octet counting (RFC 6587) or over TLS
//! (RFC 5425, the same framing), for rsyslog, syslog-ng and the SIEM collectors that speak
//! syslog.
//!
//! Each record of the stream is one message:
//!
//! ```text
//! 611 <76>1 2026-12-06T10:00:00.123Z gw-host portcullis 4242 request [portcullis@32473 origin="portcullis/gw-1" id="0193..." leaf="41" hash="9f.." outcome="denied"] {"record":"event",...}
//! ```
//!
//! - PRI: the configured facility, and a severity from the record ([`severity`]).
//! - TIMESTAMP: the event's time (a checkpoint's: when it was signed; an omitted run has
//!   none, `-`).
//! - HOSTNAME: this machine's host name; APP-NAME: `app_name`; PROCID: the gateway's pid.
//! - MSGID: the event type, or `checkpoint` / `omitted`.
//! - STRUCTURED-DATA: the leaf index and hash, the event id and outcome (the size and root
//!   of a checkpoint), so a SIEM can index and deduplicate without parsing the message.
//! - MSG: the native record JSON ([`Record::write_json`]) unchanged, without a BOM (RFC 5424
//!   allows MSG-UTF8 without one), so `portcullis audit verify-export` finds it after the
//!   header of each line of a receiver's file.
//!
//! Receivers cap message size (rsyslog's `maxMessageSize` is 8 KiB by default, and it cuts
//! longer messages): an event with large digests or a checkpoint note must fit, so set it
//! to 64 KiB or more on the receiver.
//!
//! Syslog over TCP has no application acknowledgement. A batch counts as delivered once all
//! its frames were written and flushed to the connection: the receiver's TCP (or TLS) stack
//! took them. What a receiver that crashes had read but not yet stored is lost with it; a
//! receiver that needs more than that is better served by the `http` or `nats` sinks, whose
//! receivers acknowledge. What this transport does make sure of is that a batch is never
//! written into a connection the receiver already closed (a restart, an idle timeout):
//! before each batch it looks whether the peer closed (readable with no data) or reset the
//! connection, and if so reconnects first; and on every new connection the last batch is
//! written again before the next (the receiver may have been killed before it read it from
//! its socket), so a receiver restart between batches loses nothing, at the price of that
//! batch twice.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use portcullis_config::{ClientTls, SyslogSink, SyslogTransport};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::{ClientConfig, ProtocolVersion, RootCertStore};

use crate::record::Record;
use crate::{Batch, Delivered, SendError, Transport};

/// The SD-ID of the structured data element. RFC 5424 section 7.2.2: an ID of one's own is
/// `name@<private enterprise number>`. Portcullis has no IANA enterprise number of its own;
/// 32473 is the number IANA reserves for examples and documentation (RFC 5612), so it can
/// never clash with a real vendor's elements.
pub const SD_ID: &str = "portcullis@32473";

/// How long a fresh TLS 1.3 connection waits for the receiver's verdict on the client's
/// certificate, or on its absence (see [`Connection::settle`]).
const SETTLE: Duration = Duration::from_millis(300);
/// How long bytes the receiver sent are given to be read through TLS when checking the
/// connection before a batch.
const DRAIN: Duration = Duration::from_millis(50);

/// The RFC 5424 severities used.
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFORMATIONAL: u8 = 6;

/// A syslog receiver reached over TCP or TLS.
pub struct SyslogSender {
    address: String,
    tls: Option<Tls>,
    facility: u8,
    hostname: String,
    app_name: String,
    procid: u32,
    /// The connection kept between batches; `None` before the first batch and after an
    /// error (or a delivery the engine gave up waiting for, which may have left a frame
    /// half written).
    connection: Option<Connection>,
    /// The frames of the batch being sent, kept to reuse its allocation.
    frames: Vec<u8>,
    /// The frames of the last batch counted as delivered. Syslog has no acknowledgement: a
    /// receiver killed before it read them from its socket loses them, and the next batch
    /// finds the connection reset. So on every new connection they are written again first
    /// (at least once: the receiver may see them twice).
    previous: Vec<u8>,
    message: String,
}

struct Tls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// Where trust comes from, for error messages: the `ca` file or the system's roots.
    trust: String,
    client_cert: bool,
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl SyslogSender {
    /// Reads the CA, client certificate and key now, so a missing one fails the start; the
    /// receiver is contacted at the first batch.
    pub fn new(settings: &SyslogSink) -> Result<SyslogSender, String> {
        let tls = match settings.transport {
            SyslogTransport::Tcp => None,
            SyslogTransport::Tls => Some(Tls::new(&settings.tls, &settings.address)?),
        };
        Ok(SyslogSender {
            address: settings.address.clone(),
            tls,
            facility: settings.facility.code(),
            hostname: whoami::hostname()
                .ok()
                .map(|h| printable(&h, 255))
                .unwrap_or_else(|| "-".into()),
            app_name: printable(&settings.app_name, 48),
            procid: std::process::id(),
            connection: None,
            frames: Vec::new(),
            previous: Vec::new(),
            message: String::new(),
        })
    }

    /// The whole batch as octet-counted frames (RFC 6587 section 3.4.1: `LEN SP MSG`).
    fn frame(&mut self, batch: &Batch) {
        self.frames.clear();
        for record in &batch.records {
            self.message.clear();
            self.header(record, &batch.origin);
            record.write_json(&batch.origin, &mut self.message);
            let _ = write!(Frames(&mut self.frames), "{} ", self.message.len());
            self.frames.extend_from_slice(self.message.as_bytes());
        }
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD ` into `self.message`.
    fn header(&mut self, record: &Record, origin: &str) {
        let out = &mut self.message;
        let pri = u16::from(self.facility) * 8 + u16::from(severity(record));
        let _ = write!(out, "<{pri}>1 ");
        match record {
            Record::Event(e) => push_timestamp(out, &e.event.time),
            Record::Checkpoint(c) => push_timestamp(out, &c.time),
            Record::Omitted(_) => out.push('-'),
        }
        let _ = write!(out, " {} {} {} ", self.hostname, self.app_name, self.procid);
        match record {
            Record::Event(e) => out.push_str(&printable(&e.event_type, 32)),
            other => out.push_str(other.kind()),
        }
        out.push_str(" [");
        out.push_str(SD_ID);
        push_param(out, "origin", origin);
        match record {
            Record::Event(e) => {
                push_param(out, "id", &e.event.id);
                push_param(out, "leaf", &e.leaf_index.to_string());
                push_param(out, "hash", &hex::encode(e.leaf_hash));
                push_param(out, "outcome", &e.outcome);
            }
            Record::Checkpoint(c) => {
                push_param(out, "size", &c.size.to_string());
                push_param(out, "root", &hex::encode(c.root));
            }
            Record::Omitted(o) => {
                push_param(out, "leaf", &o.leaf_index.to_string());
                push_param(out, "count", &o.leaf_hashes.len().to_string());
            }
        }
        out.push_str("] ");
    }

    async fn deliver(&mut self) -> Result<(), SendError> {
        // Taken out while writing: if the engine's timeout drops this future mid-write, the
        // next batch starts on a new connection rather than after half a frame.
        let (mut connection, new) = match self.connection.take() {
            Some(mut open) => match open.check().await {
                Ok(()) => (open, false),
                Err(reason) => {
                    tracing::warn!(
                        receiver = %self.address,
                        "syslog: {reason} since the last batch; reconnecting, and sending the last batch again"
                    );
                    (self.connect().await?, true)
                }
            },
            None => (self.connect().await?, true),
        };
        let written = async {
            if new && !self.previous.is_empty() {
                connection.write_all(&self.previous).await?;
            }
            connection.write_all(&self.frames).await?;
            connection.flush().await
        };
        written.await.map_err(|e| match &self.tls {
            // On a new TLS 1.3 connection, a receiver that refuses the client certificate
            // may say so only now (the settling wait is short, and a loaded receiver slow):
            // the same refusal, named the same way.
            Some(tls) if new => SendError::new(tls.refused(&self.address, &e.to_string())),
            _ => SendError::new(format!(
                "writing to the syslog receiver {} failed: {e}",
                self.address
            )),
        })?;
        self.connection = Some(connection);
        std::mem::swap(&mut self.previous, &mut self.frames);
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let tcp = TcpStream::connect(&self.address).await.map_err(|e| {
            SendError::new(format!(
                "cannot connect to the syslog receiver {}: {e}",
                self.address
            ))
        })?;
        // Each batch is flushed whole: the last segment should not wait for an ACK.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Connection::Tcp(tcp));
        };
        let stream = TlsConnector::from(tls.config.clone())
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| SendError::new(tls.failure(&self.address, &e)))?;
        let mut connection = Connection::Tls(Box::new(stream));
        connection
            .settle()
            .await
            .map_err(|reason| SendError::new(tls.refused(&self.address, &reason)))?;
        Ok(connection)
    }
}

impl Transport for SyslogSender {
    fn send<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Delivered, SendError>> {
        async move {
            self.frame(batch);
            self.deliver().await?;
            Ok(Delivered::default())
        }
        .boxed()
    }

    fn destination(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        format!("{scheme}://{}", self.address)
    }
}

/// The severity of a record. By outcome: what policy or the gateway refused (`denied`,
/// `rejected`) and what it could not complete (`failed`) is a warning, an upstream's error
/// answer a notice, the rest (`success`, `info`) informational. A signed checkpoint is a
/// notice, so a SIEM rule can watch that they keep coming; an omitted run (leaf hashes of
/// events this sink's filter leaves out) is informational.
pub fn severity(record: &Record) -> u8 {
    match record {
        Record::Event(e) => match e.outcome.as_str() {
            "denied" | "rejected" | "failed" => WARNING,
            "upstream_error" => NOTICE,
            _ => INFORMATIONAL,
        },
        Record::Checkpoint(_) => NOTICE,
        Record::Omitted(_) => INFORMATIONAL,
    }
}

/// A TIMESTAMP (RFC 5424 section 6.2.3): the time as the log wrote it when it is one
/// already (RFC 3339 with at most 6 fractional digits, upper-case `T` and `Z`), else the
/// same instant written so, else `-`.
fn push_timestamp(out: &mut String, time: &str) {
    let Ok(parsed) = DateTime::parse_from_rfc3339(time) else {
        out.push('-');
        return;
    };
    let fraction = time
        .split_once('.')
        .map(|(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count())
        .unwrap_or(0);
    if fraction <= 6 && !time.contains(['t', 'z', ' ']) {
        out.push_str(time);
    } else {
        out.push_str(&parsed.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
}

/// ` NAME="VALUE"`, the value escaped as RFC 5424 section 6.3.3 requires (`"`, `\` and `]`
/// preceded by a backslash).
fn push_param(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A header field (HOSTNAME, APP-NAME, MSGID): printable US-ASCII, at most `max`
/// characters; anything else becomes `_`, and an empty value the NILVALUE `-`.
fn printable(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if field.is_empty() { "-".into() } else { field }
}

/// `fmt::Write` into the frame buffer, for the decimal length prefix.
struct Frames<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Frames<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Tls {
    fn new(settings: &ClientTls, address: &str) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        let trust = match &settings.ca {
            Some(ca) => {
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("reading the CA file {}: {e}", ca.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("no usable CA certificate in {}", ca.display()));
                }
                format!("the CA in {}", ca.display())
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(native.certs);
                if added == 0 {
                    let why = native
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(format!(
                        "no system root certificates could be loaded{why}: set ca to the receiver's CA"
                    ));
                }
                "the system's root certificates".into()
            }
        };
        let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match &settings.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        format!("reading the client certificate {}: {e}", cert.display())
                    })?;
                if chain.is_empty() {
                    return Err(format!("no certificate in {}", cert.display()));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("reading the client key {}: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("the client certificate and key do not form a usable pair: {e}")
                })?
            }
        };
        let name = match &settings.server_name {
            Some(name) => name.clone(),
            None => address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} cannot be checked against a certificate: {e}"))?;
        Ok(Tls {
            config: Arc::new(config),
            server_name,
            trust,
            client_cert: settings.client_cert.is_some(),
        })
    }

    /// Why a handshake failed, naming the TLS problem (an untrusted certificate, a name
    /// mismatch, an alert from the receiver) and what the certificate was checked against.
    fn failure(&self, address: &str, error: &std::io::Error) -> String {
        use tokio_rustls::rustls::Error as TlsError;
        let name = self.server_name.to_str();
        match error.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            Some(e @ TlsError::InvalidCertificate(_)) => format!(
                "TLS handshake with the syslog receiver {address} failed: {e}: its certificate must chain to {} and name {name}",
                self.trust
            ),
            Some(e @ TlsError::AlertReceived(_)) => self.refused(address, &e.to_string()),
            Some(e) => format!("TLS handshake with the syslog receiver {address} failed: {e}"),
            None => {
                format!("TLS handshake with the syslog receiver {address} failed: {error}")
            }
        }
    }

    fn refused(&self, address: &str, reason: &str) -> String {
        let hint = if self.client_cert {
            " (does it accept this sink's client certificate?)"
        } else {
            " (does it require a client certificate?)"
        };
        format!("the syslog receiver {address} ended the TLS handshake: {reason}{hint}")
    }
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Connection::Tcp(tcp) => tcp,
            Connection::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether the receiver still has this connection open. A syslog receiver never
    /// writes, so readable bytes are only TLS housekeeping (session tickets, a
    /// close_notify, an alert), and a readable end of stream is a receiver that closed.
    /// The socket is peeked directly rather than through the runtime's cached readiness,
    /// so a close that happened just now is seen.
    async fn check(&mut self) -> Result<(), String> {
        for _ in 0..4 {
            let mut byte = [MaybeUninit::<u8>::uninit()];
            match socket2::SockRef::from(self.tcp()).peek(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("the connection broke ({e})")),
                Ok(0) => return Err("the receiver closed the connection".into()),
                Ok(_) => self.drain(DRAIN).await?,
            }
        }
        Ok(())
    }

    /// Reads what the receiver sent, for at most `wait`: TLS records are processed by
    /// rustls (tickets are kept, an alert is an error), plain bytes are dropped.
    async fn drain(&mut self, wait: Duration) -> Result<(), String> {
        let mut scratch = [0u8; 512];
        match tokio::time::timeout(wait, self.read(&mut scratch)).await {
            Err(_) | Ok(Ok(1..)) => Ok(()),
            Ok(Ok(0)) => Err("the receiver closed the connection".into()),
            Ok(Err(e)) => Err(format!("the connection broke ({e})")),
        }
    }

    /// In TLS 1.3 the client's handshake ends before the receiver has checked the client
    /// certificate (or noticed there is none when it requires one); a receiver that
    /// refuses says so in an alert right after. Without this wait the first batch would be
    /// written into a connection about to be refused, and count as delivered. A receiver
    /// that accepts sends its session tickets (rsyslog and syslog-ng do), which are read
    /// for [`DRAIN`], or nothing, in which case the wait ends after [`SETTLE`]: once per
    /// connection.
    async fn settle(&mut self) -> Result<(), String> {
        let Connection::Tls(tls) = self else {
            return Ok(());
        };
        if tls.get_ref().1.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(SETTLE, tls.get_ref().0.peek(&mut byte)).await {
            Err(_) => Ok(()),
            Ok(Ok(0)) => Err("the connection was closed".into()),
            Ok(Ok(_)) => self.drain(DRAIN).await,
            Ok(Err(e)) => Err(e.to_string()),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Connection::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Connection::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CheckpointRecord, EventRecord, OmittedRecord};
    use portcullis_audit::Leaf;
    use portcullis_config::SyslogFacility;

    fn sender() -> SyslogSender {
        SyslogSender::new(&SyslogSink {
            address: "127.0.0.1:1".into(),
            transport: SyslogTransport::Tcp,
            tls: ClientTls::default(),
            facility: SyslogFacility::Authpriv,
            app_name: "portcullis".into(),
        })
        .unwrap()
    }

    fn event(outcome: &str) -> Record {
        let canonical = format!(
            r#"{{"gateway":"gw","id":"e\"1]","outcome":"{outcome}","time":"2026-12-06T10:00:00.123Z","type":"auth.failure"}}"#
        );
        Record::Event(
            EventRecord::from_leaf(Leaf {
                index: 41,
                body: canonical,
                leaf_hash: [0xab; 32],
            })
            .unwrap(),
        )
    }

    /// The frames of `records`, split back into messages by their length prefixes.
    fn messages(records: Vec<Record>) -> Vec<String> {
        let mut sender = sender();
        sender.frame(&Batch {
            origin: "portcullis/gw \"1\"".into(),
            records,
            first_leaf: 0,
            end_leaf: 0,
        });
        let mut rest = sender.frames.as_slice();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let space = rest.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..space])
                .unwrap()
                .parse()
                .unwrap();
            let message = &rest[space + 1..space + 1 + len];
            out.push(String::from_utf8(message.to_vec()).unwrap());
            rest = &rest[space + 1 + len..];
        }
        out
    }

    #[test]
    fn each_record_is_one_octet_counted_rfc5424_message_carrying_the_native_record() {
        let checkpoint = Record::Checkpoint(CheckpointRecord {
            size: 42,
            root: [1; 32],
            time: "2026-12-06T10:00:01.5+01:00".into(),
            note: "o\n42\nr\n\n— sig\n".into(),
        });
        let omitted = Record::Omitted(OmittedRecord {
            leaf_index: 42,
            leaf_hashes: vec![[2; 32]; 3],
        });
        let records = vec![event("denied"), checkpoint.clone(), omitted.clone()];
        let native: Vec<String> = records
            .iter()
            .map(|r| r.to_json("portcullis/gw \"1\""))
            .collect();
        let messages = messages(records);
        let host = sender().hostname;
        let pid = std::process::id();
        // authpriv (10) * 8 + warning (4) = 84.
        assert_eq!(
            messages[0],
            format!(
                "<84>1 2026-12-06T10:00:00.123Z {host} portcullis {pid} auth.failure [portcullis@32473 origin=\"portcullis/gw \\\"1\\\"\" id=\"e\\\"1\\]\" leaf=\"41\" hash=\"{}\" outcome=\"denied\"] {}",
                "ab".repeat(32),
                native[0]
            )
        );
        // A checkpoint is a notice (85); its time keeps its offset.
        assert!(
            messages[1].starts_with(&format!(
                "<85>1 2026-12-06T10:00:01.5+01:00 {host} portcullis {pid} checkpoint [portcullis@32473 origin="
            )),
            "{}",
            messages[1]
        );
        assert!(messages[1].contains(&format!(" size=\"42\" root=\"{}\"] ", "01".repeat(32))));
        assert!(messages[1].ends_with(&native[1]));
        assert!(
            messages[2].starts_with(&format!("<86>1 - {host} portcullis {pid} omitted [")),
            "{}",
            messages[2]
        );
        assert!(messages[2].contains(" leaf=\"42\" count=\"3\"] "));
        // No BOM before the record, and no raw newline anywhere: one line per message in a
        // receiver's file.
        assert!(
            messages
                .iter()
                .all(|m| !m.contains('\n') && !m.contains('\u{feff}'))
        );
    }

    #[test]
    fn severities_follow_the_outcome() {
        let pri = |outcome: &str| severity(&event(outcome));
        assert_eq!(
            [
                "denied",
                "rejected",
                "failed",
                "upstream_error",
                "success",
                "info"
            ]
            .map(pri),
            [
                WARNING,
                WARNING,
                WARNING,
                NOTICE,
                INFORMATIONAL,
                INFORMATIONAL
            ]
        );
    }

    #[test]
    fn header_fields_are_kept_to_what_rfc5424_allows() {
        assert_eq!(
            printable("tool.pin mismatch\u{e9}", 32),
            "tool.pin_mismatch_"
        );
        assert_eq!(printable(&"x".repeat(40), 32).len(), 32);
        assert_eq!(printable("", 32), "-");
        let timestamp = |t: &str| {
            let mut out = String::new();
            push_timestamp(&mut out, t);
            out
        };
        assert_eq!(
            timestamp("2026-12-06T10:00:00.123Z"),
            "2026-12-06T10:00:00.123Z"
        );
        assert_eq!(
            timestamp("2026-12-06t10:00:00.123456789z"),
            "2026-12-06T10:00:00.123456Z"
        );
        assert_eq!(timestamp("yesterday"), "-");
    }

    #[test]
    fn a_missing_ca_or_key_fails_at_setup_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = SyslogSink {
            address: "siem.example:6514".into(),
            transport: SyslogTransport::Tls,
            tls: ClientTls {
                ca: Some(dir.path().join("ca.pem")),
                ..ClientTls::default()
            },
            facility: SyslogFacility::Local4,
            app_name: "portcullis".into(),
        };
        let e = SyslogSender::new(&settings).err().unwrap();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = SyslogSender::new(&settings).err().unwrap();
        assert!(e.contains("no usable CA certificate"), "{e}");
        let ca = rcgen::CertifiedIssuer::self_signed(
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap(),
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        settings.tls.client_cert = Some((dir.path().join("c.pem"), dir.path().join("k.pem")));
        let e = SyslogSender::new(&settings).err().unwrap();
        assert!(e.contains("c.pem"), "{e}");
    }
}
