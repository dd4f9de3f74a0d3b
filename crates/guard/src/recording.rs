//! Session recording: what each request forwarded and what its caller received, kept as
//! chunks the request's audit event names.
//!
//! An adapter attached to a recording guard hands each message to its [`Exchange`] as it
//! passes: [`Exchange::record_request`] for what it forwards (masked here with the
//! `[recording]` profile, so a secret a caller pasted into an argument is not kept) and
//! [`Exchange::record_answer`] / [`Exchange::record_row`] for what the caller received
//! (already masked by the rule's profile: a recording never holds more than the caller
//! saw). The caps apply here, and the record lists what they cut. When the exchange
//! finishes, each side becomes one [`Chunk`], the event gets their ids, and the audit log
//! stores the chunks in the event's own transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_config::{Recording, RecordingMode};
use portcullis_mask::{Profile, Report};
use portcullis_model::RecordedRef;
use portcullis_recording::Chunk;
use portcullis_recording::document::{Part, Record, Truncation};
use portcullis_recording::segment::Recipients;
use serde_json::Value;

use crate::Masks;

/// How the guard records: built once from `[recording]`.
pub struct Recorder {
    mode: RecordingMode,
    /// Masks what callers send before it is kept.
    profile: Arc<Profile>,
    max_message_bytes: u64,
    max_rows: u64,
    max_request_bytes: u64,
    /// Encrypted recordings: to whom, and how often segments are sealed.
    sealing: Option<Sealing>,
}

/// `[recording] recipients` and when to seal.
pub(crate) struct Sealing {
    pub(crate) recipients: Recipients,
    pub(crate) interval: Duration,
    pub(crate) segment_bytes: u64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// The recorder of `[recording]`; `None` when recording is off.
    pub fn from_config(settings: &Recording, masks: &Masks) -> Result<Option<Recorder>, String> {
        if !settings.enabled() {
            return Ok(None);
        }
        let profile = masks.profile(&settings.profile).ok_or_else(|| {
            format!(
                "recording.profile: no masking profile {:?}",
                settings.profile
            )
        })?;
        let sealing = if settings.recipients.is_empty() {
            None
        } else {
            let recipients = Recipients::parse(&settings.recipients)
                .map_err(|e| format!("recording.recipients: {e}"))?;
            Some(Sealing {
                recipients,
                interval: settings.seal_interval,
                segment_bytes: settings.segment_bytes,
            })
        };
        Ok(Some(Recorder {
            mode: settings.mode,
            profile,
            max_message_bytes: settings.max_message_bytes,
            max_rows: settings.max_rows_per_statement,
            max_request_bytes: settings.max_request_bytes,
            sealing,
        }))
    }

    /// `best-effort`: a request goes on when its recording cannot be kept.
    pub fn best_effort(&self) -> bool {
        self.mode == RecordingMode::BestEffort
    }

    /// How recordings are encrypted, when they are.
    pub(crate) fn sealing(&self) -> Option<&Sealing> {
        self.sealing.as_ref()
    }

    pub(crate) fn tape(self: &Arc<Self>, at: &str) -> Tape {
        Tape {
            recorder: Arc::clone(self),
            started: Instant::now(),
            request: Record::new(at.to_string()),
            answer: Record::new(at.to_string()),
            bytes: 0,
            rows: RowCount::default(),
        }
    }
}

/// Rows of the statement being answered: kept up to the cap, then only counted.
#[derive(Default)]
struct RowCount {
    kept: u64,
    dropped: u64,
    /// Where in the answer's parts the dropped rows would have been.
    at: usize,
}

/// One exchange's recording while it is made.
pub(crate) struct Tape {
    recorder: Arc<Recorder>,
    started: Instant,
    request: Record,
    answer: Record,
    /// Bytes kept so far, request and answer together.
    bytes: u64,
    rows: RowCount,
}

/// Which side of the exchange a message belongs to.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Request,
    Answer,
}

impl Tape {
    fn ms(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }

    pub(crate) fn request(&mut self, kind: &str, mut body: Value) {
        let mut report = Report::default();
        self.recorder.profile.mask_json(&mut body, "$", &mut report);
        self.push(Side::Request, kind, body);
    }

    pub(crate) fn answer(&mut self, kind: &str, mut body: Value) {
        self.end_rows();
        // Errors and notices often quote what the caller sent (`invalid input syntax for
        // type integer: "sk_live_..."`): masked like the request they quote, even where the
        // rule masks nothing.
        if matches!(kind, "error" | "notice") {
            let mut report = Report::default();
            self.recorder.profile.mask_json(&mut body, "$", &mut report);
        }
        self.push(Side::Answer, kind, body);
    }

    pub(crate) fn row(&mut self, body: impl FnOnce() -> Value) {
        if self.rows.kept >= self.recorder.max_rows {
            if self.rows.dropped == 0 {
                self.rows.at = self.answer.parts.len();
            }
            self.rows.dropped += 1;
            return;
        }
        if self.push(Side::Answer, "row", body()) {
            self.rows.kept += 1;
        }
    }

    pub(crate) fn caller_left(&mut self) {
        self.answer.caller_left = true;
    }

    /// A statement's rows are over (a new part that is not a row): note what the cap
    /// dropped, and count the next statement's rows afresh.
    fn end_rows(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        if rows.dropped > 0 {
            self.answer.truncated.push(Truncation {
                part: rows.at,
                unit: "rows".into(),
                kept: rows.kept,
                dropped: rows.dropped,
            });
        }
    }

    /// Adds a part, cut to the message cap; `false` when the request's budget is spent and
    /// the part was only counted (consecutive ones in one truncation entry).
    fn push(&mut self, side: Side, kind: &str, body: Value) -> bool {
        let ms = self.ms();
        let max_message = self.recorder.max_message_bytes;
        let max_request = self.recorder.max_request_bytes;
        let record = match side {
            Side::Request => &mut self.request,
            Side::Answer => &mut self.answer,
        };
        let index = record.parts.len();
        if let Some(last) = record.truncated.last_mut()
            && last.unit == "parts"
            && last.part == index
        {
            // The budget is spent: the rest of the request is counted, not measured.
            last.dropped += 1;
            return false;
        }
        // Sizes are those of the body's JSON text, what the chunk holds before compression:
        // counted as it is written, not written into a buffer only to take its length.
        let size = json_len(&body);
        if self.bytes.saturating_add(size.min(max_message)) > max_request {
            record.truncated.push(Truncation {
                part: index,
                unit: "parts".into(),
                kept: 0,
                dropped: 1,
            });
            return false;
        }
        let body = if size > max_message {
            record.truncated.push(Truncation {
                part: index,
                unit: "bytes".into(),
                kept: max_message,
                dropped: size - max_message,
            });
            cut(&body, max_message as usize)
        } else {
            body
        };
        self.bytes += size.min(max_message);
        record.parts.push(Part {
            ms,
            kind: kind.to_string(),
            body,
        });
        true
    }

    /// The chunks of the exchange and the reference the event carries. A side with
    /// nothing recorded has no chunk.
    pub(crate) fn seal(mut self) -> (RecordedRef, Vec<Chunk>) {
        self.end_rows();
        let mut chunks = Vec::with_capacity(2);
        let mut seal = |record: &Record| {
            let content = serde_json::to_vec(record).expect("a record serializes");
            let chunk = Chunk::seal(&content);
            let id = chunk.id().to_string();
            chunks.push(chunk);
            id
        };
        let request = (!self.request.parts.is_empty() || !self.request.truncated.is_empty())
            .then(|| seal(&self.request));
        let answer = (!self.answer.parts.is_empty()
            || !self.answer.truncated.is_empty()
            || self.answer.caller_left)
            .then(|| seal(&self.answer));
        let sealed = self.recorder.sealing.is_some();
        (
            RecordedRef {
                request,
                answer,
                sealed,
            },
            chunks,
        )
    }
}

/// The length of `value`'s JSON text.
fn json_len(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that cannot fail does not fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A body cut to about `max` bytes of its JSON text, as a string the record marks as cut:
/// what was kept of it is still readable, and the truncation entry says how much is gone.
fn cut(body: &Value, max: usize) -> Value {
    let text = match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(text[..end].to_string())
}
