//! Holds, approvals and just-in-time grants: separation of duties on the request path
//! (NIST SP 800-53 AC-5, AC-6).
//!
//! A request whose rule says `hold` becomes an [`Approval`] that waits in the gateway while
//! approvers are notified; people decide through the admin API (or the CLI, which calls it).
//! A requester never approves their own request; members of a break-glass group may, with a
//! reason, and the audit log flags it. A grant request is the same approval, and approving
//! it issues a time-boxed [`Grant`] that `requires_grant` rules look for.
//!
//! Every step is an audit event linked to the approval by id (`approval.requested`,
//! `approval.notified`, `approval.approved`/`denied`, `approval.released`, `approval.expired`,
//! `approval.cancelled`, `grant.issued`/`revoked`/`expired`), written before the step takes
//! effect: a decision the audit log cannot record is refused. Approvals and grants live in
//! `approvals.db` in the data directory; a held request whose gateway restarts is cancelled
//! (its caller's connection is gone), its record kept.
//!
//! All state changes go through one async lock, so two approvers deciding at once are
//! ordered: the second sees the first's decision.
#![forbid(unsafe_code)]

pub mod notify;
mod store;
mod types;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use portcullis_audit::AuditLog;
use portcullis_model::{
    ActiveGrant, ApprovalRequirement, AuditEvent, EventType, Identity, Outcome, PayloadDigest,
};
use portcullis_state::{Change, Shared};
use rand::RngCore as _;
use tokio::sync::watch;

pub use notify::{Delivery, Notice, NoticeKind, Notifier, NotifyError};
pub use store::StoreError;
pub use types::{Approval, ApprovalKind, Grant, GrantSpec, Person, Status, Vote, humanize};

use store::{Store, Tx, millis};

/// The longest reason accepted from a requester or an approver.
pub const MAX_REASON_CHARS: usize = 2000;

/// Why an approval operation was refused. Each variant is one thing a caller can fix or
/// needs to know; [`ApprovalError::code`] names it for the admin API.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no approval {0} (or it is not yours to see)")]
    NotFound(String),
    #[error("no grant {0} (or it is not yours to see)")]
    GrantNotFound(String),
    #[error("{who} may not decide {id}: approvers are members of {groups}{break_glass}")]
    NotApprover {
        who: String,
        id: String,
        groups: String,
        break_glass: String,
    },
    #[error("{who} requested {id} and may not decide it (separation of duties){break_glass}")]
    SelfApproval {
        who: String,
        id: String,
        break_glass: String,
    },
    #[error("{id} is already {status}{by}")]
    Decided {
        id: String,
        status: String,
        by: String,
    },
    #[error("{id} expired at {at} without a decision")]
    Expired { id: String, at: String },
    #[error("{who} already decided {id}; another approver must add the next approval")]
    AlreadyVoted { who: String, id: String },
    #[error(
        "the decision quotes digest {given}, but {id} has digest {actual}: it was meant for another request, or the request changed; show it again and decide on what it is now"
    )]
    DigestMismatch {
        id: String,
        given: String,
        actual: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{who} may not revoke grant {id}: only its holder or its approvers may")]
    NotRevoker { who: String, id: String },
    #[error("grant {id} has already ended ({how})")]
    GrantEnded { id: String, how: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit log cannot record this step, so it is refused: {0}")]
    Audit(String),
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
    #[error(
        "approved request {0} was already forwarded once; an approval lets a request through once, so send it again and have it approved again"
    )]
    AlreadyForwarded(String),
}

impl ApprovalError {
    /// A stable machine-readable name for the admin API.
    pub fn code(&self) -> &'static str {
        match self {
            ApprovalError::NotFound(_) | ApprovalError::GrantNotFound(_) => "not_found",
            ApprovalError::NotApprover { .. } => "not_approver",
            ApprovalError::SelfApproval { .. } => "self_approval",
            ApprovalError::Decided { .. } => "already_decided",
            ApprovalError::Expired { .. } => "expired",
            ApprovalError::AlreadyVoted { .. } => "already_voted",
            ApprovalError::DigestMismatch { .. } => "digest_mismatch",
            ApprovalError::Invalid(_) => "invalid",
            ApprovalError::NotRevoker { .. } => "not_revoker",
            ApprovalError::GrantEnded { .. } => "grant_ended",
            ApprovalError::Store(_) => "store",
            ApprovalError::Audit(_) => "audit_unavailable",
            ApprovalError::Notify(_) => "notify",
            ApprovalError::AlreadyForwarded(_) => "already_forwarded",
        }
    }
}

/// A request to hold: what the gateway knows when a `hold` verdict comes back.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub requester: Identity,
    pub source: Option<String>,
    pub target: String,
    pub action: String,
    pub resource: Option<String>,
    /// The arguments, already masked for approvers' eyes.
    pub arguments: Option<serde_json::Value>,
    pub arguments_digest: Option<PayloadDigest>,
    pub reason: Option<String>,
    pub rule: String,
    pub policy_version: String,
    pub requirement: Arc<ApprovalRequirement>,
    /// The id of the held request's own audit event.
    pub request_event: String,
}

/// A grant request, as the admin API received it (the rule already looked up by policy).
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub requester: Identity,
    pub source: Option<String>,
    pub target: String,
    pub spec: GrantSpec,
    pub reason: String,
    pub rule: String,
    pub policy_version: String,
    pub requirement: Arc<ApprovalRequirement>,
}

/// The approval service. Cheap to clone.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    audit: AuditLog,
    break_glass: Vec<String>,
    admin_url: Option<String>,
    console_url: Option<String>,
    notifier: Option<Notifier>,
    /// Held requests waiting in this process, by approval id.
    waiters: Mutex<HashMap<String, watch::Sender<Approval>>>,
    /// Grants not yet ended, by holder (issuer, subject): the hot-path lookup.
    grants: RwLock<HashMap<(String, String), Vec<Grant>>>,
    /// Set when the gateway stops: nothing new is held.
    stopping: std::sync::atomic::AtomicBool,
    /// Counts every change to any approval (new, voted on, decided, closed), so that a page
    /// showing approvals can refresh the moment one changes.
    changes: watch::Sender<u64>,
}

fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

fn stamp(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn new_id() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    format!("apr_{}", hex::encode(bytes))
}

fn clean_reason(reason: Option<&str>) -> Result<Option<String>, ApprovalError> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApprovalError::Invalid(format!(
            "the reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApprovalError::Invalid(
            "the reason contains control characters".into(),
        ));
    }
    Ok(Some(reason.to_string()))
}

/// What the approval service takes from the configuration, built by the binary: the
/// `[approvals]` section and where approvers reach the admin API. The service reads no other
/// part of the file.
#[derive(Debug, Clone, Default)]
pub struct ApprovalSettings {
    /// `[approvals]`: break-glass groups and notification webhooks.
    pub approvals: portcullis_config::Approvals,
    /// The admin API's URL for links in notifications and refusals (`Config::admin_url`).
    pub admin_url: Option<String>,
    /// The web console's URL (`Config::console_url`), when it is served: where a person
    /// decides, for the messages a held caller sees.
    pub console_url: Option<String>,
}

impl Approvals {
    /// Opens `approvals.db` in `data_dir`, cancels held requests left pending by a previous
    /// run (their callers are gone), loads the open grants, and starts notifications.
    pub async fn open(
        data_dir: &Path,
        audit: AuditLog,
        settings: &ApprovalSettings,
        shared: Option<Shared>,
    ) -> Result<Approvals, ApprovalError> {
        let store = Store::open(data_dir, shared.as_ref()).await?;
        let notifier = match Notifier::start(&settings.approvals)? {
            Some((notifier, deliveries)) => {
                spawn_delivery_recorder(audit.clone(), deliveries);
                Some(notifier)
            }
            None => None,
        };
        let mut grants: HashMap<(String, String), Vec<Grant>> = HashMap::new();
        for grant in store.open_grants().await? {
            grants
                .entry((grant.holder.issuer.clone(), grant.holder.subject.clone()))
                .or_default()
                .push(grant);
        }
        let approvals = Approvals {
            inner: Arc::new(Inner {
                store,
                audit,
                break_glass: settings.approvals.break_glass_groups.clone(),
                admin_url: settings.admin_url.clone(),
                console_url: settings.console_url.clone(),
                notifier,
                waiters: Mutex::new(HashMap::new()),
                grants: RwLock::new(grants),
                stopping: std::sync::atomic::AtomicBool::new(false),
                changes: watch::Sender::new(0),
            }),
        };
        approvals.cancel_orphaned_holds().await?;
        if shared.is_some() {
            approvals.spawn_follower();
        }
        Ok(approvals)
    }

    /// The admin API's URL, for messages that tell a caller where approvers decide.
    pub fn admin_url(&self) -> Option<&str> {
        self.inner.admin_url.as_deref()
    }

    /// Where a person decides approval `id`: its page in the web console when the console
    /// is served, else its admin API address; `None` without either.
    pub fn decision_url(&self, id: &str) -> Option<String> {
        match (&self.inner.console_url, &self.inner.admin_url) {
            (Some(console), _) => Some(format!("{console}/approvals/{id}")),
            (None, Some(admin)) => Some(format!("{admin}/api/v1/approvals/{id}")),
            (None, None) => None,
        }
    }

    /// Held requests survive only as records: the connection that waited is gone.
    async fn cancel_orphaned_holds(&self) -> Result<(), ApprovalError> {
        let store = self.inner.store.begin().await?;
        for mut approval in store.own_pending_requests().await? {
            approval.status = Status::Cancelled;
            approval.closed_at = Some(stamp(now()));
            approval.closed_because = Some(
                "the gateway restarted while the request was held; the caller's request failed and must be sent again".into(),
            );
            let mut ev = self.event(EventType::ApprovalCancelled, Outcome::Failed, &approval);
            ev.detail = approval.closed_because.clone();
            self.record(ev).await?;
            store.put_approval(&approval).await?;
            self.changed();
        }
        store.commit().await?;
        Ok(())
    }

    fn event(&self, ty: EventType, outcome: Outcome, approval: &Approval) -> AuditEvent {
        let mut ev = self.inner.audit.event(ty, outcome);
        ev.approval = Some(approval.id.clone());
        ev.target = Some(approval.target.clone());
        ev.action = Some(approval.action.clone());
        ev.resource = approval.resource.clone();
        ev.rule = Some(approval.rule.clone());
        ev.policy_version = Some(approval.policy_version.clone());
        if approval.kind == ApprovalKind::Grant {
            ev.grant = Some(approval.id.clone());
        }
        ev
    }

    async fn record(&self, ev: AuditEvent) -> Result<(), ApprovalError> {
        self.inner
            .audit
            .record(ev)
            .await
            .map(|_| ())
            .map_err(|e| ApprovalError::Audit(e.to_string()))
    }

    fn notify(&self, kind: NoticeKind, approval: &Approval) {
        if let Some(notifier) = &self.inner.notifier {
            notifier.send(Notice {
                kind,
                approval: approval.clone(),
                admin_url: self.inner.admin_url.clone(),
            });
        }
    }

    fn new_approval(
        kind: ApprovalKind,
        requester: &Identity,
        source: Option<String>,
        target: String,
        requirement: &ApprovalRequirement,
        rule: String,
        policy_version: String,
    ) -> Approval {
        let created = now();
        let expires = created
            + chrono::Duration::from_std(requirement.timeout)
                .unwrap_or_else(|_| chrono::Duration::days(365));
        let (approvers, min_approvals) = types::requirement_fields(requirement);
        Approval {
            id: new_id(),
            kind,
            status: Status::Pending,
            requester: Person::of(requester),
            source,
            target,
            action: String::new(),
            resource: None,
            arguments: None,
            arguments_digest: None,
            grant: None,
            reason: None,
            rule,
            policy_version,
            approvers,
            min_approvals,
            created_at: stamp(created),
            expires_at: stamp(expires),
            request_event: None,
            votes: Vec::new(),
            closed_at: None,
            closed_because: None,
            digest: String::new(),
        }
    }

    /// Holds a request: stores the approval, records `approval.requested`, notifies
    /// approvers, and returns a handle to wait on. Refused if the rule needs a reason and
    /// none was given.
    pub async fn hold(&self, req: HoldRequest) -> Result<Held, ApprovalError> {
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ApprovalError::Invalid(
                "the gateway is stopping and holds nothing new; send the request again once it is back".into(),
            ));
        }
        let reason = clean_reason(req.reason.as_deref())?;
        if req.requirement.require_reason && reason.is_none() {
            return Err(ApprovalError::Invalid(format!(
                "rule {:?} holds this request for approval and requires a reason: MCP callers pass it as _meta[\"dev.portcullis/reason\"], HTTP callers in the Portcullis-Reason header",
                req.rule
            )));
        }
        let mut approval = Self::new_approval(
            ApprovalKind::Request,
            &req.requester,
            req.source,
            req.target,
            &req.requirement,
            req.rule,
            req.policy_version,
        );
        approval.action = req.action;
        approval.resource = req.resource;
        approval.arguments = req.arguments;
        approval.arguments_digest = req.arguments_digest;
        approval.reason = reason;
        approval.request_event = Some(req.request_event);
        approval.seal();

        let (tx, rx) = watch::channel(approval.clone());
        {
            let store = self.inner.store.begin().await?;
            let mut ev = self.event(EventType::ApprovalRequested, Outcome::Info, &approval);
            ev.identity = Some(req.requester);
            ev.source = approval.source.clone();
            ev.reason = approval.reason.clone();
            ev.arguments = approval.arguments_digest.clone();
            ev.detail = Some(format!(
                "held for {} (request event {}), until {}",
                approval.requirement_text(),
                approval.request_event.as_deref().unwrap_or("-"),
                approval.expires_at
            ));
            self.record(ev).await?;
            store.put_approval(&approval).await?;
            self.changed();
            self.inner
                .waiters
                .lock()
                .expect("lock")
                .insert(approval.id.clone(), tx);
            // Listed as waiting before the commit makes the hold visible to other replicas,
            // so that a decision announced at once finds its waiter.
            if let Err(e) = store.commit().await {
                self.inner
                    .waiters
                    .lock()
                    .expect("lock")
                    .remove(&approval.id);
                return Err(e.into());
            }
        }
        self.notify(NoticeKind::Requested, &approval);
        Ok(Held {
            approvals: self.clone(),
            rx,
            id: approval.id.clone(),
            expires_ms: millis(&approval.expires_at),
            approval,
            finished: false,
        })
    }

    /// Asks for a just-in-time grant. The caller (the admin API) has found the rule the grant
    /// would be used under; this checks the request against it.
    pub async fn request_grant(&self, req: GrantRequest) -> Result<Approval, ApprovalError> {
        let Some(reason) = clean_reason(Some(&req.reason))? else {
            return Err(ApprovalError::Invalid(
                "a grant request needs a reason (--reason)".into(),
            ));
        };
        let max = req.requirement.max_grant.as_secs();
        if req.spec.duration_secs < 60 || req.spec.duration_secs > max {
            return Err(ApprovalError::Invalid(format!(
                "a grant under rule {:?} lasts between 1m and {}; asked for {}",
                req.rule,
                humanize(max),
                humanize(req.spec.duration_secs)
            )));
        }
        for name in req.spec.tools.iter().chain(&req.spec.tables) {
            let body = name.strip_suffix('*').unwrap_or(name);
            if body.contains('*')
                || !body
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.:/".contains(c))
            {
                return Err(ApprovalError::Invalid(format!(
                    "{name:?}: a grant names tools or tables exactly, or by a prefix ending in *"
                )));
            }
        }
        let mut approval = Self::new_approval(
            ApprovalKind::Grant,
            &req.requester,
            req.source,
            req.target,
            &req.requirement,
            req.rule,
            req.policy_version,
        );
        approval.action = "grant".into();
        approval.grant = Some(req.spec);
        approval.reason = Some(reason);
        approval.seal();
        {
            let store = self.inner.store.begin().await?;
            let mut ev = self.event(EventType::ApprovalRequested, Outcome::Info, &approval);
            ev.identity = Some(req.requester);
            ev.source = approval.source.clone();
            ev.reason = approval.reason.clone();
            ev.detail = Some(format!(
                "{} asked, for {}, until {}",
                approval.summary(),
                approval.requirement_text(),
                approval.expires_at
            ));
            self.record(ev).await?;
            store.put_approval(&approval).await?;
            self.changed();
            store.commit().await?;
        }
        self.notify(NoticeKind::Requested, &approval);
        Ok(approval)
    }

    fn is_break_glass(&self, identity: &Identity) -> bool {
        self.inner.break_glass.iter().any(|g| identity.in_group(g))
    }

    fn break_glass_hint(&self) -> String {
        if self.inner.break_glass.is_empty() {
            String::new()
        } else {
            format!(
                " (or, in an emergency, of the break-glass groups {})",
                self.inner.break_glass.join(", ")
            )
        }
    }

    /// Whether `who` is `party` (the requester, the holder), one of `approvers`, or a
    /// break-glass approver: who may see an approval and who may revoke a grant.
    fn involved(&self, who: &Identity, party: &Person, approvers: &[String]) -> bool {
        party.is(who) || approvers.iter().any(|g| who.in_group(g)) || self.is_break_glass(who)
    }

    /// Whether `viewer` may see an approval: its requester, or someone who may decide it.
    fn may_see(&self, viewer: &Identity, approval: &Approval) -> bool {
        self.involved(viewer, &approval.requester, &approval.approvers)
    }

    /// One approver's decision on one approval. `digest` must be the approval's: what the
    /// approver was shown. Refused, with the reason, for: an unknown approval, a decided or
    /// expired one, a non-approver, the requester (unless break-glass), a second vote by the
    /// same person, a digest of another request, a missing reason.
    pub async fn decide(
        &self,
        approver: &Identity,
        id: &str,
        approve: bool,
        reason: &str,
        digest: &str,
    ) -> Result<Approval, ApprovalError> {
        let reason = clean_reason(Some(reason))?
            .ok_or_else(|| ApprovalError::Invalid("a decision needs a reason (--reason)".into()))?;
        let store = self.inner.store.begin().await?;
        // Not filtered by visibility: ids are 80 random bits, and someone who has one
        // deserves to hear exactly why they may not decide it.
        let mut approval = store
            .approval(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
        let listed = approval.approvers.iter().any(|g| approver.in_group(g));
        let own = approval.requester.is(approver);
        let break_glass = self.is_break_glass(approver) && (own || !listed);
        let refusal = if own && !break_glass {
            Some(ApprovalError::SelfApproval {
                who: approver.subject.clone(),
                id: id.to_string(),
                break_glass: self.break_glass_hint(),
            })
        } else if !listed && !break_glass {
            Some(ApprovalError::NotApprover {
                who: approver.subject.clone(),
                id: id.to_string(),
                groups: approval.approvers.join(", "),
                break_glass: self.break_glass_hint(),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // The refusal is evidence that separation of duties holds (AC-5), so it is
            // logged; if it cannot be, the caller hears that instead, and nothing changed.
            let mut ev = self.event(EventType::ApprovalRefused, Outcome::Denied, &approval);
            ev.identity = Some(approver.clone());
            ev.reason = Some(reason);
            ev.decision = Some(if approve { "approve" } else { "deny" }.into());
            ev.detail = Some(format!(
                "{} may not decide {} requested by {}: {}",
                approver.subject,
                approval.summary(),
                approval.requester.subject,
                if own {
                    "it is their own request"
                } else {
                    "none of their groups may approve it"
                }
            ));
            self.record(ev).await?;
            return Err(refusal);
        }
        if approval.status != Status::Pending {
            let by = approval
                .votes
                .iter()
                .filter(|v| v.approve == (approval.status == Status::Approved))
                .map(|v| format!("{} at {}", v.approver.name(), v.time))
                .collect::<Vec<_>>();
            return Err(ApprovalError::Decided {
                id: id.to_string(),
                status: approval.status.as_str().to_string(),
                by: if by.is_empty() {
                    approval
                        .closed_because
                        .as_ref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                } else {
                    format!(" by {}", by.join(", "))
                },
            });
        }
        if millis(&approval.expires_at) <= now().timestamp_millis() {
            let at = approval.expires_at.clone();
            self.close_expired(&store, &mut approval).await?;
            store.commit().await?;
            return Err(ApprovalError::Expired {
                id: id.to_string(),
                at,
            });
        }
        if digest != approval.digest {
            return Err(ApprovalError::DigestMismatch {
                id: id.to_string(),
                given: digest.to_string(),
                actual: approval.digest.clone(),
            });
        }
        if approval
            .votes
            .iter()
            .any(|v| v.approver.issuer == approver.issuer && v.approver.subject == approver.subject)
        {
            return Err(ApprovalError::AlreadyVoted {
                who: approver.subject.clone(),
                id: id.to_string(),
            });
        }
        let time = stamp(now());
        approval.votes.push(Vote {
            approver: Person::of(approver),
            approve,
            reason: reason.clone(),
            time: time.clone(),
            break_glass,
        });
        // One deny ends it; approvals end it at the threshold, or at once when break-glass.
        let done = if !approve {
            Some(Status::Denied)
        } else if break_glass || approval.approvals() >= approval.min_approvals as usize {
            Some(Status::Approved)
        } else {
            None
        };
        if let Some(status) = done {
            approval.status = status;
            approval.closed_at = Some(time.clone());
        }
        let (ty, outcome) = if approve {
            (EventType::ApprovalApproved, Outcome::Success)
        } else {
            (EventType::ApprovalDenied, Outcome::Denied)
        };
        let mut ev = self.event(ty, outcome, &approval);
        ev.identity = Some(approver.clone());
        ev.reason = Some(reason);
        ev.break_glass = break_glass;
        ev.decision = Some(if approve { "approve" } else { "deny" }.into());
        ev.detail = Some(format!(
            "{} {} {} requested by {}: {} of {} approval(s){}{}",
            approver.subject,
            if approve { "approved" } else { "denied" },
            approval.summary(),
            approval.requester.subject,
            approval.approvals(),
            approval.min_approvals,
            match done {
                Some(status) => format!("; the approval is {}", status.as_str()),
                None => "; more approvals needed".into(),
            },
            if break_glass {
                if own {
                    "; BREAK-GLASS self-approval"
                } else {
                    "; BREAK-GLASS decision by a non-approver"
                }
            } else {
                ""
            }
        ));
        self.record(ev).await?;
        let grant = if approval.kind == ApprovalKind::Grant && approval.status == Status::Approved {
            Some(self.issue_grant(&approval).await?)
        } else {
            None
        };
        store.put_approval(&approval).await?;
        self.changed();
        if let Some(grant) = &grant {
            store.put_grant(grant, false).await?;
        }
        store.commit().await?;
        // Honoured once it exists for every replica, not before.
        if let Some(grant) = grant {
            self.inner
                .grants
                .write()
                .expect("lock")
                .entry((grant.holder.issuer.clone(), grant.holder.subject.clone()))
                .or_default()
                .push(grant);
        }
        self.publish(&approval);
        if approval.status != Status::Pending {
            self.notify(NoticeKind::Resolved, &approval);
        }
        Ok(approval)
    }

    /// Builds and records the grant an approved grant request issues.
    async fn issue_grant(&self, approval: &Approval) -> Result<Grant, ApprovalError> {
        let spec = approval.grant.clone().expect("a grant approval has a spec");
        let issued = now();
        let expires = issued + chrono::Duration::seconds(spec.duration_secs as i64);
        let grant = Grant {
            id: approval.id.clone(),
            holder: approval.requester.clone(),
            target: approval.target.clone(),
            tools: spec.tools,
            tables: spec.tables,
            issued_at: stamp(issued),
            expires_at: stamp(expires),
            revoked_at: None,
            revoked_by: None,
            revoke_reason: None,
            approvers: approval.approvers.clone(),
        };
        let mut ev = self.event(EventType::GrantIssued, Outcome::Success, approval);
        ev.detail = Some(format!(
            "{} issued to {} until {}",
            approval.summary(),
            approval.requester.subject,
            grant.expires_at
        ));
        self.record(ev).await?;
        Ok(grant)
    }

    /// A receiver that sees a new number each time any approval changes (see `changes`).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn changed(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells a waiting held request (if it waits in this process) what became of it.
    fn publish(&self, approval: &Approval) {
        let waiters = self.inner.waiters.lock().expect("lock");
        if let Some(tx) = waiters.get(&approval.id) {
            tx.send_replace(approval.clone());
        }
    }

    async fn close_expired(
        &self,
        store: &Tx<'_>,
        approval: &mut Approval,
    ) -> Result<(), ApprovalError> {
        approval.status = Status::Expired;
        approval.closed_at = Some(stamp(now()));
        approval.closed_because = Some(format!(
            "no decision by {} ({} needed, {} given)",
            approval.expires_at,
            approval.min_approvals,
            approval.approvals()
        ));
        let mut ev = self.event(EventType::ApprovalExpired, Outcome::Denied, approval);
        ev.detail = approval.closed_because.clone();
        self.record(ev).await?;
        store.put_approval(approval).await?;
        self.changed();
        self.publish(approval);
        self.notify(NoticeKind::Resolved, approval);
        Ok(())
    }

    /// Approvals `viewer` may see (their own requests, and those they may decide), newest
    /// first, at most `limit`.
    pub async fn list(
        &self,
        viewer: &Identity,
        pending_only: bool,
        limit: usize,
    ) -> Result<Vec<Approval>, ApprovalError> {
        // Read generously and filter: visibility depends on the viewer's groups.
        let all = self
            .inner
            .store
            .approvals(pending_only, limit.saturating_mul(20).max(1000))
            .await?;
        Ok(all
            .into_iter()
            .filter(|a| self.may_see(viewer, a))
            .take(limit)
            .collect())
    }

    pub async fn get(&self, viewer: &Identity, id: &str) -> Result<Approval, ApprovalError> {
        self.inner
            .store
            .approval(id)
            .await?
            .filter(|a| self.may_see(viewer, a))
            .ok_or_else(|| ApprovalError::NotFound(id.to_string()))
    }

    /// Grants `viewer` holds or may revoke, newest first.
    pub async fn grants(
        &self,
        viewer: &Identity,
        limit: usize,
    ) -> Result<Vec<Grant>, ApprovalError> {
        let all = self
            .inner
            .store
            .grants(limit.saturating_mul(20).max(1000))
            .await?;
        Ok(all
            .into_iter()
            .filter(|g| self.may_revoke(viewer, g))
            .take(limit)
            .collect())
    }

    fn may_revoke(&self, who: &Identity, grant: &Grant) -> bool {
        self.involved(who, &grant.holder, &grant.approvers)
    }

    /// Ends a grant early: its holder (giving it up) or one of its approvers.
    pub async fn revoke(
        &self,
        actor: &Identity,
        id: &str,
        reason: &str,
    ) -> Result<Grant, ApprovalError> {
        let reason = clean_reason(Some(reason))?
            .ok_or_else(|| ApprovalError::Invalid("revoking needs a reason (--reason)".into()))?;
        let store = self.inner.store.begin().await?;
        let Some((mut grant, closed)) = store.grant(id).await? else {
            return Err(ApprovalError::GrantNotFound(id.to_string()));
        };
        if !self.may_revoke(actor, &grant) {
            return Err(ApprovalError::GrantNotFound(id.to_string()));
        }
        if closed || grant.revoked_at.is_some() {
            return Err(ApprovalError::GrantEnded {
                id: id.to_string(),
                how: match &grant.revoked_at {
                    Some(at) => format!("revoked at {at}"),
                    None => format!("expired at {}", grant.expires_at),
                },
            });
        }
        if millis(&grant.expires_at) <= now().timestamp_millis() {
            self.close_grant(&store, &grant).await?;
            store.commit().await?;
            return Err(ApprovalError::GrantEnded {
                id: id.to_string(),
                how: format!("expired at {}", grant.expires_at),
            });
        }
        grant.revoked_at = Some(stamp(now()));
        grant.revoked_by = Some(Person::of(actor));
        grant.revoke_reason = Some(reason.clone());
        let mut ev = self
            .inner
            .audit
            .event(EventType::GrantRevoked, Outcome::Info);
        ev.identity = Some(actor.clone());
        ev.grant = Some(grant.id.clone());
        ev.approval = Some(grant.id.clone());
        ev.target = Some(grant.target.clone());
        ev.reason = Some(reason);
        ev.detail = Some(format!(
            "grant held by {} revoked by {} before its end at {}",
            grant.holder.subject, actor.subject, grant.expires_at
        ));
        self.record(ev).await?;
        store.put_grant(&grant, true).await?;
        store.commit().await?;
        self.forget_grant(&grant);
        Ok(grant)
    }

    fn forget_grant(&self, grant: &Grant) {
        let mut grants = self.inner.grants.write().expect("lock");
        let key = (grant.holder.issuer.clone(), grant.holder.subject.clone());
        if let Some(list) = grants.get_mut(&key) {
            list.retain(|g| g.id != grant.id);
            if list.is_empty() {
                grants.remove(&key);
            }
        }
    }

    async fn close_grant(&self, store: &Tx<'_>, grant: &Grant) -> Result<(), ApprovalError> {
        let mut ev = self
            .inner
            .audit
            .event(EventType::GrantExpired, Outcome::Info);
        ev.grant = Some(grant.id.clone());
        ev.approval = Some(grant.id.clone());
        ev.target = Some(grant.target.clone());
        ev.detail = Some(format!(
            "grant held by {} ended at {}",
            grant.holder.subject, grant.expires_at
        ));
        self.record(ev).await?;
        store.put_grant(grant, true).await?;
        self.forget_grant(grant);
        Ok(())
    }

    /// The caller's grants on `target` that are in force now. The hot path, taken only while
    /// some grant exists (`any_grants`): a read lock, one key built, a lookup.
    pub fn active_grants(&self, identity: &Identity, target: &str) -> Vec<ActiveGrant> {
        let grants = self.inner.grants.read().expect("lock");
        let key = (identity.issuer.clone(), identity.subject.clone());
        let Some(list) = grants.get(&key) else {
            return Vec::new();
        };
        let now_ms = now().timestamp_millis();
        list.iter()
            .filter(|g| g.target == target && millis(&g.expires_at) > now_ms)
            .map(Grant::active_form)
            .collect()
    }

    /// How many held requests of this gateway are waiting for a decision now.
    pub fn held_waiting(&self) -> usize {
        self.inner.waiters.lock().expect("lock").len()
    }

    /// How many grants are in force now, for anyone.
    pub fn grants_in_force(&self) -> usize {
        let now_ms = now().timestamp_millis();
        self.inner
            .grants
            .read()
            .expect("lock")
            .values()
            .flatten()
            .filter(|g| millis(&g.expires_at) > now_ms)
            .count()
    }

    /// Whether any grant is in force for anyone: lets the gateway skip the lookup entirely.
    pub fn any_grants(&self) -> bool {
        !self.inner.grants.read().expect("lock").is_empty()
    }

    /// Records what time has ended: pending approvals past their expiry (grant requests;
    /// held requests expire in their own wait, this is the backstop) and grants past their
    /// end. Run it every few seconds.
    pub async fn sweep(&self) -> Result<(), ApprovalError> {
        let store = self.inner.store.begin().await?;
        let now_ms = now().timestamp_millis();
        for mut approval in store.due_approvals(now_ms).await? {
            self.close_expired(&store, &mut approval).await?;
        }
        // Revoked grants are stored closed, so every open one due has simply ended.
        for grant in store.due_grants(now_ms).await? {
            self.close_grant(&store, &grant).await?;
        }
        // With shared state: the holds of replicas that stopped answering. Their callers'
        // connections died with them; the records say so.
        {
            for replica in store.dead_replicas().await? {
                for mut approval in store.pending_requests_of(&replica).await? {
                    approval.status = Status::Abandoned;
                    approval.closed_at = Some(stamp(now()));
                    approval.closed_because = Some(format!(
                        "replica {replica} holding the request stopped answering; its caller's connection was lost with it, and the request must be sent again"
                    ));
                    let mut ev =
                        self.event(EventType::ApprovalCancelled, Outcome::Failed, &approval);
                    ev.detail = approval.closed_because.clone();
                    self.record(ev).await?;
                    store.put_approval(&approval).await?;
                    self.changed();
                    self.notify(NoticeKind::Resolved, &approval);
                }
                store.forget_replica(&replica).await?;
                tracing::warn!(%replica, "state: replica stopped answering; its held requests are marked abandoned");
            }
        }
        store.commit().await?;
        Ok(())
    }

    /// Runs [`Approvals::sweep`] every second until the returned task is aborted.
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let approvals = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = approvals.sweep().await {
                    tracing::error!("approvals: sweeping expired approvals and grants: {e}");
                }
            }
        })
    }

    /// With shared state: follows what other replicas change (and re-reads on a timer, since
    /// notifications can be lost), until the service is dropped.
    fn spawn_follower(&self) {
        let Some(shared) = self.inner.store.shared().cloned() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let mut changes = shared.changes();
        let poll = shared.timings().poll;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let change = tokio::select! {
                    change = changes.recv() => match change {
                        Ok(change) => Some(change),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            Some(Change::Resync)
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => None,
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let approvals = Approvals { inner };
                // A database that hangs must not leave grants honoured that were revoked
                // meanwhile: a pass that takes longer than a poll drops them all until the
                // next pass reads them again.
                if tokio::time::timeout(poll, approvals.follow(change))
                    .await
                    .is_err()
                {
                    tracing::error!(
                        "state: re-reading the shared state took longer than {poll:?}; no grant is honoured until it answers"
                    );
                    approvals.inner.grants.write().expect("lock").clear();
                }
            }
        });
    }

    /// Takes in one change from the shared state (`None`: the timer, re-read everything
    /// without telling pages that something changed).
    async fn follow(&self, change: Option<Change>) {
        match change {
            Some(Change::Row { topic, id }) if topic == "approval" => {
                self.changed();
                self.refresh_waiter(&id).await;
            }
            Some(Change::Row { topic, .. }) if topic == "grant" => self.reload_grants().await,
            Some(Change::Row { .. }) => {}
            Some(Change::Resync) | None => {
                if change.is_some() {
                    self.changed();
                }
                let ids: Vec<String> = self
                    .inner
                    .waiters
                    .lock()
                    .expect("lock")
                    .keys()
                    .cloned()
                    .collect();
                for id in ids {
                    self.refresh_waiter(&id).await;
                }
                self.reload_grants().await;
            }
        }
    }

    /// Re-reads held request `id`, if it waits in this process, and wakes it if another
    /// replica decided it (the row is the truth: a notification only says where to look).
    async fn refresh_waiter(&self, id: &str) {
        if !self.inner.waiters.lock().expect("lock").contains_key(id) {
            return;
        }
        match self.inner.store.approval(id).await {
            Ok(Some(stored)) => {
                let waiters = self.inner.waiters.lock().expect("lock");
                if let Some(tx) = waiters.get(id) {
                    let differs = {
                        let current = tx.borrow();
                        current.status != stored.status || current.votes.len() != stored.votes.len()
                    };
                    if differs {
                        tx.send_replace(stored);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(approval = %id, "state: re-reading a held request: {e}"),
        }
    }

    /// Re-reads the grants in force from the shared state. If they cannot be read, none is
    /// honoured until they can: a grant revoked elsewhere must not outlive its revocation.
    async fn reload_grants(&self) {
        match self.inner.store.open_grants().await {
            Ok(open) => {
                let mut grants: HashMap<(String, String), Vec<Grant>> = HashMap::new();
                for grant in open.into_iter().filter(|g| g.revoked_at.is_none()) {
                    grants
                        .entry((grant.holder.issuer.clone(), grant.holder.subject.clone()))
                        .or_default()
                        .push(grant);
                }
                *self.inner.grants.write().expect("lock") = grants;
            }
            Err(e) => {
                tracing::error!(
                    "state: reading grants failed, so none is honoured until it works again: {e}"
                );
                self.inner.grants.write().expect("lock").clear();
            }
        }
    }

    /// Ends a held request that will never be forwarded (its caller went away), unless it
    /// was already decided.
    async fn cancel(&self, id: &str, why: &str) -> Result<(), ApprovalError> {
        let store = self.inner.store.begin().await?;
        let Some(mut approval) = store.approval(id).await? else {
            return Ok(());
        };
        if approval.status != Status::Pending {
            return Ok(());
        }
        approval.status = Status::Cancelled;
        approval.closed_at = Some(stamp(now()));
        approval.closed_because = Some(why.to_string());
        let mut ev = self.event(EventType::ApprovalCancelled, Outcome::Failed, &approval);
        ev.detail = Some(why.to_string());
        self.record(ev).await?;
        store.put_approval(&approval).await?;
        store.commit().await?;
        self.changed();
        self.publish(&approval);
        self.notify(NoticeKind::Resolved, &approval);
        Ok(())
    }

    /// Cancels every request held in this process: the gateway is stopping, and a caller
    /// is better told now than cut off. Their records stay.
    pub async fn cancel_all_held(&self, why: &str) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<String> = self
            .inner
            .waiters
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            if let Err(e) = self.cancel(&id, why).await {
                tracing::error!(approval = %id, "cancelling a held request: {e}");
            }
        }
    }

    async fn expire_now(&self, id: &str) -> Result<(), ApprovalError> {
        let store = self.inner.store.begin().await?;
        let Some(mut approval) = store.approval(id).await? else {
            return Ok(());
        };
        if approval.status == Status::Pending {
            self.close_expired(&store, &mut approval).await?;
        } else {
            // Decided elsewhere (another replica) before its time ran out here: the waiter
            // takes the decision instead of waiting for a notification.
            self.publish(&approval);
        }
        store.commit().await?;
        Ok(())
    }
}

/// A held request waiting in the gateway.
pub struct Held {
    approvals: Approvals,
    rx: watch::Receiver<Approval>,
    id: String,
    expires_ms: i64,
    /// The approval as created (id, digest, expiry), for messages to the caller.
    pub approval: Approval,
    finished: bool,
}

impl Held {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until the approval is decided or expires (expiring it if so), and returns it
    /// in its final state. If the audit log cannot record the expiry, the approval is
    /// returned still pending: the caller must refuse the request.
    pub async fn outcome(&mut self) -> Approval {
        let expires = tokio::time::Instant::now()
            + Duration::from_millis((self.expires_ms - now().timestamp_millis()).max(0) as u64);
        loop {
            let current = self.rx.borrow_and_update().clone();
            if current.status != Status::Pending {
                self.finished = true;
                return current;
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The sender lives in the service's map until `Held` is dropped.
                        return current;
                    }
                }
                () = tokio::time::sleep_until(expires) => {
                    if let Err(e) = self.approvals.expire_now(&self.id).await {
                        tracing::error!(approval = %self.id, "recording an expiry: {e}");
                        self.finished = true;
                        return current;
                    }
                }
            }
        }
    }

    /// Records that the approved request is being forwarded, and consumes the approval:
    /// it lets one request through, once, across every replica. Refused if it was already
    /// consumed (or is no longer approved in the store).
    pub async fn released(&self, request_event: &str) -> Result<(), ApprovalError> {
        let approval = self.rx.borrow().clone();
        let store = self.approvals.inner.store.begin().await?;
        if !store.consume(&self.id).await? {
            return Err(ApprovalError::AlreadyForwarded(self.id.clone()));
        }
        let mut ev = self
            .approvals
            .event(EventType::ApprovalReleased, Outcome::Success, &approval);
        ev.identity = None;
        ev.detail = Some(format!(
            "approved by {}; forwarded as request event {request_event}",
            approval
                .votes
                .iter()
                .filter(|v| v.approve)
                .map(|v| v.approver.subject.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        // Consumed even if the release cannot be recorded: the request is then refused,
        // and an approval is never used twice.
        self.approvals.record(ev).await?;
        store.commit().await?;
        Ok(())
    }

    /// Ends the hold without a decision: the caller went away.
    pub async fn cancel(mut self, why: &str) {
        self.finished = true;
        if let Err(e) = self.approvals.cancel(&self.id, why).await {
            tracing::error!(approval = %self.id, "cancelling a held request: {e}");
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.approvals
            .inner
            .waiters
            .lock()
            .expect("lock")
            .remove(&self.id);
        if !self.finished {
            // Dropped while still pending (the task was torn down): cancel in the background.
            let approvals = self.approvals.clone();
            let id = self.id.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = approvals
                        .cancel(&id, "the request ended before a decision")
                        .await;
                });
            }
        }
    }
}

/// Records each webhook delivery's end as `approval.notified`.
fn spawn_delivery_recorder(audit: AuditLog, mut deliveries: tokio::sync::mpsc::Receiver<Delivery>) {
    tokio::spawn(async move {
        while let Some(d) = deliveries.recv().await {
            let outcome = if d.result.is_ok() {
                Outcome::Success
            } else {
                Outcome::Failed
            };
            let mut ev = audit.event(EventType::ApprovalNotified, outcome);
            ev.approval = Some(d.approval.clone());
            ev.detail = Some(match &d.result {
                Ok(status) => format!(
                    "{} notice delivered to {} (HTTP {status}) after {} attempt(s)",
                    match d.kind {
                        NoticeKind::Requested => "request",
                        NoticeKind::Resolved => "decision",
                    },
                    d.endpoint,
                    d.attempts
                ),
                Err(why) => format!(
                    "notice to {} failed after {} attempt(s): {why}",
                    d.endpoint, d.attempts
                ),
            });
            if let Err(e) = audit.record(ev).await {
                tracing::error!("recording a notification delivery: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests;
