//! `portcullis audit verify`, `audit proof` and `audit verify-proof`: the auditor's side of
//! the tamper-evident log. The checks themselves live in `portcullis_audit::{verify, proof}`;
//! this is argument handling, the progress bar and the exit codes.
//!
//! Exit codes: 0 the log (or proof) checks; 1 it does not (tampered, truncated, forged, or
//! unreadable: a log that cannot be read is not a valid log); 2 the check could not be run
//! because an input the auditor gave is unusable (a key file, a directory, two logs that
//! name the same origin).
//!
//! `audit verify` takes the logs of several replicas at once (repeated `--data-dir`, each
//! with its own key): each is verified on its own and reported on its own line, and the exit
//! code is 1 if any fails. The other commands here read one log.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use portcullis_audit::checkpoint::Verifier;
use portcullis_audit::digest::DigestKey;
use portcullis_audit::witness::CosignatureVerifier;
use portcullis_audit::{keys, proof, verify};

use crate::{DataDir, DataDirs};

/// The log (or proof) does not check.
const EXIT_INVALID: i32 = 1;
/// The check could not be run.
const EXIT_UNUSABLE_INPUT: i32 = 2;

/// Below this many events the check is over before a bar would be worth drawing.
const PROGRESS_THRESHOLD: u64 = 100_000;

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    dirs: DataDirs,
    /// The gateway's checkpoint verifier key (`audit.pub`). With several `--data-dir`: one
    /// key for all of them, or one per `--data-dir`, in the same order.
    #[arg(long, required = true, value_name = "FILE")]
    pubkey: Vec<PathBuf>,
    /// A directory of published checkpoints: every `*.checkpoint` file in it (the gateway's
    /// `audit.checkpoint_dir`, a witness's state directory). Every one of this log's must
    /// match it: this is what catches a truncated or rolled-back log. Repeatable.
    #[arg(long = "checkpoints", value_name = "DIR")]
    checkpoints: Vec<PathBuf>,
    /// A witness's cosignature verifier key (`witness.pub`); its cosignatures must verify.
    /// Repeatable.
    #[arg(long = "witness-key", value_name = "FILE")]
    witness_keys: Vec<PathBuf>,
    /// An auditor's age identity file (`AGE-SECRET-KEY-1...`, as `age-keygen` writes):
    /// sealed recording segments are decrypted and every chunk in them checked. Without
    /// it, only the segment files are checked against their seal events.
    #[arg(long = "identity", value_name = "FILE")]
    identity: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ProofArgs {
    /// The id of the event to prove.
    event_id: String,
    /// Where to write the proof (JSON).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    dir: DataDir,
}

#[derive(clap::Args)]
pub struct DigestArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The directory of the audit signing key (`audit.signing_key`), if the log has one:
    /// its digest key is derived from it. Default: read from `--config`.
    #[arg(long)]
    signing_key: Option<PathBuf>,
}

/// `audit digest`: the digest an event would hold for the payload on standard input (the
/// exact bytes: a request's `params`, a result), to check a known payload against an
/// event. Needs the log's digest key, which only the operator holds.
pub fn digest(args: &DigestArgs) -> Result<()> {
    use std::io::Read as _;
    let signing_key = match (&args.signing_key, &args.dir.config) {
        (Some(dir), _) => Some(dir.clone()),
        (None, Some(config)) => portcullis_config::Config::load(config)?.audit.signing_key,
        (None, None) => None,
    };
    let key = match signing_key {
        Some(dir) => {
            let signer = keys::load_signer(&dir, keys::AUDIT_KEY)
                .context("loading the audit signing key")?;
            DigestKey::derived_from(&signer)?
        }
        None => DigestKey::load(&args.dir.resolve()?)?,
    };
    let mut payload = Vec::new();
    std::io::stdin().read_to_end(&mut payload)?;
    println!("{}", serde_json::to_string(&key.digest(&payload))?);
    Ok(())
}

#[derive(clap::Args)]
pub struct VerifyProofArgs {
    /// The proof file written by `portcullis audit proof`.
    file: PathBuf,
    /// The gateway's checkpoint verifier key (`audit.pub`).
    #[arg(long)]
    pubkey: PathBuf,
    /// A witness's cosignature verifier key; its cosignature in the proof, if any, must
    /// verify. Repeatable.
    #[arg(long = "witness-key", value_name = "FILE")]
    witness_keys: Vec<PathBuf>,
}

/// `audit verify`; returns the exit code. Several logs (the replicas of a gateway) are
/// each verified against their own key and reported one by one; the exit code is the worst.
pub fn verify(args: &VerifyArgs) -> i32 {
    let inputs = (|| -> Result<_> {
        let data_dirs = args.dirs.resolve()?;
        let keys = pair_keys(&data_dirs, &args.pubkey)?;
        let witnesses = load_witness_keys(&args.witness_keys)?;
        for dir in &args.checkpoints {
            if !dir.is_dir() {
                anyhow::bail!("--checkpoints {}: not a directory", dir.display());
            }
        }
        let identities = args
            .identity
            .as_deref()
            .map(portcullis_recording::segment::load_identities)
            .transpose()?;
        let origins = if data_dirs.len() > 1 {
            verify::distinct_origins(&data_dirs).map_err(anyhow::Error::msg)?
        } else {
            vec![None]
        };
        Ok((data_dirs, keys, origins, witnesses, identities))
    })();
    let (data_dirs, keys, origins, witnesses, identities) = match inputs {
        Ok(inputs) => inputs,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    let check = |dir: &Path, key: &Verifier| {
        verify_one(dir, key, &args.checkpoints, &witnesses, identities.as_ref())
    };
    if data_dirs.len() == 1 {
        return match check(&data_dirs[0], &keys[0]) {
            Ok(summary) => {
                for warning in &summary.warnings {
                    eprintln!("warning: {warning}");
                }
                println!("audit log OK: {summary}");
                0
            }
            Err(failure) => {
                eprintln!("audit log INVALID: {failure}");
                EXIT_INVALID
            }
        };
    }
    let mut invalid = Vec::new();
    for ((dir, key), stated) in data_dirs.iter().zip(&keys).zip(&origins) {
        match check(dir, key) {
            Ok(summary) => {
                let origin = summary.origin.as_deref().or(stated.as_deref());
                for warning in &summary.warnings {
                    eprintln!("warning: {}: {warning}", dir.display());
                }
                println!(
                    "audit log {} ({}): OK: {summary}; witness cosignatures verified: {}",
                    dir.display(),
                    origin.unwrap_or("no checkpoint yet"),
                    summary.cosignatures_verified
                );
            }
            Err(failure) => {
                let origin = stated.as_deref().unwrap_or("origin not known");
                println!("audit log {} ({origin}): INVALID: {failure}", dir.display());
                invalid.push(format!("{} ({origin})", dir.display()));
            }
        }
    }
    if invalid.is_empty() {
        println!("all {} audit logs OK", data_dirs.len());
        0
    } else {
        eprintln!(
            "{} of {} audit logs INVALID: {}",
            invalid.len(),
            data_dirs.len(),
            invalid.join(", ")
        );
        EXIT_INVALID
    }
}

/// The verifier key of each log: one given for all, or one per log in the same order.
fn pair_keys(data_dirs: &[PathBuf], pubkeys: &[PathBuf]) -> Result<Vec<Verifier>> {
    let keys = pubkeys
        .iter()
        .map(|path| load_pubkey(path))
        .collect::<Result<Vec<_>>>()?;
    match keys.len() {
        1 => Ok(vec![keys[0].clone(); data_dirs.len()]),
        n if n == data_dirs.len() => Ok(keys),
        n => anyhow::bail!(
            "{n} --pubkey for {} --data-dir: give one key for all the logs, or one per \
             --data-dir in the same order",
            data_dirs.len()
        ),
    }
}

/// Verifies one log, with a progress bar on a terminal for a long one.
fn verify_one(
    data_dir: &Path,
    key: &Verifier,
    checkpoints: &[PathBuf],
    witnesses: &[CosignatureVerifier],
    identities: Option<&portcullis_recording::segment::Identities>,
) -> Result<verify::Summary, verify::Failure> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let show_progress = std::io::stderr().is_terminal();
    let mut progress = |done: u64, total: u64| {
        if !show_progress || total < PROGRESS_THRESHOLD {
            return;
        }
        let bar = bar.get_or_insert_with(|| new_bar(total));
        bar.set_length(total);
        bar.set_position(done);
    };
    let result = verify::verify_with_identities(
        data_dir,
        key,
        checkpoints,
        witnesses,
        identities,
        &mut progress,
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn new_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "verifying {bar:40} {human_pos}/{human_len} events ({eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `audit proof`.
pub fn proof(args: &ProofArgs) -> Result<()> {
    let data_dir = args.dir.resolve()?;
    let proof = proof::build_proof(&data_dir, &args.event_id)?;
    std::fs::write(&args.out, proof.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {}: event {} is entry {} of the log, in its checkpoint of size {}",
        args.out.display(),
        args.event_id,
        proof.seq,
        checkpoint_size(&proof.checkpoint).unwrap_or_default()
    );
    Ok(())
}

/// The size line of a checkpoint note, for the message only.
fn checkpoint_size(note: &str) -> Option<&str> {
    note.split('\n').nth(1)
}

/// `audit verify-proof`; returns the exit code.
pub fn verify_proof(args: &VerifyProofArgs) -> i32 {
    let inputs = (|| -> Result<_> {
        Ok((
            load_pubkey(&args.pubkey)?,
            load_witness_keys(&args.witness_keys)?,
        ))
    })();
    let (key, witnesses) = match inputs {
        Ok(inputs) => inputs,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_UNUSABLE_INPUT;
        }
    };
    match proof::verify_proof_with_witnesses(&args.file, &key, &witnesses) {
        Ok(report) => {
            println!("proof OK: {report}");
            0
        }
        Err(proof::ProofError::Io { path, source }) => {
            eprintln!("error: cannot read {}: {source}", path.display());
            EXIT_UNUSABLE_INPUT
        }
        Err(err) => {
            eprintln!("proof INVALID: {err}");
            EXIT_INVALID
        }
    }
}

fn load_pubkey(path: &Path) -> Result<Verifier> {
    // The key error names the file and the cause; a context on top would repeat them.
    keys::load_verifier(path).map_err(|e| anyhow::anyhow!("--pubkey: {e}"))
}

pub(crate) fn load_witness_keys(paths: &[PathBuf]) -> Result<Vec<CosignatureVerifier>> {
    paths
        .iter()
        .map(|path| {
            keys::load_cosignature_verifier(path).map_err(|e| anyhow::anyhow!("--witness-key: {e}"))
        })
        .collect()
}

/// An event's JSON line made safe to print on a terminal: characters that a terminal acts on
/// or that reorder or hide text (DEL and the C1 controls, the bidirectional overrides,
/// embeddings and isolates, zero-width and invisible format characters, the line and
/// paragraph separators) become `\uXXXX` escapes. The caller controls strings such as a tool
/// name, so printed raw they could make a line read differently from what it records (a
/// U+202E reverses the rest of it). serde_json leaves them raw; inside a JSON string the
/// escape is the same value, and they cannot occur outside one, so the line is still the
/// event's JSON, equal to the stored one once parsed.
pub fn terminal_safe(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(acts_on_a_terminal) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if acts_on_a_terminal(c) {
            // JSON escapes are UTF-16 units: a character beyond the Basic Multilingual Plane
            // (the tag characters) is written as its surrogate pair.
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a terminal acts on `c` or shows nothing for it: controls, and the characters of
/// Unicode's format category (Cf) and the invisible fillers, which reorder, join or hide
/// text. Kept as ranges (Unicode 16) rather than a table crate: the list is short and stable.
pub(crate) fn acts_on_a_terminal(c: char) -> bool {
    matches!(c,
        // C0 controls are not listed: serde_json escapes them inside strings, and outside
        // one they are the layout of a pretty-printed event.
        '\u{7f}'..='\u{9f}' // DEL and C1, which include CSI (U+009B)
        | '\u{ad}' // soft hyphen, invisible
        | '\u{034f}' // combining grapheme joiner
        | '\u{0600}'..='\u{0605}' | '\u{06dd}' | '\u{070f}' | '\u{0890}'..='\u{0891}' | '\u{08e2}' // Arabic and Syriac format marks
        | '\u{061c}' // Arabic letter mark
        | '\u{115f}'..='\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers, blank
        | '\u{17b4}'..='\u{17b5}' // Khmer inherent vowels, invisible
        | '\u{180b}'..='\u{180f}' // Mongolian variation selectors and vowel separator
        | '\u{200b}'..='\u{200f}' // zero-width characters, LRM, RLM
        | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings and overrides
        | '\u{2060}'..='\u{206f}' // word joiner, invisible operators, bidi isolates
        | '\u{fe00}'..='\u{fe0f}' // variation selectors
        | '\u{feff}' // zero-width no-break space
        | '\u{fff9}'..='\u{fffb}' // interlinear annotation
        | '\u{110bd}' | '\u{110cd}' // Kaithi number signs
        | '\u{13430}'..='\u{1345f}' // Egyptian hieroglyph format controls
        | '\u{1bca0}'..='\u{1bca3}' // shorthand format controls
        | '\u{1d173}'..='\u{1d17a}' // musical symbol format controls
        | '\u{e0000}'..='\u{e0fff}' // tag characters and variation selectors supplement
    )
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn bidi_and_control_characters_are_escaped_and_the_json_is_unchanged() {
        let value =
            serde_json::json!({"tool": "a\u{202e}b\u{2067}c\u{9b}d\u{7f}e\u{200b}f", "n": 1});
        let line = serde_json::to_string(&value).unwrap();
        let safe = terminal_safe(&line);
        assert!(
            safe.chars().all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{safe}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
    }

    #[test]
    fn invisible_characters_beyond_the_basic_plane_are_escaped_as_surrogate_pairs() {
        let value = serde_json::json!({"tool": "evil\u{e0041}x\u{1d173}y\u{3164}z\u{34f}"});
        let line = serde_json::to_string(&value).unwrap();
        let safe = terminal_safe(&line);
        assert!(safe.is_ascii(), "{safe}");
        assert!(safe.contains("\\udb40\\udc41"), "{safe}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&safe).unwrap(),
            value
        );
    }

    #[test]
    fn ordinary_text_is_left_as_is() {
        let line = r#"{"who":"Zoë — 東京","n":1}"#;
        assert!(matches!(terminal_safe(line), std::borrow::Cow::Borrowed(_)));
    }
}
