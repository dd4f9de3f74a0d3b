//! Fast in-process detection and masking of sensitive data: PII (emails, phones, SSNs, card
//! numbers, IBANs, IP addresses), secrets (cloud and SaaS tokens, private keys, JWTs,
//! passwords in `key=value` text), your own patterns, deny-listed values, and JSON fields
//! masked by name.
//!
//! # How a text is scanned
//!
//! A [`ProfileSpec`] is compiled once into a [`Profile`]: every enabled pattern goes into one
//! multi-pattern automaton (`regex-automata`'s meta regex with the backtracker disabled, so
//! it runs a lazy DFA, or the PikeVM if the DFA gives up: finite automata both, linear in the
//! text whatever it holds). A text is scanned in a single left-to-right pass of that
//! automaton, which only proposes candidates; the checks a regular expression cannot express
//! (Luhn and issuer, mod-97 and country length, SSN ranges, octets, `Ipv6Addr` parsing, a
//! JWT header that is JSON with `alg`, "not glued to a longer number") run on candidates only.
//!
//! The patterns are short anchors with bounded lengths (`@example.`, `-----BEGIN … PRIVATE
//! KEY-----`, `password=`, the first nine digits of a card). Whatever has no bounded length
//! (an email's local part and domain, a PEM body, a JWT, a password value, the rest of a
//! card or an IBAN) is read by plain code from the anchor, once. Bounded anchors keep the
//! automaton small (about 500 MB/s on JSON) and make resuming inside a rejected candidate
//! cheap; how that keeps a rejected candidate from hiding a valid match overlapping it is on
//! `Profile::find`.
//!
//! Before the automaton, short texts (most JSON strings) go through a byte-class prefilter
//! that rules out, in one cheap pass, every detector whose shape the text cannot hold.
//!
//! # Masking
//!
//! Each match is replaced by a label (`[EMAIL]`), a partial reveal (`**** **** **** 1111`),
//! or a keyed HMAC token (`tok_3f2a…`), chosen per profile and per detector. Boundary checks
//! treat a neighbouring match as the label it becomes, so masking masked text finds nothing
//! new. A [`Report`] says which detector fired at which JSON path how often, and never holds
//! a matched value.
//!
//! The crate is pure: no I/O, no clock, no global state.
#![forbid(unsafe_code)]

mod detectors;
mod prefilter;
mod report;
mod style;

use std::collections::BTreeMap;
use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternID, meta};
use serde_json::{Map, Number, Value};

use detectors::{Builtin, KeyHint};
use prefilter::Prefilter;
pub use report::{Finding, MAX_FINDINGS, Report};
use style::{Hmac, Normal, Rule};

/// How a found value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// A label naming the detector: `[EMAIL]`, `[CREDIT_CARD]`.
    #[default]
    Redact,
    /// Letters and digits become `*` except the last `keep` ([`Style::DEFAULT_KEEP`] is the
    /// usual choice); separators stay (`**** **** **** 1111`, `***-**-6789`). Never more than
    /// half of a value's letters and digits are shown, whatever `keep` says, and a value with
    /// none is hidden whole. An email keeps its domain and hides the whole local part
    /// (`*****@example.com`); a private key and a whole JSON object or array get the label
    /// instead.
    Partial { keep: usize },
    /// `tok_` and 16 hex digits of HMAC-SHA256 under the profile's key: the same value gives
    /// the same token (cards, phones, SSNs and IBANs compared by their letters and digits,
    /// emails case-insensitively), so joins on masked data still work.
    Hash,
}

impl Style {
    /// The usual number of trailing characters a [`Style::Partial`] keeps.
    pub const DEFAULT_KEEP: usize = 4;
}

/// A check run on a custom detector's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// The digits of the match pass the Luhn checksum (non-digits are ignored).
    Luhn,
    /// The match passes ISO 7064 mod 97-10 as an IBAN does: first four characters moved to
    /// the end, letters as 10..35, remainder 1 (spaces ignored).
    Mod97,
}

/// A detector of your own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomDetector {
    /// Its name in reports and its label (`employee_id` → `[EMPLOYEE_ID]`): lowercase
    /// snake_case, distinct from the built-in names and groups.
    pub name: String,
    /// A regular expression (Rust `regex` syntax, no look-around or backreferences). It is
    /// compiled into the profile's single automaton, and takes priority over the built-ins
    /// when both match at the same place. Prefer ASCII word boundaries (`(?-u:\b)`): a
    /// Unicode `\b` makes the lazy DFA give up on non-ASCII text, and the scan of such text
    /// then runs on the (linear but much slower) PikeVM. Texts are not prefiltered when a
    /// profile has custom detectors or a deny-list.
    pub pattern: String,
    pub validator: Option<Validator>,
    /// Overrides the profile's style for this detector.
    pub style: Option<Style>,
}

/// What a profile finds and how it masks it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProfileSpec {
    /// Built-in detector or group names (`pii`, `secrets`, `all`); empty = none. Custom
    /// detectors are always on (naming them here is allowed and changes nothing).
    pub detectors: Vec<String>,
    /// Fields masked whatever they hold. A glob without a dot is matched against each JSON
    /// key at any depth (`account_number`, `*_ssn`); a glob with a dot against the dotted
    /// path of the key from the root of the value being masked, array indexes left out
    /// (`*.ssn`, `customer.card`). Both case-insensitively.
    pub fields: Vec<String>,
    /// The default style.
    pub style: Style,
    /// Style per detector name, group name (`pii`, `secrets`), `field` or `deny_list`. A
    /// detector's own entry wins over its group's.
    pub styles: BTreeMap<String, Style>,
    pub custom: Vec<CustomDetector>,
    /// Exact values masked wherever they occur (label `[DENY_LIST]`); case-sensitive.
    pub deny_list: Vec<String>,
    /// The HMAC key; required if any style is [`Style::Hash`].
    pub hmac_key: Option<Vec<u8>>,
}

impl fmt::Debug for ProfileSpec {
    // The key and the deny-listed values are themselves secrets: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileSpec")
            .field("detectors", &self.detectors)
            .field("fields", &self.fields)
            .field("style", &self.style)
            .field("styles", &self.styles)
            .field("custom", &self.custom)
            .field(
                "deny_list",
                &format_args!("[{} values]", self.deny_list.len()),
            )
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Why a profile did not compile. Messages name the offending configuration entry, never a
/// deny-listed value or the key.
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// A name in `detectors` or `styles` that is no detector, group or custom detector.
    #[error("unknown detector or group {0:?}")]
    UnknownDetector(String),
    /// A custom detector's name is not lowercase snake_case, or is taken.
    #[error(
        "custom detector name {0:?} is not usable: it must be lowercase snake_case, unique, and not a built-in name or group"
    )]
    BadDetectorName(String),
    /// A custom detector's pattern does not compile.
    #[error("custom detector {detector:?}: invalid pattern: {message}")]
    BadPattern { detector: String, message: String },
    /// A `fields` glob does not compile.
    #[error("field glob {glob:?}: {message}")]
    BadFieldGlob { glob: String, message: String },
    /// A style is `Hash` but `hmac_key` is missing or empty.
    #[error("the hash style needs an HMAC key (hmac_key)")]
    MissingHmacKey,
    /// The combined automaton could not be built (for example a deny-list too large for the
    /// size limit).
    #[error("building the detection automaton: {0}")]
    Build(String),
}

/// What a detector is, for the checks its candidates go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Builtin(Builtin),
    Custom(Option<Validator>),
    DenyList,
    Field,
}

#[derive(Debug)]
struct Det {
    name: String,
    label: String,
    kind: Kind,
    style: Style,
}

impl Det {
    fn rule(&self) -> Rule<'_> {
        let b = match self.kind {
            Kind::Builtin(b) => Some(b),
            _ => None,
        };
        Rule {
            label: &self.label,
            style: self.style,
            normal: match b {
                Some(Builtin::CreditCard | Builtin::Phone | Builtin::Ssn | Builtin::Iban) => {
                    Normal::Alnum
                }
                Some(Builtin::Email) => Normal::Lower,
                _ => Normal::Raw,
            },
            email: b == Some(Builtin::Email),
            whole: b == Some(Builtin::PrivateKey),
        }
    }
}

/// The compiled automaton, with what the scan needs to know about its patterns.
struct Engine {
    /// All patterns, leftmost-first, in priority order.
    re: meta::Regex,
    /// Per pattern, the bytes a match can start with (a 256-bit set): where a candidate is
    /// rejected, only the patterns that can start with its first byte are tried there.
    first: Vec<[u64; 4]>,
    /// Pattern index to detector index.
    det_of: Vec<u16>,
}

impl Engine {
    fn can_start(&self, pattern: usize, byte: u8) -> bool {
        self.first[pattern][usize::from(byte >> 6)] & (1 << (byte & 63)) != 0
    }
}

/// One accepted match: a byte span on char boundaries and the detector that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hit {
    start: usize,
    end: usize,
    det: u16,
}

/// Per-scan state: the rescan budget and the last `END` search of a PEM block.
struct Scan {
    budget: usize,
    pem_end: Option<(usize, Option<usize>)>,
}

impl Scan {
    fn new(budget: usize) -> Scan {
        Scan {
            budget,
            pem_end: None,
        }
    }
}

/// Where a candidate is checked from.
#[derive(Debug, Clone, Copy)]
struct At {
    /// Where the search started: no hit may start before it.
    floor: usize,
    /// The end of the previous hit: bytes before it are another match's.
    prev_end: usize,
    /// Whether a boundary check may look ahead for a match starting right after the
    /// candidate (false inside such a look-ahead, so it goes one level deep only).
    look_ahead: bool,
}

/// A compiled masking profile. Compile once, share in an `Arc`: it is `Send + Sync`, and
/// scanning takes `&self` (the automaton's per-thread caches live in an internal pool).
pub struct Profile {
    engine: Option<Engine>,
    dets: Vec<Det>,
    field: Det,
    fields: Option<Fields>,
    hmac: Option<Hmac>,
    prefilter: Prefilter,
    password: Option<u16>,
    aws_secret: Option<u16>,
    /// JSON numbers are worth formatting and scanning whatever their size (custom patterns
    /// and deny-lists may match any digits); otherwise only those long enough to be a card.
    numbers_any: bool,
    numbers_card: bool,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field(
                "detectors",
                &self
                    .dets
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("fields", &self.fields.is_some())
            .finish_non_exhaustive()
    }
}

struct Fields {
    keys: GlobSet,
    paths: GlobSet,
}

const GROUPS: [&str; 3] = ["pii", "secrets", "all"];
const RESERVED: [&str; 2] = ["field", "deny_list"];

fn group_members(group: &str) -> impl Iterator<Item = Builtin> + '_ {
    Builtin::PRIORITY.into_iter().filter(move |b| match group {
        "pii" => b.is_pii(),
        "secrets" => !b.is_pii(),
        _ => true,
    })
}

fn valid_custom_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && Builtin::from_name(name).is_none()
        && !GROUPS.contains(&name)
        && !RESERVED.contains(&name)
}

/// A regex for one deny-listed value: the literal, with word boundaries at its ends when
/// they are word characters, so `Acme` is found in `Acme Corp` but not in `Acmeville`.
fn deny_pattern(value: &str) -> String {
    let mut p = String::new();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if word(value.chars().next()) {
        p.push_str(r"(?-u:\b)");
    }
    p.push_str(&regex_syntax::escape(value));
    if word(value.chars().last()) {
        p.push_str(r"(?-u:\b)");
    }
    p
}

fn build_regex(patterns: &[String]) -> Result<meta::Regex, String> {
    let config = meta::Config::new()
        .match_kind(MatchKind::LeftmostFirst)
        // Every engine the meta regex may pick is then a finite automaton: the lazy DFA, or
        // the PikeVM if the DFA gives up. Both are linear in the text.
        .backtrack(false)
        .which_captures(regex_automata::nfa::thompson::WhichCaptures::Implicit)
        .nfa_size_limit(Some(64 << 20))
        .hybrid_cache_capacity(8 << 20);
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new())
        .build_many(patterns)
        .map_err(|e| match e.size_limit() {
            Some(limit) => format!("the patterns exceed the size limit of {limit} bytes"),
            None => e.to_string(),
        })
}

/// For each pattern, the set of bytes a match of it can start with. Each pattern's anchored
/// start state (after each kind of preceding byte: none, a word byte, a space, a newline) is
/// stepped once per byte class of a lazy DFA of the same patterns; a byte is possible unless
/// that step is dead. Built once at compile time; anything the DFA cannot answer counts as
/// possible, so the sets only ever err on the side of trying a pattern.
fn first_bytes(patterns: &[String]) -> Vec<[u64; 4]> {
    use regex_automata::hybrid::dfa::DFA;
    let every = vec![[u64::MAX; 4]; patterns.len()];
    let Ok(dfa) = DFA::builder()
        .configure(
            DFA::config()
                .starts_for_each_pattern(true)
                .unicode_word_boundary(true),
        )
        .syntax(syntax::Config::new())
        .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(64 << 20)))
        .build_many(patterns)
    else {
        return every;
    };
    let mut cache = dfa.create_cache();
    let classes = *dfa.byte_classes();
    let mut sets = vec![[0u64; 4]; patterns.len()];
    for (q, set) in sets.iter_mut().enumerate() {
        let pid = PatternID::must(q);
        for before in [None, Some(b'a'), Some(b' '), Some(b'\n')] {
            let mut memo = [None::<bool>; 256];
            for b in 0..=255u8 {
                let class = usize::from(classes.get(b));
                let possible = *memo[class].get_or_insert_with(|| {
                    let pair = [before.unwrap_or(0), b];
                    let hay = if before.is_some() {
                        &pair[..]
                    } else {
                        &pair[1..]
                    };
                    let input = Input::new(hay)
                        .range(hay.len() - 1..)
                        .anchored(Anchored::Pattern(pid));
                    match dfa.start_state_forward(&mut cache, &input) {
                        Ok(sid) => dfa
                            .next_state(&mut cache, sid, b)
                            .map_or(true, |next| !next.is_dead()),
                        Err(_) => true,
                    }
                });
                if possible {
                    set[usize::from(b >> 6)] |= 1 << (b & 63);
                }
            }
        }
    }
    sets
}

impl Profile {
    /// Compiles a profile: resolves names, checks custom patterns and globs, builds the
    /// automaton. Errors name the offending entry.
    pub fn compile(spec: &ProfileSpec) -> Result<Profile, MaskError> {
        // Which built-ins.
        let mut enabled = [false; Builtin::PRIORITY.len()];
        let customs: Vec<&str> = spec.custom.iter().map(|c| c.name.as_str()).collect();
        for name in &spec.detectors {
            if GROUPS.contains(&name.as_str()) {
                for b in group_members(name) {
                    enabled[priority_index(b)] = true;
                }
            } else if let Some(b) = Builtin::from_name(name) {
                enabled[priority_index(b)] = true;
            } else if !customs.contains(&name.as_str()) {
                return Err(MaskError::UnknownDetector(name.clone()));
            }
        }
        for name in spec.styles.keys() {
            let known = GROUPS.contains(&name.as_str())
                || RESERVED.contains(&name.as_str())
                || Builtin::from_name(name).is_some()
                || customs.contains(&name.as_str());
            if !known {
                return Err(MaskError::UnknownDetector(name.clone()));
            }
        }
        let any_hash = spec.style == Style::Hash
            || spec.styles.values().any(|s| *s == Style::Hash)
            || spec.custom.iter().any(|c| c.style == Some(Style::Hash));
        let hmac = match &spec.hmac_key {
            Some(key) if !key.is_empty() => Some(Hmac::new(key)),
            _ if any_hash => return Err(MaskError::MissingHmacKey),
            _ => None,
        };
        let style_for = |name: &str, group: Option<&str>| -> Style {
            spec.styles
                .get(name)
                .or_else(|| group.and_then(|g| spec.styles.get(g)))
                .copied()
                .unwrap_or(spec.style)
        };
        let det = |name: &str, kind: Kind, style: Style| Det {
            name: name.to_string(),
            label: format!("[{}]", name.to_ascii_uppercase()),
            kind,
            style,
        };

        // Detectors and patterns, in priority order: what the configuration names
        // explicitly (deny-list, custom detectors) wins a tie over the built-ins.
        let mut dets = Vec::new();
        let mut patterns = Vec::new();
        let mut det_of = Vec::new();
        let deny: Vec<&String> = spec.deny_list.iter().filter(|v| !v.is_empty()).collect();
        if !deny.is_empty() {
            let alternation = deny
                .iter()
                .map(|v| deny_pattern(v))
                .collect::<Vec<_>>()
                .join("|");
            det_of.push(dets.len() as u16);
            dets.push(det(
                "deny_list",
                Kind::DenyList,
                style_for("deny_list", None),
            ));
            patterns.push(alternation);
        }
        let mut seen = Vec::new();
        for c in &spec.custom {
            if !valid_custom_name(&c.name) || seen.contains(&c.name.as_str()) {
                return Err(MaskError::BadDetectorName(c.name.clone()));
            }
            seen.push(c.name.as_str());
            meta::Builder::new()
                .configure(meta::Config::new().nfa_size_limit(Some(64 << 20)))
                .build(&c.pattern)
                .map_err(|e| MaskError::BadPattern {
                    detector: c.name.clone(),
                    // The build error only says which pattern failed; the syntax error under
                    // it says where and why.
                    message: match e.syntax_error() {
                        Some(syntax) => syntax.to_string(),
                        None => e.to_string(),
                    },
                })?;
            let style = c.style.unwrap_or_else(|| style_for(&c.name, None));
            det_of.push(dets.len() as u16);
            dets.push(det(&c.name, Kind::Custom(c.validator), style));
            patterns.push(c.pattern.clone());
        }
        let mut password = None;
        let mut aws_secret = None;
        for b in Builtin::PRIORITY {
            if !enabled[priority_index(b)] {
                continue;
            }
            let id = dets.len() as u16;
            match b {
                Builtin::Password => password = Some(id),
                Builtin::AwsSecretKey => aws_secret = Some(id),
                _ => {}
            }
            let group = if b.is_pii() { "pii" } else { "secrets" };
            det_of.push(id);
            dets.push(det(
                b.name(),
                Kind::Builtin(b),
                style_for(b.name(), Some(group)),
            ));
            patterns.push(b.pattern().to_string());
        }

        let engine = if patterns.is_empty() {
            None
        } else {
            Some(Engine {
                re: build_regex(&patterns).map_err(MaskError::Build)?,
                first: first_bytes(&patterns),
                det_of,
            })
        };

        let fields = if spec.fields.is_empty() {
            None
        } else {
            let mut keys = GlobSetBuilder::new();
            let mut paths = GlobSetBuilder::new();
            for g in &spec.fields {
                let glob = GlobBuilder::new(g)
                    .case_insensitive(true)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| MaskError::BadFieldGlob {
                        glob: g.clone(),
                        message: e.kind().to_string(),
                    })?;
                if g.contains('.') {
                    paths.add(glob);
                } else {
                    keys.add(glob);
                }
            }
            let build = |b: GlobSetBuilder| {
                b.build().map_err(|e| MaskError::BadFieldGlob {
                    glob: e.glob().unwrap_or_default().to_string(),
                    message: e.kind().to_string(),
                })
            };
            Some(Fields {
                keys: build(keys)?,
                paths: build(paths)?,
            })
        };

        let custom_any = !spec.custom.is_empty() || !deny.is_empty();
        let mut need = 0u32;
        for b in Builtin::PRIORITY {
            if enabled[priority_index(b)] {
                need |= 1 << priority_index(b);
            }
        }
        Ok(Profile {
            engine,
            field: det("field", Kind::Field, style_for("field", None)),
            dets,
            fields,
            hmac,
            prefilter: Prefilter {
                always: custom_any,
                need,
            },
            password,
            aws_secret,
            numbers_any: custom_any,
            numbers_card: enabled[priority_index(Builtin::CreditCard)],
        })
    }

    /// Masks one text; `None` when nothing matched (then no output is allocated). `path` is
    /// where the text sits, for the report.
    pub fn mask_text(&self, text: &str, path: &str, report: &mut Report) -> Option<String> {
        let mut hits = Vec::new();
        self.find(text, &mut hits);
        if hits.is_empty() {
            return None;
        }
        self.record(&hits, path, report);
        Some(self.render(text, &hits))
    }

    /// Whether the profile masks any column or key by name at all.
    pub fn names_columns(&self) -> bool {
        self.fields.is_some()
    }

    /// Whether a column (or any key) named `name` is masked whole by the profile's `fields`
    /// globs, whatever it holds: decided once per result column, not per value.
    pub fn masks_column(&self, name: &str) -> bool {
        self.field_match(name, name)
    }

    /// Masks a whole value of a column that [`Profile::masks_column`] names, in the field
    /// style, and reports it as detector `field` at `path`. An empty value stays empty.
    pub fn mask_whole(&self, value: &str, path: &str, report: &mut Report) -> String {
        if value.is_empty() {
            return String::new();
        }
        let mut out = String::new();
        style::replace(&mut out, value, &self.field.rule(), self.hmac.as_ref());
        report.add(&self.field.name, path, 1);
        out
    }

    /// Reports what [`Profile::mask_text`] would mask, changing nothing.
    pub fn scan_text(&self, text: &str, path: &str, report: &mut Report) {
        let mut hits = Vec::new();
        self.find(text, &mut hits);
        self.record(&hits, path, report);
    }

    /// Masks, in place and at any depth, every string, every number whose decimal text
    /// matches (replaced by the masked string: a card number stored as a number becomes
    /// `"[CREDIT_CARD]"`), and every object key that holds a match (renamed; a clash with an
    /// existing key gets a `#2`, `#3`… suffix). A string or number under a key whose name is
    /// a secret's (`password`, `api_key`, `client_secret`, …) is masked whole as `password`
    /// when nothing more specific matched. Values under a key matched by `fields` are masked
    /// whole, reported as detector `field`: strings and numbers in the field style, booleans
    /// and whole objects or arrays replaced by the label `[FIELD]`; `null` stays.
    pub fn mask_json(&self, value: &mut Value, path: &str, report: &mut Report) {
        Walk::new(self, path, report).mask(value, None, &mut Vec::new());
    }

    /// Like [`Profile::mask_json`], but leaves alone, at any depth, the members `keep` names:
    /// it is asked with each object and each of its keys whether that member's value must
    /// pass as it is (base64 bytes that masking would corrupt, say). Only the caller knows
    /// which members those are; the profile still masks everything else.
    pub fn mask_json_keeping(
        &self,
        value: &mut Value,
        path: &str,
        report: &mut Report,
        keep: &Keep,
    ) {
        let mut walk = Walk::new(self, path, report);
        walk.keep = Some(keep);
        walk.mask(value, None, &mut Vec::new());
    }

    /// Reports what [`Profile::mask_json`] would mask, changing nothing (the inbound
    /// direction: tool-call arguments).
    pub fn scan_json(&self, value: &Value, path: &str, report: &mut Report) {
        Walk::new(self, path, report).scan(value, None, &mut Vec::new());
    }

    fn record(&self, hits: &[Hit], path: &str, report: &mut Report) {
        let mut i = 0;
        while i < hits.len() {
            // Hits of one detector often come in runs: one report entry per run.
            let det = hits[i].det;
            let mut n = 1;
            while i + n < hits.len() && hits[i + n].det == det {
                n += 1;
            }
            report.add(&self.dets[usize::from(det)].name, path, n as u32);
            i += n;
        }
    }

    fn render(&self, text: &str, hits: &[Hit]) -> String {
        let mut out = String::with_capacity(text.len() + 8 * hits.len());
        let mut last = 0;
        for h in hits {
            out.push_str(&text[last..h.start]);
            style::replace(
                &mut out,
                &text[h.start..h.end],
                &self.dets[usize::from(h.det)].rule(),
                self.hmac.as_ref(),
            );
            last = h.end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// Finds every match in `text`, in order, without overlaps, appending them to `hits`.
    ///
    /// One unanchored leftmost-first search of the automaton gives the earliest candidate
    /// `[s, e)` and its pattern. Its detector's check runs on it (and may trim it, as a card
    /// followed by more digits, or extend it, as a PEM block or the value after `password=`).
    /// Accepted: it is a hit and the search goes on from its end. Rejected: two things could
    /// be hiding behind it, and both are looked for before moving on.
    ///
    /// * Another pattern matching at the same `s` (leftmost-first reports only the first in
    ///   priority order): each pattern that can start with the byte at `s` (known from
    ///   compile time) is tried there, anchored to that pattern, and checked in turn.
    /// * A match starting inside `(s, e)`: the search resumes at the character after `s`
    ///   rather than at `e`, so an overlapping candidate is found on the next step.
    ///
    /// Resuming inside a rejected candidate rescans it. Built-in patterns have bounded
    /// lengths, so that is a constant factor; against custom patterns that can match long
    /// spans, a budget (the text's length plus 1 KiB of rescanned bytes) caps the total, and
    /// once spent the search resumes at `e` instead, keeping the whole scan linear.
    fn find(&self, text: &str, hits: &mut Vec<Hit>) {
        if self.prefilter.may_match(text.as_bytes()) {
            self.find_unfiltered(text, hits);
        }
    }

    fn find_unfiltered(&self, text: &str, hits: &mut Vec<Hit>) {
        let Some(engine) = &self.engine else {
            return;
        };
        let mut scan = Scan::new(text.len() + 1024);
        let mut pos = 0;
        let mut prev_end = 0;
        while pos < text.len() {
            let input = Input::new(text).range(pos..);
            let Some(m) = engine.re.search(&input) else {
                break;
            };
            let (s, e, pid) = (m.start(), m.end(), m.pattern());
            let at = At {
                floor: pos,
                prev_end,
                look_ahead: true,
            };
            if e > s {
                let hit = match self.resolve(engine, text, at, s, e, pid, &mut scan) {
                    Some(hit) => Some(hit),
                    None => self.same_start(engine, text, at, s, pid, &mut scan),
                };
                if let Some(hit) = hit {
                    pos = hit.end;
                    prev_end = hit.end;
                    hits.push(hit);
                    continue;
                }
            }
            let next = next_char(text, s);
            let rescan = e.saturating_sub(next);
            if rescan <= scan.budget {
                scan.budget -= rescan;
                pos = next;
            } else {
                pos = e.max(next);
            }
        }
    }

    /// Tries the other patterns that match at `s`, in priority order: those that can start
    /// with its byte, each as a search of the same automaton anchored to that pattern.
    fn same_start(
        &self,
        engine: &Engine,
        text: &str,
        at: At,
        s: usize,
        rejected: PatternID,
        scan: &mut Scan,
    ) -> Option<Hit> {
        let byte = text.as_bytes()[s];
        for q in 0..engine.det_of.len() {
            if q == rejected.as_usize() || !engine.can_start(q, byte) {
                continue;
            }
            let pid = PatternID::must(q);
            let input = Input::new(text).range(s..).anchored(Anchored::Pattern(pid));
            if let Some(m) = engine.re.search(&input)
                && m.end() > m.start()
                && let Some(hit) = self.resolve(engine, text, at, m.start(), m.end(), pid, scan)
            {
                return Some(hit);
            }
        }
        None
    }

    /// Runs the check of pattern `pid`'s detector on the candidate `[s, e)`. A hit may start
    /// before `s` (an email's local part) but never before `at.floor`.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        &self,
        engine: &Engine,
        text: &str,
        at: At,
        s: usize,
        e: usize,
        pid: PatternID,
        scan: &mut Scan,
    ) -> Option<Hit> {
        let det = engine.det_of[pid.as_usize()];
        let b = text.as_bytes();
        let look = |i: usize| at.look_ahead && self.hit_starts_at(engine, text, i);
        let cx = detectors::Context {
            prev_end: at.prev_end,
            starts_at: &look,
        };
        let span = match self.dets[usize::from(det)].kind {
            Kind::DenyList => Some((s, e)),
            Kind::Custom(None) => Some((s, e)),
            Kind::Custom(Some(Validator::Luhn)) => detectors::luhn(&b[s..e]).then_some((s, e)),
            Kind::Custom(Some(Validator::Mod97)) => detectors::mod97(&b[s..e]).then_some((s, e)),
            Kind::Field => None,
            Kind::Builtin(kind) => match kind {
                Builtin::Email => {
                    detectors::email_start(b, s, at.floor).zip(detectors::extend_email(b, e))
                }
                Builtin::Phone => detectors::phone(b, s, e, &cx),
                Builtin::Ssn => detectors::ssn(b, s, e, &cx).then_some((s, e)),
                Builtin::CreditCard => detectors::credit_card(b, s, &cx),
                Builtin::Iban => detectors::iban(b, s, &cx),
                Builtin::Ipv4 => detectors::ipv4(b, s, e, &cx).then_some((s, e)),
                Builtin::Ipv6 => detectors::ipv6(b, s, e, &cx).then_some((s, e)),
                Builtin::AwsAccessKey => Some((s, e)),
                Builtin::GithubToken => {
                    if b[s..].starts_with(b"github_pat_") {
                        detectors::extend_token(b, s, e, 11 + 40, |c| {
                            c.is_ascii_alphanumeric() || c == b'_'
                        })
                    } else {
                        Some((s, e))
                    }
                }
                Builtin::GitlabToken => {
                    // The prefix (`glpat-`, `glrt-`, `gldt-`) and at least 20 characters.
                    let prefix = b[s..e].iter().position(|c| *c == b'-').unwrap_or(0) + 1;
                    detectors::extend_token(b, s, e, prefix + 20, |c| {
                        c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
                    })
                }
                Builtin::SlackToken => {
                    detectors::extend_token(b, s, e, 20, |c| c.is_ascii_alphanumeric() || c == b'-')
                }
                Builtin::StripeKey => {
                    detectors::extend_token(b, s, e, 0, |c| c.is_ascii_alphanumeric())
                }
                Builtin::PrivateKey => Some((s, detectors::private_key(b, e, &mut scan.pem_end))),
                Builtin::Jwt => detectors::jwt(b, s),
                Builtin::Password | Builtin::AwsSecretKey => {
                    return self.key_value(engine, text, at, e, kind, scan);
                }
            },
        };
        span.map(|(start, end)| Hit { start, end, det })
    }

    /// The value after a secret-naming key. A more specific detector whose match starts
    /// where the value does names it, and its own span is what is masked (`token=ghp_…` is a
    /// GitHub token; in `https://x-access-token:ghp_…@github.com/…` the token ends at the
    /// `@`); a 40-character base64 value after an AWS secret key name is an AWS secret;
    /// anything else is a password.
    fn key_value(
        &self,
        engine: &Engine,
        text: &str,
        at: At,
        e: usize,
        kind: Builtin,
        scan: &mut Scan,
    ) -> Option<Hit> {
        let b = text.as_bytes();
        let (vs, ve) = detectors::extract_value(b, e)?;
        // The first candidate in the value (an email's is its `@`, so this cannot be an
        // anchored search); the range is bounded so the search stays local.
        let input = Input::new(text).range(vs..text.len().min(ve.max(vs + 128)));
        if let Some(m) = engine.re.search(&input) {
            let det = engine.det_of[m.pattern().as_usize()];
            let nested = matches!(
                self.dets[usize::from(det)].kind,
                Kind::Builtin(Builtin::Password | Builtin::AwsSecretKey)
            );
            if !nested
                && m.end() > m.start()
                && let Some(hit) = self.resolve(
                    engine,
                    text,
                    At { floor: vs, ..at },
                    m.start(),
                    m.end(),
                    m.pattern(),
                    scan,
                )
                && hit.start == vs
            {
                return Some(hit);
            }
        }
        if kind == Builtin::AwsSecretKey && detectors::aws_secret_value(&b[vs..ve]) {
            return self.aws_secret.map(|det| Hit {
                start: vs,
                end: ve,
                det,
            });
        }
        self.password.map(|det| Hit {
            start: vs,
            end: ve,
            det,
        })
    }

    /// Does a match start exactly at `i`? The look-ahead of a boundary check that would
    /// fail because of the byte at `i`: if that byte starts a match, it will be masked and is
    /// no neighbour. The candidate there has the checked one as its left neighbour, and
    /// looks no further ahead itself.
    fn hit_starts_at(&self, engine: &Engine, text: &str, i: usize) -> bool {
        if i >= text.len() || !text.is_char_boundary(i) {
            return false;
        }
        let mut scan = Scan::new(0);
        let at = At {
            floor: i,
            prev_end: i,
            look_ahead: false,
        };
        // Anchors are short, so a bounded search is enough to find one starting at `i`
        // (or an email's `@` shortly after).
        let input = Input::new(text).range(i..text.len().min(i + 128));
        let Some(m) = engine.re.search(&input) else {
            return false;
        };
        if m.end() == m.start() {
            return false;
        }
        let hit = match self.resolve(engine, text, at, m.start(), m.end(), m.pattern(), &mut scan) {
            Some(hit) => Some(hit),
            None => self.same_start(engine, text, at, m.start(), m.pattern(), &mut scan),
        };
        hit.is_some_and(|h| h.start == i)
    }

    /// The detector that masks a whole value under a secret-naming key, if any.
    fn hinted(&self, hint: KeyHint, value: &str) -> Option<u16> {
        if hint == KeyHint::None || value.trim().is_empty() || detectors::is_placeholder(value) {
            return None;
        }
        if hint == KeyHint::AwsSecret
            && detectors::aws_secret_value(value.trim().as_bytes())
            && self.aws_secret.is_some()
        {
            return self.aws_secret;
        }
        self.password
    }

    fn field_match(&self, key: &str, dotted: &str) -> bool {
        match &self.fields {
            Some(f) => f.keys.is_match(key) || (!f.paths.is_empty() && f.paths.is_match(dotted)),
            None => false,
        }
    }

    fn tracks_dotted(&self) -> bool {
        self.fields.as_ref().is_some_and(|f| !f.paths.is_empty())
    }
}

fn priority_index(b: Builtin) -> usize {
    Builtin::PRIORITY
        .iter()
        .position(|x| *x == b)
        .expect("every built-in has a priority")
}

fn next_char(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

/// Appends `.key`, or `["key"]` when the key is not an identifier.
fn push_key(path: &mut String, key: &str) {
    let b = key.as_bytes();
    let ident = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ident {
        path.push('.');
        path.push_str(key);
        return;
    }
    path.push_str("[\"");
    for c in key.chars() {
        match c {
            '"' => path.push_str("\\\""),
            '\\' => path.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                path.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => path.push(c),
        }
    }
    path.push_str("\"]");
}

fn push_index(path: &mut String, i: usize) {
    let mut buf = [0u8; 20];
    let mut n = buf.len();
    let mut v = i;
    loop {
        n -= 1;
        buf[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    path.push('[');
    path.extend(buf[n..].iter().map(|b| char::from(*b)));
    path.push(']');
}

/// One step of a JSON path, kept as a reference while walking; the path text is only built
/// when something is reported.
enum Seg<'a> {
    Key(&'a str),
    /// A key shown in a form other than its own (redacted or renamed).
    Shown(String),
    Index(usize),
}

/// A walk over a JSON value: the path so far as a stack of segments, the dotted path for
/// field globs (only kept when a glob needs it), and buffers reused across strings.
/// Which members of an object [`Profile::mask_json_keeping`] leaves alone: asked with the
/// object and one of its keys.
pub type Keep = dyn Fn(&Map<String, Value>, &str) -> bool;

struct Walk<'p, 'r> {
    p: &'p Profile,
    root: &'r str,
    path: String,
    dotted: String,
    dotted_on: bool,
    hints_on: bool,
    hits: Vec<Hit>,
    report: &'r mut Report,
    /// Members left as they are (see [`Profile::mask_json_keeping`]).
    keep: Option<&'r Keep>,
}

impl<'p, 'r> Walk<'p, 'r> {
    fn new(p: &'p Profile, root: &'r str, report: &'r mut Report) -> Walk<'p, 'r> {
        Walk {
            p,
            root,
            path: String::new(),
            dotted: String::new(),
            dotted_on: p.tracks_dotted(),
            hints_on: p.password.is_some() || p.aws_secret.is_some(),
            hits: Vec::new(),
            report,
            keep: None,
        }
    }

    /// Writes the path of `stack` into `self.path`.
    fn build_path(&mut self, stack: &[Seg<'_>]) {
        self.path.clear();
        self.path.push_str(self.root);
        for seg in stack {
            match seg {
                Seg::Key(k) => push_key(&mut self.path, k),
                Seg::Shown(k) => push_key(&mut self.path, k),
                Seg::Index(i) => push_index(&mut self.path, *i),
            }
        }
    }

    /// Reports `self.hits` at the path of `stack`.
    fn record(&mut self, stack: &[Seg<'_>]) {
        self.build_path(stack);
        self.p.record(&self.hits, &self.path, self.report);
    }

    /// Finds the hits of a string into `self.hits`, or the whole-value hit its key implies.
    fn hits_of(&mut self, text: &str, key: Option<&str>) -> bool {
        self.hits.clear();
        self.p.find(text, &mut self.hits);
        if self.hits.is_empty()
            && self.hints_on
            && let Some(key) = key
            && let Some(det) = self.p.hinted(detectors::key_hint(key), text)
        {
            self.hits.push(Hit {
                start: 0,
                end: text.len(),
                det,
            });
        }
        !self.hits.is_empty()
    }

    /// The decimal text of a number, if it is worth scanning: any number when custom
    /// patterns or a deny-list could match it, one under a secret's key name, or one long
    /// enough to be a card.
    fn number_text(&self, n: &Number, key: Option<&str>) -> Option<String> {
        let wanted = self.p.numbers_any
            || (self.p.numbers_card && n.as_u64().is_some_and(|u| u >= 1_000_000_000_000))
            || (self.hints_on && key.is_some_and(|k| detectors::key_hint(k) != KeyHint::None));
        wanted.then(|| n.to_string())
    }

    /// The key as the path shows it: itself, or redacted when it holds a match (which is
    /// then reported).
    fn key_seg<'a>(&mut self, key: &'a str, stack: &mut Vec<Seg<'a>>) -> Seg<'a> {
        self.hits.clear();
        self.p.find(key, &mut self.hits);
        if self.hits.is_empty() {
            return Seg::Key(key);
        }
        let mut shown = String::new();
        let mut last = 0;
        for h in &self.hits {
            shown.push_str(&key[last..h.start]);
            shown.push_str(&self.p.dets[usize::from(h.det)].label);
            last = h.end;
        }
        shown.push_str(&key[last..]);
        stack.push(Seg::Shown(shown));
        self.record(stack);
        stack.pop().expect("just pushed")
    }

    fn enter_dotted(&mut self, key: &str) -> usize {
        let mark = self.dotted.len();
        if self.dotted_on {
            if !self.dotted.is_empty() {
                self.dotted.push('.');
            }
            self.dotted.push_str(key);
        }
        mark
    }

    fn mask<'a>(&mut self, v: &'a mut Value, key: Option<&'a str>, stack: &mut Vec<Seg<'a>>) {
        match v {
            Value::String(s) => {
                if self.hits_of(s, key) {
                    self.record(stack);
                    *s = self.p.render(s, &self.hits);
                }
            }
            Value::Number(n) => {
                if let Some(text) = self.number_text(n, key)
                    && self.hits_of(&text, key)
                {
                    self.record(stack);
                    *v = Value::String(self.p.render(&text, &self.hits));
                }
            }
            Value::Array(items) => {
                // Elements inherit the array's key: `"api_keys": ["…"]`.
                for (i, item) in items.iter_mut().enumerate() {
                    stack.push(Seg::Index(i));
                    self.mask(item, key, stack);
                    stack.pop();
                }
            }
            Value::Object(map) => {
                self.rename_keys(map, stack);
                // Found before the loop, which borrows the map mutably; empty (and not
                // allocated) when nothing is kept.
                let kept: Vec<String> = match self.keep {
                    Some(keep) => map.keys().filter(|k| keep(map, k)).cloned().collect(),
                    None => Vec::new(),
                };
                for (key, item) in map.iter_mut() {
                    if kept.contains(key) {
                        continue;
                    }
                    let mark = self.enter_dotted(key);
                    stack.push(Seg::Key(key));
                    if self.p.field_match(key, &self.dotted) {
                        self.mask_field(item, stack);
                    } else {
                        self.mask(item, Some(key), stack);
                    }
                    stack.pop();
                    self.dotted.truncate(mark);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    /// Renames the keys of `map` that hold a match (a map keyed by email addresses must not
    /// leak them), reporting each at its new path. Rare, so done by remove and insert; a
    /// clash with an existing key gets a `#2`, `#3`… suffix.
    fn rename_keys(&mut self, map: &mut Map<String, Value>, stack: &mut Vec<Seg<'_>>) {
        let mut renames: Vec<(String, String)> = Vec::new();
        for key in map.keys() {
            self.hits.clear();
            self.p.find(key, &mut self.hits);
            if !self.hits.is_empty() {
                renames.push((key.clone(), self.p.render(key, &self.hits)));
            }
        }
        for (old, new) in renames {
            let Some(v) = map.remove(old.as_str()) else {
                continue;
            };
            let mut key = new.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{new}#{n}");
                n += 1;
            }
            self.hits.clear();
            self.p.find(&old, &mut self.hits);
            stack.push(Seg::Shown(key.clone()));
            self.record(stack);
            stack.pop();
            map.insert(key, v);
        }
    }

    /// A value under a `fields` key: masked whole.
    fn mask_field(&mut self, item: &mut Value, stack: &[Seg<'_>]) {
        let text = match item {
            Value::Null => return,
            Value::String(s) if s.is_empty() => return,
            Value::String(s) => Some(std::mem::take(s)),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
        };
        let field = &self.p.field;
        let masked = match text {
            Some(text) => {
                let mut out = String::new();
                style::replace(&mut out, &text, &field.rule(), self.p.hmac.as_ref());
                out
            }
            None => field.label.clone(),
        };
        *item = Value::String(masked);
        self.build_path(stack);
        self.report.add(&field.name, &self.path, 1);
    }

    fn scan<'a>(&mut self, v: &'a Value, key: Option<&'a str>, stack: &mut Vec<Seg<'a>>) {
        match v {
            Value::String(s) => {
                if self.hits_of(s, key) {
                    self.record(stack);
                }
            }
            Value::Number(n) => {
                if let Some(text) = self.number_text(n, key)
                    && self.hits_of(&text, key)
                {
                    self.record(stack);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    stack.push(Seg::Index(i));
                    self.scan(item, key, stack);
                    stack.pop();
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let mark = self.enter_dotted(key);
                    let seg = self.key_seg(key, stack);
                    stack.push(seg);
                    if self.p.field_match(key, &self.dotted) {
                        let empty = matches!(item, Value::Null)
                            || matches!(item, Value::String(s) if s.is_empty());
                        if !empty {
                            self.build_path(stack);
                            self.report.add(&self.p.field.name, &self.path, 1);
                        }
                    } else {
                        self.scan(item, Some(key), stack);
                    }
                    stack.pop();
                    self.dotted.truncate(mark);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn default_profile() -> &'static Profile {
        static P: std::sync::OnceLock<Profile> = std::sync::OnceLock::new();
        P.get_or_init(|| {
            Profile::compile(&ProfileSpec {
                detectors: vec!["all".into()],
                ..ProfileSpec::default()
            })
            .unwrap()
        })
    }

    /// Strings built from the pieces the detectors look for, so that matches are common.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,6}",
            "[ .\\-:()+/@=_]",
            "[A-Z]{1,4}",
            "[a-f]{1,4}",
            Just("4111".to_string()),
            Just("AKIA".to_string()),
            Just("::".to_string()),
            Just("eyJ".to_string()),
            Just("password=".to_string()),
            Just("@example.com".to_string()),
            Just("GB82".to_string()),
            Just("-----BEGIN PRIVATE KEY-----".to_string()),
            Just("glrt-".to_string()),
            Just("xoxb-".to_string()),
            Just("sk_live_".to_string()),
            Just("ghp_".to_string()),
            Just("github_pat_".to_string()),
            Just("ASIA".to_string()),
            "[A-Za-z0-9]{20}",
            Just("é".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Wherever a pattern matches, its first-byte set holds the byte it starts on, so the
        /// same-start check never skips a pattern that could match.
        #[test]
        fn first_byte_sets_cover_every_match(parts in proptest::collection::vec(piece(), 1..12)) {
            let p = default_profile();
            let engine = p.engine.as_ref().unwrap();
            let text: String = parts.concat();
            for s in (0..text.len()).filter(|i| text.is_char_boundary(*i)) {
                for q in 0..engine.det_of.len() {
                    let input = Input::new(&text)
                        .range(s..)
                        .anchored(Anchored::Pattern(PatternID::must(q)));
                    if engine.re.search(&input).is_some() {
                        prop_assert!(engine.can_start(q, text.as_bytes()[s]), "{q} at {s} in {text:?}");
                    }
                }
            }
        }

        /// The prefilter only ever skips texts in which the automaton finds nothing.
        #[test]
        fn prefilter_never_hides_a_match(parts in proptest::collection::vec(piece(), 1..24)) {
            let p = default_profile();
            let text: String = parts.concat();
            if !p.prefilter.may_match(text.as_bytes()) {
                let mut hits = Vec::new();
                p.find_unfiltered(&text, &mut hits);
                prop_assert!(hits.is_empty(), "{text:?}: {hits:?}");
            }
        }
    }

    #[test]
    fn first_byte_sets_are_tight() {
        let p = default_profile();
        let engine = p.engine.as_ref().unwrap();
        let starts = |name: &str| -> Vec<u8> {
            let q = p.dets.iter().position(|d| d.name == name).unwrap();
            (0..=255u8).filter(|b| engine.can_start(q, *b)).collect()
        };
        assert_eq!(starts("email"), b"@");
        assert_eq!(starts("credit_card"), b"23456");
        assert_eq!(starts("aws_access_key"), b"A");
        assert_eq!(starts("private_key"), b"-");
        // A pattern that matches the empty string can start anywhere.
        assert_eq!(first_bytes(&["x*".to_string()])[0], [u64::MAX; 4]);
    }

    #[test]
    fn prefilter_passes_every_shape() {
        let p = default_profile();
        for text in [
            "020 79460958",
            "1:2:3:4:5:6:1.2.3.4",
            "+14155550132",
            "(415) 555-0132",
            "4111 1111 1111 1111",
            "123-45-6789",
            "NL91ABNA0417164300",
            "10.0.0.1",
            "::1",
            "a@b.co",
            "glrt-KbFbtySAA8ymVPeyuibm",
            "glpat-abcdefghij1234567890",
            "xoxb-123456789012-1234567890123",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_a1B2c3D4e5a1B2c3D4e5a1B2c3D4e5F6g7H8",
            "-----BEGIN PRIVATE KEY-----",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        ] {
            assert!(p.prefilter.may_match(text.as_bytes()), "{text}");
            let mut hits = Vec::new();
            p.find(text, &mut hits);
            assert_eq!(hits.len(), 1, "{text}");
        }
        for text in [
            "Ada Lovelace",
            "550e8400-e29b-41d4-a716-44665544a000",
            "2024-03-01T12:34:56.789Z",
            "ORD-2024-1234",
            "portcullis-sdk/1.12.33",
        ] {
            assert!(!p.prefilter.may_match(text.as_bytes()), "{text}");
        }
    }
}
