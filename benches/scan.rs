//! Secret scanning throughput on row-like data with the built-in rules.
//!
//! `cargo bench --bench scan`

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use gatehouse::proxy::pg::mask_frame;
use gatehouse::scan::{assemble, values::find_in_values, Engine, Finding, Hit, Rule};
use sha2::{Digest, Sha256};

/// A 64 KiB batch of DataRow frames of ordinary data: ids, md5 hex, names,
/// e-mail addresses, timestamps, prose, JSON.
fn ordinary_rows(target: usize) -> Vec<u8> {
    let words = [
        "alpha", "river", "stone", "market", "orange", "window", "signal", "harbor", "copper", "meadow",
    ];
    let mut out = Vec::with_capacity(target + 512);
    let mut i: u64 = 0;
    while out.len() < target {
        i += 1;
        let h = format!(
            "{:016x}{:016x}",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        );
        let name = format!("{} {}", words[(i % 10) as usize], words[(i / 10 % 10) as usize]);
        let email = format!("{}.{}@example.com", words[(i % 7) as usize], i);
        let ts = format!("2026-11-{:02} 12:{:02}:{:02}+00", i % 28 + 1, i % 60, (i * 7) % 60);
        let prose = format!(
            "The {} near the {} was quiet on day {} of the season.",
            words[(i % 10) as usize],
            words[((i + 3) % 10) as usize],
            i
        );
        let json = format!(
            r#"{{"id":{i},"name":"{name}","tags":["{}","{}"],"score":{}}}"#,
            words[(i % 4) as usize],
            words[(i % 9) as usize],
            i % 1000
        );
        let id = i.to_string();
        let cols: [&[u8]; 7] = [
            id.as_bytes(),
            h.as_bytes(),
            name.as_bytes(),
            email.as_bytes(),
            ts.as_bytes(),
            prose.as_bytes(),
            json.as_bytes(),
        ];
        let body_len: usize = 2 + cols.iter().map(|c| 4 + c.len()).sum::<usize>();
        out.push(b'D');
        out.extend_from_slice(&((body_len + 4) as u32).to_be_bytes());
        out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            out.extend_from_slice(&(c.len() as i32).to_be_bytes());
            out.extend_from_slice(c);
        }
    }
    out
}

/// Values as a table of bookings returns them, one value per line: ids,
/// timestamps at midnight, amounts with cents, currency codes.
fn ledger_rows(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 128);
    let mut i: u64 = 0;
    while out.len() < target {
        i += 1;
        out.extend_from_slice(
            format!(
                "{i}\n2026-{:02}-{:02} 00:00:00+00\n{}.00\n{}.50\nEUR\n",
                i % 12 + 1,
                i % 28 + 1,
                i * 100,
                i % 1000
            )
            .as_bytes(),
        );
    }
    out
}

/// sysbench's `c` column as its range reads return it, one value per line
/// (as `find_in_values` lays values out): ten groups of eleven digits
/// joined by dashes. Long digit runs are what card-number and key-shaped
/// patterns look at first.
fn digit_group_values(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 128);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while out.len() < target {
        for g in 0..10 {
            if g > 0 {
                out.push(b'-');
            }
            for _ in 0..11 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.push(b'0' + (x % 10) as u8);
            }
        }
        out.push(b'\n');
    }
    out
}

/// `rows` DataRow frames shaped like the load harness's `gh_load_secrets`
/// (8 columns; an AWS access key ID, an AWS secret assigned to its name and
/// a password in a PostgreSQL URI, among plain columns): 3 secrets a row.
fn harness_secret_rows(rows: u64) -> Vec<u8> {
    let hex = |s: String| hex::encode(Sha256::digest(s.as_bytes()));
    let b64 = |s: String| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
    };
    let mut out = Vec::new();
    for g in 1..=rows {
        let cols = [
            g.to_string(),
            format!("user {g}"),
            format!("user{g}@example.com"),
            format!("AKIA{}", hex(g.to_string())[..16].to_uppercase()),
            format!("aws_secret_access_key = {}", &b64(g.to_string())[..40]),
            format!("postgres://app:{}@db{g}.internal:5432/app", &hex(format!("p{g}"))[..14]),
            format!("rotated on 2024-03-{:02}, ticket OPS-{}", g % 28 + 1, g * 7 % 10000),
            hex(g.to_string()).repeat(2),
        ];
        let body_len: usize = 2 + cols.iter().map(|c| 4 + c.len()).sum::<usize>();
        out.push(b'D');
        out.extend_from_slice(&((body_len + 4) as u32).to_be_bytes());
        out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in &cols {
            out.extend_from_slice(&(c.len() as i32).to_be_bytes());
            out.extend_from_slice(c.as_bytes());
        }
    }
    out
}

/// What the PostgreSQL relay does with a batch of server messages: every
/// value found, scanned in one pass, confirmed, and each row with a secret
/// re-framed with its masks. Returns the masked values.
fn mask_batch(engine: &Engine, buf: &[u8], out: &mut Vec<u8>) -> usize {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 5 <= buf.len() {
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        frames.push((at, at + 1 + len));
        at += 1 + len;
    }
    let mut spans = Vec::new();
    let mut values = Vec::new();
    for (i, &(s, e)) in frames.iter().enumerate() {
        spans.clear();
        gatehouse::wire::pg::value_spans(&buf[s..e], &mut spans).expect("well-formed");
        values.extend(
            spans
                .iter()
                .filter(|(a, b)| b - a >= engine.min_len)
                .map(|&(a, b)| (s + a, s + b, i)),
        );
    }
    let (mut seg, mut ends, mut hits, mut found) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    find_in_values(engine, buf, &values, &mut seg, &mut ends, &mut hits, &mut found, None).expect("scan");
    found.sort_by_key(|(i, f): &(usize, Finding)| (*i, f.start));
    out.clear();
    let mut masked = 0;
    let mut k = 0;
    for (i, &(s, e)) in frames.iter().enumerate() {
        let from = k;
        while k < found.len() && found[k].0 == i {
            k += 1;
        }
        if from == k {
            out.extend_from_slice(&buf[s..e]);
            continue;
        }
        let mut fs: Vec<Finding> = found[from..k].iter().map(|(_, f)| *f).collect();
        mask_frame(engine, &buf[s..e], s, &mut fs, &mut spans, out, |_| masked += 1);
    }
    masked
}

/// One Hyperscan pass of `engine` over `data` (hits gathered, not
/// confirmed), as bench case `name`.
fn scan_case(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, engine: &Engine, data: &[u8]) {
    let mut hits: Vec<Hit> = Vec::new();
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            hits.clear();
            engine.scan(black_box(data), &mut hits).expect("scan");
            hits.len()
        })
    });
}

fn bench(c: &mut Criterion) {
    let rules = assemble(None, &[], Vec::new()).expect("built-in rules");
    let engine = Engine::new(&rules, [0; 32]).expect("rules compile");
    let rows = ordinary_rows(64 * 1024);
    let plain: Vec<u8> = (0..64 * 1024).map(|i| b"0123456789 ,.;"[i % 14]).collect();
    let mut g = c.benchmark_group("scan");
    scan_case(
        &mut g,
        &format!("ordinary_rows_64k_{}_rules", engine.rule_count()),
        &engine,
        &rows,
    );
    // The same with every rule's own prefilter left out: what Hyperscan
    // costs when a rule's pattern starts with a short common literal (the
    // Salesforce token's `00`, in every timestamp's `+00`).
    let without: Vec<_> = rules.iter().cloned().map(|r| Rule { prefilter: None, ..r }).collect();
    let engine_without = Engine::new(&without, [0; 32]).expect("rules compile");
    scan_case(
        &mut g,
        "ordinary_rows_64k_without_rule_prefilters",
        &engine_without,
        &rows,
    );
    let ledger = ledger_rows(64 * 1024);
    scan_case(&mut g, "ledger_rows_64k", &engine, &ledger);
    scan_case(
        &mut g,
        "ledger_rows_64k_without_rule_prefilters",
        &engine_without,
        &ledger,
    );
    scan_case(&mut g, "no_candidate_literals_64k", &engine, &plain);
    let digits = digit_group_values(64 * 1024);
    scan_case(&mut g, "digit_group_values_64k", &engine, &digits);
    // One point select's value: what a call costs before its bytes do.
    scan_case(&mut g, "one_value_120b", &engine, &digits[..120]);
    g.throughput(Throughput::Bytes(rows.len() as u64));
    g.bench_function("find_confirmed_ordinary_rows_64k", |b| {
        b.iter(|| engine.find(black_box(&rows)).expect("find").len())
    });
    // Masking: rows where every 16th carries a secret (found, confirmed,
    // replaced by its mask).
    let mut secret_rows = String::new();
    let text = String::from_utf8_lossy(&rows).into_owned();
    for (i, line) in text.lines().enumerate() {
        secret_rows.push_str(line);
        if i % 16 == 0 {
            secret_rows.push_str(" ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789");
        }
        secret_rows.push('\n');
    }
    g.throughput(Throughput::Bytes(secret_rows.len() as u64));
    g.bench_function("mask_rows_with_secrets_64k", |b| {
        b.iter(|| engine.mask_text(black_box(&secret_rows)).len())
    });
    g.finish();

    // The load harness's wide-rows-secrets batch: 100 rows, 300 secrets.
    let batch = harness_secret_rows(100);
    let mut out = Vec::with_capacity(batch.len());
    assert_eq!(
        mask_batch(&engine, &batch, &mut out),
        300,
        "every secret of the batch is masked"
    );
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(300));
    g.bench_function("wide_rows_100x8_300_secrets", |b| {
        b.iter(|| mask_batch(&engine, black_box(&batch), &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
