//! Statement classification cost: pgbench's TPC-B statements (as pgbench
//! sends them with `-M extended`/`prepared`, placeholders `$n`), cached (a
//! hash lookup) and uncached (parse, walk, fingerprint); and point selects
//! with their values inlined, every text new: shared through their shape
//! (found by the lexer for plain texts, by a normalising parse for texts
//! with a comment) against a full parse and walk of each.
//!
//! Targets: cached ≤ 5 µs, uncached ≤ 50 µs per statement.
//!
//! cargo bench --bench classify -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::sql::Classifier;

const TPCB: &[(&str, &str)] = &[
    ("select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"),
    (
        "update_accounts",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    ),
    (
        "update_tellers",
        "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
    ),
    (
        "update_branches",
        "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
    ),
    (
        "insert_history",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    ),
];

/// A larger statement for scale: CTEs, joins, a subquery, functions.
const REPORT: &str = "WITH recent AS (SELECT aid, sum(delta) AS d FROM pgbench_history \
     WHERE mtime > now() - interval '1 hour' GROUP BY aid), \
     top AS (SELECT aid FROM recent ORDER BY d DESC LIMIT 10) \
     SELECT a.aid, a.abalance, r.d, b.bbalance FROM pgbench_accounts a \
     JOIN recent r USING (aid) JOIN pgbench_branches b ON b.bid = a.bid \
     WHERE a.aid IN (SELECT aid FROM top) AND coalesce(a.filler, '') <> 'x' \
     ORDER BY r.d DESC";

fn bench(c: &mut Criterion) {
    let classifier = Classifier::new(&[]);
    let mut cached = c.benchmark_group("classify/cached");
    for (name, sql) in TPCB {
        let _ = classifier.classify(sql);
        cached.bench_function(*name, |b| b.iter(|| classifier.classify(black_box(sql))));
    }
    cached.finish();

    let mut uncached = c.benchmark_group("classify/uncached");
    for (name, sql) in TPCB.iter().chain([("report", REPORT)].iter()) {
        uncached.bench_function(*name, |b| b.iter(|| classifier.classify_uncached(black_box(sql))));
    }
    uncached.finish();

    // Values inlined (the simple protocol with client-side interpolation):
    // every text is new, texts of one shape share a classification.
    let mut inlined = c.benchmark_group("classify/inlined");
    let texts: Vec<String> = (0..100_000)
        .map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"))
        .collect();
    let mut next = texts.iter().cycle();
    inlined.bench_function("select/shape_shared", |b| {
        b.iter(|| classifier.classify(black_box(next.next().unwrap())))
    });
    // The same texts behind a comment are not plain (see `lexed_shape`):
    // their shapes come from libpg_query's normalisation, a parse each.
    let commented: Vec<String> = texts.iter().map(|t| format!("/* app */ {t}")).collect();
    let mut next = commented.iter().cycle();
    inlined.bench_function("select/shape_shared_by_parse", |b| {
        b.iter(|| classifier.classify(black_box(next.next().unwrap())))
    });
    let mut next = texts.iter().cycle();
    inlined.bench_function("select/full_parse", |b| {
        b.iter(|| classifier.classify_uncached(black_box(next.next().unwrap())))
    });
    inlined.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
