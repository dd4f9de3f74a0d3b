//! The automated control checks: one stated rule per control (`controls::CHECKS`), applied
//! to the facts and the verification.
//!
//! Each check is satisfied or not, never "probably": the rule says exactly what is counted,
//! the reason says what was found, and the samples are the events that decided it (the
//! ones that failed it when it failed, examples of it working otherwise). A period with no
//! events satisfies the checks that look for violations (there were none) and says so;
//! AU-6 and AU-9 ask for something to exist, and are not satisfied without it. Facts read
//! from a log that does not verify prove nothing: when verification fails, every check
//! fails with it, whatever the facts seem to say.

use crate::collect::Facts;
use crate::controls::CHECKS;
use crate::report::{Capped, ControlResult, ControlStatus, EventRef, Integrity};

/// How old the newest witness cosignature may be at the period's end, in seconds.
pub const MAX_COSIGNATURE_AGE: u64 = 24 * 3600;

/// How many samples a control result keeps.
const SAMPLES: usize = 5;

/// One result per entry of `controls::CHECKS`, in that order.
pub fn assess(facts: &Facts, integrity: &Integrity) -> Vec<ControlResult> {
    CHECKS
        .iter()
        .map(|check| {
            let (status, reason, events, samples) = match check.id {
                "ac-3" => access_enforcement(facts),
                "ac-5" => separation_of_duties(facts),
                "ac-6" => least_privilege(facts),
                "au-3" => record_content(facts),
                "au-6" => review(facts),
                "au-9" => protection(integrity),
                "au-12" => generation(facts),
                "ia-2" => identification(facts),
                other => {
                    unreachable!("controls::CHECKS names {other}, which assess has no rule for")
                }
            };
            let (status, reason) = match &integrity.failure {
                Some(failure) if check.id != "au-9" => (
                    ControlStatus::NotSatisfied,
                    format!(
                        "the facts come from a log that does not verify ({failure}), so they \
                         prove nothing; as read: {reason}"
                    ),
                ),
                _ => (status, reason),
            };
            ControlResult {
                control: check.id.to_string(),
                title: check.title.to_string(),
                status,
                rule: check.rule.to_string(),
                reason,
                events,
                samples: samples.into_iter().take(SAMPLES).collect(),
            }
        })
        .collect()
}

type Outcome = (ControlStatus, String, u64, Vec<EventRef>);

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The failed outcome of a check that looks for violations, when `found` holds any: "N
/// <noun> let through <how>", with the violating events as samples.
fn let_through(
    found: &Capped<EventRef>,
    (one, many): (&str, &str),
    how: &str,
    counted: u64,
) -> Option<Outcome> {
    (found.total > 0).then(|| {
        (
            ControlStatus::NotSatisfied,
            format!("{} let through {how}", plural(found.total, one, many)),
            counted,
            found.items.clone(),
        )
    })
}

fn access_enforcement(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    let t = &facts.totals;
    if let Some(failed) = let_through(
        &c.allowed_without_rule,
        ("request was", "requests were"),
        "without a rule that allowed them",
        t.requests,
    ) {
        return failed;
    }
    let samples = facts
        .refusals_by_rule
        .iter()
        .flat_map(|r| r.samples.iter().cloned())
        .collect();
    (
        ControlStatus::Satisfied,
        if t.requests == 0 {
            "no requests in the period; none was let through without a rule".into()
        } else {
            format!(
                "{} of {} let through, each by a named rule; {} refused ({} because no rule \
                 allowed them)",
                t.allowed,
                plural(t.requests, "request", "requests"),
                t.denied,
                c.default_denied
            )
        },
        t.requests,
        samples,
    )
}

fn separation_of_duties(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    let decisions: u64 = facts
        .holds
        .items
        .iter()
        .map(|h| h.decisions.len() as u64)
        .sum::<u64>()
        + facts.refused_decisions.total;
    if c.self_approvals_outside_break_glass.total > 0 {
        return (
            ControlStatus::NotSatisfied,
            format!(
                "{} approved by their own requester without break-glass",
                plural(
                    c.self_approvals_outside_break_glass.total,
                    "request was",
                    "requests were"
                )
            ),
            decisions,
            c.self_approvals_outside_break_glass.items.clone(),
        );
    }
    if c.self_approvals_break_glass.total > 0 {
        return (
            ControlStatus::NotSatisfied,
            format!(
                "{} approved by their own requester through break-glass (an emergency \
                 override, reported for review); {} refused",
                plural(
                    c.self_approvals_break_glass.total,
                    "request was",
                    "requests were"
                ),
                plural(
                    c.self_approvals_refused,
                    "self-approval attempt was",
                    "self-approval attempts were"
                )
            ),
            decisions,
            c.self_approvals_break_glass.items.clone(),
        );
    }
    let mut samples: Vec<EventRef> = facts
        .refused_decisions
        .items
        .iter()
        .map(|d| d.event.clone())
        .collect();
    samples.extend(
        facts
            .holds
            .items
            .iter()
            .flat_map(|h| h.decisions.iter().map(|d| d.event.clone())),
    );
    (
        ControlStatus::Satisfied,
        format!(
            "{} in the period, none approved by its requester; {} refused",
            plural(facts.holds.total, "approval", "approvals"),
            plural(
                c.self_approvals_refused,
                "self-approval attempt was",
                "self-approval attempts were"
            )
        ),
        decisions,
        samples,
    )
}

fn least_privilege(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    let counted = c.privileged_allowed + c.privileged_refused;
    if let Some(failed) = let_through(
        &c.privileged_unexplained,
        ("privileged statement was", "privileged statements were"),
        "without a rule naming them",
        counted,
    ) {
        return failed;
    }
    (
        ControlStatus::Satisfied,
        format!(
            "{} let through, each by a rule that names it; {} refused",
            plural(
                c.privileged_allowed,
                "privileged statement",
                "privileged statements"
            ),
            c.privileged_refused
        ),
        counted,
        facts
            .privileged
            .items
            .iter()
            .filter(|p| p.why.iter().any(|w| w == "privileged"))
            .map(|p| p.event.clone())
            .collect(),
    )
}

fn record_content(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    if c.au3_incomplete.total > 0 {
        let (first, missing) = &c.au3_incomplete.items[0];
        return (
            ControlStatus::NotSatisfied,
            format!(
                "{} of {} lack required fields (the first, event {}, lacks {})",
                plural(c.au3_incomplete.total, "request event", "request events"),
                c.au3_checked,
                first.seq,
                missing.join(", ")
            ),
            c.au3_checked,
            c.au3_incomplete
                .items
                .iter()
                .map(|(e, _)| e.clone())
                .collect(),
        );
    }
    (
        ControlStatus::Satisfied,
        format!(
            "all {} have what, when, where, source, outcome and (when let through) who",
            plural(c.au3_checked, "request event", "request events")
        ),
        c.au3_checked,
        facts
            .identities
            .iter()
            .map(|i| i.first_event.clone())
            .collect(),
    )
}

fn review(facts: &Facts) -> Outcome {
    let reviews = facts.checks.reviews;
    let samples = facts.reviews.iter().map(|r| r.event.clone()).collect();
    if reviews == 0 {
        return (
            ControlStatus::NotSatisfied,
            "no review report was signed off in the period (portcullis evidence sign-off)".into(),
            0,
            samples,
        );
    }
    let reviewers: std::collections::BTreeSet<&str> =
        facts.reviews.iter().map(|r| r.reviewer.as_str()).collect();
    (
        ControlStatus::Satisfied,
        format!(
            "{} signed off in the period by {}",
            plural(reviews, "review", "reviews"),
            reviewers.into_iter().collect::<Vec<_>>().join(", ")
        ),
        reviews,
        samples,
    )
}

/// AU-9 over several logs: satisfied only if it is for every one, each log's finding named.
pub fn protection_of_logs(logs: &[crate::report::LogReport]) -> (ControlStatus, String) {
    let outcomes: Vec<(&str, ControlStatus, String)> = logs
        .iter()
        .map(|log| {
            let (status, reason, _, _) = protection(&log.integrity);
            (log.origin.as_str(), status, reason)
        })
        .collect();
    let failing: Vec<String> = outcomes
        .iter()
        .filter(|(_, status, _)| *status == ControlStatus::NotSatisfied)
        .map(|(origin, _, reason)| format!("log {origin}: {reason}"))
        .collect();
    if !failing.is_empty() {
        return (
            ControlStatus::NotSatisfied,
            format!(
                "{} of {} logs fail: {}",
                failing.len(),
                logs.len(),
                failing.join("; ")
            ),
        );
    }
    let each: Vec<String> = outcomes
        .iter()
        .map(|(origin, _, reason)| format!("log {origin}: {reason}"))
        .collect();
    (
        ControlStatus::Satisfied,
        format!("all {} logs: {}", logs.len(), each.join("; ")),
    )
}

fn protection(integrity: &Integrity) -> Outcome {
    let counted = integrity.events_to_period_end;
    if let Some(failure) = &integrity.failure {
        return (
            ControlStatus::NotSatisfied,
            format!("the log does not verify: {failure}"),
            counted,
            Vec::new(),
        );
    }
    if !integrity.verified {
        return (
            ControlStatus::NotSatisfied,
            "the log was not verified".into(),
            counted,
            Vec::new(),
        );
    }
    let Some(checkpoint) = &integrity.covering_checkpoint else {
        if integrity.events_to_period_end == 0 {
            return (
                ControlStatus::Satisfied,
                "the log verifies; it holds no events up to the period's end".into(),
                0,
                Vec::new(),
            );
        }
        return (
            ControlStatus::NotSatisfied,
            format!(
                "the log verifies, but no signed checkpoint covers the period's events yet (up \
                 to event {}): only the database vouches for them (the gateway signs new events \
                 within its checkpoint interval: report again after it, or end the period \
                 earlier)",
                integrity.events_to_period_end
            ),
            counted,
            Vec::new(),
        );
    };
    let witnessed = if integrity.checked_with.witnesses.is_empty() {
        "no witness key was given, so no cosignature was checked".to_string()
    } else {
        match integrity.cosignature_age_seconds {
            Some(0) => format!(
                "a witness cosigned the checkpoint that covers the period (newest cosignature {})",
                integrity.last_cosignature.as_deref().unwrap_or("?")
            ),
            Some(age) if age <= MAX_COSIGNATURE_AGE => format!(
                "the newest witness cosignature ({}) is {} before the period's end",
                integrity.last_cosignature.as_deref().unwrap_or("?"),
                duration(age)
            ),
            Some(age) => {
                return (
                    ControlStatus::NotSatisfied,
                    format!(
                        "the log verifies, but the newest witness cosignature is {} older than \
                         the period's end (at most {} allowed)",
                        duration(age),
                        duration(MAX_COSIGNATURE_AGE)
                    ),
                    counted,
                    Vec::new(),
                );
            }
            None => {
                return (
                    ControlStatus::NotSatisfied,
                    format!(
                        "the log verifies, but none of the witnesses given ({}) cosigned a \
                         checkpoint up to the one covering the period",
                        integrity.checked_with.witnesses.join(", ")
                    ),
                    counted,
                    Vec::new(),
                );
            }
        }
    };
    (
        ControlStatus::Satisfied,
        format!(
            "the log verifies; the checkpoint of size {} ({}) covers the period; {witnessed}",
            checkpoint.size,
            if checkpoint.published {
                "published outside the gateway"
            } else {
                "stored in the gateway's database only"
            }
        ),
        counted,
        Vec::new(),
    )
}

fn generation(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    if !c.silent_targets.is_empty() {
        return (
            ControlStatus::NotSatisfied,
            format!(
                "sessions were opened on {} without any request event",
                c.silent_targets.join(", ")
            ),
            facts.totals.events,
            Vec::new(),
        );
    }
    (
        ControlStatus::Satisfied,
        format!(
            "{} carried traffic, each with its request events ({} in all)",
            plural(facts.totals.targets, "target", "targets"),
            facts.totals.requests
        ),
        facts.totals.events,
        facts
            .identities
            .iter()
            .map(|i| i.first_event.clone())
            .collect(),
    )
}

fn identification(facts: &Facts) -> Outcome {
    let c = &facts.checks;
    if let Some(failed) = let_through(
        &c.anonymous_allowed,
        ("request was", "requests were"),
        "without a named identity",
        c.allowed,
    ) {
        return failed;
    }
    (
        ControlStatus::Satisfied,
        format!(
            "all {} let through name an authenticated identity ({} distinct)",
            plural(c.allowed, "request", "requests"),
            facts.totals.identities
        ),
        c.allowed,
        facts
            .identities
            .iter()
            .map(|i| i.first_event.clone())
            .collect(),
    )
}

/// `90 s`, `12 min`, `5 h`, `3 d`.
fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}
