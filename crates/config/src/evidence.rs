//! `[evidence]`: scheduled, signed AU-6 review reports and OSCAL documents.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use serde::{Deserialize, Deserializer};

use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[evidence]`: when `serve` writes the review report of the last period, where, in which
/// formats, signed with which key. Without `schedule`, nothing is written on a schedule
/// (`portcullis evidence report` still writes reports on demand, with these defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// `daily` (each day just after 00:00 UTC, the day before), `weekly` (each Monday just
    /// after 00:00 UTC, the ISO week before) or a five-field cron expression, evaluated in UTC
    /// (`"0 6 * * *"`: at 06:00, the period since the previous run). Absent: no scheduled
    /// reports.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Where scheduled reports are written, each with its `.sig`. Default:
    /// `<gateway.data_dir>/evidence`.
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    /// Which documents a run writes: `html`, `json`, `md` (the review report) and `oscal`
    /// (assessment results and plan). Default: `["html", "json", "oscal"]`.
    #[serde(default = "default_formats")]
    pub formats: Vec<EvidenceFormat>,
    /// The directory of the key the documents are signed with, as `portcullis keys
    /// audit-init --out DIR` makes it (`audit.key`, `audit.pub`). Default: the audit signing
    /// key (`audit.signing_key`), so one public key checks the log and its reports.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// How many days before a period its anomaly baselines are drawn from (volume far above
    /// an identity's usual, a tool new to it). Default: 28.
    #[serde(default = "default_baseline_days")]
    pub baseline_days: u32,
    /// Working hours, UTC, `HH:MM-HH:MM`: activity outside them is reported as off-hours.
    /// A range that wraps midnight (`22:00-06:00`) is a night shift. Default: `07:00-19:00`.
    #[serde(default, deserialize_with = "de_work_hours")]
    pub work_hours: WorkHours,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            schedule: None,
            out_dir: None,
            formats: default_formats(),
            signing_key: None,
            baseline_days: default_baseline_days(),
            work_hours: WorkHours::default(),
        }
    }
}

impl Evidence {
    /// Where documents are written: `out_dir`, or `<data_dir>/evidence`.
    pub fn out_dir(&self, data_dir: &Path) -> PathBuf {
        self.out_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("evidence"))
    }

    /// The directory of the signing key: `signing_key`, or the audit key's.
    pub fn signing_key<'a>(&'a self, audit_key: Option<&'a Path>) -> Option<&'a Path> {
        self.signing_key.as_deref().or(audit_key)
    }
}

/// When scheduled reports are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Daily,
    Weekly,
    /// A five-field cron expression (minute hour day-of-month month day-of-week), UTC; checked
    /// to parse when the file is loaded.
    Cron(String),
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.trim() {
            "daily" => Schedule::Daily,
            "weekly" => Schedule::Weekly,
            _ => Schedule::Cron(text.trim().to_string()),
        })
    }
}

/// Parses a cron expression as the schedule evaluates it: five fields (no seconds), POSIX
/// day-of-month/day-of-week semantics.
pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
    if expression.split_whitespace().count() != 5 {
        return Err(format!(
            "{expression:?} is not daily, weekly or a five-field cron expression (minute hour day-of-month month day-of-week)"
        ));
    }
    croner::Cron::from_str(expression)
        .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))
}

/// A document a scheduled run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceFormat {
    Html,
    Json,
    Md,
    Oscal,
}

fn default_formats() -> Vec<EvidenceFormat> {
    vec![
        EvidenceFormat::Html,
        EvidenceFormat::Json,
        EvidenceFormat::Oscal,
    ]
}

fn default_baseline_days() -> u32 {
    28
}

/// Working hours in UTC, as minutes after midnight: `[start, end)`, wrapping midnight when
/// `end <= start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkHours {
    pub start_minute: u32,
    pub end_minute: u32,
}

impl Default for WorkHours {
    fn default() -> Self {
        WorkHours {
            start_minute: 7 * 60,
            end_minute: 19 * 60,
        }
    }
}

impl WorkHours {
    /// Whether `minute` after midnight UTC is within working hours.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }

    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<WorkHours, String> {
        let bad = || format!("{text:?} is not working hours: give HH:MM-HH:MM, UTC (07:00-19:00)");
        let minute = |part: &str| -> Option<u32> {
            let (h, m) = part.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            // 24:00 is the end of the day, as an end only.
            (h < 24 && m < 60 || h == 24 && m == 0).then_some(h * 60 + m)
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minute(start).ok_or_else(bad)?, minute(end).ok_or_else(bad)?);
        if start == end || start == 24 * 60 {
            return Err(format!(
                "{text:?}: working hours must start before 24:00 and not end where they start"
            ));
        }
        Ok(WorkHours {
            start_minute: start,
            end_minute: end % (24 * 60),
        })
    }
}

fn de_work_hours<'de, D: Deserializer<'de>>(d: D) -> Result<WorkHours, D::Error> {
    let text = String::deserialize(d)?;
    WorkHours::parse(&text).map_err(serde::de::Error::custom)
}

impl Config {
    pub(crate) fn validate_evidence(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let e = &self.evidence;
        if let Some(Schedule::Cron(expression)) = &e.schedule {
            parse_cron(expression).map_err(|reason| {
                at.error(
                    key_path!["evidence", "schedule"],
                    format!("evidence.schedule: {reason}"),
                )
            })?;
        }
        if e.formats.is_empty() {
            return Err(at.error(
                key_path!["evidence", "formats"],
                "evidence.formats: name at least one of html, json, md, oscal",
            ));
        }
        let mut seen = e.formats.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != e.formats.len() {
            return Err(at.error(
                key_path!["evidence", "formats"],
                "evidence.formats: a format is named twice",
            ));
        }
        if !(1..=366).contains(&e.baseline_days) {
            return Err(at.error(
                key_path!["evidence", "baseline_days"],
                "evidence.baseline_days: must be between 1 and 366",
            ));
        }
        if let Some(key) = &e.signing_key
            && key.starts_with(&self.gateway.data_dir)
        {
            return Err(at.error(
                key_path!["evidence", "signing_key"],
                "evidence.signing_key: must not be inside gateway.data_dir; whoever can rewrite the log must not also hold the key that vouches for its reports",
            ));
        }
        // Scheduled reports are evidence only if they are signed: refuse to write them
        // unsigned rather than produce documents anyone could have regenerated.
        if e.schedule.is_some() && e.signing_key(self.audit.signing_key.as_deref()).is_none() {
            return Err(at.error(
                key_path!["evidence", "schedule"],
                "evidence.schedule: scheduled reports are signed; set audit.signing_key (or evidence.signing_key)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::parse;

    const KEY: &str = "[audit]\nsigning_key = \"/etc/portcullis/keys\"\n";

    #[test]
    fn evidence_is_unscheduled_by_default_with_documented_defaults() {
        let config = parse("").unwrap();
        let e = &config.evidence;
        assert_eq!(e.schedule, None);
        assert_eq!(
            e.formats,
            vec![
                EvidenceFormat::Html,
                EvidenceFormat::Json,
                EvidenceFormat::Oscal
            ]
        );
        assert_eq!(e.baseline_days, 28);
        assert_eq!(e.work_hours, WorkHours::parse("07:00-19:00").unwrap());
        assert_eq!(
            e.out_dir(&config.gateway.data_dir),
            config.gateway.data_dir.join("evidence")
        );
        assert_eq!(e.signing_key(Some(Path::new("/k"))), Some(Path::new("/k")));
    }

    #[test]
    fn schedules_parse_as_daily_weekly_or_cron() {
        let schedule = |s: &str| {
            parse(&format!("{KEY}[evidence]\nschedule = \"{s}\"\n"))
                .map(|c| c.evidence.schedule.unwrap())
                .map_err(|e| e.to_string())
        };
        assert_eq!(schedule("daily").unwrap(), Schedule::Daily);
        assert_eq!(schedule("weekly").unwrap(), Schedule::Weekly);
        assert_eq!(
            schedule("30 6 * * MON").unwrap(),
            Schedule::Cron("30 6 * * MON".into())
        );
        let err = schedule("hourly").unwrap_err();
        assert!(
            err.starts_with("portcullis.toml:4: evidence.schedule:"),
            "located and named: {err}"
        );
        let err = schedule("61 * * * *").unwrap_err();
        assert!(err.contains("is not a cron expression"), "{err}");
        let err = schedule("0 0 6 * * *").unwrap_err();
        assert!(err.contains("five-field"), "seconds are refused: {err}");
    }

    #[test]
    fn a_schedule_without_a_signing_key_is_refused() {
        let err = parse("[evidence]\nschedule = \"daily\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("scheduled reports are signed"), "{err}");
        let config = parse(
            "[evidence]\nschedule = \"daily\"\nsigning_key = \"/etc/portcullis/evidence-key\"\n",
        )
        .unwrap();
        assert_eq!(
            config.evidence.signing_key(None),
            Some(Path::new("/etc/portcullis/evidence-key"))
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("[evidence]\nformats = []\n").contains("evidence.formats"));
        assert!(err("[evidence]\nformats = [\"json\", \"json\"]\n").contains("named twice"));
        assert!(err("[evidence]\nformats = [\"pdf\"]\n").contains("unknown variant"));
        assert!(err("[evidence]\nbaseline_days = 0\n").contains("evidence.baseline_days"));
        let e = err("[evidence]\nwork_hours = \"9-17\"\n");
        assert!(
            e.contains("portcullis.toml:2") && e.contains("HH:MM-HH:MM"),
            "{e}"
        );
        assert!(err("[evidence]\nreport_dir = \"x\"\n").contains("unknown field"));
        let e = err(
            "[gateway]\ndata_dir = \"/var/lib/p\"\n[evidence]\nsigning_key = \"/var/lib/p/k\"\n",
        );
        assert!(
            e.contains("evidence.signing_key: must not be inside"),
            "{e}"
        );
    }

    #[test]
    fn work_hours_may_wrap_midnight() {
        let day = WorkHours::parse("07:00-19:00").unwrap();
        assert!(day.contains(7 * 60) && day.contains(19 * 60 - 1));
        assert!(!day.contains(19 * 60) && !day.contains(6 * 60 + 59));
        let night = WorkHours::parse("22:00-06:00").unwrap();
        assert!(night.contains(23 * 60) && night.contains(0) && !night.contains(12 * 60));
        let all_day_end = WorkHours::parse("08:00-24:00").unwrap();
        assert!(all_day_end.contains(23 * 60 + 59) && !all_day_end.contains(0));
        assert!(WorkHours::parse("08:00-08:00").is_err());
        assert!(WorkHours::parse("25:00-08:00").is_err());
    }
}
