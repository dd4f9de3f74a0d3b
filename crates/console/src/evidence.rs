//! `POST /api/v1/evidence/sign-offs`: a named reviewer records that they reviewed an evidence
//! document (AU-6, audit record review).
//!
//! The sign-off is an `evidence.reviewed` event carrying the reviewer's identity, their reason
//! and the reviewed document as its hash names it (an `EvidenceRecord`): the log, signed and
//! witnessed, is what shows an assessor that reviews happen and how often.
//!
//! Who may sign off: an authenticated **human** identity acting for itself. Agents and
//! services are refused (403): the activity under review is largely theirs, and a review by
//! the reviewed is not a review. A token acting on behalf of someone (an `act` chain) is
//! refused too: the one signing off would be the actor, not the person named. The document
//! is not fetched or checked here (the gateway may not hold it); the hash binds the sign-off
//! to exact bytes, which `evidence verify` and the `evidence.report` events can be compared
//! with.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use portcullis_model::{EventType, EvidenceRecord, IdentityKind, Outcome};
use serde::Deserialize;
use serde_json::json;

use crate::{Admin, Caller, body, error};

/// The longest reason kept: a sentence or a short paragraph, not a document.
pub const MAX_REASON_CHARS: usize = 1000;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignOff {
    /// SHA-256 (hex) of the reviewed document's bytes.
    sha256: String,
    bytes: u64,
    /// `report`, `assessment-results`, ...
    document: String,
    /// `html`, `json`, `md`, `oscal-json`.
    format: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    /// The document's file name (no directory).
    #[serde(default)]
    file: Option<String>,
    /// Why the reviewer signs off: what they looked at, what they concluded.
    reason: String,
}

pub(crate) async fn sign_off(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    parsed: Result<Json<SignOff>, JsonRejection>,
) -> Response {
    if identity.kind != IdentityKind::Human {
        return error(
            StatusCode::FORBIDDEN,
            "not_a_reviewer",
            &format!(
                "only a person can sign off a review; {} is not a human identity ({}), and a review by the reviewed is not a review",
                identity.subject,
                identity.kind.as_str()
            ),
        );
    }
    if !identity.act.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "not_a_reviewer",
            "a token acting on behalf of someone cannot sign off a review: the reviewer must sign off with their own credential",
        );
    }
    let asked = match body(parsed) {
        Ok(asked) => asked,
        Err(refused) => return refused,
    };
    let (asked, reason) = match check(asked) {
        Ok(checked) => checked,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    // Only a document the gateway wrote and recorded can be signed off, and what it is (its
    // kind, its period) is taken from that record, not from the caller: a sign-off of a
    // made-up hash, or of a real report under another period, would be evidence of nothing.
    let (dir, sha256) = (admin.data_dir.clone(), asked.sha256.clone());
    let found = tokio::task::spawn_blocking(move || {
        let reader = portcullis_audit::AuditReader::open(&dir).map_err(|e| e.to_string())?;
        reader.evidence_document(&sha256).map_err(|e| e.to_string())
    })
    .await;
    let record = match found {
        Ok(Ok(Some((_, body)))) => {
            match serde_json::from_str::<portcullis_model::AuditEvent>(&body)
                .ok()
                .and_then(|event| event.evidence)
            {
                Some(record) => record,
                None => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "audit_unreadable",
                        "the evidence.report event of this document cannot be read",
                    );
                }
            }
        }
        Ok(Ok(None)) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_document",
                &format!(
                    "no evidence.report event records a document with SHA-256 {}: only a \
                     document the gateway wrote and recorded (a scheduled report, or `portcullis \
                     evidence report --sign`) can be signed off, exactly as written",
                    asked.sha256
                ),
            );
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                &format!("the audit log cannot be read: {e}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                &format!("the audit log cannot be read: {e}"),
            );
        }
    };
    if record.document != "report" {
        return error(
            StatusCode::BAD_REQUEST,
            "not_a_report",
            &format!(
                "only a review report can be signed off; this document is {} ({}): sign off \
                 the report of its period",
                record.document, record.format
            ),
        );
    }
    if record.bytes != asked.bytes {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!(
                "bytes: the document recorded with this SHA-256 has {} bytes, not {}",
                record.bytes, asked.bytes
            ),
        );
    }

    let mut ev = admin
        .audit
        .event(EventType::EvidenceReviewed, Outcome::Info);
    ev.identity = Some(identity.clone());
    ev.target = Some("admin-api".into());
    ev.action = Some("POST /api/v1/evidence/sign-offs".into());
    ev.detail = Some(format!(
        "{} signed off {} ({}) {}",
        identity.subject, record.document, record.format, record.sha256
    ));
    ev.reason = Some(reason);
    ev.evidence = Some(record.clone());
    let id = ev.id.clone();
    match admin.audit.record(ev).await {
        Ok(seq) => (
            StatusCode::CREATED,
            Json(json!({
                "event": id,
                "seq": seq,
                "reviewer": identity.subject,
                "evidence": record,
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            &format!("the audit log cannot record the sign-off: {e}"),
        ),
    }
}

/// The record and the reason, checked: every field is bounded and free of control
/// characters (they end up in reports and on terminals).
fn check(asked: SignOff) -> Result<(EvidenceRecord, String), String> {
    let sha256 = asked.sha256.trim().to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256: must be the 64 hex digits of the document's SHA-256".into());
    }
    if asked.bytes == 0 {
        return Err("bytes: an empty document is not a report".into());
    }
    let word = |field: &str, value: &str| -> Result<String, String> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(value.to_string())
        } else {
            Err(format!(
                "{field}: {value:?} is not a document name (a-z, 0-9, -; at most 64)"
            ))
        }
    };
    let document = word("document", &asked.document)?;
    let format = word("format", &asked.format)?;
    let (since, until) = match (&asked.since, &asked.until) {
        (None, None) => (None, None),
        (Some(since), Some(until)) => {
            let since = time("since", since)?;
            let until = time("until", until)?;
            if since >= until {
                return Err("since: must be before until".into());
            }
            (Some(stamp(since)), Some(stamp(until)))
        }
        _ => return Err("since, until: give both or neither".into()),
    };
    let file = match asked.file {
        None => None,
        Some(file) => {
            if file.is_empty()
                || file.len() > 255
                || file.contains(['/', '\\'])
                || file.chars().any(char::is_control)
            {
                return Err("file: must be a file name (no directory, no control characters, at most 255 bytes)".into());
            }
            Some(file)
        }
    };
    let reason = asked.reason.trim();
    if reason.is_empty() {
        return Err("reason: say what you reviewed and what you concluded".into());
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!("reason: at most {MAX_REASON_CHARS} characters"));
    }
    if reason.chars().any(char::is_control) {
        return Err("reason: control characters (line breaks included) are not accepted".into());
    }
    Ok((
        EvidenceRecord {
            document,
            format,
            since,
            until,
            sha256,
            bytes: asked.bytes,
            file,
        },
        reason.to_string(),
    ))
}

fn time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{field}: {text:?} is not an RFC 3339 time"))
}

/// As the audit log writes times, so the period compares with event times as text.
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(reason: &str) -> SignOff {
        SignOff {
            sha256: "AB".repeat(32),
            bytes: 10,
            document: "report".into(),
            format: "json".into(),
            since: Some("2026-12-01T00:00:00Z".into()),
            until: Some("2026-12-02T00:00:00+00:00".into()),
            file: Some("report.json".into()),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_sign_off_is_normalised() {
        let (record, reason) = check(asked("  read it all; nothing to add  ")).unwrap();
        assert_eq!(record.sha256, "ab".repeat(32));
        assert_eq!(record.since.as_deref(), Some("2026-12-01T00:00:00.000Z"));
        assert_eq!(record.until.as_deref(), Some("2026-12-02T00:00:00.000Z"));
        assert_eq!(reason, "read it all; nothing to add");
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let err = |f: &dyn Fn(&mut SignOff)| {
            let mut a = asked("ok");
            f(&mut a);
            check(a).unwrap_err()
        };
        assert!(err(&|a| a.reason = " \t ".into()).starts_with("reason:"));
        assert!(err(&|a| a.reason = "x".repeat(MAX_REASON_CHARS + 1)).contains("at most"));
        assert!(err(&|a| a.reason = "fine\u{1b}[2J".into()).contains("control"));
        assert!(err(&|a| a.reason = "two\nlines".into()).contains("control"));
        assert!(err(&|a| a.sha256 = "abc".into()).starts_with("sha256:"));
        assert!(err(&|a| a.document = "Report<script>".into()).starts_with("document:"));
        assert!(err(&|a| a.file = Some("../etc/passwd".into())).starts_with("file:"));
        assert!(err(&|a| a.until = None).contains("both or neither"));
        assert!(err(&|a| a.until = a.since.clone()).contains("before until"));
        assert!(err(&|a| a.since = Some("yesterday".into())).contains("RFC 3339"));
        assert!(err(&|a| a.bytes = 0).starts_with("bytes:"));
        assert!(check(asked(&"é".repeat(MAX_REASON_CHARS))).is_ok());
    }
}
