//! YubiKey AEADs on disk, in pyhsm's formats and directory layout.
//!
//! - [`format`]: the three file formats, as pure functions over bytes;
//! - [`layout`]: the one mapping from (key handle, public id) to a path;
//! - [`FsStore`]: the directory: safe reads, atomic rsync-safe writes, the walk that
//!   `ksm store verify` reports on;
//! - [`CachedStore`]: an in-memory cache kept true by a `notify` watcher, for the daemon;
//! - [`Store`]: what the daemon needs from a store, so another backend (a database) can
//!   stand in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod error;
pub mod format;
mod fs_store;
pub mod layout;

use std::path::PathBuf;

pub use cache::CachedStore;
pub use error::StoreError;
pub use fs_store::{read_file, stats, FsStore, WalkEntry};
use hsm_proto::{Aead, KeyHandle, Nonce, PublicId};

/// An AEAD as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAead {
    /// Key handle that sealed it.
    pub key_handle: KeyHandle,
    /// Its nonce (the binary public id for conventional AEADs).
    pub nonce: Nonce,
    /// The AEAD.
    pub aead: Aead,
    /// The file it came from.
    pub path: PathBuf,
}

/// Where the daemon finds a YubiKey's AEAD.
pub trait Store {
    /// The AEAD for `id`, `Ok(None)` if there is none, or an error naming what is wrong.
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError>;
    /// How many AEADs are held in memory, if the store keeps any.
    fn len(&self) -> Option<usize> {
        None
    }
}

impl Store for FsStore {
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        self.lookup_disk(id)
    }
}
