//! The AEAD directory on disk: safe reads, atomic rsync-safe writes, lookups in pyhsm's
//! layouts.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use otp_core::{Aead, KeyHandle, Nonce, PublicId};
use tracing::{info, warn};

use crate::dir_handle::Dir;
use crate::format::{self, AeadFile, FormatError};
use crate::layout::{aead_path_in, write_names, KeyHandleDirs, Layout};
use crate::{AeadKey, AeadSource, NoncePolicy, Sealed, StoreError, StoredAead};

/// An AEAD directory in pyhsm's layout, read from disk on every lookup.
///
/// For the daemon, [`FsStore::watch`] puts a watched in-memory cache in front of it.
///
/// The base directory is resolved once, when the store is opened: if `-B` is a symlink
/// (or lies below one), the store keeps using the directory it pointed to then, and says so
/// in the log. Re-pointing the symlink takes effect at the next start. Following it per
/// lookup instead would split the store in two: the watch (and so the cache) stays on the
/// directory it was set up on, and every file of the new target would lie "outside the
/// store" as the escape check saw it at start-up.
#[derive(Debug, Clone)]
pub struct FsStore {
    /// The base directory with every symlink resolved at open: where everything is read and
    /// written, and what "inside the store" means.
    base: PathBuf,
    keys: Vec<AeadKey>,
    nonce_policy: NoncePolicy,
}

/// What a lookup found, and where (for the cache to rebuild the path).
pub(crate) struct Found {
    pub(crate) stored: StoredAead,
    pub(crate) dir_index: usize,
    pub(crate) layout: Layout,
}

impl FsStore {
    /// A store rooted at `base`, which must be an existing directory, looking AEADs up under
    /// `key_handles` in this order (the first found wins), accepting only nonces equal to the
    /// public id ([`NoncePolicy::PublicId`]; see [`FsStore::with_nonce_policy`]).
    pub fn open(
        base: impl AsRef<Path>,
        key_handles: Vec<KeyHandle>,
    ) -> Result<FsStore, StoreError> {
        FsStore::open_keys(base, key_handles.into_iter().map(AeadKey::from).collect())
    }

    /// [`FsStore::open`] with keys of either kind, YubiHSM 1 key handles and YubiHSM 2
    /// otp-aead-keys, looked up in this order (the first found wins).
    pub fn open_keys(base: impl AsRef<Path>, keys: Vec<AeadKey>) -> Result<FsStore, StoreError> {
        let given = base.as_ref();
        let base = fs::canonicalize(given)
            .ok()
            .filter(|p| p.is_dir())
            .ok_or_else(|| StoreError::NoBase(given.to_path_buf()))?;
        if base != given && fs::symlink_metadata(given).is_ok_and(|m| m.is_symlink()) {
            info!(
                aead_dir = %given.display(),
                resolved = %base.display(),
                "the AEAD directory is a symlink: resolved once, now; re-pointing it takes effect at the next start"
            );
        }
        Ok(FsStore {
            base,
            keys,
            nonce_policy: NoncePolicy::default(),
        })
    }

    /// The same store, reading version-1 files under `policy` (the default is
    /// [`NoncePolicy::PublicId`]).
    pub fn with_nonce_policy(mut self, policy: NoncePolicy) -> FsStore {
        self.nonce_policy = policy;
        self
    }

    /// Which nonces reads accept.
    pub fn nonce_policy(&self) -> NoncePolicy {
        self.nonce_policy
    }

    /// The base directory, symlinks resolved when the store was opened.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The configured keys, in lookup order.
    pub fn keys(&self) -> &[AeadKey] {
        &self.keys
    }

    /// Finds the AEAD of `id` on disk: each configured key in order, each spelling of its
    /// directory (canonical first), the code layout then the documented one. The first file
    /// present wins, good or bad: a bad file is an error naming it, not a silent fall-through
    /// to another handle.
    pub fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        let dirs = KeyHandleDirs::read(&self.base)?;
        Ok(self.find(&dirs, id)?.map(|f| f.stored))
    }

    /// [`FsStore::lookup`] over an already listed set of key-handle directories.
    pub(crate) fn find(
        &self,
        dirs: &KeyHandleDirs,
        id: &PublicId,
    ) -> Result<Option<Found>, StoreError> {
        for kh in &self.keys {
            for (dir_index, dir) in dirs.of(*kh) {
                for layout in Layout::READ_ORDER {
                    let path = aead_path_in(dir, id, layout);
                    if present(&path)? {
                        let stored = match self.read_file(&path, *kh, id) {
                            // Deleted between the check and the read (rsync --delete running
                            // now): absent, not broken. A dangling symlink is still present,
                            // and still an error.
                            Err(StoreError::Io {
                                kind: io::ErrorKind::NotFound,
                                ..
                            }) if !present(&path)? => continue,
                            r => r?,
                        };
                        return Ok(Some(Found {
                            stored,
                            dir_index,
                            layout,
                        }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The fallbacks for `id` after key `after` (the key of what [`FsStore::lookup`] gave):
    /// for each configured key after it in order, its first file present, if good. A bad
    /// one is left out (logged) rather than an error: it was never going to be used unless
    /// the devices for the AEADs before it could not serve, and the first file present,
    /// which decides, was good. Each is read and checked as a lookup reads it (the nonce
    /// rule included).
    pub fn fallbacks(&self, id: &PublicId, after: AeadKey) -> Result<Vec<StoredAead>, StoreError> {
        let Some(pos) = self.keys.iter().position(|k| *k == after) else {
            return Ok(Vec::new());
        };
        let dirs = KeyHandleDirs::read(&self.base)?;
        let mut out = Vec::new();
        for kh in &self.keys[pos + 1..] {
            let first = dirs
                .of(*kh)
                .flat_map(|(_, dir)| Layout::READ_ORDER.map(|l| aead_path_in(dir, id, l)))
                .find(|p| present(p).unwrap_or(false));
            let Some(path) = first else { continue };
            match self.read_file(&path, *kh, id) {
                Ok(stored) => out.push(stored),
                Err(e) => {
                    warn!(public_id = %id, error = %e, "a fallback AEAD is unusable; left out");
                }
            }
        }
        Ok(out)
    }

    /// Reads and checks one AEAD file, trusting nothing: every symlink on the path must stay
    /// inside the store, it must be a regular file (opened without blocking, so a FIFO cannot
    /// hang us) of at most 1 KiB in a known format, of the kind of HSM `dir_key` is for; a
    /// version-1 or version-2 file must name `dir_key`, the key of the directory it lies in,
    /// and carry a nonce the store's [`NoncePolicy`] accepts for `id`. A version-0 file gets
    /// `dir_key` and the binary public id `id` as its nonce.
    pub fn read_file(
        &self,
        path: &Path,
        dir_key: AeadKey,
        id: &PublicId,
    ) -> Result<StoredAead, StoreError> {
        let real = fs::canonicalize(path).map_err(|e| StoreError::io(path, &e))?;
        if !real.starts_with(&self.base) {
            return Err(StoreError::SymlinkEscape(path.to_path_buf()));
        }
        let parsed = read_at(&real, path)?;
        let sealed = match (parsed, dir_key) {
            (AeadFile::V0(aead), AeadKey::Handle(dir_kh)) => {
                let nonce = id
                    .to_nonce()
                    .map_err(|_| StoreError::IdTooLong(path.to_path_buf()))?;
                Sealed::Hsm1 {
                    key_handle: dir_kh,
                    nonce,
                    aead,
                }
            }
            (
                AeadFile::V1 {
                    key_handle,
                    nonce,
                    aead,
                },
                AeadKey::Handle(dir_kh),
            ) => {
                if key_handle != dir_kh {
                    return Err(StoreError::KeyHandleMismatch {
                        path: path.to_path_buf(),
                        in_file: key_handle,
                        dir: dir_kh,
                    });
                }
                Sealed::Hsm1 {
                    key_handle,
                    nonce,
                    aead,
                }
            }
            (AeadFile::Hsm2 { key_id, aead }, AeadKey::OtpKey(dir_id)) => {
                if key_id != dir_id {
                    return Err(StoreError::KeyMismatch {
                        path: path.to_path_buf(),
                        in_file: AeadKey::OtpKey(key_id),
                        dir: dir_key,
                    });
                }
                Sealed::Hsm2 { key_id, aead }
            }
            (AeadFile::Hsm2 { .. }, AeadKey::Handle(_)) => {
                return Err(StoreError::WrongKind {
                    path: path.to_path_buf(),
                    found: "YubiHSM 2",
                    dir: dir_key,
                })
            }
            (AeadFile::V0(_) | AeadFile::V1 { .. }, AeadKey::OtpKey(_)) => {
                return Err(StoreError::WrongKind {
                    path: path.to_path_buf(),
                    found: "YubiHSM 1",
                    dir: dir_key,
                })
            }
        };
        // One check for both kinds (a version-0 file's nonce is the id itself, so it passes).
        self.nonce_policy.check(path, id, &sealed.nonce())?;
        Ok(StoredAead {
            sealed,
            source: AeadSource::file(path.to_path_buf()),
        })
    }

    /// The file an [`AeadSource`] of this kind of store names (`None` for another store's
    /// source). For what only files have (a test reading the bytes back, say); to show
    /// where an AEAD is, display the source itself.
    pub fn path_of(source: &AeadSource) -> Option<&Path> {
        source.as_path()
    }

    /// The file (or anything else) standing for (`key`, `id`) under any spelling of `key`'s
    /// directory and either layout, if there is one.
    pub fn existing(&self, key: AeadKey, id: &PublicId) -> Option<PathBuf> {
        let kh = key;
        let dirs = KeyHandleDirs::read(&self.base).ok()?;
        let found = dirs
            .of(kh)
            .flat_map(|(_, d)| Layout::READ_ORDER.map(|l| aead_path_in(d, id, l)))
            .find(|p| fs::symlink_metadata(p).is_ok());
        found
    }

    /// Writes an AEAD as a version-1 file at the canonical path
    /// (`BASE/0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc`), creating directories as needed.
    ///
    /// Atomic: the bytes go to `.<public id>.tmp.XXXXXX` in the same directory (a dot-file,
    /// which no lookup, walk or watcher takes for an AEAD), are fsynced, then the file is
    /// moved into place and the directory fsynced. A reader, or an rsync run, sees no file or
    /// a whole one, never half of one. The temp file is removed on every early return; it is
    /// closed before it is moved.
    ///
    /// Every directory on the way is opened from the handle of the one above with
    /// `O_NOFOLLOW`, and the temp file and its rename name entries of the one handle the AEAD
    /// goes into, so a symlink swapped in anywhere below the base cannot redirect the write
    /// (`dir_handle.rs`); a symlink found there fails it with
    /// [`StoreError::SymlinkInWritePath`].
    ///
    /// An existing AEAD for (`kh`, `id`), under any spelling or layout, is kept and
    /// [`StoreError::AlreadyExists`] returned, unless `force`. Without `force` the rename does
    /// not replace (`renameat2` with `RENAME_NOREPLACE`, or where the file system lacks it a
    /// hard link, then the temp name's removal): either fails rather than replace a file that
    /// appeared in the meantime. A file system with neither fails the write.
    pub fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        let sealed = Sealed::Hsm1 {
            key_handle: kh,
            nonce: *nonce,
            aead: aead.clone(),
        };
        self.put(id, &sealed, force)
    }

    /// [`FsStore::write`] for an AEAD of either kind: a YubiHSM 1 one as a version-1 file
    /// under its key handle's directory, a YubiHSM 2 one as a version-2 file under
    /// `otp-aead-key-0x....`, same layout, same atomic and no-clobber rules.
    pub fn put(
        &self,
        id: &PublicId,
        sealed: &Sealed,
        force: bool,
    ) -> Result<AeadSource, StoreError> {
        let key = sealed.key();
        if !force {
            if let Some(existing) = self.existing(key, id) {
                return Err(StoreError::AlreadyExists(existing));
            }
        }
        // Each level opened from the one above, never through a symlink (`dir_handle.rs`).
        let (dirs, file_name) = write_names(key, id);
        let mut dir = Dir::open_base(&self.base)?;
        for name in &dirs {
            dir = dir.child(name)?;
        }
        let mut tmp = dir.temp_file(&format!(".{id}.tmp."))?;
        let bytes = match sealed {
            Sealed::Hsm1 {
                key_handle,
                nonce,
                aead,
            } => format::write_v1(*key_handle, nonce, aead),
            Sealed::Hsm2 { key_id, aead } => format::write_v2(*key_id, aead),
        };
        tmp.file()
            .write_all(&bytes)
            .and_then(|()| tmp.file().sync_all())
            .map_err(|e| StoreError::io(&tmp.path(), &e))?;
        tmp.place(file_name, force)?;
        dir.sync()?;
        let path = dir.path().join(file_name);
        Ok(AeadSource::file(path))
    }
}

/// Reads and parses one AEAD file without trusting it: opened without blocking (a FIFO cannot
/// hang the caller), refused unless the opened handle is a regular file, and read up to
/// [`format::MAX_FILE`] + 1 bytes only (a huge or sparse file costs one short read). Errors
/// name `path`. This is what [`FsStore`] reads every file with; tools that read AEAD files
/// outside a store (`decrypt-aead`) use it too.
pub fn read_aead_file(path: &Path) -> Result<AeadFile, StoreError> {
    read_at(path, path)
}

/// [`read_aead_file`] of `real` (symlinks already resolved, so `O_NOFOLLOW` only guards
/// against a swap since), with errors naming `shown`.
fn read_at(real: &Path, shown: &Path) -> Result<AeadFile, StoreError> {
    let flags = OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(real)
        .map_err(|e| StoreError::io(shown, &e))?;
    let meta = file.metadata().map_err(|e| StoreError::io(shown, &e))?;
    if !meta.is_file() {
        return Err(StoreError::NotAFile(shown.to_path_buf()));
    }
    let mut bytes = Vec::with_capacity(64);
    file.take(format::MAX_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(shown, &e))?;
    format::parse(&bytes).map_err(|e| match e {
        FormatError::UnknownVersion(version) => StoreError::UnknownVersion {
            path: shown.to_path_buf(),
            version,
        },
        FormatError::Malformed(reason) => StoreError::Malformed {
            path: shown.to_path_buf(),
            reason,
        },
    })
}

/// Whether anything (file, directory, dangling symlink) is at `path`. A missing path, or one
/// whose parent is a file, is absent; any other failure (a directory we may not search) is an
/// error naming the path.
fn present(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) => Ok(false),
        Err(e) => Err(StoreError::io(path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::aead_path;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    const KH20: KeyHandle = KeyHandle(0x20);
    const KH21: KeyHandle = KeyHandle(0x21);

    fn id(s: &str) -> PublicId {
        PublicId::new(s).unwrap()
    }

    fn aead(b: u8) -> Aead {
        Aead::new(&[b; 30]).unwrap()
    }

    /// The nonce of an AEAD made for `id_` the default way.
    fn nonce(id_: &str) -> Nonce {
        id(id_).to_nonce().unwrap()
    }

    /// The file a source names.
    fn file(source: &AeadSource) -> PathBuf {
        FsStore::path_of(source)
            .expect("an FsStore source is a file")
            .to_path_buf()
    }

    fn store(khs: &[KeyHandle]) -> (tempfile::TempDir, FsStore) {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open(d.path(), khs.to_vec()).unwrap();
        (d, s)
    }

    /// Puts raw bytes where pyhsm would, under the directory spelled `kh_dir`.
    fn put(base: &Path, kh_dir: &str, id_: &str, layout: Layout, bytes: &[u8]) -> PathBuf {
        let p = aead_path_in(&base.join(kh_dir), &id(id_), layout);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }

    const K5: AeadKey = AeadKey::OtpKey(otp_core::ObjectId(5));
    const K6: AeadKey = AeadKey::OtpKey(otp_core::ObjectId(6));

    /// A YubiHSM 2 AEAD whose nonce is `nonce`.
    fn otp(nonce: Nonce, fill: u8) -> otp_core::OtpAead {
        otp_core::OtpAead::from_yubihsm1(nonce.0, [fill; 30])
    }

    fn hsm2(key: AeadKey, aead: otp_core::OtpAead) -> Sealed {
        let AeadKey::OtpKey(key_id) = key else {
            panic!("not a YubiHSM 2 key")
        };
        Sealed::Hsm2 { key_id, aead }
    }

    /// During a migration a YubiKey has an AEAD under an otp-aead-key and under its old
    /// key handle: the lookup gives the first configured, the fallbacks the later good ones
    /// in order. A bad first file is still the lookup's error; a bad later one (a corrupt
    /// file, another id's AEAD copied in: the nonce rule) is left out.
    #[test]
    fn fallbacks_are_the_later_keys_good_aeads_in_order() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open_keys(d.path(), vec![K5, KH20.into(), K6, KH21.into()]).unwrap();
        let i = id("ccbbddeeffcc");
        let n = nonce("ccbbddeeffcc");
        s.put(&i, &hsm2(K5, otp(n, 1)), false).unwrap();
        s.write(KH20, &i, &n, &aead(2), false).unwrap();
        s.write(KH21, &i, &n, &aead(3), false).unwrap();
        // K6's holds another id's AEAD (its nonce): not bound to this id, so left out.
        put(
            d.path(),
            "otp-aead-key-0x0006",
            "ccbbddeeffcc",
            Layout::Code,
            &format::write_v2(otp_core::ObjectId(6), &otp(nonce("ccbbddeeffcd"), 4)),
        );
        assert!(matches!(
            FsStore::open_keys(d.path(), vec![K6]).unwrap().lookup(&i),
            Err(StoreError::NonceMismatch { .. })
        ));
        let first = s.lookup(&i).unwrap().unwrap();
        assert_eq!(first.key(), K5);
        let keys = |after| -> Vec<AeadKey> {
            s.fallbacks(&i, after)
                .unwrap()
                .iter()
                .map(StoredAead::key)
                .collect()
        };
        assert_eq!(keys(K5), vec![KH20.into(), KH21.into()]);
        assert_eq!(s.fallbacks(&i, K5).unwrap()[0].hsm1_aead(), Some(&aead(2)));
        assert_eq!(keys(KH20.into()), vec![AeadKey::from(KH21)]);
        assert_eq!(keys(KH21.into()), vec![]);
        // A key not configured, or an id with nothing else: none.
        assert_eq!(keys(AeadKey::OtpKey(otp_core::ObjectId(9))), vec![]);
        assert_eq!(s.fallbacks(&id("ccbbddeeffcd"), K5).unwrap(), vec![]);
        // A bad later file (KH20's) is left out; a bad first one is the lookup's error.
        fs::write(file(&s.fallbacks(&i, K5).unwrap()[0].source), b"junk").unwrap();
        assert_eq!(keys(K5), vec![AeadKey::from(KH21)]);
        fs::write(file(&first.source), b"junk").unwrap();
        assert!(s.lookup(&i).is_err());
    }

    #[test]
    fn a_yubihsm2_aead_is_a_version_2_file_in_its_key_directory() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open_keys(d.path(), vec![K5]).unwrap();
        let i = id("ccbbddeeffcc");
        let sealed = hsm2(K5, otp(nonce("ccbbddeeffcc"), 7));
        let source = s.put(&i, &sealed, false).unwrap();
        let p = file(&source);
        assert_eq!(
            p,
            d.path()
                .join("otp-aead-key-0x0005/cc/bb/dd/ee/ff/cc/ccbbddeeffcc")
        );
        assert_eq!(
            fs::read(&p).unwrap(),
            format::write_v2(otp_core::ObjectId(5), &otp(nonce("ccbbddeeffcc"), 7))
        );
        let got = s.lookup(&i).unwrap().unwrap();
        assert_eq!((got.sealed, got.source), (sealed.clone(), source));
        assert_eq!(
            s.put(&i, &sealed, false),
            Err(StoreError::AlreadyExists(p.clone()))
        );
        assert!(crate::Store::exists_under(&s, K5, &i).unwrap());
        assert!(!crate::Store::exists_under(&s, K6, &i).unwrap());
        assert!(!crate::Store::exists(&s, KH20, &i).unwrap());
        // A store of YubiHSM 1 key handles only does not see it.
        assert_eq!(store_at(d.path(), &[KH20.into()]).lookup(&i).unwrap(), None);
    }

    fn store_at(base: &Path, keys: &[AeadKey]) -> FsStore {
        FsStore::open_keys(base, keys.to_vec()).unwrap()
    }

    #[test]
    fn keys_of_both_kinds_are_looked_up_in_configured_order() {
        let d = tempfile::tempdir().unwrap();
        let i = id("ccbbddeeffcc");
        let n = nonce("ccbbddeeffcc");
        let w = store_at(d.path(), &[]);
        w.write(KH20, &i, &n, &aead(1), false).unwrap();
        w.put(&i, &hsm2(K5, otp(n, 2)), false).unwrap();
        w.put(&i, &hsm2(K6, otp(n, 3)), false).unwrap();
        let first = |keys: &[AeadKey]| store_at(d.path(), keys).lookup(&i).unwrap().unwrap().key();
        assert_eq!(first(&[KH20.into(), K5, K6]), KH20.into());
        assert_eq!(first(&[K5, KH20.into()]), K5);
        assert_eq!(first(&[K6, K5]), K6);
        assert_eq!(first(&[KH21.into(), K6]), K6);
        // Only in the old key's directory (a rotation not yet done for this id): found there.
        let j = id("cccccccccccb");
        w.put(&j, &hsm2(K5, otp(nonce("cccccccccccb"), 4)), false)
            .unwrap();
        assert_eq!(
            store_at(d.path(), &[K6, K5])
                .lookup(&j)
                .unwrap()
                .unwrap()
                .key(),
            K5
        );
    }

    #[test]
    fn a_file_of_the_wrong_kind_or_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let i = id("ccbbddeeffcc");
        let n = nonce("ccbbddeeffcc");
        // A YubiHSM 2 file under a key handle, a pyhsm file under an otp-aead-key, and a
        // version-2 file for key 6 in key 5's directory.
        let v2 = format::write_v2(otp_core::ObjectId(6), &otp(n, 1));
        let p = put(d.path(), "0x20", "ccbbddeeffcc", Layout::Code, &v2);
        assert_eq!(
            store_at(d.path(), &[KH20.into()]).lookup(&i),
            Err(StoreError::WrongKind {
                path: p,
                found: "YubiHSM 2",
                dir: KH20.into()
            })
        );
        let p = put(
            d.path(),
            "otp-aead-key-0x0005",
            "ccbbddeeffcc",
            Layout::Code,
            &format::write_v1(KH20, &n, &aead(1)),
        );
        assert_eq!(
            store_at(d.path(), &[K5]).lookup(&i),
            Err(StoreError::WrongKind {
                path: p.clone(),
                found: "YubiHSM 1",
                dir: K5
            })
        );
        fs::write(&p, aead(1).as_bytes()).unwrap();
        assert!(matches!(
            store_at(d.path(), &[K5]).lookup(&i),
            Err(StoreError::WrongKind {
                found: "YubiHSM 1",
                ..
            })
        ));
        fs::write(&p, &v2).unwrap();
        assert_eq!(
            store_at(d.path(), &[K5]).lookup(&i),
            Err(StoreError::KeyMismatch {
                path: p,
                in_file: K6,
                dir: K5
            })
        );
    }

    #[test]
    fn a_yubihsm2_aead_must_carry_its_public_id_as_nonce_unless_any_nonce_is_allowed() {
        let d = tempfile::tempdir().unwrap();
        let i = id("ccbbddeeffcc");
        // What the YubiHSM 2 makes: a nonce it chose itself.
        let device_made = otp(Nonce([0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]), 1);
        let p = file(
            &store_at(d.path(), &[])
                .put(&i, &hsm2(K5, device_made), false)
                .unwrap(),
        );
        assert_eq!(
            store_at(d.path(), &[K5]).lookup(&i),
            Err(StoreError::NonceMismatch {
                path: p,
                nonce: Nonce([0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]),
                id: i.clone()
            })
        );
        let any = store_at(d.path(), &[K5]).with_nonce_policy(NoncePolicy::Any);
        assert_eq!(
            any.lookup(&i).unwrap().unwrap().otp_aead(),
            Some(&device_made)
        );
        // A migrated AEAD keeps the YubiHSM 1 nonce, the public id, and passes.
        let j = id("cccccccccccb");
        let migrated = otp(nonce("cccccccccccb"), 2);
        store_at(d.path(), &[])
            .put(&j, &hsm2(K5, migrated), false)
            .unwrap();
        assert_eq!(
            store_at(d.path(), &[K5])
                .lookup(&j)
                .unwrap()
                .unwrap()
                .otp_aead(),
            Some(&migrated)
        );
    }

    #[test]
    fn a_v1_file_whose_nonce_is_not_its_public_id_is_refused_unless_any_nonce_is_allowed() {
        let (d, s) = store(&[KH20]);
        let (a, b) = (id("ccccdeulfbvj"), id("ccccccccccce"));
        let na = a.to_nonce().unwrap();
        // A's good file copied to B's place: the HSM authenticates the nonce stored in it,
        // so without the rule OTPs of B made with A's token part would decode.
        let good = file(&s.write(KH20, &a, &na, &aead(1), false).unwrap());
        let copy = aead_path(&d.path().join("0x20"), &b);
        fs::create_dir_all(copy.parent().unwrap()).unwrap();
        fs::copy(&good, &copy).unwrap();
        assert_eq!(file(&s.lookup(&a).unwrap().unwrap().source), good);
        let refused = Err(StoreError::NonceMismatch {
            path: copy.clone(),
            nonce: na,
            id: b.clone(),
        });
        assert_eq!(s.lookup(&b), refused);
        assert!(refused
            .clone()
            .unwrap_err()
            .to_string()
            .contains("nonce differs from public id"));
        // The cached store resolves lookups the same way.
        let cached = s.clone().watch();
        assert_eq!(crate::Store::lookup(&cached, &b), refused);
        // Stores made with random nonces say so when opened.
        let any = s.clone().with_nonce_policy(NoncePolicy::Any);
        assert_eq!(any.nonce_policy(), NoncePolicy::Any);
        assert_eq!(any.lookup(&b).unwrap().unwrap().nonce(), na);
        // A version-0 file has no nonce but its name: never refused.
        let v0 = put(
            d.path(),
            "0x20",
            "cccccccccccd",
            Layout::Code,
            aead(2).as_bytes(),
        );
        assert_eq!(
            file(&s.lookup(&id("cccccccccccd")).unwrap().unwrap().source),
            v0
        );
    }

    /// `vvvvvvvv`, `vvvvvvvvcc` and `vvvvvvvvcccc` share one zero-padded nonce: a copy of
    /// the long id's file under a shorter name is refused, as a version-1 or a version-0
    /// file, while the long id's own file keeps working.
    #[test]
    fn a_copy_under_a_shorter_zero_padded_id_is_refused() {
        let (d, s) = store(&[KH20]);
        let long = id("vvvvvvvvcccc");
        let good = file(
            &s.write(KH20, &long, &long.to_nonce().unwrap(), &aead(1), false)
                .unwrap(),
        );
        let v0 = put(
            d.path(),
            "0x20",
            "vvvvvvvvcccb",
            Layout::Code,
            aead(2).as_bytes(),
        );
        for short in ["vvvvvvvv", "vvvvvvvvcc"] {
            let short = id(short);
            assert_eq!(short.to_nonce(), long.to_nonce(), "the same padded nonce");
            let copy = aead_path(&d.path().join("0x20"), &short);
            fs::create_dir_all(copy.parent().unwrap()).unwrap();
            fs::copy(&good, &copy).unwrap();
            assert_eq!(
                s.lookup(&short),
                Err(StoreError::ShortId {
                    path: copy.clone(),
                    id: short.clone()
                })
            );
            // A version-0 file has no nonce of its own: the short name alone is refused.
            fs::copy(&v0, &copy).unwrap();
            assert!(matches!(s.lookup(&short), Err(StoreError::ShortId { .. })));
            // Served only where the operator said the place is all that binds.
            let any = s.clone().with_nonce_policy(NoncePolicy::Any);
            assert_eq!(file(&any.lookup(&short).unwrap().unwrap().source), copy);
        }
        assert_eq!(file(&s.lookup(&long).unwrap().unwrap().source), good);
    }

    /// Writes open every directory from the one above without following symlinks: a
    /// symlinked key or layout directory fails the write, wherever it leads, and nothing is
    /// created where it points. (Reads still follow symlinks that stay inside the store.)
    #[test]
    fn a_write_through_a_symlinked_directory_fails_and_creates_nothing_there() {
        let (d, s) = store(&[KH20]);
        let outside = tempfile::tempdir().unwrap();
        let i = id("ccbbddeeffcc");
        let n = i.to_nonce().unwrap();
        // The key-handle directory itself a symlink out.
        let kh_dir = d.path().join("0x20");
        std::os::unix::fs::symlink(outside.path(), &kh_dir).unwrap();
        assert_eq!(
            s.write(KH20, &i, &n, &aead(1), false),
            Err(StoreError::SymlinkInWritePath(kh_dir.clone()))
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // An id directory deeper down a symlink out.
        fs::remove_file(&kh_dir).unwrap();
        fs::create_dir_all(kh_dir.join("cc/bb")).unwrap();
        std::os::unix::fs::symlink(outside.path(), kh_dir.join("cc/bb/dd")).unwrap();
        assert_eq!(
            s.write(KH20, &i, &n, &aead(1), true),
            Err(StoreError::SymlinkInWritePath(kh_dir.join("cc/bb/dd")))
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // One that stays inside is refused for writing as well, and its target left alone.
        fs::remove_file(kh_dir.join("cc/bb/dd")).unwrap();
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, kh_dir.join("cc/bb/dd")).unwrap();
        assert_eq!(
            s.write(KH20, &i, &n, &aead(1), false),
            Err(StoreError::SymlinkInWritePath(kh_dir.join("cc/bb/dd")))
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A file where a directory should be is refused, not replaced.
        fs::remove_file(kh_dir.join("cc/bb/dd")).unwrap();
        fs::write(kh_dir.join("cc/bb/dd"), b"x").unwrap();
        assert_eq!(
            s.write(KH20, &i, &n, &aead(1), false),
            Err(StoreError::NotADirectory(kh_dir.join("cc/bb/dd")))
        );
        // With real directories the write goes through.
        fs::remove_file(kh_dir.join("cc/bb/dd")).unwrap();
        let p = file(&s.write(KH20, &i, &n, &aead(1), false).unwrap());
        assert_eq!(p, kh_dir.join("cc/bb/dd/ee/ff/cc/ccbbddeeffcc"));
        assert_eq!(file(&s.lookup(&i).unwrap().unwrap().source), p);
    }

    #[test]
    fn a_symlinked_base_is_resolved_once_when_the_store_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, link) = (
            d.path().join("a"),
            d.path().join("b"),
            d.path().join("aeads"),
        );
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        std::os::unix::fs::symlink("a", &link).unwrap();
        let s = FsStore::open(&link, vec![KH20]).unwrap();
        assert_eq!(s.base(), fs::canonicalize(&a).unwrap());
        let i = id("ccbbddeeffcc");
        let n = i.to_nonce().unwrap();
        let in_a = file(&s.write(KH20, &i, &n, &aead(1), false).unwrap());
        FsStore::open(&b, vec![KH20])
            .unwrap()
            .write(KH20, &i, &n, &aead(2), false)
            .unwrap();
        // Re-pointed (a deploy switching releases): this store keeps serving what it opened,
        // rather than refusing every file of the new target as outside the old one.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("b", &link).unwrap();
        let got = s.lookup(&i).unwrap().unwrap();
        assert_eq!(
            (got.hsm1_aead().unwrap().clone(), file(&got.source)),
            (aead(1), in_a)
        );
        assert!(s.entries().all(|e| e.is_good()));
    }

    #[test]
    fn the_safe_reader_refuses_fifos_and_big_files_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(read_aead_file(&fifo), Err(StoreError::NotAFile(fifo)));
        let big = d.path().join("big");
        File::create(&big).unwrap().set_len(100 << 20).unwrap();
        assert_eq!(
            read_aead_file(&big),
            Err(StoreError::Malformed {
                path: big,
                reason: "longer than any AEAD file"
            })
        );
        let v1 = d.path().join("v1");
        fs::write(&v1, format::write_v1(KH20, &Nonce([1; 6]), &aead(1))).unwrap();
        assert!(matches!(read_aead_file(&v1), Ok(AeadFile::V1 { .. })));
    }

    #[test]
    fn write_then_lookup_round_trip() {
        let (d, s) = store(&[KH20]);
        let i = id("ccbbddeeffcc");
        let source = s
            .write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(7), false)
            .unwrap();
        let p = file(&source);
        assert_eq!(p, d.path().join("0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc"));
        assert_eq!(
            s.lookup(&i).unwrap(),
            Some(StoredAead {
                sealed: Sealed::Hsm1 {
                    key_handle: KH20,
                    nonce: nonce("ccbbddeeffcc"),
                    aead: aead(7),
                },
                source,
            })
        );
        assert_eq!(
            fs::read(&p).unwrap(),
            format::write_v1(KH20, &nonce("ccbbddeeffcc"), &aead(7))
        );
        assert_eq!(s.lookup(&id("cccccccccccb")).unwrap(), None);
        // Only the AEAD is left in its directory: no temp file.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("ccbbddeeffcc")]);
        // 0644 less the umask: readable, never executable.
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!((mode & 0o600, mode & 0o111), (0o600, 0));
    }

    /// What a watcher (the cache's, or rsync's listing) can see of a write: a dot-file named
    /// after the id, closed after its last byte, and only then the AEAD's own name.
    #[test]
    fn the_temp_file_is_a_dot_file_and_the_aead_appears_whole() {
        use inotify::{EventMask, Inotify, WatchMask};
        let (d, s) = store(&[KH20]);
        let i = id("ccbbddeeffcc");
        let leaf = aead_path(&d.path().join("0x20"), &i);
        let dir = leaf.parent().unwrap();
        fs::create_dir_all(dir).unwrap();
        let mut inotify = Inotify::init().unwrap();
        inotify.watches().add(dir, WatchMask::ALL_EVENTS).unwrap();
        for force in [false, true] {
            s.write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(1), force)
                .unwrap();
            let mut buf = [0u8; 4096];
            let events: Vec<(EventMask, String)> = inotify
                .read_events(&mut buf)
                .unwrap()
                .filter_map(|e| Some((e.mask, e.name?.to_string_lossy().into_owned())))
                .collect();
            let tmp = &events[0].1;
            assert_eq!(events[0].0, EventMask::CREATE, "{events:?}");
            let suffix = tmp.strip_prefix(".ccbbddeeffcc.tmp.").unwrap_or_default();
            assert!(
                suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
                "{tmp}"
            );
            assert_eq!(
                crate::layout::classify(s.base(), &dir.join(tmp)),
                crate::layout::Place::Unrelated
            );
            let closed = events
                .iter()
                .position(|(m, n)| n == tmp && m.contains(EventMask::CLOSE_WRITE))
                .unwrap_or_else(|| panic!("{events:?}"));
            let shown = events
                .iter()
                .position(|(m, n)| {
                    n == "ccbbddeeffcc" && m.intersects(EventMask::CREATE | EventMask::MOVED_TO)
                })
                .unwrap_or_else(|| panic!("{events:?}"));
            assert!(closed < shown, "{events:?}");
        }
    }

    #[test]
    fn existing_aead_is_kept_unless_forced() {
        let (_d, s) = store(&[KH20]);
        let i = id("ccbbddeeffcc");
        let source = s
            .write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(1), false)
            .unwrap();
        assert_eq!(
            s.write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(2), false),
            Err(StoreError::AlreadyExists(file(&source)))
        );
        assert_eq!(
            s.lookup(&i).unwrap().unwrap().hsm1_aead().unwrap().clone(),
            aead(1)
        );
        assert_eq!(
            s.write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(2), true),
            Ok(source)
        );
        assert_eq!(
            s.lookup(&i).unwrap().unwrap().hsm1_aead().unwrap().clone(),
            aead(2)
        );
        // Another handle is another AEAD.
        assert!(s
            .write(KH21, &i, &nonce("ccbbddeeffcc"), &aead(3), false)
            .is_ok());
    }

    #[test]
    fn an_existing_pyhsm_spelling_or_layout_counts_as_existing() {
        let (d, s) = store(&[KH20]);
        let i = id("ccbbddeeffcc");
        let p = put(
            d.path(),
            "32",
            "ccbbddeeffcc",
            Layout::Documented,
            aead(1).as_bytes(),
        );
        assert_eq!(s.existing(KH20.into(), &i), Some(p.clone()));
        assert_eq!(
            s.write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(2), false),
            Err(StoreError::AlreadyExists(p))
        );
        // Forced, it goes to the canonical place, which lookups then prefer.
        let q = file(
            &s.write(KH20, &i, &nonce("ccbbddeeffcc"), &aead(2), true)
                .unwrap(),
        );
        assert!(q.starts_with(d.path().join("0x20")));
        assert_eq!(file(&s.lookup(&i).unwrap().unwrap().source), q);
    }

    #[test]
    fn v0_gets_its_nonce_from_the_name_and_its_handle_from_the_directory() {
        let (d, s) = store(&[KH20]);
        let p = put(
            d.path(),
            "0x20",
            "ccccdeulfbvj",
            Layout::Code,
            aead(5).as_bytes(),
        );
        let got = s.lookup(&id("ccccdeulfbvj")).unwrap().unwrap();
        assert_eq!(got.key_handle().unwrap(), KH20);
        assert_eq!(got.nonce(), Nonce([0, 0, 0x23, 0xea, 0x41, 0xf8]));
        assert_eq!(
            (got.hsm1_aead().unwrap().clone(), file(&got.source)),
            (aead(5), p)
        );
        // An 8-byte public id cannot be a nonce.
        let p = put(
            d.path(),
            "0x20",
            "cccccccccccccccb",
            Layout::Code,
            aead(5).as_bytes(),
        );
        assert_eq!(
            s.lookup(&id("cccccccccccccccb")),
            Err(StoreError::IdTooLong(p))
        );
    }

    #[test]
    fn every_spelling_of_the_handle_directory_is_read() {
        for (spelling, kh) in [
            ("0x20", KH20),
            ("32", KH20),
            ("0x00000020", KH20),
            ("KSM1", KeyHandle(0x314d_534b)),
        ] {
            let (d, s) = store(&[KH21, kh]);
            let v0 = put(
                d.path(),
                spelling,
                "cccccccccccb",
                Layout::Code,
                aead(1).as_bytes(),
            );
            let v1 = put(
                d.path(),
                spelling,
                "cccccccccccd",
                Layout::Code,
                &format::write_v1(kh, &nonce("cccccccccccd"), &aead(2)),
            );
            let a = s.lookup(&id("cccccccccccb")).unwrap().unwrap();
            assert_eq!(
                (a.key_handle().unwrap(), file(&a.source)),
                (kh, v0),
                "{spelling}"
            );
            let b = s.lookup(&id("cccccccccccd")).unwrap().unwrap();
            assert_eq!(
                (b.key_handle().unwrap(), file(&b.source)),
                (kh, v1),
                "{spelling}"
            );
            // Not found for a handle that is not configured.
            let other = FsStore::open(d.path(), vec![KH21]).unwrap();
            assert_eq!(
                other.lookup(&id("cccccccccccb")).unwrap(),
                None,
                "{spelling}"
            );
        }
    }

    #[test]
    fn documented_five_level_layout_is_read_code_layout_first() {
        let (d, s) = store(&[KH20]);
        let i = id("ccbbddeeffcc");
        let five = put(
            d.path(),
            "0x20",
            "ccbbddeeffcc",
            Layout::Documented,
            aead(1).as_bytes(),
        );
        assert_eq!(five, d.path().join("0x20/cc/bb/dd/ee/ff/ccbbddeeffcc"));
        assert_eq!(file(&s.lookup(&i).unwrap().unwrap().source), five);
        let six = put(
            d.path(),
            "0x20",
            "ccbbddeeffcc",
            Layout::Code,
            aead(2).as_bytes(),
        );
        assert_eq!(file(&s.lookup(&i).unwrap().unwrap().source), six);
    }

    #[test]
    fn configured_handle_order_decides() {
        let (d, s) = store(&[KH21, KH20]);
        let i = id("ccbbddeeffcc");
        put(
            d.path(),
            "32",
            "ccbbddeeffcc",
            Layout::Code,
            &format::write_v1(KH20, &nonce("ccbbddeeffcc"), &aead(1)),
        );
        assert_eq!(s.lookup(&i).unwrap().unwrap().key_handle().unwrap(), KH20);
        put(
            d.path(),
            "0x21",
            "ccbbddeeffcc",
            Layout::Code,
            &format::write_v1(KH21, &nonce("ccbbddeeffcc"), &aead(2)),
        );
        assert_eq!(
            s.lookup(&i).unwrap().unwrap().key_handle().unwrap(),
            KH21,
            "0x21 is configured first"
        );
    }

    #[test]
    fn bad_marker_version_and_lengths_are_errors_naming_the_file() {
        let (d, s) = store(&[KH20]);
        let p = put(
            d.path(),
            "0x20",
            "cccccccccccb",
            Layout::Code,
            b"YubiHSM AEAD\n\x07junk junk junk",
        );
        assert_eq!(
            s.lookup(&id("cccccccccccb")),
            Err(StoreError::UnknownVersion {
                path: p,
                version: 7
            })
        );
        // A mangled marker is not a marker: the whole file is then a (too long) version-0 AEAD.
        let mut mangled = b"YubiHSM AEAD \n\x01".to_vec();
        mangled.extend_from_slice(&[0u8; 70]);
        let p = put(d.path(), "0x20", "cccccccccccd", Layout::Code, &mangled);
        assert_eq!(
            s.lookup(&id("cccccccccccd")),
            Err(StoreError::Malformed {
                path: p,
                reason: "a version-0 file must be 8 to 72 bytes"
            })
        );
        for (name, bytes, reason) in [
            (
                "ccccccccccce",
                b"tiny".to_vec(),
                "a version-0 file must be 8 to 72 bytes",
            ),
            (
                "cccccccccccf",
                vec![1u8; 73],
                "a version-0 file must be 8 to 72 bytes",
            ),
            ("cccccccccccg", vec![1u8; 5000], "longer than any AEAD file"),
            (
                "ccccccccccch",
                b"YubiHSM AEAD\n\x01\x20\x00".to_vec(),
                "version-1 header is cut short",
            ),
            (
                "cccccccccccj",
                format::write_v1(KH20, &Nonce([0; 6]), &Aead::new(&[1; 8]).unwrap())[..13 + 11 + 7]
                    .to_vec(),
                "a version-1 AEAD must be 8 to 72 bytes",
            ),
        ] {
            let p = put(d.path(), "0x20", name, Layout::Code, &bytes);
            assert_eq!(
                s.lookup(&id(name)),
                Err(StoreError::Malformed { path: p, reason }),
                "{name}"
            );
        }
    }

    #[test]
    fn a_v1_file_for_another_handle_than_its_directory_is_refused() {
        let (d, s) = store(&[KH20]);
        let p = put(
            d.path(),
            "32",
            "ccccccccccce",
            Layout::Code,
            &format::write_v1(KH21, &Nonce([0; 6]), &aead(1)),
        );
        assert_eq!(
            s.lookup(&id("ccccccccccce")),
            Err(StoreError::KeyHandleMismatch {
                path: p,
                in_file: KH21,
                dir: KH20
            })
        );
    }

    #[test]
    fn a_directory_or_special_file_in_place_of_the_aead_is_refused() {
        let (d, s) = store(&[KH20]);
        let dir = aead_path_in(&d.path().join("0x20"), &id("cccccccccccf"), Layout::Code);
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            s.lookup(&id("cccccccccccf")),
            Err(StoreError::NotAFile(dir))
        );
        // A FIFO: opened without blocking, then refused.
        let fifo = aead_path_in(&d.path().join("0x20"), &id("cccccccccccg"), Layout::Code);
        fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            s.lookup(&id("cccccccccccg")),
            Err(StoreError::NotAFile(fifo))
        );
    }

    #[test]
    fn symlinks_may_not_leave_the_store() {
        let (d, s) = store(&[KH20]);
        let base = d.path().join("0x20");
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("aead"), [1u8; 30]).unwrap();
        // The file itself a symlink out.
        let link = aead_path_in(&base, &id("cccccccccccg"), Layout::Code);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path().join("aead"), &link).unwrap();
        assert_eq!(
            s.lookup(&id("cccccccccccg")),
            Err(StoreError::SymlinkEscape(link))
        );
        // A directory on the way a symlink out.
        let via = aead_path_in(&base, &id("ccccccccccch"), Layout::Code);
        let up = via.parent().unwrap().to_path_buf();
        fs::create_dir_all(up.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path(), &up).unwrap();
        fs::write(outside.path().join("ccccccccccch"), [1u8; 30]).unwrap();
        assert_eq!(
            s.lookup(&id("ccccccccccch")),
            Err(StoreError::SymlinkEscape(via))
        );
        // A symlink inside the store is followed.
        let good = d.path().join("elsewhere");
        fs::write(
            &good,
            format::write_v1(KH20, &nonce("ccccccccccck"), &aead(3)),
        )
        .unwrap();
        let inner = aead_path_in(&base, &id("ccccccccccck"), Layout::Code);
        fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&good, &inner).unwrap();
        let got = s.lookup(&id("ccccccccccck")).unwrap().unwrap();
        assert_eq!(
            (got.hsm1_aead().unwrap().clone(), file(&got.source)),
            (aead(3), inner)
        );
        // Writing through a symlinked directory is refused too.
        assert_eq!(
            s.write(KH20, &id("ccccccccccch"), &Nonce([0; 6]), &aead(1), true),
            Err(StoreError::SymlinkInWritePath(up))
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let (d, s) = store(&[KH20]);
        let p = put(d.path(), "0x20", "cccccccccccb", Layout::Code, &[1u8; 30]);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads a mode-000 file, so as root the lookup runs on a thread that is nobody,
        // with every directory on the way open to it: only the file's mode refuses.
        let unreadable = {
            let (s, p) = (s.clone(), p.clone());
            move || {
                let listed = fs::read_dir(p.parent().unwrap()).map(|_| ());
                (listed, s.lookup(&id("cccccccccccb")))
            }
        };
        let (listed, got) = if nix::unistd::Uid::effective().is_root() {
            let mut dir = p.parent();
            while let Some(at) = dir.filter(|at| at.starts_with(d.path())) {
                fs::set_permissions(at, fs::Permissions::from_mode(0o755)).unwrap();
                dir = at.parent();
            }
            test_support::unprivileged::as_nobody(unreadable)
        } else {
            unreadable()
        };
        assert!(
            listed.is_ok(),
            "{listed:?}: the temp directory {} must be reachable by nobody (set TMPDIR)",
            d.path().display()
        );
        assert!(
            matches!(
                &got,
                Err(StoreError::Io { path, kind: io::ErrorKind::PermissionDenied, .. }) if *path == p
            ),
            "{got:?}"
        );
        // What fails to open even for root: a Unix socket (ENXIO), on the same code path.
        let sock = aead_path_in(&d.path().join("0x20"), &id("cccccccccccd"), Layout::Code);
        fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            s.lookup(&id("cccccccccccd")),
            Err(StoreError::Io { path, .. }) if path == sock
        ));
        // And a dangling symlink.
        let dangling = aead_path_in(&d.path().join("0x20"), &id("ccccccccccce"), Layout::Code);
        fs::create_dir_all(dangling.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            s.lookup(&id("ccccccccccce")),
            Err(StoreError::Io { path, kind: io::ErrorKind::NotFound, .. }) if path == dangling
        ));
    }

    #[test]
    fn a_file_where_a_directory_should_be_means_absent() {
        let (d, s) = store(&[KH20]);
        fs::create_dir_all(d.path().join("0x20/cc")).unwrap();
        fs::write(d.path().join("0x20/cc/cc"), b"x").unwrap();
        assert_eq!(s.lookup(&id("cccccccccccb")).unwrap(), None);
    }

    #[test]
    fn missing_base_is_an_error() {
        assert_eq!(
            FsStore::open("/nonexistent/aeads", vec![]).unwrap_err(),
            StoreError::NoBase(PathBuf::from("/nonexistent/aeads"))
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            FsStore::open(f.path(), vec![]),
            Err(StoreError::NoBase(_))
        ));
    }
}
