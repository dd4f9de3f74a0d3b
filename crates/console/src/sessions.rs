//! Recorded sessions on the admin API: `GET /api/v1/sessions` (the list, filtered like
//! `portcullis sessions list`), `GET /api/v1/sessions/{id}` (the timeline) and
//! `GET /api/v1/sessions/{id}/export` (the evidence bundle).
//!
//! Who may read recordings: members of a group that approves something (any rule's
//! `approvers`) or of a break-glass group; with none configured, nobody. Every answer that
//! carries recorded content is preceded by a `recording.accessed` event naming the reader;
//! if the log cannot take it, the content is not sent.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portcullis_audit::recordings::Recordings;
use portcullis_audit::sessions::{self, SessionFilter};
use portcullis_audit::{AuditReader, bundle};
use portcullis_model::{EventType, Identity, Outcome};
use serde::Deserialize;
use serde_json::json;

use crate::{Admin, Caller, MAX_LIST, error};

#[derive(Deserialize)]
pub(crate) struct SessionsQuery {
    who: Option<String>,
    target: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// The caller may read recordings, or the 403 that says who may.
pub(crate) fn may_read(admin: &Admin, identity: &Identity) -> Result<(), Response> {
    if is_reader(admin, identity) {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        "not_a_reader",
        &who_may_read(admin),
    ))
}

/// Whether `identity` is in one of the groups that may read recordings.
pub(crate) fn is_reader(admin: &Admin, identity: &Identity) -> bool {
    admin
        .recording_readers()
        .iter()
        .any(|group| identity.in_group(group))
}

/// Who may read recordings, in a sentence.
pub(crate) fn who_may_read(admin: &Admin) -> String {
    let readers = admin.recording_readers();
    if readers.is_empty() {
        "nobody may read recorded sessions: no rule names approvers and no break-glass group is configured".to_string()
    } else {
        format!(
            "recorded sessions are for members of {}",
            readers.join(", ")
        )
    }
}

/// An RFC 3339 time as events write it (UTC, milliseconds), or a 400.
fn event_time(text: &str, name: &str) -> Result<String, Response> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("{name}={text}: an RFC 3339 time, like 2026-03-01T12:00:00Z"),
            )
        })
}

/// Runs a read of the log off the async threads; a failure is a 500 with its cause.
async fn read<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(why)) => {
            tracing::error!("admin API: reading sessions: {why}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read_failed",
                &why,
            ))
        }
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "read_failed",
            "the read stopped unexpectedly",
        )),
    }
}

/// Records that `reader` read session `id` through `how`; the content is sent only after.
async fn record_access(
    admin: &Admin,
    reader: &Identity,
    how: &str,
    id: &str,
) -> Result<(), Response> {
    record_reading(admin, reader, "admin-api", how, id, "the admin API")
        .await
        .map_err(|why| error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", &why))
}

/// Records a `recording.accessed` event: `reader` read session `id` through `how` (a
/// route) of `via` (`admin-api`, `console`), described as `through`. The error says why the
/// log refused it; the caller then sends nothing.
pub(crate) async fn record_reading(
    admin: &Admin,
    reader: &Identity,
    via: &str,
    how: &str,
    id: &str,
    through: &str,
) -> Result<(), String> {
    let mut ev = admin
        .audit
        .event(EventType::RecordingAccessed, Outcome::Info);
    ev.identity = Some(reader.clone());
    ev.target = Some(via.into());
    ev.action = Some(format!("GET {how}"));
    // The session goes in `resource`, not `session`: this event is not part of it.
    ev.resource = Some(id.to_string());
    ev.detail = Some(format!("session {id} read through {through} ({how})"));
    admin
        .audit
        .record(ev)
        .await
        .map(|_| ())
        .map_err(|e| format!("the audit log cannot record this access to a recording: {e}"))
}

pub(crate) async fn list(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    query: Result<Query<SessionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(refused) = may_read(&admin, &identity) {
        return refused;
    }
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "query: who, target, since, until (RFC 3339), limit=N",
        );
    };
    let since = match query
        .since
        .as_deref()
        .map(|t| event_time(t, "since"))
        .transpose()
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let until = match query
        .until
        .as_deref()
        .map(|t| event_time(t, "until"))
        .transpose()
    {
        Ok(t) => t,
        Err(r) => return r,
    };
    let filter = SessionFilter {
        who: query.who,
        target: query.target,
        since,
        until,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    let dir = admin.data_dir.clone();
    match read(move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        sessions::list(&reader, &filter).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(found) => Json(json!({ "sessions": found })).into_response(),
        Err(r) => r,
    }
}

pub(crate) async fn show(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = may_read(&admin, &identity) {
        return refused;
    }
    let dir = admin.data_dir.clone();
    let wanted = id.clone();
    let timeline = match read(move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        let recordings = Recordings::open(&dir).map_err(|e| e.to_string())?;
        sessions::timeline(&reader, &recordings, &wanted).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Some(timeline)) => timeline,
        Ok(None) => return no_session(&id),
        Err(r) => return r,
    };
    if let Err(r) = record_access(&admin, &identity, "/api/v1/sessions/{id}", &id).await {
        return r;
    }
    Json(timeline).into_response()
}

pub(crate) async fn export(
    State(admin): State<Arc<Admin>>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = may_read(&admin, &identity) {
        return refused;
    }
    let dir = admin.data_dir.clone();
    let wanted = id.clone();
    let made = match tokio::task::spawn_blocking(move || bundle::export(&dir, &wanted)).await {
        Ok(made) => made,
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read_failed",
                "the export stopped unexpectedly",
            );
        }
    };
    let bundle = match made {
        Ok((bundle, _)) => bundle,
        Err(bundle::BundleError::NotFound(_)) => return no_session(&id),
        Err(e @ bundle::BundleError::NotCovered { .. }) => {
            return error(StatusCode::CONFLICT, "not_covered", &e.to_string());
        }
        Err(e) => {
            tracing::error!("admin API: exporting session {id}: {e}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read_failed",
                &e.to_string(),
            );
        }
    };
    if let Err(r) = record_access(&admin, &identity, "/api/v1/sessions/{id}/export", &id).await {
        return r;
    }
    Json(bundle).into_response()
}

fn no_session(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no session {id} in the audit log"),
    )
}
