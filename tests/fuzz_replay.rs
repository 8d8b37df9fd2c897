//! The fuzz targets' checks (`fuzz/checks.rs`) on every input of the
//! committed corpora (`fuzz/corpus/<target>/`, regressions included) and on
//! a few thousand deterministic mutations of them: a short run of the
//! fuzzers on every test run. The long runs are `./dev.sh fuzz [SECONDS]`.
//! `GH_FUZZ_DEBUG=1` prints each mutation before it runs (to find the one
//! that aborts, e.g. on a stack overflow, which no test can catch).
#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Mutations per corpus input.
const MUTATIONS: usize = 200;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation: bytes flipped, inserted, removed, a block duplicated or cut.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            3 if !v.is_empty() => {
                let (a, b) = (rng.below(v.len()), rng.below(v.len()));
                let (a, b) = (a.min(b), a.max(b));
                let block = v[a..b].to_vec();
                v.splice(b..b, block);
            }
            4 => v.truncate(rng.below(v.len() + 1)),
            _ => {
                let i = rng.below(v.len() + 1);
                let special: &[&[u8]] = &[
                    &[0xff, 0xff, 0xff, 0xff],
                    &[0x7f, 0xff, 0xff, 0xff],
                    &[0, 0, 0, 0],
                    b"\n",
                    b"\0",
                ];
                let s = special[rng.below(special.len())];
                v.splice(i..i, s.iter().copied());
            }
        }
    }
    v
}

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for (name, input) in &inputs {
        check(input);
        for i in 0..MUTATIONS {
            let m = mutate(input, &mut rng);
            if std::env::var("GH_FUZZ_DEBUG").is_ok() {
                eprintln!("{target} {name} {i}: {:?}", String::from_utf8_lossy(&m));
            }
            if let Err(e) = std::panic::catch_unwind(|| check(&m)) {
                panic!("{target}: mutation {i} of {name} ({m:?}) panicked: {e:?}");
            }
        }
    }
}

#[test]
fn pg_frames() {
    replay("pg_frames", checks::pg_frames);
}

#[test]
fn pg_values() {
    replay("pg_values", checks::pg_values);
}

#[test]
fn mysql_packets() {
    replay("mysql_packets", checks::mysql_packets);
}

#[test]
fn classify() {
    replay("classify", checks::classify);
}

#[test]
fn recording() {
    replay("recording", checks::recording);
}
