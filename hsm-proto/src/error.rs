//! The crate's one error type.

use std::time::Duration;

use crate::{Opcode, Status};

/// Everything that can go wrong talking to or computing for a YubiHSM 1 (the emulator's
/// configuration has its own error, `emulator::ConfigError`); what the core refuses is
/// [`Error::Core`].
///
/// `PartialEq` so tests compare errors with `assert_eq!`. No variant ever carries key
/// material or an OTP's ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The device answered with a status other than OK.
    #[error("command {cmd} failed: {status}")]
    Device {
        /// The command that was refused.
        cmd: Opcode,
        /// The status the device gave.
        status: Status,
    },
    /// Nothing (or not all of a response) arrived before the deadline.
    #[error("YubiHSM did not respond to {cmd} within {after:?}")]
    Timeout {
        /// The command waiting for its response.
        cmd: Opcode,
        /// How long we waited.
        after: Duration,
    },
    /// The device is at its configuration console, not in HSM mode.
    #[error("YubiHSM is in configuration mode (console prompt {prompt:?}); leave the console with `exit` or replug it")]
    ConfigMode {
        /// The prompt line seen.
        prompt: String,
    },
    /// A response for another command arrived.
    #[error("YubiHSM responded to the wrong command: sent {sent}, got response byte 0x{got:02x}")]
    WrongCommand {
        /// What we sent.
        sent: Opcode,
        /// The command byte received.
        got: u8,
    },
    /// Bytes that are not a response frame.
    #[error("unknown response from the serial device: {0}")]
    Garbage(String),
    /// A field the device echoes (key handle, nonce, public id, length) did not match.
    #[error("{cmd} response echoed a different {field}")]
    EchoMismatch {
        /// The command.
        cmd: Opcode,
        /// The field that differed.
        field: &'static str,
    },
    /// The line was closed (device unplugged, emulator gone).
    #[error("YubiHSM connection closed")]
    Closed,
    /// The device could not be opened.
    #[error("cannot open YubiHSM device {path}: {reason}")]
    Open {
        /// Device path.
        path: String,
        /// What the OS said.
        reason: String,
    },
    /// Some other I/O error on the line.
    #[error("I/O error on the YubiHSM line: {0}")]
    Io(String),
    /// The echo link test at open returned different bytes (line not 8-bit clean?).
    #[error("echo link test failed: the serial line altered the bytes (is it in raw mode?)")]
    LinkTest,
    /// SYSTEM_INFO reported a protocol other than 1.
    #[error("unsupported YubiHSM protocol version {0} (expected 1)")]
    ProtocolVersion(u8),
    /// A message did not fit the frame or a field's limit.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message was shorter than its fixed layout.
    #[error("{0} message is truncated")]
    Truncated(Opcode),
    /// A message had bytes after its fixed layout.
    #[error("{0} message has trailing bytes")]
    TrailingBytes(Opcode),
    /// A field held a value the layout does not allow.
    #[error("{cmd}: invalid {field}")]
    InvalidField {
        /// The command.
        cmd: Opcode,
        /// The field.
        field: &'static str,
    },
    /// The device is not at its configuration console (`ksm provision` needs it there).
    #[error("not at the configuration console: {0}")]
    NotAtConsole(String),
    /// The console did not answer as expected before the deadline. `said` is the end of what
    /// it did send, redacted ([`crate::console_session`]).
    #[error("the configuration console did not {waiting_for} within {after:?}; it said: {said:?}")]
    ConsoleTimeout {
        /// What was awaited, and after which (masked) input.
        waiting_for: String,
        /// How long we waited.
        after: Duration,
        /// The end of its redacted output.
        said: String,
    },
    /// Bytes that are no console text arrived where the console should answer (HSM-mode
    /// framing, or noise).
    #[error("the configuration console sent binary data (is the device in HSM mode?)")]
    ConsoleBinary,
    /// A permission flag name or number that could not be parsed.
    #[error("unknown permission flag {0:?}")]
    InvalidFlag(String),
    /// A value the core refused: a key handle, public id, OTP, key or AEAD of the wrong
    /// shape, an OTP or AEAD that does not open, a key file that is not private. Its text
    /// is the core's.
    #[error(transparent)]
    Core(#[from] otp_core::Error),
}

impl Error {
    /// The device status, if this is a device refusal.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Device { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for errors of the line itself (the device should be reopened), as opposed to a
    /// refusal or bad input.
    pub fn is_link_error(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::ConfigMode { .. }
                | Error::WrongCommand { .. }
                | Error::Garbage(_)
                | Error::Closed
                | Error::Open { .. }
                | Error::Io(_)
                | Error::LinkTest
                | Error::ProtocolVersion(_)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset => Error::Closed,
            _ if e.raw_os_error() == Some(nix::libc::EIO) => Error::Closed,
            _ => Error::Io(e.to_string()),
        }
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
