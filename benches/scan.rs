//! Secret scanning throughput on row-like data with the built-in rules.
//!
//! `cargo bench --bench scan`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gatehouse::scan::{assemble, Engine, Hit};

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

fn bench(c: &mut Criterion) {
    let rules = assemble(None, &[], Vec::new()).expect("built-in rules");
    let engine = Engine::new(&rules, [0; 32]).expect("rules compile");
    let rows = ordinary_rows(64 * 1024);
    let plain: Vec<u8> = (0..64 * 1024).map(|i| b"0123456789 ,.;"[i % 14]).collect();
    let mut g = c.benchmark_group("scan");
    let mut hits: Vec<Hit> = Vec::new();
    g.throughput(Throughput::Bytes(rows.len() as u64));
    g.bench_function(format!("ordinary_rows_64k_{}_rules", engine.rule_count()), |b| {
        b.iter(|| {
            hits.clear();
            engine.scan(black_box(&rows), &mut hits).expect("scan");
            hits.len()
        })
    });
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("no_candidate_literals_64k", |b| {
        b.iter(|| {
            hits.clear();
            engine.scan(black_box(&plain), &mut hits).expect("scan");
            hits.len()
        })
    });
    let digits = digit_group_values(64 * 1024);
    g.throughput(Throughput::Bytes(digits.len() as u64));
    g.bench_function("digit_group_values_64k", |b| {
        b.iter(|| {
            hits.clear();
            engine.scan(black_box(&digits), &mut hits).expect("scan");
            hits.len()
        })
    });
    // One point select's value: what a call costs before its bytes do.
    let one = &digits[..120];
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("one_value_120b", |b| {
        b.iter(|| {
            hits.clear();
            engine.scan(black_box(one), &mut hits).expect("scan");
            hits.len()
        })
    });
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
