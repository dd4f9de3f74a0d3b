//! A sink's filter: which events it receives in full. The others are sent as leaf hashes
//! (see [`crate::record::OmittedRecord`]).

use globset::{Glob, GlobSet, GlobSetBuilder};
use portcullis_config::SinkFilter;

use crate::record::EventRecord;

/// A [`SinkFilter`], compiled.
#[derive(Debug, Clone)]
pub struct Filter {
    event_types: Option<GlobSet>,
    outcomes: Vec<String>,
    targets: Option<GlobSet>,
}

impl Filter {
    /// Compiles the filter; the patterns were checked when the configuration was loaded.
    pub fn new(filter: &SinkFilter) -> Result<Filter, globset::Error> {
        let set = |patterns: &[String]| -> Result<Option<GlobSet>, globset::Error> {
            if patterns.is_empty() {
                return Ok(None);
            }
            let mut builder = GlobSetBuilder::new();
            for pattern in patterns {
                builder.add(Glob::new(pattern)?);
            }
            builder.build().map(Some)
        };
        Ok(Filter {
            event_types: set(&filter.event_types)?,
            outcomes: filter.outcomes.clone(),
            targets: set(&filter.targets)?,
        })
    }

    /// Whether the event is sent in full.
    pub fn accepts(&self, event: &EventRecord) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|set| set.is_match(&event.event_type))
            && (self.outcomes.is_empty() || self.outcomes.contains(&event.outcome))
            && self.targets.as_ref().is_none_or(|set| {
                event
                    .event
                    .target
                    .as_deref()
                    .is_some_and(|target| set.is_match(target))
            })
    }
}

#[cfg(test)]
mod tests {
    use portcullis_audit::Leaf;

    use super::*;

    fn event(event_type: &str, outcome: &str, target: Option<&str>) -> EventRecord {
        let target = target
            .map(|t| format!(",\"target\":\"{t}\""))
            .unwrap_or_default();
        EventRecord::from_leaf(Leaf {
            index: 0,
            body: format!(
                r#"{{"gateway":"gw","id":"e","outcome":"{outcome}","time":"t"{target},"type":"{event_type}"}}"#
            ),
            leaf_hash: [0; 32],
        })
        .unwrap()
    }

    #[test]
    fn each_list_narrows_and_empty_lists_accept_everything() {
        let everything = Filter::new(&SinkFilter::default()).unwrap();
        assert!(everything.accepts(&event("gateway.start", "info", None)));
        let filter = Filter::new(&SinkFilter {
            event_types: vec!["approval.*".into(), "request".into()],
            outcomes: vec!["denied".into(), "success".into()],
            targets: vec!["billing-*".into()],
        })
        .unwrap();
        assert!(filter.accepts(&event("request", "denied", Some("billing-db"))));
        assert!(!filter.accepts(&event("request", "denied", Some("hr-db"))));
        assert!(!filter.accepts(&event("request", "info", Some("billing-db"))));
        assert!(!filter.accepts(&event("session.start", "denied", Some("billing-db"))));
        // A target filter leaves out events that have no target.
        assert!(!filter.accepts(&event("request", "denied", None)));
    }
}
