//! The guard: the one request pipeline every protocol adapter calls.
//!
//! An adapter owns its wire protocol and nothing else. For each request it
//!
//! 1. identifies the caller ([`Guard::identify`]: credential checks, failure throttling, the
//!    `auth.failure` event);
//! 2. opens an [`Exchange`] ([`Guard::exchange`]), which carries the request's one audit event
//!    from the start;
//! 3. turns its message into a protocol-neutral [`Action`] and asks for a [`Verdict`]
//!    ([`Exchange::decide`]: grants are looked up here, policy decides);
//! 4. on a hold, waits for people ([`Exchange::hold`]), telling the caller through a
//!    [`HoldChannel`] it implements (an MCP progress notification, a PostgreSQL NOTICE);
//! 5. forwards, masks with the profiles compiled here ([`Guard::masks`]), and
//! 6. finishes the exchange ([`Exchange::finish`] or [`Exchange::refuse`]), which yields the
//!    event to record before the answer is released.
//!
//! Every refusal is a [`Refusal`] whose [`RefusalKind`] fixes the audit outcome; an adapter
//! renders it to its wire form in one function. An exchange dropped unfinished records the
//! request as failed, so every request ends in exactly one event whatever path it takes.
//! Adapters do not use the policy engine, the approvals service or the audit writer
//! directly: what they need of them is here.
//!
//! The identities, policy and masking profiles are [`Rules`], which a configuration reload
//! replaces whole ([`Guard::reload`]); an exchange keeps the rules it opened with.
#![forbid(unsafe_code)]

mod exchange;
mod hold;
pub mod masks;
pub mod metrics;
mod recording;
mod refusal;
mod rules;
mod sealer;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::net::SocketAddr;
use std::sync::Arc;

use portcullis_approvals::Approvals;
use portcullis_audit::{AuditError, AuditLog};
use portcullis_identity::Authenticator;
use portcullis_limits::Admission;
use portcullis_model::{
    AuditEvent, EventType, Identity, McpKind, Outcome, PayloadDigest, TargetKind,
};
use portcullis_policy::Policy;

pub use exchange::{Exchange, Finished};
pub use hold::{HoldAsk, HoldChannel, Released};
pub use masks::{DEFAULT_PROFILE, Masks, summary};
pub use portcullis_approvals::{Approval, Status as ApprovalStatus, Vote};
pub use portcullis_audit::AuditError as RecordError;
pub use recording::Recorder;
pub use refusal::{Interruption, Refusal, RefusalKind, UpstreamFault};
pub use rules::{LiveRules, Rules};

/// The shared phases' state: built once by the binary and handed to every adapter.
pub struct Guard {
    /// Identities, policy and masks: what a configuration reload replaces.
    rules: LiveRules,
    approvals: Approvals,
    audit: AuditLog,
    /// Encrypted recordings: the open segment and its sealing.
    sealer: Option<Arc<sealer::Sealer>>,
    metrics: Arc<metrics::Metrics>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Where a request comes from and on what: the facts every event of an exchange carries.
#[derive(Debug, Clone)]
pub struct Origin {
    pub identity: Arc<Identity>,
    /// The caller's network address.
    pub source: String,
    pub target: Arc<str>,
    /// The adapter's protocol: requests, latencies and upstream errors are counted by it.
    pub kind: TargetKind,
    /// The adapter's session, when the protocol has one.
    pub session: Option<String>,
}

impl Guard {
    pub fn new(
        auth: Arc<Authenticator>,
        policy: Arc<Policy>,
        approvals: Approvals,
        audit: AuditLog,
        masks: Masks,
        recorder: Option<Recorder>,
    ) -> Arc<Guard> {
        Guard::with_rules(
            LiveRules::new(Rules::new(auth, policy, masks, recorder)),
            approvals,
            audit,
        )
    }

    /// A guard over rules shared with others (the admin API), which a configuration reload
    /// replaces ([`Guard::reload`]). Whether and how sessions are recorded and sealed is
    /// fixed here, from the recorder of the first rules: `[recording]` needs a restart.
    pub fn with_rules(rules: LiveRules, approvals: Approvals, audit: AuditLog) -> Arc<Guard> {
        let recorder = rules.load().recorder.clone();
        let metrics = Arc::new(metrics::Metrics::new());
        // The audit writer reports each commit's latency and size to the metrics. A log
        // that already has an observer (a second guard over one log, in tests) keeps it.
        if audit.observe_commits(metrics.clone()).is_err() {
            tracing::debug!("the audit log already reports its commits elsewhere");
        }
        let sealer = recorder.as_ref().and_then(|r| {
            let sealing = r.sealing()?;
            let sealer = Arc::new(sealer::Sealer::new(
                audit.clone(),
                sealing.recipients.clone(),
                sealing.segment_bytes,
                r.best_effort(),
            ));
            sealer.start(sealing.interval);
            Some(sealer)
        });
        Arc::new(Guard {
            rules,
            approvals,
            audit,
            sealer,
            metrics,
        })
    }

    // ------------------------------------------------------------------ identify

    /// Identifies the caller behind `credential` (an OIDC token or an API key), coming from
    /// `source` to `target`. A source over its budget of failed attempts is refused without a
    /// check ([`RefusalKind::Throttled`]); a failed check is counted and recorded as
    /// `auth.failure`.
    pub async fn identify(
        &self,
        credential: &str,
        source: SocketAddr,
        target: Option<&str>,
    ) -> Result<Identity, Refusal> {
        let rules = self.rules.load();
        let failures = rules.auth.failures();
        if let Admission::Throttled { retry_after } = failures.admit(source.ip()) {
            let mut refusal = Refusal::new(
                RefusalKind::Throttled,
                format!(
                    "too many failed authentications from your address; credentials from it are not checked for {}s",
                    retry_after.as_secs().max(1)
                ),
            );
            refusal.retry_after = Some(retry_after);
            return Err(refusal);
        }
        match rules.auth.authenticate(credential).await {
            Ok(identity) => Ok(identity),
            Err(e) => {
                // Counted: past the limit the source is refused unchecked (above), and those
                // refusals are recorded as one summary, not an fsync each.
                failures.failed(source.ip());
                self.record_auth_failure(source, target, &format!("{}: {e}", e.code()))
                    .await;
                Err(Refusal::new(RefusalKind::Unauthenticated, e.to_string()))
            }
        }
    }

    /// Records an `auth.failure` the adapter found itself (a user name that does not match
    /// the credential's identity, say).
    pub async fn record_auth_failure(
        &self,
        source: SocketAddr,
        target: Option<&str>,
        detail: &str,
    ) {
        let mut ev = self.audit.event(EventType::AuthFailure, Outcome::Rejected);
        ev.source = Some(source.to_string());
        ev.target = target.map(str::to_string);
        ev.detail = Some(detail.to_string());
        if let Err(e) = self.audit.record(ev).await {
            tracing::error!("cannot record an authentication failure: {e}");
        }
    }

    /// The request metrics every exchange counts into (served at `/metrics`).
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// Counts an upstream failure that no request's refusal carries (a PostgreSQL login the
    /// gateway could not complete, a connection lost between requests). Failures that
    /// refuse a request are counted by [`Exchange::refuse`].
    pub fn upstream_failed(&self, target: &str, kind: TargetKind, fault: UpstreamFault) {
        self.metrics.upstream_error(target, kind, fault);
    }

    /// Events handed to the audit writer and not committed yet (for `/metrics`).
    pub fn audit_queue_depth(&self) -> u64 {
        self.audit.queue_depth()
    }

    /// Whether any OIDC issuer is configured (adapters then advertise where to sign in).
    pub fn has_oidc(&self) -> bool {
        self.rules.load().auth.has_oidc()
    }

    /// The OIDC issuers in force (what the protected-resource metadata names).
    pub fn issuers(&self) -> Vec<String> {
        self.rules.load().auth.issuers()
    }

    // ------------------------------------------------------------------ reload

    /// The rules in force, shared: the admin API reads the same ones.
    pub fn live_rules(&self) -> &LiveRules {
        &self.rules
    }

    /// Puts new rules in force (a configuration reload): exchanges opened from now on use
    /// them; those under way finish with the ones they opened with. The recorder of the new
    /// rules must come from the same `[recording]` settings (the sealing is not replaced).
    pub fn reload(&self, rules: Rules) -> Arc<Rules> {
        self.rules.store(rules)
    }

    // ------------------------------------------------------------------ exchanges

    /// Opens the exchange of one request: its `request` event exists from here on, with
    /// the caller's facts, and is recorded exactly once.
    pub fn exchange(self: &Arc<Self>, origin: &Origin) -> Exchange {
        let rules = self.rules.load();
        let mut ev = self.audit.event(EventType::Request, Outcome::Denied);
        ev.source = Some(origin.source.clone());
        ev.identity = Some((*origin.identity).clone());
        ev.target = Some(origin.target.to_string());
        ev.session = origin.session.clone();
        ev.policy_version = Some(rules.policy.version().to_string());
        Exchange::new(
            self.clone(),
            rules,
            origin.identity.clone(),
            origin.kind,
            ev,
        )
    }

    /// Records the events of finished exchanges together (a PostgreSQL batch ends at its
    /// `ReadyForQuery`): one group commit for all of them.
    pub async fn record_all(&self, finished: Vec<Finished>) -> Result<(), AuditError> {
        let events = finished.into_iter().map(Finished::into_parts);
        let results =
            futures_util::future::join_all(events.map(|(ev, chunks)| self.store(ev, chunks))).await;
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    // ------------------------------------------------------------------ policy

    /// The version of the policy in force, which every event names.
    pub fn policy_version(&self) -> String {
        self.rules.load().policy.version().to_string()
    }

    /// Whether any rule on `target` applies to `identity`: a protocol request (a list, a
    /// ping) reaches the upstream only for such a caller.
    pub fn any_rule_for(&self, identity: &Identity, target: &str) -> bool {
        self.rules.load().policy.any_rule_for(identity, target)
    }

    /// Whether `identity` may see `name` in a list of `target` (some rule allows or holds
    /// acting on the tool, resource or prompt of that name).
    pub fn visible(&self, identity: &Identity, target: &str, kind: McpKind, name: &str) -> bool {
        self.rules
            .load()
            .policy
            .visible(identity, target, kind, name)
    }

    /// Every masking profile in force, and the names of those the allow rules that apply
    /// to `identity` on `target` name, from the same rules (outside an exchange; in one,
    /// [`Exchange::masks`] and [`Exchange::masks_for`] keep to its rules).
    pub fn masks_with_names(
        &self,
        identity: &Identity,
        target: &str,
    ) -> (Arc<Masks>, Vec<Arc<str>>) {
        let rules = self.rules.load();
        (
            rules.masks.clone(),
            rules.policy.masks_for(identity, target),
        )
    }

    /// The masking profiles named by the allow rules that apply to `identity` on `target`
    /// (outside an exchange; in one, [`Exchange::masks_for`] keeps to its rules).
    pub fn masks_for(&self, identity: &Identity, target: &str) -> Vec<Arc<str>> {
        self.rules.load().policy.masks_for(identity, target)
    }

    // ------------------------------------------------------------------ masks

    /// Every masking profile in force, compiled (outside an exchange; in one,
    /// [`Exchange::masks`] keeps to its rules).
    pub fn masks(&self) -> Arc<Masks> {
        self.rules.load().masks.clone()
    }

    // ------------------------------------------------------------------ approvals

    /// Where people decide, when the admin API is served.
    pub fn admin_url(&self) -> Option<&str> {
        self.approvals.admin_url()
    }

    /// Where a person decides approval `id` (the console's page, else the admin API's).
    pub fn decision_url(&self, id: &str) -> Option<String> {
        self.approvals.decision_url(id)
    }

    // ------------------------------------------------------------------ audit

    /// An event of another type than a request (session start and end, tool pins, column
    /// discovery), with the gateway's facts filled in.
    pub fn event(&self, event_type: EventType, outcome: Outcome) -> AuditEvent {
        self.audit.event(event_type, outcome)
    }

    /// Records an event that is not a request's (those are recorded through their
    /// exchange).
    pub fn record(
        &self,
        event: AuditEvent,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        self.audit.record(event)
    }

    /// Stores a request's event with the recorded chunks it names: in one transaction, or,
    /// when recordings are encrypted, the event now and the chunks in the open segment.
    ///
    /// A plain function returning the future, not an async fn: the event becomes its row
    /// now, so the future (and every future awaiting it) does not carry the event.
    fn store(
        &self,
        event: AuditEvent,
        chunks: Vec<portcullis_recording::Chunk>,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        // Encrypted recordings go to the sealer once the event has its number; plain ones
        // are written with the event.
        let (sealer, sealed, kept) = match &self.sealer {
            Some(sealer) if !chunks.is_empty() => (Some(sealer.clone()), chunks, Vec::new()),
            _ => (None, Vec::new(), chunks),
        };
        let recording = self.audit.record_with(event, kept);
        async move {
            let seq = recording.await?;
            if let Some(sealer) = sealer {
                sealer.add(seq, sealed);
            }
            Ok(seq)
        }
    }

    /// Seals the recordings not yet sealed and stops sealing: the binary calls it at a
    /// clean stop, after the last request and before the audit log closes. Without
    /// encryption there is nothing to do.
    pub async fn close_recording(&self) -> Result<(), String> {
        match &self.sealer {
            Some(sealer) => sealer.close().await,
            None => Ok(()),
        }
    }

    /// Seals the open segment now (what the interval does), for tests and the admin API.
    pub async fn seal_recordings(&self) -> Result<(), String> {
        match &self.sealer {
            Some(sealer) => sealer.seal().await,
            None => Ok(()),
        }
    }

    /// Why recordings cannot be kept now (strict mode, a seal failed), if they cannot.
    pub fn recording_unavailable(&self) -> Option<String> {
        self.sealer.as_ref().and_then(|s| s.unavailable())
    }

    /// Whether requests are recorded.
    pub fn records(&self) -> bool {
        self.rules.load().recorder.is_some()
    }

    /// The digest of a payload as events keep it (keyed: a short secret cannot be found by
    /// hashing candidates).
    pub fn digest(&self, payload: &[u8]) -> PayloadDigest {
        self.audit.digest(payload)
    }

    /// Why the audit log cannot record now (a full volume, a failed write), or recordings
    /// cannot be sealed in strict mode, if either: a request must not go through then.
    pub fn audit_unavailable(&self) -> Option<String> {
        self.audit.unavailable().or_else(|| {
            self.recording_unavailable()
                .map(|why| format!("recordings cannot be sealed: {why}"))
        })
    }
}

#[cfg(test)]
mod tests;
