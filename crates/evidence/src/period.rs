//! The period a report speaks for: `[since, until)`, in UTC.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::EvidenceError;

/// A half-open period `[since, until)`. Its bounds are kept as the audit log writes times
/// (RFC 3339, UTC, milliseconds, `Z`), so an event is in the period exactly when its `time`
/// compares between them as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub since: String,
    pub until: String,
}

impl Period {
    /// The period between two instants; `since` must be before `until`.
    pub fn new(since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Period, EvidenceError> {
        if since >= until {
            return Err(EvidenceError::Invalid(format!(
                "the period is empty: --since {} is not before --until {}",
                stamp(since),
                stamp(until)
            )));
        }
        Ok(Period {
            since: stamp(since),
            until: stamp(until),
        })
    }

    /// Parses the bounds as given on a command line (see [`parse_time`]).
    pub fn parse(since: &str, until: &str) -> Result<Period, EvidenceError> {
        Period::new(parse_time(since)?, parse_time(until)?)
    }

    pub fn since_time(&self) -> DateTime<Utc> {
        parse_time(&self.since).expect("a period's bounds are valid times")
    }

    pub fn until_time(&self) -> DateTime<Utc> {
        parse_time(&self.until).expect("a period's bounds are valid times")
    }

    /// Whether an event stamped `time` (as the log writes it) is in the period.
    pub fn contains(&self, time: &str) -> bool {
        time >= self.since.as_str() && time < self.until.as_str()
    }

    /// Whole days in the period, at least 1: what per-day baselines are scaled by.
    pub fn days(&self) -> f64 {
        let secs = (self.until_time() - self.since_time()).num_seconds().max(1) as f64;
        (secs / 86_400.0).max(1.0 / 24.0)
    }
}

/// A time as the audit log writes it: RFC 3339, UTC, milliseconds.
pub fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a time given by a person: RFC 3339 (`2026-12-01T09:00:00Z`, any offset) or a date
/// (`2026-12-01`, midnight UTC), or `now`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, EvidenceError> {
    let text = text.trim();
    if text == "now" {
        return Ok(Utc::now());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(EvidenceError::Invalid(format!(
        "{text:?} is not a time: give RFC 3339 (2026-12-01T09:00:00Z), a date (2026-12-01, \
         midnight UTC) or now"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_compare_as_the_log_writes_times() {
        let p = Period::parse("2026-12-01", "2026-12-02T00:00:00+00:00").unwrap();
        assert_eq!(p.since, "2026-12-01T00:00:00.000Z");
        assert_eq!(p.until, "2026-12-02T00:00:00.000Z");
        assert!(p.contains("2026-12-01T00:00:00.000Z"));
        assert!(p.contains("2026-12-01T23:59:59.999Z"));
        assert!(!p.contains("2026-12-02T00:00:00.000Z"));
        assert!(!p.contains("2026-11-30T23:59:59.999Z"));
        assert_eq!(p.days(), 1.0);
    }

    #[test]
    fn a_reversed_or_unreadable_period_is_refused_with_the_reason() {
        let err = Period::parse("2026-12-02", "2026-12-01").unwrap_err();
        assert!(err.to_string().contains("is not before"), "{err}");
        let err = Period::parse("yesterday", "now").unwrap_err();
        assert!(err.to_string().contains("is not a time"), "{err}");
    }
}
