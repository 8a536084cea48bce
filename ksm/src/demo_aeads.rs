//! The demo's AEADs, compiled into the binary: the public test AEADs of
//! `fixtures/aead-files/store`, which `ksm serve --demo` decodes with the demo soft HSM.
//!
//! They are carried in the binary rather than read from the source tree or a package
//! directory, so the demo runs wherever the binary does: from a clone in a private (0700)
//! directory as another user (`nobody`, as the tests run it), from `/usr/bin/ksm` with no
//! other file installed. When the demo starts they are written to a fresh private
//! temporary directory (mode 0700, the daemon's user's), served from there, and removed
//! with it when the daemon ends.

use std::path::Path;

use crate::Error;

/// Each file of the store, by its path under the store's root. A unit test holds this list
/// to `fixtures/aead-files/store`.
const FILES: [(&str, &[u8]); 6] = [
    (
        "0x00000020/cc/cc/bg/vj/kj/ccccbgvjkjfd",
        include_bytes!("../../fixtures/aead-files/store/0x00000020/cc/cc/bg/vj/kj/ccccbgvjkjfd"),
    ),
    (
        "0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj",
        include_bytes!("../../fixtures/aead-files/store/0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj"),
    ),
    (
        "0x21/cc/cc/kf/ei/ib/dh/cccckfeiibdh",
        include_bytes!("../../fixtures/aead-files/store/0x21/cc/cc/kf/ei/ib/dh/cccckfeiibdh"),
    ),
    (
        "0x21/cc/cc/rt/ej/de/ccccrtejdebu",
        include_bytes!("../../fixtures/aead-files/store/0x21/cc/cc/rt/ej/de/ccccrtejdebu"),
    ),
    (
        "32/cc/cc/nf/uu/gr/fr/ccccnfuugrfr",
        include_bytes!("../../fixtures/aead-files/store/32/cc/cc/nf/uu/gr/fr/ccccnfuugrfr"),
    ),
    (
        "33/cc/cc/gk/eg/kh/cg/ccccgkegkhcg",
        include_bytes!("../../fixtures/aead-files/store/33/cc/cc/gk/eg/kh/cg/ccccgkegkhcg"),
    ),
];

/// The demo's AEAD directory, removed when dropped.
#[derive(Debug)]
pub struct DemoAeads {
    dir: tempfile::TempDir,
}

impl DemoAeads {
    /// Writes the compiled-in AEADs to a new private temporary directory.
    pub fn write() -> Result<DemoAeads, Error> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("ksm-demo-aeads.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("create a directory for the demo's AEADs", e))?;
        for (name, bytes) in FILES {
            let path = dir.path().join(name);
            let write = |p: &Path| -> std::io::Result<()> {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(p, bytes)
            };
            write(&path).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        }
        Ok(DemoAeads { dir })
    }

    /// The directory to serve.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the fixture store, by relative path, and nothing else.
    fn fixture_files(root: &Path, under: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(under).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                fixture_files(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }

    #[test]
    fn the_compiled_in_aeads_are_the_fixture_store() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/aead-files/store");
        let mut want = Vec::new();
        fixture_files(&root, &root, &mut want);
        want.sort();
        let mut have: Vec<(String, Vec<u8>)> = FILES
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn the_demo_directory_is_private_and_goes_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let d = DemoAeads::write().unwrap();
        let path = d.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read(path.join(FILES[1].0)).unwrap(),
            FILES[1].1.to_vec()
        );
        drop(d);
        assert!(!path.exists());
    }
}
