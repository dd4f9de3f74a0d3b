//! What configuration reload costs a request: every exchange takes the rules in force
//! from [`LiveRules`] (an `ArcSwap`) instead of holding one `Arc<Policy>`. Measured on the
//! decision itself, an allowed tool call under a small policy (so the overhead is not hidden
//! in a long evaluation), single-threaded and with a second thread loading the rules in a
//! loop (readers on other cores share the reference count).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_config::Config;
use portcullis_guard::{LiveRules, Masks, Rules};
use portcullis_identity::Authenticator;
use portcullis_model::{
    Action, AuthMethod, Identity, IdentityKind, McpKind, McpOperation, Operation, TargetKind,
};
use portcullis_policy::Policy;

const CONFIG: &str = r#"
[targets.billing]
kind = "mcp"
command = ["server"]

[[rules]]
name = "agents read"
who.groups = ["agents"]
target = "billing"
tools = ["get_*", "list_*"]

[[rules]]
name = "no deletes"
target = "billing"
tools = ["delete_*"]
decision = "deny"
"#;

fn bench(c: &mut Criterion) {
    let config = Config::parse(Path::new("bench.toml"), CONFIG.to_string()).unwrap();
    let policy = Arc::new(Policy::compile(&config).unwrap());
    let live = LiveRules::new(Rules::new(
        Arc::new(Authenticator::new(&config.identity).unwrap()),
        policy.clone(),
        Masks::compile(&config.masks).unwrap(),
        None,
    ));
    let identity = Identity {
        issuer: "portcullis:api-key".into(),
        subject: "agent".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    };
    let action = Action {
        target: "billing",
        target_kind: TargetKind::Mcp,
        operation: Operation::Mcp(McpOperation::named(McpKind::Tool, "get_invoice", None)),
        findings: &[],
        grants: &[],
    };
    let mut group = c.benchmark_group("decide");
    group.bench_function("one Arc<Policy> (before reload)", |b| {
        b.iter(|| black_box(policy.decide(black_box(&identity), black_box(&action))))
    });
    group.bench_function("rules in force from LiveRules", |b| {
        b.iter(|| {
            let rules = live.load();
            black_box(
                rules
                    .policy
                    .decide(black_box(&identity), black_box(&action)),
            )
        })
    });
    // Another core takes the rules at the same time, as concurrent requests do.
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (live, stop) = (live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(live.load());
            }
        })
    };
    group.bench_function(
        "rules in force from LiveRules, another thread loading",
        |b| {
            b.iter(|| {
                let rules = live.load();
                black_box(
                    rules
                        .policy
                        .decide(black_box(&identity), black_box(&action)),
                )
            })
        },
    );
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
