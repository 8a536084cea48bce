//! A [`Line`] to a scripted far end, for the unit tests of what talks over a line (the
//! protocol client, the console session): the far end's answers come back a byte per read,
//! as a slow serial line gives them, and a read with nothing to give times out at once.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::time::Duration;

use crate::line::Line;

/// The far end: what it sends back for the bytes written to it.
pub(crate) trait FarEnd: Send {
    /// Takes `written` and puts its answer, if any, on `out`.
    fn answer(&mut self, written: &[u8], out: &mut VecDeque<u8>);
}

/// A line whose far end is `far`.
pub(crate) struct Scripted<F> {
    /// The far end, for a test to change or inspect while the line is in use.
    pub(crate) far: F,
    out: VecDeque<u8>,
}

impl<F> Scripted<F> {
    pub(crate) fn new(far: F) -> Scripted<F> {
        Scripted {
            far,
            out: VecDeque::new(),
        }
    }
}

impl<F: FarEnd> Read for Scripted<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.out.pop_front() {
            Some(b) => {
                buf[0] = b;
                Ok(1)
            }
            None => Err(ErrorKind::TimedOut.into()),
        }
    }
}

impl<F: FarEnd> Write for Scripted<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.far.answer(buf, &mut self.out);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<F: FarEnd> Line for Scripted<F> {
    fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
        Ok(())
    }
}
