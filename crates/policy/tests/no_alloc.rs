//! Rules without `when` are decided without touching the heap: the design's promise for
//! the hot path, checked with a counting allocator. This lives in its own test binary
//! because a global allocator needs `unsafe impl`, which the library forbids.

// The workspace denies unsafe code; this test binary is the one place with a reason for it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use portcullis_config::Config;
use portcullis_model::{
    Action, AuthMethod, DefaultSchemas, Identity, IdentityKind, McpKind, McpOperation, Operation,
    SqlStatement, TargetKind,
};
use portcullis_policy::Policy;

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other's allocations.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn decisions_without_conditions_do_not_allocate() {
    let text = "[targets.billing]\nkind = \"mcp\"\ncommand = [\"x\"]\n\
        [[rules]]\nname = \"reads\"\ntarget = \"billing\"\ntools = [\"read_*\", \"list_*\"]\nwho.groups = [\"agents\"]\nmask = \"default\"\n\
        [[rules]]\nname = \"no admin\"\ntarget = \"billing\"\ntools = [\"admin_*\", \"sys_[0-9]*\"]\ndecision = \"deny\"\n\
        [[rules]]\nname = \"refunds\"\ntarget = \"billing\"\ntools = [\"refund\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\n\
        [[rules]]\nname = \"everywhere\"\ntarget = \"*\"\ntools = [\"ping\"]\nwho.kinds = [\"agent\"]\n";
    let policy =
        Policy::compile(&Config::parse(Path::new("t.toml"), text.into()).unwrap()).unwrap();
    let identity = Identity {
        issuer: "https://idp".into(),
        subject: "bot".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["staff".into(), "agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    };
    let args = serde_json::json!({"amount": 1});
    let action = |tool| Action {
        target: "billing",
        target_kind: TargetKind::Mcp,
        operation: Operation::Mcp(McpOperation::named(McpKind::Tool, tool, Some(&args))),
        findings: &[],
        grants: &[],
    };
    let cases = [
        (action("read_invoice"), "allow"),
        (action("admin_reset"), "deny"),
        // Not a plain name, prefix or suffix: this one goes through the GlobSet.
        (action("sys_1"), "deny"),
        (action("refund"), "hold"),
        (action("ping"), "allow"),
    ];
    // Warm up: the glob matchers' regex caches are filled on first use.
    for (a, expected) in &cases {
        assert_eq!(policy.decide(&identity, a).decision.label(), *expected);
        let _ = policy.tool_visible(&identity, "billing", a.resource().unwrap());
    }
    for (a, _) in &cases {
        let n = allocations_during(|| {
            std::hint::black_box(policy.decide(&identity, a));
        });
        assert_eq!(n, 0, "decide({:?}) allocated", a.resource());
        let n = allocations_during(|| {
            std::hint::black_box(policy.tool_visible(&identity, "billing", a.resource().unwrap()));
        });
        assert_eq!(n, 0, "tool_visible({:?}) allocated", a.resource());
    }
}

#[test]
fn sql_decisions_without_conditions_do_not_allocate() {
    let text = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://db/app\"\nuser = \"gw\"\n\
        [[rules]]\nname = \"reads\"\ntarget = \"db\"\nallow.statements = [\"select\"]\nallow.tables = [\"public.customers\", \"orders\", \"sales.[a-z]*\"]\nwho.groups = [\"agents\"]\nmask = \"default\"\n\
        [[rules]]\nname = \"no secrets\"\ntarget = \"db\"\ndeny.tables = [\"secrets\"]\n\
        [[rules]]\nname = \"writes\"\ntarget = \"db\"\nhold.statements = [\"update\", \"delete\"]\napprovers = [\"dba\"]\n\
        [[rules]]\nname = \"sleep\"\ntarget = \"*\"\nallow.functions = [\"pg_sleep\"]\nallow.statements = [\"select\"]\nwho.kinds = [\"human\"]\n";
    let policy =
        Policy::compile(&Config::parse(Path::new("t.toml"), text.into()).unwrap()).unwrap();
    let identity = Identity {
        issuer: "https://idp".into(),
        subject: "bot".into(),
        display_name: None,
        kind: IdentityKind::Agent,
        groups: vec!["agents".into()],
        auth_method: AuthMethod::ApiKey,
        credential_id: None,
        act: Vec::new(),
    };
    let stmt = |kinds: &[&str], tables: &[&str], functions: &[&str]| SqlStatement {
        kind: kinds[0].into(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        no_where: false,
        privileged_functions: Vec::new(),
        flagged_functions: Vec::new(),
        // PostgreSQL's, as its adapter reports them.
        default_schemas: DefaultSchemas {
            tables: &["public"],
            functions: &["pg_catalog", "public"],
        },
    };
    let statements = [
        // `customers` unqualified matches `public.customers` through a name built on the
        // stack; `sales.[a-z]*` goes through the GlobSet.
        (
            stmt(
                &["select"],
                &["customers", "public.orders", "sales.leads"],
                &["lower"],
            ),
            "allow",
        ),
        (stmt(&["select"], &["secrets"], &[]), "deny"),
        (stmt(&["update"], &["orders"], &[]), "hold"),
        (stmt(&["select", "delete"], &["orders"], &[]), "hold"),
    ];
    let action = |s| Action {
        target: "db",
        target_kind: TargetKind::Postgres,
        operation: Operation::Sql(s),
        findings: &[],
        grants: &[],
    };
    for (s, expected) in &statements {
        assert_eq!(
            policy.decide(&identity, &action(s)).decision.label(),
            *expected
        );
    }
    for (s, _) in &statements {
        let a = action(s);
        let n = allocations_during(|| {
            std::hint::black_box(policy.decide(&identity, &a));
        });
        assert_eq!(n, 0, "decide({s:?}) allocated");
    }
}
