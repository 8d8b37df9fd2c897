//! COPY OUT: each CopyData payload masked, one message per row as the
//! protocol sends them, the last payloads held back so a secret split
//! across messages is still seen whole.

use super::ServerSide;
use crate::scan::Engine;
use crate::wire::pg;

/// Held back at the end of a COPY stream so a secret split across two
/// CopyData messages is still seen whole.
pub const COPY_HOLD: usize = crate::scan::engine::WINDOW;

fn copy_data(out: &mut Vec<u8>, payload: &[u8]) {
    let at = pg::begin(out, b'd');
    out.extend_from_slice(payload);
    pg::finish(out, at);
}

impl ServerSide<'_> {
    /// Masks COPY OUT payloads (those held back before, then `msgs`) and
    /// returns the CopyData messages to send now, one per payload: clients
    /// rely on the protocol's one message per row. Unless `all`, the last
    /// payloads (at least `COPY_HOLD` bytes of them) are held back, so a
    /// secret split across messages is still seen whole; secrets that start
    /// in them wait for the data after them.
    pub(super) fn mask_copy(&mut self, engine: &Engine, msgs: Vec<Vec<u8>>, all: bool) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if msgs.is_empty() {
            return Ok(out);
        }
        let mut keep = msgs.len();
        if !all {
            let mut held = 0;
            while keep > 0 && held < COPY_HOLD {
                keep -= 1;
                held += msgs[keep].len();
            }
        }
        self.seg.clear();
        for m in &msgs {
            self.seg.extend_from_slice(m);
        }
        let cut: usize = msgs[..keep].iter().map(Vec::len).sum();
        let mut found = engine
            .find_masked_in_rows(&self.seg, self.ctx.applies.as_deref())
            .map_err(|e| e.to_string())?;
        found.retain(|f| f.start < cut);
        let mut masks = Vec::with_capacity(found.len());
        for f in &found {
            let secret = &self.seg[f.start..f.end];
            let mut m = Vec::new();
            if self.copy_binary {
                m.extend_from_slice(secret);
                engine.mask_same_len(f.rule, &mut m);
            } else {
                engine.mask(f.rule, secret, &mut m);
            }
            masks.push(m);
            self.ctx.count_masked(f.rule);
        }
        let mut held = Vec::new();
        let (mut at, mut k) = (0, 0);
        for (n, m) in msgs.into_iter().enumerate() {
            let (ms, me) = (at, at + m.len());
            at = me;
            while k < found.len() && found[k].end <= ms {
                k += 1;
            }
            let content = if k < found.len() && found[k].start < me {
                // A secret split across messages: its mask goes where it
                // starts (binary: each piece keeps its length).
                let mut c = Vec::with_capacity(m.len());
                let mut p = ms;
                let mut x = k;
                while x < found.len() && found[x].start < me {
                    let fd = found[x];
                    let (s, e) = (fd.start.max(ms), fd.end.min(me));
                    c.extend_from_slice(&self.seg[p..s]);
                    if self.copy_binary {
                        c.extend_from_slice(&masks[x][s - fd.start..e - fd.start]);
                    } else if fd.start >= ms {
                        c.extend_from_slice(&masks[x]);
                    }
                    p = e;
                    x += 1;
                }
                c.extend_from_slice(&self.seg[p..me]);
                c
            } else {
                m
            };
            if n < keep {
                copy_data(&mut out, &content);
            } else {
                held.push(content);
            }
        }
        self.copy_held = held;
        Ok(out)
    }

    /// COPY data held back, masked, to send now (when scanning fails, the
    /// held data is dropped: the cut's error follows anyway).
    pub(super) fn flush_copy(&mut self) -> Vec<u8> {
        let msgs = std::mem::take(&mut self.copy_held);
        match self.ctx.engine {
            Some(engine) if !msgs.is_empty() => self.mask_copy(engine, msgs, true).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}
