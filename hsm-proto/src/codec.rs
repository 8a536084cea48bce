//! A small bounded codec for YubiHSM frames and the fixed little-endian layouts inside them.
//!
//! A [`Frame`] is the one definition of the wire layout, `bcnt, cmd, payload` (`bcnt` counts
//! the command byte and the payload; a response sets [`RESPONSE_BIT`] in `cmd`), and an
//! [`Assembler`] the one way of cutting a byte stream into frames. Payloads are at most 96
//! bytes, so there is no need for a serializer framework: a [`Reader`] hands out integers
//! and arrays and fails (never panics) when bytes run out, and [`Reader::finish`] rejects
//! trailing bytes; a [`Writer`] appends.

use otp_core::cursor::Cursor;
use zeroize::Zeroizing;

use crate::{Error, KeyHandle, Nonce, Opcode, Result, Status, RESPONSE_BIT};

/// Largest payload after the command byte (`YSM_MAX_PKT_SIZE`).
pub const MAX_PAYLOAD: usize = 0x60;

/// One complete frame, `bcnt, cmd, payload`, its layout checked when it was made. Its bytes
/// may be a key or a plaintext: they are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Zeroizing<Vec<u8>>,
}

/// Names the command byte and the length, never the payload.
impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame(0x{:02x}, {} bytes)",
            self.cmd_byte(),
            self.bytes.len()
        )
    }
}

impl Frame {
    /// A request frame for `op`; fails if the payload is over [`MAX_PAYLOAD`].
    pub fn request(op: Opcode, payload: &[u8]) -> Result<Frame> {
        Frame::new(op.to_u8(), payload)
    }

    /// A response frame for `op` (command byte `op | RESPONSE_BIT`); fails if the payload
    /// is over [`MAX_PAYLOAD`].
    pub fn response(op: Opcode, payload: &[u8]) -> Result<Frame> {
        Frame::new(op.to_u8() | RESPONSE_BIT, payload)
    }

    fn new(cmd: u8, payload: &[u8]) -> Result<Frame> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::TooLong {
                what: "frame payload",
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(payload.len() + 2));
        bytes.push(payload.len() as u8 + 1);
        bytes.push(cmd);
        bytes.extend_from_slice(payload);
        Ok(Frame { bytes })
    }

    /// `bytes` as one complete frame: a byte count that is the length of the rest, a
    /// command byte, and at most [`MAX_PAYLOAD`] payload bytes. `None` otherwise.
    pub fn parse(bytes: &[u8]) -> Option<Frame> {
        match bytes {
            [bcnt, _, ..] if Frame::payload_len(*bcnt) == Some(bytes.len() - 2) => Some(Frame {
                bytes: Zeroizing::new(bytes.to_vec()),
            }),
            _ => None,
        }
    }

    /// The payload length a frame starting with byte count `bcnt` has, or `None` if no
    /// frame starts so (zero, or longer than [`MAX_PAYLOAD`]).
    pub fn payload_len(bcnt: u8) -> Option<usize> {
        let n = usize::from(bcnt).checked_sub(1)?;
        (n <= MAX_PAYLOAD).then_some(n)
    }

    /// The command byte, [`RESPONSE_BIT`] included.
    pub fn cmd_byte(&self) -> u8 {
        self.bytes[1]
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.bytes[2..]
    }

    /// The whole frame, as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole frame as a plain vector, which the caller wipes if it holds a secret.
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes)
    }
}

/// Cuts a byte stream into frames, one byte at a time. Between frames, a zero byte (the
/// resync burst) or a byte count no frame can have (line noise) is skipped; any other byte
/// starts a frame of that count. The partial frame is wiped when taken or dropped.
#[derive(Default)]
pub struct Assembler {
    pending: Zeroizing<Vec<u8>>,
}

impl Assembler {
    /// An assembler between frames.
    pub fn new() -> Assembler {
        Assembler::default()
    }

    /// Takes one byte; returns the frame it completes.
    pub fn push(&mut self, b: u8) -> Option<Frame> {
        let Some(&bcnt) = self.pending.first() else {
            if Frame::payload_len(b).is_some() {
                self.pending.push(b);
            }
            return None;
        };
        self.pending.push(b);
        if self.pending.len() < usize::from(bcnt) + 1 {
            return None;
        }
        Some(Frame {
            bytes: std::mem::take(&mut self.pending),
        })
    }

    /// Drops (and wipes) a partial frame.
    pub fn clear(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.pending);
    }
}

/// Reads one message's payload, little-endian, through the core's bounded
/// [`Cursor`]; running out of bytes is [`Error::Truncated`] for the message's opcode.
pub struct Reader<'a> {
    cur: Cursor<'a>,
    op: Opcode,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, the payload of an `op` message (named in errors).
    pub fn new(op: Opcode, buf: &'a [u8]) -> Reader<'a> {
        Reader {
            cur: Cursor::new(buf),
            op,
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        self.cur.take(n).ok_or(Error::Truncated(self.op))
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.cur.array().ok_or(Error::Truncated(self.op))
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A key handle.
    pub fn key_handle(&mut self) -> Result<KeyHandle> {
        Ok(KeyHandle(self.u32()?))
    }

    /// A 6-byte nonce / public id field.
    pub fn nonce(&mut self) -> Result<Nonce> {
        Ok(Nonce(self.array()?))
    }

    /// A status byte.
    pub fn status(&mut self) -> Result<Status> {
        Ok(Status::from_u8(self.u8()?))
    }

    /// A length byte followed by that many bytes.
    pub fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.cur.rest()
    }

    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<()> {
        if self.cur.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::TrailingBytes(self.op))
        }
    }
}

/// Builds one message's payload.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer {
            buf: Vec::with_capacity(MAX_PAYLOAD + 2),
        }
    }

    /// Appends bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a key handle.
    pub fn key_handle(&mut self, kh: KeyHandle) -> &mut Self {
        self.u32(kh.0)
    }

    /// Appends a nonce / public id field.
    pub fn nonce(&mut self, n: &Nonce) -> &mut Self {
        self.bytes(&n.0)
    }

    /// Appends a status byte.
    pub fn status(&mut self, s: Status) -> &mut Self {
        self.u8(s.to_u8())
    }

    /// Appends a length byte and the bytes. Lengths over 255 are caught by the frame limit;
    /// here they are truncated to keep encoding infallible.
    pub fn len_prefixed(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len().min(255);
        self.u8(n as u8).bytes(&b[..n])
    }

    /// The payload.
    pub fn into_inner(mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl Drop for Writer {
    /// Payloads may hold secrets (passwords, plaintexts); wipe the buffer if it was not taken.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_built_and_parsed_by_one_rule() {
        let req = Frame::request(Opcode::Echo, b"\x01A").unwrap();
        assert_eq!(req.as_bytes(), [0x03, 0x23, 0x01, b'A']);
        let resp = Frame::response(Opcode::Echo, b"\x01A").unwrap();
        assert_eq!(resp.as_bytes(), [0x03, 0xa3, 0x01, b'A']);
        assert_eq!(Frame::parse(resp.as_bytes()), Some(resp.clone()));
        assert_eq!(resp.cmd_byte(), 0xa3);
        assert_eq!(resp.payload(), b"\x01A");
        assert_eq!(Frame::parse(&[1, 0x26]).unwrap().payload(), b"");
        assert!(Frame::request(Opcode::Echo, &[0; MAX_PAYLOAD]).is_ok());
        assert!(matches!(
            Frame::request(Opcode::Echo, &[0; MAX_PAYLOAD + 1]),
            Err(Error::TooLong { .. })
        ));
        for bad in [
            &[][..],
            &[0][..],
            &[0, 1][..],
            &[5, 0x26][..],
            &[1, 0x26, 0][..],
        ] {
            assert_eq!(Frame::parse(bad), None, "{bad:02x?}");
        }
        let mut long = vec![0x62; 0x63];
        assert_eq!(Frame::parse(&long), None);
        long.truncate(0x62);
        long[0] = 0x61;
        assert_eq!(
            Frame::parse(&long).map(|f| f.payload().len()),
            Some(MAX_PAYLOAD)
        );
        assert_eq!(
            format!("{:?}", Frame::parse(&[2, 0x27, 0xab]).unwrap()),
            "Frame(0x27, 3 bytes)"
        );
    }

    #[test]
    fn the_assembler_skips_resync_and_noise_bytes_between_frames() {
        let mut a = Assembler::new();
        let mut frames = Vec::new();
        for b in [0, 0, 0x62, 0xff, 0x02, 0x23, 0x00, 0x00, 0x01, 0x26] {
            frames.extend(a.push(b));
        }
        let frames: Vec<&[u8]> = frames.iter().map(Frame::as_bytes).collect();
        assert_eq!(frames, [&[0x02, 0x23, 0x00][..], &[0x01, 0x26][..]]);
        // A partial frame is dropped by clear; the next byte starts afresh.
        a.push(0x03);
        a.push(0x23);
        a.clear();
        assert_eq!(a.push(0x01), None);
        assert_eq!(a.push(0x26).map(Frame::into_bytes), Some(vec![0x01, 0x26]));
    }
}
