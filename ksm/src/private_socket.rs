//! A unix socket file only its owner may use, and its removal only while it is still the
//! one this process bound. The daemon's sharing socket and the emulator's socket both live
//! by these rules, so they sit here, below both.

use std::path::Path;

/// Binds a unix socket only its owner can use (mode 0600), replacing a stale socket file.
/// It never exists with wider permissions, whatever the umask: it is bound inside a fresh
/// mode-0700 directory beside `path`, narrowed there, and then renamed over `path`.
/// Returns the listener and the socket file's identity (see [`remove_if_ours`]).
pub fn bind_private(
    path: &Path,
) -> Result<(std::os::unix::net::UnixListener, (u64, u64)), crate::Error> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(crate::Error::Usage(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let dir = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| crate::Error::io(format!("create {}", dir.display()), e))?;
    let inner = dir.join("s");
    let bound = std::os::unix::net::UnixListener::bind(&inner)
        .map_err(|e| crate::Error::io(format!("bind {}", path.display()), e))
        .and_then(|l| {
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| crate::Error::io(format!("chmod {}", path.display()), e))?;
            std::fs::rename(&inner, path)
                .map_err(|e| crate::Error::io(format!("bind {}", path.display()), e))?;
            let m = std::fs::symlink_metadata(path)
                .map_err(|e| crate::Error::io(format!("bind {}", path.display()), e))?;
            Ok((l, (m.dev(), m.ino())))
        });
    let _ = std::fs::remove_dir_all(&dir);
    bound
}

/// Removes the socket file at `path` if it is still the one this process bound (`id` from
/// [`bind_private`]): never another daemon's.
pub fn remove_if_ours(path: &Path, id: (u64, u64)) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == id {
            let _ = std::fs::remove_file(path);
        }
    }
}
