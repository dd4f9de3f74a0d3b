//! The `assessment-results` of a period: one result for the period, one observation (the
//! evidence) and one finding (the judgement, with its rule and reason) per control check of
//! the report. The checks are the report's (`Report::controls`): nothing is recomputed here.

use serde::Serialize;

use super::{
    BackMatter, FileRef, Hash, Metadata, OSCAL_VERSION, OscalContext, Property, Resource,
    ReviewedControls, Rlink, SystemComponent, Uuids, controls_table_resource, gateway_component,
    label, log_name, one_line, reviewed_controls,
};
use crate::Report;
use crate::report::{ControlResult, ControlStatus, EventRef, Integrity};

/// The whole file: `{"assessment-results": ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct AssessmentResultsDocument {
    #[serde(rename = "assessment-results")]
    pub assessment_results: AssessmentResults,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentResults {
    pub uuid: String,
    pub metadata: Metadata,
    pub import_ap: ImportAp,
    pub results: Vec<AssessmentResult>,
    pub back_matter: BackMatter,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportAp {
    pub href: String,
    pub remarks: String,
}

/// One `result`: the period.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentResult {
    pub uuid: String,
    pub title: String,
    pub description: String,
    pub start: String,
    pub end: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    pub local_definitions: ResultDefinitions,
    pub reviewed_controls: ReviewedControls,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultDefinitions {
    pub components: Vec<SystemComponent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Observation {
    pub uuid: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    pub methods: Vec<String>,
    pub types: Vec<String>,
    pub origins: Vec<Origin>,
    pub subjects: Vec<SubjectReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relevant_evidence: Vec<RelevantEvidence>,
    pub collected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    pub actors: Vec<OriginActor>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct OriginActor {
    #[serde(rename = "type")]
    pub kind: String,
    pub actor_uuid: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubjectReference {
    pub subject_uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RelevantEvidence {
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    pub uuid: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    pub origins: Vec<Origin>,
    pub target: FindingTarget,
    pub related_observations: Vec<RelatedObservation>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FindingTarget {
    #[serde(rename = "type")]
    pub kind: String,
    pub target_id: String,
    pub title: String,
    pub status: ObjectiveStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectiveStatus {
    /// `satisfied` or `not-satisfied`.
    pub state: String,
    /// `pass` or `fail` (OSCAL's tokens; the reason in words is in `remarks`).
    pub reason: String,
    pub remarks: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RelatedObservation {
    pub observation_uuid: String,
}

/// The assessment results of `report`'s period. Same report and context, same bytes.
pub fn assessment_results(report: &Report, ctx: &OscalContext) -> AssessmentResultsDocument {
    // Everything the document states comes from these two, so they seed every uuid.
    let ctx_json = serde_json::to_vec(ctx).expect("the context serializes");
    let ids = Uuids::new("assessment-results", &[&report.to_json(), &ctx_json]);
    let period = &report.period;
    let gateway = gateway_component(report);
    let tool = Origin {
        actors: vec![OriginActor {
            kind: "tool".into(),
            actor_uuid: gateway.uuid.clone(),
        }],
    };
    let subject = SubjectReference {
        subject_uuid: gateway.uuid.clone(),
        kind: "component".into(),
        title: gateway.title.clone(),
    };

    let mut observations = Vec::new();
    let mut findings = Vec::new();
    for control in &report.controls {
        let observation = observation(report, control, &ids, &tool, &subject);
        findings.push(finding(report, control, &ids, &tool, &observation.uuid));
        observations.push(observation);
    }

    let satisfied = report
        .controls
        .iter()
        .filter(|c| c.status == ControlStatus::Satisfied)
        .count();
    let not_satisfied = report.controls.len() - satisfied;
    let t = &report.totals;
    let activity = if t.events == 0 {
        "No events were recorded in the period.".to_string()
    } else {
        format!(
            "{} events in the period: {} requests ({} allowed, {} denied, {} held, {} rejected \
             before policy), {} identities, {} targets.",
            t.events, t.requests, t.allowed, t.denied, t.held, t.rejected, t.identities, t.targets
        )
    };
    let result = AssessmentResult {
        uuid: ids.of("result"),
        title: format!(
            "Automated control checks of the audit log, {} to {}",
            period.since, period.until
        ),
        description: format!(
            "{} {activity} {} controls checked: {satisfied} satisfied, {not_satisfied} not \
             satisfied. The period is [start, end): events at the end time belong to the next \
             period.",
            verification_sentence(&report.integrity),
            report.controls.len(),
        ),
        start: period.since.clone(),
        end: period.until.clone(),
        props: vec![
            Property::ours("log-verified", report.integrity.verified.to_string()),
            Property::ours("events", t.events.to_string()),
            Property::ours("requests", t.requests.to_string()),
            Property::ours("controls-satisfied", satisfied.to_string()),
            Property::ours("controls-not-satisfied", not_satisfied.to_string()),
        ],
        local_definitions: ResultDefinitions {
            components: vec![gateway.clone()],
        },
        reviewed_controls: reviewed_controls(report),
        observations,
        findings,
    };

    let mut resources = vec![
        Resource {
            uuid: ids.of("resource/gateway"),
            title: gateway.title.clone(),
            description: format!(
                "{} Evidence comes from its audit log alone: each observation names events \
                 by id and leaf index, and `portcullis audit proof <id>` proves an event's \
                 inclusion in the verified tree.",
                gateway.description
            ),
            props: gateway.props.clone(),
            rlinks: Vec::new(),
            remarks: None,
        },
        controls_table_resource(ids.of("resource/controls-table")),
        Resource {
            uuid: ids.of("resource/assessment-plan"),
            title: "Assessment plan".into(),
            description: "The assessment plan these results carry out, written with them by \
                          `portcullis evidence oscal`."
                .into(),
            props: vec![Property::ours(
                "assessment-plan-uuid",
                super::plan::plan_uuid(report, ctx),
            )],
            rlinks: vec![Rlink {
                href: ctx.plan_href.clone(),
                media_type: Some("application/oscal.ap+json".into()),
                hashes: Vec::new(),
            }],
            remarks: None,
        },
    ];
    if let Some(file) = &ctx.report_file {
        resources.push(report_resource(ids.of("resource/review-report"), file));
    }

    AssessmentResultsDocument {
        assessment_results: AssessmentResults {
            uuid: ids.of("assessment-results"),
            metadata: Metadata {
                title: format!(
                    "Portcullis assessment results: {} to {}",
                    period.since, period.until
                ),
                // The end of the period, never the wall clock: the same period gives the
                // same document.
                last_modified: period.until.clone(),
                version: format!("{}+{}", ctx.tool_version, ids.digest()),
                oscal_version: OSCAL_VERSION.into(),
                props: vec![
                    Property::ours("tool", "portcullis"),
                    Property::ours("tool-version", &ctx.tool_version),
                    Property::ours("report-format", &report.format),
                ],
                remarks: Some(format!(
                    "Written by `portcullis evidence oscal` from the audit log of {} alone. \
                     last-modified is the end of the period, not the time of writing, and every \
                     uuid is derived from the period and its evidence: rerunning the same \
                     period on the same log gives the same bytes. Declares OSCAL {OSCAL_VERSION}; \
                     validated against the OSCAL 1.0.6 and 1.2.1 assessment-results schemas.",
                    one_line(&log_name(report))
                )),
            },
            import_ap: ImportAp {
                href: ctx.plan_href.clone(),
                remarks: "The assessment plan written with these results, beside them.".into(),
            },
            results: vec![result],
            back_matter: BackMatter { resources },
        },
    }
}

/// The log's verification, in one sentence: the results lead with it.
fn verification_sentence(integrity: &Integrity) -> String {
    if integrity.verified {
        let covering = match &integrity.covering_checkpoint {
            Some(c) => format!(
                " against a signed checkpoint of size {} covering the period",
                c.size
            ),
            None => " (no signed checkpoint covers the period yet)".into(),
        };
        format!(
            "The audit log verified with key {}{covering}.",
            integrity.checked_with.key
        )
    } else {
        format!(
            "The audit log FAILED verification with key {}: {}.",
            integrity.checked_with.key,
            integrity
                .failure
                .as_deref()
                .unwrap_or("no reason was recorded")
        )
    }
}

fn observation(
    report: &Report,
    control: &ControlResult,
    ids: &Uuids,
    tool: &Origin,
    subject: &SubjectReference,
) -> Observation {
    let id = label(&control.control);
    let mut evidence: Vec<RelevantEvidence> = Vec::new();
    let listed = match control.samples.len() {
        0 => "no event is listed".to_string(),
        1 => "1 event that decided it is listed".to_string(),
        n => format!("{n} events that decided it are listed"),
    };
    let mut description = format!(
        "The {id} check counted {} events of the period [{}, {}); {listed} as evidence, with \
         the leaf index of each in the log's Merkle tree.",
        control.events, report.period.since, report.period.until,
    );
    if control.control == "au-9" {
        description.push(' ');
        description.push_str(&verification_sentence(&report.integrity));
        if report.logs.is_empty() {
            evidence.push(verification_evidence(&report.integrity));
        }
        // Several logs (the replicas of a gateway): each one's verification, by its origin.
        for log in &report.logs {
            let mut one = verification_evidence(&log.integrity);
            one.description = format!("Log {}: {}", log.origin, one.description);
            one.props
                .insert(0, Property::ours("log-origin", &log.origin));
            evidence.push(one);
        }
    }
    evidence.extend(control.samples.iter().map(sample_evidence));
    let event_types = event_types_of(&control.control);
    Observation {
        uuid: ids.of(&format!("observation/{}", control.control)),
        title: format!(
            "{id} {}: what the audit log shows",
            one_line(&control.title)
        ),
        description,
        props: vec![
            Property::ours("control-id", &control.control),
            Property::ours("events-counted", control.events.to_string()),
            Property::ours("samples", control.samples.len().to_string()),
        ],
        methods: vec!["TEST".into()],
        types: vec!["control-objective".into()],
        origins: vec![tool.clone()],
        subjects: vec![subject.clone()],
        relevant_evidence: evidence,
        collected: report.period.until.clone(),
        remarks: (!event_types.is_empty()).then(|| {
            format!(
                "Audit event types that are evidence for {id} (controls::EVENT_CONTROLS): {}.",
                event_types.join(", ")
            )
        }),
    }
}

/// One sample event: its id as text (a v7, so never in a uuid field), where it is in the
/// tree, and how to prove it is there.
fn sample_evidence(event: &EventRef) -> RelevantEvidence {
    let leaf = event.seq.saturating_sub(1);
    let mut props = vec![
        Property::ours("event-id", &event.id),
        Property::ours("leaf-index", leaf.to_string()),
        Property::ours("event-time", &event.time),
    ];
    let id = &event.id;
    let mut remarks = format!(
        "Inclusion proof: `portcullis audit proof {id} --out FILE`, checked offline by \
         `portcullis audit verify-proof FILE --pubkey KEY`. The event: `portcullis audit show \
         {id}`."
    );
    if let Some(log) = &event.log {
        props.push(Property::ours("log-origin", log));
    }
    if let Some(session) = &event.session {
        props.push(Property::ours("session", session));
        if event.recorded {
            remarks.push_str(&format!(
                " Recording: `portcullis sessions replay {session}`."
            ));
        }
    }
    RelevantEvidence {
        description: format!(
            "Audit event {} (leaf index {leaf}) at {}.",
            event.id, event.time
        ),
        props,
        remarks: Some(remarks),
    }
}

/// AU-9's evidence: what verification checked and found.
fn verification_evidence(integrity: &Integrity) -> RelevantEvidence {
    let mut props = vec![
        Property::ours("log-verified", integrity.verified.to_string()),
        Property::ours("audit-key", &integrity.checked_with.key),
        Property::ours(
            "events-to-period-end",
            integrity.events_to_period_end.to_string(),
        ),
        Property::ours(
            "checkpoints-signed",
            integrity.checkpoints_signed.to_string(),
        ),
        Property::ours(
            "checkpoints-published",
            integrity.checkpoints_published.to_string(),
        ),
    ];
    if let Some(failure) = &integrity.failure {
        props.push(Property::ours("verification-failure", failure));
    }
    if let Some(c) = &integrity.covering_checkpoint {
        props.push(Property::ours("checkpoint-size", c.size.to_string()));
        props.push(Property::ours("checkpoint-root", &c.root));
        props.push(Property::ours(
            "checkpoint-published",
            c.published.to_string(),
        ));
    }
    for cosignature in &integrity.cosignatures {
        props.push(
            Property::ours("witness-cosignature", &cosignature.witness).with_remarks(format!(
                "Cosigned the checkpoint of size {} at {}.",
                cosignature.size, cosignature.time
            )),
        );
    }
    if let Some(age) = integrity.cosignature_age_seconds {
        props.push(Property::ours("cosignature-age-seconds", age.to_string()));
    }
    let remarks = format!(
        "Reproduce: `portcullis audit verify` with the gateway's public key ({}), {} published \
         checkpoint directories and the witness keys {}.",
        integrity.checked_with.key,
        integrity.checked_with.published_dirs,
        if integrity.checked_with.witnesses.is_empty() {
            "(none given)".to_string()
        } else {
            integrity.checked_with.witnesses.join(", ")
        }
    );
    RelevantEvidence {
        description: verification_sentence(integrity),
        props,
        remarks: Some(remarks),
    }
}

fn finding(
    report: &Report,
    control: &ControlResult,
    ids: &Uuids,
    tool: &Origin,
    observation_uuid: &str,
) -> Finding {
    let id = label(&control.control);
    let state = control.status.as_str();
    let mut description = format!("{}\n\nRule: {}", control.reason, control.rule);
    // The check decided AU-9 from the verification; its failure is stated here in full even
    // when the reason words it otherwise, so the finding stands on its own.
    if control.control == "au-9"
        && let Some(failure) = &report.integrity.failure
        && !control.reason.contains(failure.as_str())
    {
        description.push_str(&format!("\n\nVerification failed: {failure}"));
    }
    Finding {
        uuid: ids.of(&format!("finding/{}", control.control)),
        title: format!("{id} {}: {state}", one_line(&control.title)),
        description,
        props: vec![
            Property::ours("control-id", &control.control),
            Property::ours("rule", &control.rule),
            Property::ours("events-counted", control.events.to_string()),
        ],
        origins: vec![tool.clone()],
        target: FindingTarget {
            kind: "objective-id".into(),
            target_id: format!("{}_obj", control.control),
            title: format!("{id} {}", one_line(&control.title)),
            status: ObjectiveStatus {
                state: state.into(),
                reason: match control.status {
                    ControlStatus::Satisfied => "pass".into(),
                    ControlStatus::NotSatisfied => "fail".into(),
                },
                remarks: control.reason.clone(),
            },
        },
        related_observations: vec![RelatedObservation {
            observation_uuid: observation_uuid.to_string(),
        }],
    }
}

/// The event types the table maps to `control`, as the log names them.
fn event_types_of(control: &str) -> Vec<String> {
    crate::controls::EVENT_CONTROLS
        .iter()
        .filter(|row| row.controls.contains(&control))
        .map(|row| super::event_name(row.event))
        .collect()
}

fn report_resource(uuid: String, file: &FileRef) -> Resource {
    Resource {
        uuid,
        title: "AU-6 audit review report of the period".into(),
        description: "The review report of the same period, from the same facts; its hash is \
                      recorded in the audit log when it is written."
            .into(),
        props: Vec::new(),
        rlinks: vec![Rlink {
            href: file.href.clone(),
            media_type: None,
            hashes: vec![Hash {
                algorithm: "SHA-256".into(),
                value: file.sha256.clone(),
            }],
        }],
        remarks: None,
    }
}
