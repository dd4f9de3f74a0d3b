//! When scheduled reports run, and which period each one reports on. Pure functions of the
//! schedule and the time, all in UTC (no daylight-saving jumps: a day is always 24 hours).
//!
//! - `daily`: runs at each 00:00 UTC and reports on the day that just ended.
//! - `weekly`: runs at each Monday 00:00 UTC and reports on the ISO week that just ended
//!   (Monday 00:00 to Monday 00:00).
//! - cron: runs at each fire time and reports on the time since the previous fire time, so
//!   consecutive runs cover the time without gap or overlap.
//!
//! A gateway that was down when a run was due catches up when it starts: the latest run due
//! at or before the start ([`latest_run`]) is made if its documents are not already in the
//! output directory ([`already_written`]); older missed runs are not (their periods can be
//! reported on demand with `portcullis evidence report`).

use std::path::Path;

use chrono::{DateTime, Datelike as _, Duration, NaiveTime, Timelike as _, Utc};
use portcullis_config::Schedule;

use crate::{EvidenceError, Period};

/// A schedule ready to be evaluated.
#[derive(Debug, Clone)]
pub enum Plan {
    Daily,
    Weekly,
    Cron(Box<croner::Cron>),
}

/// One run: when it is due, and the period it reports on (which ends when it is due).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub at: DateTime<Utc>,
    pub period: Period,
}

impl Plan {
    pub fn new(schedule: &Schedule) -> Result<Plan, EvidenceError> {
        Ok(match schedule {
            Schedule::Daily => Plan::Daily,
            Schedule::Weekly => Plan::Weekly,
            Schedule::Cron(expression) => Plan::Cron(Box::new(
                portcullis_config::evidence::parse_cron(expression)
                    .map_err(EvidenceError::Invalid)?,
            )),
        })
    }

    /// The latest time the schedule is due at or before `t`.
    fn due_at_or_before(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, EvidenceError> {
        let t = whole_seconds(t);
        match self {
            Plan::Daily => Ok(midnight(t)),
            Plan::Weekly => {
                let day = midnight(t);
                Ok(day - Duration::days(i64::from(day.weekday().num_days_from_monday())))
            }
            Plan::Cron(cron) => cron
                .find_previous_occurrence(&t, true)
                .map_err(|e| never_due(cron, e)),
        }
    }

    /// The first time the schedule is due strictly after `t`.
    fn due_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>, EvidenceError> {
        match self {
            Plan::Daily => Ok(midnight(t) + Duration::days(1)),
            Plan::Weekly => Ok(self.due_at_or_before(t)? + Duration::days(7)),
            Plan::Cron(cron) => cron
                .find_next_occurrence(&whole_seconds(t), false)
                .map_err(|e| never_due(cron, e)),
        }
    }

    /// The run due at `at` (a time the schedule is due): its period ends at `at`.
    fn run_at(&self, at: DateTime<Utc>) -> Result<Run, EvidenceError> {
        let since = match self {
            Plan::Daily => at - Duration::days(1),
            Plan::Weekly => at - Duration::days(7),
            Plan::Cron(cron) => cron
                .find_previous_occurrence(&at, false)
                .map_err(|e| never_due(cron, e))?,
        };
        Ok(Run {
            at,
            period: Period::new(since, at)?,
        })
    }
}

/// The next run strictly after `now`.
pub fn next_run(plan: &Plan, now: DateTime<Utc>) -> Result<Run, EvidenceError> {
    plan.run_at(plan.due_after(now)?)
}

/// The latest run due at or before `now`: the one to catch up on at start if it was missed.
pub fn latest_run(plan: &Plan, now: DateTime<Utc>) -> Result<Run, EvidenceError> {
    plan.run_at(plan.due_at_or_before(now)?)
}

/// The common start of the names of a period's documents in the output directory, so that a
/// run can tell whether its period was already reported: `evidence-<since>--<until>`, the
/// times in basic ISO 8601 (`20261201T000000Z`), which sort by time and are valid file names
/// everywhere.
pub fn period_stem(period: &Period) -> String {
    let compact = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    format!(
        "evidence-{}--{}",
        compact(period.since_time()),
        compact(period.until_time())
    )
}

/// The file that marks a run finished: `<stem>.complete`, written after every document of
/// the run is written, recorded and signed (it lists them). One document signed is not a
/// finished run: a disk that filled after the first must not keep the others from being
/// written at the next try.
pub fn completion_marker(out_dir: &Path, period: &Period) -> std::path::PathBuf {
    out_dir.join(format!("{}.complete", period_stem(period)))
}

/// Whether `out_dir` holds a finished run of `period` (its [`completion_marker`]).
pub fn already_written(out_dir: &Path, period: &Period) -> bool {
    completion_marker(out_dir, period).is_file()
}

/// The run to make at start, if the latest one due was missed.
pub fn catch_up(
    plan: &Plan,
    now: DateTime<Utc>,
    out_dir: &Path,
) -> Result<Option<Run>, EvidenceError> {
    let run = latest_run(plan, now)?;
    Ok((!already_written(out_dir, &run.period)).then_some(run))
}

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(NaiveTime::MIN).and_utc()
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).expect("0 ns is valid")
}

fn never_due(cron: &croner::Cron, e: croner::errors::CronError) -> EvidenceError {
    EvidenceError::Invalid(format!(
        "evidence.schedule {:?} has no fire time near now: {e}",
        cron.pattern.to_string()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        crate::period::parse_time(text).unwrap()
    }

    fn cron(expression: &str) -> Plan {
        Plan::new(&Schedule::Cron(expression.into())).unwrap()
    }

    fn period(since: &str, until: &str) -> Period {
        Period::new(t(since), t(until)).unwrap()
    }

    #[test]
    fn daily_runs_at_midnight_utc_on_the_day_before() {
        let run = next_run(&Plan::Daily, t("2026-12-06T07:12:33.250Z")).unwrap();
        assert_eq!(run.at, t("2026-12-07T00:00:00Z"));
        assert_eq!(run.period, period("2026-12-06", "2026-12-07"));
        // Exactly at midnight, the run due now is the latest, the next is tomorrow's.
        let now = t("2026-12-07T00:00:00Z");
        assert_eq!(latest_run(&Plan::Daily, now).unwrap().at, now);
        assert_eq!(
            next_run(&Plan::Daily, now).unwrap().at,
            t("2026-12-08T00:00:00Z")
        );
    }

    #[test]
    fn daily_periods_cross_month_and_year_ends_and_leap_days() {
        let run = latest_run(&Plan::Daily, t("2026-03-01T05:00:00Z")).unwrap();
        assert_eq!(run.period, period("2026-02-28", "2026-03-01"));
        let run = latest_run(&Plan::Daily, t("2028-03-01T05:00:00Z")).unwrap();
        assert_eq!(run.period, period("2028-02-29", "2028-03-01"));
        let run = next_run(&Plan::Daily, t("2026-12-31T23:59:59.999Z")).unwrap();
        assert_eq!(run.period, period("2026-12-31", "2027-01-01"));
        // The night European clocks go back is 24 hours like any other in UTC.
        let run = latest_run(&Plan::Daily, t("2026-10-26T01:00:00+01:00")).unwrap();
        assert_eq!(run.period, period("2026-10-25", "2026-10-26"));
        assert_eq!(run.period.days(), 1.0);
    }

    #[test]
    fn weekly_runs_on_monday_for_the_iso_week_before() {
        // Sunday 6 December 2026.
        let run = next_run(&Plan::Weekly, t("2026-12-06T12:00:00Z")).unwrap();
        assert_eq!(run.at, t("2026-12-07T00:00:00Z"));
        assert_eq!(run.period, period("2026-11-30", "2026-12-07"));
        // On Monday itself, after midnight, the latest run is today's, the next in a week.
        let monday = t("2026-12-07T00:00:01Z");
        assert_eq!(
            latest_run(&Plan::Weekly, monday).unwrap().at,
            t("2026-12-07")
        );
        assert_eq!(next_run(&Plan::Weekly, monday).unwrap().at, t("2026-12-14"));
        // A week across a year end: ISO week 53 of 2026 ends Monday 4 January 2027.
        let run = latest_run(&Plan::Weekly, t("2027-01-05T00:00:00Z")).unwrap();
        assert_eq!(run.period, period("2026-12-28", "2027-01-04"));
    }

    #[test]
    fn cron_periods_run_from_the_previous_fire_time_to_this_one() {
        let plan = cron("0 6 * * 1-5"); // 06:00 on weekdays
        // Friday 4 December 2026, 07:00: next is Monday 06:00, covering the weekend.
        let run = next_run(&plan, t("2026-12-04T07:00:00Z")).unwrap();
        assert_eq!(run.at, t("2026-12-07T06:00:00Z"));
        assert_eq!(
            run.period,
            period("2026-12-04T06:00:00Z", "2026-12-07T06:00:00Z")
        );
        // Consecutive runs meet exactly.
        let after = next_run(&plan, run.at).unwrap();
        assert_eq!(after.period.since, run.period.until);

        // Month ends: the last day of the month, whatever its length.
        let plan = cron("30 23 L * *");
        let run = next_run(&plan, t("2027-02-01T00:00:00Z")).unwrap();
        assert_eq!(run.at, t("2027-02-28T23:30:00Z"));
        assert_eq!(
            run.period,
            period("2027-01-31T23:30:00Z", "2027-02-28T23:30:00Z")
        );
    }

    #[test]
    fn a_cron_that_never_fires_is_an_error_not_a_hang() {
        let plan = cron("0 0 30 2 *"); // 30 February
        let err = next_run(&plan, t("2026-12-06")).unwrap_err();
        assert!(err.to_string().contains("no fire time"), "{err}");
    }

    #[test]
    fn at_start_only_the_latest_missed_run_is_caught_up_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        // Down from Thursday to Sunday noon: Friday's, Saturday's and Sunday's runs were due;
        // only Sunday's (Saturday's period) is made.
        let now = t("2026-12-06T12:00:00Z");
        let run = catch_up(&Plan::Daily, now, dir.path()).unwrap().unwrap();
        assert_eq!(run.at, t("2026-12-06"));
        assert_eq!(run.period, period("2026-12-05", "2026-12-06"));

        let stem = period_stem(&run.period);
        assert_eq!(stem, "evidence-20261205T000000Z--20261206T000000Z");
        // A document written but never signed (the run died half way) is not a finished run.
        std::fs::write(dir.path().join(format!("{stem}.html")), "x").unwrap();
        assert!(catch_up(&Plan::Daily, now, dir.path()).unwrap().is_some());
        std::fs::write(dir.path().join(format!("{stem}.html.sig")), "x").unwrap();
        // A signed document alone is not a finished run; the marker is.
        assert!(catch_up(&Plan::Daily, now, dir.path()).unwrap().is_some());
        std::fs::write(dir.path().join(format!("{stem}.complete")), "x").unwrap();
        assert_eq!(catch_up(&Plan::Daily, now, dir.path()).unwrap(), None);
        // Nor does another period's signature count.
        assert!(
            catch_up(&Plan::Daily, t("2026-12-07T01:00:00Z"), dir.path())
                .unwrap()
                .is_some()
        );
    }
}
