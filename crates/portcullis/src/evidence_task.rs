//! The scheduled evidence run of `serve` (`[evidence] schedule`).
//!
//! One task sleeps until the schedule is next due, then has the documents of the period that
//! just ended written (`generate`), and goes back to sleep. At start it first catches up on
//! the latest run that was due while the gateway was down, unless that run's signed
//! documents are already in the output directory (`schedule::catch_up`).
//!
//! A failed run never takes the gateway down: it is logged as an error and tried again at the
//! next due time, before that time's own run. Only the latest failed run is kept for retry,
//! like the catch-up, so a long outage of the disk does not turn into a backlog at once;
//! older periods can be reported on demand (`portcullis evidence report`).
//!
//! The task knows nothing of how documents are made: `generate` is given a period and
//! returns the files it wrote. The clock is a parameter too, so a test can run a week of
//! schedule in a paused tokio runtime.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portcullis_audit::AuditLog;
use portcullis_audit::checkpoint::{Ed25519Signer, Verifier};
use portcullis_evidence::schedule::{self, Plan, Run};
use portcullis_evidence::{Period, documents, integrity, record};

/// The longest single sleep: the wall clock is read again after it, so a clock that jumps
/// (a suspended VM, an NTP step) delays a run by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Runs the schedule until the task is aborted.
pub async fn run<C, G, F, E>(plan: Plan, out_dir: PathBuf, settle: Duration, now: C, generate: G)
where
    C: Fn() -> DateTime<Utc>,
    G: Fn(Period) -> F,
    F: Future<Output = Result<Vec<PathBuf>, E>>,
    E: Display,
{
    let mut pending = match schedule::catch_up(&plan, now(), &out_dir) {
        Ok(missed) => missed,
        Err(e) => {
            tracing::error!(
                "evidence: the schedule cannot be evaluated, no reports will be written: {e}"
            );
            return;
        }
    };
    if let Some(run) = &pending {
        tracing::info!(since = %run.period.since, until = %run.period.until, "evidence: catching up on the run missed while the gateway was down");
    }
    let settle = chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::zero());
    loop {
        if let Some(run) = &pending {
            // A period is reported once it has settled (see `settle`), never earlier.
            sleep_until(run.period.until_time() + settle, &now).await;
        }
        if let Some(run) = pending.take()
            && !schedule::already_written(&out_dir, &run.period)
            && !attempt(&run, &generate).await
        {
            pending = Some(run);
        }
        let next = match schedule::next_run(&plan, now()) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(
                    "evidence: the schedule has no next run, no more reports will be written: {e}"
                );
                return;
            }
        };
        sleep_until(next.at + settle, &now).await;
        // A run that failed last time is tried again first; if it fails again it is dropped
        // for this one (only the latest failure is kept).
        if let Some(failed) = pending.take()
            && !schedule::already_written(&out_dir, &failed.period)
        {
            attempt(&failed, &generate).await;
        }
        pending = Some(next);
    }
}

/// Makes one run; whether it succeeded.
async fn attempt<G, F, E>(run: &Run, generate: &G) -> bool
where
    G: Fn(Period) -> F,
    F: Future<Output = Result<Vec<PathBuf>, E>>,
    E: Display,
{
    let (since, until) = (&run.period.since, &run.period.until);
    tracing::info!(%since, %until, "evidence: writing the scheduled documents");
    match generate(run.period.clone()).await {
        Ok(files) => {
            tracing::info!(%since, %until, documents = files.len(), "evidence: scheduled documents written and signed");
            true
        }
        Err(e) => {
            tracing::error!(%since, %until, "evidence: the scheduled documents could not be written, trying again at the next run: {e}");
            false
        }
    }
}

async fn sleep_until(at: DateTime<Utc>, now: &impl Fn() -> DateTime<Utc>) {
    loop {
        let left = (at - now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_SLEEP)).await;
    }
}

/// What a scheduled run needs to write and vouch for its documents.
pub struct Writer {
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub signer: Arc<Ed25519Signer>,
    pub audit: AuditLog,
    /// The log's own verifier key, published checkpoint directories and witness keys: what
    /// the report's verification runs with.
    pub key: Verifier,
    pub published: Vec<PathBuf>,
    pub witness_keys: Vec<PathBuf>,
    pub options: portcullis_evidence::collect::Options,
    /// The documents each run writes.
    pub formats: Vec<documents::Format>,
}

impl Writer {
    /// The generator `serve` plugs into [`run`]: every document of `[evidence] formats` for
    /// `period`, named by the period (`schedule::period_stem`), each signed and recorded as
    /// an `evidence.report` event.
    pub async fn write(self: Arc<Self>, period: Period) -> Result<Vec<PathBuf>, String> {
        // Sign what is in the log now, so that the report's events are covered by a
        // checkpoint: a gateway's first start has none yet, and a log nothing signed does not
        // verify.
        if let Err(e) = self.audit.checkpoint_now().await {
            tracing::warn!("evidence: cannot sign a checkpoint before the report: {e}");
        }
        let this = self.clone();
        let (report, documents) = tokio::task::spawn_blocking(move || {
            let witnesses = this
                .witness_keys
                .iter()
                .map(|path| portcullis_audit::keys::load_cosignature_verifier(path))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            // A publication directory still empty (the first checkpoint is being published
            // as this runs) has nothing to hold the log against yet.
            let published = this
                .published
                .iter()
                .filter(|dir| has_checkpoint_file(dir))
                .cloned()
                .collect();
            let inputs = integrity::VerifyInputs {
                key: this.key.clone(),
                published,
                witnesses,
            };
            let report =
                portcullis_evidence::build_report(&this.data_dir, period, &inputs, &this.options)
                    .map_err(|e| e.to_string())?;
            let documents = documents::render_all(
                &report,
                &this.formats,
                &schedule::period_stem(&report.period),
                env!("CARGO_PKG_VERSION"),
            );
            Ok::<_, String>((report, documents))
        })
        .await
        .map_err(|e| format!("the report task failed: {e}"))??;
        if !report.integrity.verified {
            tracing::error!(
                failure = report.integrity.failure.as_deref().unwrap_or("not checked"),
                "evidence: the audit log does NOT verify; the report of {} to {} leads with it",
                report.period.since,
                report.period.until
            );
        }
        let mut written = Vec::new();
        let mut manifest = String::new();
        for document in documents {
            manifest.push_str(&format!(
                "{}  {}\n",
                documents::sha256_hex(&document.bytes),
                document.file
            ));
            let path = self.out_dir.join(&document.file);
            written.extend(
                self.vouch(
                    &path,
                    &document.bytes,
                    document.document,
                    document.format,
                    &report.period,
                )
                .await?,
            );
        }
        // Last: the run is finished only once every document is written, recorded and
        // signed (a `sha256sum -c` list of them).
        let done = schedule::completion_marker(&self.out_dir, &report.period);
        documents::write_atomically(&done, manifest.as_bytes()).map_err(|e| e.to_string())?;
        written.push(done);
        Ok(written)
    }

    /// Writes a document, signs it, records its `evidence.report` event; returns the paths.
    async fn vouch(
        &self,
        path: &Path,
        bytes: &[u8],
        document: &str,
        format: &str,
        period: &Period,
    ) -> Result<Vec<PathBuf>, String> {
        documents::write_atomically(path, bytes).map_err(|e| e.to_string())?;
        let sig = record::vouch(
            &self.audit,
            self.signer.as_ref(),
            path,
            (document, format),
            Some(period),
            bytes,
        )
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(vec![path.to_path_buf(), sig])
    }
}

/// Whether `dir` holds a published checkpoint (`*.checkpoint`).
fn has_checkpoint_file(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "checkpoint"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_config::Schedule;
    use std::sync::Mutex;

    /// UTC time that follows tokio's (paused) clock from `start`.
    fn clock(start: &str) -> impl Fn() -> DateTime<Utc> + Clone + use<> {
        let start = portcullis_evidence::period::parse_time(start).unwrap();
        let origin = tokio::time::Instant::now();
        move || start + chrono::Duration::from_std(origin.elapsed()).unwrap()
    }

    fn period(since: &str, until: &str) -> Period {
        Period::parse(since, until).unwrap()
    }

    /// A period asked for, and when.
    type Call = (Period, DateTime<Utc>);

    /// A generator that records the periods asked and the time asked, writes a signature
    /// marker named as real runs are (so catch-up sees it), and fails when told to.
    #[derive(Clone)]
    struct Fake {
        out_dir: PathBuf,
        calls: Arc<Mutex<Vec<Call>>>,
        fail_first: Arc<Mutex<u32>>,
    }

    impl Fake {
        fn new(out_dir: &Path, fail_first: u32) -> Fake {
            Fake {
                out_dir: out_dir.to_path_buf(),
                calls: Arc::default(),
                fail_first: Arc::new(Mutex::new(fail_first)),
            }
        }

        async fn generate(
            &self,
            period: Period,
            at: DateTime<Utc>,
        ) -> Result<Vec<PathBuf>, String> {
            self.calls.lock().unwrap().push((period.clone(), at));
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err("disk full".into());
            }
            let done = schedule::completion_marker(&self.out_dir, &period);
            std::fs::write(&done, "done").unwrap();
            Ok(vec![done])
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn spawn(plan: Plan, start: &str, fake: &Fake) -> tokio::task::JoinHandle<()> {
        spawn_settling(plan, start, fake, Duration::ZERO)
    }

    fn spawn_settling(
        plan: Plan,
        start: &str,
        fake: &Fake,
        settle: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let now = clock(start);
        let (fake, out_dir) = (fake.clone(), fake.out_dir.clone());
        tokio::spawn(run(plan, out_dir, settle, now.clone(), move |p| {
            let (fake, at) = (fake.clone(), now());
            async move { fake.generate(p, at).await }
        }))
    }

    fn t(text: &str) -> DateTime<Utc> {
        portcullis_evidence::period::parse_time(text).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn daily_runs_catch_up_at_start_then_fire_at_midnight_for_the_day_before() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(dir.path(), 0);
        let task = spawn(Plan::Daily, "2026-12-06T22:00:00Z", &fake);
        // Two days of paused time (to 8 December, 23:00): the runtime skips the sleeps.
        tokio::time::sleep(Duration::from_secs(49 * 3600)).await;
        task.abort();
        let calls = fake.calls();
        let periods: Vec<Period> = calls.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            periods,
            vec![
                period("2026-12-05", "2026-12-06"), // the catch-up, at start
                period("2026-12-06", "2026-12-07"),
                period("2026-12-07", "2026-12-08"),
            ]
        );
        assert_eq!(calls[0].1, t("2026-12-06T22:00:00Z"));
        // Each run fires at its period's end, not before, and not a minute later.
        for (p, at) in &calls[1..] {
            assert!(*at >= p.until_time(), "{at} before {}", p.until);
            assert!(*at - p.until_time() < chrono::Duration::seconds(1), "{at}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_period_is_reported_only_once_it_has_settled() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new(dir.path(), 0);
        // Started ten minutes after midnight with half an hour to settle: yesterday's
        // report waits until 00:30, today's is made at 00:30 tomorrow.
        let settle = Duration::from_secs(30 * 60);
        let task = spawn_settling(Plan::Daily, "2026-12-06T00:10:00Z", &fake, settle);
        tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
        task.abort();
        let calls = fake.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        for (p, at) in &calls {
            let settled = p.until_time() + chrono::Duration::minutes(30);
            assert!(*at >= settled, "{at} before {settled}");
            assert!(*at - settled < chrono::Duration::seconds(61), "{at}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_already_written_is_not_caught_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let stem = schedule::period_stem(&period("2026-12-05", "2026-12-06"));
        std::fs::write(dir.path().join(format!("{stem}.complete")), "x").unwrap();
        let fake = Fake::new(dir.path(), 0);
        let task = spawn(Plan::Daily, "2026-12-06T22:00:00Z", &fake);
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        task.abort();
        let periods: Vec<Period> = fake.calls().into_iter().map(|(p, _)| p).collect();
        assert_eq!(periods, vec![period("2026-12-06", "2026-12-07")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_run_is_logged_and_tried_again_at_the_next_run_and_the_task_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        // The first two attempts fail: the catch-up, and its retry at the next midnight.
        let fake = Fake::new(dir.path(), 2);
        let plan = Plan::new(&Schedule::Cron("0 */6 * * *".into())).unwrap();
        let task = spawn(plan, "2026-12-06T05:00:00Z", &fake);
        tokio::time::sleep(Duration::from_secs(12 * 3600)).await; // to 17:00
        assert!(!task.is_finished(), "a failure does not end the task");
        task.abort();
        let periods: Vec<Period> = fake.calls().into_iter().map(|(p, _)| p).collect();
        let six = |h: &str| format!("2026-12-06T{h}:00:00Z");
        assert_eq!(
            periods,
            vec![
                // At start (05:00): the 00:00 run, for 18:00..00:00, fails.
                period("2026-12-05T18:00:00Z", &six("00")),
                // At 06:00: tried again, fails again and is dropped; then 00:00..06:00.
                period("2026-12-05T18:00:00Z", &six("00")),
                period(&six("00"), &six("06")),
                // At 12:00: the next period, once.
                period(&six("06"), &six("12")),
            ]
        );
    }
}
