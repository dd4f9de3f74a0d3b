//! The automated control checks: one stated rule per control (`controls::CHECKS`), applied
//! to the facts and the verification.
//! (Being written.)

use crate::collect::Facts;
use crate::report::{ControlResult, Integrity};

/// One result per entry of `controls::CHECKS`, in that order.
pub fn assess(_facts: &Facts, _integrity: &Integrity) -> Vec<ControlResult> {
    Vec::new()
}
