//! How a found value is replaced: a label, a partial reveal, or a keyed token.

use sha2::{Digest as _, Sha256};

use crate::Style;

/// HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once at compile time,
/// so a token costs two SHA-256 finalisations.
#[derive(Clone)]
pub(crate) struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    pub(crate) fn new(key: &[u8]) -> Hmac {
        const BLOCK: usize = 64;
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for i in 0..BLOCK {
            ipad[i] ^= block[i];
            opad[i] ^= block[i];
        }
        let mut inner = Sha256::new();
        inner.update(ipad);
        let mut outer = Sha256::new();
        outer.update(opad);
        Hmac { inner, outer }
    }

    pub(crate) fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// How a detector's values are normalised before hashing, so that the same value written
/// differently (`4111 1111 1111 1111` and `4111111111111111`, `Alice@Example.com` and
/// `alice@example.com`) gets the same token and joins still work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Normal {
    /// As found.
    Raw,
    /// Letters and digits only, uppercased (cards, phones, SSNs, IBANs).
    Alnum,
    /// ASCII-lowercased (emails).
    Lower,
}

/// What a replacement needs to know about its detector.
pub(crate) struct Rule<'a> {
    pub(crate) label: &'a str,
    pub(crate) style: Style,
    pub(crate) normal: Normal,
    /// Partial keeps the domain of an email and hides its local part.
    pub(crate) email: bool,
    /// Partial shows nothing of a value without a meaningful tail (a PEM block).
    pub(crate) whole: bool,
}

/// Appends the replacement of `value` to `out`.
pub(crate) fn replace(out: &mut String, value: &str, rule: &Rule<'_>, hmac: Option<&Hmac>) {
    match rule.style {
        Style::Redact => out.push_str(rule.label),
        Style::Partial { keep } => {
            if rule.whole {
                out.push_str(rule.label);
            } else if rule.email
                && let Some(at) = value.rfind('@')
            {
                out.extend(value[..at].chars().map(|_| '*'));
                out.push_str(&value[at..]);
            } else {
                partial(out, value, keep);
            }
        }
        Style::Hash => match hmac {
            Some(hmac) => token(out, value, rule.normal, hmac),
            // Compile refuses a Hash style without a key; never fall back to the value.
            None => out.push_str(rule.label),
        },
    }
}

/// Letters and digits become `*` except the last `keep` of them; separators stay, so a card
/// still reads as a card (`**** **** **** 1111`). At most half the letters and digits are
/// ever shown, so a short value is never revealed whole by a large `keep`.
fn partial(out: &mut String, value: &str, keep: usize) {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    if total == 0 {
        // Nothing but punctuation (a password can be `;:!?`): hide every character.
        out.extend(value.chars().map(|_| '*'));
        return;
    }
    let shown = keep.min(total / 2);
    let hide = total - shown;
    let mut seen = 0;
    for c in value.chars() {
        if c.is_alphanumeric() {
            out.push(if seen < hide { '*' } else { c });
            seen += 1;
        } else {
            out.push(c);
        }
    }
}

/// `tok_` and the first 16 hex digits of the HMAC of the normalised value.
fn token(out: &mut String, value: &str, normal: Normal, hmac: &Hmac) {
    let mac = match normal {
        Normal::Raw => hmac.mac(value.as_bytes()),
        Normal::Lower => hmac.mac(value.to_ascii_lowercase().as_bytes()),
        Normal::Alnum => {
            let v: Vec<u8> = value
                .bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| b.to_ascii_uppercase())
                .collect();
            hmac.mac(&v)
        }
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("tok_");
    for b in &mac[..8] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let h = Hmac::new(&[0x0b; 20]);
        assert_eq!(
            hex(&h.mac(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 6: a key longer than the block.
        let h = Hmac::new(&[0xaa; 131]);
        assert_eq!(
            hex(&h.mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn rule(style: Style) -> Rule<'static> {
        Rule {
            label: "[CREDIT_CARD]",
            style,
            normal: Normal::Alnum,
            email: false,
            whole: false,
        }
    }

    #[test]
    fn partial_keeps_separators_and_the_tail() {
        let mut out = String::new();
        replace(
            &mut out,
            "4111 1111 1111 1111",
            &rule(Style::Partial { keep: 4 }),
            None,
        );
        assert_eq!(out, "**** **** **** 1111");
        let mut out = String::new();
        partial(&mut out, "abc", 4);
        assert_eq!(out, "**c");
        let mut out = String::new();
        partial(&mut out, "ünï-cödé", 2);
        assert_eq!(out, "***-**dé");
    }

    #[test]
    fn tokens_are_stable_across_formatting() {
        let h = Hmac::new(b"k");
        let t = |v: &str| {
            let mut out = String::new();
            replace(&mut out, v, &rule(Style::Hash), Some(&h));
            out
        };
        assert_eq!(t("4111 1111 1111 1111"), t("4111-1111-1111-1111"));
        assert_ne!(t("4111 1111 1111 1111"), t("5555 5555 5555 4444"));
        assert!(t("x").starts_with("tok_") && t("x").len() == 20);
    }
}
