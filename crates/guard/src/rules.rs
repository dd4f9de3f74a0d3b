//! The part of the configuration a reload replaces: who the callers are, what they may do,
//! and how answers are masked.
//!
//! These three are compiled together into one [`Rules`] and swapped whole
//! ([`LiveRules::store`]), so a request never sees a mix: a policy naming a masking profile
//! the masks in force do not have, or keys of one file with the rules of another. A request
//! takes one snapshot when its exchange opens and decides, masks and records with it to the
//! end, even if a reload lands meanwhile.
//!
//! The swap is an [`arc_swap::ArcSwap`]: readers take no lock and never wait for a reload,
//! which matters because every request of every adapter reads it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_identity::Authenticator;
use portcullis_policy::Policy;

use crate::{Masks, Recorder};

/// The rules, identities and masking profiles in force, compiled from one file.
pub struct Rules {
    pub auth: Arc<Authenticator>,
    pub policy: Arc<Policy>,
    pub masks: Arc<Masks>,
    /// Built over `masks` (its profile is one of them); `None` when recording is off.
    pub recorder: Option<Arc<Recorder>>,
    /// Who may read recorded sessions on the admin API: the groups any rule names as
    /// approvers, and the break-glass groups.
    pub recording_readers: Vec<String>,
}

impl Rules {
    pub fn new(
        auth: Arc<Authenticator>,
        policy: Arc<Policy>,
        masks: Masks,
        recorder: Option<Recorder>,
    ) -> Rules {
        Rules {
            auth,
            policy,
            masks: Arc::new(masks),
            recorder: recorder.map(Arc::new),
            recording_readers: Vec::new(),
        }
    }

    /// Sets who may read recorded sessions (see [`Rules::recording_readers`]).
    pub fn with_recording_readers(mut self, readers: Vec<String>) -> Rules {
        self.recording_readers = readers;
        self
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("policy", &self.policy.version())
            .field("auth", &self.auth)
            .field("masks", &self.masks)
            .finish_non_exhaustive()
    }
}

/// The [`Rules`] in force, shared by the guard and the admin API; a reload stores new ones.
#[derive(Clone)]
pub struct LiveRules(Arc<ArcSwap<Rules>>);

impl LiveRules {
    pub fn new(rules: Rules) -> LiveRules {
        LiveRules(Arc::new(ArcSwap::from_pointee(rules)))
    }

    /// The rules in force now. A request keeps what this returns for its whole passage.
    pub fn load(&self) -> Arc<Rules> {
        self.0.load_full()
    }

    /// Puts `rules` in force for every request that starts from now on; requests already
    /// under way finish with the rules they started with. Returns the rules replaced.
    pub fn store(&self, rules: Rules) -> Arc<Rules> {
        self.0.swap(Arc::new(rules))
    }
}

impl std::fmt::Debug for LiveRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.load().fmt(f)
    }
}
