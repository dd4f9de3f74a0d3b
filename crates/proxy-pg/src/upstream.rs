//! The gateway's own login to the database, with the credential only the gateway holds.
//!
//! SCRAM-SHA-256 and md5 come from `postgres-protocol` (the rust-postgres project's
//! implementation); cleartext is sent only over TLS or to a loopback server; trust needs
//! nothing. The client never sees any of it: it authenticated to the gateway, and gets the
//! server's parameters and a key of the gateway's own once this login has succeeded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

use crate::tls::BoxStream;
use crate::wire::{self, Frame, Reader};

/// Where and as whom the gateway logs in.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// The role's password, read from the environment at start.
    pub password: Option<Arc<str>>,
    pub tls: Option<Arc<ClientConfig>>,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for UpstreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the gateway could not log in. Shown to operators (logs, audit); the client is told
/// only that the database is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("the server refused TLS")]
    NoTls,
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("the server asks for a password and none is configured (password_env)")]
    NoPassword,
    #[error(
        "the server asks for a cleartext password over an unencrypted non-loopback connection; refusing to send it"
    )]
    CleartextInClear,
    #[error("unsupported authentication method {0}")]
    Method(String),
    #[error("SCRAM: {0}")]
    Scram(std::io::Error),
    #[error("the server said: {0}")]
    Server(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Wire(#[from] wire::WireError),
    #[error("the server closed the connection during login")]
    Closed,
}

impl UpstreamError {
    /// How the database failed, for the metrics: a login it refused or a handshake that
    /// went wrong is a protocol failure, not an unreachable server.
    pub fn fault(&self) -> portcullis_guard::UpstreamFault {
        use portcullis_guard::UpstreamFault;
        match self {
            UpstreamError::Connect { .. } => UpstreamFault::Unreachable,
            UpstreamError::Timeout(_) => UpstreamFault::Timeout,
            UpstreamError::Io(_) | UpstreamError::Closed => UpstreamFault::Closed,
            _ => UpstreamFault::Protocol,
        }
    }
}

/// A logged-in server connection.
pub struct Upstream {
    pub stream: BoxStream,
    /// Bytes read past the login (the server may send more right after ReadyForQuery).
    pub buffered: BytesMut,
    pub parameters: Vec<(String, String)>,
    /// The server's cancel key.
    pub pid: i32,
    pub secret: Bytes,
    pub addr: SocketAddr,
}

const LOGIN_FRAME_LIMIT: usize = 1 << 20;

impl UpstreamSettings {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addr = self.addr();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| UpstreamError::Timeout(addr.clone()))?
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// Connects, negotiates TLS if configured, and logs in with `params` (application name,
    /// client encoding ...) besides the user and database.
    pub async fn connect(&self, params: &[(&str, &str)]) -> Result<Upstream, UpstreamError> {
        let login = async {
            let mut tcp = self.tcp().await?;
            let addr = tcp.peer_addr()?;
            let mut stream: BoxStream = match &self.tls {
                None => Box::new(tcp),
                Some(config) => {
                    let mut out = BytesMut::new();
                    wire::ssl_request(&mut out);
                    tcp.write_all(&out).await?;
                    let mut answer = [0u8; 1];
                    tcp.read_exact(&mut answer).await?;
                    if answer[0] != b'S' {
                        return Err(UpstreamError::NoTls);
                    }
                    let name = ServerName::try_from(self.host.clone())
                        .map_err(|e| UpstreamError::Tls(std::io::Error::other(e)))?;
                    let tls = TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(UpstreamError::Tls)?;
                    Box::new(tls)
                }
            };
            let mut all: Vec<(&str, &str)> =
                vec![("user", &self.user), ("database", &self.database)];
            all.extend_from_slice(params);
            let mut out = BytesMut::new();
            wire::startup(&mut out, &all);
            stream.write_all(&out).await?;
            self.authenticate(stream, addr).await
        };
        tokio::time::timeout(self.connect_timeout * 2, login)
            .await
            .map_err(|_| UpstreamError::Timeout(self.addr()))?
    }

    async fn authenticate(
        &self,
        mut stream: BoxStream,
        addr: SocketAddr,
    ) -> Result<Upstream, UpstreamError> {
        let mut buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramSha256> = None;
        let mut parameters = Vec::new();
        let mut key = (0, Bytes::new());
        loop {
            let frame = read_frame(&mut stream, &mut buf).await?;
            match frame.tag {
                b'R' => {
                    let mut r = Reader::of(&frame, "Authentication");
                    let code = r.i32("Authentication")?;
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => {
                            if self.tls.is_none() && !addr.ip().is_loopback() {
                                return Err(UpstreamError::CleartextInClear);
                            }
                            wire::password(&mut out, self.password()?.as_bytes());
                        }
                        5 => {
                            let salt = r.bytes(4, "Authentication")?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                self.user.as_bytes(),
                                self.password()?.as_bytes(),
                                [salt[0], salt[1], salt[2], salt[3]],
                            );
                            wire::password(&mut out, hash.as_bytes());
                        }
                        10 => {
                            let mut offered = Vec::new();
                            loop {
                                let m = r.cstr("AuthenticationSASL")?;
                                if m.is_empty() {
                                    break;
                                }
                                offered.push(m);
                            }
                            if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                                return Err(UpstreamError::Method(offered.join(", ")));
                            }
                            // Channel binding is not used: the gateway does not send the
                            // "-PLUS" mechanism, so the server cannot expect it.
                            let s = ScramSha256::new(
                                self.password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            wire::sasl_initial(&mut out, SCRAM_SHA_256, s.message());
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or(UpstreamError::Closed)?;
                            s.update(&r.rest()).map_err(UpstreamError::Scram)?;
                            wire::sasl_response(&mut out, s.message());
                        }
                        12 => {
                            let s = scram.as_mut().ok_or(UpstreamError::Closed)?;
                            // Verifies the server's signature: the server proves it knows
                            // the password too.
                            s.finish(&r.rest()).map_err(UpstreamError::Scram)?;
                            continue;
                        }
                        other => {
                            return Err(UpstreamError::Method(match other {
                                2 => "Kerberos V5".into(),
                                7 | 8 => "GSSAPI".into(),
                                9 => "SSPI".into(),
                                n => format!("code {n}"),
                            }));
                        }
                    }
                    stream.write_all(&out).await?;
                }
                b'S' => {
                    let mut r = Reader::of(&frame, "ParameterStatus");
                    parameters.push((r.cstr("ParameterStatus")?, r.cstr("ParameterStatus")?));
                }
                b'K' => {
                    let mut r = Reader::of(&frame, "BackendKeyData");
                    key = (r.i32("BackendKeyData")?, r.rest());
                }
                b'N' | b'v' => {}
                b'E' => {
                    let n = wire::parse_notice(&frame);
                    return Err(UpstreamError::Server(format!("{} ({})", n.message, n.code)));
                }
                b'Z' => {
                    return Ok(Upstream {
                        stream,
                        buffered: buf,
                        parameters,
                        pid: key.0,
                        secret: key.1,
                        addr,
                    });
                }
                _ => {
                    return Err(UpstreamError::Wire(wire::WireError::Malformed {
                        what: "login",
                    }));
                }
            }
        }
    }

    fn password(&self) -> Result<&str, UpstreamError> {
        self.password.as_deref().ok_or(UpstreamError::NoPassword)
    }

    /// Asks the server to cancel what the connection with this key is running. Sent on a
    /// connection of its own, as the protocol requires.
    pub async fn cancel(&self, addr: SocketAddr, pid: i32, secret: &[u8]) -> std::io::Result<()> {
        let mut tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let mut out = BytesMut::new();
        wire::cancel_request(&mut out, pid, secret);
        tcp.write_all(&out).await?;
        // The server closes the connection when done; wait for that, briefly.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut sink)).await;
        Ok(())
    }
}

impl Upstream {
    /// Runs `sql` (simple protocol, one or more statements) on this connection as the
    /// gateway's own role, for set-up work such as the demo's. `Err` carries the server's
    /// first error.
    pub async fn execute(&mut self, sql: &str) -> Result<(), UpstreamError> {
        self.rows(sql).await.map(|_| ())
    }

    /// Runs one query (simple protocol) as the gateway's own role and returns its column
    /// names and rows, text format, for the gateway's own reads (column discovery, the function
    /// catalog). `Err` carries the server's first error.
    #[allow(clippy::type_complexity)]
    pub async fn rows(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<String>, Vec<Vec<Option<Bytes>>>), UpstreamError> {
        let mut out = BytesMut::new();
        wire::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let (mut columns, mut rows, mut failed) = (Vec::new(), Vec::new(), None);
        loop {
            let frame = read_frame(&mut self.stream, &mut self.buffered).await?;
            match frame.tag {
                b'T' => {
                    columns = wire::parse_row_description(&frame)?
                        .into_iter()
                        .map(|c| c.name)
                        .collect();
                }
                b'D' => rows.push(wire::parse_data_row(&frame)?),
                b'E' => {
                    let n = wire::parse_notice(&frame);
                    failed.get_or_insert(UpstreamError::Server(format!(
                        "{} ({})",
                        n.message, n.code
                    )));
                }
                b'Z' => return failed.map_or(Ok((columns, rows)), Err),
                _ => {}
            }
        }
    }

    /// Ends the session politely (the server then logs no "unexpected EOF").
    pub async fn terminate(&mut self) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        wire::terminate(&mut out);
        self.stream.write_all(&out).await?;
        self.stream.shutdown().await
    }
}

async fn read_frame(stream: &mut BoxStream, buf: &mut BytesMut) -> Result<Frame, UpstreamError> {
    loop {
        if let Some(frame) = wire::next_frame(buf, LOGIN_FRAME_LIMIT)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}
