//! `when` conditions (CEL): the variables of one decision, converted from the action only
//! when a condition mentions them, and how a condition's outcome is judged.

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) use cel::Env as CelEnv;
use cel::objects::{Key, Map as CelMap};
use cel::{Context as CelContext, Program, Value as CelValue};
use portcullis_model::{Action, AuthMethod, Identity, SqlStatement};

/// A compiled `when`.
pub(crate) struct Condition {
    pub(crate) program: Program,
    /// Which of [`VARIABLES`] the program mentions: only those are converted and bound, so
    /// `identity.kind == "agent"` never pays for converting a large `args`.
    pub(crate) uses: [bool; VARIABLES.len()],
}

/// The outcome of a rule's `when`.
pub(crate) enum Cond {
    True,
    False,
    /// Evaluation failed or gave something other than a bool; the caller fails closed.
    Error(String),
}

impl Condition {
    /// Whether the condition reads `params` (which each rule binds anew).
    pub(crate) fn uses_params(&self) -> bool {
        self.uses[PARAMS]
    }

    /// Evaluates the condition on one decision's variables (converting only those it uses).
    pub(crate) fn evaluate(&self, env: &Arc<CelEnv>, vars: &mut CelInputs<'_>) -> Cond {
        let context = vars.context(env, &self.uses);
        match self.program.execute(&context) {
            Ok(CelValue::Bool(true)) => Cond::True,
            Ok(CelValue::Bool(false)) => Cond::False,
            Ok(other) => Cond::Error(format!("it gave {} instead of a bool", other.type_of())),
            Err(e) => Cond::Error(e.to_string()),
        }
    }
}

/// The variables a `when` can use.
pub(crate) const VARIABLES: [&str; 11] = [
    "args", "identity", "tool", "resource", "target", "verb", "findings", "sql", "request", "body",
    "params",
];

/// `params`' place in [`VARIABLES`]: set per rule (its own template's bindings), never
/// shared between rules.
const PARAMS: usize = 10;

/// The CEL variables of one decision, each converted only when a `when` that mentions it is
/// first evaluated (so rules without conditions cost nothing) and then shared by every
/// condition of the decision.
pub(crate) struct CelInputs<'a> {
    identity: &'a Identity,
    action: &'a Action<'a>,
    values: [Option<CelValue>; VARIABLES.len()],
}

impl<'a> CelInputs<'a> {
    pub(crate) fn new(identity: &'a Identity, action: &'a Action<'a>) -> Self {
        CelInputs {
            identity,
            action,
            values: Default::default(),
        }
    }

    fn convert(&self, variable: usize) -> CelValue {
        let action = self.action;
        match VARIABLES[variable] {
            "args" => match action.arguments() {
                Some(args) => json_to_cel(args),
                None => CelValue::Map(CelMap {
                    map: Arc::new(HashMap::new()),
                }),
            },
            "identity" => identity_to_cel(self.identity),
            "tool" | "resource" => CelValue::from(action.resource().unwrap_or("")),
            "target" => CelValue::from(action.target),
            "findings" => string_list(action.findings),
            "sql" => sql_to_cel(action.sql()),
            "request" => request_to_cel(action),
            "body" => match action.http().and_then(|req| req.body) {
                Some(body) => json_to_cel(body),
                None => CelValue::Null,
            },
            "params" => CelValue::Map(CelMap {
                map: Arc::new(HashMap::new()),
            }),
            _ => CelValue::from(action.verb()),
        }
    }

    /// The path of an HTTP request, for the rule that binds `params` from it.
    pub(crate) fn http_path(&self) -> Option<&'a str> {
        self.action.http().map(|req| req.path)
    }

    /// Binds `params` for the next condition: one rule's template bindings.
    pub(crate) fn set_params(&mut self, params: Vec<(String, String)>) {
        let map: HashMap<Key, CelValue> = params
            .into_iter()
            .map(|(k, v)| (cel_key(&k), CelValue::String(Arc::new(v))))
            .collect();
        self.values[PARAMS] = Some(CelValue::Map(CelMap { map: Arc::new(map) }));
    }

    fn context(&mut self, env: &Arc<CelEnv>, uses: &[bool]) -> CelContext<'static, 'static> {
        let mut context = CelContext::with_env(env.clone());
        for (i, name) in VARIABLES.iter().enumerate() {
            if !uses[i] {
                continue;
            }
            if self.values[i].is_none() {
                self.values[i] = Some(self.convert(i));
            }
            if let Some(value) = &self.values[i] {
                // Cloning a CEL value clones an `Arc` for strings, lists and maps.
                context.add_variable_from_value(*name, value.clone());
            }
        }
        context
    }
}

fn cel_key(key: &str) -> Key {
    Key::String(Arc::new(key.to_string()))
}

fn string_list(items: &[String]) -> CelValue {
    CelValue::List(Arc::new(
        items.iter().map(|s| CelValue::from(s.as_str())).collect(),
    ))
}

/// `sql`: the statement as the adapter classified it; for other actions `kind` is `""` and
/// the lists are empty, so `"x" in sql.tables` is simply false.
fn sql_to_cel(stmt: Option<&SqlStatement>) -> CelValue {
    let empty = SqlStatement::default();
    let stmt = stmt.unwrap_or(&empty);
    let map: HashMap<Key, CelValue> = [
        ("kind", CelValue::from(stmt.kind.as_str())),
        ("kinds", string_list(&stmt.kinds)),
        ("tables", string_list(&stmt.tables)),
        ("functions", string_list(&stmt.functions)),
        ("no_where", CelValue::Bool(stmt.no_where)),
    ]
    .into_iter()
    .map(|(k, v)| (cel_key(k), v))
    .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

/// `request`: an HTTP request's method, path, query (each key's values as a list, in order)
/// and headers (lower-case names, credentials left out by the adapter; a repeated header's
/// values joined with `, `). For other actions every field is empty.
fn request_to_cel(action: &Action<'_>) -> CelValue {
    let (method, path, query, headers) = match action.http() {
        Some(req) => (req.method, req.path, req.query, req.headers),
        None => ("", "", &[][..], &[][..]),
    };
    let mut query_map: HashMap<Key, Vec<CelValue>> = HashMap::new();
    for (k, v) in query {
        query_map
            .entry(cel_key(k))
            .or_default()
            .push(CelValue::from(v.as_str()));
    }
    let mut header_map: HashMap<Key, String> = HashMap::new();
    for (k, v) in headers {
        header_map
            .entry(cel_key(k))
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let map: HashMap<Key, CelValue> = [
        ("method", CelValue::from(method)),
        ("path", CelValue::from(path)),
        (
            "query",
            CelValue::Map(CelMap {
                map: Arc::new(
                    query_map
                        .into_iter()
                        .map(|(k, v)| (k, CelValue::List(Arc::new(v))))
                        .collect(),
                ),
            }),
        ),
        (
            "headers",
            CelValue::Map(CelMap {
                map: Arc::new(
                    header_map
                        .into_iter()
                        .map(|(k, v)| (k, CelValue::String(Arc::new(v))))
                        .collect(),
                ),
            }),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (cel_key(k), v))
    .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

fn identity_to_cel(identity: &Identity) -> CelValue {
    let groups: Vec<CelValue> = identity
        .groups
        .iter()
        .map(|g| CelValue::from(g.as_str()))
        .collect();
    let auth_method = match identity.auth_method {
        AuthMethod::Oidc => "oidc",
        AuthMethod::ApiKey => "api_key",
        AuthMethod::Local => "local",
    };
    let map: HashMap<Key, CelValue> = [
        ("subject", CelValue::from(identity.subject.as_str())),
        ("issuer", CelValue::from(identity.issuer.as_str())),
        ("kind", CelValue::from(identity.kind.as_str())),
        ("groups", CelValue::List(Arc::new(groups))),
        ("auth_method", CelValue::from(auth_method)),
    ]
    .into_iter()
    .map(|(k, v)| (cel_key(k), v))
    .collect();
    CelValue::Map(CelMap { map: Arc::new(map) })
}

/// JSON to CEL. Integers become CEL `int` where they fit (so `args.amount > 500` compares
/// like with like), larger ones `uint`, the rest `double`.
fn json_to_cel(value: &serde_json::Value) -> CelValue {
    use serde_json::Value as J;
    match value {
        J::Null => CelValue::Null,
        J::Bool(b) => CelValue::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                CelValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                CelValue::UInt(u)
            } else {
                CelValue::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => CelValue::String(Arc::new(s.clone())),
        J::Array(items) => CelValue::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(fields) => CelValue::Map(CelMap {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (cel_key(k), json_to_cel(v)))
                    .collect(),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn cel_over_arguments() {
        let p = policy(AMOUNT);
        let big = json!({"amount": 900});
        let small = json!({"amount": 100});
        let fraction = json!({"amount": 500.5});
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&big)))),
            ("hold", "big refunds")
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&small)))),
            ("allow", "refunds")
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("refund", Some(&fraction)))),
            ("hold", "big refunds")
        );
    }

    #[test]
    fn cel_over_identity_and_action() {
        let p = policy(
            "[[rules]]\nname = \"admins\"\ntarget = \"billing\"\ntools = [\"*\"]\nwhen = '\"admins\" in identity.groups && identity.kind == \"human\" && tool == \"wipe\" && target == \"billing\" && verb == \"tools/call\" && identity.auth_method == \"oidc\"'\n",
        );
        let admin = who("root", IdentityKind::Human, &["admins"]);
        assert_eq!(
            label(&p.decide(&admin, &call("wipe", None))),
            ("allow", "admins")
        );
        assert!(!p.decide(&agent(), &call("wipe", None)).is_allow());
        assert!(!p.decide(&admin, &call("other", None)).is_allow());
    }

    #[test]
    fn cel_errors_fail_closed() {
        // `args.missing` has no such key: an evaluation error.
        let p = policy(
            "[[rules]]\nname = \"maybe deny\"\ntarget = \"billing\"\ntools = [\"d\"]\ndecision = \"deny\"\nreason = \"too risky\"\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"maybe hold\"\ntarget = \"billing\"\ntools = [\"h\"]\ndecision = \"hold\"\napprovers = [\"leads\"]\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"maybe allow\"\ntarget = \"billing\"\ntools = [\"a\", \"d\", \"h\"]\nwhen = \"args.missing > 1\"\n\
             [[rules]]\nname = \"not bool\"\ntarget = \"billing\"\ntools = [\"n\"]\nwhen = \"args\"\n",
        );
        let v = p.decide(&agent(), &call("d", None));
        assert_eq!(label(&v), ("deny", "maybe deny"));
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert!(
            reason.starts_with("too risky") && reason.contains("could not be evaluated"),
            "{reason}"
        );
        assert_eq!(
            label(&p.decide(&agent(), &call("h", None))),
            ("hold", "maybe hold")
        );
        let v = p.decide(&agent(), &call("a", None));
        assert_eq!(label(&v), ("deny", "default-deny"));
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert!(
            reason.contains("maybe allow") && reason.contains("could not be evaluated"),
            "{reason}"
        );
        let v = p.decide(&agent(), &call("n", None));
        assert_eq!(label(&v), ("deny", "default-deny"));
        assert!(matches!(&v.decision, Decision::Deny { reason } if reason.contains("bool")));
    }

    #[test]
    fn cel_over_sql() {
        let p = pg_policy(
            "[[rules]]\nname = \"audit reads held\"\ntarget = \"db\"\nhold.statements = [\"select\"]\napprovers = [\"dba\"]\nwhen = '\"audit.log\" in sql.tables || sql.no_where'\n\
             [[rules]]\nname = \"reads\"\ntarget = \"db\"\nallow.statements = [\"select\"]\nwhen = 'sql.kind == \"select\" && size(sql.kinds) == 1 && !(\"pg_sleep\" in sql.functions)'\n\
             [[rules]]\nname = \"tools\"\ntarget = \"billing\"\ntools = [\"*\"]\nwhen = 'sql.kind == \"\" && size(sql.tables) == 0'\n",
        );
        let plain = stmt(&["select"], &["customers"], &[], false);
        assert_eq!(label(&p.decide(&agent(), &sql(&plain))), ("allow", "reads"));
        let audit = stmt(&["select"], &["audit.log"], &[], false);
        assert_eq!(
            label(&p.decide(&agent(), &sql(&audit))),
            ("hold", "audit reads held")
        );
        assert!(p.decide(&agent(), &call("x", None)).is_allow());
    }
}
