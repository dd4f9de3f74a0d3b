//! The classification cache trusts the shape lexer: texts of one shape share one
//! classification. These properties check that trust against the real parser, with literal
//! values chosen to look like SQL (quotes, semicolons, comments, keywords, table names).

use portcullis_proxy_pg::classify::{Classified, classify};
use portcullis_proxy_pg::shape::shape;
use proptest::prelude::*;

const TEMPLATES: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = {n}",
    "select * from customers where email = {s} and id > {n}",
    "SELECT c.name, o.total FROM customers c JOIN orders o ON o.cid = c.id WHERE o.total > {n} AND c.name LIKE {s}",
    "update customers set name = {s} where id = {n}",
    "UPDATE customers SET plan = {s}",
    "delete from customers where id in ({n}, {n}, {n})",
    "insert into audit_notes (id, note) values ({n}, {s}), ({n}, {s})",
    "with recent as (select * from orders where total > {n}) select count(*) from recent where note <> {s}",
    "select pg_read_file({s}), {n}",
    "SELECT {s} AS label, {n}::numeric FROM secrets WHERE k = {s}",
    "values ({n}, {s})",
    "select * from t where a = {n}.{n} or b = .{n} or c = {n}e{n}",
];

fn string_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ,;()*=<>.-]{0,24}",
        Just("'; DELETE FROM customers; --".to_string()),
        Just(" FROM secrets ".to_string()),
        Just("/* x */".to_string()),
        Just("$$".to_string()),
        Just("\" or 1=1".to_string()),
    ]
    .prop_map(|s| format!("'{}'", s.replace('\'', "''")))
}

fn number_literal() -> impl Strategy<Value = String> {
    "[0-9]{1,12}"
}

fn fill(template: &str, strings: &[String], numbers: &[String]) -> String {
    let mut out = String::new();
    let (mut si, mut ni) = (0, 0);
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        if rest[at..].starts_with("{s}") {
            out.push_str(&strings[si % strings.len()]);
            si += 1;
        } else {
            out.push_str(&numbers[ni % numbers.len()]);
            ni += 1;
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

fn facts(c: &[Classified]) -> Vec<String> {
    c.iter()
        .map(|s| format!("{:?} {:?} {:?}", s.statement, s.copy, s.outputs))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn texts_of_one_shape_are_classified_alike(
        template in prop::sample::select(TEMPLATES),
        strings_a in prop::collection::vec(string_literal(), 4),
        strings_b in prop::collection::vec(string_literal(), 4),
        numbers_a in prop::collection::vec(number_literal(), 6),
        numbers_b in prop::collection::vec(number_literal(), 6),
    ) {
        let a = fill(template, &strings_a, &numbers_a);
        let b = fill(template, &strings_b, &numbers_b);
        let (Some(sa), Some(sb)) = (shape(&a), shape(&b)) else {
            return Ok(());
        };
        prop_assert_eq!(&sa.key, &sb.key);
        let (ca, cb) = (classify(&a), classify(&b));
        match (ca, cb) {
            (Ok(ca), Ok(cb)) => prop_assert_eq!(facts(&ca), facts(&cb), "{} / {}", a, b),
            (Err(_), Err(_)) => {}
            (ca, cb) => prop_assert!(false, "{a} -> {ca:?}, {b} -> {cb:?}"),
        }
        // The normalised form keeps no value.
        for literal in strings_a.iter().filter(|s| s.len() > 4) {
            prop_assert!(!sa.normalized.contains(literal.as_str()), "{}", sa.normalized);
        }
    }

    #[test]
    fn the_lexer_never_panics(text in "\\PC{0,80}") {
        let _ = shape(&text);
    }
}
