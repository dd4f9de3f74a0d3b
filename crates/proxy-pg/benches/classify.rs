//! How long classifying a statement takes: a cache miss (three parses: tree, normalised
//! text, fingerprint), `pg_query::parse` alone for comparison, and a cache hit.
//!
//! `cargo bench -p portcullis-proxy-pg --bench classify`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pg_query::ParserOptions;
use portcullis_proxy_pg::classify::{Classifier, classify};

fn bench(c: &mut Criterion) {
    let cases = [
        (
            "pgbench",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345",
        ),
        (
            "cte+3-way join",
            "WITH recent AS (SELECT customer_id, sum(amount) AS total FROM orders \
             WHERE created_at > now() - interval '7 days' GROUP BY customer_id) \
             SELECT c.name, r.total, a.city FROM customers c \
             JOIN recent r ON r.customer_id = c.id \
             JOIN addresses a ON a.customer_id = c.id WHERE c.region = 'eu' \
             ORDER BY r.total DESC LIMIT 10",
        ),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, sql) in cases {
        group.bench_function(format!("{name}/miss"), |b| {
            b.iter(|| classify(black_box(sql)).unwrap())
        });
        group.bench_function(format!("{name}/pg_query::parse alone"), |b| {
            b.iter(|| pg_query::parse(black_box(sql), ParserOptions::DEFAULT).unwrap())
        });
        let classifier = Classifier::new();
        classifier.classify(sql).unwrap();
        group.bench_function(format!("{name}/hit"), |b| {
            b.iter(|| classifier.classify(black_box(sql)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
