//! A small bounded codec for the fixed little-endian layouts of YubiHSM messages.
//!
//! Frames are at most 96 payload bytes, so there is no need for a serializer framework: a
//! [`Reader`] hands out integers and arrays and fails (never panics) when bytes run out, and
//! [`Reader::finish`] rejects trailing bytes; a [`Writer`] appends.

use crate::{Error, KeyHandle, Nonce, Opcode, Result, Status};

/// Largest payload after the command byte (`YSM_MAX_PKT_SIZE`).
pub const MAX_PAYLOAD: usize = 0x60;

/// Reads one message's payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    op: Opcode,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, the payload of an `op` message (named in errors).
    pub fn new(op: Opcode, buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, op }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Truncated(self.op));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
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
        std::mem::take(&mut self.buf)
    }

    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
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
