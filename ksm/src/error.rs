//! The crate's error type.

/// What can make a `ksm` command fail. Texts never contain key material or OTPs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The YubiHSM (or the emulator) failed or refused.
    #[error(transparent)]
    Hsm(#[from] hsm_proto::Error),
    /// The emulator's (or soft HSM's) configuration is wrong, or its pty cannot start.
    #[error(transparent)]
    Emulator(#[from] hsm_proto::emulator::ConfigError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command line or a configuration value is wrong.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
