//! `[[rules]]`: policy rules, their SQL sub-tables and who they apply to.

use std::collections::HashSet;
use std::time::Duration;

use portcullis_model::{IdentityKind, TargetKind};
use serde::Deserialize;
use toml::Spanned;

use crate::de::de_duration;
use crate::spans::Locator;
use crate::{Config, ConfigError, TargetSpec};

/// `[[rules]]`: one policy rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A unique name; refusals and audit events quote it.
    pub name: Spanned<String>,
    /// Free text for reviewers.
    #[serde(default)]
    pub description: Option<String>,
    /// Who the rule applies to. Empty matches every authenticated caller.
    #[serde(default)]
    pub who: Who,
    /// The target name the rule applies to, or `*` for all.
    pub target: Spanned<String>,
    /// Tool-name globs (`refund_*`). Applies to `tools/call` and to `tools/list` filtering.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource-URI globs, for `resources/read`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt-name globs, for `prompts/get`.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// `allow` (default), `deny` or `hold`. A matching deny beats a hold, which beats an allow.
    /// A rule with an SQL sub-table (`allow.*`, `deny.*` or `hold.*`) takes its decision from
    /// the sub-table's name; `decision` may then be left out, or must say the same.
    #[serde(default, rename = "decision")]
    declared_decision: Option<RuleDecision>,
    /// The rule's effective decision: `decision`, or the name of its SQL sub-table. Set at
    /// load (not a TOML key).
    #[serde(skip)]
    pub decision: RuleDecision,
    /// For database targets: `allow.statements = ["select"]`, `allow.tables = ["customers"]`
    /// ... the statements this rule allows. Each list present must cover the whole statement:
    /// every kind it performs, every table it touches. See [`SqlMatch`].
    #[serde(default)]
    pub allow: Option<SqlMatch>,
    /// For database targets: `deny.tables = ["secrets"]` ... the statements this rule denies:
    /// those that match every list present (any kind, any table, any function listed).
    #[serde(default)]
    pub deny: Option<SqlMatch>,
    /// For database targets: `hold.statements = ["update"]` ... the statements this rule holds
    /// for approval, matched as for `deny`.
    #[serde(default)]
    pub hold: Option<SqlMatch>,
    /// For HTTP targets: `http.methods = ["GET"]`, `http.paths = ["/customers/{id}"]`: the
    /// requests this rule is about. See [`HttpMatch`].
    #[serde(default)]
    pub http: Option<HttpMatch>,
    /// An optional CEL condition; the rule matches only when it is true. Variables:
    /// `args` (the call's arguments), `identity` (`subject`, `issuer`, `kind`, `groups`,
    /// `auth_method`), `tool` and `resource` (the name or URI acted on), `target`, `verb`,
    /// `findings` (detectors that found sensitive data in the arguments) and, for database
    /// targets, `sql` (`kind`, `kinds`, `tables`, `functions`, `no_where`; for other actions
    /// `kind` is `""` and the lists are empty); for HTTP targets, `request` (`method`, `path`,
    /// `query`: each key's values as a list, `headers`: lower-case names, credentials left
    /// out), `body` (the JSON body, `null` when there is none; also as `args`) and `params`
    /// (what the rule's path template bound: `params.id`).
    /// Example: `args.amount > 500`, `"audit.log" in sql.tables`. A condition that cannot
    /// be evaluated fails closed.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// For `deny`: the message the caller gets.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `hold`, and for `requires_grant`: the groups whose members may approve. The
    /// requester never may approve their own request, whatever their groups.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// For `hold` and `requires_grant`: how many distinct approvers must approve. Default: 1.
    #[serde(default = "default_min_approvals")]
    pub min_approvals: u32,
    /// For `hold` and `requires_grant`: how long a request may wait for a decision.
    /// Default: `15m`.
    #[serde(default = "default_hold_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// For `hold`: the requester must give a reason (MCP: `_meta["dev.portcullis/reason"]`;
    /// HTTP: the `Portcullis-Reason` header). Grant requests always need one.
    #[serde(default)]
    pub require_reason: bool,
    /// For `allow`: the rule allows only callers holding an active just-in-time grant
    /// (`portcullis access request`) that covers the request; `approvers` decide grants.
    #[serde(default)]
    pub requires_grant: bool,
    /// For `requires_grant`: the longest grant that may be asked for. Default: `8h`.
    #[serde(default = "default_max_grant", deserialize_with = "de_duration")]
    pub max_grant: Duration,
    /// For `allow`: the masking profile (`[masks.NAME]`, or `default`) applied to what comes
    /// back: tool results, resource contents, prompt messages.
    #[serde(default)]
    pub mask: Option<String>,
    /// For `allow` with `mask` on a database target: statements may use masked columns
    /// outside the output list (WHERE, JOIN, ORDER BY, GROUP BY ...). Off by default: each
    /// such statement tells the caller something about the hidden values (`WHERE
    /// substr(account_number, 1, 1) = '4'`), and enough of them read the values whole.
    #[serde(default)]
    pub filter_masked: bool,
}

/// An SQL sub-table of a rule (`allow`, `deny` or `hold`): which statements it is about.
///
/// Statements are classified by the database adapter: their kinds (a statement can perform
/// several, e.g. a `WITH ... DELETE ... SELECT` is `select` and `delete`), the tables and
/// views they touch, the functions they call, and whether an UPDATE or DELETE has no WHERE.
///
/// `allow` must cover the whole statement: every kind is in `statements`, every table matches
/// `tables` (an empty list: any), every *privileged* function (one that reads server files,
/// runs SQL from a string, reaches other servers, changes settings ...) matches `functions`,
/// and a statement without WHERE needs `without_where = true`. Ordinary functions need no
/// listing.
///
/// `deny` and `hold` match a statement that meets every list present: some kind in
/// `statements`, some table in `tables`, some function in `functions`, and, with
/// `without_where = true`, only an UPDATE or DELETE without WHERE. They must set at least one.
///
/// Table and function patterns are globs (`*` also crosses `.`), compared lower-case
/// (PostgreSQL folds unquoted names). An unqualified name and the same name in schema
/// `public` are the same table: `customers` matches `public.customers` and the reverse, but
/// not `sales.customers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlMatch {
    /// Statement kinds, from [`STATEMENT_KINDS`]: `select`, `insert`, `update`, `delete`,
    /// `merge`, `copy`, `ddl`, `grant`, `truncate`, `do`, `call`, `set`, `show`,
    /// `transaction`, `listen`, `notify`, `explain`, `prepare`, `execute`, `maintenance`,
    /// `lock`, `cursor`, `session`, `other`.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Table and view name globs (`customers`, `public.*`, `sales.order_*`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Function name globs. In `allow`: privileged functions the statements may call besides.
    /// In `deny`/`hold`: functions whose call the rule is about.
    #[serde(default)]
    pub functions: Vec<String>,
    /// In `allow`: an UPDATE or DELETE without WHERE (every row) is also allowed. In
    /// `deny`/`hold`: the rule is about such statements only.
    #[serde(default)]
    pub without_where: bool,
}

impl SqlMatch {
    fn is_empty(&self) -> bool {
        self.statements.is_empty()
            && self.tables.is_empty()
            && self.functions.is_empty()
            && !self.without_where
    }
}

/// The `http` sub-table of a rule: which requests of an HTTP target it is about. Each list
/// present must match; an empty list matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Methods (`GET`, `POST` ...), compared with the request's exactly (HTTP methods are
    /// case-sensitive; write them in capitals).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path templates (`/customers/{id}`, `/orders/*`, `/files/**`); see
    /// [`crate::PathTemplate`].
    #[serde(default)]
    pub paths: Vec<String>,
}

/// The statement kinds the database adapter reports and `statements` may name.
pub const STATEMENT_KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "copy",
    "ddl",
    "grant",
    "truncate",
    "do",
    "call",
    "set",
    "show",
    "transaction",
    "listen",
    "notify",
    "explain",
    "prepare",
    "execute",
    "maintenance",
    "lock",
    "cursor",
    "session",
    "other",
];

impl Rule {
    /// The rule's SQL sub-table, whichever of `allow`, `deny`, `hold` it is (at most one, as
    /// validated at load).
    pub fn sql(&self) -> Option<&SqlMatch> {
        self.allow
            .as_ref()
            .or(self.deny.as_ref())
            .or(self.hold.as_ref())
    }

    /// The decision the rule answers with: the same as `decision` after load.
    pub fn effective_decision(&self) -> RuleDecision {
        match (&self.allow, &self.deny, &self.hold) {
            (Some(_), _, _) => RuleDecision::Allow,
            (None, Some(_), _) => RuleDecision::Deny,
            (None, None, Some(_)) => RuleDecision::Hold,
            (None, None, None) => self.declared_decision.unwrap_or_default(),
        }
    }

    /// The first of the rule's MCP lists (`tools`, `resources`, `prompts`) that names
    /// something, for errors about lists a target's kind does not have.
    pub(crate) fn mcp_list(&self) -> Option<&'static str> {
        [
            ("tools", &self.tools),
            ("resources", &self.resources),
            ("prompts", &self.prompts),
        ]
        .into_iter()
        .find(|(_, l)| !l.is_empty())
        .map(|(name, _)| name)
    }

    /// Whether the rule names no tools, resources, prompts, SQL or HTTP sub-table: it covers
    /// everything on its target.
    pub fn whole_target(&self) -> bool {
        self.tools.is_empty()
            && self.resources.is_empty()
            && self.prompts.is_empty()
            && self.sql().is_none()
            && self.http.is_none()
    }
}

/// `who`: the callers a rule applies to. Each list that is present must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Who {
    /// The caller is in at least one of these groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The caller's subject is one of these.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The caller's kind is one of these (`human`, `agent`, `service`).
    #[serde(default)]
    pub kinds: Vec<IdentityKind>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDecision {
    #[default]
    Allow,
    Deny,
    Hold,
}

impl RuleDecision {
    /// `allow`, `deny` or `hold`, as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleDecision::Allow => "allow",
            RuleDecision::Deny => "deny",
            RuleDecision::Hold => "hold",
        }
    }
}

impl Config {
    /// Every rule: a unique name, a known target, globs that compile, approval settings that
    /// fit its decision, a declared masking profile. Errors are located at the rule's name.
    pub(crate) fn validate_rules(&self, loc: &Locator<'_>) -> Result<(), ConfigError> {
        let mut rule_names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let name = rule.name.get_ref();
            if name.trim().is_empty() {
                return Err(loc.error_at(
                    rule.name.span(),
                    format!("rules[{i}].name: must not be empty"),
                ));
            }
            if !rule_names.insert(name.as_str()) {
                return Err(loc.error_at(
                    rule.name.span(),
                    format!("rules[{i}].name: {name:?} is used by another rule"),
                ));
            }
            let target = rule.target.get_ref();
            if target != "*" && !self.targets.contains_key(target) {
                return Err(loc.error_at(
                    rule.target.span(),
                    format!(
                        "rules[{i}].target: no target named {target:?} (known: {})",
                        self.target_names()
                    ),
                ));
            }
            for glob in rule
                .tools
                .iter()
                .chain(&rule.resources)
                .chain(&rule.prompts)
            {
                if let Err(e) = globset::Glob::new(glob) {
                    return Err(loc.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}): bad glob {glob:?}: {e}"),
                    ));
                }
            }
            let at = |m: String| loc.error_at(rule.name.span(), format!("rules[{i}] ({name}).{m}"));
            self.validate_sql_rule(rule, &at)?;
            self.validate_http_rule(rule, &at)?;
            if rule.min_approvals == 0 {
                return Err(at("min_approvals: must be at least 1".into()));
            }
            if rule.timeout < Duration::from_secs(1) {
                return Err(at("timeout: must be at least 1s".into()));
            }
            if rule.requires_grant {
                if rule.decision != RuleDecision::Allow {
                    return Err(at(
                        "requires_grant: only an allow rule can require a grant".into()
                    ));
                }
                if rule.approvers.is_empty() {
                    return Err(at("approvers: a rule that requires a grant must name the groups that may approve grants".into()));
                }
                if rule.max_grant < Duration::from_secs(60) {
                    return Err(at("max_grant: must be at least 1m".into()));
                }
            }
            match rule.decision {
                RuleDecision::Hold if rule.approvers.is_empty() => {
                    return Err(at(
                        "approvers: a hold rule must name the groups that may approve".into(),
                    ));
                }
                RuleDecision::Deny | RuleDecision::Hold if rule.mask.is_some() => {
                    return Err(loc.error_at(
                        rule.name.span(),
                        format!("rules[{i}] ({name}).mask: only an allow rule can mask"),
                    ));
                }
                _ => {}
            }
            if rule.filter_masked && rule.mask.is_none() {
                return Err(loc.error_at(
                    rule.name.span(),
                    format!(
                        "rules[{i}] ({name}).filter_masked: only a rule that masks (an allow rule with mask) can allow filtering on masked columns"
                    ),
                ));
            }
            if let Some(mask) = &rule.mask
                && mask != "default"
                && !self.masks.contains_key(mask)
            {
                return Err(loc.error_at(
                    rule.name.span(),
                    format!(
                        "rules[{i}] ({name}).mask: no masking profile {mask:?}; declare [masks.{mask}] or use \"default\""
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A rule's SQL sub-table, and which targets its lists fit. `at` prefixes
    /// `rules[i] (name).` and locates the error at the rule.
    fn validate_sql_rule(
        &self,
        rule: &Rule,
        at: &dyn Fn(String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let tables: Vec<(&str, &SqlMatch)> = [
            ("allow", &rule.allow),
            ("deny", &rule.deny),
            ("hold", &rule.hold),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.as_ref().map(|m| (n, m)))
        .collect();
        let target = rule.target.get_ref();
        let kind = self.targets.get(target).map(TargetSpec::kind);
        let Some(&(table, sql)) = tables.first() else {
            if kind == Some(TargetKind::Postgres)
                && let Some(list) = rule.mcp_list()
            {
                return Err(at(format!(
                    "{}: target {target} is a postgres database, which has no {}; say which statements the rule is about with allow.statements, allow.tables ... (or deny.*, hold.*)",
                    list, list
                )));
            }
            return Ok(());
        };
        if tables.len() > 1 {
            return Err(at(format!(
                "{}: a rule has at most one of the SQL sub-tables allow, deny and hold (its decision); write one rule each",
                tables[1].0
            )));
        }
        if let Some(declared) = rule.declared_decision
            && declared.as_str() != table
        {
            return Err(at(format!(
                "decision: {:?} contradicts the SQL sub-table `{table}`, which makes the rule a {table} rule; leave decision out",
                declared.as_str()
            )));
        }
        if let Some(kind) = kind
            && kind != TargetKind::Postgres
        {
            return Err(at(format!(
                "{table}: target {target} is not a database ({kind:?}); SQL sub-tables are for postgres targets"
            )));
        }
        if let Some(list) = rule.mcp_list() {
            return Err(at(format!(
                "{}: a rule is about SQL statements (`{table}`) or MCP {}, not both; write two rules",
                list, list
            )));
        }
        for statement in &sql.statements {
            if !STATEMENT_KINDS.contains(&statement.to_ascii_lowercase().as_str()) {
                return Err(at(format!(
                    "{table}.statements: {statement:?} is not a statement kind (known: {})",
                    STATEMENT_KINDS.join(", ")
                )));
            }
        }
        for (field, list) in [("tables", &sql.tables), ("functions", &sql.functions)] {
            for glob in list {
                if glob.is_empty() {
                    return Err(at(format!(
                        "{table}.{field}: an empty pattern matches nothing"
                    )));
                }
                if let Err(e) = globset::Glob::new(&glob.to_ascii_lowercase()) {
                    return Err(at(format!("{table}.{field}: bad glob {glob:?}: {e}")));
                }
            }
        }
        if table != "allow" && sql.is_empty() {
            return Err(at(format!(
                "{table}: an empty {table} matches no statement; list statements, tables or functions, or set {table}.without_where = true (for every statement on the target, leave the sub-table out and set decision = \"{table}\")"
            )));
        }
        Ok(())
    }

    /// A rule's `http` sub-table: for HTTP targets only, methods that are HTTP tokens in
    /// capitals, templates that parse; and the other kinds' lists not on an HTTP target.
    fn validate_http_rule(
        &self,
        rule: &Rule,
        at: &dyn Fn(String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let target = rule.target.get_ref();
        let kind = self.targets.get(target).map(TargetSpec::kind);
        if kind == Some(TargetKind::Http) {
            if let Some(list) = rule.mcp_list() {
                return Err(at(format!(
                    "{}: target {target} is an HTTP API, which has no {}; say which requests the rule is about with http.methods and http.paths",
                    list, list
                )));
            }
            if rule.sql().is_some() {
                return Err(at(format!(
                    "target {target} is an HTTP API; SQL sub-tables (allow.*, deny.*, hold.*) are for postgres targets: use http.methods and http.paths, and decision"
                )));
            }
        }
        let Some(http) = &rule.http else {
            return Ok(());
        };
        if let Some(kind) = kind
            && kind != TargetKind::Http
        {
            return Err(at(format!(
                "http: target {target} is not an HTTP API ({kind:?}); http.methods and http.paths are for http targets"
            )));
        }
        if http.methods.is_empty() && http.paths.is_empty() {
            return Err(at(
                "http: an empty http table says nothing; list http.methods or http.paths (for every request on the target, leave it out)".into(),
            ));
        }
        for method in &http.methods {
            let token = !method.is_empty()
                && method
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(at(format!(
                    "http.methods: {method:?} is not an HTTP method"
                )));
            }
            if method.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(at(format!(
                    "http.methods: {method:?}: methods are case-sensitive and requests send them in capitals; write {:?}",
                    method.to_ascii_uppercase()
                )));
            }
        }
        for path in &http.paths {
            if let Err(e) = crate::PathTemplate::parse(path) {
                return Err(at(format!("http.paths: {e}")));
            }
        }
        Ok(())
    }

    fn target_names(&self) -> String {
        if self.targets.is_empty() {
            return "none".into();
        }
        self.targets
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn default_min_approvals() -> u32 {
    1
}
fn default_max_grant() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_hold_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

#[cfg(test)]
mod tests {
    use super::RuleDecision;
    use crate::tests::{PG, TARGET, parse};

    #[test]
    fn rule_with_unknown_target_is_located() {
        let err = parse(&format!(
            "{TARGET}\n[[rules]]\nname = \"r\"\ntarget = \"nope\"\n"
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("portcullis.toml:7:"), "{text}");
        assert!(
            text.contains("rules[0].target") && text.contains("tools"),
            "{text}"
        );
    }

    #[test]
    fn hold_without_approvers_is_refused() {
        let err = parse(&format!(
            "{TARGET}\n[[rules]]\nname = \"h\"\ntarget = \"tools\"\ndecision = \"hold\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("approvers"), "{err}");
    }

    #[test]
    fn sql_rules_are_checked() {
        let rule = |body: &str| {
            parse(&format!("{TARGET}{PG}[[rules]]\nname = \"r\"\n{body}\n"))
                .map_err(|e| e.to_string())
        };
        let config = rule(
            "target = \"db\"\nhold.statements = [\"update\", \"DELETE\"]\napprovers = [\"dba\"]",
        )
        .unwrap();
        let r = &config.rules[0];
        assert_eq!(r.decision, RuleDecision::Hold);
        assert_eq!(r.effective_decision(), RuleDecision::Hold);
        assert_eq!(r.sql().unwrap().statements, ["update", "DELETE"]);
        assert!(!r.whole_target());
        let r = rule("target = \"db\"\ndeny.tables = [\"secrets\"]\ndecision = \"deny\"").unwrap();
        assert_eq!(r.rules[0].decision, RuleDecision::Deny);
        assert!(
            rule("target = \"*\"\nallow.statements = [\"select\"]\nmask = \"default\"").is_ok()
        );
        assert!(rule("target = \"db\"\nallow = {}").is_ok());
        assert!(rule("target = \"db\"").unwrap().rules[0].whole_target());

        let line = TARGET.lines().count() + PG.lines().count() + 2;
        for (body, expected) in [
            (
                "target = \"db\"\nallow.tables = [\"a\"]\ndeny.tables = [\"b\"]",
                "rules[0] (r).deny: a rule has at most one of the SQL sub-tables",
            ),
            (
                "target = \"db\"\ndecision = \"allow\"\ndeny.tables = [\"b\"]",
                "rules[0] (r).decision: \"allow\" contradicts the SQL sub-table `deny`",
            ),
            (
                "target = \"tools\"\nallow.statements = [\"select\"]",
                "rules[0] (r).allow: target tools is not a database",
            ),
            (
                "target = \"db\"\ntools = [\"x\"]",
                "rules[0] (r).tools: target db is a postgres database",
            ),
            (
                "target = \"*\"\ntools = [\"x\"]\nallow.tables = [\"t\"]",
                "rules[0] (r).tools: a rule is about SQL statements (`allow`) or MCP tools",
            ),
            (
                "target = \"db\"\nallow.statements = [\"selekt\"]",
                "rules[0] (r).allow.statements: \"selekt\" is not a statement kind (known: select, insert,",
            ),
            (
                "target = \"db\"\ndeny = {}",
                "rules[0] (r).deny: an empty deny matches no statement",
            ),
            (
                "target = \"db\"\nhold.without_where = false\napprovers = [\"a\"]",
                "rules[0] (r).hold: an empty hold matches no statement",
            ),
            (
                "target = \"db\"\nallow.tables = [\"a[\"]",
                "rules[0] (r).allow.tables: bad glob",
            ),
            (
                "target = \"db\"\ndeny.functions = [\"\"]",
                "rules[0] (r).deny.functions: an empty pattern",
            ),
            (
                "target = \"db\"\ndeny.tables = [\"t\"]\nmask = \"default\"",
                "rules[0] (r).mask: only an allow rule can mask",
            ),
            (
                "target = \"db\"\nhold.tables = [\"t\"]",
                "rules[0] (r).approvers: a hold rule must name",
            ),
            (
                "target = \"db\"\ndeny.tables = [\"t\"]\nrequires_grant = true\napprovers = [\"a\"]",
                "rules[0] (r).requires_grant: only an allow rule can require a grant",
            ),
        ] {
            let err = rule(body).unwrap_err();
            assert!(
                err.starts_with(&format!("portcullis.toml:{line}: {expected}")),
                "{body}: {err}"
            );
        }
        let err = rule("target = \"db\"\nallow.table = [\"t\"]").unwrap_err();
        assert!(err.contains("table"), "{err}");
    }
}
