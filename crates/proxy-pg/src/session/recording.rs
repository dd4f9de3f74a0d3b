//! What the session recording keeps of each statement (issue 15): the request as the
//! gateway forwarded it (the SQL text, and for an Execute its bind values), and the answer
//! as the client received it, after masking: the result's columns, its rows (only on a
//! target with `record_results = true`; otherwise only counted) or COPY TO STDOUT's data
//! (kept like rows), its completion, notices and errors. The guard masks requests with the
//! `[recording]` profile, applies the caps and names what they cut; this file only turns
//! protocol messages into record parts.
//!
//! Values are kept as the client read them: text-format values as strings; binary-format
//! values decoded when their type is a simple one (text types, integers, booleans, floats),
//! else as `{"binary": "<hex>"}`; NULL as null. A binary value of unknown type that is
//! printable UTF-8 is kept as a string, so the recording profile's detectors see it (hex
//! would hide a pasted secret from them); any other bind value that is not text but holds a
//! run of printable characters long enough to be a secret is kept as its lossy UTF-8 text,
//! for the same reason.

use bytes::Bytes;
use portcullis_guard::Exchange;
use serde_json::{Value, json};

use super::StatementRun;
use super::results::text_like;
use crate::classify::Classified;
use crate::wire::{self, Bind, Column, Frame, Notice};

/// What the recording keeps of one statement's answer; only a recorded exchange has one.
pub(super) struct RunRecording {
    /// `record_results`: rows are kept, not only counted.
    keep_rows: bool,
    /// The result's columns, once recorded.
    columns: Option<Vec<Column>>,
    /// An Execute's result formats, from its Bind (they apply to columns learnt from a
    /// description without them); `None` for a simple query, whose RowDescription has them.
    formats: Option<Vec<i16>>,
}

impl RunRecording {
    /// The recording of a statement whose exchange is recorded; `None` otherwise, and then
    /// every hook below costs one branch.
    pub(super) fn of(
        exchange: Option<&Exchange>,
        keep_rows: bool,
        formats: Option<&[i16]>,
    ) -> Option<RunRecording> {
        exchange
            .is_some_and(Exchange::recording)
            .then(|| RunRecording {
                keep_rows,
                columns: None,
                formats: formats.map(<[i16]>::to_vec),
            })
    }
}

/// Records a request on `exchange` when it is recorded; `body` is built only then.
pub(super) fn record_request(exchange: &mut Exchange, kind: &str, body: impl FnOnce() -> Value) {
    if exchange.recording() {
        exchange.record_request(kind, body());
    }
}

/// The text of `statement` a recording keeps: its own, or, for one that can carry a
/// credential, the text with every literal replaced by `$n`.
pub(super) fn recorded_text(statement: &Classified) -> &str {
    if statement.holds_credentials {
        &statement.normalized
    } else {
        &statement.text
    }
}

/// A Bind's parameter values as the recording keeps them (types are not known here: the
/// Parse may leave them to the server).
pub(super) fn parameters(bind: &Bind) -> Value {
    bind.parameters
        .iter()
        .enumerate()
        .map(|(i, v)| {
            match value(v.as_deref(), 0, wire::format_of(&bind.parameter_formats, i)) {
                // What a caller sends is masked before it is kept, and the detectors read
                // text: a value that is not text but holds a run of printable characters
                // long enough to be a secret is kept as its lossy text, so the detectors
                // find it; hex would hide it from them. Short binary values (integers)
                // stay hex, which cannot hide a secret.
                Value::Object(_) if has_text_run(v.as_deref().unwrap_or_default()) => {
                    Value::String(
                        String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
                    )
                }
                kept => kept,
            }
        })
        .collect()
}

/// The shortest run of printable ASCII that could be a secret worth masking (the detectors'
/// shortest patterns are longer).
const SECRET_RUN: usize = 8;

/// Whether `bytes` hold [`SECRET_RUN`] printable ASCII characters in a row.
fn has_text_run(bytes: &[u8]) -> bool {
    bytes
        .split(|b| !(b.is_ascii_graphic() || *b == b' '))
        .any(|run| run.len() >= SECRET_RUN)
}

/// Built-in types whose binary form is decoded for the record.
const BOOL: u32 = 16;
const TEXT: u32 = 25;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;

/// One value as the record keeps it (see the module's header).
fn value(bytes: Option<&[u8]>, type_oid: u32, format: i16) -> Value {
    let Some(bytes) = bytes else {
        return Value::Null;
    };
    if format == 0 {
        return match std::str::from_utf8(bytes) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => hex_value(bytes),
        };
    }
    let decoded = match type_oid {
        BOOL => match bytes {
            [0] => Some("f".to_string()),
            [_] => Some("t".to_string()),
            _ => None,
        },
        INT2 => bytes
            .try_into()
            .ok()
            .map(i16::from_be_bytes)
            .map(|n| n.to_string()),
        INT4 => bytes
            .try_into()
            .ok()
            .map(i32::from_be_bytes)
            .map(|n| n.to_string()),
        OID => bytes
            .try_into()
            .ok()
            .map(u32::from_be_bytes)
            .map(|n| n.to_string()),
        INT8 => bytes
            .try_into()
            .ok()
            .map(i64::from_be_bytes)
            .map(|n| n.to_string()),
        FLOAT4 => bytes
            .try_into()
            .ok()
            .map(f32::from_be_bytes)
            .map(|n| n.to_string()),
        FLOAT8 => bytes
            .try_into()
            .ok()
            .map(f64::from_be_bytes)
            .map(|n| n.to_string()),
        0 => std::str::from_utf8(bytes)
            .ok()
            .filter(|t| {
                !t.chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            })
            .map(str::to_string),
        oid => text_like(oid)
            .and_then(|skip| bytes.get(skip..))
            .and_then(|body| std::str::from_utf8(body).ok())
            .map(str::to_string),
    };
    decoded.map_or_else(|| hex_value(bytes), Value::String)
}

fn hex_value(bytes: &[u8]) -> Value {
    json!({ "binary": hex::encode(bytes) })
}

fn row(values: &[Option<Bytes>], columns: &[Column], formats: Option<&[i16]>) -> Value {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match columns.get(i) {
            Some(c) => value(v.as_deref(), c.type_oid, c.format),
            None => value(
                v.as_deref(),
                0,
                wire::format_of(formats.unwrap_or_default(), i),
            ),
        })
        .collect()
}

fn notice(n: &Notice) -> Value {
    json!({ "severity": n.severity, "code": n.code, "message": n.message })
}

impl StatementRun {
    /// The result's columns (a simple query's RowDescription, or the description of an
    /// Execute's portal with its Bind's formats applied).
    pub(super) fn record_columns(&mut self, columns: &[Column]) {
        let (Some(exchange), Some(recording)) = (self.exchange.as_mut(), self.recording.as_mut())
        else {
            return;
        };
        let columns: Vec<Column> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column {
                format: match &recording.formats {
                    Some(formats) => wire::format_of(formats, i),
                    None => c.format,
                },
                ..c.clone()
            })
            .collect();
        if !columns.is_empty() {
            let body = columns
                .iter()
                .map(|c| json!({ "name": c.name, "type_oid": c.type_oid }))
                .collect();
            exchange.record_answer("columns", Value::Array(body));
        }
        recording.columns = Some(columns);
    }

    /// An Execute learns its columns from its statement's description, which may have come
    /// after the Execute was sent (a Describe in the same batch): recorded before its first
    /// row or its completion.
    fn learn_columns(&mut self) {
        if let Some(recording) = &self.recording
            && recording.columns.is_none()
            && let Some(columns) = self.admitted.columns.get()
        {
            let columns = columns.clone();
            self.record_columns(&columns);
        }
    }

    /// A row as the client received it: `values` when the gateway rewrote it, else the
    /// server's `frame` as it passed. Kept only under `record_results`, and built only for
    /// a row under the cap.
    pub(super) fn record_row(&mut self, frame: &Frame, values: Option<&[Option<Bytes>]>) {
        if !self.recording.as_ref().is_some_and(|r| r.keep_rows) {
            return;
        }
        self.learn_columns();
        let (Some(exchange), Some(recording)) = (self.exchange.as_mut(), self.recording.as_ref())
        else {
            return;
        };
        let columns = recording.columns.as_deref().unwrap_or_default();
        let formats = recording.formats.as_deref();
        exchange.record_row_with(|| match values {
            Some(values) => row(values, columns, formats),
            None => match wire::parse_data_row(frame) {
                Ok(values) => row(&values, columns, formats),
                // The row passed as the server sent it; the record says it could not read it.
                Err(e) => json!({ "unreadable": e.to_string() }),
            },
        });
    }

    /// One CopyData of COPY TO STDOUT, kept like a row (a line of text, or its bytes in
    /// hex for a binary COPY).
    pub(super) fn record_copy_data(&mut self, frame: &Frame) {
        if !self.recording.as_ref().is_some_and(|r| r.keep_rows) {
            return;
        }
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.record_row_with(|| value(Some(&frame.body), TEXT, 0));
        }
    }

    /// CommandComplete (or PortalSuspended, `suspended`): the command tag, and where rows
    /// are not kept, how many the client received.
    pub(super) fn record_complete(&mut self, frame: &Frame, suspended: bool) {
        if self.recording.is_none() {
            return;
        }
        self.learn_columns();
        let (Some(exchange), Some(recording)) = (self.exchange.as_mut(), self.recording.as_ref())
        else {
            return;
        };
        let tag = frame.body.strip_suffix(b"\0").unwrap_or(&frame.body);
        let tag = String::from_utf8_lossy(tag);
        let kind = if suspended { "suspended" } else { "complete" };
        let body = match (suspended, recording.keep_rows) {
            (false, true) => json!(tag),
            (true, true) => json!({ "rows": self.rows_sent }),
            (false, false) => json!({ "tag": tag, "rows": self.rows_sent, "rows_kept": false }),
            (true, false) => json!({ "rows": self.rows_sent, "rows_kept": false }),
        };
        exchange.record_answer(kind, body);
    }

    /// A NoticeResponse or ErrorResponse as the client received it (masked).
    pub(super) fn record_notice(&mut self, kind: &str, frame: &Frame) {
        if self.recording.is_some()
            && let Some(exchange) = self.exchange.as_mut()
        {
            exchange.record_answer(kind, notice(&wire::parse_notice(frame)));
        }
    }

    /// The gateway's own error in place of the statement's answer.
    pub(super) fn record_error(&mut self, code: &str, message: &str) {
        if self.recording.is_some()
            && let Some(exchange) = self.exchange.as_mut()
        {
            exchange.record_answer("error", json!({ "code": code, "message": message }));
        }
    }

    /// The client went away before this statement's answer was complete.
    pub(super) fn record_caller_left(&mut self) {
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.record_caller_left();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_values_that_could_hide_a_secret_are_kept_as_text_the_masking_reads() {
        let bind = Bind {
            portal: String::new(),
            statement: String::new(),
            parameter_formats: vec![1],
            parameters: vec![
                Some(Bytes::from_static(&[0, 0, 0, 3])),
                Some(Bytes::from_static(b"\x01\x02AKIAIOSFODNN7EXAMPLE\xff")),
            ],
            result_formats: vec![],
        };
        let kept = parameters(&bind);
        assert_eq!(kept[0], json!({ "binary": "00000003" }));
        assert!(
            kept[1].as_str().unwrap().contains("AKIAIOSFODNN7EXAMPLE"),
            "{kept}"
        );
    }

    #[test]
    fn values_are_kept_as_the_client_read_them() {
        assert_eq!(value(None, 25, 0), Value::Null);
        assert_eq!(value(Some(b"Ada"), 25, 0), json!("Ada"));
        assert_eq!(value(Some(b"Ada"), 25, 1), json!("Ada"));
        assert_eq!(value(Some(&[1, b'{', b'}']), 3802, 1), json!("{}"));
        assert_eq!(value(Some(&7i32.to_be_bytes()), INT4, 1), json!("7"));
        assert_eq!(value(Some(&(-2i64).to_be_bytes()), INT8, 1), json!("-2"));
        assert_eq!(value(Some(&[1]), BOOL, 1), json!("t"));
        assert_eq!(value(Some(&1.5f64.to_be_bytes()), FLOAT8, 1), json!("1.5"));
        // A numeric's binary form: kept as bytes.
        assert_eq!(
            value(Some(&[0, 1, 0, 0]), 1700, 1),
            json!({ "binary": "00010000" })
        );
        // A binary parameter of unknown type: printable text stays text (the detectors
        // must see it), anything else is bytes.
        assert_eq!(
            value(Some(b"AKIAIOSFODNN7EXAMPLE"), 0, 1),
            json!("AKIAIOSFODNN7EXAMPLE")
        );
        assert_eq!(
            value(Some(&1i32.to_be_bytes()), 0, 1),
            json!({ "binary": "00000001" })
        );
        // Text not in UTF-8 (another client encoding): bytes.
        assert_eq!(value(Some(&[0xe9]), 25, 0), json!({ "binary": "e9" }));
    }
}
