//! What a sink sends: the log's events, its signed checkpoints, and the leaf hashes of the
//! events a filter left out, in leaf order.
//!
//! Every format (syslog, HEC, ECS, OTLP, NATS, file) carries the native record below,
//! unchanged, so `portcullis audit verify-export` can check any of them: an event record
//! holds the canonical event itself (its JCS bytes hash to `leaf_hash`), a checkpoint record
//! holds the signed note, and an omitted record holds the hashes of the leaves it stands for.
//!
//! ```text
//! {"record":"event","origin":"portcullis/gw-1","leaf_index":41,"leaf_hash":"9f..","event":{...}}
//! {"record":"omitted","origin":"portcullis/gw-1","leaf_index":42,"leaf_hashes":["1c..","77.."]}
//! {"record":"checkpoint","origin":"portcullis/gw-1","size":44,"root":"ab..","time":"...","note":"..."}
//! ```
//!
//! A checkpoint of size `n` follows the record of leaf `n - 1`: it commits to everything
//! before it in the stream.

use portcullis_audit::merkle::Hash;
use portcullis_audit::{Leaf, StoredCheckpoint};
use portcullis_model::AuditEvent;

/// One record of the stream.
// Nearly every record is an event: boxing it would add an allocation per event to shrink
// only the rare checkpoints and omitted runs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Record {
    Event(EventRecord),
    Checkpoint(CheckpointRecord),
    Omitted(OmittedRecord),
}

/// An event of the log, as the log holds it.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Its index among the log's leaves, from 0.
    pub leaf_index: u64,
    /// RFC 6962 leaf hash: `SHA-256(0x00 || canonical bytes)`.
    pub leaf_hash: Hash,
    /// The canonical JSON (RFC 8785) of the event, exactly as hashed.
    pub canonical: String,
    /// The same event, parsed, for formats that map its fields (ECS, OTLP attributes,
    /// syslog structured data).
    pub event: AuditEvent,
    /// Its type and outcome as the log writes them (`request`, `denied`).
    pub event_type: String,
    pub outcome: String,
}

/// A signed checkpoint of the log.
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    pub size: u64,
    pub root: Hash,
    /// When it was signed (RFC 3339, UTC).
    pub time: String,
    /// The C2SP signed note, exactly as signed.
    pub note: String,
}

/// Consecutive leaves a sink's filter left out: only their hashes, so the receiver can
/// rebuild the tree and tell a filtered event from a lost one.
#[derive(Debug, Clone)]
pub struct OmittedRecord {
    /// The index of the first leaf.
    pub leaf_index: u64,
    pub leaf_hashes: Vec<Hash>,
}

/// Why a leaf could not be turned into a record. The log verified when it was written;
/// a body that does not parse is damage, and the sink stops rather than skip it.
#[derive(Debug, thiserror::Error)]
#[error("audit event at leaf {leaf_index} cannot be read: {reason}")]
pub struct UnreadableEvent {
    pub leaf_index: u64,
    pub reason: String,
}

impl EventRecord {
    pub fn from_leaf(leaf: Leaf) -> Result<EventRecord, UnreadableEvent> {
        let unreadable = |reason: String| UnreadableEvent {
            leaf_index: leaf.index,
            reason,
        };
        let event: AuditEvent =
            serde_json::from_str(&leaf.body).map_err(|e| unreadable(e.to_string()))?;
        let name = |value: serde_json::Result<serde_json::Value>| match value {
            Ok(serde_json::Value::String(s)) => Ok(s),
            other => Err(unreadable(format!("unexpected field value {other:?}"))),
        };
        let event_type = name(serde_json::to_value(event.event_type))?;
        let outcome = name(serde_json::to_value(event.outcome))?;
        Ok(EventRecord {
            leaf_index: leaf.index,
            leaf_hash: leaf.leaf_hash,
            canonical: leaf.body,
            event,
            event_type,
            outcome,
        })
    }
}

impl From<StoredCheckpoint> for CheckpointRecord {
    fn from(c: StoredCheckpoint) -> Self {
        CheckpointRecord {
            size: c.size,
            root: c.root,
            time: c.time,
            note: c.note,
        }
    }
}

impl Record {
    /// Where the record sits in the stream: leaf index times two for events and omitted
    /// runs (of their first leaf), `size * 2 - 1` for a checkpoint, so a checkpoint of size
    /// `n` sorts right after leaf `n - 1`.
    pub fn position(&self) -> u64 {
        match self {
            Record::Event(e) => e.leaf_index * 2,
            Record::Omitted(o) => o.leaf_index * 2,
            Record::Checkpoint(c) => (c.size * 2).saturating_sub(1),
        }
    }

    /// `event`, `checkpoint` or `omitted`: the `record` field of the native form.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Event(_) => "event",
            Record::Checkpoint(_) => "checkpoint",
            Record::Omitted(_) => "omitted",
        }
    }

    /// The native JSON form (one line, no newline), as every format carries it.
    pub fn to_json(&self, origin: &str) -> String {
        let mut out = String::with_capacity(match self {
            Record::Event(e) => e.canonical.len() + 160,
            Record::Checkpoint(c) => c.note.len() + 200,
            Record::Omitted(o) => o.leaf_hashes.len() * 67 + 100,
        });
        self.write_json(origin, &mut out);
        out
    }

    /// Appends the native JSON form to `out`.
    pub fn write_json(&self, origin: &str, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("{\"record\":\"");
        out.push_str(self.kind());
        out.push_str("\",\"origin\":");
        push_json_string(out, origin);
        match self {
            Record::Event(e) => {
                let _ = write!(
                    out,
                    ",\"leaf_index\":{},\"leaf_hash\":\"{}\",\"event\":",
                    e.leaf_index,
                    hex::encode(e.leaf_hash)
                );
                // The canonical bytes are JSON already: embedded as they are, so the
                // receiver can hash exactly what the log hashed.
                out.push_str(&e.canonical);
            }
            Record::Checkpoint(c) => {
                let _ = write!(
                    out,
                    ",\"size\":{},\"root\":\"{}\",\"time\":",
                    c.size,
                    hex::encode(c.root)
                );
                push_json_string(out, &c.time);
                out.push_str(",\"note\":");
                push_json_string(out, &c.note);
            }
            Record::Omitted(o) => {
                let _ = write!(out, ",\"leaf_index\":{},\"leaf_hashes\":[", o.leaf_index);
                for (i, hash) in o.leaf_hashes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(&hex::encode(hash));
                    out.push('"');
                }
                out.push(']');
            }
        }
        out.push('}');
    }
}

fn push_json_string(out: &mut String, value: &str) {
    // serde_json's escaping of a plain string cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_default());
}

/// What one delivery carries: records in stream order, and the range of leaves they cover.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The log's origin (its checkpoints' first line): names which gateway's log this is.
    pub origin: String,
    pub records: Vec<Record>,
    /// The first leaf covered (event or omitted).
    pub first_leaf: u64,
    /// One past the last leaf covered: the cursor once this batch is acknowledged.
    pub end_leaf: u64,
}

impl Batch {
    /// The events of the batch, in order.
    pub fn events(&self) -> impl Iterator<Item = &EventRecord> {
        self.records.iter().filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
    }

    /// The native JSON lines of the batch, each ending in a newline.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for record in &self.records {
            record.write_json(&self.origin, &mut out);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_form_embeds_the_canonical_event_unchanged() {
        let canonical = r#"{"gateway":"gw","id":"e1","outcome":"info","time":"2026-12-06T10:00:00.000Z","type":"gateway.start"}"#;
        let leaf = Leaf {
            index: 7,
            body: canonical.to_string(),
            leaf_hash: [3; 32],
        };
        let record = Record::Event(EventRecord::from_leaf(leaf).unwrap());
        let line = record.to_json("portcullis/gw \"1\"");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["record"], "event");
        assert_eq!(value["origin"], "portcullis/gw \"1\"");
        assert_eq!(value["leaf_index"], 7);
        assert_eq!(value["leaf_hash"], hex::encode([3; 32]));
        assert!(line.contains(canonical), "{line}");
        let Record::Event(e) = &record else { panic!() };
        assert_eq!(
            (e.event_type.as_str(), e.outcome.as_str()),
            ("gateway.start", "info")
        );
        assert_eq!(record.position(), 14);
    }

    #[test]
    fn a_checkpoint_sorts_right_after_its_last_leaf() {
        let checkpoint = Record::Checkpoint(CheckpointRecord {
            size: 8,
            root: [1; 32],
            time: "t".into(),
            note: "origin\n8\nroot\n\n— sig\n".into(),
        });
        assert_eq!(checkpoint.position(), 15);
        let value: serde_json::Value = serde_json::from_str(&checkpoint.to_json("o")).unwrap();
        assert_eq!(value["note"], "origin\n8\nroot\n\n— sig\n");
        assert_eq!(value["size"], 8);
        let omitted = Record::Omitted(OmittedRecord {
            leaf_index: 3,
            leaf_hashes: vec![[0; 32], [255; 32]],
        });
        let value: serde_json::Value = serde_json::from_str(&omitted.to_json("o")).unwrap();
        assert_eq!(value["leaf_hashes"][1], "ff".repeat(32));
    }

    #[test]
    fn a_body_that_is_not_an_event_is_named_by_its_leaf() {
        let leaf = Leaf {
            index: 12,
            body: "{}".into(),
            leaf_hash: [0; 32],
        };
        let e = EventRecord::from_leaf(leaf).unwrap_err();
        assert!(e.to_string().contains("leaf 12"), "{e}");
    }
}
