//! A cheap first look at a short text, to skip the automaton when nothing can match.
//!
//! One pass over the bytes collects a few features: how many digits, the longest run of
//! digits as a card or a phone groups them, which punctuation occurs, and which token
//! prefixes (`AKIA`, `ghp_`, `glpat-`, `xoxb-`, `sk_live_`, `-----`, `eyJ`) and key endings
//! (`…password:`) appear. Then one bit per built-in says whether the text could hold its shape
//! at all. Most short JSON strings (names, statuses, currencies, dates, order numbers, UUIDs,
//! digests) fail every test, and the automaton is not even entered. Long texts go straight to
//! the automaton, whose own speed then dominates.
//!
//! The pass is cheap because most bytes are "plain" (lowercase letters, spaces between words
//! are not: they separate phone groups) and a run of them is skipped by a tight loop; the
//! look-behind for token prefixes reads the slice only at the few bytes that end one.
//!
//! It must never say no to a text in which the automaton finds a match: each condition below
//! is implied by its detector's pattern and check, and a property test holds it to that.

use crate::detectors::Builtin;

pub(crate) struct Prefilter {
    /// Custom patterns or a deny-list can match anything: no shortcut.
    pub(crate) always: bool,
    /// Enabled built-ins, one bit per `Builtin::PRIORITY` index.
    pub(crate) need: u32,
}

const C_DIGIT: u16 = 1;
const C_AT: u16 = 2;
const C_COLON: u16 = 4;
const C_EQ: u16 = 8;
const C_DASH: u16 = 16;
const C_DOT: u16 = 32;
const C_UNDER: u16 = 64;
const C_UPPER: u16 = 128;
const C_SPACE: u16 = 256;
const C_PAREN: u16 = 512;
const C_PLUS: u16 = 1024;
/// Bytes that can end a token prefix or a key's separator.
const C_TRIGGER: u16 = 2048;

const fn class_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = match b {
            b'0'..=b'9' => C_DIGIT,
            b'@' => C_AT,
            b':' => C_COLON | C_TRIGGER,
            b'=' => C_EQ | C_TRIGGER,
            b'-' => C_DASH | C_TRIGGER,
            b'.' => C_DOT,
            b'_' => C_UNDER | C_TRIGGER,
            b'A' | b'J' => C_UPPER | C_TRIGGER,
            b'B'..=b'Z' => C_UPPER,
            b' ' => C_SPACE,
            b'(' | b')' => C_PAREN,
            b'+' => C_PLUS,
            _ => 0,
        };
        i += 1;
    }
    t
}

static CLASS: [u16; 256] = class_table();

/// Texts longer than this skip the prefilter.
const PREFILTER_MAX: usize = 512;

/// Bytes as a big-endian number, the last byte lowest: how [`window`] holds them.
const fn lit(bytes: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        w = (w << 8) | bytes[i] as u64;
        i += 1;
    }
    w
}

/// The low `n` bytes of a window.
const fn low(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    }
}

/// Up to eight bytes before `i`, the nearest lowest.
fn window(text: &[u8], i: usize) -> u64 {
    text[i.saturating_sub(8)..i]
        .iter()
        .fold(0u64, |w, &b| (w << 8) | u64::from(b))
}

// What the look-behind at a trigger byte found.
const L_AWS: u16 = 1;
const L_GITHUB: u16 = 2;
const L_GITLAB: u16 = 4;
const L_SLACK: u16 = 8;
const L_STRIPE: u16 = 16;
const L_PEM: u16 = 32;
const L_JWT: u16 = 64;
/// Two capitals and two digits: an IBAN's country and check digits.
const L_IBAN: u16 = 128;
/// A `:` or `=` after what could end a secret's key name (`…password`, `…token"`).
const L_KEY: u16 = 256;

/// Which token prefix or key ending ends with byte `b`, given the bytes `w` before it.
fn literal(w: u64, b: u8) -> u16 {
    match b {
        b'-' => {
            let mut l = 0;
            if w & low(4) == lit(b"----") {
                l |= L_PEM;
            }
            if w & low(4) == lit(b"glrt")
                || w & low(4) == lit(b"gldt")
                || w & low(5) == lit(b"glpat")
            {
                l |= L_GITLAB;
            }
            if (w >> 8) & low(3) == lit(b"xox")
                && matches!(w as u8, b'a' | b'b' | b'p' | b'o' | b's' | b'r')
            {
                l |= L_SLACK;
            }
            l
        }
        b'_' => {
            let mut l = 0;
            if ((w >> 8) & low(2) == lit(b"gh")
                && matches!(w as u8, b'p' | b'o' | b'u' | b's' | b'r'))
                || w & low(4) == lit(b"_pat")
            {
                l |= L_GITHUB;
            }
            if w & low(5) == lit(b"_live") || w & low(5) == lit(b"_test") {
                l |= L_STRIPE;
            }
            l
        }
        b'A' if w & low(3) == lit(b"AKI") || w & low(3) == lit(b"ASI") => L_AWS,
        b'J' if w & low(2) == lit(b"ey") => L_JWT,
        b':' | b'=' => {
            // Back over the quotes and blanks the patterns allow between key and separator;
            // a window of nothing else is inconclusive and counts as a yes.
            let mut w = w;
            for _ in 0..8 {
                match w as u8 {
                    b' ' | b'\t' | b'"' | b'\'' | b'\\' => w >>= 8,
                    0 => return L_KEY,
                    last => {
                        // The last letters of the password and AWS secret key names.
                        return if matches!(
                            last.to_ascii_lowercase(),
                            b'd' | b'e' | b't' | b'y' | b'n' | b'l' | b's'
                        ) {
                            L_KEY
                        } else {
                            0
                        };
                    }
                }
            }
            L_KEY
        }
        _ => 0,
    }
}

const fn bit(b: Builtin) -> u32 {
    let mut i = 0;
    while i < Builtin::PRIORITY.len() {
        if Builtin::PRIORITY[i] as u8 == b as u8 {
            return 1 << i;
        }
        i += 1;
    }
    panic!("every built-in has a priority")
}

/// The features of one text.
#[derive(Default)]
struct Features {
    flags: u16,
    literals: u16,
    digits: u32,
    colons: u32,
    dots: u32,
    double_colon: bool,
    /// A card's digits: single spaces or dashes between groups of any size.
    card: u32,
    card_max: u32,
    card_sep: bool,
    /// A phone's digits: groups of at most five, any of ` .-()` between them; after a
    /// space, up to eight (`020 79460958`).
    group: u32,
    group_sep: u8,
    phone: u32,
    phone_max: u32,
}

impl Features {
    #[inline]
    fn end_group(&mut self) {
        if self.group > 0 {
            if self.group <= 5 || (self.group <= 8 && self.group_sep == b' ') {
                self.phone += self.group;
                self.phone_max = self.phone_max.max(self.phone);
            } else {
                self.phone = 0;
            }
            self.group = 0;
        }
    }

    /// A byte that belongs to no number: every run ends.
    #[inline]
    fn plain(&mut self) {
        self.end_group();
        self.phone = 0;
        self.group_sep = 0;
        self.card_max = self.card_max.max(self.card);
        self.card = 0;
        self.card_sep = false;
    }

    fn of(text: &[u8]) -> Features {
        let mut f = Features::default();
        let n = text.len();
        let mut i = 0;
        while i < n {
            let b = text[i];
            let c = CLASS[usize::from(b)];
            if c == 0 {
                f.plain();
                i += 1;
                while i < n && CLASS[usize::from(text[i])] == 0 {
                    i += 1;
                }
                continue;
            }
            f.flags |= c;
            if c & C_DIGIT != 0 {
                f.digits += 1;
                f.card += 1;
                f.card_sep = false;
                f.group += 1;
                if i >= 3
                    && text[i - 1].is_ascii_digit()
                    && text[i - 2].is_ascii_uppercase()
                    && text[i - 3].is_ascii_uppercase()
                {
                    f.literals |= L_IBAN;
                }
            } else {
                f.end_group();
                if c & (C_SPACE | C_DOT | C_DASH | C_PAREN) != 0 {
                    f.group_sep = b;
                } else {
                    f.phone = 0;
                    f.group_sep = 0;
                }
                f.card_max = f.card_max.max(f.card);
                if c & (C_SPACE | C_DASH) != 0
                    && !f.card_sep
                    && i > 0
                    && text[i - 1].is_ascii_digit()
                {
                    f.card_sep = true;
                } else {
                    f.card = 0;
                    f.card_sep = false;
                }
                if c & C_COLON != 0 {
                    f.colons += 1;
                    f.double_colon |= i > 0 && text[i - 1] == b':';
                }
                f.dots += u32::from(c & C_DOT != 0);
                if c & C_TRIGGER != 0 {
                    f.literals |= literal(window(text, i), b);
                }
            }
            i += 1;
        }
        f.end_group();
        f.card_max = f.card_max.max(f.card);
        f
    }
}

impl Prefilter {
    pub(crate) fn may_match(&self, text: &[u8]) -> bool {
        if self.always || text.len() > PREFILTER_MAX {
            return true;
        }
        let f = Features::of(text);
        let len = text.len();
        let has = |c: u16| f.flags & c != 0;
        let seen = |l: u16| f.literals & l != 0;
        let on = |b: Builtin, yes: bool| if yes { bit(b) } else { 0 };
        let possible = on(Builtin::Email, has(C_AT))
            | on(
                Builtin::Phone,
                (has(C_PLUS) && f.digits >= 8) || f.phone_max >= 9,
            )
            | on(Builtin::Ssn, f.phone_max >= 9 && has(C_DASH))
            | on(Builtin::CreditCard, f.card_max >= 13)
            | on(Builtin::Iban, seen(L_IBAN) && f.digits >= 8 && len >= 15)
            | on(Builtin::Ipv4, f.digits >= 4 && f.dots >= 3)
            | on(Builtin::Ipv6, f.double_colon || f.colons >= 6)
            | on(Builtin::AwsAccessKey, seen(L_AWS) && len >= 20)
            | on(Builtin::AwsSecretKey, seen(L_KEY) && len >= 40)
            | on(Builtin::Password, seen(L_KEY))
            | on(Builtin::GithubToken, seen(L_GITHUB) && len >= 40)
            | on(Builtin::GitlabToken, seen(L_GITLAB) && len >= 25)
            | on(Builtin::SlackToken, seen(L_SLACK) && len >= 20)
            | on(Builtin::StripeKey, seen(L_STRIPE) && len >= 32)
            | on(Builtin::PrivateKey, seen(L_PEM) && len >= 27)
            | on(Builtin::Jwt, seen(L_JWT) && f.dots >= 2 && len >= 20);
        possible & self.need != 0
    }
}
