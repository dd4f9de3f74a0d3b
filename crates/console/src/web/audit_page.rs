//! The audit log in the console, for auditors: a search (who, target, event type, outcome,
//! rule, time range), one event with its fields, canonical JSON and leaf index, and its
//! inclusion proof to download, the file `portcullis audit proof` writes and
//! `portcullis audit verify-proof` checks against the audit public key alone.
//!
//! Readers are the recording readers ([`crate::sessions::is_reader`]): the log says who did
//! what, and its details are as sensitive as the recordings. A proof leaving through the
//! console is a `console.export` event naming the person, recorded before the file is sent.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use portcullis_audit::proof::{self, ProofError};
use portcullis_audit::{AuditReader, EventQuery};
use portcullis_model::{AuditEvent, EventType, Outcome};
use serde::Deserialize;

use super::Web;
use super::auth::{RecordedRead, Viewer};
use super::page::{Section, page, problem, time};
use super::sessions_page::{
    attachment, bad_filter, blocking, file_part, filter_limit, filter_time, given,
    refuse_non_reader, segment, unrecorded,
};

/// The most events one search shows.
const MAX_EVENTS: usize = 1000;

pub(crate) fn routes() -> Router<Arc<Web>> {
    Router::new()
        .route("/audit", get(search))
        .route("/audit/{event_id}", get(event))
        .route("/audit/{event_id}/proof", get(download_proof))
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    identity: Option<String>,
    target: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    outcome: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

/// The search as the reader asks for it, or the 400 page naming the bad field.
fn event_query(query: &SearchQuery, viewer: &Viewer) -> Result<EventQuery, Response> {
    let mut out = EventQuery {
        identity: given(&query.identity).map(str::to_string),
        target: given(&query.target).map(str::to_string),
        rule: given(&query.rule).map(str::to_string),
        ..Default::default()
    };
    if let Some(t) = given(&query.event_type) {
        let Some(t) = EventType::parse(t) else {
            let all: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(bad_filter(
                "type",
                t,
                &format!("one of {}", all.join(", ")),
                viewer,
            ));
        };
        out.event_type = Some(t.as_str().to_string());
    }
    if let Some(o) = given(&query.outcome) {
        let Some(o) = Outcome::parse(o) else {
            let all: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            return Err(bad_filter(
                "outcome",
                o,
                &format!("one of {}", all.join(", ")),
                viewer,
            ));
        };
        out.outcome = Some(o.as_str().to_string());
    }
    if let Some(since) = given(&query.since) {
        out.since = Some(filter_time(since, "since", viewer)?);
    }
    if let Some(until) = given(&query.until) {
        out.until = Some(filter_time(until, "until", viewer)?);
    }
    out.limit = filter_limit(given(&query.limit), 100, MAX_EVENTS, viewer)?;
    Ok(out)
}

async fn search(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let Ok(Query(query)) = query else {
        return bad_filter(
            "query",
            "",
            "identity, target, type, outcome, rule, since, until and limit",
            &viewer,
        );
    };
    let wanted = match event_query(&query, &viewer) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let limit = wanted.limit;
    let dir = web.admin.data_dir.clone();
    let rows = match blocking(&viewer, move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        let rows = reader.search(&wanted).map_err(|e| e.to_string())?;
        rows.into_iter()
            .map(|(seq, body)| {
                serde_json::from_str::<AuditEvent>(&body)
                    .map(|e| (seq, e))
                    .map_err(|_| {
                        format!(
                            "event {seq} of the log cannot be read; run `portcullis audit verify`"
                        )
                    })
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    {
        Ok(rows) => rows,
        Err(r) => return r,
    };
    let body = html! {
        p.lede { "Every event the gateway recorded, in the order it was written to the log, newest first. The time shown is when the event began: a held request is written when it ends, after its approval, so it can sit above events that began later. An event's page has its canonical JSON and the inclusion proof that shows it is in the signed log." }
        (search_form(&query))
        @if rows.is_empty() {
            p.empty { "No event matches these filters." }
        } @else {
            p { (rows.len()) " event" @if rows.len() != 1 { "s" } " shown" @if rows.len() == limit { " (the newest " (limit) "; narrow the filters or raise the limit to see more)" } "." }
            table.list aria-label="Audit events" {
                thead { tr {
                    th scope="col" { "Time" }
                    th scope="col" { "Type" }
                    th scope="col" { "Identity" }
                    th scope="col" { "Target" }
                    th scope="col" { "Action" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Rule" }
                } }
                tbody {
                    @for (_, e) in &rows {
                        tr data-event=(e.id) {
                            td { a href={ "/console/audit/" (segment(&e.id)) } { (time(&e.time)) } }
                            td { (e.event_type.as_str()) }
                            td { (who(e)) }
                            td { (e.target.as_deref().unwrap_or("—")) }
                            td { (action(e)) }
                            td { (e.outcome.as_str()) }
                            td { (e.rule.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
    };
    page("Audit log", Some(&viewer), Section::Audit, body).into_response()
}

fn search_form(query: &SearchQuery) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters method="get" action="/console/audit" role="search" aria-label="Search the audit log" {
            div { label for="f-identity" { "Identity (subject or name)" } input #f-identity type="text" name="identity" value=(value(&query.identity)); }
            div { label for="f-target" { "Target" } input #f-target type="text" name="target" value=(value(&query.target)); }
            div {
                label for="f-type" { "Event type" }
                select #f-type name="type" {
                    option value="" { "Any" }
                    @for t in EventType::ALL {
                        option value=(t.as_str()) selected[query.event_type.as_deref() == Some(t.as_str())] { (t.as_str()) }
                    }
                }
            }
            div {
                label for="f-outcome" { "Outcome" }
                select #f-outcome name="outcome" {
                    option value="" { "Any" }
                    @for o in Outcome::ALL {
                        option value=(o.as_str()) selected[query.outcome.as_deref() == Some(o.as_str())] { (o.as_str()) }
                    }
                }
            }
            div { label for="f-rule" { "Rule" } input #f-rule type="text" name="rule" value=(value(&query.rule)); }
            div { label for="f-since" { "Since (RFC 3339)" } input #f-since type="text" name="since" placeholder="2026-03-01T00:00:00Z" value=(value(&query.since)); }
            div { label for="f-until" { "Until (RFC 3339)" } input #f-until type="text" name="until" placeholder="2026-03-02T00:00:00Z" value=(value(&query.until)); }
            div { label for="f-limit" { "At most" } input #f-limit type="number" name="limit" min="1" max=(MAX_EVENTS) value=(query.limit.clone().unwrap_or_else(|| "100".into())); }
            div { button type="submit" { "Search" } }
        }
    }
}

fn who(e: &AuditEvent) -> String {
    match &e.identity {
        Some(i) => match &i.display_name {
            Some(name) if name != &i.subject => format!("{name} ({})", i.subject),
            _ => i.subject.clone(),
        },
        None => "—".into(),
    }
}

fn action(e: &AuditEvent) -> String {
    let said: Vec<&str> = [e.action.as_deref(), e.resource.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if said.is_empty() {
        "—".into()
    } else {
        said.join(" ")
    }
}

async fn event(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Path(event_id): Path<String>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let dir = web.admin.data_dir.clone();
    let wanted = event_id.clone();
    let found = match blocking(&viewer, move || {
        let reader = AuditReader::open(&dir).map_err(|e| e.to_string())?;
        reader.by_id(&wanted).map_err(|e| e.to_string())
    })
    .await
    {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Some((seq, body)) = found else {
        return no_event(&event_id, &viewer);
    };
    let Ok(e) = serde_json::from_str::<AuditEvent>(&body) else {
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unreadable event",
            &format!(
                "Event {seq} of the log cannot be read. Run `portcullis audit verify` on the gateway's data directory."
            ),
            Some(&viewer),
        );
    };
    let session_link = e
        .session
        .clone()
        .or_else(|| (e.event_type == EventType::Request).then(|| e.id.clone()));
    let page_body = html! {
        dl.facts {
            dt { "Event" } dd { code { (e.id) } }
            dt { "Leaf index" } dd data-testid="leaf-index" { (seq - 1) }
            dt { "Time" } dd { (time(&e.time)) }
            dt { "Type" } dd { (e.event_type.as_str()) }
            dt { "Outcome" } dd { (e.outcome.as_str()) }
            dt { "Gateway" } dd { (e.gateway) }
            dt { "Identity" } dd { (who(&e)) }
            @if let Some(i) = &e.identity {
                dt { "Groups" } dd { (i.groups.join(", ")) }
            }
            dt { "Target" } dd { (e.target.as_deref().unwrap_or("—")) }
            dt { "Action" } dd { (action(&e)) }
            @if let Some(d) = &e.decision { dt { "Decision" } dd { (d) } }
            @if let Some(r) = &e.rule { dt { "Rule" } dd { (r) } }
            @if let Some(r) = &e.reason { dt { "Reason" } dd { (r) } }
            @if let Some(d) = &e.detail { dt { "Detail" } dd { (d) } }
            @if let Some(s) = &session_link {
                dt { "Session" } dd { a href={ "/console/sessions/" (segment(s)) } { (s) } }
            }
            @if let Some(a) = &e.approval { dt { "Approval" } dd { a href={ "/console/approvals/" (segment(a)) } { (a) } } }
        }
        p {
            a data-testid="proof" href={ "/console/audit/" (segment(&e.id)) "/proof" } { "Download the inclusion proof" }
            " — check it anywhere with " code { "portcullis audit verify-proof FILE --pubkey audit.pub" } ". The download is recorded in the audit log."
        }
        h2 { "Canonical JSON" }
        p.hint { "The bytes hashed into the log (RFC 8785), as stored." }
        pre.json data-testid="canonical" { (body) }
    };
    page(
        &format!("Event {}", e.id),
        Some(&viewer),
        Section::Audit,
        page_body,
    )
    .into_response()
}

async fn download_proof(
    State(web): State<Arc<Web>>,
    RecordedRead(viewer): RecordedRead,
    Path(event_id): Path<String>,
) -> Response {
    if let Some(refused) = refuse_non_reader(&web, &viewer) {
        return refused;
    }
    let dir = web.admin.data_dir.clone();
    let wanted = event_id.clone();
    let built = match super::page::off_thread(&viewer, "Proof failed", move || {
        proof::build_proof(&dir, &wanted)
    })
    .await
    {
        Ok(built) => built,
        Err(refused) => return refused,
    };
    let made = match built {
        Ok(made) => made,
        Err(ProofError::NotFound(_)) => return no_event(&event_id, &viewer),
        Err(e @ ProofError::NotCovered { .. }) => {
            return problem(
                StatusCode::CONFLICT,
                "Not yet signed",
                &format!("{e}."),
                Some(&viewer),
            );
        }
        Err(e) => {
            tracing::error!("console: proof of event {event_id}: {e}");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Proof failed",
                &format!("{e}. Nothing was sent."),
                Some(&viewer),
            );
        }
    };
    let audit = &web.admin.audit;
    let mut ev = audit.event(EventType::ConsoleExport, Outcome::Info);
    ev.identity = Some(viewer.identity.clone());
    ev.target = Some("console".into());
    ev.action = Some("GET /console/audit/{event_id}/proof".into());
    ev.resource = Some(event_id.clone());
    ev.detail = Some(format!("inclusion proof of event {event_id} downloaded"));
    if let Err(e) = audit.record(ev).await {
        return unrecorded(
            &format!("the audit log cannot record this download: {e}"),
            &viewer,
        );
    }
    attachment(
        &format!("proof-{}.json", file_part(&event_id)),
        made.to_json(),
    )
}

fn no_event(id: &str, viewer: &Viewer) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "No such event",
        &format!("There is no event {id:?} in the audit log. Search the log for the one you want."),
        Some(viewer),
    )
}
