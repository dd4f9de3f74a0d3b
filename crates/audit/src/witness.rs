//! Witnessing: an independent party that cosigns a log's checkpoints only while the log stays
//! append-only.
//!
//! This is the protocol logic of a C2SP `tlog-witness`, without HTTP. A log (a gateway) sends
//! an *add-checkpoint* request: the size of the checkpoint it believes the witness holds, a
//! consistency proof from that size, and its newly signed checkpoint. The witness checks the
//! log's signature, that the old size is the one it last cosigned, and that the proof leads
//! from the root it stored to the new root. Only then does it store the new checkpoint and
//! return a C2SP `tlog-cosignature` (`cosignature/v1`, Ed25519): a note signature line over
//! `"cosignature/v1\ntime <t>\n" || checkpoint body` whose blob is
//! `key id (4) || timestamp (u64, big-endian) || signature (64)`.
//!
//! A log that rewrites history, or shows different trees to different parties, then cannot get
//! a cosignature for the rewritten tree from a witness that saw the original, which is what
//! makes its checkpoints worth more than its own say-so.
//!
//! The module also holds the log's side that involves no I/O: [`request_body`] to build a
//! request and [`parse_answer`] to read the witness's answer.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest as _, Sha256};

use crate::checkpoint::{
    COSIGNATURE_ALG, Checkpoint, CheckpointError, Signer, Verifier, parse_key_string, split_note,
};
use crate::merkle::{self, Hash, ProofError};

/// "— " (em dash, space) opens every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The most consistency-proof lines a request may carry (tlog-witness): enough for any tree
/// of up to 2^63 leaves.
pub const MAX_PROOF_LINES: usize = 63;
/// The content type of a 409 answer, whose body is the latest cosigned size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// Length of a cosignature blob: key id, timestamp, Ed25519 signature.
const BLOB_LEN: usize = 4 + 8 + 64;

// ---------------------------------------------------------------------------------------------
// Cosignatures
// ---------------------------------------------------------------------------------------------

/// The four-byte key id of an Ed25519 cosigner key:
/// SHA-256(name || "\n" || 0x04 || public key)[..4].
pub fn cosignature_key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([COSIGNATURE_ALG]);
    h.update(public_key);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The verifier key string of a cosigner: `<name>+<hex key id>+<base64(0x04 || public key)>`.
pub fn cosigner_key(signer: &dyn Signer) -> String {
    CosignatureVerifier::for_signer(signer).key()
}

/// The message a `cosignature/v1` signature covers.
fn cosigned_message(body: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{body}")
}

/// Cosigns a checkpoint body (the note text without its signature lines) as of `time` (Unix
/// seconds). Returns the signature line, ending in a newline.
pub fn cosign(signer: &dyn Signer, body: &str, time: u64) -> Result<String, CheckpointError> {
    Checkpoint::parse(body)?;
    if time > i64::MAX as u64 {
        return Err(CheckpointError::Signing(format!(
            "timestamp {time} is beyond 2^63 - 1"
        )));
    }
    let name = signer.name();
    if name.is_empty() || name.contains([' ', '\n', '+']) {
        return Err(CheckpointError::Signing(format!(
            "{name:?} is not a valid key name"
        )));
    }
    let mut blob = Vec::with_capacity(BLOB_LEN);
    blob.extend_from_slice(&cosignature_key_id(name, &signer.public_key()));
    blob.extend_from_slice(&time.to_be_bytes());
    blob.extend(signer.sign(cosigned_message(body, time).as_bytes())?);
    Ok(format!("{SIGNATURE_PREFIX}{name} {}\n", B64.encode(blob)))
}

/// A cosigner's verifier key, parsed from its string form; checks cosignatures by that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    pub name: String,
    pub key_id: [u8; 4],
    pub public_key: [u8; 32],
}

impl CosignatureVerifier {
    /// Parses `<name>+<hex key id>+<base64(0x04 || public key)>`.
    pub fn parse(text: &str) -> Result<CosignatureVerifier, CheckpointError> {
        let (name, key_id, public_key) =
            parse_key_string(text, COSIGNATURE_ALG, cosignature_key_id, |alg| {
                (alg == 0x01).then_some(
                    "this is a note signing key (type 0x01), not a cosignature key (type 0x04)",
                )
            })?;
        Ok(CosignatureVerifier {
            name,
            key_id,
            public_key,
        })
    }

    pub fn for_signer(signer: &dyn Signer) -> CosignatureVerifier {
        let public_key = signer.public_key();
        CosignatureVerifier {
            name: signer.name().to_string(),
            key_id: cosignature_key_id(signer.name(), &public_key),
            public_key,
        }
    }

    /// The verifier key string.
    pub fn key(&self) -> String {
        let mut encoded = vec![COSIGNATURE_ALG];
        encoded.extend_from_slice(&self.public_key);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(encoded)
        )
    }

    /// Finds this key's cosignatures among `lines` (signature lines, each ending in a newline:
    /// a witness's answer, or the signature block of a note) and checks them over `body`.
    /// Lines by other keys are ignored; a line that claims to be by this key but does not
    /// verify is an error. Returns the timestamp of the latest valid cosignature.
    pub fn verify_lines(&self, body: &str, lines: &str) -> Result<u64, CheckpointError> {
        let mut latest = None;
        for (name, blob) in signature_lines(lines)? {
            if name != self.name || blob.len() < 4 || blob[..4] != self.key_id {
                continue; // another key: the log's own signature, or another witness
            }
            let bad = || CheckpointError::BadSignature(self.name.clone());
            if blob.len() != BLOB_LEN {
                return Err(bad());
            }
            let time = u64::from_be_bytes(blob[4..12].try_into().expect("8 bytes"));
            if time > i64::MAX as u64 {
                return Err(bad());
            }
            UnparsedPublicKey::new(&ED25519, self.public_key)
                .verify(cosigned_message(body, time).as_bytes(), &blob[12..])
                .map_err(|_| bad())?;
            latest = latest.max(Some(time));
        }
        latest.ok_or_else(|| CheckpointError::NotSigned(self.name.clone()))
    }

    /// Checks this key's cosignature on a signed note; returns the note body and the timestamp.
    pub fn verify_note<'a>(&self, note: &'a str) -> Result<(&'a str, u64), CheckpointError> {
        let (body, lines) = split_note(note)?;
        Ok((body, self.verify_lines(body, lines)?))
    }
}

/// Parses signature lines (`— <name> <base64>`, each ending in a newline; at least one).
fn signature_lines(text: &str) -> Result<Vec<(&str, Vec<u8>)>, CheckpointError> {
    let bad = |m: String| CheckpointError::MalformedNote(m);
    let Some(text) = text.strip_suffix('\n') else {
        return Err(bad("no signature lines, or no final newline".into()));
    };
    text.split('\n')
        .map(|line| {
            let (name, blob) = line
                .strip_prefix(SIGNATURE_PREFIX)
                .and_then(|rest| rest.rsplit_once(' '))
                .filter(|(name, _)| !name.is_empty() && !name.contains(' '))
                .ok_or_else(|| bad(format!("not a signature line: {line:?}")))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| bad(format!("the signature by {name} is not base64")))?;
            Ok((name, blob))
        })
        .collect()
}

/// Appends a witness's answer (its cosignature lines) to the note it cosigned.
pub fn attach_cosignatures(note: &str, lines: &str) -> String {
    format!("{note}{lines}")
}

// ---------------------------------------------------------------------------------------------
// The add-checkpoint request and its answers
// ---------------------------------------------------------------------------------------------

/// An add-checkpoint request: `old <size>\n`, one base64 proof hash per line, an empty line,
/// then the signed checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the log believes the witness last cosigned (0 if none).
    pub old_size: u64,
    /// The consistency proof from `old_size` to the new checkpoint's size.
    pub proof: Vec<Hash>,
    /// The new checkpoint, a signed note.
    pub note: String,
}

impl AddCheckpoint {
    /// Parses a request body strictly: every line ends in a newline, sizes are decimal
    /// without leading zeros, each proof line is exactly one base64 SHA-256 hash.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, WitnessError> {
        let bad = |m: &str| WitnessError::Malformed(m.to_string());
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or_else(|| bad("no old size line"))?;
        let old_size = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or_else(|| {
                bad("the first line must be `old <size>` (decimal, no leading zeros)")
            })?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest
                .split_once('\n')
                .ok_or_else(|| bad("no empty line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(WitnessError::Malformed(format!(
                    "more than {MAX_PROOF_LINES} consistency proof lines"
                )));
            }
            let hash: Hash = B64
                .decode(line)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("a proof line is not one base64 SHA-256 hash"))?;
            proof.push(hash);
        }
        if old_size == 0 && !proof.is_empty() {
            return Err(bad("the proof must be empty when the old size is 0"));
        }
        if rest.is_empty() {
            return Err(bad("no checkpoint after the empty line"));
        }
        Ok(AddCheckpoint {
            old_size,
            proof,
            note: rest.to_string(),
        })
    }

    /// The request body.
    pub fn body(&self) -> String {
        request_body(self.old_size, &self.proof, &self.note)
    }
}

/// Formats an add-checkpoint request body (the log's side).
pub fn request_body(old_size: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old_size}\n");
    for hash in proof {
        body.push_str(&B64.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// A decimal without sign or leading zeros ("0" itself allowed) that fits 64 bits.
fn parse_decimal(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// What a witness answered to add-checkpoint, when it answered as the protocol says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the cosignature line(s), each ending in a newline; append them to the note (after
    /// checking them with [`CosignatureVerifier::verify_lines`]).
    Cosigned(String),
    /// 409 with a size: the witness's latest cosigned size for this origin differs from the
    /// old size sent. Retry with a proof from this size.
    Conflict { latest: u64 },
}

/// Why a witness's answer is not a cosignature or a size conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Any other status, or a 409 without a size (a fork: same size, another root).
    #[error("the witness refused the checkpoint ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("malformed witness answer: {0}")]
    Malformed(String),
}

/// Reads a witness's answer to add-checkpoint from its HTTP status and body.
pub fn parse_answer(status: u16, body: &str) -> Result<Answer, AnswerError> {
    match status {
        200 => {
            if body.is_empty() {
                return Err(AnswerError::Malformed("no cosignature lines".into()));
            }
            signature_lines(body).map_err(|e| AnswerError::Malformed(e.to_string()))?;
            Ok(Answer::Cosigned(body.to_string()))
        }
        409 => match body.strip_suffix('\n').and_then(parse_decimal) {
            Some(latest) => Ok(Answer::Conflict { latest }),
            None => Err(AnswerError::Refused {
                status,
                message: short(body),
            }),
        },
        _ => Err(AnswerError::Refused {
            status,
            message: short(body),
        }),
    }
}

/// The start of an error body, for a message: a witness's text, never trusted to be small.
fn short(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The witness
// ---------------------------------------------------------------------------------------------

/// Why a witness refused a checkpoint. [`status`](Self::status) gives the HTTP status the
/// tlog-witness protocol assigns to each case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// 400: the request or the checkpoint cannot be parsed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 400: the old size is beyond the new checkpoint (a rollback request).
    #[error("old size {old} is larger than the checkpoint size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    /// 403: no configured log key signed the checkpoint, or not the key its origin is bound to.
    #[error("{0}")]
    Forbidden(String),
    /// 409: the old size is not the latest cosigned size for the origin; the answer carries it.
    #[error("old size {old} is not the latest cosigned size {latest} of {origin}")]
    Conflict {
        origin: String,
        old: u64,
        latest: u64,
    },
    /// 409: the same size was cosigned with another root: the log forked.
    #[error("{origin} at size {size} was cosigned with root {stored}, not {new}: a fork")]
    Fork {
        origin: String,
        size: u64,
        stored: String,
        new: String,
    },
    /// 422: the consistency proof does not lead from the stored root to the new one.
    #[error("the consistency proof of {origin} from size {old} to {new} does not verify: {cause}")]
    BadProof {
        origin: String,
        old: u64,
        new: u64,
        cause: ProofError,
    },
    /// 500: the state directory cannot be read or written.
    #[error("witness state {path}: {message}")]
    Storage { path: PathBuf, message: String },
    /// 500: the witness key failed to sign.
    #[error("cosigning failed: {0}")]
    Signing(String),
}

impl WitnessError {
    /// The HTTP status of this refusal in the tlog-witness protocol.
    pub fn status(&self) -> u16 {
        match self {
            WitnessError::Malformed(_) | WitnessError::SizesOutOfOrder { .. } => 400,
            WitnessError::Forbidden(_) => 403,
            WitnessError::Conflict { .. } | WitnessError::Fork { .. } => 409,
            WitnessError::BadProof { .. } => 422,
            WitnessError::Storage { .. } | WitnessError::Signing(_) => 500,
        }
    }

    /// For a size conflict, the latest cosigned size, which the 409 answer's body carries.
    pub fn latest_size(&self) -> Option<u64> {
        match self {
            WitnessError::Conflict { latest, .. } => Some(*latest),
            _ => None,
        }
    }
}

/// A checkpoint the witness accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub checkpoint: Checkpoint,
    /// The size it was accepted from (the request's old size).
    pub old_size: u64,
    /// The name of the log key that signed it.
    pub log_key: String,
    /// The answer body: the cosignature line(s), each ending in a newline.
    pub signatures: String,
    /// Whether it repeats the latest cosigned checkpoint (same size and root).
    pub repeated: bool,
}

/// A witness: cosigns checkpoints of the logs whose keys it is given, each only if it is
/// consistent with the last one it cosigned for that origin.
///
/// State is one file per origin in the state directory, named by the hex SHA-256 of the
/// origin (origins are arbitrary text; a hash makes a safe, fixed-length file name) with the
/// extension `.checkpoint` (so `portcullis audit verify --checkpoints <state dir>` reads it as a published checkpoint), holding the latest cosigned note with the witness's cosignature
/// appended. Files are replaced atomically and fsynced before a cosignature is returned, so
/// a crash never leaves the witness having cosigned a checkpoint it has forgotten. One
/// witness process per state directory: requests for one origin are serialized in memory.
pub struct Witness {
    signer: Box<dyn Signer>,
    logs: Vec<Verifier>,
    dir: PathBuf,
    /// One lock per origin seen, held from reading the stored checkpoint until the new one is
    /// persisted: otherwise two requests could both pass the check against the same state and
    /// the smaller could overwrite the larger, rolling the witness back.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.signer.name())
            .field("logs", &self.logs)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The latest cosigned checkpoint of an origin, as stored.
struct Stored {
    checkpoint: Checkpoint,
    note: String,
}

impl Witness {
    /// A witness signing with `signer`, trusting checkpoints signed by any of `logs`, keeping
    /// its state in `state_dir` (created, mode 0700 on unix, if missing).
    pub fn open(
        signer: Box<dyn Signer>,
        logs: Vec<Verifier>,
        state_dir: &Path,
    ) -> Result<Witness, WitnessError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder
            .create(state_dir)
            .map_err(|e| storage(state_dir, e))?;
        Ok(Witness {
            signer,
            logs,
            dir: state_dir.to_path_buf(),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The witness's verifier key string (what logs and auditors are given).
    pub fn verifier_key(&self) -> String {
        cosigner_key(self.signer.as_ref())
    }

    /// The latest checkpoint cosigned for `origin`, if any.
    pub fn latest(&self, origin: &str) -> Result<Option<Checkpoint>, WitnessError> {
        Ok(self.read_state(origin)?.map(|s| s.checkpoint))
    }

    /// The latest cosigned note for `origin` (the log's note with the cosignature appended).
    pub fn latest_note(&self, origin: &str) -> Result<Option<String>, WitnessError> {
        Ok(self.read_state(origin)?.map(|s| s.note))
    }

    /// Every origin with a stored checkpoint, sorted by origin. Reads and checks every state
    /// file, so a damaged one is found at start-up rather than by the next request.
    pub fn origins(&self) -> Result<Vec<Checkpoint>, WitnessError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| storage(&self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| storage(&self.dir, e))?.path();
            if path.extension().is_some_and(|e| e == "checkpoint") {
                found.push(read_state_file(&path)?.checkpoint);
            }
        }
        found.sort_by(|a, b| a.origin.cmp(&b.origin));
        Ok(found)
    }

    /// Handles an add-checkpoint request body, cosigning as of now.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<Cosigned, WitnessError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.add_checkpoint_at(body, now)
    }

    /// Handles an add-checkpoint request body, cosigning as of `time` (Unix seconds).
    pub fn add_checkpoint_at(&self, body: &[u8], time: u64) -> Result<Cosigned, WitnessError> {
        let request = AddCheckpoint::parse(body)?;
        let (text, lines) = split_note(&request.note).map_err(malformed)?;
        let checkpoint = Checkpoint::parse(text).map_err(malformed)?;
        let origin = checkpoint.origin.clone();
        // The note is stored and handed back with this witness's cosignature appended; a line
        // already claiming to be by this witness would be kept beside the real one, and could
        // make the witness's own state look forged to an auditor.
        let own = CosignatureVerifier::for_signer(self.signer.as_ref());
        let claims_own = signature_lines(lines)
            .map_err(malformed)?
            .iter()
            .any(|(name, blob)| *name == own.name && blob.get(..4) == Some(&own.key_id[..]));
        if claims_own {
            return Err(WitnessError::Malformed(
                "the note already carries a signature line by this witness's key; send the log's note without cosignatures".into(),
            ));
        }
        // The signature is checked before any state is touched (or any lock created), so
        // requests from strangers cost nothing but the verification.
        let signers = self.verifying_logs(&request.note)?;
        let Some(first) = signers.first() else {
            return Err(WitnessError::Forbidden(format!(
                "the checkpoint for {origin} is not signed by any known log key"
            )));
        };
        let log_key = first.name.clone();
        if request.old_size > checkpoint.size {
            return Err(WitnessError::SizesOutOfOrder {
                old: request.old_size,
                new: checkpoint.size,
            });
        }

        let lock = self.lock_for(&origin);
        let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = self.read_state(&origin)?;
        let repeated = match &stored {
            None => {
                if request.old_size != 0 {
                    return Err(WitnessError::Conflict {
                        origin,
                        old: request.old_size,
                        latest: 0,
                    });
                }
                // Nothing to be consistent with: the first checkpoint of an origin is taken
                // on the log key's word (the parser made sure the proof is empty).
                false
            }
            Some(stored) => {
                self.check_bound_key(&origin, stored, &signers)?;
                let latest = &stored.checkpoint;
                if request.old_size != latest.size {
                    return Err(WitnessError::Conflict {
                        origin,
                        old: request.old_size,
                        latest: latest.size,
                    });
                }
                // Checked before the proof: another root at the same size is a fork, which
                // the protocol reports as a conflict rather than as a bad proof.
                if checkpoint.size == latest.size && checkpoint.root != latest.root {
                    return Err(WitnessError::Fork {
                        origin,
                        size: latest.size,
                        stored: B64.encode(latest.root),
                        new: B64.encode(checkpoint.root),
                    });
                }
                merkle::verify_consistency(
                    latest.size,
                    checkpoint.size,
                    &latest.root,
                    &checkpoint.root,
                    &request.proof,
                )
                .map_err(|cause| WitnessError::BadProof {
                    origin: origin.clone(),
                    old: latest.size,
                    new: checkpoint.size,
                    cause,
                })?;
                checkpoint.size == latest.size
            }
        };

        let signatures = cosign(self.signer.as_ref(), text, time)
            .map_err(|e| WitnessError::Signing(e.to_string()))?;
        let note = attach_cosignatures(&request.note, &signatures);
        write_atomically(&self.dir, &state_file_name(&origin), note.as_bytes())?;
        Ok(Cosigned {
            checkpoint,
            old_size: request.old_size,
            log_key,
            signatures,
            repeated,
        })
    }

    /// The configured log keys with a valid signature on `note`.
    fn verifying_logs(&self, note: &str) -> Result<Vec<&Verifier>, WitnessError> {
        let mut found = Vec::new();
        for log in &self.logs {
            match log.open(note) {
                Ok(_) => found.push(log),
                // Not this key's, or a bad signature under its name: either way not trusted.
                Err(CheckpointError::NotSigned(_) | CheckpointError::BadSignature(_)) => {}
                Err(e) => return Err(malformed(e)),
            }
        }
        Ok(found)
    }

    /// An origin is bound to the log key(s) that signed the checkpoint stored for it, so that
    /// one trusted log cannot advance (or squat) another log's origin with its own key.
    fn check_bound_key(
        &self,
        origin: &str,
        stored: &Stored,
        signers: &[&Verifier],
    ) -> Result<(), WitnessError> {
        if signers.iter().any(|log| log.open(&stored.note).is_ok()) {
            return Ok(());
        }
        let names: Vec<&str> = signers.iter().map(|log| log.name.as_str()).collect();
        Err(WitnessError::Forbidden(format!(
            "{origin} is bound to the log key that signed its first cosigned checkpoint; \
             this one is signed by {}",
            names.join(", ")
        )))
    }

    fn lock_for(&self, origin: &str) -> Arc<Mutex<()>> {
        // A panic while a lock was held cannot leave bad state behind (the state is re-read
        // from disk under the lock), so a poisoned lock is simply taken over.
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(origin.to_string()).or_default())
    }

    fn read_state(&self, origin: &str) -> Result<Option<Stored>, WitnessError> {
        let path = self.dir.join(state_file_name(origin));
        if !path.try_exists().map_err(|e| storage(&path, e))? {
            return Ok(None);
        }
        let stored = read_state_file(&path)?;
        if stored.checkpoint.origin != origin {
            return Err(WitnessError::Storage {
                path,
                message: format!(
                    "holds a checkpoint of {:?}, not of {origin:?}",
                    stored.checkpoint.origin
                ),
            });
        }
        Ok(Some(stored))
    }
}

/// The state file name of an origin: hex SHA-256 of the origin, plus `.checkpoint`.
fn state_file_name(origin: &str) -> String {
    format!(
        "{}.checkpoint",
        hex::encode(Sha256::digest(origin.as_bytes()))
    )
}

fn read_state_file(path: &Path) -> Result<Stored, WitnessError> {
    let note = std::fs::read_to_string(path).map_err(|e| storage(path, e))?;
    let checkpoint = split_note(&note)
        .and_then(|(body, _)| Checkpoint::parse(body))
        .map_err(|e| storage(path, e))?;
    Ok(Stored { checkpoint, note })
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old file or the new one:
/// write a temporary file, fsync it, rename it over the target, fsync the directory (which
/// makes the rename itself durable).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WitnessError> {
    let target = dir.join(name);
    let temp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &target)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        storage(&target, e)
    })
}

fn storage(path: &Path, e: impl std::fmt::Display) -> WitnessError {
    WitnessError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn malformed(e: CheckpointError) -> WitnessError {
    WitnessError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Ed25519Signer, sign_note, verifier_key};
    use crate::merkle::{consistency_proof, leaf_hash, root};

    fn signer(name: &str) -> Arc<Ed25519Signer> {
        Arc::new(
            Ed25519Signer::from_pkcs8(name, &Ed25519Signer::generate_pkcs8().unwrap()).unwrap(),
        )
    }

    /// A log: an origin, its key and its entries (only a prefix is "published" at a time).
    struct Log {
        origin: String,
        key: Arc<Ed25519Signer>,
        leaves: Vec<Hash>,
    }

    impl Log {
        fn new(origin: &str, key_name: &str) -> Log {
            Log {
                origin: origin.into(),
                key: signer(key_name),
                leaves: (0..100)
                    .map(|i| leaf_hash(format!("{origin} event {i}").as_bytes()))
                    .collect(),
            }
        }
        fn verifier(&self) -> Verifier {
            Verifier::parse(&verifier_key(self.key.as_ref())).unwrap()
        }
        fn body(&self, size: usize) -> String {
            Checkpoint {
                origin: self.origin.clone(),
                size: size as u64,
                root: root(&self.leaves[..size]),
            }
            .body()
        }
        fn note(&self, size: usize) -> String {
            sign_note(&self.body(size), &[self.key.as_ref()]).unwrap()
        }
        /// A request from `old` to `new` with a real proof.
        fn request(&self, old: usize, new: usize) -> Vec<u8> {
            request_body(
                old as u64,
                &consistency_proof(old, &self.leaves[..new]),
                &self.note(new),
            )
            .into_bytes()
        }
    }

    fn witness_key() -> Arc<Ed25519Signer> {
        signer("witness.example/w1")
    }

    /// Lets tests keep a handle on the key a `Witness` owns.
    struct SharedKey(Arc<Ed25519Signer>);

    impl Signer for SharedKey {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn public_key(&self) -> [u8; 32] {
            self.0.public_key()
        }
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CheckpointError> {
            self.0.sign(message)
        }
    }

    fn witness(dir: &Path, key: &Arc<Ed25519Signer>, logs: &[&Log]) -> Witness {
        let logs = logs.iter().map(|l| l.verifier()).collect();
        Witness::open(Box::new(SharedKey(Arc::clone(key))), logs, dir).unwrap()
    }

    #[test]
    fn a_note_already_claiming_this_witness_cosignature_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw.example/eu-1");
        let key = witness_key();
        let w = witness(dir.path(), &key, &[&log]);
        // A line under the witness's name and key id, with a signature that is not its own.
        let mut blob = CosignatureVerifier::for_signer(key.as_ref())
            .key_id
            .to_vec();
        blob.extend([0u8; 72]);
        let forged = format!("{}— {} {}\n", log.note(5), key.name(), B64.encode(blob));
        let body = request_body(0, &[], &forged);
        let err = w.add_checkpoint_at(body.as_bytes(), 1000).unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(
            w.latest("gw.example/eu-1").unwrap().is_none(),
            "nothing stored"
        );
    }

    #[test]
    fn a_growing_log_is_cosigned_and_stale_or_rolled_back_requests_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw.example/eu-1");
        let key = witness_key();
        let wkey = CosignatureVerifier::for_signer(key.as_ref());
        let w = witness(dir.path(), &key, &[&log]);
        assert_eq!(w.verifier_key(), wkey.key());

        // The first checkpoint of an origin: old 0, no proof.
        let first = w.add_checkpoint_at(&log.request(0, 5), 1000).unwrap();
        assert_eq!(first.checkpoint.size, 5);
        assert_eq!(first.old_size, 0);
        assert!(!first.repeated);
        assert_eq!(first.log_key, "gw.example/eu-1");
        assert_eq!(wkey.verify_lines(&log.body(5), &first.signatures), Ok(1000));

        // A chain of consistent checkpoints through powers of two and odd sizes.
        let mut size = 5;
        for next in [6, 8, 13, 16, 17, 64, 100] {
            let ok = w
                .add_checkpoint_at(&log.request(size, next), 1000 + next as u64)
                .unwrap_or_else(|e| panic!("{size} -> {next}: {e}"));
            assert_eq!(ok.old_size, size as u64);
            assert_eq!(ok.checkpoint.size, next as u64);
            size = next;
        }
        assert_eq!(w.latest(&log.origin).unwrap().unwrap().size, 100);
        // The stored note is the log's note with the cosignature: both keys verify it.
        let stored = w.latest_note(&log.origin).unwrap().unwrap();
        assert_eq!(log.verifier().open(&stored).unwrap(), log.body(100));
        assert_eq!(wkey.verify_note(&stored).unwrap(), (&*log.body(100), 1100));

        // Same size and root: cosigned again (a retry after a lost answer).
        let again = w.add_checkpoint_at(&log.request(100, 100), 5000).unwrap();
        assert!(again.repeated);
        assert_eq!(
            wkey.verify_lines(&log.body(100), &again.signatures),
            Ok(5000)
        );

        // A stale old size, or a log that lost track: 409 carrying the latest size.
        for old in [0, 64, 99] {
            let e = w.add_checkpoint_at(&log.request(old, 100), 1).unwrap_err();
            assert_eq!(e.status(), 409, "{e}");
            assert_eq!(e.latest_size(), Some(100));
        }
        // A rollback: old beyond the new size is a bad request; a smaller tree claimed from a
        // smaller old size is a conflict.
        let rollback = request_body(100, &[], &log.note(50));
        let e = w.add_checkpoint_at(rollback.as_bytes(), 1).unwrap_err();
        assert_eq!(e, WitnessError::SizesOutOfOrder { old: 100, new: 50 });
        assert_eq!(e.status(), 400);
        let e = w.add_checkpoint_at(&log.request(50, 50), 1).unwrap_err();
        assert_eq!(e.latest_size(), Some(100));
        // A first request that claims an old size is a conflict with "nothing yet".
        let other = Log::new("gw.example/eu-2", "gw.example/eu-1");
        let other = Log {
            key: Arc::clone(&log.key),
            ..other
        };
        let e = w.add_checkpoint_at(&other.request(3, 7), 1).unwrap_err();
        assert_eq!(e.latest_size(), Some(0));

        assert_eq!(w.latest(&log.origin).unwrap().unwrap().size, 100);
    }

    #[test]
    fn forks_and_bad_proofs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw-eu-1");
        let w = witness(dir.path(), &witness_key(), &[&log]);
        w.add_checkpoint_at(&log.request(0, 10), 1).unwrap();

        // The log rewrote entry 3 and grew: no proof leads from the stored root to its root.
        let mut forked = Log::new(&log.origin, "unused");
        forked.key = Arc::clone(&log.key);
        forked.leaves = log.leaves.clone();
        forked.leaves[3] = leaf_hash(b"rewritten");
        let e = w.add_checkpoint_at(&forked.request(10, 20), 1).unwrap_err();
        assert!(matches!(e, WitnessError::BadProof { .. }), "{e}");
        assert_eq!(e.status(), 422);

        // The honest proof for another size, a truncated proof, an altered hash: 422 too.
        let wrong = request_body(10, &consistency_proof(10, &log.leaves[..21]), &log.note(20));
        assert_eq!(
            w.add_checkpoint_at(wrong.as_bytes(), 1)
                .unwrap_err()
                .status(),
            422
        );
        let mut proof = consistency_proof(10, &log.leaves[..20]);
        proof.pop();
        let short = request_body(10, &proof, &log.note(20));
        assert_eq!(
            w.add_checkpoint_at(short.as_bytes(), 1)
                .unwrap_err()
                .status(),
            422
        );
        let mut proof = consistency_proof(10, &log.leaves[..20]);
        proof[0][0] ^= 1;
        let altered = request_body(10, &proof, &log.note(20));
        assert_eq!(
            w.add_checkpoint_at(altered.as_bytes(), 1)
                .unwrap_err()
                .status(),
            422
        );

        // Same size, another root: a fork, a 409 without a size to retry from.
        let e = w.add_checkpoint_at(&forked.request(10, 10), 1).unwrap_err();
        assert!(matches!(e, WitnessError::Fork { size: 10, .. }), "{e}");
        assert_eq!(e.status(), 409);
        assert_eq!(e.latest_size(), None);

        // Same size and root, with a needless proof: it does not verify.
        let needless = request_body(10, &[[7; 32]], &log.note(10));
        assert_eq!(
            w.add_checkpoint_at(needless.as_bytes(), 1)
                .unwrap_err()
                .status(),
            422
        );

        // Nothing refused changed the state.
        assert_eq!(w.latest(&log.origin).unwrap().unwrap().size, 10);
        w.add_checkpoint_at(&log.request(10, 20), 1).unwrap();
    }

    #[test]
    fn unknown_keys_are_forbidden_and_an_origin_is_bound_to_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Log::new("gw.example/a", "gw-a");
        let b = Log::new("gw.example/b", "gw-b");
        // Same name as a's key, another key.
        let impostor = Log::new("gw.example/a", "gw-a");
        let w = witness(dir.path(), &witness_key(), &[&a, &b]);

        let e = w.add_checkpoint_at(&impostor.request(0, 3), 1).unwrap_err();
        assert!(matches!(e, WitnessError::Forbidden(_)), "{e}");
        assert_eq!(e.status(), 403);
        assert_eq!(w.latest("gw.example/a").unwrap(), None, "nothing stored");
        // An unsigned checkpoint is malformed as a note.
        let unsigned = format!("old 0\n\n{}", a.body(3));
        assert_eq!(
            w.add_checkpoint_at(unsigned.as_bytes(), 1)
                .unwrap_err()
                .status(),
            400
        );

        // An origin the witness has not seen is accepted when a known key signed it.
        w.add_checkpoint_at(&a.request(0, 3), 1).unwrap();
        w.add_checkpoint_at(&b.request(0, 4), 1).unwrap();

        // Log b's key cannot advance log a's origin, even with a consistent tree; 403 is
        // checked before the sizes, so the stale old size here does not matter.
        let hijack = Log {
            origin: a.origin.clone(),
            key: Arc::clone(&b.key),
            leaves: a.leaves.clone(),
        };
        let e = w.add_checkpoint_at(&hijack.request(3, 5), 1).unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        assert_eq!(w.latest("gw.example/a").unwrap().unwrap().size, 3);
        // A note signed by both keys is fine: a's key is among its signers.
        let both = sign_note(&a.body(5), &[b.key.as_ref(), a.key.as_ref()]).unwrap();
        let both = request_body(3, &consistency_proof(3, &a.leaves[..5]), &both);
        w.add_checkpoint_at(both.as_bytes(), 1).unwrap();
    }

    #[test]
    fn state_survives_a_new_witness_over_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw-eu-1");
        // Origins are any text: the file name never is.
        let other = Log::new("../other.example/log", "other");
        let key = witness_key();
        {
            let w = witness(dir.path(), &key, &[&log, &other]);
            w.add_checkpoint_at(&log.request(0, 7), 1).unwrap();
            w.add_checkpoint_at(&log.request(7, 30), 2).unwrap();
            w.add_checkpoint_at(&other.request(0, 2), 3).unwrap();
        }
        let w = witness(dir.path(), &key, &[&log, &other]);
        let origins: Vec<(String, u64)> = w
            .origins()
            .unwrap()
            .into_iter()
            .map(|c| (c.origin, c.size))
            .collect();
        assert_eq!(
            origins,
            [
                ("../other.example/log".to_string(), 2),
                ("gw.example/eu-1".to_string(), 30),
            ]
        );
        let e = w.add_checkpoint_at(&log.request(0, 31), 4).unwrap_err();
        assert_eq!(e.latest_size(), Some(30));
        w.add_checkpoint_at(&log.request(30, 31), 5).unwrap();
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(".checkpoint") && n.len() == 64 + 11)
        );
    }

    #[test]
    fn a_damaged_state_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw-eu-1");
        let w = witness(dir.path(), &witness_key(), &[&log]);
        w.add_checkpoint_at(&log.request(0, 7), 1).unwrap();
        let path = dir.path().join(state_file_name(&log.origin));
        std::fs::write(&path, "garbage").unwrap();
        let e = w.add_checkpoint_at(&log.request(0, 8), 1).unwrap_err();
        assert_eq!(e.status(), 500, "{e}");
        assert!(w.origins().is_err());
        // A file holding another origin's checkpoint is refused too.
        std::fs::write(&path, Log::new("elsewhere", "x").note(1)).unwrap();
        assert_eq!(w.latest(&log.origin).unwrap_err().status(), 500);
    }

    #[test]
    fn concurrent_requests_for_one_origin_are_serialized() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new("gw.example/eu-1", "gw-eu-1");
        let w = witness(dir.path(), &witness_key(), &[&log]);
        w.add_checkpoint_at(&log.request(0, 10), 1).unwrap();
        // Many requests from size 10 at once: exactly one may win, the others must be told
        // the size it stored, whatever the interleaving.
        let targets: Vec<usize> = (11..=40).collect();
        let results: Vec<(usize, Result<Cosigned, WitnessError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|&n| {
                    let (w, log) = (&w, &log);
                    s.spawn(move || (n, w.add_checkpoint_at(&log.request(10, n), 1)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(winners.len(), 1, "{winners:?}");
        for (_, r) in &results {
            if let Err(e) = r {
                assert_eq!(e.latest_size(), Some(winners[0] as u64), "{e}");
            }
        }
        assert_eq!(
            w.latest(&log.origin).unwrap().unwrap().size,
            winners[0] as u64
        );
    }

    #[test]
    fn cosignatures_verify_and_tampering_is_caught() {
        let key = witness_key();
        let body = Log::new("gw.example/eu-1", "gw").body(9);
        let line = cosign(key.as_ref(), &body, 1_679_315_147).unwrap();
        assert!(line.starts_with("\u{2014} witness.example/w1 "));
        assert!(line.ends_with('\n'));
        let wkey = CosignatureVerifier::parse(&cosigner_key(key.as_ref())).unwrap();
        assert_eq!(wkey, CosignatureVerifier::for_signer(key.as_ref()));
        assert_eq!(wkey.verify_lines(&body, &line), Ok(1_679_315_147));

        // The signed message is exactly the cosignature/v1 header, time line and body.
        let blob = B64
            .decode(line.trim_end().rsplit_once(' ').unwrap().1)
            .unwrap();
        assert_eq!(blob.len(), BLOB_LEN);
        assert_eq!(blob[..4], wkey.key_id);
        assert_eq!(blob[4..12], 1_679_315_147u64.to_be_bytes());
        let message = format!("cosignature/v1\ntime 1679315147\n{body}");
        UnparsedPublicKey::new(&ED25519, wkey.public_key)
            .verify(message.as_bytes(), &blob[12..])
            .unwrap();

        // A changed body, a changed timestamp, or a key of the same name: not verified.
        let edited = body.replacen("\n9\n", "\n10\n", 1);
        assert_eq!(
            wkey.verify_lines(&edited, &line),
            Err(CheckpointError::BadSignature("witness.example/w1".into()))
        );
        let mut retimed = blob.clone();
        retimed[11] ^= 1;
        let retimed = format!("\u{2014} witness.example/w1 {}\n", B64.encode(retimed));
        assert!(wkey.verify_lines(&body, &retimed).is_err());
        let impostor = witness_key();
        let forged = cosign(impostor.as_ref(), &body, 1).unwrap();
        assert_eq!(
            wkey.verify_lines(&body, &forged),
            Err(CheckpointError::NotSigned("witness.example/w1".into()))
        );
        // Among other lines, this key's line is found; in a note as well.
        let log = signer("gw");
        let note = sign_note(&body, &[log.as_ref()]).unwrap();
        let cosigned = attach_cosignatures(&attach_cosignatures(&note, &forged), &line);
        assert_eq!(wkey.verify_note(&cosigned), Ok((&*body, 1_679_315_147)));
        assert_eq!(
            Verifier::parse(&verifier_key(log.as_ref()))
                .unwrap()
                .open(&cosigned),
            Ok(&*body),
            "the log's signature still verifies beside cosignatures"
        );
        // The log's own note key is not a cosignature key, nor is its signature a cosignature.
        assert!(CosignatureVerifier::parse(&verifier_key(log.as_ref())).is_err());
        assert!(Verifier::parse(&wkey.key()).is_err());
        assert!(wkey.verify_note(&note).is_err());
        // Malformed inputs.
        assert!(cosign(key.as_ref(), "not a checkpoint", 1).is_err());
        assert!(cosign(key.as_ref(), &body, 1 << 63).is_err());
        assert!(wkey.verify_lines(&body, line.trim_end()).is_err());
        assert!(wkey.verify_lines(&body, "").is_err());
        assert!(
            CosignatureVerifier::parse(&wkey.key().replacen("witness.example/w1", "w2", 1))
                .is_err(),
            "the key id binds the name"
        );
    }

    #[test]
    fn requests_round_trip_and_malformed_ones_are_refused() {
        let log = Log::new("gw.example/eu-1", "gw");
        let proof = consistency_proof(5, &log.leaves[..13]);
        let request = AddCheckpoint {
            old_size: 5,
            proof: proof.clone(),
            note: log.note(13),
        };
        let body = request.body();
        assert!(body.starts_with(&format!("old 5\n{}\n", B64.encode(proof[0]))));
        assert_eq!(AddCheckpoint::parse(body.as_bytes()).unwrap(), request);
        let first = request_body(0, &[], &log.note(1));
        assert_eq!(AddCheckpoint::parse(first.as_bytes()).unwrap().old_size, 0);

        let note = log.note(13);
        let hash = B64.encode([1u8; 32]);
        let too_long = format!("old 5\n{}\n{note}", format!("{hash}\n").repeat(64));
        let bad: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (format!("old 05\n\n{note}"), "leading zero"),
            (format!("old -1\n\n{note}"), "sign"),
            (format!("old 18446744073709551616\n\n{note}"), "beyond u64"),
            (format!("old5\n\n{note}"), "no space"),
            (format!("Old 5\n\n{note}"), "case"),
            (format!("old 5 \n\n{note}"), "trailing space"),
            (format!("old 5\n{note}"), "no empty line"),
            (format!("old 5\n{hash}\n"), "no empty line, no checkpoint"),
            (format!("old 5\n{hash}\n\n"), "no checkpoint"),
            (format!("old 5\nnot base64\n\n{note}"), "bad base64"),
            (
                format!("old 5\n{}\n\n{note}", B64.encode([1u8; 31])),
                "31 bytes",
            ),
            (
                format!("old 5\n{hash} \n\n{note}"),
                "trailing space in hash",
            ),
            (format!("old 0\n{hash}\n\n{note}"), "proof from 0"),
            (too_long, "64 proof lines"),
        ];
        for (body, why) in &bad {
            let e = AddCheckpoint::parse(body.as_bytes()).unwrap_err();
            assert!(matches!(e, WitnessError::Malformed(_)), "{why}: {e}");
            assert_eq!(e.status(), 400, "{why}");
        }
        assert!(
            AddCheckpoint::parse(b"old 0\n\n\xff\n").is_err(),
            "not UTF-8"
        );
        let max = format!("old 5\n{}\n{note}", format!("{hash}\n").repeat(63));
        assert_eq!(
            AddCheckpoint::parse(max.as_bytes()).unwrap().proof.len(),
            63
        );

        // The note itself must be a checkpoint: the witness answers 400 otherwise.
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path(), &witness_key(), &[&log]);
        for note in [
            sign_note("gw.example/eu-1\nnot a size\nAAAA\n", &[log.key.as_ref()]).unwrap(),
            log.body(3),
            format!("{}\n— gw\n", log.body(3)),
        ] {
            let e = w
                .add_checkpoint_at(request_body(0, &[], &note).as_bytes(), 1)
                .unwrap_err();
            assert_eq!(e.status(), 400, "{note:?}: {e}");
        }
    }

    #[test]
    fn answers_are_read() {
        let line = "\u{2014} witness.example/w1 AAAA\n";
        assert_eq!(
            parse_answer(200, line),
            Ok(Answer::Cosigned(line.to_string()))
        );
        assert!(parse_answer(200, "").is_err());
        assert!(parse_answer(200, "hello\n").is_err());
        assert!(parse_answer(200, line.trim_end()).is_err());
        assert_eq!(
            parse_answer(409, "42\n"),
            Ok(Answer::Conflict { latest: 42 })
        );
        // A 409 without a size is a fork, which no retry fixes.
        assert!(matches!(
            parse_answer(409, "gw at size 10 was cosigned with root ..."),
            Err(AnswerError::Refused { status: 409, .. })
        ));
        assert!(parse_answer(409, "042\n").is_err());
        let long = "x".repeat(10_000);
        match parse_answer(422, &long) {
            Err(AnswerError::Refused {
                status: 422,
                message,
            }) => assert!(message.len() < 300),
            other => panic!("{other:?}"),
        }
    }
}
