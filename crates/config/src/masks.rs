//! `[masks.NAME]`: masking profiles, what they find and how they hide it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::spans::{Locator, key_path};
use crate::{Config, ConfigError};

/// `[masks.NAME]`: what a masking profile finds and how it hides it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskProfile {
    /// Built-in detectors or groups (`pii`, `secrets`, `all`). Default: `["all"]`.
    #[serde(default = "default_mask_detectors")]
    pub detectors: Vec<String>,
    /// Field names or paths masked whatever they hold: a key name (`account_number`) or a
    /// glob over the dotted path (`*.ssn`, `customer.card`).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Result column names of database targets masked whole whatever they hold: globs,
    /// compared case-insensitively (`account_number`, `*_ssn`). Like `fields`, they also
    /// match keys of the same name in JSON results.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `redact` (a label such as `[EMAIL]`, the default), `partial` (keep the last `keep`
    /// characters), or `hash` (a keyed HMAC token: equal values give equal tokens).
    #[serde(default)]
    pub style: MaskStyle,
    /// For `partial`: how many trailing characters stay. Default: 4.
    #[serde(default = "default_mask_keep")]
    pub keep: usize,
    /// A style per detector, overriding `style`: `{ email = "hash" }`.
    #[serde(default)]
    pub styles: BTreeMap<String, MaskStyle>,
    /// For `hash`: the environment variable holding the HMAC key (at least 32 bytes). Read at
    /// start; the key never appears in the file.
    #[serde(default)]
    pub hmac_key_env: Option<String>,
    /// Exact values always masked (label `[DENY_LIST]`).
    #[serde(default)]
    pub deny_list: Vec<String>,
    /// Detectors of your own.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// For database targets: sample each table the first time an allowed statement under
    /// this profile touches it, and mask the columns whose values the detectors flag as if
    /// `columns` named them (tags kept in the data directory).
    #[serde(default)]
    pub discover: bool,
}

impl Default for MaskProfile {
    fn default() -> Self {
        MaskProfile {
            detectors: default_mask_detectors(),
            fields: Vec::new(),
            columns: Vec::new(),
            style: MaskStyle::default(),
            keep: default_mask_keep(),
            styles: BTreeMap::new(),
            hmac_key_env: None,
            deny_list: Vec::new(),
            custom: Vec::new(),
            discover: false,
        }
    }
}

impl MaskProfile {
    /// The globs masked whole by name: `fields` and `columns` together, without duplicates.
    /// This is what the masking engine's field list should be built from.
    pub fn field_globs(&self) -> Vec<String> {
        let mut globs = self.fields.clone();
        for column in &self.columns {
            if !globs.contains(column) {
                globs.push(column.clone());
            }
        }
        globs
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskStyle {
    #[default]
    Redact,
    Partial,
    Hash,
}

/// `[[masks.NAME.custom]]`: a detector of your own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Its name in labels and audit events.
    pub name: String,
    /// A regular expression (Rust `regex` syntax; linear-time, no look-around).
    pub pattern: String,
    /// A check run on each candidate: `luhn` or `mod97`.
    #[serde(default)]
    pub validator: Option<String>,
    #[serde(default)]
    pub style: Option<MaskStyle>,
}

fn default_mask_detectors() -> Vec<String> {
    vec!["all".into()]
}
fn default_mask_keep() -> usize {
    4
}

impl Config {
    /// Column globs compile. An error is located at the profile's header.
    pub(crate) fn validate_masks(&self, at: &Locator<'_>) -> Result<(), ConfigError> {
        for (name, profile) in &self.masks {
            for column in &profile.columns {
                if let Err(e) = globset::Glob::new(column) {
                    return Err(at.error(
                        key_path!["masks", name],
                        format!("masks.{name}.columns: bad glob {column:?}: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{error, parse};

    #[test]
    fn mask_columns_are_fields_too() {
        let config =
            parse("[masks.pii]\nfields = [\"ssn\"]\ncolumns = [\"account_number\", \"ssn\"]\n")
                .unwrap();
        let pii = &config.masks["pii"];
        assert_eq!(pii.columns, ["account_number", "ssn"]);
        assert_eq!(pii.field_globs(), ["ssn", "account_number"]);
        let err = error("[masks.pii]\ncolumns = [\"a[\"]\n");
        assert!(
            err.starts_with("portcullis.toml:1: masks.pii.columns: bad glob"),
            "{err}"
        );
    }
}
