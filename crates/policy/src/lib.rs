//! Rules to verdicts: the only place Portcullis decides.
//!
//! [`Policy::compile`] turns the `[[rules]]` of a validated [`Config`] into a form built for the
//! hot path: globs become [`GlobSet`](globset::GlobSet)s, `who.kinds` a bit mask, `when`
//! conditions compiled CEL programs, each rule's verdict is built once (so answering clones a
//! few `Arc`s), and rules are indexed by target, by the kind of operation they can apply to
//! and by their decision. A decision therefore looks only at rules that could match, in the
//! order that lets it stop early: deny rules first (any deny wins), then hold rules, then
//! allow rules; nothing matched means deny. A rule without `when` is evaluated without
//! allocating.
//!
//! The crate is pure: no I/O, no clock, no global state, and no protocol's vocabulary: it
//! matches the neutral [`Action`] the adapters build (MCP tools, resources and prompts by
//! [`McpKind`](portcullis_model::McpKind), SQL by the facts the database adapter's classifier
//! reports, HTTP requests by method and path template), and the adapters enforce the
//! [`Verdict`] they get.
//!
//! One idea per module: `compile` builds the rules, `index` sorts them by target, kind
//! and decision, `rule` matches one rule's caller and names, `sql` its SQL sub-table, `http`
//! its HTTP sub-table,
//! `condition` its `when`, `decide` answers one action, `grants` what grants need and
//! cover, `visibility` what a caller may see and which masks apply.
#![forbid(unsafe_code)]

mod compile;
mod condition;
mod decide;
mod globs;
mod grants;
mod http;
mod index;
mod rule;
mod sql;
#[cfg(test)]
mod test_support;
mod visibility;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use condition::CelEnv;
#[cfg(doc)]
use portcullis_config::Config;
use portcullis_config::ConfigError;
use portcullis_model::{Action, Decision, Operation, Verdict};

pub use portcullis_config::STATEMENT_KINDS;

use index::TargetIndex;
use rule::CompiledRule;

/// Why a rule set could not be compiled. Every error names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A rule is invalid (bad CEL in `when`, a glob that does not build); the inner error
    /// carries `file:line: message`.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// A compiled rule set. Cheap to share (`Arc<Policy>`); every method takes `&self`.
pub struct Policy {
    rules: Vec<CompiledRule>,
    /// Rules that can apply to each configured target: the target's own rules and the `*`
    /// rules, merged in file order.
    by_target: HashMap<Box<str>, TargetIndex>,
    /// Only the `*` rules: for a target the configuration does not name.
    wildcard: TargetIndex,
    version: Arc<str>,
    /// The CEL standard environment, built once: every evaluation context borrows it.
    env: Arc<CelEnv>,
}

// The adapters share one policy across tasks and threads; keep that a compile-time fact.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
};

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The policy version: the first 16 hex digits of the SHA-256 of a canonical rendering of
    /// the rules, so the same rules give the same version whatever the file's layout.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How many rules were compiled.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The configured targets' names, sorted (for a person choosing one).
    pub fn targets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_target.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    fn index(&self, target: &str) -> &TargetIndex {
        self.by_target.get(target).unwrap_or(&self.wildcard)
    }

    fn verdict(&self, rule: &CompiledRule, decision: Decision, action: &Action<'_>) -> Verdict {
        let route = match (action.operation, &rule.http) {
            (Operation::Http(req), Some(http)) => http.route(req.path).map(Arc::from),
            _ => None,
        };
        Verdict {
            decision,
            rule: Some(rule.name.clone()),
            policy_version: self.version.clone(),
            grant: None,
            route,
        }
    }
}
