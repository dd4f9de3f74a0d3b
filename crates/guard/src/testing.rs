//! A guard for tests: the real policy engine, audit log (strict) and approvals store, in a
//! directory the test owns, so an adapter's session tests run the whole pipeline without a
//! network. Behind the `testing` feature; never in the binary.

use std::path::Path;
use std::sync::Arc;

use portcullis_approvals::{ApprovalSettings, Approvals};
use portcullis_audit::{AuditLog, AuditReader};
use portcullis_config::{Config, Durability};
use portcullis_identity::Authenticator;
use portcullis_policy::Policy;
use serde_json::Value;

use crate::{Guard, Masks, Recorder};

/// The guard of `config` with its stores in `dir`, and the approvals service (to decide
/// held requests as a test's approver would).
pub async fn guard(config: &Config, dir: &Path) -> (Arc<Guard>, Approvals) {
    let audit = AuditLog::open(dir, "test", Durability::Strict).expect("audit log");
    guard_over(config, dir, audit).await
}

/// [`guard`] over an audit log the test opened (a signing one, to verify it afterwards).
pub async fn guard_over(config: &Config, dir: &Path, audit: AuditLog) -> (Arc<Guard>, Approvals) {
    let settings = ApprovalSettings {
        approvals: config.approvals.clone(),
        admin_url: config.admin_url(),
        console_url: config.console_url(),
    };
    let approvals = Approvals::open(dir, audit.clone(), &settings, None)
        .await
        .expect("approvals store");
    let masks = Masks::compile(&config.masks).expect("masks");
    let recorder = Recorder::from_config(&config.recording, &masks).expect("recording");
    let guard = Guard::new(
        Arc::new(Authenticator::new(&config.identity).expect("identity")),
        Arc::new(Policy::compile(config).expect("policy")),
        approvals.clone(),
        audit,
        masks,
        recorder,
    );
    (guard, approvals)
}

/// The events of type `ty` recorded in `dir`, oldest first.
pub fn events(dir: &Path, ty: &str) -> Vec<Value> {
    AuditReader::open(dir)
        .expect("audit log")
        .last(100_000)
        .expect("events")
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<Value>(&body).expect("an event is JSON"))
        .filter(|v| v["type"] == ty)
        .collect()
}
