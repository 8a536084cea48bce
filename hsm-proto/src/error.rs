//! The crate's one error type.

use std::time::Duration;

use crate::{Opcode, Status};

/// Everything that can go wrong talking to or computing for a YubiHSM 1 (the emulator's
/// configuration has its own error, `emulator::ConfigError`).
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
    /// A key-handle string that none of pyhsm's spellings accepts. Only its length is kept:
    /// a key or password pasted into the wrong argument must not reach the terminal or a
    /// log, and a key handle is short enough that the operator sees the typo without a quote.
    #[error("could not parse key handle (a value of {chars} characters given; expected decimal, 0x and hex, or four characters such as KSM1)")]
    InvalidKeyHandle {
        /// How many characters the refused value had.
        chars: usize,
    },
    /// A permission flag name or number that could not be parsed.
    #[error("unknown permission flag {0:?}")]
    InvalidFlag(String),
    /// Text that is not modhex.
    #[error("not modhex")]
    InvalidModhex,
    /// Not a valid public id.
    #[error("invalid public id {0:?}")]
    InvalidPublicId(String),
    /// An OTP string of the wrong shape (length, alphabet).
    #[error("invalid OTP format: {0}")]
    InvalidOtp(&'static str),
    /// The OTP decrypted, but its CRC or uid is wrong.
    #[error("corrupt OTP (CRC or uid mismatch)")]
    CorruptOtp,
    /// An AEAD's MAC did not verify (software CCM).
    #[error("AEAD integrity check failed")]
    AeadAuth,
    /// A key of a length AES cannot use.
    #[error("unsupported key length {0} (16, 24 or 32 bytes)")]
    KeyLength(usize),
    /// Hex text could not be decoded.
    #[error("invalid hex in {0}")]
    InvalidHex(&'static str),
    /// A file holding keys in clear is not private, not a file, unreadable or too long
    /// (see [`crate::keyfile`]). The reason never quotes the file's text.
    #[error("{}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
