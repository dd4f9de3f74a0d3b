//! Upstream reachability, for `/readyz` and the `upstream_reachable` gauge.
//!
//! Each target with a network upstream is checked with a TCP connect (no TLS, no protocol,
//! no credential: the cheapest thing that tells a dead host or a closed port from a live
//! one) under a short timeout. Results are cached for a few seconds, so probes from several
//! load balancers, or a tight Kubernetes period, cost at most one connect per upstream per
//! interval. A stdio MCP upstream is a process the gateway starts per session: there is
//! nothing to connect to, so it is reported `not_checked`.
//!
//! An unreachable upstream does not make the gateway unready: see [`Readiness`] and
//! docs/deploy.md ("Readiness").

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long one connect may take before the upstream counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a check's results are reused.
pub const CACHE_FOR: Duration = Duration::from_secs(5);

/// A target's upstream as the probe sees it.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub name: String,
    /// `mcp`, `postgres` or `http`.
    pub kind: &'static str,
    /// `host:port` to connect to; `None` for an upstream that is not on the network (a
    /// stdio MCP server).
    pub address: Option<String>,
}

/// One target's reachability.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reach {
    pub target: String,
    pub kind: &'static str,
    /// `ok`, `unreachable` or `not_checked`.
    pub status: &'static str,
}

impl Reach {
    pub fn reachable(&self) -> Option<bool> {
        match self.status {
            "ok" => Some(true),
            "unreachable" => Some(false),
            _ => None,
        }
    }
}

/// Checks every target's upstream, caching the results for [`CACHE_FOR`].
pub struct UpstreamProbe {
    targets: Vec<ProbeTarget>,
    timeout: Duration,
    cache_for: Duration,
    cached: Mutex<Option<(Instant, Arc<[Reach]>)>>,
}

impl UpstreamProbe {
    pub fn new(targets: Vec<ProbeTarget>) -> UpstreamProbe {
        UpstreamProbe {
            targets,
            timeout: CONNECT_TIMEOUT,
            cache_for: CACHE_FOR,
            cached: Mutex::new(None),
        }
    }

    /// The last results, however old; `None` before the first check.
    pub fn last(&self) -> Option<Arc<[Reach]>> {
        self.lock().as_ref().map(|(_, r)| r.clone())
    }

    /// The results of a check at most [`CACHE_FOR`] old: the cached ones, or a new check
    /// of every upstream at once (so the answer takes at most one connect timeout).
    pub async fn check(&self) -> Arc<[Reach]> {
        if let Some((at, results)) = self.lock().as_ref()
            && at.elapsed() < self.cache_for
        {
            return results.clone();
        }
        let checks = self.targets.iter().map(|t| async move {
            let status = match &t.address {
                None => "not_checked",
                Some(address) => {
                    let connect = tokio::net::TcpStream::connect(address.as_str());
                    match tokio::time::timeout(self.timeout, connect).await {
                        Ok(Ok(_)) => "ok",
                        Ok(Err(e)) => {
                            tracing::debug!(target = %t.name, %address, "upstream check: {e}");
                            "unreachable"
                        }
                        Err(_) => "unreachable",
                    }
                }
            };
            Reach {
                target: t.name.clone(),
                kind: t.kind,
                status,
            }
        });
        let results: Arc<[Reach]> = futures_util::future::join_all(checks).await.into();
        *self.lock() = Some((Instant::now(), results.clone()));
        results
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<[Reach]>)>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The readiness verdict. Only the gateway's own faults make it unready (503): a load
/// balancer that pulled every replica because a shared upstream died would turn one
/// target's outage into an outage of every target. An unreachable upstream makes it
/// `degraded`, still 200.
pub fn verdict(own_faults: bool, upstreams: &[Reach]) -> &'static str {
    if own_faults {
        "unready"
    } else if upstreams.iter().any(|r| r.reachable() == Some(false)) {
        "degraded"
    } else {
        "ready"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_port_is_ok_a_closed_one_unreachable_and_stdio_not_checked() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let probe = UpstreamProbe::new(vec![
            ProbeTarget {
                name: "up".into(),
                kind: "http",
                address: Some(open.local_addr().unwrap().to_string()),
            },
            ProbeTarget {
                name: "down".into(),
                kind: "postgres",
                address: Some(closed_addr),
            },
            ProbeTarget {
                name: "local".into(),
                kind: "mcp",
                address: None,
            },
        ]);
        assert!(probe.last().is_none());
        let results = probe.check().await;
        let status: Vec<_> = results
            .iter()
            .map(|r| (r.target.as_str(), r.status))
            .collect();
        assert_eq!(
            status,
            [
                ("up", "ok"),
                ("down", "unreachable"),
                ("local", "not_checked")
            ]
        );
        assert_eq!(verdict(false, &results), "degraded");
        assert_eq!(verdict(true, &results), "unready");
        assert_eq!(verdict(false, &results[..1]), "ready");
        // Cached: the same answer without a new connect, even once the upstream is gone.
        drop(open);
        assert!(Arc::ptr_eq(&probe.check().await, &results));
    }
}
