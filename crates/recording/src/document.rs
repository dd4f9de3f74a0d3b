//! What a recorded chunk says: a [`Record`], one per request and one per answer.
//!
//! A record is a JSON object: when it starts, and its parts in order, each with its offset
//! from the start of the request in milliseconds, its kind and its body. A request's record
//! holds what the gateway forwarded (an MCP method and its parameters; a SQL statement and
//! its bind values); an answer's record holds what the caller received, in the order it was
//! sent (progress and log notifications, then the result or error; row descriptions, rows,
//! notices, the command tag). What a cap cut out is listed in `truncated`, so a record never
//! silently says less than what happened.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The format of a record; readers refuse others.
pub const FORMAT: &str = "portcullis-record/1";

/// One side of one request: what was forwarded, or what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    /// When the request was read (RFC 3339, UTC, milliseconds): offsets count from here.
    pub at: String,
    pub parts: Vec<Part>,
    /// What the caps left out, part by part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<Truncation>,
    /// The caller went away before the answer was complete: `parts` is what it was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub caller_left: bool,
}

impl Record {
    pub fn new(at: String) -> Record {
        Record {
            format: FORMAT.to_string(),
            at,
            parts: Vec::new(),
            truncated: Vec::new(),
            caller_left: false,
        }
    }

    /// Reads a record back from a chunk's content.
    pub fn parse(content: &[u8]) -> Result<Record, String> {
        let record: Record =
            serde_json::from_slice(content).map_err(|e| format!("not a recording: {e}"))?;
        if record.format != FORMAT {
            return Err(format!(
                "a recording in format {:?}, which this portcullis does not read (it reads {FORMAT:?})",
                record.format
            ));
        }
        Ok(record)
    }
}

/// One message of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Milliseconds from the start of the request.
    pub ms: f64,
    /// What it is: `request`, `progress`, `log`, `result`, `error`, `refusal` (MCP);
    /// `query`, `parse`, `bind`, `columns`, `row`, `notice`, `complete`, `error` (SQL).
    pub kind: String,
    pub body: Value,
}

/// What a cap removed from a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// The index in `parts` where the cut is (a cut-down part, or where dropped parts were).
    pub part: usize,
    /// `bytes` (a part's body cut to `max_message_bytes`) or `parts` (parts dropped: rows
    /// beyond `max_rows_per_statement`, messages beyond the session's budget).
    pub unit: String,
    pub kept: u64,
    pub dropped: u64,
}
