//! What was found where: counts per detector and JSON path, never values.

/// Distinct `(detector, path)` entries a report itemises; past this, occurrences are only
/// counted, so a hostile document with a million distinct paths cannot grow a report (or the
/// audit event made from it) without bound.
pub const MAX_FINDINGS: usize = 64;

/// One aggregated finding: `count` matches of `detector` in the text at `path`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub detector: String,
    pub path: String,
    pub count: u32,
}

/// Findings aggregated by `(detector, path)`, in the order first seen, at most
/// [`MAX_FINDINGS`] of them; further occurrences are counted in [`Report::overflow`] (and
/// their detectors still listed by [`Report::detectors`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    findings: Vec<Finding>,
    overflow: u32,
    /// Detectors seen only in overflowed occurrences, so `detectors()` stays complete.
    overflow_detectors: Vec<String>,
}

impl Report {
    /// No finding at all (itemised or overflowed).
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.overflow == 0
    }

    /// The itemised findings, in the order first seen.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Occurrences not itemised because the report already had [`MAX_FINDINGS`] entries.
    pub fn overflow(&self) -> u32 {
        self.overflow
    }

    /// Every occurrence, itemised or not.
    pub fn total(&self) -> u64 {
        self.findings
            .iter()
            .map(|f| u64::from(f.count))
            .sum::<u64>()
            + u64::from(self.overflow)
    }

    /// The distinct detector names that fired, sorted.
    pub fn detectors(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .findings
            .iter()
            .map(|f| f.detector.clone())
            .chain(self.overflow_detectors.iter().cloned())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Adds another report's findings to this one (counts of equal entries add up).
    pub fn merge(&mut self, other: Report) {
        for f in other.findings {
            self.add(&f.detector, &f.path, f.count);
        }
        if other.overflow > 0 {
            self.overflow = self.overflow.saturating_add(other.overflow);
            for d in other.overflow_detectors {
                self.note_overflow_detector(&d);
            }
        }
    }

    /// Records `count` occurrences of `detector` at `path`. Allocates only for a new entry.
    pub(crate) fn add(&mut self, detector: &str, path: &str, count: u32) {
        if let Some(f) = self
            .findings
            .iter_mut()
            .find(|f| f.detector == detector && f.path == path)
        {
            f.count = f.count.saturating_add(count);
            return;
        }
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                detector: detector.to_string(),
                path: path.to_string(),
                count,
            });
        } else {
            self.overflow = self.overflow.saturating_add(count);
            self.note_overflow_detector(detector);
        }
    }

    fn note_overflow_detector(&mut self, detector: &str) {
        if !self.findings.iter().any(|f| f.detector == detector)
            && !self.overflow_detectors.iter().any(|d| d == detector)
        {
            self.overflow_detectors.push(detector.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_in_order_and_caps() {
        let mut r = Report::default();
        assert!(r.is_empty());
        r.add("email", "$.a", 1);
        r.add("phone", "$.b", 2);
        r.add("email", "$.a", 1);
        assert_eq!(
            r.findings(),
            &[
                Finding {
                    detector: "email".into(),
                    path: "$.a".into(),
                    count: 2
                },
                Finding {
                    detector: "phone".into(),
                    path: "$.b".into(),
                    count: 2
                },
            ]
        );
        for i in 0..100 {
            r.add("ssn", &format!("$[{i}]"), 1);
        }
        r.add("jwt", "$.z", 3);
        assert_eq!(r.findings().len(), MAX_FINDINGS);
        assert_eq!(r.overflow(), 100 - (MAX_FINDINGS as u32 - 2) + 3);
        assert_eq!(r.detectors(), vec!["email", "jwt", "phone", "ssn"]);
        assert_eq!(r.total(), 4 + 100 + 3);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Report::default();
        a.add("email", "$", 1);
        let mut b = Report::default();
        b.add("email", "$", 2);
        b.add("ipv4", "$.x", 1);
        a.merge(b);
        assert_eq!(a.findings()[0].count, 3);
        assert_eq!(a.detectors(), vec!["email", "ipv4"]);
    }
}
