//! The log's verification, as far as a period needs it.
//! (Being written.)

use std::path::{Path, PathBuf};

use portcullis_audit::checkpoint::Verifier;
use portcullis_audit::witness::CosignatureVerifier;

use crate::Period;
use crate::report::{CheckedWith, Integrity};

/// What verification is run with: what `portcullis audit verify` takes.
pub struct VerifyInputs {
    pub key: Verifier,
    pub published: Vec<PathBuf>,
    pub witnesses: Vec<CosignatureVerifier>,
}

/// Verifies the log in `data_dir` and says what it means for `period`, whose last event is
/// `events_to_period_end`.
pub fn check(
    _data_dir: &Path,
    _inputs: &VerifyInputs,
    _period: &Period,
    events_to_period_end: u64,
) -> Integrity {
    Integrity {
        verified: false,
        failure: Some("not implemented yet".into()),
        checked_with: CheckedWith {
            key: String::new(),
            published_dirs: 0,
            witnesses: Vec::new(),
        },
        origin: None,
        events_to_period_end,
        period_events: 0,
        first_seq: None,
        last_seq: None,
        covering_checkpoint: None,
        checkpoints_signed: 0,
        checkpoints_published: 0,
        cosignatures: Vec::new(),
        last_cosignature: None,
        cosignature_age_seconds: None,
        warnings: Vec::new(),
    }
}
