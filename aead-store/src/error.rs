//! The crate's one error type. Every variant names the path it is about.

use std::io;
use std::path::{Path, PathBuf};

use otp_core::{KeyHandle, Nonce, PublicId};

use crate::AeadKey;

/// What can go wrong reading or writing the AEAD store.
///
/// `PartialEq` so tests compare errors with `assert_eq!`; an OS error is kept as its
/// [`io::ErrorKind`] and message for the same reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store's base directory is missing or not a directory.
    #[error("AEAD directory {} does not exist or is not a directory", crate::shown(.0))]
    NoBase(PathBuf),
    /// A file or directory could not be read or written.
    #[error("{}: {reason}", crate::shown(.path))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The kind of OS error.
        kind: io::ErrorKind,
        /// What the OS said.
        reason: String,
    },
    /// The file starts with the AEAD marker but has a version we do not know.
    #[error("{}: unknown AEAD file format version {version}", crate::shown(.path))]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version byte.
        version: u8,
    },
    /// The file's length (or name) does not fit its format.
    #[error("{}: malformed AEAD file ({reason})", crate::shown(.path))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A version-1 file names another key handle than the directory it lies in.
    #[error("{}: file is for key handle {in_file} but lies in the directory of {dir}", crate::shown(.path))]
    KeyHandleMismatch {
        /// The file.
        path: PathBuf,
        /// Key handle written in the file.
        in_file: KeyHandle,
        /// Key handle of its directory.
        dir: KeyHandle,
    },
    /// A directory (or a device, socket or pipe) where an AEAD file should be.
    #[error("{}: not a regular file", crate::shown(.0))]
    NotAFile(PathBuf),
    /// A symlink (anywhere on the path) that leads outside the store.
    #[error("{}: symlink leads outside the AEAD directory", crate::shown(.0))]
    SymlinkEscape(PathBuf),
    /// A symlink where a write into the store goes through a directory. Writes follow no
    /// symlink below the base (see `dir_handle.rs`); reads still follow those that stay
    /// inside the store.
    #[error("{}: is a symlink; AEADs are written only through real directories of the store", crate::shown(.0))]
    SymlinkInWritePath(PathBuf),
    /// Something other than a directory where a write into the store needs one.
    #[error("{}: not a directory", crate::shown(.0))]
    NotADirectory(PathBuf),
    /// An AEAD exists and replacing it was not asked for.
    #[error("{}: AEAD already exists (use --force to replace it)", crate::shown(.0))]
    AlreadyExists(PathBuf),
    /// A version-1 file whose nonce is not the public id it was found under, in a store
    /// opened with [`crate::NoncePolicy::PublicId`]: most likely another YubiKey's file
    /// copied or renamed to this id's place.
    #[error("{}: nonce differs from public id (nonce {nonce}, public id {id}); a copied or renamed AEAD file? Stores made with --random-nonce need --random-nonce-aeads", crate::shown(.path))]
    NonceMismatch {
        /// The file.
        path: PathBuf,
        /// The nonce written in the file.
        nonce: Nonce,
        /// The public id it was looked up as.
        id: PublicId,
    },
    /// A public id shorter than 6 bytes, in a store opened with
    /// [`crate::NoncePolicy::PublicId`]: its zero-padded nonce is also the nonce of the
    /// longer ids it is a prefix of (`vvvvvvvv` and `vvvvvvvvcccc`), so the nonce does not
    /// bind it ([`crate::NoncePolicy::binds`]).
    #[error("{}: public id {id} is shorter than 6 bytes, so its nonce does not bind it (a longer id's AEAD copied to a shorter name?); stores of short public ids need --random-nonce-aeads", crate::shown(.path))]
    ShortId {
        /// The file.
        path: PathBuf,
        /// The public id it was looked up as.
        id: PublicId,
    },
    /// A version-2 file names another otp-aead-key than the directory it lies in.
    #[error("{}: file is for {in_file} but lies in the directory of {dir}", crate::shown(.path))]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// Key written in the file.
        in_file: AeadKey,
        /// Key of its directory.
        dir: AeadKey,
    },
    /// A file of one kind of HSM in the directory of the other (a version-2 file under a
    /// key handle, or a pyhsm file under an otp-aead-key).
    #[error("{}: a {found} AEAD file in the directory of {dir}", crate::shown(.path))]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// What the file is: "YubiHSM 1" or "YubiHSM 2".
        found: &'static str,
        /// Key of its directory.
        dir: AeadKey,
    },
    /// What this store cannot do (a YubiHSM 2 AEAD in a store of YubiHSM 1 ones only).
    #[error("{}", crate::shown(.0))]
    Unsupported(String),
    /// A version-0 file's nonce is its public id, which must then be at most 6 bytes.
    #[error("{}: public id longer than 6 bytes cannot be the nonce of a version-0 file", crate::shown(.0))]
    IdTooLong(PathBuf),
    /// The database store's settings: its URL (never repeated: it may hold what it should
    /// not), its password file, its pool.
    #[error("AEAD database: {0}")]
    DbConfig(String),
    /// The database cannot be reached, or did not answer in time, or refused the query (a
    /// missing table, no permission). The daemon answers `ERR Store unavailable`.
    #[error("AEAD database unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::NoBase(p)
            | StoreError::NotAFile(p)
            | StoreError::SymlinkEscape(p)
            | StoreError::SymlinkInWritePath(p)
            | StoreError::NotADirectory(p)
            | StoreError::AlreadyExists(p)
            | StoreError::IdTooLong(p) => p,
            StoreError::Io { path, .. }
            | StoreError::KeyMismatch { path, .. }
            | StoreError::WrongKind { path, .. }
            | StoreError::UnknownVersion { path, .. }
            | StoreError::Malformed { path, .. }
            | StoreError::KeyHandleMismatch { path, .. }
            | StoreError::NonceMismatch { path, .. }
            | StoreError::ShortId { path, .. } => path,
            StoreError::DbConfig(_) | StoreError::Unavailable(_) | StoreError::Unsupported(_) => {
                Path::new("aead_table")
            }
        }
    }

    pub(crate) fn io(path: &Path, e: &io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            kind: e.kind(),
            reason: e.to_string(),
        }
    }
}
