//! The space reserve: free space kept on the audit store's file system so that every action
//! the gateway lets through can still be recorded.
//!
//! The store learns it is full only when a write fails, and by then the action that write
//! describes has already reached its target. So the gateway asks before forwarding
//! ([`AuditLog::unavailable`](crate::AuditLog::unavailable)), and this answers "no" while the
//! file system has less free space than the reserve. Events themselves are still written
//! below the reserve (the refusals, session ends), which is what the reserve is for.
//!
//! The free space is read with `statvfs(2)` at most every [`MEASURE_INTERVAL`]: the reserve
//! must cover what the gateway and anything else on that file system can write in that time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a measurement of the free space is trusted.
const MEASURE_INTERVAL: Duration = Duration::from_millis(250);

/// The default reserve: this many bytes...
const DEFAULT_RESERVE: u64 = 64 << 20;
/// ... or this fraction (1/20 = 5%) of the file system, if that is smaller, so that a small
/// volume is not refused from the start.
const DEFAULT_RESERVE_DIVISOR: u64 = 20;

/// Stands for "not configured: use the default".
const RESERVE_DEFAULT: u64 = u64::MAX;

pub(crate) struct SpaceReserve {
    dir: PathBuf,
    /// Bytes, or [`RESERVE_DEFAULT`]; 0: no check.
    reserve: AtomicU64,
    /// The last measurement: when, and the shortfall it found (`None`: enough space).
    last: Mutex<Option<(Instant, Option<String>)>>,
}

impl SpaceReserve {
    pub(crate) fn new(dir: PathBuf) -> SpaceReserve {
        SpaceReserve {
            dir,
            reserve: AtomicU64::new(RESERVE_DEFAULT),
            last: Mutex::new(None),
        }
    }

    /// `None`: the default; `Some(0)`: no check.
    pub(crate) fn set(&self, bytes: Option<u64>) {
        self.reserve
            .store(bytes.unwrap_or(RESERVE_DEFAULT), Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why nothing may be forwarded now, if the free space is below the reserve.
    pub(crate) fn shortfall(&self) -> Option<String> {
        let configured = self.reserve.load(Ordering::Relaxed);
        if configured == 0 {
            return None;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, shortfall)) = &*last
            && at.elapsed() < MEASURE_INTERVAL
        {
            return shortfall.clone();
        }
        let shortfall = self.measure(configured);
        *last = Some((Instant::now(), shortfall.clone()));
        shortfall
    }

    fn measure(&self, configured: u64) -> Option<String> {
        let stat = match rustix::fs::statvfs(&self.dir) {
            Ok(stat) => stat,
            // Fail closed: space that cannot be measured is not known to be there.
            Err(e) => {
                return Some(format!(
                    "cannot measure the free space of {} ({e})",
                    self.dir.display()
                ));
            }
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let size = stat.f_blocks.saturating_mul(stat.f_frsize);
        let reserve = match configured {
            RESERVE_DEFAULT => DEFAULT_RESERVE.min(size / DEFAULT_RESERVE_DIVISOR),
            bytes => bytes,
        };
        (free < reserve).then(|| {
            format!(
                "only {free} bytes are free on the file system of {}, less than the {reserve} bytes kept in reserve for audit events (audit.space_reserve); free space there",
                self.dir.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_free_space_is_a_shortfall() {
        let dir = tempfile::tempdir().unwrap();
        let space = SpaceReserve::new(dir.path().to_path_buf());
        space.set(Some(u64::MAX - 1));
        let why = space
            .shortfall()
            .expect("no file system has that much free");
        assert!(why.contains("audit.space_reserve"), "{why}");
        space.set(Some(0));
        assert_eq!(space.shortfall(), None, "0 turns the check off");
        space.set(Some(1));
        assert_eq!(space.shortfall(), None);
    }
}
