//! A small bounded codec: the frame layout `cmd, len (u16 big-endian), data`, and the
//! fixed big-endian layouts inside `data`.
//!
//! A [`Frame`] is the one definition of the layout, used for plain commands, for the outer
//! `SessionMessage` and for the inner frames it carries. Frames are at most a few KiB and
//! every field has a fixed size or a length the frame gives, so a [`Reader`] that hands
//! out integers and arrays and fails (never panics) when bytes run out is all the parser
//! needed; [`Reader::finish`] refuses trailing bytes. A [`Writer`] appends.

use otp_core::cursor::Cursor;
use zeroize::{Zeroize, Zeroizing};

use crate::{CommandCode, Error, Result};

/// Size of the frame header: command byte and big-endian length.
pub const HEADER_LEN: usize = 3;

/// Largest `data` field of a frame: libyubihsm's message buffer (`SCP_MSG_BUF_SIZE`);
/// yubihsm-connector refuses request bodies over `HEADER_LEN + MAX_DATA` bytes.
/// (python-yubihsm keeps to 2048 until the device reports firmware 2.4.0 or later.)
pub const MAX_DATA: usize = 3136;

/// One complete frame, its layout checked when it was made. Its bytes may be a key or a
/// plaintext (a `PutOtpAeadKey` before sealing, a decrypted inner frame): wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Zeroizing<Vec<u8>>,
}

/// Names the command byte and the length, never the data.
impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame(0x{:02x}, {} bytes)", self.cmd(), self.bytes.len())
    }
}

impl Frame {
    /// A frame with command byte `cmd`; fails if `data` is over [`MAX_DATA`].
    pub fn new(cmd: u8, data: &[u8]) -> Result<Frame> {
        if data.len() > MAX_DATA {
            return Err(Error::TooLong {
                what: "frame data",
                len: data.len(),
                max: MAX_DATA,
            });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(HEADER_LEN + data.len()));
        bytes.push(cmd);
        // MAX_DATA < 2^16, so the length always fits.
        bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
        bytes.extend_from_slice(data);
        Ok(Frame { bytes })
    }

    /// `bytes` as exactly one frame: a header whose length is the number of bytes after
    /// it, and at most [`MAX_DATA`] of them.
    ///
    /// Stricter than python-yubihsm, which ignores bytes after the length it read: the
    /// connector and the USB endpoint deliver one frame per answer, so extra bytes mean a
    /// confused peer, and an emulator that pads wrongly should be caught here.
    pub fn parse(bytes: &[u8]) -> Result<Frame> {
        let Some((&[_, hi, lo], data)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(Error::Frame("shorter than its 3-byte header"));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len != data.len() {
            return Err(Error::Frame(
                "length field does not match the bytes that came",
            ));
        }
        if len > MAX_DATA {
            return Err(Error::TooLong {
                what: "frame data",
                len,
                max: MAX_DATA,
            });
        }
        Ok(Frame {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// The command byte (with [`crate::RESPONSE_BIT`] in a successful response).
    pub fn cmd(&self) -> u8 {
        self.bytes[0]
    }

    /// The data after the header.
    pub fn data(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The whole frame as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole frame as a plain vector; the caller wipes it if it holds a secret.
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes)
    }
}

/// Reads one message's data, big-endian, through the core's bounded [`Cursor`];
/// running out of bytes is [`Error::Truncated`] for the message's command.
pub struct Reader<'a> {
    cur: Cursor<'a>,
    cmd: CommandCode,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, the data of a `cmd` message (named in errors).
    pub fn new(cmd: CommandCode, buf: &'a [u8]) -> Reader<'a> {
        Reader {
            cur: Cursor::new(buf),
            cmd,
        }
    }

    /// The command whose data this is.
    pub fn cmd(&self) -> CommandCode {
        self.cmd
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        self.cur.take(n).ok_or(Error::Truncated(self.cmd))
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.cur.array().ok_or(Error::Truncated(self.cmd))
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.cur.remaining()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.cur.rest()
    }

    /// An [`Error::InvalidField`] for this message.
    pub fn invalid(&self, field: &'static str) -> Error {
        Error::InvalidField {
            cmd: self.cmd,
            field,
        }
    }

    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<()> {
        if self.cur.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::TrailingBytes(self.cmd))
        }
    }
}

/// Builds one message's data. The buffer may hold a key: wiped on drop unless taken.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
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

    /// Appends a big-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Appends a big-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// The data, to be wiped by the caller if secret.
    pub fn into_inner(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut self.buf))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_built_and_parsed_by_one_rule() {
        let f = Frame::new(0x01, &[1, 2, 3]).unwrap();
        assert_eq!(f.as_bytes(), [0x01, 0x00, 0x03, 1, 2, 3]);
        assert_eq!(Frame::parse(f.as_bytes()).unwrap(), f);
        assert_eq!(f.data(), [1, 2, 3]);
        assert_eq!(format!("{f:?}"), "Frame(0x01, 6 bytes)");
        assert_eq!(Frame::parse(&[0x84, 0, 0]).unwrap().data(), b"");

        for bad in [
            &[][..],
            &[0x81, 0][..],
            &[0x81, 0, 2, 1][..],
            &[0x81, 0, 0, 1][..],
        ] {
            assert!(
                matches!(Frame::parse(bad), Err(Error::Frame(_))),
                "{bad:02x?}"
            );
        }
        // The length field is big-endian: 01 00 is 256, not 1.
        let mut long = vec![0x81, 0x01, 0x00];
        long.extend([7; 256]);
        assert_eq!(Frame::parse(&long).unwrap().data().len(), 256);

        assert!(Frame::new(0x01, &[0; MAX_DATA]).is_ok());
        assert!(matches!(
            Frame::new(0x01, &[0; MAX_DATA + 1]),
            Err(Error::TooLong { len: 3137, .. })
        ));
        let mut over = vec![0x81];
        over.extend((MAX_DATA as u16 + 1).to_be_bytes());
        over.resize(HEADER_LEN + MAX_DATA + 1, 0);
        assert!(matches!(Frame::parse(&over), Err(Error::TooLong { .. })));
    }

    #[test]
    fn the_reader_is_big_endian_and_fails_instead_of_panicking() {
        let mut r = Reader::new(
            CommandCode::Echo,
            &[0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 9, 0xff],
        );
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u64().unwrap(), 9);
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u16(), Err(Error::Truncated(CommandCode::Echo)));
        assert_eq!(r.u8().unwrap(), 0xff);
        r.finish().unwrap();
        let r = Reader::new(CommandCode::Echo, &[1]);
        assert_eq!(r.finish(), Err(Error::TrailingBytes(CommandCode::Echo)));

        let mut w = Writer::new();
        w.u8(1).u16(0x0203).u64(0x0405);
        assert_eq!(*w.into_inner(), [1, 2, 3, 0, 0, 0, 0, 0, 0, 4, 5]);
    }
}
