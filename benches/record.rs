//! Recording costs: encoding a record into the chain (JSON + SHA-256) on
//! the recorder's thread, and checking a chain (`gatehouse verify`).
//!
//! cargo bench --bench record -- --warm-up-time 1 --measurement-time 3

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse::record::{verify_reader, Chain};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let statement = json!({
        "n": 17, "protocol": "extended", "sql": "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "class": "read", "decision": "allow", "params": ["48213"],
    });
    let result = json!({ "n": 17, "duration_us": 85, "tag": "SELECT 1", "rows": 1, "columns": ["abalance"] });
    g.throughput(Throughput::Elements(1));
    let mut chain = Chain::default();
    g.bench_function("encode_statement", |b| {
        b.iter(|| black_box(chain.line(1_764_150_000_000_000, "statement", statement.clone())))
    });
    g.bench_function("encode_result", |b| {
        b.iter(|| black_box(chain.line(1_764_150_000_000_000, "result", result.clone())))
    });
    let mut file = Vec::new();
    let mut c2 = Chain::default();
    for i in 0..10_000u64 {
        let kind = if i % 2 == 0 { "statement" } else { "result" };
        let v = if i % 2 == 0 { statement.clone() } else { result.clone() };
        file.extend(c2.line(i, kind, v));
    }
    let n = c2.seq();
    file.extend(c2.line(10_000, "seal", json!({ "records": n })));
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("verify_10k_records", |b| {
        b.iter(|| {
            let r = verify_reader(Path::new("bench.ghrec"), &file[..], false);
            assert!(r.ok());
            black_box(r)
        })
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
