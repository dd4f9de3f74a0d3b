//! Path templates of HTTP rules (`http.paths`): `/customers/{id}`, `/orders/*`, `/files/**`.
//!
//! A template is matched segment by segment against a request path that the HTTP adapter has
//! already decoded and normalised (no `.`, `..` or empty segment, no encoded `/`):
//!
//! - a literal segment matches itself, case-sensitively;
//! - `{name}` matches any one segment and binds it to `name` (the rule's `params.name`);
//! - `*` matches any one segment;
//! - `**`, only as the last segment, matches whatever follows, including nothing.
//!
//! A trailing `/` is ignored on both sides, so `/admin/` is the path `/admin`: a deny rule on
//! `/admin` cannot be walked around by adding a slash.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Any,
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<Segment>,
    /// Ends in `**`.
    rest: bool,
}

impl PathTemplate {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with '/'"));
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let segment = match *part {
                "" => return Err(format!("{text:?} has an empty segment ('//')")),
                "." | ".." => {
                    return Err(format!(
                        "{text:?} has a {part:?} segment, which no request path has (they are resolved or refused before matching)"
                    ));
                }
                "**" if last => {
                    rest = true;
                    continue;
                }
                "**" => return Err(format!("{text:?}: '**' may only be the last segment")),
                "*" => Segment::Any,
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        || name.as_bytes()[0].is_ascii_digit()
                    {
                        return Err(format!(
                            "{text:?}: parameter {p} must be a name of letters, digits and '_' (not starting with a digit)"
                        ));
                    }
                    Segment::Param(name.to_string())
                }
                p if p.contains(['{', '}', '*', '?']) => {
                    return Err(format!(
                        "{text:?}: segment {p:?} mixes a pattern with text; a segment is a literal, {{name}}, * or (last) **"
                    ));
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(segment);
        }
        let names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(format!("{text:?}: parameter {{{name}}} appears twice"));
            }
        }
        Ok(PathTemplate {
            text: text.to_string(),
            segments,
            rest,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (decoded and normalised, starting with `/`) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// The parameters bound by matching `path`, in template order; `None` when it does not
    /// match.
    pub fn params<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let mut params = Vec::new();
        self.walk(path, |name, value| params.push((name, value)))
            .then_some(params)
    }

    fn walk<'t, 'p>(&'t self, path: &'p str, mut bind: impl FnMut(&'t str, &'p str)) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut parts = body.split('/').filter(|_| !body.is_empty());
        for segment in &self.segments {
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return false,
                Segment::Param(name) => bind(name, part),
                Segment::Any => {}
            }
        }
        self.rest || parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::PathTemplate;

    fn t(text: &str) -> PathTemplate {
        PathTemplate::parse(text).unwrap()
    }

    #[test]
    fn literals_params_and_wildcards() {
        let one = t("/customers/{id}");
        assert!(one.matches("/customers/42"));
        assert!(one.matches("/customers/42/"));
        assert!(!one.matches("/customers"));
        assert!(!one.matches("/customers/42/refund"));
        assert!(!one.matches("/Customers/42"));
        assert_eq!(one.params("/customers/c-7"), Some(vec![("id", "c-7")]));
        let any = t("/orders/*/items");
        assert!(any.matches("/orders/9/items"));
        assert!(!any.matches("/orders/items"));
        let rest = t("/files/**");
        assert!(rest.matches("/files"));
        assert!(rest.matches("/files/a/b/c"));
        assert!(!rest.matches("/filesystem"));
        let root = t("/");
        assert!(root.matches("/"));
        assert!(!root.matches("/x"));
        assert!(t("/**").matches("/anything/at/all"));
        assert!(t("/admin").matches("/admin/"));
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, says) in [
            ("customers", "start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/../b", "\"..\" segment"),
            ("/**/x", "last segment"),
            ("/refund_*", "mixes a pattern"),
            ("/{}", "parameter"),
            ("/{1x}", "parameter"),
            ("/{id}/{id}", "appears twice"),
        ] {
            let err = PathTemplate::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
