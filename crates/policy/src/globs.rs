//! Name patterns of a rule (`tools`, `resources`, `prompts`, SQL `tables` and `functions`),
//! compiled so that the common shapes are answered without a regular expression.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// One list of globs (`tools`, `resources` or `prompts`) of a rule.
///
/// Most globs in practice are a name, `prefix_*`, `*suffix` or `*`. Those are answered with a
/// string comparison; only the rest go to a [`GlobSet`], whose `is_match` runs every matching
/// strategy it has and costs around a hundred nanoseconds even for one literal glob. The
/// shortcuts give the same answers as globset's defaults, under which `*` also crosses `/`.
#[derive(Debug)]
pub(crate) struct Globs {
    simple: Box<[Simple]>,
    complex: Option<GlobSet>,
}

#[derive(Debug)]
enum Simple {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
}

impl Simple {
    /// The characters that make globset treat a pattern as more than text.
    const META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

    fn parse(pattern: &str) -> Option<Simple> {
        let plain = |s: &str| !s.contains(Self::META);
        if pattern == "*" || pattern == "**" {
            Some(Simple::Any)
        } else if plain(pattern) {
            Some(Simple::Exact(pattern.into()))
        } else if let Some(prefix) = pattern.strip_suffix('*').filter(|p| plain(p)) {
            Some(Simple::Prefix(prefix.into()))
        } else {
            pattern
                .strip_prefix('*')
                .filter(|s| plain(s))
                .map(|suffix| Simple::Suffix(suffix.into()))
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Simple::Any => true,
            Simple::Exact(exact) => name == &**exact,
            Simple::Prefix(prefix) => name.starts_with(&**prefix),
            Simple::Suffix(suffix) => name.ends_with(&**suffix),
        }
    }
}

impl Globs {
    pub(crate) fn build(patterns: &[String]) -> Result<Globs, globset::Error> {
        let mut simple = Vec::new();
        let mut complex = GlobSetBuilder::new();
        let mut any_complex = false;
        for pattern in patterns {
            match Simple::parse(pattern) {
                Some(s) => simple.push(s),
                None => {
                    complex.add(Glob::new(pattern)?);
                    any_complex = true;
                }
            }
        }
        Ok(Globs {
            simple: simple.into(),
            complex: if any_complex {
                Some(complex.build()?)
            } else {
                None
            },
        })
    }

    /// The rule names none of these: it says nothing about this kind of operation.
    pub(crate) fn is_empty(&self) -> bool {
        self.simple.is_empty() && self.complex.is_none()
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.simple.iter().any(|s| s.matches(name))
            || self.complex.as_ref().is_some_and(|set| set.is_match(name))
    }
}

impl Default for Globs {
    fn default() -> Self {
        Globs {
            simple: Box::new([]),
            complex: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_shortcuts_agree_with_globset() {
        let patterns = [
            "*",
            "**",
            "refund",
            "refund_*",
            "*_v2",
            "re*und",
            "file:///docs/*",
            "a?c",
            "[ab]x",
            "{a,b}*",
            "*.txt",
            "a\\*b",
            "",
            "x/y*",
            "**/z",
            "*a*",
        ];
        let names = [
            "",
            "refund",
            "refund_x",
            "refund_",
            "x_v2",
            "reund",
            "refund/x",
            "file:///docs/a/b",
            "abc",
            "ax",
            "a*b",
            "a.txt",
            "x/y/z",
            "b",
            "z",
            "q/z",
        ];
        for pattern in patterns {
            let ours = Globs::build(&[pattern.to_string()]).unwrap();
            let theirs = Glob::new(pattern).unwrap().compile_matcher();
            for name in names {
                assert_eq!(
                    ours.matches(name),
                    theirs.is_match(name),
                    "{pattern:?} on {name:?}"
                );
            }
        }
    }
}
