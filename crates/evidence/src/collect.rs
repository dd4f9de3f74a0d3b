//! One streaming pass over the log: the facts of a period.
//!
//! The pass starts at the baseline window before the period (found by bisection on the
//! log's times, not by reading from the beginning) and stops shortly after the period's
//! end. Events of the baseline window only teach what is usual: which identities, tools
//! and tables were seen, each identity's volume and refusal rate. Events of the period are
//! the facts. Memory grows with the number of distinct identities, targets, tools, tables,
//! rules and approvals, never with the number of events: every list of events is
//! [`Capped`], and counts are exact.
//!
//! Times follow sequence numbers closely but not exactly (an event is stamped when it is
//! made and appended moments later), so the pass reads a little past each edge and decides
//! membership by each event's own time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Timelike as _;
use portcullis_audit::AuditReader;
use portcullis_model::{AuditEvent, AuthMethod, EventType, Identity, Outcome};

use crate::period::{parse_time, stamp};
use crate::report::*;
use crate::{EvidenceError, Period};

/// How far before the baseline window the pass starts reading, for events stamped out of
/// order at that edge (it only teaches what is usual).
const START_SLACK: chrono::Duration = chrono::Duration::minutes(5);

/// Events read from SQLite per query.
const PAGE: usize = 4096;

/// How many sample events a finding keeps.
const SAMPLES: usize = 5;

/// Statement kinds that change data.
const WRITE_KINDS: &[&str] = &["insert", "update", "delete", "merge", "copy"];
/// Statement kinds that change the schema, privileges or run code.
const PRIVILEGED_KINDS: &[&str] = &["ddl", "grant", "truncate", "do", "call", "maintenance"];
/// Statement kinds that destroy data.
const DESTRUCTIVE_KINDS: &[&str] = &["delete", "truncate"];

/// How facts are collected.
#[derive(Debug, Clone)]
pub struct Options {
    /// Days before the period whose events are the baseline: identities, tools and tables
    /// seen there are not new, and per-day volume there is what "far above" compares with.
    pub baseline_days: u32,
    /// How many items each list keeps (counts stay exact).
    pub cap: usize,
    /// Working hours, UTC (they may wrap midnight): requests outside them are off-hours.
    pub work_hours: portcullis_config::WorkHours,
    /// How long after the period's end the pass keeps reading. A request is stamped when
    /// it arrives and appended when it ends, which for a held request is up to its hold
    /// timeout later: its event is in the period, but written after it. Default: 1 hour,
    /// longer than the default hold timeout (15 minutes); set it above the longest timeout
    /// of any rule.
    pub settle: chrono::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            baseline_days: 28,
            cap: 200,
            work_hours: portcullis_config::WorkHours::default(),
            settle: chrono::Duration::hours(1),
        }
    }
}

/// Everything the report says about the period, except integrity and the control results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub gateways: Vec<String>,
    /// Events in the log up to the period's end (the highest seq stamped before it).
    pub events_to_period_end: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub totals: Totals,
    pub identities: Vec<IdentityActivity>,
    pub targets: Vec<TargetActivity>,
    pub privileged: Capped<PrivilegedAction>,
    pub holds: Capped<Hold>,
    pub break_glass: Capped<Decision>,
    pub refused_decisions: Capped<Decision>,
    pub access: AccessChanges,
    pub auth_failures: AuthFailures,
    pub refusals_by_rule: Vec<RuleRefusals>,
    pub masking: Vec<MaskingCount>,
    pub anomalies: Vec<Anomaly>,
    pub reviews: Vec<Review>,
    pub documents: Vec<DocumentWritten>,
    /// Inputs of the control checks (see `assess`).
    pub checks: CheckInputs,
    /// Each log's share, in the order the logs were given (one entry for a single log).
    pub logs: Vec<LogActivity>,
}

/// One log's share of the period, when several are read together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogActivity {
    /// The log's name in event references (`None` for a report of one log).
    pub origin: Option<String>,
    pub gateways: Vec<String>,
    pub events: u64,
    pub requests: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Events in this log up to the period's end.
    pub events_to_period_end: u64,
}

/// A log to read: its reader, and the origin its events are attributed to (`None` when it
/// is the only one).
pub struct LogToRead<'a> {
    pub reader: &'a AuditReader,
    pub origin: Option<String>,
}

/// What the automated control checks count, gathered in the same pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckInputs {
    /// Requests allowed without a rule (must be none: default deny).
    pub allowed_without_rule: Capped<EventRef>,
    /// Requests refused because no rule allowed them.
    pub default_denied: u64,
    /// Self-approvals that took effect through break-glass, and any outside it (none can
    /// happen unless the approvals service is broken).
    pub self_approvals_break_glass: Capped<EventRef>,
    pub self_approvals_outside_break_glass: Capped<EventRef>,
    /// Refused attempts to decide one's own request.
    pub self_approvals_refused: u64,
    /// Privileged statements allowed.
    pub privileged_allowed: u64,
    /// Privileged statements allowed with no rule naming them: none expected.
    pub privileged_unexplained: Capped<EventRef>,
    /// Privileged statements refused.
    pub privileged_refused: u64,
    /// Request events missing an AU-3 field, with the fields missing.
    pub au3_incomplete: Capped<(EventRef, Vec<&'static str>)>,
    pub au3_checked: u64,
    /// Targets with sessions in the period but no request events.
    pub silent_targets: Vec<String>,
    /// Allowed requests without a named identity.
    pub anonymous_allowed: Capped<EventRef>,
    pub allowed: u64,
    /// Sign-offs of review reports in the period (the list in `Facts` is capped).
    pub reviews: u64,
}

/// Collects the facts of `period` from the log.
pub fn collect(
    reader: &AuditReader,
    period: &Period,
    options: &Options,
) -> Result<Facts, EvidenceError> {
    collect_logs(
        &[LogToRead {
            reader,
            origin: None,
        }],
        period,
        options,
    )
}

/// Collects the facts of `period` from several logs (the replicas of a gateway), their
/// events merged by time as if they were one log, each event attributed to its own. With
/// one log, [`Facts::first_seq`], `last_seq` and `events_to_period_end` are its own; with
/// several, they are per log only ([`Facts::logs`]), the total of events up to the end aside.
pub fn collect_logs(
    logs: &[LogToRead<'_>],
    period: &Period,
    options: &Options,
) -> Result<Facts, EvidenceError> {
    let baseline_start = period.since_time() - chrono::Duration::days(options.baseline_days.into());
    let read_until = stamp(period.until_time() + options.settle);
    let mut cursors = Vec::with_capacity(logs.len());
    let mut activity = Vec::with_capacity(logs.len());
    for log in logs {
        let read_from = log
            .reader
            .first_seq_at(&stamp(baseline_start - START_SLACK))?;
        cursors.push(Cursor {
            reader: log.reader,
            after: read_from.saturating_sub(1),
            page: std::collections::VecDeque::new(),
            done: false,
            baseline_since: stamp(baseline_start),
            read_until: read_until.clone(),
        });
        activity.push(LogActivity {
            origin: log.origin.clone(),
            // Every event up to the period's end is covered by what verification checks,
            // read or not.
            events_to_period_end: log.reader.first_seq_at(&period.until)?.saturating_sub(1),
            ..LogActivity::default()
        });
    }
    let readers = logs.iter().map(|log| log.reader).collect();
    let mut pass = Pass::new(readers, period, options);
    pass.logs = activity;
    // The log whose next event is the earliest goes next: a merge of streams each ordered
    // (closely) by time.
    loop {
        for cursor in &mut cursors {
            cursor.fill_if_empty()?;
        }
        // `min_by` keeps the first of equals: on a tie, the log given first.
        let next = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.page.front().map(|(_, event)| (i, event.time.as_str())))
            .min_by(|a, b| a.1.cmp(b.1));
        let Some((i, _)) = next else {
            break;
        };
        let (seq, event) = cursors[i].page.pop_front().expect("peeked");
        pass.current = i;
        pass.see(seq, event);
    }
    let mut facts = pass.finish();
    if let [only] = facts.logs.as_slice() {
        facts.first_seq = only.first_seq;
        facts.last_seq = only.last_seq;
        facts.events_to_period_end = only.events_to_period_end;
    } else {
        facts.events_to_period_end = facts.logs.iter().map(|l| l.events_to_period_end).sum();
    }
    Ok(facts)
}

/// One log's events from the baseline window to the settling time, a page at a time.
struct Cursor<'a> {
    reader: &'a AuditReader,
    after: u64,
    page: std::collections::VecDeque<(u64, AuditEvent)>,
    done: bool,
    baseline_since: String,
    read_until: String,
}

impl Cursor<'_> {
    /// Reads pages until there is a next event or the log is done.
    fn fill_if_empty(&mut self) -> Result<(), EvidenceError> {
        while self.page.is_empty() && !self.done {
            self.fill()?;
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<(), EvidenceError> {
        let page = self.reader.since(self.after, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            self.done = true;
            return Ok(());
        };
        // A page wholly after the settling time ends the log; an event stamped late in the
        // middle of one does not (times follow the log's order only closely).
        let mut settled = true;
        for (seq, body) in page {
            let event: AuditEvent = serde_json::from_str(&body).map_err(|e| {
                EvidenceError::Invalid(format!(
                    "event {seq} cannot be read as an audit event ({e}); run `portcullis audit \
                     verify`"
                ))
            })?;
            if event.time >= self.read_until {
                continue;
            }
            settled = false;
            if event.time < self.baseline_since {
                continue;
            }
            self.page.push_back((seq, event));
        }
        self.done = settled;
        self.after = last;
        Ok(())
    }
}

/// The name an identity is reported under: unique across issuers (an API key by its name,
/// anyone else as `subject@issuer`).
pub fn identity_name(identity: &Identity) -> String {
    if identity.issuer == "portcullis:api-key" {
        identity.subject.clone()
    } else {
        format!("{}@{}", identity.subject, identity.issuer)
    }
}

fn event_ref(seq: u64, event: &AuditEvent, log: Option<&String>) -> EventRef {
    EventRef {
        id: event.id.clone(),
        seq,
        time: event.time.clone(),
        session: event.session.clone(),
        recorded: event.recorded.is_some(),
        log: log.cloned(),
    }
}

fn auth_method(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Oidc => "oidc",
        AuthMethod::ApiKey => "api_key",
        AuthMethod::Local => "local",
    }
}

/// What the baseline window teaches about one identity.
#[derive(Default)]
struct Usual {
    requests: u64,
    denied: u64,
    tools: BTreeSet<String>,
    tables: BTreeSet<String>,
}

/// One identity's activity in the period, as it accumulates.
struct Active {
    identity: Identity,
    auth_methods: BTreeSet<&'static str>,
    decisions: Decisions,
    targets: BTreeSet<String>,
    tools: BTreeSet<String>,
    tables: BTreeSet<String>,
    first_seen: String,
    last_seen: String,
    first_event: EventRef,
    off_hours: Capped<EventRef>,
    new_tools: Capped<EventRef>,
    new_tool_names: BTreeSet<String>,
    new_tables: Capped<EventRef>,
    new_table_names: BTreeSet<String>,
    denials: Vec<EventRef>,
}

#[derive(Default)]
struct TargetAcc {
    decisions: Decisions,
    identities: BTreeSet<String>,
    tools: BTreeSet<String>,
    tables: BTreeSet<String>,
    sessions: u64,
    first_seen: String,
    last_seen: String,
}

/// An approval followed through the pass (from the baseline window too, so a decision in
/// the period on a request made before it still names its requester).
struct Following {
    hold: Hold,
    /// Seen in the period (only those are reported).
    in_period: bool,
    requested_at: Option<String>,
    requester: Option<(String, String)>,
    /// The time of the newest approving vote: the decision, once the approval is released
    /// (a held request) or its grant issued.
    last_approve: Option<String>,
}

impl Following {
    /// Closes the approval with `status`, decided at `time`.
    fn close(&mut self, status: &str, time: &str) {
        self.hold.status = status.to_string();
        if let (Some(from), Ok(to)) = (&self.requested_at, parse_time(time))
            && let Ok(from) = parse_time(from)
        {
            let ms = (to - from).num_milliseconds().max(0);
            self.hold.seconds_to_decision = Some(ms as f64 / 1000.0);
        }
    }

    /// An approval is approved when the approvals service acts on it (releases the held
    /// request, issues the grant), not when a vote's text says so: the text quotes what the
    /// requester asked for, and a vote may be one of several needed.
    fn approved(&mut self, at: &str) {
        if self.hold.status == "pending" {
            let decided = self.last_approve.clone().unwrap_or_else(|| at.to_string());
            self.close("approved", &decided);
        }
    }
}

struct Pass<'a> {
    /// For the rare look-up of an approval requested before the baseline window.
    readers: Vec<&'a AuditReader>,
    /// The log of the event being seen (an index into `readers` and `logs`).
    current: usize,
    logs: Vec<LogActivity>,
    /// The gateways of each log.
    log_gateways: Vec<BTreeSet<String>>,
    period: &'a Period,
    options: &'a Options,
    gateways: BTreeSet<String>,
    facts: Facts,
    usual: HashMap<String, Usual>,
    active: BTreeMap<String, Active>,
    targets: BTreeMap<String, TargetAcc>,
    approvals: BTreeMap<String, Following>,
    grants: BTreeMap<String, GrantChange>,
    policy_versions: BTreeMap<String, PolicyVersion>,
    rules: BTreeMap<String, (u64, BTreeSet<String>, Vec<EventRef>)>,
    masking: BTreeMap<(String, String), (u64, u64)>,
    auth_sources: BTreeMap<String, u64>,
    auth_kinds: BTreeMap<String, u64>,
}

impl<'a> Pass<'a> {
    fn new(readers: Vec<&'a AuditReader>, period: &'a Period, options: &'a Options) -> Pass<'a> {
        Pass {
            log_gateways: vec![BTreeSet::new(); readers.len()],
            readers,
            current: 0,
            logs: Vec::new(),
            period,
            options,
            gateways: BTreeSet::new(),
            facts: Facts::default(),
            usual: HashMap::new(),
            active: BTreeMap::new(),
            targets: BTreeMap::new(),
            approvals: BTreeMap::new(),
            grants: BTreeMap::new(),
            policy_versions: BTreeMap::new(),
            rules: BTreeMap::new(),
            masking: BTreeMap::new(),
            auth_sources: BTreeMap::new(),
            auth_kinds: BTreeMap::new(),
        }
    }

    /// A reference to `event` of the current log.
    fn at(&self, seq: u64, event: &AuditEvent) -> EventRef {
        event_ref(seq, event, self.logs[self.current].origin.as_ref())
    }

    fn see(&mut self, seq: u64, event: AuditEvent) {
        if event.time.as_str() >= self.period.until.as_str() {
            return;
        }
        let log = &mut self.logs[self.current];
        log.events_to_period_end = log.events_to_period_end.max(seq);
        if event.time.as_str() < self.period.since.as_str() {
            self.learn(seq, &event);
            return;
        }
        log.first_seq = Some(log.first_seq.map_or(seq, |s| s.min(seq)));
        log.last_seq = Some(log.last_seq.map_or(seq, |s| s.max(seq)));
        log.events += 1;
        log.requests += u64::from(event.event_type == EventType::Request);
        self.facts.totals.events += 1;
        if !self.gateways.contains(&event.gateway) {
            self.gateways.insert(event.gateway.clone());
        }
        let log_gateways = &mut self.log_gateways[self.current];
        if !log_gateways.contains(&event.gateway) {
            log_gateways.insert(event.gateway.clone());
        }
        let at = self.at(seq, &event);
        if let Some(version) = &event.policy_version {
            let at = at.clone();
            let entry = self
                .policy_versions
                .entry(version.clone())
                .or_insert_with(|| PolicyVersion {
                    version: version.clone(),
                    first_seen: at,
                    last_seen: String::new(),
                    events: 0,
                });
            entry.events += 1;
            entry.last_seen.clone_from(&event.time);
        }
        let cap = self.options.cap;
        match event.event_type {
            EventType::Request => self.request(seq, &event),
            EventType::SessionStart => {
                self.facts.totals.sessions += 1;
                if let Some(target) = &event.target {
                    let acc = self.target(target, &event.time);
                    acc.sessions += 1;
                }
            }
            EventType::AuthFailure => {
                let failures = &mut self.facts.auth_failures;
                failures.total += 1;
                if failures.samples.len() < SAMPLES {
                    failures.samples.push(at.clone());
                }
                let source = event
                    .source
                    .as_deref()
                    .map(host_of)
                    .unwrap_or("unknown")
                    .to_string();
                *self.auth_sources.entry(source).or_default() += 1;
                let kind = event
                    .detail
                    .as_deref()
                    .and_then(|d| d.split_once(':'))
                    .map(|(code, _)| code.trim())
                    .filter(|code| !code.is_empty() && !code.contains(' '))
                    .unwrap_or("unauthenticated")
                    .to_string();
                *self.auth_kinds.entry(kind).or_default() += 1;
            }
            EventType::ApprovalRequested
            | EventType::ApprovalApproved
            | EventType::ApprovalDenied
            | EventType::ApprovalRefused
            | EventType::ApprovalReleased
            | EventType::ApprovalExpired
            | EventType::ApprovalCancelled => self.approval(seq, &event, true),
            EventType::GrantIssued | EventType::GrantRevoked | EventType::GrantExpired => {
                self.grant(seq, &event)
            }
            EventType::GatewayStart => {
                self.facts.access.gateway_starts.push(cap, at.clone());
            }
            EventType::ToolPinAccepted | EventType::ToolPinMismatch => {
                let change = PinChange {
                    target: event.target.clone().unwrap_or_default(),
                    tool: event.resource.clone().unwrap_or_default(),
                    by: event.identity.as_ref().map(identity_name),
                    event: at.clone(),
                };
                if event.event_type == EventType::ToolPinAccepted {
                    self.facts.access.pins_accepted.push(cap, change);
                } else {
                    self.facts.access.pins_withheld.push(cap, change);
                }
            }
            EventType::EvidenceReviewed => {
                // A review is of a review report (the gateway refuses sign-offs of anything
                // else; older events are held to the same rule here).
                if let Some(record) = event.evidence.as_ref().filter(|r| r.document == "report") {
                    self.facts.checks.reviews += 1;
                    let reviewed_period = match (&record.since, &record.until) {
                        (Some(since), Some(until)) => Some(Period {
                            since: since.clone(),
                            until: until.clone(),
                        }),
                        _ => None,
                    };
                    if self.facts.reviews.len() < cap {
                        self.facts.reviews.push(Review {
                            reviewer: event
                                .identity
                                .as_ref()
                                .map(identity_name)
                                .unwrap_or_else(|| "(unnamed)".into()),
                            reason: event.reason.clone(),
                            sha256: record.sha256.clone(),
                            reviewed_period,
                            event: at.clone(),
                        });
                    }
                }
            }
            EventType::EvidenceReport => {
                if let Some(record) = &event.evidence
                    && self.facts.documents.len() < cap
                {
                    self.facts.documents.push(DocumentWritten {
                        document: record.document.clone(),
                        format: record.format.clone(),
                        sha256: record.sha256.clone(),
                        file: record.file.clone(),
                        event: at.clone(),
                    });
                }
            }
            // A reload's policy version is counted with the others above (CM-3): the
            // report's policy versions show when it came into force.
            EventType::SessionEnd
            | EventType::Notification
            | EventType::GatewayStop
            | EventType::ConfigReloaded
            | EventType::ApprovalNotified
            | EventType::ColumnsDiscovered
            | EventType::RecordingSealed
            | EventType::RecordingRemoved
            | EventType::RecordingAccessed
            | EventType::RecordingFailed
            | EventType::ConsoleSignIn
            | EventType::ConsoleSignOut
            | EventType::ConsoleExport => {}
        }
    }

    /// A baseline-window event: what is usual.
    fn learn(&mut self, seq: u64, event: &AuditEvent) {
        match event.event_type {
            EventType::Request => {
                let Some(identity) = &event.identity else {
                    return;
                };
                let usual = self.usual.entry(identity_name(identity)).or_default();
                usual.requests += 1;
                if event.outcome == Outcome::Denied {
                    usual.denied += 1;
                }
                if let Some(tool) = tool_of(event) {
                    usual.tools.insert(tool.to_string());
                }
                if let Some(statement) = &event.statement {
                    usual.tables.extend(statement.tables.iter().cloned());
                }
            }
            EventType::ApprovalRequested
            | EventType::ApprovalApproved
            | EventType::ApprovalDenied
            | EventType::ApprovalRefused
            | EventType::ApprovalReleased
            | EventType::ApprovalExpired
            | EventType::ApprovalCancelled => self.approval(seq, event, false),
            _ => {}
        }
    }

    fn target(&mut self, name: &str, time: &str) -> &mut TargetAcc {
        let acc = self.targets.entry(name.to_string()).or_default();
        if acc.first_seen.is_empty() {
            acc.first_seen = time.to_string();
        }
        if time > acc.last_seen.as_str() {
            acc.last_seen = time.to_string();
        }
        acc
    }

    fn request(&mut self, seq: u64, event: &AuditEvent) {
        let cap = self.options.cap;
        let at = self.at(seq, event);
        let totals = &mut self.facts.totals;
        totals.requests += 1;
        let forwarded = matches!(event.outcome, Outcome::Success | Outcome::UpstreamError);
        let held = event.approval.is_some() || event.decision.as_deref() == Some("hold");
        match event.outcome {
            Outcome::Success => totals.allowed += 1,
            Outcome::UpstreamError => {
                totals.allowed += 1;
                totals.failed += 1;
            }
            Outcome::Denied => totals.denied += 1,
            Outcome::Rejected => totals.rejected += 1,
            Outcome::Failed => totals.failed += 1,
            Outcome::Info => {}
        }
        if held {
            totals.held += 1;
        }
        let tally = |d: &mut Decisions| {
            d.requests += 1;
            d.allowed += u64::from(forwarded);
            d.denied += u64::from(event.outcome == Outcome::Denied);
            d.held += u64::from(held);
            d.failed += u64::from(matches!(
                event.outcome,
                Outcome::Failed | Outcome::UpstreamError
            ));
        };
        let tool = tool_of(event);
        let tables: &[String] = event
            .statement
            .as_ref()
            .map_or(&[], |s| s.tables.as_slice());
        let name = event.identity.as_ref().map(identity_name);
        if let Some(target) = &event.target {
            let acc = self.target(target, &event.time);
            tally(&mut acc.decisions);
            if let Some(name) = &name
                && !acc.identities.contains(name)
            {
                acc.identities.insert(name.clone());
            }
            if let Some(tool) = tool {
                acc.tools.insert(tool.to_string());
            }
            acc.tables.extend(tables.iter().cloned());
        }

        // AU-3: what, when, where, source, outcome, and who when it was let through.
        let checks = &mut self.facts.checks;
        checks.au3_checked += 1;
        let mut missing = Vec::new();
        if event.id.is_empty() {
            missing.push("id");
        }
        if event.time.is_empty() {
            missing.push("time");
        }
        if event.gateway.is_empty() {
            missing.push("gateway");
        }
        if event.target.is_none() {
            missing.push("target");
        }
        if event.action.is_none() {
            missing.push("action");
        }
        if event.source.is_none() {
            missing.push("source");
        }
        if forwarded && event.identity.is_none() {
            missing.push("identity");
        }
        if event.decision.is_some() && event.policy_version.is_none() {
            missing.push("policy_version");
        }
        if !missing.is_empty() {
            checks.au3_incomplete.push(cap, (at.clone(), missing));
        }
        if forwarded {
            checks.allowed += 1;
            if event.rule.is_none() {
                checks.allowed_without_rule.push(cap, at.clone());
            }
            if event.identity.is_none() {
                checks.anonymous_allowed.push(cap, at.clone());
            }
        }
        if event.outcome == Outcome::Denied
            && matches!(event.rule.as_deref(), None | Some("default-deny"))
        {
            checks.default_denied += 1;
        }

        // Privileged and sensitive actions.
        let kinds: &[String] = event.statement.as_ref().map_or(&[], |s| s.kinds.as_slice());
        let mut why: Vec<String> = Vec::new();
        let has = |list: &[&str]| kinds.iter().any(|k| list.contains(&k.as_str()));
        if has(WRITE_KINDS) {
            why.push("write".into());
        }
        if has(PRIVILEGED_KINDS) {
            why.push("privileged".into());
        }
        if has(DESTRUCTIVE_KINDS) {
            why.push("destructive".into());
        }
        if held {
            why.push("held".into());
        }
        let privileged_statement = has(PRIVILEGED_KINDS);
        if privileged_statement {
            if forwarded {
                checks.privileged_allowed += 1;
                if event.rule.is_none() {
                    checks.privileged_unexplained.push(cap, at.clone());
                }
            } else if event.outcome == Outcome::Denied {
                checks.privileged_refused += 1;
            }
        }
        if forwarded && !why.is_empty() {
            let action = if kinds.is_empty() {
                event.action.clone().unwrap_or_default()
            } else {
                kinds.join(", ")
            };
            let objects = if tables.is_empty() {
                event.resource.iter().cloned().collect()
            } else {
                tables.to_vec()
            };
            self.facts.privileged.push(
                cap,
                PrivilegedAction {
                    event: at.clone(),
                    identity: name.clone().unwrap_or_else(|| "(anonymous)".into()),
                    target: event.target.clone().unwrap_or_default(),
                    action,
                    objects,
                    statement: event.statement.as_ref().map(|s| s.text.clone()),
                    why,
                    rule: event.rule.clone().unwrap_or_else(|| "(none)".into()),
                    approval: event.approval.clone(),
                    outcome: outcome_label(event.outcome).into(),
                },
            );
        }

        // Refusals by rule.
        if event.outcome == Outcome::Denied {
            let rule = event
                .rule
                .clone()
                .unwrap_or_else(|| "default-deny".to_string());
            let entry = self.rules.entry(rule).or_default();
            entry.0 += 1;
            if let Some(name) = &name
                && entry.1.len() < cap
            {
                entry.1.insert(name.clone());
            }
            if entry.2.len() < SAMPLES {
                entry.2.push(at.clone());
            }
        }

        // Grants used.
        if let Some(grant) = &event.grant
            && forwarded
        {
            let change = self
                .grants
                .entry(grant.clone())
                .or_insert_with(|| GrantChange {
                    grant: grant.clone(),
                    holder: name.clone().unwrap_or_default(),
                    target: event.target.clone().unwrap_or_default(),
                    scope: None,
                    state: "issued".into(),
                    events: Vec::new(),
                    uses: 0,
                });
            change.uses += 1;
        }

        // Masking, per identity and detector: counts only.
        if let (Some(masked), Some(name)) = (&event.masked, &name) {
            let mut seen = BTreeSet::new();
            for finding in masked {
                let entry = self
                    .masking
                    .entry((name.clone(), finding.detector.clone()))
                    .or_default();
                entry.0 += u64::from(finding.count);
                if seen.insert(finding.detector.as_str()) {
                    entry.1 += 1;
                }
            }
        }

        // The identity's own activity.
        let Some(identity) = &event.identity else {
            return;
        };
        let name = name.expect("an identity has a name");
        let usual = self.usual.get(&name);
        let work_hours = self.options.work_hours;
        let active = self.active.entry(name.clone()).or_insert_with(|| Active {
            identity: identity.clone(),
            auth_methods: BTreeSet::new(),
            decisions: Decisions::default(),
            targets: BTreeSet::new(),
            tools: BTreeSet::new(),
            tables: BTreeSet::new(),
            first_seen: event.time.clone(),
            last_seen: event.time.clone(),
            first_event: at.clone(),
            off_hours: Capped::default(),
            new_tools: Capped::default(),
            new_tool_names: BTreeSet::new(),
            new_tables: Capped::default(),
            new_table_names: BTreeSet::new(),
            denials: Vec::new(),
        });
        active
            .auth_methods
            .insert(auth_method(identity.auth_method));
        tally(&mut active.decisions);
        if event.time > active.last_seen {
            active.last_seen.clone_from(&event.time);
        }
        if let Some(target) = &event.target
            && !active.targets.contains(target)
        {
            active.targets.insert(target.clone());
        }
        if let Some(tool) = tool
            && active.tools.insert(tool.to_string())
            && usual.is_some_and(|u| !u.tools.contains(tool))
        {
            active.new_tools.push(SAMPLES, at.clone());
            active.new_tool_names.insert(tool.to_string());
        }
        for table in tables {
            if active.tables.insert(table.clone())
                && usual.is_some_and(|u| !u.tables.contains(table))
            {
                active.new_tables.push(SAMPLES, at.clone());
                active.new_table_names.insert(table.clone());
            }
        }
        if event.outcome == Outcome::Denied && active.denials.len() < SAMPLES {
            active.denials.push(at.clone());
        }
        if let Ok(time) = parse_time(&event.time)
            && !work_hours.contains(time.hour() * 60 + time.minute())
        {
            active.off_hours.push(SAMPLES, at);
        }
    }

    fn approval(&mut self, seq: u64, event: &AuditEvent, in_period: bool) {
        let Some(id) = &event.approval else {
            return;
        };
        let cap = self.options.cap;
        let at = self.at(seq, event);
        let following = self
            .approvals
            .entry(id.clone())
            .or_insert_with(|| Following {
                hold: Hold {
                    approval: id.clone(),
                    kind: if event.grant.is_some() {
                        "grant".into()
                    } else {
                        "request".into()
                    },
                    requester: "(requested before the baseline window)".into(),
                    target: event.target.clone().unwrap_or_default(),
                    action: event.action.clone().unwrap_or_default(),
                    resource: event.resource.clone(),
                    rule: event.rule.clone().unwrap_or_default(),
                    reason: None,
                    requested: at.clone(),
                    status: "pending".into(),
                    decisions: Vec::new(),
                    seconds_to_decision: None,
                    released: None,
                },
                in_period: false,
                requested_at: None,
                requester: None,
                last_approve: None,
            });
        following.in_period |= in_period;
        if following.requester.is_none() && event.event_type != EventType::ApprovalRequested {
            // Requested before the baseline window: its requester decides whether this is a
            // self-approval (AC-5), so it is looked up rather than guessed.
            let requested = self.readers[self.current]
                .approval_events(id, (1, seq))
                .ok()
                .into_iter()
                .flatten()
                .filter_map(|(_, body)| serde_json::from_str::<AuditEvent>(&body).ok())
                .find(|e| e.event_type == EventType::ApprovalRequested);
            if let Some(requested) = requested {
                following.hold.requester = requested
                    .identity
                    .as_ref()
                    .map_or_else(|| "(unnamed)".into(), identity_name);
                following.hold.reason.clone_from(&requested.reason);
                following.requested_at = Some(requested.time.clone());
                following.requester = requested
                    .identity
                    .as_ref()
                    .map(|i| (i.issuer.clone(), i.subject.clone()));
            }
        }
        let hold = &mut following.hold;
        let who = event.identity.as_ref().map(identity_name);
        match event.event_type {
            EventType::ApprovalRequested => {
                hold.requester = who.clone().unwrap_or_else(|| "(unnamed)".into());
                hold.reason.clone_from(&event.reason);
                hold.requested = at;
                following.requested_at = Some(event.time.clone());
                following.requester = event
                    .identity
                    .as_ref()
                    .map(|i| (i.issuer.clone(), i.subject.clone()));
                if in_period && event.grant.is_some() {
                    let change = self
                        .grants
                        .entry(id.clone())
                        .or_insert_with(|| GrantChange {
                            grant: id.clone(),
                            holder: who.unwrap_or_default(),
                            target: event.target.clone().unwrap_or_default(),
                            scope: event.resource.clone(),
                            state: "requested".into(),
                            events: Vec::new(),
                            uses: 0,
                        });
                    change.events.push(following.hold.requested.clone());
                }
            }
            EventType::ApprovalApproved
            | EventType::ApprovalDenied
            | EventType::ApprovalRefused => {
                let own = match (&following.requester, &event.identity) {
                    (Some((issuer, subject)), Some(i)) => {
                        &i.issuer == issuer && &i.subject == subject
                    }
                    // No request event to compare with: the approvals service's own words.
                    _ => event
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.contains("self-approval") || d.contains("own request")),
                };
                let decision = Decision {
                    approval: id.clone(),
                    who: who.unwrap_or_else(|| "(unnamed)".into()),
                    decision: event.decision.clone().unwrap_or_else(|| {
                        if event.event_type == EventType::ApprovalDenied {
                            "deny".into()
                        } else {
                            "approve".into()
                        }
                    }),
                    reason: event.reason.clone(),
                    break_glass: event.break_glass,
                    own_request: own,
                    event: at.clone(),
                    detail: event.detail.clone(),
                };
                if !in_period {
                    // Decisions of the baseline window only settle the approval's state.
                } else if event.event_type == EventType::ApprovalRefused {
                    if own {
                        self.facts.checks.self_approvals_refused += 1;
                    }
                    self.facts.refused_decisions.push(cap, decision);
                    return;
                } else {
                    if event.break_glass {
                        self.facts.break_glass.push(cap, decision.clone());
                    }
                    if own && event.event_type == EventType::ApprovalApproved {
                        if event.break_glass {
                            self.facts
                                .checks
                                .self_approvals_break_glass
                                .push(cap, at.clone());
                        } else {
                            self.facts
                                .checks
                                .self_approvals_outside_break_glass
                                .push(cap, at.clone());
                        }
                    }
                }
                if event.event_type == EventType::ApprovalRefused {
                    return;
                }
                if hold.decisions.len() < SAMPLES * 2 {
                    hold.decisions.push(decision);
                }
                // One deny ends an approval; approvals end it when it is acted on.
                if event.event_type == EventType::ApprovalDenied {
                    following.close("denied", &event.time);
                } else {
                    following.last_approve = Some(event.time.clone());
                }
            }
            EventType::ApprovalReleased => {
                hold.released = Some(at);
                following.approved(&event.time);
            }
            EventType::ApprovalExpired => following.close("expired", &event.time),
            EventType::ApprovalCancelled => following.close("cancelled", &event.time),
            _ => {}
        }
    }

    fn grant(&mut self, seq: u64, event: &AuditEvent) {
        let Some(id) = event.grant.as_ref().or(event.approval.as_ref()) else {
            return;
        };
        let at = self.at(seq, event);
        let state = match event.event_type {
            EventType::GrantIssued => "issued",
            EventType::GrantRevoked => "revoked",
            _ => "expired",
        };
        let holder = match self.approvals.get_mut(id) {
            Some(following) => {
                if event.event_type == EventType::GrantIssued {
                    following.approved(&event.time);
                }
                following.hold.requester.clone()
            }
            None => String::new(),
        };
        let change = self
            .grants
            .entry(id.clone())
            .or_insert_with(|| GrantChange {
                grant: id.clone(),
                holder,
                target: event.target.clone().unwrap_or_default(),
                scope: event.resource.clone(),
                state: state.into(),
                events: Vec::new(),
                uses: 0,
            });
        change.state = state.into();
        if change.events.len() < SAMPLES * 2 {
            change.events.push(at);
        }
    }

    fn finish(mut self) -> Facts {
        let cap = self.options.cap;
        let days = self.period.days();
        let baseline_days = f64::from(self.options.baseline_days.max(1));
        let mut facts = std::mem::take(&mut self.facts);
        facts.gateways = self.gateways.into_iter().collect();
        facts.logs = std::mem::take(&mut self.logs);
        for (log, gateways) in facts.logs.iter_mut().zip(self.log_gateways) {
            log.gateways = gateways.into_iter().collect();
        }

        let mut anomalies = Vec::new();
        let mut identities = Vec::new();
        for (name, active) in self.active {
            let usual = self.usual.get(&name);
            let new = usual.is_none();
            if new && active.identity.auth_method == AuthMethod::ApiKey {
                facts.access.api_keys_first_used.push(
                    cap,
                    FirstUse {
                        identity: name.clone(),
                        event: active.first_event.clone(),
                    },
                );
            }
            anomalies.extend(flag(
                &name,
                &active,
                usual,
                days,
                baseline_days,
                self.options,
            ));
            identities.push(IdentityActivity {
                name: name.clone(),
                issuer: active.identity.issuer.clone(),
                subject: active.identity.subject.clone(),
                display_name: active.identity.display_name.clone(),
                kind: active.identity.kind.as_str().into(),
                auth_methods: active.auth_methods.iter().map(|m| m.to_string()).collect(),
                decisions: active.decisions,
                targets: active.targets.into_iter().collect(),
                tools: capped(active.tools, cap),
                tables: capped(active.tables, cap),
                first_seen: active.first_seen,
                last_seen: active.last_seen,
                new,
                first_event: active.first_event,
            });
        }
        identities.sort_by(|a, b| {
            b.decisions
                .requests
                .cmp(&a.decisions.requests)
                .then_with(|| a.name.cmp(&b.name))
        });
        facts.totals.identities = identities.len() as u64;
        facts.identities = identities;
        facts.anomalies = anomalies;

        let mut silent = Vec::new();
        facts.targets = self
            .targets
            .into_iter()
            .map(|(name, acc)| {
                if acc.sessions > 0 && acc.decisions.requests == 0 {
                    silent.push(name.clone());
                }
                TargetActivity {
                    name,
                    decisions: acc.decisions,
                    identities: acc.identities.len() as u64,
                    tools: capped(acc.tools, cap),
                    tables: capped(acc.tables, cap),
                    sessions: acc.sessions,
                    first_seen: acc.first_seen,
                    last_seen: acc.last_seen,
                }
            })
            .collect();
        facts.totals.targets = facts.targets.len() as u64;
        facts.checks.silent_targets = silent;

        for (_, following) in self.approvals {
            if following.in_period {
                facts.holds.push(cap, following.hold);
            }
        }
        for (_, change) in self.grants {
            facts.access.grants.push(cap, change);
        }
        let mut versions: Vec<PolicyVersion> = self.policy_versions.into_values().collect();
        versions.sort_by_key(|a| a.first_seen.seq);
        facts.access.policy_versions = versions;

        let mut rules: Vec<RuleRefusals> = self
            .rules
            .into_iter()
            .map(|(rule, (count, identities, samples))| RuleRefusals {
                rule,
                count,
                identities: identities.into_iter().collect(),
                samples,
            })
            .collect();
        rules.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
        facts.refusals_by_rule = rules;

        facts.masking = self
            .masking
            .into_iter()
            .map(|((identity, detector), (values, answers))| MaskingCount {
                identity,
                detector,
                values,
                answers,
            })
            .collect();
        facts.auth_failures.by_source = most_first(self.auth_sources, cap);
        facts.auth_failures.by_kind = most_first(self.auth_kinds, cap);
        facts
    }
}

/// The anomaly rules, each stated in what it reports.
fn flag(
    name: &str,
    active: &Active,
    usual: Option<&Usual>,
    days: f64,
    baseline_days: f64,
    options: &Options,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let d = &active.decisions;
    let anomaly = |kind: &str, rule: String, detail: String, samples: Vec<EventRef>| Anomaly {
        kind: kind.into(),
        identity: name.to_string(),
        rule,
        detail,
        samples,
    };
    if d.requests > 0 && d.denied >= 5 {
        let rate = d.denied as f64 / d.requests as f64;
        let usual_rate = usual
            .filter(|u| u.requests > 0)
            .map(|u| u.denied as f64 / u.requests as f64);
        let spike = match usual_rate {
            Some(base) => rate >= 3.0 * base && rate - base >= 0.05,
            None => rate >= 0.2,
        };
        if spike {
            out.push(anomaly(
                "denial-spike",
                "at least 5 refusals, at a refusal rate at least 3 times the identity's rate in \
                 the baseline window (or at least 20 % when it has no baseline)"
                    .into(),
                format!(
                    "{} of {} requests refused ({:.0} %; baseline {})",
                    d.denied,
                    d.requests,
                    rate * 100.0,
                    usual_rate.map_or("none".to_string(), |b| format!("{:.0} %", b * 100.0))
                ),
                active.denials.clone(),
            ));
        }
    }
    if active.off_hours.total > 0 {
        out.push(anomaly(
            "off-hours",
            format!(
                "requests outside working hours, {:02}:{:02}-{:02}:{:02} UTC",
                options.work_hours.start_minute / 60,
                options.work_hours.start_minute % 60,
                options.work_hours.end_minute / 60,
                options.work_hours.end_minute % 60
            ),
            format!("{} requests outside working hours", active.off_hours.total),
            active.off_hours.items.clone(),
        ));
    }
    let first_uses = |kind: &str,
                      rule: &str,
                      verb: &str,
                      names: &BTreeSet<String>,
                      samples: &Capped<EventRef>| {
        (!names.is_empty()).then(|| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            anomaly(
                kind,
                rule.into(),
                format!("{verb} {}", names.join(", ")),
                samples.items.clone(),
            )
        })
    };
    out.extend(first_uses(
        "new-tool",
        "a tool the identity did not call in the baseline window",
        "first calls of",
        &active.new_tool_names,
        &active.new_tools,
    ));
    out.extend(first_uses(
        "new-table",
        "a table the identity did not touch in the baseline window",
        "first statements on",
        &active.new_table_names,
        &active.new_tables,
    ));
    if let Some(usual) = usual {
        let per_day = d.requests as f64 / days;
        let usual_per_day = usual.requests as f64 / baseline_days;
        if d.requests >= 100 && per_day > 3.0 * usual_per_day {
            out.push(anomaly(
                "volume",
                "at least 100 requests, at more than 3 times the identity's daily average in \
                 the baseline window"
                    .into(),
                format!("{per_day:.0} requests a day against {usual_per_day:.1} a day before"),
                vec![active.first_event.clone()],
            ));
        }
    }
    out
}

fn tool_of(event: &AuditEvent) -> Option<&str> {
    (event.action.as_deref() == Some("tools/call"))
        .then_some(event.resource.as_deref())
        .flatten()
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::UpstreamError => "upstream_error",
        Outcome::Denied => "denied",
        Outcome::Rejected => "rejected",
        Outcome::Failed => "failed",
        Outcome::Info => "info",
    }
}

/// The host of a `host:port` source (so failures from one machine count together).
fn host_of(source: &str) -> &str {
    match source.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => source,
    }
}

fn capped(set: BTreeSet<String>, cap: usize) -> Capped<String> {
    Capped {
        total: set.len() as u64,
        items: set.into_iter().take(cap).collect(),
    }
}

fn most_first(counts: BTreeMap<String, u64>, cap: usize) -> Vec<Count> {
    let mut out: Vec<Count> = counts
        .into_iter()
        .map(|(name, count)| Count { name, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    out.truncate(cap);
    out
}
