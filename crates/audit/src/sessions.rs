//! Sessions read back from the log, for `portcullis sessions` and the admin API: which
//! sessions there were, and one session's timeline with its recorded requests and answers.
//!
//! A session is the events sharing a `session` id (an MCP session, a PostgreSQL
//! connection); a request outside any session (stateless MCP) is a session of its own, named
//! by its event's id. Everything here reads; nothing decides who may read (the callers do,
//! and record that they did).

use std::collections::{HashMap, HashSet};

use portcullis_model::{AuditEvent, EventType, Outcome};
use portcullis_recording::document::Record;
use portcullis_recording::{ChunkError, ChunkId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recordings::{RecordingError, Recordings};
use crate::{AuditError, AuditReader};

/// Without `since`, a listing looks at this many of the newest events: a bound on the scan
/// of a log that grows forever. Older sessions are found with `since`.
pub const DEFAULT_SCAN: u64 = 1_000_000;

/// The most a recorded side is inflated to when it is read back (the recorder's caps keep
/// real ones far below; a crafted chunk cannot make a reader allocate more).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// How far before a held request's event its approval's events are looked for: they are
/// made after it, but appended in their own order.
const APPROVAL_LOOKBACK_SECS: i64 = 60;
/// How many events after a request its approval's late events (notifications) are looked
/// for.
const APPROVAL_LOOKAHEAD: u64 = 10_000;

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// The caller's subject.
    pub who: Option<String>,
    pub target: Option<String>,
    /// RFC 3339 times (UTC, as events write them): sessions active at or after `since` and
    /// started before `until`.
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: usize,
}

/// How a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// It ended (a `session.end`, or a request outside any session).
    Ended,
    /// No end yet, and the gateway that has it has not restarted since: still running.
    Open,
    /// No end, and the gateway started again since: it died with the session open.
    Abandoned,
}

/// One session, as `sessions list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    /// The caller's subject.
    pub who: Option<String>,
    pub target: Option<String>,
    pub start: String,
    /// When it ended, if it did.
    pub end: Option<String>,
    pub state: SessionState,
    pub requests: u64,
    pub denied: u64,
    pub held: u64,
    /// Whether any of its requests was recorded.
    pub recorded: bool,
    /// A request outside any session: `id` is its event's id.
    pub stateless: bool,
}

/// The sessions matching `filter`, newest activity first.
pub fn list(
    reader: &AuditReader,
    filter: &SessionFilter,
) -> Result<Vec<SessionSummary>, AuditError> {
    let count = reader.count()?;
    let first = match &filter.since {
        Some(since) => reader.first_seq_at(since)?,
        None => count.saturating_sub(DEFAULT_SCAN) + 1,
    };
    let last = match &filter.until {
        Some(until) => reader.first_seq_at(until)?.saturating_sub(1),
        None => count,
    };
    if first > last {
        return Ok(Vec::new());
    }
    let ids = reader.sessions_in(
        (first, last),
        filter.who.as_deref(),
        filter.target.as_deref(),
        filter.limit.max(1),
    )?;
    let restarted = reader.last_of_type("gateway.start")?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(events) = own_events(reader, &id)? {
            out.push(summarize(&id, &events, restarted));
        }
    }
    Ok(out)
}

/// The events of session `id` (or the one stateless request with that event id), parsed,
/// in order; `None` if there is no such session.
pub fn own_events(
    reader: &AuditReader,
    id: &str,
) -> Result<Option<Vec<(u64, AuditEvent)>>, AuditError> {
    let mut rows = reader.session(id)?;
    if rows.is_empty() {
        match reader.by_id(id)? {
            Some((seq, body)) => rows.push((seq, body)),
            None => return Ok(None),
        }
    }
    let mut events = Vec::with_capacity(rows.len());
    for (seq, body) in rows {
        events.push((seq, parse(reader, seq, &body)?));
    }
    // An event id that is not a request (a gateway.start) names no session.
    if events.len() == 1
        && events[0].1.session.is_none()
        && events[0].1.event_type != EventType::Request
    {
        return Ok(None);
    }
    Ok(Some(events))
}

fn parse(reader: &AuditReader, seq: u64, body: &str) -> Result<AuditEvent, AuditError> {
    serde_json::from_str(body).map_err(|_| AuditError::Corrupt {
        path: reader.path().to_path_buf(),
        seq,
    })
}

/// When a request ended: its time (when it was read) plus its duration, as events write
/// times; its time alone if either cannot be read.
fn request_end(event: &AuditEvent) -> String {
    let start = chrono::DateTime::parse_from_rfc3339(&event.time);
    match (start, event.duration_ms) {
        (Ok(start), Some(ms)) if ms.is_finite() && (0.0..1e12).contains(&ms) => (start
            .with_timezone(&chrono::Utc)
            + chrono::Duration::microseconds((ms * 1000.0) as i64))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        _ => event.time.clone(),
    }
}

/// The summary of one session's events; `restarted` is the newest `gateway.start`.
pub fn summarize(id: &str, events: &[(u64, AuditEvent)], restarted: Option<u64>) -> SessionSummary {
    let stateless = events.len() == 1 && events[0].1.session.is_none();
    let requests: Vec<&AuditEvent> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.event_type == EventType::Request)
        .collect();
    let first = events.first().map(|(_, e)| e);
    let who = events
        .iter()
        .find_map(|(_, e)| e.identity.as_ref().map(|i| i.subject.clone()));
    let target = events.iter().find_map(|(_, e)| e.target.clone());
    let last_seq = events.last().map(|(s, _)| *s).unwrap_or(0);
    let ended = events
        .iter()
        .rev()
        .find(|(_, e)| e.event_type == EventType::SessionEnd)
        .map(|(_, e)| e.time.clone());
    let (end, state) = match ended {
        Some(end) => (Some(end), SessionState::Ended),
        None if stateless => (first.map(request_end), SessionState::Ended),
        None if restarted.is_some_and(|start| start > last_seq) => (None, SessionState::Abandoned),
        None => (None, SessionState::Open),
    };
    SessionSummary {
        id: id.to_string(),
        who,
        target,
        start: first.map(|e| e.time.clone()).unwrap_or_default(),
        end,
        state,
        requests: requests.len() as u64,
        denied: requests
            .iter()
            .filter(|e| e.outcome == Outcome::Denied)
            .count() as u64,
        held: requests
            .iter()
            .filter(|e| e.decision.as_deref() == Some("hold"))
            .count() as u64,
        recorded: requests.iter().any(|e| e.recorded.is_some()),
        stateless,
    }
}

/// One session's timeline: its events in order, each request with its approval's events and
/// a summary of what was recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub session: SessionSummary,
    pub entries: Vec<Entry>,
}

/// One event of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub event: AuditEvent,
    /// The `approval.*` events of the approval this request went through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approval_events: Vec<AuditEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Recorded>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<Recorded>,
    /// The recorded request and answer themselves, when they could be read (for a page that
    /// shows them; the JSON timeline carries the summaries above only).
    #[serde(skip)]
    pub records: (Option<Record>, Option<Record>),
}

/// One recorded side of a request, summarized, or why it cannot be read.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub chunk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// What is wrong with it: altered, missing, unreadable, or removed by retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
    /// Retention removed it on purpose (the `recording.removed` event at this seq says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_by: Option<u64>,
}

/// The timeline of session `id`; `None` if there is no such session.
pub fn timeline(
    reader: &AuditReader,
    recordings: &Recordings,
    id: &str,
) -> Result<Option<Timeline>, AuditError> {
    let Some(events) = own_events(reader, id)? else {
        return Ok(None);
    };
    let restarted = reader.last_of_type("gateway.start")?;
    let session = summarize(id, &events, restarted);
    let removals = removals(reader, &events)?;
    let mut entries = Vec::with_capacity(events.len());
    for (seq, event) in events {
        let approval_events = match &event.approval {
            Some(approval) => approval_events_of(reader, approval, seq, &event.time)?
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
            None => Vec::new(),
        };
        let (request, answer) = match &event.recorded {
            Some(refs) => (
                side(recordings, seq, refs.request.as_deref(), &removals)?,
                side(recordings, seq, refs.answer.as_deref(), &removals)?,
            ),
            None => (None, None),
        };
        let (request, request_record) = request.map_or((None, None), |(r, rec)| (Some(r), rec));
        let (answer, answer_record) = answer.map_or((None, None), |(r, rec)| (Some(r), rec));
        entries.push(Entry {
            seq,
            event,
            approval_events,
            request,
            answer,
            records: (request_record, answer_record),
        });
    }
    Ok(Some(Timeline { session, entries }))
}

/// The `approval.*` events about `approval`, for the request event at `seq` made at `time`.
pub fn approval_events_of(
    reader: &AuditReader,
    approval: &str,
    seq: u64,
    time: &str,
) -> Result<Vec<(u64, AuditEvent)>, AuditError> {
    let from = chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| {
            (t.with_timezone(&chrono::Utc) - chrono::Duration::seconds(APPROVAL_LOOKBACK_SECS))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_default();
    let first = if from.is_empty() {
        seq.saturating_sub(APPROVAL_LOOKAHEAD).max(1)
    } else {
        reader.first_seq_at(&from)?
    };
    let rows = reader.approval_events(approval, (first, seq.saturating_add(APPROVAL_LOOKAHEAD)))?;
    rows.into_iter()
        .map(|(seq, body)| Ok((seq, parse(reader, seq, &body)?)))
        .collect()
}

/// One recorded side, read and summarized: with its record when it could be read.
/// `removals` are the session's chunks that retention removed ([`removals`]); `seq` is the
/// event naming the chunk (a sealed one is looked up by it, not by a scan of the log).
pub fn side(
    recordings: &Recordings,
    seq: u64,
    chunk: Option<&str>,
    removals: &HashMap<String, u64>,
) -> Result<Option<(Recorded, Option<Record>)>, AuditError> {
    let Some(chunk) = chunk else {
        return Ok(None);
    };
    let mut recorded = Recorded {
        chunk: chunk.to_string(),
        summary: None,
        damage: None,
        removed_by: None,
    };
    match read_record(recordings, seq, chunk) {
        Ok(record) => {
            recorded.summary = Some(summary(&record));
            Ok(Some((recorded, Some(record))))
        }
        Err(Damage::Audit(e)) => Err(e),
        Err(Damage::Missing(why)) => {
            recorded.removed_by = removals.get(chunk).copied();
            recorded.damage = Some(match recorded.removed_by {
                Some(by) => format!("chunk {chunk} was removed by retention (event {by})"),
                None => why,
            });
            Ok(Some((recorded, None)))
        }
        Err(Damage::Other(why)) => {
            recorded.damage = Some(why);
            Ok(Some((recorded, None)))
        }
    }
}

/// The chunks named by `events` that are not stored and that a `recording.removed` event
/// after them names, with that event's seq. One pass over the removal events, only when a
/// chunk is missing: a pruned session costs one scan, not one per chunk.
pub fn removals(
    reader: &AuditReader,
    events: &[(u64, AuditEvent)],
) -> Result<HashMap<String, u64>, AuditError> {
    let mut missing = HashSet::new();
    for (seq, event) in events {
        if let Some(refs) = &event.recorded {
            for chunk in [&refs.request, &refs.answer].into_iter().flatten() {
                if !reader.has_chunk(*seq, chunk)? {
                    missing.insert(chunk.clone());
                }
            }
        }
    }
    let mut found = HashMap::new();
    let Some(first) = events.first().map(|(seq, _)| *seq) else {
        return Ok(found);
    };
    let mut after = first;
    while found.len() < missing.len() {
        let batch = reader.of_type_in("recording.removed", (after + 1, u64::MAX), 100)?;
        let Some((last, _)) = batch.last() else {
            break;
        };
        after = *last;
        for (seq, body) in batch {
            let event = parse(reader, seq, &body)?;
            for chunk in event.removed.map(|r| r.chunks).unwrap_or_default() {
                if missing.contains(&chunk) {
                    found.entry(chunk).or_insert(seq);
                }
            }
        }
    }
    Ok(found)
}

/// Why a recorded side cannot be shown.
enum Damage {
    /// Not there: deleted, or removed by retention.
    Missing(String),
    /// There, but not what the log names: altered, corrupt, not a record, a bad id.
    Other(String),
    Audit(AuditError),
}

fn read_record(recordings: &Recordings, seq: u64, chunk: &str) -> Result<Record, Damage> {
    let id = ChunkId::parse(chunk).map_err(|e| Damage::Other(e.to_string()))?;
    let stored = match recordings.get_at(seq, &id) {
        Ok(stored) => stored,
        Err(RecordingError::Chunk(e @ ChunkError::Missing(_))) => {
            return Err(Damage::Missing(e.to_string()));
        }
        Err(RecordingError::Chunk(ChunkError::Altered { id, .. })) => {
            return Err(Damage::Other(format!("chunk {id} was altered")));
        }
        Err(RecordingError::Chunk(e)) => return Err(Damage::Other(e.to_string())),
        Err(RecordingError::Audit(e)) => return Err(Damage::Audit(e)),
        // Sealed to the auditors and no key given, or a segment that cannot be opened:
        // shown in place of the content, like damage, with what to do about it.
        Err(e @ (RecordingError::Encrypted(..) | RecordingError::Segment { .. })) => {
            return Err(Damage::Other(e.to_string()));
        }
    };
    let content = stored
        .content(MAX_RECORD_BYTES)
        .map_err(|e| Damage::Other(e.to_string()))?;
    Record::parse(&content).map_err(|why| Damage::Other(format!("chunk {id}: {why}")))
}

/// A record in one line: what was sent (the tool and a preview of its arguments, the SQL
/// text), or what came back (how many of each kind of part, what the caps cut, whether the
/// caller left). Raw text: the caller escapes it for wherever it is shown.
pub fn summary(record: &Record) -> String {
    let mut counts: Vec<(String, usize, usize)> = Vec::new();
    let mut said = Vec::new();
    for part in &record.parts {
        let bytes = part.body.to_string().len();
        match counts.iter_mut().find(|(k, _, _)| *k == part.kind) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => counts.push((part.kind.clone(), 1, bytes)),
        }
        if said.len() < 2 && matches!(part.kind.as_str(), "request" | "query" | "parse") {
            said.push(preview(&part.body, 100));
        }
    }
    let mut out: Vec<String> = said;
    if out.is_empty() || counts.len() > 1 {
        out.push(
            counts
                .iter()
                .map(|(kind, n, bytes)| match n {
                    1 => format!("{kind} ({bytes} bytes)"),
                    n if kind.ends_with('s') => format!("{n} {kind} parts"),
                    n => format!("{n} {kind}s"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    for cut in &record.truncated {
        out.push(format!(
            "truncated at part {}: {} {} kept, {} dropped",
            cut.part, cut.kept, cut.unit, cut.dropped
        ));
    }
    if record.caller_left {
        out.push("the caller left before the end".into());
    }
    out.join("; ")
}

/// What a part's body says in a few words: a tool or method and its arguments, a SQL text.
pub fn preview(body: &Value, max: usize) -> String {
    let text = match body {
        Value::String(s) => s.clone(),
        // A JSON-RPC request as forwarded: what it calls is in its params.
        Value::Object(map)
            if map
                .get("params")
                .and_then(|p| p.get("name").or_else(|| p.get("uri")))
                .is_some_and(Value::is_string) =>
        {
            return preview(&map["params"], max);
        }
        Value::Object(map) => {
            let name = ["name", "method", "uri", "sql", "query"]
                .iter()
                .find_map(|k| map.get(*k).and_then(Value::as_str));
            let rest = ["arguments", "params", "parameters"]
                .iter()
                .find_map(|k| map.get(*k));
            match (name, rest) {
                (Some(name), Some(rest)) => format!("{name} {rest}"),
                (Some(name), None) => name.to_string(),
                _ => body.to_string(),
            }
        }
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use portcullis_model::RecordedRef;
    use portcullis_recording::document::{Part, Truncation};

    use super::*;

    fn event(seq: u64, ty: EventType, session: Option<&str>) -> (u64, AuditEvent) {
        let mut e: AuditEvent = serde_json::from_value(serde_json::json!({
            "id": format!("ev-{seq}"),
            "time": format!("2026-03-01T12:00:{seq:02}.000Z"),
            "gateway": "gw",
            "type": ty,
            "outcome": if ty == EventType::Request { "success" } else { "info" },
        }))
        .unwrap();
        e.session = session.map(str::to_string);
        (seq, e)
    }

    #[test]
    fn a_request_outside_any_session_ends_after_its_duration() {
        let mut request = event(1, EventType::Request, None).1;
        request.duration_ms = Some(4516.6);
        assert_eq!(request_end(&request), "2026-03-01T12:00:05.516Z");
        request.duration_ms = Some(f64::NAN);
        assert_eq!(request_end(&request), request.time);
    }

    #[test]
    fn a_session_is_ended_open_or_abandoned() {
        let start = event(1, EventType::SessionStart, Some("s"));
        let mut held = event(2, EventType::Request, Some("s"));
        held.1.decision = Some("hold".into());
        held.1.recorded = Some(RecordedRef {
            request: Some("a".repeat(64)),
            answer: None,
            sealed: false,
        });
        let mut denied = event(3, EventType::Request, Some("s"));
        denied.1.outcome = Outcome::Denied;
        let end = event(4, EventType::SessionEnd, Some("s"));

        let ended = summarize(
            "s",
            &[start.clone(), held.clone(), denied.clone(), end],
            None,
        );
        assert_eq!(ended.state, SessionState::Ended);
        assert_eq!(ended.end.as_deref(), Some("2026-03-01T12:00:04.000Z"));
        assert_eq!((ended.requests, ended.denied, ended.held), (2, 1, 1));
        assert!(ended.recorded && !ended.stateless);

        let running = [start, held, denied];
        assert_eq!(summarize("s", &running, Some(1)).state, SessionState::Open);
        assert_eq!(
            summarize("s", &running, Some(9)).state,
            SessionState::Abandoned
        );

        let alone = summarize("ev-7", &[event(7, EventType::Request, None)], Some(9));
        assert_eq!(alone.state, SessionState::Ended);
        assert!(alone.stateless && !alone.recorded);
    }

    #[test]
    fn a_summary_names_the_call_the_parts_the_cuts_and_a_caller_who_left() {
        let mut sent = Record::new("2026-03-01T12:00:00.000Z".into());
        sent.parts.push(Part {
            ms: 0.0,
            kind: "request".into(),
            body: serde_json::json!({"name": "get_invoice", "arguments": {"id": 42}}),
        });
        assert_eq!(summary(&sent), "get_invoice {\"id\":42}");

        let mut answer = Record::new("2026-03-01T12:00:00.000Z".into());
        for i in 0..3 {
            answer.parts.push(Part {
                ms: f64::from(i),
                kind: "row".into(),
                body: serde_json::json!([i]),
            });
        }
        answer.truncated.push(Truncation {
            part: 3,
            unit: "rows".into(),
            kept: 3,
            dropped: 5,
        });
        answer.caller_left = true;
        assert_eq!(
            summary(&answer),
            "3 rows; truncated at part 3: 3 rows kept, 5 dropped; the caller left before the end"
        );
        let rpc = serde_json::json!({"method": "tools/call", "params": {"name": "refund", "arguments": {"amount": 5}}});
        assert_eq!(preview(&rpc, 100), "refund {\"amount\":5}");
        let long = preview(&serde_json::json!("SELECT\n".repeat(40)), 20);
        assert_eq!(long.chars().count(), 20);
        assert!(long.ends_with('…') && !long.contains('\n'));
    }
}
