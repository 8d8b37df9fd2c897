//! What each fuzz target checks, shared by the targets (`fuzz_targets/`,
//! run by cargo-fuzz) and by `tests/fuzz_replay.rs`, which runs every input
//! of the committed corpora and a few thousand mutations of them on each
//! test run. Each check takes any bytes and panics only on a broken
//! guarantee.
#![allow(dead_code)]
use gatehouse::record::render::{line, Format};
use gatehouse::record::signing::{generate, Keyring};
use gatehouse::record::{records, verify_signed};
use gatehouse::scan::Engine;
use gatehouse::sql::mysql::MysqlClassifier;
use gatehouse::sql::Classifier;
use gatehouse::wire::mysql::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use gatehouse::wire::mysql::packet::{frame, payload};
use gatehouse::wire::mysql::response::response_kind;
use gatehouse::wire::mysql::rows::{
    binary_row_values, binary_value_text, bind_types, column_definition_values, execute_params, text_row_values,
};
use gatehouse::wire::pg::{parse_startup, peek_header, startup_len, Framer, Side};
use gatehouse::wire::pg::{rebuild, value_spans, Replace};
use std::path::Path;
use std::sync::OnceLock;

/// The PostgreSQL framer (both directions) and the startup parser, on any
/// bytes: no panic, frames within the buffer, consumed bytes accounted.
pub fn pg_frames(data: &[u8]) {
    let max = 1 << 16;
    for side in [Side::Frontend, Side::Backend] {
        let mut f = Framer::new(data, side, max);
        let mut total = 0;
        while let Ok(Some(frame)) = f.next_frame() {
            assert!(f.consumed() <= data.len());
            total += 1;
            let _ = frame;
            if total > 100_000 {
                break;
            }
        }
        let _ = peek_header(data, side, max);
    }
    if let Ok(Some(n)) = startup_len(data) {
        if let Some(p) = data.get(..n) {
            let _ = parse_startup(p);
        }
    }
    let _ = parse_startup(data);
}

/// The built-in secret rules, compiled once.
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let rules = gatehouse::scan::assemble(None, &[], Vec::new()).expect("built-in rules");
        Engine::new(&rules, [7; 32]).expect("engine")
    })
}

/// The value decoder of server messages that carry values and the
/// masker's re-framing: a message rebuilt with its secrets masked must
/// frame again, with as many values, each either kept or masked.
pub fn pg_values(data: &[u8]) {
    // First byte: the message type; the rest: its body.
    let Some((&sel, body)) = data.split_first() else { return };
    let tag = b"DENAVSd"[sel as usize % 7];
    let mut frame = vec![tag];
    frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(body);
    let mut spans = Vec::new();
    if value_spans(&frame, &mut spans).is_err() {
        return;
    }
    for &(s, e) in &spans {
        assert!(s <= e && e <= frame.len());
    }
    // Rebuilt without replacements: the same bytes.
    let mut same = Vec::new();
    rebuild(&frame, &spans, &[], &mut same);
    assert_eq!(same, frame);
    // Masked as the gateway does: every value scanned alone.
    let e = engine();
    let mut masks: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for &(s, end) in &spans {
        let Ok(found) = e.find(&frame[s..end]) else { return };
        for f in found {
            assert!(f.start <= f.end && f.end <= end - s);
            let mut m = Vec::new();
            e.mask(f.rule, &frame[s + f.start..s + f.end], &mut m);
            masks.push((s + f.start, s + f.end, m));
        }
    }
    if masks.is_empty() {
        return;
    }
    masks.sort_by_key(|m| m.0);
    masks.dedup_by(|b, a| b.0 < a.1);
    let reps: Vec<Replace<'_>> = masks
        .iter()
        .map(|(s, e, m)| Replace {
            start: *s,
            end: *e,
            with: m,
        })
        .collect();
    let mut out = Vec::new();
    rebuild(&frame, &spans, &reps, &mut out);
    let len = u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
    assert_eq!(len + 1, out.len(), "the rebuilt length is the message's");
    let mut again = Vec::new();
    value_spans(&out, &mut again).expect("a rebuilt message frames again");
    assert_eq!(again.len(), spans.len());
}

/// MySQL packets and the decoders of what they carry: framing, the
/// client's handshake response, rows (text and binary), column
/// definitions, COM_STMT_EXECUTE parameters, response kinds. No panic, and
/// every value span within its payload.
pub fn mysql_packets(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let mut buf = rest;
    let mut n = 0;
    while let Ok(Some(m)) = frame(buf, 1 << 20) {
        let p = payload(buf, &m);
        mysql_payload(sel, &p);
        let used = m.wire_len;
        if used == 0 || used > buf.len() {
            break;
        }
        buf = &buf[used..];
        n += 1;
        if n > 1000 {
            break;
        }
    }
    mysql_payload(sel, rest);
}

/// One MySQL payload through every decoder.
fn mysql_payload(sel: u8, p: &[u8]) {
    let columns = (sel & 0x1f) as usize;
    let within = |v: &gatehouse::wire::mysql::rows::ValueSpan| {
        v.range.as_ref().is_none_or(|r| r.start <= r.end && r.end <= p.len())
    };
    for v in text_row_values(p, columns).into_iter().flatten() {
        assert!(within(&v));
    }
    let types: Vec<u8> = p.iter().take(columns).copied().collect();
    if let Ok(values) = binary_row_values(p, &types) {
        for v in values {
            assert!(within(&v));
        }
    }
    for v in column_definition_values(p).into_iter().flatten() {
        assert!(within(&v));
    }
    let _ = binary_value_text(sel, sel & 1 == 1, p);
    let _ = response_kind(p, u32::from(sel) << 8 | 0x0200_0000);
    let _ = HandshakeResponse::parse(p);
    let _ = Greeting::parse(p);
    let _ = AuthSwitch::parse(p);
    if let Ok(Some(mut bound)) = bind_types(p, columns) {
        let _ = execute_params(p, columns, &mut bound, &[]);
    }
    let _ = execute_params(p, columns, &mut Vec::new(), &[0, 1]);
}

/// The statement classifiers' entry points (PostgreSQL through
/// libpg_query, MySQL) on any text: no panic, a class for everything.
pub fn classify(data: &[u8]) {
    static PG: OnceLock<std::sync::Mutex<Classifier>> = OnceLock::new();
    static MY: OnceLock<std::sync::Mutex<MysqlClassifier>> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let pg = PG.get_or_init(|| std::sync::Mutex::new(Classifier::new(&[])));
    let my = MY.get_or_init(|| std::sync::Mutex::new(MysqlClassifier::new(&[])));
    let c = pg.lock().unwrap().classify_uncached(text);
    let _ = c.class.as_str();
    let c = my.lock().unwrap().classify_uncached(text);
    let _ = c.class.as_str();
}

/// The recording reader: chain verification (with and without a key, as a
/// session file and as an audit log), record parsing and rendering, on any
/// bytes. No panic; a report never counts more intact records than lines.
pub fn recording(data: &[u8]) {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    let keys = KEYS.get_or_init(|| Keyring(vec![generate().expect("key").1]));
    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    for audit in [false, true] {
        for k in [None, Some(keys)] {
            let r = verify_signed(Path::new("f.ghrec"), data, audit, k);
            assert!(r.intact <= lines);
        }
    }
    for v in records(data).take(1000) {
        for f in [Format::Text, Format::Json, Format::Csv] {
            let _ = line(&v, f);
        }
    }
}
