//! Each built-in detector on true positives and near misses, through the public API.

use portcullis_mask::{Profile, ProfileSpec, Report};

fn profile(detectors: &[&str]) -> Profile {
    Profile::compile(&ProfileSpec {
        detectors: detectors.iter().map(|s| s.to_string()).collect(),
        ..ProfileSpec::default()
    })
    .expect("compiles")
}

/// The masked text with the default profile (`pii` + `secrets`), and the detectors fired.
fn mask(text: &str) -> (String, Vec<String>) {
    let p = profile(&["pii", "secrets"]);
    let mut report = Report::default();
    let out = p
        .mask_text(text, "$", &mut report)
        .unwrap_or_else(|| text.to_string());
    (out, report.detectors())
}

#[track_caller]
fn finds(text: &str, detector: &str, masked: &str) {
    let (out, dets) = mask(text);
    assert_eq!(out, masked, "masking {text:?}");
    assert_eq!(dets, vec![detector.to_string()], "detectors for {text:?}");
}

#[track_caller]
fn clean(text: &str) {
    let (out, dets) = mask(text);
    assert!(
        dets.is_empty(),
        "{text:?} should be clean, got {dets:?}: {out:?}"
    );
    assert_eq!(out, text);
}

#[test]
fn email() {
    finds("mail alice@example.com now", "email", "mail [EMAIL] now");
    finds(
        "<bob.o'neil+tag@mail.example.co.uk>",
        "email",
        "<bob.o'[EMAIL]>",
    );
    finds(
        "end: x_y-z@sub-domain.example.org.",
        "email",
        "end: [EMAIL].",
    );
    clean("not an email: alice@localhost, @handle, a@b.c1");
    clean("user@ example.com");
}

#[test]
fn phone() {
    finds("call (415) 555-0132 today", "phone", "call [PHONE] today");
    finds("call 415-555-0132", "phone", "call [PHONE]");
    finds("call 415.555.0132.", "phone", "call [PHONE].");
    finds("tel:+1-415-555-0132", "phone", "tel:[PHONE]");
    finds("office +44 20 7946 0958", "phone", "office [PHONE]");
    finds("+14155550132", "phone", "[PHONE]");
    finds("ring 020 7946 0958", "phone", "ring [PHONE]");
    finds("appelez 01 23 45 67 89", "phone", "appelez [PHONE]");
    // Timestamps, dates, order numbers, versions, UUID pieces, amounts.
    clean("2024-03-01T12:34:56Z");
    clean("2024-03-01 12:34:56.789+01:00");
    clean("order ORD-415-555-0132 shipped");
    clean("ref 415-555-0132-77");
    clean("version 10.2.3 build 4155550132");
    clean("id 550e8400-e29b-41d4-a716-446655440000");
    clean("amount +1234.56 and +12345678");
    clean("epoch 1709294096");
    clean("123-456-7890"); // NANP area codes do not start with 1.
}

#[test]
fn ssn() {
    finds("ssn 123-45-6789.", "ssn", "ssn [SSN].");
    clean("000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000");
    clean("part 1123-45-6789 and 123-45-67890 and A-123-45-6789");
}

#[test]
fn credit_card() {
    finds(
        "card 4111 1111 1111 1111 exp",
        "credit_card",
        "card [CREDIT_CARD] exp",
    );
    finds("4111-1111-1111-1111", "credit_card", "[CREDIT_CARD]");
    finds("4111111111111111", "credit_card", "[CREDIT_CARD]");
    finds(
        "amex 3782 822463 10005",
        "credit_card",
        "amex [CREDIT_CARD]",
    );
    finds("mc 5555555555554444;", "credit_card", "mc [CREDIT_CARD];");
    finds("mc2 2223003122003222", "credit_card", "mc2 [CREDIT_CARD]");
    finds("disc 6011111111111117", "credit_card", "disc [CREDIT_CARD]");
    finds("jcb 3530111333300000", "credit_card", "jcb [CREDIT_CARD]");
    finds(
        "diners 36227206271667",
        "credit_card",
        "diners [CREDIT_CARD]",
    );
    finds("up 6200000000000005", "credit_card", "up [CREDIT_CARD]");
    // A card followed by a space and a short number: the card is still found.
    finds("4111 1111 1111 1111 12", "credit_card", "[CREDIT_CARD] 12");
    // Luhn failures, unknown issuers, wrong lengths, mixed separators.
    clean("4111 1111 1111 1112");
    clean("1234 5678 9012 3456");
    clean("9111111111111111");
    clean("4111-1111 1111-1111");
    clean("411111111111111"); // Visa has no 15-digit numbers.
    clean("ts 1709294096000 and 17092940960001");
    clean("uuid 41111111-1111-1111-1111-111111111111");
}

#[test]
fn iban() {
    finds("pay GB82WEST12345698765432 now", "iban", "pay [IBAN] now");
    finds(
        "pay GB82 WEST 1234 5698 7654 32 EUR",
        "iban",
        "pay [IBAN] EUR",
    );
    finds("DE89370400440532013000", "iban", "[IBAN]");
    finds("NL91ABNA0417164300", "iban", "[IBAN]");
    finds("FR1420041010050500013M02606", "iban", "[IBAN]");
    clean("GB83WEST12345698765432"); // bad check digits
    clean("GB82WEST1234569876543"); // too short for GB
    clean("GB82WEST123456987654321"); // too long for GB
    clean("ZZ82WEST12345698765432"); // no such country
    clean("GB82 WEST1234 5698 7654 32");
}

#[test]
fn ipv4() {
    finds("from 192.168.1.10:8080", "ipv4", "from [IPV4]:8080");
    finds("ip=10.0.0.1.", "ipv4", "ip=[IPV4].");
    finds("8.8.8.8/32", "ipv4", "[IPV4]/32");
    clean("256.1.1.1 and 1.2.3 and 01.2.3.4");
    clean("version 1.2.3.4.5 and v1.2.3.4");
    clean("app-1.2.3.4 build");
}

#[test]
fn ipv6() {
    finds("from 2001:db8::1 now", "ipv6", "from [IPV6] now");
    finds(
        "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443",
        "ipv6",
        "[[IPV6]]:443",
    );
    finds("fe80::1ff:fe23:4567:890a%eth0", "ipv6", "[IPV6]%eth0");
    finds("lo ::1", "ipv6", "lo [IPV6]");
    finds("mapped ::ffff:192.0.2.128", "ipv6", "mapped [IPV6]");
    finds("net 2001:db8:: done", "ipv6", "net [IPV6] done");
    clean("12:34:56 and 00:1a:2b:3c:4d:5e");
    clean("std::io::Result and a::b and Foo::Bar");
    clean("1:2:3:4:5:6:7:8:9");
}

#[test]
fn aws() {
    finds(
        "key AKIAIOSFODNN7EXAMPLE here",
        "aws_access_key",
        "key [AWS_ACCESS_KEY] here",
    );
    finds("ASIAY34FZKBOKMUTVV7A", "aws_access_key", "[AWS_ACCESS_KEY]");
    clean("AKIAIOSFODNN7EXAMPL and AKIAIOSFODNN7EXAMPLEX");
    finds(
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_key",
        "aws_secret_access_key = [AWS_SECRET_KEY]",
    );
    finds(
        r#"{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#,
        "aws_secret_key",
        r#"{"SecretAccessKey": "[AWS_SECRET_KEY]"}"#,
    );
}

#[test]
fn tokens() {
    let ghp = format!("ghp_{}", "a1B2c3D4e5".repeat(3) + "F6g7H8");
    finds(&format!("t {ghp} x"), "github_token", "t [GITHUB_TOKEN] x");
    let pat = format!("github_pat_11ABCDEFG0{}", "x".repeat(72));
    finds(&pat, "github_token", "[GITHUB_TOKEN]");
    clean("ghp_short and ghp_");
    finds(
        "glpat-abcdefghij1234567890 ok",
        "gitlab_token",
        "[GITLAB_TOKEN] ok",
    );
    clean("glpat-abc");
    finds(
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "slack_token",
        "[SLACK_TOKEN]",
    );
    clean("xoxb-1");
    finds(
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "stripe_key",
        "[STRIPE_KEY]",
    );
    finds(
        "sk_test_4eC39HqLyjWDarjtT1zdp7dcXYZ",
        "stripe_key",
        "[STRIPE_KEY]",
    );
    clean("sk_live_short pk_live_4eC39HqLyjWDarjtT1zdp7dc");
}

#[test]
fn private_key() {
    let pem =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc+/=\n-----END RSA PRIVATE KEY-----";
    finds(
        &format!("key:\n{pem}\nafter"),
        "private_key",
        "key:\n[PRIVATE_KEY]\nafter",
    );
    let escaped = r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----";
    finds(
        &format!("\"{escaped}\""),
        "private_key",
        "\"[PRIVATE_KEY]\"",
    );
    // Truncated: masked as far as the body goes.
    finds(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
        "private_key",
        "[PRIVATE_KEY]",
    );
    clean("-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----");
}

#[test]
fn jwt() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    finds(&format!("Bearer {jwt}"), "jwt", "Bearer [JWT]");
    finds(
        &format!("Authorization: Bearer {jwt}"),
        "jwt",
        "Authorization: Bearer [JWT]",
    );
    // `eyJ` that decodes to JSON without `alg`, or not JSON, or two segments only.
    clean("eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2ln");
    clean("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0");
    clean("eyJzzzzzzzzzzzzz.abc.def");
}

#[test]
fn password() {
    finds(
        "password=hunter22 next",
        "password",
        "password=[PASSWORD] next",
    );
    finds("DB_PASSWORD=s3cr3t!x", "password", "DB_PASSWORD=[PASSWORD]");
    finds("passwd: correcthorse", "password", "passwd: [PASSWORD]");
    finds("secret='a b c'", "password", "secret='[PASSWORD]'");
    finds(
        "https://x.test/?api_key=abcd1234&page=2",
        "password",
        "https://x.test/?api_key=[PASSWORD]&page=2",
    );
    finds(
        r#"{"password": "hunter22", "user": "bob"}"#,
        "password",
        r#"{"password": "[PASSWORD]", "user": "bob"}"#,
    );
    finds(
        r#"{\"client_secret\":\"abc123xyz\"}"#,
        "password",
        r#"{\"client_secret\":\"[PASSWORD]\"}"#,
    );
    finds("token: abcdef123456", "password", "token: [PASSWORD]");
    finds("x-api-key: 9f8e7d6c", "password", "x-api-key: [PASSWORD]");
    clean("password: use the reset link");
    clean("password=${DB_PASSWORD} token=<redacted> secret=[PASSWORD] passwd=****");
    clean("max_tokens=100 token_count=5 password_hint=blue");
    clean("password=");
    // A recognised secret as the value is reported as what it is.
    let ghp = format!("ghp_{}", "a1B2c3D4e5".repeat(3) + "F6g7H8");
    finds(
        &format!("token={ghp}"),
        "github_token",
        "token=[GITHUB_TOKEN]",
    );
}
