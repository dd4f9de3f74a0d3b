//! `portcullis sessions replay`: a session played back in the terminal with its timing.
//!
//! For each request: who, what was sent (pretty JSON, or SQL text and its parameters), the
//! decision and any approval, then what came back part by part at its offset (progress,
//! rows as a table, result text). Waits between requests and between parts follow the
//! recording, scaled by `--speed` and capped so an idle hour does not stall the replay. A
//! recorded side that cannot be read is shown as damage where it would have been, counted,
//! and the command ends non-zero; nothing stops the replay half way.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use portcullis_audit::AuditReader;
use portcullis_audit::recordings::Recordings;
use portcullis_audit::sessions::{self, Recorded};
use portcullis_recording::document::{Part, Record};
use serde_json::Value;

use super::{approval_step, name_of, short_time, what};
use crate::admin_cli::table::table;
use crate::admin_cli::terminal::{clean, clean_line};

/// The longest wait between two steps, however long the session was idle.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// The most rows of one statement printed as a table; the rest are counted.
const MAX_TABLE_ROWS: usize = 200;

/// Replays session `id`; returns how many recorded sides could not be read.
pub(super) fn replay(
    dir: &Path,
    id: &str,
    speed: f64,
    identities: Option<portcullis_recording::segment::Identities>,
) -> Result<usize> {
    let reader = AuditReader::open(dir)?;
    let mut recordings = Recordings::open(dir)?;
    if let Some(identities) = identities {
        recordings = recordings.with_identities(identities);
    }
    let Some(events) = sessions::own_events(&reader, id)? else {
        anyhow::bail!("no session {} in {}", clean_line(id), dir.display());
    };
    let summary = sessions::summarize(id, &events, reader.last_of_type("gateway.start")?);
    let removals = sessions::removals(&reader, &events)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "replaying session {} of {} on {} ({} request(s)), speed {}",
        clean_line(id),
        clean_line(summary.who.as_deref().unwrap_or("-")),
        clean_line(summary.target.as_deref().unwrap_or("-")),
        summary.requests,
        if speed == 0.0 {
            "unlimited".to_string()
        } else {
            format!("{speed}x")
        }
    )?;
    let mut damaged = 0;
    let mut previous: Option<DateTime<Utc>> = None;
    for (seq, event) in &events {
        let at = parse_time(&event.time);
        if let (Some(prev), Some(at)) = (previous, at) {
            wait((at - prev).to_std().unwrap_or_default(), speed);
        }
        previous = at.or(previous);
        writeln!(out)?;
        writeln!(
            out,
            "[{}] #{} {} {}",
            short_time(&event.time),
            seq,
            name_of(&event.event_type),
            clean_line(&what(event))
        )?;
        if let Some(identity) = &event.identity {
            writeln!(
                out,
                "  who: {} ({})",
                clean_line(
                    identity
                        .display_name
                        .as_deref()
                        .unwrap_or(&identity.subject)
                ),
                clean_line(&identity.issuer)
            )?;
        }
        let refs = event.recorded.clone();
        let request = sessions::side(
            &recordings,
            *seq,
            refs.as_ref().and_then(|r| r.request.as_deref()),
            &removals,
        )?;
        if let Some((side, record)) = &request {
            writeln!(out, "  sent:")?;
            match record {
                Some(record) => show_parts(&mut out, record, 0.0)?,
                None => {
                    damaged += 1;
                    writeln!(out, "    {}", damage("request", side))?;
                }
            }
        }
        if let Some(decision) = &event.decision {
            writeln!(
                out,
                "  decision: {}{}",
                clean_line(decision),
                event
                    .rule
                    .as_deref()
                    .map(|r| format!(" (rule {:?})", clean_line(r)))
                    .unwrap_or_default()
            )?;
        }
        if let Some(approval) = &event.approval {
            writeln!(out, "  approval {}:", clean_line(approval))?;
            for (_, step) in sessions::approval_events_of(&reader, approval, *seq, &event.time)? {
                writeln!(out, "    {}", approval_step(&step))?;
            }
        }
        let answer = sessions::side(
            &recordings,
            *seq,
            refs.as_ref().and_then(|r| r.answer.as_deref()),
            &removals,
        )?;
        if let Some((side, record)) = &answer {
            writeln!(out, "  came back:")?;
            match record {
                Some(record) => show_parts(&mut out, record, speed)?,
                None => {
                    damaged += 1;
                    writeln!(out, "    {}", damage("answer", side))?;
                }
            }
        }
        if event.event_type == portcullis_model::EventType::Request {
            writeln!(
                out,
                "  outcome: {}{}",
                name_of(&event.outcome),
                event
                    .duration_ms
                    .map(|ms| format!(" in {ms:.1} ms"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(detail) = &event.detail {
            writeln!(out, "  detail: {}", clean_line(detail))?;
        }
        out.flush()?;
    }
    Ok(damaged)
}

/// The damage line: `[recording of the answer: chunk <id> was altered]`.
fn damage(which: &str, side: &Recorded) -> String {
    format!(
        "[recording of the {which}: {}]",
        clean_line(side.damage.as_deref().unwrap_or("unreadable"))
    )
}

fn parse_time(time: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn wait(gap: Duration, speed: f64) {
    if speed == 0.0 {
        return;
    }
    // Offsets come from the recording and the speed from the user: whatever they are
    // (infinite, absurdly large), the wait is at most MAX_WAIT and never a panic.
    let scaled = Duration::try_from_secs_f64(gap.as_secs_f64() / speed)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT);
    if !scaled.is_zero() {
        std::thread::sleep(scaled);
    }
}

/// A record's parts in order, each at its offset; runs of rows as one table. With a speed,
/// waits out the offsets between parts (the request side is shown at once).
fn show_parts(out: &mut impl std::io::Write, record: &Record, speed: f64) -> Result<()> {
    let mut columns: Option<Vec<String>> = None;
    let mut i = 0;
    let mut last_ms = 0.0;
    while i < record.parts.len() {
        let part = &record.parts[i];
        if speed > 0.0 && part.ms > last_ms {
            let gap = Duration::try_from_secs_f64((part.ms - last_ms) / 1000.0).unwrap_or(MAX_WAIT);
            wait(gap, speed);
        }
        if part.ms.is_finite() {
            last_ms = last_ms.max(part.ms);
        }
        if let Some(cut) = record.truncated.iter().find(|t| t.part == i) {
            writeln!(
                out,
                "    [truncated here: {} {} kept, {} dropped]",
                cut.kept,
                clean_line(&cut.unit),
                cut.dropped
            )?;
        }
        if part.kind == "row" {
            let run: Vec<&Part> = record.parts[i..]
                .iter()
                .take_while(|p| p.kind == "row")
                .collect();
            writeln!(out, "    +{} {} row(s)", offset(part.ms), run.len())?;
            write_rows(out, columns.as_deref(), &run)?;
            i += run.len();
            continue;
        }
        if part.kind == "columns" {
            columns = column_names(&part.body);
        }
        writeln!(out, "    +{} {}", offset(part.ms), clean_line(&part.kind))?;
        for line in body_text(&part.body).lines() {
            writeln!(out, "      {}", clean(line))?;
        }
        i += 1;
    }
    if let Some(cut) = record
        .truncated
        .iter()
        .find(|t| t.part >= record.parts.len())
    {
        writeln!(
            out,
            "    [truncated at the end: {} {} kept, {} dropped]",
            cut.kept,
            clean_line(&cut.unit),
            cut.dropped
        )?;
    }
    if record.caller_left {
        writeln!(out, "    [the caller left before the answer was complete]")?;
    }
    Ok(())
}

fn offset(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// A part's body as text: a string as it is (SQL, a result's text), anything else as pretty
/// JSON (whose strings carry control characters as escapes).
fn body_text(body: &Value) -> String {
    match body {
        Value::String(s) => s.clone(),
        Value::Object(map) if map.len() == 1 && map.get("text").is_some_and(Value::is_string) => {
            map["text"].as_str().unwrap_or_default().to_string()
        }
        // An MCP tool result: its text content as text, the rest (images, structured
        // content, isError) as JSON after it.
        Value::Object(map) if map.get("content").is_some_and(Value::is_array) => {
            let mut text = Vec::new();
            let mut rest = map.clone();
            let mut others = Vec::new();
            for item in map["content"].as_array().into_iter().flatten() {
                match item.get("text").and_then(Value::as_str) {
                    Some(t) if item.get("type").and_then(Value::as_str) == Some("text") => {
                        text.push(t.to_string())
                    }
                    _ => others.push(item.clone()),
                }
            }
            if others.is_empty() {
                rest.remove("content");
            } else {
                rest.insert("content".into(), Value::Array(others));
            }
            if !rest.is_empty() {
                text.push(serde_json::to_string_pretty(&Value::Object(rest)).unwrap_or_default());
            }
            text.join("\n")
        }
        other => serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string()),
    }
}

/// Column names from a `columns` part: a list of names, or of objects with a `name`.
fn column_names(body: &Value) -> Option<Vec<String>> {
    let list = match body {
        Value::Array(list) => list,
        Value::Object(map) => map.get("columns")?.as_array()?,
        _ => return None,
    };
    Some(
        list.iter()
            .map(|c| match c {
                Value::String(s) => s.clone(),
                other => other
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            })
            .collect(),
    )
}

fn write_rows(
    out: &mut impl std::io::Write,
    columns: Option<&[String]>,
    rows: &[&Part],
) -> Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .take(MAX_TABLE_ROWS)
        .map(|row| match &row.body {
            Value::Array(values) => values.iter().map(cell).collect(),
            Value::Object(map) => map.values().map(cell).collect(),
            other => vec![cell(other)],
        })
        .collect();
    let width = cells.iter().map(Vec::len).max().unwrap_or(0);
    let headers: Vec<String> = match columns {
        Some(names) if names.len() >= width => names.iter().map(|n| clean_line(n)).collect(),
        _ => match rows.first().map(|r| &r.body) {
            Some(Value::Object(map)) => map.keys().map(|k| clean_line(k)).collect(),
            _ => (1..=width).map(|i| format!("#{i}")).collect(),
        },
    };
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    for line in table(&headers, &cells).lines() {
        writeln!(out, "      {line}")?;
    }
    if rows.len() > MAX_TABLE_ROWS {
        writeln!(
            out,
            "      ... and {} more row(s)",
            rows.len() - MAX_TABLE_ROWS
        )?;
    }
    Ok(())
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => clean_line(s),
        Value::Null => "NULL".into(),
        other => clean_line(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_offsets_and_speeds_do_not_panic() {
        let mut record = Record::new("2026-03-01T12:00:00.000Z".into());
        for ms in [f64::INFINITY, f64::NAN, -5.0, 1e300] {
            record.parts.push(Part {
                ms,
                kind: "progress".into(),
                body: serde_json::json!({"p": 1}),
            });
        }
        let mut out = Vec::new();
        // With no waiting, the offsets are only printed.
        show_parts(&mut out, &record, 0.0).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("progress"));
        // A tiny speed would make any gap overflow a Duration: capped instead.
        let started = std::time::Instant::now();
        wait(Duration::from_nanos(1), 1e-300);
        assert!(started.elapsed() <= MAX_WAIT + Duration::from_secs(1));
    }
}
