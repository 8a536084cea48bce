//! Where an AEAD lives: `BASE/<key handle>/<2-char groups of the public id>/<public id>`.
//!
//! Design note (compatibility). pyhsm's code (generate, import, KSM lookup, decrypt-aead)
//! puts one directory level per 2-character group of the *whole* public id:
//! `0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc` ([`Layout::Code`]); its documentation shows one
//! level fewer, `0x20/cc/bb/dd/ee/ff/ccbbddeeffcc` ([`Layout::Documented`]). We write the
//! former and read both, the code layout first.
//!
//! pyhsm names the key-handle directory as the operator typed the handle (`0x20`, `32`,
//! `0x00000020`, `KSM1`, all the same handle when parsed). We write one spelling,
//! [`KeyHandle::canonical`], and read every directory whose name parses as a configured
//! handle ([`KeyHandleDirs`]).
//!
//! YubiHSM 2 AEADs (our version-2 files) lie beside them in the same base, one directory per
//! otp-aead-key, named `otp-aead-key-0x0005` ([`crate::AeadKey::dir_name`], a name no
//! spelling of a key handle can take), with the same public-id directories below.
//!
//! [`aead_path_in`] is the only place that maps (key directory, public id) to a path;
//! [`aead_path`] is its shorthand for the layout we write.

use std::path::{Component, Path, PathBuf};

use otp_core::{modhex, KeyHandle, PublicId};

use crate::{AeadKey, StoreError};

/// One of the two directory layouts pyhsm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// One directory per 2-character group of the whole id (pyhsm's code; what we write).
    Code,
    /// One level fewer: the last group has no directory (pyhsm's documentation).
    Documented,
}

impl Layout {
    /// The order lookups try the layouts in.
    pub const READ_ORDER: [Layout; 2] = [Layout::Code, Layout::Documented];
}

/// The path we write `id`'s AEAD to under the key-handle directory `kh_dir`: the code
/// layout, `kh_dir/cc/bb/dd/ee/ff/cc/ccbbddeeffcc`.
pub fn aead_path(kh_dir: &Path, id: &PublicId) -> PathBuf {
    aead_path_in(kh_dir, id, Layout::Code)
}

/// The path of `id`'s AEAD under the key-handle directory `kh_dir`, in `layout`.
///
/// `id` is a validated [`PublicId`] (even-length modhex), so no component can be `..`,
/// empty or contain a separator.
pub fn aead_path_in(kh_dir: &Path, id: &PublicId, layout: Layout) -> PathBuf {
    let s = id.as_str();
    let grouped = match layout {
        Layout::Code => s.len(),
        Layout::Documented => s.len().saturating_sub(2),
    };
    // Built in one allocation: the daemon names the file of every AEAD it serves.
    let dir = kh_dir.as_os_str();
    let mut p = std::ffi::OsString::with_capacity(dir.len() + grouped / 2 * 3 + s.len() + 2);
    p.push(dir);
    let mut sep = !dir.is_empty() && !dir.as_encoded_bytes().ends_with(b"/");
    for start in (0..grouped).step_by(2) {
        if sep {
            p.push("/");
        }
        p.push(&s[start..(start + 2).min(grouped)]);
        sep = true;
    }
    if sep {
        p.push("/");
    }
    p.push(s);
    PathBuf::from(p)
}

/// The names a write walks from the base, for [`aead_path`] under [`key_dir`]: the key's
/// directory and the 2-character groups of the id (the code layout), then the file's name.
/// Writes open each directory relative to the one before ([`crate::FsStore::put`]), so they
/// need the names rather than a path.
pub(crate) fn write_names(key: AeadKey, id: &PublicId) -> (Vec<String>, &str) {
    let s = id.as_str();
    let mut dirs = vec![key.dir_name()];
    dirs.extend((0..s.len()).step_by(2).map(|i| s[i..i + 2].to_string()));
    (dirs, s)
}

/// The key-handle directory we write into: the canonical spelling (`0x20`).
pub fn write_dir(base: &Path, kh: KeyHandle) -> PathBuf {
    key_dir(base, kh.into())
}

/// The directory we write a key's AEADs into: `0x20`, or `otp-aead-key-0x0005`.
pub fn key_dir(base: &Path, key: AeadKey) -> PathBuf {
    base.join(key.dir_name())
}

/// The directories directly under a store's base whose names are spellings of a key handle
/// or an otp-aead-key's directory name, as found when listed.
///
/// Sorted by key; for each key the canonical spelling first, then the others by name.
/// Names starting with `.` are skipped (rsync's temp directories), symlinked directories are
/// kept (their files must still resolve inside the store to be read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHandleDirs {
    dirs: Vec<(AeadKey, PathBuf)>,
}

impl KeyHandleDirs {
    /// Lists `base`.
    pub fn read(base: &Path) -> Result<KeyHandleDirs, StoreError> {
        let entries = std::fs::read_dir(base).map_err(|e| StoreError::io(base, &e))?;
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(base, &e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Some(kh) = AeadKey::from_dir_name(&name) else {
                continue;
            };
            let path = entry.path();
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                dirs.push((kh, path));
            }
        }
        dirs.sort_by(|(ka, pa), (kb, pb)| {
            let rank = |kh: &AeadKey, p: &Path| {
                (
                    *kh,
                    p.file_name() != Some(kh.dir_name().as_ref()),
                    p.to_path_buf(),
                )
            };
            rank(ka, pa).cmp(&rank(kb, pb))
        });
        Ok(KeyHandleDirs { dirs })
    }

    /// Every (key, directory), in order.
    pub fn iter(&self) -> impl Iterator<Item = (AeadKey, &Path)> + '_ {
        self.dirs.iter().map(|(kh, p)| (*kh, p.as_path()))
    }

    /// The directories of `key` with their index (stable until the next listing).
    pub fn of(&self, key: impl Into<AeadKey>) -> impl Iterator<Item = (usize, &Path)> + '_ {
        let kh = key.into();
        self.dirs
            .iter()
            .enumerate()
            .filter(move |(_, (k, _))| *k == kh)
            .map(|(i, (_, p))| (i, p.as_path()))
    }

    /// The directory at `index`.
    pub fn get(&self, index: usize) -> Option<(AeadKey, &Path)> {
        self.dirs.get(index).map(|(kh, p)| (*kh, p.as_path()))
    }

    /// How many directories there are.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// True if no key-handle directory exists.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// What a changed path under the store can affect, for the watcher: the inverse of
/// [`aead_path_in`], loose enough to cover every file a lookup could have read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    /// The base directory itself.
    Base,
    /// A directory (or file) directly under the base named like a key handle or an
    /// otp-aead-key's directory.
    KeyHandleDir,
    /// A layout directory (2-character groups), or the file of a 1-byte public id: every
    /// AEAD whose id starts with these bytes may lie below it.
    Prefix(Vec<u8>),
    /// Something named like a public id below a key-handle directory.
    Id(PublicId),
    /// Nothing a lookup reads: dot-files (rsync's temp files, ours), other names.
    Unrelated,
    /// Not under the base at all.
    Outside,
}

/// Classifies `path` relative to the store's `base`.
pub(crate) fn classify(base: &Path, path: &Path) -> Place {
    let Ok(rel) = path.strip_prefix(base) else {
        return Place::Outside;
    };
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => match n.to_str() {
                Some(s) if !s.starts_with('.') => names.push(s),
                _ => return Place::Unrelated,
            },
            _ => return Place::Unrelated,
        }
    }
    let Some((kh_name, below)) = names.split_first() else {
        return Place::Base;
    };
    if AeadKey::from_dir_name(kh_name).is_none() {
        return Place::Unrelated;
    }
    let mut prefix = Vec::new();
    for (i, name) in below.iter().enumerate() {
        if name.len() == 2 {
            match modhex::decode(name) {
                Ok(b) if prefix.len() < PublicId::MAX_CHARS / 2 => prefix.extend_from_slice(&b),
                _ => return Place::Unrelated,
            }
        } else if i + 1 == below.len() {
            return PublicId::new(name).map_or(Place::Unrelated, Place::Id);
        } else {
            return Place::Unrelated;
        }
    }
    if below.is_empty() {
        Place::KeyHandleDir
    } else {
        Place::Prefix(prefix)
    }
}

#[cfg(test)]
mod tests {

    /// What `aead_path_in` built with `Path::push`: the reference.
    fn pushed(kh_dir: &Path, id: &PublicId, layout: Layout) -> PathBuf {
        let s = id.as_str();
        let grouped = match layout {
            Layout::Code => s.len(),
            Layout::Documented => s.len().saturating_sub(2),
        };
        let mut p = kh_dir.to_path_buf();
        for start in (0..grouped).step_by(2) {
            p.push(&s[start..(start + 2).min(grouped)]);
        }
        p.push(s);
        p
    }

    #[test]
    fn paths_are_what_path_push_makes() {
        for dir in ["", "/", "aeads/0x20", "/var/cache/aeads/0x20/", "0x20"] {
            for id in ["cc", "cccc", "ccccdeulfbvj", "cccccccccccccccb"] {
                let id = PublicId::new(id).unwrap();
                for layout in [Layout::Code, Layout::Documented] {
                    assert_eq!(
                        aead_path_in(Path::new(dir), &id, layout),
                        pushed(Path::new(dir), &id, layout),
                        "{dir:?} {id} {layout:?}"
                    );
                    assert_eq!(
                        aead_path_in(Path::new(dir), &id, layout).as_os_str(),
                        pushed(Path::new(dir), &id, layout).as_os_str()
                    );
                }
            }
        }
    }
    use super::*;

    fn id(s: &str) -> PublicId {
        PublicId::new(s).unwrap()
    }

    #[test]
    fn code_layout_has_a_directory_per_pair_of_the_whole_id() {
        assert_eq!(
            aead_path_in(Path::new("/a/0x20"), &id("ccbbddeeffcc"), Layout::Code),
            Path::new("/a/0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc")
        );
        assert_eq!(
            aead_path_in(Path::new("b"), &id("cb"), Layout::Code),
            Path::new("b/cb/cb")
        );
        assert_eq!(
            aead_path_in(Path::new("b"), &id("vvvvvvvvvvvvvvvv"), Layout::Code)
                .components()
                .count(),
            1 + 8 + 1
        );
    }

    #[test]
    fn the_write_names_spell_the_write_path() {
        for i in ["cb", "ccbbddeeffcc", "vvvvvvvvvvvvvvvv"] {
            for key in [
                AeadKey::from(KeyHandle(0x20)),
                AeadKey::OtpKey(otp_core::ObjectId(5)),
            ] {
                let i = id(i);
                let (dirs, file) = write_names(key, &i);
                let mut p = PathBuf::from("/s");
                p.extend(&dirs);
                p.push(file);
                assert_eq!(p, aead_path(&key_dir(Path::new("/s"), key), &i));
            }
        }
    }

    #[test]
    fn the_write_path_is_the_code_layout() {
        let i = id("ccccdeulfbvj");
        assert_eq!(
            aead_path(Path::new("s/0x20"), &i),
            aead_path_in(Path::new("s/0x20"), &i, Layout::Code)
        );
    }

    #[test]
    fn documented_layout_has_one_level_fewer() {
        assert_eq!(
            aead_path_in(
                Path::new("/a/0x20"),
                &id("ccbbddeeffcc"),
                Layout::Documented
            ),
            Path::new("/a/0x20/cc/bb/dd/ee/ff/ccbbddeeffcc")
        );
        assert_eq!(
            aead_path_in(Path::new("b"), &id("cb"), Layout::Documented),
            Path::new("b/cb")
        );
    }

    #[test]
    fn we_write_the_canonical_spelling() {
        assert_eq!(
            write_dir(Path::new("/s"), KeyHandle(32)),
            Path::new("/s/0x20")
        );
        assert_eq!(
            write_dir(Path::new("/s"), KeyHandle::parse("KSM1").unwrap()),
            Path::new("/s/0x314d534b")
        );
    }

    #[test]
    fn every_spelling_of_a_handle_is_found_canonical_first() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "32",
            "0x00000020",
            "0x20",
            "KSM1",
            "0x21",
            "not-a-handle!",
            ".0x20",
        ] {
            std::fs::create_dir(d.path().join(name)).unwrap();
        }
        std::fs::write(d.path().join("33"), b"a file, not a directory").unwrap();
        std::os::unix::fs::symlink(d.path().join("0x21"), d.path().join("0x0021")).unwrap();
        let dirs = KeyHandleDirs::read(d.path()).unwrap();
        let names = |kh: u32| -> Vec<String> {
            dirs.of(KeyHandle(kh))
                .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(0x20), ["0x20", "0x00000020", "32"]);
        assert_eq!(names(0x21), ["0x21", "0x0021"]);
        assert_eq!(names(0x314d_534b), ["KSM1"]);
        assert_eq!(dirs.len(), 6);
        let (i, _) = dirs.of(KeyHandle(0x21)).next().unwrap();
        assert_eq!(dirs.get(i).unwrap().0, AeadKey::Handle(KeyHandle(0x21)));
        assert!(matches!(
            KeyHandleDirs::read(&d.path().join("missing")),
            Err(StoreError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            })
        ));
    }

    #[test]
    fn otp_key_directories_are_listed_beside_key_handles() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "0x20",
            "otp-aead-key-0x0005",
            "otp-aead-key-5",
            "otp-aead-key-0x0006",
        ] {
            std::fs::create_dir(d.path().join(name)).unwrap();
        }
        let dirs = KeyHandleDirs::read(d.path()).unwrap();
        let keys: Vec<String> = dirs.iter().map(|(k, _)| k.dir_name()).collect();
        assert_eq!(keys, ["0x20", "otp-aead-key-0x0005", "otp-aead-key-0x0006"]);
        let five = AeadKey::OtpKey(otp_core::ObjectId(5));
        assert_eq!(
            dirs.of(five)
                .map(|(_, p)| p.to_path_buf())
                .collect::<Vec<_>>(),
            [d.path().join("otp-aead-key-0x0005")]
        );
        assert_eq!(
            key_dir(d.path(), five),
            d.path().join("otp-aead-key-0x0005")
        );
    }

    #[test]
    fn changed_paths_map_back_to_what_they_can_affect() {
        let b = Path::new("/s");
        let at = |p: &str| classify(b, &b.join(p));
        assert_eq!(classify(b, b), Place::Base);
        assert_eq!(classify(b, Path::new("/t/0x20")), Place::Outside);
        assert_eq!(at("0x20"), Place::KeyHandleDir);
        assert_eq!(at("KSM1"), Place::KeyHandleDir);
        assert_eq!(at("otp-aead-key-0x0005"), Place::KeyHandleDir);
        assert_eq!(
            at("otp-aead-key-0x0005/cc/bb/dd/ee/ff/cc/ccbbddeeffcc"),
            Place::Id(id("ccbbddeeffcc"))
        );
        assert_eq!(at("otp-aead-key-5/cc"), Place::Unrelated);
        assert_eq!(at("not-a-kh"), Place::Unrelated);
        assert_eq!(at("0x20/cc"), Place::Prefix(vec![0x00]));
        assert_eq!(at("0x20/cc/bv/dd"), Place::Prefix(vec![0x00, 0x1f, 0x22]));
        assert_eq!(
            at("0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc"),
            Place::Id(id("ccbbddeeffcc"))
        );
        assert_eq!(at("32/cc/bb/ccbbddeeffcc"), Place::Id(id("ccbbddeeffcc")));
        assert_eq!(at("0x20/cc/bb/.ccbbddeeffcc.Xy12Ab"), Place::Unrelated);
        assert_eq!(at("0x20/cc/.tmp/ccbbddeeffcc"), Place::Unrelated);
        assert_eq!(at(".0x20/cc"), Place::Unrelated);
        assert_eq!(at("0x20/zz/ccbbddeeffcc"), Place::Unrelated);
        assert_eq!(at("0x20/README"), Place::Unrelated);
        assert_eq!(at("0x20/cc/xx"), Place::Unrelated);
        assert_eq!(
            at("0x20/cc/cc/cc/cc/cc/cc/cc/cc/cc"),
            Place::Unrelated,
            "deeper than any public id"
        );
    }
}
