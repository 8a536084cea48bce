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
//! - opaque objects (`opaque-data`, `opaque-x509-certificate`): Put and Get Opaque;
//!   HMAC keys (`hmac-sha1/256/384/512`, a key of 1 byte up to the hash's block size):
//!   Put and Generate HMAC Key, Sign and Verify HMAC; AES keys (`aes128/192/256`) as
//!   firmware 2.3 has them: Put and Generate Symmetric Key, Encrypt and Decrypt ECB and CBC
//!   over whole blocks (`invalid-data` for anything else);
//! - wrap keys (`aes128/192/256-ccm-wrap`): Put and Generate Wrap Key, Wrap and Unwrap
//!   Data, Export and Import Wrapped of every type modelled here (otp-aead-keys and
//!   authentication keys included, so keys can be cloned between devices). What a wrap
//!   key encrypts is `nonce (13) ‖ AES-CCM ciphertext ‖ tag (16)`, no associated data, a
//!   fresh random nonce each time; an exported object's plaintext is the 59-byte header of
//!   Yubico's `yubihsm-wrap` (the wrap key's algorithm, then the object's capabilities,
//!   id, body length, domains, type, algorithm, sequence, origin and label) and its body
//!   (for authentication and wrap keys their delegated capabilities first, as
//!   `yubihsm-wrap` writes them). Export needs `export-wrapped` on the session and the wrap
//!   key, `exportable-under-wrap` on the object, and every capability of the object among
//!   the wrap key's delegated ones; import needs `import-wrapped` on both, the object's
//!   capabilities among the wrap key's delegated ones and its domains among the session's
//!   (`insufficient-permissions` for each), a free id (`object-exists`), and a blob that
//!   authenticates under the key and names the key's algorithm (`invalid-data`). The
//!   imported object keeps its id, label, capabilities and origin, with the wrapped flag
//!   (`0x10`) added;
//! - the OTP AEAD commands of the shared notes §4.3/§5: Create, Randomize and Rewrap OTP
//!   AEAD and Decrypt OTP, the CCM nonce being the key's 4 nonce-id bytes as received,
//!   then the AEAD's 6-byte nonce, then three zero bytes; AES-128, -192 and -256 keys;
//! - Echo (plain and in a session), Device Info page 0 (firmware 2.3.1: every algorithm
//!   from 1 to `aes-cbc` (54), whatever the emulator models, as the firmware lists what it
//!   has; the log's capacity, 62, and the entries it holds), Get Pseudo Random;
//! - Reset Device: the answer is sealed and sent in the session first, then the device is
//!   in its factory state (the default authentication key alone, at sequence 0; every
//!   session dropped; options off; the log a reset and a boot entry), as python-yubihsm
//!   expects (an empty answer, or a connection the reboot cut);
//! - Change Authentication Key: a session replaces its own key's K-ENC and K-MAC and gets
//!   the id back; another key's id is `invalid-id` (python-yubihsm's device test), then
//!   `change-authentication-key` is needed; an authentication key's size is 40, as the
//!   device reports it;
//! - the audit log (`device/audit.rs`): 62 entries of 32 bytes (number, command, data
//!   length, the session's authentication key, the first and second object the command
//!   used, the answer's first byte, the tick, digest), each digest the first 16 bytes of
//!   SHA-256 over the entry's first 16 bytes and the previous digest (python-yubihsm's
//!   `LogEntry.validate`); after a factory reset the entries a real device shows: number
//!   1 all `0xff`, then the boot entry; a boot entry at each power cycle (the `reset`
//!   knob); Get Log Entries with the unlogged boot and authentication counts; Set Log
//!   Index; the options `force-audit` and `command-audit` (Get and Set Option, values
//!   off/on/fixed): with `force-audit` on and 62 entries unread, a command that would be
//!   logged is refused with `log-full` until the index moves on. A configuration may start
//!   the device with either option on (`force-audit`, `command-audit` in its TOML);
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
//!   reset (a power cycle: every session dropped, a boot entry logged).
//!
//! # What it does not model (and what it chose where the sources are silent)
//! - every other object type and command: asymmetric keys (and with them RSA wrap keys,
//!   public wrap keys, SSH templates and signing), attestation, the FIPS mode, Device Info
//!   page 1, asymmetric authentication; their command codes answer `invalid-command`, in a
//!   session or not; session commands sent outside a session too. Import Wrapped of an
//!   object of such a type is `invalid-data`. Get Device Public Key (plain) answers: each
//!   emulator makes a P-256 key pair at start, keeps its public point across resets and
//!   drops the private half, which only asymmetric authentication would use;
//! - where Yubico documents no layout or rule, this emulator chose: an exported
//!   otp-aead-key's body is its nonce id (4 bytes, as received) then its key; an exported
//!   HMAC key's body is its key as stored (`yubihsm-wrap`'s own HMAC layout is not
//!   reproduced); Get Object Info's size of an opaque object,
//!   HMAC, symmetric or wrap key is the length of that body (so 8 more than the key for a
//!   wrap key, as 40 for an authentication key), an otp-aead-key's its key's length; a
//!   generated HMAC key is one block of random bytes; Wrap Data and Sign HMAC refuse empty
//!   data; an imported object gets this device's next sequence number for its id;
//! - the code for a wrap key that lacks `wrap-data` or `unwrap-data`: `invalid-data`, as
//!   firmware before 2.5 answers (python-yubihsm's `test_wrap_data_many`); every other
//!   key lacking a capability is `insufficient-permissions`;
//! - state across restarts: objects, options and the log live as long as the process; the
//!   `reset` knob keeps them;
//! - the audit log, where Yubico is silent: which commands are logged is `command-audit`
//!   alone (all off, as firmware 2.3.1 ships; the codes it takes are the 60 of Yubico's
//!   Get Option example less 2.4's RSA wrapping), and `force-audit` only decides what a
//!   full log does (wrap around, or refuse what it would log); commands run first and are
//!   logged after, with their result; Create and Authenticate Session, Close Session,
//!   Device Info, Get Log Entries and Set Log Index are never refused for a full log
//!   (Yubico: a session can always be opened to read the log), an authentication that
//!   could not be logged counts as an unlogged authentication (Create Session does not
//!   count); Set Log Index needs `get-log-entries`, zeroes the unlogged counts, and takes
//!   an index from before the oldest entry held (freeing nothing) but not one past the
//!   newest (`invalid-data`); an entry's objects are those the command looked up or
//!   created, in that order (`0xffff` if none); a refusal's result is `0x7f`; the tick is
//!   milliseconds since the boot; the reset entry's digest is the constant real devices
//!   showed in published `audit get` output (Yubico does not say how it is made), so the
//!   chain after a reset is a device's byte for byte; a fixed option (`0x02`) cannot be
//!   lowered (`invalid-data`); `algorithm-toggle` and `fips-mode` are not modelled
//!   (`invalid-data` for both, which is also what tells python-yubihsm the device is no
//!   FIPS one);
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
