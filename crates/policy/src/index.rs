//! The rule index: for each target, the rules that can apply to each kind of operation,
//! split by decision, so a decision looks only at rules that could match.

use portcullis_config::RuleDecision;
use portcullis_model::OperationKind;

use crate::rule::CompiledRule;

/// Rule indices (into `Policy::rules`) for one kind of operation, split by decision, each in
/// file order.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    pub(crate) deny: Box<[usize]>,
    pub(crate) hold: Box<[usize]>,
    pub(crate) allow: Box<[usize]>,
}

#[derive(Debug, Default)]
pub(crate) struct TargetIndex {
    /// Indexed by [`OperationKind::index`].
    kinds: [Bucket; OperationKind::COUNT],
}

impl TargetIndex {
    pub(crate) fn build<'a>(
        rules: impl Iterator<Item = (usize, &'a CompiledRule)> + Clone,
    ) -> TargetIndex {
        let bucket = |kind: OperationKind| {
            let pick = |decision: RuleDecision| {
                rules
                    .clone()
                    .filter(|(_, r)| r.kind == decision && r.covers(kind))
                    .map(|(i, _)| i)
                    .collect()
            };
            Bucket {
                deny: pick(RuleDecision::Deny),
                hold: pick(RuleDecision::Hold),
                allow: pick(RuleDecision::Allow),
            }
        };
        TargetIndex {
            kinds: OperationKind::ALL.map(bucket),
        }
    }

    /// The rules that can apply to operations of `kind`.
    pub(crate) fn bucket(&self, kind: OperationKind) -> &Bucket {
        &self.kinds[kind.index()]
    }

    /// Every bucket, each kind's once.
    pub(crate) fn buckets(&self) -> impl Iterator<Item = &Bucket> {
        self.kinds.iter()
    }
}
