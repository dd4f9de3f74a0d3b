//! Prometheus metrics of the request path, counted where every adapter's requests end: in
//! the exchange. One place, so a new adapter is counted without a line of its own.
//!
//! Counted per target, decision and outcome; request durations per target. Gauges that
//! describe state rather than requests (audit log availability, sinks' lag) are set by the
//! binary when `/metrics` is scraped, from the stores that know them.

use std::sync::Mutex;

use portcullis_model::AuditEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    target: String,
    decision: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

type DurationFamily = Family<TargetLabel, Histogram, fn() -> Histogram>;

/// The gateway's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: DurationFamily,
    /// 1 while the audit log can record, 0 while it cannot (requests are refused then).
    pub audit_available: Gauge,
    /// Events committed to the log that a sink has not delivered yet, per sink.
    pub sink_lag_events: Family<SinkLabel, Gauge>,
    /// Held requests of this gateway waiting for a decision.
    pub holds_waiting: Gauge,
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

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests that ended, by target, decision and outcome",
            requests.clone(),
        );
        let duration: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its end at the gateway, by target",
            duration.clone(),
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
            grants_in_force,
            requests,
            duration,
            audit_available,
            sink_lag_events,
        }
    }

    /// Counts a request's final event.
    pub(crate) fn observe(&self, event: &AuditEvent) {
        let target = event.target.clone().unwrap_or_default();
        self.requests
            .get_or_create(&RequestLabels {
                target: target.clone(),
                decision: event.decision.clone().unwrap_or_else(|| "none".into()),
                outcome: event.outcome.as_str().to_string(),
            })
            .inc();
        if let Some(ms) = event.duration_ms.filter(|ms| ms.is_finite()) {
            self.duration
                .get_or_create(&TargetLabel { target })
                .observe(ms / 1000.0);
        }
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
        metrics.observe(&event);
        metrics.observe(&event);
        event.outcome = Outcome::Denied;
        event.decision = Some("deny".into());
        metrics.observe(&event);
        let text = metrics.encode();
        assert!(
            text.contains(
                "portcullis_requests_total{target=\"customers\",decision=\"allow\",outcome=\"success\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_requests_total{target=\"customers\",decision=\"deny\",outcome=\"denied\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("portcullis_request_duration_seconds_count{target=\"customers\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
