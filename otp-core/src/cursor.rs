//! The bounded byte cursor under both drivers' message readers.
//!
//! A YubiHSM 1 payload is little-endian and a YubiHSM 2's big-endian, and each driver names
//! its own command in its errors, but taking bytes off the front of a message without ever
//! reading past its end is one rule: here. A [`Cursor`] answers `None` where bytes run
//! out (never panics); each driver's `Reader` turns that into its `Truncated` error.

/// Takes bytes off the front of a message.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    /// The next `n` bytes, or `None` if fewer are left (then nothing is taken).
    #[inline]
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.buf.split_first_chunk::<N>()?;
        self.buf = tail;
        Some(*head)
    }

    /// Everything left.
    #[inline]
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// How many bytes are left.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_from_the_front_and_never_past_the_end() {
        let mut c = Cursor::new(&[1, 2, 3, 4, 5]);
        assert_eq!(c.take(2), Some(&[1, 2][..]));
        assert_eq!(c.array::<2>(), Some([3, 4]));
        assert_eq!(c.array::<2>(), None);
        assert_eq!(c.take(2), None);
        assert_eq!(c.remaining(), 1, "a refused take takes nothing");
        assert_eq!(c.rest(), &[5]);
        assert_eq!(c.remaining(), 0);
        assert_eq!(c.take(0), Some(&[][..]));
    }
}
