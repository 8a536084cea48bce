//! A software YubiHSM 2 (feature `emulator`): the device model ([`Device`]) and a
//! yubihsm-connector HTTP API in front of it ([`ConnectorEmulator`]), configured by a
//! private TOML file ([`DeviceConfig`]) or in its factory state.
//!
//! It decodes requests with the driver's own types ([`crate::cmd`]) and runs sessions with
//! [`crate::session::DeviceSession`], so the emulator and the driver share every layout and
//! the session cryptography; Yubico's python-yubihsm drives it unmodified (the repository's
//! `tests/python` suite).
//!
//! # What it models
//! - the connector's HTTP API: `POST /connector/api` (one frame each way; bodies under 3
//!   or over 3139 bytes answer 400, other methods 405 with `Allow: POST`),
//!   `GET /connector/status` (`status=OK`, `serial=*`, version, pid, address, port);
//! - sessions: Create/Authenticate Session with the SCP03 cryptograms and MACs, 16 slots
//!   (`sessions-full` beyond), an idle timeout (30 s unless configured: `invalid-session`
//!   after it), Close Session;
//! - objects: authentication keys and otp-aead-keys, with label, domains, capabilities,
//!   delegated capabilities, sequence and origin; Put Authentication Key, Put and Generate
//!   OTP AEAD Key, Delete Object, Get Object Info, List Objects (every filter);
//! - the OTP AEAD commands of the shared notes §4.3/§5: Create, Randomize and Rewrap OTP
//!   AEAD and Decrypt OTP, the CCM nonce being the key's 4 nonce-id bytes as received,
//!   then the AEAD's 6-byte nonce, then three zero bytes; AES-128, -192 and -256 keys;
//! - Echo (plain and in a session), Device Info page 0 (firmware 2.3.1), Get Pseudo
//!   Random;
//! - checks and their error codes: a session's key must hold a command's capability, and
//!   an otp-aead-key the capability of the command using it (`insufficient-permissions`);
//!   an object outside the session's domains does not exist for it (`object-not-found`);
//!   a new object's domains must be the session's and its capabilities (and, for an
//!   authentication key, its delegated capabilities) among the session's delegated ones
//!   (`insufficient-permissions`); an existing id and type is `object-exists`; a failed
//!   authentication `authentication-failed`; a wrong length `wrong-length`; malformed
//!   fields, an algorithm that does not fit the key, or an AEAD that Rewrap cannot open
//!   `invalid-data`; an AEAD or OTP that Decrypt OTP cannot open or check `invalid-otp`;
//! - faults (the knobs `ksm emulate --hsm2 --control` turns): stall, refuse connections,
//!   reset (every session dropped).
//!
//! # What it does not model (and what it chose where the sources are silent)
//! - every other object type and command (asymmetric, HMAC, wrap keys, opaque objects,
//!   options, the audit log, attestation, Device Info page 1, Reset Device, Change
//!   Authentication Key, asymmetric authentication): other command codes answer
//!   `invalid-command`, in a session or not; session commands sent outside a session too;
//! - state across restarts: objects live as long as the process; reset keeps them;
//! - which capability the firmware checks where (shared notes §7.3): here both the
//!   session's key and the target otp-aead-key; Rewrap needs `rewrap-from-otp-aead-key`
//!   on the source and `rewrap-to-otp-aead-key` on the destination (and the session);
//!   Get Object Info needs none; Delete Object needs the delete capability of the type;
//! - Rewrap keeps the AEAD's 6-byte nonce (§7.5), so stores that file AEADs under their
//!   nonce (pyhsm's, by public id) stay valid;
//! - a failed Authenticate Session frees its slot; a Session Message with a bad MAC is
//!   answered in clear with `authentication-failed` and leaves the session as it was; an
//!   unknown or expired session is `invalid-session` in clear (§7.1, §7.6);
//! - session ids are the lowest free slot, 0 to 15 (§7.7); List Objects ANDs its filters,
//!   a capability or domain filter matching any shared bit (§7.10), in id order;
//! - at most 256 objects (`storage-failed` beyond; a configuration of more is refused),
//!   Get Pseudo Random at most 2000 bytes
//!   (`invalid-data`) (§7.8); no message counter limit;
//! - timing: answers come as fast as the host makes them; the connector's `X-Request-ID`,
//!   its Host-header allow-list and its USB errors (HTTP 500) are not reproduced.

mod config;
mod device;
mod http;

pub use config::{
    AuthKeyConfig, DeviceConfig, OtpAeadKeyConfig, DEFAULT_SERIAL, DEFAULT_SESSION_TIMEOUT,
    FACTORY_KEY_ID, FACTORY_LABEL, FACTORY_PASSWORD,
};
pub use device::{
    Device, AUDITABLE_COMMANDS, FIRMWARE, LOG_CAPACITY, MAX_OBJECTS, MAX_RANDOM, MAX_SESSIONS,
};
pub use http::{ConnectorEmulator, CONNECTOR_VERSION};

/// Why an emulator could not be configured or started. No variant carries key material:
/// configuration errors name a place and a field, never the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmulatorError {
    /// The configuration file's text or one of its values is wrong.
    #[error("YubiHSM 2 emulator configuration: {0}")]
    Config(String),
    /// The key file could not be read or is not private.
    #[error(transparent)]
    KeyFile(#[from] otp_core::Error),
    /// The socket, the thread or the runtime could not be set up.
    #[error("YubiHSM 2 emulator: {0}")]
    Io(String),
}
