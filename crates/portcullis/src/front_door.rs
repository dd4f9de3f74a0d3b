//! Serving the HTTP listeners (the MCP front door and the admin API) with the limits that
//! apply before a caller is known (`[gateway.limits]`):
//!
//! - a connection over the per-source or total cap ([`ConnectionLimiter`]) is answered at
//!   once with a fixed 503 (plain HTTP; a TLS connection is simply closed) and dropped, and
//!   counted in a periodic log line, never an audit write each;
//! - the TLS handshake and every request's headers must arrive within
//!   `header_read_timeout` (hyper's own `header_read_timeout`, which also bounds an idle
//!   keep-alive connection), or the connection is closed.
//!
//! HTTP/1.1 only: TLS offers no other protocol in ALPN, so the header timeout covers every
//! request a connection can carry.
//!
//! At a stop the listening socket is closed at once (new connections are refused, so a load
//! balancer moves on), each open connection finishes the request it is serving and is then
//! closed, and what is still running after `gateway.shutdown_grace` is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis_limits::ConnectionLimiter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// The answer to a connection over a cap: written without reading anything, then closed.
const OVER_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 101\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"too many connections from this source\"}}";

/// What every HTTP listener of the gateway shares.
#[derive(Clone)]
pub struct HttpLimits {
    pub connections: Arc<ConnectionLimiter>,
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish once the gateway is stopping
    /// (`gateway.shutdown_grace`).
    pub shutdown_grace: Duration,
}

/// A TLS configuration for HTTP/1.1 only (see the module documentation).
pub fn http1_tls(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests for up to `limits.shutdown_grace`. `name` labels the listener in logs.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(listener = name, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = limits.connections.admit(peer.ip(), name) else {
            if tls.is_none() {
                // Best effort and never waiting: the socket's send buffer takes it whole.
                let _ = tcp.try_write(OVER_CAP_RESPONSE);
            }
            continue;
        };
        // Small JSON-RPC answers must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stopping = stopping.clone();
        let timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            connection(tcp, peer, app, tls, timeout, stopping).await;
            drop(slot);
        });
    }
    // Closed now, not when the drain ends: a connection made during the drain would sit in
    // the backlog unanswered; refused, the client (or its load balancer) tries elsewhere.
    drop(listener);
    stop.send_replace(true);
    // Every connection task holds a receiver; all gone means all finished.
    drop(stopping);
    if tokio::time::timeout(limits.shutdown_grace, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            grace = ?limits.shutdown_grace,
            "requests still running at the end of the shutdown grace are cut off"
        );
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    header_read_timeout: Duration,
    stopping: watch::Receiver<bool>,
) {
    match tls {
        None => http1(TokioIo::new(tcp), peer, app, header_read_timeout, stopping).await,
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(tcp);
            match tokio::time::timeout(header_read_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    http1(
                        TokioIo::new(stream),
                        peer,
                        app,
                        header_read_timeout,
                        stopping,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http1<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // The handlers read the caller's address as axum's `ConnectInfo`.
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        // Slow headers, resets, clients that hang up: the client's problem, not ours.
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
