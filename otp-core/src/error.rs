//! The crate's one error type: what is wrong with a value given to it (an id, an OTP, a
//! key, an AEAD, a key file). It has no device and no line, so nothing here is retried.

/// Why a value was refused or an AEAD or OTP did not open.
///
/// The YubiHSM 1 driver's error carries it whole (`hsm_proto::Error::Core`), with its
/// text, so the daemon's answers and the tools' exit codes match on one enum.
/// `PartialEq` so tests compare errors with `assert_eq!`. No variant carries key material
/// or an OTP's ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A value longer (or shorter) than its layout allows.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A key-handle string that none of pyhsm's spellings accepts. Only its length is kept:
    /// a key or password pasted into the wrong argument must not reach the terminal or a
    /// log, and a key handle is short enough that the operator sees the typo without a quote.
    #[error("could not parse key handle (a value of {chars} characters given; expected decimal, 0x and hex, or four characters such as KSM1)")]
    InvalidKeyHandle {
        /// How many characters the refused value had.
        chars: usize,
    },
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

/// Result with this crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
