//! Masking on the MCP path: the profiles of the configuration, compiled once, and where in
//! each MCP message they apply.
//!
//! Outbound (what comes back to the caller), the profile chosen by the matching rule masks the
//! text a model reads: tool results (`content[].text`, embedded resources' `text`,
//! `structuredContent`), resource contents, prompt messages, and the interim messages of the
//! same request (progress, log messages, server-to-client requests), each message on its own,
//! so streaming never buffers more than one. Binary parts (`blob`, image and audio `data`)
//! are left alone: they are not text, and rewriting them would corrupt them.
//!
//! Inbound, the tool-call arguments are classified (not changed) with the `default` profile,
//! and the detectors that fired become `findings` for policy.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_config::{Config, MaskProfile, MaskStyle};
use portcullis_mask::{CustomDetector, Profile, ProfileSpec, Report, Style, Validator};
use portcullis_model::DataFinding;
use serde_json::{Map, Value};

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
    pub fn compile(config: &Config) -> Result<Masks, String> {
        let mut profiles = HashMap::new();
        if !config.masks.contains_key(DEFAULT_PROFILE) {
            let spec = spec_of(DEFAULT_PROFILE, &MaskProfile::default())?;
            profiles.insert(
                DEFAULT_PROFILE.to_string(),
                Arc::new(compile(DEFAULT_PROFILE, &spec)?),
            );
        }
        for (name, profile) in &config.masks {
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

/// Masks the result of `method` in place; paths start at `$`.
pub fn mask_result(
    profile: &Profile,
    method: &str,
    result: &mut Map<String, Value>,
    report: &mut Report,
) {
    match method {
        "tools/call" => {
            if let Some(Value::Array(items)) = result.get_mut("content") {
                for (i, item) in items.iter_mut().enumerate() {
                    mask_content(profile, item, &format!("$.content[{i}]"), report);
                }
            }
            if let Some(structured) = result.get_mut("structuredContent") {
                profile.mask_json(structured, "$.structuredContent", report);
            }
        }
        "resources/read" => {
            if let Some(Value::Array(items)) = result.get_mut("contents") {
                for (i, item) in items.iter_mut().enumerate() {
                    mask_resource(profile, item, &format!("$.contents[{i}]"), report);
                }
            }
        }
        "prompts/get" => {
            mask_string_field(profile, result, "description", "$", report);
            if let Some(Value::Array(messages)) = result.get_mut("messages") {
                for (i, message) in messages.iter_mut().enumerate() {
                    if let Some(content) = message.get_mut("content") {
                        let path = format!("$.messages[{i}].content");
                        match content {
                            // One content block, or (newer revisions) a list of them.
                            Value::Array(blocks) => {
                                for (j, block) in blocks.iter_mut().enumerate() {
                                    mask_content(profile, block, &format!("{path}[{j}]"), report);
                                }
                            }
                            block => mask_content(profile, block, &path, report),
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// A content block: text is masked, an embedded resource's text too, binary data is not.
fn mask_content(profile: &Profile, block: &mut Value, path: &str, report: &mut Report) {
    let Some(block) = block.as_object_mut() else {
        return;
    };
    match block.get("type").and_then(Value::as_str) {
        Some("text") => mask_string_field(profile, block, "text", path, report),
        Some("resource") => {
            if let Some(resource) = block.get_mut("resource") {
                mask_resource(profile, resource, &format!("{path}.resource"), report);
            }
        }
        _ => {}
    }
}

/// A resource's contents: `text` is masked, `blob` (base64 bytes) is not.
fn mask_resource(profile: &Profile, resource: &mut Value, path: &str, report: &mut Report) {
    if let Some(resource) = resource.as_object_mut() {
        mask_string_field(profile, resource, "text", path, report);
    }
}

fn mask_string_field(
    profile: &Profile,
    object: &mut Map<String, Value>,
    key: &str,
    path: &str,
    report: &mut Report,
) {
    if let Some(Value::String(text)) = object.get_mut(key)
        && let Some(masked) = profile.mask_text(text, &format!("{path}.{key}"), report)
    {
        *text = masked;
    }
}

/// Masks an interim message of a masked request (a notification or a server-to-client
/// request): every string of its `params`. Returns the new text, or `None` if nothing
/// changed (or it is not JSON, which the caller relays as it came).
pub fn mask_interim(profile: &Profile, text: &str, report: &mut Report) -> Option<String> {
    let mut message: Value = serde_json::from_str(text).ok()?;
    let params = message.get_mut("params")?;
    let before = report.total();
    profile.mask_json(params, "$.params", report);
    if report.total() == before {
        return None;
    }
    serde_json::to_string(&message).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn masks() -> Masks {
        let config = Config::parse(
            std::path::Path::new("portcullis.toml"),
            "[masks.cards]\ndetectors = [\"credit_card\"]\nstyles = { credit_card = \"partial\" }\n"
                .into(),
        )
        .unwrap();
        Masks::compile(&config).unwrap()
    }

    fn masked(profile: &str, method: &str, result: Value) -> (Value, Vec<(String, String)>) {
        let masks = masks();
        let Value::Object(mut result) = result else {
            panic!("an object")
        };
        let mut report = Report::default();
        mask_result(
            &masks.profile(profile).unwrap(),
            method,
            &mut result,
            &mut report,
        );
        let found = report
            .findings()
            .iter()
            .map(|f| (f.detector.clone(), f.path.clone()))
            .collect();
        (Value::Object(result), found)
    }

    #[test]
    fn resource_contents_are_masked_but_blobs_are_not() {
        let (result, found) = masked(
            "default",
            "resources/read",
            json!({"contents": [
                {"uri": "file:///a.txt", "text": "owner: ada@example.com"},
                {"uri": "file:///a.bin", "blob": "YWRhQGV4YW1wbGUuY29t"}
            ]}),
        );
        assert_eq!(result["contents"][0]["text"], "owner: [EMAIL]");
        assert_eq!(result["contents"][1]["blob"], "YWRhQGV4YW1wbGUuY29t");
        assert_eq!(found, [("email".into(), "$.contents[0].text".into())]);
    }

    #[test]
    fn prompt_messages_and_embedded_resources_are_masked() {
        let (result, found) = masked(
            "cards",
            "prompts/get",
            json!({"description": "card 4111 1111 1111 1111", "messages": [
                {"role": "user", "content": {"type": "text", "text": "charge 5500 0055 5555 5559"}},
                {"role": "user", "content": {"type": "resource", "resource": {"uri": "x:/1", "text": "3782 822463 10005"}}},
                {"role": "user", "content": {"type": "image", "data": "NDExMSAxMTExIDExMTEgMTExMQ==", "mimeType": "image/png"}}
            ]}),
        );
        assert_eq!(result["description"], "card **** **** **** 1111");
        assert_eq!(
            result["messages"][0]["content"]["text"],
            "charge **** **** **** 5559"
        );
        let embedded = result["messages"][1]["content"]["resource"]["text"]
            .as_str()
            .unwrap();
        assert!(
            embedded.ends_with("0005") && !embedded.contains("822463"),
            "{embedded}"
        );
        assert_eq!(
            result["messages"][2]["content"]["data"],
            "NDExMSAxMTExIDExMTEgMTExMQ=="
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.contains(&(
            "credit_card".into(),
            "$.messages[1].content.resource.text".into()
        )));
    }

    #[test]
    fn other_methods_pass_untouched_and_arguments_are_classified() {
        let (result, found) = masked(
            "default",
            "tools/list",
            json!({"tools": [{"name": "t", "description": "mail ada@example.com"}]}),
        );
        assert_eq!(result["tools"][0]["description"], "mail ada@example.com");
        assert!(found.is_empty());
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
        let err = Masks::compile(&config).unwrap_err();
        assert!(
            err.contains("masks.tokens.hmac_key_env") && err.contains("is not set"),
            "{err}"
        );
    }
}
