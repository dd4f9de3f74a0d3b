//! `Policy::decide` on the request hot path, over a 50-rule policy: an allowed call, a
//! call refused by a deny rule, and a call whose deciding rule has a CEL `when`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_config::Config;
use portcullis_model::{
    Action, AuthMethod, Identity, IdentityKind, McpKind, McpOperation, Operation, TargetKind,
};
use portcullis_policy::Policy;

/// Five targets, 50 rules: per target a spread of allows, denies and holds on tool globs,
/// group-restricted rules, a resource rule, and one conditional hold; plus `*` rules.
fn fifty_rule_config() -> Config {
    let mut text = String::new();
    for t in 0..5 {
        text.push_str(&format!(
            "[targets.t{t}]\nkind = \"mcp\"\ncommand = [\"server\"]\n\n"
        ));
    }
    let mut n = 0;
    let mut rule = |body: String| {
        text.push_str(&format!("[[rules]]\nname = \"rule {n}\"\n{body}\n"));
        n += 1;
    };
    for t in 0..5 {
        rule(format!(
            "target = \"t{t}\"\ntools = [\"read_*\", \"list_*\"]\nwho.groups = [\"agents\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"admin_*\"]\ndecision = \"deny\"\nreason = \"no admin tools\""
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"refund\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 500 && identity.kind == 'agent'\""
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"refund\"]\nwho.groups = [\"agents\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"write_*\"]\nwho.groups = [\"writers\", \"ops\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\nresources = [\"file:///docs/**\"]\nwho.kinds = [\"human\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"ops_*\"]\nwho.subjects = [\"alice\", \"bob\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\nprompts = [\"*\"]\nwho.groups = [\"agents\"]"
        ));
        rule(format!(
            "target = \"t{t}\"\ntools = [\"delete_*\", \"drop_*\"]\ndecision = \"deny\""
        ));
    }
    for i in 0..5 {
        rule(format!(
            "target = \"*\"\ntools = [\"debug_{i}_*\"]\ndecision = \"deny\""
        ));
    }
    assert_eq!(n, 50);
    Config::parse(Path::new("bench.toml"), text).expect("bench config")
}

fn bench(c: &mut Criterion) {
    let policy = Policy::compile(&fifty_rule_config()).expect("compile");
    assert_eq!(policy.rule_count(), 50);
    let identity = Identity {
        issuer: "https://idp.example".into(),
        subject: "billing-agent".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["staff".into(), "agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    };
    let args = serde_json::json!({"amount": 900, "currency": "EUR", "customer": "c-123"});
    let action = |tool| Action {
        target: "t3",
        target_kind: TargetKind::Mcp,
        operation: Operation::Mcp(McpOperation::named(McpKind::Tool, tool, Some(&args))),
        findings: &[],
        grants: &[],
    };
    let allowed = action("read_invoice");
    let denied = action("admin_reset");
    let conditional = action("refund");
    assert_eq!(policy.decide(&identity, &allowed).decision.label(), "allow");
    assert_eq!(policy.decide(&identity, &denied).decision.label(), "deny");
    assert_eq!(
        policy.decide(&identity, &conditional).decision.label(),
        "hold"
    );

    let mut group = c.benchmark_group("decide");
    group.bench_function("allowed", |b| {
        b.iter(|| policy.decide(black_box(&identity), black_box(&allowed)))
    });
    group.bench_function("denied", |b| {
        b.iter(|| policy.decide(black_box(&identity), black_box(&denied)))
    });
    group.bench_function("cel_when", |b| {
        b.iter(|| policy.decide(black_box(&identity), black_box(&conditional)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
