//! How grants are shown: one row per grant, with whether it is active, expired or revoked.

use chrono::{DateTime, Utc};

use super::records::{Grant, scope};
use super::table::{REASON_COLUMN, table};
use super::terminal::{clean, clean_line, truncate};
use super::times::{parse_time, short_when};

pub(super) fn grant_state(g: &Grant, now: DateTime<Utc>) -> String {
    if let Some(at) = &g.revoked_at {
        let by = g
            .revoked_by
            .as_ref()
            .map(|p| format!(" by {}", p.name().replace('\n', " ")))
            .unwrap_or_default();
        let why = g
            .revoke_reason
            .as_deref()
            .map(|r| format!(": {}", truncate(&clean_line(r), REASON_COLUMN)))
            .unwrap_or_default();
        return format!("revoked {}{by}{why}", short_when(at, now));
    }
    match parse_time(&g.expires_at) {
        Some(t) if t <= now => format!("expired {}", short_when(&g.expires_at, now)),
        Some(_) => format!("active until {}", short_when(&g.expires_at, now)),
        None => format!("until {}", clean_line(&g.expires_at)),
    }
}

pub(super) fn grants_table(list: &[Grant], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            vec![
                clean(&g.id),
                g.holder.name().replace('\n', " "),
                clean_line(&g.target),
                scope(&g.tools, &g.tables),
                grant_state(g, now),
            ]
        })
        .collect();
    table(&["ID", "HOLDER", "TARGET", "SCOPE", "STATE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin_cli::times::at;
    use serde_json::json;

    #[test]
    fn grants_table_renders_states() {
        let now = at("2025-03-01T12:00:00.000Z");
        let list: Vec<Grant> = serde_json::from_value(json!([
            {"id": "apr_1", "holder": {"subject": "billing-agent", "kind": "agent"},
             "target": "billing", "tools": ["refund_*"], "tables": [],
             "issued_at": "2025-03-01T11:50:00Z", "expires_at": "2025-03-01T12:20:00Z",
             "approvers": ["finance-leads"]},
            {"id": "apr_2", "holder": {"subject": "u-1", "display_name": "Dana"},
             "target": "warehouse", "tables": ["orders"],
             "issued_at": "2025-03-01T10:00:00Z", "expires_at": "2025-03-01T11:00:00Z",
             "revoked_at": "2025-03-01T10:30:00Z", "revoked_by": {"subject": "omar"},
             "revoke_reason": "done"},
            {"id": "apr_3", "holder": {"subject": "x"}, "target": "billing",
             "issued_at": "2025-03-01T10:00:00Z", "expires_at": "2025-03-01T11:00:00Z"},
        ]))
        .unwrap();
        let text = grants_table(&list, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "HOLDER", "TARGET", "SCOPE", "STATE"]
        );
        assert!(
            lines[1].ends_with("active until 2025-03-01 12:20 UTC (in 20m)"),
            "{text}"
        );
        assert!(lines[2].contains("orders"), "{text}");
        assert!(
            lines[2].ends_with("revoked 2025-03-01 10:30 UTC (1h30m ago) by omar: done"),
            "{text}"
        );
        assert!(lines[3].contains("everything"), "{text}");
        assert!(
            lines[3].ends_with("expired 2025-03-01 11:00 UTC (1h ago)"),
            "{text}"
        );
    }
}
