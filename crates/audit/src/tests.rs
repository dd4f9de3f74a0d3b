use std::collections::HashSet;
use std::time::{Duration, Instant};

use portcullis_config::Durability;
use portcullis_model::{
    AuditEvent, AuthMethod, EventType, Identity, IdentityKind, Outcome, PayloadDigest,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::canonical::canonicalize;
use crate::{AuditError, AuditLog, AuditReader, canonical_bytes};

fn full_event(log: &AuditLog) -> AuditEvent {
    let mut event = log.event(EventType::Request, Outcome::Success);
    event.source = Some("127.0.0.1:5000".into());
    event.identity = Some(Identity {
        issuer: "https://idp.example".into(),
        subject: "alice".into(),
        display_name: Some("Alice Ünïcode €".into()),
        kind: IdentityKind::Human,
        groups: vec!["eng".into()],
        auth_method: AuthMethod::Oidc,
        credential_id: None,
        act: vec![],
    });
    event.target = Some("tools".into());
    event.session = Some("s-1".into());
    event.action = Some("tools/call".into());
    event.resource = Some("search".into());
    event.request_id = Some("7".into());
    event.decision = Some("allow".into());
    event.rule = Some("eng-tools".into());
    event.policy_version = Some("abc".into());
    event.arguments = Some(PayloadDigest::of(b"{\"q\":1}"));
    event.duration_ms = Some(12.5);
    event.detail = Some("line\nbreak \"quoted\" \u{7}".into());
    event
}

#[tokio::test]
async fn record_and_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw-1", Durability::Strict).unwrap();
    let event = full_event(&log);
    assert_eq!(log.record(event.clone()).await.unwrap(), 1);
    let second = log.event(EventType::SessionEnd, Outcome::Info);
    assert_eq!(log.record(second.clone()).await.unwrap(), 2);

    let reader = AuditReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), 2);
    let (seq, text) = reader.by_id(&event.id).unwrap().unwrap();
    assert_eq!(seq, 1);
    assert_eq!(text.as_bytes(), canonical_bytes(&event));
    let back: AuditEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(back, event);
    assert!(reader.by_id("nope").unwrap().is_none());

    let all = reader.since(0, 10).unwrap();
    assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(reader.since(1, 10).unwrap()[0].0, 2);
    assert_eq!(reader.since(0, 1).unwrap().len(), 1);
    assert_eq!(reader.last(1).unwrap()[0].0, 2);
    assert_eq!(
        reader
            .last(5)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    // The indexed columns and the leaf hash agree with the body.
    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    let (ty, outcome, subject, session, target, body, leaf): (
        String,
        String,
        String,
        String,
        String,
        Vec<u8>,
        Vec<u8>,
    ) = conn
        .query_row(
            "SELECT type, outcome, subject, session, target, body, leaf_hash FROM events WHERE seq = 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        (ty.as_str(), outcome.as_str(), subject.as_str()),
        ("request", "success", "alice")
    );
    assert_eq!((session.as_str(), target.as_str()), ("s-1", "tools"));
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(&body);
    assert_eq!(leaf, hasher.finalize().to_vec());
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, crate::store::SCHEMA_VERSION.to_string());
    log.close().await.unwrap();
}

#[tokio::test]
async fn search_filters_on_every_field_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw-1", Durability::Strict).unwrap();
    let alice = full_event(&log);
    log.record(alice.clone()).await.unwrap();
    let mut denied = full_event(&log);
    denied.outcome = Outcome::Denied;
    denied.rule = Some("no deletes".into());
    denied.target = Some("billing".into());
    log.record(denied.clone()).await.unwrap();
    let start = log.event(EventType::GatewayStart, Outcome::Info);
    log.record(start.clone()).await.unwrap();

    let reader = AuditReader::open(dir.path()).unwrap();
    let ids = |q: crate::EventQuery| -> Vec<u64> {
        reader
            .search(&crate::EventQuery { limit: 10, ..q })
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    };
    assert_eq!(ids(Default::default()), [3, 2, 1]);
    let by = |identity: &str| crate::EventQuery {
        identity: Some(identity.into()),
        ..Default::default()
    };
    assert_eq!(ids(by("alice")), [2, 1]);
    assert_eq!(
        ids(by("Alice Ünïcode €")),
        [2, 1],
        "the display name finds them too"
    );
    assert_eq!(ids(by("bob")), Vec::<u64>::new());
    let q = |f: fn(&mut crate::EventQuery)| {
        let mut q = crate::EventQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(ids(q(|q| q.target = Some("billing".into()))), [2]);
    assert_eq!(ids(q(|q| q.event_type = Some("gateway.start".into()))), [3]);
    assert_eq!(ids(q(|q| q.outcome = Some("denied".into()))), [2]);
    assert_eq!(ids(q(|q| q.rule = Some("eng-tools".into()))), [1]);
    assert_eq!(
        reader
            .search(&crate::EventQuery {
                limit: 1,
                ..Default::default()
            })
            .unwrap()[0]
            .0,
        3,
        "the limit keeps the newest"
    );
    // Times: `since` keeps events at or after it, `until` those before it.
    assert_eq!(
        ids(q(|q| q.since = Some("2999-01-01T00:00:00.000Z".into()))),
        Vec::<u64>::new()
    );
    assert_eq!(
        ids(q(|q| q.until = Some("2000-01-01T00:00:00.000Z".into()))),
        Vec::<u64>::new()
    );
    assert_eq!(
        ids(q(|q| q.since = Some("2000-01-01T00:00:00.000Z".into()))),
        [3, 2, 1]
    );
}

#[tokio::test]
async fn event_has_fresh_id_time_and_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw-9", Durability::Strict).unwrap();
    let a = log.event(EventType::GatewayStart, Outcome::Info);
    let b = log.event(EventType::GatewayStart, Outcome::Info);
    assert_ne!(a.id, b.id);
    assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 7);
    assert_eq!(a.gateway, "gw-9");
    // 2024-01-02T03:04:05.678Z
    assert_eq!(a.time.len(), 24, "{}", a.time);
    assert!(a.time.ends_with('Z') && a.time.as_bytes()[19] == b'.');
    assert!(a.session.is_none() && a.identity.is_none() && a.duration_ms.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_contiguous_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(1000);
            for _ in 0..1000 {
                let event = log.event(EventType::Request, Outcome::Success);
                let id = event.id.clone();
                mine.push((log.record(event).await.unwrap(), id));
            }
            mine
        }));
    }
    let mut returned = Vec::new();
    for task in tasks {
        returned.extend(task.await.unwrap());
    }
    returned.sort();
    let seqs: Vec<u64> = returned.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=32_000).collect::<Vec<_>>());

    let reader = AuditReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), 32_000);
    let stored = reader.since(0, 40_000).unwrap();
    assert_eq!(stored.len(), 32_000);
    let mut ids = HashSet::new();
    for ((seq, text), (want_seq, want_id)) in stored.iter().zip(&returned) {
        assert_eq!(seq, want_seq);
        let event: AuditEvent = serde_json::from_str(text).unwrap();
        assert_eq!(
            &event.id, want_id,
            "seq {seq} holds the event it was returned for"
        );
        assert!(ids.insert(event.id));
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn strict_record_is_visible_to_a_fresh_reader() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    for n in 1..=5u64 {
        let event = log.event(EventType::Request, Outcome::Denied);
        let id = event.id.clone();
        assert_eq!(log.record(event).await.unwrap(), n);
        // No close, no flush: returning from record() is the durability promise.
        let reader = AuditReader::open(dir.path()).unwrap();
        assert_eq!(reader.by_id(&id).unwrap().unwrap().0, n);
        assert_eq!(reader.count().unwrap(), n);
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn reopen_continues_sequence_and_close_refuses_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    for _ in 0..3 {
        log.record(log.event(EventType::Request, Outcome::Success))
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    log.close().await.unwrap();
    let err = log
        .record(log.event(EventType::Request, Outcome::Success))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Closed), "{err}");

    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    let seq = log
        .record(log.event(EventType::Request, Outcome::Success))
        .await
        .unwrap();
    assert_eq!(seq, 4);
    log.close().await.unwrap();
    // After a clean close the reader still opens (WAL checkpointed into the main file).
    assert_eq!(AuditReader::open(dir.path()).unwrap().count().unwrap(), 4);
}

#[tokio::test]
async fn duplicate_id_is_refused_without_using_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    let event = log.event(EventType::Request, Outcome::Success);
    assert_eq!(log.record(event.clone()).await.unwrap(), 1);
    let err = log.record(event.clone()).await.unwrap_err();
    assert!(matches!(err, AuditError::DuplicateId { .. }), "{err}");
    assert!(err.to_string().contains(&event.id));
    let seq = log
        .record(log.event(EventType::Request, Outcome::Success))
        .await
        .unwrap();
    assert_eq!(seq, 2);
    log.close().await.unwrap();
}

#[tokio::test]
async fn batched_mode_returns_the_seq_it_stores() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Batched).unwrap();
    let mut returned = Vec::new();
    for _ in 0..2000 {
        let event = log.event(EventType::Request, Outcome::Success);
        let id = event.id.clone();
        returned.push((log.record(event).await.unwrap(), id));
    }
    log.close().await.unwrap();
    let reader = AuditReader::open(dir.path()).unwrap();
    let stored = reader.since(0, 5000).unwrap();
    assert_eq!(stored.len(), 2000);
    for ((seq, text), (want_seq, want_id)) in stored.iter().zip(&returned) {
        assert_eq!(seq, want_seq);
        assert!(text.contains(want_id.as_str()));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn data_dir_and_file_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a").join("data");
    let log = AuditLog::open(&data, "gw", Durability::Strict).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("audit.db")), 0o600);
    log.close().await.unwrap();
}

#[tokio::test]
async fn triggers_forbid_update_delete_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    log.record(full_event(&log)).await.unwrap();
    log.record(full_event(&log)).await.unwrap();

    let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let refused = |sql: &str| {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("append-only") || err.to_string().contains("contiguous"),
            "{sql}: {err}"
        );
    };
    refused("UPDATE events SET outcome = 'denied' WHERE seq = 1");
    refused("UPDATE events SET body = x'00'");
    refused("DELETE FROM events WHERE seq = 2");
    refused("DELETE FROM events");
    refused(
        "INSERT OR REPLACE INTO events (seq, id, time, type, outcome, body, leaf_hash) \
         SELECT 2, 'x', time, type, outcome, body, leaf_hash FROM events WHERE seq = 1",
    );
    refused(
        "INSERT INTO events (seq, id, time, type, outcome, body, leaf_hash) \
         SELECT 5, 'y', time, type, outcome, body, leaf_hash FROM events WHERE seq = 1",
    );
    drop(conn);

    let reader = AuditReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), 2);
    // The writer is not disturbed by the refused statements.
    let seq = log.record(full_event(&log)).await.unwrap();
    assert_eq!(seq, 3);
    log.close().await.unwrap();
}

/// Records until the capped database is full and returns the error.
async fn fill(log: &AuditLog) -> (u64, AuditError) {
    let mut last_ok = 0;
    for _ in 0..100_000 {
        match log.record(full_event(log)).await {
            Ok(seq) => last_ok = seq,
            Err(err) => return (last_ok, err),
        }
    }
    panic!("the size cap never produced an error");
}

async fn record_until_recovered(log: &AuditLog) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match log.record(full_event(log)).await {
            Ok(seq) => return seq,
            Err(err) if Instant::now() < deadline => {
                assert!(matches!(err, AuditError::Unavailable { .. }), "{err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("did not recover: {err}"),
        }
    }
}

#[tokio::test]
async fn full_disk_fails_closed_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with_max_page_count(dir.path(), Durability::Strict, 24).unwrap();
    let (last_ok, err) = fill(&log).await;
    assert!(last_ok > 0, "some events fit before the cap");
    let text = err.to_string();
    assert!(matches!(err, AuditError::Write { .. }), "{text}");
    assert!(text.contains("full"), "names the SQLite cause: {text}");
    assert!(text.contains("audit.db"), "names the file: {text}");
    assert!(!text.contains("alice"), "never the event contents: {text}");
    assert!(
        log.unavailable()
            .is_some_and(|cause| cause.contains("full")),
        "the failure is visible before recording"
    );

    // Until a retry succeeds, calls fail at once with the cause.
    let started = Instant::now();
    let err = log.record(full_event(&log)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        err.to_string().starts_with("audit store unavailable: ")
            && err.to_string().contains("full"),
        "{err}"
    );

    // Retries that still hit the cap keep failing.
    tokio::time::sleep(crate::writer::RETRY_INTERVAL).await;
    let err = log.record(full_event(&log)).await.unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err}");

    // "The disk has space again."
    log.set_max_page_count(1_000_000).await;
    let seq = record_until_recovered(&log).await;
    assert_eq!(seq, last_ok + 1, "failed events used no sequence numbers");
    assert_eq!(log.record(full_event(&log)).await.unwrap(), seq + 1);
    assert!(log.unavailable().is_none(), "healthy again");
    log.close().await.unwrap();

    let reader = AuditReader::open(dir.path()).unwrap();
    assert_eq!(reader.count().unwrap(), seq + 1);
    assert_eq!(reader.since(0, 100_000).unwrap().len() as u64, seq + 1);
}

#[tokio::test]
async fn batched_mode_keeps_acknowledged_events_across_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with_max_page_count(dir.path(), Durability::Batched, 24).unwrap();
    let mut acknowledged = Vec::new();
    // Batched callers learn of the failure once the writer has seen it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let event = full_event(&log);
        let id = event.id.clone();
        match log.record(event).await {
            Ok(seq) => acknowledged.push((seq, id)),
            Err(err) => break err,
        }
        assert!(Instant::now() < deadline, "never failed");
        tokio::task::yield_now().await;
    };
    assert!(matches!(err, AuditError::Unavailable { .. }), "{err}");

    log.set_max_page_count(1_000_000).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let seq = loop {
        let event = full_event(&log);
        let id = event.id.clone();
        if let Ok(seq) = log.record(event).await {
            acknowledged.push((seq, id));
            break seq;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seq as usize, acknowledged.len());
    log.close().await.unwrap();

    let stored = AuditReader::open(dir.path())
        .unwrap()
        .since(0, 100_000)
        .unwrap();
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "no acknowledged event lost"
    );
    for ((seq, text), (want_seq, want_id)) in stored.iter().zip(&acknowledged) {
        assert_eq!(seq, want_seq);
        assert!(text.contains(want_id.as_str()));
    }
}

#[tokio::test]
async fn open_reports_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let err = AuditLog::open(&file, "gw", Durability::Strict).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    let err = AuditReader::open(dir.path()).unwrap_err();
    assert!(matches!(err, AuditError::NotFound { .. }), "{err}");
}

// ---- canonical bytes ----

fn jcs(value: &serde_json::Value) -> String {
    String::from_utf8(canonicalize(value)).unwrap()
}

#[test]
fn canonical_rfc8785_example() {
    // RFC 8785 section 3.2.2 (input parsed from JSON text, as the RFC does).
    let input: serde_json::Value = serde_json::from_str(
        r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#,
    )
    .unwrap();
    assert_eq!(
        jcs(&input),
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
}

#[test]
fn canonical_keys_sorted_by_utf16_code_units() {
    // RFC 8785 section 3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33,
    // although it comes after it in code point order.
    let input: serde_json::Value = serde_json::from_str(
        r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh",
            "1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control",
            "\u00f6":"Latin Small Letter O With Diaeresis"}"#,
    )
    .unwrap();
    let out = jcs(&input);
    let order: Vec<&str> = [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small",
        "Euro Sign",
        "Emoji",
        "Hebrew",
    ]
    .to_vec();
    let positions: Vec<usize> = order.iter().map(|k| out.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
    assert!(out.starts_with("{\"\\r\":"), "{out}");
    assert!(
        out.contains("\"\u{1F600}\":"),
        "non-ASCII stays UTF-8: {out}"
    );
}

#[test]
fn canonical_numbers_match_rfc8785_appendix_b() {
    let cases: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for &(bits, want) in cases {
        let got = String::from_utf8(canonicalize(&f64::from_bits(bits))).unwrap();
        assert_eq!(got, want, "0x{bits:016x}");
    }
    // Integers are numbers too: 1.0 and 1 are the same JSON number.
    assert_eq!(
        jcs(&json!([1.0, 100, -0.0, 1e21, 1e20])),
        "[1,100,0,1e+21,100000000000000000000]"
    );
}

#[test]
fn canonical_string_escaping() {
    let s: String = (0u8..0x20).map(char::from).collect::<String>() + "\"\\/\u{7f}é€😀\u{2028}";
    let out = jcs(&json!(s));
    assert_eq!(
        out,
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\
         \\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\
         \\\"\\\\/\u{7f}é€😀\u{2028}\""
    );
}

#[test]
fn canonical_event_is_sorted_compact_stable_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Batched).unwrap();
    let mut event = full_event(&log);
    event.duration_ms = Some(1e21);
    let bytes = canonical_bytes(&event);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(
        !text.contains(": ") && !text.contains(", ") && !text.contains('\n'),
        "{text}"
    );
    assert!(text.contains("\"duration_ms\":1e+21"), "{text}");
    assert!(text.contains("\"type\":\"request\""), "{text}");
    assert!(text.contains("Alice Ünïcode €"), "{text}");

    // Keys at every level are sorted.
    fn check_sorted(value: &serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let keys: Vec<Vec<u16>> = map.keys().map(|k| k.encode_utf16().collect()).collect();
                let mut sorted = keys.clone();
                sorted.sort();
                assert_eq!(keys, sorted);
                map.values().for_each(check_sorted);
            }
            serde_json::Value::Array(items) => items.iter().for_each(check_sorted),
            _ => {}
        }
    }
    // serde_json's default map is a BTreeMap, which would re-sort: read with
    // preserve_order-free parsing and compare the text order instead.
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    check_sorted(&value);
    let top_keys: Vec<usize> = [
        "\"action\"",
        "\"arguments\"",
        "\"decision\"",
        "\"detail\"",
        "\"duration_ms\"",
        "\"gateway\"",
        "\"id\"",
        "\"identity\"",
        "\"outcome\"",
        "\"policy_version\"",
        "\"request_id\"",
        "\"resource\"",
        "\"rule\"",
        "\"session\"",
        "\"source\"",
        "\"target\"",
        "\"time\"",
        "\"type\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(top_keys.windows(2).all(|w| w[0] < w[1]), "{text}");

    let back: AuditEvent = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, event);
    assert_eq!(canonical_bytes(&back), bytes, "stable across a round trip");
    assert_eq!(canonical_bytes(&event), bytes, "stable across calls");

    // -0 is 0, and non-finite durations (which JSON cannot hold) are left out.
    event.duration_ms = Some(-0.0);
    assert!(
        String::from_utf8(canonical_bytes(&event))
            .unwrap()
            .contains("\"duration_ms\":0,")
    );
    event.duration_ms = Some(f64::NAN);
    assert!(
        !String::from_utf8(canonical_bytes(&event))
            .unwrap()
            .contains("duration_ms")
    );
    event.duration_ms = Some(f64::INFINITY);
    assert!(
        !String::from_utf8(canonical_bytes(&event))
            .unwrap()
            .contains("duration_ms")
    );
}

/// The leaf hashes of the log as stored, in order, recomputed from the bodies.
fn stored_leaves(dir: &std::path::Path) -> Vec<crate::merkle::Hash> {
    let reader = AuditReader::open(dir).unwrap();
    reader
        .since(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|(_, body)| crate::merkle::leaf_hash(body.as_bytes()))
        .collect()
}

#[tokio::test]
async fn the_tree_head_follows_every_append_across_reopens_and_other_writers() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw-a", Durability::Strict).unwrap();
    let empty = AuditReader::open(dir.path()).unwrap().tree_head().unwrap();
    assert_eq!(empty, (0, crate::merkle::empty_root()));
    for _ in 0..5 {
        log.record(full_event(&log)).await.unwrap();
    }
    let head = AuditReader::open(dir.path()).unwrap().tree_head().unwrap();
    assert_eq!(head, (5, crate::merkle::root(&stored_leaves(dir.path()))));

    // A second writer on the same file (as `portcullis tools accept` is) interleaves.
    let other = AuditLog::open(dir.path(), "cli", Durability::Strict).unwrap();
    other.record(full_event(&other)).await.unwrap();
    log.record(full_event(&log)).await.unwrap();
    other.record(full_event(&other)).await.unwrap();
    other.close().await.unwrap();
    log.record(full_event(&log)).await.unwrap();
    log.close().await.unwrap();
    let leaves = stored_leaves(dir.path());
    assert_eq!(leaves.len(), 9);
    let head = AuditReader::open(dir.path()).unwrap().tree_head().unwrap();
    assert_eq!(head, (9, crate::merkle::root(&leaves)));

    // Reopened, the writer continues the same tree.
    let log = AuditLog::open(dir.path(), "gw-a", Durability::Batched).unwrap();
    for _ in 0..7 {
        log.record(full_event(&log)).await.unwrap();
    }
    log.close().await.unwrap();
    let leaves = stored_leaves(dir.path());
    let head = AuditReader::open(dir.path()).unwrap().tree_head().unwrap();
    assert_eq!(head, (16, crate::merkle::root(&leaves)));
    // Every stored event is provably in that tree.
    for (i, leaf) in leaves.iter().enumerate() {
        let proof = crate::merkle::inclusion_proof(i, &leaves);
        crate::merkle::verify_inclusion(leaf, i as u64, 16, &proof, &head.1).unwrap();
    }
}

mod checkpoints {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::{Checkpoint, Ed25519Signer, Verifier, verifier_key};
    use crate::{CheckpointSettings, merkle};

    fn settings(every: u64, interval: Duration) -> (CheckpointSettings, Verifier) {
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        let signer = Ed25519Signer::from_pkcs8("test-log-key", &pkcs8).unwrap();
        let verifier = Verifier::parse(&verifier_key(&signer)).unwrap();
        let settings = CheckpointSettings {
            origin: "portcullis/test-gw".into(),
            signer: Arc::new(signer),
            interval,
            every,
        };
        (settings, verifier)
    }

    /// Every stored checkpoint: (size, note).
    fn stored(dir: &std::path::Path) -> Vec<(u64, String)> {
        let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn leaf_hashes(dir: &std::path::Path) -> Vec<merkle::Hash> {
        let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT leaf_hash FROM events ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|h| h.unwrap().try_into().unwrap())
            .collect()
    }

    /// Each stored note is signed by the log key, names the origin, and states the root of
    /// the tree of the first `size` stored events.
    fn assert_notes_true(dir: &std::path::Path, verifier: &Verifier) {
        let leaves = leaf_hashes(dir);
        for (size, note) in stored(dir) {
            let body = verifier.open(&note).expect("signed by the log key");
            let checkpoint = Checkpoint::parse(body).unwrap();
            assert_eq!(checkpoint.origin, "portcullis/test-gw");
            assert_eq!(checkpoint.size, size);
            assert_eq!(
                checkpoint.root,
                merkle::root(&leaves[..size as usize]),
                "root of checkpoint {size}"
            );
        }
    }

    #[tokio::test]
    async fn a_checkpoint_every_n_events_and_one_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, verifier) = settings(10, Duration::from_secs(3600));
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, settings).unwrap();
        let mut announced = log.checkpoints();
        for _ in 0..25 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        assert_eq!(
            stored(dir.path()).iter().map(|c| c.0).collect::<Vec<_>>(),
            [10, 20]
        );
        assert!(announced.has_changed().unwrap());
        assert_eq!(announced.borrow_and_update().as_ref().unwrap().size, 20);
        log.close().await.unwrap();
        // The close signs what the last interval had not covered yet.
        assert_eq!(
            stored(dir.path()).iter().map(|c| c.0).collect::<Vec<_>>(),
            [10, 20, 25]
        );
        assert_notes_true(dir.path(), &verifier);
    }

    #[tokio::test]
    async fn the_stated_origin_is_the_newest_checkpoints_and_none_before_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = settings(3, Duration::from_secs(3600));
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, settings).unwrap();
        log.record(log.event(EventType::Request, Outcome::Success))
            .await
            .unwrap();
        let reader = AuditReader::open(dir.path()).unwrap();
        assert_eq!(reader.stated_origin().unwrap(), None);
        for _ in 0..3 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        assert_eq!(
            reader.stated_origin().unwrap().as_deref(),
            Some("portcullis/test-gw")
        );
        log.close().await.unwrap();
    }

    #[tokio::test]
    async fn reopening_resumes_the_cadence_from_the_stored_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let (first, verifier) = settings(10, Duration::from_secs(3600));
        let log = AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, first.clone())
            .unwrap();
        for _ in 0..15 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        // Dropping the last handle ends the writer like a close: the tail gets signed.
        drop(log);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, first).unwrap();
        assert_eq!(log.checkpoints().borrow().as_ref().unwrap().size, 15);
        for _ in 0..10 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        assert_eq!(
            stored(dir.path()).iter().map(|c| c.0).collect::<Vec<_>>(),
            [10, 15, 25]
        );
        assert_notes_true(dir.path(), &verifier);
    }

    #[tokio::test]
    async fn a_checkpoint_each_interval_with_new_events_and_none_without() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, verifier) = settings(1000, Duration::from_millis(50));
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, settings).unwrap();
        for _ in 0..3 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The ticker signed the three events on its own, once: idle intervals sign nothing.
        assert_eq!(
            stored(dir.path()).iter().map(|c| c.0).collect::<Vec<_>>(),
            [3]
        );
        log.record(log.event(EventType::Request, Outcome::Success))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            stored(dir.path()).iter().map(|c| c.0).collect::<Vec<_>>(),
            [3, 4]
        );
        log.close().await.unwrap();
        assert_eq!(stored(dir.path()).len(), 2, "nothing new to sign at close");
        assert_notes_true(dir.path(), &verifier);
    }

    #[tokio::test]
    async fn batched_bursts_are_checkpointed_exactly_every_n_events() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, verifier) = settings(100, Duration::from_secs(3600));
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Batched, settings).unwrap();
        for _ in 0..1050 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        let sizes: Vec<u64> = stored(dir.path()).iter().map(|c| c.0).collect();
        let mut expected: Vec<u64> = (1..=10).map(|k| k * 100).collect();
        expected.push(1050);
        assert_eq!(sizes, expected);
        assert_notes_true(dir.path(), &verifier);
    }

    #[tokio::test]
    async fn cosignatures_are_kept_beside_their_checkpoint_and_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = settings(2, Duration::from_secs(3600));
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, settings).unwrap();
        for _ in 0..2 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        log.store_cosignature(2, "witness-a", "— witness-a AAAA\n")
            .await
            .unwrap();
        // A retry after a lost answer stores nothing new and is not an error.
        log.store_cosignature(2, "witness-a", "— witness-a BBBB\n")
            .await
            .unwrap();
        // There is no checkpoint 7 to cosign.
        assert!(log.store_cosignature(7, "witness-a", "x").await.is_err());
        log.close().await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
        let line: String = conn
            .query_row("SELECT line FROM cosignatures WHERE size = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(line, "— witness-a AAAA\n");
        let err = conn
            .execute("DELETE FROM checkpoints", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{err}");
    }
}

/// The WAL is copied back and reused while appends never pause: without the checkpointer's
/// RESTART rounds it would grow by every byte ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_constant_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "test-gw", Durability::Batched).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25_000 {
                log.record(full_event(&log)).await.unwrap();
            }
        }));
    }
    let mut largest_wal = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        if let Ok(meta) = std::fs::metadata(dir.path().join("audit.db-wal")) {
            largest_wal = largest_wal.max(meta.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log.close().await.unwrap();
    let db = std::fs::metadata(dir.path().join("audit.db"))
        .unwrap()
        .len();
    assert!(db > 60 << 20, "100k events make a large log: {db} bytes");
    assert!(
        largest_wal < 40 << 20,
        "the WAL grew to {largest_wal} bytes for a {db}-byte log"
    );
}

/// A signing log refuses to extend a log that contradicts its newest signed checkpoint.
mod refuses_to_sign_over_tampering {
    use std::sync::Arc;

    use super::*;
    use crate::CheckpointSettings;
    use crate::checkpoint::Ed25519Signer;

    fn settings(pkcs8: &[u8]) -> CheckpointSettings {
        CheckpointSettings {
            origin: "portcullis/test-gw".into(),
            signer: Arc::new(Ed25519Signer::from_pkcs8("test-log-key", pkcs8).unwrap()),
            interval: Duration::from_secs(3600),
            every: 5,
        }
    }

    async fn log_of_12(dir: &std::path::Path, pkcs8: &[u8]) {
        let log =
            AuditLog::open_signed(dir, "test-gw", Durability::Strict, settings(pkcs8)).unwrap();
        for _ in 0..12 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        log.close().await.unwrap(); // checkpoints at 5, 10, 12
    }

    fn tamper(dir: &std::path::Path, sql: &str) {
        let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
        conn.execute_batch(&format!(
            "DROP TRIGGER events_no_delete; DROP TRIGGER checkpoints_no_delete; \
             DROP TRIGGER checkpoints_no_update; {sql}"
        ))
        .unwrap();
    }

    fn reopen_error(dir: &std::path::Path, pkcs8: &[u8]) -> String {
        AuditLog::open_signed(dir, "test-gw", Durability::Strict, settings(pkcs8))
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_truncated_log() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        log_of_12(dir.path(), &pkcs8).await;
        tamper(dir.path(), "DELETE FROM events WHERE seq > 8;");
        let err = reopen_error(dir.path(), &pkcs8);
        assert!(
            err.contains("holds 8 events but its newest signed checkpoint covers 12"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_newest_checkpoint_signed_by_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        log_of_12(dir.path(), &pkcs8).await;
        let other = Ed25519Signer::generate_pkcs8().unwrap();
        let err = reopen_error(dir.path(), &other);
        assert!(
            err.contains("does not verify with this gateway's key"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_rewritten_tree_state_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        log_of_12(dir.path(), &pkcs8).await;
        // A forged right edge of the tree: the gateway ignores it and extends what it signed.
        tamper(
            dir.path(),
            "UPDATE tree_state SET nodes = zeroblob(64) WHERE id = 1;",
        );
        let log =
            AuditLog::open_signed(dir.path(), "test-gw", Durability::Strict, settings(&pkcs8))
                .unwrap();
        for _ in 0..3 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
        let leaves: Vec<crate::merkle::Hash> = conn
            .prepare("SELECT leaf_hash FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|h| h.unwrap().try_into().unwrap())
            .collect();
        let note: String = conn
            .query_row(
                "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let body = &note[..note.rfind("\n\n").unwrap() + 1];
        let checkpoint = crate::checkpoint::Checkpoint::parse(body).unwrap();
        assert_eq!(checkpoint.size, 15);
        assert_eq!(checkpoint.root, crate::merkle::root(&leaves));
    }
}

/// `verify` checks every recorded chunk an event names against the chunks table.
mod recorded_chunks {
    use std::sync::Arc;

    use portcullis_model::{RecordedRef, RemovedRecord};
    use portcullis_recording::Chunk;

    use super::*;
    use crate::CheckpointSettings;
    use crate::checkpoint::{Ed25519Signer, Verifier, verifier_key};
    use crate::verify::{self, Failure, Location, Summary};

    struct Recorded {
        dir: tempfile::TempDir,
        verifier: Verifier,
        /// `(seq, event id, request chunk, answer chunk)` of each recorded request.
        requests: Vec<(u64, String, Chunk, Chunk)>,
    }

    fn open(dir: &std::path::Path, pkcs8: &[u8]) -> AuditLog {
        let settings = CheckpointSettings {
            origin: "portcullis/test-gw".into(),
            signer: Arc::new(Ed25519Signer::from_pkcs8("test-log-key", pkcs8).unwrap()),
            interval: Duration::from_secs(3600),
            every: 1000,
        };
        AuditLog::open_signed(dir, "test-gw", Durability::Strict, settings).unwrap()
    }

    /// A signed log of 5 recorded requests between unrecorded events; `remove` of them are
    /// then deleted by a retention event that names their chunks.
    async fn recorded_log(remove: usize) -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
        let signer = Ed25519Signer::from_pkcs8("test-log-key", &pkcs8).unwrap();
        let verifier = Verifier::parse(&verifier_key(&signer)).unwrap();
        let log = open(dir.path(), &pkcs8);
        let mut requests = Vec::new();
        for i in 0..5 {
            log.record(log.event(EventType::Request, Outcome::Success))
                .await
                .unwrap();
            let request = Chunk::seal(format!("{{\"q\":\"SELECT {i}\"}}").as_bytes());
            let answer = Chunk::seal(format!("{{\"rows\":[[{i}]]}}").as_bytes());
            let mut ev = full_event(&log);
            ev.recorded = Some(RecordedRef {
                request: Some(request.id().to_string()),
                answer: Some(answer.id().to_string()),
                sealed: false,
            });
            let id = ev.id.clone();
            let seq = log
                .record_with(ev, vec![request.clone(), answer.clone()])
                .await
                .unwrap();
            requests.push((seq, id, request, answer));
        }
        if remove > 0 {
            let removed: Vec<&(u64, String, Chunk, Chunk)> = requests.iter().take(remove).collect();
            let conn = rusqlite::Connection::open(dir.path().join("audit.db")).unwrap();
            for (_, _, request, answer) in &removed {
                for chunk in [request, answer] {
                    conn.execute("DELETE FROM chunks WHERE id = ?1", [chunk.id().as_str()])
                        .unwrap();
                }
            }
            let mut ev = log.event(EventType::RecordingRemoved, Outcome::Success);
            ev.removed = Some(RemovedRecord {
                before: "2026-01-01T00:00:00Z".into(),
                chunks: removed
                    .iter()
                    .flat_map(|(_, _, r, a)| [r.id().to_string(), a.id().to_string()])
                    .collect(),
                segments: Vec::new(),
            });
            log.record(ev).await.unwrap();
        }
        log.close().await.unwrap();
        Recorded {
            dir,
            verifier,
            requests,
        }
    }

    fn run(log: &Recorded) -> Result<Summary, Failure> {
        verify::verify(log.dir.path(), &log.verifier, &[], &[], &mut |_, _| {})
    }

    /// Verification fails at the event `seq` (id `id`), for a reason saying `why`.
    fn fails_at(log: &Recorded, seq: u64, id: &str, why: &str) {
        let failure = run(log).unwrap_err();
        assert_eq!(
            failure.at,
            Location::Event {
                seq,
                id: Some(id.to_string())
            }
        );
        assert!(failure.reason.contains(why), "{failure}");
    }

    fn tamper(log: &Recorded, sql: &str) {
        let conn = rusqlite::Connection::open(log.dir.path().join("audit.db")).unwrap();
        conn.execute_batch(sql).unwrap();
    }

    #[tokio::test]
    async fn a_recorded_log_verifies_with_every_chunk_checked() {
        let log = recorded_log(0).await;
        let summary = run(&log).unwrap();
        assert_eq!(summary.chunks_checked, 10);
        assert_eq!(summary.chunks_removed, 0);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
        assert!(
            summary
                .to_string()
                .contains("recordings: 10 chunks checked"),
            "{summary}"
        );
    }

    #[tokio::test]
    async fn one_altered_byte_in_one_chunk_names_its_event_and_chunk() {
        let log = recorded_log(0).await;
        let (seq, id, _, answer) = &log.requests[2];
        // What an attacker with the file would do: the trigger is only the gateway's
        // protection against its own mistakes.
        let mut bytes = answer.bytes().to_vec();
        bytes[30] ^= 0x01;
        tamper(&log, "DROP TRIGGER chunks_no_update;");
        let conn = rusqlite::Connection::open(log.dir.path().join("audit.db")).unwrap();
        conn.execute(
            "UPDATE chunks SET bytes = ?1 WHERE id = ?2",
            rusqlite::params![bytes, answer.id().as_str()],
        )
        .unwrap();
        drop(conn);
        fails_at(
            &log,
            *seq,
            id,
            &format!("its recorded answer, chunk {}, was altered", answer.id()),
        );
    }

    #[tokio::test]
    async fn a_chunk_swapped_for_another_is_altered() {
        let log = recorded_log(0).await;
        let (_, _, first, _) = &log.requests[0];
        let (seq, _, second, _) = &log.requests[3];
        // Delete and insert: no trigger stands in the way.
        tamper(
            &log,
            &format!(
                "DELETE FROM chunks WHERE id = '{second}'; \
                 INSERT INTO chunks (id, seq, bytes) \
                 SELECT '{second}', {seq}, bytes FROM chunks WHERE id = '{first}';",
                first = first.id(),
                second = second.id()
            ),
        );
        let failure = run(&log).unwrap_err();
        assert!(matches!(failure.at, Location::Event { seq: s, .. } if s == *seq));
        assert!(
            failure.reason.contains("its recorded request") && failure.reason.contains("altered"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn a_deleted_chunk_is_missing() {
        let log = recorded_log(0).await;
        let (seq, id, request, _) = &log.requests[1];
        tamper(
            &log,
            &format!("DELETE FROM chunks WHERE id = '{}';", request.id()),
        );
        fails_at(
            &log,
            *seq,
            id,
            &format!("its recorded request, chunk {}, is missing", request.id()),
        );
    }

    #[tokio::test]
    async fn chunks_removed_through_a_logged_retention_event_pass_and_are_counted() {
        let log = recorded_log(2).await;
        let summary = run(&log).unwrap();
        assert_eq!(summary.chunks_checked, 6);
        assert_eq!(summary.chunks_removed, 4);
        let removal = log.requests.last().unwrap().0 + 1;
        assert_eq!(summary.removal_events, vec![removal]);
        assert!(
            summary
                .to_string()
                .contains(&format!("4 removed by retention (event {removal})")),
            "{summary}"
        );
        // A chunk deleted without a retention event naming it is still missing.
        let (seq, _, _, answer) = &log.requests[3];
        tamper(
            &log,
            &format!("DELETE FROM chunks WHERE id = '{}';", answer.id()),
        );
        let failure = run(&log).unwrap_err();
        assert!(matches!(failure.at, Location::Event { seq: s, .. } if s == *seq));
        assert!(failure.reason.contains("is missing"), "{failure}");
    }
}

/// Counts what the writer reports, as the metrics exporter does.
#[derive(Default)]
struct Commits {
    groups: std::sync::Mutex<Vec<usize>>,
    waits: std::sync::Mutex<Vec<Duration>>,
}

impl crate::CommitObserver for Commits {
    fn committed(&self, group: usize, waits: &mut dyn Iterator<Item = Duration>) {
        self.groups.lock().unwrap().push(group);
        self.waits.lock().unwrap().extend(waits);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_are_observed_with_each_events_wait_and_the_queue_drains() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Strict).unwrap();
    let commits = std::sync::Arc::new(Commits::default());
    assert!(log.observe_commits(commits.clone()).is_ok());
    assert!(
        log.observe_commits(commits.clone()).is_err(),
        "a second observer must not replace the first"
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                log.record(log.event(EventType::Request, Outcome::Success))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    // Strict: every record returned after its commit, so nothing is waiting any more.
    assert_eq!(log.queue_depth(), 0);
    let groups = commits.groups.lock().unwrap().clone();
    assert_eq!(groups.iter().sum::<usize>(), 64, "{groups:?}");
    let waits = commits.waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 64);
    assert!(
        waits.iter().all(|w| *w <= elapsed),
        "a wait longer than the whole run: {waits:?}"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn batched_events_count_as_queued_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), "gw", Durability::Batched).unwrap();
    for _ in 0..500 {
        log.record(log.event(EventType::Request, Outcome::Success))
            .await
            .unwrap();
    }
    // Acknowledged at once, committed within a batch window or a few.
    assert!(log.queue_depth() <= 500);
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.queue_depth() > 0 {
        assert!(
            Instant::now() < deadline,
            "queue never drained: {}",
            log.queue_depth()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.close().await.unwrap();
}
