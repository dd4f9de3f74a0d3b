//! Prometheus metrics of the request path, counted where every adapter's requests end: in
//! the exchange. One place, so a new adapter is counted without a line of its own.
//!
//! Counted per target, adapter kind, decision and outcome; request durations per target and
//! kind; upstream failures per target, kind and fault. The audit writer reports each commit
//! here ([`CommitObserver`]): its events' wait from hand-over to durable commit, and the
//! group's size. Gauges that describe state rather than requests (audit log availability,
//! its queue, sinks' lag) are set by the binary when `/metrics` is scraped, from the stores
//! that know them.

use std::sync::Mutex;
use std::time::Duration;

use portcullis_audit::CommitObserver;
use portcullis_model::{AuditEvent, TargetKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::UpstreamFault;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    target: String,
    kind: &'static str,
    decision: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    target: String,
    kind: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub target: String,
}

/// The `kind` label of an adapter's series.
fn kind_label(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Mcp => "mcp",
        TargetKind::Postgres => "postgres",
        TargetKind::Mysql => "mysql",
        TargetKind::Http => "http",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

type DurationFamily = Family<TargetLabels, Histogram, fn() -> Histogram>;

/// The gateway's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: DurationFamily,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    audit_commit_seconds: Histogram,
    audit_commit_group_size: Histogram,
    /// Events handed to the audit writer and not committed yet.
    pub audit_queue_depth: Gauge,
    /// Per target with a network upstream: 1 if the last readiness check reached it, 0 if
    /// not. Set when `/readyz` or `/metrics` checks.
    pub upstream_reachable: Family<UpstreamLabel, Gauge>,
    /// 1 while the audit log can record, 0 while it cannot (requests are refused then).
    pub audit_available: Gauge,
    /// Events committed to the log that a sink has not delivered yet, per sink.
    pub sink_lag_events: Family<SinkLabel, Gauge>,
    /// Held requests of this gateway waiting for a decision.
    pub holds_waiting: Gauge,
    /// 1 while this replica hears the shared state's announcements (`[state] backend =
    /// "postgres"`), 0 while it reconnects; absent with SQLite state.
    pub state_listening: Gauge,
    /// Just-in-time grants in force.
    pub grants_in_force: Gauge,
    /// Events this gateway has committed to its audit log.
    pub events_committed: Gauge,
    /// Seconds since the newest signed checkpoint; -1 while there is none (no signing key,
    /// or nothing signed yet).
    pub checkpoint_age_seconds: Gauge,
    /// Committed events no signed checkpoint covers yet.
    pub events_uncovered: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn duration_histogram() -> Histogram {
    // 50 µs to about 1.6 s, doubling: a gateway hop to a slow upstream.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn commit_histogram() -> Histogram {
    // 50 µs to about 3.3 s, doubling: a batched commit of a few events to an fsync that
    // waited behind a large group on a slow disk.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

fn group_histogram() -> Histogram {
    // 1 to 4096 events (the writer's largest transaction), doubling.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests that ended, by target, adapter kind, decision and outcome",
            requests.clone(),
        );
        let duration: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its end at the gateway, by target and adapter kind",
            duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures, by target, adapter kind and error (unreachable, closed, timeout, protocol)",
            upstream_errors.clone(),
        );
        let audit_commit_seconds = commit_histogram();
        registry.register(
            "audit_commit_seconds",
            "Per event, the time from its hand-over to the audit writer to its durable commit",
            audit_commit_seconds.clone(),
        );
        let audit_commit_group_size = group_histogram();
        registry.register(
            "audit_commit_group_size",
            "Events per audit log transaction (group commit)",
            audit_commit_group_size.clone(),
        );
        let audit_queue_depth = Gauge::default();
        registry.register(
            "audit_queue_depth",
            "Events handed to the audit writer and not committed yet",
            audit_queue_depth.clone(),
        );
        let upstream_reachable = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_reachable",
            "1 if the last readiness check connected to the target's upstream, 0 if not",
            upstream_reachable.clone(),
        );
        let audit_available = Gauge::default();
        registry.register(
            "audit_available",
            "1 while the audit log can record requests, 0 while it cannot",
            audit_available.clone(),
        );
        let sink_lag_events = Family::<SinkLabel, Gauge>::default();
        registry.register(
            "sink_lag_events",
            "Committed audit events a sink has not delivered yet",
            sink_lag_events.clone(),
        );
        let holds_waiting = Gauge::default();
        registry.register(
            "holds_waiting",
            "Held requests of this gateway waiting for a decision",
            holds_waiting.clone(),
        );
        let state_listening = Gauge::default();
        registry.register(
            "state_listening",
            "1 while the shared state's change announcements arrive, 0 while reconnecting (-1: SQLite state)",
            state_listening.clone(),
        );
        let grants_in_force = Gauge::default();
        registry.register(
            "grants_in_force",
            "Just-in-time grants in force",
            grants_in_force.clone(),
        );
        let events_committed = Gauge::default();
        registry.register(
            "events_committed",
            "Events this gateway has committed to its audit log",
            events_committed.clone(),
        );
        let checkpoint_age_seconds = Gauge::default();
        registry.register(
            "checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint, -1 while there is none",
            checkpoint_age_seconds.clone(),
        );
        let events_uncovered = Gauge::default();
        registry.register(
            "events_uncovered",
            "Committed events no signed checkpoint covers yet",
            events_uncovered.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            events_committed,
            checkpoint_age_seconds,
            events_uncovered,
            holds_waiting,
            state_listening,
            grants_in_force,
            requests,
            duration,
            upstream_errors,
            audit_commit_seconds,
            audit_commit_group_size,
            audit_queue_depth,
            upstream_reachable,
            audit_available,
            sink_lag_events,
        }
    }

    /// Counts a request's final event.
    pub(crate) fn observe(&self, event: &AuditEvent, kind: TargetKind) {
        let target = event.target.clone().unwrap_or_default();
        let kind = kind_label(kind);
        self.requests
            .get_or_create(&RequestLabels {
                target: target.clone(),
                kind,
                decision: event.decision.clone().unwrap_or_else(|| "none".into()),
                outcome: event.outcome.as_str().to_string(),
            })
            .inc();
        if let Some(ms) = event.duration_ms.filter(|ms| ms.is_finite()) {
            self.duration
                .get_or_create(&TargetLabels { target, kind })
                .observe(ms / 1000.0);
        }
    }

    /// Counts one upstream failure.
    pub(crate) fn upstream_error(&self, target: &str, kind: TargetKind, fault: UpstreamFault) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                target: target.to_string(),
                kind: kind_label(kind),
                error: fault.label(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl CommitObserver for Metrics {
    /// On the writer thread, once per transaction: no lock of the callers' is taken, and the
    /// histograms' own locks are only contended by a scrape.
    fn committed(&self, group: usize, waits: &mut dyn Iterator<Item = Duration>) {
        self.audit_commit_group_size.observe(group as f64);
        for wait in waits {
            self.audit_commit_seconds.observe(wait.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_model::Outcome;

    #[test]
    fn requests_are_counted_by_target_decision_and_outcome() {
        let metrics = Metrics::new();
        let mut event: AuditEvent = serde_json::from_value(serde_json::json!({
            "id": "e1", "time": "2026-12-06T10:00:00.000Z", "gateway": "gw",
            "type": "request", "outcome": "success"
        }))
        .unwrap();
        event.target = Some("customers".into());
        event.decision = Some("allow".into());
        event.duration_ms = Some(1.5);
        metrics.observe(&event, TargetKind::Mcp);
        metrics.observe(&event, TargetKind::Mcp);
        event.outcome = Outcome::Denied;
        event.decision = Some("deny".into());
        metrics.observe(&event, TargetKind::Mcp);
        metrics.upstream_error("customers", TargetKind::Mcp, UpstreamFault::Timeout);
        metrics.committed(2, &mut [Duration::from_millis(3); 2].into_iter());
        let text = metrics.encode();
        assert!(
            text.contains(
                "portcullis_requests_total{target=\"customers\",kind=\"mcp\",decision=\"allow\",outcome=\"success\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_requests_total{target=\"customers\",kind=\"mcp\",decision=\"deny\",outcome=\"denied\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_request_duration_seconds_count{target=\"customers\",kind=\"mcp\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_upstream_errors_total{target=\"customers\",kind=\"mcp\",error=\"timeout\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("portcullis_audit_commit_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_audit_commit_group_size_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
