//! `[recording]`: session recordings, what they keep and where.

use std::time::Duration;

use serde::Deserialize;

use crate::de::de_duration;
use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[recording]`: whether each request and its answer are recorded, bound to the audit log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// `off` (the default), `strict` (a request whose recording cannot be stored is refused,
    /// like one whose event cannot be), or `best-effort` (the request goes on and a
    /// `recording.failed` event says what was not kept; logged at start).
    #[serde(default)]
    pub mode: RecordingMode,
    /// The masking profile applied to what callers send before it is recorded (arguments,
    /// SQL text and bind values), so a secret pasted into an argument is not kept in clear.
    /// Answers are recorded as the caller received them, after the rule's masking.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// The most bytes of one message's body kept; beyond, the body is cut and the record
    /// says how much was dropped. Default: 1 MiB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// The most rows of one statement's result kept; the rest are counted, not kept.
    /// Default: 1000.
    #[serde(default = "default_max_rows")]
    pub max_rows_per_statement: u64,
    /// The most recorded bytes of one request and its answer together; later messages are
    /// counted, not kept. Default: 16 MiB.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// age X25519 recipients (`age1...`): when set, recordings are encrypted to these keys in
    /// sealed segments, and the gateway host cannot read back what it wrote.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Encrypted recordings: seal the open segment at least this often. What a crash can
    /// lose is at most this much of recordings (never their events). Default: `5s`.
    #[serde(default = "default_seal_interval", deserialize_with = "de_duration")]
    pub seal_interval: Duration,
    /// ... and once it holds this many bytes. Default: 8 MiB.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            mode: RecordingMode::default(),
            profile: default_profile(),
            max_message_bytes: default_max_message_bytes(),
            max_rows_per_statement: default_max_rows(),
            max_request_bytes: default_max_request_bytes(),
            recipients: Vec::new(),
            seal_interval: default_seal_interval(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

impl Recording {
    pub fn enabled(&self) -> bool {
        self.mode != RecordingMode::Off
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingMode {
    #[default]
    Off,
    Strict,
    BestEffort,
}

impl Config {
    pub(crate) fn validate_recording(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        let r = &self.recording;
        if r.profile != "default" && !self.masks.contains_key(&r.profile) {
            return Err(at.error(
                key_path!["recording", "profile"],
                format!(
                    "recording.profile: no masking profile {:?}; declare [masks.{}] or use \"default\"",
                    r.profile, r.profile
                ),
            ));
        }
        for (key, value, least) in [
            ("max_message_bytes", r.max_message_bytes, 1024),
            ("max_rows_per_statement", r.max_rows_per_statement, 1),
            ("max_request_bytes", r.max_request_bytes, 1024),
            ("segment_bytes", r.segment_bytes, 4096),
        ] {
            if value < least {
                return Err(at.error(
                    key_path!["recording", key],
                    format!("recording.{key}: must be at least {least}"),
                ));
            }
        }
        if r.seal_interval < Duration::from_millis(100) {
            return Err(at.error(
                key_path!["recording", "seal_interval"],
                "recording.seal_interval: must be at least 100ms",
            ));
        }
        for (i, recipient) in r.recipients.iter().enumerate() {
            // The key itself is parsed where it is used (the recording crate); this catches
            // the common mistakes early and points at the line.
            if !recipient.starts_with("age1") || recipient.trim() != recipient {
                return Err(at.error(
                    key_path!["recording", "recipients", i],
                    format!(
                        "recording.recipients[{i}]: {recipient:?} is not an age X25519 recipient (age1...); make one with `age-keygen`"
                    ),
                ));
            }
        }
        // A target asked to keep its result rows while nothing is recorded would keep
        // nothing, silently: the operator is told instead.
        if !r.enabled()
            && let Some(name) = self
                .targets
                .iter()
                .find(|(_, t)| t.as_postgres().is_some_and(|pg| pg.record_results))
                .map(|(name, _)| name)
        {
            return Err(at.error(
                key_path!["targets", name.as_str(), "record_results"],
                format!(
                    "targets.{name}.record_results needs [recording] mode = \"strict\" or \"best-effort\" (recording is off, so no result would be kept)"
                ),
            ));
        }
        if !r.recipients.is_empty() && !r.enabled() {
            return Err(at.error(
                key_path!["recording", "recipients"],
                "recording.recipients: recording is off; set recording.mode = \"strict\" or \"best-effort\"",
            ));
        }
        Ok(())
    }
}

fn default_profile() -> String {
    "default".into()
}
fn default_max_message_bytes() -> u64 {
    1 << 20
}
fn default_max_rows() -> u64 {
    1000
}
fn default_max_request_bytes() -> u64 {
    16 << 20
}
fn default_seal_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_segment_bytes() -> u64 {
    8 << 20
}

#[cfg(test)]
mod tests {
    use crate::tests::parse;

    use super::RecordingMode;

    #[test]
    fn recording_is_off_unless_asked_for_and_its_settings_are_checked() {
        let config = parse("").unwrap();
        assert!(!config.recording.enabled());
        let config =
            parse("[recording]\nmode = \"best-effort\"\nmax_rows_per_statement = 5\n").unwrap();
        assert_eq!(config.recording.mode, RecordingMode::BestEffort);
        assert_eq!(config.recording.max_rows_per_statement, 5);
        assert_eq!(config.recording.profile, "default");
        let err = parse("[recording]\nmode = \"on\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant"), "{err}");
        let err = parse("[recording]\nmode = \"strict\"\nprofile = \"pii\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no masking profile \"pii\""), "{err}");
        let err = parse("[recording]\nmode = \"strict\"\nrecipients = [\"ssh-ed25519 AAAA\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("portcullis.toml:3: recording.recipients[0]"),
            "{err}"
        );
        let err = parse("[recording]\nrecipients = [\"age1abc\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("recording is off"), "{err}");
        let target = "[targets.db]\nkind = \"postgres\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"postgres://db/crm\"\nuser = \"app\"\nrecord_results = true\n";
        let err = parse(target).unwrap_err().to_string();
        assert!(
            err.starts_with("portcullis.toml:6: targets.db.record_results needs [recording] mode = \"strict\" or \"best-effort\""),
            "{err}"
        );
        assert!(parse(&format!("{target}\n[recording]\nmode = \"strict\"\n")).is_ok());
        let err = parse("[recording]\nmode = \"strict\"\nmax_message_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1024"), "{err}");
    }
}
