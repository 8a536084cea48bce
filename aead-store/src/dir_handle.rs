//! Directory handles for writing into the store: every directory is opened relative to the
//! handle of its parent, never by path, and never through a symlink.
//!
//! Why handles. Whoever owns a directory inside the AEAD tree may rename what is in it at
//! any moment, for instance swap a subdirectory with a symlink to `/etc/sudoers.d`
//! (`renameat2` with `RENAME_EXCHANGE`) in a loop. A writer that checks a path and then uses
//! it (`canonicalize`, then `create_dir`, then `rename`) can be raced into creating
//! directories and files wherever that symlink points, as root. Here each level is opened
//! with `O_DIRECTORY | O_NOFOLLOW` from the handle of the level above (`openat`), created with
//! `mkdirat` on that handle, and the temp file and its rename both name entries of the one
//! handle the AEAD goes into. A symlink anywhere below the base makes the write fail
//! ([`StoreError::SymlinkInWritePath`]); a swap after a level was opened only moves a
//! directory we already hold, so nothing can land outside it.
//!
//! Reads need no handles: they refuse any file whose resolved path leaves the store and open
//! the file itself with `O_NOFOLLOW`, and a read cannot create anything.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
use rand::distributions::{Alphanumeric, DistString};

use crate::StoreError;

/// An open directory of the store, and the path it was reached by (for messages only).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How a directory is opened: never through a symlink, closed on exec.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn io_error(path: &Path, e: Errno) -> StoreError {
    StoreError::io(path, &io::Error::from(e))
}

impl Dir {
    /// Opens the store's base, `base` with every symlink already resolved (when the store
    /// was opened): if it has since become a symlink, the write fails.
    pub(crate) fn open_base(base: &Path) -> Result<Dir, StoreError> {
        let fd = nix::fcntl::open(base, dir_flags(), Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR
                if std::fs::symlink_metadata(base).is_ok_and(|m| m.is_symlink()) =>
            {
                StoreError::SymlinkInWritePath(base.to_path_buf())
            }
            e => io_error(base, e),
        })?;
        Ok(Dir {
            fd,
            path: base.to_path_buf(),
        })
    }

    /// The path this directory was reached by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`, created (mode 0777 less the umask) if missing. A symlink or
    /// anything else that is not a directory there is refused.
    pub(crate) fn child(&self, name: &str) -> Result<Dir, StoreError> {
        let path = self.path.join(name);
        match mkdirat(&self.fd, name, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io_error(&path, e)),
        }
        let fd = openat(&self.fd, name, dir_flags(), Mode::empty()).map_err(|e| match e {
            // Refused either way; which of the two it was only chooses the message.
            Errno::ELOOP | Errno::ENOTDIR => {
                let stat = fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW);
                if stat.is_ok_and(|st| {
                    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                }) {
                    StoreError::SymlinkInWritePath(path.clone())
                } else {
                    StoreError::NotADirectory(path.clone())
                }
            }
            e => io_error(&path, e),
        })?;
        Ok(Dir { fd, path })
    }

    /// A new file in this directory named `prefix` and six random characters, created
    /// exclusively (mode 0644 less the umask). Removed again when the [`TempFile`] is
    /// dropped unless it was placed.
    pub(crate) fn temp_file(&self, prefix: &str) -> Result<TempFile<'_>, StoreError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut tries = 0;
        loop {
            let name = format!(
                "{prefix}{}",
                Alphanumeric.sample_string(&mut rand::thread_rng(), 6)
            );
            match openat(
                &self.fd,
                name.as_str(),
                flags,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        dir: self,
                        name,
                        file: Some(File::from(fd)),
                    })
                }
                Err(Errno::EEXIST) if tries < 100 => tries += 1,
                Err(e) => return Err(io_error(&self.path.join(name), e)),
            }
        }
    }

    /// Flushes this directory's entries (a rename into it) to disk.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        nix::unistd::fsync(&self.fd).map_err(|e| io_error(&self.path, e))
    }
}

/// A temp file being written in a [`Dir`]; removed from that directory on drop unless
/// [`TempFile::place`] moved it into place.
#[derive(Debug)]
pub(crate) struct TempFile<'a> {
    dir: &'a Dir,
    name: String,
    file: Option<File>,
}

impl TempFile<'_> {
    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until placed")
    }

    /// Where it is, for messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Closes the file and renames it to `name` in the same directory: replacing what is
    /// there if `replace`, else only if nothing is (`renameat2` with `RENAME_NOREPLACE`, or
    /// where the file system lacks it a hard link then the temp name's removal; both fail
    /// rather than replace a file that appeared since it was checked for).
    pub(crate) fn place(mut self, name: &str, replace: bool) -> Result<(), StoreError> {
        // Closed before it is moved, so a watcher sees the name only once the file is whole.
        drop(self.file.take());
        let fd = &self.dir.fd;
        let target = self.dir.path.join(name);
        let mut linked = false;
        let placed = if replace {
            renameat(fd, self.name.as_str(), fd, name)
        } else {
            match renameat2(
                fd,
                self.name.as_str(),
                fd,
                name,
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Err(Errno::EINVAL | Errno::ENOSYS) => {
                    linked = true;
                    linkat(fd, self.name.as_str(), fd, name, AtFlags::empty())
                }
                r => r,
            }
        };
        match placed {
            Ok(()) => {}
            Err(Errno::EEXIST) if !replace => return Err(StoreError::AlreadyExists(target)),
            Err(e) => return Err(io_error(&target, e)),
        }
        if linked {
            // The file now has both names: drop the temp one.
            unlinkat(fd, self.name.as_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io_error(&self.path(), e))?;
        }
        self.name.clear();
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = unlinkat(&self.dir.fd, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_appearing_after_the_check_is_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open_base(d.path()).unwrap();
        let tmp = || {
            let mut t = dir.temp_file(".x.tmp.").unwrap();
            t.file().write_all(b"new").unwrap();
            t
        };
        let path = d.path().join("x");
        std::fs::write(&path, b"old").unwrap();
        assert_eq!(
            tmp().place("x", false),
            Err(StoreError::AlreadyExists(path.clone()))
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        tmp().place("x", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // No temp file is left behind, placed or not, nor one dropped unplaced.
        drop(tmp());
        assert_eq!(names(d.path()), ["x"]);
    }

    #[test]
    fn children_are_created_opened_and_never_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let base = Dir::open_base(d.path()).unwrap();
        let a = base.child("a").unwrap();
        assert_eq!(a.path(), d.path().join("a"));
        a.child("b").unwrap();
        assert!(d.path().join("a/b").is_dir());
        // Existing: opened again.
        assert_eq!(base.child("a").unwrap().path(), d.path().join("a"));
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("l")).unwrap();
        assert_eq!(
            base.child("l").unwrap_err(),
            StoreError::SymlinkInWritePath(d.path().join("l"))
        );
        std::os::unix::fs::symlink(d.path(), d.path().join("base")).unwrap();
        assert_eq!(
            Dir::open_base(&d.path().join("base")).unwrap_err(),
            StoreError::SymlinkInWritePath(d.path().join("base"))
        );
    }
}
