//! `evidence evaluate`: did a control's status get worse than in a baseline?
//!
//! For CI jobs and schedulers: compare this period's document with an accepted one and fail
//! when a control that was satisfied is not any more, or is no longer assessed at all (a
//! check that silently disappears is as bad as one that fails). Either document may be the
//! JSON review report (`controls: [{control, status}]`) or an OSCAL `assessment-results`
//! (findings whose `target.target-id` is a control or one of its statements, `ac-5_smt`, and
//! whose `target.status.state` is `satisfied` or `not-satisfied`), so a baseline kept from
//! either tool chain can be used.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::report::ControlStatus;

/// A control that got worse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    pub control: String,
    pub was: ControlStatus,
    /// `None`: the control is not assessed in the current document.
    pub now: Option<ControlStatus>,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.now {
            Some(now) => write!(
                f,
                "{}: {} in the baseline, {} now",
                self.control,
                self.was.as_str(),
                now.as_str()
            ),
            None => write!(
                f,
                "{}: {} in the baseline, not assessed now",
                self.control,
                self.was.as_str()
            ),
        }
    }
}

/// The status of each control a document assesses, by lower-case control id. A control
/// assessed more than once (statement by statement, or in several OSCAL results) takes its
/// worst status.
pub fn control_statuses(document: &Value) -> Result<BTreeMap<String, ControlStatus>, String> {
    let mut statuses = BTreeMap::new();
    if let Some(controls) = document.get("controls") {
        let controls = controls.as_array().ok_or("`controls` is not a list")?;
        for (i, c) in controls.iter().enumerate() {
            let control = c
                .get("control")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("controls[{i}] has no `control`"))?;
            let status = c
                .get("status")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("controls[{i}] ({control}) has no `status`"))?;
            record(&mut statuses, control, status)?;
        }
    } else if let Some(ar) = document.get("assessment-results") {
        let results = ar
            .get("results")
            .and_then(Value::as_array)
            .ok_or("`assessment-results` has no `results` list")?;
        for (r, result) in results.iter().enumerate() {
            let Some(findings) = result.get("findings") else {
                continue; // a result with no findings assesses nothing
            };
            let findings = findings
                .as_array()
                .ok_or_else(|| format!("results[{r}].findings is not a list"))?;
            for (f, finding) in findings.iter().enumerate() {
                let at = format!("results[{r}].findings[{f}]");
                let target = finding
                    .get("target")
                    .ok_or_else(|| format!("{at} has no `target`"))?;
                let id = target
                    .get("target-id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.target has no `target-id`"))?;
                let state = target
                    .pointer("/status/state")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.target has no `status.state`"))?;
                record(&mut statuses, control_of_target(id), state)?;
            }
        }
    } else {
        return Err(
            "neither a review report (`controls`) nor an OSCAL `assessment-results`".into(),
        );
    }
    Ok(statuses)
}

/// The control a finding's target names: `ac-5` for `ac-5`, `ac-5_smt`, `ac-5_smt.a`,
/// `AC-5` (OSCAL statement and objective ids are the control id, `_`, a part name).
fn control_of_target(id: &str) -> &str {
    id.split_once('_').map_or(id, |(control, _)| control)
}

fn record(
    statuses: &mut BTreeMap<String, ControlStatus>,
    control: &str,
    status: &str,
) -> Result<(), String> {
    let status = match status {
        "satisfied" => ControlStatus::Satisfied,
        "not-satisfied" => ControlStatus::NotSatisfied,
        other => {
            return Err(format!(
                "{control}: status {other:?} is neither satisfied nor not-satisfied"
            ));
        }
    };
    let control = control.trim().to_ascii_lowercase();
    if control.is_empty() {
        return Err("a control id is empty".into());
    }
    let entry = statuses.entry(control).or_insert(status);
    *entry = (*entry).max(status); // NotSatisfied orders after Satisfied: the worse wins
    Ok(())
}

/// The controls whose status in `current` is worse than in `baseline`, by control id.
pub fn regressions(
    baseline: &BTreeMap<String, ControlStatus>,
    current: &BTreeMap<String, ControlStatus>,
) -> Vec<Regression> {
    baseline
        .iter()
        .filter_map(|(control, &was)| {
            let now = current.get(control).copied();
            let worse = match now {
                None => true,
                Some(now) => now > was,
            };
            worse.then(|| Regression {
                control: control.clone(),
                was,
                now,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(controls: &[(&str, &str)]) -> Value {
        json!({
            "format": "portcullis-evidence-report/1",
            "controls": controls
                .iter()
                .map(|(c, s)| json!({"control": c, "status": s, "rule": "r", "reason": "x"}))
                .collect::<Vec<_>>(),
        })
    }

    fn oscal(findings: &[(&str, &str)]) -> Value {
        json!({"assessment-results": {
            "uuid": "5e4b1ee2-0000-5000-8000-000000000000",
            "results": [{
                "title": "period",
                "findings": findings.iter().map(|(id, state)| json!({
                    "uuid": "5e4b1ee2-0000-5000-8000-000000000001",
                    "title": id,
                    "target": {
                        "type": "statement-id",
                        "target-id": id,
                        "status": {"state": state}
                    }
                })).collect::<Vec<_>>()
            }]
        }})
    }

    fn statuses(doc: &Value) -> BTreeMap<String, ControlStatus> {
        control_statuses(doc).unwrap()
    }

    #[test]
    fn the_same_statuses_are_not_a_regression_and_improvements_are_fine() {
        let base = statuses(&report(&[("au-9", "satisfied"), ("ac-5", "not-satisfied")]));
        let now = statuses(&report(&[("au-9", "satisfied"), ("ac-5", "satisfied")]));
        assert_eq!(regressions(&base, &base), vec![]);
        assert_eq!(regressions(&base, &now), vec![]);
    }

    #[test]
    fn a_control_that_fails_or_disappears_is_named() {
        let base = statuses(&report(&[
            ("au-9", "satisfied"),
            ("ac-5", "satisfied"),
            ("ia-2", "not-satisfied"),
        ]));
        let now = statuses(&report(&[
            ("au-9", "not-satisfied"),
            ("ia-2", "not-satisfied"),
        ]));
        let found = regressions(&base, &now);
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "ac-5: satisfied in the baseline, not assessed now",
                "au-9: satisfied in the baseline, not-satisfied now",
            ]
        );
    }

    #[test]
    fn oscal_findings_are_read_by_control_with_the_worst_statement_winning() {
        let doc = oscal(&[
            ("ac-5_smt", "satisfied"),
            ("AU-9_smt.a", "satisfied"),
            ("au-9_smt.b", "not-satisfied"),
            ("ia-2", "satisfied"),
        ]);
        let found = statuses(&doc);
        assert_eq!(found["ac-5"], ControlStatus::Satisfied);
        assert_eq!(found["au-9"], ControlStatus::NotSatisfied);
        assert_eq!(found["ia-2"], ControlStatus::Satisfied);
    }

    #[test]
    fn a_report_baseline_compares_with_an_oscal_current_and_back() {
        let report = statuses(&report(&[("ac-5", "satisfied"), ("au-9", "satisfied")]));
        let oscal = statuses(&oscal(&[
            ("ac-5_smt", "not-satisfied"),
            ("au-9_smt", "satisfied"),
        ]));
        let found = regressions(&report, &oscal);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].control, "ac-5");
        assert_eq!(regressions(&oscal, &report), vec![]);
    }

    #[test]
    fn unreadable_documents_say_what_is_wrong() {
        let err = control_statuses(&json!({"x": 1})).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        let err = control_statuses(&report(&[("ac-5", "mostly")])).unwrap_err();
        assert!(err.contains("\"mostly\""), "{err}");
        let err = control_statuses(&json!({"controls": [{"status": "satisfied"}]})).unwrap_err();
        assert!(err.contains("controls[0]"), "{err}");
        let err = control_statuses(&json!({"assessment-results": {
            "results": [{"findings": [{"target": {"target-id": "ac-5_smt"}}]}]
        }}))
        .unwrap_err();
        assert!(err.contains("results[0].findings[0]"), "{err}");
    }
}
