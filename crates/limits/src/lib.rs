//! Admission limits that apply before the gateway knows who is calling.
//!
//! An unauthenticated caller costs the gateway a file descriptor and some memory per
//! connection, and an audit write per bad credential. Both listeners (the HTTP front door
//! and the PostgreSQL listeners) bound that cost with the two limiters here, shared by the
//! whole process so a flood on one listener cannot starve the others:
//!
//! - [`ConnectionLimiter`]: at most N connections open at once from one source address, and
//!   at most M in total. A connection over either cap is closed at once; refusals are
//!   counted and reported in one log line per interval, not one line (or audit write) each.
//! - [`FailureThrottle`]: after N failed authentications from one source within a window,
//!   that source is refused without its credential being checked until the window ends.
//!   The N failures are recorded one by one (each says what was wrong); the refused
//!   attempts are counted and handed back as one [`FailureSummary`] when the window ends,
//!   so a burst of bad keys costs at most N audit writes per source and window, not one per
//!   attempt.
//!
//! Both key on the source address (not the port): an IPv4 address, or the /64 prefix of an
//! IPv6 address (one host usually holds a whole /64). Callers behind one NAT or proxy share
//! the address, and so share its budget: that is the accepted limit of keying on what an
//! unauthenticated caller cannot choose freely.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// The source a limit counts against: the IPv4 address, or the /64 prefix of an IPv6 one.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// How often, at most, refused connections are reported in the log.
const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The caps of a [`ConnectionLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once from one source address.
    pub per_source: usize,
    /// Connections open at once in total.
    pub total: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// Its source already has `per_source` connections open.
    PerSource,
    /// The gateway already has `total` connections open.
    Total,
}

/// Counts open connections per source and in total; see the crate documentation.
pub struct ConnectionLimiter {
    limits: ConnectionLimits,
    open: Mutex<OpenConnections>,
    refused_per_source: AtomicU64,
    refused_total: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct OpenConnections {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// An admitted connection's place under the caps; dropping it frees the place.
#[must_use = "the connection counts as open only while its slot is kept"]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    source: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(limits: ConnectionLimits) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            limits,
            open: Mutex::new(OpenConnections::default()),
            refused_per_source: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            last_report: Mutex::new(None),
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Takes a place for a new connection from `source`, or says which cap it is over. A
    /// refusal is counted for the periodic log line (`listener` names where it happened).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, listener: &str) -> Result<ConnectionSlot, OverCap> {
        let source = source_of(ip);
        let over = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let from_source = open.by_source.get(&source).copied().unwrap_or(0);
            if open.total >= self.limits.total {
                Some(OverCap::Total)
            } else if from_source >= self.limits.per_source {
                Some(OverCap::PerSource)
            } else {
                open.total += 1;
                *open.by_source.entry(source).or_insert(0) += 1;
                None
            }
        };
        match over {
            None => Ok(ConnectionSlot {
                limiter: self.clone(),
                source,
            }),
            Some(over) => {
                self.count_refusal(over, source, listener);
                Err(over)
            }
        }
    }

    /// The number of connections open now (total, and from `source`).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let source = source_of(ip);
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        (
            open.total,
            open.by_source.get(&source).copied().unwrap_or(0),
        )
    }

    fn release(&self, source: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&source);
            }
        }
    }

    /// Counts a refusal; at most once per [`REFUSAL_REPORT_INTERVAL`] writes one log line
    /// with the counts since the last one. A flood costs a counter increment per connection.
    fn count_refusal(&self, over: OverCap, source: IpAddr, listener: &str) {
        match over {
            OverCap::PerSource => self.refused_per_source.fetch_add(1, Ordering::Relaxed),
            OverCap::Total => self.refused_total.fetch_add(1, Ordering::Relaxed),
        };
        let Ok(mut last) = self.last_report.try_lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < REFUSAL_REPORT_INTERVAL) {
            return;
        }
        let per_source = self.refused_per_source.swap(0, Ordering::Relaxed);
        let total = self.refused_total.swap(0, Ordering::Relaxed);
        tracing::warn!(
            listener,
            last_source = %source,
            refused_over_per_source_cap = per_source,
            refused_over_total_cap = total,
            per_source_cap = self.limits.per_source,
            total_cap = self.limits.total,
            "connections refused over the connection caps (gateway.limits); the next report comes at most {}s later with the count since this one",
            REFUSAL_REPORT_INTERVAL.as_secs()
        );
        *last = Some(Instant::now());
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.release(self.source);
    }
}

/// The limits of a [`FailureThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct FailureLimits {
    /// Failed authentications from one source in one window before it is throttled.
    pub max_failures: u32,
    /// How long a window lasts, from the source's first failure in it.
    pub window: Duration,
}

/// Whether a credential from a source should be checked at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Check,
    /// The source is over its failure budget: refuse without checking, until `retry_after`.
    Throttled {
        retry_after: Duration,
    },
}

/// The attempts of one source in one finished window that were refused unchecked, which
/// were not recorded on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureSummary {
    pub source: IpAddr,
    /// When the window started (the source's first failure in it).
    pub started: SystemTime,
    pub window: Duration,
    /// Failed authentications in the window (each recorded on its own).
    pub failures: u32,
    /// Attempts refused without a check while the source was throttled.
    pub throttled: u32,
}

/// Counts failed authentications per source; see the crate documentation.
pub struct FailureThrottle {
    limits: FailureLimits,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    open: HashMap<IpAddr, FailureWindow>,
    /// Summaries of windows replaced by a new failure before [`FailureThrottle::drain_ended`]
    /// collected them.
    ended: Vec<FailureSummary>,
}

struct FailureWindow {
    started: Instant,
    started_at: SystemTime,
    failures: u32,
    throttled: u32,
}

impl FailureWindow {
    fn summary(&self, source: IpAddr, window: Duration) -> Option<FailureSummary> {
        (self.throttled > 0).then_some(FailureSummary {
            source,
            started: self.started_at,
            window,
            failures: self.failures,
            throttled: self.throttled,
        })
    }
}

impl FailureThrottle {
    pub fn new(limits: FailureLimits) -> FailureThrottle {
        FailureThrottle {
            limits,
            windows: Mutex::new(Windows::default()),
        }
    }

    pub fn limits(&self) -> FailureLimits {
        self.limits
    }

    /// Whether to check a credential from `ip` now. A throttled attempt is counted.
    pub fn admit(&self, ip: IpAddr) -> Admission {
        let source = source_of(ip);
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(window) = windows.open.get_mut(&source) else {
            return Admission::Check;
        };
        let age = window.started.elapsed();
        if age >= self.limits.window || window.failures < self.limits.max_failures {
            return Admission::Check;
        }
        window.throttled = window.throttled.saturating_add(1);
        Admission::Throttled {
            retry_after: self.limits.window - age,
        }
    }

    /// Counts a failed authentication from `ip` (recorded on its own by the caller).
    pub fn failed(&self, ip: IpAddr) {
        let source = source_of(ip);
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Windows { open, ended } = &mut *windows;
        if let Some(window) = open.get(&source)
            && window.started.elapsed() >= self.limits.window
        {
            ended.extend(window.summary(source, self.limits.window));
            open.remove(&source);
        }
        let window = open.entry(source).or_insert_with(|| FailureWindow {
            started: Instant::now(),
            started_at: SystemTime::now(),
            failures: 0,
            throttled: 0,
        });
        window.failures = window.failures.saturating_add(1);
    }

    /// Removes the windows that have ended and returns the summaries of those with anything
    /// not yet recorded. Meant to be called periodically; `all` ends every window (at stop).
    pub fn drain_ended(&self, all: bool) -> Vec<FailureSummary> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Windows { open, ended } = &mut *windows;
        let window_length = self.limits.window;
        let mut summaries = std::mem::take(ended);
        open.retain(|source, window| {
            if !all && window.started.elapsed() < window_length {
                return true;
            }
            summaries.extend(window.summary(*source, window_length));
            false
        });
        summaries
    }
}

impl FailureSummary {
    /// The audit detail of the summary.
    pub fn detail(&self) -> String {
        let since = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!(
            "{} attempts refused unchecked (throttled) from {} in the {}s window starting at unix time {since}, after {} failed authentications (each recorded on its own)",
            self.throttled,
            self.source,
            self.window.as_secs(),
            self.failures
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_source_over_its_cap_is_refused_and_others_are_not() {
        let limiter = ConnectionLimiter::new(ConnectionLimits {
            per_source: 2,
            total: 3,
        });
        let a1 = limiter.admit(A, "test").unwrap();
        let _a2 = limiter.admit(A, "test").unwrap();
        assert_eq!(limiter.admit(A, "test").err(), Some(OverCap::PerSource));
        let _b1 = limiter.admit(B, "test").unwrap();
        assert_eq!(limiter.admit(B, "test").err(), Some(OverCap::Total));
        drop(a1);
        assert!(limiter.admit(B, "test").is_ok());
        assert_eq!(limiter.open(A), (2, 1), "the slot just taken was dropped");
    }

    #[test]
    fn failures_past_the_budget_are_throttled_and_summarised() {
        let throttle = FailureThrottle::new(FailureLimits {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        throttle.failed(A);
        throttle.failed(A);
        assert_eq!(throttle.admit(A), Admission::Check);
        throttle.failed(A);
        assert!(matches!(throttle.admit(A), Admission::Throttled { .. }));
        assert!(matches!(throttle.admit(A), Admission::Throttled { .. }));
        assert_eq!(throttle.admit(B), Admission::Check);
        assert!(throttle.drain_ended(false).is_empty(), "the window is open");
        let summaries = throttle.drain_ended(true);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].source, A);
        assert_eq!(summaries[0].failures, 3);
        assert_eq!(summaries[0].throttled, 2);
        assert_eq!(throttle.admit(A), Admission::Check, "a new window");
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(source_of(mapped), A);
    }
}
