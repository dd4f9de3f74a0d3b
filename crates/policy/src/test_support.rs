//! Helpers shared by the unit tests of every module: configurations, callers, actions.

pub(crate) use crate::*;
pub(crate) use portcullis_config::Config;
pub(crate) use portcullis_model::{
    Action, ActiveGrant, AuthMethod, Decision, DefaultSchemas, FlaggedFunction, Identity,
    IdentityKind, McpKind, McpOperation, Operation, SqlStatement, TargetKind, Verdict,
};
pub(crate) use serde_json::json;
pub(crate) use std::path::Path;
pub(crate) use std::time::Duration;

pub(crate) const TARGETS: &str = "[targets.billing]\nkind = \"mcp\"\ncommand = [\"x\"]\n\n[targets.docs]\nkind = \"mcp\"\ncommand = [\"y\"]\n";

pub(crate) fn config(rules: &str) -> Config {
    Config::parse(Path::new("test.toml"), format!("{TARGETS}{rules}")).unwrap()
}

pub(crate) fn policy(rules: &str) -> Policy {
    Policy::compile(&config(rules)).unwrap()
}

pub(crate) fn who(subject: &str, kind: IdentityKind, groups: &[&str]) -> Identity {
    Identity {
        issuer: "https://idp".into(),
        subject: subject.into(),
        display_name: None,
        kind,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth_method: AuthMethod::Oidc,
        credential_id: None,
        act: Vec::new(),
    }
}

pub(crate) fn agent() -> Identity {
    who("bot", IdentityKind::Agent, &["agents"])
}

fn mcp<'a>(target: &'a str, operation: McpOperation<'a>) -> Action<'a> {
    Action {
        target,
        target_kind: TargetKind::Mcp,
        operation: Operation::Mcp(operation),
        findings: &[],
        grants: &[],
    }
}

/// Acting on the tool, resource or prompt `name` of `target`.
pub(crate) fn act<'a>(
    target: &'a str,
    kind: McpKind,
    name: &'a str,
    args: Option<&'a serde_json::Value>,
) -> Action<'a> {
    mcp(target, McpOperation::named(kind, name, args))
}

/// A protocol method (`initialize`, `completion/complete` ...), naming `name` or nothing.
pub(crate) fn protocol<'a>(target: &'a str, method: &'a str, name: Option<&'a str>) -> Action<'a> {
    mcp(
        target,
        McpOperation {
            name,
            ..McpOperation::protocol(method)
        },
    )
}

pub(crate) fn call<'a>(tool: &'a str, args: Option<&'a serde_json::Value>) -> Action<'a> {
    act("billing", McpKind::Tool, tool, args)
}

pub(crate) fn label(v: &Verdict) -> (&'static str, &str) {
    (v.decision.label(), v.rule_label())
}

pub(crate) const AMOUNT: &str = "[[rules]]\nname = \"big refunds\"\ntarget = \"billing\"\ntools = [\"refund\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.amount > 500\"\n\
    [[rules]]\nname = \"refunds\"\ntarget = \"billing\"\ntools = [\"refund\"]\n";

pub(crate) const DB: &str = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://127.0.0.1/app\"\nuser = \"gw\"\n\n";

pub(crate) fn pg_policy(rules: &str) -> Policy {
    Policy::compile(
        &Config::parse(Path::new("test.toml"), format!("{DB}{TARGETS}{rules}")).unwrap(),
    )
    .unwrap()
}

pub(crate) fn stmt(
    kinds: &[&str],
    tables: &[&str],
    functions: &[&str],
    no_where: bool,
) -> SqlStatement {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    SqlStatement {
        kind: kinds[0].to_string(),
        kinds: list(kinds),
        tables: list(tables),
        functions: list(functions),
        no_where,
        privileged_functions: functions
            .iter()
            .filter_map(|f| {
                let name = f.rsplit('.').next().unwrap_or(f);
                PRIVILEGED
                    .iter()
                    .find(|(p, _)| *p == name)
                    .map(|(_, why)| FlaggedFunction {
                        name: f.to_string(),
                        why: why.to_string(),
                    })
            })
            .collect(),
        flagged_functions: Vec::new(),
        default_schemas: POSTGRES_SCHEMAS,
    }
}

/// What the PostgreSQL adapter reports as its default schemas.
pub(crate) const POSTGRES_SCHEMAS: DefaultSchemas = DefaultSchemas {
    tables: &["public"],
    functions: &["pg_catalog", "public"],
};

/// A few privileged functions, as the PostgreSQL adapter's classifier reports them (its
/// catalogue and its tests live in the adapter).
const PRIVILEGED: &[(&str, &str)] = &[
    ("pg_read_file", "reads files on the database server"),
    ("dblink_exec", "connects to other database servers"),
    (
        "pg_sleep",
        "sleeps or takes advisory locks, which can stall other sessions",
    ),
];

pub(crate) fn sql<'a>(stmt: &'a SqlStatement) -> Action<'a> {
    Action {
        target: "db",
        target_kind: TargetKind::Postgres,
        operation: Operation::Sql(stmt),
        findings: &[],
        grants: &[],
    }
}

pub(crate) fn reason(v: &Verdict) -> &str {
    match &v.decision {
        Decision::Deny { reason } => reason,
        other => panic!("not a deny: {other:?}"),
    }
}

pub(crate) const READS: &str = "[[rules]]\nname = \"reads\"\nwho.groups = [\"agents\"]\ntarget = \"db\"\nallow.statements = [\"select\"]\nallow.tables = [\"customers\", \"orders\"]\nmask = \"pii\"\n[masks.pii]\ncolumns = [\"account_number\"]\n";
