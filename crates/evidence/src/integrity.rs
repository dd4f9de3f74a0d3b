//! The log's verification, as far as a period needs it.
//!
//! The report runs exactly what `portcullis audit verify` runs (`portcullis_audit::verify`)
//! over the whole log, and keeps what speaks for the period: the smallest verified
//! checkpoint that covers every event up to the period's end, the checkpoints and witness
//! cosignatures up to it, and the age of the newest of those cosignatures at the period's
//! end (0 when it came after the end). Only
//! facts fixed by the period and the log go in, never the time the report was made, so a
//! report of a closed period reads the same whenever it is regenerated, and a log that was
//! tampered with meanwhile shows as exactly that.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use portcullis_audit::checkpoint::Verifier;
use portcullis_audit::verify::{self, Failure, Summary};
use portcullis_audit::witness::CosignatureVerifier;

use crate::Period;
use crate::period::stamp;
use crate::report::{CheckedWith, CheckpointSeen, CosignatureSeen, Integrity};

/// What verification is run with: what `portcullis audit verify` takes.
pub struct VerifyInputs {
    /// The gateway's checkpoint key (`audit.pub`).
    pub key: Verifier,
    /// Directories of published checkpoints.
    pub published: Vec<PathBuf>,
    /// Witness cosignature keys.
    pub witnesses: Vec<CosignatureVerifier>,
}

impl VerifyInputs {
    fn checked_with(&self) -> CheckedWith {
        CheckedWith {
            key: format!("{}+{}", self.key.name, hex::encode(self.key.key_id)),
            published_dirs: self.published.len() as u64,
            witnesses: self.witnesses.iter().map(|w| w.name.clone()).collect(),
        }
    }
}

/// Verifies the whole log in `data_dir`: exactly `portcullis audit verify`.
pub fn verify(data_dir: &Path, inputs: &VerifyInputs) -> Result<Summary, Failure> {
    verify::verify(
        data_dir,
        &inputs.key,
        &inputs.published,
        &inputs.witnesses,
        &mut |_, _| {},
    )
}

/// What the verification `outcome` means for `period`, whose last event is
/// `events_to_period_end` (the highest sequence number stamped before the period's end).
pub fn for_period(
    outcome: Result<Summary, Failure>,
    inputs: &VerifyInputs,
    period: &Period,
    first_seq: Option<u64>,
    events_to_period_end: u64,
) -> Integrity {
    let mut integrity = Integrity {
        verified: outcome.is_ok(),
        failure: None,
        checked_with: inputs.checked_with(),
        origin: None,
        events_to_period_end,
        period_events: 0,
        first_seq,
        last_seq: None,
        covering_checkpoint: None,
        checkpoints_signed: 0,
        checkpoints_published: 0,
        cosignatures: Vec::new(),
        last_cosignature: None,
        cosignature_age_seconds: None,
    };
    match outcome {
        Ok(summary) => summarize(&mut integrity, summary, period),
        Err(failure) => integrity.failure = Some(failure.to_string()),
    }
    integrity
}

/// Fills in what the verified log says about the period.
fn summarize(integrity: &mut Integrity, summary: Summary, period: &Period) {
    let end = integrity.events_to_period_end;
    integrity.origin = summary.origin;
    // Whole-log warnings (an unsealed tail, a crash after the period) are left to `audit
    // verify`: they change as the log grows, and a closed period's report must not.
    // The smallest checkpoint at or past the period's last event vouches for all of it;
    // none: the period's newest events are not signed yet.
    let covering = summary.checkpoints.iter().find(|cp| cp.size >= end);
    let limit = covering.map_or(end, |cp| cp.size);
    // From the last checkpoint before the period: the list stays the period's, not the
    // log's whole history.
    let start = integrity.first_seq.unwrap_or(end + 1).saturating_sub(1);
    let from = summary
        .checkpoints
        .iter()
        .filter(|cp| cp.size <= start)
        .map(|cp| cp.size)
        .next_back()
        .unwrap_or(0);
    integrity.covering_checkpoint = covering.map(|cp| CheckpointSeen {
        size: cp.size,
        root: B64.encode(cp.root),
        published: cp.published,
    });
    let upto = summary
        .checkpoints
        .iter()
        .filter(|cp| cp.size >= from && cp.size <= limit);
    let until = period.until_time();
    let mut newest: Option<DateTime<Utc>> = None;
    for cp in upto {
        integrity.checkpoints_signed += 1;
        integrity.checkpoints_published += u64::from(cp.published);
        for (witness, time) in &cp.cosignatures {
            let Some(at) = DateTime::from_timestamp(*time as i64, 0) else {
                continue;
            };
            integrity.cosignatures.push(CosignatureSeen {
                witness: witness.clone(),
                size: cp.size,
                time: stamp(at),
            });
            // The covering checkpoint is often cosigned just after the period's end: that
            // counts (age 0), it is the cosignature that vouches for the period.
            if newest.is_none_or(|n| at > n) {
                newest = Some(at);
            }
        }
    }
    if let Some(at) = newest {
        integrity.last_cosignature = Some(stamp(at));
        // A witness that cosigned the covering checkpoint vouches for the whole period,
        // however long ago (a quiet period adds no checkpoint to cosign): no lag.
        let covering_cosigned = covering.is_some_and(|cp| !cp.cosignatures.is_empty());
        let lag = if covering_cosigned {
            0
        } else {
            (until - at).num_seconds().max(0) as u64
        };
        integrity.cosignature_age_seconds = Some(lag);
    }
}

/// The verification of several logs as one: verified only if every log is, the first
/// failure of each named by its log, the counts summed, the witnessing lag the worst. What
/// is only true of one log (its origin, seq range, covering checkpoint) is left out: each
/// log's own is in [`crate::report::LogReport`].
pub fn together(logs: &[crate::report::LogReport]) -> Integrity {
    let failures: Vec<String> = logs
        .iter()
        .filter_map(
            |log| match (&log.integrity.failure, log.integrity.verified) {
                (Some(failure), _) => Some(format!("log {}: {failure}", log.origin)),
                (None, false) => Some(format!("log {}: not verified", log.origin)),
                (None, true) => None,
            },
        )
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for log in logs {
        if !keys.contains(&log.integrity.checked_with.key) {
            keys.push(log.integrity.checked_with.key.clone());
        }
    }
    let first = logs.first().map(|l| &l.integrity.checked_with);
    Integrity {
        verified: failures.is_empty(),
        failure: (!failures.is_empty()).then(|| failures.join("; ")),
        checked_with: CheckedWith {
            key: keys.join(", "),
            published_dirs: first.map_or(0, |c| c.published_dirs),
            witnesses: first.map(|c| c.witnesses.clone()).unwrap_or_default(),
        },
        origin: None,
        events_to_period_end: logs.iter().map(|l| l.integrity.events_to_period_end).sum(),
        period_events: 0,
        first_seq: None,
        last_seq: None,
        covering_checkpoint: None,
        checkpoints_signed: logs.iter().map(|l| l.integrity.checkpoints_signed).sum(),
        checkpoints_published: logs.iter().map(|l| l.integrity.checkpoints_published).sum(),
        cosignatures: logs
            .iter()
            .flat_map(|l| l.integrity.cosignatures.iter().cloned())
            .collect(),
        last_cosignature: logs
            .iter()
            .filter_map(|l| l.integrity.last_cosignature.clone())
            .max(),
        cosignature_age_seconds: logs
            .iter()
            .map(|l| l.integrity.cosignature_age_seconds)
            .max()
            .flatten(),
    }
}
