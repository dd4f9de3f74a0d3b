//! The `assessment-plan` the results import (`import-ap`): what is assessed (the gateway),
//! which controls, by which automated checks (one activity per check, its rule as the
//! description), over which period. Some GRC imports refuse results without one.
//!
//! The plan depends on the period, the log and the checks' rules, not on what the log held,
//! so one period's plan stays the same however the evidence turns out.

use serde::Serialize;

use super::{
    BackMatter, Metadata, OSCAL_VERSION, OscalContext, Property, Resource, ReviewedControls,
    SystemComponent, Uuids, gateway_component, label, log_name, one_line, reviewed_controls,
};
use crate::Report;

/// The whole file: `{"assessment-plan": ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct AssessmentPlanDocument {
    #[serde(rename = "assessment-plan")]
    pub assessment_plan: AssessmentPlan,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentPlan {
    pub uuid: String,
    pub metadata: Metadata,
    pub import_ssp: ImportSsp,
    pub local_definitions: PlanDefinitions,
    pub reviewed_controls: ReviewedControls,
    pub assessment_subjects: Vec<AssessmentSubject>,
    pub assessment_assets: AssessmentAssets,
    pub tasks: Vec<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_matter: Option<BackMatter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportSsp {
    pub href: String,
    pub remarks: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanDefinitions {
    pub components: Vec<SystemComponent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<Activity>,
}

/// One automated check.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Activity {
    pub uuid: String,
    pub title: String,
    pub description: String,
    pub props: Vec<Property>,
    pub related_controls: ReviewedControls,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentSubject {
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub include_subjects: Vec<SelectSubject>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SelectSubject {
    pub subject_uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentAssets {
    pub assessment_platforms: Vec<AssessmentPlatform>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssessmentPlatform {
    pub uuid: String,
    pub title: String,
    pub uses_components: Vec<UsesComponent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsesComponent {
    pub component_uuid: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Task {
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub description: String,
    pub timing: Timing,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub associated_activities: Vec<AssociatedActivity>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Timing {
    pub within_date_range: DateRange,
}

#[derive(Debug, Clone, Serialize)]
pub struct DateRange {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AssociatedActivity {
    pub activity_uuid: String,
    pub subjects: Vec<AssessmentSubject>,
}

/// What the plan is made from: the period, the log, the checks and their rules, and where
/// the SSP is. Not the evidence.
fn plan_ids(report: &Report, ctx: &OscalContext) -> Uuids {
    let checks = report
        .controls
        .iter()
        .map(|c| format!("{}\n{}\n", c.control, c.rule))
        .collect::<String>();
    Uuids::new(
        "assessment-plan",
        &[
            report.period.since.as_bytes(),
            report.period.until.as_bytes(),
            log_name(report).as_bytes(),
            checks.as_bytes(),
            ctx.tool_version.as_bytes(),
            ctx.ssp_href.as_deref().unwrap_or_default().as_bytes(),
        ],
    )
}

/// The plan's uuid, which the results name in their back matter.
pub(crate) fn plan_uuid(report: &Report, ctx: &OscalContext) -> String {
    plan_ids(report, ctx).of("assessment-plan")
}

/// The assessment plan of `report`'s period. Same period, log and checks, same bytes.
pub fn assessment_plan(report: &Report, ctx: &OscalContext) -> AssessmentPlanDocument {
    let ids = plan_ids(report, ctx);
    let period = &report.period;
    let gateway = gateway_component(report);
    let subject = AssessmentSubject {
        kind: "component".into(),
        description: "The gateway, through its audit log.".into(),
        include_subjects: vec![SelectSubject {
            subject_uuid: gateway.uuid.clone(),
            kind: "component".into(),
        }],
    };

    let activities: Vec<Activity> = report
        .controls
        .iter()
        .map(|check| {
            let id = label(&check.control);
            Activity {
                uuid: ids.of(&format!("activity/{}", check.control)),
                title: format!("Automated check of {id} {}", one_line(&check.title)),
                description: format!(
                    "Read the period's audit events and the log's verification, and judge \
                     {id} by this rule: {}",
                    check.rule
                ),
                props: vec![
                    Property::ours("control-id", &check.control),
                    Property::oscal("method", "TEST"),
                ],
                related_controls: ReviewedControls {
                    description: format!("{id}, checked by this activity."),
                    control_selections: vec![super::ControlSelection {
                        description: format!("{id} only."),
                        include_controls: vec![super::SelectControl {
                            control_id: check.control.clone(),
                        }],
                    }],
                },
            }
        })
        .collect();

    let task = Task {
        uuid: ids.of("task/period"),
        kind: "action".into(),
        title: format!(
            "Check the audit log from {} to {}",
            period.since, period.until
        ),
        description: "Verify the audit log (`portcullis audit verify`), collect the period's \
                      events, and apply each control's rule: `portcullis evidence oscal \
                      --since START --until END`."
            .into(),
        timing: Timing {
            within_date_range: DateRange {
                start: period.since.clone(),
                end: period.until.clone(),
            },
        },
        associated_activities: activities
            .iter()
            .map(|a| AssociatedActivity {
                activity_uuid: a.uuid.clone(),
                subjects: vec![subject.clone()],
            })
            .collect(),
    };

    // Portcullis writes no system security plan: without one given, the plan imports a
    // resource saying so, which an assessor replaces with the organisation's SSP.
    let (import_ssp, back_matter) = match &ctx.ssp_href {
        Some(href) => (
            ImportSsp {
                href: href.clone(),
                remarks: "The system security plan of the system the gateway protects.".into(),
            },
            None,
        ),
        None => {
            let uuid = ids.of("resource/ssp-placeholder");
            (
                ImportSsp {
                    href: format!("#{uuid}"),
                    remarks: "No system security plan was given: this points at a back-matter \
                              resource that says so."
                        .into(),
                },
                Some(BackMatter {
                    resources: vec![Resource {
                        uuid,
                        title: "System security plan: not given".into(),
                        description: "Portcullis does not write a system security plan. \
                                      Replace this import with the organisation's SSP for the \
                                      system the gateway protects (the component definition \
                                      from `portcullis evidence component` describes the \
                                      gateway's part of it)."
                            .into(),
                        props: Vec::new(),
                        rlinks: Vec::new(),
                        remarks: None,
                    }],
                }),
            )
        }
    };

    AssessmentPlanDocument {
        assessment_plan: AssessmentPlan {
            uuid: ids.of("assessment-plan"),
            metadata: Metadata {
                title: format!(
                    "Portcullis assessment plan: {} to {}",
                    period.since, period.until
                ),
                last_modified: period.until.clone(),
                version: format!("{}+{}", ctx.tool_version, ids.digest()),
                oscal_version: OSCAL_VERSION.into(),
                props: vec![
                    Property::ours("tool", "portcullis"),
                    Property::ours("tool-version", &ctx.tool_version),
                ],
                remarks: Some(
                    "Written by `portcullis evidence oscal` with the assessment results it \
                     plans. last-modified is the end of the period, not the time of writing."
                        .into(),
                ),
            },
            import_ssp,
            local_definitions: PlanDefinitions {
                components: vec![gateway.clone()],
                activities,
            },
            reviewed_controls: reviewed_controls(report),
            assessment_subjects: vec![subject],
            assessment_assets: AssessmentAssets {
                assessment_platforms: vec![AssessmentPlatform {
                    uuid: ids.of("platform"),
                    title: "portcullis evidence: automated checks over the audit log".into(),
                    uses_components: vec![UsesComponent {
                        component_uuid: gateway.uuid.clone(),
                    }],
                }],
            },
            tasks: vec![task],
            back_matter,
        },
    }
}
