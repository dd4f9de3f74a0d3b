//! Accuracy of the detectors against the labelled corpus in `tests/corpus/` (format and
//! labelling rules: `tests/corpus/README.md`).
//!
//! Every sample goes through the default profile (`detectors = ["all"]`, redact style). The
//! spans the engine found are recovered from `mask_text`'s output: the output is the input
//! with each match replaced by `[DETECTOR]`, so aligning the unchanged stretches of the output
//! with the input gives back each replaced substring. Found and expected spans are then paired
//! by detector and exact text, per sample. The test prints a table of precision and recall
//! per detector, lists every false positive and false negative with its sample, and fails when
//! a detector is below 0.98 precision or recall or has fewer than 20 positives in the corpus.
//!
//! Run `cargo test -p portcullis-mask --test accuracy -- --nocapture` to see the table on
//! success; it is also written to `$CARGO_TARGET_TMPDIR/mask-accuracy.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use portcullis_mask::{Profile, ProfileSpec, Report, Style};

const DETECTORS: [&str; 16] = [
    "email",
    "phone",
    "ssn",
    "credit_card",
    "iban",
    "ipv4",
    "ipv6",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "stripe_key",
    "private_key",
    "jwt",
    "password",
];
const MIN_PRECISION: f64 = 0.98;
const MIN_RECALL: f64 = 0.98;
const MIN_POSITIVES: usize = 20;
/// The path handed to the engine with each text; the default profile masks every path.
const PATH: &str = "$";

// ---------------------------------------------------------------------------------------
// The corpus

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    detector: String,
    text: String,
}

#[derive(Debug)]
struct Sample {
    id: String,
    /// `file:line` of the `@@@ sample` line.
    origin: String,
    text: String,
    expected: Vec<Span>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_corpus() -> Vec<Sample> {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut samples = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        samples.extend(parse_corpus(&name, &src).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(!samples.is_empty(), "no samples under {}", dir.display());
    samples
}

/// Parses one corpus file; errors name the file and line.
fn parse_corpus(name: &str, src: &str) -> Result<Vec<Sample>, String> {
    enum State {
        Outside,
        Text,
        Expect,
        Heredoc(String, Vec<String>),
    }
    if src.contains('\r') {
        return Err(format!("{name}: carriage returns are not allowed"));
    }
    let mut samples = Vec::new();
    let mut state = State::Outside;
    let mut id = String::new();
    let mut origin = String::new();
    let mut text: Vec<&str> = Vec::new();
    let mut expected: Vec<Span> = Vec::new();
    let lines: Vec<&str> = src.strip_suffix('\n').unwrap_or(src).split('\n').collect();
    for (i, line) in lines.iter().copied().enumerate() {
        let at = format!("{name}:{}", i + 1);
        state = match state {
            State::Outside => {
                if let Some(rest) = line.strip_prefix("@@@ sample ") {
                    id = rest.trim().to_string();
                    if id.is_empty() {
                        return Err(format!("{at}: sample without an id"));
                    }
                    origin = at;
                    text.clear();
                    expected.clear();
                    State::Text
                } else if line.trim().is_empty() || line.starts_with('#') {
                    State::Outside
                } else {
                    return Err(format!("{at}: expected `@@@ sample <id>`, found {line:?}"));
                }
            }
            State::Text => match line {
                "@@@ expect" => State::Expect,
                "@@@ end" => {
                    samples.push(Sample {
                        id: std::mem::take(&mut id),
                        origin: std::mem::take(&mut origin),
                        text: text.join("\n"),
                        expected: std::mem::take(&mut expected),
                    });
                    State::Outside
                }
                _ if line.starts_with("@@@") => {
                    return Err(format!("{at}: unexpected {line:?} in the text of {id}"));
                }
                _ => {
                    text.push(line);
                    State::Text
                }
            },
            State::Expect => {
                if line == "@@@ end" {
                    samples.push(Sample {
                        id: std::mem::take(&mut id),
                        origin: std::mem::take(&mut origin),
                        text: text.join("\n"),
                        expected: std::mem::take(&mut expected),
                    });
                    State::Outside
                } else if let Some(detector) = line.strip_suffix(" <<<") {
                    State::Heredoc(detector.to_string(), Vec::new())
                } else if let Some((detector, value)) = line.split_once(' ') {
                    expected.push(Span {
                        detector: detector.to_string(),
                        text: value.to_string(),
                    });
                    State::Expect
                } else {
                    return Err(format!(
                        "{at}: expected `<detector> <value>` or `@@@ end`, found {line:?}"
                    ));
                }
            }
            State::Heredoc(detector, mut value) => {
                if line == ">>>" {
                    expected.push(Span {
                        detector,
                        text: value.join("\n"),
                    });
                    State::Expect
                } else if line.starts_with("@@@") {
                    return Err(format!("{at}: unterminated `<<<` value in {id}"));
                } else {
                    value.push(line.to_string());
                    State::Heredoc(detector, value)
                }
            }
        };
    }
    match state {
        State::Outside => Ok(samples),
        _ => Err(format!("{name}: ends inside sample {id}")),
    }
}

/// Everything wrong with the corpus itself: labels that cannot be right whatever the engine.
fn corpus_errors(samples: &[Sample]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut ids = BTreeSet::new();
    let placeholders: Vec<String> = DETECTORS.iter().map(|d| placeholder(d)).collect();
    for s in samples {
        let at = format!("{} ({})", s.id, s.origin);
        if !ids.insert(s.id.as_str()) {
            errors.push(format!("{at}: duplicate id"));
        }
        let parts: Vec<&str> = s.id.split('/').collect();
        let group_ok = parts.len() == 3
            && (DETECTORS.contains(&parts[0]) || ["mixed", "general"].contains(&parts[0]))
            && ["pos", "neg", "overlap"].contains(&parts[1]);
        if !group_ok {
            errors.push(format!(
                "{at}: id is not <detector|mixed|general>/<pos|neg|overlap>/<slug>"
            ));
        }
        if parts.len() == 3
            && parts[1] == "neg"
            && s.expected.iter().any(|e| e.detector == parts[0])
        {
            errors.push(format!(
                "{at}: a near miss for {} expects {}",
                parts[0], parts[0]
            ));
        }
        if parts.len() == 3
            && parts[1] == "pos"
            && DETECTORS.contains(&parts[0])
            && !s.expected.iter().any(|e| e.detector == parts[0])
        {
            errors.push(format!("{at}: a positive for {} expects none", parts[0]));
        }
        if parts.len() == 3 && parts[0] == "general" && !s.expected.is_empty() {
            errors.push(format!("{at}: a general near miss expects something"));
        }
        for p in &placeholders {
            if s.text.contains(p.as_str()) {
                errors.push(format!(
                    "{at}: the text contains {p}, which would confuse alignment"
                ));
            }
        }
        let mut wanted: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &s.expected {
            *wanted.entry(e.text.as_str()).or_default() += 1;
            if !DETECTORS.contains(&e.detector.as_str()) {
                errors.push(format!("{at}: unknown detector {:?}", e.detector));
            }
            if e.text.is_empty() || e.text.trim() != e.text {
                errors.push(format!("{at}: empty or padded value {:?}", e.text));
            }
            if let Err(why) = check_value(&e.detector, &e.text) {
                errors.push(format!("{at}: {} {:?}: {why}", e.detector, e.text));
            }
        }
        for (value, n) in wanted {
            let found = s.text.matches(value).count();
            if found < n {
                errors.push(format!(
                    "{at}: {value:?} expected {n} time(s), present {found} time(s)"
                ));
            }
        }
    }
    errors
}

/// The checks a labelled value must pass by its detector's definition.
fn check_value(detector: &str, value: &str) -> Result<(), String> {
    match detector {
        "credit_card" => {
            let digits: String = value.chars().filter(|c| *c != ' ' && *c != '-').collect();
            if !digits.chars().all(|c| c.is_ascii_digit()) || !(13..=19).contains(&digits.len()) {
                return Err("not 13 to 19 digits with separators".into());
            }
            if !luhn_ok(&digits) {
                return Err("fails Luhn".into());
            }
            Ok(())
        }
        "iban" => iban_ok(value)
            .then_some(())
            .ok_or_else(|| "fails mod-97".into()),
        "ssn" => {
            let parts: Vec<&str> = value.split('-').collect();
            let ok = parts.len() == 3
                && [3, 2, 4] == [parts[0].len(), parts[1].len(), parts[2].len()]
                && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
                && {
                    let area: u32 = parts[0].parse().unwrap();
                    area != 0 && area != 666 && area < 900
                }
                && parts[1] != "00"
                && parts[2] != "0000";
            ok.then_some(())
                .ok_or_else(|| "not a valid AAA-GG-SSSS".into())
        }
        "ipv4" => {
            let ok = value.split('.').count() == 4
                && value.split('.').all(|o| {
                    !o.is_empty() && o.len() <= 3 && o.parse::<u32>().is_ok_and(|n| n <= 255)
                });
            ok.then_some(()).ok_or_else(|| "not a dotted quad".into())
        }
        "ipv6" => value
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_ok(value: &str) -> bool {
    let s: String = value.chars().filter(|c| *c != ' ').collect();
    if s.len() < 15 || !s.is_ascii() || !s[..2].chars().all(|c| c.is_ascii_uppercase()) {
        return false;
    }
    let rearranged = format!("{}{}", &s[4..], &s[..4]);
    let mut rem = 0u32;
    for c in rearranged.chars() {
        let Some(v) = c.to_digit(36) else {
            return false;
        };
        for d in v.to_string().chars() {
            rem = (rem * 10 + d.to_digit(10).unwrap()) % 97;
        }
    }
    rem == 1
}

// ---------------------------------------------------------------------------------------
// Recovering the found spans from `mask_text`'s output

fn placeholder(detector: &str) -> String {
    format!("[{}]", detector.to_uppercase())
}

#[derive(Debug, PartialEq)]
enum Tok<'a> {
    Lit(&'a str),
    Ph(&'static str),
}

/// Splits masked output into unchanged stretches and `[DETECTOR]` placeholders.
fn tokenize(masked: &str) -> Vec<Tok<'_>> {
    let placeholders: Vec<(String, &'static str)> =
        DETECTORS.iter().map(|d| (placeholder(d), *d)).collect();
    let mut toks = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    while let Some(off) = masked[i..].find('[') {
        let at = i + off;
        if let Some((ph, det)) = placeholders
            .iter()
            .find(|(ph, _)| masked[at..].starts_with(ph.as_str()))
        {
            if lit_start < at {
                toks.push(Tok::Lit(&masked[lit_start..at]));
            }
            toks.push(Tok::Ph(det));
            i = at + ph.len();
            lit_start = i;
        } else {
            i = at + 1;
        }
    }
    if lit_start < masked.len() {
        toks.push(Tok::Lit(&masked[lit_start..]));
    }
    toks
}

/// The (detector, start, end) of each placeholder in `original`, such that replacing each
/// span by its placeholder gives back the masked output. Every placeholder stands for a
/// non-empty span; the shortest consistent span is preferred.
fn align(original: &str, masked: &str) -> Option<Vec<(&'static str, usize, usize)>> {
    fn go(
        orig: &str,
        toks: &[Tok<'_>],
        pos: usize,
        out: &mut Vec<(&'static str, usize, usize)>,
        budget: &mut u32,
    ) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match toks.first() {
            None => pos == orig.len(),
            Some(Tok::Lit(lit)) => {
                orig[pos..].starts_with(lit) && go(orig, &toks[1..], pos + lit.len(), out, budget)
            }
            Some(Tok::Ph(det)) => {
                let next_lit = match toks.get(1) {
                    Some(Tok::Lit(l)) => Some(*l),
                    _ => None,
                };
                let last = toks.len() == 1;
                let mut end = pos;
                while let Some(c) = orig[end..].chars().next() {
                    end += c.len_utf8();
                    let candidate = if last {
                        end == orig.len()
                    } else {
                        next_lit.is_none_or(|l| orig[end..].starts_with(l))
                    };
                    if candidate {
                        out.push((det, pos, end));
                        if go(orig, &toks[1..], end, out, budget) {
                            return true;
                        }
                        out.pop();
                    }
                }
                false
            }
        }
    }
    let toks = tokenize(masked);
    let mut out = Vec::new();
    let mut budget = 1_000_000;
    go(original, &toks, 0, &mut out, &mut budget).then_some(out)
}

// ---------------------------------------------------------------------------------------
// Running the engine

fn default_profile() -> Profile {
    let spec = ProfileSpec {
        detectors: vec!["all".to_string()],
        fields: Vec::new(),
        style: Style::Redact,
        styles: BTreeMap::new(),
        custom: Vec::new(),
        deny_list: Vec::new(),
        hmac_key: None,
    };
    Profile::compile(&spec).unwrap_or_else(|e| panic!("the default profile compiles: {e:?}"))
}

fn report_counts(report: &Report) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for f in report.findings() {
        *counts.entry(f.detector.clone()).or_default() += u64::from(f.count);
    }
    counts
}

struct Outcome {
    found: Vec<Span>,
    masked: String,
    /// Disagreements between the masked output, `mask_text`'s report and `scan_text`'s report.
    notes: Vec<String>,
}

fn run(profile: &Profile, sample: &Sample) -> Result<Outcome, String> {
    let mut report = Report::default();
    let masked = profile
        .mask_text(&sample.text, PATH, &mut report)
        .unwrap_or_else(|| sample.text.clone());
    let spans = align(&sample.text, &masked).ok_or_else(|| {
        format!(
            "{} ({}): cannot align mask_text's output with the input\n      input:  {}\n      output: {}",
            sample.id,
            sample.origin,
            show(&sample.text),
            show(&masked)
        )
    })?;
    let found: Vec<Span> = spans
        .iter()
        .map(|&(det, start, end)| Span {
            detector: det.to_string(),
            text: sample.text[start..end].to_string(),
        })
        .collect();

    let mut notes = Vec::new();
    let mut from_output: BTreeMap<String, u64> = BTreeMap::new();
    for s in &found {
        *from_output.entry(s.detector.clone()).or_default() += 1;
    }
    let from_mask = report_counts(&report);
    let mut scan_report = Report::default();
    profile.scan_text(&sample.text, PATH, &mut scan_report);
    let from_scan = report_counts(&scan_report);
    if from_mask != from_output {
        notes.push(format!(
            "{}: mask_text report {from_mask:?} but its output replaced {from_output:?}",
            sample.id
        ));
    }
    if from_scan != from_mask {
        notes.push(format!(
            "{}: scan_text report {from_scan:?} but mask_text report {from_mask:?}",
            sample.id
        ));
    }
    Ok(Outcome {
        found,
        masked,
        notes,
    })
}

// ---------------------------------------------------------------------------------------
// Scoring

#[derive(Default, Clone, Copy)]
struct Counts {
    positives: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
    near_misses: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

struct Miss<'a> {
    span: Span,
    sample: &'a Sample,
    masked: String,
    hint: Option<String>,
}

/// Pairs expected and found spans of one sample by (detector, text): (true positives, false
/// negatives, false positives).
fn pair(expected: &[Span], found: &[Span]) -> (Vec<Span>, Vec<Span>, Vec<Span>) {
    let mut left: Vec<Span> = found.to_vec();
    let mut tp = Vec::new();
    let mut fns = Vec::new();
    for e in expected {
        if let Some(i) = left.iter().position(|f| f == e) {
            tp.push(left.remove(i));
        } else {
            fns.push(e.clone());
        }
    }
    (tp, fns, left)
}

/// Why a false positive or negative probably happened, judged from the other misses in the
/// same sample.
fn hint(miss: &Span, others: &[Span], missed: bool) -> Option<String> {
    for o in others {
        let same_text = o.text == miss.text;
        let overlaps = o.text.contains(miss.text.as_str()) || miss.text.contains(o.text.as_str());
        if same_text && o.detector != miss.detector {
            return Some(if missed {
                format!("labelled {} instead", o.detector)
            } else {
                format!("expected as {}", o.detector)
            });
        }
        if overlaps && o.detector == miss.detector {
            return Some(if missed {
                format!("boundary: found {}", show(&o.text))
            } else {
                format!("boundary: expected {}", show(&o.text))
            });
        }
        if overlaps {
            return Some(if missed {
                format!("overlapping {} found: {}", o.detector, show(&o.text))
            } else {
                format!("overlaps expected {}: {}", o.detector, show(&o.text))
            });
        }
    }
    None
}

fn show(s: &str) -> String {
    const MAX: usize = 240;
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() > MAX {
        let cut: String = escaped.chars().take(MAX).collect();
        format!("\"{cut}…\" ({} chars)", s.chars().count())
    } else {
        format!("\"{escaped}\"")
    }
}

#[test]
fn corpus_is_well_formed() {
    let samples = load_corpus();
    let errors = corpus_errors(&samples);
    assert!(
        errors.is_empty(),
        "corpus errors:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn detectors_meet_precision_and_recall() {
    let samples = load_corpus();
    let corpus_problems = corpus_errors(&samples);
    let profile = default_profile();

    let mut counts: BTreeMap<&str, Counts> =
        DETECTORS.iter().map(|d| (*d, Counts::default())).collect();
    let mut general_near_misses = 0;
    let mut false_negatives: Vec<Miss<'_>> = Vec::new();
    let mut false_positives: Vec<Miss<'_>> = Vec::new();
    let mut alignment_failures = Vec::new();
    let mut notes = Vec::new();

    for sample in &samples {
        let group = sample.id.split('/').next().unwrap_or_default();
        if sample.id.split('/').nth(1) == Some("neg") {
            match counts.get_mut(group) {
                Some(c) => c.near_misses += 1,
                None => general_near_misses += 1,
            }
        }
        for e in &sample.expected {
            if let Some(c) = counts.get_mut(e.detector.as_str()) {
                c.positives += 1;
            }
        }
        let outcome = match run(&profile, sample) {
            Ok(o) => o,
            Err(why) => {
                alignment_failures.push(why);
                continue;
            }
        };
        notes.extend(outcome.notes);
        let (tp, fns, fps) = pair(&sample.expected, &outcome.found);
        for s in &tp {
            if let Some(c) = counts.get_mut(s.detector.as_str()) {
                c.tp += 1;
            }
        }
        for s in &fns {
            if let Some(c) = counts.get_mut(s.detector.as_str()) {
                c.fn_ += 1;
            }
            false_negatives.push(Miss {
                span: s.clone(),
                sample,
                masked: outcome.masked.clone(),
                hint: hint(s, &fps, true),
            });
        }
        for s in &fps {
            if let Some(c) = counts.get_mut(s.detector.as_str()) {
                c.fp += 1;
            }
            false_positives.push(Miss {
                span: s.clone(),
                sample,
                masked: outcome.masked.clone(),
                hint: hint(s, &fns, false),
            });
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmasking accuracy: {} samples from {}\n",
        samples.len(),
        corpus_dir().display()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>5} {:>5} {:>5} {:>9} {:>7} {:>11}",
        "detector", "positives", "TP", "FP", "FN", "precision", "recall", "near misses"
    );
    let mut failing = Vec::new();
    let mut total = Counts::default();
    for (det, c) in &counts {
        let mut flags = Vec::new();
        if c.positives < MIN_POSITIVES {
            flags.push(format!("fewer than {MIN_POSITIVES} positives"));
        }
        if c.precision() < MIN_PRECISION {
            flags.push(format!("precision below {MIN_PRECISION}"));
        }
        if c.recall() < MIN_RECALL {
            flags.push(format!("recall below {MIN_RECALL}"));
        }
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>11}  {}",
            det,
            c.positives,
            c.tp,
            c.fp,
            c.fn_,
            c.precision(),
            c.recall(),
            c.near_misses,
            if flags.is_empty() {
                "ok".to_string()
            } else {
                format!("FAIL: {}", flags.join(", "))
            }
        );
        if !flags.is_empty() {
            failing.push(format!("{det} ({})", flags.join(", ")));
        }
        total.positives += c.positives;
        total.tp += c.tp;
        total.fp += c.fp;
        total.fn_ += c.fn_;
        total.near_misses += c.near_misses;
    }
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>11}  (+{} general near misses)",
        "all",
        total.positives,
        total.tp,
        total.fp,
        total.fn_,
        total.precision(),
        total.recall(),
        total.near_misses,
        general_near_misses
    );

    for (title, misses) in [
        ("false negatives (expected, not found)", &false_negatives),
        ("false positives (found, not expected)", &false_positives),
    ] {
        let _ = writeln!(out, "\n{title}: {}", misses.len());
        let mut sorted: Vec<&Miss<'_>> = misses.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.span.detector, &a.sample.id).cmp(&(&b.span.detector, &b.sample.id))
        });
        for m in sorted {
            let _ = writeln!(
                out,
                "  [{}] {} in {} ({}){}",
                m.span.detector,
                show(&m.span.text),
                m.sample.id,
                m.sample.origin,
                m.hint
                    .as_ref()
                    .map(|h| format!(" — {h}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "      input:  {}", show(&m.sample.text));
            let _ = writeln!(out, "      output: {}", show(&m.masked));
        }
    }
    if !alignment_failures.is_empty() {
        let _ = writeln!(
            out,
            "\nsamples whose output could not be aligned: {}",
            alignment_failures.len()
        );
        for a in &alignment_failures {
            let _ = writeln!(out, "  {a}");
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\nreport disagreements (not scored): {}", notes.len());
        for n in &notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    if !corpus_problems.is_empty() {
        let _ = writeln!(out, "\ncorpus errors: {}", corpus_problems.len());
        for e in &corpus_problems {
            let _ = writeln!(out, "  {e}");
        }
    }

    println!("{out}");
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mask-accuracy.txt");
    if std::fs::write(&report_path, &out).is_ok() {
        println!("(also written to {})", report_path.display());
    }

    let mut problems = failing;
    if !alignment_failures.is_empty() {
        problems.push(format!(
            "{} sample(s) could not be aligned",
            alignment_failures.len()
        ));
    }
    if !corpus_problems.is_empty() {
        problems.push(format!("{} corpus error(s)", corpus_problems.len()));
    }
    assert!(
        problems.is_empty(),
        "masking accuracy below target: {}",
        problems.join("; ")
    );
}

// ---------------------------------------------------------------------------------------
// Tests of the harness itself

#[test]
fn parser_reads_text_expectations_and_heredocs() {
    let src = "# comment\n\n@@@ sample email/pos/a-01\nline one\n\nline @@@ three\n@@@ expect\nemail a@b.example\nprivate_key <<<\nx\ny\n>>>\n@@@ end\n\n@@@ sample general/neg/b-01\nnothing\n@@@ end\n";
    let samples = parse_corpus("t.txt", src).unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].id, "email/pos/a-01");
    assert_eq!(samples[0].origin, "t.txt:3");
    assert_eq!(samples[0].text, "line one\n\nline @@@ three");
    assert_eq!(
        samples[0].expected,
        vec![
            Span {
                detector: "email".into(),
                text: "a@b.example".into()
            },
            Span {
                detector: "private_key".into(),
                text: "x\ny".into()
            },
        ]
    );
    assert_eq!(samples[1].text, "nothing");
    assert!(samples[1].expected.is_empty());
    assert!(parse_corpus("t.txt", "@@@ sample x\ntext\n").is_err());
    assert!(parse_corpus("t.txt", "stray\n").is_err());
    assert!(parse_corpus("t.txt", "@@@ sample x\nt\n@@@ expect\nnovalue\n@@@ end\n").is_err());
}

#[test]
fn alignment_recovers_replaced_spans() {
    let spans = |orig: &str, masked: &str| -> Option<Vec<(&'static str, String)>> {
        align(orig, masked).map(|v| {
            v.into_iter()
                .map(|(d, s, e)| (d, orig[s..e].to_string()))
                .collect()
        })
    };
    assert_eq!(spans("no match", "no match"), Some(vec![]));
    assert_eq!(
        spans("mail a@b.example, ip 10.0.0.1", "mail [EMAIL], ip [IPV4]"),
        Some(vec![
            ("email", "a@b.example".into()),
            ("ipv4", "10.0.0.1".into())
        ])
    );
    // Non-ASCII around and inside the stretches.
    assert_eq!(
        spans("連絡先：a@b.example（平日）", "連絡先：[EMAIL]（平日）"),
        Some(vec![("email", "a@b.example".into())])
    );
    // A span that contains the literal that follows it.
    assert_eq!(
        spans("password=a, b, c, x", "password=[PASSWORD], x"),
        Some(vec![("password", "a, b, c".into())])
    );
    // Multi-line span at the end.
    assert_eq!(
        spans("k:\n-----BEGIN\nAA\n-----END", "k:\n[PRIVATE_KEY]"),
        Some(vec![("private_key", "-----BEGIN\nAA\n-----END".into())])
    );
    // Adjacent placeholders: the split is ambiguous; some split is returned.
    let adj = spans("xy", "[EMAIL][PHONE]").unwrap();
    assert_eq!(adj.len(), 2);
    // Brackets that are not placeholders stay literal.
    assert_eq!(
        spans("[docs](x) a@b.example [Email]", "[docs](x) [EMAIL] [Email]"),
        Some(vec![("email", "a@b.example".into())])
    );
    // Output that is not a masking of the input.
    assert_eq!(spans("abc", "abd"), None);
    assert_eq!(spans("abc", "abc[EMAIL]"), None);
}

#[test]
fn pairing_counts_multisets() {
    let s = |d: &str, t: &str| Span {
        detector: d.into(),
        text: t.into(),
    };
    let (tp, fns, fps) = pair(
        &[
            s("ipv4", "10.0.0.1"),
            s("ipv4", "10.0.0.1"),
            s("email", "a@b.c"),
        ],
        &[
            s("ipv4", "10.0.0.1"),
            s("phone", "a@b.c"),
            s("ipv4", "10.0.0.2"),
        ],
    );
    assert_eq!(tp, vec![s("ipv4", "10.0.0.1")]);
    assert_eq!(fns, vec![s("ipv4", "10.0.0.1"), s("email", "a@b.c")]);
    assert_eq!(fps, vec![s("phone", "a@b.c"), s("ipv4", "10.0.0.2")]);
    assert_eq!(
        hint(&fns[1], &fps, true).as_deref(),
        Some("labelled phone instead")
    );
}

#[test]
fn value_checks_follow_the_definitions() {
    assert!(check_value("credit_card", "4111 1111 1111 1111").is_ok());
    assert!(check_value("credit_card", "4111 1111 1111 1112").is_err());
    assert!(check_value("iban", "GB35LOYD30961748205317").is_ok());
    assert!(check_value("iban", "GB36LOYD30961748205317").is_err());
    assert!(check_value("ssn", "457-21-9034").is_ok());
    assert!(check_value("ssn", "666-21-9034").is_err());
    assert!(check_value("ssn", "457-00-9034").is_err());
    assert!(check_value("ipv4", "192.0.2.1").is_ok());
    assert!(check_value("ipv4", "256.0.2.1").is_err());
    assert!(check_value("ipv6", "2001:db8::1").is_ok());
    assert!(check_value("ipv6", "2001:db8:::1").is_err());
}
