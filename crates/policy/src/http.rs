//! A rule's `http` sub-table: the methods and path templates of the HTTP requests it is
//! about.

use portcullis_config::{HttpMatch, PathTemplate};
use portcullis_model::HttpOperation;

/// `http.methods` and `http.paths`, compiled. An empty list matches any.
#[derive(Debug, Default)]
pub(crate) struct HttpRule {
    methods: Box<[String]>,
    paths: Box<[PathTemplate]>,
}

impl HttpRule {
    /// Compiles a validated sub-table (templates that do not parse were refused at load; one
    /// that does not here is an error all the same).
    pub(crate) fn compile(m: &HttpMatch) -> Result<HttpRule, String> {
        Ok(HttpRule {
            methods: m.methods.clone().into(),
            paths: m
                .paths
                .iter()
                .map(|p| PathTemplate::parse(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the request's method and path are the rule's.
    pub(crate) fn matches(&self, req: &HttpOperation<'_>) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && (self.paths.is_empty() || self.paths.iter().any(|t| t.matches(req.path)))
    }

    /// The first template that matches `path`, as written: the route events record.
    pub(crate) fn route(&self, path: &str) -> Option<&str> {
        self.paths
            .iter()
            .find(|t| t.matches(path))
            .map(PathTemplate::as_str)
    }

    /// What the first matching template binds in `path`.
    pub(crate) fn params(&self, path: &str) -> Option<Vec<(String, String)>> {
        self.paths.iter().find_map(|t| {
            t.params(path).map(|params| {
                params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    const API: &str = "[targets.api]\nkind = \"http\"\nupstream = \"http://127.0.0.1:9/\"\n";

    const RULES: &str = "[[rules]]\nname = \"read customers\"\ntarget = \"api\"\nhttp.methods = [\"GET\"]\nhttp.paths = [\"/customers\", \"/customers/{id}\"]\nmask = \"default\"\n\n\
        [[rules]]\nname = \"big refunds\"\ntarget = \"api\"\nhttp.methods = [\"POST\"]\nhttp.paths = [\"/customers/{id}/refund\"]\ndecision = \"hold\"\napprovers = [\"finance\"]\nwhen = \"body.amount > 500 || params.id == 'c-vip'\"\n\n\
        [[rules]]\nname = \"refunds\"\ntarget = \"api\"\nhttp.methods = [\"POST\"]\nhttp.paths = [\"/customers/{id}/refund\"]\n\n\
        [[rules]]\nname = \"no deletes\"\ntarget = \"api\"\nhttp.methods = [\"DELETE\"]\ndecision = \"deny\"\nreason = \"customers are never deleted through the API\"\n\n\
        [[rules]]\nname = \"no exports for tenant b\"\ntarget = \"api\"\nhttp.paths = [\"/exports/**\"]\ndecision = \"deny\"\nwhen = \"('x-tenant' in request.headers && request.headers['x-tenant'] == 'b') || ('scope' in request.query && 'all' in request.query.scope)\"\n\n\
        [[rules]]\nname = \"exports\"\ntarget = \"api\"\nhttp.paths = [\"/exports/**\"]\n";

    fn api_policy(rules: &str) -> Policy {
        let config = Config::parse(Path::new("test.toml"), format!("{API}{rules}")).unwrap();
        Policy::compile(&config).unwrap()
    }

    fn request<'a>(req: &'a HttpOperation<'a>) -> Action<'a> {
        Action {
            target: "api",
            target_kind: TargetKind::Http,
            operation: Operation::Http(req),
            findings: &[],
            grants: &[],
        }
    }

    fn op<'a>(
        method: &'a str,
        path: &'a str,
        body: Option<&'a serde_json::Value>,
    ) -> HttpOperation<'a> {
        HttpOperation {
            method,
            path,
            query: &[],
            headers: &[],
            body,
        }
    }

    use portcullis_model::HttpOperation;

    #[test]
    fn methods_paths_and_conditions_decide() {
        let p = api_policy(RULES);
        let get = op("GET", "/customers/c-1", None);
        let v = p.decide(&agent(), &request(&get));
        assert_eq!(label(&v), ("allow", "read customers"));
        assert_eq!(v.route.as_deref(), Some("/customers/{id}"));
        let list = op("GET", "/customers/", None);
        assert_eq!(
            p.decide(&agent(), &request(&list)).route.as_deref(),
            Some("/customers")
        );
        let small = json!({"amount": 20});
        let big = json!({"amount": 900});
        let refund = op("POST", "/customers/c-1/refund", Some(&small));
        assert_eq!(
            label(&p.decide(&agent(), &request(&refund))),
            ("allow", "refunds")
        );
        let refund = op("POST", "/customers/c-1/refund", Some(&big));
        assert_eq!(
            label(&p.decide(&agent(), &request(&refund))),
            ("hold", "big refunds")
        );
        // The template's parameter decides too.
        let vip = op("POST", "/customers/c-vip/refund", Some(&small));
        assert_eq!(
            label(&p.decide(&agent(), &request(&vip))),
            ("hold", "big refunds")
        );
        // A body without the field: the hold's condition cannot be judged, so it holds.
        let odd = json!({"note": "x"});
        let refund = op("POST", "/customers/c-1/refund", Some(&odd));
        assert_eq!(
            label(&p.decide(&agent(), &request(&refund))),
            ("hold", "big refunds")
        );
        let delete = op("DELETE", "/customers/c-1", None);
        let v = p.decide(&agent(), &request(&delete));
        assert_eq!(label(&v), ("deny", "no deletes"));
        let put = op("PUT", "/customers/c-1", None);
        let v = p.decide(&agent(), &request(&put));
        assert_eq!(label(&v), ("deny", "default-deny"));
        let Decision::Deny { reason } = &v.decision else {
            panic!()
        };
        assert_eq!(
            &**reason,
            "no rule allows PUT /customers/c-1 on api for bot"
        );
        // Methods are case-sensitive.
        let lower = op("get", "/customers/c-1", None);
        assert_eq!(label(&p.decide(&agent(), &request(&lower))).0, "deny");
    }

    #[test]
    fn query_and_headers_reach_conditions() {
        let p = api_policy(RULES);
        let headers = [("x-tenant".to_string(), "b".to_string())];
        let b = HttpOperation {
            headers: &headers,
            ..op("GET", "/exports/2026/12", None)
        };
        assert_eq!(
            label(&p.decide(&agent(), &request(&b))),
            ("deny", "no exports for tenant b")
        );
        let query = [
            ("scope".to_string(), "mine".to_string()),
            ("scope".to_string(), "all".to_string()),
        ];
        let all = HttpOperation {
            query: &query,
            ..op("GET", "/exports", None)
        };
        assert_eq!(
            label(&p.decide(&agent(), &request(&all))),
            ("deny", "no exports for tenant b")
        );
        let mine = HttpOperation {
            query: &query[..1],
            ..op("GET", "/exports", None)
        };
        assert_eq!(
            label(&p.decide(&agent(), &request(&mine))),
            ("allow", "exports")
        );
    }

    #[test]
    fn http_rules_are_checked_at_load() {
        for (rule, says) in [
            ("http.methods = [\"get\"]\n", "write \"GET\""),
            ("http.paths = [\"customers\"]\n", "must start with '/'"),
            ("http = {}\n", "an empty http table"),
            ("tools = [\"x\"]\n", "has no tools"),
            ("allow.statements = [\"select\"]\n", "SQL sub-tables"),
        ] {
            let text = format!("{API}[[rules]]\nname = \"r\"\ntarget = \"api\"\n{rule}");
            let err = Config::parse(Path::new("test.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{rule}: {err}");
        }
        let text = format!(
            "{TARGETS}[[rules]]\nname = \"r\"\ntarget = \"billing\"\nhttp.methods = [\"GET\"]\n"
        );
        let err = Config::parse(Path::new("test.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an HTTP API"), "{err}");
    }

    #[test]
    fn http_rules_change_the_version() {
        let a = api_policy(RULES);
        let b = api_policy(&RULES.replace("\"/customers\", ", ""));
        assert_ne!(a.version(), b.version());
    }
}
