//! Where an AEAD lives: `BASE/<key handle>/<2-char groups of the public id>/<public id>`.
//!
//! pyhsm's code (generate, import, KSM lookup) uses one directory level per 2-character
//! group of the whole public id (`0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc`); its documentation
//! shows one level fewer. We write the former and read both. This module is the only place
//! that maps (key-handle directory, public id) to a path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hsm_proto::{KeyHandle, PublicId};

/// The path pyhsm's code uses (and we write).
pub fn aead_path(kh_dir: &Path, id: &PublicId) -> PathBuf {
    let mut p = kh_dir.to_path_buf();
    let s = id.as_str();
    for i in (0..s.len()).step_by(2) {
        p.push(&s[i..(i + 2).min(s.len())]);
    }
    p.push(s);
    p
}

/// The path pyhsm's documentation shows (one level fewer); read for compatibility.
pub fn doc_path(kh_dir: &Path, id: &PublicId) -> PathBuf {
    let mut p = kh_dir.to_path_buf();
    let s = id.as_str();
    for i in (0..s.len().saturating_sub(2)).step_by(2) {
        p.push(&s[i..i + 2]);
    }
    p.push(s);
    p
}

/// Every directory directly under `base` whose name is a spelling of a key handle
/// (`0x20`, `32`, `0x00000020`, `KSM1`), grouped by handle; the canonical spelling first.
pub fn key_handle_dirs(base: &Path) -> BTreeMap<KeyHandle, Vec<PathBuf>> {
    let mut map: BTreeMap<KeyHandle, Vec<PathBuf>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return map;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Ok(kh) = KeyHandle::parse(&name) {
            map.entry(kh).or_default().push(e.path());
        }
    }
    for (kh, dirs) in map.iter_mut() {
        let canonical = kh.canonical();
        dirs.sort_by_key(|d| {
            (
                d.file_name()
                    .map(|n| n != canonical.as_str())
                    .unwrap_or(true),
                d.clone(),
            )
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_pyhsm() {
        let id = PublicId::new("ccbbddeeffcc").unwrap();
        assert_eq!(
            aead_path(Path::new("a/0x20"), &id),
            Path::new("a/0x20/cc/bb/dd/ee/ff/cc/ccbbddeeffcc")
        );
        assert_eq!(
            doc_path(Path::new("a/0x20"), &id),
            Path::new("a/0x20/cc/bb/dd/ee/ff/ccbbddeeffcc")
        );
    }

    #[test]
    fn every_spelling_of_a_handle_is_found() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "0x20",
            "32",
            "0x00000020",
            "KSM1",
            "not-a-handle!",
            ".hidden",
        ] {
            std::fs::create_dir(d.path().join(name)).unwrap();
        }
        let map = key_handle_dirs(d.path());
        let dirs = &map[&KeyHandle(0x20)];
        assert_eq!(dirs.len(), 3);
        assert!(dirs[0].ends_with("0x20"), "canonical first: {dirs:?}");
        assert!(map[&KeyHandle(0x314d_534b)][0].ends_with("KSM1"));
        assert_eq!(map.len(), 2);
    }
}
