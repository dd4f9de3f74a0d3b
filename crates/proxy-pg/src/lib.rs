//! The PostgreSQL adapter of Portcullis: a wire-protocol proxy in front of one database.
//!
//! A client (an agent's tool, psql, a driver) connects to the target's listener as it would
//! to PostgreSQL, with its Portcullis API key or OIDC token in the password field (over TLS
//! unless the listener is on loopback). The gateway logs in to the real server with its own
//! credential, which the client never sees, and from then on every statement is classified
//! with PostgreSQL's own grammar ([`classify`]), decided by policy, refused, held for
//! approval or forwarded, and its rows masked on the way back; each statement ends in an
//! audit event. [`session`] explains how answers are matched to statements and how a
//! refusal keeps the protocol intact.
//!
//! What the protocol allows and the gateway does not: the fast-path function call
//! interface (it calls functions by OID, out of the parser's sight), replication
//! connections, startup parameters beyond a short list of harmless ones (`options` can set
//! any server setting), and `standard_conforming_strings = off` (the parser would no longer
//! read strings as the server does).

#![forbid(unsafe_code)]

pub mod catalog;
pub mod classify;
pub mod discovery;
mod inference;
mod refusal;
mod session;
pub mod shape;
pub mod tls;
pub mod upstream;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use portcullis_guard::{Guard, RefusalKind};
use portcullis_limits::ConnectionLimiter;
use portcullis_model::{Decision, EventType, Identity, Outcome, TargetKind, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::catalog::FunctionCatalog;
use crate::classify::Classifier;
use crate::session::Session;
use crate::tls::BoxStream;
use crate::upstream::UpstreamSettings;
use crate::wire::Startup;

/// Startup parameters passed on to the server. Anything else could change how the server
/// reads what the gateway checked (`options`, `search_path`, `role`, ...), so it is refused.
const FORWARDED_PARAMETERS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
];

/// How long the whole startup and authentication exchange may take, the gateway's own
/// login to the database included. The client's part has its own, shorter deadline
/// ([`PgSettings::startup_timeout`]).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest password message (an OIDC token with many claims fits).
const MAX_PASSWORD: usize = 64 * 1024;

/// Everything one target's listener needs.
pub struct PgProxy {
    pub target: String,
    pub upstream: UpstreamSettings,
    /// Identify, decide, hold, record: the pipeline every adapter shares.
    pub guard: Arc<Guard>,
    pub classifier: Classifier,
    /// What the server's catalog says about the functions statements call.
    pub catalog: FunctionCatalog,
    /// The gateway's certificate for clients; `None`: plain connections only.
    pub tls: Option<Arc<ServerConfig>>,
    /// Refuse clients that do not use TLS (the listener is not on loopback).
    pub require_tls: bool,
    /// The largest message accepted from a client, and from the server.
    pub max_client_frame: usize,
    pub max_upstream_frame: usize,
    pub max_connections: usize,
    /// Rules with `filter_masked = true`: statements they allow may use masked columns
    /// outside the output list (see [`inference`]).
    pub filter_masked_rules: HashSet<String>,
    /// Column discovery for the profiles with `discover = true` (see [`discovery`]).
    pub discovery: Option<discovery::Discovery>,
    /// `record_results`: a recorded statement keeps its rows (as the client received them),
    /// not only their count.
    pub record_results: bool,
    connections: Arc<Semaphore>,
    /// The per-source and total caps shared with every listener of the gateway.
    connection_caps: Arc<ConnectionLimiter>,
    /// How long a client has to send its startup packet and credential.
    startup_timeout: Duration,
    cancels: Mutex<HashMap<(i32, Bytes), Arc<CancelHandle>>>,
    /// Set when the gateway stops: sessions end, held statements are cancelled.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// What a cancel request with the gateway's key for a session reaches.
pub(crate) struct CancelHandle {
    upstream_addr: SocketAddr,
    upstream_pid: i32,
    upstream_secret: Bytes,
    /// Wakes a statement held for approval: cancelling it ends the wait.
    /// Counts cancel requests; a held statement waits for it to change, so a cancel that
    /// comes while it waits is never missed.
    cancels: tokio::sync::watch::Sender<u64>,
}

/// The settings of [`PgProxy::new`] that are not shared gateway parts.
pub struct PgSettings {
    pub target: String,
    pub upstream: UpstreamSettings,
    pub tls: Option<Arc<ServerConfig>>,
    pub require_tls: bool,
    pub max_client_frame: usize,
    pub max_connections: usize,
    /// Names of the rules with `filter_masked = true`.
    pub filter_masked_rules: HashSet<String>,
    /// Column discovery, when a masking profile has `discover = true`.
    pub discovery: Option<discovery::Discovery>,
    /// `targets.<name>.record_results`: recorded statements keep their rows.
    pub record_results: bool,
    /// The gateway's connection caps (`[gateway.limits]`), checked as a connection arrives.
    pub connection_caps: Arc<ConnectionLimiter>,
    /// How long a client has to send its startup packet and its credential
    /// (`gateway.limits.header_read_timeout`).
    pub startup_timeout: Duration,
}

impl PgProxy {
    pub fn new(settings: PgSettings, guard: Arc<Guard>) -> Arc<PgProxy> {
        Arc::new(PgProxy {
            target: settings.target,
            upstream: settings.upstream,
            guard,
            classifier: Classifier::new(),
            catalog: FunctionCatalog::default(),
            tls: settings.tls,
            require_tls: settings.require_tls,
            max_client_frame: settings.max_client_frame,
            max_upstream_frame: 256 << 20,
            max_connections: settings.max_connections,
            filter_masked_rules: settings.filter_masked_rules,
            discovery: settings.discovery,
            record_results: settings.record_results,
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            connection_caps: settings.connection_caps,
            startup_timeout: settings.startup_timeout,
            cancels: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::channel(false).0,
        })
    }

    /// Accepts connections until the listener fails; each runs as a task of its own.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(target = %self.target, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if *self.stopping.borrow() {
                continue;
            }
            let Ok(slot) = self.connection_caps.admit(peer.ip(), &self.target) else {
                // Over a cap: told at once, without reading anything, and closed. A client
                // sends its startup packet first and then reads this error.
                let mut out = BytesMut::new();
                wire::fatal(
                    &mut out,
                    wire::TOO_MANY_CONNECTIONS,
                    "portcullis: too many connections from this source",
                    None,
                );
                let _ = tcp.try_write(&out);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                proxy.connection(tcp, peer).await;
                drop(slot);
            });
        }
    }

    /// Ends every session ("the gateway is stopping") and waits, up to `grace`, for their
    /// events to be recorded.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.send_replace(true);
        let all = self.max_connections as u32;
        let _ = tokio::time::timeout(grace, self.connections.acquire_many(all)).await;
    }

    /// Whether the rule that allowed a statement lets it use masked columns outside its
    /// output list.
    pub(crate) fn filters_masked(&self, verdict: &Verdict) -> bool {
        verdict
            .rule
            .as_deref()
            .is_some_and(|rule| self.filter_masked_rules.contains(rule))
    }

    pub(crate) fn allow_empty(&self) -> Verdict {
        Verdict {
            decision: Decision::Allow { mask: None },
            rule: None,
            policy_version: Arc::from(self.guard.policy_version()),
            grant: None,
            route: None,
        }
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(tcp, peer)).await;
        let Ok(Some((client, client_in, identity, upstream, permit))) = handshake else {
            return;
        };
        self.run_session(client, client_in, identity, upstream, peer)
            .await;
        drop(permit);
    }

    /// Startup, TLS, the client's login and the gateway's own. `None`: the connection is
    /// over (refused, a cancel request, or gone), and the client was told why.
    async fn handshake(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(
        BoxStream,
        BytesMut,
        Identity,
        upstream::Upstream,
        OwnedSemaphorePermit,
    )> {
        let mut buf = BytesMut::with_capacity(1024);
        // The client's part of the exchange (startup, TLS, credential) must be over by then;
        // a client trickling bytes is cut off.
        let deadline = tokio::time::Instant::now() + self.startup_timeout;
        // Before TLS: SSLRequest and GSSENCRequest may come first.
        let first = loop {
            let packet = read_startup_by(deadline, &mut tcp, &mut buf).await?;
            match packet {
                Startup::GssEnc => {
                    if !buf.is_empty() {
                        return None;
                    }
                    tcp.write_all(b"N").await.ok()?;
                }
                other => break other,
            }
        };
        let (mut stream, tls, packet): (BoxStream, bool, Startup) = match first {
            Startup::Ssl => {
                // Bytes sent after the request, before the handshake, would be read as if
                // they came over TLS: refuse them (CVE-2021-23214).
                if !buf.is_empty() {
                    return None;
                }
                match &self.tls {
                    Some(config) => {
                        tcp.write_all(b"S").await.ok()?;
                        let accept = TlsAcceptor::from(config.clone()).accept(tcp);
                        let tls = tokio::time::timeout_at(deadline, accept).await.ok()?.ok()?;
                        let mut stream: BoxStream = Box::new(tls);
                        let packet = read_startup_by(deadline, &mut stream, &mut buf).await?;
                        (stream, true, packet)
                    }
                    None => {
                        tcp.write_all(b"N").await.ok()?;
                        let mut stream: BoxStream = Box::new(tcp);
                        let packet = read_startup_by(deadline, &mut stream, &mut buf).await?;
                        (stream, false, packet)
                    }
                }
            }
            other => (Box::new(tcp), false, other),
        };
        let (minor, params) = match packet {
            Startup::Start { minor, params } => (minor, params),
            Startup::Cancel { pid, secret } => {
                self.cancel(pid, secret).await;
                return None;
            }
            Startup::Ssl | Startup::GssEnc => {
                refuse(
                    &mut stream,
                    wire::PROTOCOL_VIOLATION,
                    "portcullis: unexpected second encryption request",
                    None,
                )
                .await;
                return None;
            }
        };
        // A cancel request needs no slot (above); a session does. Taken only now, so that a
        // cancel still gets through when every connection is in use.
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            refuse(
                &mut stream,
                wire::TOO_MANY_CONNECTIONS,
                // Before authentication: says nothing of which target this is.
                &format!(
                    "portcullis: this listener has its {} connections in use",
                    self.max_connections
                ),
                None,
            )
            .await;
            return None;
        };
        if self.require_tls && !tls {
            refuse(
                &mut stream,
                wire::INVALID_AUTHORIZATION,
                "portcullis: this listener requires TLS: the password carries your credential",
                Some("connect with sslmode=require (or verify-full with the gateway's CA)"),
            )
            .await;
            return None;
        }
        let mut out = BytesMut::new();
        let unknown: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect();
        if minor > 0 || !unknown.is_empty() {
            wire::negotiate_version(&mut out, 0, &unknown);
        }
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let Some(user) = get("user").filter(|u| !u.is_empty()) else {
            refuse(
                &mut stream,
                wire::INVALID_AUTHORIZATION,
                "portcullis: no user name in the startup packet",
                None,
            )
            .await;
            return None;
        };
        let mut forwarded: Vec<(&str, &str)> = Vec::new();
        for (key, value) in &params {
            match key.as_str() {
                "user" | "database" => {}
                k if k.starts_with("_pq_.") => {}
                "client_encoding" if !is_utf8(value) => {
                    refuse(
                        &mut stream,
                        wire::FEATURE_NOT_SUPPORTED,
                        &format!("portcullis: client_encoding {value} is not supported through the gateway; use UTF8"),
                        None,
                    )
                    .await;
                    return None;
                }
                k if FORWARDED_PARAMETERS
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(k)) =>
                {
                    forwarded.push((key, value));
                }
                k => {
                    refuse(
                        &mut stream,
                        wire::FEATURE_NOT_SUPPORTED,
                        &format!(
                            "portcullis: startup parameter \"{k}\" is not allowed through the gateway (it could change how the server reads what the gateway checked)"
                        ),
                        Some("set it with SET inside the session, where policy sees it"),
                    )
                    .await;
                    return None;
                }
            }
        }
        // The gateway's parser reads strings as standard SQL does: pin the server to that.
        forwarded.push(("standard_conforming_strings", "on"));

        // The client's login: its credential in the password field.
        wire::auth_request(&mut out, 3);
        stream.write_all(&out).await.ok()?;
        out.clear();
        let credential = loop {
            match wire::next_frame(&mut buf, MAX_PASSWORD) {
                Ok(Some(frame)) if frame.tag == b'p' => {
                    let mut r = wire::Reader::of(&frame, "PasswordMessage");
                    break r.cstr("PasswordMessage").unwrap_or_default();
                }
                Ok(Some(_)) | Err(_) => {
                    refuse(
                        &mut stream,
                        wire::PROTOCOL_VIOLATION,
                        "portcullis: expected a password message",
                        None,
                    )
                    .await;
                    return None;
                }
                Ok(None) => {
                    let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf));
                    if read.await.ok()?.ok()? == 0 {
                        return None;
                    }
                }
            }
        };
        if credential.is_empty() {
            refuse(
                &mut stream,
                wire::INVALID_PASSWORD,
                "portcullis: no credential: put your Portcullis API key or OIDC token in the password field",
                None,
            )
            .await;
            return None;
        }
        let identity = match self
            .guard
            .identify(&credential, peer, Some(&self.target))
            .await
        {
            Ok(identity) => identity,
            Err(mut refusal) => {
                if refusal.kind == RefusalKind::Unauthenticated {
                    refusal.message = format!(
                        "authentication failed for user \"{user}\": {}",
                        refusal.message
                    );
                }
                let wire = refusal::render(&refusal);
                refuse(&mut stream, wire.code, &wire.message, None).await;
                return None;
            }
        };
        if user != identity.subject && identity.display_name.as_deref() != Some(user) {
            let detail = format!(
                "user name {user:?} does not match the credential's identity {:?}",
                identity.subject
            );
            self.guard
                .record_auth_failure(peer, Some(&self.target), &detail)
                .await;
            refuse(
                &mut stream,
                wire::INVALID_AUTHORIZATION,
                &format!(
                    "portcullis: user name \"{user}\" does not match the credential, which belongs to \"{}\"",
                    identity.subject
                ),
                None,
            )
            .await;
            return None;
        }
        // Checked only now: the answer names the served target and database, which only an
        // authenticated caller may learn.
        let database = get("database").filter(|d| !d.is_empty()).unwrap_or(user);
        if database != self.target && database != self.upstream.database {
            refuse(
                &mut stream,
                "3D000",
                &format!(
                    "portcullis: database \"{database}\" is not served here; this listener serves target {} (database \"{}\")",
                    self.target, self.upstream.database
                ),
                None,
            )
            .await;
            return None;
        }
        // The gateway's own login; the client learns only whether it worked.
        let upstream = match self.upstream.connect(&forwarded).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(target = %self.target, "database login failed: {e}");
                self.guard
                    .upstream_failed(&self.target, TargetKind::Postgres, e.fault());
                // A session that started and ended at once, so the log's sessions pair up.
                let session = format!("pg_{}", uuid_like());
                for (event_type, detail) in [
                    (
                        EventType::SessionStart,
                        format!("the gateway could not log in to the database: {e}"),
                    ),
                    (
                        EventType::SessionEnd,
                        "no database connection: the session ended at once".to_string(),
                    ),
                ] {
                    let mut ev = self.guard.event(event_type, Outcome::Failed);
                    ev.source = Some(peer.to_string());
                    ev.identity = Some(identity.clone());
                    ev.target = Some(self.target.clone());
                    ev.session = Some(session.clone());
                    ev.detail = Some(detail);
                    if let Err(a) = self.guard.record(ev).await {
                        tracing::error!("cannot record a failed session: {a}");
                    }
                }
                refuse(
                    &mut stream,
                    wire::CONNECTION_FAILURE,
                    &format!(
                        "portcullis: the database of target {} is unavailable; the gateway's operators have the details",
                        self.target
                    ),
                    None,
                )
                .await;
                return None;
            }
        };
        Some((stream, buf, identity, upstream, permit))
    }

    async fn run_session(
        self: &Arc<Self>,
        mut client: BoxStream,
        client_in: BytesMut,
        identity: Identity,
        upstream: upstream::Upstream,
        peer: SocketAddr,
    ) {
        let session_id = format!("pg_{}", uuid_like());
        // The client gets a cancel key of the gateway's own; the server's stays here.
        let pid = (rand::random::<u32>() >> 1) as i32;
        let secret = Bytes::copy_from_slice(&rand::random::<[u8; 4]>());
        let handle = Arc::new(CancelHandle {
            upstream_addr: upstream.addr,
            upstream_pid: upstream.pid,
            upstream_secret: upstream.secret.clone(),
            cancels: tokio::sync::watch::channel(0).0,
        });
        let mut out = BytesMut::new();
        wire::auth_request(&mut out, 0);
        for (k, v) in &upstream.parameters {
            wire::parameter_status(&mut out, k, v);
        }
        wire::backend_key(&mut out, pid, &secret);
        wire::ready(&mut out, b'I');

        let identity = Arc::new(identity);
        let mut ev = self.guard.event(EventType::SessionStart, Outcome::Info);
        ev.source = Some(peer.to_string());
        ev.identity = Some((*identity).clone());
        ev.target = Some(self.target.clone());
        ev.session = Some(session_id.clone());
        ev.detail = Some(format!(
            "database {} on {} as {}",
            self.upstream.database, upstream.addr, self.upstream.user
        ));
        if let Err(e) = self.guard.record(ev).await {
            let mut out = BytesMut::new();
            wire::fatal(
                &mut out,
                wire::IO_ERROR,
                &format!(
                    "portcullis: the audit log cannot be written ({e}); no session starts until it can"
                ),
                None,
            );
            let _ = client.write_all(&out).await;
            return;
        }
        if client.write_all(&out).await.is_err() {
            return;
        }
        self.cancels
            .lock()
            .expect("lock")
            .insert((pid, secret.clone()), handle.clone());

        let mut session = Session::new(
            self.clone(),
            identity.clone(),
            peer,
            session_id.clone(),
            handle,
            client,
            client_in,
        );
        let why = session.run(upstream.stream, upstream.buffered).await;
        self.cancels.lock().expect("lock").remove(&(pid, secret));

        let mut ev = self.guard.event(EventType::SessionEnd, Outcome::Info);
        ev.source = Some(peer.to_string());
        ev.identity = Some((*identity).clone());
        ev.target = Some(self.target.clone());
        ev.session = Some(session_id);
        ev.detail = Some(why);
        if let Err(e) = self.guard.record(ev).await {
            tracing::error!("cannot record the end of a session: {e}");
        }
    }

    /// A cancel request: passed on with the server's key, and it ends a held statement's
    /// wait. Unknown keys are ignored, as the server does.
    async fn cancel(&self, pid: i32, secret: Bytes) {
        let handle = self
            .cancels
            .lock()
            .expect("lock")
            .get(&(pid, secret))
            .cloned();
        let Some(handle) = handle else {
            return;
        };
        handle.cancels.send_modify(|n| *n += 1);
        if let Err(e) = self
            .upstream
            .cancel(
                handle.upstream_addr,
                handle.upstream_pid,
                &handle.upstream_secret,
            )
            .await
        {
            tracing::warn!(target = %self.target, "passing on a cancel request: {e}");
        }
    }
}

fn is_utf8(encoding: &str) -> bool {
    let e = encoding.to_ascii_lowercase().replace(['-', '_'], "");
    e == "utf8" || e == "unicode"
}

fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}

/// [`read_startup`], given up (`None`) at `deadline`.
async fn read_startup_by<S: tokio::io::AsyncRead + Unpin>(
    deadline: tokio::time::Instant,
    stream: &mut S,
    buf: &mut BytesMut,
) -> Option<Startup> {
    tokio::time::timeout_at(deadline, read_startup(stream, buf))
        .await
        .ok()
        .flatten()
}

async fn read_startup<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Option<Startup> {
    loop {
        match wire::next_startup(buf) {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!("bad startup packet: {e}");
                return None;
            }
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Sends a FATAL error during startup.
async fn refuse(stream: &mut BoxStream, code: &str, message: &str, hint: Option<&str>) {
    let mut out = BytesMut::new();
    wire::fatal(&mut out, code, message, hint);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
