//! Property tests of the PostgreSQL framing (`gatehouse::wire::pg`):
//! the same frames whatever the read boundaries, and no panic on any input.
//!
//!   cargo nextest run --test framer_prop
//!   PROPTEST_CASES=10000 cargo nextest run --test framer_prop   # longer

use gatehouse::wire::pg::{parse_startup, peek_header, startup_len, Framer, Side, WireError, HEADER_LEN};
use proptest::prelude::*;

const FRONTEND_TAGS: &[u8] = b"BCDEFHPQSXdcfp";
const BACKEND_TAGS: &[u8] = b"RK23CGHWdcDIEVvnNAtS1sZT";
const MAX_BODY: usize = 4096;

/// An owned frame: (tag, body).
type Owned = (u8, Vec<u8>);

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Frontend), Just(Side::Backend)]
}

fn tags(side: Side) -> &'static [u8] {
    match side {
        Side::Frontend => FRONTEND_TAGS,
        Side::Backend => BACKEND_TAGS,
    }
}

/// A body: mostly small (like most protocol messages), sometimes up to
/// `MAX_BODY` bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 0..=MAX_BODY),
    ]
}

/// A side and 0-40 frames valid for it.
fn frames() -> impl Strategy<Value = (Side, Vec<Owned>)> {
    side().prop_flat_map(|s| {
        let t = tags(s);
        let frame = (0..t.len(), body()).prop_map(move |(i, b)| (t[i], b));
        (Just(s), proptest::collection::vec(frame, 0..40))
    })
}

fn encode(frames: &[Owned]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, body) in frames {
        out.push(*tag);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    out
}

/// Cut points: sorted, deduplicated offsets in `0..=len`.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut c: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
    c.push(len);
    c.sort_unstable();
    c.dedup();
    c
}

/// What framing produced: the frames, then either the error that stopped it
/// or the bytes left over as a partial frame.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Owned>,
    end: Result<usize, WireError>,
}

/// Frames the whole buffer at once.
fn frame_whole(buf: &[u8], side: Side, max: usize) -> Outcome {
    let mut f = Framer::new(buf, side, max);
    let mut frames = Vec::new();
    loop {
        match f.next_frame() {
            Ok(Some(fr)) => {
                assert!(f.consumed() <= buf.len());
                assert_eq!(fr.body.len() + HEADER_LEN, frame_len(buf, f.consumed(), fr.body));
                frames.push((fr.tag, fr.body.to_vec()));
            }
            Ok(None) => {
                return Outcome {
                    frames,
                    end: Ok(buf.len() - f.consumed()),
                }
            }
            Err(e) => return Outcome { frames, end: Err(e) },
        }
    }
}

/// The body handed out must end exactly where `consumed` says.
fn frame_len(buf: &[u8], consumed: usize, body: &[u8]) -> usize {
    let end = body.as_ptr() as usize + body.len() - buf.as_ptr() as usize;
    assert_eq!(end, consumed, "body does not end at the consumed offset");
    body.len() + HEADER_LEN
}

/// Frames the buffer as it arrives in reads ending at `cuts`, keeping the
/// unconsumed bytes and calling a fresh Framer on each accumulated buffer.
fn frame_in_reads(buf: &[u8], cuts: &[usize], side: Side, max: usize) -> Outcome {
    let mut acc: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for &to in cuts {
        acc.extend_from_slice(&buf[from..to]);
        from = to;
        let mut f = Framer::new(&acc, side, max);
        loop {
            match f.next_frame() {
                Ok(Some(fr)) => frames.push((fr.tag, fr.body.to_vec())),
                Ok(None) => break,
                Err(e) => return Outcome { frames, end: Err(e) },
            }
        }
        let used = f.consumed();
        acc.drain(..used);
    }
    Outcome {
        frames,
        end: Ok(acc.len()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Valid frames come back exactly, whatever the read boundaries.
    #[test]
    fn same_frames_whatever_the_read_boundaries(
        (side, input) in frames(),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let buf = encode(&input);
        let whole = frame_whole(&buf, side, MAX_BODY + HEADER_LEN);
        prop_assert_eq!(&whole, &Outcome { frames: input.clone(), end: Ok(0) });
        let cuts = cuts(buf.len(), &raw_cuts);
        let chunked = frame_in_reads(&buf, &cuts, side, MAX_BODY + HEADER_LEN);
        prop_assert_eq!(chunked, whole);
    }

    /// A truncated stream yields the complete frames before the cut and
    /// leaves the partial one.
    #[test]
    fn truncated_stream_leaves_partial_frame((side, input) in frames(), cut in any::<usize>()) {
        let buf = encode(&input);
        let cut = cut % (buf.len() + 1);
        let out = frame_whole(&buf[..cut], side, MAX_BODY + HEADER_LEN);
        let mut at = 0;
        let mut complete = 0;
        for (_, b) in &input {
            if at + HEADER_LEN + b.len() > cut {
                break;
            }
            at += HEADER_LEN + b.len();
            complete += 1;
        }
        prop_assert_eq!(&out.frames[..], &input[..complete]);
        prop_assert_eq!(out.end, Ok(cut - at));
    }

    /// A frame over the limit is refused as TooLarge, in one piece or many.
    #[test]
    fn oversized_frame_is_refused(
        (side, input) in frames(),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        prop_assume!(input.iter().any(|(_, b)| b.len() > 64));
        let max = 64 + HEADER_LEN;
        let buf = encode(&input);
        let first_big = input.iter().position(|(_, b)| b.len() + HEADER_LEN > max).unwrap_or(input.len());
        let whole = frame_whole(&buf, side, max);
        prop_assert_eq!(&whole.frames[..], &input[..first_big]);
        let is_too_large = matches!(whole.end, Err(WireError::TooLarge { .. }));
        prop_assert!(is_too_large);
        prop_assert_eq!(frame_in_reads(&buf, &cuts(buf.len(), &raw_cuts), side, max), whole);
    }

    /// Arbitrary bytes: no panic, and framing in reads agrees with framing
    /// the whole buffer (the same frames, then the same error or remainder).
    #[test]
    fn arbitrary_bytes_never_panic(
        side in side(),
        buf in proptest::collection::vec(any::<u8>(), 0..2048),
        max in prop_oneof![Just(usize::MAX), Just(1usize << 30), 0usize..512],
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let whole = frame_whole(&buf, side, max);
        let chunked = frame_in_reads(&buf, &cuts(buf.len(), &raw_cuts), side, max);
        prop_assert_eq!(chunked, whole);
        for at in 0..buf.len().min(64) {
            if let Ok(Some(h)) = peek_header(&buf[at..], side, max) {
                prop_assert!(h.total_len >= HEADER_LEN);
                prop_assert!(h.total_len <= max);
                prop_assert!(tags(side).contains(&h.tag));
            }
        }
    }

    /// Arbitrary bytes that look like frames (valid tag, small length) so
    /// the framer gets past the header checks more often.
    #[test]
    fn frame_like_bytes_never_panic(
        side in side(),
        parts in proptest::collection::vec((any::<u8>(), 0u32..80, proptest::collection::vec(any::<u8>(), 0..80)), 0..20),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let t = tags(side);
        let mut buf = Vec::new();
        for (tag, len, bytes) in &parts {
            buf.push(t[*tag as usize % t.len()]);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(bytes);
        }
        let whole = frame_whole(&buf, side, 1 << 20);
        let chunked = frame_in_reads(&buf, &cuts(buf.len(), &raw_cuts), side, 1 << 20);
        prop_assert_eq!(chunked, whole);
    }

    /// Startup packets: arbitrary bytes never panic the parsers.
    #[test]
    fn startup_parsers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_startup(&buf);
        if let Ok(Some(n)) = startup_len(&buf) {
            prop_assert!((8..=10_000).contains(&n));
            if n <= buf.len() {
                let _ = parse_startup(&buf[..n]);
            }
        }
    }

    /// Startup-shaped bytes (right length, protocol 3.0 or a request code)
    /// reach deeper into parse_startup; it never panics.
    #[test]
    fn startup_like_bytes_never_panic(
        code in prop_oneof![Just(3u32 << 16), Just((3u32 << 16) | 2), Just(80_877_102u32), Just(80_877_103u32), Just(80_877_104u32), any::<u32>()],
        rest in proptest::collection::vec(prop_oneof![3 => any::<u8>(), 1 => Just(0u8), 2 => b'a'..=b'z'], 0..300),
    ) {
        let mut buf = Vec::new();
        buf.extend_from_slice(&((8 + rest.len()) as u32).to_be_bytes());
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(&rest);
        prop_assert_eq!(startup_len(&buf), Ok(Some(buf.len())));
        let _ = parse_startup(&buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Byte-at-a-time reads, the worst case for a consumer (fewer cases:
    /// each one frames the buffer once per byte).
    #[test]
    fn same_frames_one_byte_at_a_time((side, input) in frames()) {
        let buf = encode(&input);
        let cuts: Vec<usize> = (1..=buf.len()).collect();
        let chunked = frame_in_reads(&buf, &cuts, side, MAX_BODY + HEADER_LEN);
        prop_assert_eq!(chunked, Outcome { frames: input, end: Ok(0) });
    }
}
