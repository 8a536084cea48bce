//! The in-process soft HSM: the emulator engine behind a [`Line`] that needs no pty.
//!
//! Requests still go through the same frame encoder and the engine's frame parser, so the
//! soft HSM speaks exactly the bytes a device does; only the serial port is missing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Engine;
use crate::line::Line;

/// A line whose far end is an [`Engine`] in this process.
pub struct SoftLine {
    engine: Arc<Mutex<Engine>>,
    out: VecDeque<u8>,
}

impl SoftLine {
    /// A line to `engine`.
    pub fn new(engine: Arc<Mutex<Engine>>) -> SoftLine {
        SoftLine {
            engine,
            out: VecDeque::new(),
        }
    }
}

impl Read for SoftLine {
    /// The engine answers synchronously, so an empty queue means "nothing will come":
    /// report a timeout at once instead of waiting.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = buf.len().min(self.out.len());
        for (slot, b) in buf.iter_mut().zip(self.out.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for SoftLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let reply = self
            .engine
            .lock()
            .map_err(|_| io::Error::other("soft HSM engine poisoned"))?
            .feed(buf);
        self.out.extend(reply);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Line for SoftLine {
    fn set_read_timeout(&mut self, _t: Duration) -> io::Result<()> {
        Ok(())
    }
    fn clear_input(&mut self) -> io::Result<()> {
        self.out.clear();
        Ok(())
    }
}
