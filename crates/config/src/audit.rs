//! `[audit]`: how events are written, signed, checkpointed and witnessed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::de::de_duration;
use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[audit]`: how events are written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// `strict` (default): an event is on disk (fsync) before the response it describes is
    /// released to the caller. `batched`: events are committed in the background within a
    /// few milliseconds; a crash can lose the last events, in exchange for lower latency.
    #[serde(default)]
    pub durability: Durability,
    /// The log's name in its checkpoints (the C2SP origin line). Default:
    /// `portcullis/<gateway.id>`. Give each gateway instance its own: a checkpoint of one log
    /// proves nothing about another.
    pub origin: Option<String>,
    /// Directory holding the checkpoint signing key (`audit.key`, `audit.pub`), written by
    /// `portcullis keys audit-init --out DIR`. Keep it outside `data_dir`: whoever can rewrite
    /// the log must not also hold the key. Without it the log is still a Merkle tree, but no
    /// checkpoint is signed and nothing is published.
    pub signing_key: Option<PathBuf>,
    /// Sign a checkpoint at least this often while new events arrive. Default: `1s`.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "de_duration"
    )]
    pub checkpoint_interval: Duration,
    /// ... and after at most this many new events. Default: 1000.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Publish each checkpoint as a file in this directory (never overwritten; meant for
    /// write-once storage such as a WORM bucket mount or another machine's share).
    pub checkpoint_dir: Option<PathBuf>,
    /// Witnesses that cosign checkpoints (`portcullis witness`).
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// Free space, in bytes, kept on the file system of `gateway.data_dir`: below it the
    /// gateway forwards nothing (every action is refused with a clear error) while its
    /// events can still be written. Default: 64 MiB, or 5% of the file system if that is
    /// smaller. 0 turns the check off (an action can then reach a target and its event fail).
    pub space_reserve: Option<u64>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            durability: Durability::default(),
            origin: None,
            signing_key: None,
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_dir: None,
            witnesses: Vec::new(),
            space_reserve: None,
        }
    }
}

/// `[[audit.witnesses]]`: a witness the gateway sends its checkpoints to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's base URL; checkpoints go to `<url>/add-checkpoint`.
    pub url: String,
    /// The witness's public key file (`witness.pub`), to check its cosignatures.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Strict,
    Batched,
}

impl Config {
    /// The checkpoint origin: configured, or derived from the gateway id.
    pub fn audit_origin(&self) -> String {
        self.audit
            .origin
            .clone()
            .unwrap_or_else(|| format!("portcullis/{}", self.gateway.id))
    }

    pub(crate) fn validate_audit(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let audit = &self.audit;
        let origin = self.audit_origin();
        if origin.is_empty() || origin.contains('\n') || origin.trim() != origin {
            return Err(at.error(
                key_path!["audit", "origin"],
                "audit.origin: must be one non-empty line without leading or trailing spaces",
            ));
        }
        if audit.checkpoint_every == 0 {
            return Err(at.error(
                key_path!["audit", "checkpoint_every"],
                "audit.checkpoint_every: must be at least 1",
            ));
        }
        if audit.checkpoint_interval < Duration::from_millis(10) {
            return Err(at.error(
                key_path!["audit", "checkpoint_interval"],
                "audit.checkpoint_interval: must be at least 10ms",
            ));
        }
        if let Some(key) = &audit.signing_key
            && key.starts_with(&self.gateway.data_dir)
        {
            return Err(at.error(
                key_path!["audit", "signing_key"],
                "audit.signing_key: must not be inside gateway.data_dir; whoever can rewrite the log must not also hold its signing key",
            ));
        }
        if audit.signing_key.is_none()
            && (audit.checkpoint_dir.is_some() || !audit.witnesses.is_empty())
        {
            return Err(at.error(
                key_path!["audit"],
                "audit: checkpoint_dir and witnesses publish signed checkpoints, so audit.signing_key is required",
            ));
        }
        for (i, witness) in audit.witnesses.iter().enumerate() {
            if !(witness.url.starts_with("http://") || witness.url.starts_with("https://")) {
                return Err(at.error(
                    key_path!["audit", "witnesses", i, "url"],
                    format!(
                        "audit.witnesses.url: {:?} is not an http:// or https:// URL",
                        witness.url
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_checkpoint_every() -> u64 {
    1000
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::tests::parse;

    #[test]
    fn audit_settings_are_checked() {
        let err = parse(
            "[gateway]\ndata_dir = \"/var/lib/p\"\n[audit]\nsigning_key = \"/var/lib/p/key\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must not be inside gateway.data_dir"), "{err}");
        let err = parse("[audit]\ncheckpoint_dir = \"/mnt/worm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("signing_key is required"), "{err}");
        let err = parse("[audit]\ncheckpoint_every = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("portcullis.toml:2: audit.checkpoint_every"),
            "{err}"
        );
        let err = parse("[audit]\nsigning_key = \"k\"\n[[audit.witnesses]]\nurl = \"ftp://w\"\nkey = \"w.pub\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an http:// or https:// URL"), "{err}");
        assert!(err.starts_with("portcullis.toml:4:"), "{err}");
        let config = parse("[gateway]\nid = \"eu-1\"\n").unwrap();
        assert_eq!(config.audit_origin(), "portcullis/eu-1");
        assert_eq!(config.audit.checkpoint_interval, Duration::from_secs(1));
    }
}
