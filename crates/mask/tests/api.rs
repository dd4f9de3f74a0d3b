//! The public API: compiling profiles, styles, custom detectors and deny-lists, JSON walking,
//! Unicode around matches, overlapping candidates, and the report.

use std::collections::BTreeMap;

use portcullis_mask::{
    CustomDetector, MAX_FINDINGS, MaskError, Profile, ProfileSpec, Report, Style, Validator,
};
use serde_json::json;

fn spec(detectors: &[&str]) -> ProfileSpec {
    ProfileSpec {
        detectors: detectors.iter().map(|s| s.to_string()).collect(),
        ..ProfileSpec::default()
    }
}

fn compile(spec: &ProfileSpec) -> Profile {
    Profile::compile(spec).expect("compiles")
}

fn mask(p: &Profile, text: &str) -> String {
    p.mask_text(text, "$", &mut Report::default())
        .unwrap_or_else(|| text.to_string())
}

fn custom(name: &str, pattern: &str, validator: Option<Validator>) -> CustomDetector {
    CustomDetector {
        name: name.into(),
        pattern: pattern.into(),
        validator,
        style: None,
    }
}

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn profiles_are_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Profile>();
    let p = std::sync::Arc::new(compile(&spec(&["all"])));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || mask(&p, &format!("user{i}@example.com")))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "[EMAIL]");
    }
}

#[test]
fn compile_errors_name_the_entry_and_never_a_secret() {
    let err = Profile::compile(&spec(&["emails"])).unwrap_err();
    assert!(
        matches!(err, MaskError::UnknownDetector(ref n) if n == "emails"),
        "{err}"
    );

    let mut s = spec(&["pii"]);
    s.custom.push(custom("employee_id", "EMP-(", None));
    let err = Profile::compile(&s).unwrap_err();
    assert!(
        matches!(err, MaskError::BadPattern { ref detector, .. } if detector == "employee_id"),
        "{err}"
    );
    assert!(err.to_string().contains("employee_id"));

    for bad in ["Employee", "email", "pii", "field", "deny_list", "", "a-b"] {
        let mut s = spec(&[]);
        s.custom.push(custom(bad, "x", None));
        assert!(
            matches!(Profile::compile(&s), Err(MaskError::BadDetectorName(_))),
            "{bad:?}"
        );
    }
    let mut s = spec(&[]);
    s.custom.push(custom("dup", "x", None));
    s.custom.push(custom("dup", "y", None));
    assert!(matches!(
        Profile::compile(&s),
        Err(MaskError::BadDetectorName(_))
    ));

    let mut s = spec(&["pii"]);
    s.style = Style::Hash;
    assert!(matches!(
        Profile::compile(&s),
        Err(MaskError::MissingHmacKey)
    ));
    let mut s = spec(&["pii"]);
    s.styles.insert("email".into(), Style::Hash);
    s.hmac_key = Some(Vec::new());
    assert!(matches!(
        Profile::compile(&s),
        Err(MaskError::MissingHmacKey)
    ));

    let mut s = spec(&["pii"]);
    s.styles.insert("emial".into(), Style::Redact);
    assert!(matches!(
        Profile::compile(&s),
        Err(MaskError::UnknownDetector(_))
    ));

    let mut s = spec(&["pii"]);
    s.fields.push("a[".into());
    assert!(matches!(
        Profile::compile(&s),
        Err(MaskError::BadFieldGlob { .. })
    ));

    // The key and deny-listed values stay out of Debug output.
    let mut s = spec(&["pii"]);
    s.deny_list.push("Project Nightingale".into());
    s.hmac_key = Some(b"super-secret-key".to_vec());
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("Nightingale") && !shown.contains("super-secret"),
        "{shown}"
    );
}

#[test]
fn empty_profile_matches_nothing() {
    let p = compile(&spec(&[]));
    let mut r = Report::default();
    assert_eq!(p.mask_text("alice@example.com", "$", &mut r), None);
    assert!(r.is_empty());
}

#[test]
fn groups_select_detectors() {
    let pii = compile(&spec(&["pii"]));
    let secrets = compile(&spec(&["secrets"]));
    let text = "alice@example.com AKIAIOSFODNN7EXAMPLE";
    assert_eq!(mask(&pii, text), "[EMAIL] AKIAIOSFODNN7EXAMPLE");
    assert_eq!(mask(&secrets, text), "alice@example.com [AWS_ACCESS_KEY]");
    let one = compile(&spec(&["ssn"]));
    assert_eq!(
        mask(&one, "123-45-6789 alice@example.com"),
        "[SSN] alice@example.com"
    );
}

#[test]
fn styles() {
    let mut s = spec(&["pii", "secrets"]);
    s.style = Style::Partial {
        keep: Style::DEFAULT_KEEP,
    };
    let p = compile(&s);
    assert_eq!(mask(&p, "4111 1111 1111 1111"), "**** **** **** 1111");
    assert_eq!(mask(&p, "ssn 123-45-6789"), "ssn ***-**-6789");
    assert_eq!(mask(&p, "alice@example.com"), "*****@example.com");
    assert_eq!(mask(&p, "(415) 555-0132"), "(***) ***-0132");
    // Never more than half of a short value.
    assert_eq!(mask(&p, "password=abcdef"), "password=***def");
    // A private key has no meaningful tail.
    assert_eq!(
        mask(
            &p,
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
        ),
        "[PRIVATE_KEY]"
    );

    // Hash: stable, keyed, normalised, per detector.
    let mut s = spec(&["pii"]);
    s.styles.insert("credit_card".into(), Style::Hash);
    s.styles.insert("email".into(), Style::Hash);
    s.hmac_key = Some(KEY.to_vec());
    let p = compile(&s);
    let a = mask(&p, "4111 1111 1111 1111");
    let b = mask(&p, "4111-1111-1111-1111");
    assert!(a.starts_with("tok_") && a.len() == 20, "{a}");
    assert_eq!(a, b);
    assert_eq!(mask(&p, "Alice@Example.com"), mask(&p, "alice@example.com"));
    assert_ne!(mask(&p, "alice@example.com"), mask(&p, "bob@example.com"));
    assert_eq!(mask(&p, "123-45-6789"), "[SSN]");
    let mut other = s.clone();
    other.hmac_key = Some(b"another key, another token space".to_vec());
    assert_ne!(mask(&compile(&other), "4111 1111 1111 1111"), a);

    // A detector's own entry wins over its group's; a custom detector's style over both.
    let mut s = spec(&["all"]);
    s.styles.insert("pii".into(), Style::Partial { keep: 2 });
    s.styles.insert("ssn".into(), Style::Redact);
    s.custom.push(CustomDetector {
        style: Some(Style::Partial { keep: 3 }),
        ..custom("ticket", r"TCK-[0-9]{6}", None)
    });
    let p = compile(&s);
    assert_eq!(mask(&p, "123-45-6789"), "[SSN]");
    assert_eq!(mask(&p, "10.0.0.1"), "**.*.0.1");
    assert_eq!(mask(&p, "TCK-123456"), "***-***456");
    assert_eq!(mask(&p, "AKIAIOSFODNN7EXAMPLE"), "[AWS_ACCESS_KEY]");
}

#[test]
fn custom_detectors_and_validators() {
    let mut s = spec(&[]);
    s.custom
        .push(custom("employee_id", r"\bEMP-[0-9]{5}\b", None));
    s.custom.push(custom(
        "loyalty_card",
        r"\bLC[0-9]{10}\b",
        Some(Validator::Luhn),
    ));
    s.custom.push(custom(
        "bank_ref",
        r"\b[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}\b",
        Some(Validator::Mod97),
    ));
    let p = compile(&s);
    let mut r = Report::default();
    let out = p
        .mask_text(
            "EMP-12345 LC4111111110 LC4111111112 GB82WEST12345698765432 GB83WEST12345698765432",
            "$.x",
            &mut r,
        )
        .unwrap();
    assert_eq!(
        out,
        "[EMPLOYEE_ID] [LOYALTY_CARD] LC4111111112 [BANK_REF] GB83WEST12345698765432"
    );
    assert_eq!(
        r.detectors(),
        vec!["bank_ref", "employee_id", "loyalty_card"]
    );
    assert_eq!(r.findings()[0].path, "$.x");
}

#[test]
fn deny_list_is_exact_and_respects_words() {
    let mut s = spec(&[]);
    s.deny_list = vec![
        "Acme".into(),
        "Project Nightingale".into(),
        "a+b=c".into(),
        String::new(),
    ];
    let p = compile(&s);
    assert_eq!(
        mask(
            &p,
            "Acme Corp, Acmeville, acme, Project Nightingale, x a+b=c y"
        ),
        "[DENY_LIST] Corp, Acmeville, acme, [DENY_LIST], x [DENY_LIST] y"
    );
}

#[test]
fn a_rejected_candidate_does_not_hide_an_overlapping_match() {
    // Same start: the custom pattern (tried first) fails its Luhn check on an SSN-shaped
    // value; the SSN detector, matching at the same byte, still gets it.
    let mut s = spec(&["ssn"]);
    s.custom.push(custom(
        "ref",
        r"[0-9]{3}-[0-9]{2}-[0-9]{4}",
        Some(Validator::Luhn),
    ));
    let p = compile(&s);
    assert_eq!(mask(&p, "id 123-45-6789 end"), "id [SSN] end");
    // And a valid custom match still wins the tie.
    assert_eq!(mask(&p, "id 123-45-6782 end"), "id [REF] end");

    // Later start: a rejected candidate swallowing a valid match of another detector.
    let mut s = spec(&["phone"]);
    s.custom.push(custom(
        "acct",
        r"ACCT:[0-9 ()+\-]{10,30}",
        Some(Validator::Luhn),
    ));
    let p = compile(&s);
    assert_eq!(
        mask(&p, "ACCT: (415) 555-0133"),
        "ACCT: [PHONE]",
        "the phone inside the rejected account candidate"
    );

    // Later start, same detector: a Luhn-failing run of card groups, then a valid card.
    let p = compile(&spec(&["credit_card"]));
    assert_eq!(
        mask(&p, "4111 1111 1111 1112 4111 1111 1111 1111"),
        "4111 1111 1111 1112 [CREDIT_CARD]"
    );
    // A card followed by more digits after a space is still found.
    assert_eq!(mask(&p, "4111 1111 1111 1111 2024"), "[CREDIT_CARD] 2024");
}

#[test]
fn unicode_around_matches() {
    let p = compile(&spec(&["pii", "secrets"]));
    assert_eq!(
        mask(&p, "Zürich — José: alice@example.com, 電話 415-555-0132。"),
        "Zürich — José: [EMAIL], 電話 [PHONE]。"
    );
    assert_eq!(
        mask(&p, "カード番号4111111111111111を確認"),
        "カード番号[CREDIT_CARD]を確認"
    );
    assert_eq!(mask(&p, "🙂10.0.0.1🙂"), "🙂[IPV4]🙂");
    let mut s = spec(&["pii"]);
    s.style = Style::Partial { keep: 4 };
    let p = compile(&s);
    assert_eq!(mask(&p, "é4111 1111 1111 1111é"), "é**** **** **** 1111é");
    // A custom pattern over non-ASCII text keeps char boundaries.
    let mut s = spec(&[]);
    s.custom.push(custom("name", r"Grüße\w*", None));
    s.style = Style::Partial { keep: 2 };
    let p = compile(&s);
    assert_eq!(mask(&p, "Viele Grüßeñ!"), "Viele ****eñ!");
}

#[test]
fn nothing_matched_means_none() {
    let p = compile(&spec(&["all"]));
    let mut r = Report::default();
    for text in [
        "",
        "plain words",
        "2024-03-01T12:34:56Z",
        "550e8400-e29b-41d4-a716-446655440000",
    ] {
        assert_eq!(p.mask_text(text, "$", &mut r), None, "{text}");
    }
    assert!(r.is_empty());
    p.scan_text("x alice@example.com y", "$.t", &mut r);
    assert_eq!(r.findings().len(), 1);
    assert_eq!(r.findings()[0].detector, "email");
    assert_eq!(r.findings()[0].path, "$.t");
}

#[test]
fn json_paths_numbers_and_in_place_masking() {
    let p = compile(&spec(&["pii", "secrets"]));
    let mut v = json!({
        "customer": {"email": "alice@example.com", "name": "Ada", "first name": "x@y.io"},
        "cards": [4111111111111111u64, "none", 42],
        "amount": 12.5,
        "notes": ["call (415) 555-0132 or (415) 555-0133"],
        "ok": true,
        "nothing": null
    });
    let mut r = Report::default();
    p.mask_json(&mut v, "$", &mut r);
    assert_eq!(
        v,
        json!({
            "customer": {"email": "[EMAIL]", "name": "Ada", "first name": "[EMAIL]"},
            "cards": ["[CREDIT_CARD]", "none", 42],
            "amount": 12.5,
            "notes": ["call [PHONE] or [PHONE]"],
            "ok": true,
            "nothing": null
        })
    );
    let found: Vec<(&str, &str, u32)> = r
        .findings()
        .iter()
        .map(|f| (f.detector.as_str(), f.path.as_str(), f.count))
        .collect();
    assert_eq!(
        found,
        vec![
            ("credit_card", "$.cards[0]", 1),
            ("email", "$.customer.email", 1),
            ("email", "$.customer[\"first name\"]", 1),
            ("phone", "$.notes[0]", 2),
        ]
    );

    // scan_json reports the same and changes nothing.
    let original = json!({"a": {"b": ["alice@example.com"]}, "c": 4111111111111111u64});
    let mut r = Report::default();
    p.scan_json(&original, "$.arguments", &mut r);
    assert_eq!(
        r.findings()
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        vec!["$.arguments.a.b[0]", "$.arguments.c"]
    );
}

#[test]
fn secret_key_names_mask_their_values_whole() {
    let p = compile(&spec(&["secrets"]));
    let mut v = json!({
        "db": {"password": "correct horse battery staple", "user": "app"},
        "apiKey": "k-123",
        "client_secret": 987654,
        "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "token": "ghp_a1B2c3D4e5a1B2c3D4e5a1B2c3D4e5F6g7H8",
        "password_hint": "blue",
        "max_tokens": 100,
        "secret": "${VAULT_SECRET}",
        "tokens": ["a", "b"]
    });
    let mut r = Report::default();
    p.mask_json(&mut v, "$", &mut r);
    assert_eq!(
        v,
        json!({
            "db": {"password": "[PASSWORD]", "user": "app"},
            "apiKey": "[PASSWORD]",
            "client_secret": "[PASSWORD]",
            "aws_secret_access_key": "[AWS_SECRET_KEY]",
            "token": "[GITHUB_TOKEN]",
            "password_hint": "blue",
            "max_tokens": 100,
            "secret": "${VAULT_SECRET}",
            "tokens": ["a", "b"]
        })
    );
}

#[test]
fn fields_mask_whole_values_by_key_or_path() {
    let mut s = spec(&["pii"]);
    s.fields = vec![
        "account_number".into(),
        "*.ssn".into(),
        "customer.card".into(),
        "secret_*".into(),
    ];
    let p = compile(&s);
    let mut v = json!({
        "account_number": 12345678,
        "Account_Number": "A-1",
        "ssn": "kept: a path glob needs a parent",
        "person": {"ssn": "078-05-1120", "name": "Ada"},
        "customer": {"card": {"pan": "x", "exp": "12/28"}, "email": "a@b.co"},
        "list": [{"account_number": null}, {"account_number": ""}],
        "secret_flags": [true, false],
        "secret_on": true
    });
    let mut r = Report::default();
    p.mask_json(&mut v, "$", &mut r);
    assert_eq!(
        v,
        json!({
            "account_number": "[FIELD]",
            "Account_Number": "[FIELD]",
            "ssn": "kept: a path glob needs a parent",
            "person": {"ssn": "[FIELD]", "name": "Ada"},
            "customer": {"card": "[FIELD]", "email": "[EMAIL]"},
            "list": [{"account_number": null}, {"account_number": ""}],
            "secret_flags": "[FIELD]",
            "secret_on": "[FIELD]"
        })
    );
    assert_eq!(r.detectors(), vec!["email", "field"]);
    assert!(
        r.findings()
            .iter()
            .any(|f| f.detector == "field" && f.path == "$.person.ssn")
    );

    // Array indexes are not part of the dotted path.
    let mut s = spec(&[]);
    s.fields = vec!["orders.card".into()];
    s.style = Style::Partial { keep: 4 };
    let p = compile(&s);
    let mut v = json!({"orders": [{"card": "4111 1111 1111 1111"}, {"card": 4111111111111111u64}]});
    let mut r = Report::default();
    p.mask_json(&mut v, "$", &mut r);
    assert_eq!(
        v,
        json!({"orders": [{"card": "**** **** **** 1111"}, {"card": "************1111"}]})
    );
    let mut r2 = Report::default();
    p.scan_json(&json!({"orders": [{"card": "4111"}]}), "$", &mut r2);
    assert_eq!(r2.findings()[0].path, "$.orders[0].card");
    assert_eq!(r2.findings()[0].detector, "field");

    // Field style: its own entry, else the profile's; Hash needs the key.
    let mut s = spec(&[]);
    s.fields = vec!["pan".into()];
    s.styles = BTreeMap::from([("field".to_string(), Style::Hash)]);
    s.hmac_key = Some(KEY.to_vec());
    let p = compile(&s);
    let mut a = json!({"pan": "4111"});
    let mut b = json!({"pan": 4111});
    p.mask_json(&mut a, "$", &mut Report::default());
    p.mask_json(&mut b, "$", &mut Report::default());
    assert_eq!(a, b);
    assert!(a["pan"].as_str().unwrap().starts_with("tok_"));
}

#[test]
fn keys_holding_data_are_renamed_and_never_shown() {
    let p = compile(&spec(&["pii"]));
    let mut v = json!({
        "alice@example.com": {"role": "admin"},
        "bob@example.com": {"role": "viewer"},
        "plain": 1
    });
    let mut r = Report::default();
    p.scan_json(&v, "$", &mut r);
    for f in r.findings() {
        assert!(!f.path.contains("example.com"), "{f:?}");
    }
    assert_eq!(r.findings()[0].path, "$[\"[EMAIL]\"]");
    let mut r = Report::default();
    p.mask_json(&mut v, "$", &mut r);
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| !k.contains("example.com")), "{keys:?}");
    assert!(
        v.get("[EMAIL]").is_some() && v.get("[EMAIL]#2").is_some(),
        "{v}"
    );
    assert_eq!(r.findings().len(), 2);
}

#[test]
fn report_is_capped_and_holds_no_values() {
    let p = compile(&spec(&["pii"]));
    let items: Vec<_> = (0..200)
        .map(|i| json!({"email": format!("user{i}@example.com")}))
        .collect();
    let v = json!(items);
    let mut r = Report::default();
    p.scan_json(&v, "$", &mut r);
    assert_eq!(r.findings().len(), MAX_FINDINGS);
    assert_eq!(r.overflow(), 200 - MAX_FINDINGS as u32);
    assert_eq!(r.total(), 200);
    assert_eq!(r.detectors(), vec!["email"]);
    let shown = format!("{r:?}");
    assert!(!shown.contains("example.com"), "{shown}");

    let mut merged = Report::default();
    merged.merge(r.clone());
    merged.merge(r);
    assert_eq!(merged.total(), 400);
}
