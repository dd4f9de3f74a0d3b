//! `portcullis audit verify`, `audit proof` and `audit verify-proof`, run as the real binary
//! against a real signed log and against copies of it tampered with the way an attacker with
//! the disk would: dropping the append-only triggers, then editing, deleting, reordering,
//! truncating, rolling back or forging.
//!
//! The fixture log (307 events, a checkpoint every 25 up to 300, all 12 cosigned by a
//! witness) is built once through `AuditLog::open_signed`; every case works on its own copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use portcullis_audit::keys::{self, KeyKind};
use portcullis_audit::merkle::{self, Frontier, Hash};
use portcullis_audit::witness::{self, Witness};
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::Durability;
use portcullis_model::{EventType, Outcome};
use rusqlite::{Connection, params};

const ORIGIN: &str = "portcullis.test/gw-1";
const KEY_NAME: &str = "test-gw";
const WITNESS_NAME: &str = "witness-1";
const EVERY: u64 = 25;
/// Events in the fixture log; the last 7 are after the newest checkpoint (300).
const EVENTS: u64 = 307;
/// Where the fixture's data directory was copied to make the rollback copy.
const OLD_SIZE: u64 = 200;

/// The fixture: a directory holding `data/` (the log), `old-data/` (a copy taken at 200
/// events), `keys/` (audit and witness key pairs), `published/` (every checkpoint as the
/// directory sink writes it) and `witness/` (the witness's state).
fn fixture() -> &'static Path {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Statics are never dropped, so a temporary directory would outlive every run. One
        // fixed directory under cargo's scratch space instead, rebuilt by each run.
        // One per process: nextest runs each test in a process of its own, and they must not
        // rebuild one shared directory under each other. Old ones are cleared away.
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(&scratch) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(3600));
                if old
                    && entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("audit_verify_fixture")
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let root = scratch.join(format!("audit_verify_fixture-{}", std::process::id()));
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        std::thread::spawn({
            let root = root.clone();
            move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(build_fixture(&root))
            }
        })
        .join()
        .unwrap();
        root
    })
}

fn signing_settings(keys_dir: &Path) -> CheckpointSettings {
    let signer = keys::load_signer(keys_dir, keys::AUDIT_KEY).unwrap();
    CheckpointSettings {
        origin: ORIGIN.into(),
        signer: Arc::new(signer),
        interval: Duration::from_secs(3600),
        every: EVERY,
    }
}

async fn build_fixture(root: &Path) {
    let keys_dir = root.join("keys");
    keys::generate(&keys_dir, keys::AUDIT_KEY, KEY_NAME).unwrap();
    keys::generate_kind(
        &keys_dir,
        keys::WITNESS_KEY,
        WITNESS_NAME,
        KeyKind::Cosignature,
    )
    .unwrap();
    let data = root.join("data");
    write_events(&data, &signing_settings(&keys_dir), Phase::First).await;
    copy_dir(&data, &root.join("old-data"));
    write_events(&data, &signing_settings(&keys_dir), Phase::Second).await;
    write_events(&data, &signing_settings(&keys_dir), Phase::Unsigned).await;

    // Publish every stored checkpoint the way the directory sink does, and feed them in
    // order to a real witness, storing its cosignatures beside them.
    let published = root.join("published");
    std::fs::create_dir_all(&published).unwrap();
    let checkpoints = stored_checkpoints(&data);
    assert_eq!(checkpoints.len() as u64, EVENTS / EVERY);
    let leaves = leaf_hashes(&data);
    let witness_signer =
        keys::load_signer_kind(&keys_dir, keys::WITNESS_KEY, KeyKind::Cosignature).unwrap();
    let log_key = keys::load_verifier(&keys_dir.join("audit.pub")).unwrap();
    let witness = Witness::open(
        Box::new(witness_signer),
        vec![log_key],
        &root.join("witness"),
    )
    .unwrap();
    let log = AuditLog::open(&data, "gw-1", Durability::Strict).unwrap();
    let mut old = 0;
    for (i, (size, note)) in checkpoints.iter().enumerate() {
        std::fs::write(published.join(format!("{size:020}.checkpoint")), note).unwrap();
        let proof = merkle::consistency_proof(old as usize, &leaves[..*size as usize]);
        let request = witness::request_body(old, &proof, note);
        let cosigned = witness
            .add_checkpoint_at(request.as_bytes(), 1_800_000_000 + i as u64)
            .unwrap();
        log.store_cosignature(*size, WITNESS_NAME, &cosigned.signatures)
            .await
            .unwrap();
        old = *size;
    }
    log.close().await.unwrap();
}

#[derive(Clone, Copy)]
enum Phase {
    First,
    Second,
    Unsigned,
}

/// Phase one (events 1..=200): a gateway run with 16 sessions of 12 events and a few
/// requests outside sessions. Phase two (201..=300): 4 more sessions and the stop, a run that
/// crashes with a session open, and a third run with one session open. Each phase ends with
/// a clean close, which signs a checkpoint. The unsigned phase (301..=307) adds events no
/// checkpoint covers yet, as in a gateway that is still running.
async fn write_events(data: &Path, settings: &CheckpointSettings, phase: Phase) {
    let log = match phase {
        Phase::Unsigned => AuditLog::open(data, "gw-1", Durability::Batched),
        _ => AuditLog::open_signed(data, "gw-1", Durability::Batched, settings.clone()),
    }
    .unwrap();
    let record = |event_type: EventType, session: Option<&str>| {
        let mut event = log.event(
            event_type,
            if event_type == EventType::Request {
                Outcome::Success
            } else {
                Outcome::Info
            },
        );
        event.session = session.map(str::to_string);
        if event_type == EventType::Request {
            event.target = Some("crm".into());
            event.action = Some("tools/call".into());
            event.resource = Some("lookup".into());
            event.identity = Some(portcullis_model::Identity {
                issuer: "portcullis:api-key".into(),
                subject: "agent-7".into(),
                display_name: None,
                kind: portcullis_model::IdentityKind::Agent,
                groups: vec!["agents".into()],
                auth_method: portcullis_model::AuthMethod::ApiKey,
                credential_id: None,
                act: vec![],
            });
        }
        let log = log.clone();
        async move { log.record(event).await.unwrap() }
    };
    let session = |n: u32| format!("s-{n:04}");
    match phase {
        Phase::First => {
            record(EventType::GatewayStart, None).await;
            for n in 0..16 {
                let s = session(n);
                record(EventType::SessionStart, Some(&s)).await;
                for _ in 0..10 {
                    record(EventType::Request, Some(&s)).await;
                }
                record(EventType::SessionEnd, Some(&s)).await;
            }
            for _ in 0..6 {
                record(EventType::Request, None).await;
            }
            assert_eq!(record(EventType::AuthFailure, None).await, OLD_SIZE);
        }
        Phase::Second => {
            for n in 16..20 {
                let s = session(n);
                record(EventType::SessionStart, Some(&s)).await;
                for _ in 0..10 {
                    record(EventType::Request, Some(&s)).await;
                }
                record(EventType::SessionEnd, Some(&s)).await;
            }
            record(EventType::Request, None).await;
            record(EventType::Request, None).await;
            assert_eq!(record(EventType::GatewayStop, None).await, 251);
            record(EventType::GatewayStart, None).await;
            record(EventType::SessionStart, Some("crashed-1")).await;
            for _ in 0..5 {
                record(EventType::Request, Some("crashed-1")).await;
            }
            assert_eq!(record(EventType::GatewayStart, None).await, 259);
            record(EventType::SessionStart, Some("open-1")).await;
            for _ in 0..40 {
                record(EventType::Request, Some("open-1")).await;
            }
        }
        Phase::Unsigned => {
            for _ in 0..7 {
                record(EventType::Request, Some("open-1")).await;
            }
        }
    }
    log.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                // A SQLite side file (`-wal`, `-shm`) of the shared fixture can vanish
                // between the listing and the copy when another test closes its reader.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("copying {}: {e}", entry.path().display()),
            }
            // Published files may be read-only; the copies are ours to edit. Only the owner
            // gets write access: the key loader refuses keys others could read or write.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&target).unwrap().permissions().mode();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o200))
                    .unwrap();
            }
        }
    }
}

/// A private copy of the fixture for one case.
struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        copy_dir(fixture(), &root);
        Case { _dir: dir, root }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn published(&self) -> PathBuf {
        self.root.join("published")
    }

    fn pubkey(&self) -> PathBuf {
        self.root.join("keys").join("audit.pub")
    }

    fn witness_key(&self) -> PathBuf {
        self.root.join("keys").join("witness.pub")
    }

    /// The database, opened for writing as an attacker would.
    fn db(&self) -> Connection {
        Connection::open(self.data().join("audit.db")).unwrap()
    }

    fn published_file(&self, size: u64) -> PathBuf {
        self.published().join(format!("{size:020}.checkpoint"))
    }

    /// `audit verify` with the published checkpoints.
    fn verify(&self) -> Outcome3 {
        run(&[
            "audit",
            "verify",
            "--data-dir",
            s(&self.data()),
            "--pubkey",
            s(&self.pubkey()),
            "--checkpoints",
            s(&self.published()),
        ])
    }

    /// `audit verify` without any published checkpoint: the database alone.
    fn verify_db_only(&self) -> Outcome3 {
        run(&[
            "audit",
            "verify",
            "--data-dir",
            s(&self.data()),
            "--pubkey",
            s(&self.pubkey()),
        ])
    }

    fn id_of(&self, seq: u64) -> String {
        self.db()
            .query_row("SELECT id FROM events WHERE seq = ?1", [seq as i64], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// Brings the tree state in line with the events, as a careful attacker would after
    /// rewriting them (the gateway rebuilds from it, and the verifier compares it).
    fn fix_tree_state(&self) {
        let db = self.db();
        let mut frontier = Frontier::new();
        for leaf in leaf_hashes(&self.data()) {
            frontier.append(leaf);
        }
        db.execute(
            "UPDATE tree_state SET size = ?1, nodes = ?2 WHERE id = 1",
            params![frontier.size() as i64, frontier.nodes().concat()],
        )
        .unwrap();
    }

    /// Removes every event after `size`, with the checkpoints and cosignatures beyond it,
    /// and fixes the tree state: a truncation nothing inside the database contradicts.
    fn truncate(&self, size: u64) {
        let db = self.db();
        db.execute_batch(
            "DROP TRIGGER events_no_delete; DROP TRIGGER checkpoints_no_delete; \
             DROP TRIGGER cosignatures_no_delete;",
        )
        .unwrap();
        db.execute("DELETE FROM events WHERE seq > ?1", [size as i64])
            .unwrap();
        db.execute("DELETE FROM cosignatures WHERE size > ?1", [size as i64])
            .unwrap();
        db.execute("DELETE FROM checkpoints WHERE size > ?1", [size as i64])
            .unwrap();
        drop(db);
        self.fix_tree_state();
    }
}

/// Exit code, stdout, stderr.
struct Outcome3 {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome3 {
    #[track_caller]
    fn invalid(&self, needles: &[&str]) {
        assert_eq!(
            self.code, 1,
            "expected exit 1; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with("audit log INVALID: "),
            "stderr: {}",
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{needle:?} not in: {}",
                self.stderr
            );
        }
    }

    #[track_caller]
    fn ok(&self) {
        assert_eq!(
            self.code, 0,
            "expected exit 0; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stdout.starts_with("audit log OK: "), "{}", self.stdout);
    }
}

fn run(args: &[&str]) -> Outcome3 {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap();
    Outcome3 {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stored_checkpoints(data: &Path) -> Vec<(u64, String)> {
    let db = Connection::open(data.join("audit.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Leaf hashes recomputed from the bodies (not the stored hashes).
fn leaf_hashes(data: &Path) -> Vec<Hash> {
    let db = Connection::open(data.join("audit.db")).unwrap();
    let mut stmt = db.prepare("SELECT body FROM events ORDER BY seq").unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|body| merkle::leaf_hash(&body.unwrap()))
        .collect()
}

/// Changes one base64 character in the middle of a line, keeping it valid base64.
fn flip_base64_char(line: &str, at: usize) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A note with one character of its root line changed.
fn edit_root(note: &str) -> String {
    let mut lines: Vec<String> = note.split('\n').map(str::to_string).collect();
    lines[2] = flip_base64_char(&lines[2], 5);
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------
// The pristine log
// ---------------------------------------------------------------------------------------

#[test]
fn pristine_log_verifies_with_the_expected_summary() {
    let case = Case::new();
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.pubkey()),
        "--checkpoints",
        s(&case.published()),
        "--checkpoints",
        s(&case.root.join("witness")),
        "--witness-key",
        s(&case.witness_key()),
    ]);
    out.ok();
    let root = merkle::root(&leaf_hashes(&case.data()));
    let db = case.db();
    let (first, last): (String, String) = db
        .query_row(
            "SELECT (SELECT time FROM events WHERE seq = 1), \
             (SELECT time FROM events WHERE seq = 307)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let expected = format!(
        "audit log OK: 307 events; 22 sessions (1 open at the end, 1 left open by a crash); \
         checkpoints: 12 stored, 13 published, 12 cosigned (7 newest events not yet signed); \
         from {first} to {last}; root {}\n",
        B64.encode(root)
    );
    assert_eq!(out.stdout, expected);
    // The crashed run is a warning, not a failure.
    assert!(
        out.stderr
            .contains("warning: gateway.start at event 259: 1 session(s) were still open"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("crashed-1 (from event 253)"));
}

#[test]
fn unchecked_cosignatures_and_other_logs_are_reported_not_fatal() {
    let case = Case::new();
    // A checkpoint of another log in the same directory is skipped.
    let stranger = case.root.join("stranger");
    keys::generate(&stranger, keys::AUDIT_KEY, "other-gw").unwrap();
    let signer = keys::load_signer(&stranger, keys::AUDIT_KEY).unwrap();
    let body = portcullis_audit::checkpoint::Checkpoint {
        origin: "portcullis.test/other".into(),
        size: 5,
        root: [7; 32],
    }
    .body();
    let note = portcullis_audit::checkpoint::sign_note(&body, &[&signer]).unwrap();
    std::fs::write(case.published().join("other.checkpoint"), note).unwrap();
    let out = case.verify();
    out.ok();
    assert!(out.stdout.contains("0 cosigned"), "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "12 cosignature(s) by witnesses whose keys were not given were not checked \
             (give --witness-key for: witness-1)"
        ),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// The tamper matrix
// ---------------------------------------------------------------------------------------

#[test]
fn one_byte_changed_in_a_body_is_found_at_that_event() {
    let case = Case::new();
    let id = case.id_of(100);
    let db = case.db();
    db.execute_batch("DROP TRIGGER events_no_update").unwrap();
    let mut body: Vec<u8> = db
        .query_row("SELECT body FROM events WHERE seq = 100", [], |r| r.get(0))
        .unwrap();
    let at = body.windows(6).position(|w| w == b"lookup").unwrap();
    body[at] = b'L';
    db.execute("UPDATE events SET body = ?1 WHERE seq = 100", [&body])
        .unwrap();
    case.verify().invalid(&[&format!(
        "event 100 (id {id}): its body does not hash to its stored leaf hash"
    )]);

    // Rehashing the edited body moves the evidence to the checkpoint that signed it.
    db.execute(
        "UPDATE events SET leaf_hash = ?1 WHERE seq = 100",
        [merkle::leaf_hash(&body).to_vec()],
    )
    .unwrap();
    case.verify().invalid(&[
        "stored checkpoint at size 100: the events do not produce the root it signs",
        "an event in 76..100 was changed",
    ]);
}

#[test]
fn a_deleted_event_is_found_as_a_gap_or_by_the_next_checkpoint() {
    let case = Case::new();
    let db = case.db();
    db.execute_batch("DROP TRIGGER events_no_delete; DROP TRIGGER events_no_update")
        .unwrap();
    db.execute("DELETE FROM events WHERE seq = 120", [])
        .unwrap();
    case.verify().invalid(&[
        "event 120: missing: the log jumps from event 119 to event 121, so this event was deleted",
    ]);

    // Renumbering the rest closes the gap; the checkpoint over that range still differs.
    for seq in 121..=EVENTS as i64 {
        db.execute("UPDATE events SET seq = ?1 WHERE seq = ?2", [seq - 1, seq])
            .unwrap();
    }
    drop(db);
    case.fix_tree_state();
    case.verify().invalid(&[
        "stored checkpoint at size 125: the events do not produce the root it signs",
        "an event in 101..125 was changed, removed, inserted or reordered",
    ]);
}

#[test]
fn two_swapped_events_are_found_by_the_checkpoint_over_them() {
    let case = Case::new();
    let db = case.db();
    db.execute_batch("DROP TRIGGER events_no_update").unwrap();
    db.execute("UPDATE events SET seq = -1 WHERE seq = 140", [])
        .unwrap();
    db.execute("UPDATE events SET seq = 140 WHERE seq = 141", [])
        .unwrap();
    db.execute("UPDATE events SET seq = 141 WHERE seq = -1", [])
        .unwrap();
    case.verify().invalid(&[
        "stored checkpoint at size 150",
        "an event in 126..150 was changed, removed, inserted or reordered",
    ]);
}

#[test]
fn a_log_without_any_checkpoint_is_not_vouched_for() {
    // Deleting every checkpoint along with a rewrite: the database alone vouches for nothing.
    let case = Case::new();
    case.db()
        .execute_batch(
            "DROP TRIGGER cosignatures_no_delete; DROP TRIGGER checkpoints_no_delete; \
             DELETE FROM cosignatures; DELETE FROM checkpoints;",
        )
        .unwrap();
    case.verify_db_only().invalid(&[
        "audit log INVALID: no checkpoint signed by",
        "nothing but the database itself vouches for them",
    ]);
    // Published directories that hold nothing of this log did not check anything.
    let case = Case::new();
    let empty = case.root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.pubkey()),
        "--checkpoints",
        s(&empty),
    ])
    .invalid(&["no checkpoint of this log was found in the published directories given"]);
}

#[test]
fn a_truncated_tail_is_caught_by_the_published_checkpoints() {
    let case = Case::new();
    case.truncate(280);
    // The database alone cannot tell: everything in it is consistent.
    case.verify_db_only().ok();
    case.verify().invalid(&[&format!(
        "audit log INVALID: the log has 280 events but a checkpoint published at {} covers 300: \
         the log was truncated or rolled back",
        case.published_file(300).display()
    )]);
}

#[test]
fn a_truncated_and_rewritten_tail_is_caught_by_the_published_checkpoints() {
    let case = Case::new();
    case.truncate(280);
    // Different events appended, with checkpoints signed by the real (stolen) key.
    let keys_dir = case.root.join("keys");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let log = AuditLog::open_signed(
            &case.data(),
            "gw-1",
            Durability::Strict,
            signing_settings(&keys_dir),
        )
        .unwrap();
        for _ in 0..30 {
            log.record(log.event(EventType::AuthFailure, Outcome::Rejected))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    });
    case.verify_db_only().ok();
    case.verify().invalid(&[
        &format!(
            "the log does not match the checkpoint published at {}",
            case.published_file(300).display()
        ),
        "an event in 276..300 was changed, removed, inserted or reordered after it was published",
        "so they were signed again with the log's key: treat the key as compromised",
    ]);
}

#[test]
fn a_log_forged_with_another_key_is_refused() {
    let case = Case::new();
    let forged = case.root.join("forged");
    let forger_keys = forged.join("keys");
    // Same key name, same origin, same shape: only the key differs.
    keys::generate(&forger_keys, keys::AUDIT_KEY, KEY_NAME).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let settings = signing_settings(&forger_keys);
        write_events(&forged.join("data"), &settings, Phase::First).await;
        write_events(&forged.join("data"), &settings, Phase::Second).await;
    });
    for checkpoints in [None, Some(case.published())] {
        let mut args = vec![
            "audit".to_string(),
            "verify".into(),
            "--data-dir".into(),
            s(&forged.join("data")).into(),
            "--pubkey".into(),
            s(&case.pubkey()).into(),
        ];
        if let Some(dir) = &checkpoints {
            args.extend(["--checkpoints".into(), s(dir).into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args).invalid(&[
            "stored checkpoint at size 25: the note carries no signature by test-gw: it was \
             signed with another key (forged)",
        ]);
    }
}

#[test]
fn a_rolled_back_data_directory_is_caught_by_published_and_witnessed_checkpoints() {
    let case = Case::new();
    std::fs::remove_dir_all(case.data()).unwrap();
    std::fs::rename(case.root.join("old-data"), case.data()).unwrap();
    // The older copy is a perfectly good log of 200 events on its own.
    case.verify_db_only().ok();
    case.verify().invalid(&[&format!(
        "the log has {OLD_SIZE} events but a checkpoint published at {} covers 300: the log \
         was truncated or rolled back",
        case.published_file(300).display()
    )]);

    // The witness's state file is enough on its own.
    let witness_dir = case.root.join("witness");
    let state: Vec<PathBuf> = std::fs::read_dir(&witness_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(state.len(), 1, "{state:?}");
    run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.pubkey()),
        "--checkpoints",
        s(&witness_dir),
        "--witness-key",
        s(&case.witness_key()),
    ])
    .invalid(&[&format!(
        "the log has {OLD_SIZE} events but a checkpoint published at {} covers 300",
        state[0].display()
    )]);
}

#[test]
fn an_edited_published_checkpoint_is_named() {
    let case = Case::new();
    let file = case.published_file(100);
    let note = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, edit_root(&note)).unwrap();
    case.verify().invalid(&[&format!(
        "the checkpoint published at {} does not verify: the signature by test-gw does not \
         match its text, so the file was edited",
        file.display()
    )]);
}

#[test]
fn a_published_checkpoint_of_this_log_signed_by_another_key_is_refused() {
    let case = Case::new();
    let other = case.root.join("other-keys");
    keys::generate(&other, keys::AUDIT_KEY, "someone-else").unwrap();
    let signer = keys::load_signer(&other, keys::AUDIT_KEY).unwrap();
    let body = portcullis_audit::checkpoint::Checkpoint {
        origin: ORIGIN.into(),
        size: 400,
        root: [1; 32],
    }
    .body();
    let file = case.published_file(400);
    std::fs::write(
        &file,
        portcullis_audit::checkpoint::sign_note(&body, &[&signer]).unwrap(),
    )
    .unwrap();
    case.verify().invalid(&[&format!(
        "the checkpoint published at {} names this log (portcullis.test/gw-1) but is not signed \
         by test-gw",
        file.display()
    )]);
}

#[test]
fn an_edited_stored_checkpoint_is_named() {
    let case = Case::new();
    let db = case.db();
    db.execute_batch("DROP TRIGGER checkpoints_no_update")
        .unwrap();
    let note: String = db
        .query_row("SELECT note FROM checkpoints WHERE size = 50", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE checkpoints SET note = ?1 WHERE size = 50",
        [edit_root(&note)],
    )
    .unwrap();
    case.verify().invalid(&[
        "stored checkpoint at size 50: the signature by test-gw does not verify: the note was \
         edited",
    ]);
}

#[test]
fn an_edited_cosignature_is_named_when_the_witness_key_is_given() {
    let case = Case::new();
    let db = case.db();
    db.execute_batch("DROP TRIGGER cosignatures_no_update")
        .unwrap();
    let line: String = db
        .query_row("SELECT line FROM cosignatures WHERE size = 50", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE cosignatures SET line = ?1 WHERE size = 50",
        [flip_base64_char(&line, 60)],
    )
    .unwrap();
    run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.pubkey()),
        "--witness-key",
        s(&case.witness_key()),
    ])
    .invalid(&["cosignature by witness-1 of the checkpoint at size 50: it does not verify"]);
}

#[test]
fn an_edited_index_column_is_found() {
    let case = Case::new();
    let id = case.id_of(150);
    let db = case.db();
    db.execute_batch("DROP TRIGGER events_no_update").unwrap();
    db.execute("UPDATE events SET subject = 'mallory' WHERE seq = 150", [])
        .unwrap();
    case.verify().invalid(&[&format!(
        "event 150 (id {id}): the indexed column subject says \"mallory\" but the body says \
         \"agent-7\""
    )]);
}

#[test]
fn a_stale_tree_state_is_found() {
    let case = Case::new();
    case.db()
        .execute("UPDATE tree_state SET size = 306 WHERE id = 1", [])
        .unwrap();
    case.verify().invalid(&[
        "stored tree state: it says size 306",
        "the events give size 307",
    ]);
}

#[test]
fn bad_inputs_exit_2() {
    let case = Case::new();
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.root.join("nope.pub")),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: --pubkey: "),
        "{}",
        out.stderr
    );
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.data()),
        "--pubkey",
        s(&case.pubkey()),
        "--checkpoints",
        s(&case.root.join("nope")),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // A missing log is not a valid log.
    let out = run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&case.root.join("empty")),
        "--pubkey",
        s(&case.pubkey()),
    ]);
    out.invalid(&["no audit log at"]);
}

// ---------------------------------------------------------------------------------------
// Session records
// ---------------------------------------------------------------------------------------

/// Writes a log of `(type, session)` events, signed at its close, and runs `audit verify` on
/// it.
fn verify_sessions(events: &[(EventType, Option<&str>)]) -> Outcome3 {
    let case = Case::new();
    let dir = case.root.join("sessions");
    let settings = signing_settings(&case.root.join("keys"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let log = AuditLog::open_signed(&dir, "gw-1", Durability::Batched, settings).unwrap();
        for (event_type, session) in events {
            let mut event = log.event(*event_type, Outcome::Info);
            event.session = session.map(str::to_string);
            log.record(event).await.unwrap();
        }
        log.close().await.unwrap();
    });
    run(&[
        "audit",
        "verify",
        "--data-dir",
        s(&dir),
        "--pubkey",
        s(&case.pubkey()),
    ])
}

#[test]
fn session_records_must_pair_up() {
    use EventType::*;
    let out = verify_sessions(&[(GatewayStart, None), (SessionEnd, Some("a"))]);
    out.invalid(&[
        "event 2 (id ",
        "a session.end for session a without a prior session.start",
    ]);

    let out = verify_sessions(&[
        (SessionStart, Some("a")),
        (SessionEnd, Some("a")),
        (SessionStart, Some("a")),
    ]);
    out.invalid(&[
        "event 3 (id ",
        "a second session.start for session a (the first is event 1)",
    ]);

    let out = verify_sessions(&[
        (GatewayStart, None),
        (SessionStart, Some("a")),
        (SessionStart, Some("b")),
        (SessionEnd, Some("b")),
        (GatewayStop, None),
    ]);
    out.invalid(&[
        "event 5 (id ",
        "gateway.stop while session a (started at event 2) is still open: its session.end is \
         missing",
    ]);

    // A crash (no gateway.stop) is only a warning; the abandoned session cannot end later.
    let out = verify_sessions(&[
        (GatewayStart, None),
        (SessionStart, Some("a")),
        (GatewayStart, None),
        (SessionStart, Some("b")),
    ]);
    out.ok();
    assert!(
        out.stdout
            .contains("2 sessions (1 open at the end, 1 left open by a crash)")
    );
    let out = verify_sessions(&[
        (GatewayStart, None),
        (SessionStart, Some("a")),
        (GatewayStart, None),
        (SessionEnd, Some("a")),
    ]);
    out.invalid(&[
        "event 4 (id ",
        "left open by a gateway run that ended without gateway.stop",
    ]);
}

// ---------------------------------------------------------------------------------------
// Proofs
// ---------------------------------------------------------------------------------------

fn make_proof(case: &Case, id: &str, out: &Path) -> Outcome3 {
    run(&[
        "audit",
        "proof",
        id,
        "--out",
        s(out),
        "--data-dir",
        s(&case.data()),
    ])
}

fn verify_proof(case: &Case, file: &Path, witness: bool) -> Outcome3 {
    let (pubkey, witness_key) = (case.pubkey(), case.witness_key());
    let mut args = vec!["audit", "verify-proof", s(file), "--pubkey", s(&pubkey)];
    if witness {
        args.extend(["--witness-key", s(&witness_key)]);
    }
    run(&args)
}

#[test]
fn proof_round_trip_and_tampered_proofs() {
    let case = Case::new();
    let id = case.id_of(130);
    let file = case.root.join("proof.json");
    let out = make_proof(&case, &id, &file);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("is entry 130 of the log, in its checkpoint of size 150")
    );

    let proof: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(proof["version"], 1);
    assert_eq!(proof["seq"], 130);
    assert_eq!(proof["leaf_index"], 129);
    // The exact canonical bytes as stored.
    let body: Vec<u8> = case
        .db()
        .query_row("SELECT body FROM events WHERE seq = 130", [], |r| r.get(0))
        .unwrap();
    assert_eq!(proof["event"].as_str().unwrap().as_bytes(), body);
    assert!(
        proof["checkpoint"]
            .as_str()
            .unwrap()
            .contains("\n\u{2014} witness-1 ")
    );

    let out = verify_proof(&case, &file, true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let time: String = case
        .db()
        .query_row("SELECT time FROM events WHERE seq = 130", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        out.stdout,
        format!(
            "proof OK: event {id} (request, {time}) is entry 130 of portcullis.test/gw-1, \
             included in the checkpoint of size 150 signed by test-gw, cosigned by witness-1\n"
        )
    );

    // Each part of the proof is bound: the event's bytes, the path, the checkpoint.
    let tamper = |edit: &dyn Fn(&mut serde_json::Value), expect: &str| {
        let mut bad = proof.clone();
        edit(&mut bad);
        let path = case.root.join("bad-proof.json");
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let out = verify_proof(&case, &path, false);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.starts_with("proof INVALID: ") && out.stderr.contains(expect),
            "{expect:?} not in {}",
            out.stderr
        );
    };
    tamper(
        &|p| {
            let event = p["event"].as_str().unwrap().replace("agent-7", "agent-8");
            p["event"] = event.into();
        },
        "the event is not in the signed checkpoint",
    );
    tamper(
        &|p| {
            let hash = p["inclusion_proof"][0].as_str().unwrap().to_string();
            p["inclusion_proof"][0] = flip_base64_char(&hash, 3).into();
        },
        "the event is not in the signed checkpoint",
    );
    tamper(
        &|p| {
            p["leaf_index"] = 130.into();
            p["seq"] = 131.into();
        },
        "the event is not in the signed checkpoint",
    );
    tamper(
        &|p| {
            let note = edit_root(p["checkpoint"].as_str().unwrap());
            p["checkpoint"] = note.into();
        },
        "the checkpoint in the proof does not verify",
    );
    tamper(&|p| p["version"] = 2.into(), "proof format version 2");
}

#[test]
fn an_event_after_the_newest_checkpoint_has_no_proof_yet() {
    let case = Case::new();
    let out = make_proof(&case, &case.id_of(305), &case.root.join("p.json"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("(entry 305) is not yet covered by a checkpoint (the newest covers the first 300 events); try again after the next one"),
        "{}",
        out.stderr
    );
    let out = make_proof(&case, "no-such-event", &case.root.join("p.json"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no event no-such-event"),
        "{}",
        out.stderr
    );
}

/// Recorded chunks, in clear beside the events and sealed in an age segment: the binary
/// checks both, names an altered chunk at its request, and opens segments with
/// `--identity` (a key file `age-keygen` wrote).
mod recordings {
    use portcullis_model::{RecordedRef, SegmentRecord};
    use portcullis_recording::Chunk;
    use portcullis_recording::segment::{self, Recipients};
    use sha2::Digest as _;

    use super::*;

    struct Recorded {
        _dir: tempfile::TempDir,
        data: PathBuf,
        pubkey: PathBuf,
        identity: PathBuf,
        /// The id of the request whose chunk is in the table, and that chunk.
        clear: (String, Chunk),
    }

    /// Two recorded requests: the first with its chunks beside it, the second sealed in a
    /// segment to a key `age-keygen` made, vouched for by a `recording.sealed` event.
    fn recorded() -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        keys::generate(&keys_dir, keys::AUDIT_KEY, KEY_NAME).unwrap();
        let identity = dir.path().join("auditor.txt");
        let keygen = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .output()
            .expect("age-keygen (Debian package age) must be installed");
        assert!(keygen.status.success(), "{keygen:?}");
        let recipient = std::fs::read_to_string(&identity)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
            .unwrap();
        let data = dir.path().join("data");
        let clear = tokio::runtime::Runtime::new().unwrap().block_on(async {
            let log = AuditLog::open_signed(
                &data,
                "gw-1",
                Durability::Strict,
                signing_settings(&keys_dir),
            )
            .unwrap();
            let request = Chunk::seal(br#"{"name":"get_invoice"}"#);
            let mut ev = log.event(EventType::Request, Outcome::Success);
            ev.recorded = Some(RecordedRef {
                request: Some(request.id().to_string()),
                answer: None,
                sealed: false,
            });
            let clear = (ev.id.clone(), request.clone());
            log.record_with(ev, vec![request]).await.unwrap();
            let sealed = Chunk::seal(br#"{"rows":[[42]]}"#);
            let mut ev = log.event(EventType::Request, Outcome::Success);
            ev.recorded = Some(RecordedRef {
                request: None,
                answer: Some(sealed.id().to_string()),
                sealed: true,
            });
            let seq = log.record(ev).await.unwrap();
            let recipients = Recipients::parse(&[recipient]).unwrap();
            let bytes = segment::seal(&[(seq, sealed)], &recipients).unwrap();
            let file = format!("{seq}-{seq}.age");
            let segments = data.join("recordings");
            std::fs::create_dir_all(&segments).unwrap();
            std::fs::write(segments.join(&file), &bytes).unwrap();
            let mut ev = log.event(EventType::RecordingSealed, Outcome::Info);
            ev.segment = Some(SegmentRecord {
                file,
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                bytes: bytes.len() as u64,
                first_seq: seq,
                last_seq: seq,
                chunks: 1,
                recipients: recipients.fingerprints().to_vec(),
            });
            log.record(ev).await.unwrap();
            log.close().await.unwrap();
            clear
        });
        Recorded {
            data,
            pubkey: keys_dir.join("audit.pub"),
            identity,
            clear,
            _dir: dir,
        }
    }

    fn verify(r: &Recorded, identity: bool) -> Outcome3 {
        let mut args = vec![
            "audit",
            "verify",
            "--data-dir",
            s(&r.data),
            "--pubkey",
            s(&r.pubkey),
        ];
        if identity {
            args.extend(["--identity", s(&r.identity)]);
        }
        run(&args)
    }

    #[test]
    fn recorded_chunks_are_checked_in_clear_and_in_sealed_segments() {
        let r = recorded();
        let out = verify(&r, false);
        out.ok();
        assert!(
            out.stdout.contains(
                "recordings: 1 chunks checked, 1 sealed in 1 segments (files checked; their \
                 chunks need --identity)"
            ),
            "{}",
            out.stdout
        );
        let out = verify(&r, true);
        out.ok();
        assert!(
            out.stdout.contains(
                "recordings: 2 chunks checked, 1 sealed in 1 segments (decrypted and checked)"
            ),
            "{}",
            out.stdout
        );
    }

    #[test]
    fn one_altered_byte_of_a_stored_chunk_fails_naming_its_event_and_chunk() {
        let r = recorded();
        let (event, chunk) = &r.clear;
        let mut bytes = chunk.bytes().to_vec();
        bytes[25] ^= 0x10;
        let db = Connection::open(r.data.join("audit.db")).unwrap();
        db.execute_batch("DROP TRIGGER chunks_no_update").unwrap();
        db.execute(
            "UPDATE chunks SET bytes = ?1 WHERE id = ?2",
            params![bytes, chunk.id().as_str()],
        )
        .unwrap();
        drop(db);
        let out = verify(&r, false);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "audit log INVALID: event 1 (id {event}): its recorded request, chunk {}, was altered",
                chunk.id()
            )),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn a_wrong_identity_is_named() {
        let r = recorded();
        let other = r.identity.with_file_name("stranger.txt");
        let keygen = Command::new("age-keygen")
            .arg("-o")
            .arg(&other)
            .output()
            .unwrap();
        assert!(keygen.status.success());
        let out = run(&[
            "audit",
            "verify",
            "--data-dir",
            s(&r.data),
            "--pubkey",
            s(&r.pubkey),
            "--identity",
            s(&other),
        ]);
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("wrong key"), "{}", out.stderr);
    }
}
