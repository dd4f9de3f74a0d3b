//! A target's own listener (`listen`): the API at `/`, over HTTP/1.1 and HTTP/2 (by ALPN
//! with TLS, by the connection preface without), for clients that cannot take the front
//! door's `/http/<target>` prefix.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis_limits::ConnectionLimiter;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::HttpGateway;

/// What a target's listener shares with the gateway's others.
#[derive(Clone)]
pub struct ListenerLimits {
    pub connections: Arc<ConnectionLimiter>,
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish once the gateway stops
    /// (`gateway.shutdown_grace`).
    pub shutdown_grace: Duration,
}

/// A TLS configuration offering HTTP/2 and HTTP/1.1.
pub fn h2_tls(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `target` on `listener` until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<HttpGateway>,
    target: String,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let name: Arc<str> = Arc::from(format!("http target {target}"));
    let target: Arc<str> = Arc::from(target);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = %name, "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = limits.connections.admit(peer.ip(), &name) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (gateway, target, tls) = (gateway.clone(), target.clone(), tls.clone());
        let timeout = limits.header_read_timeout;
        let grace = limits.shutdown_grace;
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let told = stopping.clone();
            let serve = async {
                match tls {
                    None => {
                        connection(TokioIo::new(tcp), peer, gateway, target, timeout, told).await
                    }
                    Some(config) => {
                        let handshake = TlsAcceptor::from(config).accept(tcp);
                        match tokio::time::timeout(timeout, handshake).await {
                            Ok(Ok(stream)) => {
                                let io = TokioIo::new(stream);
                                connection(io, peer, gateway, target, timeout, told).await
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            };
            let mut serve = std::pin::pin!(serve);
            tokio::select! {
                () = &mut serve => {}
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    // The connection closes itself once its request is answered (an idle
                    // one at once); one still busy after the grace is dropped. It must
                    // still be polled here: its own watch of the stop is what closes it.
                    let _ = tokio::time::timeout(grace, serve).await;
                }
            }
            drop(slot);
        });
    }
    // Refuse new connections during the drain rather than leave them in the backlog.
    drop(listener);
    stop.send_replace(true);
    drop(stopping);
    let _ = tokio::time::timeout(limits.shutdown_grace, stop.closed()).await;
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    gateway: Arc<HttpGateway>,
    target: Arc<str>,
    header_read_timeout: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (gateway, target) = (gateway.clone(), target.clone());
        async move {
            let request = request.map(Body::new);
            let path = request.uri().path().to_string();
            let response = gateway.handle(&target, &path, request, peer).await;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = async { let _ = stopping.wait_for(|s| *s).await; } => {
            // HTTP/1.1: close after the request in flight; HTTP/2: GOAWAY, finish streams.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, "HTTP connection ended: {e}");
    }
}
