//! Bounded line reading: a record longer than [`super::MAX_LINE`] is an
//! error, not an unbounded buffer.

use std::io::{self, BufRead};

/// Reads one line (newline included, if any) into `out`; returns its length.
pub fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<usize> {
    let start = out.len();
    loop {
        let (done, used) = {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(out.len() - start);
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    out.extend_from_slice(&buf[..=i]);
                    (true, i + 1)
                }
                None => {
                    out.extend_from_slice(buf);
                    (false, buf.len())
                }
            }
        };
        r.consume(used);
        if out.len() - start > super::MAX_LINE {
            return Err(io::Error::other("a record longer than the limit"));
        }
        if done {
            return Ok(out.len() - start);
        }
    }
}
