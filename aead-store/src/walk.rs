//! Every file under the store, checked: what `ksm store verify` and `stats` report on.
//!
//! The walk streams (one directory listing held per level), so a million AEADs do not have
//! to fit in memory at once.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use otp_core::{KeyHandle, PublicId};

use crate::layout::{aead_path_in, KeyHandleDirs, Layout};
use crate::{AeadKey, AeadSource, FsStore, NoncePolicy, StoreError, StoredAead};

/// One file found by [`FsStore::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Where it was found: the file (or the directory that could not be listed).
    pub source: AeadSource,
    /// Key (handle, or YubiHSM 2 otp-aead-key) of the directory it lies under.
    pub dir_key: AeadKey,
    /// The public id its name spells, if it does.
    pub id: Option<PublicId>,
    /// The AEAD, or why the file is unusable.
    pub result: Result<StoredAead, StoreError>,
    /// Ways a readable file is in the wrong place: not at either layout's path for its name
    /// under its key-handle directory. (A version-1 file naming another key handle than its
    /// directory is an error in `result`.)
    pub misplaced: Vec<String>,
    /// A version-1 file whose nonce is not the public id of its name, whatever the store's
    /// [`crate::NoncePolicy`]: under the default policy `result` is then
    /// [`StoreError::NonceMismatch`]; under [`crate::NoncePolicy::Any`] the file is usable and
    /// this is all that tells it apart.
    pub nonce_differs: bool,
}

impl WalkEntry {
    /// Readable and in its place.
    pub fn is_good(&self) -> bool {
        self.result.is_ok() && self.misplaced.is_empty()
    }
}

/// Counts for one key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KhStats {
    /// Readable AEADs in their place.
    pub good: usize,
    /// Readable AEADs in the wrong place (see [`WalkEntry::misplaced`]).
    pub misplaced: usize,
    /// Files (or directories) that are not usable AEADs.
    pub bad: usize,
}

impl KhStats {
    /// Counts one entry.
    pub fn add(&mut self, e: &WalkEntry) {
        match (&e.result, e.misplaced.is_empty()) {
            (Err(_), _) => self.bad += 1,
            (Ok(_), true) => self.good += 1,
            (Ok(_), false) => self.misplaced += 1,
        }
    }

    /// Files that are not good AEADs in their place: bad and misplaced ones.
    pub fn problems(&self) -> usize {
        self.bad + self.misplaced
    }
}

/// Counts per key, taking each entry as the walk yields it (a million files need the
/// memory of one), e.g. `stats(store.entries())`.
pub fn stats(entries: impl IntoIterator<Item = WalkEntry>) -> BTreeMap<AeadKey, KhStats> {
    let mut m: BTreeMap<AeadKey, KhStats> = BTreeMap::new();
    for e in entries {
        m.entry(e.dir_key).or_default().add(&e);
    }
    m
}

impl FsStore {
    /// Every file under every key directory (configured or not, any spelling), in
    /// name order, with its parse result and placement checks. Dot-files (rsync's and our
    /// temp files) are skipped.
    pub fn entries(&self) -> Walk<'_> {
        let (dirs, base_error) = match KeyHandleDirs::read(self.base()) {
            Ok(d) => (d, None),
            Err(e) => (KeyHandleDirs::default(), Some(e)),
        };
        Walk {
            store: self,
            dirs,
            next_root: 0,
            stack: Vec::new(),
            base_error,
        }
    }
}

/// The iterator of [`FsStore::entries`].
pub struct Walk<'a> {
    store: &'a FsStore,
    dirs: KeyHandleDirs,
    next_root: usize,
    stack: Vec<Frame>,
    base_error: Option<StoreError>,
}

struct Frame {
    kh: AeadKey,
    kh_dir: PathBuf,
    entries: std::vec::IntoIter<fs::DirEntry>,
}

impl Walk<'_> {
    /// Lists `dir` onto the stack, or returns the entry reporting why it cannot be listed.
    fn push(&mut self, kh: AeadKey, kh_dir: PathBuf, dir: &Path) -> Option<WalkEntry> {
        let listed = fs::read_dir(dir).and_then(|rd| rd.collect::<Result<Vec<_>, _>>());
        match listed {
            Ok(mut entries) => {
                entries.sort_by_key(|e| e.file_name());
                self.stack.push(Frame {
                    kh,
                    kh_dir,
                    entries: entries.into_iter(),
                });
                None
            }
            Err(e) => Some(WalkEntry {
                source: AeadSource::file(dir.to_path_buf()),
                dir_key: kh,
                id: None,
                result: Err(StoreError::io(dir, &e)),
                misplaced: Vec::new(),
                nonce_differs: false,
            }),
        }
    }

    fn check_file(&self, kh: AeadKey, kh_dir: &Path, path: PathBuf, name: &str) -> WalkEntry {
        let Ok(id) = PublicId::new(name) else {
            return WalkEntry {
                result: Err(StoreError::Malformed {
                    path: path.clone(),
                    reason: "file name is not a modhex public id",
                }),
                source: AeadSource::file(path),
                dir_key: kh,
                id: None,
                misplaced: Vec::new(),
                nonce_differs: false,
            };
        };
        let result = self.store.read_file(&path, kh, &id);
        let mut misplaced = Vec::new();
        let nonce_differs = match &result {
            Ok(s) => {
                let places = Layout::READ_ORDER.map(|l| aead_path_in(kh_dir, &id, l));
                if !places.contains(&path) {
                    misplaced.push(format!("not at {}", crate::shown(&places[0])));
                }
                !NoncePolicy::binds(&id, &s.nonce())
            }
            Err(e) => matches!(
                e,
                StoreError::NonceMismatch { .. } | StoreError::ShortId { .. }
            ),
        };
        WalkEntry {
            source: AeadSource::file(path),
            dir_key: kh,
            id: Some(id),
            result,
            misplaced,
            nonce_differs,
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = WalkEntry;

    fn next(&mut self) -> Option<WalkEntry> {
        if let Some(e) = self.base_error.take() {
            return Some(WalkEntry {
                source: AeadSource::file(self.store.base().to_path_buf()),
                dir_key: AeadKey::Handle(KeyHandle(0)),
                id: None,
                result: Err(e),
                misplaced: Vec::new(),
                nonce_differs: false,
            });
        }
        loop {
            let Some(frame) = self.stack.last_mut() else {
                let (kh, dir) = self.dirs.get(self.next_root)?;
                let dir = dir.to_path_buf();
                self.next_root += 1;
                if let Some(err) = self.push(kh, dir.clone(), &dir) {
                    return Some(err);
                }
                continue;
            };
            let Some(entry) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            let (kh, kh_dir) = (frame.kh, frame.kh_dir.clone());
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir {
                return Some(self.check_file(kh, &kh_dir, path, &name));
            }
            // Layout directories have two characters; a directory named like a whole public
            // id at that id's place stands where its AEAD file should be.
            let in_place_of_file = name.len() > 2
                && PublicId::new(&name).is_ok_and(|id| {
                    Layout::READ_ORDER
                        .iter()
                        .any(|l| aead_path_in(&kh_dir, &id, *l) == path)
                });
            if in_place_of_file {
                return Some(WalkEntry {
                    id: PublicId::new(&name).ok(),
                    result: Err(StoreError::NotAFile(path.clone())),
                    source: AeadSource::file(path),
                    dir_key: kh,
                    misplaced: Vec::new(),
                    nonce_differs: false,
                });
            }
            if let Some(err) = self.push(kh, kh_dir, &path) {
                return Some(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;
    use otp_core::{Aead, Nonce};

    const KH20: KeyHandle = KeyHandle(0x20);

    fn id(s: &str) -> PublicId {
        PublicId::new(s).unwrap()
    }

    fn aead(b: u8) -> Aead {
        Aead::new(&[b; 30]).unwrap()
    }

    #[test]
    fn walk_reports_good_bad_and_misplaced_files() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open(d.path(), vec![KH20]).unwrap();
        let good = s
            .write(
                KH20,
                &id("ccbbddeeffcc"),
                &id("ccbbddeeffcc").to_nonce().unwrap(),
                &aead(1),
                false,
            )
            .unwrap();
        // Good except its nonce.
        s.write(KH20, &id("cccccccccccb"), &Nonce([9; 6]), &aead(1), false)
            .unwrap();
        // A pyhsm 5-level file under a decimal spelling: good.
        let five = aead_path_in(
            &d.path().join("32"),
            &id("cccccccccccd"),
            Layout::Documented,
        );
        fs::create_dir_all(five.parent().unwrap()).unwrap();
        fs::write(&five, aead(2).as_bytes()).unwrap();
        // Junk: a file with a name that is no public id, a file at the wrong depth, a
        // directory where a file should be, a file for another handle, temp files.
        fs::create_dir_all(d.path().join("0x20/zz")).unwrap();
        fs::write(d.path().join("0x20/zz/README"), b"x").unwrap();
        fs::write(d.path().join("0x20/ccccccccccce"), aead(1).as_bytes()).unwrap();
        let dir = aead_path_in(&d.path().join("0x20"), &id("cccccccccccf"), Layout::Code);
        fs::create_dir_all(&dir).unwrap();
        let other = aead_path_in(&d.path().join("0x20"), &id("cccccccccccg"), Layout::Code);
        fs::create_dir_all(other.parent().unwrap()).unwrap();
        fs::write(
            &other,
            format::write_v1(KeyHandle(0x21), &Nonce([0; 6]), &aead(1)),
        )
        .unwrap();
        let good = FsStore::path_of(&good).unwrap();
        fs::write(good.with_file_name(".ccbbddeeffcc.Ab12Cd"), b"half").unwrap();
        fs::create_dir_all(d.path().join(".0x20")).unwrap();
        fs::write(d.path().join("not-a-handle"), b"ignored").unwrap();

        let entries: Vec<WalkEntry> = s.entries().collect();
        let by_name = |n: &str| {
            entries
                .iter()
                .find(|e| {
                    FsStore::path_of(&e.source)
                        .and_then(|p| p.file_name())
                        .is_some_and(|f| f == n)
                })
                .unwrap_or_else(|| panic!("{n} not walked: {entries:#?}"))
        };
        assert_eq!(entries.len(), 7, "{entries:#?}");
        assert!(by_name("ccbbddeeffcc").is_good());
        assert!(by_name("cccccccccccd").is_good());
        assert_eq!(by_name("cccccccccccd").dir_key, KH20.into());
        let foreign = by_name("cccccccccccb");
        assert!(foreign.nonce_differs && foreign.misplaced.is_empty());
        assert!(matches!(
            &foreign.result,
            Err(StoreError::NonceMismatch {
                nonce: Nonce([9, 9, 9, 9, 9, 9]),
                ..
            })
        ));
        // Opened for random nonces, the same file is usable, and still told apart.
        let any: Vec<WalkEntry> = s
            .clone()
            .with_nonce_policy(NoncePolicy::Any)
            .entries()
            .collect();
        let foreign = any.iter().find(|e| e.source == foreign.source).unwrap();
        assert!(foreign.nonce_differs && foreign.is_good());
        assert!(!by_name("ccbbddeeffcc").nonce_differs);
        assert_eq!(
            by_name("ccccccccccce").misplaced,
            [format!(
                "not at {}",
                d.path()
                    .join("0x20/cc/cc/cc/cc/cc/ce/ccccccccccce")
                    .display()
            )]
        );
        assert_eq!(
            by_name("cccccccccccf").result,
            Err(StoreError::NotAFile(dir))
        );
        assert!(matches!(
            &by_name("cccccccccccg").result,
            Err(StoreError::KeyHandleMismatch {
                in_file: KeyHandle(0x21),
                ..
            })
        ));
        assert!(matches!(
            &by_name("README").result,
            Err(StoreError::Malformed {
                reason: "file name is not a modhex public id",
                ..
            })
        ));

        let counts = stats(s.entries());
        assert_eq!(
            counts[&KH20.into()],
            KhStats {
                good: 2,
                misplaced: 1,
                bad: 4
            }
        );
        let collected = stats(entries)[&KH20.into()];
        assert_eq!((collected.good, collected.problems()), (2, 5));
    }

    #[test]
    fn walk_is_in_name_order_and_streams() {
        let d = tempfile::tempdir().unwrap();
        let s = FsStore::open(d.path(), vec![KH20]).unwrap();
        for n in [5u64, 1, 3, 2, 4] {
            let i = PublicId::from_number(n, 12).unwrap();
            s.write(KH20, &i, &i.to_nonce().unwrap(), &aead(1), false)
                .unwrap();
        }
        let ids: Vec<u64> = s.entries().map(|e| e.id.unwrap().to_number()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(s.entries().take(2).count(), 2);
    }

    #[test]
    fn a_base_that_vanished_is_one_error_entry() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("aeads");
        fs::create_dir(&base).unwrap();
        let s = FsStore::open(&base, vec![KH20]).unwrap();
        fs::remove_dir(&base).unwrap();
        let entries: Vec<WalkEntry> = s.entries().collect();
        assert_eq!(entries.len(), 1);
        assert!(matches!(&entries[0].result, Err(StoreError::Io { path, .. }) if *path == base));
    }
}
