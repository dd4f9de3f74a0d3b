//! Times as an approver reads them: absolute in UTC, and relative to now (`in 14m`, `3m ago`).

use chrono::{DateTime, Utc};

use super::terminal::clean_line;

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A span in the largest units that matter: `42s`, `14m`, `2h5m`, `3d4h`.
pub(super) fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{m}m"),
        3600..86_400 if m == 0 => format!("{h}h"),
        3600..86_400 => format!("{h}h{m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// `in 14m`, `3m ago`, `now`, relative to `now`.
pub(super) fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    match secs {
        0 => "now".to_string(),
        s if s > 0 => format!("in {}", span(s.unsigned_abs())),
        s => format!("{} ago", span(s.unsigned_abs())),
    }
}

/// An RFC 3339 time as `2025-03-01 14:05:09 UTC (in 14m)`; unparseable text as it came.
pub(super) fn when(s: &str, now: DateTime<Utc>) -> String {
    match parse_time(s) {
        Some(t) => format!(
            "{} ({})",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            relative(t, now)
        ),
        None => clean_line(s),
    }
}

/// `2025-03-01 14:05 UTC (in 14m)`: minutes are enough in a table.
pub(super) fn short_when(s: &str, now: DateTime<Utc>) -> String {
    match parse_time(s) {
        Some(t) => format!("{} ({})", t.format("%Y-%m-%d %H:%M UTC"), relative(t, now)),
        None => clean_line(s),
    }
}

/// A fixed instant for the tests of every view.
#[cfg(test)]
pub(super) fn at(s: &str) -> DateTime<Utc> {
    parse_time(s).expect("a test time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = at("2025-03-01T12:00:00.000Z");
        assert_eq!(relative(at("2025-03-01T12:14:59.900Z"), now), "in 14m");
        assert_eq!(relative(at("2025-03-01T12:00:42Z"), now), "in 42s");
        assert_eq!(relative(at("2025-03-01T14:05:00Z"), now), "in 2h5m");
        assert_eq!(relative(at("2025-03-01T15:00:00Z"), now), "in 3h");
        assert_eq!(relative(at("2025-03-04T16:00:00Z"), now), "in 3d4h");
        assert_eq!(relative(at("2025-03-01T11:57:00Z"), now), "3m ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(
            when("2025-03-01T12:30:00.000Z", now),
            "2025-03-01 12:30:00 UTC (in 30m)"
        );
        // Offsets are read as the instant they name.
        assert_eq!(
            when("2025-03-01T13:30:00+01:00", now),
            "2025-03-01 12:30:00 UTC (in 30m)"
        );
        assert_eq!(when("not a time", now), "not a time");
    }
}
