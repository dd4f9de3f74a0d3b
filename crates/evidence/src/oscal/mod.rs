//! OSCAL documents: the assessment results of a period, the assessment plan they import,
//! and the component definition of the running configuration.
//!
//! **Version.** The documents declare `oscal-version` **1.1.2** ([`OSCAL_VERSION`]). They use
//! only what OSCAL 1.0.6 and 1.2.1 both define the same way (no `group` on props, no metadata
//! `actions`, a `status` on every finding target, which 1.0.6 requires), and the tests
//! validate the assessment results against both the 1.0.6 and the 1.2.1 JSON schemas, the
//! plan against NIST's 1.2.1 assessment-plan schema and the component definition against
//! the 1.2.1 schema (`tests/schemas/`). 1.1.2 lies between the two and is the version GRC
//! imports most commonly accept; a 1.1.2 document is valid 1.2.x.
//!
//! **Identifiers.** OSCAL requires UUID version 4 or 5 and GRC tools reject others, while the
//! audit log's own ids are v7: those never go in a `uuid` field, only in props, remarks and
//! descriptions as plain strings. Every `uuid` here is a v5 under [`NAMESPACE`], derived from
//! what the document states (the report's period and evidence, the configuration), so that
//! rerunning the same period on the same log gives a byte-identical document: nothing reads
//! the wall clock, `last-modified` is the end of the period (results and plan) or the time
//! the caller gives for the configuration (component definition), and every collection is
//! a `Vec` or a struct, serialized in a fixed order.
//!
//! **Ids that stay.** The gateway's component uuid depends only on the log's origin, so the
//! subject of every period's results and the component of the component definition are one
//! uuid across documents; everything else changes when any fact changes.

mod component;
mod plan;
mod results;

pub use component::{
    AuditSetup, ComponentContext, ComponentDefinitionDocument, RecordingSetup, RuleCounts,
    TargetInfo, component_definition,
};
pub use plan::{AssessmentPlanDocument, assessment_plan};
pub use results::{AssessmentResultsDocument, assessment_results};

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Report;

/// The `oscal-version` every document declares.
pub const OSCAL_VERSION: &str = "1.1.2";

/// The namespace of every v5 uuid Portcullis writes (generated once, as a v4, and fixed).
pub const NAMESPACE: Uuid = uuid::uuid!("ea499d9c-9433-4982-b813-8b95b8a610e9");

/// The namespace of Portcullis' own props (OSCAL reserves props without `ns` for NIST's
/// names). A URN, so it names without pretending to be a page.
pub const PROPS_NS: &str = "urn:portcullis:oscal";

/// The catalog the control ids refer to (SP 800-53 rev. 5, as NIST publishes it in OSCAL).
pub const CATALOG_HREF: &str = "https://raw.githubusercontent.com/usnistgov/oscal-content/main/nist.gov/SP800-53/rev5/json/NIST_SP-800-53_rev5_catalog.json";

/// What the results and plan need besides the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OscalContext {
    /// The Portcullis version writing the document (the CLI's `CARGO_PKG_VERSION`).
    pub tool_version: String,
    /// The assessment plan's file as the results reach it, relative to the results' file
    /// (`assessment-plan.json`): the results' `import-ap`.
    pub plan_href: String,
    /// The system security plan the assessment plan imports (`import-ssp`). Portcullis does
    /// not write one; without it the plan imports a back-matter resource that says so.
    pub ssp_href: Option<String>,
    /// The AU-6 review report of the same period, when one is written beside: linked from
    /// the results with its hash.
    pub report_file: Option<FileRef>,
}

impl OscalContext {
    /// A context with the plan in `assessment-plan.json` beside the results.
    pub fn new(tool_version: impl Into<String>) -> OscalContext {
        OscalContext {
            tool_version: tool_version.into(),
            plan_href: "assessment-plan.json".into(),
            ssp_href: None,
            report_file: None,
        }
    }
}

/// A file the document links to, with its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    pub href: String,
    pub sha256: String,
}

/// A document as written: pretty JSON and a final newline.
pub fn to_bytes<T: Serialize>(document: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(document).expect("an OSCAL document serializes");
    out.push(b'\n');
    out
}

/// Derives the uuids of one document: v5 of a seed (what the document is made from) and of
/// the element's path in it, so that distinct elements never share one and the same inputs
/// always give the same ones.
pub(crate) struct Uuids {
    seed: String,
}

impl Uuids {
    /// `kind` names the document, `inputs` are hashed: any change to them changes every uuid.
    pub(crate) fn new(kind: &str, inputs: &[&[u8]]) -> Uuids {
        let mut hash = Sha256::new();
        for input in inputs {
            // Length-prefixed, so that moving bytes from one input to the next changes the seed.
            hash.update((input.len() as u64).to_be_bytes());
            hash.update(input);
        }
        Uuids {
            seed: format!("{kind}/{}", hex::encode(hash.finalize())),
        }
    }

    pub(crate) fn of(&self, path: &str) -> String {
        v5(&format!("{}/{path}", self.seed))
    }

    /// A short stable digest of the inputs, for `metadata.version`.
    pub(crate) fn digest(&self) -> &str {
        let hex = self.seed.rsplit('/').next().unwrap_or_default();
        &hex[..16]
    }
}

fn v5(name: &str) -> String {
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// The gateway's component uuid: from the log's origin alone, so it is the same in every
/// period's results and in the component definition.
pub fn gateway_component_uuid(origin: &str) -> String {
    v5(&format!("component/gateway/{origin}"))
}

/// The name a report's log goes by: its checkpoint origin, or the key it verified against.
fn log_name(report: &Report) -> std::borrow::Cow<'_, str> {
    if !report.logs.is_empty() {
        // A report over the replicas of a gateway: the component is all of them.
        let origins: Vec<&str> = report.logs.iter().map(|l| l.origin.as_str()).collect();
        return origins.join(", ").into();
    }
    report
        .integrity
        .origin
        .as_deref()
        .unwrap_or(&report.integrity.checked_with.key)
        .into()
}

/// `AU-9` for `au-9`: how assessors write control ids.
fn label(control: &str) -> String {
    control.to_uppercase()
}

/// Text for a field OSCAL restricts to one line without outer spaces (titles, prop values):
/// whitespace runs, newlines included, become one space.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() { "none".into() } else { line }
}

// The shapes shared by the three documents. Field order is the order OSCAL's own examples
// use; empty lists are left out because OSCAL requires at least one item in any list given.

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Metadata {
    pub title: String,
    pub last_modified: String,
    pub version: String,
    pub oscal_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Property {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

impl Property {
    /// A Portcullis prop (in [`PROPS_NS`]).
    pub(crate) fn ours(name: &str, value: impl AsRef<str>) -> Property {
        Property {
            name: name.into(),
            ns: Some(PROPS_NS.into()),
            value: one_line(value.as_ref()),
            remarks: None,
        }
    }

    /// A prop OSCAL itself defines (no `ns`).
    pub(crate) fn oscal(name: &str, value: impl AsRef<str>) -> Property {
        Property {
            name: name.into(),
            ns: None,
            value: one_line(value.as_ref()),
            remarks: None,
        }
    }

    pub(crate) fn with_remarks(mut self, remarks: impl Into<String>) -> Property {
        self.remarks = Some(remarks.into());
        self
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackMatter {
    pub resources: Vec<Resource>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Resource {
    pub uuid: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rlinks: Vec<Rlink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rlink {
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Hash {
    pub algorithm: String,
    pub value: String,
}

/// A component of the assessed system (`local-definitions`): here, the gateway.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SystemComponent {
    pub uuid: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<Property>,
    pub status: ComponentStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub state: String,
}

/// The controls a result or plan covers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReviewedControls {
    pub description: String,
    pub control_selections: Vec<ControlSelection>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ControlSelection {
    pub description: String,
    pub include_controls: Vec<SelectControl>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SelectControl {
    pub control_id: String,
}

/// The controls of the report's checks, in its order; the table's when the report has none
/// (a report always has them; the fallback keeps `include-controls` non-empty, as OSCAL
/// requires).
fn reviewed_controls(report: &Report) -> ReviewedControls {
    let ids: Vec<String> = if report.controls.is_empty() {
        crate::controls::CHECKS
            .iter()
            .map(|c| c.id.to_string())
            .collect()
    } else {
        report.controls.iter().map(|c| c.control.clone()).collect()
    };
    let listed = ids
        .iter()
        .map(|id| label(id))
        .collect::<Vec<_>>()
        .join(", ");
    ReviewedControls {
        description: format!(
            "NIST SP 800-53 rev. 5 controls checked automatically against the gateway's audit \
             log, each by one stated rule: {listed}."
        ),
        control_selections: vec![ControlSelection {
            description: "The automated control checks of Portcullis (controls::CHECKS).".into(),
            include_controls: ids
                .into_iter()
                .map(|control_id| SelectControl { control_id })
                .collect(),
        }],
    }
}

/// The gateway as the assessed component, named by its log.
fn gateway_component(report: &Report) -> SystemComponent {
    let origin = log_name(report);
    let mut props = vec![
        Property::ours("log-origin", &*origin),
        Property::ours("audit-key", &report.integrity.checked_with.key),
    ];
    props.extend(
        report
            .gateways
            .iter()
            .map(|g| Property::ours("gateway-instance", g)),
    );
    SystemComponent {
        uuid: gateway_component_uuid(&origin),
        kind: "software".into(),
        title: format!("Portcullis access gateway ({})", one_line(&origin)),
        description: "The access gateway between AI agents and the tools and databases they \
                      use: it authenticates every caller, decides every request by policy \
                      (default deny), holds sensitive requests for a named approver, masks \
                      sensitive data, and writes every decision to a tamper-evident audit \
                      log (a Merkle tree with signed, published, witnessed checkpoints)."
            .into(),
        props,
        status: ComponentStatus {
            state: "operational".into(),
        },
    }
}

/// An event type as the log names it (`tool.pin_mismatch`).
pub(crate) fn event_name(event: portcullis_model::EventType) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{event:?}"))
}

/// The back-matter resource describing the event-to-control table the evidence is read by.
fn controls_table_resource(uuid: String) -> Resource {
    let rows = crate::controls::EVENT_CONTROLS
        .iter()
        .map(|row| {
            let event = event_name(row.event);
            let controls = row
                .controls
                .iter()
                .map(|c| label(c))
                .collect::<Vec<_>>()
                .join(", ");
            format!("- {event}: {controls}: {}", row.why)
        })
        .collect::<Vec<_>>()
        .join("\n");
    Resource {
        uuid,
        title: "Which audit events are evidence for which control".into(),
        description: format!(
            "The one table Portcullis reads evidence by (controls::EVENT_CONTROLS; \
             docs/evidence.md prints it). Each audit event type, the SP 800-53 controls it is \
             evidence for, and why:\n{rows}"
        ),
        props: Vec::new(),
        rlinks: Vec::new(),
        remarks: None,
    }
}

#[cfg(test)]
mod tests;
