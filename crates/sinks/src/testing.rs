//! Test support for the sinks' receivers (feature `testing`): a signed audit log to stream
//! from, a certificate authority, an rsyslogd and a nats-server run as children of the
//! test. Shared by this crate's tests and the gateway's end-to-end tests, so each receiver
//! is set up one way. Everything here panics on failure: it is for tests only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_audit::checkpoint::{Ed25519Signer, Verifier};
use portcullis_audit::{AuditLog, CheckpointSettings};
use portcullis_config::{ClientTls, Durability};

use crate::engine::Context;

/// The origin of the test logs.
pub const ORIGIN: &str = "portcullis/test-gw";

/// Where Debian installs nats-server.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A fresh checkpoint signing key.
pub fn signer() -> Arc<Ed25519Signer> {
    let pkcs8 = Ed25519Signer::generate_pkcs8().unwrap();
    Arc::new(Ed25519Signer::from_pkcs8("test-log-key", &pkcs8).unwrap())
}

/// A signed log in `dir` (origin [`ORIGIN`]), with a checkpoint every 50 ms that saw
/// events and every `every` events.
pub fn open_log(
    dir: &Path,
    signer: &Arc<Ed25519Signer>,
    durability: Durability,
    every: u64,
) -> AuditLog {
    AuditLog::open_signed(
        dir,
        "test-gw",
        durability,
        CheckpointSettings {
            origin: ORIGIN.into(),
            signer: signer.clone(),
            interval: Duration::from_millis(50),
            every,
        },
    )
    .unwrap()
}

/// What the sinks need to stream the log in `dir`.
pub fn context(dir: &Path, log: &AuditLog) -> Context {
    Context {
        data_dir: dir.to_path_buf(),
        origin: ORIGIN.into(),
        committed: Some(log.committed()),
    }
}

/// A signed log in a temporary directory, with what the sinks and a verifier need of it.
pub struct SignedLog {
    pub dir: tempfile::TempDir,
    /// The log's data directory.
    pub data: PathBuf,
    pub log: AuditLog,
    /// The verifier of the log's checkpoints.
    pub key: Verifier,
    pub context: Context,
}

impl SignedLog {
    /// A new log (checkpoints every 50 ms with events, and every 10 events).
    pub fn new(durability: Durability) -> SignedLog {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let signer = signer();
        let log = open_log(&data, &signer, durability, 10);
        let context = context(&data, &log);
        SignedLog {
            dir,
            data,
            key: Verifier::for_signer(signer.as_ref()),
            log,
            context,
        }
    }
}

/// Polls `done` every 25 ms until it holds; panics after `deadline`.
pub async fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}

/// A certificate authority made with rcgen, for receivers' and clients' certificates.
pub struct Ca {
    pub issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A certificate for `names` (server or client): (certificate PEM, key PEM).
    pub fn issue(
        &self,
        names: &[&str],
        purpose: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.extended_key_usages = vec![purpose];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A certificate for `names` (a server's, or a client's when `client`), written as
    /// `<stem>.pem` and `<stem>.key` in `dir`.
    pub fn issue_files(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        client: bool,
    ) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(
            names,
            if client {
                rcgen::ExtendedKeyUsagePurpose::ClientAuth
            } else {
                rcgen::ExtendedKeyUsagePurpose::ServerAuth
            },
        );
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }

    /// Writes the CA's certificate (PEM) to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).unwrap();
        path.to_path_buf()
    }
}

/// The files of a TLS receiver and of the sink that talks to it.
pub struct TlsFiles {
    /// The CA that signed the receiver's certificate (and the client's).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    pub fn write(dir: &Path, ca: &Ca) -> TlsFiles {
        let (server_cert, server_key) = ca.issue(
            &["syslog.test", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = ca.issue(
            &["gateway.test"],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };
        std::fs::write(&files.ca, ca.issuer.pem()).unwrap();
        std::fs::write(&files.server_cert, server_cert).unwrap();
        std::fs::write(&files.server_key, server_key).unwrap();
        std::fs::write(&files.client_cert, client_cert).unwrap();
        std::fs::write(&files.client_key, client_key).unwrap();
        files
    }

    /// The sink's side: trust `ca`, present the client certificate, and check the
    /// receiver's certificate for `syslog.test` (it is reached at 127.0.0.1).
    pub fn client(&self, ca: &Path) -> ClientTls {
        ClientTls {
            ca: Some(ca.to_path_buf()),
            client_cert: Some((self.client_cert.clone(), self.client_key.clone())),
            server_name: Some("syslog.test".into()),
        }
    }
}

/// An rsyslogd in the foreground with a configuration of its own, on a port of its own.
pub struct Rsyslog {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

pub fn rsyslogd() -> &'static str {
    for path in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(path).exists() {
            return path;
        }
    }
    panic!("rsyslogd is needed: apt-get install rsyslog rsyslog-gnutls (see .ci/run)");
}

impl Rsyslog {
    /// Starts one listening on a free port, over TLS (with client certificates required)
    /// when `tls` is given.
    pub fn start(dir: &Path, tls: Option<&TlsFiles>) -> Rsyslog {
        let dir = dir.join("rsyslog");
        std::fs::create_dir_all(&dir).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            std::fs::write(dir.join("rsyslog.conf"), rsyslog_config(&dir, port, tls)).unwrap();
            let mut receiver = Rsyslog {
                dir: dir.clone(),
                port,
                child: None,
            };
            // Another test may take the port between our look and rsyslog's bind: then
            // another port.
            if receiver.spawn() {
                return receiver;
            }
        }
        panic!(
            "rsyslogd did not start: {}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        );
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts rsyslogd with the configuration in `dir`; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr"))
            .unwrap();
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("pid"))
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .spawn()
            .expect("cannot start rsyslogd");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("rsyslogd exited: {status}");
                self.child = None;
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// SIGKILL: the receiver dies without a goodbye, its connections closed by the kernel.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(
            self.spawn(),
            "rsyslogd did not restart on port {}",
            self.port
        );
    }

    /// The file of the messages as received.
    pub fn raw_file(&self) -> PathBuf {
        self.dir.join("raw.log")
    }

    /// The messages as received (`%rawmsg%`), one a line.
    pub fn raw(&self) -> String {
        std::fs::read_to_string(self.dir.join("raw.log")).unwrap_or_default()
    }

    /// `PRI TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD-JSON` as rsyslog parsed them.
    pub fn parsed(&self) -> String {
        std::fs::read_to_string(self.dir.join("parsed.log")).unwrap_or_default()
    }

    /// The end of `raw.log`, for polling a large one.
    pub fn tail(&self) -> String {
        use std::io::{Read as _, Seek as _};
        let Ok(mut file) = std::fs::File::open(self.dir.join("raw.log")) else {
            return String::new();
        };
        let len = file.metadata().unwrap().len();
        file.seek(std::io::SeekFrom::Start(len.saturating_sub(64 << 10)))
            .unwrap();
        let mut tail = Vec::new();
        file.take(64 << 10).read_to_end(&mut tail).unwrap();
        String::from_utf8_lossy(&tail).into_owned()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// rsyslog's configuration: one imtcp listener (octet-counted framing is on by default),
/// messages from APP-NAME `portcullis` written raw and parsed. `maxMessageSize` is raised
/// from 8 KiB, as the sink's documentation asks: rsyslog cuts longer messages. The main
/// queue gets one worker: with more, rsyslog writes its batches (256 messages) in whatever
/// order its workers finish them, and the tests check the order the sink sent.
pub fn rsyslog_config(dir: &Path, port: u16, tls: Option<&TlsFiles>) -> String {
    let d = dir.display();
    let (global_tls, module_tls) = match tls {
        None => (String::new(), String::new()),
        Some(t) => (
            format!(
                "defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                t.ca.display(),
                t.server_cert.display(),
                t.server_key.display()
            ),
            // RFC 5425: TLS, the client's certificate checked against the CA.
            "streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"x509/certvalid\"".into(),
        ),
    };
    format!(
        r#"global(workDirectory="{d}" maxMessageSize="256k" {global_tls})
main_queue(queue.workerThreads="1")
module(load="imtcp" {module_tls})
module(load="mmpstrucdata")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="parsed" type="list") {{
  property(name="pri") constant(value=" ")
  property(name="timereported" dateFormat="rfc3339") constant(value=" ")
  property(name="hostname") constant(value=" ")
  property(name="app-name") constant(value=" ")
  property(name="procid") constant(value=" ")
  property(name="msgid") constant(value=" ")
  property(name="$!rfc5424-sd!portcullis@32473") constant(value="\n")
}}
if $app-name == "portcullis" then {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{d}/raw.log" template="raw")
  action(type="omfile" file="{d}/parsed.log" template="parsed")
}}
"#
    )
}

/// A nats-server of the test's own, on a port and store directory that survive a kill.
pub struct OwnNats {
    pub port: u16,
    store: PathBuf,
    /// More arguments (TLS, authentication).
    extra: Vec<String>,
    child: Option<Child>,
}

impl OwnNats {
    pub fn start(store: &Path) -> OwnNats {
        OwnNats::start_with(store, &[])
    }

    pub fn start_with(store: &Path, extra: &[String]) -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = OwnNats {
            port,
            store: store.to_path_buf(),
            extra: extra.to_vec(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(NATS_SERVER)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(&self.store)
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server runs (apt-get install nats-server)");
            // Ready once it accepts; if it exited (the port still held), try again.
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a server that hangs with its
    /// connections open, as behind a network partition.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, pid.as_str()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no shutdown, no flush, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}
