//! The AEAD directory on disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hsm_proto::{Aead, KeyHandle, Nonce, PublicId};
use rand::Rng;

use crate::format::{self, AeadFile, FormatError};
use crate::layout::{aead_path, doc_path, key_handle_dirs};
use crate::{StoreError, StoredAead};

/// Reads and parses one AEAD file with nothing trusted: it must be a regular file (a symlink
/// only if it stays inside `base`), at most 1 KiB, in a known format, and a version-1 file
/// must name the key handle of its directory.
pub fn read_file(
    base: &Path,
    path: &Path,
    dir_kh: KeyHandle,
    id: &PublicId,
) -> Result<StoredAead, StoreError> {
    let meta = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
    if meta.file_type().is_symlink() {
        let real = fs::canonicalize(path).map_err(|e| StoreError::io(path, e))?;
        let root = fs::canonicalize(base).map_err(|e| StoreError::io(base, e))?;
        if !real.starts_with(&root) {
            return Err(StoreError::SymlinkEscape(path.to_path_buf()));
        }
        if !fs::metadata(&real)
            .map_err(|e| StoreError::io(path, e))?
            .is_file()
        {
            return Err(StoreError::NotAFile(path.to_path_buf()));
        }
    } else if !meta.is_file() {
        return Err(StoreError::NotAFile(path.to_path_buf()));
    }
    let mut bytes = Vec::with_capacity(64);
    File::open(path)
        .and_then(|f| f.take(format::MAX_FILE as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| StoreError::io(path, e))?;
    let parsed = format::parse(&bytes).map_err(|e| match e {
        FormatError::UnknownVersion(version) => StoreError::UnknownVersion {
            path: path.to_path_buf(),
            version,
        },
        FormatError::Malformed(reason) => StoreError::Malformed {
            path: path.to_path_buf(),
            reason,
        },
    })?;
    let (key_handle, nonce, aead) = match parsed {
        AeadFile::V0(aead) => (
            dir_kh,
            id.to_nonce()
                .map_err(|_| StoreError::IdTooLong(path.to_path_buf()))?,
            aead,
        ),
        AeadFile::V1 {
            key_handle,
            nonce,
            aead,
        } => {
            if key_handle != dir_kh {
                return Err(StoreError::KeyHandleMismatch {
                    path: path.to_path_buf(),
                    in_file: key_handle.0,
                    dir: dir_kh.0,
                });
            }
            (key_handle, nonce, aead)
        }
    };
    Ok(StoredAead {
        key_handle,
        nonce,
        aead,
        path: path.to_path_buf(),
    })
}

/// An AEAD directory in pyhsm's layout.
#[derive(Debug, Clone)]
pub struct FsStore {
    base: PathBuf,
    key_handles: Vec<KeyHandle>,
}

impl FsStore {
    /// A store rooted at `base` (which must exist), looking up `key_handles` in this order.
    pub fn open(base: &Path, key_handles: Vec<KeyHandle>) -> Result<FsStore, StoreError> {
        if !base.is_dir() {
            return Err(StoreError::NoBase(base.to_path_buf()));
        }
        Ok(FsStore {
            base: base.to_path_buf(),
            key_handles,
        })
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The configured key handles, in lookup order.
    pub fn key_handles(&self) -> &[KeyHandle] {
        &self.key_handles
    }

    /// Finds the AEAD for `id` on disk: the configured handles in order, every spelling of
    /// each handle's directory, the code layout then the documented one. The first file found
    /// wins, good or bad: a bad file is an error naming it, not a silent fall-through.
    pub fn lookup_disk(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        let dirs = key_handle_dirs(&self.base);
        for kh in &self.key_handles {
            for dir in dirs.get(kh).map(Vec::as_slice).unwrap_or_default() {
                for path in [aead_path(dir, id), doc_path(dir, id)] {
                    match fs::symlink_metadata(&path) {
                        Ok(_) => return read_file(&self.base, &path, *kh, id).map(Some),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        // A path component that is a file, or no permission on a directory.
                        Err(e) if e.raw_os_error() == Some(20) => continue,
                        Err(e) => return Err(StoreError::io(&path, e)),
                    }
                }
            }
        }
        Ok(None)
    }

    /// The existing file for (`kh`, `id`) under any spelling or layout, if any.
    pub fn existing(&self, kh: KeyHandle, id: &PublicId) -> Option<PathBuf> {
        let dirs = key_handle_dirs(&self.base);
        dirs.get(&kh)?
            .iter()
            .flat_map(|d| [aead_path(d, id), doc_path(d, id)])
            .find(|p| fs::symlink_metadata(p).is_ok())
    }

    /// Writes an AEAD as a version-1 file at the canonical path, atomically: a temp file in
    /// the same directory, fsync, rename, fsync of the directory. A reader (or an rsync run)
    /// sees the old file or the new one, never half of one. An existing AEAD for the same
    /// handle and id (under any spelling) is kept unless `force`.
    pub fn write(
        &self,
        kh: KeyHandle,
        id: &PublicId,
        nonce: &Nonce,
        aead: &Aead,
        force: bool,
    ) -> Result<PathBuf, StoreError> {
        if let Some(existing) = self.existing(kh, id) {
            if !force {
                return Err(StoreError::AlreadyExists(existing));
            }
        }
        let path = aead_path(&self.base.join(kh.canonical()), id);
        let dir = path.parent().unwrap_or(&self.base).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp.{:08x}",
            id,
            rand::thread_rng().gen::<u32>()
        ));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&format::write_v1(kh, nonce, aead))?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(&path, e));
        }
        Ok(path)
    }

    /// Every file under the store, checked: what verify and stats report.
    pub fn walk(&self) -> Vec<WalkEntry> {
        let mut out = Vec::new();
        for (kh, dirs) in key_handle_dirs(&self.base) {
            for dir in dirs {
                walk_dir(&self.base, &dir, &dir, kh, &mut out);
            }
        }
        out
    }
}

/// One file found by [`FsStore::walk`].
#[derive(Debug, Clone)]
pub struct WalkEntry {
    /// The file.
    pub path: PathBuf,
    /// Key handle of its directory.
    pub dir_key_handle: KeyHandle,
    /// The AEAD, or why the file is unusable.
    pub result: Result<StoredAead, StoreError>,
    /// Ways the file is in the wrong place: not at a layout path for its name, nonce other
    /// than its public id.
    pub misplaced: Vec<String>,
}

fn walk_dir(base: &Path, kh_dir: &Path, dir: &Path, kh: KeyHandle, out: &mut Vec<WalkEntry>) {
    let Ok(entries) = fs::read_dir(dir) else {
        out.push(WalkEntry {
            path: dir.to_path_buf(),
            dir_key_handle: kh,
            result: Err(StoreError::Io {
                path: dir.to_path_buf(),
                reason: "directory unreadable".into(),
            }),
            misplaced: Vec::new(),
        });
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let ft = e.file_type();
        if ft.as_ref().map(|t| t.is_dir()).unwrap_or(false) {
            // Layout directories have 1 or 2 characters; a longer one named like a public id
            // at that id's path sits where an AEAD file should be.
            if name.len() > 2 && PublicId::new(&name).is_ok_and(|id| aead_path(kh_dir, &id) == path)
            {
                out.push(WalkEntry {
                    path: path.clone(),
                    dir_key_handle: kh,
                    result: Err(StoreError::NotAFile(path)),
                    misplaced: Vec::new(),
                });
                continue;
            }
            walk_dir(base, kh_dir, &path, kh, out);
            continue;
        }
        let Ok(id) = PublicId::new(&name) else {
            out.push(WalkEntry {
                path: path.clone(),
                dir_key_handle: kh,
                result: Err(StoreError::Malformed {
                    path,
                    reason: "file name is not a modhex public id",
                }),
                misplaced: Vec::new(),
            });
            continue;
        };
        let result = read_file(base, &path, kh, &id);
        let mut misplaced = Vec::new();
        if path != aead_path(kh_dir, &id) && path != doc_path(kh_dir, &id) {
            misplaced.push(format!("not at {}", aead_path(kh_dir, &id).display()));
        }
        if let Ok(s) = &result {
            if id.to_nonce().ok() != Some(s.nonce) {
                misplaced.push(format!("nonce {} is not the public id", s.nonce));
            }
        }
        out.push(WalkEntry {
            path,
            dir_key_handle: kh,
            result,
            misplaced,
        });
    }
}

/// Counts per key handle: (good AEADs, bad files).
pub fn stats(entries: &[WalkEntry]) -> BTreeMap<KeyHandle, (usize, usize)> {
    let mut m: BTreeMap<KeyHandle, (usize, usize)> = BTreeMap::new();
    for e in entries {
        let c = m.entry(e.dir_key_handle).or_default();
        if e.result.is_ok() && e.misplaced.is_empty() {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn id(s: &str) -> PublicId {
        PublicId::new(s).unwrap()
    }

    fn aead(b: u8) -> Aead {
        Aead::new(&[b; 30]).unwrap()
    }

    fn store(khs: &[u32]) -> (tempfile::TempDir, FsStore) {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open(d.path(), khs.iter().map(|k| KeyHandle(*k)).collect()).unwrap();
        (d, s)
    }

    #[test]
    fn write_then_read_round_trip() {
        let (d, s) = store(&[0x20]);
        let p = s
            .write(
                KeyHandle(0x20),
                &id("ccbbddeeffcc"),
                &Nonce([1; 6]),
                &aead(7),
                false,
            )
            .unwrap();
        assert_eq!(p, d.path().join("0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc"));
        let got = s.lookup_disk(&id("ccbbddeeffcc")).unwrap().unwrap();
        assert_eq!(
            (got.key_handle, got.nonce, got.aead),
            (KeyHandle(0x20), Nonce([1; 6]), aead(7))
        );
        assert_eq!(s.lookup_disk(&id("cccccccccccb")).unwrap(), None);
        // No temp files left behind.
        let leaf = p.parent().unwrap();
        assert_eq!(std::fs::read_dir(leaf).unwrap().count(), 1);
    }

    #[test]
    fn existing_aead_is_kept_unless_forced() {
        let (_d, s) = store(&[0x20]);
        let i = id("ccbbddeeffcc");
        s.write(KeyHandle(0x20), &i, &Nonce([1; 6]), &aead(1), false)
            .unwrap();
        assert!(matches!(
            s.write(KeyHandle(0x20), &i, &Nonce([1; 6]), &aead(2), false),
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(s.lookup_disk(&i).unwrap().unwrap().aead, aead(1));
        s.write(KeyHandle(0x20), &i, &Nonce([1; 6]), &aead(2), true)
            .unwrap();
        assert_eq!(s.lookup_disk(&i).unwrap().unwrap().aead, aead(2));
    }

    #[test]
    fn configured_order_decides_and_every_spelling_counts() {
        let (d, s) = store(&[0x21, 0x20]);
        let i = id("ccbbddeeffcc");
        // Written by pyhsm under a decimal spelling.
        let p = crate::layout::aead_path(&d.path().join("32"), &i);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            crate::format::write_v1(KeyHandle(0x20), &i.to_nonce().unwrap(), &aead(1)),
        )
        .unwrap();
        assert_eq!(
            s.lookup_disk(&i).unwrap().unwrap().key_handle,
            KeyHandle(0x20)
        );
        assert!(matches!(
            s.write(KeyHandle(0x20), &i, &Nonce([0; 6]), &aead(1), false),
            Err(StoreError::AlreadyExists(_))
        ));
        let p21 = crate::layout::aead_path(&d.path().join("0x21"), &i);
        std::fs::create_dir_all(p21.parent().unwrap()).unwrap();
        std::fs::write(
            &p21,
            crate::format::write_v1(KeyHandle(0x21), &i.to_nonce().unwrap(), &aead(2)),
        )
        .unwrap();
        assert_eq!(
            s.lookup_disk(&i).unwrap().unwrap().key_handle,
            KeyHandle(0x21),
            "0x21 is configured first"
        );
    }

    #[test]
    fn nothing_on_disk_is_trusted() {
        let (d, s) = store(&[0x20]);
        let base = d.path().join("0x20");
        let put = |name: &str, bytes: &[u8]| {
            let p = crate::layout::aead_path(&base, &id(name));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let p = put("cccccccccccb", b"YubiHSM AEAD\n\x07junk");
        assert_eq!(
            s.lookup_disk(&id("cccccccccccb")),
            Err(StoreError::UnknownVersion {
                path: p,
                version: 7
            })
        );
        let p = put("cccccccccccd", b"tiny");
        assert!(
            matches!(s.lookup_disk(&id("cccccccccccd")), Err(StoreError::Malformed { path, .. }) if path == p)
        );
        let p = put(
            "ccccccccccce",
            &crate::format::write_v1(KeyHandle(0x21), &Nonce([0; 6]), &aead(1)),
        );
        assert_eq!(
            s.lookup_disk(&id("ccccccccccce")),
            Err(StoreError::KeyHandleMismatch {
                path: p,
                in_file: 0x21,
                dir: 0x20
            })
        );
        let dir = crate::layout::aead_path(&base, &id("cccccccccccf"));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            s.lookup_disk(&id("cccccccccccf")),
            Err(StoreError::NotAFile(dir))
        );
        // A symlink out of the store is refused; one inside is followed.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), [1u8; 30]).unwrap();
        let link = crate::layout::aead_path(&base, &id("cccccccccccg"));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert_eq!(
            s.lookup_disk(&id("cccccccccccg")),
            Err(StoreError::SymlinkEscape(link))
        );
        let good = put(
            "ccccccccccch",
            &crate::format::write_v1(KeyHandle(0x20), &Nonce([0; 6]), &aead(3)),
        );
        let inner = crate::layout::aead_path(&base, &id("cccccccccccj"));
        std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&good, &inner).unwrap();
        assert_eq!(
            s.lookup_disk(&id("cccccccccccj")).unwrap().unwrap().aead,
            aead(3)
        );
        // Unreadable: root reads anything, so only check where permissions bind.
        let p = put("ccccccccccck", &[1u8; 30]);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        if !nix::unistd::Uid::effective().is_root() {
            assert!(matches!(
                s.lookup_disk(&id("ccccccccccck")),
                Err(StoreError::Io { .. })
            ));
        }
    }

    #[test]
    fn walk_reports_bad_and_misplaced_files() {
        let (d, s) = store(&[0x20]);
        s.write(
            KeyHandle(0x20),
            &id("ccbbddeeffcc"),
            &id("ccbbddeeffcc").to_nonce().unwrap(),
            &aead(1),
            false,
        )
        .unwrap();
        s.write(
            KeyHandle(0x20),
            &id("cccccccccccb"),
            &Nonce([9; 6]),
            &aead(1),
            false,
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("0x20/zz")).unwrap();
        std::fs::write(d.path().join("0x20/zz/README"), b"x").unwrap();
        std::fs::write(d.path().join("0x20/ccbbddeeffcc"), aead(1).as_bytes()).unwrap();
        std::fs::create_dir_all(crate::layout::aead_path(
            &d.path().join("0x20"),
            &id("ccccccccccdd"),
        ))
        .unwrap();
        let entries = s.walk();
        assert_eq!(entries.len(), 5, "{entries:#?}");
        assert!(entries.iter().any(
            |e| matches!(&e.result, Err(StoreError::NotAFile(p)) if p.ends_with("ccccccccccdd"))
        ));
        let good = entries
            .iter()
            .filter(|e| e.result.is_ok() && e.misplaced.is_empty())
            .count();
        assert_eq!(good, 1);
        assert!(entries
            .iter()
            .any(|e| e.misplaced.iter().any(|m| m.contains("nonce"))));
        assert!(entries
            .iter()
            .any(|e| e.misplaced.iter().any(|m| m.starts_with("not at"))));
        assert!(entries
            .iter()
            .any(|e| matches!(e.result, Err(StoreError::Malformed { .. }))));
        assert_eq!(stats(&entries)[&KeyHandle(0x20)], (1, 4));
    }

    #[test]
    fn missing_base_is_an_error() {
        assert!(matches!(
            FsStore::open(Path::new("/nonexistent/aeads"), vec![]),
            Err(StoreError::NoBase(_))
        ));
    }
}
