//! Scanning a byte stream of any size for `gatehouse scan`: fixed-size
//! chunks with an overlap, so memory stays bounded and a secret across a
//! chunk boundary is still found once.

use super::engine::{resolve_overlaps, Engine, WINDOW};
use std::io::{Read, Write};

const CHUNK: usize = 1 << 20;
const CONTEXT: usize = 32;

fn json_str(s: &[u8]) -> String {
    serde_json::Value::String(String::from_utf8_lossy(s).into_owned()).to_string()
}

/// Scans `input`, writing one JSON line per finding to `out`; returns the
/// number of findings.
pub fn scan_stream(engine: &Engine, mut input: impl Read, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + WINDOW);
    // Absolute offset of buf[0] in the input.
    let mut base: u64 = 0;
    // Findings before this absolute offset were reported already.
    let mut reported_to: u64 = 0;
    // Findings ending at or before this absolute offset were decided by the
    // previous chunk, which saw them with their context on both sides (in
    // this chunk their left context may be cut off).
    let mut decided_to: u64 = 0;
    let mut count = 0;
    let mut eof = false;
    while !eof {
        let start = buf.len();
        buf.resize(start + CHUNK, 0);
        let mut filled = start;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..])?;
            if n == 0 {
                eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        let mut found = engine.find_in_rows(&buf)?;
        resolve_overlaps(&mut found);
        for (k, &f) in found.iter().enumerate() {
            let abs = base + f.start as u64;
            // A match cut by the chunk's end is reported from the next chunk.
            if abs < reported_to
                || base + (f.end as u64) <= decided_to
                || (!eof && f.end + WINDOW / 2 > buf.len() && buf.len() > WINDOW)
            {
                continue;
            }
            let mut masked = Vec::new();
            engine.mask(f.rule, &buf[f.start..f.end], &mut masked);
            // The context around it, with every secret in it masked too.
            let (lo, hi) = (f.start.saturating_sub(CONTEXT), (f.end + CONTEXT).min(buf.len()));
            let mut preview = Vec::new();
            let mut p = lo;
            for g in found
                .iter()
                .skip(k.saturating_sub(8))
                .filter(|g| g.end > lo && g.start < hi)
            {
                let gs = g.start.max(p);
                preview.extend_from_slice(&buf[p..gs]);
                engine.mask(g.rule, &buf[g.start..g.end], &mut preview);
                p = g.end.max(p);
            }
            preview.extend_from_slice(&buf[p.min(hi)..hi]);
            writeln!(
                out,
                "{{\"rule\":{},\"start\":{},\"end\":{},\"masked\":{},\"preview\":{}}}",
                json_str(engine.rule_id(f.rule).as_bytes()),
                abs,
                base + f.end as u64,
                json_str(&masked),
                json_str(&preview)
            )?;
            reported_to = base + f.end as u64;
            count += 1;
        }
        if buf.len() > WINDOW {
            decided_to = base + (buf.len() - WINDOW / 2) as u64;
        }
        // Keep the tail as context for the next chunk.
        let keep = buf.len().min(WINDOW);
        let drop = buf.len() - keep;
        buf.drain(..drop);
        base += drop as u64;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{MaskKind, Rule};

    #[test]
    fn finds_across_chunks_once() {
        let rule = Rule {
            id: "aws".into(),
            name: "aws".into(),
            pattern: r"\b(AKIA[A-Z0-9]{16})\b".into(),
            keywords: vec![],
            entropy: None,
            validator: None,
            mask: MaskKind::Redact,
            group: None,
            prefilter: None,
        };
        let e = Engine::new(&[rule], [0; 32]).unwrap();
        let mut data = vec![b' '; CHUNK - 10];
        data.extend_from_slice(b"AKIAABCDEFGHIJKLMNOP ");
        data.extend(vec![b' '; 3 * CHUNK]);
        data.extend_from_slice(b"AKIAABCDEFGHIJKLMNOQ");
        let mut out = Vec::new();
        let n = scan_stream(&e, &data[..], &mut out).unwrap();
        assert_eq!(n, 2, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("\"start\":{}", CHUNK - 10)));
        assert!(text.contains("[MASKED:aws]"));
        assert!(!text.contains("AKIAABCDEFGHIJKLMNOP"));
    }
}
