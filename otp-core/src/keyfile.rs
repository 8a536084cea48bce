//! Files that hold keys in clear (emulator and soft-HSM key files, `--aes-key-file`): the one
//! rule for reading them.
//!
//! Every such file is read with [`read_private`]: refused if its group or other users have
//! any access (`mode & 0o077`), never blocking on a FIFO, bounded in size, and held in memory
//! that is wiped when dropped. (What a parser says about such text is the emulator's
//! business: its configuration errors never quote the text.)

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// Longest key file read. An emulator configuration with a full internal database is far
/// below this; anything longer is not a key file.
pub const MAX_KEY_FILE: usize = 1 << 20;

/// Refuses a key file that anyone but its owner may read, write or execute.
pub fn check_private(path: &Path, mode: u32) -> Result<()> {
    if mode & 0o077 != 0 {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!(
                "holds keys in clear but has mode {:04o}, so other users may read it; run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// Reads a key file as text: opened without blocking (a FIFO cannot hang the caller), then
/// checked through the opened handle (a regular file, private by [`check_private`]), so a
/// file swapped between a check and the open cannot slip through; at most [`MAX_KEY_FILE`]
/// bytes.
///
/// The bytes go into one buffer allocated up front at the size the read is capped to, so it
/// never reallocates (a reallocation would leave an unwiped copy behind), and the text is
/// returned in it, wiped on drop.
pub fn read_private(path: &Path) -> Result<Zeroizing<String>> {
    let io_err = |e: std::io::Error| Error::KeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    check_private(path, meta.permissions().mode())?;
    let cap = usize::try_from(meta.len())
        .unwrap_or(usize::MAX)
        .min(MAX_KEY_FILE)
        + 1;
    let mut bytes = Zeroizing::new(Vec::with_capacity(cap));
    file.take(cap as u64)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() > MAX_KEY_FILE {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!("longer than {MAX_KEY_FILE} bytes: not a key file"),
        });
    }
    into_text(bytes).map_err(|line| Error::KeyFile {
        path: path.to_path_buf(),
        reason: format!("line {line}: not UTF-8 text"),
    })
}

/// Secret bytes as text, moved (not copied) into a string wiped on drop. If they are not
/// UTF-8 they are wiped, and the error is the (1-based) line where the text goes wrong.
pub fn into_text(mut bytes: Zeroizing<Vec<u8>>) -> std::result::Result<Zeroizing<String>, usize> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            let valid = e
                .as_bytes()
                .get(..e.utf8_error().valid_up_to())
                .unwrap_or_default();
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            e.into_bytes().zeroize();
            Err(line)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_private_refuses_shared_special_and_huge_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "00").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_private(&p)
            .unwrap_err()
            .to_string()
            .contains("mode 0640"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&p).unwrap().as_str(), "00");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_private(&fifo)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let big = d.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private(&big)
            .unwrap_err()
            .to_string()
            .contains("not a key file"));
    }
}
