//! The emulator's own error: what can be wrong with its configuration and its pty link.
//! Errors of the driver's helpers it relies on (key files, key lengths, the pty's I/O) are
//! the driver's [`crate::Error`], wrapped.

use std::path::PathBuf;

/// Why an emulator could not be configured or started. No variant ever carries key
/// material: parser messages go through [`otp_core::redact`] first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration's text or one of its values is wrong; says where (file, line,
    /// column, field), never the text.
    #[error("emulator configuration: {0}")]
    Invalid(String),
    /// Something that is not a symlink is where the pty's link should go.
    #[error("emulator configuration: {} exists and is not a symlink; refusing to replace it", .0.display())]
    LinkInTheWay(PathBuf),
    /// A key file that cannot be read or is not private, a key of the wrong length, or the
    /// pty failing.
    #[error(transparent)]
    Hsm(#[from] crate::Error),
}

/// A key file or key the core refused, as the driver's error of the same name.
impl From<otp_core::Error> for ConfigError {
    fn from(e: otp_core::Error) -> ConfigError {
        ConfigError::Hsm(e.into())
    }
}
