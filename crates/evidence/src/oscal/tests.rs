//! The OSCAL documents against NIST's JSON schemas (vendored in `tests/schemas/`, see its
//! README), with a real validator; and what the schemas cannot see: determinism, uuid
//! versions, statuses and reasons carried from the report.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::*;
use crate::report::{ControlStatus, Report, Totals};
use crate::testing::{sample_report, sample_report_of_two_logs};

/// Assessment results: the shared 1.2.1 schema, NIST's published 1.2.1 schema, and 1.0.6.
const AR_SCHEMAS: &[&str] = &[
    "oscal-1.2.1_assessment-results.schema.json",
    "oscal-1.2.1_assessment-results.nist.schema.json",
    "oscal-1.0.6_assessment-results.schema.json",
];
const AP_SCHEMAS: &[&str] = &["oscal-1.2.1_assessment-plan.nist.schema.json"];
const CD_SCHEMAS: &[&str] = &[
    "oscal-1.2.1_component-definition.schema.json",
    "oscal-1.2.1_component-definition.nist.schema.json",
];

fn validator(file: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_slice(&bytes).expect("a schema is JSON");
    // Formats (date-time, uri, uri-reference) are checked too: OSCAL's datatypes rely on them.
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
}

/// The schema's complaints about `document`, one line each.
fn errors(file: &str, document: &Value) -> Vec<String> {
    validator(file)
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(schemas: &[&str], document: &Value) {
    for file in schemas {
        let errors = errors(file, document);
        assert!(
            errors.is_empty(),
            "invalid against {file}:\n{}",
            errors.join("\n")
        );
    }
}

fn ctx() -> OscalContext {
    OscalContext::new("0.1.0")
}

fn results_json(report: &Report) -> Value {
    serde_json::to_value(assessment_results(report, &ctx())).unwrap()
}

fn plan_json(report: &Report) -> Value {
    serde_json::to_value(assessment_plan(report, &ctx())).unwrap()
}

fn component_ctx() -> ComponentContext {
    ComponentContext {
        tool_version: "0.1.0".into(),
        origin: "portcullis.example/audit".into(),
        last_modified: "2026-11-30T08:00:00Z".into(),
        policy_version: Some("3f2a9c".into()),
        targets: vec![
            TargetInfo {
                name: "billing".into(),
                kind: "mcp".into(),
            },
            TargetInfo {
                name: "billing-db".into(),
                kind: "postgres".into(),
            },
        ],
        front_door_tls: true,
        max_auth_failures: 60,
        auth_failure_window_seconds: 60,
        oidc_issuers: vec!["https://login.example.com".into()],
        api_keys: 2,
        rules: RuleCounts {
            allow: 4,
            deny: 1,
            hold: 1,
        },
        default_deny: true,
        masking_profiles: vec!["default".into(), "finance".into()],
        recording: RecordingSetup {
            mode: "strict".into(),
            recipients: 1,
        },
        audit: AuditSetup {
            durability: "strict".into(),
            signed: true,
            checkpoint_interval_ms: 1000,
            checkpoint_every: 1000,
            published: true,
            witnesses: vec!["https://witness.example/w1".into()],
        },
        break_glass_groups: vec!["oncall".into()],
        review_schedule: Some("weekly".into()),
    }
}

/// A day with no events: every check ran over nothing, as `assess` reports it then.
fn empty_report() -> Report {
    let mut report = sample_report();
    report.period = crate::Period::parse("2026-12-05", "2026-12-06").unwrap();
    report.totals = Totals::default();
    report.gateways.clear();
    report.identities.clear();
    report.targets.clear();
    report.privileged = Default::default();
    report.holds = Default::default();
    report.break_glass = Default::default();
    report.refused_decisions = Default::default();
    report.access = Default::default();
    report.auth_failures = Default::default();
    report.refusals_by_rule.clear();
    report.masking.clear();
    report.anomalies.clear();
    report.reviews.clear();
    report.documents.clear();
    report.integrity.period_events = 0;
    report.integrity.first_seq = None;
    report.integrity.last_seq = None;
    for control in &mut report.controls {
        control.events = 0;
        control.samples.clear();
        control.reason = "No events in the period.".into();
    }
    report
}

/// A log that failed verification: AU-9 not satisfied, with a reason that does not quote
/// the failure (so the finding must add it).
fn failed_report() -> (Report, &'static str) {
    let failure = "event 57: leaf hash does not match the tree at size 128";
    let mut report = sample_report();
    report.integrity.verified = false;
    report.integrity.failure = Some(failure.into());
    let au9 = report
        .controls
        .iter_mut()
        .find(|c| c.control == "au-9")
        .unwrap();
    au9.status = ControlStatus::NotSatisfied;
    au9.reason = "The log did not verify.".into();
    (report, failure)
}

/// Every value of a `uuid` field or of a `...-uuid` reference, anywhere in `value`.
fn uuid_fields(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if (key == "uuid" || key.ends_with("-uuid"))
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_string());
                }
                uuid_fields(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| uuid_fields(v, out)),
        _ => {}
    }
}

fn uuids_of(value: &Value) -> BTreeSet<String> {
    let mut out = Vec::new();
    uuid_fields(value, &mut out);
    out.into_iter().collect()
}

fn finding<'a>(results: &'a Value, control: &str) -> &'a Value {
    results["assessment-results"]["results"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["target"]["target-id"] == format!("{control}_obj"))
        .unwrap_or_else(|| panic!("no finding for {control}"))
}

#[test]
fn assessment_results_validate_against_oscal_1_2_1_and_1_0_6() {
    let results = results_json(&sample_report());
    assert_valid(AR_SCHEMAS, &results);
    let metadata = &results["assessment-results"]["metadata"];
    assert_eq!(metadata["oscal-version"], OSCAL_VERSION);
    assert_eq!(metadata["last-modified"], "2026-12-02T00:00:00.000Z");
}

#[test]
fn the_schemas_catch_a_v7_uuid_and_a_missing_field() {
    // The validation above proves something only if these schemas can fail a document.
    let mut results = results_json(&sample_report());
    results["assessment-results"]["results"][0]["uuid"] =
        "0193a0b2-0000-7000-8000-000000000030".into();
    for file in AR_SCHEMAS {
        assert!(!errors(file, &results).is_empty(), "{file} took a v7 uuid");
    }
    let mut results = results_json(&sample_report());
    results["assessment-results"]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("reviewed-controls");
    for file in AR_SCHEMAS {
        assert!(
            !errors(file, &results).is_empty(),
            "{file} took a result without reviewed-controls"
        );
    }
    let mut component = serde_json::to_value(component_definition(&component_ctx())).unwrap();
    component["component-definition"]["components"][0]
        .as_object_mut()
        .unwrap()
        .remove("description");
    for file in CD_SCHEMAS {
        assert!(
            !errors(file, &component).is_empty(),
            "{file} took a component without a description"
        );
    }
    let mut plan = plan_json(&sample_report());
    plan["assessment-plan"]
        .as_object_mut()
        .unwrap()
        .remove("import-ssp");
    assert!(!errors(AP_SCHEMAS[0], &plan).is_empty());
}

#[test]
fn assessment_plan_validates_and_the_results_import_it() {
    let report = sample_report();
    let plan = plan_json(&report);
    assert_valid(AP_SCHEMAS, &plan);
    let ap = &plan["assessment-plan"];
    // Without an SSP, import-ssp points at the back-matter resource that says so.
    let href = ap["import-ssp"]["href"].as_str().unwrap();
    assert_eq!(
        Some(&href[1..]),
        ap["back-matter"]["resources"][0]["uuid"].as_str()
    );
    assert_eq!(
        ap["local-definitions"]["activities"]
            .as_array()
            .unwrap()
            .len(),
        report.controls.len()
    );
    assert_eq!(
        ap["tasks"][0]["timing"]["within-date-range"]["start"],
        "2026-12-01T00:00:00.000Z"
    );

    let results = results_json(&report);
    let ar = &results["assessment-results"];
    assert_eq!(ar["import-ap"]["href"], "assessment-plan.json");
    let plan_resource = ar["back-matter"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rlinks"][0]["href"] == "assessment-plan.json")
        .expect("a back-matter resource for the plan");
    assert_eq!(plan_resource["props"][0]["value"], ap["uuid"]);

    // With an SSP given, the plan imports it and needs no placeholder.
    let mut with_ssp = ctx();
    with_ssp.ssp_href = Some("../ssp/system-security-plan.json".into());
    let plan = serde_json::to_value(assessment_plan(&report, &with_ssp)).unwrap();
    assert_valid(AP_SCHEMAS, &plan);
    assert_eq!(
        plan["assessment-plan"]["import-ssp"]["href"],
        "../ssp/system-security-plan.json"
    );
    assert!(plan["assessment-plan"].get("back-matter").is_none());
}

#[test]
fn the_plan_depends_on_the_period_not_on_the_evidence() {
    let report = sample_report();
    let mut more = sample_report();
    more.totals.denied += 1;
    assert_eq!(
        to_bytes(&assessment_plan(&report, &ctx())),
        to_bytes(&assessment_plan(&more, &ctx()))
    );
    let mut other_day = sample_report();
    other_day.period = crate::Period::parse("2026-12-02", "2026-12-03").unwrap();
    assert_ne!(
        plan_json(&report)["assessment-plan"]["uuid"],
        plan_json(&other_day)["assessment-plan"]["uuid"]
    );
}

#[test]
fn the_same_report_gives_the_same_bytes_and_one_changed_fact_changes_the_uuids() {
    let report = sample_report();
    let first = to_bytes(&assessment_results(&report, &ctx()));
    let second = to_bytes(&assessment_results(&sample_report(), &ctx()));
    assert_eq!(first, second);
    assert!(first.ends_with(b"}\n"));

    let mut changed = sample_report();
    changed.totals.denied += 1;
    let before = uuids_of(&results_json(&report));
    let after = uuids_of(&results_json(&changed));
    // Only the gateway's component keeps its uuid: it names the gateway, not the period.
    let kept: Vec<_> = before.intersection(&after).cloned().collect();
    assert_eq!(
        kept,
        vec![gateway_component_uuid("portcullis.example/audit")]
    );
}

#[test]
fn every_uuid_is_v4_or_v5_and_no_log_id_is_used_as_one() {
    let report = sample_report();
    let documents = [
        results_json(&report),
        plan_json(&report),
        serde_json::to_value(component_definition(&component_ctx())).unwrap(),
    ];
    let mut event_ids = BTreeSet::new();
    for control in &report.controls {
        event_ids.extend(control.samples.iter().map(|s| s.id.clone()));
    }
    for document in &documents {
        let mut found = Vec::new();
        uuid_fields(document, &mut found);
        assert!(found.len() > 3, "{found:?}");
        for text in found {
            let uuid = uuid::Uuid::parse_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                matches!(uuid.get_version_num(), 4 | 5),
                "{text} is version {}",
                uuid.get_version_num()
            );
            assert!(!event_ids.contains(&text));
        }
    }
    // The log's ids are there, as text.
    let text = String::from_utf8(to_bytes(&documents[0])).unwrap();
    assert!(text.contains("\"value\": \"0193a0b2-0000-7000-8000-000000000030\""));
}

#[test]
fn a_not_satisfied_control_is_not_satisfied_with_its_reason_and_rule() {
    let report = sample_report();
    let au6 = report.control("au-6").unwrap();
    assert_eq!(au6.status, ControlStatus::NotSatisfied);
    let results = results_json(&report);
    let au6_finding = finding(&results, "au-6");
    assert_eq!(au6_finding["target"]["status"]["state"], "not-satisfied");
    assert_eq!(au6_finding["target"]["status"]["reason"], "fail");
    assert_eq!(
        au6_finding["target"]["status"]["remarks"],
        au6.reason.as_str()
    );
    let description = au6_finding["description"].as_str().unwrap();
    assert!(description.contains(&au6.reason), "{description}");
    assert!(description.contains(&au6.rule), "{description}");
    // ... and its evidence is the observation of the same control.
    let observation_uuid = &au6_finding["related-observations"][0]["observation-uuid"];
    let observation = results["assessment-results"]["results"][0]["observations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| &o["uuid"] == observation_uuid)
        .expect("the related observation exists");
    assert_eq!(observation["props"][0]["value"], "au-6");
    let sample = &observation["relevant-evidence"][0];
    assert_eq!(sample["props"][0]["value"], au6.samples[0].id.as_str());
    assert_eq!(
        sample["props"][1]["value"],
        (au6.samples[0].seq - 1).to_string()
    );
    assert!(sample["remarks"].as_str().unwrap().contains(&format!(
        "portcullis audit proof {} --out FILE",
        au6.samples[0].id
    )));

    let satisfied = finding(&results, "au-9");
    assert_eq!(satisfied["target"]["status"]["state"], "satisfied");
    assert_eq!(satisfied["target"]["status"]["reason"], "pass");
}

#[test]
fn an_empty_period_gives_valid_documents_that_say_so() {
    let report = empty_report();
    let results = results_json(&report);
    assert_valid(AR_SCHEMAS, &results);
    assert_valid(AP_SCHEMAS, &plan_json(&report));
    let result = &results["assessment-results"]["results"][0];
    assert!(
        result["description"]
            .as_str()
            .unwrap()
            .contains("No events were recorded in the period."),
        "{}",
        result["description"]
    );
    assert_eq!(result["start"], "2026-12-05T00:00:00.000Z");
    assert_eq!(result["end"], "2026-12-06T00:00:00.000Z");

    // A report without any check result still names the controls (OSCAL needs one) and
    // stays valid, with no observation or finding claimed.
    let mut unchecked = empty_report();
    unchecked.controls.clear();
    let results = results_json(&unchecked);
    assert_valid(AR_SCHEMAS, &results);
    assert_valid(AP_SCHEMAS, &plan_json(&unchecked));
    let result = &results["assessment-results"]["results"][0];
    assert!(result.get("findings").is_none());
    assert_eq!(
        result["reviewed-controls"]["control-selections"][0]["include-controls"]
            .as_array()
            .unwrap()
            .len(),
        crate::controls::CHECKS.len()
    );
}

#[test]
fn a_failed_verification_gives_au_9_not_satisfied_with_the_failure() {
    let (report, failure) = failed_report();
    let results = results_json(&report);
    assert_valid(AR_SCHEMAS, &results);
    let au9 = finding(&results, "au-9");
    assert_eq!(au9["target"]["status"]["state"], "not-satisfied");
    let description = au9["description"].as_str().unwrap();
    assert!(
        description.contains("The log did not verify."),
        "{description}"
    );
    assert!(description.contains(failure), "{description}");
    let result = &results["assessment-results"]["results"][0];
    assert!(result["description"].as_str().unwrap().contains(&format!(
        "FAILED verification with key portcullis.example/audit+0a1b2c3d: {failure}"
    )));
    let props = result["props"].as_array().unwrap();
    assert!(props.contains(&serde_json::json!({
        "name": "log-verified", "ns": PROPS_NS, "value": "false"
    })));
}

#[test]
fn text_from_the_log_with_newlines_stays_out_of_one_line_fields() {
    // The sample's reasons and warnings carry newlines and markup; the schemas (validated
    // above) forbid newlines in titles and prop values, and here the text survives intact
    // where free text is allowed.
    let report = sample_report();
    let results = results_json(&report);
    let au3 = finding(&results, "au-3");
    assert_eq!(
        au3["target"]["status"]["remarks"],
        report.control("au-3").unwrap().reason.as_str()
    );
    let mut with_newline = sample_report();
    with_newline.controls[0].title = "Access\nEnforcement ".into();
    with_newline.controls[0].rule = "line one\nline two".into();
    let results = results_json(&with_newline);
    assert_valid(AR_SCHEMAS, &results);
    let ac3 = finding(&results, "ac-3");
    assert_eq!(ac3["title"], "AC-3 Access Enforcement: satisfied");
    assert_eq!(ac3["props"][1]["value"], "line one line two");
}

#[test]
fn the_review_report_file_is_linked_with_its_hash() {
    let mut context = ctx();
    context.report_file = Some(FileRef {
        href: "report-2026-12-01.json".into(),
        sha256: "ab".repeat(32),
    });
    let results = serde_json::to_value(assessment_results(&sample_report(), &context)).unwrap();
    assert_valid(AR_SCHEMAS, &results);
    let resources = results["assessment-results"]["back-matter"]["resources"]
        .as_array()
        .unwrap();
    let linked = resources
        .iter()
        .find(|r| r["rlinks"][0]["href"] == "report-2026-12-01.json")
        .expect("the report is linked");
    assert_eq!(linked["rlinks"][0]["hashes"][0]["value"], "ab".repeat(32));
}

#[test]
fn component_definition_validates_and_states_the_configuration() {
    let ctx = component_ctx();
    let document = serde_json::to_value(component_definition(&ctx)).unwrap();
    assert_valid(CD_SCHEMAS, &document);
    let component = &document["component-definition"]["components"][0];
    assert_eq!(
        component["uuid"],
        gateway_component_uuid("portcullis.example/audit")
    );
    let requirements = component["control-implementations"][0]["implemented-requirements"]
        .as_array()
        .unwrap();
    let ids: Vec<&str> = requirements
        .iter()
        .map(|r| r["control-id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ac-3", "ac-5", "ac-6", "ac-7", "au-2", "au-3", "au-9", "au-12", "au-14", "ia-2",
            "sc-7", "cm-3", "au-6"
        ]
    );
    let description = |control: &str| {
        requirements
            .iter()
            .find(|r| r["control-id"] == control)
            .unwrap()["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        description("ac-3")
            .contains("2 targets behind the gateway: billing (mcp) and billing-db (postgres)"),
        "{}",
        description("ac-3")
    );
    assert!(description("ac-3").contains("6 policy rules (4 allow, 1 deny, 1 hold)"));
    assert!(description("ac-5").contains("1 hold rule holds requests for a named approver"));
    assert!(description("ac-5").contains("members of oncall may approve their own request"));
    assert!(
        description("sc-7").contains("their targets (billing (mcp) and billing-db (postgres))")
    );
    assert!(
        description("au-9").contains("1 witness cosigns checkpoints: https://witness.example/w1")
    );
    assert!(description("au-9").contains("at least every 1 s and after at most 1000 events"));
    assert!(description("ia-2").contains("1 issuer (https://login.example.com) and 2 API keys"));
    assert!(description("au-14").contains("encrypted to 1 auditor key"));
    assert!(description("au-6").contains("scheduled weekly"));
    // A checked control says by which rule.
    let au9 = requirements
        .iter()
        .find(|r| r["control-id"] == "au-9")
        .unwrap();
    assert!(
        au9["remarks"]
            .as_str()
            .unwrap()
            .contains("witness cosigned")
    );

    // Same configuration, same bytes.
    assert_eq!(
        to_bytes(&component_definition(&ctx)),
        to_bytes(&component_definition(&component_ctx()))
    );
}

#[test]
fn a_control_the_configuration_does_not_implement_is_not_claimed() {
    let mut ctx = component_ctx();
    ctx.recording.mode = "off".into();
    ctx.rules.hold = 0;
    ctx.break_glass_groups.clear();
    ctx.audit.signed = false;
    ctx.audit.witnesses.clear();
    ctx.targets.truncate(1);
    ctx.audit.checkpoint_interval_ms = 1500;
    let document = serde_json::to_value(component_definition(&ctx)).unwrap();
    assert_valid(CD_SCHEMAS, &document);
    let component = &document["component-definition"]["components"][0];
    let requirements = component["control-implementations"][0]["implemented-requirements"]
        .as_array()
        .unwrap();
    assert!(requirements.iter().all(|r| r["control-id"] != "au-14"));
    assert!(
        component["remarks"]
            .as_str()
            .unwrap()
            .contains("AU-14 (session audit) is not listed")
    );
    let text = serde_json::to_string(requirements).unwrap();
    assert!(text.contains("1 target behind the gateway: billing (mcp)"));
    assert!(text.contains("No hold rule is configured"));
    assert!(text.contains("No signing key is configured"));
    assert!(!text.contains("at least every"));
    assert!(text.contains("No database target is configured."));
}

#[test]
fn a_report_over_two_logs_gives_valid_documents_with_each_logs_verification() {
    let report = sample_report_of_two_logs();
    let results = results_json(&report);
    assert_valid(AR_SCHEMAS, &results);
    assert_valid(AP_SCHEMAS, &plan_json(&report));
    // AU-9's evidence: one verification per log, by its origin.
    let text = serde_json::to_string(&results).unwrap();
    for origin in ["portcullis/gw-a", "portcullis/<gw-b>"] {
        assert!(
            text.contains(&format!("\"Log {origin}: ")),
            "no verification of {origin}"
        );
    }
    // The samples name their log.
    assert!(text.contains("\"log-origin\""), "{text}");
}
