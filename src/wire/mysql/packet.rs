//! Packets and messages.
//!
//! Every MySQL packet is a 4-byte header (payload length, 3 bytes little
//! endian; sequence id, 1 byte) and the payload. A payload of 2^24 − 1 bytes
//! or more is sent as several packets: each full packet (exactly 2^24 − 1
//! bytes) says "more follows", and the message ends with the first shorter
//! one — an empty packet when the length is an exact multiple. Sequence ids
//! count up by one per packet (wrapping at 256) within an exchange.
//!
//! `frame` finds one whole message in a buffer without copying; `payload`
//! joins the pieces of a split one; `write_message` splits on the way out.

use super::MyWireError;
use std::borrow::Cow;

/// The largest payload of one packet; a packet this long continues.
pub const MAX_PACKET_PAYLOAD: usize = 0xFF_FFFF;
/// Bytes of a packet header.
pub const HEADER_LEN: usize = 4;

/// One whole message found in a buffer: where it lies and how it was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Bytes the message takes on the wire, headers included.
    pub wire_len: usize,
    /// Bytes of payload, over all its packets.
    pub payload_len: usize,
    /// Sequence id of its first packet.
    pub first_seq: u8,
    /// Sequence id of its last packet (the next packet carries this + 1).
    pub last_seq: u8,
    /// Packets it took (more than one only for payloads of 2^24 − 1 bytes or more).
    pub packets: usize,
}

impl Message {
    /// The next sequence id after this message.
    pub fn next_seq(&self) -> u8 {
        self.last_seq.wrapping_add(1)
    }
}

/// Finds the first whole message in `buf`. `Ok(None)`: more bytes are
/// needed. A message whose payload exceeds `max_payload` is refused as soon
/// as its headers say so (before its bytes arrive), and sequence ids that do
/// not count up within the message are a protocol error.
pub fn frame(buf: &[u8], max_payload: usize) -> Result<Option<Message>, MyWireError> {
    frame_with(buf, max_payload, MAX_PACKET_PAYLOAD)
}

/// `frame` with the split threshold as a parameter, so that the split rule
/// can be tested on small payloads; the protocol's is `MAX_PACKET_PAYLOAD`.
pub(crate) fn frame_with(buf: &[u8], max_payload: usize, full: usize) -> Result<Option<Message>, MyWireError> {
    let mut at = 0usize;
    let mut payload_len = 0usize;
    let mut first_seq = 0u8;
    let mut last_seq = 0u8;
    let mut packets = 0usize;
    loop {
        let Some(h) = buf.get(at..at + HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
        if len > full {
            return Err(MyWireError::BadLength(len as u64));
        }
        let seq = h[3];
        if packets == 0 {
            first_seq = seq;
        } else if seq != last_seq.wrapping_add(1) {
            return Err(MyWireError::BadSequence {
                expected: last_seq.wrapping_add(1),
                got: seq,
            });
        }
        last_seq = seq;
        packets += 1;
        payload_len += len;
        if payload_len > max_payload {
            return Err(MyWireError::TooLarge {
                len: payload_len as u64,
                max: max_payload,
            });
        }
        at += HEADER_LEN + len;
        if buf.len() < at {
            return Ok(None);
        }
        if len < full {
            return Ok(Some(Message {
                wire_len: at,
                payload_len,
                first_seq,
                last_seq,
                packets,
            }));
        }
    }
}

/// The payload of a message `frame` found at the start of `buf`: borrowed
/// when it is one packet, joined when it was split.
pub fn payload<'a>(buf: &'a [u8], m: &Message) -> Cow<'a, [u8]> {
    payload_with(buf, m, MAX_PACKET_PAYLOAD)
}

pub(crate) fn payload_with<'a>(buf: &'a [u8], m: &Message, full: usize) -> Cow<'a, [u8]> {
    if m.packets == 1 {
        return Cow::Borrowed(&buf[HEADER_LEN..m.wire_len]);
    }
    let mut out = Vec::with_capacity(m.payload_len);
    let mut at = 0;
    for _ in 0..m.packets {
        let len = (u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], 0]) as usize).min(full);
        out.extend_from_slice(&buf[at + HEADER_LEN..at + HEADER_LEN + len]);
        at += HEADER_LEN + len;
    }
    Cow::Owned(out)
}

/// Appends `payload` as one message starting at sequence id `seq`, split
/// into packets as the protocol requires; returns the next sequence id.
pub fn write_message(out: &mut Vec<u8>, seq: u8, payload: &[u8]) -> u8 {
    write_message_with(out, seq, payload, MAX_PACKET_PAYLOAD)
}

pub(crate) fn write_message_with(out: &mut Vec<u8>, mut seq: u8, payload: &[u8], full: usize) -> u8 {
    out.reserve(payload.len() + HEADER_LEN * (payload.len() / full + 1));
    let mut rest = payload;
    loop {
        let n = rest.len().min(full);
        let len = (n as u32).to_le_bytes();
        out.extend_from_slice(&[len[0], len[1], len[2], seq]);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < full {
            return seq;
        }
    }
}

/// Starts a message whose payload the caller appends: reserves the header,
/// to be filled in by `finish_message`. For payloads below 2^24 − 1 bytes
/// (server replies gatehouse builds itself); `finish_message` splits longer
/// ones.
pub fn begin_message(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    start
}

/// Completes a message begun at `start` with sequence id `seq`; returns the
/// next sequence id.
pub fn finish_message(out: &mut Vec<u8>, start: usize, seq: u8) -> u8 {
    let len = out.len() - start - HEADER_LEN;
    if len < MAX_PACKET_PAYLOAD {
        let l = (len as u32).to_le_bytes();
        out[start..start + HEADER_LEN].copy_from_slice(&[l[0], l[1], l[2], seq]);
        return seq.wrapping_add(1);
    }
    let payload = out.split_off(start + HEADER_LEN);
    out.truncate(start);
    write_message(out, seq, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_packet_is_borrowed() {
        let mut out = Vec::new();
        assert_eq!(write_message(&mut out, 0, b"\x03SELECT 1"), 1);
        assert_eq!(&out[..4], &[9, 0, 0, 0]);
        let m = frame(&out, 1 << 20).unwrap().unwrap();
        assert_eq!((m.wire_len, m.payload_len, m.packets, m.next_seq()), (13, 9, 1, 1));
        assert!(matches!(payload(&out, &m), Cow::Borrowed(b"\x03SELECT 1")));
    }

    #[test]
    fn an_empty_message_is_one_empty_packet() {
        let mut out = Vec::new();
        assert_eq!(write_message(&mut out, 7, b""), 8);
        assert_eq!(out, [0, 0, 0, 7]);
        let m = frame(&out, 0).unwrap().unwrap();
        assert_eq!((m.wire_len, m.payload_len), (4, 0));
    }

    /// The real threshold: 2^24 − 1 bytes go as a full packet and an empty
    /// one; one byte more as a full packet and a 1-byte one.
    #[test]
    fn sixteen_mebibyte_payloads_split() {
        for (len, packets, last) in [
            (MAX_PACKET_PAYLOAD - 1, 1, MAX_PACKET_PAYLOAD - 1),
            (MAX_PACKET_PAYLOAD, 2, 0),
            (MAX_PACKET_PAYLOAD + 1, 2, 1),
            (2 * MAX_PACKET_PAYLOAD, 3, 0),
        ] {
            let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            let next = write_message(&mut out, 250, &body);
            assert_eq!(next, 250u8.wrapping_add(packets as u8));
            let m = frame(&out, 64 << 20).unwrap().unwrap();
            assert_eq!(m.packets, packets);
            assert_eq!(m.wire_len, out.len());
            let tail = &out[out.len() - last - HEADER_LEN..][..3];
            assert_eq!(u32::from_le_bytes([tail[0], tail[1], tail[2], 0]) as usize, last);
            assert_eq!(&*payload(&out, &m), &body[..]);
            // the limit is checked against the whole message, from the headers
            assert!(matches!(
                frame(&out[..HEADER_LEN + 10], len - 1),
                Err(MyWireError::TooLarge { .. }) | Ok(None)
            ));
        }
    }

    #[test]
    fn finish_message_fills_the_header() {
        let mut out = vec![9u8];
        let start = begin_message(&mut out);
        out.extend_from_slice(b"\x00\x00\x00\x02\x00\x00\x00");
        assert_eq!(finish_message(&mut out, start, 2), 3);
        assert_eq!(&out[1..5], &[7, 0, 0, 2]);
    }

    #[test]
    fn sequence_ids_must_count_up_within_a_message() {
        let mut out = Vec::new();
        write_message_with(&mut out, 3, b"abcdefgh", 4);
        out[4 + 4 + 3] = 9; // second packet's sequence id
        assert_eq!(
            frame_with(&out, 100, 4),
            Err(MyWireError::BadSequence { expected: 4, got: 9 })
        );
    }

    #[test]
    fn too_large_is_refused_before_the_bytes_arrive() {
        let header = [0xff, 0xff, 0xff, 0];
        assert!(matches!(frame(&header, 1 << 20), Err(MyWireError::TooLarge { .. })));
    }

    proptest! {
        /// Messages written with any split threshold and cut into any pieces
        /// come back whole, in order, with their sequence ids.
        #[test]
        fn any_split_round_trips(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            full in 1usize..9,
            seq in any::<u8>(),
            cuts in proptest::collection::vec(1usize..17, 0..30),
        ) {
            let mut wire = Vec::new();
            let mut seqs = Vec::new();
            for b in &bodies {
                seqs.push(seq);
                write_message_with(&mut wire, seq, b, full);
            }
            // deliver in pieces; frame whenever something arrived
            let mut buf: Vec<u8> = Vec::new();
            let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() || !buf.is_empty() {
                let n = (*cut.next().unwrap_or(&wire.len())).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                while let Some(m) = frame_with(&buf, 1 << 20, full).unwrap() {
                    got.push((m.first_seq, payload_with(&buf, &m, full).into_owned()));
                    prop_assert_eq!(m.payload_len, got.last().unwrap().1.len());
                    buf.drain(..m.wire_len);
                }
                if n == 0 && at == wire.len() {
                    prop_assert!(buf.is_empty(), "bytes left over");
                }
            }
            let want: Vec<(u8, Vec<u8>)> = seqs.into_iter().zip(bodies).collect();
            prop_assert_eq!(got, want);
        }

        /// Any bytes at all: framing answers, never panics, and a message it
        /// finds lies inside the buffer.
        #[test]
        fn any_bytes_frame_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), full in 1usize..9) {
            if let Ok(Some(m)) = frame_with(&bytes, 32, full) {
                prop_assert!(m.wire_len <= bytes.len());
                prop_assert_eq!(payload_with(&bytes, &m, full).len(), m.payload_len);
            }
        }
    }
}
