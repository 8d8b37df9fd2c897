//! Property tests of secret masking on the pure code (no sockets):
//!
//! (a) masking any sequence of backend messages — the values of each found
//!     with `value_spans`, scanned with `Engine::find`, the message rebuilt
//!     with `rebuild` — yields messages that frame again: same count, same
//!     tags, same column counts, untouched values byte-identical, masked
//!     values exactly the masks, no secret left;
//! (b) `scan_stream` over a reader that hands out pieces of any size finds
//!     exactly what one `Engine::find` over the whole input finds, also for
//!     secrets placed around its chunk boundaries.
//!
//!   cargo nextest run --test masking_prop
//!   PROPTEST_CASES=2000 cargo nextest run --test masking_prop   # longer

use gatehouse::scan::engine::WINDOW;
use gatehouse::scan::{Engine, RuleFile};
use gatehouse::wire::pg::{begin, error_fields, finish, rebuild, value_spans, Framer, Replace, Side};
use proptest::prelude::*;
use std::io::Read;
use std::sync::OnceLock;

const RULES: &str = r#"
[[rule]]
id = "t-aws"
name = "aws"
pattern = '''\b(AKIA[A-Z0-9]{16})\b'''

[[rule]]
id = "t-gh"
name = "github"
pattern = '''\b(ghp_[A-Za-z0-9]{36})\b'''

[[rule]]
id = "t-part"
name = "partial"
pattern = '''\b(tokp_[a-z0-9]{20})\b'''
mask = "partial"

[[rule]]
id = "t-hash"
name = "hash"
pattern = '''\b(tokh_[a-z0-9]{20})\b'''
mask = "hash"
"#;

const RULE_IDS: [&str; 4] = ["t-aws", "t-gh", "t-part", "t-hash"];

/// `gatehouse scan` reads in chunks of this size (src/scan/report.rs).
const CHUNK: usize = 1 << 20;

/// Cases per property: `PROPTEST_CASES` when set.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let rf = RuleFile::parse(RULES, "test rules").expect("rules");
        Engine::new(&rf.rules, [9; 32]).expect("engine")
    })
}

// ---------------------------------------------------------------------------
// generators
// ---------------------------------------------------------------------------

/// A secret for rule `RULE_IDS[k]`.
fn secret() -> impl Strategy<Value = (usize, Vec<u8>)> {
    const UP: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const LOW: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |alpha: &'static [u8], n: usize| {
        proptest::collection::vec(0..alpha.len(), n)
            .prop_map(move |ix| ix.into_iter().map(|i| alpha[i]).collect::<Vec<u8>>())
    };
    prop_oneof![
        pick(UP, 16).prop_map(|b| (0, [b"AKIA".as_slice(), &b].concat())),
        pick(ALNUM, 36).prop_map(|b| (1, [b"ghp_".as_slice(), &b].concat())),
        pick(LOW, 20).prop_map(|b| (2, [b"tokp_".as_slice(), &b].concat())),
        pick(LOW, 20).prop_map(|b| (3, [b"tokh_".as_slice(), &b].concat())),
    ]
}

/// Bytes that are not word characters, to put around a secret.
const SEPARATORS: &[u8] = b" ,;:=\"'()[]{}<>\n\t|/-+.";

/// Noise: any bytes (or, in C strings, any but NUL), seldom long.
fn noise(cstring: bool) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(move |mut v| {
        if cstring {
            v.retain(|&b| b != 0);
        }
        v
    })
}

/// One piece of a value.
#[derive(Clone, Debug)]
enum Piece {
    Noise(Vec<u8>),
    Secret(usize, Vec<u8>),
}

/// A value: noise and secrets; every secret has a separator on each side
/// (or the value's edge).
#[derive(Clone, Debug)]
struct Value {
    bytes: Vec<u8>,
    /// (start, end, rule index) of each secret planted.
    planted: Vec<(usize, usize, usize)>,
}

fn value(cstring: bool) -> impl Strategy<Value = Value> {
    let piece = prop_oneof![
        3 => noise(cstring).prop_map(Piece::Noise),
        1 => secret().prop_map(|(k, s)| Piece::Secret(k, s)),
    ];
    (proptest::collection::vec((piece, 0..SEPARATORS.len()), 0..6)).prop_map(|pieces| {
        let mut bytes = Vec::new();
        let mut planted = Vec::new();
        let n = pieces.len();
        for (i, (p, sep)) in pieces.into_iter().enumerate() {
            match p {
                Piece::Noise(v) => bytes.extend_from_slice(&v),
                Piece::Secret(k, s) => {
                    if !bytes.is_empty() {
                        bytes.push(SEPARATORS[sep]);
                    }
                    planted.push((bytes.len(), bytes.len() + s.len(), k));
                    bytes.extend_from_slice(&s);
                    if i + 1 < n {
                        bytes.push(SEPARATORS[(sep + 1) % SEPARATORS.len()]);
                    }
                }
            }
        }
        Value { bytes, planted }
    })
}

/// A backend message to mask.
#[derive(Clone, Debug)]
enum Msg {
    DataRow(Vec<Option<Value>>),
    /// ErrorResponse (`false`) or NoticeResponse (`true`): (code, value) fields.
    Error(bool, Vec<(u8, Value)>),
    Notification(i32, Value, Value),
    CopyData(Value),
    /// FunctionCallResponse: the result (`None`: NULL).
    FunctionResult(Option<Value>),
    /// ParameterStatus: a parameter's name and value.
    Parameter(Vec<u8>, Value),
    /// Anything else, forwarded as it is.
    Other(u8, Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    let field_code = prop_oneof![
        Just(b'M'),
        Just(b'D'),
        Just(b'H'),
        Just(b'W'),
        Just(b'q'),
        Just(b't'),
        Just(b'n')
    ];
    prop_oneof![
        4 => proptest::collection::vec(proptest::option::weighted(0.8, value(false)), 0..8).prop_map(Msg::DataRow),
        1 => (any::<bool>(), proptest::collection::vec((field_code, value(true)), 0..5)).prop_map(|(n, f)| Msg::Error(n, f)),
        1 => (any::<i32>(), value(true), value(true)).prop_map(|(p, c, v)| Msg::Notification(p, c, v)),
        1 => value(false).prop_map(Msg::CopyData),
        1 => proptest::option::weighted(0.8, value(false)).prop_map(Msg::FunctionResult),
        1 => ("[a-z_]{1,20}", value(true)).prop_map(|(n, v)| Msg::Parameter(n.into_bytes(), v)),
        1 => (prop::sample::select(b"CZTt12nsIKvc".to_vec()), proptest::collection::vec(any::<u8>(), 0..30))
            .prop_map(|(t, b)| Msg::Other(t, b)),
    ]
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn encode(m: &Msg, out: &mut Vec<u8>) {
    match m {
        Msg::DataRow(cols) => {
            let at = begin(out, b'D');
            out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
            for c in cols {
                match c {
                    Some(v) => {
                        out.extend_from_slice(&(v.bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(&v.bytes);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            finish(out, at);
        }
        Msg::Error(notice, fields) => {
            let at = begin(out, if *notice { b'N' } else { b'E' });
            out.push(b'S');
            cstr(out, b"ERROR");
            out.push(b'V');
            cstr(out, b"ERROR");
            out.push(b'C');
            cstr(out, b"XX000");
            for (code, v) in fields {
                out.push(*code);
                cstr(out, &v.bytes);
            }
            out.push(0);
            finish(out, at);
        }
        Msg::Notification(pid, ch, payload) => {
            let at = begin(out, b'A');
            out.extend_from_slice(&pid.to_be_bytes());
            cstr(out, &ch.bytes);
            cstr(out, &payload.bytes);
            finish(out, at);
        }
        Msg::CopyData(v) => {
            let at = begin(out, b'd');
            out.extend_from_slice(&v.bytes);
            finish(out, at);
        }
        Msg::FunctionResult(v) => {
            let at = begin(out, b'V');
            match v {
                Some(v) => {
                    out.extend_from_slice(&(v.bytes.len() as i32).to_be_bytes());
                    out.extend_from_slice(&v.bytes);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            finish(out, at);
        }
        Msg::Parameter(name, v) => {
            let at = begin(out, b'S');
            cstr(out, name);
            cstr(out, &v.bytes);
            finish(out, at);
        }
        Msg::Other(tag, body) => {
            let at = begin(out, *tag);
            out.extend_from_slice(body);
            finish(out, at);
        }
    }
}

fn tag(m: &Msg) -> u8 {
    match m {
        Msg::DataRow(_) => b'D',
        Msg::Error(false, _) => b'E',
        Msg::Error(true, _) => b'N',
        Msg::Notification(..) => b'A',
        Msg::CopyData(_) => b'd',
        Msg::FunctionResult(_) => b'V',
        Msg::Parameter(..) => b'S',
        Msg::Other(t, _) => *t,
    }
}

/// What a value must become: each planted secret replaced by its mask.
fn expected(v: &Value) -> Vec<u8> {
    let e = engine();
    let mut out = Vec::new();
    let mut p = 0;
    for &(s, end, k) in &v.planted {
        out.extend_from_slice(&v.bytes[p..s]);
        e.mask(k as u32, &v.bytes[s..end], &mut out);
        p = end;
    }
    out.extend_from_slice(&v.bytes[p..]);
    out
}

/// Masks one message as the gateway does: every value scanned on its own,
/// the message rebuilt with the masks, or copied when nothing was found.
/// Returns the findings per value, in order.
fn mask_frame(frame: &[u8], out: &mut Vec<u8>) -> Vec<Vec<(usize, usize, usize)>> {
    let e = engine();
    let mut spans = Vec::new();
    value_spans(frame, &mut spans).expect("our own frames are well formed");
    let mut per_value = Vec::new();
    let mut masks: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for &(s, end) in &spans {
        let found = e.find(&frame[s..end]).expect("scan");
        per_value.push(found.iter().map(|f| (f.start, f.end, f.rule as usize)).collect());
        for f in found {
            let mut m = Vec::new();
            e.mask(f.rule, &frame[s + f.start..s + f.end], &mut m);
            masks.push((s + f.start, s + f.end, m));
        }
    }
    if masks.is_empty() {
        out.extend_from_slice(frame);
    } else {
        let reps: Vec<Replace<'_>> = masks
            .iter()
            .map(|(s, e, m)| Replace {
                start: *s,
                end: *e,
                with: m,
            })
            .collect();
        rebuild(frame, &spans, &reps, out);
    }
    per_value
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every value of a message, in the order `value_spans` gives them.
fn values(m: &Msg) -> Vec<&Value> {
    match m {
        Msg::DataRow(cols) => cols.iter().flatten().collect(),
        Msg::Error(_, f) => f.iter().map(|(_, v)| v).collect(),
        Msg::Notification(_, c, p) => vec![c, p],
        Msg::CopyData(v) => vec![v],
        Msg::FunctionResult(v) => v.iter().collect(),
        Msg::Parameter(_, v) => vec![v],
        Msg::Other(..) => vec![],
    }
}

fn split_cstrings(mut b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = b.iter().position(|&x| x == 0) {
        out.push(&b[..i]);
        b = &b[i + 1..];
    }
    assert!(b.is_empty(), "bytes after the last C string");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    /// (a) Masked output re-frames into the same messages.
    #[test]
    fn masked_messages_reframe(msgs in proptest::collection::vec(msg(), 0..24)) {
        let mut input = Vec::new();
        let mut frames = Vec::new();
        for m in &msgs {
            let at = input.len();
            encode(m, &mut input);
            frames.push(at..input.len());
        }
        let mut out = Vec::new();
        for (m, r) in msgs.iter().zip(&frames) {
            let found = mask_frame(&input[r.clone()], &mut out);
            // The engine finds exactly the planted secrets, value by value.
            let vals = values(m);
            prop_assert_eq!(found.len(), vals.len());
            for (f, v) in found.iter().zip(&vals) {
                prop_assert_eq!(f, &v.planted, "value {:?}", String::from_utf8_lossy(&v.bytes));
            }
        }
        let mut fr = Framer::new(&out, Side::Backend, 1 << 30);
        let mut n = 0;
        while let Some(f) = fr.next_frame().expect("masked output frames") {
            prop_assert!(n < msgs.len(), "more frames out than in");
            let m = &msgs[n];
            prop_assert_eq!(f.tag, tag(m));
            match m {
                Msg::DataRow(cols) => {
                    let b = f.body;
                    prop_assert_eq!(i16::from_be_bytes([b[0], b[1]]) as usize, cols.len(), "column count");
                    let mut p = 2;
                    for c in cols {
                        let len = i32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
                        p += 4;
                        match c {
                            None => prop_assert_eq!(len, -1),
                            Some(v) => {
                                prop_assert!(len >= 0);
                                let got = &b[p..p + len as usize];
                                p += len as usize;
                                if v.planted.is_empty() {
                                    prop_assert_eq!(got, &v.bytes[..], "untouched column");
                                } else {
                                    prop_assert_eq!(got, &expected(v)[..]);
                                }
                            }
                        }
                    }
                    prop_assert_eq!(p, b.len(), "DataRow ends after its last column");
                }
                Msg::Error(_, fields) => {
                    let got: Vec<(u8, &[u8])> = error_fields(f.body).collect();
                    prop_assert_eq!(got.len(), fields.len() + 3);
                    prop_assert_eq!(got[0], (b'S', &b"ERROR"[..]));
                    prop_assert_eq!(got[2], (b'C', &b"XX000"[..]));
                    for ((code, v), (gc, gv)) in fields.iter().zip(&got[3..]) {
                        prop_assert_eq!(code, gc);
                        prop_assert_eq!(*gv, &expected(v)[..]);
                    }
                }
                Msg::Notification(pid, ch, payload) => {
                    prop_assert_eq!(&f.body[..4], &pid.to_be_bytes()[..]);
                    let parts = split_cstrings(&f.body[4..]);
                    prop_assert_eq!(parts.len(), 2);
                    prop_assert_eq!(parts[0], &expected(ch)[..]);
                    prop_assert_eq!(parts[1], &expected(payload)[..]);
                }
                Msg::CopyData(v) => prop_assert_eq!(f.body, &expected(v)[..]),
                Msg::FunctionResult(v) => {
                    let len = i32::from_be_bytes([f.body[0], f.body[1], f.body[2], f.body[3]]);
                    match v {
                        None => prop_assert_eq!(len, -1),
                        Some(v) => {
                            prop_assert_eq!(len as usize, f.body.len() - 4, "re-framed length");
                            prop_assert_eq!(&f.body[4..], &expected(v)[..]);
                        }
                    }
                }
                Msg::Parameter(name, v) => {
                    let parts = split_cstrings(f.body);
                    prop_assert_eq!(parts.len(), 2);
                    prop_assert_eq!(parts[0], &name[..]);
                    prop_assert_eq!(parts[1], &expected(v)[..]);
                }
                Msg::Other(_, body) => prop_assert_eq!(f.body, &body[..]),
            }
            n += 1;
        }
        prop_assert_eq!(n, msgs.len(), "frames out");
        prop_assert_eq!(fr.consumed(), out.len(), "no partial frame left");
        // No secret left anywhere, and untouched messages are byte-identical.
        for m in &msgs {
            for v in values(m) {
                for &(s, e, _) in &v.planted {
                    prop_assert!(!contains(&out, &v.bytes[s..e]), "secret left in the output");
                }
            }
        }
        if msgs.iter().all(|m| values(m).iter().all(|v| v.planted.is_empty())) {
            prop_assert_eq!(out, input);
        }
    }
}

// ---------------------------------------------------------------------------
// (b) scan_stream over pieces of any size
// ---------------------------------------------------------------------------

/// A reader handing out at most `sizes[i]` bytes per read, cycling.
struct Pieces<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: Vec<usize>,
    i: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = self.sizes[self.i % self.sizes.len()];
        self.i += 1;
        let n = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Where a planted secret goes: near one of scan_stream's chunk seams (the
/// end of a chunk, the start of the context kept from it, the point past
/// which a finding is left to the next chunk) or anywhere.
fn anchor() -> impl Strategy<Value = usize> {
    let seams: Vec<usize> = [1, 2, 3]
        .iter()
        .flat_map(|k| [k * CHUNK, k * CHUNK - WINDOW, k * CHUNK - WINDOW / 2])
        .collect();
    prop_oneof![
        2 => (prop::sample::select(seams.clone()), -4i64..4).prop_map(|(s, j)| (s as i64 + j).max(0) as usize),
        2 => (prop::sample::select(seams), -80i64..80).prop_map(|(s, j)| (s as i64 + j).max(0) as usize),
        1 => 0usize..(3 * CHUNK),
    ]
}

/// What goes right before/after a secret: a separator, or a word
/// character (then the secret is not one, wherever the seams fall).
fn neighbour() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(SEPARATORS.to_vec()),
        1 => prop::sample::select(b"aZ9_".to_vec()),
    ]
}

/// A secret to plant: where, (rule, secret), the bytes before and after it.
type Plant = (usize, (usize, Vec<u8>), u8, u8);

fn build_input(len: usize, plants: &[Plant]) -> Vec<u8> {
    const FILLER: &[u8] = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; ";
    let mut data: Vec<u8> = FILLER.iter().copied().cycle().take(len).collect();
    let mut sorted: Vec<_> = plants.iter().filter(|p| p.0 + p.1 .1.len() + 2 <= len).collect();
    sorted.sort_by_key(|p| p.0);
    let mut free = 0;
    for (at, (_, s), l, r) in sorted {
        if *at < free {
            continue;
        }
        data[*at] = *l;
        data[at + 1..at + 1 + s.len()].copy_from_slice(s);
        data[at + 1 + s.len()] = *r;
        free = at + s.len() + 2;
    }
    data
}

fn stream_findings(data: &[u8], sizes: Vec<usize>) -> Vec<(String, usize, usize, String)> {
    let e = engine();
    let mut out = Vec::new();
    let n = gatehouse::scan::report::scan_stream(
        e,
        Pieces {
            data,
            pos: 0,
            sizes,
            i: 0,
        },
        &mut out,
    )
    .expect("scan_stream");
    let text = String::from_utf8(out).expect("utf8 output");
    let lines: Vec<_> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["rule"].as_str().expect("rule").to_string(),
                v["start"].as_u64().expect("start") as usize,
                v["end"].as_u64().expect("end") as usize,
                v["masked"].as_str().expect("masked").to_string(),
            )
        })
        .collect();
    assert_eq!(n as usize, lines.len(), "count returned vs lines written");
    lines
}

fn whole_findings(data: &[u8]) -> Vec<(String, usize, usize, String)> {
    let e = engine();
    e.find(data)
        .expect("find")
        .into_iter()
        .map(|f| {
            let mut m = Vec::new();
            e.mask(f.rule, &data[f.start..f.end], &mut m);
            (
                e.rule_id(f.rule).to_string(),
                f.start,
                f.end,
                String::from_utf8(m).expect("utf8 mask"),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// (b) Large inputs, secrets around the chunk seams.
    #[test]
    fn scan_stream_matches_one_find_large(
        len in prop_oneof![(CHUNK - 100)..(CHUNK + 20_000), (2 * CHUNK - 20_000)..(2 * CHUNK + 20_000), 0..(3 * CHUNK + 5000)],
        plants in proptest::collection::vec((anchor(), secret(), neighbour(), neighbour()), 0..16),
        sizes in proptest::collection::vec(1usize..300_000, 1..8),
    ) {
        let data = build_input(len, &plants);
        let whole = whole_findings(&data);
        let streamed = stream_findings(&data, sizes);
        prop_assert_eq!(streamed, whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// (b) Small inputs read in pieces of any size, down to single bytes.
    #[test]
    fn scan_stream_matches_one_find_small(
        len in 0usize..20_000,
        plants in proptest::collection::vec((0usize..20_000, secret(), neighbour(), neighbour()), 0..12),
        sizes in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let data = build_input(len, &plants);
        let whole = whole_findings(&data);
        let streamed = stream_findings(&data, sizes);
        prop_assert_eq!(&streamed, &whole);
        for (rule, _, _, _) in &whole {
            prop_assert!(RULE_IDS.contains(&rule.as_str()));
        }
    }
}

/// (b), exhaustively around the first chunk's seams: a secret at every
/// offset near them, with separators or word characters around it.
#[test]
fn scan_stream_matches_one_find_at_every_seam_offset() {
    let (_, aws) = (0, b"AKIAABCDEFGHIJKLMNOP".to_vec());
    let mut failures = Vec::new();
    for seam in [CHUNK - WINDOW, CHUNK - WINDOW / 2, CHUNK] {
        for d in -(aws.len() as i64 + 3)..3 {
            for l in [b' ', b'x'] {
                for r in [b' ', b'x'] {
                    let at = (seam as i64 + d) as usize;
                    let data = build_input(CHUNK + 50_000, &[(at, (0, aws.clone()), l, r)]);
                    let whole = whole_findings(&data);
                    let streamed = stream_findings(&data, vec![100_000]);
                    if whole != streamed {
                        failures.push(format!(
                            "secret at {} ({:+} from {seam}), neighbours {:?}/{:?}: whole {whole:?}, streamed {streamed:?}",
                            at + 1,
                            d + 1,
                            l as char,
                            r as char
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
