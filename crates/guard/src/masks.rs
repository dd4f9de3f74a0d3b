//! The masking profiles of the configuration, compiled once for every adapter.
//!
//! `[masks.*]` and the built-in `default` become [`Profile`]s here, at start, with their keys
//! read from the environment; adapters get them by name. The `default` profile also
//! classifies what callers send (tool arguments, statements shown to approvers), so what
//! policy sees as `findings` and what approvers see masked come from one place.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use portcullis_config::{MaskProfile, MaskStyle};
use portcullis_mask::{CustomDetector, Profile, ProfileSpec, Report, Style, Validator};
use portcullis_model::DataFinding;
use serde_json::Value;

/// The name of the profile that needs no declaration, also used to classify arguments.
pub const DEFAULT_PROFILE: &str = "default";

/// The smallest HMAC key accepted for the `hash` style.
const MIN_HMAC_KEY: usize = 32;

/// Every masking profile of the configuration, compiled.
pub struct Masks {
    profiles: HashMap<String, Arc<Profile>>,
}

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masks")
            .field("profiles", &self.profiles.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Masks {
    /// Compiles `[masks.*]` and the built-in `default`. Errors name the profile.
    pub fn compile(configured: &BTreeMap<String, MaskProfile>) -> Result<Masks, String> {
        let mut profiles = HashMap::new();
        if !configured.contains_key(DEFAULT_PROFILE) {
            let spec = spec_of(DEFAULT_PROFILE, &MaskProfile::default())?;
            profiles.insert(
                DEFAULT_PROFILE.to_string(),
                Arc::new(compile(DEFAULT_PROFILE, &spec)?),
            );
        }
        for (name, profile) in configured {
            let spec = spec_of(name, profile)?;
            profiles.insert(name.clone(), Arc::new(compile(name, &spec)?));
        }
        Ok(Masks { profiles })
    }

    pub fn profile(&self, name: &str) -> Option<Arc<Profile>> {
        self.profiles.get(name).cloned()
    }

    /// Every compiled profile by name, for the other adapters.
    pub fn all(&self) -> HashMap<String, Arc<Profile>> {
        self.profiles.clone()
    }

    /// The built-in `default` profile (always compiled).
    pub fn default_profile(&self) -> &Arc<Profile> {
        &self.profiles[DEFAULT_PROFILE]
    }

    /// `text` with what the `default` profile's detectors find in it masked: for what the
    /// gateway itself shows or keeps (statements shown to approvers, logged statement
    /// texts, parser messages). `path` names the place in the report.
    pub fn mask_text_default(&self, text: &str, path: &str, report: &mut Report) -> String {
        self.default_profile()
            .mask_text(text, path, report)
            .unwrap_or_else(|| text.to_string())
    }

    /// Classifies tool-call arguments; paths start at `$.arguments`.
    pub fn classify_arguments(&self, arguments: &Value) -> Report {
        let mut report = Report::default();
        if let Some(profile) = self.profiles.get(DEFAULT_PROFILE) {
            profile.scan_json(arguments, "$.arguments", &mut report);
        }
        report
    }
}

fn compile(name: &str, spec: &ProfileSpec) -> Result<Profile, String> {
    Profile::compile(spec).map_err(|e| format!("masks.{name}: {e}"))
}

fn style_of(style: MaskStyle, keep: usize) -> Style {
    match style {
        MaskStyle::Redact => Style::Redact,
        MaskStyle::Partial => Style::Partial { keep },
        MaskStyle::Hash => Style::Hash,
    }
}

/// The engine's spec of a configured profile; reads the HMAC key from the environment.
fn spec_of(name: &str, profile: &MaskProfile) -> Result<ProfileSpec, String> {
    let hmac_key = match &profile.hmac_key_env {
        Some(var) => {
            let key = std::env::var(var).map_err(|_| {
                format!("masks.{name}.hmac_key_env: the environment variable {var} is not set")
            })?;
            if key.len() < MIN_HMAC_KEY {
                return Err(format!(
                    "masks.{name}.hmac_key_env: the key in {var} has {} bytes; at least {MIN_HMAC_KEY} are needed",
                    key.len()
                ));
            }
            Some(key.into_bytes())
        }
        None => None,
    };
    let mut custom = Vec::with_capacity(profile.custom.len());
    for detector in &profile.custom {
        let validator = match detector.validator.as_deref() {
            None => None,
            Some("luhn") => Some(Validator::Luhn),
            Some("mod97") => Some(Validator::Mod97),
            Some(other) => {
                return Err(format!(
                    "masks.{name}.custom ({}): unknown validator {other:?}; use \"luhn\" or \"mod97\"",
                    detector.name
                ));
            }
        };
        custom.push(CustomDetector {
            name: detector.name.clone(),
            pattern: detector.pattern.clone(),
            validator,
            style: detector.style.map(|s| style_of(s, profile.keep)),
        });
    }
    Ok(ProfileSpec {
        detectors: profile.detectors.clone(),
        fields: profile.field_globs(),
        style: style_of(profile.style, profile.keep),
        styles: profile
            .styles
            .iter()
            .map(|(detector, style)| (detector.clone(), style_of(*style, profile.keep)))
            .collect(),
        custom,
        deny_list: profile.deny_list.clone(),
        hmac_key,
    })
}

/// The audit form of a report.
pub fn summary(report: &Report) -> Option<Vec<DataFinding>> {
    (!report.is_empty()).then(|| {
        report
            .findings()
            .iter()
            .map(|f| DataFinding {
                detector: f.detector.clone(),
                path: f.path.clone(),
                count: f.count,
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use portcullis_config::Config;
    use serde_json::json;

    use super::*;

    fn masks() -> Masks {
        let config = Config::parse(
            std::path::Path::new("portcullis.toml"),
            "[masks.cards]\ndetectors = [\"credit_card\"]\n".into(),
        )
        .unwrap();
        Masks::compile(&config.masks).unwrap()
    }

    #[test]
    fn arguments_are_classified() {
        let report = masks().classify_arguments(&json!({"to": "ada@example.com", "n": 3}));
        assert_eq!(report.detectors(), ["email"]);
        assert_eq!(report.findings()[0].path, "$.arguments.to");
    }

    #[test]
    fn a_hash_profile_needs_its_key() {
        let config = Config::parse(
            std::path::Path::new("portcullis.toml"),
            "[masks.tokens]\nstyle = \"hash\"\nhmac_key_env = \"PORTCULLIS_TEST_UNSET_MASK_KEY\"\n"
                .into(),
        )
        .unwrap();
        let err = Masks::compile(&config.masks).unwrap_err();
        assert!(
            err.contains("masks.tokens.hmac_key_env") && err.contains("is not set"),
            "{err}"
        );
    }
}
