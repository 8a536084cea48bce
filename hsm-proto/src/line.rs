//! The transport seam below framing: anything that carries bytes to a YubiHSM.
//!
//! The serial port (real device or the emulator's pty) and plain byte streams (unix
//! sockets, the in-process soft HSM) all implement [`Line`], so resync, timeouts and
//! configuration-mode detection are the same code everywhere and run in CI.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serialport::{ClearBuffer, SerialPort, TTYPort};

use crate::{Error, Result};

/// The device's baud rate; CDC-ACM ignores it, but pyhsm sets it and so do we.
pub const BAUD_RATE: u32 = 115_200;

/// A byte line to a YubiHSM. `read` returns `ErrorKind::TimedOut` (or `WouldBlock`) when
/// nothing arrives within the timeout last set, and `Ok(0)` when the line is closed.
pub trait Line: Read + Write + Send {
    /// Sets how long one `read` may wait.
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()>;
    /// Discards whatever the OS has buffered from the device.
    fn clear_input(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Ends a multi-command operation (a buffer load and its seals, an unlock and its
    /// admin OTP): the commands since the last call relied on device state, those after it
    /// do not. A line owned outright has nothing to do; an implementation that shares the
    /// device between clients may use it to let others in again.
    fn end_operation(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Line for TTYPort {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        SerialPort::set_timeout(self, t).map_err(io::Error::from)
    }
    fn clear_input(&mut self) -> io::Result<()> {
        self.clear(ClearBuffer::Input).map_err(io::Error::from)
    }
}

impl Line for UnixStream {
    fn set_read_timeout(&mut self, t: Duration) -> io::Result<()> {
        UnixStream::set_read_timeout(self, Some(t.max(Duration::from_millis(1))))
    }
}

/// Opens a serial device (`/dev/ttyACM0`, or the emulator's pty link) at 115200 8N1 with
/// no flow control, raw, and exclusive so a second process cannot interleave frames.
pub fn open_serial(path: &Path, read_timeout: Duration) -> Result<TTYPort> {
    serialport::new(path.to_string_lossy(), BAUD_RATE)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(read_timeout)
        .open_native()
        .map_err(|e| {
            let mut reason = e.to_string();
            if reason.contains("exclusive") {
                reason.push_str(" (another process has the device open: if the ksm daemon runs, use its sharing socket)");
            }
            Error::Open { path: path.display().to_string(), reason }
        })
}
