//! Recorded sessions in the console, for reviewers: the list (filtered like `portcullis
//! sessions list`), one session's timeline with what was sent and what came back (as
//! recorded, that is masked), a replay of it at its recorded pace, and the evidence bundle
//! (`portcullis sessions export`'s bytes) to take away.
//!
//! The rules are the admin API's ([`crate::sessions`]): only the recording readers the
//! policy names may look, and every read of recorded content or download of a bundle is a
//! `recording.accessed` event naming the reader, recorded before anything is sent (if the log
//! cannot take it, nothing is).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use portcullis_audit::recordings::Recordings;
use portcullis_audit::sessions::{self, Entry, SessionFilter, SessionState, SessionSummary};
use portcullis_audit::{AuditReader, bundle};
use portcullis_recording::document::Record;
use serde::Deserialize;

use super::Web;
use super::auth::{RecordedRead, Viewer, encode};

use super::page::{Section, json_block, notice, page, problem, time};
use crate::sessions::{is_reader, record_reading, who_may_read};

const REPLAY_JS: &str = include_str!("static/replay.js");

/// The most sessions one listing shows.
const MAX_SESSIONS: usize = 500;
/// The most parts of one recorded side shown on the page (the bundle has them all).
const MAX_PARTS: usize = 200;

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/sessions", get(list))
        .route("/sessions/{id}", get(show))
        .route("/sessions/{id}/export", get(export))
        .route("/static/replay.js", get(replay_js))
}

/// The 403 for someone who may not read recordings (nor the audit log): who may.
pub(super) fn refuse_non_reader(web: &Web, viewer: &Viewer) -> Option<Response> {
    if is_reader(&web.admin, &viewer.identity) {
        return None;
    }
    let rule = who_may_read(&web.admin);
    Some(problem(
        StatusCode::FORBIDDEN,
        "Not for you",
        &format!(
            "You are signed in as {}, who may not read recorded sessions or the audit log: {rule}. Ask an administrator if you need to.",
            viewer.identity.subject
        ),
        Some(viewer),
    ))
}

/// An RFC 3339 time as events write it (UTC, milliseconds), or a 400 page naming the field.
pub(super) fn filter_time(text: &str, field: &str, viewer: &Viewer) -> Result<String, Response> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|_| {
            bad_filter(
                field,
                text,
                "an RFC 3339 time, like 2026-03-01T12:00:00Z",
                viewer,
            )
        })
}

/// The 400 page for a filter value that is not one.
pub(super) fn bad_filter(field: &str, value: &str, accepted: &str, viewer: &Viewer) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "Bad filter",
        &format!("{field}={value:?} is not a value this filter takes. {field} accepts {accepted}."),
        Some(viewer),
    )
}

/// A number of results between 1 and `max`, or a 400 page.
pub(super) fn filter_limit(
    text: Option<&str>,
    default: usize,
    max: usize,
    viewer: &Viewer,
) -> Result<usize, Response> {
    match text {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_filter(
                "limit",
                text,
                &format!("a whole number from 1 to {max}"),
                viewer,
            )),
        },
    }
}

/// Runs a read of the log off the async threads; a failure is a 500 page with its cause.
pub(super) async fn blocking<T: Send + 'static>(
    viewer: &Viewer,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let failed = |why: &str| {
        problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot read the audit log",
            &format!(
                "{why}. Nothing was shown; try again, and tell the gateway's operators if it persists."
            ),
            Some(viewer),
        )
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(why)) => {
            tracing::error!("console: reading the audit log: {why}");
            Err(failed(&why))
        }
        Err(_) => Err(failed("the read stopped unexpectedly")),
    }
}

/// A value for a file name: what is not a letter, digit, `.`, `-` or `_` becomes `_`.
pub(super) fn file_part(id: &str) -> String {
    id.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An id as one segment of a console path.
pub(super) fn segment(id: &str) -> String {
    encode(id).replace('/', "%2F")
}

/// A query value, with an empty field (a form left blank) as none.
pub(super) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    who: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    outcome: Option<String>,
    limit: Option<String>,
}

/// What the outcome filter of the list takes: what a session's summary says of its requests.
const OUTCOMES: [(&str, &str); 3] = [
    ("denied", "with a denied request"),
    ("held", "with a request held for approval"),
    ("allowed", "with every request allowed"),
];

fn outcome_matches(outcome: &str, s: &SessionSummary) -> bool {
    match outcome {
        "denied" => s.denied > 0,
        "held" => s.held > 0,
        _ => s.denied == 0 && s.held == 0,
    }
}

async fn list(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let Ok(Query(query)) = query else {
        return bad_filter(
            "query",
            "",
            "who, target, since, until, outcome and limit",
            &viewer,
        );
    };
    let mut filter = SessionFilter {
        who: given(&query.who).map(str::to_string),
        target: given(&query.target).map(str::to_string),
        ..Default::default()
    };
    for (field, value, slot) in [
        ("since", given(&query.since), &mut filter.since),
        ("until", given(&query.until), &mut filter.until),
    ] {
        if let Some(value) = value {
            match filter_time(value, field, &viewer) {
                Ok(t) => *slot = Some(t),
                Err(r) => return r,
            }
        }
    }
    let outcome = given(&query.outcome);
    if let Some(o) = outcome
        && !OUTCOMES.iter().any(|(name, _)| *name == o)
    {
        return bad_filter(
            "outcome",
            o,
            "denied, held or allowed (or nothing, for all)",
            &viewer,
        );
    }
    let limit = match filter_limit(given(&query.limit), 100, MAX_SESSIONS, &viewer) {
        Ok(n) => n,
        Err(r) => return r,
    };
    // With an outcome to match, more are read and those that do not match left out.
    filter.limit = if outcome.is_some() {
        MAX_SESSIONS * 4
    } else {
        limit
    };
    let dir = web.admin.data_dir.clone();
    let found = match blocking(&viewer, move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        sessions::list(&reader, &filter).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(found) => found,
        Err(r) => return r,
    };
    let shown: Vec<SessionSummary> = found
        .into_iter()
        .filter(|s| outcome.is_none_or(|o| outcome_matches(o, s)))
        .take(limit)
        .collect();
    let body = html! {
        p.lede { "Sessions recorded at the gateway, newest activity first. A session's page shows what was sent and what came back, as recorded (masked), and replays it." }
        (list_form(&query))
        @if shown.is_empty() {
            p.empty { "No session matches these filters." }
        } @else {
            p { (shown.len()) " session" @if shown.len() != 1 { "s" } " shown" @if shown.len() == limit { " (the newest " (limit) "; narrow the filters to see older ones)" } "." }
            table.list aria-label="Recorded sessions" {
                thead { tr {
                    th scope="col" { "Session" }
                    th scope="col" { "Who" }
                    th scope="col" { "Target" }
                    th scope="col" { "Started" }
                    th scope="col" { "Duration" }
                    th scope="col" { "Requests" }
                    th scope="col" { "Outcomes" }
                } }
                tbody {
                    @for s in &shown {
                        tr data-session=(s.id) {
                            td { a href={ "/console/sessions/" (segment(&s.id)) } { (s.id) } }
                            td { (s.who.as_deref().unwrap_or("—")) }
                            td { (s.target.as_deref().unwrap_or("—")) }
                            td { (time(&s.start)) }
                            td { (duration(s)) }
                            td { (s.requests) }
                            td { (outcomes(s)) }
                        }
                    }
                }
            }
        }
    };
    page("Sessions", Some(&viewer), Section::Sessions, body).into_response()
}

fn list_form(query: &ListQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters method="get" action="/console/sessions" role="search" aria-label="Filter sessions" {
            div { label for="f-who" { "Who (subject)" } input #f-who type="text" name="who" value=(value(&query.who)); }
            div { label for="f-target" { "Target" } input #f-target type="text" name="target" value=(value(&query.target)); }
            div { label for="f-since" { "Active since (RFC 3339)" } input #f-since type="text" name="since" placeholder="2026-03-01T00:00:00Z" value=(value(&query.since)); }
            div { label for="f-until" { "Started before (RFC 3339)" } input #f-until type="text" name="until" placeholder="2026-03-02T00:00:00Z" value=(value(&query.until)); }
            div {
                label for="f-outcome" { "Outcome" }
                select #f-outcome name="outcome" {
                    option value="" { "Any" }
                    @for (name, label) in OUTCOMES {
                        option value=(name) selected[query.outcome.as_deref() == Some(name)] { (label) }
                    }
                }
            }
            div { button type="submit" { "Filter" } }
        }
    }
}

/// How long a session lasted (or that it is still open, or died open).
fn duration(s: &SessionSummary) -> String {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (s.state, parse(&s.start), s.end.as_deref().and_then(parse)) {
        (_, Some(start), Some(end)) => {
            let ms = (end - start).num_milliseconds().max(0) as u64;
            if ms < 1000 {
                format!("{ms} ms")
            } else {
                humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
            }
        }
        (SessionState::Open, ..) => "still open".into(),
        (SessionState::Abandoned, ..) => "ended with a gateway restart".into(),
        _ => "—".into(),
    }
}

fn outcomes(s: &SessionSummary) -> String {
    let mut said = Vec::new();
    if s.denied > 0 {
        said.push(format!("{} denied", s.denied));
    }
    if s.held > 0 {
        said.push(format!("{} held", s.held));
    }
    if said.is_empty() && s.requests > 0 {
        said.push("all allowed".into());
    }
    said.push(
        match s.state {
            SessionState::Ended => "ended",
            SessionState::Open => "open",
            SessionState::Abandoned => "abandoned",
        }
        .into(),
    );
    if s.recorded {
        said.push("recorded".into());
    }
    said.join(", ")
}

async fn show(
    State(web): State<Arc<Web>>,
    RecordedRead(viewer): RecordedRead,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let dir = web.admin.data_dir.clone();
    let wanted = id.clone();
    let timeline = match blocking(&viewer, move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        let recordings = Recordings::open(&dir).map_err(|e| e.to_string())?;
        sessions::timeline(&reader, &recordings, &wanted).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(Some(timeline)) => timeline,
        Ok(None) => return no_session(&id, &viewer),
        Err(r) => return r,
    };
    // The reading is on record before any of it is shown.
    if let Err(why) = record_reading(
        &web.admin,
        &viewer.identity,
        "console",
        "/console/sessions/{id}",
        &id,
        "the web console",
    )
    .await
    {
        return unrecorded(&why, &viewer);
    }
    let s = &timeline.session;
    let start = chrono::DateTime::parse_from_rfc3339(&s.start).ok();
    let offset = |t: &str| -> i64 {
        match (start, chrono::DateTime::parse_from_rfc3339(t).ok()) {
            (Some(start), Some(t)) => (t - start).num_milliseconds().max(0),
            _ => 0,
        }
    };
    let body = html! {
        p.lede { "What was sent and what came back, as the gateway recorded it (masked as the caller received it). Your reading of this session is recorded in the audit log." }
        dl.facts {
            dt { "Session" } dd { code { (s.id) } }
            dt { "Who" } dd { (s.who.as_deref().unwrap_or("—")) }
            dt { "Target" } dd { (s.target.as_deref().unwrap_or("—")) }
            dt { "Started" } dd { (time(&s.start)) }
            dt { "Duration" } dd { (duration(s)) }
            dt { "Requests" } dd { (s.requests) }
            dt { "Outcomes" } dd { (outcomes(s)) }
        }
        p { a data-testid="export" href={ "/console/sessions/" (segment(&s.id)) "/export" } { "Download the evidence bundle" } " (the same file as " code { "portcullis sessions export" } "; check it with " code { "portcullis sessions verify-bundle" } ")." }
        h2 #timeline-title { "Timeline" }
        div.replay #replay-controls hidden {
            button type="button" data-testid="replay" aria-controls="timeline" { "Replay" }
            label for="replay-speed" { "Speed" }
            select #replay-speed {
                option value="0.5" { "half speed" }
                option value="1" selected { "as recorded" }
                option value="2" { "twice as fast" }
                option value="5" { "five times as fast" }
            }
            span.hint { "Pauses longer than a second are shortened to one." }
        }
        p #replay-status role="status" aria-live="polite" {}
        ol.timeline #timeline aria-labelledby="timeline-title" {
            @for entry in &timeline.entries {
                (entry_item(entry, offset(&entry.event.time)))
            }
        }
        script src="/console/static/replay.js" defer {}
    };
    page(
        &format!("Session {}", s.id),
        Some(&viewer),
        Section::Sessions,
        body,
    )
    .into_response()
}

fn entry_item(entry: &Entry, offset_ms: i64) -> Markup {
    let e = &entry.event;
    let what = [e.action.as_deref(), e.resource.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        li data-kind=(e.event_type.as_str()) data-offset=(offset_ms) data-event=(e.id) {
            p.head {
                (time(&e.time)) " "
                strong { (e.event_type.as_str()) }
                @if !what.is_empty() { " " code { (what) } }
                " — " span.outcome { (e.outcome.as_str()) }
                @if let Some(d) = &e.decision { ", decision " strong { (d) } }
                @if let Some(r) = &e.rule { ", rule " q { (r) } }
                @if let Some(ms) = e.duration_ms { ", " (format!("{ms:.0}")) " ms" }
                " " a href={ "/console/audit/" (segment(&e.id)) } { "event" }
            }
            @if let Some(detail) = &e.detail { p.detail { (detail) } }
            @if entry.request.is_some() || entry.answer.is_some() {
                dl.exchange {
                    @if let Some(side) = &entry.request {
                        dt { "Sent" }
                        dd data-side="request" { (recorded(side, entry.records.0.as_ref())) }
                    }
                    @if let Some(side) = &entry.answer {
                        dt { "Returned" }
                        dd data-side="answer" { (recorded(side, entry.records.1.as_ref())) }
                    }
                }
            }
            @if !entry.approval_events.is_empty() {
                ul.approval-events aria-label="Approval" {
                    @for a in &entry.approval_events {
                        li {
                            (time(&a.time)) " " (a.event_type.as_str())
                            @if let Some(who) = &a.identity { " by " (who.display_name.as_deref().unwrap_or(&who.subject)) }
                            @if let Some(why) = &a.reason { ": " q { (why) } }
                        }
                    }
                }
            }
        }
    }
}

/// One recorded side: its parts as recorded, or what is wrong with it.
fn recorded(side: &sessions::Recorded, record: Option<&Record>) -> Markup {
    html! {
        @if let Some(damage) = &side.damage {
            (notice("warning", damage))
        }
        @if let Some(record) = record {
            @for part in record.parts.iter().take(MAX_PARTS) {
                div.part {
                    p.part-kind { (part.kind) " at +" (format!("{:.0}", part.ms)) " ms" }
                    (json_block(&part.body))
                }
            }
            @if record.parts.len() > MAX_PARTS {
                p { (record.parts.len() - MAX_PARTS) " more parts are in the evidence bundle." }
            }
            @for cut in &record.truncated {
                p.hint { "Cut by the recorder's caps at part " (cut.part) ": " (cut.kept) " " (cut.unit) " kept, " (cut.dropped) " dropped." }
            }
            @if record.caller_left { p.hint { "The caller left before the end." } }
        } @else if let Some(summary) = &side.summary {
            p { (summary) }
        }
    }
}

async fn export(
    State(web): State<Arc<Web>>,
    RecordedRead(viewer): RecordedRead,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let dir = web.admin.data_dir.clone();
    let wanted = id.clone();
    let made = match super::page::off_thread(&viewer, "Export failed", move || {
        bundle::export(&dir, &wanted)
    })
    .await
    {
        Ok(made) => made,
        Err(refused) => return refused,
    };
    let bundle = match made {
        Ok((bundle, _)) => bundle,
        Err(bundle::BundleError::NotFound(_)) => return no_session(&id, &viewer),
        Err(e @ bundle::BundleError::NotCovered { .. }) => {
            return problem(
                StatusCode::CONFLICT,
                "Not yet signed",
                &format!(
                    "{e}. The bundle is made only of events a signed checkpoint covers; try again in a moment."
                ),
                Some(&viewer),
            );
        }
        Err(e) => {
            tracing::error!("console: exporting session {id}: {e}");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Export failed",
                &format!("{e}. Nothing was sent."),
                Some(&viewer),
            );
        }
    };
    if let Err(why) = record_reading(
        &web.admin,
        &viewer.identity,
        "console",
        "/console/sessions/{id}/export",
        &id,
        "the web console",
    )
    .await
    {
        return unrecorded(&why, &viewer);
    }
    attachment(
        &format!("session-{}.json", file_part(&id)),
        bundle.to_json(),
    )
}

/// A JSON file to download.
pub(super) fn attachment(name: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The 503 when the audit log cannot record a read: nothing is shown.
pub(super) fn unrecorded(why: &str, viewer: &Viewer) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Audit log unavailable",
        &format!(
            "{why}. Nothing was shown or sent; try again once the gateway's audit log is healthy."
        ),
        Some(viewer),
    )
}

fn no_session(id: &str, viewer: &Viewer) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "No such session",
        &format!(
            "There is no session {id:?} in the audit log. Pick one from the list of sessions."
        ),
        Some(viewer),
    )
}

async fn replay_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        REPLAY_JS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(denied: u64, held: u64, end: Option<&str>, state: SessionState) -> SessionSummary {
        SessionSummary {
            id: "s".into(),
            who: None,
            target: None,
            start: "2026-03-01T12:00:00.000Z".into(),
            end: end.map(str::to_string),
            state,
            requests: 3,
            denied,
            held,
            recorded: true,
            stateless: false,
        }
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_part("0193-ab_c.d"), "0193-ab_c.d");
        assert_eq!(file_part("../a b\"/\r\n"), ".._a_b____");
        assert_eq!(file_part(&"x".repeat(300)).len(), 100);
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_outcome_filter_reads_the_summary() {
        let clean = summary(0, 0, None, SessionState::Open);
        let denied = summary(1, 0, None, SessionState::Open);
        let held = summary(0, 2, None, SessionState::Open);
        assert!(outcome_matches("allowed", &clean) && !outcome_matches("allowed", &denied));
        assert!(outcome_matches("denied", &denied) && !outcome_matches("denied", &held));
        assert!(outcome_matches("held", &held) && !outcome_matches("held", &clean));
        assert_eq!(outcomes(&denied), "1 denied, open, recorded");
        assert_eq!(outcomes(&clean), "all allowed, open, recorded");
    }

    #[test]
    fn durations_say_how_long_or_why_not() {
        let ended = |end| summary(0, 0, Some(end), SessionState::Ended);
        assert_eq!(duration(&ended("2026-03-01T12:00:00.250Z")), "250 ms");
        assert_eq!(duration(&ended("2026-03-01T12:01:05.000Z")), "1m 5s");
        assert_eq!(
            duration(&summary(0, 0, None, SessionState::Open)),
            "still open"
        );
        assert_eq!(
            duration(&summary(0, 0, None, SessionState::Abandoned)),
            "ended with a gateway restart"
        );
    }
}
