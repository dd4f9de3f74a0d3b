//! Configuration reload end to end: the real `portcullis serve` in front of a real HTTP API
//! (an axum server run by the test), called with curl, its configuration file rewritten
//! and `kill -HUP` sent, as an operator (or `systemctl reload`) would.
//!
//! What is in force is read from what callers get: a request refused before the reload and
//! let through after it, a key that starts or stops working. What the log says is read with
//! `portcullis audit tail`.

mod common;
#[path = "support/http_upstream.rs"]
mod http_upstream;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use http_upstream::Upstream;
use serde_json::Value;

/// An HTTP target in front of `upstream` and one rule on `GET /plain` with `decision`.
fn rest(keys: &[&Key], upstream: &str, decision: &str) -> String {
    let keys: String = keys.iter().map(|k| k.config.as_str()).collect();
    format!(
        r#"{keys}
[targets.customers]
kind = "http"
upstream = "{upstream}"

[[rules]]
name = "plain reads"
target = "customers"
http.methods = ["GET"]
http.paths = ["/plain"]
decision = "{decision}"
"#
    )
}

/// Replaces what follows the `[gateway]` table the harness wrote (kept as it was, so the
/// listen address does not change) with `rest`.
fn rewrite(gw: &Gateway, rest: &str) {
    let path = gw.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (gateway, _) = text.split_once("\n\n").unwrap();
    std::fs::write(&path, format!("{gateway}\n\n{rest}")).unwrap();
}

/// The status of `GET /plain` through the gateway with `key`.
fn status(gw: &Gateway, key: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {key}"))
        .arg(format!("http://{}/http/customers/plain", gw.addr))
        .output()
        .expect("curl is needed for these tests");
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

/// Sends SIGHUP and waits for the `count`-th `config.reloaded` event, which it returns.
fn reload(gw: &Gateway, count: usize) -> Value {
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reloads = reloads(gw);
        if reloads.len() >= count {
            return reloads[count - 1].clone();
        }
        assert!(Instant::now() < deadline, "no reload recorded after SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reloads(gw: &Gateway) -> Vec<Value> {
    gw.events()
        .into_iter()
        .filter(|e| e["type"] == "config.reloaded")
        .collect()
}

/// The policy version `/readyz` on the admin listener names.
fn ready_version(admin: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://{admin}/readyz"))
        .output()
        .expect("curl");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    body["policy_version"].as_str().unwrap().to_string()
}

fn start_version(gw: &Gateway) -> String {
    let start = gw
        .events()
        .into_iter()
        .find(|e| e["type"] == "gateway.start")
        .unwrap();
    start["policy_version"].as_str().unwrap().to_string()
}

#[test]
fn sighup_puts_new_rules_and_keys_in_force() {
    let upstream = Upstream::start();
    let agent = api_key("reload-agent", "agent", &["agents"]);
    let leaving = api_key("leaving-agent", "agent", &["agents"]);
    let joining = api_key("joining-agent", "agent", &["agents"]);
    let admin = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start_with(
        &rest(&[&agent, &leaving], &upstream.base(), "deny"),
        &format!("admin_listen = \"{admin}\""),
        &[],
    );
    assert_eq!(status(&gw, &agent.key), 403);
    assert_eq!(status(&gw, &leaving.key), 403);
    assert_eq!(status(&gw, &joining.key), 401);
    assert_eq!(upstream.count(), 0);
    let first_version = start_version(&gw);
    assert_eq!(ready_version(&admin), first_version);

    // The rule now allows; one key leaves, another joins.
    rewrite(&gw, &rest(&[&agent, &joining], &upstream.base(), "allow"));
    let event = reload(&gw, 1);
    assert_eq!(event["outcome"], "info", "{event}");
    let new_version = event["policy_version"].as_str().unwrap().to_string();
    assert_ne!(new_version, first_version);
    assert_eq!(ready_version(&admin), new_version);
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("was {first_version}")),
        "{event}"
    );
    // The event is recorded before the swap, so the next request is decided by the new
    // rules already.
    assert_eq!(status(&gw, &agent.key), 200);
    assert_eq!(status(&gw, &joining.key), 200);
    assert_eq!(status(&gw, &leaving.key), 401);
    assert_eq!(upstream.count(), 2);
    // Requests name the policy that decided them.
    let requests: Vec<Value> = gw
        .events()
        .into_iter()
        .filter(|e| e["type"] == "request")
        .collect();
    assert_eq!(requests[0]["policy_version"], first_version.as_str());
    let last = requests.last().unwrap();
    assert_eq!(last["outcome"], "success", "{last}");
    assert_eq!(last["policy_version"], new_version.as_str());
    // The auth failure of the removed key is a failure like any other.
    assert!(
        gw.events()
            .iter()
            .any(|e| e["type"] == "auth.failure" && e["time"].as_str() > event["time"].as_str()),
        "no auth.failure for the removed key"
    );
}

#[test]
fn a_refused_reload_keeps_the_configuration_in_force() {
    let upstream = Upstream::start();
    let agent = api_key("steady-agent", "agent", &["agents"]);
    let gw = Gateway::start(&rest(&[&agent], &upstream.base(), "allow"));
    assert_eq!(status(&gw, &agent.key), 200);
    let version = start_version(&gw);
    let good = rest(&[&agent], &upstream.base(), "allow");
    let path = gw.dir.path().join("portcullis.toml");
    let original = std::fs::read_to_string(&path).unwrap();

    // 1. Not TOML: the file and line, in the log and in the event.
    rewrite(&gw, &format!("{good}\n[[rules]\nname = \"broken\"\n"));
    let event = reload(&gw, 1);
    assert_eq!(event["outcome"], "failed", "{event}");
    assert_eq!(event["policy_version"], version.as_str());
    let detail = event["detail"].as_str().unwrap();
    assert!(detail.contains("portcullis.toml:"), "{detail}");
    assert!(detail.contains("stays in force"), "{detail}");
    assert_eq!(status(&gw, &agent.key), 200);

    // 2. A field the rules do not have.
    rewrite(
        &gw,
        &good.replace("decision = \"allow\"", "decision = \"allow\"\nbogus = 1"),
    );
    let event = reload(&gw, 2);
    assert_eq!(event["outcome"], "failed", "{event}");
    assert!(
        event["detail"].as_str().unwrap().contains("bogus"),
        "{event}"
    );

    // 3. A condition that does not compile, in a rule that would deny.
    rewrite(
        &gw,
        &good.replace(
            "decision = \"allow\"",
            "decision = \"deny\"\nwhen = \"caller.groups ++\"",
        ),
    );
    let event = reload(&gw, 3);
    assert_eq!(event["outcome"], "failed", "{event}");
    assert_eq!(status(&gw, &agent.key), 200);

    // 4. A valid file that also changes the listen address: refused whole, the rule too.
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text
        .replacen(
            &format!("listen = \"{}\"", gw.addr),
            &format!("listen = \"127.0.0.1:{}\"", free_port()),
            1,
        )
        .replace(
            "decision = \"deny\"\nwhen = \"caller.groups ++\"",
            "decision = \"deny\"",
        );
    assert_ne!(moved, text);
    std::fs::write(&path, moved).unwrap();
    let event = reload(&gw, 4);
    assert_eq!(event["outcome"], "failed", "{event}");
    let detail = event["detail"].as_str().unwrap();
    assert!(
        detail.contains("gateway.listen changed: restart to apply"),
        "{detail}"
    );
    assert_eq!(status(&gw, &agent.key), 200);
    // Every refusal was logged as an error too.
    let refused = gw
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("ERROR") && l.contains("reload refused"))
        .count();
    assert_eq!(refused, 4);

    // 5. The file fixed (the address as it was, the rule denying): the reload goes through.
    std::fs::write(&path, &original).unwrap();
    rewrite(&gw, &rest(&[&agent], &upstream.base(), "deny"));
    let event = reload(&gw, 5);
    assert_eq!(event["outcome"], "info", "{event}");
    assert_eq!(status(&gw, &agent.key), 403);
}
