//! The crate's one error type. Every variant about a file names its path.

use std::path::PathBuf;

/// What can go wrong reading or writing the AEAD store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store's base directory is missing or not a directory.
    #[error("AEAD directory {0} does not exist or is not a directory")]
    NoBase(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file starts with the AEAD marker but has a version we do not know.
    #[error("{path}: unknown AEAD file format version {version}")]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version byte.
        version: u8,
    },
    /// The file's length does not fit its format.
    #[error("{path}: malformed AEAD file ({reason})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A version-1 file names another key handle than the directory it is in.
    #[error("{path}: file is for key handle 0x{in_file:x} but lies in the directory of 0x{dir:x}")]
    KeyHandleMismatch {
        /// The file.
        path: PathBuf,
        /// Key handle in the file.
        in_file: u32,
        /// Key handle of the directory.
        dir: u32,
    },
    /// A directory (or other non-file) where an AEAD file should be.
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    /// A symlink that leads outside the store.
    #[error("{0}: symlink leads outside the AEAD directory")]
    SymlinkEscape(PathBuf),
    /// An AEAD exists and overwriting was not asked for.
    #[error("{0}: AEAD already exists (use --force to replace it)")]
    AlreadyExists(PathBuf),
    /// The public id cannot be a nonce (longer than 6 bytes) for a version-0 file.
    #[error("{0}: public id longer than 6 bytes cannot be the nonce of a version-0 file")]
    IdTooLong(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}
