//! JSON checks shared by the parsers that must authorise exactly the bytes they forward or
//! verify: serde_json keeps the last of two equal keys silently, so a document can read one
//! way to a person and another to a parser.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Fails on any object, at any depth, that has the same key twice.
pub fn check_no_duplicate_keys(bytes: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Bounded nesting: serde_json stops at 128 levels by default.
    UniqueKeys
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| {
            let text = e.to_string();
            if text.starts_with("duplicate key") {
                text
            } else {
                format!("invalid JSON: {text}")
            }
        })
}

#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Most objects have a handful of keys: a linear scan over the keys seen so far is
        // cheaper than hashing each one, and keys are borrowed from the input unless they
        // hold escapes. Past `LINEAR_KEYS` keys a set keeps the check linear in the size.
        const LINEAR_KEYS: usize = 16;
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let duplicate = if many.is_empty() {
                few.contains(&key)
            } else {
                many.contains(&key)
            };
            if duplicate {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?} in a JSON object"
                )));
            }
            map.next_value_seed(self)?;
            if !many.is_empty() {
                many.insert(key);
            } else if few.len() < LINEAR_KEYS {
                few.push(key);
            } else {
                many.extend(few.drain(..));
                many.insert(key);
            }
        }
        Ok(())
    }
}

/// An object's key, borrowed from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_no_duplicate_keys;

    #[test]
    fn a_key_twice_is_refused_at_any_depth_and_any_size() {
        assert!(check_no_duplicate_keys(br#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_ok());
        let nested = check_no_duplicate_keys(br#"{"a":{"x":[{"k":1,"k":2}]}}"#).unwrap_err();
        assert!(nested.contains(r#"duplicate key "k""#), "{nested}");
        // Past the linear scan's size the set takes over, with the keys seen before it.
        let many: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let clean = format!("{{{}}}", many.join(","));
        assert!(check_no_duplicate_keys(clean.as_bytes()).is_ok());
        for repeated in ["k3", "k20", "k39"] {
            let doubled = format!(r#"{{{},"{repeated}":0}}"#, many.join(","));
            let err = check_no_duplicate_keys(doubled.as_bytes()).unwrap_err();
            assert!(err.contains(repeated), "{err}");
        }
    }

    #[test]
    fn an_escaped_key_is_the_same_key_as_its_plain_spelling() {
        let err = check_no_duplicate_keys(br#"{"name":1,"na\u006de":2}"#).unwrap_err();
        assert!(err.contains(r#"duplicate key "name""#), "{err}");
        assert!(check_no_duplicate_keys(br#"{"name":1,"na\u006de2":2}"#).is_ok());
    }

    #[test]
    fn invalid_json_says_so() {
        let err = check_no_duplicate_keys(br#"{"a":1"#).unwrap_err();
        assert!(err.starts_with("invalid JSON"), "{err}");
        let trailing = check_no_duplicate_keys(br#"{"a":1} x"#).unwrap_err();
        assert!(trailing.starts_with("invalid JSON"), "{trailing}");
    }
}
