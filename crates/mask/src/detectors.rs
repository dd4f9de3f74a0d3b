//! The built-in detectors: their names, their patterns, and the checks that run on the
//! candidates those patterns find.
//!
//! Every pattern here has a bounded length, so a thread of the automaton dies within a few
//! dozen bytes of where it started. That bound is what keeps the scan linear: a search that
//! restarts after a rejected candidate rescans at most that many bytes. Tokens of unbounded
//! length (PEM blocks, JWTs, password values, long API tokens) are found by a short anchor in
//! the automaton and then extended by plain code here, which reads each byte once.

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Builtin {
    Email,
    Phone,
    Ssn,
    CreditCard,
    Iban,
    Ipv4,
    Ipv6,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    PrivateKey,
    Jwt,
    Password,
}

impl Builtin {
    /// Every built-in, in the order their patterns are tried when two start at the same byte:
    /// secrets with literal prefixes first (they are the most specific), then the
    /// key/value secrets, then PII from the most to the least constrained shape.
    pub(crate) const PRIORITY: [Builtin; 16] = [
        Builtin::PrivateKey,
        Builtin::Jwt,
        Builtin::AwsAccessKey,
        Builtin::GithubToken,
        Builtin::GitlabToken,
        Builtin::SlackToken,
        Builtin::StripeKey,
        Builtin::AwsSecretKey,
        Builtin::Password,
        Builtin::Email,
        Builtin::Iban,
        Builtin::CreditCard,
        Builtin::Ssn,
        Builtin::Phone,
        Builtin::Ipv6,
        Builtin::Ipv4,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::Ssn => "ssn",
            Builtin::CreditCard => "credit_card",
            Builtin::Iban => "iban",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
            Builtin::AwsAccessKey => "aws_access_key",
            Builtin::AwsSecretKey => "aws_secret_key",
            Builtin::GithubToken => "github_token",
            Builtin::GitlabToken => "gitlab_token",
            Builtin::SlackToken => "slack_token",
            Builtin::StripeKey => "stripe_key",
            Builtin::PrivateKey => "private_key",
            Builtin::Jwt => "jwt",
            Builtin::Password => "password",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Builtin> {
        Builtin::PRIORITY.into_iter().find(|b| b.name() == name)
    }

    pub(crate) fn is_pii(self) -> bool {
        matches!(
            self,
            Builtin::Email
                | Builtin::Phone
                | Builtin::Ssn
                | Builtin::CreditCard
                | Builtin::Iban
                | Builtin::Ipv4
                | Builtin::Ipv6
        )
    }

    /// The pattern compiled into the automaton. All are ASCII-only (`(?-u)`): Unicode word
    /// boundaries would make the lazy DFA give up on the first non-ASCII byte, and none of
    /// these shapes has non-ASCII characters.
    pub(crate) fn pattern(self) -> &'static str {
        match self {
            // The `@` and the first domain label: the local part is read backwards by
            // `email_start`, the rest of the domain by `extend_email`.
            Builtin::Email => r"(?-u)@[A-Za-z0-9][A-Za-z0-9\-]{0,62}\.[A-Za-z0-9]",
            // International (`+` and a country code, groups with optional single separators,
            // an optional parenthesised group), NANP (`(415) 555-0132`, `415-555-0132`,
            // `1-415-555-0132`), and national trunk-prefixed forms (`020 7946 0958`,
            // `01 23 45 67 89`). A bare run of digits is never a phone: it is far more often
            // an id or an amount.
            Builtin::Phone => concat!(
                r"(?-u)",
                r"\+[1-9][0-9]{0,3}(?:[ .\-]?\([0-9]{1,4}\))?(?:[ .\-]?[0-9]{1,5}){1,6}\b",
                r"|(?:\b1[ .\-]?)?(?:\([2-9][0-9]{2}\)[ .\-]?|\b[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}\b",
                r"|\b0[1-9][0-9]{1,3} [0-9]{3,4} ?[0-9]{3,4}\b",
                r"|\b0[1-9](?:[ .][0-9]{2}){4}\b",
            ),
            Builtin::Ssn => r"(?-u)\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
            // The first nine digits, the first four together; `credit_card` reads the rest.
            // Every known issuer starts with 2 to 6, which keeps epoch milliseconds
            // (`1709294096000`) from even being candidates.
            Builtin::CreditCard => r"(?-u)\b[2-6][0-9]{3}[ \-]?[0-9]{4}[ \-]?[0-9]",
            // Country, check digits and the first group; `iban` reads as far as the
            // country's length.
            Builtin::Iban => r"(?-u)\b[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}",
            Builtin::Ipv4 => r"(?-u)\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b",
            // Only the forms that cannot be a clock time or a MAC address: eight groups, or
            // a `::`. A leading `::` must not follow a word character (`std::io`).
            Builtin::Ipv6 => concat!(
                r"(?-u)",
                r"\b(?:[0-9A-Fa-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b",
                r"|(?:\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5}|\B)::(?:[0-9A-Fa-f]{1,4}:){0,4}[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b",
                r"|\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){7}\b",
                r"|\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}\b|\B)",
                r"|\B::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}\b",
            ),
            Builtin::AwsAccessKey => r"(?-u)\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            // The end of the key and the separator; the value is read by `extract_value`.
            Builtin::AwsSecretKey => concat!(
                r"(?i-u)",
                r"(?:aws[_.\-]?secret[_.\-]?(?:access[_.\-]?)?key|secret[_.\-]?access[_.\-]?key)",
                r#"\\?["']?[ \t]*[:=][ \t]*"#,
            ),
            Builtin::GithubToken => {
                r"(?-u)\bgh[pousr]_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{20}"
            }
            // Personal, runner and deploy tokens.
            Builtin::GitlabToken => r"(?-u)\bgl(?:pat|rt|dt)-[A-Za-z0-9_\-]{20}",
            Builtin::SlackToken => r"(?-u)\bxox[abposr]-[A-Za-z0-9]{4}",
            Builtin::StripeKey => r"(?-u)\b(?:sk_live|rk_live|sk_test|rk_test)_[0-9A-Za-z]{24}",
            // PEM (`RSA`, `EC`, `OPENSSH`, `ENCRYPTED`, … or none) and OpenPGP armour.
            Builtin::PrivateKey => {
                r"(?-u)-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
            }
            Builtin::Jwt => r"(?-u)\beyJ[A-Za-z0-9_\-]{5}",
            // A key whose last word names a secret, then `:` or `=`; the value is read by
            // `extract_value`. Only the keyword is matched, wherever it is (`DB_PASSWORD`,
            // `client_secret`), since a key ending in it is all that counts; a key such as
            // `token_count` or `max_tokens` does not end in the keyword and so does not match.
            Builtin::Password => concat!(
                r"(?i-u)",
                r"(?:password|passwd|passphrase|secret|api[_\-]?key|token|private[_\-]?key|credentials?|authorization|secret[_.\-]?access[_.\-]?key)",
                r#"\\?["']?[ \t]*[:=][ \t]*"#,
            ),
        }
    }
}

/// Is `b` a byte of an identifier-like token, for the boundary checks?
#[inline]
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// What a boundary check knows about neighbouring matches. A byte that belongs to another
/// match is no neighbour: it will be a label once masked. Without this, masking would not be
/// stable: in `4111 1111 1111 1111-eyJ…` the card is glued to the JWT, but once the JWT is
/// `[JWT]` it is not, and a second pass would find it.
pub(crate) struct Context<'a> {
    /// Bytes before this belong to the previous match.
    pub(crate) prev_end: usize,
    /// Does a match start at this byte? Asked only when a check would otherwise fail there.
    pub(crate) starts_at: &'a dyn Fn(usize) -> bool,
}

impl Context<'_> {
    /// Is the byte at `i` (before the candidate) a real neighbour?
    fn left(&self, i: usize) -> bool {
        i >= self.prev_end
    }
}

/// The boundary check for numeric shapes: the candidate must not be glued to a longer token,
/// directly (`x4111…`) or through a dot or dash (`1.2.3.4.5`, `ORD-415-555-0132`,
/// `415-555-0132-77`). A sentence's final dot (`… 10.0.0.1.`) is not a continuation.
pub(crate) fn standalone(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> bool {
    if s > 0 && cx.left(s - 1) {
        let p = text[s - 1];
        if is_word(p) {
            return false;
        }
        if (p == b'-' || p == b'.')
            && s >= 2
            && cx.left(s - 2)
            && text[s - 2].is_ascii_alphanumeric()
        {
            return false;
        }
    }
    if e < text.len() {
        let n = text[e];
        if is_word(n) && !(cx.starts_at)(e) {
            return false;
        }
        if (n == b'-' || n == b'.')
            && e + 1 < text.len()
            && text[e + 1].is_ascii_alphanumeric()
            && !(cx.starts_at)(e + 1)
        {
            return false;
        }
    }
    true
}

/// The Luhn checksum over the ASCII digits of `digits` (other bytes are skipped).
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for &b in digits.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if count % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        count += 1;
    }
    count >= 2 && sum.is_multiple_of(10)
}

/// ISO 7064 mod 97-10 as IBANs use it: the first four characters moved to the end, letters
/// as 10..35, the whole number mod 97 must be 1. Spaces are skipped; any other
/// non-alphanumeric character fails.
pub(crate) fn mod97(value: &[u8]) -> bool {
    let chars: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    if chars.len() < 5 || !chars.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut rem = 0u32;
    for &b in chars[4..].iter().chain(&chars[..4]) {
        rem = if b.is_ascii_digit() {
            (rem * 10 + u32::from(b - b'0')) % 97
        } else {
            (rem * 100 + u32::from(b - b'A') + 10) % 97
        };
    }
    rem == 1
}

/// A card number's issuer, by prefix, and whether `len` digits is a length it issues.
fn known_issuer(d: &[u8]) -> bool {
    let len = d.len();
    let prefix = |n: usize| -> u32 {
        d[..n]
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    match d[0] {
        // Visa.
        b'4' => matches!(len, 13 | 16 | 19),
        // Mastercard: 51–55 and 2221–2720.
        b'5' => (51..=55).contains(&p2) && len == 16,
        b'2' => (2221..=2720).contains(&p4) && len == 16,
        b'3' => {
            // Amex 34/37; JCB 3528–3589; Diners 36, 38, 39, 300–305 and 3095.
            ((p2 == 34 || p2 == 37) && len == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
                || ((p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) || p4 == 3095)
                    && (14..=19).contains(&len))
        }
        // Discover 6011, 644–649, 65; UnionPay 62.
        b'6' => {
            (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || p2 == 62)
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// A card candidate: consistent separators, a first group of four, other groups of three to
/// seven digits, then issuer, length and Luhn. When the whole candidate fails, shorter
/// prefixes ending at a group boundary are tried (a card followed by a space and more digits:
/// `4111 1111 1111 1111 12`), so a trailing number cannot hide the card before it.
pub(crate) fn credit_card(text: &[u8], s: usize, cx: &Context<'_>) -> Option<(usize, usize)> {
    // The run of digits with single separators, all the same (`4111 1111 1111 1111
    // 123-45-6789` is a card and then something else), at most 48 digits (more is no card,
    // and the bound keeps the work per candidate constant).
    let mut i = s;
    let mut e = s;
    let mut count = 0;
    let mut run_sep = None;
    while i < text.len() && count < 48 {
        let b = text[i];
        if b.is_ascii_digit() {
            count += 1;
            i += 1;
            e = i;
        } else if (b == b' ' || b == b'-')
            && run_sep.is_none_or(|x| x == b)
            && i > s
            && text[i - 1].is_ascii_digit()
            && text.get(i + 1).is_some_and(u8::is_ascii_digit)
        {
            run_sep = Some(b);
            i += 1;
        } else {
            break;
        }
    }
    let cand = &text[s..e];
    let mut sep = None;
    // Per group: its end (relative to `s`), the digits up to its end, and its own length.
    let mut group_end = [0usize; 48];
    let mut group_digits = [0usize; 48];
    let mut group_len = [0usize; 48];
    let mut n = 0;
    let mut digits = [0u8; 48];
    let mut nd = 0;
    let mut run = 0;
    for (i, &b) in cand.iter().enumerate() {
        if b.is_ascii_digit() {
            if nd == digits.len() {
                return None;
            }
            digits[nd] = b;
            nd += 1;
            run += 1;
        } else {
            if sep.is_some_and(|x| x != b) {
                return None;
            }
            sep = Some(b);
            group_end[n] = i;
            group_digits[n] = nd;
            group_len[n] = run;
            n += 1;
            run = 0;
        }
    }
    group_end[n] = cand.len();
    group_digits[n] = nd;
    group_len[n] = run;
    n += 1;
    // How many leading groups have a card's sizes: four digits first, then three to seven.
    let mut valid = n;
    if n > 1 {
        if group_len[0] != 4 {
            return None;
        }
        valid = 1;
        while valid < n && (3..=7).contains(&group_len[valid]) {
            valid += 1;
        }
    }
    for k in (0..valid).rev() {
        let count = group_digits[k];
        if count < 13 {
            break;
        }
        if count > 19 {
            continue;
        }
        let d = &digits[..count];
        let end = s + group_end[k];
        if known_issuer(d) && luhn(d) && standalone(text, s, end, cx) {
            return Some((s, end));
        }
    }
    None
}

pub(crate) fn ssn(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> bool {
    let c = &text[s..e];
    let num = |r: std::ops::Range<usize>| {
        c[r].iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    let area = num(0..3);
    let group = num(4..6);
    let serial = num(7..11);
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && standalone(text, s, e, cx)
}

/// A phone candidate. The international pattern is greedy and may have run on into a
/// following number (`+44 20 7946 0958 4111 1111 …`), so shorter ends at group boundaries
/// are tried too, longest first, as for cards.
pub(crate) fn phone(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> Option<(usize, usize)> {
    if text[s] != b'+' {
        return phone_ok(text, s, e, cx).then_some((s, e));
    }
    let mut end = e;
    loop {
        if phone_ok(text, s, end, cx) {
            return Some((s, end));
        }
        // Back to the end of the previous group.
        while end > s + 1 && (text[end - 1].is_ascii_digit() || text[end - 1] == b')') {
            end -= 1;
        }
        while end > s + 1 && !(text[end - 1].is_ascii_digit() || text[end - 1] == b')') {
            end -= 1;
        }
        if end <= s + 1 {
            return None;
        }
    }
}

fn phone_ok(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> bool {
    let c = &text[s..e];
    let digits = c.iter().filter(|b| b.is_ascii_digit()).count();
    let length_ok = if c[0] == b'+' {
        let separated = c.iter().any(|b| !b.is_ascii_digit() && *b != b'+');
        // E.164 allows at most 15 digits; written without separators a number needs more
        // digits before it is more likely a phone than a signed amount.
        if separated {
            (8..=15).contains(&digits)
        } else {
            (10..=15).contains(&digits)
        }
    } else {
        (9..=12).contains(&digits)
    };
    if !length_ok || !standalone(text, s, e, cx) {
        return false;
    }
    // One space away from more digits, the groups are part of a longer number (an account
    // or IBAN in print format: `FR40 0825 1494 8352 6260`), not a phone.
    if s >= 2 && text[s - 1] == b' ' && cx.left(s - 2) && text[s - 2].is_ascii_digit() {
        return false;
    }
    !(e + 1 < text.len()
        && text[e] == b' '
        && text[e + 1].is_ascii_digit()
        && !(cx.starts_at)(e + 1))
}

pub(crate) fn ipv4(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> bool {
    let Ok(c) = std::str::from_utf8(&text[s..e]) else {
        return false;
    };
    c.parse::<Ipv4Addr>().is_ok() && !after_version_word(text, s) && standalone(text, s, e, cx)
}

/// Is the word before `s` (past spaces and a colon) `version` or `ver`: a four-part version
/// number (`version 1.2.3.4`) rather than an address?
fn after_version_word(text: &[u8], s: usize) -> bool {
    let mut i = s;
    while i > 0 && matches!(text[i - 1], b' ' | b':' | b'=' | b'\t') {
        i -= 1;
    }
    if i == s {
        return false;
    }
    let end = i;
    while i > 0 && text[i - 1].is_ascii_alphabetic() {
        i -= 1;
    }
    let word = &text[i..end];
    word.eq_ignore_ascii_case(b"version") || word.eq_ignore_ascii_case(b"ver")
}

pub(crate) fn ipv6(text: &[u8], s: usize, e: usize, cx: &Context<'_>) -> bool {
    let Ok(c) = std::str::from_utf8(&text[s..e]) else {
        return false;
    };
    if c.parse::<Ipv6Addr>().is_err() {
        return false;
    }
    // A compressed form with only short groups (`a::b`, `1::`) is more often code than an
    // address; real ones have a group of three or more hex digits, or are `::1`.
    if c.contains("::") && !c.contains('.') && c != "::1" && !c.split(':').any(|g| g.len() >= 3) {
        return false;
    }
    // Glued to an address-like neighbour (`…:`, `x::1`) is not an address of its own.
    if s > 0
        && cx.left(s - 1)
        && (is_word(text[s - 1]) || text[s - 1] == b':' || text[s - 1] == b'.')
    {
        return false;
    }
    if e < text.len() && (is_word(text[e]) || text[e] == b':') && !(cx.starts_at)(e) {
        return false;
    }
    !(e + 1 < text.len()
        && text[e] == b'.'
        && text[e + 1].is_ascii_alphanumeric()
        && !(cx.starts_at)(e + 1))
}

/// Country code to IBAN length (the SWIFT registry).
fn iban_length(cc: &[u8]) -> Option<usize> {
    let len = match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SC" => 31,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    };
    Some(len)
}

/// An IBAN starting at `s`: exactly the country's length, written either compact or in
/// groups of four separated by single spaces, not glued to more letters or digits,
/// mod-97 == 1. The country's length says where it ends (`… 7654 32 EUR`).
pub(crate) fn iban(text: &[u8], s: usize, cx: &Context<'_>) -> Option<(usize, usize)> {
    // At most 34 characters and 8 spaces.
    let c = &text[s..text.len().min(s + 42)];
    let want = iban_length(&c[..2])?;
    let spaced = c.get(4) == Some(&b' ');
    let mut count = 0;
    let mut end = 0;
    for (i, &b) in c.iter().enumerate() {
        if !(b == b' ' || b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return None;
        }
        if b == b' ' {
            // Spaces only between groups of four.
            if !spaced || count % 4 != 0 || count == 0 {
                return None;
            }
            continue;
        }
        if count > 0 && count % 4 == 0 && spaced && c[i - 1] != b' ' {
            return None;
        }
        count += 1;
        if count == want {
            end = i + 1;
            break;
        }
    }
    if count != want {
        return None;
    }
    let end = s + end;
    (mod97(&text[s..end]) && standalone(text, s, end, cx)).then_some((s, end))
}

/// The start of an email whose `@` is at `at`: the local part before it, read backwards no
/// further than `floor` (where the search started, so never into an earlier match), and at
/// most 64 bytes (RFC 5321; a longer run glued to it is cut rather than left unmasked); it
/// starts with a letter or digit.
pub(crate) fn email_start(text: &[u8], at: usize, floor: usize) -> Option<usize> {
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let mut i = at;
    while i > floor && at - i < 64 && local(text[i - 1]) {
        i -= 1;
    }
    while i < at && !text[i].is_ascii_alphanumeric() {
        i += 1;
    }
    (i < at).then_some(i)
}

/// The end of an email whose pattern matched up to the first character of the last-but-one
/// label: the rest of the domain, whose last label must be alphabetic.
pub(crate) fn extend_email(text: &[u8], e: usize) -> Option<usize> {
    let mut i = e;
    let mut label = e - 1;
    while i < text.len() {
        let b = text[i];
        if b == b'.' {
            label = i + 1;
        } else if b == b'-' {
            // A double dash only in an IDN label (`xn--`); otherwise the domain has ended
            // (`alice@example.com-----BEGIN …`).
            if text.get(i + 1) == Some(&b'-') && !text[label..i].eq_ignore_ascii_case(b"xn") {
                break;
            }
        } else if !b.is_ascii_alphanumeric() {
            break;
        }
        i += 1;
    }
    // Trailing dots and dashes belong to the sentence, not the domain.
    while i > e && (text[i - 1] == b'.' || text[i - 1] == b'-') {
        i -= 1;
    }
    let domain_start = text[..e].iter().rposition(|b| *b == b'@')? + 1;
    let domain = &text[domain_start..i];
    if domain.len() > 253 || domain.windows(2).any(|w| w == b"..") {
        return None;
    }
    let tld = domain.rsplit(|b| *b == b'.').next()?;
    if tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) || !domain.contains(&b'.') {
        return None;
    }
    if i < text.len() && text[i] == b'@' {
        return None;
    }
    Some(i)
}

/// The end of the run of bytes in `class` starting at `i`.
pub(crate) fn run_end(text: &[u8], mut i: usize, class: impl Fn(u8) -> bool) -> usize {
    while i < text.len() && class(text[i]) {
        i += 1;
    }
    i
}

fn base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A token of unbounded length whose anchor matched `[s, e)`: the run of token bytes, at
/// least `min` long, not glued to more word bytes.
pub(crate) fn extend_token(
    text: &[u8],
    s: usize,
    e: usize,
    min: usize,
    class: impl Fn(u8) -> bool,
) -> Option<(usize, usize)> {
    let end = run_end(text, e, class);
    (end - s >= min && (end == text.len() || !is_word(text[end]))).then_some((s, end))
}

/// A JWT whose anchor (`eyJ…`) matched at `s`: three base64url segments, the first decoding
/// to a JSON object with `alg`.
pub(crate) fn jwt(text: &[u8], s: usize) -> Option<(usize, usize)> {
    let h_end = run_end(text, s, base64url);
    if text.get(h_end) != Some(&b'.') || h_end - s > 4096 {
        return None;
    }
    let p_end = run_end(text, h_end + 1, base64url);
    if p_end == h_end + 1 || text.get(p_end) != Some(&b'.') {
        return None;
    }
    let end = run_end(text, p_end + 1, base64url);
    if end < text.len() && (is_word(text[end]) || text[end] == b'.') {
        return None;
    }
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&text[s..h_end])
        .ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).ok()?;
    header.contains_key("alg").then_some((s, end))
}

/// A PEM private key whose `BEGIN` line matched `[s, e)`: up to and including the matching
/// `END … PRIVATE KEY-----`. Without an end line (a truncated block is as secret as a whole
/// one) the body runs as far as PEM characters go. `end_cache` remembers the last search for
/// an `END` line so that many `BEGIN` lines without one cost one search, not one each.
pub(crate) fn private_key(
    text: &[u8],
    e: usize,
    end_cache: &mut Option<(usize, Option<usize>)>,
) -> usize {
    const END: &[u8] = b"-----END ";
    const DASHES: &[u8] = b"-----";
    let found = match *end_cache {
        Some((from, found)) if from <= e && found.is_none_or(|f| f >= e) => found,
        _ => {
            let mut at = e;
            let found = loop {
                let Some(i) = memchr::memmem::find(&text[at..], END) else {
                    break None;
                };
                let i = at + i;
                // The END line: `-----END <label> PRIVATE KEY[ BLOCK]-----`.
                let line = &text[i + END.len()..text.len().min(i + END.len() + 64)];
                if let Some(t) = memchr::memmem::find(line, DASHES)
                    && memchr::memmem::find(&line[..t], b"PRIVATE KEY").is_some()
                {
                    break Some(i + END.len() + t + DASHES.len());
                }
                at = i + END.len();
            };
            *end_cache = Some((e, found));
            found
        }
    };
    match found {
        Some(end) => end,
        None => run_end(text, e, |b| {
            b.is_ascii_alphanumeric() || b"+/=\r\n\t \\:,-".contains(&b)
        }),
    }
}

/// Values that only stand for a secret: empty, templated, already masked, or a word that
/// says there is none.
fn placeholder(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    if matches!(v[0], b'$' | b'<' | b'%' | b'[' | b'*' | b'{' | b'(') {
        return true;
    }
    if v.len() == 20 && v.starts_with(b"tok_") && v[4..].iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    if v.iter().all(|b| *b == v[0]) && matches!(v[0], b'x' | b'X' | b'.' | b'-' | b'#') {
        return true;
    }
    if holds_label(v) {
        return true;
    }
    const WORDS: [&[u8]; 10] = [
        b"null",
        b"none",
        b"nil",
        b"true",
        b"false",
        b"undefined",
        b"redacted",
        b"hidden",
        b"required",
        b"optional",
    ];
    WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

/// Does `v` hold a masking label (`[EMAIL]`, `[PRIVATE_KEY]`)? Such a value was masked
/// already, in part (`", [PRIVATE_KEY]"`), and is not masked again as a password.
fn holds_label(v: &[u8]) -> bool {
    let mut i = 0;
    while let Some(open) = v[i..].iter().position(|b| *b == b'[') {
        let start = i + open + 1;
        let len = v[start..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b'_')
            .count();
        if len >= 2 && v.get(start + len) == Some(&b']') {
            return true;
        }
        i = start;
    }
    false
}

/// Is `v` a placeholder rather than a secret (public for the JSON key-context rule)?
pub(crate) fn is_placeholder(v: &str) -> bool {
    placeholder(v.trim().as_bytes())
}

/// The value after a `key:` / `key=` whose match ends at `e`: quoted (`"…"`, `'…'`, or the
/// escaped `\"…\"` of JSON inside a string), or a bare token. A bare value after `:` must be
/// the last thing on its line (`password: hunter2`), otherwise the colon is prose
/// (`password: use the reset link`). An HTTP auth scheme (`Bearer …`) is skipped so that only
/// the credential is masked. Returns the value's span, never empty.
pub(crate) fn extract_value(text: &[u8], e: usize) -> Option<(usize, usize)> {
    let sep = text[..e]
        .iter()
        .rposition(|b| *b == b':' || *b == b'=')
        .map(|i| text[i])?;
    let mut i = e;
    // `=>` and `:=` leave their second byte after the pattern's separator.
    while i < text.len() && (text[i] == b'>' || text[i] == b'=') {
        i += 1;
    }
    while i < text.len() && (text[i] == b' ' || text[i] == b'\t') {
        i += 1;
    }
    let (vs, ve) = if text.get(i) == Some(&b'\\') && matches!(text.get(i + 1), Some(b'"' | b'\'')) {
        let q = text[i + 1];
        let vs = i + 2;
        let mut j = vs;
        loop {
            if j + 1 >= text.len() || text[j] == b'\n' {
                return None;
            }
            if text[j] == b'\\' && text[j + 1] == q {
                break;
            }
            j += 1;
        }
        (vs, j)
    } else if matches!(text.get(i), Some(b'"' | b'\'' | b'`')) {
        let q = text[i];
        let vs = i + 1;
        let mut j = vs;
        loop {
            match text.get(j) {
                None | Some(b'\n') => return None,
                Some(b'\\') => j += 2,
                Some(b) if *b == q => break,
                Some(_) => j += 1,
            }
        }
        (vs, j.min(text.len()))
    } else {
        let vs = i;
        let ve = run_end(text, vs, |b| {
            !(b.is_ascii_whitespace() || b",;&\"'`<>{}[]()\\".contains(&b))
        });
        if sep == b':' {
            let mut k = ve;
            while k < text.len() && (text[k] == b' ' || text[k] == b'\t') {
                k += 1;
            }
            if k < text.len() && !b"\r\n,;&}]".contains(&text[k]) {
                // More words follow: an auth scheme, or prose.
                let token = &text[vs..ve];
                let scheme = [&b"bearer"[..], b"basic", b"token", b"digest", b"negotiate"]
                    .iter()
                    .any(|s| token.eq_ignore_ascii_case(s));
                if !(scheme && k == ve + 1) {
                    return None;
                }
                let ve2 = run_end(text, k, |b| {
                    !(b.is_ascii_whitespace() || b",;&\"'<>{}[]()\\".contains(&b))
                });
                return (ve2 > k && !placeholder(&text[k..ve2])).then_some((k, ve2));
            }
        }
        (vs, ve)
    };
    let mut value = &text[vs..ve];
    let mut vs = vs;
    // Blanks inside quotes are not part of what the value says (`" [PASSWORD]"`).
    while value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        vs += 1;
        value = &value[1..];
    }
    // `Authorization: "Bearer abc"`: mask the credential, not the scheme.
    if let Some(sp) = value.iter().position(|b| *b == b' ') {
        let scheme = &value[..sp];
        if [&b"bearer"[..], b"basic", b"token", b"digest", b"negotiate"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            vs += sp + 1;
            value = &text[vs..ve];
        }
    }
    (value.len() >= 3 && !placeholder(value)).then_some((vs, ve))
}

/// Is `v` (exactly) an AWS secret access key: 40 characters of base64, with both cases as a
/// random key has (a 40-letter lowercase word run is not one)?
pub(crate) fn aws_secret_value(v: &[u8]) -> bool {
    v.len() == 40
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'/' || *b == b'+')
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter().any(u8::is_ascii_uppercase)
}

/// What an object key says about the string under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHint {
    None,
    /// A secret's name (`password`, `api_key`, `accessToken`, `client_secret`).
    Password,
    /// AWS's name for a secret access key (`aws_secret_access_key`, `SecretAccessKey`).
    AwsSecret,
}

/// Classifies a JSON key by its last word, case- and separator-insensitively, so
/// `dbPassword`, `DB_PASSWORD` and `db-password` agree and `max_tokens` or `token_count` do not
/// count. Runs on every key of every object, so it dispatches on the last letter and compares
/// backwards, and most keys are decided after a byte or two.
pub(crate) fn key_hint(key: &str) -> KeyHint {
    let k = key.as_bytes();
    let Some(&last) = k.last() else {
        return KeyHint::None;
    };
    let ends = |word: &[u8]| ends_with_word(k, word);
    match last.to_ascii_lowercase() {
        b'd' if ends(b"password") || ends(b"passwd") => KeyHint::Password,
        b'e' if ends(b"passphrase") => KeyHint::Password,
        b't' if ends(b"secret") => KeyHint::Password,
        b'n' if ends(b"token") || ends(b"authorization") => KeyHint::Password,
        b'l' if ends(b"credential") => KeyHint::Password,
        b's' if ends(b"credentials") => KeyHint::Password,
        b'y' if ends(b"secretaccesskey") || ends(b"awssecretkey") => KeyHint::AwsSecret,
        b'y' if ends(b"apikey") || ends(b"privatekey") => KeyHint::Password,
        _ => KeyHint::None,
    }
}

/// Does `key`, lowercased and with `_ - . space` dropped, end with `word`?
fn ends_with_word(key: &[u8], word: &[u8]) -> bool {
    let mut i = key.len();
    for &w in word.iter().rev() {
        loop {
            if i == 0 {
                return false;
            }
            i -= 1;
            if !matches!(key[i], b'_' | b'-' | b'.' | b' ') {
                break;
            }
        }
        if key[i].to_ascii_lowercase() != w {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_numbers_and_rejects_off_by_one() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"7"));
    }

    #[test]
    fn mod97_accepts_valid_ibans() {
        assert!(mod97(b"GB82WEST12345698765432"));
        assert!(mod97(b"GB82 WEST 1234 5698 7654 32"));
        assert!(mod97(b"DE89370400440532013000"));
        assert!(!mod97(b"GB83WEST12345698765432"));
        assert!(!mod97(b"GB8"));
    }

    #[test]
    fn issuers() {
        for ok in [
            "4111111111111111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "36227206271667",
            "6200000000000005",
        ] {
            assert!(known_issuer(ok.as_bytes()), "{ok}");
        }
        for bad in ["1234567812345670", "9111111111111111", "5655555555554444"] {
            assert!(!known_issuer(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn key_hints() {
        for k in [
            "password",
            "dbPassword",
            "DB_PASSWORD",
            "api_key",
            "apiKey",
            "x-api-key",
            "access_token",
            "client_secret",
            "Authorization",
            "private_key",
        ] {
            assert_eq!(key_hint(k), KeyHint::Password, "{k}");
        }
        for k in ["aws_secret_access_key", "SecretAccessKey", "AWS_SECRET_KEY"] {
            assert_eq!(key_hint(k), KeyHint::AwsSecret, "{k}");
        }
        for k in [
            "max_tokens",
            "token_count",
            "name",
            "tokenizer",
            "id",
            "key",
            "secrets_path",
        ] {
            assert_eq!(key_hint(k), KeyHint::None, "{k}");
        }
    }

    #[test]
    fn values_after_keys() {
        fn v(t: &str) -> Option<&str> {
            let e = t.find(['=', ':']).unwrap() + 1;
            extract_value(t.as_bytes(), e).map(|(a, b)| &t[a..b])
        }
        assert_eq!(v("password=hunter22 next"), Some("hunter22"));
        assert_eq!(v("password: hunter22"), Some("hunter22"));
        assert_eq!(v("password: \"hunter 22\" and more"), Some("hunter 22"));
        assert_eq!(v("password: use the reset link"), None);
        assert_eq!(v("password=${DB_PASSWORD}"), None);
        assert_eq!(v("token=abc&x=1"), Some("abc"));
        assert_eq!(v("Authorization: Bearer abc.def"), Some("abc.def"));
        assert_eq!(v(r#"{\"password\": \"s3cr3t\"}"#), Some("s3cr3t"));
        assert_eq!(v(r#"password\": \"s3cr3t\"}"#), Some("s3cr3t"));
        assert_eq!(v("password='unterminated"), None);
    }
}
