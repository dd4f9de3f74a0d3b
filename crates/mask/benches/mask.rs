//! Masking throughput with the default profile (`pii` + `secrets`) over realistic JSON
//! documents of 1 KiB, 64 KiB and 1 MiB: records of names, ids, timestamps, amounts, UUIDs,
//! versions, order numbers, digests and prose. `clean` documents hold nothing sensitive;
//! `dirty` ones have about 1% of their fields replaced by an email, phone, card, SSN, IBAN,
//! IP address or token.
//!
//! Three entry points: `mask_text` on the serialized document (a tool result's text),
//! `mask_json` on the parsed value (structured content; each iteration masks a fresh clone,
//! the clone not timed), and `scan_json` (tool-call arguments). Throughput is the serialized
//! size in bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use portcullis_mask::{Profile, ProfileSpec, Report};
use serde_json::{Value, json};

/// xorshift64*: deterministic documents without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
}

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const STATUS: [&str; 4] = ["paid", "pending", "refunded", "failed"];
const CURRENCY: [&str; 3] = ["USD", "EUR", "GBP"];
const CITY: [&str; 4] = ["London", "Zürich", "São Paulo", "Tokyo"];
const PROSE: [&str; 6] = [
    "Customer asked to split the shipment; second parcel leaves Tuesday.",
    "Refund approved by the team lead after review of the order history.",
    "Note: the invoice was re-issued with the corrected VAT rate (20%).",
    "Delivery attempted twice, left at the front desk. Signed by reception.",
    "Upgraded plan to Pro at 2024-03-01 12:00 UTC, prorated credit applied.",
    "Ticket merged into the parent incident; see the linked runbook for steps.",
];

/// A sensitive value for a dirty field.
fn sensitive(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => format!("{}.{}@example.com", rng.pick(&FIRST), rng.pick(&LAST)).to_lowercase(),
        1 => "+1 (415) 555-0132".to_string(),
        2 => "4111 1111 1111 1111".to_string(),
        3 => "123-45-6789".to_string(),
        4 => "GB82 WEST 1234 5698 7654 32".to_string(),
        5 => "10.20.30.40".to_string(),
        6 => "AKIAIOSFODNN7EXAMPLE".to_string(),
        _ => format!("contact {}@example.org for access", rng.pick(&LAST)).to_lowercase(),
    }
}

fn record(rng: &mut Rng, i: u64) -> Value {
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(3),
        rng.hex(3),
        rng.hex(12)
    );
    let ts = format!(
        "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    );
    json!({
        "id": uuid,
        "seq": i,
        "customer": {
            "name": format!("{} {}", rng.pick(&FIRST), rng.pick(&LAST)),
            "city": rng.pick(&CITY),
            "tier": rng.below(4),
        },
        "order": format!("ORD-2024-{:06}", rng.below(1_000_000)),
        "created_at": ts,
        "epoch_ms": 1_700_000_000_000u64 + rng.below(100_000_000_000),
        "amount": (rng.below(1_000_000) as f64) / 100.0,
        "currency": rng.pick(&CURRENCY),
        "status": rng.pick(&STATUS),
        "items": [
            {"sku": format!("SKU-{:05}", rng.below(100_000)), "qty": 1 + rng.below(5)},
            {"sku": format!("SKU-{:05}", rng.below(100_000)), "qty": 1 + rng.below(5)},
        ],
        "client": format!("portcullis-sdk/{}.{}.{}", rng.below(3), rng.below(20), rng.below(50)),
        "digest": rng.hex(40),
        "note": rng.pick(&PROSE),
        "verified": rng.below(2) == 0,
    })
}

/// Every string field of the records, as paths into a record, for dirtying.
const DIRTY_FIELDS: [&str; 5] = ["note", "order", "client", "status", "currency"];

/// A document of about `size` serialized bytes: `{"data": [records…]}`. Dirty documents have
/// one sensitive value per 100 fields (a record has about 20).
fn document(size: usize, dirty: bool, seed: u64) -> Value {
    let mut rng = Rng(seed);
    let mut records = Vec::new();
    let mut bytes = 20;
    // Start one record short of the first dirty field, so even 1 KiB has one.
    let mut fields = 80;
    let mut i = 0;
    while bytes < size {
        let mut r = record(&mut rng, i);
        fields += 20;
        if dirty && fields >= 100 {
            fields -= 100;
            let field = DIRTY_FIELDS[rng.below(DIRTY_FIELDS.len() as u64) as usize];
            r[field] = Value::String(sensitive(&mut rng));
        }
        bytes += serde_json::to_string(&r).unwrap().len() + 1;
        records.push(r);
        i += 1;
    }
    // Trim a small document's last record to stay near the size asked for.
    if size < 4096 && records.len() > 1 && bytes > size + size / 4 {
        records.pop();
    }
    json!({ "data": records })
}

fn profile() -> Profile {
    Profile::compile(&ProfileSpec {
        detectors: vec!["pii".into(), "secrets".into()],
        ..ProfileSpec::default()
    })
    .expect("the default profile compiles")
}

fn bench(c: &mut Criterion) {
    let profile = profile();
    let sizes = [(1usize << 10, "1KB"), (64 << 10, "64KB"), (1 << 20, "1MB")];
    for (kind, dirty) in [("clean", false), ("dirty", true)] {
        for (size, label) in sizes {
            let doc = document(size, dirty, 0x9e37_79b9_7f4a_7c15 ^ size as u64);
            let text = serde_json::to_string(&doc).unwrap();
            let mut probe = Report::default();
            profile.scan_text(&text, "$", &mut probe);
            assert_eq!(probe.is_empty(), !dirty, "{kind} {label}: {probe:?}");

            let mut g = c.benchmark_group(format!("{kind}/{label}"));
            g.throughput(Throughput::Bytes(text.len() as u64));
            if size >= 1 << 20 {
                g.sample_size(10);
            }
            g.bench_function("mask_text", |b| {
                b.iter(|| {
                    let mut report = Report::default();
                    black_box(profile.mask_text(black_box(&text), "$", &mut report));
                    report
                })
            });
            g.bench_function("mask_json", |b| {
                b.iter_batched(
                    || doc.clone(),
                    |mut value| {
                        let mut report = Report::default();
                        profile.mask_json(&mut value, "$", &mut report);
                        (value, report)
                    },
                    BatchSize::LargeInput,
                )
            });
            g.bench_function("scan_json", |b| {
                b.iter(|| {
                    let mut report = Report::default();
                    profile.scan_json(black_box(&doc), "$", &mut report);
                    report
                })
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
