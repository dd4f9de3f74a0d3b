//! `portcullis witness` over real HTTP: the key is made with `keys witness-init`, checkpoints
//! are signed with a real audit key and sent with real consistency proofs, and the witness is
//! restarted over its state directory.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_audit::checkpoint::{Checkpoint, Ed25519Signer, sign_note};
use portcullis_audit::keys::{self, AUDIT_KEY, WITNESS_KEY};
use portcullis_audit::merkle::{Hash, consistency_proof, leaf_hash, root};
use portcullis_audit::witness::{
    Answer, AnswerError, CosignatureVerifier, attach_cosignatures, parse_answer, request_body,
};

/// A running witness; killed on drop.
struct WitnessServer {
    addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for WitnessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn witness_command(key: &Path, state: &Path, listen: &str, log_keys: &[&Path]) -> Command {
    let mut cmd = Command::new(common::binary());
    cmd.arg("witness")
        .arg("--key")
        .arg(key)
        .arg("--state")
        .arg(state)
        .arg("--listen")
        .arg(listen);
    for log_key in log_keys {
        cmd.arg("--log-key").arg(log_key);
    }
    cmd
}

impl WitnessServer {
    fn start(key: &Path, state: &Path, log_keys: &[&Path]) -> WitnessServer {
        let port = common::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = witness_command(key, state, &addr.to_string(), log_keys);
        cmd.env("PORTCULLIS_LOG", "info").stdout(Stdio::null());
        let (child, lines) = common::start_and_wait(&mut cmd, addr, "witness");
        WitnessServer {
            addr,
            child,
            stderr: lines,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/add-checkpoint", self.addr)
    }

    /// SIGTERM, then a bounded wait; whether it exited 0.
    fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the witness logged `text`, waiting a little: its stderr is read by a thread
    /// that may not have caught up with the answer the test just got.
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.stderr.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A log: its key and entries, of which a prefix is checkpointed at a time.
struct Log {
    origin: String,
    key: Ed25519Signer,
    leaves: Vec<Hash>,
}

impl Log {
    fn body(&self, size: usize) -> String {
        Checkpoint {
            origin: self.origin.clone(),
            size: size as u64,
            root: root(&self.leaves[..size]),
        }
        .body()
    }

    fn note(&self, size: usize) -> String {
        sign_note(&self.body(size), &[&self.key]).unwrap()
    }

    fn request(&self, old: usize, new: usize) -> String {
        request_body(
            old as u64,
            &consistency_proof(old, &self.leaves[..new]),
            &self.note(new),
        )
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

async fn post(client: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> Reply {
    let resp = client.post(url).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: resp.text().await.unwrap(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn witness_cosigns_a_growing_log_and_remembers_it_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("witness-key");
    let state = dir.path().join("state");

    // The log's key, and a key of the same name that the witness is not given.
    let log_dir = dir.path().join("log-key");
    keys::generate(&log_dir, AUDIT_KEY, "gw.test/eu-1").unwrap();
    let stranger_dir = dir.path().join("stranger-key");
    keys::generate(&stranger_dir, AUDIT_KEY, "gw.test/eu-1").unwrap();
    let log_pub = keys::key_paths(&log_dir, AUDIT_KEY).1;
    let leaves: Vec<Hash> = (0..40)
        .map(|i| leaf_hash(format!("event {i}").as_bytes()))
        .collect();
    let log = Log {
        origin: "gw.test/eu-1".into(),
        key: keys::load_signer(&log_dir, AUDIT_KEY).unwrap(),
        leaves: leaves.clone(),
    };
    let stranger = Log {
        origin: log.origin.clone(),
        key: keys::load_signer(&stranger_dir, AUDIT_KEY).unwrap(),
        leaves,
    };

    // Without a key the witness refuses to start and says how to make one.
    let out = witness_command(&key_dir, &state, "127.0.0.1:0", &[&log_pub])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keys witness-init"), "{stderr}");

    // keys witness-init prints the verifier key, which is what witness.pub holds.
    let out = Command::new(common::binary())
        .args(["keys", "witness-init", "--name", "witness.test/w1", "--out"])
        .arg(&key_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let witness_pub = keys::key_paths(&key_dir, WITNESS_KEY).1;
    assert_eq!(
        printed.trim(),
        std::fs::read_to_string(&witness_pub).unwrap().trim()
    );
    let wkey = keys::load_cosignature_verifier(&witness_pub).unwrap();
    assert_eq!(wkey, CosignatureVerifier::parse(&printed).unwrap());
    assert_eq!(wkey.name, "witness.test/w1");
    // Running it again never replaces the key.
    let again = Command::new(common::binary())
        .args(["keys", "witness-init", "--name", "witness.test/w1", "--out"])
        .arg(&key_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let mut server = WitnessServer::start(&key_dir, &state, &[&log_pub]);
    let client = reqwest::Client::new();
    let url = server.url();

    // First checkpoint: old 0, no proof. The cosignature verifies with witness.pub.
    let reply = post(&client, &url, log.request(0, 4)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.content_type.starts_with("text/plain"));
    let Ok(Answer::Cosigned(lines)) = parse_answer(reply.status, &reply.body) else {
        panic!("not a cosignature: {}", reply.body);
    };
    let time = wkey.verify_lines(&log.body(4), &lines).unwrap();
    assert!(time.abs_diff(unix_now()) < 60, "timestamp {time}");
    let cosigned = attach_cosignatures(&log.note(4), &lines);
    assert_eq!(wkey.verify_note(&cosigned).unwrap().0, log.body(4));
    assert!(
        wkey.verify_lines(&log.body(5), &lines).is_err(),
        "not for another checkpoint"
    );

    // A consistent second checkpoint.
    let reply = post(&client, &url, log.request(4, 9)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    wkey.verify_lines(&log.body(9), &reply.body).unwrap();
    // The same one again: cosigned again.
    let reply = post(&client, &url, log.request(9, 9)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A stale old size: 409 with the latest size.
    let reply = post(&client, &url, log.request(4, 12)).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.content_type, "text/x.tlog.size");
    assert_eq!(reply.body, "9\n");
    assert_eq!(
        parse_answer(reply.status, &reply.body),
        Ok(Answer::Conflict { latest: 9 })
    );

    // A proof that does not lead from the cosigned root: 422.
    let mut proof = consistency_proof(9, &log.leaves[..12]);
    proof[0][0] ^= 0xff;
    let reply = post(&client, &url, request_body(9, &proof, &log.note(12))).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(server.logged("possible log misbehaviour"));

    // A checkpoint signed by a key the witness was not given: 403.
    let reply = post(&client, &url, stranger.request(9, 12)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);

    // Rollbacks to a smaller tree: old beyond new is a bad request, and a smaller old size is
    // a conflict.
    let reply = post(&client, &url, request_body(9, &[], &log.note(5))).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = post(&client, &url, log.request(5, 5)).await;
    assert_eq!((reply.status, reply.body.as_str()), (409, "9\n"));

    // A fork: the same size with another root, signed by the log key. 409, but no size.
    let forked = Log {
        origin: log.origin.clone(),
        key: keys::load_signer(&log_dir, AUDIT_KEY).unwrap(),
        leaves: (0..9).map(|i| leaf_hash(&[i])).collect(),
    };
    let reply = post(&client, &url, forked.request(9, 9)).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_ne!(reply.content_type, "text/x.tlog.size");
    assert!(matches!(
        parse_answer(reply.status, &reply.body),
        Err(AnswerError::Refused { status: 409, .. })
    ));

    // Malformed and oversized requests.
    let reply = post(&client, &url, "hello").await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = post(&client, &url, vec![b'a'; 2 << 20]).await;
    assert_eq!(reply.status, 413);

    // Restarted over the same state, the witness remembers size 9.
    assert!(server.terminate(), "graceful exit on SIGTERM");
    let server = WitnessServer::start(&key_dir, &state, &[&log_pub]);
    let url = server.url();
    assert!(server.logged("witnessed log"));
    let reply = post(&client, &url, log.request(0, 12)).await;
    assert_eq!((reply.status, reply.body.as_str()), (409, "9\n"));
    let reply = post(&client, &url, log.request(9, 12)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    wkey.verify_lines(&log.body(12), &reply.body).unwrap();
}
