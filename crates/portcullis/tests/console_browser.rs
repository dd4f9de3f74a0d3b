//! The web console in a real browser: Debian's chromium, driven by playwright-core, signs in
//! through a real OIDC provider (panva's oidc-provider, with its own login and consent pages)
//! to the real gateway binary, and a finance lead approves an agent's held refund.
//!
//! This test starts the IdP (`crates/console/e2e/idp.mjs`) and the gateway (the demo's billing
//! server as a stdio target, a signed and recorded audit log, `[console.oidc]` pointing at the
//! IdP, refunds held for finance-leads), then runs `crates/console/e2e/console.test.mjs`,
//! which does the clicking and checks each step (see that file for the steps). The browser,
//! node and the suite's npm packages are prerequisites, installed by `.ci/run`; without them
//! this test fails and says how to install them.
//!
//! Environment: `CONSOLE_SCREENSHOTS=DIR` writes screenshots of the main pages to DIR (those
//! under docs/console/ come from here); `CONSOLE_E2E_READ_PAGES=0` / `CONSOLE_E2E_ADMIN_PAGES=0`
//! leave out the sessions and audit pages / the evidence and admin pages (on by default).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::keys;

/// The whole browser run: it takes well under a minute; this only stops a hung one.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

const INSTALL: &str =
    ".ci/run installs them: apt-get install chromium; npm ci --prefix crates/console/e2e";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/e2e")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Node, chromium and the suite's packages, or a failure that says how to install them.
fn check_prerequisites() {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing.push("node (Debian's nodejs)".to_string()),
    }
    if !chromium().exists() {
        missing.push(format!("chromium at {}", chromium().display()));
    }
    for package in ["playwright-core", "oidc-provider"] {
        let path = e2e_dir().join("node_modules").join(package);
        if !path.join("package.json").exists() {
            missing.push(format!("the npm package {package} in {}", path.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "the console's browser suite needs {}. {INSTALL}",
        missing.join(", ")
    );
}

/// The OIDC provider, stopped on drop (the suite may already have stopped it).
struct Idp {
    child: Child,
    issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `idp.mjs` for a console at `console` and reads the issuer it prints.
fn start_idp(console: &str) -> Idp {
    let mut child = Command::new("node")
        .arg(e2e_dir().join("idp.mjs"))
        .arg(console)
        .current_dir(e2e_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node: {e}. {INSTALL}"));
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[idp] {line}");
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(issuer) = v["issuer"].as_str()
            {
                let _ = tx.send(issuer.to_string());
            } else {
                eprintln!("[idp] {line}");
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(issuer) => Idp { child, issuer },
        Err(_) => {
            let _ = child.kill();
            panic!("the OIDC provider (idp.mjs) did not start within 30 s (see [idp] lines)");
        }
    }
}

fn config(idp: &Idp, agent: &Key, audit_key: &Path) -> String {
    format!(
        r#"{agent}
[audit]
signing_key = {audit_key:?}
checkpoint_interval = "200ms"

[recording]
mode = "strict"

[[identity.oidc]]
issuer = "{issuer}"
audience = "api://portcullis"
groups_claim = "groups"

[console]
enabled = true
admins = ["finance-leads"]

[console.oidc]
issuer = "{issuer}"
client_id = "portcullis-console"
scopes = ["openid", "profile", "groups"]

[targets.billing]
kind = "mcp"
{cmd}

[[rules]]
name = "agents look up customers"
who.groups = ["agents"]
target = "billing"
tools = ["lookup_customer"]

[[rules]]
name = "refunds need a finance lead"
who.groups = ["agents"]
target = "billing"
tools = ["refund_*"]
decision = "hold"
approvers = ["finance-leads"]
timeout = "5m"
require_reason = true
"#,
        agent = agent.config,
        audit_key = audit_key.display().to_string(),
        issuer = idp.issuer,
        cmd = demo_server_command(),
    )
}

/// Runs the browser suite; returns whether it passed and everything it printed.
fn run_suite(env: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new("node");
    cmd.arg("console.test.mjs")
        .current_dir(e2e_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    for switch in ["CONSOLE_E2E_READ_PAGES", "CONSOLE_E2E_ADMIN_PAGES"] {
        if std::env::var_os(switch).is_none() {
            cmd.env(switch, "1");
        }
    }
    let mut child = cmd.spawn().unwrap();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        })
        .collect();
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output: String = readers.into_iter().map(|r| r.join().unwrap()).collect();
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!(
                "{output}\nthe browser suite did not finish within {} s",
                SUITE_TIMEOUT.as_secs()
            ),
        ),
    }
}

#[test]
fn console_in_a_real_browser() {
    check_prerequisites();
    let admin_port = free_port();
    let console = format!("http://127.0.0.1:{admin_port}");
    let idp = start_idp(&console);

    let dir = tempfile::tempdir().unwrap();
    let audit_key = dir.path().join("audit-key");
    keys::generate(&audit_key, keys::AUDIT_KEY, "console-e2e").unwrap();
    let agent = api_key("billing-agent", "agent", &["agents"]);
    let gw = Gateway::start_in(
        dir,
        &config(&idp, &agent, &audit_key),
        &format!("admin_listen = \"127.0.0.1:{admin_port}\""),
        &[],
    );

    let started = Instant::now();
    let (passed, output) = run_suite(&[
        ("CONSOLE_URL", console.clone()),
        ("MCP_URL", gw.url("billing")),
        ("AGENT_KEY", agent.key.clone()),
        ("IDP_URL", idp.issuer.clone()),
        ("IDP_PID", idp.child.id().to_string()),
        ("PORTCULLIS_BIN", binary().display().to_string()),
        ("DATA_DIR", gw.data_dir().display().to_string()),
        (
            "AUDIT_PUBKEY",
            audit_key.join("audit.pub").display().to_string(),
        ),
        ("CHROMIUM", chromium().display().to_string()),
    ]);
    println!("{output}");
    assert!(
        passed,
        "the console's browser suite failed after {:.1} s:\n{output}",
        started.elapsed().as_secs_f64()
    );
    // What the browser did is in the audit log, as the finance lead.
    let events = gw.events();
    let sign_ins = events
        .iter()
        .filter(|e| e["type"] == "console.sign_in" && e["outcome"] == "success")
        .count();
    assert!(sign_ins >= 2, "expected two OIDC sign-ins in the log");
    for decision in ["approval.approved", "approval.denied"] {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == decision && e["identity"]["subject"] == "finance.lead"),
            "no {decision} by finance.lead in the audit log"
        );
    }
}
