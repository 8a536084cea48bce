//! The crate's one error type.

use std::time::Duration;

use crate::{CommandCode, ErrorCode};

/// Everything that can go wrong building, parsing, sealing or carrying YubiHSM 2 messages.
///
/// `PartialEq` so tests compare errors with `assert_eq!`. No variant carries key material,
/// a password, a plaintext or an OTP, and none quotes bytes a device or connector sent
/// beyond a command byte, an HTTP status or a status value from a fixed list: their texts
/// go to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The device refused the command with an error frame.
    #[error("YubiHSM 2 refused {cmd}: {code}")]
    Device {
        /// The command that was refused.
        cmd: CommandCode,
        /// The device's error code.
        code: ErrorCode,
    },
    /// A message ended before its layout did.
    #[error("{0} message is truncated")]
    Truncated(CommandCode),
    /// A message had bytes after its layout.
    #[error("{0} message has trailing bytes")]
    TrailingBytes(CommandCode),
    /// A field held a value its layout does not allow.
    #[error("{cmd}: invalid {field}")]
    InvalidField {
        /// The command.
        cmd: CommandCode,
        /// The field.
        field: &'static str,
    },
    /// Bytes that are not one frame: shorter than its header, or a length field that does
    /// not match the bytes that came.
    #[error("not a YubiHSM 2 frame: {0}")]
    Frame(&'static str),
    /// A message or field over its limit.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The answer was for another command.
    #[error("sent {sent}, but the answer's command byte is 0x{got:02x}")]
    WrongCommand {
        /// What was sent.
        sent: CommandCode,
        /// The command byte that came back.
        got: u8,
    },
    /// A field the device echoes (session id, object id, data) differs from the request.
    #[error("{cmd} answer echoed a different {field}")]
    EchoMismatch {
        /// The command.
        cmd: CommandCode,
        /// The field.
        field: &'static str,
    },
    /// The card cryptogram the device sent is not the one our keys give: wrong
    /// authentication key or password (or not a real device).
    #[error("the device's card cryptogram does not match: wrong authentication key or password")]
    CardCryptogram,
    /// A session message's MAC did not verify (a command's C-MAC on the device's side, a
    /// response's R-MAC on the host's).
    #[error("session message MAC does not verify")]
    Mac,
    /// A decrypted session message is not padded as SCP03 pads (`80`, then zeros).
    #[error("session message padding is invalid")]
    Padding,
    /// The session cannot carry more messages: it failed (a bad MAC, a lost answer: its
    /// MAC chain is out of step with the device's), was closed, or used up its counter.
    /// Open a new one.
    #[error("session {0} is no longer usable; open a new one")]
    SessionUnusable(u8),
    /// A key, password or label of a length that cannot be used.
    #[error("{what} must be {expected}, got {len} bytes")]
    Length {
        /// What it is.
        what: &'static str,
        /// The lengths allowed, in words.
        expected: &'static str,
        /// The length given.
        len: usize,
    },
    /// The connector or device did not answer in time.
    #[error("no answer from {peer} within {after:?}")]
    Timeout {
        /// Who was waited for (`yubihsm-connector at …`, `USB device`).
        peer: String,
        /// How long.
        after: Duration,
    },
    /// The connector could not be reached at all: not running, wrong address, or it went
    /// away mid-request.
    #[error("yubihsm-connector at {url} is unreachable: {reason}")]
    ConnectorUnreachable {
        /// Its base URL.
        url: String,
        /// What the OS said.
        reason: String,
    },
    /// The connector answered with an HTTP error (it says 500 when it lost the device).
    #[error("yubihsm-connector at {url} answered HTTP {status}")]
    ConnectorHttp {
        /// Its base URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The connector runs but has no YubiHSM 2 (its status page does not say `status=OK`).
    #[error("yubihsm-connector at {url} has no device (status {status})")]
    NoDevice {
        /// The status it reported, if a known one (`NO_DEVICE`); else `missing` or
        /// `unrecognised`, never the connector's own text.
        status: &'static str,
        /// Its base URL.
        url: String,
    },
    /// A USB error (claimed by another process, no permission, a failed transfer).
    #[error("USB: {0}")]
    Usb(String),
    /// The USB device went away (unplugged, reset) while it was in use.
    #[error("the YubiHSM 2 on USB is gone (unplugged or reset)")]
    DeviceGone,
    /// An earlier exchange on this transport failed, so its answers may be out of step with
    /// its requests (a late answer may still be queued): it carries nothing more. Reopen it.
    #[error("the transport failed earlier and must be reopened")]
    TransportPoisoned,
    /// Some other I/O error.
    #[error("I/O error: {0}")]
    Io(String),
}

impl Error {
    /// The device's error code, if the device refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Device { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for failures of the way to the device (connector, USB, timeouts), after which
    /// a caller reconnects, as opposed to a refusal or a malformed message.
    pub fn is_transport_error(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::ConnectorUnreachable { .. }
                | Error::ConnectorHttp { .. }
                | Error::NoDevice { .. }
                | Error::Usb(_)
                | Error::DeviceGone
                | Error::TransportPoisoned
                | Error::Io(_)
        )
    }
}

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
