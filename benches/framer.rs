//! Throughput of `wire::pg::Framer`: splitting a buffer into frames.
//!
//! Two realistic workloads:
//! - backend: a result set (RowDescription, 2,000 DataRows of ~60-200 bytes,
//!   CommandComplete, ReadyForQuery), as a query's answer arrives;
//! - frontend: extended-protocol traffic (Bind/Execute/Sync per statement),
//!   as pgbench -M prepared sends it.
//!
//! Each is framed whole and, like the relay does, in 16 KiB reads with the
//! partial frame carried over to the next read.
//!
//!   cargo bench --bench framer                      # full run
//!   cargo bench --bench framer -- --quick           # CI: a few seconds
//!   cargo bench --bench framer -- --warm-up-time 0.2 --measurement-time 0.5

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use gatehouse::wire::pg::{Framer, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MAX: usize = 1 << 30;
const READ: usize = 16 * 1024;

fn frame(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// RowDescription + `rows` DataRows (4 columns, 60-200 bytes each) +
/// CommandComplete + ReadyForQuery.
fn backend_result_set(rows: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    let cols: [(&str, u32, i16); 4] = [("id", 20, 8), ("email", 25, -1), ("note", 25, -1), ("created", 1184, 8)];
    let mut body = Vec::new();
    body.extend_from_slice(&(cols.len() as i16).to_be_bytes());
    for (i, (name, oid, size)) in cols.iter().enumerate() {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&16_384u32.to_be_bytes()); // table oid
        body.extend_from_slice(&(i as i16 + 1).to_be_bytes()); // attnum
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes()); // typmod
        body.extend_from_slice(&0i16.to_be_bytes()); // text format
    }
    frame(&mut out, b'T', &body);
    for r in 0..rows {
        body.clear();
        body.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        // The four values sum to 60-200 bytes of body.
        let target = rng.gen_range(60..=200usize);
        let id = r.to_string();
        let created = b"2024-05-01 12:34:56.789+00";
        let rest = target.saturating_sub(2 + 4 * 4 + id.len() + created.len());
        let email_len = rest.min(rng.gen_range(8..=40));
        let note_len = rest - email_len;
        for v in [
            id.as_bytes().to_vec(),
            (0..email_len).map(|_| rng.gen_range(b'a'..=b'z')).collect(),
            (0..note_len).map(|_| rng.gen_range(b' '..=b'~')).collect(),
            created.to_vec(),
        ] {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(&v);
        }
        frame(&mut out, b'D', &body);
    }
    frame(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    frame(&mut out, b'Z', b"I");
    out
}

/// `n` statements of Bind (named statement, one text parameter, one result
/// format) + Execute + Sync.
fn frontend_bind_execute_sync(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    for i in 0..n {
        body.clear();
        body.push(0); // unnamed portal
        body.extend_from_slice(b"P0_1\0");
        body.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
        body.extend_from_slice(&1i16.to_be_bytes()); // parameters
        let v = (i * 7919 % 1_000_000 + 1).to_string();
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
        body.extend_from_slice(&1i16.to_be_bytes()); // result formats
        body.extend_from_slice(&0i16.to_be_bytes());
        frame(&mut out, b'B', &body);
        frame(&mut out, b'E', b"\0\0\0\0\0");
        frame(&mut out, b'S', b"");
    }
    out
}

/// Frames the whole buffer; returns (frames, body bytes) so nothing is
/// optimised away.
#[inline]
fn frame_all(buf: &[u8], side: Side) -> (usize, usize) {
    let mut f = Framer::new(buf, side, MAX);
    let (mut n, mut bytes) = (0, 0);
    while let Ok(Some(fr)) = f.next_frame() {
        n += 1;
        bytes += fr.body.len() + fr.tag as usize;
    }
    (n, bytes)
}

/// Frames the buffer as it would arrive in `READ`-byte reads, carrying the
/// partial frame over like the relay's pump (copy_within to the front).
fn frame_in_reads(input: &[u8], side: Side, acc: &mut Vec<u8>) -> (usize, usize) {
    acc.clear();
    let (mut n, mut bytes) = (0, 0);
    for chunk in input.chunks(READ) {
        acc.extend_from_slice(chunk);
        let mut f = Framer::new(acc, side, MAX);
        while let Ok(Some(fr)) = f.next_frame() {
            n += 1;
            bytes += fr.body.len() + fr.tag as usize;
        }
        let used = f.consumed();
        let len = acc.len();
        acc.copy_within(used..len, 0);
        acc.truncate(len - used);
    }
    (n, bytes)
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("backend_result_set", backend_result_set(2_000), Side::Backend),
        (
            "frontend_bind_execute_sync",
            frontend_bind_execute_sync(2_000),
            Side::Frontend,
        ),
    ];
    let mut g = c.benchmark_group("framer");
    for (name, buf, side) in &cases {
        let frames = frame_all(buf, *side).0;
        assert!(frames >= 2_000, "{name}: only {frames} frames framed");
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(format!("{name}/whole"), |b| b.iter(|| frame_all(black_box(buf), *side)));
        let mut acc = Vec::with_capacity(READ * 2);
        assert_eq!(frame_in_reads(buf, *side, &mut acc).0, frames);
        g.bench_function(format!("{name}/16k_reads"), |b| {
            b.iter(|| frame_in_reads(black_box(buf), *side, &mut acc))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
