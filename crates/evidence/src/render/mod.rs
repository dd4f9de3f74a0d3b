//! The AU-6 review report for people: one self-contained HTML file, and Markdown.
//!
//! The report is first laid out once as a small document ([`Block`]s of [`Inline`]s: headings,
//! paragraphs, tables, lists, event references), then written by [`html`] or [`markdown`].
//! Both formats therefore carry exactly the same facts in the same order, and each writer has
//! one escape function that every string from the report goes through: the writers only emit
//! markup of their own around escaped text, so a hostile value (an agent may name itself
//! `<script>`, a reason may hold `|` and newlines) stays text.
//!
//! Why a hand-written writer rather than a template crate (askama): the two formats would be
//! two template trees to keep in step by hand, and Markdown needs its own escaper (askama
//! escapes for HTML; a GFM table cell needs `|`, backticks and newlines handled, which a
//! custom escaper plus per-cell filters would express less plainly than one tested function).
//! The layout here is the single place that decides what the report says; no dependency.
//!
//! The order is the issue's: integrity first (and, when the log did not verify, the failure
//! and that AU-9 is not satisfied, before anything else), then the control checks, then every
//! section of the [`Report`]. Empty sections say so in a sentence; capped lists say how many
//! more there were. Every item names its events (short id, seq, session), and an index at the
//! end gives each event's full id and the commands that look it up, prove it and replay its
//! session. Nothing in the output depends on when it was rendered: the same report gives the
//! same bytes, as a signed report's hash is logged.

mod html;
mod markdown;

use std::collections::BTreeMap;

use crate::Report;
use crate::report::{Capped, ControlStatus, Decision, EventRef, Integrity};

pub use html::html;
pub use markdown::markdown;

/// A piece of text in a paragraph or a table cell.
#[derive(Debug, Clone)]
enum Inline {
    Text(String),
    Strong(String),
    /// A command or an identifier, shown in a fixed-width font.
    Code(String),
    /// A control's status, styled by the HTML writer.
    Status(ControlStatus),
    /// A reference to an event: short id, seq, session; details in the event index.
    Event(EventRef),
    /// A line break inside a paragraph or cell.
    Break,
}

/// One row of a table; `anchor` makes the row a link target (the event index).
#[derive(Debug, Clone)]
struct Row {
    anchor: Option<String>,
    cells: Vec<Vec<Inline>>,
}

#[derive(Debug, Clone)]
enum Block {
    /// `anchor` is a fixed word from this module, never text from the report.
    Heading {
        level: u8,
        text: &'static str,
        anchor: &'static str,
    },
    Para(Vec<Inline>),
    /// A prominent statement: a failure (`ok == false`) or the integrity verdict.
    Callout {
        ok: bool,
        content: Vec<Inline>,
    },
    Table {
        head: Vec<&'static str>,
        rows: Vec<Row>,
    },
    List(Vec<Vec<Inline>>),
}

/// The document title, also the HTML `<title>` and the printed page header.
fn title(report: &Report) -> String {
    format!(
        "AU-6 audit review: {} to {}",
        report.period.since, report.period.until
    )
}

fn text(s: impl Into<String>) -> Inline {
    Inline::Text(s.into())
}

fn strong(s: impl Into<String>) -> Inline {
    Inline::Strong(s.into())
}

fn code(s: impl Into<String>) -> Inline {
    Inline::Code(s.into())
}

fn para(content: Vec<Inline>) -> Block {
    Block::Para(content)
}

fn sentence(s: impl Into<String>) -> Block {
    Block::Para(vec![text(s)])
}

fn cell(s: impl Into<String>) -> Vec<Inline> {
    vec![text(s)]
}

fn count_cell(n: u64) -> Vec<Inline> {
    vec![text(n.to_string())]
}

fn opt_cell(s: &Option<String>) -> Vec<Inline> {
    match s {
        Some(s) => cell(s.clone()),
        None => cell("—"),
    }
}

/// Event references, separated by line breaks.
fn events_cell<'a>(events: impl IntoIterator<Item = &'a EventRef>) -> Vec<Inline> {
    let mut out = Vec::new();
    for event in events {
        if !out.is_empty() {
            out.push(Inline::Break);
        }
        out.push(Inline::Event(event.clone()));
    }
    if out.is_empty() {
        out.push(text("—"));
    }
    out
}

/// A list of names, and how many more a capped list counted.
fn names_cell(names: &[String], more: u64) -> Vec<Inline> {
    let mut s = names.join(", ");
    if more > 0 {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&format!("and {more} more"));
    }
    if s.is_empty() {
        s.push('—');
    }
    cell(s)
}

fn capped_names(list: &Capped<String>) -> Vec<Inline> {
    names_cell(&list.items, list.more())
}

fn table(head: Vec<&'static str>, rows: Vec<Vec<Vec<Inline>>>) -> Block {
    Block::Table {
        head,
        rows: rows
            .into_iter()
            .map(|cells| Row {
                anchor: None,
                cells,
            })
            .collect(),
    }
}

/// The sentence after a capped table: how many were not listed.
fn and_more<T>(list: &Capped<T>) -> Option<Block> {
    (list.more() > 0).then(|| {
        sentence(format!(
            "And {} more ({} in all), not listed here.",
            list.more(),
            list.total
        ))
    })
}

/// A duration in seconds, for a person: `42.5 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return format!("{seconds} s");
    }
    if seconds < 60.0 {
        let rounded = (seconds * 10.0).round() / 10.0;
        return format!("{rounded} s");
    }
    let whole = seconds.round() as u64;
    let (d, h, m, s) = (
        whole / 86_400,
        whole % 86_400 / 3600,
        whole % 3600 / 60,
        whole % 60,
    );
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min {s} s")
    }
}

/// A short, recognisable form of an event id: its first 8 and last 4 characters. UUIDv7 ids
/// of one millisecond share their start, so the tail tells them apart; the seq beside it is
/// exact, and the full id is in the event index (and in the HTML tooltip).
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 14 {
        return id.to_string();
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A value as one shell word, quoted when it holds anything but plain id characters: the
/// commands in the event index are meant to be pasted.
fn shell_word(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@+=".contains(c));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The HTML anchor of an event: its seq, which is unique in the log and only digits.
fn event_anchor(event: &EventRef) -> String {
    match &event.log {
        None => format!("ev-{}", event.seq),
        // seq counts within a log: with several, the log is part of the anchor, reduced to
        // characters an anchor may hold.
        Some(log) => {
            let log: String = log
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            format!("ev-{log}-{}", event.seq)
        }
    }
}

/// Lays out the whole report.
fn layout(report: &Report) -> Vec<Block> {
    let mut doc = Vec::new();
    // The period is in the title; the first section is whether the log can be trusted.
    integrity(&report.integrity, !report.logs.is_empty(), &mut doc);
    logs(report, &mut doc);
    controls(report, &mut doc);
    summary(report, &mut doc);
    identities(report, &mut doc);
    targets(report, &mut doc);
    privileged(report, &mut doc);
    holds(report, &mut doc);
    decisions(
        &mut doc,
        "Break-glass decisions",
        "break-glass",
        &report.break_glass,
        "No break-glass decisions in the period.",
    );
    decisions(
        &mut doc,
        "Refused decisions (self-approval and out-of-group attempts)",
        "refused-decisions",
        &report.refused_decisions,
        "No refused approval decisions in the period.",
    );
    access(report, &mut doc);
    auth_failures(report, &mut doc);
    refusals(report, &mut doc);
    masking(report, &mut doc);
    anomalies(report, &mut doc);
    reviews(report, &mut doc);
    documents(report, &mut doc);
    event_index(report, &mut doc);
    doc
}

/// The period in full, the gateways, the format: the opening of the summary.
fn period_and_sources(report: &Report, doc: &mut Vec<Block>) {
    doc.push(para(vec![
        text("Period: "),
        strong(report.period.since.clone()),
        text(" (inclusive) to "),
        strong(report.period.until.clone()),
        text(" (exclusive), UTC."),
    ]));
    let gateways = if report.gateways.is_empty() {
        "none (no events in the period)".to_string()
    } else {
        report.gateways.join(", ")
    };
    doc.push(para(vec![
        text(format!("Gateways: {gateways}. Report format: ")),
        code(report.format.clone()),
        text("."),
    ]));
}

/// A report over several logs (the replicas of a gateway): each log's share and verification.
fn logs(report: &Report, doc: &mut Vec<Block>) {
    if report.logs.is_empty() {
        return;
    }
    doc.push(para(vec![text(format!(
        "This report covers {} logs, one per gateway replica: their events are merged by \
         time, and each event names its log beside its seq (seq counts within a log; run \
         the commands below in that log's data directory).",
        report.logs.len()
    ))]));
    doc.push(table(
        vec![
            "Log origin",
            "Gateways",
            "Events",
            "Requests",
            "Verified",
            "Covering checkpoint",
            "Last cosignature",
        ],
        report
            .logs
            .iter()
            .map(|log| {
                let i = &log.integrity;
                let verified = match &i.failure {
                    None if i.verified => cell("yes"),
                    failure => vec![strong(format!(
                        "NO: {}",
                        failure.as_deref().unwrap_or("not verified")
                    ))],
                };
                vec![
                    vec![code(log.origin.clone())],
                    cell(log.gateways.join(", ")),
                    count_cell(log.events),
                    count_cell(log.requests),
                    verified,
                    match &i.covering_checkpoint {
                        Some(c) => cell(format!(
                            "size {}{}",
                            c.size,
                            if c.published { ", published" } else { "" }
                        )),
                        None => cell("none yet"),
                    },
                    cell(i.last_cosignature.clone().unwrap_or_else(|| "—".into())),
                ]
            })
            .collect(),
    ));
}

/// The verification; over `several` logs only the verdict, each log's facts being in the
/// table [`logs`] draws.
fn integrity(integrity: &Integrity, several: bool, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Log integrity (AU-9)",
        anchor: "integrity",
    });
    if integrity.verified {
        let mut content = vec![strong("The audit log verified.")];
        content.push(text(format!(
            " Every event up to the period's end ({} events) was checked against the Merkle \
             tree and the signed checkpoints, as ",
            integrity.events_to_period_end
        )));
        content.push(code("portcullis audit verify"));
        content.push(text(" does."));
        doc.push(Block::Callout { ok: true, content });
    } else {
        let failure = integrity
            .failure
            .clone()
            .unwrap_or_else(|| "no reason was recorded".to_string());
        doc.push(Block::Callout {
            ok: false,
            content: vec![
                strong("The audit log did NOT verify: AU-9 is not satisfied."),
                Inline::Break,
                text("Failure: "),
                strong(failure),
                Inline::Break,
                text(
                    "The facts below were read from a log that failed verification: they may \
                     have been altered and must not be relied on until the failure is explained. \
                     Run ",
                ),
                code("portcullis audit verify"),
                text(" to see it."),
            ],
        });
    }
    if several {
        return;
    }
    let checkpoint = match &integrity.covering_checkpoint {
        Some(c) => vec![
            text(format!(
                "{} the checkpoint of size {}, root ",
                if integrity.verified {
                    "Verified against"
                } else {
                    "Checked against"
                },
                c.size
            )),
            code(c.root.clone()),
            text(if c.published {
                ", also found published outside the gateway."
            } else {
                ", found only in the gateway's own database (not published)."
            }),
        ],
        None => vec![strong(
            "No signed checkpoint covers the period's end yet: the period's last events are \
             not under a signature.",
        )],
    };
    let seqs = match (integrity.first_seq, integrity.last_seq) {
        (Some(first), Some(last)) => format!("seq {first} to {last}"),
        _ => "no seq range".to_string(),
    };
    let witnesses = if integrity.checked_with.witnesses.is_empty() {
        "none given".to_string()
    } else {
        integrity.checked_with.witnesses.join(", ")
    };
    let cosignature = match (
        &integrity.last_cosignature,
        integrity.cosignature_age_seconds,
    ) {
        (Some(time), Some(age)) => format!(
            "Last witness cosignature: {time}, {} before the period's end.",
            duration(age as f64)
        ),
        (Some(time), None) => format!("Last witness cosignature: {time}."),
        _ => "No witness cosignature was seen up to the period's end.".to_string(),
    };
    let facts = vec![
        checkpoint,
        vec![
            text("Checked with the key "),
            code(integrity.checked_with.key.clone()),
            text(format!(
                "; published-checkpoint directories given: {}; witness keys: {witnesses}.",
                integrity.checked_with.published_dirs
            )),
        ],
        cell(format!(
            "Log origin: {}.",
            integrity.origin.as_deref().unwrap_or("not known")
        )),
        cell(format!(
            "Events in the period: {} ({seqs}); events in the log up to the period's end: {}.",
            integrity.period_events, integrity.events_to_period_end
        )),
        cell(format!(
            "Checkpoints signed: {}; of them published: {}.",
            integrity.checkpoints_signed, integrity.checkpoints_published
        )),
        cell(cosignature),
    ];
    doc.push(Block::List(facts));
    if integrity.cosignatures.is_empty() {
        doc.push(sentence("No witness cosignatures were verified."));
    } else {
        doc.push(table(
            vec!["Witness", "Checkpoint size", "Cosigned at"],
            integrity
                .cosignatures
                .iter()
                .map(|c| {
                    vec![
                        cell(c.witness.clone()),
                        count_cell(c.size),
                        cell(c.time.clone()),
                    ]
                })
                .collect(),
        ));
    }
}

fn controls(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Control checks",
        anchor: "controls",
    });
    if report.controls.is_empty() {
        doc.push(sentence("No controls were assessed."));
        return;
    }
    let failed = report
        .controls
        .iter()
        .filter(|c| c.status == ControlStatus::NotSatisfied)
        .count();
    doc.push(sentence(format!(
        "{} controls checked automatically, {failed} not satisfied. Each is judged by the rule \
         stated beside it.",
        report.controls.len()
    )));
    doc.push(table(
        vec![
            "Control",
            "Status",
            "Rule",
            "Reason",
            "Events",
            "Sample events",
        ],
        report
            .controls
            .iter()
            .map(|c| {
                vec![
                    vec![
                        strong(c.control.to_uppercase()),
                        text(format!(" {}", c.title)),
                    ],
                    vec![Inline::Status(c.status)],
                    cell(c.rule.clone()),
                    cell(c.reason.clone()),
                    count_cell(c.events),
                    events_cell(&c.samples),
                ]
            })
            .collect(),
    ));
}

fn summary(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Summary",
        anchor: "summary",
    });
    period_and_sources(report, doc);
    let t = &report.totals;
    if t.events == 0 {
        doc.push(Block::Callout {
            ok: true,
            content: vec![strong(
                "No events were recorded in the period: no requests, sessions or changes to \
                 review.",
            )],
        });
    }
    doc.push(table(
        vec![
            "Events",
            "Requests",
            "Allowed",
            "Denied",
            "Held",
            "Rejected",
            "Failed",
            "Sessions",
            "Identities",
            "Targets",
        ],
        vec![
            [
                t.events,
                t.requests,
                t.allowed,
                t.denied,
                t.held,
                t.rejected,
                t.failed,
                t.sessions,
                t.identities,
                t.targets,
            ]
            .into_iter()
            .map(count_cell)
            .collect(),
        ],
    ));
}

fn identities(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Activity per identity (AC-2, IA-2)",
        anchor: "identities",
    });
    if report.identities.is_empty() {
        doc.push(sentence("No identity made a request in the period."));
        return;
    }
    doc.push(table(
        vec![
            "Identity",
            "Kind / authentication",
            "Requests",
            "Allowed",
            "Denied",
            "Held",
            "Failed",
            "Targets",
            "Tools",
            "Tables",
            "First seen",
            "Last seen",
            "First event",
        ],
        report
            .identities
            .iter()
            .map(|i| {
                let mut name = vec![strong(i.name.clone())];
                if let Some(display) = &i.display_name {
                    name.push(Inline::Break);
                    name.push(text(display.clone()));
                }
                if i.new {
                    name.push(Inline::Break);
                    name.push(text("new in the period"));
                }
                let d = &i.decisions;
                vec![
                    name,
                    cell(format!("{} / {}", i.kind, i.auth_methods.join(", "))),
                    count_cell(d.requests),
                    count_cell(d.allowed),
                    count_cell(d.denied),
                    count_cell(d.held),
                    count_cell(d.failed),
                    names_cell(&i.targets, 0),
                    capped_names(&i.tools),
                    capped_names(&i.tables),
                    cell(i.first_seen.clone()),
                    cell(i.last_seen.clone()),
                    events_cell([&i.first_event]),
                ]
            })
            .collect(),
    ));
    let new: Vec<_> = report.identities.iter().filter(|i| i.new).collect();
    if new.is_empty() {
        doc.push(sentence(
            "No identity was seen for the first time: every one was active in the baseline \
             window before the period.",
        ));
    } else {
        doc.push(para(vec![strong(format!(
            "Identities seen for the first time ({}):",
            new.len()
        ))]));
        doc.push(Block::List(
            new.iter()
                .map(|i| {
                    vec![
                        text(format!("{} ({}, {}), first at ", i.name, i.kind, i.issuer)),
                        Inline::Event(i.first_event.clone()),
                    ]
                })
                .collect(),
        ));
    }
}

fn targets(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Activity per target (AU-12)",
        anchor: "targets",
    });
    if report.targets.is_empty() {
        doc.push(sentence("No target received a request in the period."));
        return;
    }
    doc.push(table(
        vec![
            "Target",
            "Requests",
            "Allowed",
            "Denied",
            "Held",
            "Failed",
            "Identities",
            "Sessions",
            "Tools",
            "Tables",
            "First seen",
            "Last seen",
        ],
        report
            .targets
            .iter()
            .map(|t| {
                let d = &t.decisions;
                vec![
                    vec![strong(t.name.clone())],
                    count_cell(d.requests),
                    count_cell(d.allowed),
                    count_cell(d.denied),
                    count_cell(d.held),
                    count_cell(d.failed),
                    count_cell(t.identities),
                    count_cell(t.sessions),
                    capped_names(&t.tools),
                    capped_names(&t.tables),
                    cell(t.first_seen.clone()),
                    cell(t.last_seen.clone()),
                ]
            })
            .collect(),
    ));
}

fn privileged(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Privileged actions allowed (AC-6)",
        anchor: "privileged",
    });
    let list = &report.privileged;
    if list.total == 0 {
        doc.push(sentence("No privileged actions in the period."));
        return;
    }
    doc.push(table(
        vec![
            "Event",
            "Identity",
            "Target",
            "Action",
            "Objects",
            "Statement",
            "Why privileged",
            "Rule",
            "Approval",
            "Outcome",
        ],
        list.items
            .iter()
            .map(|p| {
                vec![
                    events_cell([&p.event]),
                    cell(p.identity.clone()),
                    cell(p.target.clone()),
                    cell(p.action.clone()),
                    names_cell(&p.objects, 0),
                    match &p.statement {
                        Some(s) => vec![code(s.clone())],
                        None => cell("—"),
                    },
                    names_cell(&p.why, 0),
                    cell(p.rule.clone()),
                    opt_cell(&p.approval),
                    cell(p.outcome.clone()),
                ]
            })
            .collect(),
    ));
    doc.extend(and_more(list));
}

fn decision_line(d: &Decision) -> Vec<Inline> {
    let mut line = vec![strong(d.who.clone()), text(format!(" {}", d.decision))];
    if d.break_glass {
        line.push(strong(" (BREAK-GLASS)"));
    }
    if d.own_request {
        line.push(text(" on their own request"));
    }
    if let Some(reason) = &d.reason {
        line.push(text(format!(": {reason}")));
    }
    line.push(text(" — "));
    line.push(Inline::Event(d.event.clone()));
    line
}

fn holds(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Holds and approvals (AC-5)",
        anchor: "holds",
    });
    let list = &report.holds;
    if list.total == 0 {
        doc.push(sentence(
            "No held requests or grant requests in the period.",
        ));
        return;
    }
    doc.push(table(
        vec![
            "Approval",
            "Requester",
            "What",
            "Rule",
            "Reason given",
            "Status",
            "Decisions",
            "Time to decision",
            "Requested",
            "Released",
        ],
        list.items
            .iter()
            .map(|h| {
                let mut what = format!("{} {} {}", h.kind, h.target, h.action);
                if let Some(resource) = &h.resource {
                    what.push_str(&format!(" {resource}"));
                }
                let mut decisions = Vec::new();
                for d in &h.decisions {
                    if !decisions.is_empty() {
                        decisions.push(Inline::Break);
                    }
                    decisions.extend(decision_line(d));
                }
                if decisions.is_empty() {
                    decisions.push(text("none"));
                }
                vec![
                    vec![code(h.approval.clone())],
                    vec![strong(h.requester.clone())],
                    cell(what),
                    cell(h.rule.clone()),
                    opt_cell(&h.reason),
                    vec![strong(h.status.clone())],
                    decisions,
                    cell(
                        h.seconds_to_decision
                            .map(duration)
                            .unwrap_or_else(|| "—".into()),
                    ),
                    events_cell([&h.requested]),
                    events_cell(h.released.as_ref()),
                ]
            })
            .collect(),
    ));
    doc.extend(and_more(list));
}

fn decisions(
    doc: &mut Vec<Block>,
    title: &'static str,
    anchor: &'static str,
    list: &Capped<Decision>,
    none: &str,
) {
    doc.push(Block::Heading {
        level: 2,
        text: title,
        anchor,
    });
    if list.total == 0 {
        doc.push(sentence(none));
        return;
    }
    doc.push(table(
        vec![
            "Approval",
            "Who",
            "Decision",
            "Own request",
            "Reason",
            "What happened",
            "Event",
        ],
        list.items
            .iter()
            .map(|d| {
                vec![
                    vec![code(d.approval.clone())],
                    vec![strong(d.who.clone())],
                    cell(if d.break_glass {
                        format!("{} (break-glass)", d.decision)
                    } else {
                        d.decision.clone()
                    }),
                    cell(if d.own_request { "yes" } else { "no" }),
                    opt_cell(&d.reason),
                    opt_cell(&d.detail),
                    events_cell([&d.event]),
                ]
            })
            .collect(),
    ));
    doc.extend(and_more(list));
}

fn access(report: &Report, doc: &mut Vec<Block>) {
    let a = &report.access;
    doc.push(Block::Heading {
        level: 2,
        text: "Access changes (AC-2, CM-3)",
        anchor: "access",
    });

    doc.push(Block::Heading {
        level: 3,
        text: "Grants",
        anchor: "grants",
    });
    if a.grants.total == 0 {
        doc.push(sentence(
            "No grants were requested, issued, revoked or expired.",
        ));
    } else {
        doc.push(table(
            vec![
                "Grant", "Holder", "Target", "Scope", "State", "Uses", "Events",
            ],
            a.grants
                .items
                .iter()
                .map(|g| {
                    vec![
                        vec![code(g.grant.clone())],
                        vec![strong(g.holder.clone())],
                        cell(g.target.clone()),
                        opt_cell(&g.scope),
                        cell(g.state.clone()),
                        count_cell(g.uses),
                        events_cell(&g.events),
                    ]
                })
                .collect(),
        ));
        doc.extend(and_more(&a.grants));
    }

    doc.push(Block::Heading {
        level: 3,
        text: "API keys used for the first time",
        anchor: "api-keys",
    });
    if a.api_keys_first_used.total == 0 {
        doc.push(sentence("No API key was used for the first time."));
    } else {
        doc.push(table(
            vec!["Identity", "First use"],
            a.api_keys_first_used
                .items
                .iter()
                .map(|f| vec![vec![strong(f.identity.clone())], events_cell([&f.event])])
                .collect(),
        ));
        doc.extend(and_more(&a.api_keys_first_used));
    }

    doc.push(Block::Heading {
        level: 3,
        text: "Policy versions in force",
        anchor: "policy-versions",
    });
    if a.policy_versions.is_empty() {
        doc.push(sentence("No policy version was seen in the period."));
    } else {
        doc.push(table(
            vec!["Version", "First seen", "Last seen", "Events"],
            a.policy_versions
                .iter()
                .map(|p| {
                    vec![
                        vec![code(p.version.clone())],
                        events_cell([&p.first_seen]),
                        cell(p.last_seen.clone()),
                        count_cell(p.events),
                    ]
                })
                .collect(),
        ));
    }

    doc.push(Block::Heading {
        level: 3,
        text: "Gateway starts",
        anchor: "gateway-starts",
    });
    if a.gateway_starts.total == 0 {
        doc.push(sentence("The gateway did not start in the period."));
    } else {
        doc.push(table(
            vec!["Start"],
            a.gateway_starts
                .items
                .iter()
                .map(|e| vec![events_cell([e])])
                .collect(),
        ));
        doc.extend(and_more(&a.gateway_starts));
    }

    for (title, anchor, list, none) in [
        (
            "Tool-pin changes accepted",
            "pins-accepted",
            &a.pins_accepted,
            "No changed tool was accepted.",
        ),
        (
            "Tool-pin changes withheld",
            "pins-withheld",
            &a.pins_withheld,
            "No changed tool was withheld.",
        ),
    ] {
        doc.push(Block::Heading {
            level: 3,
            text: title,
            anchor,
        });
        if list.total == 0 {
            doc.push(sentence(none));
            continue;
        }
        doc.push(table(
            vec!["Target", "Tool", "By", "Event"],
            list.items
                .iter()
                .map(|p| {
                    vec![
                        cell(p.target.clone()),
                        cell(p.tool.clone()),
                        opt_cell(&p.by),
                        events_cell([&p.event]),
                    ]
                })
                .collect(),
        ));
        doc.extend(and_more(list));
    }
}

fn counts_table(head: &'static str, counts: &[crate::report::Count]) -> Block {
    table(
        vec![head, "Count"],
        counts
            .iter()
            .map(|c| vec![cell(c.name.clone()), count_cell(c.count)])
            .collect(),
    )
}

fn auth_failures(report: &Report, doc: &mut Vec<Block>) {
    let f = &report.auth_failures;
    doc.push(Block::Heading {
        level: 2,
        text: "Authentication failures (AC-7)",
        anchor: "auth-failures",
    });
    if f.total == 0 {
        doc.push(sentence("No authentication failures in the period."));
        return;
    }
    doc.push(sentence(format!(
        "{} failed authentications in the period.",
        f.total
    )));
    doc.push(counts_table("Source", &f.by_source));
    doc.push(counts_table("Credential kind", &f.by_kind));
    let mut samples = vec![text("Sample events: ")];
    samples.extend(events_cell(&f.samples));
    doc.push(para(samples));
}

fn refusals(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Refusals by rule (AC-3)",
        anchor: "refusals",
    });
    if report.refusals_by_rule.is_empty() {
        doc.push(sentence("No request was refused by policy in the period."));
        return;
    }
    doc.push(table(
        vec!["Rule", "Refusals", "Identities refused", "Sample events"],
        report
            .refusals_by_rule
            .iter()
            .map(|r| {
                vec![
                    vec![strong(r.rule.clone())],
                    count_cell(r.count),
                    names_cell(&r.identities, 0),
                    events_cell(&r.samples),
                ]
            })
            .collect(),
    ));
}

fn masking(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Masking (counts only)",
        anchor: "masking",
    });
    if report.masking.is_empty() {
        doc.push(sentence("Nothing was masked in the period."));
        return;
    }
    doc.push(table(
        vec!["Identity", "Detector", "Values masked", "Answers masked"],
        report
            .masking
            .iter()
            .map(|m| {
                vec![
                    cell(m.identity.clone()),
                    cell(m.detector.clone()),
                    count_cell(m.values),
                    count_cell(m.answers),
                ]
            })
            .collect(),
    ));
}

fn anomalies(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Anomalies worth a look",
        anchor: "anomalies",
    });
    if report.anomalies.is_empty() {
        doc.push(sentence("No anomalies were flagged in the period."));
        return;
    }
    doc.push(table(
        vec!["Kind", "Identity", "Rule", "What was seen", "Sample events"],
        report
            .anomalies
            .iter()
            .map(|a| {
                vec![
                    vec![strong(a.kind.clone())],
                    cell(a.identity.clone()),
                    cell(a.rule.clone()),
                    cell(a.detail.clone()),
                    events_cell(&a.samples),
                ]
            })
            .collect(),
    ));
}

fn reviews(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Reviews signed off (AU-6)",
        anchor: "reviews",
    });
    if report.reviews.is_empty() {
        doc.push(sentence("No review was signed off in the period."));
        return;
    }
    doc.push(table(
        vec![
            "Reviewer",
            "Reason",
            "Report reviewed (SHA-256)",
            "Its period",
            "Event",
        ],
        report
            .reviews
            .iter()
            .map(|r| {
                vec![
                    vec![strong(r.reviewer.clone())],
                    opt_cell(&r.reason),
                    vec![code(r.sha256.clone())],
                    match &r.reviewed_period {
                        Some(p) => cell(format!("{} to {}", p.since, p.until)),
                        None => cell("—"),
                    },
                    events_cell([&r.event]),
                ]
            })
            .collect(),
    ));
}

fn documents(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Evidence documents written",
        anchor: "documents",
    });
    if report.documents.is_empty() {
        doc.push(sentence("No evidence document was written in the period."));
        return;
    }
    doc.push(table(
        vec!["Document", "Format", "SHA-256", "File", "Event"],
        report
            .documents
            .iter()
            .map(|d| {
                vec![
                    cell(d.document.clone()),
                    cell(d.format.clone()),
                    vec![code(d.sha256.clone())],
                    opt_cell(&d.file),
                    events_cell([&d.event]),
                ]
            })
            .collect(),
    ));
}

/// Every event the report names, once, by log (several logs) and seq.
fn referenced_events(report: &Report) -> BTreeMap<(Option<String>, u64), EventRef> {
    let mut all: Vec<&EventRef> = Vec::new();
    for c in &report.controls {
        all.extend(&c.samples);
    }
    for i in &report.identities {
        all.push(&i.first_event);
    }
    all.extend(report.privileged.items.iter().map(|p| &p.event));
    for h in &report.holds.items {
        all.push(&h.requested);
        all.extend(h.decisions.iter().map(|d| &d.event));
        all.extend(h.released.as_ref());
    }
    all.extend(report.break_glass.items.iter().map(|d| &d.event));
    all.extend(report.refused_decisions.items.iter().map(|d| &d.event));
    let a = &report.access;
    for g in &a.grants.items {
        all.extend(&g.events);
    }
    all.extend(a.api_keys_first_used.items.iter().map(|f| &f.event));
    all.extend(a.policy_versions.iter().map(|p| &p.first_seen));
    all.extend(&a.gateway_starts.items);
    all.extend(a.pins_accepted.items.iter().map(|p| &p.event));
    all.extend(a.pins_withheld.items.iter().map(|p| &p.event));
    all.extend(&report.auth_failures.samples);
    for r in &report.refusals_by_rule {
        all.extend(&r.samples);
    }
    for a in &report.anomalies {
        all.extend(&a.samples);
    }
    all.extend(report.reviews.iter().map(|r| &r.event));
    all.extend(report.documents.iter().map(|d| &d.event));
    all.into_iter()
        .map(|e| ((e.log.clone(), e.seq), e.clone()))
        .collect()
}

fn event_index(report: &Report, doc: &mut Vec<Block>) {
    doc.push(Block::Heading {
        level: 2,
        text: "Events referenced",
        anchor: "events",
    });
    let events = referenced_events(report);
    if events.is_empty() {
        doc.push(sentence("The report names no events."));
        return;
    }
    doc.push(para(vec![
        text("Each event the report names, by seq (its leaf index in the log is seq − 1). "),
        code("portcullis audit show ID"),
        text(" prints it, "),
        code("portcullis audit proof ID --out FILE"),
        text(" writes a proof that it is in the signed log, and "),
        code("portcullis sessions replay SESSION"),
        text(" plays back a recorded session."),
    ]));
    doc.push(Block::Table {
        head: vec!["Seq", "Event id", "Time", "Session", "Look it up"],
        rows: events
            .values()
            .map(|e| {
                let id = shell_word(&e.id);
                let mut commands = vec![
                    code(format!("portcullis audit show {id}")),
                    Inline::Break,
                    code(format!(
                        "portcullis audit proof {id} --out proof-{}.json",
                        e.seq
                    )),
                ];
                let session = match &e.session {
                    Some(session) => {
                        commands.push(Inline::Break);
                        commands.push(code(format!(
                            "portcullis sessions replay {}",
                            shell_word(session)
                        )));
                        vec![
                            code(session.clone()),
                            text(if e.recorded {
                                " (recorded)"
                            } else {
                                " (not recorded)"
                            }),
                        ]
                    }
                    None => cell("—"),
                };
                let seq = match &e.log {
                    None => count_cell(e.seq),
                    Some(log) => vec![text(format!("{} ", e.seq)), code(format!("({log})"))],
                };
                Row {
                    anchor: Some(event_anchor(e)),
                    cells: vec![
                        seq,
                        vec![code(e.id.clone())],
                        cell(e.time.clone()),
                        session,
                        commands,
                    ],
                }
            })
            .collect(),
    });
}

#[cfg(test)]
mod tests;
