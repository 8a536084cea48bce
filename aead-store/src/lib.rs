//! YubiKey AEADs on disk, in pyhsm's formats and directory layout.
//!
//! - [`format`](mod@format): pyhsm's three file formats and our YubiHSM 2 one, as pure
//!   functions over bytes;
//! - [`AeadKey`]: the key an AEAD is sealed under, a YubiHSM 1 key handle or a YubiHSM 2
//!   otp-aead-key, which also says which kind of HSM can open it ([`Sealed`]);
//! - [`layout`]: the one mapping from (key directory, public id) to a path, and the
//!   discovery of key directories under any spelling;
//! - [`FsStore`]: the directory: safe reads, atomic rsync-safe writes, and the walk that
//!   `verify` and `stats` report on ([`FsStore::entries`]);
//! - [`CachedStore`]: an in-memory cache kept true by an inotify watch of our own, for the
//!   daemon ([`FsStore::watch`]);
//! - [`Store`]: what the daemon and tools need from a store, so another backend (a
//!   database) can stand in; it speaks of AEADs and their [`AeadSource`], never of files;
//! - `DbStore` (feature `db`): pyhsm's `aead_table` in PostgreSQL, MySQL/MariaDB or SQLite,
//!   behind the same trait, with a cache kept true by notifications or bounded in time;
//! - [`StoreError`]: the one error type; every variant names a path (or a row);
//! - [`shown`]: a name from the store as it may be printed, what is not printable escaped.
//!
//! Nothing read from disk is trusted: every file is checked, and no path is built from
//! anything but a validated [`PublicId`] and a listed key-handle directory.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
#[cfg(feature = "db")]
pub mod db;
mod dir_handle;
mod error;
pub mod format;
mod fs_store;
mod inotify_watch;
mod key;
pub mod layout;
mod shown;
mod source;
mod walk;

pub use cache::{CachedStore, ENTRY_BYTES};
#[cfg(feature = "db")]
pub use db::{DbConfig, DbPassword, DbStore, DbUrl, Engine};
pub use error::StoreError;
pub use fs_store::{read_aead_file, FsStore};
pub use key::{AeadKey, OTP_KEY_DIR_PREFIX};
use otp_core::{Aead, KeyHandle, Nonce, ObjectId, OtpAead, PublicId};
pub use shown::{shown, Shown};
pub use source::AeadSource;
pub use walk::{stats, KhStats, Walk, WalkEntry};

/// An AEAD as found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAead {
    /// The AEAD and the key it is sealed under: which kind of HSM can open it.
    pub sealed: Sealed,
    /// Where it came from (for [`FsStore`], the file).
    pub source: AeadSource,
}

/// An AEAD with what an HSM needs besides to open it. The kind of HSM follows from the
/// variant, so a daemon holding both kinds routes each AEAD to a device that can open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// For a YubiHSM 1 (pyhsm's formats).
    Hsm1 {
        /// Key handle that sealed it (from a version-1 file, which must match its
        /// directory, or the directory's handle for a version-0 file).
        key_handle: KeyHandle,
        /// Its nonce (the binary public id for a version-0 file).
        nonce: Nonce,
        /// The AEAD (8 to 72 bytes; a YubiKey's is 30).
        aead: Aead,
    },
    /// For a YubiHSM 2 (our version-2 format).
    Hsm2 {
        /// The otp-aead-key it is sealed under (a version-2 file must name its
        /// directory's key).
        key_id: ObjectId,
        /// The 36-byte OTP AEAD, its nonce first.
        aead: OtpAead,
    },
}

impl Sealed {
    /// The key it is sealed under.
    pub fn key(&self) -> AeadKey {
        match self {
            Sealed::Hsm1 { key_handle, .. } => AeadKey::Handle(*key_handle),
            Sealed::Hsm2 { key_id, .. } => AeadKey::OtpKey(*key_id),
        }
    }

    /// Its 6-byte nonce: what [`NoncePolicy`] checks, for both kinds.
    pub fn nonce(&self) -> Nonce {
        match self {
            Sealed::Hsm1 { nonce, .. } => *nonce,
            Sealed::Hsm2 { aead, .. } => Nonce(aead.nonce()),
        }
    }
}

impl StoredAead {
    /// The key it is sealed under.
    pub fn key(&self) -> AeadKey {
        self.sealed.key()
    }

    /// Its 6-byte nonce.
    pub fn nonce(&self) -> Nonce {
        self.sealed.nonce()
    }

    /// The key handle, for a YubiHSM 1 AEAD.
    pub fn key_handle(&self) -> Option<KeyHandle> {
        self.key().key_handle()
    }

    /// The AEAD bytes, for a YubiHSM 1 AEAD.
    pub fn hsm1_aead(&self) -> Option<&Aead> {
        match &self.sealed {
            Sealed::Hsm1 { aead, .. } => Some(aead),
            Sealed::Hsm2 { .. } => None,
        }
    }

    /// The OTP AEAD, for a YubiHSM 2 AEAD.
    pub fn otp_aead(&self) -> Option<&OtpAead> {
        match &self.sealed {
            Sealed::Hsm2 { aead, .. } => Some(aead),
            Sealed::Hsm1 { .. } => None,
        }
    }
}

/// Which nonces a store accepts in version-1 and version-2 files and in rows (a version-0
/// file has no nonce but the public id of its name, so it always passes).
///
/// The HSM authenticates an AEAD together with the nonce it is given, and a version-1 file
/// carries its own nonce. Nothing else ties the file to the public id it is found under: a
/// file copied to another id's path would make the HSM accept that other id followed by the
/// first YubiKey's token part. So by default the nonce must be the public id (what pyhsm
/// writes unless told `--random-nonce`), and [`FsStore`] checks it on every read, whoever
/// asks: the daemon, the cache, `verify`.
///
/// A YubiHSM 2 AEAD is bound to nothing but its 6-byte nonce either (the device's CCM nonce
/// is the key's nonce id and those 6 bytes; the public id is not in it), so the same rule
/// holds, on the AEAD's first 6 bytes. AEADs migrated from a YubiHSM 1 store keep their
/// nonce, the public id, and pass; rewrapping keeps the nonce too. AEADs the YubiHSM 2
/// makes itself (Create and Randomize OTP AEAD) carry a nonce the device chose, so a store
/// of them, like pyhsm's `--random-nonce` stores, is served only under [`NoncePolicy::Any`]:
/// the operator then knows that the file's place is all that binds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoncePolicy {
    /// The nonce must equal [`PublicId::to_nonce`] of the id looked up, else
    /// [`StoreError::NonceMismatch`].
    #[default]
    PublicId,
    /// Any nonce (stores made with `generate-keys`/`import-keys --random-nonce`). The file's
    /// place is then all that binds an AEAD to its id: whoever can copy files inside the
    /// store can make one YubiKey answer for another id.
    Any,
}

impl NoncePolicy {
    /// Whether `nonce` binds `id`: it is the id's own 6 bytes. The device takes a 6-byte
    /// nonce, and pyhsm zero-pads a shorter id to it, so `vvvvvvvv`, `vvvvvvvvcc` and
    /// `vvvvvvvvcccc` share one padded nonce: a file copied to the shorter name would decode
    /// the longer id's OTPs under another identity. The length is part of the binding, and
    /// only a 6-byte id (12 modhex characters, what YubiKeys and pyhsm's tools use) is bound
    /// by its nonce. Shorter ids are served only under [`NoncePolicy::Any`], where the file's
    /// place is all that binds any AEAD.
    pub fn binds(id: &PublicId, nonce: &Nonce) -> bool {
        id.as_str().len() == 2 * NONCE_BYTES && id.to_nonce().is_ok_and(|n| n == *nonce)
    }

    /// Checks the `nonce` of the file at `path`, looked up as `id`.
    pub fn check(
        self,
        path: &std::path::Path,
        id: &PublicId,
        nonce: &Nonce,
    ) -> Result<(), StoreError> {
        match self {
            NoncePolicy::Any => Ok(()),
            NoncePolicy::PublicId if NoncePolicy::binds(id, nonce) => Ok(()),
            NoncePolicy::PublicId if id.to_nonce().is_ok_and(|n| n == *nonce) => {
                Err(StoreError::ShortId {
                    path: path.to_path_buf(),
                    id: id.clone(),
                })
            }
            NoncePolicy::PublicId => Err(StoreError::NonceMismatch {
                path: path.to_path_buf(),
                nonce: *nonce,
                id: id.clone(),
            }),
        }
    }
}

/// The length of a nonce, and so of the only public ids a nonce binds.
const NONCE_BYTES: usize = 6;

/// A lookup the daemon awaits ([`Store::lookup_until`]).
pub type Lookup<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<StoredAead>, StoreError>> + Send + 'a>,
>;

/// A fallback lookup the daemon awaits ([`Store::fallbacks_until`]).
pub type Fallbacks<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<StoredAead>, StoreError>> + Send + 'a>,
>;

/// What the daemon and the tools need from an AEAD store.
// `len` is optional (`None`: nothing held in memory), so an `is_empty` would say nothing.
#[allow(clippy::len_without_is_empty)]
pub trait Store {
    /// The AEAD for `id` under the first configured key handle that has one, `Ok(None)` if
    /// none has, or an error naming the file that is wrong.
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError>;

    /// [`Store::lookup`] for the daemon: never blocks its thread, and gives up at
    /// `deadline` with [`StoreError::Unavailable`]. A store that answers from memory or disk
    /// at once (the files) need not override it.
    fn lookup_until<'a>(&'a self, id: &'a PublicId, deadline: std::time::Instant) -> Lookup<'a> {
        let _ = deadline;
        Box::pin(std::future::ready(self.lookup(id)))
    }

    /// The AEADs for `id` of the configured keys after `after` (the key of what
    /// [`Store::lookup`] gave), in configured order, each that is good: during a migration
    /// a YubiKey has an AEAD for each kind of HSM, and when the devices for the first cannot
    /// serve (locked after a reboot, down, overloaded) the daemon tries the next. Only the
    /// first AEAD present decides what a bad one means, so a bad fallback is left out, not
    /// an error. Read past any cache: this is the rare path, and the store itself is the
    /// truth. A store that gives none need not override it.
    fn fallbacks(&self, id: &PublicId, after: AeadKey) -> Result<Vec<StoredAead>, StoreError> {
        let _ = (id, after);
        Ok(Vec::new())
    }

    /// [`Store::fallbacks`] for the daemon, as [`Store::lookup_until`] is to
    /// [`Store::lookup`].
    fn fallbacks_until<'a>(
        &'a self,
        id: &'a PublicId,
        after: AeadKey,
        deadline: std::time::Instant,
    ) -> Fallbacks<'a> {
        let _ = deadline;
        Box::pin(std::future::ready(self.fallbacks(id, after)))
    }

    /// Stores a YubiHSM 1 AEAD for (`kh`, `id`); an existing one is replaced only if
    /// `force`, else [`StoreError::AlreadyExists`]. Returns where it was stored.
    fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<AeadSource, StoreError>;

    /// Whether anything, good or bad, is stored for (`kh`, `id`): what resumable tools skip.
    fn exists(&self, kh: KeyHandle, id: &PublicId) -> Result<bool, StoreError>;

    /// Stores an AEAD of either kind for `id`, under its own key, as [`Store::write`] does.
    /// A store that holds only YubiHSM 1 AEADs need not override it: it refuses YubiHSM 2
    /// ones with [`StoreError::Unsupported`].
    fn put(&self, id: &PublicId, sealed: &Sealed, force: bool) -> Result<AeadSource, StoreError> {
        match sealed {
            Sealed::Hsm1 {
                key_handle,
                nonce,
                aead,
            } => self.write(*key_handle, id, nonce, aead, force),
            Sealed::Hsm2 { .. } => Err(StoreError::Unsupported(
                "this store holds no YubiHSM 2 AEADs".to_string(),
            )),
        }
    }

    /// [`Store::exists`] for a key of either kind.
    fn exists_under(&self, key: AeadKey, id: &PublicId) -> Result<bool, StoreError> {
        match key {
            AeadKey::Handle(kh) => self.exists(kh, id),
            AeadKey::OtpKey(_) => Err(StoreError::Unsupported(
                "this store holds no YubiHSM 2 AEADs".to_string(),
            )),
        }
    }

    /// Every stored AEAD, checked, for verify and stats.
    fn entries(&self) -> Box<dyn Iterator<Item = WalkEntry> + '_>;

    /// How many AEADs are held in memory, if the store keeps any.
    fn len(&self) -> Option<usize> {
        None
    }

    /// Whether changes on disk are being watched, so lookups may be served from memory
    /// (`None`: the store keeps nothing in memory).
    fn watching(&self) -> Option<bool> {
        None
    }

    /// Notices of changes the store ignored as not its own or not trustworthy (copied or
    /// made-up heartbeats on a database's change channel), if it listens for any.
    fn ignored_notices(&self) -> Option<u64> {
        None
    }

    /// Why changes are not being watched although the store could watch them (a change
    /// trigger missing or not firing always), when it knows.
    fn unwatched(&self) -> Option<String> {
        None
    }

    /// Whether the store can be read now. A daemon serving from memory would not notice a
    /// directory it can no longer read until a lookup missed the cache; monitoring should.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Store for FsStore {
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        FsStore::lookup(self, id)
    }

    fn fallbacks(&self, id: &PublicId, after: AeadKey) -> Result<Vec<StoredAead>, StoreError> {
        FsStore::fallbacks(self, id, after)
    }

    fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        FsStore::write(self, kh, id, nonce, aead, force)
    }

    fn exists(&self, kh: KeyHandle, id: &PublicId) -> Result<bool, StoreError> {
        Ok(self.existing(kh.into(), id).is_some())
    }

    fn put(&self, id: &PublicId, sealed: &Sealed, force: bool) -> Result<AeadSource, StoreError> {
        FsStore::put(self, id, sealed, force)
    }

    fn exists_under(&self, key: AeadKey, id: &PublicId) -> Result<bool, StoreError> {
        Ok(self.existing(key, id).is_some())
    }

    fn entries(&self) -> Box<dyn Iterator<Item = WalkEntry> + '_> {
        Box::new(FsStore::entries(self))
    }

    /// The base directory can be listed.
    fn check(&self) -> Result<(), StoreError> {
        std::fs::read_dir(self.base())
            .map(|_| ())
            .map_err(|e| StoreError::io(self.base(), &e))
    }
}
