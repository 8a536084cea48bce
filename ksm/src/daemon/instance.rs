//! One daemon per PID file and per sharing socket.
//!
//! A second `ksm serve` started by mistake (another port, same `--socket` and `--pid-file`)
//! must not take over the first one's files: it would delete the live daemon's socket, so
//! the operator tools lose it, overwrite its PID file, so systemd or a script signals the
//! wrong process, and remove both when it exits. Both claims are `flock`s held for the
//! process's life, so they vanish with it however it ends, and a stale file left by a
//! crash is simply taken over.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::Error;

/// Opens `path` for writing without following a symlink (a planted link must not make
/// the daemon write or truncate another file) and locks it, without waiting.
/// `Ok(Err(file))`: another process holds the lock.
fn open_locked(path: &Path, mode: u32) -> Result<Result<Flock<File>, File>, Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::Usage(format!(
                    "{} is a symlink; refusing to follow it",
                    path.display()
                ))
            } else {
                Error::io(format!("open {}", path.display()), e)
            }
        })?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(Error::Usage(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Ok(locked)),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => Ok(Err(file)),
        Err((_, e)) => Err(Error::io(
            format!("lock {}", path.display()),
            std::io::Error::from(e),
        )),
    }
}

/// The daemon's PID file, locked while it runs and removed when it stops.
pub struct PidFile {
    path: PathBuf,
    file: Flock<File>,
}

impl PidFile {
    /// Writes this process's PID to `path`, unless a live daemon holds it.
    pub fn claim(path: &Path) -> Result<PidFile, Error> {
        let mut file = match open_locked(path, 0o644)? {
            Ok(f) => f,
            Err(mut held) => {
                let mut pid = String::new();
                let _ = held.read_to_string(&mut pid);
                return Err(Error::AlreadyRunning {
                    holding: format!("(pid {}, holding {})", pid.trim(), path.display()),
                });
            }
        };
        file.set_len(0)
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }
}

impl Drop for PidFile {
    /// Removes the file only if the path still names the file we locked.
    fn drop(&mut self) {
        if let (Ok(ours), Ok(there)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path))
        {
            if (ours.dev(), ours.ino()) == (there.dev(), there.ino()) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The right to serve the sharing socket at a path: a lock on `<socket>.lock` beside it,
/// held while the daemon runs. The lock file stays (removing it would let two daemons lock
/// two different files of the same name).
pub struct SocketClaim {
    _lock: Flock<File>,
}

impl SocketClaim {
    /// Claims `socket`, creating its directory if needed. Refused while another daemon holds
    /// the claim or answers on the socket (one that predates the lock file).
    pub fn claim(socket: &Path) -> Result<SocketClaim, Error> {
        if let Some(dir) = socket.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            }
        }
        let mut lock_path = socket.as_os_str().to_owned();
        lock_path.push(".lock");
        let busy = || Error::AlreadyRunning {
            holding: format!("with the sharing socket {}", socket.display()),
        };
        let lock = open_locked(Path::new(&lock_path), 0o600)?.map_err(|_| busy())?;
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(busy());
        }
        Ok(SocketClaim { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_pid_file_is_neither_overwritten_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ksm.pid");
        let first = PidFile::claim(&p).unwrap();
        let mine = std::fs::read_to_string(&p).unwrap();
        let err = PidFile::claim(&p).err().unwrap().to_string();
        assert!(err.contains("another ksm serve is running"), "{err}");
        assert!(err.contains(mine.trim()), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), mine);
        drop(first);
        assert!(!p.exists());
        // A stale file (its process gone) is taken over.
        std::fs::write(&p, "999999\n").unwrap();
        let again = PidFile::claim(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), mine);
        drop(again);
    }

    #[test]
    fn a_symlinked_pid_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let p = dir.path().join("ksm.pid");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let err = PidFile::claim(&p).err().unwrap().to_string();
        assert!(err.contains("symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_socket_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("run/ksm.sock");
        let first = SocketClaim::claim(&s).unwrap();
        assert!(SocketClaim::claim(&s).is_err());
        drop(first);
        let _again = SocketClaim::claim(&s).unwrap();
    }
}
