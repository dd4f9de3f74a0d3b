//! Column discovery: which columns hold what a masking profile's detectors find, learnt by
//! sampling each table once, so that the columns are masked whole from then on.
//!
//! A detector sees a value only as it comes back. `SELECT reverse(email)`,
//! `encode(email::bytea, 'base64')` or two `substr` halves return the value in a form no
//! detector recognises, while a column named by the profile (`columns`) is masked whole in
//! whatever form it comes back: the statement's text tells which result columns may carry
//! it (see [`crate::session`]). Discovery turns the first kind of mask into the second: a
//! profile with `discover = true` samples each table the first time an allowed statement
//! touches it, tags the columns whose values its detectors flag, and masks those columns
//! as if `columns` named them (the refusal of masked columns outside the output list,
//! [`crate::inference`], applies to them too).
//!
//! - The sample is the first [`SAMPLE_ROWS`] rows of `SELECT *`, read on a connection of
//!   the gateway's own with its own credential, text format. A column that holds e-mail
//!   addresses or card numbers holds them in most rows, so a few hundred rows find it
//!   (a kind present in 1 % of the rows is missed with probability 0.99^500 ≈ 0.7 %) at a
//!   bounded cost: one query of at most 500 rows, each value scanned up to
//!   [`SAMPLE_VALUE_BYTES`]. One flagged value tags the column.
//! - The statement that first touches a table waits for its sample ([`SAMPLE_TIMEOUT`]);
//!   if the sample fails or takes longer, the statement is refused: nothing runs with a
//!   mask that does not know its columns yet (fail closed).
//! - Tags are kept per target in `<data_dir>/discovery/<target>.json` and survive restarts;
//!   a table sampled empty is sampled again (after [`EMPTY_RESAMPLE`]) since it has shown
//!   nothing yet. Tags only grow: delete the file to start over.
//! - Each sample is an audit event `columns.discovered`: the table, the rows sampled, and
//!   per tagged column the detectors and how many values each flagged, never a value.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use portcullis_mask::{Profile, Report};
use portcullis_model::{DataFinding, EventType, Outcome};
use serde::{Deserialize, Serialize};

use crate::PgProxy;

/// Rows read per table (see the module's documentation for why this many).
pub const SAMPLE_ROWS: usize = 500;
/// Bytes of each sampled value the detectors read.
pub const SAMPLE_VALUE_BYTES: usize = 4096;
/// How long a statement waits for the sample of a table it is the first to touch.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A table sampled empty is sampled again after this long.
pub const EMPTY_RESAMPLE: Duration = Duration::from_secs(60);

/// What discovery knows for one target.
pub struct Discovery {
    path: PathBuf,
    /// Profiles with `discover = true`.
    profiles: HashSet<String>,
    tags: Mutex<Tags>,
    /// One sample at a time: a statement that waits for another's sample of the same table
    /// then finds it done.
    sampling: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tags {
    /// Profile → table → what its sample found.
    profiles: BTreeMap<String, BTreeMap<String, TableTags>>,
    /// Tables sampled empty, and when: not persisted.
    #[serde(skip)]
    empty: BTreeMap<(String, String), Instant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TableTags {
    /// Tagged columns, lower case.
    columns: Vec<String>,
    /// Rows the sample held.
    rows: usize,
}

impl Discovery {
    /// Loads the tags of `target` kept in `dir`; `profiles` are those that discover.
    pub fn open(dir: &Path, target: &str, profiles: HashSet<String>) -> std::io::Result<Discovery> {
        let path = dir.join(format!("{target}.json"));
        let tags = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tags::default(),
            Err(e) => return Err(e),
        };
        Ok(Discovery {
            path,
            profiles,
            tags: Mutex::new(tags),
            sampling: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the profile of this name discovers.
    pub fn enabled(&self, profile: &str) -> bool {
        self.profiles.contains(profile)
    }

    /// The columns tagged for `profile` in `tables` (lower case), sampling each table not
    /// sampled yet. `Err`: a sample failed or took too long; the statement must not run.
    pub(crate) async fn columns(
        &self,
        proxy: &PgProxy,
        name: &str,
        profile: &Profile,
        tables: &[String],
    ) -> Result<Vec<String>, String> {
        let mut columns = Vec::new();
        for table in tables {
            let tagged = match self.known(name, table) {
                Some(tagged) => tagged,
                None => {
                    tokio::time::timeout(SAMPLE_TIMEOUT, self.discover(proxy, name, profile, table))
                        .await
                        .map_err(|_| {
                            format!("sampling table {table} took longer than {SAMPLE_TIMEOUT:?}")
                        })??
                }
            };
            columns.extend(tagged);
        }
        columns.sort_unstable();
        columns.dedup();
        Ok(columns)
    }

    fn known(&self, profile: &str, table: &str) -> Option<Vec<String>> {
        let tags = self.lock();
        if let Some(t) = tags.profiles.get(profile).and_then(|p| p.get(table)) {
            return Some(t.columns.clone());
        }
        let key = (profile.to_string(), table.to_string());
        tags.empty
            .get(&key)
            .filter(|at| at.elapsed() < EMPTY_RESAMPLE)
            .map(|_| Vec::new())
    }

    async fn discover(
        &self,
        proxy: &PgProxy,
        name: &str,
        profile: &Profile,
        table: &str,
    ) -> Result<Vec<String>, String> {
        let _one_at_a_time = self.sampling.lock().await;
        if let Some(tagged) = self.known(name, table) {
            return Ok(tagged);
        }
        let (columns, rows) = sample(proxy, table)
            .await
            .map_err(|e| format!("column discovery could not sample table {table}: {e}"))?;
        // Per column: the detectors that flagged its values, and how many values each.
        let mut found: BTreeMap<String, Report> = BTreeMap::new();
        for row in &rows {
            for (column, value) in columns.iter().zip(row) {
                let Some(value) = value else { continue };
                let end = value.len().min(SAMPLE_VALUE_BYTES);
                let text = String::from_utf8_lossy(&value[..end]);
                let report = found.entry(column.to_lowercase()).or_default();
                profile.scan_text(&text, column, report);
            }
        }
        let tagged: Vec<String> = found
            .iter()
            .filter(|(_, report)| !report.is_empty())
            .map(|(column, _)| column.clone())
            .collect();
        let findings: Vec<DataFinding> = found
            .values()
            .flat_map(|report| report.findings().iter())
            .map(|f| DataFinding {
                detector: f.detector.clone(),
                path: f.path.clone(),
                count: f.count,
            })
            .collect();
        {
            let mut tags = self.lock();
            let key = (name.to_string(), table.to_string());
            if rows.is_empty() {
                tags.empty.insert(key, Instant::now());
            } else {
                tags.empty.remove(&key);
                tags.profiles.entry(name.to_string()).or_default().insert(
                    table.to_string(),
                    TableTags {
                        columns: tagged.clone(),
                        rows: rows.len(),
                    },
                );
                self.persist(&tags)
                    .map_err(|e| format!("column discovery could not keep its tags: {e}"))?;
            }
        }
        let mut ev = proxy
            .guard
            .event(EventType::ColumnsDiscovered, Outcome::Success);
        ev.target = Some(proxy.target.clone());
        ev.action = Some("discover".into());
        ev.resource = Some(table.to_string());
        ev.detail = Some(format!(
            "masking profile {name}: sampled {} rows of {} columns; tagged {}",
            rows.len(),
            columns.len(),
            if tagged.is_empty() {
                "none".to_string()
            } else {
                tagged.join(", ")
            }
        ));
        ev.findings = (!findings.is_empty()).then_some(findings);
        proxy
            .guard
            .record(ev)
            .await
            .map_err(|e| format!("column discovery could not record its event: {e}"))?;
        Ok(tagged)
    }

    /// Written to a temporary file and renamed, so a crash leaves the old tags or the new.
    fn persist(&self, tags: &Tags) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(tags).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tags> {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Rows = Vec<Vec<Option<bytes::Bytes>>>;

/// The first [`SAMPLE_ROWS`] rows of `table`, read with the gateway's own credential on a
/// connection of its own.
async fn sample(proxy: &PgProxy, table: &str) -> Result<(Vec<String>, Rows), String> {
    let mut upstream = proxy
        .upstream
        .connect(&[("application_name", "portcullis-discovery")])
        .await
        .map_err(|e| e.to_string())?;
    let sql = format!("SELECT * FROM {} LIMIT {SAMPLE_ROWS}", quote_table(table));
    let result = upstream.rows(&sql).await.map_err(|e| e.to_string());
    let _ = upstream.terminate().await;
    result
}

/// `schema.table` as a quoted identifier: the classifier gives names as the server reads
/// them (unquoted ones folded to lower case), so each part is quoted exactly.
fn quote_table(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_part_by_part() {
        assert_eq!(quote_table("customers"), "\"customers\"");
        assert_eq!(quote_table("public.Mixed"), "\"public\".\"Mixed\"");
        assert_eq!(quote_table("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn tags_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let profiles: HashSet<String> = ["pii".to_string()].into();
        let d = Discovery::open(dir.path(), "db", profiles.clone()).unwrap();
        assert!(d.enabled("pii") && !d.enabled("other"));
        assert_eq!(d.known("pii", "customers"), None);
        {
            let mut tags = d.lock();
            tags.profiles.entry("pii".into()).or_default().insert(
                "customers".into(),
                TableTags {
                    columns: vec!["email".into()],
                    rows: 2,
                },
            );
            d.persist(&tags).unwrap();
        }
        let again = Discovery::open(dir.path(), "db", profiles).unwrap();
        assert_eq!(
            again.known("pii", "customers"),
            Some(vec!["email".to_string()])
        );
        assert_eq!(again.known("pii", "orders"), None);
    }
}
