//! `portcullis audit verify-export`: checks a copy of the stream taken back out of a SIEM
//! against the signed checkpoints it carries. No gap, no edit, no reordering.
//!
//! Every line is searched for the native record (see [`crate::record`]) wherever the format
//! put it: the line itself (file, NATS, the `json` preset), `event` (Splunk HEC), `portcullis`
//! (an Elasticsearch document, also inside `_source` in an export), a JSON string (an OTLP
//! body), or the message after a syslog header. Lines without one are counted and
//! otherwise ignored (a receiver's own messages).
//!
//! Then, per origin (each gateway's log on its own):
//! - **edit**: each event's canonical JSON is hashed again; it must match the leaf hash it
//!   carries, and the checkpoints' roots over those hashes;
//! - **gap**: every leaf from 0 up to the highest one seen must be present (in full, or as
//!   an omitted hash when the sink's filter left it out);
//! - **reordering**: the leaf index is part of each record and the checkpoint roots fix the
//!   order of the leaves, so an event moved to another position fails the root. The lines
//!   themselves may come in any order (a SIEM's export sorts as it likes) and twice (at least
//!   once delivery); a leaf seen twice with different contents is an error;
//! - every checkpoint's signature must verify with one of the given keys, for its origin.
//!
//! Events after the last checkpoint are reported as not yet covered: nothing signed speaks
//! for them yet.

use std::collections::BTreeMap;
use std::io::BufRead;

use portcullis_audit::checkpoint::{Checkpoint, Verifier};
use portcullis_audit::merkle::{self, Frontier, Hash};
use serde::Serialize;
use serde_json::Value;

/// What a valid export holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub lines: u64,
    /// Lines that carry no record.
    pub ignored_lines: u64,
    /// Records seen more than once, identically.
    pub duplicates: u64,
    pub logs: Vec<LogSummary>,
}

/// One origin's log in the export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogSummary {
    pub origin: String,
    /// Leaves present in full.
    pub events: u64,
    /// Leaves present as hashes only (filtered out by the sink).
    pub omitted: u64,
    pub checkpoints: u64,
    /// The size of the largest checkpoint: leaves `0..covered` are proven complete.
    pub covered: u64,
    /// Leaves after it, not yet covered by a signed checkpoint.
    pub uncovered: u64,
}

/// Why an export does not check out. Each names the line or leaf where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export: {0}")]
    Read(String),
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("{origin}: leaf {leaf_index} (line {line}) was edited: {reason}")]
    Edited {
        origin: String,
        leaf_index: u64,
        line: u64,
        reason: String,
    },
    #[error(
        "{origin}: leaf {leaf_index} appears twice with different contents (lines {first} and {second})"
    )]
    Conflict {
        origin: String,
        leaf_index: u64,
        first: u64,
        second: u64,
    },
    #[error("{origin}: {} missing (the export is not complete up to leaf {seen})", if *to == from + 1 { format!("leaf {from} is") } else { format!("leaves {from}..{to} are") })]
    Gap {
        origin: String,
        from: u64,
        to: u64,
        seen: u64,
    },
    #[error("{origin}: checkpoint of size {size} (line {line}) does not verify: {reason}")]
    Checkpoint {
        origin: String,
        size: u64,
        line: u64,
        reason: String,
    },
    #[error(
        "{origin}: the records do not match the checkpoint of size {size} (line {line}): the tree root over leaves 0..{size} differs, so a leaf was changed, moved or left out"
    )]
    Root {
        origin: String,
        size: u64,
        line: u64,
    },
    #[error(
        "{origin}: leaf {leaf_index} (line {line}) is there only as its hash, but the copy should hold every event in full (--full)"
    )]
    NotFull {
        origin: String,
        leaf_index: u64,
        line: u64,
    },
    #[error("the export holds no signed checkpoint{}, so nothing in it is proven", origin.as_ref().map(|o| format!(" for {o}")).unwrap_or_default())]
    NoCheckpoint { origin: Option<String> },
    #[error("no line of the export holds a Portcullis record ({} read): is it the sink's output?", if *lines == 1 { "1 line".to_string() } else { format!("{lines} lines") })]
    NoRecord { lines: u64 },
}

/// One leaf as the export gives it.
struct LeafSeen {
    hash: Hash,
    line: u64,
    full: bool,
}

struct CheckpointSeen {
    note: String,
    root: String,
    line: u64,
}

#[derive(Default)]
struct LogSeen {
    leaves: BTreeMap<u64, LeafSeen>,
    checkpoints: BTreeMap<u64, CheckpointSeen>,
}

/// How strict [`verify_with`] is beyond what every export must pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Every leaf must be there in full: the export is of a sink without a filter, so an
    /// `omitted` record (a hash standing in for an event) can only be an event taken out.
    pub full: bool,
}

/// Checks the export read from `input` against `keys` (the gateways' checkpoint verifier
/// keys). Any of the keys is accepted for any origin.
pub fn verify(input: impl BufRead, keys: &[Verifier]) -> Result<ExportSummary, ExportError> {
    verify_with(input, keys, Options::default())
}

/// [`verify`], with [`Options`].
pub fn verify_with(
    input: impl BufRead,
    keys: &[Verifier],
    options: Options,
) -> Result<ExportSummary, ExportError> {
    let mut summary = ExportSummary::default();
    let mut logs: BTreeMap<String, LogSeen> = BTreeMap::new();
    for line in input.lines() {
        let text = line.map_err(|e| ExportError::Read(e.to_string()))?;
        summary.lines += 1;
        let number = summary.lines;
        if text.trim().is_empty() {
            summary.ignored_lines += 1;
            continue;
        }
        let malformed = |reason: String| ExportError::Malformed {
            line: number,
            reason,
        };
        let record = match find_record(&text) {
            Found::Record(record) => record,
            Found::DuplicateKey(e) => return Err(malformed(e)),
            Found::Nothing => {
                summary.ignored_lines += 1;
                continue;
            }
        };
        let origin = record["origin"]
            .as_str()
            .ok_or_else(|| malformed("the record has no origin".into()))?
            .to_string();
        let log = logs.entry(origin.clone()).or_default();
        let kind = record["record"].as_str().unwrap_or_default();
        let mut add_leaf = |index: u64, hash: Hash, full: bool| -> Result<(), ExportError> {
            match log.leaves.get(&index) {
                Some(seen) if seen.hash == hash => {
                    summary.duplicates += 1;
                    if full && !seen.full {
                        log.leaves.insert(
                            index,
                            LeafSeen {
                                hash,
                                line: number,
                                full,
                            },
                        );
                    }
                    Ok(())
                }
                Some(seen) => Err(ExportError::Conflict {
                    origin: origin.clone(),
                    leaf_index: index,
                    first: seen.line,
                    second: number,
                }),
                None => {
                    log.leaves.insert(
                        index,
                        LeafSeen {
                            hash,
                            line: number,
                            full,
                        },
                    );
                    Ok(())
                }
            }
        };
        match kind {
            "event" => {
                let index = record["leaf_index"]
                    .as_u64()
                    .ok_or_else(|| malformed("the event record has no leaf_index".into()))?;
                let claimed = hash_field(&record["leaf_hash"])
                    .ok_or_else(|| malformed("the event record has no valid leaf_hash".into()))?;
                let event = &record["event"];
                if !event.is_object() {
                    return Err(malformed("the event record has no event".into()));
                }
                let canonical = serde_json_canonicalizer::to_vec(event)
                    .map_err(|e| malformed(format!("the event cannot be canonicalised: {e}")))?;
                let actual = merkle::leaf_hash(&canonical);
                if actual != claimed {
                    return Err(ExportError::Edited {
                        origin,
                        leaf_index: index,
                        line: number,
                        reason: format!(
                            "its contents hash to {}, not to the leaf hash {} it carries{}",
                            hex::encode(actual),
                            hex::encode(claimed),
                            event["id"]
                                .as_str()
                                .map(|id| format!(" (event {id})"))
                                .unwrap_or_default()
                        ),
                    });
                }
                add_leaf(index, actual, true)?;
            }
            "omitted" => {
                let first = record["leaf_index"]
                    .as_u64()
                    .ok_or_else(|| malformed("the omitted record has no leaf_index".into()))?;
                let hashes = record["leaf_hashes"]
                    .as_array()
                    .ok_or_else(|| malformed("the omitted record has no leaf_hashes".into()))?;
                for (offset, hash) in hashes.iter().enumerate() {
                    let hash = hash_field(hash)
                        .ok_or_else(|| malformed(format!("leaf_hashes[{offset}] is not a hash")))?;
                    add_leaf(first + offset as u64, hash, false)?;
                }
            }
            "checkpoint" => {
                let size = record["size"]
                    .as_u64()
                    .ok_or_else(|| malformed("the checkpoint record has no size".into()))?;
                let note = record["note"]
                    .as_str()
                    .ok_or_else(|| malformed("the checkpoint record has no note".into()))?
                    .to_string();
                let root = record["root"].as_str().unwrap_or_default().to_string();
                match log.checkpoints.get(&size) {
                    Some(seen) if seen.note == note => summary.duplicates += 1,
                    Some(seen) => {
                        return Err(ExportError::Checkpoint {
                            origin,
                            size,
                            line: number,
                            reason: format!(
                                "another checkpoint of the same size is on line {}: the log was forked",
                                seen.line
                            ),
                        });
                    }
                    None => {
                        log.checkpoints.insert(
                            size,
                            CheckpointSeen {
                                note,
                                root,
                                line: number,
                            },
                        );
                    }
                }
            }
            other => return Err(malformed(format!("unknown record kind {other:?}"))),
        }
    }
    if logs.is_empty() {
        return Err(ExportError::NoRecord {
            lines: summary.lines,
        });
    }
    if logs.values().all(|l| l.checkpoints.is_empty()) {
        return Err(ExportError::NoCheckpoint { origin: None });
    }
    for (origin, log) in logs {
        if options.full
            && let Some((index, leaf)) = log.leaves.iter().find(|(_, leaf)| !leaf.full)
        {
            return Err(ExportError::NotFull {
                origin,
                leaf_index: *index,
                line: leaf.line,
            });
        }
        summary.logs.push(check_log(&origin, &log, keys)?);
    }
    Ok(summary)
}

fn check_log(origin: &str, log: &LogSeen, keys: &[Verifier]) -> Result<LogSummary, ExportError> {
    if log.checkpoints.is_empty() {
        return Err(ExportError::NoCheckpoint {
            origin: Some(origin.to_string()),
        });
    }
    // No gap: leaves 0..=highest, all there.
    let seen = log.leaves.keys().next_back().map_or(0, |i| i + 1);
    let covered = log.checkpoints.keys().next_back().copied().unwrap_or(0);
    let end = seen.max(covered);
    let mut expected = 0;
    for &index in log.leaves.keys() {
        if index != expected {
            return Err(ExportError::Gap {
                origin: origin.to_string(),
                from: expected,
                to: index,
                seen: end,
            });
        }
        expected += 1;
    }
    if expected < covered {
        return Err(ExportError::Gap {
            origin: origin.to_string(),
            from: expected,
            to: covered,
            seen: end,
        });
    }
    // Every checkpoint signed, for this origin, with the root of the leaves before it.
    let mut tree = Frontier::new();
    let mut leaves = log.leaves.values();
    for (&size, checkpoint) in &log.checkpoints {
        let bad = |reason: String| ExportError::Checkpoint {
            origin: origin.to_string(),
            size,
            line: checkpoint.line,
            reason,
        };
        let body = keys
            .iter()
            .find_map(|key| key.open(&checkpoint.note).ok())
            .ok_or_else(|| bad("no signature by the given key".into()))?;
        let signed = Checkpoint::parse(body).map_err(|e| bad(e.to_string()))?;
        if signed.origin != origin {
            return Err(bad(format!(
                "it was signed for the log {:?}",
                signed.origin
            )));
        }
        if signed.size != size {
            return Err(bad(format!("the signed note says size {}", signed.size)));
        }
        if !checkpoint.root.is_empty() && checkpoint.root != hex::encode(signed.root) {
            return Err(bad("its root field differs from the signed root".into()));
        }
        while tree.size() < size {
            let leaf = leaves.next().expect("no gap below the largest checkpoint");
            tree.append(leaf.hash);
        }
        if tree.root() != signed.root {
            return Err(ExportError::Root {
                origin: origin.to_string(),
                size,
                line: checkpoint.line,
            });
        }
    }
    let events = log.leaves.values().filter(|l| l.full).count() as u64;
    Ok(LogSummary {
        origin: origin.to_string(),
        events,
        omitted: log.leaves.len() as u64 - events,
        checkpoints: log.checkpoints.len() as u64,
        covered,
        uncovered: seen.saturating_sub(covered),
    })
}

fn hash_field(value: &Value) -> Option<Hash> {
    let bytes = hex::decode(value.as_str()?).ok()?;
    bytes.try_into().ok()
}

/// What a line holds.
enum Found {
    Record(Value),
    /// JSON with an object holding the same key twice: it could read one way to a person
    /// and another to this check, so it is refused, not ignored.
    DuplicateKey(String),
    Nothing,
}

/// The native record in a line, wherever the format put it.
fn find_record(line: &str) -> Found {
    match serde_json::from_str::<Value>(line) {
        Ok(value) => match portcullis_model::json::check_no_duplicate_keys(line.as_bytes()) {
            Ok(()) => record_in(value),
            Err(e) => Found::DuplicateKey(e),
        },
        // Not JSON as a whole: a syslog line, whose message is the record.
        Err(_) => {
            let Some(start) = line.find("{\"record\":\"") else {
                return Found::Nothing;
            };
            let mut stream =
                serde_json::Deserializer::from_str(&line[start..]).into_iter::<Value>();
            let Some(Ok(value)) = stream.next() else {
                return Found::Nothing;
            };
            let end = start + stream.byte_offset();
            match portcullis_model::json::check_no_duplicate_keys(&line.as_bytes()[start..end]) {
                Ok(()) => record_in(value),
                Err(e) => Found::DuplicateKey(e),
            }
        }
    }
}

fn record_in(value: Value) -> Found {
    match value {
        Value::String(text) => find_record(&text),
        Value::Object(mut object) => {
            if object.get("record").is_some_and(Value::is_string) {
                return Found::Record(Value::Object(object));
            }
            // `_source`: an Elasticsearch export; `portcullis`: an ECS document; `event`: a
            // HEC event; `body`: an OTLP log body; `result` and `_raw`: a Splunk export.
            for key in ["_source", "portcullis", "event", "body", "result", "_raw"] {
                if let Some(inner) = object.remove(key) {
                    match record_in(inner) {
                        Found::Nothing => {}
                        found => return found,
                    }
                }
            }
            Found::Nothing
        }
        _ => Found::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_in_each_format() {
        let native = r#"{"record":"omitted","origin":"o","leaf_index":0,"leaf_hashes":[]}"#;
        for line in [
            native.to_string(),
            format!(r#"{{"time":1,"sourcetype":"portcullis","event":{native}}}"#),
            format!(
                r#"{{"_index":"a","_source":{{"@timestamp":"t","event":{{"action":"x"}},"portcullis":{native}}}}}"#
            ),
            format!(
                "<86>1 2026-12-06T10:00:00.000Z host portcullis - request [portcullis@32473 leaf=\"0\"] {native}"
            ),
            serde_json::to_string(&native).unwrap(),
        ] {
            let Found::Record(record) = find_record(&line) else {
                panic!("{line}")
            };
            assert_eq!(record["record"], "omitted", "{line}");
        }
        assert!(matches!(find_record("rsyslogd: started"), Found::Nothing));
        assert!(matches!(
            find_record(r#"{"event":{"action":"x"}}"#),
            Found::Nothing
        ));
        // A Splunk search export.
        let splunk = format!(
            r#"{{"preview":false,"result":{{"_raw":{}}}}}"#,
            serde_json::to_string(native).unwrap()
        );
        assert!(matches!(find_record(&splunk), Found::Record(_)));
        // The same key twice, in the JSON or in a syslog message: refused.
        let twice = r#"{"record":"event","origin":"o","leaf_index":0,"event":{"target":"hr","target":"billing"}}"#;
        assert!(matches!(find_record(twice), Found::DuplicateKey(_)));
        assert!(matches!(
            find_record(&format!("<86>1 - host app - request - {twice} trailing")),
            Found::DuplicateKey(_)
        ));
    }
}
