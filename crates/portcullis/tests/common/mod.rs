//! Test harness: runs the real `portcullis` binary against a configuration written for the
//! test, and talks to it over HTTP like any client would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod console;

use serde_json::{Value, json};

pub const MODERN: &str = "2026-07-28";
/// The session-based revision the tests' hand-written clients speak.
pub const LEGACY: &str = "2025-11-25";

/// The reference MCP server, run by `npx` as an upstream.
pub const EVERYTHING: &str = "@modelcontextprotocol/server-everything";

/// A running gateway; killed on drop.
pub struct Gateway {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    env: Vec<(String, String)>,
}

pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts `cmd` with its stderr piped (echoed with `[label]` and collected) and waits until
/// something accepts connections on `addr`; panics with the stderr if the process exits first.
pub fn start_and_wait(cmd: &mut Command, addr: SocketAddr, label: &str) -> (Child, Lines) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let prefix = format!("[{label}]");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix} {line}");
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{label} exited during start-up: {status}; stderr: {:?}",
                lines.lock().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "{label} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, lines)
}

/// Runs `portcullis serve --config <path>` and waits until it says it is serving (every
/// listener bound). Something else accepting on the port does not count: with tests in
/// parallel, another test's server can take a port `free_port` handed out, and the gateway
/// then exits with "address in use", which is returned as the error (with its stderr).
fn spawn(path: &Path, env: &[(String, String)]) -> Result<(Child, Lines), String> {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(path)
        .env("PORTCULLIS_LOG", "info,portcullis::upstream=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines: Lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[gateway] {line}");
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("portcullis is serving"))
        {
            return Ok((child, lines));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader thread take the last lines.
            std::thread::sleep(Duration::from_millis(50));
            return Err(format!(
                "the gateway exited during start-up: {status}; stderr: {:?}",
                lines.lock().unwrap()
            ));
        }
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// The real Python interpreter (not a version-manager shim, which starts slowly), for the
/// small scripted MCP servers some tests use as upstreams.
pub fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the scripted upstreams");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An API key and its config block.
pub struct Key {
    pub key: String,
    pub config: String,
}

pub fn api_key(name: &str, kind: &str, groups: &[&str]) -> Key {
    let key = format!(
        "pcx_test{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "x")
    )
    .chars()
    .chain(std::iter::repeat('A'))
    .take(47)
    .collect::<String>();
    let hash = portcullis_identity::hash_api_key(&key);
    let groups = groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Key {
        config: format!(
            "[[identity.api_keys]]\nname = {name:?}\nkind = {kind:?}\nsha256 = \"{hash}\"\ngroups = [{groups}]\n\n"
        ),
        key,
    }
}

/// The `command = [...]` line that runs the built-in demo MCP server.
pub fn demo_server_command() -> String {
    format!(
        "command = [{:?}, \"demo-server\"]",
        binary().display().to_string()
    )
}

impl Gateway {
    /// Starts `portcullis serve` with `[gateway]` filled in and the given rest of the file.
    pub fn start(rest: &str) -> Gateway {
        Self::start_with(rest, "", &[])
    }

    /// `gateway_extra` is added to the `[gateway]` table; `env` to the process environment.
    pub fn start_with(rest: &str, gateway_extra: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_in(tempfile::tempdir().unwrap(), rest, gateway_extra, env)
    }

    /// Like [`start_with`](Self::start_with), in a directory the test prepared (the data
    /// directory is `<dir>/data`).
    pub fn start_in(
        dir: tempfile::TempDir,
        rest: &str,
        gateway_extra: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let path = dir.path().join("portcullis.toml");
        let mut attempts = 0;
        loop {
            let port = free_port();
            let config = format!(
                "[gateway]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nrequest_timeout = \"20s\"\n{gateway_extra}\n\n{rest}"
            );
            std::fs::write(&path, config).unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            match spawn(&path, &env) {
                Ok((child, stderr)) => {
                    return Gateway {
                        addr,
                        dir,
                        child,
                        stderr,
                        env,
                    };
                }
                // Another test took the port between `free_port` and the bind: another one.
                Err(e) if e.contains("in use") && attempts < 5 => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Starts the gateway again on the same configuration and data (after `terminate` or
    /// `kill`), as an operator restarting the service would. Its stderr starts afresh.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stderr) = spawn(&self.dir.path().join("portcullis.toml"), &self.env)
            .unwrap_or_else(|e| panic!("{e}"));
        self.child = child;
        self.stderr = stderr;
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}/mcp/{target}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// All audit events so far, parsed, via the real `portcullis audit tail`.
    pub fn events(&self) -> Vec<Value> {
        let out = Command::new(binary())
            .args(["audit", "tail", "-n", "100000", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit tail failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// One side (`request` or `answer`) of an event's recording, read back from the data
    /// directory checked against its chunk id.
    pub fn recorded(&self, event: &Value, side: &str) -> portcullis_recording::document::Record {
        let id = event["recorded"][side]
            .as_str()
            .unwrap_or_else(|| panic!("no recorded {side} in {event}"));
        let chunk = portcullis_audit::recordings::Recordings::open(&self.data_dir())
            .unwrap()
            .get(&portcullis_recording::ChunkId::parse(id).unwrap())
            .unwrap();
        portcullis_recording::document::Record::parse(&chunk.content(1 << 24).unwrap()).unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
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

    /// Sends the gateway the signal `name` (`HUP`, ...) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Adds the `_meta` every 2026-07-28 request carries: the required protocol version and
/// client capabilities, and the recommended client info (keys already there are kept).
pub fn add_modern_meta(params: &mut Value) {
    let meta = &mut params["_meta"];
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    if meta
        .get("io.modelcontextprotocol/clientCapabilities")
        .is_none()
    {
        meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    }
    if meta.get("io.modelcontextprotocol/clientInfo").is_none() {
        meta["io.modelcontextprotocol/clientInfo"] =
            json!({"name": "portcullis-tests", "version": "1"});
    }
}

/// A 2026-07-28 request, with the headers the revision requires.
pub async fn modern_call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    id: u64,
    method: &str,
    mut params: Value,
) -> (u16, Value) {
    add_modern_meta(&mut params);
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut req = client
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(name) = name {
        req = req.header("mcp-name", name);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, last_message(&text))
}

/// The body as JSON, or the last `data:` message of an SSE body.
pub fn last_message(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str(text) {
        return v;
    }
    let mut last = Value::Null;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            last = serde_json::from_str(&data).unwrap_or(Value::Null);
            data.clear();
        }
    }
    if !data.is_empty() {
        last = serde_json::from_str(&data).unwrap_or(Value::Null);
    }
    last
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// Starts the package once outside the gateway (this is what fetches it into the npx cache)
/// and checks that it answers `initialize`. Returns false when the test should be skipped.
pub fn everything_available() -> bool {
    let skip = std::env::var("PORTCULLIS_SKIP_NPX").is_ok_and(|v| v == "1");
    match probe_package() {
        Ok(()) => true,
        Err(why) if skip => {
            eprintln!(
                "SKIPPED: {EVERYTHING} is not available through npx ({why}); PORTCULLIS_SKIP_NPX=1 is set"
            );
            false
        }
        Err(why) => panic!(
            "{EVERYTHING} is not available through npx: {why}. Set PORTCULLIS_SKIP_NPX=1 to skip these tests where the npm registry is unreachable."
        ),
    }
}

fn probe_package() -> Result<(), String> {
    let mut child = Command::new("npx")
        .args(["-y", EVERYTHING, "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run npx: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}});
    let _ = writeln!(stdin, "{init}");
    let _ = stdin.flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["id"] == 1
            {
                let _ = tx.send(v);
                return;
            }
        }
    });
    // The first run downloads the package: be generous.
    let answer = rx.recv_timeout(Duration::from_secs(180));
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    match answer {
        Ok(v) if v["result"]["serverInfo"].is_object() => Ok(()),
        Ok(v) => Err(format!("unexpected answer to initialize: {v}")),
        Err(_) => Err("no answer to initialize within 180 s".into()),
    }
}

/// Every JSON-RPC message of a body: the one JSON message, or each `data:` of an SSE stream.
pub fn messages(text: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return vec![v];
    }
    let mut out = Vec::new();
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            out.push(
                serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("bad SSE data {data:?}: {e}")),
            );
            data.clear();
        }
    }
    out
}

/// Runs the real CLI as `key`'s holder against the admin API at `admin`: (success, stdout,
/// stderr).
pub fn cli(admin: &str, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env("PORTCULLIS_TOKEN", key)
        .env("PORTCULLIS_ADMIN_URL", admin)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
